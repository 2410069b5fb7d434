"""The coordinator's decisions, driven by fake agents: events in, addressed commands out."""

from __future__ import annotations

import hashlib
import random
from typing import Any, TypeVar

import pytest

from torviz.services.coordinator.core import MAX_HASH_FAILURES, Coordinator
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AddTorrent,
    AgentInfo,
    AssignPieces,
    AttachTorrent,
    BanPeers,
    BroadcastHave,
    CancelPieces,
    CheckProgress,
    CloseTorrent,
    ConnectPeer,
    ControlFailed,
    DisconnectPeer,
    DisconnectReason,
    GetStatus,
    Message,
    OpenTorrent,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeerInterest,
    PeersDiscovered,
    PeerSource,
    PeerStats,
    PieceDownloaded,
    PieceRejected,
    PieceVerified,
    RecheckTorrent,
    RemoveTorrent,
    ServiceKind,
    SetChoke,
    StorageFailed,
    TorrentAdded,
    TorrentCompleted,
    TorrentOpened,
    TorrentPaused,
    TorrentRemoved,
    TorrentResumed,
    TorrentState,
    TrackerState,
    TrackerStateChanged,
    TrackTorrent,
    TransferStats,
    VerifyStarted,
    WorkWanted,
    make_hello,
)
from torviz.shared.config import CoordinatorConfig
from torviz.shared.types import InfoHash, PeerAddress, PeerId

M = TypeVar("M", bound=Message)


class _AnyBytes(bytes):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes)

    __hash__ = bytes.__hash__


ANY_INFO = _AnyBytes()
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
    core.agent_joined(identity, make_hello(kind, identity.decode(), "host", 1), 0.0)


def sent(core: Coordinator, kind: type[M]) -> list[tuple[bytes, M]]:
    return [(to, m) for to, m in core.take_outbox() if isinstance(m, kind)]


def new_core(**config: Any) -> Coordinator:
    """A coordinator; heartbeats are off unless asked for (the fake agents here never send
    one, and would count as dead after 15 s of test time)."""
    return Coordinator(
        peer_id=PeerId(b"-TV0100-" + b"x" * 12),
        listen_port=6881,
        storage_endpoint="ipc:///tmp/data.sock",
        config=CoordinatorConfig(
            download_dir="/downloads", **{"heartbeat_interval": 0.0, **config}
        ),
        rng=random.Random(3),
    )


def addr(n: int) -> PeerAddress:
    return PeerAddress(f"127.0.0.{n}", 6881)


def full_core(**config: Any) -> Coordinator:
    """A coordinator with a storage agent, two peer agents and a tracker agent."""
    core = new_core(**{"pieces_per_peer": 2, **config})
    for identity, kind in [
        (STORAGE, ServiceKind.STORAGE_AGENT),
        (PA1, ServiceKind.PEER_AGENT),
        (PA2, ServiceKind.PEER_AGENT),
        (TRACKER, ServiceKind.TRACKER_AGENT),
    ]:
        join(core, identity, kind)
    core.handle(PA1, AgentInfo(200, PeerAddress("127.0.0.1", 6999), "", ""), 0.0)
    return core


@pytest.fixture
def core() -> Coordinator:
    return full_core()


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
    assert track.listen_port == 6999  # the peer agent's real port
    assert track.tiers[0].urls == ("http://127.0.0.1:6969/announce",)
    assert core.status(0.0).torrents[0].state is TorrentState.DOWNLOADING


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
    core.handle(
        PA1,
        PeerConnectFailed(
            info_hash, dials[0][1].address, DisconnectReason.CONNECTION_REFUSED, "refused"
        ),
        0.0,
    )
    core.handle(
        TRACKER, PeersDiscovered(info_hash, (dials[0][1].address,), PeerSource.TRACKER), 0.0
    )
    assert sent(core, ConnectPeer) == []  # a failed address is not dialled again at once


