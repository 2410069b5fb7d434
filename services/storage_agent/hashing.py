"""Piece verification off the event loop: SHA-1 in worker threads, one piece or a whole recheck.

Strategy: hashlib releases the GIL on buffers over 2 KiB, so hashing in native threads runs in
parallel with the event loop and with each other (~2 GB/s per core). The verifier takes a pool
of worker threads from its owner: in the storage agent that is a gevent threadpool, the piece
pool of ``hash_threads`` workers (``spawn(fn) -> AsyncResult``, whose ``get()`` yields to
other greenlets while waiting), in plain code and tests a ``concurrent.futures`` executor
(``submit(fn) -> Future``). ``TaskPool`` hides the difference, so nothing here imports gevent.

Rules:
- Results and progress callbacks are delivered in the caller's thread (or greenlet), never in a
  worker: the caller may touch its own state from the callback without locks. A task's
  exception is re-raised there too (on a gevent pool it travels back as a value, so that the
  hub does not print the traceback of an error the caller handles).
- A recheck keeps at most ``max_in_flight`` pieces (default: two per usable core) submitted; each
  running task reads into a buffer taken from a free list, so its memory is at most
  ``max_in_flight * piece_length`` (in practice one buffer per worker) whatever the torrent size.
- Missing data (a missing, short or misplaced file) makes a piece missing. A disk failure
  (``io_error``, ``permission_denied`` ...) stops the recheck with its ``StorageError``: a
  recheck that silently skipped unreadable pieces would tell the user nothing about the disk.
- A recheck that ends early (an error, a cancellation, or its greenlet killed) first waits for
  the pieces still in flight, so no worker touches the store after ``recheck`` has returned or
  raised.
- A recheck may cover only some pieces (fast resume hashes the pieces of changed files); its
  result is built once at the end, never piece by piece (adding one bit to a big-integer set
  copies it: quadratic for a torrent of a million pieces).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar, cast

from torviz.shared.bitfield import Bitfield
from torviz.shared.metainfo import InfoDict

from .core.errors import StorageError
from .core.storage import MISSING_DATA_REASONS, Buffer, Storage

__all__ = [
    "INLINE_HASH_BELOW",
    "CheckCancelledError",
    "PieceVerifier",
    "ProgressCallback",
    "SpawnPool",
    "TaskPool",
    "sha1_matches",
]

T = TypeVar("T")

INLINE_HASH_BELOW = 64 * 1024
"""Buffers smaller than this are hashed in the caller: handing them to a thread (tens of
microseconds) costs more than hashing them."""

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(pieces_done, pieces_total)`` after each piece, in order."""


class CheckCancelledError(Exception):
    """A recheck stopped early because its caller asked it to."""


class _AsyncResult(Protocol):
    def get(self, block: bool = ..., timeout: float | None = ...) -> Any: ...


