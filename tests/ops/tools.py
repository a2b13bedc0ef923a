"""Helpers of the operations-kit tests: Debian tools installed on demand, a real Prometheus
process, and reading metric and label names out of PromQL and a node's /metrics.

The tests need Prometheus's own binaries (``promtool``, ``prometheus``) and ``systemd-analyze``.
They are installed from Debian with apt-get when missing (CI runs as root on a Debian machine); a
tool that cannot be installed is a test failure naming the command and its output, never a skip,
so a green run always means the files were checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from node.metrics import NodeMetrics

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"

T = TypeVar("T")


class ToolInstallError(RuntimeError):
    """A tool the tests need is missing and could not be installed; the message says why."""


def _run(argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` non-interactively, stdout and stderr together; ToolInstallError on timeout."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        command = " ".join(argv)
        raise ToolInstallError(f"`{command}` did not finish within {timeout:.0f} s") from None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def apt_install(package: str, *, timeout: float = 600.0) -> None:
    """``apt-get install -y --no-install-recommends package``; after a failure (a stale or
    missing package list) ``apt-get update`` and one more try. Raises ToolInstallError."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise ToolInstallError(
            f"apt-get not found: install Debian's {package} package by other means "
            "(or put its tools on PATH)"
        )
    install = [apt, "install", "-y", "--no-install-recommends", package]
    if _run(install, timeout).returncode == 0:
        return
    update = _run([apt, "update"], timeout)
    retry = _run(install, timeout)
    if retry.returncode != 0:
        not_root = "" if os.geteuid() == 0 else " (apt-get needs root; this is not root)"
        raise ToolInstallError(
            f"cannot install Debian package {package}{not_root}: `apt-get update` exited "
            f"{update.returncode}, then `{' '.join(install[1:])}` exited {retry.returncode}:\n"
            f"{_tail(update.stdout)}\n{_tail(retry.stdout)}"
        )


def ensure_debian_tools(
    tools: Sequence[str], package: str, *, timeout: float = 600.0
) -> dict[str, str]:
    """The paths of ``tools``, installing Debian's ``package`` first if any is not on PATH."""
    if any(shutil.which(t) is None for t in tools):
        apt_install(package, timeout=timeout)
    found = {t: shutil.which(t) for t in tools}
    missing = [t for t, path in found.items() if path is None]
    if missing:
        raise ToolInstallError(
            f"Debian package {package} is installed but {', '.join(missing)} is not on PATH"
        )
    return {t: str(path) for t, path in found.items()}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def poll(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Call ``check`` until it returns something other than None (or False) and return that;
    AssertionError naming ``what`` and the last exception after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: str = "never checked"
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
            last = f"last result {value!r}"
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            last = f"last error {exc!r}"
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last})")
        time.sleep(interval)


# --- a Prometheus server --------------------------------------------------------------------


@dataclass
class PrometheusServer:
    """A running ``prometheus`` process on 127.0.0.1 and its HTTP API."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        text = self.log.read_text("utf-8", errors="replace") if self.log.exists() else ""
        return _tail(text, lines)

    def get(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>``; its ``data`` (AssertionError if Prometheus reports an error)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise AssertionError(f"prometheus {path} {params}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        data = self.get("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result


@contextlib.contextmanager
def running_prometheus(
    binary: str, config: Path, workdir: Path, *, timeout: float = 60.0
) -> Iterator[PrometheusServer]:
    """Start ``prometheus`` on ``config`` with its data under ``workdir``; yield it once ready
    (``/-/ready``); always stop it (SIGTERM, SIGKILL after 10 s)."""
    log = workdir / "prometheus.log"
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = PrometheusServer(f"http://127.0.0.1:{port}", proc, log)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {proc.returncode}:\n{server.log_tail()}")
            with urllib.request.urlopen(server.url + "/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)

        poll(ready, timeout, "prometheus to be ready")
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- metric and label names ------------------------------------------------------------------

PROMQL_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers that are not functions, keywords,
    label names (in matchers and grouping clauses), numbers, durations or variables."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for m in _IDENT.finditer(text):
        if text[m.end() :].lstrip().startswith("("):
            continue  # a function call
        if m.group().lower() not in PROMQL_KEYWORDS:
            names.add(m.group())
    return names


def promql_label_names(expr: str) -> set[str]:
    """The label names an expression uses in matchers and in by/without/on/ignoring/group_*."""
    text = _STRING.sub('""', expr)
    labels: set[str] = set()
    for block in re.findall(r"\{([^}]*)\}", text):
        labels.update(_MATCHER.findall(block))
    for _, inner in _GROUPING.findall(text):
        labels.update(w.strip() for w in inner.split(",") if w.strip())
    return labels


def exposed_names(metrics_text: str) -> set[str]:
    """Every series name a /metrics page declares: its samples' names, plus the names each
    declared family has by its type even before a labelled child exists (a counter's _total and
    _created, a histogram's _bucket, _sum, _count and _created)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def declared_label_names() -> set[str]:
    """The label names of every metric a node declares (node/metrics.py), observed or not,
    plus ``le`` of the histograms."""
    metrics = NodeMetrics(process=False)
    labels: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels.update(getattr(value, "_labelnames", ()))
            if isinstance(value, Histogram):
                labels.add("le")
    return labels
