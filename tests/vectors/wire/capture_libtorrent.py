"""Capture real peer wire bytes from a libtorrent seeder on loopback into tests/vectors/wire/.

Usage:
    /work/venv/bin/python tests/vectors/wire/capture_libtorrent.py            # capture
    /work/venv/bin/python tests/vectors/wire/capture_libtorrent.py seed DIR   # seeder only

``seed`` runs one libtorrent session seeding a small deterministic torrent from DIR on a
127.0.0.x address with every network extra off (no DHT, LSD, UPnP, NAT-PMP, uTP). It prints
one JSON line ``{"port", "host", "info_hash", "data_path", "libtorrent"}`` once seeding, then
answers ``peers`` / ``disconnects`` lines on stdin with one JSON line each, and exits on EOF,
``quit`` or after ``--lifetime`` seconds. ``tests/interop/test_wire_interop.py`` uses this mode.

The capture opens plain TCP connections to such a seeder (a child process), speaks the protocol
with hand-built bytes (deliberately not through shared.wire, so the vectors stay independent of
the code they test), and writes each frame libtorrent sent into a ``.bin`` file, described in
``libtorrent_vectors.json``. Re-running it overwrites the vectors; the payload and torrent are
deterministic, the peer id and extension handshake fields (``yourip``, ...) are not.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

HERE = Path(__file__).resolve().parent
PIECE_LENGTH = 32 * 1024
TOTAL_LENGTH = 2 * PIECE_LENGTH + 5000  # three pieces, the last one 5000 bytes
FILE_NAME = "torviz-wire-vector.bin"
SEEDER_HOST = "127.0.0.3"
CAPTURE_PEER_ID = b"-TV0100-" + b"wirecapture1"
EXT_HANDSHAKE = b"d1:md11:ut_metadatai3ee1:v12:torviz 0.1.0e"
RESERVED_EXT_FAST = bytes([0, 0, 0, 0, 0, 0x10, 0, 0x04])
RESERVED_NONE = bytes(8)
IO_TIMEOUT = 20.0


def payload() -> bytes:
    """The torrent's content: SHA-256 in counter mode, stable across Python versions."""
    blocks = (
        hashlib.sha256(b"torviz wire vector %d" % i).digest()
        for i in range((TOTAL_LENGTH + 31) // 32)
    )
    return b"".join(blocks)[:TOTAL_LENGTH]


# --- seeder (child process) ------------------------------------------------------------------


def _seed(workdir: Path, host: str, lifetime: float) -> None:
    import libtorrent as lt

    data_path = workdir / FILE_NAME
    data_path.write_bytes(payload())
    entries = [lt.create_file_entry(FILE_NAME, TOTAL_LENGTH)]
    creator = lt.create_torrent(entries, PIECE_LENGTH, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(creator, str(workdir))
    info = lt.torrent_info(lt.bencode(creator.generate()))

    # Run as a script: the repository root makes testing/ importable (the loopback settings).
    sys.path.insert(0, str(HERE.parents[2]))
    from testing.lt_peer import QUICK_RETRY, loopback_settings

    alerts = ("error", "peer", "status", "connect")
    settings = loopback_settings(host, alerts=alerts, extra=QUICK_RETRY)
    # The bindings take a dict where the stubs want a settings_pack.
    session = lt.session(cast("lt.settings_pack", settings))
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = str(workdir)
    handle = session.add_torrent(params)
    deadline = time.monotonic() + 30
    while not handle.status().is_seeding:
        if time.monotonic() > deadline:
            raise SystemExit("libtorrent did not start seeding within 30 s")
        time.sleep(0.05)
    ready = {
        "host": host,
        "port": session.listen_port(),
        "info_hash": str(info.info_hashes().v1),
        "data_path": str(data_path),
        "libtorrent": lt.__version__,
    }
    print(json.dumps(ready), flush=True)

    disconnects: list[str] = []
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        for alert in session.pop_alerts():
            if isinstance(alert, (lt.peer_disconnected_alert, lt.peer_error_alert)):
                disconnects.append(alert.message())
        readable, _, _ = select.select([sys.stdin], [], [], 0.1)
        if not readable:
            continue
        line = sys.stdin.readline()
        command = line.strip()
        if not line or command == "quit":
            break
        if command == "peers":
            peers = [
                {"client": _text(p.client), "ip": list(p.ip), "pid": p.pid.to_bytes().hex()}
                for p in handle.get_peer_info()
            ]
            print(json.dumps(peers), flush=True)
        elif command == "disconnects":
            for alert in session.pop_alerts():
                if isinstance(alert, (lt.peer_disconnected_alert, lt.peer_error_alert)):
                    disconnects.append(alert.message())
            print(json.dumps(disconnects), flush=True)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


# --- capture (parent) ------------------------------------------------------------------------


class Seeder:
    """A ``seed`` child process; stopped by ``close`` (also on error)."""

    def __init__(self, workdir: Path, host: str = SEEDER_HOST, lifetime: float = 120) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "seed",
                str(workdir),
                "--host",
                host,
                "--lifetime",
                str(lifetime),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            self.ready = json.loads(self._line(60))
        except BaseException:
            self.close()
            raise

    def _line(self, timeout: float) -> str:
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else ""
        if not line:
            raise RuntimeError("libtorrent seeder did not answer")
        return line

    def ask(self, command: str) -> object:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self._line(10))

    def close(self) -> None:
        try:
            if self.process.stdin is not None:
                self.process.stdin.close()
            self.process.wait(timeout=10)
        except (subprocess.TimeoutExpired, OSError):
            self.process.kill()
            self.process.wait(timeout=10)


class RawPeer:
    """A TCP connection to the seeder that reads frames by their length prefix alone."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        self.received = bytearray()  # everything after the handshake, as received

    def read_exact(self, count: int) -> bytes:
        out = bytearray()
        while len(out) < count:
            chunk = self.sock.recv(count - len(out))
            if not chunk:
                raise ConnectionError("seeder closed the connection")
            out += chunk
        return bytes(out)

    def read_frame(self) -> bytes:
        head = self.read_exact(4)
        (length,) = struct.unpack(">I", head)
        if length > 1 << 20:
            raise ValueError(f"implausible frame length {length}")
        frame = head + self.read_exact(length)
        self.received += frame
        return frame

    def read_until(self, message_id: int, deadline: float) -> list[bytes]:
        frames = []
        while time.monotonic() < deadline:
            frame = self.read_frame()
            frames.append(frame)
            if len(frame) > 4 and frame[4] == message_id:
                return frames
        raise TimeoutError(f"no message id {message_id} before the deadline")

    def is_closed_by_peer(self, wait: float) -> bool:
        self.sock.settimeout(wait)
        try:
            while True:
                self.read_frame()
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            return True

    def close(self) -> None:
        self.sock.close()


def frame(message_id: int, payload_bytes: bytes = b"") -> bytes:
    return struct.pack(">IB", 1 + len(payload_bytes), message_id) + payload_bytes


def handshake(info_hash: bytes, reserved: bytes) -> bytes:
    return b"\x13BitTorrent protocol" + reserved + info_hash + CAPTURE_PEER_ID


def _capture(outdir: Path) -> None:
    data = payload()
    with tempfile.TemporaryDirectory(prefix="torviz-capture-") as tmp:
        seeder = Seeder(Path(tmp))
        try:
            vectors = _capture_with(seeder, data, outdir)
        finally:
            seeder.close()
    (outdir / "libtorrent_vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")
    print(json.dumps(vectors, indent=2))


def _capture_with(seeder: Seeder, data: bytes, outdir: Path) -> dict[str, object]:
    ready = seeder.ready
    info_hash = bytes.fromhex(ready["info_hash"])
    files: dict[str, str] = {}

    def save(name: str, content: bytes, what: str) -> None:
        (outdir / name).write_bytes(content)
        files[name] = what

    # 1. Extension protocol and fast extension on: handshake, ext handshake, have_all, ...
    peer = RawPeer(ready["host"], ready["port"])
    try:
        peer.sock.sendall(handshake(info_hash, RESERVED_EXT_FAST))
        save("lt_handshake.bin", peer.read_exact(68), "libtorrent's handshake (ext + fast bits)")
        deadline = time.monotonic() + IO_TIMEOUT
        first = peer.read_until(14, deadline)  # have_all
        peer.sock.sendall(frame(20, b"\x00" + EXT_HANDSHAKE) + frame(15) + frame(2))
        first += peer.read_until(1, deadline)  # unchoke
        last_piece = TOTAL_LENGTH // PIECE_LENGTH
        last_length = TOTAL_LENGTH - last_piece * PIECE_LENGTH
        requests = [(0, 0, 16384), (1, 16384, 16384), (last_piece, 0, last_length)]
        for piece, offset, length in requests:
            peer.sock.sendall(frame(6, struct.pack(">III", piece, offset, length)))
        seen = list(first)
        deadline = time.monotonic() + IO_TIMEOUT
        while sum(1 for f in seen if f[4:5] == b"\x07") < len(requests):
            if time.monotonic() > deadline:
                raise TimeoutError("libtorrent did not answer every request")
            seen.append(peer.read_frame())
        pieces = [f for f in seen if f[4:5] == b"\x07"]
        peers = seeder.ask("peers")
    finally:
        peer.close()
    save("lt_stream_fast.bin", bytes(peer.received), "every frame after the handshake, in order")
    by_id: dict[int, bytes] = {}
    for f in seen:
        if len(f) > 4:
            by_id.setdefault(f[4], f)
    save("lt_extension_handshake.bin", by_id[20], "libtorrent's BEP 10 extension handshake")
    save("lt_have_all.bin", by_id[14], "BEP 6 have_all from a seeder")
    save("lt_unchoke.bin", by_id[1], "unchoke after our interested")
    for index, (f, (piece, offset, length)) in enumerate(zip(pieces, requests, strict=True)):
        save(f"lt_piece_{index}.bin", f, f"piece message for request {piece}/{offset}/{length}")

    # 2. No extension bits: a plain BEP 3 seeder sends a bitfield.
    plain = RawPeer(ready["host"], ready["port"])
    try:
        plain.sock.sendall(handshake(info_hash, RESERVED_NONE))
        save("lt_handshake_plain.bin", plain.read_exact(68), "handshake answering no bits")
        bitfield = plain.read_until(5, time.monotonic() + IO_TIMEOUT)[-1]
    finally:
        plain.close()
    save("lt_bitfield.bin", bitfield, "bitfield of a 3-piece seeder (no fast extension)")

    # 3. Does libtorrent keep a connection that sends an unknown message id?
    probe = RawPeer(ready["host"], ready["port"])
    try:
        probe.sock.sendall(handshake(info_hash, RESERVED_EXT_FAST))
        probe.read_exact(68)
        probe.read_until(14, time.monotonic() + IO_TIMEOUT)
        probe.sock.sendall(frame(99, b"\x01\x02\x03") + frame(15) + frame(2))
        unknown_closed = probe.is_closed_by_peer(3.0)
    finally:
        probe.close()
    disconnects = seeder.ask("disconnects")

    return {
        "libtorrent": ready["libtorrent"],
        "info_hash": ready["info_hash"],
        "piece_length": PIECE_LENGTH,
        "total_length": TOTAL_LENGTH,
        "payload_sha1": hashlib.sha1(data).hexdigest(),
        "our_peer_id": CAPTURE_PEER_ID.hex(),
        "our_reserved": RESERVED_EXT_FAST.hex(),
        "our_extension_handshake": EXT_HANDSHAKE.decode(),
        "requests": requests,
        "stream_message_ids": [f[4] if len(f) > 4 else None for f in seen],
        "peers_seen_by_libtorrent": peers,
        "unknown_message_id_99_closed_connection": unknown_closed,
        "libtorrent_disconnect_reasons": disconnects,
        "files": files,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="capture", choices=["capture", "seed"])
    parser.add_argument("workdir", nargs="?", type=Path)
    parser.add_argument("--host", default=SEEDER_HOST)
    parser.add_argument("--lifetime", type=float, default=120.0)
    args = parser.parse_args()
    if not args.host.startswith("127."):
        raise SystemExit("loopback only")
    if args.mode == "seed":
        if args.workdir is None:
            raise SystemExit("seed needs a working directory")
        _seed(args.workdir, args.host, args.lifetime)
    else:
        _capture(args.workdir or HERE)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
