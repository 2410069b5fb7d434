"""msgpack codec and frame envelope for bus messages.

Strategy: at import, every registered message and record is compiled once from its annotations
into a tuple of field codecs (``IntField``, ``TupleField``, ... in ``shared.bus.fields``; this
module re-exports them). A message travels as a msgpack array ``[tag, field1, field2, ...]``
in declaration order: positional, so the header stays small and decoding is one ``unpackb``
plus one check per field. Records nest as arrays,
``InfoHash``/``PeerId`` as 20-byte bins, ``PeerAddress`` as ``[host, port]``, enums as their
value. A message with ``HAS_DATA`` is sent as two ZeroMQ frames ``[header, data]``; the data
frame is handed on as a memoryview, never copied into msgpack.

Rules:
- Every byte from the bus is untrusted (another host may be buggy or compromised). The header is
  bounded before unpacking, ``unpackb`` runs with explicit limits, and each field is checked for
  type and bounds. Failures raise ``BusError`` whose ``reason`` is one of ``REASONS`` and whose
  message names the class and field (``"PeerHave.piece: 3000000 is out of range 0..2097151"``).
- Nothing is allocated on the sender's word. msgpack builds a list of the claimed length as
  soon as it reads an array header, so 5 kB of nested ``array16`` headers used to cost 76 MiB.
  The unpack limits are therefore derived from the schema (the longest array any message can
  hold, the deepest nesting, the longest str in UTF-8 bytes) and from the header itself (an
  array of n items needs at least n more bytes); ``_UNPACK_LIMITS``, which the snapshot shows,
  stays the ceiling above them. A header that could hold an ``array16``/``array32`` header
  (one of the bytes 0xdc/0xdd, and over ``_SCAN_ABOVE`` bytes) is first walked without
  building anything, refusing a claim past the limits (``limit_exceeded``), past the bytes
  left (``truncated``) or nesting deeper than any message (``too_deep``); only then does
  msgpack build it. Below that size the worst case is a few hundred KiB, so the hot small
  messages skip the walk.
- Encoding checks the same rules, so a bug on our side fails where it happens, not on the far
  end of the bus.
- ``bool`` is not an ``int`` and an ``int`` is not a ``float`` on the wire; floats must be
  finite. An enum value must be a member, except that a reason code (a ``ReasonCode``) that is
  no member decodes as its ``UNKNOWN`` (the snapshot shows it: ``else 'unknown'``); encoding
  takes members only.
"""

from __future__ import annotations

import hashlib
import math
import types
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import msgpack  # type: ignore[import-untyped]

from torviz.shared.errors import BusError
from torviz.shared.types import InfoHash, PeerAddress, PeerId

from .fields import (
    BoolField,
    BytesField,
    EnumField,
    Field,
    FieldError,
    FloatField,
    Id20Field,
    IntField,
    OptionalField,
    PeerAddressField,
    RecordField,
    StrField,
    TupleField,
)
from .schema import BUS_PROTOCOL_VERSION
from .schema.records import RECORDS
from .schema.registry import MESSAGES, Message
from .vocabulary import (
    MAX_DATA_BYTES,
    MAX_HEADER_BYTES,
    MAX_METAINFO_BYTES,
    Range,
    ReasonCode,
    Size,
)

__all__ = [
    "REASONS",
    "SCHEMA_DIGEST",
    "BoolField",
    "BytesField",
    "EnumField",
    "Field",
    "FloatField",
    "Id20Field",
    "IntField",
    "OptionalField",
    "PeerAddressField",
    "RecordField",
    "StrField",
    "TupleField",
    "decode_frames",
    "decode_message",
    "encode_frames",
    "encode_message",
    "message_fields",
    "render_schema",
]

REASONS = frozenset(
    {
        "header_too_large",  # header frame longer than MAX_HEADER_BYTES
        "truncated",  # msgpack ended early
        "malformed_msgpack",  # bytes that are not msgpack
        "bad_utf8",  # a msgpack str that is not UTF-8
        "trailing_bytes",  # bytes after the header's one msgpack object
        "too_deep",  # nesting deeper than any message of the schema, or than msgpack's stack
        "limit_exceeded",  # a bin/str/array over the unpack limits, or any map or ext
        "not_a_message",  # the header is not an array starting with an int tag
        "unknown_tag",
        "wrong_field_count",
        "wrong_type",
        "out_of_range",  # a number outside its Range
        "bad_length",  # a str, bytes or tuple outside its Size
        "bad_value",  # not an enum member, not an IP address, not finite
        "wrong_frame_count",
        "missing_data_frame",
        "unexpected_data_frame",
        "data_too_large",
    }
)

