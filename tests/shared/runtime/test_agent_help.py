"""Every agent's command line explains itself, and its log can go to a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

AGENTS = ["tracker_agent", "peer_agent", "storage_agent"]


def run_agent(kind: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", f"torviz.services.{kind}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("kind", AGENTS)
def test_help_describes_the_agent_and_every_option(kind: str) -> None:
    result = run_agent(kind, "--help")
    assert result.returncode == 0
    usage, description = result.stdout.split("\n\n")[:2]
    assert f"torviz-{kind.replace('_', '-')}" in usage
    assert description.startswith(("The torviz", "A torviz")), description
    text = " ".join(result.stdout.split())  # help lines wrap anywhere
    options = text[text.rindex("--log-level LEVEL") :]
    assert "DEBUG, INFO, WARNING, ERROR or OFF" in options.split("--log-file FILE")[0]
    assert "--log-file FILE append log lines to FILE" in text


def test_a_bad_log_level_or_log_file_is_one_line(tmp_path: Path) -> None:
    bad_level = run_agent("tracker_agent", "--coordinator", "ipc://x", "--log-level", "LOUD")
    assert bad_level.returncode == 2
    assert bad_level.stderr.splitlines() == [
        "torviz: error: unknown log level 'LOUD' (try DEBUG, INFO, WARNING, ERROR or OFF)"
    ]
    missing = tmp_path / "no" / "such" / "agent.log"
    bad_file = run_agent("tracker_agent", "--coordinator", "ipc://x", "--log-file", str(missing))
    assert bad_file.returncode == 2
    [line] = bad_file.stderr.splitlines()
    assert line.startswith(f"torviz: error: cannot open the log file {missing}")
