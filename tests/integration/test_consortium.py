"""A real 4-node consortium on 127.0.0.1: commits, crashes, restarts, metrics.

Every test starts real ``creditnet run`` processes from a fresh ``creditnet testnet`` directory,
bounds each wait with a deadline, and stops every process it started (the fixture's finally).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from node.config import load_config
from protocol.crypto import peer_id
from tests.integration.cluster import Cluster, get_text, http, signed_slots

pytestmark = [pytest.mark.integration]

REQUIRED_METRICS = {
    "creditnet_consensus_height",
    "creditnet_consensus_view",
    "creditnet_consensus_view_changes",
    "creditnet_consensus_block_interval_seconds",
    "creditnet_consensus_commit_latency_seconds",
    "creditnet_consensus_txs_committed",
    "creditnet_consensus_mempool_size",
    "creditnet_consensus_peers",
    "creditnet_consensus_p2p_messages",
    "creditnet_consensus_p2p_bad_messages",
    "creditnet_consensus_sync_syncing",
    "creditnet_consensus_suspicions",
    "creditnet_consensus_block_stage_seconds",
    "creditnet_query_stage_seconds",
    "creditnet_api_connections",
    "creditnet_api_connections_refused",
    "process_resident_memory_bytes",
    "process_cpu_seconds",
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "net", 4, seed=int(time.time()))
    print(f"cluster base port {c.base_port}")
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def metric_families(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Parse a /metrics page with prometheus-client's own parser: family -> labels -> value."""
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(get_text(url)):
        for s in fam.samples:
            out.setdefault(fam.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def stage_counts(url: str, family: str) -> dict[str, float]:
    """How many observations each stage of a stage histogram has (its ``_count`` samples)."""
    return {
        s.labels["stage"]: s.value
        for fam in text_string_to_metric_families(get_text(url))
        if fam.name == family
        for s in fam.samples
        if s.name == family + "_count"
    }


class Load:
    """Background client load: batches to the given nodes, remembering what was committed."""

    def __init__(self, cluster: Cluster, nodes: list[int], batch: int = 50) -> None:
        self.cluster, self.nodes, self.batch = cluster, nodes, batch
        self.committed: dict[str, int] = {}
        self.commit_times: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in nodes]
        self._signer = 0

    def _run(self, node: int) -> None:
        while not self._stop.is_set():
            with self._lock:
                signer = self._signer % len(self.cluster.nodes)
                self._signer += 1
                txs = self.cluster.commitment_txs(signer, self.batch)
            try:
                code, body = self.cluster.submit(node, txs)
            except OSError:
                self.errors += 1
                self._stop.wait(0.05)  # back off; wakes at once when stopped
                continue
            if code != 200:
                self.errors += 1
                self._stop.wait(0.05)  # back off; wakes at once when stopped
                continue
            now = time.monotonic()
            with self._lock:
                for r in body["results"]:
                    if r.get("status") == "committed":
                        self.committed[r["hash"]] = r["height"]
                        self.commit_times.append(now)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


def test_txs_sent_to_any_node_commit_on_all_with_one_app_hash(cluster: Cluster) -> None:
    for i in range(4):
        code, body = cluster.submit(i, cluster.commitment_txs(i, 20))
        assert code == 200, body
        assert all(r["status"] == "committed" and r["ok"] for r in body["results"]), body
    height, _app_hash = cluster.wait_same_tip([0, 1, 2, 3], 1)
    assert height >= 1
    # Each node serves the same blocks.
    blocks = [http(f"{n.api}/v1/blocks/{height}")[1] for n in cluster.nodes]
    assert len({b["hash"] for b in blocks}) == 1
    assert blocks[0]["certificate"]["signers"] and len(blocks[0]["certificate"]["signers"]) >= 3
    # A committed tx is found on every node.
    some = blocks[0]["tx_hashes"][0]
    for n in cluster.nodes:
        code, tx = http(f"{n.api}/v1/txs/{some}")
        assert code == 200 and tx["status"] == "committed" and tx["height"] == height


