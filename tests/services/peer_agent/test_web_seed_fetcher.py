"""The web seed fetcher against real servers on loopback: nginx and the hostile ``http.server``s.

The torrent's content is written by testing/content (a multi-file layout with nested folders
and empty files); its file list is built here with a BEP 47 padding file after the first file
(testing/content makes torrents with libtorrent, without padding), so the fetcher must never
ask for padding and the pieces across it come out with zeros there. Every wait is bounded and
every server and fetcher is stopped (``with`` blocks, ``close`` in ``finally``).
"""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.content import make_content, multi_file_layout
from tests.support.hostile_http import (
    CorruptRanges,
    DropHalfway,
    FileServer,
    IgnoresRange,
    RedirectLoop,
    Retry503,
    SlowDrip,
)
from tests.support.nginx import Nginx, nginx_or_skip
from torviz.services.peer_agent.core.events import Closed, PieceCompleted, PiecesGivenBack
from torviz.services.peer_agent.core.web_seed import (
    WebSeedEvent,
    WebSeedSession,
    WebSeedSettings,
)
from torviz.services.peer_agent.web_seed_fetcher import WebSeedFetcher
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.metainfo import FileEntry
from torviz.shared.runtime.http import HttpClient
from torviz.shared.webseed import BackoffSettings, RetryPolicy, parse_web_seed_url

PIECE = 16 * 1024
NAME = "multi"
FAST = BackoffSettings(base=0.05, cap=0.2)
WAIT_S = 15.0
REPO_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Torrent:
    geometry: TorrentGeometry
    files: tuple[FileEntry, ...]
    content: bytes  # the torrent's bytes, padding as zeros
    root: Path  # the folder to serve: root/multi/...

    def piece(self, piece: int) -> bytes:
        start = piece * PIECE
        return self.content[start : start + self.geometry.piece_size(piece)]

    @property
    def pieces(self) -> range:
        return range(self.geometry.num_pieces)

    @property
    def served_files(self) -> int:
        return sum(1 for f in self.files if f.length and not f.padding)


@pytest.fixture(scope="module")
def torrent(tmp_path_factory: pytest.TempPathFactory) -> Torrent:
    return build_torrent(tmp_path_factory.mktemp("web-seed-content"))


def build_torrent(root: Path) -> Torrent:
    """~160 KiB in 7 files (two empty) plus a padding file after the first: 11 pieces."""
    spec = make_content(root, multi_file_layout(160 * 1024, name=NAME), seed=17)
    entries: list[FileEntry] = []
    chunks: list[bytes] = []
    offset = 0
    for index, (file, path) in enumerate(zip(spec.layout.files, spec.file_paths(), strict=True)):
        data = path.read_bytes()
        entries.append(FileEntry((NAME, *file.path.parts), len(data), offset, False, ""))
        chunks.append(data)
        offset += len(data)
        if index == 0:
            pad = PIECE - offset % PIECE
            assert 0 < pad < PIECE  # the first file's size is odd: a padding file is needed
            entries.append(FileEntry((NAME, ".pad", str(pad)), pad, offset, True, "p"))
            chunks.append(bytes(pad))
            offset += pad
    geometry = TorrentGeometry(PIECE, offset, tuple(e.length for e in entries))
    return Torrent(geometry, tuple(entries), b"".join(chunks), root)


