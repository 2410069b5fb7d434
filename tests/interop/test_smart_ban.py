"""Blame only the liar: a peer that sends a few corrupt blocks and hangs up leaves half-fetched
pieces that torviz finishes from an honest libtorrent seeder. Each such piece fails its hash
with two senders; the storage agent traces the bad blocks against the good copy, the liar's
host is banned and the honest seeder, which shared every failed piece, is not."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from testing.content import make_content, single_file_layout
from testing.swarm import Swarm
from tests.interop.test_download import TEST_CONFIG, _assert_identical, _download, _seeded
from tests.support.bad_seeder import BadSeeder

pytestmark = pytest.mark.interop


def test_the_liar_is_banned_and_the_honest_seeder_is_not(swarm: Swarm, tmp_path: Path) -> None:
    config = tmp_path / "torviz.toml"
    config.write_text(TEST_CONFIG)
    spec = make_content(tmp_path / "seed", single_file_layout(6 * 1024 * 1024), seed=51)
    torrent, tracker = _seeded(swarm, tmp_path, spec, 256 * 1024, seeders=0)
    honest = swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=1_500_000)
    log = tmp_path / "download.log"
    with BadSeeder(torrent.path, spec.root, swarm.next_address(), hang_up_after=3) as liar:
        liar.announce(tracker.http_announce_url)
        result = _download(torrent.path, tmp_path / "out", config, "--log-file", str(log))
    assert result.returncode == 0, result.stderr
    _assert_identical(spec, tmp_path / "out")
    text = log.read_text()
    assert liar.corrupt_blocks_served > 0
    traced = re.findall(r"piece \d+ traced: bad blocks from (\S+); (\S+) sent only good", text)
    assert traced, "no piece was traced"
    banned = set(re.findall(r"banning (\S+): it sent bad blocks of piece", text))
    assert banned == {liar.address.host}, text[-3000:]
    assert f"banning {honest.address.host}" not in text
    assert all(liars == liar_key(text, liar.address.host) for liars, _ in traced)


def liar_key(text: str, host: str) -> str:
    """The peer key torviz gave its connection to ``host`` (from the peer agent's log)."""
    keys = re.findall(rf"peer=(\S+?)\]: connected to {re.escape(host)}", text)
    return keys[0] if keys else "?"
