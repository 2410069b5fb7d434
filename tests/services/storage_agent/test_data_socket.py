"""The data endpoint's socket: a low high-water mark bounds what queues behind a busy agent.

``BusSocket(hwm=...)`` (shared/runtime/sockets.py) sets ZeroMQ's SNDHWM and RCVHWM. Here a
ROUTER whose handler blocks (as the storage agent's does when every piece slot is taken) is
flooded with 1 MiB messages by a non-blocking DEALER: with a low mark the sender is told to wait
(``zmq.Again``) after a handful; with ZeroMQ's default it queues far more. The pytest process is
not patched: the socket's greenlets run on the plain gevent hub, driven by ``gevent.sleep``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import pytest
import zmq
import zmq.green

from torviz.shared.bus import StorePiece, encode_frames
from torviz.shared.runtime.sockets import BusSocket, Incoming
from torviz.shared.types import InfoHash

PIECE = encode_frames(StorePiece(InfoHash(b"\x42" * 20), 0, ()), bytes(1 << 20))
SENDER_HWM = 4
ATTEMPTS = 120


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tvz-hwm-", dir="/tmp") as path:
        yield Path(path)


def queued_before_the_sender_must_wait(hwm: int | None, endpoint: str) -> int:
    """How many 1 MiB messages a DEALER gets out while the ROUTER's handler is stuck."""
    green: zmq.Context[Any] = zmq.green.Context()
    plain: zmq.Context[Any] = zmq.Context()
    gate = gevent.event.Event()
    handled: list[Incoming] = []

    def handler(incoming: Incoming) -> None:
        handled.append(incoming)
        gate.wait()  # the receiver greenlet stops reading, as when the agent is busy

    router = BusSocket.router(handler, name="data", hwm=hwm, context=green)
    try:
        router.bind(endpoint)
        router.start()
        dealer = plain.socket(zmq.DEALER)
        dealer.setsockopt(zmq.SNDHWM, SENDER_HWM)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoint)
        sent = refused_in_a_row = 0
        while sent < ATTEMPTS and refused_in_a_row < 10:
            try:
                dealer.send_multipart(PIECE, flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                refused_in_a_row += 1
                gevent.sleep(0.02)  # let the receiver and ZeroMQ's threads catch up
            else:
                sent += 1
                refused_in_a_row = 0
                gevent.sleep(0)
        assert len(handled) == 1  # the handler really was stuck on the first message
        return sent
    finally:
        gate.set()
        router.close(linger=0)
        plain.destroy(linger=0)
        green.destroy(linger=0)


def test_a_low_hwm_makes_senders_wait(ipc_dir: Path) -> None:
    bounded = queued_before_the_sender_must_wait(8, f"ipc://{ipc_dir}/low")
    # the handler's message + 8 in the ROUTER's pipe + 4 in the DEALER's + what is in transit
    assert bounded <= 1 + 8 + SENDER_HWM + 4
    unbounded = queued_before_the_sender_must_wait(None, f"ipc://{ipc_dir}/default")
    assert unbounded == ATTEMPTS  # ZeroMQ's default (1000) takes everything we send


def test_hwm_sets_both_marks_and_must_be_positive() -> None:
    context: zmq.Context[Any] = zmq.green.Context()
    try:
        sock = BusSocket.router(lambda _: None, name="data", hwm=64, context=context)
        raw = sock._socket  # the option itself: nothing else shows it
        assert (raw.getsockopt(zmq.SNDHWM), raw.getsockopt(zmq.RCVHWM)) == (64, 64)
        sock.close(linger=0)
        default = BusSocket.dealer(lambda _: None, name="bus", context=context)
        assert default._socket.getsockopt(zmq.RCVHWM) == 1000
        default.close(linger=0)
        with pytest.raises(ValueError, match="high-water mark"):
            BusSocket.router(lambda _: None, name="data", hwm=0, context=context)
    finally:
        context.destroy(linger=0)
