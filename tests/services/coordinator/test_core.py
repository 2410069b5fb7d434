"""The coordinator's decisions, driven by fake agents: events in, addressed commands out."""

from __future__ import annotations

import hashlib
import random
from typing import Any, TypeVar

import pytest

from services.coordinator.core import MAX_HASH_FAILURES, Coordinator
from shared.bencode import encode
from shared.bitfield import Bitfield
from shared.bus import (
    AddTorrent,
    AssignPieces,
    AttachTorrent,
    BroadcastHave,
    CancelPieces,
    ConnectPeer,
    ControlFailed,
    DisconnectPeer,
    GetStatus,
    Message,
    OpenTorrent,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeersDiscovered,
    PeerSource,
    PieceDownloaded,
    PieceRejected,
    PieceVerified,
    ServiceKind,
    StorageFailed,
    TorrentAdded,
    TorrentCompleted,
    TorrentOpened,
    TorrentState,
    TrackerState,
    TrackerStateChanged,
    TrackTorrent,
    WorkWanted,
    make_hello,
)
from shared.config import CoordinatorConfig
from shared.types import InfoHash, PeerAddress, PeerId

M = TypeVar("M", bound=Message)
PIECE = 32768
NUM_PIECES = 6
STORAGE, PA1, PA2, TRACKER = b"storage", b"pa1", b"pa2", b"tracker"


def make_torrent(trackers: bool = True) -> tuple[bytes, InfoHash]:
    data = bytes(range(256)) * (PIECE * NUM_PIECES // 256)
    pieces = b"".join(
        hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)
    )
    info = {b"name": b"file.bin", b"length": len(data), b"piece length": PIECE, b"pieces": pieces}
    top: dict[bytes, Any] = {b"info": info}
    if trackers:
        top[b"announce"] = b"http://127.0.0.1:6969/announce"
    return encode(top), InfoHash(hashlib.sha1(encode(info)).digest())


def join(core: Coordinator, identity: bytes, kind: ServiceKind) -> None:
    core.agent_joined(identity, make_hello(kind, identity.decode(), "host", 1))


def sent(core: Coordinator, kind: type[M]) -> list[tuple[bytes, M]]:
    return [(to, m) for to, m in core.take_outbox() if isinstance(m, kind)]


def new_core(**config: Any) -> Coordinator:
    return Coordinator(
        peer_id=PeerId(b"-TV0100-" + b"x" * 12),
        listen_port=6881,
        storage_endpoint="ipc:///tmp/data.sock",
        config=CoordinatorConfig(download_dir="/downloads", **config),
        rng=random.Random(3),
    )


def addr(n: int) -> PeerAddress:
    return PeerAddress(f"127.0.0.{n}", 6881)


@pytest.fixture
def core() -> Coordinator:
    core = new_core(pieces_per_peer=2)
    for identity, kind in [
        (STORAGE, ServiceKind.STORAGE_AGENT),
        (PA1, ServiceKind.PEER_AGENT),
        (PA2, ServiceKind.PEER_AGENT),
        (TRACKER, ServiceKind.TRACKER_AGENT),
    ]:
        join(core, identity, kind)
    return core


def opened(core: Coordinator) -> InfoHash:
    metainfo, info_hash = make_torrent()
    assert isinstance(core.add_torrent(AddTorrent(metainfo, ""), now=0.0), TorrentAdded)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 0.0)
    core.take_outbox()
    return info_hash


def connect(
    core: Coordinator, info_hash: InfoHash, agent: bytes, key: str, n: int, have: Bitfield
) -> None:
    core.handle(
        agent,
        PeerConnected(
            info_hash, key, addr(n), PeerId(bytes([n]) * 20), "libtorrent 2.0", False, True, True
        ),
        0.0,
    )
    core.handle(agent, PeerBitfield(info_hash, key, have.to_bytes()), 0.0)


def test_adding_opens_the_files_then_attaches_and_tracks(core: Coordinator) -> None:
    metainfo, info_hash = make_torrent()
    reply = core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    assert reply == TorrentAdded(info_hash, "file.bin")
    [(to, opening)] = sent(core, OpenTorrent)
    assert to == STORAGE and opening.save_path == "/downloads"
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES, [0]).to_bytes()), 0.0)
    out = core.take_outbox()
    attached = [(to, m) for to, m in out if isinstance(m, AttachTorrent)]
    assert sorted(to for to, _ in attached) == [PA1, PA2]
    assert attached[0][1].have == Bitfield(NUM_PIECES, [0]).to_bytes()
    assert attached[0][1].storage_endpoint == "ipc:///tmp/data.sock"
    [(to, track)] = [(to, m) for to, m in out if isinstance(m, TrackTorrent)]
    assert to == TRACKER and track.left == PIECE * (NUM_PIECES - 1)
    assert track.tiers[0].urls == ("http://127.0.0.1:6969/announce",)
    assert core.status().torrents[0].state is TorrentState.DOWNLOADING


