"""Web seeds from the command line against the real daemon (with its agents) on loopback:
``add --web-seed``, ``add-web-seed ID URL`` (added, already there, refused past the most a
torrent keeps), what ``status`` and ``status --json`` show of them, and the user's URLs kept
across a restart.

The torrent is complete on disk (added with ``--dir`` where its file is), so no web seed is
fetched from: the URLs name a closed loopback port anyway. Its tracker is a closed loopback
port; no DHT. Every wait is bounded; the daemon is stopped at the end.
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


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    with running_daemon(tmp_path) as running:
        yield running


def make_torrent(tmp_path: Path, name: str) -> Path:
    """A one-file torrent ``name`` of 3 pieces whose file is in ``tmp_path/data``."""
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / name).write_bytes(bytes(i % 251 for i in range(3 * PIECE - 100)))
    out = tmp_path / f"{name}.torrent"
    tracker = f"http://127.0.0.1:{closed_port()}/announce"
    command = [*COORDINATOR, "create", str(data / name), "-o", str(out), "-t", tracker]
    created = subprocess.run(
        [*command, "--piece-size", str(PIECE), "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    return out


def add(daemon: TorvizDaemon, torrent: Path, *flags: str) -> str:
    """Add ``torrent`` from its folder; returns its info hash."""
    added = daemon.cli("add", str(torrent), "--dir", str(torrent.parent / "data"), *flags)
    assert added.returncode == 0, added.stderr
    return added.stdout.strip().rsplit("(", 1)[1].rstrip(")")


def web_seeds(daemon: TorvizDaemon, info_hash: str) -> list[dict[str, Any]]:
    result = daemon.cli("status", info_hash, "--json")
    assert result.returncode == 0, result.stderr
    [torrent] = json.loads(result.stdout)["torrents"]
    rows = torrent["web_seeds"]
    assert isinstance(rows, list)
    return rows


def test_add_web_seed_shows_in_status_and_is_kept_across_a_restart(
    daemon: TorvizDaemon, tmp_path: Path
) -> None:
    port = closed_port()
    first, second = f"http://127.0.0.1:{port}/first/", f"http://127.0.0.1:{port}/second/"
    info_hash = add(daemon, make_torrent(tmp_path, "alpha.bin"), "--web-seed", first)

    result = daemon.cli("add-web-seed", info_hash[:10], second)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"added web seed {second} to alpha.bin\n"
    for again in (second, first):
        result = daemon.cli("web-seed", info_hash, again)
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout == "alpha.bin already has that web seed\n"

    rows = web_seeds(daemon, info_hash)
    assert sorted(row["url"] for row in rows) == [first, second]
    assert all(row["state"] != "invalid" and row["hash_failures"] == 0 for row in rows), rows
    text = daemon.cli("status", info_hash)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    block = lines.index("  web seeds  2")
    assert sorted(line.split()[0] for line in lines[block + 1 : block + 3]) == [first, second]

    assert daemon.shutdown() == 0
    daemon.start()
    rows = web_seeds(daemon, info_hash)
    assert sorted(row["url"] for row in rows) == [first, second]


def test_a_web_seed_past_the_most_a_torrent_keeps_is_refused_in_one_line(
    daemon: TorvizDaemon, tmp_path: Path
) -> None:
    port = closed_port()
    urls = [f"http://127.0.0.1:{port}/m{i}/" for i in range(64)]
    flags = [flag for url in urls for flag in ("--web-seed", url)]
    info_hash = add(daemon, make_torrent(tmp_path, "bravo.bin"), *flags)
    assert len(web_seeds(daemon, info_hash)) == 64

    result = daemon.cli("add-web-seed", info_hash, f"http://127.0.0.1:{port}/one-more/")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line == "torviz: error: bravo.bin has 64 web seeds already (the most it keeps)"
    unknown = daemon.cli("add-web-seed", "ff" * 20, urls[0])
    assert unknown.returncode == 1
    assert unknown.stderr == f"torviz: error: no torrent matches {'ff' * 20}\n"
