"""A node's configuration: ``config.toml`` in the node's home directory, as frozen dataclasses.

One frozen type per TOML section, each with its defaults, a ``for_tests()`` profile (short
timeouts, small limits) and ``validate()``; :class:`Config` holds the top-level keys and the
sections. Loading is strict so that a typo never silently falls back to a default: unknown keys,
wrong types (a bool is not an int, an int is not a float), out-of-range values, malformed
addresses, TOML syntax errors and unreadable files all raise :class:`ConfigError`, whose message
names the file and the key path (``p2p.listn: unknown key (known: listen, peers, ...)``).

A section declares each key with its type, default and (``Annotated``) :class:`Range`; its DOCS
table holds the comment :meth:`Config.to_toml` writes above the key. Paths are kept as written, so
the rendered file stays portable, and :meth:`Config.resolve` takes them from ``Config.home``, the
directory holding config.toml. Chain-wide settings (validators, consensus timeouts, fees) live in
genesis, not here.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import ipaddress
import json
import re
import textwrap
import tomllib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePath
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, Self, TypeVar

from protocol.codec import MAX_MESSAGE_BYTES
from protocol.crypto import peer_id

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CONFIG_FILE = "config.toml"
DEFAULT_BASE_PORT = 26600
"""Testnet base port B: node i listens on B+10i (p2p), B+10i+1 (API), B+10i+2 (metrics)."""

LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["json", "text"]
Compression = Literal["none", "snappy"]

_T = TypeVar("_T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key path."""


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of an int key (of a string key's length), checked by ``validate``."""

    lo: int
    hi: int


# --- addresses ----------------------------------------------------------------------------------

_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_ED25519_PEER_PREFIX = b"\x00\x24\x08\x01\x12\x20"  # identity multihash, protobuf key header
_MULTIADDR_SHAPE = "/ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>"


def _check_host(proto: str, host: str) -> None:
    """Raise ValueError unless ``host`` is a valid address for ``proto`` (ip4, ip6 or dns*)."""
    try:
        if proto == "ip4":
            ipaddress.IPv4Address(host)
        elif proto == "ip6":
            ipaddress.IPv6Address(host)
        elif len(host) > 253 or not _HOSTNAME.fullmatch(host) or host.rpartition(".")[2].isdigit():
            raise ValueError  # (a name whose last label is all digits is a mistyped IPv4)
    except ValueError:
        raise ValueError(f"bad {proto} host {host!r}") from None


def _check_port(text: str, *, allow_zero: bool) -> int:
    """The port number in ``text``; 0 (an ephemeral port) only where binding."""
    port = int(text) if text.isascii() and text.isdigit() else -1
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise ValueError(f"bad port {text!r} (1..65535{', or 0 for any' if allow_zero else ''})")
    return port


def split_host_port(value: str, *, allow_zero: bool = True) -> tuple[str, int]:
    """Split a ``host:port`` listen address (IPv6 hosts in brackets); ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError("expected host:port")
    if host.startswith("[") and host.endswith("]"):
        _check_host("ip6", host[1:-1])
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 host goes in brackets, as [::1]:26611")
    else:
        try:
            _check_host("ip4", host)
        except ValueError:
            _check_host("dns", host)
    return host, _check_port(port, allow_zero=allow_zero)


def _b58decode(text: str) -> bytes:
    """Decode base58btc (the Bitcoin alphabet, as libp2p peer IDs use)."""
    number = 0
    for char in text:
        digit = _B58.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a base58 character")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")


def check_peer_id(text: str) -> None:
    """Raise ValueError unless ``text`` is the libp2p peer ID of an Ed25519 key (``12D3KooW...``),
    in its canonical base58 form: validators hold Ed25519 keys, so no other kind can be a peer.
    Base58 has no checksum: a typo that keeps the shape is caught by the Noise handshake."""
    raw = _b58decode(text)
    if len(raw) != 38 or raw[:6] != _ED25519_PEER_PREFIX or peer_id(raw[6:]) != text:
        raise ValueError(f"{text!r} is not an Ed25519 peer id (12D3KooW...)")


def parse_multiaddr(value: str, *, peer: bool) -> tuple[str, int, str | None]:
    """(host, port, peer id) of ``/ip4|ip6|dns/<host>/tcp/<port>[/p2p/<peer id>]``.

    ``peer=True`` requires the ``/p2p/<peer id>`` suffix (a peer to dial), ``peer=False`` forbids
    it (an address to listen on, where port 0 is allowed). Raises ValueError if malformed.
    """
    parts = value.split("/")
    want = 7 if peer else 5
    if parts[0] != "" or len(parts) != want or parts[3] != "tcp" or (peer and parts[5] != "p2p"):
        raise ValueError(f"expected {_MULTIADDR_SHAPE}{'/p2p/<peer id>' if peer else ''}")
    if parts[1] not in ("ip4", "ip6", "dns", "dns4", "dns6"):
        raise ValueError(f"unsupported protocol /{parts[1]} (expected {_MULTIADDR_SHAPE})")
    _check_host(parts[1], parts[2])
    port = _check_port(parts[4], allow_zero=not peer)
    if peer:
        check_peer_id(parts[6])
    return parts[2], port, parts[6] if peer else None


_listen_multiaddr = partial(parse_multiaddr, peer=False)
_peer_multiaddr = partial(parse_multiaddr, peer=True)


# --- keys ---------------------------------------------------------------------------------------

_TOML_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string", list: "array"}
_TOML_TYPES |= {tuple: "array", dict: "table", Path: "string (a path)"}


def _toml_type(value: object) -> str:
    """The TOML name of a value's type, for error messages."""
    if isinstance(value, datetime.date | datetime.time):
        return "date/time"
    return _TOML_TYPES.get(type(value), type(value).__name__)


def _keys(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Any, Range | None]]:
    """(field, type, range) of each key ``cls`` reads from the file; ``home`` is not one of
    them: it is where the file is."""
    plain, extras = typing.get_type_hints(cls), typing.get_type_hints(cls, include_extras=True)
    keys = []
    for f in dataclasses.fields(cls):
        ranges = [m for m in getattr(extras[f.name], "__metadata__", ()) if isinstance(m, Range)]
        if f.name != "home":
            keys.append((f, plain[f.name], ranges[0] if ranges else None))
    return keys


