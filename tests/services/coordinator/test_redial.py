"""How the coordinator's connections end and begin: redials after an ending (the policy alone,
then the coordinator driven by fake agents over simulated time), the counters of a connection
it closes, the totals of the completed announce, and the share of slots kept for its dials."""

from __future__ import annotations

from torviz.services.coordinator.core import Coordinator
from torviz.services.coordinator.core.redial import RedialSchedule
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    AddTorrent,
    ConnectPeer,
    DisconnectPeer,
    DisconnectReason,
    PeerBitfield,
    PeerConnected,
    PeerConnectFailed,
    PeerDisconnected,
    PeersDiscovered,
    PeerSource,
    PeerStats,
    PieceVerified,
    TorrentCompleted,
    TorrentOpened,
    TransferStats,
    UpdateTransfer,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

from .test_core import (
    NUM_PIECES,
    PA1,
    PIECE,
    STORAGE,
    TRACKER,
    addr,
    connect,
    full_core,
    make_torrent,
    opened,
    sent,
)

A = PeerAddress("127.0.0.9", 6881)


def test_a_failing_address_backs_off_doubling_then_is_given_up() -> None:
    schedule = RedialSchedule(base_delay=10.0, max_failures=3)
    now = 0.0
    waits = []
    for _ in range(3):
        schedule.ended(A, now, "connection_refused", productive=False)
        ready_at = min(t for t in range(int(now), int(now) + 1000) if schedule.due(float(t)))
        waits.append(ready_at - now)
        now = float(ready_at)
    assert waits == [10.0, 20.0, 40.0]
    schedule.ended(A, now, "connection_refused", productive=False)
    assert schedule.given_up(A) and schedule.due(now + 10_000) == []


def test_a_due_address_is_handed_back_once() -> None:
    schedule = RedialSchedule()
    schedule.ended(A, 0.0, "peer_closed", productive=False)
    assert schedule.due(10.0) == [A]
    assert schedule.due(11.0) == [] and schedule.due(1000.0) == []


def test_payload_resets_the_count_and_final_reasons_give_up() -> None:
    schedule = RedialSchedule(base_delay=10.0, max_failures=2)
    schedule.ended(A, 0.0, "peer_closed", productive=False)
    schedule.ended(A, 1.0, "peer_closed", productive=False)
    schedule.ended(A, 2.0, "peer_closed", productive=True)
    assert schedule.due(11.9) == [] and schedule.due(12.0) == [A]
    for reason in ("both_seeds", "banned", "bad_bitfield", "connected_to_self"):
        schedule.clear()
        schedule.ended(A, 0.0, "peer_closed", productive=True)
        schedule.ended(A, 1.0, reason, productive=True)
        assert schedule.given_up(A) and schedule.due(1e9) == [], reason


def dials_to(core: Coordinator, address: PeerAddress) -> int:
    return sum(1 for _, m in sent(core, ConnectPeer) if m.address == address)


def stats(info_hash: InfoHash, key: str, downloaded: int, uploaded: int) -> TransferStats:
    row = PeerStats(
        info_hash, key, downloaded, uploaded, 0.0, 0.0, False, True, False, True, False, 0
    )
    return TransferStats((row,))


def finish(core: Coordinator, info_hash: InfoHash, now: float) -> None:
    for piece in range(NUM_PIECES):
        core.handle(STORAGE, PieceVerified(info_hash, piece), now)


def test_a_finished_torrent_does_not_keep_redialling_its_seeder() -> None:
    """The seeder hangs up when we finish; we dial it once more, find a seed, and stop there,
    for a whole minute of seeding (before: a dial every second)."""
    core = full_core()
    info_hash = opened(core)
    seeder = addr(5)
    core.handle(TRACKER, PeersDiscovered(info_hash, (seeder,), PeerSource.TRACKER), 0.0)
    [(agent, _)] = sent(core, ConnectPeer)
    connect(core, info_hash, agent, "pa/1", 5, Bitfield.full(NUM_PIECES))
    core.handle(agent, stats(info_hash, "pa/1", PIECE * NUM_PIECES, 0), 1.0)
    finish(core, info_hash, 1.0)
    core.handle(
        agent, PeerDisconnected(info_hash, "pa/1", DisconnectReason.PEER_CLOSED, "closed"), 2.0
    )
    core.take_outbox()
    dials = 0
    for second in range(3, 63):
        core.tick(float(second))
        for to, message in sent(core, ConnectPeer):
            assert message.address == seeder
            dials += 1
            key = f"pa/{second}"
            core.handle(to, connected(info_hash, key, second), float(second))
            core.handle(to, bitfield(info_hash, key), float(second))
            assert (
                to,
                DisconnectPeer(info_hash, key, DisconnectReason.BOTH_SEEDS),
            ) in core.take_outbox()
            core.handle(
                to,
                PeerDisconnected(info_hash, key, DisconnectReason.BOTH_SEEDS, "x"),
                float(second),
            )
    assert dials == 1


