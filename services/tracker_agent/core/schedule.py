"""When to announce to which tracker of one torrent: a pure schedule with the clock passed in.

Strategy: BEP 12 tiers. The tracker URLs of a torrent form a list of tiers; each tier is
shuffled once (with the injected RNG) when the schedule is made. Announcing happens in
*rounds*: a round walks the trackers in order (first tier first, each tier front to back) and
announces to one tracker at a time; the first tracker that answers ends the round, moves to
the front of its tier, and sets the start of the next round (its ``interval``). A tracker that
fails is put in back-off and the round falls through to the next tracker, then to the next
tier. A round in which nobody answered ends; the next one starts when the first tracker's
back-off expires. Every round starts again at the top, so a better tier is retried (once its
back-off has expired) before a worse one is used again, as BEP 12 asks.

With ``announce_to_all_tiers`` each tier runs its own rounds, side by side (libtorrent's
``announce_to_all_tiers``): one working tracker per tier.

A round does not wait forever for a slow tracker: when the caller reports an announce
``overdue`` (no answer within its patience, ``announce_timeout``), the tracker shows failed
and the round falls through as if it had failed, while the announce itself stays in flight
(a UDP exchange retransmits for up to two hours under BEP 15). Such a *lingering* announce
still ends with ``succeeded`` or ``failed``: an answer, however late, makes its tracker
working and ends the round like any answer (the announce the round was waiting on then
lingers in turn); a failure puts it in back-off. A tracker is never announced to twice at
once, so a lingering tracker is skipped by later rounds until its announce ends.

Back-off after the n-th failure in a row: ``first_delay * factor ** (n - 1)`` capped at
``max_delay`` (15, 30, 60, 120 ... 3600 s by default), never less than the tracker's BEP 31
``retry in``. libtorrent (``announce_infohash::failed``) grows its delay quadratically
instead: ``5 + n * n * 5 * tracker_backoff / 100`` s, i.e. 17, 55, 117, 205, 317 ... with the
default ``tracker_backoff`` of 250, capped at 60 minutes and never below the tracker's
``retry in``. The doubling here mirrors BEP 15's UDP retransmission (15 * 2^n s), so HTTP and
UDP trackers are retried alike, with libtorrent's one-hour cap.

Rules:
- Nothing here reads a clock, sleeps or does I/O: every method takes ``now`` (seconds, any
  monotonic origin) and ``next_deadline(now)`` says when ``due`` has work again.
- A round waits on at most one announce (so per torrent, or per tier with
  ``announce_to_all_tiers``); the caller reports each announce's end with ``succeeded`` or
  ``failed``, and may report it ``overdue`` before that.
- Events per tracker: ``started`` until a tracker has accepted one; ``completed`` once, after
  ``complete()``, to a tracker that has us registered (a tracker that learnt of us with
  ``left=0`` already knows); ``stopped`` from ``stop()`` to every tracker that may have us
  registered. Nothing is due after ``stop()``.
- A tracker's ``min interval`` is honoured for every regular announce; ``completed`` goes
  out at once, as libtorrent does: the limit is about eventless announces (failure code 500
  is "eventless request too soon"), and opentracker's ~16 minutes would hold the event back
  long after the download finished.
"""

from __future__ import annotations

import math
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torviz.shared.bus import TrackerState
from torviz.shared.tracker import AnnounceEvent

__all__ = [
    "AnnounceSchedule",
    "DueAnnounce",
    "RetryPolicy",
    "Shuffler",
    "TrackerView",
]

_NEVER = math.inf
_LONG_AGO = -math.inf
_MAX_EXPONENT = 64  # past this the delay is long capped; keeps factor ** n finite


