"""The contract's rules for accounts, registrations, consent, commitments and validator votes."""

from __future__ import annotations

import pytest

from protocol.codec import decode, encode
from protocol.contract import codes, views
from protocol.contract.state import (
    MAX_BALANCE,
    Account,
    ApprovedValidatorChange,
    TxResult,
    acct_key,
    res_key,
    valvote_key,
)
from protocol.crypto import h256
from protocol.transactions import (
    CommitmentEntry,
    ConsentGrant,
    ConsentRevoke,
    Deposit,
    RecordCommitment,
    RegisterClient,
    RegisterSubject,
    Transfer,
    ValidatorSetChange,
    tx_hash,
)
from protocol.vocabulary import Category, Purpose
from tests.unit.test_contract_harness import (
    AGENCIES,
    CLIENTS,
    DAY_MS,
    OUTSIDER,
    PSEUDONYMS,
    SUBJECTS,
    T0,
    Ledger,
    populated,
)

A, B, C, D = AGENCIES
C0, C1, C2 = (c.public_key for c in CLIENTS)


def _only_result_written(ledger: Ledger, raw: bytes) -> None:
    out = ledger.run(raw)
    assert not out.outcomes[0].ok
    assert list(out.changes) == [res_key(tx_hash(raw))]


# --- results, replay, garbage --------------------------------------------------------------------


def test_every_result_is_stored_with_height_and_index() -> None:
    ledger = Ledger()
    ok_tx = ledger.tx(A, RegisterClient(C0, "lender", 5))
    bad_tx = ledger.tx(OUTSIDER, RegisterClient(C1, "lender", 5))
    out = ledger.run(ok_tx, bad_tx)
    assert [(o.ok, o.code) for o in out.outcomes] == [(True, "ok"), (False, "not_agency")]
    assert views.tx_result(ledger.state, tx_hash(ok_tx)) == TxResult(True, "ok", "", 1, 0)
    stored = views.tx_result(ledger.state, tx_hash(bad_tx))
    assert stored is not None
    assert (stored.ok, stored.code, stored.height, stored.index) == (False, "not_agency", 1, 1)
    assert stored.detail == out.outcomes[1].detail
    assert "agency" in stored.detail


def test_a_failed_transaction_writes_only_its_result() -> None:
    ledger = Ledger()
    _only_result_written(ledger, ledger.tx(OUTSIDER, RegisterClient(C0, "x", 5)))
    _only_result_written(ledger, ledger.tx(CLIENTS[0], Transfer(C1, 1)))


def test_a_committed_transaction_hash_is_refused_as_duplicate_and_keeps_its_result() -> None:
    ledger = Ledger()
    raw = ledger.tx(A, RegisterClient(C0, "lender", 500))
    assert ledger.run(raw).outcomes[0].ok
    first = ledger.state.get(res_key(tx_hash(raw)))
    again = ledger.run(raw)
    assert (again.outcomes[0].ok, again.outcomes[0].code) == (False, codes.DUPLICATE)
    assert again.changes == {}
    assert ledger.state.get(res_key(tx_hash(raw))) == first
    assert views.balance(ledger.state, C0) == 500


def test_the_same_transaction_twice_in_one_block_runs_once() -> None:
    ledger = Ledger()
    raw = ledger.tx(A, Deposit(A.public_key, 10))
    out = ledger.run(raw, raw)
    assert [o.code for o in out.outcomes] == ["ok", "duplicate"]
    assert views.balance(ledger.state, A.public_key) == 10
    result = views.tx_result(ledger.state, tx_hash(raw))
    assert result is not None and result.index == 0


def test_a_failed_transaction_hash_is_also_never_executed_again() -> None:
    ledger = Ledger()
    raw = ledger.tx(A, Deposit(C0, 10))  # C0 not registered yet
    assert ledger.run(raw).outcomes[0].code == codes.UNKNOWN_ACCOUNT
    ledger.one(A, RegisterClient(C0, "lender", 0))
    assert ledger.run(raw).outcomes[0].code == codes.DUPLICATE
    assert views.balance(ledger.state, C0) == 0