def test_connection_limit() -> None:
    core = full_core(max_peers_per_torrent=2)
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
    status = core.status(0.0).torrents[0]
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
        assert DisconnectPeer(info_hash, "pa1/1", DisconnectReason.SENT_CORRUPT_DATA) not in [
            m for _, m in core.take_outbox()
        ]
        core.handle(PA1, PieceDownloaded(info_hash, piece, "pa1/1"), 0.0)
        core.handle(STORAGE, PieceRejected(info_hash, piece, ("pa1/1",)), 0.0)
    assert (
        PA1,
        DisconnectPeer(info_hash, "pa1/1", DisconnectReason.SENT_CORRUPT_DATA),
    ) in core.take_outbox()
    assert core.status(0.0).torrents[0].peers == 1
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


def test_a_closed_connection_frees_its_pieces_for_a_starved_one() -> None:
    core = full_core(pieces_per_peer=NUM_PIECES)
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    connect(core, info_hash, PA2, "pa2/1", 3, Bitfield.full(NUM_PIECES))
    first, second = sent(core, AssignPieces)
    assert len(first[1].pieces) == NUM_PIECES
    assert len(second[1].pieces) == 1  # endgame: one second copy at a time
    core.handle(
        PA1, PeerDisconnected(info_hash, "pa1/1", DisconnectReason.PEER_CLOSED, "closed"), 0.0
    )
    core.handle(PA2, WorkWanted(info_hash, "pa2/1", NUM_PIECES), 0.0)
    [(to, again)] = sent(core, AssignPieces)
    assert to == PA2 and sorted(again.pieces + second[1].pieces) == list(range(NUM_PIECES))


def test_a_lost_peer_agent_takes_its_connections_with_it(core: Coordinator) -> None:
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    assert core.status(0.0).torrents[0].peers == 1
    core.take_outbox()
    core.agent_left(PA1, 0.0)
    assert core.status(0.0).torrents[0].peers == 0
    # Its peer is dialled again, from the peer agent that is left.
    assert sent(core, ConnectPeer) == [(PA2, ConnectPeer(info_hash, addr(2)))]


def test_a_lost_storage_agent_stops_nothing_and_the_next_reopens(core: Coordinator) -> None:
    info_hash = opened(core)
    core.tick(5.0)
    core.handle(STORAGE, PieceVerified(info_hash, 0), 5.0)
    core.take_outbox()
    core.agent_left(STORAGE, 5.0)
    assert core.status(0.0).torrents[0].state is TorrentState.DOWNLOADING
    assert kinds(core.take_outbox()) == []  # no detach, no untrack: the swarm goes on
    join(core, b"storage2", ServiceKind.STORAGE_AGENT)
    assert kinds(core.take_outbox()) == [(b"storage2", "OpenTorrent")]
    # It has piece 0 and verified piece 3 before its predecessor died: both count.
    have = Bitfield(NUM_PIECES)
    have.add(0)
    have.add(3)
    core.handle(b"storage2", TorrentOpened(info_hash, have.to_bytes()), 6.0)
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.DOWNLOADING and status.pieces_verified == 2
    assert [m.piece for _, m in sent(core, BroadcastHave)] == [3, 3]


def test_a_storage_agent_that_lost_pieces_starts_the_torrent_again(core: Coordinator) -> None:
    info_hash = opened(core)
    core.handle(STORAGE, PieceVerified(info_hash, 0), 1.0)
    core.take_outbox()
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 2.0)
    out = kinds(core.take_outbox())
    assert (PA1, "DetachTorrent") in out and (PA1, "AttachTorrent") in out
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.DOWNLOADING and status.pieces_verified == 0


def test_storage_failure_puts_the_torrent_in_error(core: Coordinator) -> None:
    info_hash = opened(core)
    core.handle(
        STORAGE, StorageFailed(info_hash, "file.bin", "ENOSPC", "disk full writing 'file.bin'"), 0.0
    )
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.ERROR and status.error == "disk full writing 'file.bin'"


