"""Answering a lender's signed query (mode 1: from this agency's own records).

The order matters and is the product's promise: every check a refusal can come from runs first
against this node's committed state (signature, freshness, replay, client registration, consent,
balance) and is answered with a 4xx naming it, nothing released and nothing charged; then the
query entry (audit record and fee settlement) is submitted and the report is released **only
after that entry is committed** -- and only if the ledger accepted it, since the ledger re-checks
consent, balance and replay and is the arbiter when two requests race. The report is sealed to
the client's key, so only the lender reads it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from node.lookups import RateLimited, ServedRecord
from node.records import refs_and_records_of
from protocol.contract import views
from protocol.contract.rules import REQUEST_WINDOW_MS
from protocol.crypto import seal
from protocol.transactions import QueryEntry, QueryRequest
from protocol.vocabulary import QueryMode

if TYPE_CHECKING:
    from node.daemon import Node

FRESHNESS_MS = REQUEST_WINDOW_MS // 2
"""A request older (or newer) than this is refused here, well inside the ledger's own window."""


@dataclass(frozen=True)
class QueryRefused(Exception):
    """A query refused before anything was released or charged."""

    status: int
    code: str
    detail: str


def check_request(node: Node, req: QueryRequest, now_ms: int) -> None:
    """Every refusal the node can tell before submitting; raises QueryRefused."""
    state = node.store_state
    if req.agency != node.identity.public_key:
        raise QueryRefused(422, "wrong_agency", "the request is addressed to another agency")
    if not req.verify(node.genesis.chain_id):
        raise QueryRefused(401, "bad_signature", "the request's signature is not the client's")
    if abs(req.time_ms - now_ms) > FRESHNESS_MS:
        raise QueryRefused(
            422,
            "stale_request",
            f"request time is {abs(req.time_ms - now_ms) // 1000} s from now "
            f"(at most {FRESHNESS_MS // 1000} s)",
        )
    if views.seen_request(state, req.request_hash) is not None:
        raise QueryRefused(409, "replayed_request", "this request was already answered")
    if views.client(state, req.client) is None:
        raise QueryRefused(403, "unknown_client", "the client is not registered on the ledger")
    refusal = views.consent_in_force(
        state, req.pseudonym, req.client, req.purpose, req.categories, now_ms
    )
    if refusal is not None:
        raise QueryRefused(403, refusal, _CONSENT_TEXT.get(refusal, refusal))
    fee = node.genesis.fees.query_fee
    if views.balance(state, req.client) < fee:
        raise QueryRefused(
            402,
            "insufficient_balance",
            f"the client's balance {views.balance(state, req.client)} does not cover the fee {fee}",
        )


_CONSENT_TEXT = {
    "no_consent": "the subject has not consented to this client for this purpose",
    "consent_expired": "the subject's consent for this client and purpose has expired",
    "consent_revoked": "the subject revoked its consent for this client and purpose",
    "consent_scope": "the subject's consent does not cover the categories asked for",
}


async def answer_query(node: Node, req: QueryRequest) -> dict[str, Any]:
    """Check, record on the ledger, then release the sealed report (see module doc).

    Mode 1 when this agency's own records cover the request (any record when every category is
    asked for, each asked category otherwise); mode 2 -- a lookup to the other agencies, whose
    verified records are merged with ours -- when they do not.
    """
    stages = node.metrics.query_stages
    last = time.monotonic()

    def lap() -> float:
        """Seconds since the previous stage ended."""
        nonlocal last
        now = time.monotonic()
        since, last = now - last, now
        return since

    now_ms = time.time_ns() // 1_000_000
    check_request(node, req, now_ms)
    own = [
        ServedRecord(r, node.index, _height_of(node, ref))
        for ref, r in refs_and_records_of(node, req.pseudonym)
        if not req.categories or r.category in req.categories
    ]
    covered = {s.record.category for s in own}
    mode = QueryMode.DIRECT
    served: list[ServedRecord] = []
    stages["check"].observe(lap())
    if not own or (req.categories and not set(req.categories) <= covered):
        mode = QueryMode.FORWARDED
        try:
            served = await node.lookups.ask(req)
        except RateLimited as exc:
            raise QueryRefused(429, "rate_limited", str(exc)) from None
        stages["lookup"].observe(lap())
    records = own + served
    if not records:
        raise QueryRefused(
            404, "no_records", "no agency holds records of the subject in that scope"
        )
    serving_idx = sorted({s.agency for s in served})
    if mode == QueryMode.FORWARDED and not serving_idx:
        mode = QueryMode.DIRECT  # nothing came from peers: our own records answer
    keys = node.genesis.validator_keys
    fees = node.genesis.fees
    fee = fees.query_fee + fees.exchange_fee * len(serving_idx)
    if views.balance(node.store_state, req.client) < fee:
        raise QueryRefused(
            402,
            "insufficient_balance",
            f"the client's balance {views.balance(node.store_state, req.client)} does not cover "
            f"the fee {fee}",
        )
    serving = tuple(keys[i] for i in serving_idx) if mode == QueryMode.FORWARDED else ()
    (entry,) = await node.commit_own([QueryEntry(req, mode, serving, fee)])
    stages["ledger"].observe(lap())
    result = entry.result
    if not entry.admission.ok:
        raise QueryRefused(*(entry.refusal or (422, "refused", "")))
    if result is None or not result.ok:  # the ledger refused it: consent, replay, ...
        code = result.code if result is not None else "not_committed"
        detail = result.detail if result is not None else "the query entry was not committed"
        raise QueryRefused(409 if code == "replayed_request" else 403, code, detail)
    sealed = seal(req.client, report_body(req.request_hash, node.index, records))
    stages["release"].observe(lap())
    return {
        "mode": int(mode),
        "sources": sorted({s.agency for s in records}),
        "serving": serving_idx if mode == QueryMode.FORWARDED else [],
        "audit_tx": entry.admission.tx_hash.hex(),
        "height": result.height,
        "fee": fee,
        "sealed_report": sealed.hex(),
    }


def report_body(request_hash: bytes, agency: int, records: list[ServedRecord]) -> bytes:
    """The report as the lender reads it once unsealed: JSON, keys sorted, each record in its
    output form with where it came from (the serving agency, the height of its commitment)."""
    report = {
        "request_hash": request_hash.hex(),
        "agency": agency,
        "records": [
            s.record.to_json() | {"served_by": s.agency, "commitment_height": s.commitment_height}
            for s in records
        ],
    }
    return json.dumps(report, sort_keys=True).encode()


def _height_of(node: Node, ref: bytes) -> int:
    """The height at which the ledger took this agency's commitment to record ``ref``."""
    c = views.commitment(node.store_state, ref)
    return 0 if c is None else c.height
