"""The view model: deltas folded in, the order by name, the selection kept on its torrent."""

from __future__ import annotations

from torviz.services.coordinator.tui.view_model import (
    MAX_LOG_LINES,
    ViewModel,
)
from torviz.shared.bus import EventLevel

from .records import changes, event, ih, row


def _names(model: ViewModel) -> list[str]:
    return [r.name for r in model.ordered(0, len(model.order))]


def test_rows_are_sorted_by_name_and_new_ones_appear_in_place() -> None:
    model = ViewModel()
    model.apply(changes(row("delta"), row("Alpha"), complete=True), 0.0)
    model.apply(changes(row("charlie"), revision=2), 0.0)
    assert _names(model) == ["Alpha", "charlie", "delta"]
    assert model.selected == ih("Alpha")  # the first row is selected when none was


def test_a_changed_row_replaces_the_old_one_and_unchanged_delta_changes_nothing() -> None:
    model = ViewModel()
    model.apply(changes(row("a"), row("b"), complete=True), 0.0)
    model.dirty = False
    assert not model.apply(changes(revision=2), 0.0)
    assert not model.dirty
    assert model.apply(changes(row("b", progress=0.9), revision=3), 0.0)
    assert model.rows[ih("b")].progress == 0.9
    assert _names(model) == ["a", "b"]
    assert model.revision == 3


def test_the_selection_stays_on_its_torrent_when_rows_arrive_above_it() -> None:
    model = ViewModel()
    model.apply(changes(row("m"), row("z"), complete=True), 0.0)
    model.select_index(1)
    assert model.selected == ih("z")
    model.apply(changes(row("a"), row("b"), revision=2), 0.0)
    assert model.selected == ih("z")
    assert model.selected_index() == 3


def test_a_renamed_torrent_moves_to_its_new_place_and_keeps_the_selection() -> None:
    model = ViewModel()
    hash_ = ih("magnet")
    model.apply(changes(row("zz", info_hash=hash_), row("b"), complete=True), 0.0)
    model.selected = hash_
    model.apply(changes(row("aa", info_hash=hash_), revision=2), 0.0)
    assert _names(model) == ["aa", "b"]
    assert model.selected_index() == 0
    assert len(model.by_key) == 2


def test_removed_rows_go_and_the_selection_moves_to_the_row_that_took_the_place() -> None:
    model = ViewModel()
    model.apply(changes(row("a"), row("b"), row("c"), complete=True), 0.0)
    model.selected = ih("b")
    model.apply(changes(removed=(ih("b"),), revision=2), 0.0)
    assert _names(model) == ["a", "c"]
    assert model.selected == ih("c")
    model.apply(changes(removed=(ih("c"),), revision=3), 0.0)
    assert model.selected == ih("a")
    model.apply(changes(removed=(ih("a"), ih("unknown")), revision=4), 0.0)
    assert model.selected is None
    assert model.order == []


def test_a_complete_answer_drops_the_rows_it_does_not_list() -> None:
    model = ViewModel()
    model.apply(changes(row("a"), row("b"), complete=True), 0.0)
    model.apply(changes(row("b"), revision=7, complete=True), 0.0)
    assert _names(model) == ["b"]
    assert set(model.rows) == {ih("b")}


def test_events_are_logged_once_with_their_time_and_the_last_seq_is_kept() -> None:
    model = ViewModel()
    model.apply(
        changes(events=(event(1, "added x", age=5.0), event(2, "oops", EventLevel.ERROR))), 100.0
    )
    model.apply(changes(events=(event(2, "oops", EventLevel.ERROR), event(3, "more"))), 101.0)
    assert [line.text for line in model.log] == ["added x", "oops", "more"]
    assert model.events_after == 3
    assert model.log[1].level is EventLevel.ERROR
    assert len(model.log[0].stamp) == 8 and model.log[0].stamp.count(":") == 2


def test_the_log_is_bounded() -> None:
    model = ViewModel()
    for i in range(MAX_LOG_LINES + 50):
        model.add_log(EventLevel.INFO, f"line {i}", 0.0)
    assert len(model.log) == MAX_LOG_LINES
    assert model.log[0].text == "line 50"


def test_moving_and_paging_are_clamped_and_the_list_scrolls_to_the_selection() -> None:
    model = ViewModel()
    model.apply(changes(*(row(f"t{i:03d}") for i in range(100)), complete=True), 0.0)
    model.move(-5)
    assert model.selected_index() == 0
    model.move(250)
    assert model.selected_index() == 99
    model.fit_list(10)
    assert model.list_top == 90
    model.select_index(40)
    model.fit_list(10)
    assert model.list_top == 40
    model.select_index(45)
    model.fit_list(10)
    assert model.list_top == 40  # still in view: the list does not jump


def test_after_a_resync_events_seen_are_not_shown_twice_and_a_restarted_daemons_are() -> None:
    model = ViewModel()
    model.apply(changes(row("a"), complete=True, events=(event(1, "one"), event(2, "two"))), 0.0)
    model.resync()
    assert (model.revision, model.events_after) == (0, 0)
    # The same daemon answers everything again: nothing new in the log.
    model.apply(changes(row("a"), complete=True, events=(event(1, "one"), event(2, "two"))), 0.0)
    assert [line.text for line in model.log] == ["one", "two"]
    # A restarted daemon numbers its events from 1 again: its own are shown.
    model.resync()
    model.apply(changes(complete=True, events=(event(1, "restarted"), event(2, "two"))), 0.0)
    assert [line.text for line in model.log] == ["one", "two", "restarted"]
    assert model.events_after == 2
    assert model.rows == {}  # the complete answer has no "a"
