"""A connection's ways out of its actor: the ``Uplink`` it is given, and its stats row.

Strategy: a ``PeerConnection`` never talks to the agent's sockets or state by name; it gets an
``Uplink``. The agent's ``AgentUplink`` sends events to the coordinator and pieces to the
storage agent straight through the shared ``BusSocket``s (whose ``send`` only queues, one
sender greenlet per socket), asks the agent's inbox for pieces to upload (``ReadPiece``) and
reports the connection's end (``Ended``). ``claim`` is a direct call into the agent (see
``agent.py``). ``peer_stats`` is the ``PeerStats`` row of one connection, sent every second by
the agent and once more by the connection as it closes, so no transfer goes uncounted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gevent.event
import pykka

from shared import bus
from shared.runtime.sockets import BusSocket
from shared.types import InfoHash, PeerId

from .piece_cache import ReadError
from .session import PeerSession

__all__ = [
    "STORAGE_BACKLOG",
    "AgentUplink",
    "Ended",
    "ReadPiece",
    "Uplink",
    "peer_stats",
]

STORAGE_BACKLOG = 16
"""Pieces queued behind a full ZeroMQ queue on one storage link before readers pause. With the
agent's ``STORAGE_HWM`` this bounds the pieces waiting for a slow storage agent to a few dozen
per link, instead of ZeroMQ's default of a thousand (a gigabyte of 1 MiB pieces)."""


@dataclass(frozen=True, slots=True)
class Ended:
    """To the agent: the connection ``key`` is gone and has reported."""

    key: str


@dataclass(frozen=True, slots=True)
class ReadPiece:
    """To the agent: a connection needs a whole piece to upload; ``result`` gets it (a
    ``bytearray``) or a ``ReadError``."""

    info_hash: InfoHash
    piece: int
    result: gevent.event.AsyncResult


class Uplink(Protocol):
    """What a connection needs from its agent; calls return at once (they only queue)."""

    def to_coordinator(self, message: bus.Message) -> None:
        """Send an event to the coordinator."""

    def store_piece(self, message: bus.StorePiece, data: bytearray) -> None:
        """Send a finished piece to the storage agent; ``data`` is handed over for good."""

    def storage_busy(self) -> bool:
        """Whether the storage link has so many pieces queued that reading should pause."""

    def ended(self, key: str) -> None:
        """The connection is gone and has reported; the agent may forget ``key``."""

    def claim(self, key: str, peer_id: PeerId) -> None:
        """The handshake named the peer; raises ``TorvizError`` (``duplicate_peer``) if this
        connection must go because another one to that peer stays."""

    def read_piece(self, info_hash: InfoHash, piece: int) -> gevent.event.AsyncResult:
        """Ask for a whole piece to upload; the result is a ``bytearray`` or a ``ReadError``."""


class AgentUplink:
    """A connection's way out: the shared bus and storage sockets, and its agent's inbox."""

    __slots__ = ("_agent", "_bus", "_claim", "_storage")

    def __init__(
        self,
        agent: pykka.ActorRef[Any],
        bus_socket: BusSocket,
        storage: BusSocket,
        claim: Callable[[str, PeerId], None],
    ):
        self._agent = agent
        self._bus = bus_socket
        self._storage = storage
        self._claim = claim

    def to_coordinator(self, message: bus.Message) -> None:
        self._bus.send(message)

    def store_piece(self, message: bus.StorePiece, data: bytearray) -> None:
        self._storage.send(message, memoryview(data))  # a view, not a copy

    def storage_busy(self) -> bool:
        return self._storage.pending >= STORAGE_BACKLOG

    def ended(self, key: str) -> None:
        # When the agent is gone there is nothing left to forget the key in.
        with contextlib.suppress(pykka.ActorDeadError):
            self._agent.tell(Ended(key))

    def claim(self, key: str, peer_id: PeerId) -> None:
        self._claim(key, peer_id)

    def read_piece(self, info_hash: InfoHash, piece: int) -> gevent.event.AsyncResult:
        result = gevent.event.AsyncResult()
        try:
            self._agent.tell(ReadPiece(info_hash, piece, result))
        except pykka.ActorDeadError:
            result.set(ReadError("agent_stopping", "the peer agent is stopping"))
        return result


def peer_stats(info_hash: InfoHash, key: str, session: PeerSession, now: float) -> bus.PeerStats:
    """The counters, rates and flags of one connection."""
    return bus.PeerStats(
        info_hash=info_hash,
        peer=key,
        downloaded=session.download_rate.total,
        uploaded=session.upload_rate.total,
        download_rate=session.download_rate.rate(now),
        upload_rate=session.upload_rate.rate(now),
        peer_choking=session.peer_choking,
        peer_interested=session.peer_interested,
        am_choking=session.am_choking,
        am_interested=session.am_interested,
        snubbed=session.snubbed,
        pieces=len(session.peer_have),
    )
