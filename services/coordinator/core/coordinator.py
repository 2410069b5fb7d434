"""The coordinator's session, without sockets: bus events in, addressed commands out.

``Coordinator`` is a plain class. The actor feeds it every message from the agents (``handle``),
every control request, and the time (``tick``), then sends what accumulated in ``outbox`` as
``(agent identity, message)`` pairs. Tests drive it directly with fake agents.

Strategy: this class holds the torrents and routes each event to the part that decides:
``agent_bookkeeping.py`` (agents arriving, vetted, heard, silent, gone), ``lifecycle.py`` (the
one table of a torrent's states), each torrent's ``swarm.py`` (dialling, pieces, choking,
bans) and ``announcing.py`` (which tracker agents announce what). What happens around a
lifecycle move (files opened and closed, peer agents attached and detached) is here.

Rules:
- One clock: every entry point takes ``now`` (monotonic seconds); nothing reads a clock, and
  status reports times relative to the latest ``now`` given.
- While a torrent is open (``swarm.picker`` set) it is attached to every peer agent and
  announced; stopping it (pause, error, verify, removal) detaches and untracks it.
- Piece numbers from agents are checked once, here (``PieceIndexError`` drops the event).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.bus import (
    AddTorrent,
    AgentInfo,
    AttachTorrent,
    CheckProgress,
    CloseTorrent,
    ControlFailed,
    CorruptBlocksTraced,
    DetachTorrent,
    GetStatus,
    Goodbye,
    Hello,
    Message,
    OpenTorrent,
    PeerDisconnected,
    PeersDiscovered,
    PieceRejected,
    PieceVerified,
    RecheckTorrent,
    Rejected,
    RemoveTorrent,
    ServiceKind,
    StatusReport,
    StorageFailed,
    TorrentAdded,
    TorrentClosed,
    TorrentOpened,
    TorrentPaused,
    TorrentRemoved,
    TorrentResumed,
    TorrentState,
    TrackerState,
    TrackerStateChanged,
    TransferStats,
    VerifyStarted,
)
from torviz.shared.config import CoordinatorConfig
from torviz.shared.errors import MetainfoError
from torviz.shared.geometry import PieceIndexError
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash, PeerId

from .agent_bookkeeping import AgentBookkeeping
from .agents import Agent, AgentRegistry
from .announcing import LISTEN_PORT_WAIT, Announcing
from .choking import Choker
from .lifecycle import OPEN_STATES, Move, advance
from .picking import PiecePicker
from .status import agent_status, torrent_status
from .swarm import MAX_HASH_FAILURES, PeerEvent, Swarm, SwarmContext
from .torrent import Torrent

__all__ = ["LISTEN_PORT_WAIT", "MAX_HASH_FAILURES", "Coordinator", "SessionListener"]

log = logging.getLogger(__name__)

PENDING_TIMEOUT = 60.0
"""Seconds a downloaded piece may wait for its hash check's answer before it is fetched again
(its delivery was lost: the storage agent died with it in its queue)."""

Outgoing = tuple[bytes, Message]
_OPENING_STATES = (TorrentState.CHECKING, *OPEN_STATES)
"""States in which the storage agent holds the files open."""


class SessionListener(Protocol):
    """Told of every change worth keeping across a restart (the daemon's session store)."""

    def torrent_added(self, torrent: Torrent, *, paused: bool) -> None: ...
    def torrent_paused(self, info_hash: InfoHash, paused: bool) -> None: ...
    def torrent_removed(self, info_hash: InfoHash) -> None: ...


class _Forgetful:
    """The one-shot download keeps nothing."""

    def torrent_added(self, torrent: Torrent, *, paused: bool) -> None:
        pass

    def torrent_paused(self, info_hash: InfoHash, paused: bool) -> None:
        pass

    def torrent_removed(self, info_hash: InfoHash) -> None:
        pass


class Coordinator:
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
        self.session: SessionListener = session or _Forgetful()
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
        self._storage_route = (storage_endpoint, "")
        """The data endpoint and its CURVE key that attached torrents were given."""
        self._now = 0.0
        """The latest time we were given (status reports times relative to it)."""

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
                case ServiceKind.TRACKER_AGENT if torrent.swarm.picker is not None:
                    self.announcing.reannounce(torrent, self._now)

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
        successor = self.bookkeeping.storage_agent()
        if agent.kind is ServiceKind.STORAGE_AGENT and successor is not None:
            log.info("storage agent %s takes over from %s", successor.agent_id, agent.agent_id)
            for torrent in self.torrents.values():
                if torrent.state in _OPENING_STATES:
                    self._open(torrent, successor)
            if successor.data_endpoint:
                self._on_storage_route((successor.data_endpoint, successor.curve_public_key))

    def agent_offered(self, agent: Agent, info: AgentInfo) -> None:
        """``AgentListener``: announcers may change; a storage agent's route may."""
        if agent.kind in (ServiceKind.PEER_AGENT, ServiceKind.TRACKER_AGENT):
            self.announcing.announcers_changed(self.torrents.values(), None, self._now)
        elif agent is self.bookkeeping.storage_agent() and info.data_endpoint:
            self._on_storage_route((info.data_endpoint, info.curve_public_key))

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
                self._send(agent.identity, DetachTorrent(torrent.metainfo.info_hash))
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

    # -- control --

    def add_torrent(
        self, request: AddTorrent, now: float, *, paused: bool = False, persist: bool = True
    ) -> TorrentAdded | ControlFailed:
        """Add a torrent (started, or paused); refused when unusable or already added."""
        self._clock(now)
        try:
            metainfo = parse_metainfo(request.metainfo, max_path_depth=self.config.max_path_depth)
        except MetainfoError as exc:
            return ControlFailed(exc.reason, f"not a usable torrent: {exc}")
        if metainfo.info_hash in self.torrents:
            return ControlFailed(
                "already_added", f"{metainfo.info.name} is already added ({metainfo.info_hash})"
            )
        save_path = request.download_dir or self.config.download_dir
        torrent = Torrent(metainfo, request.metainfo, save_path, added_at=now)
        torrent.swarm = Swarm(torrent, self._swarm_context, Choker(self.rng, now))
        self.torrents[metainfo.info_hash] = torrent
        if persist:
            self.session.torrent_added(torrent, paused=paused)
        if paused:
            advance(torrent, Move.PAUSE)
        else:
            self._start(torrent)
        return TorrentAdded(metainfo.info_hash, metainfo.info.name)

    def restore(
        self, metainfo: bytes, save_path: str, *, paused: bool, totals: tuple[int, int], now: float
    ) -> TorrentAdded | ControlFailed:
        """Bring back a torrent of an earlier run; ``totals`` is ``(uploaded, downloaded)``."""
        reply = self.add_torrent(AddTorrent(metainfo, save_path), now, paused=paused, persist=False)
        if isinstance(reply, TorrentAdded):
            torrent = self.torrents[reply.info_hash]
            torrent.uploaded_closed, torrent.downloaded_closed = totals
            torrent.downloaded_floor = torrent.downloaded_closed
        return reply

    def pause(self, info_hash: InfoHash, now: float) -> TorrentPaused | ControlFailed:
        """Stop a torrent and close its files until it is resumed."""
        self._clock(now)
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return _unknown(info_hash)
        if torrent.state is not TorrentState.PAUSED:
            self._stop(torrent, close_storage=True)
            advance(torrent, Move.PAUSE)
            torrent.check_progress = None
            self.session.torrent_paused(info_hash, True)
        return TorrentPaused(info_hash)

    def resume(self, info_hash: InfoHash, now: float) -> TorrentResumed | ControlFailed:
        """Start a paused torrent again, or retry one in error (its files are reopened)."""
        self._clock(now)
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return _unknown(info_hash)
        if torrent.state in (TorrentState.PAUSED, TorrentState.ERROR):
            torrent.error = None
            self._start(torrent)
            self.session.torrent_paused(info_hash, False)
        return TorrentResumed(info_hash)

    def verify(self, info_hash: InfoHash, now: float) -> VerifyStarted | ControlFailed:
        """Hash every piece on disk again; the torrent is checking meanwhile."""
        self._clock(now)
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return _unknown(info_hash)
        if torrent.state is TorrentState.PAUSED:
            return ControlFailed("paused", f"{torrent.name} is paused: resume it to verify it")
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is None:
            return ControlFailed("no_storage_agent", "the storage agent is not running")
        self._stop(torrent, close_storage=False)
        advance(torrent, Move.VERIFY)
        torrent.error, torrent.check_progress = None, 0.0
        self._send(storage.identity, RecheckTorrent(info_hash))
        return VerifyStarted(info_hash)

    def remove_torrent(self, request: RemoveTorrent, now: float) -> TorrentRemoved | ControlFailed:
        """Forget a torrent (its files deleted when asked)."""
        self._clock(now)
        torrent = self.torrents.pop(request.info_hash, None)
        if torrent is None:
            return _unknown(request.info_hash)
        self._stop(torrent, close_storage=False)
        for agent in self.agents.of_kind(ServiceKind.STORAGE_AGENT):
            self._send(agent.identity, CloseTorrent(request.info_hash, request.delete_files))
        self.session.torrent_removed(request.info_hash)
        return TorrentRemoved(request.info_hash)

    def status(self, now: float, request: GetStatus | None = None) -> StatusReport:
        """Every torrent (those whose info hash starts with ``request.prefix``) and agent."""
        now = self._clock(now)
        prefix = request.prefix.lower() if request is not None else ""
        incoming: dict[bytes, int] = {}
        for torrent in self.torrents.values():
            for record in torrent.swarm.peers.values():
                if record.incoming:
                    incoming[record.agent] = incoming.get(record.agent, 0) + 1
        return StatusReport(
            tuple(
                torrent_status(torrent, now)
                for torrent in self.torrents.values()
                if torrent.info_hash_hex.startswith(prefix)
            ),
            tuple(
                agent_status(agent, now, incoming.get(agent.identity, 0)) for agent in self.agents
            ),
        )

    def totals(self) -> dict[InfoHash, tuple[int, int]]:
        """``(uploaded, downloaded)`` of every torrent, for the session store."""
        return {key: (t.uploaded, t.downloaded) for key, t in self.torrents.items()}

    def diagnosis(self, info_hash: InfoHash) -> str:
        """One line on why a torrent finds no peers (for the one-shot download's error)."""
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return "the torrent is not in the session"
        if not any(torrent.metainfo.trackers):
            return "the torrent lists no tracker"
        if self.agents.first(ServiceKind.TRACKER_AGENT) is None:
            return "the tracker agent is not running"
        states = [state for state, _ in torrent.trackers.values()]
        if not states:
            return "no tracker has answered yet"
        failed = [state for state in states if state.state is TrackerState.FAILED]
        if len(failed) == len(states):
            errors = "; ".join(f"{state.url}: {state.error or 'failed'}" for state in failed[:3])
            return f"every tracker failed: {errors}"
        if torrent.swarm.tried:
            return f"{len(torrent.swarm.tried)} peers were found but none stayed connected"
        return "the trackers know no other peer for this torrent"

    def stop_all(self, now: float) -> None:
        """Shutdown: every agent lets go of every torrent (trackers get ``stopped``)."""
        self._clock(now)
        for torrent in self.torrents.values():
            if torrent.state is not TorrentState.PAUSED:
                self._stop(torrent, close_storage=True)

    # -- bus events --

    def handle(self, sender: bytes, message: Message, now: float) -> None:
        """One event from an agent."""
        self._clock(now)
        if self.agents.heard(sender, now) is None:
            return  # forgotten meanwhile (silence): the bus socket makes it say hello again
        if isinstance(message, Goodbye):
            self.bookkeeping.left(sender)
            return
        if isinstance(message, AgentInfo):
            self.bookkeeping.offered(sender, message)
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
            log.warning("%s: %s dropped: %s", torrent.name, type(message).__name__, exc)

    def _on_torrent_event(
        self, torrent: Torrent, sender: bytes, message: Message, now: float
    ) -> None:
        """One event about ``torrent``; a piece number is made a ``PieceIndex`` here.

        Raises:
            PieceIndexError: the message names a piece the torrent does not have.
        """
        geometry = torrent.metainfo.info.geometry
        swarm = torrent.swarm
        match message:
            case TorrentOpened(have=have):
                self._on_opened(torrent, have)
            case CheckProgress(checked=checked, total=total):
                if torrent.state is TorrentState.CHECKING and total:
                    torrent.check_progress = min(1.0, checked / total)
            case PieceVerified(piece=piece):
                swarm.piece_verified(geometry.piece_index(piece), now)
            case PieceRejected(piece=piece, contributors=contributors):
                swarm.piece_rejected(geometry.piece_index(piece), contributors)
            case CorruptBlocksTraced(piece=piece, liars=liars):
                swarm.blocks_traced(geometry.piece_index(piece), liars)
            case StorageFailed(message=text):
                self._stop(torrent, close_storage=False)
                advance(torrent, Move.FAIL)
                torrent.error = text
            case TorrentClosed():
                pass
            case PeersDiscovered(peers=peers):
                swarm.add_candidates(peers)
                swarm.connect_more()
            case TrackerStateChanged(url=url):
                torrent.trackers[url] = (message, now)
                if sender in torrent.announces:
                    torrent.announce_results.setdefault(sender, {})[url] = (message, now)
            case _ if isinstance(message, PeerEvent) and swarm.picker is not None:
                swarm.handle(sender, message, now)
            case PeerDisconnected(peer=key):
                swarm.closing.pop(key, None)  # a stopped torrent's connection, now closed

    def tick(self, now: float) -> None:
        """Once a second: heartbeats, silent agents, choking rounds, tracker totals, and the
        connection count."""
        self._clock(now)
        self.bookkeeping.check(now)
        self._measure_agents()
        for torrent in self.torrents.values():
            swarm = torrent.swarm
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

    # -- around a torrent's lifecycle moves (the moves themselves: lifecycle.py) --

    def _start(self, torrent: Torrent) -> None:
        """Open the files (the storage agent checks what is there); the rest follows."""
        advance(torrent, Move.START)
        torrent.check_progress = None
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is not None:
            self._open(torrent, storage)

    def _open(self, torrent: Torrent, storage: Agent) -> None:
        info_hash = torrent.metainfo.info_hash
        self._send(
            storage.identity, OpenTorrent(info_hash, torrent.metainfo.raw_info, torrent.save_path)
        )

    def _on_opened(self, torrent: Torrent, have_bytes: bytes) -> None:
        if torrent.state not in _OPENING_STATES:
            return  # paused or failed while the files were being checked
        swarm = torrent.swarm
        try:
            have = Bitfield.from_bytes(have_bytes, torrent.num_pieces)
        except BitfieldError as exc:
            self._stop(torrent, close_storage=False)
            advance(torrent, Move.FAIL)
            torrent.error = f"storage agent: {exc}"
            return
        if swarm.picker is not None:
            if all(piece in have for piece in swarm.picker.have):
                # A storage agent came back (or restarted) with every piece we counted: the
                # swarm goes on; pieces it verified that we never heard of count now.
                geometry = torrent.metainfo.info.geometry
                for piece in have:
                    if piece not in swarm.picker.have:
                        swarm.piece_verified(geometry.piece_index(piece), self._now)
                return
            # It lost pieces we counted (its disk changed under it): start the torrent again
            # from what it has.
            log.warning("%s: the storage agent lost verified pieces; starting again", torrent.name)
            self._stop(torrent, close_storage=False)
            advance(torrent, Move.REOPEN)
        swarm.picker = PiecePicker(torrent.num_pieces, have, self.rng)
        torrent.check_progress = None
        geometry = torrent.metainfo.info.geometry
        torrent.verified_bytes = sum(geometry.piece_size(piece) for piece in have)
        advance(torrent, Move.OPENED_COMPLETE if torrent.complete else Move.OPENED_PARTIAL)
        if not torrent.complete:
            torrent.completed_at = None
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._attach(torrent, agent)
        self.announcing.reannounce(torrent, self._now)

    def _stop(self, torrent: Torrent, *, close_storage: bool) -> None:
        """Let go of a torrent: trackers get ``stopped``, connections close, files close."""
        info_hash = torrent.metainfo.info_hash
        self.announcing.untrack_all(torrent)
        swarm = torrent.swarm
        if swarm.picker is not None:
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                self._send(agent.identity, DetachTorrent(info_hash))
            torrent.verified_pieces = len(swarm.picker)
        swarm.forget_all()
        swarm.picker = None
        if close_storage:
            for agent in self.agents.of_kind(ServiceKind.STORAGE_AGENT):
                self._send(agent.identity, CloseTorrent(info_hash, delete_files=False))

    def _attach(self, torrent: Torrent, agent: Agent) -> None:
        picker = torrent.swarm.picker
        assert picker is not None
        info = torrent.metainfo.info
        self._send(
            agent.identity,
            AttachTorrent(
                info_hash=torrent.metainfo.info_hash,
                piece_length=info.piece_length,
                total_length=info.total_length,
                num_pieces=info.num_pieces,
                peer_id=self.peer_id,
                have=picker.have.to_bytes(),
                private=info.private,
                storage_endpoint=self._storage_route[0],
                storage_public_key=self._storage_route[1],
            ),
        )

    def _send(self, identity: bytes, message: Message) -> None:
        self.outbox.append((identity, message))


def _unknown(info_hash: InfoHash) -> ControlFailed:
    return ControlFailed("unknown_torrent", f"no torrent {info_hash}")
