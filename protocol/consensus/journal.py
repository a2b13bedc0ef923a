"""The replica's write-ahead journal: what it signed and what it prepared, as key/value records.

The driver stores each :class:`~protocol.consensus.events.Persist` durably before the sends that
follow it; on restart it hands all records back and :func:`load_journal` rebuilds what the
replica must not contradict. Records:

- ``view`` / ``vc-target``: the view the replica is in, the highest view it asked to move to;
- ``v/<kind><view u64><seq u64>``: its own signature at a slot -- ``P`` (pre-prepare; the value
  is the whole pre-prepare, so a restarted primary can resend it), ``p`` (prepare) and ``c``
  (commit), whose values are the signed digest;
- ``proof/<seq u64>``: a prepared proof, reported in view changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.codec import decode
from protocol.consensus.messages import PreparedProof, PrePrepare

MAX_CONSENSUS_MESSAGE_BYTES = 64 << 20
VOTE_PREFIX = b"v/"
PROOF_PREFIX = b"proof/"
VIEW_KEY = b"view"
VC_TARGET_KEY = b"vc-target"


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def vote_key(kind: bytes, view: int, seq: int) -> bytes:
    """Key of the replica's own signature of ``kind`` (b"P", b"p", b"c") at (view, seq)."""
    return VOTE_PREFIX + kind + u64(view) + u64(seq)


def proof_key(seq: int) -> bytes:
    return PROOF_PREFIX + u64(seq)


@dataclass
class Journal:
    view: int = 0
    vc_target: int = 0
    votes: dict[tuple[bytes, int, int], bytes] = field(default_factory=dict)
    """(kind, view, seq) -> signed digest."""
    own_preprepares: list[PrePrepare] = field(default_factory=list)
    proofs: dict[int, PreparedProof] = field(default_factory=dict)


def load_journal(persisted: Mapping[bytes, bytes], committed_height: int) -> Journal:
    """Rebuild the journal from stored records (proofs at or below the committed height dropped)."""
    j = Journal()
    for key, value in persisted.items():
        if key == VIEW_KEY:
            j.view = int.from_bytes(value, "big")
        elif key == VC_TARGET_KEY:
            j.vc_target = int.from_bytes(value, "big")
        elif key.startswith(VOTE_PREFIX) and len(key) == len(VOTE_PREFIX) + 17:
            kind = key[len(VOTE_PREFIX) : len(VOTE_PREFIX) + 1]
            view = int.from_bytes(key[-16:-8], "big")
            seq = int.from_bytes(key[-8:], "big")
            if kind == b"P":
                pp = decode(value, PrePrepare, max_bytes=MAX_CONSENSUS_MESSAGE_BYTES)
                j.votes[(kind, view, seq)] = pp.digest
                j.own_preprepares.append(pp)
            else:
                j.votes[(kind, view, seq)] = value
        elif key.startswith(PROOF_PREFIX):
            proof = decode(value, PreparedProof, max_bytes=MAX_CONSENSUS_MESSAGE_BYTES)
            if proof.preprepare.seq > committed_height:
                j.proofs[proof.preprepare.seq] = proof
    return j