class Events:
    """What ``on_event`` got, with bounded waits."""

    def __init__(self) -> None:
        self.items: list[WebSeedEvent] = []
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, event: WebSeedEvent) -> None:
        with self._cond:
            self.items.append(event)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait(self, done: Callable[[list[WebSeedEvent]], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while not done(self.items):
                left = deadline - time.monotonic()
                if left <= 0:
                    shown = [
                        f"PieceCompleted({e.piece})" if isinstance(e, PieceCompleted) else repr(e)
                        for e in self.items
                    ]
                    raise AssertionError(f"no {what} within {WAIT_S} s; events: {shown}")
                self._cond.wait(left)

    def completed(self) -> list[PieceCompleted]:
        with self._cond:
            return [e for e in self.items if isinstance(e, PieceCompleted)]

    def given_back(self) -> set[int]:
        with self._cond:
            return {p for e in self.items if isinstance(e, PiecesGivenBack) for p in e.pieces}

    def closed(self) -> list[Closed]:
        with self._cond:
            return [e for e in self.items if isinstance(e, Closed)]


class HeaderDrip:
    """A loopback server that answers every connection with a status line and then one header
    byte every ``interval`` s (for at most ``limit_s`` s): each read gets a byte in time, so
    only an overall deadline ends the wait for the head. Records when each connection came."""

    def __init__(self, interval: float = 0.1, limit_s: float = 10.0) -> None:
        self.interval = interval
        self.limit_s = limit_s
        self.accepted: list[float] = []
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/"
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(time.monotonic())
            thread = threading.Thread(target=self._drip, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _drip(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(1.0)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            deadline = time.monotonic() + self.limit_s
            while not self._stop.wait(self.interval) and time.monotonic() < deadline:
                conn.sendall(b"a")

    def __enter__(self) -> HeaderDrip:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._listener.close()
        deadline = time.monotonic() + 3.0
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))


@pytest.fixture
def client() -> Iterator[HttpClient]:
    http = HttpClient(peer_name="the web seed")
    try:
        yield http
    finally:
        http.close()


def start_fetcher(
    torrent: Torrent,
    client: HttpClient,
    url: str,
    *,
    backoff: BackoffSettings = FAST,
    settings: WebSeedSettings | None = None,
    **options: Any,
) -> tuple[WebSeedFetcher, Events]:
    """A fetcher for the torrent on ``url``, every piece assigned."""
    policy = RetryPolicy(backoff, random.Random(7).random, torrent.served_files)
    session = WebSeedSession(
        torrent.geometry,
        torrent.files,
        parse_web_seed_url(url),
        policy,
        settings or WebSeedSettings(max_request=48 * 1024),
        time.monotonic(),
    )
    events = Events()
    fetcher = WebSeedFetcher(session, client, events, name="wsf-test", **options)
    fetcher.assign(torrent.pieces)
    return fetcher, events


@pytest.fixture
def run(
    torrent: Torrent, client: HttpClient
) -> Iterator[Callable[..., tuple[WebSeedFetcher, Events]]]:
    """Start fetchers with ``start_fetcher``; each is closed at the end."""
    started: list[WebSeedFetcher] = []

    def start(url: str, **options: Any) -> tuple[WebSeedFetcher, Events]:
        fetcher, events = start_fetcher(torrent, client, url, **options)
        started.append(fetcher)
        return fetcher, events

    try:
        yield start
    finally:
        for fetcher in started:
            fetcher.close()


def all_done(torrent: Torrent) -> Callable[[list[WebSeedEvent]], bool]:
    return lambda items: (
        {e.piece for e in items if isinstance(e, PieceCompleted)} >= set(torrent.pieces)
    )


def any_closed(items: list[WebSeedEvent]) -> bool:
    return any(isinstance(e, Closed) for e in items)


def assert_exact_pieces(torrent: Torrent, events: Events) -> None:
    completed = events.completed()
    assert sorted(e.piece for e in completed) == list(torrent.pieces)  # each exactly once
    for event in completed:
        assert bytes(event.data) == torrent.piece(event.piece), f"piece {event.piece}"


def no_fetcher_threads(fetcher: WebSeedFetcher) -> None:
    assert not [t for t in fetcher.threads if t.is_alive()]
    assert not [t.name for t in threading.enumerate() if t.name.startswith("wsf-test")]


def range_start(header: str | None) -> tuple[int, int]:
    assert header is not None and header.startswith("bytes=")
    first, last = header[len("bytes=") :].split("-")
    return int(first), int(last)


def test_nginx_serves_every_piece_once_over_kept_alive_connections(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]], tmp_path: Path
) -> None:
    nginx_or_skip()
    with Nginx(torrent.root, tmp_path / "nginx") as nginx:
        fetcher, events = run(nginx.url)
        events.wait(all_done(torrent), "every piece")
        assert_exact_pieces(torrent, events)
        assert events.threads == {"wsf-test-driver"}  # one thread delivers, in order
        assert not events.given_back()
        logged = nginx.wait_requests(2)
        assert all(r.status == 206 and r.range for r in logged)
        assert not any(".pad" in r.uri for r in logged)  # padding is never asked for
        # Keep-alive: some connection carried several requests.
        assert max(r.connection_requests for r in logged) > 1
        assert len({r.connection for r in logged}) < len(logged)
        fetcher.close()
        assert isinstance(events.items[-1], Closed)
        no_fetcher_threads(fetcher)


