"""What a magnet download shows while it runs: its phase (finding peers, fetching metadata,
downloading), in words on stdout off a terminal, in place on one; ``--save-torrent`` at the
end of the metadata; the stall error of a magnet that finds nobody.

The one-shot watcher runs in a process of its own (``watcher_run``: gevent patched first, as in
the daemon) beside a stand-in coordinator actor; ``add`` runs against a stand-in control
endpoint (``fake_daemon``), its stderr on a pseudo-terminal.
"""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
from pathlib import Path

from torviz.services.coordinator.cli.phases import Phase, metadata_line, phase_of
from torviz.shared.bus import MetadataProgress, TorrentState

from .fake_daemon import fake_daemon
from .test_create import _read_pty
from .test_magnet_input import TORRENT, TORRENT_HASH, Session, status

ROOT = Path(__file__).resolve().parents[2]


def test_the_phase_of_a_torrent() -> None:
    finding = status(TORRENT_HASH, TorrentState.METADATA)
    assert phase_of(finding) is Phase.FINDING_PEERS
    assert metadata_line(finding) == "finding peers"
    unsized = status(
        TORRENT_HASH,
        TorrentState.METADATA,
        peers=1,
        metadata=MetadataProgress(peers_asked=1, received=0, size=None),
    )
    assert phase_of(unsized) is Phase.FETCHING_METADATA
    assert metadata_line(unsized) == "fetching metadata: 1 peer, 0.0 of ? KiB"
    sized = status(
        TORRENT_HASH,
        TorrentState.METADATA,
        peers=4,
        metadata=MetadataProgress(peers_asked=3, received=49152, size=50000),
    )
    assert metadata_line(sized) == "fetching metadata: 3 peers, 48.0 of 48.8 KiB"
    for state in (TorrentState.CHECKING, TorrentState.DOWNLOADING, TorrentState.PAUSED):
        assert phase_of(status(TORRENT_HASH, state)) is Phase.DOWNLOADING


def watch(scenario: str, save_to: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.cli.watcher_run", scenario, str(save_to)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )


def test_a_magnet_download_prints_each_phase_and_saves_the_torrent(tmp_path: Path) -> None:
    result = watch("complete", tmp_path / "saved.torrent")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "Example: finding peers",
        "Example: fetching metadata: 2 peers, 16.0 of 32.0 KiB",
        "Example: downloading 1000 B",
        f"saved the .torrent to {tmp_path / 'saved.torrent'}",
    ]
    assert lines[4].startswith("downloaded Example (1000 B) into /tmp/x in "), lines
    assert (tmp_path / "saved.torrent").read_bytes() == TORRENT


def test_a_magnet_that_finds_no_peer_says_why(tmp_path: Path) -> None:
    result = watch("stall", tmp_path / "saved.torrent")
    assert result.returncode == 1
    assert result.stdout.splitlines() == ["Example: finding peers"]
    assert result.stderr.splitlines() == [
        "torviz: error: no peers to fetch the metadata from for 1 s (the magnet link names "
        "no tracker and no peer)"
    ]
    assert not (tmp_path / "saved.torrent").exists()


def test_add_draws_the_phase_in_place_on_a_terminal(tmp_path: Path) -> None:
    session = Session(TORRENT_HASH, TORRENT)
    link = f"magnet:?xt=urn:btih:{TORRENT_HASH.hex}&dn=Example"
    out = tmp_path / "saved.torrent"
    with fake_daemon(tmp_path, session.answer) as daemon:
        master, slave = pty.openpty()
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "torviz.services.coordinator", "add", link),
                *("--save-torrent", str(out), *daemon.flags),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "100"},
        )
        os.close(slave)
        try:
            screen = _read_pty(master, process, time.monotonic() + 30)
            assert process.wait(timeout=30) == 0
            assert process.stdout is not None
            stdout = process.stdout.read().decode()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            os.close(master)
            assert process.stdout is not None
            process.stdout.close()
    text = screen.decode("utf-8", errors="replace")
    assert "\rExample: finding peers\x1b[K" in text, text
    assert "\rExample: fetching metadata: 2 peers, 16.0 of 32.0 KiB\x1b[K" in text, text
    # The terminal has the phase; stdout (a pipe here) only what was done.
    assert stdout.splitlines() == [
        f"added Example ({TORRENT_HASH.hex})",
        f"saved the .torrent to {out}",
    ]
    assert out.read_bytes() == TORRENT
