"""Misbehaving and scripted trackers on loopback, run in threads of the (unpatched) test process.

- ``SilentTcpServer``: accepts TCP connections and never answers (a hung tracker).
- ``HttpServer``: an HTTP(S) server whose replies a test scripts per path.
- ``FakeUdpTracker``: a BEP 15 tracker built on the shared codec, with knobs to drop requests,
  answer with a wrong transaction id first, refuse, or answer from an IPv6 socket; it answers
  scrapes too, and ``answer`` replaces its replies with a script (the hostile ones below).
- Hostile behaviours: ``HOSTILE_HTTP`` (path -> reply) and ``HOSTILE_UDP`` (name -> script),
  each with the one-line error the agent must report for it.

Every server is a context manager; leaving it closes its sockets and joins its threads.
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from torviz.shared.bencode import encode
from torviz.shared.tracker import (
    ConnectRequest,
    ConnectResponse,
    ScrapeStats,
    UdpAnnounceRequest,
    UdpAnnounceResponse,
    UdpErrorResponse,
    UdpRequest,
    UdpScrapeRequest,
    UdpScrapeResponse,
    decode_request,
    encode_response,
)
from torviz.shared.types import PeerAddress

_JOIN_S = 2.0

FAKE_STATS = ScrapeStats(complete=7, downloaded=5, incomplete=3)
"""What ``FakeUdpTracker`` answers to every scrape by default."""


class _Closing:
    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SilentTcpServer(_Closing):
    """Listens on 127.0.0.1, accepts every connection, reads nothing, answers nothing."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/announce"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(_JOIN_S)
        self._listener.close()
        for conn in self.accepted:
            conn.close()


