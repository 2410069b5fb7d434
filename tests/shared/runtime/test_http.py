"""The pooled HTTP(S) client against loopback servers: keep-alive, streams, bounds, TLS.

The test process is not gevent-patched, so the client's sockets simply block here (the
services patch them; bench/http_client.py runs it patched). The server is a threaded HTTP/1.1
``http.server`` that counts the TCP connections it accepted, so keep-alive is observable.
"""

from __future__ import annotations

import gzip
import http.server
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.shared.runtime.private_ca import PrivateCa, make_private_ca
from torviz.shared.runtime.http import HttpClient, HttpError, user_agent

DATA = bytes(range(256)) * 64  # 16 KiB
BIG = b"b" * (1 << 20)

Route = Callable[[http.server.BaseHTTPRequestHandler], None]


def _send(
    handler: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    headers: dict[str, str] | None = None,
    length: int | None = None,
) -> None:
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body) if length is None else length))
    handler.end_headers()
    handler.wfile.write(body)


def _data(handler: http.server.BaseHTTPRequestHandler) -> None:
    asked = handler.headers.get("Range")
    if asked is None:
        _send(handler, 200, DATA)
        return
    first, last = (int(n) for n in asked.removeprefix("bytes=").split("-"))
    _send(handler, 206, DATA[first : last + 1], {"Content-Range": f"bytes {first}-{last}/16384"})


def _drip(handler: http.server.BaseHTTPRequestHandler) -> None:
    _send(handler, 200, b"", length=100)
    for _ in range(100):
        handler.wfile.write(b"d")
        handler.wfile.flush()
        time.sleep(0.05)


def _stall(handler: http.server.BaseHTTPRequestHandler) -> None:
    _send(handler, 200, b"s", length=100)  # then nothing for 5 s
    time.sleep(5)


def _cut(handler: http.server.BaseHTTPRequestHandler) -> None:
    _send(handler, 200, b"c" * 10, length=1000)
    handler.close_connection = True


