"""Loading an agency's credit records on a real consortium: validated per line, committed on
the ledger, stored under the pseudonym -- the raw national ID stored nowhere."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.keyfile import load_token
from node.records import RECORDS_NS
from node.samples import national_ids, sample_records
from node.storage import BlockStore
from protocol.codec import decode
from protocol.pseudonym import pseudonym
from protocol.record import StoredRecord
from tests.integration.cluster import Cluster, http

pytestmark = [pytest.mark.integration]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "net", 4, seed=int(time.time()))
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def post_records(url: str, text: str, token: str | None) -> tuple[int, Any]:
    req = urllib.request.Request(url + "/v1/records", data=text.encode(), method="POST")
    req.add_header("Content-Type", "application/x-ndjson")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_records_load_commits_good_lines_reports_bad_ones_and_stores_no_raw_id(
    cluster: Cluster,
) -> None:
    ids = national_ids(seed=11, count=2)
    good = [
        r
        for i, nid in enumerate(ids)
        for r in sample_records(nid, count=3, seed=i, furnisher="bank-a")
    ]
    lines = [json.dumps(r) for r in good]
    bad_id = dict(good[0], national_id=ids[0][:-1] + ("0" if ids[0][-1] != "0" else "1"))
    lines.insert(2, json.dumps(bad_id))  # line 3: wrong check character
    lines.insert(4, "{not json")  # line 5
    lines.append(json.dumps(good[0]))  # the first record again
    node0 = cluster.nodes[0]
    token = load_token(node0.home / "operator.token")

    code, body = post_records(node0.api, "\n".join(lines), None)
    assert code == 401 and body["error"] == "unauthorized"

    code, report = post_records(node0.api, "\n".join(lines), token)
    assert code == 200, report
    assert report["stored"] == len(good), report
    assert sorted(e["line"] for e in report["errors"]) == [3, 5, len(lines)], report
    assert all(e["detail"] for e in report["errors"])
    assert "national_id" in next(e["detail"] for e in report["errors"] if e["line"] == 3)
    assert ids[0] not in json.dumps(report)  # errors name the field, never the value
    (commit,) = report["commitments"]
    assert commit["ok"] and commit["records"] == len(good)
    for node in cluster.nodes:  # the commitment is on every node's ledger
        cluster.wait_for(
            lambda n=node: http(f"{n.api}/v1/txs/{commit['tx']}")[1].get("status") == "committed",
            30,
            "commitment on every node",
        )
    # The operator's commands: generate a subject's records, load them through node1.
    node1 = cluster.nodes[1]
    third = national_ids(seed=12, count=1)[0]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "records",
            "sample",
            "--national-id",
            third,
            "--count",
            "4",
            "--furnisher",
            "bank-b",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    path = cluster.root / "bank-b.jsonl"
    path.write_text(out.stdout)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "records",
            "load",
            "--node",
            node1.api,
            "--token",
            str(node1.home / "operator.token"),
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["stored"] == 4
    # A load larger than one commitment transaction holds is split by size, every part committed.
    many = [
        json.dumps(r)
        for i, nid in enumerate(national_ids(seed=13, count=250))
        for r in sample_records(nid, count=4, seed=100 + i, furnisher="bank-b")
    ]
    code, report = post_records(
        node1.api, "\n".join(many), load_token(node1.home / "operator.token")
    )
    assert code == 200 and report["stored"] == 1000 and not report["errors"], report
    assert len(report["commitments"]) == 2 and all(c["ok"] for c in report["commitments"])
    cluster.close()

    # On disk: the records under their pseudonyms; the raw IDs nowhere in node0's files.
    salt = cluster.genesis.pseudonym_salt
    store = BlockStore.open(node0.home / "data", cluster.chain_id)
    try:
        for nid in ids:
            found = [
                decode(v, StoredRecord)
                for _, v in store.private_items(RECORDS_NS, pseudonym(nid, salt))
            ]
            assert len(found) == 3
    finally:
        store.close()
    for path in (node0.home / "data").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert all(nid.encode() not in data for nid in ids), f"raw ID found in {path}"
    assert all(nid not in (node0.home / "node.log").read_text() for nid in ids)
