"""View-change rules shared by the new primary and every replica checking its NewView.

Safety argument in brief. A replica prepares heights in order within a view (height n+1 only
after n, or after n is committed), so the prepared proofs a replica reports are consecutive above
its committed height. A block committed anywhere was prepared by 2f+1 replicas, so any 2f+1 view
changes include it (or a certificate at or above it). The new view starts from the highest
certified height ``base`` and re-proposes, height by height, the highest-view prepared block
whose ``prev_hash`` chains onto the block chosen below it; where no proof chains on, nothing above
can have committed, and fresh proposals continue from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from protocol.block import Block, CommitCertificate, InvalidCertificate
from protocol.consensus.config import ReplicaConfig
from protocol.consensus.messages import PreparedProof, PrePrepare, ViewChange


@dataclass(frozen=True)
class Reproposals:
    base_height: int
    base_hash: bytes
    base_certificate: CommitCertificate | None
    blocks: tuple[Block, ...]
    """Blocks for heights base_height+1, base_height+2, ... in order."""


def check_preprepare_signature(cfg: ReplicaConfig, pp: PrePrepare) -> str | None:
    if pp.replica != cfg.primary(pp.view):
        return f"pre-prepare for view {pp.view} from replica {pp.replica}, not its primary"
    if cfg.verify_signatures and not pp.verify(cfg.chain_id, cfg.validators[pp.replica]):
        return f"bad pre-prepare signature for ({pp.view}, {pp.seq})"
    return None


def check_proof(cfg: ReplicaConfig, proof: PreparedProof) -> str | None:
    """Why ``proof`` does not show (view, seq, digest) prepared, or None when it does."""
    pp = proof.preprepare
    err = check_preprepare_signature(cfg, pp)
    if err:
        return err
    if pp.block.header.chain_id != cfg.chain_id:
        return "prepared block of another chain"
    if len(proof.prepares) < 2 * cfg.f:
        return f"prepared proof with {len(proof.prepares)} prepares, {2 * cfg.f} needed"
    for p in proof.prepares:
        if p.replica >= cfg.n:
            return f"prepare from unknown replica {p.replica}"
        if cfg.verify_signatures and not p.verify(cfg.chain_id, cfg.validators[p.replica]):
            return f"bad prepare signature from replica {p.replica}"
    return None


def check_view_change(cfg: ReplicaConfig, vc: ViewChange, sender: int) -> str | None:
    """Why ``vc`` from ``sender`` is not a valid view change, or None when it is."""
    if vc.replica != sender or sender >= cfg.n:
        return f"view change names replica {vc.replica} but came from {sender}"
    if cfg.verify_signatures and not vc.verify(cfg.chain_id, cfg.validators[sender]):
        return "bad view-change signature"
    if vc.committed is not None:
        try:
            if cfg.verify_signatures:
                vc.committed.verify(cfg.chain_id, cfg.validators)
            elif len({v.validator for v in vc.committed.votes}) < cfg.quorum:
                return "commit certificate without a quorum"
        except InvalidCertificate as exc:
            return f"view change carries an invalid certificate: {exc}"
    for proof in vc.prepared:
        err = check_proof(cfg, proof)
        if err:
            return err
    return None


def select_reproposals(cfg: ReplicaConfig, vcs: Sequence[ViewChange]) -> Reproposals:
    """PBFT's O set for a new view, computed identically by the primary and every replica."""
    best_cert: CommitCertificate | None = None
    for vc in vcs:
        if vc.committed is not None and (
            best_cert is None or vc.committed.height > best_cert.height
        ):
            best_cert = vc.committed
    base = best_cert.height if best_cert else 0
    prev = best_cert.block_hash if best_cert else cfg.genesis_hash
    by_seq: dict[int, PreparedProof] = {}
    for vc in vcs:
        for proof in vc.prepared:
            pp = proof.preprepare
            if pp.seq <= base:
                continue
            cur = by_seq.get(pp.seq)
            if cur is None or (pp.view, pp.digest) > (cur.preprepare.view, cur.preprepare.digest):
                by_seq[pp.seq] = proof
    blocks: list[Block] = []
    seq = base + 1
    while seq in by_seq:
        block = by_seq[seq].preprepare.block
        if block.header.prev_hash != prev:
            break
        blocks.append(block)
        prev = block.hash
        seq += 1
    return Reproposals(
        base, best_cert.block_hash if best_cert else cfg.genesis_hash, best_cert, tuple(blocks)
    )
