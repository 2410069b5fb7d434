# The tracker agent's actor: the bus socket, one greenlet per announce, and the announce timer.
#
# Strategy: ``TrackerAgent`` is a pykka actor (a greenlet under gevent) holding a
# ``TrackerAgentCore``, which decides everything. After each message the actor "pumps": it
# asks the core for the announces due now, spawns one greenlet per announce, sends the
# core's reports to the coordinator, and re-arms a single timer greenlet for the core's next
# deadline. So the actor sleeps until the next deadline or the next message, whichever comes
# first, and its inbox never waits on the network.
#
# Rules:
# - Every announce runs in its own greenlet under a ``gevent.Timeout`` of ``announce_timeout``
#   seconds and ends by telling the actor its outcome: one dead tracker never delays another
#   tracker or torrent. Only the actor touches the core.
# - ``UntrackTorrent`` kills the torrent's announces in flight (so a late ``started`` cannot
#   overtake the ``stopped``), sends ``stopped`` with at most STOP_TIMEOUT seconds to answer,
#   and forgets the torrent at once.
# - ``Shutdown``: ``stopped`` for every torrent in parallel, waited for at most STOP_TIMEOUT
#   seconds in all, then the runner is asked to stop. A SIGTERM/SIGINT (no ``Shutdown``) does
#   the same, best effort, in ``on_stop``. ``Rejected`` at hello stops the process with exit
#   code 1.
# - Heartbeats go to the coordinator every ``Welcome.heartbeat_interval`` seconds.

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.pool
import pykka

from shared.bus import (
    Goodbye,
    Heartbeat,
    Message,
    Rejected,
    ServiceKind,
    Shutdown,
    TorrentCompleted,
    TrackTorrent,
    UntrackTorrent,
    UpdateTransfer,
    Welcome,
    make_hello,
)
from shared.errors import TrackerError
from shared.runtime import EXIT_FAILURE, BusSocket, Incoming, ServiceRunner, with_context
from shared.runtime.agent import AgentOptions
from shared.tracker import AnnounceEvent, AnnounceFailure, AnnounceResponse
from shared.types import InfoHash

from .core import AnnounceJob, AnnounceOutcome, TrackerAgentCore, url_scheme
from .http_client import announce_http, format_seconds
from .udp_client import UdpTrackerClient

__all__ = ["STOP_TIMEOUT", "TrackerAgent", "run_announce"]

log = logging.getLogger(__name__)

STOP_TIMEOUT = 2.5
"""Seconds a ``stopped`` announce (or all of them, at shutdown) may take."""

_MIN_HEARTBEAT = 0.1  # seconds; a smaller interval from the coordinator is raised to this
_BUS_LINGER = 0.5  # seconds for the last messages (Goodbye) to leave at stop


@dataclass(frozen=True, slots=True)
class _Tick:
    """The timer fired: something may be due."""


@dataclass(frozen=True, slots=True)
class _Finished:
    """An announce greenlet ended."""

    job: AnnounceJob
    outcome: AnnounceOutcome


def run_announce(
    job: AnnounceJob, timeout: float, udp: UdpTrackerClient
) -> AnnounceResponse | AnnounceFailure | TrackerError:
    """Send one announce, within ``timeout`` seconds whatever the tracker does.

    Must run in a greenlet of a gevent-patched process (the timeout is a ``gevent.Timeout``).

    Returns:
        The tracker's answer or refusal, or the ``TrackerError`` that ended it.
    """
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        if url_scheme(job.url) == "udp":
            return udp.announce(job.url, job.request, timeout=timeout)
        return announce_http(job.url, job.request, timeout=timeout)
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        return TrackerError("timed_out", f"timed out after {format_seconds(timeout)} s")
    except TrackerError as exc:
        return exc
    except Exception as exc:  # a bug must cost one announce, not the agent
        log.exception("announce to %s failed unexpectedly", job.url)
        return TrackerError("internal_error", f"internal error: {type(exc).__name__}")
    finally:
        timer.close()


