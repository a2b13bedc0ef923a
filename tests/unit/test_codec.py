"""The canonical codec: round trips, uniqueness of encodings, and hostile input."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import inspect
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.block import Block, CommitCertificate
from protocol.codec import CodecError, decode, encode, registered
from protocol.crypto import Identity
from protocol.transactions import Deposit, Transaction, decode_tx
from protocol.wire import StreamAck
from tests.message_strategies import any_message, message_strategy

FUZZ = settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_registered_type_has_a_strategy() -> None:
    for cls in registered().values():
        assert message_strategy(cls) is not None, cls.__name__


def test_tag_table_is_unique_and_covers_registrations() -> None:
    assert len(set(codec.TAG_TABLE.values())) == len(codec.TAG_TABLE)
    for tag, cls in registered().items():
        assert codec.TAG_TABLE[tag] == cls.__name__


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message())
def test_round_trip_re_encodes_to_identical_bytes(msg: codec.Message) -> None:
    data = encode(msg)
    back = decode(data, type(msg))
    assert back == msg
    assert encode(back) == data


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes_raise_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        decode(data)


@FUZZ
@given(any_message(), st.data())
def test_mutated_encodings_raise_only_codec_error(msg: codec.Message, data: st.DataObject) -> None:
    raw = bytearray(encode(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
    try:
        out = decode(bytes(raw))
    except CodecError:
        return
    # Whatever decodes must be canonical: it re-encodes to exactly the input.
    assert encode(out) == bytes(raw)


_tree = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=40)
    | st.text(max_size=10)
    | st.floats(allow_nan=True),
    lambda children: st.lists(children, max_size=6),
    max_leaves=12,
)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(codec.TAG_TABLE)), st.lists(_tree, max_size=10))
def test_well_formed_msgpack_with_valid_tags_raises_only_codec_error(
    tag: int, fields: list
) -> None:  # type: ignore[type-arg]
    with contextlib.suppress(CodecError):
        decode(msgpack.packb([tag, *fields], use_bin_type=True))


def _checked(tree: object) -> object:
    """What the checked (field-by-field) path decodes ``tree`` to; None when it refuses."""
    try:
        return codec._decode_value(tree, None, 0)  # type: ignore[arg-type]
    except CodecError:
        return None


def _fast(tree: object) -> object:
    """What the generated fast decoder makes of ``tree``; None when it gives up."""
    if not isinstance(tree, list) or not tree or type(tree[0]) is not int:
        return None
    fast = codec._FAST.get(tree[0])
    try:
        return None if fast is None else fast(tree, 0)
    except Exception:
        return None


def _bounds() -> tuple[list[int], list[int]]:
    """Every integer bound and every length limit declared on a registered field."""
    ints: set[int] = {0, -1, 1, 2**63, 2**64 - 1, 2**64}
    lengths: set[int] = {0, 1}

    def walk(tp: object) -> None:
        for m in getattr(tp, "__metadata__", ()):
            if isinstance(m, codec.Range):
                ints.update({m.lo - 1, m.lo, m.hi, m.hi + 1})
            elif isinstance(m, codec.Size | codec.MaxLen | codec.MaxItems):
                lengths.update({m.n - 1, m.n, m.n + 1})
        for arg in typing.get_args(tp):
            walk(arg)

    for cls in registered().values():
        for tp in typing.get_type_hints(cls, include_extras=True).values():
            walk(tp)
    return sorted(ints), sorted(n for n in lengths if 0 <= n <= 2 * codec.MAX_MESSAGE_BYTES)


_INTS, _LENGTHS = _bounds()
_ITEMS = [n for n in _LENGTHS if n <= 5000]  # longer arrays: the same checks, only slower


def _near(v: object) -> st.SearchStrategy[object]:
    """Values a field holding ``v`` would refuse or only just accept: bounds, lengths, types."""
    alike: st.SearchStrategy[object]
    if type(v) is int:
        alike = st.sampled_from([*_INTS, v - 1, v + 1, True])
    elif type(v) is bool:
        alike = st.sampled_from([int(v), not v, None])
    elif type(v) is bytes:
        alike = st.sampled_from(_LENGTHS).map(bytes) | st.just(v.decode("latin-1"))
    elif type(v) is str:
        alike = st.sampled_from(_LENGTHS).map(lambda n: "é" * n) | st.just(v.encode())
    elif isinstance(v, list):
        alike = st.sampled_from([[], v + v, v[:-1], v[:1], None, [v], [2**64]])
        alike |= st.sampled_from(_ITEMS).map(lambda n: v[:1] * n)
    else:
        alike = st.sampled_from([0, b"", "", [], False])
    return alike | _tree


def _paths(tree: object, at: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    out = [at]
    if isinstance(tree, list):
        for i, item in enumerate(tree):
            out += _paths(item, (*at, i))
    return out


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_message(), st.data())
def test_the_fast_decoder_accepts_exactly_what_the_checked_path_accepts(
    msg: codec.Message, data: st.DataObject
) -> None:
    tree = msgpack.unpackb(encode(msg), raw=False)
    assert _fast(tree) == msg == _checked(tree)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(_paths(tree)[1:]))
        parent = tree
        for i in path[:-1]:
            parent = parent[i]
        op = data.draw(st.sampled_from(["replace", "replace", "replace", "drop", "repeat"]))
        if op == "replace":
            parent[path[-1]] = data.draw(_near(parent[path[-1]]))
        elif op == "drop":
            del parent[path[-1]]
        else:
            parent.insert(path[-1], parent[path[-1]])
    slow = _checked(tree)
    fast = _fast(tree)
    assert fast == slow
    assert type(fast) is type(slow)


def _edges(tp: object, v: object) -> list[object]:
    """Values just inside and just outside what a field of type ``tp`` (holding ``v``) takes."""
    meta = getattr(tp, "__metadata__", ())
    base = typing.get_args(tp)[0] if meta else tp
    out: list[object] = [None, True, [], "x", b"x", 7, *_OTHER_MESSAGES]
    for m in meta:
        if isinstance(m, codec.Range):
            out += [m.lo - 1, m.lo, m.hi, m.hi + 1]
        elif isinstance(m, codec.Size | codec.MaxLen):
            for n in (m.n - 1, m.n, m.n + 1):
                out += [bytes(n), "é" * n] if n >= 0 else []
        elif isinstance(m, codec.MaxItems) and isinstance(v, list) and v and m.n <= 5000:
            out += [v[:1] * m.n, v[:1] * (m.n + 1)]
    if isinstance(base, type) and issubclass(base, enum.IntEnum):
        out += [max(base) + 1, -1, min(base)]
    if base is int and not meta:
        out += [-1, 2**64 - 1, 2**64]
    if isinstance(v, list) and v:
        out += [v[:-1], [*v, v[-1]], [2**64, *v[1:]], [True, *v[1:]]]
    return out


def _typed_paths(tree: object, tp: object, at: tuple[int, ...] = ()) -> list[tuple]:  # type: ignore[type-arg]
    """(path, declared type) of every value in ``tree``, a decoded message of type ``tp``."""
    out: list[tuple] = [(at, tp)]  # type: ignore[type-arg]
    base = typing.get_args(tp)[0] if hasattr(tp, "__metadata__") else tp
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        if tree is None:
            return out
        base = next(a for a in typing.get_args(base) if a is not type(None))
    if typing.get_origin(base) is tuple and isinstance(tree, list):
        for i, item in enumerate(tree):
            out += _typed_paths(item, typing.get_args(base)[0], (*at, i))
    elif isinstance(tree, list) and tree and type(tree[0]) is int and tree[0] in registered():
        cls = registered()[tree[0]]
        hints = typing.get_type_hints(cls, include_extras=True)
        for i, f in enumerate(dataclasses.fields(cls), 1):  # type: ignore[arg-type]
            if i < len(tree):
                out += _typed_paths(tree[i], hints[f.name], (*at, i))
    return out


_OTHER_MESSAGES = [  # valid messages of other kinds: a field must take only the kinds it declares
    msgpack.unpackb(encode(StreamAck(1, 2)), raw=False),
    msgpack.unpackb(encode(Deposit(bytes(32), 5)), raw=False),
]


@pytest.mark.parametrize("cls", list(registered().values()), ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_decoder_agrees_with_the_checked_path_at_every_field_bound(
    cls: type[codec.Message], data: st.DataObject
) -> None:
    msg = data.draw(message_strategy(cls))
    tree = msgpack.unpackb(encode(msg), raw=False)
    for path, tp in _typed_paths(tree, type(msg))[1:]:
        parent = tree
        for i in path[:-1]:
            parent = parent[i]
        kept = parent[path[-1]]
        for edge in _edges(tp, kept):
            parent[path[-1]] = edge
            slow, fast = _checked(tree), _fast(tree)
            assert fast == slow and type(fast) is type(slow), (path, edge)
        parent[path[-1]] = kept


def _enc_checked(obj: object, check: bool) -> object:
    try:
        return codec._encode_value(obj, None, 0, check)  # type: ignore[arg-type]
    except CodecError:
        return None


def _enc_fast(obj: object, check: bool) -> object:
    fast = codec._FAST_ENC.get(getattr(obj, "TAG", -1))
    try:
        return None if fast is None else fast(obj, 0, check)
    except Exception:
        return None


_OTHER_OBJECTS = [StreamAck(1, 2), Deposit(bytes(32), 5)]


def _variants(obj: codec.Message) -> typing.Iterator[codec.Message]:
    """``obj`` with one field, at any depth, set to a value at or past its declared bounds."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):  # type: ignore[arg-type]
        v = getattr(obj, f.name)
        as_tree = list(v) if isinstance(v, tuple) else v
        for edge in [*_edges(hints[f.name], as_tree), *_OTHER_OBJECTS, (), (v,), [v]]:
            yield dataclasses.replace(obj, **{f.name: edge})  # type: ignore[type-var]
        if isinstance(edge := v, codec.Message):
            for inner in _variants(edge):
                yield dataclasses.replace(obj, **{f.name: inner})  # type: ignore[type-var]
        elif isinstance(v, tuple) and v and isinstance(v[0], codec.Message):
            for inner in _variants(v[0]):
                yield dataclasses.replace(obj, **{f.name: (inner, *v[1:])})  # type: ignore[type-var]


