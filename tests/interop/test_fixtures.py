"""The real-peer fixtures themselves: opentracker, libtorrent peers, content, cleanup.

Everything runs on loopback. These tests guard the fixtures every later integration test
relies on: if a seeder and a leecher cannot complete a torrent here, nothing else can be
trusted.
"""

from __future__ import annotations

import json
import re
import socket
import struct
import time
import urllib.parse
from pathlib import Path
from typing import Any

import bencodepy
import pytest

from testing import (
    ContentSpec,
    LtPeer,
    LtPeerConfig,
    PeerConfigError,
    Swarm,
    SwarmError,
    TorrentFile,
    compare_content,
    listener_count,
    make_content,
    make_torrent,
    multi_file_layout,
    next_loopback_address,
    process_exists,
    single_file_layout,
    start_opentracker,
)
from torviz.shared.types import InfoHash

pytestmark = pytest.mark.interop

PIECE = 64 * 1024
UNLISTED = InfoHash(bytes(range(20)))


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> tuple[ContentSpec, TorrentFile]:
    """A ~3 MiB multi-file content (seeder data) and a trackerless torrent of it."""
    root = tmp_path_factory.mktemp("multi-seed")
    content = make_content(root, multi_file_layout(), seed=7)
    torrent = make_torrent(content, PIECE, [], root.parent / f"{root.name}.torrent")
    return content, torrent


def raw_http_announce(
    host: str, port: int, info_hash: InfoHash, *, event: str = ""
) -> dict[bytes, Any]:
    """One HTTP/1.0 announce written by hand; returns the decoded bencoded body."""
    params = {
        "info_hash": info_hash.raw,
        "peer_id": b"-TZ0000-rawannounce0",
        "port": 1,
        "uploaded": 0,
        "downloaded": 0,
        "left": 0,
        "compact": 1,
        "numwant": 50,
    }
    if event:
        params["event"] = event
    request = (
        f"GET /announce?{urllib.parse.urlencode(params)} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n"
    ).encode()
    reply = b""
    with socket.create_connection((host, port), timeout=2.0) as conn:
        conn.sendall(request)
        while len(reply) < 65536 and (chunk := conn.recv(4096)):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), head[:80]
    decoded = bencodepy.decode(body)
    assert isinstance(decoded, dict)
    return decoded


def compact_peers(reply: dict[bytes, Any]) -> set[tuple[str, int]]:
    raw = reply.get(b"peers", b"")
    assert isinstance(raw, bytes) and len(raw) % 6 == 0
    return {
        (socket.inet_ntoa(raw[i : i + 4]), int.from_bytes(raw[i + 4 : i + 6], "big"))
        for i in range(0, len(raw), 6)
    }


# --- content ---------------------------------------------------------------------------------


def test_content_is_deterministic_and_crosses_file_boundaries(tmp_path: Path) -> None:
    layout = multi_file_layout(256 * 1024 + 77)
    a = make_content(tmp_path / "a", layout, seed=1)
    b = make_content(tmp_path / "b", layout, seed=1)
    c = make_content(tmp_path / "c", layout, seed=2)
    assert a.sha1 == b.sha1 != c.sha1
    assert compare_content(tmp_path / "a", tmp_path / "b", a) == []
    assert compare_content(tmp_path / "a", tmp_path / "c", a) != []
    sizes = [f.size for f in layout.files]
    assert sum(sizes) == 256 * 1024 + 77 and sizes.count(0) == 2 and 1000 in sizes
    assert max(len(f.path.parts) for f in layout.files) >= 4  # nested directories
    # Four inner boundaries; the 1000-byte file shares one piece with both its neighbours.
    assert a.pieces_spanning_files(16 * 1024) == a.pieces_spanning_files(32 * 1024) == 3
    assert a.pieces_spanning_files(256 * 1024) == 1  # one piece holds every boundary
    one = make_content(tmp_path / "s", single_file_layout(40_000), seed=3)
    assert one.file_paths() == [tmp_path / "s" / "single.bin"]
    assert one.file_paths()[0].stat().st_size == 40_000