def test_metrics_of_every_node_parse_and_carry_the_required_names(cluster: Cluster) -> None:
    cluster.submit(1, cluster.commitment_txs(1, 10))
    cluster.wait_same_tip([0, 1, 2, 3], 1)
    for node in cluster.nodes:
        fams = metric_families(node.metrics)
        missing = REQUIRED_METRICS - set(fams)
        assert not missing, f"node{node.index} lacks {sorted(missing)}"
        assert fams["creditnet_consensus_height"][()] >= 1
        assert fams["creditnet_consensus_peers"][()] == 3
        # every committed block went through each stage here; a replica also pre-checked the
        # proposals (the primary makes them)
        stages = stage_counts(node.metrics, "creditnet_consensus_block_stage_seconds")
        assert stages["commit"] >= fams["creditnet_consensus_height"][()], stages
        executed = fams["creditnet_consensus_executed_height"][()]
        assert stages["execute"] >= executed and stages["store"] >= executed, stages
        assert (stages["precheck"] >= 1) == (fams["creditnet_consensus_is_primary"][()] == 0)


def test_api_refuses_bad_input_with_clear_errors(cluster: Cluster) -> None:
    api = cluster.nodes[0].api
    code, body = http(api + "/v1/txs", {"txs": ["zz"]})
    assert code == 400 and body["error"] == "bad_hex", body
    code, body = http(api + "/v1/txs", {"tx": "00ff"})
    assert code == 400 and body["error"] == "malformed" and body["detail"], body
    good = cluster.commitment_txs(0, 1)[0]
    forged = good[:-1] + bytes([good[-1] ^ 1])
    code, body = http(api + "/v1/txs", {"tx": forged.hex()})
    assert code == 422 and body["error"] == "bad_signature", body
    code, body = http(api + "/v1/txs", {"nope": 1})
    assert code == 400 and body["error"] == "invalid_request", body
    code, body = http(api + "/v1/blocks/abc")
    assert code == 400 and body["error"] == "bad_height"
    code, body = http(api + "/v1/blocks/999999")
    assert code == 404 and body["error"] == "no_block"
    code, body = http(api + "/v1/txs/" + "00" * 32)
    assert code == 404 and body["error"] == "unknown_tx"
    code, body = http(api + "/v1/nowhere")
    assert code == 404 and body["error"] == "not_found"
    code, spec = http(api + "/openapi.json")
    assert code == 200 and "/v1/txs" in spec["paths"] and "/v1/status" in spec["paths"]
    # The node is unharmed.
    code, body = cluster.submit(0, [good])
    assert code == 200 and body["results"][0]["status"] == "committed"


def test_an_agency_at_its_connection_limit_answers_503_busy_and_keeps_serving(
    cluster: Cluster,
) -> None:
    node = cluster.nodes[3]
    cluster.terminate(3)
    config = node.home / "config.toml"
    text = config.read_text("utf-8")
    assert "\nmax_connections = 1_000\n" in text
    config.write_text(text.replace("\nmax_connections = 1_000\n", "\nmax_connections = 2\n"))
    cluster.start(3)
    cluster.wait_api(3)

    def api_connections() -> float:
        return metric_families(node.metrics)["creditnet_api_connections"][()]

    # wait_api's own connections are closed by the node a moment after their answers
    cluster.wait_for(lambda: api_connections() == 0, 10, "node3's API connections closed")
    host, port = node.api.removeprefix("http://").rsplit(":", 1)
    request = f"GET /v1/status HTTP/1.1\r\nhost: {host}\r\n\r\n".encode()
    kept = [socket.create_connection((host, int(port)), timeout=10) for _ in range(2)]
    try:
        for sock in kept:  # answered, and kept open (HTTP/1.1 keep-alive)
            sock.sendall(request)
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        with socket.create_connection((host, int(port)), timeout=10) as third:
            third.sendall(request)
            answer = b""
            while chunk := third.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert json.loads(body)["error"] == "busy"
        fams = metric_families(node.metrics)
        assert fams["creditnet_api_connections"][()] == 2
        assert fams["creditnet_api_connections_refused"][()] == 1
    finally:
        for sock in kept:
            sock.close()
    # The kept connections closed, the agency serves new clients (and its peers never left).
    cluster.wait_for(lambda: http(node.api + "/v1/status")[0] == 200, 10, "node3 serving")
    cluster.submit(3, cluster.commitment_txs(3, 5))
    cluster.wait_same_tip([0, 1, 2, 3], 1)


