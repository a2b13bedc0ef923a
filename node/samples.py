"""Realistic synthetic credit records (standard v1) and resident ID numbers, for demos and tests.

``creditnet records sample`` prints :func:`sample_records` as JSON lines. Everything here is pure
and deterministic: the same arguments give the same output on every machine and every run (no
clock reads; the randomness is ``random.Random`` seeded from the arguments).

How a sample is made (the choices an operator would expect of a credit file):

* **Reporting cycle.** Furnishers report monthly, at the end of the month. Open accounts are
  reported in the cycle of ``as_of`` (default :data:`AS_OF`, the October 2026 cycle); a closed or
  settled account was last reported at the end of the month it closed in, at most five years
  before ``as_of`` (the retention period of negative information on a PBoC report).
* **The subject.** Accounts open on or after the subject's 18th birthday (read from the ID); a
  subject under 18 on ``as_of`` has no credit file and is refused. Each subject gets a risk
  profile (good, fair or poor) drawn from the seed and the ID only, so every furnisher sees the
  same person; it weights the statuses (and whether public records appear at all).
* **Categories.** Credit cards (revolving), consumer loans, mortgages, auto loans and microloans
  (instalment loans with an annuity schedule: the balance is what remains after the payments
  made), utility and telecom accounts (no limit; the balance is the unpaid bills) and public
  records (court judgments, tax arrears, administrative penalties: the limit is the original
  amount, opened on the filing date).
* **Amounts** are integer minor units: CNY (fen), and USD (cents) for the foreign-currency side
  of some dual-currency credit cards.
* **Payment history** (month of ``reported_at`` first) agrees with the status: ``B`` before the
  account opened; ``0`` paid as agreed (``E`` for a zero balance, and in the month a paid-off
  account closed); a past-due account shows its delinquency rolling ``1``, ``2``, ``3`` … up to the
  report; a charged-off account shows ``L`` after reaching 150-179 days late; an account in
  collection shows ``G``; a settled account keeps the rating it was settled with. Fair and poor
  profiles may show an old, cured 30-day late.
"""

from __future__ import annotations

import calendar
import datetime
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from protocol.pseudonym import make_id, normalise
from protocol.record import (
    HISTORY_MONTHS,
    SCHEMA_VERSION,
    SPEC,
    STATUS_RULES,
    check_field,
    parse_record,
)
from protocol.vocabulary import AccountStatus, Category

AS_OF = datetime.date(2026, 10, 31)
"""The default reporting date: open accounts are reported in this month's cycle."""

MAX_COUNT = 10_000
"""The most records one call makes."""

BIRTH_FIRST = datetime.date(1950, 1, 1)
BIRTH_LAST = datetime.date(2004, 12, 31)
ADULT_AGE = 18
RETENTION_MONTHS = 60  # closed and settled accounts: closed within the last five years

REGIONS: dict[str, str] = {
    "110101": "Beijing, Dongcheng", "110105": "Beijing, Chaoyang", "110108": "Beijing, Haidian",
    "120101": "Tianjin, Heping", "130102": "Shijiazhuang, Chang'an", "140105": "Taiyuan, Xiaodian",
    "150102": "Hohhot, Xincheng", "210102": "Shenyang, Heping", "220102": "Changchun, Nanguan",
    "230103": "Harbin, Nangang", "310101": "Shanghai, Huangpu", "310104": "Shanghai, Xuhui",
    "310115": "Shanghai, Pudong", "320102": "Nanjing, Xuanwu", "320505": "Suzhou, Huqiu",
    "330102": "Hangzhou, Shangcheng", "330106": "Hangzhou, Xihu", "340104": "Hefei, Shushan",
    "350203": "Xiamen, Siming", "360102": "Nanchang, Donghu", "370102": "Jinan, Lixia",
    "370202": "Qingdao, Shinan", "410105": "Zhengzhou, Jinshui", "420106": "Wuhan, Wuchang",
    "430104": "Changsha, Yuelu", "440103": "Guangzhou, Liwan", "440106": "Guangzhou, Tianhe",
    "440304": "Shenzhen, Futian", "440305": "Shenzhen, Nanshan", "450103": "Nanning, Qingxiu",
    "460105": "Haikou, Xiuying", "500103": "Chongqing, Yuzhong", "510104": "Chengdu, Jinjiang",
    "510107": "Chengdu, Wuhou", "520102": "Guiyang, Nanming", "530102": "Kunming, Wuhua",
    "540102": "Lhasa, Chengguan", "610113": "Xi'an, Yanta", "620102": "Lanzhou, Chengguan",
    "630102": "Xining, Chengdong", "640104": "Yinchuan, Xingqing", "650102": "Urumqi, Tianshan",
}  # fmt: skip
"""Real county-level administrative division codes (GB/T 2260) used as ID region codes."""


