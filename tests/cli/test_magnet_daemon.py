"""Magnet links through the command line against the real daemon and the real one-shot
download (with their agents), on loopback with nobody to fetch from: the torrent waits in the
``metadata`` state, ``export`` says its metadata is not in yet, ``add --save-torrent`` of a
.torrent copies its bytes, and ``download MAGNET`` stops with the one line that says why.

Every wait is bounded; every process is stopped at the end.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import COORDINATOR, LOOPBACK_CONFIG, TorvizDaemon, running_daemon

from .test_magnet_input import TORRENT, TORRENT_HASH


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    with running_daemon(tmp_path) as running:
        yield running


def test_a_magnet_waits_for_its_metadata_in_the_daemon(
    daemon: TorvizDaemon, tmp_path: Path
) -> None:
    link = f"magnet:?xt=urn:btih:{TORRENT_HASH.hex}&dn=Example&x.pe=127.0.0.1:{closed_port()}"
    added = daemon.cli("add", link)
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"added Example ({TORRENT_HASH.hex})\n"

    entry = daemon.status(TORRENT_HASH.hex[:10])
    assert entry["state"] == "metadata"
    assert entry["metadata"] is not None and entry["metadata"]["size"] is None
    text = daemon.cli("status", TORRENT_HASH.hex[:10])
    assert "  state      metadata: 0 peers asked, 0.0 of ? KiB received" in text.stdout

    out = tmp_path / "out.torrent"
    refused = daemon.cli("export", TORRENT_HASH.hex[:10], str(out))
    assert refused.returncode == 1
    assert refused.stderr == "torviz: error: the metadata of Example is not fetched yet\n"
    assert not out.exists()

    bad = daemon.cli("add", "magnet:?xt=urn:btih:1234")
    assert bad.returncode == 2
    assert bad.stderr.startswith("torviz: error: not a usable magnet link: ")


def test_add_save_torrent_of_a_torrent_file_writes_its_bytes(
    daemon: TorvizDaemon, tmp_path: Path
) -> None:
    source = tmp_path / "in.torrent"
    source.write_bytes(TORRENT)
    saved = tmp_path / "saved.torrent"
    added = daemon.cli("add", str(source), "--save-torrent", str(saved))
    assert added.returncode == 0, added.stderr
    assert saved.read_bytes() == TORRENT
    exported = daemon.cli("export", TORRENT_HASH.hex, str(tmp_path / "again.torrent"))
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "again.torrent").read_bytes() == TORRENT


def test_download_of_a_magnet_nobody_serves_says_why(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(LOOPBACK_CONFIG)
    link = f"magnet:?xt=urn:btih:{TORRENT_HASH.hex}&dn=Example"
    result = subprocess.run(
        [
            *COORDINATOR,
            "download",
            link,
            "-o",
            str(tmp_path / "out"),
            "--config",
            str(tmp_path / "config.toml"),
            "--stall-timeout",
            "2",
            "--save-torrent",
            str(tmp_path / "saved.torrent"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines()[0] == "Example: finding peers", result.stdout
    [line] = result.stderr.splitlines()
    assert line.startswith("torviz: error: no peers to fetch the metadata from for 2 s ("), line
    assert not (tmp_path / "saved.torrent").exists()
