"""The field codecs of the bus: how each annotated field type travels, checked both ways.

Strategy: one small frozen ``Field`` per kind of annotation (``IntField``, ``StrField``,
``TupleField``, ``RecordField``, ...). ``encode`` turns a Python value into a msgpack-ready value
and ``decode`` turns an unpacked value back, each checking type and bounds; ``describe`` is the
field's line in the rendered schema (``tests/vectors/bus_schema.snapshot``). ``shared.bus.codec``
compiles every message's annotations into these and runs them; nothing here knows a message.

Rules:
- A failed check raises ``FieldError`` with a reason from ``codec.REASONS`` and a detail; the
  error's ``path`` grows (``[3]``, ``.peers``) as it climbs out of nested values, so the codec
  can name the class and field.
- ``type()`` rather than ``isinstance()``: ``bool`` is not an ``int``, an ``IntEnum`` is not an
  ``int``, an ``int`` is not a ``float``; floats must be finite.
- A reason code that is no member of its enum decodes as the field's ``fallback`` (its
  ``UNKNOWN``); encoding takes members only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

from torviz.shared.types import InfoHash, PeerAddress, PeerId

__all__ = [
    "BoolField",
    "BytesField",
    "EnumField",
    "Field",
    "FieldError",
    "FloatField",
    "Id20Field",
    "IntField",
    "OptionalField",
    "PeerAddressField",
    "RecordField",
    "StrField",
    "TupleField",
]


class FieldError(Exception):
    """A field check failed; ``path`` grows as the error climbs out of nested values."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.path: list[str] = []


def _type_name(value: object) -> str:
    return type(value).__name__


def _expect(value: object, kind: type, name: str) -> None:
    # type() rather than isinstance(): bool must not pass as int, nor IntEnum as int.
    if type(value) is not kind:
        raise FieldError("wrong_type", f"expected {name}, got {_type_name(value)}")


