"""The node's garbage-collector settings (``node.runner.settle_gc``)."""

from __future__ import annotations

import gc

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
