"""Piece verification and recheck in worker threads, with plain executors and under gevent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from torviz.services.storage_agent.core.errors import StorageError
from torviz.services.storage_agent.hashing import (
    CheckCancelledError,
    PieceVerifier,
    TaskPool,
    sha1_matches,
)
from torviz.services.storage_agent.memory import MemoryStorage
from torviz.services.storage_agent.store import FileStorage
from torviz.shared.bitfield import Bitfield

from .conftest import NAME, Layout, StoreFactory, build, multi_file_layout


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def test_verify_small_and_large_buffers(executor):
    verifier = PieceVerifier(executor)
    for size in (1, 2048, 64 * 1024, 1 << 20):
        data = os.urandom(size)
        digest = hashlib.sha1(data).digest()
        assert verifier.verify(data, digest)
        assert verifier.verify(memoryview(bytearray(data)), digest)
        assert not verifier.verify(data[:-1] + bytes([data[-1] ^ 1]), digest)
    with pytest.raises(ValueError):
        verifier.verify(b"x", b"short")


def test_large_buffers_are_hashed_on_a_worker(executor):
    threads: set[int] = set()

    def spy() -> bool:  # what the verifier hands the pool is run where the pool runs it
        threads.add(threading.get_ident())
        return True

    assert TaskPool(executor).run(spy)
    assert threading.get_ident() not in threads
    assert TaskPool(executor).workers == 2
    assert PieceVerifier(executor).max_in_flight == 2 * min(2, os.cpu_count() or 1)


def test_task_pool_reraises_the_worker_error(executor):
    def fail() -> None:
        raise StorageError("io_error", "boom")

    with pytest.raises(StorageError):
        TaskPool(executor).run(fail)


def write_some(store, layout: Layout, pieces) -> None:
    for piece in pieces:
        store.write_piece(piece, layout.piece(piece))


def test_recheck_finds_exactly_the_pieces_present(make_store: StoreFactory, executor):
    layout = multi_file_layout()
    store = make_store(layout.info)
    written = [0, 1, 2, 3, 4, 5, 8, 9]  # e.bin is 8..12; 6 and 7 are all padding
    write_some(store, layout, written)
    # Corrupt one byte of piece 3, inside c.bin, through the same door the data came in.
    bad = bytearray(layout.piece(3))
    bad[500] ^= 0xFF
    store.write_piece(3, bad)
    calls: list[tuple[int, int, int]] = []

    def progress(done: int, total: int) -> None:
        calls.append((done, total, threading.get_ident()))

    have = PieceVerifier(executor).recheck(store, layout.info, progress)
    # Padding-only pieces 6 and 7 hash correctly without any file; 10-12, the rest of e.bin,
    # were never written.
    assert have == Bitfield(13, [0, 1, 2, 4, 5, 6, 7, 8, 9])
    assert [(done, total) for done, total, _ in calls] == [(n, 13) for n in range(1, 14)]
    assert {thread for _, _, thread in calls} == {threading.get_ident()}


def test_recheck_of_a_complete_download(make_store: StoreFactory, executor):
    layout = build([(NAME, 50_000)], 1024, single=True)
    store = make_store(layout.info)
    write_some(store, layout, range(layout.info.num_pieces))
    have = PieceVerifier(executor, max_in_flight=3).recheck(store, layout.info)
    assert have.complete


def test_recheck_of_nothing_on_disk(make_store: StoreFactory, executor):
    layout = build([("a", 3000), ("b/c", 4000)], 1024)
    store = make_store(layout.info)
    assert len(PieceVerifier(executor).recheck(store, layout.info)) == 0


def test_recheck_keeps_in_flight_pieces_bounded(executor):
    layout = build([(NAME, 64 * 1024)], 1024, single=True)
    started = 0
    lock = threading.Lock()

    class CountingStorage(MemoryStorage):
        def read_piece_into(self, piece: int, buffer: bytearray | memoryview) -> memoryview:
            nonlocal started
            with lock:
                started += 1
            return super().read_piece_into(piece, buffer)

    store = CountingStorage(layout.info)
    write_some(store, layout, range(64))
    peak = 0

    def progress(done: int, total: int) -> None:
        nonlocal peak
        with lock:
            peak = max(peak, started - done)

    verifier = PieceVerifier(executor, max_in_flight=3)
    assert verifier.recheck(store, layout.info, progress).complete
    assert 0 < peak <= 3 - 1  # the next piece is submitted only after one is collected


def test_recheck_of_some_pieces_reports_their_own_progress(executor):
    layout = multi_file_layout()
    store = MemoryStorage(layout.info)
    write_some(store, layout, range(layout.info.num_pieces))
    seen: list[tuple[int, int]] = []
    have = PieceVerifier(executor).recheck(
        store, layout.info, lambda d, t: seen.append((d, t)), pieces=iter([2, 3, 9]), count=3
    )
    assert have == Bitfield(13, [2, 3, 9])  # only what was checked, in a bitfield of 13
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_a_cancelled_recheck_stops_and_leaves_no_worker_running(executor):
    layout = build([(NAME, 64 * 1024)], 1024, single=True)
    store = MemoryStorage(layout.info)
    write_some(store, layout, range(64))
    done: list[int] = []
    verifier = PieceVerifier(executor, max_in_flight=2)
    with pytest.raises(CheckCancelledError):
        verifier.recheck(
            store, layout.info, lambda d, t: done.append(d), cancelled=lambda: bool(done)
        )
    assert done == [1]  # stopped at once; the pieces in flight were waited for, not reported


def test_recheck_treats_misplaced_entries_as_missing(tmp_path, executor):
    layout = multi_file_layout()
    folder = tmp_path / "downloads" / NAME
    folder.mkdir(parents=True)
    os.mkfifo(folder / "a.bin")  # a FIFO where a.bin belongs: pieces 0-2 missing, no hang
    (folder / "d").write_bytes(b"")  # a file where the folder of e.bin belongs
    store = FileStorage(layout.info, str(tmp_path / "downloads"))
    try:
        write_some(store, layout, [3, 4, 5])
        have = PieceVerifier(executor).recheck(store, layout.info)
    finally:
        store.close()
    assert have == Bitfield(13, [3, 4, 5, 6, 7])  # c.bin and the padding


def test_recheck_stops_on_a_refused_path(tmp_path, executor):
    layout = multi_file_layout()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "downloads" / NAME).mkdir(parents=True)
    (tmp_path / "downloads" / NAME / "d").symlink_to(outside, target_is_directory=True)
    store = FileStorage(layout.info, str(tmp_path / "downloads"))
    try:
        with pytest.raises(StorageError) as caught:
            PieceVerifier(executor).recheck(store, layout.info)
    finally:
        store.close()
    assert caught.value.reason == "path_escapes_download_dir"


def test_sha1_matches():
    assert sha1_matches(b"abc", bytes.fromhex("a9993e364706816aba3e25717850c26c9cd0d89d"))
    assert not sha1_matches(b"abd", bytes.fromhex("a9993e364706816aba3e25717850c26c9cd0d89d"))


_GEVENT_CHILD = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import hashlib, json, os, sys, tempfile
    import gevent
    from torviz.services.storage_agent.hashing import PieceVerifier
    from torviz.services.storage_agent.store import FileStorage
    from torviz.shared.metainfo import parse_info_dict

    info = parse_info_dict(open(sys.argv[1], "rb").read())
    content = open(sys.argv[2], "rb").read()
    pool = gevent.get_hub().threadpool
    verifier = PieceVerifier(pool)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(1) or gevent.sleep(0.001) for _ in range(10**6)])
    store = FileStorage(info, sys.argv[3])
    for piece in range(info.num_pieces):
        data = content[piece * info.piece_length : (piece + 1) * info.piece_length]
        if piece != 2:
            assert verifier.verify(memoryview(data), info.piece_hash(piece))
            pool.spawn(store.write_piece, piece, data).get()
    progress = []
    have = verifier.recheck(store, info, lambda done, total: progress.append(done))
    pool.spawn(store.close).get()
    ticker.kill()
    print(json.dumps({"have": sorted(have), "progress": progress, "workers": verifier.max_in_flight,
                      "ticks": len(ticks)}))
    """
)


