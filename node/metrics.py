"""The node's Prometheus metrics: one :class:`NodeMetrics` per node, on its own registry.

No module-global collectors: a node builds its ``NodeMetrics`` and passes it to the parts that
count things (network, driver, mempool, API), so two nodes in one process (tests) never mix their
figures. ``serve_metrics`` exposes the registry on the metrics port in Prometheus's text format.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from node.tasks import TaskStatus

log = logging.getLogger("creditnet.metrics")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
GC_PAUSE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
INTERVAL_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class NodeMetrics:
    """Every metric a node exports, registered on ``self.registry``."""

    def __init__(self, *, process: bool = True) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
        p = "creditnet_"
        self.height = Gauge(
            p + "consensus_height", "Height of the last committed block.", registry=r
        )
        self.executed_height = Gauge(
            p + "consensus_executed_height",
            "Height of the last executed and stored block.",
            registry=r,
        )
        self.view = Gauge(p + "consensus_view", "Current PBFT view.", registry=r)
        self.is_primary = Gauge(
            p + "consensus_is_primary", "1 if this node leads the view.", registry=r
        )
        self.validators = Gauge(p + "consensus_validators", "Validators in the set.", registry=r)
        self.view_changes = Counter(
            p + "consensus_view_changes", "Views entered after the first.", registry=r
        )
        self.block_interval = Histogram(
            p + "consensus_block_interval_seconds",
            "Time between consecutive commits.",
            buckets=INTERVAL_BUCKETS,
            registry=r,
        )
        self.commit_latency = Histogram(
            p + "consensus_commit_latency_seconds",
            "Time from a transaction's admission at this node to its commit.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.block_txs = Histogram(
            p + "consensus_block_txs",
            "Transactions per committed block.",
            buckets=(0, 1, 10, 50, 100, 250, 500, 1000, 2000),
            registry=r,
        )
        self.txs_committed = Counter(
            p + "consensus_txs_committed", "Transactions committed (executed).", registry=r
        )
        self.txs_failed = Counter(
            p + "consensus_txs_failed",
            "Committed transactions that failed a ledger rule.",
            ["code"],
            registry=r,
        )
        self.mempool_size = Gauge(p + "consensus_mempool_size", "Transactions pending.", registry=r)
        self.mempool_bytes = Gauge(
            p + "consensus_mempool_bytes", "Bytes of pending transactions.", registry=r
        )
        self.mempool_capacity = Gauge(
            p + "consensus_mempool_capacity", "Most transactions the mempool keeps.", registry=r
        )
        self.mempool_refused = Counter(
            p + "mempool_refused", "Transactions refused at admission.", ["reason"], registry=r
        )
        self.peers = Gauge(p + "consensus_peers", "Validators connected to this node.", registry=r)
        self.p2p_messages = Counter(
            p + "consensus_p2p_messages",
            "Peer messages by direction and kind.",
            ["direction", "kind"],
            registry=r,
        )
        self.p2p_bad_messages = Counter(
            p + "consensus_p2p_bad_messages",
            "Peer input refused, by reason.",
            ["reason"],
            registry=r,
        )
        self.p2p_dropped = Counter(
            p + "p2p_dropped_frames",
            "Outbound consensus frames dropped (peer too far behind).",
            registry=r,
        )
        self.p2p_tx_batches_skipped = Counter(
            p + "p2p_tx_batches_skipped",
            "Transaction batches not queued for a peer holding too much unacknowledged data "
            "(down or slow; the mempool sends its pending transactions again).",
            registry=r,
        )
        self.sync_syncing = Gauge(
            p + "consensus_sync_syncing",
            "1 while the node is fetching blocks it lacks.",
            registry=r,
        )
        self.suspicions = Counter(
            p + "consensus_suspicions",
            "Peer misbehaviour seen by the replica, by kind.",
            ["kind"],
            registry=r,
        )
        self.api_requests = Counter(
            p + "api_requests",
            "HTTP API requests by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.event_loop_lag = Gauge(
            p + "event_loop_lag_seconds",
            "How late the node's event loop last woke a task (sampled every 20 ms).",
            registry=r,
        )
        self.api_input_holds = Counter(
            p + "api_input_holds",
            "Times the API stopped reading new requests because the event loop lagged more "
            "than api.hold_input_lag_ms.",
            registry=r,
        )
        self.api_connections = Gauge(
            p + "api_connections",
            "Client connections the API serves now (at most api.max_connections).",
            registry=r,
        )
        self.api_connections_refused = Counter(
            p + "api_connections_refused",
            "Client connections refused because api.max_connections were open: answered 503 "
            "busy and closed (or closed unanswered while 64 such answers were under way).",
            registry=r,
        )
        self.queries_in_flight = Gauge(
            p + "api_queries_in_flight",
            "Lender queries being answered (POST /v1/queries); at queries.max_in_flight more "
            "are refused with 503.",
            registry=r,
        )
        self.store_commit_seconds = Histogram(
            p + "storage_commit_seconds",
            "Time to execute and store one block (synced).",
            buckets=INTERVAL_BUCKETS,
            registry=r,
        )
        self.block_stage = Histogram(
            p + "consensus_block_stage_seconds",
            "Where a block's time goes at this node, by stage: precheck (verifying the "
            "transactions of a proposal not seen before, replicas only), commit (from the "
            "proposal's block time to this node's commit), execute (the ledger rules), store "
            "(the synced write).",
            ["stage"],
            buckets=INTERVAL_BUCKETS,
            registry=r,
        )
        self.query_stage = Histogram(
            p + "query_stage_seconds",
            "Where a lender's query (POST /v1/queries) spends its time at the answering agency, "
            "by stage: check (request, consent, balance, own records), lookup (mode 2: the "
            "other agencies' records), ledger (the query entry submitted, committed, stored), "
            "release (the report built and sealed).",
            ["stage"],
            buckets=INTERVAL_BUCKETS,
            registry=r,
        )
        self.block_stages = {
            s: self.block_stage.labels(s) for s in ("precheck", "commit", "execute", "store")
        }
        self.query_stages = {
            s: self.query_stage.labels(s) for s in ("check", "lookup", "ledger", "release")
        }
        """Each stage's histogram, made once: exported from the start, no label lookup per
        observation on the hot paths."""
        self.consensus_log_bytes = Gauge(
            p + "storage_consensus_log_bytes",
            "Size of the consensus write-ahead log file (rewritten with its live records once "
            "past 32 MiB).",
            registry=r,
        )
        self.block_files_bytes = Gauge(
            p + "storage_block_files_bytes",
            "Size of the committed blocks' files (data/blocks/*.blk; append-only, a new file "
            "every 256 MiB).",
            registry=r,
        )
        self.worker_cpu = Counter(
            p + "worker_cpu_seconds",
            "CPU time spent in worker threads, by task (verify, execute, store, journal).",
            ["task"],
            registry=r,
        )
        self.verified = Counter(
            p + "mempool_verified",
            "Transactions whose signatures this node verified.",
            registry=r,
        )
        self.gc_pause = Histogram(
            p + "gc_pause_seconds",
            "Garbage collections of the node process and how long each stopped every thread, "
            "by generation (2 = full collection).",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=r,
        )
        _zero_labels(self)

    def watch_gc(self) -> Callable[[], None]:
        """Time every garbage collection of this process into ``gc_pause``; returns the undo.

        A collection holds the GIL throughout, so its length is a pause of consensus, the API and
        the worker threads alike -- the kind of stall that shows up only in a latency tail, and
        only in a long run, as the heap grows. Python's hook costs two calls per collection.
        """
        started = [0.0]
        children = [self.gc_pause.labels(str(g)) for g in range(3)]

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                children[info["generation"]].observe(time.perf_counter() - started[0])

        gc.callbacks.append(on_gc)
        return lambda: gc.callbacks.remove(on_gc)


BAD_MESSAGE_REASONS = (
    "unknown_peer",
    "malformed",
    "oversized",
    "rate_limited",
    "bad_ack",
    "inbox_full",
    "replica_error",
)
SUSPICION_KINDS = (
    "bad-block",
    "bad-certificate",
    "bad-new-view",
    "bad-signature",
    "bad-view-change",
    "conflicting-votes",
    "equivocation",
    "impersonation",
    "malformed",
    "not-backup",
    "not-primary",
    "state-divergence",
    "tampered-record",
    "unexpected",
)


def _zero_labels(metrics: NodeMetrics) -> None:
    """Export every known label at 0, so a dashboard's rate() has a series from the start."""
    for reason in BAD_MESSAGE_REASONS:
        metrics.p2p_bad_messages.labels(reason)
    for kind in SUSPICION_KINDS:
        metrics.suspicions.labels(kind)
    for generation in range(3):
        metrics.gc_pause.labels(str(generation))
    for direction in ("in", "out"):
        metrics.p2p_messages.labels(direction, "consensus")
        metrics.p2p_messages.labels(direction, "tx_batch")


