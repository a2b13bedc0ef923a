"""The multi-node benchmark runner: real node processes, a separate load generator, reports.

    python -m bench.run [--nodes 4[,7,10,16]] [--workload tx|query1|query2|mixed]
        [--duration 30] [--rate R | --concurrency C] [--batch 100] [--mix commit=0.8,...]
        [--latency-ms L] [--jitter-ms J] [--loss P] [--wan-seed S]
        [--name NAME] [--out-dir bench/results] [--base-port 27400] [--keep] [--no-plots]

For each cluster size in ``--nodes``, in turn: a fresh ``creditnet testnet`` in a temporary
directory, one ``creditnet run`` process per node (``python -m node run``), a wait until every
node sees all its peers and commits (one transaction through each node, outside the
measurement), then ``python -m bench.load`` as a separate process with the workload:

* ``tx``: record-commitment transactions in batches of ``--batch``, each waited on until
  committed (the load generator's ``commit`` workload);
* ``query1`` / ``query2``: signed lender queries answered in mode 1 / mode 2 (setup of subjects,
  records, lenders and consents first, not measured);
* ``mixed``: the three at once, the offered load shared by ``--mix`` (default 80 % transactions,
  15 % mode-1 and 5 % mode-2 queries).

``--rate R`` is an open loop (items offered per second on a fixed schedule, whatever the answers
do); ``--concurrency C`` a closed loop (C requests in flight, the next sent when one is answered:
it finds the throughput the cluster sustains). Default: ``tx`` closed loop with 8 batches in
flight; ``query1`` 40/s, ``query2`` 20/s, ``mixed`` 150/s open loop (rates this 2-core
machine sustains with all nodes on it).

While the load runs, a progress bar shows the elapsed time, the committed items and each node's
height; every second the runner samples each process's CPU and RSS from ``/proc`` and each
node's ``/v1/status`` (height, view, mempool). Each node's ``/metrics`` is read before and
after the timed phase. Afterwards the runner checks that the nodes hold one chain, stops every
process (SIGTERM, SIGKILL after 10 s -- also on Ctrl-C or an error) and goes to the next size.

**WAN emulation.** Kernel netem is not available here, so with ``--latency-ms``, ``--jitter-ms``
or ``--loss`` every node dials every peer through :mod:`bench.wan`, a delaying TCP proxy (a
separate process, one listener per directed link): each direction of each link is delayed by
the latency +- jitter, and a "lost" chunk arrives one retransmission timeout late, as TCP would
deliver it. The results say which network was used.

**Results** (``--name``, default ``run-<workload>-n<sizes>[-wan<L>ms]``), in ``bench/results/``:

* ``<name>.json`` -- see :data:`RESULTS_FORMAT` (also in the README);
* ``<name>.md`` -- a Markdown summary;
* ``<name>-throughput.png``, ``-latency-cdf.png``, ``-height.png``, ``-resources.png``.

Exit status: 0 when every size ran and its nodes agree on one chain, 1 otherwise (the temporary
directory is then kept and its path printed), 2 for bad arguments, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report
from bench.cluster import (
    STEAL_SECOND_PCT,
    ClusterError,
    LoadRun,
    NodeProc,
    Sampler,
    check_ports_free,
    crash_reason,
    get_text,
    git_revision,
    log_tail,
    metrics_summary,
    node_ports,
    one_chain,
    parse_metrics,
    settle,
    signals_as_interrupt,
    stage_means,
    start_node,
    stop_processes,
    wait_ready,
    warm_up,
)
from bench.load import MAX_QUERY_DURATION_S, LoadError, percentiles_ms
from bench.results_io import RESULTS_DIR, nearest_rank, p99_summary, write_result
from bench.storage_events import latency_by_storage, read_spans
from bench.wan import WanParams
from bench.workloads import DEFAULT_MIX, parse_mix
from node.testnet import TestnetError, create_testnet

WORKLOADS = {"tx": "commit", "query1": "query1", "query2": "query2", "mixed": "mixed"}
"""Runner workload -> the load generator's workload."""
DEFAULT_RATES = {"query1": 40.0, "query2": 20.0, "mixed": 150.0}
DEFAULT_CONCURRENCY = 8
"""``tx`` without --rate/--concurrency: batches in flight (closed loop)."""
DEFAULT_DURATION = 30.0
DEFAULT_BATCH = 100
DEFAULT_BASE_PORT = 27400
PROXY_PORT_OFFSET = 2000
"""WAN proxy listeners: base port + this + i*N + j for the link node i -> node j."""
TARGETS: dict[str, tuple[float | None, float]] = {
    "commit": (3000.0, 1000.0),
    "query1": (500.0, 250.0),
    "query2": (None, 500.0),
}
"""Per kind of item (issues 4 and 5): (committed per second at least, or None; p99 ms at most)."""
CDF_POINTS = [*range(0, 100), 99.5, 99.9, 100]
PACKAGES = (
    "creditnet",
    "libp2p",
    "trio",
    "msgpack",
    "pynacl",
    "plyvel",
    "prometheus-client",
    "fastapi",
    "h11",
)
RESULTS_FORMAT = """\
{"benchmark": NAME, "time": UTC, "machine": {"cpu_model", "cpus", "memory_gb", "python",
 "platform", "ed25519_verify_us" (the machine's speed when the file was written), ...},
 "figures": {
   "parameters": {"workload", "load_workload", "sizes", "duration_s", "rate" | null,
                  "concurrency" | null, "batch", "mix" | null,
                  "network": {"kind": "loopback" | "delaying TCP proxy (bench.wan)",
                              "latency_ms", "jitter_ms", "loss", "seed"},
                  "base_port", "sync_writes", "profiled"},
   "versions": {package: version, ..., "git_commit", "uncommitted_changes"},
   "runs": [{                       one per cluster size, in order
     "nodes": N, "ok": bool, "error": str | null,
     "per_s": items committed per second (all kinds), "sent", "committed", "failed",
     "latency_ms": {"p50", "p90", "p99", "max"},
     "by_kind": {kind: {"sent", "committed", "failed", "per_s", "latency_ms": {...},
                        "failures": {reason: count}, "cdf_ms": [ms at CDF_POINTS],
                        "per_second": [items committed in each second from the first send
                                       to the last answer],
                        "target": {"per_s", "p99_ms", "met"}}},
     "target": {kind: {"per_s", "p99_ms", "met"}},  (the issues' targets, for a fixed
                              offered load "met" can only be as high as that load)
     "load_details": {kind: {"failures", "max_lag_ms", "wall_s"}},
     "measured_window_s", "consistent", "one_chain", "nodes_exited": [i],
     "per_node": {"node<i>": {"cpu_pct": {"mean", "max"}, "main_thread_cpu_pct": {...},
               "rss_mb": {"mean", "max"}, "height", "app_hash", "view", "mempool_max",
               "exited_early", "exit_reason", "metrics": {...}, "metrics_delta": {...}}},
     "load_generator": {"cpu_pct", "rss_mb"}, "wan_proxy": {...} | null,
     "ed25519_verify_us": {"min", "p50", "max", "probes"} (the machine's speed during the run),
     "host_cpu": {"steal_pct", "idle_pct" (of the whole machine over the window),
                  "steal_max_pct" (worst second), "seconds_steal_over" (seconds with steal
                  >= 10 %), "steal_per_s": [[s after the start, steal %], ...]},
     "latency_by_steal": {kind: {"steal": {"items", "p99_ms"}, "other": {...}}} (items whose
                  send-to-answer span touched a second with steal >= 10 %, and the rest),
     "latency_by_storage": {kind: {"storage": {"items", "p99_ms"}, "other": {...},
                  "spans": [[s after the start, duration s, node, "flush" | "compaction"]]}}
                  (items whose span overlapped a LevelDB flush or compaction of any node, from
                  each node's LevelDB LOG, and the rest),
     "timeline": [{"t": s, "height": [per node], "mempool": [...], "view": [...]}]}]}}
A size that failed has only "nodes", "ok": false, "error", "per_s": null, "latency_ms",
"by_kind": {}, "target": {}, "nodes_exited", "timeline". For "mixed", "per_s", "sent" and
"latency_ms" at the top of a run add up every kind (transactions and queries); compare kinds
in "by_kind". (100 % CPU is one core; CDF_POINTS = 0..99, 99.5, 99.9, 100 percent.)"""


