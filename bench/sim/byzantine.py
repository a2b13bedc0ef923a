"""Byzantine behaviours for simulated replicas, selected by name.

A Byzantine node runs an honest :class:`~protocol.consensus.replica.Replica`; its behaviour
rewrites what that replica outputs (:meth:`ByzantineBehaviour.rewrite`), sees what the node
receives (:meth:`~ByzantineBehaviour.observe`) and may send extra messages on its own schedule
(:meth:`~ByzantineBehaviour.tick`). Forged messages are validly signed with the node's own key
whenever the attack calls for it: a Byzantine validator holds its key.

``equivocate``         as primary, different validly signed pre-prepares (blocks) for one slot,
                       and different new-views (other quorums of view changes) for one view
``silent``             sends nothing at all
``conflicting-votes``  its prepares and commit votes carry a random digest for some recipients
``garbage``            random bytes, truncated/mutated messages, bad signatures, bogus blocks
``replay``             re-sends old recorded messages (its own and others') to random peers
``view-storm``         validly signed view changes to huge (and near) views, often
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from protocol.block import Block, CommitCertificate, CommitVote, make_header
from protocol.codec import CodecError, Message, decode, encode
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.events import (
    Broadcast,
    Committed,
    Output,
    Send,
    ServeBlocks,
    ViewEntered,
)
from protocol.consensus.messages import (
    BlockRequest,
    BlockResponse,
    CommittedBlock,
    NewView,
    Prepare,
    PrePrepare,
    ViewChange,
)
from protocol.consensus.viewchange import check_view_change, select_reproposals
from protocol.crypto import Identity, h256

HUGE_VIEW = 10**12


@dataclass
class ByzantineContext:
    """What a behaviour knows: its node, its key, the validator set and the run's one rng."""

    index: int
    identity: Identity
    chain_id: str
    validators: tuple[bytes, ...]
    rng: random.Random
    genesis_hash: bytes = bytes(32)

    @property
    def peers(self) -> list[int]:
        return [i for i in range(len(self.validators)) if i != self.index]

    @property
    def config(self) -> ReplicaConfig:
        """The chain parameters the view-change rules need."""
        return ReplicaConfig(self.chain_id, self.validators, self.index, self.genesis_hash, 0)


def _decode(data: bytes) -> Message | None:
    try:
        return decode(data)
    except CodecError:
        return None


class ByzantineBehaviour:
    """Honest by default: subclasses override what they corrupt."""

    kind: ClassVar[str] = "honest"
    tick_range_ms: ClassVar[tuple[int, int] | None] = None
    """Extra sends happen every uniform(lo, hi) ms; None: never."""

    def __init__(self, ctx: ByzantineContext) -> None:
        self.ctx = ctx
        self.view = 0
        """The highest view the node's replica entered."""
        self.certificate: CommitCertificate | None = None
        """The certificate of the replica's latest committed block."""

    @property
    def height(self) -> int:
        return self.certificate.height if self.certificate else 0

    def transform(self, outputs: Sequence[Output], now_ms: int) -> list[Output]:
        """What the node really does with its honest replica's ``outputs``."""
        for out in outputs:
            if isinstance(out, ViewEntered):
                self.view = max(self.view, out.view)
            elif isinstance(out, Committed):
                self.certificate = out.certificate
        return self.rewrite(outputs, now_ms)

    def rewrite(self, outputs: Sequence[Output], now_ms: int) -> list[Output]:
        """The outputs as this behaviour sends them (honest: unchanged)."""
        return list(outputs)

    def observe(self, sender: int, data: bytes) -> None:
        """Called with every message delivered to the node."""

    def tick(self, now_ms: int) -> list[Output]:
        """Extra messages (Send/Broadcast) the node sends now."""
        return []

    def _expand(self, out: Send | Broadcast) -> list[Send]:
        if isinstance(out, Send):
            return [out]
        return [Send(p, out.data) for p in self.ctx.peers]


class Silent(ByzantineBehaviour):
    kind = "silent"

    def rewrite(self, outputs: Sequence[Output], now_ms: int) -> list[Output]:
        return [o for o in outputs if not isinstance(o, Send | Broadcast | ServeBlocks)]