def test_agents_that_join_later_learn_about_torrents() -> None:
    core = new_core()
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, "/elsewhere"), now=0.0)
    assert core.take_outbox() == []
    join(core, STORAGE, ServiceKind.STORAGE_AGENT)
    assert [m.save_path for _, m in sent(core, OpenTorrent)] == ["/elsewhere"]
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 0.0)
    join(core, PA1, ServiceKind.PEER_AGENT)
    assert [to for to, _ in sent(core, AttachTorrent)] == [PA1]


def test_bad_and_duplicate_torrents_are_refused(core: Coordinator) -> None:
    reply = core.add_torrent(AddTorrent(b"d4:infoi3ee", ""), now=0.0)
    assert isinstance(reply, ControlFailed) and reply.reason == "info_not_a_dict"
    metainfo, _ = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    again = core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    assert isinstance(again, ControlFailed) and again.reason == "already_added"


def test_discovered_peers_are_spread_over_peer_agents(core: Coordinator) -> None:
    info_hash = opened(core)
    peers = (addr(2), addr(3), addr(4), addr(2))
    core.handle(TRACKER, PeersDiscovered(info_hash, peers, PeerSource.TRACKER), 0.0)
    dials = sent(core, ConnectPeer)
    assert sorted(m.address for _, m in dials) == [addr(2), addr(3), addr(4)]
    assert {to for to, _ in dials} == {PA1, PA2}
    core.handle(PA1, PeerConnectFailed(info_hash, dials[0][1].address, "refused", "refused"), 0.0)
    core.handle(
        TRACKER, PeersDiscovered(info_hash, (dials[0][1].address,), PeerSource.TRACKER), 0.0
    )
    assert sent(core, ConnectPeer) == []  # a failed address is not dialled again at once


def test_connection_limit(core: Coordinator) -> None:
    core.config = CoordinatorConfig(max_peers_per_torrent=2)
    info_hash = opened(core)
    peers = tuple(addr(n) for n in range(2, 8))
    core.handle(TRACKER, PeersDiscovered(info_hash, peers, PeerSource.TRACKER), 0.0)
    assert len(sent(core, ConnectPeer)) == 2


def test_full_download(core: Coordinator) -> None:
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    [(to, first)] = sent(core, AssignPieces)
    assert to == PA1 and len(first.pieces) == 2
    done: set[int] = set()
    pending = list(first.pieces)
    while pending:
        piece = pending.pop()
        core.handle(PA1, PieceDownloaded(info_hash, piece, "pa1/1"), 0.0)
        core.handle(STORAGE, PieceVerified(info_hash, piece), 1.0)
        done.add(piece)
        core.handle(PA1, WorkWanted(info_hash, "pa1/1", 1), 1.0)
        out = core.take_outbox()
        haves = [m.piece for _, m in out if isinstance(m, BroadcastHave)]
        assert haves == [piece, piece]  # both peer agents tell their peers
        for _, m in out:
            if isinstance(m, AssignPieces):
                pending.extend(m.pieces)
            if isinstance(m, TorrentCompleted):
                assert done == set(range(NUM_PIECES))
    status = core.status().torrents[0]
    assert status.state is TorrentState.SEEDING and status.progress == 1.0
    assert status.pieces_verified == NUM_PIECES


def test_corrupt_pieces_go_elsewhere_and_the_liar_is_banned(core: Coordinator) -> None:
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    connect(core, info_hash, PA2, "pa2/1", 3, Bitfield.full(NUM_PIECES))
    assignments = {m.peer: list(m.pieces) for _, m in sent(core, AssignPieces)}
    liar_piece = assignments["pa1/1"][0]
    core.handle(PA1, PieceDownloaded(info_hash, liar_piece, "pa1/1"), 0.0)
    core.handle(STORAGE, PieceRejected(info_hash, liar_piece, ("pa1/1",)), 0.0)
    core.handle(PA1, WorkWanted(info_hash, "pa1/1", 8), 0.0)
    assert liar_piece not in [p for _, m in sent(core, AssignPieces) for p in m.pieces]
    core.handle(PA2, WorkWanted(info_hash, "pa2/1", 8), 0.0)
    assert liar_piece in [p for _, m in sent(core, AssignPieces) for p in m.pieces]
    for piece in assignments["pa1/1"][1:] + [3, 4, 5][: MAX_HASH_FAILURES - 2]:
        assert DisconnectPeer(info_hash, "pa1/1", "sent_corrupt_data") not in [
            m for _, m in core.take_outbox()
        ]
        core.handle(PA1, PieceDownloaded(info_hash, piece, "pa1/1"), 0.0)
        core.handle(STORAGE, PieceRejected(info_hash, piece, ("pa1/1",)), 0.0)
    assert (PA1, DisconnectPeer(info_hash, "pa1/1", "sent_corrupt_data")) in core.take_outbox()
    assert core.status().torrents[0].peers == 1
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(2),), PeerSource.TRACKER), 0.0)
    assert sent(core, ConnectPeer) == []


