"""Cluster benchmark: a fresh N-node testnet on loopback under one of the load generator's loads.

    python -m bench.cluster [--workload commit|query1|query2] [--nodes 4] [--rate R]
        [--duration 60] [--batch 100] [--base-port 27400] [--keep] [--out FILE]

Creates a testnet in a temporary directory (``creditnet testnet`` layout, node i on ports
B+10i..B+10i+2), starts one ``python -m node run`` process per node (log in
``node<i>/node.log``), waits until every API answers and every node sees its N-1 peers, then runs
``python -m bench.load --workload W`` as a separate process (for ``query1``/``query2`` its own
setup -- subjects, records, lenders, consents -- runs first and is not measured). While the load
runs it samples, every second, each node's CPU and resident memory from ``/proc/<pid>/stat`` and
``/proc/<pid>/status`` (and the load generator's, which shares the machine), and each node's
``/v1/status`` (height, mempool size). CPU and memory figures cover only the load generator's
timed phase (between its start and end marker lines), not its signing pass.

Afterwards it waits for the nodes to settle, checks that every node holds the same height and app
hash, reads each node's ``/metrics`` (block sizes, storage commit time, admission-to-commit
latency, refusals, view changes), stops every node (SIGTERM, SIGKILL after 10 s -- also on
Ctrl-C or an error: no process is left behind) and writes ``bench/results/cluster-commit-n<N>.json``
(``cluster-query1-n<N>.json``, ``cluster-query2-n<N>.json`` for the query workloads) through
:mod:`bench.results_io`, with a short summary on stdout. Targets (``target.met`` says whether
reached): commit >= 3000 committed tx/s with p99 <= 1000 ms; query1 >= 500 answered queries/s
with p99 <= 250 ms; query2 p99 <= 500 ms. Default rates: 3500 tx/s, 500 and 100 queries/s.

The temporary directory is removed unless ``--keep`` is given or the run failed (then its path is
printed, with the node logs in it). Exit status 0 when the run finished and the nodes agree, 1
otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import IO, Any

from bench.load import (
    DETAILS_PREFIX,
    END_MARK,
    MAX_QUERY_DURATION_S,
    START_MARK,
    LoadError,
    commit_batches,
    load_targets,
)
from bench.results_io import RESULTS_DIR, write_result
from node.testnet import TestnetError, create_testnet

DEFAULT_NODES = 4
DEFAULT_RATE = 3500.0
DEFAULT_RATES = {"commit": DEFAULT_RATE, "query1": 500.0, "query2": 100.0}
WORKLOADS = ("commit", "query1", "query2")
TARGETS: dict[str, tuple[float | None, float]] = {
    "commit": (3000.0, 1000.0),  # query workloads also need no failed query
    "query1": (500.0, 250.0),
    "query2": (None, 500.0),
}
"""Per workload: (committed per second at least, or None; p99 latency in ms at most)."""
DEFAULT_DURATION = 60.0
DEFAULT_BATCH = 100
DEFAULT_BASE_PORT = 27400
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
SETTLE_TIMEOUT_S = 30.0
SAMPLE_EVERY_S = 1.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
METRIC_FAMILIES = (
    "creditnet_consensus_height",
    "creditnet_consensus_txs_committed_total",
    "creditnet_consensus_txs_failed_total",
    "creditnet_consensus_block_txs",
    "creditnet_consensus_block_interval_seconds",
    "creditnet_consensus_commit_latency_seconds",
    "creditnet_storage_commit_seconds",
    "creditnet_consensus_view_changes_total",
    "creditnet_mempool_refused_total",
    "creditnet_p2p_dropped_frames_total",
    "creditnet_api_requests_total",
    "creditnet_consensus_p2p_messages_total",
    "creditnet_consensus_suspicions_total",
    "creditnet_consensus_p2p_bad_messages_total",
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


def check_ports_free(base_port: int, nodes: int) -> None:
    """Raise ClusterError if a port the testnet needs is taken on 127.0.0.1."""
    for i in range(nodes):
        for port in range(base_port + 10 * i, base_port + 10 * i + 3):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise ClusterError(
                        f"port {port} is in use; choose another --base-port"
                    ) from None


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
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._proc_loop, daemon=True),
            threading.Thread(target=self._status_loop, daemon=True),
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
            next_at += SAMPLE_EVERY_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def _status_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            self.status_log.append((now, statuses(self.nodes, timeout=2.0)))
            next_at += SAMPLE_EVERY_S
            self._stop.wait(max(0.0, next_at - time.monotonic()))

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
    def launch(
        cls, directory: Path, rate: float, duration: float, batch: int, workload: str = "commit"
    ) -> LoadRun:
        cmd = [
            sys.executable,
            "-m",
            "bench.load",
            "--dir",
            str(directory),
            "--workload",
            workload,
            "--rate",
            f"{rate:g}",
            "--duration",
            f"{duration:g}",
            "--batch",
            str(batch),
        ]
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


# --- the benchmark ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Params:
    nodes: int
    rate: float
    duration: float
    batch: int
    base_port: int
    profile: bool = False
    workload: str = "commit"


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


def run_cluster(p: Params, workdir: Path) -> dict[str, Any]:
    """The whole benchmark in ``workdir``; the figures to write. Every process it starts is
    stopped before it returns or raises."""
    check_ports_free(p.base_port, p.nodes)
    revision = git_revision()  # before the nodes import it: others may be editing the tree
    testnet = workdir / "testnet"
    create_testnet(testnet, p.nodes, base_port=p.base_port)
    nodes: list[NodeProc] = []
    load: LoadRun | None = None
    try:
        for i in range(p.nodes):
            nodes.append(start_node(i, testnet / f"node{i}", p.base_port, profile=p.profile))
        print(f"bench.cluster: {p.nodes} nodes starting in {testnet}", flush=True)
        wait_ready(nodes)
        warm_up(testnet, nodes)
        print(
            f"bench.cluster: all nodes up with {p.nodes - 1} peers each and committing; "
            f"load: {p.workload} {p.rate:g}/s for {p.duration:g} s"
            + (f", batches of {p.batch}" if p.workload == "commit" else ""),
            flush=True,
        )
        pids = {f"node{n.index}": n.proc.pid for n in nodes}
        with Sampler(pids, nodes) as sampler:
            load = LoadRun.launch(testnet, p.rate, p.duration, p.batch, p.workload)
            sampler.add("load", load.proc.pid)
            # signing (~50 us a tx), the timed phase, then the slowest batch's time limit
            # (and for queries the setup: records, registrations, consents)
            limit = p.rate * p.duration * 200e-6 + p.duration + 120
            limit += 0 if p.workload == "commit" else 180
            report = load.wait(limit)
        start = load.start if load.start is not None else 0.0
        end = load.end if load.end is not None else time.monotonic()
        final = settle(nodes)
        same_chain = one_chain(nodes, final)
        raw_metrics = []
        for n in nodes:
            try:
                raw_metrics.append(parse_metrics(get_text(n.metrics + "/metrics")))
            except (OSError, ValueError):
                raw_metrics.append({})
        died = {n.index: n.proc.returncode for n in nodes if n.proc.poll() is not None}
        for i, code in died.items():
            log = testnet / f"node{i}" / "node.log"
            print(
                f"bench.cluster: node{i} EXITED (status {code}) before the end: "
                f"{crash_reason(log) or log_tail(log, 5)}",
                file=sys.stderr,
            )
    finally:
        stop = [n.proc for n in nodes] + ([load.proc] if load is not None else [])
        stop_processes(stop)
        if load is not None:
            load.close()

    heights = [s["height"] if s else None for s in final]
    hashes = [s["app_hash"] if s else None for s in final]
    consistent = None not in heights and len(set(zip(heights, hashes, strict=True))) == 1
    live = [(h, a) for h, a in zip(heights, hashes, strict=True) if h is not None]
    live_agree = bool(live) and len(set(live)) == 1
    per_node = {}
    for n, st, raw in zip(nodes, final, raw_metrics, strict=True):
        per_node[f"node{n.index}"] = {
            **sampler.series[f"node{n.index}"].summary(start, end),
            "height": st["height"] if st else None,
            "app_hash": st["app_hash"] if st else None,
            "view": st["view"] if st else None,
            "mempool_max": sampler.mempool_max(n.index, start, end),
            "exited_early": n.index in died,
            "exit_status": died.get(n.index),
            "exit_reason": crash_reason(n.home / "node.log") if n.index in died else None,
            "metrics": metrics_summary(raw),
        }
    latency = report.get("latency_ms") or {}
    per_s = float(report.get("per_s") or 0.0)
    p99 = latency.get("p99")
    want_per_s, want_p99 = TARGETS[p.workload]
    return {
        "parameters": {
            "nodes": p.nodes,
            "workload": p.workload,
            "rate": p.rate,
            "duration_s": p.duration,
            "batch": p.batch,
            "base_port": p.base_port,
            "sync_writes": True,
            "profiled": p.profile,
            "code": revision,
        },
        "load": report,
        "load_details": load.details,
        "committed_per_s": per_s,
        "latency_p50_ms": latency.get("p50"),
        "latency_p99_ms": p99,
        "measured_window_s": round(end - start, 1),
        "nodes": per_node,
        "load_generator": sampler.series["load"].summary(start, end),
        "timeline": sampler.timeline(start, end),
        "consistent": consistent,
        "running_nodes_agree": live_agree,
        "one_chain": same_chain,
        "nodes_exited": sorted(died),
        "target": {
            "committed_per_s": want_per_s,
            "p99_ms": want_p99,
            "met": (want_per_s is None or per_s >= want_per_s)
            and p99 is not None
            and p99 <= want_p99
            and (p.workload == "commit" or int(report.get("failed") or 0) == 0),
        },
    }


def summary_lines(figures: dict[str, Any]) -> list[str]:
    """A short human summary of the figures."""
    load, target = figures["load"], figures["target"]
    lat = load.get("latency_ms") or {}
    unit = "txs" if figures["parameters"]["workload"] == "commit" else "queries"
    lines = [
        f"committed {load.get('committed')}/{load.get('sent')} {unit} (failed {load.get('failed')})"
        f" -> {figures['committed_per_s']:.0f} {unit}/s; latency p50 {lat.get('p50')} ms, "
        f"p90 {lat.get('p90')} ms, p99 {lat.get('p99')} ms, max {lat.get('max')} ms",
    ]
    failures = figures["load_details"].get("failures")
    if failures:
        lines.append(f"failures: {failures}")
    for name, n in figures["nodes"].items():
        m = n["metrics"]
        lines.append(
            f"{name}: CPU {n['cpu_pct']['mean']}% mean / {n['cpu_pct']['max']}% max "
            f"(main thread {n['main_thread_cpu_pct']['mean']}%), "
            f"RSS {n['rss_mb']['mean']} / {n['rss_mb']['max']} MB, height {n['height']}, "
            f"app_hash {str(n['app_hash'])[:16]}, mempool max {n['mempool_max']}, "
            f"{m['mean_block_txs']} txs/block, store {m['mean_storage_commit_ms']} ms/block"
        )
    g = figures["load_generator"]
    lines.append(f"load generator: CPU {g['cpu_pct']['mean']}% mean, RSS {g['rss_mb']['max']} MB")
    if figures["consistent"]:
        lines.append("all nodes agree on height and app hash")
    elif figures["nodes_exited"]:
        lines.append(
            f"nodes {figures['nodes_exited']} EXITED during the run; the others "
            + ("agree" if figures["running_nodes_agree"] else "DISAGREE")
            + " on height and app hash"
        )
    elif figures.get("one_chain"):
        lines.append(
            "nodes at different heights (some still catching up), all on one chain: the same "
            "block at the lowest height they reached"
        )
    else:
        lines.append("NODES DISAGREE on height or app hash")
    want = target["committed_per_s"]
    lines.append(
        "target "
        + (f">= {want:.0f}/s with " if want is not None else "")
        + f"p99 <= {target['p99_ms']:.0f} ms"
        + ("" if figures["parameters"]["workload"] == "commit" else " and no failure")
        + ": "
        + ("met" if target["met"] else "NOT met")
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES)
    parser.add_argument("--workload", choices=WORKLOADS, default="commit")
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="tx/s (commit) or queries/s offered (default: 3500, 500, 100 by workload)",
    )
    parser.add_argument("--duration", type=float, default=DEFAULT_DURATION, help="seconds")
    parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="txs a request")
    parser.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--out", type=Path, default=None, help="results file")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the nodes under cProfile (slower; node<i>/node.prof in the kept directory)",
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    rate = DEFAULT_RATES[args.workload] if args.rate is None else args.rate
    if rate <= 0 or args.duration <= 0 or args.batch < 1:
        parser.error("--rate, --duration and --batch must be positive")
    if args.workload != "commit" and args.duration > MAX_QUERY_DURATION_S:
        parser.error(f"--duration: at most {MAX_QUERY_DURATION_S:g} s for the query workloads")
    params = Params(
        args.nodes, rate, args.duration, args.batch, args.base_port, args.profile, args.workload
    )
    name = f"cluster-{args.workload}-n{args.nodes}"
    out = args.out or RESULTS_DIR / f"{name}.json"
    workdir = Path(tempfile.mkdtemp(prefix="creditnet-cluster-"))
    keep = args.keep or args.profile
    try:
        with signals_as_interrupt():
            figures = run_cluster(params, workdir)
        path = write_result(name, figures, out)
        for line in summary_lines(figures):
            print("  " + line)
        print(f"bench.cluster: results in {path}")
        keep = keep or not figures["consistent"]
        return 0 if figures["consistent"] else 1
    except KeyboardInterrupt:
        print("bench.cluster: interrupted; every process stopped", file=sys.stderr)
        keep = True
        return 130
    except (ClusterError, TestnetError, LoadError) as exc:
        print(f"bench.cluster: {exc}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if keep and any(workdir.iterdir()):
            print(f"bench.cluster: kept {workdir} (node logs in testnet/node<i>/node.log)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