class Equivocate(ByzantineBehaviour):
    """As primary, a seeded subset of the replicas gets another block for every (view, seq).
    As the primary of a new view it holds its NewView back (up to ``HOLD_MS``) until it knows
    more than 2f+1 view changes, then sends a subset of the replicas a NewView built on another
    quorum of them (so other re-proposals, when the view changes differ). All validly signed."""

    kind = "equivocate"
    tick_range_ms = (10, 30)
    HOLD_MS: ClassVar[int] = 150

    def __init__(self, ctx: ByzantineContext) -> None:
        super().__init__(ctx)
        self._forks: dict[tuple[str, int, int], tuple[bytes, frozenset[int]] | None] = {}
        self._view_changes: dict[int, dict[int, ViewChange]] = {}
        self._held: list[tuple[int, NewView, bytes]] = []
        """NewViews not sent yet: (held since, message, encoded)."""

    def observe(self, sender: int, data: bytes) -> None:
        msg = _decode(data)
        if (
            isinstance(msg, ViewChange)
            and msg.new_view < HUGE_VIEW
            and check_view_change(self.ctx.config, msg, sender) is None
        ):
            self._view_changes.setdefault(msg.new_view, {})[sender] = msg

    def rewrite(self, outputs: Sequence[Output], now_ms: int) -> list[Output]:
        result: list[Output] = []
        for out in outputs:
            if isinstance(out, Send | Broadcast):
                msg = _decode(out.data)
                fork = None
                if isinstance(msg, PrePrepare) and msg.replica == self.ctx.index:
                    fork = self._fork(msg)
                elif isinstance(msg, NewView) and msg.replica == self.ctx.index:
                    key = ("NewView", msg.view, 0)
                    if key not in self._forks and isinstance(out, Broadcast):
                        self._held.append((now_ms, msg, out.data))
                        continue
                    fork = self._forks.get(key)
                if fork is not None:
                    alt, victims = fork
                    for s in self._expand(out):
                        result.append(Send(s.to, alt) if s.to in victims else s)
                    continue
            result.append(out)
        return result

    def tick(self, now_ms: int) -> list[Output]:
        result: list[Output] = []
        still: list[tuple[int, NewView, bytes]] = []
        for since, nv, data in self._held:
            known = self._view_changes.get(nv.view, {}).keys() | {
                vc.replica for vc in nv.view_changes
            }
            if len(known) <= self.ctx.config.quorum and now_ms - since < self.HOLD_MS:
                still.append((since, nv, data))
                continue
            fork = self._fork_new_view(nv)
            for s in self._expand(Broadcast(data)):
                result.append(Send(s.to, fork[0]) if fork and s.to in fork[1] else s)
        self._held = still
        return result

    def _victims(self) -> frozenset[int]:
        peers = self.ctx.peers
        k = self.ctx.rng.randint(1, max(1, len(peers) - 1))
        return frozenset(self.ctx.rng.sample(peers, k))

    def _fork_new_view(self, nv: NewView) -> tuple[bytes, frozenset[int]] | None:
        """Another NewView for ``nv.view`` from a different quorum of the view changes seen."""
        key = ("NewView", nv.view, 0)
        if key not in self._forks:
            cfg = self.ctx.config
            known = dict(self._view_changes.get(nv.view, {}))
            for vc in nv.view_changes:
                known.setdefault(vc.replica, vc)
            original = {vc.replica for vc in nv.view_changes}
            choices = sorted(known)
            if len(choices) <= cfg.quorum:
                self._forks[key] = None
                return None
            while True:
                subset = sorted(self.ctx.rng.sample(choices, cfg.quorum))
                if set(subset) != original:
                    break
            chosen = tuple(known[r] for r in subset)
            plan = select_reproposals(cfg, chosen)
            sigs = tuple(
                PrePrepare.sign(self.ctx.identity, cfg.chain_id, nv.view, b, nv.replica).signature
                for b in plan.blocks
            )
            alt = NewView.sign(self.ctx.identity, cfg.chain_id, nv.view, chosen, sigs, nv.replica)
            self._forks[key] = (encode(alt), self._victims())
        return self._forks[key]

    def _fork(self, pp: PrePrepare) -> tuple[bytes, frozenset[int]] | None:
        key = ("PrePrepare", pp.view, pp.seq)
        if key not in self._forks:
            victims = self._victims()
            txs = pp.block.txs
            if len(set(txs)) > 1:
                alt_txs = tuple(reversed(txs))
            else:
                alt_txs = (*txs, b"equivocation/%d/%d" % (pp.view, pp.seq))
            h = pp.block.header
            header = make_header(
                chain_id=h.chain_id,
                height=h.height,
                time_ms=h.time_ms,
                prev_hash=h.prev_hash,
                txs=alt_txs,
                app_height=h.app_height,
                app_hash=h.app_hash,
                view=h.view,
                proposer=h.proposer,
            )
            alt = PrePrepare.sign(
                self.ctx.identity, self.ctx.chain_id, pp.view, Block(header, alt_txs), pp.replica
            )
            self._forks[key] = (encode(alt), victims)
        return self._forks[key]


