"""Application state of the credit contract: the key layout and the stored value types.

The contract owns one flat key space (the node stores it under its ``state`` namespace and hashes
every change into the app hash). A key is an ASCII prefix ending in ``/`` followed by fixed-width
binary fields, so no key of one kind can be a prefix of a key of another kind, and a prefix scan
returns exactly one kind. Heights are u64 big-endian and transaction indexes u32 big-endian, so
key order is (height, index) order::

    acct/<account key 32>                                  -> Account
    client/<client key 32>                                 -> ClientRegistration
    subj/<pseudonym 32>                                    -> SubjectRegistration
    consent/<pseudonym 32><client key 32><purpose u8>      -> ConsentDecision (newest wins)
    rec/<record_ref 32>                                    -> CommittedRecord
    req/<request hash 32>                                  -> SeenRequest
    audit/<pseudonym 32><height u64><tx index u32>         -> AuditEntry
    res/<tx hash 32>                                       -> TxResult (every executed tx)
    valvote/<validator 32><add u8><voter 32>               -> ValidatorVote (open votes)
    valchange/<height u64><tx index u32>                   -> ApprovedValidatorChange

Every value is one canonical codec message (tags in ``protocol.codec.TAG_TABLE``), so the bytes
of a value -- and the app hash over them -- are the same on every node. An absent ``acct/`` key
is a zero balance. Key builders refuse arguments of the wrong width with ``ValueError`` (a caller
bug, never a ledger outcome).
"""

from __future__ import annotations

from typing import Annotated, Protocol, TypeVar

from protocol.block import MAX_VALIDATORS
from protocol.codec import (
    Hash32,
    MaxItems,
    MaxLen,
    Message,
    Name,
    PublicKey,
    Range,
    decode,
    encode,
    message,
)
from protocol.transactions import MAX_SERVING_AGENCIES, Amount
from protocol.vocabulary import Category, Purpose, QueryMode

MAX_BALANCE = 10**18
"""Largest balance of one account, in minor units (fits int64); a credit beyond it is refused."""
MAX_DETAIL = 512
"""Longest stored result detail, in characters (longer details are cut, identically everywhere)."""

Balance = Annotated[int, Range(0, MAX_BALANCE)]
TxIndex = Annotated[int, Range(0, (1 << 32) - 1)]
Address = Annotated[str, MaxLen(256)]
Categories = Annotated[tuple[Category, ...], MaxItems(len(Category))]


class StateReader(Protocol):
    """Read access to committed application state (the node's store, or an overlay of it)."""

    def get(self, key: bytes) -> bytes | None: ...


# --- stored values ------------------------------------------------------------------------------


@message("Account")
class Account(Message):
    """An account's balance in minor units (agencies, clients, anyone paid by a transfer)."""

    balance: Balance


@message("ClientRegistration")
class ClientRegistration(Message):
    """A registered query user: its name, the agency that registered it, and when."""

    name: Name
    agency: PublicKey
    height: int


@message("SubjectRegistration")
class SubjectRegistration(Message):
    """A pseudonym's subject key, the agency that checked the subject's identity, and when."""

    subject_key: PublicKey
    agency: PublicKey
    height: int


@message("ConsentDecision")
class ConsentDecision(Message):
    """The newest grant or revocation for one (pseudonym, client, purpose).

    A revocation is stored with ``granted=False``, no categories and ``expires_at_ms=0``.
    ``categories`` empty in a grant means every category.
    """

    granted: bool
    categories: Categories
    expires_at_ms: int
    height: int
    tx_hash: Hash32


@message("CommittedRecord")
class CommittedRecord(Message):
    """One record's on-ledger commitment: the committing agency, the digest, the height."""

    agency: PublicKey
    digest: Hash32
    height: int


@message("SeenRequest")
class SeenRequest(Message):
    """A query request already answered (replay protection): the query entry's tx and height."""

    tx_hash: Hash32
    height: int


@message("AuditEntry")
class AuditEntry(Message):
    """One query of a subject's data, as the subject reads it back ("query records").

    ``agency`` answered the client; ``serving`` are the agencies that supplied records in mode 2;
    ``time_ms`` is the block time at which the entry was committed.
    """

    tx_hash: Hash32
    client: PublicKey
    purpose: Purpose
    categories: Categories
    mode: QueryMode
    agency: PublicKey
    serving: Annotated[tuple[PublicKey, ...], MaxItems(MAX_SERVING_AGENCIES)]
    fee: Amount
    time_ms: int
    height: int


@message("TxResult")
class TxResult(Message):
    """The outcome of one executed transaction: ``code`` is ``ok`` or the refusal code."""

    ok: bool
    code: Annotated[str, MaxLen(32)]
    detail: Annotated[str, MaxLen(MAX_DETAIL)]
    height: int
    index: TxIndex


@message("ValidatorVote")
class ValidatorVote(Message):
    """One agency's open vote to add or remove a validator (the add flag is in the key)."""

    name: Name
    address: Address
    height: int


