"""One peer connection's protocol state, without I/O, with the clock passed in.

The connection actor feeds received bytes to ``receive``, coordinator commands to ``assign``,
``revoke`` and ``set_choke``, and the time to ``tick``; after each call it sends what
``take_output`` returns and forwards what ``take_events`` returns. Nothing here blocks or reads
a clock, so two sessions can be joined in memory and tested with a fake clock.

Strategy: the session runs the handshake, dispatches the peer's messages and owns the timers;
the two directions of transfer live in their own classes, which append to the same output and
event lists: ``Downloads`` (``download.py``, the hot path: assigned pieces and our pipelined
requests, each block written straight into its piece) and ``Uploads`` (``upload.py``: the
peer's requests, checked and queued, and the blocks we serve). A piece block received is
handled without going through ``match``.

Seeding: the session never unchokes on its own; ``set_choke`` carries the coordinator's choker
decision. The connection reads the piece at ``next_upload`` (whole, from the agent's piece
cache) and hands it to ``serve``, which queues each requested block as a piece header plus a
memoryview of the piece: the block is never copied on its way to the socket. A peer speaking
the fast extension that has fewer than ``allowed_fast_count`` pieces is granted its BEP 6
allowed-fast set (the pieces of it we have), served even while we choke it.

Rules:
- A peer that breaks the protocol (bad frame, piece index out of range, malformed bitfield,
  fast-extension messages it did not negotiate, requests ``Uploads`` refuses to tolerate) ends
  the session with ``Closed(reason)``; the session never raises for remote misbehaviour.
  Requests past our reqq from a peer that could not know it are refused, never a reason to end.
- Fast-extension messages go only to a peer that negotiated the extension.
- Metadata mode (``geometry=None``, a magnet's torrent before its info dictionary): no bitfield
  (``HaveNone`` to a fast peer); the peer's have-state is kept (``KeptHaves``) for
  ``learn_geometry``, which upgrades the session in place. Until then ``Downloads`` and
  ``Uploads`` run on a one-piece placeholder with nothing had or assigned (a request is refused
  as for a piece we lack); no uninterested timer. BEP 10/9/11: ``extensions.py``.
- A peer that sends nothing for ``idle_timeout`` seconds, or with which neither side has been
  interested for ``uninterested_timeout`` seconds (noticed at the next tick), is disconnected.
  Keep-alives go out after ``keepalive_interval`` seconds without sending.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.errors import TorvizError, WireError
from torviz.shared.geometry import PieceIndexError, TorrentGeometry
from torviz.shared.rate import RateMeter
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire import codec
from torviz.shared.wire import messages as wire
from torviz.shared.wire.handshake import Handshake, HandshakeReader, encode_handshake

from .download import Downloads
from .events import (
    BitfieldReceived,
    Closed,
    Event,
    HandshakeDone,
    HaveReceived,
    PeerInfo,
    PeerInterestChanged,
    PieceCompleted,
    PiecesGivenBack,
    WorkNeeded,
)
from .extensions import DhtPort, Extensions, KeptHaves
from .partials import PartialPieces
from .session_config import SessionConfig
from .session_view import SessionView
from .upload import Uploads

__all__ = [
    "BitfieldReceived",
    "Closed",
    "Event",
    "HandshakeDone",
    "HaveReceived",
    "PeerInfo",
    "PeerInterestChanged",
    "PeerSession",
    "PieceCompleted",
    "PiecesGivenBack",
    "SessionConfig",
    "WorkNeeded",
]


_DEFAULT_CONFIG = SessionConfig()
_CLOSE_MESSAGES = {
    "handshake_timeout": "the peer did not complete the handshake in time",
    "idle_timeout": "the peer sent nothing for too long",
    "uninterested": "neither side was interested for too long",
}


# What Downloads and Uploads run on in metadata mode: one piece, never had nor assigned.
_PLACEHOLDER = TorrentGeometry(piece_length=16384, total_length=16384, file_lengths=(16384,))


class Phase(enum.Enum):
    HANDSHAKE = "handshake"
    ACTIVE = "active"
    CLOSED = "closed"


class PeerSession(SessionView):
    """The protocol state of one connection to one peer for one torrent.

    Args:
        info_hash, peer_id: the torrent and our peer id for it.
        geometry: the torrent's geometry; None for metadata mode (see ``learn_geometry``).
        have: the pieces we have (copied); ignored in metadata mode.
        now: the clock at creation.
        config: limits and timers.
        address: the peer's address as we see it (``yourip``, the allowed-fast set); None
            leaves both out.
        partials: the torrent's half-fetched pieces, shared by the agent's connections.
        sender: this connection's peer key (recorded as the sender of its blocks).
        info: the raw info dictionary, served over ``ut_metadata`` (empty: none to serve).
        pex: whether PeX is allowed (``ut_pex`` offered, the peer's messages reported).
        dht_port: our DHT node's UDP port (the DHT bit, ``PORT``: ``extensions.DhtPort``).
    """

    def __init__(
        self,
        *,
        info_hash: InfoHash,
        peer_id: PeerId,
        geometry: TorrentGeometry | None,
        have: Bitfield | None,
        now: float,
        config: SessionConfig = _DEFAULT_CONFIG,
        address: PeerAddress | None = None,
        partials: PartialPieces | None = None,
        sender: str = "",
        info: bytes = b"",
        pex: bool = True,
        dht_port: int = 0,
    ) -> None:
        self.info_hash = info_hash
        self.geometry = geometry
        self._layout = geometry or _PLACEHOLDER  # what Downloads and Uploads run on
        self.config = config
        self.address = address
        self._our_id = peer_id
        self._our_have = Bitfield(self._layout.num_pieces)  # nothing, in metadata mode
        if geometry is not None and have is not None:
            self._our_have = have.copy()
        self._kept = KeptHaves() if geometry is None else None
        self._partials = partials
        self._sender = sender
        self.phase = Phase.HANDSHAKE
        self._handshake = HandshakeReader()
        # Both lists stay the same objects for good: ``Downloads`` and ``Uploads`` append too.
        self._out: list[bytes | bytearray | memoryview] = []
        self._events: list[Event] = []
        self._started = now
        self._last_received = now
        self._last_sent = now
        self._uninterested_since: float | None = None
        # Protocol flags, BEP 3 names (the downloading ones live in ``Downloads``).
        self.am_choking = True
        self.peer_interested = False
        self.peer_id: PeerId | None = None
        self.peer_fast = False
        self.peer_extensions = False
        self.peer_have = Bitfield(geometry.num_pieces if geometry is not None else 0)
        self._downloads = self._new_downloads(now)
        self._decoder = codec.MessageDecoder(block_sink=self._downloads.block_sink)
        self._ext = Extensions(
            self._out,
            self._events,
            info=info if geometry is not None else b"",
            pex=pex,
            max_metadata_size=config.max_metadata_size,
        )
        self._dht = DhtPort(dht_port, self._out, self._events)
        self._uploads: Uploads | None = None  # the seeding side, from the handshake on
        self.upload_rate = RateMeter(now)
        self.download_rate = self._downloads.rate
        self._out.append(encode_handshake(Handshake(info_hash, peer_id, self._dht.reserved())))

    # -- inputs ---------------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Bytes arrived from the peer."""
        if self.phase is Phase.CLOSED or not data:
            return
        self._last_received = now
        downloads = self._downloads
        try:
            if self.phase is Phase.HANDSHAKE:
                for item in self._handshake.feed(data):
                    if isinstance(item, Handshake):
                        self._on_handshake(item)
                if not self.active:
                    return
                data = self._handshake.take_surplus()
            on_block = downloads.on_block
            for message in self._decoder.feed(data):
                if type(message) is wire.Piece:  # the hot path skips the match below
                    on_block(message.piece, message.offset, message.data)
                else:
                    self._on_message(message, now)
                    if not self.active:
                        return
        except TorvizError as exc:
            self.close(exc.reason, exc.message)
            return
        finally:
            downloads.received(now)
        downloads.fill(now)

    def learn_geometry(
        self, geometry: TorrentGeometry, have: Bitfield, info: bytes, pex: bool, now: float
    ) -> None:
        """The info dictionary is in: leave metadata mode, in place.

        The peer's kept have-state is checked against the real piece count (a bad one closes
        the session, with a bad bitfield's reasons) and reported as ``BitfieldReceived`` if the
        peer told any; we send our have-state if we have pieces, and a second extension
        handshake (now with ``metadata_size``). A session that has its geometry is left alone.

        Raises:
            ValueError: the session already has another geometry (a bug in the caller).
        """
        if self.geometry is not None:
            if geometry != self.geometry:
                raise ValueError("the session already has a different geometry")
            return
        kept = self._kept
        assert kept is not None
        self.geometry = self._layout = geometry
        self._kept = None
        self._our_have = have.copy()
        self.peer_have = Bitfield(geometry.num_pieces)
        self._ext.info, self._ext.pex = info, pex
        old, new = self._downloads, self._new_downloads(now)
        new.peer_choking, new.rate, new.wasted_bytes = old.peer_choking, old.rate, old.wasted_bytes
        if old.peer_reqq is not None:
            new.set_reqq(old.peer_reqq)
        new.allowed_fast.update(p for p in kept.allowed_fast if geometry.has_piece(p))
        self._downloads = new
        self._decoder.block_sink = new.block_sink
        if self.phase is not Phase.ACTIVE:
            return  # the handshake sends everything
        self._uploads = self._new_uploads()
        if self.peer_extensions:
            self._send_extension_handshake(later=True)
        if len(have):
            self._send_have_state()
        if kept.told:
            try:
                self.peer_have = kept.replay(geometry.num_pieces)
            except TorvizError as exc:
                self.close(exc.reason, exc.message)
                return
            self._on_have_state()
        new.fill(now)

    def request_metadata(self, pieces: Sequence[int]) -> None:
        """Ask the peer for these BEP 9 pieces (ignored unless it offers ``ut_metadata``)."""
        if self.phase is Phase.ACTIVE:
            self._ext.request_metadata(pieces)

    def send_pex(
        self, added: Sequence[tuple[PeerAddress, int]], dropped: Sequence[PeerAddress]
    ) -> None:
        """Send one ``ut_pex`` message (ignored unless PeX is allowed and the peer offers it)."""
        if self.phase is Phase.ACTIVE:
            self._ext.send_pex(added, dropped)

    def assign(self, pieces: list[int] | tuple[int, ...], now: float) -> None:
        """The coordinator handed us these pieces to fetch from this peer (none: nothing yet)."""
        if self.phase is Phase.ACTIVE and self.geometry is not None:
            self._downloads.assign(pieces, now)

    def revoke(self, pieces: list[int] | tuple[int, ...], now: float) -> None:
        """Stop fetching these pieces (another connection completed them first)."""
        if self.phase is Phase.ACTIVE and self.geometry is not None:
            self._downloads.revoke(pieces, now)

    def piece_acquired(self, piece: int) -> None:
        """We verified ``piece`` (from any peer, a piece of the torrent: the agent's registry
        checked it where ``BroadcastHave`` came in): tell this one."""
        if self.geometry is None or piece in self._our_have:
            return
        self._our_have.add(piece)
        if self.phase is Phase.ACTIVE and self._uploads is not None:
            self._send(wire.Have(piece))
            self._uploads.piece_acquired(piece)

    def set_choke(self, choked: bool) -> None:
        """The coordinator's choker decided: choke or unchoke the peer.

        Choking drops the peer's queued requests, except those of allowed-fast pieces; a peer
        with the fast extension gets a reject for each dropped one (BEP 6).
        """
        if self.phase is Phase.CLOSED or choked == self.am_choking:
            return
        self.am_choking = choked
        uploads = self._uploads
        if uploads is not None:  # else the handshake sends the state
            if choked:
                uploads.choke()
            else:
                uploads.unchoke()

    def next_upload(self) -> int | None:
        """The piece whose bytes ``serve`` needs next, if the peer waits for any."""
        if self.phase is not Phase.ACTIVE or self._uploads is None:
            return None
        return self._uploads.head()

    def upcoming_uploads(self, count: int) -> list[int]:
        """The first ``count`` distinct pieces of the peer's queued requests, oldest first."""
        if self.phase is not Phase.ACTIVE or self._uploads is None:
            return []
        return self._uploads.pieces_ahead(count)

    def serve(
        self, piece: int, data: bytes | bytearray | memoryview, now: float, budget: int
    ) -> int:
        """Send the oldest queued requests of ``piece``, taken from ``data`` (the whole piece).

        Each block goes out as a piece header and a memoryview of ``data``: ``data`` must not
        change afterwards. Serves at least one request when the oldest is of ``piece``, then
        more while they are of ``piece`` and fit in ``budget`` bytes.

        Returns:
            The block bytes queued for the peer.

        Raises:
            ValueError: ``data`` is not the size of ``piece`` (a bug in the caller).
        """
        uploads = self._uploads
        if self.phase is not Phase.ACTIVE or uploads is None or self.geometry is None:
            return 0
        view = memoryview(data).cast("B")
        if view.nbytes != self.geometry.piece_size(piece):
            raise ValueError(f"piece {piece} is {self.geometry.piece_size(piece)} bytes")
        sent = uploads.serve(piece, view, budget)
        if sent:
            self.upload_rate.add(sent, now)
        return sent

    def upload_failed(self, piece: int) -> None:
        """``piece`` could not be read: drop its queued requests (rejected for a fast peer)."""
        if self.phase is Phase.ACTIVE and self._uploads is not None:
            self._uploads.drop_piece(piece)

    def tick(self, now: float) -> None:
        """Let timers fire: handshake and idle timeouts, keep-alives, request timeouts, snubs."""
        if self.phase is Phase.CLOSED:
            return
        if self.phase is Phase.HANDSHAKE:
            if now - self._started >= self.config.handshake_timeout:
                self.close("handshake_timeout")
            return
        if now - self._last_received >= self.config.idle_timeout:
            self.close("idle_timeout")
            return
        if self._downloads.am_interested or self.peer_interested or self._kept is not None:
            self._uninterested_since = None
        elif self._uninterested_since is None:
            self._uninterested_since = now
        elif now - self._uninterested_since >= self.config.uninterested_timeout:
            self.close("uninterested")
            return
        if now - self._last_sent >= self.config.keepalive_interval:
            self._send(wire.KeepAlive())
        self._downloads.tick(now)

    def next_deadline(self) -> float:
        """When ``tick`` next has something to do."""
        if self.phase is Phase.HANDSHAKE:
            return self._started + self.config.handshake_timeout
        deadline = min(
            self._last_received + self.config.idle_timeout,
            self._last_sent + self.config.keepalive_interval,
        )
        downloading = self._downloads.deadline()
        if downloading is not None:
            deadline = min(deadline, downloading)
        if self._uninterested_since is not None:
            deadline = min(deadline, self._uninterested_since + self.config.uninterested_timeout)
        return deadline

    def close(self, reason: str, message: str = "") -> None:
        """End the session (idempotent): ``Closed(reason, message)`` is its last event."""
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        self._downloads.clear()
        if self._uploads is not None:
            self._uploads.clear()
        self._events.append(Closed(reason, message or _CLOSE_MESSAGES.get(reason, reason)))

    # -- outputs --------------------------------------------------------------------------------

    def take_output(self, now: float) -> list[bytes | bytearray | memoryview]:
        """Bytes to send to the peer, in order; the caller sends them at ``now``."""
        out = self._out
        if not out:
            return []
        taken = out.copy()
        out.clear()
        self._last_sent = now
        if self._uploads is not None:
            self._uploads.queued_bytes = 0
            self._uploads.pending_rejects = 0
        return taken

    @property
    def has_output(self) -> bool:
        """Whether ``take_output`` would return bytes (the writer has work)."""
        return bool(self._out)

    def take_events(self) -> list[Event]:
        events = self._events
        if not events:
            return []
        taken = events.copy()
        events.clear()
        return taken

    @property
    def active(self) -> bool:
        """Handshakes exchanged and not closed."""
        return self.phase is Phase.ACTIVE

    # -- handling the peer ------------------------------------------------------------------------

    def _on_handshake(self, handshake: Handshake) -> None:
        if handshake.info_hash != self.info_hash:
            raise WireError("wrong_info_hash", "the peer answered for another torrent")
        if handshake.peer_id == self._our_id:
            raise WireError("connected_to_self", "the peer is ourselves")
        self.peer_id = handshake.peer_id
        self.peer_fast = handshake.reserved.fast
        self.peer_extensions = handshake.reserved.extension_protocol
        self._uploads = self._new_uploads()
        self.phase = Phase.ACTIVE
        self._events.append(HandshakeDone(handshake.peer_id, handshake.reserved))
        if self.peer_extensions:
            self._send_extension_handshake()
        self._dht.on_handshake(handshake.reserved)
        if self.geometry is not None:
            self._send_have_state()
        elif self.peer_fast:
            self._send(wire.HaveNone())
        if not self.am_choking:
            self._send(wire.Unchoke())

    def _new_downloads(self, now: float) -> Downloads:
        config = self.config
        return Downloads(
            self._layout,
            self._out,
            self._events,
            now,
            pipeline=config.pipeline,
            request_timeout=config.request_timeout,
            snub_timeout=config.snub_timeout,
            max_rejects=config.max_rejects_per_piece,
            allocate=config.allocate,
            partials=self._partials if self.geometry is not None else None,
            sender=self._sender,
        )

    def _new_uploads(self) -> Uploads:
        uploads = Uploads(
            self._layout,
            self._our_have,
            self._out,
            fast=self.peer_fast,
            choking=self.am_choking,
            limit=self.config.our_reqq,
            max_bad=self.config.max_bad_requests,
        )
        # A peer that sent its extension handshake got ours, which names our reqq.
        uploads.knows_limit = self.peer_extensions and self._ext.peer is not None
        return uploads

    def _send_extension_handshake(self, later: bool = False) -> None:
        config = self.config
        ext_args = (config.client_name, config.listen_port, config.our_reqq, self.address)
        self._ext.send_handshake(*ext_args, later=later)

    def _send_have_state(self) -> None:
        have = self._our_have
        if self.peer_fast and have.complete:
            self._send(wire.HaveAll())
        elif self.peer_fast and not len(have):
            self._send(wire.HaveNone())
        elif len(have):
            self._send(wire.Bitfield(have.to_bytes()))

    def _on_message(self, message: wire.Message, now: float) -> None:
        downloads = self._downloads
        uploads = self._uploads
        assert uploads is not None  # messages are decoded only after the handshake
        kept = self._kept
        match message:
            case wire.Have(piece=number) if kept is not None:
                kept.have(number)
            case wire.Bitfield(bits=bits) if kept is not None:
                kept.bitfield(bits)
            case wire.HaveAll() | wire.HaveNone() if kept is not None:
                all_ = type(message) is wire.HaveAll
                self._require_fast("have_all" if all_ else "have_none")
                kept.have_all(all_)
            case wire.AllowedFast(piece=piece) if kept is not None:
                self._require_fast("allowed_fast")
                kept.add_allowed_fast(piece)
            case wire.Piece(piece=piece, offset=offset, data=data):
                downloads.on_block(piece, offset, data)
            case wire.Request(piece=piece, offset=offset, length=length):
                uploads.request(piece, offset, length)
            case wire.Have(piece=number):
                try:
                    piece = self._layout.piece_index(number)
                except PieceIndexError as exc:
                    raise WireError("bad_piece_index", str(exc)) from None
                if piece not in self.peer_have:
                    self.peer_have.add(piece)
                    downloads.peer_pieces = len(self.peer_have)
                    downloads.news()
                    self._events.append(HaveReceived(piece))
            case wire.Bitfield(bits=bits):
                try:
                    self.peer_have = Bitfield.from_bytes(bits, self._layout.num_pieces)
                except BitfieldError as exc:
                    raise WireError(exc.reason, str(exc)) from None
                self._on_have_state()
            case wire.HaveAll():
                self._require_fast("have_all")
                self.peer_have = Bitfield.full(self._layout.num_pieces)
                self._on_have_state()
            case wire.HaveNone():
                self._require_fast("have_none")
                self.peer_have = Bitfield(self._layout.num_pieces)
                self._on_have_state()
            case wire.Choke():
                downloads.on_choke(self.peer_fast)
            case wire.Unchoke():
                downloads.on_unchoke(now)
            case wire.Interested() | wire.NotInterested():
                interested = type(message) is wire.Interested
                if interested != self.peer_interested:
                    self.peer_interested = interested
                    self._events.append(PeerInterestChanged(interested))
            case wire.Cancel(piece=piece, offset=offset, length=length):
                uploads.cancel(piece, offset, length)
            case wire.RejectRequest(piece=piece, offset=offset, length=length):
                self._require_fast("reject")
                downloads.on_reject(piece, offset, length)
            case wire.AllowedFast(piece=piece):
                self._require_fast("allowed_fast")
                if self._layout.has_piece(piece):
                    downloads.allowed_fast.add(piece)
            case wire.SuggestPiece():
                self._require_fast("suggest")  # a hint we do not use
            case wire.Extended(ext_id=0, payload=payload):
                ext = self._ext.on_handshake(payload)
                if ext.reqq is not None and ext.reqq > 0:
                    downloads.set_reqq(ext.reqq)
                # It speaks BEP 10, so it got ours, which names our reqq.
                uploads.knows_limit = self.peer_extensions
            case wire.Extended(ext_id=ext_id, payload=payload):
                self._ext.on_message(ext_id, payload, now)
            case wire.Port(port=port):
                self._dht.on_port(port)

    def _on_have_state(self) -> None:
        count = len(self.peer_have)
        self._downloads.peer_pieces = count
        if count:
            self._downloads.news()
        self._events.append(BitfieldReceived(self.peer_have.copy()))
        uploads = self._uploads
        fast_count = self.config.allowed_fast_count
        # BEP 6: the allowed-fast set lets a peer with (almost) nothing get started.
        if uploads is not None and self.address is not None and count < fast_count:
            uploads.offer_allowed_fast(self.address.host, self.info_hash, fast_count)

    def _require_fast(self, what: str) -> None:
        if not self.peer_fast:
            raise WireError("fast_not_negotiated", f"peer sent {what} without the fast extension")

    def _send(self, message: wire.Message) -> None:
        self._out.append(codec.encode(message))
