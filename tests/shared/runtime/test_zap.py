"""The ZAP handler: the pure decision table, then the handler on real zmq.green sockets.

Sockets run in greenlets of the (unpatched) pytest process; every wait is bounded.
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
from zmq.utils import z85

from torviz.shared.bus import Hello, HelloPolicy, ServiceKind, Welcome, make_hello
from torviz.shared.runtime.curve import (
    AuthorizedKey,
    CurveClient,
    CurveServer,
    load_keypair,
    load_public_key,
)
from torviz.shared.runtime.sockets import BusSocket, Incoming
from torviz.shared.runtime.zap import (
    CONTROL_ZAP_DOMAIN,
    MAX_ZAP_FRAME,
    MAX_ZAP_FRAMES,
    REFUSAL_LOG_INTERVAL,
    ZAP_DOMAIN,
    ZAP_ENDPOINT,
    RefusalThrottle,
    ZapHandler,
    answer_zap,
    running_zap_handler,
    zap_handler,
)

WAIT = 5.0
POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="coord",
    accepts=frozenset({ServiceKind.PEER_AGENT}),
    heartbeat_interval=2.0,
)
KEY_RAW = bytes(range(32))
KEY = z85.encode(KEY_RAW)
KNOWN = {KEY: AuthorizedKey("a1", ServiceKind.PEER_AGENT)}
ROLE_METADATA = b"\x04Role\x00\x00\x00\x0apeer_agent"  # ZMTP metadata: Role = peer_agent


def request(*fields: bytes, routing: tuple[bytes, ...] = (b"\x00peer",)) -> list[bytes]:
    return [*routing, b"", *fields]


def curve_request(key: bytes = KEY_RAW, domain: bytes = b"torviz") -> list[bytes]:
    return request(b"1.0", b"1", domain, b"10.213.7.3", b"", b"CURVE", key)


# --- the decision, pure ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "status", "reason", "user_id"),
    [
        (curve_request(), b"200", "known_key", "a1"),
        (curve_request(domain=b""), b"200", "known_key", "a1"),
        (curve_request(bytes(32)), b"400", "unknown_key", ""),
        (request(b"1.0", b"1", b"", b"10.0.0.1", b"", b"NULL"), b"200", "null_no_domain", ""),
        (request(b"1.0", b"1", b"torviz", b"", b"", b"NULL"), b"400", "null_with_domain", ""),
        (
            request(b"1.0", b"1", b"torviz", b"1.2.3.4", b"", b"PLAIN", b"admin", b"secret"),
            b"400",
            "mechanism_refused",
            "",
        ),
        (request(b"1.0", b"1", b"d", b"a", b"", b"GSSAPI", b"t"), b"400", "mechanism_refused", ""),
        (request(b"2.0", b"1", b"d", b"a", b"", b"NULL"), b"500", "malformed", ""),
        (request(b"1.0", b"1", b"d", b"a", b""), b"500", "malformed", ""),
        (request(b"1.0", b"1"), b"500", "malformed", ""),
        (request(b"1.0"), b"500", "malformed", ""),
        (request(), b"500", "malformed", ""),
        (request(b"1.0", b"1", b"d", b"a", b"", b"CURVE"), b"500", "malformed", ""),
        (request(b"1.0", b"1", b"d", b"a", b"", b"CURVE", b"short"), b"500", "malformed", ""),
        (
            request(b"1.0", b"1", b"d", b"a", b"", b"CURVE", KEY_RAW, KEY_RAW),
            b"500",
            "malformed",
            "",
        ),
        (request(b"1.0", b"1", b"", b"a", b"", b"NULL", b"x"), b"500", "malformed", ""),
        (
            request(b"1.0", b"1", b"d" * (MAX_ZAP_FRAME + 1), b"a", b"", b"NULL"),
            b"500",
            "malformed",
            "",
        ),
    ],
)
def test_decision_table(frames: list[bytes], status: bytes, reason: str, user_id: str) -> None:
    decision = answer_zap(frames, KNOWN)
    assert (decision.status, decision.reason, decision.user_id) == (status, reason, user_id)
    assert decision.admitted is (status == b"200")
    assert decision.reply is not None
    delimiter = frames.index(b"")
    envelope, body = frames[: delimiter + 1], frames[delimiter + 1 :]
    request_id = body[1] if len(body) > 1 else b""
    assert decision.reply[: len(envelope)] == envelope
    version, echoed, code, text, user, metadata = decision.reply[len(envelope) :]
    assert (version, echoed, code, user, metadata) == (
        b"1.0",
        request_id,
        status,
        user_id.encode(),
        ROLE_METADATA if reason == "known_key" else b"",  # an admitted key's role
    )
    assert len(text) <= 255


def test_the_reply_of_a_refusal_carries_the_key_and_address() -> None:
    decision = answer_zap(curve_request(bytes(32)), KNOWN)
    assert decision.client_key == z85.encode(bytes(32))
    assert decision.address == "10.213.7.3"
    assert decision.domain == "torviz"


def test_several_routing_ids_are_echoed() -> None:
    frames = curve_request()
    frames = [b"proxy", *frames]
    decision = answer_zap(frames, KNOWN)
    assert decision.admitted
    assert decision.reply is not None and decision.reply[:3] == [b"proxy", b"\x00peer", b""]


@pytest.mark.parametrize(
    "frames",
    [
        [b"\x00peer", b"1.0", b"1", b"d", b"a", b"", b"NULL"][:1],  # no delimiter at all
        [b"r1", b"r2", b"r3", b"r4", b"r5", b"", b"1.0", b"1"],  # too deep an envelope
    ],
)
def test_a_request_with_nowhere_to_answer_is_dropped(frames: list[bytes]) -> None:
    decision = answer_zap(frames, KNOWN)
    assert decision.reply is None
    assert decision.reason == "malformed"
    assert not decision.admitted


def test_too_many_frames_and_long_strings_are_answered_within_bounds() -> None:
    decision = answer_zap([b"\x00peer", b"", b"1.0", b"5", *([b"x"] * MAX_ZAP_FRAMES)], KNOWN)
    assert decision.status == b"500" and decision.reply is not None
    assert decision.reply[:4] == [b"\x00peer", b"", b"1.0", b"5"]
    decision = answer_zap(request(b"1.0", b"1", b"d", b"a", b"", b"M" * MAX_ZAP_FRAME), KNOWN)
    assert decision.reason == "mechanism_refused"
    assert decision.reply is not None and len(decision.reply[5]) == 255


def test_an_oversized_request_id_is_not_echoed() -> None:
    big = b"i" * (MAX_ZAP_FRAME + 1)
    decision = answer_zap(request(b"1.0", big, b"d", b"a", b"", b"NULL"), KNOWN)
    assert decision.status == b"500"
    assert decision.reply is not None and decision.reply[3] == b""


# --- the handler -----------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    folder = tmp_path / "keys"
    (folder / "authorized").mkdir(parents=True)
    for name in ("coordinator", "a1", "x9"):
        zmq.auth.create_certificates(folder, name)
    shutil.copy(folder / "a1.key", folder / "authorized" / "a1.key")
    return folder


@pytest.fixture
def ctx() -> Iterator[Any]:
    context: Any = zmq.green.Context()
    try:
        yield context
    finally:
        handler = running_zap_handler(context)
        if handler is not None:
            handler.stop()
        context.destroy(linger=0)


@pytest.fixture
def client_ctx() -> Iterator[Any]:
    context: Any = zmq.green.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


def test_each_zap_domain_admits_only_the_keys_trusted_for_it(keys: Path) -> None:
    handler = ZapHandler(zmq.green.Context.instance(), clock=Clock())  # never started
    coordinator = load_keypair(keys, "coordinator")
    handler.trust(coordinator, keys / "authorized")  # the bus: its folder and its own key
    handler.trust(coordinator, None, CONTROL_ZAP_DOMAIN)  # control: its own key only
    a1 = z85.decode(load_public_key(keys, "a1"))
    own = z85.decode(coordinator.public)
    assert handler.decide(curve_request(a1, ZAP_DOMAIN.encode())).admitted
    assert handler.decide(curve_request(own, ZAP_DOMAIN.encode())).admitted
    refused = handler.decide(curve_request(a1, CONTROL_ZAP_DOMAIN.encode()))
    assert (refused.status, refused.reason) == (b"400", "unknown_key")
    admitted = handler.decide(curve_request(own, CONTROL_ZAP_DOMAIN.encode()))
    assert admitted.admitted and admitted.user_id == "coordinator"
    assert not handler.decide(curve_request(a1, b"")).admitted  # no domain: nothing trusted
    assert handler.known(CONTROL_ZAP_DOMAIN) == {
        coordinator.public: AuthorizedKey("coordinator", ServiceKind.COORDINATOR)
    }


def test_answer_zap_takes_the_keys_of_the_requests_domain() -> None:
    by_domain = {"torviz": KNOWN, "torviz-control": {}}
    assert answer_zap(curve_request(), lambda domain: by_domain.get(domain, {})).admitted
    control = curve_request(domain=b"torviz-control")
    assert not answer_zap(control, lambda domain: by_domain.get(domain, {})).admitted


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_reload_is_bounded_and_picks_up_new_keys(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="torviz.shared.runtime.zap")
    clock = Clock()
    handler = ZapHandler(zmq.green.Context.instance(), clock=clock)  # never started
    handler.trust(load_keypair(keys, "coordinator"), keys / "authorized")
    x9 = z85.decode(load_public_key(keys, "x9"))
    assert not handler.decide(curve_request(x9)).admitted
    assert handler.stats.reloads == 1
    shutil.copy(keys / "x9.key", keys / "authorized" / "x9.key")
    clock.now += 0.5
    assert not handler.decide(curve_request(x9)).admitted  # within a second: no reload
    assert handler.stats.reloads == 1
    clock.now += 0.5
    decision = handler.decide(curve_request(x9))
    assert decision.admitted and decision.user_id == "x9"
    assert handler.stats.reloads == 2
    assert (handler.stats.admitted, handler.stats.refused) == (1, 2)
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in refusals] == [  # the second: within the minute, counted
        f"refused an unknown CURVE key {load_public_key(keys, 'x9').decode()} from 10.213.7.3: "
        f"add its .key to {keys / 'authorized'} to admit it"
    ]
    handler.decide(curve_request(x9))  # admissions: logged once per key and address
    admissions = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(admissions) == 1 and "x9" in admissions[0].getMessage()
    # An unknown key triggers the reloads: a broken file keeps the previous set and says why;
    # a key file removed is no longer admitted after the next reload.
    (keys / "authorized" / "x9.key").unlink()
    (keys / "authorized" / "junk.key").write_text("junk")
    clock.now += 2
    assert not handler.decide(curve_request(bytes(32))).admitted
    assert any("keeping the previous authorized keys" in r.getMessage() for r in caplog.records)
    assert handler.decide(curve_request(x9)).admitted
    (keys / "authorized" / "junk.key").unlink()
    clock.now += 2
    assert not handler.decide(curve_request(bytes(32))).admitted
    assert not handler.decide(curve_request(x9)).admitted
    assert handler.decide(curve_request(z85.decode(load_public_key(keys, "coordinator")))).admitted


def test_one_handler_per_context(ctx: Any) -> None:
    first = zap_handler(ctx)
    assert first.running
    assert zap_handler(ctx) is first
    with pytest.raises(RuntimeError, match="already runs"):
        ZapHandler(ctx).start()
    assert first.running
    first.stop()
    assert not first.running
    second = zap_handler(ctx)
    assert second is not first and second.running


def test_a_foreign_zap_handler_is_reported(ctx: Any) -> None:
    foreign = ctx.socket(zmq.ROUTER)
    try:
        foreign.bind(ZAP_ENDPOINT)
        with pytest.raises(RuntimeError, match="cannot bind the ZAP handler"):
            zap_handler(ctx)
    finally:
        foreign.close(linger=0)


def ask(ctx: Any, frames: list[bytes]) -> list[bytes] | None:
    """Send one raw request to the handler of ``ctx`` as libzmq would; its reply or None."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    try:
        dealer.connect(ZAP_ENDPOINT)
        dealer.send_multipart(frames)
        with gevent.Timeout(0.5, False):
            reply: list[bytes] = dealer.recv_multipart()
            return reply
        return None
    finally:
        dealer.close()


