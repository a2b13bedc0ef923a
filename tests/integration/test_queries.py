"""Mode-1 queries end to end on a real consortium, through the operator's, the subject's and
the lender's commands: consent, fees, the sealed report, and refusals that release and charge
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from node import client
from node.keyfile import load_key
from node.records import RECORDS_NS
from node.samples import national_ids, sample_records
from node.storage import BlockStore
from protocol.codec import decode, encode
from protocol.pseudonym import pseudonym
from protocol.record import StoredRecord
from protocol.transactions import ConsentGrant, QueryRequest, Transaction
from protocol.vocabulary import Purpose
from tests.integration.cluster import Cluster, http
from tests.integration.test_consortium import metric_families, stage_counts

pytestmark = [pytest.mark.integration]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path / "net", 4, seed=int(time.time()))
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def cli(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if ok:
        assert out.returncode == 0, out.stderr
    return out


def keygen(path: Path) -> str:
    return str(json.loads(cli("keygen", "--out", str(path)).stdout)["public_key"])


def register_client(cluster: Cluster, client_pk: str, deposit: str) -> None:
    """``creditnet client register`` at agency 0 with its operator token."""
    node = cluster.nodes[0]
    cli(
        "client",
        "register",
        "--node",
        node.api,
        "--token",
        str(node.home / "operator.token"),
        "--client",
        client_pk,
        "--deposit",
        deposit,
    )


def register_subject(cluster: Cluster, national_id: str, subject_pk: str) -> None:
    node = cluster.nodes[0]
    cli(
        "subject",
        "register",
        "--node",
        node.api,
        "--token",
        str(node.home / "operator.token"),
        "--national-id",
        national_id,
        "--subject",
        subject_pk,
    )


def grant_consent(
    cluster: Cluster, key: str, national_id: str, client_pk: str, purpose: str
) -> None:
    """``creditnet consent grant`` (30 days, every category), signed with the subject's key."""
    cli(
        "consent",
        "grant",
        "--node",
        cluster.nodes[0].api,
        "--key",
        key,
        "--national-id",
        national_id,
        "--client",
        client_pk,
        "--purpose",
        purpose,
        "--days",
        "30",
    )


def balance(cluster: Cluster, i: int, key: str) -> int:
    return int(http(f"{cluster.nodes[i].api}/v1/accounts/{key}")[1]["balance"])


