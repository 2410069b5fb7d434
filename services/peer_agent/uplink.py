"""A connection's ways out of its actor: the ``Uplink`` it is given, and its stats row.

Strategy: a ``PeerConnection`` never talks to the agent's sockets or state by name; it gets an
``Uplink``. The agent's ``AgentUplink`` sends events to the coordinator through the agent's
``CoordinatorLink`` and pieces to the storage agent through the torrent's ``StorageLink``
(both only queue: one sender greenlet per socket), asks the agent's inbox for pieces to upload
(``ReadPiece``) and reports the connection's end (``Ended``). ``claim`` is a direct call into
the agent (see ``agent.py``). ``peer_stats`` is the ``PeerStats`` row of one connection, sent
every second by the agent and once more by the connection as it closes, so no transfer goes
uncounted.

Storage deliveries: ``store_piece`` hands the piece to the storage link, which keeps it (the
very buffer, never written again) until the storage agent answers ``PieceStored``, sends it
again after a passing refusal or a storage restart, and drops it after too many refusals (see
``core/deliveries.py``). ``storage_busy`` is true while the link's window of unanswered pieces or
its socket's queue is full: the connection stops reading from its peer until it is not.
A connection of a magnet torrent starts without a storage link (no piece can complete before
the geometry is known); the agent gives it one (``use_storage``) when the torrent is attached.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import gevent.event
import pykka

from torviz.shared import bus
from torviz.shared.runtime.link import CoordinatorLink
from torviz.shared.types import InfoHash, PeerId

from .core.piece_cache import ReadError
from .core.session import PeerSession
from .storage_link import StorageLink

__all__ = [
    "AgentUplink",
    "Ended",
    "ReadPiece",
    "Uplink",
    "peer_stats",
]


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
        """Send a finished piece to the storage agent; ``data`` is handed over for good (it
        is kept, and only read, until the storage agent has dealt with the piece)."""

    def storage_busy(self) -> bool:
        """Whether so many pieces wait for the storage agent that reading should pause."""

    def ended(self, key: str) -> None:
        """The connection is gone and has reported; the agent may forget ``key``."""

    def claim(self, key: str, peer_id: PeerId) -> None:
        """The handshake named the peer; raises ``TorvizError`` (``duplicate_peer``) if this
        connection must go because another one to that peer stays."""

    def read_piece(self, info_hash: InfoHash, piece: int) -> gevent.event.AsyncResult:
        """Ask for a whole piece to upload; the result is a ``bytearray`` or a ``ReadError``."""


class AgentUplink:
    """A connection's way out: the agent's coordinator and storage links, and its inbox."""

    __slots__ = ("_agent", "_claim", "_coordinator", "_storage")

    def __init__(
        self,
        agent: pykka.ActorRef[Any],
        coordinator: CoordinatorLink,
        storage: StorageLink | None,
        claim: Callable[[str, PeerId], None],
    ):
        self._agent = agent
        self._coordinator = coordinator
        self._storage = storage
        self._claim = claim

    def use_storage(self, storage: StorageLink) -> None:
        """Send pieces through ``storage`` from now on (a magnet torrent got its geometry)."""
        self._storage = storage

    def to_coordinator(self, message: bus.Message) -> None:
        # Dropped while no coordinator has us registered: it would not know the peer key.
        self._coordinator.send(message)

    def store_piece(self, message: bus.StorePiece, data: bytearray) -> None:
        # Never without a link: no piece completes before the geometry (and the link) is known.
        if self._storage is not None:
            self._storage.store(message, data)

    def storage_busy(self) -> bool:
        return self._storage is not None and self._storage.busy()

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