def test_the_handler_answers_raw_requests_and_survives_garbage(
    ctx: Any, keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="torviz.shared.runtime.zap")
    handler = zap_handler(ctx)
    handler.trust(load_keypair(keys, "coordinator"), keys / "authorized")
    a1 = z85.decode(load_public_key(keys, "a1"))
    reply = ask(ctx, [b"", b"1.0", b"7", b"torviz", b"10.213.7.3", b"", b"CURVE", a1])
    assert reply == [b"", b"1.0", b"7", b"200", b"OK", b"a1", ROLE_METADATA]
    reply = ask(ctx, [b"", b"1.0", b"8", b"torviz", b"10.213.7.3", b"", b"CURVE", bytes(32)])
    assert reply is not None and reply[2:4] == [b"8", b"400"]
    reply = ask(ctx, [b"", b"1.0", b"9"])
    assert reply is not None and reply[:4] == [b"", b"1.0", b"9", b"500"]
    reply = ask(ctx, [b""])
    assert reply is not None and reply[:4] == [b"", b"1.0", b"", b"500"]
    reply = ask(ctx, [b"", b"1.0", b"x" * 100_000])
    assert reply is not None and reply[:4] == [b"", b"1.0", b"", b"500"]
    reply = ask(ctx, [b"", b"1.0", b"10", *([b"x"] * 100)])  # past the frame bound
    assert reply is not None and reply[:4] == [b"", b"1.0", b"10", b"500"]
    assert ask(ctx, [b"no", b"envelope"]) is None
    assert handler.running
    assert handler.stats.admitted == 1
    assert handler.stats.refused == 1
    assert handler.stats.malformed == 5
    assert any(z85.encode(bytes(32)).decode() in r.getMessage() for r in caplog.records)


