"""The peer agent actor: the coordinator bus, the storage links, the listener, and routing.

Strategy: one ``PeerAgent`` actor owns a DEALER to the coordinator's bus, one DEALER per
distinct storage data endpoint (torrents usually share one), each opened with ``Hello``, and
the listening socket for incoming peers (``[peer_agent] listen_host`` and the first free port
of ``listen_ports``, announced once bound with ``ListeningOn``). Its inbox receives every bus
message (``handler=self.actor_ref.tell``), the accepted sockets the listener routed by their
handshake header, the piece reads its connections ask for, and the endings they report.
``ConnectPeer`` and an accepted socket of an attached torrent each start one ``PeerConnection``
actor with a fresh ``PeerSession``; commands for a peer key (``AssignPieces``,
``CancelPieces``, ``SetChoke``, ``DisconnectPeer``) are told to that actor, ``BroadcastHave``
to every actor of the torrent, ``BanPeers`` closes the connections of the banned hosts. The
bookkeeping (limits, keys, bans, peer ids, have-state) lives in the pure ``Registry``.

Uploads: the agent owns one ``PieceCache`` for all its connections. A connection asks for a
whole piece (``_ReadPiece`` with a gevent ``AsyncResult``); a hit answers at once, a miss sends
``ReadBlock`` chunks on the torrent's storage link, and the ``BlockRead``/``ReadFailed``
replies that come back to this inbox complete the load and every connection waiting for it.

Connections do not go through this actor for their own traffic: they send events to the
coordinator and pieces to the storage agent straight through the shared ``BusSocket``s, whose
``send`` only queues (one sender greenlet owns each socket), so a piece never waits in this
inbox and the events of one connection stay in order.

Every second a stats greenlet reports a ``PeerStats`` per connected peer. It reads each
session's counters directly: under gevent nothing preempts, so the read is consistent, and it
costs far less than asking hundreds of actors.

Claims: a connection whose handshake completes calls ``_claim`` directly (not through the
inbox): under gevent nothing preempts, and the check that no other connection of the torrent
reached the same peer id must be atomic with the ``PeerConnected`` it precedes.

Rules:
- The agent never unchokes a peer on its own: every connection starts choked, and only
  ``SetChoke`` from the coordinator's choker changes that. ``PeerInterest`` reports each
  change of a peer's interest in us, its input.
- Incoming connections obey the same limits and bans as dialled ones; an unknown info hash,
  a banned host or a full agent closes the socket before we answer the handshake.
- A command for an unknown or ended peer key is ignored: the connection may have just closed,
  and its ``PeerDisconnected`` is on the way.
- ``Shutdown``, a stop signal or the parent's death close every connection within
  ``SHUTDOWN_TIMEOUT`` seconds (each reports ``PeerDisconnected``), then the sockets.
- ``Rejected`` at hello stops the agent with exit code 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import Any

import gevent
import gevent.event
import pykka
import zmq

from shared import bus
from shared.config import PeerAgentConfig
from shared.runtime.service import EXIT_FAILURE, EXIT_OK
from shared.runtime.sockets import BusSocket, Incoming
from shared.types import InfoHash, PeerAddress, PeerId
from shared.wire.handshake import HandshakeHeader

from .connection import (
    CONNECT_TIMEOUT,
    Acquired,
    Assign,
    Command,
    Disconnect,
    PeerConnection,
    Revoke,
    SetChoked,
)
from .listener import Listener, bind_listener
from .piece_cache import Outcome, PieceCache, Read, ReadError
from .pipeline import QueueDepthPolicy
from .session import PeerSession, SessionConfig
from .torrents import (
    DEFAULT_MAX_CONNECTIONS,
    AttachError,
    Connection,
    ConnectRefusedError,
    Registry,
)
from .uplink import STORAGE_BACKLOG, AgentUplink, Ended, ReadPiece, peer_stats

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "STATS_INTERVAL",
    "STORAGE_BACKLOG",
    "STORAGE_HWM",
    "AgentSettings",
    "PeerAgent",
]

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0
"""Seconds between two ``TransferStats``."""
SHUTDOWN_TIMEOUT = 2.0
"""Seconds the connections get to close and report when the agent stops."""
STORAGE_HWM = 16
"""ZeroMQ's high-water mark on a storage link, in pieces: what ZeroMQ may hold for it."""
_MAX_BATCH = 4096  # rows in one TransferStats


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """What one peer agent process runs with."""

    agent_id: str
    """Unique among peer agents: the bus routing id and the prefix of every peer key."""
    bus_endpoint: str
    """The coordinator's bus."""
    config: PeerAgentConfig = field(default_factory=PeerAgentConfig)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    connect_timeout: float = CONNECT_TIMEOUT
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