class Field:
    """How one annotated type travels: ``encode`` to a msgpack-ready value, ``decode`` back."""

    __slots__ = ()

    def encode(self, value: Any) -> Any:
        raise NotImplementedError

    def decode(self, wire: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class IntField(Field):
    lo: int
    hi: int

    def encode(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FieldError("wrong_type", f"expected int, got {_type_name(value)}")
        return self.decode(int(value))

    def decode(self, wire: Any) -> Any:
        _expect(wire, int, "int")
        if not self.lo <= wire <= self.hi:
            raise FieldError("out_of_range", f"{wire} is out of range {self.lo}..{self.hi}")
        return wire

    def describe(self) -> str:
        return f"int[{self.lo}..{self.hi}]"


@dataclass(frozen=True, slots=True)
class FloatField(Field):
    lo: float
    hi: float

    def encode(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise FieldError("wrong_type", f"expected float, got {_type_name(value)}")
        return self.decode(float(value))

    def decode(self, wire: Any) -> Any:
        _expect(wire, float, "float")
        if not math.isfinite(wire):
            raise FieldError("bad_value", f"{wire} is not a finite number")
        if not self.lo <= wire <= self.hi:
            raise FieldError("out_of_range", f"{wire} is out of range {self.lo}..{self.hi}")
        return wire

    def describe(self) -> str:
        return f"float[{self.lo!r}..{self.hi!r}]"


@dataclass(frozen=True, slots=True)
class BoolField(Field):
    def encode(self, value: Any) -> Any:
        return self.decode(value)

    def decode(self, wire: Any) -> Any:
        _expect(wire, bool, "bool")
        return wire

    def describe(self) -> str:
        return "bool"


def _check_size(length: int, lo: int, hi: int, what: str) -> None:
    if not lo <= length <= hi:
        raise FieldError("bad_length", f"{what} of length {length} is outside {lo}..{hi}")


@dataclass(frozen=True, slots=True)
class StrField(Field):
    lo: int
    hi: int

    def encode(self, value: Any) -> Any:
        return self.decode(value)

    def decode(self, wire: Any) -> Any:
        _expect(wire, str, "str")
        _check_size(len(wire), self.lo, self.hi, "str")
        return wire

    def describe(self) -> str:
        return f"str[{self.lo}..{self.hi}]"


@dataclass(frozen=True, slots=True)
class BytesField(Field):
    lo: int
    hi: int

    def encode(self, value: Any) -> Any:
        return self.decode(value)

    def decode(self, wire: Any) -> Any:
        _expect(wire, bytes, "bytes")
        _check_size(len(wire), self.lo, self.hi, "bytes")
        return wire

    def describe(self) -> str:
        return f"bytes[{self.lo}..{self.hi}]"


@dataclass(frozen=True, slots=True)
class Id20Field(Field):
    """``InfoHash`` or ``PeerId``: a 20-byte bin on the wire."""

    cls: type[InfoHash] | type[PeerId]

    def encode(self, value: Any) -> Any:
        _expect(value, self.cls, self.cls.__name__)
        return value.raw

    def decode(self, wire: Any) -> Any:
        _expect(wire, bytes, "bytes")
        _check_size(len(wire), 20, 20, "info hash" if self.cls is InfoHash else "peer id")
        return self.cls(wire)

    def describe(self) -> str:
        return f"{self.cls.__name__}(bytes[20])"


@dataclass(frozen=True, slots=True)
class PeerAddressField(Field):
    def encode(self, value: Any) -> Any:
        _expect(value, PeerAddress, "PeerAddress")
        return [value.host, value.port]

    def decode(self, wire: Any) -> Any:
        _expect(wire, list, "[host, port]")
        _check_size(len(wire), 2, 2, "address")
        host, port = wire
        _expect(host, str, "str host")
        _check_size(len(host), 2, 64, "host")
        _expect(port, int, "int port")
        try:
            return PeerAddress(host, port)
        except ValueError as exc:
            raise FieldError("bad_value", str(exc)) from None

    def describe(self) -> str:
        return "PeerAddress([str host, int port])"


@dataclass(frozen=True, slots=True)
class EnumField(Field):
    enum: type[Enum]
    fallback: Enum | None = None
    """What a value that is no member decodes as (a reason code's ``UNKNOWN``); None: refused."""

    def encode(self, value: Any) -> Any:
        if type(value) is not self.enum:
            raise FieldError(
                "wrong_type", f"expected {self.enum.__name__}, got {_type_name(value)}"
            )
        return value.value

    def decode(self, wire: Any) -> Any:
        _expect(wire, int if issubclass(self.enum, IntEnum) else str, self.enum.__name__)
        try:
            return self.enum(wire)
        except ValueError:
            if self.fallback is not None:
                return self.fallback
            raise FieldError("bad_value", f"{wire!r} is not a {self.enum.__name__}") from None

    def describe(self) -> str:
        return self.enum.__name__


@dataclass(frozen=True, slots=True)
class OptionalField(Field):
    inner: Field

    def encode(self, value: Any) -> Any:
        return None if value is None else self.inner.encode(value)

    def decode(self, wire: Any) -> Any:
        return None if wire is None else self.inner.decode(wire)

    def describe(self) -> str:
        return f"{self.inner.describe()} | None"


@dataclass(frozen=True, slots=True)
class TupleField(Field):
    inner: Field
    lo: int
    hi: int

    def encode(self, value: Any) -> Any:
        if not isinstance(value, tuple | list):
            raise FieldError("wrong_type", f"expected tuple, got {_type_name(value)}")
        _check_size(len(value), self.lo, self.hi, "tuple")
        return _each(self.inner.encode, value)

    def decode(self, wire: Any) -> Any:
        _expect(wire, list, "array")
        _check_size(len(wire), self.lo, self.hi, "array")
        return tuple(_each(self.inner.decode, wire))

    def describe(self) -> str:
        return f"tuple[{self.inner.describe()}, {self.lo}..{self.hi}]"


def _each(convert: Any, items: Sequence[Any]) -> list[Any]:
    out = []
    for index, item in enumerate(items):
        try:
            out.append(convert(item))
        except FieldError as exc:
            exc.path.append(f"[{index}]")
            raise
    return out


@dataclass(frozen=True, slots=True)
class RecordField(Field):
    """A nested frozen dataclass, or (``tag`` set) a whole message: a positional array."""

    cls: type
    fields: tuple[tuple[str, Field], ...]

    def encode(self, value: Any) -> Any:
        _expect(value, self.cls, self.cls.__name__)
        out = []
        for name, field in self.fields:
            try:
                out.append(field.encode(getattr(value, name)))
            except FieldError as exc:
                exc.path.append(f".{name}")
                raise
        return out

    def decode(self, wire: Any) -> Any:
        _expect(wire, list, "array")
        return self.decode_values(wire)

    def decode_values(self, wire: Sequence[Any]) -> Any:
        if len(wire) != len(self.fields):
            raise FieldError(
                "wrong_field_count", f"expected {len(self.fields)} fields, got {len(wire)}"
            )
        values = []
        for (name, field), item in zip(self.fields, wire, strict=True):
            try:
                values.append(field.decode(item))
            except FieldError as exc:
                exc.path.append(f".{name}")
                raise
        return self.cls(*values)

    def describe(self) -> str:
        return self.cls.__name__