@pytest.mark.parametrize("garbage", [b"", b"\xc1", b"\x93\x01\x02\x03", b"\xff" * 40])
def test_garbage_bytes_in_a_block_fail_as_malformed_and_the_block_goes_on(garbage: bytes) -> None:
    ledger = Ledger()
    good = ledger.tx(A, RegisterClient(C0, "lender", 7))
    out = ledger.run(garbage, good)
    assert [(o.ok, o.code) for o in out.outcomes] == [(False, "malformed"), (True, "ok")]
    assert out.outcomes[0].tx_hash == tx_hash(garbage)
    assert views.balance(ledger.state, C0) == 7
    stored = views.tx_result(ledger.state, tx_hash(garbage))
    assert stored is not None and stored.code == "malformed"


# --- clients and subjects ------------------------------------------------------------------------


def test_an_agency_registers_a_client_with_an_opening_deposit() -> None:
    ledger = Ledger()
    ledger.run()  # height 1 is empty
    assert ledger.one(B, RegisterClient(C0, "lender", 1234)).ok
    reg = views.client(ledger.state, C0)
    assert reg is not None
    assert (reg.name, reg.agency, reg.height) == ("lender", B.public_key, 2)
    assert views.balance(ledger.state, C0) == 1234


def test_only_an_agency_registers_clients_and_only_once() -> None:
    ledger = Ledger()
    assert ledger.one(CLIENTS[1], RegisterClient(C0, "x", 1)).code == codes.NOT_AGENCY
    assert ledger.one(A, RegisterClient(C0, "x", 1)).ok
    assert ledger.one(B, RegisterClient(C0, "y", 1)).code == codes.CLIENT_EXISTS
    assert views.balance(ledger.state, C0) == 1


def test_an_agency_registers_a_subject_pseudonym_once() -> None:
    ledger = Ledger()
    body = RegisterSubject(PSEUDONYMS[0], SUBJECTS[0].public_key)
    assert ledger.one(OUTSIDER, body).code == codes.NOT_AGENCY
    assert views.subject_key(ledger.state, PSEUDONYMS[0]) is None
    assert ledger.one(C, body).ok
    assert views.subject_key(ledger.state, PSEUDONYMS[0]) == SUBJECTS[0].public_key
    reg = views.subject(ledger.state, PSEUDONYMS[0])
    assert reg is not None and (reg.agency, reg.height) == (C.public_key, 2)
    other = RegisterSubject(PSEUDONYMS[0], SUBJECTS[1].public_key)
    assert ledger.one(A, other).code == codes.SUBJECT_EXISTS
    assert views.subject_key(ledger.state, PSEUDONYMS[0]) == SUBJECTS[0].public_key


# --- money ---------------------------------------------------------------------------------------


def test_deposits_go_to_clients_and_agencies_only() -> None:
    ledger = populated(deposit=100)
    assert ledger.one(B, Deposit(C0, 50)).ok
    assert ledger.one(B, Deposit(D.public_key, 9)).ok
    assert views.balance(ledger.state, C0) == 150
    assert views.balance(ledger.state, D.public_key) == 9
    assert ledger.one(B, Deposit(OUTSIDER.public_key, 5)).code == codes.UNKNOWN_ACCOUNT
    assert ledger.one(B, Deposit(SUBJECTS[0].public_key, 5)).code == codes.UNKNOWN_ACCOUNT
    assert ledger.one(CLIENTS[0], Deposit(C0, 5)).code == codes.NOT_AGENCY
    assert views.balance(ledger.state, C0) == 150


def test_a_credit_past_the_balance_limit_is_refused() -> None:
    ledger = populated(deposit=0)
    ledger.state.data[acct_key(C0)] = encode(Account(MAX_BALANCE - 10))
    assert ledger.one(A, Deposit(C0, 10)).ok
    out = ledger.one(A, Deposit(C0, 1))
    assert out.code == codes.BALANCE_OVERFLOW
    assert views.balance(ledger.state, C0) == MAX_BALANCE


def test_registering_a_client_whose_account_is_full_fails_entirely() -> None:
    ledger = Ledger()
    ledger.state.data[acct_key(C2)] = encode(Account(MAX_BALANCE))
    assert ledger.one(A, RegisterClient(C2, "late", 1)).code == codes.BALANCE_OVERFLOW
    assert views.client(ledger.state, C2) is None


