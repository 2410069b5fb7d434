"""The tracker agent's logic without I/O: what to announce where, and what to tell the coordinator.

Strategy: ``TrackerAgentCore`` keeps one ``AnnounceSchedule`` and the transfer totals per
torrent. Commands from the coordinator go in (``track``, ``update``, ``complete``,
``untrack``); ``due(now)`` hands out jobs, ``AnnounceJob``s (a URL and a ready
``AnnounceRequest``) and ``ScrapeJob``s, plus the ``TrackerStateChanged`` messages to send;
the actor runs each job in its own greenlet and gives the outcome back to ``finish`` or
``finish_scrape``, which return ``PeersDiscovered`` and ``TrackerStateChanged`` messages.
The clock is passed in, so all of this is tested without sockets or sleeping.

Rules:
- Only ``http``, ``https`` and ``udp`` URLs are announced to; any other URL is reported
  ``disabled`` once, with the reason, and left out of the schedule.
- A job's outcome counts only if it is the latest announce to that URL of a torrent still
  tracked; anything else (an announce that outlived ``UntrackTorrent``) is ignored.
- Patience (``announce_timeout``): an HTTP request is cut at that time by its client, so its
  failure arrives then. A UDP exchange is not (BEP 15 retransmits it for up to two hours):
  when it has gone unanswered that long, the core reports its tracker ``failed`` ("no reply
  within N s, still retrying") and the tiers fall through (``AnnounceSchedule.overdue``);
  its answer, if it ever comes, still counts.
- Each report carries the tracker's latest error text until it answers again. A tracker's
  ``warning message`` is shown the same way: the state stays ``working`` and ``error`` reads
  "tracker warning: ..." (so ``status`` shows it next to a working tracker); it is also
  logged. Counts come from the latest announce (seeders, leechers) and scrape (seeders,
  leechers, completed).
- Scrapes (when ``scrape_interval`` is set): after a successful announce, a tracker that has a
  scrape endpoint (UDP, or HTTP with a BEP 48 scrape URL) is scraped, at most once per
  ``scrape_interval`` seconds per torrent. A failed scrape changes no state; it is logged.
- Peers of one reply are deduplicated and sent in messages of at most PEERS_PER_MESSAGE (the
  schema's bound); error texts are one line of at most MAX_ERROR_CHARS characters.
- Private torrents are announced to their trackers only; this agent has no other source yet.
"""

from __future__ import annotations

import itertools
import logging
import math
import random
from dataclasses import dataclass, field

from torviz.shared.bus import (
    MAX_BATCH,
    Message,
    PeersDiscovered,
    PeerSource,
    TrackerState,
    TrackerStateChanged,
    TrackTorrent,
    UpdateTransfer,
)
from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    AnnounceEvent,
    AnnounceFailure,
    AnnounceRequest,
    AnnounceResponse,
    ScrapeStats,
    scrape_url,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

from .schedule import AnnounceSchedule, RetryPolicy

__all__ = [
    "MAX_ERROR_CHARS",
    "PEERS_PER_MESSAGE",
    "SUPPORTED_SCHEMES",
    "AnnounceJob",
    "AnnounceOutcome",
    "Job",
    "ScrapeJob",
    "ScrapeOutcome",
    "TrackerAgentCore",
    "url_scheme",
]

log = logging.getLogger(__name__)

_CONTEXT = "torviz_context"
"""The record attribute the service's log formatter shows as ``[ih=...]``: what
``shared.runtime.logging.with_context`` sets, given here as plain ``logging`` ``extra`` since
``core/`` imports nothing of ``shared.runtime`` (a test checks both tag a line alike)."""
_SHORT_HASH = 8  # hex digits of an info hash in log lines, as ``short_hash`` gives them

SUPPORTED_SCHEMES = frozenset({"http", "https", "udp"})

PEERS_PER_MESSAGE = MAX_BATCH
"""Peers in one ``PeersDiscovered`` (the schema's bound on ``peers``)."""

MAX_ERROR_CHARS = 1024
"""Characters of an error text sent to the coordinator."""

_U32_MAX = 2**32 - 1

AnnounceOutcome = AnnounceResponse | AnnounceFailure | TrackerError
"""How an announce ended: answered, refused by the tracker, or failed on the way."""

