"""A daemon started in the background (for ``tui``): detached, logging to its state directory,
waited for until it answers; one that cannot start is one line naming why, and exit 1.

Real processes: the daemon and its agents, stopped by every test (shutdown, else SIGTERM, else
SIGKILL, through ``descendants``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import COORDINATOR, descendants
from torviz.services.coordinator.cli.commands.tui import answers, ensure_daemon
from torviz.services.coordinator.cli.daemon_target import daemon_target
from torviz.services.coordinator.daemon.background import (
    BackgroundDaemon,
    last_log_line,
    start_background,
)
from torviz.shared.errors import TorvizError

CONFIG = """
[coordinator]
download_dir = "{downloads}"

[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
"""


@pytest.fixture
def work() -> Iterator[Path]:
    """A short folder (ipc socket paths are bounded) with a config and a download folder."""
    with tempfile.TemporaryDirectory(prefix="tv-bg-", dir="/tmp") as path:
        folder = Path(path)
        (folder / "dl").mkdir()
        (folder / "config.toml").write_text(CONFIG.format(downloads=folder / "dl"))
        yield folder


def _pid_of(state: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((state / "daemon.json").read_text())
        if isinstance(info, dict) and isinstance(info.get("pid"), int):
            return int(info["pid"])
    return 0


@pytest.fixture
def cleanup() -> Iterator[list[int]]:
    """Pids of daemons a test started; each one and its agents are gone afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        children = descendants(pid)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        for process in {pid, *children}:
            with contextlib.suppress(OSError):
                os.kill(process, signal.SIGKILL)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COORDINATOR, *args], capture_output=True, text=True, timeout=30, check=False
    )


def _args(work: Path, config: str = "config.toml") -> argparse.Namespace:
    return argparse.Namespace(
        control=None,
        state_dir=str(work / "state"),
        config=str(work / config),
        keys=None,
        key_name=None,
    )


def test_the_last_log_line_is_named(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    assert "no log" in last_log_line(log)
    log.write_text("first\nsecond: the reason\n\n  \n")
    assert last_log_line(log) == "second: the reason"
    log.write_text("x" * 1000 + "\n")
    assert len(last_log_line(log)) == 300
    log.write_text("")
    assert "nothing in" in last_log_line(log)


def test_a_background_daemon_is_detached_answers_and_stops(work: Path, cleanup: list[int]) -> None:
    state = work / "state"
    daemon = start_background(str(state), str(work / "config.toml"))
    cleanup.append(daemon.pid)
    daemon.wait_ready(lambda: answers(daemon_target(_args(work))))
    assert _pid_of(state) == daemon.pid  # the daemon itself, no CLI process in between
    assert os.getsid(daemon.pid) == daemon.pid  # its own session: no SIGHUP from a terminal
    assert os.readlink(f"/proc/{daemon.pid}/fd/0") == "/dev/null"
    log = state / "daemon.log"
    assert os.readlink(f"/proc/{daemon.pid}/fd/2") == str(log)
    assert os.stat(state).st_mode & 0o777 == 0o700
    assert "started" in log.read_text()  # the agents log there too ("started peer_agent-...")
    status = _cli("status", "--state-dir", str(state), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["torrents"] == []
    assert _cli("shutdown", "--state-dir", str(state)).returncode == 0
    assert daemon.process.wait(timeout=30) == 0


def test_ensure_daemon_starts_one_only_when_none_runs(work: Path, cleanup: list[int]) -> None:
    args = _args(work)
    target, notice = ensure_daemon(args)
    pid = _pid_of(work / "state")
    cleanup.append(pid)
    assert notice == (f"started a torviz daemon in the background (pid {pid}); q leaves it running")
    assert answers(target)
    again, second = ensure_daemon(args)
    assert second is None
    assert again.control == target.control
    assert _pid_of(work / "state") == pid
    assert _cli("shutdown", "--state-dir", str(work / "state")).returncode == 0


def test_a_daemon_that_cannot_start_is_one_line_with_its_log(work: Path) -> None:
    (work / "bad.toml").write_text("[coordinator]\nno_such_key = 1\n")
    started = time.monotonic()
    result = _cli("tui", "--state-dir", str(work / "state"), "--config", str(work / "bad.toml"))
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "the daemon exited (2) at start" in lines[0]
    assert "no_such_key" in lines[0]  # the log's last line: the daemon's own reason
    assert "no_such_key" in (work / "state" / "daemon.log").read_text()
    assert not (work / "state" / "daemon.json").exists()


def test_a_daemon_that_never_answers_is_stopped(tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    log.write_text("still starting\n")
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        daemon = BackgroundDaemon(process, log)
        ticks = iter(range(100))
        with pytest.raises(TorvizError, match=r"did not answer within 3 s.*still starting"):
            daemon.wait_ready(lambda: False, timeout=3, clock=lambda: float(next(ticks)))
        assert process.poll() is not None  # stopped, not left running
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_no_daemon_is_started_for_a_control_endpoint_or_one_starting(work: Path) -> None:
    """``--control`` names the daemon to attach to: nothing is started even when nothing
    answers (the UI retries); a ``daemon.json`` whose process lives means a daemon starting."""
    state = work / "state"
    given = argparse.Namespace(**{**vars(_args(work)), "control": f"ipc://{work}/none.sock"})
    target, notice = ensure_daemon(given)
    assert (target.control, notice) == (f"ipc://{work}/none.sock", None)
    state.mkdir()
    starting = {"pid": os.getpid(), "control": f"ipc://{state}/control.sock"}
    (state / "daemon.json").write_text(json.dumps(starting))
    target, notice = ensure_daemon(_args(work))
    assert notice is None and target.running
    assert not (state / "daemon.log").exists()  # no background start was tried
