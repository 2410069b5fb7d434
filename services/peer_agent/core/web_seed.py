"""One web seed's protocol state for one torrent (BEP 19), without I/O, with the clock passed in.

The web seed actor feeds the coordinator's ``assign``/``revoke`` and the time (``tick``), starts
the HTTP requests ``next_requests`` returns, reports each one's response head
(``response_head``: it answers what to read, or to stop), its body bytes (``body``) or its
failure (``failed``), and forwards what ``take_events`` returns: ``PieceCompleted`` (a whole
piece, its own ``bytearray``, for the storage agent), ``WorkNeeded``, ``PiecesGivenBack`` and
``Closed`` (last). It sleeps until ``next_deadline``. This is to a web seed what
``session.py`` is to a peer connection.

Strategy: assigned pieces are grouped into runs of consecutive pieces, at most
``max_request`` bytes each (``web_seed_runs.group_runs``), queued, and planned
(``shared/webseed.plan_run``) when they start: one Range request per file a run touches.
The URL's ``RetryPolicy`` (``shared/webseed/backoff.py``) decides how many requests may be in
flight and when, and hears every outcome; ``interpret_response`` judges each response head.
A started run's buffers and progress are ``web_seed_runs.py``'s; the values exchanged with the
actor (settings, ``HttpFetch``, ``StopFetch``, events, status) are in ``web_seed_types.py``.

Rules:
- Memory is bounded: a run gets its piece buffers when it starts, and at most the policy's
  concurrency runs (``max_concurrency`` at most) are started at once, each at most
  ``max_request`` bytes (or one piece, if pieces are longer). Requests of started runs go
  before new runs. A piece leaves as soon as its bytes are in, padding zero-filled.
- A failed request (connection error, timeout, 5xx, 429/503, a reply breaking its contract) is
  retried for the bytes still missing, after the policy's back-off; after ``max_attempts``
  failures of one request its pieces are given back (``web_seed_retries``). While a back-off
  has over ``hold_limit`` to go, runs not started (queued then, or assigned meanwhile) are
  given back (``web_seed_backing_off``): other peers may fetch them meanwhile. The end of a
  back-off is a deadline even with nothing held, so that the session asks for work again.
- A file missing on the server (404/410/416) gives back only the pieces that need it
  (``web_seed_file_missing``); such pieces assigned later are given back at once, and an
  ``assign`` of nothing but such pieces counts as an empty one. ``servable`` tells which
  pieces the URL can still serve (the actor reports it as the web seed's bitfield, so the
  coordinator stops handing it the others).
- Once the policy gives the URL up, every piece held is given back (``web_seed_given_up``) and
  the session ends with ``Closed("web_seed_given_up")``; nothing runs after ``Closed``.
- ``revoke`` drops pieces silently (the coordinator knows); a started run with no piece left
  is abandoned, its requests in flight stopped (``body`` answers False to a stopped fetch).
- ``WorkNeeded`` goes out while the URL is active and fewer than ``queued_runs`` runs wait,
  once until the next ``assign``; an empty ``assign`` waits ``idle_retry`` seconds before
  asking again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from torviz.shared.bitfield import Bitfield
from torviz.shared.errors import WebSeedError
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.metainfo import FileEntry
from torviz.shared.rate import RateMeter
from torviz.shared.webseed import (
    FileMissing,
    ReadBody,
    RetryLater,
    RetryPolicy,
    SlowDown,
    UrlBroken,
    WebSeedState,
    WebSeedUrl,
    interpret_response,
    plan_run,
    request_headers,
)

from .events import Closed, PieceCompleted, PiecesGivenBack, WorkNeeded
from .web_seed_runs import ActiveRun, RunPart, group_runs
from .web_seed_types import HttpFetch, StopFetch, WebSeedEvent, WebSeedSettings, WebSeedStatus

__all__ = [
    "HttpFetch",
    "StopFetch",
    "WebSeedEvent",
    "WebSeedSession",
    "WebSeedSettings",
    "WebSeedStatus",
]


class WebSeedSession:
    """The state of one web seed URL for one torrent.

    Args:
        geometry: the torrent's geometry.
        files: the torrent's files (``InfoDict.files``).
        url: the web seed, checked by ``parse_web_seed_url``.
        policy: the URL's retry policy (its clock is the ``now`` passed here).
        settings: grouping and holding settings.
        now: the monotonic clock at the start.

    Raises:
        ValueError: ``files`` does not match ``geometry``.
    """

    def __init__(
        self,
        geometry: TorrentGeometry,
        files: Sequence[FileEntry],
        url: WebSeedUrl,
        policy: RetryPolicy,
        settings: WebSeedSettings,
        now: float,
    ) -> None:
        if tuple(f.length for f in files) != geometry.file_lengths:
            raise ValueError("the file list does not match the torrent's geometry")
        self._geometry = geometry
        self._files = tuple(files)
        self._url = url
        self._policy = policy
        self._settings = settings
        self._per_run = max(1, settings.max_request // geometry.piece_length)
        self._queue: deque[tuple[int, int]] = deque()
        self._active: list[ActiveRun] = []
        self._fetches: dict[int, tuple[ActiveRun, RunPart, bool]] = {}  # id -> run, part, headed
        self._held: set[int] = set()
        self._next_id = 1
        self._events: list[WebSeedEvent] = []
        self._asked = False
        self._idle_until: float | None = None
        self._closed = False
        self.rate = RateMeter(now)
        self._want_work(now)

    @property
    def closed(self) -> bool:
        """Whether the session ended (``Closed`` was reported)."""
        return self._closed

    @property
    def buffered(self) -> int:
        """Bytes of piece buffers held by started runs (the memory bound's measure)."""
        return sum(run.buffered for run in self._active)

    @property
    def held(self) -> frozenset[int]:
        """Pieces assigned and not yet completed, revoked or given back."""
        return frozenset(self._held)

    # -- the coordinator --------------------------------------------------------------------------

    def assign(self, pieces: Iterable[int], now: float) -> None:
        """Fetch these pieces too; an empty list means the coordinator has nothing now.

        Pieces out of range or already held are ignored; pieces needing a file this URL lacks
        are given back at once.
        """
        if self._closed:
            return
        pieces = [p for p in pieces if self._geometry.has_piece(p) and p not in self._held]
        self._asked = False
        lacking = [p for p in pieces if not self._servable(p)]
        wanted = set(pieces) - set(lacking)
        # Nothing this URL can serve is nothing: asking again at once would get the same.
        self._idle_until = None if wanted else now + self._settings.idle_retry
        self._held |= wanted
        self._queue.extend(group_runs(wanted, self._per_run))
        if lacking:
            self._events.append(PiecesGivenBack(tuple(sorted(lacking)), "web_seed_file_missing"))
        self._shed_queue(now)
        self._want_work(now)

    def servable(self) -> Bitfield:
        """The pieces this URL can still serve: every file each one needs is enabled."""
        count = self._geometry.num_pieces
        return Bitfield(count, (p for p in range(count) if self._servable(p)))

    def revoke(self, pieces: Iterable[int], now: float) -> None:
        """Stop fetching these pieces (another source completed them first)."""
        if self._closed:
            return
        self._release(set(pieces) & self._held)
        self._want_work(now)

    def tick(self, now: float) -> None:
        """Ask for work again once an empty ``assign`` has waited ``idle_retry`` seconds."""
        if self._idle_until is not None and now >= self._idle_until:
            self._idle_until = None
        self._want_work(now)

    def next_deadline(self, now: float) -> float | None:
        """When ``tick`` or ``next_requests`` next has something to do after ``now``, if ever:
        the end of an empty ``assign``'s wait, or of a back-off."""
        if self._closed:
            return None
        deadlines = [self._idle_until] if self._idle_until is not None else []
        retry_at = self._policy.next_try_at
        if retry_at is not None and retry_at > now:
            deadlines.append(retry_at)
        return min(deadlines, default=None)

    def close(self, reason: str, message: str = "") -> None:
        """End the session (the torrent stopped, the agent leaves): give every piece back."""
        if not self._closed:
            self._end(reason, message)

    # -- the HTTP requests ------------------------------------------------------------------------

    def next_requests(self, now: float) -> list[HttpFetch]:
        """The requests to start now: none while backing off, at most the policy's slots in
        flight, parts of started runs first, a new run only while fewer than the policy's
        concurrency are started."""
        fetches: list[HttpFetch] = []
        if self._closed:
            return fetches
        free = self._policy.slots(now) - len(self._fetches)
        concurrency = self._policy.summary(now).concurrency
        while free > 0:
            found = self._next_part()
            if found is None:
                # Parts of started runs go first, so every started run has a fetch in flight
                # here: the slots already bound the runs; the test states the bound itself.
                if not self._queue or len(self._active) >= concurrency:
                    break
                self._start_run(*self._queue.popleft())
                continue
            run, part = found
            fetch_id = self._next_id
            self._next_id += 1
            part.fetch_id = fetch_id
            self._fetches[fetch_id] = (run, part, False)
            request = part.remainder()
            fetches.append(
                HttpFetch(
                    fetch_id, request.url, request_headers(request), request, run.plan.first_piece
                )
            )
            free -= 1
        self._want_work(now)
        return fetches

    def response_head(
        self,
        fetch_id: int,
        status: int,
        headers: Mapping[str, str],
        now: float,
        now_wall: float,
    ) -> ReadBody | StopFetch:
        """Judge a fetch's response head (after the client's redirects).

        Args:
            fetch_id: the fetch.
            status: the final HTTP status.
            headers: the response headers.
            now: the monotonic clock.
            now_wall: the wall clock, for a ``Retry-After`` date.

        Returns:
            What to read (``ReadBody``: skip, then length bytes into ``body``), or
            ``StopFetch``: close the stream, the session already dealt with it.

        Raises:
            ValueError: the head of this fetch was already reported.
        """
        entry = self._fetches.get(fetch_id)
        if entry is None:
            return StopFetch("abandoned", "the pieces of this request are no longer wanted")
        run, part, headed = entry
        if headed:
            raise ValueError(f"fetch {fetch_id} already had its response head")
        request = part.remainder()
        try:
            verdict = interpret_response(request, status, headers, now_wall)
        except WebSeedError as exc:
            self._retry(run, part, now)
            self._policy.record_failure(now, exc.message)
            self._after_outcome(now)
            return StopFetch(exc.reason, exc.message)
        if isinstance(verdict, ReadBody):
            self._fetches[fetch_id] = (run, part, True)
            return verdict
        self._policy.record_verdict(now, request.file_index, verdict)
        match verdict:
            case FileMissing(message=message):
                self._file_missing(request.file_index)
                stop = StopFetch("file_missing", message)
            case SlowDown(message=message):
                self._retry(run, part, now)
                stop = StopFetch("slow_down", message)
            case RetryLater(message=message):
                self._retry(run, part, now)
                stop = StopFetch("retry_later", message)
            case UrlBroken(message=message):
                stop = StopFetch("url_broken", message)
        self._after_outcome(now)
        return stop

    def body(self, fetch_id: int, data: bytes | bytearray | memoryview, now: float) -> bool:
        """Body bytes of a fetch, in order (after the verdict's ``skip``): copied once, into
        their pieces; every piece now complete becomes a ``PieceCompleted``.

        Args:
            fetch_id: the fetch.
            data: the next bytes of its body.
            now: the monotonic clock.

        Returns:
            Whether to go on reading this fetch: False once all its bytes are in, or when it
            was stopped (its pieces revoked or given back meanwhile).

        Raises:
            ValueError: no ``ReadBody`` head for this fetch, or more bytes than it asked for.
        """
        entry = self._fetches.get(fetch_id)
        if entry is None:
            return False
        run, part, headed = entry
        if not headed:
            raise ValueError(f"body bytes for fetch {fetch_id} before a response head to read")
        view = memoryview(data).cast("B")
        touched = run.write(part, view)
        self.rate.add(len(view), now)
        for piece, buffer in run.take_complete(touched):
            self._held.discard(piece)
            self._events.append(PieceCompleted(piece, buffer))
        if part.received < part.request.length:
            return True
        del self._fetches[fetch_id]
        part.fetch_id = None
        self._policy.record_success(now)
        self._finish_runs()
        self._want_work(now)
        return False

    def failed(self, fetch_id: int, reason: str, message: str, now: float) -> None:
        """A fetch failed: connection error, timeout, a body cut short (``HttpError``).

        Args:
            fetch_id: the fetch.
            reason: the error's snake_case reason (for logs).
            message: its one line (for status).
            now: the monotonic clock.
        """
        entry = self._fetches.get(fetch_id)
        if entry is None:
            return
        run, part, _ = entry
        self._retry(run, part, now)
        self._policy.record_failure(now, message or reason)
        self._after_outcome(now)

    # -- events and status ------------------------------------------------------------------------

    def take_events(self) -> list[WebSeedEvent]:
        """What happened since the last call, in order."""
        events, self._events = self._events, []
        return events

    def summary(self, now: float) -> WebSeedStatus:
        """The state for status at ``now``."""
        return WebSeedStatus(
            retry=self._policy.summary(now),
            downloaded=self.rate.total,
            rate=self.rate.rate(now),
            pieces_held=len(self._held),
            in_flight=len(self._fetches),
        )

    # -- inside -----------------------------------------------------------------------------------

    def _servable(self, piece: int) -> bool:
        """Whether every file ``piece`` needs from the server is enabled for this URL."""
        return all(
            self._policy.file_enabled(span.file_index)
            for span in self._geometry.spans(piece)
            if not self._files[span.file_index].padding
        )

    def _next_part(self) -> tuple[ActiveRun, RunPart] | None:
        for run in self._active:
            for part in run.parts:
                if part.fetch_id is None and not part.finished:
                    return run, part
        return None

    def _start_run(self, first: int, count: int) -> None:
        run = ActiveRun(
            self._geometry, plan_run(self._geometry, self._files, first, count, self._url)
        )
        self._active.append(run)
        for piece, buffer in run.take_complete():  # a piece of padding only
            self._held.discard(piece)
            self._events.append(PieceCompleted(piece, buffer))
        self._finish_runs()

    def _retry(self, run: ActiveRun, part: RunPart, now: float) -> None:
        """``part``'s fetch failed: retry it later, or give its pieces back after too many."""
        if part.fetch_id is not None:
            self._fetches.pop(part.fetch_id, None)
            part.fetch_id = None
        part.failures += 1
        if part.failures >= self._settings.max_attempts:
            self._give_back(run.pieces_needed(part), "web_seed_retries")

    def _after_outcome(self, now: float) -> None:
        """After a failure: end the session if the URL is given up; release what waits in
        the queue if the back-off is long."""
        if self._policy.given_up:
            self._end("web_seed_given_up", self._policy.summary(now).last_error)
            return
        self._shed_queue(now)
        self._want_work(now)

    def _shed_queue(self, now: float) -> None:
        """Give back the runs not started while the back-off has over ``hold_limit`` to go."""
        retry_at = self._policy.next_try_at
        if retry_at is not None and retry_at - now > self._settings.hold_limit and self._queue:
            queued = [p for first, count in self._queue for p in range(first, first + count)]
            self._give_back(queued, "web_seed_backing_off")

    def _file_missing(self, file_index: int) -> None:
        pieces = self._geometry.pieces_for_file(file_index)
        self._give_back([p for p in pieces if p in self._held], "web_seed_file_missing")

    def _give_back(self, pieces: Iterable[int], reason: str) -> None:
        released = self._release(set(pieces) & self._held)
        if released:
            self._events.append(PiecesGivenBack(tuple(sorted(released)), reason))

    def _release(self, pieces: set[int]) -> set[int]:
        """Drop held pieces from the queue and the started runs; stop fetches no longer needed.

        Returns:
            The pieces dropped.
        """
        if not pieces:
            return pieces
        kept = [
            p
            for first, count in self._queue
            for p in range(first, first + count)
            if p not in pieces
        ]
        if len(kept) != sum(count for _, count in self._queue):
            queue = [
                run for chunk in _consecutive(kept) for run in group_runs(chunk, self._per_run)
            ]
            self._queue = deque(queue)
        for run in self._active:
            run.drop(pieces)
        self._held -= pieces
        self._finish_runs()
        return pieces

    def _finish_runs(self) -> None:
        """Stop the fetches no live piece needs; forget runs with no live piece left."""
        for run in self._active:
            for fetch_id in run.prune():
                self._fetches.pop(fetch_id, None)
        self._active = [run for run in self._active if run.live()]

    def _want_work(self, now: float) -> None:
        if self._closed or self._asked or self._idle_until is not None:
            return
        if self._policy.state(now) is not WebSeedState.ACTIVE:
            return
        if len(self._queue) >= self._settings.queued_runs:
            return
        concurrency = self._policy.summary(now).concurrency
        target = (self._settings.queued_runs + concurrency) * self._per_run
        self._asked = True
        self._events.append(WorkNeeded(max(self._per_run, target - len(self._held))))

    def _end(self, reason: str, message: str) -> None:
        self._give_back(list(self._held), reason)
        self._queue.clear()
        self._active.clear()
        self._fetches.clear()
        self._closed = True
        self._events.append(Closed(reason, message))


def _consecutive(pieces: list[int]) -> list[list[int]]:
    """``pieces`` (in queue order) cut wherever the next is not one more than the last."""
    chunks: list[list[int]] = []
    for piece in pieces:
        if chunks and chunks[-1][-1] + 1 == piece:
            chunks[-1].append(piece)
        else:
            chunks.append([piece])
    return chunks
