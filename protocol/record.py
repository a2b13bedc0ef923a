"""Credit record standard v1: the one record shape every furnisher (agency) reports in.

A record has two forms:

* the **input form** (:class:`CreditRecordInput`), a JSON object as furnishers load it, one a line
  (JSON lines). It carries the subject's raw ``national_id`` and never leaves the loading agency;
* the **stored form** (:class:`StoredRecord`), a codec message in which the national ID is replaced
  by the subject's ``pseudonym`` under the network salt. This is what an agency keeps, commits to on
  the ledger (:func:`record_digest`) and hands out.

Every field is declared once in ``RECORD_SPEC``; the validator of the input form, the stored form's
self-check and the JSON Schema (:func:`json_schema`, committed as
``config/schema/credit-record-v1.json``) are all derived from it, so they cannot drift apart. A bad
record raises :class:`RecordError`, which names the field and the rule.

Encoding of time in the stored form: dates are **signed days since 1970-01-01** (the proleptic
Gregorian day number, 1900-01-01 = -25567) and ``reported_at`` is **seconds since
1970-01-01T00:00:00Z** (no leap seconds). Both order like the dates they stand for and every
integer in range is a valid date, so the stored form has no invalid-date states.

Cross-field rules (kept few on purpose; the status rules also appear in the JSON Schema):

1. ``opened_on <= closed_on <= date(reported_at)`` when ``closed_on`` is set, and
   ``opened_on <= date(reported_at)``: nothing happens after it is reported or before it opens.
2. ``overdue_amount <= balance``: the past-due amount is part of the outstanding balance.
3. By status (``STATUS_RULES``): ``closed`` and ``settled`` need ``closed_on``, a zero balance and
   nothing overdue; ``current`` has nothing overdue; ``past_due_*`` has something overdue;
   ``charged_off`` and ``in_collection`` may have either.

Pure: no I/O except :func:`main`, the ``python -m protocol.record --schema`` entry point.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any

from protocol.codec import Hash32, InvalidMessage, MaxLen, Message, Range, encode, message
from protocol.crypto import h256
from protocol.pseudonym import NationalIdError, normalise
from protocol.pseudonym import pseudonym as subject_pseudonym
from protocol.vocabulary import AccountStatus, Category, Labelled

SCHEMA_VERSION = "1"
SCHEMA_ID = "https://creditnet.example/schema/credit-record-v1.json"
DIGEST_DOMAIN = b"creditnet/record/v1"
REF_DOMAIN = b"creditnet/record-ref/v1"
MAX_AMOUNT = 10**15
MAX_LINE_BYTES = 16384
HISTORY_MONTHS = 24

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_EPOCH_ORDINAL = _EPOCH.date().toordinal()
DATE_MIN = datetime.date(1900, 1, 1)
DATE_MAX = datetime.date(9999, 12, 31)
DAY_MIN = DATE_MIN.toordinal() - _EPOCH_ORDINAL
DAY_MAX = DATE_MAX.toordinal() - _EPOCH_ORDINAL
SECONDS_MAX = (DAY_MAX + 1) * 86400 - 1

PAYMENT_CODES: dict[str, str] = {
    "0": "current (paid as agreed)", "1": "30-59 days past due", "2": "60-89 days past due",
    "3": "90-119 days past due", "4": "120-149 days past due", "5": "150-179 days past due",
    "6": "180 or more days past due",
    "B": "no payment history for this month (before the account's history starts)",
    "D": "no data reported for this month", "E": "zero balance and current", "G": "collection",
    "H": "foreclosure completed", "J": "voluntary surrender", "K": "repossession",
    "L": "charge-off",
}  # fmt: skip
"""The payment-history alphabet (Metro 2 style): one character per month."""

CURRENCIES: tuple[str, ...] = (
    "AED", "ARS", "AUD", "BDT", "BGN", "BHD", "BRL", "CAD", "CHF", "CLP", "CNY", "COP", "CZK",
    "DKK", "EGP", "EUR", "GBP", "HKD", "HUF", "IDR", "ILS", "INR", "ISK", "JPY", "KES", "KHR",
    "KRW", "KWD", "KZT", "LAK", "LKR", "MAD", "MMK", "MNT", "MOP", "MXN", "MYR", "NGN", "NOK",
    "NPR", "NZD", "OMR", "PEN", "PHP", "PKR", "PLN", "QAR", "RON", "RSD", "RUB", "SAR", "SEK",
    "SGD", "THB", "TRY", "TWD", "UAH", "USD", "UZS", "VND", "ZAR",
)  # fmt: skip
"""The closed list of active ISO 4217 codes accepted by v1 (append only)."""


class RecordError(ValueError):
    """A record that does not meet the standard; ``field`` and ``rule`` say which and why."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


