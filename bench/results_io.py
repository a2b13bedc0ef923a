"""Writing benchmark results: one JSON file per benchmark under bench/results/, with the machine."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _verify_us(rounds: int = 5, per_round: int = 200) -> float | None:
    """CPU microseconds per Ed25519 verification (pynacl, one thread, best of ``rounds`` x
    ``per_round``) when the results are written: this machine is a virtual one whose speed
    drifts between runs (seen: 51 to 105 us) and, some days, from one second to the next (54 to
    92 us within a minute), so every results file says how fast it was at the time, and
    ``bench.run`` also probes it during the timed phase (:func:`verify_us`)."""
    try:
        import nacl.signing  # noqa: PLC0415
    except ImportError:
        return None
    key = nacl.signing.SigningKey(b"\x01" * 32)
    signed = key.sign(b"x" * 160)
    verify = key.verify_key.verify
    best = float("inf")
    for _ in range(rounds):
        # This thread's CPU time, not the wall clock: a probe taken while the nodes load both
        # cores must measure the machine's speed, not how long it waited for a core.
        started = time.thread_time()
        for _ in range(per_round):
            verify(signed)
        best = min(best, (time.thread_time() - started) / per_round)
    return round(best * 1e6, 1)


def verify_us() -> float | None:
    """One quick probe of the machine's speed (50 verifications, ~3 ms of one core)."""
    return _verify_us(rounds=1, per_round=50)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": _cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "ed25519_verify_us": _verify_us(),
    }


def write_result(name: str, figures: dict[str, Any], out: Path | None = None) -> Path:
    """Write benchmark, time, machine and figures to ``out`` (default results/<name>.json)."""
    path = out or RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "figures": figures,
    }
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def p99_summary(xs: list[float]) -> dict[str, Any]:
    """``{"items", "p99_ms"}`` of some latencies in ms (p99 None when there are none)."""
    return {"items": len(xs), "p99_ms": nearest_rank(sorted(xs), 99) if xs else None}


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of sorted samples by nearest rank (q = 0: the minimum)."""
    rank = math.ceil(round(q * len(ordered) / 100, 9))  # (round: 7/100*100 is 7.000000000000001)
    return ordered[min(len(ordered) - 1, max(0, rank - 1))]
