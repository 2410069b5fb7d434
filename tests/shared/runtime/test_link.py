"""The agent's link to its coordinator: the pure policy on a fake clock, then over real ZeroMQ.

The policy tests drive ``LinkPolicy`` with explicit times. The socket tests run a
``CoordinatorLink`` on the (unpatched) gevent hub of the pytest process against a fake
coordinator: a plain pyzmq ROUTER read without blocking the hub (``gevent.sleep`` between
polls), which welcomes, goes silent, is replaced by a new ROUTER on the same endpoint,
forgets the agent (``hello_first``) and refuses a version.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import pytest
import zmq

from torviz.shared.bus import (
    BUS_PROTOCOL_VERSION,
    AgentInfo,
    ConnectPeer,
    Goodbye,
    Heartbeat,
    Hello,
    Message,
    PeerHave,
    Rejected,
    RejectReason,
    ServiceKind,
    Welcome,
    decode_frames,
    encode_frames,
    make_hello,
)
from torviz.shared.runtime.link import (
    MIN_HEARTBEAT,
    CoordinatorLink,
    CoordinatorLost,
    LinkPolicy,
    LinkRefused,
    LinkState,
    Registered,
    SayHello,
    SendHeartbeat,
    WarnUnanswered,
    process_incarnation,
)
from torviz.shared.runtime.sockets import Incoming
from torviz.shared.types import InfoHash, PeerAddress

WAIT = 5.0  # seconds any expected message may take
HELLO = make_hello(ServiceKind.PEER_AGENT, "pa-test", "here", 1)
INFO = AgentInfo(capacity=7, listen_address=PeerAddress("127.0.0.1", 6881), data_endpoint="",
                 curve_public_key="")  # fmt: skip
IH = InfoHash(b"\x42" * 20)


def welcome(interval: float = 5.0, server: str = "coord") -> Welcome:
    return Welcome(BUS_PROTOCOL_VERSION, "coordinator", server, interval)


# --- the policy, on a fake clock -----------------------------------------------------------------


def registered_policy(interval: float = 5.0, misses: int = 3) -> LinkPolicy:
    policy = LinkPolicy(misses=misses, hello_retry=2.0)
    assert policy.start(0.0) == [SayHello(fresh=False)]
    assert policy.received(welcome(interval), 0.5) == [Registered("coord", interval)]
    return policy


def test_hello_is_said_again_every_retry_on_a_fresh_socket_and_the_user_is_warned():
    policy = LinkPolicy(misses=3, hello_retry=2.0, warn_after=10.0, warn_every=60.0)
    assert policy.start(100.0) == [SayHello(fresh=False)]
    assert policy.start(100.0) == []  # once
    assert (policy.state, policy.next_deadline()) == (LinkState.HELLO, 102.0)
    assert policy.tick(101.9) == []
    assert policy.tick(102.0) == [SayHello(fresh=True)]
    assert policy.next_deadline() == 104.0
    hellos = warnings = 0
    for step in range(1, 400):  # 100 ms steps up to t = 140
        for action in policy.tick(102.0 + step / 10):
            hellos += isinstance(action, SayHello)
            if isinstance(action, WarnUnanswered):
                warnings += 1
                assert action.waited == pytest.approx(10.0)
    assert hellos == 19 and warnings == 1  # one warning after 10 s, the next only at 170 s
    assert [a for a in policy.tick(170.0) if isinstance(a, WarnUnanswered)] == [
        WarnUnanswered(70.0)
    ]
    assert not policy.registered


def test_welcome_registers_then_heartbeats_go_out_every_interval_without_bursts():
    policy = registered_policy(interval=5.0)
    assert policy.registered and policy.server_id == "coord"
    assert policy.next_deadline() == 5.5
    assert policy.tick(5.4) == []
    assert policy.tick(5.5) == [SendHeartbeat(1)]
    assert policy.received(Heartbeat(1), 6.0) == []  # the coordinator's: it is alive
    assert policy.tick(10.5) == [SendHeartbeat(2)]
    policy.received(Heartbeat(2), 11.0)
    assert policy.tick(14.0) == []
    assert policy.tick(25.9) == [SendHeartbeat(3)]  # woken late: one heartbeat, not three
    assert policy.next_deadline() == pytest.approx(26.0)  # the silence bound: 11 + 3 * 5


def test_silence_for_the_misses_loses_the_coordinator_and_hello_starts_again():
    policy = registered_policy(interval=1.0, misses=3)
    policy.received(Heartbeat(1), 2.0)
    assert policy.tick(4.9) == [SendHeartbeat(1)]
    assert policy.next_deadline() == pytest.approx(5.0)
    assert policy.tick(5.0) == [CoordinatorLost("heartbeat_timeout"), SayHello(fresh=True)]
    assert policy.state is LinkState.HELLO and policy.interval == 0.0
    assert policy.tick(6.0) == []
    assert policy.tick(7.0) == [SayHello(fresh=True)]
    assert policy.received(welcome(1.0, "coord-2"), 7.1) == [Registered("coord-2", 1.0)]
    assert policy.tick(8.1) == [SendHeartbeat(1)]  # a new registration counts from 1 again


def test_anything_from_the_coordinator_counts_as_alive():
    policy = registered_policy(interval=1.0, misses=2)
    for now in (1.0, 2.0, 3.0, 4.0):
        policy.received(ConnectPeer(IH, PeerAddress("127.0.0.2", 1)), now)
        assert not any(isinstance(a, CoordinatorLost) for a in policy.tick(now + 1.5))
    assert CoordinatorLost("heartbeat_timeout") in policy.tick(6.0)


def test_hello_first_loses_the_registration_and_says_hello_at_most_once_per_retry():
    policy = registered_policy(interval=5.0)
    assert policy.received(Rejected(RejectReason.HELLO_FIRST, "say Hello first"), 3.0) == [
        CoordinatorLost("hello_first"),
        SayHello(fresh=False),  # it answered: the connection works, no new socket
    ]
    assert (
        policy.received(Rejected(RejectReason.HELLO_FIRST, "again"), 3.5) == []
    )  # 0.5 s after the hello
    assert policy.tick(4.9) == []
    assert policy.tick(5.0) == [SayHello(fresh=True)]  # unanswered: the usual retry
    assert policy.received(Rejected(RejectReason.HELLO_FIRST, "late"), 7.0) == [
        SayHello(fresh=False)
    ]
    assert policy.received(welcome(), 7.2) == [Registered("coord", 5.0)]


def test_a_hello_first_just_after_the_welcome_is_met_at_once():
    policy = registered_policy(interval=5.0)  # welcomed 0.5 s after its hello
    assert policy.received(Rejected(RejectReason.HELLO_FIRST, "x"), 0.6) == [
        CoordinatorLost("hello_first"),
        SayHello(fresh=False),
    ]
    assert (
        policy.received(Rejected(RejectReason.HELLO_FIRST, "y"), 0.7) == []
    )  # the rest of a burst


def test_a_hello_first_just_after_the_first_hello_waits_for_the_retry():
    policy = LinkPolicy(hello_retry=2.0)
    policy.start(0.0)
    assert policy.received(Rejected(RejectReason.HELLO_FIRST, "x"), 0.1) == []
    assert policy.tick(2.0) == [SayHello(fresh=True)]


@pytest.mark.parametrize(
    "reason",
    [
        RejectReason.VERSION_MISMATCH,
        RejectReason.SCHEMA_MISMATCH,
        RejectReason.SERVICE_NOT_ACCEPTED,
    ],
)
def test_any_other_rejection_is_final(reason: RejectReason):
    policy = LinkPolicy()
    policy.start(0.0)
    assert policy.received(Rejected(reason, "run the same release"), 0.1) == [
        LinkRefused(reason, "run the same release")
    ]
    assert policy.state is LinkState.REFUSED and policy.next_deadline() is None
    assert policy.tick(100.0) == []
    assert policy.received(welcome(), 100.0) == []  # nothing brings it back


def test_every_welcome_is_a_new_registration():
    policy = registered_policy(interval=5.0)
    policy.tick(5.5)
    assert policy.received(welcome(2.0, "coord"), 6.0) == [Registered("coord", 2.0)]
    assert policy.tick(8.0) == [SendHeartbeat(1)]


def test_interval_zero_means_no_heartbeats_and_a_tiny_one_is_raised():
    policy = registered_policy(interval=0.0)
    assert policy.next_deadline() is None and policy.tick(1e6) == []
    assert policy.registered
    policy = LinkPolicy()
    policy.start(0.0)
    assert policy.received(welcome(0.001), 0.0) == [Registered("coord", MIN_HEARTBEAT)]


def test_nothing_before_start_and_bad_settings_are_refused():
    policy = LinkPolicy()
    assert policy.received(welcome(), 0.0) == [] and policy.tick(10.0) == []
    assert policy.next_deadline() is None
    with pytest.raises(ValueError, match="at least 1"):
        LinkPolicy(misses=0)
    with pytest.raises(ValueError, match="positive"):
        LinkPolicy(hello_retry=0.0)


# --- over real sockets ---------------------------------------------------------------------------


class FakeCoordinator:
    """A plain ROUTER polled without blocking the gevent hub the link runs on."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        self.context = context
        self.endpoint = endpoint
        self.sock: zmq.Socket[Any] = self._bind()
        self.identity = b""
        self.heard: list[Message] = []

    def _bind(self) -> zmq.Socket[Any]:
        sock: zmq.Socket[Any] = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        sock.bind(self.endpoint)
        return sock

    def replace(self) -> None:
        """A new coordinator process on the same endpoint: nothing of the old one survives."""
        self.sock.close(linger=0)
        gevent.sleep(0.05)
        self.sock = self._bind()

    def recv(self, timeout: float = WAIT) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            try:
                identity, *frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                assert time.monotonic() < deadline, f"nothing within {timeout}s: {self.heard}"
                gevent.sleep(0.005)
                continue
            self.identity = identity
            message, _ = decode_frames(frames)
            self.heard.append(message)
            return message

    def expect(self, kind: type[Message], timeout: float = WAIT) -> Any:
        """The next message of type ``kind``, skipping others (heartbeats, say)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.0, deadline - time.monotonic()))
            if isinstance(message, kind):
                return message

    def count(self, kind: type[Message], within: float) -> int:
        """How many messages of type ``kind`` arrive within ``within`` seconds."""
        found = 0
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                found += isinstance(self.recv(left), kind)
            except AssertionError:
                break
        return found

    def send(self, message: Message) -> None:
        self.sock.send_multipart([self.identity, *encode_frames(message)])


@pytest.fixture
def plain_context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture
def coordinator(plain_context: zmq.Context[Any], short_dir: Path) -> Iterator[FakeCoordinator]:
    fake = FakeCoordinator(plain_context, f"ipc://{short_dir}/bus")
    try:
        yield fake
    finally:
        fake.sock.close(linger=0)


@pytest.fixture
def make_link(
    coordinator: FakeCoordinator,
) -> Iterator[Callable[..., tuple[CoordinatorLink, gevent.queue.Queue[object]]]]:
    """Starts links to the fake coordinator; every one is closed at the end."""
    made: list[CoordinatorLink] = []

    def make(**kwargs: Any) -> tuple[CoordinatorLink, gevent.queue.Queue[object]]:
        events: gevent.queue.Queue[object] = gevent.queue.Queue()
        settings: dict[str, Any] = {"misses": 3, "hello_retry": 0.2, **kwargs}
        link = CoordinatorLink(
            events.put,
            service=ServiceKind.PEER_AGENT,
            agent_id="pa-test",
            endpoint=coordinator.endpoint,
            info=lambda: INFO,
            host="here",
            pid=1,
            **settings,
        )
        made.append(link)
        link.start()
        return link, events

    try:
        yield make
    finally:
        for link in made:
            link.close(goodbye=None, linger=0)


def next_event(events: gevent.queue.Queue[object], timeout: float = WAIT) -> object:
    try:
        return events.get(timeout=timeout)
    except gevent.queue.Empty:
        raise AssertionError(f"no event within {timeout}s") from None


def test_welcome_info_heartbeats_loss_and_registration_again(
    coordinator: FakeCoordinator, make_link: Any
) -> None:
    link, events = make_link()
    assert coordinator.expect(Hello) == HELLO
    # The routing identity is this process's: the agent id and the process's incarnation.
    own = f"pa-test/{process_incarnation()}"
    assert coordinator.identity == own.encode() and link.identity == own
    assert not link.registered and link.send(PeerHave(IH, "pa-test/1", 3)) is False

    coordinator.send(welcome(0.1))
    assert next_event(events) == Registered("coord", 0.1)
    assert coordinator.recv() == INFO  # right after the Welcome, before anything else
    assert link.registered and link.server_id == "coord"

    # Commands reach the actor after Registered; lifecycle messages stay in the link.
    coordinator.send(Heartbeat(1))
    coordinator.send(ConnectPeer(IH, PeerAddress("127.0.0.2", 7000)))
    incoming = next_event(events)
    assert isinstance(incoming, Incoming)
    assert incoming.message == ConnectPeer(IH, PeerAddress("127.0.0.2", 7000))
    assert link.send(PeerHave(IH, "pa-test/1", 3))
    assert coordinator.expect(PeerHave) == PeerHave(IH, "pa-test/1", 3)
    assert coordinator.expect(Heartbeat).seq >= 1  # ours, every 0.1 s

    # The coordinator goes silent: lost after 3 x 0.1 s, then Hello until it answers.
    started = time.monotonic()
    assert next_event(events) == CoordinatorLost("heartbeat_timeout")
    assert time.monotonic() - started < 1.0
    assert not link.registered
    assert link.send(PeerHave(IH, "pa-test/1", 4)) is False and link.dropped == 2
    assert coordinator.expect(Hello) == HELLO
    coordinator.send(welcome(30.0, "coord"))
    assert next_event(events) == Registered("coord", 30.0)
    assert coordinator.expect(AgentInfo) == INFO
    assert events.empty()


def test_a_restarted_coordinator_on_the_same_endpoint_gets_one_hello_not_a_pile(
    coordinator: FakeCoordinator, make_link: Any
) -> None:
    link, events = make_link(hello_retry=0.05)
    coordinator.expect(Hello)
    coordinator.send(welcome(0.1))
    assert next_event(events) == Registered("coord", 0.1)

    coordinator.sock.close(linger=0)  # the coordinator dies ...
    assert next_event(events) == CoordinatorLost("heartbeat_timeout")
    gevent.sleep(1.0)  # ... for twenty hello retries
    coordinator.replace()
    assert coordinator.expect(Hello) == HELLO
    coordinator.send(welcome(30.0, "coord-2"))
    assert coordinator.expect(AgentInfo) == INFO
    assert next_event(events) == Registered("coord-2", 30.0)
    # The retries went out on sockets that are gone: at most one more crossed the Welcome.
    assert coordinator.count(Hello, within=0.3) <= 1
    assert link.registered and link.server_id == "coord-2"


def test_hello_first_from_a_coordinator_that_forgot_us_registers_again(
    coordinator: FakeCoordinator, make_link: Any
) -> None:
    link, events = make_link(hello_retry=0.2)
    coordinator.expect(Hello)
    coordinator.send(welcome(30.0))
    assert next_event(events) == Registered("coord", 30.0)
    coordinator.expect(AgentInfo)

    gevent.sleep(0.25)  # past hello_retry: the answer to hello_first is immediate
    coordinator.replace()  # restarted: it answers the agent's next message with hello_first
    assert link.send(PeerHave(IH, "pa-test/1", 5))
    assert coordinator.expect(PeerHave) == PeerHave(IH, "pa-test/1", 5)
    coordinator.send(Rejected(RejectReason.HELLO_FIRST, "coordinator: say Hello first"))
    assert next_event(events) == CoordinatorLost("hello_first")
    assert coordinator.expect(Hello, timeout=0.15) == HELLO  # at once, on the same connection
    coordinator.send(welcome(30.0, "coord-2"))
    assert next_event(events) == Registered("coord-2", 30.0)
    assert coordinator.expect(AgentInfo) == INFO

    link.close()
    assert coordinator.expect(Goodbye) == Goodbye("stopping")
    assert not link.registered and link.send(PeerHave(IH, "pa-test/1", 6)) is False


def test_a_version_mismatch_is_refused_for_good(
    coordinator: FakeCoordinator, make_link: Any, caplog: pytest.LogCaptureFixture
) -> None:
    link, events = make_link(hello_retry=0.05)
    coordinator.expect(Hello)
    text = "peer_agent 'pa-test' speaks bus protocol version 1, but this coordinator speaks 2"
    coordinator.send(Rejected(RejectReason.VERSION_MISMATCH, text))
    assert next_event(events) == LinkRefused("version_mismatch", text)
    assert not link.registered
    assert coordinator.count(Hello, within=0.3) == 0  # no more hellos
    assert f"the coordinator refused this agent (version_mismatch): {text}" in caplog.text


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("duplicate_agent", 2),  # another --agent-id: only the operator can mend it
        ("identity_not_allowed", 2),  # the right key
        ("version_mismatch", 1),
        ("service_not_accepted", 1),
    ],
)
def test_a_refusal_only_the_operator_can_mend_exits_2(reason: str, code: int) -> None:
    assert LinkRefused(reason, "text").exit_code == code


def test_two_processes_of_one_agent_id_connect_under_their_own_identities(
    coordinator: FakeCoordinator, make_link: Any
) -> None:
    first, _ = make_link(incarnation="0000aaaa")
    assert coordinator.expect(Hello) == HELLO
    assert coordinator.identity == b"pa-test/0000aaaa" == first.identity.encode()
    second, _ = make_link(incarnation="0000bbbb")
    assert coordinator.expect(Hello) == HELLO
    assert coordinator.identity == b"pa-test/0000bbbb"
    # Neither took over the other's connection: each still gets what is sent to it.
    for link, identity in ((first, b"pa-test/0000aaaa"), (second, b"pa-test/0000bbbb")):
        coordinator.sock.send_multipart([identity, *encode_frames(welcome(30.0))])
        deadline = time.monotonic() + WAIT
        while not link.registered:
            assert time.monotonic() < deadline, f"{identity!r} never got its Welcome"
            gevent.sleep(0.01)
