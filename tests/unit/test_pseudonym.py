"""Resident ID validation (ISO 7064 MOD 11-2) and keyed pseudonyms."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.pseudonym import NationalIdError, check_character, make_id, normalise, pseudonym

SALT = b"\x11" * 32
VALID = "11010519491231002X"  # the standard's published example


def test_published_example_is_valid() -> None:
    assert check_character(VALID[:17]) == "X"
    assert normalise(VALID) == VALID


def test_normalisation_accepts_spaces_and_lower_case_x() -> None:
    assert normalise(" 110105 19491231 002x ") == VALID
    assert pseudonym("11010519491231002x", SALT) == pseudonym(VALID, SALT)


@pytest.mark.parametrize(
    ("bad", "part"),
    [
        ("110105194912310021", "check character is 1, expected X"),
        ("11010519491231002", "18 characters"),
        ("1101051949123100211", "18 characters"),
        ("11010519491331002X", "birth date 19491331"),
        ("11010518991231002X", "before 1900"),
        ("A1010519491231002X", "first 17 characters must be digits"),
        ("11010519491231002Y", "last character"),
        ("00000019491231002X", "region code"),
    ],
)
def test_malformed_ids_name_the_part(bad: str, part: str) -> None:
    with pytest.raises(NationalIdError, match=part):
        normalise(bad)


@given(
    st.dates(datetime.date(1900, 1, 1), datetime.date(2025, 12, 31)),
    st.integers(0, 999),
    st.integers(110000, 659999).map(str),
)
def test_generated_ids_validate_and_one_wrong_digit_fails(
    birth: datetime.date, seq: int, region: str
) -> None:
    nid = make_id(region, birth, seq)
    assert normalise(nid) == nid
    wrong = nid[:17] + ("0" if nid[17] != "0" else "1")
    with pytest.raises(NationalIdError, match="check character"):
        normalise(wrong)


def test_pseudonym_depends_on_salt_and_id() -> None:
    other = make_id("310101", datetime.date(1985, 6, 1), 7)
    p = pseudonym(VALID, SALT)
    assert len(p) == 32
    assert p != pseudonym(VALID, b"\x12" * 32)
    assert p != pseudonym(other, SALT)
    assert VALID.encode() not in p
    with pytest.raises(ValueError, match="salt"):
        pseudonym(VALID, b"short")