def national_ids(seed: int, count: int) -> list[str]:
    """``count`` distinct valid resident ID numbers: a real region code, a birth date in
    1950..2004, a sequence number and the MOD 11-2 check character. The first ``n`` of a larger
    count are the same ``n`` IDs."""
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be 0..{MAX_COUNT}, got {count}")
    rng = random.Random(seed)
    regions = sorted(REGIONS)
    first, last = BIRTH_FIRST.toordinal(), BIRTH_LAST.toordinal()
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < count:
        region = rng.choice(regions)
        birth = datetime.date.fromordinal(rng.randint(first, last))
        value = make_id(region, birth, rng.randint(1, 999))
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out


# --- months ------------------------------------------------------------------------------------


def _month(day: datetime.date) -> int:
    return day.year * 12 + day.month - 1


def _year_month(month: int) -> tuple[int, int]:
    year, m = divmod(month, 12)
    return year, m + 1


def _last_day(month: int, as_of: datetime.date) -> datetime.date:
    """The reporting date of a month's cycle: its last day (``as_of`` in the as-of month)."""
    year, m = _year_month(month)
    if month == _month(as_of):
        return as_of
    return datetime.date(year, m, calendar.monthrange(year, m)[1])


def _day_in(rng: random.Random, month: int, lo: datetime.date, hi: datetime.date) -> datetime.date:
    """A day of ``month`` within ``lo..hi`` (the caller keeps that range non-empty)."""
    year, m = _year_month(month)
    first = max(datetime.date(year, m, 1), lo)
    last = min(datetime.date(year, m, calendar.monthrange(year, m)[1]), hi)
    return datetime.date.fromordinal(rng.randint(first.toordinal(), last.toordinal()))


def _adult_on(birth: datetime.date) -> datetime.date:
    try:
        return birth.replace(year=birth.year + ADULT_AGE)
    except ValueError:  # born on 29 February
        return datetime.date(birth.year + ADULT_AGE, 3, 1)


# --- what a record looks like per category -----------------------------------------------------


@dataclass(frozen=True)
class _Loan:
    """An instalment product: principal range (yuan), rounding, terms (months), annual rate."""

    low: int
    high: int
    step: int
    terms: tuple[int, ...]
    rate: tuple[float, float]


_LOANS: dict[Category, _Loan] = {
    Category.LOAN: _Loan(10_000, 300_000, 1_000, (12, 24, 36, 60), (0.04, 0.12)),
    Category.MORTGAGE: _Loan(300_000, 3_000_000, 10_000, (120, 180, 240, 300, 360), (0.03, 0.05)),
    Category.AUTO_LOAN: _Loan(50_000, 300_000, 1_000, (24, 36, 48, 60), (0.03, 0.08)),
    Category.MICROLOAN: _Loan(1_000, 50_000, 100, (3, 6, 12, 24), (0.10, 0.24)),
}
_PREFIX: dict[Category, str] = {
    Category.LOAN: "LN", Category.MORTGAGE: "MG", Category.CREDIT_CARD: "CC",
    Category.AUTO_LOAN: "AL", Category.MICROLOAN: "ML", Category.UTILITY: "UT",
    Category.TELECOM: "TC", Category.COURT_JUDGMENT: "CJ", Category.TAX_ARREARS: "TX",
    Category.ADMINISTRATIVE_PENALTY: "AP",
}  # fmt: skip
_CARD_LIMITS_CNY = (5_000, 10_000, 20_000, 30_000, 50_000, 80_000, 100_000, 150_000, 200_000)
_CARD_LIMITS_USD = (1_000, 2_000, 5_000, 10_000)
_PUBLIC = (Category.COURT_JUDGMENT, Category.TAX_ARREARS, Category.ADMINISTRATIVE_PENALTY)
_SERVICES = (Category.UTILITY, Category.TELECOM)

_S = AccountStatus
PROFILES = ("good", "fair", "poor")
_PROFILE_WEIGHTS = (70, 20, 10)

_CATEGORY_WEIGHTS: dict[str, dict[Category, int]] = {
    profile: {
        Category.CREDIT_CARD: 30, Category.LOAN: 14, Category.MORTGAGE: 8,
        Category.AUTO_LOAN: 7, Category.MICROLOAN: 10 if profile == "good" else 16,
        Category.UTILITY: 10, Category.TELECOM: 10,
        Category.COURT_JUDGMENT: {"good": 0, "fair": 1, "poor": 5}[profile],
        Category.TAX_ARREARS: {"good": 0, "fair": 1, "poor": 3}[profile],
        Category.ADMINISTRATIVE_PENALTY: {"good": 1, "fair": 2, "poor": 3}[profile],
    }
    for profile in PROFILES
}  # fmt: skip

