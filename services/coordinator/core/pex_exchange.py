"""Peer exchange (BEP 11) for one torrent: the coordinator's side of ``ut_pex``.

Strategy: a ``PexExchange`` wraps the pure ``PexPolicy`` (``shared/pex_policy.py``) with the
swarm's records. On each tick ``sync`` tells the policy which peers we are connected to, under
the address they can be dialled at (the address we dialled, or the ``p`` of a peer that dialled
us; one that never said is not passed on), with its flags (``SEED`` when its pieces are
complete, ``REACHABLE`` when dialable), and forgets the connections that ended; then every
connection that speaks ``ut_pex`` gets what the policy says is due (``SendPex``). A received
``PexReceived`` goes through ``policy.receive`` (caps per message, per source and per address)
and the accepted addresses become the swarm's candidates with source ``PEX``; the swarm dials
one only while ``policy.record_attempt`` allows (``Swarm.connect_more``).

Rules:
- Never for a private torrent (BEP 27) nor with ``[coordinator] pex = false``: the torrent has
  no ``PexExchange`` then (``for_torrent`` returns None) and ``PexReceived`` is ignored.
- Connections are keyed in the policy by their dialable address when known, else by the
  address their ``PeerConnected`` named, so nobody is told of itself.
- Pure: no sockets, the time is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from torviz.shared.bus import Message, PeerSource, PexPeer, PexReceived, SendPex
from torviz.shared.config import CoordinatorConfig
from torviz.shared.pex_policy import PexPolicy
from torviz.shared.types import InfoHash, PeerAddress
from torviz.shared.wire.pex import PexFlags, PexMessage

from .peer_record import PeerRecord
from .torrent import Torrent

__all__ = ["PexExchange", "for_torrent"]


def for_torrent(
    torrent: Torrent, config: CoordinatorConfig, own: Iterable[PeerAddress]
) -> PexExchange | None:
    """The torrent's peer exchange, or None when it must not run (private, or off)."""
    if not config.pex or torrent.private:
        return None
    return PexExchange(own)


class PexExchange:
    """BEP 11 for one torrent (see the module comment).

    Args:
        own: our peer agents' listen addresses (never sent, never candidates).
    """

    SOURCE = PeerSource.PEX

    def __init__(self, own: Iterable[PeerAddress]) -> None:
        self.policy = PexPolicy(private=False, own_addresses=own)
        self._connections: dict[str, PeerAddress] = {}
        """Connections the policy knows, by peer key: the address ``PeerConnected`` named."""
        self._advertised: dict[str, PeerAddress] = {}
        """What each connection is passed on as (its dialable address)."""
        self._open: set[str] = set()

    def open(self, record: PeerRecord) -> None:
        """Its peer speaks ``ut_pex``: it gets messages from the next tick on."""
        self._connections[record.key] = _connection(record)
        self._open.add(record.key)
        self.policy.open(_connection(record))

    def receive(
        self, record: PeerRecord, message: PexReceived, now: float
    ) -> tuple[PeerAddress, ...]:
        """What a connection's peer told us; returns the addresses accepted as candidates."""
        self._connections[record.key] = _connection(record)
        v4 = [peer for peer in message.added if not peer.address.is_ipv6]
        v6 = [peer for peer in message.added if peer.address.is_ipv6]
        decoded = PexMessage(
            added=tuple(peer.address for peer in v4),
            added_flags=tuple(peer.flags for peer in v4),
            dropped=tuple(a for a in message.dropped if not a.is_ipv6),
            added6=tuple(peer.address for peer in v6),
            added6_flags=tuple(peer.flags for peer in v6),
            dropped6=tuple(a for a in message.dropped if a.is_ipv6),
        )
        receipt = self.policy.receive(_connection(record), decoded, now)
        return tuple(candidate.address for candidate in receipt.candidates)

    def sync(
        self,
        records: Iterable[PeerRecord],
        now: float,
        send: Callable[[bytes, Message], None],
        info_hash: InfoHash,
    ) -> None:
        """On the tick: the policy learns the connections as they are now; every open
        connection gets the message due to it."""
        live = {record.key: record for record in records if record.address is not None}
        for key in [k for k in self._connections if k not in live]:
            self.policy.disconnected(self._connections.pop(key))
            self._open.discard(key)
        for key in [k for k in self._advertised if k not in live]:
            self.policy.disconnected(self._advertised.pop(key))
        for key, record in live.items():
            address = record.listen_address
            if address is None:
                continue
            flags = PexFlags.REACHABLE
            if record.bits.size and record.bits.complete:
                flags |= PexFlags.SEED
            before = self._advertised.get(key)
            if before is not None and before != address:
                self.policy.disconnected(before)
            self._advertised[key] = address
            self.policy.connected(address, int(flags))
        for key in sorted(self._open):
            record = live[key]
            message = self.policy.next_message(self._connections[key], now)
            if message is None:
                continue
            added = tuple(
                PexPeer(address, flags)
                for address, flags in (
                    *zip(message.added, message.added_flags, strict=True),
                    *zip(message.added6, message.added6_flags, strict=True),
                )
            )
            dropped = (*message.dropped, *message.dropped6)
            send(record.agent, SendPex(info_hash, record.key, added, dropped))


def _connection(record: PeerRecord) -> PeerAddress:
    """The policy's key for a connection: where it can be dialled, else where it came from.

    Raises:
        ValueError: a web seed's record (no address; the callers never pass one).
    """
    address = record.listen_address or record.address
    if address is None:
        raise ValueError(f"{record.key} is a web seed: it takes no part in PeX")
    return address