def exposition(metrics: NodeMetrics) -> bytes:
    """The registry in Prometheus's text exposition format."""
    return generate_latest(metrics.registry)


METRICS_MAX_CONNECTIONS = 32
"""Scrape connections served at once (within the open-file reserve of ``node.open_files``)."""


async def serve_metrics(
    metrics: NodeMetrics,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``GET /metrics`` on ``host:port`` until cancelled; reports the bound port.

    A minimal HTTP/1.1 responder on trio sockets: one request per connection, any path other than
    /metrics is 404, a client that sends nothing in 10 s is dropped, and beyond
    METRICS_MAX_CONNECTIONS at once a connection is closed unanswered (a scraper needs one; the
    file descriptors are the node's). Errors of one connection are logged and never stop the
    server.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    task_status.started(bound)
    open_now = 0

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal open_now
        if open_now >= METRICS_MAX_CONNECTIONS:
            await trio.aclose_forcefully(stream)
            return
        open_now += 1
        try:
            with trio.move_on_after(10):
                data = b""
                while b"\r\n\r\n" not in data and len(data) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    data += chunk
                line = data.split(b"\r\n", 1)[0].split()
                if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                    body, status, ctype = exposition(metrics), b"200 OK", CONTENT_TYPE_LATEST
                else:
                    body, status, ctype = (
                        b"not found: try /metrics\n",
                        b"404 Not Found",
                        "text/plain",
                    )
                head = (
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Type: "
                    + ctype.encode()
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                )
                await stream.send_all(head + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("metrics connection failed: %s", exc)
        except Exception:  # a bug (a gauge's function raising) must not stop the listener
            log.exception("serving /metrics failed")
        finally:
            open_now -= 1
            await stream.aclose()

    await trio.serve_listeners(handle, listeners)
