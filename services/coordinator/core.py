"""The coordinator's decisions, without sockets: bus events in, addressed commands out.

``Coordinator`` is a plain class. The actor feeds it every message from the agents (``handle``),
every control request (``control``) and the time (``tick``), then sends what accumulated in
``outbox`` as ``(agent identity, message)`` pairs. Tests drive it directly with fake agents.

Decisions made here:
- which storage agent opens a torrent, which peer agents serve it, which peer agent dials which
  address (the least loaded one);
- which pieces each connection fetches (``PiecePicker``), in batches of
  ``pieces_per_peer``, so a connection never waits for the coordinator between pieces;
- what happens to a piece that failed its hash (picked again, from other peers where
  possible; a peer that keeps sending bad data is disconnected and its address banned).
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from shared.bitfield import Bitfield, BitfieldError
from shared.bus import (
    AddTorrent,
    AssignPieces,
    AttachTorrent,
    BanPeers,
    BroadcastHave,
    CancelPieces,
    CloseTorrent,
    ConnectPeer,
    ControlFailed,
    DetachTorrent,
    DisconnectPeer,
    GetStatus,
    Goodbye,
    Hello,
    ListeningOn,
    Message,
    OpenTorrent,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeerHave,
    PeerInterest,
    PeersDiscovered,
    PeerStatus,
    PieceDownloaded,
    PieceRejected,
    PiecesReleased,
    PieceVerified,
    RemoveTorrent,
    ServiceKind,
    SetChoke,
    StatusReport,
    StorageFailed,
    TorrentAdded,
    TorrentClosed,
    TorrentCompleted,
    TorrentOpened,
    TorrentRemoved,
    TorrentState,
    TorrentStatus,
    TrackerState,
    TrackerStateChanged,
    TrackerStatus,
    TrackerTier,
    TrackTorrent,
    TransferStats,
    UntrackTorrent,
    UpdateTransfer,
    WorkWanted,
)
from shared.config import CoordinatorConfig
from shared.errors import MetainfoError
from shared.metainfo import parse_metainfo
from shared.types import InfoHash, PeerAddress, PeerId

from .agents import Agent, AgentRegistry
from .choking import Candidate, Choker
from .picking import PiecePicker
from .torrent import PeerRecord, Torrent

__all__ = ["LISTEN_PORT_WAIT", "MAX_HASH_FAILURES", "Coordinator"]

LISTEN_PORT_WAIT = 3.0
"""Seconds a new torrent waits for a peer agent's listen port before announcing anyway."""

MAX_HASH_FAILURES = 3
"""Pieces a connection may send us corrupt before it is dropped and its address banned."""

Outgoing = tuple[bytes, Message]


