"""The peer agent actor: the coordinator bus, the storage links, the torrents, and routing.

Strategy: one ``PeerAgent`` actor owns a DEALER to the coordinator's bus and one DEALER per
distinct storage data endpoint (torrents usually share one), each opened with ``Hello``. Its
inbox receives every bus message (``handler=self.actor_ref.tell``) and the endings its
connections report. ``ConnectPeer`` starts one ``PeerConnection`` actor per peer with a fresh
``PeerSession``; commands for a peer key (``AssignPieces``, ``CancelPieces``,
``DisconnectPeer``) are told to that actor, ``BroadcastHave`` to every actor of the torrent.
The bookkeeping (limits, keys, have-state) lives in the pure ``Registry``.

Connections do not go through this actor for their own traffic: they send events to the
coordinator and pieces to the storage agent straight through the shared ``BusSocket``s, whose
``send`` only queues (one sender greenlet owns each socket), so a piece never waits in this
inbox and the events of one connection stay in order.

Every second a stats greenlet reports a ``PeerStats`` per connected peer. It reads each
session's counters directly: under gevent nothing preempts, so the read is consistent, and it
costs far less than asking hundreds of actors.

Rules:
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
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import gevent
import pykka
import zmq

from shared import bus
from shared.config import PeerAgentConfig
from shared.runtime.service import EXIT_FAILURE, EXIT_OK
from shared.runtime.sockets import BusSocket, Incoming
from shared.types import InfoHash

from .connection import (
    CONNECT_TIMEOUT,
    Acquired,
    Assign,
    Command,
    Disconnect,
    PeerConnection,
    Revoke,
)
from .pipeline import QueueDepthPolicy
from .session import PeerSession, SessionConfig
from .torrents import DEFAULT_MAX_CONNECTIONS, AttachError, ConnectRefusedError, Registry, Torrent

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
STORAGE_BACKLOG = 16
"""Pieces queued behind a full ZeroMQ queue on one storage link before readers pause. With
``STORAGE_HWM`` this bounds the pieces waiting for a slow storage agent to a few dozen per
link, instead of ZeroMQ's default of a thousand (a gigabyte of 1 MiB pieces)."""
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
class _Ended:
    key: str


@dataclass(frozen=True, slots=True)
class _Handle:
    ref: pykka.ActorRef[PeerConnection]
    session: PeerSession


class _Uplink:
    """A connection's way out: the shared bus and storage sockets, and its agent's inbox."""

    __slots__ = ("_agent", "_bus", "_storage")

    def __init__(self, agent: pykka.ActorRef[Any], bus_socket: BusSocket, storage: BusSocket):
        self._agent = agent
        self._bus = bus_socket
        self._storage = storage

    def to_coordinator(self, message: bus.Message) -> None:
        self._bus.send(message)

    def store_piece(self, message: bus.StorePiece, data: bytearray) -> None:
        self._storage.send(message, memoryview(data))  # a view, not a copy

    def storage_busy(self) -> bool:
        return self._storage.pending >= STORAGE_BACKLOG

    def ended(self, key: str) -> None:
        # When the agent is gone there is nothing left to forget the key in.
        with contextlib.suppress(pykka.ActorDeadError):
            self._agent.tell(_Ended(key))


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
        self._registry: Registry[_Handle] = Registry(settings.agent_id, settings.max_connections)
        self._session_config = SessionConfig(
            client_name=_client_name(),
            pipeline=QueueDepthPolicy(maximum=settings.config.max_request_queue),
            request_timeout=settings.config.request_timeout,
            keepalive_interval=settings.config.keepalive_interval,
            allocate=_unzeroed_bytearray(),
        )
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

    def on_receive(self, message: Any) -> None:
        match message:
            case Incoming(received):
                self._on_bus(received)
            case _FromStorage(endpoint, Incoming(received)):
                self._on_storage(endpoint, received)
            case _Ended(key):
                self._registry.release(key)
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

    def _connect(self, info_hash: InfoHash, address: Any) -> None:
        assert self._bus is not None
        try:
            connection = self._registry.reserve(info_hash, address)
        except ConnectRefusedError as exc:
            self._bus.send(bus.PeerConnectFailed(info_hash, address, exc.reason, exc.message))
            return
        torrent = self._registry.torrent(info_hash)
        assert torrent is not None
        session = self._new_session(torrent)
        uplink = _Uplink(self.actor_ref, self._bus, self._storage[torrent.storage_endpoint])
        ref = PeerConnection.start(
            key=connection.key,
            address=address,
            session=session,
            uplink=uplink,
            connect_timeout=self.settings.connect_timeout,
            clock=self._clock,
        )
        self._registry.bind(connection.key, _Handle(ref, session))

    def _new_session(self, torrent: Torrent) -> PeerSession:
        return PeerSession(
            info_hash=torrent.info_hash,
            peer_id=torrent.peer_id,
            geometry=torrent.geometry,
            have=torrent.have,
            now=self._clock(),
            config=self._session_config,
        )

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

    def _on_storage(self, endpoint: str, message: bus.Message) -> None:
        match message:
            case bus.Welcome(server_id=server_id):
                log.info("storage %s at %s welcomed us", server_id, endpoint)
            case bus.Rejected(reason, text):
                log.error("storage at %s rejected this agent (%s): %s", endpoint, reason, text)
            case _:
                log.debug("ignored %s from storage %s", type(message).__name__, endpoint)

    # -- periodic ---------------------------------------------------------------------------------

    def _stats_loop(self) -> None:
        while True:
            gevent.sleep(STATS_INTERVAL)
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
            session = handle.session
            rows.append(
                bus.PeerStats(
                    info_hash=connection.info_hash,
                    peer=connection.key,
                    downloaded=session.download_rate.total,
                    uploaded=session.upload_rate.total,
                    download_rate=session.download_rate.rate(now),
                    upload_rate=session.upload_rate.rate(now),
                    peer_choking=session.peer_choking,
                    peer_interested=session.peer_interested,
                    am_choking=session.am_choking,
                    am_interested=session.am_interested,
                    snubbed=False,
                    pieces=len(session.peer_have),
                )
            )
        return rows

    def _heartbeat_loop(self, interval: float) -> None:
        seq = 0
        while True:
            gevent.sleep(interval)
            seq += 1
            if self._bus is not None:
                self._bus.send(bus.Heartbeat(seq))
