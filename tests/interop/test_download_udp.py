"""End to end over a UDP tracker only: ``torviz-coordinator download`` finds its peers by BEP 15.

Every process is real: opentracker (announced to over UDP alone: the torrent lists no other
tracker), libtorrent seeders on their own 127.0.0.x addresses, and torviz's four services. The
content is compared byte for byte. Helpers come from ``test_download.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testing.content import make_content, multi_file_layout
from testing.swarm import Swarm
from tests.interop.test_download import TEST_CONFIG, _assert_identical, _download, _seeded

pytestmark = pytest.mark.interop


@pytest.fixture
def udp_config(tmp_path: Path) -> Path:
    path = tmp_path / "torviz.toml"
    path.write_text(TEST_CONFIG)
    return path


def test_download_with_only_a_udp_tracker(swarm: Swarm, tmp_path: Path, udp_config: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(3 * 1024 * 1024 + 4321), seed=31)
    torrent, tracker = _seeded(swarm, tmp_path, spec, 64 * 1024, seeders=2, udp=True)
    assert torrent.path.read_bytes().count(b"udp://") == 1
    assert b"http://" not in torrent.path.read_bytes()
    result = _download(torrent.path, tmp_path / "out", udp_config, "--log-level", "INFO")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "every piece verified" in result.stdout
    assert "Traceback" not in result.stderr
    assert tracker.udp_announce_url in result.stderr  # the agent logged its UDP announces
    _assert_identical(spec, tmp_path / "out")
