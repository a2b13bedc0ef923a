"""The mempool: admitted transactions waiting to be committed.

Admission (for a client's transactions and for those gossiped by peers alike): size limit,
decode, envelope signature (and a query entry's request signature) checked in a worker thread
(Ed25519 releases the GIL), refusal of a transaction already committed, dedupe by hash, and
bounds on count and bytes -- beyond them a clear ``mempool_full`` refusal (the API answers 503
with Retry-After). The replica orders what was admitted; the mempool forgets a transaction when
its block is executed, recording the time from admission to commit.

The mempool also remembers which hashes it verified, with the decoded transaction, so checking a
proposed block costs a hash lookup per transaction instead of a signature verification, and
executing it needs no second decode.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import trio

from node.metrics import NodeMetrics
from protocol.codec import CodecError
from protocol.contract.admission import TxRejected, check_tx
from protocol.crypto import h256
from protocol.transactions import MAX_TX_BYTES, Transaction, decode_tx

VERIFY_CHUNK = 256
"""Transactions verified per worker-thread call."""
INLINE_VERIFY_MAX = 4
INLINE_VERIFY_BYTES = 16 * 1024
"""Up to this many transactions (and bytes) are verified on the calling thread: handing work to
a worker thread and back costs about 200 µs of CPU on the reference machine (trio's thread
cache, two wake-ups), more than verifying a few small transactions; query load arrives in such
small batches."""
REFUSALS_KEPT = 10_000
"""Recent refusals remembered, so a task that waited on another's check gets its verdict."""


@dataclass(frozen=True)
class Admission:
    """What happened to one submitted transaction."""

    tx_hash: bytes
    status: str
    """``accepted`` (new), ``pending`` (already in the mempool), ``committed`` (already on the
    ledger) or ``refused``."""
    code: str = ""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status != "refused"

    @property
    def ok_new(self) -> bool:
        """Accepted just now (not already pending or committed)."""
        return self.status == "accepted"


@dataclass
class _Entry:
    tx: bytes
    admitted_at: float
    local: bool
    gossiped_at: float
    resent: bool = False


