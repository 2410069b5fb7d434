"""Another local user for tests of who may reach a socket: ``nobody``, in a forked child.

Strategy: tests run as root (here and in CI), and root bypasses file modes, so "another user
cannot connect" needs a process of another user. ``OtherUser.call`` forks, and the child drops
to ``nobody`` (``setgroups([])``, ``setgid``, ``setuid``), leaves for ``/`` with a bare
environment (``HOME=/nonexistent``: none of root's config or keys), runs a function with its
stdout and stderr on pipes, and exits with its return value. Forking rather than starting an
interpreter matters: the interpreter may live in root's private home, which ``nobody`` cannot
enter; the forked child already has it loaded. So everything the function imports must be
imported before the fork (``OtherUser.call`` takes a ``warm_up`` to do that).

Rules:
- ``other_user()`` skips when the tests do not run as root; under ``CI=true`` that is a
  failure instead, since CI runs as root.
- The child is bounded by a timeout (then killed); its output is read whole, without blocking
  on one pipe while the other fills.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import selectors
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import pytest

__all__ = ["OtherUser", "Outcome", "other_user"]

_TIMEOUT = 30.0
_CHILD_FAILED = 99


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a function run as another user returned and printed."""

    code: int
    stdout: str
    stderr: str


def _child(uid: int, gid: int, function: Callable[[], int], out: int, err: int) -> NoReturn:
    code = _CHILD_FAILED
    try:
        os.dup2(out, 1)
        os.dup2(err, 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 (the process ends here)
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        os.chdir("/")
        os.environ.clear()
        os.environ.update({"HOME": "/nonexistent", "PATH": "/usr/bin:/bin"})
        code = function()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else _CHILD_FAILED
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@dataclass(frozen=True, slots=True)
class OtherUser:
    """An unprivileged user (``nobody``) that functions can run as."""

    name: str
    uid: int
    gid: int

    def call(
        self,
        function: Callable[[], int],
        *,
        warm_up: Callable[[], object] | None = None,
        timeout: float = _TIMEOUT,
    ) -> Outcome:
        """Run ``function`` in a child process of this user; its return value is the exit code.

        Args:
            function: runs in the child; what it prints is captured.
            warm_up: runs here first, as this process's user, to import what ``function``
                needs (the child may not be able to read the interpreter's files).
            timeout: seconds before the child is killed (the outcome then says so).
        """
        if warm_up is not None:
            warm_up()
        sys.stdout.flush()
        sys.stderr.flush()
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(out_read)
            os.close(err_read)
            _child(self.uid, self.gid, function, out_write, err_write)
        os.close(out_write)
        os.close(err_write)
        chunks: dict[int, list[bytes]] = {out_read: [], err_read: []}
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            for fd in chunks:
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map() and time.monotonic() < deadline:
                for key, _ in selector.select(max(0.0, deadline - time.monotonic())):
                    data = os.read(key.fd, 65536)
                    if data:
                        chunks[key.fd].append(data)
                    else:
                        selector.unregister(key.fd)
            timed_out = bool(selector.get_map())
        if timed_out:
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(out_read)
        os.close(err_read)
        stderr = b"".join(chunks[err_read]).decode(errors="replace")
        if timed_out:
            stderr += f"\n(killed after {timeout} s)"
        return Outcome(
            os.waitstatus_to_exitcode(status), b"".join(chunks[out_read]).decode(), stderr
        )


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{reason} (CI=true: CI runs as root, so this is a failure)")
    pytest.skip(reason)


def other_user() -> OtherUser:
    """``nobody``; skips when not root (fails under CI=true)."""
    if os.geteuid() != 0:
        _unavailable("running a process as another user needs root")
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        return OtherUser("nobody", 65534, 65534)
    return OtherUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