@dataclass(frozen=True, slots=True)
class _FromStorage:
    endpoint: str
    incoming: Incoming


@dataclass(frozen=True, slots=True)
class _Accepted:
    """An incoming peer whose handshake header the listener read."""

    sock: socket.socket
    address: PeerAddress
    header: HandshakeHeader
    preread: bytes


@dataclass(frozen=True, slots=True)
class _ExpireReads:
    pass


@dataclass(frozen=True, slots=True)
class _Handle:
    ref: pykka.ActorRef[PeerConnection]
    session: PeerSession


def _unzeroed_bytearray() -> Callable[[int], bytearray]:
    """An allocator of piece buffers that skips zeroing them (CPython's
    ``PyByteArray_FromStringAndSize(NULL, n)``): the session overwrites every byte with
    received blocks before a buffer leaves, and zeroing costs a full pass over each piece.
    Falls back to ``bytearray`` where that API is not there."""
    try:
        make = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:
        return bytearray
    make.restype = ctypes.py_object
    make.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)

    def allocate(size: int) -> bytearray:
        buffer: bytearray = make(None, size)
        return buffer

    return allocate


def _client_name() -> str:
    try:
        return f"torviz {metadata.version('torviz')}"
    except metadata.PackageNotFoundError:
        return "torviz"


