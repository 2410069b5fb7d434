"""Constructed bus records for the terminal UI's tests: rows, changes, a detailed status."""

from __future__ import annotations

import hashlib

from torviz.services.coordinator.tui.lines import Line, line_text, line_width
from torviz.shared.bus import (
    AgentStatus,
    EventLevel,
    FileStatus,
    PeerSource,
    PeerStatus,
    PieceMap,
    PieceOrigin,
    ServiceKind,
    SessionChanges,
    SessionEvent,
    SessionTotals,
    TorrentDetail,
    TorrentRow,
    TorrentState,
    TorrentStatus,
    TrackerState,
    TrackerStatus,
)
from torviz.shared.types import InfoHash, PeerAddress

TOTALS = SessionTotals(
    download_rate=1536.0,
    upload_rate=0.0,
    torrents=2,
    peers=3,
    agents=3,
    hosts=1,
    dht_nodes=None,
)


def ih(name: str) -> InfoHash:
    """A stable info hash for a name."""
    return InfoHash(hashlib.sha1(name.encode()).digest())


def row(
    name: str,
    state: TorrentState = TorrentState.DOWNLOADING,
    progress: float = 0.5,
    *,
    info_hash: InfoHash | None = None,
    total: int = 1000,
    left: int | None = None,
    down: float = 0.0,
    up: float = 0.0,
    peers: int = 0,
    error: str | None = None,
    check: float | None = None,
) -> TorrentRow:
    """A list row."""
    return TorrentRow(
        info_hash=info_hash or ih(name),
        name=name,
        state=state,
        progress=progress,
        total_length=total,
        left=round(total * (1 - progress)) if left is None else left,
        download_rate=down,
        upload_rate=up,
        peers=peers,
        seeds=0,
        error=error,
        check_progress=check,
        metadata=None,
    )


def event(
    seq: int, text: str, level: EventLevel = EventLevel.INFO, age: float = 0.0
) -> SessionEvent:
    """A log event."""
    return SessionEvent(seq=seq, age=age, level=level, text=text, info_hash=None)


def changes(
    *rows: TorrentRow,
    revision: int = 1,
    complete: bool = False,
    removed: tuple[InfoHash, ...] = (),
    events: tuple[SessionEvent, ...] = (),
    totals: SessionTotals = TOTALS,
    agents: tuple[AgentStatus, ...] = (),
) -> SessionChanges:
    """A reply to ``WatchSession``."""
    return SessionChanges(
        revision=revision,
        complete=complete,
        rows=rows,
        removed=removed,
        events=events,
        totals=totals,
        agents=agents,
    )


def agent(agent_id: str, role: ServiceKind, host: str = "vm") -> AgentStatus:
    """An agent."""
    return AgentStatus(
        agent_id=agent_id,
        role=role,
        host=host,
        pid=4242,
        connections=3,
        capacity=200,
        download_rate=2048.0,
        upload_rate=0.0,
        last_heartbeat=2.0,
        address="",
    )


ORIGINS = (PieceOrigin("peer-1", "alpha"), PieceOrigin("peer-2", "beta"))


def status(
    name: str = "movie",
    *,
    cells: bytes = bytes([0, 1, 2, 3, 4, 5]),
    files: tuple[FileStatus, ...] = (
        FileStatus("movie/a.mkv", 2000, 1000),
        FileStatus("movie/b.srt", 100, 100),
    ),
    peers: int = 2,
    error: str | None = None,
) -> TorrentStatus:
    """A torrent with its detail (files, trackers, peers, piece map)."""
    tracker = TrackerStatus(
        "http://tracker.example/announce", 0, TrackerState.WORKING, None, 5, 7, None, 1800.0
    )
    peer_list = tuple(
        PeerStatus(
            address=PeerAddress("10.0.0.9", 6881 + i),
            client="qB",
            flags="D",
            download_rate=4096.0,
            upload_rate=0.0,
            downloaded=1,
            uploaded=0,
            progress=0.5,
            version="qBittorrent 4.6",
            source=PeerSource.TRACKER,
            agent="peer-1",
            host="alpha",
        )
        for i in range(peers)
    )
    return TorrentStatus(
        info_hash=ih(name),
        name=name,
        state=TorrentState.DOWNLOADING,
        progress=0.5,
        total_length=2100,
        downloaded=1000,
        uploaded=0,
        download_rate=4096.0,
        upload_rate=0.0,
        peers=peers,
        seeds=1,
        pieces_verified=3,
        num_pieces=len(cells),
        save_path="/srv/dl",
        error=error,
        trackers=(tracker,),
        peer_list=peer_list,
        check_progress=None,
        detail=TorrentDetail(files=files, file_count=len(files), pieces=PieceMap(cells, ORIGINS)),
    )


def texts(lines: list[Line]) -> list[str]:
    """The characters of each line."""
    return [line_text(line) for line in lines]


def assert_frame(lines: list[Line], width: int, height: int) -> None:
    """Exactly ``height`` lines, each exactly ``width`` cells."""
    assert len(lines) == height
    for line in lines:
        assert line_width(line) == width, line_text(line)