def test_mode_1_query_with_consent_fees_and_refusals(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.nodes[0].api
    nid = national_ids(seed=5, count=1)[0]
    records = sample_records(nid, count=3, seed=1, furnisher="agency-0")
    _load(cluster, 0, records, tmp_path)

    lender, poor, subject = tmp_path / "lender.key", tmp_path / "poor.key", tmp_path / "s.key"
    lender_pk, poor_pk, subject_pk = keygen(lender), keygen(poor), keygen(subject)
    register_client(cluster, lender_pk, "1000")
    register_client(cluster, poor_pk, "50")
    register_subject(cluster, nid, subject_pk)
    for who in (lender_pk, poor_pk):
        grant_consent(cluster, str(subject), nid, who, "loan_approval")

    out = json.loads(
        cli(
            "query",
            "--node",
            api,
            "--key",
            str(lender),
            "--national-id",
            nid,
            "--purpose",
            "loan_approval",
        ).stdout
    )
    assert out["mode"] == 1 and out["sources"] == [0] and out["height"] >= 1
    assert len(out["records"]) == 3 and {r["record_id"] for r in out["records"]} == {
        r["record_id"] for r in records
    }
    assert all("national_id" not in r for r in out["records"])
    fee = cluster.genesis.fees.query_fee
    agency0 = cluster.nodes[0].identity.public_key.hex()
    for i in range(4):  # balances moved as the fee schedule says, on every node
        cluster.wait_for(lambda i=i: balance(cluster, i, lender_pk) == 1000 - fee, 30, "fee")
        assert balance(cluster, i, agency0) == fee
    code, tx = http(f"{api}/v1/txs/{out['audit_tx']}")
    assert code == 200 and tx["ok"]

    def refused(*args: str) -> str:
        res = cli(*args, ok=False)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        return res.stderr

    q = ("query", "--node", api, "--national-id", nid)
    assert "no_consent" in refused(*q, "--key", str(lender), "--purpose", "guarantee_review")
    assert "unknown_client" in refused(*q, "--key", str(subject), "--purpose", "loan_approval")
    assert "insufficient_balance" in refused(*q, "--key", str(poor), "--purpose", "loan_approval")
    assert "check character" in refused(
        "query",
        "--node",
        api,
        "--key",
        str(lender),
        "--national-id",
        nid[:-1] + "X",
        "--purpose",
        "loan_approval",
    )
    # A consent that ran out: granted for 1.5 s, asked after.
    expires = time.time_ns() // 1_000_000 + 1500
    grant = ConsentGrant(
        pseudonym(nid, cluster.genesis.pseudonym_salt),
        bytes.fromhex(lender_pk),
        Purpose.POST_LOAN_MANAGEMENT,
        (),
        expires,
    )
    client.submit_signed(api, Transaction.sign(load_key(subject), cluster.chain_id, grant, 1))
    cluster.wait_for(lambda: time.time_ns() // 1_000_000 > expires + 100, 10, "expiry")
    assert "consent_expired" in refused(
        *q, "--key", str(lender), "--purpose", "post_loan_management"
    )
    # A signed request replayed, and one with a forged signature.
    ident = load_key(lender)
    salt = cluster.genesis.pseudonym_salt
    req = QueryRequest.sign(
        ident,
        cluster.chain_id,
        agency=cluster.nodes[0].identity.public_key,
        pseudonym=pseudonym(nid, salt),
        purpose=Purpose.LOAN_APPROVAL,
        categories=(),
        nonce=7,
        time_ms=time.time_ns() // 1_000_000,
    )
    code, first = http(f"{api}/v1/queries", {"request": encode(req).hex()})
    assert code == 200, first
    raw_answer = json.dumps(first)  # the HTTP answer carries the report only sealed
    assert nid not in raw_answer and not any(str(r["record_id"]) in raw_answer for r in records)
    opened = json.loads(ident.unseal(bytes.fromhex(first["sealed_report"])))
    assert {r["record_id"] for r in opened["records"]} == {r["record_id"] for r in records}
    code, again = http(f"{api}/v1/queries", {"request": encode(req).hex()})
    assert code == 409 and again["error"] == "replayed_request", again
    forged = QueryRequest(
        req.client,
        req.agency,
        req.pseudonym,
        req.purpose,
        req.categories,
        8,
        req.time_ms,
        req.signature,
    )
    code, body = http(f"{api}/v1/queries", {"request": encode(forged).hex()})
    assert code == 401 and body["error"] == "bad_signature", body
    stale = QueryRequest.sign(
        ident,
        cluster.chain_id,
        agency=req.agency,
        pseudonym=req.pseudonym,
        purpose=req.purpose,
        categories=(),
        nonce=9,
        time_ms=req.time_ms - 3_600_000,
    )
    code, body = http(f"{api}/v1/queries", {"request": encode(stale).hex()})
    assert code == 422 and body["error"] == "stale_request", body
    # Revoked: refused from the revocation's commit on.
    cli(
        "consent",
        "revoke",
        "--node",
        api,
        "--key",
        str(subject),
        "--national-id",
        nid,
        "--client",
        lender_pk,
        "--purpose",
        "loan_approval",
    )
    assert "consent_revoked" in refused(*q, "--key", str(lender), "--purpose", "loan_approval")
    # Two queries charged in all (the CLI one and the first signed request); refusals nothing.
    assert balance(cluster, 0, lender_pk) == 1000 - 2 * fee
    assert balance(cluster, 0, poor_pk) == 50


def _load(cluster: Cluster, i: int, records: list[dict[str, object]], tmp: Path) -> None:
    path = tmp / f"agency{i}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    node = cluster.nodes[i]
    cli(
        "records",
        "load",
        "--node",
        node.api,
        "--token",
        str(node.home / "operator.token"),
        str(path),
    )


def test_mode_2_merges_records_from_two_agencies_and_drops_a_tampered_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    api = cluster.nodes[0].api
    nid = national_ids(seed=8, count=1)[0]
    at1 = sample_records(nid, count=2, seed=1, furnisher="agency-1")
    at2 = sample_records(nid, count=3, seed=2, furnisher="agency-2")
    _load(cluster, 1, at1, tmp_path)
    _load(cluster, 2, at2, tmp_path)
    lender, subject = tmp_path / "lender.key", tmp_path / "s.key"
    lender_pk, subject_pk = keygen(lender), keygen(subject)
    register_client(cluster, lender_pk, "1000")
    register_subject(cluster, nid, subject_pk)
    grant_consent(cluster, str(subject), nid, lender_pk, "credit_card_approval")

    query = (
        "query",
        "--node",
        api,
        "--key",
        str(lender),
        "--national-id",
        nid,
        "--purpose",
        "credit_card_approval",
    )
    out = json.loads(cli(*query).stdout)
    assert out["mode"] == 2 and out["sources"] == [1, 2] and out["serving"] == [1, 2], out
    assert sorted(r["record_id"] for r in out["records"]) == sorted(
        str(r["record_id"]) for r in at1 + at2
    )
    assert {r["served_by"] for r in out["records"]} == {1, 2}
    fees = cluster.genesis.fees
    fee = fees.query_fee + 2 * fees.exchange_fee
    assert out["fee"] == fee
    keys = [n.identity.public_key.hex() for n in cluster.nodes]
    for i in range(4):
        cluster.wait_for(lambda i=i: balance(cluster, i, lender_pk) == 1000 - fee, 30, "fees")
        assert balance(cluster, i, keys[0]) == fees.query_fee
        assert balance(cluster, i, keys[1]) == fees.exchange_fee
        assert balance(cluster, i, keys[2]) == fees.exchange_fee

    # The same lender asks agency 1, which holds records itself: mode 1.
    api1 = cluster.nodes[1].api
    out1 = json.loads(
        cli(
            "query",
            "--node",
            api1,
            "--key",
            str(lender),
            "--national-id",
            nid,
            "--purpose",
            "credit_card_approval",
        ).stdout
    )
    assert out1["mode"] == 1 and out1["sources"] == [1] and len(out1["records"]) == 2
    # The subject reads both queries back, from any node, with its own key.
    cluster.wait_same_tip([0, 1, 2, 3], out1["height"])
    audit = json.loads(
        cli(
            "audit", "--node", cluster.nodes[3].api, "--key", str(subject), "--national-id", nid
        ).stdout
    )
    got = [
        (q["mode"], q["agency"], q["serving"], q["fee"], q["purpose"], q["client"])
        for q in audit["queries"]
    ]
    assert got == [
        (2, 0, [1, 2], fee, "credit_card_approval", lender_pk),
        (1, 1, [], fees.query_fee, "credit_card_approval", lender_pk),
    ], audit
    assert [q["tx"] for q in audit["queries"]] == [out["audit_tx"], out1["audit_tx"]]
    # Nobody else reads them: the lender's key is not the subject's.
    res = cli("audit", "--node", api, "--key", str(lender), "--national-id", nid, ok=False)
    assert res.returncode == 2 and "bad_signature" in res.stderr

    # Records crossed the network only sealed: no record's id, furnisher reference or subject ID
    # appears in anything any node handed to the network (consensus, gossip, lookups, replies).
    secrets_ = [nid.encode()] + [str(r["record_id"]).encode() for r in at1 + at2]
    for node in cluster.nodes:
        sent = (node.home / "sent.log").read_bytes()
        assert sent, f"node{node.index} logged nothing"
        leaked = [x for x in secrets_ if x in sent]
        assert not leaked, f"node{node.index} sent {leaked[:3]} in plaintext"

    # Agency 2's copy of one record is altered on disk: its commitment no longer matches.
    cluster.terminate(2)
    store = BlockStore.open(cluster.nodes[2].home / "data", cluster.chain_id)
    try:
        pn = pseudonym(nid, cluster.genesis.pseudonym_salt)
        key, raw = next(iter(store.private_items(RECORDS_NS, pn)))
        rec = decode(raw, StoredRecord)
        store.write_private(RECORDS_NS, {key: encode(replace(rec, balance=rec.balance + 1))})
    finally:
        store.close()
    cluster.start(2)
    cluster.wait_api(2)
    cluster.wait_for(lambda: cluster.status(0)["peers"] == 3, 60, "node2 reconnected")
    out = json.loads(cli(*query).stdout)
    assert out["mode"] == 2 and len(out["records"]) == 4, out  # 2 from agency 1, 2 of 3 from 2
    fams = metric_families(cluster.nodes[0].metrics)
    assert fams["creditnet_consensus_suspicions"][(("kind", "tampered-record"),)] >= 1
    # the answering agency timed each stage of its two mode-2 answers, the lookups included
    stages = stage_counts(cluster.nodes[0].metrics, "creditnet_query_stage_seconds")
    assert all(stages[s] >= 2 for s in ("check", "lookup", "ledger", "release")), stages