# --- the handler behind real CURVE and NULL sockets ------------------------------------


def curve_server(ctx: Any, keys: Path, inbox: gevent.queue.Queue[Incoming]) -> BusSocket:
    server = BusSocket.router(
        inbox.put,
        name="server",
        hello_policy=POLICY,
        context=ctx,
        curve=CurveServer(load_keypair(keys, "coordinator"), keys / "authorized"),
    )
    return server


def curve_client(ctx: Any, keys: Path, name: str, endpoint: str) -> tuple[BusSocket, Any]:
    replies: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    client = BusSocket.dealer(
        replies.put,
        name=name,
        identity=name,
        context=ctx,
        curve=CurveClient(load_keypair(keys, name), load_public_key(keys, "coordinator")),
    )
    client.connect(endpoint)
    client.start()
    return client, replies


def test_a_key_added_later_is_admitted_without_a_restart(
    ctx: Any, client_ctx: Any, keys: Path
) -> None:
    inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    server = curve_server(ctx, keys, inbox)
    client = None
    try:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        client, replies = curve_client(client_ctx, keys, "x9", endpoint)
        client.send(make_hello(ServiceKind.PEER_AGENT, "x9", "h", 1))
        with pytest.raises(gevent.queue.Empty):
            inbox.get(timeout=0.5)
        assert zap_handler(ctx).stats.refused >= 1
        assert client.stats.auth_failures >= 1
        shutil.copy(keys / "x9.key", keys / "authorized" / "x9.key")
        client.send(make_hello(ServiceKind.PEER_AGENT, "x9", "h", 1))  # the link says Hello
        assert isinstance(replies.get(timeout=WAIT).message, Welcome)  # within ~1-2 s
        assert zap_handler(ctx).stats.admitted >= 1
    finally:
        if client is not None:
            client.close(linger=0)
        server.close(linger=0)


