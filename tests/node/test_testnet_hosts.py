"""``creditnet testnet --hosts ... --listen-host ...``: a testnet whose nodes are not all on one
loopback interface (containers reaching each other by service name, one VM per agency)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node import testnet
from node.cli import main
from node.config import load_config, parse_multiaddr
from node.testnet import create_testnet
from protocol.genesis import loads_genesis

NAMES = ["agency-0", "agency-1", "agency-2", "agency-3"]


def test_defaults_are_unchanged_loopback_addresses(tmp_path: Path) -> None:
    nodes = create_testnet(tmp_path / "net", 4, base_port=27100)
    genesis = loads_genesis((tmp_path / "net" / "node0" / "genesis.json").read_text())
    assert [v.address for v in genesis.validators] == [
        f"/ip4/127.0.0.1/tcp/{27100 + 10 * i}" for i in range(4)
    ]
    assert [n.api_url for n in nodes] == [f"http://127.0.0.1:{27101 + 10 * i}" for i in range(4)]
    cfg = load_config(tmp_path / "net" / "node1" / "config.toml")
    assert cfg.p2p.listen == "/ip4/127.0.0.1/tcp/27110"
    assert all(p.startswith("/ip4/127.0.0.1/tcp/") for p in cfg.p2p.peers)


def test_hosts_and_listen_host_give_dns_peers_and_wildcard_listeners(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "net"
    args = ["testnet", "--nodes", "4", "--dir", str(target), "--base-port", "27200"]
    assert main([*args, "--hosts", ",".join(NAMES), "--listen-host", "0.0.0.0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    genesis = loads_genesis((target / "node0" / "genesis.json").read_text())
    for i, name in enumerate(NAMES):
        p2p = 27200 + 10 * i
        assert genesis.validators[i].address == f"/dns/{name}/tcp/{p2p}"
        cfg = load_config(target / f"node{i}" / "config.toml")
        assert cfg.p2p.listen == f"/ip4/0.0.0.0/tcp/{p2p}"
        assert cfg.api.listen == f"0.0.0.0:{p2p + 1}"
        assert cfg.metrics.listen == f"0.0.0.0:{p2p + 2}"
        dialled = {parse_multiaddr(p, peer=True)[:2] for p in cfg.p2p.peers}
        assert dialled == {(n, 27200 + 10 * j) for j, n in enumerate(NAMES) if j != i}
        assert summary["nodes"][i]["p2p"] == f"/dns/{name}/tcp/{p2p}"
        assert summary["nodes"][i]["api"] == f"http://{name}:{p2p + 1}"
        assert summary["nodes"][i]["metrics"] == f"http://{name}:{p2p + 2}/metrics"


def test_ip_hosts_and_an_ipv6_listener(tmp_path: Path) -> None:
    hosts = ["10.0.0.1", "10.0.0.2", "fd00::3"]
    nodes = create_testnet(tmp_path / "net", 3, base_port=27300, hosts=hosts, listen_host="::")
    assert [n.address for n in nodes] == [
        "/ip4/10.0.0.1/tcp/27300",
        "/ip4/10.0.0.2/tcp/27310",
        "/ip6/fd00::3/tcp/27320",
    ]
    assert nodes[2].api_url == "http://[fd00::3]:27321"
    cfg = load_config(tmp_path / "net" / "node0" / "config.toml")
    assert cfg.p2p.listen == "/ip6/::/tcp/27300"
    assert cfg.api.listen == "[::]:27301" and cfg.metrics.listen == "[::]:27302"


def test_a_specific_listen_address_is_also_where_peers_are_dialled(tmp_path: Path) -> None:
    nodes = create_testnet(tmp_path / "net", 2, base_port=27400, listen_host="127.0.0.2")
    assert [n.address for n in nodes] == ["/ip4/127.0.0.2/tcp/27400", "/ip4/127.0.0.2/tcp/27410"]
    assert load_config(tmp_path / "net" / "node1" / "config.toml").api.listen == "127.0.0.2:27411"


@pytest.mark.parametrize(
    ("hosts", "listen", "message"),
    [
        (["a", "b"], "127.0.0.1", "names 2 hosts for 4 nodes"),
        (["a", "b", "bad host", "d"], "127.0.0.1", "'bad host' is not an IP address or DNS name"),
        (None, "localhost", "--listen-host 'localhost' must be an IP address"),
    ],
)
def test_bad_hosts_are_refused_before_anything_is_written(
    tmp_path: Path, hosts: list[str] | None, listen: str, message: str
) -> None:
    with pytest.raises(testnet.TestnetError, match=message):
        create_testnet(tmp_path / "net", 4, hosts=hosts, listen_host=listen)
    assert not (tmp_path / "net").exists()


def test_the_cli_reports_bad_hosts_as_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["testnet", "--nodes", "4", "--dir", str(tmp_path / "n"), "--hosts", "a,b"]) == 2
    assert "--hosts names 2 hosts for 4 nodes" in capsys.readouterr().err