class ConflictingVotes(ByzantineBehaviour):
    """Each recipient of one of its prepares or commit votes gets, with odds 1/2, a vote for a
    random digest instead, validly signed."""

    kind = "conflicting-votes"

    def rewrite(self, outputs: Sequence[Output], now_ms: int) -> list[Output]:
        result: list[Output] = []
        me = self.ctx
        for out in outputs:
            if isinstance(out, Send | Broadcast):
                msg = _decode(out.data)
                own_prepare = isinstance(msg, Prepare) and msg.replica == me.index
                own_vote = isinstance(msg, CommitVote) and msg.validator == me.identity.public_key
                if own_prepare or own_vote:
                    assert msg is not None
                    for s in self._expand(out):
                        if me.rng.random() < 0.5:
                            result.append(Send(s.to, self._conflicting(msg)))
                        else:
                            result.append(s)
                    continue
            result.append(out)
        return result

    def _conflicting(self, msg: Message) -> bytes:
        digest = self.ctx.rng.randbytes(32)
        ident, chain = self.ctx.identity, self.ctx.chain_id
        if isinstance(msg, Prepare):
            return encode(Prepare.sign(ident, chain, msg.view, msg.seq, digest, msg.replica))
        assert isinstance(msg, CommitVote)
        return encode(CommitVote.sign(ident, chain, msg.view, msg.height, digest))


class _Recording(ByzantineBehaviour):
    """Keeps a seeded reservoir sample of everything the node received or sent."""

    capacity: ClassVar[int] = 512

    def __init__(self, ctx: ByzantineContext) -> None:
        super().__init__(ctx)
        self.recorded: list[bytes] = []
        self._seen = 0

    def _record(self, data: bytes) -> None:
        self._seen += 1
        if len(self.recorded) < self.capacity:
            self.recorded.append(data)
        else:
            slot = self.ctx.rng.randrange(self._seen)
            if slot < self.capacity:
                self.recorded[slot] = data

    def observe(self, sender: int, data: bytes) -> None:
        self._record(data)

    def rewrite(self, outputs: Sequence[Output], now_ms: int) -> list[Output]:
        for out in outputs:
            if isinstance(out, Send | Broadcast):
                self._record(out.data)
        return list(outputs)


class Replay(_Recording):
    kind = "replay"
    tick_range_ms = (20, 150)

    def tick(self, now_ms: int) -> list[Output]:
        rng = self.ctx.rng
        if not self.recorded:
            return []
        return [
            Send(rng.choice(self.ctx.peers), rng.choice(self.recorded))
            for _ in range(rng.randint(1, 4))
        ]


