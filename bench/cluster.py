"""A benchmark cluster's processes: N ``creditnet run`` nodes of a fresh testnet and the load
generator, started, watched and always stopped; the building blocks of :mod:`bench.run`.

* nodes: :func:`start_node` (one ``python -m node run`` process per node, in its own session,
  log in ``node<i>/node.log``), :func:`wait_ready` (every API answers, every node sees its N-1
  peers), :func:`warm_up` (one committed transaction through each node, so first-use costs fall
  outside the measurement), :func:`settle` and :func:`one_chain` (afterwards: the same height
  and app hash, or one chain with some nodes still catching up), :func:`stop_processes` (SIGTERM,
  SIGKILL after 10 s);
* :class:`Sampler`: every second, each process's CPU (all threads and the main thread, which
  runs the node's trio loop) and RSS from ``/proc``, and each node's ``/v1/status``;
* :func:`parse_metrics` / :func:`metrics_summary`: the figures of a node's ``/metrics`` that
  explain where the time goes;
* :class:`LoadRun`: ``python -m bench.load`` as a separate process, its timed phase marked by
  the start/end lines it prints on stderr.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

from bench.load import (
    DETAILS_PREFIX,
    END_MARK,
    START_MARK,
    commit_batches,
    load_targets,
)
from bench.results_io import verify_us

START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
SETTLE_TIMEOUT_S = 30.0
SAMPLE_EVERY_S = 1.0
SPEED_EVERY_S = 3.0
STEAL_SECOND_PCT = 10.0
"""A second in which the hypervisor stole at least this share of the machine is counted."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
METRIC_FAMILIES = (
    "creditnet_consensus_height",
    "creditnet_consensus_txs_committed_total",
    "creditnet_consensus_txs_failed_total",
    "creditnet_consensus_block_txs",
    "creditnet_consensus_block_interval_seconds",
    "creditnet_consensus_commit_latency_seconds",
    "creditnet_storage_commit_seconds",
    "creditnet_consensus_block_stage_seconds",
    "creditnet_query_stage_seconds",
    "creditnet_consensus_view_changes_total",
    "creditnet_mempool_refused_total",
    "creditnet_p2p_dropped_frames_total",
    "creditnet_api_requests_total",
    "creditnet_consensus_p2p_messages_total",
    "creditnet_consensus_suspicions_total",
    "creditnet_consensus_p2p_bad_messages_total",
    "creditnet_worker_cpu_seconds_total",
    "creditnet_gc_pause_seconds",
    "process_cpu_seconds_total",
)


class ClusterError(Exception):
    """The benchmark cannot go on; the message says why."""


# --- processes ----------------------------------------------------------------------------------


@dataclass
class NodeProc:
    """One node process of the cluster."""

    index: int
    home: Path
    api: str
    metrics: str
    proc: subprocess.Popen[bytes]


def node_ports(base_port: int, nodes: int) -> list[int]:
    """The p2p, API and metrics ports of a testnet's nodes (``creditnet testnet`` layout)."""
    return [p for i in range(nodes) for p in range(base_port + 10 * i, base_port + 10 * i + 3)]


def check_ports_free(ports: Iterable[int]) -> None:
    """Raise ClusterError if one of ``ports`` is taken on 127.0.0.1."""
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                raise ClusterError(f"port {port} is in use; choose another --base-port") from None


