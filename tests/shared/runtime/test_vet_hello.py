"""A bound endpoint's owner vets each Hello, and asks whether an identity still has a
connection: over real ZeroMQ on ipc, on the (unpatched) gevent hub of the pytest process."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import pytest

from torviz.shared.bus import (
    Hello,
    HelloPolicy,
    Rejected,
    RejectReason,
    ServiceKind,
    Welcome,
    make_hello,
)
from torviz.shared.runtime.sockets import BusSocket, Incoming

POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="coord",
    accepts=frozenset({ServiceKind.PEER_AGENT}),
    heartbeat_interval=2.0,
)
WAIT = 5.0


def next_message(queue: gevent.queue.Queue[Incoming]) -> Any:
    try:
        return queue.get(timeout=WAIT).message
    except gevent.queue.Empty:
        raise AssertionError(f"nothing arrived within {WAIT}s") from None


@pytest.fixture
def sockets() -> Any:
    made: list[BusSocket] = []
    try:
        yield made
    finally:
        for bus in made:
            bus.close(linger=0)


def dealer(context: Any, endpoint: str, identity: str, made: list[BusSocket]) -> Any:
    inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    bus = BusSocket.dealer(inbox.put, name=identity, identity=identity, context=context)
    made.append(bus)
    bus.connect(endpoint)
    bus.start()
    return bus, inbox


def test_a_vetoed_hello_is_answered_with_the_owners_refusal_and_not_welcomed(
    green_context: Any, short_dir: Path, sockets: list[BusSocket], caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[tuple[bytes, str]] = []

    def vet(sender: bytes, hello: Hello) -> Rejected | None:
        asked.append((sender, hello.agent_id))
        return (
            Rejected(RejectReason.DUPLICATE_AGENT, "already here")
            if sender.endswith(b"/2")
            else None
        )

    seen: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    server = BusSocket.router(
        seen.put, name="bus", hello_policy=POLICY, context=green_context, vet_hello=vet
    )
    sockets.append(server)
    endpoint = server.bind(f"ipc://{short_dir}/bus")
    server.start()
    hello = make_hello(ServiceKind.PEER_AGENT, "pa1", "here", os.getpid())
    first, first_inbox = dealer(green_context, endpoint, "pa1/1", sockets)
    first.send(hello)
    assert isinstance(next_message(first_inbox), Welcome)
    with caplog.at_level(logging.WARNING, logger="torviz.shared.runtime.sockets"):
        second, second_inbox = dealer(green_context, endpoint, "pa1/2", sockets)
        second.send(hello)
        assert next_message(second_inbox) == Rejected(RejectReason.DUPLICATE_AGENT, "already here")
    assert asked == [(b"pa1/1", "pa1"), (b"pa1/2", "pa1")]
    assert set(server.welcomed) == {b"pa1/1"}
    assert "rejected" not in caplog.text  # the owner logs its refusals, not the socket
    assert next_message(seen) == hello  # the owner hears the welcomed Hello only
    gevent.sleep(0.05)
    assert seen.empty()
    with pytest.raises(ValueError, match="vet_hello needs a hello_policy"):
        BusSocket.router(seen.put, name="x", context=green_context, vet_hello=vet)


def test_reachable_tells_a_connected_identity_from_one_whose_process_is_gone(
    green_context: Any, short_dir: Path, sockets: list[BusSocket]
) -> None:
    server = BusSocket.router(lambda incoming: None, name="bus", context=green_context)
    sockets.append(server)
    endpoint = server.bind(f"ipc://{short_dir}/bus")
    server.start()
    bus, inbox = dealer(green_context, endpoint, "pa1/1", sockets)
    bus.send(make_hello(ServiceKind.PEER_AGENT, "pa1", "here", os.getpid()))
    deadline = time.monotonic() + WAIT
    while not server.reachable(b"pa1/1"):  # connected once its first message is in
        assert time.monotonic() < deadline, "never reachable"
        gevent.sleep(0.01)
    assert not server.reachable(b"pa1/never")
    assert next_message(inbox).seq == 0  # the probe is a Heartbeat the peer may ignore
    bus.close(linger=0)  # the process is gone: its connection closes
    deadline = time.monotonic() + WAIT
    while server.reachable(b"pa1/1"):
        assert time.monotonic() < deadline, "still reachable after its socket closed"
        gevent.sleep(0.01)
    with pytest.raises(ValueError, match="only a ROUTER"):
        bus.reachable(b"x")