_MAX_INT = 2**63 - 1
_UNPACK_LIMITS: dict[str, int] = {
    "max_bin_len": MAX_METAINFO_BYTES,  # the largest bytes field
    "max_str_len": 64 * 1024,
    "max_array_len": 65_536,
    "max_map_len": 0,  # the bus never sends maps
    "max_ext_len": 0,  # nor msgpack extension types
}

Buffer = bytes | bytearray | memoryview


# --- compiling annotations --------------------------------------------------------------------


def _compile(hint: Any, owner: str) -> Field:
    """The field codec of one annotation; ``TypeError`` (at import) for anything unsupported."""
    bound: Range | Size | None = None
    if get_origin(hint) is Annotated:
        hint, *extras = get_args(hint)
        bounds = [e for e in extras if isinstance(e, Range | Size)]
        if len(bounds) != 1:
            raise TypeError(f"{owner}: Annotated needs exactly one Range or Size")
        bound = bounds[0]
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        if len(members) == 1 and len(get_args(hint)) == 2 and bound is None:
            return OptionalField(_compile(members[0], owner))
    elif isinstance(bound, Size):
        if origin is tuple and len(get_args(hint)) == 2 and get_args(hint)[1] is Ellipsis:
            return TupleField(_compile(get_args(hint)[0], owner), bound.lo, bound.hi)
        if hint is str:
            return StrField(bound.lo, bound.hi)
        if hint is bytes:
            return BytesField(bound.lo, bound.hi)
    elif hint is int:
        lo, hi = (bound.lo, bound.hi) if bound is not None else (0, _MAX_INT)
        return IntField(int(lo), int(hi))
    elif hint is float:
        lo, hi = (bound.lo, bound.hi) if bound is not None else (-math.inf, math.inf)
        return FloatField(float(lo), float(hi))
    elif bound is not None:
        pass  # a Range on anything but a number
    elif hint is bool:
        return BoolField()
    elif hint in (InfoHash, PeerId):
        return Id20Field(hint)
    elif hint is PeerAddress:
        return PeerAddressField()
    elif isinstance(hint, type) and issubclass(hint, ReasonCode):
        if "UNKNOWN" not in hint.__members__:
            raise TypeError(f"{owner}: reason code {hint.__name__} has no UNKNOWN member")
        return EnumField(hint, hint["UNKNOWN"])
    elif isinstance(hint, type) and issubclass(hint, IntEnum | StrEnum):
        return EnumField(hint)
    elif hint in RECORDS:
        return _compile_record(hint)
    raise TypeError(f"{owner}: unsupported bus field type {hint!r} with bound {bound!r}")


_compiled: dict[type, RecordField] = {}


def _compile_record(cls: type) -> RecordField:
    """The codec of a message or record class, compiled once."""
    plan = _compiled.get(cls)
    if plan is None:
        if not is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
            raise TypeError(f"{cls.__name__}: a bus message or record is a frozen dataclass")
        hints = get_type_hints(cls, include_extras=True)
        plan = RecordField(
            cls,
            tuple(
                (f.name, _compile(hints[f.name], f"{cls.__name__}.{f.name}")) for f in fields(cls)
            ),
        )
        _compiled[cls] = plan
    return plan


_PLANS: dict[type, RecordField] = {cls: _compile_record(cls) for cls in MESSAGES.values()}


def _depth(field: Field) -> int:
    """How many msgpack arrays deep a value of ``field`` nests (a scalar is 0)."""
    if isinstance(field, OptionalField):
        return _depth(field.inner)
    if isinstance(field, TupleField):
        return 1 + _depth(field.inner)
    if isinstance(field, RecordField):
        return 1 + max((_depth(f) for _, f in field.fields), default=0)
    if isinstance(field, PeerAddressField):
        return 1
    return 0


