"""Shared fixtures: deterministic identities and sample ledger objects."""

from __future__ import annotations

import pytest

from protocol.block import CommitCertificate, CommitVote
from protocol.crypto import Identity, h256
from protocol.transactions import Deposit, Transaction

CHAIN = "creditnet-test"


@pytest.fixture
def identities() -> list[Identity]:
    return [Identity(bytes([i + 1]) * 32) for i in range(4)]


@pytest.fixture
def sample_tx(identities: list[Identity]) -> Transaction:
    return Transaction.sign(identities[0], CHAIN, Deposit(identities[1].public_key, 500), 7)


@pytest.fixture
def sample_certificate(identities: list[Identity]) -> CommitCertificate:
    block_hash = h256(b"block")
    votes = [CommitVote.sign(i, CHAIN, 0, 1, block_hash) for i in identities[:3]]
    return CommitCertificate.from_votes(votes)
