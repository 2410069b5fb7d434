"""Hostile peers against ``download MAGNET`` (issue 14): each beside an honest libtorrent seeder.

The magnet link names only the hostile peer (``x.pe``), so torviz meets it first; the honest
seeder dials torviz only once the hostile peer has done its worst (served its wrong bytes,
advertised 2^31, swallowed a request, sent its flood). Then the torrent must complete,
byte-identical, with memory bounded: the ``download`` process (coordinator) and its agents are
sampled every 0.2 s and must stay under ``RSS_BOUND_KIB``.

- wrong metadata bytes: the peer is dropped (torviz closes the connection) and not dialled again;
- ``metadata_size`` 2^31: torviz never asks it for a piece and drops it;
- a peer that never answers: torviz asks it, then gets the metadata from the honest seeder;
- a PeX flood of 10,000 addresses (100 messages of 100, or one message of 10,000): the
  canary address, named in every message, is dialled at most a handful of times.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testing.content import compare_content, make_content, make_torrent, multi_file_layout
from testing.swarm import Swarm, free_port, next_loopback_address
from tests.support.hostile_metadata import HostileMetadataPeer, Mode
from tests.support.magnets import DownloadRun, RssWatch, info_dict, torviz_config

pytestmark = pytest.mark.interop

DOWNLOAD_TIMEOUT = 120.0
PIECE = 16 * 1024  # many pieces: an info dict of several 16 KiB metadata pieces
RSS_BOUND_KIB = 160 * 1024  # each process; about 40-65 MiB measured
TORVIZ_HOST = "127.0.0.1"  # its peer agent listens and dials from there
MAX_PEX_DIALS = 3  # the "a handful"; torviz's PexPolicy allows 3 attempts an address
MAX_KEPT_PER_SOURCE = 200  # PexLimits.max_kept_per_source: of 10,000, at most this many dialled


def _until(predicate: Callable[[], bool], timeout: float, run: DownloadRun, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if run.process.poll() is not None:
            raise AssertionError(f"download exited before {what}: {run.stderr[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s; stdout: {run.stdout[-1000:]}")
        time.sleep(0.1)


def _run_beside_honest(
    swarm: Swarm,
    tmp_path: Path,
    mode: Mode,
    worst_done: Callable[[HostileMetadataPeer], bool],
    *,
    flood_messages: int = 100,
) -> HostileMetadataPeer:
    spec = make_content(tmp_path / "seed", multi_file_layout(20 * 1024 * 1024 + 777), seed=31)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    info = info_dict(torrent.path)
    assert len(info) > 16 * 1024, "the info dict should span several metadata pieces"
    port = free_port("127.0.0.1")
    config = torviz_config(tmp_path / "torviz.toml", port, metadata_timeout=5.0)
    hostile = HostileMetadataPeer(
        info, next_loopback_address(), mode, flood_messages=flood_messages
    )
    try:
        magnet = torrent.magnet(peers=[str(hostile)])
        log = tmp_path / "dl.log"
        with DownloadRun(magnet, tmp_path / "out", config, log, "--log-level", "INFO") as run:
            watch = RssWatch(run.pid)
            try:
                _until(lambda: hostile.connections > 0, 30, run, "a connection to the hostile peer")
                _until(lambda: worst_done(hostile), 30, run, f"the {mode} peer's attack")
                # PeX off: libtorrent would learn of the hostile peer from torviz and be flooded
                # too; this test is about torviz.
                swarm.seeder(
                    torrent.path,
                    spec.root,
                    seed_mode=True,
                    disable_pex=True,
                    connect_peers=[f"127.0.0.1:{port}"],
                )
                code = run.wait(DOWNLOAD_TIMEOUT)
            finally:
                peaks = watch.stop()
            assert code == 0, run.stderr[-3000:]
            assert "Traceback" not in run.stderr
        assert compare_content(spec.root, tmp_path / "out", spec) == []
        over = {pid: kib for pid, kib in peaks.items() if kib > RSS_BOUND_KIB}
        assert not over, f"resident memory over {RSS_BOUND_KIB} KiB: {over}"
        assert watch.root_peak > 0
        print(f"{mode}: peak RSS KiB per process {peaks}")
    finally:
        hostile.close()
    return hostile


def test_wrong_metadata_bytes(swarm: Swarm, tmp_path: Path) -> None:
    hostile = _run_beside_honest(
        swarm, tmp_path, "wrong_bytes", lambda h: h.answered > 0 and h.closed_by_client > 0
    )
    dials = hostile.connections_from[TORVIZ_HOST]
    assert dials == 1, f"the peer that served a wrong hash was dialled again ({dials} times)"


def test_metadata_size_of_two_gib(swarm: Swarm, tmp_path: Path) -> None:
    hostile = _run_beside_honest(swarm, tmp_path, "huge_size", lambda h: h.closed_by_client > 0)
    assert hostile.requests == 0, "torviz asked a 2 GiB metadata_size peer for pieces"


def test_peer_that_never_answers(swarm: Swarm, tmp_path: Path) -> None:
    hostile = _run_beside_honest(swarm, tmp_path, "silent", lambda h: h.requests > 0)
    assert hostile.answered == 0


@pytest.mark.parametrize("flood_messages", [100, 1], ids=["100x100", "1x10000"])
def test_pex_flood_of_ten_thousand_addresses(
    swarm: Swarm, tmp_path: Path, flood_messages: int
) -> None:
    hostile = _run_beside_honest(
        swarm,
        tmp_path,
        "pex_flood",
        lambda h: h.floods_sent > 0,
        flood_messages=flood_messages,
    )
    assert hostile.connections_from[TORVIZ_HOST] > 0
    assert hostile.canary_from[TORVIZ_HOST] <= MAX_PEX_DIALS, hostile.canary_from
    # Every dial shows in the peer agent's log: the flood's addresses, kept per source.
    dials = re.findall(r"connect to (127\.77\.[0-9.]+:1) failed", (tmp_path / "dl.log").read_text())
    assert len(set(dials)) <= MAX_KEPT_PER_SOURCE, len(set(dials))
    assert len(dials) <= MAX_PEX_DIALS * len(set(dials))
