"""Keys: each key's effect on the view model and the command it asks for."""

from __future__ import annotations

import dataclasses

import pytest

from torviz.services.coordinator.tui.keys import (
    Add,
    FindSavePath,
    OpenDetail,
    Pause,
    Quit,
    Remove,
    Resume,
    Shutdown,
    Verify,
    handle_key,
)
from torviz.services.coordinator.tui.view_model import ConfirmKind, Mode, ViewModel
from torviz.shared.bus import EventLevel, ServiceKind, TorrentState

from .records import agent, changes, ih, row, status


def _model(*states: TorrentState) -> ViewModel:
    model = ViewModel()
    rows = [row(f"t{i}", state) for i, state in enumerate(states or (TorrentState.DOWNLOADING,))]
    model.apply(changes(*rows, complete=True), 0.0)
    return model


def _mode(model: ViewModel) -> Mode:
    """The mode, read through a call (each key changes it behind mypy's back)."""
    return model.mode


def _press(model: ViewModel, *keys: str) -> list[object]:
    return [handle_key(model, key) for key in keys]


@pytest.mark.parametrize("key", ["q", "KEY_ESCAPE"])
def test_q_or_esc_on_the_list_quits(key: str) -> None:
    assert handle_key(_model(), key) == Quit()


@pytest.mark.parametrize(
    ("state", "command"),
    [
        (TorrentState.DOWNLOADING, Pause),
        (TorrentState.SEEDING, Pause),
        (TorrentState.METADATA, Pause),
        (TorrentState.PAUSED, Resume),
        (TorrentState.ERROR, Resume),
    ],
)
def test_space_pauses_or_resumes(state: TorrentState, command: type) -> None:
    assert handle_key(_model(state), " ") == command(ih("t0"))


def test_v_verifies_the_selected_torrent() -> None:
    model = _model(TorrentState.SEEDING, TorrentState.SEEDING)
    handle_key(model, "j")
    assert handle_key(model, "v") == Verify(ih("t1"))


def test_torrent_keys_do_nothing_on_an_empty_list() -> None:
    model = ViewModel()
    assert _press(model, " ", "v", "d", "D", "KEY_ENTER", "j") == [None] * 6
    assert _mode(model) is Mode.LIST


def test_moving_keys() -> None:
    model = _model(*[TorrentState.DOWNLOADING] * 30)
    model.page_rows = 10
    handle_key(model, "j")
    handle_key(model, "KEY_DOWN")
    assert model.selected_index() == 2
    handle_key(model, "k")
    assert model.selected_index() == 1
    handle_key(model, "KEY_UP")
    handle_key(model, "KEY_UP")
    assert model.selected_index() == 0
    handle_key(model, "KEY_PGDOWN")
    assert model.selected_index() == 10
    handle_key(model, "KEY_PGUP")
    assert model.selected_index() == 0
    handle_key(model, "KEY_END")
    assert model.selected_index() == 29
    handle_key(model, "KEY_HOME")
    assert model.selected_index() == 0


def test_log_scroll_keys_are_bounded() -> None:
    model = _model()
    for i in range(10):
        model.add_log(EventLevel.INFO, str(i), 0.0)
    for key in ("[", "<", "KEY_SHIFT_UP", "["):
        handle_key(model, key)
    assert model.log_scroll == 9  # at most the oldest line
    handle_key(model, "]")
    assert model.log_scroll == 6
    for key in (">", "KEY_SHIFT_DOWN", "]"):
        handle_key(model, key)
    assert model.log_scroll == 0


def test_enter_opens_the_detail_and_esc_closes_it() -> None:
    model = _model(TorrentState.SEEDING, TorrentState.SEEDING)
    handle_key(model, "j")
    assert handle_key(model, "KEY_ENTER") == OpenDetail(ih("t1"))
    assert _mode(model) is Mode.DETAIL
    assert model.detail_hash == ih("t1")
    _press(model, "j", "j", "k")
    assert model.detail_scroll == 0  # nothing to scroll before the detail came
    model.detail = status("t1", peers=5)
    _press(model, "j", "j", "k")
    assert model.detail_scroll == 1
    _press(model, *["j"] * 20)
    assert model.detail_scroll == 5  # its longest list: five peers
    assert handle_key(model, "KEY_ESCAPE") is None
    assert _mode(model) is Mode.LIST


def test_pause_and_verify_work_in_the_detail_view() -> None:
    model = _model()
    handle_key(model, "KEY_ENTER")
    assert handle_key(model, " ") == Pause(ih("t0"))
    assert handle_key(model, "v") == Verify(ih("t0"))
    assert _mode(model) is Mode.DETAIL


