"""One torrent's swarm: its connections, the addresses to dial, its bans, its piece picker and
its choker, and the rules that run them.

Strategy: a ``Swarm`` belongs to one ``Torrent`` (``torrent.swarm``) and owns every piece of
state about its peers; it reacts to the peer agents' events for that torrent while it is open
(``picker`` set) or while its connections have no geometry yet (``magnet_attached``: a magnet
link's torrent fetching its info dictionary, whose records survive the upgrade), and says what
to do through the ``SwarmContext`` every swarm shares (the agent registry, the configuration,
the outbox). Pure: no sockets, and the time is passed in.

Rules:
- Dialling: known addresses are dialled until the torrent has its share of connections; our
  own dials keep a fifth of the slots (``DIAL_SHARE``) whatever incoming peers hold; banned
  hosts and our own peer agents' addresses are never dialled; a closed dial is retried after a
  back-off (``redial.py``). Each address remembers where it came from (``sources``); one learnt
  through PeX only is dialled while the PeX policy allows another attempt.
- Pieces: a connection asking for work gets pieces from the picker; a piece downloaded by one
  connection is cancelled on the others; a verified piece is announced to every peer agent.
- Bans (``bans.py``): a connection that sent ``MAX_HASH_FAILURES`` corrupt pieces, or a host
  the smart ban proved a liar, is dropped and its host refused by every peer agent.
- Counting: a connection we close stays aside (``closing``) until its final counters arrive,
  so no byte it moved goes uncounted.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.bus import (
    AssignPieces,
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
    PeerSource,
    PeerStats,
    PieceDownloaded,
    PiecesReleased,
    ServiceKind,
    WebSeedConnected,
    WorkWanted,
)
from torviz.shared.config import CoordinatorConfig
from torviz.shared.types import PeerAddress, PieceIndex
from torviz.shared.units import human_size, short_duration

from .agents import AgentRegistry
from .bans import MAX_HASH_FAILURES, SwarmBans
from .choking import Choker
from .lifecycle import METADATA, OPEN_STATES, Move, advance
from .peer_record import PeerRecord
from .picking import PiecePicker
from .piece_origins import PieceOrigins
from .redial import FINAL_REASONS, RedialSchedule
from .swarm_choking import SwarmChoking
from .swarm_web_seeds import SwarmWebSeeds

if TYPE_CHECKING:
    from .torrent import Torrent

__all__ = ["MAX_HASH_FAILURES", "PeerEvent", "Swarm", "SwarmContext"]

log = logging.getLogger(__name__)

DIAL_SHARE = 0.2
"""Share of ``max_peers_per_torrent`` kept for our own dials, whatever incoming peers hold."""

MAX_CANDIDATES = 2000
"""Peer addresses remembered per torrent beyond those connected (a tracker cannot flood us)."""
MAX_SOURCES = 2 * MAX_CANDIDATES  # addresses whose source is remembered (``Swarm.sources``)
MAX_CLOSING = 4096
"""Connections we asked to close whose final counters have not arrived yet (a peer agent that
never answers cannot make this grow without bound)."""

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
    | WebSeedConnected
)


@dataclass(frozen=True, slots=True)
class SwarmContext:
    """What every torrent's swarm shares: the agents, the rules' settings, the outbox."""

    agents: AgentRegistry
    config: CoordinatorConfig
    send: Callable[[bytes, Message], None]
    completed: Callable[[Torrent], None]
    """Tells the announcing tracker agents that the torrent is complete."""


class Swarm(SwarmBans, SwarmChoking, SwarmWebSeeds):
    """The connections of one torrent and the rules that run them.

    Args:
        torrent: the torrent this swarm serves (its metainfo, state and byte totals).
        context: what every swarm shares.
        choker: the torrent's choker.
    """

    def __init__(self, torrent: Torrent, context: SwarmContext, choker: Choker) -> None:
        self.torrent = torrent
        self.agents = context.agents
        self.config = context.config
        self._send = context.send
        self._completed = context.completed
        self.choker = choker
        self.picker: PiecePicker | None = None
        """Exists while the torrent is open: from the storage agent's ``TorrentOpened`` until
        it stops (pause, error, recheck). ``None`` means nothing may be fetched or served."""
        self.peers: dict[str, PeerRecord] = {}
        self.candidates: OrderedDict[PeerAddress, None] = OrderedDict()
        self.sources: dict[PeerAddress, PeerSource] = {}
        """Where each known address came first from (bounded like the candidates)."""
        self.magnet_attached = False
        """Its peer agents hold it through ``AttachMagnet`` (no geometry yet): its connections
        run, and keep their records when ``AttachTorrent`` upgrades them."""
        self.connecting: dict[PeerAddress, bytes] = {}
        self.tried: set[PeerAddress] = set()
        self.redial = RedialSchedule()
        """Addresses to dial again after a back-off, and those given up."""
        self.banned_hosts: set[str] = set()
        self.departed: OrderedDict[str, PeerAddress] = OrderedDict()
        """Addresses of recently closed connections by peer key: the smart ban may prove one
        of them a liar after it left."""
        self.closing: OrderedDict[str, PeerRecord] = OrderedDict()
        """Connections we asked a peer agent to close (or detached): their final
        ``TransferStats`` still count, until their ``PeerDisconnected`` arrives."""

    def handle(self, sender: bytes, event: PeerEvent, now: float) -> None:
        """One event about one of the torrent's connections, from the peer agent ``sender``.

        Raises:
            PieceIndexError: the event names a piece the torrent does not have (the caller
                drops it).
        """
        match event:
            case PeerConnected():
                self._on_connected(sender, event, now)
            case WebSeedConnected():
                self._on_web_seed_connected(sender, event, now)
            case PeerConnectFailed(address=address, reason=reason):
                if self.connecting.pop(address, None) is not None:
                    self._agent_load(sender, -1)
                self.tried.add(address)
                self.redial.ended(address, now, reason, productive=False)
                self.connect_more()
            case PeerBitfield(peer=key, bitfield=raw):
                self._on_bitfield(key, raw)
            case PeerHave(peer=key, piece=piece) if self.picker is not None:
                self._on_have(key, self.torrent.meta.info.geometry.piece_index(piece))
            case PeerInterest(peer=key, interested=interested):
                self._on_interest(key, interested)
            case WorkWanted(peer=key, count=count):
                record = self.peers.get(key)
                if record is not None:
                    self._assign(record, count)
            case PiecesReleased(peer=key, pieces=pieces):
                if self.picker is not None and key in self.peers:
                    for piece in pieces:
                        self.picker.release(key, piece)
                    self.offer_work()
            case PieceDownloaded(peer=key, piece=piece) if self.picker is not None:
                self._on_downloaded(key, self.torrent.meta.info.geometry.piece_index(piece), now)
            case PeerDisconnected(peer=key, reason=reason):
                self.closing.pop(key, None)  # closed at our request: its totals are in
                record = self.peers.get(key)
                if record is not None:
                    if record.url:
                        self.web_seed_ended(record, reason, event.message, now)
                    elif not record.incoming and record.address is not None:
                        productive = bool(record.downloaded or record.uploaded)
                        self.redial.ended(record.address, now, reason, productive=productive)
                    self.forget_peer(key)
                    self.offer_work()
                    self.connect_more()

    def peer_stats(self, sender: bytes, stat: PeerStats) -> None:
        """A connection's counters and rates from its peer agent ``sender``."""
        record = self.peers.get(stat.peer)
        if record is None:
            closing = self.closing.get(stat.peer)
            if closing is not None and closing.agent == sender:
                self.count_final(closing, stat.downloaded, stat.uploaded)
            return
        if record.agent == sender:
            record.downloaded, record.uploaded = stat.downloaded, stat.uploaded
            record.download_rate, record.upload_rate = stat.download_rate, stat.upload_rate
            record.peer_choking = stat.peer_choking
            record.peer_interested = stat.peer_interested
            record.am_choking = stat.am_choking
            record.am_interested = stat.am_interested
            record.snubbed = stat.snubbed
            record.web_seed = stat.web_seed

    # -- pieces --

    def piece_verified(self, piece: PieceIndex, now: float) -> None:
        picker, torrent = self.picker, self.torrent
        if picker is None or piece in picker.have:
            return
        for owner in picker.owners(piece):
            self._cancel(str(owner), piece)
        picker.piece_verified(piece)
        size = torrent.meta.info.geometry.piece_size(piece)
        torrent.verified_bytes += size
        torrent.downloaded_floor += size
        info_hash = torrent.info_hash
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._send(agent.identity, BroadcastHave(info_hash, piece))
        if picker.complete and torrent.completed_at is None:
            torrent.completed_at = now
            advance(torrent, Move.COMPLETED)
            self.close_web_seeds()
            self._completed(torrent)
            log.info(
                "%s: complete (%s in %s)",
                torrent.name,
                human_size(torrent.total_length),
                short_duration(now - torrent.added_at),
                extra={"info_hash": info_hash},
            )

    def piece_rejected(self, piece: PieceIndex, contributors: Iterable[str]) -> None:
        """A piece failed its hash: fetch it again elsewhere, and blame its sender.

        A piece with blocks from several connections proves nobody guilty yet: it is fetched
        again from one connection, and the storage agent's ``CorruptBlocksTraced`` names the
        liars once that copy verifies (``blocks_traced``).
        """
        if self.picker is None:
            return
        if self.torrent.origins is not None:
            self.torrent.origins.forget(piece)
        senders = list(dict.fromkeys(contributors))
        if len(senders) > 1:
            self.picker.piece_failed(piece, single_source=True)
        else:
            self.picker.piece_failed(piece, [key for key in senders if key in self.peers])
            self.blame(senders)
        self.offer_work()

    def _on_downloaded(self, key: str, piece: PieceIndex, now: float) -> None:
        picker = self.picker
        if picker is None:
            return
        # The storage agent's PieceVerified may overtake this on another socket: the piece is
        # then had already, and its origin is still this connection's unless one is known.
        verified = piece in picker.have
        if not verified:
            for other in picker.piece_downloaded(piece, now):
                if other != key:
                    self._cancel(str(other), piece)
        self._record_origin(key, piece, keep_known=verified)

    def _record_origin(self, key: str, piece: PieceIndex, *, keep_known: bool) -> None:
        record = self.peers.get(key)
        agent = self.agents.get(record.agent) if record is not None else None
        if agent is None:
            return
        if self.torrent.origins is None:
            self.torrent.origins = PieceOrigins(self.torrent.num_pieces)
        if keep_known and self.torrent.origins.origin_of(piece) is not None:
            return
        self.torrent.origins.record(piece, agent.agent_id, agent.host)

    def _assign(self, record: PeerRecord, count: int) -> None:
        if self.picker is None:
            return
        pick = self.picker.pick_run if record.url else self.picker.pick
        pieces = pick(record.key, record.bits, count)
        record.starved = not pieces
        info_hash = self.torrent.info_hash
        self._send(record.agent, AssignPieces(info_hash, record.key, tuple(pieces)))

    def offer_work(self) -> None:
        """Pieces came free: give them to connections that had nothing to do."""
        if self.picker is None:
            return
        for record in list(self.peers.values()):
            if record.starved and self.picker.interesting(record.bits):
                count = self.web_seed_count() if record.url else self.config.pieces_per_peer
                self._assign(record, count)

    def _cancel(self, key: str, piece: int) -> None:
        record = self.peers.get(key)
        if record is not None:
            self._send(record.agent, CancelPieces(self.torrent.info_hash, key, (piece,)))

    # -- connections --

    def connect_more(self) -> None:
        """Dial known addresses until the torrent has its share of connections (also while
        fetching a magnet link's info dictionary).

        A seeding torrent dials too: a leecher that announced before us never heard of us.
        Our dials keep a fifth of the slots of their own (``DIAL_SHARE``): peers that dialled
        us, however many, never stop us from reaching the peers we chose.
        """
        if not self.running:
            return
        limit = self.config.max_peers_per_torrent
        reserved = max(1, int(limit * DIAL_SHARE))
        dialled = sum(1 for peer in self.peers.values() if not peer.incoming and not peer.url)
        while self.candidates:
            ours = dialled + len(self.connecting)
            peers = self.torrent.peer_count
            if ours >= limit or (peers - dialled + ours >= limit and ours >= reserved):
                return
            agent = self.agents.peer_agent_for_next_peer()
            if agent is None:
                return
            address, _ = self.candidates.popitem(last=False)
            if self.connected_to(address) or address.host in self.banned_hosts:
                continue
            if address in self.agents.listen_addresses():
                continue  # one of our own peer agents, handed back by a tracker
            pex = self.torrent.pex
            if self.sources.get(address) is PeerSource.PEX and (
                pex is None or not pex.policy.record_attempt(address)
            ):
                continue  # its PeX attempts are used up (or PeX stopped)
            self.connecting[address] = agent.identity
            agent.connections += 1
            self._send(agent.identity, ConnectPeer(self.torrent.info_hash, address))

    @property
    def running(self) -> bool:
        """Whether it dials: open, or fetching its info dictionary."""
        state = self.torrent.state
        return state in OPEN_STATES if self.picker is not None else state is METADATA

    @property
    def accepts_connections(self) -> bool:
        """Whether its peer agents hold it, so that a connection's record is kept."""
        return self.picker is not None or self.magnet_attached

    def add_candidates(
        self, addresses: tuple[PeerAddress, ...], source: PeerSource = PeerSource.TRACKER
    ) -> None:
        """Remember addresses to dial, and where each came first from (``source``); known,
        banned and over-the-bound ones are skipped."""
        for address in addresses:
            if address not in self.sources:
                if len(self.sources) < MAX_SOURCES:
                    self.sources[address] = source
                elif source is PeerSource.PEX:
                    continue  # unrecorded, it would escape PeX's attempt limit
            if (
                address in self.candidates
                or address in self.connecting
                or address in self.tried
                or address.host in self.banned_hosts
                or self.redial.given_up(address)
                or len(self.candidates) >= MAX_CANDIDATES
            ):
                continue
            self.candidates[address] = None

    def due_retries(self, now: float) -> None:
        """Move addresses whose back-off has passed to the front of the candidates."""
        for address in self.redial.due(now):
            if self.connected_to(address) or address in self.connecting:
                continue
            if address.host in self.banned_hosts:
                continue
            self.tried.discard(address)
            self.candidates[address] = None
            self.candidates.move_to_end(address, last=False)

    def connected_to(self, address: PeerAddress) -> bool:
        return any(peer.address == address for peer in self.peers.values())

    def address_of(self, key: str) -> PeerAddress | None:
        """The address of a connection, open or recently closed."""
        record = self.peers.get(key)
        return record.address if record is not None else self.departed.get(key)

    def _on_connected(self, sender: bytes, message: PeerConnected, now: float) -> None:
        if self.connecting.pop(message.address, None) is None:
            self._agent_load(sender, +1)  # an incoming connection
        self.tried.add(message.address)
        source = PeerSource.INCOMING
        if not message.incoming:
            source = self.sources.get(message.address, PeerSource.TRACKER)
        record = PeerRecord(
            source=source,
            key=message.peer,
            agent=sender,
            address=message.address,
            client=message.client,
            bits=Bitfield(self.torrent.num_pieces),
            incoming=message.incoming,
            fast_extension=message.fast_extension,
            extension_protocol=message.extension_protocol,
            connected_at=now,
        )
        if message.address.host in self.banned_hosts or not self.accepts_connections:
            self.peers[message.peer] = record  # for disconnect() to count it off
            self.disconnect(record, DisconnectReason.BANNED)
            return
        self.peers[message.peer] = record

    def _on_bitfield(self, key: str, raw: bytes) -> None:
        record = self.peers.get(key)
        if record is None or self.picker is None:
            return
        try:
            bits = Bitfield.from_bytes(raw, self.torrent.num_pieces)
        except BitfieldError:
            self.disconnect(record, DisconnectReason.BAD_BITFIELD)
            return
        self.picker.peer_left(record.bits)
        record.bits = bits
        self.picker.peer_joined(bits)
        if bits.complete and self.torrent.complete:
            self.disconnect(record, DisconnectReason.BOTH_SEEDS)
            return
        if self.picker.interesting(bits):
            self._assign(record, self.config.pieces_per_peer)

    def _on_have(self, key: str, piece: PieceIndex) -> None:
        record = self.peers.get(key)
        if record is None or self.picker is None:
            return
        if piece not in record.bits:
            record.bits.add(piece)
            self.picker.peer_has(piece)
            if record.starved and piece not in self.picker.have:
                self._assign(record, self.config.pieces_per_peer)

    def disconnect(self, record: PeerRecord, reason: DisconnectReason) -> None:
        """Close a connection ourselves: the peer agent is told, the address given up when the
        reason is final, and the record kept aside until the connection's final
        ``TransferStats`` and ``PeerDisconnected`` arrive, so no byte it moved goes uncounted."""
        info_hash = self.torrent.info_hash
        self._send(record.agent, DisconnectPeer(info_hash, record.key, reason))
        if reason in FINAL_REASONS and record.address is not None:
            self.redial.give_up(record.address)
        self.forget_peer(record.key, closing=True)

    def forget_peer(self, key: str, *, closing: bool = False) -> None:
        """A connection is gone: its pieces go back to the pool, its counters to the torrent.

        Args:
            key: the connection's peer key.
            closing: the peer agent still holds the connection and will send its final
                counters; keep the record to count them (``closing``).
        """
        record = self.peers.pop(key, None)
        if record is None:
            return
        self._remember_departed(record)
        if closing:
            self._remember_closing(record)
        if record.url:
            self.torrent.web_seeds.credit(record.url, record.downloaded)
        else:
            self._agent_load(record.agent, -1)
        self.choker.forget(key)
        self.torrent.downloaded_closed += record.downloaded
        self.torrent.uploaded_closed += record.uploaded
        if self.picker is not None:
            self.picker.release_peer(key)
            self.picker.peer_left(record.bits)

    def forget_all(self) -> None:
        """The torrent stops (pause, error, recheck, lost storage): drop every connection
        record, but keep the addresses we dialled, to dial them again when it starts."""
        known = [p.address for p in self.peers.values() if not p.incoming and p.address is not None]
        known += list(self.connecting)
        for key in list(self.peers):
            self.forget_peer(key, closing=True)  # detached: final counters follow
        for identity in self.connecting.values():
            self._agent_load(identity, -1)
        self.connecting.clear()
        self.magnet_attached = False
        self.torrent.web_seeds.stopped()
        self.tried.clear()
        self.redial.clear()
        self.add_candidates(tuple(known))

    def forget_agent(self, identity: bytes) -> None:
        """A peer agent is gone, with its connections: their addresses may be dialled again."""
        lost = [
            p.address for p in self.peers.values() if p.agent == identity and p.address is not None
        ]
        self.torrent.web_seeds.agent_lost(identity)
        for key in [k for k, peer in self.peers.items() if peer.agent == identity]:
            self.forget_peer(key)
        for key in [k for k, peer in self.closing.items() if peer.agent == identity]:
            del self.closing[key]
        for address in [a for a, who in self.connecting.items() if who == identity]:
            del self.connecting[address]
            lost.append(address)
        self.tried.difference_update(lost)
        self.add_candidates(tuple(lost))
        self.offer_work()

    def learn_geometry(self) -> None:
        """The info dictionary arrived: live connections' pieces are sized to it (empty)."""
        for record in self.peers.values():
            record.bits = Bitfield(self.torrent.num_pieces)

    def drop_sources(self, sources: frozenset[PeerSource]) -> None:
        """Drop connections and candidates from ``sources`` (a magnet link turned private)."""
        for record in [r for r in self.peers.values() if r.source in sources]:
            self.disconnect(record, DisconnectReason.BANNED)
        for address in [a for a in self.candidates if self.sources.get(a) in sources]:
            del self.candidates[address]

    def count_final(self, record: PeerRecord, downloaded: int, uploaded: int) -> None:
        """Counters of a closing connection: what they grew by goes to the closed totals."""
        if record.url:
            self.torrent.web_seeds.credit(record.url, downloaded - record.downloaded)
        self.torrent.downloaded_closed += max(0, downloaded - record.downloaded)
        self.torrent.uploaded_closed += max(0, uploaded - record.uploaded)
        record.downloaded = max(record.downloaded, downloaded)
        record.uploaded = max(record.uploaded, uploaded)

    def _remember_departed(self, record: PeerRecord) -> None:
        """Keep a closed connection's address for a while (bounded like ``closing``)."""
        if record.address is None:
            return  # a web seed: its bans are of its URL, never of an address
        self.departed[record.key] = record.address
        while len(self.departed) > MAX_CLOSING:
            self.departed.popitem(last=False)

    def _remember_closing(self, record: PeerRecord) -> None:
        """Keep a record whose connection we asked to close, to count its final counters."""
        self.closing[record.key] = record
        while len(self.closing) > MAX_CLOSING:
            self.closing.popitem(last=False)

    def _agent_load(self, identity: bytes, delta: int) -> None:
        agent = self.agents.get(identity)
        if agent is not None:
            agent.connections = max(0, agent.connections + delta)