class Shuffler(Protocol):
    """What the schedule needs of an RNG: ``random.Random`` fits."""

    def shuffle(self, x: MutableSequence[Any], /) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Back-off after failed announces.

    Attributes:
        first_delay: seconds before retrying after the first failure (default 15).
        factor: growth per further failure in a row (default 2).
        max_delay: seconds the delay never exceeds (default 3600, libtorrent's cap).
    """

    first_delay: float = 15.0
    factor: float = 2.0
    max_delay: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 < self.first_delay <= self.max_delay or self.factor < 1:
            raise ValueError(f"unusable retry policy {self!r}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` (>= 1) failures in a row."""
        exponent = min(max(failures, 1) - 1, _MAX_EXPONENT)
        return min(self.max_delay, self.first_delay * self.factor**exponent)


@dataclass(frozen=True, slots=True)
class DueAnnounce:
    """An announce the caller should send now."""

    url: str
    tier: int
    event: AnnounceEvent


@dataclass(frozen=True, slots=True)
class TrackerView:
    """One tracker as the schedule sees it (for reports and tests)."""

    url: str
    tier: int
    state: TrackerState
    failures: int
    next_announce_in: float | None
    """Seconds until this tracker may be announced to again; None: not planned."""


@dataclass(slots=True)
class _Tracker:
    url: str
    tier: int
    state: TrackerState = TrackerState.IDLE
    failures: int = 0
    retry_at: float = _LONG_AGO
    """After a failure: not before this time."""
    min_due: float = _LONG_AGO
    """After a success: not before this time (the tracker's ``min interval``)."""
    started_sent: bool = False
    completed_sent: bool = False
    flight: AnnounceEvent | None = None
    flight_after_completion: bool = False
    """The announce in flight was sent after ``complete()`` (so it reported ``left=0``)."""
    overdue: bool = False
    """The announce in flight went unanswered past its patience; the round moved on."""

    @property
    def usable(self) -> bool:
        return self.state is not TrackerState.DISABLED


@dataclass(slots=True)
class _Round:
    """The trackers one round walks, and where it stands."""

    tiers: list[list[_Tracker]]
    next_start: float | None
    """When the next round starts; None while a round runs or when nothing is left to try."""
    cursor: int | None = None
    """Position in ``order()`` while a round runs."""
    flight: _Tracker | None = None
    """The announce the round waits on (other trackers of the round may linger in flight)."""
    current: _Tracker | None = None
    """The tracker that answered the last round, until it fails."""

    def order(self) -> list[_Tracker]:
        return [tracker for tier in self.tiers for tracker in tier]


class AnnounceSchedule:
    """The announce plan of one torrent's trackers.

    Args:
        tiers: announce URLs by tier (BEP 12), best tier first. A URL listed twice is kept
            at its first place only. Empty tiers are ignored.
        now: the current time; the first announce is due at once.
        rng: shuffles each tier once.
        retry: the back-off policy.
        announce_to_all_tiers: run each tier on its own instead of falling through.
    """

    def __init__(
        self,
        tiers: Sequence[Sequence[str]],
        *,
        now: float,
        rng: Shuffler,
        retry: RetryPolicy | None = None,
        announce_to_all_tiers: bool = False,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._completed = False
        self._stopped = False
        self._trackers: dict[str, _Tracker] = {}
        shuffled: list[list[_Tracker]] = []
        for index, urls in enumerate(tiers):
            tier = []
            for url in urls:
                if url not in self._trackers:
                    self._trackers[url] = _Tracker(url, index)
                    tier.append(self._trackers[url])
            if tier:
                rng.shuffle(tier)
                shuffled.append(tier)
        groups = [[tier] for tier in shuffled] if announce_to_all_tiers else [shuffled]
        self._rounds = [_Round(group, now) for group in groups if group]
        self._round_of = {t.url: r for r in self._rounds for tier in r.tiers for t in tier}

    # --- queries ------------------------------------------------------------------------------

    @property
    def urls(self) -> tuple[str, ...]:
        """Every tracker URL, in current announce order."""
        return tuple(t.url for r in self._rounds for t in r.order())

    @property
    def stopped(self) -> bool:
        return self._stopped

    def tier_order(self) -> list[list[str]]:
        """The tiers' URLs in their current order (after shuffling and promotions)."""
        return [[t.url for t in tier] for r in self._rounds for tier in r.tiers]

    def view(self, url: str, now: float) -> TrackerView:
        """How ``url`` stands at ``now``.

        Raises:
            KeyError: ``url`` is not one of this torrent's trackers.
        """
        tracker = self._trackers[url]
        return TrackerView(
            url=url,
            tier=tracker.tier,
            state=tracker.state,
            failures=tracker.failures,
            next_announce_in=self._next_announce_in(tracker, now),
        )

    def next_deadline(self, now: float) -> float | None:
        """When ``due`` next has something to hand out: ``now`` if at once, None if never
        (stopped, nothing left, or only waiting for announces in flight)."""
        if self._stopped:
            return None
        deadlines = []
        for r in self._rounds:
            if r.flight is not None:
                continue
            if r.cursor is not None:
                deadlines.append(now)
            elif r.next_start is not None:
                deadlines.append(max(now, r.next_start))
        return min(deadlines, default=None)

    # --- the plan -----------------------------------------------------------------------------

    def due(self, now: float) -> list[DueAnnounce]:
        """Announces to send now; each is in flight until ``succeeded`` or ``failed``."""
        if self._stopped:
            return []
        found = []
        for r in self._rounds:
            tracker = self._advance(r, now)
            if tracker is not None:
                found.append(self._launch(r, tracker))
        return found

    def succeeded(
        self, url: str, now: float, *, interval: float, min_interval: float | None = None
    ) -> bool:
        """The announce in flight to ``url`` was answered.

        Args:
            url: the tracker.
            now: when the answer came.
            interval: seconds until the next regular announce (the tracker's ``interval``).
            min_interval: seconds the tracker wants at least between announces, if it said.

        Returns:
            False when no announce to ``url`` was in flight (a stale answer, ignored).
        """
        tracker, r = self._flight(url)
        if tracker is None or r is None:
            return False
        if tracker.flight is AnnounceEvent.STARTED:
            tracker.started_sent = True
        if tracker.flight is AnnounceEvent.COMPLETED or (
            tracker.flight_after_completion and tracker.started_sent
        ):
            tracker.completed_sent = True
        tracker.flight = None
        tracker.overdue = False
        tracker.state = TrackerState.WORKING
        tracker.failures = 0
        tracker.retry_at = _LONG_AGO
        floor = max(0.0, min_interval or 0.0)
        tracker.min_due = now + floor
        # Any answer ends the round; an announce the round was waiting on lingers from now on.
        r.flight = None
        r.cursor = None
        r.current = tracker
        tier = next(tier for tier in r.tiers if tracker in tier)
        tier.remove(tracker)
        tier.insert(0, tracker)  # BEP 12: a tracker that answers goes to the front of its tier
        if self._owes_completed(tracker):
            r.next_start = now
        else:
            r.next_start = now + max(interval, floor)
        return True

    def failed(
        self, url: str, now: float, *, retry_after: float | None = None, disable: bool = False
    ) -> bool:
        """The announce in flight to ``url`` failed; the round falls through to the next tracker.

        Args:
            url: the tracker.
            now: when the failure was seen.
            retry_after: the tracker's own minimum wait (BEP 31 ``retry in``), in seconds.
            disable: never announce to this tracker again (BEP 31 ``retry in: never``).

        Returns:
            False when no announce to ``url`` was in flight (a stale failure, ignored).
        """
        tracker, r = self._flight(url)
        if tracker is None or r is None:
            return False
        waited_on = r.flight is tracker
        tracker.flight = None
        tracker.overdue = False
        tracker.failures += 1
        delay = self._retry.delay(tracker.failures)
        if retry_after is not None:
            delay = max(delay, retry_after)
        tracker.retry_at = now + delay
        tracker.state = TrackerState.DISABLED if disable else TrackerState.FAILED
        if r.current is tracker:
            r.current = None
        if waited_on:
            self._fall_through(r, now)
        else:
            self._wake(r)
        return True

    def overdue(self, url: str, now: float) -> bool:
        """The announce in flight to ``url`` is still unanswered after its patience.

        The tracker shows failed and, if the round was waiting on it, the round falls through
        to the next tracker; the announce stays in flight and still ends with ``succeeded``
        or ``failed``.

        Returns:
            False when no announce to ``url`` was in flight, or it was already overdue.
        """
        tracker, r = self._flight(url)
        if tracker is None or r is None or tracker.overdue:
            return False
        tracker.overdue = True
        tracker.state = TrackerState.FAILED
        if r.current is tracker:
            r.current = None
        if r.flight is tracker:
            self._fall_through(r, now)
        return True

    def complete(self, now: float) -> None:
        """The download finished: announce ``completed`` once to the trackers that have us.

        A round already running carries the event itself (or is followed at once by it); a
        tracker that answered the last round is announced to at once. Calling it again does
        nothing.
        """
        if self._completed or self._stopped:
            return
        self._completed = True
        for r in self._rounds:
            tracker = r.current
            idle = r.flight is None and r.cursor is None
            if idle and tracker is not None and self._owes_completed(tracker):
                r.next_start = now

    def stop(self) -> list[DueAnnounce]:
        """Stop announcing; returns the ``stopped`` announces to send (one per tracker that has
        accepted our ``started``, or may be accepting it right now). Idempotent: a second call
        returns nothing."""
        if self._stopped:
            return []
        self._stopped = True
        found = []
        for r in self._rounds:
            for tracker in r.order():
                # A lingering ``started`` may still reach the tracker: withdraw it too.
                in_flight_start = tracker.flight is AnnounceEvent.STARTED
                if tracker.started_sent or in_flight_start:
                    found.append(DueAnnounce(tracker.url, tracker.tier, AnnounceEvent.STOPPED))
                tracker.flight = None
            r.flight = None
            r.cursor = None
            r.next_start = None
        return found

    # --- internals ----------------------------------------------------------------------------

    def _fall_through(self, r: _Round, now: float) -> None:
        """The announce ``r`` waited on failed or is overdue: go on with the next tracker."""
        r.flight = None
        if r.cursor is not None:
            r.cursor += 1
            self._advance(r, now)  # end the round now if nobody is left, so deadlines are exact

    def _wake(self, r: _Round) -> None:
        """A lingering announce ended: an idle round with nothing planned plans its next start."""
        if r.cursor is None and r.flight is None and r.next_start is None:
            r.next_start = self._first_ready(r)

    def _first_ready(self, r: _Round) -> float | None:
        """When the first tracker of ``r`` that can be announced to is ready (None: nobody)."""
        ready = [self._ready_at(t) for t in r.order() if t.usable and t.flight is None]
        return min(ready) if ready else None

    def _advance(self, r: _Round, now: float) -> _Tracker | None:
        """Start or continue ``r``'s round at ``now``; the tracker to announce to, if any."""
        if r.flight is not None:
            return None
        if r.cursor is None:
            if r.next_start is None or r.next_start > now:
                return None
            r.cursor = 0
            r.next_start = None
        order = r.order()
        while r.cursor < len(order):
            tracker = order[r.cursor]
            idle = tracker.flight is None  # a lingering announce is not doubled
            if idle and tracker.usable and self._ready_at(tracker) <= now:
                return tracker
            r.cursor += 1
        # Nobody in this round could answer: start again when the first back-off expires (or,
        # if every tracker lingers, when one of their announces ends: see ``_wake``).
        r.cursor = None
        r.next_start = self._first_ready(r)
        return None

    def _launch(self, r: _Round, tracker: _Tracker) -> DueAnnounce:
        event = self._event_for(tracker)
        tracker.flight = event
        tracker.overdue = False
        tracker.flight_after_completion = self._completed
        tracker.state = TrackerState.ANNOUNCING
        r.flight = tracker
        return DueAnnounce(tracker.url, tracker.tier, event)

    def _event_for(self, tracker: _Tracker) -> AnnounceEvent:
        if not tracker.started_sent:
            return AnnounceEvent.STARTED
        if self._owes_completed(tracker):
            return AnnounceEvent.COMPLETED
        return AnnounceEvent.NONE

    def _ready_at(self, tracker: _Tracker) -> float:
        """The earliest time ``tracker`` may be announced to."""
        if self._owes_completed(tracker):
            return tracker.retry_at  # an event: min interval does not hold it back
        return max(tracker.retry_at, tracker.min_due)

    def _owes_completed(self, tracker: _Tracker) -> bool:
        return self._completed and tracker.started_sent and not tracker.completed_sent

    def _flight(self, url: str) -> tuple[_Tracker | None, _Round | None]:
        tracker = self._trackers.get(url)
        if tracker is None or self._stopped:
            return None, None
        if tracker.flight is None:
            return None, None
        return tracker, self._round_of[url]

    def _next_announce_in(self, tracker: _Tracker, now: float) -> float | None:
        if self._stopped or not tracker.usable or tracker.flight is not None:
            return None
        r = self._round_of[tracker.url]
        if tracker.state is TrackerState.FAILED:
            # Retried in the first round that starts once its back-off is over.
            ready = self._ready_at(tracker)
            if r.next_start is not None:
                ready = max(ready, r.next_start)
            return max(0.0, ready - now)
        if r.current is tracker and r.next_start is not None:
            return max(0.0, r.next_start - now)
        return None
