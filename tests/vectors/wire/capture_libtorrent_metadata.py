"""Capture libtorrent's BEP 9 ut_metadata answers on loopback into tests/vectors/wire/.

Usage:
    .venv/bin/python tests/vectors/wire/capture_libtorrent_metadata.py

Starts the seeder of ``capture_libtorrent.py`` (a child process, same deterministic torrent),
connects over plain TCP with hand-built bytes (not through shared.wire), offers ``ut_metadata``
in its extension handshake, then asks for metadata piece 0 and for piece 7, which does not
exist. Writes the payloads of libtorrent's two answers (the bytes after the extended message
id) to ``lt_metadata_data_0.bin`` and ``lt_metadata_reject_7.bin``, and what they mean to
``libtorrent_metadata.json``. The bytes are deterministic: the info dictionary is.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # the checkout, when run as a script

from tests.vectors.wire.capture_libtorrent import (  # noqa: E402
    EXT_HANDSHAKE,
    IO_TIMEOUT,
    RESERVED_EXT_FAST,
    RawPeer,
    Seeder,
    frame,
    handshake,
)

OUR_UT_METADATA = 3  # the id EXT_HANDSHAKE asks libtorrent to use towards us


def _extended(peer: RawPeer, ext_id: int, deadline: float) -> bytes:
    while time.monotonic() < deadline:
        f = peer.read_frame()
        if len(f) > 5 and f[4] == 20 and f[5] == ext_id:
            return bytes(f[6:])
    raise TimeoutError(f"no extended message {ext_id} before the deadline")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="torviz-capture-") as tmp:
        seeder = Seeder(Path(tmp))
        try:
            ready = seeder.ready
            info_hash = bytes.fromhex(ready["info_hash"])
            peer = RawPeer(ready["host"], ready["port"])
            try:
                peer.sock.sendall(handshake(info_hash, RESERVED_EXT_FAST))
                peer.read_exact(68)
                peer.sock.sendall(frame(20, b"\x00" + EXT_HANDSHAKE))
                deadline = time.monotonic() + IO_TIMEOUT
                theirs = _extended(peer, 0, deadline)
                found_id = re.search(rb"11:ut_metadatai(\d+)e", theirs)
                found_size = re.search(rb"13:metadata_sizei(\d+)e", theirs)
                assert found_id and found_size, theirs
                lt_id = int(found_id.group(1))
                peer.sock.sendall(frame(20, bytes([lt_id]) + b"d8:msg_typei0e5:piecei0ee"))
                data = _extended(peer, OUR_UT_METADATA, deadline)
                peer.sock.sendall(frame(20, bytes([lt_id]) + b"d8:msg_typei0e5:piecei7ee"))
                reject = _extended(peer, OUR_UT_METADATA, deadline)
            finally:
                peer.close()
        finally:
            seeder.close()
    (HERE / "lt_metadata_data_0.bin").write_bytes(data)
    (HERE / "lt_metadata_reject_7.bin").write_bytes(reject)
    meta = {
        "libtorrent": ready["libtorrent"],
        "info_hash": ready["info_hash"],
        "metadata_size": int(found_size.group(1)),
        "their_ut_metadata_id": lt_id,
        "files": {
            "lt_metadata_data_0.bin": "payload of libtorrent's answer to a request for piece 0",
            "lt_metadata_reject_7.bin": "payload of its answer to a request for piece 7 (absent)",
        },
    }
    (HERE / "libtorrent_metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))
    print(data[:80], reject)


if __name__ == "__main__":
    main()
