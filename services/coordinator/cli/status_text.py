"""``status`` for a person: each torrent as a block of labelled lines, then the agents, the
session's totals and the daemon's latest events.

A torrent's block: name, info hash, state (with the metadata fetch or the check's progress),
progress, transfer, peers, save path; a line per peer (address, flags, progress, rates, where
its address came from, its client, and ``via AGENT@HOST``: the peer agent holding it), a web
seed's line with its URL, rate, bytes and retry state instead; a line per tracker and per
announce; its DHT line; its web seeds (``web seeds``, a line per URL: state, bytes delivered,
hash failures, why), when it has any. With detail (``status ID``): its files (size, %,
path; the first ``MAX_FILE_LINES``) and its piece map (``piece_cells`` characters, 64 a line,
grouped when longer than ``MAX_PIECE_CELLS``) with a line per origin naming its character.

Rules: every text from the daemon that a peer, a tracker or a .torrent may have written (names,
paths, clients, errors, events) goes through ``safe_text``; lines are built by pure functions
returning strings, printed by the command.
"""

from __future__ import annotations

from collections.abc import Iterable

from torviz.shared.bus import (
    AgentStatus,
    PeerStatus,
    SessionEvent,
    SessionTotals,
    StatusReport,
    TorrentDetail,
    TorrentState,
    TorrentStatus,
    TrackerState,
)
from torviz.shared.types import InfoHash

from ..core.announcers import host_port, unreachable_hint
from .commands.info import safe_text
from .dht_status import agent_dht_text, torrent_dht_text
from .piece_cells import (
    CHECKING_CHAR,
    DOWNLOADING_CHAR,
    HAVE_CHAR,
    MISSING_CHAR,
    cells_text,
    group_cells,
    origin_char,
)
from .progress import human_size
from .status_json import file_progress
from .web_seeds import report_text, row_text

__all__ = [
    "EVENT_LINES",
    "MAX_FILE_LINES",
    "MAX_PIECE_CELLS",
    "PIECE_LINE",
    "agent_lines",
    "detail_lines",
    "event_lines",
    "report_lines",
    "torrent_text",
    "totals_line",
    "web_seed_lines",
]

EVENT_LINES = 20
"""Events shown at the end of ``status`` (the latest; ``--json`` has every kept one)."""
MAX_FILE_LINES = 100
"""Files listed in a torrent's block; a line says how many more there are."""
PIECE_LINE = 64
"""Piece map characters per line."""
MAX_PIECE_CELLS = 8 * PIECE_LINE
"""Piece map characters in all; a bigger torrent shows groups of pieces."""


def report_lines(report: StatusReport, focus: InfoHash | None = None) -> list[str]:
    """The whole ``status`` text; ``focus``: one torrent was asked for, show only its events.

    Args:
        report: the daemon's answer.
        focus: the info hash of the torrent asked for (``status ID``), or None for all.

    Returns:
        The lines to print.
    """
    lines = [torrent_text(torrent) for torrent in report.torrents]
    if not report.torrents:
        lines.append("no torrents")
    lines.extend(agent_lines(report.agents))
    if report.totals is not None:
        lines.append(totals_line(report.totals))
    events = [e for e in report.events if focus is None or e.info_hash == focus]
    if events:
        lines.append("events")
        lines.extend(event_lines(events[-EVENT_LINES:]))
    return lines


def agent_lines(agents: Iterable[AgentStatus]) -> list[str]:
    """``agents`` and a line per agent (its DHT node's under it)."""
    lines = []
    for agent in agents:
        lines.append(
            f"  {agent.role.value:<13} {safe_text(agent.agent_id):<24} "
            f"{safe_text(agent.host):<16} "
            f"{agent.connections:>4} conns ({agent.incoming} in)  "
            f"down {human_size(agent.download_rate)}/s "
            f"up {human_size(agent.upload_rate)}/s  heard {agent.last_heartbeat:.0f}s ago"
            + (f"  {safe_text(agent.address)}" if agent.address else "")
        )
        if agent.dht is not None:
            lines.append(agent_dht_text(agent))
    return ["agents", *lines] if lines else []


