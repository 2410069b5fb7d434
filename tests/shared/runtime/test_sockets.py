"""Bus sockets over real ZeroMQ: in one process, across two processes, and under hostile input."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import msgpack  # type: ignore[import-untyped]
import pytest
import zmq

from torviz.shared.bus import (
    BUS_PROTOCOL_VERSION,
    BlockRead,
    Heartbeat,
    HelloPolicy,
    ListTorrents,
    Rejected,
    ServiceKind,
    ShutdownAccepted,
    ShutdownRequested,
    StatusReport,
    StorePiece,
    Welcome,
    decode_frames,
    encode_frames,
    make_hello,
)
from torviz.shared.errors import BusError
from torviz.shared.runtime.sockets import (
    BusSocket,
    ControlClient,
    DaemonUnreachableError,
    Incoming,
    control_request,
)
from torviz.shared.types import InfoHash

from .conftest import ServiceProcess

IH = InfoHash(b"\x42" * 20)
STORE = StorePiece(IH, 0, ())
POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="coord",
    accepts=frozenset({ServiceKind.PEER_AGENT}),
    heartbeat_interval=2.0,
)
WAIT = 5.0  # seconds any single reply may take


def next_incoming(queue: gevent.queue.Queue[Incoming]) -> Incoming:
    try:
        incoming: Incoming = queue.get(timeout=WAIT)
    except gevent.queue.Empty:
        raise AssertionError(f"nothing arrived within {WAIT}s") from None
    return incoming


def raw_recv(sock: zmq.Socket[Any]) -> list[bytes]:
    """Receive on a plain zmq socket without blocking the gevent hub the servers run on."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            return sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            gevent.sleep(0.005)
    raise AssertionError(f"nothing arrived within {WAIT}s")


@pytest.fixture
def plain_context() -> Any:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture
def sockets() -> Any:
    """Collects BusSockets and closes them all at the end, even on failure."""
    made: list[BusSocket] = []
    try:
        yield made
    finally:
        for bus in made:
            bus.close(linger=0)


def echo_server(green_context: Any, endpoint: str, made: list[BusSocket]) -> tuple[BusSocket, str]:
    """A ROUTER with the hello gate that echoes StorePiece data back as BlockRead."""
    server: BusSocket

    def handle(incoming: Incoming) -> None:
        if isinstance(incoming.message, StorePiece):
            assert incoming.sender is not None
            reply = BlockRead(7, incoming.message.info_hash, incoming.message.piece, 0)
            server.send(reply, incoming.data, to=incoming.sender)

    server = BusSocket.router(handle, name="server", hello_policy=POLICY, context=green_context)
    made.append(server)
    bound = server.bind(endpoint)
    server.start()
    return server, bound


def client(green_context: Any, endpoint: str, made: list[BusSocket], name: str) -> Any:
    inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    bus = BusSocket.dealer(inbox.put, name=name, identity=name, context=green_context)
    made.append(bus)
    bus.connect(endpoint)
    bus.start()
    return bus, inbox


def test_dealer_and_router_exchange_hello_and_a_piece(
    green_context: Any, short_dir: Path, sockets: list[BusSocket]
) -> None:
    server, endpoint = echo_server(green_context, f"ipc://{short_dir}/bus", sockets)
    bus, inbox = client(green_context, endpoint, sockets, "pa1")

    assert bus.send(make_hello(ServiceKind.PEER_AGENT, "pa1", "here", os.getpid()))
    welcome = next_incoming(inbox)
    assert isinstance(welcome.message, Welcome) and welcome.sender is None
    assert set(server.welcomed) == {b"pa1"}

    piece = os.urandom(1 << 20)
    assert bus.send(StorePiece(IH, 3, ("pa1/1",)), piece)
    echoed = next_incoming(inbox)
    assert echoed.message == BlockRead(7, IH, 3, 0)
    assert echoed.data is not None and echoed.data == piece
    assert server.stats.received == 2 and server.stats.malformed == 0


