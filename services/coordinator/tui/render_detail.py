"""The detail view of one torrent: header, files, trackers, web seeds, peers and the piece map.

Strategy: the view fills the screen's body; its four sections always show their headings
(``Files``, ``Trackers``, ``Peers``, ``Pieces``), a fifth (``Web seeds``) when the torrent has
web seeds, and their rows share the room left fairly (a short section gives its spare rows to
the long ones). A section cut short ends in a line saying how many rows it shows; ``j``/``k``
scroll the cut sections together. A web seed among the peers shows its URL (clipped) where a
peer shows its address, and its retry state where a peer shows its client.

Rules: pure; every text from the daemon escaped; exactly ``height`` lines of ``width`` cells.
"""

from __future__ import annotations

from torviz.shared.bus import PeerStatus, TorrentStatus, TrackerState, WebSeedUrlState
from torviz.shared.types import PeerAddress

from ..cli.web_seeds import report_text
from .lines import Line, Segment, Style, pad, plain
from .pieces import legend, map_lines
from .render_list import STATE_STYLES
from .text import cell_width, fit, human_size, percent_text, rate_text, safe_text, tilde
from .view_model import ViewModel

__all__ = ["detail_page", "share_rows"]

WIDE = 100
"""From this width a peer's row names where its address came from."""
RATE = 12

_TRACKER_STYLES = {
    TrackerState.WORKING: Style.GOOD,
    TrackerState.FAILED: Style.BAD,
    TrackerState.ANNOUNCING: Style.WARN,
}
_WEB_SEED_STYLES = {
    WebSeedUrlState.CONNECTED: Style.GOOD,
    WebSeedUrlState.RETRYING: Style.WARN,
    WebSeedUrlState.GIVEN_UP: Style.BAD,
    WebSeedUrlState.BANNED: Style.BAD,
    WebSeedUrlState.INVALID: Style.BAD,
}
STATE = 10
"""Cells of a web seed's state (``connected``, ``given up``...)."""


