"""PBFT wire messages. Every one is signed by its sender in its own domain.

Sequence numbers are block heights. Replicas are named by their index in the genesis validator
list (``replica``), except in :class:`~protocol.block.CommitVote`, the PBFT commit, which names
the validator key so that a certificate can be checked without the genesis order.
"""

from __future__ import annotations

from typing import Annotated

from protocol.block import MAX_VALIDATORS, Block, CommitCertificate
from protocol.codec import (
    Hash32,
    InvalidMessage,
    MaxItems,
    Message,
    Range,
    Signature,
    message,
    signing_payload,
)
from protocol.crypto import Domain, Identity, verify

ReplicaIndex = Annotated[int, Range(0, MAX_VALIDATORS - 1)]
MAX_PROOFS = 1024
MAX_BLOCKS_PER_RESPONSE = 256


@message("PrePrepare")
class PrePrepare(Message):
    """The primary's proposal of ``block`` for (view, seq); the signature covers the digest."""

    view: int
    seq: int
    digest: Hash32
    block: Block
    replica: ReplicaIndex
    signature: Signature

    def check(self) -> None:
        if self.block.hash != self.digest:
            raise InvalidMessage("PrePrepare.digest: does not match the block")
        if self.block.height != self.seq:
            raise InvalidMessage("PrePrepare.seq: differs from the block height")

    @classmethod
    def sign(
        cls, identity: Identity, chain_id: str, view: int, block: Block, replica: int
    ) -> PrePrepare:
        unsigned = cls(view, block.height, block.hash, block, replica, bytes(64))
        sig = identity.sign(Domain.PREPREPARE, chain_id, _payload(unsigned))
        return cls(view, block.height, block.hash, block, replica, sig)

    def verify(self, chain_id: str, key: bytes) -> bool:
        return verify(key, Domain.PREPREPARE, chain_id, _payload(self), self.signature)


def _payload(pp: PrePrepare) -> bytes:
    return signing_payload(pp, ("block", "signature"))


@message("Prepare")
class Prepare(Message):
    view: int
    seq: int
    digest: Hash32
    replica: ReplicaIndex
    signature: Signature

    @classmethod
    def sign(
        cls, identity: Identity, chain_id: str, view: int, seq: int, digest: bytes, replica: int
    ) -> Prepare:
        unsigned = cls(view, seq, digest, replica, bytes(64))
        sig = identity.sign(Domain.PREPARE, chain_id, signing_payload(unsigned))
        return cls(view, seq, digest, replica, sig)

    def verify(self, chain_id: str, key: bytes) -> bool:
        return verify(key, Domain.PREPARE, chain_id, signing_payload(self), self.signature)


@message("Checkpoint")
class Checkpoint(Message):
    """After executing ``seq``: the block hash there and the app hash after it."""

    seq: int
    block_hash: Hash32
    app_hash: Hash32
    replica: ReplicaIndex
    signature: Signature

    @classmethod
    def sign(
        cls,
        identity: Identity,
        chain_id: str,
        seq: int,
        block_hash: bytes,
        app_hash: bytes,
        replica: int,
    ) -> Checkpoint:
        unsigned = cls(seq, block_hash, app_hash, replica, bytes(64))
        sig = identity.sign(Domain.CHECKPOINT, chain_id, signing_payload(unsigned))
        return cls(seq, block_hash, app_hash, replica, sig)

    def verify(self, chain_id: str, key: bytes) -> bool:
        return verify(key, Domain.CHECKPOINT, chain_id, signing_payload(self), self.signature)


@message("PreparedProof")
class PreparedProof(Message):
    """A pre-prepare and 2f matching prepares from other replicas: (view, seq, digest) prepared."""

    preprepare: PrePrepare
    prepares: Annotated[tuple[Prepare, ...], MaxItems(MAX_VALIDATORS)]

    def check(self) -> None:
        pp = self.preprepare
        seen = set()
        for i, p in enumerate(self.prepares):
            if (p.view, p.seq, p.digest) != (pp.view, pp.seq, pp.digest):
                raise InvalidMessage(f"PreparedProof.prepares[{i}]: for another slot")
            if p.replica in seen or p.replica == pp.replica:
                raise InvalidMessage(f"PreparedProof.prepares[{i}]: replica counted twice")
            seen.add(p.replica)


