"""One peer connection as a pykka actor: a TCP socket, three or four greenlets and a session.

Strategy (this is the download hot path):
- The reader greenlet dials (or takes a socket a listener accepted), then loops on
  ``recv_into`` one preallocated buffer and hands ``memoryview(buf)[:n]`` to the session, whose
  decoder copies each block straight into its piece buffer; the receive buffer is reused at
  once. It starts at 64 KiB and grows to 1 MiB for a peer that fills it, so a fast peer costs
  one Python round per ~50 blocks and an idle one little memory. Events are dispatched right
  there: a finished piece goes to the storage agent as ``StorePiece`` plus its buffer as the
  data frame (zero-copy; the buffer is never touched again), everything else to the
  coordinator.
- The writer greenlet sleeps on an event; whoever changed the session wakes it, and it sends
  whatever the session has queued: small frames joined in one ``sendall``, anything holding
  served blocks as a gathered ``sendmsg`` of the headers and the piece memoryviews (no copy).
- The timer greenlet sleeps until the session's next deadline (at most a second) and ticks it.
- The uploader greenlet, started when the peer first queues requests with us, gets the piece
  of the oldest one from the agent's piece cache (``Uplink.read_piece``, whole, waited for
  with a bound) and lets the session send a run of its blocks. What it reads ahead, holds and
  when it pauses for the writer is the pure ``UploaderPolicy`` (``core/uploader.py``).
- The actor's inbox carries the agent's commands (``core/commands.py``: ``Assign``, ``Revoke``,
  ``Acquired``, ``SetChoked``, ``Disconnect``, and for BEP 9 / BEP 11 ``FetchMetadata``,
  ``OfferPeers`` and ``LearnGeometry``); each calls the session and wakes the writer.
Session events become bus messages through the pure ``to_bus`` (``core/translate.py``); this
actor only sends them. Under gevent nothing preempts: every session call runs to completion, so
the greenlets and the inbox never interleave inside the session and no lock is needed.

Fairness: a busy gevent socket never blocks in ``recv``, so the reader would starve every other
connection (and the writer of its own requests). It yields with ``gevent.sleep(0)`` after a chunk
that completed a piece or queued output, and at least every ``YIELD_BYTES`` bytes.

Back-pressure: while the storage link's window of unanswered pieces (or its socket's queue) is
full the reader stops reading, and TCP flow control slows the peer: memory stays bounded by the
link's window and the pieces in flight.

Handshake: ``PeerConnected`` is sent once ``Uplink.claim`` made sure no other connection of the
torrent reached the same peer id. An incoming connection comes with the accepted socket and the
48 bytes the listener read to route it (``sock``, ``preread``), read exactly as from a dial.

Magnet torrents: a session without geometry is in metadata mode until ``LearnGeometry`` gives
it one; piece commands that reach it before are ignored. A metadata piece the bus cannot carry
(``translate.py``) is dropped and counted; past ``MAX_REFUSED_METADATA`` the peer is dropped
with ``bad_metadata_message``. A peer may repeat its extension handshake (BEP 10): one that
changes nothing is not reported again, and at most ``MAX_EXTENSION_REPORTS`` are, so a peer
cannot flood the bus with them.

Ending: the first of a session ``Closed``, a socket error or EOF, a ``Disconnect`` command or
an actor stop names the reason. The actor stops itself; ``on_stop`` (or ``on_failure``) kills the
greenlets, sends what the session still queued if the socket takes it at once (our handshake,
the rejects before a drop), closes the socket and reports once: ``PeerDisconnected`` after
``PeerConnected``, else ``PeerConnectFailed`` for a dial (an incoming one is only logged), then
``Uplink.ended``. Remote misbehaviour is a reason code, never a crashed actor.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import pykka

from torviz.shared import bus
from torviz.shared.bus import DisconnectReason
from torviz.shared.errors import TorvizError
from torviz.shared.runtime.logging import with_context
from torviz.shared.types import PeerAddress

from .core.commands import (
    PIECE_COMMANDS,
    Acquired,
    Assign,
    Disconnect,
    FetchMetadata,
    LearnGeometry,
    OfferPeers,
    Revoke,
    SetChoked,
)
from .core.events import Closed, Event, HandshakeDone, PeerInfo, PieceCompleted, PiecesGivenBack
from .core.piece_cache import ReadError
from .core.session import PeerSession
from .core.translate import NOTHING, Origin, to_bus
from .core.uploader import UploaderPolicy
from .uplink import Uplink, peer_stats

__all__ = [
    "CONNECT_TIMEOUT",
    "MAX_EXTENSION_REPORTS",
    "MAX_REFUSED_METADATA",
    "RECV_BUFFER",
    "RECV_BUFFER_MAX",
    "YIELD_BYTES",
    "PeerConnection",
    "Uplink",
]

log = logging.getLogger(__name__)

RECV_BUFFER = 64 * 1024
"""Initial receive buffer: what a slow or idle peer costs."""
RECV_BUFFER_MAX = 1024 * 1024
"""A reader whose buffer comes back full grows it up to this: fewer, larger reads amortise
one Python round (and one system call) over up to 64 blocks. Measured on loopback: 880 KB per
read and ~15% less CPU than 256 KiB reads."""
YIELD_BYTES = 1024 * 1024
"""Bytes read back to back before the reader yields to other greenlets regardless."""
CONNECT_TIMEOUT = 10.0
"""Seconds a dial may take before ``PeerConnectFailed("connect_timeout")``."""
READ_WAIT = 45.0
"""Seconds the uploader waits for a piece from the cache before it gives the requests up."""
MAX_REFUSED_METADATA = 3
"""Metadata messages the bus cannot carry that a peer may send before it is dropped."""
MAX_EXTENSION_REPORTS = 8
"""``PeerExtensions`` sent for one connection at most (a peer may update its handshake)."""
_JOIN_BELOW = 64 * 1024  # output smaller than this is joined into one buffer: one cheap send
_FLUSH_ITEMS = 4096  # what a closing connection tries to send at most, without waiting
_FLUSH_BYTES = 64 * 1024
_IOV_MAX = 1024  # buffers per sendmsg (the Linux limit)
_TIMER_MAX_SLEEP = 1.0  # deadlines move (new requests, data received): re-check at least this often
_TIMER_MIN_SLEEP = 0.01
_STORAGE_POLL = 0.001  # seconds between checks while the storage link is backed up ...
_STORAGE_POLL_MAX = 0.05  # ... doubling up to this
_STOP_GREENLETS_TIMEOUT = 1.0


def _socket_error(exc: OSError, address: PeerAddress, *, dialling: bool) -> tuple[str, str]:
    """A reason code and a readable line for a socket failure."""
    timeout = DisconnectReason.CONNECT_TIMEOUT if dialling else DisconnectReason.SOCKET_TIMEOUT
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError
        return timeout, f"{address} did not answer in time"
    code = exc.errno
    reason = {
        errno.ECONNREFUSED: DisconnectReason.CONNECTION_REFUSED,
        errno.ECONNRESET: DisconnectReason.CONNECTION_RESET,
        errno.EPIPE: DisconnectReason.CONNECTION_RESET,
        errno.ECONNABORTED: DisconnectReason.CONNECTION_RESET,
        errno.EHOSTUNREACH: DisconnectReason.UNREACHABLE,
        errno.ENETUNREACH: DisconnectReason.UNREACHABLE,
        errno.EADDRNOTAVAIL: DisconnectReason.UNREACHABLE,
        errno.ETIMEDOUT: timeout,
    }.get(code or 0, DisconnectReason.SOCKET_ERROR)
    return reason, f"{address}: {exc.strerror or exc}"


class PeerConnection(pykka.ThreadingActor):
    """The actor owning one peer socket and its session.

    Args:
        key: the agent's unique name for this connection (``"pa1/17"``).
        address: the peer's address (dialled, or where an accepted connection came from).
        session: a fresh session; this actor is the only one that calls it from now on.
        uplink: the way to the coordinator and the storage agent.
        sock: an accepted socket (incoming); ``None`` dials ``address``.
        preread: bytes the listener already read from ``sock`` (the handshake header).
        connect_timeout: seconds a dial may take.
        bind_host: the local address to dial from (same family as ``address``), if any.
        clock: monotonic seconds, the session's ``now``.
    """

    def __init__(
        self,
        *,
        key: str,
        address: PeerAddress,
        session: PeerSession,
        uplink: Uplink,
        sock: socket.socket | None = None,
        preread: bytes = b"",
        connect_timeout: float = CONNECT_TIMEOUT,
        bind_host: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.key = key
        self.address = address
        self.incoming = sock is not None
        self._session = session
        self._info_hash = session.info_hash
        self._uplink = uplink
        self._origin = Origin(session.info_hash, key, address, incoming=sock is not None)
        self._sock = sock
        self._preread = preread
        self._connect_timeout = connect_timeout
        self._bind_host = bind_host
        self._clock = clock
        self._wake = gevent.event.Event()
        self._upload_wake = gevent.event.Event()
        self._drained = gevent.event.Event()  # the writer finished a send
        self._sending = 0  # bytes the writer is sending right now (a gathered send)
        self._writing = False  # the writer is inside a send: a flush would interleave
        self._uploader: gevent.Greenlet[Any, Any] | None = None
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._outcome: tuple[str, str] | None = None
        self._announced = False  # PeerConnected was sent
        self._reported = False
        self._refused = 0  # metadata messages not forwarded (see MAX_REFUSED_METADATA)
        self._extension_reports: list[tuple[bus.Message, ...]] = []  # PeerExtensions sent
        self._reads = 0  # recv_into calls and bytes, logged at the end: how well reads batch
        self._bytes_read = 0
        self._log = with_context(log, info_hash=session.info_hash, peer=key)

    # -- actor life -------------------------------------------------------------------------------

    def on_start(self) -> None:
        self._greenlets.append(gevent.spawn(self._run))

    def on_receive(self, message: Any) -> None:
        if self._outcome is not None:
            return
        session = self._session
        if isinstance(message, PIECE_COMMANDS) and session.metadata_mode:
            return  # no geometry yet: nothing to act on (the agent does not route these)
        match message:
            case Assign(pieces):
                session.assign(pieces, self._clock())
            case Revoke(pieces):
                session.revoke(pieces, self._clock())
            case Acquired(piece):
                session.piece_acquired(piece)
            case SetChoked(choked):
                session.set_choke(choked)
            case FetchMetadata(pieces):
                session.request_metadata(pieces)
            case OfferPeers(added, dropped):
                session.send_pex(added, dropped)
            case LearnGeometry(geometry, have, info, pex):
                if session.metadata_mode:
                    session.learn_geometry(geometry, have, info, pex, self._clock())
            case Disconnect(reason, text):
                self._end(reason, text)
                return
            case _:
                self._log.warning("unexpected message %r", message)
                return
        self._after_session_call()

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._end(DisconnectReason.INTERNAL_ERROR, f"connection actor failed: {exception_value!r}")
        self._close()

    # -- the greenlets ----------------------------------------------------------------------------

    def _run(self) -> None:
        """Dial, start the writer and the timer, then read until the connection ends."""
        try:
            sock = self._open()
            if sock is None or self._outcome is not None:  # failed, or told to stop meanwhile
                return
            self._greenlets.append(gevent.spawn(self._write_loop, sock))
            self._greenlets.append(gevent.spawn(self._timer_loop))
            self._wake.set()  # our handshake is queued in the session
            if self._preread:
                self._session.receive(self._preread, self._clock())
                self._preread = b""
                self._after_session_call()
            self._read_loop(sock)
        except OSError as exc:
            self._end(*_socket_error(exc, self.address, dialling=False))
        except Exception as exc:  # a bug here must still close and report the connection
            self._log.exception("reader failed")
            self._end(DisconnectReason.INTERNAL_ERROR, f"reader failed: {exc!r}")

    def _open(self) -> socket.socket | None:
        """The connected socket, or None after reporting why the dial failed."""
        sock = self._sock
        try:
            if sock is None:
                # An address is always an IP literal: connect directly, never through a
                # resolver (gevent's would start a thread pool for nothing).
                family = socket.AF_INET6 if self.address.is_ipv6 else socket.AF_INET
                sock = self._sock = socket.socket(family, socket.SOCK_STREAM)
                if self._bind_host is not None and (":" in self._bind_host) == (
                    family == socket.AF_INET6
                ):
                    sock.bind((self._bind_host, 0))
                sock.settimeout(self._connect_timeout)
                sock.connect((self.address.host, self.address.port))
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            self._end(*_socket_error(exc, self.address, dialling=True))
            return None
        return sock

    def _read_loop(self, sock: socket.socket) -> None:
        session = self._session
        receive = session.receive
        take_events = session.take_events
        uplink = self._uplink
        clock = self._clock
        wake = self._wake.set
        buffer = bytearray(RECV_BUFFER)
        view = memoryview(buffer)
        recv_into = sock.recv_into
        unyielded = 0
        while self._outcome is None:
            if uplink.storage_busy():
                self._wait_for_storage()
            received = recv_into(buffer)
            self._reads += 1
            self._bytes_read += received
            if not received:
                self._end(DisconnectReason.PEER_CLOSED, "the peer closed the connection")
                return
            receive(view[:received], clock())
            events = take_events()
            completed = self._dispatch(events) if events else False
            if session.wants_upload:
                self._upload_needed()
            unyielded += received
            if session.has_output:
                wake()
                unyielded = YIELD_BYTES  # let the writer send our requests now
            if completed or unyielded >= YIELD_BYTES:
                unyielded = 0
                gevent.sleep(0)
            if received == len(buffer) < RECV_BUFFER_MAX:  # a fast peer: read more at once
                buffer = bytearray(min(4 * len(buffer), RECV_BUFFER_MAX))
                view = memoryview(buffer)

    def _wait_for_storage(self) -> None:
        # The link tells nobody when it drains, so poll, backing off: hundreds of paused
        # connections must not spin while a slow storage agent catches up.
        delay = _STORAGE_POLL
        while self._uplink.storage_busy() and self._outcome is None:
            gevent.sleep(delay)
            delay = min(delay * 2, _STORAGE_POLL_MAX)

    def _write_loop(self, sock: socket.socket) -> None:
        session = self._session
        wake = self._wake
        drained = self._drained
        try:
            while self._outcome is None:
                wake.wait()
                wake.clear()
                out = session.take_output(self._clock())
                if not out:
                    continue
                self._writing = True
                if len(out) == 1:
                    sock.sendall(out[0])
                elif (total := sum(map(len, out))) < _JOIN_BELOW:
                    sock.sendall(b"".join(out))
                else:
                    self._sending = total
                    _send_gathered(sock, out)
                    self._sending = 0
                    drained.set()
                self._writing = False
        except OSError as exc:
            self._end(*_socket_error(exc, self.address, dialling=False))

    def _upload_needed(self) -> None:
        """The peer has requests queued: start the uploader (once) and wake it."""
        if self._uploader is None and self._outcome is None:
            self._uploader = gevent.spawn(self._upload_loop)
            self._greenlets.append(self._uploader)
        self._upload_wake.set()

    def _upload_loop(self) -> None:
        session = self._session
        policy = UploaderPolicy()
        try:
            while self._outcome is None:
                piece = session.next_upload()
                if piece is None:
                    policy.idle()
                    self._upload_wake.clear()
                    self._upload_wake.wait()
                    continue
                data = policy.held(piece)
                if data is None:
                    for ahead in policy.to_read_ahead(session.upcoming_uploads(policy.lookahead)):
                        self._uplink.read_piece(self._info_hash, ahead)
                    data = self._read_piece(piece)
                    if data is None:
                        session.upload_failed(piece)
                        self._after_session_call()
                        continue
                    policy.keep(piece, data)
                while (
                    policy.must_wait(session.queued_upload_bytes, self._sending)
                    and self._outcome is None
                ):
                    self._drained.clear()
                    self._wake.set()
                    self._drained.wait()
                session.serve(piece, data, self._clock(), policy.budget)
                self._after_session_call()
                gevent.sleep(0)
        except Exception as exc:  # a bug here must still close and report the connection
            self._log.exception("uploader failed")
            self._end(DisconnectReason.INTERNAL_ERROR, f"uploader failed: {exc!r}")

    def _read_piece(self, piece: int) -> bytearray | None:
        """The whole piece from the agent's cache, or None (logged) if it cannot be had."""
        result = self._uplink.read_piece(self._info_hash, piece)
        try:
            outcome = result.get(timeout=READ_WAIT)
        except gevent.Timeout:
            self._log.warning("piece %d not read within %s s", piece, READ_WAIT)
            return None
        if isinstance(outcome, ReadError):
            self._log.info(
                "cannot upload piece %d: %s (%s)", piece, outcome.reason, outcome.message
            )
            return None
        data: bytearray = outcome
        return data

    def _timer_loop(self) -> None:
        session = self._session
        clock = self._clock
        while self._outcome is None:
            delay = session.next_deadline() - clock()
            gevent.sleep(min(max(delay, _TIMER_MIN_SLEEP), _TIMER_MAX_SLEEP))
            now = clock()
            if self._outcome is None and now >= session.next_deadline():
                session.tick(now)
                self._after_session_call()

    # -- session events ---------------------------------------------------------------------------

    def _after_session_call(self) -> None:
        events = self._session.take_events()
        if events:
            self._dispatch(events)
        if self._session.has_output:
            self._wake.set()
        if self._session.wants_upload and self._outcome is None:
            self._upload_needed()

    def _dispatch(self, events: list[Event]) -> bool:
        """Send what session events become (``to_bus``); returns whether a piece completed."""
        completed = False
        uplink = self._uplink
        origin = self._origin
        for event in events:
            if self._outcome is not None:
                break
            outgoing = to_bus(event, origin)
            match event:
                case PieceCompleted():
                    completed = True
                case HandshakeDone(peer_id):
                    try:
                        uplink.claim(self.key, peer_id)
                    except TorvizError as exc:
                        self._end(exc.reason, exc.message)
                        break
                    self._announced = True
                    connected = outgoing.to_coordinator[0]
                    assert isinstance(connected, bus.PeerConnected)
                    self._log.info("connected to %s (%s)", self.address, connected.client)
                case PiecesGivenBack(pieces, reason):
                    self._log.debug("released %d pieces: %s", len(pieces), reason)
                case PeerInfo(extension):
                    self._log.debug("peer runs %r, reqq %s", extension.v, extension.reqq)
                    reports = self._extension_reports
                    report = outgoing.to_coordinator
                    if len(reports) >= MAX_EXTENSION_REPORTS or reports[-1:] == [report]:
                        outgoing = NOTHING  # nothing new, or too many: not worth a message
                    else:
                        reports.append(report)
                case Closed(reason, message):
                    self._end(reason, message)
            if outgoing.refused:
                self._refused += 1
                self._log.info("not forwarded: %s", outgoing.refused)
                if self._refused > MAX_REFUSED_METADATA:
                    self._end(DisconnectReason.BAD_METADATA_MESSAGE, outgoing.refused)
                    break
            if outgoing.to_storage is not None:
                uplink.store_piece(*outgoing.to_storage)
            for sent in outgoing.to_coordinator:
                uplink.to_coordinator(sent)
        return completed

    # -- ending -----------------------------------------------------------------------------------

    def _end(self, reason: str, message: str) -> None:
        """Decide how the connection ends (the first call wins) and stop the actor."""
        if self._outcome is not None:
            return
        self._outcome = (reason, message)
        self._session.close(reason, message)
        self._wake.set()  # the writer sees the outcome and returns
        self._upload_wake.set()
        self._drained.set()
        with contextlib.suppress(pykka.ActorDeadError):  # already stopping: on_stop reports
            self.stop()

    def _flush(self, sock: socket.socket) -> None:
        """Send what the session still has queued (our handshake, the rejects that preceded a
        drop) if the socket takes it at once; never blocks, never raises."""
        out = self._session.take_output(self._clock())
        if not out or self._writing:  # a send cut short: more bytes would garble the stream
            return
        data = b"".join(bytes(chunk) for chunk in out[:_FLUSH_ITEMS])[:_FLUSH_BYTES]
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(data)

    def _close(self) -> None:
        """Stop the greenlets, close the socket and report once."""
        current = gevent.getcurrent()
        others = [g for g in self._greenlets if g is not current]
        gevent.killall(others, block=True, timeout=_STOP_GREENLETS_TIMEOUT)
        if self._sock is not None:
            self._flush(self._sock)
            self._sock.close()
        if self._reported:
            return
        self._reported = True
        reason, message = self._outcome or (
            DisconnectReason.STOPPED,
            "the peer agent closed the connection",
        )
        self._session.close(reason, message)
        self._log.debug(
            "%d bytes in %d reads (%.0f per read)",
            self._bytes_read,
            self._reads,
            self._bytes_read / max(1, self._reads),
        )
        if self._announced:
            self._log.info("disconnected: %s (%s)", reason, message)
            row = peer_stats(self._info_hash, self.key, self._session, self._clock())
            self._uplink.to_coordinator(bus.TransferStats((row,)))
            self._uplink.to_coordinator(
                bus.PeerDisconnected(
                    self._info_hash,
                    self.key,
                    DisconnectReason.parse(reason),
                    bus.clip_text(message),
                )
            )
        elif self.incoming:
            self._log.info("incoming from %s dropped: %s (%s)", self.address, reason, message)
        else:
            self._log.info("connect to %s failed: %s (%s)", self.address, reason, message)
            self._uplink.to_coordinator(
                bus.PeerConnectFailed(
                    self._info_hash,
                    self.address,
                    DisconnectReason.parse(reason),
                    bus.clip_text(message),
                )
            )
        self._uplink.ended(self.key)


def _send_gathered(sock: socket.socket, buffers: list[bytes | bytearray | memoryview]) -> None:
    """Send ``buffers`` in order with as few ``sendmsg`` calls as the socket takes, never
    joining them (served blocks are views of cached pieces)."""
    views = [memoryview(buffer) for buffer in buffers]
    index = 0
    while index < len(views):
        sent = sock.sendmsg(views[index : index + _IOV_MAX])
        while sent:
            view = views[index]
            if sent >= view.nbytes:
                sent -= view.nbytes
                index += 1
            else:
                views[index] = view[sent:]
                sent = 0
