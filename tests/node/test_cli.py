"""The ``creditnet`` command: version, testnet layout and keygen, as an operator runs them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from node.cli import main
from node.config import load_config
from node.keyfile import KeyFileError, load_key, load_token
from protocol.genesis import loads_genesis


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_version_via_python_dash_m() -> None:
    out = run_cli("--version")
    assert out.returncode == 0
    assert out.stdout.startswith("creditnet ")


def test_testnet_writes_keys_configs_and_one_genesis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "net"
    assert main(["testnet", "--nodes", "4", "--dir", str(target), "--base-port", "27000"]) == 0
    summary = json.loads(capsys.readouterr().out)
    genesis_texts = {(target / f"node{i}" / "genesis.json").read_text() for i in range(4)}
    assert len(genesis_texts) == 1
    genesis = loads_genesis(genesis_texts.pop())
    assert len(genesis.validators) == 4 and genesis.f == 1 and genesis.quorum == 3
    for i in range(4):
        home = target / f"node{i}"
        for secret in ("node.key", "operator.token"):
            assert stat.S_IMODE((home / secret).stat().st_mode) == 0o600
        identity = load_key(home / "node.key")
        assert identity.public_key == genesis.validators[i].public_key
        assert len(load_token(home / "operator.token")) == 64
        cfg = load_config(home / "config.toml")
        assert cfg.p2p.listen == f"/ip4/127.0.0.1/tcp/{27000 + 10 * i}"
        assert cfg.api.listen == f"127.0.0.1:{27001 + 10 * i}"
        assert cfg.metrics.listen == f"127.0.0.1:{27002 + 10 * i}"
        assert len(cfg.p2p.peers) == 3
        assert all(p.rsplit("/", 1)[1] != genesis.validators[i].peer_id for p in cfg.p2p.peers)
        assert summary["nodes"][i]["api"] == f"http://127.0.0.1:{27001 + 10 * i}"


def test_testnet_refuses_a_non_empty_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "keep.txt").write_text("operator data")
    assert main(["testnet", "--nodes", "4", "--dir", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "operator data"


def test_testnet_refuses_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["testnet", "--nodes", "0", "--dir", str(tmp_path / "a")]) == 2
    assert (
        main(["testnet", "--nodes", "4", "--dir", str(tmp_path / "b"), "--chain-id", "Bad Id"]) == 2
    )
    assert (
        main(["testnet", "--nodes", "4", "--dir", str(tmp_path / "c"), "--base-port", "65530"]) == 2
    )
    err = capsys.readouterr().err
    assert "--nodes" in err and "--chain-id" in err and "--base-port" in err


def test_keygen_writes_a_private_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "lender.key"
    assert main(["keygen", "--out", str(key)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert load_key(key).public_key.hex() == printed["public_key"]
    assert main(["keygen", "--out", str(key)]) == 2  # never overwrites a key
    assert "already exists" in capsys.readouterr().err


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    assert main(["keygen", "--out", str(key)]) == 0
    os.chmod(key, 0o644)
    with pytest.raises(KeyFileError, match="readable by other users"):
        load_key(key)


def test_damaged_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    assert main(["keygen", "--out", str(key)]) == 0
    doc = json.loads(key.read_text())
    doc["public_key"] = "00" * 32
    key.write_text(json.dumps(doc))
    with pytest.raises(KeyFileError, match="does not match"):
        load_key(key)
