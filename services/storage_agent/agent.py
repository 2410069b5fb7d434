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
- every ``StorePiece`` is answered ``PieceStored`` to its sender once dealt with: reason ""
  after its job (matched or not) or when already verified, ``write_failed`` after a write
  error, the refusal's reason otherwise (the sender keeps the piece until then, and may send
  it again after a passing refusal such as ``torrent_checking``).
- a piece that fails its hash with blocks from several connections names no culprit yet:
  its block digests wait in the ``BlockLedger`` until a copy verifies, and then
  ``CorruptBlocksTraced`` names the senders of the bad blocks (``smart_ban``).

Backpressure: the data socket's receiver greenlet takes a slot before it hands a ``StorePiece``
to the actor, and the slot is freed when the piece is hashed and written (or dropped). When all
``pieces_in_flight`` slots are taken the receiver stops reading, the piece frames wait in order
in ZeroMQ's queue, whose high-water mark is lowered to ``data_hwm`` messages, and then in the
senders' queues: memory stays bounded by ``(pieces_in_flight + data_hwm * peers) * piece size``
whatever the senders do. ``ReadBlock`` has its own, larger slot count.

Rules:
- The inbox never blocks: no file or hash work in ``on_receive``. A bug while handling one
  message is logged and the agent goes on; remote input never raises out of a handler.
- The data endpoint answers a peer agent's ``Heartbeat`` (its probe of a link silent while
  pieces wait) with a ``Heartbeat``, and keeps one link per peer agent: a ``Hello`` from a new
  process of an agent (another routing identity, same agent id) forgets the old process's
  identity, as its ``Goodbye`` would.
- Malformed or impossible requests on the data endpoint (unknown torrent, bad length, piece out
  of range) come from a buggy or hostile sender: dropped and logged (first few, then every
  1000th), never answered with a crash.
- The bus is a ``CoordinatorLink`` (hello, heartbeats, re-registration). A new registration,
  or the coordinator lost, changes nothing here: open torrents stay open, pieces in flight are
  finished, and events sent while unregistered are dropped, because the coordinator asks again
  (``OpenTorrent`` of a torrent already open is answered ``TorrentOpened(have)`` at once).
  ``AgentInfo`` tells it the data endpoint (a wildcard host replaced by the address this host
  uses to reach the coordinator), its CURVE public key, and as its capacity how many pieces
  it verifies at once.
- On ``Shutdown``, a signal, or the parent gone, ``on_stop`` lets pieces in flight finish,
  flushes and closes every torrent and writes its final resume record, all within
  ``stop_timeout`` seconds. A SIGKILL loses only what was in flight: the pieces verified since
  the last flush are still on disk, and the next open finds them (``fastresume``).