class PeerAgent(pykka.ThreadingActor):
    """The actor behind ``torviz-peer-agent``.

    Args:
        settings: identity, endpoints, limits.
        request_stop: the service runner's ``request_stop(exit_code, reason)``.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        settings: AgentSettings,
        request_stop: Callable[[int, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.settings = settings
        self._request_stop = request_stop
        self._clock = clock
        config = settings.config
        self._registry: Registry[_Handle] = Registry(
            settings.agent_id, settings.max_connections, max(1, config.max_connections_per_torrent)
        )
        allocate = _unzeroed_bytearray()
        self._session_config = SessionConfig(
            client_name=_client_name(),
            our_reqq=max(1, config.max_peer_requests),
            pipeline=QueueDepthPolicy(maximum=config.max_request_queue),
            request_timeout=config.request_timeout,
            keepalive_interval=config.keepalive_interval,
            allocate=allocate,
        )
        self._cache: PieceCache[gevent.event.AsyncResult] = PieceCache(
            max(1, config.piece_cache_bytes), allocate=allocate
        )
        host = config.listen_host
        self._bind_host = None if host in ("", "0.0.0.0", "::") else host
        self._listener: Listener | None = None
        self._listen_address: PeerAddress | None = None
        self._bus: BusSocket | None = None
        self._storage: dict[str, BusSocket] = {}
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._heartbeat: gevent.Greenlet[Any, Any] | None = None
        self._closed = False

    # -- actor life -------------------------------------------------------------------------------

    def on_start(self) -> None:
        settings = self.settings
        self._bus = BusSocket.dealer(self.actor_ref.tell, name="bus", identity=settings.agent_id)
        self._bus.connect(settings.bus_endpoint)
        self._bus.start()
        self._bus.send(self._hello())
        self._greenlets.append(gevent.spawn(self._stats_loop))
        log.info("peer agent %s connecting to %s", settings.agent_id, settings.bus_endpoint)
        self._listen()

    def on_receive(self, message: Any) -> None:
        match message:
            case Incoming(received):
                self._on_bus(received)
            case _FromStorage(endpoint, Incoming(received, data)):
                self._on_storage(endpoint, received, data)
            case ReadPiece(info_hash, piece, result):
                self._read_piece(info_hash, piece, result)
            case _Accepted():
                self._accept(message)
            case Ended(key):
                self._registry.release(key)
            case _ExpireReads():
                self._resolve(self._cache.expire(self._clock()))
            case _:
                log.warning("unexpected message %r", message)

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self._close()
        self._request_stop(EXIT_FAILURE, f"peer agent failed: {exception_value!r}")

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        gevent.killall(self._greenlets, block=True, timeout=1.0)
        self._stop_listening()
        self._close_connections("agent_stopping", "the peer agent is stopping")
        if self._bus is not None:
            self._bus.send(bus.Goodbye("stopping"))
        for link in self._storage.values():
            link.send(bus.Goodbye("stopping"))
            link.close()
        if self._bus is not None:
            self._bus.close()

    def _hello(self) -> bus.Hello:
        s = self.settings
        return bus.make_hello(bus.ServiceKind.PEER_AGENT, s.agent_id, s.host, s.pid)

    # -- the coordinator --------------------------------------------------------------------------

    def _on_bus(self, message: bus.Message) -> None:
        match message:
            case bus.AssignPieces(info_hash, peer, pieces):
                self._route(info_hash, peer, Assign(pieces))
            case bus.CancelPieces(info_hash, peer, pieces):
                self._route(info_hash, peer, Revoke(pieces))
            case bus.SetChoke(info_hash, peer, choked):
                self._route(info_hash, peer, SetChoked(choked))
            case bus.BanPeers(info_hash, hosts):
                for connection in self._registry.ban(info_hash, hosts):
                    if connection.handle is not None:
                        self._tell(connection.handle, Disconnect("banned", "the host was banned"))
            case bus.BroadcastHave(info_hash, piece):
                for connection in self._registry.piece_verified(info_hash, piece):
                    if connection.handle is not None:
                        self._tell(connection.handle, Acquired(piece))
            case bus.ConnectPeer(info_hash, address):
                self._connect(info_hash, address)
            case bus.DisconnectPeer(info_hash, peer, reason):
                self._route(info_hash, peer, Disconnect(reason, "the coordinator closed it"))
            case bus.AttachTorrent():
                self._attach(message)
            case bus.DetachTorrent(info_hash):
                for connection in self._registry.detach(info_hash):
                    if connection.handle is not None:
                        self._tell(
                            connection.handle,
                            Disconnect("torrent_detached", "the torrent was detached"),
                        )
                self._resolve(self._cache.forget(info_hash, self._clock()))
                log.info("detached %s", info_hash)
            case bus.Welcome(server_id=server_id, heartbeat_interval=interval):
                log.info("welcomed by %s", server_id)
                if self._heartbeat is None and interval > 0:
                    self._heartbeat = gevent.spawn(self._heartbeat_loop, interval)
                    self._greenlets.append(self._heartbeat)
            case bus.Rejected(reason, text):
                log.error("the coordinator rejected this agent (%s): %s", reason, text)
                self._request_stop(EXIT_FAILURE, f"rejected: {reason}")
            case bus.Shutdown(reason):
                log.info("shutdown requested: %s", reason)
                self._stop_listening()
                self._close_connections("shutdown", "the peer agent is shutting down")
                self._request_stop(EXIT_OK, f"shutdown: {reason}")
            case bus.Heartbeat():
                pass
            case _:
                log.debug("ignored %s from the bus", type(message).__name__)

    def _attach(self, message: bus.AttachTorrent) -> None:
        try:
            torrent = self._registry.attach(message)
        except AttachError as exc:
            log.error("cannot attach %s: %s", message.info_hash, exc)
            return
        try:
            self._storage_link(torrent.storage_endpoint)
        except zmq.ZMQError as exc:
            log.error("storage endpoint %r unusable: %s", torrent.storage_endpoint, exc)
            self._registry.detach(torrent.info_hash)
            return
        log.info(
            "attached %s: %d pieces, have %d",
            torrent.info_hash,
            torrent.geometry.num_pieces,
            len(torrent.have),
        )

    def _connect(self, info_hash: InfoHash, address: PeerAddress) -> None:
        assert self._bus is not None
        if address == self._listen_address:
            self._bus.send(
                bus.PeerConnectFailed(
                    info_hash, address, "connected_to_self", "that is our own listen address"
                )
            )
            return
        try:
            connection = self._registry.reserve(info_hash, address)
        except ConnectRefusedError as exc:
            self._bus.send(bus.PeerConnectFailed(info_hash, address, exc.reason, exc.message))
            return
        self._start_connection(connection)

    def _accept(self, accepted: _Accepted) -> None:
        """An incoming peer asked for a torrent: admit it like a dialled one, or close it."""
        info_hash = accepted.header.info_hash
        try:
            connection = self._registry.reserve(info_hash, accepted.address, incoming=True)
        except ConnectRefusedError as exc:
            log.info("incoming from %s refused: %s (%s)", accepted.address, exc.reason, exc)
            accepted.sock.close()
            return
        self._start_connection(connection, accepted.sock, accepted.preread)

    def _start_connection(
        self,
        connection: Connection[_Handle],
        sock: socket.socket | None = None,
        preread: bytes = b"",
    ) -> None:
        assert self._bus is not None
        torrent = self._registry.torrent(connection.info_hash)
        assert torrent is not None
        session = PeerSession(
            info_hash=torrent.info_hash,
            peer_id=torrent.peer_id,
            geometry=torrent.geometry,
            have=torrent.have,
            now=self._clock(),
            config=self._session_config,
            address=connection.address,
        )
        storage = self._storage[torrent.storage_endpoint]
        uplink = AgentUplink(self.actor_ref, self._bus, storage, self._claim)
        ref = PeerConnection.start(
            key=connection.key,
            address=connection.address,
            session=session,
            uplink=uplink,
            sock=sock,
            preread=preread,
            connect_timeout=self.settings.connect_timeout,
            bind_host=self._bind_host,
            clock=self._clock,
        )
        self._registry.bind(connection.key, _Handle(ref, session))

    def _claim(self, key: str, peer_id: PeerId) -> None:
        """Called by a connection whose handshake completed (see the module docstring).

        Raises:
            ConnectRefusedError: ``duplicate_peer`` (or ``unknown_torrent``): close it.
        """
        replaced = self._registry.claim(key, peer_id)
        if replaced is None:
            return
        connection = self._registry.get(replaced)
        if connection is not None and connection.handle is not None:
            log.info("%s replaces %s: both reach the same peer", key, replaced)
            self._tell(connection.handle, Disconnect("duplicate_peer", "a crossed dial won"))

    # -- incoming peers ---------------------------------------------------------------------------

    def _listen(self) -> None:
        """Bind the listener and announce it; without one the agent still dials out."""
        assert self._bus is not None
        config = self.settings.config
        try:
            sock = bind_listener(config.listen_host, config.listen_ports)
        except (OSError, ValueError) as exc:
            log.error(
                "cannot listen for peers on %s ports %s: %s",
                config.listen_host,
                config.listen_ports,
                exc,
            )
            return
        agent = self.actor_ref

        def on_header(
            sock: socket.socket, address: PeerAddress, header: HandshakeHeader, preread: bytes
        ) -> None:
            try:
                agent.tell(_Accepted(sock, address, header, preread))
            except pykka.ActorDeadError:
                sock.close()

        self._listener = Listener(sock, on_header)
        self._listener.start()
        address = self._listen_address = self._listener.address
        self._session_config = replace(self._session_config, listen_port=address.port)
        self._bus.send(bus.ListeningOn(address))
        log.info("listening for peers on %s", address)

    def _route(self, info_hash: InfoHash, key: str, command: Command) -> None:
        connection = self._registry.lookup(info_hash, key)
        if connection is not None and connection.handle is not None:
            self._tell(connection.handle, command)

    @staticmethod
    def _tell(handle: _Handle, command: Command) -> None:
        # A dead connection just ended; its report is on the way.
        with contextlib.suppress(pykka.ActorDeadError):
            handle.ref.tell(command)

    def _close_connections(self, reason: str, message: str) -> None:
        """Close every connection and wait (bounded) until each has reported."""
        futures = []
        for connection in self._registry.connections():
            if connection.handle is None:
                continue
            self._tell(connection.handle, Disconnect(reason, message))
            futures.append(connection.handle.ref.stop(block=False))
        deadline = self._clock() + SHUTDOWN_TIMEOUT
        for future in futures:
            try:
                future.get(timeout=max(0.0, deadline - self._clock()))
            except pykka.Timeout:
                log.warning("connections still open after %ss", SHUTDOWN_TIMEOUT)
                return

    def _stop_listening(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    # -- storage ----------------------------------------------------------------------------------

    def _storage_link(self, endpoint: str) -> BusSocket:
        link = self._storage.get(endpoint)
        if link is not None:
            return link
        agent = self.actor_ref

        def handler(incoming: Incoming) -> None:
            agent.tell(_FromStorage(endpoint, incoming))

        link = BusSocket.dealer(
            handler, name=f"data {endpoint}", identity=self.settings.agent_id, hwm=STORAGE_HWM
        )
        try:
            link.connect(endpoint)
        except zmq.ZMQError:
            link.close(linger=0)
            raise
        link.start()
        link.send(self._hello())
        self._storage[endpoint] = link
        return link

    def _on_storage(self, endpoint: str, message: bus.Message, data: memoryview | None) -> None:
        match message:
            case bus.BlockRead():
                self._resolve(self._cache.on_block_read(message, data, self._clock()))
            case bus.ReadFailed():
                self._resolve(self._cache.on_read_failed(message, self._clock()))
            case bus.Welcome(server_id=server_id):
                log.info("storage %s at %s welcomed us", server_id, endpoint)
            case bus.Rejected(reason="hello_first"):
                # The storage agent restarted and does not know us: introduce ourselves again.
                link = self._storage.get(endpoint)
                if link is not None:
                    log.info("storage at %s restarted: saying hello again", endpoint)
                    link.send(self._hello())
            case bus.Rejected(reason, text):
                log.error("storage at %s rejected this agent (%s): %s", endpoint, reason, text)
            case _:
                log.debug("ignored %s from storage %s", type(message).__name__, endpoint)

    # -- uploads ----------------------------------------------------------------------------------

    def _read_piece(
        self, info_hash: InfoHash, piece: int, result: gevent.event.AsyncResult
    ) -> None:
        torrent = self._registry.torrent(info_hash)
        if torrent is None or not 0 <= piece < torrent.geometry.num_pieces:
            result.set(ReadError("unknown_torrent", f"no piece {piece} of {info_hash} here"))
            return
        size = torrent.geometry.piece_size(piece)
        endpoint = torrent.storage_endpoint
        data, reads = self._cache.get(info_hash, piece, size, endpoint, result, self._clock())
        if data is not None:
            result.set(data)
        self._send_reads(reads)

    def _resolve(self, outcome: Outcome[gevent.event.AsyncResult]) -> None:
        for waiter, value in outcome.resolved:
            waiter.set(value)
        self._send_reads(outcome.reads)

    def _send_reads(self, reads: list[Read]) -> None:
        for read in reads:
            link = self._storage.get(read.endpoint)
            if link is not None:
                link.send(read.message)

    # -- periodic ---------------------------------------------------------------------------------

    def _stats_loop(self) -> None:
        while True:
            gevent.sleep(STATS_INTERVAL)
            with contextlib.suppress(pykka.ActorDeadError):
                self.actor_ref.tell(_ExpireReads())
            rows = self._stats(self._clock())
            for start in range(0, len(rows), _MAX_BATCH):
                if self._bus is not None:
                    self._bus.send(bus.TransferStats(tuple(rows[start : start + _MAX_BATCH])))

    def _stats(self, now: float) -> list[bus.PeerStats]:
        rows = []
        for connection in self._registry.connections():
            handle = connection.handle
            if handle is None or not handle.session.active:
                continue
            rows.append(peer_stats(connection.info_hash, connection.key, handle.session, now))
        return rows

    def _heartbeat_loop(self, interval: float) -> None:
        seq = 0
        while True:
            gevent.sleep(interval)
            seq += 1
            if self._bus is not None:
                self._bus.send(bus.Heartbeat(seq))
