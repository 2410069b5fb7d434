"""The coordinator actor: owns the bus and control sockets and drives ``Coordinator``.

Everything that arrives (agent events, control requests, the one-second tick) becomes a message
in this actor's inbox, so the ``Coordinator`` state is only ever touched by one greenlet. After
each message the actor sends what the core put in its outbox.

Stopping (on a signal, a ``ShutdownRequested``, or the end of a one-shot download): every torrent
is let go (trackers get ``stopped``), the embedded agents this process started are sent
``Shutdown``, and the sockets linger briefly so those messages leave before the process does.
Agents started on their own (other hosts, systemd units) are not told to stop: they wait for a
coordinator to come back and register with it again.

An agent's ``Hello`` is answered by the bus socket, which first asks the core
(``Coordinator.vet_hello``) whether it is a second live process of a registered agent id: that
one is refused (``duplicate_agent``) before it is ever welcomed, and the live one is left alone.
Whether the registered process still has a connection is asked of the bus socket
(``BusSocket.reachable``), so a restart right after a crash is told from a duplicate at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import pykka

from torviz.shared.bus import (
    AddTorrent,
    AddWebSeed,
    ControlFailed,
    ExportTorrent,
    GetStatus,
    Hello,
    HelloPolicy,
    ListTorrents,
    Message,
    PauseTorrent,
    Rejected,
    RemoveTorrent,
    ResumeTorrent,
    ServiceKind,
    Shutdown,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    TorrentAdded,
    TorrentExported,
    VerifyTorrent,
    WatchSession,
)
from torviz.shared.runtime.curve import CurveServer
from torviz.shared.runtime.sockets import BusSocket, Incoming
from torviz.shared.types import InfoHash

from .core import Coordinator
from .core.session_watch import SessionWatch
from .daemon.launcher import AgentProcess, Launcher
from .daemon.locations import Endpoints
from .event_handler import EventHandler, install, uninstall
from .session_store import SessionStore

__all__ = ["CoordinatorActor"]

log = logging.getLogger(__name__)

TICK_INTERVAL = 1.0
SAVE_TOTALS_EVERY = 10
"""Ticks between two saves of the transfer totals."""
MAX_RESTARTS = 3
"""Restarts of a crashed embedded agent before the daemon gives up on it."""
WATCH_START_BITS = 40
"""The session watch's first revision is random below ``2**40`` (see ``SessionWatch``)."""


@dataclass(frozen=True, slots=True)
class _FromBus:
    incoming: Incoming


@dataclass(frozen=True, slots=True)
class _FromControl:
    incoming: Incoming


@dataclass(frozen=True, slots=True)
class _Tick:
    pass


