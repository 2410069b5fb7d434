"""The tracker agent's actor: the bus socket, one greenlet per announce, and the announce timer.

Strategy: ``TrackerAgent`` is a pykka actor (a greenlet under gevent) holding a
``TrackerAgentCore``, which decides everything. After each message the actor "pumps": it
asks the core for the announces due now, spawns one greenlet per announce, sends the
core's reports to the coordinator, and re-arms a single timer greenlet for the core's next
deadline. So the actor sleeps until the next deadline or the next message, whichever comes
first, and its inbox never waits on the network.

Rules:
- Every announce and scrape runs in its own greenlet under a ``gevent.Timeout`` and ends by
  telling the actor its outcome: one dead tracker never delays another tracker or torrent.
  Only the actor touches the core. The bounds: an HTTP announce and any scrape,
  ``announce_timeout``; a ``stopped`` announce, STOP_TIMEOUT; a UDP announce, its whole
  BEP 15 retransmit schedule (the core stops waiting for it after ``announce_timeout`` and
  falls through to the next tracker, see ``core/tracking.py``).
- Replies are parsed on a thread of the gevent hub's pool when they are big (over
  INLINE_PARSE_BYTES), so a 1 MiB reply never freezes the other greenlets.
- ``UntrackTorrent`` kills the torrent's announces in flight (so a late ``started`` cannot
  overtake the ``stopped``), sends ``stopped`` with at most STOP_TIMEOUT seconds to answer,
  and forgets the torrent at once.
- ``Shutdown``: ``stopped`` for every torrent in parallel, waited for at most STOP_TIMEOUT
  seconds in all, then the runner is asked to stop. A SIGTERM/SIGINT (no ``Shutdown``) does
  the same, best effort, in ``on_stop``.
- The bus is a ``CoordinatorLink`` (hello, heartbeats, re-registration). On ``Registered``
  and on ``CoordinatorLost`` every torrent is forgotten without announcing ``stopped``: the
  coordinator holds no state for us any more and tracks its torrents again at once, so the
  trackers see one continuous presence. ``LinkRefused`` stops the process with its exit
  code: 1 (a version mismatch), 2 for what the operator must mend (a duplicate agent id).
- Every ``AgentInfo`` carries ``announce_host``, the address trackers see our announces come
  from (``shared.runtime.address``: ``advertise_host``, else a concrete ``bind_address``,
  else this host's route to the coordinator); the coordinator has us announce the port of
  the peer agent listening at that address.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import gevent
import gevent.pool
import pykka

from torviz.shared.bus import (
    AgentInfo,
    DhtNodeSeen,
    Message,
    ServiceKind,
    Shutdown,
    TorrentCompleted,
    TrackTorrent,
    UntrackTorrent,
    UpdateTransfer,
)
from torviz.shared.errors import TrackerError
from torviz.shared.runtime.address import HostAdvertiser
from torviz.shared.runtime.agent import AgentOptions
from torviz.shared.runtime.http import HttpClient
from torviz.shared.runtime.link import CoordinatorLink, CoordinatorLost, LinkRefused, Registered
from torviz.shared.runtime.logging import with_context
from torviz.shared.runtime.service import ServiceRunner
from torviz.shared.runtime.sockets import Incoming
from torviz.shared.tracker import AnnounceEvent, AnnounceFailure, AnnounceResponse
from torviz.shared.types import InfoHash

from .core.tracking import (
    AnnounceJob,
    AnnounceOutcome,
    Job,
    ScrapeJob,
    ScrapeOutcome,
    TrackerAgentCore,
    url_scheme,
)
from .core.udp_exchange import RetransmitPolicy
from .http_client import announce_http, format_seconds, scrape_http, tracker_client
from .udp_client import UdpTrackerClient

if TYPE_CHECKING:
    from torviz.shared.runtime.curve import CurveClient

    from .dht_service import DhtService

__all__ = [
    "ADVERTISE_KEY",
    "INLINE_PARSE_BYTES",
    "STOP_TIMEOUT",
    "TrackerAgent",
    "run_announce",
    "run_scrape",
]

log = logging.getLogger(__name__)

ADVERTISE_KEY = "[tracker_agent] advertise_host"

STOP_TIMEOUT = 2.5
"""Seconds a ``stopped`` announce (or all of them, at shutdown) may take."""

INLINE_PARSE_BYTES = 64 * 1024
"""Reply bodies up to this size are parsed in the announcing greenlet; bigger ones on a thread."""

_UDP_SLACK = 60.0  # seconds added to the BEP 15 schedule for the hard bound of a UDP announce

_BUS_LINGER = 0.5  # seconds for the last messages (Goodbye) to leave at stop


@dataclass(frozen=True, slots=True)
class _Tick:
    """The timer fired: something may be due."""


@dataclass(frozen=True, slots=True)
class _DhtReport:
    """The DHT node found peers, or its state changed: messages for the coordinator."""

    messages: Sequence[Message]


@dataclass(frozen=True, slots=True)
class _Finished:
    """An announce greenlet ended."""

    job: AnnounceJob
    outcome: AnnounceOutcome


@dataclass(frozen=True, slots=True)
class _Scraped:
    """A scrape greenlet ended."""

    job: ScrapeJob
    outcome: ScrapeOutcome


_T = TypeVar("_T")


def _offload(parse: Callable[[bytes], _T], body: bytes, /) -> _T:
    """Parse a big reply on a hub thread: this greenlet waits, the others run."""
    if len(body) <= INLINE_PARSE_BYTES:
        return parse(body)
    result: _T = gevent.get_hub().threadpool.apply(parse, (body,))
    return result


def _bounded(what: str, url: str, timeout: float, call: Callable[[], _T]) -> _T | TrackerError:
    """Run ``call`` within ``timeout`` seconds; its errors (and a bug) become values."""
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        return call()
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        return TrackerError("timed_out", f"timed out after {format_seconds(timeout)} s")
    except TrackerError as exc:
        return exc
    except Exception as exc:  # a bug must cost one announce, not the agent
        log.exception("%s to %s failed unexpectedly", what, url)
        return TrackerError("internal_error", f"internal error: {type(exc).__name__}")
    finally:
        timer.close()


def run_announce(
    job: AnnounceJob, timeout: float, udp: UdpTrackerClient, http: HttpClient | None = None
) -> AnnounceResponse | AnnounceFailure | TrackerError:
    """Send one announce and return how it ended, whatever the tracker does.

    An HTTP announce, and any ``stopped`` announce, is cut after ``timeout`` seconds. Any other
    UDP announce runs its full BEP 15 retransmit schedule (the caller stops waiting for it
    earlier, see ``core/tracking.py``), bounded here by that schedule plus a minute.

    Must run in a greenlet of a gevent-patched process (the timeout is a ``gevent.Timeout``).

    Returns:
        The tracker's answer or refusal, or the ``TrackerError`` that ended it.
    """
    url, request = job.url, job.request
    if url_scheme(url) == "udp":
        if job.event is AnnounceEvent.STOPPED:
            return _bounded(
                "announce", url, timeout, lambda: udp.announce(url, request, timeout=timeout)
            )
        bound = udp.policy.exchange_bound + _UDP_SLACK
        return _bounded("announce", url, bound, lambda: udp.announce(url, request))
    return _bounded(
        "announce",
        url,
        timeout,
        lambda: announce_http(url, request, timeout=timeout, client=http, offload=_offload),
    )


def run_scrape(
    job: ScrapeJob, timeout: float, udp: UdpTrackerClient, http: HttpClient | None = None
) -> ScrapeOutcome:
    """Scrape one torrent's counts, within ``timeout`` seconds; errors are returned."""
    url, info_hash = job.url, job.info_hash
    if url_scheme(url) == "udp":
        return _bounded("scrape", url, timeout, lambda: udp.scrape(url, info_hash, timeout=timeout))
    return _bounded(
        "scrape",
        url,
        timeout,
        lambda: scrape_http(url, info_hash, timeout=timeout, client=http, offload=_offload),
    )