@pytest.mark.parametrize("cls", list(registered().values()), ids=lambda c: c.__name__)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_fast_encoder_agrees_with_the_checked_path_at_every_field_bound(
    cls: type[codec.Message], data: st.DataObject
) -> None:
    msg = data.draw(message_strategy(cls))
    for check in (True, False):
        assert _enc_fast(msg, check) == _enc_checked(msg, check) is not None
        for variant in _variants(msg):
            slow, fast = _enc_checked(variant, check), _enc_fast(variant, check)
            assert fast == slow, variant
            if slow is not None:  # the same tree, so the same bytes (True == 1 must not pass)
                assert msgpack.packb(fast) == msgpack.packb(slow), variant


def test_the_fast_decoder_gives_up_on_what_it_cannot_take_and_decode_names_the_field() -> None:
    signer = Identity(bytes([1]) * 32)
    tx = msgpack.unpackb(encode(Transaction.sign(signer, "c", Deposit(signer.public_key, 5), 1)))
    tx[1][2] = -5  # Deposit.amount below its range
    assert _fast(tx) is None
    with pytest.raises(CodecError, match=r"Transaction\.body\.amount"):
        decode(msgpack.packb(tx, use_bin_type=True))


def test_non_canonical_integer_is_refused(sample_tx: Transaction) -> None:
    data = encode(sample_tx)
    # Re-pack the nonce (a small int) as a uint64: same value, longer form.
    tree = msgpack.unpackb(data, raw=False)
    packer = msgpack.Packer(use_bin_type=True)
    parts = [b"\x95", packer.pack(tree[0]), packer.pack(tree[1]), packer.pack(tree[2])]
    parts.append(b"\xcf" + tree[3].to_bytes(8, "big"))
    parts.append(packer.pack(tree[4]))
    with pytest.raises(CodecError, match="non-canonical"):
        decode(b"".join(parts))
    # A node's own stored state skips only that check (it wrote the bytes with encode):
    assert decode(b"".join(parts), Transaction, canonical=False) == sample_tx
    # ... every other check still holds.
    with pytest.raises(CodecError, match="trailing"):
        decode(data + b"\x00", canonical=False)
    tree[3] = -1
    with pytest.raises(CodecError, match=r"Transaction\.nonce"):
        decode(msgpack.packb(tree, use_bin_type=True), canonical=False)


