"""Resident ID numbers and subject pseudonyms.

A subject is known on the network only by ``pseudonym = BLAKE2b-256(normalised ID, key=salt)``
where the salt comes from the network's genesis. The ID is the 18-character PRC resident identity
number (GB 11643-1999): a 6-digit region code, an 8-digit birth date, a 3-digit sequence and an
ISO 7064 MOD 11-2 check character (``0``-``9`` or ``X``). A malformed number is refused with a
:class:`NationalIdError` saying which part is wrong, so a typo never yields a valid-looking
pseudonym of nobody.
"""

from __future__ import annotations

import datetime
import hashlib

ID_LENGTH = 18
SALT_BYTES = 32
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_PERSON = b"creditnet-subj1"


class NationalIdError(ValueError):
    """A resident ID number that is not well formed; the message names the part."""


def check_character(first17: str) -> str:
    """The ISO 7064 MOD 11-2 check character for the first 17 digits."""
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def normalise(national_id: str) -> str:
    """Validate and return the canonical form (no spaces, upper-case ``X``).

    Checks the length, the digits, the region code, the birth date (a real calendar date from
    1900 on) and the check character.
    """
    if not isinstance(national_id, str):
        raise NationalIdError("national ID must be a string")
    value = "".join(national_id.split()).upper()
    if len(value) != ID_LENGTH:
        raise NationalIdError(f"national ID must have {ID_LENGTH} characters, got {len(value)}")
    body, check = value[:17], value[17]
    if not body.isdigit() or not body.isascii():
        raise NationalIdError("national ID: the first 17 characters must be digits")
    if not (check.isdigit() and check.isascii()) and check != "X":
        raise NationalIdError("national ID: the last character must be a digit or X")
    if body[0] == "0" or body[:6] == "000000":
        raise NationalIdError(f"national ID: region code {body[:6]} is not valid")
    year, month, day = int(body[6:10]), int(body[10:12]), int(body[12:14])
    try:
        datetime.date(year, month, day)
    except ValueError:
        raise NationalIdError(f"national ID: birth date {body[6:14]} is not a date") from None
    if year < 1900:
        raise NationalIdError(f"national ID: birth year {year} is before 1900")
    expected = check_character(body)
    if check != expected:
        raise NationalIdError(
            f"national ID: check character is {check}, expected {expected} (ISO 7064 MOD 11-2)"
        )
    return value


def pseudonym(national_id: str, salt: bytes) -> bytes:
    """The subject's 32-byte pseudonym under the network salt (validates the ID first)."""
    if len(salt) != SALT_BYTES:
        raise ValueError(f"pseudonym salt must be {SALT_BYTES} bytes")
    value = normalise(national_id)
    return hashlib.blake2b(value.encode(), digest_size=32, key=salt, person=_PERSON).digest()


def make_id(region: str, birth: datetime.date, sequence: int) -> str:
    """Build a valid ID number (for synthetic sample data and tests)."""
    if len(region) != 6 or not region.isdigit() or not 0 <= sequence <= 999:
        raise NationalIdError("region must be 6 digits and sequence 0..999")
    body = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return body + check_character(body)
