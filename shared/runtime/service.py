"""The runner every service's composition root uses: start actors, wait, stop them cleanly.

Strategy: ``__main__`` of a service calls ``gevent.monkey.patch_all()`` on its first line (before
pykka or zmq are imported, so pykka's registry lock and every actor "thread" are gevent-aware),
loads its config, sets up logging, then::

    runner = ServiceRunner("storage_agent")
    sys.exit(runner.run([lambda: StorageActor.start(config, runner)]))

``run`` starts the actors bottom-up (each factory may use the actors started before it), then
waits until SIGINT/SIGTERM, ``request_stop()`` (e.g. an actor got ``Shutdown`` or ``Rejected``),
or an actor dies. It stops the actors in reverse order, each within ``stop_timeout``, and always
finishes with ``pykka.ActorRegistry.stop_all()``, so a crash cannot leave the process hanging on
non-daemon actor threads.

Rules:
- ``run`` refuses to start unless gevent has patched threading (``RuntimeError``): real threads
  cannot reliably talk to actors living in greenlets.
- Exit codes: 0 for a requested stop (signal or ``request_stop()``), 1 when an actor failed to
  start or died, or an actor would not stop. A second signal during shutdown exits at once (130).
- An actor that does not stop within ``stop_timeout`` has a hung ``on_stop``; with
  ``hard_exit_if_stuck`` the runner flushes the logs and leaves through ``os._exit`` rather
  than hang on the actor's non-daemon thread.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Any

import gevent
import gevent.event
import gevent.monkey
import pykka

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "ActorFactory",
    "ServiceRunner",
]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1
"""Something failed that a restart may mend (a lost peer, a coordinator that refused us)."""
EXIT_CONFIG = 2
"""The command line or the configuration is wrong: a restart cannot mend it (the systemd units
stop restarting on it: ``RestartPreventExitStatus=2``)."""
EXIT_INTERRUPTED = 130

ActorFactory = Callable[[], "pykka.ActorRef[Any]"]


def _check_patched() -> None:
    if not gevent.monkey.is_module_patched("threading"):
        raise RuntimeError(
            "gevent.monkey.patch_all() must be the first call of a service's entry point"
        )
    # pykka creates its registry lock at import: a lock made before patching is a real one.
    lock = getattr(getattr(pykka, "ActorRegistry", None), "_actor_refs_lock", None)
    if lock is not None and type(lock).__module__ == "_thread":
        raise RuntimeError("pykka was imported before gevent.monkey.patch_all(): patch first")


class ServiceRunner:
    """Runs one service's actors until it is told to stop.

    Args:
        service: the service name, for logs.
        stop_timeout: seconds each actor gets to stop.
        poll_interval: seconds between checks that every actor is still alive.
        hard_exit_if_stuck: ``os._exit(1)`` when an actor does not stop within the timeout.
    """

    def __init__(
        self,
        service: str,
        *,
        stop_timeout: float = 5.0,
        poll_interval: float = 0.5,
        hard_exit_if_stuck: bool = True,
    ) -> None:
        self.service = service
        self.stop_timeout = stop_timeout
        self.poll_interval = poll_interval
        self.hard_exit_if_stuck = hard_exit_if_stuck
        self._stop = gevent.event.Event()
        self._exit_code = EXIT_OK
        self._reason = ""

    def request_stop(self, exit_code: int = EXIT_OK, reason: str = "requested") -> None:
        """Ask ``run`` to stop every actor; safe from any greenlet or actor. The first call wins."""
        if not self._stop.is_set():
            self._exit_code = exit_code
            self._reason = reason
            self._stop.set()

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stop.is_set():
            log.error("%s: %s during shutdown, exiting now", self.service, name)
            logging.shutdown()
            os._exit(EXIT_INTERRUPTED)
        log.info("%s: %s received, stopping", self.service, name)
        self.request_stop(EXIT_OK, name)

    def run(self, factories: Sequence[ActorFactory]) -> int:
        """Start the actors, wait for a stop, stop them; returns the process exit code.

        Args:
            factories: callables that start one actor each and return its ref, in start order.

        Raises:
            RuntimeError: gevent has not patched threading (nothing is started).
        """
        _check_patched()
        watchers = [
            gevent.signal_handler(signum, self._on_signal, signum)
            for signum in (signal.SIGINT, signal.SIGTERM)
        ]
        started: list[pykka.ActorRef[Any]] = []
        try:
            for factory in factories:
                started.append(factory())
            log.info("%s: started %d actors", self.service, len(started))
            while not self._stop.wait(timeout=self.poll_interval):
                dead = [ref for ref in started if not ref.is_alive()]
                if dead:
                    self.request_stop(EXIT_FAILURE, f"actor {dead[0]} died")
        except Exception:
            log.exception("%s: failed", self.service)
            self.request_stop(EXIT_FAILURE, "crashed")
        finally:
            log.info("%s: stopping (%s)", self.service, self._reason or "crashed")
            if not self._stop_all(started):
                self._exit_code = EXIT_FAILURE
            for watcher in watchers:
                watcher.cancel()
        return self._exit_code

    def _stop_all(self, started: Sequence[pykka.ActorRef[Any]]) -> bool:
        """Stop ours in reverse order, then any other registered actor; False if one hung.

        pykka unregisters an actor before its ``on_stop`` runs, so only a stop that times out
        tells that an ``on_stop`` hangs; its non-daemon thread would then block interpreter exit.
        """
        clean = True
        for ref in reversed(started):
            try:
                ref.stop(block=True, timeout=self.stop_timeout)
            except pykka.Timeout:
                log.error("%s: %s did not stop within %ss", self.service, ref, self.stop_timeout)
                clean = False
        try:
            pykka.ActorRegistry.stop_all(block=True, timeout=self.stop_timeout)
        except pykka.Timeout:
            log.error("%s: an actor started by another did not stop", self.service)
            clean = False
        if not clean and self.hard_exit_if_stuck:
            log.error("%s: actors still running, exiting hard", self.service)
            logging.shutdown()
            os._exit(EXIT_FAILURE)
        return clean
