"""``creditnet devnet``: a local consortium on loopback, for trying creditnet out.

Creates the testnet directory (or reuses one made earlier), starts one ``creditnet run`` process
per agency (logs in ``DIR/node<i>/node.log``), waits until every API answers, and loads realistic
sample credit records (:mod:`node.samples`): ``--records`` in all, about a subject, spread over
two or three agencies each, every agency its own furnisher (``agency-<i>``) loading through its
own node's ``POST /v1/records`` with its operator token, so subjects have records at several
agencies. The subjects and records come from a fixed seed (:data:`SAMPLE_SEED`): a devnet is
reproducible, and a re-run on the same directory loads the same records again (an agency may
re-commit its own record refs). The subjects' national IDs, with which agencies hold how many of
their records, go to ``DIR/subjects.json`` -- synthetic sample data for whoever tries the devnet,
on this machine only, never sent to peers. Then it shows every node's status (same height and app
hash everywhere), prints the URLs, and keeps running until Ctrl-C -- then stops every process it
started (SIGTERM, SIGKILL after 10 s), so none is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from node import client
from node.config import load_config, split_host_port
from node.keyfile import load_key, load_token, write_key
from node.samples import national_ids, sample_records
from node.testnet import TestnetError, create_testnet
from protocol.crypto import Identity
from protocol.vocabulary import Purpose

START_TIMEOUT_S = 60.0
SAMPLE_SEED = 2026
"""Seed of the sample subjects and records: the same devnet data on every run and machine."""
SUBJECTS_FILE = "subjects.json"
MAX_RECORDS = 100_000
POST_BATCH = 1000
"""Records a ``POST /v1/records``: one commitment transaction each."""


def node_homes(directory: Path) -> list[Path]:
    homes = sorted(
        (p for p in directory.glob("node*") if (p / "config.toml").exists()),
        key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else 1 << 30,
    )
    return homes


def operator_token(home: Path) -> Path:
    """The operator token file of the node in ``home`` (``operator.token`` unless configured)."""
    cfg = load_config(home / "config.toml")
    return cfg.resolve(cfg.operator_token)


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
    """SIGTERM every node, SIGKILL those still running after ``timeout``. Every wait is bounded,
    so a stuck process cannot hang the devnet's exit."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5.0)


def wait_ready(urls: list[str], procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for url, proc in zip(urls, procs, strict=True):
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"node at {url} exited with status {proc.returncode}; see its node.log"
                )
            try:
                client.call(url + "/v1/status", timeout=2)
                break
            except client.ClientError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"node at {url} did not answer within {timeout:.0f} s"
                    ) from None
                time.sleep(0.2)


