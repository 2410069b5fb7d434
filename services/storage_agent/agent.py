"""The storage agent's actor: owns the bus and data sockets, the torrents, and the work on files.

Strategy: one pykka actor (a greenlet under gevent) owns every piece of state: the
``TorrentTable``, the two sockets and the ``Control`` that opens, rechecks, flushes and closes
torrents (``control``). Its inbox gets the messages of both sockets (``Incoming``) and the
results of its own jobs. Anything that blocks runs in a job greenlet that waits on a worker
thread and reports back with ``tell``:

- opening (hash check, parse, create folders, compare with the resume record, hash what
  changed), flushing and closing run on the hub's threadpool; hashing and writing pieces, and
  every recheck, on a pool of ``hash_threads`` workers; block reads on the hub's threadpool;
  the resume database (``resume``, with ``--state-dir``) on a thread of its own.
- a piece is hashed and written in one task on a worker, straight from the received frame (a
  zero-copy memoryview); the result comes back to the actor, which records the piece and only
  then tells the coordinator ``PieceVerified`` (so a ``ReadBlock`` that follows it is served).
  It enters the resume record at the next flush (every ``flush_interval`` seconds), after its
  file was fdatasynced.

Backpressure: the data socket's receiver greenlet takes a slot before it hands a ``StorePiece``
to the actor, and the slot is freed when the piece is hashed and written (or dropped). When all
``pieces_in_flight`` slots are taken the receiver stops reading, the piece frames wait in order
in ZeroMQ's queue, whose high-water mark is lowered to ``data_hwm`` messages, and then in the
senders' queues: memory stays bounded by ``(pieces_in_flight + data_hwm * peers) * piece size``
whatever the senders do. ``ReadBlock`` has its own, larger slot count.

Rules:
- The inbox never blocks: no file or hash work in ``on_receive``. A bug while handling one
  message is logged and the agent goes on; remote input never raises out of a handler.
- Malformed or impossible requests on the data endpoint (unknown torrent, bad length, piece out
  of range) come from a buggy or hostile sender: dropped and logged (first few, then every
  1000th), never answered with a crash.
- On ``Shutdown``, a signal, or the parent gone, ``on_stop`` lets pieces in flight finish,
  flushes and closes every torrent and writes its final resume record, all within
  ``stop_timeout`` seconds. A SIGKILL loses only what was in flight: the pieces verified since
  the last flush are still on disk, and the next open finds them (``fastresume``).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.lock
import gevent.pool
import gevent.threadpool
import pykka
import zmq

from shared.bus import (
    CheckProgress,
    CloseTorrent,
    Goodbye,
    Heartbeat,
    Hello,
    HelloPolicy,
    Message,
    OpenTorrent,
    PieceRejected,
    PieceVerified,
    ReadBlock,
    ReadFailed,
    RecheckTorrent,
    Rejected,
    ServiceKind,
    Shutdown,
    StorePiece,
    Welcome,
    make_hello,
)
from shared.runtime.logging import ContextAdapter, with_context
from shared.runtime.service import EXIT_FAILURE, EXIT_OK, ServiceRunner
from shared.runtime.sockets import BusSocket, Incoming
from shared.types import InfoHash

from . import jobs, tasks
from .control import Control
from .hashing import PieceVerifier, TaskPool
from .jobs import Opened, PieceDone, Records, close_quietly, on_hub
from .resume import DATABASE_NAME, ResumeStore
from .settings import AgentSettings
from .store import Storage
from .torrents import Phase, Refusal, TorrentTable

__all__ = ["StorageAgent"]

log = logging.getLogger(__name__)

_LOUD_REFUSALS = 10  # refused data requests logged at warning before going quiet
_QUIET_REFUSALS = frozenset({"already_verified", "torrent_checking"})  # expected in a race


@dataclass(frozen=True, slots=True)
class _FlushDue:
    """Time for the periodic flush."""


def _torrent_log(info_hash: InfoHash) -> ContextAdapter:
    return with_context(log, info_hash=info_hash)


class StorageAgent(pykka.ThreadingActor):
    """The storage agent: verifies and writes pieces, serves blocks, opens and closes torrents.

    Args:
        settings: endpoints, limits and the resume state folder.
        runner: stopped on ``Shutdown`` (exit 0) or a rejected ``Hello`` (exit 1).
    """

    def __init__(self, settings: AgentSettings, runner: ServiceRunner) -> None:
        super().__init__()
        self._settings = settings
        self._runner = runner
        self._torrents = TorrentTable()
        self._piece_slots = gevent.lock.BoundedSemaphore(settings.piece_slots)
        self._read_slots = gevent.lock.BoundedSemaphore(settings.reads_in_flight)
        self._piece_pool = gevent.threadpool.ThreadPool(settings.hash_threads)
        self._piece_tasks = TaskPool(self._piece_pool)
        self._db_pool: gevent.threadpool.ThreadPool | None = None
        self._control = Control(
            settings,
            self._torrents,
            PieceVerifier(self._piece_tasks),
            Records(),
            self._send,
            self._tell,
        )
        self._bus: BusSocket | None = None
        self._data: BusSocket | None = None
        self._heartbeat: gevent.Greenlet[Any, Any] | None = None
        self._flusher: gevent.Greenlet[Any, Any] | None = None
        self._stopping = False
        self._refused = 0
        self.data_endpoint = ""
        """The bound data endpoint, once started."""

    # -- lifetime -------------------------------------------------------------------------------

    def on_start(self) -> None:
        settings = self._settings
        policy = HelloPolicy(
            service=ServiceKind.STORAGE_AGENT,
            server_id=settings.agent_id,
            accepts=frozenset({ServiceKind.PEER_AGENT}),
            heartbeat_interval=settings.data_heartbeat,
        )
        self._data = BusSocket.router(
            self._admit_data, name="storage-data", hello_policy=policy, hwm=settings.data_hwm
        )
        self._bus = BusSocket.dealer(
            self.actor_ref.tell, name="storage-bus", identity=settings.agent_id
        )
        try:
            self.data_endpoint = self._data.bind(settings.data)
            self._bus.connect(settings.bus)
        except zmq.ZMQError as exc:  # a wrong endpoint is the user's to fix: one line, exit 1
            log.error("cannot use endpoint %s or %s: %s", settings.data, settings.bus, exc)
            self._runner.request_stop(EXIT_FAILURE, "unusable endpoint")
            return
        if settings.state_dir is not None:
            self._open_records(settings.state_dir)
        self._data.start()
        self._bus.start()
        hello = make_hello(
            ServiceKind.STORAGE_AGENT, settings.agent_id, socket.gethostname(), os.getpid()
        )
        self._bus.send(hello)
        log.info(
            "storage agent %s: data endpoint %s, coordinator %s, %d hash threads, %s",
            settings.agent_id,
            self.data_endpoint,
            settings.bus,
            settings.hash_threads,
            f"resume state in {settings.state_dir}" if settings.state_dir else "no resume state",
        )

    def _open_records(self, state_dir: str) -> None:
        """Open the resume database on its own thread and start the periodic flush."""
        self._db_pool = gevent.threadpool.ThreadPool(1)
        db = TaskPool(self._db_pool)
        path = os.path.join(state_dir, DATABASE_NAME)
        self._control.records = Records(db.run(functools.partial(ResumeStore, path)), db)
        self._flusher = gevent.spawn(self._flush_timer, self._settings.flush_interval)

    def on_stop(self) -> None:
        self._stopping = True
        deadline = time.monotonic() + self._settings.stop_timeout
        for greenlet in (self._heartbeat, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=False)
        if self._data is not None:
            self._data.close(linger=0)  # no new pieces; replies still queued are dropped
        for group in self._control.torrent_jobs.values():
            group.join(timeout=max(0.0, deadline - time.monotonic()))
            group.kill(block=False)
        self._control.stop(deadline)
        with gevent.Timeout(max(0.1, deadline - time.monotonic()), False):
            self._control.records.close()
        if self._bus is not None:
            self._bus.send(Goodbye("stopping"))
            self._bus.close(linger=0.5)
        self._piece_pool.kill()
        if self._db_pool is not None:
            self._db_pool.kill()
        log.info("storage agent %s stopped", self._settings.agent_id)

    # -- the inbox ------------------------------------------------------------------------------

    def _admit_data(self, incoming: Incoming) -> None:
        """The data socket's handler, in its receiver greenlet: wait for a slot, then hand on.

        Waiting here is the backpressure: while it waits, nothing more is read from the socket.
        """
        slots: gevent.lock.BoundedSemaphore | None = None
        if isinstance(incoming.message, StorePiece | ReadBlock):
            slots = (
                self._piece_slots if isinstance(incoming.message, StorePiece) else self._read_slots
            )
        if slots is not None:
            slots.acquire()
        try:
            self.actor_ref.tell(incoming)
        except pykka.ActorDeadError:
            if slots is not None:
                slots.release()

    def on_receive(self, message: Any) -> None:
        try:
            self._dispatch(message)
        except Exception:  # a bug must cost one message, not the agent
            log.exception("failed to handle %s", type(message).__name__)

    def _dispatch(self, message: Any) -> None:
        match message:
            case Incoming(sender=None):
                self._on_bus(message)
            case Incoming():
                self._on_data(message)
            case PieceDone():
                self._piece_done(message)
            case CheckProgress():
                self._send(message)
            case _FlushDue():
                if not self._stopping:
                    self._control.flush_due()
            case _ if self._control.result(message):
                pass
            case _:
                log.warning("unexpected actor message %s dropped", type(message).__name__)

    def _on_bus(self, incoming: Incoming) -> None:
        match incoming.message:
            case OpenTorrent() | CloseTorrent() | RecheckTorrent() as request:
                if not self._stopping:
                    self._control.request(request)
            case Welcome(heartbeat_interval=interval, server_id=server):
                log.info("welcomed by coordinator %s", server)
                self._start_heartbeat(interval)
            case Rejected(message=text):
                log.error("the coordinator refused this agent: %s", text)
                self._runner.request_stop(EXIT_FAILURE, "rejected by the coordinator")
            case Shutdown(reason=reason):
                log.info("shutdown requested by the coordinator (%s)", reason)
                self._stopping = True
                self._runner.request_stop(EXIT_OK, f"shutdown: {reason}")
            case Heartbeat():
                pass
            case other:
                log.warning("unexpected %s from the coordinator dropped", type(other).__name__)

    def _on_data(self, incoming: Incoming) -> None:
        assert incoming.sender is not None
        match incoming.message:
            case StorePiece() as request:
                assert incoming.data is not None  # the codec guarantees the data frame
                self._store_piece(request, incoming.data)
            case ReadBlock() as request:
                self._read_block(request, incoming.sender)
            case Hello() | Heartbeat() | Goodbye():
                pass
            case other:
                self._refuse(
                    None,
                    Refusal("unexpected_message", f"{type(other).__name__} on the data endpoint"),
                )

    def _send(self, message: Message) -> None:
        assert self._bus is not None
        self._bus.send(message)

    def _tell(self, message: object) -> None:
        """Report a job's result; after the actor stopped, closes what nobody else will."""
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            if isinstance(message, Opened):
                on_hub(close_quietly, message.storage)

    def _start_heartbeat(self, interval: float) -> None:
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        if interval > 0:
            self._heartbeat = gevent.spawn(self._beat, max(interval, 0.05))

    def _beat(self, interval: float) -> None:
        seq = 0
        while True:
            gevent.sleep(interval)
            seq += 1
            self._send(Heartbeat(seq))

    def _flush_timer(self, interval: float) -> None:
        while True:
            gevent.sleep(interval)
            self._tell(_FlushDue())

    # -- pieces ---------------------------------------------------------------------------------

    def _store_piece(self, request: StorePiece, data: memoryview) -> None:
        """Admit a piece and start hashing it; its slot is freed when the job ends."""
        spawned = False
        try:
            verdict = (
                Refusal("agent_stopping", "piece while the agent stops")
                if self._stopping
                else self._torrents.check_piece(request, data.nbytes)
            )
            if isinstance(verdict, Refusal):
                quiet = verdict.reason in _QUIET_REFUSALS
                self._refuse(request.info_hash, verdict, quiet=quiet)
                return
            assert verdict.info is not None and verdict.storage is not None
            expected = verdict.info.piece_hash(request.piece)
            self._control.jobs_of(request.info_hash).spawn(
                self._run_piece, verdict.storage, request, data, expected
            )
            spawned = True
        finally:
            if not spawned:
                self._piece_slots.release()

    def _run_piece(
        self, storage: Storage, request: StorePiece, data: memoryview, expected: bytes
    ) -> None:
        try:
            done = jobs.piece_job(self._piece_tasks, storage, request, data, expected)
        finally:
            self._piece_slots.release()
        self._tell(done)

    def _piece_done(self, done: PieceDone) -> None:
        torrent = self._torrents.get(done.info_hash)
        tlog = _torrent_log(done.info_hash)
        if done.error is not None:
            event = tasks.storage_failed(done.info_hash, done.error)
            if torrent is not None and torrent.failed(event.message):
                tlog.error(
                    "writing piece %d failed, torrent stopped: %s",
                    done.piece,
                    event.message,
                    exc_info=None if tasks.is_expected_failure(done.error) else done.error,
                )
                self._send(event)
                self._control.flush(torrent)  # record what was verified before the failure
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
            self._send(PieceRejected(done.info_hash, done.piece, done.contributors))
        elif (
            torrent is not None
            and torrent.piece_verified(done.piece)
            and torrent.phase is not Phase.CHECKING  # recorded; the recheck's answer will count
        ):
            self._send(PieceVerified(done.info_hash, done.piece))

    # -- blocks ---------------------------------------------------------------------------------

    def _read_block(self, request: ReadBlock, sender: bytes) -> None:
        spawned = False
        try:
            verdict = (
                Refusal("agent_stopping", "read while the agent stops")
                if self._stopping
                else self._torrents.check_read(request)
            )
            if isinstance(verdict, Refusal):
                self._reply(ReadFailed(request.request_id, verdict.reason, verdict.message), sender)
                return
            assert verdict.storage is not None
            self._control.jobs_of(request.info_hash).spawn(
                self._run_read, verdict.storage, request, sender
            )
            spawned = True
        finally:
            if not spawned:
                self._read_slots.release()

    def _run_read(self, storage: Storage, request: ReadBlock, sender: bytes) -> None:
        try:
            reply = jobs.read_job(storage, request)
        finally:
            self._read_slots.release()
        self._reply(reply.message, sender, reply.data)

    def _reply(self, message: Message, sender: bytes, data: bytes | None = None) -> None:
        if self._data is not None:
            self._data.send(message, data, to=sender)

    def _refuse(self, info_hash: InfoHash | None, refusal: Refusal, *, quiet: bool = False) -> None:
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