def test_make_torrent_tiers_and_info_hash(tmp_path: Path) -> None:
    content = make_content(tmp_path, multi_file_layout(100_000), seed=5)
    tiers = ["http://127.0.0.1:1/announce", ["udp://127.0.0.1:2", "udp://127.0.0.1:3"]]
    first = make_torrent(content, 16 * 1024, tiers, tmp_path / "one.torrent")
    again = make_torrent(content, 16 * 1024, [], tmp_path / "two.torrent")
    assert first.info_hash == again.info_hash  # trackers live outside the info dict
    meta = bencodepy.decode(first.path.read_bytes())
    assert meta[b"announce-list"] == [
        [b"http://127.0.0.1:1/announce"],
        [b"udp://127.0.0.1:2", b"udp://127.0.0.1:3"],
    ]
    info = meta[b"info"]
    assert first.num_pieces == -(-100_000 // (16 * 1024)) == len(info[b"pieces"]) // 20
    assert [f[b"length"] for f in info[b"files"]] == [f.size for f in content.layout.files]
    assert (
        first.path.read_bytes()
        == make_torrent(content, 16 * 1024, tiers, tmp_path / "x").path.read_bytes()
    )


# --- opentracker -----------------------------------------------------------------------------


def test_opentracker_http_whitelist(tmp_path: Path) -> None:
    listed = InfoHash(b"\xaa" * 20)
    with start_opentracker(tmp_path, [listed]) as tracker:
        assert tracker.http_announce_url == f"http://127.0.0.1:{tracker.port}/announce"
        assert tracker.udp_announce_url.startswith(f"udp://127.0.0.1:{tracker.port}")
        ok = raw_http_announce(tracker.host, tracker.port, listed)
        assert b"failure reason" not in ok
        assert isinstance(ok[b"interval"], int) and ok[b"interval"] > 0
        assert ("127.0.0.1", 1) in compact_peers(ok)  # it lists the announcer back to itself
        raw_http_announce(tracker.host, tracker.port, listed, event="stopped")
        refused = raw_http_announce(tracker.host, tracker.port, UNLISTED)
        assert b"not authorized" in refused[b"failure reason"]
        # Bound to the loopback address only, by exactly one process.
        assert listener_count("127.0.0.1", tracker.port) == 1
        assert listener_count("0.0.0.0", tracker.port) == 0


def test_opentracker_udp_connect(tmp_path: Path) -> None:
    with start_opentracker(tmp_path, [UNLISTED]) as tracker:
        request = struct.pack(">QII", 0x41727101980, 0, 0x5EED1234)  # BEP 15 connect
        assert len(request) == 16
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(2.0)
            udp.sendto(request, (tracker.host, tracker.port))
            reply, source = udp.recvfrom(2048)
        assert source == (tracker.host, tracker.port)
        assert len(reply) == 16
        action, transaction, _connection_id = struct.unpack(">IIQ", reply)
        assert (action, transaction) == (0, 0x5EED1234)


def test_opentracker_whitelist_reload(tmp_path: Path) -> None:
    first, second = InfoHash(b"\x01" * 20), InfoHash(b"\x02" * 20)
    with start_opentracker(tmp_path, [first]) as tracker:
        assert tracker.is_authorized(first) and not tracker.is_authorized(second)
        tracker.add_info_hash(second.hex)
        assert tracker.is_authorized(second) and tracker.is_authorized(first)
        tracker.remove_info_hash(first)
        assert not tracker.is_authorized(first) and tracker.is_authorized(second)
        assert tracker.info_hashes == (second,)
        assert (tracker.root_dir / "whitelist.txt").read_text() == f"{second.hex}\n"


# --- libtorrent peers ------------------------------------------------------------------------


def test_peer_config_json_round_trip_and_rejections(tmp_path: Path) -> None:
    config = LtPeerConfig(
        "leecher",
        tmp_path / "t.torrent",
        tmp_path,
        "127.0.0.9",
        connect_peers=("127.0.0.2:6881", "[::1]:7000"),
        settings={"max_allowed_in_request_queue": 500},
    )
    assert LtPeerConfig.from_json(config.to_json()) == config
    assert not config.waits_for_announce
    good = json.loads(config.to_json())
    broken = [
        ("[]", "not a JSON object"),
        ("{", "not JSON"),
        (json.dumps({**good, "colour": "red"}), "unknown config keys"),
        (json.dumps({**good, "role": "lurker"}), "role must be"),
        (json.dumps({**good, "listen_port": True}), "'listen_port'"),
        (json.dumps({**good, "listen_port": 70000}), "listen_port out of range"),
        (json.dumps({**good, "connect_peers": ["127.0.0.2"]}), "not host:port"),
        (json.dumps({**good, "settings": {"x": [1]}}), "must be bool, int or str"),
        ("x" * 70_000, "larger than 64 KiB"),
    ]
    for text, message in broken:
        with pytest.raises(PeerConfigError, match=re.escape(message)):
            LtPeerConfig.from_json(text)


def test_peer_reports_a_bad_setting(swarm: Swarm, multi: tuple[ContentSpec, TorrentFile]) -> None:
    content, torrent = multi
    with pytest.raises(SwarmError, match="unknown libtorrent settings") as failure:
        swarm.seeder(torrent, content.root, settings={"no_such_setting": 1}, timeout=10)
    assert failure.value.reason == "process_error"


@pytest.mark.parametrize("scheme", ["http", "udp"])
def test_seeder_to_leecher_through_opentracker(
    swarm: Swarm, tmp_path: Path, multi: tuple[ContentSpec, TorrentFile], scheme: str
) -> None:
    content, bare = multi
    tracker = swarm.tracker([bare.info_hash])
    url = tracker.http_announce_url if scheme == "http" else tracker.udp_announce_url
    torrent = make_torrent(content, PIECE, [url], tmp_path / "swarm.torrent")
    assert torrent.info_hash == bare.info_hash
    assert content.pieces_spanning_files(PIECE) >= 3

    started = time.monotonic()
    seeder = swarm.seeder(torrent, content.root)
    assert seeder.announce_result == "ok"
    leecher = swarm.leecher(torrent, tmp_path / "leech")
    assert seeder.address.host != leecher.address.host
    assert seeder.address.host.startswith("127.") and leecher.address.host.startswith("127.")

    done = leecher.wait_finished(timeout=30)
    assert done.progress == 1.0 and done.is_seeding
    assert done.total_payload_download >= content.total_size
    assert compare_content(content.root, tmp_path / "leech", content) == []
    assert any(
        e["event"] == "tracker_reply" and e["num_peers"] >= 1 for e in leecher.tracker_events()
    )
    # The tracker saw two distinct loopback IPs: the seeder's and the leecher's.
    listed = compact_peers(raw_http_announce(tracker.host, tracker.port, bare.info_hash))
    assert {seeder.address.host, leecher.address.host} <= {ip for ip, _ in listed}
    seeder_status = seeder.wait_status(lambda s: s.total_payload_upload > 0, timeout=5)
    assert seeder_status.is_seeding
    assert time.monotonic() - started < 20


def test_direct_connect_without_tracker(swarm: Swarm, tmp_path: Path) -> None:
    content = make_content(tmp_path / "seed", single_file_layout(512 * 1024 + 3), seed=11)
    torrent = make_torrent(content, 32 * 1024, [], tmp_path / "direct.torrent")
    seeder = swarm.seeder(torrent, content.root, seed_mode=True)
    assert seeder.announce_result == "none"
    leecher = swarm.leecher(torrent, tmp_path / "leech", connect_peers=[seeder.address])
    leecher.wait_finished(timeout=20)
    assert compare_content(content.root, tmp_path / "leech", content) == []


def test_seeder_with_missing_data_fails_loudly(swarm: Swarm, tmp_path: Path) -> None:
    content = make_content(tmp_path / "seed", single_file_layout(100_000), seed=12)
    torrent = make_torrent(content, 16 * 1024, [], tmp_path / "t.torrent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SwarmError) as failure:
        swarm.seeder(torrent, tmp_path / "empty", timeout=15)
    assert failure.value.reason == "process_error"
    assert "seed_data_incomplete" in str(failure.value)


# --- cleanup ---------------------------------------------------------------------------------


def test_swarm_stops_every_process_even_when_the_test_fails(
    tmp_path: Path, multi: tuple[ContentSpec, TorrentFile]
) -> None:
    content, torrent = multi
    pids: list[int] = []
    with pytest.raises(RuntimeError, match="test body failed"), Swarm(tmp_path) as swarm:
        swarm.tracker([torrent.info_hash])
        swarm.seeder(torrent, content.root, seed_mode=True)
        swarm.leecher(torrent, tmp_path / "leech", wait=False)
        pids = swarm.pids()
        assert len(swarm.trackers) == 1 and len(swarm.peers) == 2
        assert len(pids) == 4 and all(process_exists(pid) for pid in pids)
        raise RuntimeError("test body failed")
    assert pids and not [pid for pid in pids if process_exists(pid)]


def test_children_exit_when_their_stdin_closes(
    tmp_path: Path, multi: tuple[ContentSpec, TorrentFile]
) -> None:
    """What happens when the test process dies: its pipes close and the children follow."""
    content, torrent = multi
    tracker = start_opentracker(tmp_path, [])
    peer = LtPeer(
        LtPeerConfig("seeder", torrent.path, content.root, next_loopback_address(), seed_mode=True)
    )
    try:
        peer.wait_ready(15)
        pids = [*tracker.pids, peer.pid]
        for popen in (tracker.process.popen, peer.process.popen):
            assert popen.stdin is not None
            popen.stdin.close()
        # Each exits by itself with code 0; the supervisor reaps opentracker before it exits.
        assert tracker.process.popen.wait(timeout=8) == 0
        assert peer.process.popen.wait(timeout=8) == 0
        assert [p for p in pids if process_exists(p)] == []
    finally:
        tracker.stop()
        peer.stop()
