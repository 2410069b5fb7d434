"""Magnet links in the coordinator, driven by fake agents: a torrent with no metainfo fetches
its info dictionary from its peers (BEP 9) and goes on as an added .torrent; its connections
survive the upgrade; broken or hostile metadata is refused; pause and resume keep it in the
metadata state; status shows it."""

from __future__ import annotations

import hashlib
from typing import Any

from torviz.services.coordinator.core import Coordinator
from torviz.shared.bencode import encode
from torviz.shared.bus import (
    AddTorrent,
    AgentInfo,
    AssignPieces,
    AttachMagnet,
    AttachTorrent,
    ConnectPeer,
    ControlFailed,
    DetachTorrent,
    DisconnectPeer,
    DisconnectReason,
    MetadataPieceReceived,
    MetadataProgress,
    MetadataRejected,
    OpenTorrent,
    PeerBitfield,
    PeerConnected,
    PeerDisconnected,
    PeerExtensions,
    PeerInterest,
    PeersDiscovered,
    PeerSource,
    RequestMetadata,
    ServiceKind,
    SetChoke,
    TorrentAdded,
    TorrentExported,
    TorrentOpened,
    TorrentState,
    TrackTorrent,
    UntrackTorrent,
)
from torviz.shared.magnet import Magnet, format_magnet, metainfo_from_magnet, parse_magnet
from torviz.shared.metainfo import parse_metainfo
from torviz.shared.types import InfoHash, PeerId

from .test_core import PA1, PA2, STORAGE, TRACKER, addr, full_core, join, new_core, sent

PIECE = 16384
NUM_PIECES = 1000
"""20000 bytes of piece hashes: the info dictionary is two metadata pieces."""
TRACKER_URL = "http://127.0.0.1:6969/announce"


def make_info(
    name: bytes = b"file.bin", path: list[bytes] | None = None, *, private: bool = False
) -> bytes:
    pieces = b"".join(hashlib.sha1(i.to_bytes(4, "big")).digest() for i in range(NUM_PIECES))
    info: dict[bytes, Any] = {b"name": name, b"piece length": PIECE, b"pieces": pieces}
    if private:
        info[b"private"] = 1
    if path is None:
        info[b"length"] = PIECE * NUM_PIECES
    else:
        info[b"files"] = [{b"length": PIECE * NUM_PIECES, b"path": path}]
    return encode(info)


def magnet_of(raw: bytes, *, trackers: bool = True, peers: bool = True, name: str = "") -> str:
    return format_magnet(
        Magnet(
            InfoHash(hashlib.sha1(raw).digest()),
            display_name=name or None,
            trackers=(TRACKER_URL,) if trackers else (),
            peers=(addr(9),) if peers else (),
        )
    )


def add_magnet(core: Coordinator, raw: bytes, **kwargs: Any) -> InfoHash:
    reply = core.add_torrent(AddTorrent(b"", "", magnet_of(raw, **kwargs)), now=0.0)
    assert isinstance(reply, TorrentAdded), reply
    return reply.info_hash


def connect(
    core: Coordinator,
    info_hash: InfoHash,
    key: str,
    n: int,
    *,
    incoming: bool = False,
    agent: bytes = PA1,
) -> None:
    core.handle(
        agent,
        PeerConnected(info_hash, key, addr(n), PeerId(bytes([n]) * 20), "lt", incoming, True, True),
        0.0,
    )


def extensions(
    core: Coordinator,
    info_hash: InfoHash,
    key: str,
    size: int,
    *,
    version: str = "lt 2.0",
    pex: bool = False,
    port: int = 0,
) -> None:
    core.handle(PA1, PeerExtensions(info_hash, key, version, port, size > 0, pex, size), 1.0)


def deliver(core: Coordinator, info_hash: InfoHash, key: str, raw: bytes, piece: int) -> None:
    data = raw[piece * PIECE : (piece + 1) * PIECE]
    core.handle(PA1, MetadataPieceReceived(info_hash, key, piece, len(raw), data), 2.0)


