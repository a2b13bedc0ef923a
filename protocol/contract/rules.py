"""Execution of committed blocks: the ledger rules of the built-in credit contract.

:func:`execute_block` runs a block's transactions in order over an overlay of committed state (a
later transaction sees an earlier one's writes) and returns the state changes and one outcome per
transaction. It is a pure function of (genesis, state, block): no clock (block time is
``block.header.time_ms``), no randomness, no floats, no I/O; dict order is insertion order, so the
changes -- and the app hash over them -- are identical on every node.

Per transaction:

1. A hash that already has a result (committed, or earlier in this block) fails as ``duplicate``
   and changes nothing: the earlier result stays.
2. Bytes that do not decode fail as ``malformed``.
3. Signatures are not checked again: consensus only prepares blocks whose transactions passed
   :func:`protocol.contract.admission.check_tx`, and blocks fetched in sync carry certificates.
4. The rule for the body runs over a per-transaction overlay. A refusal discards the overlay, so
   a failed transaction is atomic; its only change is its result record.
5. The result (ok or failed, code, detail, height, index) is written under ``res/<tx hash>``.

Rules (codes in :mod:`protocol.contract.codes`); agencies are the genesis validators:

* RegisterClient / RegisterSubject / Deposit / RecordCommitment / QueryEntry /
  ValidatorSetChange must be signed by an agency.
* Balances never go negative nor past ``MAX_BALANCE``.
* A QueryEntry's request time must be within ``REQUEST_WINDOW_MS`` of block time, and the fee is
  ``query_fee + exchange_fee * len(serving)``, paid by the client to the answering agency and to
  each serving agency.
* ValidatorSetChange records votes; once ``genesis.quorum`` agencies voted for the same
  (validator, add, name, address), the change is recorded under ``valchange/`` and the open votes
  for (validator, add) are cleared. The contract does **not** reconfigure consensus and does not
  change who counts as an agency here (that stays the genesis set): the consensus layer reads the
  approved changes and decides when and how to apply them.

An exception out of this module is a bug or a corrupt store (a stored value that does not
decode), never a transaction's fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocol.block import Block
from protocol.codec import CodecError
from protocol.contract import codes, views
from protocol.contract.scope import (
    Overlay,
    Refused,
    TxContext,
    credit,
    debit,
    require_agency,
    require_client,
    require_subject,
    short,
)
from protocol.contract.state import (
    MAX_DETAIL,
    ApprovedValidatorChange,
    AuditEntry,
    ClientRegistration,
    CommittedRecord,
    ConsentDecision,
    SeenRequest,
    StateReader,
    SubjectRegistration,
    TxResult,
    ValidatorVote,
    audit_key,
    client_key,
    consent_key,
    load,
    rec_key,
    req_key,
    res_key,
    subj_key,
    valchange_key,
    valvote_key,
)
from protocol.genesis import Genesis
from protocol.transactions import (
    ConsentGrant,
    ConsentRevoke,
    Deposit,
    QueryEntry,
    RecordCommitment,
    RegisterClient,
    RegisterSubject,
    Transaction,
    Transfer,
    TxBody,
    ValidatorSetChange,
    decode_tx,
)

REQUEST_WINDOW_MS = 10 * 60 * 1000
"""Largest distance between a query request's time and the block time, either way."""


@dataclass(frozen=True)
class TxOutcome:
    """What happened to one transaction of a block (``code`` is ``ok`` on success)."""

    tx_hash: bytes
    ok: bool
    code: str
    detail: str


@dataclass(frozen=True)
class BlockOutcome:
    changes: dict[bytes, bytes | None]
    """Application key -> new value (None deletes), to apply and hash with the block."""
    outcomes: tuple[TxOutcome, ...]
    """One per transaction, in block order."""


def execute_block(
    genesis: Genesis,
    state: StateReader,
    block: Block,
    decoded: Callable[[bytes], Transaction | None] | None = None,
) -> BlockOutcome:
    """Apply ``block.txs`` in order over ``state``; see the module docstring for the rules.

    ``decoded`` may give, by hash, a transaction already decoded from the very same bytes (the
    node's mempool keeps those it checked), sparing a second decode; the outcome is the same.
    """
    overlay = Overlay(state)
    agencies = frozenset(genesis.validator_keys)
    outcomes = []
    for index, (raw, h) in enumerate(zip(block.txs, block.tx_hashes, strict=True)):
        if overlay.get(res_key(h)) is not None:
            outcomes.append(
                TxOutcome(
                    h, False, codes.DUPLICATE, "a transaction with this hash already has a result"
                )
            )
            continue
        known = decoded(h) if decoded is not None else None
        code, detail = _execute_tx(genesis, agencies, overlay, block, index, h, raw, known)
        detail = detail[:MAX_DETAIL]
        ok = code == codes.OK
        overlay.put(res_key(h), TxResult(ok, code, detail, block.height, index))
        outcomes.append(TxOutcome(h, ok, code, detail))
    return BlockOutcome(dict(overlay.writes), tuple(outcomes))