def connected(info_hash: InfoHash, key: str, n: int) -> PeerConnected:
    return PeerConnected(info_hash, key, addr(5), PeerId(bytes([n]) * 20), "lt", False, True, True)


def bitfield(info_hash: InfoHash, key: str) -> PeerBitfield:
    return PeerBitfield(info_hash, key, Bitfield.full(NUM_PIECES).to_bytes())


def test_an_always_failing_address_is_dialled_a_bounded_number_of_times() -> None:
    core = full_core()
    info_hash = opened(core)
    core.handle(TRACKER, PeersDiscovered(info_hash, (addr(7),), PeerSource.TRACKER), 0.0)
    dials = 0
    for second in range(0, 3 * 3600):
        core.tick(float(second))
        for to, message in sent(core, ConnectPeer):
            dials += 1
            failed = PeerConnectFailed(
                info_hash, message.address, DisconnectReason.CONNECTION_REFUSED, "x"
            )
            core.handle(to, failed, float(second))
        if second % 600 == 0:  # the tracker keeps listing it
            found = PeersDiscovered(info_hash, (addr(7),), PeerSource.TRACKER)
            core.handle(TRACKER, found, float(second))
    assert dials == 1 + 6  # the first dial, six retries, then given up


def test_uploads_on_a_connection_we_close_still_count() -> None:
    """A leecher takes a whole copy within one stats period, then says it is a seed: we hang
    up, and its final counters (sent after our DisconnectPeer) still count."""
    core = full_core()
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield.full(NUM_PIECES).to_bytes()), 0.0)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield(NUM_PIECES))
    core.handle(PA1, stats(info_hash, "pa1/1", 0, 1000), 1.0)
    core.handle(PA1, bitfield(info_hash, "pa1/1"), 1.5)
    assert (
        PA1,
        DisconnectPeer(info_hash, "pa1/1", DisconnectReason.BOTH_SEEDS),
    ) in core.take_outbox()
    size = PIECE * NUM_PIECES
    core.handle(PA1, stats(info_hash, "pa1/1", 0, size), 1.6)
    core.handle(PA1, PeerDisconnected(info_hash, "pa1/1", DisconnectReason.BOTH_SEEDS, "x"), 1.6)
    core.handle(PA1, stats(info_hash, "pa1/1", 0, 5 * size), 2.0)  # too late: not counted
    assert core.status(0.0).torrents[0].uploaded == size


def test_uploads_of_a_paused_torrent_still_count() -> None:
    core = full_core()
    metainfo, info_hash = make_torrent()
    core.add_torrent(AddTorrent(metainfo, ""), now=0.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield.full(NUM_PIECES).to_bytes()), 0.0)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield(NUM_PIECES))
    core.pause(info_hash, 0.0)
    core.handle(PA1, stats(info_hash, "pa1/1", 0, 4096), 1.0)
    core.handle(
        PA1, PeerDisconnected(info_hash, "pa1/1", DisconnectReason.TORRENT_DETACHED, "x"), 1.0
    )
    assert core.status(0.0).torrents[0].uploaded == 4096


def test_the_completed_announce_carries_what_was_downloaded() -> None:
    """Counters arrive once a second; a download that finishes sooner still reports its bytes."""
    core = full_core()
    info_hash = opened(core)
    connect(core, info_hash, PA1, "pa1/1", 2, Bitfield.full(NUM_PIECES))
    core.take_outbox()
    finish(core, info_hash, 0.5)
    to_tracker = [m for to, m in core.take_outbox() if to == TRACKER]
    update, completed = to_tracker
    assert isinstance(update, UpdateTransfer) and isinstance(completed, TorrentCompleted)
    assert (update.downloaded, update.left) == (PIECE * NUM_PIECES, 0)
    assert core.status(0.0).torrents[0].downloaded == PIECE * NUM_PIECES


def test_incoming_peers_never_take_the_slots_kept_for_our_dials() -> None:
    core = full_core(max_peers_per_torrent=10)
    info_hash = opened(core)
    for n in range(10):  # ten peers dial us: the torrent is full
        incoming = PeerConnected(
            info_hash, f"pa1/in{n}", addr(100 + n), PeerId(bytes([n]) * 20), "x", True, True, True
        )
        core.handle(PA1, incoming, 0.0)
    found = tuple(addr(n) for n in range(2, 8))
    core.handle(TRACKER, PeersDiscovered(info_hash, found, PeerSource.TRACKER), 1.0)
    assert [m.address for _, m in sent(core, ConnectPeer)] == [addr(2), addr(3)]  # a fifth
