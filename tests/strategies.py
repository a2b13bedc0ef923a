"""Hypothesis strategies shared by the test suites: one clearly named function per kind of value."""

from __future__ import annotations

import datetime

from hypothesis import strategies as st

from protocol.pseudonym import make_id
from protocol.record import (
    CURRENCIES,
    HISTORY_MONTHS,
    MAX_AMOUNT,
    PAYMENT_CODES,
    SCHEMA_VERSION,
    STATUS_RULES,
    CreditRecordInput,
    OverdueRule,
)
from protocol.vocabulary import AccountStatus, Category

# --- credit records (standard v1) ------------------------------------------------------------


def _valid_record(
    *,
    furnisher_id: str,
    record_id: str,
    national_id: str,
    category: Category,
    opened_on: datetime.date,
    closed_after_days: int | None,
    reported_after_days: int,
    reported_second: int,
    currency: str,
    credit_limit: int,
    balance: int,
    overdue_permille: int,
    status: AccountStatus,
    payment_history: str,
) -> CreditRecordInput:
    """Bend independently drawn values so every cross-field rule of v1 holds."""
    rule = STATUS_RULES[status]
    reported_day = max(
        opened_on + datetime.timedelta(days=reported_after_days), datetime.date(1970, 1, 1)
    )
    reported_at = datetime.datetime.combine(
        reported_day, datetime.time(), tzinfo=datetime.UTC
    ) + datetime.timedelta(seconds=reported_second)
    if rule.closed and closed_after_days is None:
        closed_after_days = reported_after_days
    closed_on = None
    if closed_after_days is not None:
        closed_on = min(opened_on + datetime.timedelta(days=closed_after_days), reported_day)
    if rule.closed:
        balance = 0
    overdue = balance * overdue_permille // 1000
    if rule.overdue is OverdueRule.ZERO:
        overdue = 0
    elif rule.overdue is OverdueRule.POSITIVE:
        balance = max(balance, 1)
        overdue = max(overdue, 1)
    return CreditRecordInput(
        schema_version=SCHEMA_VERSION,
        furnisher_id=furnisher_id,
        record_id=record_id,
        national_id=national_id,
        category=category,
        opened_on=opened_on,
        closed_on=closed_on,
        currency=currency,
        credit_limit=credit_limit,
        balance=balance,
        overdue_amount=overdue,
        status=status,
        payment_history=payment_history,
        reported_at=reported_at,
    )


def national_ids() -> st.SearchStrategy[str]:
    """Valid 18-character resident ID numbers (right check character)."""
    return st.builds(
        make_id,
        region=st.integers(110000, 659999).map(str),
        birth=st.dates(datetime.date(1900, 1, 1), datetime.date(2010, 12, 31)),
        sequence=st.integers(0, 999),
    )


def valid_record_inputs() -> st.SearchStrategy[CreditRecordInput]:
    """Credit records (v1 input form) that meet every field and cross-field rule."""
    amounts = st.one_of(st.integers(0, 10**9), st.integers(0, MAX_AMOUNT))
    return st.builds(
        _valid_record,
        furnisher_id=st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,63}", fullmatch=True),
        record_id=st.from_regex(r"[!-~]{1,64}", fullmatch=True),
        national_id=national_ids(),
        category=st.sampled_from(Category),
        opened_on=st.dates(datetime.date(1900, 1, 1), datetime.date(2100, 12, 31)),
        closed_after_days=st.none() | st.integers(0, 20_000),
        reported_after_days=st.integers(0, 20_000),
        reported_second=st.integers(0, 86_399),
        currency=st.sampled_from(CURRENCIES),
        credit_limit=amounts,
        balance=amounts,
        overdue_permille=st.integers(0, 1000),
        status=st.sampled_from(AccountStatus),
        payment_history=st.text(
            alphabet=st.sampled_from(sorted(PAYMENT_CODES)),
            min_size=HISTORY_MONTHS,
            max_size=HISTORY_MONTHS,
        ),
    )
