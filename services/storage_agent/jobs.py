"""The storage agent's torrent jobs: opening, rechecking, flushing and closing, off the inbox.

Strategy: the actor never blocks, so each piece of blocking work on a torrent's files is driven
by a job function running in its own greenlet. A job hands the work to a threadpool, waits for
it (which lets every other greenlet run), and returns a small frozen result:
``Opened``/``OpenFailed``, ``Flushed``, ``Rechecked`` or ``Closed``. ``Control`` spawns the
job, sends the result to the actor's inbox, and changes its state only there. (A piece's own
job, hash and write, lives with the rest of the piece path in ``pieces``.)

Resume state (``Records``) is written by the jobs, in this order, so that a record never claims
a piece whose bytes could still be lost:

- flush (periodic, or after a write error): the actor snapshots the verified pieces, then the
  job fdatasyncs the files, reads their sizes and mtimes, and commits the snapshot.
- open: the record is read, the files are compared with it (``core.fastresume``), only the pieces of
  changed files are hashed, the files holding them are synced, and a new record is committed.
- recheck: the record is deleted first (a crash halfway leaves no record to trust), every piece
  is hashed, the files are synced, and the new record is committed.
- close: flush, then a final record (no write can follow it); with ``delete_files`` the record
  is deleted first and then the files.

Rules:
- Jobs never touch the actor's state; everything they need comes in as arguments (a check's
  ``cancelled`` flag and ``progress`` callback are the actor's, read and called on the loop).
- A job never raises for a failure of the work: the failure is part of its result (a bug is
  logged with its traceback by the actor, from the exception kept in the result).
- Threadpools: opening, closing and flushing use the hub's pool (``on_hub``, as block reads
  do); the hashing of a check uses the piece pool (``hash_threads`` workers, through the
  ``PieceVerifier``); the database has a thread of its own (``Records``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gevent

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    CheckProgress,
    OpenTorrent,
)
from torviz.shared.runtime.logging import with_context
from torviz.shared.types import InfoHash

from .core.fastresume import ResumeRecord, make_record, plan_open, union
from .core.storage import Storage
from .hashing import CheckCancelledError, PieceVerifier, ProgressCallback, TaskPool
from .removal import remove_torrent_files
from .resume import ResumeStore
from .store import FileStorage, open_storage

__all__ = [
    "Closed",
    "Flushed",
    "OpenFailed",
    "Opened",
    "ProgressReporter",
    "Rechecked",
    "Records",
    "close_job",
    "close_quietly",
    "flush_job",
    "on_hub",
    "open_job",
    "recheck_job",
]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Opened:
    """A torrent's files are open; ``have`` holds the pieces found correct on disk.

    ``complete`` is False when the check was cancelled (a close is waiting): ``have`` then
    holds only the pieces trusted or checked before it stopped.
    """

    info_hash: InfoHash
    storage: FileStorage
    have: Bitfield
    complete: bool = True


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """Opening failed; nothing of the torrent stays open."""

    info_hash: InfoHash
    error: Exception


@dataclass(frozen=True, slots=True)
class Flushed:
    """A flush ended: the snapshot of verified pieces is durable and recorded, or ``error``."""

    info_hash: InfoHash
    error: Exception | None


@dataclass(frozen=True, slots=True)
class Rechecked:
    """A recheck ended: ``have`` is the truth, or ``error``; neither when it was cancelled."""

    info_hash: InfoHash
    have: Bitfield | None
    error: Exception | None


@dataclass(frozen=True, slots=True)
class Closed:
    """A torrent's files are closed (or deleted); ``error`` if the flush or deletion failed."""

    info_hash: InfoHash
    error: Exception | None


class Records:
    """The resume store reached through its own worker thread; without one, does nothing.

    Args:
        store: the database, or None when the agent keeps no resume state.
        pool: a one-thread pool: every database call runs there, one at a time.
    """

    def __init__(self, store: ResumeStore | None = None, pool: TaskPool | None = None) -> None:
        if (store is None) != (pool is None):
            raise ValueError("a resume store needs its thread, and only it")
        self._store = store
        self._pool = pool

    @property
    def enabled(self) -> bool:
        return self._store is not None and self._store.enabled

    def load(self, info_hash: InfoHash) -> ResumeRecord | None:
        if self._store is None or self._pool is None:
            return None
        return self._pool.run(functools.partial(self._store.load, info_hash))

    def save(self, record: ResumeRecord) -> None:
        if self._store is not None and self._pool is not None:
            self._pool.run(functools.partial(self._store.save, record))

    def forget(self, info_hash: InfoHash) -> None:
        if self._store is not None and self._pool is not None:
            self._pool.run(functools.partial(self._store.forget, info_hash))

    def close(self) -> None:
        if self._store is not None and self._pool is not None:
            self._pool.run(self._store.close)


