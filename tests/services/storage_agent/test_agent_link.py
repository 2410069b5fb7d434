"""The storage agent's coordinator link and keys: ``AgentInfo``, heartbeats, a restarted
coordinator that finds every torrent still open, and the CURVE data endpoint.

The test plays the coordinator and the peer agents with blocking pyzmq (see ``harness.py``);
for CURVE it makes a keys folder with ``zmq.auth.create_certificates`` as ``keys init`` does.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth

from torviz.services.storage_agent.agent import advertised_endpoint
from torviz.shared.bus import (
    BUS_PROTOCOL_VERSION,
    AgentInfo,
    CheckProgress,
    Heartbeat,
    OpenTorrent,
    PieceVerified,
    ServiceKind,
    TorrentOpened,
    Welcome,
    decode_frames,
    encode_frames,
    make_hello,
)
from torviz.shared.config import StorageAgentConfig

from .harness import (
    AgentProcess,
    FakeCoordinator,
    PeerClient,
    recv_message,
    store_all,
    torrent_from_files,
)

STOP_BOUND = 5.0
SLOTS = max(4, 2 * StorageAgentConfig().hash_threads)  # the capacity told to the coordinator


def small_torrent() -> Any:
    rng = random.Random(11)
    files = [("a.bin", rng.randbytes(7000)), ("sub/b.bin", rng.randbytes(9000))]
    return torrent_from_files("linked", files, 4096)


def test_agent_info_follows_every_welcome_and_silence_means_hello_again(
    start_agent: Any, coordinator: FakeCoordinator, short_dir: Path
) -> None:
    agent: AgentProcess = start_agent()
    routing, hello, _ = recv_message(coordinator.sock)
    coordinator.identity = routing[0]
    coordinator.send(Welcome(BUS_PROTOCOL_VERSION, "coordinator", "coord-test", 0.1))
    offered = AgentInfo(
        capacity=SLOTS,
        listen_address=None,
        data_endpoint=f"ipc://{short_dir}/data",
        curve_public_key="",
    )
    assert coordinator.recv(2.0) == offered  # before anything else
    assert [coordinator.recv(2.0), coordinator.recv(2.0)] == [Heartbeat(1), Heartbeat(2)]
    # The test coordinator never answers: after 3 x 0.1 s of silence the agent says Hello again.
    assert coordinator.welcome(timeout=3.0) == hello
    assert coordinator.info == offered
    assert "lost the coordinator" in agent.log()


def test_a_restarted_coordinator_finds_every_torrent_still_open(
    start_agent: Any,
    coordinator: FakeCoordinator,
    zmq_context: zmq.Context[Any],
    short_dir: Path,
    tmp_path: Path,
) -> None:
    agent: AgentProcess = start_agent()
    coordinator.welcome(heartbeat_interval=0.3)
    torrent, save = small_torrent(), tmp_path / "downloads"
    coordinator.send(OpenTorrent(torrent.info_hash, torrent.raw_info, str(save)))
    assert coordinator.expect(TorrentOpened).have == b"\x00"
    client = PeerClient(zmq_context, f"ipc://{short_dir}/data", "pa1")
    assert isinstance(client.hello(), Welcome)
    assert store_all(coordinator, torrent, [client], [0, 1]) == {0, 1}

    # A new coordinator: the agent's next heartbeat is answered hello_first; it says Hello.
    coordinator.replace()
    coordinator.welcome(hello_first=True)
    assert coordinator.info is not None and coordinator.info.capacity == SLOTS
    assert "torrents stay open" in agent.log()

    # It opens the torrent again, twice: both answered from what the agent holds, no check.
    started = time.monotonic()
    for _ in range(2):
        coordinator.send(OpenTorrent(torrent.info_hash, torrent.raw_info, str(save)))
    first, second = coordinator.expect(TorrentOpened), coordinator.expect(TorrentOpened)
    assert first.have == second.have == bytes([0b1100_0000])
    assert time.monotonic() - started < 2.0
    assert not any(isinstance(m, CheckProgress) for m in coordinator.backlog)
    # The data link never noticed: pieces flow on, to the new coordinator.
    client.store(torrent.info_hash, 2, torrent.piece(2), ["pa1/2"])
    assert coordinator.expect(PieceVerified) == PieceVerified(torrent.info_hash, 2)


def test_a_non_local_data_endpoint_needs_keys_and_missing_keys_are_one_line(
    start_agent: Any, short_dir: Path
) -> None:
    wildcard: AgentProcess = start_agent(data="tcp://0.0.0.0:*")
    assert wildcard.wait(STOP_BOUND) == 2
    assert "refusing to bind tcp://0.0.0.0:* without CURVE keys" in wildcard.log()
    missing: AgentProcess = start_agent(
        data="tcp://127.0.0.1:*", extra=["--keys", str(short_dir / "no-keys")]
    )
    assert missing.wait(STOP_BOUND) == 2
    assert "does not exist" in missing.log()
    for agent in (wildcard, missing):
        assert "Traceback" not in agent.log() and len(agent.log().strip().splitlines()) == 1


def _keys(folder: Path) -> dict[str, tuple[bytes, bytes]]:
    """A keys folder as ``keys init`` makes it: the coordinator's pair, the storage agent's,
    and an authorized peer agent ``pa1``; returns name -> (public, secret)."""
    made = {}
    for name, where in [("coordinator", folder), ("sa-test", folder), ("pa1", folder / "pa1")]:
        where.mkdir(parents=True, exist_ok=True)
        public_file, secret_file = zmq.auth.create_certificates(where, name)
        made[name] = zmq.auth.load_certificate(secret_file)
        if name == "pa1":
            (folder / "authorized").mkdir(exist_ok=True)
            (folder / "authorized" / "pa1.key").write_bytes(Path(public_file).read_bytes())
    made["stranger"] = zmq.curve_keypair()
    return made  # type: ignore[return-value]


class _CurveCoordinator(FakeCoordinator):
    """The fake coordinator as a CURVE server on tcp (no ZAP handler here: any client key)."""

    def __init__(self, context: zmq.Context[Any], keys: tuple[bytes, bytes]) -> None:
        self.keys = keys
        super().__init__(context, "tcp://127.0.0.1:*")

    def _bind(self, endpoint: str) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys[0])
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys[1])
        sock.bind(endpoint)
        return sock


def _curve_peer(
    context: zmq.Context[Any], endpoint: str, name: str, keys: tuple[bytes, bytes], server: bytes
) -> zmq.Socket[Any]:
    sock: zmq.Socket[Any] = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, name.encode())
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys[0])
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys[1])
    sock.setsockopt(zmq.CURVE_SERVERKEY, server)
    sock.connect(endpoint)
    sock.send_multipart(encode_frames(make_hello(ServiceKind.PEER_AGENT, name, "test", 1)))
    return sock


def test_with_keys_both_links_use_curve_and_the_data_endpoint_admits_authorized_peers(
    zmq_context: zmq.Context[Any], short_dir: Path
) -> None:
    keys = _keys(short_dir / "keys")
    coordinator = _CurveCoordinator(zmq_context, keys["coordinator"])
    agent = AgentProcess.start(
        coordinator.endpoint,
        "tcp://127.0.0.1:*",
        short_dir,
        extra=["--keys", str(short_dir / "keys")],
    )
    try:
        coordinator.welcome()
        info = coordinator.info
        assert info is not None and info.curve_public_key == keys["sa-test"][0].decode()
        assert info.data_endpoint.startswith("tcp://127.0.0.1:")
        assert not info.data_endpoint.endswith(":*")

        server = keys["sa-test"][0]
        admitted = _curve_peer(zmq_context, info.data_endpoint, "pa1", keys["pa1"], server)
        stranger = _curve_peer(zmq_context, info.data_endpoint, "px", keys["stranger"], server)
        try:
            assert admitted.poll(5000), agent.log()
            answer, _ = decode_frames(admitted.recv_multipart())
            assert isinstance(answer, Welcome) and answer.server_id == "sa-test"
            assert not stranger.poll(500)  # its key is not authorized: ZAP refuses it
        finally:
            admitted.close(linger=0)
            stranger.close(linger=0)
        assert "Traceback" not in agent.log()
    finally:
        agent.kill()
        coordinator.sock.close(linger=0)


@pytest.mark.parametrize(
    ("bound", "coordinator", "expected"),
    [
        ("tcp://0.0.0.0:7701", "tcp://127.0.0.1:7700", "tcp://127.0.0.1:7701"),
        ("tcp://127.0.0.1:7701", "tcp://10.0.0.1:7700", "tcp://127.0.0.1:7701"),
        ("ipc:///tmp/x/data", "tcp://127.0.0.1:7700", "ipc:///tmp/x/data"),
        ("tcp://0.0.0.0:7701", "ipc:///tmp/x/bus", "tcp://0.0.0.0:7701"),  # no route: as bound
    ],
)
def test_a_wildcard_data_endpoint_is_told_with_the_address_toward_the_coordinator(
    bound: str, coordinator: str, expected: str
) -> None:
    assert advertised_endpoint(bound, coordinator) == expected


def test_a_wildcard_ipv6_endpoint_is_told_in_brackets() -> None:
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6")
    assert advertised_endpoint("tcp://[::]:7701", "tcp://[::1]:7700") == "tcp://[::1]:7701"
