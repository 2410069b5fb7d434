"""The UI's loop with a stand-in terminal: commands sent, answers and failures shown, frames
drawn only when something changed; and the link to a real daemon."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.cli.test_magnet_input import TORRENT, TORRENT_HASH
from tests.support.daemon import TorvizDaemon, running_daemon
from torviz.services.coordinator.cli.daemon_target import DaemonTarget, daemon_target
from torviz.services.coordinator.tui.app import NOT_ANSWERING, App, DaemonLink, run_tui
from torviz.services.coordinator.tui.view_model import Mode, ViewModel
from torviz.shared.bus import (
    AddTorrent,
    ControlFailed,
    GetStatus,
    Message,
    PauseTorrent,
    ResumeTorrent,
    SessionChanges,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    TorrentAdded,
    TorrentPaused,
    TorrentState,
    WatchSession,
)
from torviz.shared.errors import BusError, TorvizError

from .fakes import FakeLink, FakeScreen
from .records import changes, event, ih, row, status


def _app(link: FakeLink, screen: FakeScreen, model: ViewModel | None = None) -> App:
    return App(cast(Any, link), cast(Any, screen), model or ViewModel())


def test_q_quits_with_0_and_only_changed_frames_are_drawn() -> None:
    link = FakeLink()
    link.answer = changes(row("a"), complete=True)
    screen = FakeScreen([], [], [], ["q"])
    app = _app(link, screen)
    assert app.run() == 0
    assert len(screen.frames) == 2  # the first frame, then the one with the row; idle: none
    assert any("a" in t and "downloading" in t for t in screen.text())


def test_a_daemon_not_answering_is_said_once_and_its_return_too() -> None:
    link = FakeLink()
    link.down = BusError("no_daemon", "gone")
    app = _app(link, FakeScreen())
    app.poll()
    app.poll()
    assert app.model.message == NOT_ANSWERING
    assert [line.text for line in app.model.log] == [f"{NOT_ANSWERING} (gone)"]
    link.down = None
    app.poll()
    assert app.model.message == ""
    assert [line.text for line in app.model.log][-1] == "the daemon answers again"


def test_space_pauses_and_the_daemon_is_asked_again_at_once() -> None:
    link = FakeLink(lambda m: TorrentPaused(info_hash=ih("a")))
    link.answer = changes(row("a"), complete=True)
    screen = FakeScreen([" "], ["q"])
    app = _app(link, screen)
    assert app.run() == 0
    assert link.sent == [PauseTorrent(info_hash=ih("a"))]
    assert link.polls == 2
    assert "paused a" in screen.text()[-2]


def test_a_refused_command_shows_the_daemons_reason() -> None:
    def refuse(message: Message) -> Message:
        raise TorvizError("not_paused", "a is not paused")

    link = FakeLink(refuse)
    app = _app(link, FakeScreen())
    app.model.apply(changes(row("a", TorrentState.PAUSED), complete=True), 0.0)
    assert app.execute(app_key(app, " ")) is None
    assert link.sent == [ResumeTorrent(info_hash=ih("a"))]
    assert app.model.message == "a is not paused"


def app_key(app: App, key: str) -> Any:
    from torviz.services.coordinator.tui.keys import handle_key

    return handle_key(app.model, key)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("/nonexistent/x.torrent", "/nonexistent/x.torrent: No such file or directory"),
        ("magnet:?xt=urn:btih:nothex", "not a usable magnet link"),
    ],
)
def test_a_bad_input_stays_in_the_prompt_with_its_error(text: str, error: str) -> None:
    link = FakeLink()
    app = _app(link, FakeScreen())
    app_key(app, "+")
    command = app_key(app, text)
    assert command is None
    app.execute(app_key(app, "KEY_ENTER"))
    assert app.model.mode is Mode.PROMPT
    assert app.model.prompt.text == text
    assert app.model.prompt.error.startswith(error)
    assert link.sent == []


def test_a_file_the_daemon_refuses_shows_its_reason_in_the_prompt(tmp_path: Path) -> None:
    junk = tmp_path / "junk.torrent"
    junk.write_bytes(b"not bencode")

    def refuse(message: Message) -> Message:
        return_error = ControlFailed(reason="bad_metainfo", message="not a .torrent: junk")
        raise TorvizError(return_error.reason, return_error.message)

    app = _app(FakeLink(refuse), FakeScreen())
    app_key(app, "a")
    app_key(app, str(junk))
    app.execute(app_key(app, "KEY_ENTER"))
    assert app.model.mode is Mode.PROMPT
    assert app.model.prompt.error == "not a .torrent: junk"


def test_an_added_torrent_closes_the_prompt_and_is_selected(tmp_path: Path) -> None:
    path = tmp_path / "example.torrent"
    path.write_bytes(TORRENT)
    link = FakeLink(lambda m: TorrentAdded(info_hash=TORRENT_HASH, name="Example"))
    app = _app(link, FakeScreen())
    app_key(app, "a")
    app_key(app, str(path))
    app.execute(app_key(app, "KEY_ENTER"))
    assert link.sent == [AddTorrent(metainfo=TORRENT, download_dir="")]
    assert app.model.mode is Mode.LIST
    assert app.model.selected == TORRENT_HASH
    assert app.model.message == "added Example"


def test_shutdown_after_yes_exits_0_and_says_so() -> None:
    link = FakeLink(lambda m: ShutdownAccepted())
    app = _app(link, FakeScreen(["S", "n", "S", "y"]))
    assert app.run() == 0
    assert link.sent == [ShutdownRequested()]
    assert "shutting down" in app.farewell


def test_the_detail_view_asks_for_its_torrent() -> None:
    detailed = status("movie")
    link = FakeLink(lambda m: StatusReport(torrents=(detailed,), agents=()))
    link.answer = changes(row("movie"), complete=True)
    screen = FakeScreen(["KEY_ENTER"], ["q", "q"], size=(120, 40))
    app = _app(link, screen)
    assert app.run() == 0
    assert GetStatus(prefix=ih("movie").hex, detail=True) in link.sent
    assert app.model.detail == detailed


def test_remove_with_data_names_the_path_it_deletes() -> None:
    detailed = status("movie")
    link = FakeLink(lambda m: StatusReport(torrents=(detailed,), agents=()))
    app = _app(link, FakeScreen())
    app.model.apply(changes(row("movie"), complete=True), 0.0)
    app.execute(app_key(app, "D"))
    assert link.sent == [GetStatus(prefix=ih("movie").hex)]
    assert app.model.confirm is not None
    assert app.model.confirm.path == "/srv/dl/movie"


# --- the link, against the real daemon -----------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    with running_daemon(tmp_path) as running:
        yield running


def test_the_ui_adds_pauses_and_sees_the_daemon_go(daemon: TorvizDaemon, tmp_path: Path) -> None:
    path = tmp_path / "example.torrent"
    path.write_bytes(TORRENT)
    target = daemon_target(argparse.Namespace(state_dir=str(daemon.state_dir), control=None))
    link = DaemonLink(target, timeout=5.0)
    app = App(link, cast(Any, FakeScreen()), ViewModel())
    try:
        app.poll()
        assert app.model.connected and app.model.rows == {}
        app_key(app, "+")
        app_key(app, str(path))
        app.execute(app_key(app, "KEY_ENTER"))
        assert app.model.message == "added Example", app.model.prompt.error
        app.poll()
        assert [r.name for r in app.model.rows.values()] == ["Example"]
        assert any("Example: added" in line.text for line in app.model.log)
        app.execute(app_key(app, " "))
        app.poll()
        assert app.model.rows[TORRENT_HASH].state is TorrentState.PAUSED
        assert isinstance(link.request(WatchSession(0, 0)), SessionChanges)
        daemon.stop()
        app.poll()
        assert app.model.message == NOT_ANSWERING
    finally:
        link.close()


def test_the_notice_is_the_newest_log_line_once_the_daemons_log_is_in() -> None:
    link = FakeLink()
    link.answer = changes(events=(event(1, "daemon started"), event(2, "agent joined")))
    app = _app(link, FakeScreen())
    app.notice = "started a torviz daemon in the background (pid 7); q leaves it running"
    link.down = BusError("no_daemon", "not yet")
    app.poll()
    assert app.notice  # kept until the daemon answers
    link.down = None
    app.poll()
    assert [line.text for line in app.model.log][-1].startswith("started a torviz daemon")
    assert app.notice == ""
    app.poll()
    assert sum("started a torviz" in line.text for line in app.model.log) == 1


def test_a_daemon_that_went_away_is_asked_for_everything_when_it_answers_again() -> None:
    link = FakeLink()
    link.answer = changes(row("a"), revision=5, complete=True, events=(event(3, "x"),))
    app = _app(link, FakeScreen())
    app.poll()
    assert (app.model.revision, app.model.events_after) == (5, 3)
    link.down = BusError("no_daemon", "gone")
    app.poll()
    assert (app.model.revision, app.model.events_after) == (0, 0)


def test_without_a_terminal_the_ui_says_so_in_one_line(tmp_path: Path) -> None:
    target = DaemonTarget(f"ipc://{tmp_path}/control.sock", None, False)
    with open(tmp_path / "out", "w") as out, pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdout", out)
        with pytest.raises(TorvizError, match="needs a terminal"):
            run_tui(target, None)
