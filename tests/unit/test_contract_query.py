"""Query entries: who may submit them, consent, request freshness and replay, fee settlement."""

from __future__ import annotations

import pytest

from protocol.contract import codes, views
from protocol.contract.rules import REQUEST_WINDOW_MS
from protocol.contract.state import AuditEntry, audit_key, req_key
from protocol.crypto import Identity
from protocol.transactions import ConsentGrant, ConsentRevoke, QueryEntry, RegisterSubject
from protocol.vocabulary import Category, Purpose, QueryMode
from tests.unit.test_contract_harness import (
    AGENCIES,
    CLIENTS,
    DAY_MS,
    EXCHANGE_FEE,
    OUTSIDER,
    PSEUDONYMS,
    QUERY_FEE,
    SUBJECTS,
    T0,
    Ledger,
    populated,
    query_entry,
    request,
)

A, B, C, D = AGENCIES
C0 = CLIENTS[0].public_key


def _balances(ledger: Ledger) -> list[int]:
    keys = [C0] + [a.public_key for a in AGENCIES]
    return [views.balance(ledger.state, k) for k in keys]


def _submit(ledger: Ledger, entry: QueryEntry, signer: Identity = A, **kw: int) -> str:
    return ledger.one(signer, entry, **kw).code


# --- settlement ----------------------------------------------------------------------------------


def test_mode_1_pays_the_query_fee_to_the_answering_agency_and_writes_an_audit_entry() -> None:
    ledger = populated(deposit=1000)
    req = request(time_ms=ledger.next_time_ms)
    out = ledger.one(A, query_entry(req))
    assert out.ok, out
    assert _balances(ledger) == [1000 - QUERY_FEE, QUERY_FEE, 0, 0, 0]
    [entry] = views.audit_entries(ledger.state.items, PSEUDONYMS[0])
    assert entry == AuditEntry(
        out.tx_hash,
        C0,
        Purpose.LOAN_APPROVAL,
        (),
        QueryMode.DIRECT,
        A.public_key,
        (),
        QUERY_FEE,
        T0 + 1000 * (ledger.height - 1),
        ledger.height,
    )
    seen = views.seen_request(ledger.state, req.request_hash)
    assert seen is not None and (seen.tx_hash, seen.height) == (out.tx_hash, ledger.height)


def test_mode_2_pays_the_exchange_fee_to_every_serving_agency() -> None:
    ledger = populated(deposit=1000)
    fee = QUERY_FEE + 2 * EXCHANGE_FEE
    out = ledger.one(A, query_entry(request(), [C, B], fee))
    assert out.ok, out
    assert _balances(ledger) == [1000 - fee, QUERY_FEE, EXCHANGE_FEE, EXCHANGE_FEE, 0]
    [entry] = views.audit_entries(ledger.state.items, PSEUDONYMS[0])
    assert (entry.mode, entry.serving, entry.fee) == (
        QueryMode.FORWARDED,
        (C.public_key, B.public_key),
        fee,
    )
    # a second, forwarded query answered by B and served by A, C and D
    out = ledger.one(B, query_entry(request(agency=B, nonce=2), [A, C, D]))
    assert out.ok, out
    fee2 = QUERY_FEE + 3 * EXCHANGE_FEE
    assert _balances(ledger) == [
        1000 - fee - fee2,
        QUERY_FEE + EXCHANGE_FEE,
        EXCHANGE_FEE + QUERY_FEE,
        2 * EXCHANGE_FEE,
        EXCHANGE_FEE,
    ]
    assert len(views.audit_entries(ledger.state.items, PSEUDONYMS[0])) == 2


@pytest.mark.parametrize(
    ("serving", "fee"),
    [([], QUERY_FEE - 1), ([], QUERY_FEE + 1), ([1], QUERY_FEE), ([1, 2], QUERY_FEE + 50)],
)
def test_a_fee_off_the_schedule_is_refused(serving: list[int], fee: int) -> None:
    ledger = populated(deposit=1000)
    entry = query_entry(request(), [AGENCIES[i] for i in serving], fee)
    assert _submit(ledger, entry) == codes.WRONG_FEE
    assert _balances(ledger) == [1000, 0, 0, 0, 0]


