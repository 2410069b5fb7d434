"""A magnet link's torrent fetching its info dictionary from its peers (BEP 9), and the peer
extension events every torrent gets (BEP 10 handshakes, ``ut_metadata``, ``ut_pex``).

Strategy: one ``MetadataFetch`` per torrent in the METADATA state wraps a pure
``MetadataAssembler`` keyed by peer key. A connection whose extension handshake offers
``ut_metadata`` with a ``metadata_size`` joins it and is asked for pieces
(``RequestMetadata``); each answer (``MetadataPieceReceived`` / ``MetadataRejected``), each
timeout (``expire`` on the coordinator's tick) and each connection that ends hands its pieces
to the other connections. ``handle_extension_event`` routes the four extension events of one
torrent and returns the info dictionary's bytes once they hash to the info hash; the
coordinator then builds, checks and persists the .torrent (``coordinator.py``).

Rules:
- A peer the assembler drops (a size of 0, over ``max_metadata_size``, disagreeing with the
  others, a bad piece, part of a whole with the wrong hash) is disconnected with
  ``bad_metadata_message`` and never dialled again (``redial.FINAL_REASONS``).
- Pieces kept from an earlier fetch (``Torrent.metadata_kept``: a restart, a pause) are not
  asked for again; each piece that arrives is handed to ``on_piece`` (the session store).
- Pure: no sockets, the time is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from torviz.shared.bus import (
    DisconnectReason,
    Message,
    MetadataPieceReceived,
    MetadataProgress,
    MetadataRejected,
    PeerExtensions,
    PexReceived,
    RequestMetadata,
)
from torviz.shared.config import CoordinatorConfig
from torviz.shared.metadata_fetch import MetadataAssembler, MetadataComplete, PeerDropped
from torviz.shared.types import InfoHash
from torviz.shared.wire.metadata import MetadataData

from .torrent import Torrent

__all__ = ["ExtensionEvent", "MetadataFetch", "handle_extension_event"]

log = logging.getLogger(__name__)

ExtensionEvent = PeerExtensions | MetadataPieceReceived | MetadataRejected | PexReceived


class MetadataFetch:
    """The fetch of one torrent's info dictionary.

    Args:
        torrent: a torrent in the METADATA state.
        config: the coordinator's section (``max_metadata_size``, ``metadata_timeout``).
        send: the outbox.
        on_piece: told of each piece kept: ``(info_hash, size, piece, data)``.
    """

    def __init__(
        self,
        torrent: Torrent,
        config: CoordinatorConfig,
        send: Callable[[bytes, Message], None],
        on_piece: Callable[[InfoHash, int, int, bytes], None],
    ) -> None:
        self.torrent = torrent
        self._send = send
        self._on_piece = on_piece
        self.assembler: MetadataAssembler[str] = MetadataAssembler(
            torrent.info_hash.raw,
            max_size=config.max_metadata_size,
            timeout=config.metadata_timeout,
        )
        self.asked: set[str] = set()
        """Connections asked for pieces so far (for status; bounded by the connections)."""

    def progress(self) -> MetadataProgress:
        """How far it is, for ``status``."""
        return MetadataProgress(
            peers_asked=len(self.asked),
            received=self.assembler.received_bytes,
            size=self.assembler.size,
        )

    def peer_extensions(self, key: str, metadata_size: int, now: float) -> bytes | None:
        """A connection offers ``ut_metadata`` with this size: it joins and is asked.

        Returns:
            The whole info dictionary when the pieces kept from earlier complete it.
        """
        self._dropped(self.assembler.add_peer(key, metadata_size))
        kept = self.torrent.metadata_kept
        if kept is not None and self.assembler.size == kept[0]:
            self.torrent.metadata_kept = None
            done = self.assembler.restore(kept[0], kept[1], "")
            if done is not None:
                return done.info
        self.ask(key, now)
        return None

    def keep(self) -> None:
        """The fetch stops (pause, error): what it holds is kept for the next one."""
        held, size = self.assembler.held(), self.assembler.size
        if held and size is not None:
            self.torrent.metadata_kept = (size, held)

    def ask(self, key: str, now: float) -> None:
        """Ask ``key`` for the pieces it may fetch now (none: nothing is sent)."""
        record = self.torrent.swarm.peers.get(key)
        if record is None or key not in self.assembler.peers:
            return
        pieces = self.assembler.next_requests(key, now)
        if pieces:
            self.asked.add(key)
            self._send(record.agent, RequestMetadata(self.torrent.info_hash, key, tuple(pieces)))

    def piece(self, message: MetadataPieceReceived, now: float) -> bytes | None:
        """A piece arrived; returns the whole info dictionary once it hashes right."""
        data = MetadataData(message.piece, message.total_size, message.data)
        before = self.assembler.received_bytes
        outcome = self.assembler.on_data(message.peer, data)
        if isinstance(outcome, MetadataComplete):
            return outcome.info
        if self.assembler.received_bytes > before:
            self._on_piece(self.torrent.info_hash, message.total_size, message.piece, message.data)
        self._dropped(outcome)
        self.ask_all(now)
        return None

    def rejected(self, key: str, piece: int, now: float) -> None:
        """``key`` will not give ``piece``: the others are asked."""
        self.assembler.on_reject(key, piece)
        self.ask_all(now, last=key)

    def peer_gone(self, key: str, now: float) -> None:
        """A connection ended: its pieces go to the others."""
        self.assembler.remove_peer(key)
        self.asked.discard(key)
        self.ask_all(now)

    def expire(self, now: float) -> None:
        """On the tick: requests past their deadline go to other connections."""
        for key in self.assembler.peers - self.torrent.swarm.peers.keys():
            self.assembler.remove_peer(key)  # its peer agent went away with it
        late = {peer for peer, _ in self.assembler.expire(now)}
        if late:
            self.ask_all(now, last=late)

    def ask_all(self, now: float, last: str | set[str] = "") -> None:
        """Ask every taking part, those in ``last`` (that refused or let a piece time out)
        after the others, so the others get those pieces first."""
        behind = {last} if isinstance(last, str) else last
        for key in sorted(self.assembler.peers, key=lambda peer: (peer in behind, peer)):
            self.ask(key, now)

    def _dropped(self, outcome: PeerDropped[str] | None) -> None:
        if outcome is None:
            return
        swarm = self.torrent.swarm
        for key in sorted(outcome.peers):
            self.asked.discard(key)
            record = swarm.peers.get(key)
            if record is None:
                continue
            log.warning(
                "%s: dropping %s (%s): %s",
                self.torrent.name,
                record.address,
                record.client,
                outcome.reason.replace("_", " "),
                extra={"info_hash": self.torrent.info_hash},
            )
            swarm.disconnect(record, DisconnectReason.BAD_METADATA_MESSAGE)


def handle_extension_event(torrent: Torrent, message: ExtensionEvent, now: float) -> bytes | None:
    """One extension event of ``torrent``'s connections.

    Args:
        torrent: the torrent.
        message: the event.
        now: the time.

    Returns:
        The info dictionary's bytes when this event completed a magnet link's fetch, else None.
    """
    swarm = torrent.swarm
    record = swarm.peers.get(message.peer)
    if record is None or record.address is None:
        return None  # a connection gone meanwhile, one of a torrent stopped since, a web seed
    fetch, pex = torrent.fetch, torrent.pex
    match message:
        case PeerExtensions():
            record.version = message.version
            record.listen_port = message.listen_port
            if pex is not None and message.ut_pex:
                pex.open(record)
            if fetch is not None and message.ut_metadata and message.metadata_size > 0:
                return fetch.peer_extensions(record.key, message.metadata_size, now)
        case MetadataPieceReceived() if fetch is not None:
            return fetch.piece(message, now)
        case MetadataRejected(peer=key, piece=piece) if fetch is not None:
            fetch.rejected(key, piece, now)
        case PexReceived() if pex is not None:
            addresses = pex.receive(record, message, now)
            if addresses:
                swarm.add_candidates(addresses, source=pex.SOURCE)
                swarm.connect_more()
    return None