_CREDIT_STATUS: dict[str, dict[AccountStatus, int]] = {
    "good": {_S.CURRENT: 76, _S.CLOSED: 22, _S.PAST_DUE_30: 2},
    "fair": {_S.CURRENT: 55, _S.CLOSED: 15, _S.PAST_DUE_30: 12, _S.PAST_DUE_60: 8,
             _S.PAST_DUE_90: 4, _S.SETTLED: 6},
    "poor": {_S.CURRENT: 25, _S.CLOSED: 6, _S.PAST_DUE_30: 10, _S.PAST_DUE_60: 10,
             _S.PAST_DUE_90: 10, _S.PAST_DUE_120_PLUS: 12, _S.CHARGED_OFF: 11,
             _S.IN_COLLECTION: 10, _S.SETTLED: 6},
}  # fmt: skip
_SERVICE_STATUS: dict[str, dict[AccountStatus, int]] = {
    "good": {_S.CURRENT: 85, _S.CLOSED: 15},
    "fair": {_S.CURRENT: 60, _S.CLOSED: 12, _S.PAST_DUE_30: 20, _S.PAST_DUE_60: 8},
    "poor": {_S.CURRENT: 35, _S.CLOSED: 10, _S.PAST_DUE_30: 15, _S.PAST_DUE_60: 15,
             _S.PAST_DUE_90: 10, _S.IN_COLLECTION: 15},
}  # fmt: skip
_PUBLIC_STATUS: dict[Category, dict[AccountStatus, int]] = {
    Category.COURT_JUDGMENT: {_S.IN_COLLECTION: 45, _S.SETTLED: 25, _S.CLOSED: 30},
    Category.TAX_ARREARS: {_S.IN_COLLECTION: 40, _S.CLOSED: 60},
    Category.ADMINISTRATIVE_PENALTY: {_S.IN_COLLECTION: 30, _S.CLOSED: 70},
}
_PUBLIC_AMOUNTS: dict[Category, tuple[int, int]] = {  # yuan
    Category.COURT_JUDGMENT: (5_000, 500_000),
    Category.TAX_ARREARS: (1_000, 200_000),
    Category.ADMINISTRATIVE_PENALTY: (200, 50_000),
}
_PAST_DUE_MONTHS = {_S.PAST_DUE_30: 1, _S.PAST_DUE_60: 2, _S.PAST_DUE_90: 3}
_OPEN_LOOKBACK_MONTHS = 20 * 12  # oldest revolving or service account
_ATTEMPTS = 8
_T = TypeVar("_T")


def _pick(rng: random.Random, weights: dict[_T, int]) -> _T:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _rolling(months_late: int) -> list[str]:
    """The delinquency newest first: 4 months late is ``4321``; codes stop at ``6``."""
    return [str(min(n, 6)) for n in range(months_late, 0, -1)]


def _recent_codes(rng: random.Random, category: Category, status: AccountStatus) -> list[str]:
    """The status's own months of payment history, newest first (may be longer than 24)."""
    if category in _PUBLIC:
        return []  # filled from the filing month on (see _history)
    if status in _PAST_DUE_MONTHS:
        return _rolling(_PAST_DUE_MONTHS[status])
    if status is _S.PAST_DUE_120_PLUS:
        return _rolling(rng.randint(4, 8))
    if status is _S.CHARGED_OFF:  # written off on reaching 150-179 days late
        return ["L"] * rng.randint(1, 8) + _rolling(5)
    if status is _S.IN_COLLECTION:
        late = rng.randint(2, 3) if category in _SERVICES else rng.randint(3, 5)
        return ["G"] * rng.randint(1, 10) + _rolling(late)
    if status is _S.SETTLED:  # the settlement month keeps the rating it was settled with
        before = ["L"] * rng.randint(1, 4) + _rolling(5) if rng.random() < 0.5 else _rolling(3)
        return [before[0], *before]
    return []


