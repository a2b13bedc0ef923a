"""Hypothesis strategies for every registered codec message.

Built generically from the field annotations (sizes, ranges, item limits), with overrides for the
types whose self-check ties fields together (a block's tx root, a certificate's votes, ...).
A registered message type without a strategy makes ``test_every_registered_type_has_a_strategy``
fail, so new types cannot slip past the round-trip tests.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from protocol import codec
from protocol.block import Block, CommitCertificate, CommitVote, make_header
from protocol.codec import MaxItems, MaxLen, Message, Range, Size
from protocol.crypto import Identity
from protocol.record import to_stored
from protocol.transactions import QueryEntry, QueryRequest, Transaction
from protocol.vocabulary import QueryMode
from tests.strategies import valid_record_inputs

_KEYS = [Identity(bytes([i]) * 32) for i in range(1, 5)]


def _field_strategy(tp: Any) -> st.SearchStrategy[Any]:
    meta: tuple[Any, ...] = ()
    if typing.get_origin(tp) is typing.Annotated:
        meta = tp.__metadata__
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return st.one_of(*[st.none() if a is type(None) else _field_strategy(a) for a in args])
    if origin is tuple:
        item = typing.get_args(tp)[0]
        limit = next(m.n for m in meta if isinstance(m, MaxItems))
        if isinstance(item, type) and issubclass(item, enum.IntEnum):
            return st.sets(st.sampled_from(list(item)), max_size=limit).map(
                lambda s: tuple(sorted(s))
            )
        return st.lists(_field_strategy(item), max_size=min(limit, 4)).map(tuple)
    if isinstance(tp, type) and issubclass(tp, Message):
        return message_strategy(tp)
    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        return st.sampled_from(list(tp))
    if tp is bool:
        return st.booleans()
    if tp is int:
        rng = next((m for m in meta if isinstance(m, Range)), Range(0, codec.UINT64_MAX))
        return st.integers(rng.lo, rng.hi)
    if tp is bytes:
        size = next((m.n for m in meta if isinstance(m, Size)), None)
        if size is not None:
            return st.binary(min_size=size, max_size=size)
        maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), 256)
        return st.binary(max_size=min(maxlen, 300))
    if tp is str:
        maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), 256)
        return st.text(max_size=min(maxlen, 40))
    raise TypeError(f"no strategy for {tp!r}")


def _passes_check(obj: Message) -> bool:
    try:
        codec.encode(obj)
    except codec.CodecError:
        return False
    return True


def _generic(cls: type[Message]) -> st.SearchStrategy[Message]:
    hints = typing.get_type_hints(cls, include_extras=True)
    kwargs = {f.name: _field_strategy(hints[f.name]) for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return st.builds(cls, **kwargs).filter(_passes_check)


@st.composite
def _blocks(draw: st.DrawFn) -> Block:
    txs = tuple(draw(st.lists(st.binary(max_size=200), max_size=6)))
    header = make_header(
        chain_id=draw(st.text(max_size=20)),
        height=draw(st.integers(1, 2**40)),
        time_ms=draw(st.integers(0, 2**50)),
        prev_hash=draw(st.binary(min_size=32, max_size=32)),
        txs=txs,
        app_height=0,
        app_hash=draw(st.binary(min_size=32, max_size=32)),
        view=draw(st.integers(0, 1000)),
        proposer=draw(st.sampled_from(_KEYS)).public_key,
    )
    return Block(header, txs)


@st.composite
def _certificates(draw: st.DrawFn) -> CommitCertificate:
    view, height = draw(st.integers(0, 100)), draw(st.integers(1, 10**6))
    block_hash = draw(st.binary(min_size=32, max_size=32))
    signers = draw(st.sets(st.sampled_from(range(len(_KEYS))), min_size=1))
    votes = [CommitVote.sign(_KEYS[i], "test", view, height, block_hash) for i in signers]
    return CommitCertificate.from_votes(votes)


@st.composite
def _query_entries(draw: st.DrawFn) -> QueryEntry:
    mode = draw(st.sampled_from(list(QueryMode)))
    serving: tuple[bytes, ...] = ()
    if mode == QueryMode.FORWARDED:
        serving = tuple(draw(st.sets(st.binary(min_size=32, max_size=32), min_size=1, max_size=3)))
    req = draw(message_strategy(QueryRequest))
    return QueryEntry(req, mode, serving, draw(st.integers(0, 10**15)))  # type: ignore[arg-type]


def _stored_records() -> st.SearchStrategy[Message]:
    return valid_record_inputs().map(lambda rec: to_stored(rec, b"\x07" * 32))


_OVERRIDES: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
    "Block": _blocks,
    "CommitCertificate": _certificates,
    "QueryEntry": _query_entries,
    "StoredRecord": _stored_records,
}
_CACHE: dict[type[Message], st.SearchStrategy[Any]] = {}


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Any]:
    if cls not in _CACHE:
        override = _OVERRIDES.get(cls.__name__)
        _CACHE[cls] = st.deferred(override if override else lambda: _generic(cls))
    return _CACHE[cls]


def any_message() -> st.SearchStrategy[Message]:
    return st.one_of(*[message_strategy(c) for c in codec.registered().values()])


def signed_transactions() -> st.SearchStrategy[Transaction]:
    return message_strategy(Transaction)
