"""The coordinator's session, without sockets: bus events in, addressed commands out.

``Coordinator`` is a plain class. The actor feeds it every message from the agents (``handle``),
every control request, and the time (``tick``), then sends what accumulated in ``outbox`` as
``(agent identity, message)`` pairs. Tests drive it directly with fake agents.

Strategy: this class holds the torrents and routes each event to the part that decides:
``adding.py`` (torrents added or restored), ``agent_bookkeeping.py`` (agents arriving,
vetted, heard, silent, gone), ``lifecycle.py`` (the one table of a torrent's states), each
torrent's ``swarm.py`` (dialling, pieces, choking, bans) and ``announcing.py`` (which tracker
agents announce what); the control requests on added torrents, status and the session watch
are ``control_requests.py``. What happens around a lifecycle move (files opened and closed,
peer agents attached and detached) is here.

Rules:
- One clock: every entry point takes ``now`` (monotonic seconds); nothing reads a clock, and
  status reports times relative to the latest ``now`` given.
- While a torrent is open (``swarm.picker`` set) it is attached to every peer agent and
  announced; stopping it (pause, error, verify, removal) detaches and untracks it. A magnet
  link's torrent is attached with ``AttachMagnet`` and announced while it fetches its info
  dictionary (``metadata_phase.py``); once fetched it goes on exactly as an added .torrent.
- Piece numbers from agents are checked once, here (``PieceIndexError`` drops the event).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.bus import (
    AgentInfo,
    AttachMagnet,
    AttachTorrent,
    CheckProgress,
    CloseTorrent,
    CorruptBlocksTraced,
    DetachTorrent,
    DhtStatusChanged,
    Goodbye,
    Hello,
    Message,
    MetadataPieceReceived,
    MetadataRejected,
    OpenTorrent,
    PeerDhtPort,
    PeerDisconnected,
    PeerExtensions,
    PeersDiscovered,
    PeerSource,
    PexReceived,
    PieceRejected,
    PieceVerified,
    Rejected,
    ServiceKind,
    StorageFailed,
    TorrentClosed,
    TorrentOpened,
    TorrentState,
    TrackerStateChanged,
    TransferStats,
)
from torviz.shared.config import CoordinatorConfig
from torviz.shared.errors import MagnetError, MetainfoError
from torviz.shared.geometry import PieceIndexError
from torviz.shared.magnet import metainfo_from_magnet
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash, PeerId

from .adding import TorrentAdding
from .agent_bookkeeping import AgentBookkeeping
from .agents import Agent, AgentRegistry
from .announcing import LISTEN_PORT_WAIT, Announcing
from .control_requests import ControlRequests, Forgetful, SessionListener
from .dht_links import DhtLinks
from .event_log import EventLog
from .lifecycle import METADATA, OPEN_STATES, Move, advance, start_move
from .metadata_phase import MetadataFetch, handle_extension_event
from .pex_exchange import for_torrent
from .picking import PiecePicker
from .session_watch import SessionWatch
from .swarm import MAX_HASH_FAILURES, PeerEvent, SwarmContext
from .swarm_web_seeds import place_web_seeds
from .torrent import Torrent
from .torrent_log import tracker_changed

__all__ = ["LISTEN_PORT_WAIT", "MAX_HASH_FAILURES", "Coordinator", "SessionListener"]

log = logging.getLogger(__name__)

PENDING_TIMEOUT = 60.0
"""Seconds a downloaded piece may wait for its hash check's answer before it is fetched again
(its delivery was lost: the storage agent died with it in its queue)."""

Outgoing = tuple[bytes, Message]
_Extension = PeerExtensions | MetadataPieceReceived | MetadataRejected | PexReceived
_OPENING_STATES = (TorrentState.CHECKING, *OPEN_STATES)
"""States in which the storage agent holds the files open."""


class Coordinator(TorrentAdding, ControlRequests):
    """Session state of every torrent, and the rules that move it forward.

    Args:
        peer_id: our peer id for this run.
        listen_port: the port announced to trackers until a peer agent reports its own.
        storage_endpoint: where peer agents send pieces (the storage agent's data endpoint).
        config: the coordinator's section of the configuration.
        rng: randomness for the piece picker and the choker.
        session: told of changes to persist.
    """

    def __init__(
        self,
        *,
        peer_id: PeerId,
        listen_port: int,
        storage_endpoint: str,
        config: CoordinatorConfig,
        rng: random.Random,
        session: SessionListener | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.config = config
        self.rng = rng
        self.session: SessionListener = session or Forgetful()
        self.bookkeeping = AgentBookkeeping(config, self._send, self)
        self.agents: AgentRegistry = self.bookkeeping.registry
        self.torrents: dict[InfoHash, Torrent] = {}
        self.outbox: list[Outgoing] = []
        self.announcing = Announcing(
            self.agents, self._send, peer_id=peer_id, listen_port=listen_port
        )
        self._swarm_context = SwarmContext(
            self.agents, config, self._send, self.announcing.completed
        )
        self.dht = DhtLinks(self.agents, self._send)
        self._storage_route = (storage_endpoint, "")
        """The data endpoint and its CURVE key that attached torrents were given."""
        self._now = 0.0
        """The latest time we were given (status reports times relative to it)."""
        self.events = EventLog()
        """The daemon's log as the user reads it (fed by the actor's logging handler)."""
        self.watching = SessionWatch()

    def take_outbox(self) -> list[Outgoing]:
        """The commands accumulated since the last call, in order."""
        out, self.outbox = self.outbox, []
        return out

    def take_dropped(self) -> list[bytes]:
        """Agents forgotten (silent, or replaced by a restart) for the bus socket to forget."""
        return self.bookkeeping.take_dropped()

    def _clock(self, now: float) -> float:
        """Note the time an entry point was given; returns the latest time seen."""
        self._now = max(self._now, now)
        return self._now

    # -- agents (the rules are in agent_bookkeeping.py) --

    def vet_hello(
        self, identity: bytes, hello: Hello, now: float, connected: Callable[[bytes], bool]
    ) -> Rejected | None:
        """Before an agent's ``Hello`` is welcomed (``AgentBookkeeping.vet_hello``).

        Called by the bus socket's receiver greenlet, between two of the actor's messages; it
        changes nothing but the record of refusals already logged.
        """
        return self.bookkeeping.vet_hello(identity, hello, now, connected)

    def agent_joined(self, identity: bytes, hello: Hello, now: float) -> None:
        """A welcomed agent: it starts afresh and gets the torrents it should know about
        (``AgentBookkeeping.joined``)."""
        self.bookkeeping.joined(identity, hello, self._clock(now))

    def agent_left(self, identity: bytes, now: float) -> Agent | None:
        """An agent is gone (goodbye, exit, silence): forget what it was doing."""
        self._clock(now)
        return self.bookkeeping.left(identity)

    def agent_arrived(self, agent: Agent) -> None:
        """``AgentListener``: give a welcomed agent the torrents it should know about."""
        for torrent in self.torrents.values():
            match agent.kind:
                case ServiceKind.STORAGE_AGENT if torrent.state in _OPENING_STATES:
                    self._open(torrent, agent)
                case ServiceKind.PEER_AGENT if torrent.swarm.picker is not None:
                    self._attach(torrent, agent)
                case ServiceKind.PEER_AGENT if torrent.swarm.magnet_attached:
                    self._attach_magnet(torrent, agent)
                case ServiceKind.TRACKER_AGENT if torrent.swarm.running:
                    self.announcing.reannounce(torrent, self._now)
        if agent.kind is ServiceKind.PEER_AGENT:
            self._place_web_seeds()  # now, not at the next tick: the first may be waiting

    def agent_gone(self, agent: Agent) -> None:
        """``AgentListener``: an agent is gone.

        The pieces a lost peer agent's connections were fetching go back to the picker, and its
        peers are dialled again from the other peer agents (or its replacement). A lost storage
        agent stops nothing: peer agents keep the pieces it has not acknowledged and send them
        again when it is back, and its replacement is asked to open every torrent (its resume
        state makes that quick; ``TorrentOpened`` then reconciles what it has).
        """
        if agent.kind is ServiceKind.PEER_AGENT:
            for torrent in self.torrents.values():
                torrent.swarm.forget_agent(agent.identity)
                torrent.swarm.connect_more()
        self.announcing.announcers_changed(self.torrents.values(), agent, self._now)
        self._dht_ports_changed()
        successor = self.bookkeeping.storage_agent()
        if agent.kind is ServiceKind.STORAGE_AGENT and successor is not None:
            log.info("storage agent %s takes over from %s", successor.agent_id, agent.agent_id)
            for torrent in self.torrents.values():
                if torrent.state in _OPENING_STATES:
                    self._open(torrent, successor)
            if successor.data_endpoint:
                self._on_storage_route((successor.data_endpoint, successor.curve_public_key))

    def agent_offered(self, agent: Agent, info: AgentInfo) -> None:
        """``AgentListener``: announcers, a storage route or a peer agent's capacity (dial now)."""
        if agent.kind in (ServiceKind.PEER_AGENT, ServiceKind.TRACKER_AGENT):
            self.announcing.announcers_changed(self.torrents.values(), None, self._now)
            self._dht_ports_changed()
        if agent.kind is ServiceKind.PEER_AGENT:
            for torrent in self.torrents.values():
                torrent.swarm.connect_more()
        elif agent is self.bookkeeping.storage_agent() and info.data_endpoint:
            self._on_storage_route((info.data_endpoint, info.curve_public_key))

    def _dht_ports_changed(self) -> None:
        """A peer agent whose DHT port changed gets its public torrents again (``AttachTorrent``
        refreshes an attached torrent in place, connections kept)."""
        for agent in self.dht.stale_peer_agents():
            for torrent in self.torrents.values():
                if torrent.swarm.picker is not None and not torrent.private:
                    self._attach(torrent, agent)
                elif torrent.swarm.magnet_attached and torrent.swarm.picker is None:
                    self._attach_magnet(torrent, agent)

    def _attach_magnet(self, torrent: Torrent, agent: Agent) -> None:
        """A magnet link's torrent to a peer agent; whether it is private is not known yet, so
        its connections tell peers our DHT port (the DHT is how a bare link finds peers)."""
        port = self.dht.port_for(agent, private=False)
        self._send(agent.identity, AttachMagnet(torrent.info_hash, self.peer_id, port))

    def agents_quiet(self, identities: set[bytes]) -> None:
        """``AgentListener``: a peer agent that missed a heartbeat may be dead: its
        connections' rates stop counting at once (its next ``TransferStats`` brings them back);
        its connections go when it is declared dead."""
        for torrent in self.torrents.values():
            for record in torrent.swarm.peers.values():
                if record.agent in identities:
                    record.download_rate = record.upload_rate = 0.0

    def _on_storage_route(self, route: tuple[str, str]) -> None:
        """A storage agent tells where peer agents reach it; when that changed, the attached
        torrents are attached again with the new endpoint."""
        if route == self._storage_route:
            return
        self._storage_route = route
        for torrent in self.torrents.values():
            if torrent.swarm.picker is None:
                continue
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                self._send(agent.identity, DetachTorrent(torrent.info_hash))
            torrent.swarm.forget_all()
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                self._attach(torrent, agent)
            torrent.swarm.connect_more()

    def _measure_agents(self) -> None:
        """Each peer agent's rates: the sum over its open connections (placement's input)."""
        rates: dict[bytes, tuple[float, float]] = {}
        for torrent in self.torrents.values():
            for record in torrent.swarm.peers.values():
                down, up = rates.get(record.agent, (0.0, 0.0))
                rates[record.agent] = (down + record.download_rate, up + record.upload_rate)
        self.bookkeeping.measure(rates)

    # -- bus events --

    def handle(self, sender: bytes, message: Message, now: float) -> None:
        """One event from an agent."""
        self._clock(now)
        if self.agents.heard(sender, now) is None:
            return  # forgotten meanwhile (silence): the bus socket makes it say hello again
        if isinstance(message, Goodbye):
            gone = self.bookkeeping.left(sender)
            if gone is not None:
                kind = gone.kind.value.replace("_", " ")
                log.info("%s %s on %s left (%s)", kind, gone.agent_id, gone.host, message.reason)
            return
        if isinstance(message, AgentInfo):
            self.bookkeeping.offered(sender, message)
            return
        if isinstance(message, DhtStatusChanged):
            self.dht.status_changed(sender, message)
            return
        if isinstance(message, TransferStats):
            for stat in message.peers:
                owner = self.torrents.get(stat.info_hash)
                if owner is not None:
                    owner.swarm.peer_stats(sender, stat)
            return
        info_hash = getattr(message, "info_hash", None)
        torrent = self.torrents.get(info_hash) if isinstance(info_hash, InfoHash) else None
        if torrent is None:
            return  # a torrent removed meanwhile, or a confused agent: nothing to do
        try:
            self._on_torrent_event(torrent, sender, message, now)
        except PieceIndexError as exc:  # the edge where piece numbers from agents are checked
            name = type(message).__name__
            extra = {"info_hash": torrent.info_hash}
            log.warning("%s: %s dropped: %s", torrent.name, name, exc, extra=extra)

    def _on_torrent_event(
        self, torrent: Torrent, sender: bytes, message: Message, now: float
    ) -> None:
        """One event about ``torrent``; a piece number is made a ``PieceIndex`` here.

        Raises:
            PieceIndexError: the message names a piece the torrent does not have.
        """
        metainfo = torrent.metainfo  # None: a magnet link's, with no pieces yet
        geometry = metainfo.info.geometry if metainfo is not None else None
        swarm = torrent.swarm
        match message:
            case TorrentOpened(have=have):
                self._on_opened(torrent, have)
            case CheckProgress(checked=checked, total=total):
                if torrent.state is TorrentState.CHECKING and total:
                    torrent.check_progress = min(1.0, checked / total)
            case PieceVerified(piece=piece) if geometry is not None:
                swarm.piece_verified(geometry.piece_index(piece), now)
            case PieceRejected(piece=piece, contributors=contributors) if geometry is not None:
                swarm.piece_rejected(geometry.piece_index(piece), contributors)
            case CorruptBlocksTraced(piece=piece, liars=liars) if geometry is not None:
                swarm.blocks_traced(geometry.piece_index(piece), liars)
            case StorageFailed(message=text):
                self._fail(torrent, text)
            case TorrentClosed():
                pass
            case PeersDiscovered(peers=peers, source=source):
                swarm.add_candidates(peers, source)
                swarm.connect_more()
            case PeerDhtPort():
                self.dht.peer_port(torrent, sender, message)
            case TrackerStateChanged(url=url):
                tracker_changed(torrent, message)
                torrent.trackers[url] = (message, now)
                if sender in torrent.announces:
                    torrent.announce_results.setdefault(sender, {})[url] = (message, now)
            case _ if isinstance(message, PeerEvent | _Extension):
                self._peer_event(torrent, sender, message, now)

    def _peer_event(
        self, torrent: Torrent, sender: bytes, message: PeerEvent | _Extension, now: float
    ) -> None:
        """An event of one of ``torrent``'s connections (``swarm.py``, ``metadata_phase.py``)."""
        swarm = torrent.swarm
        if isinstance(message, _Extension):
            raw_info = handle_extension_event(torrent, message, now)
            if raw_info is not None:
                self._fetched(torrent, raw_info)
        elif swarm.accepts_connections:
            swarm.handle(sender, message, now)
            if isinstance(message, PeerDisconnected) and torrent.fetch is not None:
                torrent.fetch.peer_gone(message.peer, now)
        elif isinstance(message, PeerDisconnected):
            swarm.closing.pop(message.peer, None)  # a stopped torrent's connection, now closed

    def tick(self, now: float) -> None:
        """Once a second: heartbeats, silent agents, choking rounds, tracker totals, and the
        connection count."""
        self._clock(now)
        self.bookkeeping.check(now)
        self._measure_agents()
        for torrent in self.torrents.values():
            swarm = torrent.swarm
            if torrent.pex is not None and swarm.running:
                torrent.pex.sync(swarm.peers.values(), now, self._send, torrent.info_hash)
            if torrent.fetch is not None and torrent.state is METADATA:
                torrent.fetch.expire(now)
                if not torrent.announces:
                    self.announcing.reannounce(torrent, self._now)
                swarm.due_retries(now)
                swarm.connect_more()
            if swarm.picker is None or torrent.state not in OPEN_STATES:
                continue
            if swarm.choker.due(now):
                swarm.rechoke(now)
            if not torrent.announces:
                self.announcing.reannounce(torrent, self._now)  # LISTEN_PORT_WAIT may be over
            swarm.due_retries(now)
            if swarm.picker.expire_pending(now, PENDING_TIMEOUT):
                swarm.offer_work()
            swarm.connect_more()
            self.announcing.report_totals(torrent)
        self._place_web_seeds()

    def _place_web_seeds(self) -> None:
        """Start the web seed sessions due (``swarm_web_seeds.py``)."""
        place_web_seeds(self.torrents.values(), self.config.max_web_seeds, self._now)

    # -- around a torrent's lifecycle moves (the moves themselves: lifecycle.py) --

    def _start(self, torrent: Torrent) -> None:
        """Open the files (the storage agent checks what is there); the rest follows. A magnet
        link's torrent with no info dictionary yet asks its peers for it first."""
        advance(torrent, start_move(has_metainfo=torrent.metainfo is not None))
        torrent.check_progress = None
        if torrent.magnet is not None and torrent.metainfo is None:
            self._fetch(torrent)
            return
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is not None:
            self._open(torrent, storage)

    def _fetch(self, torrent: Torrent) -> None:
        """Fetch a magnet link's info dictionary: peer agents hold it (``AttachMagnet``), the
        magnet link's trackers are announced and its ``x.pe`` peers dialled."""
        assert torrent.magnet is not None
        swarm = torrent.swarm
        torrent.fetch = MetadataFetch(torrent, self.config, self._send, self.session.metadata_piece)
        torrent.pex = for_torrent(torrent, self.config, self.agents.listen_addresses())
        swarm.magnet_attached = True
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._attach_magnet(torrent, agent)
        swarm.add_candidates(torrent.magnet.peers, PeerSource.MAGNET)
        self.announcing.reannounce(torrent, self._now)
        swarm.connect_more()

    def _fetched(self, torrent: Torrent, raw_info: bytes) -> None:
        """The info dictionary is in: build, check and keep the .torrent, then open it as an
        added .torrent (its connections live on; ``AttachTorrent`` upgrades them)."""
        assert torrent.magnet is not None
        torrent.fetch = None
        try:
            data = metainfo_from_magnet(torrent.magnet, raw_info)
            metainfo = parse_metainfo(data, max_path_depth=self.config.max_path_depth)
        except (MagnetError, MetainfoError) as exc:
            self._fail(torrent, f"the metadata peers sent is not usable: {exc}")
            return
        torrent.metainfo, torrent.metainfo_bytes = metainfo, data
        log.info(
            "%s: metadata fetched (%d bytes)",
            torrent.name,
            len(raw_info),
            extra={"info_hash": torrent.info_hash},
        )
        self.session.torrent_fetched(torrent)
        torrent.swarm.learn_geometry()
        if metainfo.info.private:
            torrent.pex = None  # BEP 27: only its trackers' peers
            torrent.swarm.drop_sources(frozenset({PeerSource.PEX, PeerSource.MAGNET}))
        advance(torrent, Move.METADATA_FETCHED)
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is not None:
            self._open(torrent, storage)

    def _open(self, torrent: Torrent, storage: Agent) -> None:
        info_hash = torrent.info_hash
        self._send(
            storage.identity, OpenTorrent(info_hash, torrent.meta.raw_info, torrent.save_path)
        )

    def _on_opened(self, torrent: Torrent, have_bytes: bytes) -> None:
        if torrent.state not in _OPENING_STATES:
            return  # paused or failed while the files were being checked
        swarm = torrent.swarm
        try:
            have = Bitfield.from_bytes(have_bytes, torrent.num_pieces)
        except BitfieldError as exc:
            self._fail(torrent, f"storage agent: {exc}")
            return
        if swarm.picker is not None:
            if all(piece in have for piece in swarm.picker.have):
                # A storage agent came back (or restarted) with every piece we counted: the
                # swarm goes on; pieces it verified that we never heard of count now.
                geometry = torrent.meta.info.geometry
                for piece in have:
                    if piece not in swarm.picker.have:
                        swarm.piece_verified(geometry.piece_index(piece), self._now)
                return
            # It lost pieces we counted (its disk changed under it): start the torrent again
            # from what it has.
            log.warning(
                "%s: the storage agent lost verified pieces; starting again",
                torrent.name,
                extra={"info_hash": torrent.info_hash},
            )
            self._stop(torrent, close_storage=False)
            advance(torrent, Move.REOPEN)
        swarm.picker = PiecePicker(torrent.num_pieces, have, self.rng)
        torrent.web_seeds.restart()
        swarm.magnet_attached = False  # AttachTorrent below upgrades its connections
        if torrent.pex is None:
            torrent.pex = for_torrent(torrent, self.config, self.agents.listen_addresses())
        torrent.check_progress = None
        geometry = torrent.meta.info.geometry
        torrent.verified_bytes = sum(geometry.piece_size(piece) for piece in have)
        advance(torrent, Move.OPENED_COMPLETE if torrent.complete else Move.OPENED_PARTIAL)
        if not torrent.complete:
            torrent.completed_at = None
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._attach(torrent, agent)
        self.announcing.reannounce(torrent, self._now)
        self._place_web_seeds()  # after AttachTorrent: its sessions need the geometry

    def _stop(self, torrent: Torrent, *, close_storage: bool) -> None:
        """Let go of a torrent: trackers get ``stopped``, connections close, files close."""
        info_hash = torrent.info_hash
        self.announcing.untrack_all(torrent)
        swarm = torrent.swarm
        if swarm.picker is not None or swarm.magnet_attached:
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                self._send(agent.identity, DetachTorrent(info_hash))
        if swarm.picker is not None:
            torrent.verified_pieces = len(swarm.picker)
            torrent.have_kept = swarm.picker.have
        if torrent.fetch is not None:
            torrent.fetch.keep()
        torrent.fetch = torrent.pex = None
        swarm.forget_all()
        swarm.picker = None
        if close_storage:
            for agent in self.agents.of_kind(ServiceKind.STORAGE_AGENT):
                self._send(agent.identity, CloseTorrent(info_hash, delete_files=False))

    def _fail(self, torrent: Torrent, reason: str) -> None:
        """The torrent cannot go on (its files, its metadata): stopped, in error, logged."""
        self._stop(torrent, close_storage=False)
        advance(torrent, Move.FAIL)
        torrent.error = reason
        log.error("%s: error: %s", torrent.name, reason, extra={"info_hash": torrent.info_hash})

    def _attach(self, torrent: Torrent, agent: Agent) -> None:
        picker = torrent.swarm.picker
        assert picker is not None
        info = torrent.meta.info
        self._send(
            agent.identity,
            AttachTorrent(
                info_hash=torrent.info_hash,
                piece_length=info.piece_length,
                total_length=info.total_length,
                num_pieces=info.num_pieces,
                peer_id=self.peer_id,
                have=picker.have.to_bytes(),
                private=info.private,
                storage_endpoint=self._storage_route[0],
                storage_public_key=self._storage_route[1],
                info=torrent.meta.raw_info,
                pex=torrent.pex is not None,
                dht_port=self.dht.port_for(agent, private=info.private),
            ),
        )

    def _send(self, identity: bytes, message: Message) -> None:
        self.outbox.append((identity, message))