class SpawnPool(Protocol):
    """The part of ``gevent.threadpool.ThreadPool`` (``gevent.get_hub().threadpool``) used here."""

    def spawn(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> _AsyncResult: ...


class TaskPool:
    """Runs functions on worker threads of either a ``concurrent.futures.Executor`` or a
    gevent-style threadpool.

    Args:
        pool: an ``Executor`` (``submit``) or an object with ``spawn`` returning something with
            ``get()`` (gevent's hub threadpool).
        workers: how many threads the pool runs; read from the pool when omitted
            (``_max_workers`` of a ``ThreadPoolExecutor``, ``maxsize`` of a gevent pool), else
            the number of CPUs.
    """

    def __init__(self, pool: Executor | SpawnPool, workers: int | None = None) -> None:
        self._pool = pool
        if workers is None:
            found = getattr(pool, "_max_workers", None) or getattr(pool, "maxsize", None)
            workers = found if isinstance(found, int) and found > 0 else (os.cpu_count() or 1)
        if workers < 1:
            raise ValueError("a task pool needs at least one worker")
        self.workers = workers

    def submit(self, fn: Callable[[], T]) -> Callable[[], T]:
        """Start ``fn`` on a worker; returns a function that waits for its result (re-raising
        its exception)."""
        if isinstance(self._pool, Executor):
            return self._pool.submit(fn).result
        # gevent's pool prints the traceback of any exception a task raises, even one the
        # caller expects (a full disk): the task hands its exception back as a value instead.
        result = self._pool.spawn(_captured, fn)

        def wait() -> T:
            ok, value = result.get()
            if not ok:
                raise value
            return cast(T, value)

        return wait

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on a worker and wait for its result."""
        return self.submit(fn)()


def _captured(fn: Callable[[], T]) -> tuple[bool, T | Exception]:
    """Run ``fn`` on a worker: ``(True, result)`` or ``(False, the exception it raised)``."""
    try:
        return True, fn()
    except Exception as exc:
        return False, exc


def sha1_matches(data: Buffer, expected: bytes) -> bool:
    """True if the SHA-1 of ``data`` is ``expected`` (runs in the calling thread)."""
    return hashlib.sha1(data, usedforsecurity=False).digest() == expected


class PieceVerifier:
    """Verifies pieces against their SHA-1 in worker threads.

    Args:
        pool: the worker threads (see ``TaskPool``); a ``TaskPool`` is accepted as is.
        max_in_flight: pieces a recheck keeps submitted at once; default two per worker, counting
            at most one worker per CPU, so a worker finds the next piece queued when it finishes.
    """

    def __init__(
        self, pool: Executor | SpawnPool | TaskPool, *, max_in_flight: int | None = None
    ) -> None:
        self._pool = pool if isinstance(pool, TaskPool) else TaskPool(pool)
        # Two per core that can run at once: more threads than cores only fight over the GIL
        # (measured on 2 cores, gevent's 10-thread hub pool: 20 pieces in flight let a 1 ms
        # ticker greenlet run ~400 times a second, 4 in flight ~650, at the same throughput).
        cores = min(self._pool.workers, os.cpu_count() or 1)
        self._max_in_flight = 2 * cores if max_in_flight is None else max_in_flight
        if self._max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")

    @property
    def max_in_flight(self) -> int:
        return self._max_in_flight

    def verify(self, data: Buffer, expected: bytes) -> bool:
        """True if ``data`` hashes to ``expected``; big buffers are hashed on a worker thread.

        Args:
            data: the piece (a memoryview over a received frame is fine: it is not copied).
            expected: the 20-byte SHA-1 from the torrent.

        Raises:
            ValueError: ``expected`` is not 20 bytes.
        """
        if len(expected) != 20:
            raise ValueError("a piece hash is exactly 20 bytes")
        if memoryview(data).nbytes < INLINE_HASH_BELOW:
            return sha1_matches(data, expected)
        return self._pool.run(lambda: sha1_matches(data, expected))

    def recheck(
        self,
        storage: Storage,
        info: InfoDict,
        progress: ProgressCallback | None = None,
        *,
        pieces: Iterable[int] | None = None,
        count: int | None = None,
        cancelled: Callable[[], bool] | None = None,
    ) -> Bitfield:
        """Hash pieces on disk and return the set of those whose data is correct.

        Pieces are read and hashed on the workers, ``max_in_flight`` at a time; results are
        collected in order, so ``progress`` sees 1, 2, ... up to the number of pieces checked.

        Args:
            storage: the store to read from (its reads must be safe from several threads).
            info: the torrent whose piece hashes are checked.
            progress: called as ``progress(done, total)`` in the caller after each piece.
            pieces: the pieces to check, in increasing order; every piece when omitted.
            count: how many ``pieces`` there are (the ``total`` given to ``progress``).
            cancelled: asked before each piece is submitted; True stops the recheck.

        Returns:
            A ``Bitfield`` (of every piece of the torrent) of the checked pieces that match.

        Raises:
            StorageError: a read failed for a reason other than missing data.
            CheckCancelledError: ``cancelled`` returned True.
        """
        size = info.num_pieces
        if storage.info.num_pieces != size:
            raise ValueError("the store belongs to a torrent with a different piece count")
        if pieces is None:
            pieces, count = range(size), size
        total = count if count is not None else size
        good = bytearray((size + 7) // 8)  # bit i of byte i // 8 is piece i: one int at the end
        pending: deque[tuple[int, Callable[[], bool]]] = deque()
        buffers: list[bytearray] = []
        done = 0
        try:
            for piece in pieces:
                if cancelled is not None and cancelled():
                    raise CheckCancelledError(f"check stopped after {done} of {total} pieces")
                if len(pending) >= self._max_in_flight:
                    done = self._collect(pending, good, done, total, progress)
                expected = info.piece_hash(piece)
                check = _checker(storage, piece, expected, buffers)
                pending.append((piece, self._pool.submit(check)))
            while pending:
                done = self._collect(pending, good, done, total, progress)
        finally:
            # Only reached with pieces pending when something raised: let the workers finish.
            # The first error is already propagating; later ones add nothing.
            for _, wait in pending:
                with contextlib.suppress(Exception):
                    wait()
        return Bitfield.from_int(int.from_bytes(good, "little"), size)

    @staticmethod
    def _collect(
        pending: deque[tuple[int, Callable[[], bool]]],
        good: bytearray,
        done: int,
        total: int,
        progress: ProgressCallback | None,
    ) -> int:
        piece, wait = pending[0]
        matched = wait()
        pending.popleft()
        if matched:
            good[piece >> 3] |= 1 << (piece & 7)
        done += 1
        if progress is not None:
            progress(done, total)
        return done


def _checker(
    storage: Storage, piece: int, expected: bytes, buffers: list[bytearray]
) -> Callable[[], bool]:
    """The work of one piece on a worker: read it into a reused buffer, hash it, compare.

    ``buffers`` is the recheck's free list; ``list.pop``/``append`` are atomic, so the workers
    share it without a lock, and it never holds more buffers than tasks ran at once.
    """

    def check() -> bool:
        try:
            buffer = buffers.pop()
        except IndexError:
            buffer = bytearray(storage.info.piece_length)
        try:
            return sha1_matches(storage.read_piece_into(piece, buffer), expected)
        except StorageError as exc:
            if exc.reason in MISSING_DATA_REASONS:
                return False
            raise
        finally:
            buffers.append(buffer)

    return check
