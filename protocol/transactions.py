"""Ledger transactions: the signed envelope and one body type per kind.

A :class:`Transaction` carries a body, the signer's public key, a signer-chosen nonce and an
Ed25519 signature over the transaction's canonical bytes without the signature, in a domain tag
specific to the body's kind. Inside blocks a transaction is kept as its exact encoded bytes; its
identity is ``tx_hash(bytes)``. Replay protection: the ledger refuses a transaction whose hash is
already committed, so a client picks a fresh nonce for every transaction it means to be distinct.

Each body's ``check`` holds what can be said about it alone (sizes, ranges, canonical ordering);
rules that need ledger state (who may sign what, balances, consent) belong to the contract.
"""

from __future__ import annotations

from typing import Annotated

from protocol.codec import (
    CodecError,
    Hash32,
    InvalidMessage,
    MaxItems,
    MaxLen,
    Message,
    Name,
    PublicKey,
    Range,
    Signature,
    decode,
    encode,
    message,
    signing_payload,
)
from protocol.crypto import Domain, Identity, h256, verify
from protocol.vocabulary import Category, Purpose, QueryMode

MAX_TX_BYTES = 64 * 1024
MAX_AMOUNT = 10**15
"""Largest amount in one transaction, in minor units (fits int64 with room for sums)."""
MAX_COMMITMENTS_PER_TX = 1000
MAX_SERVING_AGENCIES = 64

Amount = Annotated[int, Range(0, MAX_AMOUNT)]


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise InvalidMessage(f"{name}: must be greater than 0")


def _canonical_categories(field: str, cats: tuple[Category, ...]) -> None:
    if list(cats) != sorted(set(cats)):
        raise InvalidMessage(f"{field}: categories must be sorted and unique")


@message("RegisterClient")
class RegisterClient(Message):
    """An agency registers a query user (a lender) by public key, with an opening deposit."""

    client: PublicKey
    name: Name
    initial_deposit: Amount

    def check(self) -> None:
        if not self.name.strip():
            raise InvalidMessage("RegisterClient.name: must not be blank")


@message("RegisterSubject")
class RegisterSubject(Message):
    """An agency, after checking identity, binds a subject's pseudonym to the subject's key."""

    pseudonym: Hash32
    subject_key: PublicKey


@message("Deposit")
class Deposit(Message):
    """An agency credits an account for a payment it received off the ledger."""

    account: PublicKey
    amount: Amount

    def check(self) -> None:
        _positive("Deposit.amount", self.amount)


@message("Transfer")
class Transfer(Message):
    """The signer moves part of its balance to another account."""

    to: PublicKey
    amount: Amount

    def check(self) -> None:
        _positive("Transfer.amount", self.amount)


@message("ConsentGrant")
class ConsentGrant(Message):
    """A subject lets one client query its records for one purpose, until an expiry time.

    ``categories`` empty means every category; ``expires_at_ms`` is compared with block time.
    The newest grant or revocation for (subject, client, purpose) is the one in force.
    """

    pseudonym: Hash32
    client: PublicKey
    purpose: Purpose
    categories: Annotated[tuple[Category, ...], MaxItems(len(Category))]
    expires_at_ms: int

    def check(self) -> None:
        _canonical_categories("ConsentGrant.categories", self.categories)
        _positive("ConsentGrant.expires_at_ms", self.expires_at_ms)


@message("ConsentRevoke")
class ConsentRevoke(Message):
    """A subject withdraws its consent for (client, purpose) from the commit height on."""

    pseudonym: Hash32
    client: PublicKey
    purpose: Purpose


@message("CommitmentEntry")
class CommitmentEntry(Message):
    """One record's commitment: a stable reference and the digest of (pseudonym, record)."""

    record_ref: Hash32
    digest: Hash32


@message("RecordCommitment")
class RecordCommitment(Message):
    """An agency commits to records it holds; the ledger sees neither subject nor content."""

    entries: Annotated[tuple[CommitmentEntry, ...], MaxItems(MAX_COMMITMENTS_PER_TX)]

    def check(self) -> None:
        if not self.entries:
            raise InvalidMessage("RecordCommitment.entries: must not be empty")
        refs = [e.record_ref for e in self.entries]
        if len(set(refs)) != len(refs):
            raise InvalidMessage("RecordCommitment.entries: a record_ref appears twice")