def test_a_server_ignoring_range_gives_correct_pieces_with_bounded_memory(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    settings = WebSeedSettings(max_request=32 * 1024)
    backoff = BackoffSettings(base=0.05, cap=0.2, max_concurrency=2)
    with IgnoresRange(torrent.root) as server:
        fetcher, events = run(server.url, settings=settings, backoff=backoff, chunk_size=4096)
        events.wait(all_done(torrent), "every piece")
        assert_exact_pieces(torrent, events)
        assert all(r.range for r in server.requests)  # asked for ranges, got whole files
        # At most the concurrency's runs held at once, each at most max_request bytes.
        assert 0 < fetcher.peak_buffered <= 2 * 32 * 1024


def test_503_with_retry_after_backs_off_then_succeeds(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    backoff = BackoffSettings(base=0.05, cap=0.2, max_concurrency=1)
    with Retry503(torrent.root, after=2, retry_after="1") as server:
        fetcher, events = run(server.url, backoff=backoff)
        events.wait(all_done(torrent), "every piece")
        assert_exact_pieces(torrent, events)
        first, second, third = server.requests[:3]
        # Retry-After: 1 is honoured (the policy's own back-off is far shorter).
        assert second.at - first.at >= 0.95
        assert third.at - second.at >= 0.95
        assert first.range == second.range == third.range  # the same bytes asked again
        assert fetcher.summary().retry.failures == 0


def test_a_body_cut_short_is_retried_for_the_missing_bytes_only(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    backoff = BackoffSettings(base=0.05, cap=0.2, max_concurrency=1)
    with DropHalfway(torrent.root, times=1) as server:
        _, events = run(server.url, backoff=backoff)
        events.wait(all_done(torrent), "every piece")
        assert_exact_pieces(torrent, events)
        cut, retry = server.requests[:2]
        assert retry.path == cut.path
        start, last = range_start(cut.range)
        half = (last - start + 1) // 2
        assert range_start(retry.range) == (start + half, last)


def test_a_redirect_loop_gives_the_url_up_and_every_piece_back(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    backoff = BackoffSettings(base=0.01, cap=0.02, max_failures=3)
    with RedirectLoop(mode="pair") as server:
        fetcher, events = run(server.url, backoff=backoff)
        events.wait(any_closed, "Closed")
        closed = events.closed()
        assert len(closed) == 1 and isinstance(events.items[-1], Closed)
        assert closed[0].reason == "web_seed_given_up"
        assert closed[0].message.startswith(
            f"3 failures in a row, last: redirect loop at {server.url}"
        )
        assert "\n" not in closed[0].message
        assert events.given_back() == set(torrent.pieces)
        assert not events.completed()
        # The fetcher stops by itself once the session is over.
        deadline = time.monotonic() + 2.0
        while any(t.is_alive() for t in fetcher.threads) and time.monotonic() < deadline:
            time.sleep(0.02)
        no_fetcher_threads(fetcher)


def test_corrupt_bytes_are_delivered_as_they_came(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    # Verifying pieces is the storage agent's job: the fetcher hands over what the server sent.
    with CorruptRanges(torrent.root, bad={(100, 110)}, path=f"/{NAME}/a.bin") as server:
        _, events = run(server.url)
        events.wait(all_done(torrent), "every piece")
        got = {e.piece: bytes(e.data) for e in events.completed()}
        assert sorted(got) == list(torrent.pieces)
        expected = bytearray(torrent.piece(0))
        for index in range(100, 110):
            expected[index] ^= 0xFF
        assert got[0] == bytes(expected)
        assert all(got[p] == torrent.piece(p) for p in torrent.pieces if p)


def test_a_dripping_server_is_ended_by_the_deadline_and_retried(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    backoff = BackoffSettings(base=0.05, cap=0.1, max_concurrency=1)
    with SlowDrip(torrent.root, interval=2.0, limit_s=5.0) as server:
        fetcher, _ = run(server.url, backoff=backoff, fetch_timeout=0.5)
        first, second = server.wait_requests(2, timeout=5.0)[:2]
        assert second.range == first.range  # nothing came in time: the same bytes again
        assert 0.5 <= second.at - first.at < 2.0  # ended by the deadline, not the drip
        assert fetcher.summary().retry.last_error == "timed out after 0.5 s"


def test_close_mid_fetch_stops_every_worker_within_a_second(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    with SlowDrip(torrent.root, interval=5.0, limit_s=30.0) as server:
        fetcher, events = run(server.url, fetch_timeout=30.0)
        server.wait_requests(2, timeout=5.0)  # several fetches reading
        assert len([t for t in fetcher.threads if t.is_alive()]) >= 3
        started = time.monotonic()
        fetcher.close()
        assert time.monotonic() - started < 1.0
        no_fetcher_threads(fetcher)
        assert events.items[-1] == Closed("web_seed_stopped")
        assert events.given_back() == set(torrent.pieces)


def test_the_watchdog_ends_a_fetch_whose_head_drips_past_the_deadline(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    backoff = BackoffSettings(base=0.05, cap=0.1, max_concurrency=1)
    with HeaderDrip() as server:
        fetcher, _ = run(server.url, backoff=backoff, fetch_timeout=0.5, grace=0.2)
        deadline = time.monotonic() + 5.0
        while len(server.accepted) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(server.accepted) >= 2, "the dripped fetch was never ended and retried"
        first, second = server.accepted[:2]
        assert 0.6 <= second - first < 2.0  # fetch_timeout + grace, then the short back-off
        assert fetcher.summary().retry.last_error == "timed out after 0.5 s"


def test_revoking_the_pieces_of_a_fetch_closes_its_stream(
    torrent: Torrent, run: Callable[..., tuple[WebSeedFetcher, Events]]
) -> None:
    backoff = BackoffSettings(base=0.05, cap=0.1, max_concurrency=1)
    with SlowDrip(torrent.root, interval=0.05, limit_s=20.0) as server:
        fetcher, events = run(server.url, backoff=backoff, fetch_timeout=30.0)
        server.wait_requests(1, timeout=5.0)
        deadline = time.monotonic() + 5.0
        while fetcher.summary().downloaded == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fetcher.summary().downloaded > 0  # bytes are coming
        fetcher.revoke(torrent.pieces)
        # The next byte is refused (``body`` answers False): the worker closes and ends.
        deadline = time.monotonic() + 2.0
        while len([t for t in fetcher.threads if t.is_alive()]) > 1:
            assert time.monotonic() < deadline, "the revoked fetch went on"
            time.sleep(0.02)
        assert fetcher.summary().in_flight == 0
        assert len(server.requests) == 1  # nothing else asked for
        assert not events.completed() and not events.given_back()  # revoke is silent


def test_an_event_handler_that_raises_does_not_stop_the_fetcher(
    torrent: Torrent, client: HttpClient, caplog: pytest.LogCaptureFixture
) -> None:
    events = Events()
    failures = []

    def flaky(event: WebSeedEvent) -> None:
        events(event)
        if isinstance(event, PieceCompleted) and event.piece % 2 == 0:
            failures.append(event.piece)
            raise RuntimeError(f"handler broke on piece {event.piece}")

    with FileServer(torrent.root) as server:
        policy = RetryPolicy(FAST, random.Random(7).random, torrent.served_files)
        session = WebSeedSession(
            torrent.geometry,
            torrent.files,
            parse_web_seed_url(server.url),
            policy,
            WebSeedSettings(max_request=48 * 1024),
            time.monotonic(),
        )
        fetcher = WebSeedFetcher(session, client, flaky, name="wsf-test")
        try:
            fetcher.assign(torrent.pieces)
            events.wait(all_done(torrent), "every piece")
            assert_exact_pieces(torrent, events)
        finally:
            fetcher.close()
        assert failures and isinstance(events.items[-1], Closed)
        assert "event handler failed: RuntimeError: handler broke on piece" in caplog.text
        no_fetcher_threads(fetcher)


GEVENT_SCRIPT = """
import gevent.monkey

gevent.monkey.patch_all()

import sys, threading, time
from pathlib import Path

from tests.services.peer_agent import test_web_seed_fetcher as t
from tests.support.hostile_http import FileServer, SlowDrip
from torviz.shared.runtime.http import HttpClient

torrent = t.build_torrent(Path(sys.argv[1]))
client = HttpClient()
with FileServer(torrent.root) as server:
    fetcher, events = t.start_fetcher(torrent, client, server.url)
    events.wait(t.all_done(torrent), "every piece")
    t.assert_exact_pieces(torrent, events)
    fetcher.close()
    t.no_fetcher_threads(fetcher)
    assert len(server.requests) > 1
with SlowDrip(torrent.root, interval=5.0, limit_s=30.0) as server:
    fetcher, events = t.start_fetcher(torrent, client, server.url, fetch_timeout=30.0)
    server.wait_requests(2, timeout=5.0)
    started = time.monotonic()
    fetcher.close()
    assert time.monotonic() - started < 1.0, "close took too long"
    t.no_fetcher_threads(fetcher)
client.close()
print("ok", threading.get_ident.__module__)
"""


def test_the_same_code_runs_on_greenlets_under_gevent(tmp_path: Path) -> None:
    pytest.importorskip("gevent")
    done = subprocess.run(
        [sys.executable, "-c", GEVENT_SCRIPT, str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ok", "gevent.thread"]  # the threads were greenlets
