"""An agent's link to its coordinator: hello, registration, heartbeats, loss, re-registration.

Strategy: ``LinkPolicy`` decides and ``CoordinatorLink`` does. The policy is pure (the clock is
passed in): it is fed what arrives and the time, and answers with actions (say hello, send a
heartbeat, warn, and the events the agent's actor hears). The link owns a DEALER
``BusSocket`` and one ticker greenlet that sleeps until the policy's next deadline; it runs the
actions and hands every other coordinator message to the actor's ``tell`` as an ``Incoming``.

Rules:
- Every ``Welcome`` is a new registration: the coordinator holds no state for this agent, so
  the link sends ``AgentInfo`` and tells the actor ``Registered`` before anything that follows
  the ``Welcome`` reaches the actor (the receiver greenlet hands on messages in order).
- Anything heard from the coordinator counts as alive. Silent for ``misses`` heartbeat
  intervals while registered: the actor hears ``CoordinatorLost("heartbeat_timeout")`` and the
  link says ``Hello`` again every ``hello_retry`` seconds until a coordinator answers.
  ``Rejected("hello_first")`` (the coordinator restarted, or counted us dead) is
  ``CoordinatorLost("hello_first")`` and a new ``Hello`` (at most one per ``hello_retry``).
  Any other ``Rejected`` is final: ``LinkRefused``, logged as one error line with the
  coordinator's text, and the actor stops with ``LinkRefused.exit_code``: 2 (``EXIT_CONFIG``,
  which the systemd units do not restart) when only the operator can mend it (``CONFIG_REFUSALS``:
  this agent id already runs in another process, or this key may not speak for it), else 1.
- The DEALER's routing identity is ``routing_identity(agent_id, incarnation)``: the
  incarnation is picked once per process (``process_incarnation``), so a second process
  started with the same agent id never takes over this one's connection; the coordinator
  tells a restart from a second live process and refuses the latter (``duplicate_agent``).
- A ``Hello`` said again after a silence goes out on a new socket: ZeroMQ queues messages for
  a peer that is not there, and a coordinator that comes back must not find a pile of stale
  hellos (each would be answered as a new registration) or heartbeats.
- While unregistered, ``send`` drops what the actor sends (and returns False): a coordinator
  that has not welcomed us answers it with ``hello_first`` and holds no state it could apply
  to; what matters is told again after the next ``Registered``.
- Unwelcomed for ``WARN_AFTER`` seconds: one warning naming the likely causes, repeated every
  ``WARN_EVERY`` seconds.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import pykka

from torviz.shared.bus import (
    AgentInfo,
    Goodbye,
    Heartbeat,
    Message,
    Rejected,
    RejectReason,
    ServiceKind,
    Welcome,
    make_hello,
)
from torviz.shared.bus.hello import routing_identity

from .service import EXIT_CONFIG, EXIT_FAILURE
from .sockets import BusSocket, Incoming

if TYPE_CHECKING:
    from .curve import CurveClient

__all__ = [
    "CONFIG_REFUSALS",
    "MIN_HEARTBEAT",
    "WARN_AFTER",
    "WARN_EVERY",
    "CoordinatorLink",
    "CoordinatorLost",
    "LinkAction",
    "LinkEvent",
    "LinkPolicy",
    "LinkRefused",
    "LinkState",
    "Registered",
    "SayHello",
    "SendHeartbeat",
    "WarnUnanswered",
    "process_incarnation",
]

log = logging.getLogger(__name__)

WARN_AFTER = 10.0
"""Seconds without a ``Welcome`` before the first warning."""
WARN_EVERY = 60.0
"""Seconds between two warnings while still unwelcomed."""
MIN_HEARTBEAT = 0.05
"""Seconds; a smaller heartbeat interval from the coordinator is raised to this (0 stays 0:
no heartbeats and no loss detection)."""

CONFIG_REFUSALS = frozenset({RejectReason.DUPLICATE_AGENT, RejectReason.IDENTITY_NOT_ALLOWED})
"""Refusals only the operator can mend (another ``--agent-id``, the right key): exit 2."""

_MIN_WAIT = 0.01  # seconds the ticker sleeps at least, so a deadline in the past cannot spin


@functools.cache
def process_incarnation() -> str:
    """This process's incarnation: 8 random hex digits, picked once (``routing_identity``)."""
    return secrets.token_hex(4)


# --- what the actor hears ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registered:
    """A coordinator welcomed this agent: it holds no state for us (drop per-session work)."""

    server_id: str
    heartbeat_interval: float
    """Seconds between heartbeats, as told in ``Welcome`` (0: none)."""


