"""A daemon started in the background, for a command that needs one running (the terminal UI).

Strategy: ``start_background`` runs the daemon as ``start`` would, with the same defaults (its
``--state-dir`` and ``--config`` passed on, nothing else), detached from the caller: its own
session (no SIGHUP when the terminal closes, no Ctrl-C from it), stdin /dev/null, stdout and
stderr appended to ``STATE_DIR/daemon.log`` (its agents inherit them, so every process of the
daemon logs there). ``BackgroundDaemon.wait_ready`` then waits, bounded, until a probe the
caller gives (a hello over the control endpoint) succeeds; a daemon that exits first, or never
answers, is a ``TorvizError`` whose message is the last line of its log.

Rules: the daemon's process is the one started here (the daemon's entry point, run directly:
no CLI in between), so its pid is the daemon's; nothing here imports zmq (the probe does, in
the caller); the state directory is made private (0700) before the log is opened in it, as
the daemon would make it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torviz.shared.errors import TorvizError
from torviz.shared.runtime.ipc import make_private_dir

from .locations import default_state_dir

__all__ = ["LOG_FILE", "READY_TIMEOUT", "BackgroundDaemon", "last_log_line", "start_background"]

LOG_FILE = "daemon.log"
"""Where a background daemon appends its output, in its state directory."""
READY_TIMEOUT = 20.0
"""Seconds a background daemon gets to answer."""
_POLL = 0.1
_MAX_LOG_TAIL = 64 * 1024
_MAX_LINE = 300
_DAEMON_ENTRY = __package__ or "torviz.services.coordinator.daemon"  # its ``__main__``


def last_log_line(log: Path) -> str:
    """The last non-empty line of ``log`` (at most its last 64 KiB read), or a placeholder."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - _MAX_LOG_TAIL))
            tail = handle.read(_MAX_LOG_TAIL)
    except OSError:
        return f"no log at {log}"
    lines = [line.strip() for line in tail.decode("utf-8", "replace").splitlines()]
    found = next((line for line in reversed(lines) if line), "")
    if not found:
        return f"nothing in {log}"
    return found if len(found) <= _MAX_LINE else found[: _MAX_LINE - 1] + "…"


@dataclass
class BackgroundDaemon:
    """A daemon this process started in the background."""

    process: subprocess.Popen[bytes]
    log: Path
    """Its log file (``STATE_DIR/daemon.log``)."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(
        self,
        probe: Callable[[], bool],
        timeout: float = READY_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Wait until ``probe()`` says the daemon answers.

        Args:
            probe: one bounded attempt to reach the daemon; True once it answered.
            timeout: seconds to wait in all.
            clock: a monotonic clock.

        Raises:
            TorvizError: ``daemon_not_started``: it exited, or did not answer in ``timeout``
                seconds (then it is stopped); the message ends with the last line of its log.
        """
        deadline = clock() + timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise TorvizError(
                    "daemon_not_started",
                    f"the daemon exited ({code}) at start: {last_log_line(self.log)}",
                )
            if probe():
                return
            if clock() > deadline:
                self.stop()  # started by us and never answered: leave nothing behind
                raise TorvizError(
                    "daemon_not_started",
                    f"the daemon did not answer within {timeout:g} s "
                    f"(pid {self.pid}, log {self.log}): {last_log_line(self.log)}",
                )
            time.sleep(_POLL)

    def stop(self, timeout: float = 10.0) -> None:
        """End it: SIGTERM (it stops its agents), then SIGKILL after ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)


def start_background(state_dir: str | None, config_file: str | None) -> BackgroundDaemon:
    """Start ``torviz-coordinator start`` in the background; does not wait for it.

    Args:
        state_dir: its ``--state-dir`` (None: the default state directory).
        config_file: its ``--config`` (None: the default config file, if any).

    Returns:
        The started daemon, to wait for (``wait_ready``).

    Raises:
        OSError: the state directory or the log cannot be made, or the interpreter not run.
        ConfigError: the state directory is another user's, or not a folder.
    """
    directory = Path(state_dir) if state_dir else default_state_dir()
    make_private_dir(directory)
    log = directory / LOG_FILE
    argv = [sys.executable, "-m", _DAEMON_ENTRY, "start"]
    if state_dir:
        argv += ["--state-dir", state_dir]
    if config_file:
        argv += ["--config", config_file]
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=descriptor,
            stderr=descriptor,
            start_new_session=True,
        )
    finally:
        os.close(descriptor)
    return BackgroundDaemon(process, log)
