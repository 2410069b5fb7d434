"""The UDP tracker client (BEP 15) against a scripted tracker on loopback.

The retransmit schedule itself is tested with a fake clock in ``core/test_udp_exchange.py``; here
the real sockets run it on a 50 ms base instead of BEP 15's 15 s, so the tests are fast. The
connection-id lifetime is checked with a clock the test moves forward.
"""

from __future__ import annotations

import socket
import time

import pytest

from testing import free_port
from tests.services.tracker_agent.fakes import FAKE_STATS, HOSTILE_UDP, FakeUdpTracker
from torviz.services.tracker_agent.core.udp_exchange import RetransmitPolicy
from torviz.services.tracker_agent.udp_client import UdpTracker, UdpTrackerClient, parse_udp_url
from torviz.shared.errors import TrackerError
from torviz.shared.tracker import AnnounceEvent, AnnounceFailure, AnnounceRequest, AnnounceResponse
from torviz.shared.types import InfoHash, PeerAddress, PeerId

PEERS = (PeerAddress("127.0.0.2", 6881), PeerAddress("127.0.0.3", 6882))
REQUEST = AnnounceRequest(
    info_hash=InfoHash(b"\xbb" * 20),
    peer_id=PeerId(b"-TV0100-abcdefghijkl"),
    port=6881,
    uploaded=5,
    downloaded=6,
    left=7,
    event=AnnounceEvent.STARTED,
    numwant=50,
    key=0x1234,
)


class FakeClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def client(base: float = 0.05, retransmits: int = 3, **kwargs) -> UdpTrackerClient:
    return UdpTrackerClient(policy=RetransmitPolicy(base, retransmits), **kwargs)


def test_connect_then_announce():
    with FakeUdpTracker(PEERS) as tracker:
        result = client().announce(tracker.url, REQUEST, timeout=2.0)
        assert isinstance(result, AnnounceResponse)
        assert result.addresses == PEERS
        assert (result.interval, result.complete, result.incomplete) == (1800, 1, 2)
        (sent,) = tracker.announces
        assert (sent.event, sent.left, sent.uploaded, sent.downloaded) == (
            AnnounceEvent.STARTED,
            7,
            5,
            6,
        )
        assert (sent.num_want, sent.key, sent.port) == (50, 0x1234, 6881)
        assert sent.url_data == b"/announce"  # BEP 41
        assert sent.connection_id == 0x1001  # the id the connect handed out


def test_connection_id_is_reused_for_60_s_then_renewed():
    clock = FakeClock()
    udp = client(clock=clock)
    with FakeUdpTracker(PEERS) as tracker:
        udp.announce(tracker.url, REQUEST, timeout=2.0)
        udp.announce(tracker.url, REQUEST, timeout=2.0)
        assert tracker.connects == 1
        clock.offset = 59.0
        udp.announce(tracker.url, REQUEST, timeout=2.0)
        assert tracker.connects == 1
        clock.offset = 60.5
        udp.announce(tracker.url, REQUEST, timeout=2.0)
        assert tracker.connects == 2
        assert [a.connection_id for a in tracker.announces] == [0x1001] * 3 + [0x1002]


def test_rejected_cached_id_reconnects_once():
    udp = client()
    with FakeUdpTracker(PEERS) as tracker:
        udp.announce(tracker.url, REQUEST, timeout=2.0)
        tracker.reject_connection_ids.add(0x1001)
        result = udp.announce(tracker.url, REQUEST, timeout=2.0)
        assert isinstance(result, AnnounceResponse)
        assert tracker.connects == 2


def test_lost_packets_are_retransmitted():
    with FakeUdpTracker(PEERS, drop_first=2) as tracker:
        started = time.monotonic()
        result = client().announce(tracker.url, REQUEST, timeout=2.0)
        assert isinstance(result, AnnounceResponse)
        # connect sent 3 times (waits of 50 and 100 ms), then one announce.
        assert tracker.connects == 3 and len(tracker.announces) == 1
        assert 0.14 <= time.monotonic() - started < 1.0


def test_retransmits_stop_after_max_n():
    with FakeUdpTracker(PEERS, drop_first=100) as tracker:
        started = time.monotonic()
        with pytest.raises(TrackerError) as caught:
            client(retransmits=2).announce(tracker.url, REQUEST)
        assert (caught.value.reason, str(caught.value)) == ("timed_out", "no reply after 3 tries")
        assert tracker.connects == 3
        assert 0.34 <= time.monotonic() - started < 1.5  # 50 + 100 + 200 ms