def test_malformed_input_is_dropped_and_counted_while_good_messages_flow(
    green_context: Any, plain_context: Any, short_dir: Path, sockets: list[BusSocket]
) -> None:
    inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    server = BusSocket.router(inbox.put, name="server", hello_policy=POLICY, context=green_context)
    sockets.append(server)
    endpoint = server.bind(f"ipc://{short_dir}/bus")
    server.start()

    raw = plain_context.socket(zmq.DEALER)
    raw.connect(endpoint)

    def good(seq: int) -> list[bytes | memoryview]:
        return encode_frames(Heartbeat(seq))

    store = encode_frames(STORE, b"x")
    hello = make_hello(ServiceKind.PEER_AGENT, "raw", "here", 1)
    raw.send_multipart(good(0))  # before Hello: not welcomed
    raw.send_multipart(encode_frames(hello))
    bad: list[list[Any]] = [
        [b"\xc1"],
        [b""],
        [msgpack.packb([127, 1])],
        [msgpack.packb([4, "one"])],
        [*good(1)[:1], b"unexpected data"],
        store[:1],
        [b"a", b"b", b"c", b"d", b"e"],
        [b"\x91" * 100_000 + b"\xc0"],
    ]
    for seq, frames in enumerate(bad, start=1):
        raw.send_multipart(frames)
        raw.send_multipart(good(seq))
    raw.send_multipart(store)

    first = decode_frames(raw_recv(raw))[0]
    assert isinstance(first, Rejected) and first.reason == "hello_first"  # the early Heartbeat
    assert isinstance(decode_frames(raw_recv(raw))[0], Welcome)
    got = [next_incoming(inbox).message for _ in range(len(bad) + 2)]
    assert got == [hello, *(Heartbeat(seq) for seq in range(1, len(bad) + 1)), STORE]
    assert server.stats.malformed == len(bad)
    assert server.stats.unwelcomed == 1
    assert server.stats.received == len(bad) + 2
    raw.close(linger=0)


def test_a_failing_handler_is_counted_and_reception_goes_on(
    green_context: Any, short_dir: Path, sockets: list[BusSocket]
) -> None:
    seen: list[int] = []

    def handle(incoming: Incoming) -> None:
        assert isinstance(incoming.message, Heartbeat)
        seen.append(incoming.message.seq)
        if incoming.message.seq % 2:
            raise RuntimeError("handler bug")

    server = BusSocket.router(handle, name="server", context=green_context)
    sockets.append(server)
    endpoint = server.bind(f"ipc://{short_dir}/bus")
    server.start()
    bus, _ = client(green_context, endpoint, sockets, "c")
    for seq in range(6):
        bus.send(Heartbeat(seq))
    deadline = time.monotonic() + WAIT
    while len(seen) < 6 and time.monotonic() < deadline:
        gevent.sleep(0.01)
    assert seen == list(range(6))
    assert server.stats.handler_errors == 3


def test_the_send_queue_is_bounded_and_close_is_prompt(green_context: Any) -> None:
    # A DEALER with no peer blocks on send: the queue fills and further sends are dropped.
    bus = BusSocket.dealer(lambda _: None, name="lonely", max_pending=3, context=green_context)
    bus.start()
    results = [bus.send(Heartbeat(seq)) for seq in range(10)]
    assert results == [True] * 3 + [False] * 7
    assert bus.pending == 3 and bus.stats.send_dropped == 7
    began = time.monotonic()
    bus.close(linger=0.2)
    assert time.monotonic() - began < 2.0
    # one message was in the sender's hands when it was killed; two never left the queue
    assert bus.stats.send_dropped == 9 and bus.stats.sent == 0
    assert bus.send(Heartbeat(99)) is False
    bus.close()  # idempotent


def test_send_checks_the_addressing_and_the_schema(green_context: Any) -> None:
    router = BusSocket.router(lambda _: None, name="r", context=green_context)
    dealer = BusSocket.dealer(lambda _: None, name="d", context=green_context)
    try:
        with pytest.raises(ValueError, match="ROUTER needs `to`"):
            router.send(Heartbeat(1))
        with pytest.raises(ValueError, match="ROUTER needs `to`"):
            dealer.send(Heartbeat(1), to=b"x")
        with pytest.raises(BusError) as caught:
            dealer.send(Heartbeat(-1))
        assert caught.value.reason == "out_of_range"
        with pytest.raises(ValueError, match="only the bound ROUTER"):
            BusSocket.dealer(lambda _: None, name="x", hello_policy=POLICY, context=green_context)
    finally:
        router.close(linger=0)
        dealer.close(linger=0)