class TrackerAgent(pykka.ThreadingActor):
    """Announces torrents to their trackers and reports peers and tracker states.

    Args:
        options: the agent's command line and config (``[tracker_agent]`` is used).
        runner: stopped on ``Shutdown`` or when the coordinator refuses us.
        announce_to_all_tiers: see ``AnnounceSchedule``; also set by the config key of that
            name.
        udp: the UDP tracker client (default: the config's retransmit schedule).
        clock: monotonic seconds.
        rng: shuffles tiers and draws announce keys (default: seeded from the OS).
        curve: CURVE keys for the bus when it is encrypted (see ``shared.runtime.curve``).
        advertise_host: the resolved ``[tracker_agent] advertise_host`` ("" when not set; the
            entry point resolves it, see ``ADVERTISE_KEY``).
        dht: the DHT node, its socket bound (None: the DHT is off); started with the actor,
            closed with it.
        http: the HTTP(S) tracker client (default: one from the config's ``bind_address`` and
            ``ca_file``); closed with the actor.
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
        curve: CurveClient | None = None,
        advertise_host: str = "",
        dht: DhtService | None = None,
        http: HttpClient | None = None,
    ) -> None:
        super().__init__()
        self._dht = dht
        self._options = options
        self._config = options.config.tracker_agent
        self._runner = runner
        self._clock = clock
        config = self._config
        policy = RetransmitPolicy(config.udp_retransmit_base, config.udp_max_retransmits)
        self._source = config.bind_address or None
        self._advertiser = HostAdvertiser(
            advertise_host, config.bind_address, options.bus, ADVERTISE_KEY
        )
        self._udp = udp or UdpTrackerClient(policy=policy, source_address=self._source)
        self._http = http or tracker_client(ca_file=config.ca_file, source_address=self._source)
        self._core = TrackerAgentCore(
            numwant=config.numwant,
            rng=rng or random.Random(),
            announce_to_all_tiers=announce_to_all_tiers or config.announce_to_all_tiers,
            patience=config.announce_timeout,
            scrape_interval=config.scrape_interval,
        )
        self._stop_bound = min(config.announce_timeout, STOP_TIMEOUT)
        self._curve = curve
        self._link: CoordinatorLink | None = None
        self._running: dict[int, tuple[Job, gevent.Greenlet[Any, Any]]] = {}
        self._stops = gevent.pool.Group()
        self._timer: gevent.Greenlet[Any, Any] | None = None
        self._timer_at: float | None = None
        self._closing = False

    # --- lifecycle ----------------------------------------------------------------------------

    def on_start(self) -> None:
        self._link = CoordinatorLink(
            self.actor_ref.tell,
            service=ServiceKind.TRACKER_AGENT,
            agent_id=self._options.agent_id,
            endpoint=self._options.bus,
            info=self._agent_info,
            curve=self._curve,
            misses=self._options.config.coordinator.heartbeat_misses,
            clock=self._clock,
        )
        self._link.start()
        if self._dht is not None:
            tell = self.actor_ref.tell

            def emit(messages: Sequence[Message]) -> None:
                with contextlib.suppress(pykka.ActorDeadError):
                    tell(_DhtReport(tuple(messages)))

            self._dht.start(emit)

    def on_stop(self) -> None:
        self._cancel_timer()
        if self._dht is not None:
            self._dht.close()
        if not self._closing:  # stopped by a signal, not by Shutdown: still say goodbye
            self._closing = True
            self._kill_announces(None)
            self._send_stops(self._core.untrack_all())
            self._stops.join(timeout=self._stop_bound)
        self._stops.kill(block=True, timeout=1.0)
        self._kill_announces(None)
        self._http.close()
        if self._link is not None:
            self._link.close("stopping", linger=_BUS_LINGER)

    def on_failure(
        self, exception_type: Any, exception_value: Any, traceback: Any
    ) -> None:  # pragma: no cover - a bug; the runner sees the dead actor and exits 1
        self.on_stop()

    # --- messages -----------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        match message:
            case Incoming(message=bus_message):
                self._on_bus(bus_message)
            case Registered() | CoordinatorLost():
                self._forget_all(message)
            case LinkRefused(reason) as refused:
                self._closing = True  # nothing to announce to a coordinator that refused us
                why = f"refused by the coordinator: {reason}"
                self._runner.request_stop(refused.exit_code, why)
            case _Finished(job, outcome):
                self._on_finished(job, outcome)
            case _Scraped(job, outcome):
                self._forget_running(job)
                self._send(self._core.finish_scrape(job, outcome, self._clock()))
            case _Tick():
                self._timer, self._timer_at = None, None
            case _DhtReport(messages):
                if not self._closing:
                    self._send(messages)
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
                if self._dht is not None:
                    self._dht.track(message)
            case UpdateTransfer():
                self._core.update(message)
            case TorrentCompleted(info_hash):
                with_context(log, info_hash=info_hash).info("download complete")
                self._core.complete(info_hash, now)
            case UntrackTorrent(info_hash):
                with_context(log, info_hash=info_hash).info("untracking")
                self._kill_announces(info_hash)
                self._send_stops(self._core.untrack(info_hash))
                if self._dht is not None:
                    self._dht.untrack(info_hash)
            case DhtNodeSeen(address):
                if self._dht is not None and not self._closing:
                    self._dht.node_seen(address)
            case Shutdown(reason):
                self._shutdown(reason)
            case _:
                log.debug("ignored %s", type(message).__name__)

    def _forget_all(self, event: Registered | CoordinatorLost) -> None:
        """A new registration, or the coordinator gone: forget every torrent, quietly.

        No ``stopped`` announce: the coordinator tracks its torrents again as soon as it knows
        us, and a ``stopped`` followed by a ``started`` would only make trackers drop and
        re-add us.
        """
        self._kill_announces(None)
        if self._dht is not None:
            self._dht.forget_all()
        forgotten = self._core.forget_all()
        if forgotten:
            why = "registered again" if isinstance(event, Registered) else "coordinator lost"
            log.info("%s: forgot %d torrents (no stopped announce)", why, forgotten)

    def _on_finished(self, job: AnnounceJob, outcome: AnnounceOutcome) -> None:
        tagged = with_context(log, info_hash=job.info_hash)
        if job.event is AnnounceEvent.STOPPED:
            if isinstance(outcome, AnnounceResponse):
                tagged.info("%s: stopped announced", job.url)
            else:
                tagged.info("%s: stopped announce failed: %s", job.url, _text(outcome))
            return
        self._forget_running(job)
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

    def _forget_running(self, job: Job) -> None:
        running = self._running.get(job.attempt)
        if running is not None and running[0] is job:
            del self._running[job.attempt]

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
            if isinstance(job, ScrapeJob):
                greenlet = gevent.spawn(self._run_scrape, job, timeout)
            else:
                greenlet = gevent.spawn(self._run, job, timeout)
            self._running[job.attempt] = (job, greenlet)
        self._arm(self._core.next_deadline(now), now)

    def _run(self, job: AnnounceJob, timeout: float) -> None:
        outcome = run_announce(job, timeout, self._udp, self._http)
        with contextlib.suppress(pykka.ActorDeadError):  # stopped meanwhile: nobody cares
            self.actor_ref.tell(_Finished(job, outcome))

    def _run_scrape(self, job: ScrapeJob, timeout: float) -> None:
        outcome = run_scrape(job, timeout, self._udp, self._http)
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(_Scraped(job, outcome))

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

    def _agent_info(self) -> AgentInfo:
        """What a tracker agent offers: the address its announces come from."""
        return AgentInfo(
            capacity=0,
            listen_address=None,
            data_endpoint="",
            curve_public_key="",
            announce_host=self._advertiser.host() or "",
            dht_port=self._dht.port if self._dht is not None else 0,
        )

    def _send(self, messages: Iterable[Message]) -> None:
        if self._link is None:
            return
        for message in messages:
            self._link.send(message)


def _text(outcome: AnnounceOutcome) -> str:
    if isinstance(outcome, AnnounceFailure):
        return outcome.message
    return str(outcome)
