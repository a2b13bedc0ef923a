"""The executor on a real store: a replayed copy of a transaction (refused by the ledger as a
duplicate) leaves its location where it first committed, in memory and in the store alike."""

from __future__ import annotations

from pathlib import Path

import trio

from node.chain import CommittedWork, Executor
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.storage import BlockStore
from protocol.block import Block, CommitCertificate
from protocol.codec import encode
from protocol.contract import codes
from protocol.crypto import h256
from protocol.transactions import CommitmentEntry, RecordCommitment
from tests.unit.test_contract_harness import AGENCIES, CHAIN, GENESIS, Ledger


async def test_a_replayed_copy_keeps_the_first_location_in_memory_and_in_the_store(
    tmp_path: Path,
) -> None:
    store = BlockStore.open(tmp_path / "data", CHAIN)
    metrics = NodeMetrics(process=False)
    mempool = Mempool(
        CHAIN, max_txs=100, max_bytes=1 << 20, metrics=metrics, is_committed=lambda h: False
    )
    executor = Executor(store, GENESIS, mempool, metrics, lambda height, app_hash: None)
    ledger = Ledger()
    ref = h256(b"record")
    tx = ledger.tx(AGENCIES[0], RecordCommitment((CommitmentEntry(ref, h256(b"digest")),)))
    other = ledger.tx(AGENCIES[1], RecordCommitment((CommitmentEntry(h256(b"r2"), ref),)))
    h = h256(tx)

    def work(block: Block) -> CommittedWork:
        cert = CommitCertificate(block.header.height, 0, block.hash, ())
        return CommittedWork(block, encode(block), cert)

    first = ledger.block([other, tx])
    ledger.height = 1
    again = ledger.block([tx])
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(executor.run)
                executor.push(work(first))
                executor.push(work(again))
                await executor.wait_height(2)
                nursery.cancel_scope.cancel()
        recent = executor.outcome(h)
        assert recent is not None and recent[:2] == (1, 1) and recent[2].ok
        assert store.tx_location(h) == (1, 1)  # not (2, 0), where the duplicate was refused
        assert metrics.txs_failed.labels(codes.DUPLICATE)._value.get() == 1
    finally:
        store.close()