def totals_line(totals: SessionTotals) -> str:
    """``totals     down 1.5 MiB/s, up 0 B/s, 2 torrents, 5 peers, 3 agents on 1 host``."""
    hosts = "host" if totals.hosts == 1 else "hosts"
    dht = "" if totals.dht_nodes is None else f", DHT {totals.dht_nodes} nodes"
    return (
        f"totals     down {human_size(totals.download_rate)}/s, "
        f"up {human_size(totals.upload_rate)}/s, {totals.torrents} torrents, "
        f"{totals.peers} peers, {totals.agents} agents on {totals.hosts} {hosts}{dht}"
    )


def event_lines(events: Iterable[SessionEvent]) -> list[str]:
    """``    4m05s ago  warning  tracker http://... failed: timed out``, oldest first."""
    return [
        f"  {_ago(event.age):>10}  {event.level.value:<7}  {safe_text(event.text)}"
        for event in events
    ]


def _ago(seconds: float) -> str:
    """``12s ago``, ``4m05s ago``, ``2h10m ago``, ``3d04h ago``."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s ago"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s ago"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m ago"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h ago"


def _announce_lines(torrent: TorrentStatus) -> list[str]:
    """One line per announce: the address trackers hand out, who announces it, for which
    peer agent, how many of its trackers answered; then the fix when nobody listens there."""
    lines = []
    for announce in torrent.announces:
        address = host_port(announce.host or "?", announce.port)
        behind = f"peer agent {announce.peer_agent}" if announce.peer_agent else "no peer agent"
        working = sum(1 for t in announce.trackers if t.state is TrackerState.WORKING)
        answered = f", {working}/{len(announce.trackers)} trackers working"
        lines.append(
            f"  announce   {address:<22} by {announce.tracker_agent}, {behind}"
            + (answered if announce.trackers else "")
        )
    if not torrent.reachable:
        for announce in torrent.announces:
            if not announce.peer_agent:
                lines.append(f"  hint       {unreachable_hint(announce.host, announce.port)}")
    return lines


def _metadata_text(torrent: TorrentStatus) -> str:
    """``: 2 peers asked, 16.0 of 48.2 KiB received`` for a torrent fetching its metadata."""
    progress = torrent.metadata
    if progress is None:
        return ""
    size = f"{progress.size / 1024:.1f}" if progress.size is not None else "?"
    return (
        f": {progress.peers_asked} peers asked, {progress.received / 1024:.1f} of {size} KiB "
        "received"
    )


def _peer_text(peer: PeerStatus) -> str:
    if peer.address is None:
        return _web_seed_peer_text(peer)
    version = f" ({safe_text(peer.version)})" if peer.version else ""
    via = f"  via {safe_text(peer.agent)}@{safe_text(peer.host or '?')}" if peer.agent else ""
    return (
        f"  peer       {peer.address!s:<22} {peer.flags:<7} {peer.progress * 100:5.1f}%  "
        f"down {human_size(peer.download_rate)}/s up {human_size(peer.upload_rate)}/s  "
        f"{peer.source.value:<8} {safe_text(peer.client)}{version}{via}"
    )


def _web_seed_peer_text(peer: PeerStatus) -> str:
    """``  web seed   URL  down 1.0 MiB/s, 12.0 MiB  backing off, retry in 12 s: HTTP 503 ...
    via AGENT@HOST``."""
    via = f"  via {safe_text(peer.agent)}@{safe_text(peer.host or '?')}" if peer.agent else ""
    state = f"  {report_text(peer.web_seed)}" if peer.web_seed is not None else ""
    return (
        f"  web seed   {safe_text(peer.url)}  down {human_size(peer.download_rate)}/s, "
        f"{human_size(peer.downloaded)}{state}{via}"
    )


def web_seed_lines(torrent: TorrentStatus) -> list[str]:
    """``  web seeds  2`` and a line per URL of the torrent (none without web seeds)."""
    if not torrent.web_seeds:
        return []
    return [f"  web seeds  {len(torrent.web_seeds)}"] + [
        f"    {safe_text(row.url)}  {row_text(row)}" for row in torrent.web_seeds
    ]


def detail_lines(detail: TorrentDetail) -> list[str]:
    """A torrent's files (size, %, path) and its piece map with a line per origin."""
    count = detail.file_count
    lines = [f"  files      {count} file{'' if count == 1 else 's'}"]
    shown = detail.files[:MAX_FILE_LINES]
    lines.extend(
        f"    {file_progress(entry) * 100:5.1f}%  {human_size(entry.length):>10}  "
        f"{safe_text(entry.path)}"
        for entry in shown
    )
    if count > len(shown):
        lines.append(f"    ... and {count - len(shown)} more")
    cells = detail.pieces.cells
    if not cells:
        return lines
    grouped = group_cells(cells, MAX_PIECE_CELLS)
    per = "" if len(grouped) == len(cells) else f", about {len(cells) // len(grouped)} a character"
    lines.append(
        f"  pieces     {len(cells)}{per}: {MISSING_CHAR} missing, {DOWNLOADING_CHAR} "
        f"downloading, {CHECKING_CHAR} checking, {HAVE_CHAR} have, else where it came from"
    )
    text = cells_text(grouped)
    lines.extend(f"    {text[i : i + PIECE_LINE]}" for i in range(0, len(text), PIECE_LINE))
    lines.extend(
        f"  from       {origin_char(i)}  {safe_text(origin.agent_id)}@{safe_text(origin.host)}"
        for i, origin in enumerate(detail.pieces.origins)
    )
    return lines