def _check_value(path: str, value: object, kind: Any) -> None:
    """Raise ConfigError unless ``value`` has the key's type ``kind`` (bool is not an int)."""
    if typing.get_origin(kind) is Literal:
        choices = typing.get_args(kind)
        if not isinstance(value, str) or value not in choices:
            shown = repr(value) if isinstance(value, str) else _toml_type(value)
            raise ConfigError(f"{path}: expected one of {', '.join(choices)}, got {shown}")
    elif typing.get_origin(kind) is tuple:
        if not isinstance(value, tuple):
            raise ConfigError(f"{path}: expected array of strings, got {_toml_type(value)}")
        for i, item in enumerate(value):
            _check_value(f"{path}[{i}]", item, str)
    elif not isinstance(value, PurePath if kind is Path else kind) or (
        kind is int and isinstance(value, bool)
    ):
        raise ConfigError(f"{path}: expected {_TOML_TYPES[kind]}, got {_toml_type(value)}")
    elif kind is Path and "\0" in str(value):
        raise ConfigError(f"{path}: a path cannot contain NUL")


def _check_keys(section: Any, prefix: str) -> None:
    """Check every scalar key of ``section`` against its type and range."""
    for f, kind, bounds in _keys(type(section)):
        value, path = getattr(section, f.name), prefix + f.name
        if dataclasses.is_dataclass(kind):
            continue
        _check_value(path, value, kind)
        size = len(value) if isinstance(value, str) else value
        if bounds and not bounds.lo <= size <= bounds.hi:
            what = f"length {size}" if isinstance(value, str) else str(value)
            raise ConfigError(f"{path}: {what} is out of range ({bounds.lo}..{bounds.hi})")


def _check_with(path: str, check: Callable[[str], object], value: str, what: str) -> None:
    """Run a ValueError-raising address check, reporting failure as a ConfigError at ``path``."""
    try:
        check(value)
    except ValueError as exc:
        raise ConfigError(f"{path}: {value!r} is not {what}: {exc}") from None