def test_a_client_that_cannot_pay_is_refused_and_nothing_is_recorded() -> None:
    ledger = populated(deposit=QUERY_FEE + EXCHANGE_FEE - 1)
    req = request()
    assert _submit(ledger, query_entry(req, [B])) == codes.INSUFFICIENT_BALANCE
    assert views.seen_request(ledger.state, req.request_hash) is None
    assert views.audit_entries(ledger.state.items, PSEUDONYMS[0]) == []
    assert _submit(ledger, query_entry(req)) == codes.OK  # mode 1 is affordable


# --- who may submit ------------------------------------------------------------------------------


def test_the_entry_is_signed_by_the_agency_the_request_was_addressed_to() -> None:
    ledger = populated()
    assert _submit(ledger, query_entry(request(agency=B)), signer=A) == codes.WRONG_AGENCY
    assert _submit(ledger, query_entry(request(agency=OUTSIDER)), OUTSIDER) == codes.NOT_AGENCY


def test_serving_agencies_are_other_agencies() -> None:
    ledger = populated()
    outsider = query_entry(request(), [B, OUTSIDER])
    assert _submit(ledger, outsider) == codes.BAD_SERVING
    itself = query_entry(request(), [A])
    assert _submit(ledger, itself) == codes.BAD_SERVING


def test_the_client_must_be_registered() -> None:
    ledger = populated()
    req = request(client=CLIENTS[2])
    assert _submit(ledger, query_entry(req)) == codes.UNKNOWN_CLIENT


# --- freshness and replay ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skew", "code"),
    [
        (0, codes.OK),
        (REQUEST_WINDOW_MS, codes.OK),
        (-REQUEST_WINDOW_MS, codes.OK),
        (REQUEST_WINDOW_MS + 1, codes.STALE_REQUEST),
        (-REQUEST_WINDOW_MS - 1, codes.STALE_REQUEST),
    ],
)
def test_the_request_time_is_within_ten_minutes_of_block_time(skew: int, code: str) -> None:
    ledger = populated()
    block_time = T0 + 3600_000
    entry = query_entry(request(time_ms=block_time + skew))
    assert _submit(ledger, entry, time_ms=block_time) == code


def test_a_request_is_recorded_once() -> None:
    ledger = populated()
    req = request()
    assert _submit(ledger, query_entry(req)) == codes.OK
    # the same request in a fresh transaction (new nonce), answered again or forwarded
    assert _submit(ledger, query_entry(req)) == codes.REPLAYED_REQUEST
    assert _submit(ledger, query_entry(req, [B])) == codes.REPLAYED_REQUEST
    assert ledger.state.get(req_key(req.request_hash)) is not None
    assert _balances(ledger)[0] == 10_000 - QUERY_FEE
    # a new request (new nonce) from the same client is a new query
    assert _submit(ledger, query_entry(request(nonce=2))) == codes.OK


def test_the_same_request_twice_in_one_block_is_recorded_once() -> None:
    ledger = populated()
    req = request()
    out = ledger.run(ledger.tx(A, query_entry(req)), ledger.tx(A, query_entry(req)))
    assert [o.code for o in out.outcomes] == [codes.OK, codes.REPLAYED_REQUEST]


# --- consent -------------------------------------------------------------------------------------


def test_no_consent_for_this_client_or_purpose_refuses_the_query() -> None:
    ledger = populated()
    assert _submit(ledger, query_entry(request(client=CLIENTS[1]))) == codes.NO_CONSENT
    other_purpose = request(purpose=Purpose.GUARANTEE_REVIEW)
    assert _submit(ledger, query_entry(other_purpose)) == codes.NO_CONSENT
    other_subject = request(pseudonym=PSEUDONYMS[1])
    assert _submit(ledger, query_entry(other_subject)) == codes.NO_CONSENT


def test_an_expired_consent_refuses_the_query() -> None:
    ledger = populated()  # consent expires at T0 + DAY_MS
    at_expiry = T0 + DAY_MS
    req = request(time_ms=at_expiry)
    assert _submit(ledger, query_entry(req), time_ms=at_expiry) == codes.CONSENT_EXPIRED
    req = request(time_ms=at_expiry - 1, nonce=2)
    assert _submit(ledger, query_entry(req), time_ms=at_expiry - 1) == codes.OK


