"""torviz against libtorrent: what the three comparison benchmarks summarise and print alike.

Strategy: the download, seeding and verify benchmarks each time torviz and libtorrent doing the
same job in alternating rounds, then report the medians side by side. The rounds' order, the
medians of the successful runs, the ratio and rates, the markdown table and the end of the
report are the same in all three and live here; each benchmark keeps its own run record, its
one-line description of a run and the columns only it measures. A `Measure` says how one
benchmark names its time and rate (``wall_s`` and MB/s for transfers, ``s`` and GB/s for a
check), so the JSON keys and the printed figures stay what they were.

Rules:
- A failed run counts only as failed: medians are over the successful runs of each tool.
- A median of no value is None and prints as ``n/a``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bench.sources import fmt, median

__all__ = [
    "TOOLS",
    "Measure",
    "Run",
    "alternating",
    "by_tool",
    "markdown_table",
    "median_by_role",
    "median_of",
    "outcome_text",
    "print_table",
    "roles_text",
    "runs_cell",
    "write_report",
]

TOOLS = ("torviz", "libtorrent")


class Run(Protocol):
    """What every benchmark's run record has: which tool, which round, how it went."""

    tool: str
    run: int
    ok: bool
    wall_s: float
    error: str
    loadavg: float


R = TypeVar("R", bound=Run)


def alternating(run: int) -> list[str]:
    """The tools in the order round `run` runs them: torviz first in even rounds, so neither
    always runs on a machine the other just warmed (or heated)."""
    return list(TOOLS) if run % 2 == 0 else list(reversed(TOOLS))


def by_tool(runs: Sequence[R]) -> tuple[list[R], list[R]]:
    """The successful torviz runs and the successful libtorrent runs."""
    return (
        [r for r in runs if r.tool == "torviz" and r.ok],
        [r for r in runs if r.tool == "libtorrent" and r.ok],
    )


def median_of(runs: Sequence[object], attr: str, *, nonzero: bool = False) -> float | None:
    """The median of one field over `runs`, skipping None (and 0 too when `nonzero`)."""
    values = [getattr(r, attr) for r in runs]
    return median([v for v in values if (v if nonzero else v is not None)])


def median_by_role(runs: Sequence[object], attr: str) -> dict[str, float | None]:
    """Per role, the median of a ``{role: seconds}`` field over `runs` (a run without the role
    counts 0.0)."""
    tables: list[Mapping[str, float]] = [getattr(r, attr) for r in runs]
    roles = sorted({role for table in tables for role in table})
    return {role: median([table.get(role, 0.0) for table in tables]) for role in roles}


@dataclass(frozen=True, slots=True)
class Measure:
    """How one benchmark names and shows its headline figures.

    Fields:
        time_key: the summary keys are ``torviz_<time_key>`` and ``libtorrent_<time_key>``.
        rate_key: likewise for the rate, in bytes per second divided by `per_second`.
        per_second: 1e6 for MB/s, 1e9 for GB/s.
        ratio_spec: format of the torviz / libtorrent ratio in the table.
        rate_spec: format of the rates in the table.
    """

    time_key: str = "wall_s"
    rate_key: str = "mb_s"
    per_second: float = 1e6
    ratio_spec: str = ".2f"
    rate_spec: str = ".0f"

    def summarise(self, size: int, runs: Sequence[Run]) -> dict[str, Any]:
        """The head-to-head part of a summary: run counts, load, both medians, ratio, rates.

        Args:
            size: bytes each run moved (or checked).
            runs: every run, failed ones included.

        Returns:
            ``bytes``, ``torviz_runs``, ``libtorrent_runs``, ``failed_runs``,
            ``median_loadavg``, then the time, ratio and rate keys of this measure, in that
            order (the order of the JSON report).
        """
        tv, lt = by_tool(runs)
        tv_time = median([r.wall_s for r in tv])
        lt_time = median([r.wall_s for r in lt])
        return {
            "bytes": size,
            "torviz_runs": len(tv),
            "libtorrent_runs": len(lt),
            "failed_runs": len([r for r in runs if not r.ok]),
            "median_loadavg": median([r.loadavg for r in runs]),
            f"torviz_{self.time_key}": tv_time,
            f"libtorrent_{self.time_key}": lt_time,
            "ratio": tv_time / lt_time if tv_time and lt_time else None,
            f"torviz_{self.rate_key}": size / tv_time / self.per_second if tv_time else None,
            f"libtorrent_{self.rate_key}": size / lt_time / self.per_second if lt_time else None,
        }

    def cells(self, summary: Mapping[str, Any]) -> list[str]:
        """The table cells torviz, libtorrent, torviz / libtorrent, torviz rate, libtorrent
        rate of a summary made by `summarise`."""
        return [
            fmt(summary[f"torviz_{self.time_key}"], ".2f", " s"),
            fmt(summary[f"libtorrent_{self.time_key}"], ".2f", " s"),
            fmt(summary["ratio"], self.ratio_spec, "x"),
            fmt(summary[f"torviz_{self.rate_key}"], self.rate_spec),
            fmt(summary[f"libtorrent_{self.rate_key}"], self.rate_spec),
        ]


def runs_cell(summary: Mapping[str, Any]) -> str:
    """The last cell of every table: runs of torviz, of libtorrent, and failed runs."""
    return f"{summary['torviz_runs']}, {summary['libtorrent_runs']}, {summary['failed_runs']}"


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table of `rows` under `columns`."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def roles_text(by_role: Mapping[str, float]) -> str:
    """CPU seconds per process role, for a run's line: ``  [coordinator 0.40, ...]``."""
    return "  [" + ", ".join(f"{k} {v:.2f}" for k, v in by_role.items()) + "]"


def outcome_text(run: Run, *, ok_error: str = "FAILED") -> str:
    """The end of a run's line: why it failed, or what went wrong in a run that still counts
    (labelled `ok_error`); empty for a clean run."""
    if not run.ok:
        return f"  FAILED: {run.error}"
    return f"  {ok_error}: {run.error}" if run.error else ""


def print_table(table: str, notes: Sequence[str] = ()) -> None:
    """Print the summary table after the runs' lines, then any notes."""
    print()
    print(table)
    for note in notes:
        print(note)


def write_report(report: dict[str, Any], output: Path) -> None:
    """Write the JSON report (with the load average at the end) and say where."""
    report["machine"]["loadavg_at_end"] = os.getloadavg()
    output.write_text(json.dumps(report, indent=1))
    print(f"results in {output}")
