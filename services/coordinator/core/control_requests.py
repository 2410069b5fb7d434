"""The coordinator's control requests on torrents already added: pause, resume, verify,
remove, status, export, add a web seed; and what it tells the session store.

Strategy: ``ControlRequests`` is a mixin of ``Coordinator`` (``coordinator.py``), split out to
keep each module small: every request answers with one reply message or ``ControlFailed``, and
moves a torrent only through ``lifecycle.advance`` and the coordinator's ``_start`` /
``_stop``. Rules: as ``coordinator.py``'s (one clock, ``now`` passed in).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Protocol

from torviz.shared.bus import (
    MAX_WEB_SEEDS,
    AddWebSeed,
    AgentStatus,
    CloseTorrent,
    ControlFailed,
    DhtTorrentSummary,
    GetStatus,
    Message,
    RecheckTorrent,
    RemoveTorrent,
    ServiceKind,
    SessionChanges,
    StatusReport,
    TorrentExported,
    TorrentPaused,
    TorrentRemoved,
    TorrentResumed,
    TorrentState,
    TorrentStatus,
    VerifyStarted,
    WatchSession,
    WebSeedAdded,
)
from torviz.shared.config import CoordinatorConfig
from torviz.shared.errors import WebSeedError
from torviz.shared.types import InfoHash

from .agents import AgentRegistry
from .dht_links import dht_totals, torrent_dht
from .event_log import EventLog
from .lifecycle import Move, advance
from .session_watch import SessionWatch
from .status import agent_status, diagnose, session_totals, torrent_row, torrent_status
from .torrent import Torrent
from .torrent_detail import detail_size, torrent_detail
from .web_seeds import TooManyWebSeedsError

__all__ = [
    "DETAIL_BUDGET",
    "ControlRequests",
    "Forgetful",
    "SessionListener",
    "no_metadata",
    "unknown",
]

DETAIL_BUDGET = 6 * 1024 * 1024
"""Bytes of piece maps and file paths one ``StatusReport`` carries at most."""

log = logging.getLogger(__name__)


class SessionListener(Protocol):
    """Told of every change worth keeping across a restart (the daemon's session store)."""

    def torrent_added(self, torrent: Torrent, *, paused: bool) -> None: ...
    def torrent_fetched(self, torrent: Torrent) -> None: ...
    def metadata_piece(self, info_hash: InfoHash, size: int, piece: int, data: bytes) -> None: ...
    def torrent_paused(self, info_hash: InfoHash, paused: bool) -> None: ...
    def torrent_removed(self, info_hash: InfoHash) -> None: ...
    def web_seeds_changed(self, info_hash: InfoHash, urls: tuple[str, ...]) -> None: ...


class Forgetful:
    """The one-shot download keeps nothing."""

    def torrent_added(self, torrent: Torrent, *, paused: bool) -> None:
        pass

    def torrent_fetched(self, torrent: Torrent) -> None:
        pass

    def metadata_piece(self, info_hash: InfoHash, size: int, piece: int, data: bytes) -> None:
        pass

    def torrent_paused(self, info_hash: InfoHash, paused: bool) -> None:
        pass

    def torrent_removed(self, info_hash: InfoHash) -> None:
        pass

    def web_seeds_changed(self, info_hash: InfoHash, urls: tuple[str, ...]) -> None:
        pass


class ControlRequests:
    """The control requests of ``Coordinator`` on added torrents (see the module comment)."""

    torrents: dict[InfoHash, Torrent]
    agents: AgentRegistry
    config: CoordinatorConfig
    session: SessionListener
    events: EventLog
    watching: SessionWatch

    def _clock(self, now: float) -> float:
        raise NotImplementedError

    def _start(self, torrent: Torrent) -> None:
        raise NotImplementedError

    def _stop(self, torrent: Torrent, *, close_storage: bool) -> None:
        raise NotImplementedError

    def _send(self, identity: bytes, message: Message) -> None:
        raise NotImplementedError

    def _place_web_seeds(self) -> None:
        raise NotImplementedError

    def pause(self, info_hash: InfoHash, now: float) -> TorrentPaused | ControlFailed:
        """Stop a torrent and close its files until it is resumed."""
        self._clock(now)
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return unknown(info_hash)
        if torrent.state is not TorrentState.PAUSED:
            self._stop(torrent, close_storage=True)
            advance(torrent, Move.PAUSE)
            torrent.check_progress = None
            self.session.torrent_paused(info_hash, True)
            log.info("%s: paused", torrent.name, extra={"info_hash": info_hash})
        return TorrentPaused(info_hash)

    def resume(self, info_hash: InfoHash, now: float) -> TorrentResumed | ControlFailed:
        """Start a paused torrent again, or retry one in error (its files are reopened)."""
        self._clock(now)
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return unknown(info_hash)
        if torrent.state in (TorrentState.PAUSED, TorrentState.ERROR):
            retried = "retried" if torrent.state is TorrentState.ERROR else "resumed"
            torrent.error = None
            self._start(torrent)
            self.session.torrent_paused(info_hash, False)
            log.info("%s: %s", torrent.name, retried, extra={"info_hash": info_hash})
        return TorrentResumed(info_hash)

    def verify(self, info_hash: InfoHash, now: float) -> VerifyStarted | ControlFailed:
        """Hash every piece on disk again; the torrent is checking meanwhile."""
        self._clock(now)
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return unknown(info_hash)
        if torrent.state is TorrentState.PAUSED:
            return ControlFailed("paused", f"{torrent.name} is paused: resume it to verify it")
        if torrent.metainfo is None:
            return no_metadata(torrent)
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is None:
            return ControlFailed("no_storage_agent", "the storage agent is not running")
        self._stop(torrent, close_storage=False)
        advance(torrent, Move.VERIFY)
        torrent.error, torrent.check_progress = None, 0.0
        self._send(storage.identity, RecheckTorrent(info_hash))
        log.info("%s: verifying its files", torrent.name, extra={"info_hash": info_hash})
        return VerifyStarted(info_hash)

    def remove_torrent(self, request: RemoveTorrent, now: float) -> TorrentRemoved | ControlFailed:
        """Forget a torrent (its files deleted when asked)."""
        self._clock(now)
        torrent = self.torrents.pop(request.info_hash, None)
        if torrent is None:
            return unknown(request.info_hash)
        self._stop(torrent, close_storage=False)
        for agent in self.agents.of_kind(ServiceKind.STORAGE_AGENT):
            self._send(agent.identity, CloseTorrent(request.info_hash, request.delete_files))
        self.session.torrent_removed(request.info_hash)
        data = "files deleted" if request.delete_files else "files kept"
        log.info("%s: removed (%s)", torrent.name, data, extra={"info_hash": request.info_hash})
        return TorrentRemoved(request.info_hash)

    def add_web_seed(self, request: AddWebSeed, now: float) -> WebSeedAdded | ControlFailed:
        """Add a web seed URL to a torrent (kept across restarts); fetched from at once when
        the torrent runs and has room."""
        self._clock(now)
        torrent = self.torrents.get(request.info_hash)
        if torrent is None:
            return unknown(request.info_hash)
        try:
            url, added = torrent.web_seeds.add(request.url, user=True, strict=True)
        except WebSeedError as exc:
            return ControlFailed("invalid_web_seed", str(exc))
        except TooManyWebSeedsError:
            return ControlFailed(
                "too_many_web_seeds",
                f"{torrent.name} has {MAX_WEB_SEEDS} web seeds already (the most it keeps)",
            )
        self.session.web_seeds_changed(torrent.info_hash, torrent.web_seeds.user_urls())
        if added:
            log.info(
                "%s: web seed %s added", torrent.name, url, extra={"info_hash": request.info_hash}
            )
            self._place_web_seeds()
        return WebSeedAdded(request.info_hash, url, added)

    def status(self, now: float, request: GetStatus | None = None) -> StatusReport:
        """Every torrent (those whose info hash starts with ``request.prefix``, with their
        files and piece map when ``request.detail``) and agent, the kept log and the totals.

        The details of many torrents share ``DETAIL_BUDGET`` bytes: those past it have none
        (ask for one torrent to see its own), so that the reply stays under the bus's header
        limit."""
        now = self._clock(now)
        prefix = request.prefix.lower() if request is not None else ""
        budget = DETAIL_BUDGET if request is not None and request.detail else 0
        torrents: list[TorrentStatus] = []
        for torrent in self.torrents.values():
            if not torrent.info_hash_hex.startswith(prefix):
                continue
            dht = torrent_dht(torrent.info_hash, self.agents)
            status = torrent_status(torrent, now, dht, self.agents, web_seeds=self.config.web_seeds)
            if budget > 0:
                detail = torrent_detail(torrent)
                budget -= detail_size(detail)
                if budget >= 0:
                    status = replace(status, detail=detail)
            torrents.append(status)
        return StatusReport(
            tuple(torrents),
            self._agent_statuses(now),
            self.events.recent(now),
            session_totals(self.torrents.values(), self.agents),
        )

    def watch(self, request: WatchSession, now: float) -> SessionChanges:
        """What changed since the watcher's last answer (``session_watch.py``): torrent rows,
        removals, the events after ``request.events_after``, the totals and every agent."""
        now = self._clock(now)
        rows = (torrent_row(torrent) for torrent in self.torrents.values())
        changes = self.watching.changes(rows, request.since)
        return SessionChanges(
            revision=changes.revision,
            complete=changes.complete,
            rows=changes.rows,
            removed=changes.removed,
            events=self.events.after(request.events_after, now),
            totals=session_totals(self.torrents.values(), self.agents),
            agents=self._agent_statuses(now),
        )

    def _agent_statuses(self, now: float) -> tuple[AgentStatus, ...]:
        incoming: dict[bytes, int] = {}
        for torrent in self.torrents.values():
            for record in torrent.swarm.peers.values():
                if record.incoming:
                    incoming[record.agent] = incoming.get(record.agent, 0) + 1
        return tuple(
            agent_status(agent, now, incoming.get(agent.identity, 0)) for agent in self.agents
        )

    def export(self, info_hash: InfoHash, now: float) -> TorrentExported | ControlFailed:
        """The torrent as a .torrent file (as added, or as built once fetched)."""
        self._clock(now)
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return unknown(info_hash)
        if torrent.metainfo is None:
            return no_metadata(torrent)
        return TorrentExported(info_hash, torrent.metainfo_bytes)

    def totals(self) -> dict[InfoHash, tuple[int, int]]:
        """``(uploaded, downloaded)`` of every torrent, for the session store."""
        return {key: (t.uploaded, t.downloaded) for key, t in self.torrents.items()}

    def diagnosis(self, info_hash: InfoHash) -> str:
        """One line on why a torrent finds no peers (for the one-shot download's error)."""
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return "the torrent is not in the session"
        trackers = self.agents.of_kind(ServiceKind.TRACKER_AGENT)
        found = torrent_dht(info_hash, trackers)
        totals = dht_totals(trackers)
        nodes = totals.nodes if totals is not None else 0
        if found is None and any(a.dht_port for a in trackers) and not torrent.private:
            found = DhtTorrentSummary(info_hash, 0, 0, None)  # not reported yet, but looked up
        return diagnose(torrent, bool(trackers), found, nodes)

    def stop_all(self, now: float) -> None:
        """Shutdown: every agent lets go of every torrent (trackers get ``stopped``)."""
        self._clock(now)
        for torrent in self.torrents.values():
            if torrent.state is not TorrentState.PAUSED:
                self._stop(torrent, close_storage=True)


def unknown(info_hash: InfoHash) -> ControlFailed:
    return ControlFailed("unknown_torrent", f"no torrent {info_hash}")


def no_metadata(torrent: Torrent) -> ControlFailed:
    return ControlFailed("no_metadata", f"{torrent.name}: its metadata has not arrived yet")
