"""One peer connection's protocol state, without I/O, with the clock passed in.

The connection actor feeds received bytes to ``receive``, coordinator commands to ``assign`` and
``revoke``, and the time to ``tick``; after each call it sends what ``take_output`` returns and
forwards what ``take_events`` returns. Nothing here blocks or reads a clock, so two sessions can
be joined in memory and tested with a fake clock.

Download path, which must be fast: the coordinator assigns whole pieces; the session requests
their blocks itself, keeping as many requests outstanding as ``QueueDepthPolicy`` says. The
decoder streams each block's payload straight into the piece's buffer (``_block_sink``), so a
block is copied once, from the receive buffer into the piece. A finished piece leaves as
``PieceCompleted`` with its buffer, which the agent sends to the storage agent as its own frame
and never touches again. Per-block work is minimal: requests go out in batches, the depth is
recomputed every ``_DEPTH_REFRESH`` s, and the rate meter is fed once per ``receive``.

Rules:
- A peer that breaks the protocol (bad frame, piece index out of range, malformed bitfield,
  fast-extension messages it did not negotiate) ends the session with ``Closed(reason)``; the
  session never raises for remote misbehaviour.
- Data we did not ask for, or that arrives after a cancel, is counted and dropped.
- Requests from the peer are refused while we choke it (with ``reject`` when it speaks the fast
  extension); serving blocks belongs to the seeding path.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.bitfield import Bitfield, BitfieldError
from shared.errors import TorvizError, WireError
from shared.geometry import TorrentGeometry
from shared.rate import RateMeter
from shared.types import InfoHash, PeerId
from shared.wire import codec
from shared.wire import messages as wire
from shared.wire.extension import (
    ExtensionHandshake,
    decode_extension_handshake,
    encode_extension_handshake,
)
from shared.wire.handshake import Handshake, HandshakeReader, Reserved, encode_handshake

from .pipeline import QueueDepthPolicy

__all__ = [
    "Closed",
    "Event",
    "HandshakeDone",
    "PeerBitfield",
    "PeerHave",
    "PeerInfo",
    "PeerSession",
    "PieceCompleted",
    "PiecesReleased",
    "SessionConfig",
    "WorkWanted",
]


@dataclass(frozen=True, slots=True)
class SessionConfig:
    client_name: str = "torviz"
    """Our ``v`` in the extension handshake."""
    listen_port: int = 0
    """Our ``p`` in the extension handshake; 0 leaves it out."""
    our_reqq: int = 2000
    """How many requests we accept from a peer (our ``reqq``)."""
    pipeline: QueueDepthPolicy = field(default_factory=QueueDepthPolicy)
    handshake_timeout: float = 20.0
    keepalive_interval: float = 110.0
    idle_timeout: float = 180.0
    request_timeout: float = 30.0
    max_rejects_per_piece: int = 3
    allocate: Callable[[int], bytearray] = bytearray
    """Makes piece buffers. Blocks overwrite every byte before a buffer leaves (an unfinished
    one is dropped), so an allocator that skips zeroing is safe."""


# -- events the session reports ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakeDone:
    peer_id: PeerId
    reserved: Reserved


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """The peer's extension handshake arrived (client name, listen port, queue limit)."""

    extension: ExtensionHandshake


@dataclass(frozen=True, slots=True)
class PeerBitfield:
    """The peer's whole have-state (bitfield, have-all or have-none)."""

    bits: Bitfield


@dataclass(frozen=True, slots=True)
class PeerHave:
    piece: int


@dataclass(frozen=True, slots=True)
class PieceCompleted:
    """Every block of ``piece`` arrived; ``data`` is the whole piece, handed over for good."""

    piece: int
    data: bytearray


@dataclass(frozen=True, slots=True)
class WorkWanted:
    """The pipeline would run dry: the session can take ``count`` more pieces."""

    count: int