def _history(
    rng: random.Random,
    *,
    category: Category,
    status: AccountStatus,
    recent: list[str],
    age_months: int,
    zero_balance: bool,
    profile: str,
) -> str:
    """24 monthly codes, the reporting month first; ``age_months`` = reporting month - opening."""
    codes: list[str] = []
    for i in range(HISTORY_MONTHS):
        if i > age_months:
            codes.append("B")
        elif category in _PUBLIC:
            codes.append("E" if i == 0 and status is _S.CLOSED else "G")
        elif i < len(recent):
            codes.append(recent[i])
        else:
            codes.append("0")
    if not recent and zero_balance and category not in _PUBLIC:
        codes[0] = "E"  # a paid-off or unused account, current
    clean = [i for i in range(len(recent) + 1, min(age_months, HISTORY_MONTHS - 1) + 1)]
    if profile != "good" and category not in _PUBLIC and clean and rng.random() < 0.3:
        late = rng.choice(clean)  # an old 30-day late, cured the month after
        if codes[late] == "0" and codes[late - 1] in "0E":
            codes[late] = "1"
    return "".join(codes)


def _annuity_balance(principal: int, rate: float, term: int, paid: int) -> int:
    """What remains of ``principal`` (minor units) after ``paid`` of ``term`` monthly payments."""
    r = rate / 12
    growth = (1 + r) ** term
    remaining = principal * (growth - (1 + r) ** min(paid, term)) / (growth - 1)
    return max(0, round(remaining))


def _installment(principal: int, rate: float, term: int) -> int:
    r = rate / 12
    return math.ceil(principal * r / (1 - (1 + r) ** -term))


@dataclass
class _Subject:
    national_id: str
    adult: datetime.date
    profile: str


def _window(
    category: Category, status: AccountStatus, recent_len: int, term: int | None, first: int, t: int
) -> tuple[int, int, int, int] | None:
    """(reporting-month low/high, opening-month low/high offsets) or None when impossible.

    Returns the range of the reporting month R and, as offsets below R, the range of R - O."""
    closed = STATUS_RULES[status].closed
    r_lo, r_hi = (max(first, t - RETENTION_MONTHS + 1), t) if closed else (t, t)
    if category in _PUBLIC:
        return (r_lo, r_hi, 0, 36 if not closed else 12) if r_lo <= r_hi else None
    age_lo = recent_len + (1 if closed else 0)
    age_hi = _OPEN_LOOKBACK_MONTHS
    if term is not None:
        age_hi = term if closed else term - 1
    if age_lo > age_hi:
        return None
    r_lo = max(r_lo, first + age_lo)
    return (r_lo, r_hi, age_lo, age_hi) if r_lo <= r_hi else None