def subject_count(records: int) -> int:
    """How many sample subjects share ``records`` records: one per eight, at least three."""
    return min(records, max(3, records // 8))


def plan_samples(
    agencies: int, records: int, seed: int = SAMPLE_SEED
) -> list[list[dict[str, object]]]:
    """Per agency (index ``i``, furnisher ``agency-<i>``), its sample records.

    ``records`` in all, shared evenly by :func:`subject_count` subjects from
    :func:`~node.samples.national_ids`; each subject's records are spread over two or three
    agencies, taken in turn round the consortium so every agency gets some when there are enough
    subjects. The same arguments give the same records on every run and every machine.
    """
    out: list[list[dict[str, object]]] = [[] for _ in range(agencies)]
    ids = national_ids(seed, subject_count(records))
    rng = random.Random(f"creditnet-devnet/v1|{seed}")
    turn = 0
    for k, nid in enumerate(ids):
        quota = records // len(ids) + (1 if k < records % len(ids) else 0)
        spread = min(agencies, quota, rng.choice((2, 3)))
        holders = sorted((turn + j) % agencies for j in range(spread))
        turn += spread
        for j, agency in enumerate(holders):
            count = quota // spread + (1 if j < quota % spread else 0)
            out[agency] += sample_records(nid, count=count, seed=seed, furnisher=f"agency-{agency}")
    return out


def post_records(
    url: str, token: str, records: list[dict[str, object]], *, timeout: float = 120.0
) -> dict[str, Any]:
    """``POST /v1/records`` (operator token) of ``records`` as JSON lines; the load report."""
    body = "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in records)
    return client.post_records(url, token, body.encode(), timeout=timeout)


@dataclass
class AgencyLoad:
    """What one agency's node stored of its sample records."""

    stored: list[dict[str, object]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    heights: set[int] = field(default_factory=set)


def load_samples(url: str, token: str, records: list[dict[str, object]]) -> AgencyLoad:
    """Load ``records`` through the node at ``url``, :data:`POST_BATCH` a request."""
    load = AgencyLoad()
    for first in range(0, len(records), POST_BATCH):
        batch = records[first : first + POST_BATCH]
        report = post_records(url, token, batch)
        load.stored += [batch[r["line"] - 1] for r in report["records"]]
        load.errors += report["errors"]
        load.heights |= {c["height"] for c in report["commitments"] if c.get("ok")}
    return load


def load_line(agency: int, load: AgencyLoad) -> str:
    """The output line of one agency's load."""
    name = f"agency-{agency} (node{agency})"
    if not load.stored and not load.errors:
        return f"  {name}: no sample records"
    subjects = len({r["national_id"] for r in load.stored})
    heights = sorted(load.heights)
    where = (
        f"committed at height {heights[0]}"
        if len(heights) == 1
        else f"committed at heights {', '.join(map(str, heights))}"
        if heights
        else "not committed"
    )
    line = f"  {name}: {len(load.stored)} records stored ({subjects} subjects), commitment {where}"
    if load.errors:
        e = load.errors[0]
        line += f"; {len(load.errors)} refused (first: {e.get('error')}: {e.get('detail')})"
    return line


def subjects_summary(ids: list[str], loads: list[AgencyLoad], seed: int) -> dict[str, Any]:
    """The sample subjects: national ID and which agencies hold how many of their records."""
    held: dict[str, dict[str, int]] = {nid: {} for nid in ids}
    for load in loads:
        for r in load.stored:
            agencies = held.setdefault(str(r["national_id"]), {})
            furnisher = str(r["furnisher_id"])
            agencies[furnisher] = agencies.get(furnisher, 0) + 1
    return {
        "about": "Synthetic sample subjects loaded by 'creditnet devnet' (seed "
        f"{seed}); the national IDs to query. Sample data for this machine only.",
        "seed": seed,
        "subjects": [
            {
                "national_id": nid,
                "records": sum(agencies.values()),
                "agencies": dict(sorted(agencies.items())),
            }
            for nid, agencies in held.items()
        ],
    }


def write_json(path: Path, doc: Any) -> None:
    """Replace ``path`` with ``doc`` as indented JSON (atomically)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def settled_status(urls: list[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every node's status, once they show one height and app hash (or after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        statuses = [client.call(url + "/v1/status") for url in urls]
        if len({(s["height"], s["app_hash"]) for s in statuses}) == 1:
            return statuses
        if time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def _key(path: Path) -> Identity:
    """The devnet's lender or subject key at ``path``, created on first use (0600)."""
    if not path.exists():
        write_key(path, Identity.generate())
    return load_key(path)


def show_queries(
    directory: Path, urls: list[str], tokens: list[str], summary: dict[str, Any]
) -> None:
    """The source paper's two flows, asked at agency 0 by lender C1: mode 1 for a subject whose
    records agency 0 holds, mode 2 for one whose records only other agencies hold."""
    subjects = summary.get("subjects", [])
    local = next((s for s in subjects if "agency-0" in s["agencies"]), None)
    remote = next((s for s in subjects if "agency-0" not in s["agencies"]), None)
    if local is None and remote is None:
        return
    lender = _key(directory / "lender-c1.key")
    base = urls[0]
    try:
        client.call(
            base + "/v1/clients",
            {"client": lender.public_key.hex(), "deposit": 100_000, "name": "C1"},
            token=tokens[0],
        )
    except client.ClientError as exc:
        if "client_exists" not in str(exc):
            raise
    print(
        f"  lender C1 ({lender.public_key.hex()[:16]}, key {directory / 'lender-c1.key'}) "
        "registered at agency-0",
        flush=True,
    )
    for label, subject in (("mode 1", local), ("mode 2", remote)):
        if subject is None:
            continue
        nid = str(subject["national_id"])
        key = _key(directory / f"subject-{nid[-4:]}.key")
        pn = client.subject_pseudonym(base, nid)
        try:
            client.call(
                base + "/v1/subjects",
                {"pseudonym": pn.hex(), "subject": key.public_key.hex()},
                token=tokens[0],
            )
        except client.ClientError as exc:
            if "subject_exists" not in str(exc):
                raise
        client.consent(base, key, nid, lender.public_key, Purpose.LOAN_APPROVAL, grant=True)
        answer = client.query(base, lender, nid, Purpose.LOAN_APPROVAL)
        held = ", ".join(f"{a}: {n}" for a, n in subject["agencies"].items())
        print(
            f"  {label} query at agency-0 for subject ...{nid[-4:]} (records at {held}): "
            f"mode {answer['mode']}, sources {answer['sources']}, "
            f"{len(answer['records'])} records, fee {answer['fee']}, "
            f"audit tx {answer['audit_tx'][:16]} at height {answer['height']}",
            flush=True,
        )


def devnet(directory: Path, nodes: int, records: int) -> int:
    """Run the devnet in the foreground (see module doc); returns the exit status."""
    if not 0 <= records <= MAX_RECORDS:
        raise TestnetError(f"--records must be 0..{MAX_RECORDS}, got {records}")
    if not node_homes(directory):
        create_testnet(directory, nodes)
    homes = node_homes(directory)
    urls = [api_url(h) for h in homes]
    tokens = [load_token(operator_token(h)) for h in homes]
    plan = plan_samples(len(homes), records)
    procs = start_nodes(homes)
    # Ctrl-C or SIGTERM: while setting up, interrupt whatever runs (KeyboardInterrupt); once
    # running, only set a flag the idle loop checks -- an exception raised at an arbitrary point
    # (inside Popen.poll, say) could leave a process's internal lock held and hang the stop.
    stopping = False
    running = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if not running:
            raise KeyboardInterrupt

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        wait_ready(urls, procs, START_TIMEOUT_S)
        print(f"creditnet devnet: {len(homes)} agencies running from {directory}", flush=True)
        loads = []
        for i, (url, token) in enumerate(zip(urls, tokens, strict=True)):
            load = load_samples(url, token, plan[i])
            loads.append(load)
            print(load_line(i, load), flush=True)
        subjects_file = directory / SUBJECTS_FILE
        ids = national_ids(SAMPLE_SEED, subject_count(records))
        write_json(subjects_file, subjects_summary(ids, loads, SAMPLE_SEED))
        print(
            f"  {len(ids)} sample subjects (national IDs, agencies holding their records) "
            f"in {subjects_file}",
            flush=True,
        )
        show_queries(directory, urls, tokens, subjects_summary(ids, loads, SAMPLE_SEED))
        for i, (url, st) in enumerate(zip(urls, settled_status(urls), strict=True)):
            print(
                f"  node{i}  api {url}  height {st['height']}  app_hash {st['app_hash'][:16]}  "
                f"view {st['view']}  peers {st['peers']}  metrics "
                f"http://{load_config(homes[i] / 'config.toml').metrics.listen}/metrics",
                flush=True,
            )
        running = True
        print("Ctrl-C stops every node.", flush=True)
        while not stopping:
            for p, url in zip(procs, urls, strict=True):
                if p.poll() is not None:
                    print(
                        f"creditnet devnet: node at {url} exited ({p.returncode})", file=sys.stderr
                    )
                    return 1
            time.sleep(0.2)
        print("\ncreditnet devnet: stopping", flush=True)
        return 0
    except KeyboardInterrupt:
        print("\ncreditnet devnet: stopping", flush=True)
        return 0
    except (OSError, RuntimeError, client.ClientError) as exc:
        print(f"creditnet devnet: {exc}", file=sys.stderr)
        return 1
    finally:
        running = True  # a second Ctrl-C while stopping changes nothing: the stop is bounded
        stop_nodes(procs)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if os.environ.get("CREDITNET_DEVNET_QUIET") is None:
            print("creditnet devnet: all nodes stopped", flush=True)
