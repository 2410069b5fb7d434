"""The storage agent's actor: owns the bus and data sockets, the torrents, and the work on files.

Strategy: one pykka actor (a greenlet under gevent) owns every piece of state: the
``TorrentTable`` and the two sockets. Its inbox gets the messages of both sockets (``Incoming``)
and the results of its own jobs. Anything that blocks runs in a job greenlet that waits on a
worker thread and reports back with ``tell``:

- opening (hash check, parse, create folders, recheck existing data) and closing (flush) run on
  the hub's threadpool; hashing and writing pieces, and the recheck, on a pool of
  ``hash_threads`` workers; block reads on the hub's threadpool.
- a piece is hashed and written in one task on a worker, straight from the received frame (a
  zero-copy memoryview); the result comes back to the actor, which records the piece and only
  then tells the coordinator ``PieceVerified`` (so a ``ReadBlock`` that follows it is served).

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
- On ``Shutdown``, a signal, or the parent gone, ``on_stop`` lets pieces in flight finish and
  flushes and closes every torrent, all within ``stop_timeout`` seconds.
- Resume state is not kept yet. ``ResumeHook.flushed`` is called after each successful flush,
  with the pieces that are now durable: the place where it will be written.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import gevent.lock
import gevent.pool
import gevent.threadpool
import pykka
import zmq

from shared.bitfield import Bitfield
from shared.bus import (
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
    Rejected,
    ServiceKind,
    Shutdown,
    StorageFailed,
    StorePiece,
    TorrentClosed,
    TorrentOpened,
    Welcome,
    make_hello,
)
from shared.runtime.logging import ContextAdapter, with_context
from shared.runtime.service import EXIT_FAILURE, EXIT_OK, ServiceRunner
from shared.runtime.sockets import BusSocket, Incoming
from shared.types import InfoHash

from . import jobs, tasks
from .hashing import PieceVerifier, TaskPool
from .jobs import Closed, Opened, OpenFailed, PieceDone, close_quietly, on_hub
from .store import Storage
from .torrents import Phase, Refusal, Torrent, TorrentTable

__all__ = ["AgentSettings", "ResumeHook", "StorageAgent"]

log = logging.getLogger(__name__)

_LOUD_REFUSALS = 10  # refused data requests logged at warning before going quiet
_JOB_WAIT = 60.0  # seconds a close or reopen waits for the torrent's pieces in flight
_MAX_TEXT = 4096


@dataclass(frozen=True, slots=True)
class AgentSettings:
    """How one storage agent runs (from its command line and ``[storage_agent]`` config)."""

    agent_id: str
    """Unique name; the bus DEALER's routing id."""
    bus: str
    """The coordinator's bus endpoint."""
    data: str
    """Endpoint to bind for peer agents (``tcp://127.0.0.1:*`` picks a port)."""
    preallocate: bool = False
    """Reserve each file's full size when it is created."""
    hash_threads: int = 2
    """Worker threads hashing and writing pieces (and rechecking)."""
    pieces_in_flight: int = 0
    """Pieces being hashed or written at once; 0: twice ``hash_threads``, at least 4."""
    reads_in_flight: int = 64
    """Block reads running at once."""
    data_hwm: int = 64
    """ZeroMQ high-water mark of the data socket, in messages per peer agent."""
    data_heartbeat: float = 10.0
    """Seconds between heartbeats told to peer agents in ``Welcome``."""
    stop_timeout: float = 2.0
    """Seconds to finish pieces in flight and flush every torrent when stopping."""

    def __post_init__(self) -> None:
        if self.hash_threads < 1 or self.reads_in_flight < 1 or self.data_hwm < 1:
            raise ValueError("hash_threads, reads_in_flight and data_hwm are at least 1")
        if self.pieces_in_flight < 0:
            raise ValueError("pieces_in_flight is never negative")

    @property
    def piece_slots(self) -> int:
        return self.pieces_in_flight or max(4, 2 * self.hash_threads)


class ResumeHook(Protocol):
    """Where resume state will be written (a later issue); called in the actor."""

    def flushed(self, info_hash: InfoHash, verified: Bitfield) -> None:
        """The torrent's files were flushed: every piece in ``verified`` is durable."""


def _torrent_log(info_hash: InfoHash) -> ContextAdapter:
    return with_context(log, info_hash=info_hash)


