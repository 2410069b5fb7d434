# The tracker agent's logic without I/O: what to announce where, and what to tell the coordinator.
#
# Strategy: ``TrackerAgentCore`` keeps one ``AnnounceSchedule`` and the transfer totals per
# torrent. Commands from the coordinator go in (``track``, ``update``, ``complete``,
# ``untrack``); ``due(now)`` hands out ``AnnounceJob``s (a URL and a ready ``AnnounceRequest``)
# plus the ``TrackerStateChanged(announcing)`` messages to send; the actor runs each job in its
# own greenlet and gives the outcome back to ``finish``, which returns ``PeersDiscovered`` and
# ``TrackerStateChanged`` messages. The clock is passed in, so all of this is tested without
# sockets or sleeping.
#
# Rules:
# - Only ``http``, ``https`` and ``udp`` URLs are announced to; any other URL is reported
#   ``disabled`` once, with the reason, and left out of the schedule.
# - A job's outcome counts only if it is the latest announce to that URL of a torrent still
#   tracked; anything else (an announce that outlived ``UntrackTorrent``) is ignored.
# - Peers of one reply are deduplicated and sent in messages of at most PEERS_PER_MESSAGE (the
#   schema's bound); error texts are one line of at most MAX_ERROR_CHARS characters.
# - Private torrents are announced to their trackers only; this agent has no other source yet.

from __future__ import annotations

import itertools
import logging
import random
from dataclasses import dataclass, field

from shared.bus import (
    Message,
    PeersDiscovered,
    PeerSource,
    TrackerState,
    TrackerStateChanged,
    TrackTorrent,
    UpdateTransfer,
)
from shared.errors import TrackerError
from shared.tracker import AnnounceEvent, AnnounceFailure, AnnounceRequest, AnnounceResponse
from shared.types import InfoHash, PeerAddress, PeerId

from .schedule import AnnounceSchedule, RetryPolicy

__all__ = [
    "MAX_ERROR_CHARS",
    "PEERS_PER_MESSAGE",
    "SUPPORTED_SCHEMES",
    "AnnounceJob",
    "AnnounceOutcome",
    "TrackerAgentCore",
    "url_scheme",
]

log = logging.getLogger(__name__)

SUPPORTED_SCHEMES = frozenset({"http", "https", "udp"})

PEERS_PER_MESSAGE = 4096
"""Peers in one ``PeersDiscovered`` (the schema's bound on ``peers``)."""

MAX_ERROR_CHARS = 1024
"""Characters of an error text sent to the coordinator."""

_U32_MAX = 2**32 - 1

AnnounceOutcome = AnnounceResponse | AnnounceFailure | TrackerError
"""How an announce ended: answered, refused by the tracker, or failed on the way."""


@dataclass(frozen=True, slots=True)
class AnnounceJob:
    """One announce to send: ``request`` to the tracker at ``url``."""

    info_hash: InfoHash
    url: str
    tier: int
    request: AnnounceRequest
    attempt: int
    """Unique per job; ties the outcome to the announce the schedule has in flight."""

    @property
    def event(self) -> AnnounceEvent:
        return self.request.event


