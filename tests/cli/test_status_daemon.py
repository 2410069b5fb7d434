"""``status --json`` and ``status ID`` against the real daemon (with its agents) on loopback:
adding a .torrent puts an "added" event in the daemon's log, with the torrent's info hash, and
``status ID`` shows its files and a piece map of one character per piece.

The torrent has two files, a piece crossing from the first into the second; only the first is
on disk, so after the check its two whole pieces are have (``#``, origin unknown: nothing was
downloaded) and the rest missing (``.``), and the first file counts only the bytes of those
two pieces. Its tracker is a closed loopback port; no DHT. Every wait is bounded; the daemon
is stopped at the end.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import COORDINATOR, TorvizDaemon, running_daemon

from .test_magnet_daemon import closed_port

PIECE = 16384
FIRST = 40000  # pieces 0 and 1 whole, piece 2 starts in it
SECOND = 50000  # 90000 bytes in all: 6 pieces


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    with running_daemon(tmp_path) as running:
        yield running


def make_torrent(tmp_path: Path) -> Path:
    """``album`` with ``a.bin`` and ``b.bin``, then ``b.bin`` deleted."""
    data = tmp_path / "data" / "album"
    data.mkdir(parents=True)
    (data / "a.bin").write_bytes(bytes(i % 251 for i in range(FIRST)))
    (data / "b.bin").write_bytes(bytes(i % 241 for i in range(SECOND)))
    out = tmp_path / "album.torrent"
    tracker = f"http://127.0.0.1:{closed_port()}/announce"
    command = [*COORDINATOR, "create", str(data), "-o", str(out), "-t", tracker]
    created = subprocess.run(
        [*command, "--piece-size", str(PIECE), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    (data / "b.bin").unlink()
    return out


def status_json(daemon: TorvizDaemon, *args: str) -> dict[str, Any]:
    result = daemon.cli("status", *args, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, dict)
    return document


def test_status_shows_the_added_event_the_files_and_the_piece_map(
    daemon: TorvizDaemon, tmp_path: Path
) -> None:
    torrent = make_torrent(tmp_path)
    added = daemon.cli("add", str(torrent), "--dir", str(tmp_path / "data"))
    assert added.returncode == 0, added.stderr
    info_hash = added.stdout.strip().rsplit("(", 1)[1].rstrip(")")

    document = status_json(daemon)
    assert document["totals"] is not None and document["totals"]["torrents"] == 1
    about = [e for e in document["events"] if e["info_hash"] == info_hash]
    assert any("added" in e["text"] and "album" in e["text"] for e in about), document["events"]
    assert all(e["level"] in ("info", "warning", "error") for e in document["events"])
    seqs = [e["seq"] for e in document["events"]]
    assert seqs == sorted(seqs)
    [listed] = document["torrents"]
    assert listed["detail"] is not None  # --json without an ID asks for detail too

    entry = daemon.wait_status(
        info_hash[:12],
        lambda e: e["state"] == "downloading" and e["check_progress"] is None,
        timeout=30,
    )
    detail = entry["detail"]
    assert entry["num_pieces"] == 6
    assert detail["file_count"] == 2
    assert detail["files"] == [
        {"path": "a.bin", "length": FIRST, "completed": 2 * PIECE, "progress": 2 * PIECE / FIRST},
        {"path": "b.bin", "length": SECOND, "completed": 0, "progress": 0.0},
    ]
    assert detail["pieces"] == {"cells": "##....", "origins": []}
    assert all(peer["agent"] for peer in entry["peer_list"])

    text = daemon.cli("status", info_hash[:12])
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert "  files      2 files" in lines
    assert "     81.9%    39.1 KiB  a.bin" in lines
    assert "      0.0%    48.8 KiB  b.bin" in lines
    assert "    ##...." in lines
    assert "events" in lines and any("added" in line for line in lines)

    listing = daemon.cli("list")
    assert listing.returncode == 0 and "album" in listing.stdout
