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
from protocol.consensus.messages import (
    BlockRequest,
    BlockResponse,
    CommittedBlock,
    NewView,
    Prepare,
    PreparedProof,
    PrePrepare,
    ViewChange,
)
from protocol.contract import codes as contract_codes
from protocol.contract import state as contract_state
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


@st.composite
def _preprepares(draw: st.DrawFn) -> PrePrepare:
    block = draw(_blocks())
    view = draw(st.integers(0, 50))
    return PrePrepare.sign(_KEYS[view % 4], "test", view, block, view % 4)


@st.composite
def _proofs(draw: st.DrawFn, seq: int | None = None, below_view: int = 10**6) -> PreparedProof:
    pp = draw(_preprepares())
    if seq is not None or pp.view >= below_view:
        block = pp.block
        header = dataclasses.replace(block.header, height=seq if seq is not None else block.height)
        view = min(pp.view, below_view - 1)
        pp = PrePrepare.sign(_KEYS[view % 4], "test", view, Block(header, block.txs), view % 4)
    others = [i for i in range(4) if i != pp.replica]
    chosen = draw(st.lists(st.sampled_from(others), unique=True, max_size=3))
    prepares = tuple(
        Prepare.sign(_KEYS[i], "test", pp.view, pp.seq, pp.digest, i) for i in sorted(chosen)
    )
    return PreparedProof(pp, prepares)


@st.composite
def _view_changes(
    draw: st.DrawFn, new_view: int | None = None, replica: int | None = None
) -> ViewChange:
    nv = new_view if new_view is not None else draw(st.integers(1, 100))
    who = replica if replica is not None else draw(st.integers(0, 3))
    cert = draw(st.none() | _certificates())
    base = cert.height if cert else 0
    count = draw(st.integers(0, 2))
    proofs = tuple(draw(_proofs(seq=base + 1 + i, below_view=nv)) for i in range(count))
    return ViewChange.sign(_KEYS[who], "test", nv, cert, proofs, who)


@st.composite
def _new_views(draw: st.DrawFn) -> NewView:
    view = draw(st.integers(1, 100))
    who = draw(st.lists(st.integers(0, 3), unique=True, min_size=1, max_size=4))
    vcs = tuple(draw(_view_changes(new_view=view, replica=r)) for r in sorted(who))
    sigs = tuple(draw(st.lists(st.binary(min_size=64, max_size=64), max_size=3)))
    return NewView.sign(_KEYS[view % 4], "test", view, vcs, sigs, view % 4)


@st.composite
def _committed_blocks(draw: st.DrawFn, height: int | None = None) -> CommittedBlock:
    block = draw(_blocks())
    if height is not None:
        block = Block(dataclasses.replace(block.header, height=height), block.txs)
    signers = draw(st.sets(st.sampled_from(range(4)), min_size=1))
    votes = [CommitVote.sign(_KEYS[i], "test", 0, block.height, block.hash) for i in signers]
    return CommittedBlock(block, CommitCertificate.from_votes(votes))


@st.composite
def _block_requests(draw: st.DrawFn) -> BlockRequest:
    start = draw(st.integers(1, 10**9))
    return BlockRequest(start, start + draw(st.integers(0, 255)))


@st.composite
def _block_responses(draw: st.DrawFn) -> BlockResponse:
    start = draw(st.integers(1, 10**6))
    count = draw(st.integers(0, 3))
    return BlockResponse(tuple(draw(_committed_blocks(height=start + i)) for i in range(count)))


@st.composite
def _audit_entries(draw: st.DrawFn) -> contract_state.AuditEntry:
    """Audit entries as the contract writes them: serving agencies only in mode 2."""
    entry = draw(_generic(contract_state.AuditEntry))
    assert isinstance(entry, contract_state.AuditEntry)
    if entry.mode == QueryMode.DIRECT:
        return dataclasses.replace(entry, serving=())
    keys = draw(st.sets(st.sampled_from([k.public_key for k in _KEYS]), min_size=1))
    return dataclasses.replace(entry, serving=tuple(sorted(keys)))


@st.composite
def _tx_results(draw: st.DrawFn) -> contract_state.TxResult:
    """Tx results as the contract writes them: ``ok`` exactly when the code is ``ok``."""
    code = draw(
        st.sampled_from(
            [v for k, v in vars(contract_codes).items() if k.isupper() and isinstance(v, str)]
        )
    )
    detail = "" if code == contract_codes.OK else draw(st.text(min_size=1, max_size=80))
    return contract_state.TxResult(
        code == contract_codes.OK,
        code,
        detail,
        draw(st.integers(1, 2**40)),
        draw(st.integers(0, 4999)),
    )


def _stored_records() -> st.SearchStrategy[Message]:
    return valid_record_inputs().map(lambda rec: to_stored(rec, b"\x07" * 32))


_OVERRIDES: dict[str, Callable[[], st.SearchStrategy[Any]]] = {
    "Block": _blocks,
    "CommitCertificate": _certificates,
    "QueryEntry": _query_entries,
    "StoredRecord": _stored_records,
    "PrePrepare": _preprepares,
    "PreparedProof": _proofs,
    "ViewChange": _view_changes,
    "NewView": _new_views,
    "CommittedBlock": _committed_blocks,
    "BlockRequest": _block_requests,
    "BlockResponse": _block_responses,
    "AuditEntry": _audit_entries,
    "TxResult": _tx_results,
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