def test_a_magnet_link_is_added_in_the_metadata_state_and_attached_announced_and_dialled() -> None:
    core = full_core()
    raw = make_info()
    info_hash = add_magnet(core, raw, name="my file")
    torrent = core.torrents[info_hash]
    assert torrent.state is TorrentState.METADATA and torrent.name == "my file"
    out = core.take_outbox()
    magnets = [(to, m) for to, m in out if isinstance(m, AttachMagnet)]
    assert sorted(to for to, _ in magnets) == [PA1, PA2]
    assert all(m.info_hash == info_hash and m.peer_id == core.peer_id for _, m in magnets)
    [(to, track)] = [(to, m) for to, m in out if isinstance(m, TrackTorrent)]
    assert to == TRACKER and track.left == 16384
    assert [tier.urls for tier in track.tiers] == [(TRACKER_URL,)]
    dials = [m for _, m in out if isinstance(m, ConnectPeer)]
    assert [d.address for d in dials] == [addr(9)]
    assert not [m for _, m in out if isinstance(m, OpenTorrent | AttachTorrent)]
    [row] = core.status(0.0).torrents
    assert row.state is TorrentState.METADATA and row.name == "my file"
    assert row.metadata == MetadataProgress(0, 0, None) and row.progress == 0.0
    # A peer agent that joins later holds it too.
    join(core, b"pa3", ServiceKind.PEER_AGENT)
    assert [to for to, _ in sent(core, AttachMagnet)] == [b"pa3"]


def test_a_bad_magnet_link_and_a_second_add_of_one_info_hash_are_refused() -> None:
    core = full_core()
    bad = core.add_torrent(AddTorrent(b"", "", "magnet:?dn=nothing"), now=0.0)
    assert isinstance(bad, ControlFailed) and bad.reason == "bad_magnet"
    assert bad.message.startswith("not a usable magnet link: ")
    raw = make_info()
    add_magnet(core, raw)
    again = core.add_torrent(AddTorrent(b"", "", magnet_of(raw)), now=0.0)
    assert isinstance(again, ControlFailed) and again.reason == "already_added"
    as_file = core.add_torrent(AddTorrent(encode({b"info": _decoded(raw)}), ""), now=0.0)
    assert isinstance(as_file, ControlFailed) and as_file.reason == "already_added"
    assert len(core.torrents) == 1


def _decoded(raw: bytes) -> Any:
    from torviz.shared.bencode import decode

    return decode(raw, strict=True)


