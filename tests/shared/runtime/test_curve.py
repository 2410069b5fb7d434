"""CURVE key files, which sockets use CURVE, and CURVE bus sockets over real ZeroMQ.

Sockets run in greenlets of the (unpatched) pytest process, one zmq.green context per side as
two processes would have; every wait is bounded by a gevent timeout.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import pytest
import zmq
import zmq.auth
import zmq.green

from torviz.shared.bus import Heartbeat, HelloPolicy, ServiceKind, Welcome, make_hello
from torviz.shared.config import SecurityConfig
from torviz.shared.errors import ConfigError
from torviz.shared.runtime.curve import (
    CONTROL_ZAP_DOMAIN,
    MAX_KEY_FILE,
    ZAP_DOMAIN,
    AuthorizedKey,
    CurveClient,
    CurveServer,
    KeyPair,
    authorized_keys,
    check_public_key,
    client_security,
    control_security,
    load_keypair,
    load_public_key,
    server_security,
)
from torviz.shared.runtime.sockets import BusSocket, Incoming
from torviz.shared.runtime.zap import running_zap_handler

WAIT = 5.0
POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="coord",
    accepts=frozenset({ServiceKind.PEER_AGENT}),
    heartbeat_interval=2.0,
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """A keys folder: coordinator, agents a1 (authorized) and x9 (not authorized)."""
    folder = tmp_path / "keys"
    (folder / "authorized").mkdir(parents=True)
    for name in ("coordinator", "a1", "x9"):
        zmq.auth.create_certificates(folder, name)
    shutil.copy(folder / "a1.key", folder / "authorized" / "a1.key")
    return folder


@pytest.fixture
def contexts() -> Iterator[tuple[Any, Any]]:
    """A server and a client zmq.green context, destroyed at the end (sockets with them)."""
    server: Any = zmq.green.Context()
    client: Any = zmq.green.Context()
    try:
        yield server, client
    finally:
        for context in (server, client):
            handler = running_zap_handler(context)
            if handler is not None:
                handler.stop()
        client.destroy(linger=0)
        server.destroy(linger=0)


def security(folder: Path | str = "", name: str = "") -> SecurityConfig:
    return SecurityConfig(keys_dir=str(folder), key_name=name)


# --- key files -------------------------------------------------------------------------


def test_a_key_pair_and_public_keys_load(keys: Path) -> None:
    pair = load_keypair(keys, "a1")
    assert pair.name == "a1"
    assert len(pair.public) == 40 and len(pair.secret) == 40
    assert zmq.curve_public(pair.secret) == pair.public
    assert load_public_key(keys, "a1") == pair.public
    assert authorized_keys(keys) == {pair.public: AuthorizedKey("a1", ServiceKind.PEER_AGENT)}


def _write(path: Path, text: str | bytes) -> None:
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)


@pytest.mark.parametrize(
    ("damage", "reason", "named"),
    [
        (lambda k: (k / "a1.key_secret").unlink(), "missing_key", "a1.key_secret"),
        (lambda k: _write(k / "a1.key_secret", "nothing here\n"), "invalid_key", "no public key"),
        (
            lambda k: _write(k / "a1.key_secret", 'public-key = "short"\n'),
            "invalid_key",
            "not a CURVE key",
        ),
        (
            lambda k: _write(k / "a1.key_secret", (k / "a1.key").read_text()),
            "invalid_key",
            "no secret key",
        ),
        (
            lambda k: _write(
                k / "a1.key_secret",
                (k / "a1.key_secret").read_text().replace("secret-key", "x")
                + f'    secret-key = "{"#" * 40}"\n',
            ),
            "invalid_key",
            "not a CURVE key",
        ),
        (
            lambda k: _write(
                k / "a1.key_secret",
                (k / "x9.key_secret")
                .read_text()
                .replace(
                    load_public_key(k, "x9").decode(),
                    load_public_key(k, "a1").decode(),
                ),
            ),
            "key_mismatch",
            "does not match",
        ),
        (lambda k: _write(k / "a1.key_secret", b"#" * (MAX_KEY_FILE + 1)), "invalid_key", "big"),
        (
            lambda k: ((k / "a1.key_secret").unlink(), (k / "a1.key_secret").mkdir()),
            "invalid_key",
            "not a regular file",
        ),
    ],
)
def test_a_bad_key_pair_file_names_the_file_and_the_fix(
    keys: Path, damage: Any, reason: str, named: str
) -> None:
    damage(keys)
    with pytest.raises(ConfigError) as caught:
        load_keypair(keys, "a1")
    assert caught.value.reason == reason
    message = str(caught.value)
    assert named in message
    assert str(keys / "a1.key_secret") in message
    assert "torviz-coordinator keys init a1" in message
    assert "\n" not in message


def test_an_unreadable_key_file_is_a_config_error(keys: Path) -> None:
    secret = keys / "a1.key_secret"
    secret.unlink()
    secret.symlink_to(secret)  # ELOOP: unreadable even for root
    with pytest.raises(ConfigError) as caught:
        load_keypair(keys, "a1")
    assert caught.value.reason == "unreadable_key"
    assert str(secret) in str(caught.value)


def test_missing_folders_and_bad_names(keys: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_keypair(tmp_path / "nowhere", "a1")
    assert caught.value.reason == "missing_keys_dir"
    assert "torviz-coordinator keys init" in str(caught.value)
    for bad in ("", "../a1", "a/b", ".hidden", "..", "x" * 65, "sp ace"):
        with pytest.raises(ConfigError) as caught:
            load_keypair(keys, bad)
        assert caught.value.reason == "bad_key_name"
    with pytest.raises(ConfigError) as caught:
        load_public_key(keys, "nobody")
    assert caught.value.reason == "missing_key"
    assert "coordinator keys init nobody" in str(caught.value)


def test_the_authorized_folder(keys: Path) -> None:
    authorized = keys / "authorized"
    shutil.copy(keys / "x9.key_secret", authorized / "x9.key_secret")  # not a .key: ignored
    _write(authorized / ".editor.key", "junk")  # hidden: ignored
    (authorized / "notes.txt").write_text("ignored")
    assert {entry.name for entry in authorized_keys(keys).values()} == {"a1"}
    shutil.copy(keys / "a1.key", authorized / "z-again.key")  # same key twice: first name wins
    assert [entry.name for entry in authorized_keys(keys).values()] == ["a1"]
    _write(authorized / "broken.key", 'public-key = "not a key"\n')
    with pytest.raises(ConfigError) as caught:
        authorized_keys(keys)
    assert caught.value.reason == "invalid_key"
    assert "broken.key" in str(caught.value)
    (authorized / "broken.key").unlink()
    shutil.copy(keys / "a1.key", authorized / "bad name.key")
    with pytest.raises(ConfigError) as caught:
        authorized_keys(keys)
    assert caught.value.reason == "bad_key_name"
    assert "bad name.key" in str(caught.value)
    shutil.rmtree(authorized)
    assert authorized_keys(keys) == {}


def test_check_public_key() -> None:
    public, _ = zmq.curve_keypair()
    assert check_public_key(public, "x") == public
    for bad in (b"", public[:-1], public + b"a", b"#" * 40, public[:-1] + b"\xff", b" " * 40):
        with pytest.raises(ConfigError) as caught:
            check_public_key(bad, "the field")
        assert caught.value.reason == "invalid_key"
        assert "the field" in str(caught.value)


# --- which sockets use CURVE -----------------------------------------------------------


def test_without_keys_ipc_and_inproc_are_plain(tmp_path: Path) -> None:
    for endpoint in (f"ipc://{tmp_path}/x.sock", "inproc://bus"):
        assert server_security(endpoint, security(), "coordinator") is None
        assert control_security(endpoint, security()) is None
        assert client_security(endpoint, security(), "a1") is None


TCP_HINT = (
    "any local user can reach a tcp port, loopback included, so tcp takes keys: run "
    "`torviz-coordinator keys init` and set [security] keys_dir (or --keys DIR), or use an "
    "ipc:// endpoint"
)


@pytest.mark.parametrize(
    "endpoint",
    [
        "tcp://127.0.0.1:7700",  # loopback: any local user can connect to it
        "tcp://[::1]:7700",
        "tcp://localhost:7700",
        "tcp://0.0.0.0:7700",
        "tcp://*:7700",
        "tcp://10.213.7.3:7700",
        "tcp://h:1",
    ],
)
def test_every_tcp_endpoint_without_keys_is_refused_both_ways(endpoint: str) -> None:
    for bind in (
        lambda: server_security(endpoint, security(), "coordinator"),
        lambda: control_security(endpoint, security()),
    ):
        with pytest.raises(ConfigError) as caught:
            bind()
        assert caught.value.reason == "needs_keys"
        assert str(caught.value) == f"refusing to bind {endpoint} without CURVE keys: {TCP_HINT}"
    with pytest.raises(ConfigError) as caught:  # whoever listens there could be anyone
        client_security(endpoint, security(), "a1")
    assert caught.value.reason == "needs_keys"
    assert str(caught.value) == f"refusing to connect to {endpoint} without CURVE keys: {TCP_HINT}"


def test_binding_ipc_in_a_folder_others_may_enter_is_refused(tmp_path: Path) -> None:
    open_folder = tmp_path / "open"
    open_folder.mkdir(mode=0o755)
    open_folder.chmod(0o755)
    endpoint = f"ipc://{open_folder}/bus.sock"
    for bind in (
        lambda: server_security(endpoint, security(), "coordinator"),
        lambda: control_security(endpoint, security()),
    ):
        with pytest.raises(ConfigError) as caught:
            bind()
        assert caught.value.reason == "ipc_folder_not_private"
        assert f"its folder {open_folder} (owner " in str(caught.value)
        assert "mode 0755) lets other users in" in str(caught.value)
    open_folder.chmod(0o700)
    assert server_security(endpoint, security(), "coordinator") is None


def test_the_control_endpoint_admits_only_the_coordinators_own_key(keys: Path) -> None:
    server = control_security("tcp://127.0.0.1:7700", security(keys))
    assert server == CurveServer(load_keypair(keys, "coordinator"), None, CONTROL_ZAP_DOMAIN)
    assert server_security("tcp://127.0.0.1:7700", security(keys), "coordinator") == (
        CurveServer(load_keypair(keys, "coordinator"), keys / "authorized", ZAP_DOMAIN)
    )


def test_with_keys_every_tcp_socket_uses_curve_and_ipc_never(keys: Path, tmp_path: Path) -> None:
    for endpoint in (f"ipc://{tmp_path}/x.sock", "inproc://bus"):
        assert server_security(endpoint, security(keys), "coordinator") is None
        assert client_security(endpoint, security(keys), "a1") is None
    for endpoint in ("tcp://127.0.0.1:7700", "tcp://0.0.0.0:7700"):
        server = server_security(endpoint, security(keys), "coordinator")
        assert server == CurveServer(load_keypair(keys, "coordinator"), keys / "authorized")
        client = client_security(endpoint, security(keys), "a1")
        assert client == CurveClient(load_keypair(keys, "a1"), load_public_key(keys, "coordinator"))


def test_key_name_overrides_the_default_and_a_server_key_can_be_given(keys: Path) -> None:
    server = server_security("tcp://127.0.0.1:1", security(keys, "a1"), "coordinator")
    assert server is not None and server.keys.name == "a1"
    storage = load_public_key(keys, "x9")
    client = client_security("tcp://127.0.0.1:1", security(keys), "a1", server_public=storage)
    assert client is not None and client.server_public == storage
    for bad in (b"", b"not a key"):
        with pytest.raises(ConfigError) as caught:
            client_security("tcp://127.0.0.1:1", security(keys), "a1", server_public=bad)
        assert caught.value.reason == "invalid_key"


def test_key_problems_surface_when_security_is_resolved(keys: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        client_security("tcp://127.0.0.1:1", security(keys), "nobody")
    assert caught.value.reason == "missing_key"
    (keys / "coordinator.key").unlink()
    with pytest.raises(ConfigError) as caught:
        client_security("tcp://127.0.0.1:1", security(keys), "a1")
    assert "coordinator.key" in str(caught.value)
    _write(keys / "authorized" / "bad.key", "junk")
    with pytest.raises(ConfigError) as caught:  # at start, not at the first connection
        server_security("tcp://127.0.0.1:1", security(keys), "coordinator")
    assert "bad.key" in str(caught.value)
    with pytest.raises(ConfigError):
        server_security("udp://127.0.0.1:1", security(keys), "coordinator")


# --- CURVE bus sockets -----------------------------------------------------------------


class Pair:
    """A CURVE server (hello gate) and clients over tcp://127.0.0.1, closed at the end."""

    def __init__(self, server_ctx: Any, client_ctx: Any, keys: Path) -> None:
        self.keys = keys
        self.client_ctx = client_ctx
        self.inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
        self.server = BusSocket.router(
            self.inbox.put,
            name="server",
            hello_policy=POLICY,
            context=server_ctx,
            curve=CurveServer(load_keypair(keys, "coordinator"), keys / "authorized"),
        )
        self.endpoint = self.server.bind("tcp://127.0.0.1:*")
        self.server.start()
        self.sockets = [self.server]

    def client(self, curve: CurveClient | None, name: str = "a1") -> tuple[BusSocket, Any]:
        replies: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
        sock = BusSocket.dealer(
            replies.put, name=name, identity=name, context=self.client_ctx, curve=curve
        )
        sock.connect(self.endpoint)
        sock.start()
        self.sockets.append(sock)
        return sock, replies

    def curve_client(self, name: str, server_public: bytes | None = None) -> CurveClient:
        public = server_public or load_public_key(self.keys, "coordinator")
        return CurveClient(load_keypair(self.keys, name), public)

    def close(self) -> None:
        for sock in reversed(self.sockets):
            sock.close(linger=0)