def test_plain_sockets_on_the_same_context_still_work(
    ctx: Any, client_ctx: Any, keys: Path, short_dir: Path
) -> None:
    inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    server = curve_server(ctx, keys, inbox)  # starts the ZAP handler on ctx
    plain_inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    plain = BusSocket.router(plain_inbox.put, name="plain", hello_policy=POLICY, context=ctx)
    replies: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    dealers = [
        BusSocket.dealer(replies.put, name=f"d{n}", context=c)
        for n, c in enumerate((ctx, client_ctx))
    ]
    try:
        endpoint = plain.bind(f"ipc://{short_dir}/plain.sock")
        plain.start()
        for dealer in dealers:
            dealer.connect(endpoint)
            dealer.start()
            dealer.send(make_hello(ServiceKind.PEER_AGENT, dealer.name, "h", 1))
            assert isinstance(replies.get(timeout=WAIT).message, Welcome)
            hello = plain_inbox.get(timeout=WAIT).message
            assert isinstance(hello, Hello) and hello.agent_id == dealer.name
        handler = zap_handler(ctx)
        assert handler.stats.admitted + handler.stats.refused == 0  # never asked about NULL
    finally:
        for dealer in dealers:
            dealer.close(linger=0)
        plain.close(linger=0)
        server.close(linger=0)


