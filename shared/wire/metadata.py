"""BEP 9 ``ut_metadata``: the payload codec of the metadata exchange, and the serving answer.

The payload of ``Extended(<our ut_metadata id>, payload)`` is a bencoded dictionary with
``msg_type`` (0 request, 1 data, 2 reject) and ``piece``; a data message adds ``total_size`` and
carries the metadata block as raw bytes right after the dictionary. Metadata is cut into 16 KiB
pieces; every piece is 16 KiB except the last, which holds the remainder.

Strategy: ``decode_prefix`` (lenient key order, as in ``extension.py``, under ``NETWORK_LIMITS``
and with duplicate keys and malformed integers still refused) reads the dictionary, then each
field is checked against the bounds before anything is kept. A data block is accepted only if
its length is exactly what ``piece`` and ``total_size`` imply, so a peer cannot hand over more
than one piece's worth per message nor make the receiver guess.

Rules:
- ``max_total_size`` (the caller's cap, default ``DEFAULT_MAX_METADATA_SIZE``) bounds
  ``total_size``; ``piece`` must lie in ``0 .. pieces(max_total_size) - 1`` for a request or
  reject and in ``0 .. pieces(total_size) - 1`` for data.
- Bytes after the dictionary are refused for request and reject (``trailing_data``).
- BEP 9 says an unrecognised ``msg_type`` must be ignored, so it decodes to
  ``MetadataUnknown`` (the caller ignores it) rather than an error that would drop the peer.
- Every other defect is ``WireError`` with reason ``bad_metadata_message`` and a message naming
  the cause; the caller drops the peer.
"""

from __future__ import annotations

from dataclasses import dataclass

from torviz.shared.bencode import NETWORK_LIMITS, decode_prefix, encode
from torviz.shared.errors import BencodeError, WireError

__all__ = [
    "DEFAULT_MAX_METADATA_SIZE",
    "METADATA_EXTENSION",
    "METADATA_PIECE_SIZE",
    "MetadataData",
    "MetadataMessage",
    "MetadataReject",
    "MetadataRequest",
    "MetadataUnknown",
    "decode_metadata_message",
    "encode_metadata_message",
    "metadata_piece_count",
    "metadata_piece_length",
    "serve_metadata_request",
]

METADATA_EXTENSION = "ut_metadata"
"""The name of the extension in the BEP 10 ``m`` dictionary."""

METADATA_PIECE_SIZE = 16 * 1024
"""Every metadata piece but the last is exactly this long (BEP 9)."""

DEFAULT_MAX_METADATA_SIZE = 8 * 1024 * 1024
"""The default cap on ``metadata_size`` / ``total_size`` (8 MiB, issue 14)."""

_REQUEST = 0
_DATA = 1
_REJECT = 2
_MAX_MSG_TYPE = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class MetadataRequest:
    """Ask for metadata piece ``piece``."""

    piece: int


@dataclass(frozen=True, slots=True)
class MetadataData:
    """Metadata piece ``piece`` of an info dictionary of ``total_size`` bytes."""

    piece: int
    total_size: int
    data: bytes


@dataclass(frozen=True, slots=True)
class MetadataReject:
    """The sender will not (or cannot) send piece ``piece``."""

    piece: int


@dataclass(frozen=True, slots=True)
class MetadataUnknown:
    """A ``msg_type`` this version does not know; BEP 9 says to ignore it."""

    msg_type: int


MetadataMessage = MetadataRequest | MetadataData | MetadataReject | MetadataUnknown


