"""The node's garbage-collector settings (``node.runner.settle_gc``)."""

from __future__ import annotations

import gc

from node.metrics import NodeMetrics, exposition
from node.runner import GC_GEN0_THRESHOLD, settle_gc


def test_settle_gc_freezes_start_up_objects_and_spaces_young_collections() -> None:
    before = gc.get_threshold()
    try:
        settle_gc()
        assert gc.get_freeze_count() > 10_000  # the modules and classes loaded so far
        assert gc.get_threshold() == (GC_GEN0_THRESHOLD, before[1], before[2])
        assert gc.collect() >= 0  # collections still run over what is created later
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_every_collection_is_timed_by_generation_until_unwatched() -> None:
    metrics = NodeMetrics(process=False)

    def count(generation: int) -> float:
        return metrics.registry.get_sample_value(
            "creditnet_gc_pause_seconds_count", {"generation": str(generation)}
        ) or 0.0

    assert b'creditnet_gc_pause_seconds_count{generation="2"} 0.0' in exposition(metrics)
    unwatch = metrics.watch_gc()
    try:
        gc.collect(2)
        gc.collect(0)
        gc.collect(0)
    finally:
        unwatch()
    assert count(2) >= 1 and count(0) >= 2
    total = metrics.registry.get_sample_value(
        "creditnet_gc_pause_seconds_sum", {"generation": "2"}
    )
    assert total is not None and 0 < total < 5
    seen = count(2)
    gc.collect(2)
    assert count(2) == seen  # the hook is gone
