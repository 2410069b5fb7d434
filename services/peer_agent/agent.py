"""The peer agent actor: the coordinator link, the storage links, the listener, and routing.

Strategy: one ``PeerAgent`` actor owns the ``CoordinatorLink`` (hello, heartbeats, loss and
re-registration on its own; encrypted when ``AgentSettings.curve`` is set), the
``StorageLinks`` (one DEALER per distinct storage data endpoint), and the listening socket for
incoming peers (``[peer_agent] listen_host`` and the first free port of ``listen_ports``). The
listener is bound before the link starts, so the ``AgentInfo`` sent after every ``Welcome``
carries its address (``address.py``) and the agent's capacity (``max_connections``). The inbox
gets every coordinator message and link event, the accepted sockets the listener routed by
their handshake header, the piece reads connections ask for, and the endings they report.
``ConnectPeer`` and an accepted socket of an attached torrent each start one ``PeerConnection``
actor with a fresh ``PeerSession``; commands for a peer key are told to that actor,
``BroadcastHave`` to every actor of the torrent, ``BanPeers`` closes the banned hosts'
connections (who hears what: the pure ``core/routing.py``). The bookkeeping (limits, keys,
bans, peer ids, have-state) is the pure ``Registry``.

Magnet links: ``AttachMagnet`` attaches a torrent without geometry, whose sessions run in
metadata mode (handshakes, ``ut_metadata``, ``ut_pex``; the peer's have-state is kept). An
``AttachTorrent`` of that info hash gives it the geometry and tells every live connection
``LearnGeometry``: none is dropped; each reports the kept have-state (``PeerBitfield``).
``AttachTorrent.dht_port``: the DHT bit and ``PORT`` (BEP 5) of its new connections.

Web seeds (BEP 19): ``ConnectWebSeed`` starts a session in ``web_seeds.py`` (``WebSeeds``),
keyed from the registry's counter and kept beside it (no connection limit applies); commands
whose key is a web seed's go there, ``DetachTorrent``, a registration, ``Shutdown`` and stopping
close them (each reports ``PeerDisconnected``), and their rows join the stats. A web seed's
``WorkWanted`` waits while its torrent's storage link is busy (the storage ticker resends it).

Registrations: every ``Registered`` (a coordinator welcomed us and holds no state for us) and
every ``CoordinatorLost`` detaches every torrent and closes its connections (their
``PeerDisconnected`` go to a coordinator that ignores keys it does not know); the coordinator
attaches again what it wants. Storage links and the pieces they keep stay. ``LinkRefused``
stops the agent with its exit code: 1 for a version mismatch, say, and 2 when the operator must
mend it (``duplicate_agent``: this agent id already runs in another process).

Storage deliveries: each storage link keeps every piece sent until the storage agent answers
``PieceStored``, in a window of ``deliveries.WINDOW`` pieces; while it is full the link's
connections stop reading. A passing refusal is sent again a second later (at most
``deliveries.MAX_ATTEMPTS`` sends), any other refusal drops the piece, and
``Rejected("hello_first")`` (the storage agent restarted) makes the link say ``Hello`` and send
every unanswered piece again, in order; so does a link that heard nothing for
``deliveries.RECONNECT_AFTER`` seconds, on a new socket (``storage_link.py``,
``core/deliveries.py``). A timer greenlet has the inbox tick the links when a retry, probe,
reconnect or timeout is due.

Uploads: one piece cache serves all connections (``piece_reads.py``). A connection asks for a
whole piece (``ReadPiece`` with an ``AsyncResult``); a miss sends ``ReadBlock`` chunks on the
torrent's storage link, and the replies that come back to this inbox complete the load.

Connections do not go through this actor for their own traffic: events go straight through the
coordinator link and pieces through the storage link (both only queue), so a piece never waits
in this inbox and the events of one connection stay in order. The stats greenlet reads each
session's counters directly every second (nothing preempts under gevent), and a connection
whose handshake completes calls ``_claim`` directly, so that the duplicate check is atomic with
the ``PeerConnected`` it precedes.

Rules:
- The agent never unchokes a peer on its own: only ``SetChoke`` from the coordinator's choker
  does. ``PeerInterest`` reports each change of a peer's interest in us, its input.
- Incoming connections obey the same limits and bans as dialled ones, and more
  (``core/slots.py``): a few per host, and only part of a torrent's slots. An unknown info hash, a
  banned host, a host at its cap or a full agent with no idle connection to replace closes the
  socket before we answer the handshake; a replaced connection ends with ``replaced``.
- A command for an unknown or ended peer key is ignored: its ``PeerDisconnected`` is on the way.
- ``Shutdown``, a stop signal or the parent's death close every connection within
  ``SHUTDOWN_TIMEOUT`` seconds (each reports ``PeerDisconnected``), then the sockets.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gevent
import gevent.event
import pykka
import zmq

from torviz.shared import bus
from torviz.shared.bus import DisconnectReason
from torviz.shared.errors import ConfigError
from torviz.shared.runtime.link import CoordinatorLink, CoordinatorLost, LinkRefused, Registered
from torviz.shared.runtime.service import EXIT_FAILURE, EXIT_OK
from torviz.shared.runtime.sockets import Incoming
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire.handshake import HandshakeHeader

from .address import Advertiser
from .connection import PeerConnection
from .core.commands import Command, Disconnect, PeerMessage
from .core.routing import route, upgrade
from .core.session import PeerSession
from .core.torrents import (
    AttachError,
    Connection,
    ConnectRefusedError,
    Registry,
)
from .listener import Listener, open_listener
from .piece_reads import PieceReads
from .settings import AgentSettings, session_config
from .storage_link import StorageLinks
from .timers import STATS_INTERVAL, connection_rows, observe, stats_loop, storage_loop
from .uplink import AgentUplink, Ended, ReadPiece
from .web_seeds import WebSeeds

__all__ = [
    "SHUTDOWN_TIMEOUT",
    "STATS_INTERVAL",
    "AgentSettings",
    "PeerAgent",
]

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 2.0
"""Seconds the connections get to close and report when the agent stops."""


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
class _TickStorage:
    pass


@dataclass(frozen=True, slots=True)
class _Handle:
    ref: pykka.ActorRef[PeerConnection]
    session: PeerSession
    uplink: AgentUplink


class PeerAgent(pykka.ThreadingActor):
    """The actor behind ``torviz-peer-agent``.

    Args:
        settings: identity, endpoints, limits, keys.
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
            settings.agent_id,
            settings.max_connections,
            max(1, config.max_connections_per_torrent),
            max_per_host=config.max_connections_per_host,
            outgoing_share=config.outgoing_share,
            replace_after=config.replace_idle_after,
        )
        self._session_config = session_config(config)
        host = config.listen_host
        self._bind_host = None if host in ("", "0.0.0.0", "::") else host
        self._advertiser = Advertiser(settings.advertise_host, host, settings.bus_endpoint)
        self._listener: Listener | None = None
        self._own_addresses: set[PeerAddress] = set()
        """The listener's bound and announced addresses: a ConnectPeer to one dials us."""
        self._link: CoordinatorLink | None = None
        self._storage = StorageLinks(
            self._from_storage,
            agent_id=settings.agent_id,
            hello=self._hello,
            keys=settings.keys,
            clock=clock,
        )
        self._reads = PieceReads(
            config.piece_cache_bytes, self._storage, self._session_config.allocate
        )
        self._web_seeds = WebSeeds(
            config, new_key=self._registry.new_key, send=self._to_coordinator, clock=clock
        )
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._closed = False

    # -- actor life -------------------------------------------------------------------------------

    def on_start(self) -> None:
        settings = self.settings
        self._listen()  # first: the AgentInfo of the first Welcome names the listener
        self._link = CoordinatorLink(
            self.actor_ref.tell,
            service=bus.ServiceKind.PEER_AGENT,
            agent_id=settings.agent_id,
            endpoint=settings.bus_endpoint,
            info=self._agent_info,
            curve=settings.curve,
            misses=settings.heartbeat_misses,
            host=settings.host,
            pid=settings.pid,
            clock=self._clock,
        )
        try:
            self._link.start()
        except zmq.ZMQError as exc:  # a wrong endpoint is the user's to fix: one line, exit 1
            log.error("cannot use the coordinator endpoint %s: %s", settings.bus_endpoint, exc)
            self._request_stop(EXIT_FAILURE, "unusable coordinator endpoint")
            return
        tell = self.actor_ref.tell
        self._greenlets.append(
            gevent.spawn(
                stats_loop,
                lambda now: connection_rows(self._registry, now) + self._web_seeds.rows(now),
                self._to_coordinator,
                lambda: tell(_ExpireReads()),
                self._clock,
            )
        )
        ticks = (self._storage, self._clock, lambda: tell(_TickStorage()), self._web_seeds.resume)
        self._greenlets.append(gevent.spawn(storage_loop, *ticks))

    def on_receive(self, message: Any) -> None:
        match message:
            case Incoming(received):
                self._on_bus(received)
            case _FromStorage(endpoint, Incoming(received, data)):
                self._on_storage(endpoint, received, data)
            case ReadPiece(info_hash, piece, result):
                torrent = self._registry.torrent(info_hash)
                self._reads.read(torrent, info_hash, piece, result, self._clock())
            case _Accepted():
                self._accept(message)
            case Ended(key):
                self._registry.release(key)
            case _ExpireReads():
                self._reads.expire(self._clock())
            case _TickStorage():
                self._storage.tick(self._clock())
            case Registered(server_id=server_id):
                # A coordinator that just welcomed us holds no state for us: start afresh.
                self._detach_all(f"registered with {server_id}")
            case CoordinatorLost(reason):
                self._detach_all(f"coordinator lost ({reason})")
            case LinkRefused(reason, _):
                self._request_stop(message.exit_code, f"rejected: {reason}")
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
        self._web_seeds.stop_all(DisconnectReason.AGENT_STOPPING, "the peer agent is stopping")
        self._close_connections(DisconnectReason.AGENT_STOPPING, "the peer agent is stopping")
        self._web_seeds.close()  # waits, bounded, until each reported
        self._storage.close()
        if self._link is not None:
            self._link.close()

    def _hello(self) -> bus.Hello:
        s = self.settings
        return bus.make_hello(bus.ServiceKind.PEER_AGENT, s.agent_id, s.host, s.pid)

    def _agent_info(self) -> bus.AgentInfo:
        """What this agent offers, sent after every ``Welcome`` (called by the link)."""
        address = None
        if self._listener is not None:
            address = self._advertiser.address(self._listener.address.port)
            if address is not None:
                self._own_addresses.add(address)
        return bus.AgentInfo(
            capacity=min(self.settings.max_connections, 2**32 - 1),
            listen_address=address,
            data_endpoint="",
            curve_public_key="",
        )

    # -- the coordinator --------------------------------------------------------------------------

    def _on_bus(self, message: bus.Message) -> None:
        match message:
            case (
                bus.AssignPieces()
                | bus.CancelPieces()
                | bus.SetChoke()
                | bus.DisconnectPeer()
                | bus.RequestMetadata()
                | bus.SendPex()
                | bus.BanPeers()
                | bus.BroadcastHave()
            ):
                if isinstance(message, PeerMessage) and self._web_seeds.command(message):
                    return  # a web seed's key
                for handle, command in route(self._registry, message):
                    self._tell(handle, command)
            case bus.ConnectWebSeed(info_hash):
                torrent = self._registry.torrent(info_hash)
                link = None if torrent is None else self._storage.get(torrent.storage_endpoint)
                self._web_seeds.connect(message, torrent, link)
            case bus.ConnectPeer(info_hash, address):
                self._connect(info_hash, address)
            case bus.AttachTorrent():
                self._attach(message)
            case bus.AttachMagnet():
                torrent = self._registry.attach_magnet(message)
                log.info("attached %s from a magnet link", torrent.info_hash)
            case bus.DetachTorrent(info_hash):
                self._detach(info_hash)
                log.info("detached %s", info_hash)
            case bus.Shutdown(reason):
                log.info("shutdown requested: %s", reason)
                self._stop_listening()
                why = "the peer agent is shutting down"
                self._web_seeds.stop_all(DisconnectReason.SHUTDOWN, why)  # meanwhile
                self._close_connections(DisconnectReason.SHUTDOWN, why)
                self._web_seeds.close_all(DisconnectReason.SHUTDOWN, why)
                self._request_stop(EXIT_OK, f"shutdown: {reason}")
            case _:
                log.debug("ignored %s from the bus", type(message).__name__)

    def _attach(self, message: bus.AttachTorrent) -> None:
        """Attach a torrent, or give a magnet torrent its geometry (its connections stay and
        learn it)."""
        upgrading = self._registry.is_magnet(message.info_hash)
        try:
            torrent = self._registry.attach(message)
        except AttachError as exc:
            log.error("cannot attach %s: %s", message.info_hash, exc)
            return
        try:
            self._storage.open(torrent.storage_endpoint, message.storage_public_key)
        except (zmq.ZMQError, ConfigError) as exc:
            log.error("storage endpoint %r unusable: %s", torrent.storage_endpoint, exc)
            self._detach(torrent.info_hash)
            return
        assert torrent.geometry is not None and torrent.have is not None
        log.info(
            "attached %s: %d pieces, have %d%s",
            torrent.info_hash,
            torrent.geometry.num_pieces,
            len(torrent.have),
            " (metadata fetched: its connections learn the geometry)" if upgrading else "",
        )
        if upgrading:
            storage = self._storage.get(torrent.storage_endpoint)
            assert storage is not None  # opened above
            for handle, command in upgrade(self._registry, torrent.info_hash):
                handle.uplink.use_storage(storage)  # before any piece can complete
                self._tell(handle, command)

    def _detach(self, info_hash: InfoHash) -> None:
        self._web_seeds.detach(info_hash)
        for connection in self._registry.detach(info_hash):
            if connection.handle is not None:
                self._tell(
                    connection.handle,
                    Disconnect(DisconnectReason.TORRENT_DETACHED, "the torrent was detached"),
                )
        self._reads.forget(info_hash, self._clock())

    def _detach_all(self, why: str) -> None:
        """Forget every torrent and close its connections (a new coordinator session)."""
        torrents = self._registry.torrents()
        for torrent in torrents:
            self._detach(torrent.info_hash)
        if torrents:
            log.info("%s: detached %d torrents", why, len(torrents))

    def _connect(self, info_hash: InfoHash, address: PeerAddress) -> None:
        if address in self._own_addresses:
            self._to_coordinator(
                bus.PeerConnectFailed(
                    info_hash,
                    address,
                    DisconnectReason.CONNECTED_TO_SELF,
                    "that is our own listen address",
                )
            )
            return
        try:
            connection = self._registry.reserve(info_hash, address, now=self._clock())
        except ConnectRefusedError as exc:
            reason = DisconnectReason.parse(exc.reason)
            self._to_coordinator(bus.PeerConnectFailed(info_hash, address, reason, exc.message))
            return
        self._start_connection(connection)

    def _to_coordinator(self, message: bus.Message) -> None:
        if self._link is not None:
            self._link.send(message)

    def _accept(self, accepted: _Accepted) -> None:
        """An incoming peer asked for a torrent: admit it like a dialled one (perhaps in the
        slot of an idle connection, which is closed), or close it."""
        info_hash = accepted.header.info_hash
        now = self._clock()
        torrent = self._registry.torrent(info_hash)
        if torrent is not None:  # the policy judges idleness on what the sessions show now
            for key in list(torrent.addresses.values()):
                connection = self._registry.get(key)
                if connection is not None:
                    observe(self._registry, connection, now)
        try:
            admitted = self._registry.admit(info_hash, accepted.address, now)
        except ConnectRefusedError as exc:
            # Full slots are routine under a flood of peers: not worth a line each by default.
            level = logging.DEBUG if exc.reason.startswith("too_many") else logging.INFO
            log.log(level, "incoming from %s refused: %s (%s)", accepted.address, exc.reason, exc)
            accepted.sock.close()
            return
        replaced = admitted.replaced
        if replaced is not None and replaced.handle is not None:
            log.debug(  # the replaced connection logs its end
                "incoming from %s takes the slot of idle %s (%s)",
                accepted.address,
                replaced.key,
                replaced.address,
            )
            self._tell(
                replaced.handle,
                Disconnect(
                    DisconnectReason.REPLACED,
                    "an incoming peer took the slot of this idle connection",
                ),
            )
        self._start_connection(admitted.connection, accepted.sock, accepted.preread)

    def _start_connection(
        self,
        connection: Connection[_Handle],
        sock: socket.socket | None = None,
        preread: bytes = b"",
    ) -> None:
        assert self._link is not None
        torrent = self._registry.torrent(connection.info_hash)
        assert torrent is not None
        session = PeerSession(
            info_hash=torrent.info_hash,
            peer_id=torrent.peer_id,
            geometry=torrent.geometry,  # None: metadata mode, and no storage link yet
            have=torrent.have,
            now=self._clock(),
            config=self._session_config,
            address=connection.address,
            partials=torrent.partials,
            sender=connection.key,
            info=torrent.info,
            pex=torrent.pex,
            dht_port=torrent.dht_port,
        )
        storage = None if torrent.geometry is None else self._storage.get(torrent.storage_endpoint)
        uplink = AgentUplink(self.actor_ref, self._link, storage, self._claim)
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
        self._registry.bind(connection.key, _Handle(ref, session, uplink))

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
            self._tell(
                connection.handle, Disconnect(DisconnectReason.DUPLICATE_PEER, "a crossed dial won")
            )

    # -- incoming peers ---------------------------------------------------------------------------

    def _listen(self) -> None:
        """Bind the listener; without one the agent still dials out (and announces no address)."""
        agent = self.actor_ref

        def on_header(
            sock: socket.socket, address: PeerAddress, header: HandshakeHeader, preread: bytes
        ) -> None:
            try:
                agent.tell(_Accepted(sock, address, header, preread))
            except pykka.ActorDeadError:
                sock.close()

        self._listener = open_listener(self.settings.config, on_header)
        if self._listener is not None:
            address = self._listener.address
            self._own_addresses.add(address)
            self._session_config = replace(self._session_config, listen_port=address.port)

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

    def _from_storage(self, endpoint: str, incoming: Incoming) -> None:
        """A storage link's handler, in its receiver greenlet: on to the inbox."""
        with contextlib.suppress(pykka.ActorDeadError):  # stopping: nobody listens
            self.actor_ref.tell(_FromStorage(endpoint, incoming))

    def _on_storage(self, endpoint: str, message: bus.Message, data: memoryview | None) -> None:
        if self._reads.on_storage(message, data, self._clock()):
            return
        link = self._storage.get(endpoint)
        if link is not None:
            link.received(message)
            self._web_seeds.resume()  # an answer may have made room