@pytest.mark.parametrize(("key", "mode"), [("?", Mode.HELP), ("A", Mode.AGENTS)])
def test_pages_open_and_esc_goes_back(key: str, mode: Mode) -> None:
    model = _model()
    assert handle_key(model, key) is None
    assert _mode(model) is mode
    assert handle_key(model, "j") is None  # keys of the list do nothing on a page
    assert _mode(model) is mode
    handle_key(model, "KEY_ESCAPE")
    assert _mode(model) is Mode.LIST


def test_d_asks_then_y_removes_and_n_cancels() -> None:
    model = _model()
    assert handle_key(model, "d") is None
    assert _mode(model) is Mode.CONFIRM
    assert model.confirm is not None and model.confirm.kind is ConfirmKind.REMOVE
    assert handle_key(model, "x") is None  # anything else keeps the question
    assert _mode(model) is Mode.CONFIRM
    assert handle_key(model, "n") is None
    assert _mode(model) is Mode.LIST
    handle_key(model, "d")
    assert handle_key(model, "y") == Remove(ih("t0"), delete_files=False)
    assert _mode(model) is Mode.LIST and model.confirm is None


def test_capital_d_asks_with_the_path_that_will_be_deleted() -> None:
    model = _model()
    model.detail = dataclasses.replace(status("t0"), save_path="/srv/dl/")
    assert handle_key(model, "D") == FindSavePath(ih("t0"))  # the app asks where the data is
    assert model.confirm is not None
    assert model.confirm.kind is ConfirmKind.REMOVE_DATA
    assert model.confirm.path == "/srv/dl/t0"
    assert handle_key(model, "KEY_ESCAPE") is None
    assert _mode(model) is Mode.LIST
    handle_key(model, "D")
    assert handle_key(model, "Y") == Remove(ih("t0"), delete_files=True)


def test_capital_s_asks_then_shuts_down() -> None:
    model = _model()
    handle_key(model, "S")
    assert model.confirm is not None and model.confirm.kind is ConfirmKind.SHUTDOWN
    assert handle_key(model, "y") == Shutdown()


def test_the_prompt_edits_and_submits() -> None:
    model = _model()
    handle_key(model, "+")
    assert _mode(model) is Mode.PROMPT
    _press(model, *"abd", "KEY_LEFT", "c", "KEY_END", "e", "KEY_BACKSPACE", "KEY_HOME")
    assert model.prompt.text == "abcd"
    assert model.prompt.cursor == 0
    _press(model, "KEY_DELETE", "KEY_RIGHT", "KEY_RIGHT", "KEY_RIGHT")
    assert (model.prompt.text, model.prompt.cursor) == ("bcd", 3)
    handle_key(model, "magnet:?xt=paste")  # a paste arrives as one string
    assert model.prompt.text == "bcdmagnet:?xt=paste"
    assert handle_key(model, "KEY_ENTER") == Add("bcdmagnet:?xt=paste")
    assert _mode(model) is Mode.PROMPT  # the app closes it once the add worked


def test_the_prompt_keys_q_and_space_as_text_and_esc_cancels() -> None:
    model = _model()
    handle_key(model, "a")
    _press(model, "q", " ", "?")
    assert model.prompt.text == "q ?"
    assert handle_key(model, "KEY_ESCAPE") is None
    assert _mode(model) is Mode.LIST
    handle_key(model, "a")
    assert model.prompt.text == ""  # a new prompt starts empty


def test_an_error_stays_until_the_text_changes() -> None:
    model = _model()
    handle_key(model, "a")
    handle_key(model, "x")
    model.prompt.error = "no such file"
    handle_key(model, "KEY_LEFT")
    assert model.prompt.error == "no such file"
    handle_key(model, "y")
    assert model.prompt.error == ""


def test_tab_completes_at_the_end_of_the_text() -> None:
    model = _model()
    handle_key(model, "a")
    _press(model, *"/tm")
    handle_key(model, "KEY_TAB", lambda text: text + "p/")
    assert (model.prompt.text, model.prompt.cursor) == ("/tmp/", 5)
    handle_key(model, "KEY_LEFT")
    handle_key(model, "KEY_TAB", lambda text: text + "zzz")
    assert model.prompt.text == "/tmp/"


def test_an_empty_prompt_submitted_closes_it() -> None:
    model = _model()
    handle_key(model, "a")
    assert handle_key(model, "KEY_ENTER") is None
    assert _mode(model) is Mode.LIST


def test_the_agents_view_scrolls_as_far_as_its_agents_go() -> None:
    model = _model()
    agents = tuple(agent(f"peer-{i}", ServiceKind.PEER_AGENT) for i in range(30))
    model.apply(changes(agents=agents, revision=2), 0.0)
    handle_key(model, "A")
    _press(model, "j", "j", "KEY_PGDOWN", "k")
    assert model.detail_scroll == 11
    _press(model, *["KEY_PGDOWN"] * 5)
    assert model.detail_scroll == 30
    handle_key(model, "KEY_HOME")
    assert model.detail_scroll == 0
    handle_key(model, "A")
    assert _mode(model) is Mode.LIST