def metadata_piece_count(total_size: int) -> int:
    """How many 16 KiB pieces ``total_size`` bytes of metadata make (0 for 0 bytes)."""
    return -(-total_size // METADATA_PIECE_SIZE)


def metadata_piece_length(piece: int, total_size: int) -> int:
    """The exact length of piece ``piece`` of ``total_size`` bytes of metadata.

    Raises:
        ValueError: ``piece`` is not a piece of that metadata.
    """
    if not 0 <= piece < metadata_piece_count(total_size):
        raise ValueError(f"piece {piece} is not a piece of {total_size} bytes of metadata")
    return min(METADATA_PIECE_SIZE, total_size - piece * METADATA_PIECE_SIZE)


def _bad(message: str) -> WireError:
    return WireError("bad_metadata_message", f"ut_metadata message refused: {message}")


def decode_metadata_message(
    payload: bytes, *, max_total_size: int = DEFAULT_MAX_METADATA_SIZE
) -> MetadataMessage:
    """Decode the payload of a ``ut_metadata`` extended message.

    Args:
        payload: the bytes after the extended message id.
        max_total_size: the largest metadata the caller accepts (bounds ``total_size`` and the
            piece index of a request or reject).

    Returns:
        The message; ``MetadataUnknown`` for a ``msg_type`` to ignore.

    Raises:
        WireError: ``bad_metadata_message`` naming the cause (not bencode, not a dictionary,
            missing or out-of-range field, wrong block length, trailing bytes).
    """
    try:
        value, end = decode_prefix(payload, strict=False, limits=NETWORK_LIMITS)
    except BencodeError as exc:
        raise _bad(f"not valid bencode: {exc}") from exc
    if not isinstance(value, dict):
        raise _bad(f"a bencoded {type(value).__name__}, not a dictionary")
    msg_type = value.get(b"msg_type")
    if not isinstance(msg_type, int) or not 0 <= msg_type <= _MAX_MSG_TYPE:
        raise _bad("msg_type missing or not a non-negative integer")
    piece = value.get(b"piece")
    if not isinstance(piece, int):
        raise _bad("piece missing or not an integer")
    if msg_type not in (_REQUEST, _DATA, _REJECT):
        return MetadataUnknown(msg_type)
    if msg_type == _DATA:
        return _decode_data(payload, end, piece, value.get(b"total_size"), max_total_size)
    if end != len(payload):
        raise _bad(f"{len(payload) - end} bytes after the dictionary")
    limit = metadata_piece_count(max_total_size)
    if not 0 <= piece < limit:
        raise _bad(f"piece {piece} out of range 0..{limit - 1}")
    return MetadataRequest(piece) if msg_type == _REQUEST else MetadataReject(piece)


def _decode_data(
    payload: bytes, end: int, piece: int, total_size: object, max_total_size: int
) -> MetadataData:
    if not isinstance(total_size, int):
        raise _bad("data without an integer total_size")
    if not 0 < total_size <= max_total_size:
        raise _bad(f"total_size {total_size} outside 1..{max_total_size}")
    count = metadata_piece_count(total_size)
    if not 0 <= piece < count:
        raise _bad(f"piece {piece} out of range 0..{count - 1} for total_size {total_size}")
    expected = metadata_piece_length(piece, total_size)
    got = len(payload) - end
    if got != expected:
        raise _bad(f"piece {piece} carries {got} bytes, expected {expected}")
    return MetadataData(piece, total_size, payload[end:])


def encode_metadata_message(message: MetadataRequest | MetadataData | MetadataReject) -> bytes:
    """The payload for ``message`` (canonical dictionary, data block appended for data).

    Raises:
        ValueError: a negative piece, or a data block whose length does not fit ``piece`` and
            ``total_size`` (a bug in the caller).
    """
    if message.piece < 0:
        raise ValueError(f"metadata piece must be >= 0, got {message.piece}")
    match message:
        case MetadataRequest(piece=piece):
            return encode({b"msg_type": _REQUEST, b"piece": piece})
        case MetadataReject(piece=piece):
            return encode({b"msg_type": _REJECT, b"piece": piece})
        case MetadataData(piece=piece, total_size=total_size, data=data):
            if len(data) != metadata_piece_length(piece, total_size):
                raise ValueError(
                    f"metadata piece {piece} of {total_size} bytes cannot be {len(data)} bytes"
                )
            head = encode({b"msg_type": _DATA, b"piece": piece, b"total_size": total_size})
            return head + data


def serve_metadata_request(info: bytes, piece: int) -> MetadataData | MetadataReject:
    """The answer to a request for piece ``piece`` of the raw info dictionary ``info``.

    Args:
        info: the exact bytes of the info dictionary (what the info hash is computed over).
        piece: the requested piece index.

    Returns:
        ``MetadataData`` with that slice, or ``MetadataReject`` if the piece does not exist.
    """
    if not info or not 0 <= piece < metadata_piece_count(len(info)):
        return MetadataReject(piece)
    start = piece * METADATA_PIECE_SIZE
    return MetadataData(piece, len(info), info[start : start + METADATA_PIECE_SIZE])