def test_status_by_prefix(core: Coordinator) -> None:
    info_hash = opened(core)
    assert len(core.status(0.0, GetStatus(info_hash.hex[:6])).torrents) == 1
    assert core.status(0.0, GetStatus("zz")).torrents == ()


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
    [tracker] = core.status(0.0).torrents[0].trackers
    assert (tracker.url, tracker.tier, tracker.state) == (
        "udp://t:1/announce",
        1,
        TrackerState.WORKING,
    )
    assert (tracker.seeders, tracker.leechers, tracker.completed) == (4, 2, 9)
    assert tracker.next_announce_in == 1770.0


def test_without_a_listen_port_the_announce_waits_briefly() -> None:
    core = new_core()
    join(core, STORAGE, ServiceKind.STORAGE_AGENT)
    join(core, TRACKER, ServiceKind.TRACKER_AGENT)
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 0.0)
    assert sent(core, TrackTorrent) == []
    core.tick(1.0)
    assert sent(core, TrackTorrent) == []
    core.tick(3.5)
    [(_, track)] = sent(core, TrackTorrent)
    assert track.listen_port == 6881  # the configured default
    core.tick(4.5)
    assert sent(core, TrackTorrent) == []  # once


def test_an_interested_peer_is_unchoked_while_slots_are_free(core: Coordinator) -> None:
    info_hash = opened(core)
    for n in range(7):
        connect(core, info_hash, PA1, f"pa1/{n}", 10 + n, Bitfield(NUM_PIECES))
    core.take_outbox()
    for n in range(7):
        core.handle(PA1, PeerInterest(info_hash, f"pa1/{n}", True), 0.0)
    unchoked = [m.peer for _, m in sent(core, SetChoke) if not m.choked]
    assert unchoked == [f"pa1/{n}" for n in range(5)]  # 4 regular slots + 1 optimistic


def test_rechoke_rewards_the_peers_that_give_us_most(core: Coordinator) -> None:
    info_hash = opened(core)
    for n in range(6):
        connect(core, info_hash, PA1, f"pa1/{n}", 10 + n, Bitfield.full(NUM_PIECES))
    for n in range(6):
        core.handle(PA1, PeerInterest(info_hash, f"pa1/{n}", True), 0.0)
    rates = {f"pa1/{n}": 1000.0 * n for n in range(6)}
    stats = tuple(
        PeerStats(info_hash, key, 0, 0, rate, 0.0, False, True, True, True, False, NUM_PIECES)
        for key, rate in rates.items()
    )
    core.handle(PA1, TransferStats(stats), 5.0)
    core.take_outbox()
    core.tick(20.0)
    unchoked = core.torrents[info_hash].swarm.choker.unchoked
    assert {"pa1/5", "pa1/4", "pa1/3", "pa1/2"} <= unchoked and len(unchoked) == 5
    choked = {m.peer for _, m in sent(core, SetChoke) if m.choked}
    assert choked <= {"pa1/0", "pa1/1"}


def test_a_seed_meeting_a_seed_hangs_up(core: Coordinator) -> None:
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield.full(NUM_PIECES).to_bytes()), 0.0)
    core.take_outbox()
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    assert sent(core, DisconnectPeer) == [
        (PA1, DisconnectPeer(info_hash, "pa1/1", DisconnectReason.BOTH_SEEDS))
    ]
    assert core.status(0.0).torrents[0].state is TorrentState.SEEDING


def test_a_banned_host_is_announced_to_every_peer_agent(core: Coordinator) -> None:
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    for piece in range(MAX_HASH_FAILURES):
        core.handle(STORAGE, PieceRejected(info_hash, piece, ("pa1/1",)), 0.0)
    bans = sent(core, BanPeers)
    assert sorted(to for to, _ in bans) == [PA1, PA2]
    assert bans[0][1].hosts == ("127.0.0.2",)


