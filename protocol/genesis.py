"""The genesis document: what every agency of one network agrees on before block 1.

It fixes the chain id, the validator set (one per agency: name, Ed25519 key, libp2p PeerID, p2p
address), the pseudonym salt, the fee schedule and the chain-wide consensus parameters. It is
exchanged as JSON (``genesis.json``); :func:`parse_genesis` validates an already decoded JSON
object and names the path of anything wrong. ``genesis_hash`` is the ``prev_hash`` of block 1, so
two networks with different genesis documents can never share a block.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from protocol.block import MAX_VALIDATORS, max_faulty, quorum
from protocol.crypto import h256, peer_id
from protocol.pseudonym import SALT_BYTES
from protocol.transactions import MAX_AMOUNT

GENESIS_FORMAT = 1
CHAIN_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,47}$")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
ADDRESS_RE = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/(\d{1,5})$")


class GenesisError(ValueError):
    """A genesis document that cannot be used; the message names the path."""


@dataclass(frozen=True)
class Validator:
    name: str
    public_key: bytes
    address: str

    @property
    def peer_id(self) -> str:
        return peer_id(self.public_key)


@dataclass(frozen=True)
class FeeSchedule:
    """Fees in minor units, paid by the query user from its on-ledger balance."""

    query_fee: int = 100
    """Paid to the answering agency for every query."""
    exchange_fee: int = 50
    """Paid to each serving agency of a mode-2 query."""


@dataclass(frozen=True)
class ConsensusParams:
    """Chain-wide PBFT parameters: every validator must use the same ones."""

    view_change_timeout_ms: int = 2000
    view_change_timeout_max_ms: int = 60000
    checkpoint_interval: int = 20
    window: int = 40
    max_block_txs: int = 1000
    max_block_bytes: int = 1 << 20


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    genesis_time_ms: int
    validators: tuple[Validator, ...]
    pseudonym_salt: bytes
    fees: FeeSchedule = field(default_factory=FeeSchedule)
    consensus: ConsensusParams = field(default_factory=ConsensusParams)

    @property
    def validator_keys(self) -> tuple[bytes, ...]:
        return tuple(v.public_key for v in self.validators)

    @property
    def f(self) -> int:
        return max_faulty(len(self.validators))

    @property
    def quorum(self) -> int:
        return quorum(len(self.validators))

    def to_json(self) -> dict[str, Any]:
        return {
            "format": GENESIS_FORMAT,
            "chain_id": self.chain_id,
            "genesis_time_ms": self.genesis_time_ms,
            "pseudonym_salt": self.pseudonym_salt.hex(),
            "validators": [
                {
                    "name": v.name,
                    "public_key": v.public_key.hex(),
                    "peer_id": v.peer_id,
                    "address": v.address,
                }
                for v in self.validators
            ],
            "fees": vars(self.fees).copy(),
            "consensus": vars(self.consensus).copy(),
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    @property
    def hash(self) -> bytes:
        """Hash of the canonical JSON form; block 1's ``prev_hash``."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return h256(b"creditnet/genesis/v1" + canonical.encode())


def _int(obj: dict[str, Any], key: str, path: str, lo: int, hi: int) -> int:
    v = obj.get(key)
    if type(v) is not int:
        raise GenesisError(f"{path}{key}: expected an integer")
    if not lo <= v <= hi:
        raise GenesisError(f"{path}{key}: {v} is outside {lo}..{hi}")
    return v


