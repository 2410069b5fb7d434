"""The peer agent's timers: the stats loop, the storage ticker, and what a connection shows.

Strategy: the agent runs two greenlets besides its inbox. ``stats_loop`` sends a
``TransferStats`` every ``STATS_INTERVAL`` seconds with the rows its ``rows`` callable builds
(``connection_rows`` for the peer connections; the agent adds its web seeds'), and lets the
agent expire stale piece reads. ``storage_loop`` wakes when a storage link's retry, probe,
reconnect or timeout is due and has the inbox tick the links. Both read live state directly:
nothing preempts a greenlet under gevent, so a row is never half updated.

Rules:
- A connection is useful (its slot is kept, ``Registry.observe``) while either side is
  interested or payload moved since it was last observed.
- Only sessions past their handshake (``active``) get a row.
- The agent kills both loops as it closes; the storage ticker also ends once the agent is
  gone (``ActorDeadError``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol, TypeVar

import gevent
import pykka

from torviz.shared import bus

from .core.session import PeerSession
from .core.torrents import Connection, Registry
from .storage_link import StorageLinks
from .uplink import peer_stats

__all__ = [
    "STATS_INTERVAL",
    "connection_rows",
    "observe",
    "stats_loop",
    "storage_loop",
]

STATS_INTERVAL = 1.0
"""Seconds between two ``TransferStats``."""
_STORAGE_TICK_MAX = 0.25  # seconds between two looks at the storage links' deadlines ...
_STORAGE_TICK_MIN = 0.02  # ... and at least


class _WithSession(Protocol):
    @property
    def session(self) -> PeerSession: ...


H = TypeVar("H", bound=_WithSession)


def stats_loop(
    rows: Callable[[float], list[bus.PeerStats]],
    send: Callable[[bus.Message], None],
    expire: Callable[[], None],
    clock: Callable[[], float],
    every: Callable[[], None] | None = None,
) -> None:
    """Send the stats every ``STATS_INTERVAL`` seconds, forever (run in a greenlet).

    Args:
        rows: the rows of everything live at ``now``.
        send: queues a message to the coordinator.
        expire: tells the agent to expire stale piece reads (``ActorDeadError`` ignored:
            the agent is stopping and kills this loop).
        clock: monotonic seconds.
        every: called after each round (the agent's own periodic look), if given.
    """
    while True:
        gevent.sleep(STATS_INTERVAL)
        with contextlib.suppress(pykka.ActorDeadError):
            expire()
        for batch in bus.batches(rows(clock())):
            send(bus.TransferStats(batch))
        if every is not None:
            every()


def connection_rows(registry: Registry[H], now: float) -> list[bus.PeerStats]:
    """The ``PeerStats`` rows of the live connections; observes each on the way."""
    rows = []
    for connection in registry.connections():
        observe(registry, connection, now)
        handle = connection.handle
        if handle is None or not handle.session.active:
            continue
        rows.append(peer_stats(connection.info_hash, connection.key, handle.session, now))
    return rows


def observe(registry: Registry[H], connection: Connection[H], now: float) -> None:
    """Tell the registry whether a connection is useful now (its slot is kept)."""
    handle = connection.handle
    if handle is None:
        return
    session = handle.session
    registry.observe(
        connection.key,
        now,
        interested=session.am_interested or session.peer_interested,
        payload=session.upload_rate.total + session.download_rate.total,
    )


def storage_loop(
    storage: StorageLinks,
    clock: Callable[[], float],
    tick: Callable[[], None],
    every: Callable[[], None] | None = None,
) -> None:
    """Have the agent tick the storage links when one is due, forever (run in a greenlet).

    Answers may bring a deadline closer (a retry a second from now) without waking this loop:
    it looks again at least every ``_STORAGE_TICK_MAX`` seconds.

    Args:
        storage: the agent's storage links.
        clock: monotonic seconds.
        tick: tells the agent to tick the links (``ActorDeadError`` ends the loop).
        every: called at each look, whether a tick was due or not, if given.
    """
    while True:
        deadline = storage.next_deadline()
        delay = _STORAGE_TICK_MAX
        if deadline is not None:
            delay = min(max(deadline - clock(), _STORAGE_TICK_MIN), delay)
        gevent.sleep(delay)
        if every is not None:
            every()
        deadline = storage.next_deadline()
        if deadline is not None and deadline <= clock():
            try:
                tick()
            except pykka.ActorDeadError:
                return