def test_status_lists_peers_with_flags(core: Coordinator) -> None:
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield(NUM_PIECES, [0, 1, 2]))
    stat = PeerStats(info_hash, "pa1/1", 100, 50, 10.0, 5.0, False, True, False, True, False, 3)
    core.handle(PA1, TransferStats((stat,)), 1.0)
    [row] = core.status(0.0).torrents[0].peer_list
    assert row.address == addr(2) and row.client == "libtorrent 2.0"
    assert row.flags == "DUFE" and row.progress == 0.5
    assert (row.downloaded, row.uploaded) == (100, 50)


class Recorder:
    """A session listener that remembers what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, InfoHash, bool]] = []

    def torrent_added(self, torrent: Any, *, paused: bool) -> None:
        self.events.append(("added", torrent.info_hash, paused))

    def torrent_fetched(self, torrent: Any) -> None:
        self.events.append(("fetched", torrent.info_hash, False))

    def metadata_piece(self, info_hash: InfoHash, size: int, piece: int, data: bytes) -> None:
        self.events.append((f"piece {piece} of {size}", info_hash, False))

    def torrent_paused(self, info_hash: InfoHash, paused: bool) -> None:
        self.events.append(("paused", info_hash, paused))

    def torrent_removed(self, info_hash: InfoHash) -> None:
        self.events.append(("removed", info_hash, False))

    def web_seeds_changed(self, info_hash: InfoHash, urls: tuple[str, ...]) -> None:
        self.events.append((f"web seeds {', '.join(urls)}", info_hash, False))


def kinds(out: list[tuple[bytes, Message]]) -> list[tuple[bytes, str]]:
    return [(to, type(m).__name__) for to, m in out]


def test_pause_lets_go_of_everything_and_resume_reopens(core: Coordinator) -> None:
    recorder = Recorder()
    core.session = recorder
    info_hash = opened(core)
    core.tick(5.0)  # tracked by now
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    core.take_outbox()
    assert core.pause(info_hash, 5.0) == TorrentPaused(info_hash)
    out = kinds(core.take_outbox())
    assert (TRACKER, "UntrackTorrent") in out
    assert (PA1, "DetachTorrent") in out and (PA2, "DetachTorrent") in out
    assert (STORAGE, "CloseTorrent") in out
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.PAUSED and status.peers == 0
    core.tick(20.0)
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(7),), PeerSource.TRACKER), 20.0)
    assert core.take_outbox() == []  # a paused torrent dials nobody and announces nothing
    assert core.resume(info_hash, 20.0) == TorrentResumed(info_hash)
    assert kinds(core.take_outbox()) == [(STORAGE, "OpenTorrent")]
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES, [0]).to_bytes()), 21.0)
    out = kinds(core.take_outbox())
    assert (PA1, "AttachTorrent") in out and (TRACKER, "TrackTorrent") in out
    assert core.status(0.0).torrents[0].state is TorrentState.DOWNLOADING
    assert recorder.events == [
        ("added", info_hash, False),
        ("paused", info_hash, True),
        ("paused", info_hash, False),
    ]


def test_a_disk_error_stops_the_torrent_until_resumed(core: Coordinator) -> None:
    info_hash = opened(core)
    core.tick(5.0)
    core.take_outbox()
    message = "disk full writing 'file.bin' (ENOSPC): free some space, then resume the torrent"
    core.handle(STORAGE, StorageFailed(info_hash, "file.bin", "ENOSPC", message), 6.0)
    out = kinds(core.take_outbox())
    assert (TRACKER, "UntrackTorrent") in out and (PA1, "DetachTorrent") in out
    assert (STORAGE, "CloseTorrent") not in out
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.ERROR and status.error == message
    core.resume(info_hash, 6.0)
    assert kinds(core.take_outbox()) == [(STORAGE, "OpenTorrent")]
    assert core.status(6.0).torrents[0].error is None


def test_verify_rechecks_with_progress(core: Coordinator) -> None:
    info_hash = opened(core)
    core.take_outbox()
    assert core.verify(info_hash, 0.0) == VerifyStarted(info_hash)
    assert (STORAGE, RecheckTorrent(info_hash)) in core.take_outbox()
    core.handle(STORAGE, CheckProgress(info_hash, 3, NUM_PIECES), 1.0)
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.CHECKING and status.check_progress == 0.5
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield.full(NUM_PIECES).to_bytes()), 2.0)
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.SEEDING and status.check_progress is None
    assert status.pieces_verified == NUM_PIECES


def test_remove_with_or_without_data(core: Coordinator) -> None:
    recorder = Recorder()
    core.session = recorder
    info_hash = opened(core)
    core.take_outbox()
    assert core.remove_torrent(RemoveTorrent(info_hash, True), 0.0) == TorrentRemoved(info_hash)
    assert (STORAGE, CloseTorrent(info_hash, True)) in core.take_outbox()
    assert core.status(0.0).torrents == ()
    assert recorder.events == [("added", info_hash, False), ("removed", info_hash, False)]
    again = core.remove_torrent(RemoveTorrent(info_hash, False), 0.0)
    assert isinstance(again, ControlFailed) and again.reason == "unknown_torrent"


def test_restored_torrents_keep_their_state_and_totals(core: Coordinator) -> None:
    metainfo, info_hash = make_torrent()
    core.restore(metainfo, "/old", paused=True, totals=(7, 9), now=0.0)
    assert core.take_outbox() == []  # paused: nothing opened
    status = core.status(0.0).torrents[0]
    assert status.state is TorrentState.PAUSED and (status.uploaded, status.downloaded) == (7, 9)
    assert status.save_path == "/old"
    core.resume(info_hash, 0.0)
    assert [m for _, m in core.take_outbox()] == [OpenTorrent(info_hash, ANY_INFO, "/old")]


def test_adding_is_recorded_for_the_next_run(core: Coordinator) -> None:
    recorder = Recorder()
    core.session = recorder
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    assert recorder.events == [("added", info_hash, False)]
    assert core.torrents[info_hash].metainfo_bytes == metainfo


def test_a_dropped_connection_is_dialled_again_after_a_back_off(core: Coordinator) -> None:
    info_hash = opened(core)
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(5),), PeerSource.TRACKER), 0.0)
    [(agent, _)] = sent(core, ConnectPeer)
    core.handle(
        agent, PeerConnectFailed(info_hash, addr(5), DisconnectReason.CONNECTION_REFUSED, "x"), 1.0
    )
    core.tick(5.0)
    assert sent(core, ConnectPeer) == []
    core.tick(11.5)  # 10 s after the failure
    assert [m.address for _, m in sent(core, ConnectPeer)] == [addr(5)]
    core.handle(
        agent, PeerConnectFailed(info_hash, addr(5), DisconnectReason.CONNECTION_REFUSED, "x"), 12.0
    )
    core.tick(25.0)
    assert sent(core, ConnectPeer) == []  # now 20 s
    core.tick(32.5)
    assert [m.address for _, m in sent(core, ConnectPeer)] == [addr(5)]


def test_no_retry_for_a_peer_that_is_ourselves(core: Coordinator) -> None:
    info_hash = opened(core)
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(5),), PeerSource.TRACKER), 0.0)
    [(agent, _)] = sent(core, ConnectPeer)
    core.handle(
        agent, PeerConnectFailed(info_hash, addr(5), DisconnectReason.CONNECTED_TO_SELF, "x"), 1.0
    )
    core.tick(100.0)
    assert sent(core, ConnectPeer) == []


def test_a_seed_dials_leechers_it_hears_of(core: Coordinator) -> None:
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield.full(NUM_PIECES).to_bytes()), 0.0)
    core.take_outbox()
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(5),), PeerSource.TRACKER), 1.0)
    assert [m.address for _, m in sent(core, ConnectPeer)] == [addr(5)]
