"""``creditnet devnet``: starts the consortium, loads sample records at every agency, writes
subjects.json, stops every node on Ctrl-C -- and does it again on the same directory."""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.testnet import create_testnet
from protocol.pseudonym import normalise
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


def run_devnet(net: Path, records: int) -> list[str]:
    """Run ``creditnet devnet`` until it is up, stop it with Ctrl-C; its output lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "devnet", "--dir", str(net), "--records", str(records)],
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
        # The paper's two flows, shown at agency 0.
        assert any("mode 1 query" in ln and ": mode 1, sources [0]" in ln for ln in lines), text
        assert any("mode 2 query" in ln and ": mode 2, sources [" in ln for ln in lines), text
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
        assert "all nodes stopped" in rest, rest
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return lines


def stored_per_agency(lines: list[str]) -> dict[str, int]:
    """``agency-<i>`` -> records stored, from lines like ``agency-0 (node0): 7 records stored``."""
    out = {}
    for ln in lines:
        m = re.match(r"\s*(agency-\d+) \(node\d+\): (\d+) records stored .* at height \d+", ln)
        if m:
            out[m[1]] = int(m[2])
    return out


def test_devnet_loads_sample_records_shows_status_and_ctrl_c_stops_every_node(
    tmp_path: Path,
) -> None:
    base = free_base_port(4, random.Random(time.time_ns()))
    net = tmp_path / "devnet"
    create_testnet(net, 4, base_port=base)
    agencies = [f"agency-{i}" for i in range(4)]

    lines = run_devnet(net, 20)
    text = "\n".join(lines)
    tips = {tuple(ln.split()[i] for i in (4, 6)) for ln in lines if ln.strip().startswith("node")}
    assert len(tips) == 1, text  # one height and one app hash on every node
    stored = stored_per_agency(lines)
    assert sorted(stored) == agencies and all(n > 0 for n in stored.values()), text
    assert sum(stored.values()) == 20, text
    assert "refused" not in text, text

    doc = json.loads((net / "subjects.json").read_text(encoding="utf-8"))
    subjects = doc["subjects"]
    assert len(subjects) == 3, doc
    for s in subjects:
        assert normalise(s["national_id"]) == s["national_id"]  # a valid resident ID
        assert 2 <= len(s["agencies"]) <= 3 and set(s["agencies"]) <= set(agencies), s
        assert s["records"] == sum(s["agencies"].values()) > 0, s
        assert "pseudonym" not in json.dumps(s)
    assert sum(s["records"] for s in subjects) == 20
    # Each agency's stored count agrees with the file.
    assert {a: sum(s["agencies"].get(a, 0) for s in subjects) for a in agencies} == stored

    # No node is left behind: every port is free again and every data directory unlocked.
    for i in range(4):
        for off in range(3):
            assert _port_free(base + 10 * i + off), f"port {base + 10 * i + off} still bound"

    # Re-running on the same directory loads the same records again (same subjects, same counts).
    again = run_devnet(net, 20)
    assert stored_per_agency(again) == stored, "\n".join(again)
    assert json.loads((net / "subjects.json").read_text(encoding="utf-8")) == doc
    heights = {int(ln.split()[4]) for ln in again if ln.strip().startswith("node")}
    assert len(heights) == 1 and heights.pop() > int(next(iter(tips))[0]), "\n".join(again)