@pytest.fixture
def pair(contexts: tuple[Any, Any], keys: Path) -> Iterator[Pair]:
    made = Pair(*contexts, keys)
    try:
        yield made
    finally:
        made.close()


def wait_for(condition: Any, timeout: float = WAIT) -> bool:
    with gevent.Timeout(timeout, False):
        while not condition():
            gevent.sleep(0.02)
        return True
    return False


def test_a_known_key_is_admitted_and_messages_round_trip(pair: Pair) -> None:
    client, replies = pair.client(pair.curve_client("a1"))
    client.send(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
    assert isinstance(replies.get(timeout=WAIT).message, Welcome)
    incoming = pair.inbox.get(timeout=WAIT)
    assert incoming.sender == b"a1"
    assert client.stats.auth_failures == 0


def test_the_servers_own_key_is_admitted(pair: Pair) -> None:
    client, replies = pair.client(pair.curve_client("coordinator"), name="embedded")
    client.send(make_hello(ServiceKind.PEER_AGENT, "embedded", "h", 1))
    assert isinstance(replies.get(timeout=WAIT).message, Welcome)


def test_an_unknown_key_gets_nothing_and_is_told_why(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client, replies = pair.client(pair.curve_client("x9"), name="x9")
    client.send(make_hello(ServiceKind.PEER_AGENT, "x9", "h", 1))
    assert wait_for(lambda: client.stats.auth_failures >= 1)
    with pytest.raises(gevent.queue.Empty):
        pair.inbox.get(timeout=0.3)
    assert replies.empty()
    assert pair.server.stats.received == 0
    errors = [r.getMessage() for r in caplog.records if r.name == "torviz.shared.runtime.curve"]
    assert errors == [
        f"x9: the server at {pair.endpoint} refused this process's key (x9): is its public key "
        "in the server's authorized folder?"
    ]


def test_a_plain_client_to_a_curve_server_gets_nothing(pair: Pair) -> None:
    client, replies = pair.client(None)
    client.send(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
    with pytest.raises(gevent.queue.Empty):
        pair.inbox.get(timeout=0.5)
    assert replies.empty()
    assert pair.server.stats.received == 0


def test_a_wrong_server_key_is_counted_and_logged_once(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="torviz.shared.runtime.curve")
    wrong = load_public_key(pair.keys, "x9")
    client, replies = pair.client(pair.curve_client("a1", server_public=wrong))
    client.send(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
    assert wait_for(lambda: client.stats.auth_failures >= 3)  # libzmq retries by itself
    assert replies.empty() and pair.inbox.empty()
    lines = [r.getMessage() for r in caplog.records if r.name == "torviz.shared.runtime.curve"]
    assert len(lines) == 1  # at most once per 30 s
    assert "CURVE handshake with tcp://127.0.0.1:" in lines[0]
    assert "wrong coordinator key, or the server uses no keys" in lines[0]


def test_a_bundle_from_another_keys_init_is_logged_by_the_server_too(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    """The ZAP handler never hears of a client holding another server key: the server's own
    watch tells its operator, once, however often the client retries."""
    caplog.set_level(logging.WARNING, logger="torviz.shared.runtime.curve")
    wrong = load_public_key(pair.keys, "x9")
    client, _ = pair.client(pair.curve_client("a1", server_public=wrong))
    client.send(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
    assert wait_for(lambda: pair.server.stats.auth_failures >= 3)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.getMessage().startswith("server:")
    ]
    assert len(lines) == 1, lines
    assert "failed the CURVE handshake on tcp://127.0.0.1:" in lines[0]
    assert "another `keys init`" in lines[0]


def test_a_curve_client_to_a_plain_server_fails_clearly(
    contexts: tuple[Any, Any], keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="torviz.shared.runtime.curve")
    server_ctx, client_ctx = contexts
    server = server_ctx.socket(zmq.ROUTER)  # raw: a BusSocket never binds plain tcp
    server.setsockopt(zmq.LINGER, 0)
    client = BusSocket.dealer(
        lambda incoming: None,
        name="a1",
        context=client_ctx,
        curve=CurveClient(load_keypair(keys, "a1"), load_public_key(keys, "coordinator")),
    )
    try:
        server.bind("tcp://127.0.0.1:*")
        client.connect(server.getsockopt_string(zmq.LAST_ENDPOINT))
        client.start()
        client.send(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
        assert wait_for(lambda: client.stats.auth_failures >= 1)
        assert not server.poll(300)
        assert any("the server uses no keys" in r.getMessage() for r in caplog.records)
    finally:
        client.close(linger=0)
        server.close(linger=0)


@pytest.mark.parametrize(
    ("identity", "agent_id", "admitted"),
    [
        ("a1", "a1", True),  # the key's own agent
        ("a1-7", "a1-7", True),  # one of a group sharing the key (a scaled service)
        ("storage", "storage", False),  # another agent's name: refused
        ("a10", "a10", False),  # a longer name is not the key's group
        ("a1", "a1-7", False),  # the routing identity must be the agent id
    ],
)
def test_a_key_speaks_only_for_its_own_agents(
    pair: Pair, identity: str, agent_id: str, admitted: bool
) -> None:
    client, replies = pair.client(pair.curve_client("a1"), name=identity)
    client.send(make_hello(ServiceKind.PEER_AGENT, agent_id, "h", 1))
    answer = replies.get(timeout=WAIT).message
    if admitted:
        assert isinstance(answer, Welcome)
        assert pair.inbox.get(timeout=WAIT).sender == identity.encode()
    else:
        assert getattr(answer, "reason", None) == "identity_not_allowed"
        assert pair.inbox.empty() and pair.server.welcomed == {}


def test_forget_makes_a_welcomed_peer_say_hello_again(pair: Pair) -> None:
    client, replies = pair.client(pair.curve_client("a1"))
    client.send(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
    assert isinstance(replies.get(timeout=WAIT).message, Welcome)
    pair.inbox.get(timeout=WAIT)
    assert b"a1" in pair.server.welcomed
    pair.server.forget(b"a1")
    pair.server.forget(b"never-seen")  # harmless
    assert b"a1" not in pair.server.welcomed
    client.send(Heartbeat(1))
    answer = replies.get(timeout=WAIT).message
    assert getattr(answer, "reason", None) == "hello_first"
    with pytest.raises(ValueError, match="hello policy"):
        BusSocket.dealer(lambda incoming: None, name="d", context=pair.client_ctx).forget(b"x")


def test_key_pair_repr_hides_the_secret() -> None:
    public, secret = zmq.curve_keypair()
    assert secret.decode() not in repr(KeyPair("n", public, secret))
