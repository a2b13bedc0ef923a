"""The PBFT replica alone, without I/O: ``python -m bench.replica [--nodes 4,7] [--seconds S]``.

All replicas of one cluster run in this one process on a zero-latency FIFO network, so the
figures are the CPU cost of the state machine (codec, Ed25519 on every consensus message, the
replica logic) with nothing else in the way. Reported per cluster size:

- ``empty_instances_per_s``: consensus instances (heights) per second with empty blocks,
  one in flight at a time;
- ``tx_per_s``: client transactions ordered per second with batches of 500, several heights in
  flight, client-signature checks excluded (``txs_check=None``) and included (every replica
  decodes and verifies each transaction's Ed25519 signature when it accepts a block).

"Cluster" figures count all n replicas sharing one core; a deployment gives each replica its
own machine, so ``per_replica_*`` divides the CPU time by n to estimate what one replica sustains.
Results go to bench/results/replica.json.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.results_io import write_result
from protocol.codec import CodecError, encode
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.events import (
    Broadcast,
    Committed,
    Event,
    Executed,
    Receive,
    Send,
    SetTimer,
    Start,
    Submit,
    TimerFired,
    TimerKind,
)
from protocol.consensus.replica import Replica
from protocol.crypto import Identity, h256
from protocol.transactions import CommitmentEntry, RecordCommitment, Transaction, decode_tx

CHAIN = "creditnet-bench"


def _tx_check(data: bytes, _hash: bytes) -> bool:
    try:
        return decode_tx(data).verify(CHAIN)
    except CodecError:
        return False


def _txs_check(txs: Sequence[bytes], hashes: Sequence[bytes]) -> bool:
    return all(map(_tx_check, txs, hashes))


class Cluster:
    """n replicas wired by a FIFO queue; the driver executes blocks with a hash-chain app."""

    def __init__(
        self,
        n: int,
        *,
        batch: int,
        txs_check: Callable[[Sequence[bytes], Sequence[bytes]], bool] | None,
    ) -> None:
        ids = [Identity(bytes([i + 1]) * 32) for i in range(n)]
        keys = tuple(i.public_key for i in ids)
        self.replicas = [
            Replica(
                ReplicaConfig(
                    CHAIN,
                    keys,
                    i,
                    h256(b"bench-genesis"),
                    0,
                    window=8,
                    max_batch_txs=batch,
                    batch_wait_ms=1,
                    empty_block_interval_ms=1,
                    checkpoint_interval=50,
                    view_timeout_ms=60_000,
                ),
                ids[i],
                txs_check=txs_check,
            )
            for i in range(n)
        ]
        self.queue: deque[tuple[int, Event]] = deque()
        self.timers: dict[tuple[int, TimerKind], int] = {}
        self.app = [h256(b"app")] * n
        self.heights = [0] * n
        self.txs = [0] * n
        self.now = 0
        for i in range(n):
            self.queue.append((i, Start(0)))

    def run_until(self, done: Callable[[], bool], deadline: float) -> None:
        n = len(self.replicas)
        while not done() and time.perf_counter() < deadline:
            if not self.queue:
                self._fire_next_timer()
                continue
            node, ev = self.queue.popleft()
            for out in self.replicas[node].handle(ev):
                if isinstance(out, Broadcast):
                    for j in range(n):
                        if j != node:
                            self.queue.append((j, Receive(self.now, node, out.data)))
                elif isinstance(out, Send):
                    self.queue.append((out.to, Receive(self.now, node, out.data)))
                elif isinstance(out, SetTimer):
                    self.timers[(node, out.timer)] = out.at_ms
                elif isinstance(out, Committed):
                    self.app[node] = h256(self.app[node] + out.block.hash)
                    self.heights[node] = out.block.height
                    self.txs[node] += len(out.block.txs)
                    self.queue.append((node, Executed(self.now, out.block.height, self.app[node])))

    def _fire_next_timer(self) -> None:
        if not self.timers:
            raise RuntimeError("cluster idle with no timers")
        (node, kind), at = min(self.timers.items(), key=lambda kv: (kv[1], kv[0][0]))
        del self.timers[(node, kind)]
        self.now = max(self.now, at)
        self.queue.append((node, TimerFired(self.now, kind)))


def measure_empty(n: int, seconds: float) -> float:
    cluster = Cluster(n, batch=500, txs_check=None)
    start = time.perf_counter()
    cluster.run_until(lambda: False, start + seconds)
    return min(cluster.heights) / (time.perf_counter() - start)


def make_txs(count: int) -> list[bytes]:
    agency = Identity(b"\x42" * 32)
    entries = [CommitmentEntry(h256(b"%d" % i), h256(b"d")) for i in range(count)]
    bodies = [RecordCommitment((e,)) for e in entries]
    return [encode(Transaction.sign(agency, CHAIN, body, i)) for i, body in enumerate(bodies)]


def measure_txs(
    n: int,
    txs: list[bytes],
    txs_check: Callable[[Sequence[bytes], Sequence[bytes]], bool] | None,
    seconds: float,
) -> float:
    cluster = Cluster(n, batch=500, txs_check=txs_check)
    for i in range(n):
        cluster.queue.append((i, Submit(0, tuple(txs))))
    start = time.perf_counter()
    cluster.run_until(lambda: min(cluster.txs) >= len(txs), start + seconds)
    return min(cluster.txs) / (time.perf_counter() - start)


def run(sizes: list[int], seconds: float, tx_count: int) -> dict[str, Any]:
    txs = make_txs(tx_count)
    out: dict[str, Any] = {"batch": 500, "txs": tx_count}
    for n in sizes:
        empty = measure_empty(n, seconds)
        plain = measure_txs(n, txs, None, seconds * 4)
        checked = measure_txs(n, txs, _txs_check, seconds * 8)
        out[f"n{n}"] = {
            "empty_instances_per_s": round(empty, 1),
            "tx_per_s_checks_excluded": round(plain, 1),
            "tx_per_s_checks_included": round(checked, 1),
            "per_replica_empty_instances_per_s": round(empty * n, 1),
            "per_replica_tx_per_s_checks_excluded": round(plain * n, 1),
            "per_replica_tx_per_s_checks_included": round(checked * n, 1),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="4,7", help="cluster sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--txs", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    figures = run([int(x) for x in args.nodes.split(",")], args.seconds, args.txs)
    path = write_result("replica", figures, args.out)
    print(json.dumps({"results": str(path), **figures}, indent=2))


if __name__ == "__main__":
    main()
