"""The session watch: a first question gets every row; then only the rows that changed, the
torrents removed, or everything again when the watcher's revision cannot be answered with
changes (too old, or from a daemon that has restarted). Rates are rounded in the rows, so an
idle torrent's float noise is no change. Also the rows and totals of a real coordinator."""

from __future__ import annotations

import dataclasses

from torviz.services.coordinator.core.session_watch import SessionWatch
from torviz.services.coordinator.core.status import round_rate, torrent_row
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    PeerStats,
    PieceVerified,
    TorrentRow,
    TorrentState,
    TransferStats,
    WatchSession,
)
from torviz.shared.types import InfoHash

from .test_core import NUM_PIECES, PA1, PIECE, STORAGE, connect, full_core, opened


def row(n: int, **changes: object) -> TorrentRow:
    base = TorrentRow(
        info_hash=InfoHash(bytes([n]) * 20),
        name=f"t{n}",
        state=TorrentState.DOWNLOADING,
        progress=0.5,
        total_length=1000,
        left=500,
        download_rate=0.0,
        upload_rate=0.0,
        peers=0,
        seeds=0,
        error=None,
        check_progress=None,
        metadata=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_the_first_question_gets_every_row() -> None:
    watch = SessionWatch()
    changes = watch.changes([row(1), row(2)], 0)
    assert changes.complete and changes.revision == 1
    assert changes.rows == (row(1), row(2)) and changes.removed == ()


def test_nothing_changed_is_an_empty_answer_at_the_same_revision() -> None:
    watch = SessionWatch()
    first = watch.changes([row(1), row(2)], 0)
    again = watch.changes([row(1), row(2)], first.revision)
    assert (again.revision, again.complete, again.rows, again.removed) == (1, False, (), ())


def test_only_the_changed_row_comes_back() -> None:
    watch = SessionWatch()
    first = watch.changes([row(1), row(2)], 0)
    moved = row(2, progress=0.75, left=250)
    changes = watch.changes([row(1), moved], first.revision)
    assert changes.revision == 2 and not changes.complete
    assert changes.rows == (moved,)
    # A second watcher still at revision 1 gets the same; one at 0 gets everything.
    assert watch.changes([row(1), moved], 1).rows == (moved,)
    assert watch.changes([row(1), moved], 0).rows == (row(1), moved)


def test_a_removal_is_told_once_then_forgotten_by_later_watchers() -> None:
    watch = SessionWatch()
    first = watch.changes([row(1), row(2)], 0)
    after = watch.changes([row(1)], first.revision)
    assert after.removed == (row(2).info_hash,) and after.rows == () and not after.complete
    assert watch.changes([row(1)], after.revision).removed == ()


def test_a_torrent_added_again_is_no_longer_removed() -> None:
    watch = SessionWatch()
    first = watch.changes([row(1)], 0)
    watch.changes([], first.revision)
    back = watch.changes([row(1, name="again")], first.revision)
    assert back.removed == () and back.rows == (row(1, name="again"),)


def test_a_revision_too_old_or_from_the_future_gets_everything() -> None:
    watch = SessionWatch(max_tombstones=2)
    first = watch.changes([row(n) for n in range(1, 6)], 0)
    for n in range(1, 5):  # four removals, one revision each: the first two are forgotten
        watch.changes([row(m) for m in range(n + 1, 6)], 0)
    stale = watch.changes([row(5)], first.revision)
    assert stale.complete and stale.rows == (row(5),) and stale.removed == ()
    recent = watch.changes([row(5)], watch.revision - 1)
    assert not recent.complete and recent.removed == (row(4).info_hash,)
    future = watch.changes([row(5)], watch.revision + 10)  # the daemon restarted since
    assert future.complete and future.rows == (row(5),)


def test_rates_are_rounded_so_noise_is_no_change() -> None:
    assert round_rate(123456.7) == 123000.0
    assert round_rate(0.4) == 0.0
    assert round_rate(1234.5) == round_rate(1234.9)
    watch = SessionWatch()
    first = watch.changes([row(1, download_rate=round_rate(50_001.0))], 0)
    again = watch.changes([row(1, download_rate=round_rate(50_049.0))], first.revision)
    assert again.rows == ()


def test_the_coordinator_answers_with_rows_totals_and_agents() -> None:
    core = full_core()
    info_hash = opened(core)
    first = core.watch(WatchSession(0, 0), 1.0)
    assert first.complete and [r.info_hash for r in first.rows] == [info_hash]
    assert first.totals.torrents == 1 and first.totals.agents == 4 and first.totals.hosts == 1
    assert first.totals.dht_nodes is None and len(first.agents) == 4
    assert core.watch(WatchSession(first.revision, 0), 2.0).rows == ()

    connect(core, info_hash, PA1, "pa1/1", 9, Bitfield(NUM_PIECES, range(NUM_PIECES)))
    stats = PeerStats(
        info_hash, "pa1/1", 4 * PIECE, 0, 12345.6, 0.0, False, False, True, True, False, 6
    )
    core.handle(PA1, TransferStats((stats,)), 2.0)
    core.handle(STORAGE, PieceVerified(info_hash, 0), 2.0)
    changed = core.watch(WatchSession(first.revision, 0), 3.0)
    [moved] = changed.rows
    assert moved == torrent_row(core.torrents[info_hash])
    assert moved.peers == 1 and moved.seeds == 1 and moved.download_rate == 12300.0
    assert moved.left == PIECE * (NUM_PIECES - 1)
    assert changed.totals.peers == 1 and changed.totals.download_rate == 12345.6


def test_a_watch_that_starts_late_answers_an_earlier_count_with_everything() -> None:
    watch = SessionWatch(start=1000)
    assert watch.changes([row(1)], 0).revision == 1001
    stale = watch.changes([row(1)], 5)  # a watcher of the daemon's previous run
    assert stale.complete and stale.rows == (row(1),)
    assert watch.changes([row(1)], 1001).rows == ()
