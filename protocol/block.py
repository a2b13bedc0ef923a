"""Blocks, commit votes and commit certificates.

A block is a header plus the exact bytes of its transactions. The header fixes the chain, the
height, the proposing view and validator, the block time, the previous block's hash, the Merkle
root of the transaction bytes, and ``app_hash``: the application state hash after executing block
``app_height`` -- the proposer's latest executed block, below this one. Execution follows commit
(as in CometBFT), so a proposer never runs its own proposal first, and naming the height lets
several heights be in flight at once while every replica can still check the claim against its
own execution of that height. The block hash is the hash of the encoded header.

A :class:`CommitCertificate` holds 2f+1 :class:`CommitVote` s from distinct validators for one
(view, height, block hash); anyone holding the validator set can check it alone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Annotated

from protocol.codec import (
    Hash32,
    InvalidMessage,
    MaxItems,
    MaxLen,
    Message,
    Name,
    PublicKey,
    Signature,
    encode,
    message,
    signing_payload,
)
from protocol.crypto import Domain, Identity, h256, merkle_root, verify
from protocol.transactions import MAX_TX_BYTES

MAX_BLOCK_TXS = 5000
MAX_VALIDATORS = 128

TxBytes = Annotated[bytes, MaxLen(MAX_TX_BYTES)]


def max_faulty(n: int) -> int:
    """f: the most Byzantine validators a set of n tolerates (n >= 3f + 1)."""
    return (n - 1) // 3


def quorum(n: int) -> int:
    """2f+1 for n validators: the votes a certificate needs."""
    return 2 * max_faulty(n) + 1


class InvalidCertificate(ValueError):
    """A commit certificate that does not prove its block; the message says why."""


@message("BlockHeader", slots=False)
class BlockHeader(Message):
    chain_id: Name
    height: int
    time_ms: int
    prev_hash: Hash32
    tx_root: Hash32
    app_height: int
    app_hash: Hash32
    view: int
    proposer: PublicKey

    def check(self) -> None:
        if self.height < 1:
            raise InvalidMessage("BlockHeader.height: must be at least 1")
        if self.app_height >= self.height:
            raise InvalidMessage("BlockHeader.app_height: must be below height")

    @functools.cached_property
    def hash(self) -> bytes:
        return h256(encode(self, check=False))


@message("Block", slots=False)
class Block(Message):
    header: BlockHeader
    txs: Annotated[tuple[TxBytes, ...], MaxItems(MAX_BLOCK_TXS)]

    @functools.cached_property
    def tx_hashes(self) -> tuple[bytes, ...]:
        """Each transaction's hash (:func:`protocol.crypto.h256` of its bytes), computed once:
        judging, ordering, committing and executing a block all need them."""
        return tuple(h256(tx) for tx in self.txs)

    def check(self) -> None:
        if merkle_root(self.txs) != self.header.tx_root:
            raise InvalidMessage("Block.header.tx_root: does not match the transactions")

    @property
    def hash(self) -> bytes:
        return self.header.hash

    @property
    def height(self) -> int:
        return self.header.height


@message("CommitVote")
class CommitVote(Message):
    """A validator's signed PBFT commit for (view, height, block hash)."""

    view: int
    height: int
    block_hash: Hash32
    validator: PublicKey
    signature: Signature

    @classmethod
    def sign(
        cls, identity: Identity, chain_id: str, view: int, height: int, block_hash: bytes
    ) -> CommitVote:
        unsigned = cls(view, height, block_hash, identity.public_key, bytes(64))
        sig = identity.sign(Domain.COMMIT, chain_id, signing_payload(unsigned))
        return cls(view, height, block_hash, identity.public_key, sig)

    def verify(self, chain_id: str) -> bool:
        return verify(
            self.validator, Domain.COMMIT, chain_id, signing_payload(self), self.signature
        )


@message("CommitCertificate")
class CommitCertificate(Message):
    """2f+1 commit votes for one block: proof that the block is final."""

    height: int
    view: int
    block_hash: Hash32
    votes: Annotated[tuple[CommitVote, ...], MaxItems(MAX_VALIDATORS)]

    def check(self) -> None:
        for i, v in enumerate(self.votes):
            if (v.view, v.height, v.block_hash) != (self.view, self.height, self.block_hash):
                raise InvalidMessage(f"CommitCertificate.votes[{i}]: vote is for another slot")
        keys = [v.validator for v in self.votes]
        if keys != sorted(set(keys)):
            raise InvalidMessage("CommitCertificate.votes: must be sorted by validator, unique")

    @classmethod
    def from_votes(cls, votes: Sequence[CommitVote]) -> CommitCertificate:
        """Build a certificate from votes for one slot (sorted, one per validator)."""
        if not votes:
            raise InvalidCertificate("no votes")
        first = votes[0]
        unique = {v.validator: v for v in votes}
        ordered = tuple(unique[k] for k in sorted(unique))
        return cls(first.height, first.view, first.block_hash, ordered)

    def verify(self, chain_id: str, validators: Sequence[bytes]) -> None:
        """Raise :class:`InvalidCertificate` unless 2f+1 distinct validators signed this block."""
        members = set(validators)
        need = quorum(len(members))
        good = 0
        for v in self.votes:
            if v.validator not in members:
                raise InvalidCertificate(f"vote from {v.validator.hex()[:16]}, not a validator")
            if not v.verify(chain_id):
                raise InvalidCertificate(f"bad signature from {v.validator.hex()[:16]}")
            good += 1
        if good < need:
            raise InvalidCertificate(f"{good} valid votes, {need} needed")


def make_header(
    *,
    chain_id: str,
    height: int,
    time_ms: int,
    prev_hash: bytes,
    txs: Sequence[bytes],
    app_height: int,
    app_hash: bytes,
    view: int,
    proposer: bytes,
) -> BlockHeader:
    """A header whose tx_root matches ``txs``."""
    return BlockHeader(
        chain_id, height, time_ms, prev_hash, merkle_root(txs), app_height, app_hash, view, proposer
    )