@dataclass(frozen=True, slots=True)
class PiecesReleased:
    """The session gave these assigned pieces up (timeouts, repeated rejects)."""

    pieces: tuple[int, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The session ended; ``reason`` is a snake_case code, ``message`` one readable line."""

    reason: str
    message: str = field(default="", compare=False)


Event = (
    HandshakeDone
    | PeerInfo
    | PeerBitfield
    | PeerHave
    | PieceCompleted
    | WorkWanted
    | PiecesReleased
    | Closed
)


# Requests are most of what we send: the codec's own frame gives the length and id, and only
# the three fields are packed per block (a third of ``codec.encode``'s cost).
_REQUEST_PREFIX = codec.encode(wire.Request(0, 0, 0))[:5]
_PACK_U32X3 = struct.Struct(">III").pack

_DEPTH_REFRESH = 0.1  # seconds a computed pipeline depth stays valid
_REFILL_BATCH = 64  # blocks (1 MiB): the most the pipeline drains before it is topped up

_CLOSE_MESSAGES = {
    "handshake_timeout": "the peer did not complete the handshake in time",
    "idle_timeout": "the peer sent nothing for too long",
}


class Phase(enum.Enum):
    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSED = "closed"


class _Download:
    """An assigned piece: its buffer and which of its blocks are still to request."""

    __slots__ = ("buffer", "rejects", "to_request", "unreceived")

    def __init__(self, buffer: bytearray, blocks: tuple[tuple[int, int], ...]) -> None:
        self.buffer = buffer
        self.to_request: deque[tuple[int, int]] = deque(blocks)
        self.unreceived = len(blocks)
        self.rejects = 0


class PeerSession:
    """The protocol state of one connection to one peer for one torrent."""

    def __init__(
        self,
        *,
        info_hash: InfoHash,
        peer_id: PeerId,
        geometry: TorrentGeometry,
        have: Bitfield,
        now: float,
        config: SessionConfig = SessionConfig(),
    ) -> None:
        self.info_hash = info_hash
        self.geometry = geometry
        self.config = config
        self._our_id = peer_id
        self._our_have = have.copy()
        self.phase = Phase.HANDSHAKE
        self._handshake = HandshakeReader()
        self._decoder = codec.MessageDecoder(block_sink=self._block_sink)
        self._out: list[bytes | bytearray | memoryview] = []
        self._events: list[Event] = []
        self._started = now
        self._last_received = now
        self._last_sent = now
        # Protocol flags, BEP 3 names.
        self.am_choking = True
        self.am_interested = False
        self.peer_choking = True
        self.peer_interested = False
        self.peer_id: PeerId | None = None
        self.peer_fast = False
        self.peer_extensions = False
        self.peer_reqq: int | None = None
        self.peer_have = Bitfield(geometry.num_pieces)
        self.allowed_fast: set[int] = set()
        # Download state.
        self._downloads: dict[int, _Download] = {}
        self._outstanding: dict[tuple[int, int], tuple[int, float]] = {}
        self._work_requested = False
        self._starved = False  # the coordinator had nothing for us; wait for news before asking
        # Every piece but the last has the same blocks: list them once, not per assignment.
        self._full_blocks = self._blocks_of(0)
        self._received = 0  # block bytes of the current ``receive``, metered once at its end
        self._depth_value = 0
        self._depth_until = float("-inf")
        self.download_rate = RateMeter(now)
        self.upload_rate = RateMeter(now)
        self.wasted_bytes = 0
        self._out.append(
            encode_handshake(
                Handshake(info_hash, peer_id, Reserved.build(extension_protocol=True, fast=True))
            )
        )

    # -- inputs ---------------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Bytes arrived from the peer."""
        if self.phase is Phase.CLOSED or not data:
            return
        self._last_received = now
        try:
            if self.phase is Phase.HANDSHAKE:
                for item in self._handshake.feed(data):
                    if isinstance(item, Handshake):
                        self._on_handshake(item)
                if not self.active:
                    return
                data = self._handshake.take_surplus()
            for message in self._decoder.feed(data):
                if type(message) is wire.Piece:  # the hot path skips the match below
                    self._on_block(message.piece, message.offset, message.data)
                else:
                    self._on_message(message, now)
                    if not self.active:
                        return
        except TorvizError as exc:
            self.close(exc.reason, exc.message)
            return
        finally:
            if self._received:
                self.download_rate.add(self._received, now)
                self._received = 0
        self._fill_pipeline(now)

    def assign(self, pieces: list[int] | tuple[int, ...], now: float) -> None:
        """The coordinator handed us these pieces to fetch from this peer (none: nothing yet)."""
        self._work_requested = False
        self._starved = not pieces
        for piece in pieces:
            if piece not in self._downloads and 0 <= piece < self.geometry.num_pieces:
                self._downloads[piece] = self._new_download(piece)
        self._update_interest()
        self._fill_pipeline(now)

    def revoke(self, pieces: list[int] | tuple[int, ...], now: float) -> None:
        """Stop fetching these pieces (another connection completed them first)."""
        for piece in pieces:
            if self._downloads.pop(piece, None) is None:
                continue
            for key in [key for key in self._outstanding if key[0] == piece]:
                length, _ = self._outstanding.pop(key)
                self._send(wire.Cancel(piece, key[1], length))
        self._update_interest()
        self._fill_pipeline(now)

    def piece_acquired(self, piece: int) -> None:
        """We verified ``piece`` (from any peer): tell this one."""
        if not 0 <= piece < self.geometry.num_pieces or piece in self._our_have:
            return
        self._our_have.add(piece)
        if self.phase is Phase.ACTIVE:
            self._send(wire.Have(piece))

    def tick(self, now: float) -> None:
        """Let timers fire: handshake and idle timeouts, keep-alives, request timeouts."""
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.HANDSHAKE:
            if now - self._started >= self.config.handshake_timeout:
                self.close("handshake_timeout")
            return
        if now - self._last_received >= self.config.idle_timeout:
            self.close("idle_timeout")
            return
        if now - self._last_sent >= self.config.keepalive_interval:
            self._send(wire.KeepAlive())
        if self._outstanding:
            _, sent_at = next(iter(self._outstanding.values()))
            if now - sent_at >= self.config.request_timeout:
                self._release(list(self._downloads), "request_timeout")

    def next_deadline(self) -> float:
        """When ``tick`` next has something to do."""
        if self.phase is Phase.HANDSHAKE:
            return self._started + self.config.handshake_timeout
        deadline = min(
            self._last_received + self.config.idle_timeout,
            self._last_sent + self.config.keepalive_interval,
        )
        if self._outstanding:
            _, sent_at = next(iter(self._outstanding.values()))
            deadline = min(deadline, sent_at + self.config.request_timeout)
        return deadline

    def close(self, reason: str, message: str = "") -> None:
        """End the session (idempotent): ``Closed(reason, message)`` is its last event."""
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self._downloads.clear()
        self._outstanding.clear()
        self._events.append(Closed(reason, message or _CLOSE_MESSAGES.get(reason, reason)))

    # -- outputs --------------------------------------------------------------------------------

    def take_output(self, now: float) -> list[bytes | bytearray | memoryview]:
        """Bytes to send to the peer, in order; the caller sends them at ``now``."""
        out, self._out = self._out, []
        if out:
            self._last_sent = now
        return out

    @property
    def has_output(self) -> bool:
        """Whether ``take_output`` would return bytes (the writer has work)."""
        return bool(self._out)

    def take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    @property
    def active(self) -> bool:
        """Handshakes exchanged and not closed."""
        return self.phase is Phase.ACTIVE

    @property
    def assigned(self) -> tuple[int, ...]:
        return tuple(self._downloads)

    @property
    def outstanding_requests(self) -> int:
        return len(self._outstanding)

    # -- handling the peer ------------------------------------------------------------------------

    def _on_handshake(self, handshake: Handshake) -> None:
        if handshake.info_hash != self.info_hash:
            raise WireError("wrong_info_hash", "the peer answered for another torrent")
        if handshake.peer_id == self._our_id:
            raise WireError("connected_to_self", "the peer is ourselves")
        self.peer_id = handshake.peer_id
        self.peer_fast = handshake.reserved.fast
        self.peer_extensions = handshake.reserved.extension_protocol
        self.phase = Phase.ACTIVE
        self._events.append(HandshakeDone(handshake.peer_id, handshake.reserved))
        if self.peer_extensions:
            self._send_extension_handshake()
        self._send_have_state()

    def _send_extension_handshake(self) -> None:
        ext = ExtensionHandshake(
            m={},
            v=self.config.client_name,
            p=self.config.listen_port or None,
            reqq=self.config.our_reqq,
        )
        self._send(wire.Extended(0, encode_extension_handshake(ext)))

    def _send_have_state(self) -> None:
        have = self._our_have
        if self.peer_fast and have.complete:
            self._send(wire.HaveAll())
        elif self.peer_fast and not len(have):
            self._send(wire.HaveNone())
        elif len(have):
            self._send(wire.Bitfield(have.to_bytes()))

    def _on_message(self, message: wire.Message, now: float) -> None:
        match message:
            case wire.Piece(piece=piece, offset=offset, data=data):
                self._on_block(piece, offset, data)
            case wire.Have(piece=piece):
                self._check_piece(piece)
                if piece not in self.peer_have:
                    self.peer_have.add(piece)
                    self._starved = False
                    self._events.append(PeerHave(piece))
            case wire.Bitfield(bits=bits):
                try:
                    self.peer_have = Bitfield.from_bytes(bits, self.geometry.num_pieces)
                except BitfieldError as exc:
                    raise WireError(exc.reason, str(exc)) from None
                self._starved = False
                self._events.append(PeerBitfield(self.peer_have.copy()))
            case wire.HaveAll():
                self._require_fast("have_all")
                self.peer_have = Bitfield.full(self.geometry.num_pieces)
                self._starved = False
                self._events.append(PeerBitfield(self.peer_have.copy()))
            case wire.HaveNone():
                self._require_fast("have_none")
                self.peer_have = Bitfield(self.geometry.num_pieces)
                self._events.append(PeerBitfield(self.peer_have.copy()))
            case wire.Choke():
                self.peer_choking = True
                if not self.peer_fast:
                    # BEP 3: a choke silently drops every request; ask again after unchoke.
                    self._requeue_all()
            case wire.Unchoke():
                self.peer_choking = False
            case wire.Interested():
                self.peer_interested = True
            case wire.NotInterested():
                self.peer_interested = False
            case wire.Request(piece=piece, offset=offset, length=length):
                self._on_request(piece, offset, length)
            case wire.Cancel():
                pass  # nothing is queued for upload while we choke everyone
            case wire.RejectRequest(piece=piece, offset=offset, length=length):
                self._require_fast("reject")
                self._on_reject(piece, offset, length)
            case wire.AllowedFast(piece=piece):
                self._require_fast("allowed_fast")
                if 0 <= piece < self.geometry.num_pieces:
                    self.allowed_fast.add(piece)
            case wire.SuggestPiece():
                self._require_fast("suggest")
            case wire.Extended(ext_id=0, payload=payload):
                self._on_extension_handshake(payload)
            case wire.Extended() | wire.Port() | wire.KeepAlive():
                pass

    def _on_block(self, piece: int, offset: int, data: bytes | memoryview) -> None:
        key = (piece, offset)
        expected = self._outstanding.get(key)
        download = self._downloads.get(piece)
        size = len(data)
        if expected is None or download is None or expected[0] != size:
            self.wasted_bytes += size
            return
        del self._outstanding[key]
        if type(data) is not memoryview or data.obj is not download.buffer:
            download.buffer[offset : offset + size] = data
        self._received += size
        download.unreceived -= 1
        if download.unreceived == 0:
            del self._downloads[piece]
            self._events.append(PieceCompleted(piece, download.buffer))

    def _blocks_of(self, piece: int) -> tuple[tuple[int, int], ...]:
        return tuple((block.offset, block.length) for block in self.geometry.blocks(piece))

    def _new_download(self, piece: int) -> _Download:
        size = self.geometry.piece_size(piece)
        blocks = self._full_blocks if size == self.geometry.piece_length else self._blocks_of(piece)
        return _Download(self.config.allocate(size), blocks)

    def _block_sink(self, piece: int, offset: int, length: int) -> memoryview | None:
        """Where the decoder should write a block's payload: straight into its piece."""
        expected = self._outstanding.get((piece, offset))
        download = self._downloads.get(piece)
        if expected is None or download is None or expected[0] != length:
            return None
        return memoryview(download.buffer)[offset : offset + length]

    def _on_request(self, piece: int, offset: int, length: int) -> None:
        if not self.geometry.is_valid_request(piece, offset, length):
            raise WireError("bad_request", f"request outside the torrent: {piece}/{offset}")
        if self.peer_fast:
            self._send(wire.RejectRequest(piece, offset, length))

    def _on_reject(self, piece: int, offset: int, length: int) -> None:
        if self._outstanding.pop((piece, offset), None) is None:
            return
        download = self._downloads.get(piece)
        if download is None:
            return
        download.to_request.appendleft((offset, length))
        if not self.peer_choking:
            download.rejects += 1
            if download.rejects > self.config.max_rejects_per_piece:
                self._release([piece], "rejected")

    def _on_extension_handshake(self, payload: bytes) -> None:
        ext = decode_extension_handshake(payload)
        if ext.reqq is not None and ext.reqq > 0:
            self.peer_reqq = ext.reqq
            self._depth_until = float("-inf")  # the ceiling changed: recompute now
        self._events.append(PeerInfo(ext))

    def _require_fast(self, what: str) -> None:
        if not self.peer_fast:
            raise WireError("fast_not_negotiated", f"peer sent {what} without the fast extension")

    def _check_piece(self, piece: int) -> None:
        if not 0 <= piece < self.geometry.num_pieces:
            raise WireError("bad_piece_index", f"piece {piece} does not exist")

    # -- requesting -------------------------------------------------------------------------------

    def _fill_pipeline(self, now: float) -> None:
        if self.phase is not Phase.ACTIVE:
            return
        if not self.peer_choking or self.allowed_fast:
            depth = self._depth(now)
            # Top up in batches: one send per batch, not per chunk received, while the pipeline
            # never holds fewer than depth - batch requests.
            if len(self._outstanding) > depth - max(1, min(depth // 4, _REFILL_BATCH)):
                self._want_more_work(now)
                return
            requests = []
            for piece, download in self._downloads.items():
                if self.peer_choking and piece not in self.allowed_fast:
                    continue
                while download.to_request and len(self._outstanding) < depth:
                    offset, length = download.to_request.popleft()
                    self._outstanding[(piece, offset)] = (length, now)
                    requests.append(_REQUEST_PREFIX + _PACK_U32X3(piece, offset, length))
                if len(self._outstanding) >= depth:
                    break
            if requests:
                self._out.append(b"".join(requests))
        self._want_more_work(now)

    def _depth(self, now: float) -> int:
        """The pipeline depth to aim for; a rate over seconds needs no re-summing per chunk."""
        if now >= self._depth_until:
            rate = self.download_rate.rate(now)
            self._depth_value = self.config.pipeline.depth(rate, self.peer_reqq)
            self._depth_until = now + _DEPTH_REFRESH
        return self._depth_value

    def _want_more_work(self, now: float) -> None:
        """Ask for more pieces before the pipeline runs dry, once per answer."""
        if self._work_requested or self._starved or not len(self.peer_have):
            return
        depth = self._depth(now)
        queued_bytes = sum(len(d.to_request) for d in self._downloads.values()) * (
            self.geometry.block_size
        )
        wanted_bytes = 2 * depth * self.geometry.block_size
        if queued_bytes < wanted_bytes:
            count = max(1, -(-(wanted_bytes - queued_bytes) // self.geometry.piece_length))
            self._work_requested = True
            self._events.append(WorkWanted(count))

    def _requeue_all(self) -> None:
        for (piece, offset), (length, _) in reversed(list(self._outstanding.items())):
            download = self._downloads.get(piece)
            if download is not None:
                download.to_request.appendleft((offset, length))
        self._outstanding.clear()

    def _release(self, pieces: list[int], reason: str) -> None:
        for piece in pieces:
            self._downloads.pop(piece, None)
            for key in [key for key in self._outstanding if key[0] == piece]:
                length, _ = self._outstanding.pop(key)
                self._send(wire.Cancel(piece, key[1], length))
        if pieces:
            self._events.append(PiecesReleased(tuple(pieces), reason))
        self._work_requested = False
        self._update_interest()

    def _update_interest(self) -> None:
        interested = bool(self._downloads)
        if interested != self.am_interested:
            self.am_interested = interested
            self._send(wire.Interested() if interested else wire.NotInterested())

    def _send(self, message: wire.Message) -> None:
        self._out.append(codec.encode(message))
