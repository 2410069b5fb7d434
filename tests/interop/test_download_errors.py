"""``download`` keeps its one-line promise: whatever goes wrong, stderr gets one line saying
what to do, and the services' log lines go to the log only when asked for."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testing.content import make_content, single_file_layout
from testing.swarm import Swarm
from tests.interop.test_download import TEST_CONFIG, _download, _seeded
from tests.support.tmpfs import small_tmpfs

pytestmark = pytest.mark.interop


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "torviz.toml"
    path.write_text(TEST_CONFIG)
    return path


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a real disk that fills up."""
    with small_tmpfs(tmp_path / "small", "1m") as mount:
        yield mount


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_a_full_disk_is_one_line_on_stderr(
    swarm: Swarm, tmp_path: Path, config_file: Path, full_disk: Path
) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(4 * 1024 * 1024), seed=41)
    torrent, _ = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=1)
    result = _download(torrent.path, full_disk, config_file)
    assert result.returncode == 1
    lines = _lines(result.stderr)
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("torviz: error: ") and spec.name in line, line
    assert "disk full" in line or "No space" in line, line


def test_log_lines_go_to_the_log_file(
    swarm: Swarm, tmp_path: Path, config_file: Path, full_disk: Path
) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(4 * 1024 * 1024), seed=42)
    torrent, _ = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=1)
    log = tmp_path / "download.log"
    result = _download(torrent.path, full_disk, config_file, "--log-file", str(log))
    assert result.returncode == 1 and len(_lines(result.stderr)) == 1, result.stderr
    text = log.read_text()
    for service in ("coordinator", "peer_agent[", "storage_agent[", "tracker_agent["):
        assert f" {service}" in text, service
    assert " ERROR " in text or " WARNING " in text
