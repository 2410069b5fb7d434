"""Web seeds that misbehave (issue 17), each the torrent's only source unless said otherwise,
served by tests/support/hostile_http.py on loopback; every download is bounded in time and the
peer agent's resident memory is sampled:

- 503 with ``Retry-After: 3`` for the first 4 requests (at most what torviz has in flight at
  once): the download completes, and the server's log shows no request came between a refusal
  and the 3 s it asked for (a back-off's own first wait is at most 2 s: only Retry-After
  explains 3);
- a server that sends half the body, then closes, three times: completes, each cut reply
  asked again for its second half only;
- a server that ignores Range and sends the whole 48 MiB file with 200 each time (with a
  Content-Length, or none and the body ending as the connection closes): completes, and the
  peer agent's memory stays below what holding one such body would take;
- a server that redirects in a loop: the web seed ends ``given_up`` with "redirect loop" in
  the torrent's status; a libtorrent seeder that dials in after that completes the torrent;
  the one-shot ``download`` with only that web seed ends with one line naming the loop;
- ``Retry-After: 600``: the web seed shows ``backing_off``, its wait and the 503 in status and
  in ``status``'s text, and asks nothing meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testing.content import (
    ContentSpec,
    compare_content,
    make_content,
    make_torrent,
    multi_file_layout,
    single_file_layout,
)
from testing.swarm import Swarm, free_port
from tests.interop.test_web_seed import DOWNLOAD_TIMEOUT, MIB, RSS_BOUND_KIB, _folder, _row
from tests.support.daemon import running_daemon
from tests.support.hostile_http import (
    DropHalfway,
    IgnoresRange,
    RedirectLoop,
    Retry503,
    SeenRequest,
)
from tests.support.web_seeds import (
    DaemonStatus,
    OneShot,
    add_url_list,
    download_alone,
    web_seed_config,
    web_seed_peers,
)
from torviz.shared.bus import WebSeedState, WebSeedUrlState

pytestmark = pytest.mark.interop

RETRY_AFTER_S = 3
REFUSED = 4  # [peer_agent] web_seed_connections' default: all refused even if sent at once
IN_FLIGHT_S = 0.5  # requests sent together arrive within this of each other
LARGE_FILE = 48 * MIB
AGENT_RSS_BOUND_KIB = 100 * 1024  # peer agent, whole file of 48 MiB read: 40-65 MiB measured
MAX_FAILURES = 2  # [peer_agent] web_seed_max_failures in the redirect loop test


def _assert_completed(done: OneShot, spec: ContentSpec, out: Path) -> None:
    assert done.code == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert compare_content(spec.root, out, spec) == []
    over = {pid: kib for pid, kib in done.peaks.items() if kib > RSS_BOUND_KIB}
    assert not over, f"resident memory over {RSS_BOUND_KIB} KiB: {over}"


def _range(request: SeenRequest) -> tuple[int, int]:
    assert request.range is not None and request.range.startswith("bytes="), request
    first, last = request.range.removeprefix("bytes=").split("-")
    return int(first), int(last)


def _second_half(span: tuple[int, int]) -> tuple[int, int]:
    first, last = span
    return first + (last - first + 1) // 2, last


def test_503_with_retry_after_is_waited_out(tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(2 * MIB + 99, "busy"), seed=181)
    torrent = make_torrent(spec, 32 * 1024, [], tmp_path / "t.torrent")
    with Retry503(spec.root, after=REFUSED, retry_after=str(RETRY_AFTER_S)) as server:
        add_url_list(torrent.path, [server.url])
        done = download_alone(
            torrent.path, tmp_path / "out", web_seed_config(), tmp_path, DOWNLOAD_TIMEOUT
        )
        seen = server.requests
    _assert_completed(done, spec, tmp_path / "out")
    assert len(seen) > REFUSED
    refused = seen[:REFUSED]
    for request in refused:
        # Requests in flight with a refused one may arrive just after it; any other waits.
        too_soon = [
            later for later in seen if IN_FLIGHT_S < later.at - request.at < RETRY_AFTER_S - 0.1
        ]
        assert not too_soon, f"requests {RETRY_AFTER_S} s after a 503 came sooner: {too_soon}"
    served = seen[REFUSED]
    assert served.at - refused[0].at >= RETRY_AFTER_S - 0.1, seen[: REFUSED + 1]


def test_a_server_dropping_the_connection_halfway(tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(3 * MIB + 5, "dropped"), seed=182)
    torrent = make_torrent(spec, 32 * 1024, [], tmp_path / "t.torrent")
    with DropHalfway(spec.root, times=3) as server:
        add_url_list(torrent.path, [server.url])
        done = download_alone(
            torrent.path, tmp_path / "out", web_seed_config(), tmp_path, DOWNLOAD_TIMEOUT
        )
        seen = server.requests
    _assert_completed(done, spec, tmp_path / "out")
    # Each cut reply is asked again for its missing half only (the client read the first).
    resumed = [
        later
        for index, earlier in enumerate(seen)
        for later in seen[index + 1 :]
        if later.path == earlier.path and _range(later) == _second_half(_range(earlier))
    ]
    assert len(resumed) == 3, seen


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "until-close"])
def test_a_server_ignoring_range_is_streamed_past(tmp_path: Path, length: bool) -> None:
    spec = make_content(tmp_path / "seed", single_file_layout(LARGE_FILE, "whole.bin"), seed=183)
    torrent = make_torrent(spec, 256 * 1024, [], tmp_path / "t.torrent")
    with IgnoresRange(spec.root, content_length=length) as server:
        add_url_list(torrent.path, [server.url])
        done = download_alone(
            torrent.path, tmp_path / "out", web_seed_config(), tmp_path, DOWNLOAD_TIMEOUT
        )
        seen = server.requests
    _assert_completed(done, spec, tmp_path / "out")
    assert seen and all(r.range is not None for r in seen), seen[:3]
    assert 0 < done.agent_peak_kib < AGENT_RSS_BOUND_KIB, (
        f"peer agent peak RSS {done.agent_peak_kib} KiB (bound {AGENT_RSS_BOUND_KIB} KiB)"
    )
    print(f"ignores range: peer agent peak RSS {done.agent_peak_kib} KiB, {len(seen)} requests")


def test_a_redirect_loop_is_given_up_and_a_peer_completes(swarm: Swarm, tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(2 * MIB + 1, "loop"), seed=184)
    torrent = make_torrent(spec, 32 * 1024, [], tmp_path / "t.torrent")
    port = free_port("127.0.0.1")
    config = web_seed_config(listen_port=port, max_failures=MAX_FAILURES)
    with RedirectLoop(mode="pair") as server:
        add_url_list(torrent.path, [server.url])
        with running_daemon(_folder(tmp_path / "daemon"), config) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                started = time.monotonic()
                given_up = status.wait(
                    lambda s: _row(s, server.url).state is WebSeedUrlState.GIVEN_UP,
                    DOWNLOAD_TIMEOUT,
                    "the looping web seed given up",
                )
                took = time.monotonic() - started
                assert "redirect loop" in _row(given_up, server.url).message, given_up.web_seeds
                assert given_up.progress == 0.0
                status.wait(lambda s: not web_seed_peers(s), 15, "the web seed closed")
                asked = len(server.requests)
                swarm.seeder(
                    torrent.path, spec.root, seed_mode=True, connect_peers=[f"127.0.0.1:{port}"]
                )
                done = status.wait(lambda s: s.progress == 1.0, DOWNLOAD_TIMEOUT, "completion")
            shown = daemon.cli("status", torrent.info_hash.hex[:12])
            assert compare_content(spec.root, daemon.download_dir, spec) == []
    assert _row(done, server.url).state is WebSeedUrlState.GIVEN_UP
    assert len(server.requests) == asked, "the given-up web seed was asked again"
    # Bounded: each failed request follows a handful of redirects (the client's limit, 5),
    # at most 4 requests at once, MAX_FAILURES failures in a row.
    assert asked <= MAX_FAILURES * 4 * 6, asked
    assert took < 30, f"giving up took {took:.1f} s"
    assert shown.returncode == 0, shown.stderr
    assert "redirect loop" in shown.stdout, shown.stdout


def test_a_download_whose_only_web_seed_loops_ends_with_one_line(tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(1 * MIB, "alone"), seed=185)
    torrent = make_torrent(spec, 32 * 1024, [], tmp_path / "t.torrent")
    config = web_seed_config(max_failures=MAX_FAILURES)
    with RedirectLoop() as server:
        add_url_list(torrent.path, [server.url])
        started = time.monotonic()
        done = download_alone(
            torrent.path, tmp_path / "out", config, tmp_path, 60, "--stall-timeout", "3"
        )
        took = time.monotonic() - started
    assert done.code == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # stderr holds the services' log lines too (--log-level INFO): the user's line is the one
    # line that is not a log line.
    [line] = [text for text in done.stderr.splitlines() if text.startswith("torviz: ")]
    assert line.startswith("torviz: error: "), line
    assert "redirect loop" in line, line
    assert took < 40, f"the download took {took:.1f} s to give up"


def test_a_long_retry_after_shows_in_status(tmp_path: Path) -> None:
    spec = make_content(tmp_path / "seed", multi_file_layout(MIB + 5, "later"), seed=186)
    torrent = make_torrent(spec, 32 * 1024, [], tmp_path / "t.torrent")
    with Retry503(spec.root, after=1000, retry_after="600") as server:
        add_url_list(torrent.path, [server.url])
        with running_daemon(_folder(tmp_path / "daemon"), web_seed_config()) as daemon:
            added = daemon.cli("add", str(torrent.path))
            assert added.returncode == 0, added.stderr
            with DaemonStatus(daemon, torrent.info_hash.hex) as status:
                waiting = status.wait(
                    lambda s: any(
                        p.web_seed is not None and p.web_seed.state is WebSeedState.BACKING_OFF
                        for p in web_seed_peers(s)
                    ),
                    30,
                    "the web seed backing off",
                )
            shown = daemon.cli("status", torrent.info_hash.hex[:12])
            asked = len(server.requests)
            time.sleep(1.0)
            assert len(server.requests) == asked, "asked again within the Retry-After"
    [peer] = web_seed_peers(waiting)
    assert peer.web_seed is not None
    assert peer.web_seed.retry_in is not None and 590 < peer.web_seed.retry_in <= 600, peer
    assert "503" in peer.web_seed.last_error, peer.web_seed
    assert _row(waiting, server.url).state is WebSeedUrlState.CONNECTED
    assert shown.returncode == 0, shown.stderr
    assert "retry in" in shown.stdout and "503" in shown.stdout, shown.stdout
    assert 0 < asked <= REFUSED
