"""Retry policy for one web seed URL: back-off with full jitter, ``Retry-After``, slow-downs,
files missing on the server, and giving up.

Strategy: one ``RetryPolicy`` per web seed URL and torrent, owned by the actor that fetches
from it. The actor reports every outcome (``record_success``, ``record_failure``,
``record_slow_down``, ``record_file_missing``, ``record_broken``) with the monotonic clock's
``now``, asks ``slots(now)`` how many requests it may have in flight, sleeps until
``next_try_at`` when that is 0, and shows ``summary(now)`` in status; ``record_verdict`` maps a
verdict of ``interpret_response`` to the right one. The clock and the random source are passed
in, so a test replays any schedule exactly.

Rules:
- The n-th failure in a row waits ``random() * min(cap, base * 2**(n-1))`` seconds (full
  jitter: clients that failed together do not come back together), and never less than the
  server's ``Retry-After`` when it gave one.
- Failures reported while a back-off is already running come from requests that were in flight
  when it began: they count once (the wait may only grow, to honour a longer
  ``Retry-After``), so four parallel requests failing at once are one failure, not four.
- After a failure, the first request allowed is a single probe; once one succeeds the URL is
  back to its concurrency. 429/503 (``record_slow_down``) also halve that concurrency (down to
  1); every ``restore_after`` successes in a row give back one request, up to
  ``max_concurrency``.
- A success resets the failure count. At ``max_failures`` failures in a row the URL is given up
  for the session (state ``given_up``, never left): every retry is bounded.
- 404/410/416 (``record_file_missing``) disable the URL for that file only; other files may
  still come from it. When every file is disabled the URL is given up. A status retrying will
  not fix (``record_broken``) gives it up at once.
- Error texts are kept as one line of at most ``MAX_ERROR_TEXT`` characters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torviz.shared.bus.vocabulary import WebSeedState
from torviz.shared.webseed.responses import (
    FileMissing,
    ReadBody,
    ResponseVerdict,
    RetryLater,
    SlowDown,
    UrlBroken,
)

__all__ = [
    "MAX_ERROR_TEXT",
    "BackoffSettings",
    "RetryPolicy",
    "WebSeedState",
    "WebSeedSummary",
]

MAX_ERROR_TEXT = 200
"""The longest error text kept for status, in characters."""


@dataclass(frozen=True, slots=True)
class BackoffSettings:
    """How a web seed URL backs off.

    Attributes:
        base: seconds; the first failure waits up to this long (default 2).
        cap: seconds; no jittered wait is drawn from a longer interval (default 600).
        max_failures: failures in a row that give the URL up for the session (default 8).
        max_concurrency: requests in flight to the URL at most, and at first (default 4).
        restore_after: successes in a row that give back one request after a slow-down
            (default 8).
    """

    base: float = 2.0
    cap: float = 600.0
    max_failures: int = 8
    max_concurrency: int = 4
    restore_after: int = 8

    def __post_init__(self) -> None:
        if not (math.isfinite(self.base) and math.isfinite(self.cap) and 0 < self.base <= self.cap):
            raise ValueError(f"back-off base {self.base} and cap {self.cap}: need 0 < base <= cap")
        if not 1 <= self.max_failures <= 1000:
            raise ValueError(f"max_failures must be 1..1000, not {self.max_failures}")
        if self.max_concurrency < 1 or self.restore_after < 1:
            raise ValueError("max_concurrency and restore_after must be at least 1")


@dataclass(frozen=True, slots=True)
class WebSeedSummary:
    """A web seed URL's retry state, for status.

    Attributes:
        state: active, backing off, or given up for the session.
        failures: failures in a row (0 after a success).
        next_try_in: seconds until the next request may start while backing off, else None.
        last_error: the last error's one-line text, '' when none yet.
        disabled_files: files this URL is disabled for (missing on the server).
        concurrency: requests it may have in flight when not probing.
    """

    state: WebSeedState
    failures: int
    next_try_in: float | None
    last_error: str
    disabled_files: int
    concurrency: int


class RetryPolicy:
    """The retry state of one web seed URL for one torrent.

    Args:
        settings: the back-off settings.
        random: returns a float in [0, 1) (``random.Random(...).random`` in the actor, a fixed
            sequence in tests); values outside are clamped.
        file_count: the torrent's files that can be requested from it (padding files and
            empty files excluded), at least 1.

    Raises:
        ValueError: ``file_count`` below 1.
    """

    def __init__(
        self, settings: BackoffSettings, random: Callable[[], float], file_count: int
    ) -> None:
        if file_count < 1:
            raise ValueError(f"a web seed serves at least one file, not {file_count}")
        self._settings = settings
        self._random = random
        self._file_count = file_count
        self._failures = 0
        self._retry_at: float | None = None
        self._given_up = False
        self._concurrency = settings.max_concurrency
        self._successes = 0
        self._disabled: set[int] = set()
        self._last_error = ""

    @property
    def given_up(self) -> bool:
        """Whether the URL is given up for the session."""
        return self._given_up

    @property
    def next_try_at(self) -> float | None:
        """When a request may start again while backing off; None when no wait is set or the
        URL is given up."""
        return None if self._given_up else self._retry_at

    def state(self, now: float) -> WebSeedState:
        """The state at ``now``."""
        if self._given_up:
            return WebSeedState.GIVEN_UP
        if self._retry_at is not None and now < self._retry_at:
            return WebSeedState.BACKING_OFF
        return WebSeedState.ACTIVE

    def slots(self, now: float) -> int:
        """How many requests may be in flight at ``now``: 0 while backing off or given up, 1
        (a probe) after a failure until a success, else the current concurrency."""
        if self.state(now) is not WebSeedState.ACTIVE:
            return 0
        return 1 if self._failures else self._concurrency

    def file_enabled(self, file_index: int) -> bool:
        """Whether the URL may still be asked for file ``file_index``."""
        return file_index not in self._disabled

    def record_success(self, now: float) -> None:
        """A request completed with the bytes asked for.

        Args:
            now: the monotonic clock.
        """
        if self._given_up:
            return
        self._failures = 0
        if self._retry_at is not None and self._retry_at <= now:
            self._retry_at = None
        self._successes += 1
        if self._successes >= self._settings.restore_after:
            self._successes = 0
            self._concurrency = min(self._concurrency + 1, self._settings.max_concurrency)

    def record_failure(
        self, now: float, error: str, retry_after: float | None = None
    ) -> float | None:
        """A connection error, a timeout, a 5xx, or a reply that broke its contract.

        Args:
            now: the monotonic clock.
            error: one line saying what went wrong.
            retry_after: the server's ``Retry-After`` in seconds, if it sent one.

        Returns:
            Seconds until the next request may start, or None if the URL is now given up.
        """
        if self._given_up:
            return None
        self._last_error = _one_line(error)
        wait = _wait(retry_after)
        if self._retry_at is not None and now < self._retry_at:
            self._retry_at = max(self._retry_at, now + wait)  # in flight when the back-off began
            return self._retry_at - now
        self._failures += 1
        self._successes = 0
        if self._failures >= self._settings.max_failures:
            self._give_up(f"{self._failures} failures in a row, last: {self._last_error}")
            return None
        window = min(self._settings.cap, self._settings.base * 2.0 ** min(self._failures - 1, 60))
        delay = max(min(max(self._random(), 0.0), 1.0) * window, wait)
        self._retry_at = now + delay
        return delay

    def record_slow_down(
        self, now: float, error: str, retry_after: float | None = None
    ) -> float | None:
        """A 429 or 503: halve the concurrency (at least 1) and back off as for a failure.

        Args:
            now: the monotonic clock.
            error: one line saying what went wrong.
            retry_after: the server's ``Retry-After`` in seconds, if it sent one.

        Returns:
            Seconds until the next request may start, or None if the URL is now given up.
        """
        if not self._given_up and (self._retry_at is None or now >= self._retry_at):
            self._concurrency = max(1, self._concurrency // 2)
        return self.record_failure(now, error, retry_after)

    def record_file_missing(self, file_index: int, error: str) -> None:
        """A 404, 410 or 416 for file ``file_index``: the URL is not asked for it again.

        Args:
            file_index: the file's index in the torrent.
            error: one line saying what went wrong.
        """
        if self._given_up:
            return
        self._last_error = _one_line(error)
        self._disabled.add(file_index)
        if len(self._disabled) >= self._file_count:
            self._give_up(f"no file of the torrent is on this server, last: {self._last_error}")

    def record_broken(self, error: str) -> None:
        """A reply retrying will not fix (other 4xx): give the URL up for the session.

        Args:
            error: one line saying what went wrong.
        """
        if not self._given_up:
            self._give_up(_one_line(error))

    def record_verdict(self, now: float, file_index: int, verdict: ResponseVerdict) -> None:
        """Record what ``interpret_response`` made of a response head, as the module comment
        says: a missing file disables that file, a slow-down halves and backs off, a passing
        error backs off, a broken URL is given up. ``ReadBody`` records nothing: the request
        succeeds only once its bytes are read (``record_success``).

        Args:
            now: the monotonic clock.
            file_index: the file the request was for.
            verdict: the verdict.
        """
        match verdict:
            case ReadBody():
                pass
            case FileMissing(message=message):
                self.record_file_missing(file_index, message)
            case SlowDown(message=message, retry_after=retry_after):
                self.record_slow_down(now, message, retry_after)
            case RetryLater(message=message, retry_after=retry_after):
                self.record_failure(now, message, retry_after)
            case UrlBroken(message=message):
                self.record_broken(message)

    def summary(self, now: float) -> WebSeedSummary:
        """The state for status at ``now``."""
        state = self.state(now)
        next_try_in = None
        if state is WebSeedState.BACKING_OFF and self._retry_at is not None:
            next_try_in = self._retry_at - now
        return WebSeedSummary(
            state=state,
            failures=self._failures,
            next_try_in=next_try_in,
            last_error=self._last_error,
            disabled_files=len(self._disabled),
            concurrency=self._concurrency,
        )

    def _give_up(self, why: str) -> None:
        self._given_up = True
        self._retry_at = None
        self._last_error = _one_line(why)


def _wait(retry_after: float | None) -> float:
    """A ``Retry-After`` as a wait: None, NaN or a negative value is no wait."""
    if retry_after is None or not math.isfinite(retry_after):
        return 0.0
    return max(0.0, retry_after)


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_ERROR_TEXT else line[: MAX_ERROR_TEXT - 3] + "..."