@message("ViewChange")
class ViewChange(Message):
    """A replica's move to ``new_view``: its latest commit proof and what it prepared above."""

    new_view: int
    committed_height: int
    committed: CommitCertificate | None
    prepared: Annotated[tuple[PreparedProof, ...], MaxItems(MAX_PROOFS)]
    replica: ReplicaIndex
    signature: Signature

    def check(self) -> None:
        if (self.committed is None) != (self.committed_height == 0):
            raise InvalidMessage("ViewChange.committed: needed exactly when committed_height > 0")
        if self.committed is not None and self.committed.height != self.committed_height:
            raise InvalidMessage("ViewChange.committed: certificate for another height")
        seqs = [p.preprepare.seq for p in self.prepared]
        expected = list(range(self.committed_height + 1, self.committed_height + 1 + len(seqs)))
        if seqs != expected:
            raise InvalidMessage("ViewChange.prepared: must be consecutive above committed_height")
        for p in self.prepared:
            if p.preprepare.view >= self.new_view:
                raise InvalidMessage("ViewChange.prepared: proof from a view not below new_view")

    @classmethod
    def sign(
        cls,
        identity: Identity,
        chain_id: str,
        new_view: int,
        committed: CommitCertificate | None,
        prepared: tuple[PreparedProof, ...],
        replica: int,
    ) -> ViewChange:
        height = committed.height if committed else 0
        unsigned = cls(new_view, height, committed, prepared, replica, bytes(64))
        sig = identity.sign(Domain.VIEW_CHANGE, chain_id, signing_payload(unsigned))
        return cls(new_view, height, committed, prepared, replica, sig)

    def verify(self, chain_id: str, key: bytes) -> bool:
        return verify(key, Domain.VIEW_CHANGE, chain_id, signing_payload(self), self.signature)


@message("NewView")
class NewView(Message):
    """The new primary's start of ``view``: 2f+1 view changes from which every replica derives
    the same re-proposals (PBFT's O set, :func:`protocol.consensus.viewchange.select_reproposals`)
    and, for each, the new primary's pre-prepare signature (the blocks are already in the view
    changes, so they are not sent twice)."""

    view: int
    view_changes: Annotated[tuple[ViewChange, ...], MaxItems(MAX_VALIDATORS)]
    preprepare_signatures: Annotated[tuple[Signature, ...], MaxItems(MAX_PROOFS)]
    replica: ReplicaIndex
    signature: Signature

    def check(self) -> None:
        senders = [vc.replica for vc in self.view_changes]
        if senders != sorted(set(senders)):
            raise InvalidMessage("NewView.view_changes: must be sorted by replica, unique")
        if any(vc.new_view != self.view for vc in self.view_changes):
            raise InvalidMessage("NewView.view_changes: a view change for another view")

    @classmethod
    def sign(
        cls,
        identity: Identity,
        chain_id: str,
        view: int,
        view_changes: tuple[ViewChange, ...],
        preprepare_signatures: tuple[bytes, ...],
        replica: int,
    ) -> NewView:
        vcs = tuple(sorted(view_changes, key=lambda vc: vc.replica))
        unsigned = cls(view, vcs, preprepare_signatures, replica, bytes(64))
        sig = identity.sign(Domain.NEW_VIEW, chain_id, signing_payload(unsigned))
        return cls(view, vcs, preprepare_signatures, replica, sig)

    def verify(self, chain_id: str, key: bytes) -> bool:
        return verify(key, Domain.NEW_VIEW, chain_id, signing_payload(self), self.signature)


@message("CommittedBlock")
class CommittedBlock(Message):
    block: Block
    certificate: CommitCertificate

    def check(self) -> None:
        if self.certificate.block_hash != self.block.hash:
            raise InvalidMessage("CommittedBlock.certificate: for another block")
        if self.certificate.height != self.block.height:
            raise InvalidMessage("CommittedBlock.certificate: for another height")


@message("BlockRequest")
class BlockRequest(Message):
    """Ask a peer for committed blocks ``from_height..to_height`` (inclusive)."""

    from_height: int
    to_height: int

    def check(self) -> None:
        if not 1 <= self.from_height <= self.to_height:
            raise InvalidMessage("BlockRequest: need 1 <= from_height <= to_height")


@message("BlockResponse")
class BlockResponse(Message):
    blocks: Annotated[tuple[CommittedBlock, ...], MaxItems(MAX_BLOCKS_PER_RESPONSE)]

    def check(self) -> None:
        heights = [b.block.height for b in self.blocks]
        if heights and heights != list(range(heights[0], heights[0] + len(heights))):
            raise InvalidMessage("BlockResponse.blocks: heights must be consecutive")
