"""What the load generator sends, and how: streams of requests and the two ways to drive them.

A *stream* is one kind of request -- ``commit`` (batches of record-commitment transactions),
``query1`` or ``query2`` (signed lender queries answered in mode 1 or 2) -- with its own
:class:`~bench.load.Tally`. The ``mixed`` workload runs the three at once, sharing the offered
load by :data:`DEFAULT_MIX` (or ``--mix``): record furnishing dominates an agency's traffic,
with a smaller share of lender queries, some of which must be forwarded.

* **Open loop** (``--rate R``): each stream sends on its own fixed schedule (its share of ``R``
  in transactions or queries per second) whatever the answers do; everything is signed before
  the timed phase, so signing costs nothing during it.
* **Closed loop** (``--concurrency C``): ``C`` workers each send one request and wait for its
  answer before sending the next, for ``--duration`` seconds; the mixed workload picks the
  stream of each next request by a smooth weighted round robin over the mix. Requests are
  signed just before they are sent (the count is not known ahead), outside their timing.

A committed item's latency is send to answer; ``done`` times give throughput over time.
:func:`samples_doc` turns the tallies into the per-item samples file the benchmark runner plots.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from bench.load import (
    END_MARK,
    START_MARK,
    Batch,
    HttpPool,
    Tally,
    Target,
    commit_batch,
    commit_batches,
    percentiles_ms,
    post_batch,
)
from bench.query_load import (
    QueryPlan,
    SignedQuery,
    nonce_base,
    post_query,
    sign_queries,
    sign_query,
)

KINDS = ("commit", "query1", "query2")
FAILURE_BACKOFF_S = 0.1
"""Closed loop: a worker whose request failed waits this long before its next one."""
DEFAULT_MIX = {"commit": 0.80, "query1": 0.15, "query2": 0.05}
"""Shares of the mixed workload's offered load (commit in tx/s, queries in queries/s)."""


def parse_mix(text: str) -> dict[str, float]:
    """``"commit=0.8,query1=0.15,query2=0.05"`` -> shares summing to 1; ValueError otherwise."""
    out: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in KINDS or name in out:
            raise ValueError(f"--mix {text!r}: expected kind=share items, kinds {', '.join(KINDS)}")
        try:
            share = float(value)
        except ValueError:
            raise ValueError(f"--mix {text!r}: {value!r} is not a number") from None
        if not (share >= 0 and math.isfinite(share)):
            raise ValueError(f"--mix {text!r}: shares must be >= 0")
        out[name] = share
    total = sum(out.values())
    if total <= 0:
        raise ValueError(f"--mix {text!r}: the shares add up to 0")
    return {k: v / total for k, v in out.items() if v > 0}


class Stream(Protocol):
    """One kind of request: how to make request ``k`` and how to send it."""

    kind: str
    tally: Tally

    @property
    def request_items(self) -> int:
        """Items one request carries (a commit batch's size; 1 for a query)."""

    def request(self, k: int) -> Any | None:
        """Request ``k`` (None past the last one of a pre-signed stream)."""

    def units(self, req: Any) -> int:
        """Items (transactions or queries) the request carries."""

    async def send(self, pool: HttpPool, req: Any, k: int, timeout: float) -> None:
        """Post it and count the answer in ``tally``; never raises for HTTP trouble."""


@dataclass
class CommitStream:
    """Batches of record-commitment transactions, round robin over the targets."""

    targets: Sequence[Target]
    batch: int
    seed: bytes = field(default_factory=lambda: os.urandom(16))
    presigned: list[Batch] | None = None
    kind: str = "commit"
    tally: Tally = field(default_factory=Tally)

    @property
    def request_items(self) -> int:
        return self.batch

    complete: bool = True
    """Whether the pre-signed batches are all there is (open loop: the exact schedule); a
    closed loop that outruns its pre-signed ones signs the next ones as it sends them."""

    def presign(self, total: int, *, complete: bool = True) -> None:
        self.presigned = commit_batches(self.targets, total, self.batch, self.seed)
        self.complete = complete

    def request(self, k: int) -> Batch | None:
        if self.presigned is not None and (k < len(self.presigned) or self.complete):
            return self.presigned[k] if k < len(self.presigned) else None
        return commit_batch(self.targets, k, k * self.batch, self.batch, self.seed)

    def units(self, req: Batch) -> int:
        return req.count

    async def send(self, pool: HttpPool, req: Batch, k: int, timeout: float) -> None:
        await post_batch(pool, self.targets[req.target], req, self.tally, timeout)


@dataclass
class QueryStream:
    """Signed lender queries of one mode (the plan's), round robin over the targets."""

    kind: str
    plan: QueryPlan
    chain_id: str
    presigned: list[SignedQuery] | None = None
    tally: Tally = field(default_factory=Tally)
    _nonce_base: int = field(default_factory=nonce_base)

    @property
    def request_items(self) -> int:
        return 1

    def presign(self, total: int) -> None:
        self.presigned = sign_queries(self.plan, self.chain_id, total)

    def request(self, k: int) -> SignedQuery | None:
        if self.presigned is not None:
            return self.presigned[k] if k < len(self.presigned) else None
        now_ms = time.time_ns() // 1_000_000
        return sign_query(self.plan, self.chain_id, k, self._nonce_base, now_ms)

    def units(self, req: SignedQuery) -> int:
        return 1

    async def send(self, pool: HttpPool, req: SignedQuery, k: int, timeout: float) -> None:
        await post_query(pool, self.plan, req, k, self.tally, timeout)


