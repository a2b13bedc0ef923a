"""The driver: the one trio task that owns the replica.

Everything else reaches the replica through :meth:`Driver.post` (network messages, admitted
transactions, executed heights); timers are deadlines the driver keeps itself. Each round it takes
every event that is ready, hands each to ``Replica.handle`` stamped with the wall clock, then
fires the timers that have expired and are still armed after those events (inputs before
timeouts: a busy node must not time out a primary whose progress already waits in its inbox),
and then carries out the outputs: first every :class:`Persist` of the round in one synced write
-- so no message leaves before the signature it carries is on disk -- then sends, committed
blocks (to the executor) and suspicions (counted, logged). Deleting the votes and proofs of a
committed height is deferred to the commit batch of the next stored block, so a crash never drops
a vote before its block is stored; other deletions (proofs a new view made obsolete, which may be
written again later) go in the round's synced write like any other record.

A peer's message that makes the replica raise would be a bug in the replica; the driver logs it,
counts it as a bad message and carries on rather than letting one peer stop the node.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from node.chain import CommittedWork, Executor
from node.metrics import NodeMetrics
from node.network import PeerNetwork
from node.storage import BlockStore
from node.tasks import TaskStatus
from protocol.block import Block, CommitCertificate
from protocol.codec import TAG_TABLE, CodecError, decode, encode
from protocol.consensus.events import (
    Broadcast,
    CancelTimer,
    Committed,
    Event,
    Executed,
    Output,
    Persist,
    Receive,
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
from protocol.consensus.journal import MAX_CONSENSUS_MESSAGE_BYTES, PROOF_PREFIX, VOTE_PREFIX
from protocol.consensus.messages import BlockResponse, CommittedBlock, PrePrepare
from protocol.consensus.replica import Replica

log = logging.getLogger("creditnet.consensus")

INBOX_SIZE = 100_000
INBOX_MAX_BYTES = 256 << 20
"""Peer messages waiting for the replica are bounded in bytes too (a validator may send large
view changes; a flood of them must not exhaust memory)."""
MAX_EVENTS_PER_ROUND = 512
SUSPICION_LOG_INTERVAL_S = 10.0
_PREPREPARE_TAG = bytes([next(t for t, n in TAG_TABLE.items() if n == "PrePrepare")])
"""Second byte of an encoded PrePrepare (a msgpack fixarray, then its tag)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Driver:
    """Owns one :class:`Replica` (see module doc)."""

    def __init__(
        self,
        replica: Replica,
        store: BlockStore,
        network: PeerNetwork,
        executor: Executor,
        metrics: NodeMetrics,
        *,
        sync_chunk_bytes: int,
        precheck: Callable[[Sequence[bytes], Sequence[bytes]], Awaitable[None]] | None = None,
    ) -> None:
        self.replica = replica
        self.store = store
        self.network = network
        self.executor = executor
        self.metrics = metrics
        self.sync_chunk_bytes = sync_chunk_bytes
        self._precheck = precheck
        self._send, self._recv = trio.open_memory_channel[Event](INBOX_SIZE)
        self._timers: dict[TimerKind, int] = {}
        self._pending_deletes: list[bytes] = []
        self._views_entered = 0
        self._suspicion_logged: dict[tuple[int, str], float] = {}
        self.dropped_events = 0
        self._queued_bytes = 0

    # --- inputs ---------------------------------------------------------------------------

    def post(self, event: Event) -> bool:
        """Queue an event for the replica; False (counted) if the inbox is full."""
        size = len(event.data) if isinstance(event, Receive) else 0
        if size and self._queued_bytes + size > INBOX_MAX_BYTES:
            self.dropped_events += 1
            self.metrics.p2p_bad_messages.labels("inbox_full").inc()
            return False
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped_events += 1
            self.metrics.p2p_bad_messages.labels("inbox_full").inc()
            return False
        self._queued_bytes += size
        return True

    def on_peer_message(self, sender: int, data: bytes) -> None:
        self.post(Receive(0, sender, data))

    def submit(self, txs: tuple[bytes, ...], hashes: tuple[bytes, ...] = ()) -> None:
        if txs:
            self.post(Submit(0, txs, hashes))

    def on_executed(self, height: int, app_hash: bytes) -> None:
        self.post(Executed(0, height, app_hash))

    # --- the loop -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the replica until cancelled."""
        await self._carry_out(self._apply_timers(self.replica.handle(Start(now_ms()))))
        task_status.started()
        while True:
            events: list[Event] = []
            deadline = self._next_deadline()
            with trio.move_on_at(deadline):
                first = await self._recv.receive()
                events.append(first)
            while len(events) < MAX_EVENTS_PER_ROUND:
                try:
                    item = self._recv.receive_nowait()
                except trio.WouldBlock:
                    break
                events.append(item)
            await self._precheck_proposals(events)
            # The inputs first, then the timers that have expired. An input that waited in the
            # inbox while this node was busy arrived before the timer was looked at: a commit
            # there is progress that restarts the view timer. Firing the timer first started
            # view changes on a primary that was fine whenever load kept this node's main thread
            # busy past a deadline -- 12 of them in 30 s at 700 queries/s, each stalling every
            # commit.
            outputs: list[Output] = []
            for ev in events:
                if isinstance(ev, Receive):
                    self._queued_bytes -= len(ev.data)
                outputs += self._handle(_stamp(ev, now_ms()))
            t = now_ms()
            for kind, at in list(self._timers.items()):
                if at <= t and self._timers.get(kind) == at:
                    del self._timers[kind]
                    outputs += self._handle(TimerFired(t, kind))
            await self._carry_out(outputs)

    async def _precheck_proposals(self, events: list[Event]) -> None:
        """Verify the transactions of the primary's pre-prepares that this node has not checked
        yet, in a worker thread, before the replica judges them: its per-transaction check then
        finds them known instead of verifying signatures on the node's main thread (validators
        send their transactions to the primary only, so a replica meets most of them here)."""
        if self._precheck is None:
            return
        for i, ev in enumerate(events):
            if (
                isinstance(ev, Receive)
                and ev.data[1:2] == _PREPREPARE_TAG
                and ev.sender == self.replica.primary
            ):
                try:
                    pp = decode(ev.data, PrePrepare, max_bytes=MAX_CONSENSUS_MESSAGE_BYTES)
                except CodecError:
                    continue  # the replica judges (and counts) it
                if pp.view != self.replica.view or pp.seq <= self.replica.committed_height:
                    continue  # stale or replayed: the replica drops it without looking inside
                started = time.monotonic()
                try:
                    await self._precheck(pp.block.txs, pp.block.tx_hashes)
                except Exception:  # the replica's own check still runs; never stop the driver
                    log.exception("pre-check of a proposal's transactions failed")
                self.metrics.block_stages["precheck"].observe(time.monotonic() - started)
                events[i] = Receive(ev.now_ms, ev.sender, ev.data, pp)  # decoded once

    def _handle(self, event: Event) -> list[Output]:
        try:
            outputs = self.replica.handle(event)
        except Exception:
            log.exception("replica failed on %s; event dropped", type(event).__name__)
            self.metrics.p2p_bad_messages.labels("replica_error").inc()
            return []
        return self._apply_timers(outputs)

    def _apply_timers(self, outputs: list[Output]) -> list[Output]:
        """Set and cancel the replica's timers at once, so the round's timer check sees what its
        inputs did to them (a timer the inputs cancelled or moved does not fire)."""
        for out in outputs:
            if isinstance(out, SetTimer):
                self._timers[out.timer] = out.at_ms
            elif isinstance(out, CancelTimer):
                self._timers.pop(out.timer, None)
        return outputs

    def _next_deadline(self) -> float:
        if not self._timers:
            return math.inf
        at = min(self._timers.values())
        return trio.current_time() + max(0.0, (at - now_ms()) / 1000)

    async def _carry_out(self, outputs: list[Output]) -> None:
        puts: dict[bytes, bytes | None] = {}
        committed = self.replica.committed_height
        for out in outputs:
            if isinstance(out, Persist):
                slot = _slot_of(out.key)
                if out.value is None and slot is not None and slot <= committed:
                    # Clean-up of a committed slot: only once its block is stored (see doc).
                    puts.pop(out.key, None)
                    self._pending_deletes.append(out.key)
                else:
                    puts[out.key] = out.value
        if puts:
            await trio.to_thread.run_sync(self.store.write_consensus, puts)
        r = self.replica
        for out in outputs:
            if isinstance(out, Send):
                self.network.send(out.to, out.data)
            elif isinstance(out, Broadcast):
                self.network.broadcast(out.data)
            elif isinstance(out, Committed):
                if not r.catching_up:  # (a block fetched in catch-up is old news)
                    since = time.time() - out.block.header.time_ms / 1000
                    self.metrics.block_stages["commit"].observe(max(0.0, since))
                deletes, self._pending_deletes = tuple(self._pending_deletes), []
                self.executor.push(
                    CommittedWork(out.block, out.block_bytes, out.certificate, deletes)
                )
            elif isinstance(out, ServeBlocks):
                self._serve_blocks(out)
            elif isinstance(out, Suspicion):
                self._suspicion(out)
            elif isinstance(out, ViewEntered):
                self._views_entered += 1
                if self._views_entered > 1:
                    self.metrics.view_changes.inc()
                log.info("view %d entered, primary %d", out.view, out.primary)
        m = self.metrics
        m.height.set(r.committed_height)
        m.view.set(r.view)
        m.is_primary.set(1 if r.is_primary else 0)
        m.sync_syncing.set(1 if r.catching_up else 0)

    def _serve_blocks(self, req: ServeBlocks) -> None:
        """Answer a peer's catch-up request from storage, one chunk of at most sync_chunk_bytes."""
        top = min(req.to_height, self.store.latest_height)
        blocks: list[CommittedBlock] = []
        size = 0
        for height in range(max(1, req.from_height), top + 1):
            raw_block = self.store.block(height)
            raw_cert = self.store.certificate(height)
            if raw_block is None or raw_cert is None:
                break
            if blocks and size + len(raw_block) + len(raw_cert) > self.sync_chunk_bytes:
                break
            blocks.append(
                CommittedBlock(decode(raw_block, Block), decode(raw_cert, CommitCertificate))
            )
            size += len(raw_block) + len(raw_cert)
        if blocks:
            self.network.send(req.to, encode(BlockResponse(tuple(blocks)), check=False), "sync")

    def _suspicion(self, s: Suspicion) -> None:
        self.metrics.suspicions.labels(s.kind).inc()
        now = time.monotonic()
        key = (s.peer, s.kind)
        if now - self._suspicion_logged.get(key, -1e9) >= SUSPICION_LOG_INTERVAL_S:
            self._suspicion_logged[key] = now
            log.warning("validator %d: %s: %s", s.peer, s.kind, s.detail)


def _slot_of(key: bytes) -> int | None:
    """The height a vote or proof record is about (its last 8 bytes), None for other records."""
    if key.startswith((VOTE_PREFIX, PROOF_PREFIX)) and len(key) >= 8:
        return int.from_bytes(key[-8:], "big")
    return None


def _stamp(ev: Event, t: int) -> Event:
    """The event with the driver's clock (events are queued before they are stamped)."""
    if isinstance(ev, Receive):
        return Receive(t, ev.sender, ev.data, ev.decoded)
    if isinstance(ev, Submit):
        return Submit(t, ev.txs, ev.hashes)
    if isinstance(ev, Executed):
        return Executed(t, ev.height, ev.app_hash)
    if isinstance(ev, TimerFired):
        return TimerFired(t, ev.timer)
    return Start(t)
