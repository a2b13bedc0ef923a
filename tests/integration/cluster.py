"""A real local consortium for integration tests: ``creditnet testnet`` + ``creditnet run``.

Each node is its own process (``python -m node run --home ...``) on 127.0.0.1, with real libp2p,
LevelDB files, HTTP and metrics. The cluster finds a free port range, waits on events (an API
answering, a height reached) with deadlines instead of sleeping, and always stops every process it
started (``close`` kills what did not stop within the deadline).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.config import load_config, split_host_port
from node.keyfile import load_key
from node.testnet import create_testnet
from protocol.block import CommitVote
from protocol.codec import CodecError, decode, encode
from protocol.consensus.journal import MAX_CONSENSUS_MESSAGE_BYTES
from protocol.consensus.messages import Prepare, PrePrepare
from protocol.crypto import Identity, h256
from protocol.genesis import loads_genesis
from protocol.transactions import CommitmentEntry, RecordCommitment, Transaction


class ClusterError(AssertionError):
    """The cluster did not reach what a test waited for; the message says what and where."""


EPHEMERAL_SPAN = 2200
"""Room kept above a base port: the nodes' ports and the WAN proxy's (base + 2000 + i*n + j)."""


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out to outgoing connections (32768 if not told)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_base_port(nodes: int, rng: random.Random) -> int:
    """A base port B such that B .. B+10*nodes are free on 127.0.0.1 (checked by binding),
    below the kernel's ephemeral range with the proxy's ports: a port free when checked but in
    that range can be taken by any outgoing connection (a node dialling a peer) before the node
    that should listen on it binds it -- seen as "Address already in use" in a test run."""
    high = max(20010, _ephemeral_low() - EPHEMERAL_SPAN - 10 * nodes)
    for _ in range(200):
        base = rng.randrange(20000, high, 10)
        socks = []
        try:
            for i in range(nodes):
                for off in range(3):
                    s = socket.socket()
                    socks.append(s)
                    s.bind(("127.0.0.1", base + 10 * i + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise ClusterError("no free port range found")


def http(url: str, body: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
    """(status, decoded JSON) of a GET, or a POST of ``body`` as JSON."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw[:1] in (b"{", b"[") else raw.decode()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw)
        except ValueError:
            return exc.code, raw.decode(errors="replace")


def get_text(url: str, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return str(resp.read().decode())


@dataclass
class NodeProc:
    index: int
    home: Path
    api: str
    metrics: str
    identity: Identity
    proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    """``n`` validators under ``root``; start/stop/kill them and talk to their APIs."""

    def __init__(self, root: Path, n: int = 4, *, seed: int = 0, sent_logs: bool = True) -> None:
        self.root = root
        self.sent_logs = sent_logs
        self.rng = random.Random(seed)
        self.base_port = free_base_port(n, self.rng)
        create_testnet(root, n, base_port=self.base_port)
        self.nodes: list[NodeProc] = []
        for i in range(n):
            home = root / f"node{i}"
            cfg = load_config(home / "config.toml")
            host, port = split_host_port(cfg.api.listen)
            mhost, mport = split_host_port(cfg.metrics.listen)
            self.nodes.append(
                NodeProc(
                    i,
                    home,
                    f"http://{host}:{port}",
                    f"http://{mhost}:{mport}/metrics",
                    load_key(cfg.resolve(cfg.node_key)),
                )
            )
        self.genesis = loads_genesis((root / "node0" / "genesis.json").read_text("utf-8"))
        self.chain_id = self.genesis.chain_id
        self._nonce = 0

    # --- processes ------------------------------------------------------------------------

    def start(self, i: int) -> None:
        node = self.nodes[i]
        if node.running:
            return
        log = open(node.home / "node.log", "ab")  # noqa: SIM115 - owned by the child
        env = dict(os.environ)
        if self.sent_logs:
            env["CREDITNET_SENT_LOG"] = str(node.home / "sent.log")
        node.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "run", "--home", str(node.home)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()

    def start_all(self, timeout: float = 60.0) -> None:
        for i in range(len(self.nodes)):
            self.start(i)
        for i in range(len(self.nodes)):
            self.wait_api(i, timeout)
        self.wait_for(
            lambda: all(self.status(i)["peers"] == len(self.nodes) - 1 for i in self.live()),
            timeout,
            "all peers connected",
        )

    def wait_api(self, i: int, timeout: float = 60.0) -> None:
        def up() -> bool:
            node = self.nodes[i]
            if not node.running:
                raise ClusterError(f"node{i} exited: {self.log_tail(i)}")
            try:
                return http(node.api + "/v1/status", timeout=2)[0] == 200
            except OSError:
                return False

        self.wait_for(up, timeout, f"node{i} API up")

    def kill(self, i: int) -> None:
        """SIGKILL node ``i`` (no clean-up at all: a crash)."""
        node = self.nodes[i]
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)

    def terminate(self, i: int, timeout: float = 10.0) -> float:
        """SIGTERM node ``i``; returns how long it took to exit (raises if it did not)."""
        node = self.nodes[i]
        assert node.proc is not None
        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        try:
            node.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
            raise ClusterError(f"node{i} did not stop within {timeout} s of SIGTERM") from None
        return time.monotonic() - started

    def close(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()

    def live(self) -> list[int]:
        return [n.index for n in self.nodes if n.running]

    def log_tail(self, i: int, lines: int = 15) -> str:
        path = self.nodes[i].home / "node.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text("utf-8", errors="replace").splitlines()[-lines:])

    # --- waiting --------------------------------------------------------------------------

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``cond`` until true; returns the time it took. Raises ClusterError on timeout."""
        started = time.monotonic()
        delay = 0.02
        while True:
            try:
                if cond():
                    return time.monotonic() - started
            except (OSError, KeyError):
                pass
            if time.monotonic() - started > timeout:
                logs = "\n".join(f"--- node{i}\n{self.log_tail(i)}" for i in range(len(self.nodes)))
                raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def status(self, i: int) -> dict[str, Any]:
        code, body = http(self.nodes[i].api + "/v1/status", timeout=5)
        if code != 200:
            raise ClusterError(f"node{i} status: HTTP {code} {body}")
        assert isinstance(body, dict)
        return body

    def wait_same_tip(
        self, nodes: list[int], min_height: int, timeout: float = 60.0
    ) -> tuple[int, str]:
        """Wait until ``nodes`` report one height >= min_height and one app hash."""
        tip: list[tuple[int, str]] = []

        def same() -> bool:
            tips = {(s["height"], s["app_hash"]) for s in (self.status(i) for i in nodes)}
            if len(tips) == 1:
                (h, a) = next(iter(tips))
                if h >= min_height:
                    tip[:] = [(h, a)]
                    return True
            return False

        self.wait_for(same, timeout, f"nodes {nodes} at one tip >= {min_height}")
        return tip[0]

    # --- transactions ---------------------------------------------------------------------

    def commitment_txs(self, signer: int, count: int) -> list[bytes]:
        """``count`` distinct record-commitment transactions signed by agency ``signer``."""
        ident = self.nodes[signer].identity
        out = []
        for _ in range(count):
            self._nonce += 1
            ref = h256(b"test-ref" + self._nonce.to_bytes(8, "big") + ident.public_key)
            body = RecordCommitment((CommitmentEntry(ref, h256(b"digest" + ref)),))
            out.append(encode(Transaction.sign(ident, self.chain_id, body, self._nonce)))
        return out

    def submit(self, i: int, txs: list[bytes], *, wait: bool = True) -> tuple[int, Any]:
        url = self.nodes[i].api + "/v1/txs" + ("?wait=commit" if wait else "")
        return http(url, {"txs": [t.hex() for t in txs]}, timeout=60)


def signed_slots(log: Path) -> tuple[int, list[str]]:
    """Read a node's sent-message log; return (votes seen, conflicts): a conflict is one
    replica signing two different digests for one (kind, view, height)."""
    data = log.read_bytes() if log.exists() else b""
    seen: dict[tuple[str, int, int], bytes] = {}
    conflicts: list[str] = []
    pos = 0
    while pos + 4 <= len(data):
        n = int.from_bytes(data[pos : pos + 4], "big")
        body = data[pos + 4 : pos + 4 + n]
        pos += 4 + n
        if len(body) < n:
            break  # the last record of a killed process may be cut short
        try:
            msg = decode(body, max_bytes=MAX_CONSENSUS_MESSAGE_BYTES)
        except CodecError:
            continue
        if isinstance(msg, PrePrepare):
            key, digest = ("pre-prepare", msg.view, msg.seq), msg.digest
        elif isinstance(msg, Prepare):
            key, digest = ("prepare", msg.view, msg.seq), msg.digest
        elif isinstance(msg, CommitVote):
            key, digest = ("commit", msg.view, msg.height), msg.block_hash
        else:
            continue
        if seen.setdefault(key, digest) != digest:
            conflicts.append(f"{key}: {seen[key].hex()[:12]} and {digest.hex()[:12]}")
    return len(seen), conflicts
