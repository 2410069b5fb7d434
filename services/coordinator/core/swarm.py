"""The rules of one torrent's swarm: whom to dial, which pieces each connection fetches, whom
to upload to, and what to do with a peer that sends corrupt data.

``SwarmRules`` is the part of the coordinator that reacts to the peer agents' events for a
torrent that is open (its ``picker`` exists). It holds no state of its own beyond references:
the torrent's state is in ``Torrent``, the agents in ``AgentRegistry``, and every command goes
out through ``send``. Pure: no sockets, and the time is passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from shared.bitfield import Bitfield, BitfieldError
from shared.bus import (
    AssignPieces,
    BanPeers,
    BroadcastHave,
    CancelPieces,
    ConnectPeer,
    DisconnectPeer,
    DisconnectReason,
    Message,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeerHave,
    PeerInterest,
    PieceDownloaded,
    PiecesReleased,
    ServiceKind,
    SetChoke,
    TorrentState,
    WorkWanted,
)
from shared.config import CoordinatorConfig
from shared.types import PieceIndex

from .agents import AgentRegistry
from .choking import Candidate
from .redial import FINAL_REASONS
from .torrent import PeerRecord, Torrent

__all__ = ["MAX_HASH_FAILURES", "PeerEvent", "SwarmRules"]

_ACTIVE = (TorrentState.DOWNLOADING, TorrentState.SEEDING)

log = logging.getLogger(__name__)

DIAL_SHARE = 0.2
"""Share of ``max_peers_per_torrent`` kept for our own dials, whatever incoming peers hold."""

MAX_HASH_FAILURES = 3
"""Pieces a connection may send us corrupt before it is dropped and its address banned."""

PeerEvent = (
    PeerConnected
    | PeerConnectFailed
    | PeerBitfield
    | PeerHave
    | PeerInterest
    | WorkWanted
    | PiecesReleased
    | PieceDownloaded
    | PeerDisconnected
)


class SwarmRules:
    def __init__(
        self,
        agents: AgentRegistry,
        config: CoordinatorConfig,
        send: Callable[[bytes, Message], None],
        clock: Callable[[], float],
        completed: Callable[[Torrent], None],
    ) -> None:
        self.agents = agents
        self.config = config
        self._send = send
        self._now = clock
        self._completed = completed
        """Tells the announcing tracker agents that the torrent is complete."""

    def handle(self, torrent: Torrent, sender: bytes, event: PeerEvent, now: float) -> None:
        """One event about one of the torrent's connections, from the peer agent ``sender``.

        Raises:
            PieceIndexError: the event names a piece the torrent does not have (the caller
                drops it).
        """
        match event:
            case PeerConnected():
                self._on_connected(torrent, sender, event, now)
            case PeerConnectFailed(address=address, reason=reason):
                if torrent.connecting.pop(address, None) is not None:
                    self._agent_load(sender, -1)
                torrent.tried.add(address)
                torrent.redial.ended(address, now, reason, productive=False)
                self.connect_more(torrent)
            case PeerBitfield(peer=key, bitfield=raw):
                self._on_bitfield(torrent, key, raw)
            case PeerHave(peer=key, piece=piece):
                self._on_have(torrent, key, torrent.metainfo.info.geometry.piece_index(piece))
            case PeerInterest(peer=key, interested=interested):
                self._on_interest(torrent, key, interested)
            case WorkWanted(peer=key, count=count):
                record = torrent.peers.get(key)
                if record is not None:
                    self._assign(torrent, record, count)
            case PiecesReleased(peer=key, pieces=pieces):
                if torrent.picker is not None and key in torrent.peers:
                    for piece in pieces:
                        torrent.picker.release(key, piece)
                    self.offer_work(torrent)
            case PieceDownloaded(peer=key, piece=piece):
                self._on_downloaded(torrent, key, torrent.metainfo.info.geometry.piece_index(piece))
            case PeerDisconnected(peer=key, reason=reason):
                torrent.closing.pop(key, None)  # closed at our request: its totals are in
                record = torrent.peers.get(key)
                if record is not None:
                    if not record.incoming:
                        productive = bool(record.downloaded or record.uploaded)
                        torrent.redial.ended(record.address, now, reason, productive=productive)
                    self.forget_peer(torrent, key)
                    self.offer_work(torrent)
                    self.connect_more(torrent)

    # -- pieces --

    def piece_verified(self, torrent: Torrent, piece: PieceIndex, now: float) -> None:
        picker = torrent.picker
        if picker is None or piece in picker.have:
            return
        for owner in picker.owners(piece):
            self._cancel(torrent, str(owner), piece)
        picker.piece_verified(piece)
        size = torrent.metainfo.info.geometry.piece_size(piece)
        torrent.verified_bytes += size
        torrent.downloaded_floor += size
        info_hash = torrent.metainfo.info_hash
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._send(agent.identity, BroadcastHave(info_hash, piece))
        if picker.complete and torrent.completed_at is None:
            torrent.completed_at = now
            torrent.state = TorrentState.SEEDING
            self._completed(torrent)

    def piece_rejected(
        self, torrent: Torrent, piece: PieceIndex, contributors: Iterable[str]
    ) -> None:
        """A piece failed its hash: fetch it again elsewhere, and blame its sender.

        A piece with blocks from several connections proves nobody guilty yet: it is fetched
        again from one connection, and the storage agent's ``CorruptBlocksTraced`` names the
        liars once that copy verifies (``blocks_traced``).
        """
        if torrent.picker is None:
            return
        senders = list(dict.fromkeys(contributors))
        if len(senders) > 1:
            torrent.picker.piece_failed(piece, single_source=True)
        else:
            torrent.picker.piece_failed(piece, [key for key in senders if key in torrent.peers])
            self.blame(torrent, senders)
        self.offer_work(torrent)

    def blocks_traced(self, torrent: Torrent, piece: PieceIndex, liars: Iterable[str]) -> None:
        """The smart ban proved who sent bad blocks of a piece (they differ from the verified
        copy): their hosts are banned at once, connected or not; nobody else is blamed."""
        if torrent.picker is None:
            return
        for key in dict.fromkeys(liars):
            address = torrent.address_of(key)
            if address is None or address.host in torrent.banned_hosts:
                continue
            log.warning(
                "%s: banning %s: it sent bad blocks of piece %d (smart ban)",
                torrent.name,
                address.host,
                piece,
            )
            self._ban_host(torrent, address.host)
            record = torrent.peers.get(key)
            if record is not None:
                self.disconnect(torrent, record, DisconnectReason.SENT_CORRUPT_DATA)

    def blame(self, torrent: Torrent, culprits: Iterable[str]) -> None:
        """Each culprit sent a corrupt piece: ban a repeat offender."""
        for key in [key for key in dict.fromkeys(culprits) if key in torrent.peers]:
            record = torrent.peers[key]
            record.hash_failures += 1
            if record.hash_failures >= MAX_HASH_FAILURES:
                self._ban(torrent, record)

    def _ban(self, torrent: Torrent, record: PeerRecord) -> None:
        log.warning(
            "%s: banning %s (%s): it sent %d corrupt pieces",
            torrent.name,
            record.address.host,
            record.client,
            record.hash_failures,
        )
        self._ban_host(torrent, record.address.host)
        self.disconnect(torrent, record, DisconnectReason.SENT_CORRUPT_DATA)

    def _ban_host(self, torrent: Torrent, host: str) -> None:
        """Refuse ``host`` for this torrent: every peer agent drops and refuses it."""
        torrent.banned_hosts.add(host)
        info_hash = torrent.metainfo.info_hash
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._send(agent.identity, BanPeers(info_hash, (host,)))

    def _on_downloaded(self, torrent: Torrent, key: str, piece: PieceIndex) -> None:
        picker = torrent.picker
        if picker is None or piece in picker.have:
            return
        for other in picker.piece_downloaded(piece, self._now()):
            if other != key:
                self._cancel(torrent, str(other), piece)

    def _assign(self, torrent: Torrent, record: PeerRecord, count: int) -> None:
        if torrent.picker is None:
            return
        pieces = torrent.picker.pick(record.key, record.bits, count)
        record.starved = not pieces
        info_hash = torrent.metainfo.info_hash
        self._send(record.agent, AssignPieces(info_hash, record.key, tuple(pieces)))

    def offer_work(self, torrent: Torrent) -> None:
        """Pieces came free: give them to connections that had nothing to do."""
        if torrent.picker is None:
            return
        for record in list(torrent.peers.values()):
            if record.starved and torrent.picker.interesting(record.bits):
                self._assign(torrent, record, self.config.pieces_per_peer)

    def _cancel(self, torrent: Torrent, key: str, piece: int) -> None:
        record = torrent.peers.get(key)
        if record is not None:
            self._send(record.agent, CancelPieces(torrent.metainfo.info_hash, key, (piece,)))

    # -- choking --

    def _on_interest(self, torrent: Torrent, key: str, interested: bool) -> None:
        record = torrent.peers.get(key)
        if record is None:
            return
        record.peer_interested = interested
        if interested and key not in torrent.choker.unchoked and torrent.choker.grant(key):
            self._send(record.agent, SetChoke(torrent.metainfo.info_hash, key, False))
            record.am_choking = False

    def rechoke(self, torrent: Torrent, now: float) -> None:
        """A choking round: unchoke the winners, choke the others."""
        before = torrent.choker.unchoked
        after = torrent.choker.rechoke(
            (
                Candidate(
                    key=peer.key,
                    interested=peer.peer_interested,
                    download_rate=peer.download_rate,
                    upload_rate=peer.upload_rate,
                    connected_at=peer.connected_at,
                    snubbed=peer.snubbed,
                )
                for peer in torrent.peers.values()
            ),
            seeding=torrent.complete,
            now=now,
        )
        for key in before ^ after:
            record = torrent.peers.get(str(key))
            if record is not None:
                choked = key not in after
                record.am_choking = choked
                self._send(record.agent, SetChoke(torrent.metainfo.info_hash, record.key, choked))

    # -- connections --

    def connect_more(self, torrent: Torrent) -> None:
        """Dial known addresses until the torrent has its share of connections.

        A seeding torrent dials too: a leecher that announced before us never heard of us.
        Our dials keep a fifth of the slots of their own (``DIAL_SHARE``): peers that dialled
        us, however many, never stop us from reaching the peers we chose.
        """
        if torrent.picker is None or torrent.state not in _ACTIVE:
            return
        limit = self.config.max_peers_per_torrent
        reserved = max(1, int(limit * DIAL_SHARE))
        dialled = sum(1 for peer in torrent.peers.values() if not peer.incoming)
        while torrent.candidates:
            ours = dialled + len(torrent.connecting)
            if ours >= limit or (len(torrent.peers) - dialled + ours >= limit and ours >= reserved):
                return
            agent = self.agents.peer_agent_for_next_peer()
            if agent is None:
                return
            address, _ = torrent.candidates.popitem(last=False)
            if torrent.connected_to(address) or address.host in torrent.banned_hosts:
                continue
            if address in self.agents.listen_addresses():
                continue  # one of our own peer agents, handed back by a tracker
            torrent.connecting[address] = agent.identity
            agent.connections += 1
            self._send(agent.identity, ConnectPeer(torrent.metainfo.info_hash, address))

    def _on_connected(
        self, torrent: Torrent, sender: bytes, message: PeerConnected, now: float
    ) -> None:
        if torrent.connecting.pop(message.address, None) is None:
            self._agent_load(sender, +1)  # an incoming connection
        torrent.tried.add(message.address)
        record = PeerRecord(
            key=message.peer,
            agent=sender,
            address=message.address,
            client=message.client,
            bits=Bitfield(torrent.num_pieces),
            incoming=message.incoming,
            fast_extension=message.fast_extension,
            extension_protocol=message.extension_protocol,
            connected_at=now,
        )
        if message.address.host in torrent.banned_hosts or torrent.picker is None:
            torrent.peers[message.peer] = record  # for disconnect() to count it off
            self.disconnect(torrent, record, DisconnectReason.BANNED)
            return
        torrent.peers[message.peer] = record

    def _on_bitfield(self, torrent: Torrent, key: str, raw: bytes) -> None:
        record = torrent.peers.get(key)
        if record is None or torrent.picker is None:
            return
        try:
            bits = Bitfield.from_bytes(raw, torrent.num_pieces)
        except BitfieldError:
            self.disconnect(torrent, record, DisconnectReason.BAD_BITFIELD)
            return
        torrent.picker.peer_left(record.bits)
        record.bits = bits
        torrent.picker.peer_joined(bits)
        if bits.complete and torrent.complete:
            self.disconnect(torrent, record, DisconnectReason.BOTH_SEEDS)
            return
        if torrent.picker.interesting(bits):
            self._assign(torrent, record, self.config.pieces_per_peer)

    def _on_have(self, torrent: Torrent, key: str, piece: PieceIndex) -> None:
        record = torrent.peers.get(key)
        if record is None or torrent.picker is None:
            return
        if piece not in record.bits:
            record.bits.add(piece)
            torrent.picker.peer_has(piece)
            if record.starved and piece not in torrent.picker.have:
                self._assign(torrent, record, self.config.pieces_per_peer)

    def disconnect(self, torrent: Torrent, record: PeerRecord, reason: DisconnectReason) -> None:
        """Close a connection ourselves: the peer agent is told, the address given up when the
        reason is final, and the record kept aside until the connection's final
        ``TransferStats`` and ``PeerDisconnected`` arrive, so no byte it moved goes uncounted."""
        info_hash = torrent.metainfo.info_hash
        self._send(record.agent, DisconnectPeer(info_hash, record.key, reason))
        if reason in FINAL_REASONS:
            torrent.redial.give_up(record.address)
        self.forget_peer(torrent, record.key, closing=True)

    def forget_peer(self, torrent: Torrent, key: str, *, closing: bool = False) -> None:
        """A connection is gone: its pieces go back to the pool, its counters to the torrent.

        Args:
            closing: the peer agent still holds the connection and will send its final
                counters; keep the record to count them (``Torrent.closing``).
        """
        record = torrent.peers.pop(key, None)
        if record is None:
            return
        torrent.remember_departed(record)
        if closing:
            torrent.remember_closing(record)
        self._agent_load(record.agent, -1)
        torrent.choker.forget(key)
        torrent.downloaded_closed += record.downloaded
        torrent.uploaded_closed += record.uploaded
        if torrent.picker is not None:
            torrent.picker.release_peer(key)
            torrent.picker.peer_left(record.bits)

    def forget_all(self, torrent: Torrent) -> None:
        """The torrent stops (pause, error, recheck, lost storage): drop every connection
        record, but keep the addresses we dialled, to dial them again when it starts."""
        known = [peer.address for peer in torrent.peers.values() if not peer.incoming]
        known += list(torrent.connecting)
        for key in list(torrent.peers):
            self.forget_peer(torrent, key, closing=True)  # detached: final counters follow
        for identity in torrent.connecting.values():
            self._agent_load(identity, -1)
        torrent.connecting.clear()
        torrent.tried.clear()
        torrent.redial.clear()
        torrent.add_candidates(tuple(known))

    def forget_agent(self, torrent: Torrent, identity: bytes) -> None:
        """A peer agent is gone, with its connections: their addresses may be dialled again."""
        lost = [peer.address for peer in torrent.peers.values() if peer.agent == identity]
        for key in [k for k, peer in torrent.peers.items() if peer.agent == identity]:
            self.forget_peer(torrent, key)
        for key in [k for k, peer in torrent.closing.items() if peer.agent == identity]:
            del torrent.closing[key]
        for address in [a for a, who in torrent.connecting.items() if who == identity]:
            del torrent.connecting[address]
            lost.append(address)
        torrent.tried.difference_update(lost)
        torrent.add_candidates(tuple(lost))
        self.offer_work(torrent)

    def _agent_load(self, identity: bytes, delta: int) -> None:
        agent = self.agents.get(identity)
        if agent is not None:
            agent.connections = max(0, agent.connections + delta)
