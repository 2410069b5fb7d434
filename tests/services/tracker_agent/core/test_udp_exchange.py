"""The BEP 15 exchange state machine with a fake clock: nothing sleeps, time is a number.

Replies are built with the shared codec, as a tracker would send them; every datagram the
exchange hands out is decoded back, so the test sees exactly what would go on the wire.
"""

from __future__ import annotations

import itertools
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torviz.services.tracker_agent.core.udp_exchange import (
    MAX_STRAY_REPLIES,
    Connection,
    RetransmitPolicy,
    UdpExchange,
)
from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    PROTOCOL_ID,
    AnnounceEvent,
    ConnectRequest,
    ConnectResponse,
    UdpAnnounceRequest,
    UdpAnnounceResponse,
    UdpErrorResponse,
    UdpTrackerError,
    decode_announce_response,
    decode_request,
    encode_request,
    encode_response,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

BEP15 = RetransmitPolicy()
PEER = PeerAddress("127.0.0.2", 6881)


def announce_bytes(connection_id: int, tid: int) -> bytes:
    return encode_request(
        UdpAnnounceRequest(
            connection_id=connection_id, transaction_id=tid, info_hash=InfoHash(b"\x11" * 20),
            peer_id=PeerId(b"-TV0100-abcdefghijkl"), downloaded=0, left=10, uploaded=0,
            event=AnnounceEvent.STARTED,
            ip=0, key=1, num_want=50, port=6881,
        )
    )  # fmt: skip


def make(now: float = 0.0, **kwargs) -> UdpExchange[UdpAnnounceResponse]:
    tids = itertools.count(100)
    kwargs.setdefault("policy", BEP15)
    return UdpExchange(
        announce_bytes,
        partial(decode_announce_response, ipv6=False),
        now=now,
        new_tid=lambda: next(tids),
        **kwargs,
    )


def connect_reply(packet: bytes, connection_id: int = 0xC0FFEE) -> bytes:
    request = decode_request(packet)
    assert isinstance(request, ConnectRequest)
    return encode_response(ConnectResponse(request.transaction_id, connection_id))


def announce_reply(packet: bytes) -> bytes:
    request = decode_request(packet)
    assert isinstance(request, UdpAnnounceRequest)
    reply = UdpAnnounceResponse(
        transaction_id=request.transaction_id, interval=900, leechers=1, seeders=2, peers=(PEER,)
    )
    return encode_response(reply)


def silence(exchange: UdpExchange[UdpAnnounceResponse], limit: int = 100) -> list[float]:
    """Let every deadline pass with no reply; the times at which a datagram went out."""
    sent_at: list[float] = []
    for _ in range(limit):
        if exchange.done:
            return sent_at
        now = exchange.deadline
        if exchange.on_timer(now) is not None:
            sent_at.append(now)
    raise AssertionError("the exchange never ended")


def test_connect_then_announce():
    exchange = make()
    first = exchange.start(0.0)
    assert decode_request(first) == ConnectRequest(100)
    assert first[:8] == PROTOCOL_ID.to_bytes(8, "big")
    announce = exchange.on_datagram(connect_reply(first), 0.5)
    assert announce is not None
    request = decode_request(announce)
    assert isinstance(request, UdpAnnounceRequest)
    assert (request.connection_id, request.transaction_id) == (0xC0FFEE, 101)
    assert exchange.learned == Connection(0xC0FFEE, 0.5)
    assert exchange.on_datagram(announce_reply(announce), 0.7) is None
    assert exchange.done and exchange.deadline == float("inf")
    assert isinstance(exchange.outcome, UdpAnnounceResponse)
    assert exchange.outcome.peers == (PEER,)
    assert exchange.sent == 2


def test_retransmits_follow_15_times_2_to_the_n_up_to_n_8_then_fail():
    exchange = make(now=1000.0)
    packet = exchange.start(1000.0)
    assert exchange.deadline == 1015.0
    assert exchange.on_timer(1014.9) is None  # not yet
    sent_at = silence(exchange)
    # 15, 30, 60 ... 1920 s between sends, then the last wait of 3840 s.
    assert [t - 1000.0 for t in sent_at] == [15, 45, 105, 225, 465, 945, 1905, 3825]
    assert exchange.sent == 9
    assert isinstance(exchange.outcome, TrackerError)
    assert (exchange.outcome.reason, str(exchange.outcome)) == (
        "timed_out",
        "no reply after 9 tries",
    )
    assert BEP15.request_bound == 7665.0 and BEP15.exchange_bound == 15330.0
    assert decode_request(packet) == ConnectRequest(100)


def test_a_retransmission_repeats_the_bytes_and_a_late_answer_to_the_first_copy_counts():
    exchange = make()
    first = exchange.start(0.0)
    again = exchange.on_timer(15.0)
    assert again == first  # same transaction id
    announce = exchange.on_datagram(connect_reply(first), 20.0)
    assert announce is not None and not exchange.done


def test_the_announce_starts_its_own_schedule_after_the_connect():
    exchange = make()
    first = exchange.start(0.0)
    exchange.on_timer(15.0)
    exchange.on_timer(45.0)  # n = 2 for the connect
    announce = exchange.on_datagram(connect_reply(first), 50.0)
    assert announce is not None
    assert exchange.deadline == 65.0  # the announce waits 15 s first


def test_cached_connection_id_is_used_within_its_lifetime():
    exchange = make(now=100.0, cached=Connection(77, 50.0))
    request = decode_request(exchange.start(100.0))
    assert isinstance(request, UdpAnnounceRequest) and request.connection_id == 77
    expired = make(now=110.0, cached=Connection(77, 50.0))
    assert isinstance(decode_request(expired.start(110.0)), ConnectRequest)