# --- sections -----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class P2PConfig:
    """Peer-to-peer networking (libp2p): where to listen, whom to dial, per-peer limits."""

    listen: str = "/ip4/127.0.0.1/tcp/26610"
    peers: tuple[str, ...] = ()
    max_frame_bytes: Annotated[int, Range(16 * KiB, MAX_MESSAGE_BYTES)] = MAX_MESSAGE_BYTES
    dial_backoff_min_ms: Annotated[int, Range(1, 60_000)] = 500
    dial_backoff_max_ms: Annotated[int, Range(1, 3_600_000)] = 30_000
    retransmit_ms: Annotated[int, Range(10, 60_000)] = 500
    gossip_heartbeat_ms: Annotated[int, Range(10, 60_000)] = 1000
    max_msgs_per_peer_per_s: Annotated[int, Range(1, 1_000_000)] = 2000

    DOCS: ClassVar[dict[str, str]] = {
        "listen": "Multiaddr to listen on, /ip4|ip6|dns/<host>/tcp/<port>; "
        "/ip4/0.0.0.0/tcp/<port> accepts peers on every interface.",
        "peers": "Validators to dial, as /ip4/<host>/tcp/<port>/p2p/<peer id>. "
        "Only peers in the genesis validator set are accepted.",
        "max_frame_bytes": "Largest frame on a consensus stream.",
        "dial_backoff_min_ms": "First redial delay after a failed dial.",
        "dial_backoff_max_ms": "Longest redial delay (the delay doubles up to it).",
        "retransmit_ms": "Resend an unacknowledged consensus frame after this.",
        "gossip_heartbeat_ms": "Gossipsub heartbeat interval.",
        "max_msgs_per_peer_per_s": "Messages accepted per peer per second; the rest are dropped.",
    }

    @classmethod
    def for_tests(cls) -> Self:
        """Any free port, fast redials and retransmission."""
        return cls(
            listen="/ip4/127.0.0.1/tcp/0",
            max_frame_bytes=256 * KiB,
            dial_backoff_min_ms=10,
            dial_backoff_max_ms=200,
            retransmit_ms=50,
            gossip_heartbeat_ms=100,
        )

    def validate(self) -> None:
        """Types, ranges, address shapes; peers unique; backoff min <= max."""
        _check_keys(self, "p2p.")
        _check_with("p2p.listen", _listen_multiaddr, self.listen, "a listen multiaddr")
        for i, addr in enumerate(self.peers):
            _check_with(f"p2p.peers[{i}]", _peer_multiaddr, addr, "a peer multiaddr")
            if addr in self.peers[:i]:
                raise ConfigError(f"p2p.peers[{i}]: {addr!r} is listed twice")
        if self.dial_backoff_min_ms > self.dial_backoff_max_ms:
            raise ConfigError(
                f"p2p.dial_backoff_min_ms: {self.dial_backoff_min_ms} is above "
                f"p2p.dial_backoff_max_ms ({self.dial_backoff_max_ms})"
            )


