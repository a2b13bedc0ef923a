"""check_tx: stateless admission by size, decoding, body check and signatures."""

from __future__ import annotations

import dataclasses

import pytest

from protocol.codec import encode
from protocol.contract import codes
from protocol.contract.admission import TxRejected, check_tx
from protocol.crypto import Identity
from protocol.transactions import (
    MAX_TX_BYTES,
    CommitmentEntry,
    Deposit,
    QueryRequest,
    RecordCommitment,
    Transaction,
)
from tests.unit.test_contract_harness import AGENCIES, CHAIN, CLIENTS, query_entry, request

A = AGENCIES[0]


def _rejected(tx_bytes: bytes, chain_id: str = CHAIN) -> TxRejected:
    with pytest.raises(TxRejected) as info:
        check_tx(chain_id, tx_bytes)
    assert info.value.detail and str(info.value).startswith(info.value.code)
    return info.value


def test_a_well_signed_transaction_is_admitted_and_decoded() -> None:
    tx = Transaction.sign(A, CHAIN, Deposit(A.public_key, 5), 1)
    assert check_tx(CHAIN, encode(tx)) == tx


def test_a_query_entry_with_the_clients_request_signature_is_admitted() -> None:
    tx = Transaction.sign(A, CHAIN, query_entry(request()), 1)
    assert check_tx(CHAIN, encode(tx)) == tx


def test_a_tampered_signature_is_refused() -> None:
    tx = Transaction.sign(A, CHAIN, Deposit(A.public_key, 5), 1)
    forged = dataclasses.replace(tx, signature=bytes([tx.signature[0] ^ 1]) + tx.signature[1:])
    assert _rejected(encode(forged)).code == codes.BAD_SIGNATURE


def test_a_changed_body_or_signer_no_longer_verifies() -> None:
    tx = Transaction.sign(A, CHAIN, Deposit(A.public_key, 5), 1)
    more = dataclasses.replace(tx, body=Deposit(A.public_key, 5000))
    assert _rejected(encode(more)).code == codes.BAD_SIGNATURE
    other = dataclasses.replace(tx, signer=AGENCIES[1].public_key)
    assert _rejected(encode(other)).code == codes.BAD_SIGNATURE


def test_a_transaction_signed_for_another_chain_is_refused() -> None:
    tx = Transaction.sign(A, "other-chain", Deposit(A.public_key, 5), 1)
    rejected = _rejected(encode(tx))
    assert rejected.code == codes.BAD_SIGNATURE
    assert CHAIN in rejected.detail


def test_a_query_request_not_signed_by_its_client_is_refused() -> None:
    req = request()
    stolen = dataclasses.replace(req, client=CLIENTS[1].public_key)
    tx = Transaction.sign(A, CHAIN, query_entry(stolen), 1)
    assert _rejected(encode(tx)).code == codes.BAD_REQUEST_SIGNATURE


def test_a_query_request_signed_for_another_chain_is_refused() -> None:
    req = QueryRequest.sign(
        CLIENTS[0],
        "other-chain",
        agency=A.public_key,
        pseudonym=request().pseudonym,
        purpose=request().purpose,
        categories=(),
        nonce=1,
        time_ms=0,
    )
    tx = Transaction.sign(A, CHAIN, query_entry(req), 1)
    assert _rejected(encode(tx)).code == codes.BAD_REQUEST_SIGNATURE


def test_oversized_bytes_are_refused_before_decoding() -> None:
    assert _rejected(b"\x00" * (MAX_TX_BYTES + 1)).code == codes.OVERSIZED


def test_an_oversized_valid_transaction_is_refused() -> None:
    signer = Identity(b"\x09" * 32)
    entries = tuple(CommitmentEntry(i.to_bytes(32, "big"), bytes(32)) for i in range(1000))
    raw = encode(Transaction.sign(signer, CHAIN, RecordCommitment(entries), 1))
    assert len(raw) > MAX_TX_BYTES
    assert _rejected(raw).code == codes.OVERSIZED


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        b"not msgpack at all",
        b"\x92\x01\x02",  # an array of the wrong shape
        b"\x91\x04",  # a Deposit tag with none of its fields
    ],
)
def test_malformed_bytes_are_refused(raw: bytes) -> None:
    assert _rejected(raw).code == codes.MALFORMED


def test_truncated_and_trailing_bytes_are_refused() -> None:
    raw = encode(Transaction.sign(A, CHAIN, Deposit(A.public_key, 5), 1))
    assert _rejected(raw[:-1]).code == codes.MALFORMED
    assert _rejected(raw + b"\x00").code == codes.MALFORMED


def test_a_body_that_fails_its_self_check_is_refused_as_invalid() -> None:
    tx = Transaction.sign(A, CHAIN, Deposit(A.public_key, 0), 1)
    rejected = _rejected(encode(tx, check=False))
    assert rejected.code == codes.INVALID
    assert "Deposit.amount" in rejected.detail


def test_the_signed_payload_cut_from_the_encoded_bytes_is_the_one_encoding_builds() -> None:
    """check_tx verifies over the received bytes minus the signature (no re-encoding): for every
    kind of body that cut must be exactly ``signing_payload``; a tampered byte still fails."""
    from protocol.codec import signing_payload  # noqa: PLC0415

    bodies = [
        Deposit(A.public_key, 5),
        RecordCommitment((CommitmentEntry(bytes(32), bytes([1]) * 32),)),
        query_entry(request()),
    ]
    for n, body in enumerate(bodies):
        tx = Transaction.sign(A, CHAIN, body, 1 << (8 * n))
        raw = encode(tx)
        assert b"\x94" + raw[1:-66] == signing_payload(tx)
        assert tx.verify_encoded(CHAIN, raw)
        assert not tx.verify_encoded("another-chain", raw)
        forged = dataclasses.replace(tx, nonce=tx.nonce + 1)
        assert not forged.verify_encoded(CHAIN, encode(forged))
