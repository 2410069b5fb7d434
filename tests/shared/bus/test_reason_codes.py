"""Reason codes and bounds of the bus vocabulary: enums on the same wire bytes as the old strings,
unknown codes from the wire, and the helpers senders size their messages with."""

from __future__ import annotations

import dataclasses
from enum import StrEnum
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from torviz.shared.bus import (
    MAX_BATCH,
    MAX_NAME,
    MAX_TEXT,
    DisconnectPeer,
    DisconnectReason,
    Message,
    PeerConnectFailed,
    PeerDisconnected,
    PeersDiscovered,
    PeerSource,
    PieceStored,
    ReasonCode,
    Rejected,
    RejectReason,
    StoreRefusal,
    batches,
    clip_name,
    clip_text,
    codec,
    decode_message,
    encode_message,
    raise_if_rejected,
    render_schema,
)
from torviz.shared.bus.codec import EnumField, message_fields
from torviz.shared.errors import BusError
from torviz.shared.types import InfoHash, PeerAddress

IH = InfoHash(b"\x11" * 20)
_IH_WIRE = "c4 14" + "11" * 20


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def _str(text: str) -> str:
    """A msgpack fixstr (under 32 bytes), as hex."""
    raw = text.encode()
    assert len(raw) < 32
    return f"{0xA0 | len(raw):02x} {raw.hex()}"


# The bytes each message had when its reason was a plain ``Name`` string (captured from the
# codec before the enums): the enums must not change one of them.
OLD_BYTES: list[tuple[Message, bytes]] = [
    (Rejected(RejectReason.HELLO_FIRST, "x"), _hex("93 03 ab 68656c6c6f5f6669727374 a1 78")),
    (
        DisconnectPeer(IH, "pa1/1", DisconnectReason.SENT_CORRUPT_DATA),
        _hex(f"94 21 {_IH_WIRE} a5 7061312f31 b1 73656e745f636f72727570745f64617461"),
    ),
    (
        PeerDisconnected(IH, "pa1/1", DisconnectReason.PEER_CLOSED, "x"),
        _hex(f"95 2b {_IH_WIRE} a5 7061312f31 ab 706565725f636c6f736564 a1 78"),
    ),
    (
        PeerConnectFailed(
            IH, PeerAddress("127.0.0.1", 6881), DisconnectReason.CONNECTION_REFUSED, "x"
        ),
        _hex(
            f"95 2c {_IH_WIRE} 92 a9 3132372e302e302e31 cd 1ae1 "
            "b2 636f6e6e656374696f6e5f72656675736564 a1 78"
        ),
    ),
    (PieceStored(IH, 3, StoreRefusal.NONE), _hex(f"94 40 {_IH_WIRE} 03 a0")),
    (
        PieceStored(IH, 3, StoreRefusal.TORRENT_CHECKING),
        _hex(f"94 40 {_IH_WIRE} 03 b0 746f7272656e745f636865636b696e67"),
    ),
]


@pytest.mark.parametrize(("message", "wire"), OLD_BYTES, ids=lambda v: type(v).__name__)
def test_a_reason_enum_travels_as_the_string_it_was(message: Message, wire: bytes) -> None:
    assert encode_message(message) == wire
    decoded = decode_message(wire)
    assert decoded == message
    reason = decoded.reason  # type: ignore[attr-defined]
    assert type(reason) is type(message.reason)  # type: ignore[attr-defined]


def _reason_fields() -> list[tuple[type[Message], int, type[ReasonCode]]]:
    """Every message field whose type is a reason code: (class, field position, enum)."""
    found: list[tuple[type[Message], int, type[ReasonCode]]] = []
    for cls in (Rejected, DisconnectPeer, PeerDisconnected, PeerConnectFailed, PieceStored):
        for position, (_, field) in enumerate(message_fields(cls)):
            if isinstance(field, EnumField) and issubclass(field.enum, ReasonCode):
                found.append((cls, position, field.enum))
    return found


def test_these_are_the_reason_code_fields() -> None:
    assert [(cls.__name__, enum) for cls, _, enum in _reason_fields()] == [
        ("Rejected", RejectReason),
        ("DisconnectPeer", DisconnectReason),
        ("PeerDisconnected", DisconnectReason),
        ("PeerConnectFailed", DisconnectReason),
        ("PieceStored", StoreRefusal),
    ]


def _wire_with(message: Message, position: int, value: Any) -> bytes:
    """``message``'s header with the field at ``position`` replaced by ``value``."""
    array = msgpack.unpackb(encode_message(message), raw=False)
    array[1 + position] = value
    data: bytes = msgpack.packb(array, use_bin_type=True)
    return data


_SAMPLES: dict[type[Message], Message] = {type(m): m for m, _ in OLD_BYTES}