@dataclass(frozen=True, kw_only=True)
class ConsensusConfig:
    """Node-local consensus knobs (batching, mempool, sync); chain-wide timeouts are in genesis."""

    max_batch_txs: Annotated[int, Range(1, 10_000)] = 1000
    batch_wait_ms: Annotated[int, Range(0, 10_000)] = 100
    light_load_tx_per_s: Annotated[int, Range(0, 1_000_000)] = 150
    light_batch_wait_ms: Annotated[int, Range(0, 10_000)] = 20
    full_load_tx_per_s: Annotated[int, Range(0, 1_000_000)] = 400
    mempool_max_txs: Annotated[int, Range(1, 10_000_000)] = 5_000
    mempool_max_bytes: Annotated[int, Range(64 * KiB, 16 * GiB)] = 64 * MiB
    sync_chunk_bytes: Annotated[int, Range(4 * KiB, MAX_MESSAGE_BYTES)] = 512 * KiB

    DOCS: ClassVar[dict[str, str]] = {
        "max_batch_txs": "Most transactions in one proposed batch.",
        "batch_wait_ms": "How long the primary waits to fill a batch while its earlier blocks "
        "are in flight (an idle primary proposes at once).",
        "light_load_tx_per_s": "Below this many transactions reaching the primary a second, it "
        "waits light_batch_wait_ms instead: then the wait is most of a lender's latency, and the "
        "extra blocks (each costs every node ~4 ms of CPU) are few. 0: always batch_wait_ms.",
        "light_batch_wait_ms": "The primary's batch wait at light load (see light_load_tx_per_s); "
        "at most batch_wait_ms.",
        "full_load_tx_per_s": "From this many transactions a second the primary waits the whole "
        "batch_wait_ms; between light_load_tx_per_s and this, a wait in proportion to the rate. "
        "At least light_load_tx_per_s.",
        "mempool_max_txs": "Pending transactions kept; new ones are refused (HTTP 503) beyond "
        "this; a few seconds of the cluster's throughput keeps latency bounded under overload.",
        "mempool_max_bytes": "Total size of the pending transactions kept.",
        "sync_chunk_bytes": "Catch-up responses pack blocks up to this size; "
        "at most p2p.max_frame_bytes.",
    }

    @classmethod
    def for_tests(cls) -> Self:
        """Small batches and mempool so that tests reach the limits quickly."""
        return cls(
            max_batch_txs=50,
            batch_wait_ms=5,
            light_batch_wait_ms=5,
            mempool_max_txs=1000,
            mempool_max_bytes=4 * MiB,
            sync_chunk_bytes=64 * KiB,
        )

    def validate(self) -> None:
        """Types, ranges; the mempool holds at least one full batch; the light-load wait and
        rate are no larger than the full ones."""
        _check_keys(self, "consensus.")
        if self.full_load_tx_per_s < self.light_load_tx_per_s:
            raise ConfigError(
                f"consensus.full_load_tx_per_s: {self.full_load_tx_per_s} is below "
                f"consensus.light_load_tx_per_s ({self.light_load_tx_per_s})"
            )
        if self.light_batch_wait_ms > self.batch_wait_ms:
            raise ConfigError(
                f"consensus.light_batch_wait_ms: {self.light_batch_wait_ms} is above "
                f"consensus.batch_wait_ms ({self.batch_wait_ms}); the wait at light load "
                "is meant to be the shorter one"
            )
        if self.mempool_max_txs < self.max_batch_txs:
            raise ConfigError(
                f"consensus.mempool_max_txs: {self.mempool_max_txs} is below "
                f"consensus.max_batch_txs ({self.max_batch_txs})"
            )


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    """Where the node keeps blocks, ledger state, its votes and this agency's credit records."""

    data_dir: Path = Path("data")
    sync_writes: bool = True
    compression: Compression = "none"

    DOCS: ClassVar[dict[str, str]] = {
        "data_dir": "Data directory: LevelDB in leveldb/, the consensus write-ahead log in "
        "consensus.wal.",
        "sync_writes": "fsync every committed block; turn off only for tests.",
        "compression": "LevelDB table compression, none or snappy: snappy saves about a third "
        "of the disk and costs about three times the CPU of flushes and compactions, which "
        "come in bursts that slow the node.",
    }

    @classmethod
    def for_tests(cls) -> Self:
        """No fsync: a test's database need not survive power loss."""
        return cls(sync_writes=False)

    def validate(self) -> None:
        """Types."""
        _check_keys(self, "storage.")


@dataclass(frozen=True, kw_only=True)
class APIConfig:
    """The HTTP/JSON API (FastAPI, served by the node's own HTTP/1.1 server)."""

    listen: str = "127.0.0.1:26611"
    max_body_bytes: Annotated[int, Range(1 * KiB, 64 * MiB)] = 4 * MiB
    request_timeout_ms: Annotated[int, Range(100, 600_000)] = 10_000
    wait_commit_timeout_ms: Annotated[int, Range(100, 3_600_000)] = 30_000
    hold_input_lag_ms: Annotated[int, Range(0, 10_000)] = 150
    max_connections: Annotated[int, Range(1, 100_000)] = 1_000

    DOCS: ClassVar[dict[str, str]] = {
        "listen": "host:port to serve on ([::1]:port for IPv6).",
        "max_connections": "Client connections served at once; one more is answered 503 busy "
        "and closed. The node raises its open-file limit to fit these, its store and its peers, "
        "or refuses to start.",
        "hold_input_lag_ms": "While the node's event loop runs this late, new requests wait "
        "unread in their connections (until it is back under a third of it), so that a surge "
        "cannot crowd consensus out of the loop; 0 never holds them.",
        "max_body_bytes": "Largest request body accepted.",
        "request_timeout_ms": "Time limit for one request.",
        "wait_commit_timeout_ms": "Time limit for a request made with ?wait=commit.",
    }

    @classmethod
    def for_tests(cls) -> Self:
        """Any free port, short time limits."""
        return cls(listen="127.0.0.1:0", request_timeout_ms=2000, wait_commit_timeout_ms=5000)

    def validate(self) -> None:
        """Types, ranges, listen address."""
        _check_keys(self, "api.")
        _check_with("api.listen", split_host_port, self.listen, "a host:port listen address")


