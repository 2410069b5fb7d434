"""A magnet link given where a torrent is expected: one line saying what is wrong, never a
file-not-found (until magnet downloads land, a good link is named as not supported yet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_info import HEX, run_cli

GOOD = f"magnet:?xt=urn:btih:{HEX}&dn=Example"


@pytest.mark.parametrize("command", ["download", "add"])
def test_a_magnet_link_is_one_clear_line(command: str, tmp_path: Path) -> None:
    extra = ["-o", str(tmp_path)] if command == "download" else ["--state-dir", str(tmp_path)]
    result = run_cli(command, GOOD, *extra, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("torviz: error: magnet links cannot be downloaded yet"), line
    assert HEX in line and "No such file" not in line


@pytest.mark.parametrize("command", ["download", "add"])
def test_a_bad_magnet_link_says_what_is_wrong_with_it(command: str, tmp_path: Path) -> None:
    extra = ["-o", str(tmp_path)] if command == "download" else ["--state-dir", str(tmp_path)]
    result = run_cli(command, "magnet:?dn=no-hash", *extra, cwd=tmp_path)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "xt" in line and "No such file" not in line, line
