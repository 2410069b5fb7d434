"""The session watch and the event log against the real daemon (its coordinator process and
agents, on loopback): ``add`` is an event in ``status --json``, with the torrent's info hash,
and a ``WatchSession`` over the real control socket (``daemon_target`` + ``ControlClient``)
answers every row first, then nothing while nothing changes, then the removal.

Every wait is bounded; the daemon is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_magnet_input import TORRENT, TORRENT_HASH
from tests.support.daemon import TorvizDaemon, running_daemon
from torviz.services.coordinator.cli.daemon_target import daemon_target
from torviz.shared.bus import GetStatus, PieceCell, SessionChanges, StatusReport, WatchSession
from torviz.shared.runtime.control import ControlClient


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[TorvizDaemon]:
    with running_daemon(tmp_path) as running:
        yield running


def _watch(client: ControlClient, since: int, events_after: int = 0) -> SessionChanges:
    reply = client.request(WatchSession(since, events_after))
    assert isinstance(reply, SessionChanges), reply
    return reply


def test_add_is_an_event_and_the_watch_follows_the_session(
    daemon: TorvizDaemon, tmp_path: Path
) -> None:
    path = tmp_path / "example.torrent"
    path.write_bytes(TORRENT)
    added = daemon.cli("add", str(path))
    assert added.returncode == 0, added.stderr
    paused = daemon.cli("pause", TORRENT_HASH.hex[:12])  # nothing changes from now on
    assert paused.returncode == 0, paused.stderr

    result = daemon.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    [event] = [e for e in events if "added from a .torrent" in e["text"]]
    assert event["info_hash"] == TORRENT_HASH.hex
    assert event["level"] == "info"

    target = daemon_target(argparse.Namespace(state_dir=str(daemon.state_dir), control=None))
    with ControlClient(target.control, curve=target.curve, green=False, timeout=10.0) as client:
        client.hello()
        first = _watch(client, 0)
        assert first.complete and not first.removed
        assert [row.info_hash for row in first.rows] == [TORRENT_HASH]
        assert first.rows[0].name == "Example" and first.rows[0].total_length == 1000
        assert first.rows[0].state == "paused"
        assert first.totals.torrents == 1 and first.totals.agents == len(first.agents)
        seqs = [e.seq for e in first.events]
        assert seqs == sorted(seqs) and any("added from" in e.text for e in first.events)
        assert any(e.text == "Example: paused" for e in first.events)
        assert not any("welcomed cli" in e.text for e in first.events)  # commands are no events

        again = _watch(client, first.revision, seqs[-1])
        assert not again.complete and again.rows == () and again.removed == ()
        assert all(e.seq > seqs[-1] for e in again.events)

        report = client.request(GetStatus(TORRENT_HASH.hex, detail=True))
        assert isinstance(report, StatusReport)
        detail = report.torrents[0].detail
        assert detail is not None and detail.file_count == 1
        assert detail.files[0].path == "Example" and detail.files[0].completed == 0
        assert set(detail.pieces.cells) == {PieceCell.MISSING}
        assert report.totals is not None and report.events

        removed = daemon.cli("remove", TORRENT_HASH.hex[:12])
        assert removed.returncode == 0, removed.stderr
        deadline = time.monotonic() + 10
        gone = _watch(client, first.revision)
        while not gone.removed and time.monotonic() < deadline:
            time.sleep(0.2)
            gone = _watch(client, first.revision)
        assert gone.removed == (TORRENT_HASH,) and gone.rows == () and not gone.complete
        assert any("removed (files kept)" in e.text for e in _watch(client, 0, seqs[-1]).events)


def test_a_restored_torrent_is_an_event_of_the_new_run(
    daemon: TorvizDaemon, tmp_path: Path
) -> None:
    path = tmp_path / "example.torrent"
    path.write_bytes(TORRENT)
    assert daemon.cli("add", str(path)).returncode == 0
    assert daemon.cli("pause", TORRENT_HASH.hex[:12]).returncode == 0
    daemon.stop()
    daemon.start()
    result = daemon.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    events = json.loads(result.stdout)["events"]
    [restored] = [e for e in events if e["text"] == "restored Example (paused)"]
    assert restored["info_hash"] == TORRENT_HASH.hex
    assert not any("added" in e["text"] for e in events)  # the log of this run only
