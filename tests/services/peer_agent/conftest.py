"""Fixtures for the peer agent tests: the agent process and everything it talks to."""

from __future__ import annotations

import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testing.peer_agent import AgentProcess, Counterparts
from testing.swarm import next_loopback_address
from torviz.shared.bus import AgentInfo, AttachTorrent, ConnectPeer, PeerConnectFailed
from torviz.shared.types import InfoHash, PeerAddress, PeerId

from .fake_peers import Behaviour, FakePeer

OUR_PEER_ID = PeerId(b"-TV0100-" + b"t" * 12)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for ipc:// endpoints (their paths are limited to ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="tvz-pa-", dir="/tmp") as path:
        yield Path(path)


@pytest.fixture
def counterparts(short_dir: Path) -> Iterator[Counterparts]:
    parts = Counterparts(short_dir)
    try:
        yield parts
    finally:
        parts.close()


@pytest.fixture
def start_agent(
    short_dir: Path, counterparts: Counterparts
) -> Iterator[Callable[..., AgentProcess]]:
    """Start the agent (connected to ``counterparts``) and wait for its Hello."""
    started: list[AgentProcess] = []

    def start(*extra: str, **settings: object) -> AgentProcess:
        agent = AgentProcess(counterparts.bus_endpoint, short_dir, extra=extra, settings=settings)
        started.append(agent)
        counterparts.connect_agent()
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.stop()
            # Shown by pytest only when the test failed.
            print(f"--- {agent.agent_id} stderr (tail) ---", file=sys.stderr)
            print("\n".join(agent.stderr().splitlines()[-80:]), file=sys.stderr)


@pytest.fixture
def fake_peer() -> Iterator[Callable[[Behaviour], FakePeer]]:
    """Start fake peers on fresh loopback addresses; all are closed after the test."""
    peers: list[FakePeer] = []

    def start(behaviour: Behaviour) -> FakePeer:
        peer = FakePeer(next_loopback_address(), behaviour)
        peers.append(peer)
        return peer

    try:
        yield start
    finally:
        for peer in peers:
            peer.close()


def attach_message(
    counterparts: Counterparts,
    info_hash: InfoHash,
    piece_length: int,
    total_length: int,
    have: bytes | None = None,
) -> AttachTorrent:
    num_pieces = -(-total_length // piece_length)
    return AttachTorrent(
        info_hash=info_hash,
        piece_length=piece_length,
        total_length=total_length,
        num_pieces=num_pieces,
        peer_id=OUR_PEER_ID,
        have=have if have is not None else bytes((num_pieces + 7) // 8),
        private=False,
        storage_endpoint=counterparts.data_endpoint,
        storage_public_key="",
    )


def attached(counterparts: Counterparts, message: AttachTorrent) -> None:
    """Send ``AttachTorrent`` and wait until the agent has handled it.

    There is no reply to an attach, so a ``ConnectPeer`` to a port nobody listens on follows
    it: the agent handles bus messages in order, and its ``PeerConnectFailed`` names why it
    failed (``connection_refused``, not ``unknown_torrent``) once the torrent is attached.
    """
    counterparts.send(message)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = PeerAddress("127.0.0.1", probe.getsockname()[1])
    counterparts.send(ConnectPeer(message.info_hash, closed))
    failed = counterparts.expect(PeerConnectFailed, lambda m: m.address == closed)
    assert failed.reason == "connection_refused", failed


def listen_address(counterparts: Counterparts) -> PeerAddress:
    """The address the peer agent announced in its ``AgentInfo`` (it listens there)."""
    info = counterparts.expect(AgentInfo, lambda m: not m.data_endpoint)  # not the storage's
    assert info.listen_address is not None, info
    return info.listen_address