@dataclass(frozen=True, kw_only=True)
class QueriesConfig:
    """Credit queries: mode-2 lookups to the other agencies, and their quotas."""

    max_in_flight: Annotated[int, Range(1, 100_000)] = 200
    lookup_deadline_ms: Annotated[int, Range(50, 60_000)] = 1_500
    lookups_per_client_per_s: Annotated[int, Range(1, 100_000)] = 20
    lookups_per_agency_per_s: Annotated[int, Range(1, 100_000)] = 200

    DOCS: ClassVar[dict[str, str]] = {
        "max_in_flight": "Queries this agency answers at once; more are refused at once (HTTP "
        "503, Retry-After), so that a surge of lenders cannot starve consensus and every "
        "accepted query is answered in bounded time.",
        "lookup_deadline_ms": "How long a mode-2 query waits for the other agencies' records.",
        "lookups_per_client_per_s": "Mode-2 lookups this agency starts for one lender per "
        "second; more are refused (HTTP 429).",
        "lookups_per_agency_per_s": "Lookups this agency answers for one asking agency per "
        "second; more get an empty reply.",
    }

    @classmethod
    def for_tests(cls) -> Self:
        """The defaults."""
        return cls()

    def validate(self) -> None:
        """Types and ranges."""
        _check_keys(self, "queries.")


@dataclass(frozen=True, kw_only=True)
class MetricsConfig:
    """Prometheus metrics (GET /metrics) on their own port."""

    enabled: bool = True
    listen: str = "127.0.0.1:26612"

    DOCS: ClassVar[dict[str, str]] = {
        "enabled": "Serve metrics.",
        "listen": "host:port to serve on ([::1]:port for IPv6).",
    }

    @classmethod
    def for_tests(cls) -> Self:
        """Off: tests read the metrics objects directly."""
        return cls(enabled=False, listen="127.0.0.1:0")

    def validate(self) -> None:
        """Types, listen address (checked even when disabled, so enabling it cannot fail)."""
        _check_keys(self, "metrics.")
        _check_with("metrics.listen", split_host_port, self.listen, "a host:port listen address")


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """Log output (to stderr)."""

    level: LogLevel = "info"
    format: LogFormat = "json"

    DOCS: ClassVar[dict[str, str]] = {
        "level": "debug, info, warning or error.",
        "format": "json (one object a line, for collectors) or text (for people).",
    }

    @classmethod
    def for_tests(cls) -> Self:
        """Everything, readable."""
        return cls(level="debug", format="text")

    def validate(self) -> None:
        """Types and choices."""
        _check_keys(self, "logging.")


