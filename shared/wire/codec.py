"""Peer wire framing: ``encode`` a message to bytes, and ``MessageDecoder`` turning a received
byte stream into messages (BEP 3, BEP 5 port, BEP 6 fast extension, BEP 10 extended).

Frame: ``length:u32 big-endian | id:u8 | payload``; ``length`` counts id + payload, and a length
of 0 is a keep-alive with no id. Message ids live here and nowhere else.

Strategy (the decoder is on the download hot path):
- ``feed`` parses complete frames straight out of the caller's buffer through a memoryview and
  only copies the incomplete tail. A partial non-piece frame is kept in a small bytearray that
  holds at most one frame prefix and is cleared when the frame completes, so nothing is ever
  re-sliced per message (no quadratic ``buf = buf[n:]``).
- A piece message is streamed: once its 13-byte header is in, the payload is copied chunk by
  chunk into its destination, never through the frame buffer. With a ``block_sink`` the
  destination is the caller's own piece buffer, so a block is copied exactly once. Without one,
  a block found whole in one fed buffer is copied once (into its ``bytes``); a block spanning
  feeds is gathered in a bytearray of its exact size, then copied into its ``bytes``.
- Every length is checked as soon as the 4-byte prefix (and then the id) is known, before any
  payload is buffered: a hostile 4 GiB length costs nothing.

Rules:
- Only what the frame itself says is validated: lengths and ids. Whether a piece index exists or a
  block fits in its piece is the peer session's business.
- Limits (frame length = id + payload): ``max_frame`` for piece, unknown and every other frame;
  ``1 + max_bitfield`` for a bitfield; ``2 + max_extended`` for an extended message. Fixed-size
  messages must have exactly their size. Errors: ``WireError`` reasons ``frame_too_large``,
  ``bad_length``, ``unknown_message``.
- Unknown message ids are an ``unknown_message`` error by default, as soon as the id byte
  arrives. libtorrent 2.1 does the same (it drops the peer with "invalid message", observed by
  ``tests/vectors/wire/capture_libtorrent.py`` and ``tests/interop/test_wire_interop.py``), so
  no interoperable peer sends them, and an unknown id is the first sign of a desynchronised or
  obfuscated stream. ``skip_unknown=True`` skips such frames instead (bounded by ``max_frame``,
  counted in ``unknown_skipped``) for callers that prefer leniency.
- After a ``WireError`` (or a ``ValueError`` from a misbehaving ``block_sink``) the decoder is
  dead: every later ``feed`` raises the same error, and the messages already parsed in the
  failing call are dropped with it. Drop the connection.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import assert_never

from torviz.shared.errors import WireError
from torviz.shared.wire.messages import (
    CHOKE,
    HAVE_ALL,
    HAVE_NONE,
    INTERESTED,
    KEEP_ALIVE,
    NOT_INTERESTED,
    UNCHOKE,
    AllowedFast,
    Bitfield,
    Cancel,
    Choke,
    Extended,
    Have,
    HaveAll,
    HaveNone,
    Interested,
    KeepAlive,
    Message,
    NotInterested,
    Piece,
    Port,
    RejectRequest,
    Request,
    SuggestPiece,
    Unchoke,
)

__all__ = [
    "DEFAULT_MAX_BITFIELD",
    "DEFAULT_MAX_EXTENDED",
    "DEFAULT_MAX_FRAME",
    "BlockSink",
    "MessageDecoder",
    "encode",
    "encode_piece_header",
]

# Message ids (BEP 3, 5, 6, 10).
_CHOKE = 0
_UNCHOKE = 1
_INTERESTED = 2
_NOT_INTERESTED = 3
_HAVE = 4
_BITFIELD = 5
_REQUEST = 6
_PIECE = 7
_CANCEL = 8
_PORT = 9
_SUGGEST = 13
_HAVE_ALL = 14
_HAVE_NONE = 15
_REJECT = 16
_ALLOWED_FAST = 17
_EXTENDED = 20

_BLOCK_SIZE = 16 * 1024
_PIECE_HEADER = 13  # length 4 + id 1 + piece 4 + offset 4

DEFAULT_MAX_FRAME = 1 + 8 + _BLOCK_SIZE
"""Frame length (id + payload) of a piece message carrying one 16 KiB block: torviz never
requests more, so a bigger frame of any kind is an attack or a bug."""
DEFAULT_MAX_BITFIELD = (1 << 21) // 8
"""Bitfield payload bytes: 256 KiB, room for 2,097,152 pieces."""
DEFAULT_MAX_EXTENDED = 1 << 17
"""Extended payload bytes: 128 KiB, eight times a ut_metadata block and its header."""

BlockSink = Callable[[int, int, int], memoryview | None]
"""``sink(piece, offset, length)``: a writable memoryview of exactly ``length`` bytes to receive
that block, or None to get the block as ``bytes`` in the ``Piece`` message instead."""

_U32 = struct.Struct(">I")
_U32_U8 = struct.Struct(">IB")
_U32_U8_U8 = struct.Struct(">IBB")
_U32_U8_U16 = struct.Struct(">IBH")
_U32_U8_U32 = struct.Struct(">IBI")
_U32_U8_U32X2 = struct.Struct(">IBII")
_U32_U8_U32X3 = struct.Struct(">IBIII")
_U16 = struct.Struct(">H")
_U32X2 = struct.Struct(">II")
_U32X3 = struct.Struct(">III")

_BARE_FRAMES: dict[type, bytes] = {
    KeepAlive: b"\x00\x00\x00\x00",
    Choke: _U32_U8.pack(1, _CHOKE),
    Unchoke: _U32_U8.pack(1, _UNCHOKE),
    Interested: _U32_U8.pack(1, _INTERESTED),
    NotInterested: _U32_U8.pack(1, _NOT_INTERESTED),
    HaveAll: _U32_U8.pack(1, _HAVE_ALL),
    HaveNone: _U32_U8.pack(1, _HAVE_NONE),
}


def encode_piece_header(piece: int, offset: int, length: int) -> bytes:
    """The 13 bytes that precede a ``length``-byte block in a piece message.

    Send them followed by the block itself, so the block is never concatenated.

    Raises:
        ValueError: if a field does not fit its 32-bit wire field.
    """
    try:
        return _U32_U8_U32X2.pack(9 + length, _PIECE, piece, offset)
    except struct.error as exc:
        raise ValueError(f"cannot encode piece header {piece}/{offset}/{length}: {exc}") from exc


def encode(message: Message) -> bytes:
    """The complete frame (length prefix included) for ``message``.

    Raises:
        ValueError: if a field does not fit its wire field (a bug in the caller).
    """
    try:
        match message:
            case KeepAlive() | Choke() | Unchoke() | Interested() | NotInterested():
                return _BARE_FRAMES[type(message)]
            case HaveAll() | HaveNone():
                return _BARE_FRAMES[type(message)]
            case Have(piece):
                return _U32_U8_U32.pack(5, _HAVE, piece)
            case Bitfield(bits):
                return _U32_U8.pack(1 + len(bits), _BITFIELD) + bits
            case Request(piece, offset, length):
                return _U32_U8_U32X3.pack(13, _REQUEST, piece, offset, length)
            case Piece(piece, offset, data):
                return encode_piece_header(piece, offset, len(data)) + data
            case Cancel(piece, offset, length):
                return _U32_U8_U32X3.pack(13, _CANCEL, piece, offset, length)
            case Port(port):
                return _U32_U8_U16.pack(3, _PORT, port)
            case SuggestPiece(piece):
                return _U32_U8_U32.pack(5, _SUGGEST, piece)
            case RejectRequest(piece, offset, length):
                return _U32_U8_U32X3.pack(13, _REJECT, piece, offset, length)
            case AllowedFast(piece):
                return _U32_U8_U32.pack(5, _ALLOWED_FAST, piece)
            case Extended(ext_id, payload):
                return _U32_U8_U8.pack(2 + len(payload), _EXTENDED, ext_id) + payload
            case _:
                assert_never(message)
    except struct.error as exc:
        raise ValueError(f"cannot encode {message!r}: {exc}") from exc


# Per-id frame length rules: (minimum, maximum, reason when above the maximum).
_Limit = tuple[int, int, str]
_KNOWN = bytes(
    mid
    in (
        _CHOKE,
        _UNCHOKE,
        _INTERESTED,
        _NOT_INTERESTED,
        _HAVE,
        _BITFIELD,
        _REQUEST,
        _PIECE,
        _CANCEL,
        _PORT,
        _SUGGEST,
        _HAVE_ALL,
        _HAVE_NONE,
        _REJECT,
        _ALLOWED_FAST,
        _EXTENDED,
    )
    for mid in range(256)
)


class MessageDecoder:
    """Incremental decoder for the message stream that follows the handshake.

    Args:
        max_frame: largest frame length (id + payload) accepted for a piece, an unknown id or any
            other message that is not a bitfield or extended message.
        max_bitfield: largest bitfield payload in bytes.
        max_extended: largest extended-message payload in bytes (after the extension id).
        block_sink: optional zero-copy destination for piece payloads. It is called once per
            piece message as soon as the message's header has arrived; when it returns a
            writable memoryview of exactly the block's length, the payload is copied from the
            fed buffers straight into it and the message comes out as
            ``Piece(piece, offset, data=<that memoryview>)``. Until that ``Piece`` is yielded
            the view may be partly written; a connection that dies mid-block leaves it so.
            The sink must not raise.
        skip_unknown: skip frames with an unknown message id (up to ``max_frame`` long)
            instead of raising ``WireError("unknown_message")``.
    """

    __slots__ = (
        "_blk_filled",
        "_blk_offset",
        "_blk_owned",
        "_blk_piece",
        "_blk_target",
        "_buf",
        "_error",
        "_limits",
        "_max_any",
        "_max_frame",
        "_sink",
        "_skip",
        "_skip_unknown",
        "unknown_skipped",
    )

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        *,
        max_bitfield: int = DEFAULT_MAX_BITFIELD,
        max_extended: int = DEFAULT_MAX_EXTENDED,
        block_sink: BlockSink | None = None,
        skip_unknown: bool = False,
    ) -> None:
        if max_frame < 13 or max_bitfield < 1 or max_extended < 1:
            raise ValueError("limits too small to carry the messages they govern")
        self._max_frame = max_frame
        self._max_any = max(max_frame, 1 + max_bitfield, 2 + max_extended)
        self._sink = block_sink
        self._skip_unknown = skip_unknown
        self._limits = self._build_limits(max_frame, max_bitfield, max_extended)
        self._buf = bytearray()  # prefix of one incomplete non-piece frame
        self._skip = 0  # bytes still to drop of an unknown frame
        # The piece message being streamed, if any.
        self._blk_target: memoryview | None = None
        self._blk_owned: bytearray | None = None  # set when the decoder owns the target
        self._blk_filled = 0
        self._blk_piece = 0
        self._blk_offset = 0
        self._error: Exception | None = None
        self.unknown_skipped = 0
        """How many frames with an unknown id were skipped (a peer session may ban on it)."""

    @staticmethod
    def _build_limits(max_frame: int, max_bitfield: int, max_extended: int) -> list[_Limit]:
        limits: list[_Limit] = [(1, max_frame, "frame_too_large")] * 256
        for mid in (_CHOKE, _UNCHOKE, _INTERESTED, _NOT_INTERESTED, _HAVE_ALL, _HAVE_NONE):
            limits[mid] = (1, 1, "bad_length")
        for mid in (_HAVE, _SUGGEST, _ALLOWED_FAST):
            limits[mid] = (5, 5, "bad_length")
        for mid in (_REQUEST, _CANCEL, _REJECT):
            limits[mid] = (13, 13, "bad_length")
        limits[_PORT] = (3, 3, "bad_length")
        limits[_PIECE] = (9, max_frame, "frame_too_large")
        limits[_BITFIELD] = (1, 1 + max_bitfield, "frame_too_large")
        limits[_EXTENDED] = (2, 2 + max_extended, "frame_too_large")
        return limits

    @property
    def block_sink(self) -> BlockSink | None:
        """The zero-copy destination of piece payloads; a new one applies from the next piece
        message whose header arrives (a block already being streamed keeps its target)."""
        return self._sink

    @block_sink.setter
    def block_sink(self, sink: BlockSink | None) -> None:
        self._sink = sink

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame the decoder holds in its own memory."""
        return len(self._buf) + (len(self._blk_owned) if self._blk_owned is not None else 0)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Take the next received bytes; return every message they complete, in order.

        ``data`` is not referenced after the call returns, so a receive buffer can be reused.

        Raises:
            WireError: ``frame_too_large``, ``bad_length`` or ``unknown_message``.
        """
        if self._error is not None:
            raise self._error
        if not data:
            return []
        view = memoryview(data)
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        out: list[Message] = []
        try:
            index = 0
            if self._skip or self._blk_target is not None or self._buf:
                index = self._resume(view, out)
            if index < len(view):
                self._parse(view, index, out)
        except Exception as exc:  # a WireError, or a misbehaving block_sink (ValueError)
            self._error = exc
            self._buf = bytearray()
            self._blk_target = self._blk_owned = None
            raise
        return out

    # --- the pending frame ----------------------------------------------------------------

    def _check_prefix(self, length: int) -> None:
        """Refuse a length no message could have, with only the 4-byte prefix known."""
        if length > self._max_any:
            raise WireError(
                "frame_too_large", f"peer announced a {length}-byte frame (limit {self._max_any})"
            )

    def _check(self, length: int, mid: int) -> None:
        """Refuse a frame by its length and id alone, before any of its payload is held."""
        self._check_prefix(length)
        if not _KNOWN[mid]:
            if not self._skip_unknown:
                raise WireError("unknown_message", f"peer sent unknown message id {mid}")
            if length > self._max_frame:
                raise WireError(
                    "frame_too_large",
                    f"peer sent a {length}-byte frame of unknown id {mid} "
                    f"(limit {self._max_frame})",
                )
            return
        low, high, reason = self._limits[mid]
        if length < low:
            reason = "bad_length"
        elif length <= high:
            return
        raise WireError(reason, f"peer sent message id {mid} with frame length {length}")

    def _resume(self, view: memoryview, out: list[Message]) -> int:
        """Continue the frame left incomplete by the previous ``feed``; return the index in
        ``view`` where the next frame starts (``len(view)`` if still incomplete)."""
        size = len(view)
        index = 0
        if self._skip:
            taken = min(self._skip, size)
            self._skip -= taken
            return taken
        if self._blk_target is not None:
            return self._stream_block(view, 0, out)
        buf = self._buf
        if len(buf) < 4:
            taken = min(4 - len(buf), size)
            buf += view[:taken]
            index = taken
            if len(buf) < 4:
                return index
            length: int = _U32.unpack_from(buf)[0]
            if length == 0:
                out.append(KEEP_ALIVE)
                buf.clear()
                return index
            self._check_prefix(length)
            if index == size:
                return index
        if len(buf) == 4:
            buf.append(view[index])
            index += 1
        mid: int
        length, mid = _U32_U8.unpack_from(buf)
        self._check(length, mid)
        if mid == _PIECE:
            taken = min(_PIECE_HEADER - len(buf), size - index)
            buf += view[index : index + taken]
            index += taken
            if len(buf) < _PIECE_HEADER:
                return index
            piece, offset = _U32X2.unpack_from(buf, 5)
            buf.clear()
            self._start_block(piece, offset, length - 9)
            return self._stream_block(view, index, out)
        if not _KNOWN[mid]:
            buf.clear()
            self._skip = length - 1
            self.unknown_skipped += 1
            taken = min(self._skip, size - index)
            self._skip -= taken
            return index + taken
        taken = min(4 + length - len(buf), size - index)
        buf += view[index : index + taken]
        index += taken
        if len(buf) == 4 + length:
            out.append(self._decode_body(mid, memoryview(buf), 5, 4 + length))
            self._buf = bytearray()
        return index

    def _start_block(self, piece: int, offset: int, length: int) -> None:
        target = self._sink(piece, offset, length) if self._sink is not None else None
        if target is None:
            self._blk_owned = bytearray(length)
            target = memoryview(self._blk_owned)
        else:
            _check_sink_view(target, length)
            self._blk_owned = None
        self._blk_target = target
        self._blk_filled = 0
        self._blk_piece = piece
        self._blk_offset = offset

    def _stream_block(self, view: memoryview, index: int, out: list[Message]) -> int:
        """Copy what ``view[index:]`` holds of the streamed block; finish it if complete."""
        target = self._blk_target
        assert target is not None
        filled = self._blk_filled
        taken = min(len(target) - filled, len(view) - index)
        target[filled : filled + taken] = view[index : index + taken]
        filled += taken
        if filled < len(target):
            self._blk_filled = filled
            return len(view)
        owned = self._blk_owned
        data: bytes | memoryview = bytes(owned) if owned is not None else target
        out.append(Piece(self._blk_piece, self._blk_offset, data))
        self._blk_target = self._blk_owned = None
        return index + taken

    # --- whole frames ---------------------------------------------------------------------

    def _parse(self, view: memoryview, index: int, out: list[Message]) -> None:
        """Parse frames from ``view[index:]``; stash or stream whatever is left incomplete."""
        size = len(view)
        unpack_prefix = _U32_U8.unpack_from
        max_piece_frame = self._max_frame
        sink = self._sink
        while True:
            remaining = size - index
            if remaining < 5:
                if remaining >= 4:
                    length = _U32.unpack_from(view, index)[0]
                    if length == 0:
                        out.append(KEEP_ALIVE)
                        index += 4
                        continue
                    self._check_prefix(length)
                break
            length, mid = unpack_prefix(view, index)
            if length == 0:
                out.append(KEEP_ALIVE)
                index += 4
                continue
            end = index + 4 + length
            if mid == _PIECE and 9 <= length <= max_piece_frame:
                if end <= size:
                    piece, offset = _U32X2.unpack_from(view, index + 5)
                    block = view[index + _PIECE_HEADER : end]
                    target = sink(piece, offset, length - 9) if sink is not None else None
                    if target is None:
                        out.append(Piece(piece, offset, bytes(block)))
                    else:
                        _check_sink_view(target, length - 9)
                        target[:] = block
                        out.append(Piece(piece, offset, target))
                    index = end
                    continue
                if remaining < _PIECE_HEADER:
                    break
                piece, offset = _U32X2.unpack_from(view, index + 5)
                self._start_block(piece, offset, length - 9)
                self._stream_block(view, index + _PIECE_HEADER, out)
                return
            self._check(length, mid)
            if not _KNOWN[mid]:
                self.unknown_skipped += 1
                if end > size:
                    self._skip = end - size
                    return
                index = end
                continue
            if end > size:
                break
            out.append(self._decode_body(mid, view, index + 5, end))
            index = end
        if index < size:
            self._buf += view[index:]

    @staticmethod
    def _decode_body(mid: int, view: memoryview, start: int, end: int) -> Message:
        """The message of a complete frame whose length was already checked for ``mid``."""
        if mid == _HAVE:
            return Have(_U32.unpack_from(view, start)[0])
        if mid == _REQUEST:
            return Request(*_U32X3.unpack_from(view, start))
        if mid == _EXTENDED:
            return Extended(view[start], bytes(view[start + 1 : end]))
        if mid == _BITFIELD:
            return Bitfield(bytes(view[start:end]))
        if mid == _CANCEL:
            return Cancel(*_U32X3.unpack_from(view, start))
        if mid == _REJECT:
            return RejectRequest(*_U32X3.unpack_from(view, start))
        if mid == _ALLOWED_FAST:
            return AllowedFast(_U32.unpack_from(view, start)[0])
        if mid == _SUGGEST:
            return SuggestPiece(_U32.unpack_from(view, start)[0])
        if mid == _PORT:
            return Port(_U16.unpack_from(view, start)[0])
        return _BARE_MESSAGES[mid]


_BARE_MESSAGES: dict[int, Message] = {
    _CHOKE: CHOKE,
    _UNCHOKE: UNCHOKE,
    _INTERESTED: INTERESTED,
    _NOT_INTERESTED: NOT_INTERESTED,
    _HAVE_ALL: HAVE_ALL,
    _HAVE_NONE: HAVE_NONE,
}


def _check_sink_view(target: memoryview, length: int) -> None:
    if target.readonly or target.nbytes != length or target.format != "B":
        raise ValueError(
            f"block_sink must return a writable byte memoryview of {length} bytes, "
            f"got {target.nbytes} bytes (readonly={target.readonly}, format={target.format!r})"
        )