ScrapeOutcome = ScrapeStats | TrackerError
"""How a scrape ended: the torrent's counts, or why there are none."""


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


@dataclass(frozen=True, slots=True)
class ScrapeJob:
    """One scrape to send: the counts of ``info_hash`` from the tracker announced to at ``url``."""

    info_hash: InfoHash
    url: str
    attempt: int


Job = AnnounceJob | ScrapeJob
"""What ``TrackerAgentCore.due`` hands out."""


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
    counts: dict[str, _Counts] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    """The latest error (or warning) text of each tracker, until it answers cleanly."""
    attempts: dict[str, int] = field(default_factory=dict)
    patience: dict[str, float] = field(default_factory=dict)
    """UDP announces in flight: when each stops being waited for (``overdue``)."""
    scrape_after: dict[str, float] = field(default_factory=dict)
    scrapes_wanted: set[str] = field(default_factory=set)
    scraping: dict[str, int] = field(default_factory=dict)
    """Scrapes in flight: URL -> attempt."""


@dataclass(frozen=True, slots=True)
class _Counts:
    seeders: int | None = None
    leechers: int | None = None
    completed: int | None = None


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url`` (``""`` when it has none)."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep else ""


def _tagged(info_hash: InfoHash) -> dict[str, str]:
    """The ``extra`` that tags a log line with its torrent, ``[ih=0123abcd]``.

    Args:
        info_hash: the torrent.

    Returns:
        The record attributes to log with.
    """
    return {_CONTEXT: f"ih={info_hash.hex[:_SHORT_HASH]}"}


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
        patience: seconds a UDP announce is waited for before its tracker counts as failed
            (``announce_timeout``); None: wait for its outcome.
        scrape_interval: seconds at least between scrapes of one tracker for one torrent;
            None: never scrape.
    """

    def __init__(
        self,
        *,
        numwant: int,
        rng: random.Random,
        retry: RetryPolicy | None = None,
        announce_to_all_tiers: bool = False,
        patience: float | None = None,
        scrape_interval: float | None = None,
    ) -> None:
        self.numwant = numwant
        self._rng = rng
        self._retry = retry or RetryPolicy()
        self._all_tiers = announce_to_all_tiers
        self._patience = patience
        self._scrape_interval = scrape_interval
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

    def forget_all(self) -> int:
        """Forget every torrent without any ``stopped`` announce; returns how many there were.

        For a new registration with the coordinator, which tracks its torrents again at once:
        the outcomes of announces still in flight are stale from now on (``finish`` drops them).
        """
        count = len(self._torrents)
        self._torrents.clear()
        return count

    # --- the clock ----------------------------------------------------------------------------

    def next_deadline(self, now: float) -> float | None:
        """When ``due`` next has work: ``now`` if at once, None if only waiting on jobs."""
        deadlines: list[float] = []
        for torrent in self._torrents.values():
            deadline = torrent.schedule.next_deadline(now)
            if deadline is not None:
                deadlines.append(deadline)
            deadlines.extend(max(now, d) for d in torrent.patience.values())
            if torrent.scrapes_wanted:
                deadlines.append(now)
        return min(deadlines, default=None)

    def due(self, now: float) -> tuple[list[Job], list[Message]]:
        """The jobs to start now, and the reports to send (``announcing``, and ``failed`` for
        UDP announces past their patience)."""
        jobs: list[Job] = []
        reports: list[Message] = []
        for torrent in self._torrents.values():
            reports.extend(self._overdue(torrent, now))
            for due in torrent.schedule.due(now):
                job = self._job(torrent, due.url, due.event)
                torrent.attempts[due.url] = job.attempt
                if self._patience is not None and url_scheme(due.url) == "udp":
                    torrent.patience[due.url] = now + self._patience
                jobs.append(job)
                reports.append(self._state(torrent, due.url, now))
            for url in sorted(torrent.scrapes_wanted):
                scrape = ScrapeJob(torrent.info_hash, url, next(self._attempts))
                torrent.scraping[url] = scrape.attempt
                jobs.append(scrape)
            torrent.scrapes_wanted.clear()
        return jobs, reports

    def finish(self, job: AnnounceJob, outcome: AnnounceOutcome, now: float) -> list[Message]:
        """Take the outcome of ``job``; returns the messages for the coordinator.

        ``stopped`` jobs and stale outcomes return nothing.
        """
        torrent = self._torrents.get(job.info_hash)
        if torrent is None or torrent.attempts.get(job.url) != job.attempt:
            return []
        del torrent.attempts[job.url]
        torrent.patience.pop(job.url, None)
        schedule = torrent.schedule
        url = job.url
        match outcome:
            case AnnounceResponse():
                schedule.succeeded(
                    url, now, interval=outcome.interval, min_interval=outcome.min_interval
                )
                if outcome.tracker_id is not None:
                    torrent.tracker_ids[url] = outcome.tracker_id
                old = torrent.counts.get(url, _Counts())
                torrent.counts[url] = _Counts(
                    _count(outcome.complete), _count(outcome.incomplete), old.completed
                )
                if outcome.warning:
                    log.warning("%s: tracker warning: %s", url, outcome.warning)
                    torrent.notes[url] = f"tracker warning: {outcome.warning}"
                else:
                    torrent.notes.pop(url, None)
                self._want_scrape(torrent, url, now)
                messages: list[Message] = [self._state(torrent, url, now)]
                messages.extend(self._peer_batches(job.info_hash, outcome.addresses))
                return messages
            case AnnounceFailure():
                retry_after = None if outcome.retry_in is None else outcome.retry_in * 60.0
                schedule.failed(url, now, retry_after=retry_after, disable=outcome.never_retry)
                torrent.notes[url] = outcome.message
                return [self._state(torrent, url, now)]
            case TrackerError():
                schedule.failed(url, now)
                torrent.notes[url] = str(outcome)
                return [self._state(torrent, url, now)]

    def finish_scrape(self, job: ScrapeJob, outcome: ScrapeOutcome, now: float) -> list[Message]:
        """Take the outcome of a scrape; returns the report carrying the new counts, if any."""
        torrent = self._torrents.get(job.info_hash)
        if torrent is None or torrent.scraping.get(job.url) != job.attempt:
            return []
        del torrent.scraping[job.url]
        interval = self._scrape_interval or 0.0
        match outcome:
            case ScrapeStats(complete=seeders, downloaded=completed, incomplete=leechers):
                torrent.scrape_after[job.url] = now + interval
                torrent.counts[job.url] = _Counts(
                    _count(seeders), _count(leechers), _count(completed)
                )
                return [self._state(torrent, job.url, now)]
            case TrackerError(reason="no_scrape"):
                torrent.scrape_after[job.url] = math.inf
            case TrackerError():
                # Scraping is optional for a tracker: wait the full interval, at least a minute.
                torrent.scrape_after[job.url] = now + max(interval, 60.0)
        log.info("%s: scrape failed: %s", job.url, outcome, extra=_tagged(job.info_hash))
        return []

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

    def _overdue(self, torrent: _Torrent, now: float) -> list[Message]:
        """UDP announces past their patience: their trackers are reported failed."""
        late = [url for url, deadline in torrent.patience.items() if deadline <= now]
        reports: list[Message] = []
        for url in late:
            del torrent.patience[url]
            if torrent.schedule.overdue(url, now):
                text = f"no reply within {self._patience:g} s, still retrying"
                torrent.notes[url] = text
                log.warning("%s: %s", url, text, extra=_tagged(torrent.info_hash))
                reports.append(self._state(torrent, url, now))
        return reports

    def _want_scrape(self, torrent: _Torrent, url: str, now: float) -> None:
        if self._scrape_interval is None or url in torrent.scraping:
            return
        if now < torrent.scrape_after.get(url, -math.inf):
            return
        if url_scheme(url) == "udp" or scrape_url(url) is not None:
            torrent.scrapes_wanted.add(url)
        else:
            torrent.scrape_after[url] = math.inf  # BEP 48: no scrape URL, never will be

    def _state(self, torrent: _Torrent, url: str, now: float) -> TrackerStateChanged:
        view = torrent.schedule.view(url, now)
        counts = torrent.counts.get(url, _Counts())
        note = torrent.notes.get(url)
        return TrackerStateChanged(
            info_hash=torrent.info_hash,
            url=url,
            tier=view.tier,
            state=view.state,
            error=None if note is None else _line(note),
            seeders=counts.seeders,
            leechers=counts.leechers,
            completed=counts.completed,
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
