"""What the peer agent knows, without I/O: attached torrents and the connections it holds.

Strategy: the agent actor keeps one ``Registry``. ``attach`` turns an ``AttachTorrent`` into a
``Torrent`` (geometry, our peer id, our have-state, the storage endpoint, the info dictionary
to serve, whether PeX is on); ``attach_magnet`` remembers a torrent whose info dictionary is not
known yet (no geometry: its connections exchange metadata and PeX only), and a later ``attach``
of the same info hash upgrades it in place, keeping its connections. ``reserve`` admits a
new connection and names it, ``bind`` attaches whatever the actor uses to reach it (a handle),
``release`` forgets it when it ends. ``admit`` is ``reserve`` for an incoming peer that may take
the slot of an idle connection; ``observe`` records when each connection was last useful.
Who gets a slot is the pure policy of ``slots.py``. Keeping this pure lets the limits be tested
without a socket.

Rules:
- Peer keys are ``"<agent id>/<n>"`` with ``n`` counting up from 1 and never reused, so a late
  command for a closed connection can never reach a newer one. Web seeds take their keys from
  the same counter (``new_key``) and are kept beside the registry (``web_seeds.py``): they
  count against no connection limit.
- At most ``max_connections`` connections at once in the agent and ``max_per_torrent`` per
  torrent, incoming and outgoing alike; of these, incoming ones at most ``max_incoming`` and
  ``max_per_host`` from one host (``slots.py``); none from or to a host banned for the torrent.
  Refusals raise ``ConnectRefusedError`` whose ``reason`` goes into ``PeerConnectFailed``.
- A connection ``admit`` replaces is forgotten at once (its slot is the newcomer's); the caller
  closes it, and its later ``release`` finds nothing.
- One connection per peer and torrent: per address when it is admitted, per peer id once its
  handshake is in (``claim``). When we dialled a peer that dialled us too, both ends keep the
  same connection: the one opened by the side with the smaller peer id.
- A torrent's connections outlive ``detach`` until each reports its end, so ``release`` works
  for keys of a torrent that is already gone.
- A torrent attached by ``attach_magnet`` has neither geometry nor have-state: nothing
  piece-related reaches its connections (``piece_verified`` names none) until ``attach`` gives
  them. ``attach_magnet`` of a torrent attached either way changes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.bus import AttachMagnet, AttachTorrent
from torviz.shared.errors import TorvizError
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.types import InfoHash, PeerAddress, PeerId, normalize_host

from .partials import PartialPieces
from .slots import (
    DEFAULT_MAX_PER_HOST,
    DEFAULT_OUTGOING_SHARE,
    DEFAULT_REPLACE_AFTER,
    Occupant,
    Refuse,
    SlotLimits,
    decide,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_PER_TORRENT",
    "MAX_BANNED_HOSTS",
    "Admitted",
    "AttachError",
    "ConnectRefusedError",
    "Connection",
    "Registry",
    "Torrent",
    "normalize_host",
]

DEFAULT_MAX_CONNECTIONS = 200
"""Connections one agent holds at once: each costs a socket, three or four greenlets and a
receive buffer of up to 1 MiB, and a second agent process is the way to more."""
DEFAULT_MAX_PER_TORRENT = 100
"""Connections one agent holds for one torrent."""
MAX_BANNED_HOSTS = 10_000
"""Hosts remembered as banned per torrent; the oldest ban is forgotten past that."""

H = TypeVar("H")


class AttachError(TorvizError):
    """An ``AttachTorrent`` whose geometry or have-state does not add up."""


class ConnectRefusedError(TorvizError):
    """A ``ConnectPeer`` the agent will not dial (``reason`` names why)."""


@dataclass(slots=True)
class Torrent:
    """One attached torrent (from ``AttachTorrent``, or ``AttachMagnet`` while ``geometry`` is
    None)."""

    info_hash: InfoHash
    geometry: TorrentGeometry | None
    """None for a magnet torrent whose info dictionary is not known yet."""
    peer_id: PeerId
    have: Bitfield | None
    """Pieces verified so far; kept current from ``BroadcastHave``. None with no geometry."""
    private: bool
    storage_endpoint: str
    """Where its pieces go; empty with no geometry."""
    info: bytes = b""
    """The info dictionary's exact bytes, served to peers that ask (BEP 9); empty: none."""
    pex: bool = True
    """Whether its connections offer ``ut_pex`` (off for a private torrent, BEP 27)."""
    dht_port: int = 0
    """The DHT port its new connections tell peers (BEP 5 ``PORT``); 0: none."""
    addresses: dict[PeerAddress, str] = field(default_factory=dict)
    """Address -> peer key of every connection of this torrent."""
    peer_ids: dict[PeerId, str] = field(default_factory=dict)
    """Peer id -> peer key of every connection of this torrent past its handshake."""
    banned: dict[str, None] = field(default_factory=dict)
    """Hosts refused for this torrent (normalised; an ordered set, oldest first)."""
    partials: PartialPieces = field(default_factory=PartialPieces)
    """Half-fetched pieces its connections gave back, for the next one to finish."""