class Coordinator:
    """Session state of every torrent, and the rules that move it forward.

    Args:
        peer_id: our peer id for this run.
        listen_port: the port announced to trackers.
        storage_endpoint: where peer agents send pieces (the storage agent's data endpoint).
        config: the coordinator's section of the configuration.
        rng: randomness for the piece picker.
    """

    def __init__(
        self,
        *,
        peer_id: PeerId,
        listen_port: int,
        storage_endpoint: str,
        config: CoordinatorConfig,
        rng: random.Random,
    ) -> None:
        self.peer_id = peer_id
        self.listen_port = listen_port
        self.storage_endpoint = storage_endpoint
        self.config = config
        self.rng = rng
        self.agents = AgentRegistry()
        self.torrents: dict[InfoHash, Torrent] = {}
        self.outbox: list[Outgoing] = []
        self.listen_address: PeerAddress | None = None
        """Where the first peer agent accepts connections (``ListeningOn``)."""
        self._now = 0.0
        """The latest time we were given (status reports times relative to it)."""

    def take_outbox(self) -> list[Outgoing]:
        out, self.outbox = self.outbox, []
        return out

    # -- agents --

    def agent_joined(self, identity: bytes, hello: Hello) -> None:
        """A welcomed agent: give it the torrents it should know about."""
        agent = self.agents.join(identity, hello)
        for torrent in self.torrents.values():
            self._introduce(torrent, agent)

    def agent_left(self, identity: bytes) -> Agent | None:
        """An agent is gone (goodbye, exit, silence): forget what it was doing."""
        agent = self.agents.leave(identity)
        if agent is None:
            return None
        for torrent in self.torrents.values():
            for key in [k for k, peer in torrent.peers.items() if peer.agent == identity]:
                self._forget_peer(torrent, key)
            for address in [a for a, who in torrent.connecting.items() if who == identity]:
                del torrent.connecting[address]
            self._offer_work(torrent)
        return agent

    def _introduce(self, torrent: Torrent, agent: Agent) -> None:
        match agent.kind:
            case ServiceKind.STORAGE_AGENT if torrent.picker is None:
                self._open(torrent, agent)
            case ServiceKind.PEER_AGENT if torrent.picker is not None:
                self._attach(torrent, agent)
            case ServiceKind.TRACKER_AGENT if torrent.picker is not None:
                self._track(torrent, agent)

    # -- control --

    def add_torrent(self, request: AddTorrent, now: float) -> TorrentAdded | ControlFailed:
        try:
            metainfo = parse_metainfo(request.metainfo)
        except MetainfoError as exc:
            return ControlFailed(exc.reason, f"not a usable torrent: {exc}")
        if metainfo.info_hash in self.torrents:
            return ControlFailed(
                "already_added", f"{metainfo.info.name} is already added ({metainfo.info_hash})"
            )
        save_path = request.download_dir or self.config.download_dir
        torrent = Torrent(metainfo, save_path, added_at=now, choker=Choker(self.rng, now))
        self.torrents[metainfo.info_hash] = torrent
        storage = self.agents.first(ServiceKind.STORAGE_AGENT)
        if storage is not None:
            self._open(torrent, storage)
        return TorrentAdded(metainfo.info_hash, metainfo.info.name)

    def status(self, request: GetStatus | None = None) -> StatusReport:
        prefix = request.prefix.lower() if request is not None else ""
        return StatusReport(
            tuple(
                self._status_of(torrent)
                for torrent in self.torrents.values()
                if torrent.info_hash_hex.startswith(prefix)
            )
        )

    def remove_torrent(self, request: RemoveTorrent) -> TorrentRemoved | ControlFailed:
        torrent = self.torrents.pop(request.info_hash, None)
        if torrent is None:
            return ControlFailed("unknown_torrent", f"no torrent {request.info_hash}")
        self._stop_torrent(torrent)
        return TorrentRemoved(request.info_hash)

    def diagnosis(self, info_hash: InfoHash) -> str:
        """One line on why a torrent finds no peers (for the one-shot download's error)."""
        torrent = self.torrents.get(info_hash)
        if torrent is None:
            return "the torrent is not in the session"
        if not any(torrent.metainfo.trackers):
            return "the torrent lists no tracker"
        if self.agents.first(ServiceKind.TRACKER_AGENT) is None:
            return "the tracker agent is not running"
        states = [state for state, _ in torrent.trackers.values()]
        if not states:
            return "no tracker has answered yet"
        failed = [state for state in states if state.state is TrackerState.FAILED]
        if len(failed) == len(states):
            errors = "; ".join(f"{state.url}: {state.error or 'failed'}" for state in failed[:3])
            return f"every tracker failed: {errors}"
        if torrent.tried:
            return f"{len(torrent.tried)} peers were found but none stayed connected"
        return "the trackers know no other peer for this torrent"

    def stop_all(self) -> None:
        """Shutdown: tell every agent to let go of every torrent (trackers get ``stopped``)."""
        for torrent in self.torrents.values():
            self._stop_torrent(torrent)

    def _stop_torrent(self, torrent: Torrent) -> None:
        info_hash = torrent.metainfo.info_hash
        for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT):
            self._send(agent.identity, UntrackTorrent(info_hash))
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._send(agent.identity, DetachTorrent(info_hash))
        for agent in self.agents.of_kind(ServiceKind.STORAGE_AGENT):
            self._send(agent.identity, CloseTorrent(info_hash, delete_files=False))

    def _status_of(self, torrent: Torrent) -> TorrentStatus:
        total = torrent.total_length
        trackers = tuple(
            TrackerStatus(
                url=report.url,
                tier=report.tier,
                state=report.state,
                error=report.error,
                seeders=report.seeders,
                leechers=report.leechers,
                completed=report.completed,
                next_announce_in=None
                if report.next_announce_in is None
                else max(0.0, report.next_announce_in - (self._now - received)),
            )
            for report, received in sorted(
                torrent.trackers.values(), key=lambda item: (item[0].tier, item[0].url)
            )
        )
        return TorrentStatus(
            info_hash=torrent.metainfo.info_hash,
            name=torrent.name,
            state=torrent.state,
            progress=min(1.0, torrent.verified_bytes / total) if total else 1.0,
            total_length=total,
            downloaded=torrent.downloaded,
            uploaded=torrent.uploaded,
            download_rate=torrent.download_rate,
            upload_rate=torrent.upload_rate,
            peers=len(torrent.peers),
            seeds=torrent.seeds,
            pieces_verified=torrent.pieces_verified,
            num_pieces=torrent.num_pieces,
            save_path=torrent.save_path,
            error=torrent.error,
            trackers=trackers,
            peer_list=tuple(
                PeerStatus(
                    address=peer.address,
                    client=peer.client,
                    flags=peer.flags,
                    download_rate=peer.download_rate,
                    upload_rate=peer.upload_rate,
                    downloaded=peer.downloaded,
                    uploaded=peer.uploaded,
                    progress=len(peer.bits) / torrent.num_pieces,
                )
                for peer in list(torrent.peers.values())[:1024]
            ),
            check_progress=None,
        )

    # -- bus events --

    def handle(self, sender: bytes, message: Message, now: float) -> None:
        """One event from an agent."""
        self._now = max(self._now, now)
        if isinstance(message, Goodbye):
            self.agent_left(sender)
            return
        if isinstance(message, ListeningOn):
            self._on_listening(sender, message)
            return
        info_hash = getattr(message, "info_hash", None)
        torrent = self.torrents.get(info_hash) if isinstance(info_hash, InfoHash) else None
        match message:
            case TransferStats(peers=stats):
                for stat in stats:
                    owner = self.torrents.get(stat.info_hash)
                    record = owner.peers.get(stat.peer) if owner is not None else None
                    if record is not None and record.agent == sender:
                        record.downloaded, record.uploaded = stat.downloaded, stat.uploaded
                        record.download_rate = stat.download_rate
                        record.upload_rate = stat.upload_rate
                        record.peer_choking = stat.peer_choking
                        record.peer_interested = stat.peer_interested
                        record.am_choking = stat.am_choking
                        record.am_interested = stat.am_interested
                        record.snubbed = stat.snubbed
            case _ if torrent is None:
                pass  # a torrent removed meanwhile, or a confused agent: nothing to do
            case TorrentOpened(have=have):
                self._on_opened(torrent, have)
            case PieceVerified(piece=piece):
                self._on_verified(torrent, piece, now)
            case PieceRejected(piece=piece, contributors=contributors):
                self._on_rejected(torrent, piece, contributors)
            case StorageFailed(message=text):
                torrent.state = TorrentState.ERROR
                torrent.error = text
            case TorrentClosed():
                pass
            case PeersDiscovered(peers=peers):
                torrent.add_candidates(peers)
                self._connect_more(torrent)
            case TrackerStateChanged(url=url):
                torrent.trackers[url] = (message, now)
            case PeerConnected():
                self._on_connected(torrent, sender, message)
            case PeerConnectFailed(address=address):
                if torrent.connecting.pop(address, None) is not None:
                    self._agent_load(sender, -1)
                torrent.tried.add(address)
                self._connect_more(torrent)
            case PeerBitfield(peer=key, bitfield=raw):
                self._on_bitfield(torrent, key, raw)
            case PeerHave(peer=key, piece=piece):
                self._on_have(torrent, key, piece)
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
                    self._offer_work(torrent)
            case PieceDownloaded(peer=key, piece=piece):
                self._on_downloaded(torrent, key, piece)
            case PeerDisconnected(peer=key):
                if key in torrent.peers:
                    self._forget_peer(torrent, key)
                    self._offer_work(torrent)
                    self._connect_more(torrent)

    def tick(self, now: float) -> None:
        """Once a second: choking rounds, tracker totals, and the connection count."""
        self._now = max(self._now, now)
        for torrent in self.torrents.values():
            if torrent.picker is None or torrent.state is TorrentState.ERROR:
                continue
            if torrent.choker.due(now):
                self._rechoke(torrent, now)
            if not torrent.tracked and now - torrent.added_at >= LISTEN_PORT_WAIT:
                for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT):
                    self._track(torrent, agent)
            self._connect_more(torrent)
            update = UpdateTransfer(
                torrent.metainfo.info_hash, torrent.uploaded, torrent.downloaded, torrent.left
            )
            for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT):
                self._send(agent.identity, update)

    # -- torrent lifecycle --

    def _open(self, torrent: Torrent, storage: Agent) -> None:
        info_hash = torrent.metainfo.info_hash
        self._send(
            storage.identity, OpenTorrent(info_hash, torrent.metainfo.raw_info, torrent.save_path)
        )

    def _on_opened(self, torrent: Torrent, have_bytes: bytes) -> None:
        if torrent.picker is not None:
            return
        try:
            have = Bitfield.from_bytes(have_bytes, torrent.num_pieces)
        except BitfieldError as exc:
            torrent.state, torrent.error = TorrentState.ERROR, f"storage agent: {exc}"
            return
        torrent.picker = PiecePicker(torrent.num_pieces, have, self.rng)
        geometry = torrent.metainfo.info.geometry
        torrent.verified_bytes = sum(geometry.piece_size(piece) for piece in have)
        torrent.state = TorrentState.SEEDING if torrent.complete else TorrentState.DOWNLOADING
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._attach(torrent, agent)
        for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT):
            self._track(torrent, agent)

    def _attach(self, torrent: Torrent, agent: Agent) -> None:
        assert torrent.picker is not None
        info = torrent.metainfo.info
        self._send(
            agent.identity,
            AttachTorrent(
                info_hash=torrent.metainfo.info_hash,
                piece_length=info.piece_length,
                total_length=info.total_length,
                num_pieces=info.num_pieces,
                peer_id=self.peer_id,
                have=torrent.picker.have.to_bytes(),
                private=info.private,
                storage_endpoint=self.storage_endpoint,
            ),
        )

    def _track(self, torrent: Torrent, agent: Agent) -> None:
        if self.listen_address is None and self._now - torrent.added_at < LISTEN_PORT_WAIT:
            return  # announce our real port: wait briefly for a peer agent's ListeningOn
        torrent.tracked = True
        metainfo = torrent.metainfo
        self._send(
            agent.identity,
            TrackTorrent(
                info_hash=metainfo.info_hash,
                tiers=tuple(TrackerTier(tier) for tier in metainfo.trackers if tier),
                peer_id=self.peer_id,
                listen_port=self.listen_address.port if self.listen_address else self.listen_port,
                private=metainfo.info.private,
                uploaded=torrent.uploaded,
                downloaded=torrent.downloaded,
                left=torrent.left,
            ),
        )

    def _on_verified(self, torrent: Torrent, piece: int, now: float) -> None:
        picker = torrent.picker
        if picker is None or piece >= torrent.num_pieces or piece in picker.have:
            return
        for owner in picker.owners(piece):
            self._cancel(torrent, str(owner), piece)
        picker.piece_verified(piece)
        torrent.verified_bytes += torrent.metainfo.info.geometry.piece_size(piece)
        for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
            self._send(agent.identity, BroadcastHave(torrent.metainfo.info_hash, piece))
        if picker.complete and torrent.completed_at is None:
            torrent.completed_at = now
            torrent.state = TorrentState.SEEDING
            for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT):
                self._send(agent.identity, TorrentCompleted(torrent.metainfo.info_hash))

    def _on_rejected(self, torrent: Torrent, piece: int, contributors: Iterable[str]) -> None:
        if torrent.picker is None or piece >= torrent.num_pieces:
            return
        suspects = [key for key in contributors if key in torrent.peers]
        torrent.picker.piece_failed(piece, suspects)
        for key in suspects:
            record = torrent.peers[key]
            record.hash_failures += 1
            if record.hash_failures >= MAX_HASH_FAILURES:
                torrent.banned_hosts.add(record.address.host)
                for agent in self.agents.of_kind(ServiceKind.PEER_AGENT):
                    self._send(
                        agent.identity,
                        BanPeers(torrent.metainfo.info_hash, (record.address.host,)),
                    )
                self._send(
                    record.agent,
                    DisconnectPeer(torrent.metainfo.info_hash, key, "sent_corrupt_data"),
                )
                self._forget_peer(torrent, key)
        self._offer_work(torrent)

    # -- peers --

    def _on_listening(self, sender: bytes, message: ListeningOn) -> None:
        if self.listen_address is None:
            self.listen_address = message.address
            for torrent in self.torrents.values():
                if torrent.picker is not None and not torrent.tracked:
                    for agent in self.agents.of_kind(ServiceKind.TRACKER_AGENT):
                        self._track(torrent, agent)

    def _on_interest(self, torrent: Torrent, key: str, interested: bool) -> None:
        record = torrent.peers.get(key)
        if record is None:
            return
        record.peer_interested = interested
        if interested and key not in torrent.choker.unchoked and torrent.choker.grant(key):
            self._send(record.agent, SetChoke(torrent.metainfo.info_hash, key, False))
            record.am_choking = False

    def _rechoke(self, torrent: Torrent, now: float) -> None:
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

    def _connect_more(self, torrent: Torrent) -> None:
        if torrent.picker is None or torrent.complete or torrent.state is TorrentState.ERROR:
            return
        limit = self.config.max_peers_per_torrent
        while torrent.candidates and len(torrent.peers) + len(torrent.connecting) < limit:
            agent = self.agents.least_loaded_peer_agent()
            if agent is None:
                return
            address, _ = torrent.candidates.popitem(last=False)
            if torrent.connected_to(address) or address.host in torrent.banned_hosts:
                continue
            torrent.connecting[address] = agent.identity
            agent.connections += 1
            self._send(agent.identity, ConnectPeer(torrent.metainfo.info_hash, address))

    def _on_connected(self, torrent: Torrent, sender: bytes, message: PeerConnected) -> None:
        torrent.connecting.pop(message.address, None)
        torrent.tried.add(message.address)
        if message.address.host in torrent.banned_hosts or torrent.picker is None:
            self._send(sender, DisconnectPeer(torrent.metainfo.info_hash, message.peer, "banned"))
            return
        torrent.peers[message.peer] = PeerRecord(
            key=message.peer,
            agent=sender,
            address=message.address,
            client=message.client,
            bits=Bitfield(torrent.num_pieces),
            incoming=message.incoming,
            fast_extension=message.fast_extension,
            extension_protocol=message.extension_protocol,
            connected_at=self._now,
        )

    def _on_bitfield(self, torrent: Torrent, key: str, raw: bytes) -> None:
        record = torrent.peers.get(key)
        if record is None or torrent.picker is None:
            return
        try:
            bits = Bitfield.from_bytes(raw, torrent.num_pieces)
        except BitfieldError:
            self._send(
                record.agent, DisconnectPeer(torrent.metainfo.info_hash, key, "bad_bitfield")
            )
            self._forget_peer(torrent, key)
            return
        torrent.picker.peer_left(record.bits)
        record.bits = bits
        torrent.picker.peer_joined(bits)
        if bits.complete and torrent.complete:
            self._send(record.agent, DisconnectPeer(torrent.metainfo.info_hash, key, "both_seeds"))
            self._forget_peer(torrent, key)
            return
        if torrent.picker.interesting(bits):
            self._assign(torrent, record, self.config.pieces_per_peer)

    def _on_have(self, torrent: Torrent, key: str, piece: int) -> None:
        record = torrent.peers.get(key)
        if record is None or torrent.picker is None or not 0 <= piece < torrent.num_pieces:
            return
        if piece not in record.bits:
            record.bits.add(piece)
            torrent.picker.peer_has(piece)
            if record.starved and piece not in torrent.picker.have:
                self._assign(torrent, record, self.config.pieces_per_peer)

    def _on_downloaded(self, torrent: Torrent, key: str, piece: int) -> None:
        picker = torrent.picker
        if picker is None or not 0 <= piece < torrent.num_pieces or piece in picker.have:
            return
        for other in picker.piece_downloaded(piece):
            if other != key:
                self._cancel(torrent, str(other), piece)

    def _assign(self, torrent: Torrent, record: PeerRecord, count: int) -> None:
        if torrent.picker is None:
            return
        pieces = torrent.picker.pick(record.key, record.bits, count)
        record.starved = not pieces
        self._send(
            record.agent, AssignPieces(torrent.metainfo.info_hash, record.key, tuple(pieces))
        )

    def _offer_work(self, torrent: Torrent) -> None:
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

    def _forget_peer(self, torrent: Torrent, key: str) -> None:
        record = torrent.peers.pop(key, None)
        if record is None:
            return
        self._agent_load(record.agent, -1)
        torrent.choker.forget(key)
        torrent.downloaded_closed += record.downloaded
        torrent.uploaded_closed += record.uploaded
        if torrent.picker is not None:
            torrent.picker.release_peer(key)
            torrent.picker.peer_left(record.bits)

    def _agent_load(self, identity: bytes, delta: int) -> None:
        agent = self.agents.get(identity)
        if agent is not None:
            agent.connections = max(0, agent.connections + delta)

    def _send(self, identity: bytes, message: Message) -> None:
        self.outbox.append((identity, message))
