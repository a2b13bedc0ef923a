"""The one canonical codec of creditnet: msgpack arrays with an explicit type-tag table.

Every value that crosses the network, goes on the ledger or is signed is a *message*: a frozen
dataclass registered here under a tag from ``TAG_TABLE``. A message encodes as the msgpack array
``[tag, field_1, field_2, ...]`` in declaration order; nested messages encode the same way.

Why it is canonical: only ints (unsigned 64-bit unless a field says otherwise), bools, UTF-8
strings, bytes (msgpack ``bin``), None, arrays and nested messages are allowed -- no maps, no
floats, no extension types -- and msgpack packs each of those in exactly one shortest form. A
decoder re-encodes what it read and refuses input whose bytes differ, so one value has exactly
one encoding and hashes/signatures over encoded bytes are unambiguous.

Decoding untrusted bytes is bounded (total size, string, bin and array lengths, nesting depth) and
raises only :class:`CodecError` (or its subclass :class:`InvalidMessage` for a failed self-check),
whose message names the field path and the rule that failed.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, dataclass_transform

import msgpack

MAX_MESSAGE_BYTES = 1 << 20
"""Largest encoded message accepted by ``decode`` (and the largest network frame)."""
MAX_BIN_LEN = MAX_MESSAGE_BYTES
MAX_STR_LEN = 64 * 1024
MAX_ARRAY_LEN = 100_000
_SMALL_INPUT = min(MAX_BIN_LEN, MAX_STR_LEN, MAX_ARRAY_LEN)
MAX_DEPTH = 16
UINT64_MAX = (1 << 64) - 1

# The type-tag table. A tag is never reused or renumbered once released: add new kinds at the end.
TAG_TABLE: dict[int, str] = {
    # transactions and their bodies
    0x01: "Transaction",
    0x02: "RegisterClient",
    0x03: "RegisterSubject",
    0x04: "Deposit",
    0x05: "Transfer",
    0x06: "ConsentGrant",
    0x07: "ConsentRevoke",
    0x08: "RecordCommitment",
    0x09: "CommitmentEntry",
    0x0A: "QueryRequest",
    0x0B: "QueryEntry",
    0x0C: "ValidatorSetChange",
    # blocks
    0x20: "BlockHeader",
    0x21: "Block",
    0x22: "CommitVote",
    0x23: "CommitCertificate",
    # credit records (standard v1, stored form)
    0x30: "StoredRecord",
    # consensus messages
    0x40: "PrePrepare",
    0x41: "Prepare",
    0x42: "CommittedBlock",
    0x43: "Checkpoint",
    0x44: "ViewChange",
    0x45: "NewView",
    0x46: "PreparedProof",
    0x47: "BlockRequest",
    0x48: "BlockResponse",
    # node-to-node transport (framing of consensus streams, gossip payloads)
    0x50: "StreamFrame",
    0x51: "StreamAck",
    0x52: "TxBatch",
    0x53: "Lookup",
    0x54: "LookupReply",
    0x55: "RecordSet",
    # ledger state: values the built-in credit contract stores (protocol/contract/state.py)
    0x60: "Account",
    0x61: "ClientRegistration",
    0x62: "SubjectRegistration",
    0x63: "ConsentDecision",
    0x64: "CommittedRecord",
    0x65: "SeenRequest",
    0x66: "AuditEntry",
    0x67: "TxResult",
    0x68: "ValidatorVote",
    0x69: "ApprovedValidatorChange",
}
_TAG_BY_NAME = {name: tag for tag, name in TAG_TABLE.items()}
if len(_TAG_BY_NAME) != len(TAG_TABLE):  # pragma: no cover - guards edits to the table
    raise RuntimeError("TAG_TABLE names must be unique")


class CodecError(ValueError):
    """Bytes or a value that the codec refuses; the message names the field and the rule."""


class InvalidMessage(CodecError):
    """A well-formed message whose self-check failed (``Message.check``)."""


# --- field constraints, used as ``Annotated[T, ...]`` metadata -------------------------------


@dataclass(frozen=True)
class Size:
    """Exact length in bytes of a ``bytes`` field."""

    n: int


@dataclass(frozen=True)
class MaxLen:
    """Largest length of a ``bytes`` field (bytes) or ``str`` field (characters)."""

    n: int


@dataclass(frozen=True)
class MaxItems:
    """Largest number of items of a ``tuple[T, ...]`` field."""

    n: int


@dataclass(frozen=True)
class Range:
    """Inclusive bounds of an ``int`` field (default ``0..2**64-1``)."""

    lo: int
    hi: int


Hash32 = typing.Annotated[bytes, Size(32)]
PublicKey = typing.Annotated[bytes, Size(32)]
Signature = typing.Annotated[bytes, Size(64)]
Name = typing.Annotated[str, MaxLen(64)]

_Conv = Callable[..., Any]


class Message:
    """Base of every encodable type. Subclasses are declared with :func:`message`."""

    __slots__ = ()
    TAG: ClassVar[int]
    _FIELDS: ClassVar[tuple[tuple[str, _Conv, _Conv], ...]]

    def check(self) -> None:
        """Semantic self-check beyond types; raise :class:`InvalidMessage` naming the field."""

    def encode(self) -> bytes:
        return encode(self)


M = TypeVar("M", bound=Message)
_REGISTRY: dict[int, type[Message]] = {}


@dataclass_transform(frozen_default=True)
def message(name: str, *, slots: bool = True) -> Callable[[type[M]], type[M]]:
    """Register a class under ``TAG_TABLE``'s tag for ``name`` and make it a frozen dataclass.

    ``slots=False`` keeps an instance ``__dict__`` so a class can cache derived values (a block
    header its hash) with ``functools.cached_property``.
    """

    def wrap(cls: type[M]) -> type[M]:
        if name != cls.__name__:
            raise RuntimeError(f"message name {name!r} differs from class {cls.__name__!r}")
        if name not in _TAG_BY_NAME:
            raise RuntimeError(f"message {name!r} has no tag in codec.TAG_TABLE")
        tag = _TAG_BY_NAME[name]
        if tag in _REGISTRY:
            raise RuntimeError(f"tag {tag:#x} ({name}) registered twice")
        dc = dataclass(frozen=True, slots=slots)(cls)
        _fast_init(dc)
        dc.TAG = tag
        _REGISTRY[tag] = dc
        _PENDING.append(dc)
        return dc

    return wrap


_PENDING: list[type[Message]] = []


def _slot_setters(
    cls: type[Message], target: str, values: list[str], ns: dict[str, Any]
) -> list[str] | None:
    """Lines that set each field of ``target`` (a ``cls``) to ``values`` through the field's
    slot descriptor, binding the setters in ``ns``; None when ``cls`` has no slot for every
    field (its fields live in ``__dict__``) or a ``__post_init__`` the dataclass would call.

    A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, twice the
    cost of the descriptor (1.56 -> 0.68 us for eight fields).
    """
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or not all(
        type(cls.__dict__.get(name)) is types.MemberDescriptorType for name in names
    ):
        return None
    lines = []
    for i, (name, value) in enumerate(zip(names, values, strict=True)):
        ns[f"_set{i}"] = cls.__dict__[name].__set__
        lines.append(f"_set{i}({target}, {value})")
    return lines


def _fast_init(cls: type[Message]) -> None:
    """Give a slotted message an ``__init__`` that sets each field through its slot descriptor.

    The frozen dataclass's own ``__init__`` goes through ``object.__setattr__`` for every field,
    twice the cost, and messages are built on every hot path (state values the contract writes,
    votes, transactions). Same parameters, same defaults, nothing else done: a class with a
    default factory, keyword-only or non-init fields, or a ``__post_init__`` keeps the
    dataclass's.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if any(f.default_factory is not dataclasses.MISSING or f.kw_only or not f.init for f in fields):
        return
    ns: dict[str, Any] = {}
    body = _slot_setters(cls, "self", [f.name for f in fields], ns)
    if body is None:
        return
    params = ["self"]
    for i, f in enumerate(fields):
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            ns[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
    init = _compile("__init__", ", ".join(params), body or ["pass"], ns)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__annotations__ = dict(cls.__init__.__annotations__)
    cls.__init__ = init  # type: ignore[method-assign]


_COMPILE_LOCK = threading.Lock()


def _compile_pending() -> None:
    """Build field converters once every class is defined (forward references resolve).

    Under a lock: the node decodes in worker threads too, and a thread must never see a class
    another thread has taken off ``_PENDING`` but not finished compiling.
    """
    if not _PENDING:
        return
    with _COMPILE_LOCK:
        while _PENDING:
            cls = _PENDING[-1]
            hints = typing.get_type_hints(cls, include_extras=True)
            fields = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                dec, enc = _converter(hints[f.name], f"{cls.__name__}.{f.name}")
                fields.append((f.name, dec, enc))
            cls._FIELDS = tuple(fields)
            _fast_paths(cls, hints)
            _PENDING.pop()


def _converter(tp: Any, where: str) -> tuple[_Conv, _Conv]:
    """Return (decode, encode) converters for a field type; each checks and converts a value."""
    meta: tuple[Any, ...] = ()
    if typing.get_origin(tp) is typing.Annotated:
        meta = tp.__metadata__
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)

    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        allows_none = len(args) != len(typing.get_args(tp))
        if all(isinstance(a, type) and issubclass(a, Message) for a in args):
            allowed = tuple(args)
            dec_u, enc_u = _message_converter(allowed)
        elif len(args) == 1:
            dec_u, enc_u = _converter(
                typing.Annotated[(args[0], *meta)] if meta else args[0], where
            )
        else:
            raise TypeError(f"{where}: unsupported union {tp!r}")
        if not allows_none:
            return dec_u, enc_u

        def dec_opt(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            return None if v is None else dec_u(v, path, depth)

        def enc_opt(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            return None if v is None else enc_u(v, path, depth, check)

        return dec_opt, enc_opt

    if origin is tuple:
        targs = typing.get_args(tp)
        if len(targs) != 2 or targs[1] is not Ellipsis:
            raise TypeError(f"{where}: only tuple[T, ...] is supported")
        limit = next((m.n for m in meta if isinstance(m, MaxItems)), None)
        if limit is None:
            raise TypeError(f"{where}: tuple fields need MaxItems")
        item_dec, item_enc = _converter(targs[0], where)

        def dec_tuple(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if not isinstance(v, list):
                raise CodecError(f"{path}: expected an array, got {_kind(v)}")
            if len(v) > limit:
                raise CodecError(f"{path}: {len(v)} items exceed the limit of {limit}")
            if path is None:
                return tuple([item_dec(x, None, depth + 1) for x in v])
            return tuple(item_dec(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v))

        def enc_tuple(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if not isinstance(v, tuple | list):
                raise CodecError(f"{path}: expected a tuple, got {_kind(v)}")
            if len(v) > limit:
                raise CodecError(f"{path}: {len(v)} items exceed the limit of {limit}")
            if path is None:
                return [item_enc(x, None, depth + 1, check) for x in v]
            return [item_enc(x, f"{path}[{i}]", depth + 1, check) for i, x in enumerate(v)]

        return dec_tuple, enc_tuple

    if isinstance(tp, type) and issubclass(tp, Message):
        return _message_converter((tp,))

    if isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        enum_t = tp

        def dec_enum(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if type(v) is not int:
                raise CodecError(f"{path}: expected an integer enum, got {_kind(v)}")
            try:
                return enum_t(v)
            except ValueError:
                raise CodecError(f"{path}: {v} is not a valid {enum_t.__name__}") from None

        def enc_enum(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if not isinstance(v, enum_t):
                raise CodecError(f"{path}: expected {enum_t.__name__}, got {_kind(v)}")
            return int(v)

        return dec_enum, enc_enum

    if tp is bool:

        def conv_bool(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if type(v) is not bool:
                raise CodecError(f"{path}: expected a bool, got {_kind(v)}")
            return v

        return conv_bool, conv_bool

    if tp is int:
        rng = next((m for m in meta if isinstance(m, Range)), Range(0, UINT64_MAX))
        lo, hi = rng.lo, rng.hi

        def conv_int(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if type(v) is not int:
                raise CodecError(f"{path}: expected an integer, got {_kind(v)}")
            if not lo <= v <= hi:
                raise CodecError(f"{path}: {v} is outside {lo}..{hi}")
            return v

        return conv_int, conv_int

    if tp is bytes:
        size = next((m.n for m in meta if isinstance(m, Size)), None)
        maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), MAX_BIN_LEN)

        def conv_bytes(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if type(v) is not bytes:
                raise CodecError(f"{path}: expected bytes, got {_kind(v)}")
            if size is not None and len(v) != size:
                raise CodecError(f"{path}: expected {size} bytes, got {len(v)}")
            if len(v) > maxlen:
                raise CodecError(f"{path}: {len(v)} bytes exceed the limit of {maxlen}")
            return v

        return conv_bytes, conv_bytes

    if tp is str:
        maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), 256)

        def conv_str(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
            if type(v) is not str:
                raise CodecError(f"{path}: expected a string, got {_kind(v)}")
            if len(v) > maxlen:
                raise CodecError(f"{path}: {len(v)} characters exceed the limit of {maxlen}")
            return v

        return conv_str, conv_str

    raise TypeError(f"{where}: unsupported field type {tp!r}")


def _message_converter(allowed: tuple[type[Message], ...]) -> tuple[_Conv, _Conv]:
    allowed_tags = {c.TAG if hasattr(c, "TAG") else _TAG_BY_NAME[c.__name__] for c in allowed}
    names = " or ".join(c.__name__ for c in allowed)

    def dec_msg(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
        obj = _decode_value(v, path, depth + 1)
        if obj.TAG not in allowed_tags:
            raise CodecError(f"{path}: expected {names}, got {type(obj).__name__}")
        return obj

    def enc_msg(v: Any, path: str | None, depth: int, check: bool = True) -> Any:
        if not isinstance(v, allowed):
            raise CodecError(f"{path}: expected {names}, got {_kind(v)}")
        return _encode_value(v, path, depth + 1, check)

    return dec_msg, enc_msg


# --- the fast paths ---------------------------------------------------------------------------
#
# Decoding and encoding are on every hot path (each transaction on each node, ledger state reads
# and writes, signed payloads, consensus messages). The checked path above converts field by
# field through closures that carry a field path for error messages; the fast paths are
# generated per class, with the same checks inlined and no paths. They only ever succeed or give
# up: on anything they do not take (or any error at all) ``decode`` and ``encode`` run the
# checked path, which refuses with the message naming the field. Tests run every kind of
# message, valid and with each field at and past its bounds, both ways.


class _Slow(Exception):
    """A fast path gives up; the checked path decides (and names what is wrong)."""


_SLOW = _Slow  # raised as a class: a fresh instance each time (threads decode too)
_FAST: dict[int, Callable[[list[Any], int], Message]] = {}
_FAST_ENC: dict[int, Callable[[Any, int, bool], list[Any]]] = {}


def _fast_message(allowed: tuple[type[Message], ...]) -> Callable[[Any, int], Message]:
    """Decoder of a nested message whose tag is one of ``allowed``'s; ``depth`` is its own."""
    tags = frozenset(c.TAG for c in allowed)

    def dec(v: Any, depth: int) -> Message:
        if type(v) is not list or not v:
            raise _SLOW
        tag = v[0]
        if type(tag) is not int or tag not in tags:
            raise _SLOW
        return _FAST[tag](v, depth)

    return dec


def _fast_enc_message(allowed: tuple[type[Message], ...]) -> Callable[[Any, int, bool], Any]:
    """Encoder of a nested message of one of the ``allowed`` classes; ``depth`` is its own."""

    def enc(v: Any, depth: int, check: bool) -> Any:
        if not isinstance(v, allowed):
            raise _SLOW
        return _FAST_ENC[v.TAG](v, depth, check)

    return enc


def _fast_field(
    tp: Any, src: str, depth: str, ns: dict[str, Any], out: list[str], encode: bool
) -> None:
    """Append lines that check ``src`` (a field value of type ``tp``) as the checked path does
    and rebind it to its decoded value (or, ``encode``, its msgpack value); ``depth`` is the
    owning message's depth expression."""
    meta: tuple[Any, ...] = ()
    if typing.get_origin(tp) is typing.Annotated:
        meta = tp.__metadata__
        tp = typing.get_args(tp)[0]
    origin = typing.get_origin(tp)
    check = ", check" if encode else ""
    name = f"_f{len(ns)}"
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner: list[str] = []
        if all(isinstance(a, type) and issubclass(a, Message) for a in args):
            ns[name] = (_fast_enc_message if encode else _fast_message)(tuple(args))
            inner.append(f"{src} = {name}({src}, {depth} + 1{check})")
        else:
            one = typing.Annotated[(args[0], *meta)] if meta else args[0]
            _fast_field(one, src, depth, ns, inner, encode)
        if len(args) != len(typing.get_args(tp)):  # None allowed
            out.append(f"if {src} is not None:")
            out.extend("    " + line for line in inner)
        else:
            out.extend(inner)
    elif isinstance(tp, type) and issubclass(tp, Message):
        ns[name] = (_fast_enc_message if encode else _fast_message)((tp,))
        out.append(f"{src} = {name}({src}, {depth} + 1{check})")
    elif origin is tuple:
        limit = next(m.n for m in meta if isinstance(m, MaxItems))
        ns[name] = _fast_item(typing.get_args(tp)[0], encode)
        items = f"{name}(_e, {depth} + 1{check}) for _e in {src}"
        kind = f"isinstance({src}, tuple | list)" if encode else f"type({src}) is list"
        out.append(f"if not {kind} or len({src}) > {limit}: raise _SLOW")
        out.append(f"{src} = [{items}]" if encode else f"{src} = tuple([{items}])")
    elif isinstance(tp, type) and issubclass(tp, enum.IntEnum):
        if encode:
            ns[name] = tp
            out.append(f"if not isinstance({src}, {name}): raise _SLOW")
            out.append(f"{src} = int({src})")
        else:
            ns[name] = dict(tp._value2member_map_)
            out.append(f"if type({src}) is not int: raise _SLOW")
            out.append(f"{src} = {name}[{src}]")  # KeyError: not a member -> the checked path
    elif tp is bool:  # the scalars: one check both ways, as the checked path's converters
        out.append(f"if type({src}) is not bool: raise _SLOW")
    elif tp is int:
        rng = next((m for m in meta if isinstance(m, Range)), Range(0, UINT64_MAX))
        out.append(f"if type({src}) is not int or not {rng.lo} <= {src} <= {rng.hi}: raise _SLOW")
    elif tp is bytes:
        size = next((m.n for m in meta if isinstance(m, Size)), None)
        maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), MAX_BIN_LEN)
        cond = f"type({src}) is not bytes or len({src}) > {maxlen}"
        if size is not None:
            cond += f" or len({src}) != {size}"
        out.append(f"if {cond}: raise _SLOW")
    elif tp is str:
        maxlen = next((m.n for m in meta if isinstance(m, MaxLen)), 256)
        out.append(f"if type({src}) is not str or len({src}) > {maxlen}: raise _SLOW")
    else:
        raise TypeError(f"unsupported field type {tp!r}")  # the checked path refused it first


def _compile(fn: str, params: str, lines: list[str], ns: dict[str, Any]) -> Any:
    """The function ``fn(params)`` whose body is ``lines`` (generated here from field types)."""
    body = "\n".join("    " + line for line in lines)
    exec(f"def {fn}({params}):\n{body}\n", ns)
    return ns[fn]


def _fast_item(tp: Any, encode: bool) -> Callable[..., Any]:
    """Converter of one item of a ``tuple[T, ...]`` field (``depth`` as the checked path's)."""
    ns: dict[str, Any] = {"_SLOW": _SLOW}
    lines: list[str] = []
    _fast_field(tp, "v", "depth", ns, lines, encode)
    params = "v, depth, check" if encode else "v, depth"
    return typing.cast(Callable[..., Any], _compile("item", params, [*lines, "return v"], ns))


def _construct(cls: type[Message], variables: list[str], ns: dict[str, Any]) -> list[str]:
    """Lines that bind ``obj`` to a ``cls`` of the checked field values ``variables``: for a
    slotted class, its fields set straight through their descriptors (see
    :func:`_slot_setters`; not even the call to the generated ``__init__``), otherwise the
    constructor."""
    setters = _slot_setters(cls, "obj", variables, ns)
    if setters is None:
        return [f"obj = _cls({', '.join(variables)})"]
    ns["_new"] = object.__new__
    return ["obj = _new(_cls)", *setters]


def _fast_paths(cls: type[Message], hints: dict[str, Any]) -> None:
    """Generate ``cls``'s decoder (from its msgpack array, tag already checked) and encoder."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    has_check = cls.check is not Message.check
    variables = [f"f{i}" for i in range(1, len(names) + 1)]
    ns: dict[str, Any] = {"_SLOW": _SLOW, "_cls": cls, "_MAX_DEPTH": MAX_DEPTH}
    lines = [f"if depth > _MAX_DEPTH or len(v) != {len(names) + 1}: raise _SLOW"]
    for i, (name, var) in enumerate(zip(names, variables, strict=True), 1):
        lines.append(f"{var} = v[{i}]")
        _fast_field(hints[name], var, "depth", ns, lines, encode=False)
    lines += _construct(cls, variables, ns)
    lines += ["obj.check()"] if has_check else []
    _FAST[cls.TAG] = _compile("dec", "v, depth", [*lines, "return obj"], ns)

    ns = {"_SLOW": _SLOW, "_MAX_DEPTH": MAX_DEPTH}
    lines = ["if depth > _MAX_DEPTH: raise _SLOW"]
    for name, var in zip(names, variables, strict=True):
        lines.append(f"{var} = obj.{name}")
        _fast_field(hints[name], var, "depth", ns, lines, encode=True)
    lines += ["if check: obj.check()"] if has_check else []
    lines.append(f"return [{cls.TAG}, {', '.join(variables)}]")
    _FAST_ENC[cls.TAG] = _compile("enc", "obj, depth, check", lines, ns)


def _kind(v: Any) -> str:
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


def _encode_value(obj: Message, path: str | None, depth: int, check: bool = True) -> list[Any]:
    if depth > MAX_DEPTH:
        raise CodecError(f"{path}: nesting deeper than {MAX_DEPTH}")
    if _PENDING:
        _compile_pending()
    out: list[Any] = [obj.TAG]
    if path is None:
        out += [enc(getattr(obj, name), None, depth, check) for name, _dec, enc in obj._FIELDS]
    else:
        for name, _dec, enc in obj._FIELDS:
            out.append(enc(getattr(obj, name), f"{path}.{name}", depth, check))
    if check:
        _run_check(obj)
    return out


def _run_check(obj: Message) -> None:
    try:
        obj.check()
    except InvalidMessage:
        raise
    except (ValueError, TypeError) as exc:  # a check written with a plain error
        raise InvalidMessage(f"{type(obj).__name__}: {exc}") from exc


def _decode_value(v: Any, path: str | None, depth: int) -> Message:
    if depth > MAX_DEPTH:
        raise CodecError(f"{path}: nesting deeper than {MAX_DEPTH}")
    if not isinstance(v, list) or not v:
        raise CodecError(f"{path}: expected a tagged array, got {_kind(v)}")
    tag = v[0]
    if type(tag) is not int or tag not in _REGISTRY:
        raise CodecError(f"{path}: unknown type tag {tag!r}")
    cls = _REGISTRY[tag]
    if _PENDING:
        _compile_pending()
    fields = cls._FIELDS
    if len(v) != len(fields) + 1:
        raise CodecError(f"{path}: {cls.__name__} has {len(fields)} fields, got {len(v) - 1}")
    if path is None:
        values = [dec(raw, None, depth) for (_n, dec, _e), raw in zip(fields, v[1:], strict=True)]
        obj = cls(*values)
    else:
        kwargs = {}
        for (name, dec, _enc), raw in zip(fields, v[1:], strict=True):
            kwargs[name] = dec(raw, f"{path}.{name}" if path else f"{cls.__name__}.{name}", depth)
        obj = cls(**kwargs)
    _run_check(obj)
    return obj


_PACKERS = threading.local()


def _pack(tree: Any) -> bytes:
    """``msgpack.packb(tree, use_bin_type=True, datetime=False)`` with this thread's reusable
    packer: ``packb`` builds a new packer per call, half the cost of packing a small message.
    (A packer resets its buffer when a pack fails, so one failure never leaks into the next.)
    """
    packer = getattr(_PACKERS, "packer", None)
    if packer is None:
        packer = _PACKERS.packer = msgpack.Packer(use_bin_type=True, datetime=False)
    data: bytes = packer.pack(tree)
    return data


def encode(obj: Message, *, check: bool = True) -> bytes:
    """Encode a message canonically; refuses values that do not fit the declared field types.

    ``check=False`` skips the semantic self-checks (types are still enforced): for re-encoding
    messages that were decoded (and so checked) or built from checked parts, on hot paths.
    """
    if not isinstance(obj, Message):
        raise CodecError(f"cannot encode {_kind(obj)}: not a registered message")
    return _pack(_encode_tree(obj, check))


def _encode_tree(obj: Message, check: bool) -> list[Any]:
    """The msgpack tree of ``obj``. The first pass builds no field paths (they cost more than
    the conversion itself); only a failure is repeated with them, for its message."""
    fast = _FAST_ENC.get(obj.TAG)
    if fast is not None:
        try:
            return fast(obj, 0, check)
        except Exception:  # anything it does not take: the checked path decides
            pass
    try:
        return _encode_value(obj, None, 0, check)
    except CodecError:
        _encode_value(obj, type(obj).__name__, 0, check)
        raise


def decode(
    data: bytes,
    expected: type[M] | None = None,
    *,
    max_bytes: int = MAX_MESSAGE_BYTES,
    canonical: bool = True,
) -> M:
    """Decode untrusted bytes into a message; raises only :class:`CodecError`.

    ``expected`` (a message class or None for any) is checked; ``max_bytes`` bounds the input.
    ``canonical=False`` skips only the check that ``data`` is the shortest encoding (a re-pack
    of the whole tree): for bytes this node wrote itself with :func:`encode` and reads back
    from its own store, canonical by construction. Every field is still checked.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes to decode, got {_kind(data)}")
    data = bytes(data)
    if len(data) > max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    if not data:
        raise CodecError("empty input")
    try:
        if len(data) <= _SMALL_INPUT:
            # Every length limit below would be len(data): msgpack's own default for unpackb,
            # as are raw=False, use_list and strict_map_key (parsing keywords costs per call).
            raw = msgpack.unpackb(data, max_map_len=0, max_ext_len=0)
        else:
            raw = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_bin_len=min(MAX_BIN_LEN, len(data)),
                max_str_len=min(MAX_STR_LEN, len(data)),
                max_array_len=min(MAX_ARRAY_LEN, len(data)),
                max_map_len=0,
                max_ext_len=0,
            )
    except UnicodeDecodeError as exc:
        raise CodecError(f"invalid UTF-8 in a string at byte {exc.start}") from None
    except msgpack.ExtraData:
        raise CodecError("trailing bytes after the message") from None
    except (ValueError, msgpack.UnpackException, TypeError, RecursionError) as exc:
        raise CodecError(f"malformed msgpack: {exc}") from None
    name = expected.__name__ if expected is not None else ""
    obj: Message | None = None
    if type(raw) is list and raw and type(raw[0]) is int:
        fast = _FAST.get(raw[0])
        if fast is not None:
            try:
                obj = fast(raw, 0)
            except Exception:  # anything it does not accept: the checked path decides
                obj = None
    if obj is None:
        try:
            obj = _decode_value(raw, None, 0)  # no field paths on the way (see _encode_tree)
        except CodecError:
            _decode_value(raw, name, 0)  # the same failure again, its message naming the field
            raise
    if expected is not None and not isinstance(obj, expected):
        raise CodecError(f"expected {expected.__name__}, got {type(obj).__name__}")
    # The decoded tree re-packs to the input only if the input used msgpack's shortest forms;
    # the typed message maps one-to-one onto that tree, so this is the canonicality check.
    if canonical and _pack(raw) != data:
        raise CodecError(f"non-canonical encoding of {type(obj).__name__}")
    return typing.cast(M, obj)


def registered() -> dict[int, type[Message]]:
    """The registered message classes by tag (for tests and tooling)."""
    if _PENDING:
        _compile_pending()
    return dict(_REGISTRY)


def signing_payload(obj: Message, omit: tuple[str, ...] = ("signature",)) -> bytes:
    """Canonical bytes of ``obj`` with the fields ``omit`` left out: what a signature covers.

    The message's own signature cannot be part of what it signs, so signed messages are encoded
    as ``[tag, every other field in order]``. A message may also leave out a bulky field that
    another signed field already commits to (a pre-prepare signs the block hash, not the block).
    """
    if _PENDING:
        _compile_pending()
    names = [name for name, _d, _e in obj._FIELDS]
    for name in omit:
        if name not in names:
            raise CodecError(f"{type(obj).__name__} has no field {name!r}")
    full = _encode_tree(obj, False)
    for i in sorted((names.index(n) for n in omit), reverse=True):
        del full[1 + i]
    return _pack(full)
