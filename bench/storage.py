"""Storage benchmark: how fast a node can commit and read blocks in its block store (the blocks in
append-only block files, their index and the state in LevelDB).

    python -m bench.storage [--blocks N] [--txs-per-block 1000] [--out bench/results/storage.json]

Measures ``BlockStore.commit_block`` with synthetic blocks of ``--txs-per-block`` transactions
(``--tx-bytes`` each; one tx-index entry and one new state key per tx, plus account updates),
synced (fsync per block, as a node runs: the block file's, then LevelDB's) and unsynced, then
random block reads (checksum checked), random
``state_get`` and ``tx_location`` lookups on the unsynced store. Only the store calls are timed;
the synthetic inputs are made outside the timer. Runs in a temporary directory under ``--dir``
(default: the system temp dir; point it at the disk a node would use, fsync cost depends on it).
Prints one JSON object and writes it to ``--out`` (directories created).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel

from node.storage import BlockStore
from protocol.crypto import h256

CHAIN_ID = "bench-storage"
ACCOUNTS = 10_000
ACCOUNT_UPDATES_PER_BLOCK = 100


@dataclass(frozen=True)
class Workload:
    """Shape of the synthetic blocks."""

    blocks: int
    txs_per_block: int
    tx_bytes: int
    seed: int


@dataclass(frozen=True)
class Block:
    """One synthetic block, ready to commit."""

    height: int
    block_hash: bytes
    body: bytes
    certificate: bytes
    tx_hashes: list[bytes]
    changes: dict[bytes, bytes | None]


def synthetic_blocks(w: Workload) -> Iterator[Block]:
    """Blocks 1..w.blocks: random tx bytes, their hashes, new record keys and account updates."""
    rng = random.Random(w.seed)
    for height in range(1, w.blocks + 1):
        body = rng.randbytes(w.txs_per_block * w.tx_bytes)
        txs = [h256(body[i * w.tx_bytes : (i + 1) * w.tx_bytes]) for i in range(w.txs_per_block)]
        changes: dict[bytes, bytes | None] = {b"rec/" + tx[:16]: tx for tx in txs}
        for _ in range(ACCOUNT_UPDATES_PER_BLOCK):
            changes[b"acct/%06d" % rng.randrange(ACCOUNTS)] = rng.randbytes(16)
        certificate = rng.randbytes(3 * 100)  # ~3 signed votes
        yield Block(height, h256(body), body, certificate, txs, changes)


def measure_commits(store: BlockStore, w: Workload, *, sync: bool) -> dict[str, Any]:
    """Commit every synthetic block; throughput from the time spent inside commit_block."""
    latencies: list[float] = []
    total_bytes = 0
    for b in synthetic_blocks(w):
        start = time.perf_counter()
        store.commit_block(
            b.height,
            b.block_hash,
            b.body,
            b.certificate,
            tx_hashes=b.tx_hashes,
            state_changes=b.changes,
            sync=sync,
        )
        latencies.append(time.perf_counter() - start)
        total_bytes += len(b.body)
    spent = sum(latencies)
    return {
        "sync": sync,
        "blocks_per_s": round(w.blocks / spent, 1),
        "tx_index_entries_per_s": round(w.blocks * w.txs_per_block / spent),
        "mb_per_s": round(total_bytes / spent / 1e6, 1),
        "latency_ms": percentiles(latencies),
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    ordered = sorted(seconds)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": at(1.0)}


def measure_reads(store: BlockStore, w: Workload, reads: int) -> dict[str, float]:
    """Random block reads, state gets and tx lookups per second on a filled store."""
    rng = random.Random(w.seed + 1)
    sample = Workload(min(w.blocks, 20), w.txs_per_block, w.tx_bytes, w.seed)
    blocks = list(synthetic_blocks(sample))  # keys known to be stored, drawn from 20 blocks
    state_keys = [key for b in blocks for key in b.changes]
    tx_hashes = [tx for b in blocks for tx in b.tx_hashes]

    def rate(probe: Iterator[object]) -> float:
        start = time.perf_counter()
        for found in probe:
            assert found is not None, "benchmark read missed a stored key"
        return round(reads / (time.perf_counter() - start))

    heights = [rng.randint(1, w.blocks) for _ in range(reads)]
    keys = [rng.choice(state_keys) for _ in range(reads)]
    txs = [rng.choice(tx_hashes) for _ in range(reads)]
    return {
        "block_reads_per_s": rate(store.block(h) for h in heights),
        "state_gets_per_s": rate(store.state_get(k) for k in keys),
        "tx_lookups_per_s": rate(store.tx_location(t) for t in txs),
    }


def run(w: Workload, reads: int, parent: Path | None) -> dict[str, Any]:
    """The whole benchmark in a temporary directory (removed afterwards)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="creditnet-bench-", dir=parent) as tmp:
        with BlockStore.open(Path(tmp) / "synced", CHAIN_ID) as store:
            synced = measure_commits(store, w, sync=True)
        with BlockStore.open(Path(tmp) / "unsynced", CHAIN_ID) as store:
            unsynced = measure_commits(store, w, sync=False)
            read_rates = measure_reads(store, w, reads)
        where = str(Path(tmp).parent)
    return {
        "bench": "storage",
        "blocks": w.blocks,
        "txs_per_block": w.txs_per_block,
        "tx_bytes": w.tx_bytes,
        "block_bytes": w.txs_per_block * w.tx_bytes,
        "state_changes_per_block": w.txs_per_block + ACCOUNT_UPDATES_PER_BLOCK,
        "synced_commit": synced,
        "unsynced_commit": unsynced,
        **read_rates,
        "reads": reads,
        "dir": where,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "python": platform.python_version(),
        "plyvel": plyvel.__version__,
        "leveldb": plyvel.__leveldb_version__,
        "cpus": os.cpu_count(),
    }


def write_result(result: dict[str, Any], out: Path) -> None:
    """Write ``result`` as JSON to ``out`` atomically (temp file, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print the JSON object and save it."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.storage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--blocks", type=int, default=300, help="blocks per commit phase")
    parser.add_argument("--txs-per-block", type=int, default=1000)
    parser.add_argument("--tx-bytes", type=int, default=250, help="bytes per synthetic tx")
    parser.add_argument("--reads", type=int, default=20_000, help="lookups per read phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", type=Path, default=None, help="parent of the temp directory")
    parser.add_argument("--out", type=Path, default=Path("bench/results/storage.json"))
    args = parser.parse_args(argv)
    if args.blocks < 1 or args.txs_per_block < 1 or args.tx_bytes < 1 or args.reads < 1:
        parser.error("--blocks, --txs-per-block, --tx-bytes and --reads must be positive")
    workload = Workload(args.blocks, args.txs_per_block, args.tx_bytes, args.seed)
    result = run(workload, args.reads, args.dir)
    print(json.dumps(result))
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
