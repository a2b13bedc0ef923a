"""Read helpers over committed contract state, for the node's API and query path.

Each takes a :class:`~protocol.contract.state.StateReader` (``get``) or, for the scans, a prefix
iterator ``items(prefix) -> iterable of (key, value)`` such as the node store's ``state_items``.
The contract's rules read state through these same helpers, so the API and the ledger can never
disagree about, say, whether a consent is in force.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from protocol.codec import decode
from protocol.contract import codes
from protocol.contract.state import (
    VALCHANGE,
    Account,
    ApprovedValidatorChange,
    AuditEntry,
    ClientRegistration,
    CommittedRecord,
    ConsentDecision,
    SeenRequest,
    StateReader,
    SubjectRegistration,
    TxResult,
    acct_key,
    audit_prefix,
    client_key,
    consent_key,
    load,
    rec_key,
    req_key,
    res_key,
    subj_key,
)
from protocol.vocabulary import Category, Purpose

StateItems = Callable[[bytes], Iterable[tuple[bytes, bytes]]]
"""A prefix iterator over committed state: ``items(prefix)`` yields ``(key, value)`` pairs."""


def balance(state: StateReader, key: bytes) -> int:
    """The balance of account ``key`` in minor units (0 when it has none)."""
    account = load(state, acct_key(key), Account)
    return 0 if account is None else account.balance


def client(state: StateReader, key: bytes) -> ClientRegistration | None:
    """The registration of query user ``key``, or None when it is not a registered client."""
    return load(state, client_key(key), ClientRegistration)


def subject(state: StateReader, pseudonym: bytes) -> SubjectRegistration | None:
    """The registration of a pseudonym (subject key, registering agency, height), or None."""
    return load(state, subj_key(pseudonym), SubjectRegistration)


def subject_key(state: StateReader, pseudonym: bytes) -> bytes | None:
    """The subject key registered for ``pseudonym``, or None."""
    reg = subject(state, pseudonym)
    return None if reg is None else reg.subject_key


def consent(
    state: StateReader, pseudonym: bytes, client: bytes, purpose: Purpose
) -> ConsentDecision | None:
    """The newest grant or revocation for (pseudonym, client, purpose), or None."""
    return load(state, consent_key(pseudonym, client, purpose), ConsentDecision)


def consent_refusal(
    decision: ConsentDecision | None, categories: Sequence[Category], now_ms: int
) -> str | None:
    """None when ``decision`` lets a query for ``categories`` go ahead at ``now_ms``.

    Otherwise the refusal code: ``no_consent`` (never granted), ``consent_revoked``,
    ``consent_expired`` (``now_ms >= expires_at_ms``) or ``consent_scope``. Empty categories in
    a grant cover every category; empty categories in a request ask for every category, which
    only an all-categories grant covers.
    """
    if decision is None:
        return codes.NO_CONSENT
    if not decision.granted:
        return codes.CONSENT_REVOKED
    if now_ms >= decision.expires_at_ms:
        return codes.CONSENT_EXPIRED
    covered = set(decision.categories)
    if covered and not (categories and set(categories) <= covered):
        return codes.CONSENT_SCOPE
    return None


def consent_in_force(
    state: StateReader,
    pseudonym: bytes,
    client: bytes,
    purpose: Purpose,
    categories: Sequence[Category],
    now_ms: int,
) -> str | None:
    """None when a consent is in force for this query at ``now_ms``, else the refusal code."""
    return consent_refusal(consent(state, pseudonym, client, purpose), categories, now_ms)


def commitment(state: StateReader, record_ref: bytes) -> CommittedRecord | None:
    """The on-ledger commitment (agency, digest, height) of ``record_ref``, or None."""
    return load(state, rec_key(record_ref), CommittedRecord)


def seen_request(state: StateReader, request_hash: bytes) -> SeenRequest | None:
    """Where a query request was already recorded (tx hash, height), or None."""
    return load(state, req_key(request_hash), SeenRequest)


def tx_result(state: StateReader, tx_hash: bytes) -> TxResult | None:
    """The committed result (ok, code, detail, height, index) of a transaction, or None."""
    return load(state, res_key(tx_hash), TxResult)


def audit_entries(items: StateItems, pseudonym: bytes) -> list[AuditEntry]:
    """Every audit entry of one subject, oldest first (height, then index in the block)."""
    prefix = audit_prefix(pseudonym)
    found = sorted((k, v) for k, v in items(prefix) if k.startswith(prefix))
    return [decode(v, AuditEntry) for _k, v in found]


def validator_changes(items: StateItems) -> list[ApprovedValidatorChange]:
    """Every approved validator-set change, in the order they were approved."""
    found = sorted((k, v) for k, v in items(VALCHANGE) if k.startswith(VALCHANGE))
    return [decode(v, ApprovedValidatorChange) for _k, v in found]
