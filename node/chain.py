"""Execution of committed blocks: the contract over the stored state, then one synced batch.

The replica releases blocks strictly in height order; :class:`Executor` applies each one's
transactions with the credit contract (:func:`protocol.contract.rules.execute_block`), and writes
block, certificate, tx index, state changes, the new app hash and the consensus records the block
made obsolete in one atomic batch. The work runs in a worker thread so the node keeps answering
peers and clients meanwhile (LevelDB's fsync releases the GIL). A transaction that breaks a ledger
rule is a failed outcome recorded on the ledger with its reason; it never stops the node.

After each block the executor reports ``Executed(height, app_hash)`` to the driver (which feeds it
to the replica: the app hash goes into later block headers) and wakes whoever waits on the block's
transactions.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import trio

from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.storage import BlockStore
from protocol.block import Block, CommitCertificate
from protocol.codec import encode
from protocol.contract import codes, views
from protocol.contract.rules import BlockOutcome, TxOutcome, execute_block
from protocol.contract.state import TxResult
from protocol.genesis import Genesis

log = logging.getLogger("creditnet.chain")

RECENT_OUTCOMES = 50_000
"""Outcomes of the latest committed transactions kept in memory (about 400 B each: 20 MB), so
commit waiters and ``GET /v1/txs`` need no store read for them; older ones are read from the
store. 200,000 held 80 MB once full -- most of a node's memory growth under sustained load."""


@dataclass(frozen=True)
class CommittedWork:
    """One block for the executor, with consensus records it makes obsolete."""

    block: Block
    block_bytes: bytes
    certificate: CommitCertificate
    consensus_deletes: tuple[bytes, ...] = ()


