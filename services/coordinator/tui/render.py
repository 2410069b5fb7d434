"""A frame: (view model, width, height) -> exactly ``height`` styled lines.

Strategy: the screen is the body, a status line and the bottom line. The body is the list with
the log beside it (120 columns and more: the log takes ``log_width``) or under it (narrower), or a
full-screen page (help, detail, agents). The status line shows the add prompt, a question to
answer, or what the last command did; the bottom line the session's totals and ends with
``? help``, whatever the width.

Rules: pure (no blessed): ``screen`` draws what this returns. Each line is exactly ``width``
cells. Works from 80x24; smaller screens still get ``height`` lines, just less in them.
"""

from __future__ import annotations

from torviz.shared.bus import EventLevel

from .lines import Line, Style, join, line_text, pad, plain
from .render_detail import detail_page
from .render_list import LEVEL_STYLES, list_pane, log_pane
from .render_pages import agents_page, help_page
from .text import cell_width, rate_text, safe_text, truncate
from .view_model import ConfirmKind, Mode, ViewModel

__all__ = [
    "PROMPT_LABEL",
    "SIDE_BY_SIDE",
    "bottom_line",
    "confirm_text",
    "list_rows",
    "render",
    "status_line",
]

SIDE_BY_SIDE = 120
"""From this width the log pane stands beside the list; below, under it."""
PROMPT_LABEL = "Add (magnet link or .torrent path): "
HELP_HINT = "? help"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def bottom_line(model: ViewModel, width: int) -> Line:
    """The session in numbers, ending in ``? help``."""
    totals = model.totals
    if totals is None:
        parts = ["connecting to the daemon…"]
    else:
        parts = [
            f"↓ {rate_text(totals.download_rate)} ↑ {rate_text(totals.upload_rate)}",
            _plural(totals.torrents, "torrent"),
            _plural(totals.peers, "peer"),
            f"{_plural(totals.agents, 'agent')} on {_plural(totals.hosts, 'host')}",
        ]
        if totals.dht_nodes is not None:
            parts.append(f"DHT {_plural(totals.dht_nodes, 'node')}")
    tail = " · " + HELP_HINT
    body = truncate(" · ".join(parts), max(0, width - cell_width(tail)))
    gap = max(0, width - cell_width(body) - cell_width(tail))
    if cell_width(tail) > width:
        return pad(((HELP_HINT, Style.HEADER),), width)
    return ((body + " " * gap, Style.HEADER), (tail, Style.HEADER))


def confirm_text(model: ViewModel) -> str:
    """The question of ``model.confirm``."""
    confirm = model.confirm
    if confirm is None:
        return ""
    name = safe_text(confirm.name)
    if confirm.kind is ConfirmKind.REMOVE:
        return f"Remove {name}? (y/n)"
    if confirm.kind is ConfirmKind.REMOVE_DATA:
        return f"Remove {name} and delete {safe_text(confirm.path)}? (y/n)"
    return "Shut down the daemon and its agents? (y/n)"


def _prompt_line(model: ViewModel, width: int) -> Line:
    prompt = model.prompt
    text = safe_text(prompt.text)
    cursor = len(safe_text(prompt.text[: prompt.cursor]))
    error = f"  ✗ {safe_text(prompt.error)}" if prompt.error else ""
    room = max(1, width - cell_width(PROMPT_LABEL) - 1 - min(cell_width(error), width // 3))
    start = max(0, cursor - room + 1)  # keep the cursor in view on a long link
    before, at, after = text[start:cursor], text[cursor : cursor + 1] or " ", text[cursor + 1 :]
    segs: Line = (
        (PROMPT_LABEL, Style.HEADER),
        (before, Style.INPUT),
        (at, Style.CURSOR),
        (truncate(after, max(0, room - cell_width(before) - 1)), Style.INPUT),
        (error, Style.BAD),
    )
    return pad(segs, width)


def status_line(model: ViewModel, width: int) -> Line:
    """The line above the bottom line: the prompt, a question, or the last message."""
    if model.mode is Mode.PROMPT:
        return _prompt_line(model, width)
    if model.mode is Mode.CONFIRM:
        return plain(confirm_text(model), width, Style.WARN)
    style = LEVEL_STYLES.get(model.message_level, Style.NORMAL)
    if model.message_level is EventLevel.INFO:
        style = Style.DIM
    return plain(safe_text(model.message), width, style)


def list_rows(width: int, height: int) -> int:
    """How many torrent rows the list shows on a ``width`` x ``height`` screen."""
    body = max(0, height - 2)
    list_height = body if width >= SIDE_BY_SIDE else _stacked_list_height(body)
    return max(1, list_height - 1)


def log_width(width: int) -> int:
    """The log pane's width beside the list: what the list's columns leave over 83 cells
    (all of them, with a bar, fit there), between 36 cells and 40% of the screen."""
    return max(36, min(width - 84, width * 4 // 10))


def _stacked_list_height(body: int) -> int:
    return max(min(body, 3), body * 6 // 10)


def _main_body(model: ViewModel, width: int, height: int) -> list[Line]:
    if width >= SIDE_BY_SIDE:
        right = log_width(width)
        left = width - right - 1
        rows = list_pane(model, left, height)
        log = log_pane(model, right, height)
        return [join(a, b, left, right) for a, b in zip(rows, log, strict=True)]
    list_height = _stacked_list_height(height)
    log_height = height - list_height
    lines = list_pane(model, width, list_height)
    if log_height > 0:
        log = log_pane(model, width, log_height)
        title = line_text(log[0]).rstrip()
        rule = "─" * max(0, width - cell_width(title) - 4)
        lines += [pad((("── ", Style.DIM), (title, Style.HEADER), (" " + rule, Style.DIM)), width)]
        lines += log[1:]
    return lines


def render(model: ViewModel, width: int, height: int) -> list[Line]:
    """The whole frame: exactly ``height`` lines, each exactly ``width`` cells."""
    width, height = max(1, width), max(0, height)
    body = max(0, height - 2)
    if model.mode is Mode.HELP:
        lines = help_page(width, body)
    elif model.mode is Mode.DETAIL:
        lines = detail_page(model, width, body)
    elif model.mode is Mode.AGENTS:
        lines = agents_page(model, width, body)
    else:
        lines = _main_body(model, width, body)
    if height >= 2:
        lines.append(status_line(model, width))
    if height >= 1:
        lines.append(bottom_line(model, width))
    return [pad(line, width) for line in lines[-height:]] if height else []