class Garbage(_Recording):
    """Honest, plus 1-3 pieces of junk to random peers every 20-200 ms: random bytes, truncated or
    bit-flipped recorded messages, recorded messages with a random signature or a field changed
    under the signature, fresh votes with a random signature, a prepare naming another replica,
    block requests for huge ranges, and block responses with an under-signed certificate."""

    kind = "garbage"
    tick_range_ms = (20, 200)

    def tick(self, now_ms: int) -> list[Output]:
        rng = self.ctx.rng
        return [Send(rng.choice(self.ctx.peers), self._junk()) for _ in range(rng.randint(1, 3))]

    def _junk(self) -> bytes:
        rng = self.ctx.rng
        choice = rng.randrange(10)
        if choice >= 8:
            return self._forged_vote()
        sample = rng.choice(self.recorded) if self.recorded else None
        if choice == 0 or sample is None:
            return rng.randbytes(rng.randint(0, 200))
        if choice == 1:
            return sample[: rng.randrange(len(sample))]
        if choice == 2:
            data = bytearray(sample)
            for _ in range(rng.randint(1, 3)):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return bytes(data)
        if choice == 3:
            return self._resigned(sample, bad_signature=True) or rng.randbytes(64)
        if choice == 4:
            return self._resigned(sample, bad_signature=False) or rng.randbytes(64)
        if choice == 5:
            return encode(BlockRequest(1, rng.choice([2, 10**6, 2**63])))
        if choice == 6:
            return encode(self._bogus_response())
        return self._impersonation()

    def _resigned(self, data: bytes, *, bad_signature: bool) -> bytes | None:
        """The message with a random signature, or with a field changed under its signature."""
        msg = _decode(data)
        if msg is None or not hasattr(msg, "signature"):
            return None
        try:
            if bad_signature:
                return encode(dataclasses.replace(msg, signature=self.ctx.rng.randbytes(64)))  # type: ignore[type-var]
            for name in ("view", "new_view", "seq", "height"):
                if hasattr(msg, name) and not isinstance(msg, PrePrepare | CommitVote):
                    bumped = getattr(msg, name) + self.ctx.rng.randint(1, 3)
                    return encode(dataclasses.replace(msg, **{name: bumped}))  # type: ignore[type-var]
        except (CodecError, TypeError, ValueError):
            return None
        return None

    def _forged_vote(self) -> bytes:
        """A fresh prepare or commit vote just above the node's height, with a random signature
        (well-formed, names this node, only the signature is wrong)."""
        rng, me = self.ctx.rng, self.ctx
        seq = self.height + rng.randint(1, 3)
        digest, sig = rng.randbytes(32), rng.randbytes(64)
        if rng.random() < 0.5:
            return encode(Prepare(self.view, seq, digest, me.index, sig))
        return encode(CommitVote(self.view, seq, digest, me.identity.public_key, sig))

    def _impersonation(self) -> bytes:
        """A prepare signed with its own key that names another replica as the signer."""
        rng = self.ctx.rng
        other = rng.choice(self.ctx.peers)
        prepare = Prepare.sign(
            self.ctx.identity,
            self.ctx.chain_id,
            rng.randint(0, 3),
            rng.randint(1, 20),
            rng.randbytes(32),
            self.ctx.index,
        )
        return encode(dataclasses.replace(prepare, replica=other))

    def _bogus_response(self) -> BlockResponse:
        """A block at a low height, 'certified' by this node's vote alone (too few votes)."""
        rng = self.ctx.rng
        height = rng.randint(1, 5)
        txs = (rng.randbytes(16),)
        header = make_header(
            chain_id=self.ctx.chain_id,
            height=height,
            time_ms=rng.randint(0, 10_000),
            prev_hash=rng.randbytes(32),
            txs=txs,
            app_height=height - 1,
            app_hash=h256(b"bogus"),
            view=0,
            proposer=self.ctx.identity.public_key,
        )
        block = Block(header, txs)
        vote = CommitVote.sign(self.ctx.identity, self.ctx.chain_id, 0, height, block.hash)
        return BlockResponse((CommittedBlock(block, CommitCertificate.from_votes([vote])),))


class ViewStorm(ByzantineBehaviour):
    """Honest, plus a validly signed view change every 10-100 ms: mostly to views near 10**12,
    sometimes to one a little above the node's current view."""

    kind = "view-storm"
    tick_range_ms = (10, 100)

    def __init__(self, ctx: ByzantineContext) -> None:
        super().__init__(ctx)
        self._count = 0

    def tick(self, now_ms: int) -> list[Output]:
        rng = self.ctx.rng
        self._count += 1
        huge = rng.random() < 0.8
        view = HUGE_VIEW + self._count if huge else self.view + rng.randint(1, 3)
        vc = ViewChange.sign(
            self.ctx.identity, self.ctx.chain_id, view, self.certificate, (), self.ctx.index
        )
        return [Broadcast(encode(vc))]


BEHAVIOURS: dict[str, type[ByzantineBehaviour]] = {
    cls.kind: cls for cls in (Equivocate, Silent, ConflictingVotes, Garbage, Replay, ViewStorm)
}


def make_behaviour(kind: str, ctx: ByzantineContext) -> ByzantineBehaviour:
    """The behaviour named ``kind`` (a key of :data:`BEHAVIOURS`) for the node of ``ctx``."""
    try:
        return BEHAVIOURS[kind](ctx)
    except KeyError:
        raise ValueError(f"unknown Byzantine behaviour {kind!r}") from None
