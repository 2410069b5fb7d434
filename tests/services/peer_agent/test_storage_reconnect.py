"""A storage link that stops getting answers connects again and sends its pieces again.

The ``StorageLink`` runs on the (unpatched) gevent hub of the pytest process over real
ZeroMQ on ipc, with short limits (probes every 0.2 s, a reconnect after 1 s of silence). The
storage agent is a plain pyzmq ROUTER polled without blocking the hub (``FakeStorage``), with
``ROUTER_HANDOVER`` as the real one: it can play deaf (drop everything the link's first
connection sends, as a link whose connection was taken over or whose peer stopped reading
would see) or busy (answer probes, withhold every ``PieceStored``). The test plays the peer
agent's actor: it hands the link what arrives and ticks it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import pytest
import zmq

from torviz.services.peer_agent.core.deliveries import Deliveries
from torviz.services.peer_agent.storage_link import StorageLink
from torviz.shared.bus import (
    BUS_PROTOCOL_VERSION,
    Heartbeat,
    Hello,
    Message,
    PieceStored,
    ServiceKind,
    StorePiece,
    StoreRefusal,
    Welcome,
    decode_frames,
    encode_frames,
    make_hello,
)
from torviz.shared.runtime.sockets import Incoming
from torviz.shared.types import InfoHash

IH = InfoHash(hashlib.sha1(b"reconnect").digest())
IDENTITY = b"pa1/0000aaaa"
PIECES = 5
WAIT = 10.0


class FakeStorage:
    """A storage agent's data ROUTER, pumped by the test."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        self.sock: zmq.Socket[Any] = context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.sock.bind(endpoint)
        self.deaf_until_hello = 0
        """Drop everything until this many ``Hello`` have arrived (0: hear everything)."""
        self.answer_pieces = True
        self.answer_probes = True
        self.hellos = 0
        self.heard: list[tuple[bytes, Message]] = []
        """What was not dropped, with the sender's identity."""

    def pump(self) -> None:
        while True:
            try:
                sender, *frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            message, _ = decode_frames(frames)
            if isinstance(message, Hello):
                self.hellos += 1
            if self.hellos < self.deaf_until_hello:
                continue
            self.heard.append((sender, message))
            match message:
                case Hello():
                    self._send(sender, Welcome(BUS_PROTOCOL_VERSION, "storage_agent", "sa", 1.0))
                case StorePiece(info_hash=info_hash, piece=piece) if self.answer_pieces:
                    self._send(sender, PieceStored(info_hash, piece, StoreRefusal.NONE))
                case Heartbeat(seq=seq) if self.answer_probes:
                    self._send(sender, Heartbeat(seq))

    def _send(self, to: bytes, message: Message) -> None:
        self.sock.send_multipart([to, *encode_frames(message)])


@pytest.fixture
def storage(short_dir: Path) -> Iterator[FakeStorage]:
    context: zmq.Context[Any] = zmq.Context()
    fake = FakeStorage(context, f"ipc://{short_dir}/data")
    try:
        yield fake
    finally:
        context.destroy(linger=0)


class Actor:
    """The peer agent's side: a started link, what arrives handed to it, ticks."""

    def __init__(self, endpoint: str, storage: FakeStorage) -> None:
        self.inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
        self.storage = storage
        self.link = StorageLink(
            endpoint,
            self.inbox.put,
            identity=IDENTITY.decode(),
            hello=lambda: make_hello(ServiceKind.PEER_AGENT, "pa1", "here", 1),
            deliveries=Deliveries(probe_interval=0.2, reconnect_after=1.0, answer_timeout=60.0),
        )
        self.link.start()

    def run_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out after {timeout} s: {what}"
            self.run_for(0.02)

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            self.storage.pump()
            while not self.inbox.empty():
                self.link.received(self.inbox.get_nowait().message)
            self.link.tick(time.monotonic())
            if time.monotonic() >= deadline:
                return
            gevent.sleep(0.01)


@pytest.fixture
def actor(storage: FakeStorage, short_dir: Path) -> Iterator[Actor]:
    made = Actor(f"ipc://{short_dir}/data", storage)
    try:
        yield made
    finally:
        made.link.close()


def store_pieces(actor: Actor) -> None:
    for piece in range(PIECES):
        actor.link.store(StorePiece(IH, piece, ("pa1/1",)), bytearray([piece]) * 100)


def test_a_link_whose_storage_agent_stopped_answering_connects_again_and_resends(
    actor: Actor, storage: FakeStorage, caplog: pytest.LogCaptureFixture
) -> None:
    storage.deaf_until_hello = 2  # the first connection is heard by nobody
    with caplog.at_level(logging.WARNING, logger="torviz.services.peer_agent.storage_link"):
        store_pieces(actor)
        actor.run_until(lambda: not actor.link.deliveries, WAIT, "every piece answered")
    assert actor.link.reconnects == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "no answer from the storage agent" in warnings[0]
    assert "connecting again and sending them again" in warnings[0]
    # On the new connection: Hello first, then every piece in the order first sent, under the
    # same routing identity.
    kinds = [(type(m).__name__, getattr(m, "piece", None)) for _, m in storage.heard]
    assert kinds[0] == ("Hello", None)
    assert [piece for name, piece in kinds if name == "StorePiece"] == list(range(PIECES))
    assert {sender for sender, _ in storage.heard} == {IDENTITY}


def test_a_busy_storage_agent_that_answers_probes_keeps_the_link(
    actor: Actor, storage: FakeStorage
) -> None:
    storage.answer_pieces = False  # hashing a backlog: no PieceStored for a while
    store_pieces(actor)
    actor.run_for(3.0)  # three times the reconnect limit
    assert actor.link.reconnects == 0
    assert sum(isinstance(m, Heartbeat) for _, m in storage.heard) >= 5  # probed, answered
    assert len(actor.link.deliveries) == PIECES
    storage.answer_pieces = True
    for sender, message in list(storage.heard):
        if isinstance(message, StorePiece):
            storage.sock.send_multipart(
                [
                    sender,
                    *encode_frames(
                        PieceStored(message.info_hash, message.piece, StoreRefusal.NONE)
                    ),
                ]
            )
    actor.run_until(lambda: not actor.link.deliveries, WAIT, "every piece answered")
    assert storage.hellos == 1