def start_node(index: int, home: Path, base_port: int, *, profile: bool = False) -> NodeProc:
    """Start ``python -m node run --home HOME`` in its own session, logging to node.log; with
    ``profile``, under cProfile (main thread only), which writes ``HOME/node.prof`` at exit."""
    cmd = [sys.executable, "-m", "node", "run", "--home", str(home)]
    if profile:
        cmd[1:1] = ["-m", "cProfile", "-o", str(home / "node.prof")]
    with open(home / "node.log", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    first = base_port + 10 * index
    return NodeProc(
        index, home, f"http://127.0.0.1:{first + 1}", f"http://127.0.0.1:{first + 2}", proc
    )


def stop_processes(procs: Sequence[subprocess.Popen[Any]], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM every process still running, SIGKILL (its process group) after ``grace`` s."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(0.05, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"bench.cluster: pid {p.pid} ignored SIGTERM; killing it", file=sys.stderr)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Group)\b.*")


def crash_reason(path: Path) -> str | None:
    """The last exception line (``module.SomeError: message``) in a node's log, if any."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        text = line.strip().lstrip("|+- ").strip()
        if _EXCEPTION_LINE.match(text) and "Exception Group Traceback" not in text:
            return text[:500]
    return None


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file (empty if unreadable)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- HTTP ---------------------------------------------------------------------------------------


def get_json(url: str, timeout: float = 5.0) -> Any:
    """GET ``url`` and decode the JSON answer (OSError/ValueError on failure)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def get_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text: str = resp.read().decode()
        return text


def wait_ready(nodes: Sequence[NodeProc], timeout: float = START_TIMEOUT_S) -> None:
    """Wait until every node's /v1/status answers and shows all its peers connected."""
    deadline = time.monotonic() + timeout
    want_peers = len(nodes) - 1
    for n in nodes:
        last = "no answer"
        while True:
            if n.proc.poll() is not None:
                raise ClusterError(
                    f"node{n.index} exited with status {n.proc.returncode}:\n"
                    + log_tail(n.home / "node.log")
                )
            try:
                status = get_json(n.api + "/v1/status", timeout=2.0)
                peers = status.get("peers")
                if isinstance(peers, int) and peers >= want_peers:
                    break
                last = f"{peers} of {want_peers} peers connected"
            except (OSError, ValueError) as exc:
                last = f"no answer ({exc})"
            if time.monotonic() > deadline:
                raise ClusterError(f"node{n.index} not ready within {timeout:.0f} s: {last}")
            time.sleep(0.2)


def statuses(nodes: Sequence[NodeProc], timeout: float = 5.0) -> list[dict[str, Any] | None]:
    """Each node's /v1/status (None where it does not answer)."""
    out: list[dict[str, Any] | None] = []
    for n in nodes:
        try:
            doc = get_json(n.api + "/v1/status", timeout=timeout)
            out.append(doc if isinstance(doc, dict) else None)
        except (OSError, ValueError):
            out.append(None)
    return out


def one_chain(nodes: Sequence[NodeProc], final: Sequence[Any]) -> bool | None:
    """Whether the answering nodes hold the same block at the lowest height they all reached
    (nodes still catching up after an overload are behind, not forked); None if unknown."""
    heights = [s["height"] for s in final if s]
    if not heights or min(heights) < 1:
        return None
    low = min(heights)
    seen = set()
    for n, s in zip(nodes, final, strict=True):
        if not s:
            continue
        try:
            seen.add(get_json(f"{n.api}/v1/blocks/{low}")["hash"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return len(seen) == 1


def settle(nodes: Sequence[NodeProc], timeout: float = SETTLE_TIMEOUT_S) -> list[Any]:
    """Poll the nodes' status until the running ones all answer with one height and app hash,
    twice in a row (or ``timeout`` passes); returns the last statuses (None for a node that
    does not answer)."""
    deadline = time.monotonic() + timeout
    previous: tuple[Any, ...] | None = None
    while True:
        current = statuses(nodes)
        key = tuple(
            (s["height"], s["app_hash"]) if s else None
            for s, n in zip(current, nodes, strict=True)
            if s is not None or n.proc.poll() is None
        )
        agreed = bool(key) and None not in key and len(set(key)) == 1
        if (agreed and key == previous) or time.monotonic() > deadline:
            return current
        previous = key if agreed else None
        time.sleep(0.5)


def warm_up(directory: Path, nodes: Sequence[NodeProc], timeout: float = 30.0) -> None:
    """Commit one transaction through each node in turn (``?wait=commit``), so that the cluster
    is known to commit and first-use costs (imports, caches, the first blocks) fall outside the
    measurement; ClusterError if one is not committed."""
    targets = load_targets(directory, [n.index for n in nodes])
    batches = commit_batches(targets, len(targets), 1, os.urandom(16))
    for batch, n in zip(batches, nodes, strict=True):
        req = urllib.request.Request(
            n.api + "/v1/txs?wait=commit",
            data=batch.body,
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ClusterError(
                f"warm-up: node{n.index} answered HTTP {exc.code}: {exc.read()[:300]!r}"
            ) from None
        except (OSError, ValueError) as exc:
            raise ClusterError(f"warm-up: node{n.index}: {exc}") from None
        results = doc.get("results") if isinstance(doc, dict) else None
        if not results or results[0].get("status") != "committed" or not results[0].get("ok"):
            raise ClusterError(f"warm-up: node{n.index} did not commit a transaction: {doc!r}")


def git_revision() -> dict[str, Any]:
    """The commit the code under test is at, and whether node/ or protocol/ differ from it."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "uncommitted_changes": bool(git("status", "--porcelain", "--", "node", "protocol")),
    }


# --- /proc and /metrics sampling ----------------------------------------------------------------


def _cpu_seconds(stat: str) -> float:
    """utime + stime (fields 14 and 15) of a /proc ``stat`` line, in seconds."""
    fields = stat.rpartition(")")[2].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_sample(pid: int) -> tuple[float, float, int] | None:
    """(CPU seconds used by the process, by its main thread, resident bytes) of ``pid`` from
    /proc; None if it is gone. The main thread runs a node's trio loop: when it nears 100 %
    the node is bound by one core, whatever the other threads (signature checks, block
    execution, LevelDB) do."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        main = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return _cpu_seconds(stat), _cpu_seconds(main), int(line.split()[1]) * 1024
    return None  # a zombie has no memory


def host_cpu_sample() -> tuple[int, int, int] | None:
    """(steal, idle incl. iowait, total) clock ticks of all CPUs since boot, from /proc/stat;
    None where it cannot be read. Steal is time the hypervisor ran something else while this
    machine's CPUs had work: a slowdown no change to creditnet can cause or cure."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 9:
        return None
    try:
        ticks = [int(x) for x in fields[1:]]
    except ValueError:
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return ticks[7], ticks[3] + ticks[4], sum(ticks[:8])


def host_cpu_summary(
    log: Sequence[tuple[float, tuple[int, int, int]]], start: float, end: float
) -> dict[str, Any]:  # (log: (monotonic time, host_cpu_sample()) about every second)
    """Steal and idle shares of the machine over ``[start, end]`` from successive
    :func:`host_cpu_sample` readings: whole-window percentages, the worst second's steal, the
    seconds with steal >= STEAL_SECOND_PCT, and each second's steal (to set beside latency)."""
    window = [(t, s) for t, s in log if start - SAMPLE_EVERY_S <= t <= end]
    per_second: list[tuple[float, float]] = []  # (time after start, steal %)
    for (_, a), (t1, b) in itertools.pairwise(window):
        total = b[2] - a[2]
        if total > 0 and t1 >= start:
            per_second.append((t1 - start, 100 * (b[0] - a[0]) / total))
    if not per_second:
        return {
            "steal_pct": None,
            "idle_pct": None,
            "steal_max_pct": None,
            "seconds_steal_over": None,
            "steal_per_s": [],
        }
    first, last = window[0][1], window[-1][1]
    total = max(1, last[2] - first[2])
    return {
        "steal_pct": round(100 * (last[0] - first[0]) / total, 1),
        "idle_pct": round(100 * (last[1] - first[1]) / total, 1),
        "steal_max_pct": round(max(x[1] for x in per_second), 1),
        "seconds_steal_over": sum(1 for x in per_second if x[1] >= STEAL_SECOND_PCT),
        "steal_per_s": [[round(t, 1), round(st, 1)] for t, st in per_second],
    }


@dataclass
class Series:
    """Timed samples of one process: (monotonic time, CPU seconds, main-thread CPU seconds,
    RSS bytes)."""

    samples: list[tuple[float, float, float, int]] = field(default_factory=list)

    def window(self, start: float, end: float) -> list[tuple[float, float, float, int]]:
        return [s for s in self.samples if start <= s[0] <= end]

    def summary(self, start: float, end: float) -> dict[str, Any]:
        """CPU % of the process and of its main thread (mean over the window, max over one
        sampling interval; 100 % is one core) and RSS MB (mean, max)."""
        win = self.window(start, end)
        if len(win) < 2:
            none = {"mean": None, "max": None}
            return {"cpu_pct": none, "main_thread_cpu_pct": none, "rss_mb": none}

        def pct(k: int) -> dict[str, float]:
            rates = [100 * (b[k] - a[k]) / (b[0] - a[0]) for a, b in pairwise(win)]
            mean = 100 * (win[-1][k] - win[0][k]) / (win[-1][0] - win[0][0])
            return {"mean": round(mean, 1), "max": round(max(rates), 1)}

        rss = [s[3] / 1e6 for s in win]
        return {
            "cpu_pct": pct(1),
            "main_thread_cpu_pct": pct(2),
            "rss_mb": {"mean": round(sum(rss) / len(rss), 1), "max": round(max(rss), 1)},
        }


class Sampler:
    """A thread sampling CPU/RSS of named processes every second, and a second one polling the
    nodes' /v1/status (height, mempool size), until stopped."""

    def __init__(self, pids: dict[str, int], nodes: Sequence[NodeProc]) -> None:
        self.pids = dict(pids)
        self.series = {name: Series() for name in pids}
        self.nodes = list(nodes)
        self.status_log: list[tuple[float, list[dict[str, Any] | None]]] = []
        self.speed_log: list[tuple[float, float]] = []
        self.host_log: list[tuple[float, tuple[int, int, int]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._proc_loop, daemon=True),
            threading.Thread(target=self._status_loop, daemon=True),
            threading.Thread(target=self._speed_loop, daemon=True),
        ]

    def add(self, name: str, pid: int) -> None:
        with self._lock:
            self.pids[name] = pid
            self.series[name] = Series()

    def __enter__(self) -> Sampler:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:  # (a status poll may still be waiting on a busy node)
            t.join(3.0)

    def _proc_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                pids = list(self.pids.items())
            for name, pid in pids:
                now = time.monotonic()
                sample = proc_sample(pid)
                if sample is not None:
                    self.series[name].samples.append((now, *sample))
            host = host_cpu_sample()
            if host is not None:
                self.host_log.append((time.monotonic(), host))
            next_at += SAMPLE_EVERY_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _status_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            self.status_log.append((now, statuses(self.nodes, timeout=2.0)))
            next_at += SAMPLE_EVERY_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _speed_loop(self) -> None:
        """The machine's speed every SPEED_EVERY_S (see :func:`bench.results_io.verify_us`):
        a run on a slowed-down host is told from a slow creditnet by this, not guessed."""
        while not self._stop.wait(SPEED_EVERY_S):
            us = verify_us()
            if us is not None:
                self.speed_log.append((time.monotonic(), us))

    def speed(self, start: float, end: float) -> dict[str, Any]:
        """Microseconds per Ed25519 verification probed in the window: min, median, max."""
        values = sorted(us for t, us in self.speed_log if start <= t <= end)
        if not values:
            return {"min": None, "p50": None, "max": None, "probes": 0}
        return {
            "min": values[0],
            "p50": values[len(values) // 2],
            "max": values[-1],
            "probes": len(values),
        }

    def host(self, start: float, end: float) -> dict[str, Any]:
        """The machine's steal and idle time over the window: see :func:`host_cpu_summary`."""
        return host_cpu_summary(self.host_log, start, end)

    def timeline(self, start: float, end: float) -> list[dict[str, Any]]:
        """Per second of the window: each node's height and mempool size (None: no answer)."""
        out = []
        for t, sts in self.status_log:
            if start <= t <= end:
                out.append(
                    {
                        "t": round(t - start, 1),
                        "height": [st["height"] if st else None for st in sts],
                        "mempool": [st["mempool"]["size"] if st else None for st in sts],
                        "view": [st["view"] if st else None for st in sts],
                    }
                )
        return out

    def mempool_max(self, index: int, start: float, end: float) -> int | None:
        sizes = [
            st[index]["mempool"]["size"]  # type: ignore[index]
            for t, st in self.status_log
            if start <= t <= end and st[index] is not None
        ]
        return max(sizes) if sizes else None


def parse_metrics(text: str, families: Sequence[str] = METRIC_FAMILIES) -> dict[str, float]:
    """Selected samples of a Prometheus text exposition as ``{"name{labels}": value}``; of
    histograms only ``_sum`` and ``_count`` are kept."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, value = line.rpartition(" ")
        name = name_part.split("{", 1)[0]
        base = name.removesuffix("_sum").removesuffix("_count").removesuffix("_bucket")
        if base not in families or name.endswith("_bucket") or name.endswith("_created"):
            continue
        with contextlib.suppress(ValueError):
            out[name_part] = float(value)
    return out


STAGE_FAMILIES = {
    "block": "creditnet_consensus_block_stage_seconds",
    "query": "creditnet_query_stage_seconds",
}


def stage_means(
    before: Sequence[dict[str, float]], after: Sequence[dict[str, float]]
) -> dict[str, dict[str, float | None]]:
    """Mean milliseconds of each stage of a block and of a query (the nodes' stage histograms,
    see ``node/metrics.py``) over the timed phase, all nodes together: where the time goes."""
    out: dict[str, dict[str, float | None]] = {}
    for what, family in STAGE_FAMILIES.items():
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        for raw0, raw in zip(before, after, strict=True):
            for key, value in raw.items():
                for suffix, acc in (("_sum{", sums), ("_count{", counts)):
                    if key.startswith(family + suffix):
                        stage = key.split('stage="', 1)[1].split('"', 1)[0]
                        acc[stage] = acc.get(stage, 0.0) + value - raw0.get(key, 0.0)
        out[what] = {
            stage: round(1000 * sums.get(stage, 0.0) / n, 1) if n > 0 else None
            for stage, n in counts.items()
        }
    return out


def metrics_summary(raw: dict[str, float]) -> dict[str, Any]:
    """The figures of one node's /metrics that explain where the time goes."""

    def mean_ms(family: str) -> float | None:
        count = raw.get(family + "_count", 0.0)
        return round(1000 * raw.get(family + "_sum", 0.0) / count, 1) if count else None

    blocks = raw.get("creditnet_consensus_block_txs_count", 0.0)
    return {
        "height": raw.get("creditnet_consensus_height"),
        "txs_committed": raw.get("creditnet_consensus_txs_committed_total"),
        "blocks": blocks,
        "mean_block_txs": round(raw.get("creditnet_consensus_block_txs_sum", 0.0) / blocks, 1)
        if blocks
        else None,
        "mean_block_interval_ms": mean_ms("creditnet_consensus_block_interval_seconds"),
        "mean_storage_commit_ms": mean_ms("creditnet_storage_commit_seconds"),
        "storage_commit_s_total": round(raw.get("creditnet_storage_commit_seconds_sum", 0.0), 2),
        "mean_admission_to_commit_ms": mean_ms("creditnet_consensus_commit_latency_seconds"),
        "view_changes": raw.get("creditnet_consensus_view_changes_total", 0.0),
        "p2p_dropped_frames": raw.get("creditnet_p2p_dropped_frames_total", 0.0),
        "process_cpu_s": raw.get("process_cpu_seconds_total"),
        "refused": {
            k.split('reason="', 1)[1].split('"', 1)[0]: v
            for k, v in raw.items()
            if k.startswith("creditnet_mempool_refused_total{") and v
        },
        "txs_failed": {
            k.split('code="', 1)[1].split('"', 1)[0]: v
            for k, v in raw.items()
            if k.startswith("creditnet_consensus_txs_failed_total{") and v
        },
        "api_requests": {
            k.split("{", 1)[1].rstrip("}"): v
            for k, v in raw.items()
            if k.startswith("creditnet_api_requests_total{")
        },
        "p2p_messages": {
            k.split("{", 1)[1].rstrip("}"): v
            for k, v in raw.items()
            if k.startswith("creditnet_consensus_p2p_messages_total{")
        },
        "p2p_bad_messages": {
            k.split('reason="', 1)[1].split('"', 1)[0]: v
            for k, v in raw.items()
            if k.startswith("creditnet_consensus_p2p_bad_messages_total{") and v
        },
        "suspicions": {
            k.split('kind="', 1)[1].split('"', 1)[0]: v
            for k, v in raw.items()
            if k.startswith("creditnet_consensus_suspicions_total{") and v
        },
    }


# --- the load generator -------------------------------------------------------------------------


@dataclass
class LoadRun:
    """The load generator's process and what it wrote."""

    proc: subprocess.Popen[str]
    log: IO[str]
    start: float | None = None
    end: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    stdout: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def launch(cls, directory: Path, args: Sequence[str]) -> LoadRun:
        """Start ``python -m bench.load --dir DIRECTORY ARGS...``, logging to load.log."""
        cmd = [sys.executable, "-m", "bench.load", "--dir", str(directory), *args]
        log = open(directory / "load.log", "w", encoding="utf-8")  # noqa: SIM115 - closed in wait
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        run = cls(proc, log)
        run._threads = [
            threading.Thread(target=run._read_stderr, daemon=True),
            threading.Thread(target=run._read_stdout, daemon=True),
        ]
        for t in run._threads:
            t.start()
        return run

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            now = time.monotonic()
            text = line.rstrip("\n")
            self.log.write(text + "\n")
            if text == START_MARK:
                self.start = now
            elif text == END_MARK:
                self.end = now
            elif text.startswith(DETAILS_PREFIX):
                with contextlib.suppress(ValueError):
                    self.details = json.loads(text[len(DETAILS_PREFIX) :])
            else:
                print(f"  {text}", file=sys.stderr, flush=True)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)

    def wait(self, timeout: float) -> dict[str, Any]:
        """Wait for the process; its JSON report (ClusterError if none or it took too long)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise ClusterError(
                f"the load generator did not finish within {timeout:.0f} s"
            ) from None
        self.close()
        if self.proc.returncode != 0:
            raise ClusterError(f"the load generator exited with status {self.proc.returncode}")
        try:
            report = json.loads("".join(self.stdout))
        except ValueError:
            raise ClusterError(f"the load generator printed no JSON: {self.stdout!r}") from None
        if not isinstance(report, dict):
            raise ClusterError(f"the load generator printed {report!r}")
        return report

    def close(self) -> None:
        """Once the process has ended: collect the rest of its output, close the log."""
        for t in self._threads:
            t.join(5)
        if not self.log.closed:
            self.log.close()


# --- the benchmark runner's process handling -------------------------------------------------


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into KeyboardInterrupt, so a stopped benchmark still cleans up
    (SIGINT too: a shell starts background jobs with it ignored, and Python keeps that)."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