@dataclass(slots=True)
class Connection(Generic[H]):
    """One connection the agent holds; ``handle`` is set by ``bind`` once it is started."""

    key: str
    info_hash: InfoHash
    address: PeerAddress
    incoming: bool = False
    peer_id: PeerId | None = None
    handle: H | None = None
    host: str = ""
    """``address.host`` normalised: what the per-host cap and bans compare."""
    useful_at: float = 0.0
    """The last time either side was interested or payload moved (at first: its opening)."""
    payload: int = 0
    """Payload bytes moved either way, as last observed."""


@dataclass(frozen=True, slots=True)
class Admitted(Generic[H]):
    """What ``admit`` decided: the new connection, and the one it replaces (closed by the
    caller), if any."""

    connection: Connection[H]
    replaced: Connection[H] | None = None


class Registry(Generic[H]):
    """Attached torrents and live connections of one peer agent.

    Args:
        agent_id: the agent's id, the prefix of every peer key.
        max_connections: connections held at once before ``reserve`` refuses.
        max_per_torrent: connections held for one torrent before ``reserve`` refuses.
        max_per_host: connections of one torrent with one host before an incoming one from
            it is refused.
        outgoing_share: share of ``max_per_torrent`` incoming connections cannot take.
        replace_after: seconds a connection must have been idle before ``admit`` replaces it.

    Raises:
        ValueError: a limit below one, a share outside [0, 1), a negative delay.
    """

    def __init__(
        self,
        agent_id: str,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        max_per_torrent: int = DEFAULT_MAX_PER_TORRENT,
        *,
        max_per_host: int = DEFAULT_MAX_PER_HOST,
        outgoing_share: float = DEFAULT_OUTGOING_SHARE,
        replace_after: float = DEFAULT_REPLACE_AFTER,
    ) -> None:
        self.limits = SlotLimits(
            max_connections, max_per_torrent, max_per_host, outgoing_share, replace_after
        )
        self.agent_id = agent_id
        self.max_connections = max_connections
        self.max_per_torrent = max_per_torrent
        self._torrents: dict[InfoHash, Torrent] = {}
        self._connections: dict[str, Connection[H]] = {}
        self._serial = itertools.count(1)

    # -- torrents ---------------------------------------------------------------------------------

    def attach_magnet(self, message: AttachMagnet) -> Torrent:
        """Remember a torrent known only by its info hash (its connections fetch the info
        dictionary); a torrent attached already, either way, stays as it is, except that a
        magnet torrent takes the new DHT port (for its new connections).

        Returns:
            The torrent as it is now.
        """
        old = self._torrents.get(message.info_hash)
        if old is not None:
            if old.geometry is None:
                old.dht_port = message.dht_port
            return old
        torrent = Torrent(
            info_hash=message.info_hash,
            geometry=None,
            peer_id=message.peer_id,
            have=None,
            private=False,
            storage_endpoint="",
            dht_port=message.dht_port,
        )
        self._torrents[message.info_hash] = torrent
        return torrent

    def is_magnet(self, info_hash: InfoHash) -> bool:
        """Whether ``info_hash`` is attached without geometry (by ``attach_magnet`` only)."""
        torrent = self._torrents.get(info_hash)
        return torrent is not None and torrent.geometry is None

    def attach(self, message: AttachTorrent) -> Torrent:
        """Remember a torrent, or refresh one already attached, or give a magnet torrent its
        geometry (its connections stay in every case; the caller upgrades those of a magnet
        torrent).

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
            info=message.info,
            pex=message.pex and not message.private,
            dht_port=0 if message.private else message.dht_port,
        )
        if old is not None:  # the live connections share these with the torrent
            torrent.addresses = old.addresses
            torrent.peer_ids = old.peer_ids
            torrent.banned = old.banned
            torrent.partials = old.partials
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

    def connections_of(self, info_hash: InfoHash) -> list[Connection[H]]:
        """The live connections of one torrent (empty when it is not attached)."""
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            return []
        return [self._connections[key] for key in torrent.addresses.values()]

    def piece_verified(self, info_hash: InfoHash, piece: int) -> list[Connection[H]]:
        """Record that we have ``piece``; returns the torrent's connections to tell."""
        torrent = self._torrents.get(info_hash)
        if (
            torrent is None
            or torrent.geometry is None
            or torrent.have is None
            or not torrent.geometry.has_piece(piece)
        ):
            return []
        torrent.have.add(piece)
        torrent.partials.discard(piece)
        return [self._connections[key] for key in torrent.addresses.values()]

    def ban(self, info_hash: InfoHash, hosts: Iterable[str]) -> list[Connection[H]]:
        """Refuse these hosts for a torrent from now on; returns its live connections with them,
        which the caller closes. Strings that are not IP addresses are ignored."""
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            return []
        for host in hosts:
            normal = normalize_host(host)
            if normal is not None:
                torrent.banned.pop(normal, None)
                torrent.banned[normal] = None
        while len(torrent.banned) > MAX_BANNED_HOSTS:
            del torrent.banned[next(iter(torrent.banned))]
        return [
            self._connections[key]
            for address, key in torrent.addresses.items()
            if normalize_host(address.host) in torrent.banned
        ]

    # -- connections ------------------------------------------------------------------------------

    def reserve(
        self,
        info_hash: InfoHash,
        address: PeerAddress,
        *,
        incoming: bool = False,
        now: float = 0.0,
    ) -> Connection[H]:
        """Admit a new connection (dialled, or accepted with ``incoming``) and name it, without
        replacing any other.

        Raises:
            ConnectRefusedError: ``unknown_torrent``, ``banned``, ``already_connected``,
                ``too_many_from_host``, ``too_many_connections``, ``too_many_for_torrent`` or
                ``too_many_incoming``.
        """
        return self._admit(info_hash, address, incoming=incoming, now=now, replace=False)[0]

    def admit(self, info_hash: InfoHash, address: PeerAddress, now: float) -> Admitted[H]:
        """Admit a peer that dialled us, in the slot of an idle connection if the slots are
        full (``slots.py``); the replaced connection is forgotten here, and the caller closes it.

        Raises:
            ConnectRefusedError: as ``reserve``.
        """
        connection, replaced = self._admit(info_hash, address, incoming=True, now=now, replace=True)
        return Admitted(connection, replaced)

    def observe(self, key: str, now: float, *, interested: bool, payload: int) -> None:
        """What the agent sees of a live connection now: whether either side is interested,
        and the payload bytes moved either way so far. Either makes it useful at ``now``."""
        connection = self._connections.get(key)
        if connection is None:
            return
        if interested or payload != connection.payload:
            connection.useful_at = now
            connection.payload = payload

    def _admit(
        self,
        info_hash: InfoHash,
        address: PeerAddress,
        *,
        incoming: bool,
        now: float,
        replace: bool,
    ) -> tuple[Connection[H], Connection[H] | None]:
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            raise ConnectRefusedError(
                "unknown_torrent", f"torrent {info_hash} is not attached here"
            )
        host = normalize_host(address.host) or address.host
        if host in torrent.banned:
            raise ConnectRefusedError("banned", f"{address.host} is banned for this torrent")
        if address in torrent.addresses:
            raise ConnectRefusedError(
                "already_connected",
                f"already connected to {address} for this torrent ({torrent.addresses[address]})",
            )
        occupants = [
            Occupant(c.key, c.host, c.incoming, c.useful_at)
            for c in (self._connections[key] for key in torrent.addresses.values())
        ]
        verdict = decide(
            self.limits,
            occupants,
            len(self._connections),
            host,
            incoming=incoming,
            now=now,
            may_replace=replace,
        )
        if isinstance(verdict, Refuse):
            raise ConnectRefusedError(verdict.reason, verdict.message)
        replaced = None if verdict.replace is None else self.release(verdict.replace)
        key = self.new_key()
        connection: Connection[H] = Connection(
            key, info_hash, address, incoming, host=host, useful_at=now
        )
        self._connections[key] = connection
        torrent.addresses[address] = key
        return connection, replaced

    def new_key(self) -> str:
        """A peer key never given before: for a connection, or a web seed kept beside the
        registry (it shares the counter, so the keys of both never collide)."""
        return f"{self.agent_id}/{next(self._serial)}"

    def bind(self, key: str, handle: H) -> None:
        """Attach the handle the caller reaches the connection through."""
        self._connections[key].handle = handle

    def claim(self, key: str, peer_id: PeerId) -> str | None:
        """A connection's handshake named the peer: make sure it is the only one to that peer.

        Returns:
            None, or the key of an older connection to the same peer that this one replaces
            (the caller closes it): a crossed dial, where this one is the one both ends keep.

        Raises:
            ConnectRefusedError: ``duplicate_peer`` when this connection is the one to drop.
        """
        connection = self._connections[key]
        torrent = self._torrents.get(connection.info_hash)
        if torrent is None:
            raise ConnectRefusedError("unknown_torrent", "the torrent was detached")
        other_key = torrent.peer_ids.get(peer_id)
        replaced = None
        if other_key is not None and other_key != key:
            other = self._connections[other_key]
            if other.incoming == connection.incoming or not self._keeps(connection, peer_id):
                raise ConnectRefusedError(
                    "duplicate_peer", f"already connected to this peer ({other_key})"
                )
            replaced = other_key
        connection.peer_id = peer_id
        torrent.peer_ids[peer_id] = key
        return replaced

    def _keeps(self, connection: Connection[H], peer_id: PeerId) -> bool:
        """Of two connections to one peer in opposite directions, whether ``connection`` is
        the one to keep: the one opened by the side with the smaller peer id."""
        torrent = self._torrents[connection.info_hash]
        ours_is_smaller = torrent.peer_id.raw < peer_id.raw
        return ours_is_smaller != connection.incoming

    def release(self, key: str) -> Connection[H] | None:
        """Forget a connection that ended; None if it was already forgotten."""
        connection = self._connections.pop(key, None)
        if connection is None:
            return None
        torrent = self._torrents.get(connection.info_hash)
        if torrent is not None:
            if torrent.addresses.get(connection.address) == key:
                del torrent.addresses[connection.address]
            if connection.peer_id is not None and torrent.peer_ids.get(connection.peer_id) == key:
                del torrent.peer_ids[connection.peer_id]
        return connection

    def get(self, key: str) -> Connection[H] | None:
        """The live connection ``key``, if any."""
        return self._connections.get(key)

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
