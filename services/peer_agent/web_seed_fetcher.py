"""The I/O around one web seed session: HTTP fetches on worker threads, a driver, events out.

Strategy: ``WebSeedFetcher`` owns a ``WebSeedSession`` (core/web_seed.py, the protocol state
without I/O) and drives it. A driver thread ticks the session, starts each request
``next_requests`` returns on a worker of its own, sleeps until the session's next deadline or
until a worker reports, and hands ``take_events`` to ``on_event`` in order. A worker opens the
stream (``HttpClient.open`` with the fetch's Range header and the fetch timeout as the one
deadline), reports the head (``response_head``), skips what the verdict says, then reads the
body into its own chunk buffer and hands each chunk to ``body`` as a memoryview (the session
copies it once, into its pieces). Threads are ``threading`` ones: plain threads in tests,
greenlets under a service's ``gevent.monkey.patch_all()`` (which patches ``threading``); no
``gevent`` name is used, so one implementation serves both.

Rules:
- One lock guards the session (it is not thread-safe); no I/O and no ``on_event`` call happen
  under it. ``on_event`` is called from the driver only, so events arrive in session order;
  it may call ``assign``/``revoke`` back.
- A stream read to its end (a 206 whose body is all in) goes back to the pool (keep-alive);
  any other (``StopFetch``, ``body`` answering False, a 200 with the whole file, an error) is
  closed: a half-read connection is never reused.
- Every ``HttpError`` becomes ``session.failed(reason, message)``; an unexpected error of a
  worker too (reason ``fetch_error``), so no worker dies silently and no piece stays held.
  An error of ``on_event`` is logged and the next events still go out; an error of the driver
  itself closes the session (``web_seed_error``: its pieces given back, ``Closed``).
- Each fetch has a hard bound: the client's deadline, plus a watchdog in the driver that, once
  the deadline and ``grace`` have passed, reports the fetch failed (``timed_out``) and shuts
  its socket; the worker, detached, reports nothing more. (The client's own deadline can be
  stretched by a server dripping header bytes; this is what bounds it.)
- Memory: the session's bound (at most its concurrency runs, each at most ``max_request``)
  plus one chunk buffer per fetch in flight.
- ``close()`` ends the session (its pieces given back, ``Closed`` last), shuts every stream
  and joins the driver and the workers within ``join_timeout`` seconds. The fetcher also stops
  by itself once the session reported ``Closed`` (the URL given up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from torviz.services.peer_agent.core.web_seed import (
    HttpFetch,
    StopFetch,
    WebSeedEvent,
    WebSeedSession,
    WebSeedStatus,
)
from torviz.shared.bitfield import Bitfield
from torviz.shared.runtime.http import HttpClient, HttpError, HttpStream, format_seconds

__all__ = ["DEFAULT_CHUNK", "WebSeedFetcher"]

DEFAULT_CHUNK = 256 * 1024
"""Bytes read from a stream at once (each fetch's one buffer)."""

log = logging.getLogger(__name__)

_MAX_WAIT = 1.0  # the driver looks at its workers' deadlines at least this often
_STOPPED_REASON = "web_seed_stopped"
_MAX_TEXT = 200  # characters of an unexpected error kept in a message

Clock = Callable[[], float]


@dataclass(slots=True, eq=False)
class _Worker:
    """One fetch in flight: its thread, its stream once open, its hard deadline."""

    fetch: HttpFetch
    deadline: float
    thread: threading.Thread | None = None
    stream: HttpStream | None = None
    detached: bool = False
    """The watchdog or ``close`` gave up on it: it reports nothing more to the session."""
    buffer: bytearray = field(default_factory=bytearray)


class WebSeedFetcher:
    """Drives one ``WebSeedSession`` over HTTP; starts at once, stops with ``close``.

    Args:
        session: the web seed's session (used by this fetcher only from now on).
        http: the pooled client (shared by the agent's fetchers).
        on_event: gets the session's events in order, from the driver thread.
        clock: monotonic seconds (the session's clock).
        wall: wall-clock seconds, for ``Retry-After`` dates.
        fetch_timeout: seconds one fetch may take, head and body (the client's deadline).
        grace: seconds past ``fetch_timeout`` before the watchdog ends a fetch.
        chunk_size: bytes read at once, the size of each fetch's buffer.
        join_timeout: seconds ``close`` waits for the threads.
        name: names the threads (``<name>-driver``, ``<name>-fetch-<id>``).
    """

    def __init__(
        self,
        session: WebSeedSession,
        http: HttpClient,
        on_event: Callable[[WebSeedEvent], None],
        *,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
        fetch_timeout: float = 60.0,
        grace: float = 1.0,
        chunk_size: int = DEFAULT_CHUNK,
        join_timeout: float = 1.0,
        name: str = "web-seed",
    ) -> None:
        if fetch_timeout <= 0 or grace < 0 or chunk_size < 1:
            raise ValueError("fetch_timeout must be positive, grace not negative, chunk >= 1")
        self._session = session
        self._http = http
        self._on_event = on_event
        self._clock = clock
        self._wall = wall
        self._fetch_timeout = fetch_timeout
        self._grace = grace
        self._chunk = chunk_size
        self._join_timeout = join_timeout
        self.name = name
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._workers: dict[int, _Worker] = {}
        self._finished: list[threading.Thread] = []
        self._stopping = False
        self._peak = session.buffered
        self._driver = threading.Thread(target=self._drive, name=f"{name}-driver", daemon=True)
        self._driver.start()

    # -- what the actor calls ---------------------------------------------------------------------

    def assign(self, pieces: Iterable[int]) -> None:
        """Fetch these pieces too (``WebSeedSession.assign``)."""
        with self._wake:
            self._session.assign(list(pieces), self._clock())
            self._wake.notify_all()

    def revoke(self, pieces: Iterable[int]) -> None:
        """Stop fetching these pieces (``WebSeedSession.revoke``)."""
        with self._wake:
            self._session.revoke(list(pieces), self._clock())
            self._wake.notify_all()

    def servable(self) -> Bitfield:
        """The pieces the session can still fetch (``WebSeedSession.servable``)."""
        with self._lock:
            return self._session.servable()

    def summary(self) -> WebSeedStatus:
        """The session's status now."""
        with self._lock:
            return self._session.summary(self._clock())

    @property
    def peak_buffered(self) -> int:
        """The most bytes of piece buffers the session held at once (the memory bound's
        measure, looked at after every chunk)."""
        with self._lock:
            return self._peak

    @property
    def threads(self) -> list[threading.Thread]:
        """The driver and the workers not yet joined (for tests)."""
        with self._lock:
            workers = [w.thread for w in self._workers.values() if w.thread is not None]
            return [self._driver, *workers, *self._finished]

    def close(self, reason: str = _STOPPED_REASON, message: str = "stopped") -> None:
        """End the session (pieces given back, ``Closed`` delivered), stop every fetch, and
        join the threads within ``join_timeout``. Safe to call again."""
        with self._wake:
            if not self._session.closed:
                self._session.close(reason, message)
            self._stopping = True
            self._wake.notify_all()
        if threading.current_thread() is not self._driver:
            self._driver.join(self._join_timeout)
        deadline = time.monotonic() + self._join_timeout  # real time, whatever the clock
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # -- the driver -------------------------------------------------------------------------------

    def _drive(self) -> None:
        while True:
            with self._wake:
                try:
                    events, wait = self._step()
                    if not events and wait is not None and wait > 0:
                        self._wake.wait(wait)
                        events, wait = self._step()
                except Exception as exc:  # a bug: end the session, give its pieces back
                    log.warning("%s: driver failed, closing: %s", self.name, _one_line(exc))
                    if not self._session.closed:
                        self._session.close("web_seed_error", _one_line(exc))
                    self._stopping = True
                    events, wait = self._session.take_events(), None
                done = wait is None
            for event in events:
                try:
                    self._on_event(event)
                except Exception as exc:  # the receiver's bug: the next events still go out
                    log.warning("%s: event handler failed: %s", self.name, _one_line(exc))
            if done:
                self._shut_down()
                return

    def _step(self) -> tuple[list[WebSeedEvent], float | None]:
        """Under the lock: tick, start fetches, run the watchdog, take the events.

        Returns:
            The events, and how long to sleep (None: stop, the session is over).
        """
        session = self._session
        now = self._clock()
        if not session.closed and not self._stopping:
            session.tick(now)
            for fetch in session.next_requests(now):
                self._start(fetch, now)
            for worker in list(self._workers.values()):
                if not worker.detached and now >= worker.deadline:
                    self._expire(worker, now)
        events = session.take_events()
        if session.closed or self._stopping:
            return events, None
        deadlines = [w.deadline for w in self._workers.values() if not w.detached]
        next_at = session.next_deadline(now)
        if next_at is not None:
            deadlines.append(next_at)
        wait = min([d - now for d in deadlines] + [_MAX_WAIT])
        return events, max(wait, 0.001)

    def _start(self, fetch: HttpFetch, now: float) -> None:
        worker = _Worker(fetch, now + self._fetch_timeout + self._grace)
        thread = threading.Thread(
            target=self._fetch,
            args=(worker,),
            name=f"{self.name}-fetch-{fetch.fetch_id}",
            daemon=True,
        )
        worker.thread = thread
        self._workers[fetch.fetch_id] = worker
        thread.start()

    def _expire(self, worker: _Worker, now: float) -> None:
        """The watchdog: a fetch past its hard deadline fails now; its socket is shut."""
        worker.detached = True
        shown = format_seconds(self._fetch_timeout)
        self._session.failed(worker.fetch.fetch_id, "timed_out", f"timed out after {shown} s", now)
        _abort(worker.stream)

    def _shut_down(self) -> None:
        """The session is over: detach every worker and shut its stream."""
        with self._lock:
            workers = list(self._workers.values())
            for worker in workers:
                worker.detached = True
        for worker in workers:
            _abort(worker.stream)

    # -- a worker ---------------------------------------------------------------------------------

    def _fetch(self, worker: _Worker) -> None:
        fetch = worker.fetch
        stream: HttpStream | None = None
        try:
            stream = self._http.open(fetch.url, timeout=self._fetch_timeout, headers=fetch.headers)
            with self._wake:
                if worker.detached:
                    return
                worker.stream = stream
                verdict = self._session.response_head(
                    fetch.fetch_id, stream.status, stream.headers, self._clock(), self._wall()
                )
                self._wake.notify_all()
            if isinstance(verdict, StopFetch):
                return
            stream.skip(verdict.skip)
            read_all = self._read(worker, stream, verdict.length)
            # A 206 read to its end leaves the connection reusable: back to the pool.
            if read_all and not verdict.whole_file and not stream.read_chunk(1):
                stream.release()
        except HttpError as exc:
            self._report_failure(worker, exc.reason, exc.message)
        except Exception as exc:  # a bug must not leave the pieces held: report, go on
            self._report_failure(worker, "fetch_error", _one_line(exc))
        finally:
            if stream is not None:
                stream.close()  # no-op after release
            with self._wake:
                self._workers.pop(fetch.fetch_id, None)
                if worker.thread is not None and self._stopping:
                    self._finished.append(worker.thread)
                self._wake.notify_all()

    def _read(self, worker: _Worker, stream: HttpStream, length: int) -> bool:
        """Read ``length`` body bytes into the session, a chunk at a time.

        Returns:
            Whether all of them were read (False: the session or the watchdog stopped it).

        Raises:
            HttpError: the body ended early, or the client's error.
        """
        worker.buffer = bytearray(min(self._chunk, max(length, 1)))
        view = memoryview(worker.buffer)
        left = length
        while left > 0:
            count = stream.readinto(view[: min(len(view), left)])
            if count == 0:
                raise HttpError(
                    "bad_http", f"the web seed's reply ended {left} bytes short of the range"
                )
            left -= count
            with self._wake:
                if worker.detached:
                    return False
                go_on = self._session.body(worker.fetch.fetch_id, view[:count], self._clock())
                self._peak = max(self._peak, self._session.buffered)
                self._wake.notify_all()
            if not go_on:
                return left == 0
        return True

    def _report_failure(self, worker: _Worker, reason: str, message: str) -> None:
        with self._wake:
            if not worker.detached:
                self._session.failed(worker.fetch.fetch_id, reason, message, self._clock())
                self._wake.notify_all()


def _abort(stream: HttpStream | None) -> None:
    """Make a read blocked on ``stream`` return now (``HttpStream.abort``)."""
    if stream is not None:
        stream.abort()


def _one_line(exc: BaseException) -> str:
    """An unexpected error as one short line."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text[:_MAX_TEXT]