class ProgressReporter:
    """Turns a check's per-piece progress into ``CheckProgress`` events, a few per second.

    The first (0 of n) and the last (n of n) always go out; between them at most one per
    ``interval`` seconds.
    """

    def __init__(
        self,
        info_hash: InfoHash,
        emit: Callable[[CheckProgress], None],
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._info_hash = info_hash
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._last = float("-inf")

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if done in (0, total) or now - self._last >= self._interval:
            self._last = now
            self._emit(CheckProgress(self._info_hash, done, total))


def on_hub(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on the hub's threadpool; the calling greenlet waits, the others run.

    Raises:
        Whatever ``fn`` raised, in the calling greenlet.
    """
    return TaskPool(gevent.get_hub().threadpool).run(functools.partial(fn, *args, **kwargs))


def close_quietly(storage: Storage) -> None:
    """Close a store we are giving up on (call on a worker); a failed flush is only logged."""
    try:
        storage.close()
    except Exception as exc:
        log.warning("closing a store failed: %s", exc)


def _record(storage: Storage, info_hash: InfoHash, have: Bitfield, *, final: bool) -> ResumeRecord:
    """The record of ``have`` with the files as they are now (call after the data is synced)."""
    states = on_hub(storage.file_states)
    return make_record(
        info_hash,
        storage.info,
        storage.download_dir,
        have,
        states,
        now_ns=time.time_ns(),
        final=final,
    )


def open_job(
    request: OpenTorrent,
    old: Storage | None,
    *,
    preallocate: bool,
    verifier: PieceVerifier,
    records: Records,
    progress: ProgressCallback,
    cancelled: Callable[[], bool],
    before: Callable[[], None] | None = None,
) -> Opened | OpenFailed:
    """Open a torrent's files, trusting its resume record where the files did not change.

    Args:
        request: the coordinator's request (hash, raw info dict, save path).
        old: the store of a failed earlier opening, closed first.
        preallocate: reserve each file's size on creation.
        verifier: hashes the existing data on its workers.
        records: where the torrent's resume record is read and written.
        progress: told ``(checked, total)`` while pieces are hashed.
        cancelled: True when the check should stop (a close is waiting).
        before: called first (the actor waits there for the torrent's pieces in flight).
    """
    info_hash = request.info_hash
    tlog = with_context(log, info_hash=info_hash)
    storage: FileStorage | None = None
    started = time.monotonic()
    try:
        if before is not None:
            before()
        if old is not None:
            on_hub(close_quietly, old)
        storage = on_hub(
            open_storage,
            info_hash,
            request.raw_info,
            request.save_path,
            preallocate=preallocate,
        )
        info = storage.info
        record = records.load(info_hash)
        plan = plan_open(info, storage.download_dir, record, on_hub(storage.file_states))
        have = plan.trusted
        if plan.check:
            count = plan.check_count
            progress(0, count)
            try:
                found = verifier.recheck(
                    storage, info, progress, pieces=plan.pieces(), count=count, cancelled=cancelled
                )
            except CheckCancelledError as exc:
                tlog.info("check cancelled: %s", exc)
                return Opened(info_hash, storage, have, complete=False)
            have = union(have, found)
            on_hub(storage.sync_files, plan.files_to_sync(info))
            tlog.info(
                "%s: checked %d of %d pieces in %.2fs, %d correct",
                plan.note,
                count,
                info.num_pieces,
                time.monotonic() - started,
                len(found),
            )
        else:
            tlog.info("%s: nothing to check", plan.note)
        if records.enabled:
            records.save(_record(storage, info_hash, have, final=False))
    except Exception as exc:
        if storage is not None:
            on_hub(close_quietly, storage)
        return OpenFailed(info_hash, exc)
    return Opened(info_hash, storage, have)


def recheck_job(
    info_hash: InfoHash,
    storage: Storage,
    *,
    verifier: PieceVerifier,
    records: Records,
    progress: ProgressCallback,
    cancelled: Callable[[], bool],
    before: Callable[[], None] | None = None,
) -> Rechecked:
    """Hash every piece on disk again, trusting nothing, and record the result.

    The record is deleted before the first piece is read: if the agent dies halfway, the next
    open finds no record and checks everything.
    """
    try:
        if before is not None:
            before()
        records.forget(info_hash)
        info = storage.info
        progress(0, info.num_pieces)
        have = verifier.recheck(storage, info, progress, cancelled=cancelled)
        on_hub(storage.sync_files, range(len(info.files)))
        if records.enabled:
            records.save(_record(storage, info_hash, have, final=False))
    except CheckCancelledError:
        return Rechecked(info_hash, None, None)
    except Exception as exc:
        return Rechecked(info_hash, None, exc)
    return Rechecked(info_hash, have, None)


def flush_job(info_hash: InfoHash, storage: Storage, have: Bitfield, records: Records) -> Flushed:
    """Make the pieces of ``have`` durable (fdatasync), then record them.

    ``have`` is the actor's snapshot, taken before this job started: every piece in it was
    written before the flush begins.
    """
    try:
        on_hub(storage.flush)
        if records.enabled:
            records.save(_record(storage, info_hash, have, final=False))
    except Exception as exc:
        return Flushed(info_hash, exc)
    return Flushed(info_hash, None)


def close_job(
    info_hash: InfoHash,
    storage: Storage | None,
    *,
    records: Records,
    have: Bitfield | None,
    delete_files: bool = False,
) -> Closed:
    """Flush and close a torrent's store and record ``have`` as final; or delete its files.

    Args:
        storage: the open store; None for a torrent that is not open (only a deletion, from
            the paths of its resume record, has anything to do then).
        have: the verified pieces to record; None to leave the record alone.
        delete_files: delete the record, then the files and the folders they leave empty.
    """
    try:
        if delete_files:
            record = records.load(info_hash) if storage is None else None
            records.forget(info_hash)  # first: no record may outlive the files it describes
            if storage is not None:
                on_hub(storage.delete_files)
            elif record is not None:
                paths = [(entry.path, entry.padding) for entry in record.files]
                on_hub(remove_torrent_files, record.save_path, paths)
            else:
                with_context(log, info_hash=info_hash).warning(
                    "cannot delete the files of a torrent that is not open and has no resume "
                    "record: nothing deleted"
                )
        elif storage is not None:
            on_hub(storage.close)
            if have is not None and records.enabled:
                records.save(_record(storage, info_hash, have, final=True))
    except Exception as exc:
        return Closed(info_hash, exc)
    return Closed(info_hash, None)
