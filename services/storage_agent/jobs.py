"""The storage agent's jobs: greenlets that wait on worker threads and return what happened.

Strategy: the actor never blocks, so each piece of blocking work (``tasks``) is driven by a job
function running in its own greenlet. A job hands the work to a threadpool, waits for it (which
lets every other greenlet run), and returns a small frozen result: ``Opened``/``OpenFailed``,
``PieceDone``, ``Closed``, or the reply to a block read. The actor spawns the job, sends the
result to its own inbox, and changes its state only there.

Rules:
- Jobs never touch the actor's state; everything they need comes in as arguments.
- A job never raises for a failure of the work: the failure is part of its result (a bug is
  logged with its traceback by the actor, from the exception kept in the result).
- Threadpools: opening, closing and block reads use the hub's pool; hashing and writing pieces
  use the pool the actor passes in (``hash_threads`` workers), so a burst of pieces never makes
  a block read wait for a free thread.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gevent

from shared.bitfield import Bitfield
from shared.bus import BlockRead, OpenTorrent, ReadBlock, ReadFailed, StorePiece
from shared.runtime.logging import with_context
from shared.types import InfoHash

from . import tasks
from .hashing import PieceVerifier, TaskPool
from .store import FileStorage, Storage

__all__ = [
    "BlockReply",
    "Closed",
    "OpenFailed",
    "Opened",
    "PieceDone",
    "close_job",
    "close_quietly",
    "on_hub",
    "open_job",
    "piece_job",
    "read_job",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_NAME = 256  # bounds of the bus schema's Name and Text fields
_MAX_TEXT = 4096


@dataclass(frozen=True, slots=True)
class Opened:
    """A torrent's files are open; ``have`` holds the pieces found correct on disk."""

    info_hash: InfoHash
    storage: FileStorage
    have: Bitfield


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """Opening failed; nothing of the torrent stays open."""

    info_hash: InfoHash
    error: Exception


@dataclass(frozen=True, slots=True)
class PieceDone:
    """A piece was hashed: ``matched`` and written, not matched (nothing written), or ``error``
    while writing."""

    info_hash: InfoHash
    piece: int
    contributors: tuple[str, ...]
    matched: bool
    error: Exception | None


@dataclass(frozen=True, slots=True)
class Closed:
    """A torrent's files are closed; ``error`` if the flush before failed."""

    info_hash: InfoHash
    error: Exception | None


@dataclass(frozen=True, slots=True)
class BlockReply:
    """The answer to a ``ReadBlock``: ``BlockRead`` with its bytes, or ``ReadFailed``."""

    message: BlockRead | ReadFailed
    data: bytes | None


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


def open_job(
    request: OpenTorrent,
    old: Storage | None,
    *,
    preallocate: bool,
    verifier: PieceVerifier,
    before: Callable[[], None] | None = None,
) -> Opened | OpenFailed:
    """Open a torrent's files, rechecking any data already there.

    Args:
        request: the coordinator's request (hash, raw info dict, save path).
        old: the store of a failed earlier opening, closed first.
        preallocate: reserve each file's size on creation.
        verifier: hashes the existing data on its workers.
        before: called first (the actor waits there for the torrent's pieces in flight).
    """
    info_hash = request.info_hash
    storage: FileStorage | None = None
    started = time.monotonic()
    try:
        if before is not None:
            before()
        if old is not None:
            on_hub(close_quietly, old)
        storage = on_hub(
            tasks.open_storage,
            info_hash,
            request.raw_info,
            request.save_path,
            preallocate=preallocate,
        )
        info = storage.info
        if on_hub(tasks.has_existing_data, storage):
            have = verifier.recheck(storage, info)
            with_context(log, info_hash=info_hash).info(
                "rechecked %d pieces in %.2fs: %d correct",
                info.num_pieces,
                time.monotonic() - started,
                len(have),
            )
        else:
            have = Bitfield(info.num_pieces)
    except Exception as exc:
        if storage is not None:
            on_hub(close_quietly, storage)
        return OpenFailed(info_hash, exc)
    return Opened(info_hash, storage, have)


def close_job(
    info_hash: InfoHash, storage: Storage | None, *, before: Callable[[], None] | None = None
) -> Closed:
    """Flush and close a torrent's store (after ``before``, which waits for its jobs)."""
    if before is not None:
        before()
    if storage is None:
        return Closed(info_hash, None)
    try:
        on_hub(tasks.close_storage, storage)
    except Exception as exc:
        return Closed(info_hash, exc)
    return Closed(info_hash, None)


def piece_job(
    pool: TaskPool,
    storage: Storage,
    request: StorePiece,
    data: memoryview,
    expected: bytes,
) -> PieceDone:
    """Hash a received piece and write it if it matches, on one of ``pool``'s workers."""
    error: Exception | None = None
    matched = False
    try:
        matched = pool.run(
            functools.partial(tasks.verify_and_write, storage, request.piece, data, expected)
        )
    except Exception as exc:
        error = exc
    return PieceDone(request.info_hash, request.piece, request.contributors, matched, error)


def read_job(storage: Storage, request: ReadBlock) -> BlockReply:
    """Read the block a peer agent asked for (the caller checked that the piece is verified)."""
    try:
        data = on_hub(tasks.read_block, storage, request.piece, request.offset, request.length)
    except Exception as exc:
        if not tasks.is_expected_failure(exc):
            log.error("reading a block failed", exc_info=exc)
        reason = str(getattr(exc, "reason", "internal_error"))
        return BlockReply(
            ReadFailed(request.request_id, reason[:_MAX_NAME], str(exc)[:_MAX_TEXT]), None
        )
    reply = BlockRead(request.request_id, request.info_hash, request.piece, request.offset)
    return BlockReply(reply, data)