@pytest.mark.slow
def test_sigkill_primary_under_load_commits_resume_after_a_view_change(cluster: Cluster) -> None:
    timeout_s = cluster.genesis.consensus.view_change_timeout_ms / 1000
    assert cluster.status(1)["primary"] == 0
    with Load(cluster, [1, 2, 3]) as load:
        cluster.wait_for(lambda: len(load.committed) >= 500, 60, "500 txs committed")
        cluster.kill(0)
        killed_at = time.monotonic()
        cluster.wait_for(
            lambda: any(t > killed_at for t in load.commit_times) and cluster.status(1)["view"] > 0,
            60,
            "commits after the primary was killed",
        )
        resumed = min(t for t in load.commit_times if t > killed_at) - killed_at
        before = len(load.committed)
        cluster.wait_for(lambda: len(load.committed) >= before + 300, 60, "300 more commits")
    print(
        f"commits resumed {resumed:.2f} s after SIGKILL of the primary "
        f"(view-change timeout {timeout_s:.1f} s)"
    )
    # Bound: the view-change timeout, plus a block interval, plus scheduling slack on 2 cores.
    assert resumed <= timeout_s * 2 + 2.0
    cluster.wait_same_tip([1, 2, 3], 1)


@pytest.mark.slow
def test_a_transaction_sent_to_one_agency_after_the_primary_died_commits(cluster: Cluster) -> None:
    """Transactions go to the primary only. With no block in flight when it dies, the other
    replicas have nothing pending and no view timer running: they start one when the agency that
    admitted the transaction sends it to everyone, half a second after it went to the primary."""
    timeout_s = cluster.genesis.consensus.view_change_timeout_ms / 1000
    assert cluster.status(1)["primary"] == 0
    code, body = cluster.submit(1, cluster.commitment_txs(1, 5))
    assert code == 200, body
    cluster.wait_same_tip([0, 1, 2, 3], 1)
    cluster.kill(0)
    started = time.monotonic()
    code, body = cluster.submit(1, cluster.commitment_txs(1, 5))
    took = time.monotonic() - started
    assert code == 200 and all(r["status"] == "committed" for r in body["results"]), body
    print(
        f"a transaction sent after SIGKILL of an idle primary committed in {took:.2f} s "
        f"(view-change timeout {timeout_s:.1f} s)"
    )
    # The re-send (0.5-0.75 s), the view timeout, the new primary's block: ~2.8 s here; a first
    # re-send only after 2 s (as for lost batches) took 4.2 s.
    assert took <= timeout_s + 1.5
    cluster.wait_same_tip([1, 2, 3], 1)


