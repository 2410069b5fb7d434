"""Replies captured from a real opentracker, decoded by torviz's codecs.

The stored vectors in ``tests/vectors/tracker/`` come from ``capture_opentracker.py``; the
interop test repeats the capture against a live loopback opentracker and runs the same checks,
so a codec change that breaks real-tracker compatibility fails even if the files are stale.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    PROTOCOL_ID,
    AnnounceFailure,
    AnnounceResponse,
    ConnectRequest,
    ScrapeStats,
    UdpAnnounceRequest,
    UdpScrapeRequest,
    UdpTrackerError,
    decode_announce_response,
    decode_connect_response,
    decode_error_response,
    decode_request,
    decode_scrape_response,
    encode_request,
    parse_announce_response,
    parse_scrape_response,
)
from torviz.shared.types import PeerAddress

VECTORS = Path(__file__).resolve().parents[2] / "vectors" / "tracker"


def _load_capture_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "capture_opentracker", VECTORS / "capture_opentracker.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("capture_opentracker", module)
    spec.loader.exec_module(module)
    return module


cap = _load_capture_script()
PEER_A = PeerAddress("127.0.0.1", cap.PORT_A)
PEER_B = PeerAddress("127.0.0.1", cap.PORT_B)


def stored_vectors() -> dict[str, bytes]:
    return {path.stem: path.read_bytes() for path in VECTORS.glob("*.bin")}


def check_connect(v: dict[str, bytes]) -> int:
    """Our connect request is the BEP 15 bytes; opentracker's reply decodes."""
    assert v["udp_connect_request"] == (
        PROTOCOL_ID.to_bytes(8, "big") + bytes(4) + cap.CONNECT_TID.to_bytes(4, "big")
    )
    assert decode_request(v["udp_connect_request"]) == ConnectRequest(cap.CONNECT_TID)
    reply = decode_connect_response(v["udp_connect_response"], cap.CONNECT_TID)
    assert (
        decode_connect_response(v["udp_connect_response"] + b"\x00" * 8, cap.CONNECT_TID) == reply
    )
    return reply.connection_id


def check_announces(v: dict[str, bytes], connection_id: int) -> None:
    for name, peer, port, tid in (
        ("a", cap.PEER_A, cap.PORT_A, cap.ANNOUNCE_A_TID),
        ("b", cap.PEER_B, cap.PORT_B, cap.ANNOUNCE_B_TID),
    ):
        sent = UdpAnnounceRequest.from_request(
            cap.announce_request(peer, port), connection_id=connection_id, transaction_id=tid
        )
        assert v[f"udp_announce_{name}_request"] == encode_request(sent)
        assert decode_request(v[f"udp_announce_{name}_request"]) == sent
    first = decode_announce_response(v["udp_announce_a_response"], cap.ANNOUNCE_A_TID, ipv6=False)
    assert first.peers == (PEER_A,) and (first.seeders, first.leechers) == (1, 0)
    second = decode_announce_response(v["udp_announce_b_response"], cap.ANNOUNCE_B_TID, ipv6=False)
    assert set(second.peers) == {PEER_A, PEER_B} and (second.seeders, second.leechers) == (2, 0)
    # opentracker jitters its 30-minute interval; either way it is within our bounds.
    result = second.to_response()
    assert 600 <= second.interval <= 3600 and result.interval == second.interval
    assert set(result.addresses) == {PEER_A, PEER_B} and result.dropped_peers == 0
    with pytest.raises(TrackerError) as caught:
        decode_announce_response(v["udp_announce_b_response"], cap.ANNOUNCE_A_TID, ipv6=False)
    assert caught.value.reason == "wrong_transaction"
    with pytest.raises(TrackerError) as caught:
        decode_announce_response(
            v["udp_announce_b_response"] + b"\x00", cap.ANNOUNCE_B_TID, ipv6=False
        )
    assert caught.value.reason == "bad_compact_length"


def check_scrape(v: dict[str, bytes], connection_id: int) -> None:
    sent = UdpScrapeRequest(connection_id, cap.SCRAPE_TID, cap.SCRAPE_HASHES)
    assert v["udp_scrape_request"] == encode_request(sent)
    assert decode_request(v["udp_scrape_request"]) == sent
    reply = decode_scrape_response(v["udp_scrape_response"], cap.SCRAPE_TID, 2)
    assert reply.stats == (ScrapeStats(2, 0, 0), ScrapeStats(0, 0, 0))


def check_refusals(v: dict[str, bytes]) -> None:
    # An unlisted hash draws a bare 8-byte announce header over UDP: too short to use.
    with pytest.raises(TrackerError) as caught:
        decode_announce_response(v["udp_unlisted_response"], cap.UNLISTED_TID, ipv6=False)
    assert caught.value.reason == "truncated"
    # A connection id it never handed out draws an error packet, NUL-terminated.
    assert v["udp_bad_connection_response"].endswith(b"\x00")
    with pytest.raises(UdpTrackerError) as error:
        decode_announce_response(
            v["udp_bad_connection_response"], cap.BAD_CONNECTION_TID, ipv6=False
        )
    assert error.value.reason == "tracker_error"
    assert error.value.text == "Connection ID missmatch."
    packet = decode_error_response(v["udp_bad_connection_response"])
    assert packet.transaction_id == cap.BAD_CONNECTION_TID


def check_http(v: dict[str, bytes]) -> None:
    reply = parse_announce_response(v["http_announce_response"])
    assert isinstance(reply, AnnounceResponse)
    assert set(reply.addresses) == {PEER_A, PEER_B}
    assert reply.complete == 2 and reply.incomplete == 0
    assert reply.min_interval is not None and reply.min_interval < reply.interval
    assert parse_announce_response(v["http_announce_response"] + b"\n") == reply
    failure = parse_announce_response(v["http_announce_failure"])
    assert failure == AnnounceFailure(
        reason="Requested download is not authorized for use with this tracker."
    )
    assert parse_scrape_response(v["http_scrape_response"]) == {cap.LISTED: ScrapeStats(2, 0, 0)}


CHECKS: list[Callable[[dict[str, bytes]], None]] = [
    lambda v: check_announces(v, check_connect(v)),
    lambda v: check_scrape(v, check_connect(v)),
    check_refusals,
    check_http,
]


@pytest.mark.parametrize("check", CHECKS, ids=["announce", "scrape", "refusals", "http"])
def test_stored_opentracker_vectors(check: Callable[[dict[str, bytes]], None]) -> None:
    check(stored_vectors())


def test_stored_vectors_are_complete() -> None:
    names = set(stored_vectors())
    assert {
        f"udp_{n}_{d}"
        for n in ("connect", "announce_a", "announce_b", "scrape", "unlisted", "bad_connection")
        for d in ("request", "response")
    } <= names
    assert {"http_announce_response", "http_announce_failure", "http_scrape_response"} <= names


@pytest.mark.interop
@pytest.mark.skipif(shutil.which(cap.OPENTRACKER) is None, reason="opentracker not installed")
@pytest.mark.skipif(os.geteuid() != 0, reason="opentracker chroots and needs root")
def test_live_opentracker() -> None:
    with cap.running_opentracker() as port:
        vectors = cap.capture(port)
    for check in CHECKS:
        check(vectors)
