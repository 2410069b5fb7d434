"""Who may reach a socket: private ipc sockets, no plain tcp, and the control client told why.

Sockets run in greenlets of the (unpatched) pytest process, each side on its own zmq.green
context; another user is ``nobody`` in a subprocess (tests/support/users.py). Every wait is
bounded.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
import zmq.green

from tests.support.users import OtherUser, other_user
from torviz.shared.bus import HelloPolicy, ListTorrents, ServiceKind, Welcome, make_hello
from torviz.shared.config import SecurityConfig
from torviz.shared.errors import ConfigError
from torviz.shared.runtime.curve import (
    CurveClient,
    KeyPair,
    control_security,
    load_keypair,
    load_public_key,
    server_security,
)
from torviz.shared.runtime.ipc import (
    IpcState,
    bind_private,
    make_private_dir,
    owner_of,
    probe_ipc,
)
from torviz.shared.runtime.sockets import (
    BusSocket,
    ControlClient,
    DaemonUnreachableError,
    PermissionDeniedError,
)

WAIT = 5.0
CONTROL_POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="coord",
    accepts=frozenset({ServiceKind.CLI}),
    heartbeat_interval=0.0,
)
BUS_POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="coord",
    accepts=frozenset({ServiceKind.PEER_AGENT}),
    heartbeat_interval=2.0,
)


def mode(path: Path | str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def wide_umask() -> Iterator[None]:
    """umask 000 for the test: every mode below is set by torviz, not inherited."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A keys folder: coordinator, agent a1 (authorized on the bus)."""
    folder = tmp_path / "keys"
    (folder / "authorized").mkdir(parents=True)
    for name in ("coordinator", "a1"):
        zmq.auth.create_certificates(folder, name)
    shutil.copy(folder / "a1.key", folder / "authorized" / "a1.key")
    return folder


# --- binding --------------------------------------------------------------------------------


def test_a_bound_ipc_socket_is_0600_whatever_the_umask(
    green_context: Any, short_dir: Path, wide_umask: None
) -> None:
    server = BusSocket.router(lambda _: None, name="bus", context=green_context)
    try:
        endpoint = server.bind(f"ipc://{short_dir}/bus.sock")
        assert endpoint == f"ipc://{short_dir}/bus.sock"
        assert stat.S_ISSOCK(os.stat(short_dir / "bus.sock").st_mode)
        assert mode(short_dir / "bus.sock") == 0o600
    finally:
        server.close(linger=0)
    assert os.umask(0) == 0  # the umask is given back


def test_bind_private_leaves_tcp_and_inproc_alone(green_context: Any) -> None:
    sock = green_context.socket(zmq.ROUTER)
    try:
        bind_private(sock, "inproc://x")
        bind_private(sock, "tcp://127.0.0.1:*")  # a raw socket: the CURVE rule is BusSocket's
    finally:
        sock.close(linger=0)


def test_binding_ipc_in_a_folder_others_may_enter_is_refused(
    green_context: Any, short_dir: Path
) -> None:
    open_folder = short_dir / "open"
    open_folder.mkdir()
    open_folder.chmod(0o755)
    server = BusSocket.router(lambda _: None, name="bus", context=green_context)
    try:
        with pytest.raises(ConfigError) as caught:
            server.bind(f"ipc://{open_folder}/bus.sock")
        assert caught.value.reason == "ipc_folder_not_private"
        assert not (open_folder / "bus.sock").exists()
    finally:
        server.close(linger=0)


def test_a_plain_socket_never_binds_tcp_loopback_included(green_context: Any, keys: Path) -> None:
    plain = BusSocket.router(lambda _: None, name="bus", context=green_context)
    try:
        for endpoint in ("tcp://127.0.0.1:*", "tcp://[::1]:*", "tcp://0.0.0.0:*"):
            with pytest.raises(ConfigError) as caught:
                plain.bind(endpoint)
            assert caught.value.reason == "needs_keys"
            assert str(caught.value).startswith(f"refusing to bind {endpoint} without CURVE keys")
    finally:
        plain.close(linger=0)
    curve = server_security("tcp://127.0.0.1:*", SecurityConfig(str(keys)), "coordinator")
    keyed = BusSocket.router(lambda _: None, name="bus", context=green_context, curve=curve)
    try:
        assert keyed.bind("tcp://127.0.0.1:*").startswith("tcp://127.0.0.1:")
    finally:
        keyed.close(linger=0)


def test_make_private_dir_makes_or_narrows_to_0700(tmp_path: Path, wide_umask: None) -> None:
    made = make_private_dir(tmp_path / "a" / "state")
    assert mode(made) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    assert mode(make_private_dir(loose)) == 0o700
    afile = tmp_path / "file"
    afile.write_text("")
    with pytest.raises(ConfigError) as caught:
        make_private_dir(afile)
    assert caught.value.reason == "not_a_folder"


def test_a_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    user = other_user()
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, user.uid, user.gid)
    with pytest.raises(ConfigError) as caught:
        make_private_dir(theirs)
    assert caught.value.reason == "folder_not_private"
    assert str(caught.value) == f"{theirs} belongs to {user.name}: use a folder of this user's own"
    with pytest.raises(ConfigError) as caught:
        server_security(f"ipc://{theirs}/bus.sock", SecurityConfig(), "coordinator")
    assert caught.value.reason == "ipc_folder_not_private"
    assert f"(owner {user.name}, mode 0700)" in str(caught.value)


# --- probing, as the CLI does ---------------------------------------------------------------


