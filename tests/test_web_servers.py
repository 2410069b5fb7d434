"""The web servers web seed tests download from: nginx (tests/support/nginx.py) and the hostile
`http.server`s (tests/support/hostile_http.py), checked with the standard library's
`http.client` and `urllib.request` only, never with torviz's own HTTP code.
"""

from __future__ import annotations

import http.client
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.processes import SwarmError, process_exists
from tests.support.hostile_http import (
    CorruptRanges,
    DropHalfway,
    FileServer,
    IgnoresRange,
    RedirectLoop,
    Retry503,
    SlowDrip,
)
from tests.support.nginx import Nginx, nginx_or_skip, render_config

SIZE = 300_000  # several sendfile chunks and more than one 64 KiB read
# A multi-file web seed's path (BEP 19: name/dir/file), with non-ASCII and reserved characters.
PARTS = ("my torrent", "dossier é", "a b#c?d%.bin")


def quoted(*parts: str) -> str:
    return "/".join(urllib.parse.quote(part, safe="") for part in parts)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A served folder with `f.bin` (SIZE bytes) and a nested file with awkward names."""
    folder = tmp_path / "root"
    nested = folder.joinpath(*PARTS)
    nested.parent.mkdir(parents=True)
    folder.joinpath("f.bin").write_bytes(random.Random(17).randbytes(SIZE))
    nested.write_bytes(random.Random(18).randbytes(1000))
    return folder


def content(root: Path) -> bytes:
    return (root / "f.bin").read_bytes()


def get(
    url: str, path: str, headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    """One GET on a new connection; the response (closed) and its body."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        connection.request("GET", "/" + path, headers=headers or {})
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def refuses_connections(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


# --- nginx ------------------------------------------------------------------------------------


@pytest.fixture
def nginx(root: Path, tmp_path: Path) -> Iterator[Nginx]:
    nginx_or_skip()
    with Nginx(root, tmp_path / "nginx") as server:
        yield server


def test_nginx_serves_ranges_with_the_exact_bytes(nginx: Nginx, root: Path) -> None:
    data = content(root)
    response, body = get(nginx.url, "f.bin", {"Range": "bytes=70000-200000"})
    assert response.status == 206
    assert response.getheader("Content-Range") == f"bytes 70000-200000/{SIZE}"
    assert body == data[70000:200001]

    response, body = get(nginx.url, "f.bin", {"Range": "bytes=-10"})
    assert (response.status, body) == (206, data[-10:])
    response, body = get(nginx.url, "f.bin")
    assert (response.status, response.getheader("Content-Length"), body) == (200, str(SIZE), data)
    response, _ = get(nginx.url, "f.bin", {"Range": f"bytes={SIZE}-"})
    assert response.status == 416
    response, body = get(nginx.url, quoted(*PARTS), {"Range": "bytes=10-19"})
    assert (response.status, body) == (206, root.joinpath(*PARTS).read_bytes()[10:20])
    response, _ = get(nginx.url, "missing.bin")
    assert response.status == 404

    # The access log has every request (not the fixture's readiness probes), with its Range.
    logged = nginx.wait_requests(6)
    assert len(logged) == 6
    assert [(r.status, r.range) for r in logged[:2]] == [
        (206, "bytes=70000-200000"),
        (206, "bytes=-10"),
    ]
    assert logged[0].body_bytes == 130001
    assert logged[4].uri == "/" + quoted(*PARTS)


def test_nginx_keeps_connections_alive(nginx: Nginx, root: Path) -> None:
    data = content(root)
    connection = http.client.HTTPConnection(nginx.host, nginx.port, timeout=5)
    try:
        bodies = []
        sockets = []
        for first in (0, 100_000, 299_990):
            connection.request("GET", "/f.bin", headers={"Range": f"bytes={first}-{first + 9}"})
            response = connection.getresponse()
            assert response.getheader("Connection") == "keep-alive"
            bodies.append(response.read())
            sockets.append(connection.sock)
    finally:
        connection.close()
    assert bodies == [data[0:10], data[100_000:100_010], data[299_990:300_000]]
    assert sockets[0] is not None and sockets[0] is sockets[1] is sockets[2]
    logged = nginx.wait_requests(3)
    assert len({r.connection for r in logged}) == 1
    assert [r.connection_requests for r in logged] == [1, 2, 3]


def test_nginx_stops_and_leaves_no_process(root: Path, tmp_path: Path) -> None:
    nginx_or_skip()
    work = tmp_path / "work"
    with Nginx(root, work, extra_config="location = /teapot { return 418; }\n") as server:
        pid, port = server.pid, server.port
        assert server.is_running()
        assert server.url == f"http://127.0.0.1:{port}/"
        response, _ = get(server.url, "teapot")
        assert response.status == 418
    assert not process_exists(pid)
    assert refuses_connections("127.0.0.1", port)
    # Everything it wrote is in its work folder; its config names no system file.
    assert "/etc/" not in (work / "nginx.conf").read_text()
    assert {"nginx.conf", "error.log", "access.log", "temp"} <= {p.name for p in work.iterdir()}


def test_nginx_outlives_no_test_process_killed_without_cleanup(root: Path, tmp_path: Path) -> None:
    nginx_or_skip()
    # A test process that dies at once (no `stop`, no atexit): nginx's supervisor sees its
    # stdin close and stops nginx.
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from tests.support.nginx import Nginx\n"
        f"server = Nginx(Path({str(root)!r}), Path({str(tmp_path / 'work')!r}))\n"
        "print(server.pid, server.supervisor_pid, flush=True)\n"
        "os._exit(0)\n"
    )
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    pids = [int(word) for word in done.stdout.split()]
    assert len(pids) == 2
    deadline = time.monotonic() + 10
    while any(process_exists(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(process_exists(pid) for pid in pids)


def test_nginx_that_cannot_start_fails_naming_the_cause(root: Path, tmp_path: Path) -> None:
    nginx_or_skip()
    before = time.monotonic()
    with pytest.raises(SwarmError) as raised:
        Nginx(root, tmp_path / "work", extra_config="no_such_directive on;\n", attempts=2)
    assert raised.value.reason == "web_server_failed"
    assert 'unknown directive "no_such_directive"' in str(raised.value)
    assert "in 2 tries" in str(raised.value)
    assert time.monotonic() - before < 10


def test_nginx_config_refuses_paths_it_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        render_config(tmp_path / "a;b", tmp_path, "127.0.0.1", 1, "token")
    with pytest.raises(ValueError, match="cannot hold"):
        render_config(tmp_path, tmp_path / "$root", "127.0.0.1", 1, "token")


# --- the hostile servers ----------------------------------------------------------------------


def test_file_server_is_an_honest_range_server(root: Path) -> None:
    data = content(root)
    with FileServer(root) as server:
        response, body = get(server.url, "f.bin", {"Range": "bytes=70000-200000"})
        assert response.status == 206
        assert response.getheader("Content-Range") == f"bytes 70000-200000/{SIZE}"
        assert body == data[70000:200001]
        assert get(server.url, "f.bin", {"Range": "bytes=-10"})[1] == data[-10:]
        assert get(server.url, "f.bin", {"Range": "bytes=299995-"})[1] == data[299995:]
        assert get(server.url, "f.bin")[1] == data
        response, _ = get(server.url, "f.bin", {"Range": f"bytes={SIZE}-"})
        assert (response.status, response.getheader("Content-Range")) == (416, f"bytes */{SIZE}")
        response, body = get(server.url, quoted(*PARTS), {"Range": "bytes=10-19"})
        assert (response.status, body) == (206, root.joinpath(*PARTS).read_bytes()[10:20])
        assert get(server.url, "missing.bin")[0].status == 404
        assert get(server.url, "../root/f.bin")[0].status == 404
        assert get(server.url, "%2e%2e/root/f.bin")[0].status == 404
        assert len(server.requests) == 9
        assert server.requests[0].range == "bytes=70000-200000"
        assert server.requests[3].range is None
        assert server.errors == []


def test_file_server_keeps_connections_alive_and_counts_them(root: Path) -> None:
    with FileServer(root) as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            for _ in range(2):
                connection.request("GET", "/f.bin", headers={"Range": "bytes=0-9"})
                connection.getresponse().read()
        finally:
            connection.close()
        get(server.url, "f.bin")
        assert [r.connection for r in server.wait_requests(3)] == [1, 1, 2]


def test_retry503_refuses_then_serves(root: Path) -> None:
    with Retry503(root, after=2, retry_after="3") as server:
        for _ in range(2):
            response, _ = get(server.url, "f.bin", {"Range": "bytes=0-9"})
            assert (response.status, response.getheader("Retry-After")) == (503, "3")
        response, body = get(server.url, "f.bin", {"Range": "bytes=0-9"})
        assert (response.status, body) == (206, content(root)[:10])
        assert [r.range for r in server.requests] == ["bytes=0-9"] * 3
        first, third = server.requests[0].at, server.requests[2].at
        assert third >= first
    with Retry503(root, after=1, retry_after=None, status=429) as server:
        response, _ = get(server.url, "f.bin")
        assert (response.status, response.getheader("Retry-After")) == (429, None)
        assert get(server.url, "f.bin")[0].status == 200


def test_drop_halfway_sends_half_the_body_then_closes(root: Path) -> None:
    data = content(root)
    with DropHalfway(root, times=1) as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            connection.request("GET", "/f.bin", headers={"Range": "bytes=1000-20999"})
            response = connection.getresponse()
            assert (response.status, response.getheader("Content-Length")) == (206, "20000")
            with pytest.raises(http.client.IncompleteRead) as raised:
                response.read()
            assert raised.value.partial == data[1000:11000]
        finally:
            connection.close()
        # Only the first reply was cut.
        assert get(server.url, "f.bin", {"Range": "bytes=1000-20999"})[1] == data[1000:21000]
        assert len(server.requests) == 2


def test_ignores_range_sends_the_whole_file(root: Path) -> None:
    data = content(root)
    with IgnoresRange(root) as server:
        response, body = get(server.url, "f.bin", {"Range": "bytes=10-19"})
        assert (response.status, response.getheader("Content-Range"), body) == (200, None, data)
        assert response.getheader("Content-Length") == str(SIZE)
    with IgnoresRange(root, content_length=False) as server:
        response, body = get(server.url, "f.bin", {"Range": "bytes=10-19"})
        assert (response.status, response.getheader("Content-Length"), body) == (200, None, data)
        assert server.requests[0].range == "bytes=10-19"


def test_redirect_loop_redirects_forever(root: Path) -> None:
    with RedirectLoop() as server:
        response, _ = get(server.url, "a/f.bin")
        assert (response.status, response.getheader("Location")) == (302, server.url + "a/f.bin")
        # urllib follows redirects and gives up on the loop itself.
        with pytest.raises(urllib.error.HTTPError, match="infinite loop"):
            urllib.request.urlopen(server.url + "f.bin", timeout=5)
    with RedirectLoop(mode="pair", status=307) as server:
        response, _ = get(server.url, "f.bin")
        assert response.status == 307
        assert response.getheader("Location") == server.url + "~loop/f.bin"
        response, _ = get(server.url, "~loop/f.bin")
        assert response.getheader("Location") == server.url + "f.bin"
        assert [r.path for r in server.requests] == ["/f.bin", "/~loop/f.bin"]


def test_corrupt_ranges_flips_exactly_the_given_bytes(root: Path) -> None:
    data = content(root)
    bad = {(5, 8), (65530, 65540), (SIZE - 1, SIZE + 10)}
    with CorruptRanges(root, bad=bad, path="/f.bin") as server:
        body = get(server.url, "f.bin")[1]
        assert len(body) == SIZE
        flipped = {i for i in range(SIZE) if body[i] != data[i]}
        assert flipped == {*range(5, 8), *range(65530, 65540), SIZE - 1}
        assert all(body[i] == data[i] ^ 0xFF for i in flipped)
        # A range sees the flips at the file's offsets, not the reply's.
        body = get(server.url, "f.bin", {"Range": "bytes=65535-65544"})[1]
        assert body == bytes(b ^ 0xFF for b in data[65535:65540]) + data[65540:65545]
        # Another file is left whole.
        nested = root.joinpath(*PARTS).read_bytes()
        assert get(server.url, quoted(*PARTS))[1] == nested
    with pytest.raises(ValueError, match="start < stop"):
        CorruptRanges(root, bad={(8, 8)})


def test_slow_drip_sends_a_byte_per_interval_and_is_bounded(root: Path) -> None:
    data = content(root)
    with SlowDrip(root, interval=0.3, limit_s=1.0) as server:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
        try:
            started = time.monotonic()
            connection.request("GET", "/f.bin", headers={"Range": "bytes=0-99"})
            response = connection.getresponse()
            assert response.status == 206
            assert time.monotonic() - started < 0.25  # the head comes at once
            assert response.read(2) == data[:2]
            assert time.monotonic() - started >= 0.55  # two bytes, 0.3 s apart
            # After limit_s the drip stops and the connection is closed: about 3 of 100 bytes.
            with pytest.raises(http.client.IncompleteRead) as raised:
                response.read()
            assert raised.value.partial == data[2 : 2 + len(raised.value.partial)]
            assert len(raised.value.partial) <= 2
            assert time.monotonic() - started < 3
        finally:
            connection.close()


def test_stop_ends_every_connection_and_thread(root: Path) -> None:
    before = set(threading.enumerate())
    server = SlowDrip(root, interval=1.0, limit_s=60.0)
    # One connection kept alive and idle (its thread waits for a next request), one dripping.
    idle = http.client.HTTPConnection(server.host, server.port, timeout=5)
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        idle.request("HEAD", "/f.bin")
        assert idle.getresponse().status == 200
        connection.request("GET", "/f.bin")
        response = connection.getresponse()
        server.wait_requests(2)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        idle.close()
        connection.close()
    assert set(threading.enumerate()) <= before
    assert refuses_connections(server.host, server.port)
    server.stop()  # again: a no-op
