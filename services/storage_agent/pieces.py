"""The storage agent's piece path in one place: from the data socket to the answers it sends.

A ``StorePiece`` (and its data frame) goes through five steps, each one method of ``Pieces``:

1. receive (``admit``, in the data socket's receiver greenlet): take a piece slot, then hand
   the message to the actor's inbox. Waiting for a slot is the backpressure: while every
   ``pieces_in_flight`` slot is taken nothing more is read from the socket, the piece frames
   wait in ZeroMQ's queue (high-water mark ``data_hwm`` messages), then in the senders' own
   queues, so memory stays bounded by ``(pieces_in_flight + data_hwm * peers) * piece size``.
2. check (``store``, in the actor): the torrent table admits the piece (open, in range, of the
   right length, not verified yet) and its block senders must fit its blocks; a refused piece
   is answered ``PieceStored(reason)`` at once, ``already_verified`` with reason "" (nothing is
   left to do for it).
3. hash and write (``hash_and_write``, one task on the piece pool of ``hash_threads`` workers,
   driven by a greenlet of the torrent's job group, which a close or recheck waits for): the
   SHA-1 of the received frame, a zero-copy memoryview; written through the ``Storage``
   interface (``core.storage``) only if it matches; the block digests too when the smart ban
   needs them. The slot is freed when the task ends; ``PieceDone`` goes back to the inbox.
4. record (``done``, in the actor): a matching piece joins the torrent's verified set (and the
   resume record at the next flush, once its file was fdatasynced); the digests of a failed
   piece from several senders wait in the ``BlockLedger``; a write error stops the torrent
   (``FAILED``) and flushes at once what was verified before it.
5. answer, to the coordinator first: ``PieceVerified`` (then ``CorruptBlocksTraced`` when this
   copy judged earlier failed copies), ``PieceRejected(contributors)`` or ``StorageFailed``;
   then ``PieceStored`` to the sender (reason "", or ``write_failed``), which keeps the piece
   until then and may send it again after a passing refusal such as ``torrent_checking``.

A ``ReadBlock`` takes the same way with its own, larger slot count (``reads_in_flight``): check
(verified pieces only), read on the hub's threadpool, answer ``BlockRead`` and its bytes, or
``ReadFailed``.

Rules:
- The inbox never blocks: ``store``, ``done`` and ``read`` only decide and spawn; hashing,
  writing and reading run on worker threads.
- Nothing is written for a piece whose SHA-1 does not match, and a piece counts only once it is
  written and recorded: a ``ReadBlock`` that follows its ``PieceVerified`` is served.
- A piece that verifies while its torrent is rechecked is recorded but not reported: the
  recheck's ``TorrentOpened`` is the one answer that counts.
- Malformed or impossible requests (unknown torrent, bad length, piece out of range) come from
  a buggy or hostile sender: dropped and logged (the first few, then every 1000th), never a
  crash; the races of an endgame or a recheck (``already_verified``, ``torrent_checking``) are
  logged quietly.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import gevent.lock
import gevent.pool
import pykka

from torviz.shared.bus import (
    BLOCK_LENGTH,
    BlockRead,
    CorruptBlocksTraced,
    Message,
    PieceRejected,
    PieceStored,
    PieceVerified,
    ReadBlock,
    ReadFailed,
    StorePiece,
    StoreRefusal,
    clip_name,
    clip_text,
)
from torviz.shared.runtime.logging import ContextAdapter, with_context
from torviz.shared.runtime.sockets import Incoming
from torviz.shared.types import InfoHash

from .core.errors import is_expected_failure, storage_failed
from .core.smart_ban import BlockLedger, block_digests, senders_of_blocks
from .core.storage import Buffer, Storage
from .core.torrents import Phase, Refusal, Torrent, TorrentTable
from .hashing import TaskPool, sha1_matches
from .jobs import on_hub
from .settings import AgentSettings

__all__ = ["PieceDone", "Pieces", "hash_and_write"]

log = logging.getLogger(__name__)

_LOUD_REFUSALS = 10  # refused data requests logged at warning before going quiet
_QUIET_REFUSALS = frozenset({"already_verified", "torrent_checking"})  # expected in a race

Reply = Callable[[Message, bytes, bytes | None], None]
"""Sends a message (and its data frame, if any) to a peer agent on the data socket."""


@dataclass(frozen=True, slots=True)
class PieceDone:
    """A piece was hashed: ``matched`` and written, not matched (nothing written), or ``error``
    while writing."""

    info_hash: InfoHash
    piece: int
    contributors: tuple[str, ...]
    matched: bool
    error: Exception | None
    sender: bytes | None = None
    """The data-endpoint identity of the peer agent that sent it: it hears ``PieceStored``."""
    block_senders: tuple[str, ...] = ()
    """The peer key that sent each 16 KiB block."""
    digests: tuple[bytes, ...] | None = None
    """The SHA-1 of each block, when the smart ban needs them (a failed piece from several
    senders, or a verified copy of a piece that failed so)."""


def hash_and_write(
    storage: Storage,
    piece: int,
    data: Buffer,
    expected: bytes,
    *,
    trace: bool = False,
    several: bool = False,
) -> tuple[bool, tuple[bytes, ...] | None]:
    """Hash a whole piece, write it if it matches, and hash its blocks if the smart ban asks
    (runs on a worker thread).

    Args:
        storage: the torrent's store.
        piece: the piece index (checked by the caller against the torrent).
        data: exactly the piece's bytes; a memoryview is hashed and written without a copy.
        expected: the piece's 20-byte SHA-1 from the torrent.
        trace: hash the blocks of a matching piece (an earlier copy failed with several
            senders, and this one judges it).
        several: hash the blocks of a piece that does not match (its blocks came from more
            than one sender: a later good copy will judge them).

    Returns:
        Whether the piece matched (and is written; nothing is written when it did not), and
        its block digests when they were asked for.

    Raises:
        StorageError: the write failed (``disk_full``, ``io_error`` ...).
    """
    matched = sha1_matches(data, expected)
    if matched:
        storage.write_piece(piece, data)
    wanted = trace if matched else several
    return matched, block_digests(memoryview(data), BLOCK_LENGTH) if wanted else None


def _torrent_log(info_hash: InfoHash) -> ContextAdapter:
    return with_context(log, info_hash=info_hash)


class Pieces:
    """The data endpoint's work: pieces in (hashed, written, recorded, answered), blocks out.

    Owned by the actor; ``admit`` runs in the data socket's receiver greenlet, every other
    method in the actor's inbox, jobs in their own greenlets.

    Args:
        settings: the slot counts (``piece_slots``, ``reads_in_flight``).
        torrents: the actor's table of torrents (read and changed only from its inbox).
        pool: the piece pool's workers (hashing and writing).
        stopping: True once the agent stops: new pieces and reads are refused.
        jobs_of: the job group of a torrent, which a close or a recheck waits for.
        flush: flushes a torrent and records its verified pieces (after a write error).
        send: sends an event to the coordinator.
        reply: sends a message (and data frame) to a peer agent on the data socket.
        tell: sends a job's result to the actor's inbox.
    """

    def __init__(
        self,
        settings: AgentSettings,
        torrents: TorrentTable,
        pool: TaskPool,
        *,
        stopping: Callable[[], bool],
        jobs_of: Callable[[InfoHash], gevent.pool.Group],
        flush: Callable[[Torrent], None],
        send: Callable[[Message], None],
        reply: Reply,
        tell: Callable[[object], None],
    ) -> None:
        self._torrents = torrents
        self._pool = pool
        self._stopping = stopping
        self._jobs_of = jobs_of
        self._flush = flush
        self._send = send
        self._reply = reply
        self._tell = tell
        self._piece_slots = gevent.lock.BoundedSemaphore(settings.piece_slots)
        self._read_slots = gevent.lock.BoundedSemaphore(settings.reads_in_flight)
        self._ledger = BlockLedger()
        self._refused = 0

    # -- 1. receive -----------------------------------------------------------------------------

    def admit(self, incoming: Incoming, deliver: Callable[[Incoming], None]) -> None:
        """The data socket's handler, in its receiver greenlet: wait for a slot, then
        ``deliver`` the message to the actor (``ActorRef.tell``).

        Waiting here is the backpressure: while it waits, nothing more is read from the socket.
        """
        slots: gevent.lock.BoundedSemaphore | None = None
        if isinstance(incoming.message, StorePiece):
            slots = self._piece_slots
        elif isinstance(incoming.message, ReadBlock):
            slots = self._read_slots
        if slots is not None:
            slots.acquire()
        try:
            deliver(incoming)
        except pykka.ActorDeadError:
            if slots is not None:
                slots.release()

    # -- 2. check -------------------------------------------------------------------------------

    def store(self, request: StorePiece, data: memoryview, sender: bytes) -> None:
        """Admit a piece and start hashing it; its slot is freed when the job ends.

        The sender hears ``PieceStored`` once the piece is dealt with: at once when it is
        refused (``already_verified`` counts as dealt with: reason ""), else after its job.
        """
        spawned = False
        try:
            verdict = (
                Refusal("agent_stopping", "piece while the agent stops")
                if self._stopping()
                else self._torrents.check_piece(request, data.nbytes)
            )
            if isinstance(verdict, Refusal):
                self.refuse(request.info_hash, verdict, quiet=verdict.reason in _QUIET_REFUSALS)
                reason = (
                    StoreRefusal.NONE
                    if verdict.reason == "already_verified"
                    else StoreRefusal.parse(verdict.reason)
                )
                self._reply(PieceStored(request.info_hash, request.piece, reason), sender, None)
                return
            assert verdict.info is not None and verdict.storage is not None
            blocks = -(-data.nbytes // BLOCK_LENGTH)
            senders = senders_of_blocks(request.contributors, request.block_senders, blocks)
            if senders is None:
                refusal = Refusal(
                    StoreRefusal.BAD_BLOCK_SENDERS,
                    f"piece {request.piece}: block senders do not fit its {blocks} blocks",
                )
                self.refuse(request.info_hash, refusal)
                stored = PieceStored(
                    request.info_hash, request.piece, StoreRefusal.BAD_BLOCK_SENDERS
                )
                self._reply(stored, sender, None)
                return
            expected = verdict.info.piece_hash(request.piece)
            trace = self._ledger.wants(request.info_hash, request.piece)
            self._jobs_of(request.info_hash).spawn(
                self._hash_and_write,
                verdict.storage,
                request,
                data,
                expected,
                sender,
                senders,
                trace,
            )
            spawned = True
        finally:
            if not spawned:
                self._piece_slots.release()

    # -- 3. hash and write ----------------------------------------------------------------------

    def _hash_and_write(
        self,
        storage: Storage,
        request: StorePiece,
        data: memoryview,
        expected: bytes,
        sender: bytes,
        senders: tuple[str, ...],
        trace: bool,
    ) -> None:
        """The piece's job greenlet: one task on the piece pool, then the result to the inbox."""
        error: Exception | None = None
        matched = False
        digests: tuple[bytes, ...] | None = None
        try:
            work = functools.partial(
                hash_and_write,
                storage,
                request.piece,
                data,
                expected,
                trace=trace,
                several=len(set(senders)) > 1,
            )
            matched, digests = self._pool.run(work)
        except Exception as exc:
            error = exc
        finally:
            self._piece_slots.release()
        self._tell(
            PieceDone(
                request.info_hash,
                request.piece,
                request.contributors,
                matched,
                error,
                sender,
                senders,
                digests,
            )
        )

    # -- 4. record, 5. answer -------------------------------------------------------------------

    def done(self, done: PieceDone) -> None:
        """A piece's job ended: record it, tell the coordinator, then answer its sender."""
        self._record(done)
        if done.sender is not None:  # after the coordinator heard the verdict
            reason = StoreRefusal.NONE if done.error is None else StoreRefusal.WRITE_FAILED
            self._reply(PieceStored(done.info_hash, done.piece, reason), done.sender, None)

    def _record(self, done: PieceDone) -> None:
        torrent = self._torrents.get(done.info_hash)
        tlog = _torrent_log(done.info_hash)
        if done.error is not None:
            event = storage_failed(done.info_hash, done.error)
            if torrent is not None and torrent.failed(event.message):
                tlog.error(
                    "writing piece %d failed, torrent stopped: %s",
                    done.piece,
                    event.message,
                    exc_info=None if is_expected_failure(done.error) else done.error,
                )
                self._send(event)
                self._flush(torrent)  # record what was verified before the failure
            elif torrent is not None and torrent.phase is Phase.FAILED:
                tlog.debug("writing piece %d failed again: %s", done.piece, event.message)
            else:  # closing or reopening: the piece is simply not verified
                tlog.warning("writing piece %d failed: %s", done.piece, event.message)
        elif not done.matched:
            tlog.warning(
                "piece %d rejected: SHA-1 mismatch (from %s)",
                done.piece,
                ", ".join(done.contributors) or "unknown peers",
            )
            if done.digests is not None:  # several senders: the next good copy judges them
                self._ledger.failed(done.info_hash, done.piece, done.digests, done.block_senders)
            self._send(PieceRejected(done.info_hash, done.piece, done.contributors))
        elif (
            torrent is not None
            and torrent.piece_verified(done.piece)
            and torrent.phase is not Phase.CHECKING  # recorded; the recheck's answer will count
        ):
            self._send(PieceVerified(done.info_hash, done.piece))
            if done.digests is not None:
                self._trace(done.info_hash, done.piece, done.digests)

    def _trace(self, info_hash: InfoHash, piece: int, digests: tuple[bytes, ...]) -> None:
        """A good copy of a piece that failed with several senders: name who lied."""
        verdict = self._ledger.verified(info_hash, piece, digests)
        if not verdict.liars and not verdict.cleared:
            return
        _torrent_log(info_hash).warning(
            "piece %d traced: bad blocks from %s; %s sent only good blocks",
            piece,
            ", ".join(verdict.liars) or "nobody",
            ", ".join(verdict.cleared) or "nobody",
        )
        self._send(CorruptBlocksTraced(info_hash, piece, verdict.liars, verdict.cleared))

    # -- blocks out -----------------------------------------------------------------------------

    def read(self, request: ReadBlock, sender: bytes) -> None:
        """Check a block read and start it; its slot is freed when the read ends."""
        spawned = False
        try:
            verdict = (
                Refusal("agent_stopping", "read while the agent stops")
                if self._stopping()
                else self._torrents.check_read(request)
            )
            if isinstance(verdict, Refusal):
                failed = ReadFailed(request.request_id, verdict.reason, verdict.message)
                self._reply(failed, sender, None)
                return
            assert verdict.storage is not None
            self._jobs_of(request.info_hash).spawn(self._read, verdict.storage, request, sender)
            spawned = True
        finally:
            if not spawned:
                self._read_slots.release()

    def _read(self, storage: Storage, request: ReadBlock, sender: bytes) -> None:
        """The read's job greenlet: the block from the hub's threadpool, then the answer."""
        message: BlockRead | ReadFailed
        data: bytes | None = None
        try:
            data = on_hub(storage.read, request.piece, request.offset, request.length)
        except Exception as exc:
            if not is_expected_failure(exc):
                log.error("reading a block failed", exc_info=exc)
            reason = str(getattr(exc, "reason", "internal_error"))
            message = ReadFailed(request.request_id, clip_name(reason), clip_text(str(exc)))
        else:
            message = BlockRead(
                request.request_id, request.info_hash, request.piece, request.offset
            )
        finally:
            self._read_slots.release()
        self._reply(message, sender, data)

    # -- refusals -------------------------------------------------------------------------------

    def refuse(self, info_hash: InfoHash | None, refusal: Refusal, *, quiet: bool = False) -> None:
        """Log a dropped data request: the first few loudly, then every 1000th."""
        target = _torrent_log(info_hash) if info_hash is not None else log
        if quiet:
            target.debug("dropped: %s", refusal.message)
            return
        self._refused += 1
        if self._refused <= _LOUD_REFUSALS or self._refused % 1000 == 0:
            target.warning(
                "dropped a request from a peer agent (%s, %d so far): %s",
                refusal.reason,
                self._refused,
                refusal.message,
            )
