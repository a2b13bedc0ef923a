"""Synthetic sample records (``node.samples``) and ``creditnet records sample``."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.samples import BIRTH_FIRST, BIRTH_LAST, REGIONS, national_ids, sample_records
from protocol.pseudonym import NationalIdError, make_id, normalise
from protocol.record import HISTORY_MONTHS, RecordError, parse_record_line
from protocol.vocabulary import AccountStatus

SUBJECT = "110101199003070126"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_national_ids_are_valid_and_deterministic() -> None:
    ids = national_ids(7, 200)
    assert ids == national_ids(7, 200)
    assert ids != national_ids(8, 200)
    assert national_ids(7, 20) == ids[:20]
    assert len(set(ids)) == 200
    for value in ids:
        assert normalise(value) == value
        assert value[:6] in REGIONS
        birth = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
        assert BIRTH_FIRST <= birth <= BIRTH_LAST


def test_records_are_deterministic_by_seed() -> None:
    first = sample_records(SUBJECT, count=8, seed=1, furnisher="agency-0")
    assert first == sample_records(SUBJECT, count=8, seed=1, furnisher="agency-0")
    assert first != sample_records(SUBJECT, count=8, seed=2, furnisher="agency-0")
    assert sample_records(SUBJECT, count=0, seed=1, furnisher="agency-0") == []


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), count=st.integers(1, 12), which=st.integers(0, 19))
def test_every_record_meets_the_standard(seed: int, count: int, which: int) -> None:
    subject = national_ids(seed, 20)[which]
    records = sample_records(subject, count=count, seed=seed, furnisher="bank.b-2")
    assert len(records) == count
    assert len({r["record_id"] for r in records}) == count
    for record in records:
        rec = parse_record_line(json.dumps(record))
        assert rec.national_id == subject and rec.furnisher_id == "bank.b-2"
        birth = datetime.date(int(subject[6:10]), int(subject[10:12]), int(subject[12:14]))
        assert rec.opened_on >= birth.replace(year=birth.year + 18, day=min(birth.day, 28))
        history = rec.payment_history
        opened_months = (rec.reported_at.year - rec.opened_on.year) * 12 + (
            rec.reported_at.month - rec.opened_on.month
        )
        if opened_months < HISTORY_MONTHS - 1:  # months before the account opened
            assert set(history[opened_months + 1 :]) == {"B"}
            assert "B" not in history[: opened_months + 1]
        if rec.status is AccountStatus.CURRENT:
            assert history[0] in "0E"
        elif rec.status is AccountStatus.PAST_DUE_30:
            assert history[:2] in ("10", "1B")
        elif rec.status is AccountStatus.PAST_DUE_60:
            assert history.startswith("21")
        elif rec.status is AccountStatus.PAST_DUE_90:
            assert history.startswith("321")
        elif rec.status is AccountStatus.PAST_DUE_120_PLUS:
            assert history[0] in "456"
        elif rec.status is AccountStatus.CHARGED_OFF:
            assert history[0] == "L"
        elif rec.status is AccountStatus.IN_COLLECTION:
            assert history[0] == "G"


def test_a_subject_gets_a_mix_of_categories_and_statuses() -> None:
    records = [
        r
        for seed, subject in enumerate(national_ids(3, 30))
        for r in sample_records(subject, count=10, seed=seed, furnisher="agency-0")
    ]
    assert len({r["category"] for r in records}) >= 8
    assert len({r["status"] for r in records}) >= 6
    assert {r["currency"] for r in records} >= {"CNY"}


def test_malformed_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(NationalIdError, match="check character"):
        sample_records("110101199003070127", count=1, seed=0, furnisher="agency-0")
    with pytest.raises(NationalIdError, match="18 characters"):
        sample_records("11010119900307012", count=1, seed=0, furnisher="agency-0")
    with pytest.raises(RecordError, match="furnisher_id"):
        sample_records(SUBJECT, count=1, seed=0, furnisher="Agency Zero")
    with pytest.raises(ValueError, match="count"):
        sample_records(SUBJECT, count=-1, seed=0, furnisher="agency-0")
    minor = make_id("110101", datetime.date(2015, 6, 1), 1)
    with pytest.raises(ValueError, match="under 18"):
        sample_records(minor, count=1, seed=0, furnisher="agency-0")


def test_cli_prints_valid_json_lines() -> None:
    args = ("records", "sample", "--national-id", SUBJECT, "--count", "4", "--seed", "9")
    out = run_cli(*args, "--furnisher", "icbc-beijing")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4
    for line in lines:
        assert line == json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
        rec = parse_record_line(line)
        assert rec.national_id == SUBJECT and rec.furnisher_id == "icbc-beijing"
    assert run_cli(*args, "--furnisher", "icbc-beijing").stdout == out.stdout


def test_cli_defaults_to_five_records_from_agency_0() -> None:
    out = run_cli("records", "sample", "--national-id", SUBJECT)
    assert out.returncode == 0, out.stderr
    records = [parse_record_line(line) for line in out.stdout.splitlines()]
    assert len(records) == 5 and {r.furnisher_id for r in records} == {"agency-0"}


def test_cli_refuses_a_bad_national_id() -> None:
    out = run_cli("records", "sample", "--national-id", "110101199003070127")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.startswith("creditnet: national ID: check character")
    assert "Traceback" not in out.stderr
