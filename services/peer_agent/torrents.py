"""What the peer agent knows, without I/O: attached torrents and the connections it holds.

Strategy: the agent actor keeps one ``Registry``. ``attach`` turns an ``AttachTorrent`` into a
``Torrent`` (geometry, our peer id, our have-state, the storage endpoint), ``reserve`` admits a
new connection and names it, ``bind`` attaches whatever the actor uses to reach it (a handle),
``release`` forgets it when it ends. Keeping this pure lets the limits be tested without a
socket.

Rules:
- Peer keys are ``"<agent id>/<n>"`` with ``n`` counting up from 1 and never reused, so a late
  command for a closed connection can never reach a newer one.
- One connection per (torrent, address); at most ``max_connections`` at once in the agent.
  Refusals raise ``ConnectRefusedError`` whose ``reason`` goes into ``PeerConnectFailed``.
- A torrent's connections outlive ``detach`` until each reports its end, so ``release`` works
  for keys of a torrent that is already gone.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from shared.bitfield import Bitfield, BitfieldError
from shared.bus import AttachTorrent
from shared.errors import TorvizError
from shared.geometry import TorrentGeometry
from shared.types import InfoHash, PeerAddress, PeerId

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "AttachError",
    "ConnectRefusedError",
    "Connection",
    "Registry",
    "Torrent",
]

DEFAULT_MAX_CONNECTIONS = 200
"""Connections one agent holds at once: each costs a socket, three greenlets and a 256 KiB
receive buffer, and a second agent process is the way to more."""

H = TypeVar("H")


class AttachError(TorvizError):
    """An ``AttachTorrent`` whose geometry or have-state does not add up."""


class ConnectRefusedError(TorvizError):
    """A ``ConnectPeer`` the agent will not dial (``reason`` names why)."""


@dataclass(slots=True)
class Torrent:
    """One attached torrent."""

    info_hash: InfoHash
    geometry: TorrentGeometry
    peer_id: PeerId
    have: Bitfield
    """Pieces verified so far; kept current from ``BroadcastHave``."""
    private: bool
    storage_endpoint: str
    addresses: dict[PeerAddress, str] = field(default_factory=dict)
    """Address -> peer key of every connection of this torrent."""


@dataclass(slots=True)
class Connection(Generic[H]):
    """One connection the agent holds; ``handle`` is set by ``bind`` once it is started."""

    key: str
    info_hash: InfoHash
    address: PeerAddress
    handle: H | None = None


class Registry(Generic[H]):
    """Attached torrents and live connections of one peer agent.

    Args:
        agent_id: the agent's id, the prefix of every peer key.
        max_connections: connections held at once before ``reserve`` refuses.
    """

    def __init__(self, agent_id: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        if max_connections < 1:
            raise ValueError("an agent holds at least one connection")
        self.agent_id = agent_id
        self.max_connections = max_connections
        self._torrents: dict[InfoHash, Torrent] = {}
        self._connections: dict[str, Connection[H]] = {}
        self._serial = itertools.count(1)

    # -- torrents ---------------------------------------------------------------------------------

    def attach(self, message: AttachTorrent) -> Torrent:
        """Remember a torrent, or refresh one already attached (its connections stay).

        Raises:
            AttachError: ``bad_geometry`` (lengths and piece count disagree) or ``bad_have``.
        """
        try:
            geometry = TorrentGeometry(
                message.piece_length, message.total_length, (message.total_length,)
            )
        except ValueError as exc:
            raise AttachError("bad_geometry", f"unusable torrent geometry: {exc}") from None
        if geometry.num_pieces != message.num_pieces:
            raise AttachError(
                "bad_geometry",
                f"{message.total_length} bytes in pieces of {message.piece_length} make "
                f"{geometry.num_pieces} pieces, not {message.num_pieces}",
            )
        try:
            have = Bitfield.from_bytes(message.have, geometry.num_pieces)
        except BitfieldError as exc:
            raise AttachError("bad_have", f"have bitfield: {exc}") from None
        old = self._torrents.get(message.info_hash)
        torrent = Torrent(
            info_hash=message.info_hash,
            geometry=geometry,
            peer_id=message.peer_id,
            have=have,
            private=message.private,
            storage_endpoint=message.storage_endpoint,
            addresses=old.addresses if old is not None else {},
        )
        self._torrents[message.info_hash] = torrent
        return torrent

    def detach(self, info_hash: InfoHash) -> list[Connection[H]]:
        """Forget a torrent; returns its connections, which the caller closes."""
        torrent = self._torrents.pop(info_hash, None)
        if torrent is None:
            return []
        return [self._connections[key] for key in torrent.addresses.values()]

    def torrent(self, info_hash: InfoHash) -> Torrent | None:
        return self._torrents.get(info_hash)

    def torrents(self) -> list[Torrent]:
        return list(self._torrents.values())

    def piece_verified(self, info_hash: InfoHash, piece: int) -> list[Connection[H]]:
        """Record that we have ``piece``; returns the torrent's connections to tell."""
        torrent = self._torrents.get(info_hash)
        if torrent is None or not 0 <= piece < torrent.geometry.num_pieces:
            return []
        torrent.have.add(piece)
        return [self._connections[key] for key in torrent.addresses.values()]

    # -- connections ------------------------------------------------------------------------------

    def reserve(self, info_hash: InfoHash, address: PeerAddress) -> Connection[H]:
        """Admit a new connection and name it.

        Raises:
            ConnectRefusedError: ``unknown_torrent``, ``already_connected`` or
                ``too_many_connections``.
        """
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            raise ConnectRefusedError(
                "unknown_torrent", f"torrent {info_hash} is not attached here"
            )
        if address in torrent.addresses:
            raise ConnectRefusedError(
                "already_connected",
                f"already connected to {address} for this torrent ({torrent.addresses[address]})",
            )
        if len(self._connections) >= self.max_connections:
            raise ConnectRefusedError(
                "too_many_connections",
                f"this agent already holds {self.max_connections} connections",
            )
        key = f"{self.agent_id}/{next(self._serial)}"
        connection: Connection[H] = Connection(key, info_hash, address)
        self._connections[key] = connection
        torrent.addresses[address] = key
        return connection

    def bind(self, key: str, handle: H) -> None:
        """Attach the handle the caller reaches the connection through."""
        self._connections[key].handle = handle

    def release(self, key: str) -> Connection[H] | None:
        """Forget a connection that ended; None if it was already forgotten."""
        connection = self._connections.pop(key, None)
        if connection is None:
            return None
        torrent = self._torrents.get(connection.info_hash)
        if torrent is not None and torrent.addresses.get(connection.address) == key:
            del torrent.addresses[connection.address]
        return connection

    def lookup(self, info_hash: InfoHash, key: str) -> Connection[H] | None:
        """The connection ``key`` if it is live and belongs to ``info_hash``."""
        connection = self._connections.get(key)
        if connection is None or connection.info_hash != info_hash:
            return None
        return connection

    def connections(self) -> Iterator[Connection[H]]:
        """Every live connection (a snapshot: safe to release while iterating)."""
        return iter(list(self._connections.values()))

    def __len__(self) -> int:
        return len(self._connections)
