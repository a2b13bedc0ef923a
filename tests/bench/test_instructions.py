"""The instruction-count benchmark (bench.instructions): its operations run and do what they
name, and callgrind's count of one is the same from one run to the next."""

from __future__ import annotations

import shutil

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
