"""Mode-1 queries end to end on a real consortium, through the operator's, the subject's and
the lender's commands: consent, fees, the sealed report, and refusals that release and charge
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.keyfile import load_key
from node.samples import national_ids, sample_records
from protocol.codec import encode
from protocol.pseudonym import pseudonym
from protocol.transactions import QueryRequest
from protocol.vocabulary import Purpose
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


def balance(cluster: Cluster, i: int, key: str) -> int:
    return int(http(f"{cluster.nodes[i].api}/v1/accounts/{key}")[1]["balance"])


def test_mode_1_query_with_consent_fees_and_refusals(cluster: Cluster, tmp_path: Path) -> None:
    api = cluster.nodes[0].api
    token = str(cluster.nodes[0].home / "operator.token")
    nid = national_ids(seed=5, count=1)[0]
    records = sample_records(nid, count=3, seed=1, furnisher="agency-0")
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    cli("records", "load", "--node", api, "--token", token, str(path))

    lender, poor, subject = tmp_path / "lender.key", tmp_path / "poor.key", tmp_path / "s.key"
    lender_pk, poor_pk, subject_pk = keygen(lender), keygen(poor), keygen(subject)
    cli(
        "client",
        "register",
        "--node",
        api,
        "--token",
        token,
        "--client",
        lender_pk,
        "--deposit",
        "1000",
    )
    cli(
        "client",
        "register",
        "--node",
        api,
        "--token",
        token,
        "--client",
        poor_pk,
        "--deposit",
        "50",
    )
    cli(
        "subject",
        "register",
        "--node",
        api,
        "--token",
        token,
        "--national-id",
        nid,
        "--subject",
        subject_pk,
    )
    for who in (lender_pk, poor_pk):
        cli(
            "consent",
            "grant",
            "--node",
            api,
            "--key",
            str(subject),
            "--national-id",
            nid,
            "--client",
            who,
            "--purpose",
            "loan_approval",
            "--days",
            "30",
        )

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
