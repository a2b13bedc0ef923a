"""The deployment files, checked without a Docker engine or a running systemd: the systemd unit
(``systemd-analyze verify`` and its offline security rating, and its command line against the
real CLI), the Dockerfile and the compose network (parsed; every command run through the CLI's
own parser; the testnet the init service would write created for real and checked against the
ports, healthchecks and scrape targets), and the pinned dependencies.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from node.cli import build_parser, main
from node.config import DEFAULT_BASE_PORT, load_config, parse_multiaddr, split_host_port
from node.runner import STOP_DEADLINE_S
from node.testnet import node_ports
from protocol.genesis import loads_genesis
from tests.ops.tools import CONFIG, REPO, ToolInstallError, ensure_debian_tools

pytestmark = [pytest.mark.ops]

UNIT = CONFIG / "creditnet.service"
VENV_BIN = "/opt/creditnet/bin"
"""Where the Dockerfile installs creditnet, and where the unit expects it."""
NODE_HOME = "/var/lib/creditnet"


def unit_file(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit as section -> key -> values (a key may repeat); comments skipped."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    section = ""
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        sections[section][key.strip()].append(value.strip())
    return sections


def cli(argv: list[str]) -> Any:
    """``argv`` (without the program name) parsed by the real ``creditnet`` parser."""
    return build_parser().parse_args(argv)


# --- systemd ---------------------------------------------------------------------------------


def test_systemd_unit_passes_systemd_analyze(tmp_path: Path) -> None:
    try:
        analyze = ensure_debian_tools(["systemd-analyze"], "systemd")["systemd-analyze"]
    except ToolInstallError as exc:
        pytest.fail(f"checking the unit needs systemd-analyze: {exc}", pytrace=False)
    # verify checks that ExecStart's program exists: point it at this checkout's creditnet.
    here = Path(sys.executable).parent / "creditnet"
    unit = tmp_path / "creditnet.service"
    unit.write_text(UNIT.read_text("utf-8").replace(f"{VENV_BIN}/creditnet", str(here)))
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (verify.returncode, verify.stdout + verify.stderr) == (0, "")
    security = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    overall = re.search(r"Overall exposure level for .*: ([0-9.]+)", security.stdout)
    assert security.returncode == 0 and overall, security.stdout + security.stderr
    assert float(overall.group(1)) <= 2.0


def test_systemd_unit_runs_the_real_cli_hardened() -> None:
    service = unit_file(UNIT)["Service"]
    (exec_start,) = service["ExecStart"]
    program, *args = shlex.split(exec_start)
    assert program == f"{VENV_BIN}/creditnet"
    parsed = cli(args)
    assert parsed.command == "run" and parsed.home == NODE_HOME
    assert service["WorkingDirectory"] == service["ReadWritePaths"] == [NODE_HOME]
    assert service["User"] == service["Group"] == ["creditnet"]
    assert service["KillSignal"] == ["SIGTERM"] and service["Restart"] == ["on-failure"]
    stop = service["TimeoutStopSec"][0]
    assert stop.endswith("s") and float(stop[:-1]) > STOP_DEADLINE_S + 5
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "UMask": "0077",
    }.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]
    assert service["MemoryMax"] and service["LimitNOFILE"]


# --- Docker ----------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's stages, each a list of (INSTRUCTION, arguments), continuations joined."""
    text = (REPO / "Dockerfile").read_text("utf-8")
    text = re.sub(r"\\\n", " ", text)
    stages: list[list[tuple[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), rest.strip()))
    return stages


def dockerignored(path: str) -> bool:
    patterns = [
        p.strip()
        for p in (REPO / ".dockerignore").read_text("utf-8").splitlines()
        if p.strip() and not p.startswith("#")
    ]
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatch(pre, pat) for pat in patterns for pre in prefixes)


