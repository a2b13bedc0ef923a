"""Credit record standard v1: validation, the stored form, digests and the JSON Schema."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings

from protocol.codec import InvalidMessage, decode, encode
from protocol.crypto import h256
from protocol.pseudonym import pseudonym
from protocol.record import (
    FIELD_NAMES,
    MAX_AMOUNT,
    CreditRecordInput,
    RecordError,
    StoredRecord,
    json_schema,
    main,
    parse_record,
    parse_record_line,
    record_digest,
    record_ref,
    schema_text,
    to_stored,
)
from protocol.vocabulary import AccountStatus
from tests.strategies import valid_record_inputs

SALT = bytes(range(32))
SCHEMA_FILE = Path(__file__).resolve().parents[2] / "config" / "schema" / "credit-record-v1.json"
SAMPLE: dict[str, Any] = {
    "schema_version": "1",
    "furnisher_id": "icbc-beijing",
    "record_id": "LN-2024-000123",
    "national_id": "110101199003070126",
    "category": "loan",
    "opened_on": "2022-05-01",
    "closed_on": None,
    "currency": "CNY",
    "credit_limit": 50000000,
    "balance": 32000000,
    "overdue_amount": 0,
    "status": "current",
    "payment_history": "000000000000000000BBBBBB",
    "reported_at": "2026-10-31T00:00:00Z",
}


def with_(**changes: Any) -> dict[str, Any]:
    return {**SAMPLE, **changes}


def error_of(obj: Any) -> RecordError:
    with pytest.raises(RecordError) as info:
        parse_record(obj)
    return info.value


# --- the valid path --------------------------------------------------------------------------


def test_sample_record_round_trips_through_stored_form_and_codec() -> None:
    rec = parse_record_line(json.dumps(SAMPLE))
    assert rec.to_json() == SAMPLE
    stored = to_stored(rec, SALT)
    data = encode(stored)
    again = decode(data, StoredRecord)
    assert again == stored
    assert encode(again) == data
    out = stored.to_json()
    assert list(out) == [("pseudonym" if k == "national_id" else k) for k in FIELD_NAMES]
    assert out.pop("pseudonym") == pseudonym(SAMPLE["national_id"], SALT).hex()
    assert out == {k: v for k, v in SAMPLE.items() if k != "national_id"}


def test_stored_form_never_contains_the_raw_national_id() -> None:
    stored = to_stored(parse_record(SAMPLE), SALT)
    assert SAMPLE["national_id"].encode() not in encode(stored)
    assert SAMPLE["national_id"] not in json.dumps(stored.to_json())
    assert SAMPLE["national_id"] not in repr(parse_record(SAMPLE))


def test_stored_dates_are_days_since_epoch_and_timestamp_is_seconds() -> None:
    stored = to_stored(parse_record(with_(opened_on="1970-01-02")), SALT)
    assert stored.opened_on == 1
    assert stored.reported_at == 1793404800  # 2026-10-31T00:00:00Z
    old = to_stored(parse_record(with_(opened_on="1900-01-01")), SALT)
    assert old.opened_on == -25567
    assert decode(encode(old), StoredRecord) == old


def test_closed_record_with_lower_case_x_check_character_is_accepted() -> None:
    rec = parse_record(
        with_(national_id="11010519491231002x", status="closed", closed_on="2026-10-01",
              balance=0)
    )
    assert rec.national_id.endswith("X")
    assert rec.closed_on is not None


@settings(max_examples=200)
@given(valid_record_inputs())
def test_generated_valid_records_validate_and_round_trip(rec: CreditRecordInput) -> None:
    assert parse_record(rec.to_json()) == rec
    assert parse_record_line(json.dumps(rec.to_json())) == rec
    stored = to_stored(rec, SALT)
    data = encode(stored)
    assert decode(data, StoredRecord) == stored
    assert encode(decode(data, StoredRecord)) == data
    out = stored.to_json()
    expected = rec.to_json()
    del expected["national_id"]
    del out["pseudonym"]
    assert out == expected


# --- field rules -----------------------------------------------------------------------------

BAD_FIELDS = [
    ("schema_version", "2", "must be the string"),
    ("schema_version", 1, "must be a string"),
    ("furnisher_id", "ICBC", "lower-case"),
    ("furnisher_id", "", "1..64 characters"),
    ("furnisher_id", "a" * 65, "1..64 characters"),
    ("furnisher_id", "-icbc", "starting with"),
    ("record_id", "LN 1", "printable ASCII"),
    ("record_id", "LN-\u00e9", "printable ASCII"),
    ("record_id", "", "1..64 characters"),
    ("national_id", "110101199003070127", "check character"),
    ("national_id", "11010119900307012", "exactly 18 characters"),
    ("national_id", "110101199002300126", "birth date"),
    ("national_id", 110101199003070126, "must be a string"),
    ("category", "Loan", "must be one of"),
    ("category", "bogus", "must be one of"),
    ("opened_on", "2022-13-01", "YYYY-MM-DD"),
    ("opened_on", "2022-02-30", "not a calendar date"),
    ("opened_on", "22-05-01", "YYYY-MM-DD"),
    ("opened_on", "1899-12-31", "from 1900 on"),
    ("opened_on", 20220501, "must be a date"),
    ("opened_on", None, "must not be null"),
    ("closed_on", "2023-5-1", "YYYY-MM-DD"),
    ("currency", "cny", "three upper-case letters"),
    ("currency", "XYZ", "not in the v1 list"),
    ("currency", "CNYY", "exactly 3 characters"),
    ("status", "paid", "must be one of"),
    ("payment_history", "0" * 23, "exactly 24 characters"),
    ("payment_history", "0" * 25, "exactly 24 characters"),
    ("payment_history", "X" + "0" * 23, "may only use the codes"),
    ("payment_history", "b" + "0" * 23, "may only use the codes"),
    ("reported_at", "2026-10-31T00:00:00", "YYYY-MM-DDTHH:MM:SSZ"),
    ("reported_at", "2026-10-31 00:00:00Z", "YYYY-MM-DDTHH:MM:SSZ"),
    ("reported_at", "2026-10-31T08:00:00+08:00", "YYYY-MM-DDTHH:MM:SSZ"),
    ("reported_at", "2026-10-31T00:00:00.5Z", "YYYY-MM-DDTHH:MM:SSZ"),
    ("reported_at", "2026-02-29T00:00:00Z", "not a calendar date"),
]
AMOUNTS = ["credit_limit", "balance", "overdue_amount"]
BAD_AMOUNTS = [
    (-1, "must be an integer >= 0 (minor units)"),
    (1.0, "must be an integer >= 0 (minor units)"),
    (True, "must be an integer >= 0 (minor units)"),
    ("100", "must be an integer >= 0 (minor units)"),
    (None, "must not be null"),
    (MAX_AMOUNT + 1, f"must be <= {MAX_AMOUNT}"),
]


@pytest.mark.parametrize(("field", "value", "rule"), BAD_FIELDS)
def test_bad_field_value_is_refused_naming_the_field(field: str, value: Any, rule: str) -> None:
    err = error_of(with_(**{field: value}))
    assert err.field == field
    assert rule in err.rule
    assert str(err) == f"{field}: {err.rule}"


@pytest.mark.parametrize("field", AMOUNTS)
@pytest.mark.parametrize(("value", "rule"), BAD_AMOUNTS)
def test_bad_amount_is_refused_naming_the_field(field: str, value: Any, rule: str) -> None:
    err = error_of(with_(**{field: value}))
    assert err.field == field
    assert rule in err.rule


def test_error_message_names_field_and_rule() -> None:
    err = error_of(with_(balance=-5))
    assert str(err) == "balance: must be an integer >= 0 (minor units)"
    assert isinstance(err, ValueError)


def test_unknown_field_is_refused_by_name() -> None:
    err = error_of(with_(nickname="x"))
    assert (err.field, err.rule) == ("nickname", "is not a field of credit record v1")


@pytest.mark.parametrize("field", FIELD_NAMES)
def test_missing_field_is_refused_by_name(field: str) -> None:
    obj = dict(SAMPLE)
    del obj[field]
    err = error_of(obj)
    assert (err.field, err.rule) == (field, "is required")


def test_non_object_is_refused() -> None:
    assert error_of([SAMPLE]).field == "record"


# --- cross-field rules -----------------------------------------------------------------------

CROSS_FIELD = [
    ({"closed_on": "2022-04-30"}, "closed_on", "must be on or after opened_on"),
    ({"closed_on": "2026-11-01"}, "closed_on", "must not be after reported_at"),
    ({"reported_at": "2022-04-30T23:59:59Z"}, "reported_at", "must not be before opened_on"),
    ({"status": "past_due_30", "overdue_amount": 32000001}, "overdue_amount",
     "must not exceed balance"),
    ({"status": "closed", "balance": 0}, "closed_on", "is required when status is closed"),
    ({"status": "settled", "closed_on": "2026-01-01"}, "balance",
     "must be 0 when status is settled"),
    ({"status": "closed", "closed_on": "2026-01-01", "balance": 5, "overdue_amount": 5},
     "balance", "must be 0 when status is closed"),
    ({"overdue_amount": 100}, "overdue_amount", "must be 0 when status is current"),
    ({"status": "past_due_60"}, "overdue_amount", "must be > 0 when status is past_due_60"),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "field", "rule"), CROSS_FIELD)
def test_cross_field_rule_is_enforced(changes: dict[str, Any], field: str, rule: str) -> None:
    err = error_of(with_(**changes))
    assert (err.field, err.rule) == (field, rule)


@pytest.mark.parametrize("status", ["charged_off", "in_collection"])
def test_charged_off_and_collection_accept_any_overdue(status: str) -> None:
    for overdue in (0, 32000000):
        assert parse_record(with_(status=status, overdue_amount=overdue)).overdue_amount == overdue


def test_same_day_open_close_and_report_is_valid() -> None:
    rec = parse_record(
        with_(opened_on="2026-10-31", closed_on="2026-10-31", status="closed", balance=0)
    )
    assert rec.status is AccountStatus.CLOSED


# --- JSON lines ------------------------------------------------------------------------------


def test_line_with_duplicate_keys_is_refused() -> None:
    line = json.dumps(SAMPLE)[:-1] + ', "balance": 0}'
    with pytest.raises(RecordError, match="duplicate key 'balance'") as info:
        parse_record_line(line)
    assert info.value.field == "record"


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_line_with_nan_or_infinity_is_refused(constant: str) -> None:
    line = json.dumps(SAMPLE).replace('"balance": 32000000', f'"balance": {constant}')
    with pytest.raises(RecordError, match="not allowed") as info:
        parse_record_line(line)
    assert info.value.field == "record"


@pytest.mark.parametrize("literal", ["32000000.0", "3.2e7", "32000000.5"])
def test_line_with_float_amount_is_refused(literal: str) -> None:
    line = json.dumps(SAMPLE).replace('"balance": 32000000', f'"balance": {literal}')
    with pytest.raises(RecordError) as info:
        parse_record_line(line)
    assert info.value.field == "balance"


def test_line_over_the_size_limit_is_refused() -> None:
    line = json.dumps(with_(record_id="x" * 40))
    with pytest.raises(RecordError, match="exceeds the limit") as info:
        parse_record_line(line, max_bytes=len(line) - 1)
    assert info.value.field == "record"
    with pytest.raises(RecordError, match="exceeds the limit"):
        parse_record_line(" " * 20000)


@pytest.mark.parametrize("line", ["", "   \n", "{", "[1, 2]", "null", '{"a": 1} {}', "[" * 5000])
def test_malformed_line_is_refused_as_record_error(line: str) -> None:
    with pytest.raises(RecordError) as info:
        parse_record_line(line)
    assert info.value.field == "record"


def test_line_with_trailing_newline_is_accepted() -> None:
    assert parse_record_line(json.dumps(SAMPLE) + "\r\n") == parse_record(SAMPLE)


# --- stored form -----------------------------------------------------------------------------


def test_to_stored_refuses_a_bad_national_id_built_without_parse() -> None:
    rec = dataclasses.replace(parse_record(SAMPLE), national_id="110101199003070127")
    with pytest.raises(RecordError) as info:
        to_stored(rec, SALT)
    assert info.value.field == "national_id"


def test_to_stored_refuses_broken_rules_built_without_parse() -> None:
    rec = dataclasses.replace(parse_record(SAMPLE), overdue_amount=7)
    with pytest.raises(RecordError) as info:
        to_stored(rec, SALT)
    assert info.value.field == "overdue_amount"


def test_invalid_stored_record_is_refused_on_encode() -> None:
    stored = to_stored(parse_record(SAMPLE), SALT)
    bad = dataclasses.replace(stored, status=AccountStatus.CLOSED)
    with pytest.raises(InvalidMessage, match=r"StoredRecord\.closed_on: is required"):
        encode(bad)
    with pytest.raises(InvalidMessage, match=r"StoredRecord\.furnisher_id"):
        encode(dataclasses.replace(stored, furnisher_id="BAD ID"))


def test_tampered_stored_bytes_are_refused_naming_the_field() -> None:
    stored = to_stored(parse_record(SAMPLE), SALT)
    raw = msgpack.unpackb(encode(stored))
    names = [f.name for f in dataclasses.fields(StoredRecord)]
    raw[1 + names.index("overdue_amount")] = 1
    with pytest.raises(InvalidMessage, match=r"StoredRecord\.overdue_amount"):
        decode(msgpack.packb(raw), StoredRecord)
    raw = msgpack.unpackb(encode(stored))
    raw[1 + names.index("payment_history")] = "Z" * 24
    with pytest.raises(InvalidMessage, match=r"StoredRecord\.payment_history"):
        decode(msgpack.packb(raw), StoredRecord)


# --- digest and reference --------------------------------------------------------------------


def test_record_digest_commits_to_every_field_under_a_domain_tag() -> None:
    stored = to_stored(parse_record(SAMPLE), SALT)
    digest = record_digest(stored)
    assert len(digest) == 32
    assert digest == h256(b"creditnet/record/v1" + encode(stored))
    assert digest != h256(encode(stored))
    changed = to_stored(parse_record(with_(balance=31999999)), SALT)
    assert record_digest(changed) != digest
    other_salt = to_stored(parse_record(SAMPLE), bytes(32))
    assert record_digest(other_salt) != digest


def test_record_ref_is_stable_and_unambiguous() -> None:
    ref = record_ref("icbc-beijing", "LN-2024-000123")
    assert ref == record_ref("icbc-beijing", "LN-2024-000123")
    assert len(ref) == 32
    assert record_ref("ab", "c") != record_ref("a", "bc")
    with pytest.raises(RecordError) as info:
        record_ref("ICBC", "x")
    assert info.value.field == "furnisher_id"


# --- JSON Schema -----------------------------------------------------------------------------


def test_committed_schema_file_matches_the_spec() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "config/schema/credit-record-v1.json is stale; regenerate it with "
        "`.venv/bin/python -m protocol.record --schema > config/schema/credit-record-v1.json`"
    )


def test_schema_command_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--schema"]) == 0
    assert capsys.readouterr().out == schema_text()
    assert schema_text().endswith("}\n")


def test_schema_describes_every_field_and_forbids_others() -> None:
    schema = json_schema()
    assert schema["$id"] == "https://creditnet.example/schema/credit-record-v1.json"
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["additionalProperties"] is False
    assert schema["required"] == list(FIELD_NAMES)
    assert list(schema["properties"]) == list(FIELD_NAMES)
    assert all(p["description"] for p in schema["properties"].values())
    assert schema["properties"]["status"]["enum"] == [s.label for s in AccountStatus]
    assert schema["properties"]["balance"] | {"description": ""} == {
        "type": "integer", "minimum": 0, "maximum": MAX_AMOUNT, "description": ""
    }