def _longest_array(field: Field) -> int:
    """The most items any array inside a value of ``field`` may hold."""
    counts = [0]
    for inner in _walk(field):
        if isinstance(inner, TupleField):
            counts.append(inner.hi)
        elif isinstance(inner, RecordField):
            counts.append(len(inner.fields) + 1)  # + 1: a message's array starts with its tag
        elif isinstance(inner, PeerAddressField):
            counts.append(2)
    return max(counts)


def _longest_str(field: Field) -> int:
    """The most UTF-8 bytes any str inside a value of ``field`` may take (4 per character)."""
    counts = [0]
    for inner in _walk(field):
        if isinstance(inner, StrField):
            counts.append(4 * inner.hi)
        elif isinstance(inner, PeerAddressField):
            counts.append(4 * 64)
    return max(counts)


def message_fields(cls: type[Message]) -> tuple[tuple[str, Field], ...]:
    """The compiled ``(name, Field)`` pairs of a message class, in wire order."""
    return _PLANS[cls].fields


# --- messages and frames ----------------------------------------------------------------------


def _bus_error(cls_name: str, exc: FieldError) -> BusError:
    where = "".join(reversed(exc.path)).lstrip(".")
    return BusError(exc.reason, f"{cls_name}.{where}: {exc.detail}")


def encode_message(message: Message) -> bytes:
    """Encode one message as a msgpack header.

    Raises:
        BusError: a field breaks the schema (a bug on the sending side).
    """
    plan = _PLANS.get(type(message))
    if plan is None:
        raise BusError("unknown_tag", f"{type(message).__name__} is not a bus message")
    try:
        values = plan.encode(message)
    except FieldError as exc:
        raise _bus_error(type(message).__name__, exc) from None
    header: bytes = msgpack.packb([message.TAG, *values], use_bin_type=True)
    if len(header) > MAX_HEADER_BYTES:
        raise BusError(
            "header_too_large", f"{type(message).__name__} header is {len(header)} bytes"
        )
    return header


def decode_message(header: Buffer) -> Message:
    """Decode one msgpack header into a message, checking every field.

    Raises:
        BusError: with a ``reason`` from ``REASONS``.
    """
    size = len(header)
    if size > MAX_HEADER_BYTES:
        raise BusError("header_too_large", f"header of {size} bytes is over the limit")
    array_limit = min(_MAX_ARRAY_LEN, size)  # n items take at least n bytes
    if size > _SCAN_ABOVE:
        raw = header if isinstance(header, bytes) else bytes(header)
        if b"\xdc" in raw or b"\xdd" in raw:
            _check_shape(raw)
    try:
        wire = msgpack.unpackb(
            header,
            raw=False,
            use_list=True,
            max_bin_len=_UNPACK_LIMITS["max_bin_len"],
            max_str_len=_MAX_STR_LEN,
            max_array_len=array_limit,
            max_map_len=_UNPACK_LIMITS["max_map_len"],
            max_ext_len=_UNPACK_LIMITS["max_ext_len"],
        )
    except msgpack.ExtraData:
        raise BusError("trailing_bytes", "bytes follow the header's msgpack object") from None
    except msgpack.StackError:
        raise BusError("too_deep", "header nests deeper than msgpack allows") from None
    except msgpack.FormatError:
        raise BusError("malformed_msgpack", "header is not msgpack") from None
    except UnicodeDecodeError:
        raise BusError("bad_utf8", "a msgpack str in the header is not UTF-8") from None
    except ValueError as exc:
        text = str(exc)
        if "exceeds max_array_len" in text:
            try:
                _check_shape(bytes(header))  # names it: too many items, or too few bytes
            except BusError as refused:
                raise refused from None
        if "exceeds max_" in text:
            raise BusError("limit_exceeded", f"header breaks an unpack limit: {text}") from None
        if "incomplete" in text:
            raise BusError("truncated", "header ends in the middle of a value") from None
        raise BusError("malformed_msgpack", f"header is not msgpack: {text}") from None
    if type(wire) is not list or not wire or type(wire[0]) is not int:
        raise BusError("not_a_message", "header is not an array starting with an int tag")
    cls = MESSAGES.get(wire[0])
    if cls is None:
        raise BusError("unknown_tag", f"no bus message has tag {wire[0]}")
    try:
        message: Message = _PLANS[cls].decode_values(wire[1:])
    except FieldError as exc:
        if not exc.path:  # the message itself: name it without a field
            raise BusError(exc.reason, f"{cls.__name__}: {exc.detail}") from None
        raise _bus_error(cls.__name__, exc) from None
    return message