class CoordinatorActor(pykka.ThreadingActor):
    """Args:
    core: the session logic.
    endpoints: where to bind the bus and control sockets.
    server_id: this coordinator's name in ``Welcome``.
    request_stop: asks the service runner to stop the process (``ShutdownRequested``).
    launcher: the embedded agents, if this daemon started its own.
    session: where the session is kept, if it is kept.
    curve: the bus's CURVE server keys, when the bus is tcp.
    control_curve: the control socket's CURVE server keys (only the coordinator's own key is
        admitted), when the control endpoint is tcp.
    """

    def __init__(
        self,
        core: Coordinator,
        endpoints: Endpoints,
        *,
        server_id: str,
        request_stop: Callable[[int, str], None],
        launcher: Launcher | None = None,
        session: SessionStore | None = None,
        curve: CurveServer | None = None,
        control_curve: CurveServer | None = None,
    ) -> None:
        super().__init__()
        self.core = core
        self.endpoints = endpoints
        self.server_id = server_id
        self.request_stop = request_stop
        self.launcher = launcher
        self.session = session
        self.curve = curve
        self.control_curve = control_curve
        self._ticks = 0
        self.failure: str | None = None
        """Set when the session cannot go on (an agent keeps crashing)."""
        self._restarts: dict[ServiceKind, int] = {}
        self._ticker: gevent.Greenlet[Any, Any] | None = None
        self.bus: BusSocket | None = None
        self.control: BusSocket | None = None
        self._events: EventHandler | None = None

    # -- lifecycle --

    def on_start(self) -> None:
        self._events = install(self.core.events)
        # A watcher of this daemon's previous run must not take our revisions for its own.
        self.core.watching = SessionWatch(start=secrets.randbits(WATCH_START_BITS))
        ref = self.actor_ref
        self.bus = BusSocket.router(
            lambda incoming: ref.tell(_FromBus(incoming)),
            name="bus",
            hello_policy=HelloPolicy(
                ServiceKind.COORDINATOR,
                self.server_id,
                accepts={
                    ServiceKind.TRACKER_AGENT,
                    ServiceKind.PEER_AGENT,
                    ServiceKind.STORAGE_AGENT,
                },
                heartbeat_interval=self.core.config.heartbeat_interval,
            ),
            curve=self.curve,
            vet_hello=self._vet_hello,
        )
        self.bus.bind(self.endpoints.bus)
        self.bus.start()
        self.control = BusSocket.router(
            lambda incoming: ref.tell(_FromControl(incoming)),
            name="control",
            hello_policy=HelloPolicy(
                ServiceKind.COORDINATOR,
                self.server_id,
                accepts={ServiceKind.CLI},
                heartbeat_interval=0.0,
            ),
            max_peers=256,
            evict_oldest=True,
            curve=self.control_curve,
        )
        self.control.bind(self.endpoints.control)
        self.control.start()
        self._ticker = gevent.spawn(self._tick_loop)
        log.info(
            "coordinator listening: bus %s, control %s", self.endpoints.bus, self.endpoints.control
        )

    def on_stop(self) -> None:
        if self._ticker is not None:
            self._ticker.kill(block=False)
        self.core.stop_all(time.monotonic())
        embedded = {child.agent_id for child in self.launcher.agents} if self.launcher else set()
        for agent in self.core.agents:
            if agent.agent_id in embedded:
                self.core.outbox.append((agent.identity, Shutdown("coordinator_stopping")))
        self._flush()
        if self.launcher is not None:
            self.launcher.terminate_unregistered({agent.agent_id for agent in self.core.agents})
        if self.session is not None:
            self.session.set_totals(self.core.totals())
        for sock in (self.control, self.bus):
            if sock is not None:
                sock.close(linger=2.0)
        if self._events is not None:
            uninstall(self._events)

    def _vet_hello(self, sender: bytes, hello: Hello) -> Rejected | None:
        """The bus socket's ``vet_hello`` (in its receiver greenlet; see the module doc)."""
        bus = self.bus
        if bus is None:
            return None
        return self.core.vet_hello(sender, hello, time.monotonic(), bus.reachable)

    def _forget_dropped(self) -> None:
        """Un-welcome on the bus the agents the core forgot (silent, or replaced by a restart)."""
        assert self.bus is not None
        for identity in self.core.take_dropped():
            self.bus.forget(identity)

    def _tick_loop(self) -> None:
        while True:
            gevent.sleep(TICK_INTERVAL)
            self.actor_ref.tell(_Tick())

    # -- the inbox --

    def on_receive(self, message: Any) -> Any:
        now = time.monotonic()
        match message:
            case _FromBus(incoming=incoming):
                self._on_bus(incoming, now)
            case _FromControl(incoming=incoming):
                self._on_control(incoming, now)
            case _Tick():
                self.core.tick(now)
                self._forget_dropped()
                if self.launcher is not None:
                    self.launcher.check(self._agent_exited)
                self._ticks += 1
                if self.session is not None and self._ticks % SAVE_TOTALS_EVERY == 0:
                    self.session.set_totals(self.core.totals())
        self._flush()
        return None

    def _on_bus(self, incoming: Incoming, now: float) -> None:
        sender = incoming.sender
        if sender is None:
            return
        if isinstance(incoming.message, Hello):
            self.core.agent_joined(sender, incoming.message, now)
            self._forget_dropped()  # a restart's previous process, at once
            return
        self.core.handle(sender, incoming.message, now)

    def _on_control(self, incoming: Incoming, now: float) -> None:
        sender = incoming.sender
        message = incoming.message
        if sender is None or isinstance(message, Hello):
            return
        reply: Message
        match message:
            case AddTorrent():
                reply = self.core.add_torrent(message, now)
            case AddWebSeed():
                reply = self.core.add_web_seed(message, now)
            case ListTorrents():
                reply = self.core.status(now)
            case GetStatus():
                reply = self.core.status(now, message)
            case RemoveTorrent():
                reply = self.core.remove_torrent(message, now)
            case PauseTorrent(info_hash=info_hash):
                reply = self.core.pause(info_hash, now)
            case ResumeTorrent(info_hash=info_hash):
                reply = self.core.resume(info_hash, now)
            case VerifyTorrent(info_hash=info_hash):
                reply = self.core.verify(info_hash, now)
            case ExportTorrent(info_hash=info_hash):
                reply = self.core.export(info_hash, now)
            case WatchSession():
                reply = self.core.watch(message, now)
            case ShutdownRequested():
                reply = ShutdownAccepted()
                self.request_stop(0, "shutdown requested")
            case _:
                reply = ControlFailed(
                    "unknown_request", f"{type(message).__name__} is not a request"
                )
        assert self.control is not None
        self.control.send(reply, to=sender)

    def _agent_exited(self, agent: AgentProcess, code: int) -> None:
        registered = self.core.agents.named(agent.agent_id)
        if registered is not None:
            self.core.agent_left(registered.identity, time.monotonic())
            if self.bus is not None:
                self.bus.forget(registered.identity)
        restarts = self._restarts.get(agent.kind, 0)
        if restarts >= MAX_RESTARTS or self.launcher is None:
            self.failure = (
                f"the {agent.kind.value.replace('_', ' ')} keeps exiting (code {code}); "
                "its log says why (--log-file FILE keeps it)"
            )
            log.error("%s: giving up", self.failure)
            return
        self._restarts[agent.kind] = restarts + 1
        log.error("%s exited unexpectedly (code %d): restarting it", agent.agent_id, code)
        self.launcher.start(agent.kind)

    def _flush(self) -> None:
        assert self.bus is not None
        for identity, message in self.core.take_outbox():
            self.bus.send(message, to=identity)

    # -- asked by the embedding process (one-shot download) --

    def add(self, request: AddTorrent) -> TorrentAdded | ControlFailed:
        reply = self.core.add_torrent(request, time.monotonic())
        self._flush()
        return reply

    def status(self) -> StatusReport:
        return self.core.status(time.monotonic())

    def session_failure(self) -> str | None:
        return self.failure

    def diagnosis(self, info_hash: InfoHash) -> str:
        return self.core.diagnosis(info_hash)

    def export(self, request: ExportTorrent) -> TorrentExported | ControlFailed:
        return self.core.export(request.info_hash, time.monotonic())
