"""When each node's LevelDB flushed a memtable or compacted, and the latency of the items that
overlapped one: read from LevelDB's own ``LOG`` after a run.

At 500 mode-1 queries/s on the 2-core machine, the seconds in which a node compacted (or the
primary flushed) were the slow ones of a run -- LevelDB's background thread takes a core's share
from nodes that already keep the machine 75-85 % busy. :func:`latency_by_storage` splits each
kind's items into those whose send-to-answer span overlapped such a span of any node, and the
rest, as ``latency_by_steal`` does for seconds the hypervisor stole: it tells a tail made by
storage work from one made elsewhere. ``LOG`` lines carry local wall-clock time, which the load
generator's samples are lined up with (``start_unix_s``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.results_io import p99_summary

_LINE = re.compile(r"^(\d{4}/\d{2}/\d{2}-\d{2}:\d{2}:\d{2}\.\d{6}) \S+ (.*)$")
_FLUSH_START = re.compile(r"^Level-0 table #(\d+): started")
_FLUSH_END = re.compile(r"^Level-0 table #(\d+): \d+ bytes")
_COMPACT_START = re.compile(r"^Compacting ")
_COMPACT_END = re.compile(r"^(Compacted |compacted to:|Compaction error)")


@dataclass(frozen=True)
class StorageSpan:
    """One flush or compaction of one node's LevelDB, in Unix seconds."""

    node: int
    kind: str
    """``flush`` or ``compaction``."""
    start: float
    end: float


def _when(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y/%m/%d-%H:%M:%S.%f").timestamp()  # local time, as LOG


def read_spans(log: Path, node: int) -> list[StorageSpan]:
    """The flushes and compactions in one LevelDB ``LOG`` (an unreadable or missing file: none).
    A span whose end is not in the log (the node stopped meanwhile) is left out."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    spans: list[StorageSpan] = []
    flushing: dict[str, float] = {}
    compacting: float | None = None
    for line in text.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        try:
            at = _when(m.group(1))
        except ValueError:
            continue
        msg = m.group(2)
        if f := _FLUSH_START.match(msg):
            flushing[f.group(1)] = at
        elif (f := _FLUSH_END.match(msg)) and f.group(1) in flushing:
            spans.append(StorageSpan(node, "flush", flushing.pop(f.group(1)), at))
        elif _COMPACT_START.match(msg):
            compacting = at
        elif _COMPACT_END.match(msg) and compacting is not None:
            spans.append(StorageSpan(node, "compaction", compacting, at))
            compacting = None
    return spans


def latency_by_storage(
    samples: dict[str, Any], spans: Sequence[StorageSpan]
) -> dict[str, Any]:
    """Per kind: the p99 of items whose send-to-answer span overlapped a flush or compaction of
    any node and of the rest, and the spans themselves in seconds after the timed phase's start
    (None figures when the samples carry no start time)."""
    out: dict[str, Any] = {}
    for kind, s in samples.items():
        start = s.get("start_unix_s")
        if start is None:
            out[kind] = None
            continue
        windows = sorted((sp.start - start, sp.end - start) for sp in spans)
        hit: list[float] = []
        rest: list[float] = []
        for done, ms in zip(s.get("done_s") or [], s.get("latency_ms") or [], strict=False):
            sent = done - ms / 1000
            touched = any(a <= done and sent <= b for a, b in windows)
            (hit if touched else rest).append(ms)
        out[kind] = {
            "storage": p99_summary(hit),
            "other": p99_summary(rest),
            "spans": [
                [round(sp.start - start, 2), round(sp.end - sp.start, 3), sp.node, sp.kind]
                for sp in sorted(spans, key=lambda x: x.start)
            ],
        }
    return out
