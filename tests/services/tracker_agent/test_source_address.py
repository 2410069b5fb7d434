"""Announces leave from ``[tracker_agent] bind_address``: the tracker records that address."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from torviz.services.tracker_agent.http_client import http_get, tracker_client
from torviz.services.tracker_agent.udp_client import UdpTrackerClient
from torviz.shared.tracker import AnnounceRequest
from torviz.shared.types import InfoHash, PeerId

SOURCE = "127.0.0.7"


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.client_address[0])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/announce", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http_requests_leave_from_the_source_address(http_server: tuple[str, list[str]]) -> None:
    url, seen = http_server
    assert http_get(url, timeout=5.0, client=tracker_client(source_address=SOURCE)) == b"ok"
    assert http_get(url, timeout=5.0) == b"ok"
    assert seen == [SOURCE, "127.0.0.1"]


def test_udp_requests_leave_from_the_source_address() -> None:
    tracker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tracker.bind(("127.0.0.1", 0))
    tracker.settimeout(5)
    port = tracker.getsockname()[1]
    client = UdpTrackerClient(source_address=SOURCE)
    request = AnnounceRequest(
        info_hash=InfoHash(b"\x01" * 20),
        peer_id=PeerId(b"-TV0100-" + b"x" * 12),
        port=6881,
        uploaded=0,
        downloaded=0,
        left=1,
    )
    done = threading.Event()

    def announce() -> None:
        try:
            client.announce(f"udp://127.0.0.1:{port}/announce", request, timeout=1.0)
        except Exception:
            pass
        finally:
            done.set()

    thread = threading.Thread(target=announce, daemon=True)
    thread.start()
    try:
        _, sender = tracker.recvfrom(2048)
    finally:
        done.wait(timeout=10)
        tracker.close()
    assert sender[0] == SOURCE
