"""Web seeds in the daemon (issue 17), beyond the issue's list of must-shows: a file the web
seed lacks, the switch that turns web seeds off, a shutdown while a web seed is mid-request,
a magnet link's ``ws=``, the per-torrent cap, pausing and a restart.

- nginx lacks one file of a multi-file torrent (404): the web seed delivers every piece it
  can, keeps running (one file disabled, shown in its status) without asking for that file
  again and again or spinning the CPU, and a libtorrent seeder that dials in then completes
  the torrent;
- ``[coordinator] web_seeds = false``: the torrent's row says ``disabled`` and no request
  reaches the server;
- a web seed that drips its body a byte a second: ``shutdown`` still ends the daemon and every
  agent within its bound;
- a magnet link with ``ws=`` whose metadata comes from a libtorrent seeder: the web seed then
  delivers too, and the torrent still lists it after a restart;
- two web seeds and ``max_web_seeds_per_torrent = 1``: never two at once; pausing the torrent
  closes its web seed (rows ``waiting``, no request while paused), resuming completes it;
- the daemon restarted a quarter into a download from a web seed alone: it completes, asking
  the server only for what was missing.

Every wait is bounded; every process is stopped by its fixture or ``with`` block.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from pathlib import Path, PurePosixPath

import pytest

from testing.content import (
    FileSpec,
    Layout,
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
    single_file_layout,
)
from testing.swarm import Swarm, free_port
from tests.interop.test_web_seed import DOWNLOAD_TIMEOUT, MIB, _folder, _row
from tests.support.daemon import descendants, running_daemon
from tests.support.dht import cpu_seconds
from tests.support.hostile_http import SlowDrip
from tests.support.nginx import Nginx, nginx_or_skip
from tests.support.web_seeds import DaemonStatus, add_url_list, web_seed_config, web_seed_peers
from torviz.shared.bus import WebSeedUrlState

pytestmark = pytest.mark.interop

PIECE = 32 * 1024
STALL_S = 3.0  # how long the torrent waits on the missing file before a peer comes
MAX_STALL_CPU = 0.5  # CPU seconds per second of the daemon's processes while they wait


def test_a_file_missing_on_the_web_seed_comes_from_a_peer(swarm: Swarm, tmp_path: Path) -> None:
    nginx_or_skip()
    # The missing file comes first, and the rest is more than one assignment of the web seed
    # (its first WorkWanted asks for 6 runs of 4 MiB): it must be handed the pieces past the
    # ones it lacks, not those again and again.
    first, rest = 8 * MIB + 1, 20 * MIB
    layout = Layout(
        "gap",
        (
            FileSpec(PurePosixPath("lacking.bin"), first),
            FileSpec(PurePosixPath("rest/kept.bin"), rest),
        ),
    )
    spec = make_content(tmp_path / "seed", layout, seed=201)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    missing = range(0, first // PIECE + 1)
    # The server's copy lacks it (the other file a hard link, not a copy).
    served = tmp_path / "served"
    (served / spec.name / "rest").mkdir(parents=True)
    os.link(spec.root / spec.name / "rest" / "kept.bin", served / spec.name / "rest" / "kept.bin")
    port = free_port("127.0.0.1")
    with Nginx(served, tmp_path / "nginx") as nginx:
        add_url_list(torrent.path, [nginx.url])
        with running_daemon(
            _folder(tmp_path / "daemon"), web_seed_config(listen_port=port)
        ) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                # (and the web seed's first stats row in: it may be faster than one second)
                waiting = status.wait(
                    lambda s: (
                        s.pieces_verified == s.num_pieces - len(missing)
                        and any(p.web_seed is not None for p in web_seed_peers(s))
                    ),
                    30,
                    "every piece but the missing file's from the web seed",
                )
                pids = [daemon.pid, *descendants(daemon.pid)]
                cpu_before = sum(cpu_seconds(pid) for pid in pids)
                time.sleep(STALL_S)
                stalled = status.status()
                cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
                swarm.seeder(
                    torrent.path, spec.root, seed_mode=True, connect_peers=[f"127.0.0.1:{port}"]
                )
                done = status.wait(lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion")
            assert compare_content(spec.root, daemon.download_dir, spec) == []
        asked = nginx.requests()
    # While it waited the web seed stayed, one file disabled, and nothing spun.
    for entry in (waiting, stalled):
        assert _row(entry, nginx.url).state is WebSeedUrlState.CONNECTED, entry.web_seeds
        [peer] = web_seed_peers(entry)
        assert peer.web_seed is not None and peer.web_seed.disabled_files == 1, peer
    assert stalled.pieces_verified == waiting.pieces_verified
    assert cpu < MAX_STALL_CPU * STALL_S, f"{cpu:.2f} CPU seconds in {STALL_S} s of waiting"
    gap = urllib.parse.quote(f"/{spec.name}/lacking.bin")
    refused = [r for r in asked if r.uri == gap]
    assert refused and {r.status for r in refused} == {404}, refused
    assert len(refused) <= 4, f"the missing file was asked for {len(refused)} times"
    assert _row(done, nginx.url).downloaded >= (torrent.num_pieces - len(missing) - 2) * PIECE


def test_web_seeds_switched_off_are_not_fetched(tmp_path: Path) -> None:
    nginx_or_skip()
    spec = make_content(tmp_path / "seed", single_file_layout(256 * 1024, "off.bin"), seed=202)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    config = web_seed_config(extra="\n[coordinator]\nweb_seeds = false\n")
    with Nginx(spec.root, tmp_path / "nginx") as nginx:
        add_url_list(torrent.path, [nginx.url])
        with running_daemon(_folder(tmp_path / "daemon"), config) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                status.wait(
                    lambda s: _row(s, nginx.url).state is WebSeedUrlState.DISABLED,
                    30,
                    "the web seed shown as disabled",
                )
                time.sleep(2.0)  # time enough for a session to start, were one started
                last = status.status()
                seen = status.seen
        assert nginx.requests() == ()
    assert last.pieces_verified == 0
    assert _row(last, nginx.url).state is WebSeedUrlState.DISABLED
    assert not any(web_seed_peers(s) for s in seen)


def test_shutdown_while_a_web_seed_drips_is_bounded(tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(256 * 1024, "drip.bin"), seed=203)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    with SlowDrip(spec.root, interval=1.0, limit_s=120) as server:
        add_url_list(torrent.path, [server.url])
        with running_daemon(_folder(tmp_path / "daemon"), web_seed_config()) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                status.wait(lambda s: bool(web_seed_peers(s)), 30, "the web seed connected")
            server.wait_requests(1, timeout=30)
            children = descendants(daemon.pid)
            started = time.monotonic()
            assert daemon.shutdown() == 0
            took = time.monotonic() - started
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                os.path.exists(f"/proc/{p}") for p in children
            ):
                time.sleep(0.1)
            left = [pid for pid in children if os.path.exists(f"/proc/{pid}")]
    assert left == [], "agents outlived the daemon"
    assert took < 15, f"shutdown took {took:.1f} s with a web seed mid-request"
    assert "Traceback" not in daemon.log.read_text()


def test_a_magnet_links_web_seed_delivers_once_the_metadata_is_in(
    swarm: Swarm, tmp_path: Path
) -> None:
    nginx_or_skip()
    spec = make_content(tmp_path / "seed", multi_file_layout(4 * MIB + 3, "ws"), seed=204)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    # Both about 1 MB/s: the seeder alone (the magnet's x.pe, the only source of the info
    # dictionary) would take 4 s; the web seed joins as soon as the metadata is in.
    seeder = swarm.seeder(torrent.path, spec.root, seed_mode=True, upload_limit=1_000_000)
    with Nginx(spec.root, tmp_path / "nginx", extra_config="        limit_rate 256k;\n") as nginx:
        magnet = torrent.magnet(peers=[seeder.address]) + "&ws=" + urllib.parse.quote(nginx.url)
        with running_daemon(_folder(tmp_path / "daemon"), web_seed_config()) as daemon:
            added = daemon.cli("add", magnet)
            assert added.returncode == 0, added.stderr
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                done = status.wait(lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion")
            assert compare_content(spec.root, daemon.download_dir, spec) == []
            # The torrent keeps the magnet's web seeds across a restart (complete: waiting).
            assert daemon.shutdown() == 0
            daemon.start()
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                again = status.wait(lambda s: bool(s.web_seeds), 30, "the web seed rows")
                status.wait_agents(3, 30)  # stopped while agents start, a daemon waits for them
        asked = nginx.requests()
    assert [r.url for r in again.web_seeds] == [nginx.url]
    row = _row(done, nginx.url)
    assert 0 < row.downloaded < done.downloaded, (row, done.downloaded)
    assert asked and {r.status for r in asked} == {206}


def test_the_per_torrent_cap_and_pausing(tmp_path: Path) -> None:
    nginx_or_skip()
    spec = make_content(tmp_path / "seed", multi_file_layout(3 * MIB + 1, "capped"), seed=205)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    config = web_seed_config(extra="\n[coordinator]\nmax_web_seeds_per_torrent = 1\n")
    slow = "        limit_rate 128k;\n"  # 4 connections: ~0.5 MiB/s each server
    with (
        Nginx(spec.root, tmp_path / "one", extra_config=slow) as one,
        Nginx(spec.root, tmp_path / "two", extra_config=slow) as two,
    ):
        add_url_list(torrent.path, [one.url, two.url])
        with running_daemon(_folder(tmp_path / "daemon"), config) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            hex_id = torrent.info_hash.hex
            with DaemonStatus(daemon, hex_id) as status:
                running = status.wait(
                    lambda s: s.downloaded > 0 and bool(web_seed_peers(s)), 30, "a web seed"
                )
                paused = daemon.cli("pause", hex_id)
                assert paused.returncode == 0, paused.stderr
                closed = status.wait(
                    lambda s: (
                        not web_seed_peers(s)
                        and {r.state for r in s.web_seeds} == {WebSeedUrlState.WAITING}
                    ),
                    15,
                    "the paused torrent's web seed closed",
                )
                asked = len(one.requests()) + len(two.requests())
                time.sleep(1.5)
                assert len(one.requests()) + len(two.requests()) == asked, "asked while paused"
                resumed = daemon.cli("resume", hex_id)
                assert resumed.returncode == 0, resumed.stderr
                done = status.wait(lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion")
                seen = status.seen
            assert compare_content(spec.root, daemon.download_dir, spec) == []
    assert running.progress < 1.0 and closed.progress < 1.0
    assert all(len(web_seed_peers(s)) <= 1 for s in seen), "more web seeds than the cap"
    for entry in seen:
        states = sorted(r.state for r in entry.web_seeds)
        assert states.count(WebSeedUrlState.CONNECTED) <= 1, entry.web_seeds
    # The web seeds were the only source: resumed, they finished it.
    assert done.pieces_verified == done.num_pieces


def test_a_restart_mid_download_resumes_from_the_web_seed(tmp_path: Path) -> None:
    nginx_or_skip()
    spec = make_content(tmp_path / "seed", multi_file_layout(3 * MIB + 7, "resumed"), seed=206)
    torrent = make_torrent(spec, PIECE, [], tmp_path / "t.torrent")
    slow = "        limit_rate 128k;\n"  # 4 connections: ~0.5 MiB/s
    with Nginx(spec.root, tmp_path / "nginx", extra_config=slow) as nginx:
        add_url_list(torrent.path, [nginx.url])
        with running_daemon(_folder(tmp_path / "daemon"), web_seed_config()) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            hex_id = torrent.info_hash.hex
            with DaemonStatus(daemon, hex_id) as status:
                part = status.wait(
                    lambda s: s.num_pieces // 4 <= s.pieces_verified, 30, "a quarter in"
                )
            assert daemon.shutdown() == 0
            before = sum(r.body_bytes for r in nginx.requests())
            daemon.start()
            with DaemonStatus(daemon, hex_id) as status:
                done = status.wait(lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion")
            assert compare_content(spec.root, daemon.download_dir, spec) == []
        after = sum(r.body_bytes for r in nginx.requests()) - before
    assert part.pieces_verified < part.num_pieces
    # After the restart only what was missing was asked for (runs cut at the pieces it has).
    missing = spec.total_size - part.pieces_verified * PIECE
    assert after <= missing, (after, missing)
    assert _row(done, nginx.url).downloaded >= after
