"""The BEP 10 extension handshake: the bencoded dictionary in ``Extended(ext_id=0, ...)``.

Strategy: decode with the lenient bencode decoder under ``NETWORK_LIMITS`` (the frame itself is
already bounded by ``MessageDecoder``), then read each known key defensively. Lenient, because
real clients send dictionaries with unsorted keys and libtorrent, aria2, qBittorrent and
Transmission all keep such a peer; ending the connection over key order would only lose peers.
It stays bounded and unambiguous: the limits, duplicate keys, malformed integers and bytes after
the dictionary are still refused. BEP 10 lets a peer omit any key, so a known key whose value has
the wrong type or range is dropped as if absent rather than killing the connection; only a
payload that is not a bencoded dictionary is an error (``WireError("bad_extension_handshake")``).
Keys torviz does not know are kept in ``extra`` as decoded bencode values and written back by
``encode_extension_handshake``, so a handshake survives a round trip.

Rules:
- ``m`` maps extension names to the message ids the *sender* wants to receive them under;
  BEP 10 reserves id 0 in ``m`` for "disabled", and ids are one byte (1..255 usable).
- Names in ``m`` that are not UTF-8 are dropped (no registered extension has such a name).
- ``v`` is decoded as UTF-8 with replacement: it is only ever displayed.
- ``yourip`` is our address as the peer sees it: 4 or 16 bytes; ``ipv4``/``ipv6`` are the
  sender's own addresses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torviz.shared.bencode import NETWORK_LIMITS, Value, decode_prefix, encode
from torviz.shared.errors import BencodeError, WireError
from torviz.shared.wire.messages import Extended

__all__ = [
    "EXTENSION_HANDSHAKE_ID",
    "ExtensionHandshake",
    "decode_extension_handshake",
    "encode_extension_handshake",
    "extension_handshake_message",
]

EXTENSION_HANDSHAKE_ID = 0
"""The ``Extended.ext_id`` of the extension handshake itself."""

_KNOWN_KEYS = frozenset(
    {b"m", b"v", b"p", b"reqq", b"yourip", b"ipv4", b"ipv6", b"metadata_size", b"upload_only"}
)
_MAX_INT = (1 << 31) - 1  # nothing in this dictionary is meaningful past a signed 32-bit int


@dataclass(frozen=True, slots=True)
class ExtensionHandshake:
    """A BEP 10 extension handshake. ``None`` means the key is absent.

    Attributes:
        m: extension name -> the id the sender receives it under (0 = disabled).
        v: client name and version, for display only.
        p: the sender's TCP listen port (1..65535).
        reqq: how many outstanding requests the sender queues before dropping more.
        yourip: the receiver's IP address as the sender sees it (4 or 16 bytes).
        ipv4: the sender's own IPv4 address (4 bytes).
        ipv6: the sender's own IPv6 address (16 bytes).
        metadata_size: size in bytes of the info dictionary (BEP 9).
        upload_only: the sender is only seeding (BEP 21 / libtorrent extension).
        extra: every other key, as decoded bencode values, kept for re-encoding.
    """

    m: Mapping[str, int] = field(default_factory=dict)
    v: str | None = None
    p: int | None = None
    reqq: int | None = None
    yourip: bytes | None = None
    ipv4: bytes | None = None
    ipv6: bytes | None = None
    metadata_size: int | None = None
    upload_only: bool | None = None
    extra: Mapping[bytes, Value] = field(default_factory=dict)

    def extension_id(self, name: str) -> int | None:
        """The id to send extension ``name`` under, or None if the peer lacks or disabled it."""
        ext_id = self.m.get(name, 0)
        return ext_id or None


def _int_in(value: Value | None, low: int, high: int) -> int | None:
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


def _size_of(value: Value | None) -> int | None:
    """``metadata_size``: a size past ``_MAX_INT`` reads as ``_MAX_INT`` (too large for any cap),
    so a peer claiming one is dropped as such, not mistaken for a peer with no metadata."""
    if isinstance(value, int) and value > _MAX_INT:
        return _MAX_INT
    return _int_in(value, 0, _MAX_INT)


def _bytes_of(value: Value | None, *lengths: int) -> bytes | None:
    if isinstance(value, bytes) and len(value) in lengths:
        return value
    return None


def _extension_map(value: Value | None) -> dict[str, int]:
    result: dict[str, int] = {}
    if not isinstance(value, dict):
        return result
    for raw_name, raw_id in value.items():
        ext_id = _int_in(raw_id, 0, 255)
        if ext_id is None:
            continue
        try:
            result[raw_name.decode("utf-8")] = ext_id
        except UnicodeDecodeError:
            continue
    return result


def decode_extension_handshake(payload: bytes) -> ExtensionHandshake:
    """Decode the payload of ``Extended(0, payload)``.

    Dictionary keys may come in any order (see the module comment).

    Raises:
        WireError: ``bad_extension_handshake`` if the payload is not one bencoded dictionary
            within ``NETWORK_LIMITS`` (duplicate keys and trailing bytes included).
    """
    try:
        value, end = decode_prefix(payload, strict=False, limits=NETWORK_LIMITS)
        if end != len(payload):
            raise BencodeError("trailing_data", "bytes after the end of the value", end)
    except BencodeError as exc:
        raise WireError(
            "bad_extension_handshake", f"extension handshake is not valid bencode: {exc}"
        ) from exc
    if not isinstance(value, dict):
        raise WireError(
            "bad_extension_handshake",
            f"extension handshake is a bencoded {type(value).__name__}, not a dictionary",
        )
    raw_v = value.get(b"v")
    upload_only = _int_in(value.get(b"upload_only"), 0, _MAX_INT)
    return ExtensionHandshake(
        m=_extension_map(value.get(b"m")),
        v=raw_v.decode("utf-8", errors="replace") if isinstance(raw_v, bytes) else None,
        p=_int_in(value.get(b"p"), 1, 65535),
        reqq=_int_in(value.get(b"reqq"), 1, _MAX_INT),
        yourip=_bytes_of(value.get(b"yourip"), 4, 16),
        ipv4=_bytes_of(value.get(b"ipv4"), 4),
        ipv6=_bytes_of(value.get(b"ipv6"), 16),
        metadata_size=_size_of(value.get(b"metadata_size")),
        upload_only=None if upload_only is None else upload_only != 0,
        extra={key: item for key, item in value.items() if key not in _KNOWN_KEYS},
    )


def encode_extension_handshake(handshake: ExtensionHandshake) -> bytes:
    """The canonical bencoded payload for ``handshake``; absent (``None``) keys are omitted.

    Keys in ``extra`` are written too; a known field wins over an ``extra`` key of its name.

    Raises:
        ValueError: a field out of its range (``m`` ids 0..255, ``p`` 1..65535, address
            lengths), a bug in the caller.
    """
    for name, ext_id in handshake.m.items():
        if not 0 <= ext_id <= 255:
            raise ValueError(f"extension id of {name!r} must be 0..255, got {ext_id}")
    if handshake.p is not None and not 0 < handshake.p < 65536:
        raise ValueError(f"listen port out of range: {handshake.p}")
    for label, address, lengths in (
        ("yourip", handshake.yourip, (4, 16)),
        ("ipv4", handshake.ipv4, (4,)),
        ("ipv6", handshake.ipv6, (16,)),
    ):
        if address is not None and len(address) not in lengths:
            raise ValueError(f"{label} must be {' or '.join(map(str, lengths))} bytes")
    out: dict[bytes, object] = {
        key: item for key, item in handshake.extra.items() if key not in _KNOWN_KEYS
    }
    out[b"m"] = {name.encode("utf-8"): ext_id for name, ext_id in handshake.m.items()}
    optional: tuple[tuple[bytes, object], ...] = (
        (b"v", handshake.v),
        (b"p", handshake.p),
        (b"reqq", handshake.reqq),
        (b"yourip", handshake.yourip),
        (b"ipv4", handshake.ipv4),
        (b"ipv6", handshake.ipv6),
        (b"metadata_size", handshake.metadata_size),
        (b"upload_only", None if handshake.upload_only is None else int(handshake.upload_only)),
    )
    for key, item in optional:
        if item is not None:
            out[key] = item
    return encode(out)


def extension_handshake_message(handshake: ExtensionHandshake) -> Extended:
    """``handshake`` wrapped as the message to send: ``Extended(0, payload)``."""
    return Extended(EXTENSION_HANDSHAKE_ID, encode_extension_handshake(handshake))