def test_the_metadata_is_fetched_then_the_torrent_opens_and_its_connections_survive() -> None:
    core = full_core()
    raw = make_info()
    info_hash = add_magnet(core, raw)
    core.take_outbox()
    connect(core, info_hash, "pa1/1", 9)
    extensions(core, info_hash, "pa1/1", len(raw))
    [(to, request)] = sent(core, RequestMetadata)
    assert to == PA1 and request.peer == "pa1/1" and request.pieces == (0, 1)
    assert core.status(1.0).torrents[0].metadata == MetadataProgress(1, 0, len(raw))
    deliver(core, info_hash, "pa1/1", raw, 0)
    assert core.status(2.0).torrents[0].metadata == MetadataProgress(1, PIECE, len(raw))
    deliver(core, info_hash, "pa1/1", raw, 1)
    torrent = core.torrents[info_hash]
    assert torrent.state is TorrentState.CHECKING
    assert torrent.metainfo is not None and torrent.metainfo.raw_info == raw
    assert parse_metainfo(torrent.metainfo_bytes).trackers == ((TRACKER_URL,),)
    out = core.take_outbox()
    [(to, opening)] = [(to, m) for to, m in out if isinstance(m, OpenTorrent)]
    assert to == STORAGE and opening.raw_info == raw
    assert not [m for _, m in out if isinstance(m, DetachTorrent | DisconnectPeer)]
    record = torrent.swarm.peers["pa1/1"]
    assert record.bits.size == NUM_PIECES and record.source is PeerSource.MAGNET
    core.handle(STORAGE, TorrentOpened(info_hash, b"\0" * (NUM_PIECES // 8)), 3.0)
    attaches = sent(core, AttachTorrent)
    assert sorted(to for to, _ in attaches) == [PA1, PA2]
    assert all(m.info == raw and m.pex and m.num_pieces == NUM_PIECES for _, m in attaches)
    assert core.status(3.0).torrents[0].state is TorrentState.DOWNLOADING
    full = bytes([0xFF]) * (NUM_PIECES // 8)
    core.handle(PA1, PeerBitfield(info_hash, "pa1/1", full), 4.0)
    assert [m.peer for _, m in sent(core, AssignPieces)] == ["pa1/1"]
    exported = core.export(info_hash, 5.0)
    assert isinstance(exported, TorrentExported)
    assert parse_metainfo(exported.metainfo).info_hash == info_hash


def test_a_peer_whose_metadata_has_the_wrong_hash_is_dropped_and_never_dialled_again() -> None:
    core = full_core()
    raw = make_info()
    info_hash = add_magnet(core, raw)
    connect(core, info_hash, "pa1/1", 9)
    extensions(core, info_hash, "pa1/1", len(raw))
    core.take_outbox()
    deliver(core, info_hash, "pa1/1", raw, 0)
    wrong = bytes(len(raw) - PIECE)
    core.handle(PA1, MetadataPieceReceived(info_hash, "pa1/1", 1, len(raw), wrong), 2.0)
    [(to, drop)] = sent(core, DisconnectPeer)
    assert (to, drop.peer, drop.reason) == (PA1, "pa1/1", DisconnectReason.BAD_METADATA_MESSAGE)
    torrent = core.torrents[info_hash]
    assert torrent.state is TorrentState.METADATA
    assert torrent.swarm.redial.given_up(addr(9))
    core.handle(
        PA1, PeerDisconnected(info_hash, "pa1/1", DisconnectReason.BAD_METADATA_MESSAGE, ""), 3.0
    )
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(9),), PeerSource.TRACKER), 3.0)
    core.tick(100.0)
    assert addr(9) not in [m.address for _, m in sent(core, ConnectPeer)]


def test_a_rejected_or_late_piece_is_asked_of_another_peer() -> None:
    core = full_core()
    raw = make_info()
    info_hash = add_magnet(core, raw)
    connect(core, info_hash, "pa1/1", 9)
    connect(core, info_hash, "pa1/2", 10)
    extensions(core, info_hash, "pa1/1", len(raw))
    extensions(core, info_hash, "pa1/2", len(raw))
    core.take_outbox()
    core.handle(PA1, MetadataRejected(info_hash, "pa1/1", 0), 2.0)
    asked = {(m.peer, m.pieces) for _, m in sent(core, RequestMetadata)}
    assert ("pa1/2", (0,)) in asked
    core.tick(2.0 + core.config.metadata_timeout + 1)
    assert sent(core, RequestMetadata)  # the timed-out requests go out again


def test_metadata_with_a_hostile_path_stops_the_torrent_in_error_with_one_line() -> None:
    core = full_core()
    raw = make_info(path=[b"..", b"etc", b"passwd"])
    info_hash = add_magnet(core, raw)
    connect(core, info_hash, "pa1/1", 9)
    extensions(core, info_hash, "pa1/1", len(raw))
    core.take_outbox()
    deliver(core, info_hash, "pa1/1", raw, 0)
    deliver(core, info_hash, "pa1/1", raw, 1)
    torrent = core.torrents[info_hash]
    assert torrent.state is TorrentState.ERROR and torrent.metainfo is None
    assert torrent.error is not None and "\n" not in torrent.error
    assert torrent.error.startswith("the metadata peers sent is not usable")
    out = core.take_outbox()
    assert sorted(to for to, m in out if isinstance(m, DetachTorrent)) == [PA1, PA2]
    assert not [m for _, m in out if isinstance(m, OpenTorrent)]
    assert not torrent.swarm.peers


def test_pause_and_resume_in_the_metadata_state() -> None:
    core = full_core()
    raw = make_info()
    info_hash = add_magnet(core, raw)
    core.take_outbox()
    core.pause(info_hash, 1.0)
    out = core.take_outbox()
    assert core.torrents[info_hash].state is TorrentState.PAUSED
    assert sorted(to for to, m in out if isinstance(m, DetachTorrent)) == [PA1, PA2]
    assert [to for to, m in out if isinstance(m, UntrackTorrent)] == [TRACKER]
    assert core.status(1.0).torrents[0].metadata is None
    refused = core.verify(info_hash, 1.0)
    assert isinstance(refused, ControlFailed) and refused.reason == "paused"
    exported = core.export(info_hash, 1.0)
    assert isinstance(exported, ControlFailed) and exported.reason == "no_metadata"
    core.resume(info_hash, 2.0)
    out = core.take_outbox()
    assert core.torrents[info_hash].state is TorrentState.METADATA
    assert sorted(to for to, m in out if isinstance(m, AttachMagnet)) == [PA1, PA2]
    assert [m.address for _, m in out if isinstance(m, ConnectPeer)] == [addr(9)]
    refused = core.verify(info_hash, 2.0)
    assert isinstance(refused, ControlFailed) and refused.reason == "no_metadata"


def test_status_shows_each_peer_s_version_and_source() -> None:
    core = full_core()
    raw = make_info()
    info_hash = add_magnet(core, raw)
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(11),), PeerSource.TRACKER), 0.0)
    connect(core, info_hash, "pa1/1", 9)
    connect(core, info_hash, "pa1/2", 11)
    connect(core, info_hash, "pa1/3", 12, incoming=True)
    extensions(core, info_hash, "pa1/1", 0, version="qBittorrent/4.6")
    rows = {str(p.address): p for p in core.status(1.0).torrents[0].peer_list}
    assert rows[str(addr(9))].source is PeerSource.MAGNET
    assert rows[str(addr(9))].version == "qBittorrent/4.6"
    assert rows[str(addr(11))].source is PeerSource.TRACKER
    assert rows[str(addr(12))].source is PeerSource.INCOMING
    assert rows[str(addr(12))].version == "" and rows[str(addr(12))].progress == 0.0