def test_maps_floats_and_trailing_bytes_are_refused(sample_tx: Transaction) -> None:
    data = encode(sample_tx)
    with pytest.raises(CodecError, match="trailing"):
        decode(data + b"\x00")
    with pytest.raises(CodecError):
        decode(msgpack.packb({"a": 1}))
    with pytest.raises(CodecError, match="expected an integer"):
        decode(msgpack.packb([0x04, b"\x00" * 32, 1.5], use_bin_type=True))


def test_unknown_tag_and_wrong_arity_name_the_problem() -> None:
    with pytest.raises(CodecError, match="unknown type tag 999"):
        decode(msgpack.packb([999]))
    with pytest.raises(CodecError, match="Deposit has 2 fields, got 1"):
        decode(msgpack.packb([0x04, b"\x00" * 32], use_bin_type=True))


def test_field_errors_name_the_path() -> None:
    with pytest.raises(CodecError, match=r"Deposit\.account: expected 32 bytes, got 3"):
        decode(msgpack.packb([0x04, b"abc", 5], use_bin_type=True))
    with pytest.raises(CodecError, match=r"Deposit\.amount: must be greater than 0"):
        decode(msgpack.packb([0x04, b"\x00" * 32, 0], use_bin_type=True))


def test_size_limits_are_enforced() -> None:
    with pytest.raises(CodecError, match="exceeds the limit"):
        decode(b"\x90" * (codec.MAX_MESSAGE_BYTES + 1))
    with pytest.raises(CodecError, match="exceeds"):
        decode_tx(b"\x00" * 70_000)
    deep = b"\x91" * 5000 + b"\x00"  # 5000 nested one-item arrays
    with pytest.raises(CodecError):
        decode(deep)