def _execute_tx(
    genesis: Genesis,
    agencies: frozenset[bytes],
    overlay: Overlay,
    block: Block,
    index: int,
    h: bytes,
    raw: bytes,
    known: Transaction | None,
) -> tuple[str, str]:
    try:
        tx = known if known is not None else decode_tx(raw)
    except CodecError:
        # Not the codec's message: it can quote msgpack's own wording, which differs between
        # msgpack builds, and the detail is hashed into the app hash. check_tx gives the reason.
        return codes.MALFORMED, f"the {len(raw)} bytes do not decode as a canonical transaction"
    ctx = TxContext(genesis, agencies, block.height, block.header.time_ms, index, h, tx.signer)
    scope = Overlay(overlay)
    try:
        _apply(ctx, scope, tx.body)
    except Refused as refused:
        return refused.code, refused.detail
    overlay.absorb(scope.writes)
    return codes.OK, ""


def _apply(t: TxContext, s: Overlay, body: TxBody) -> None:
    match body:
        case RegisterClient():
            _register_client(t, s, body)
        case RegisterSubject():
            _register_subject(t, s, body)
        case Deposit():
            _deposit(t, s, body)
        case Transfer():
            _transfer(t, s, body)
        case ConsentGrant():
            _consent_grant(t, s, body)
        case ConsentRevoke():
            _consent_revoke(t, s, body)
        case RecordCommitment():
            _record_commitment(t, s, body)
        case QueryEntry():
            _query_entry(t, s, body)
        case ValidatorSetChange():
            _validator_vote(t, s, body)


# --- rules ---------------------------------------------------------------------------------------


def _register_client(t: TxContext, s: Overlay, body: RegisterClient) -> None:
    require_agency(t, "register a client")
    earlier = views.client(s, body.client)
    if earlier is not None:
        raise Refused(
            codes.CLIENT_EXISTS,
            f"client {short(body.client)} was registered at height {earlier.height}",
        )
    s.put(client_key(body.client), ClientRegistration(body.name, t.signer, t.height))
    credit(s, body.client, body.initial_deposit)


def _register_subject(t: TxContext, s: Overlay, body: RegisterSubject) -> None:
    require_agency(t, "register a subject")
    earlier = views.subject(s, body.pseudonym)
    if earlier is not None:
        raise Refused(
            codes.SUBJECT_EXISTS,
            f"pseudonym {short(body.pseudonym)} was registered at height {earlier.height}",
        )
    s.put(subj_key(body.pseudonym), SubjectRegistration(body.subject_key, t.signer, t.height))


def _deposit(t: TxContext, s: Overlay, body: Deposit) -> None:
    require_agency(t, "deposit")
    if body.account not in t.agencies and views.client(s, body.account) is None:
        raise Refused(
            codes.UNKNOWN_ACCOUNT,
            f"{short(body.account)} is neither a registered client nor an agency",
        )
    credit(s, body.account, body.amount)


def _transfer(t: TxContext, s: Overlay, body: Transfer) -> None:
    if body.to == t.signer:
        raise Refused(codes.SELF_TRANSFER, "a transfer to the signer's own account")
    debit(s, t.signer, body.amount)
    credit(s, body.to, body.amount)


def _consent_grant(t: TxContext, s: Overlay, body: ConsentGrant) -> None:
    require_subject(t, s, body.pseudonym)
    require_client(s, body.client)
    if body.expires_at_ms <= t.time_ms:
        raise Refused(
            codes.BAD_EXPIRY,
            f"the grant expires at {body.expires_at_ms} ms, not after block time {t.time_ms} ms",
        )
    decision = ConsentDecision(True, body.categories, body.expires_at_ms, t.height, t.tx_hash)
    s.put(consent_key(body.pseudonym, body.client, body.purpose), decision)