def test_the_diagnosis_of_a_magnet_link_with_nowhere_to_look() -> None:
    core = full_core()
    info_hash = add_magnet(core, make_info(), trackers=False, peers=False)
    assert core.diagnosis(info_hash) == (
        "the magnet link names no tracker and no peer, and the DHT is off"
    )


def test_a_restored_magnet_link_fetches_again_and_a_fetched_one_is_kept_as_a_torrent() -> None:
    from .test_core import Recorder

    core = full_core()
    recorder = Recorder()
    core.session = recorder
    raw = make_info()
    info_hash = add_magnet(core, raw)
    connect(core, info_hash, "pa1/1", 9)
    extensions(core, info_hash, "pa1/1", len(raw))
    deliver(core, info_hash, "pa1/1", raw, 0)
    deliver(core, info_hash, "pa1/1", raw, 1)
    assert recorder.events == [
        ("added", info_hash, False),
        (f"piece 0 of {len(raw)}", info_hash, False),
        ("fetched", info_hash, False),
    ]
    later = full_core()
    reply = later.restore(b"", "/dl", paused=False, totals=(0, 0), now=0.0, magnet=magnet_of(raw))
    assert isinstance(reply, TorrentAdded)
    assert later.torrents[info_hash].state is TorrentState.METADATA
    assert sent(later, AttachMagnet)
    core.handle(PA1, AgentInfo(200, addr(1), "", ""), 5.0)  # nothing breaks on an agent update


