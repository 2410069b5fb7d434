"""Who announces a torrent, as the coordinator tells its tracker agents: ``TrackTorrent`` and
``UntrackTorrent`` as peer and tracker agents on several hosts join, leave and tell their
addresses; the totals each announce reports; the announces in ``status``."""

from __future__ import annotations

import hashlib
from typing import Any

from torviz.services.coordinator.core import Coordinator
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AddTorrent,
    AgentInfo,
    Goodbye,
    Message,
    PeerConnected,
    PieceVerified,
    ServiceKind,
    TorrentCompleted,
    TorrentOpened,
    TrackerState,
    TrackerStateChanged,
    TrackTorrent,
    UntrackTorrent,
    UpdateTransfer,
    make_hello,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

from .test_core import new_core

PIECE = 16384
NUM_PIECES = 4
STORAGE = b"storage"
# Host 1 runs the coordinator (and, in the old layout, a tracker agent); hosts 2 and 3 a peer
# agent each, and in the new layout a tracker agent beside it.
T1, T2, T3 = b"tracker-1", b"tracker-2", b"tracker-3"
P2, P3 = b"peer-2", b"peer-3"
HOST = {1: "10.0.0.1", 2: "10.0.0.2", 3: "10.0.0.3"}
PORT = {P2: 6882, P3: 6883}


def torrent(private: bool = False) -> tuple[bytes, InfoHash]:
    data = bytes(range(256)) * (PIECE * NUM_PIECES // 256)
    pieces = b"".join(
        hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)
    )
    info: dict[bytes, Any] = {
        b"name": b"f.bin",
        b"length": len(data),
        b"piece length": PIECE,
        b"pieces": pieces,
    }
    if private:
        info[b"private"] = 1
    top = {b"announce": b"http://10.0.0.4:6969/announce", b"info": info}
    return encode(top), InfoHash(hashlib.sha1(encode(info)).digest())


def join_agent(core: Coordinator, identity: bytes, host: int, now: float = 0.0) -> None:
    kind = ServiceKind.TRACKER_AGENT if identity.startswith(b"tracker") else ServiceKind.PEER_AGENT
    core.agent_joined(identity, make_hello(kind, identity.decode(), f"h{host}", 1), now)


def tell_tracker(core: Coordinator, identity: bytes, host: int, now: float = 0.0) -> None:
    core.handle(identity, AgentInfo(0, None, "", "", announce_host=HOST[host]), now)


def tell_peer(core: Coordinator, identity: bytes, host: int, port: int, now: float = 0.0) -> None:
    core.handle(identity, AgentInfo(50, PeerAddress(HOST[host], port), "", ""), now)


def announce_commands(core: Coordinator) -> list[tuple[bytes, str, int | None]]:
    """``(to, "track"/"untrack", port)`` of every announce command sent, in order."""
    found: list[tuple[bytes, str, int | None]] = []
    for to, message in core.take_outbox():
        if isinstance(message, TrackTorrent):
            found.append((to, "track", message.listen_port))
        elif isinstance(message, UntrackTorrent):
            found.append((to, "untrack", None))
    return found


def of_kind(core: Coordinator, kind: type[Message]) -> list[tuple[bytes, Any]]:
    return [(to, m) for to, m in core.take_outbox() if isinstance(m, kind)]


def cluster(
    trackers: dict[bytes, int], peers: dict[bytes, int], *, private: bool = False
) -> tuple[Coordinator, InfoHash]:
    """A coordinator with a storage agent, ``trackers`` and ``peers`` (identity -> host), each
    having told its address, and one open torrent; the outbox emptied."""
    core = new_core()
    core.agent_joined(STORAGE, make_hello(ServiceKind.STORAGE_AGENT, "storage", "h1", 1), 0.0)
    for identity, host in peers.items():
        join_agent(core, identity, host)
        tell_peer(core, identity, host, PORT[identity])
    for identity, host in trackers.items():
        join_agent(core, identity, host)
        tell_tracker(core, identity, host)
    metainfo, info_hash = torrent(private)
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 0.0)
    return core, info_hash


NEW_LAYOUT = ({T2: 2, T3: 3}, {P2: 2, P3: 3})
OLD_LAYOUT = ({T1: 1}, {P2: 2, P3: 3})