# --- drivers ------------------------------------------------------------------------------------


async def _schedule(
    nursery: trio.Nursery,
    pool: HttpPool,
    stream: Stream,
    rate: float,
    start: float,
    timeout: float,
) -> None:
    """Launch the stream's requests at ``rate`` items/s from ``start`` (request k is due once
    the items before it are due)."""
    k, due_units = 0, 0
    while (req := stream.request(k)) is not None:
        due = start + due_units / rate
        await trio.sleep_until(due)
        stream.tally.max_lag = max(stream.tally.max_lag, trio.current_time() - due)
        nursery.start_soon(stream.send, pool, req, k, timeout)
        due_units += stream.units(req)
        k += 1


async def open_loop(
    streams: Sequence[tuple[Stream, float]], *, timeout: float, announce: bool = False
) -> float:
    """Send every pre-signed request of each (stream, rate) on its schedule, then wait for
    every answer (or timeout); returns the start time (trio clock)."""
    pool = HttpPool()
    try:
        if announce:
            print(START_MARK, file=sys.stderr, flush=True)
        start = trio.current_time()
        for stream, _rate in streams:
            stream.tally.start_unix = time.time()
        async with trio.open_nursery() as nursery:
            for stream, rate in streams:
                nursery.start_soon(_schedule, nursery, pool, stream, rate, start, timeout)
        if announce:
            print(END_MARK, file=sys.stderr, flush=True)
    finally:
        await pool.aclose()
    return start


def weighted_order(weights: Sequence[float], count: int) -> list[int]:
    """The first ``count`` picks of a smooth weighted round robin (nginx's): each index in
    proportion to its weight, spread evenly, deterministic."""
    current = [0.0] * len(weights)
    total = sum(weights)
    out = []
    for _ in range(count):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(weights)), key=lambda i: current[i])
        current[best] -= total
        out.append(best)
    return out


async def closed_loop(
    streams: Sequence[tuple[Stream, float]],
    concurrency: int,
    duration: float,
    *,
    timeout: float,
    announce: bool = False,
) -> float:
    """``concurrency`` workers, each sending one request at a time until ``duration`` has
    passed; the stream of each next request follows the weights (shares of items: a stream's
    weight is divided by the items one of its requests carries). Returns the start time."""
    weights = [w / max(1, s.request_items) for s, w in streams]
    cycle = weighted_order(weights, 1000)
    picks = 0
    counters = [0] * len(streams)
    pool = HttpPool()

    async def worker(deadline: float) -> None:
        nonlocal picks
        while trio.current_time() < deadline:
            which = cycle[picks % len(cycle)]
            picks += 1
            stream = streams[which][0]
            k = counters[which]
            counters[which] += 1
            req = stream.request(k)
            if req is None:
                return
            failed = stream.tally.failed
            await stream.send(pool, req, k, timeout)
            if stream.tally.failed > failed:
                await trio.sleep(FAILURE_BACKOFF_S)  # refused (429/503): don't hammer the node

    try:
        if announce:
            print(START_MARK, file=sys.stderr, flush=True)
        start = trio.current_time()
        for stream, _share in streams:
            stream.tally.start_unix = time.time()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker, start + duration)
        if announce:
            print(END_MARK, file=sys.stderr, flush=True)
    finally:
        await pool.aclose()
    return start


# --- reporting ----------------------------------------------------------------------------------


def combined_report(workload: str, streams: Sequence[Stream]) -> dict[str, Any]:
    """The load generator's JSON object. One stream: its tally's report. Several (``mixed``):
    totals over all items, latency over all items, and each kind's own report in ``by_kind``."""
    if len(streams) == 1 and workload != "mixed":
        return streams[0].tally.report(workload)
    merged = Tally()
    for s in streams:
        t = s.tally
        merged.sent += t.sent
        merged.committed += t.committed
        merged.failed += t.failed
        merged.latencies += t.latencies
        if t.first_send is not None:
            merged.first_send = (
                t.first_send if merged.first_send is None else min(merged.first_send, t.first_send)
            )
        if t.last_answer is not None:
            merged.last_answer = (
                t.last_answer
                if merged.last_answer is None
                else max(merged.last_answer, t.last_answer)
            )
    report = merged.report(workload)
    report["by_kind"] = {s.kind: s.tally.report(s.kind) for s in streams}
    return report


def combined_details(streams: Sequence[Stream]) -> dict[str, Any]:
    """Failures by reason, schedule lag and wall time, per kind of item."""
    return {s.kind: s.tally.details() for s in streams}


def samples_doc(streams: Sequence[Stream], start: float) -> dict[str, Any]:
    """Per kind, each committed item's answer time (s after the start) and latency (ms),
    for throughput-over-time and latency-CDF plots."""
    out: dict[str, Any] = {}
    for s in streams:
        t = s.tally
        out[s.kind] = {
            "done_s": [round(d - start, 3) for d in t.done],
            "latency_ms": [round(x * 1000, 1) for x in t.latencies],
            "failed": t.failed,
            "start_unix_s": t.start_unix,
            "latency_summary_ms": percentiles_ms(t.latencies),
        }
    return out