def test_a_timeout_cuts_the_retransmit_schedule_short():
    with FakeUdpTracker(PEERS, drop_first=100) as tracker:
        started = time.monotonic()
        with pytest.raises(TrackerError) as caught:
            client(15.0, 8).announce(tracker.url, REQUEST, timeout=0.3)
        assert (caught.value.reason, str(caught.value)) == ("timed_out", "timed out after 0.3 s")
        assert time.monotonic() - started < 1.0
        assert tracker.connects == 1


def test_wrong_transaction_ids_are_ignored():
    with FakeUdpTracker(PEERS, wrong_tid_first=True) as tracker:
        result = client().announce(tracker.url, REQUEST, timeout=2.0)
        assert isinstance(result, AnnounceResponse) and result.addresses == PEERS
        assert tracker.connects == 1 and len(tracker.announces) == 1


def test_error_packet_is_a_tracker_refusal():
    with FakeUdpTracker(PEERS, refuse_announces="Requested download is not authorized") as t:
        result = client().announce(t.url, REQUEST, timeout=2.0)
        assert result == AnnounceFailure(reason="Requested download is not authorized")


def test_ipv6_tracker_sends_18_byte_peers():
    try:
        probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback")
    peers = (PeerAddress("::1", 7000), PeerAddress("fe80::2", 7001))
    with FakeUdpTracker(peers, host="::1") as tracker:
        assert tracker.url.startswith("udp://[::1]:")
        result = client().announce(tracker.url, REQUEST, timeout=2.0)
        assert isinstance(result, AnnounceResponse) and result.addresses == peers


def test_nobody_listening_is_connection_refused():
    port = free_port()
    with pytest.raises(TrackerError) as caught:
        client().announce(f"udp://127.0.0.1:{port}", REQUEST, timeout=2.0)
    assert (caught.value.reason, str(caught.value)) == ("connection_refused", "connection refused")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("udp://t.example:80", UdpTracker("t.example", 80, b"")),
        ("udp://t.example:80/", UdpTracker("t.example", 80, b"")),
        ("udp://[::1]:6969/announce", UdpTracker("::1", 6969, b"/announce")),
        ("UDP://t:1/a/b?k=v&x=1", UdpTracker("t", 1, b"/a/b?k=v&x=1")),
    ],
)
def test_parse_udp_url(url, expected):
    assert parse_udp_url(url) == expected


@pytest.mark.parametrize(
    "url", ["udp://t.example", "http://t:1/announce", "udp://:80", "udp://t:99999"]
)
def test_bad_udp_urls(url):
    with pytest.raises(TrackerError) as caught:
        parse_udp_url(url)
    assert caught.value.reason == "bad_url"


def test_the_default_schedule_is_bep_15():
    assert UdpTrackerClient().policy == RetransmitPolicy(15.0, 8)


def test_scrape_reuses_the_connection_id():
    udp = client()
    with FakeUdpTracker(PEERS) as tracker:
        udp.announce(tracker.url, REQUEST, timeout=2.0)
        assert udp.scrape(tracker.url, REQUEST.info_hash, timeout=2.0) == FAKE_STATS
        assert tracker.connects == 1
        (scrape,) = tracker.scrapes
        assert (scrape.connection_id, scrape.info_hashes) == (0x1001, (REQUEST.info_hash,))


def test_scrape_refused_is_an_error():
    with FakeUdpTracker(PEERS, answer=HOSTILE_UDP["error"][0]) as tracker:
        with pytest.raises(TrackerError) as caught:
            client().scrape(tracker.url, REQUEST.info_hash, timeout=2.0)
        assert (caught.value.reason, str(caught.value)) == (
            "tracker_error",
            "tracker error: torrent banned",
        )


@pytest.mark.parametrize("name", sorted(set(HOSTILE_UDP) - {"silent"}))
def test_hostile_replies_end_with_their_cause_at_once(name):
    script, expected = HOSTILE_UDP[name]
    with FakeUdpTracker(PEERS, answer=script) as tracker:
        started = time.monotonic()
        result: AnnounceResponse | AnnounceFailure | TrackerError
        try:
            result = client(15.0, 8).announce(tracker.url, REQUEST)
        except TrackerError as exc:
            result = exc
        text = result.message if isinstance(result, AnnounceFailure) else str(result)
        assert text.startswith(expected)
        assert time.monotonic() - started < 2.0  # no retransmit wait: 15 s would show
