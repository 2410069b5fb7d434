"""Keys bound to roles: key file metadata read within bounds, and real CURVE endpoints that let
a key register only as the kind of agent its role names.

Keys come from ``keys init`` itself (``init_keys``), plus keys made as before roles existed
(pyzmq's ``create_certificates``, no metadata), which take the role their name implies. Sockets
run in greenlets of the (unpatched) pytest process, one zmq.green context per side as two
processes would have; every wait is bounded by a gevent timeout.
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

from torviz.services.coordinator.cli.commands.keys import init_keys
from torviz.shared.bus import HelloPolicy, Rejected, RejectReason, ServiceKind, Welcome, make_hello
from torviz.shared.config import SecurityConfig
from torviz.shared.errors import ConfigError
from torviz.shared.runtime.curve import (
    MAX_KEY_FILE,
    MAX_METADATA,
    AuthorizedKey,
    CurveClient,
    CurveServer,
    authorized_keys,
    load_keypair,
    load_public_key,
    read_key_role,
    role_of_name,
    server_security,
)
from torviz.shared.runtime.sockets import BusSocket, Incoming
from torviz.shared.runtime.zap import running_zap_handler

WAIT = 5.0
AGENTS = frozenset({ServiceKind.PEER_AGENT, ServiceKind.STORAGE_AGENT, ServiceKind.TRACKER_AGENT})


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    """``keys init peer-1 storage tracker storage:st1`` and two keys made before roles: a
    storage agent's (``storage-old``) and a peer agent's (``pa-old``), each with its bundle."""
    folder = tmp_path / "keys"
    init_keys(folder, ["peer-1", "storage", "tracker", "storage:st1"])
    for name in ("storage-old", "pa-old"):
        bundle = folder / "agents" / name
        bundle.mkdir(mode=0o700)
        public, _ = zmq.auth.create_certificates(bundle, name)
        shutil.copy(public, folder / "authorized" / f"{name}.key")
    init_keys(folder, [])  # a re-run refreshes every bundle: old keys travel unchanged
    return folder


# --- key files ---------------------------------------------------------------------------


def test_keys_init_writes_each_role_and_old_keys_take_their_names_role(keys: Path) -> None:
    roles = {entry.name: entry.role for entry in authorized_keys(keys).values()}
    assert roles == {
        "peer-1": ServiceKind.PEER_AGENT,
        "storage": ServiceKind.STORAGE_AGENT,
        "tracker": ServiceKind.TRACKER_AGENT,
        "st1": ServiceKind.STORAGE_AGENT,  # given: its name says nothing
        "storage-old": ServiceKind.STORAGE_AGENT,  # no metadata: from its name
        "pa-old": ServiceKind.PEER_AGENT,
    }
    # Every bundle's authorized/ (a storage agent's data endpoint admits those) says the same,
    # and names the coordinator's key, which may be any agent.
    bundle_roles = {
        entry.name: entry.role for entry in authorized_keys(keys / "agents" / "st1").values()
    }
    assert bundle_roles == {**roles, "coordinator": ServiceKind.COORDINATOR}
    # The role is in the metadata of every file of the key, the secret one included.
    for path in (keys / "authorized" / "st1.key", keys / "agents" / "st1" / "st1.key_secret"):
        assert 'role = "storage_agent"' in path.read_text() or "role = storage_agent" in (
            path.read_text()
        )
        assert read_key_role(path, "st1") == ServiceKind.STORAGE_AGENT


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("storage", ServiceKind.STORAGE_AGENT),
        ("storage-2", ServiceKind.STORAGE_AGENT),
        ("tracker", ServiceKind.TRACKER_AGENT),
        ("tracker-a.b", ServiceKind.TRACKER_AGENT),
        ("storagex", ServiceKind.PEER_AGENT),
        ("peer-agents", ServiceKind.PEER_AGENT),  # deploy/compose.yaml's shared peer key
        ("st1", ServiceKind.PEER_AGENT),
        ("coordinator", ServiceKind.COORDINATOR),
    ],
)
def test_the_role_a_name_implies(name: str, role: ServiceKind) -> None:
    assert role_of_name(name) == role


def _with_metadata(path: Path, lines: str) -> None:
    """Rewrite a public key file with the given metadata lines."""
    public = load_public_key(path.parent, path.stem)
    path.write_text(f'metadata\n{lines}curve\n    public-key = "{public.decode()}"\n')


@pytest.mark.parametrize(
    ("metadata", "reason", "named"),
    [
        ('    role = "admin"\n', "bad_key_role", "role 'admin' is not one of peer_agent"),
        ('    role = "coordinator"\n', "bad_key_role", "role 'coordinator' is not one of"),
        ("    role = \n", "bad_key_role", "role '' is not one of"),
        (f'    role = "{"x" * 256}"\n', "invalid_key", "longer than 255 bytes"),
        (f'    note = "{"x" * (MAX_KEY_FILE)}"\n', "invalid_key", "too big for a key file"),
        ('    role = "peer_agent"\n    role = "storage_agent"\n', "invalid_key", "twice"),
        ("    role\n", "invalid_key", "not `name = value`"),
        ('    ro le = "peer_agent"\n', "invalid_key", "not `name = value`"),
        (
            "".join(f'    m{i} = "v"\n' for i in range(MAX_METADATA + 1)),
            "invalid_key",
            f"more than {MAX_METADATA} metadata entries",
        ),
    ],
)
def test_hostile_metadata_is_a_config_error_naming_the_file(
    keys: Path, metadata: str, reason: str, named: str
) -> None:
    path = keys / "authorized" / "st1.key"
    _with_metadata(path, metadata)
    for load in (
        lambda: authorized_keys(keys),
        # A bound endpoint checks its authorized folder at start, not at the first connection.
        lambda: server_security(
            "tcp://127.0.0.1:7700", SecurityConfig(keys_dir=str(keys)), "coordinator"
        ),
    ):
        with pytest.raises(ConfigError) as caught:
            load()
        assert caught.value.reason == reason
        message = str(caught.value)
        assert named in message and str(path) in message
        assert "\n" not in message and len(message) < 500


def test_metadata_quoted_or_not_and_other_entries_are_read(keys: Path) -> None:
    path = keys / "authorized" / "pa-old.key"
    for lines, role in [
        ("    role = storage_agent\n", ServiceKind.STORAGE_AGENT),  # as pyzmq writes it
        ("    role = 'tracker_agent'\n    email = \"a@b\"\n", ServiceKind.TRACKER_AGENT),
        (f'    x = "{"y" * 255}"\n', ServiceKind.PEER_AGENT),  # no role: from the name
    ]:
        _with_metadata(path, lines)
        entries = {entry.name: entry for entry in authorized_keys(keys).values()}
        assert entries["pa-old"] == AuthorizedKey("pa-old", role)


# --- real CURVE endpoints ------------------------------------------------------------------


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


class Endpoint:
    """A CURVE server with a hello gate on tcp://127.0.0.1, and clients; closed at the end.

    Args:
        own: the server's key pair name, in ``keys_dir``.
        authorized: the folder of the keys it admits.
        accepts: the service kinds its policy accepts.
    """

    def __init__(
        self,
        contexts: tuple[Any, Any],
        keys_dir: Path,
        authorized: Path,
        accepts: frozenset[ServiceKind],
        own: str = "coordinator",
    ) -> None:
        server_ctx, self.client_ctx = contexts
        self.inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
        policy = HelloPolicy(ServiceKind.COORDINATOR, "server", accepts, heartbeat_interval=2.0)
        self.server = BusSocket.router(
            self.inbox.put,
            name="bus",
            hello_policy=policy,
            context=server_ctx,
            curve=CurveServer(load_keypair(keys_dir, own), authorized),
        )
        self.server_public = load_keypair(keys_dir, own).public
        self.endpoint = self.server.bind("tcp://127.0.0.1:*")
        self.server.start()
        self.sockets = [self.server]

    def hello(
        self, bundle: Path, key: str, service: ServiceKind, agent_id: str, times: int = 1
    ) -> Welcome | Rejected:
        """Connect with ``bundle``'s pair ``key``, say ``Hello`` ``times`` times; the last
        answer."""
        replies: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
        client = BusSocket.dealer(
            replies.put,
            name=agent_id,
            identity=agent_id,
            context=self.client_ctx,
            curve=CurveClient(load_keypair(bundle, key), self.server_public),
        )
        self.sockets.append(client)
        client.connect(self.endpoint)
        client.start()
        answer: Any = None
        for _ in range(times):
            client.send(make_hello(service, agent_id, "h", 1))
            answer = replies.get(timeout=WAIT).message
        assert isinstance(answer, Welcome | Rejected)
        return answer

    def close(self) -> None:
        for sock in reversed(self.sockets):
            sock.close(linger=0)


@pytest.fixture
def bus(contexts: tuple[Any, Any], keys: Path) -> Iterator[Endpoint]:
    """The coordinator's bus: its own pair, the keys folder's authorized/, every agent kind."""
    made = Endpoint(contexts, keys, keys / "authorized", AGENTS)
    try:
        yield made
    finally:
        made.close()


def _bundle(keys: Path, name: str) -> Path:
    return keys / "agents" / name


@pytest.mark.parametrize(
    ("key", "service", "message"),
    [
        (
            "peer-1",
            ServiceKind.STORAGE_AGENT,
            "the key 'peer-1' is a peer agent's key: it cannot register as the storage agent "
            "(make a storage key with `keys init storage`)",
        ),
        (
            "peer-1",
            ServiceKind.TRACKER_AGENT,
            "the key 'peer-1' is a peer agent's key: it cannot register as the tracker agent "
            "(make a tracker key with `keys init tracker`)",
        ),
        (
            "pa-old",  # made before roles: a peer agent's by its name
            ServiceKind.STORAGE_AGENT,
            "the key 'pa-old' is a peer agent's key: it cannot register as the storage agent "
            "(make a storage key with `keys init storage`)",
        ),
        (
            "tracker",
            ServiceKind.STORAGE_AGENT,
            "the key 'tracker' is a tracker agent's key: it cannot register as the storage "
            "agent (make a storage key with `keys init storage`)",
        ),
        (
            "st1",
            ServiceKind.PEER_AGENT,
            "the key 'st1' is a storage agent's key: it cannot register as a peer agent (make a "
            "peer key with `keys init peer:NAME`)",
        ),
    ],
)
def test_a_key_cannot_register_as_another_role(
    bus: Endpoint, keys: Path, key: str, service: ServiceKind, message: str
) -> None:
    answer = bus.hello(_bundle(keys, key), key, service, key)
    assert answer == Rejected(RejectReason.IDENTITY_NOT_ALLOWED, message)
    assert bus.server.welcomed == {} and bus.inbox.empty()


@pytest.mark.parametrize(
    ("key", "service", "agent_id"),
    [
        ("storage", ServiceKind.STORAGE_AGENT, "storage"),
        ("st1", ServiceKind.STORAGE_AGENT, "st1"),  # its role given at keys init
        ("tracker", ServiceKind.TRACKER_AGENT, "tracker"),
        ("peer-1", ServiceKind.PEER_AGENT, "peer-1"),
        ("storage-old", ServiceKind.STORAGE_AGENT, "storage-old"),  # made before roles
        ("pa-old", ServiceKind.PEER_AGENT, "pa-old-7"),  # before roles; a shared key's group
    ],
)
def test_a_key_registers_as_its_role(
    bus: Endpoint, keys: Path, key: str, service: ServiceKind, agent_id: str
) -> None:
    assert isinstance(bus.hello(_bundle(keys, key), key, service, agent_id), Welcome)
    assert bus.inbox.get(timeout=WAIT).sender == agent_id.encode()


def test_the_endpoints_own_key_may_be_any_agent(bus: Endpoint, keys: Path) -> None:
    for service, agent_id in [
        (ServiceKind.STORAGE_AGENT, "storage_agent-9-1"),
        (ServiceKind.TRACKER_AGENT, "tracker_agent-9-2"),
        (ServiceKind.PEER_AGENT, "peer_agent-9-3"),
    ]:  # embedded agents use their coordinator's pair
        assert isinstance(bus.hello(keys, "coordinator", service, agent_id), Welcome)


def test_a_refused_role_is_logged_once_per_key_and_address(
    bus: Endpoint, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="torviz.shared.runtime.sockets")
    answer = bus.hello(_bundle(keys, "peer-1"), "peer-1", ServiceKind.STORAGE_AGENT, "peer-1", 50)
    assert isinstance(answer, Rejected)
    lines = [r.getMessage() for r in caplog.records if r.name == "torviz.shared.runtime.sockets"]
    assert lines == [
        "bus: rejected peer-1 from 127.0.0.1: the key 'peer-1' is a peer agent's key: it cannot "
        "register as the storage agent (make a storage key with `keys init storage`)"
    ]


def test_a_data_endpoint_admits_peer_agents_keys_and_the_coordinators(
    contexts: tuple[Any, Any], keys: Path
) -> None:
    """A storage agent's data endpoint: its own pair, its bundle's authorized/ (every agent
    and the coordinator), peer agents only."""
    bundle = _bundle(keys, "storage")
    data = Endpoint(
        contexts, bundle, bundle / "authorized", frozenset({ServiceKind.PEER_AGENT}), "storage"
    )
    try:
        peer = data.hello(_bundle(keys, "peer-1"), "peer-1", ServiceKind.PEER_AGENT, "peer-1")
        assert isinstance(peer, Welcome)
        tracker = data.hello(_bundle(keys, "tracker"), "tracker", ServiceKind.PEER_AGENT, "tracker")
        assert tracker == Rejected(
            RejectReason.IDENTITY_NOT_ALLOWED,
            "the key 'tracker' is a tracker agent's key: it cannot register as a peer agent "
            "(make a peer key with `keys init peer:NAME`)",
        )
        coordinator = data.hello(keys, "coordinator", ServiceKind.PEER_AGENT, "coordinator-pa")
        assert isinstance(coordinator, Welcome)
    finally:
        data.close()
