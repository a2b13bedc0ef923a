"""The closed vocabularies shared by the record standard, consent and queries.

Each is an ``IntEnum`` (the codec stores the number) whose ``label`` is the lower-case name used in
JSON, the CLI and the API. Numbers are part of the protocol: never renumber, only append.
"""

from __future__ import annotations

import enum


class Labelled(enum.IntEnum):
    """An IntEnum with a JSON label (its lower-case name) and a parser that names the choices."""

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, label: str) -> Labelled:
        if isinstance(label, str) and label == label.lower() and label.upper() in cls.__members__:
            return cls[label.upper()]
        choices = ", ".join(m.label for m in cls)
        raise ValueError(f"{label!r} is not one of: {choices}")

    @classmethod
    def labels(cls) -> list[str]:
        return [m.label for m in cls]


class Category(Labelled):
    """What kind of obligation a credit record describes."""

    LOAN = 1
    MORTGAGE = 2
    CREDIT_CARD = 3
    AUTO_LOAN = 4
    MICROLOAN = 5
    UTILITY = 6
    TELECOM = 7
    COURT_JUDGMENT = 8
    TAX_ARREARS = 9
    ADMINISTRATIVE_PENALTY = 10


class AccountStatus(Labelled):
    """The account's standing at the time it was reported (Metro 2-like)."""

    CURRENT = 1
    PAST_DUE_30 = 2
    PAST_DUE_60 = 3
    PAST_DUE_90 = 4
    PAST_DUE_120_PLUS = 5
    CHARGED_OFF = 6
    CLOSED = 7
    IN_COLLECTION = 8
    SETTLED = 9


class Purpose(Labelled):
    """Why a query user asks for a report (the PBoC's query reasons)."""

    LOAN_APPROVAL = 1
    CREDIT_CARD_APPROVAL = 2
    POST_LOAN_MANAGEMENT = 3
    GUARANTEE_REVIEW = 4
    SELF_INQUIRY = 5


class QueryMode(Labelled):
    """Mode 1: the asked agency answers from its own records; mode 2: it forwards to peers."""

    DIRECT = 1
    FORWARDED = 2