def test_an_id_that_expires_during_retransmits_is_renewed_and_n_goes_on():
    exchange = make()
    first = exchange.start(0.0)
    announce = exchange.on_datagram(connect_reply(first, 1), 1.0)
    assert announce is not None
    assert exchange.on_timer(16.0) == announce  # id 15 s old: resend as is
    third = exchange.on_timer(46.0)  # 45 s old
    assert third == announce
    rekey = exchange.on_timer(106.0)  # 105 s old: BEP 15 says get a new one first
    assert rekey is not None and isinstance(decode_request(rekey), ConnectRequest)
    assert exchange.deadline == 106.0 + 120.0  # n = 3 carries on
    renewed = exchange.on_datagram(connect_reply(rekey, 2), 107.0)
    assert renewed is not None
    request = decode_request(renewed)
    assert isinstance(request, UdpAnnounceRequest) and request.connection_id == 2
    assert exchange.deadline == 107.0 + 120.0


def test_a_refused_cached_id_reconnects_once_then_a_refusal_is_final():
    exchange = make(now=10.0, cached=Connection(77, 0.0))
    announce = exchange.start(10.0)
    request = decode_request(announce)
    refusal = encode_response(UdpErrorResponse(request.transaction_id, "Connection ID missmatch."))
    connect = exchange.on_datagram(refusal, 10.1)
    assert connect is not None and isinstance(decode_request(connect), ConnectRequest)
    assert exchange.forget_cached
    again = exchange.on_datagram(connect_reply(connect), 10.2)
    assert again is not None
    tid = decode_request(again).transaction_id
    assert exchange.on_datagram(encode_response(UdpErrorResponse(tid, "banned")), 10.3) is None
    assert isinstance(exchange.outcome, UdpTrackerError)
    assert str(exchange.outcome) == "tracker error: banned"


def test_an_error_packet_to_the_connect_is_a_refusal():
    exchange = make()
    first = exchange.start(0.0)
    tid = decode_request(first).transaction_id
    exchange.on_datagram(encode_response(UdpErrorResponse(tid, "go away")), 0.1)
    assert isinstance(exchange.outcome, UdpTrackerError) and exchange.outcome.text == "go away"


def test_stray_replies_are_ignored_up_to_a_bound():
    exchange = make()
    first = exchange.start(0.0)
    stray = encode_response(ConnectResponse(0xDEAD, 5))
    for _ in range(MAX_STRAY_REPLIES):
        assert exchange.on_datagram(stray, 0.1) is None
    assert not exchange.done
    assert exchange.on_datagram(connect_reply(first), 0.2) is not None  # still listening
    for _ in range(MAX_STRAY_REPLIES + 1):
        exchange.on_datagram(stray, 0.3)
    assert isinstance(exchange.outcome, TrackerError)
    assert str(exchange.outcome) == "the tracker sent 9 replies with a wrong transaction id"


@pytest.mark.parametrize(
    ("reply", "reason", "text"),
    [
        (b"\x00\x00", "truncated", "connect response is 2 bytes, needs at least 8"),
        (b"\x00\x00\x00\x01\x00\x00\x00\x64" + b"\x00" * 12, "wrong_action",
         "expected a connect response (action 0), got 1"),
        (b"\x00\x00\x00\x00\x00\x00\x00\x64\x00", "truncated",
         "connect response is 9 bytes, needs at least 16"),
    ],
)  # fmt: skip
def test_malformed_replies_end_the_exchange_with_their_cause(reply, reason, text):
    exchange = make()
    exchange.start(0.0)
    assert exchange.on_datagram(reply, 0.1) is None
    assert isinstance(exchange.outcome, TrackerError)
    assert (exchange.outcome.reason, str(exchange.outcome)) == (reason, text)


def test_timeout_cuts_the_schedule_short():
    exchange = make(timeout=40.0)
    exchange.start(0.0)
    assert silence(exchange) == [15.0]  # the second wait (30 s) would end past 40 s
    assert str(exchange.outcome) == "timed out after 40 s"


def test_a_small_policy_for_tests_and_config():
    policy = RetransmitPolicy(base=0.5, max_retransmits=2)
    exchange = make(policy=policy)
    exchange.start(0.0)
    assert silence(exchange) == [0.5, 1.5]
    assert exchange.outcome is not None and str(exchange.outcome) == "no reply after 3 tries"
    assert policy.request_bound == 3.5
    with pytest.raises(ValueError):
        RetransmitPolicy(base=0)
    with pytest.raises(ValueError):
        RetransmitPolicy(max_retransmits=-1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["timer", "connect", "announce", "stray", "late"]), max_size=60))
def test_any_mix_of_events_stays_bounded(events):
    """Whatever happens, at most 2 * 9 datagrams go out and the deadline never goes back."""
    exchange = make()
    last = exchange.start(0.0)
    now = 0.0
    for event in events:
        if exchange.done:
            break
        if event == "timer":
            now = exchange.deadline
            packet = exchange.on_timer(now)
        else:
            now += 1.0
            request = decode_request(last)
            if event == "connect" and isinstance(request, ConnectRequest):
                packet = exchange.on_datagram(connect_reply(last), now)
            elif event == "announce" and isinstance(request, UdpAnnounceRequest):
                packet = exchange.on_datagram(announce_reply(last), now)
            else:
                packet = exchange.on_datagram(encode_response(ConnectResponse(1, 2)), now)
        if packet is not None:
            last = packet
        assert exchange.done or exchange.deadline >= now
    silence(exchange)
    assert exchange.done and exchange.sent <= 2 * (BEP15.max_retransmits + 1)
