"""Genesis documents: round trip and errors that name the path."""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.crypto import Identity
from protocol.genesis import Genesis, GenesisError, Validator, loads_genesis, parse_genesis


def _genesis() -> Genesis:
    vals = tuple(
        Validator(
            f"agency-{i}",
            Identity(bytes([i + 1]) * 32).public_key,
            f"/ip4/127.0.0.1/tcp/{26610 + 10 * i}",
        )
        for i in range(4)
    )
    return Genesis("creditnet-test", 1_700_000_000_000, vals, b"\x05" * 32)


def test_round_trip_and_stable_hash() -> None:
    g = _genesis()
    back = loads_genesis(g.dumps())
    assert back == g
    assert back.hash == g.hash
    assert (g.f, g.quorum) == (1, 3)


def _mutated(change: Any) -> dict[str, Any]:
    doc = _genesis().to_json()
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(extra=1), "extra: unknown key"),
        (lambda d: d.pop("fees"), "fees: missing"),
        (lambda d: d.update(chain_id="Has Space"), "chain_id"),
        (lambda d: d.update(format=2), "format: 2 is not supported"),
        (lambda d: d.update(pseudonym_salt="00"), "pseudonym_salt: expected 32 bytes"),
        (lambda d: d["validators"][1].update(peer_id="12D3Koo"), r"validators\[1\]\.peer_id"),
        (lambda d: d["validators"][2].update(address="127.0.0.1:1"), r"validators\[2\]\.address"),
        (
            lambda d: d["validators"][3].update(
                public_key=d["validators"][0]["public_key"], peer_id=d["validators"][0]["peer_id"]
            ),
            "share a public_key",
        ),
        (lambda d: d["fees"].update(query_fee=-1), r"fees\.query_fee"),
        (lambda d: d["consensus"].update(window=1), r"consensus\.window"),
        (lambda d: d["consensus"].update(checkpoint_interval=True), "expected an integer"),
    ],
)
def test_bad_documents_name_the_path(change: Any, message: str) -> None:
    with pytest.raises(GenesisError, match=message):
        parse_genesis(_mutated(change))


def test_json_level_errors() -> None:
    with pytest.raises(GenesisError, match="not valid JSON"):
        loads_genesis("{")
    with pytest.raises(GenesisError, match="appears twice"):
        loads_genesis('{"format": 1, "format": 1}')
    with pytest.raises(GenesisError, match="NaN"):
        loads_genesis(json.dumps({"format": float("nan")}))