def test_null_with_a_domain_and_plain_are_refused(
    ctx: Any, client_ctx: Any, short_dir: Path
) -> None:
    handler = zap_handler(ctx)
    servers, clients = [], []
    try:
        null_server = ctx.socket(zmq.ROUTER)
        null_server.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        null_server.bind(f"ipc://{short_dir}/null.sock")
        plain_server = ctx.socket(zmq.ROUTER)
        plain_server.setsockopt(zmq.PLAIN_SERVER, 1)
        plain_server.bind(f"ipc://{short_dir}/plain.sock")
        servers += [null_server, plain_server]
        for name, server in (("null", null_server), ("plain", plain_server)):
            client = client_ctx.socket(zmq.DEALER)
            if name == "plain":
                client.setsockopt(zmq.PLAIN_USERNAME, b"admin")
                client.setsockopt(zmq.PLAIN_PASSWORD, b"secret")
            client.connect(f"ipc://{short_dir}/{name}.sock")
            clients.append(client)
            with gevent.Timeout(0.5, False):
                client.send(b"hello")
            poller = zmq.green.Poller()
            poller.register(server, zmq.POLLIN)
            assert not poller.poll(500), f"the {name} client got through"
        # Each client was refused; a refused client reconnects (ZeroMQ's reconnect interval),
        # so a slow run may count one of them twice.
        assert handler.stats.refused >= 2
        assert handler.stats.admitted == 0
    finally:
        for sock in clients + servers:
            sock.close(linger=0)


def test_without_its_handler_a_curve_server_fails_closed(
    ctx: Any, client_ctx: Any, keys: Path
) -> None:
    inbox: gevent.queue.Queue[Incoming] = gevent.queue.Queue()
    server = curve_server(ctx, keys, inbox)
    zap_handler(ctx).stop()  # what a dead handler would look like to libzmq
    client = None
    try:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        client, replies = curve_client(client_ctx, keys, "a1", endpoint)  # a known key
        client.send(make_hello(ServiceKind.PEER_AGENT, "a1", "h", 1))
        with pytest.raises(gevent.queue.Empty):
            inbox.get(timeout=0.5)
        assert replies.empty()
    finally:
        if client is not None:
            client.close(linger=0)
        server.close(linger=0)


def test_a_key_refused_a_hundred_times_is_logged_a_bounded_number_of_times(
    keys: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A refused agent retries for ever: one line at first, then one a minute with the count."""
    caplog.set_level(logging.WARNING, logger="torviz.shared.runtime.zap")
    clock = Clock()
    handler = ZapHandler(zmq.green.Context.instance(), clock=clock)  # never started
    handler.trust(load_keypair(keys, "coordinator"), keys / "authorized")
    x9 = z85.decode(load_public_key(keys, "x9"))
    for _ in range(100):  # 100 hellos in 15 s
        clock.now += 0.15
        assert not handler.decide(curve_request(x9)).admitted
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 1 and handler.stats.refused == 100
    clock.now += REFUSAL_LOG_INTERVAL
    handler.decide(curve_request(x9))
    handler.decide(curve_request(bytes(32)))  # another key is its own line at once
    lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(lines) == 3 and "(99 more refusals since the last line)" in lines[1]


def test_the_refusal_throttle_forgets_the_oldest_beyond_its_bound() -> None:
    throttle = RefusalThrottle(interval=60.0, max_entries=2)
    assert throttle.log_now("d", b"a", "1.1.1.1", 0.0) == 0
    assert throttle.log_now("d", b"a", "1.1.1.1", 1.0) is None
    assert throttle.log_now("d", b"b", "1.1.1.1", 2.0) == 0
    assert throttle.log_now("d", b"c", "1.1.1.1", 3.0) == 0  # "a" forgotten
    assert throttle.log_now("d", b"a", "1.1.1.1", 4.0) == 0
