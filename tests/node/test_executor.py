"""The executor on a real store: a replayed copy of a transaction (refused by the ledger as a
duplicate) leaves its location where it first committed, in memory and in the store alike; a
committed transaction's ledger result is the same from memory and from the store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import trio

import node.chain
from node.chain import CommittedWork, Executor, StoredState
from node.mempool import Mempool
from node.metrics import NodeMetrics
from node.storage import BlockStore
from protocol.block import Block, CommitCertificate
from protocol.codec import encode
from protocol.contract import codes, views
from protocol.crypto import h256
from protocol.transactions import CommitmentEntry, RecordCommitment
from tests.unit.test_contract_harness import AGENCIES, CHAIN, GENESIS, Ledger


def executor_on(store: BlockStore) -> Executor:
    """An executor of ``store`` with its own metrics and an empty mempool."""
    metrics = NodeMetrics(process=False)
    mempool = Mempool(
        CHAIN, max_txs=100, max_bytes=1 << 20, metrics=metrics, is_committed=lambda h: False
    )
    return Executor(store, GENESIS, mempool, metrics, lambda height, app_hash: None)


async def execute(executor: Executor, blocks: list[Block]) -> None:
    """Run ``executor`` until it has stored ``blocks`` (heights 1, 2, ...)."""
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(executor.run)
            for block in blocks:
                cert = CommitCertificate(block.header.height, 0, block.hash, ())
                executor.push(CommittedWork(block, encode(block), cert))
            await executor.wait_height(len(blocks))
            nursery.cancel_scope.cancel()


async def test_a_replayed_copy_keeps_the_first_location_in_memory_and_in_the_store(
    tmp_path: Path,
) -> None:
    store = BlockStore.open(tmp_path / "data", CHAIN)
    executor = executor_on(store)
    metrics = executor.metrics
    ledger = Ledger()
    ref = h256(b"record")
    tx = ledger.tx(AGENCIES[0], RecordCommitment((CommitmentEntry(ref, h256(b"digest")),)))
    other = ledger.tx(AGENCIES[1], RecordCommitment((CommitmentEntry(h256(b"r2"), ref),)))
    h = h256(tx)
    first = ledger.block([other, tx])
    ledger.height = 1
    again = ledger.block([tx])
    try:
        await execute(executor, [first, again])
        recent = executor.outcome(h)
        assert recent is not None and recent[:2] == (1, 1) and recent[2].ok
        assert store.tx_location(h) == (1, 1)  # not (2, 0), where the duplicate was refused
        assert metrics.txs_failed.labels(codes.DUPLICATE)._value.get() == 1
        stored = views.tx_result(StoredState(store), h)
        assert stored is not None and (stored.height, stored.index, stored.ok) == (1, 1, True)
        assert executor.result(h) == stored  # from memory: the first result, as stored
    finally:
        store.close()


@pytest.mark.parametrize("kept", [1_000, 1])
async def test_a_committed_result_is_the_same_from_memory_and_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: int
) -> None:
    """``kept`` = 1: the first block's outcomes have left memory by the second block, and
    ``result`` reads them from the store instead."""
    monkeypatch.setattr(node.chain, "RECENT_OUTCOMES", kept)
    store = BlockStore.open(tmp_path / "data", CHAIN)
    executor = executor_on(store)
    ledger = Ledger()
    ok = ledger.tx(AGENCIES[0], RecordCommitment((CommitmentEntry(h256(b"a"), h256(b"d")),)))
    refused = ledger.tx(AGENCIES[1], RecordCommitment((CommitmentEntry(h256(b"a"), h256(b"e")),)))
    later = ledger.tx(AGENCIES[2], RecordCommitment((CommitmentEntry(h256(b"b"), h256(b"f")),)))
    blocks = [ledger.block([ok, refused])]
    ledger.height = 1
    blocks.append(ledger.block([later]))
    try:
        await execute(executor, blocks)
        assert (executor.outcome(h256(ok)) is None) == (kept == 1)
        for tx in (ok, refused, later):
            stored = views.tx_result(StoredState(store), h256(tx))
            assert stored is not None and executor.result(h256(tx)) == stored
        first = executor.result(h256(ok))
        second = executor.result(h256(refused))
        assert first is not None and (first.ok, first.height, first.index) == (True, 1, 0)
        assert second is not None and not second.ok and second.code != codes.OK
        assert executor.result(h256(b"never sent")) is None
    finally:
        store.close()


async def test_close_stops_the_block_writer_thread_after_the_blocks_it_wrote(
    tmp_path: Path,
) -> None:
    def writers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("block-writer")}

    others = writers()  # other tests' executors, if any
    store = BlockStore.open(tmp_path / "data", CHAIN)
    executor = executor_on(store)
    ledger = Ledger()
    tx = ledger.tx(AGENCIES[0], RecordCommitment((CommitmentEntry(h256(b"r"), h256(b"d")),)))
    try:
        await execute(executor, [ledger.block([tx])])
        mine = writers() - others
        assert mine
        executor.close()
        assert not any(t.is_alive() for t in mine)
        assert store.block(1) is not None
    finally:
        store.close()