@pytest.mark.parametrize(
    ("cls", "position", "enum"), _reason_fields(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_an_unknown_reason_from_the_wire_decodes_as_unknown(
    cls: type[Message], position: int, enum: type[ReasonCode]
) -> None:
    """The decision: a reason code qualifies its message, so a code this build does not know
    (another version's, or a hostile peer's) keeps the message and reads as ``UNKNOWN``."""
    sample = _SAMPLES[cls]
    name = message_fields(cls)[position][0]
    decoded = decode_message(_wire_with(sample, position, "no_such_reason"))
    unknown = enum["UNKNOWN"]
    assert decoded == dataclasses.replace(sample, **{name: unknown})  # type: ignore[type-var]
    assert getattr(decoded, name) is unknown


@pytest.mark.parametrize(
    ("cls", "position", "enum"), _reason_fields(), ids=lambda v: getattr(v, "__name__", str(v))
)
def test_a_reason_that_is_not_a_string_is_refused(
    cls: type[Message], position: int, enum: type[ReasonCode]
) -> None:
    with pytest.raises(BusError) as caught:
        decode_message(_wire_with(_SAMPLES[cls], position, 7))
    assert caught.value.reason == "wrong_type"
    assert f"{cls.__name__}.{message_fields(cls)[position][0]}: expected {enum.__name__}" in str(
        caught.value
    )


def test_a_rejection_of_another_version_still_stops_the_caller_with_its_message() -> None:
    wire = _hex("93 03 " + _str("future_reason") + " " + _str("upgrade"))
    answer = decode_message(wire)
    assert answer == Rejected(RejectReason.UNKNOWN, "upgrade")
    with pytest.raises(BusError, match="upgrade") as caught:
        raise_if_rejected(answer)
    assert caught.value.reason == "unknown"


def test_a_state_enum_still_refuses_a_value_that_is_no_member() -> None:
    """The other decision: a closed set that is the message's content (a peer source, a
    tracker state) refuses an unknown value, as before."""
    sample = PeersDiscovered(IH, (), PeerSource.TRACKER)
    with pytest.raises(BusError) as caught:
        decode_message(_wire_with(sample, 2, "carrier_pigeon"))
    assert caught.value.reason == "bad_value"
    assert "'carrier_pigeon' is not a PeerSource" in str(caught.value)


def test_a_plain_string_is_not_encoded_for_an_enum_field() -> None:
    with pytest.raises(BusError) as caught:
        encode_message(Rejected("hello_first", "x"))  # type: ignore[arg-type]
    assert caught.value.reason == "wrong_type"
    assert "Rejected.reason: expected RejectReason, got str" in str(caught.value)


@pytest.mark.parametrize("enum", [RejectReason, DisconnectReason, StoreRefusal])
def test_parse_maps_a_code_made_inside_a_service(enum: type[ReasonCode]) -> None:
    for member in enum:
        assert enum.parse(member.value) is member
    assert enum.parse("a_code_nobody_listed") is enum["UNKNOWN"]


def test_the_snapshot_shows_which_enums_read_unknown_values_as_unknown() -> None:
    lines = {line.split()[1]: line for line in render_schema().splitlines() if line[:5] == "enum "}
    for name in ("RejectReason", "DisconnectReason", "StoreRefusal"):
        assert lines[name].endswith("'unknown' else 'unknown'")
    for name in ("PeerSource", "ServiceKind", "TorrentState", "TrackerState"):
        assert " else " not in lines[name]


def test_a_reason_code_without_unknown_is_refused_by_the_codec() -> None:
    class Orphan(ReasonCode):
        ONLY = "only"

    with pytest.raises(TypeError, match="Orphan has no UNKNOWN member"):
        codec._compile(Orphan, "X.reason")
    assert isinstance(codec._compile(StoreRefusal, "X.reason"), EnumField)
    assert not issubclass(StrEnum, ReasonCode)


# --- bounds and helpers -----------------------------------------------------------------------


def test_clipping_fits_the_schema_bounds() -> None:
    assert clip_name("n" * (MAX_NAME + 9)) == "n" * MAX_NAME
    assert clip_text("t" * (MAX_TEXT + 1)) == "t" * MAX_TEXT
    assert clip_name("short") == "short" and clip_text("") == ""
    long = "é" * (MAX_TEXT + 5)  # characters, not bytes
    message = PeerDisconnected(IH, "pa1/1", DisconnectReason.STOPPED, clip_text(long))
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    ("count", "sizes"),
    [(0, []), (1, [1]), (MAX_BATCH, [MAX_BATCH]), (MAX_BATCH + 1, [MAX_BATCH, 1])],
)
def test_batches_split_at_the_schema_bound(count: int, sizes: list[int]) -> None:
    items = list(range(count))
    split = list(batches(items))
    assert [len(b) for b in split] == sizes
    assert [x for b in split for x in b] == items
    assert all(type(b) is tuple for b in split)


def test_a_batch_holds_at_least_one_item() -> None:
    with pytest.raises(ValueError, match="at least one item"):
        list(batches([1, 2], 0))
    assert list(batches("abc", 2)) == [("a", "b"), ("c",)]