def test_control_client_names_the_missing_daemon(short_dir: Path) -> None:
    endpoint = f"ipc://{short_dir}/nobody"
    began = time.monotonic()
    with pytest.raises(DaemonUnreachableError) as caught:
        control_request(endpoint, ListTorrents(), timeout=0.2)
    assert time.monotonic() - began < 2.0
    assert caught.value.reason == "no_daemon"
    assert str(caught.value) == (
        f"no torviz daemon at {endpoint}: start one with `torviz-coordinator start`"
    )


# --- two processes ------------------------------------------------------------------------------


def test_two_processes_exchange_hello_and_a_1mib_piece(
    green_context: Any,
    short_dir: Path,
    sockets: list[BusSocket],
    start_service: Any,
) -> None:
    # Over ipc: a plain socket never binds tcp (test_ipc.py); CURVE over tcp is test_curve.py.
    service: ServiceProcess = start_service("echo", f"ipc://{short_dir}/echo")
    endpoint = service.ready()
    assert endpoint == f"ipc://{short_dir}/echo"

    bus, inbox = client(green_context, endpoint, sockets, "pa1")
    bus.send(make_hello(ServiceKind.PEER_AGENT, "pa1", "here", os.getpid()))
    welcome = next_incoming(inbox).message
    assert isinstance(welcome, Welcome) and welcome.service == "storage_agent"

    piece = os.urandom(1 << 20)
    bus.send(StorePiece(IH, 5, ("pa1/1", "pa1/2")), piece)
    echoed = next_incoming(inbox)
    assert echoed.message == BlockRead(5, IH, 5, 0)
    assert echoed.data is not None and bytes(echoed.data) == piece

    stranger, stranger_inbox = client(green_context, endpoint, sockets, "old")
    future = make_hello(ServiceKind.PEER_AGENT, "old", "elsewhere", 1)
    stranger.send(dataclasses.replace(future, protocol_version=BUS_PROTOCOL_VERSION + 1))
    rejected = next_incoming(stranger_inbox).message
    assert isinstance(rejected, Rejected) and rejected.reason == "version_mismatch"
    assert f"version {BUS_PROTOCOL_VERSION + 1}" in rejected.message

    service.signal(signal.SIGTERM)
    assert service.wait(timeout=10) == 0, service.stderr()
    assert service.markers() == ["on_stop echo"]


def test_control_client_talks_to_a_daemon_and_asks_it_to_stop(
    short_dir: Path, start_service: Any
) -> None:
    service: ServiceProcess = start_service("echo", f"ipc://{short_dir}/control")
    endpoint = service.ready()
    assert control_request(endpoint, ListTorrents(), timeout=WAIT) == StatusReport((), ())
    with ControlClient(endpoint, timeout=WAIT) as control:
        assert control.hello().server_id == "echo"
        assert control.request(ShutdownRequested()) == ShutdownAccepted()
    assert service.wait(timeout=10) == 0, service.stderr()
    assert service.markers() == ["on_stop echo"]


@pytest.mark.parametrize("evict_oldest", [False, True])
def test_a_full_hello_gate_refuses_or_evicts_the_oldest(
    green_context: Any, short_dir: Path, sockets: list[BusSocket], evict_oldest: bool
) -> None:
    server = BusSocket.router(
        lambda incoming: None,
        name="control",
        hello_policy=POLICY,
        max_peers=2,
        evict_oldest=evict_oldest,
        context=green_context,
    )
    sockets.append(server)
    endpoint = server.bind(f"ipc://{short_dir}/control")
    server.start()
    answers = []
    for name in ("c1", "c2", "c3"):
        bus, inbox = client(green_context, endpoint, sockets, name)
        bus.send(make_hello(ServiceKind.PEER_AGENT, name, "here", os.getpid()))
        answers.append(next_incoming(inbox).message)
    if evict_oldest:
        assert all(isinstance(answer, Welcome) for answer in answers)
        assert set(server.welcomed) == {b"c2", b"c3"}
    else:
        assert isinstance(answers[2], Rejected) and answers[2].reason == "too_many_peers"
        assert set(server.welcomed) == {b"c1", b"c2"}
