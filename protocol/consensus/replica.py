"""The PBFT replica: a sans-I/O state machine, ``Replica.handle(event) -> list[output]``.

Sequence numbers are block heights. Normal case: the primary of view v proposes a block for
height n in a signed pre-prepare; backups check it (chain, time, app hash, transactions) and
broadcast a prepare; a replica that holds the pre-prepare and 2f matching prepares -- and has
prepared n-1 in the same view, or committed it -- is *prepared*: it writes the proof ahead and
broadcasts its commit vote; 2f+1 commit votes make the block final, and blocks are released to
the driver strictly in height order with their certificate. Up to ``window`` heights above the
committed height are in flight at once.

Every signature the replica makes is written ahead (:class:`Persist` before the send), and a
restarted replica loads those records, so it never signs two digests for one (kind, view, height).

View change: on a timeout with outstanding work the replica broadcasts a view change carrying
its latest commit certificate and its prepared proofs; f+1 view changes for higher views make it
join the smallest of them (a lone Byzantine replica cannot drag others to a far view); the new
primary collects 2f+1 and broadcasts a NewView from which every replica derives the same
re-proposals (:mod:`protocol.consensus.viewchange`). Timeouts back off exponentially while views
fail. Checkpoints every K heights compare app hashes; a replica that sees f+1 checkpoints, a
certificate, or commit traffic above its own height asks peers for the blocks it lacks and
verifies each certificate before releasing them (:mod:`protocol.consensus.catchup` keeps that
bookkeeping).

A peer's bad message is a :class:`Suspicion` output, never an exception.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from protocol.block import Block, CommitCertificate, CommitVote, InvalidCertificate, make_header
from protocol.codec import CodecError, Message, decode, encode
from protocol.consensus.cadence import ArrivalRate, batch_wait_ms
from protocol.consensus.catchup import CatchUp
from protocol.consensus.checkpoints import CheckpointLog
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.events import (
    Broadcast,
    CancelTimer,
    Committed,
    Event,
    Executed,
    Output,
    Persist,
    Receive,
    RestoredState,
    Send,
    ServeBlocks,
    SetTimer,
    Start,
    Submit,
    Suspicion,
    TimerFired,
    TimerKind,
    ViewEntered,
)
from protocol.consensus.journal import (
    MAX_CONSENSUS_MESSAGE_BYTES,
    VC_TARGET_KEY,
    VIEW_KEY,
    load_journal,
    proof_key,
    u64,
    vote_key,
)
from protocol.consensus.messages import (
    BlockRequest,
    BlockResponse,
    Checkpoint,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    ViewChange,
)
from protocol.consensus.proposal import OK, WAIT, judge_block
from protocol.consensus.viewchange import (
    Reproposals,
    check_preprepare_signature,
    check_view_change,
    select_reproposals,
)
from protocol.crypto import Identity, h256


@dataclass
class Slot:
    """One height in the current view."""

    preprepare: PrePrepare | None = None
    block_bytes: bytes = b""
    prepares: dict[int, Prepare] = field(default_factory=dict)
    commits: dict[bytes, CommitVote] = field(default_factory=dict)
    prepared: bool = False
    committed_local: bool = False
    sent_ms: int = 0
    """When this replica last sent its messages for the slot (retransmission waits a full
    interval after that, so slots that progress normally are never re-sent)."""


class Replica:
    """One validator's PBFT state. See the module docstring for the protocol."""

    def __init__(
        self,
        config: ReplicaConfig,
        identity: Identity,
        restored: RestoredState | None = None,
        txs_check: Callable[[Sequence[bytes], Sequence[bytes]], bool] | None = None,
    ) -> None:
        if identity.public_key != config.validators[config.index]:
            raise ValueError("identity does not match validators[index]")
        self.cfg = config
        self.me = config.index
        self._id = identity
        self._txs_check = txs_check
        r = restored or RestoredState()
        self.view = 0
        self.in_view_change = False
        self.vc_target = 0
        self.committed_height = r.committed_height
        self.committed_hash = r.committed_hash if r.committed_height else config.genesis_hash
        self.committed_time_ms = (
            r.committed_time_ms if r.committed_height else config.genesis_time_ms
        )
        self.last_cert: CommitCertificate | None = r.committed_certificate
        self.executed_height = r.executed_height
        self._app_hashes: dict[int, bytes] = {0: config.genesis_hash}
        if r.executed_height:
            self._app_hashes[r.executed_height] = r.executed_app_hash
        self._hashes: dict[int, tuple[bytes, int]] = {
            self.committed_height: (self.committed_hash, self.committed_time_ms)
        }
        self._committed_hashes: dict[int, bytes] = {self.committed_height: self.committed_hash}
        self._slots: dict[int, Slot] = {}
        self._deferred: dict[int, PrePrepare] = {}
        self._view_base = self.committed_height
        self._next_seq = self.committed_height + 1
        self._pending: OrderedDict[bytes, bytes] = OrderedDict()
        self._queue: OrderedDict[bytes, bytes] = OrderedDict()
        """Pending transactions not in any block of the current view (the primary's next batch)."""
        self._arrivals = ArrivalRate()
        """Transactions queued lately: the load that sets a busy primary's batch wait."""
        self._recent_committed: OrderedDict[bytes, None] = OrderedDict()
        self._votes: dict[tuple[bytes, int, int], bytes] = {}
        self._proofs: dict[int, PreparedProof] = {}
        self._vc_latest: dict[int, ViewChange] = {}
        self._new_view: NewView | None = None
        self._checkpoints = CheckpointLog(config.quorum, config.f, config.checkpoint_interval)
        self._catchup = CatchUp(config)
        self._failed_views = 0
        self._view_timer_armed = False
        self._batch_timer_armed = False
        self._retransmit_armed = False
        self._empty_armed = False
        self._out: list[Output] = []
        self._now = 0
        self._restore(r)

    # --- public surface ----------------------------------------------------------------------

    @property
    def primary(self) -> int:
        return self.cfg.primary(self.view)

    @property
    def is_primary(self) -> bool:
        return self.primary == self.me and not self.in_view_change

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    @property
    def catching_up(self) -> bool:
        """True while the replica fetches certified blocks it lacks."""
        return self._catchup.behind(self.committed_height)

    def handle(self, event: Event) -> list[Output]:
        """Process one event; return what the driver must do, in order."""
        self._out = []
        self._now = max(self._now, event.now_ms)
        if isinstance(event, Receive):
            self._on_receive(event.sender, event.data, event.decoded)
        elif isinstance(event, Submit):
            self._on_submit(event.txs, event.hashes)
        elif isinstance(event, TimerFired):
            self._on_timer(event.timer)
        elif isinstance(event, Executed):
            self._on_executed(event.height, event.app_hash)
        elif isinstance(event, Start):
            self._on_start()
        self._arm_timers()
        out, self._out = self._out, []
        return out

    # --- restart -----------------------------------------------------------------------------

    def _restore(self, r: RestoredState) -> None:
        j = load_journal(r.persisted, self.committed_height)
        self.view, self.vc_target = j.view, j.vc_target
        self._votes, self._proofs = j.votes, j.proofs
        self.in_view_change = self.vc_target > self.view
        self._deferred = {pp.seq: pp for pp in j.own_preprepares if pp.view == self.view}
        own = [seq for (kind, view, seq) in self._votes if kind == b"P" and view == self.view]
        if own:
            self._next_seq = max(self._next_seq, max(own) + 1)

    def _on_start(self) -> None:
        self._out.append(ViewEntered(self.view, self.primary))
        if self.in_view_change:
            self._send_view_change(self.vc_target)
        else:
            # Own pre-prepares of this view, reloaded: take them up again (primary after restart).
            for seq in sorted(self._deferred):
                pp = self._deferred.pop(seq)
                if pp.replica == self.me and seq > self.committed_height:
                    self._accept_preprepare(pp, own=True)
        self._arm_timers()

    # --- inputs ------------------------------------------------------------------------------

    def _on_submit(self, txs: tuple[bytes, ...], hashes: tuple[bytes, ...]) -> None:
        if len(hashes) != len(txs):
            hashes = tuple(h256(tx) for tx in txs)
        queued = 0
        for tx, h in zip(txs, hashes, strict=True):
            if h in self._pending or h in self._recent_committed:
                continue
            if len(self._pending) >= self.cfg.max_pending_txs:
                break
            self._pending[h] = tx
            self._queue[h] = tx
            queued += 1
        self._arrivals.add(self._now, queued)
        if self.is_primary and len(self._queue) >= self.cfg.batch_limit:
            self._propose()

    def _on_timer(self, timer: TimerKind) -> None:
        if timer is TimerKind.VIEW:
            self._view_timer_armed = False
            if self.in_view_change:
                # PBFT: move on to the next view only once 2f+1 replicas (self included) are
                # changing views too; a replica alone re-sends its view change and waits, so it
                # is where the others will be when they time out.
                joined = sum(1 for vc in self._vc_latest.values() if vc.new_view >= self.vc_target)
                if joined >= self.cfg.quorum:
                    self._start_view_change(self.vc_target + 1)
                else:
                    self._send_view_change(self.vc_target)
                    self._view_timer_armed = True
                    self._out.append(SetTimer(TimerKind.VIEW, self._now + self._view_timeout()))
            elif self._has_work():
                self._start_view_change(self.view + 1)
        elif timer is TimerKind.BATCH:
            self._batch_timer_armed = False
            if self.is_primary:
                self._propose()
        elif timer is TimerKind.EMPTY_BLOCK:
            self._empty_armed = False
            if (
                self.is_primary
                and not self._pending
                and self._next_seq == self.committed_height + 1
            ):
                self._propose(allow_empty=True)
        elif timer is TimerKind.RETRANSMIT:
            self._retransmit_armed = False
            self._retransmit()

    def _on_executed(self, height: int, app_hash: bytes) -> None:
        if height <= self.executed_height:
            return
        self.executed_height = height
        self._app_hashes[height] = app_hash
        for old in [h for h in self._app_hashes if h < height - 4 * self.cfg.window]:
            del self._app_hashes[old]
        k = self.cfg.checkpoint_interval
        if height % k == 0 and height in self._committed_hashes:
            cp = Checkpoint.sign(
                self._id,
                self.cfg.chain_id,
                height,
                self._committed_hashes[height],
                app_hash,
                self.me,
            )
            self._out.append(Broadcast(encode(cp)))
            self._add_checkpoint(cp)
        self._retry_deferred()

    def _on_receive(self, sender: int, data: bytes, decoded: Message | None = None) -> None:
        if not 0 <= sender < self.cfg.n or sender == self.me:
            return
        if decoded is not None:
            msg: Message = decoded
        else:
            try:
                msg = decode(data, max_bytes=MAX_CONSENSUS_MESSAGE_BYTES)
            except CodecError as exc:
                self._suspect(sender, "malformed", str(exc))
                return
        if isinstance(msg, PrePrepare):
            self._on_preprepare(sender, msg)
        elif isinstance(msg, Prepare):
            self._on_prepare(sender, msg)
        elif isinstance(msg, CommitVote):
            self._on_commit(sender, msg)
        elif isinstance(msg, Checkpoint):
            self._on_checkpoint(sender, msg)
        elif isinstance(msg, ViewChange):
            self._on_view_change(sender, msg)
        elif isinstance(msg, NewView):
            self._on_new_view(sender, msg)
        elif isinstance(msg, BlockRequest):
            self._on_block_request(sender, msg)
        elif isinstance(msg, BlockResponse):
            self._on_block_response(sender, msg)
        else:
            self._suspect(sender, "unexpected", f"{type(msg).__name__} is not a consensus message")

    # --- normal case -------------------------------------------------------------------------

    def _in_window(self, seq: int) -> bool:
        return self.committed_height < seq <= self.committed_height + self.cfg.window

    def _on_preprepare(self, sender: int, pp: PrePrepare) -> None:
        if pp.replica != sender:
            self._suspect(sender, "impersonation", "pre-prepare names another replica")
            return
        if pp.view != self.view or self.in_view_change:
            return
        if sender != self.primary:
            self._suspect(sender, "not-primary", f"pre-prepare in view {pp.view} from a backup")
            return
        if not self._in_window(pp.seq):
            self._note_ahead(sender, pp.seq)
            return
        err = check_preprepare_signature(self.cfg, pp)
        if err:
            self._suspect(sender, "bad-signature", err)
            return
        slot = self._slots.get(pp.seq)
        if slot and slot.preprepare:
            if slot.preprepare.digest != pp.digest:
                self._suspect(sender, "equivocation", f"two pre-prepares for ({pp.view}, {pp.seq})")
            return
        earlier = self._deferred.get(pp.seq)
        if earlier and earlier.digest != pp.digest:
            self._suspect(sender, "equivocation", f"two pre-prepares for ({pp.view}, {pp.seq})")
            return
        self._deferred[pp.seq] = pp
        self._retry_deferred()

    def _retry_deferred(self) -> None:
        """Accept deferred pre-prepares whose previous block and claimed app hash are now known."""
        progress = True
        while progress:
            progress = False
            for seq in sorted(self._deferred):
                pp = self._deferred[seq]
                if seq <= self.committed_height or pp.view != self.view or self.in_view_change:
                    del self._deferred[seq]
                    continue
                verdict = judge_block(
                    self.cfg,
                    pp,
                    prev=self._hashes.get(pp.seq - 1),
                    executed_height=self.executed_height,
                    app_hashes=self._app_hashes,
                    now_ms=self._now,
                    txs_check=self._txs_check,
                )
                if verdict == WAIT:
                    continue
                del self._deferred[seq]
                if verdict != OK:
                    self._suspect(pp.replica, "bad-block", verdict)
                    continue
                self._accept_preprepare(pp, own=False)
                progress = True

    def _accept_preprepare(self, pp: PrePrepare, *, own: bool) -> None:
        slot = self._slots.setdefault(pp.seq, Slot())
        if slot.preprepare is not None:
            return
        slot.preprepare = pp
        slot.sent_ms = self._now
        slot.block_bytes = encode(pp.block, check=False)
        self._hashes[pp.seq] = (pp.digest, pp.block.header.time_ms)
        for h in pp.block.tx_hashes:
            self._queue.pop(h, None)
        if pp.replica != self.me:
            if not self._may_sign(b"p", pp.view, pp.seq, pp.digest):
                return
            prep = Prepare.sign(self._id, self.cfg.chain_id, pp.view, pp.seq, pp.digest, self.me)
            self._out.append(Broadcast(encode(prep)))
            slot.prepares[self.me] = prep
        elif not own:
            return
        self._check_prepared(pp.seq)

    def _may_sign(
        self, kind: bytes, view: int, seq: int, digest: bytes, value: bytes = b""
    ) -> bool:
        """Write the vote ahead; False if this slot was already signed with another digest."""
        key = (kind, view, seq)
        done = self._votes.get(key)
        if done is not None:
            return done == digest
        self._votes[key] = digest
        self._out.append(Persist(vote_key(kind, view, seq), value or digest))
        return True

    def _on_prepare(self, sender: int, p: Prepare) -> None:
        if p.replica != sender:
            self._suspect(sender, "impersonation", "prepare names another replica")
            return
        if p.view != self.view or self.in_view_change:
            return
        if not self._in_window(p.seq):
            self._note_ahead(sender, p.seq)
            self._serve_lagging(sender, p.seq)
            return
        if sender == self.primary:
            self._suspect(sender, "not-backup", "the primary sent a prepare")
            return
        slot = self._slots.setdefault(p.seq, Slot())
        have = slot.prepares.get(sender)
        if have is not None:
            if have.digest != p.digest:
                self._suspect(sender, "conflicting-votes", f"two prepares for ({p.view}, {p.seq})")
            return
        if self.cfg.verify_signatures and not p.verify(
            self.cfg.chain_id, self.cfg.validators[sender]
        ):
            self._suspect(sender, "bad-signature", "prepare")
            return
        slot.prepares[sender] = p
        self._check_prepared(p.seq)

    def _check_prepared(self, seq: int) -> None:
        while True:
            slot = self._slots.get(seq)
            if slot is None or slot.prepared or slot.preprepare is None:
                return
            prev_ok = seq - 1 <= max(self.committed_height, self._view_base) or (
                (prev := self._slots.get(seq - 1)) is not None and prev.prepared
            )
            if not prev_ok:
                return
            pp = slot.preprepare
            matching = tuple(
                sorted(
                    (p for p in slot.prepares.values() if p.digest == pp.digest),
                    key=lambda p: p.replica,
                )
            )
            if len(matching) < 2 * self.cfg.f:
                return
            proof = PreparedProof(pp, matching[: 2 * self.cfg.f])
            if not self._may_sign(b"c", pp.view, seq, pp.digest):
                return
            slot.prepared = True
            self._proofs[seq] = proof
            self._out.append(Persist(proof_key(seq), encode(proof, check=False)))
            vote = CommitVote.sign(self._id, self.cfg.chain_id, pp.view, seq, pp.digest)
            self._out.append(Broadcast(encode(vote)))
            slot.commits[vote.validator] = vote
            self._check_committed(seq)
            seq += 1

    def _on_commit(self, sender: int, vote: CommitVote) -> None:
        if vote.validator != self.cfg.validators[sender]:
            self._suspect(sender, "impersonation", "commit vote of another validator")
            return
        if vote.view != self.view or self.in_view_change:
            return
        if not self._in_window(vote.height):
            self._note_ahead(sender, vote.height)
            self._serve_lagging(sender, vote.height)
            return
        slot = self._slots.setdefault(vote.height, Slot())
        have = slot.commits.get(vote.validator)
        if have is not None:
            if have.block_hash != vote.block_hash:
                self._suspect(
                    sender, "conflicting-votes", f"two commits for ({vote.view}, {vote.height})"
                )
            return
        if self.cfg.verify_signatures and not vote.verify(self.cfg.chain_id):
            self._suspect(sender, "bad-signature", "commit vote")
            return
        slot.commits[vote.validator] = vote
        self._check_committed(vote.height)

    def _check_committed(self, seq: int) -> None:
        # 2f+1 signed commits for the digest make the block final even where this replica
        # missed the prepares: they are a commit certificate, the same proof catch-up accepts.
        slot = self._slots.get(seq)
        if slot is None or slot.committed_local or slot.preprepare is None:
            return
        digest = slot.preprepare.digest
        if sum(1 for v in slot.commits.values() if v.block_hash == digest) < self.cfg.quorum:
            return
        slot.committed_local = True
        self._release_in_order()

    def _release_in_order(self) -> None:
        while True:
            seq = self.committed_height + 1
            slot = self._slots.get(seq)
            if slot is None or not slot.committed_local or slot.preprepare is None:
                break
            pp = slot.preprepare
            votes = sorted(
                (v for v in slot.commits.values() if v.block_hash == pp.digest),
                key=lambda v: v.validator,
            )[: self.cfg.quorum]
            cert = CommitCertificate.from_votes(votes)
            self._commit_block(pp.block, slot.block_bytes, cert)
        self._check_prepared(self.committed_height + 1)

    def _commit_block(self, block: Block, block_bytes: bytes, cert: CommitCertificate) -> None:
        """Release one final block (the next height) and forget what it settles."""
        seq = block.height
        self._out.append(Committed(block, block_bytes, cert))
        self.committed_height = seq
        self.committed_hash = block.hash
        self.committed_time_ms = block.header.time_ms
        self.last_cert = cert
        self._committed_hashes[seq] = block.hash
        self._hashes[seq] = (block.hash, block.header.time_ms)
        for h in block.tx_hashes:
            self._pending.pop(h, None)
            self._queue.pop(h, None)
            self._recent_committed[h] = None
        while len(self._recent_committed) > self.cfg.max_pending_txs:
            self._recent_committed.popitem(last=False)
        self._slots.pop(seq, None)
        self._deferred.pop(seq, None)
        if seq in self._proofs:
            del self._proofs[seq]
            self._out.append(Persist(proof_key(seq), None))
        for key in [k for k in self._votes if k[2] <= seq]:
            del self._votes[key]
            self._out.append(Persist(vote_key(*key), None))
        floor = seq - 4 * self.cfg.window
        for table in (self._hashes, self._committed_hashes):
            for old in [h for h in table if h < floor]:
                del table[old]
        self._catchup.committed(seq, self._now, floor)
        self._next_seq = max(self._next_seq, seq + 1)
        self._failed_views = 0
        self._view_timer_armed = False  # progress: restart the view timer below
        self._out.append(CancelTimer(TimerKind.VIEW))

    # --- proposing ---------------------------------------------------------------------------

    def _propose(self, *, allow_empty: bool = False) -> None:
        while self.is_primary and self._next_seq <= self.committed_height + self.cfg.window:
            prev = self._hashes.get(self._next_seq - 1)
            if prev is None:
                return
            txs: list[bytes] = []
            size = 0
            for tx in self._queue.values():
                if len(txs) >= self.cfg.batch_limit or size + len(tx) > self.cfg.max_block_bytes:
                    break
                txs.append(tx)
                size += len(tx)
            if not txs and not allow_empty:
                return
            allow_empty = False
            header = make_header(
                chain_id=self.cfg.chain_id,
                height=self._next_seq,
                time_ms=max(self._now, prev[1]),
                prev_hash=prev[0],
                txs=txs,
                app_height=self.executed_height,
                app_hash=self._app_hashes[self.executed_height],
                view=self.view,
                proposer=self._id.public_key,
            )
            block = Block(header, tuple(txs))
            pp = PrePrepare.sign(self._id, self.cfg.chain_id, self.view, block, self.me)
            data = encode(pp, check=False)
            if not self._may_sign(b"P", self.view, pp.seq, pp.digest, data):
                return
            self._out.append(Broadcast(data))
            self._next_seq += 1
            self._accept_preprepare(pp, own=True)

    # --- timers and retransmission -----------------------------------------------------------

    def _has_work(self) -> bool:
        return bool(self._pending) or any(s.preprepare for s in self._slots.values())

    def _view_timeout(self) -> int:
        factor = 1 << min(self._failed_views, 20)
        return min(self.cfg.view_timeout_ms * factor, self.cfg.view_timeout_max_ms)

    def _arm_timers(self) -> None:
        busy = self.in_view_change or self._has_work()
        if busy and not self._view_timer_armed:
            self._view_timer_armed = True
            self._out.append(SetTimer(TimerKind.VIEW, self._now + self._view_timeout()))
        elif not busy and self._view_timer_armed:
            self._view_timer_armed = False
            self._out.append(CancelTimer(TimerKind.VIEW))
        window_open = self._next_seq <= self.committed_height + self.cfg.window
        if self.is_primary and not self._batch_timer_armed and self._queue and window_open:
            # Idle (nothing of ours in flight): propose at once, for latency. Busy: gather a
            # fuller batch for up to batch_wait_ms -- fewer, larger blocks cost less per tx --
            # or less at light load (protocol.consensus.cadence).
            idle = self._next_seq == self.committed_height + 1
            self._batch_timer_armed = True
            wait = 0
            if not idle:
                wait = batch_wait_ms(
                    self._arrivals,
                    self._now,
                    batch_wait=self.cfg.batch_wait_ms,
                    light_batch_wait=self.cfg.light_batch_wait_ms,
                    light_load_tx_per_s=self.cfg.light_load_tx_per_s,
                    full_load_tx_per_s=self.cfg.full_load_tx_per_s,
                )
            self._out.append(SetTimer(TimerKind.BATCH, self._now + wait))
        if (
            self.is_primary
            and self.cfg.empty_block_interval_ms
            and not self._pending
            and not self._empty_armed
        ):
            self._empty_armed = True
            self._out.append(
                SetTimer(TimerKind.EMPTY_BLOCK, self._now + self.cfg.empty_block_interval_ms)
            )
        if not self._retransmit_armed and (busy or self.catching_up):
            self._retransmit_armed = True
            self._out.append(SetTimer(TimerKind.RETRANSMIT, self._now + self.cfg.retransmit_ms))

    def _retransmit(self) -> None:
        """Re-send this replica's own messages for unfinished work (the network may lose them)."""
        if self.in_view_change:
            self._send_view_change(self.vc_target)
        else:
            for seq in sorted(self._slots):
                slot = self._slots[seq]
                pp = slot.preprepare
                if pp is None or slot.committed_local:
                    continue
                if self._now - slot.sent_ms < self.cfg.retransmit_ms:
                    continue
                slot.sent_ms = self._now
                if pp.replica == self.me and self.me == self.primary:
                    self._out.append(Broadcast(encode(pp, check=False)))
                if self._votes.get((b"p", pp.view, seq)) == pp.digest:
                    prep = Prepare.sign(
                        self._id, self.cfg.chain_id, pp.view, seq, pp.digest, self.me
                    )
                    self._out.append(Broadcast(encode(prep)))
                own = slot.commits.get(self._id.public_key)
                if own is not None:
                    self._out.append(Broadcast(encode(own)))
        if self.catching_up:
            self._request_blocks(None, self._catchup.fetch_until)

    # --- view change -------------------------------------------------------------------------

    def _start_view_change(self, new_view: int) -> None:
        if new_view <= self.view or (self.in_view_change and new_view <= self.vc_target):
            return
        if self.in_view_change or self._has_work():
            self._failed_views += 1
        self.in_view_change = True
        self.vc_target = new_view
        self._batch_timer_armed = False
        self._out.append(CancelTimer(TimerKind.BATCH))
        self._out.append(Persist(VC_TARGET_KEY, u64(new_view)))
        self._send_view_change(new_view)
        self._view_timer_armed = True
        self._out.append(SetTimer(TimerKind.VIEW, self._now + self._view_timeout()))
        self._maybe_new_view()

    def _send_view_change(self, new_view: int) -> None:
        proofs: list[PreparedProof] = []
        seq = self.committed_height + 1
        while seq in self._proofs:
            proofs.append(self._proofs[seq])
            seq += 1
        vc = ViewChange.sign(
            self._id, self.cfg.chain_id, new_view, self.last_cert, tuple(proofs), self.me
        )
        self._vc_latest[self.me] = vc
        self._out.append(Broadcast(encode(vc)))

    def _on_view_change(self, sender: int, vc: ViewChange) -> None:
        if vc.committed_height < self.committed_height:
            self._serve_lagging(sender, vc.committed_height + 1, certain=True)
        if vc.new_view <= self.view:
            if vc.new_view == self.view and self._new_view and self.primary == self.me:
                self._out.append(Send(sender, encode(self._new_view)))  # it missed the NewView
            return
        have = self._vc_latest.get(sender)
        if have is not None and (have.new_view > vc.new_view or have == vc):
            return
        err = check_view_change(self.cfg, vc, sender)
        if err:
            self._suspect(sender, "bad-view-change", err)
            return
        self._vc_latest[sender] = vc
        if vc.committed is not None and vc.committed.height > self.committed_height:
            self._learn_certified(vc.committed, sender)
        # Join the smallest view that f+1 replicas (so at least one honest) have moved past.
        views = sorted(
            (v.new_view for r, v in self._vc_latest.items() if r != self.me), reverse=True
        )
        if len(views) > self.cfg.f:
            target = views[self.cfg.f]
            current = self.vc_target if self.in_view_change else self.view
            if target > current:
                self._start_view_change(target)
        self._maybe_new_view()

    def _maybe_new_view(self) -> None:
        if not self.in_view_change or self.cfg.primary(self.vc_target) != self.me:
            return
        v = self.vc_target
        vcs = sorted(
            (vc for vc in self._vc_latest.values() if vc.new_view == v), key=lambda vc: vc.replica
        )
        if len(vcs) < self.cfg.quorum:
            return
        chosen = tuple(vcs[: self.cfg.quorum])
        if self.me not in {vc.replica for vc in chosen}:
            chosen = (*chosen[:-1], self._vc_latest[self.me])
        plan = select_reproposals(self.cfg, chosen)
        pps = [PrePrepare.sign(self._id, self.cfg.chain_id, v, b, self.me) for b in plan.blocks]
        if any(self._votes.get((b"P", v, pp.seq), pp.digest) != pp.digest for pp in pps):
            return  # signed other proposals for this view before a restart: let the view pass
        for pp in pps:
            self._may_sign(b"P", v, pp.seq, pp.digest, encode(pp, check=False))
        sigs = tuple(pp.signature for pp in pps)
        nv = NewView.sign(self._id, self.cfg.chain_id, v, chosen, sigs, self.me)
        self._out.append(Broadcast(encode(nv)))
        self._enter_view(nv, plan)

    def _on_new_view(self, sender: int, nv: NewView) -> None:
        # Never go back below a view this replica has asked to move to.
        if nv.view <= self.view or nv.view < self.vc_target:
            return
        if sender != self.cfg.primary(nv.view) or nv.replica != sender:
            self._suspect(sender, "not-primary", f"new-view for {nv.view} from a non-primary")
            return
        if self.cfg.verify_signatures and not nv.verify(
            self.cfg.chain_id, self.cfg.validators[sender]
        ):
            self._suspect(sender, "bad-signature", "new-view")
            return
        if len(nv.view_changes) < self.cfg.quorum:
            self._suspect(sender, "bad-new-view", "fewer than 2f+1 view changes")
            return
        for vc in nv.view_changes:
            err = check_view_change(self.cfg, vc, vc.replica)
            if err:
                self._suspect(sender, "bad-new-view", err)
                return
        plan = select_reproposals(self.cfg, nv.view_changes)
        if len(plan.blocks) != len(nv.preprepare_signatures):
            self._suspect(sender, "bad-new-view", "re-proposals differ from the view changes")
            return
        for block, sig in zip(plan.blocks, nv.preprepare_signatures, strict=True):
            pp = PrePrepare(nv.view, block.height, block.hash, block, sender, sig)
            if check_preprepare_signature(self.cfg, pp):
                self._suspect(sender, "bad-new-view", "bad re-proposal signature")
                return
        if plan.base_certificate is not None and plan.base_height > self.committed_height:
            self._learn_certified(plan.base_certificate, None)
        self._enter_view(nv, plan)

    def _enter_view(self, nv: NewView, plan: Reproposals) -> None:
        """Start view ``nv.view``: take up the re-proposals, signed in ``nv``, from its base."""
        v, base = nv.view, plan.base_height
        self.view = v
        self.in_view_change = False
        self.vc_target = v
        self._new_view = nv if self.cfg.primary(v) == self.me else None
        self._slots.clear()
        self._deferred.clear()
        self._queue = OrderedDict(self._pending)
        self._view_base = max(base, self.committed_height)
        for stale in [h for h in self._hashes if h > self.committed_height]:
            del self._hashes[stale]
        if base > self.committed_height:
            self._hashes[base] = (plan.base_hash, 0)
        self._out.append(Persist(VIEW_KEY, u64(v)))
        self._out.append(ViewEntered(v, self.cfg.primary(v)))
        self._view_timer_armed = False
        self._out.append(CancelTimer(TimerKind.VIEW))
        top = base
        for block, sig in zip(plan.blocks, nv.preprepare_signatures, strict=True):
            top = block.height
            if block.height <= self.committed_height:
                continue
            pp = PrePrepare(v, block.height, block.hash, block, self.cfg.primary(v), sig)
            self._accept_preprepare(pp, own=True)
        self._next_seq = max(top, self.committed_height) + 1
        self._prune_proofs(top)
        if self.is_primary:
            self._propose()
        self._arm_timers()

    def _prune_proofs(self, top: int) -> None:
        """Proofs above the new view's re-proposals can never be re-proposed: drop them."""
        for seq in [s for s in self._proofs if s > top and s not in self._slots]:
            del self._proofs[seq]
            self._out.append(Persist(proof_key(seq), None))

    # --- checkpoints and catch-up ------------------------------------------------------------

    def _on_checkpoint(self, sender: int, cp: Checkpoint) -> None:
        if cp.replica != sender:
            self._suspect(sender, "impersonation", "checkpoint names another replica")
            return
        if not self._checkpoints.wants(cp):
            return
        key = self.cfg.validators[sender]
        if self.cfg.verify_signatures and not cp.verify(self.cfg.chain_id, key):
            self._suspect(sender, "bad-signature", "checkpoint")
            return
        self._add_checkpoint(cp)

    def _add_checkpoint(self, cp: Checkpoint) -> None:
        outcome = self._checkpoints.add(cp, self._app_hashes, self.committed_height)
        if outcome.diverged:
            self._suspect(cp.replica, "state-divergence", f"app hash at {cp.seq} differs from ours")
        if outcome.behind_to > self.committed_height:
            self._catchup.fetch_to(outcome.behind_to)
            self._request_blocks(outcome.source, outcome.behind_to)

    def _note_ahead(self, sender: int, seq: int) -> None:
        """Votes above our window from f+1 replicas mean we are behind: fetch what we lack."""
        target = self._catchup.vote_ahead(sender, seq, self.committed_height)
        if target is not None:
            self._request_blocks(sender, target)

    def _learn_certified(self, cert: CommitCertificate, source: int | None) -> None:
        """A verified certificate above our height: remember its hash and fetch up to it."""
        self._hashes.setdefault(cert.height, (cert.block_hash, 0))
        self._catchup.fetch_to(cert.height)
        self._request_blocks(source, cert.height)

    def _request_blocks(self, source: int | None, until: int) -> None:
        req = self._catchup.request(self.committed_height, until)
        if req is None:
            return
        if source is None or source == self.me:
            self._out.append(Broadcast(encode(req)))
        else:
            self._out.append(Send(source, encode(req)))

    def _serve_lagging(self, sender: int, seq: int, *, certain: bool = False) -> None:
        """A peer still voting on a height we committed is behind: send it the blocks."""
        span = self._catchup.serve_lagging(
            sender, seq, self.committed_height, self._now, certain=certain
        )
        if span is not None:
            self._out.append(ServeBlocks(sender, *span))

    def _on_block_request(self, sender: int, req: BlockRequest) -> None:
        span = self._catchup.serve_request(req, self.committed_height)
        if span is not None:
            self._out.append(ServeBlocks(sender, *span))

    def _on_block_response(self, sender: int, resp: BlockResponse) -> None:
        for cb in resp.blocks:
            block = cb.block
            if block.height <= self.committed_height:
                continue
            if block.height != self.committed_height + 1:
                return
            if (
                block.header.chain_id != self.cfg.chain_id
                or block.header.prev_hash != self.committed_hash
            ):
                self._suspect(sender, "bad-block", f"fetched block {block.height} does not chain")
                return
            try:
                if self.cfg.verify_signatures:
                    cb.certificate.verify(self.cfg.chain_id, self.cfg.validators)
                elif len({v.validator for v in cb.certificate.votes}) < self.cfg.quorum:
                    raise InvalidCertificate("no quorum")
            except InvalidCertificate as exc:
                self._suspect(sender, "bad-certificate", f"block {block.height}: {exc}")
                return
            self._commit_block(block, encode(block, check=False), cb.certificate)
        # Slots above may now be complete.
        self._retry_deferred()
        self._check_prepared(self.committed_height + 1)
        self._release_in_order()
        if self.catching_up and resp.blocks:
            self._request_blocks(sender, self._catchup.fetch_until)
        if self.is_primary:
            self._propose()
        self._arm_timers()

    def _suspect(self, peer: int, kind: str, detail: str) -> None:
        self._out.append(Suspicion(peer, kind, detail))


# REPLICA-READY