def test_each_tracker_agent_announces_the_peer_agent_on_its_own_host() -> None:
    core, _ = cluster(*NEW_LAYOUT)
    assert sorted(announce_commands(core)) == [(T2, "track", 6882), (T3, "track", 6883)]
    [status] = core.status(0.0).torrents
    assert status.reachable
    shown = [(a.tracker_agent, a.host, a.port, a.peer_agent, a.totals) for a in status.announces]
    assert sorted(shown) == [
        ("tracker-2", "10.0.0.2", 6882, "peer-2", True),
        ("tracker-3", "10.0.0.3", 6883, "peer-3", False),
    ]


def test_the_old_layout_announces_once_as_before_and_says_it_is_unreachable() -> None:
    core, _ = cluster(*OLD_LAYOUT)
    assert announce_commands(core) == [(T1, "track", 6882)]  # the first peer agent's port
    [status] = core.status(0.0).torrents
    assert not status.reachable
    [announce] = status.announces
    assert (announce.tracker_agent, announce.host, announce.port) == ("tracker-1", "10.0.0.1", 6882)
    assert announce.peer_agent == ""


def test_a_private_torrent_is_announced_by_one_tracker_agent() -> None:
    core, _ = cluster(*NEW_LAYOUT, private=True)
    assert announce_commands(core) == [(T2, "track", 6882)]


def test_agents_joining_and_leaving_move_the_announces() -> None:
    # The old layout first: tracker-1 on the coordinator's host announces (unreachable).
    core, _ = cluster(*OLD_LAYOUT)
    assert announce_commands(core) == [(T1, "track", 6882)]
    # A tracker agent joins on host 3; until it tells its address nothing changes.
    join_agent(core, T3, 3, 1.0)
    assert announce_commands(core) == []
    # Its address pairs it with peer-3: it announces, and tracker-1 (a dead address) stops.
    tell_tracker(core, T3, 3, 1.0)
    assert announce_commands(core) == [(T1, "untrack", None), (T3, "track", 6883)]
    # Host 2 gets its tracker agent too.
    join_agent(core, T2, 2, 2.0)
    tell_tracker(core, T2, 2, 2.0)
    assert announce_commands(core) == [(T2, "track", 6882)]
    # The same AgentInfo again changes nothing.
    tell_tracker(core, T2, 2, 2.5)
    tell_peer(core, P2, 2, 6882, 2.5)
    assert announce_commands(core) == []
    # peer-3 leaves: nobody listens at host 3 any more, so tracker-3 stops announcing it.
    core.handle(P3, Goodbye("stopping"), 3.0)
    assert announce_commands(core) == [(T3, "untrack", None)]
    # peer-3 comes back: tracker-3 announces again.
    join_agent(core, P3, 3, 4.0)
    tell_peer(core, P3, 3, 6883, 4.0)
    assert announce_commands(core) == [(T3, "track", 6883)]
    # tracker-2 leaves: no untrack to an agent that is gone, tracker-3 goes on.
    core.handle(T2, Goodbye("stopping"), 5.0)
    assert announce_commands(core) == []
    # tracker-3 leaves too: only tracker-1 is left, and announces as before (unreachable).
    core.handle(T3, Goodbye("stopping"), 6.0)
    assert announce_commands(core) == [(T1, "track", 6882)]
    assert not core.status(0.0).torrents[0].reachable


def test_a_peer_agent_on_a_new_port_is_announced_again() -> None:
    core, _ = cluster(*NEW_LAYOUT)
    announce_commands(core)
    # peer-3 restarted and listens elsewhere: tracker-3 stops the old port, starts the new.
    join_agent(core, P3, 3, 1.0)
    tell_peer(core, P3, 3, 7000, 1.0)
    assert announce_commands(core) == [(T3, "untrack", None), (T3, "track", 7000)]


def test_a_tracker_agent_registering_again_is_told_its_torrent_again() -> None:
    core, _ = cluster(*NEW_LAYOUT)
    announce_commands(core)
    # The same process says hello again (it lost us): it forgot its torrents.
    join_agent(core, T3, 3, 1.0)
    tell_tracker(core, T3, 3, 1.0)
    assert announce_commands(core) == [(T3, "track", 6883)]


