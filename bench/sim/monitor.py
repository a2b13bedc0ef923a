"""Safety and liveness checks over a simulated run.

:class:`SafetyMonitor` watches, as they happen:

* the committed chains of the honest replicas: at every height they must hold the same block
  (the first divergence is reported with the height, both node ids and both hashes), each block
  must extend the one below it, and each commit certificate must verify;
* what every honest replica signs: every PrePrepare, Prepare, CommitVote and Checkpoint an honest
  replica sends (and the pre-prepare signatures inside its NewViews) is recorded under its
  signer and slot ((kind, view, seq) → digest); a second, different, validly signed digest for
  one slot is a double-sign. The record outlives crashes, so a restarted replica that signs
  something else for a slot it already signed is caught.

:func:`liveness_gaps` says which requests which honest running replicas have not committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from protocol.block import Block, CommitCertificate, CommitVote, InvalidCertificate
from protocol.codec import CodecError, Message, decode, encode
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.messages import Checkpoint, NewView, Prepare, PrePrepare
from protocol.consensus.viewchange import select_reproposals
from protocol.crypto import h256

Slot = tuple[int, str, int, int]
"""(signer, kind, view, seq); checkpoints have view 0."""


@dataclass(frozen=True)
class Divergence:
    """Two honest replicas committed different blocks at ``height``."""

    height: int
    node_a: int
    hash_a: bytes
    node_b: int
    hash_b: bytes

    def __str__(self) -> str:
        return (
            f"divergence at height {self.height}: node {self.node_a} committed "
            f"{self.hash_a.hex()[:16]}, node {self.node_b} committed {self.hash_b.hex()[:16]}"
        )


class SafetyMonitor:
    """Collects safety violations of one run (see the module docstring)."""

    def __init__(
        self,
        chain_id: str,
        validators: Sequence[bytes],
        honest: set[int],
        genesis_hash: bytes = bytes(32),
    ) -> None:
        self._config = ReplicaConfig(chain_id, tuple(validators), 0, genesis_hash, 0)
        self._chain_id = chain_id
        self._validators = tuple(validators)
        self._index = {key: i for i, key in enumerate(validators)}
        self._honest = set(honest)
        self._canonical: dict[int, tuple[bytes, int]] = {}
        self._tips: dict[int, tuple[int, bytes]] = {}
        self._signed: dict[Slot, tuple[bytes, Message]] = {}
        self._verified_certs: set[bytes] = set()
        self.violations: list[str] = []
        self.first_divergence: Divergence | None = None
        self.double_signs = 0

    # --- committed chains ---------------------------------------------------------------------

    def observe_committed(
        self,
        node: int,
        block: Block,
        block_bytes: bytes,
        certificate: CommitCertificate,
        *,
        prev_hash: bytes,
        expected_height: int,
        now_ms: int,
    ) -> None:
        """Check one Committed output of node ``node`` (honest or not: certificates always)."""
        height, bhash = block.height, block.hash
        where = f"node {node} at {now_ms}ms, height {height}"
        if height != expected_height:
            self._violate(f"{where}: committed out of order (expected height {expected_height})")
        if block.header.prev_hash != prev_hash:
            self._violate(f"{where}: block does not extend the block below it")
        if encode(block) != block_bytes:
            self._violate(f"{where}: block_bytes are not the block's encoding")
        if certificate.height != height or certificate.block_hash != bhash:
            self._violate(f"{where}: certificate is for another block")
        key = h256(encode(certificate))
        if key not in self._verified_certs:
            try:
                certificate.verify(self._chain_id, self._validators)
            except InvalidCertificate as exc:
                self._violate(f"{where}: certificate does not verify: {exc}")
            else:
                self._verified_certs.add(key)
        if node not in self._honest:
            return
        self._tips[node] = (height, bhash)
        seen = self._canonical.get(height)
        if seen is None:
            self._canonical[height] = (bhash, node)
        elif seen[0] != bhash:
            div = Divergence(height, seen[1], seen[0], node, bhash)
            if self.first_divergence is None or height < self.first_divergence.height:
                self.first_divergence = div
            self._violate(f"{div} (at {now_ms}ms)")

    def check_prefixes(self, chains: Mapping[int, Sequence[bytes]]) -> Divergence | None:
        """The lowest height where two of ``chains`` (node → block hashes from height 1) differ."""
        nodes = sorted(chains)
        best: Divergence | None = None
        for pos, a in enumerate(nodes):
            for b in nodes[pos + 1 :]:
                ca, cb = chains[a], chains[b]
                for h in range(min(len(ca), len(cb))):
                    if ca[h] != cb[h]:
                        if best is None or h + 1 < best.height:
                            best = Divergence(h + 1, a, ca[h], b, cb[h])
                        break
        return best

    # --- double signing -----------------------------------------------------------------------

    def observe_sent(self, sender: int, data: bytes, now_ms: int) -> None:
        """Record what an honest replica's outgoing message signs (by the message's signer)."""
        try:
            msg: Message = decode(data)
        except CodecError:
            self._violate(f"node {sender} at {now_ms}ms sent bytes that do not decode")
            return
        for slot, digest, signed in self._slots_of(msg):
            if slot[0] in self._honest:
                self._record(slot, digest, signed, sender, now_ms)

    def _record(self, slot: Slot, digest: bytes, msg: Message, sender: int, now_ms: int) -> None:
        seen = self._signed.get(slot)
        if seen is None:
            self._signed[slot] = (digest, msg)
            return
        if seen[0] == digest or not (self._genuine(seen[1]) and self._genuine(msg)):
            return
        self.double_signs += 1
        signer, kind, view, seq = slot
        self._violate(
            f"double-sign: honest node {signer} signed two {kind}s for view {view} seq {seq}: "
            f"{seen[0].hex()[:16]} and {digest.hex()[:16]} (seen from node {sender} at {now_ms}ms)"
        )

    def _slots_of(self, msg: Message) -> list[tuple[Slot, bytes, Message]]:
        """The (slot, digest, signed message) triples ``msg`` carries a signature for."""
        if isinstance(msg, PrePrepare):
            return [((msg.replica, "PrePrepare", msg.view, msg.seq), msg.digest, msg)]
        if isinstance(msg, Prepare):
            return [((msg.replica, "Prepare", msg.view, msg.seq), msg.digest, msg)]
        if isinstance(msg, CommitVote):
            signer = self._index.get(msg.validator)
            if signer is None:
                return []
            return [((signer, "CommitVote", msg.view, msg.height), msg.block_hash, msg)]
        if isinstance(msg, Checkpoint):
            digest = msg.block_hash + msg.app_hash
            return [((msg.replica, "Checkpoint", 0, msg.seq), digest, msg)]
        if isinstance(msg, NewView):
            # The new primary's pre-prepare signatures for its re-proposals count as pre-prepares.
            plan = select_reproposals(self._config, msg.view_changes)
            return [
                (
                    (msg.replica, "PrePrepare", msg.view, b.height),
                    b.hash,
                    PrePrepare(msg.view, b.height, b.hash, b, msg.replica, sig),
                )
                for b, sig in zip(plan.blocks, msg.preprepare_signatures, strict=False)
            ]
        return []

    def _genuine(self, msg: Message) -> bool:
        if isinstance(msg, CommitVote):
            return msg.verify(self._chain_id)
        if isinstance(msg, PrePrepare | Prepare | Checkpoint):
            if not 0 <= msg.replica < len(self._validators):
                return False
            return msg.verify(self._chain_id, self._validators[msg.replica])
        return False

    # --- results ------------------------------------------------------------------------------

    def _violate(self, what: str) -> None:
        self.violations.append(what)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        """ "ok" or the first violation (the first divergence first), with a count of the rest."""
        if not self.violations:
            return "ok"
        first = str(self.first_divergence) if self.first_divergence else self.violations[0]
        more = len(self.violations) - 1
        return first + (f" (+{more} more violations)" if more else "")


def liveness_gaps(committed: Mapping[int, set[int]], requests: int) -> dict[int, list[int]]:
    """For each node in ``committed`` (node → committed request ids) that misses some of the
    requests ``0..requests-1``: the missing ids."""
    gaps: dict[int, list[int]] = {}
    for node in sorted(committed):
        missing = [r for r in range(requests) if r not in committed[node]]
        if missing:
            gaps[node] = missing
    return gaps


def describe_gaps(gaps: Mapping[int, list[int]], *, limit: int = 8) -> str:
    """``gaps`` as one line: "node 2 misses 3 requests [4, 7, 9]; ..."."""
    parts = []
    for node, missing in sorted(gaps.items()):
        shown = ", ".join(map(str, missing[:limit])) + (", ..." if len(missing) > limit else "")
        parts.append(f"node {node} misses {len(missing)} requests [{shown}]")
    return "; ".join(parts)