# Bytes that follow the first byte of each msgpack type with a fixed-size body (nil, bools,
# numbers, fixext); the types with a length or a count are handled in ``_check_shape``.
_FIXED_BODY: dict[int, int] = {
    0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
    0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8, 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17,
}  # fmt: skip
# First byte -> (bytes of the length that follows, bytes between the length and the body).
_SIZED_BODY: dict[int, tuple[int, int]] = {
    0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0),  # bin
    0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1),  # ext: a type byte before the body
    0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0),  # str
}  # fmt: skip


def _check_shape(data: bytes) -> None:
    """Walk the header's msgpack structure without building it; refuse hostile claims.

    Only array and map claims and the nesting are judged here. Anything else that is wrong
    (a reserved byte, truncation inside a scalar, a map or ext at all) stops the walk quietly:
    ``unpackb`` then names it, having allocated nothing this walk did not already allow.

    Raises:
        BusError: ``limit_exceeded`` (an array longer than any of the schema, a map over
            ``max_map_len``), ``truncated`` (more items claimed than bytes left) or
            ``too_deep`` (nested deeper than any message of the schema).
    """
    end = len(data)
    pos = 0
    left = [1]  # items still to read in each open container; the outermost holds the header
    while left:
        if not left[-1]:
            left.pop()
            continue
        left[-1] -= 1
        if pos >= end:
            return
        first = data[pos]
        pos += 1
        if first < 0x80 or first >= 0xE0:  # positive and negative fixint
            continue
        if first >= 0xA0:
            if first < 0xC0:  # fixstr
                pos += first & 0x1F
                continue
            fixed = _FIXED_BODY.get(first)
            if fixed is not None:
                pos += fixed
                continue
            sized = _SIZED_BODY.get(first)
            if sized is not None:
                width, extra = sized
                pos += width + extra + int.from_bytes(data[pos : pos + width], "big")
                continue
            if first in (0xDC, 0xDE):
                width = 2
            elif first in (0xDD, 0xDF):
                width = 4
            else:
                return  # 0xc1, never used: msgpack names it
            if pos + width > end:
                return
            count = int.from_bytes(data[pos : pos + width], "big")
            pos += width
            is_map = first >= 0xDE
        else:
            count = first & 0x0F
            is_map = first < 0x90
        if is_map:
            if count > _UNPACK_LIMITS["max_map_len"]:
                raise BusError(
                    "limit_exceeded",
                    f"header breaks an unpack limit: {count} exceeds "
                    f"max_map_len({_UNPACK_LIMITS['max_map_len']})",
                )
            count *= 2
        elif count > _MAX_ARRAY_LEN:
            raise BusError(
                "limit_exceeded",
                f"header breaks an unpack limit: {count} exceeds max_array_len({_MAX_ARRAY_LEN})",
            )
        if count > end - pos:
            raise BusError(
                "truncated",
                f"header ends in the middle of a value: {count} items claimed, "
                f"{end - pos} bytes left",
            )
        if len(left) > _MAX_DEPTH:
            raise BusError(
                "too_deep", f"header nests deeper than any message ({_MAX_DEPTH} arrays)"
            )
        left.append(count)


def encode_frames(message: Message, data: Buffer | None = None) -> list[bytes | memoryview]:
    """The ZeroMQ frames of a message: ``[header]`` or ``[header, data]``.

    Args:
        message: any registered message.
        data: the data frame, required exactly when ``type(message).HAS_DATA``; it is passed
            through (send it with ``copy=False`` and do not reuse the buffer).

    Raises:
        BusError: a schema violation, or a data frame missing, unexpected or too large.
    """
    name = type(message).__name__
    if message.HAS_DATA and data is None:
        raise BusError("missing_data_frame", f"{name} needs a data frame")
    if not message.HAS_DATA and data is not None:
        raise BusError("unexpected_data_frame", f"{name} carries no data frame")
    header = encode_message(message)
    if data is None:
        return [header]
    view = memoryview(data)
    if view.nbytes > MAX_DATA_BYTES:
        raise BusError("data_too_large", f"{name} data frame is {view.nbytes} bytes")
    return [header, view]