def test_totals_are_reported_by_the_first_announce_only() -> None:
    core, info_hash = cluster(*NEW_LAYOUT)
    announce_commands(core)
    core.handle(
        P2,
        PeerConnected(
            info_hash,
            "peer-2/1",
            PeerAddress("10.0.0.4", 6881),
            PeerId(b"x" * 20),
            "lt",
            False,
            True,
            True,
        ),
        1.0,
    )
    core.torrents[info_hash].downloaded_floor = 5000
    core.tick(2.0)
    updates = dict(of_kind(core, UpdateTransfer))
    left = PIECE * NUM_PIECES
    assert updates[T2] == UpdateTransfer(info_hash, 0, 5000, left)
    assert updates[T3] == UpdateTransfer(info_hash, 0, 0, left)  # never counted twice
    for piece in range(NUM_PIECES):
        core.handle(STORAGE, PieceVerified(info_hash, piece), 3.0)
    out = [
        (to, m) for to, m in core.take_outbox() if isinstance(m, UpdateTransfer | TorrentCompleted)
    ]
    downloaded = core.torrents[info_hash].downloaded
    assert sorted(out, key=lambda item: item[0]) == [
        (T2, UpdateTransfer(info_hash, 0, downloaded, 0)),
        (T2, TorrentCompleted(info_hash)),
        (T3, UpdateTransfer(info_hash, 0, 0, 0)),
        (T3, TorrentCompleted(info_hash)),
    ]


def test_a_newly_chosen_announce_starts_with_its_share_of_the_totals() -> None:
    core, info_hash = cluster({T2: 2}, {P2: 2, P3: 3})
    core.torrents[info_hash].downloaded_floor = 7000
    announce_commands(core)
    join_agent(core, T3, 3, 1.0)
    tell_tracker(core, T3, 3, 1.0)
    [(to, track)] = of_kind(core, TrackTorrent)
    assert to == T3 and (track.uploaded, track.downloaded) == (0, 0)


def test_pausing_untracks_at_each_announcer_only() -> None:
    core, info_hash = cluster({T1: 1, T2: 2, T3: 3}, {P2: 2, P3: 3})
    assert sorted(announce_commands(core)) == [(T2, "track", 6882), (T3, "track", 6883)]
    core.pause(info_hash, 0.0)
    assert sorted(announce_commands(core)) == [(T2, "untrack", None), (T3, "untrack", None)]
    assert core.status(0.0).torrents[0].announces == ()


def test_status_shows_each_announce_with_its_trackers_results() -> None:
    core, info_hash = cluster(*NEW_LAYOUT)
    url = "http://10.0.0.4:6969/announce"
    for identity, state in ((T2, TrackerState.WORKING), (T3, TrackerState.FAILED)):
        error = None if state is TrackerState.WORKING else "timed out"
        report = TrackerStateChanged(info_hash, url, 0, state, error, 1, 2, None, 60.0)
        core.handle(identity, report, 10.0)
    core.tick(20.0)
    [status] = core.status(0.0).torrents
    by_agent = {a.tracker_agent: a for a in status.announces}
    [working] = by_agent["tracker-2"].trackers
    [failed] = by_agent["tracker-3"].trackers
    assert (working.url, working.state, working.next_announce_in) == (
        url,
        TrackerState.WORKING,
        50.0,
    )
    assert (failed.state, failed.error) == (TrackerState.FAILED, "timed out")
    assert [t.state for t in status.trackers] == [TrackerState.FAILED]  # the latest, as before


def test_agents_in_status_show_incoming_connections_and_announce_addresses() -> None:
    core, info_hash = cluster(*NEW_LAYOUT)
    for n, (agent, incoming) in enumerate([(P2, True), (P2, False), (P3, True), (P3, True)]):
        key = f"{agent.decode()}/{n}"
        address = PeerAddress("10.0.0.4", 7000 + n)
        connected = PeerConnected(
            info_hash, key, address, PeerId(bytes([n]) * 20), "lt", incoming, True, True
        )
        core.handle(agent, connected, 1.0)
    agents = {a.agent_id: a for a in core.status(0.0).agents}
    assert (agents["peer-2"].connections, agents["peer-2"].incoming) == (2, 1)
    assert (agents["peer-3"].connections, agents["peer-3"].incoming) == (2, 2)
    assert agents["tracker-2"].address == "10.0.0.2"
    assert agents["peer-2"].address == "10.0.0.2:6882"