def share_rows(wanted: list[int], room: int) -> list[int]:
    """Split ``room`` rows among sections wanting ``wanted`` rows: each gets at most what it
    wants, and no section gets less than an equal share unless it wants less."""
    given = [0] * len(wanted)
    left = max(0, room)
    open_ = [i for i, want in enumerate(wanted) if want > 0]
    while left > 0 and open_:
        share = max(1, left // len(open_))
        for i in list(open_):
            take = min(share, wanted[i] - given[i], left)
            given[i] += take
            left -= take
            if given[i] >= wanted[i]:
                open_.remove(i)
            if left == 0:
                break
    return given


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _address(address: PeerAddress | None, url: str = "") -> str:
    if address is None:  # a web seed
        return safe_text(url)
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"{host}:{address.port}"


def _header(status: TorrentStatus, width: int, home: str) -> list[Line]:
    state_style = STATE_STYLES.get(status.state, Style.NORMAL)
    facts: Line = (
        (status.state.value, state_style),
        (f" · {percent_text(status.progress)}", Style.NORMAL),
        (f" · {human_size(status.total_length)}", Style.NORMAL),
        (f" · ↓ {rate_text(status.download_rate)} ↑ {rate_text(status.upload_rate)}", Style.NORMAL),
        (f" · {_plural(status.peers, 'peer')} ({_plural(status.seeds, 'seed')})", Style.NORMAL),
        (f" · {status.info_hash.hex}", Style.DIM),
    )
    lines = [
        plain(safe_text(status.name), width, Style.TITLE),
        pad(facts, width),
        plain(f"Saved in {tilde(safe_text(status.save_path), home)}", width, Style.DIM),
    ]
    if status.error:
        lines.append(plain(f"Error: {safe_text(status.error)}", width, Style.BAD))
    return lines


def _file_rows(status: TorrentStatus, width: int) -> list[Line]:
    if status.detail is None:
        return []
    rows = []
    for file in status.detail.files:
        done = file.completed / file.length if file.length else 1.0
        right = f"{fit(human_size(file.length), 11, right=True)} {fit(percent_text(done), 6, True)}"
        name_width = max(1, width - 2 - len(right) - 1)
        style = Style.GOOD if done >= 1.0 else Style.NORMAL
        rows.append(
            pad(
                ((f"  {fit(safe_text(file.path), name_width)} ", Style.NORMAL), (right, style)),
                width,
            )
        )
    return rows


def _tracker_rows(status: TorrentStatus, width: int) -> list[Line]:
    rows = []
    for tracker in status.trackers:
        counts = ""
        if tracker.seeders is not None or tracker.leechers is not None:
            counts = f" {tracker.seeders or 0} seeders {tracker.leechers or 0} leechers"
        segs: Line = (
            (f"  {safe_text(tracker.url)} ", Style.NORMAL),
            (tracker.state.value, _TRACKER_STYLES.get(tracker.state, Style.DIM)),
            (counts, Style.NORMAL),
            (f" {safe_text(tracker.error)}" if tracker.error else "", Style.BAD),
        )
        rows.append(pad(segs, width))
    return rows


def _web_seed_rows(status: TorrentStatus, width: int) -> list[Line]:
    """Per web seed URL: the URL, state, bytes delivered, then hash failures and why. The URL
    column is as wide as the longest URL, at most half the width; the message takes the rest."""
    urls = [safe_text(seed.url) for seed in status.web_seeds]
    url_width = max(8, min(max((cell_width(url) for url in urls), default=0), (width - 2) // 2))
    rows = []
    for url, seed in zip(urls, status.web_seeds, strict=True):
        failures = f" {_plural(seed.hash_failures, 'bad piece')}" if seed.hash_failures else ""
        segs: Line = (
            (f"  {fit(url, url_width)} ", Style.NORMAL),
            (
                fit(seed.state.value.replace("_", " "), STATE) + " ",
                _WEB_SEED_STYLES.get(seed.state, Style.DIM),
            ),
            (fit(human_size(seed.downloaded), 10, right=True), Style.NORMAL),
            (failures, Style.BAD),
            (f" {safe_text(seed.message)}" if seed.message else "", Style.DIM),
        )
        rows.append(pad(segs, width))
    return rows


def _peer_row(peer: PeerStatus, width: int) -> Line:
    """Address, client, source (100 columns and up), rates, and agent@host; the client's
    column takes what the others leave. A web seed: its URL, and its retry state as client."""
    client = safe_text(peer.version or peer.client) or "?"
    if peer.web_seed is not None:
        client = report_text(peer.web_seed)
    agent = f"{safe_text(peer.agent)}@{safe_text(peer.host)}" if peer.agent else "-"
    source = width >= WIDE
    fixed = 2 + 22 + (9 if source else 0) + 2 * (RATE + 2)
    agent_width = min(cell_width(agent), 32)
    client_width = max(8, width - fixed - agent_width - 1)
    segs: list[Segment] = [
        ("  " + fit(_address(peer.address, peer.url), 21) + " ", Style.NORMAL),
        (fit(client, client_width) + " ", Style.NORMAL),
        ((fit(peer.source.value, 8) + " ") if source else "", Style.DIM),
        ("↓" + fit(rate_text(peer.download_rate), RATE, right=True) + " ", Style.NORMAL),
        ("↑" + fit(rate_text(peer.upload_rate), RATE, right=True) + " ", Style.NORMAL),
        (agent, Style.DIM),
    ]
    return pad(tuple(segs), width)


def _section(title: str, rows: list[Line], room: int, scroll: int, width: int) -> list[Line]:
    """A heading and up to ``room`` rows; a cut list ends with which rows it shows."""
    lines = [plain(title, width, Style.HEADER)]
    if room <= 0:
        return lines
    if len(rows) <= room:
        return lines + rows
    shown = max(0, room - 1)
    start = max(0, min(scroll, len(rows) - shown))
    lines += rows[start : start + shown]
    note = f"  … rows {start + 1}-{start + shown} of {len(rows)} (j/k scroll)"
    return [*lines, plain(note, width, Style.DIM)]


def detail_page(model: ViewModel, width: int, height: int) -> list[Line]:
    """The detail view of ``model.detail`` in exactly ``height`` lines."""
    status = model.detail
    if status is None or status.info_hash != model.detail_hash:
        row = model.rows.get(model.detail_hash) if model.detail_hash else None
        name = safe_text(row.name) if row else "the torrent"
        lines = [plain(f"Loading {name}…", width, Style.TITLE)]
        return (lines + [plain("", width)] * height)[:height]
    lines = _header(status, width, model.home)
    detail = status.detail
    files = _file_rows(status, width)
    trackers = _tracker_rows(status, width)
    seeds = _web_seed_rows(status, width)
    peers = [_peer_row(peer, width) for peer in status.peer_list]
    pieces = detail.pieces if detail is not None else None
    needed_map = -(-len(pieces.cells) // width) if pieces is not None and pieces.cells else 1
    sections = [
        (f"Files ({detail.file_count if detail is not None else 0})", files),
        (f"Trackers ({len(trackers)})", trackers),
        *([(f"Web seeds ({len(seeds)})", seeds)] if seeds else []),
        (f"Peers ({len(peers)})", peers),
    ]
    rest = height - len(lines) - len(sections) - 2  # headings, the pieces heading, the legend
    map_rows = min(needed_map, max(1, rest // 3))
    wanted = [len(rows) for _, rows in sections]
    spare = rest - map_rows - sum(wanted)
    blanks = len(sections) + 1
    gap = [plain("", width)] if spare >= blanks else []  # room to spare: a blank before each
    rest -= blanks * len(gap)
    rooms = share_rows(wanted, rest - map_rows)
    scroll = model.detail_scroll
    for (title, rows), room in zip(sections, rooms, strict=True):
        lines += gap + _section(title, rows, room, scroll, width)
    verified = f"Pieces ({status.pieces_verified} of {status.num_pieces} verified)"
    lines += [*gap, plain(verified, width, Style.HEADER)]
    if pieces is None or not pieces.cells:
        lines.append(plain("  no piece map yet", width, Style.DIM))
    else:
        lines += [pad(line, width) for line in map_lines(pieces, width, map_rows)]
        lines.append(pad(legend(pieces, width), width))
    lines += [plain("", width)] * (height - len(lines))
    return lines[:height]
