"""The instruction-count benchmark (bench.instructions): its operations run and do what they
name, and callgrind's count of one is the same from one run to the next."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import instructions
from protocol.codec import CodecError


@pytest.mark.parametrize("name", instructions.OPERATIONS)
def test_every_operation_runs_on_its_inputs(name: str) -> None:
    run = instructions.operation(name)
    try:
        run()
        run()  # again: execution reads committed state, so repetitions do the same work
    finally:
        close = getattr(run, "close", None)
        if close is not None:
            close()  # (the libp2p pair's hosts, the HTTP pair's server, and their thread)


def test_an_unknown_operation_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        instructions.operation("nothing")


def test_query_entries_execute_as_accepted_entries() -> None:
    """The counted execution is the accepted path (consent, fee, audit), not a refusal."""
    ledger = instructions._ledger()
    entries = instructions._query_entries(ledger)
    outcomes = ledger.run(*entries[:3]).outcomes
    assert [o.code for o in outcomes] == ["ok"] * 3, outcomes
    with pytest.raises(CodecError):
        instructions.decode_tx(entries[0][:-1])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_count_repeats_within_a_percent() -> None:
    first, second = (instructions.count("block_decode", 1) for _ in range(2))
    assert abs(first - second) <= first // 100


def test_counting_some_operations_keeps_the_other_counts_of_the_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "instructions.json"
    earlier = {"tx_decode": 5, "block_decode": 7, "retired_operation": 1, "p2p_round_trip": "x"}
    out.write_text(json.dumps({"figures": {"instructions_per_item": earlier}}))
    monkeypatch.setattr(instructions.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(instructions, "count", lambda name, reps: 42 * reps * instructions.ITEMS)
    version = SimpleNamespace(stdout="valgrind-3.19.0\n")
    monkeypatch.setattr(instructions.subprocess, "run", lambda *a, **k: version)
    assert instructions.main(["--only", "tx_decode", "--out", str(out)]) == 0
    counts = json.loads(out.read_text())["figures"]["instructions_per_item"]
    assert counts == {"tx_decode": 42, "block_decode": 7}  # unknown names and non-counts dropped
    assert instructions.main(["--only", "block_decode", "--out", str(tmp_path / "new.json")]) == 0
    fresh = json.loads((tmp_path / "new.json").read_text())["figures"]["instructions_per_item"]
    assert fresh == {"block_decode": 42}
