"""The machinery the rules run on: a write overlay, the refusal signal and shared checks.

A block executes over one :class:`Overlay` of committed state and each transaction over another
overlay stacked on it; a rule that refuses raises :class:`Refused`, the transaction's overlay is
dropped, and nothing it wrote survives. Only :mod:`protocol.contract.rules` uses this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.codec import Message
from protocol.contract import codes, views
from protocol.contract.state import MAX_BALANCE, Account, StateReader, acct_key, dump
from protocol.genesis import Genesis


class Overlay:
    """A StateReader over ``base`` that holds writes not yet applied to it."""

    __slots__ = ("base", "writes")

    def __init__(self, base: StateReader) -> None:
        self.base = base
        self.writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def put(self, key: bytes, value: Message) -> None:
        self.writes[key] = dump(value)

    def delete(self, key: bytes) -> None:
        if self.base.get(key) is None:
            self.writes.pop(key, None)  # nothing below to delete: leave no tombstone
        else:
            self.writes[key] = None

    def absorb(self, writes: dict[bytes, bytes | None]) -> None:
        """Take over the writes of an overlay that was stacked on this one."""
        for key, value in writes.items():
            if value is None:
                self.delete(key)
            else:
                self.writes[key] = value


class Refused(Exception):
    """A rule refuses the transaction: ``code`` from :mod:`codes` and a ``detail`` sentence."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class TxContext:
    """What a rule knows about the transaction it runs: who signed it, where and when."""

    genesis: Genesis
    agencies: frozenset[bytes]
    height: int
    time_ms: int
    index: int
    tx_hash: bytes
    signer: bytes


def short(key: bytes) -> str:
    """A key's first 8 bytes in hex, enough to name it in a detail sentence."""
    return key.hex()[:16]


def require_agency(t: TxContext, action: str) -> None:
    if t.signer not in t.agencies:
        raise Refused(
            codes.NOT_AGENCY, f"only an agency may {action}; {short(t.signer)} is not one"
        )


def require_client(s: StateReader, client: bytes) -> None:
    if views.client(s, client) is None:
        raise Refused(codes.UNKNOWN_CLIENT, f"{short(client)} is not a registered client")


def require_subject(t: TxContext, s: StateReader, pseudonym: bytes) -> None:
    reg = views.subject(s, pseudonym)
    if reg is None:
        raise Refused(
            codes.NOT_SUBJECT, f"pseudonym {short(pseudonym)} has no registered subject key"
        )
    if reg.subject_key != t.signer:
        raise Refused(
            codes.NOT_SUBJECT,
            f"the signer is not the subject key registered for pseudonym {short(pseudonym)}",
        )


def credit(s: Overlay, account: bytes, amount: int) -> None:
    new = views.balance(s, account) + amount
    if new > MAX_BALANCE:
        raise Refused(
            codes.BALANCE_OVERFLOW,
            f"crediting {amount} would take account {short(account)} past {MAX_BALANCE}",
        )
    s.put(acct_key(account), Account(new))


def debit(s: Overlay, account: bytes, amount: int) -> None:
    have = views.balance(s, account)
    if have < amount:
        raise Refused(
            codes.INSUFFICIENT_BALANCE,
            f"account {short(account)} holds {have}, {amount} is needed",
        )
    s.put(acct_key(account), Account(have - amount))