@dataclass(frozen=True, kw_only=True)
class Config:
    """A node's whole configuration. ``home`` is not in the file: it is the file's directory."""

    home: Path
    moniker: Annotated[str, Range(1, 64)]
    node_key: Path = Path("node.key")
    genesis: Path = Path("genesis.json")
    operator_token: Path = Path("operator.token")
    p2p: P2PConfig = field(default_factory=P2PConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    api: APIConfig = field(default_factory=APIConfig)
    queries: QueriesConfig = field(default_factory=QueriesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    DOCS: ClassVar[dict[str, str]] = {
        "moniker": "This node's name in logs and status: 1 to 64 printable characters.",
        "node_key": "The node's Ed25519 key (mode 0600).",
        "genesis": "The chain's genesis document.",
        "operator_token": "Bearer token for the operator's API calls (mode 0600).",
    }

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).absolute())

    @classmethod
    def default(cls, home: Path, moniker: str = "node") -> Config:
        """The production defaults for a node whose home directory is ``home``."""
        config = cls(home=home, moniker=moniker)
        config.validate()
        return config

    @classmethod
    def for_tests(cls, home: Path, moniker: str = "test-node") -> Config:
        """Short timeouts, small limits, any free ports, no fsync, metrics off."""
        config = cls(
            home=home,
            moniker=moniker,
            p2p=P2PConfig.for_tests(),
            consensus=ConsensusConfig.for_tests(),
            storage=StorageConfig.for_tests(),
            api=APIConfig.for_tests(),
            queries=QueriesConfig.for_tests(),
            metrics=MetricsConfig.for_tests(),
            logging=LoggingConfig.for_tests(),
        )
        config.validate()
        return config

    def resolve(self, path: Path) -> Path:
        """``path`` made absolute: ``~`` expanded, then a relative path taken from ``home``."""
        return self.home / path.expanduser()

    @property
    def data_path(self) -> Path:
        """The database directory, absolute."""
        return self.resolve(self.storage.data_dir)

    def validate(self) -> None:
        """Top-level keys, every section, then what spans sections: the sync chunk fits in a
        frame and no two listeners share a port."""
        _check_keys(self, "")
        if not self.moniker.isprintable() or self.moniker.strip() != self.moniker:
            raise ConfigError(
                f"moniker: {self.moniker!r} must be printable, without leading or trailing spaces"
            )
        sections = (
            self.p2p,
            self.consensus,
            self.storage,
            self.api,
            self.queries,
            self.metrics,
            self.logging,
        )
        for section in sections:
            section.validate()
        if self.consensus.sync_chunk_bytes > self.p2p.max_frame_bytes:
            raise ConfigError(
                f"consensus.sync_chunk_bytes: {self.consensus.sync_chunk_bytes} "
                f"is above p2p.max_frame_bytes ({self.p2p.max_frame_bytes})"
            )
        self._check_ports()

    def _check_ports(self) -> None:
        """Two listeners on one host and port fail at start-up (or, with libp2p's SO_REUSEPORT,
        silently share it): refuse that here. Port 0 (any free port) never collides."""
        host, port, _ = _listen_multiaddr(self.p2p.listen)
        listeners = [("p2p.listen", host, port), ("api.listen", *split_host_port(self.api.listen))]
        if self.metrics.enabled:
            listeners.append(("metrics.listen", *split_host_port(self.metrics.listen)))
        wildcard = {"0.0.0.0", "::"}
        for i, (name, name_host, name_port) in enumerate(listeners):
            for other, other_host, other_port in listeners[:i]:
                same_host = name_host == other_host or bool({name_host, other_host} & wildcard)
                if name_port and name_port == other_port and same_host:
                    raise ConfigError(f"{name}: port {name_port} is also used by {other}")

    def to_toml(self) -> str:
        """A complete, commented config.toml that :func:`load_config` reads back equal."""
        lines = [
            "# creditnet node configuration: config.toml in the node's home directory.",
            "# Relative paths are resolved against the directory holding this file.",
            "# Unknown keys are errors. Chain-wide settings (validators, consensus timeouts,",
            "# fees) live in genesis.json, not here.",
        ]
        _render_keys(self, lines)
        for f, kind, _ in _keys(Config):
            if dataclasses.is_dataclass(kind):
                lines += ["", *_comment(kind.__doc__ or ""), f"[{f.name}]"]
                _render_keys(getattr(self, f.name), lines)
        return "\n".join(lines) + "\n"


# --- reading ------------------------------------------------------------------------------------


def _from_table(cls: type[_T], table: dict[str, Any], prefix: str, **extra: Any) -> _T:
    """Build ``cls`` from a parsed TOML table: unknown and missing keys are errors, arrays become
    tuples and strings for path keys Paths; types and ranges are left to ``validate``."""
    keys = _keys(cls)
    known = [f.name for f, _, _ in keys]
    for key in table:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            guess = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(known)}){guess}")
    values: dict[str, Any] = dict(extra)
    for f, kind, _ in keys:
        path, value = prefix + f.name, table.get(f.name)
        if f.name not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: missing (required)")
            continue
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected table, got {_toml_type(value)}")
            value = _from_table(kind, value, f"{path}.")  # type: ignore[arg-type]
        elif kind is Path and isinstance(value, str):
            if not value:
                raise ConfigError(f"{path}: expected a path, got an empty string")
            value = Path(value)
        elif typing.get_origin(kind) is tuple and isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)


