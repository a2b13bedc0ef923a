"""The client side of the product surface: what ``creditnet pseudonym|client|subject|consent|
query`` do for an operator, a subject or a lender, over a node's HTTP API.

National IDs are turned into pseudonyms here, on the caller's machine, with the network's salt
(``GET /v1/chain``): the raw ID is never sent. Subjects and lenders sign with their own key files
(``creditnet keygen``); a query's report comes back sealed to the lender's key and is opened here.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

from protocol.codec import encode
from protocol.crypto import CryptoError, Domain, Identity
from protocol.pseudonym import pseudonym
from protocol.transactions import ConsentGrant, ConsentRevoke, QueryRequest, Transaction
from protocol.vocabulary import Category, Purpose

DAY_MS = 86_400_000


class ClientError(Exception):
    """A call that failed; the message is the node's error (code and detail) or the cause."""


def call(url: str, body: Any = None, *, token: str | None = None, timeout: float = 60) -> Any:
    """GET, or POST ``body`` as JSON; returns the decoded answer or raises ClientError."""
    data = None if body is None else json.dumps(body).encode()
    return _request(url, data, "application/json", token=token, timeout=timeout)


def post_records(node: str, token: str, lines: bytes, *, timeout: float = 120) -> dict[str, Any]:
    """``POST /v1/records`` (operator) of standard-v1 records as JSON lines; the load report."""
    url = node.rstrip("/") + "/v1/records"
    report = _request(url, lines, "application/x-ndjson", token=token, timeout=timeout)
    assert isinstance(report, dict)
    return report


def _request(
    url: str, data: bytes | None, content_type: str, *, token: str | None, timeout: float
) -> Any:
    req = urllib.request.Request(url, data=data, method="GET" if data is None else "POST")
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            err = json.loads(text)
            text = f"{err['error']}: {err['detail']}"
        except (ValueError, KeyError, TypeError):
            pass
        raise ClientError(f"HTTP {exc.code}: {text}") from None
    except (OSError, ValueError) as exc:
        raise ClientError(f"{url}: {exc}") from exc


def chain(node: str) -> dict[str, Any]:
    doc = call(node.rstrip("/") + "/v1/chain")
    assert isinstance(doc, dict)
    return doc


def subject_pseudonym(node: str, national_id: str) -> bytes:
    """The pseudonym of ``national_id`` (checksum-validated here; ValueError if malformed)."""
    return pseudonym(national_id, bytes.fromhex(chain(node)["pseudonym_salt"]))


def parse_key(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ClientError(f"{what}: not a hex public key") from None
    if len(raw) != 32:
        raise ClientError(f"{what}: a public key is 32 bytes (64 hex characters)")
    return raw


def parse_categories(text: str | None) -> tuple[Category, ...]:
    if not text:
        return ()
    try:
        found = {Category(Category.parse(c.strip())) for c in text.split(",") if c.strip()}
        return tuple(sorted(found))
    except ValueError as exc:
        raise ClientError(f"--categories: {exc}") from None


def parse_purpose(text: str) -> Purpose:
    try:
        return Purpose(Purpose.parse(text))
    except ValueError as exc:
        raise ClientError(f"--purpose: {exc}") from None


def submit_signed(node: str, tx: Transaction) -> dict[str, Any]:
    out = call(node.rstrip("/") + "/v1/txs?wait=commit", {"tx": encode(tx).hex()})
    assert isinstance(out, dict)
    if out.get("ok") is False:
        raise ClientError(f"refused by the ledger: {out.get('error')}: {out.get('detail')}")
    return out


def consent(
    node: str,
    subject: Identity,
    national_id: str,
    client: bytes,
    purpose: Purpose,
    *,
    grant: bool,
    days: int = 30,
    categories: tuple[Category, ...] = (),
) -> dict[str, Any]:
    """Grant (for ``days``) or revoke a consent, signed by the subject's key."""
    info = chain(node)
    pn = pseudonym(national_id, bytes.fromhex(info["pseudonym_salt"]))
    body: ConsentGrant | ConsentRevoke
    if grant:
        expires = time.time_ns() // 1_000_000 + days * DAY_MS
        body = ConsentGrant(pn, client, purpose, categories, expires)
    else:
        body = ConsentRevoke(pn, client, purpose)
    tx = Transaction.sign(subject, info["chain_id"], body, time.time_ns())
    return submit_signed(node, tx)


def query(
    node: str,
    client: Identity,
    national_id: str,
    purpose: Purpose,
    categories: tuple[Category, ...] = (),
) -> dict[str, Any]:
    """Ask the node for a subject's report; returns the answer with the records opened."""
    base = node.rstrip("/")
    info = chain(base)
    agency = bytes.fromhex(call(base + "/v1/status")["public_key"])
    req = QueryRequest.sign(
        client,
        info["chain_id"],
        agency=agency,
        pseudonym=pseudonym(national_id, bytes.fromhex(info["pseudonym_salt"])),
        purpose=purpose,
        categories=categories,
        nonce=time.time_ns(),
        time_ms=time.time_ns() // 1_000_000,
    )
    answer = call(base + "/v1/queries", {"request": encode(req).hex()})
    try:
        report = json.loads(client.unseal(bytes.fromhex(answer.pop("sealed_report"))))
    except (CryptoError, ValueError, KeyError) as exc:
        raise ClientError(f"the report could not be opened with this key: {exc}") from exc
    answer["records"] = report["records"]
    return dict(answer)


def audit(node: str, subject: Identity, national_id: str) -> dict[str, Any]:
    """The subject's query records, read with a request signed by the subject's key."""
    base = node.rstrip("/")
    info = chain(base)
    pn = pseudonym(national_id, bytes.fromhex(info["pseudonym_salt"]))
    now = time.time_ns() // 1_000_000
    sig = subject.sign(Domain.SUBJECT_READ, info["chain_id"], pn + now.to_bytes(8, "big"))
    out = call(f"{base}/v1/subjects/{pn.hex()}/queries?time_ms={now}&signature={sig.hex()}")
    assert isinstance(out, dict)
    return out
