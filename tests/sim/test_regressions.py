"""Seeds that once failed, kept as named regression cases (every failing seed stays here).

To add one: take the failing run's kind, node count and seed (printed in the assertion message
of ``test_consensus_sim.py`` as ``scenario=KIND nodes=N seed=S requests=R``, or listed by
``python -m bench.simulate_many``) and append ``("short-name", "KIND", N, S, R)`` below, with a
comment on what diverged and which change fixed it. Never delete an entry.
"""

from __future__ import annotations

import pytest

from bench.sim.network import simulate
from bench.sim.scenarios import build

REGRESSION_SEEDS: list[tuple[str, str, int, int, int]] = [
    # (name, scenario kind, nodes, seed, requests)
    #
    # Replica of 2026-11-25 14:14 (fixed 14:27): a replica that fell behind (lost messages,
    # restart, minority side of a partition) timed out alone and raised its view-change target
    # on every timeout (view 0 -> target 10 and more), refused every NewView below that target
    # and dropped all normal-case traffic; nobody answered its ViewChange, so it never caught
    # up. In drop-n4-s0 node 0 (the primary) ends at 15, the others at 18; in crash-restart-n4-s5
    # node 3 ends at 14, the others at 16; in equivocate-n7-s1 node 5 stays at height 1.
    ("lone-view-change-runs-ahead-drop", "drop", 4, 0, 20),
    ("lone-view-change-runs-ahead-restart", "crash-restart", 4, 5, 20),
    ("lone-view-change-runs-ahead-equivocation", "equivocate", 7, 1, 20),
    #
    # Replica of 14:27 (fixed 14:45), found by `bench.simulate_many --start 1000 --seeds 3000`:
    # node 1 ends at height 22 (others 28) in a lone view change: its commit votes for 23 were
    # lost, peers answered its retransmitted votes for 24/27 with blocks from 24/27 (it needs
    # 23, so it drops them), and `Replica._served` (now `CatchUp._served`) then stopped them
    # serving it again: it was cleared only in `_retransmit`, which an idle replica never runs.
    # Liveness only.
    ("lost-block-response-never-served-again", "drop", 4, 2899, 30),
]


@pytest.mark.parametrize(
    ("kind", "nodes", "seed", "requests"),
    [pytest.param(k, n, s, r, id=name) for name, k, n, s, r in REGRESSION_SEEDS],
)
def test_regression_seed_stays_safe_and_live(
    kind: str, nodes: int, seed: int, requests: int
) -> None:
    result = simulate(build(kind, nodes, seed, requests=requests))
    assert result.safe, result.report()
    assert result.live, result.report()
