"""Reading LevelDB's LOG for flushes and compactions, and splitting latencies by them."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import plyvel

from bench.storage_events import StorageSpan, latency_by_storage, read_spans

START = datetime(2026, 11, 27, 0, 0, 0).timestamp()  # local time, as LevelDB writes it

LOG = """\
2026/11/27-00:00:10.000000 7f01 Recovering log #3
2026/11/27-00:00:12.500000 7f02 Level-0 table #5: started
2026/11/27-00:00:12.800000 7f02 Level-0 table #5: 13568830 bytes OK
2026/11/27-00:00:12.810000 7f02 Delete type=0 #3
2026/11/27-00:00:20.000000 7f02 Compacting 4@0 + 1@1 files
2026/11/27-00:00:21.250000 7f02 Generated table #9@0: 1000 keys, 2000000 bytes
2026/11/27-00:00:21.500000 7f02 Compacted 4@0 + 1@1 files => 26000000 bytes
2026/11/27-00:00:30.000000 7f02 Level-0 table #12: started
not a LevelDB line at all
"""


def test_flushes_and_compactions_are_read_with_their_spans(tmp_path: Path) -> None:
    log = tmp_path / "LOG"
    log.write_text(LOG)
    spans = read_spans(log, 2)
    assert spans == [
        StorageSpan(2, "flush", START + 12.5, START + 12.8),
        StorageSpan(2, "compaction", START + 20.0, START + 21.5),
    ]  # the flush started at 30 s never ended: left out
    assert read_spans(tmp_path / "missing", 0) == []


def test_items_overlapping_a_span_are_told_from_the_rest() -> None:
    spans = [StorageSpan(1, "compaction", START + 20.0, START + 21.5)]
    samples = {
        "query1": {
            "start_unix_s": START,
            # sent at 19.9 (overlaps), 21.4 (inside), 21.6 (after), 10.0 (before)
            "done_s": [20.1, 21.6, 21.7, 10.1],
            "latency_ms": [200.0, 200.0, 100.0, 100.0],
        },
        "commit": {"done_s": [1.0], "latency_ms": [5.0]},  # an older samples file: no start
    }
    split = latency_by_storage(samples, spans)
    assert split["query1"]["storage"] == {"items": 2, "p99_ms": 200.0}
    assert split["query1"]["other"] == {"items": 2, "p99_ms": 100.0}
    assert split["query1"]["spans"] == [[20.0, 1.5, 1, "compaction"]]
    assert split["commit"] is None
    assert latency_by_storage({"query1": samples["query1"]}, [])["query1"]["storage"] == {
        "items": 0,
        "p99_ms": None,
    }


def test_a_real_leveldb_log_is_understood(tmp_path: Path) -> None:
    """The line formats are LevelDB's own: a memtable forced to flush shows up as a flush."""
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True, write_buffer_size=64 * 1024)
    for i in range(4000):
        db.put(b"key%06d" % i, b"v" * 100)
    db.close()
    spans = read_spans(tmp_path / "db" / "LOG", 0)
    assert any(s.kind == "flush" and s.end >= s.start for s in spans), spans