def decode_frames(frames: Sequence[Buffer]) -> tuple[Message, memoryview | None]:
    """Decode the frames of one ZeroMQ message (routing identity already removed).

    Returns:
        The message and its data frame as a memoryview (``None`` when it has none).

    Raises:
        BusError: with a ``reason`` from ``REASONS``.
    """
    if not 1 <= len(frames) <= 2:
        raise BusError("wrong_frame_count", f"a bus message has 1 or 2 frames, got {len(frames)}")
    message = decode_message(frames[0])
    name = type(message).__name__
    if len(frames) == 1:
        if message.HAS_DATA:
            raise BusError("missing_data_frame", f"{name} arrived without its data frame")
        return message, None
    if not message.HAS_DATA:
        raise BusError("unexpected_data_frame", f"{name} arrived with a data frame")
    data = memoryview(frames[1])
    if data.nbytes > MAX_DATA_BYTES:
        raise BusError("data_too_large", f"{name} data frame is {data.nbytes} bytes")
    return message, data


# --- the schema as text -----------------------------------------------------------------------


def render_schema() -> str:
    """The whole wire contract as text: what the snapshot test pins and the digest hashes."""
    lines = [f"BUS_PROTOCOL_VERSION {BUS_PROTOCOL_VERSION}"]
    lines.append(f"limits header={MAX_HEADER_BYTES} data={MAX_DATA_BYTES}")
    lines.append("unpack " + " ".join(f"{k}={v}" for k, v in sorted(_UNPACK_LIMITS.items())))
    for tag in sorted(MESSAGES):
        cls = MESSAGES[tag]
        lines.append(f"message {tag} {cls.__name__}{' +data' if cls.HAS_DATA else ''}")
        lines.extend(f"  {n}: {f.describe()}" for n, f in _PLANS[cls].fields)
    for record in RECORDS:
        lines.append(f"record {record.__name__}")
        lines.extend(f"  {n}: {f.describe()}" for n, f in _compile_record(record).fields)
    enums = sorted(
        {
            (f.enum, f.fallback)
            for plan in _all_fields()
            for f in _walk(plan)
            if isinstance(f, EnumField)
        },
        key=lambda pair: pair[0].__name__,
    )
    for enum, fallback in enums:
        values = " ".join(repr(m.value) for m in enum)
        rest = "" if fallback is None else f" else {fallback.value!r}"
        lines.append(f"enum {enum.__name__} {values}{rest}")
    return "\n".join(lines) + "\n"


def _all_fields() -> list[Field]:
    plans = [*_PLANS.values(), *(_compile_record(r) for r in RECORDS)]
    return [f for plan in plans for _, f in plan.fields]


def _walk(field: Field) -> list[Field]:
    if isinstance(field, OptionalField | TupleField):
        return [field, *_walk(field.inner)]
    if isinstance(field, RecordField):
        return [field, *(g for _, f in field.fields for g in _walk(f))]
    return [field]


# The unpack limits the schema implies (see the module comment); every one stays under its
# ceiling in ``_UNPACK_LIMITS``.
_MAX_DEPTH = max(_depth(plan) for plan in _PLANS.values())
_MAX_ARRAY_LEN = min(
    _UNPACK_LIMITS["max_array_len"], max(_longest_array(plan) for plan in _PLANS.values())
)
_MAX_STR_LEN = min(
    _UNPACK_LIMITS["max_str_len"], max(_longest_str(plan) for plan in _PLANS.values())
)
# Up to this many header bytes, unpacking straight away costs at most ~(n / 3) nested array16
# headers of n items each: 256 bytes -> 85 * 256 pointers, under 200 KiB.
_SCAN_ABOVE = 256

SCHEMA_DIGEST = hashlib.sha256(render_schema().encode()).hexdigest()[:16]
"""Carried in ``Hello``: two builds with equal version but different schemas refuse each other."""
