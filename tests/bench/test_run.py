"""The benchmark runner (bench.run), its workload drivers (bench.workloads) and its reports
(bench.report): pure parts and fake servers here; one real 4-node run in the integration test
at the end."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import tomllib
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import trio

from bench import report
from bench.cluster import (
    Sampler,
    host_cpu_sample,
    host_cpu_summary,
    parse_metrics,
    stage_means,
)
from bench.load import commit_batches
from bench.results_io import verify_us
from bench.run import (
    PROXY_PORT_OFFSET,
    latency_by_steal,
    metrics_delta,
    nearest_rank,
    params_from,
    parse_sizes,
    parser,
    per_kind,
    route_through_proxy,
)
from bench.wan import WanParams
from bench.workloads import (
    CommitStream,
    closed_loop,
    combined_report,
    open_loop,
    parse_mix,
    samples_doc,
    weighted_order,
)
from node.testnet import create_testnet
from tests.bench.test_load import committed_answer, serve, target

ROOT = Path(__file__).resolve().parents[2]


# --- arguments ----------------------------------------------------------------------------------


def test_parse_mix_normalises_and_refuses_nonsense() -> None:
    assert parse_mix("commit=8,query1=1.5,query2=0.5") == {
        "commit": 0.8,
        "query1": 0.15,
        "query2": 0.05,
    }
    assert parse_mix("commit=1,query2=0") == {"commit": 1.0}
    for bad in ("commit", "tx=1", "commit=1,commit=2", "commit=-1", "commit=0", "commit=x"):
        with pytest.raises(ValueError, match="--mix"):
            parse_mix(bad)


def test_runner_arguments() -> None:
    ap = parser()
    p = params_from(ap.parse_args(["--workload", "tx"]), ap)
    assert (p.rate, p.concurrency, p.load_workload) == (None, 8, "commit")
    p = params_from(ap.parse_args(["--workload", "mixed", "--nodes", "4,7"]), ap)
    assert p.sizes == (4, 7) and p.rate == 150.0 and p.mix == {
        "commit": 0.8,
        "query1": 0.15,
        "query2": 0.05,
    }
    args = p.load_args(Path("s.json"))
    assert args[:2] == ["--workload", "mixed"] and "--mix" in args and "--rate" in args
    assert parse_sizes("4,7,10,16") == (4, 7, 10, 16)
    for bad in (
        ["--rate", "10", "--concurrency", "2"],
        ["--nodes", "4,x"],
        ["--nodes", "0"],
        ["--latency-ms", "5", "--jitter-ms", "6"],
        ["--loss", "1"],
        ["--mix", "commit=1"],  # only for mixed
        ["--workload", "query1", "--duration", "300"],
        ["--workload", "query1", "--subjects", "0"],
        ["--workload", "query2", "--nodes", "1"],
        ["--nodes", "1", "--latency-ms", "5"],
    ):
        with pytest.raises(SystemExit) as exc:
            params_from(ap.parse_args(bad), ap)
        assert exc.value.code == 2, bad


def test_weighted_order_is_proportional_and_spread() -> None:
    picks = weighted_order([0.8, 0.15, 0.05], 100)
    assert [picks.count(i) for i in range(3)] == [80, 15, 5]
    assert weighted_order([1.0, 1.0], 4) == [0, 1, 0, 1]
    ones = [i for i, p in enumerate(picks) if p == 1]
    assert max(b - a for a, b in pairwise(ones)) <= 10  # spread (mean gap 6.7), not bunched


# --- the WAN proxy's wiring ---------------------------------------------------------------------


def test_route_through_proxy_rewrites_each_peer_to_its_own_link(tmp_path: Path) -> None:
    base = 29700
    create_testnet(tmp_path / "net", 4, base_port=base)
    links = route_through_proxy(tmp_path / "net", 4, base)
    assert len(links) == 12 and len({listen for listen, _ in links}) == 12
    for i in range(4):
        peers = tomllib.loads((tmp_path / "net" / f"node{i}" / "config.toml").read_text())[
            "p2p"
        ]["peers"]
        ports = sorted(int(a.split("/")[4]) for a in peers)
        want = sorted(base + PROXY_PORT_OFFSET + i * 4 + j for j in range(4) if j != i)
        assert ports == want
    assert {target_port for _, target_port in links} == {base + 10 * j for j in range(4)}
    assert WanParams().describe()["kind"] == "loopback"
    assert WanParams(latency_ms=20).describe()["kind"].startswith("delaying TCP proxy")


# --- drivers against fake servers ---------------------------------------------------------------


async def test_closed_loop_keeps_the_concurrency_and_stops_at_the_duration() -> None:
    accepted: list[int] = []
    in_flight = 0
    most = 0

    async def handler(body: bytes) -> tuple[bytes, bool]:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await trio.sleep(0.01)
        in_flight -= 1
        return committed_answer(body), False

    async with trio.open_nursery() as nursery:
        port = await serve(nursery, handler, accepted)
        stream = CommitStream([target(port)], 5)
        start = await closed_loop([(stream, 1.0)], 3, 0.3, timeout=5)
        nursery.cancel_scope.cancel()
    t = stream.tally
    assert most == 3  # never more than the concurrency in flight
    assert t.failed == 0 and t.committed == t.sent > 0 and t.committed % 5 == 0
    assert len(t.done) == len(t.latencies) == t.committed
    doc = samples_doc([stream], start)["commit"]
    assert len(doc["done_s"]) == t.committed and all(d >= 0 for d in doc["done_s"])


def test_a_closed_loop_past_its_presigned_batches_signs_the_next_ones_as_before() -> None:
    targets = [target(1), target(2)]
    live = CommitStream(targets, 5, seed=b"s")
    ahead = CommitStream(targets, 5, seed=b"s")
    ahead.presign(10, complete=False)  # two batches signed before the run
    for k in range(4):  # the same batches, whether signed before or as they are sent
        got, want = ahead.request(k), live.request(k)
        assert got is not None and want is not None and got.body == want.body
    assert ahead.presigned is not None and ahead.request(1) is ahead.presigned[1]
    exact = CommitStream(targets, 5, seed=b"s")
    exact.presign(10)  # open loop: the schedule ends with what was signed
    assert exact.request(2) is None


async def test_open_loop_runs_streams_side_by_side_and_reports_by_kind() -> None:
    accepted: list[int] = []

    async def handler(body: bytes) -> tuple[bytes, bool]:
        return committed_answer(body), False

    async with trio.open_nursery() as nursery:
        port = await serve(nursery, handler, accepted)
        targets = [target(port)]
        a = CommitStream(targets, 10, presigned=commit_batches(targets, 40, 10, b"a"))
        b = CommitStream(targets, 5, presigned=commit_batches(targets, 10, 5, b"b"))
        b.kind = "query1"  # (a second stream; only its label matters here)
        await open_loop([(a, 400.0), (b, 100.0)], timeout=5)
        nursery.cancel_scope.cancel()
    rep = combined_report("mixed", [a, b])
    assert (rep["sent"], rep["committed"], rep["failed"]) == (50, 50, 0)
    assert rep["by_kind"]["commit"]["committed"] == 40
    assert rep["by_kind"]["query1"]["committed"] == 10


# --- reports ------------------------------------------------------------------------------------


def fake_run(n: int) -> dict[str, Any]:
    samples = {"commit": {"done_s": [0.5, 1.5, 1.7], "latency_ms": [10.0, 20.0, 30.0]}}
    rep = {
        "workload": "commit",
        "sent": 3,
        "committed": 3,
        "failed": 0,
        "per_s": 1.5,
        "latency_ms": {"p50": 20.0, "p90": 30.0, "p99": 30.0, "max": 30.0},
    }
    node = {
        "cpu_pct": {"mean": 40.0, "max": 50.0},
        "main_thread_cpu_pct": {"mean": 30.0, "max": 40.0},
        "rss_mb": {"mean": 100.0, "max": 120.0},
        "height": 7,
        "mempool_max": 3,
        "metrics": {"mean_block_txs": 1.0},
        "metrics_delta": {"consensus_view_changes_total": 0.0},
    }
    return {
        "nodes": n,
        "ok": True,
        "error": None,
        "per_s": 1.5,
        "by_kind": per_kind(samples, rep, {"commit": {"failures": {"timeout": 1}}}),
        "consistent": True,
        "per_node": {f"node{i}": node for i in range(n)},
        "timeline": [{"t": float(t), "height": [t] * n} for t in range(3)],
    }


def test_the_machine_speed_probes_of_a_window() -> None:
    sampler = Sampler({}, [])
    sampler.speed_log = [(1.0, 90.0), (4.0, 55.0), (7.0, 60.0), (10.0, 52.0), (13.0, 99.0)]
    assert sampler.speed(3.0, 11.0) == {"min": 52.0, "p50": 55.0, "max": 60.0, "probes": 3}
    assert sampler.speed(20.0, 30.0)["probes"] == 0
    assert verify_us() is not None and 1.0 < verify_us() < 10_000.0  # type: ignore[operator]


def test_host_steal_and_idle_of_a_window() -> None:
    """Shares of /proc/stat's ticks between successive readings: the window's whole share, the
    worst second, and the seconds at >= 10 % steal; readings outside the window are left out."""
    # (steal, idle, total) ticks: 200 a second on 2 CPUs
    log = [
        (0.0, (0, 0, 0)),
        (1.0, (40, 100, 200)),  # before the window
        (2.0, (40, 180, 400)),  # 0 % steal, 40 % idle
        (3.0, (80, 200, 600)),  # 20 % steal, 10 % idle
        (4.0, (90, 260, 800)),  # 5 % steal, 30 % idle
        (9.0, (500, 500, 1800)),  # after the window
    ]
    summary = host_cpu_summary(log, 1.5, 4.5)
    assert summary == {
        "steal_pct": 8.3,  # 50 of 600 ticks from t=1 to t=4
        "idle_pct": 26.7,
        "steal_max_pct": 20.0,
        "seconds_steal_over": 1,
        "steal_per_s": [[0.5, 0.0], [1.5, 20.0], [2.5, 5.0]],
    }
    assert host_cpu_summary(log[:1], 0.0, 5.0)["steal_pct"] is None
    steal, idle, total = host_cpu_sample() or (0, 0, 0)
    assert total > 0 and 0 <= steal <= total and 0 <= idle <= total


def test_latency_split_by_the_seconds_the_host_stole() -> None:
    """An item counts under "steal" when its send-to-answer span touched a second (t - 1, t]
    with steal >= 10 %; every item lands in exactly one of the two."""
    samples = {
        "query1": {
            "done_s": [0.5, 2.5, 2.95, 4.0, 6.0],
            "latency_ms": [100.0, 100.0, 1200.0, 300.0, 50.0],
        }
    }
    split = latency_by_steal(samples, [[1.0, 2.0], [2.0, 30.0], [3.0, 9.9], [4.0, 12.0]])
    # second (1, 2] stole 30 %: the 1,200 ms item sent at 1.75 s; second (3, 4] 12 %: the item
    # answered at 4.0 s
    assert split == {
        "query1": {
            "steal": {"items": 2, "p99_ms": 1200.0},
            "other": {"items": 3, "p99_ms": 100.0},
        }
    }
    assert latency_by_steal(samples, [])["query1"]["steal"] == {"items": 0, "p99_ms": None}


def test_per_kind_cdf_and_per_second_counts() -> None:
    k = fake_run(4)["by_kind"]["commit"]
    assert k["per_second"] == [1, 2]
    assert k["cdf_ms"][0] == 10.0 and k["cdf_ms"][50] == 20.0 and k["cdf_ms"][-1] == 30.0
    assert k["target"]["met"] is False  # 1.5 tx/s is far from 3,000
    assert k["failures"] == {"timeout": 1}


def test_nearest_rank_has_no_float_off_by_one() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert [nearest_rank(ordered, q) for q in (0, 7, 50, 99, 99.5, 100)] == [
        1.0,
        7.0,
        50.0,
        99.0,
        100.0,
        100.0,
    ]


async def test_mixed_with_one_kind_left_still_reports_by_kind() -> None:
    stream = CommitStream([target(1)], 5)
    rep = combined_report("mixed", [stream])
    assert set(rep["by_kind"]) == {"commit"}
    assert per_kind({}, rep)["commit"]["per_second"] == [0]


def test_reports_markdown_plots_and_readme_table(tmp_path: Path) -> None:
    doc = {
        "benchmark": "run-tx-n4-7",
        "time": "2026-11-25T00:00:00Z",
        "machine": {"cpu_model": "Test CPU", "cpus": 2, "memory_gb": 24.0, "python": "3.11"},
        "figures": {
            "parameters": {
                "workload": "tx",
                "load_workload": "commit",
                "sizes": [4, 7],
                "duration_s": 2.0,
                "rate": None,
                "concurrency": 8,
                "batch": 100,
                "mix": None,
                "network": WanParams(latency_ms=20).describe(),
            },
            "versions": {"creditnet": "0.1.0"},
            "runs": [
                fake_run(4),
                fake_run(7)
                | {
                    "ed25519_verify_us": {"min": 51, "p50": 55, "max": 92, "probes": 9},
                    "host_cpu": {"steal_pct": 3.2, "steal_max_pct": 25.0},
                },
            ],
        },
    }
    path = tmp_path / "run-tx-n4-7.json"
    path.write_text(json.dumps(doc))
    written = report.write_reports(path)
    assert [w.name for w in written] == [
        "run-tx-n4-7.md",
        "run-tx-n4-7-throughput.png",
        "run-tx-n4-7-latency-cdf.png",
        "run-tx-n4-7-height.png",
        "run-tx-n4-7-resources.png",
    ]
    for w in written[1:]:
        assert w.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = written[0].read_text()
    assert "Test CPU" in md and "20 ms one-way" in md and "| 7 | tx | 2/s |" in md
    assert "--concurrency 8 --batch 100 --latency-ms 20" in md
    # The machine's speed during each run: probed (7 nodes), or not known (4 nodes).
    assert "| 55 (51-92) µs |" in md and "(delaying proxy) | - |" in md
    # CPU time the host took during the run: sampled (7 nodes), or not known (4 nodes).
    assert "| 3 % (25 %) |" in md and "(delaying proxy) | - | - |" in md
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold\n{report.END}\nafter\n")
    report.update_readme(readme, [path])
    text = readme.read_text()
    assert "old" not in text and text.startswith("intro\n") and text.endswith("after\n")
    assert "Test CPU" in text and "`run-tx-n4-7.json`" in text
    with pytest.raises(ValueError, match="no <!--"):
        report.update_readme(tmp_path / "run-tx-n4-7.md", [path])


# --- a real run ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_a_mixed_run_over_the_wan_proxy_writes_json_markdown_and_plots(tmp_path: Path) -> None:
    """Four real nodes dialling each other through the delaying proxy, the mixed workload from
    a separate load generator, results in all three forms."""
    from tests.integration.cluster import free_base_port  # noqa: PLC0415

    seed = time.time_ns()
    base = free_base_port(4, random.Random(seed))  # (bench.run checks the proxy ports too)
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "--nodes",
        "4",
        "--workload",
        "mixed",
        "--rate",
        "60",
        "--duration",
        "4",
        "--latency-ms",
        "5",
        "--jitter-ms",
        "1",
        "--base-port",
        str(base),
        "--out-dir",
        str(tmp_path),
        "--name",
        "t",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"seed {seed}: " + proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "t.json").read_text())
    f = doc["figures"]
    assert f["parameters"]["network"]["kind"] == "delaying TCP proxy (bench.wan)"
    (run,) = f["runs"]
    assert run["ok"] and run["one_chain"] and not run["nodes_exited"]
    assert set(run["by_kind"]) == {"commit", "query1", "query2"}
    for kind in ("commit", "query1", "query2"):
        assert run["by_kind"][kind]["committed"] > 0, kind
    assert run["wan_proxy"]["stats"] is not None
    assert len(run["per_node"]) == 4 and all(v["rss_mb"]["max"] for v in run["per_node"].values())
    assert run["timeline"] and doc["machine"]["cpus"]
    host = run["host_cpu"]
    assert 0 <= host["steal_pct"] <= 100 and 0 <= host["idle_pct"] <= 100, host
    assert len(host["steal_per_s"]) >= 1 and set(run["latency_by_steal"]) == set(run["by_kind"])
    by_storage = run["latency_by_storage"]
    assert set(by_storage) == set(run["by_kind"])
    for kind, split in by_storage.items():  # every answered item is in one of the two
        parts = split["storage"]["items"] + split["other"]["items"]
        assert 0 < parts <= run["by_kind"][kind]["committed"], (kind, split)
    for suffix in ("md", "json"):
        assert (tmp_path / f"t.{suffix}").stat().st_size > 0
    for plot in ("throughput", "latency-cdf", "height", "resources"):
        assert (tmp_path / f"t-{plot}.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_delta_keeps_worker_cpu_and_gc_pauses_by_label() -> None:
    before = {
        "process_cpu_seconds_total": 10.0,
        'creditnet_gc_pause_seconds_count{generation="2"}': 3.0,
        'creditnet_gc_pause_seconds_sum{generation="2"}': 0.25,
    }
    after = {
        "process_cpu_seconds_total": 14.5,
        'creditnet_gc_pause_seconds_count{generation="2"}': 5.0,
        'creditnet_gc_pause_seconds_sum{generation="2"}': 0.5,
        'creditnet_worker_cpu_seconds_total{task="verify"}': 1.25,
        "creditnet_api_requests_total": 99.0,
    }
    delta = metrics_delta(before, after)
    assert delta["process_cpu_seconds_total"] == 4.5
    assert delta['gc_pause_seconds_count{generation="2"}'] == 2.0
    assert delta['gc_pause_seconds_sum{generation="2"}'] == 0.25
    assert delta['worker_cpu_seconds_total{task="verify"}'] == 1.25
    assert "api_requests_total" not in delta


def test_stage_means_cover_the_timed_phase_of_every_node() -> None:
    """Mean ms per stage over the nodes, from the stage histograms' sums and counts scraped
    before and after the timed phase (what came before it does not count)."""

    def page(node: int, commit: tuple[float, int], precheck: tuple[float, int]) -> str:
        fam = "creditnet_consensus_block_stage_seconds"
        lines = [f"# TYPE {fam} histogram"]
        for stage, (total, count) in (("commit", commit), ("precheck", precheck)):
            lines += [
                f'{fam}_bucket{{le="+Inf",stage="{stage}"}} {count}',
                f'{fam}_count{{stage="{stage}"}} {count}',
                f'{fam}_sum{{stage="{stage}"}} {total}',
            ]
        lines.append(f'creditnet_query_stage_seconds_count{{stage="ledger"}} {node}')
        lines.append(f'creditnet_query_stage_seconds_sum{{stage="ledger"}} {0.1 * node}')
        return "\n".join(lines) + "\n"

    before = [page(0, (5.0, 100), (0.0, 0)), page(0, (1.0, 10), (1.0, 5))]
    after = [page(0, (5.3, 110), (0.0, 0)), page(2, (1.5, 20), (1.2, 15))]
    got = stage_means([parse_metrics(t) for t in before], [parse_metrics(t) for t in after])
    # commit: (0.3 + 0.5) s over (10 + 10) blocks; precheck: 0.2 s over 10 at one node
    assert got["block"] == {"commit": 40.0, "precheck": 20.0}
    # node 1 answered 2 queries in the phase (node 0 none)
    assert got["query"] == {"ledger": 100.0}
    assert stage_means([{}], [{}]) == {"block": {}, "query": {}}
