"""The daemon's event log: the bounded ring (sequence numbers, ages, what a watcher gets), the
logging handler that feeds it from real log calls (with their torrent), and the lines a user
wants to see logged once per change (a tracker failing, working again)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from torviz.services.coordinator.core.event_log import EventLog, one_line
from torviz.services.coordinator.event_handler import EventHandler, install, uninstall
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    MAX_TEXT,
    EventLevel,
    Goodbye,
    PieceVerified,
    RemoveTorrent,
    StorageFailed,
    TorrentOpened,
    TrackerState,
    TrackerStateChanged,
)
from torviz.shared.types import InfoHash
from torviz.shared.units import short_duration

from .test_core import NUM_PIECES, PA2, STORAGE, TRACKER, full_core, opened

HASH = InfoHash(bytes(range(20)))


def test_the_ring_numbers_events_and_keeps_the_newest() -> None:
    ring = EventLog(limit=3)
    for n in range(5):
        assert ring.record(float(n), EventLevel.INFO, f"event {n}") == n + 1
    assert len(ring) == 3 and ring.last_seq == 5
    assert [(e.seq, e.text) for e in ring.recent(10.0)] == [
        (3, "event 2"),
        (4, "event 3"),
        (5, "event 4"),
    ]
    assert [e.age for e in ring.recent(10.0)] == [8.0, 7.0, 6.0]


def test_a_watcher_gets_the_events_after_the_last_it_saw() -> None:
    ring = EventLog()
    ring.record(1.0, EventLevel.WARNING, "first", HASH)
    ring.record(2.0, EventLevel.ERROR, "second")
    [event] = ring.after(1, 5.0)
    assert (event.seq, event.level, event.text, event.info_hash, event.age) == (
        2,
        EventLevel.ERROR,
        "second",
        None,
        3.0,
    )
    assert ring.after(2, 5.0) == ()
    assert [e.seq for e in ring.after(99, 5.0)] == [1, 2]  # a restarted daemon: all of it
    assert ring.after(0, 0.0)[0].age == 0.0  # never negative


def test_a_text_is_one_bounded_line() -> None:
    assert one_line("two\nlines\r\nhere") == "two lines here"
    assert len(one_line("x" * (MAX_TEXT * 3))) == MAX_TEXT
    ring = EventLog()
    ring.record(0.0, EventLevel.INFO, "a\nb")
    assert ring.recent(0.0)[0].text == "a b"


@pytest.fixture
def handler() -> Iterator[EventHandler]:
    clock = iter(float(n) for n in range(100))
    installed = install(EventLog(), lambda: next(clock))
    assert installed is not None
    try:
        yield installed
    finally:
        uninstall(installed)


def test_the_handler_takes_info_and_up_from_the_torviz_loggers(handler: EventHandler) -> None:
    log = logging.getLogger("torviz.services.coordinator.core.example")
    log.debug("not this one")
    log.info("%s: added", "Example", extra={"info_hash": HASH})
    log.warning("line one\nline two")
    log.error("bad %d", 3, extra={"info_hash": "not an info hash"})
    logging.getLogger("elsewhere").error("not ours")
    logging.getLogger("torviz.shared.runtime.sockets").info("control: welcomed cli cli-1-2")
    logging.getLogger("torviz.shared.runtime.sockets").warning("bus: refused a hello")
    events = handler.events.recent(10.0)
    assert [(e.level, e.text, e.info_hash) for e in events] == [
        (EventLevel.INFO, "Example: added", HASH),
        (EventLevel.WARNING, "line one line two", None),
        (EventLevel.ERROR, "bad 3", None),
        (EventLevel.WARNING, "bus: refused a hello", None),
    ]


def test_the_handler_sees_info_under_a_stricter_level_without_printing_it() -> None:
    root = logging.getLogger()
    printer = logging.StreamHandler()
    before = root.level
    root.addHandler(printer)
    root.setLevel(logging.WARNING)
    installed = install(EventLog())
    assert installed is not None
    try:
        logging.getLogger("torviz.test").info("seen by the log only")
        assert [e.text for e in installed.events.recent(0.0)] == ["seen by the log only"]
        assert printer.level == logging.WARNING  # what it prints does not change
    finally:
        uninstall(installed)
        root.removeHandler(printer)
        root.setLevel(before)
    assert printer.level == logging.NOTSET
    assert logging.getLogger("torviz").level == logging.NOTSET


def test_a_failing_tracker_is_logged_on_the_change_only(handler: EventHandler) -> None:
    core = full_core()
    info_hash = opened(core)
    url = "http://127.0.0.1:6969/announce"

    def report(state: TrackerState, error: str | None = None) -> None:
        message = TrackerStateChanged(info_hash, url, 0, state, error, None, None, None, None)
        core.handle(TRACKER, message, 1.0)

    report(TrackerState.WORKING)
    report(TrackerState.FAILED, "connection refused")
    report(TrackerState.FAILED, "connection refused")
    report(TrackerState.ANNOUNCING)
    report(TrackerState.WORKING)
    report(TrackerState.WORKING)
    texts = [(e.level, e.text, e.info_hash) for e in handler.events.recent(99.0)]
    tracker = [item for item in texts if "tracker http" in item[1]]
    assert tracker == [
        (EventLevel.WARNING, f"file.bin: tracker {url} fails: connection refused", info_hash),
        (EventLevel.INFO, f"file.bin: tracker {url} works again", info_hash),
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-3, "0s"), (0, "0s"), (59.9, "59s"), (65, "1m05s"), (7800, "2h10m"), (277200, "3d05h")],
)
def test_durations_read_short(seconds: float, text: str) -> None:
    assert short_duration(seconds) == text


def test_what_happens_to_a_torrent_is_logged_with_its_info_hash(handler: EventHandler) -> None:
    core = full_core()
    info_hash = opened(core)
    core.pause(info_hash, 1.0)
    core.resume(info_hash, 2.0)
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 2.0)
    for piece in range(NUM_PIECES):
        core.handle(STORAGE, PieceVerified(info_hash, piece), 65.0)
    core.verify(info_hash, 70.0)
    core.handle(STORAGE, StorageFailed(info_hash, "file.bin", "ENOSPC", "disk full"), 71.0)
    core.remove_torrent(RemoveTorrent(info_hash, True), 72.0)
    events = handler.events.recent(99.0)
    mine = [(e.level, e.text) for e in events if e.info_hash == info_hash]
    wanted = [
        (EventLevel.INFO, "file.bin: added from a .torrent, 192.0 KiB"),
        (EventLevel.INFO, "file.bin: paused"),
        (EventLevel.INFO, "file.bin: resumed"),
        (EventLevel.INFO, "file.bin: complete (192.0 KiB in 1m05s)"),
        (EventLevel.INFO, "file.bin: verifying its files"),
        (EventLevel.ERROR, "file.bin: error: disk full"),
        (EventLevel.INFO, "file.bin: removed (files deleted)"),
    ]
    found = iter(mine)
    for level, text in wanted:  # in this order, maybe among others (announces)
        assert any(lv == level and t.startswith(text) for lv, t in found), (text, mine)
    assert not any(e.info_hash is None and "file.bin" in e.text for e in events)


def test_an_agent_that_says_goodbye_is_an_event(handler: EventHandler) -> None:
    core = full_core()
    core.handle(PA2, Goodbye("shutting_down"), 1.0)
    assert handler.events.recent(2.0)[-1].text == "peer agent pa2 on host left (shutting_down)"


def test_a_second_install_for_the_same_log_is_none(handler: EventHandler) -> None:
    assert install(handler.events) is None  # the actor's, after the daemon's: once is enough
    logging.getLogger("torviz.test").info("once")
    assert [e.text for e in handler.events.recent(99.0)] == ["once"]
