"""Create a local testnet directory: keys, tokens, configs and one shared genesis.

Layout (DESIGN.md): ``DIR/node<i>/{config.toml, node.key (0600), operator.token (0600),
genesis.json}``; node i listens on 127.0.0.1 at p2p B+10i, API B+10i+1, metrics B+10i+2.

For nodes that are not all on one loopback interface (containers, one VM per agency),
``hosts`` names where each node is reached (an IP or a DNS name: the genesis addresses and the
peers to dial) and ``listen_host`` what every node binds (``0.0.0.0`` in a container, so that
the other containers can reach it). The port layout stays the same.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from node.config import Config, parse_multiaddr, testnet_config
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
    host: str = "127.0.0.1"
    """Where the other nodes reach this one (an IP or a DNS name)."""
    address: str = ""
    """Its p2p multiaddr in the genesis, ``/ip4|ip6|dns/<host>/tcp/<port>``."""

    @property
    def api_url(self) -> str:
        """The API's URL at ``host``."""
        return f"http://{_url_host(self.host)}:{self.api_port}"

    @property
    def metrics_url(self) -> str:
        """The metrics endpoint's URL at ``host``."""
        return f"http://{_url_host(self.host)}:{self.metrics_port}/metrics"


def node_ports(index: int, base_port: int) -> tuple[int, int, int]:
    """(p2p, api, metrics) ports of node ``index``."""
    p2p = base_port + PORT_STRIDE * index
    return p2p, p2p + 1, p2p + 2


def _url_host(host: str) -> str:
    """``host`` as it goes in a URL or a host:port pair (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host


def p2p_address(host: str, port: int) -> str:
    """The multiaddr of ``host:port``: ``/ip4/`` or ``/ip6/`` for an IP, ``/dns/`` for a name.

    Raises TestnetError if ``host`` is neither an IP address nor a valid DNS name.
    """
    try:
        proto = f"ip{ipaddress.ip_address(host).version}"
    except ValueError:
        proto = "dns"
    address = f"/{proto}/{host}/tcp/{port}"
    try:
        parse_multiaddr(address, peer=False)
    except ValueError as exc:
        raise TestnetError(f"--hosts: {host!r} is not an IP address or DNS name: {exc}") from None
    return address


def _listen_ip(listen_host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``listen_host`` as an IP address: a listener binds an address, never a name."""
    try:
        return ipaddress.ip_address(listen_host)
    except ValueError:
        raise TestnetError(
            f"--listen-host {listen_host!r} must be an IP address (0.0.0.0: every interface)"
        ) from None


def _node_hosts(
    nodes: int, hosts: Sequence[str] | None, listen: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> list[str]:
    """One host per node: ``hosts`` as given, else the listen address (loopback if it is the
    wildcard, where nothing can be dialled)."""
    if hosts is None:
        if not listen.is_unspecified:
            return [str(listen)] * nodes
        return ["127.0.0.1" if listen.version == 4 else "::1"] * nodes
    if len(hosts) != nodes:
        raise TestnetError(f"--hosts names {len(hosts)} hosts for {nodes} nodes (one per node)")
    return list(hosts)


def _bind(
    config: Config, listen: ipaddress.IPv4Address | ipaddress.IPv6Address, index: int, base: int
) -> Config:
    """``config`` with node ``index``'s three listeners on ``listen`` (same ports)."""
    p2p, api, metrics = node_ports(index, base)
    host = _url_host(str(listen))
    bound = dataclasses.replace(
        config,
        p2p=dataclasses.replace(config.p2p, listen=f"/ip{listen.version}/{listen}/tcp/{p2p}"),
        api=dataclasses.replace(config.api, listen=f"{host}:{api}"),
        metrics=dataclasses.replace(config.metrics, listen=f"{host}:{metrics}"),
    )
    bound.validate()
    return bound


def create_testnet(
    directory: Path,
    nodes: int,
    *,
    chain_id: str = "creditnet-local",
    base_port: int = 26600,
    hosts: Sequence[str] | None = None,
    listen_host: str = "127.0.0.1",
) -> list[TestnetNode]:
    """Write a fresh testnet of ``nodes`` validators under ``directory`` and describe it.

    ``hosts`` (one per node, default the listen address) go into the genesis addresses and the
    peers each node dials; every node listens on ``listen_host`` (default 127.0.0.1).
    """
    if not 1 <= nodes <= MAX_VALIDATORS:
        raise TestnetError(f"--nodes must be 1..{MAX_VALIDATORS}, got {nodes}")
    if not CHAIN_ID_RE.match(chain_id):
        raise TestnetError(f"--chain-id {chain_id!r} must match [a-z0-9][a-z0-9-]{{0,47}}")
    top_port = node_ports(nodes - 1, base_port)[2]
    if base_port < 1024 or top_port > 65535:
        raise TestnetError(f"--base-port {base_port}: ports {base_port}..{top_port} not usable")
    listen = _listen_ip(listen_host)
    node_hosts = _node_hosts(nodes, hosts, listen)
    addresses = [p2p_address(h, node_ports(i, base_port)[0]) for i, h in enumerate(node_hosts)]
    if directory.exists() and any(directory.iterdir()):
        raise TestnetError(f"{directory}: not empty; choose a new directory or remove it")

    identities = [Identity.generate() for _ in range(nodes)]
    validators = tuple(
        Validator(f"agency-{i}", ident.public_key, addresses[i])
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
        if str(listen) != "127.0.0.1":
            cfg = _bind(cfg, listen, i, base_port)
        (home / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
        (home / "genesis.json").write_text(genesis_text, encoding="utf-8")
        write_key(home / "node.key", ident)
        write_token(home / "operator.token")
        p2p, api, metrics = node_ports(i, base_port)
        out.append(
            TestnetNode(i, home, ident.public_key, p2p, api, metrics, node_hosts[i], addresses[i])
        )
    return out