@dataclass(frozen=True)
class Params:
    workload: str
    sizes: tuple[int, ...]
    duration: float
    rate: float | None
    concurrency: int | None
    batch: int
    mix: dict[str, float] | None
    network: WanParams
    base_port: int
    subjects: int = 50
    profile: bool = False

    @property
    def load_workload(self) -> str:
        return WORKLOADS[self.workload]

    def load_args(self, samples: Path) -> list[str]:
        args = ["--workload", self.load_workload, "--duration", f"{self.duration:g}"]
        if self.rate is not None:
            args += ["--rate", f"{self.rate:g}"]
        else:
            assert self.concurrency is not None
            args += ["--concurrency", str(self.concurrency)]
        args += ["--batch", str(self.batch), "--samples", str(samples)]
        if self.mix is not None and self.load_workload == "mixed":
            args += ["--mix", ",".join(f"{k}={v:g}" for k, v in self.mix.items())]
        if self.load_workload != "commit":
            args += ["--subjects", str(self.subjects)]
        return args

    def describe(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "load_workload": self.load_workload,
            "sizes": list(self.sizes),
            "duration_s": self.duration,
            "rate": self.rate,
            "concurrency": self.concurrency,
            "batch": self.batch,
            "mix": self.mix if self.load_workload == "mixed" else None,
            "network": self.network.describe(),
            "base_port": self.base_port,
            "sync_writes": True,
            "profiled": self.profile,
        }