# --- the spec table --------------------------------------------------------------------------


class Kind(enum.Enum):
    """How a field is written in JSON (and so how it is checked and described in the schema)."""

    TEXT = "text"
    NATIONAL_ID = "national_id"
    LABEL = "label"
    DATE = "date"
    TIMESTAMP = "timestamp"
    AMOUNT = "amount"


@dataclass(frozen=True)
class FieldSpec:
    """One field of the v1 input form: JSON type, constraints and the text that documents it."""

    name: str
    kind: Kind
    description: str
    nullable: bool = False
    const: str | None = None
    min_len: int | None = None
    max_len: int | None = None
    pattern: str | None = None
    pattern_rule: str = ""
    choices: tuple[str, ...] = ()
    labels: type[Labelled] | None = None


_DATE_PATTERN = r"^(19|[2-9][0-9])[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
_TIMESTAMP_PATTERN = (
    r"^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$"
)
_DATE_RULE = "must be an ISO 8601 date YYYY-MM-DD from 1900 on"
_AMOUNT_TEXT = (
    "in integer minor units of `currency` (fen for CNY, cents for USD, yen for JPY), "
    f"0..{MAX_AMOUNT}; a JSON integer literal, never a float or a string."
)

RECORD_SPEC: tuple[FieldSpec, ...] = (
    FieldSpec("schema_version", Kind.TEXT, "Version of the record standard; always \"1\".",
              const=SCHEMA_VERSION),
    FieldSpec("furnisher_id", Kind.TEXT,
              "The reporting agency's id: lower-case letters, digits, '_', '.', '-'.",
              min_len=1, max_len=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$",
              pattern_rule="must be lower-case letters, digits, '_', '.' or '-', "
                           "starting with a letter or digit"),
    FieldSpec("record_id", Kind.TEXT,
              "The furnisher's own id of the account; unique per furnisher. "
              "Printable ASCII without spaces.",
              min_len=1, max_len=64, pattern=r"^[!-~]+$",
              pattern_rule="must be printable ASCII without spaces"),
    FieldSpec("national_id", Kind.NATIONAL_ID,
              "The subject's 18-character PRC resident ID number (GB 11643-1999) with a valid "
              "birth date and ISO 7064 MOD 11-2 check character. Input form only: the stored "
              "form keeps only the subject's pseudonym.",
              min_len=18, max_len=18, pattern=r"^[1-9][0-9]{16}[0-9Xx]$",
              pattern_rule="must be 17 digits and a check digit or X"),
    FieldSpec("category", Kind.LABEL, "What kind of obligation the record describes.",
              labels=Category),
    FieldSpec("opened_on", Kind.DATE, "Date the account was opened (ISO 8601 YYYY-MM-DD).",
              pattern=_DATE_PATTERN, pattern_rule=_DATE_RULE),
    FieldSpec("closed_on", Kind.DATE,
              "Date the account was closed (YYYY-MM-DD), or null while open; on or after "
              "opened_on and not after reported_at. Required when status is closed or settled.",
              nullable=True, pattern=_DATE_PATTERN, pattern_rule=_DATE_RULE),
    FieldSpec("currency", Kind.TEXT, "ISO 4217 code of every amount in the record.",
              min_len=3, max_len=3, pattern=r"^[A-Z]{3}$", choices=CURRENCIES,
              pattern_rule="must be three upper-case letters (ISO 4217)"),
    FieldSpec("credit_limit", Kind.AMOUNT, "Credit limit or original loan amount, " + _AMOUNT_TEXT),
    FieldSpec("balance", Kind.AMOUNT, "Outstanding balance at reported_at, " + _AMOUNT_TEXT),
    FieldSpec("overdue_amount", Kind.AMOUNT,
              "Past-due part of the balance (never more than balance), " + _AMOUNT_TEXT),
    FieldSpec("status", Kind.LABEL, "The account's standing at reported_at.",
              labels=AccountStatus),
    FieldSpec("payment_history", Kind.TEXT,
              f"{HISTORY_MONTHS} monthly codes, the month of reported_at first: "
              + "; ".join(f"{c} = {m}" for c, m in PAYMENT_CODES.items()) + ".",
              min_len=HISTORY_MONTHS, max_len=HISTORY_MONTHS,
              pattern=f"^[{''.join(PAYMENT_CODES)}]{{{HISTORY_MONTHS}}}$",
              pattern_rule="may only use the codes " + ", ".join(PAYMENT_CODES)),
    FieldSpec("reported_at", Kind.TIMESTAMP,
              "When the furnisher reported this state of the account, UTC, "
              "YYYY-MM-DDTHH:MM:SSZ; not before opened_on.",
              pattern=_TIMESTAMP_PATTERN,
              pattern_rule="must be a UTC timestamp YYYY-MM-DDTHH:MM:SSZ from 1970 on"),
)  # fmt: skip
SPEC: dict[str, FieldSpec] = {s.name: s for s in RECORD_SPEC}
FIELD_NAMES: tuple[str, ...] = tuple(SPEC)
_PATTERNS: dict[str, re.Pattern[str]] = {
    s.name: re.compile(s.pattern) for s in RECORD_SPEC if s.pattern is not None
}
_CHOICES: dict[str, frozenset[str]] = {s.name: frozenset(s.choices) for s in RECORD_SPEC}
"""Each field's pattern and choices prepared once: every record read back from storage or served
by a peer is checked again, so the check is on the query path."""
_TEXT, _AMOUNT, _LABEL = Kind.TEXT, Kind.AMOUNT, Kind.LABEL
_DATE, _TIMESTAMP, _NATIONAL_ID = Kind.DATE, Kind.TIMESTAMP, Kind.NATIONAL_ID
_STORED_AS_IS = tuple(s for s in RECORD_SPEC if s.kind in (Kind.TEXT, Kind.AMOUNT))
"""The fields the stored form keeps as the input form has them (checked the same way)."""