@dataclass
class Reply:
    """What ``HttpServer`` sends for one path."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True
    drip: float = 0.0
    """Seconds between body bytes (0: send at once)."""


class HttpServer(_Closing):
    """An HTTP server on loopback whose replies are scripted by path (query ignored).

    Unknown paths get 404. ``requests`` records (path with query, headers) of each request.
    """

    def __init__(
        self,
        routes: dict[str, Reply | Callable[[], Reply]],
        *,
        host: str = "127.0.0.1",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path.split("?", 1)[0])
                reply = route() if callable(route) else route
                if reply is None:
                    reply = Reply(404)
                with contextlib.suppress(OSError):
                    self._send(reply)

            def _send(self, reply: Reply) -> None:
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.content_length:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if not reply.drip:
                    self.wfile.write(reply.body)
                    return
                for byte in reply.body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if server._stop.wait(reply.drip):
                        return

            def log_message(self, format: str, *args: object) -> None:
                pass

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True

        self._stop = threading.Event()
        self._server = Server((host, 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self.host = host
        self.scheme = "https" if tls is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, path: str) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_JOIN_S)


class FakeUdpTracker(_Closing):
    """A scripted BEP 15 tracker.

    Args:
        peers: returned by every announce.
        host: ``127.0.0.1`` or ``::1`` (peers are then encoded as 18-byte IPv6 entries).
        drop_first: requests ignored before answering (to force retransmits).
        wrong_tid_first: answer each request once with a wrong transaction id before the
            right answer.
        refuse_announces: answer announces with this error text.
        stats: the counts every scrape returns.
        answer: a script replacing the replies: (tracker, request) -> datagrams to send.
        reject_connection_ids: answer announces carrying these ids with an error.
    """

    def __init__(
        self,
        peers: tuple[PeerAddress, ...] = (),
        *,
        host: str = "127.0.0.1",
        drop_first: int = 0,
        wrong_tid_first: bool = False,
        refuse_announces: str | None = None,
        stats: ScrapeStats = FAKE_STATS,
        answer: Callable[[FakeUdpTracker, UdpRequest], list[bytes]] | None = None,
    ) -> None:
        self.peers = peers
        self.ipv6 = ":" in host
        self.drop_first = drop_first
        self.wrong_tid_first = wrong_tid_first
        self.refuse_announces = refuse_announces
        self.stats = stats
        self.script = answer
        self.reject_connection_ids: set[int] = set()
        self.received: list[UdpRequest] = []
        self._next_id = 0x1000
        family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.bind((host, 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.url = f"udp://{'[::1]' if self.ipv6 else host}:{self.port}/announce"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def connects(self) -> int:
        return sum(isinstance(r, ConnectRequest) for r in self.received)

    @property
    def announces(self) -> list[UdpAnnounceRequest]:
        return [r for r in self.received if isinstance(r, UdpAnnounceRequest)]

    @property
    def scrapes(self) -> list[UdpScrapeRequest]:
        return [r for r in self.received if isinstance(r, UdpScrapeRequest)]

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self._sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            request = decode_request(data)
            self.received.append(request)
            if self.drop_first > 0:
                self.drop_first -= 1
                continue
            tid = request.transaction_id
            if self.script is not None:
                for datagram in self.script(self, request):
                    self._sock.sendto(datagram, sender)
                continue
            if self.wrong_tid_first:
                self._sock.sendto(self.answer(request, tid ^ 0xFFFF), sender)
            self._sock.sendto(self.answer(request, tid), sender)

    def answer(self, request: UdpRequest, tid: int) -> bytes:
        """What an honest tracker answers to ``request``, with transaction id ``tid``."""
        if isinstance(request, ConnectRequest):
            self._next_id += 1
            return encode_response(ConnectResponse(tid, self._next_id))
        if isinstance(request, UdpScrapeRequest):
            stats = tuple(self.stats for _ in request.info_hashes)
            return encode_response(UdpScrapeResponse(tid, stats))
        if request.connection_id in self.reject_connection_ids:
            return encode_response(UdpErrorResponse(tid, "Connection ID missmatch."))
        if self.refuse_announces is not None:
            return encode_response(UdpErrorResponse(tid, self.refuse_announces))
        reply = UdpAnnounceResponse(
            transaction_id=tid, interval=1800, leechers=2, seeders=1, peers=self.peers
        )
        return encode_response(reply, ipv6=self.ipv6)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(_JOIN_S)
        self._sock.close()


# --- hostile trackers -------------------------------------------------------------------------

MILLION_PEERS = b"\x0a\x00\x00\x01\x1a\xe1" * 1_000_000
"""A compact peer list of a million entries (6 MB)."""


HOSTILE_HTTP: dict[str, tuple[Reply, str]] = {
    "/garbage": (Reply(body=b"<html>Service Unavailable</html>"),
                 "tracker reply is not valid bencode"),
    "/truncated": (Reply(body=b"d8:intervali1800e5:peers", content_length=False,
                         headers={"Content-Length": "4000"}),
                   "the tracker's reply was cut short (24 of 4000 bytes)"),
    "/cut-bencode": (Reply(body=b"d8:intervali1800e5:peers12:\x7f\x00"),
                     "tracker reply is not valid bencode (truncated)"),
    "/million": (Reply(body=encode({b"interval": 1800, b"peers": MILLION_PEERS}),
                       content_length=False),
                 "response too large (over 1048576 bytes)"),
    "/loop": (Reply(302, headers={"Location": "/loop2"}), "redirect loop at http://"),
    "/loop2": (Reply(302, headers={"Location": "/loop"}), "redirect loop at http://"),
    "/code": (Reply(body=encode({b"failure reason": b"bad hash", b"failure code": 150})),
              "tracker refused the announce: invalid info_hash (code 150): bad hash"),
}  # fmt: skip
"""Hostile HTTP replies by path, with the error each must produce (``/loop2`` is internal)."""


def _connect_then(
    then: Callable[[FakeUdpTracker, UdpRequest], list[bytes]],
) -> Callable[[FakeUdpTracker, UdpRequest], list[bytes]]:
    def script(tracker: FakeUdpTracker, request: UdpRequest) -> list[bytes]:
        if isinstance(request, ConnectRequest):
            return [tracker.answer(request, request.transaction_id)]
        return then(tracker, request)

    return script


def _honest_prefix(size: int) -> Callable[[FakeUdpTracker, UdpRequest], list[bytes]]:
    return lambda t, r: [t.answer(r, r.transaction_id)[:size]]


def _bad_peer_length(tracker: FakeUdpTracker, request: UdpRequest) -> list[bytes]:
    return [tracker.answer(request, request.transaction_id)[:20] + b"\x01" * 7]


def _wrong_tids(tracker: FakeUdpTracker, request: UdpRequest) -> list[bytes]:
    return [tracker.answer(request, request.transaction_id ^ n) for n in range(1, 13)]


def _error_action(tracker: FakeUdpTracker, request: UdpRequest) -> list[bytes]:
    return [encode_response(UdpErrorResponse(request.transaction_id, "torrent banned"))]


HOSTILE_UDP: dict[str, tuple[Callable[[FakeUdpTracker, UdpRequest], list[bytes]], str]] = {
    "garbage": (lambda t, r: [b"\xff\x00\x17"], "connect response is 3 bytes, needs at least 8"),
    "wrong-tids": (_wrong_tids, "the tracker sent 9 replies with a wrong transaction id"),
    "silent": (lambda t, r: [], "no reply within"),
    "error": (_error_action, "tracker refused the announce: torrent banned"),
    "truncated": (_connect_then(_honest_prefix(12)),
                  "announce response is 12 bytes, needs at least 20"),
    "bad-peers": (_connect_then(_bad_peer_length),
                  "compact IPv4 peer list is 7 bytes, not a multiple of 6"),
}  # fmt: skip
"""Hostile UDP scripts by name, with the error each must produce."""
