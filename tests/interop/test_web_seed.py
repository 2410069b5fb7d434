"""Web seeds (BEP 19, issue 17) end to end: nginx on loopback serves a torrent's files, torviz
downloads them with the one-shot ``download`` or the daemon, alone or beside a libtorrent
seeder, and the content is compared byte for byte.

- a multi-file torrent (a name with a space and a non-ASCII letter: the URL is
  percent-encoded) whose only source is the nginx web seed: no tracker, no peer;
- ``create --web-seed URL`` (the file's own URL), then ``download`` of that torrent from it;
- a web seed (nginx's ``limit_rate``) beside a libtorrent seeder (``upload_limit``): status
  shows bytes from each, in their ``peer_list`` rows and the torrent's ``web_seeds`` row;
- a web seed serving one flipped byte in every other piece (``CorruptRanges``): it ends
  ``banned`` for the torrent (one event line), and the torrent completes from a libtorrent
  seeder that dials in only then (so the order of events does not depend on rates) from the
  web server's own address: a web seed's ban is no host ban;
- ``download --web-seed URL`` and ``add-web-seed ID URL`` for a torrent that lists no source.

The hostile servers of tests/support/hostile_http.py are in test_web_seed_hostile.py. Every
wait is bounded; every process is stopped by its fixture or ``with`` block.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testing.content import (
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
    single_file_layout,
)
from testing.lt_peer import LtPeerConfig
from testing.swarm import Swarm, free_port
from tests.support.daemon import COORDINATOR, running_daemon
from tests.support.hostile_http import CorruptRanges
from tests.support.nginx import Nginx, nginx_or_skip
from tests.support.web_seeds import (
    DaemonStatus,
    add_url_list,
    download_alone,
    web_seed_config,
    web_seed_peers,
)
from torviz.shared.bus import (
    PeerSource,
    TorrentState,
    TorrentStatus,
    WebSeedRow,
    WebSeedUrlState,
)

pytestmark = pytest.mark.interop

MIB = 1024 * 1024
DOWNLOAD_TIMEOUT = 90.0
RSS_BOUND_KIB = 160 * 1024  # any process of the download; about 40-65 MiB measured


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _row(status: TorrentStatus, url: str) -> WebSeedRow:
    rows = [row for row in status.web_seeds if row.url == url]
    assert len(rows) == 1, f"web seed rows for {url}: {status.web_seeds}"
    return rows[0]


def test_multi_file_torrent_from_an_nginx_web_seed_alone(tmp_path: Path) -> None:
    nginx_or_skip()
    layout = multi_file_layout(3 * MIB + 12_345, name="web seed \u00fc")
    spec = make_content(tmp_path / "seed", layout, seed=171)
    assert spec.pieces_spanning_files(64 * 1024) > 0
    torrent = make_torrent(spec, 64 * 1024, [], tmp_path / "t.torrent")
    with Nginx(spec.root, tmp_path / "nginx") as nginx:
        add_url_list(torrent.path, [nginx.url])
        done = download_alone(
            torrent.path, tmp_path / "out", web_seed_config(), tmp_path, DOWNLOAD_TIMEOUT
        )
        served = nginx.requests()
    assert done.code == 0, done.stderr[-3000:]
    assert "every piece verified" in done.stdout
    assert "Traceback" not in done.stderr
    assert compare_content(spec.root, tmp_path / "out", spec) == []
    # BEP 19: the URL ends in "/", so the torrent's name and each file's path follow it,
    # percent-encoded; every request is a Range request nginx answered 206.
    assert served, "nginx was never asked"
    assert all(r.uri.startswith("/web%20seed%20%C3%BC/") for r in served), served[:3]
    assert {r.status for r in served} == {206}, served
    assert all(r.range is not None and r.range.startswith("bytes=") for r in served)
    assert any(r.connection_requests > 1 for r in served), "no connection was kept alive"
    over = {pid: kib for pid, kib in done.peaks.items() if kib > RSS_BOUND_KIB}
    assert not over, f"resident memory over {RSS_BOUND_KIB} KiB: {over}"


def test_create_with_a_web_seed_then_download_from_it_alone(tmp_path: Path) -> None:
    nginx_or_skip()
    spec = make_content(tmp_path / "seed", single_file_layout(2 * MIB + 333, "made.bin"), seed=172)
    with Nginx(spec.root, tmp_path / "nginx") as nginx:
        url = nginx.url + "made.bin"  # a single file's own URL (BEP 19: nothing appended)
        torrent = tmp_path / "made.torrent"
        created = subprocess.run(
            [
                *COORDINATOR,
                "create",
                str(spec.root / "made.bin"),
                "-o",
                str(torrent),
                # create wants a tracker: one where nothing listens, so the web seed is the
                # only source.
                "-t",
                "http://127.0.0.1:9/announce",
                "--web-seed",
                url,
                "--piece-size",
                "32K",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert created.returncode == 0, created.stderr
        done = download_alone(
            torrent, tmp_path / "out", web_seed_config(), tmp_path, DOWNLOAD_TIMEOUT
        )
        served = nginx.requests()
    assert done.code == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert compare_content(spec.root, tmp_path / "out", spec) == []
    assert served and {r.uri for r in served} == {"/made.bin"}, served[:3]


def test_a_web_seed_and_a_libtorrent_seeder_both_deliver(swarm: Swarm, tmp_path: Path) -> None:
    nginx_or_skip()
    spec = make_content(tmp_path / "seed", multi_file_layout(6 * MIB + 777, "both"), seed=173)
    torrent = make_torrent(spec, 64 * 1024, [], tmp_path / "t.torrent")
    port = free_port("127.0.0.1")
    # nginx's limit_rate is per connection: the web seed's 4 connections make ~1 MiB/s, as fast
    # as the seeder's upload limit; neither can finish alone before the other delivers.
    with Nginx(spec.root, tmp_path / "nginx", extra_config="        limit_rate 256k;\n") as nginx:
        add_url_list(torrent.path, [nginx.url])
        with running_daemon(
            _folder(tmp_path / "daemon"), web_seed_config(listen_port=port)
        ) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            seeder = swarm.seeder(
                torrent.path,
                spec.root,
                seed_mode=True,
                upload_limit=1_000_000,
                connect_peers=[f"127.0.0.1:{port}"],
            )
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                done = status.wait(lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion")
                # Complete: its web seeds are closed and wait (nothing left to fetch).
                closed = status.wait(
                    lambda s: (
                        not web_seed_peers(s)
                        and _row(s, nginx.url).state is WebSeedUrlState.WAITING
                    ),
                    15,
                    "the web seed closed once the torrent completed",
                )
                seen = status.seen
            assert compare_content(spec.root, daemon.download_dir, spec) == []

    # Per-peer status during the download: the web seed's row (by URL) and the libtorrent
    # peer's (by address) each showed bytes received.
    from_web_seed = [
        p.downloaded
        for s in seen
        for p in web_seed_peers(s)
        if p.url == nginx.url and p.address is None and p.web_seed is not None
    ]
    from_seeder = [
        p.downloaded
        for s in seen
        for p in s.peer_list
        if p.source is not PeerSource.WEB_SEED
        and p.address is not None
        and p.address.host == seeder.address.host
    ]
    assert max(from_web_seed, default=0) > 0, "no status showed bytes from the web seed"
    assert max(from_seeder, default=0) > 0, "no status showed bytes from the libtorrent seeder"
    # And the torrent's web seed row keeps the count after the session closed.
    row = _row(closed, nginx.url)
    assert 0 < row.downloaded < done.downloaded, (row, done.downloaded)
    assert row.hash_failures == 0
    # Web seeds are not peers in the torrent's counts.
    assert all(s.peers == len(s.peer_list) - len(web_seed_peers(s)) >= s.seeds for s in seen)


def test_a_web_seed_serving_corrupt_ranges_is_banned(swarm: Swarm, tmp_path: Path) -> None:
    piece = 64 * 1024
    spec = make_content(tmp_path / "seed", single_file_layout(4 * MIB, "bad.bin"), seed=174)
    torrent = make_torrent(spec, piece, [], tmp_path / "t.torrent")
    # One flipped byte in every other piece: the web seed's first run holds several of them.
    bad = [(index * piece + 100, index * piece + 101) for index in range(0, torrent.num_pieces, 2)]
    port = free_port("127.0.0.1")
    # The web server and the honest seeder share one address: banning the web seed must not
    # ban its host (a host ban would refuse the seeder, and the torrent would never complete).
    host = swarm.next_address()
    with CorruptRanges(spec.root, bad=bad, host=host) as server:
        add_url_list(torrent.path, [server.url])
        with running_daemon(
            _folder(tmp_path / "daemon"), web_seed_config(listen_port=port)
        ) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                banned = status.wait(
                    lambda s: _row(s, server.url).state is WebSeedUrlState.BANNED,
                    DOWNLOAD_TIMEOUT,
                    "the corrupt web seed banned",
                )
                assert banned.progress < 1.0, "the torrent completed before any peer came"
                status.wait(lambda s: not web_seed_peers(s), 15, "the banned web seed closed")
                asked = len(server.requests)
                gone = len(status.seen)
                # Only now does an honest seeder come: what is left comes from it.
                seeder = LtPeerConfig(
                    role="seeder",
                    torrent=torrent.path,
                    save_path=spec.root,
                    listen_host=host,
                    seed_mode=True,
                    connect_peers=(f"127.0.0.1:{port}",),
                )
                swarm.peer(seeder)
                done = status.wait(lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion")
                after = status.seen[gone:]
                events = [e.text for e in status.events if server.url in e.text]
            assert compare_content(spec.root, daemon.download_dir, spec) == []
    row = _row(done, server.url)
    assert row.state is WebSeedUrlState.BANNED
    assert row.hash_failures >= 3, row
    assert "banned" in row.message, row
    # The ban is one line of the daemon's event log (a transition, not each bad piece).
    assert len([text for text in events if "bann" in text]) == 1, events
    # Banned for good: no web seed session after the ban, no request after it either.
    assert not any(web_seed_peers(s) for s in after), "the banned web seed came back"
    assert len(server.requests) == asked


def test_web_seeds_given_on_the_command_line(tmp_path: Path) -> None:
    """``download --web-seed URL`` and ``add-web-seed ID URL`` to a running torrent: a torrent
    that lists no source at all completes from the URL given."""
    nginx_or_skip()
    spec = make_content(tmp_path / "seed", multi_file_layout(MIB + 77, "given"), seed=175)
    torrent = make_torrent(spec, 32 * 1024, [], tmp_path / "t.torrent")
    with Nginx(spec.root, tmp_path / "nginx") as nginx:
        one_shot = _folder(tmp_path / "one-shot")
        done = download_alone(
            torrent.path,
            one_shot / "out",
            web_seed_config(),
            one_shot,
            DOWNLOAD_TIMEOUT,
            "--web-seed",
            nginx.url,
        )
        assert done.code == 0, done.stderr[-3000:]
        assert compare_content(spec.root, one_shot / "out", spec) == []
        with running_daemon(_folder(tmp_path / "daemon"), web_seed_config()) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            hex_id = torrent.info_hash.hex
            with DaemonStatus(daemon, hex_id) as status:
                before = status.wait(lambda s: s.state is TorrentState.DOWNLOADING, 30, "open")
                assert before.web_seeds == () and before.pieces_verified == 0
                given = daemon.cli("add-web-seed", hex_id[:10], nginx.url)
                assert given.returncode == 0, given.stderr
                assert nginx.url in given.stdout, given.stdout
                done_daemon = status.wait(
                    lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion"
                )
            assert compare_content(spec.root, daemon.download_dir, spec) == []
    assert _row(done_daemon, nginx.url).downloaded == done_daemon.total_length