@message("ApprovedValidatorChange")
class ApprovedValidatorChange(Message):
    """A validator-set change that a quorum of agencies voted for, at ``height``."""

    validator: PublicKey
    name: Name
    address: Address
    add: bool
    voters: Annotated[tuple[PublicKey, ...], MaxItems(MAX_VALIDATORS)]
    height: int


# --- keys ---------------------------------------------------------------------------------------

ACCT = b"acct/"
CLIENT = b"client/"
SUBJ = b"subj/"
CONSENT = b"consent/"
REC = b"rec/"
REQ = b"req/"
AUDIT = b"audit/"
RES = b"res/"
VALVOTE = b"valvote/"
VALCHANGE = b"valchange/"

PREFIXES: dict[str, bytes] = {
    "acct": ACCT,
    "client": CLIENT,
    "subj": SUBJ,
    "consent": CONSENT,
    "rec": REC,
    "req": REQ,
    "audit": AUDIT,
    "res": RES,
    "valvote": VALVOTE,
    "valchange": VALCHANGE,
}
"""Every key prefix of the contract, by name (tests check that none is a prefix of another)."""

_U64_MAX = (1 << 64) - 1
_U32_MAX = (1 << 32) - 1


def _fixed(value: bytes, size: int, what: str) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise ValueError(f"{what}: expected {size} bytes")
    return value


def _u64(n: int) -> bytes:
    if not 0 <= n <= _U64_MAX:
        raise ValueError(f"height {n} is outside 0..2**64-1")
    return n.to_bytes(8, "big")


def _u32(n: int) -> bytes:
    if not 0 <= n <= _U32_MAX:
        raise ValueError(f"index {n} is outside 0..2**32-1")
    return n.to_bytes(4, "big")


def acct_key(account: bytes) -> bytes:
    return ACCT + _fixed(account, 32, "account key")


def client_key(client: bytes) -> bytes:
    return CLIENT + _fixed(client, 32, "client key")


def subj_key(pseudonym: bytes) -> bytes:
    return SUBJ + _fixed(pseudonym, 32, "pseudonym")


def consent_key(pseudonym: bytes, client: bytes, purpose: Purpose) -> bytes:
    if not 0 <= int(purpose) <= 0xFF:
        raise ValueError(f"purpose {int(purpose)} does not fit one byte")
    return (
        CONSENT
        + _fixed(pseudonym, 32, "pseudonym")
        + _fixed(client, 32, "client key")
        + bytes([int(purpose)])
    )


def rec_key(record_ref: bytes) -> bytes:
    return REC + _fixed(record_ref, 32, "record_ref")


def req_key(request_hash: bytes) -> bytes:
    return REQ + _fixed(request_hash, 32, "request hash")


def audit_prefix(pseudonym: bytes) -> bytes:
    """Prefix of every audit entry of one subject (iterates in height, index order)."""
    return AUDIT + _fixed(pseudonym, 32, "pseudonym")


def audit_key(pseudonym: bytes, height: int, index: int) -> bytes:
    return audit_prefix(pseudonym) + _u64(height) + _u32(index)


def parse_audit_key(key: bytes) -> tuple[bytes, int, int]:
    """(pseudonym, height, index) of an ``audit/`` key."""
    if not key.startswith(AUDIT) or len(key) != len(AUDIT) + 44:
        raise ValueError("not an audit key")
    rest = key[len(AUDIT) :]
    return rest[:32], int.from_bytes(rest[32:40], "big"), int.from_bytes(rest[40:], "big")


def res_key(tx_hash: bytes) -> bytes:
    return RES + _fixed(tx_hash, 32, "tx hash")


def valvote_key(validator: bytes, add: bool, voter: bytes) -> bytes:
    return (
        VALVOTE
        + _fixed(validator, 32, "validator key")
        + (b"\x01" if add else b"\x00")
        + _fixed(voter, 32, "voter key")
    )


def valchange_key(height: int, index: int) -> bytes:
    return VALCHANGE + _u64(height) + _u32(index)


def parse_valchange_key(key: bytes) -> tuple[int, int]:
    """(height, index) of a ``valchange/`` key."""
    if not key.startswith(VALCHANGE) or len(key) != len(VALCHANGE) + 12:
        raise ValueError("not a valchange key")
    rest = key[len(VALCHANGE) :]
    return int.from_bytes(rest[:8], "big"), int.from_bytes(rest[8:], "big")


# --- reading and writing values -----------------------------------------------------------------

V = TypeVar("V", bound=Message)


def load(state: StateReader, key: bytes, cls: type[V]) -> V | None:
    """The value under ``key`` decoded as ``cls``, or None when absent.

    Stored values were written by the contract, so a value that does not decode is a corrupt
    store: the codec's error propagates (a node must stop rather than execute on bad state).
    Written by :func:`dump`, they are canonical: the re-pack that proves it for bytes from
    outside is skipped (every field is still checked; the app hash covers the bytes written).
    """
    raw = state.get(key)
    return None if raw is None else decode(raw, cls, canonical=False)


def dump(value: Message) -> bytes:
    """The canonical bytes stored for ``value``."""
    return encode(value)