ROUTES: dict[str, Route] = {
    "/data": _data,
    "/big": lambda h: _send(h, 200, BIG),
    "/redirect": lambda h: _send(h, 302, b"moved", {"Location": "/data"}),
    "/missing": lambda h: _send(h, 404, b"no such file"),
    "/drip": _drip,
    "/stall": _stall,
    "/cut": _cut,
    "/gzip": lambda h: _send(h, 200, gzip.compress(b"x" * 1000), {"Content-Encoding": "gzip"}),
}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that hung up: fine
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class Site:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving ``ROUTES``; counts connections."""

    def __init__(self, private_ca: PrivateCa | None = None) -> None:
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True
            timeout = 5.0  # an idle kept-alive connection ends its thread

            def setup(self) -> None:
                site.connections += 1
                super().setup()

            def do_GET(self) -> None:
                site.requests.append((self.path, dict(self.headers.items())))
                if self.path == "/once":  # one reply per connection, then a silent close
                    self.close_connection = getattr(self, "served", False)
                    if not self.close_connection:
                        self.served = True
                        _send(self, 200, DATA)
                    return
                route = ROUTES.get(self.path)
                try:
                    if route is None:
                        _send(self, 404, b"")
                    else:
                        route(self)
                except OSError:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self._server = _Server(("127.0.0.1", 0), Handler)
        scheme = "http"
        if private_ca is not None:
            context = private_ca.server_context()
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.base = f"{scheme}://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


@pytest.fixture
def site() -> Iterator[Site]:
    running = Site()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def client() -> Iterator[HttpClient]:
    made = HttpClient()
    try:
        yield made
    finally:
        made.close()


def error_of(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(HttpError) as caught:
        call()
    return caught.value.reason, str(caught.value)


def test_gets_share_one_kept_alive_connection(site: Site, client: HttpClient) -> None:
    for _ in range(3):
        reply = client.get(site.url("/data"), timeout=5.0, max_body=len(DATA))
        assert (reply.status, reply.body) == (200, DATA)
    assert site.connections == 1
    _, headers = site.requests[0]
    assert headers["User-Agent"] == user_agent()
    assert "Accept-Encoding" not in headers


def test_a_redirect_is_followed_on_the_same_connection(site: Site, client: HttpClient) -> None:
    reply = client.get(site.url("/redirect"), timeout=5.0)
    assert (reply.url, reply.body) == (site.url("/data"), DATA)
    assert [path for path, _ in site.requests] == ["/redirect", "/data"]
    assert site.connections == 1


def test_a_kept_connection_closed_meanwhile_is_replaced_once(
    site: Site, client: HttpClient
) -> None:
    """The server drops a kept-alive connection just as we reuse it: one retry, fresh."""
    for _ in range(3):
        assert client.get(site.url("/once"), timeout=5.0).body == DATA
    assert [path for path, _ in site.requests] == ["/once"] * 5
    assert site.connections == 3


def test_a_stream_reads_a_range_into_a_buffer(site: Site, client: HttpClient) -> None:
    buffer = bytearray(200)
    view = memoryview(buffer)
    with client.open(site.url("/data"), timeout=5.0, headers={"Range": "bytes=100-299"}) as got:
        assert got.status == 206
        assert got.headers["Content-Range"] == "bytes 100-299/16384"
        filled = 0
        for _ in range(200):  # bounded: at least one byte per round until the end
            n = got.readinto(view[filled:])
            if n == 0:
                break
            filled += n
        assert got.readinto(bytearray(10)) == 0
    assert buffer == DATA[100:300]
    client.get(site.url("/data"), timeout=5.0)
    assert site.connections == 1  # read to its end, the connection went back to the pool


def test_skip_discards_the_bytes_before_an_offset(site: Site, client: HttpClient) -> None:
    with client.open(site.url("/data"), timeout=5.0) as got:
        got.skip(1000)
        buffer = bytearray(24)
        assert got.readinto(buffer) == 24
        assert buffer == DATA[1000:1024]
    with client.open(site.url("/data"), timeout=5.0) as got:
        assert error_of(lambda: got.skip(len(DATA) + 1)) == (
            "bad_http",
            "the server's reply ended after 16384 bytes",
        )


def test_an_abandoned_stream_gives_its_connection_slot_back(site: Site) -> None:
    one = HttpClient(max_per_host=1)
    try:
        stream = one.open(site.url("/big"), timeout=5.0)
        assert stream.readinto(bytearray(1000)) > 0
        stream.close()  # a megabyte unread: the connection is dropped, its slot is free
        with one.open(site.url("/big"), timeout=5.0):
            pass  # leaving unread also drops it
        started = time.monotonic()
        assert one.get(site.url("/data"), timeout=2.0).body == DATA
        assert time.monotonic() - started < 1.0
        assert site.connections == 3
    finally:
        one.close()


def test_open_passes_any_status_get_accepts_200_only(site: Site, client: HttpClient) -> None:
    with client.open(site.url("/missing"), timeout=5.0) as got:
        assert got.status == 404
    assert error_of(lambda: client.get(site.url("/missing"), timeout=5.0)) == (
        "http_status",
        "HTTP 404 Not Found",
    )


def test_a_dripping_stream_is_cut_at_the_deadline(site: Site, client: HttpClient) -> None:
    started = time.monotonic()
    got = client.open(site.url("/drip"), timeout=0.4)

    def drain() -> None:
        for _ in range(200):
            if not got.read_chunk(100):
                return

    assert error_of(drain) == ("timed_out", "timed out after 0.4 s")
    got.close()
    assert time.monotonic() - started < 1.5


def test_abort_from_another_thread_ends_a_blocked_read_at_once(
    site: Site, client: HttpClient
) -> None:
    got = client.open(site.url("/stall"), timeout=30)
    outcome: list[object] = []

    def drain() -> None:
        try:
            while got.read_chunk(100):
                pass
            outcome.append("ended")
        except HttpError as exc:
            outcome.append(exc.reason)

    reader = threading.Thread(target=drain)
    reader.start()
    time.sleep(0.3)
    started = time.monotonic()
    got.abort()
    reader.join(5)
    assert not reader.is_alive() and time.monotonic() - started < 1.0
    assert outcome == ["aborted"] and got.received < 100, (outcome, got.received)
    got.close()


def test_a_body_cut_short_names_what_came(site: Site, client: HttpClient) -> None:
    assert error_of(lambda: client.get(site.url("/cut"), timeout=5.0)) == (
        "bad_http",
        "the server's reply was cut short (10 of 1000 bytes)",
    )


def test_the_body_limit_counts_wire_bytes_never_decoded(site: Site, client: HttpClient) -> None:
    compressed = gzip.compress(b"x" * 1000)
    assert client.get(site.url("/gzip"), timeout=5.0).body == compressed
    assert error_of(lambda: client.get(site.url("/big"), timeout=5.0, max_body=1000)) == (
        "response_too_large",
        "response too large (over 1000 bytes)",
    )


def test_the_peer_name_is_in_the_messages(site: Site) -> None:
    tracker = HttpClient(peer_name="the tracker")
    try:
        assert error_of(lambda: tracker.get(site.url("/cut"), timeout=5.0))[1].startswith(
            "the tracker's reply was cut short"
        )
    finally:
        tracker.close()


@pytest.fixture
def private_ca(tmp_path: Path) -> PrivateCa:
    return make_private_ca(tmp_path)


def test_https_with_a_private_ca_needs_its_ca_file(private_ca: PrivateCa) -> None:
    https = Site(private_ca)
    trusting, default = HttpClient(ca_file=str(private_ca.ca_file)), HttpClient()
    try:
        assert https.base.startswith("https://127.0.0.1:")
        for _ in range(2):
            assert trusting.get(https.url("/data"), timeout=5.0).body == DATA
        assert https.connections == 1  # the TLS session is kept alive too
        reason, message = error_of(lambda: default.get(https.url("/data"), timeout=5.0))
        assert (reason, message) == (
            "tls_error",
            "TLS certificate rejected: unable to get local issuer certificate",
        )
    finally:
        trusting.close()
        default.close()
        https.close()


def test_another_ca_is_not_trusted(private_ca: PrivateCa, tmp_path: Path) -> None:
    https = Site(private_ca)
    (tmp_path / "other").mkdir()
    other = make_private_ca(tmp_path / "other")
    wrong = HttpClient(ca_file=str(other.ca_file))
    try:
        assert error_of(lambda: wrong.get(https.url("/data"), timeout=5.0))[0] == "tls_error"
    finally:
        wrong.close()
        https.close()


@pytest.mark.parametrize("content", [None, b"not a certificate\n"])
def test_an_unreadable_ca_file_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    reason, message = error_of(lambda: HttpClient(ca_file=str(path)))
    assert reason == "bad_ca_file"
    assert message.startswith(f"cannot read CA certificates from {path}: ")
    assert "\n" not in message