def test_endgame_cancels_the_slower_copy(core: Coordinator) -> None:
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    have = Bitfield.full(NUM_PIECES)
    have.discard(5)
    core.handle(STORAGE, TorrentOpened(info_hash, have.to_bytes()), 0.0)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    connect(core, info_hash, PA2, "pa2/1", 3, Bitfield.full(NUM_PIECES))
    assert [m.pieces for _, m in sent(core, AssignPieces)] == [(5,), (5,)]
    core.handle(PA2, PieceDownloaded(info_hash, 5, "pa2/1"), 0.0)
    assert sent(core, CancelPieces) == [(PA1, CancelPieces(info_hash, "pa1/1", (5,)))]


def test_a_closed_connection_frees_its_pieces_for_a_starved_one(core: Coordinator) -> None:
    core.config = CoordinatorConfig(pieces_per_peer=NUM_PIECES)
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    connect(core, info_hash, PA2, "pa2/1", 3, Bitfield.full(NUM_PIECES))
    first, second = sent(core, AssignPieces)
    assert len(first[1].pieces) == NUM_PIECES
    assert len(second[1].pieces) == 1  # endgame: one second copy at a time
    core.handle(PA1, PeerDisconnected(info_hash, "pa1/1", "closed", "closed"), 0.0)
    core.handle(PA2, WorkWanted(info_hash, "pa2/1", NUM_PIECES), 0.0)
    [(to, again)] = sent(core, AssignPieces)
    assert to == PA2 and sorted(again.pieces + second[1].pieces) == list(range(NUM_PIECES))


def test_a_lost_peer_agent_takes_its_connections_with_it(core: Coordinator) -> None:
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    assert core.status().torrents[0].peers == 1
    core.agent_left(PA1)
    assert core.status().torrents[0].peers == 0
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(9),), PeerSource.TRACKER), 0.0)
    assert [to for to, _ in sent(core, ConnectPeer)] == [PA2]


def test_storage_failure_puts_the_torrent_in_error(core: Coordinator) -> None:
    info_hash = opened(core)
    core.handle(
        STORAGE, StorageFailed(info_hash, "file.bin", "ENOSPC", "disk full writing 'file.bin'"), 0.0
    )
    status = core.status().torrents[0]
    assert status.state is TorrentState.ERROR and status.error == "disk full writing 'file.bin'"


def test_status_by_prefix(core: Coordinator) -> None:
    info_hash = opened(core)
    assert len(core.status(GetStatus(info_hash.hex[:6])).torrents) == 1
    assert core.status(GetStatus("zz")).torrents == ()


def test_diagnosis_names_the_tracker_errors(core: Coordinator) -> None:
    info_hash = opened(core)
    assert core.diagnosis(info_hash) == "no tracker has answered yet"
    core.handle(
        TRACKER,
        TrackerStateChanged(
            info_hash,
            "http://t/announce",
            0,
            TrackerState.FAILED,
            "connection refused",
            None,
            None,
            None,
            30.0,
        ),
        100.0,
    )
    assert (
        core.diagnosis(info_hash) == "every tracker failed: http://t/announce: connection refused"
    )


def test_status_lists_trackers_with_time_to_next_announce(core: Coordinator) -> None:
    info_hash = opened(core)
    report = TrackerStateChanged(
        info_hash, "udp://t:1/announce", 1, TrackerState.WORKING, None, 4, 2, 9, 1800.0
    )
    core.handle(TRACKER, report, now=100.0)
    core.tick(now=130.0)
    [tracker] = core.status().torrents[0].trackers
    assert (tracker.url, tracker.tier, tracker.state) == (
        "udp://t:1/announce",
        1,
        TrackerState.WORKING,
    )
    assert (tracker.seeders, tracker.leechers, tracker.completed) == (4, 2, 9)
    assert tracker.next_announce_in == 1770.0