def test_a_probe_tells_missing_dead_and_listening_apart(short_dir: Path) -> None:
    assert probe_ipc(str(short_dir / "none.sock")) is IpcState.MISSING
    assert probe_ipc(str(short_dir / "no" / "such" / "x.sock")) is IpcState.MISSING
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(short_dir / "dead.sock"))
    dead.close()  # the file stays; nobody listens
    assert probe_ipc(str(short_dir / "dead.sock")) is IpcState.NOT_LISTENING
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as live:
        live.bind(str(short_dir / "live.sock"))
        live.listen(1)
        assert probe_ipc(str(short_dir / "live.sock")) is IpcState.LISTENING
    assert owner_of(str(short_dir / "live.sock")) is None  # ours


def _listening(path: Path) -> socket.socket:
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(4)
    return live


def test_another_user_is_denied_by_the_folder_or_by_the_socket_mode(short_dir: Path) -> None:
    user: OtherUser = other_user()
    short_dir.chmod(0o755)  # let them in, to see the socket's own mode refuse them too
    private = short_dir / "private"
    make_private_dir(private)
    sockets = [_listening(private / "a.sock"), _listening(short_dir / "b.sock")]
    try:
        (short_dir / "b.sock").chmod(0o600)

        def look() -> int:
            for path in (private / "a.sock", short_dir / "b.sock"):
                print(probe_ipc(str(path)).value, owner_of(str(path)))
            return 0

        seen = user.call(look)
        assert seen.code == 0, seen.stderr
        assert seen.stdout.splitlines() == ["denied root", "denied root"]
        (short_dir / "b.sock").chmod(0o666)  # the same socket, open: they get through
        seen = user.call(look)
        assert seen.stdout.splitlines() == ["denied root", "listening root"]
    finally:
        for live in sockets:
            live.close()


# --- the control client ---------------------------------------------------------------------


def test_a_dead_socket_is_no_daemon_at_once(short_dir: Path) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(short_dir / "control.sock"))
    dead.close()
    endpoint = f"ipc://{short_dir}/control.sock"
    began = time.monotonic()
    with pytest.raises(DaemonUnreachableError):
        ControlClient(endpoint, timeout=30.0)
    assert time.monotonic() - began < 1.0  # not the 30 s timeout


def test_the_control_client_needs_keys_for_tcp() -> None:
    with pytest.raises(ConfigError) as caught:
        ControlClient("tcp://127.0.0.1:9", timeout=0.1)
    assert caught.value.reason == "needs_keys"
    assert str(caught.value).startswith("refusing to connect to tcp://127.0.0.1:9 without CURVE")


class KeyedCoordinator:
    """A bus (admits ``authorized/``) and a control endpoint (admits only the coordinator's
    own key) over CURVE on loopback, on one context, as the daemon binds them."""

    def __init__(self, context: Any, keys: Path) -> None:
        security = SecurityConfig(keys_dir=str(keys))
        self.bus = BusSocket.router(
            lambda _: None,
            name="bus",
            hello_policy=BUS_POLICY,
            context=context,
            curve=server_security("tcp://127.0.0.1:*", security, "coordinator"),
        )
        self.control = BusSocket.router(
            lambda _: None,
            name="control",
            hello_policy=CONTROL_POLICY,
            context=context,
            curve=control_security("tcp://127.0.0.1:*", security),
        )
        self.bus_endpoint = self.bus.bind("tcp://127.0.0.1:*")
        self.control_endpoint = self.control.bind("tcp://127.0.0.1:*")
        self.bus.start()
        self.control.start()

    def close(self) -> None:
        self.control.close(linger=0)
        self.bus.close(linger=0)


@pytest.fixture
def coordinator(green_context: Any, keys: Path) -> Iterator[KeyedCoordinator]:
    made = KeyedCoordinator(green_context, keys)
    try:
        yield made
    finally:
        made.close()


def _client(endpoint: str, pair: KeyPair, server: bytes, identity: str = "") -> ControlClient:
    curve = CurveClient(pair, server)
    return ControlClient(endpoint, timeout=WAIT, green=True, curve=curve, identity=identity)


def test_the_daemons_own_key_opens_the_tcp_control_endpoint(
    coordinator: KeyedCoordinator, keys: Path
) -> None:
    own = load_keypair(keys, "coordinator")
    with _client(coordinator.control_endpoint, own, own.public) as client:
        assert isinstance(client.hello(), Welcome)


def test_an_agents_key_opens_the_bus_but_is_denied_control_at_once(
    coordinator: KeyedCoordinator, keys: Path
) -> None:
    agent = load_keypair(keys, "a1")
    server = load_public_key(keys, "coordinator")
    with _client(coordinator.bus_endpoint, agent, server, identity="a1") as on_bus:
        answer = on_bus.request(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
        assert isinstance(answer, Welcome)
    began = time.monotonic()
    with (
        _client(coordinator.control_endpoint, agent, server) as client,
        pytest.raises(PermissionDeniedError) as caught,
    ):
        client.hello()
    assert time.monotonic() - began < 2.0  # told, not timed out
    assert caught.value.reason == "permission_denied"
    assert str(caught.value) == (
        f"permission denied: the daemon at {coordinator.control_endpoint} does not admit the "
        "key 'a1': its control endpoint admits only the daemon's own key; run the command as "
        "the daemon's user, with its keys folder"
    )


def test_a_wrong_server_key_is_denied_not_timed_out(
    coordinator: KeyedCoordinator, keys: Path
) -> None:
    own = load_keypair(keys, "coordinator")
    stranger = KeyPair("stranger", *zmq.curve_keypair())
    began = time.monotonic()
    with (
        _client(coordinator.control_endpoint, own, stranger.public) as client,
        pytest.raises(PermissionDeniedError) as caught,
    ):
        client.request(ListTorrents())
    assert time.monotonic() - began < 2.0
    assert "the CURVE handshake with tcp://127.0.0.1:" in str(caught.value)