def test_a_fetched_torrent_restored_from_its_torrent_keeps_its_link_beside_it() -> None:
    raw = make_info()
    link = magnet_of(raw) + "&so=0-2,5"
    metainfo = metainfo_from_magnet(parse_magnet(link), raw)
    core = full_core()
    reply = core.restore(metainfo, "/dl", paused=False, totals=(0, 0), now=0.0, magnet=link)
    assert isinstance(reply, TorrentAdded)
    torrent = core.torrents[reply.info_hash]
    assert torrent.state is TorrentState.CHECKING and torrent.metainfo is not None
    assert torrent.magnet is not None and torrent.magnet.select_only == (0, 1, 2, 5)
    assert not sent(core, AttachMagnet) and torrent.metadata_kept is None


def test_an_interested_peer_is_not_unchoked_while_there_is_nothing_to_serve() -> None:
    core = full_core()
    info_hash = add_magnet(core, make_info())
    connect(core, info_hash, "pa1/1", 9)
    core.take_outbox()
    core.handle(PA1, PeerInterest(info_hash, "pa1/1", True), 1.0)
    assert not sent(core, SetChoke)
    assert core.torrents[info_hash].swarm.peers["pa1/1"].peer_interested


def test_metadata_pieces_kept_from_a_restart_or_a_pause_are_not_asked_for_again() -> None:
    raw = make_info()
    core = full_core()
    kept = (len(raw), {0: raw[:PIECE]})
    reply = core.restore(
        b"", "/dl", paused=False, totals=(0, 0), now=0.0, magnet=magnet_of(raw), metadata=kept
    )
    assert isinstance(reply, TorrentAdded)
    info_hash = reply.info_hash
    connect(core, info_hash, "pa1/1", 9)
    core.take_outbox()
    extensions(core, info_hash, "pa1/1", len(raw))
    assert [m.pieces for _, m in sent(core, RequestMetadata)] == [(1,)]
    core.pause(info_hash, 2.0)
    core.resume(info_hash, 3.0)
    connect(core, info_hash, "pa1/2", 10)
    core.take_outbox()
    extensions(core, info_hash, "pa1/2", len(raw))
    assert [m.pieces for _, m in sent(core, RequestMetadata)] == [(1,)]
    deliver(core, info_hash, "pa1/2", raw, 1)
    assert core.torrents[info_hash].state is TorrentState.CHECKING


def test_a_magnet_link_that_turns_out_private_keeps_only_its_trackers_peers() -> None:
    core = full_core()
    raw = make_info(private=True)
    info_hash = add_magnet(core, raw)
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(11),), PeerSource.TRACKER), 0.0)
    connect(core, info_hash, "pa1/1", 9)  # from the magnet link's x.pe
    connect(core, info_hash, "pa1/2", 11)  # from the tracker
    extensions(core, info_hash, "pa1/1", len(raw))
    deliver(core, info_hash, "pa1/1", raw, 0)
    core.take_outbox()
    deliver(core, info_hash, "pa1/1", raw, 1)
    torrent = core.torrents[info_hash]
    assert torrent.private and torrent.pex is None
    assert [m.peer for _, m in sent(core, DisconnectPeer)] == ["pa1/1"]
    assert list(torrent.swarm.peers) == ["pa1/2"]
    core.handle(STORAGE, TorrentOpened(info_hash, b"\0" * (NUM_PIECES // 8)), 3.0)
    attaches = sent(core, AttachTorrent)
    assert attaches and not any(m.pex for _, m in attaches)


def test_a_peer_agent_that_joins_after_the_magnet_link_dials_its_peers_at_once() -> None:
    core = new_core()
    join(core, STORAGE, ServiceKind.STORAGE_AGENT)
    raw = make_info()
    info_hash = add_magnet(core, raw)  # no peer agent yet (a one-shot download's start)
    assert not sent(core, ConnectPeer)
    join(core, PA1, ServiceKind.PEER_AGENT)
    core.handle(PA1, AgentInfo(200, addr(1), "", ""), 0.5)  # no tick in between
    assert [(to, m.info_hash, m.address) for to, m in sent(core, ConnectPeer)] == [
        (PA1, info_hash, addr(9))
    ]