def test_expected_type_is_checked(sample_tx: Transaction) -> None:
    with pytest.raises(CodecError, match="expected Block, got Transaction"):
        decode(encode(sample_tx), Block)


def test_encode_refuses_ill_typed_values() -> None:
    with pytest.raises(CodecError, match="expected an integer"):
        encode(Deposit(b"\x00" * 32, 1.0))  # type: ignore[arg-type]
    with pytest.raises(CodecError, match="expected an integer"):
        encode(Deposit(b"\x00" * 32, True))
    with pytest.raises(CodecError, match="outside"):
        encode(Deposit(b"\x00" * 32, 2**64))


def test_certificate_needs_consistent_votes(sample_certificate: CommitCertificate) -> None:
    assert decode(encode(sample_certificate), CommitCertificate) == sample_certificate


def test_the_reused_packer_keeps_nothing_between_calls() -> None:
    """Encoding reuses one msgpack packer per thread: a failed pack leaves nothing behind, and
    threads packing at once each get exactly their own bytes."""
    with pytest.raises(TypeError):
        codec._pack([1, b"half", object()])
    assert codec._pack([2, b"x"]) == msgpack.packb([2, b"x"], use_bin_type=True)
    trees = [[i, b"%d" % i * (i % 50), "s" * (i % 7), [i, -i]] for i in range(400)]
    with ThreadPoolExecutor(4) as pool:
        packed = list(pool.map(codec._pack, trees))
    assert packed == [msgpack.packb(t, use_bin_type=True) for t in trees]


def test_small_inputs_keep_the_length_limits_of_their_own_size() -> None:
    """Inputs up to 64 KiB are unpacked with msgpack's default limits, which it sets from the
    input's length, as the explicit ones for larger inputs do: a header claiming more items or
    bytes than the input holds is refused before anything is allocated, as are maps and ext."""
    for data, what in (
        (b"\xdd\xff\xff\xff\xff", "max_array_len"),  # an array of 2^32 - 1 items, in 5 bytes
        (b"\xdc\xff\xff" + b"\x00" * 8, "max_array_len"),
        (msgpack.packb({1: 2}), "max_map_len"),
        (msgpack.packb(msgpack.ExtType(1, b"x")), "max_ext_len"),
    ):
        with pytest.raises(CodecError, match=what):
            decode(data)
    big = msgpack.packb([60_000, b"\x00" * (70 * 1024)], use_bin_type=True)  # explicit limits
    with pytest.raises(CodecError, match="unknown type tag"):
        decode(big)


@given(any_message())
@settings(max_examples=300, deadline=None)
def test_a_message_built_by_its_constructor_is_the_decoded_one(msg: Any) -> None:
    """Slotted messages get a generated ``__init__`` (fields set through their slot descriptors):
    positional or by keyword, it builds exactly the message the codec decodes."""
    cls = type(msg)
    values = {f.name: getattr(msg, f.name) for f in dataclasses.fields(cls)}
    assert cls(*values.values()) == msg == cls(**values)
    assert decode(encode(cls(**values), check=False)) == msg
    first = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cls(**values), first, values[first])  # still frozen


@pytest.mark.parametrize("cls", list(registered().values()), ids=lambda c: c.__name__)
def test_the_generated_init_keeps_the_dataclass_signature(cls: type[Any]) -> None:
    fields = dataclasses.fields(cls)
    params = list(inspect.signature(cls).parameters.values())
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default == expected
    with pytest.raises(TypeError):
        cls()  # every message has a field without a default
    if "__slots__" in cls.__dict__:  # the slotted ones have the generated __init__
        assert "_set0" in cls.__init__.__globals__