def torrent_text(torrent: TorrentStatus) -> str:
    """One torrent's block of lines (its files and pieces too when it has ``detail``)."""
    down, up = human_size(torrent.downloaded), human_size(torrent.uploaded)
    size = (
        "size not known until the metadata is in"
        if torrent.state is TorrentState.METADATA
        else f"{torrent.progress * 100:.1f}% ({torrent.pieces_verified}/"
        f"{torrent.num_pieces} pieces of {human_size(torrent.total_length)})"
    )
    lines = [
        safe_text(torrent.name),
        f"  info hash  {torrent.info_hash.hex}",
        f"  state      {torrent.state.value}"
        + (f": {safe_text(torrent.error)}" if torrent.error else "")
        + _metadata_text(torrent)
        + (
            f" ({torrent.check_progress * 100:.0f}% checked)"
            if torrent.check_progress is not None
            else ""
        ),
        f"  progress   {size}",
        f"  transfer   down {down} at {human_size(torrent.download_rate)}/s,"
        f" up {up} at {human_size(torrent.upload_rate)}/s",
        f"  peers      {torrent.peers} ({torrent.seeds} seeds)",
        f"  saved in   {safe_text(torrent.save_path)}",
    ]
    lines.extend(_peer_text(peer) for peer in torrent.peer_list)
    for tracker in torrent.trackers:
        counts = ""
        if tracker.seeders is not None or tracker.leechers is not None:
            counts = f", {tracker.seeders or 0} seeders, {tracker.leechers or 0} leechers"
        problem = f": {safe_text(tracker.error)}" if tracker.error else ""
        lines.append(
            f"  tracker    [{tracker.tier}] {safe_text(tracker.url)} "
            f"{tracker.state.value}{problem}{counts}"
        )
    lines.extend(_announce_lines(torrent))
    if torrent.dht is not None:
        lines.append(torrent_dht_text(torrent.dht))
    lines.extend(web_seed_lines(torrent))
    if torrent.detail is not None:
        lines.extend(detail_lines(torrent.detail))
    return "\n".join(lines)