def test_under_gevent_with_the_hub_threadpool(tmp_path):
    """The service's setting: monkey-patched process, hashing and I/O on the hub threadpool."""
    from torviz.shared.bencode import encode

    layout = build([(NAME, 8 * 256 * 1024)], 256 * 1024, single=True)
    info = {
        b"name": NAME,
        b"piece length": layout.info.piece_length,
        b"pieces": layout.info.piece_hashes,
        b"length": len(layout.content),
    }
    (tmp_path / "info").write_bytes(encode(info))
    (tmp_path / "content").write_bytes(layout.content)
    args = [str(tmp_path / "info"), str(tmp_path / "content"), str(tmp_path / "dl")]
    child = subprocess.run(
        [sys.executable, "-c", _GEVENT_CHILD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["have"] == [0, 1, 3, 4, 5, 6, 7]
    assert result["progress"] == list(range(1, 9))
    assert result["ticks"] > 0  # other greenlets ran while the work was on the threads


_RAISING_CHILD = textwrap.dedent(
    """
    from gevent import monkey

    monkey.patch_all()

    import gevent
    from torviz.services.storage_agent.core.errors import StorageError
    from torviz.services.storage_agent.hashing import TaskPool

    def fail():
        raise StorageError("disk_full", "disk full writing 'a' (ENOSPC)")

    pool = TaskPool(gevent.get_hub().threadpool)
    try:
        pool.run(fail)
    except StorageError as exc:
        print(exc.reason)
    print(pool.run(lambda: 42))
    """
)


def test_a_task_error_is_raised_in_the_caller_and_not_printed_by_gevent():
    child = subprocess.run(
        [sys.executable, "-c", _RAISING_CHILD],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["disk_full", "42"]
    assert child.stderr == ""  # no traceback from gevent's hub for an error the caller handles
