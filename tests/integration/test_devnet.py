"""``creditnet devnet``: starts the consortium, commits sample data, stops every node on Ctrl-C."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.testnet import create_testnet
from tests.integration.cluster import free_base_port

pytestmark = [pytest.mark.integration]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_devnet_commits_shows_status_and_ctrl_c_stops_every_node(tmp_path: Path) -> None:
    base = free_base_port(4, random.Random(time.time_ns()))
    net = tmp_path / "devnet"
    create_testnet(net, 4, base_port=base)
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "devnet", "--dir", str(net), "--records", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
            if "Ctrl-C stops every node" in line:
                break
        text = "\n".join(lines)
        assert "Ctrl-C stops every node" in text, text
        tips = {
            tuple(ln.split()[i] for i in (4, 6)) for ln in lines if ln.strip().startswith("node")
        }
        assert len(tips) == 1, text  # one height and one app hash on every node
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert "all nodes stopped" in rest, rest
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # No node is left behind: every port is free again and every data directory unlocked.
    for i in range(4):
        for off in range(3):
            assert _port_free(base + 10 * i + off), f"port {base + 10 * i + off} still bound"