def test_a_revocation_takes_effect_from_its_position_in_the_ledger() -> None:
    ledger = populated()
    revoke = ConsentRevoke(PSEUDONYMS[0], C0, Purpose.LOAN_APPROVAL)
    out = ledger.run(
        ledger.tx(A, query_entry(request(nonce=1))),
        ledger.tx(SUBJECTS[0], revoke),
        ledger.tx(A, query_entry(request(nonce=2))),
    )
    assert [o.code for o in out.outcomes] == [codes.OK, codes.OK, codes.CONSENT_REVOKED]
    assert _submit(ledger, query_entry(request(nonce=3))) == codes.CONSENT_REVOKED
    grant = ConsentGrant(PSEUDONYMS[0], C0, Purpose.LOAN_APPROVAL, (), T0 + DAY_MS)
    assert ledger.one(SUBJECTS[0], grant).ok
    assert _submit(ledger, query_entry(request(nonce=4))) == codes.OK


@pytest.mark.parametrize(
    ("granted", "asked", "code"),
    [
        ((), (), codes.OK),
        ((), (Category.LOAN, Category.TELECOM), codes.OK),
        ((Category.LOAN, Category.MORTGAGE), (Category.LOAN,), codes.OK),
        ((Category.LOAN, Category.MORTGAGE), (Category.LOAN, Category.MORTGAGE), codes.OK),
        ((Category.LOAN,), (Category.LOAN, Category.MORTGAGE), codes.CONSENT_SCOPE),
        ((Category.LOAN,), (Category.MORTGAGE,), codes.CONSENT_SCOPE),
        ((Category.LOAN,), (), codes.CONSENT_SCOPE),
    ],
)
def test_the_grant_must_cover_the_requested_categories(
    granted: tuple[Category, ...], asked: tuple[Category, ...], code: str
) -> None:
    ledger = populated(categories=granted)
    assert _submit(ledger, query_entry(request(categories=asked))) == code
    audit = views.audit_entries(ledger.state.items, PSEUDONYMS[0])
    assert len(audit) == (1 if code == codes.OK else 0)


def test_consent_refusals_come_in_a_fixed_order() -> None:
    """Revoked before expired before scope: the subject's last word is reported first."""
    ledger = populated(categories=(Category.LOAN,))
    revoke = ConsentRevoke(PSEUDONYMS[0], C0, Purpose.LOAN_APPROVAL)
    assert ledger.one(SUBJECTS[0], revoke).ok
    late = T0 + 2 * DAY_MS
    entry = query_entry(request(categories=(Category.MORTGAGE,), time_ms=late))
    assert _submit(ledger, entry, time_ms=late) == codes.CONSENT_REVOKED


# --- the audit trail -----------------------------------------------------------------------------


def test_audit_entries_come_back_oldest_first_and_only_for_their_subject() -> None:
    ledger = populated()
    grant = ConsentGrant(PSEUDONYMS[1], C0, Purpose.LOAN_APPROVAL, (), T0 + DAY_MS)
    assert ledger.one(A, RegisterSubject(PSEUDONYMS[1], SUBJECTS[1].public_key)).ok
    assert ledger.one(SUBJECTS[1], grant).ok
    out = ledger.run(
        ledger.tx(A, query_entry(request(nonce=1))),
        ledger.tx(A, query_entry(request(nonce=2, pseudonym=PSEUDONYMS[1]))),
        ledger.tx(B, query_entry(request(nonce=3, agency=B))),
    )
    assert all(o.ok for o in out.outcomes)
    assert _submit(ledger, query_entry(request(nonce=4), [C])) == codes.OK
    entries = views.audit_entries(ledger.state.items, PSEUDONYMS[0])
    assert [(e.agency, e.height) for e in entries] == [
        (A.public_key, ledger.height - 1),
        (B.public_key, ledger.height - 1),
        (A.public_key, ledger.height),
    ]
    assert entries[0].tx_hash == out.outcomes[0].tx_hash
    assert entries[1].tx_hash == out.outcomes[2].tx_hash
    assert ledger.state.get(audit_key(PSEUDONYMS[0], ledger.height - 1, 2)) is not None
    assert len(views.audit_entries(ledger.state.items, PSEUDONYMS[1])) == 1