def _consent_revoke(t: TxContext, s: Overlay, body: ConsentRevoke) -> None:
    require_subject(t, s, body.pseudonym)
    require_client(s, body.client)
    decision = ConsentDecision(False, (), 0, t.height, t.tx_hash)
    s.put(consent_key(body.pseudonym, body.client, body.purpose), decision)


def _record_commitment(t: TxContext, s: Overlay, body: RecordCommitment) -> None:
    require_agency(t, "commit records")
    for i, entry in enumerate(body.entries):
        earlier = views.commitment(s, entry.record_ref)
        if earlier is not None and earlier.agency != t.signer:
            raise Refused(
                codes.RECORD_REF_TAKEN,
                f"entries[{i}]: record_ref {short(entry.record_ref)} is committed by agency "
                f"{short(earlier.agency)}; no entry of this transaction was committed",
            )
        s.put(rec_key(entry.record_ref), CommittedRecord(t.signer, entry.digest, t.height))


_CONSENT_DETAIL = {
    codes.NO_CONSENT: "the subject never granted this client consent for this purpose",
    codes.CONSENT_REVOKED: "the subject revoked this client's consent for this purpose",
    codes.CONSENT_EXPIRED: "the subject's consent for this client and purpose has expired",
    codes.CONSENT_SCOPE: "the subject's consent does not cover the requested categories",
}


def _query_entry(t: TxContext, s: Overlay, body: QueryEntry) -> None:
    req = body.request
    require_agency(t, "submit a query entry")
    if req.agency != t.signer:
        raise Refused(
            codes.WRONG_AGENCY,
            f"the request is addressed to agency {short(req.agency)}, not to the signer",
        )
    for i, agency in enumerate(body.serving):
        if agency not in t.agencies:
            raise Refused(codes.BAD_SERVING, f"serving[{i}] {short(agency)} is not an agency")
        if agency == t.signer:
            raise Refused(codes.BAD_SERVING, f"serving[{i}] is the answering agency itself")
    require_client(s, req.client)
    skew = req.time_ms - t.time_ms
    if abs(skew) > REQUEST_WINDOW_MS:
        raise Refused(
            codes.STALE_REQUEST,
            f"the request time is {skew} ms from block time (at most {REQUEST_WINDOW_MS} allowed)",
        )
    request_hash = req.request_hash
    seen = views.seen_request(s, request_hash)
    if seen is not None:
        raise Refused(
            codes.REPLAYED_REQUEST,
            f"request {short(request_hash)} was already recorded at height {seen.height}",
        )
    refusal = views.consent_in_force(
        s, req.pseudonym, req.client, req.purpose, req.categories, t.time_ms
    )
    if refusal is not None:
        raise Refused(refusal, _CONSENT_DETAIL[refusal])
    fees = t.genesis.fees
    expected = fees.query_fee + fees.exchange_fee * len(body.serving)
    if body.fee != expected:
        raise Refused(
            codes.WRONG_FEE,
            f"fee {body.fee} is not the scheduled {expected} (query fee {fees.query_fee} + "
            f"exchange fee {fees.exchange_fee} x {len(body.serving)} serving agencies)",
        )
    debit(s, req.client, body.fee)
    credit(s, t.signer, fees.query_fee)
    for agency in body.serving:
        credit(s, agency, fees.exchange_fee)
    s.put(req_key(request_hash), SeenRequest(t.tx_hash, t.height))
    entry = AuditEntry(
        t.tx_hash,
        req.client,
        req.purpose,
        req.categories,
        body.mode,
        t.signer,
        body.serving,
        body.fee,
        t.time_ms,
        t.height,
    )
    s.put(audit_key(req.pseudonym, t.height, t.index), entry)


def _validator_vote(t: TxContext, s: Overlay, body: ValidatorSetChange) -> None:
    require_agency(t, "vote on the validator set")
    s.put(
        valvote_key(body.validator, body.add, t.signer),
        ValidatorVote(body.name, body.address, t.height),
    )
    voters = sorted(t.agencies)
    agreeing = []
    for voter in voters:
        vote = load(s, valvote_key(body.validator, body.add, voter), ValidatorVote)
        if vote is not None and (vote.name, vote.address) == (body.name, body.address):
            agreeing.append(voter)
    if len(agreeing) < t.genesis.quorum:
        return
    for voter in voters:
        s.delete(valvote_key(body.validator, body.add, voter))
    change = ApprovedValidatorChange(
        body.validator, body.name, body.address, body.add, tuple(agreeing), t.height
    )
    s.put(valchange_key(t.height, t.index), change)
