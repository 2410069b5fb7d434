"""Bans of one torrent's swarm: a connection that keeps sending corrupt pieces, or a host the
smart ban proved a liar, is dropped and its host refused by every peer agent.

Strategy: ``SwarmBans`` is a mixin of ``Swarm`` (``swarm.py``), split out to keep each module
small. A piece that fails its hash with one sender counts against that connection
(``blame``); at ``MAX_HASH_FAILURES`` its host is banned. A piece with blocks from several
connections blames nobody until the storage agent traces the bad blocks
(``blocks_traced``), whose senders are banned at once. A web seed is banned by its URL for
the torrent (``SwarmWebSeeds.ban_web_seed``), never by host: its failures count across its
sessions, and no ``BanPeers`` names its server. Rules: as ``swarm.py``'s (pure); each ban is
logged once, with the torrent's info hash.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from torviz.shared.bus import BanPeers, DisconnectReason, Message, ServiceKind
from torviz.shared.types import PeerAddress, PieceIndex

from .agents import AgentRegistry
from .peer_record import PeerRecord
from .picking import PiecePicker

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["MAX_HASH_FAILURES", "SwarmBans"]

log = logging.getLogger(__name__)

MAX_HASH_FAILURES = 3
"""Pieces a connection may send us corrupt before it is dropped and its address banned."""


class SwarmBans:
    """The bans of ``Swarm`` (see the module comment)."""

    torrent: Torrent
    agents: AgentRegistry
    picker: PiecePicker | None
    peers: dict[str, PeerRecord]
    banned_hosts: set[str]
    _send: Callable[[bytes, Message], None]
    ban_web_seed: Callable[[PeerRecord, str], None]
    """``SwarmWebSeeds.ban_web_seed``."""

    def address_of(self, key: str) -> PeerAddress | None:
        raise NotImplementedError

    def disconnect(self, record: PeerRecord, reason: DisconnectReason) -> None:
        raise NotImplementedError

    def blocks_traced(self, piece: PieceIndex, liars: Iterable[str]) -> None:
        """The smart ban proved who sent bad blocks of a piece (they differ from the verified
        copy): their hosts are banned at once, connected or not; nobody else is blamed."""
        if self.picker is None:
            return
        for key in dict.fromkeys(liars):
            record = self.peers.get(key)
            if record is not None and record.url:
                self.ban_web_seed(record, f"it sent bad blocks of piece {piece}")
                continue
            address = self.address_of(key)
            if address is None or address.host in self.banned_hosts:
                continue
            log.warning(
                "%s: banning %s: it sent bad blocks of piece %d (smart ban)",
                self.torrent.name,
                address.host,
                piece,
                extra={"info_hash": self.torrent.info_hash},
            )
            self._ban_host(address.host)
            if record is not None:
                self.disconnect(record, DisconnectReason.SENT_CORRUPT_DATA)

    def blame(self, culprits: Iterable[str]) -> None:
        """Each culprit sent a corrupt piece: ban a repeat offender."""
        for key in [key for key in dict.fromkeys(culprits) if key in self.peers]:
            record = self.peers[key]
            record.hash_failures += 1
            failures = record.hash_failures
            if record.url:  # a web seed: counted for its URL, across its sessions
                failures = self.torrent.web_seeds.blamed(record.url)
            if failures >= MAX_HASH_FAILURES:
                self._ban(record, failures)

    def _ban(self, record: PeerRecord, failures: int) -> None:
        if record.address is None:
            why = f"it sent {failures} pieces that failed their hash check"
            self.ban_web_seed(record, why)
            return
        log.warning(
            "%s: banning %s (%s): it sent %d corrupt pieces",
            self.torrent.name,
            record.address.host,
            record.client,
            record.hash_failures,
            extra={"info_hash": self.torrent.info_hash},
        )
        self._ban_host(record.address.host)
        self.disconnect(record, DisconnectReason.SENT_CORRUPT_DATA)

    def _ban_host(self, host: str) -> None:
        """Refuse ``host`` for this torrent: every peer agent drops and refuses it."""
        self.banned_hosts.add(host)
        info_hash = self.torrent.info_hash
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._send(agent.identity, BanPeers(info_hash, (host,)))
