"""The storage agent's actor: owns the bus and data sockets, the torrents, and the work on files.

Strategy: one pykka actor (a greenlet under gevent) owns every piece of state: the
``TorrentTable``, the two sockets, ``Control``, which opens, rechecks, flushes and closes
torrents (``control``), and ``Pieces``, the data endpoint's work: a ``StorePiece`` checked,
hashed and written, recorded, and answered, a ``ReadBlock`` served (``pieces``, where the
piece path reads in one place, backpressure included). Its inbox gets the messages of both
sockets (``Incoming``) and the results of its own jobs. Anything that blocks runs in a job
greenlet that waits on a worker thread and reports back with ``tell``:

- opening (hash check, parse, create folders, compare with the resume record, hash what
  changed), flushing and closing run on the hub's threadpool; hashing and writing pieces, and
  every recheck, on a pool of ``hash_threads`` workers; block reads on the hub's threadpool;
  the resume database (``resume``, with ``--state-dir``) on a thread of its own.
- a verified piece enters the resume record at the next flush (every ``flush_interval``
  seconds), after its file was fdatasynced.

Rules:
- The inbox never blocks: no file or hash work in ``on_receive``. A bug while handling one
  message is logged and the agent goes on; remote input never raises out of a handler.
- The data endpoint answers a peer agent's ``Heartbeat`` (its probe of a link silent while
  pieces wait) with a ``Heartbeat``, and keeps one link per peer agent: a ``Hello`` from a new
  process of an agent (another routing identity, same agent id) forgets the old process's
  identity, as its ``Goodbye`` would. Any other message there is dropped and logged.
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
  the last flush are still on disk, and the next open finds them (``core.fastresume``).
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

from torviz.shared.bus import (
    AgentInfo,
    CheckProgress,
    CloseTorrent,
    Goodbye,
    Heartbeat,
    Hello,
    HelloPolicy,
    Message,
    OpenTorrent,
    ReadBlock,
    RecheckTorrent,
    ServiceKind,
    Shutdown,
    StorePiece,
)
from torviz.shared.endpoints import parse_endpoint
from torviz.shared.errors import ConfigError
from torviz.shared.runtime.address import WILDCARDS, HostAdvertiser, coordinator_host
from torviz.shared.runtime.link import CoordinatorLink, CoordinatorLost, LinkRefused, Registered
from torviz.shared.runtime.service import EXIT_FAILURE, EXIT_OK, ServiceRunner
from torviz.shared.runtime.sockets import BusSocket, Incoming

from .control import Control
from .core.torrents import Refusal, TorrentTable
from .hashing import PieceVerifier, TaskPool
from .jobs import Opened, Records, close_quietly, on_hub
from .pieces import PieceDone, Pieces
from .resume import DATABASE_NAME, ResumeStore
from .settings import AgentSettings

__all__ = ["StorageAgent", "advertised_endpoint"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _FlushDue:
    """Time for the periodic flush."""


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
        self._piece_pool = gevent.threadpool.ThreadPool(settings.hash_threads)
        piece_tasks = TaskPool(self._piece_pool)
        self._db_pool: gevent.threadpool.ThreadPool | None = None
        self._control = Control(
            settings,
            self._torrents,
            PieceVerifier(piece_tasks),
            Records(),
            self._send,
            self._tell,
        )
        self._link: CoordinatorLink | None = None
        self._data: BusSocket | None = None
        self._flusher: gevent.Greenlet[Any, Any] | None = None
        self._stopping = False
        self._pieces = Pieces(
            settings,
            self._torrents,
            piece_tasks,
            stopping=lambda: self._stopping,
            jobs_of=self._control.jobs_of,
            flush=self._control.flush,
            send=self._send,
            reply=self._reply,
            tell=self._tell,
        )
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
        """The data socket's handler, in its receiver greenlet (``pieces``: a slot first)."""
        self._pieces.admit(incoming, self.actor_ref.tell)

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
                self._pieces.done(message)
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
                self._pieces.store(request, incoming.data, incoming.sender)
            case ReadBlock() as request:
                self._pieces.read(request, incoming.sender)
            case Heartbeat(seq=seq):  # a peer agent's probe of a quiet link: we are here
                self._reply(Heartbeat(seq), incoming.sender)
            case Hello() | Goodbye():
                pass
            case other:
                self._pieces.refuse(
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

    def _reply(self, message: Message, sender: bytes, data: bytes | None = None) -> None:
        """Send to a peer agent on the data socket (dropped once it is closed)."""
        if self._data is not None:
            self._data.send(message, data, to=sender)


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
