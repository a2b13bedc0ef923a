"""Signatures are bound to their domain and chain; sealed boxes open only for their recipient."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import crypto
from protocol.codec import signing_payload
from protocol.crypto import (
    CryptoError,
    Domain,
    Identity,
    h256,
    merkle_root,
    seal,
    signing_bytes,
    verify,
)
from protocol.transactions import TX_DOMAINS, Deposit, Transaction, Transfer

CHAIN = "creditnet-test"


def test_signature_verifies_only_in_its_domain_and_chain(identities: list[Identity]) -> None:
    me = identities[0]
    sig = me.sign(Domain.PREPARE, CHAIN, b"payload")
    assert verify(me.public_key, Domain.PREPARE, CHAIN, b"payload", sig)
    assert not verify(me.public_key, Domain.COMMIT, CHAIN, b"payload", sig)
    assert not verify(me.public_key, Domain.PREPARE, "other-chain", b"payload", sig)
    assert not verify(identities[1].public_key, Domain.PREPARE, CHAIN, b"payload", sig)
    assert not verify(me.public_key, Domain.PREPARE, CHAIN, b"payload", sig[:-1] + b"\x00")
    assert not verify(me.public_key, Domain.PREPARE, CHAIN, b"payload", b"short")


def test_every_domain_tag_is_distinct() -> None:
    tags = {signing_bytes(d, CHAIN, b"") for d in Domain}
    assert len(tags) == len(Domain)
    assert len(set(TX_DOMAINS.values())) == len(TX_DOMAINS)


def test_domain_and_chain_boundaries_are_unambiguous() -> None:
    # Length prefixes: moving bytes between chain id and payload changes the signed bytes.
    assert signing_bytes(Domain.TX_DEPOSIT, "ab", b"c") != signing_bytes(
        Domain.TX_DEPOSIT, "a", b"bc"
    )


def test_tx_signature_for_one_kind_never_verifies_as_another(identities: list[Identity]) -> None:
    me, other = identities[0], identities[1].public_key
    deposit = Transaction.sign(me, CHAIN, Deposit(other, 5), 1)
    assert deposit.verify(CHAIN)
    forged = Transaction(Transfer(other, 5), me.public_key, 1, deposit.signature)
    assert not forged.verify(CHAIN)
    assert not deposit.verify("another-chain")
    tampered = Transaction(Deposit(other, 6), me.public_key, 1, deposit.signature)
    assert not tampered.verify(CHAIN)
    # The signature covers everything but itself.
    assert signing_payload(deposit) == signing_payload(
        Transaction(Deposit(other, 5), me.public_key, 1, bytes(64))
    )


def test_sealed_box_opens_only_for_its_recipient(identities: list[Identity]) -> None:
    box = seal(identities[0].public_key, b"credit report")
    assert identities[0].unseal(box) == b"credit report"
    with pytest.raises(CryptoError):
        identities[1].unseal(box)
    with pytest.raises(CryptoError):
        identities[0].unseal(box[:-1])
    with pytest.raises(CryptoError):
        seal(b"\x00" * 31, b"x")


def test_sealing_keeps_each_recipients_key_apart(
    identities: list[Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converted keys are cached: each recipient still gets a box only it opens, a full
    cache starts over, and a key that does not convert is refused every time, never cached."""
    monkeypatch.setattr(crypto, "_BOX_KEY_CACHE", 2)
    monkeypatch.setattr(crypto, "_BOX_KEYS", {})
    for _ in range(2):
        for i, ident in enumerate(identities[:3]):
            box = seal(ident.public_key, b"report %d" % i)
            assert ident.unseal(box) == b"report %d" % i
            other = identities[(i + 1) % 3]
            with pytest.raises(CryptoError):
                other.unseal(box)
    assert 1 <= len(crypto._BOX_KEYS) <= 2
    bad = b"\xff" * 32  # not a point on the curve
    for _ in range(2):
        with pytest.raises(CryptoError):
            seal(bad, b"x")
    assert bad not in crypto._BOX_KEYS


def test_identity_refuses_a_bad_seed() -> None:
    with pytest.raises(CryptoError):
        Identity(b"short")


def test_merkle_root_known_shape() -> None:
    a, b, c = b"a", b"b", b"c"
    la, lb, lc = (h256(b"\x00" + x) for x in (a, b, c))
    assert merkle_root([]) == h256(b"")
    assert merkle_root([a]) == la
    assert merkle_root([a, b]) == h256(b"\x01" + la + lb)
    assert merkle_root([a, b, c]) == h256(b"\x01" + h256(b"\x01" + la + lb) + lc)


@given(st.lists(st.binary(max_size=20), min_size=1, max_size=20), st.data())
def test_merkle_root_changes_with_any_leaf(leaves: list[bytes], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(leaves) - 1))
    changed = [*leaves]
    changed[i] = leaves[i] + b"!"
    assert merkle_root(changed) != merkle_root(leaves)
    # A leaf never collides with an inner node: two leaves vs. their concatenated hashes.
    if len(leaves) == 2:
        inner = h256(b"\x00" + leaves[0]) + h256(b"\x00" + leaves[1])
        assert merkle_root([inner]) != merkle_root(leaves)


def _reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962's recursive definition, as written in the RFC."""

    def sub(hashes: list[bytes]) -> bytes:
        if len(hashes) == 1:
            return hashes[0]
        k = 1 << ((len(hashes) - 1).bit_length() - 1)
        return h256(b"\x01" + sub(hashes[:k]) + sub(hashes[k:]))

    return sub([h256(b"\x00" + leaf) for leaf in leaves])


def test_bottom_up_merkle_root_equals_the_rfc_6962_recursion_cached_or_not() -> None:
    rng = random.Random(6962)
    for n in [*range(1, 70), 500, 1000, 1023, 1025]:
        leaves = [rng.randbytes(rng.randrange(0, 40)) for _ in range(n)]
        crypto._ROOTS.clear()
        assert crypto.merkle_root(leaves) == _reference_root(leaves), f"n={n}"
        assert crypto.merkle_root(leaves) == _reference_root(leaves), f"n={n} (cached)"
    # Same bytes split differently are different leaf lists with different roots.
    assert crypto.merkle_root([b"ab", b"c"]) != crypto.merkle_root([b"a", b"bc"])