def test_transfers_move_balance_and_never_overdraw() -> None:
    ledger = populated(deposit=300)
    assert ledger.one(CLIENTS[0], Transfer(OUTSIDER.public_key, 120)).ok
    assert views.balance(ledger.state, C0) == 180
    assert views.balance(ledger.state, OUTSIDER.public_key) == 120
    # anyone with a balance may transfer, registered or not
    assert ledger.one(OUTSIDER, Transfer(C1, 20)).ok
    assert views.balance(ledger.state, C1) == 320
    assert ledger.one(CLIENTS[0], Transfer(C1, 181)).code == codes.INSUFFICIENT_BALANCE
    assert ledger.one(SUBJECTS[2], Transfer(C1, 1)).code == codes.INSUFFICIENT_BALANCE
    assert ledger.one(CLIENTS[0], Transfer(C0, 1)).code == codes.SELF_TRANSFER
    assert ledger.one(CLIENTS[0], Transfer(C1, 180)).ok
    assert views.balance(ledger.state, C0) == 0


def test_a_transfer_that_would_overflow_the_receiver_leaves_the_sender_untouched() -> None:
    ledger = populated(deposit=300)
    ledger.state.data[acct_key(C1)] = encode(Account(MAX_BALANCE))
    assert ledger.one(CLIENTS[0], Transfer(C1, 1)).code == codes.BALANCE_OVERFLOW
    assert views.balance(ledger.state, C0) == 300


# --- consent -------------------------------------------------------------------------------------


def _grant(
    client: bytes = C0,
    purpose: Purpose = Purpose.LOAN_APPROVAL,
    categories: tuple[Category, ...] = (),
    expires: int = T0 + DAY_MS,
) -> ConsentGrant:
    return ConsentGrant(PSEUDONYMS[0], client, purpose, categories, expires)


def test_only_the_registered_subject_key_decides_consent() -> None:
    ledger = populated()
    assert ledger.one(SUBJECTS[1], _grant(client=C1)).code == codes.NOT_SUBJECT
    assert ledger.one(A, _grant(client=C1)).code == codes.NOT_SUBJECT
    revoke = ConsentRevoke(PSEUDONYMS[0], C0, Purpose.LOAN_APPROVAL)
    assert ledger.one(SUBJECTS[1], revoke).code == codes.NOT_SUBJECT
    unregistered = ConsentGrant(PSEUDONYMS[2], C0, Purpose.LOAN_APPROVAL, (), T0 + DAY_MS)
    assert ledger.one(SUBJECTS[2], unregistered).code == codes.NOT_SUBJECT
    assert views.consent(ledger.state, PSEUDONYMS[0], C1, Purpose.LOAN_APPROVAL) is None


def test_consent_names_a_registered_client() -> None:
    ledger = populated()
    assert ledger.one(SUBJECTS[0], _grant(client=C2)).code == codes.UNKNOWN_CLIENT
    revoke = ConsentRevoke(PSEUDONYMS[0], C2, Purpose.LOAN_APPROVAL)
    assert ledger.one(SUBJECTS[0], revoke).code == codes.UNKNOWN_CLIENT


def test_a_grant_must_expire_after_block_time() -> None:
    ledger = populated()
    now = ledger.next_time_ms
    assert ledger.one(SUBJECTS[0], _grant(client=C1, expires=now)).code == codes.BAD_EXPIRY
    assert ledger.one(SUBJECTS[0], _grant(client=C1, expires=now + 2000)).ok


def test_the_newest_grant_or_revocation_is_the_one_in_force() -> None:
    ledger = populated(categories=(Category.LOAN,))
    state, now = ledger.state, T0 + 3600_000

    def in_force(cats: tuple[Category, ...]) -> str | None:
        return views.consent_in_force(state, PSEUDONYMS[0], C0, Purpose.LOAN_APPROVAL, cats, now)

    assert in_force((Category.LOAN,)) is None
    assert ledger.one(SUBJECTS[0], _grant(categories=(Category.MORTGAGE,))).ok
    assert in_force((Category.LOAN,)) == codes.CONSENT_SCOPE
    assert in_force((Category.MORTGAGE,)) is None
    revoke = ConsentRevoke(PSEUDONYMS[0], C0, Purpose.LOAN_APPROVAL)
    out = ledger.one(SUBJECTS[0], revoke)
    assert out.ok
    assert in_force((Category.MORTGAGE,)) == codes.CONSENT_REVOKED
    decision = views.consent(state, PSEUDONYMS[0], C0, Purpose.LOAN_APPROVAL)
    assert decision is not None
    assert (decision.granted, decision.height, decision.tx_hash) == (
        False,
        ledger.height,
        out.tx_hash,
    )
    assert ledger.one(SUBJECTS[0], _grant()).ok
    assert in_force((Category.LOAN, Category.MORTGAGE)) is None
    # consent is per purpose
    other = views.consent_in_force(state, PSEUDONYMS[0], C0, Purpose.CREDIT_CARD_APPROVAL, (), now)
    assert other == codes.NO_CONSENT


