"""The full-screen pages: the help (every key) and the agents.

Rules: pure; every text from the daemon escaped; exactly ``height`` lines of ``width`` cells.
"""

from __future__ import annotations

from .lines import Line, Style, pad, plain
from .text import fit, safe_text, short_rate_text
from .view_model import ViewModel

__all__ = ["HELP_KEYS", "agents_page", "help_page"]

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("+ or a", "add a torrent: a magnet link or a .torrent path (Tab completes a path)"),
    ("j/k, Up/Down", "move the selection (PgUp/PgDn, Home/End on a long list)"),
    ("space", "pause the selected torrent, or resume it when paused"),
    ("Enter", "details: files, trackers, web seeds, peers, the piece map (j/k scroll)"),
    ("v", "verify the selected torrent's data on disk"),
    ("d", "remove the selected torrent (asks first; keeps its files)"),
    ("D", "remove the selected torrent and delete its files (asks first)"),
    ("A", "agents: every agent of the daemon, its host and load"),
    ("[ / ]", "scroll the log back / forward (also < >, Shift-Up/Down)"),
    ("S", "shut the daemon and its agents down (asks first)"),
    ("?", "this help"),
    ("Esc", "back: closes help, the prompt, details, agents or a question"),
    ("q or Esc", "on the list: quit (the daemon keeps running)"),
    ("y / n", "answer a question"),
)


def _fill(lines: list[Line], width: int, height: int) -> list[Line]:
    lines = lines + [plain("", width)] * (height - len(lines))
    return lines[:height]


def help_page(width: int, height: int) -> list[Line]:
    """The help: ``torviz: keys`` and what each key does."""
    lines = [plain("torviz: keys", width, Style.TITLE), plain("", width)]
    key_width = max(len(key) for key, _ in HELP_KEYS) + 2
    for key, what in HELP_KEYS:
        lines.append(
            pad(((fit("  " + key, key_width + 2), Style.HEADER), (what, Style.NORMAL)), width)
        )
    lines.append(plain("", width))
    lines.append(plain("  Esc or ? goes back", width, Style.DIM))
    return _fill(lines, width, height)


# (heading, width, shown on a narrow screen); the agent id takes what the others leave.
_AGENT_COLUMNS = (
    ("Role", 8, True),
    ("Agent", 0, True),
    ("Host", 12, True),
    ("PID", 7, False),
    ("Conns", 9, True),
    ("Down", 10, True),
    ("Up", 10, True),
    ("Heard", 8, True),
)
NARROW = 100


def _agent_columns(width: int) -> list[tuple[int, int]]:
    """(index, width) of the columns shown."""
    shown = [
        (i, size) for i, (_, size, narrow) in enumerate(_AGENT_COLUMNS) if narrow or width >= NARROW
    ]
    rest = width - sum(size + 1 for _, size in shown)
    return [(i, size or max(8, min(40, rest))) for i, size in shown]


def agents_page(model: ViewModel, width: int, height: int) -> list[Line]:
    """The agents: role, id, host, pid, connections/capacity, rates, last heartbeat."""
    heading = f"Agents ({len(model.agents)})"
    lines = [plain(heading, width, Style.TITLE)]
    cols = _agent_columns(width)
    header = " ".join(fit(_AGENT_COLUMNS[i][0], size) for i, size in cols)
    lines.append(plain(header, width, Style.HEADER))
    agents = sorted(model.agents, key=lambda a: (a.role.value, a.host, a.agent_id))
    start = max(0, min(model.detail_scroll, len(agents) - (height - 2)))
    for agent in agents[start : start + max(0, height - 2)]:
        values = (
            agent.role.value.removesuffix("_agent"),
            safe_text(agent.agent_id),
            safe_text(agent.host),
            str(agent.pid),
            f"{agent.connections}/{agent.capacity}",
            short_rate_text(agent.download_rate),
            short_rate_text(agent.upload_rate),
            f"{agent.last_heartbeat:.0f}s ago",
        )
        cells = " ".join(fit(values[i], size) for i, size in cols)
        stale = agent.last_heartbeat > 10
        lines.append(plain(cells, width, Style.WARN if stale else Style.NORMAL))
    if not agents:
        lines.append(plain("  no agents connected", width, Style.DIM))
    return _fill(lines, width, height)