"""

from __future__ import annotations

import functools
import logging
import os
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
    BLOCK_LENGTH,
    AgentInfo,
    CheckProgress,
    CloseTorrent,
    CorruptBlocksTraced,
    Goodbye,
    Heartbeat,
    Hello,
    HelloPolicy,
    Message,
    OpenTorrent,
    PieceRejected,
    PieceStored,
    PieceVerified,
    ReadBlock,
    ReadFailed,
    RecheckTorrent,
    ServiceKind,
    Shutdown,
    StorePiece,
    StoreRefusal,
)
from shared.endpoints import parse_endpoint
from shared.errors import ConfigError
from shared.runtime.address import WILDCARDS, HostAdvertiser, coordinator_host
from shared.runtime.link import CoordinatorLink, CoordinatorLost, LinkRefused, Registered
from shared.runtime.logging import ContextAdapter, with_context
from shared.runtime.service import EXIT_FAILURE, EXIT_OK, ServiceRunner
from shared.runtime.sockets import BusSocket, Incoming
from shared.types import InfoHash

from . import jobs
from .control import Control
from .core.errors import is_expected_failure, storage_failed
from .core.smart_ban import BlockLedger, senders_of_blocks
from .core.storage import Storage
from .core.torrents import Phase, Refusal, TorrentTable
from .hashing import PieceVerifier, TaskPool
from .jobs import Opened, PieceDone, Records, close_quietly, on_hub
from .resume import DATABASE_NAME, ResumeStore
from .settings import AgentSettings

__all__ = ["StorageAgent", "advertised_endpoint"]

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
        runner: stopped on ``Shutdown`` (exit 0) or when the coordinator refuses us
            (``LinkRefused.exit_code``: 2 for a duplicate agent id or a key refused, else 1).
    """

    def __init__(self, settings: AgentSettings, runner: ServiceRunner) -> None:
        super().__init__()
        self._settings = settings
        self._runner = runner
        self._torrents = TorrentTable()
        self._ledger = BlockLedger()
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
        self._link: CoordinatorLink | None = None
        self._data: BusSocket | None = None
        self._flusher: gevent.Greenlet[Any, Any] | None = None
        self._stopping = False
        self._refused = 0
        self.data_endpoint = ""
        """The bound data endpoint, once started."""
        self.advertised_endpoint = ""
        """The data endpoint as peer agents reach it (told in ``AgentInfo``)."""

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
            self._admit_data,
            name="storage-data",
            hello_policy=policy,
            hwm=settings.data_hwm,
            curve=settings.data_curve,
            vet_hello=self._replace_process,
        )
        self._link = CoordinatorLink(
            self.actor_ref.tell,
            service=ServiceKind.STORAGE_AGENT,
            agent_id=settings.agent_id,
            endpoint=settings.bus,
            info=self._agent_info,
            curve=settings.bus_curve,
            misses=settings.heartbeat_misses,
        )
        try:
            self.data_endpoint = self._data.bind(settings.data)
            # Before the link starts: the AgentInfo sent on its Welcome names it.
            self.advertised_endpoint = advertised_endpoint(self.data_endpoint, settings.bus)
            self._link.start()
        except zmq.ZMQError as exc:  # a wrong endpoint is the user's to fix: one line, exit 1
            log.error("cannot use endpoint %s or %s: %s", settings.data, settings.bus, exc)
            self._runner.request_stop(EXIT_FAILURE, "unusable endpoint")
            return
        if settings.state_dir is not None:
            self._open_records(settings.state_dir)
        self._data.start()
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
        if self._flusher is not None:
            self._flusher.kill(block=False)
        if self._data is not None:
            self._data.close(linger=0)  # no new pieces; replies still queued are dropped
        for group in self._control.torrent_jobs.values():
            group.join(timeout=max(0.0, deadline - time.monotonic()))
            group.kill(block=False)
        self._control.stop(deadline)
        with gevent.Timeout(max(0.1, deadline - time.monotonic()), False):
            self._control.records.close()
        if self._link is not None:
            self._link.close("stopping", linger=0.5)
        self._piece_pool.kill()
        if self._db_pool is not None:
            self._db_pool.kill()
        log.info("storage agent %s stopped", self._settings.agent_id)

    # -- the inbox ------------------------------------------------------------------------------

    def _replace_process(self, sender: bytes, hello: Hello) -> None:
        """A data link's ``Hello`` (in the data socket's receiver greenlet): a peer agent is
        linked by one process at a time, so the links of its previous processes are forgotten
        (their identity and key; a restarted agent never returns to them)."""
        assert self._data is not None
        for identity, known in list(self._data.welcomed.items()):
            if identity != sender and known.agent_id == hello.agent_id:
                log.info(
                    "peer agent %s links again from pid %d on %s: its link from pid %d on %s "
                    "is forgotten",
                    hello.agent_id,
                    hello.pid,
                    hello.host,
                    known.pid,
                    known.host,
                )
                self._data.forget(identity)

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
            case Registered() | CoordinatorLost() | LinkRefused():
                self._on_link(message)
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
            case Shutdown(reason=reason):
                log.info("shutdown requested by the coordinator (%s)", reason)
                self._stopping = True
                self._runner.request_stop(EXIT_OK, f"shutdown: {reason}")
            case other:
                log.warning("unexpected %s from the coordinator dropped", type(other).__name__)

    def _on_link(self, event: Registered | CoordinatorLost | LinkRefused) -> None:
        """The coordinator link's events: open torrents stay open whatever happens."""
        match event:
            case Registered():
                if len(self._torrents):
                    log.info(
                        "registered: %d torrents stay open for the coordinator to reopen",
                        len(self._torrents),
                    )
            case CoordinatorLost():
                log.info("coordinator lost: torrents stay open, events wait for it to come back")
            case LinkRefused(reason=reason):
                self._runner.request_stop(event.exit_code, f"refused by the coordinator: {reason}")

    def _agent_info(self) -> AgentInfo:
        """What this agent offers, told after every ``Welcome``."""
        curve = self._settings.data_curve
        return AgentInfo(
            capacity=self._settings.piece_slots,
            listen_address=None,
            data_endpoint=self.advertised_endpoint,
            curve_public_key=curve.keys.public.decode("ascii") if curve is not None else "",
        )

    def _on_data(self, incoming: Incoming) -> None:
        assert incoming.sender is not None
        match incoming.message:
            case StorePiece() as request:
                assert incoming.data is not None  # the codec guarantees the data frame
                self._store_piece(request, incoming.data, incoming.sender)
            case ReadBlock() as request:
                self._read_block(request, incoming.sender)
            case Heartbeat(seq=seq):  # a peer agent's probe of a quiet link: we are here
                self._reply(Heartbeat(seq), incoming.sender)
            case Hello() | Goodbye():
                pass
            case other:
                self._refuse(
                    None,
                    Refusal("unexpected_message", f"{type(other).__name__} on the data endpoint"),
                )

    def _send(self, message: Message) -> None:
        assert self._link is not None
        self._link.send(message)

    def _tell(self, message: object) -> None:
        """Report a job's result; after the actor stopped, closes what nobody else will."""
        try:
            self.actor_ref.tell(message)
        except pykka.ActorDeadError:
            if isinstance(message, Opened):
                on_hub(close_quietly, message.storage)

    def _flush_timer(self, interval: float) -> None:
        while True:
            gevent.sleep(interval)
            self._tell(_FlushDue())

    # -- pieces ---------------------------------------------------------------------------------

    def _store_piece(self, request: StorePiece, data: memoryview, sender: bytes) -> None:
        """Admit a piece and start hashing it; its slot is freed when the job ends.

        The sender hears ``PieceStored`` once the piece is dealt with: at once when it is
        refused (``already_verified`` counts as dealt with: reason ""), else after its job.
        """
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
                reason = (
                    StoreRefusal.NONE
                    if verdict.reason == "already_verified"
                    else StoreRefusal.parse(verdict.reason)
                )
                self._reply(PieceStored(request.info_hash, request.piece, reason), sender)
                return
            assert verdict.info is not None and verdict.storage is not None
            blocks = -(-data.nbytes // BLOCK_LENGTH)
            senders = senders_of_blocks(request.contributors, request.block_senders, blocks)
            if senders is None:
                refusal = Refusal(
                    StoreRefusal.BAD_BLOCK_SENDERS,
                    f"piece {request.piece}: block senders do not fit its {blocks} blocks",
                )
                self._refuse(request.info_hash, refusal)
                self._reply(
                    PieceStored(request.info_hash, request.piece, StoreRefusal.BAD_BLOCK_SENDERS),
                    sender,
                )
                return
            expected = verdict.info.piece_hash(request.piece)
            trace = self._ledger.wants(request.info_hash, request.piece)
            self._control.jobs_of(request.info_hash).spawn(
                self._run_piece, verdict.storage, request, data, expected, sender, senders, trace
            )
            spawned = True
        finally:
            if not spawned:
                self._piece_slots.release()

    def _run_piece(
        self,
        storage: Storage,
        request: StorePiece,
        data: memoryview,
        expected: bytes,
        sender: bytes,
        senders: tuple[str, ...],
        trace: bool,
    ) -> None:
        try:
            done = jobs.piece_job(
                self._piece_tasks,
                storage,
                request,
                data,
                expected,
                sender=sender,
                block_senders=senders,
                trace=trace,
            )
        finally:
            self._piece_slots.release()
        self._tell(done)

    def _piece_done(self, done: PieceDone) -> None:
        self._piece_verdict(done)
        if done.sender is not None:  # after the coordinator heard the verdict
            reason = StoreRefusal.NONE if done.error is None else StoreRefusal.WRITE_FAILED
            self._reply(PieceStored(done.info_hash, done.piece, reason), done.sender)

    def _piece_verdict(self, done: PieceDone) -> None:
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


def advertised_endpoint(bound: str, coordinator: str) -> str:
    """The data endpoint as peer agents on other hosts reach it.

    A tcp endpoint bound on a wildcard (``0.0.0.0``, ``::``) names no address a peer agent can
    dial: the address this host uses to reach the coordinator takes its place (the probe of
    ``shared.runtime.address``, which sends no packet). Anything else, and a wildcard when the
    coordinator is on this host (ipc) or out of reach, is returned as it is.

    Args:
        bound: the endpoint as bound (``LAST_ENDPOINT``: the port is resolved).
        coordinator: the coordinator's bus endpoint.
    """
    try:
        parts = parse_endpoint(bound)
    except ConfigError:
        return bound
    if parts.scheme != "tcp" or parts.host not in WILDCARDS:
        return bound
    key = "[storage_agent] data (bind a specific address instead of a wildcard)"
    address = None
    if coordinator_host(coordinator) is not None:
        address = HostAdvertiser("", parts.host, coordinator, key).host()
    if address is None:  # HostAdvertiser said why, once
        return bound
    host = f"[{address}]" if ":" in address else address
    return f"tcp://{host}:{parts.port}"
