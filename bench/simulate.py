"""One seeded run of the consensus simulator: ``python -m bench.simulate --nodes N --seed S ...``.

Prints one JSON object (see DESIGN.md, "Consensus simulator") with ``"safety"`` and
``"liveness"`` added: ``"ok"`` or what went wrong. Exit status 1 on a safety violation (or a
replica that raised), 0 otherwise. Which nodes are Byzantine or crash, and when, follows from the
seed; crashed nodes restart at a seeded later time unless ``--crash-stay-down``. Times given to
``--partition-at``/``--heal-at`` are simulated seconds from the start.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bench.sim.network import SimulationError, simulate
from bench.sim.scenarios import BYZANTINE_KINDS, Scenario, from_counts


def _byzantine(spec: str) -> tuple[str, int]:
    kind, _, count = spec.partition(":")
    if kind not in BYZANTINE_KINDS:
        raise argparse.ArgumentTypeError(
            f"unknown kind {kind!r}; choose from {', '.join(BYZANTINE_KINDS)}"
        )
    try:
        n = int(count) if count else 1
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: COUNT must be an integer") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"{spec!r}: COUNT must not be negative")
    return kind, n


def _delay(spec: str) -> tuple[int, int]:
    lo, _, hi = spec.partition(":")
    try:
        pair = (int(lo), int(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected MIN:MAX in ms") from None
    if not 0 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"{spec!r}: need 0 <= MIN <= MAX")
    return pair


def _probability(spec: str) -> float:
    try:
        p = float(spec)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected a probability") from None
    if not 0 <= p < 1:
        raise argparse.ArgumentTypeError(f"{spec!r}: must be in [0, 1)")
    return p


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.simulate", description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument(
        "--byzantine",
        type=_byzantine,
        action="append",
        default=[],
        metavar="KIND:COUNT",
        help=f"KIND is one of {', '.join(BYZANTINE_KINDS)}; may be repeated",
    )
    p.add_argument("--crash", type=int, default=0, metavar="COUNT")
    p.add_argument("--crash-stay-down", action="store_true", help="crashed nodes never restart")
    p.add_argument("--drop", type=_probability, default=0.0, metavar="P")
    p.add_argument("--duplicate", type=_probability, default=0.0, metavar="P")
    p.add_argument("--delay-ms", type=_delay, default=(1, 10), metavar="MIN:MAX")
    p.add_argument("--partition-at", type=float, default=None, metavar="SECONDS")
    p.add_argument("--heal-at", type=float, default=None, metavar="SECONDS")
    p.add_argument("--requests", type=int, default=30)
    p.add_argument("--max-sim-seconds", type=float, default=60.0)
    return p


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    counts: dict[str, int] = {}
    for kind, n in args.byzantine:
        counts[kind] = counts.get(kind, 0) + n
    at = None if args.partition_at is None else round(args.partition_at * 1000)
    heal = None if args.heal_at is None else round(args.heal_at * 1000)
    return from_counts(
        args.nodes,
        args.seed,
        byzantine=counts,
        crash=args.crash,
        crash_restart=not args.crash_stay_down,
        drop=args.drop,
        duplicate=args.duplicate,
        delay_ms=args.delay_ms,
        partition_at_ms=at,
        heal_at_ms=heal,
        requests=args.requests,
        max_sim_seconds=args.max_sim_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if (args.partition_at is None) != (args.heal_at is None):
        p.error("--partition-at and --heal-at go together")
    if args.nodes < 1 or args.requests < 0:
        p.error("--nodes must be at least 1 and --requests not negative")
    try:
        scenario = scenario_from_args(args)
    except ValueError as exc:
        p.error(str(exc))
    try:
        summary: dict[str, Any] = simulate(scenario).summary()
    except SimulationError as exc:
        summary = {"seed": scenario.seed, "nodes": scenario.nodes, "safety": f"error: {exc}"}
    print(json.dumps(summary))
    return 0 if summary["safety"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
