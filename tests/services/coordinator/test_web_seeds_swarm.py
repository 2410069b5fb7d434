"""Web seed sessions in a torrent's swarm, driven by fake agents: placement and caps, the record a
``WebSeedConnected`` makes, what each way of ending means, bans by URL, and completion."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from torviz.services.coordinator.core import MAX_HASH_FAILURES, Coordinator
from torviz.services.coordinator.core.coordinator import PENDING_TIMEOUT
from torviz.services.coordinator.core.web_seeds import (
    MAX_SESSION_FAILURES,
    RETRY_FIRST,
    RETRY_MAX,
)
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AddTorrent,
    AssignPieces,
    BanPeers,
    ConnectWebSeed,
    DetachTorrent,
    DisconnectPeer,
    DisconnectReason,
    PeerDisconnected,
    PeerSource,
    PeerStats,
    PieceDownloaded,
    PieceRejected,
    PiecesReleased,
    PieceVerified,
    ServiceKind,
    TorrentAdded,
    TorrentOpened,
    TransferStats,
    WebSeedConnected,
    WebSeedReport,
    WebSeedState,
    WebSeedUrlState,
    WorkWanted,
)
from torviz.shared.types import InfoHash

from .test_core import NUM_PIECES, PA1, PA2, STORAGE, connect, full_core, join, new_core, sent
from .test_web_seeds_control import MIRROR, rows, web_torrent

OTHER = "http://127.0.0.2:8080/files/"


def open_torrent(
    core: Coordinator, urls: list[str], have: Bitfield | None = None, name: bytes = b"file.bin"
) -> InfoHash:
    reply = core.add_torrent(AddTorrent(web_torrent(urls, name), ""), now=0.0)
    assert isinstance(reply, TorrentAdded)
    have = have or Bitfield(NUM_PIECES)
    core.handle(STORAGE, TorrentOpened(reply.info_hash, have.to_bytes()), 0.0)
    return reply.info_hash


def started(core: Coordinator) -> list[tuple[bytes, str]]:
    return [(to, message.url) for to, message in sent(core, ConnectWebSeed)]


def running(core: Coordinator, urls: list[str] | None = None) -> tuple[InfoHash, str]:
    """An open torrent with one web seed session on PA1 (key ``pa1/ws``)."""
    info_hash = open_torrent(core, urls or [MIRROR])
    [(agent, url)] = started(core)
    core.handle(agent, WebSeedConnected(info_hash, "pa1/ws", url), 0.0)
    return info_hash, "pa1/ws"


@pytest.fixture
def core() -> Coordinator:
    return full_core(max_web_seeds_per_torrent=2)


def test_sessions_start_once_open_within_the_per_torrent_cap_spread_over_agents(
    core: Coordinator,
) -> None:
    reply = core.add_torrent(AddTorrent(web_torrent([MIRROR, OTHER, "http://h3/"]), ""), 0.0)
    assert isinstance(reply, TorrentAdded)
    core.tick(1.0)
    assert started(core) == []  # not open yet: its files are being checked
    core.handle(STORAGE, TorrentOpened(reply.info_hash, Bitfield(NUM_PIECES).to_bytes()), 1.0)
    assert started(core) == [(PA1, MIRROR), (PA2, OTHER)]  # one each: placement
    states = [state for state, _ in rows(core).values()]
    assert states == [WebSeedUrlState.CONNECTED] * 2 + [WebSeedUrlState.WAITING]
    core.tick(2.0)
    assert started(core) == []  # at the cap


def test_the_session_wide_cap_counts_every_torrent() -> None:
    core = full_core(max_web_seeds_per_torrent=4, max_web_seeds=3)
    open_torrent(core, [MIRROR, OTHER])
    assert len(started(core)) == 2
    second = open_torrent(core, ["http://a/", "http://b/"], name=b"other.bin")
    assert started(core) == [(PA1, "http://a/")]
    core.tick(1.0)
    assert started(core) == []
    [_, status] = core.status(1.0).torrents
    assert status.info_hash == second
    assert [row.state for row in status.web_seeds] == [
        WebSeedUrlState.CONNECTED,
        WebSeedUrlState.WAITING,
    ]


def test_no_peer_agent_no_session_until_one_joins() -> None:
    core = new_core()
    join(core, STORAGE, ServiceKind.STORAGE_AGENT)
    info_hash = open_torrent(core, [MIRROR])
    core.tick(1.0)
    assert started(core) == []
    assert rows(core)[MIRROR][0] is WebSeedUrlState.WAITING
    join(core, PA1, ServiceKind.PEER_AGENT)
    assert started(core) == [(PA1, MIRROR)]  # at once, not at the next tick (up to 1 s later)
    assert info_hash


def test_a_complete_torrent_starts_none(core: Coordinator) -> None:
    open_torrent(core, [MIRROR], Bitfield.full(NUM_PIECES))
    core.tick(1.0)
    assert started(core) == []


def test_a_session_is_a_record_with_every_piece_fed_runs(core: Coordinator) -> None:
    info_hash, key = running(core)
    core.take_outbox()
    [status] = core.status(0.0).torrents
    [peer] = status.peer_list
    assert (peer.address, peer.url, peer.source, peer.client) == (
        None,
        MIRROR,
        PeerSource.WEB_SEED,
        "web seed",
    )
    assert peer.progress == 1.0 and peer.flags == "D"
    assert (status.peers, status.seeds) == (0, 0)  # a web seed is neither
    core.handle(PA1, WorkWanted(info_hash, key, 4), 0.0)
    [(to, assign)] = sent(core, AssignPieces)
    assert (to, assign.peer, assign.pieces) == (PA1, key, (0, 1, 2, 3))
    core.handle(PA1, WorkWanted(info_hash, key, 4), 0.0)
    [(_, assign)] = sent(core, AssignPieces)
    assert assign.pieces == (4, 5)
    core.handle(PA1, PieceDownloaded(info_hash, 0, key), 0.0)
    core.handle(STORAGE, PieceVerified(info_hash, 0), 0.0)
    core.handle(PA1, PiecesReleased(info_hash, key, (1, 2, 3)), 0.0)
    core.handle(PA1, WorkWanted(info_hash, key, 2), 0.0)
    [(_, assign)] = sent(core, AssignPieces)
    assert assign.pieces == (1, 2)
    report = WebSeedReport(WebSeedState.BACKING_OFF, 2, 12.0, "HTTP 503", 0, 1)
    stats = PeerStats(info_hash, key, 5000, 0, 100.0, 0.0, False, False, True, True, False, 6)
    core.handle(PA1, TransferStats((replace(stats, web_seed=report),)), 0.0)
    [peer] = core.status(0.0).torrents[0].peer_list
    assert peer.web_seed == report and peer.downloaded == 5000
    [row] = core.status(0.0).torrents[0].web_seeds
    assert row.downloaded == 5000


def test_a_starved_web_seed_is_offered_a_run_when_pieces_free_up(core: Coordinator) -> None:
    info_hash = open_torrent(core, [MIRROR])
    [(_, url)] = started(core)
    connect(core, info_hash, PA2, "pa2/1", 2, Bitfield.full(NUM_PIECES))
    core.handle(PA2, WorkWanted(info_hash, "pa2/1", NUM_PIECES), 0.0)  # a peer takes them all
    for piece in range(NUM_PIECES):
        core.handle(PA2, PieceDownloaded(info_hash, piece, "pa2/1"), 0.0)  # being checked
    core.handle(PA1, WebSeedConnected(info_hash, "pa1/ws", url), 0.0)
    core.take_outbox()
    core.handle(PA1, WorkWanted(info_hash, "pa1/ws", 3), 0.0)
    [(_, nothing)] = sent(core, AssignPieces)
    assert nothing.pieces == ()
    core.handle(STORAGE, PieceVerified(info_hash, 0), 0.0)
    core.handle(STORAGE, PieceVerified(info_hash, 3), 0.0)
    core.tick(PENDING_TIMEOUT + 1)  # the other checks never answered: fetched again
    offers = [m.pieces for to, m in sent(core, AssignPieces) if m.peer == "pa1/ws"]
    assert offers == [(1, 2)]  # the run from the first piece wanted, up to one it has


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        (DisconnectReason.WEB_SEED_GIVEN_UP, WebSeedUrlState.GIVEN_UP),
        (DisconnectReason.WEB_SEED_STOPPED, WebSeedUrlState.WAITING),
        (DisconnectReason.TORRENT_DETACHED, WebSeedUrlState.WAITING),
        (DisconnectReason.SHUTDOWN, WebSeedUrlState.WAITING),
        (DisconnectReason.AGENT_STOPPING, WebSeedUrlState.WAITING),
        (DisconnectReason.WEB_SEED_ERROR, WebSeedUrlState.RETRYING),
        (DisconnectReason.WEB_SEED_REFUSED, WebSeedUrlState.RETRYING),
        (DisconnectReason.UNKNOWN_TORRENT, WebSeedUrlState.RETRYING),
        (DisconnectReason.UNKNOWN, WebSeedUrlState.RETRYING),
    ],
)
def test_each_way_a_session_ends_decides_what_comes_next(
    core: Coordinator, reason: DisconnectReason, state: WebSeedUrlState
) -> None:
    info_hash, key = running(core)
    core.handle(PA1, PeerDisconnected(info_hash, key, reason, "redirect loop"), 1.0)
    assert rows(core)[MIRROR][0] is state
    assert not core.torrents[info_hash].swarm.peers
    core.tick(2.0)
    again = started(core)
    if state is WebSeedUrlState.WAITING:
        assert again in ([(PA2, MIRROR)], [(PA1, MIRROR)])
    else:
        assert again == []
    if state is WebSeedUrlState.GIVEN_UP:
        assert rows(core)[MIRROR][1] == "redirect loop"
    if state is WebSeedUrlState.RETRYING:
        core.tick(1.0 + RETRY_FIRST - 0.5)
        assert started(core) == []
        core.tick(1.0 + RETRY_FIRST)
        assert [url for _, url in started(core)] == [MIRROR]


def test_failures_back_off_doubling_then_give_up(
    core: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    info_hash, key = running(core)
    now, delays = 0.0, []
    for attempt in range(1, MAX_SESSION_FAILURES + 1):
        reason = DisconnectReason.WEB_SEED_ERROR
        core.handle(PA1, PeerDisconnected(info_hash, key, reason, "boom"), now)
        if attempt == MAX_SESSION_FAILURES:
            break
        entry = core.torrents[info_hash].web_seeds.get(MIRROR)
        assert entry is not None
        delays.append(entry.retry_at - now)
        now = entry.retry_at
        core.tick(now)
        [(agent, _)] = started(core)
        key = f"{agent.decode()}/{attempt}"
        core.handle(agent, WebSeedConnected(info_hash, key, MIRROR), now)
    assert delays == [min(RETRY_MAX, RETRY_FIRST * 2**n) for n in range(MAX_SESSION_FAILURES - 1)]
    state, message = rows(core)[MIRROR]
    assert state is WebSeedUrlState.GIVEN_UP
    assert message == f"gave up after {MAX_SESSION_FAILURES} failures: boom"
    given_up = [r for r in caplog.records if "given up" in r.getMessage()]
    assert len(given_up) == 1 and given_up[0].levelno == logging.WARNING
    core.tick(now + RETRY_MAX)
    assert started(core) == []


def test_a_session_that_delivered_resets_the_failures(core: Coordinator) -> None:
    info_hash, key = running(core)
    entry = core.torrents[info_hash].web_seeds.get(MIRROR)
    assert entry is not None
    entry.failures = MAX_SESSION_FAILURES - 1
    stats = PeerStats(info_hash, key, 9, 0, 1.0, 0.0, False, False, True, True, False, 6)
    core.handle(PA1, TransferStats((stats,)), 0.0)
    core.handle(PA1, PeerDisconnected(info_hash, key, DisconnectReason.WEB_SEED_ERROR, "x"), 0.0)
    assert rows(core)[MIRROR][0] is WebSeedUrlState.RETRYING
    assert entry.failures == 1


def test_a_lost_agent_sessions_start_again_elsewhere(core: Coordinator) -> None:
    info_hash, key = running(core)
    core.agent_left(PA1, 1.0)
    assert rows(core)[MIRROR][0] is WebSeedUrlState.WAITING
    core.tick(2.0)
    assert started(core) == [(PA2, MIRROR)]
    assert key not in core.torrents[info_hash].swarm.peers


def test_a_late_connected_for_a_url_no_longer_wanted_is_closed(core: Coordinator) -> None:
    info_hash = open_torrent(core, [MIRROR])
    [(agent, _)] = started(core)
    core.handle(agent, WebSeedConnected(info_hash, "pa9/1", "http://never.asked/"), 0.0)
    core.handle(PA2 if agent == PA1 else PA1, WebSeedConnected(info_hash, "x/1", MIRROR), 0.0)
    closed = sent(core, DisconnectPeer)
    assert sorted(m.peer for _, m in closed) == ["pa9/1", "x/1"]
    assert not core.torrents[info_hash].swarm.peers


def test_bad_pieces_ban_the_url_not_the_host_and_the_pieces_go_elsewhere(
    core: Coordinator, caplog: pytest.LogCaptureFixture
) -> None:
    info_hash, key = running(core)
    connect(core, info_hash, PA2, "pa2/1", 2, Bitfield.full(NUM_PIECES))
    core.take_outbox()
    bad: list[int] = []
    out = []
    for _ in range(MAX_HASH_FAILURES):
        core.handle(PA1, WorkWanted(info_hash, key, 1), 0.0)
        [(_, assign)] = [(to, m) for to, m in sent(core, AssignPieces) if m.peer == key]
        [piece] = assign.pieces
        bad.append(piece)
        core.handle(PA1, PieceDownloaded(info_hash, piece, key), 0.0)
        core.handle(STORAGE, PieceRejected(info_hash, piece, (key,)), 0.0)
        out += core.take_outbox()
    assert len(set(bad)) == MAX_HASH_FAILURES  # a piece it spoilt goes to the peer next
    assert [m for _, m in out if isinstance(m, BanPeers)] == []
    [(to, close)] = [(to, m) for to, m in out if isinstance(m, DisconnectPeer)]
    assert (to, close.peer, close.reason) == (PA1, key, DisconnectReason.SENT_CORRUPT_DATA)
    state, message = rows(core)[MIRROR]
    assert state is WebSeedUrlState.BANNED
    assert message == f"banned: it sent {MAX_HASH_FAILURES} pieces that failed their hash check"
    [row] = core.status(0.0).torrents[0].web_seeds
    assert row.hash_failures == MAX_HASH_FAILURES
    # The pieces are fetched from the peer; the banned URL is never started again.
    core.handle(PA2, WorkWanted(info_hash, "pa2/1", NUM_PIECES), 0.0)
    [(_, refetch)] = sent(core, AssignPieces)
    assert set(bad) <= set(refetch.pieces)
    core.handle(PA1, PeerDisconnected(info_hash, key, DisconnectReason.SENT_CORRUPT_DATA, ""), 1)
    core.tick(RETRY_MAX * 2)
    assert started(core) == []
    bans = [r for r in caplog.records if "banning web seed" in r.getMessage()]
    assert len(bans) == 1


def test_completion_closes_the_sessions_and_the_urls_wait(core: Coordinator) -> None:
    info_hash, key = running(core)
    core.take_outbox()
    for piece in range(NUM_PIECES):
        core.handle(STORAGE, PieceVerified(info_hash, piece), 0.0)
    closes = [m for _, m in sent(core, DisconnectPeer)]
    assert [(m.peer, m.reason) for m in closes] == [(key, DisconnectReason.STOPPED)]
    assert rows(core)[MIRROR][0] is WebSeedUrlState.WAITING
    core.tick(5.0)
    assert started(core) == []


def test_pausing_detaches_and_resuming_gives_a_given_up_url_a_fresh_start(
    core: Coordinator,
) -> None:
    info_hash = open_torrent(core, [MIRROR, OTHER])
    [(agent, url), _] = started(core)
    key = "pa/given-up"
    core.handle(agent, WebSeedConnected(info_hash, key, url), 0.0)
    core.handle(agent, PeerDisconnected(info_hash, key, DisconnectReason.WEB_SEED_GIVEN_UP, "x"), 0)
    core.pause(info_hash, 1.0)
    assert sent(core, DetachTorrent)
    assert [state for state, _ in rows(core).values()] == [
        WebSeedUrlState.GIVEN_UP,
        WebSeedUrlState.WAITING,  # was connected: its session went with the detach
    ]
    core.resume(info_hash, 2.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 2.0)
    assert sorted(url for _, url in started(core)) == sorted([MIRROR, OTHER])


def test_a_web_seed_never_counts_as_a_connection_of_its_agent(core: Coordinator) -> None:
    info_hash, key = running(core)
    agent = core.agents.get(PA1)
    assert agent is not None and agent.connections == 0
    core.handle(PA1, PeerDisconnected(info_hash, key, DisconnectReason.WEB_SEED_STOPPED, ""), 0)
    assert agent.connections == 0
