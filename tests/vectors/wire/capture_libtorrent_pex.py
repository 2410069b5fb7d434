"""Capture a real ``ut_pex`` message from a libtorrent seeder into tests/vectors/wire/lt_ut_pex.bin.

Usage:
    .venv/bin/python tests/vectors/wire/capture_libtorrent_pex.py

Reuses the seeder child of ``capture_libtorrent.py`` (loopback, every network extra off).
Two plain TCP connections, from 127.0.0.4 and 127.0.0.5 (libtorrent allows one connection per
IP), each send a handshake with a peer id of its own, an extension handshake offering
``ut_pex`` under id 1 with listen ports 40000 and 40001, and ``have none``. With two peers,
libtorrent sends its full peer list on its next tick; the first such frame is written whole
(length prefix included). Bytes are read by hand, deliberately not through shared.wire.
Bounded: 80 s, then it fails.
"""

from __future__ import annotations

import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the checkout, when run as a script

from tests.vectors.wire import capture_libtorrent as cl

OUT = Path(__file__).resolve().parent / "lt_ut_pex.bin"
SOURCES = ("127.0.0.4", "127.0.0.5")
LISTEN_PORTS = (40000, 40001)
UT_PEX_ID = 1


def _frames(buffer: bytearray) -> list[bytes]:
    out = []
    while len(buffer) >= 4:
        (length,) = struct.unpack(">I", buffer[:4])
        if len(buffer) < 4 + length:
            break
        out.append(bytes(buffer[: 4 + length]))
        del buffer[: 4 + length]
    return out


def capture() -> bytes:
    """Run the seeder, connect twice, and return the first ``ut_pex`` frame received."""
    with tempfile.TemporaryDirectory() as workdir:
        seeder = cl.Seeder(Path(workdir), lifetime=100)
        socks: list[socket.socket] = []
        try:
            info_hash = bytes.fromhex(str(seeder.ready["info_hash"]))
            for index, source in enumerate(SOURCES):
                sock = socket.socket()
                socks.append(sock)
                sock.settimeout(1.0)
                sock.bind((source, 0))
                sock.connect((seeder.ready["host"], seeder.ready["port"]))
                ext = b"d1:md6:ut_pexi%dee1:pi%de1:v6:torvize" % (UT_PEX_ID, LISTEN_PORTS[index])
                peer_id = b"-TV0100-pexcapture%02d" % index  # libtorrent drops a duplicate id
                sock.sendall(
                    b"\x13BitTorrent protocol" + cl.RESERVED_EXT_FAST + info_hash + peer_id
                )
                sock.sendall(cl.frame(20, b"\x00" + ext) + cl.frame(15))
            buffers = [bytearray() for _ in socks]
            skipped_handshake = [False for _ in socks]
            deadline = time.monotonic() + 80
            while time.monotonic() < deadline:
                for index, sock in enumerate(socks):
                    try:
                        chunk = sock.recv(65536)
                    except TimeoutError:
                        continue
                    if not chunk:
                        raise ConnectionError("libtorrent closed a capture connection")
                    buffers[index] += chunk
                    if not skipped_handshake[index] and len(buffers[index]) >= 68:
                        del buffers[index][:68]
                        skipped_handshake[index] = True
                    if not skipped_handshake[index]:
                        continue
                    for message in _frames(buffers[index]):
                        if len(message) > 5 and message[4] == 20 and message[5] == UT_PEX_ID:
                            return message
            raise TimeoutError("libtorrent sent no ut_pex message in 80 s")
        finally:
            for sock in socks:
                sock.close()
            seeder.close()


if __name__ == "__main__":
    OUT.write_bytes(capture())
    print(f"wrote {OUT}")