class TrackerAgent(pykka.ThreadingActor):
    """Announces torrents to their trackers and reports peers and tracker states.

    Args:
        options: the agent's command line and config (``[tracker_agent]`` is used).
        runner: stopped on ``Shutdown`` or ``Rejected``.
        announce_to_all_tiers: see ``AnnounceSchedule``.
        udp: the UDP tracker client (default: BEP 15 timing).
        clock: monotonic seconds.
        rng: shuffles tiers and draws announce keys (default: seeded from the OS).
    """

    def __init__(
        self,
        options: AgentOptions,
        runner: ServiceRunner,
        *,
        announce_to_all_tiers: bool = False,
        udp: UdpTrackerClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__()
        self._options = options
        self._config = options.config.tracker_agent
        self._runner = runner
        self._clock = clock
        self._udp = udp or UdpTrackerClient()
        self._core = TrackerAgentCore(
            numwant=self._config.numwant,
            rng=rng or random.Random(),
            announce_to_all_tiers=announce_to_all_tiers,
        )
        self._stop_bound = min(self._config.announce_timeout, STOP_TIMEOUT)
        self._bus: BusSocket | None = None
        self._running: dict[int, tuple[AnnounceJob, gevent.Greenlet[Any, Any]]] = {}
        self._stops = gevent.pool.Group()
        self._timer: gevent.Greenlet[Any, Any] | None = None
        self._timer_at: float | None = None
        self._heartbeat: gevent.Greenlet[Any, Any] | None = None
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------------

    def on_start(self) -> None:
        agent_id = self._options.agent_id
        self._bus = BusSocket.dealer(self.actor_ref.tell, name="tracker-agent", identity=agent_id)
        self._bus.connect(self._options.bus)
        self._bus.start()
        hello = make_hello(ServiceKind.TRACKER_AGENT, agent_id, socket.gethostname(), os.getpid())
        self._bus.send(hello)
        log.info("tracker agent %s connecting to %s", agent_id, self._options.bus)

    def on_stop(self) -> None:
        self._cancel_timer()
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        if not self._closing:  # stopped by a signal, not by Shutdown: still say goodbye
            self._closing = True
            self._kill_announces(None)
            self._send_stops(self._core.untrack_all())
            self._stops.join(timeout=self._stop_bound)
        self._stops.kill(block=True, timeout=1.0)
        self._kill_announces(None)
        if self._bus is not None:
            self._bus.send(Goodbye("stopping"))
            self._bus.close(linger=_BUS_LINGER)

    def on_failure(
        self, exception_type: Any, exception_value: Any, traceback: Any
    ) -> None:  # pragma: no cover - a bug; the runner sees the dead actor and exits 1
        self.on_stop()

    # --- messages -----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case Incoming(message=bus_message):
                self._on_bus(bus_message)
            case _Finished(job, outcome):
                self._on_finished(job, outcome)
            case _Tick():
                self._timer, self._timer_at = None, None
            case _:
                log.warning("ignored unexpected actor message %r", message)
        self._pump()
        return None

    def _on_bus(self, message: Message) -> None:
        now = self._clock()
        match message:
            case TrackTorrent():
                if self._closing:
                    return
                tagged = with_context(log, info_hash=message.info_hash)
                tiers = sum(len(tier.urls) for tier in message.tiers)
                tagged.info("tracking: %d tracker URLs in %d tiers", tiers, len(message.tiers))
                self._send(self._core.track(message, now))
            case UpdateTransfer():
                self._core.update(message)
            case TorrentCompleted(info_hash):
                with_context(log, info_hash=info_hash).info("download complete")
                self._core.complete(info_hash, now)
            case UntrackTorrent(info_hash):
                with_context(log, info_hash=info_hash).info("untracking")
                self._kill_announces(info_hash)
                self._send_stops(self._core.untrack(info_hash))
            case Shutdown(reason):
                self._shutdown(reason)
            case Welcome(server_id=server, heartbeat_interval=interval):
                log.info("welcomed by %s", server)
                self._start_heartbeat(interval)
            case Rejected(reason, text):
                log.error("the coordinator rejected us (%s): %s", reason, text)
                self._runner.request_stop(EXIT_FAILURE, f"rejected: {reason}")
            case Heartbeat():
                pass
            case _:
                log.debug("ignored %s", type(message).__name__)

    def _on_finished(self, job: AnnounceJob, outcome: AnnounceOutcome) -> None:
        tagged = with_context(log, info_hash=job.info_hash)
        if job.event is AnnounceEvent.STOPPED:
            if isinstance(outcome, AnnounceResponse):
                tagged.info("%s: stopped announced", job.url)
            else:
                tagged.info("%s: stopped announce failed: %s", job.url, _text(outcome))
            return
        running = self._running.get(job.attempt)
        if running is not None and running[0] is job:
            del self._running[job.attempt]
        if isinstance(outcome, AnnounceResponse):
            tagged.info(
                "%s: %s announce answered: %d peers, interval %d s",
                job.url,
                job.event.value,
                len(outcome.peers),
                outcome.interval,
            )
        else:
            tagged.warning("%s: %s announce failed: %s", job.url, job.event.value, _text(outcome))
        self._send(self._core.finish(job, outcome, self._clock()))

    def _shutdown(self, reason: str) -> None:
        if self._closing:
            return
        log.info("shutdown (%s): announcing stopped", reason)
        self._closing = True
        self._cancel_timer()
        self._kill_announces(None)
        self._send_stops(self._core.untrack_all())
        stops = self._stops
        bound = self._stop_bound
        runner = self._runner

        def finish() -> None:
            stops.join(timeout=bound)
            runner.request_stop(reason=f"shutdown: {reason}")

        gevent.spawn(finish)

    # --- announces and the timer --------------------------------------------------------------

    def _pump(self) -> None:
        if self._closing:
            return
        now = self._clock()
        jobs, reports = self._core.due(now)
        self._send(reports)
        timeout = self._config.announce_timeout
        for job in jobs:
            greenlet = gevent.spawn(self._run, job, timeout)
            self._running[job.attempt] = (job, greenlet)
        self._arm(self._core.next_deadline(now), now)

    def _run(self, job: AnnounceJob, timeout: float) -> None:
        outcome = run_announce(job, timeout, self._udp)
        with contextlib.suppress(pykka.ActorDeadError):  # stopped meanwhile: nobody cares
            self.actor_ref.tell(_Finished(job, outcome))

    def _send_stops(self, jobs: Iterable[AnnounceJob]) -> None:
        for job in jobs:
            self._stops.spawn(self._run, job, self._stop_bound)

    def _kill_announces(self, info_hash: InfoHash | None) -> None:
        """Kill the announces in flight of one torrent (None: of all torrents)."""
        doomed = [
            attempt
            for attempt, (job, _) in self._running.items()
            if info_hash is None or job.info_hash == info_hash
        ]
        for attempt in doomed:
            _, greenlet = self._running.pop(attempt)
            greenlet.kill(block=False)

    def _arm(self, deadline: float | None, now: float) -> None:
        if deadline == self._timer_at and self._timer is not None:
            return
        self._cancel_timer()
        if deadline is None:
            return
        self._timer_at = deadline
        self._timer = gevent.spawn_later(max(0.0, deadline - now), self._tick)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.kill(block=False)
        self._timer, self._timer_at = None, None

    def _tick(self) -> None:
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Tick())

    # --- the bus ------------------------------------------------------------------------------

    def _send(self, messages: Iterable[Message]) -> None:
        if self._bus is None:
            return
        for message in messages:
            self._bus.send(message)

    def _start_heartbeat(self, interval: float) -> None:
        if self._heartbeat is not None or interval <= 0 or self._bus is None:
            return
        bus = self._bus
        period = max(interval, _MIN_HEARTBEAT)

        def beat() -> None:
            for seq in itertools.count(1):
                gevent.sleep(period)
                bus.send(Heartbeat(seq))

        self._heartbeat = gevent.spawn(beat)


def _text(outcome: AnnounceOutcome) -> str:
    if isinstance(outcome, AnnounceFailure):
        return outcome.message
    return str(outcome)