@dataclass(slots=True)
class _Torrent:
    info_hash: InfoHash
    peer_id: PeerId
    port: int
    private: bool
    uploaded: int
    downloaded: int
    left: int
    key: int
    schedule: AnnounceSchedule
    tier_of: dict[str, int]
    tracker_ids: dict[str, bytes] = field(default_factory=dict)
    counts: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url`` (``""`` when it has none)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def _line(text: str) -> str:
    """One line of at most MAX_ERROR_CHARS characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_ERROR_CHARS else flat[: MAX_ERROR_CHARS - 3] + "..."


def _count(value: int | None) -> int | None:
    """A peer count as the bus carries it: unknown when negative, capped at 2**32 - 1."""
    return None if value is None or value < 0 else min(value, _U32_MAX)


class TrackerAgentCore:
    """Announce plans and transfer totals of every tracked torrent.

    Args:
        numwant: peers asked for in each announce (``[tracker_agent] numwant``).
        rng: shuffles tiers and draws each torrent's announce ``key``.
        retry: back-off after failures.
        announce_to_all_tiers: announce to one tracker of every tier, not just the first
            tier that answers.
    """

    def __init__(
        self,
        *,
        numwant: int,
        rng: random.Random,
        retry: RetryPolicy | None = None,
        announce_to_all_tiers: bool = False,
    ) -> None:
        self.numwant = numwant
        self._rng = rng
        self._retry = retry or RetryPolicy()
        self._all_tiers = announce_to_all_tiers
        self._torrents: dict[InfoHash, _Torrent] = {}
        self._attempts = itertools.count(1)

    @property
    def info_hashes(self) -> tuple[InfoHash, ...]:
        """The torrents being tracked."""
        return tuple(self._torrents)

    def schedule(self, info_hash: InfoHash) -> AnnounceSchedule:
        """The announce plan of a tracked torrent.

        Raises:
            KeyError: the torrent is not tracked.
        """
        return self._torrents[info_hash].schedule

    # --- commands -----------------------------------------------------------------------------

    def track(self, command: TrackTorrent, now: float) -> list[Message]:
        """Start tracking a torrent; its first announces are due at once.

        A torrent already tracked only takes the new totals. Returns the ``disabled`` reports
        of URLs that cannot be announced to.
        """
        known = self._torrents.get(command.info_hash)
        if known is not None:
            known.uploaded, known.downloaded = command.uploaded, command.downloaded
            known.left = command.left
            return []
        reports: list[Message] = []
        tiers: list[list[str]] = []
        tier_of: dict[str, int] = {}
        for index, tier in enumerate(command.tiers):
            urls = []
            for url in tier.urls:
                if url in tier_of:
                    continue
                tier_of[url] = index
                problem = self._unusable(url, command.listen_port)
                if problem is None:
                    urls.append(url)
                else:
                    reports.append(
                        self._report(command.info_hash, url, index, TrackerState.DISABLED, problem)
                    )
            tiers.append(urls)
        schedule = AnnounceSchedule(
            tiers,
            now=now,
            rng=self._rng,
            retry=self._retry,
            announce_to_all_tiers=self._all_tiers,
        )
        self._torrents[command.info_hash] = _Torrent(
            info_hash=command.info_hash,
            peer_id=command.peer_id,
            port=command.listen_port,
            private=command.private,
            uploaded=command.uploaded,
            downloaded=command.downloaded,
            left=command.left,
            key=self._rng.getrandbits(32),
            schedule=schedule,
            tier_of=tier_of,
        )
        return reports

    def update(self, command: UpdateTransfer) -> None:
        """New totals, used from the next announce on (ignored for an unknown torrent)."""
        torrent = self._torrents.get(command.info_hash)
        if torrent is not None:
            torrent.uploaded, torrent.downloaded = command.uploaded, command.downloaded
            torrent.left = command.left

    def complete(self, info_hash: InfoHash, now: float) -> None:
        """The download finished: ``left`` is 0 and ``completed`` is announced once."""
        torrent = self._torrents.get(info_hash)
        if torrent is not None:
            torrent.left = 0
            torrent.schedule.complete(now)

    def untrack(self, info_hash: InfoHash) -> list[AnnounceJob]:
        """Forget a torrent; returns its ``stopped`` announces (empty for an unknown one)."""
        torrent = self._torrents.pop(info_hash, None)
        if torrent is None:
            return []
        return [self._job(torrent, due.url, due.event) for due in torrent.schedule.stop()]

    def untrack_all(self) -> list[AnnounceJob]:
        """Forget every torrent; returns all their ``stopped`` announces."""
        jobs: list[AnnounceJob] = []
        for info_hash in list(self._torrents):
            jobs.extend(self.untrack(info_hash))
        return jobs

    # --- the clock ----------------------------------------------------------------------------

    def next_deadline(self, now: float) -> float | None:
        """When ``due`` next has work: ``now`` if at once, None if only waiting on announces."""
        deadlines = [t.schedule.next_deadline(now) for t in self._torrents.values()]
        return min((d for d in deadlines if d is not None), default=None)

    def due(self, now: float) -> tuple[list[AnnounceJob], list[Message]]:
        """The announces to start now, and their ``announcing`` reports."""
        jobs: list[AnnounceJob] = []
        reports: list[Message] = []
        for torrent in self._torrents.values():
            for due in torrent.schedule.due(now):
                job = self._job(torrent, due.url, due.event)
                torrent.attempts[due.url] = job.attempt
                jobs.append(job)
                reports.append(self._state(torrent, due.url, now))
        return jobs, reports

    def finish(self, job: AnnounceJob, outcome: AnnounceOutcome, now: float) -> list[Message]:
        """Take the outcome of ``job``; returns the messages for the coordinator.

        ``stopped`` jobs and stale outcomes return nothing.
        """
        torrent = self._torrents.get(job.info_hash)
        if torrent is None or torrent.attempts.get(job.url) != job.attempt:
            return []
        del torrent.attempts[job.url]
        schedule = torrent.schedule
        match outcome:
            case AnnounceResponse():
                schedule.succeeded(
                    job.url, now, interval=outcome.interval, min_interval=outcome.min_interval
                )
                if outcome.tracker_id is not None:
                    torrent.tracker_ids[job.url] = outcome.tracker_id
                torrent.counts[job.url] = (_count(outcome.complete), _count(outcome.incomplete))
                if outcome.warning:
                    log.warning("%s: tracker warning: %s", job.url, outcome.warning)
                messages: list[Message] = [self._state(torrent, job.url, now)]
                messages.extend(self._peer_batches(job.info_hash, outcome.addresses))
                return messages
            case AnnounceFailure():
                retry_after = None if outcome.retry_in is None else outcome.retry_in * 60.0
                schedule.failed(job.url, now, retry_after=retry_after, disable=outcome.never_retry)
                return [self._state(torrent, job.url, now, outcome.message)]
            case TrackerError():
                schedule.failed(job.url, now)
                return [self._state(torrent, job.url, now, str(outcome))]

    # --- helpers ------------------------------------------------------------------------------

    def _unusable(self, url: str, port: int) -> str | None:
        scheme = url_scheme(url)
        if scheme not in SUPPORTED_SCHEMES:
            shown = scheme or url[:40]
            return f"unsupported tracker URL scheme {shown!r} (http, https and udp are)"
        if port == 0:
            return "no listen port to announce"
        return None

    def _job(self, torrent: _Torrent, url: str, event: AnnounceEvent) -> AnnounceJob:
        request = AnnounceRequest(
            info_hash=torrent.info_hash,
            peer_id=torrent.peer_id,
            port=torrent.port,
            uploaded=torrent.uploaded,
            downloaded=torrent.downloaded,
            left=torrent.left,
            event=event,
            # A stopped announce wants no peers back (libtorrent sends numwant=0 too).
            numwant=0 if event is AnnounceEvent.STOPPED else self.numwant,
            key=torrent.key,
            trackerid=torrent.tracker_ids.get(url),
        )
        return AnnounceJob(
            torrent.info_hash, url, torrent.tier_of[url], request, next(self._attempts)
        )

    def _state(
        self, torrent: _Torrent, url: str, now: float, error: str | None = None
    ) -> TrackerStateChanged:
        view = torrent.schedule.view(url, now)
        seeders, leechers = torrent.counts.get(url, (None, None))
        return TrackerStateChanged(
            info_hash=torrent.info_hash,
            url=url,
            tier=view.tier,
            state=view.state,
            error=None if error is None else _line(error),
            seeders=seeders,
            leechers=leechers,
            completed=None,
            next_announce_in=view.next_announce_in,
        )

    def _report(
        self, info_hash: InfoHash, url: str, tier: int, state: TrackerState, error: str
    ) -> TrackerStateChanged:
        return TrackerStateChanged(
            info_hash=info_hash,
            url=url,
            tier=tier,
            state=state,
            error=_line(error),
            seeders=None,
            leechers=None,
            completed=None,
            next_announce_in=None,
        )

    def _peer_batches(
        self, info_hash: InfoHash, addresses: tuple[PeerAddress, ...]
    ) -> list[PeersDiscovered]:
        unique = list(dict.fromkeys(addresses))
        return [
            PeersDiscovered(
                info_hash=info_hash,
                peers=tuple(unique[start : start + PEERS_PER_MESSAGE]),
                source=PeerSource.TRACKER,
            )
            for start in range(0, len(unique), PEERS_PER_MESSAGE)
        ]
