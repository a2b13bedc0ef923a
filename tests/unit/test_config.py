"""Node configuration: the example file, defaults, the TOML round trip and every kind of error."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

# The module, not its names: pytest would collect ``testnet_config`` as a test function.
from node import config as cfg
from node.config import Config, ConfigError, load_config
from protocol.crypto import Identity, peer_id

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "node.example.toml"
PEER_A = peer_id(Identity(b"\x01" * 32).public_key)
PEER_B = peer_id(Identity(b"\x02" * 32).public_key)
LIBP2P_PEER = "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"  # made by py-libp2p


def write(home: Path, text: str) -> Path:
    path = home / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(home: Path, text: str) -> Config:
    return load_config(write(home, text))


def test_example_file_loads_with_default_values(tmp_path: Path) -> None:
    example = write(tmp_path, EXAMPLE.read_text(encoding="utf-8"))
    assert load_config(example) == Config.default(tmp_path, moniker="my-agency")


def test_example_file_is_the_rendered_defaults() -> None:
    rendered = Config.default(EXAMPLE.parent, moniker="my-agency").to_toml()
    assert EXAMPLE.read_text(encoding="utf-8") == rendered, (
        "config/node.example.toml is out of date; regenerate it with\n"
        "  .venv/bin/python -c 'from pathlib import Path; from node.config import Config; "
        'print(Config.default(Path("."), "my-agency").to_toml(), end="")\' '
        "> config/node.example.toml"
    )


def test_defaults_and_test_profile_validate(tmp_path: Path) -> None:
    for config in (Config.default(tmp_path), Config.for_tests(tmp_path)):
        config.validate()
        assert config.home == tmp_path
    fast = Config.for_tests(tmp_path)
    assert fast.p2p.retransmit_ms < Config.default(tmp_path).p2p.retransmit_ms
    assert fast.consensus.mempool_max_txs < Config.default(tmp_path).consensus.mempool_max_txs
    assert not fast.storage.sync_writes


def test_only_moniker_is_required(tmp_path: Path) -> None:
    assert load_text(tmp_path, 'moniker = "a"\n') == Config.default(tmp_path, moniker="a")
    with pytest.raises(ConfigError, match=r"moniker: missing \(required\)"):
        load_text(tmp_path, "[p2p]\n")


def custom_config(home: Path) -> Config:
    """Every value away from its default, with strings that need escaping."""
    base = Config.for_tests(home, moniker='Agence "Crédit" \\ Nord')
    return dataclasses.replace(
        base,
        node_key=Path("/etc/creditnet/node.key"),
        genesis=Path("../shared/genesis.json"),
        p2p=dataclasses.replace(
            base.p2p,
            listen="/ip6/::1/tcp/4001",
            peers=(
                f"/ip4/10.0.0.2/tcp/26610/p2p/{PEER_A}",
                f"/dns/b.example/tcp/1/p2p/{PEER_B}",
                f"/dns4/c.example./tcp/65535/p2p/{LIBP2P_PEER}",
            ),
        ),
        storage=dataclasses.replace(base.storage, data_dir=Path("odd\tname\x7f/データ")),
        api=dataclasses.replace(base.api, listen="[::1]:8080"),
        metrics=dataclasses.replace(base.metrics, enabled=True, listen="localhost:9100"),
    )


@pytest.mark.parametrize("make", [Config.default, Config.for_tests, custom_config])
def test_to_toml_loads_back_equal(tmp_path: Path, make: Callable[[Path], Config]) -> None:
    config = make(tmp_path)
    config.validate()
    assert load_text(tmp_path, config.to_toml()) == config


def test_relative_paths_resolve_against_home(tmp_path: Path) -> None:
    config = load_text(tmp_path, 'moniker = "a"\ngenesis = "/srv/genesis.json"\n')
    assert config.resolve(config.node_key) == tmp_path / "node.key"
    assert config.resolve(config.genesis) == Path("/srv/genesis.json")
    assert config.data_path == tmp_path / "data"
    assert config.node_key == Path("node.key")  # kept as written, so to_toml stays portable


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # unknown keys, at the top level and nested, with the known ones listed
        ('listn = "x"', "listn: unknown key (known: moniker, node_key, genesis,"),
        ('[p2p]\nlistn = "x"', "p2p.listn: unknown key (known: listen, peers, max_frame_bytes,"),
        ('[p2p]\nlistn = "x"', "did you mean 'listen'?"),
        ("[p2p.extra]\na = 1", "p2p.extra: unknown key"),
        ("[tracing]\na = 1", "tracing: unknown key"),
        # wrong types
        ('[p2p]\nretransmit_ms = "500"', "p2p.retransmit_ms: expected integer, got string"),
        ("[p2p]\nretransmit_ms = true", "p2p.retransmit_ms: expected integer, got boolean"),
        ("[p2p]\nretransmit_ms = 500.0", "p2p.retransmit_ms: expected integer, got float"),
        ("[storage]\nsync_writes = 1", "storage.sync_writes: expected boolean, got integer"),
        ("[storage]\ndata_dir = 5", "storage.data_dir: expected string (a path), got integer"),
        ('[storage]\ndata_dir = ""', "storage.data_dir: expected a path, got an empty string"),
        ("p2p = 1", "p2p: expected table, got integer"),
        ('[p2p]\npeers = "x"', "p2p.peers: expected array of strings, got string"),
        ('[p2p]\npeers = ["/ip4/1.2.3.4/tcp/1/p2p/x", 7]', "p2p.peers[1]: expected string"),
        ("moniker = 1979-05-27", "moniker: expected string, got date/time"),
        ('[logging]\nlevel = "verbose"', "logging.level: expected one of debug, info, warning"),
        ('[storage]\ncompression = "zstd"', "storage.compression: expected one of none, snappy"),
        # out of range
        ("[p2p]\nmax_frame_bytes = 2097152", "p2p.max_frame_bytes: 2097152 is out of range"),
        ("[p2p]\nmax_frame_bytes = 2097152", "(16384..1048576)"),
        ("[api]\nrequest_timeout_ms = 0", "api.request_timeout_ms: 0 is out of range (100.."),
        ("[consensus]\nmax_batch_txs = -1", "consensus.max_batch_txs: -1 is out of range"),
        ('moniker = ""', "moniker: length 0 is out of range (1..64)"),
        (f'moniker = "{"x" * 65}"', "moniker: length 65 is out of range (1..64)"),
        ('moniker = "a\\u0007"', "moniker: 'a\\x07' must be printable"),
        # rules that span keys or sections
        ("[p2p]\ndial_backoff_min_ms = 5000\ndial_backoff_max_ms = 100", "p2p.dial_backoff_min_ms"),
        ("[consensus]\nmax_batch_txs = 100\nmempool_max_txs = 10", "consensus.mempool_max_txs"),
        ("[consensus]\nbatch_wait_ms = 10", "consensus.light_batch_wait_ms: 20 is above"),
        ("[api]\nmax_connections = 0", "api.max_connections: 0 is out of range (1..100000)"),
        ("[consensus]\nlight_load_tx_per_s = 500", "consensus.full_load_tx_per_s: 400 is below"),
        ("[p2p]\nmax_frame_bytes = 65536", "consensus.sync_chunk_bytes: 524288 is above p2p."),
        ('[api]\nlisten = "127.0.0.1:26610"', "api.listen: port 26610 is also used by p2p.listen"),
        ('[metrics]\nlisten = "0.0.0.0:26611"', "metrics.listen: port 26611 is also used by api"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(
    tmp_path: Path, toml: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        text = toml if toml.startswith("moniker") else f'moniker = "node"\n{toml}'
        load_text(tmp_path, text + "\n")
    assert expected in str(info.value)
    assert str(tmp_path / "config.toml") in str(info.value)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("/ip4/127.0.0.1/tcp", "expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>"),
        ("ip4/127.0.0.1/tcp/1", "expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>"),
        ("/ip4/127.0.0.1/udp/1", "expected /ip4|ip6|dns|dns4|dns6/<host>/tcp/<port>"),
        ("/unix/x/tcp/1", "unsupported protocol /unix"),
        ("/ip4/256.0.0.1/tcp/1", "bad ip4 host '256.0.0.1'"),
        ("/ip6/127.0.0.1/tcp/1", "bad ip6 host"),
        ("/dns/bad_host/tcp/1", "bad dns host"),
        ("/ip4/127.0.0.1/tcp/65536", "bad port '65536'"),
        ("/ip4/127.0.0.1/tcp/http", "bad port 'http'"),
        (f"/ip4/127.0.0.1/tcp/1/p2p/{PEER_A}", "expected /ip4|"),
    ],
)
def test_bad_listen_multiaddr(tmp_path: Path, listen: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=r"p2p\.listen: .* is not a listen multiaddr") as info:
        load_text(tmp_path, f'moniker = "n"\n[p2p]\nlisten = "{listen}"\n')
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("/ip4/10.0.0.2/tcp/26610", "/p2p/<peer id>"),
        (f"/ip4/10.0.0.2/tcp/0/p2p/{PEER_A}", "bad port '0'"),
        (f"/ip4/10.0.0.2/tcp/1/p2p/{PEER_A[:-1]}", "is not an Ed25519 peer id"),
        (f"/ip4/10.0.0.2/tcp/1/p2p/1{PEER_A}", "is not an Ed25519 peer id"),  # not canonical
        (f"/ip4/10.0.0.2/tcp/1/p2p/{PEER_A}0", "'0' is not a base58 character"),
        ("/ip4/10.0.0.2/tcp/1/p2p/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", "Ed25519"),
        (f"/ip4/1.2.3/tcp/1/p2p/{PEER_A}", "bad ip4 host '1.2.3'"),
        (f"/dns/1.2.3/tcp/1/p2p/{PEER_A}", "bad dns host '1.2.3'"),
    ],
)
def test_bad_peer_multiaddr(tmp_path: Path, peer: str, expected: str) -> None:
    text = f'moniker = "n"\n[p2p]\npeers = ["/dns4/ok.example/tcp/1/p2p/{PEER_B}", "{peer}"]\n'
    with pytest.raises(ConfigError, match=r"p2p\.peers\[1\]: .* is not a peer multiaddr") as info:
        load_text(tmp_path, text)
    assert expected in str(info.value)


def test_duplicate_peer(tmp_path: Path) -> None:
    peer = f"/ip4/10.0.0.2/tcp/1/p2p/{PEER_A}"
    with pytest.raises(ConfigError, match=r"p2p\.peers\[1\]: .* is listed twice"):
        load_text(tmp_path, f'moniker = "n"\n[p2p]\npeers = ["{peer}", "{peer}"]\n')


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1", "expected host:port"),
        (":8080", "expected host:port"),
        ("127.0.0.1:65536", "bad port '65536'"),
        ("127.0.0.1:", "bad port ''"),
        ("::1:8080", "an IPv6 host goes in brackets"),
        ("[127.0.0.1]:8080", "bad ip6 host"),
        ("bad_host:8080", "bad dns host"),
    ],
)
def test_bad_api_and_metrics_listen(tmp_path: Path, listen: str, expected: str) -> None:
    for section in ("api", "metrics"):
        with pytest.raises(ConfigError, match=rf"{section}\.listen: .* host:port") as info:
            load_text(tmp_path, f'moniker = "n"\n[{section}]\nlisten = "{listen}"\n')
        assert expected in str(info.value)


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, 'moniker = "n"\n\n[p2p]\nlisten "/ip4/127.0.0.1/tcp/1"\n')
    message = str(info.value)
    assert str(tmp_path / "config.toml") in message
    assert "TOML syntax error" in message
    assert "line 4" in message


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"TOML syntax error.*line 2"):
        load_text(tmp_path, 'moniker = "a"\nmoniker = "b"\n')


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "config.toml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(missing)
    assert str(missing) in str(info.value)


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path)  # a directory
    path = tmp_path / "config.toml"
    path.write_bytes(b'moniker = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


def test_validate_catches_values_built_in_code(tmp_path: Path) -> None:
    config = Config.default(tmp_path)
    bad = dataclasses.replace(config, p2p=dataclasses.replace(config.p2p, retransmit_ms=True))
    with pytest.raises(ConfigError, match=r"p2p\.retransmit_ms: expected integer, got boolean"):
        bad.validate()
    with pytest.raises(ConfigError, match="moniker: length 0"):
        Config.default(tmp_path, moniker="")


def test_testnet_port_layout(tmp_path: Path) -> None:
    for index in range(4):
        peers = [
            f"/ip4/127.0.0.1/tcp/{26600 + 10 * j}/p2p/{PEER_A}" for j in range(4) if j != index
        ]
        config = cfg.testnet_config(index, 26600, peers, f"agency-{index}", home=tmp_path)
        p2p = 26600 + 10 * index
        assert config.p2p.listen == f"/ip4/127.0.0.1/tcp/{p2p}"
        assert config.api.listen == f"127.0.0.1:{p2p + 1}"
        assert config.metrics.listen == f"127.0.0.1:{p2p + 2}"
        assert config.p2p.peers == tuple(peers)
        assert config.moniker == f"agency-{index}"
        assert cfg.testnet_ports(index, 26600) == (p2p, p2p + 1, p2p + 2)
        assert load_text(tmp_path, config.to_toml()) == config


def test_testnet_ports_must_fit(tmp_path: Path) -> None:
    assert cfg.testnet_ports(3, 65500) == (65530, 65531, 65532)
    for index, base in [(4, 65500), (-1, 26600), (0, 0)]:
        with pytest.raises(ConfigError, match=f"testnet: node {index} with base port {base}"):
            cfg.testnet_config(index, base, [], "n", home=tmp_path)
