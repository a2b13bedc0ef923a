"""A records load's commitment transaction always fits the transaction size limit."""

from __future__ import annotations

from node.records import COMMITMENTS_PER_TX
from protocol.codec import encode
from protocol.contract.admission import check_tx
from protocol.crypto import Identity, h256
from protocol.transactions import (
    MAX_COMMITMENTS_PER_TX,
    MAX_TX_BYTES,
    CommitmentEntry,
    RecordCommitment,
    Transaction,
)


def test_a_full_chunk_of_commitments_is_a_valid_transaction() -> None:
    agency = Identity(b"\x07" * 32)
    chain = "c" * 48  # the longest chain id genesis allows
    body = RecordCommitment(
        tuple(
            CommitmentEntry(h256(b"ref%d" % i), h256(b"digest%d" % i))
            for i in range(COMMITMENTS_PER_TX)
        )
    )
    tx = encode(Transaction.sign(agency, chain, body, 2**63 - 1))
    assert len(tx) <= MAX_TX_BYTES
    check_tx(chain, tx)
    assert COMMITMENTS_PER_TX <= MAX_COMMITMENTS_PER_TX
