"""A real terminal for tests: a private tmux server running one command in a window of a given
size, driven by keys and pastes and read back as text.

Strategy: each ``Tmux`` starts its own server (``tmux -L NAME -f /dev/null``: no user config, a
socket of its own) with one session whose window runs the command (``TERM=xterm-256color``, the
status line off, so the screen is the command's alone). Keys go in with ``send-keys``, a paste
with ``set-buffer`` + ``paste-buffer -p`` (bracketed, as a terminal pastes, when the program
asked for it), the screen comes back with ``capture-pane -p`` (text, no colours), a resize with
``resize-window``. The pane's shell runs the command and writes its exit status to a file
(tmux's own ``#{pane_dead_status}`` is often lost); ``remain-on-exit`` keeps the window and its
last screen after the command exits.

Rules: every wait is bounded and fails with an ``AssertionError`` that shows the screen;
``close`` (or leaving the ``with`` block) kills the server and with it the command, never
raising; the command's output stays on screen until then.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = ["TMUX", "Tmux", "require_tmux", "tmux_missing"]

TMUX = "tmux"
_COMMAND_TIMEOUT = 10.0
_POLL = 0.1
_SESSION = "tv"
_serial = itertools.count(1)
# The pane runs a shell that runs the command and writes its exit status to a file: tmux 3.3
# often loses it (``#{pane_dead_status}`` stays empty when the pane's terminal closes before
# the process is reaped).
_WRAPPER = 'status=$1; shift; "$@"; echo $? > "$status.tmp"; mv "$status.tmp" "$status"'

Predicate = Callable[[str], bool]


def tmux_missing() -> str:
    """Why tmux cannot be used here ('' when it can)."""
    return "" if shutil.which(TMUX) else "tmux is not installed (Debian package tmux)"


def require_tmux() -> None:
    """Skip the calling test when tmux is missing; under CI=true (CI installs it), fail it."""
    import pytest  # only tests call this

    missing = tmux_missing()
    if missing and os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{missing} (CI=true: CI installs it, so this is a failure)")
    if missing:
        pytest.skip(missing)


class Tmux:
    """A private tmux server with one window running ``command``.

    Args:
        command: the program and its arguments.
        width: the window's columns.
        height: the window's lines.
        env: more environment variables for the command (on top of this process's own).
        cwd: the command's working directory.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        width: int = 120,
        height: int = 40,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = f"torviz-test-{os.getpid()}-{next(_serial)}"
        self._env = {**os.environ, **(env or {}), "TERM": "xterm-256color"}
        self._env.pop("TMUX", None)  # a test run inside tmux still gets a server of its own
        self._folder = Path(tempfile.mkdtemp(prefix="tv-tmux-"))
        self._status_file = self._folder / "status"
        self._tmux(
            "set-option", "-g", "default-terminal", "xterm-256color", ";",
            "set-option", "-g", "status", "off", ";",
            "set-option", "-g", "remain-on-exit", "on", ";",
            "set-option", "-g", "history-limit", "0", ";",
            "new-session", "-d", "-s", _SESSION, "-x", str(width), "-y", str(height),
            *(["-c", cwd] if cwd else []),
            "--", "sh", "-c", _WRAPPER, "sh", str(self._status_file), *command,
        )  # fmt: skip

    def _tmux(self, *args: str) -> str:
        """Run one tmux client command against this server; returns its stdout.

        Raises:
            AssertionError: tmux failed (its stderr).
        """
        result = subprocess.run(
            [TMUX, "-L", self.name, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            env=self._env,
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args[:2])}: {result.stderr.strip()}")
        return result.stdout

    def send_keys(self, *keys: str) -> None:
        """Press keys, in tmux's names (``Enter``, ``Escape``, ``Space``, ``Up``, ``C-c``)."""
        self._tmux("send-keys", "-t", _SESSION, *keys)

    def type_text(self, text: str) -> None:
        """Type ``text`` literally, one key per character."""
        self._tmux("send-keys", "-t", _SESSION, "-l", "--", text)

    def paste(self, text: str) -> None:
        """Paste ``text`` as a terminal pastes it (bracketed if the program asked for it)."""
        self._tmux("set-buffer", "-b", "paste", "--", text)
        self._tmux("paste-buffer", "-p", "-d", "-b", "paste", "-t", _SESSION)

    def screen(self) -> str:
        """The visible screen as text: one line per row, trailing blanks removed."""
        return self._tmux("capture-pane", "-p", "-t", _SESSION)

    def lines(self) -> list[str]:
        """The visible screen, exactly one entry per row of the window."""
        captured = self.screen().split("\n")
        height = self.size()[1]
        return (captured + [""] * height)[:height]

    def size(self) -> tuple[int, int]:
        """The window's (columns, lines)."""
        width, height = self._display("#{pane_width} #{pane_height}").split()
        return int(width), int(height)

    def resize(self, width: int, height: int) -> None:
        """Resize the window (the program gets SIGWINCH)."""
        self._tmux("resize-window", "-t", _SESSION, "-x", str(width), "-y", str(height))

    def _display(self, text: str) -> str:
        return self._tmux("display-message", "-p", "-t", _SESSION, text).strip()

    def exit_status(self) -> int | None:
        """The command's exit status (minus the signal that ended it), or None while it runs."""
        try:
            written = self._status_file.read_text()
        except OSError:
            return None
        code = int(written)
        return code - 256 if code > 128 else code  # sh tells a signal as 128 + its number

    def pid(self) -> int:
        """The command's process id (a child of the pane's shell).

        Raises:
            AssertionError: it is not running.
        """
        shell = int(self._display("#{pane_pid}"))
        try:
            children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        except OSError:
            children = []
        if not children:
            raise AssertionError("the command is not running")
        return int(children[0])

    def wait_for(self, what: str | re.Pattern[str] | Predicate, timeout: float = 10.0) -> str:
        """Wait until the screen shows ``what`` (text, a regular expression, or a predicate on
        the screen's text); returns that screen.

        Raises:
            AssertionError: not within ``timeout`` seconds (with the last screen).
        """
        if isinstance(what, str):
            text = what
            predicate: Predicate = lambda screen: text in screen  # noqa: E731
        elif isinstance(what, re.Pattern):
            pattern = what
            predicate = lambda screen: pattern.search(screen) is not None  # noqa: E731
        else:
            predicate = what
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the screen never showed {what!r}:\n{screen}")
            time.sleep(_POLL)

    def wait_exit(self, timeout: float = 10.0) -> int:
        """Wait for the command to exit; returns its exit status.

        Raises:
            AssertionError: it still runs after ``timeout`` seconds (with the screen).
        """
        deadline = time.monotonic() + timeout
        while True:
            status = self.exit_status()
            if status is not None:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"the command did not exit:\n{self.screen()}")
            time.sleep(_POLL)

    def close(self) -> None:
        """Kill the server and the command with it; never raises."""
        with contextlib.suppress(AssertionError, OSError, subprocess.SubprocessError):
            self._tmux("kill-server")
        shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