class StorageAgent(pykka.ThreadingActor):
    """The storage agent: verifies and writes pieces, serves blocks, opens and closes torrents.

    Args:
        settings: endpoints and limits.
        runner: stopped on ``Shutdown`` (exit 0) or a rejected ``Hello`` (exit 1).
        resume: told after each successful flush (none yet).
    """

    def __init__(
        self, settings: AgentSettings, runner: ServiceRunner, resume: ResumeHook | None = None
    ) -> None:
        super().__init__()
        self._settings = settings
        self._runner = runner
        self._resume = resume
        self._torrents = TorrentTable()
        self._jobs: dict[InfoHash, gevent.pool.Group] = {}  # pieces and reads per torrent
        self._control_jobs = gevent.pool.Group()  # opens and closes
        self._piece_slots = gevent.lock.BoundedSemaphore(settings.piece_slots)
        self._read_slots = gevent.lock.BoundedSemaphore(settings.reads_in_flight)
        self._piece_pool: gevent.threadpool.ThreadPool | None = None
        self._piece_tasks: TaskPool | None = None
        self._verifier: PieceVerifier | None = None
        self._bus: BusSocket | None = None
        self._data: BusSocket | None = None
        self._heartbeat: gevent.Greenlet[Any, Any] | None = None
        self._stopping = False
        self._refused = 0
        self.data_endpoint = ""
        """The bound data endpoint, once started."""

    # -- lifetime -------------------------------------------------------------------------------

    def on_start(self) -> None:
        settings = self._settings
        self._piece_pool = gevent.threadpool.ThreadPool(settings.hash_threads)
        self._piece_tasks = TaskPool(self._piece_pool)
        self._verifier = PieceVerifier(self._piece_tasks)
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
        self._data.start()
        self._bus.start()
        hello = make_hello(
            ServiceKind.STORAGE_AGENT, settings.agent_id, socket.gethostname(), os.getpid()
        )
        self._bus.send(hello)
        log.info(
            "storage agent %s: data endpoint %s, coordinator %s, %d hash threads",
            settings.agent_id,
            self.data_endpoint,
            settings.bus,
            settings.hash_threads,
        )

    def on_stop(self) -> None:
        self._stopping = True
        deadline = time.monotonic() + self._settings.stop_timeout
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        if self._data is not None:
            self._data.close(linger=0)  # no new pieces; replies still queued are dropped
        for group in self._jobs.values():
            group.join(timeout=max(0.0, deadline - time.monotonic()))
            group.kill(block=False)
        self._control_jobs.kill(block=True, timeout=max(0.1, deadline - time.monotonic()))
        self._close_all(deadline)
        if self._bus is not None:
            self._bus.send(Goodbye("stopping"))
            self._bus.close(linger=0.5)
        if self._piece_pool is not None:
            self._piece_pool.kill()
        log.info("storage agent %s stopped", self._settings.agent_id)

    def _close_all(self, deadline: float) -> None:
        """Flush and close every open torrent in parallel, waiting until ``deadline`` at most.

        Torrents in CLOSING are left to their own job (its worker finishes the close).
        """
        closing = [
            (torrent, gevent.spawn(jobs.close_job, torrent.info_hash, torrent.storage))
            for torrent in self._torrents
            if torrent.phase in (Phase.OPEN, Phase.FAILED) and torrent.storage is not None
        ]
        gevent.joinall([job for _, job in closing], timeout=max(0.0, deadline - time.monotonic()))
        for torrent, job in closing:
            tlog = _torrent_log(torrent.info_hash)
            done: Closed | None = job.value if job.ready() else None
            if done is None:
                tlog.warning("not flushed within %ss of stopping", self._settings.stop_timeout)
            elif done.error is not None:
                tlog.error("flush failed while stopping: %s", done.error)
            else:
                self._flushed(torrent)
                tlog.info("closed (stopping): %s", _progress(torrent))

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
            case Opened():
                self._opened(message)
            case OpenFailed():
                self._open_failed(message)
            case Closed():
                self._closed(message)
            case _:
                log.warning("unexpected actor message %s dropped", type(message).__name__)

    def _on_bus(self, incoming: Incoming) -> None:
        match incoming.message:
            case OpenTorrent() | CloseTorrent() as request:
                self._control(request)
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

    # -- opening and closing --------------------------------------------------------------------

    def _control(self, request: OpenTorrent | CloseTorrent) -> None:
        if self._stopping:
            return
        torrent = self._torrents.get(request.info_hash)
        if torrent is not None and torrent.busy:
            if not torrent.queue(request):
                self._send(
                    StorageFailed(request.info_hash, "", "", "too many open/close requests queued")
                )
            return
        if isinstance(request, OpenTorrent):
            self._open(torrent, request)
        else:
            self._close(torrent, request.info_hash)

    def _open(self, torrent: Torrent | None, request: OpenTorrent) -> None:
        info_hash = request.info_hash
        if torrent is None:
            added = self._torrents.add(info_hash, request.save_path)
            if isinstance(added, Refusal):
                self._send(StorageFailed(info_hash, "", "", added.message))
                return
            self._spawn_open(request, None)
        elif torrent.phase is Phase.OPEN:
            if torrent.save_path == request.save_path:
                self._send(TorrentOpened(info_hash, torrent.verified.to_bytes()))
            else:
                self._send(
                    StorageFailed(
                        info_hash,
                        "",
                        "",
                        f"already open in {torrent.save_path!r}: close it before opening it "
                        f"in {request.save_path!r}"[:_MAX_TEXT],
                    )
                )
        else:  # FAILED: reopening is how a stopped torrent resumes
            old = torrent.reopening(request.save_path)
            self._spawn_open(request, old)

    def _spawn_open(self, request: OpenTorrent, old: Storage | None) -> None:
        assert self._verifier is not None
        self._control_jobs.spawn(
            self._run,
            jobs.open_job,
            request,
            old,
            preallocate=self._settings.preallocate,
            verifier=self._verifier,
            before=functools.partial(self._wait_for_jobs, request.info_hash),
        )

    def _run(self, job: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """The body of an open or close job's greenlet: run it, send the result to the inbox."""
        self._tell(job(*args, **kwargs))

    def _opened(self, done: Opened) -> None:
        torrent = self._torrents.get(done.info_hash)
        if torrent is None or torrent.phase is not Phase.OPENING:  # cannot happen: be safe
            gevent.get_hub().threadpool.spawn(close_quietly, done.storage)
            return
        torrent.opened(done.storage.info, done.storage, done.have)
        _torrent_log(done.info_hash).info(
            "opened %r in %s: %s", done.storage.info.name, torrent.save_path, _progress(torrent)
        )
        self._send(TorrentOpened(done.info_hash, done.have.to_bytes()))
        self._replay(torrent.take_waiting())

    def _open_failed(self, done: OpenFailed) -> None:
        torrent = self._torrents.remove(done.info_hash)
        self._jobs.pop(done.info_hash, None)
        event = tasks.storage_failed(done.info_hash, done.error)
        _torrent_log(done.info_hash).error(
            "cannot open: %s",
            event.message,
            exc_info=None if tasks.is_expected_failure(done.error) else done.error,
        )
        self._send(event)
        if torrent is not None:
            self._replay(torrent.take_waiting())

    def _close(self, torrent: Torrent | None, info_hash: InfoHash) -> None:
        if torrent is None:
            self._send(TorrentClosed(info_hash))  # closing twice is not an error
            return
        storage = torrent.closing()
        self._control_jobs.spawn(
            self._run,
            jobs.close_job,
            info_hash,
            storage,
            before=functools.partial(self._wait_for_jobs, info_hash),
        )

    def _closed(self, done: Closed) -> None:
        torrent = self._torrents.remove(done.info_hash)
        self._jobs.pop(done.info_hash, None)
        tlog = _torrent_log(done.info_hash)
        if done.error is not None:
            event = tasks.storage_failed(done.info_hash, done.error)
            tlog.error("flush failed while closing: %s", event.message)
            self._send(event)
        elif torrent is not None:
            self._flushed(torrent)
        tlog.info("closed: %s", _progress(torrent) if torrent is not None else "")
        self._send(TorrentClosed(done.info_hash))
        if torrent is not None:
            self._replay(torrent.take_waiting())

    def _replay(self, waiting: deque[OpenTorrent | CloseTorrent]) -> None:
        """Handle control requests that waited for a job to end, in their order."""
        while waiting:
            self._control(waiting.popleft())

    def _wait_for_jobs(self, info_hash: InfoHash) -> None:
        group = self._jobs.get(info_hash)
        if group is not None and not group.join(timeout=_JOB_WAIT):
            _torrent_log(info_hash).warning("pieces still in flight after %ss", _JOB_WAIT)

    def _flushed(self, torrent: Torrent) -> None:
        if self._resume is not None:
            self._resume.flushed(torrent.info_hash, torrent.verified.copy())

    # -- pieces ---------------------------------------------------------------------------------

    def _jobs_of(self, info_hash: InfoHash) -> gevent.pool.Group:
        group = self._jobs.get(info_hash)
        if group is None:
            group = self._jobs[info_hash] = gevent.pool.Group()
        return group

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
                self._refuse(request.info_hash, verdict, quiet=verdict.reason == "already_verified")
                return
            assert verdict.info is not None and verdict.storage is not None
            expected = verdict.info.piece_hash(request.piece)
            self._jobs_of(request.info_hash).spawn(
                self._run_piece, verdict.storage, request, data, expected
            )
            spawned = True
        finally:
            if not spawned:
                self._piece_slots.release()

    def _run_piece(
        self, storage: Storage, request: StorePiece, data: memoryview, expected: bytes
    ) -> None:
        assert self._piece_tasks is not None
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
        elif torrent is not None and torrent.piece_verified(done.piece):
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
            self._jobs_of(request.info_hash).spawn(self._run_read, verdict.storage, request, sender)
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


def _progress(torrent: Torrent) -> str:
    return f"{len(torrent.verified)} of {torrent.verified.size} pieces verified"