@dataclass(frozen=True, slots=True)
class CoordinatorLost:
    """The coordinator stopped answering or forgot us; the link says hello until one answers.

    ``reason``: ``heartbeat_timeout`` (silent for the heartbeat misses) or ``hello_first``
    (it answered a message with ``Rejected("hello_first")``: restarted, or counted us dead).
    """

    reason: str


@dataclass(frozen=True, slots=True)
class LinkRefused:
    """The coordinator refused our ``Hello`` for good (e.g. ``version_mismatch``): stop with
    ``exit_code``."""

    reason: str
    message: str

    @property
    def exit_code(self) -> int:
        """2 (``EXIT_CONFIG``) for a refusal in ``CONFIG_REFUSALS``, else 1."""
        return EXIT_CONFIG if self.reason in CONFIG_REFUSALS else EXIT_FAILURE


LinkEvent = Registered | CoordinatorLost | LinkRefused


# --- what the policy asks the link to do --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SayHello:
    """Send ``Hello``; ``fresh``: on a new socket, dropping what the old one still queues."""

    fresh: bool


@dataclass(frozen=True, slots=True)
class SendHeartbeat:
    seq: int


@dataclass(frozen=True, slots=True)
class WarnUnanswered:
    """Still unwelcomed after ``waited`` seconds: tell the user why that may be."""

    waited: float


LinkAction = SayHello | SendHeartbeat | WarnUnanswered | Registered | CoordinatorLost | LinkRefused


class LinkState(enum.Enum):
    IDLE = "idle"
    """Not started."""
    HELLO = "hello"
    """Saying hello until a coordinator welcomes us."""
    REGISTERED = "registered"
    REFUSED = "refused"
    """Refused for good: nothing more is sent."""


class LinkPolicy:
    """When to say hello, send a heartbeat, warn, and count the coordinator as lost.

    Pure: every method takes the time (monotonic seconds) and returns the actions due.

    Args:
        misses: heartbeat intervals of silence after which the coordinator counts as lost.
        hello_retry: seconds between two hellos while unwelcomed.
        warn_after: seconds unwelcomed before the first warning.
        warn_every: seconds between two warnings.

    Raises:
        ValueError: ``misses`` below 1 or a non-positive duration.
    """

    def __init__(
        self,
        *,
        misses: int = 3,
        hello_retry: float = 2.0,
        warn_after: float = WARN_AFTER,
        warn_every: float = WARN_EVERY,
    ) -> None:
        if misses < 1:
            raise ValueError(f"heartbeat misses must be at least 1, not {misses}")
        if not (hello_retry > 0 and warn_after > 0 and warn_every > 0):
            raise ValueError("hello_retry, warn_after and warn_every are positive seconds")
        self.misses = misses
        self.hello_retry = hello_retry
        self.warn_after = warn_after
        self.warn_every = warn_every
        self.state = LinkState.IDLE
        self.interval = 0.0
        """The heartbeat interval of the current registration (0: none)."""
        self.server_id = ""
        self._heard_at = 0.0
        self._hello_at = 0.0
        self._waiting_since = 0.0
        self._warn_at = 0.0
        self._beat_at = 0.0
        self._seq = 0

    @property
    def registered(self) -> bool:
        return self.state is LinkState.REGISTERED

    @property
    def silence_bound(self) -> float:
        """Seconds of silence after which a registered coordinator counts as lost (0: never)."""
        return self.misses * self.interval

    def start(self, now: float) -> list[LinkAction]:
        """The link is up: say the first hello."""
        if self.state is not LinkState.IDLE:
            return []
        return self._unregistered(now, fresh=False)

    def received(self, message: Message, now: float) -> list[LinkAction]:
        """Something arrived from the coordinator; returns what to do about it."""
        if self.state in (LinkState.IDLE, LinkState.REFUSED):
            return []
        self._heard_at = now
        match message:
            case Welcome(server_id=server_id, heartbeat_interval=interval):
                self.state = LinkState.REGISTERED
                self.server_id = server_id
                self.interval = max(interval, MIN_HEARTBEAT) if interval > 0 else 0.0
                self._seq = 0
                self._beat_at = now + self.interval
                self._hello_at = -math.inf  # answered: a hello_first may be met at once
                return [Registered(server_id, self.interval)]
            case Rejected(reason=RejectReason.HELLO_FIRST):
                actions: list[LinkAction] = []
                if self.state is LinkState.REGISTERED:
                    actions.append(CoordinatorLost(RejectReason.HELLO_FIRST))
                    self._enter_hello(now)
                if now - self._hello_at >= self.hello_retry:
                    self._hello_at = now
                    actions.append(SayHello(fresh=False))  # it answers: this connection works
                return actions
            case Rejected(reason=reason, message=text):
                self.state = LinkState.REFUSED
                return [LinkRefused(reason, text)]
            case _:
                return []

    def tick(self, now: float) -> list[LinkAction]:
        """Time passed: the heartbeat, loss, hello and warning that are due now."""
        if self.state is LinkState.REGISTERED:
            if self.interval <= 0:
                return []
            if now - self._heard_at >= self.silence_bound:
                return [CoordinatorLost("heartbeat_timeout"), *self._unregistered(now, fresh=True)]
            if now >= self._beat_at:
                self._seq += 1
                self._beat_at += self.interval
                if self._beat_at <= now:  # woken late: no burst of heartbeats to catch up
                    self._beat_at = now + self.interval
                return [SendHeartbeat(self._seq)]
            return []
        if self.state is not LinkState.HELLO:
            return []
        actions: list[LinkAction] = []
        if now - self._hello_at >= self.hello_retry:
            self._hello_at = now
            actions.append(SayHello(fresh=True))
        if now >= self._warn_at:
            self._warn_at = now + self.warn_every
            actions.append(WarnUnanswered(now - self._waiting_since))
        return actions

    def next_deadline(self) -> float | None:
        """When ``tick`` has something to do next; None: only a message can change that."""
        if self.state is LinkState.REGISTERED:
            if self.interval <= 0:
                return None
            return min(self._beat_at, self._heard_at + self.silence_bound)
        if self.state is LinkState.HELLO:
            return min(self._hello_at + self.hello_retry, self._warn_at)
        return None

    def _unregistered(self, now: float, *, fresh: bool) -> list[LinkAction]:
        self._enter_hello(now)
        self._hello_at = now
        return [SayHello(fresh=fresh)]

    def _enter_hello(self, now: float) -> None:
        self.state = LinkState.HELLO
        self.interval = 0.0
        self._waiting_since = now
        self._warn_at = now + self.warn_after


