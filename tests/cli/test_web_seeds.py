"""Web seeds on the command line: ``add --web-seed``, ``download --web-seed``, ``add-web-seed``
(alias ``web-seed``), and what ``status`` and ``status --json`` show of a torrent's web seeds.

The commands run as real processes against a stand-in daemon (``fake_daemon``: a real ZeroMQ
socket answering as the test says), so every request is seen exactly and a URL refused here is
seen never to reach the daemon. The status formats are tested on constructed records.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from torviz.services.coordinator.cli.oneshot import (
    DownloadJob,
    connected_web_seeds,
    web_seeds_hint,
)
from torviz.services.coordinator.cli.status_json import report_json, torrent_json
from torviz.services.coordinator.cli.status_text import torrent_text
from torviz.services.coordinator.cli.web_seeds import (
    check_web_seeds,
    report_text,
    row_text,
)
from torviz.shared.bus import (
    MAX_WEB_SEEDS,
    AddTorrent,
    AddWebSeed,
    ControlFailed,
    GetStatus,
    Message,
    PeerSource,
    PeerStatus,
    StatusReport,
    TorrentAdded,
    TorrentState,
    WebSeedAdded,
    WebSeedReport,
    WebSeedRow,
    WebSeedState,
    WebSeedUrlState,
)
from torviz.shared.errors import WebSeedError
from torviz.shared.types import PeerAddress

from .fake_daemon import FakeDaemon, fake_daemon
from .test_info import run_cli
from .test_magnet_input import TORRENT, TORRENT_HASH, cli, nothing_asked, one_line, status
from .test_magnet_phases import watch

__all__ = ["nothing_asked"]  # a fixture, imported for the tests here

MIRROR = "http://mirror.example/pub/"
OTHER = "https://other.example:8443/files/Example?sig=abc"


# --- checking URLs before any daemon is asked --------------------------------------------------


def test_check_keeps_the_order_drops_repeats_and_strips_spaces() -> None:
    given = [f"  {MIRROR} ", OTHER, "HTTP://MIRROR.example/pub/", MIRROR]
    assert check_web_seeds(given) == (MIRROR, OTHER)
    assert check_web_seeds([]) == ()


@pytest.mark.parametrize(
    ("url", "reason", "words"),
    [
        ("ftp://mirror.example/pub/", "unsupported_scheme", "http:// or https://"),
        ("http://user:pw@mirror.example/", "user_info_in_url", "user name or password"),
        ("http://mirror.example/a\x1b[31m", "control_character", "control character"),
        ("http://mirror.example:99999/", "bad_port", "port"),
        ("mirror.example/pub/", "unsupported_scheme", "http:// or https://"),
    ],
)
def test_a_bad_url_names_itself_and_why(url: str, reason: str, words: str) -> None:
    with pytest.raises(WebSeedError) as caught:
        check_web_seeds([MIRROR, url])
    assert caught.value.reason == reason
    message = str(caught.value)
    assert words in message, message
    assert message.startswith(url.split("\x1b", maxsplit=1)[0]), message  # which of the URLs
    assert "\x1b" not in message  # escaped for the terminal


def test_more_web_seeds_than_a_torrent_keeps_are_refused() -> None:
    urls = [f"http://m{i}.example/" for i in range(MAX_WEB_SEEDS)]
    assert len(check_web_seeds(urls)) == MAX_WEB_SEEDS
    with pytest.raises(WebSeedError) as caught:
        check_web_seeds([*urls, "http://one-more.example/"])
    assert caught.value.reason == "too_many_web_seeds"


# --- add --web-seed, download --web-seed ---------------------------------------------------------


def test_add_sends_its_web_seeds_with_the_torrent(tmp_path: Path) -> None:
    source = tmp_path / "example.torrent"
    source.write_bytes(TORRENT)

    def answer(message: Message) -> Message:
        return TorrentAdded(TORRENT_HASH, "Example")

    with fake_daemon(tmp_path, answer) as daemon:
        flags = ["--web-seed", MIRROR, "--web-seed", OTHER, "--web-seed", f" {MIRROR}"]
        result = cli(daemon, "add", str(source), *flags)
    assert result.returncode == 0, result.stderr
    [request] = daemon.requests
    assert isinstance(request, AddTorrent)
    assert request.metainfo == TORRENT
    assert request.web_seeds == (MIRROR, OTHER)


def test_add_without_web_seeds_sends_none(tmp_path: Path) -> None:
    source = tmp_path / "example.torrent"
    source.write_bytes(TORRENT)
    with fake_daemon(tmp_path, lambda message: TorrentAdded(TORRENT_HASH, "Example")) as daemon:
        result = cli(daemon, "add", str(source))
    assert result.returncode == 0, result.stderr
    [request] = daemon.requests
    assert isinstance(request, AddTorrent) and request.web_seeds == ()


def test_add_with_a_bad_web_seed_is_one_line_and_asks_no_daemon(
    nothing_asked: FakeDaemon, tmp_path: Path
) -> None:
    source = tmp_path / "example.torrent"
    source.write_bytes(TORRENT)
    result = cli(nothing_asked, "add", str(source), "--web-seed", "ftp://mirror.example/")
    assert result.returncode == 1, result.stderr
    assert one_line(result.stderr) == (
        "torviz: error: ftp://mirror.example/: web seed URL must start with http:// or "
        "https://, not 'ftp'"
    )
    assert nothing_asked.requests == []


def test_download_with_a_bad_web_seed_stops_before_any_service(tmp_path: Path) -> None:
    source = tmp_path / "example.torrent"
    source.write_bytes(TORRENT)
    out = tmp_path / "dl"
    result = run_cli(
        "download", str(source), "-o", str(out), "--web-seed", "http://[::1/", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert line.startswith("torviz: error: http://[::1/: web seed URL has a bad host"), line
    assert not out.exists()  # refused before the download started


def test_the_one_shot_job_adds_its_web_seeds() -> None:
    job = DownloadJob(b"x", "t", 1, "/d", None, None, 60.0, web_seeds=(MIRROR,))
    assert job.request().web_seeds == (MIRROR,)
    assert DownloadJob(b"x", "t", 1, "/d", None, None, 60.0).request().web_seeds == ()


# --- add-web-seed ID URL -------------------------------------------------------------------------


class WebSeedDaemon:
    """Knows one torrent ("Example"), which has ``MIRROR`` already."""

    def __call__(self, message: Message) -> Message:
        if isinstance(message, GetStatus):
            assert message.prefix and TORRENT_HASH.hex.startswith(message.prefix)
            return StatusReport((status(TORRENT_HASH, TorrentState.DOWNLOADING),), ())
        assert isinstance(message, AddWebSeed)
        assert message.info_hash == TORRENT_HASH
        if message.url == "http://full.example/":
            return ControlFailed("too_many_web_seeds", "Example has 64 web seeds already")
        return WebSeedAdded(message.info_hash, message.url, message.url != MIRROR)


@pytest.mark.parametrize("command", ["add-web-seed", "web-seed"])
def test_add_web_seed_adds_it_to_the_torrent(command: str, tmp_path: Path) -> None:
    with fake_daemon(tmp_path, WebSeedDaemon()) as daemon:
        result = cli(daemon, command, TORRENT_HASH.hex[:8], f" {OTHER} ")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"added web seed {OTHER} to Example\n"
    assert daemon.of_type(AddWebSeed) == [AddWebSeed(TORRENT_HASH, OTHER)]


def test_add_web_seed_says_when_the_torrent_has_it_already(tmp_path: Path) -> None:
    with fake_daemon(tmp_path, WebSeedDaemon()) as daemon:
        result = cli(daemon, "add-web-seed", TORRENT_HASH.hex, MIRROR)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Example already has that web seed\n"


def test_add_web_seed_refused_by_the_daemon_is_its_one_line(tmp_path: Path) -> None:
    with fake_daemon(tmp_path, WebSeedDaemon()) as daemon:
        result = cli(daemon, "add-web-seed", TORRENT_HASH.hex, "http://full.example/")
    assert result.returncode == 1
    assert one_line(result.stderr) == "torviz: error: Example has 64 web seeds already"


def test_add_web_seed_with_a_bad_url_asks_no_daemon(nothing_asked: FakeDaemon) -> None:
    result = cli(nothing_asked, "add-web-seed", TORRENT_HASH.hex, "http://mirror.example/%zz")
    assert result.returncode == 1
    assert "not followed by two hex digits" in one_line(result.stderr)
    assert nothing_asked.requests == []


# --- status and status --json --------------------------------------------------------------------

BACKING_OFF = WebSeedReport(WebSeedState.BACKING_OFF, 2, 11.6, "HTTP 503 Service Unavailable", 0, 0)
SEED_PEER = PeerStatus(
    address=None,
    client="web seed",
    flags="D",
    download_rate=1024.0 * 1024,
    upload_rate=0.0,
    downloaded=12 * 1024 * 1024,
    uploaded=0,
    progress=1.0,
    source=PeerSource.WEB_SEED,
    agent="peer-1",
    host="alpha",
    url=MIRROR,
    web_seed=BACKING_OFF,
)
PEER = PeerStatus(
    PeerAddress("10.0.0.9", 6881), "lt", "D", 2048.0, 0.0, 4096, 0, 0.5, "", PeerSource.TRACKER
)
ROWS = (
    WebSeedRow(MIRROR, WebSeedUrlState.CONNECTED, "", 12 * 1024 * 1024, 0),
    WebSeedRow(
        "http://bad.example/\x1b]0;x", WebSeedUrlState.BANNED, "sent 3 bad pieces", 3 << 20, 3
    ),
    WebSeedRow("http://loop.example/", WebSeedUrlState.GIVEN_UP, "redirect loop at http://…", 0, 0),
)
TORRENT_STATUS = dataclasses.replace(
    status(TORRENT_HASH, TorrentState.DOWNLOADING, peers=1, peer_list=(PEER, SEED_PEER)),
    web_seeds=ROWS,
)


@pytest.mark.parametrize(
    ("report", "text"),
    [
        (WebSeedReport(WebSeedState.ACTIVE, 0, None, "", 0, 2), "fetching (2 requests)"),
        (WebSeedReport(WebSeedState.ACTIVE, 0, None, "old", 0, 1), "fetching (1 request)"),
        (WebSeedReport(WebSeedState.ACTIVE, 0, None, "", 0, 0), "idle"),
        (
            BACKING_OFF,
            "backing off, retry in 12 s (2 failed): HTTP 503 Service Unavailable",
        ),
        (
            WebSeedReport(WebSeedState.BACKING_OFF, 1, None, "timed out", 0, 0),
            "backing off: timed out",
        ),
        (
            WebSeedReport(WebSeedState.BACKING_OFF, 1, 0.02, "timed out", 0, 0),
            "backing off, retry in 1 s: timed out",
        ),
        (
            WebSeedReport(WebSeedState.ACTIVE, 3, None, "connection refused", 0, 1),
            "retrying (3 failed): connection refused",
        ),
        (
            WebSeedReport(WebSeedState.GIVEN_UP, 8, None, "redirect loop at http://x/", 0, 0),
            "given up: redirect loop at http://x/",
        ),
        (
            WebSeedReport(WebSeedState.ACTIVE, 0, None, "HTTP 404 Not Found", 2, 1),
            "fetching (1 request), 2 files missing",
        ),
        (
            WebSeedReport(WebSeedState.GIVEN_UP, 0, None, "\x07bell", 1, 0),
            "given up: \\x07bell, 1 file missing",
        ),
    ],
)
def test_the_retry_state_in_one_line(report: WebSeedReport, text: str) -> None:
    assert report_text(report) == text


def test_a_row_says_state_bytes_failures_and_why() -> None:
    assert [row_text(row) for row in ROWS] == [
        "connected, 12.0 MiB",
        "banned, 3.0 MiB, 3 hash failures: sent 3 bad pieces",
        "given up, 0 B: redirect loop at http://…",
    ]


def test_status_shows_a_web_seed_by_its_url_rate_bytes_and_retry_state() -> None:
    lines = torrent_text(TORRENT_STATUS).splitlines()
    [peer] = [line for line in lines if line.startswith("  peer ")]
    assert peer.startswith("  peer       10.0.0.9:6881")  # a peer as it was
    [seed] = [line for line in lines if line.startswith("  web seed ")]
    assert seed == (
        f"  web seed   {MIRROR}  down 1.0 MiB/s, 12.0 MiB  backing off, retry in 12 s "
        "(2 failed): HTTP 503 Service Unavailable  via peer-1@alpha"
    )
    assert "None" not in "\n".join(lines)
    hostile = dataclasses.replace(SEED_PEER, url="http://x.example/\x1b[2J")
    shown = torrent_text(dataclasses.replace(TORRENT_STATUS, peer_list=(hostile,)))
    assert "  web seed   http://x.example/\\x1b[2J  down" in shown and "\x1b" not in shown
    block = lines.index("  web seeds  3")
    assert lines[block + 1 : block + 4] == [
        f"    {MIRROR}  connected, 12.0 MiB",
        "    http://bad.example/\\x1b]0;x  banned, 3.0 MiB, 3 hash failures: sent 3 bad pieces",
        "    http://loop.example/  given up, 0 B: redirect loop at http://…",
    ]


def test_status_of_a_torrent_without_web_seeds_has_no_web_seed_lines() -> None:
    plain = dataclasses.replace(TORRENT_STATUS, peer_list=(PEER,), web_seeds=())
    text = torrent_text(plain)
    assert "web seed" not in text
    with_seeds = torrent_text(TORRENT_STATUS).splitlines()
    assert text.splitlines() == [line for line in with_seeds if "web seed" not in line][:-3]


def test_status_json_has_the_url_the_retry_state_and_the_rows() -> None:
    document = json.loads(json.dumps(report_json(StatusReport((TORRENT_STATUS,), ()))))
    [torrent] = document["torrents"]
    peer, seed = torrent["peer_list"]
    assert (peer["address"], peer["url"], peer["web_seed"]) == ("10.0.0.9:6881", None, None)
    assert (seed["address"], seed["url"], seed["source"]) == (None, MIRROR, "web_seed")
    assert seed["downloaded"] == 12 * 1024 * 1024
    assert seed["web_seed"] == {
        "state": "backing_off",
        "failures": 2,
        "retry_in": 11.6,
        "last_error": "HTTP 503 Service Unavailable",
        "disabled_files": 0,
        "in_flight": 0,
    }
    assert torrent["web_seeds"][1] == {
        "url": "http://bad.example/\x1b]0;x",
        "state": "banned",
        "message": "sent 3 bad pieces",
        "downloaded": 3 << 20,
        "hash_failures": 3,
    }
    assert [row["state"] for row in torrent["web_seeds"]] == ["connected", "banned", "given_up"]
    bare = torrent_json(dataclasses.replace(TORRENT_STATUS, web_seeds=()))
    assert bare["web_seeds"] == []


# --- the one-shot download's watcher -------------------------------------------------------------


def test_a_connected_web_seed_keeps_a_download_from_stalling() -> None:
    assert connected_web_seeds(TORRENT_STATUS) == 1
    ended = tuple(dataclasses.replace(r, state=WebSeedUrlState.GIVEN_UP) for r in ROWS)
    assert connected_web_seeds(dataclasses.replace(TORRENT_STATUS, web_seeds=ended)) == 0


def test_the_stall_line_says_what_the_web_seeds_reported() -> None:
    # The first row with something to say: the banned one, escaped.
    assert web_seeds_hint(TORRENT_STATUS) == (
        "; web seed http://bad.example/\\x1b]0;x: banned, 3.0 MiB, 3 hash failures: "
        "sent 3 bad pieces"
    )
    assert web_seeds_hint(dataclasses.replace(TORRENT_STATUS, web_seeds=ROWS[:1])) == ""


def test_a_download_waits_for_a_connected_web_seed_then_stalls_saying_why(tmp_path: Path) -> None:
    # No peer and no progress with a stall timeout of 1 s: while the web seed is connected
    # (about 3 s) it is no stall; once it is given up, the stall line says what it reported.
    result = watch("web_seed", tmp_path / "saved.torrent")
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "torviz: error: no peers and no progress for 1 s (the magnet link names no tracker and "
        "no peer); web seed http://127.0.0.1:9/pub/: given up, 0 B: redirect loop at "
        "http://127.0.0.1:9/pub/Example"
    ]