class Executor:
    """Executes and stores committed blocks in order (see module doc)."""

    def __init__(
        self,
        store: BlockStore,
        genesis: Genesis,
        mempool: Mempool,
        metrics: NodeMetrics,
        on_executed: Callable[[int, bytes], None],
    ) -> None:
        self.store = store
        self._state = StoredState(store)
        self.genesis = genesis
        self.mempool = mempool
        self.metrics = metrics
        self._on_executed = on_executed
        self._queue: deque[CommittedWork] = deque()
        self._wake = trio.Event()
        self._height_event = trio.Event()
        # Flat tuples of atoms: the garbage collector stops tracking those, so the 50,000 kept
        # do not lengthen its full collections (dataclass instances would, at ~1 ms per 1,000).
        self._recent: OrderedDict[bytes, tuple[int, int, bool, str, str]] = OrderedDict()
        self._last_commit: float | None = None
        self._recorded = 0
        """Outcomes put in ``_recent`` so far (it keeps the last RECENT_OUTCOMES)."""
        self.failed: BaseException | None = None
        self._block_writer = ThreadPoolExecutor(1, thread_name_prefix="block-writer")
        """Writes each block's record to the block files while the block executes."""

    def close(self) -> None:
        """Stop the block-writer thread (after any write it has begun); before the store
        closes. The executor's own work is never left mid-block: a cancelled ``run`` waits for
        the block its worker thread is on."""
        self._block_writer.shutdown(wait=True)

    @property
    def height(self) -> int:
        return self.store.latest_height

    @property
    def backlog(self) -> int:
        return len(self._queue)

    def push(self, work: CommittedWork) -> None:
        """Queue a block the replica committed (called by the driver; never blocks)."""
        self._queue.append(work)
        self._wake.set()

    async def run(self) -> None:
        """Execute queued blocks forever. A storage failure is fatal: it propagates and stops
        the node (continuing would fork this node's state from the others')."""
        while True:
            while not self._queue:
                self._wake = trio.Event()
                await self._wake.wait()
            work = self._queue.popleft()
            if work.block.height <= self.store.latest_height:
                continue  # already stored (a re-delivered block after catch-up)
            started = time.monotonic()
            app_hash, outcome = await trio.to_thread.run_sync(self._execute, work)
            self._after_commit(work.block, app_hash, outcome, started)

    def _execute(self, work: CommittedWork) -> tuple[bytes, BlockOutcome]:
        block = work.block
        certificate = encode(work.certificate, check=False)
        # The block's record goes to its file (and is fsynced) while the block executes: the
        # write waits on the disk with the GIL released, the execution runs Python.
        written = self._block_writer.submit(
            self.store.write_block, block.height, work.block_bytes, certificate
        )
        started, wall = time.thread_time(), time.monotonic()
        outcome = execute_block(
            self.genesis, self._state, block, decoded=self.mempool.decoded
        )
        executed, executed_wall = time.thread_time(), time.monotonic()
        self.metrics.worker_cpu.labels("execute").inc(executed - started)
        self.metrics.block_stages["execute"].observe(executed_wall - wall)
        app_hash = self.store.commit_block(
            block.height,
            block.hash,
            work.block_bytes,
            certificate,
            tx_hashes=[o.tx_hash for o in outcome.outcomes],
            state_changes=outcome.changes,
            consensus_deletes=work.consensus_deletes,
            replays={i for i, o in enumerate(outcome.outcomes) if o.code == codes.DUPLICATE},
            location=written.result(),
        )
        self.metrics.worker_cpu.labels("store").inc(time.thread_time() - executed)
        self.metrics.block_stages["store"].observe(time.monotonic() - executed_wall)
        return app_hash, outcome

    def _after_commit(
        self, block: Block, app_hash: bytes, outcome: BlockOutcome, started: float
    ) -> None:
        now = time.monotonic()
        m = self.metrics
        m.store_commit_seconds.observe(now - started)
        m.executed_height.set(block.height)
        m.txs_committed.inc(len(outcome.outcomes))
        m.block_txs.observe(len(outcome.outcomes))
        for o in outcome.outcomes:
            if not o.ok:
                m.txs_failed.labels(o.code).inc()
        if self._last_commit is not None:
            m.block_interval.observe(now - self._last_commit)
        self._last_commit = now
        hashes = [o.tx_hash for o in outcome.outcomes]
        self.mempool.committed(hashes)
        for i, o in enumerate(outcome.outcomes):
            if o.code != codes.DUPLICATE:  # the first result of that hash stands
                self._recent[o.tx_hash] = (block.height, i, o.ok, o.code, o.detail)
        self._recorded += len(outcome.outcomes)
        while len(self._recent) > RECENT_OUTCOMES:
            self._recent.popitem(last=False)
        self._height_event.set()
        self._height_event = trio.Event()
        self._on_executed(block.height, app_hash)

    def outcome(self, tx_hash: bytes) -> tuple[int, int, TxOutcome] | None:
        """(height, index, outcome) of a recently committed tx (None: not recent, or pending)."""
        kept = self._recent.get(tx_hash)
        if kept is None:
            return None
        height, index, ok, code, detail = kept
        return height, index, TxOutcome(tx_hash, ok, code, detail)

    def result(self, tx_hash: bytes) -> TxResult | None:
        """The ledger result of committed tx ``tx_hash`` (None: not committed): from memory for
        the recent blocks -- the commit waiters' case, no store read on the main thread --, else
        from the store."""
        kept = self._recent.get(tx_hash)
        if kept is None:
            return views.tx_result(self._state, tx_hash)
        height, index, ok, code, detail = kept
        return TxResult(ok=ok, code=code, detail=detail, height=height, index=index)

    def is_committed(self, tx_hash: bytes) -> bool:
        return tx_hash in self._recent or self.store.tx_location(tx_hash) is not None

    async def wait_committed(self, tx_hashes: list[bytes]) -> None:
        """Return once every tx of ``tx_hashes`` is committed here (the caller bounds the wait).

        One wake-up per stored block, whatever the number of hashes: the waiter re-checks the
        ones still missing.
        """
        missing = [h for h in tx_hashes if not self.is_committed(h)]
        since = self._recorded
        while missing:
            await self._height_event.wait()
            if self._recorded - since < RECENT_OUTCOMES:
                # Whatever committed since the first check is still among the recent outcomes:
                # no store lookup for each missing hash at every block.
                missing = [h for h in missing if h not in self._recent]
            else:
                missing = [h for h in missing if not self.is_committed(h)]
                since = self._recorded

    async def wait_height(self, height: int) -> None:
        """Return once block ``height`` is stored."""
        while self.store.latest_height < height:
            await self._height_event.wait()


class StoredState:
    """The committed application state of a store, as the contract reads it."""

    def __init__(self, store: BlockStore) -> None:
        self.get = store.state_get