class OverdueRule(enum.Enum):
    """What a status says about ``overdue_amount``."""

    ZERO = "zero"
    POSITIVE = "positive"
    ANY = "any"


@dataclass(frozen=True)
class StatusRule:
    """Constraints a status puts on the other fields."""

    overdue: OverdueRule
    closed: bool = False  # closed_on required, balance and overdue_amount zero


_PAST_DUE = StatusRule(OverdueRule.POSITIVE)
STATUS_RULES: dict[AccountStatus, StatusRule] = {
    AccountStatus.CURRENT: StatusRule(OverdueRule.ZERO),
    AccountStatus.PAST_DUE_30: _PAST_DUE,
    AccountStatus.PAST_DUE_60: _PAST_DUE,
    AccountStatus.PAST_DUE_90: _PAST_DUE,
    AccountStatus.PAST_DUE_120_PLUS: _PAST_DUE,
    AccountStatus.CHARGED_OFF: StatusRule(OverdueRule.ANY),
    AccountStatus.CLOSED: StatusRule(OverdueRule.ZERO, closed=True),
    AccountStatus.IN_COLLECTION: StatusRule(OverdueRule.ANY),
    AccountStatus.SETTLED: StatusRule(OverdueRule.ZERO, closed=True),
}


# --- field checks ----------------------------------------------------------------------------


def _text_rule(spec: FieldSpec) -> str:
    if spec.const is not None:
        return f'must be the string "{spec.const}"'
    if spec.min_len is not None and spec.min_len == spec.max_len:
        return f"must be a string of exactly {spec.min_len} characters"
    if spec.min_len is not None:
        return f"must be a string of {spec.min_len}..{spec.max_len} characters"
    return "must be a string"


