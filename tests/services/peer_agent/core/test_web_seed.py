"""The web seed session without I/O: runs, replies, back-off, missing files, revoke, memory.

A fake server answers each ``HttpFetch`` from the torrent's content (206 with the exact
Content-Range unless a test says otherwise); the clock is a float the test moves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.services.peer_agent.core.events import (
    Closed,
    PieceCompleted,
    PiecesGivenBack,
    WorkNeeded,
)
from torviz.services.peer_agent.core.web_seed import (
    HttpFetch,
    StopFetch,
    WebSeedEvent,
    WebSeedSession,
    WebSeedSettings,
)
from torviz.services.peer_agent.core.web_seed_runs import group_runs
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.metainfo import FileEntry
from torviz.shared.webseed import (
    BackoffSettings,
    ReadBody,
    RetryPolicy,
    WebSeedState,
    parse_web_seed_url,
)

SEED = parse_web_seed_url("http://mirror.test/pub/")
WALL = 1_800_000_000.0
PIECE = 64


@dataclass
class Torrent:
    geometry: TorrentGeometry
    files: tuple[FileEntry, ...]
    content: bytes  # the whole torrent's bytes, padding as zeros

    def piece(self, piece: int) -> bytes:
        start = piece * self.geometry.piece_length
        return self.content[start : start + self.geometry.piece_size(piece)]

    def file_bytes(self, index: int) -> bytes:
        entry = self.files[index]
        return self.content[entry.offset : entry.offset + entry.length]

    def index_of(self, url: str) -> int:
        for index, entry in enumerate(self.files):
            if url.endswith("/" + "/".join(entry.path)):
                return index
        raise AssertionError(f"no file at {url}")


def make_torrent(*files: tuple[str, int] | tuple[str, int, bool], seed: int = 17) -> Torrent:
    """A multi-file torrent of ``(name, length[, padding])`` with random content."""
    rng = random.Random(seed)
    entries, chunks, offset = [], [], 0
    for spec in files:
        name, length = spec[0], spec[1]
        padding = len(spec) == 3 and bool(spec[2])
        entries.append(FileEntry(("t", name), length, offset, padding, "p" if padding else ""))
        chunks.append(bytes(length) if padding else rng.randbytes(length))
        offset += length
    geometry = TorrentGeometry(PIECE, offset, tuple(e.length for e in entries))
    return Torrent(geometry, tuple(entries), b"".join(chunks))


def padded() -> Torrent:
    """Pieces of 64: a.bin 0-99, padding 100-127, b.bin 128-277, c.bin 278-317 (5 pieces)."""
    return make_torrent(("a.bin", 100), (".pad/28", 28, True), ("b.bin", 150), ("c.bin", 40))


@dataclass
class Harness:
    torrent: Torrent
    session: WebSeedSession
    policy: RetryPolicy
    now: float = 100.0
    events: list[WebSeedEvent] = field(default_factory=list)

    def take(self) -> list[WebSeedEvent]:
        self.events.extend(self.session.take_events())
        return self.events

    def completed(self) -> dict[int, bytes]:
        return {e.piece: bytes(e.data) for e in self.take() if isinstance(e, PieceCompleted)}

    def given_back(self) -> list[PiecesGivenBack]:
        return [e for e in self.take() if isinstance(e, PiecesGivenBack)]

    def head_206(self, fetch: HttpFetch) -> ReadBody | StopFetch:
        r = fetch.request
        headers = {
            "Content-Range": f"bytes {r.file_offset}-{r.last_byte}/{r.file_length}",
            "Content-Length": str(r.length),
        }
        return self.session.response_head(fetch.fetch_id, 206, headers, self.now, WALL)

    def feed(self, fetch: HttpFetch, verdict: ReadBody, chunk: int = 7, stop_at: int = -1) -> bool:
        """Stream the body as a server would, ``chunk`` bytes at a time, from the verdict's
        skip; stops after ``stop_at`` bytes if given. Returns the last ``body`` answer."""
        body = self.torrent.file_bytes(self.torrent.index_of(fetch.url))
        if not verdict.whole_file:  # a 206 sends the range asked for
            body = body[
                fetch.request.file_offset : fetch.request.file_offset + fetch.request.length
            ]
        data = body[verdict.skip : verdict.skip + verdict.length]
        if stop_at >= 0:
            data = data[:stop_at]
        more = True
        for at in range(0, len(data), chunk):
            more = self.session.body(fetch.fetch_id, memoryview(data[at : at + chunk]), self.now)
            if not more:
                break
        return more

    def serve(self, fetch: HttpFetch) -> None:
        verdict = self.head_206(fetch)
        assert isinstance(verdict, ReadBody), verdict
        assert self.feed(fetch, verdict) is False

    def run_all(self, limit: int = 100) -> list[HttpFetch]:
        """Serve every request until none is left; returns them in order."""
        served: list[HttpFetch] = []
        for _ in range(limit):
            fetches = self.session.next_requests(self.now)
            if not fetches:
                return served
            for fetch in fetches:
                self.serve(fetch)
            served.extend(fetches)
        raise AssertionError("requests never ran out")


def harness(
    torrent: Torrent | None = None,
    *,
    max_request: int = 128,
    backoff: BackoffSettings | None = None,
    draw: Callable[[], float] = lambda: 0.5,
    **settings: float,
) -> Harness:
    torrent = torrent or padded()
    real_files = sum(1 for f in torrent.files if not f.padding and f.length)
    policy = RetryPolicy(backoff or BackoffSettings(), draw, real_files)
    session = WebSeedSession(
        torrent.geometry,
        torrent.files,
        SEED,
        policy,
        WebSeedSettings(max_request=max_request, **settings),  # type: ignore[arg-type]
        now=100.0,
    )
    return Harness(torrent, session, policy)


# -- runs and bytes -------------------------------------------------------------------------------


def test_group_runs_cuts_consecutive_pieces_at_the_maximum() -> None:
    assert group_runs([9, 3, 4, 5, 1, 2, 7, 4], 3) == [(1, 3), (4, 2), (7, 1), (9, 1)]
    assert group_runs([], 4) == []


def test_multi_file_torrent_with_padding_completes_with_exact_bytes_in_order() -> None:
    h = harness()
    h.session.assign([4, 3, 2, 1, 0], h.now)
    served = h.run_all()
    completed = [e for e in h.take() if isinstance(e, PieceCompleted)]
    assert [e.piece for e in completed] == [0, 1, 2, 3, 4]
    for event in completed:
        assert bytes(event.data) == h.torrent.piece(event.piece)
        assert isinstance(event.data, bytearray)
    assert not any(".pad" in f.url for f in served)  # padding is never requested
    assert h.session.held == frozenset()
    assert h.session.buffered == 0
    status = h.session.summary(h.now)
    assert status.downloaded == 100 + 150 + 40
    assert status.rate > 0
    assert status.retry.state is WebSeedState.ACTIVE


def test_a_run_across_files_is_one_request_per_file() -> None:
    h = harness()
    h.session.assign([1, 2], h.now)  # bytes 64-191: a.bin 64-99, padding, b.bin 0-63
    fetches = h.session.next_requests(h.now)
    assert [(f.url, f.headers["Range"], f.request.buffer_offset) for f in fetches] == [
        ("http://mirror.test/pub/t/a.bin", "bytes=64-99", 0),
        ("http://mirror.test/pub/t/b.bin", "bytes=0-63", 64),
    ]
    assert {f.first_piece for f in fetches} == {1}
    h.serve(fetches[1])  # b.bin's part first: piece 2 completes, piece 1 still waits
    assert list(h.completed()) == [2]
    h.serve(fetches[0])
    assert h.completed() == {1: h.torrent.piece(1), 2: h.torrent.piece(2)}


def test_pieces_in_any_order_form_runs_cut_at_the_maximum_request() -> None:
    torrent = make_torrent(("one.iso", 10 * PIECE))
    h = harness(torrent, max_request=3 * PIECE)
    h.session.assign([7, 0, 2, 1, 3, 9, 8], h.now)
    fetches = h.session.next_requests(h.now)  # 4 slots: one request per run here
    assert [f.headers["Range"] for f in fetches] == [
        f"bytes=0-{3 * PIECE - 1}",
        f"bytes={3 * PIECE}-{4 * PIECE - 1}",
        f"bytes={7 * PIECE}-{10 * PIECE - 1}",
    ]


def test_a_server_ignoring_range_is_read_past_the_skip() -> None:
    h = harness()
    h.session.assign([3], h.now)  # bytes 192-255: all in b.bin at 64-127
    (fetch,) = h.session.next_requests(h.now)
    verdict = h.session.response_head(fetch.fetch_id, 200, {"Content-Length": "150"}, h.now, WALL)
    assert verdict == ReadBody(skip=64, length=64, whole_file=True)
    assert h.feed(fetch, verdict) is False
    assert h.completed() == {3: h.torrent.piece(3)}


def test_a_body_cut_short_is_retried_for_the_missing_bytes_only() -> None:
    h = harness()
    h.session.assign([2, 3], h.now)  # b.bin 0-127
    (fetch,) = h.session.next_requests(h.now)
    verdict = h.head_206(fetch)
    assert isinstance(verdict, ReadBody)
    assert h.feed(fetch, verdict, stop_at=70) is True
    assert list(h.completed()) == [2]  # its 64 bytes were in before the cut
    h.session.failed(fetch.fetch_id, "bad_http", "the web seed's reply was cut short", h.now)
    assert h.session.next_requests(h.now) == []  # backing off: 0.5 * 2 s
    h.now += 1.0
    (again,) = h.session.next_requests(h.now)
    assert again.headers["Range"] == "bytes=70-127"
    assert again.request.buffer_offset == 70
    h.serve(again)
    assert h.completed() == {2: h.torrent.piece(2), 3: h.torrent.piece(3)}


# -- replies that stop a fetch ----------------------------------------------------------------


def test_a_wrong_content_range_ends_the_fetch_with_its_reason_and_backs_off() -> None:
    h = harness()
    h.session.assign([0], h.now)
    (fetch,) = h.session.next_requests(h.now)
    verdict = h.session.response_head(
        fetch.fetch_id, 206, {"Content-Range": "bytes 1-64/100"}, h.now, WALL
    )
    assert isinstance(verdict, StopFetch)
    assert verdict.reason == "content_range_mismatch"
    assert "asked for bytes 0-63" in verdict.message
    assert h.session.body(fetch.fetch_id, b"x", h.now) is False  # nothing of it is kept
    status = h.session.summary(h.now)
    assert status.retry.state is WebSeedState.BACKING_OFF
    assert status.retry.failures == 1
    assert "asked for bytes 0-63" in status.retry.last_error
    assert h.session.next_requests(h.now) == []
    assert h.session.next_deadline(h.now) == pytest.approx(h.now + 1.0)
    h.now += 1.0
    (again,) = h.session.next_requests(h.now)
    assert again.headers["Range"] == "bytes=0-63"
    h.serve(again)
    assert h.completed() == {0: h.torrent.piece(0)}
    assert h.session.summary(h.now).retry.failures == 0


def test_503_with_retry_after_backs_off_and_halves_the_concurrency() -> None:
    torrent = make_torrent(("one.iso", 12 * PIECE))
    h = harness(torrent, max_request=2 * PIECE, hold_limit=300.0)
    h.session.assign(range(12), h.now)
    fetches = h.session.next_requests(h.now)
    assert len(fetches) == 4
    verdict = h.session.response_head(fetches[0].fetch_id, 503, {"Retry-After": "120"}, h.now, WALL)
    assert isinstance(verdict, StopFetch) and verdict.reason == "slow_down"
    status = h.session.summary(h.now)
    assert status.retry.state is WebSeedState.BACKING_OFF
    assert status.retry.concurrency == 2
    assert status.retry.next_try_in == pytest.approx(120.0)  # not below Retry-After
    for fetch in fetches[1:]:  # the others in flight finish meanwhile
        h.serve(fetch)
    h.now += 119.0
    assert h.session.next_requests(h.now) == []
    assert h.session.next_deadline(h.now) == pytest.approx(h.now + 1.0)
    h.now += 1.0
    after = h.session.next_requests(h.now)
    assert len(after) == 2  # the halved concurrency
    assert after[0].headers["Range"] == f"bytes=0-{2 * PIECE - 1}"  # the stopped run first
    for fetch in after:
        h.serve(fetch)
    h.run_all()
    assert h.completed() == {p: torrent.piece(p) for p in range(12)}


def test_a_long_back_off_gives_back_the_runs_not_started() -> None:
    torrent = make_torrent(("one.iso", 12 * PIECE))
    h = harness(torrent, max_request=2 * PIECE, backoff=BackoffSettings(max_concurrency=1))
    h.session.assign(range(6), h.now)
    (fetch,) = h.session.next_requests(h.now)
    h.session.response_head(fetch.fetch_id, 429, {"Retry-After": "600"}, h.now, WALL)
    (given,) = h.given_back()
    assert given == PiecesGivenBack((2, 3, 4, 5), "web_seed_backing_off")
    assert h.session.held == frozenset({0, 1})  # the started run stays, to be retried
    assert not any(isinstance(e, WorkNeeded) for e in h.session.take_events())


def test_404_disables_one_file_and_gives_back_only_its_pieces() -> None:
    h = harness()
    h.session.assign(range(5), h.now)
    h.take()
    first = h.session.next_requests(h.now)
    # runs (0, 1) a.bin, (2, 3) b.bin, (4,) b.bin and c.bin
    assert [f.url.rsplit("/", 1)[1] for f in first] == ["a.bin", "b.bin", "b.bin", "c.bin"]
    verdict = h.session.response_head(first[1].fetch_id, 404, {}, h.now, WALL)
    assert isinstance(verdict, StopFetch) and verdict.reason == "file_missing"
    # b.bin holds bytes 128-277: pieces 2, 3 and 4 (which also needs c.bin)
    assert h.given_back() == [PiecesGivenBack((2, 3, 4), "web_seed_file_missing")]
    for stopped in first[2:]:  # nothing needs them any more
        assert h.session.body(stopped.fetch_id, b"", h.now) is False
    assert h.session.summary(h.now).in_flight == 1
    h.serve(first[0])
    assert h.session.next_requests(h.now) == []
    assert h.completed() == {0: h.torrent.piece(0), 1: h.torrent.piece(1)}
    status = h.session.summary(h.now)
    assert status.retry.disabled_files == 1
    assert status.retry.state is WebSeedState.ACTIVE
    h.events.clear()
    h.session.assign([4, 3], h.now)  # pieces needing b.bin come back at once
    assert h.given_back() == [PiecesGivenBack((3, 4), "web_seed_file_missing")]
    assert h.session.held == frozenset()


def test_a_broken_url_gives_everything_back_and_closes() -> None:
    h = harness()
    h.session.assign(range(5), h.now)
    fetch = h.session.next_requests(h.now)[0]
    verdict = h.session.response_head(fetch.fetch_id, 403, {}, h.now, WALL)
    assert isinstance(verdict, StopFetch) and verdict.reason == "url_broken"
    events = h.take()
    assert events[-2] == PiecesGivenBack((0, 1, 2, 3, 4), "web_seed_given_up")
    assert events[-1] == Closed("web_seed_given_up")
    assert isinstance(events[-1], Closed)
    assert "HTTP 403 Forbidden" in events[-1].message
    assert h.session.closed
    assert h.session.next_requests(h.now) == []
    assert h.session.next_deadline(h.now) is None
    h.session.assign([0], h.now)
    assert h.session.take_events() == []


def test_failures_in_a_row_give_the_url_up_after_the_policy_bound() -> None:
    h = harness(backoff=BackoffSettings(max_failures=3), max_attempts=10)
    h.session.assign([0], h.now)
    for _ in range(3):
        h.now += 700.0  # past any back-off
        (fetch,) = h.session.next_requests(h.now)
        h.session.failed(fetch.fetch_id, "connection_refused", "connection refused", h.now)
    assert h.take()[-1] == Closed("web_seed_given_up")
    assert PiecesGivenBack((0,), "web_seed_given_up") in h.take()


def test_a_request_failing_too_often_gives_its_pieces_back() -> None:
    h = harness(max_attempts=2)
    h.session.assign([0, 1, 2], h.now)  # runs (0, 1) and (2,)
    fetches = {f.first_piece: f for f in h.session.next_requests(h.now)}
    h.session.failed(fetches[2].fetch_id, "timed_out", "timed out after 15 s", h.now)
    h.serve(fetches[0])  # a success between: the policy's count starts again, not the request's
    h.now += 10.0
    (retry,) = h.session.next_requests(h.now)
    assert retry.first_piece == 2
    h.session.failed(retry.fetch_id, "timed_out", "timed out after 15 s", h.now)
    assert PiecesGivenBack((2,), "web_seed_retries") in h.given_back()
    assert 2 not in h.session.held
    assert not h.session.closed


def test_a_404_for_the_only_file_gives_the_url_up() -> None:
    torrent = make_torrent(("one.iso", 3 * PIECE))
    h = harness(torrent, max_request=3 * PIECE)
    h.session.assign([0, 1, 2], h.now)
    (fetch,) = h.session.next_requests(h.now)
    h.session.response_head(fetch.fetch_id, 410, {}, h.now, WALL)
    events = h.take()
    assert PiecesGivenBack((0, 1, 2), "web_seed_file_missing") in events
    assert events[-1] == Closed("web_seed_given_up")
    assert h.session.summary(h.now).retry.state is WebSeedState.GIVEN_UP


def test_settings_and_files_are_checked() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        WebSeedSettings(max_request=0)
    with pytest.raises(ValueError, match="cannot be negative"):
        WebSeedSettings(hold_limit=-1.0)
    torrent = padded()
    policy = RetryPolicy(BackoffSettings(), lambda: 0.5, 3)
    with pytest.raises(ValueError, match="does not match"):
        WebSeedSession(
            torrent.geometry, torrent.files[:2], SEED, policy, WebSeedSettings(), now=0.0
        )


# -- revoke, work, memory -----------------------------------------------------------------------


def test_revoke_during_a_fetch_abandons_a_run_with_no_piece_left() -> None:
    torrent = make_torrent(("one.iso", 4 * PIECE))
    h = harness(torrent, max_request=2 * PIECE)
    h.session.assign([0, 1, 2, 3], h.now)
    first, second = h.session.next_requests(h.now)
    verdict = h.head_206(first)
    assert isinstance(verdict, ReadBody)
    assert h.feed(first, verdict, stop_at=30) is True
    h.session.revoke([0, 1], h.now)
    assert h.session.body(first.fetch_id, b"x" * 10, h.now) is False
    assert h.session.buffered == 2 * PIECE  # the other run only
    h.session.revoke([3], h.now)  # part of a run: the fetch goes on for piece 2
    h.serve(second)
    assert h.completed() == {2: torrent.piece(2)}
    assert h.session.held == frozenset()
    assert h.session.buffered == 0
    assert h.given_back() == []  # revoked pieces are not given back


def test_revoke_of_a_run_not_started_drops_it() -> None:
    torrent = make_torrent(("one.iso", 8 * PIECE))
    h = harness(torrent, max_request=2 * PIECE, backoff=BackoffSettings(max_concurrency=1))
    h.session.assign(range(8), h.now)
    h.session.revoke([3, 4, 5], h.now)
    h.run_all()
    assert sorted(h.completed()) == [0, 1, 2, 6, 7]


def test_a_stale_fetch_is_answered_abandoned() -> None:
    h = harness()
    h.session.assign([0], h.now)
    (fetch,) = h.session.next_requests(h.now)
    h.session.revoke([0], h.now)
    verdict = h.head_206(fetch)
    assert isinstance(verdict, StopFetch) and verdict.reason == "abandoned"
    h.session.failed(fetch.fetch_id, "timed_out", "timed out", h.now)  # ignored
    assert h.session.summary(h.now).retry.failures == 0


def test_work_is_asked_for_when_few_runs_wait_and_again_after_an_empty_assign() -> None:
    h = harness(max_request=128)  # 2 pieces a run; 2 queued + 4 in flight = 12 pieces
    assert h.session.take_events() == [WorkNeeded(12)]
    h.session.tick(h.now)
    assert h.session.take_events() == []  # asked once until an assign
    h.session.assign([], h.now)
    assert h.session.next_deadline(h.now) == pytest.approx(h.now + 5.0)
    h.session.tick(h.now + 4.9)
    assert h.session.take_events() == []
    h.session.tick(h.now + 5.0)
    assert h.session.take_events() == [WorkNeeded(12)]
    h.session.assign([0, 1, 2, 3, 4], h.now)  # 3 runs: enough waiting
    assert h.session.take_events() == []
    h.session.next_requests(h.now)  # all started: the queue is empty again
    assert h.session.take_events() == [WorkNeeded(7)]


def test_memory_stays_within_concurrency_runs_of_the_maximum_request() -> None:
    torrent = make_torrent(("big.iso", 40 * PIECE + 5))
    h = harness(torrent, max_request=4 * PIECE, backoff=BackoffSettings(max_concurrency=2))
    h.session.assign(range(torrent.geometry.num_pieces), h.now)
    bound = 2 * 4 * PIECE
    in_flight: list[HttpFetch] = []
    for _ in range(100):
        in_flight += h.session.next_requests(h.now)
        assert len(in_flight) <= 2
        assert h.session.buffered <= bound
        if not in_flight:
            break
        fetch = in_flight.pop(0)
        verdict = h.head_206(fetch)
        assert isinstance(verdict, ReadBody)
        assert h.feed(fetch, verdict, chunk=50) is False
        assert h.session.buffered <= bound
    assert h.completed() == {p: torrent.piece(p) for p in range(41)}


def test_contract_errors_of_the_actor_raise() -> None:
    h = harness()
    h.session.assign([0], h.now)
    (fetch,) = h.session.next_requests(h.now)
    with pytest.raises(ValueError, match="before a response head"):
        h.session.body(fetch.fetch_id, b"x", h.now)
    h.head_206(fetch)
    with pytest.raises(ValueError, match="already had its response head"):
        h.head_206(fetch)
    with pytest.raises(ValueError, match="65 bytes for a request with 64 to go"):
        h.session.body(fetch.fetch_id, bytes(65), h.now)


def test_a_long_back_off_with_nothing_held_still_wakes_to_ask_for_work() -> None:
    h = harness(max_attempts=1)
    h.session.assign([0], h.now)
    assert h.session.take_events() == [WorkNeeded(12), WorkNeeded(11)]  # one run is too few
    (fetch,) = h.session.next_requests(h.now)
    h.session.response_head(fetch.fetch_id, 503, {"Retry-After": "600"}, h.now, WALL)
    assert h.session.take_events() == [PiecesGivenBack((0,), "web_seed_retries")]
    h.session.assign([], h.now)  # the coordinator's answer to the ask
    h.session.tick(h.now + 5.0)
    assert h.session.take_events() == []  # not while backing off
    assert h.session.held == frozenset()
    assert h.session.next_deadline(h.now + 5.0) == pytest.approx(h.now + 600.0)
    h.session.tick(h.now + 599.0)
    assert h.session.take_events() == []
    h.session.tick(h.now + 600.0)
    assert h.session.take_events() == [WorkNeeded(8)]  # (2 queued + 2 after the 429) runs of 2
    assert h.session.next_deadline(h.now + 600.0) is None


def test_pieces_assigned_during_a_long_back_off_are_given_back_at_once() -> None:
    h = harness()
    h.session.assign([0], h.now)
    (fetch,) = h.session.next_requests(h.now)
    h.session.response_head(fetch.fetch_id, 429, {"Retry-After": "100"}, h.now, WALL)
    h.take()
    h.session.assign([2, 3], h.now + 10.0)  # 90 s to go, over the 30 s hold limit
    assert h.given_back() == [PiecesGivenBack((2, 3), "web_seed_backing_off")]
    assert h.session.held == frozenset({0})
    h.events.clear()
    h.session.assign([4], h.now + 80.0)  # 20 s to go: kept
    assert h.given_back() == []
    assert h.session.held == frozenset({0, 4})


# -- any sequence of replies ----------------------------------------------------------------------

ACTIONS = ("serve", "serve", "serve", "cut", "503", "500", "404", "bad_range", "revoke")


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_every_assigned_piece_ends_once_and_completed_bytes_are_exact(data: st.DataObject) -> None:
    torrent = data.draw(
        st.sampled_from(
            [
                padded(),
                make_torrent(("one.iso", 9 * PIECE + 3)),
                make_torrent(("x", 10), ("y", 130), (".pad/60", 60, True), ("z", 200)),
            ]
        )
    )
    max_request = data.draw(st.sampled_from([PIECE, 2 * PIECE, 3 * PIECE + 1]))
    h = harness(torrent, max_request=max_request, max_attempts=3)
    everything = list(range(torrent.geometry.num_pieces))
    h.session.assign(data.draw(st.permutations(everything)), h.now)
    revoked: set[int] = set()
    in_flight: dict[int, HttpFetch] = {}
    bound = BackoffSettings().max_concurrency * max(max_request, PIECE)
    for _ in range(300):
        for fetch in h.session.next_requests(h.now):
            in_flight[fetch.fetch_id] = fetch
        assert h.session.buffered <= bound
        if not in_flight:
            if not h.session.held or h.session.closed:
                break
            h.now += 700.0  # past any back-off
            continue
        fetch = in_flight.pop(data.draw(st.sampled_from(sorted(in_flight))))
        action = data.draw(st.sampled_from(ACTIONS))
        if action in ("serve", "cut"):
            verdict = h.head_206(fetch)
            if isinstance(verdict, ReadBody):
                cut = data.draw(st.integers(0, verdict.length - 1)) if action == "cut" else -1
                if h.feed(fetch, verdict, chunk=data.draw(st.integers(1, 70)), stop_at=cut):
                    h.session.failed(fetch.fetch_id, "bad_http", "cut short", h.now)
        elif action == "revoke":
            if fetch.first_piece in h.session.held:
                revoked.add(fetch.first_piece)
            h.session.revoke([fetch.first_piece], h.now)
            in_flight[fetch.fetch_id] = fetch  # the actor reads on until told to stop
        else:
            status, headers = {
                "503": (503, {"Retry-After": "5"}),
                "500": (500, {}),
                "404": (404, {}),
                "bad_range": (206, {"Content-Range": "bytes 0-0/1"}),
            }[action]
            h.session.response_head(fetch.fetch_id, status, headers, h.now, WALL)
        h.now += 0.25
    completed = [e for e in h.take() if isinstance(e, PieceCompleted)]
    given = [p for e in h.take() if isinstance(e, PiecesGivenBack) for p in e.pieces]
    done = [e.piece for e in completed]
    for event in completed:
        assert bytes(event.data) == torrent.piece(event.piece)
    assert len(set(done)) == len(done)
    assert len(set(given)) == len(given)
    assert not set(done) & set(given)
    assert not revoked & (set(done) | set(given))
    assert set(done) | set(given) | revoked | h.session.held == set(everything)