# --- record commitments --------------------------------------------------------------------------


def _entries(*refs: bytes, digest: bytes = b"d") -> RecordCommitment:
    return RecordCommitment(tuple(CommitmentEntry(h256(r), h256(digest + r)) for r in refs))


def test_an_agency_commits_and_updates_its_own_records() -> None:
    ledger = Ledger()
    assert ledger.one(A, _entries(b"r1", b"r2")).ok
    rec = views.commitment(ledger.state, h256(b"r1"))
    assert rec is not None
    assert (rec.agency, rec.digest, rec.height) == (A.public_key, h256(b"dr1"), 1)
    assert ledger.one(A, _entries(b"r1", digest=b"v2")).ok
    rec = views.commitment(ledger.state, h256(b"r1"))
    assert rec is not None and (rec.digest, rec.height) == (h256(b"v2r1"), 2)
    assert ledger.one(OUTSIDER, _entries(b"r9")).code == codes.NOT_AGENCY
    assert views.commitment(ledger.state, h256(b"r9")) is None


def test_a_record_ref_of_another_agency_fails_the_whole_commitment() -> None:
    ledger = Ledger()
    assert ledger.one(A, _entries(b"r1")).ok
    out = ledger.one(B, _entries(b"r2", b"r1", b"r3"))
    assert out.code == codes.RECORD_REF_TAKEN
    assert "entries[1]" in out.detail
    assert views.commitment(ledger.state, h256(b"r2")) is None
    assert views.commitment(ledger.state, h256(b"r3")) is None
    rec = views.commitment(ledger.state, h256(b"r1"))
    assert rec is not None and rec.agency == A.public_key


# --- validator-set votes -------------------------------------------------------------------------

_ADD = ValidatorSetChange(OUTSIDER.public_key, "agency9", "/ip4/10.0.0.9/tcp/26610", True)


def test_a_validator_change_is_approved_when_a_quorum_agrees() -> None:
    ledger = Ledger()
    assert ledger.one(A, _ADD).ok
    assert ledger.one(A, _ADD).ok  # a repeat vote replaces the earlier one
    assert views.validator_changes(ledger.state.items) == []
    assert ledger.one(B, _ADD).ok
    assert views.validator_changes(ledger.state.items) == []
    assert ledger.one(C, _ADD).ok  # 3 of 4 = 2f+1
    changes = views.validator_changes(ledger.state.items)
    voters = tuple(sorted(a.public_key for a in (A, B, C)))
    assert changes == [
        ApprovedValidatorChange(_ADD.validator, _ADD.name, _ADD.address, True, voters, 4)
    ]
    for voter in AGENCIES:
        assert ledger.state.get(valvote_key(_ADD.validator, True, voter.public_key)) is None


def test_votes_with_another_address_or_direction_do_not_count_together() -> None:
    ledger = Ledger()
    other_addr = ValidatorSetChange(_ADD.validator, _ADD.name, "/ip4/10.0.0.8/tcp/1", True)
    remove = ValidatorSetChange(_ADD.validator, _ADD.name, "", False)
    assert ledger.one(A, _ADD).ok
    assert ledger.one(B, other_addr).ok
    assert ledger.one(C, remove).ok
    assert views.validator_changes(ledger.state.items) == []
    assert ledger.one(D, _ADD).ok
    assert views.validator_changes(ledger.state.items) == []
    assert ledger.one(B, _ADD).ok  # B changes its vote: now A, B, D agree
    [change] = views.validator_changes(ledger.state.items)
    assert change.add and change.address == _ADD.address and change.height == 5
    # the opposite direction's open vote is untouched
    assert ledger.state.get(valvote_key(_ADD.validator, False, C.public_key)) is not None


def test_only_agencies_vote_on_the_validator_set() -> None:
    ledger = Ledger()
    assert ledger.one(OUTSIDER, _ADD).code == codes.NOT_AGENCY


def test_stored_results_decode_as_tx_results() -> None:
    ledger = Ledger()
    out = ledger.run(ledger.tx(A, Deposit(A.public_key, 1)))
    raw = out.changes[res_key(out.outcomes[0].tx_hash)]
    assert raw is not None
    assert decode(raw, TxResult).ok
