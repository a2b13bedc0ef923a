"""Many seeded random scenarios: ``python -m bench.simulate_many --seeds 10000 [--nodes 4,7]``.

Seed ``s`` (from ``--start``) picks the node count (from ``--nodes``) and the scenario kind (from
:data:`bench.sim.scenarios.SCENARIO_KINDS`), then runs :func:`bench.sim.scenarios.build` of it.
Prints one JSON tally: ``{"runs", "safety_failures": [...], "liveness_failures": [...],
"seconds"}``; each failure names the seed, node count, kind, scenario and what went wrong, so
it can go into ``tests/sim/test_regressions.py``. With ``--vary-timing`` each seed also gets
seeded replica knobs at their edges (:func:`bench.sim.scenarios.random_timing`; such a failure
is reproduced with ``timing=random_timing(seed), max_sim_seconds=180``). Exit status 1 if any
run was unsafe.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import sys
import time
from dataclasses import asdict, replace
from typing import Any

from bench.sim.network import SimulationError, simulate
from bench.sim.scenarios import SCENARIO_KINDS, build, random_timing


def pick(seed: int, node_counts: tuple[int, ...]) -> tuple[int, str]:
    """The (node count, scenario kind) of ``seed``."""
    rng = random.Random(f"simulate-many/{seed}")
    return rng.choice(node_counts), rng.choice(SCENARIO_KINDS)


def run_one(job: tuple[int, tuple[int, ...], int, bool]) -> dict[str, Any]:
    """Run seed ``job[0]``; the outcome as a JSON-ready dict."""
    seed, node_counts, requests, vary_timing = job
    nodes, kind = pick(seed, node_counts)
    scenario = build(kind, nodes, seed, requests=requests)
    out: dict[str, Any] = {"seed": seed, "nodes": nodes, "kind": kind}
    if vary_timing:
        # One-transaction batches in a window of 1 are slow, not stuck: allow them more time.
        scenario = replace(scenario, timing=random_timing(seed), max_sim_seconds=180.0)
        out["timing"] = asdict(scenario.timing)
    try:
        result = simulate(scenario)
    except SimulationError as exc:
        out.update(safety=f"error: {exc}", liveness="not run", scenario=scenario.describe())
        return out
    out.update(safety=result.safety, liveness="ok" if result.live else result.liveness)
    if not (result.safe and result.live):
        out["scenario"] = scenario.describe()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.simulate_many", description=__doc__)
    p.add_argument("--seeds", type=int, default=1000, help="how many seeds to run")
    p.add_argument("--start", type=int, default=0, help="first seed")
    p.add_argument("--nodes", default="4,7", help="node counts to pick from, e.g. 4,7")
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--vary-timing", action="store_true", help="seeded replica knobs per run")
    args = p.parse_args(argv)
    try:
        counts = tuple(int(x) for x in args.nodes.split(",") if x)
    except ValueError:
        p.error("--nodes: comma-separated integers")
    if not counts or min(counts) < 1 or args.seeds < 0 or args.workers < 1:
        p.error("need node counts >= 1, --seeds >= 0 and --workers >= 1")
    jobs = [
        (s, counts, args.requests, args.vary_timing)
        for s in range(args.start, args.start + args.seeds)
    ]
    began = time.perf_counter()
    if args.workers == 1:
        outcomes = [run_one(j) for j in jobs]
    else:
        with multiprocessing.Pool(args.workers) as pool:
            outcomes = list(pool.imap(run_one, jobs, chunksize=4))
    tally = {
        "runs": len(outcomes),
        "safety_failures": [o for o in outcomes if o["safety"] != "ok"],
        "liveness_failures": [o for o in outcomes if o["safety"] == "ok" and o["liveness"] != "ok"],
        "seconds": round(time.perf_counter() - began, 1),
    }
    print(json.dumps(tally))
    return 1 if tally["safety_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
