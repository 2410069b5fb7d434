"""The downloading side of one peer connection, without I/O: assigned pieces and our requests.

This is the download hot path. The coordinator assigns whole pieces; ``Downloads`` requests
their blocks itself, keeping as many requests outstanding as ``QueueDepthPolicy`` says. The
decoder streams each block's payload straight into the piece's buffer (``block_sink``), so a
block is copied once, from the receive buffer into the piece. A finished piece leaves as
``PieceCompleted`` with its buffer, which the agent sends to the storage agent as its own frame
and never touches again. Per-block work is minimal: requests go out in batches, the depth is
recomputed every ``_DEPTH_REFRESH`` s, and the rate meter is fed once per received chunk
(``received``).

Rules:
- Data we did not ask for, or that arrives after a cancel, is counted in ``wasted_bytes`` and
  dropped.
- A peer without the fast extension drops our requests when it chokes us: they are asked again
  after its unchoke. A fast peer rejects them one by one instead (``on_reject``); a piece
  rejected too often while unchoked is given back (``PiecesGivenBack("rejected")``).
- The peer is snubbing us once it unchokes us and sends no block for ``snub_timeout`` seconds
  while we wait for one; request timeouts (which give the pieces back) do not restart that
  wait, a choke or a revoke that leaves nothing outstanding ends it, the next block clears it.
- A piece given back (or held when the connection closes) with blocks already received goes to
  the torrent's ``PartialPieces`` with the sender of each block; an assigned piece found there
  is continued from those blocks. Its ``PieceCompleted`` then names every block's sender. A
  revoked piece (another connection finished it) is simply dropped.

The session owns this object and calls it only while the connection is active; it keeps the
peer's state (``peer_choking``, ``allowed_fast``, ``peer_reqq``, ``peer_pieces``) current.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable

from torviz.shared.geometry import TorrentGeometry
from torviz.shared.rate import RateMeter
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire

from .events import Event, PieceCompleted, PiecesGivenBack, WorkNeeded
from .partials import PartialPiece, PartialPieces
from .pipeline import QueueDepthPolicy

__all__ = ["Downloads"]

# Requests are most of what we send: the codec's own frame gives the length and id, and only
# the three fields are packed per block (a third of ``codec.encode``'s cost).
_REQUEST_PREFIX = codec.encode(wire.Request(0, 0, 0))[:5]
_PACK_U32X3 = struct.Struct(">III").pack

_DEPTH_REFRESH = 0.1  # seconds a computed pipeline depth stays valid
_REFILL_BATCH = 64  # blocks (1 MiB): the most the pipeline drains before it is topped up


class _Download:
    """An assigned piece: its buffer and which of its blocks are still to request.

    ``senders`` is None while every block comes from this connection (the usual case, which
    costs nothing per block); a piece continued from a partial one lists each block's sender.
    """

    __slots__ = ("buffer", "rejects", "senders", "to_request", "unreceived")

    def __init__(
        self,
        buffer: bytearray,
        blocks: tuple[tuple[int, int], ...] | list[tuple[int, int]],
        senders: list[str | None] | None = None,
    ) -> None:
        self.buffer = buffer
        self.to_request: deque[tuple[int, int]] = deque(blocks)
        self.unreceived = len(blocks)
        self.rejects = 0
        self.senders = senders


class Downloads:
    """The pieces one connection fetches and the requests outstanding for them.

    Args:
        geometry: the torrent's geometry.
        out: the session's output list (request, cancel and interest frames go there).
        events: the session's event list.
        now: the clock at creation.
        pipeline: how deep to pipeline requests.
        request_timeout: seconds before an unanswered request gives every piece back.
        snub_timeout: seconds without a block, while unchoked and waiting, until snubbed.
        max_rejects: rejects of one piece's blocks tolerated while unchoked.
        allocate: makes piece buffers (every byte is overwritten before a buffer leaves).
        partials: the torrent's half-fetched pieces, shared with the agent's other connections
            (None: a piece given back is dropped).
        sender: this connection's peer key, recorded as the sender of its blocks.
    """

    __slots__ = (
        "_allocate",
        "_depth_until",
        "_depth_value",
        "_downloads",
        "_events",
        "_full_blocks",
        "_geometry",
        "_max_rejects",
        "_out",
        "_outstanding",
        "_partials",
        "_pipeline",
        "_received",
        "_request_timeout",
        "_sender",
        "_snub_timeout",
        "_stalled_since",
        "_starved",
        "_work_requested",
        "allowed_fast",
        "am_interested",
        "peer_choking",
        "peer_pieces",
        "peer_reqq",
        "rate",
        "snubbed",
        "wasted_bytes",
    )

    def __init__(
        self,
        geometry: TorrentGeometry,
        out: list[bytes | bytearray | memoryview],
        events: list[Event],
        now: float,
        *,
        pipeline: QueueDepthPolicy,
        request_timeout: float,
        snub_timeout: float,
        max_rejects: int,
        allocate: Callable[[int], bytearray],
        partials: PartialPieces | None = None,
        sender: str = "",
    ) -> None:
        self._geometry = geometry
        self._partials = partials
        self._sender = sender
        self._out = out
        self._events = events
        self._pipeline = pipeline
        self._request_timeout = request_timeout
        self._snub_timeout = snub_timeout
        self._max_rejects = max_rejects
        self._allocate = allocate
        self._downloads: dict[int, _Download] = {}
        self._outstanding: dict[tuple[int, int], tuple[int, float]] = {}
        self._work_requested = False
        self._starved = False  # the coordinator had nothing for us; wait for news before asking
        # Every piece but the last has the same blocks: list them once, not per assignment.
        self._full_blocks = self._blocks_of(0)
        self._received = 0  # block bytes since the last ``received``
        self._depth_value = 0
        self._depth_until = float("-inf")
        self._stalled_since: float | None = None  # waiting for a block since
        self.peer_choking = True
        self.allowed_fast: set[int] = set()
        """Pieces the peer lets us fetch while it chokes us."""
        self.peer_reqq: int | None = None
        self.peer_pieces = 0
        """How many pieces the peer has; nothing is asked for while it has none."""
        self.am_interested = False
        self.snubbed = False
        self.rate = RateMeter(now)
        self.wasted_bytes = 0

    @property
    def assigned(self) -> tuple[int, ...]:
        return tuple(self._downloads)

    @property
    def outstanding(self) -> int:
        return len(self._outstanding)

    # -- the coordinator --------------------------------------------------------------------------

    def assign(self, pieces: list[int] | tuple[int, ...], now: float) -> None:
        """Fetch these pieces too; an empty list means the coordinator has nothing now."""
        self._work_requested = False
        self._starved = not pieces
        for piece in pieces:
            if piece not in self._downloads and self._geometry.has_piece(piece):
                self._downloads[piece] = self._new_download(piece)
        self._update_interest()
        self.fill(now)

    def revoke(self, pieces: list[int] | tuple[int, ...], now: float) -> None:
        """Stop fetching these pieces (another connection completed them first)."""
        for piece in pieces:
            if self._downloads.pop(piece, None) is None:
                continue
            for key in [key for key in self._outstanding if key[0] == piece]:
                length, _ = self._outstanding.pop(key)
                self._send(wire.Cancel(piece, key[1], length))
        if not self._outstanding:
            self._stalled_since = None  # nothing awaited any more, through no fault of the peer
        self._update_interest()
        self.fill(now)

    def news(self) -> None:
        """The peer announced pieces: worth asking the coordinator again."""
        self._starved = False

    # -- the peer ---------------------------------------------------------------------------------

    def on_block(self, piece: int, offset: int, data: bytes | memoryview) -> None:
        """A block arrived (possibly already written into its piece by ``block_sink``)."""
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
        senders = download.senders
        if senders is not None:
            senders[offset // self._geometry.block_size] = self._sender
        if download.unreceived == 0:
            del self._downloads[piece]
            if senders is None:
                self._events.append(PieceCompleted(piece, download.buffer))
            else:
                self._events.append(
                    PieceCompleted(piece, download.buffer, tuple(s or "" for s in senders))
                )

    def block_sink(self, piece: int, offset: int, length: int) -> memoryview | None:
        """Where the decoder should write a block's payload: straight into its piece."""
        expected = self._outstanding.get((piece, offset))
        download = self._downloads.get(piece)
        if expected is None or download is None or expected[0] != length:
            return None
        return memoryview(download.buffer)[offset : offset + length]

    def received(self, now: float) -> None:
        """The end of one received chunk: meter its blocks at once (not per block)."""
        if self._received:
            self.rate.add(self._received, now)
            self._received = 0
            self.snubbed = False
            self._stalled_since = now if self._outstanding else None

    def on_choke(self, fast: bool) -> None:
        self.peer_choking = True
        self._stalled_since = None
        if not fast:
            # BEP 3: a choke silently drops every request; ask again after unchoke.
            self._requeue_all()

    def on_unchoke(self, now: float) -> None:
        self.peer_choking = False
        if self._outstanding:  # kept over a fast peer's choke: wait afresh
            self._stalled_since = now

    def on_reject(self, piece: int, offset: int, length: int) -> None:
        if self._outstanding.pop((piece, offset), None) is None:
            return
        download = self._downloads.get(piece)
        if download is None:
            return
        download.to_request.appendleft((offset, length))
        if not self.peer_choking:
            download.rejects += 1
            if download.rejects > self._max_rejects:
                self._release([piece], "rejected")

    def set_reqq(self, reqq: int) -> None:
        self.peer_reqq = reqq
        self._depth_until = float("-inf")  # the ceiling changed: recompute now

    # -- timers -----------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Give every piece back after a request timeout; notice a snub."""
        if self._outstanding:
            _, sent_at = next(iter(self._outstanding.values()))
            if now - sent_at >= self._request_timeout:
                self._release(list(self._downloads), "request_timeout")
        deadline = self._snub_deadline()
        if deadline is not None and now >= deadline:
            self.snubbed = True

    def deadline(self) -> float | None:
        """When ``tick`` next has something to do, if ever."""
        deadline = self._snub_deadline()
        if self._outstanding:
            _, sent_at = next(iter(self._outstanding.values()))
            timeout = sent_at + self._request_timeout
            deadline = timeout if deadline is None else min(deadline, timeout)
        return deadline

    def clear(self) -> None:
        """The connection ends: keep what arrived of its pieces for the others."""
        for piece in list(self._downloads):
            self._keep_partial(piece)
        self._downloads.clear()
        self._outstanding.clear()

    # -- requesting -------------------------------------------------------------------------------

    def fill(self, now: float) -> None:
        """Top the pipeline up and ask for work before it runs dry."""
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
                if self._stalled_since is None:
                    self._stalled_since = now
        self._want_more_work(now)

    def _depth(self, now: float) -> int:
        """The pipeline depth to aim for; a rate over seconds needs no re-summing per chunk."""
        if now >= self._depth_until:
            rate = self.rate.rate(now)
            self._depth_value = self._pipeline.depth(rate, self.peer_reqq)
            self._depth_until = now + _DEPTH_REFRESH
        return self._depth_value

    def _want_more_work(self, now: float) -> None:
        """Ask for more pieces before the pipeline runs dry, once per answer."""
        if self._work_requested or self._starved or not self.peer_pieces:
            return
        depth = self._depth(now)
        block_size = self._geometry.block_size
        queued_bytes = sum(len(d.to_request) for d in self._downloads.values()) * block_size
        wanted_bytes = 2 * depth * block_size
        if queued_bytes < wanted_bytes:
            count = max(1, -(-(wanted_bytes - queued_bytes) // self._geometry.piece_length))
            self._work_requested = True
            self._events.append(WorkNeeded(count))

    def _snub_deadline(self) -> float | None:
        if self.snubbed or self.peer_choking or self._stalled_since is None:
            return None
        return self._stalled_since + self._snub_timeout

    def _blocks_of(self, piece: int) -> tuple[tuple[int, int], ...]:
        return tuple((block.offset, block.length) for block in self._geometry.blocks(piece))

    def _new_download(self, piece: int) -> _Download:
        size = self._geometry.piece_size(piece)
        full = size == self._geometry.piece_length
        blocks = self._full_blocks if full else self._blocks_of(piece)
        partial = self._partials.take(piece) if self._partials is not None else None
        if partial is None or len(partial.senders) != len(blocks):
            return _Download(self._allocate(size), blocks)
        missing = [
            block for block, sender in zip(blocks, partial.senders, strict=True) if sender is None
        ]
        return _Download(partial.buffer, missing, partial.senders)

    def _keep_partial(self, piece: int) -> None:
        """Deposit what arrived of ``piece`` (still in ``_downloads``) in the shared store."""
        download = self._downloads.get(piece)
        if self._partials is None or download is None:
            return
        blocks = (
            self._full_blocks
            if len(download.buffer) == self._geometry.piece_length
            else (self._blocks_of(piece))
        )
        if download.unreceived >= len(blocks):
            return  # nothing arrived
        block_size = self._geometry.block_size
        senders = download.senders
        if senders is None:
            missing = {offset for offset, _ in download.to_request}
            missing.update(offset for (p, offset) in self._outstanding if p == piece)
            senders = [None if offset in missing else self._sender for offset, _ in blocks]
        else:
            senders = list(senders)
            for offset, _ in download.to_request:
                senders[offset // block_size] = None
            for p, offset in self._outstanding:
                if p == piece:
                    senders[offset // block_size] = None
        self._partials.deposit(piece, PartialPiece(download.buffer, senders))

    def _requeue_all(self) -> None:
        for (piece, offset), (length, _) in reversed(list(self._outstanding.items())):
            download = self._downloads.get(piece)
            if download is not None:
                download.to_request.appendleft((offset, length))
        self._outstanding.clear()

    def _release(self, pieces: list[int], reason: str) -> None:
        for piece in pieces:
            self._keep_partial(piece)
            self._downloads.pop(piece, None)
            for key in [key for key in self._outstanding if key[0] == piece]:
                length, _ = self._outstanding.pop(key)
                self._send(wire.Cancel(piece, key[1], length))
        if pieces:
            self._events.append(PiecesGivenBack(tuple(pieces), reason))
        self._work_requested = False
        self._update_interest()

    def _update_interest(self) -> None:
        interested = bool(self._downloads)
        if interested != self.am_interested:
            self.am_interested = interested
            self._send(wire.Interested() if interested else wire.NotInterested())

    def _send(self, message: wire.Message) -> None:
        self._out.append(codec.encode(message))