class Mempool:
    """Pending transactions of one node (see module doc). Owned by the node's trio loop."""

    def __init__(
        self,
        chain_id: str,
        *,
        max_txs: int,
        max_bytes: int,
        metrics: NodeMetrics,
        is_committed: Callable[[bytes], bool],
        verify_limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.max_txs = max_txs
        self.max_bytes = max_bytes
        self.metrics = metrics
        self._is_committed = is_committed
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._bytes = 0
        self._verified: OrderedDict[bytes, Transaction] = OrderedDict()
        self._inflight: dict[bytes, trio.Event] = {}
        self._refused: OrderedDict[bytes, tuple[str, str]] = OrderedDict()
        self._limiter = verify_limiter or trio.CapacityLimiter(2)
        metrics.mempool_capacity.set(max_txs)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._entries

    def is_full(self) -> bool:
        return len(self._entries) >= self.max_txs or self._bytes >= self.max_bytes

    async def admit(
        self,
        txs: Sequence[bytes],
        *,
        local: bool,
        built: Sequence[Transaction] | None = None,
    ) -> list[Admission]:
        """Check and keep ``txs``; one :class:`Admission` per input, in order.

        ``built``: the transactions themselves, when this node built and signed them (an
        agency's own query entries and commitments, whose caller verified any signature a body
        carries): their signatures are not verified a second time here (size and decoding are).
        """
        hashes = [h256(tx) for tx in txs]
        out: list[Admission | None] = [None] * len(txs)
        todo: list[int] = []
        room = self.max_txs - len(self._entries)
        for i, (_tx, h) in enumerate(zip(txs, hashes, strict=True)):
            if h in self._entries:
                out[i] = Admission(h, "pending")
            elif self._is_committed(h):
                out[i] = Admission(h, "committed")
            elif room <= 0 or self._bytes >= self.max_bytes:
                out[i] = self._full(h)  # refused before the costly signature check
            else:
                todo.append(i)
                room -= 1
        # A transaction already checked (in a proposal that arrived before the gossip) is not
        # verified twice.
        verdict_of: dict[int, tuple[str, str] | None] = dict.fromkeys(todo)
        decoded: dict[int, Transaction] = {}
        if built is not None:
            # Our own signature is not checked again, but size and decoding are: execution then
            # works from the bytes every node decodes, not from the object we built.
            for i in todo:
                if len(txs[i]) <= MAX_TX_BYTES:
                    with contextlib.suppress(CodecError):  # else refused by the full check
                        decoded[i] = decode_tx(txs[i])
        unchecked = [i for i in todo if hashes[i] not in self._verified and i not in decoded]
        found = await self._check([(txs[i], hashes[i]) for i in unchecked])
        for i, (verdict, tx) in zip(unchecked, found, strict=True):
            verdict_of[i] = verdict
            if tx is not None:
                decoded[i] = tx
        now = time.monotonic()
        for i in todo:
            verdict = verdict_of[i]
            h = hashes[i]
            if verdict is not None:
                out[i] = Admission(h, "refused", *verdict)
                self.metrics.mempool_refused.labels(verdict[0]).inc()
                continue
            if h in self._entries:  # admitted meanwhile (gossip and client at once)
                out[i] = Admission(h, "pending")
                continue
            if self.is_full():
                out[i] = self._full(h)
                continue
            self._entries[h] = _Entry(txs[i], now, local, now)
            self._bytes += len(txs[i])
            tx = decoded.get(i)
            if tx is not None:
                self._remember_verified(h, tx)
            out[i] = Admission(h, "accepted")
        self._update_gauges()
        return [a for a in out if a is not None]

    def _full(self, h: bytes) -> Admission:
        self.metrics.mempool_refused.labels("mempool_full").inc()
        return Admission(
            h,
            "refused",
            "mempool_full",
            f"the mempool holds {len(self._entries)} transactions ({self._bytes} bytes), "
            "its limit; retry later",
        )

    def _check_many(
        self, txs: list[bytes]
    ) -> list[tuple[tuple[str, str] | None, Transaction | None]]:
        """Stateless checks of each transaction (in a worker thread unless only a few);
        (refusal, decoded) for each."""
        started = time.thread_time()
        verdicts: list[tuple[tuple[str, str] | None, Transaction | None]] = []
        for tx in txs:
            try:
                verdicts.append((None, check_tx(self.chain_id, tx)))
            except TxRejected as exc:
                verdicts.append(((exc.code, exc.detail), None))
        self.metrics.verified.inc(len(txs))
        self.metrics.worker_cpu.labels("verify").inc(time.thread_time() - started)
        return verdicts

    async def precheck(self, txs: Sequence[bytes], hashes: Sequence[bytes]) -> None:
        """Verify, in worker threads, the transactions of a proposal not checked here
        yet, and remember the good ones (the replica's :meth:`block_check` then finds them).

        One bad transaction makes the replica refuse the whole proposal, so the check stops
        after the chunk holding the first refusal (or at once, for one refused before): a faulty
        primary's proposal of forged transactions costs at most one chunk of verifications, not
        the whole block; :meth:`block_check` then refuses it before verifying anything more."""
        todo: list[tuple[bytes, bytes]] = []
        for tx, h in zip(txs, hashes, strict=True):
            if h in self._refused:
                return
            if h not in self._verified:
                todo.append((tx, h))
        if todo:
            await self._check(todo, until_refused=True)

    async def _check(
        self, items: list[tuple[bytes, bytes]], until_refused: bool = False
    ) -> list[tuple[tuple[str, str] | None, Transaction | None]]:
        """(refusal, decoded) for each (tx, hash), verified in worker threads; a transaction
        another task is verifying right now (a proposal and a peer's batch carrying it at once)
        is waited for instead of verified twice. Good ones are remembered as verified.
        With ``until_refused`` it stops after the chunk holding the first refusal and returns
        nothing (the pre-check of a proposal only fills the caches)."""
        mine: list[tuple[bytes, bytes]] = []
        waits: dict[bytes, tuple[bytes, trio.Event]] = {}
        result: dict[bytes, tuple[tuple[str, str] | None, Transaction | None]] = {}
        for tx, h in items:
            if h in result or h in waits:
                continue  # a copy of one already handled in this call
            known = self._verified.get(h)
            if known is not None:
                result[h] = (None, known)
            elif h in self._inflight:
                waits[h] = (tx, self._inflight[h])
            else:
                self._inflight[h] = trio.Event()
                result[h] = (None, None)  # placeholder until verified below
                mine.append((tx, h))
        try:
            refused = await self._verify_now(mine, result, until_refused)
        finally:
            for _tx, h in mine:
                self._inflight.pop(h).set()
        if until_refused and refused:
            return []
        again: list[tuple[bytes, bytes]] = []
        for h, (tx, event) in waits.items():
            await event.wait()
            known = self._verified.get(h)
            if known is not None:
                result[h] = (None, known)
            elif h in self._refused:
                result[h] = (self._refused[h], None)
            else:
                again.append((tx, h))  # the other task was cancelled before its verdict
        await self._verify_now(again, result)  # checked here directly, once (no recursion)
        return [result[h] for _tx, h in items]

    async def _verify_now(
        self,
        items: list[tuple[bytes, bytes]],
        result: dict[bytes, tuple[tuple[str, str] | None, Transaction | None]],
        until_refused: bool = False,
    ) -> bool:
        """Verify ``items`` in worker threads, VERIFY_CHUNK at a time, into ``result``;
        remember the good ones as verified and the refusals for a while. Whether one was
        refused; with ``until_refused``, no chunk is checked after the one that refused."""
        refused = False
        for start in range(0, len(items), VERIFY_CHUNK):
            if refused and until_refused:
                break
            part = items[start : start + VERIFY_CHUNK]
            if len(part) <= INLINE_VERIFY_MAX and sum(len(tx) for tx, _ in part) <= (
                INLINE_VERIFY_BYTES
            ):
                found = self._check_many([tx for tx, _ in part])
            else:
                found = await trio.to_thread.run_sync(
                    self._check_many, [tx for tx, _ in part], limiter=self._limiter
                )
            for (_tx, h), (verdict, decoded) in zip(part, found, strict=True):
                result[h] = (verdict, decoded)
                if decoded is not None:
                    self._remember_verified(h, decoded)
                elif verdict is not None:
                    refused = True
                    self._remember_refused(h, verdict)
        return refused

    def _remember_refused(self, h: bytes, verdict: tuple[str, str]) -> None:
        """Stateless verdicts only (a pure function of the bytes, hence of the hash)."""
        self._refused[h] = verdict
        while len(self._refused) > REFUSALS_KEPT:
            self._refused.popitem(last=False)

    def _remember_verified(self, h: bytes, tx: Transaction) -> None:
        self._verified[h] = tx
        while len(self._verified) > 4 * self.max_txs:
            self._verified.popitem(last=False)

    def block_check(self, txs: Sequence[bytes], hashes: Sequence[bytes]) -> bool:
        """The replica's check of a proposed block's transactions: a transaction refused lately
        refuses the block at once, before any unknown one is verified on this thread (a faulty
        primary could otherwise put many fresh ones before a known-forged one)."""
        if any(h in self._refused for h in hashes):
            return False
        return all(map(self.tx_check, txs, hashes))

    def tx_check(self, tx: bytes, h: bytes) -> bool:
        """The replica's check of a proposed transaction ``tx`` of hash ``h``: known-good,
        refused lately, or verified now."""
        if h in self._verified:
            return True
        if h in self._refused:
            return False
        ((verdict, decoded),) = self._check_many([tx])
        if decoded is None:
            if verdict is not None:
                self._remember_refused(h, verdict)
            return False
        self._remember_verified(h, decoded)
        return True

    def decoded(self, tx_hash: bytes) -> Transaction | None:
        """The checked transaction of this hash, decoded, if still remembered (the executor
        reads it from its worker thread: one dict lookup, atomic under the GIL)."""
        return self._verified.get(tx_hash)

    def committed(self, tx_hashes: Iterable[bytes]) -> None:
        """Forget transactions that a block just committed; record their commit latency."""
        now = time.monotonic()
        for h in tx_hashes:
            # Executed: its decoded form is no longer needed (a later copy is refused as
            # committed), so the verified cache holds pending transactions, not history.
            self._verified.pop(h, None)
            entry = self._entries.pop(h, None)
            if entry is not None:
                self._bytes -= len(entry.tx)
                self.metrics.commit_latency.observe(now - entry.admitted_at)
        self._update_gauges()

    def stale_local(self, first_after_s: float, again_after_s: float, limit: int) -> list[bytes]:
        """Local transactions still pending ``first_after_s`` after they were sent, or
        ``again_after_s`` after they were last sent again (the batch or its primary may be
        lost); at most ``limit``, marked as sent now."""
        now = time.monotonic()
        out: list[bytes] = []
        for entry in self._entries.values():
            if len(out) >= limit:
                break
            wait = again_after_s if entry.resent else first_after_s
            if entry.local and now - entry.gossiped_at >= wait:
                entry.gossiped_at = now
                entry.resent = True
                out.append(entry.tx)
        return out

    def _update_gauges(self) -> None:
        self.metrics.mempool_size.set(len(self._entries))
        self.metrics.mempool_bytes.set(self._bytes)


__all__ = ["Admission", "Mempool", "TxRejected"]
