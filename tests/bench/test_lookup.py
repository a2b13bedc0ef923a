"""The lookup benchmark (bench.lookup) at tiny sizes: its records are the node's records byte for
byte, the same seed gives the same bytes, a lookup returns exactly the subject's records, and a
run writes results of the expected shape."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bench.lookup import (
    LARGE_SIZE,
    Dataset,
    absent_pseudonym,
    load,
    main,
    measure,
    options,
    read_subject,
    subject_pseudonym,
    templates,
)
from node.daemon import Node
from node.records import RECORDS_NS, records_of
from node.storage import BlockStore
from protocol.record import StoredRecord

PER_SUBJECT = 3
SIZE = 3 * 7 + 2  # the last subject has 2 records


@pytest.fixture(scope="module")
def pool() -> list[list[StoredRecord]]:
    return templates(4, PER_SUBJECT, seed=5)


def anonymous(r: StoredRecord) -> str:
    """A record without the two fields the benchmark varies, comparable."""
    return repr(dataclasses.replace(r, pseudonym=bytes(32), record_id="x"))


def items(data: Dataset, batch_size: int = 5) -> list[tuple[bytes, bytes]]:
    return [kv for batch in data.batches(batch_size) for kv in batch.items()]


def test_records_are_the_nodes_records_byte_for_byte(pool: list[list[StoredRecord]]) -> None:
    data = Dataset.build(pool, 5, PER_SUBJECT, SIZE)
    batches = list(data.batches(5))
    assert all(len(b) >= 5 for b in batches[:-1])
    expected = [data.node_item(i, j) for i in range(data.subjects) for j in range(data.count(i))]
    assert len(expected) == SIZE
    assert items(data) == expected
    assert len({k for k, _ in expected}) == SIZE  # no record overwrites another


def test_same_seed_same_bytes(pool: list[list[StoredRecord]]) -> None:
    again = templates(4, PER_SUBJECT, seed=5)
    assert items(Dataset.build(pool, 5, PER_SUBJECT, SIZE)) == items(
        Dataset.build(again, 5, PER_SUBJECT, SIZE)
    )
    other = Dataset.build(templates(4, PER_SUBJECT, seed=6), 6, PER_SUBJECT, SIZE)
    assert not set(items(other)) & set(items(Dataset.build(pool, 5, PER_SUBJECT, SIZE)))


def test_generation_stops_when_the_fast_encoding_drifts(pool: list[list[StoredRecord]]) -> None:
    data = Dataset.build(pool, 5, PER_SUBJECT, SIZE)
    t = data.pool[0][0]
    broken = ((dataclasses.replace(t, tail=t.tail[:-1] + b"\x00"), *data.pool[0][1:]),)
    with pytest.raises(RuntimeError, match="differs from the node's"):
        items(dataclasses.replace(data, pool=broken + data.pool[1:]))


def test_lookup_returns_exactly_the_subjects_records(
    pool: list[list[StoredRecord]], tmp_path: Path
) -> None:
    data = Dataset.build(pool, 5, PER_SUBJECT, SIZE)
    with BlockStore.open(tmp_path, "t", sync=False) as store:
        figures = load(store, data)
        node = cast(Node, SimpleNamespace(store=store))
        assert sum(1 for _ in store.private_items(RECORDS_NS)) == SIZE
        for i in (0, 1, 4, data.subjects - 1):
            pn = subject_pseudonym(5, i)
            found = records_of(node, pn)
            assert found == read_subject(store, pn) == data.stored(i)
            assert len(found) == (2 if i == data.subjects - 1 else PER_SUBJECT)
            assert {r.pseudonym for r in found} == {pn}
            template = pool[i % len(pool)][: len(found)]  # the rest of each record
            assert sorted(map(anonymous, found)) == sorted(map(anonymous, template))
        assert records_of(node, absent_pseudonym(5, 0)) == []
    assert len(figures["data_digest"]) == 64


def test_measure_reports_every_figure_and_removes_its_store(
    pool: list[list[StoredRecord]], tmp_path: Path
) -> None:
    fig = measure(SIZE, PER_SUBJECT, 12, 5, tmp_path, pool)
    assert list(tmp_path.iterdir()) == []
    assert (fig["records"], fig["subjects"], fig["lookups"]) == (SIZE, 8, 12)
    assert 2 <= fig["records_per_hit"] <= PER_SUBJECT
    for stage in (fig, fig["compacted"]):
        for kind in ("hit_us", "miss_us", "hit_cpu_us", "miss_cpu_us"):
            p = stage[kind]
            assert 0 < p["p50"] <= p["p90"] <= p["p99"] <= p["max"]
    b = fig["bytes_per_record"]
    assert b["encoded"] > 60 and b["after_load"] > 0 and b["after_compaction"] > 0
    assert abs(fig["leveldb_bytes"]["after_compaction"] / SIZE - b["after_compaction"]) < 0.1
    assert set(fig["seconds"]) == {"load", "reopen", "compact", "total"}
    assert set(fig["memory_mib"]) == {"rss_anon_max_during_load", "rss_anon_at_end", "peak_rss"}
    assert fig["load_records_per_s"] > 0 and fig["write_records_per_s"] > 0


def test_main_writes_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    args = ["--sizes", "30,1e2", "--lookups", "5", "--templates", "3", "--seed", "2"]
    assert main([*args, "--dir", str(tmp_path), "--out", str(out)]) == 0
    doc: dict[str, Any] = json.loads(out.read_text())
    assert doc["benchmark"] == "lookup" and "machine" in doc
    figures = doc["figures"]
    assert figures["complete"] is True
    assert [r["records"] for r in figures["runs"]] == figures["parameters"]["sizes"] == [30, 100]
    assert "100" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    assert options(["--large"]).sizes == [10_000, 100_000, 1_000_000, LARGE_SIZE]
    assert options(["--large", "--sizes", "1e7"]).sizes == [LARGE_SIZE]
    with pytest.raises(SystemExit):
        options(["--sizes", "1.5"])