def test_dockerfile_installs_pinned_and_runs_the_node_as_non_root() -> None:
    stages = dockerfile_stages()
    assert [args.split()[0] for s in stages for ins, args in s if ins == "FROM"] == [
        "python:3.11-slim",
        "python:3.11-slim",
    ]
    build, final = stages
    for ins, args in build:
        if ins == "COPY":
            *sources, _ = shlex.split(args)
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: no such file in the repository"
                assert not dockerignored(src), f"COPY {src}: excluded by .dockerignore"
    run = " ".join(args for ins, args in build if ins == "RUN")
    assert f"python -m venv {VENV_BIN.rpartition('/')[0]}" in run
    assert "-c config/constraints.txt ." in run
    packages = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    copied = {shlex.split(args)[0] for ins, args in build if ins == "COPY"}
    assert {p.split(".")[0] for p in packages["packages"]} <= copied

    final_dict = dict(final)
    user = final_dict["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert f"{VENV_BIN}:$PATH" in final_dict["ENV"]
    entrypoint = json.loads(final_dict["ENTRYPOINT"])
    command = json.loads(final_dict["CMD"])
    assert entrypoint == ["creditnet"]
    parsed = cli(command)
    assert parsed.command == "run" and parsed.home == NODE_HOME
    assert final_dict["WORKDIR"] == NODE_HOME and f"-o {user}" in final_dict["RUN"]
    assert [int(p) for p in final_dict["EXPOSE"].split()] == list(node_ports(0, DEFAULT_BASE_PORT))
    assert final_dict["STOPSIGNAL"] == "SIGTERM"


def test_constraints_pin_every_direct_dependency_as_pyproject_does() -> None:
    lines = [
        line
        for line in (CONFIG / "constraints.txt").read_text("utf-8").splitlines()
        if line and not line.startswith("#")
    ]
    assert all(re.fullmatch(r"[a-z0-9-]+==[\w.+-]+", line) for line in lines), lines
    pins = dict(line.split("==") for line in lines)
    project = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["project"]
    for dep in project["dependencies"]:
        name, version = dep.split("==")
        assert pins.get(name.lower()) == version, f"{name}: pyproject.toml pins {version}"


# --- compose ---------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CONFIG / "compose.yaml").read_text("utf-8"))
    return doc


def test_compose_network_is_consistent_with_the_cli_and_the_testnet_it_creates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = compose()
    services = doc["services"]
    nodes = sorted(name for name in services if name.startswith("agency-"))
    assert nodes == [f"agency-{i}" for i in range(4)]
    assert set(services) == {"init", "prometheus", *nodes}
    for name in doc["volumes"]:
        assert doc["volumes"][name] is None  # named volumes, created by compose

    # The init service: create the testnet once, with the real CLI's flags.
    init = services["init"]
    assert init["entrypoint"] == ["/bin/sh", "-c"] and init["restart"] == "no"
    guard, _, create = init["command"][0].partition("||")
    argv = shlex.split(create)
    assert argv[:2] == ["exec", "creditnet"]
    parsed = cli(argv[2:])
    assert parsed.command == "testnet" and parsed.nodes == len(nodes)
    assert parsed.hosts.split(",") == nodes, "--hosts must be the node services' DNS names"
    assert parsed.listen_host == "0.0.0.0"
    assert shlex.split(guard) == ["test", "-f", f"{parsed.dir}/node0/genesis.json"]
    assert f"creditnet-data:{NODE_HOME}" in init["volumes"] and parsed.dir.startswith(NODE_HOME)

    # Create that testnet for real, through the CLI, and read back what each node would use.
    real_dir = tmp_path / "testnet"
    assert main([str(real_dir) if a == parsed.dir else a for a in argv[2:]]) == 0
    capsys.readouterr()
    genesis = loads_genesis((real_dir / "node0" / "genesis.json").read_text("utf-8"))

    scrape = yaml.safe_load((CONFIG / "prometheus.compose.yml").read_text("utf-8"))
    targets = {
        sc["labels"]["agency"]: sc["targets"][0]
        for sc in scrape["scrape_configs"][0]["static_configs"]
    }
    for i, name in enumerate(nodes):
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (CONFIG / ".." / "Dockerfile").exists()
        assert service["image"] == init["image"]
        assert service["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
        assert f"creditnet-data:{NODE_HOME}" in service["volumes"]
        run = cli(service["command"])
        assert run.command == "run" and run.home == f"{parsed.dir}/node{i}"

        cfg = load_config(real_dir / f"node{i}" / "config.toml")
        p2p_port, api_port, metrics_port = node_ports(i, parsed.base_port)
        assert split_host_port(cfg.api.listen) == ("0.0.0.0", api_port)
        assert split_host_port(cfg.metrics.listen) == ("0.0.0.0", metrics_port)
        assert parse_multiaddr(cfg.p2p.listen, peer=False)[:2] == ("0.0.0.0", p2p_port)
        # Genesis names this node by its service name; the others dial it there.
        assert genesis.validators[i].address == f"/dns/{name}/tcp/{p2p_port}"
        assert genesis.validators[i].name == name
        peers = {parse_multiaddr(p, peer=True)[0] for p in cfg.p2p.peers}
        assert peers == set(nodes) - {name}

        # Only the API is published, on the host's loopback, at the port the node serves.
        assert service["ports"] == [f"127.0.0.1:{api_port}:{api_port}"]
        health = service["healthcheck"]["test"]
        assert health[0] == "CMD"
        status = cli(health[2:])
        assert health[1] == "creditnet" and status.command == "status"
        assert status.node == f"http://127.0.0.1:{api_port}"
        # Prometheus scrapes the metrics port over the compose network.
        assert targets[name] == f"{name}:{metrics_port}"

    prom = services["prometheus"]
    assert all(p.startswith("127.0.0.1:") for p in prom["ports"])
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus.compose.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./alerts.yml"
    for source in ("./prometheus.compose.yml", "./alerts.yml"):
        assert (CONFIG / source).exists()
    assert scrape["rule_files"] == ["alerts.yml"]
