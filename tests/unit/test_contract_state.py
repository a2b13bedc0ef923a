"""The contract's key layout and stored values."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.contract import state
from protocol.contract.state import (
    PREFIXES,
    acct_key,
    audit_key,
    audit_prefix,
    client_key,
    consent_key,
    parse_audit_key,
    parse_valchange_key,
    rec_key,
    req_key,
    res_key,
    subj_key,
    valchange_key,
    valvote_key,
)
from protocol.vocabulary import Purpose

K = b"\x11" * 32
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


def test_no_prefix_is_a_prefix_of_another() -> None:
    for (na, a), (nb, b) in itertools.permutations(PREFIXES.items(), 2):
        assert not b.startswith(a), f"{na!r} is a prefix of {nb!r}"
    assert all(p.endswith(b"/") and p[:-1].isascii() for p in PREFIXES.values())


def test_every_key_builder_uses_its_prefix_and_a_fixed_width() -> None:
    cases = [
        (acct_key(K), state.ACCT, 32),
        (client_key(K), state.CLIENT, 32),
        (subj_key(K), state.SUBJ, 32),
        (consent_key(K, K, Purpose.SELF_INQUIRY), state.CONSENT, 65),
        (rec_key(K), state.REC, 32),
        (req_key(K), state.REQ, 32),
        (audit_key(K, 7, 3), state.AUDIT, 44),
        (res_key(K), state.RES, 32),
        (valvote_key(K, True, K), state.VALVOTE, 65),
        (valchange_key(7, 3), state.VALCHANGE, 12),
    ]
    for key, prefix, width in cases:
        assert key.startswith(prefix)
        assert len(key) == len(prefix) + width


@pytest.mark.parametrize(
    "build",
    [
        lambda: acct_key(b"\x00" * 31),
        lambda: client_key(b"\x00" * 33),
        lambda: consent_key(K, b"", Purpose.LOAN_APPROVAL),
        lambda: audit_key(K, -1, 0),
        lambda: audit_key(K, U64 + 1, 0),
        lambda: audit_key(K, 1, U32 + 1),
        lambda: valchange_key(1, -1),
    ],
)
def test_key_builders_refuse_arguments_of_the_wrong_width(build: object) -> None:
    with pytest.raises(ValueError):
        build()  # type: ignore[operator]


@given(
    st.tuples(st.integers(0, U64), st.integers(0, U32)),
    st.tuples(st.integers(0, U64), st.integers(0, U32)),
)
def test_audit_keys_sort_in_height_then_index_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    ka, kb = audit_key(K, *a), audit_key(K, *b)
    assert (ka < kb) == (a < b)
    assert parse_audit_key(ka) == (K, *a)
    assert ka.startswith(audit_prefix(K))
    assert parse_valchange_key(valchange_key(*a)) == a
    assert (valchange_key(*a) < valchange_key(*b)) == (a < b)


def test_parsers_refuse_other_keys() -> None:
    with pytest.raises(ValueError):
        parse_audit_key(res_key(K))
    with pytest.raises(ValueError):
        parse_valchange_key(valchange_key(1, 1) + b"\x00")
