"""Hostile web seeds on loopback: `http.server` servers that each misbehave in one way.

Strategy: `FileServer` is a small, honest HTTP/1.1 file server (keep-alive, one byte range per
request, HEAD, 404, 416) serving `root_folder` at `/` the way nginx does (tests/support/nginx.py),
run by a `ThreadingHTTPServer` on a thread of the test process, one thread per connection. Each
hostile server is a subclass that changes one thing:

- `Retry503(root, after=2)`: the first `after` requests get 503 (or `status`) with a
  `Retry-After` header, then files are served;
- `DropHalfway(root)`: headers (with the full Content-Length) and half the body, then the
  connection is closed (every request, or the first `times`);
- `IgnoresRange(root)`: 200 with the whole file whatever the Range (optionally without a
  Content-Length, the body then ending when the connection closes);
- `RedirectLoop()`: 302 to the same URL (``mode="self"``), or between ``/P`` and
  ``/~loop/P`` (``mode="pair"``);
- `CorruptRanges(root, bad={(start, stop), ...})`: serves files with the bytes at those file
  offsets (half-open) flipped;
- `SlowDrip(root)`: headers at once, then the body one byte a second (`interval`).

Every server records each request it got (`SeenRequest`: method, path, Range header, time, and
the serial number of its connection), so tests can assert retries, back-off and keep-alive
(`requests`, `wait_requests`).

Rules:
- Everything is bounded: a connection idle for `idle_timeout` s is closed, a drip stops after
  `limit_s`, and `stop` (or leaving the `with` block) closes the listener and every open
  connection, then joins every thread with a deadline. No thread outlives the test (they are
  daemon threads too, should a test forget to stop).
- URL paths map to files under `root_folder` after percent-decoding (UTF-8, as BEP 19 encodes
  them); a path that leaves the root, or names no file, is a 404.
- A server never logs to stderr; errors of its handlers are kept in `errors` for a test to read.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO, Literal

from testing.processes import StopOnExit, SwarmError

__all__ = [
    "CorruptRanges",
    "DropHalfway",
    "FileServer",
    "IgnoresRange",
    "RedirectLoop",
    "Retry503",
    "SeenRequest",
    "SlowDrip",
]

_CHUNK = 64 * 1024
_POLL_S = 0.02
_JOIN_TIMEOUT_S = 3.0
_MAX_ERRORS = 100
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


@dataclass(frozen=True, slots=True)
class SeenRequest:
    """One request a server got (recorded before it answered).

    Attributes:
        method: ``GET``, ``HEAD`` ...
        path: the request target as sent (percent-encoded, with any query).
        range: the Range header, None when there was none.
        at: `time.monotonic()` when the request's head was read.
        connection: serial number of the TCP connection (1 for the first): the same number
            on two requests means the connection was kept alive.
    """

    method: str
    path: str
    range: str | None
    at: float
    connection: int


@dataclass(frozen=True, slots=True)
class _Reply:
    """What serving a file would answer: the status, the byte span and the headers."""

    status: int
    start: int
    length: int
    size: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # `FileServer.stop` joins the connection threads, with a deadline

    def __init__(self, owner: FileServer, host: str) -> None:
        self.owner = owner
        super().__init__((host, 0), _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        self.owner._note_error()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.server.owner.idle_timeout)
        self.serial = self.server.owner._joined(self)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.owner._left(self)

    def log_message(self, format: str, *args: object) -> None:
        pass  # never to stderr

    def do_GET(self) -> None:
        self.server.owner._dispatch(self)

    def do_HEAD(self) -> None:
        self.server.owner._dispatch(self)


class FileServer(StopOnExit):
    """An honest HTTP/1.1 file server for `root_folder` on a loopback port; a context manager.

    It is running once made. Subclasses change one behaviour (see the module comment).

    Args:
        root_folder: the folder served at `/` (None: every path is a 404).
        host: the loopback address to listen on.
        idle_timeout: seconds a connection may wait for its next request, or block on a send.
    """

    sends_length = True  # whether file replies carry a Content-Length

    def __init__(
        self,
        root_folder: Path | None = None,
        *,
        host: str = "127.0.0.1",
        idle_timeout: float = 10.0,
    ) -> None:
        self.root_folder = Path(root_folder).resolve() if root_folder is not None else None
        self.idle_timeout = idle_timeout
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._requests: list[SeenRequest] = []
        self._handlers: dict[_Handler, threading.Thread] = {}
        self._serials = itertools.count(1)
        self._server = _Server(self, host)
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{type(self).__name__}@{self.port}",
            daemon=True,
        )
        self._thread.start()

    # --- what tests use ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL, ending in `/`: a file ``root_folder/a/b`` is at ``url + "a/b"``."""
        return f"http://{self.host}:{self.port}/"

    @property
    def requests(self) -> tuple[SeenRequest, ...]:
        """Every request got so far, oldest first."""
        with self._lock:
            return tuple(self._requests)

    def wait_requests(self, count: int, timeout: float = 5.0) -> tuple[SeenRequest, ...]:
        """The requests once there are at least `count` of them.

        Raises:
            SwarmError: reason ``timeout`` naming how many came within `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = self.requests
            if len(seen) >= count:
                return seen
            if time.monotonic() >= deadline:
                raise SwarmError(
                    "timeout",
                    f"{self!r} got {len(seen)} requests, not {count}, within {timeout:.1f} s",
                )
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Close the listener and every connection; join the threads (bounded). Idempotent."""
        self._stopping.set()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            handlers = dict(self._handlers)
        for handler in handlers:
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + _JOIN_TIMEOUT_S
        for thread in [self._thread, *handlers.values()]:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url})"

    # --- connection bookkeeping (called by the handler threads) -----------------------------

    def _joined(self, handler: _Handler) -> int:
        with self._lock:
            self._handlers[handler] = threading.current_thread()
            return next(self._serials)

    def _left(self, handler: _Handler) -> None:
        with self._lock:
            self._handlers.pop(handler, None)

    def _note_error(self) -> None:
        text = traceback.format_exc(limit=3)
        with self._lock:
            if len(self.errors) < _MAX_ERRORS:
                self.errors.append(text)

    def _dispatch(self, handler: _Handler) -> None:
        seen = SeenRequest(
            method=handler.command,
            path=handler.path,
            range=handler.headers.get("Range"),
            at=time.monotonic(),
            connection=handler.serial,
        )
        with self._lock:
            self._requests.append(seen)
            number = len(self._requests)
        try:
            self.respond(handler, number)
        except (ConnectionError, TimeoutError):
            handler.close_connection = True  # the client left, or the test stopped us

    # --- behaviour: subclasses override these -----------------------------------------------

    def respond(self, handler: _Handler, number: int) -> None:
        """Answer one request; `number` counts the server's requests from 1."""
        self.serve_file(handler)

    def send_body(self, handler: _Handler, file: BinaryIO, reply: _Reply) -> None:
        """Send the body bytes of `reply` (read from `file`, already at `reply.start`)."""
        left = reply.length
        offset = reply.start
        while left > 0 and not self._stopping.is_set():
            data = file.read(min(_CHUNK, left))
            if not data:
                raise ConnectionError("file shrank while served")
            handler.wfile.write(self.transform(handler.path, offset, data))
            offset += len(data)
            left -= len(data)

    def transform(self, path: str, offset: int, data: bytes) -> bytes:
        """The bytes sent for file bytes `data` at `offset` (unchanged here)."""
        return data

    def reply_for(self, range_header: str | None, size: int) -> _Reply:
        """Status and span for a request: 206 for one satisfiable range, 416 past the end, 200
        for no range or one this server does not read (several ranges, bad syntax)."""
        whole = _Reply(200, 0, size, size)
        if range_header is None:
            return whole
        match = _RANGE.fullmatch(range_header.strip())
        if match is None or match.group(1) == match.group(2) == "":
            return whole
        first, last = match.group(1), match.group(2)
        if first == "":  # a suffix: the last N bytes
            count = min(int(last), size)
            if count == 0:
                return _Reply(416, 0, 0, size)
            return _Reply(206, size - count, count, size)
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return whole  # syntactically invalid: ignored, as RFC 9110 says
        if start >= size:
            return _Reply(416, 0, 0, size)
        return _Reply(206, start, end - start + 1, size)

    # --- the honest parts every server shares -----------------------------------------------

    def file_for(self, target: str) -> Path | None:
        """The file a request target names under the root, None when there is none."""
        if self.root_folder is None:
            return None
        path = urllib.parse.urlsplit(target).path
        try:
            parts = [urllib.parse.unquote(p, errors="strict") for p in path.split("/") if p]
        except UnicodeDecodeError:
            return None
        if any(p in (".", "..") or "\0" in p for p in parts):
            return None
        candidate = self.root_folder.joinpath(*parts)
        return candidate if candidate.is_file() else None

    def send_status(
        self, handler: _Handler, status: int, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        """A short text answer with `status` and extra `headers`."""
        body = f"{status} {handler.responses.get(status, ('',))[0]}\n".encode()
        handler.send_response(status)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    def send_head(self, handler: _Handler, reply: _Reply, *, length: bool = True) -> None:
        """The status line and headers of a file reply."""
        handler.send_response(reply.status)
        handler.send_header("Content-Type", "application/octet-stream")
        handler.send_header("Accept-Ranges", "bytes")
        if reply.status == 206:
            last = reply.start + reply.length - 1
            handler.send_header("Content-Range", f"bytes {reply.start}-{last}/{reply.size}")
        if length:
            handler.send_header("Content-Length", str(reply.length))
        else:
            handler.send_header("Connection", "close")
            handler.close_connection = True
        handler.end_headers()

    def serve_file(self, handler: _Handler, *, honour_range: bool = True) -> None:
        """Answer with the file the target names (or 404 / 416)."""
        path = self.file_for(handler.path)
        if path is None:
            self.send_status(handler, 404)
            return
        with path.open("rb") as file:
            size = path.stat().st_size
            reply = self.reply_for(handler.headers.get("Range") if honour_range else None, size)
            if reply.status == 416:
                self.send_status(handler, 416, [("Content-Range", f"bytes */{size}")])
                return
            self.send_head(handler, reply, length=self.sends_length)
            if handler.command != "HEAD":
                file.seek(reply.start)
                self.send_body(handler, file, reply)
                handler.wfile.flush()


class Retry503(FileServer):
    """The first `after` requests get `status` (503, or 429) with ``Retry-After``; then files.

    Args:
        root_folder: the folder served once the server "recovers".
        after: how many requests are refused first.
        retry_after: the ``Retry-After`` value (delta seconds or an HTTP date, or any text a
            test wants a client to survive); None sends no ``Retry-After``.
        status: the refusal's status.
    """

    def __init__(
        self,
        root_folder: Path,
        *,
        after: int = 2,
        retry_after: str | None = "1",
        status: int = 503,
        host: str = "127.0.0.1",
    ) -> None:
        self.after = after
        self.retry_after = retry_after
        self.status = status
        super().__init__(root_folder, host=host)

    def respond(self, handler: _Handler, number: int) -> None:
        if number <= self.after:
            headers = [("Retry-After", self.retry_after)] if self.retry_after is not None else []
            self.send_status(handler, self.status, headers)
        else:
            self.serve_file(handler)


class DropHalfway(FileServer):
    """Sends the head (full Content-Length) and half the body, then closes the connection.

    Args:
        root_folder: the folder served.
        times: how many file replies are cut (None: every one); later ones are whole.
    """

    def __init__(
        self, root_folder: Path, *, times: int | None = None, host: str = "127.0.0.1"
    ) -> None:
        self.times = times
        self._cut = 0
        self._cut_lock = threading.Lock()
        super().__init__(root_folder, host=host)

    def send_body(self, handler: _Handler, file: BinaryIO, reply: _Reply) -> None:
        with self._cut_lock:
            cut = self.times is None or self._cut < self.times
            if cut:
                self._cut += 1
        if not cut:
            super().send_body(handler, file, reply)
            return
        half = _Reply(reply.status, reply.start, reply.length // 2, reply.size)
        super().send_body(handler, file, half)
        handler.wfile.flush()
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)


class IgnoresRange(FileServer):
    """200 with the whole file for any Range.

    Args:
        root_folder: the folder served.
        content_length: False sends no Content-Length (the body ends when the connection
            closes, as HTTP/1.1 allows).
    """

    def __init__(
        self, root_folder: Path, *, content_length: bool = True, host: str = "127.0.0.1"
    ) -> None:
        self.sends_length = content_length
        super().__init__(root_folder, host=host)

    def respond(self, handler: _Handler, number: int) -> None:
        self.serve_file(handler, honour_range=False)


class RedirectLoop(FileServer):
    """302 (or `status`) forever: to the same URL, or between ``/P`` and ``/~loop/P``.

    Args:
        mode: ``self`` (Location is the request's own URL) or ``pair`` (two URLs in turn).
        status: the redirect status (301, 302, 303, 307, 308).
    """

    def __init__(
        self,
        *,
        mode: Literal["self", "pair"] = "self",
        status: int = 302,
        host: str = "127.0.0.1",
    ) -> None:
        self.mode = mode
        self.status = status
        super().__init__(None, host=host)

    def respond(self, handler: _Handler, number: int) -> None:
        target = handler.path
        if self.mode == "pair":
            target = target[len("/~loop") :] if target.startswith("/~loop/") else "/~loop" + target
        self.send_status(handler, self.status, [("Location", self.url + target.lstrip("/"))])


class CorruptRanges(FileServer):
    """Serves files with the bytes at the given file offsets flipped (each XOR 0xFF).

    Args:
        root_folder: the folder served.
        bad: half-open spans ``(start, stop)`` of file offsets to flip.
        path: only the file at this URL path (e.g. ``/name/a.bin``) is corrupted; None: all.
    """

    def __init__(
        self,
        root_folder: Path,
        *,
        bad: Iterable[tuple[int, int]],
        path: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.bad = frozenset(bad)
        for start, stop in self.bad:
            if not 0 <= start < stop:
                raise ValueError(f"bad span ({start}, {stop}): need 0 <= start < stop")
        self.path = path
        super().__init__(root_folder, host=host)

    def transform(self, path: str, offset: int, data: bytes) -> bytes:
        if self.path is not None and urllib.parse.urlsplit(path).path != self.path:
            return data
        out = bytearray(data)
        end = offset + len(data)
        for start, stop in self.bad:
            for index in range(max(start, offset), min(stop, end)):
                out[index - offset] ^= 0xFF
        return bytes(out)


class SlowDrip(FileServer):
    """Headers at once, then the body one byte every `interval` s, for at most `limit_s` s
    (then the connection is closed).

    Args:
        root_folder: the folder served.
        interval: seconds between two body bytes.
        limit_s: how long one reply may drip before the connection is closed.
    """

    def __init__(
        self,
        root_folder: Path,
        *,
        interval: float = 1.0,
        limit_s: float = 60.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.interval = interval
        self.limit_s = limit_s
        super().__init__(root_folder, host=host)

    def send_body(self, handler: _Handler, file: BinaryIO, reply: _Reply) -> None:
        handler.wfile.flush()
        deadline = time.monotonic() + self.limit_s
        offset = reply.start
        for _ in range(reply.length):
            if self._stopping.wait(self.interval) or time.monotonic() >= deadline:
                handler.close_connection = True
                with contextlib.suppress(OSError):
                    handler.connection.shutdown(socket.SHUT_RDWR)
                return
            handler.wfile.write(self.transform(handler.path, offset, file.read(1)))
            handler.wfile.flush()
            offset += 1
