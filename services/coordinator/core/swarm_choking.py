"""Choking of one torrent's swarm: who we upload to, applied as ``SetChoke``.

Strategy: ``SwarmChoking`` is a mixin of ``Swarm`` (``swarm.py``), split out to keep each module
small; the decision itself is the pure ``Choker`` (``choking.py``). A peer that becomes
interested gets a free slot at once (``grant``); every round (``rechoke``) the choker's
winners are unchoked and the others choked. Rules: as ``swarm.py``'s (pure, ``now`` passed in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from torviz.shared.bus import Message, SetChoke

from .choking import Candidate, Choker
from .peer_record import PeerRecord
from .picking import PiecePicker

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["SwarmChoking"]


class SwarmChoking:
    """The choking of ``Swarm`` (see the module comment)."""

    torrent: Torrent
    choker: Choker
    picker: PiecePicker | None
    peers: dict[str, PeerRecord]
    _send: Callable[[bytes, Message], None]

    def _on_interest(self, key: str, interested: bool) -> None:
        record = self.peers.get(key)
        if record is None:
            return
        record.peer_interested = interested
        if not interested or self.picker is None:  # no pieces to serve while fetching metadata
            return
        if key not in self.choker.unchoked and self.choker.grant(key):
            self._send(record.agent, SetChoke(self.torrent.info_hash, key, False))
            record.am_choking = False

    def rechoke(self, now: float) -> None:
        """A choking round: unchoke the winners, choke the others."""
        before = self.choker.unchoked
        after = self.choker.rechoke(
            (
                Candidate(
                    key=peer.key,
                    interested=peer.peer_interested,
                    download_rate=peer.download_rate,
                    upload_rate=peer.upload_rate,
                    connected_at=peer.connected_at,
                    snubbed=peer.snubbed,
                )
                for peer in self.peers.values()
                if not peer.url  # a web seed is never choked: it downloads nothing from us
            ),
            seeding=self.torrent.complete,
            now=now,
        )
        info_hash = self.torrent.info_hash
        for key in before ^ after:
            record = self.peers.get(str(key))
            if record is not None:
                choked = key not in after
                record.am_choking = choked
                self._send(record.agent, SetChoke(info_hash, record.key, choked))
