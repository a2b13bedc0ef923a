"""``creditnet devnet``: a local consortium on loopback, for trying creditnet out.

Creates the testnet directory (or reuses one made earlier), starts one ``creditnet run`` process
per agency (logs in ``DIR/node<i>/node.log``), waits until every API answers, has each agency
commit sample record commitments through the API, shows every node's status (same height and app
hash everywhere), prints the URLs, and keeps running until Ctrl-C -- then stops every process it
started (SIGTERM, SIGKILL after 10 s), so none is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from node.config import load_config, split_host_port
from node.keyfile import load_key
from node.testnet import create_testnet
from protocol.codec import encode
from protocol.crypto import h256
from protocol.genesis import loads_genesis
from protocol.transactions import CommitmentEntry, RecordCommitment, Transaction

START_TIMEOUT_S = 60.0


def http_json(url: str, body: Any = None, *, timeout: float = 30.0) -> Any:
    """GET (or POST ``body`` as JSON) and decode the JSON answer; errors carry the API's body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        raise RuntimeError(f"{url}: HTTP {exc.code}: {text}") from None


def node_homes(directory: Path) -> list[Path]:
    homes = sorted(
        (p for p in directory.glob("node*") if (p / "config.toml").exists()),
        key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 1 << 30,
    )
    return homes


def api_url(home: Path) -> str:
    host, port = split_host_port(load_config(home / "config.toml").api.listen)
    return f"http://{host}:{port}"


def start_nodes(homes: list[Path]) -> list[subprocess.Popen[bytes]]:
    procs = []
    for home in homes:
        log = open(home / "node.log", "ab")  # noqa: SIM115 - owned by the child
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "node", "run", "--home", str(home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop_nodes(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_ready(urls: list[str], procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for url, proc in zip(urls, procs, strict=True):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"node at {url} exited with status {proc.returncode}; see its node.log"
                )
            try:
                http_json(url + "/v1/status", timeout=2)
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"node at {url} did not answer within {timeout:.0f} s"
                    ) from None
                time.sleep(0.2)


def sample_commitments(home: Path, count: int, seed: int) -> list[str]:
    """Record-commitment transactions signed by the agency of ``home`` (hex)."""
    cfg = load_config(home / "config.toml")
    identity = load_key(cfg.resolve(cfg.node_key))
    chain_id = loads_genesis(cfg.resolve(cfg.genesis).read_text(encoding="utf-8")).chain_id
    out = []
    for i in range(count):
        ref = h256(
            b"devnet-record-ref"
            + identity.public_key
            + seed.to_bytes(8, "big")
            + i.to_bytes(8, "big")
        )
        body = RecordCommitment((CommitmentEntry(ref, h256(b"digest" + ref)),))
        tx = Transaction.sign(identity, chain_id, body, nonce=seed * 1_000_000 + i)
        out.append(encode(tx).hex())
    return out


def devnet(directory: Path, nodes: int, records: int) -> int:
    """Run the devnet in the foreground (see module doc); returns the exit status."""
    if not node_homes(directory):
        create_testnet(directory, nodes)
    homes = node_homes(directory)
    urls = [api_url(h) for h in homes]
    procs = start_nodes(homes)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_signal)
    try:
        wait_ready(urls, procs, START_TIMEOUT_S)
        print(f"creditnet devnet: {len(homes)} agencies running from {directory}", flush=True)
        seed = int(time.time())
        for i, (home, url) in enumerate(zip(homes, urls, strict=True)):
            txs = sample_commitments(home, max(1, records // len(homes)), seed * 100 + i)
            res = http_json(url + "/v1/txs?wait=commit", {"txs": txs})
            done = [r for r in res["results"] if r.get("status") == "committed"]
            print(
                f"  agency-{i}: {len(done)} record commitments committed at height "
                f"{max((r['height'] for r in done), default=0)}",
                flush=True,
            )
        time.sleep(0.5)
        for i, url in enumerate(urls):
            st = http_json(url + "/v1/status")
            print(
                f"  node{i}  api {url}  height {st['height']}  app_hash {st['app_hash'][:16]}  "
                f"view {st['view']}  peers {st['peers']}  metrics "
                f"http://{load_config(homes[i] / 'config.toml').metrics.listen}/metrics",
                flush=True,
            )
        print("Ctrl-C stops every node.", flush=True)
        while True:
            for p, url in zip(procs, urls, strict=True):
                if p.poll() is not None:
                    print(
                        f"creditnet devnet: node at {url} exited ({p.returncode})", file=sys.stderr
                    )
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("\ncreditnet devnet: stopping", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"creditnet devnet: {exc}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, old)
        stop_nodes(procs)
        if os.environ.get("CREDITNET_DEVNET_QUIET") is None:
            print("creditnet devnet: all nodes stopped", flush=True)
