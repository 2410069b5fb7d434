"""Reference programs as child processes of the test (or benchmark) process.

Strategy: every reference program runs as its own process, spoken to only through its stdout
(one JSON object per line, read by a thread here: the test process is not gevent-patched) and
signals. `ManagedProcess` is that plumbing; `testing/swarm.py` drives libtorrent peers with it
and `testing/opentracker.py` its tracker.

Rules:
- Every process is stopped: by its owner (`ManagedProcess.stop`), else by `kill_leftovers()`
  at session end or interpreter exit. Children also exit by themselves when their stdin
  closes, which covers a test process killed without any cleanup.
- Every wait is bounded and fails with a `SwarmError` whose message names the process, what
  was awaited and the tail of its stderr.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from torviz.shared.errors import TorvizError

__all__ = ["ManagedProcess", "StopOnExit", "SwarmError", "kill_leftovers", "process_exists"]

_MAX_LINE = 64 * 1024
_MAX_EVENTS = 2000
_STDERR_TAIL_LINES = 60
_STOP_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 2.0


class StopOnExit:
    """A context manager whose exit calls ``stop()``: the test servers and peers, each stopped
    however the ``with`` block ends."""

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SwarmError(TorvizError):
    """A reference process failed to start, reported an error, exited or timed out.

    Reasons: ``timeout``, ``process_error``, ``process_exited``, ``no_free_port``,
    ``bad_event``, ``not_ready``, ``tracker_failed``.
    """


_live_lock = threading.Lock()
_live: dict[int, ManagedProcess] = {}


def kill_leftovers() -> list[str]:
    """Stop every child process still running; returns their names (empty when all was clean).

    Registered with atexit and called by the session fixture: a safety net behind the fixtures
    that normally stop their own processes.
    """
    with _live_lock:
        leftovers = list(_live.values())
    for process in leftovers:  # all at once: each may take a second to shut down
        process.request_stop()
    for process in reversed(leftovers):
        process.stop(timeout=2.0)
    return [p.name for p in leftovers]


atexit.register(kill_leftovers)


class ManagedProcess:
    """A child process whose stdout is a stream of JSON-object lines, read by a thread.

    The child gets a pipe as stdin and is expected to exit when it reaches EOF. The last event
    of each kind is kept (plus a bounded history), and waiters are woken on every event.

    Args:
        name: shown in every error message.
        argv: the command line.
        cwd: working directory of the child.
        env: extra environment variables for the child.
        log_path: where the child's stderr is copied in full (optional).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self._cond = threading.Condition()
        self._last: dict[str, dict[str, Any]] = {}
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=_MAX_EVENTS)
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._eof = False
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.popen.pid
        with _live_lock:
            _live[self.pid] = self
        self._log = log_path.open("ab") if log_path is not None else None
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._threads = [
            threading.Thread(target=reader, args=(stream,), name=f"{name}-{label}", daemon=True)
            for reader, stream, label in (
                (self._read_stdout, self.popen.stdout, "stdout"),
                (self._read_stderr, self.popen.stderr, "stderr"),
            )
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self, stream: IO[bytes]) -> None:
        while line := stream.readline(_MAX_LINE):
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                event = {"event": "raw", "line": line.decode("utf-8", "replace").rstrip()}
            with self._cond:
                self._last[event["event"]] = event
                self._history.append(event)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        while line := stream.readline(_MAX_LINE):
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            with self._cond:
                self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr, joined by ' | ' (for error messages)."""
        with self._cond:
            return " | ".join(self._stderr)

    def events(self) -> list[dict[str, Any]]:
        """A copy of the retained events, oldest first."""
        with self._cond:
            return list(self._history)

    def last(self, kind: str) -> dict[str, Any] | None:
        """The most recent event of `kind`, if any."""
        with self._cond:
            return self._last.get(kind)

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def wait_event(
        self,
        kind: str,
        timeout: float,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Wait until the latest event of `kind` exists (and satisfies `predicate`).

        Raises:
            SwarmError: ``process_error`` when the child reports an error event,
                ``process_exited`` when its stdout ends first, ``timeout`` after `timeout` s.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                event = self._last.get(kind)
                if event is not None and (predicate is None or predicate(event)):
                    return event
                error = self._last.get("error")
                if error is not None and kind != "error":
                    raise SwarmError(
                        "process_error",
                        f"{self.name} reported {error.get('reason')}: {error.get('message')}; "
                        f"stderr: {' | '.join(self._stderr)}",
                    )
                if self._eof:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SwarmError(
                        "timeout",
                        f"{self.name}: no {kind!r} event within {timeout:.1f} s; "
                        f"stderr: {' | '.join(self._stderr)}",
                    )
                self._cond.wait(remaining)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1.0)
        raise SwarmError(
            "process_exited",
            f"{self.name} exited with code {self.popen.poll()} before {kind!r}; "
            f"stderr: {self.stderr_tail()}",
        )

    def send_signal(self, signum: int) -> None:
        """Signal the child if it still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def request_stop(self) -> None:
        """Ask the child to exit (SIGTERM and stdin EOF) without waiting for it."""
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.popen.terminate()
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> int | None:
        """Terminate the child (SIGTERM and stdin EOF), kill it after `timeout` s, reap it.

        Safe to call more than once. Returns the exit code (None if it could not be reaped).
        """
        self.request_stop()
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=_STOP_TIMEOUT_S)
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT_S)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr, self._log):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with _live_lock:
            _live.pop(self.pid, None)
        return self.popen.poll()


def process_exists(pid: int) -> bool:
    """Whether `pid` names a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"