def check_field(spec: FieldSpec, value: Any) -> Any:
    """Check one JSON value against its spec; return it typed (str, enum, date, datetime, int)."""
    name = spec.name
    kind = spec.kind  # compared with the module's aliases: an Enum member lookup costs ~90 ns
    if value is None:
        if spec.nullable:
            return None
        raise RecordError(name, "must not be null")
    if kind is _AMOUNT:
        if type(value) is not int or value < 0:
            raise RecordError(name, "must be an integer >= 0 (minor units)")
        if value > MAX_AMOUNT:
            raise RecordError(name, f"must be <= {MAX_AMOUNT} (minor units)")
        return value
    if type(value) is not str:
        expected = "a date YYYY-MM-DD" if kind is _DATE else "a string"
        raise RecordError(name, f"must be {expected}{' or null' if spec.nullable else ''}")
    if spec.const is not None and value != spec.const:
        raise RecordError(name, _text_rule(spec))
    lo, hi = spec.min_len or 0, spec.max_len if spec.max_len is not None else len(value)
    if not lo <= len(value) <= hi:
        raise RecordError(name, _text_rule(spec))
    if spec.pattern is not None and not _PATTERNS[name].fullmatch(value):
        raise RecordError(name, spec.pattern_rule or f"must match {spec.pattern}")
    if spec.choices and value not in _CHOICES[name]:
        raise RecordError(name, f"{value!r} is not in the v1 list of {name} codes")
    if kind is _TEXT:
        return value
    if kind is _LABEL:
        assert spec.labels is not None
        try:
            return spec.labels.parse(value)
        except ValueError:
            raise RecordError(name, f"must be one of: {', '.join(spec.labels.labels())}") from None
    if kind is _DATE or kind is _TIMESTAMP:
        try:  # the pattern fixed the form; this catches days that do not exist (02-30)
            if kind is _DATE:
                return datetime.date.fromisoformat(value)
            return datetime.datetime.fromisoformat(value)
        except ValueError:
            raise RecordError(name, f"{value} is not a calendar date") from None
    if kind is _NATIONAL_ID:
        try:
            return normalise(value)
        except NationalIdError as exc:
            raise RecordError(name, str(exc).removeprefix("national ID: ")) from None
    return value


def _cross_field_violation(
    *,
    opened: int,
    closed: int | None,
    reported: int,
    status: AccountStatus,
    balance: int,
    overdue: int,
) -> RecordError | None:
    """The first cross-field rule broken (dates as day numbers, reported_at as seconds)."""
    reported_day = reported // 86400
    if closed is not None and closed < opened:
        return RecordError("closed_on", "must be on or after opened_on")
    if closed is not None and closed > reported_day:
        return RecordError("closed_on", "must not be after reported_at")
    if reported_day < opened:
        return RecordError("reported_at", "must not be before opened_on")
    if overdue > balance:
        return RecordError("overdue_amount", "must not exceed balance")
    rule = STATUS_RULES[status]
    if rule.closed and closed is None:
        return RecordError("closed_on", f"is required when status is {status.label}")
    if rule.closed and balance != 0:
        return RecordError("balance", f"must be 0 when status is {status.label}")
    if rule.overdue is OverdueRule.ZERO and overdue != 0:
        return RecordError("overdue_amount", f"must be 0 when status is {status.label}")
    if rule.overdue is OverdueRule.POSITIVE and overdue == 0:
        return RecordError("overdue_amount", f"must be > 0 when status is {status.label}")
    return None


# --- time encoding ---------------------------------------------------------------------------


def date_to_days(value: datetime.date) -> int:
    """Days since 1970-01-01 (negative before it): the stored form of a date."""
    return value.toordinal() - _EPOCH_ORDINAL


def days_to_date(days: int) -> datetime.date:
    return datetime.date.fromordinal(days + _EPOCH_ORDINAL)


