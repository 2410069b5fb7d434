"""CURVE handshakes followed at run time, on a client socket and on a bound one.

Strategy: libzmq reports a failed CURVE handshake only through a socket monitor, so each watch
reads its socket's monitor in a greenlet (``_follow_monitor``) and turns events into log lines
and a failure count. On the client side (``HandshakeWatch``) libzmq also gives up for good on a
connection whose handshake was refused (it reconnects only after network errors), so the watch
connects again, backing off. On the server side (``ServerHandshakeWatch``) a client that holds
another server key fails before the ZAP handler hears of it: only this watch can tell.

Rules:
- Lines are throttled (``LOG_EVERY``), failures always counted (``on_failure``).
- A watch is closed before its socket: it kills its greenlets and closes its monitor.
- The lines keep the logger they had when this lived in ``shared.runtime.curve``, so operators'
  filters and ``grep`` keep finding them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import zmq
from zmq.utils.monitor import recv_monitor_message

__all__ = ["HandshakeWatch", "ServerHandshakeWatch"]

log = logging.getLogger(f"{__package__}.curve")  # the lines' logger since before the split


def _follow_monitor(monitor: zmq.Socket[Any], on_event: Callable[[int, str], None]) -> None:
    """Hand each event of a zmq socket monitor to ``on_event(event, endpoint)`` until the
    monitor closes."""
    while True:
        try:
            event = recv_monitor_message(monitor)
        except zmq.ZMQError:
            return  # closed with the socket
        except (RuntimeError, ValueError):
            continue  # a malformed event: libzmq's, but no reason to stop watching
        endpoint = event.get("endpoint", b"")
        where = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else "?"
        on_event(int(event["event"]), where)


class ServerHandshakeWatch:
    """The failed CURVE handshakes on one bound socket, followed through a zmq monitor.

    A client that holds another server public key (an agent bundle made by another
    ``keys init``) fails before the ZAP handler ever hears of it, so only this watch can tell
    the server's operator. libzmq does not name the client's address here. The first failure
    is logged at warning, then at most one line every ``LOG_EVERY`` seconds counting the
    failures since; each failure calls ``on_failure``.

    Args:
        sock: a zmq.green socket with CURVE server options set.
        name: the socket's name in logs.
        on_failure: called once per failed handshake (a counter).
        clock: monotonic seconds (for tests).
    """

    LOG_EVERY = 60.0
    EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

    def __init__(
        self,
        sock: zmq.Socket[Any],
        name: str,
        on_failure: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sock = sock
        self._name = name
        self._on_failure = on_failure
        self._clock = clock
        self._monitor: zmq.Socket[Any] = sock.get_monitor_socket(self.EVENTS)
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._last_log = float("-inf")
        self._unlogged = 0

    def start(self) -> None:
        """Spawn the greenlet that reads the monitor."""
        self._greenlet = gevent.spawn(
            _follow_monitor, self._monitor, lambda _, where: self.handshake_failed(where)
        )

    def close(self) -> None:
        """Stop watching; call before the socket is closed."""
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=True, timeout=1.0)
        with contextlib.suppress(zmq.ZMQError):  # the socket is going away anyway
            self._sock.disable_monitor()
        self._monitor.close(linger=0)

    def handshake_failed(self, endpoint: str) -> None:
        """A client failed the CURVE handshake on ``endpoint``."""
        self._on_failure()
        now = self._clock()
        if now - self._last_log < self.LOG_EVERY:
            self._unlogged += 1
            return
        since = f" ({self._unlogged} more since the last line)" if self._unlogged else ""
        self._last_log, self._unlogged = now, 0
        log.warning(
            "%s: a client failed the CURVE handshake on %s: it does not hold this server's "
            "public key (an agent bundle from another `keys init`?); give it this host's "
            "coordinator.key or a fresh bundle%s",
            self._name,
            endpoint,
            since,
        )


class HandshakeWatch:
    """The CURVE handshakes of one client socket, followed through a zmq monitor.

    Each failure calls ``on_failure`` and is logged at error at most once per ``LOG_EVERY``
    seconds. After a refused key or a protocol error (the server speaks no CURVE) the socket
    connects again after ``RETRY_FIRST`` seconds, doubling up to ``RETRY_MAX``; a successful
    handshake resets the delay. A connection lost mid-handshake (a wrong server key looks like
    that) is retried by libzmq itself.

    Args:
        sock: a zmq.green socket, CURVE client options set, not yet connected.
        name: the socket's name in logs.
        key_name: this process's key name, for the "refused" line.
        on_failure: called once per failed handshake (a counter).
    """

    LOG_EVERY = 30.0
    RETRY_FIRST = 1.0
    RETRY_MAX = 30.0
    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )

    def __init__(
        self, sock: zmq.Socket[Any], name: str, key_name: str, on_failure: Callable[[], None]
    ) -> None:
        self._sock = sock
        self._name = name
        self._key_name = key_name
        self._on_failure = on_failure
        self._monitor: zmq.Socket[Any] = sock.get_monitor_socket(self.EVENTS)
        self._endpoints: list[str] = []
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._retry: gevent.Greenlet[Any, Any] | None = None
        self._retry_delay = self.RETRY_FIRST
        self._last_log = float("-inf")
        self._closed = False

    def connected(self, endpoint: str) -> None:
        """Note an endpoint the socket connected to (it is the one connected again)."""
        self._endpoints.append(endpoint)

    def start(self) -> None:
        """Spawn the greenlet that reads the monitor."""
        self._greenlet = gevent.spawn(_follow_monitor, self._monitor, self.handshake_event)

    def close(self) -> None:
        """Stop watching and retrying; call before the socket is closed."""
        self._closed = True
        for greenlet in (self._greenlet, self._retry):
            if greenlet is not None and greenlet is not gevent.getcurrent():
                greenlet.kill(block=True, timeout=1.0)
        with contextlib.suppress(zmq.ZMQError):  # the socket is going away anyway
            self._sock.disable_monitor()
        self._monitor.close(linger=0)

    def handshake_event(self, event: int, endpoint: str) -> None:
        """React to one monitor event (``zmq.EVENT_HANDSHAKE_*``) about ``endpoint``."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._retry_delay = self.RETRY_FIRST
            return
        self._on_failure()
        if event != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self._retry is None:
            targets = [endpoint] if endpoint in self._endpoints else list(self._endpoints)
            self._retry = gevent.spawn_later(self._retry_delay, self._reconnect, targets)
            self._retry_delay = min(self._retry_delay * 2, self.RETRY_MAX)
        now = time.monotonic()
        if now - self._last_log < self.LOG_EVERY:
            return
        self._last_log = now
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            log.error(
                "%s: the server at %s refused this process's key (%s): is its public key in "
                "the server's authorized folder?",
                self._name,
                endpoint,
                self._key_name,
            )
        else:
            log.error(
                "%s: CURVE handshake with %s failed: wrong coordinator key, or the server "
                "uses no keys",
                self._name,
                endpoint,
            )

    def _reconnect(self, endpoints: list[str]) -> None:
        self._retry = None
        if self._closed:
            return
        for endpoint in endpoints:
            with contextlib.suppress(zmq.ZMQError):  # libzmq may have forgotten it already
                self._sock.disconnect(endpoint)
            try:
                self._sock.connect(endpoint)
            except zmq.ZMQError as exc:
                log.warning("%s: cannot connect to %s again: %s", self._name, endpoint, exc)