def versions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    rev = git_revision()
    out["git_commit"] = rev["commit"]
    out["uncommitted_changes"] = rev["uncommitted_changes"]
    return out


# --- WAN emulation ------------------------------------------------------------------------------


def route_through_proxy(testnet: Path, nodes: int, base_port: int) -> list[tuple[int, int]]:
    """Point every node's ``p2p.peers`` at its own proxy listener for each peer; returns the
    links as (listen port, target p2p port). Link i -> j listens on
    ``base + PROXY_PORT_OFFSET + i*N + j``."""
    links = []
    for i in range(nodes):
        path = testnet / f"node{i}" / "config.toml"
        text = path.read_text(encoding="utf-8")
        peers = tomllib.loads(text)["p2p"]["peers"]
        for addr in peers:
            parts = addr.split("/")  # ["", "ip4", host, "tcp", port, "p2p", id]
            port = int(parts[4])
            j = (port - base_port) // 10
            listen = base_port + PROXY_PORT_OFFSET + i * nodes + j
            parts[4] = str(listen)
            new = "/".join(parts)
            if f'"{addr}"' not in text:
                raise ClusterError(f"{path}: peer {addr} not found as written")
            text = text.replace(f'"{addr}"', f'"{new}"')
            links.append((listen, port))
        path.write_text(text, encoding="utf-8")
    return links


class WanProxy:
    """``python -m bench.wan`` for the cluster's links, as a separate process."""

    def __init__(self, links: Sequence[tuple[int, int]], net: WanParams, log: Path) -> None:
        cmd = [sys.executable, "-m", "bench.wan"]
        for listen, port in links:
            cmd += ["--link", f"{listen}=127.0.0.1:{port}"]
        cmd += [
            "--latency-ms",
            f"{net.latency_ms:g}",
            "--jitter-ms",
            f"{net.jitter_ms:g}",
            "--loss",
            f"{net.loss:g}",
            "--seed",
            str(net.seed),
        ]
        self.log = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        ready = threading.Event()
        ended = threading.Event()

        def read() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith("bench.wan: ready"):
                    ready.set()
            ended.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        try:
            deadline = time.monotonic() + 30
            while not ready.is_set():
                if ended.is_set() or time.monotonic() > deadline:
                    raise ClusterError(f"the WAN proxy did not start: {log_tail(log)}")
                ready.wait(0.1)
        except BaseException:
            stop_processes([self.proc], grace=2.0)
            self.log.close()
            raise

    def stats(self) -> dict[str, Any] | None:
        """The proxy's JSON stats line (after it stopped), if it printed one."""
        self._reader.join(5)
        self.log.close()
        for line in reversed(self.lines):
            with contextlib.suppress(ValueError):
                doc = json.loads(line)
                if isinstance(doc, dict):
                    return doc
        return None


