"""``status --json`` and ``status ID`` show everything the terminal UI shows: a torrent's files
and piece map, the agent and host of each peer, the daemon's events and totals; ``status ID``
and ``status --json`` ask the daemon for the detail, ``status`` alone and ``list`` never.

Records are constructed here; the daemon is replaced by a function answering the request.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

import pytest

from torviz.services.coordinator.cli.commands import remote
from torviz.services.coordinator.cli.status_json import report_json, torrent_json
from torviz.services.coordinator.cli.status_text import (
    EVENT_LINES,
    MAX_FILE_LINES,
    MAX_PIECE_CELLS,
    report_lines,
    torrent_text,
)
from torviz.shared.bus import (
    EventLevel,
    FileStatus,
    GetStatus,
    ListTorrents,
    Message,
    PeerSource,
    PeerStatus,
    PieceCell,
    PieceMap,
    PieceOrigin,
    SessionEvent,
    SessionTotals,
    StatusReport,
    TorrentDetail,
    TorrentState,
    TorrentStatus,
)
from torviz.shared.types import InfoHash, PeerAddress

HASH = InfoHash(bytes.fromhex("ab" * 20))
OTHER = InfoHash(bytes.fromhex("cd" * 20))
M, D, C, H, V = (
    PieceCell.MISSING,
    PieceCell.DOWNLOADING,
    PieceCell.CHECKING,
    PieceCell.HAVE,
    PieceCell.FIRST_ORIGIN,
)
DETAIL = TorrentDetail(
    (
        FileStatus("album/01.flac", 3 * 16384, 3 * 16384),
        FileStatus("album/02 \x1b[31mred.flac", 32768, 8192),
        FileStatus("album/empty", 0, 0),
    ),
    3,
    PieceMap(
        bytes([V, V, V + 1, H, C, D, M]),
        (PieceOrigin("peer-1", "10.0.0.1"), PieceOrigin("peer-2", "10.0.0.2")),
    ),
)
PEER = PeerStatus(
    PeerAddress("10.0.0.9", 6881),
    "lt",
    "D",
    2048.0,
    0.0,
    4096,
    0,
    0.5,
    "libtorrent 2.0",
    PeerSource.TRACKER,
    "peer-1",
    "10.0.0.1",
)
TORRENT = TorrentStatus(
    *(HASH, "album", TorrentState.DOWNLOADING, 0.5, 81920, 40960, 0, 2048.0, 0.0, 1, 0),
    *(3, 7, "/downloads", None, (), (PEER,), None),
    detail=DETAIL,
)
EVENTS = (
    SessionEvent(1, 75.0, EventLevel.INFO, "added album (from a .torrent file)", HASH),
    SessionEvent(2, 30.0, EventLevel.WARNING, "agent peer-3 lost", None),
    SessionEvent(3, 3725.0, EventLevel.ERROR, "other: \x07 disk full", OTHER),
)
TOTALS = SessionTotals(2048.0, 0.0, 2, 1, 3, 1, None)
REPORT = StatusReport((TORRENT,), (), EVENTS, TOTALS)


def test_json_has_the_detail_files_piece_cells_and_origins() -> None:
    detail = torrent_json(TORRENT)["detail"]
    assert detail == {
        "files": [
            {"path": "album/01.flac", "length": 49152, "completed": 49152, "progress": 1.0},
            {
                "path": "album/02 \x1b[31mred.flac",
                "length": 32768,
                "completed": 8192,
                "progress": 0.25,
            },
            {"path": "album/empty", "length": 0, "completed": 0, "progress": 1.0},
        ],
        "file_count": 3,
        "pieces": {
            "cells": "001#?>.",
            "origins": [
                {"agent_id": "peer-1", "host": "10.0.0.1"},
                {"agent_id": "peer-2", "host": "10.0.0.2"},
            ],
        },
    }
    assert len(detail["pieces"]["cells"]) == TORRENT.num_pieces
    assert torrent_json(dataclasses.replace(TORRENT, detail=None))["detail"] is None


def test_json_names_the_agent_and_host_of_each_peer() -> None:
    [peer] = torrent_json(TORRENT)["peer_list"]
    assert (peer["agent"], peer["host"]) == ("peer-1", "10.0.0.1")
    unknown = dataclasses.replace(PEER, agent="", host="")
    [peer] = torrent_json(dataclasses.replace(TORRENT, peer_list=(unknown,)))["peer_list"]
    assert (peer["agent"], peer["host"]) == (None, None)


def test_json_has_top_level_events_and_totals() -> None:
    document = json.loads(json.dumps(report_json(REPORT)))
    assert document["events"][0] == {
        "seq": 1,
        "age": 75.0,
        "level": "info",
        "text": "added album (from a .torrent file)",
        "info_hash": HASH.hex,
    }
    assert document["events"][1]["info_hash"] is None
    assert [event["seq"] for event in document["events"]] == [1, 2, 3]
    assert document["totals"] == {
        "download_rate": 2048.0,
        "upload_rate": 0.0,
        "torrents": 2,
        "peers": 1,
        "agents": 3,
        "hosts": 1,
        "dht_nodes": None,
    }
    assert set(document) == {"torrents", "agents", "dht", "events", "totals"}
    assert report_json(StatusReport((), ()))["totals"] is None


def test_text_shows_files_pieces_origins_and_each_peer_agent_at_host() -> None:
    lines = torrent_text(TORRENT).splitlines()
    assert "  files      3 files" in lines
    assert "    100.0%    48.0 KiB  album/01.flac" in lines
    assert "     25.0%    32.0 KiB  album/02 \\x1b[31mred.flac" in lines  # escaped
    assert "    100.0%         0 B  album/empty" in lines
    pieces = lines.index(next(line for line in lines if line.startswith("  pieces     7:")))
    assert lines[pieces + 1] == "    001#?>."
    assert lines[pieces + 2 :] == [
        "  from       0  peer-1@10.0.0.1",
        "  from       1  peer-2@10.0.0.2",
    ]
    [peer] = [line for line in lines if line.startswith("  peer ")]
    assert peer.endswith(" tracker  lt (libtorrent 2.0)  via peer-1@10.0.0.1")
    assert "files" not in torrent_text(dataclasses.replace(TORRENT, detail=None))


def test_text_of_a_big_torrent_groups_pieces_and_counts_the_files_not_listed() -> None:
    many = tuple(FileStatus(f"f{i}", 1, 1) for i in range(MAX_FILE_LINES))
    cells = bytes([H] * (MAX_PIECE_CELLS * 4 - 1) + [M])
    big = TorrentDetail(many, 5000, PieceMap(cells, ()))
    lines = torrent_text(dataclasses.replace(TORRENT, detail=big)).splitlines()
    assert "    ... and 4900 more" in lines
    start = next(i for i, line in enumerate(lines) if line.startswith("  pieces "))
    assert lines[start].startswith(f"  pieces     {len(cells)}, about 4 a character: ")
    rows = lines[start + 1 :]
    assert all(len(row) == 4 + 64 for row in rows)
    assert "".join(row[4:] for row in rows) == "#" * (MAX_PIECE_CELLS - 1) + "."


def test_text_ends_with_totals_and_the_latest_events() -> None:
    lines = report_lines(REPORT)
    totals = lines.index("events") - 1
    assert lines[totals] == (
        "totals     down 2.0 KiB/s, up 0 B/s, 2 torrents, 1 peers, 3 agents on 1 host"
    )
    assert lines[totals + 2 :] == [
        "   1m15s ago  info     added album (from a .torrent file)",
        "     30s ago  warning  agent peer-3 lost",
        "   1h02m ago  error    other: \\x07 disk full",
    ]
    # ``status ID``: only that torrent's events
    assert report_lines(REPORT, HASH)[-2:] == ["events", lines[totals + 2]]
    flood = tuple(SessionEvent(i, 1.0, EventLevel.INFO, f"event {i}", None) for i in range(1, 100))
    tail = report_lines(dataclasses.replace(REPORT, events=flood))
    assert len(tail) - tail.index("events") - 1 == EVENT_LINES
    assert tail[-1].endswith("event 99")


class Daemon:
    """Answers each request with ``REPORT`` and keeps it."""

    def __init__(self) -> None:
        self.asked: list[Message] = []

    def __call__(self, args: argparse.Namespace, message: Message) -> Message:
        self.asked.append(message)
        return REPORT


@pytest.mark.parametrize(
    ("torrent_id", "as_json", "detail"),
    [("abab", False, True), ("abab", True, True), (None, True, True), (None, False, False)],
)
def test_status_asks_for_detail_with_an_id_or_json(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    torrent_id: str | None,
    as_json: bool,
    detail: bool,
) -> None:
    daemon = Daemon()
    monkeypatch.setattr(remote, "_request", daemon)
    assert remote.run_status(argparse.Namespace(id=torrent_id, json=as_json)) == 0
    assert daemon.asked == [GetStatus((torrent_id or ""), detail)]
    out = capsys.readouterr().out
    if as_json:
        document: dict[str, Any] = json.loads(out)
        assert document["torrents"][0]["detail"]["pieces"]["cells"] == "001#?>."
        assert document["events"][0]["seq"] == 1
    else:
        assert "    001#?>." in out.splitlines()


def test_list_never_asks_for_detail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = Daemon()
    monkeypatch.setattr(remote, "_request", daemon)
    assert remote.run_list(argparse.Namespace()) == 0
    assert daemon.asked == [ListTorrents()]
    assert "album" in capsys.readouterr().out


def test_pause_finds_its_torrent_without_detail(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = Daemon()
    monkeypatch.setattr(remote, "_request", daemon)
    monkeypatch.setattr(remote, "_expect", lambda reply, kind: reply)
    args = argparse.Namespace(id="ab", command_name="pause")
    assert remote.run_torrent_command(args) == 0
    assert daemon.asked[0] == GetStatus("ab", False)
    capsys.readouterr()