@message("QueryRequest")
class QueryRequest(Message):
    """A query user's signed request to one agency for a subject's report."""

    client: PublicKey
    agency: PublicKey
    pseudonym: Hash32
    purpose: Purpose
    categories: Annotated[tuple[Category, ...], MaxItems(len(Category))]
    nonce: int
    time_ms: int
    signature: Signature

    def check(self) -> None:
        _canonical_categories("QueryRequest.categories", self.categories)

    @classmethod
    def sign(
        cls,
        identity: Identity,
        chain_id: str,
        *,
        agency: bytes,
        pseudonym: bytes,
        purpose: Purpose,
        categories: tuple[Category, ...],
        nonce: int,
        time_ms: int,
    ) -> QueryRequest:
        unsigned = cls(
            identity.public_key, agency, pseudonym, purpose, categories, nonce, time_ms, bytes(64)
        )
        sig = identity.sign(Domain.QUERY_REQUEST, chain_id, signing_payload(unsigned))
        return cls(identity.public_key, agency, pseudonym, purpose, categories, nonce, time_ms, sig)

    def verify(self, chain_id: str) -> bool:
        return verify(
            self.client, Domain.QUERY_REQUEST, chain_id, signing_payload(self), self.signature
        )

    @property
    def request_hash(self) -> bytes:
        return h256(encode(self))


@message("QueryEntry")
class QueryEntry(Message):
    """The audit entry of one query, submitted by the answering agency; it also settles fees."""

    request: QueryRequest
    mode: QueryMode
    serving: Annotated[tuple[PublicKey, ...], MaxItems(MAX_SERVING_AGENCIES)]
    fee: Amount

    def check(self) -> None:
        if len(set(self.serving)) != len(self.serving):
            raise InvalidMessage("QueryEntry.serving: an agency appears twice")
        if self.mode == QueryMode.DIRECT and self.serving:
            raise InvalidMessage("QueryEntry.serving: must be empty in mode 1 (direct)")
        if self.mode == QueryMode.FORWARDED and not self.serving:
            raise InvalidMessage("QueryEntry.serving: mode 2 needs at least one serving agency")


@message("ValidatorSetChange")
class ValidatorSetChange(Message):
    """A validator's vote to add or remove an agency; it applies once 2f+1 validators agree."""

    validator: PublicKey
    name: Name
    address: Annotated[str, MaxLen(256)]
    add: bool

    def check(self) -> None:
        if self.add and not self.address:
            raise InvalidMessage("ValidatorSetChange.address: needed to add a validator")


TxBody = (
    RegisterClient
    | RegisterSubject
    | Deposit
    | Transfer
    | ConsentGrant
    | ConsentRevoke
    | RecordCommitment
    | QueryEntry
    | ValidatorSetChange
)

TX_DOMAINS: dict[type[Message], Domain] = {
    RegisterClient: Domain.TX_REGISTER_CLIENT,
    RegisterSubject: Domain.TX_REGISTER_SUBJECT,
    Deposit: Domain.TX_DEPOSIT,
    Transfer: Domain.TX_TRANSFER,
    ConsentGrant: Domain.TX_CONSENT_GRANT,
    ConsentRevoke: Domain.TX_CONSENT_REVOKE,
    RecordCommitment: Domain.TX_RECORD_COMMITMENT,
    QueryEntry: Domain.TX_QUERY_ENTRY,
    ValidatorSetChange: Domain.TX_VALIDATOR_SET_CHANGE,
}


@message("Transaction")
class Transaction(Message):
    """The signed envelope of every ledger transaction."""

    body: TxBody
    signer: PublicKey
    nonce: int
    signature: Signature

    @classmethod
    def sign(cls, identity: Identity, chain_id: str, body: TxBody, nonce: int) -> Transaction:
        unsigned = cls(body, identity.public_key, nonce, bytes(64))
        sig = identity.sign(TX_DOMAINS[type(body)], chain_id, signing_payload(unsigned))
        return cls(body, identity.public_key, nonce, sig)

    def verify(self, chain_id: str) -> bool:
        """True when the signature is the signer's over this transaction in this chain."""
        return verify(
            self.signer,
            TX_DOMAINS[type(self.body)],
            chain_id,
            signing_payload(self),
            self.signature,
        )

    def verify_encoded(self, chain_id: str, raw: bytes) -> bool:
        """:meth:`verify` for a transaction decoded from ``raw`` (which decoding proved canonical),
        without encoding it again: the signed payload is ``raw`` with a four-item array header
        and without the trailing signature (``0xc4 0x40`` + 64 bytes)."""
        if raw[:1] != b"\x95" or raw[-66:-64] != b"\xc4\x40" or raw[-64:] != self.signature:
            return self.verify(chain_id)
        return verify(
            self.signer, TX_DOMAINS[type(self.body)], chain_id, b"\x94" + raw[1:-66], self.signature
        )

    @property
    def kind(self) -> str:
        return type(self.body).__name__


def tx_hash(tx_bytes: bytes) -> bytes:
    """A transaction's identity: BLAKE2b-256 of its exact encoded bytes."""
    return h256(tx_bytes)


def decode_tx(tx_bytes: bytes) -> Transaction:
    """Decode untrusted transaction bytes (size-limited); raises only CodecError."""
    if len(tx_bytes) > MAX_TX_BYTES:
        raise CodecError(f"transaction of {len(tx_bytes)} bytes exceeds {MAX_TX_BYTES}")
    return decode(tx_bytes, Transaction, max_bytes=MAX_TX_BYTES)
