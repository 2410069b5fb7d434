"""Who may control a running daemon: only its user over ipc, only its key over tcp.

A real daemon (``torviz-coordinator start``, with its three agents) per test; another user is
``nobody`` in a forked child (tests/support/users.py), running the CLI's ``main`` in-process.
Every wait is bounded; every process is stopped at the end.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import zmq

from tests.support.daemon import COORDINATOR, TorvizDaemon
from tests.support.users import other_user
from torviz.services.coordinator.cli import main
from torviz.shared.bus import ServiceKind, encode_frames, make_hello

CONFIG = """
[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
"""
REFUSAL_BOUND = 60.0
"""Seconds a refused start may take (it is refused before anything binds; a started daemon
would run until killed)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COORDINATOR, *args], capture_output=True, text=True, timeout=30, check=False, env=env
    )


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user may enter (as a home or /srv would be): only torviz's own modes
    keep others out of what it makes inside."""
    with tempfile.TemporaryDirectory(prefix="tvz-ca-", dir="/tmp") as path:
        os.chmod(path, 0o755)
        yield Path(path)


@pytest.fixture
def daemons() -> Iterator[list[TorvizDaemon]]:
    started: list[TorvizDaemon] = []
    try:
        yield started
    finally:
        for daemon in started:
            daemon.stop()


def make_daemon(work: Path, daemons: list[TorvizDaemon], config: str = CONFIG) -> TorvizDaemon:
    (work / "config.toml").write_text(config)
    daemon = TorvizDaemon(work / "state", work / "config.toml", work / "dl", work / "daemon.log")
    daemons.append(daemon)
    return daemon


# --- tcp without keys: refused at start -------------------------------------------------------


@pytest.mark.parametrize("which", ["control", "bus", "data"])
def test_a_loopback_tcp_endpoint_without_keys_is_refused_at_start(
    which: str, tmp_path: Path
) -> None:
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    section = {"bus": "coordinator", "data": "storage_agent"}.get(which)
    config = CONFIG + (f'\n[{section}]\n{which} = "{endpoint}"\n' if section else "")
    (tmp_path / "config.toml").write_text(config)
    argv = [
        "start",
        "--state-dir",
        str(tmp_path / "state"),
        "--config",
        str(tmp_path / "config.toml"),
    ]
    argv += ["--download-dir", str(tmp_path / "dl")]
    if which == "control":
        argv += ["--control", endpoint]
    try:
        result = subprocess.run(
            [*COORDINATOR, *argv],
            capture_output=True,
            text=True,
            timeout=REFUSAL_BOUND,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the daemon started with {which} on {endpoint} and no keys")
    assert result.returncode == 2  # a configuration error: the units do not restart on it
    line = one_line(result.stderr)
    assert line.startswith(f"torviz: error: refusing to bind {endpoint} without CURVE keys: ")
    assert "run `torviz-coordinator keys init` and set [security] keys_dir" in line
    assert not listening(port)
    assert not (tmp_path / "state" / "daemon.json").exists()


@pytest.mark.parametrize("kind", ["tracker_agent", "peer_agent", "storage_agent"])
def test_an_agent_will_not_connect_to_a_tcp_bus_without_keys(kind: str, tmp_path: Path) -> None:
    # Whoever listens on a loopback port could be any local user, handing out commands
    # (OpenTorrent with a save path, CloseTorrent deleting files): no keys, no tcp.
    tmp_path.chmod(0o700)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    argv = [sys.executable, "-m", f"torviz.services.{kind}", "--coordinator", endpoint]
    argv += (
        ["--agent-id", "a1", "--data", f"ipc://{tmp_path}/data"]
        if kind == "storage_agent"
        else ["--agent-id", "a1"]
    )
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=REFUSAL_BOUND, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {kind} connected to {endpoint} without keys")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert f"error: refusing to connect to {endpoint} without CURVE keys: " in line


# --- the default: an ipc socket only the daemon's user can reach ------------------------------


def test_the_default_sockets_are_private_and_another_user_is_told_permission_denied(
    open_dir: Path, daemons: list[TorvizDaemon]
) -> None:
    user = other_user()
    daemon = make_daemon(open_dir, daemons).start(umask=0o000)
    state = daemon.state_dir
    sockets = [state / name for name in ("bus.sock", "control.sock", "data.sock")]
    deadline = time.monotonic() + 20
    while not all(path.exists() for path in sockets) and time.monotonic() < deadline:
        time.sleep(0.1)  # the storage agent binds data.sock a moment after the coordinator
    assert mode(state) == 0o700
    for path in sockets:
        assert stat.S_ISSOCK(os.stat(path).st_mode), path
        assert mode(path) == 0o600, path
    own = daemon.cli("list")
    assert (own.returncode, own.stdout.strip()) == (0, "no torrents"), own.stderr

    control = f"ipc://{state}/control.sock"
    for flags in (["--state-dir", str(state)], ["--control", control]):
        began = time.monotonic()
        seen = user.call(
            partial(main, ["list", *flags]),
            warm_up=partial(main, ["list", "--state-dir", str(open_dir / "none")]),
        )
        assert time.monotonic() - began < 5.0  # told at once, not after the 10 s timeout
        assert seen.code == 1, (seen.stdout, seen.stderr)
        assert seen.stdout == ""
        assert one_line(seen.stderr) == (
            f"torviz: error: permission denied: {state}/control.sock belongs to user root: "
            "run the command as root"
        )
        removed = user.call(partial(main, ["shutdown", *flags]))
        assert removed.code == 1, removed.stderr
    assert daemon.process is not None and daemon.process.poll() is None  # still running
    assert daemon.shutdown() == 0


# --- tcp with keys: the daemon's own key, nothing else ------------------------------------------


def test_with_keys_a_tcp_control_endpoint_admits_only_the_daemons_key(
    tmp_path: Path, daemons: list[TorvizDaemon]
) -> None:
    keys = tmp_path / "keys"
    made = cli("keys", "init", "--dir", str(keys), "peer-1")
    assert made.returncode == 0, made.stderr
    port = free_port()
    control = f"tcp://127.0.0.1:{port}"
    config = CONFIG + f'\n[security]\nkeys_dir = "{keys}"\n'
    daemon = make_daemon(tmp_path, daemons, config).start("--control", control)

    # The daemon's user: the keys named in daemon.json, or given; either way it works.
    for listing in (daemon.cli("list"), cli("list", "--control", control, "--keys", str(keys))):
        assert (listing.returncode, listing.stdout.strip()) == (0, "no torrents"), listing

    # No keys at all (no daemon.json named, no config): refused before connecting.
    (tmp_path / "empty-config").mkdir()
    bare = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "empty-config")}
    without = cli("list", "--control", control, env=bare)
    assert without.returncode == 1
    assert one_line(without.stderr).startswith(
        f"torviz: error: refusing to connect to {control} without CURVE keys: "
    )

    # An agent's key: admitted on the bus, never on the control endpoint.
    bundle = keys / "agents" / "peer-1"
    refused = cli(  # the refusal itself is the answer (a timeout would say "no torviz daemon")
        "remove", "0" * 40, "--control", control, "--keys", str(bundle), "--key-name", "peer-1"
    )
    assert refused.returncode == 1
    assert one_line(refused.stderr) == (
        f"torviz: error: permission denied: the daemon at {control} does not admit the key "
        "'peer-1': its control endpoint admits only the daemon's own key; run the command as "
        "the daemon's user, with its keys folder"
    )

    # A plain ZeroMQ client gets nothing at all.
    context = zmq.Context()
    try:
        plain = context.socket(zmq.DEALER)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(control)
        plain.send_multipart(encode_frames(make_hello(ServiceKind.CLI, "cli", "", 1)))
        assert not plain.poll(1000)
        plain.close(linger=0)
    finally:
        context.destroy(linger=0)
    assert daemon.shutdown() == 0
