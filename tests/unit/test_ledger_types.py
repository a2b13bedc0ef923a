"""Transaction kinds, blocks and commit certificates: self-checks and verification."""

from __future__ import annotations

import pytest

from protocol.block import (
    Block,
    CommitCertificate,
    CommitVote,
    InvalidCertificate,
    make_header,
    max_faulty,
    quorum,
)
from protocol.codec import CodecError, InvalidMessage, decode, encode
from protocol.crypto import Identity, h256
from protocol.transactions import (
    CommitmentEntry,
    ConsentGrant,
    QueryEntry,
    QueryRequest,
    RecordCommitment,
    Transaction,
    decode_tx,
    tx_hash,
)
from protocol.vocabulary import Category, Purpose, QueryMode

CHAIN = "creditnet-test"


def _request(client: Identity, agency: Identity) -> QueryRequest:
    return QueryRequest.sign(
        client,
        CHAIN,
        agency=agency.public_key,
        pseudonym=h256(b"subject"),
        purpose=Purpose.LOAN_APPROVAL,
        categories=(Category.LOAN, Category.CREDIT_CARD),
        nonce=42,
        time_ms=1_700_000_000_000,
    )


@pytest.mark.parametrize(
    ("n", "f", "q"), [(1, 0, 1), (4, 1, 3), (7, 2, 5), (10, 3, 7), (16, 5, 11)]
)
def test_fault_tolerance_arithmetic(n: int, f: int, q: int) -> None:
    assert (max_faulty(n), quorum(n)) == (f, q)


def test_query_entry_mode_rules(identities: list[Identity]) -> None:
    req = _request(identities[0], identities[1])
    assert req.verify(CHAIN)
    assert not req.verify("other")
    with pytest.raises(InvalidMessage, match="mode 1"):
        encode(QueryEntry(req, QueryMode.DIRECT, (identities[2].public_key,), 100))
    with pytest.raises(InvalidMessage, match="mode 2 needs"):
        encode(QueryEntry(req, QueryMode.FORWARDED, (), 100))
    ok = QueryEntry(req, QueryMode.FORWARDED, (identities[2].public_key,), 150)
    assert decode(encode(ok), QueryEntry) == ok


def test_consent_categories_must_be_canonical(identities: list[Identity]) -> None:
    grant = ConsentGrant(
        h256(b"s"),
        identities[0].public_key,
        Purpose.LOAN_APPROVAL,
        (Category.CREDIT_CARD, Category.LOAN),
        10,
    )
    with pytest.raises(InvalidMessage, match="sorted and unique"):
        encode(grant)


def test_record_commitment_refuses_duplicates_and_empty() -> None:
    e = CommitmentEntry(h256(b"r1"), h256(b"d1"))
    with pytest.raises(InvalidMessage, match="appears twice"):
        encode(RecordCommitment((e, e)))
    with pytest.raises(InvalidMessage, match="must not be empty"):
        encode(RecordCommitment(()))


def test_tx_hash_is_over_exact_bytes(sample_tx: Transaction) -> None:
    data = encode(sample_tx)
    assert decode_tx(data) == sample_tx
    assert tx_hash(data) == h256(data)


def _block(identities: list[Identity], sample_tx: Transaction) -> Block:
    txs = (encode(sample_tx),)
    header = make_header(
        chain_id=CHAIN,
        height=1,
        time_ms=1,
        prev_hash=bytes(32),
        txs=txs,
        app_height=0,
        app_hash=bytes(32),
        view=0,
        proposer=identities[0].public_key,
    )
    return Block(header, txs)


def test_block_tx_root_must_match(identities: list[Identity], sample_tx: Transaction) -> None:
    block = _block(identities, sample_tx)
    assert decode(encode(block), Block) == block
    with pytest.raises(InvalidMessage, match="tx_root"):
        encode(Block(block.header, ()))


def test_certificate_verifies_with_quorum_only(
    identities: list[Identity], sample_tx: Transaction
) -> None:
    keys = [i.public_key for i in identities]
    block = _block(identities, sample_tx)
    votes = [CommitVote.sign(i, CHAIN, 0, 1, block.hash) for i in identities]
    CommitCertificate.from_votes(votes[:3]).verify(CHAIN, keys)
    with pytest.raises(InvalidCertificate, match="2 valid votes, 3 needed"):
        CommitCertificate.from_votes(votes[:2]).verify(CHAIN, keys)
    # Duplicated votes from one validator count once.
    with pytest.raises(InvalidCertificate, match="3 needed"):
        CommitCertificate.from_votes([votes[0], votes[0], votes[1]]).verify(CHAIN, keys)
    outsider = Identity(b"\x99" * 32)
    bad = CommitCertificate.from_votes(
        [*votes[:3], CommitVote.sign(outsider, CHAIN, 0, 1, block.hash)]
    )
    with pytest.raises(InvalidCertificate, match="not a validator"):
        bad.verify(CHAIN, keys)
    with pytest.raises(InvalidCertificate, match="bad signature"):
        CommitCertificate.from_votes(votes[:3]).verify("other-chain", keys)


def test_certificate_votes_must_be_for_one_slot(identities: list[Identity]) -> None:
    a = CommitVote.sign(identities[0], CHAIN, 0, 1, h256(b"x"))
    b = CommitVote.sign(identities[1], CHAIN, 0, 1, h256(b"y"))
    with pytest.raises(CodecError, match="another slot"):
        encode(
            CommitCertificate(1, 0, h256(b"x"), tuple(sorted((a, b), key=lambda v: v.validator)))
        )
