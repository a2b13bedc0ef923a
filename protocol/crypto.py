"""Keys, signatures and sealed boxes (pynacl), plus hashes and the Merkle root.

Signatures are Ed25519 over ``signing_bytes(domain, chain_id, payload)``: a length-prefixed domain
tag naming the kind of thing signed, the length-prefixed chain id, then the canonical encoding.
A signature made for one kind (or one chain) therefore never verifies as another.

Encryption to a party is an X25519 sealed box to the Curve25519 key derived from the party's
Ed25519 public key, so one published key serves both purposes.
"""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import Sequence

import msgpack
import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

SEED_BYTES = 32
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
HASH_BYTES = 32


class CryptoError(ValueError):
    """A key, signature or ciphertext that cannot be used; the message says why."""


class Domain(enum.Enum):
    """Domain tags: one per kind of signed thing. Values are part of the protocol; never reuse."""

    TX_REGISTER_CLIENT = "tx/register-client"
    TX_REGISTER_SUBJECT = "tx/register-subject"
    TX_DEPOSIT = "tx/deposit"
    TX_TRANSFER = "tx/transfer"
    TX_CONSENT_GRANT = "tx/consent-grant"
    TX_CONSENT_REVOKE = "tx/consent-revoke"
    TX_RECORD_COMMITMENT = "tx/record-commitment"
    TX_QUERY_ENTRY = "tx/query-entry"
    TX_VALIDATOR_SET_CHANGE = "tx/validator-set-change"
    QUERY_REQUEST = "query-request"
    PREPREPARE = "pbft-preprepare"
    PREPARE = "pbft-prepare"
    COMMIT = "pbft-commit"
    CHECKPOINT = "pbft-checkpoint"
    VIEW_CHANGE = "pbft-view-change"
    NEW_VIEW = "pbft-new-view"
    RECORD = "record-commitment"
    SUBJECT_READ = "subject-read"


def signing_bytes(domain: Domain, chain_id: str, payload: bytes) -> bytes:
    """The exact bytes an Ed25519 signature covers."""
    tag = b"creditnet/" + domain.value.encode()
    chain = chain_id.encode()
    if len(chain) > 255:
        raise CryptoError("chain id longer than 255 bytes")
    return bytes([len(tag)]) + tag + bytes([len(chain)]) + chain + payload


def h256(data: bytes) -> bytes:
    """BLAKE2b-256, the hash used for block, tx and record identities."""
    return hashlib.blake2b(data, digest_size=HASH_BYTES).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Merkle root in the RFC 6962 shape (leaf and node hashes domain-separated), BLAKE2b-256.

    The split point is the largest power of two below the leaf count, so the tree for n leaves is
    unique and a proof for one leaf cannot pass for an inner node. Computed bottom-up (pairing
    neighbours, an odd last node moving up unchanged), which builds that same tree.

    The same transaction list is checked many times (a block arrives in its pre-prepare, again in
    view changes and catch-up): roots are remembered under one BLAKE2b of the length-prefixed
    leaves, which costs one pass over the bytes instead of a hash per tree node (a collision of
    that digest is a BLAKE2b collision).
    """
    if not leaves:
        return h256(b"")
    key = _leaves_digest(leaves)
    root = _ROOTS.get(key)
    if root is not None:
        return root
    level = [h256(b"\x00" + leaf) for leaf in leaves]
    while len(level) > 1:
        nxt = [h256(b"\x01" + level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    _ROOTS[key] = level[0]
    if len(_ROOTS) > _ROOTS_MAX:
        _ROOTS.pop(next(iter(_ROOTS)))
    return level[0]


_ROOTS: dict[bytes, bytes] = {}
_ROOTS_MAX = 1024


def _leaves_digest(leaves: Sequence[bytes]) -> bytes:
    """BLAKE2b-256 of the leaves as one msgpack array of bins (unambiguous, one C pass)."""
    return hashlib.blake2b(msgpack.packb(list(leaves)), digest_size=32).digest()


class Identity:
    """An Ed25519 key pair: signs for a validator (agency), a query user or a subject."""

    __slots__ = ("_box_key", "_signing", "public_key")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
            raise CryptoError(f"an identity seed is {SEED_BYTES} bytes")
        self._signing = nacl.signing.SigningKey(seed)
        self.public_key: bytes = bytes(self._signing.verify_key)
        self._box_key: nacl.public.PrivateKey | None = None

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(SEED_BYTES))

    @property
    def seed(self) -> bytes:
        return bytes(self._signing)

    def sign(self, domain: Domain, chain_id: str, payload: bytes) -> bytes:
        signed = self._signing.sign(signing_bytes(domain, chain_id, payload))
        return bytes(signed.signature)

    def unseal(self, ciphertext: bytes) -> bytes:
        """Open a sealed box addressed to this identity's public key."""
        if self._box_key is None:
            self._box_key = self._signing.to_curve25519_private_key()
        try:
            return bytes(nacl.public.SealedBox(self._box_key).decrypt(ciphertext))
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise CryptoError("sealed box does not open with this key") from exc

    def __repr__(self) -> str:
        return f"Identity({self.public_key.hex()[:16]}…)"


def verify(public_key: bytes, domain: Domain, chain_id: str, payload: bytes, sig: bytes) -> bool:
    """True when ``sig`` is ``public_key``'s signature of this payload in this domain and chain."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(sig) != SIGNATURE_BYTES:
        return False
    key = _VERIFY_KEYS.get(public_key)
    try:
        if key is None:
            if len(_VERIFY_KEYS) >= _VERIFY_KEY_CACHE:
                _VERIFY_KEYS.clear()
            key = _VERIFY_KEYS[public_key] = nacl.signing.VerifyKey(public_key)
        key.verify(signing_bytes(domain, chain_id, payload), sig)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError):
        return False
    return True


_VERIFY_KEY_CACHE = 4096
_VERIFY_KEYS: dict[bytes, nacl.signing.VerifyKey] = {}
"""Parsed verify keys by public key: validators and busy clients verify many messages."""


_BOX_KEY_CACHE = 4096
_BOX_KEYS: dict[bytes, nacl.public.PublicKey] = {}
"""Curve25519 keys by Ed25519 public key: the conversion costs about as much as a signature
check (~57 µs here), and an agency seals every report of a lender to the same key."""


def seal(public_key: bytes, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` so only the holder of Ed25519 ``public_key`` can read it."""
    box_key = _BOX_KEYS.get(public_key) if type(public_key) is bytes else None
    if box_key is None:
        try:
            curve = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(public_key)
        except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
            raise CryptoError("not a valid Ed25519 public key") from exc
        box_key = nacl.public.PublicKey(curve)
        if type(public_key) is bytes:
            if len(_BOX_KEYS) >= _BOX_KEY_CACHE:
                _BOX_KEYS.clear()
            _BOX_KEYS[public_key] = box_key
    return bytes(nacl.public.SealedBox(box_key).encrypt(plaintext))


_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def peer_id(public_key: bytes) -> str:
    """The libp2p PeerID (base58 identity multihash of the protobuf Ed25519 key) of a key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise CryptoError("an Ed25519 public key is 32 bytes")
    proto = b"\x08\x01\x12\x20" + public_key  # KeyType=Ed25519, Data=<32 bytes>
    mh = b"\x00" + bytes([len(proto)]) + proto  # identity multihash
    n = int.from_bytes(mh, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58[r] + out
    pad = len(mh) - len(mh.lstrip(b"\x00"))
    return "1" * pad + out