# --- one cluster size ---------------------------------------------------------------------------


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored (while stopping processes: the stop is bounded)."""
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, else every 10 s)."""

    def __init__(self, label: str, duration: float) -> None:
        self.label = label
        self.duration = duration
        self.tty = sys.stderr.isatty()
        self._last_line = 0.0
        self._open = False

    def show(self, elapsed: float | None, heights: Sequence[int | None]) -> None:
        now = time.monotonic()
        if not self.tty and now - self._last_line < 10:
            return
        self._last_line = now
        shown = " ".join("-" if h is None else str(h) for h in heights)
        if elapsed is None:
            text = f"{self.label} setting up ... heights {shown}"
        else:
            frac = min(1.0, elapsed / self.duration)
            bar = "#" * round(30 * frac) + "." * (30 - round(30 * frac))
            text = (
                f"{self.label} [{bar}] {min(elapsed, self.duration):4.0f}/{self.duration:.0f} s"
                f"  heights {shown}"
            )
        if self.tty:
            sys.stderr.write("\r\x1b[K" + text[:200])
            self._open = True
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if self._open:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._open = False


def scrape(nodes: Sequence[NodeProc]) -> list[dict[str, float]]:
    out = []
    for n in nodes:
        try:
            out.append(parse_metrics(get_text(n.metrics + "/metrics")))
        except (OSError, ValueError):
            out.append({})
    return out


def metrics_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters' increase over the timed phase (the ones that explain the run), with the CPU
    time of the worker threads by task (signature checks, execution, storage) and the garbage
    collector's pauses by generation (count and total seconds)."""
    keys: tuple[str, ...] = (
        "creditnet_consensus_txs_committed_total",
        "creditnet_consensus_view_changes_total",
        "creditnet_consensus_block_txs_count",
        "creditnet_p2p_dropped_frames_total",
        "process_cpu_seconds_total",
    )
    keys += tuple(
        sorted(
            k
            for k in after
            if k.startswith(
                (
                    "creditnet_worker_cpu_seconds_total{",
                    "creditnet_gc_pause_seconds_count{",
                    "creditnet_gc_pause_seconds_sum{",
                )
            )
        )
    )
    return {
        k.removeprefix("creditnet_"): round(after.get(k, 0.0) - before.get(k, 0.0), 3) for k in keys
    }