def _str(obj: dict[str, Any], key: str, path: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise GenesisError(f"{path}{key}: expected a string")
    return v


def _hex(obj: dict[str, Any], key: str, path: str, size: int) -> bytes:
    v = _str(obj, key, path)
    try:
        raw = bytes.fromhex(v)
    except ValueError:
        raise GenesisError(f"{path}{key}: not hexadecimal") from None
    if len(raw) != size:
        raise GenesisError(f"{path}{key}: expected {size} bytes, got {len(raw)}")
    return raw


def _keys(obj: Any, path: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise GenesisError(f"{path or 'genesis'}: expected an object")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise GenesisError(f"{path}{unknown[0]}: unknown key (known: {', '.join(sorted(allowed))})")
    missing = sorted(allowed - set(obj))
    if missing:
        raise GenesisError(f"{path}{missing[0]}: missing")
    return obj


def parse_genesis(doc: Any) -> Genesis:
    """Validate a decoded genesis JSON object; raise :class:`GenesisError` naming the path."""
    top = _keys(
        doc,
        "",
        {
            "format",
            "chain_id",
            "genesis_time_ms",
            "pseudonym_salt",
            "validators",
            "fees",
            "consensus",
        },
    )
    fmt = _int(top, "format", "", 0, 1 << 31)
    if fmt != GENESIS_FORMAT:
        raise GenesisError(
            f"format: {fmt} is not supported (this creditnet reads {GENESIS_FORMAT})"
        )
    chain_id = _str(top, "chain_id", "")
    if not CHAIN_ID_RE.match(chain_id):
        raise GenesisError("chain_id: must match [a-z0-9][a-z0-9-]{0,47}")
    time_ms = _int(top, "genesis_time_ms", "", 0, 1 << 62)
    salt = _hex(top, "pseudonym_salt", "", SALT_BYTES)

    raw_vals = top["validators"]
    if not isinstance(raw_vals, list) or not 1 <= len(raw_vals) <= MAX_VALIDATORS:
        raise GenesisError(f"validators: expected a list of 1..{MAX_VALIDATORS} validators")
    validators = []
    for i, rv in enumerate(raw_vals):
        p = f"validators[{i}]."
        v = _keys(rv, p, {"name", "public_key", "peer_id", "address"})
        name = _str(v, "name", p)
        if not NAME_RE.match(name):
            raise GenesisError(f"{p}name: must match [a-z0-9][a-z0-9_.-]{{0,63}}")
        key = _hex(v, "public_key", p, 32)
        address = _str(v, "address", p)
        m = ADDRESS_RE.match(address)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise GenesisError(f"{p}address: expected a multiaddr like /ip4/127.0.0.1/tcp/26610")
        val = Validator(name, key, address)
        if _str(v, "peer_id", p) != val.peer_id:
            raise GenesisError(
                f"{p}peer_id: does not belong to public_key (expected {val.peer_id})"
            )
        validators.append(val)
    for attr in ("name", "public_key", "address"):
        seen = [getattr(v, attr) for v in validators]
        if len(set(seen)) != len(seen):
            raise GenesisError(f"validators: two validators share a {attr}")

    fees_obj = _keys(top["fees"], "fees.", {"query_fee", "exchange_fee"})
    fees = FeeSchedule(
        query_fee=_int(fees_obj, "query_fee", "fees.", 0, MAX_AMOUNT),
        exchange_fee=_int(fees_obj, "exchange_fee", "fees.", 0, MAX_AMOUNT),
    )
    c = _keys(top["consensus"], "consensus.", set(vars(ConsensusParams())))
    params = ConsensusParams(
        view_change_timeout_ms=_int(c, "view_change_timeout_ms", "consensus.", 50, 600_000),
        view_change_timeout_max_ms=_int(
            c, "view_change_timeout_max_ms", "consensus.", 50, 3_600_000
        ),
        checkpoint_interval=_int(c, "checkpoint_interval", "consensus.", 1, 10_000),
        window=_int(c, "window", "consensus.", 1, 100_000),
        max_block_txs=_int(c, "max_block_txs", "consensus.", 1, 5000),
        max_block_bytes=_int(c, "max_block_bytes", "consensus.", 1024, 1 << 20),
    )
    if params.view_change_timeout_max_ms < params.view_change_timeout_ms:
        raise GenesisError("consensus.view_change_timeout_max_ms: below view_change_timeout_ms")
    if params.window < 2 * params.checkpoint_interval:
        raise GenesisError("consensus.window: must be at least twice checkpoint_interval")
    return Genesis(chain_id, time_ms, tuple(validators), salt, fees, params)


def loads_genesis(text: str) -> Genesis:
    """Parse genesis JSON text (duplicate keys and non-finite numbers refused)."""

    def no_dupes(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k, v in pairs:
            if k in d:
                raise GenesisError(f"{k}: appears twice")
            d[k] = v
        return d

    def no_const(name: str) -> Any:
        raise GenesisError(f"{name} is not allowed in genesis")

    try:
        doc = json.loads(text, object_pairs_hook=no_dupes, parse_constant=no_const)
    except json.JSONDecodeError as exc:
        raise GenesisError(f"not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return parse_genesis(doc)
