"""Web seeds (BEP 19) in one torrent's swarm: placing their sessions on peer agents, their
records, their ends and their bans.

Strategy: ``SwarmWebSeeds`` is a mixin of ``Swarm`` (``swarm.py``), split out to keep each
module small; where each URL stands is the pure ``WebSeeds`` of the torrent
(``web_seeds.py``). A session is placed with ``ConnectWebSeed`` on the peer agent placement
chooses (``AgentRegistry.peer_agent_for_web_seed``); its ``WebSeedConnected`` makes a
``PeerRecord`` with ``url`` set and every piece, so ``WorkWanted``, ``AssignPieces``,
``PieceDownloaded``, ``PiecesReleased``, ``TransferStats`` and piece origins work as for a peer;
the picker hands it runs of consecutive pieces (``PiecePicker.pick_run``).

Rules (besides ``swarm.py``'s):
- Sessions run while the torrent is open and not complete, with the ``web_seeds`` switch on,
  within ``max_web_seeds_per_torrent`` and the session's ``max_web_seeds``; they count neither
  against a peer agent's connections nor in the torrent's peers and seeds.
- A web seed is never choked by us, never passed on by PeX, never redialled by address and
  never host-banned: its bans are of its URL, for this torrent (``ban_web_seed``).
- Completing the torrent closes its sessions (``DisconnectPeer``) and its URLs wait; a
  ``WebSeedConnected`` for a URL no longer wanted there is closed at once.
- A URL given up or banned is logged once, on that move.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    ConnectWebSeed,
    DisconnectPeer,
    DisconnectReason,
    Message,
    PeerSource,
    WebSeedConnected,
    WebSeedUrlState,
)
from torviz.shared.config import CoordinatorConfig

from .agents import AgentRegistry
from .lifecycle import OPEN_STATES
from .peer_record import PeerRecord
from .picking import PiecePicker

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["WEB_SEED_RUN", "SwarmWebSeeds", "place_web_seeds"]

log = logging.getLogger(__name__)

WEB_SEED_RUN = 4 * 1024 * 1024
"""Bytes of consecutive pieces offered to a starved web seed at once: one HTTP request's run."""


class SwarmWebSeeds:
    """The web seeds of ``Swarm`` (see the module comment)."""

    torrent: Torrent
    agents: AgentRegistry
    config: CoordinatorConfig
    picker: PiecePicker | None
    peers: dict[str, PeerRecord]
    _send: Callable[[bytes, Message], None]

    def disconnect(self, record: PeerRecord, reason: DisconnectReason) -> None:
        raise NotImplementedError

    def start_web_seeds(self, now: float, room: int, sessions: dict[bytes, int]) -> int:
        """Place the URLs due now, at most ``room`` of them (the session's cap's share).

        Args:
            now: the time.
            room: sessions the session-wide cap still allows.
            sessions: web seed sessions per peer agent (placement's input), kept up to date.

        Returns:
            How many sessions were asked for.
        """
        torrent, seeds = self.torrent, self.torrent.web_seeds
        if (
            not self.config.web_seeds
            or self.picker is None
            or torrent.state not in OPEN_STATES
            or torrent.complete
        ):
            return 0
        room = min(room, self.config.max_web_seeds_per_torrent - seeds.running)
        started = 0
        for entry in seeds.due(now, room):
            agent = self.agents.peer_agent_for_web_seed(sessions)
            if agent is None:
                break
            seeds.started(entry, agent.identity)
            sessions[agent.identity] = sessions.get(agent.identity, 0) + 1
            self._send(agent.identity, ConnectWebSeed(torrent.info_hash, entry.url))
            started += 1
        return started

    def web_seed_count(self) -> int:
        """Pieces to offer a starved web seed: a run of ``WEB_SEED_RUN`` bytes."""
        length = self.torrent.meta.info.piece_length
        return max(self.config.pieces_per_peer, -(-WEB_SEED_RUN // length))

    def _on_web_seed_connected(self, sender: bytes, event: WebSeedConnected, now: float) -> None:
        torrent = self.torrent
        entry = None
        if self.picker is not None and not torrent.complete and event.peer not in self.peers:
            entry = torrent.web_seeds.connected(sender, event.url, event.peer)
        if entry is None or self.picker is None:
            reason = DisconnectReason.STOPPED
            self._send(sender, DisconnectPeer(torrent.info_hash, event.peer, reason))
            return
        bits = Bitfield.full(torrent.num_pieces)
        self.peers[event.peer] = PeerRecord(
            key=event.peer,
            agent=sender,
            address=None,
            client="web seed",
            bits=bits,
            url=entry.url,
            source=PeerSource.WEB_SEED,
            peer_choking=False,
            am_interested=True,
            connected_at=now,
        )
        self.picker.peer_joined(bits)

    def web_seed_ended(
        self, record: PeerRecord, reason: DisconnectReason, message: str, now: float
    ) -> None:
        """A web seed session's ``PeerDisconnected``: its URL's next state (logged when given
        up). The caller forgets the record."""
        entry = self.torrent.web_seeds.ended(
            record.key, reason, message, now, delivered=record.downloaded
        )
        if entry is not None and entry.url_state is WebSeedUrlState.GIVEN_UP:
            log.warning(
                "%s: web seed %s given up: %s",
                self.torrent.name,
                entry.url,
                entry.message or reason.value,
                extra={"info_hash": self.torrent.info_hash},
            )

    def ban_web_seed(self, record: PeerRecord, why: str) -> None:
        """Ban a web seed's URL for this torrent (never its host: other sites may share it)
        and close its session; its pieces are fetched elsewhere."""
        entry = self.torrent.web_seeds.get(record.url)
        if entry is not None and entry.url_state is not WebSeedUrlState.BANNED:
            log.warning(
                "%s: banning web seed %s: %s",
                self.torrent.name,
                record.url,
                why,
                extra={"info_hash": self.torrent.info_hash},
            )
            self.torrent.web_seeds.closed(entry, WebSeedUrlState.BANNED, f"banned: {why}")
        self.disconnect(record, DisconnectReason.SENT_CORRUPT_DATA)

    def close_web_seeds(self) -> None:
        """The torrent is complete: its web seed sessions close and their URLs wait."""
        for record in [record for record in self.peers.values() if record.url]:
            self.disconnect(record, DisconnectReason.STOPPED)
        self.torrent.web_seeds.stopped()


def place_web_seeds(torrents: Iterable[Torrent], cap: int, now: float) -> None:
    """Start the web seed sessions due in every torrent, within the session's ``cap``
    (``max_web_seeds``), torrents in the order they were added."""
    every = list(torrents)
    sessions: dict[bytes, int] = {}
    for entry in (entry for torrent in every for entry in torrent.web_seeds):
        if entry.agent is not None:
            sessions[entry.agent] = sessions.get(entry.agent, 0) + 1
    room = cap - sum(sessions.values())
    for torrent in every:
        if room <= 0:
            return
        room -= torrent.swarm.start_web_seeds(now, room, sessions)