def per_kind(
    samples: dict[str, Any],
    report_doc: dict[str, Any],
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Per kind of item: the load generator's figures and failures by reason, a latency CDF,
    and items committed in each second from the first send (to the last answer)."""
    reports = report_doc.get("by_kind") or {report_doc.get("workload", "?"): report_doc}
    out = {}
    for kind, rep in reports.items():
        s = samples.get(kind) or {}
        lat = sorted(s.get("latency_ms") or [])
        cdf = [nearest_rank(lat, q) for q in CDF_POINTS] if lat else []
        done = s.get("done_s") or []
        per_second = [0] * max(1, math.ceil(max(done, default=0.0)))
        for d in done:
            if d >= 0:
                per_second[min(int(d), len(per_second) - 1)] += 1
        want_per_s, want_p99 = TARGETS.get(kind, (None, math.inf))
        p99 = (rep.get("latency_ms") or {}).get("p99")
        out[kind] = {
            **{k: rep.get(k) for k in ("sent", "committed", "failed", "per_s", "latency_ms")},
            "failures": ((details or {}).get(kind) or {}).get("failures", {}),
            "cdf_ms": cdf,
            "per_second": per_second,
            "target": {
                "per_s": want_per_s,
                "p99_ms": want_p99,
                "met": (want_per_s is None or float(rep.get("per_s") or 0) >= want_per_s)
                and p99 is not None
                and p99 <= want_p99,
            },
        }
    return out


def latency_by_steal(
    samples: dict[str, Any], steal_per_s: Sequence[Sequence[float]]
) -> dict[str, Any]:
    """Per kind, the p99 latency of the items whose send-to-answer span touched a second in
    which the hypervisor stole >= STEAL_SECOND_PCT of the machine, and of the rest: tells a
    tail made by the host from one made by creditnet. (The headline figures keep every item.)"""
    stolen = [t for t, pct in steal_per_s if pct >= STEAL_SECOND_PCT]  # seconds (t - 1, t]
    out: dict[str, Any] = {}
    for kind, s in samples.items():
        hit: list[float] = []
        rest: list[float] = []
        done_at = s.get("done_s") or []
        for done, ms in zip(done_at, s.get("latency_ms") or [], strict=False):
            sent = done - ms / 1000
            touched = any(t - 1 < done and sent <= t for t in stolen)
            (hit if touched else rest).append(ms)
        out[kind] = {"steal": p99_summary(hit), "other": p99_summary(rest)}
    return out


def run_size(p: Params, n: int, workdir: Path) -> dict[str, Any]:
    """One cluster of ``n`` nodes under the load; its figures. Every process it starts is
    stopped before it returns or raises."""
    proxy_ports = (
        [p.base_port + PROXY_PORT_OFFSET + k for k in range(n * n)] if p.network.emulated else []
    )
    check_ports_free([*node_ports(p.base_port, n), *proxy_ports])
    testnet = workdir / f"n{n}" / "testnet"
    create_testnet(testnet, n, base_port=p.base_port)
    proxy: WanProxy | None = None
    nodes: list[NodeProc] = []
    load: LoadRun | None = None
    samples_path = testnet / "samples.json"
    label = f"bench.run: n={n} {p.workload}"
    progress = Progress(label, p.duration)
    final: list[Any] = []
    try:
        if p.network.emulated:
            links = route_through_proxy(testnet, n, p.base_port)
            proxy = WanProxy(links, p.network, testnet / "wan.log")
        for i in range(n):
            nodes.append(start_node(i, testnet / f"node{i}", p.base_port, profile=p.profile))
        print(f"{label}: {n} nodes starting in {testnet}", file=sys.stderr, flush=True)
        wait_ready(nodes, timeout=60.0 + 5.0 * n)
        warm_up(testnet, nodes, timeout=60.0)
        pids = {f"node{x.index}": x.proc.pid for x in nodes}
        if proxy is not None:
            pids["wan_proxy"] = proxy.proc.pid
        with Sampler(pids, nodes) as sampler:
            before: list[dict[str, float]] | None = None
            load = LoadRun.launch(testnet, p.load_args(samples_path))
            sampler.add("load", load.proc.pid)
            limit = p.duration + 300 + (0 if p.load_workload == "commit" else 300)
            deadline = time.monotonic() + limit
            while load.proc.poll() is None:
                if time.monotonic() > deadline:
                    raise ClusterError(f"the load generator did not finish within {limit:.0f} s")
                if load.start is not None and before is None:
                    before = scrape(nodes)
                last = sampler.status_log[-1][1] if sampler.status_log else []
                progress.show(
                    None if load.start is None else time.monotonic() - load.start,
                    [st["height"] if st else None for st in last],
                )
                time.sleep(0.5)
            report_doc = load.wait(30)
        start = load.start if load.start is not None else 0.0
        end = load.end if load.end is not None else time.monotonic()
        final = settle(nodes)
        same_chain = one_chain(nodes, final)
        after = scrape(nodes)
        died = {x.index: x.proc.returncode for x in nodes if x.proc.poll() is not None}
        for i, code in died.items():
            log = testnet / f"node{i}" / "node.log"
            print(
                f"{label}: node{i} EXITED (status {code}) before the end: "
                f"{crash_reason(log) or log_tail(log, 5)}",
                file=sys.stderr,
            )
    finally:
        progress.done()
        with signals_ignored():  # a second Ctrl-C must not cut the cleanup short
            stop = [x.proc for x in nodes] + ([load.proc] if load is not None else [])
            stop_processes(stop + ([proxy.proc] if proxy is not None else []))
            if load is not None:
                load.close()
    wan_stats = proxy.stats() if proxy is not None else None
    try:
        samples = json.loads(samples_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        samples = {}
    heights = [s["height"] if s else None for s in final]
    hashes = [s["app_hash"] if s else None for s in final]
    consistent = None not in heights and len(set(zip(heights, hashes, strict=True))) == 1
    before = before or [{} for _ in nodes]
    per_node = {}
    for x, st, raw, raw0 in zip(nodes, final, after, before, strict=True):
        per_node[f"node{x.index}"] = {
            **sampler.series[f"node{x.index}"].summary(start, end),
            "height": st["height"] if st else None,
            "app_hash": st["app_hash"] if st else None,
            "view": st["view"] if st else None,
            "mempool_max": sampler.mempool_max(x.index, start, end),
            "exited_early": x.index in died,
            "exit_reason": crash_reason(x.home / "node.log") if x.index in died else None,
            "metrics": metrics_summary(raw),
            "metrics_delta": metrics_delta(raw0, raw),
        }
    kinds = per_kind(samples, report_doc, load.details if load is not None else {})
    host = sampler.host(start, end)
    return {
        "nodes": n,
        "ok": bool(consistent or same_chain) and not died,
        "error": None,
        "per_s": report_doc.get("per_s"),
        "sent": report_doc.get("sent"),
        "committed": report_doc.get("committed"),
        "failed": report_doc.get("failed"),
        "latency_ms": report_doc.get("latency_ms"),
        "by_kind": kinds,
        "target": {k: v["target"] for k, v in kinds.items()},
        "load_details": load.details if load is not None else {},
        "measured_window_s": round(end - start, 1),
        "consistent": consistent,
        "one_chain": same_chain,
        "nodes_exited": sorted(died),
        "per_node": per_node,
        "stages_ms": stage_means(before, after),
        "load_generator": sampler.series["load"].summary(start, end),
        "ed25519_verify_us": sampler.speed(start, end),
        "host_cpu": host,
        "latency_by_steal": latency_by_steal(samples, host["steal_per_s"]),
        "latency_by_storage": latency_by_storage(
            samples,
            [
                span
                for x in nodes
                for span in read_spans(x.home / "data" / "leveldb" / "LOG", x.index)
            ],
        ),
        "wan_proxy": (
            {**sampler.series["wan_proxy"].summary(start, end), "stats": wan_stats}
            if proxy is not None
            else None
        ),
        "timeline": sampler.timeline(start, end),
    }


def summary_lines(run: dict[str, Any]) -> list[str]:
    lines = []
    for kind, k in run["by_kind"].items():
        lat = k.get("latency_ms") or {}
        lines.append(
            f"{kind}: {k['committed']}/{k['sent']} committed (failed {k['failed']}) -> "
            f"{k['per_s']}/s; latency p50 {lat.get('p50')} p90 {lat.get('p90')} "
            f"p99 {lat.get('p99')} max {lat.get('max')} ms"
        )
    cpu = [v["cpu_pct"]["mean"] for v in run["per_node"].values()]
    rss = [v["rss_mb"]["max"] for v in run["per_node"].values()]
    if None not in cpu and None not in rss:
        lines.append(
            f"per node: CPU mean {min(cpu)}..{max(cpu)} %, RSS max {min(rss)}..{max(rss)} MB"
        )
    speed = run.get("ed25519_verify_us") or {}
    if speed.get("p50") is not None:
        lines.append(
            f"machine speed: one Ed25519 verification {speed['p50']} us "
            f"({speed['min']}..{speed['max']}, {speed['probes']} probes)"
        )
    host = run.get("host_cpu") or {}
    if host.get("steal_pct") is not None:
        split = ", ".join(
            f"{kind} p99 {v['steal']['p99_ms']} ms in {v['steal']['items']} items touching "
            f"those seconds, {v['other']['p99_ms']} ms in the other {v['other']['items']}"
            for kind, v in (run.get("latency_by_steal") or {}).items()
        )
        lines.append(
            f"host: steal {host['steal_pct']} % of the machine (worst second "
            f"{host['steal_max_pct']} %, {host['seconds_steal_over']} s at >= "
            f"{STEAL_SECOND_PCT:g} %), idle {host['idle_pct']} %" + (f"; {split}" if split else "")
        )
    storage = [
        f"{kind} p99 {v['storage']['p99_ms']} ms in {v['storage']['items']} items overlapping "
        f"one, {v['other']['p99_ms']} ms in the other {v['other']['items']}"
        for kind, v in (run.get("latency_by_storage") or {}).items()
        if v is not None
    ]
    if storage:
        spans = next(v["spans"] for v in run["latency_by_storage"].values() if v is not None)
        flushes = sum(1 for sp in spans if sp[3] == "flush")
        lines.append(
            f"LevelDB: {flushes} flushes, {len(spans) - flushes} compactions over the nodes; "
            + "; ".join(storage)
        )
    stages = run.get("stages_ms") or {}
    parts = [
        f"{what} " + ", ".join(f"{stage} {ms}" for stage, ms in means.items() if ms is not None)
        for what, means in stages.items()
        if any(ms is not None for ms in means.values())
    ]
    if parts:
        lines.append("mean ms by stage: " + "; ".join(parts))
    lines.append(
        "one chain: all nodes at the same height and app hash"
        if run["consistent"]
        else (
            "one chain (some nodes still catching up)"
            if run["one_chain"]
            else "NODES DISAGREE or did not answer"
        )
    )
    return lines


def failed_run(n: int, error: str) -> dict[str, Any]:
    return {
        "nodes": n,
        "ok": False,
        "error": error,
        "per_s": None,
        "latency_ms": percentiles_ms([]),
        "by_kind": {},
        "target": {},
        "nodes_exited": [],
        "timeline": [],
    }


# --- the command --------------------------------------------------------------------------------


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"--nodes {text!r}: expected sizes like 4 or 4,7,10,16") from None
    if not sizes or any(not 1 <= s <= 64 for s in sizes):
        raise ValueError(f"--nodes {text!r}: each size must be 1..64")
    return sizes


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--nodes", default="4", help="cluster sizes, run in turn (e.g. 4,7,10,16)")
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="tx")
    ap.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds per size")
    ap.add_argument("--rate", type=float, default=None, help="open loop: items offered per s")
    ap.add_argument("--concurrency", type=int, default=None, help="closed loop: in flight")
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="tx: transactions a request")
    ap.add_argument("--mix", default=None, help="mixed: e.g. commit=0.8,query1=0.15,query2=0.05")
    ap.add_argument("--latency-ms", type=float, default=0.0, help="WAN: one-way delay per link")
    ap.add_argument("--jitter-ms", type=float, default=0.0, help="WAN: +- on each delay")
    ap.add_argument("--loss", type=float, default=0.0, help="WAN: chunk loss probability")
    ap.add_argument("--wan-seed", type=int, default=1)
    ap.add_argument("--subjects", type=int, default=50, help="query workloads: subjects")
    ap.add_argument("--name", default=None, help="results file name (without extension)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where results go")
    ap.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--no-plots", action="store_true", help="JSON and Markdown only")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="run the nodes under cProfile (slower; kept in n<N>/testnet/node<i>/node.prof)",
    )
    ap.add_argument("--format", action="store_true", help="print the results format and exit")
    return ap


def params_from(args: argparse.Namespace, ap: argparse.ArgumentParser) -> Params:
    try:
        sizes = parse_sizes(args.nodes)
        mix = parse_mix(args.mix) if args.mix is not None else None
    except ValueError as exc:
        ap.error(str(exc))
    if args.mix is not None and args.workload != "mixed":
        ap.error("--mix applies to --workload mixed only")
    if args.rate is not None and args.concurrency is not None:
        ap.error("give --rate (open loop) or --concurrency (closed loop), not both")
    if args.rate is not None and not (args.rate > 0 and math.isfinite(args.rate)):
        ap.error("--rate must be a positive number")
    if args.concurrency is not None and not 1 <= args.concurrency <= 4096:
        ap.error("--concurrency must be 1..4096")
    if not (args.duration > 0 and math.isfinite(args.duration)):
        ap.error("--duration must be a positive number of seconds")
    load_workload = WORKLOADS[args.workload]
    if load_workload != "commit" and args.concurrency is None and (
        args.duration > MAX_QUERY_DURATION_S
    ):
        ap.error(f"--duration: at most {MAX_QUERY_DURATION_S:g} s for queries at a --rate")
    if not 1 <= args.batch <= 5000:
        ap.error("--batch must be 1..5000")
    if args.subjects < 1:
        ap.error("--subjects must be at least 1")
    if load_workload in ("query2", "mixed") and min(sizes) < 2:
        ap.error("query2 and mixed need at least 2 nodes (records held by another agency)")
    if load_workload != "commit" and args.subjects < max(sizes):
        ap.error(f"--subjects must be at least the largest size ({max(sizes)})")
    if (args.latency_ms or args.jitter_ms or args.loss) and min(sizes) < 2:
        ap.error("WAN emulation needs at least 2 nodes (it delays node-to-node links)")
    if not (0 <= args.latency_ms <= 10_000 and 0 <= args.jitter_ms <= args.latency_ms):
        ap.error("--latency-ms must be 0..10000 and --jitter-ms 0..latency")
    if not 0 <= args.loss < 1:
        ap.error("--loss must be at least 0 and below 1")
    if not 1024 <= args.base_port <= 65535 - PROXY_PORT_OFFSET - max(sizes) ** 2:
        ap.error("--base-port leaves no room for the nodes' (and proxies') ports")
    rate, concurrency = args.rate, args.concurrency
    if rate is None and concurrency is None:
        if args.workload == "tx":
            concurrency = DEFAULT_CONCURRENCY
        else:
            rate = DEFAULT_RATES[args.workload]
    if load_workload == "mixed" and mix is None:
        mix = dict(DEFAULT_MIX)
    net = WanParams(args.latency_ms, args.jitter_ms, args.loss, args.wan_seed)
    return Params(
        args.workload,
        sizes,
        args.duration,
        rate,
        concurrency,
        args.batch,
        mix,
        net,
        args.base_port,
        args.subjects,
        args.profile,
    )


def default_name(p: Params) -> str:
    name = f"run-{p.workload}-n{'-'.join(map(str, p.sizes))}"
    if p.network.emulated:
        name += f"-wan{p.network.latency_ms:g}ms"
    return name


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.format:
        print(RESULTS_FORMAT)
        return 0
    p = params_from(args, ap)
    name = args.name or default_name(p)
    workdir = Path(tempfile.mkdtemp(prefix="creditnet-run-"))
    keep = args.keep or args.profile
    runs: list[dict[str, Any]] = []
    figures = {"parameters": p.describe(), "versions": versions(), "runs": runs}
    path = args.out_dir / f"{name}.json"
    try:
        with signals_as_interrupt():
            for n in p.sizes:
                try:
                    run = run_size(p, n, workdir)
                except (ClusterError, TestnetError, LoadError) as exc:
                    print(f"bench.run: n={n}: {exc}", file=sys.stderr)
                    run = failed_run(n, str(exc))
                except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
                    # an unforeseen failure of one size: record it, keep the logs, go on
                    detail = "".join(traceback.format_exception(exc)).strip()
                    print(f"bench.run: n={n}: unexpected error\n{detail}", file=sys.stderr)
                    run = failed_run(n, f"{type(exc).__name__}: {exc}")
                runs.append(run)
                for line in summary_lines(run) if run["error"] is None else [run["error"]]:
                    print(f"  n={n}: {line}", flush=True)
                write_result(name, figures, path)  # after every size: a crash keeps the rest
    except KeyboardInterrupt:
        print("bench.run: interrupted; the processes it started are stopped", file=sys.stderr)
        keep = True
        return 130
    finally:
        if runs:
            written = [write_result(name, figures, path)]
            try:
                plots = not args.no_plots and any(r["error"] is None for r in runs)
                written += report.write_reports(path, plots=plots)
            except (OSError, ValueError, KeyError, ImportError) as exc:
                print(f"bench.run: the Markdown/plots failed: {exc}", file=sys.stderr)
            print("bench.run: wrote " + ", ".join(str(w) for w in written))
        ok = bool(runs) and all(r["ok"] for r in runs)
        keep = keep or not ok
        if keep and any(workdir.iterdir()):
            print(f"bench.run: kept {workdir} (node logs in n<N>/testnet/node<i>/node.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
