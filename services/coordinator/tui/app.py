"""The terminal UI's loop: keys, the daemon polled, commands sent, frames drawn.

Strategy: one thread, one control client (plain blocking zmq: this process runs no gevent).
The loop waits for a key at most ``IDLE_WAKE`` seconds, asks the daemon what changed
(``WatchSession``) once a second and at once after a command, and in the detail view also asks
for that torrent's detail (``GetStatus(detail=True)``). A frame is rendered and drawn only when
something changed (``ViewModel.dirty``), and then only its changed lines are written.

Rules:
- A daemon that stops answering shows ``daemon not answering: retrying`` on the status line and
  is asked again a second later with a fresh client; never a traceback.
- A refused key or socket (``PermissionDeniedError``) ends the UI: its one line is the CLI's.
- ``q`` leaves the daemon running (exit 0); ``S`` then ``y`` shuts it down (exit 0).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import blessed

from torviz.shared.bus import (
    ControlFailed,
    EventLevel,
    GetStatus,
    Message,
    PauseTorrent,
    RemoveTorrent,
    ResumeTorrent,
    SessionChanges,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    TorrentAdded,
    VerifyTorrent,
    WatchSession,
)
from torviz.shared.errors import BusError, MetainfoError, TorvizError
from torviz.shared.runtime.control import ControlClient, PermissionDeniedError
from torviz.shared.types import InfoHash

from ..cli.daemon_target import DaemonTarget
from ..cli.sources import read_source
from .completion import complete_path
from .keys import (
    Add,
    Command,
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
from .render import list_rows, render
from .screen import Screen
from .view_model import Mode, ViewModel

__all__ = ["IDLE_WAKE", "POLL_INTERVAL", "DaemonLink", "run_tui"]

POLL_INTERVAL = 1.0
"""Seconds between two questions to the daemon."""
IDLE_WAKE = 0.25
"""The loop wakes at least this often (seconds) to notice a resize."""
REQUEST_TIMEOUT = 3.0
NOT_ANSWERING = "daemon not answering: retrying"


class DaemonLink:
    """The control client to the daemon, opened on first use and again after a failure."""

    def __init__(self, target: DaemonTarget, timeout: float = REQUEST_TIMEOUT) -> None:
        self.target = target
        self.timeout = timeout
        self._client: ControlClient | None = None
        # A daemon seen running whose socket is not there yet is starting: the first
        # connection waits for it (later ones fail at once, to say "not answering").
        self._starting = timeout if target.running else 0.0

    def request(self, message: Message) -> Message:
        """Send ``message``, return the reply.

        Raises:
            TorvizError: the daemon answered ``ControlFailed``.
            BusError: no answer (``DaemonUnreachableError``), or a malformed one; the client is
                closed and the next request opens a new one.
            PermissionDeniedError: the daemon refuses this client.
        """
        try:
            if self._client is None:
                client = ControlClient(
                    self.target.control,
                    timeout=self.timeout,
                    green=False,
                    curve=self.target.curve,
                    starting=self._starting,
                )
                self._starting = 0.0
                try:
                    client.hello()
                except BaseException:
                    client.close()
                    raise
                self._client = client
            reply = self._client.request(message)
        except BusError:
            self.close()
            raise
        if isinstance(reply, ControlFailed):
            raise TorvizError(reply.reason, reply.message)
        return reply

    def changes(self, since: int, events_after: int) -> SessionChanges:
        """What changed since revision ``since`` (a daemon that said hello speaks this
        protocol version, so it knows ``WatchSession``)."""
        reply = self.request(WatchSession(since=since, events_after=events_after))
        if not isinstance(reply, SessionChanges):
            raise BusError("unexpected_reply", f"the daemon answered {type(reply).__name__}")
        return reply

    def close(self) -> None:
        """Close the client (a new one is opened by the next request)."""
        if self._client is not None:
            self._client.close()
            self._client = None


class App:
    """The UI's state and loop."""

    def __init__(self, link: DaemonLink, screen: Screen, model: ViewModel) -> None:
        self.link = link
        self.screen = screen
        self.model = model
        self.down = False
        self.farewell = ""
        self.notice = ""
        """A line for the log once the daemon's own kept log is in (so it shows as newest)."""

    def run(self) -> int:
        """Run until ``q`` or a shutdown; returns the exit status."""
        self.draw()  # at once, before the daemon is asked anything
        next_poll = 0.0
        while True:
            if time.monotonic() >= next_poll:
                self.poll()
                next_poll = time.monotonic() + POLL_INTERVAL
            self.draw()
            timeout = max(0.0, min(IDLE_WAKE, next_poll - time.monotonic()))
            for key in self.screen.keys(timeout):
                command = handle_key(self.model, key, complete_path)
                if command is None:
                    continue
                status = self.execute(command)
                if status is not None:
                    return status
                next_poll = 0.0

    def draw(self) -> None:
        """Render and draw a frame when something changed."""
        model = self.model
        if self.screen.changed_size():
            model.dirty = True
        if not model.dirty:
            return
        width, height = self.screen.size
        model.fit_list(list_rows(width, height))
        self.screen.draw(render(model, width, height))
        model.dirty = False

    def poll(self) -> None:
        """Ask the daemon what changed (and the open detail)."""
        model = self.model
        try:
            changes = self.link.changes(model.revision, model.events_after)
            model.apply(changes, time.time())
            if model.mode is Mode.DETAIL and model.detail_hash is not None:
                self._poll_detail()
        except PermissionDeniedError:
            raise
        except (BusError, TorvizError) as exc:
            if not isinstance(exc, BusError) and model.mode is Mode.DETAIL:
                model.mode = Mode.LIST
                model.say(f"detail: {exc.message}", EventLevel.WARNING)
                return
            if not self.down:
                self.down = True
                model.resync()
                model.add_log(EventLevel.WARNING, f"{NOT_ANSWERING} ({exc.message})", time.time())
            model.say(NOT_ANSWERING, EventLevel.WARNING)
            return
        if self.down:
            self.down = False
            model.add_log(EventLevel.INFO, "the daemon answers again", time.time())
            model.say("")
        if self.notice:
            model.add_log(EventLevel.INFO, self.notice, time.time())
            model.say(self.notice)
            self.notice = ""

    def _poll_detail(self) -> None:
        model = self.model
        assert model.detail_hash is not None
        report = self.link.request(GetStatus(prefix=model.detail_hash.hex, detail=True))
        if isinstance(report, StatusReport):
            found = [t for t in report.torrents if t.info_hash == model.detail_hash]
            model.set_detail(found[0] if found else None)
            if not found:
                model.mode = Mode.LIST
                model.say("the torrent is gone", EventLevel.WARNING)

    def execute(self, command: Command) -> int | None:
        """Run ``command``; returns an exit status when the UI should end."""
        model = self.model
        match command:
            case Quit():
                return 0
            case Add(text=text):
                self._add(text)
                return None
            case OpenDetail():
                return None
            case FindSavePath(info_hash=ih):
                self._find_save_path(ih)
                return None
            case Shutdown():
                if self._send(ShutdownRequested(), "") and not self.down:
                    self.farewell = "the torviz daemon and its agents are shutting down"
                    return 0
                return None
        name = self._name(command.info_hash)
        match command:
            case Pause(info_hash=ih):
                self._send(PauseTorrent(info_hash=ih), f"paused {name}")
            case Resume(info_hash=ih):
                self._send(ResumeTorrent(info_hash=ih), f"resumed {name}")
            case Verify(info_hash=ih):
                self._send(VerifyTorrent(info_hash=ih), f"verifying {name}")
            case Remove(info_hash=ih, delete_files=delete):
                done = f"removed {name}" + (" and deleted its files" if delete else "")
                self._send(RemoveTorrent(info_hash=ih, delete_files=delete), done)
                if model.detail_hash == ih:
                    model.mode = Mode.LIST
        return None

    def _name(self, info_hash: InfoHash) -> str:
        row = self.model.rows.get(info_hash)
        return row.name if row is not None else info_hash.hex

    def _find_save_path(self, info_hash: InfoHash) -> None:
        """Name the data's path in the question before deleting it (save path / name)."""
        model = self.model
        try:
            report = self.link.request(GetStatus(prefix=info_hash.hex))
        except PermissionDeniedError:
            raise
        except (BusError, TorvizError):
            return  # the question keeps the torrent's name
        found = [t for t in getattr(report, "torrents", ()) if t.info_hash == info_hash]
        confirm = model.confirm
        if found and confirm is not None and confirm.info_hash == info_hash:
            path = found[0].save_path.rstrip("/") + "/" + found[0].name
            model.confirm = dataclasses.replace(confirm, path=path)
            model.dirty = True

    def _send(self, message: Message, done: str) -> bool:
        """Send a command; the status line says what happened. Returns whether it worked."""
        try:
            reply = self.link.request(message)
        except PermissionDeniedError:
            raise
        except BusError:
            self.model.say(NOT_ANSWERING, EventLevel.WARNING)
            return False
        except TorvizError as exc:
            self.model.say(exc.message, EventLevel.ERROR)
            return False
        if isinstance(reply, ShutdownAccepted) or done:
            self.model.say(done)
        return True

    def _add(self, text: str) -> None:
        model = self.model
        try:
            text = text.strip()
            if not text.lower().startswith("magnet:"):
                text = os.path.expanduser(text)  # ~/x.torrent, as the completion offers it
            request = read_source(text).request("")
            reply = self.link.request(request)
        except PermissionDeniedError:
            raise
        except BusError:
            model.prompt.error = NOT_ANSWERING
            return
        except (TorvizError, MetainfoError) as exc:
            model.prompt.error = exc.message
            return
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            model.prompt.error = f"{where}{exc.strerror or exc}"
            return
        model.mode = Mode.LIST
        if isinstance(reply, TorrentAdded):
            model.selected = reply.info_hash
            model.say(f"added {reply.name}")


def run_tui(target: DaemonTarget, notice: str | None) -> int:
    """Run the terminal UI on the daemon at ``target`` until the user quits.

    Args:
        target: the daemon to show and command.
        notice: a line to show at start (e.g. that a daemon was started in the background).

    Returns:
        The exit status: 0 after ``q`` or a shutdown.

    Raises:
        PermissionDeniedError: the daemon refuses this client (after the terminal is restored).
        TorvizError: ``not_a_terminal``: stdin or stdout is not a terminal.
    """
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise TorvizError(
            "not_a_terminal", "the terminal UI needs a terminal (its stdin and stdout are not one)"
        )
    model = ViewModel(home=os.path.expanduser("~"))
    link = DaemonLink(target)
    term = blessed.Terminal()
    app = App(link, Screen(term), model)
    if notice:
        model.say(notice)
        app.notice = notice
    try:
        with app.screen:
            status = app.run()
    except KeyboardInterrupt:
        status = 130
    finally:
        link.close()
    if app.farewell:
        print(app.farewell)
    return status