def load_config(path: Path) -> Config:
    """Read and validate ``path`` (a config.toml); its directory is the node's home.

    Raises ConfigError, naming the file, for a missing or unreadable file, a TOML syntax error
    (with its line) and every rule the sections' ``validate`` enforce.
    """
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (create one with `creditnet testnet`"
            " or start from config/node.example.toml)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    try:
        config = _from_table(Config, data, "", home=path.parent)
        config.validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


# --- writing ------------------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    """Render a value of a type config keys use: bool, int, str, Path or tuple of str. Strings
    are TOML basic strings: JSON's escapes are TOML's too, and TOML also wants DEL escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value:_}"
    if isinstance(value, str | PurePath):
        return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, tuple):
        items = "".join(f"    {_toml_value(item)},\n" for item in value)
        return f"[\n{items}]" if value else "[]"
    raise TypeError(f"no TOML rendering for {type(value).__name__}")


def _amount(name: str, number: int) -> str:
    """``number`` for a comment: in KiB, MiB or GiB for a ``*_bytes`` key where exact."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if name.endswith("_bytes") and number >= size and number % size == 0:
            return f"{number // size} {unit}"
    return f"{number:_}"


def _comment(text: str) -> list[str]:
    """``text`` as wrapped ``#`` comment lines."""
    return ["# " + line for line in textwrap.wrap(" ".join(text.split()), 96)]


def _render_keys(section: Any, lines: list[str]) -> None:
    """Append a ``key = value`` line for each scalar key of ``section``, after a comment: its
    DOCS entry, its range and, where the value differs from it, its default."""
    for f, kind, bounds in _keys(type(section)):
        if dataclasses.is_dataclass(kind):
            continue
        value, doc = getattr(section, f.name), section.DOCS[f.name]
        if bounds and kind is int:
            doc += f" Range {_amount(f.name, bounds.lo)}..{_amount(f.name, bounds.hi)}."
        if f.default is not dataclasses.MISSING and value != f.default:
            doc += f" Default {_toml_value(f.default)}."
        lines += ["", *_comment(doc), f"{f.name} = {_toml_value(value)}"]


# --- testnets -----------------------------------------------------------------------------------


class NodePorts(NamedTuple):
    """The ports of one testnet node, all on 127.0.0.1."""

    p2p: int
    api: int
    metrics: int


def testnet_ports(index: int, base_port: int = DEFAULT_BASE_PORT) -> NodePorts:
    """Node ``index``'s ports: p2p B+10i, API B+10i+1, metrics B+10i+2 (DESIGN.md)."""
    first = base_port + 10 * index
    if index < 0 or base_port < 1 or first + 2 > 65535:
        raise ConfigError(
            f"testnet: node {index} with base port {base_port} has no valid ports "
            "(index >= 0, 1 <= B+10i and B+10i+2 <= 65535)"
        )
    return NodePorts(first, first + 1, first + 2)


def testnet_config(
    index: int, base_port: int, peers: list[str], moniker: str, *, home: Path | None = None
) -> Config:
    """The config of testnet node ``index``: defaults, the DESIGN.md port layout on 127.0.0.1,
    and ``peers`` (the other nodes' ``/ip4/127.0.0.1/tcp/<port>/p2p/<peer id>``) to dial.

    ``home`` defaults to ``node<index>`` (the testnet layout ``DIR/node<i>``, taken from the
    working directory); it only matters for :meth:`Config.resolve`, not for ``to_toml``.
    """
    ports = testnet_ports(index, base_port)
    config = Config(
        home=Path(f"node{index}") if home is None else home,
        moniker=moniker,
        p2p=P2PConfig(listen=f"/ip4/127.0.0.1/tcp/{ports.p2p}", peers=tuple(peers)),
        api=APIConfig(listen=f"127.0.0.1:{ports.api}"),
        metrics=MetricsConfig(listen=f"127.0.0.1:{ports.metrics}"),
    )
    config.validate()
    return config
