"""The canonical codec: round trips, uniqueness of encodings, and hostile input."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.block import Block, CommitCertificate
from protocol.codec import CodecError, decode, encode, registered
from protocol.transactions import Deposit, Transaction, decode_tx
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