def _record(
    rng: random.Random,
    subject: _Subject,
    furnisher: str,
    record_id: str,
    as_of: datetime.date,
) -> dict[str, object]:
    profile = subject.profile
    t = _month(as_of)
    first = _month(subject.adult)
    category = _pick(rng, _CATEGORY_WEIGHTS[profile])
    loan = _LOANS.get(category)
    term = rng.choice(loan.terms) if loan is not None else None
    for attempt in range(_ATTEMPTS + 1):
        if category in _PUBLIC:
            status = _pick(rng, _PUBLIC_STATUS[category])
        elif attempt == _ATTEMPTS:
            status = _S.CURRENT  # always possible: an account opened in the as-of month
        elif category in _SERVICES:
            status = _pick(rng, _SERVICE_STATUS[profile])
        else:
            status = _pick(rng, _CREDIT_STATUS[profile])
        recent = _recent_codes(rng, category, status)
        window = _window(category, status, len(recent), term, first, t)
        if window is not None:
            break
    else:  # pragma: no cover - the last attempt is a current account, always possible
        raise AssertionError("no feasible account")
    r_lo, r_hi, age_lo, age_hi = window
    report_month = rng.randint(r_lo, r_hi)
    age = rng.randint(age_lo, min(age_hi, report_month - first))
    open_month = report_month - age
    reported_day = _last_day(report_month, as_of)
    opened_on = _day_in(rng, open_month, subject.adult, reported_day)
    closed_on = None
    if STATUS_RULES[status].closed:
        closed_on = _day_in(rng, report_month, opened_on, reported_day)
    seconds = rng.randint(17 * 3600, 86_399)  # the nightly batch
    reported_at = datetime.datetime.combine(reported_day, datetime.time(), datetime.UTC)
    reported_at += datetime.timedelta(seconds=seconds)

    currency, limit, balance, overdue = _amounts(rng, category, status, recent, term, age, loan)
    history = _history(
        rng,
        category=category,
        status=status,
        recent=recent,
        age_months=age,
        zero_balance=balance == 0,
        profile=profile,
    )
    return {
        "schema_version": SCHEMA_VERSION,
        "furnisher_id": furnisher,
        "record_id": f"{_PREFIX[category]}-{opened_on.year}-{record_id}",
        "national_id": subject.national_id,
        "category": category.label,
        "opened_on": opened_on.isoformat(),
        "closed_on": None if closed_on is None else closed_on.isoformat(),
        "currency": currency,
        "credit_limit": limit,
        "balance": balance,
        "overdue_amount": overdue,
        "status": status.label,
        "payment_history": history,
        "reported_at": reported_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _yuan(rng: random.Random, low: int, high: int, step: int) -> int:
    """A round amount in yuan, as fen."""
    return rng.randint(low // step, high // step) * step * 100


def _amounts(
    rng: random.Random,
    category: Category,
    status: AccountStatus,
    recent: Sequence[str],
    term: int | None,
    age: int,
    loan: _Loan | None,
) -> tuple[str, int, int, int]:
    """(currency, credit_limit, balance, overdue_amount) in minor units, agreeing with status."""
    rule = STATUS_RULES[status]
    late = sum(1 for c in recent if c.isdigit() and c != "0")  # months of missed payments
    in_default = status in (_S.CHARGED_OFF, _S.IN_COLLECTION)
    currency = "CNY"
    if category is Category.CREDIT_CARD:
        if rng.random() < 0.08:
            currency, limit = "USD", rng.choice(_CARD_LIMITS_USD) * 100
        else:
            limit = rng.choice(_CARD_LIMITS_CNY) * 100
        if rule.closed:
            return currency, limit, 0, 0
        if in_default:
            balance = limit * rng.randint(80, 110) // 100
            return currency, limit, balance, balance
        if late:
            balance = limit * rng.randint(50, 100) // 100
            minimum = max(balance // 10, 10_000)
            return currency, limit, balance, min(balance, late * minimum)
        balance = 0 if rng.random() < 0.25 else limit * rng.randint(200, 8000) // 10_000
        return currency, limit, balance, 0
    if loan is not None:
        assert term is not None
        principal = _yuan(rng, loan.low, loan.high, loan.step)
        rate = rng.uniform(*loan.rate)
        if rule.closed:
            return currency, principal, 0, 0
        balance = _annuity_balance(principal, rate, term, age - len(recent))  # none paid since
        if in_default:  # the whole loan is called in
            return currency, principal, balance, balance
        overdue = min(balance, late * _installment(principal, rate, term))
        return currency, principal, balance, overdue
    if category in _SERVICES:
        low, high = (50, 800) if category is Category.UTILITY else (30, 400)
        bill = rng.randint(low * 100, high * 100)
        if rule.closed:
            return currency, 0, 0, 0
        overdue = late * bill
        if in_default:
            return currency, 0, overdue, overdue
        return currency, 0, overdue + bill, overdue
    low, high = _PUBLIC_AMOUNTS[category]
    amount = _yuan(rng, low, high, 100)
    if rule.closed:
        return currency, amount, 0, 0
    return currency, amount, amount, amount


def sample_records(
    national_id: str,
    *,
    count: int,
    seed: int,
    furnisher: str,
    as_of: datetime.date = AS_OF,
) -> list[dict[str, object]]:
    """``count`` realistic v1 records (input form, as JSON objects) of one subject from one
    furnisher; each passes :func:`protocol.record.parse_record`. The same arguments always give
    the same records; the subject's risk profile depends only on ``seed`` and the ID.

    Raises ValueError (:class:`~protocol.pseudonym.NationalIdError` or
    :class:`~protocol.record.RecordError`) for a malformed ID or furnisher id, a count outside
    0..MAX_COUNT, or a subject under 18 on ``as_of``.
    """
    value = normalise(national_id)
    check_field(SPEC["furnisher_id"], furnisher)
    if not 0 <= count <= MAX_COUNT:
        raise ValueError(f"count must be 0..{MAX_COUNT}, got {count}")
    birth = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    adult = _adult_on(birth)
    if adult > as_of:
        raise ValueError(
            f"national ID: the subject (born {birth}) is under {ADULT_AGE} on {as_of} "
            "and has no credit file"
        )
    person = random.Random(f"creditnet-samples/v1/subject|{seed}|{value}")
    subject = _Subject(value, adult, person.choices(PROFILES, weights=_PROFILE_WEIGHTS)[0])
    rng = random.Random(f"creditnet-samples/v1/records|{seed}|{value}|{furnisher}")
    records: list[dict[str, object]] = []
    seen: set[str] = set()
    while len(records) < count:
        record_id = f"{rng.randrange(10**10):010d}"
        if record_id in seen:
            continue
        seen.add(record_id)
        record = _record(rng, subject, furnisher, record_id, as_of)
        parse_record(record)  # the generator's own check: a failure here is a bug in this module
        records.append(record)
    return records
