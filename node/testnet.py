"""Create a local testnet directory: keys, tokens, configs and one shared genesis.

Layout (DESIGN.md): ``DIR/node<i>/{config.toml, node.key (0600), operator.token (0600),
genesis.json}``; node i listens on 127.0.0.1 at p2p B+10i, API B+10i+1, metrics B+10i+2.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from node.config import testnet_config
from node.keyfile import write_key, write_token
from protocol.block import MAX_VALIDATORS
from protocol.crypto import Identity, peer_id
from protocol.genesis import CHAIN_ID_RE, ConsensusParams, FeeSchedule, Genesis, Validator

DEFAULT_BASE_PORT = 26600
PORT_STRIDE = 10


class TestnetError(ValueError):
    """The testnet cannot be created as asked; the message says why."""


@dataclass(frozen=True)
class TestnetNode:
    index: int
    home: Path
    public_key: bytes
    p2p_port: int
    api_port: int
    metrics_port: int


def node_ports(index: int, base_port: int) -> tuple[int, int, int]:
    """(p2p, api, metrics) ports of node ``index``."""
    p2p = base_port + PORT_STRIDE * index
    return p2p, p2p + 1, p2p + 2


def create_testnet(
    directory: Path, nodes: int, *, chain_id: str = "creditnet-local", base_port: int = 26600
) -> list[TestnetNode]:
    """Write a fresh testnet of ``nodes`` validators under ``directory`` and describe it."""
    if not 1 <= nodes <= MAX_VALIDATORS:
        raise TestnetError(f"--nodes must be 1..{MAX_VALIDATORS}, got {nodes}")
    if not CHAIN_ID_RE.match(chain_id):
        raise TestnetError(f"--chain-id {chain_id!r} must match [a-z0-9][a-z0-9-]{{0,47}}")
    top_port = node_ports(nodes - 1, base_port)[2]
    if base_port < 1024 or top_port > 65535:
        raise TestnetError(f"--base-port {base_port}: ports {base_port}..{top_port} not usable")
    if directory.exists() and any(directory.iterdir()):
        raise TestnetError(f"{directory}: not empty; choose a new directory or remove it")

    identities = [Identity.generate() for _ in range(nodes)]
    validators = tuple(
        Validator(
            f"agency-{i}", ident.public_key, f"/ip4/127.0.0.1/tcp/{node_ports(i, base_port)[0]}"
        )
        for i, ident in enumerate(identities)
    )
    genesis = Genesis(
        chain_id=chain_id,
        genesis_time_ms=time.time_ns() // 1_000_000,
        validators=validators,
        pseudonym_salt=os.urandom(32),
        fees=FeeSchedule(),
        consensus=ConsensusParams(),
    )
    genesis_text = genesis.dumps()
    out = []
    for i, ident in enumerate(identities):
        home = directory / f"node{i}"
        home.mkdir(parents=True, exist_ok=False)
        peers = [
            f"{v.address}/p2p/{peer_id(v.public_key)}" for j, v in enumerate(validators) if j != i
        ]
        cfg = testnet_config(i, base_port, peers, f"agency-{i}")
        (home / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        (home / "genesis.json").write_text(genesis_text, encoding="utf-8")
        write_key(home / "node.key", ident)
        write_token(home / "operator.token")
        p2p, api, metrics = node_ports(i, base_port)
        out.append(TestnetNode(i, home, ident.public_key, p2p, api, metrics))
    return out
