"""A real peer agent process and its counterparts: a fake coordinator and a fake storage agent.

Strategy: the agent under test runs as its own gevent-patched process (``AgentProcess``). The
caller plays every other party with plain blocking libraries, because the pytest (or benchmark)
process is not patched: ``Counterparts`` binds the coordinator's bus and the storage data
endpoint as two pyzmq ROUTERs and pumps both from one poller (each wait is bounded). The fake
peers the tests add live in ``tests/services/peer_agent/fake_peers.py``.

The fake storage agent behaves as the real one does on its data endpoint: it answers ``Hello``,
answers anything else from a peer it has not welcomed with ``Rejected("hello_first")``, and
acknowledges each ``StorePiece`` with ``PieceStored(..., "")`` unless the test withholds the
answers (``ack_pieces``) to answer them itself (``answer_piece``). ``restart_storage`` closes
its ROUTER and binds a new one on the same endpoint, as a restarted storage agent would.

Rules:
- Every wait has a timeout and fails with what was received so far.
- Every process started here is stopped by its owner's ``stop`` or ``close`` (the fixtures in
  ``tests/services/peer_agent/conftest.py`` call them in ``finally``).
- The benchmark (``bench/peer_agent_throughput.py``) reuses ``Counterparts`` with
  ``keep_data=False``: storage then only counts bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import zmq

from testing.swarm import next_loopback_address
from torviz.shared.bus import (
    Heartbeat,
    Hello,
    HelloPolicy,
    Message,
    PieceStored,
    Rejected,
    RejectReason,
    ServiceKind,
    StorePiece,
    StoreRefusal,
    Welcome,
    check_hello,
    decode_frames,
    encode_frames,
)
from torviz.shared.types import InfoHash

REPO = Path(__file__).resolve().parents[1]
M = TypeVar("M", bound=Message)


class AgentProcess:
    """``python -m torviz.services.peer_agent`` as a child process; ``stop`` always reaps it.

    Unless ``extra`` names its own ``--config``, the agent gets a config file whose
    ``[peer_agent]`` section is ``settings`` plus a ``listen_host`` of its own on loopback
    (``listen_host``), so that its listener never takes a port of another test's peers.
    """

    def __init__(
        self,
        bus: str,
        workdir: Path,
        *,
        agent_id: str = "pa1",
        extra: tuple[str, ...] = (),
        log_level: str = "DEBUG",
        settings: Mapping[str, object] | None = None,
    ):
        self.agent_id = agent_id
        self.listen_host = str((settings or {}).get("listen_host", next_loopback_address()))
        if "--config" not in extra:
            config = workdir / f"{agent_id}.toml"
            config.write_text(
                _peer_agent_toml({"listen_host": self.listen_host, **(settings or {})})
            )
            extra = ("--config", str(config), *extra)
        self.stderr_path = workdir / f"{agent_id}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "torviz.services.peer_agent",
                    "--coordinator",
                    bus,
                    "--agent-id",
                    agent_id,
                    "--log-level",
                    log_level,
                    "--parent-pid",
                    str(os.getpid()),
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                cwd=REPO,
            )

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _peer_agent_toml(settings: Mapping[str, object]) -> str:
    """A ``[peer_agent]`` section (strings, numbers and lists of numbers)."""
    lines = ["[peer_agent]"]
    for key, value in settings.items():
        if isinstance(value, tuple | list):
            lines.append(f"{key} = [{', '.join(str(item) for item in value)}]")
        elif isinstance(value, str):
            lines.append(f"{key} = {json.dumps(value)}")
        else:
            lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n"


@dataclass
class StoredPiece:
    info_hash: InfoHash
    piece: int
    contributors: tuple[str, ...]
    data: bytes | None
    length: int
    sender: bytes = b""
    """The routing id of the peer agent that sent it (``answer_piece`` replies there)."""


@dataclass
class Counterparts:
    """The coordinator's bus and the storage data endpoint, bound as ROUTERs in this process.

    Args:
        directory: where the ipc sockets go (a short path: ipc paths are limited).
        keep_data: keep each stored piece's bytes (tests) or only count them (benchmark).
    """

    directory: Path
    keep_data: bool = True
    bus_endpoint: str = ""
    data_endpoint: str = ""
    agent: bytes | None = None
    storage: bytes | None = None
    """The routing id of a real storage agent on the bus, once it said hello."""
    inbox: list[Message] = field(default_factory=list)
    pieces: list[StoredPiece] = field(default_factory=list)
    stored_bytes: int = 0
    on_message: Callable[[Message], None] | None = None
    """Called with each coordinator message as it arrives (the benchmark answers from it)."""
    reject_agents: bool = False
    """Answer the agent's Hello with ``Rejected`` (as a coordinator of another kind would)."""
    heartbeat_interval: float = 30.0
    """Told in ``Welcome``; the agent counts us lost after three intervals of silence, so the
    default outlasts any test that does not pump for a while."""
    ack_pieces: bool = True
    """Answer each ``StorePiece`` with ``PieceStored(..., "")`` at once."""
    storage_data: list[Message] = field(default_factory=list)
    """Every message the fake storage agent received (``StorePiece`` included), in order."""

    def __post_init__(self) -> None:
        self.context = zmq.Context()
        self.bus = self.context.socket(zmq.ROUTER)
        self.bus.setsockopt(zmq.LINGER, 0)
        self.bus.setsockopt(zmq.RCVHWM, 0)
        self.bus.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.bus_endpoint = f"ipc://{self.directory}/bus"
        self.data_endpoint = f"ipc://{self.directory}/data"
        self.bus.bind(self.bus_endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.bus, zmq.POLLIN)
        self._bind_storage()
        self._storage = HelloPolicy(
            ServiceKind.STORAGE_AGENT, "fake-storage", {ServiceKind.PEER_AGENT}, 1.0
        )
        self.storage_hellos = 0
        self.welcomes = 0
        """``Welcome``s sent to the peer agent (each is a registration)."""
        self.silent = False
        """Drop everything from the peer agent and answer nothing (a coordinator gone quiet)."""
        self._beat_at = 0.0

    def _bind_storage(self) -> None:
        self.data = self.context.socket(zmq.ROUTER)
        self.data.setsockopt(zmq.LINGER, 0)
        self.data.setsockopt(zmq.RCVHWM, 0)
        self.data.bind(self.data_endpoint)
        self.poller.register(self.data, zmq.POLLIN)
        self.storage_welcomed: set[bytes] = set()

    def restart_storage(self) -> None:
        """Close the storage ROUTER and bind a new one on the same endpoint (a restart): what
        the old one held is lost, and the new one knows no peer agent."""
        self.poller.unregister(self.data)
        self.data.close(linger=0)
        self._bind_storage()

    def close(self) -> None:
        self.context.destroy(linger=0)

    # -- sending --------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Send a command to the agent (after its Hello)."""
        assert self.agent is not None, "the agent has not said hello"
        self.bus.send_multipart([self.agent, *encode_frames(message)])

    def answer_piece(self, stored: StoredPiece, reason: StoreRefusal = StoreRefusal.NONE) -> None:
        """Send the ``PieceStored`` of a piece the fake storage agent received."""
        answer = PieceStored(stored.info_hash, stored.piece, reason)
        self.data.send_multipart([stored.sender, *encode_frames(answer)])

    def heartbeat(self) -> None:
        """Send the agents a ``Heartbeat`` (anything we send keeps us alive in their eyes)."""
        for identity in (self.agent, self.storage):
            if identity is not None:
                self.bus.send_multipart([identity, *encode_frames(Heartbeat(0))])

    def send_storage(self, message: Message) -> None:
        """Send a command to the real storage agent (after its Hello)."""
        assert self.storage is not None, "the storage agent has not said hello"
        self.bus.send_multipart([self.storage, *encode_frames(message)])

    # -- receiving ------------------------------------------------------------------------------

    def pump(self, timeout: float) -> None:
        """Handle whatever arrives within ``timeout`` seconds (returns after the first batch).

        Also sends the agent a ``Heartbeat`` every half ``heartbeat_interval`` (unless silent),
        so that it never counts us lost while the test pumps.
        """
        now = time.monotonic()
        if self.agent is not None and not self.silent and now >= self._beat_at:
            self._beat_at = now + self.heartbeat_interval / 2
            self.heartbeat()
        timeout = min(timeout, self.heartbeat_interval / 2)
        ready = dict(self.poller.poll(int(timeout * 1000)))
        for _ in range(10_000):
            handled = False
            if self.bus in ready and self._handle_bus():
                handled = True
            if self.data in ready and self._handle_data():
                handled = True
            if not handled:
                return
            ready = dict(self.poller.poll(0))

    def _handle_bus(self) -> bool:
        try:
            frames = self.bus.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return False
        sender, *rest = frames
        message, _ = decode_frames(rest)
        if self.silent and sender != self.storage:
            return True
        if isinstance(message, Hello):
            if message.service == ServiceKind.STORAGE_AGENT:
                self.storage = sender
            else:
                self.agent = sender
            policy = HelloPolicy(
                ServiceKind.COORDINATOR,
                "fake-coordinator",
                {ServiceKind.PEER_AGENT, ServiceKind.STORAGE_AGENT},
                self.heartbeat_interval,
            )
            if self.reject_agents:
                policy = HelloPolicy(ServiceKind.COORDINATOR, "picky", {ServiceKind.CLI}, 1.0)
            answer = check_hello(message, policy)
            if isinstance(answer, Welcome) and sender == self.agent:
                self.welcomes += 1
            self.bus.send_multipart([sender, *encode_frames(answer)])
        self.inbox.append(message)
        if self.on_message is not None:
            self.on_message(message)
        return True

    def _handle_data(self) -> bool:
        try:
            frames = self.data.recv_multipart(zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        sender, *rest = frames
        identity = sender.bytes
        message, data = decode_frames([frame.buffer for frame in rest])
        self.storage_data.append(message)
        if isinstance(message, Hello):
            self.storage_hellos += 1
            answer = check_hello(message, self._storage)
            self.storage_welcomed.add(identity)
            self.data.send_multipart([identity, *encode_frames(answer)])
        elif identity not in self.storage_welcomed:
            hello_first = Rejected(RejectReason.HELLO_FIRST, "fake storage: say Hello first")
            self.data.send_multipart([identity, *encode_frames(hello_first)])
        elif isinstance(message, StorePiece):
            assert data is not None
            self.stored_bytes += data.nbytes
            kept = bytes(data) if self.keep_data else None
            stored = StoredPiece(
                message.info_hash, message.piece, message.contributors, kept, data.nbytes, identity
            )
            self.pieces.append(stored)
            if self.ack_pieces:
                self.answer_piece(stored)
        return True

    def expect(
        self, kind: type[M], where: Callable[[M], bool] | None = None, timeout: float = 10.0
    ) -> M:
        """Take the first coordinator message of ``kind`` (matching ``where``) from the inbox."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.inbox):
                if isinstance(message, kind) and (where is None or where(message)):
                    del self.inbox[index]
                    return message
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [type(m).__name__ for m in self.inbox][-30:]
                raise AssertionError(f"no {kind.__name__} within {timeout} s; inbox: {seen}")
            self.pump(min(remaining, 0.2))

    def take_all(self, kind: type[M], where: Callable[[M], bool] | None = None) -> list[M]:
        """Remove and return every message of ``kind`` already received."""
        taken = [m for m in self.inbox if isinstance(m, kind) and (where is None or where(m))]
        self.inbox = [m for m in self.inbox if not any(m is t for t in taken)]
        return taken

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            self.pump(min(remaining, 0.1))

    def connect_agent(self, timeout: float = 10.0) -> None:
        """Wait for the agent's Hello (it is welcomed by ``pump``)."""
        self.expect(Hello, lambda m: m.service == ServiceKind.PEER_AGENT, timeout=timeout)