def timestamp_to_seconds(value: datetime.datetime) -> int:
    """Whole seconds since 1970-01-01T00:00:00Z: the stored form of ``reported_at``."""
    if value.utcoffset() != datetime.timedelta(0) or value.microsecond:
        raise RecordError("reported_at", "must be a whole-second UTC timestamp")
    return (value - _EPOCH) // datetime.timedelta(seconds=1)


def seconds_to_timestamp(seconds: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(seconds=seconds)


def _json_value(value: Any) -> Any:
    """A typed value in JSON: enums as labels, dates ISO 8601, timestamps with ``Z``, bytes hex."""
    if isinstance(value, Labelled):
        return value.label
    if isinstance(value, datetime.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


# --- the input form --------------------------------------------------------------------------


@dataclass(frozen=True)
class CreditRecordInput:
    """A v1 record as a furnisher loads it, typed (build it with :func:`parse_record`).

    ``national_id`` (normalised) is kept out of ``repr`` so the raw ID does not end up in logs.
    """

    schema_version: str
    furnisher_id: str
    record_id: str
    national_id: str = field(repr=False)
    category: Category
    opened_on: datetime.date
    closed_on: datetime.date | None
    currency: str
    credit_limit: int
    balance: int
    overdue_amount: int
    status: AccountStatus
    payment_history: str
    reported_at: datetime.datetime

    def to_json(self) -> dict[str, Any]:
        """The JSON input form (what :func:`parse_record` reads back to an equal record)."""
        return {name: _json_value(getattr(self, name)) for name in FIELD_NAMES}


def parse_record(obj: Mapping[str, Any]) -> CreditRecordInput:
    """Validate a decoded JSON object as a v1 record; raises :class:`RecordError`.

    Unknown fields are reported first (by name), then fields in spec order, then the cross-field
    rules; the first failure is raised.
    """
    if not isinstance(obj, Mapping):
        raise RecordError("record", "must be a JSON object")
    unknown = sorted(str(k) for k in obj if k not in SPEC)
    if unknown:
        raise RecordError(unknown[0][:64], "is not a field of credit record v1")
    values: dict[str, Any] = {}
    for spec in RECORD_SPEC:
        if spec.name not in obj:
            raise RecordError(spec.name, "is required")
        values[spec.name] = check_field(spec, obj[spec.name])
    rec = CreditRecordInput(**values)
    error = _cross_field_violation(
        opened=date_to_days(rec.opened_on),
        closed=None if rec.closed_on is None else date_to_days(rec.closed_on),
        reported=timestamp_to_seconds(rec.reported_at),
        status=rec.status,
        balance=rec.balance,
        overdue=rec.overdue_amount,
    )
    if error is not None:
        raise error
    return rec


class _RefusedJsonError(Exception):
    """Raised inside the JSON decoder's hooks; turned into a RecordError."""


def _refuse_constant(name: str) -> Any:
    raise _RefusedJsonError(f"{name} is not allowed (not valid JSON)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RefusedJsonError(f"duplicate key {key[:64]!r}")
        out[key] = value
    return out


def parse_record_line(line: str, max_bytes: int = MAX_LINE_BYTES) -> CreditRecordInput:
    """Decode and validate one JSON-lines line; raises :class:`RecordError` (field ``record``
    for a line that is too large or not strict JSON: duplicate keys, NaN/Infinity)."""
    size = len(line.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise RecordError("record", f"line of {size} bytes exceeds the limit of {max_bytes}")
    if not line.strip():
        raise RecordError("record", "empty line")
    try:
        obj = json.loads(line, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except _RefusedJsonError as exc:
        raise RecordError("record", str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise RecordError("record", f"not valid JSON: {exc}") from None
    return parse_record(obj)


# --- the stored form -------------------------------------------------------------------------

Day = Annotated[int, Range(DAY_MIN, DAY_MAX)]
Seconds = Annotated[int, Range(0, SECONDS_MAX)]
Amount = Annotated[int, Range(0, MAX_AMOUNT)]


def _spec_max(name: str) -> int:
    spec = SPEC[name]
    return spec.max_len if spec.max_len is not None else len(spec.const or "")


@message("StoredRecord")
class StoredRecord(Message):
    """A v1 record as an agency stores, commits to and serves it: the pseudonym in place of the
    national ID, enums as numbers, dates as days since 1970-01-01, ``reported_at`` in seconds."""

    schema_version: Annotated[str, MaxLen(_spec_max("schema_version"))]
    furnisher_id: Annotated[str, MaxLen(_spec_max("furnisher_id"))]
    record_id: Annotated[str, MaxLen(_spec_max("record_id"))]
    pseudonym: Hash32
    category: Category
    opened_on: Day
    closed_on: Day | None
    currency: Annotated[str, MaxLen(_spec_max("currency"))]
    credit_limit: Amount
    balance: Amount
    overdue_amount: Amount
    status: AccountStatus
    payment_history: Annotated[str, MaxLen(_spec_max("payment_history"))]
    reported_at: Seconds

    def check(self) -> None:
        """Re-apply the field and cross-field rules (a record from a peer is checked too)."""
        try:
            _check_stored(self)
        except RecordError as exc:
            raise InvalidMessage(f"StoredRecord.{exc.field}: {exc.rule}") from None

    def to_json(self) -> dict[str, Any]:
        """The JSON output form: the input form with ``pseudonym`` (hex) for ``national_id``.

        Written out field by field (in declaration order) rather than through the generic
        conversion: a mode-1 report converts every record it holds on the node's main thread."""
        closed = self.closed_on
        return {
            "schema_version": self.schema_version,
            "furnisher_id": self.furnisher_id,
            "record_id": self.record_id,
            "pseudonym": self.pseudonym.hex(),
            "category": _CATEGORY_LABELS[self.category],
            "opened_on": _iso_day(self.opened_on),
            "closed_on": None if closed is None else _iso_day(closed),
            "currency": self.currency,
            "credit_limit": self.credit_limit,
            "balance": self.balance,
            "overdue_amount": self.overdue_amount,
            "status": _STATUS_LABELS[self.status],
            "payment_history": self.payment_history,
            "reported_at": _iso_seconds(self.reported_at),
        }


_CATEGORY_LABELS: dict[int, str] = {m.value: m.label for m in Category}
_STATUS_LABELS: dict[int, str] = {m.value: m.label for m in AccountStatus}
_NAIVE_EPOCH = datetime.datetime(1970, 1, 1)


def _iso_day(days: int) -> str:
    """``days_to_date(days).isoformat()``."""
    return datetime.date.fromordinal(days + _EPOCH_ORDINAL).isoformat()


def _iso_seconds(seconds: int) -> str:
    """``seconds_to_timestamp(seconds)`` as the input form writes it (``...THH:MM:SSZ``)."""
    return (_NAIVE_EPOCH + datetime.timedelta(seconds=seconds)).isoformat() + "Z"


def _check_int(name: str, value: object, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise RecordError(name, f"must be an integer in {lo}..{hi}")
    return value


def _check_stored(rec: StoredRecord) -> None:
    for spec in _STORED_AS_IS:
        check_field(spec, getattr(rec, spec.name))
    if not isinstance(rec.category, Category):
        raise RecordError("category", "must be a Category")
    if not isinstance(rec.status, AccountStatus):
        raise RecordError("status", "must be an AccountStatus")
    closed = rec.closed_on
    error = _cross_field_violation(
        opened=_check_int("opened_on", rec.opened_on, DAY_MIN, DAY_MAX),
        closed=None if closed is None else _check_int("closed_on", closed, DAY_MIN, DAY_MAX),
        reported=_check_int("reported_at", rec.reported_at, 0, SECONDS_MAX),
        status=rec.status,
        balance=rec.balance,
        overdue=rec.overdue_amount,
    )
    if error is not None:
        raise error


def to_stored(rec: CreditRecordInput, salt: bytes) -> StoredRecord:
    """The stored form of a record under the network salt; raises :class:`RecordError`."""
    try:
        pn = subject_pseudonym(rec.national_id, salt)
    except NationalIdError as exc:
        raise RecordError("national_id", str(exc).removeprefix("national ID: ")) from None
    values = {name: getattr(rec, name) for name in FIELD_NAMES if name != "national_id"}
    values.update(
        pseudonym=pn,
        opened_on=date_to_days(rec.opened_on),
        closed_on=None if rec.closed_on is None else date_to_days(rec.closed_on),
        reported_at=timestamp_to_seconds(rec.reported_at),
    )
    stored = StoredRecord(**values)
    _check_stored(stored)
    return stored


def record_digest(stored: StoredRecord) -> bytes:
    """The commitment digest put on the ledger: BLAKE2b-256 of the domain tag and the encoding."""
    return h256(DIGEST_DOMAIN + encode(stored))


def record_ref(furnisher_id: str, record_id: str) -> bytes:
    """A stable 32-byte key for a furnisher's record that reveals nothing of its content."""
    parts = [
        check_field(SPEC["furnisher_id"], furnisher_id).encode(),
        check_field(SPEC["record_id"], record_id).encode(),
    ]
    return h256(REF_DOMAIN + b"".join(len(p).to_bytes(2, "big") + p for p in parts))


# --- JSON Schema -----------------------------------------------------------------------------


_FORMATS = {Kind.DATE: "date", Kind.TIMESTAMP: "date-time"}


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"description": spec.description}
    if spec.kind is Kind.AMOUNT:
        out.update(type="integer", minimum=0, maximum=MAX_AMOUNT)
        return out
    out["type"] = ["string", "null"] if spec.nullable else "string"
    if spec.const is not None:
        out["const"] = spec.const
    if spec.min_len is not None:
        out["minLength"] = spec.min_len
    if spec.max_len is not None:
        out["maxLength"] = spec.max_len
    if spec.pattern is not None:
        out["pattern"] = spec.pattern
    if spec.choices:
        out["enum"] = list(spec.choices)
    if spec.labels is not None:
        out["enum"] = spec.labels.labels()
    if spec.kind in _FORMATS:
        out["format"] = _FORMATS[spec.kind]
    return out


def _status_schema() -> list[dict[str, Any]]:
    """``if status in [...] then ...`` clauses for ``STATUS_RULES`` (grouped by rule)."""
    groups: dict[StatusRule, list[str]] = {}
    for status, rule in STATUS_RULES.items():
        groups.setdefault(rule, []).append(status.label)
    clauses = []
    for rule, labels in groups.items():
        then: dict[str, Any] = {}
        if rule.closed:
            then.update(closed_on={"type": "string"}, balance={"const": 0})
        if rule.overdue is OverdueRule.ZERO:
            then["overdue_amount"] = {"const": 0}
        elif rule.overdue is OverdueRule.POSITIVE:
            then["overdue_amount"] = {"minimum": 1}
        if then:
            clauses.append(
                {
                    "if": {"properties": {"status": {"enum": labels}}},
                    "then": {"properties": then},
                }
            )
    return clauses


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the v1 input form, generated from ``RECORD_SPEC``."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "creditnet credit record v1",
        "description": (
            "One credit record as a furnisher reports it (one JSON object a line). Rules the "
            "schema cannot state: opened_on <= closed_on <= date(reported_at), opened_on <= "
            "date(reported_at), overdue_amount <= balance, and the national_id check character."
        ),
        "type": "object",
        "properties": {spec.name: _field_schema(spec) for spec in RECORD_SPEC},
        "required": list(FIELD_NAMES),
        "additionalProperties": False,
        "allOf": _status_schema(),
    }


def schema_text() -> str:
    """The committed form of the schema: sorted keys, indent 2, trailing newline."""
    return json.dumps(json_schema(), sort_keys=True, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m protocol.record --schema`` prints the JSON Schema of the v1 input form."""
    parser = argparse.ArgumentParser(
        prog="python -m protocol.record", description="creditnet credit record standard v1"
    )
    parser.add_argument("--schema", action="store_true", help="print the v1 JSON Schema")
    args = parser.parse_args(argv)
    if not args.schema:
        parser.print_usage(sys.stderr)
        return 2
    sys.stdout.write(schema_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