# --- the link -----------------------------------------------------------------------------------


class CoordinatorLink:
    """An agent's connection to its coordinator, kept registered.

    Args:
        tell: the actor's inbox (``actor_ref.tell``): gets ``Registered``, ``CoordinatorLost``,
            ``LinkRefused`` and an ``Incoming`` for every other coordinator message
            (``Welcome``, ``Rejected`` and ``Heartbeat`` stay here).
        service: this agent's kind.
        agent_id: this agent's id.
        endpoint: the coordinator's bus endpoint.
        info: what the agent offers, asked right after each ``Welcome`` (called in the
            socket's receiver greenlet: it must not block).
        curve: CURVE client keys when the link is encrypted; None: plain.
        misses: heartbeat intervals of silence before the coordinator counts as lost
            (``[coordinator] heartbeat_misses``).
        hello_retry: seconds between two hellos while unwelcomed.
        host: shown to the coordinator (default: this host's name).
        pid: shown to the coordinator (default: this process's id).
        clock: monotonic seconds.
        incarnation: this process's token in the DEALER's routing identity (default:
            ``process_incarnation()``; tests pass their own to play several processes).

    Raises:
        ValueError: the agent id is too long for a routing identity.
    """

    def __init__(
        self,
        tell: Callable[[object], None],
        *,
        service: ServiceKind,
        agent_id: str,
        endpoint: str,
        info: Callable[[], AgentInfo],
        curve: CurveClient | None = None,
        misses: int = 3,
        hello_retry: float = 2.0,
        host: str | None = None,
        pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        incarnation: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.identity = routing_identity(agent_id, incarnation or process_incarnation())
        """The DEALER's routing identity: ``<agent id>/<incarnation>``."""
        self.dropped = 0
        """Messages the actor sent while unregistered (dropped)."""
        self._tell = tell
        self._service = service
        self._info = info
        self._curve = curve
        self._clock = clock
        self._policy = LinkPolicy(misses=misses, hello_retry=hello_retry)
        self._hello = make_hello(
            service,
            agent_id,
            host if host is not None else socket.gethostname(),
            pid if pid is not None else os.getpid(),
        )
        self._bus: BusSocket | None = None
        self._ticker: gevent.Greenlet[Any, Any] | None = None
        self._wake = gevent.event.Event()
        self._closed = False

    @property
    def registered(self) -> bool:
        """Whether a coordinator has welcomed us and is still heard from."""
        return self._policy.registered and not self._closed

    @property
    def server_id(self) -> str:
        """The welcoming coordinator's id (empty before the first ``Welcome``)."""
        return self._policy.server_id

    def start(self) -> None:
        """Connect, say ``Hello`` and start the ticker greenlet (call once, from the hub).

        Raises:
            zmq.ZMQError: the endpoint cannot be used (malformed, unknown transport).
        """
        if self._bus is not None or self._closed:
            raise RuntimeError("the coordinator link is already started or closed")
        self._bus = self._open()
        log.info("connecting to the coordinator at %s as %s", self.endpoint, self.identity)
        self._run(self._policy.start(self._clock()))
        self._ticker = gevent.spawn(self._tick_loop)

    def send(self, message: Message, data: bytes | memoryview | None = None) -> bool:
        """Queue a message for the coordinator; returns at once.

        Returns:
            False when it was dropped: not registered (the coordinator would refuse it), the
            link is closed, or the socket's queue is full.

        Raises:
            BusError: the message breaks the schema (a bug on our side).
        """
        if self._bus is None or not self.registered:
            self.dropped += 1
            if self.dropped <= 10 or self.dropped % 1000 == 0:
                log.debug(
                    "not registered: dropped %s (%d so far)", type(message).__name__, self.dropped
                )
            return False
        return self._bus.send(message, data)

    def close(self, goodbye: str | None = "stopping", linger: float = 0.5) -> None:
        """Stop the ticker, say ``Goodbye(goodbye)`` unless None, and close the socket.

        Args:
            goodbye: the reason told to the coordinator; None: leave without a word.
            linger: seconds for the last messages to leave.
        """
        if self._closed:
            return
        self._closed = True
        if self._ticker is not None and self._ticker is not gevent.getcurrent():
            self._ticker.kill(block=False)
        if self._bus is not None:
            if goodbye is not None:
                self._bus.send(Goodbye(goodbye))
            self._bus.close(linger=linger)

    # -- inside ------------------------------------------------------------------------------

    def _open(self) -> BusSocket:
        bus = BusSocket.dealer(
            self._receive,
            name=f"{self._service.value}-bus",
            identity=self.identity,
            curve=self._curve,
        )
        try:
            bus.connect(self.endpoint)
        except BaseException:
            bus.close(linger=0)
            raise
        bus.start()
        return bus

    def _reopen(self) -> None:
        """A new socket: whatever the old connection still queued is dropped with it."""
        old, self._bus = self._bus, None
        if old is not None:
            old.close(linger=0)
        self._bus = self._open()

    def _receive(self, incoming: Incoming) -> None:
        """The socket's handler, in its receiver greenlet."""
        if self._closed:
            return
        message = incoming.message
        actions = self._policy.received(message, self._clock())
        self._run(actions)
        if not isinstance(message, Welcome | Rejected | Heartbeat):
            self._deliver(incoming)
        self._wake.set()  # the deadlines moved

    def _tick_loop(self) -> None:
        while not self._closed:
            self._wake.clear()
            self._run(self._policy.tick(self._clock()))
            deadline = self._policy.next_deadline()
            timeout = None if deadline is None else max(_MIN_WAIT, deadline - self._clock())
            self._wake.wait(timeout)

    def _run(self, actions: list[LinkAction]) -> None:
        for action in actions:
            if self._closed:
                return
            match action:
                case SayHello(fresh=fresh):
                    if fresh:
                        self._reopen()
                    assert self._bus is not None
                    self._bus.send(self._hello)
                case SendHeartbeat(seq=seq):
                    assert self._bus is not None
                    self._bus.send(Heartbeat(seq))
                case WarnUnanswered(waited=waited):
                    log.warning(
                        "no answer from the coordinator at %s for %.0f s: is it running and "
                        "reachable from this host, and (with CURVE keys) does it know this "
                        "agent's public key? Still trying.",
                        self.endpoint,
                        waited,
                    )
                case Registered(server_id=server, heartbeat_interval=interval):
                    log.info(
                        "registered with coordinator %s at %s (heartbeats every %g s)",
                        server,
                        self.endpoint,
                        interval,
                    )
                    assert self._bus is not None
                    self._bus.send(self._info())
                    self._deliver(action)
                case CoordinatorLost(reason=reason):
                    why = (
                        f"silent for {self._policy.silence_bound:g} s"
                        if reason == "heartbeat_timeout"
                        else "it no longer knows this agent (restarted, or counted us dead)"
                    )
                    log.warning(
                        "lost the coordinator at %s: %s; saying hello again", self.endpoint, why
                    )
                    self._deliver(action)
                case LinkRefused(reason=reason, message=text):
                    log.error("the coordinator refused this agent (%s): %s", reason, text)
                    self._deliver(action)

    def _deliver(self, event: object) -> None:
        with contextlib.suppress(pykka.ActorDeadError):  # the actor is stopping: nobody listens
            self._tell(event)
