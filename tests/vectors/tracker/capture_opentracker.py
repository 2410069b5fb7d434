"""Capture real opentracker replies as golden vectors for the tracker codecs.

Run as root (opentracker chroots into its root directory and drops to ``nobody``)::

    /work/venv/bin/python tests/vectors/tracker/capture_opentracker.py

It starts ``/usr/bin/opentracker`` on a free 127.0.0.1 port with a whitelist in a temporary
directory, talks UDP (BEP 15) and HTTP to it using torviz's own encoders, writes every request
sent and reply received next to this file as ``*.bin``, and stops the tracker, even on failure.
Only loopback is contacted. The unit tests decode these files; ``test_opentracker.py`` also runs
``capture`` live when opentracker is available.

What the vectors cannot pin down, and the tests therefore check loosely: opentracker picks the
connection id at random and jitters ``interval`` around 30 minutes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torviz.shared.tracker import (
    AnnounceEvent,
    AnnounceRequest,
    ConnectRequest,
    UdpAnnounceRequest,
    UdpScrapeRequest,
    build_announce_url,
    build_scrape_url,
    decode_connect_response,
    encode_request,
)
from torviz.shared.types import InfoHash, PeerId

OPENTRACKER = "/usr/bin/opentracker"
HERE = Path(__file__).resolve().parent

# The whitelisted torrent. Its bytes mix ones that must be escaped in a URL (0x01, 0x23 '#', 0x89)
# with unreserved ones that must not ('E', 'g').
LISTED = InfoHash(bytes.fromhex("0123456789abcdef0123456789abcdef01234567"))
# Not on the whitelist: over HTTP opentracker refuses it with a ``failure reason``; over UDP it
# answers with a bare 8-byte announce header (no error packet), which the decoder calls truncated.
UNLISTED = InfoHash(bytes.fromhex("fedcba9876543210fedcba9876543210fedcba98"))
PEER_A = PeerId(b"-TV0001-" + bytes.fromhex("000102030405060708090a0b"))
PEER_B = PeerId(b"-TV0001-abcdefghijkl")
PORT_A = 6881
PORT_B = 51413
KEY = 0x0BADCAFE

CONNECT_TID = 0x01020304
ANNOUNCE_A_TID = 0x11111111
ANNOUNCE_B_TID = 0x22222222
SCRAPE_TID = 0x33333333
UNLISTED_TID = 0x44444444
BAD_CONNECTION_TID = 0x55555555
# Not a connection id opentracker handed out: it answers with an error packet.
BAD_CONNECTION_ID = 0x0123456789ABCDEF
SCRAPE_HASHES = (LISTED, UNLISTED)
# Whitelisted too, for the start-up probe only: opentracker reads its whitelist in a thread of
# its own, so it answers before the list is in; an announce of this hash is answered in full
# (not with the bare 8 bytes of an unlisted one) once it is, without touching LISTED's swarm.
PROBE = InfoHash(bytes.fromhex("5555555555555555555555555555555555555555"))
PROBE_PEER = PeerId(b"-TV0001-probeprobepr")

_TIMEOUT = 2.0
_START_DEADLINE = 5.0
_ANNOUNCE_HEADER_FULL = 20  # action, transaction id, interval, leechers, seeders


def announce_request(peer_id: PeerId, port: int, info_hash: InfoHash = LISTED) -> AnnounceRequest:
    """The announce each captured exchange sends: a peer starting with nothing left to fetch."""
    return AnnounceRequest(
        info_hash=info_hash,
        peer_id=peer_id,
        port=port,
        uploaded=0,
        downloaded=0,
        left=0,
        event=AnnounceEvent.STARTED,
        numwant=50,
        key=KEY,
    )


def _free_port() -> int:
    # A port free for both TCP and UDP right now; a race with another process is possible but
    # shows up as a start-up failure, never as traffic to the wrong place.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = int(tcp.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", port))
    return port


@contextmanager
def running_opentracker() -> Iterator[int]:
    """Start opentracker on a free loopback port; yield the port; always stop it."""
    root = Path(tempfile.mkdtemp(prefix="torviz-opentracker-"))
    process: subprocess.Popen[bytes] | None = None
    try:
        root.chmod(0o755)
        whitelist = root / "whitelist.txt"
        whitelist.write_text(LISTED.hex + "\n" + PROBE.hex + "\n")
        whitelist.chmod(0o644)
        port = _free_port()
        config = root / "opentracker.conf"
        # The whitelist path is read after the chroot, so it is relative to the root directory.
        config.write_text(
            f"listen.tcp_udp 127.0.0.1:{port}\n"
            f"tracker.rootdir {root}\n"
            "tracker.user nobody\n"
            "access.whitelist /whitelist.txt\n"
        )
        process = subprocess.Popen(
            [OPENTRACKER, "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until_ready(port, process)
        yield port
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    """Wait until opentracker answers on UDP with its whitelist loaded (see ``PROBE``)."""
    deadline = time.monotonic() + _START_DEADLINE
    probe = encode_request(ConnectRequest(0x7F7F7F7F))
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"opentracker exited at start-up with status {process.returncode}")
        try:
            connected = decode_connect_response(_udp_exchange(port, probe, 0.2), 0x7F7F7F7F)
            request = UdpAnnounceRequest.from_request(
                announce_request(PROBE_PEER, PORT_A, PROBE),
                connection_id=connected.connection_id,
                transaction_id=0x7E7E7E7E,
            )
            if len(_udp_exchange(port, encode_request(request), 0.2)) >= _ANNOUNCE_HEADER_FULL:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"opentracker did not accept a whitelisted announce within {_START_DEADLINE} s"
    )


def _udp_exchange(port: int, packet: bytes, timeout: float = _TIMEOUT) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, ("127.0.0.1", port))
        reply, _ = sock.recvfrom(65_535)
        return reply


def _http_get(url: str) -> bytes:
    # No proxies: the request must go straight to loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=_TIMEOUT) as response:
        body: bytes = response.read(1024 * 1024)
        return body


def capture(port: int) -> dict[str, bytes]:
    """Run every exchange against the tracker on ``port``; return vector name -> bytes."""
    vectors: dict[str, bytes] = {}

    def udp(name: str, packet: bytes) -> bytes:
        vectors[f"udp_{name}_request"] = packet
        reply = _udp_exchange(port, packet)
        vectors[f"udp_{name}_response"] = reply
        return reply

    connect = udp("connect", encode_request(ConnectRequest(CONNECT_TID)))
    connection_id = decode_connect_response(connect, CONNECT_TID).connection_id

    def announce(
        peer_id: PeerId,
        port_: int,
        tid: int,
        info_hash: InfoHash = LISTED,
        connection: int = connection_id,
    ) -> bytes:
        packet = UdpAnnounceRequest.from_request(
            announce_request(peer_id, port_, info_hash),
            connection_id=connection,
            transaction_id=tid,
        )
        return encode_request(packet)

    udp("announce_a", announce(PEER_A, PORT_A, ANNOUNCE_A_TID))
    udp("announce_b", announce(PEER_B, PORT_B, ANNOUNCE_B_TID))
    udp("scrape", encode_request(UdpScrapeRequest(connection_id, SCRAPE_TID, SCRAPE_HASHES)))
    udp("unlisted", announce(PEER_A, PORT_A, UNLISTED_TID, UNLISTED))
    udp(
        "bad_connection",
        announce(PEER_A, PORT_A, BAD_CONNECTION_TID, connection=BAD_CONNECTION_ID),
    )

    base = f"http://127.0.0.1:{port}/announce"
    vectors["http_announce_response"] = _http_get(
        build_announce_url(base, announce_request(PEER_A, PORT_A))
    )
    vectors["http_announce_failure"] = _http_get(
        build_announce_url(base, announce_request(PEER_A, PORT_A, UNLISTED))
    )
    vectors["http_scrape_response"] = _http_get(
        build_scrape_url(f"http://127.0.0.1:{port}/scrape", [LISTED])
    )
    return vectors


def main() -> int:
    if not os.path.exists(OPENTRACKER):
        print(f"{OPENTRACKER} is not installed", file=sys.stderr)
        return 1
    with running_opentracker() as port:
        vectors = capture(port)
    for name, data in sorted(vectors.items()):
        (HERE / f"{name}.bin").write_bytes(data)
        print(f"{name}.bin: {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