@pytest.mark.slow
def test_killed_replica_restarts_catches_up_and_takes_part_again(cluster: Cluster) -> None:
    cluster.submit(0, cluster.commitment_txs(0, 20))
    cluster.kill(3)
    sent = 0
    while sent < 1000:
        code, body = cluster.submit(sent // 100 % 3, cluster.commitment_txs(sent // 100 % 3, 100))
        assert code == 200, body
        sent += 100
    height, _ = cluster.wait_same_tip([0, 1, 2], 1)
    cluster.start(3)
    cluster.wait_api(3)
    h3, _app3 = cluster.wait_same_tip([0, 1, 2, 3], height, timeout=90)
    assert h3 >= height
    # Take part again: with node 2 down, 0, 1 and 3 must commit together (quorum 3 of 4).
    cluster.kill(2)
    code, body = cluster.submit(0, cluster.commitment_txs(0, 30))
    assert code == 200 and all(r["status"] == "committed" for r in body["results"]), body
    cluster.wait_same_tip([0, 1, 3], h3 + 1)


@pytest.mark.slow
def test_sigterm_all_mid_load_then_restart_keeps_every_committed_tx(cluster: Cluster) -> None:
    with Load(cluster, [0, 1, 2, 3], batch=40) as load:
        cluster.wait_for(lambda: len(load.committed) >= 400, 60, "400 txs committed")
        stop_times = [cluster.terminate(i) for i in range(4)]
    assert max(stop_times) < 5.0, f"clean stop took {max(stop_times):.2f} s"
    seen = dict(load.committed)
    for i in range(4):
        cluster.start(i)
    for i in range(4):
        cluster.wait_api(i)
    height, _ = cluster.wait_same_tip([0, 1, 2, 3], max(seen.values()))
    # Every tx a client saw committed is on every node, at the height it was reported at.
    sample = list(seen.items())[:: max(1, len(seen) // 200)]
    for node in cluster.nodes:
        for h, at in sample:
            code, tx = http(f"{node.api}/v1/txs/{h}")
            assert code == 200 and tx["status"] == "committed" and tx["height"] == at, (h, tx)
    # One chain: every node holds the same block at every height.
    for hh in range(1, height + 1, max(1, height // 25)):
        hashes = {http(f"{n.api}/v1/blocks/{hh}")[1]["hash"] for n in cluster.nodes}
        assert len(hashes) == 1, f"nodes disagree at height {hh}"
    # And the chain still grows.
    code, body = cluster.submit(2, cluster.commitment_txs(2, 10))
    assert code == 200 and all(r["status"] == "committed" for r in body["results"])
    # No replica signed two values for one slot, across the stop and restart: every consensus
    # message each node sent (before and after) is in its sent log.
    for node in cluster.nodes:
        votes, conflicts = signed_slots(node.home / "sent.log")
        assert votes >= 6, f"node{node.index} logged only {votes} signed slots"
        assert not conflicts, f"node{node.index} signed twice: {conflicts[:5]}"


def _bad_peer(cluster: Cluster, mode: str, target: int, key: Path | None = None) -> dict[str, Any]:
    node = cluster.nodes[target]
    cfg = load_config(node.home / "config.toml")
    addr = f"{cfg.p2p.listen}/p2p/{peer_id(node.identity.public_key)}"
    args = [sys.executable, "-m", "tests.integration.bad_peer", mode, addr]
    if key is not None:
        args += ["--key", str(key)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    print(mode, result)
    return result


def _counter(
    fams: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    return fams.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


@pytest.mark.slow
def test_outsider_plaintext_and_garbage_peers_are_refused_and_the_cluster_keeps_committing(
    cluster: Cluster,
) -> None:
    # Validator 3 turns Byzantine: its daemon stops and its key speaks garbage instead.
    cluster.kill(3)
    key3 = cluster.nodes[3].home / "node.key"
    outsider = _bad_peer(cluster, "outsider", 0)
    plaintext = _bad_peer(cluster, "plaintext", 0)
    byzantine = _bad_peer(cluster, "validator", 0, key3)
    assert not plaintext["connected"], plaintext
    assert all("answered" not in v for s in outsider["streams"] for v in s.values()), outsider
    fams = metric_families(cluster.nodes[0].metrics)
    bad = "creditnet_consensus_p2p_bad_messages"
    assert _counter(fams, bad, reason="unknown_peer") >= 1
    assert _counter(fams, bad, reason="malformed") >= 1
    assert _counter(fams, bad, reason="oversized") >= 1
    suspicions = sum(fams.get("creditnet_consensus_suspicions", {}).values())
    assert suspicions >= 1, byzantine
    # The node answered the well-formed frame with an ack and kept running.
    assert any("answered" in v for s in byzantine["streams"] for v in s.values()), byzantine
    code, body = cluster.submit(1, cluster.commitment_txs(1, 20))
    assert code == 200 and all(r["status"] == "committed" for r in body["results"]), body
    cluster.wait_same_tip([0, 1, 2], 1)
    assert all(cluster.nodes[i].running for i in range(3))


def test_status_command_and_operator_mistakes_give_one_line_errors(cluster: Cluster) -> None:
    node0 = cluster.nodes[0]
    out = subprocess.run(
        [sys.executable, "-m", "node", "status", "--node", node0.api],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["chain_id"] == cluster.chain_id and status["peers"] == 3
    # A second daemon on the same home: the data directory is locked.
    out = subprocess.run(
        [sys.executable, "-m", "node", "run", "--home", str(node0.home)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "is in use by process" in out.stderr, out.stderr
    # A copy of the home (its own data directory) on ports in use: named, not a traceback.
    copy = cluster.root / "copy"
    shutil.copytree(node0.home, copy, ignore=shutil.ignore_patterns("data", "node.log"))
    out = subprocess.run(
        [sys.executable, "-m", "node", "run", "--home", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "cannot start the node" in out.stderr, out.stderr[-2000:]
    # The cluster is unharmed.
    code, body = cluster.submit(1, cluster.commitment_txs(1, 5))
    assert code == 200 and all(r["status"] == "committed" for r in body["results"]), body
