"""The coordinator's decisions, without sockets: bus events in, addressed commands out.

``Coordinator`` is a plain class. The actor feeds it every message from the agents (``handle``),
every control request, and the time (``tick``), then sends what accumulated in ``outbox`` as
``(agent identity, message)`` pairs. Tests drive it directly with fake agents.

This module owns the session and each torrent's lifecycle; the rules of a running swarm
(dialling, piece assignment, choking, bans) are in ``swarm.py``. A torrent moves through:

    CHECKING --TorrentOpened--> DOWNLOADING --all pieces--> SEEDING
    any --pause--> PAUSED --resume--> CHECKING        (files closed while paused)
    any --StorageFailed--> ERROR --resume--> CHECKING (the storage agent reopens the files)
    DOWNLOADING/SEEDING --verify--> CHECKING          (every piece hashed again)

While a torrent is open (``picker`` set) it is attached to every peer agent and announced by the
tracker agents ``announcers.py`` chooses (each announces the port of the peer agent on its own
host); stopping it (pause, error, verify, removal) detaches and untracks it. Who announces is
decided again whenever a peer or tracker agent joins, leaves or sends ``AgentInfo``
(``_reannounce``).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Protocol

from shared.bitfield import Bitfield, BitfieldError
from shared.bus import (
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
    Heartbeat,
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
    TorrentCompleted,
    TorrentOpened,
    TorrentPaused,
    TorrentRemoved,
    TorrentResumed,
    TorrentState,
    TrackerState,
    TrackerStateChanged,
    TrackerTier,
    TrackTorrent,
    TransferStats,
    UntrackTorrent,
    UpdateTransfer,
    VerifyStarted,
)
from shared.config import CoordinatorConfig
from shared.errors import MetainfoError
from shared.geometry import PieceIndexError
from shared.metainfo import parse_metainfo
from shared.types import InfoHash, PeerId

from .agents import Agent, AgentRegistry, HelloVerdict, duplicate_refusal, judge_hello
from .announcers import (
    Announce,
    PeerAgentView,
    TrackerAgentView,
    choose_announces,
    host_port,
    unreachable_hint,
)
from .choking import Choker
from .picking import PiecePicker
from .status import agent_status, torrent_status
from .swarm import MAX_HASH_FAILURES, PeerEvent, SwarmRules
from .torrent import Torrent

__all__ = ["LISTEN_PORT_WAIT", "MAX_HASH_FAILURES", "Coordinator", "SessionListener"]

log = logging.getLogger(__name__)

LISTEN_PORT_WAIT = 3.0
"""Seconds a new torrent waits for a peer agent's listen port before announcing anyway (the
configured ``listen_port``)."""

PENDING_TIMEOUT = 60.0
"""Seconds a downloaded piece may wait for its hash check's answer before it is fetched again
(its delivery was lost: the storage agent died with it in its queue)."""

_MAX_DUPLICATES_LOGGED = 1024
"""Refused second processes remembered (so each is logged once) before the record restarts."""

Outgoing = tuple[bytes, Message]
_OPEN_STATES = (TorrentState.DOWNLOADING, TorrentState.SEEDING)


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
        self.listen_port = listen_port
        self.config = config
        self.rng = rng
        self.session: SessionListener = session or _Forgetful()
        self.agents = AgentRegistry()
        self.torrents: dict[InfoHash, Torrent] = {}
        self.outbox: list[Outgoing] = []
        self.swarm = SwarmRules(
            self.agents, config, self._send, lambda: self._now, self._announce_completed
        )
        self.dropped: list[bytes] = []
        """Agents forgotten for their silence or replaced by a restart, for the actor to forget
        on the bus socket too (so their next message is answered ``Rejected("hello_first")``)."""
        self._duplicates_logged: set[tuple[str, str, int]] = set()
        """(agent id, host, pid) of the second processes whose refusal was logged."""
        self._storage_route = (storage_endpoint, "")
        """The data endpoint and its CURVE key that attached torrents were given."""
        self._heartbeat_seq = 0
        self._next_heartbeat = 0.0
        self._now = 0.0
        """The latest time we were given (status reports times relative to it)."""

    def take_outbox(self) -> list[Outgoing]:
        out, self.outbox = self.outbox, []
        return out

    # -- agents --

    def vet_hello(
        self, identity: bytes, hello: Hello, now: float, connected: Callable[[bytes], bool]
    ) -> Rejected | None:
        """Before an agent's ``Hello`` is welcomed: refuse a second live process of an agent
        id (``agents.judge_hello``); a restart or a new agent passes.

        Called by the bus socket's receiver greenlet, between two of the actor's messages; it
        changes nothing but the record of refusals already logged.

        Args:
            identity: the newcomer's routing identity.
            hello: its ``Hello``.
            now: the time (monotonic seconds).
            connected: asked only when another process of that agent id is registered:
                whether that one still has a connection (``BusSocket.reachable``).

        Returns:
            ``Rejected("duplicate_agent")`` to answer instead of ``Welcome``, or None.
        """
        registered = self.agents.named(hello.agent_id)
        if registered is None or registered.identity == identity:
            return None
        verdict = judge_hello(
            registered,
            identity,
            hello,
            now,
            quiet_after=self.config.heartbeat_interval,
            connected=connected(registered.identity),
        )
        if verdict is not HelloVerdict.DUPLICATE:
            return None
        refusal = duplicate_refusal(registered, now)
        seen = (hello.agent_id, hello.host, hello.pid)
        if seen not in self._duplicates_logged:
            if len(self._duplicates_logged) >= _MAX_DUPLICATES_LOGGED:
                self._duplicates_logged.clear()
            self._duplicates_logged.add(seen)
            log.warning(
                "refused a second process of %s %s: pid %d on %s says hello while pid %d on %s "
                "runs it (heard %.1f s ago); an agent id runs in exactly one process",
                registered.kind.value.replace("_", " "),
                hello.agent_id,
                hello.pid,
                hello.host,
                registered.pid,
                registered.host,
                max(0.0, now - registered.last_heard),
            )
        return refusal

    def agent_joined(self, identity: bytes, hello: Hello, now: float = 0.0) -> None:
        """A welcomed agent: give it the torrents it should know about.

        An agent says ``Hello`` again after it lost us (we restarted, or it was cut off long
        enough to count as dead); it dropped its work then, so whatever it held is forgotten
        here too before it starts afresh. A new process of a registered agent (another routing
        identity; ``vet_hello`` refused it if the old one still lives) is a restart: the old
        registration is forgotten, and its identity goes to ``dropped`` for the bus socket to
        forget too.
        """
        self._now = max(self._now, now)
        previous = self.agents.named(hello.agent_id)
        if self.agents.get(identity) is not None:
            log.info("%s said hello again: starting it afresh", hello.agent_id)
            self.agent_left(identity)
        elif previous is not None:
            moved = "" if previous.host == hello.host else f" on {previous.host} -> {hello.host}"
            log.info(
                "%s restarted (pid %d -> pid %d%s)", hello.agent_id, previous.pid, hello.pid, moved
            )
            self.agent_left(previous.identity)
            self.dropped.append(previous.identity)
        agent = self.agents.join(identity, hello, self._now)
        if agent.kind is ServiceKind.STORAGE_AGENT and self._storage_agent() is not agent:
            log.warning(
                "a second storage agent, %s on %s, stays idle: one storage agent serves a "
                "session (stop the other one)",
                agent.agent_id,
                agent.host,
            )
            return
        for torrent in self.torrents.values():
            match agent.kind:
                case ServiceKind.STORAGE_AGENT if torrent.state in (
                    TorrentState.CHECKING,
                    *_OPEN_STATES,
                ):
                    self._open(torrent, agent)
                case ServiceKind.PEER_AGENT if torrent.picker is not None:
                    self._attach(torrent, agent)
                case ServiceKind.TRACKER_AGENT if torrent.picker is not None:
                    self._reannounce(torrent)

    def agent_left(self, identity: bytes) -> Agent | None:
        """An agent is gone (goodbye, exit, silence): forget what it was doing.

        The pieces a lost peer agent's connections were fetching go back to the picker, and its
        peers are dialled again from the other peer agents (or its replacement). A lost storage
        agent stops nothing: peer agents keep the pieces it has not acknowledged and send them
        again when it is back, and its replacement is asked to open every torrent (its resume
        state makes that quick; ``TorrentOpened`` then reconciles what it has).
        """
        agent = self.agents.leave(identity)
        if agent is None:
            return None
        if agent.kind is ServiceKind.PEER_AGENT:
            for torrent in self.torrents.values():
                self.swarm.forget_agent(torrent, identity)
                self.swarm.connect_more(torrent)
        self._announcers_changed(agent)
        successor = self._storage_agent()
        if agent.kind is ServiceKind.STORAGE_AGENT and successor is not None:
            log.info("storage agent %s takes over from %s", successor.agent_id, agent.agent_id)
            for torrent in self.torrents.values():
                if torrent.state in (TorrentState.CHECKING, *_OPEN_STATES):
                    self._open(torrent, successor)
            if successor.data_endpoint:
                self._on_storage_route((successor.data_endpoint, successor.curve_public_key))
        return agent

    # -- control --

    def add_torrent(
        self, request: AddTorrent, now: float, *, paused: bool = False, persist: bool = True
    ) -> TorrentAdded | ControlFailed:
        try:
            metainfo = parse_metainfo(request.metainfo, max_path_depth=self.config.max_path_depth)
        except MetainfoError as exc:
            return ControlFailed(exc.reason, f"not a usable torrent: {exc}")
        if metainfo.info_hash in self.torrents:
            return ControlFailed(
                "already_added", f"{metainfo.info.name} is already added ({metainfo.info_hash})"
            )
        save_path = request.download_dir or self.config.download_dir
        torrent = Torrent(
            metainfo, request.metainfo, save_path, added_at=now, choker=Choker(self.rng, now)
        )
        self.torrents[metainfo.info_hash] = torrent
        if persist:
            self.session.torrent_added(torrent, paused=paused)
        if paused:
            torrent.state = TorrentState.PAUSED
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

    def pause(self, info_hash: InfoHash) -> TorrentPaused | ControlFailed:
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return _unknown(info_hash)
        if torrent.state is not TorrentState.PAUSED:
            self._stop(torrent, close_storage=True)
            torrent.state = TorrentState.PAUSED
            torrent.check_progress = None
            self.session.torrent_paused(info_hash, True)
        return TorrentPaused(info_hash)

    def resume(self, info_hash: InfoHash) -> TorrentResumed | ControlFailed:
        """Start a paused torrent again, or retry one in error (its files are reopened)."""
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return _unknown(info_hash)
        if torrent.state in (TorrentState.PAUSED, TorrentState.ERROR):
            torrent.error = None
            self._start(torrent)
            self.session.torrent_paused(info_hash, False)
        return TorrentResumed(info_hash)

    def verify(self, info_hash: InfoHash) -> VerifyStarted | ControlFailed:
        """Hash every piece on disk again; the torrent is checking meanwhile."""
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return _unknown(info_hash)
        if torrent.state is TorrentState.PAUSED:
            return ControlFailed("paused", f"{torrent.name} is paused: resume it to verify it")
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is None:
            return ControlFailed("no_storage_agent", "the storage agent is not running")
        self._stop(torrent, close_storage=False)
        torrent.state, torrent.error, torrent.check_progress = TorrentState.CHECKING, None, 0.0
        self._send(storage.identity, RecheckTorrent(info_hash))
        return VerifyStarted(info_hash)

    def remove_torrent(self, request: RemoveTorrent) -> TorrentRemoved | ControlFailed:
        torrent = self.torrents.pop(request.info_hash, None)
        if torrent is None:
            return _unknown(request.info_hash)
        self._stop(torrent, close_storage=False)
        for agent in self.agents.of_kind(ServiceKind.STORAGE_AGENT):
            self._send(agent.identity, CloseTorrent(request.info_hash, request.delete_files))
        self.session.torrent_removed(request.info_hash)
        return TorrentRemoved(request.info_hash)

    def status(self, request: GetStatus | None = None) -> StatusReport:
        prefix = request.prefix.lower() if request is not None else ""
        incoming: dict[bytes, int] = {}
        for torrent in self.torrents.values():
            for record in torrent.peers.values():
                if record.incoming:
                    incoming[record.agent] = incoming.get(record.agent, 0) + 1
        return StatusReport(
            tuple(
                torrent_status(torrent, self._now)
                for torrent in self.torrents.values()
                if torrent.info_hash_hex.startswith(prefix)
            ),
            tuple(
                agent_status(agent, self._now, incoming.get(agent.identity, 0))
                for agent in self.agents
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
        if torrent.tried:
            return f"{len(torrent.tried)} peers were found but none stayed connected"
        return "the trackers know no other peer for this torrent"

    def stop_all(self) -> None:
        """Shutdown: every agent lets go of every torrent (trackers get ``stopped``)."""
        for torrent in self.torrents.values():
            if torrent.state is not TorrentState.PAUSED:
                self._stop(torrent, close_storage=True)

    # -- bus events --

    def handle(self, sender: bytes, message: Message, now: float) -> None:
        """One event from an agent."""
        self._now = max(self._now, now)
        if self.agents.heard(sender, now) is None:
            return  # forgotten meanwhile (silence): the bus socket makes it say hello again
        if isinstance(message, Goodbye):
            self.agent_left(sender)
            return
        if isinstance(message, AgentInfo):
            self._on_agent_info(sender, message)
            return
        if isinstance(message, TransferStats):
            self._on_stats(sender, message)
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
        match message:
            case TorrentOpened(have=have):
                self._on_opened(torrent, have)
            case CheckProgress(checked=checked, total=total):
                if torrent.state is TorrentState.CHECKING and total:
                    torrent.check_progress = min(1.0, checked / total)
            case PieceVerified(piece=piece):
                self.swarm.piece_verified(torrent, geometry.piece_index(piece), now)
            case PieceRejected(piece=piece, contributors=contributors):
                self.swarm.piece_rejected(torrent, geometry.piece_index(piece), contributors)
            case CorruptBlocksTraced(piece=piece, liars=liars):
                self.swarm.blocks_traced(torrent, geometry.piece_index(piece), liars)
            case StorageFailed(message=text):
                self._stop(torrent, close_storage=False)
                torrent.state, torrent.error = TorrentState.ERROR, text
            case TorrentClosed():
                pass
            case PeersDiscovered(peers=peers):
                torrent.add_candidates(peers)
                self.swarm.connect_more(torrent)
            case TrackerStateChanged(url=url):
                torrent.trackers[url] = (message, now)
                if sender in torrent.announces:
                    torrent.announce_results.setdefault(sender, {})[url] = (message, now)
            case _ if isinstance(message, PeerEvent) and torrent.picker is not None:
                self.swarm.handle(torrent, sender, message, now)
            case PeerDisconnected(peer=key):
                torrent.closing.pop(key, None)  # a stopped torrent's connection, now closed

    def tick(self, now: float) -> None:
        """Once a second: heartbeats, silent agents, choking rounds, tracker totals, and the
        connection count."""
        self._now = max(self._now, now)
        self._check_agents(now)
        self._measure_agents()
        for torrent in self.torrents.values():
            if torrent.picker is None or torrent.state not in _OPEN_STATES:
                continue
            if torrent.choker.due(now):
                self.swarm.rechoke(torrent, now)
            if not torrent.announces:
                self._reannounce(torrent)  # LISTEN_PORT_WAIT may be over
            torrent.due_retries(now)
            if torrent.picker.expire_pending(now, PENDING_TIMEOUT):
                self.swarm.offer_work(torrent)
            self.swarm.connect_more(torrent)
            for announce in torrent.announces.values():
                self._send(announce.tracker, self._totals(torrent, announce))

    def _check_agents(self, now: float) -> None:
        """Send heartbeats when due, and count agents silent for too long as dead."""
        interval = self.config.heartbeat_interval
        if interval <= 0:
            return
        limit = interval * self.config.heartbeat_misses
        self._silence_rates(now, interval)
        for agent in self.agents.silent(now, limit):
            log.warning(
                "%s %s on %s was silent for %.0f s: counted as dead, its work goes elsewhere",
                agent.kind.value.replace("_", " "),
                agent.agent_id,
                agent.host,
                now - agent.last_heard,
            )
            self.agent_left(agent.identity)
            self.dropped.append(agent.identity)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + interval
            self._heartbeat_seq += 1
            for agent in self.agents:
                self._send(agent.identity, Heartbeat(self._heartbeat_seq))

    def _silence_rates(self, now: float, interval: float) -> None:
        """A peer agent that missed a heartbeat may be dead: its connections' rates stop
        counting at once (its next ``TransferStats`` brings them back); its connections go
        when it is declared dead."""
        silent = {agent.identity for agent in self.agents.silent(now, interval)}
        if not silent:
            return
        for torrent in self.torrents.values():
            for record in torrent.peers.values():
                if record.agent in silent:
                    record.download_rate = record.upload_rate = 0.0

    def _measure_agents(self) -> None:
        """Each peer agent's rates: the sum over its open connections (placement's input)."""
        rates: dict[bytes, tuple[float, float]] = {}
        for torrent in self.torrents.values():
            for record in torrent.peers.values():
                down, up = rates.get(record.agent, (0.0, 0.0))
                rates[record.agent] = (down + record.download_rate, up + record.upload_rate)
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            agent.download_rate, agent.upload_rate = rates.get(agent.identity, (0.0, 0.0))

    def _storage_agent(self) -> Agent | None:
        """The storage agent serving the session: the first one that joined."""
        return self.agents.first(ServiceKind.STORAGE_AGENT)

    def take_dropped(self) -> list[bytes]:
        dropped, self.dropped = self.dropped, []
        return dropped

    def _on_agent_info(self, sender: bytes, info: AgentInfo) -> None:
        agent = self.agents.get(sender)
        if agent is None:
            return
        agent.offered(info)
        log.info(
            "%s %s on %s offers capacity %d%s%s",
            agent.kind.value.replace("_", " "),
            agent.agent_id,
            agent.host,
            info.capacity,
            f", peers at {info.listen_address}" if info.listen_address else "",
            f", announces from {info.announce_host}" if info.announce_host else "",
        )
        if agent.kind in (ServiceKind.PEER_AGENT, ServiceKind.TRACKER_AGENT):
            self._announcers_changed(None)
        elif agent is self._storage_agent() and info.data_endpoint:
            self._on_storage_route((info.data_endpoint, info.curve_public_key))

    def _on_storage_route(self, route: tuple[str, str]) -> None:
        """A storage agent tells where peer agents reach it; when that changed, the attached
        torrents are attached again with the new endpoint."""
        if route == self._storage_route:
            return
        self._storage_route = route
        for torrent in self.torrents.values():
            if torrent.picker is None:
                continue
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                self._send(agent.identity, DetachTorrent(torrent.metainfo.info_hash))
            self.swarm.forget_all(torrent)
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                self._attach(torrent, agent)
            self.swarm.connect_more(torrent)

    def _on_stats(self, sender: bytes, message: TransferStats) -> None:
        for stat in message.peers:
            owner = self.torrents.get(stat.info_hash)
            if owner is None:
                continue
            record = owner.peers.get(stat.peer)
            if record is None:
                closing = owner.closing.get(stat.peer)
                if closing is not None and closing.agent == sender:
                    owner.count_final(closing, stat.downloaded, stat.uploaded)
                continue
            if record.agent == sender:
                record.downloaded, record.uploaded = stat.downloaded, stat.uploaded
                record.download_rate, record.upload_rate = stat.download_rate, stat.upload_rate
                record.peer_choking = stat.peer_choking
                record.peer_interested = stat.peer_interested
                record.am_choking = stat.am_choking
                record.am_interested = stat.am_interested
                record.snubbed = stat.snubbed

    # -- torrent lifecycle --

    def _start(self, torrent: Torrent) -> None:
        """Open the files (the storage agent checks what is there); the rest follows."""
        torrent.state, torrent.check_progress = TorrentState.CHECKING, None
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is not None:
            self._open(torrent, storage)

    def _open(self, torrent: Torrent, storage: Agent) -> None:
        info_hash = torrent.metainfo.info_hash
        self._send(
            storage.identity, OpenTorrent(info_hash, torrent.metainfo.raw_info, torrent.save_path)
        )

    def _on_opened(self, torrent: Torrent, have_bytes: bytes) -> None:
        if torrent.state not in (TorrentState.CHECKING, *_OPEN_STATES):
            return  # paused or failed while the files were being checked
        try:
            have = Bitfield.from_bytes(have_bytes, torrent.num_pieces)
        except BitfieldError as exc:
            self._stop(torrent, close_storage=False)
            torrent.state, torrent.error = TorrentState.ERROR, f"storage agent: {exc}"
            return
        if torrent.picker is not None:
            if all(piece in have for piece in torrent.picker.have):
                # A storage agent came back (or restarted) with every piece we counted: the
                # swarm goes on; pieces it verified that we never heard of count now.
                geometry = torrent.metainfo.info.geometry
                for piece in have:
                    if piece not in torrent.picker.have:
                        self.swarm.piece_verified(torrent, geometry.piece_index(piece), self._now)
                return
            # It lost pieces we counted (its disk changed under it): start the torrent again
            # from what it has.
            log.warning("%s: the storage agent lost verified pieces; starting again", torrent.name)
            self._stop(torrent, close_storage=False)
            torrent.state = TorrentState.CHECKING
        torrent.picker = PiecePicker(torrent.num_pieces, have, self.rng)
        torrent.check_progress = None
        geometry = torrent.metainfo.info.geometry
        torrent.verified_bytes = sum(geometry.piece_size(piece) for piece in have)
        torrent.state = TorrentState.SEEDING if torrent.complete else TorrentState.DOWNLOADING
        if not torrent.complete:
            torrent.completed_at = None
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._attach(torrent, agent)
        self._reannounce(torrent)

    def _stop(self, torrent: Torrent, *, close_storage: bool) -> None:
        """Let go of a torrent: trackers get ``stopped``, connections close, files close."""
        info_hash = torrent.metainfo.info_hash
        for identity in torrent.announces:
            self._send(identity, UntrackTorrent(info_hash))
        torrent.announces, torrent.announce_results = {}, {}
        if torrent.picker is not None:
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                self._send(agent.identity, DetachTorrent(info_hash))
            torrent.verified_pieces = len(torrent.picker)
        self.swarm.forget_all(torrent)
        torrent.picker = None
        if close_storage:
            for agent in self.agents.of_kind(ServiceKind.STORAGE_AGENT):
                self._send(agent.identity, CloseTorrent(info_hash, delete_files=False))

    def _attach(self, torrent: Torrent, agent: Agent) -> None:
        assert torrent.picker is not None
        info = torrent.metainfo.info
        self._send(
            agent.identity,
            AttachTorrent(
                info_hash=torrent.metainfo.info_hash,
                piece_length=info.piece_length,
                total_length=info.total_length,
                num_pieces=info.num_pieces,
                peer_id=self.peer_id,
                have=torrent.picker.have.to_bytes(),
                private=info.private,
                storage_endpoint=self._storage_route[0],
                storage_public_key=self._storage_route[1],
            ),
        )

    # -- announces --

    def _announcers_changed(self, gone: Agent | None) -> None:
        """A peer or tracker agent joined, left (``gone``) or told its addresses: decide again
        who announces each open torrent. A tracker agent that left is not told to stop (it
        forgets its torrents when it registers again)."""
        if gone is not None:
            if gone.kind not in (ServiceKind.PEER_AGENT, ServiceKind.TRACKER_AGENT):
                return
            for torrent in self.torrents.values():
                torrent.announces.pop(gone.identity, None)
                torrent.announce_results.pop(gone.identity, None)
        for torrent in self.torrents.values():
            self._reannounce(torrent)

    def _announces_for(self, torrent: Torrent) -> tuple[Announce, ...]:
        """Who should announce ``torrent`` now (``announcers.py``)."""
        if torrent.picker is None:
            return ()
        peers = [
            PeerAgentView(agent.identity, agent.agent_id, agent.listen_address)
            for agent in self.agents.of_kind(ServiceKind.PEER_AGENT)
            if agent.listen_address is not None
        ]
        if not peers:
            if torrent.announces:
                # The peer agents are gone, perhaps restarting: keep what we announce rather
                # than stop and start every tracker twice.
                return tuple(torrent.announces.values())
            if self._now - torrent.added_at < LISTEN_PORT_WAIT:
                return ()  # announce our real port: wait briefly for a peer agent's AgentInfo
        trackers = [
            TrackerAgentView(agent.identity, agent.agent_id, agent.announce_host)
            for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT)
        ]
        return choose_announces(
            trackers, peers, private=torrent.metainfo.info.private, fallback_port=self.listen_port
        )

    def _reannounce(self, torrent: Torrent) -> None:
        """Bring the tracker agents in line with ``_announces_for``: ``UntrackTorrent`` to each
        one no longer chosen, ``TrackTorrent`` to each one newly chosen; a changed port is an
        ``UntrackTorrent`` followed by a ``TrackTorrent``."""
        chosen = {announce.tracker: announce for announce in self._announces_for(torrent)}
        before = torrent.announces
        if chosen == before:
            return
        for identity, announce in before.items():
            now_chosen = chosen.get(identity)
            if now_chosen is None or now_chosen.port != announce.port:
                self._send(identity, UntrackTorrent(torrent.metainfo.info_hash))
                torrent.announce_results.pop(identity, None)
        torrent.announces = chosen
        for identity, announce in chosen.items():
            earlier = before.get(identity)
            if earlier is None or earlier.port != announce.port:
                self._track(torrent, announce)
        self._log_announces(torrent, before)

    def _log_announces(self, torrent: Torrent, before: dict[bytes, Announce]) -> None:
        announces = list(torrent.announces.values())
        if not announces:
            if before:
                log.info("%s: no tracker agent announces it now", torrent.name)
            return
        described = ", ".join(
            f"{a.tracker_id} {host_port(a.host or '?', a.port)}"
            + (f" for {a.peer_agent}" if a.peer_agent else "")
            for a in announces
        )
        log.info("%s: announced by %s", torrent.name, described)
        if len(announces) == 1 and not announces[0].reachable and announces[0].host:
            log.warning(
                "%s: %s", torrent.name, unreachable_hint(announces[0].host, announces[0].port)
            )

    def _totals(self, torrent: Torrent, announce: Announce) -> UpdateTransfer:
        """What ``announce`` reports: the totals, or 0 when another announce reports them."""
        info_hash, left = torrent.metainfo.info_hash, torrent.left
        if announce.totals:
            return UpdateTransfer(info_hash, torrent.uploaded, torrent.downloaded, left)
        return UpdateTransfer(info_hash, 0, 0, left)

    def _announce_completed(self, torrent: Torrent) -> None:
        """Every piece verified: each announce gets its totals, then ``completed``, so the
        ``completed`` announce carries what was downloaded."""
        for announce in torrent.announces.values():
            self._send(announce.tracker, self._totals(torrent, announce))
            self._send(announce.tracker, TorrentCompleted(torrent.metainfo.info_hash))

    def _track(self, torrent: Torrent, announce: Announce) -> None:
        metainfo = torrent.metainfo
        totals = self._totals(torrent, announce)
        self._send(
            announce.tracker,
            TrackTorrent(
                info_hash=metainfo.info_hash,
                tiers=tuple(TrackerTier(tier) for tier in metainfo.trackers if tier),
                peer_id=self.peer_id,
                listen_port=announce.port,
                private=metainfo.info.private,
                uploaded=totals.uploaded,
                downloaded=totals.downloaded,
                left=totals.left,
            ),
        )

    def _send(self, identity: bytes, message: Message) -> None:
        self.outbox.append((identity, message))


def _unknown(info_hash: InfoHash) -> ControlFailed:
    return ControlFailed("unknown_torrent", f"no torrent {info_hash}")
