"""Web seeds in the peer agent process: a real nginx, a fake coordinator and storage agent.

The agent runs as its own process (``AgentProcess``); the test plays the coordinator and the
storage agent on real ZeroMQ sockets (``Counterparts``). nginx serves a multi-file torrent's
files (pieces cross file boundaries; two files are empty) from a temporary folder, as a web
seed is served in the wild; the hostile case is ``RedirectLoop`` (tests/support/hostile_http.py).
Every wait is bounded; nginx, the servers and the agent are stopped by their fixtures.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from testing import make_content, make_torrent
from testing.content import multi_file_layout
from testing.peer_agent import AgentProcess, Counterparts
from tests.support.hostile_http import RedirectLoop
from tests.support.nginx import Nginx, nginx_or_skip
from torviz.services.peer_agent.core.deliveries import WINDOW
from torviz.shared.bus import (
    AssignPieces,
    AttachMagnet,
    AttachTorrent,
    ConnectPeer,
    ConnectWebSeed,
    DetachTorrent,
    DisconnectPeer,
    DisconnectReason,
    PeerConnectFailed,
    PeerDisconnected,
    PieceDownloaded,
    PiecesReleased,
    SetChoke,
    Shutdown,
    TransferStats,
    WebSeedConnected,
    WebSeedState,
    WorkWanted,
)
from torviz.shared.metainfo import Metainfo, parse_metainfo
from torviz.shared.types import InfoHash, PeerAddress

from .conftest import OUR_PEER_ID, attach_message, attached

PIECE = 16 * 1024
SIZE = 700 * 1024 + 777  # 44 pieces, the last one short: more than a storage link's window


@dataclass(frozen=True)
class Served:
    meta: Metainfo
    content: bytes  # the torrent's bytes in order
    url: str  # the web seed: nginx's folder URL

    @property
    def info_hash(self) -> InfoHash:
        return self.meta.info_hash

    @property
    def num_pieces(self) -> int:
        return self.meta.info.num_pieces

    def piece(self, piece: int) -> bytes:
        return self.content[piece * PIECE : (piece + 1) * PIECE]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    nginx_or_skip()
    root = tmp_path_factory.mktemp("web-seeds")
    spec = make_content(root / "files", multi_file_layout(SIZE, name="multi"), seed=19)
    torrent = make_torrent(spec, PIECE, [], root / "multi.torrent")
    meta = parse_metainfo(torrent.path.read_bytes())
    content = b"".join((root / "files" / Path(*f.path)).read_bytes() for f in meta.info.files)
    assert len(meta.info.files) > 3 and len(content) == SIZE
    with Nginx(root / "files", root / "nginx") as nginx:
        yield Served(meta, content, nginx.url)


def attach(counterparts: Counterparts, served: Served) -> AttachTorrent:
    message = replace(
        attach_message(counterparts, served.info_hash, PIECE, SIZE), info=served.meta.raw_info
    )
    attached(counterparts, message)
    return message


def connect(counterparts: Counterparts, info_hash: InfoHash, url: str) -> str:
    """``ConnectWebSeed``; returns the key of its ``WebSeedConnected``."""
    counterparts.send(ConnectWebSeed(info_hash, url))
    connected = counterparts.expect(WebSeedConnected, lambda m: m.url == url)
    assert connected.info_hash == info_hash
    return connected.peer


def test_web_seed_fetches_assigned_pieces_into_storage(
    counterparts: Counterparts, start_agent, served: Served
) -> None:
    start_agent()
    attach(counterparts, served)
    key = connect(counterparts, served.info_hash, served.url)
    want = counterparts.expect(WorkWanted, lambda m: m.peer == key)
    assert want.info_hash == served.info_hash and want.count >= 1
    counterparts.send(SetChoke(served.info_hash, key, False))  # means nothing to a web seed
    counterparts.send(AssignPieces(served.info_hash, key, tuple(range(served.num_pieces))))

    counterparts.wait_until(
        lambda: len(counterparts.pieces) == served.num_pieces, 15.0, "every piece stored"
    )
    assert sorted(p.piece for p in counterparts.pieces) == list(range(served.num_pieces))
    for stored in counterparts.pieces:
        assert stored.contributors == (key,)
        assert stored.data == served.piece(stored.piece), f"piece {stored.piece} differs"
    for _ in range(served.num_pieces):
        downloaded = counterparts.expect(PieceDownloaded, lambda m: m.peer == key)
        assert downloaded.info_hash == served.info_hash

    stats = counterparts.expect(
        TransferStats, lambda m: any(r.peer == key and r.downloaded == SIZE for r in m.peers)
    )
    row = next(r for r in stats.peers if r.peer == key)
    assert row.web_seed is not None and row.web_seed.state == WebSeedState.ACTIVE
    assert (row.uploaded, row.upload_rate, row.pieces) == (0, 0.0, served.num_pieces)
    assert row.am_interested and not row.peer_choking and row.am_choking
    assert row.web_seed.failures == 0 and row.web_seed.last_error == ""

    counterparts.pump(0.1)
    counterparts.inbox.clear()  # the last row is sent as it closes, not a second later
    counterparts.send(DisconnectPeer(served.info_hash, key, DisconnectReason.BOTH_SEEDS))
    gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == key)
    assert gone.reason == DisconnectReason.BOTH_SEEDS
    last = [m for m in counterparts.inbox if isinstance(m, TransferStats)]
    assert any(r.peer == key and r.downloaded == SIZE for m in last for r in m.peers), last
    # The key is gone: a late command reaches nothing and nothing more is said of it (what
    # came before its PeerDisconnected is all in the inbox already: one socket, in order).
    counterparts.inbox.clear()
    counterparts.send(AssignPieces(served.info_hash, key, (0,)))
    counterparts.send(DisconnectPeer(served.info_hash, key, DisconnectReason.STOPPED))
    time.sleep(1.5)
    counterparts.pump(0.1)
    later = [m for m in counterparts.inbox if getattr(m, "peer", None) == key]
    rows = [r for m in counterparts.inbox if isinstance(m, TransferStats) for r in m.peers]
    assert later == [] and key not in {r.peer for r in rows}, (later, rows)


def test_detach_and_shutdown_close_web_seeds(
    counterparts: Counterparts, start_agent, served: Served
) -> None:
    agent = start_agent()
    attach(counterparts, served)
    first = connect(counterparts, served.info_hash, served.url)
    counterparts.expect(WorkWanted, lambda m: m.peer == first)
    counterparts.send(AssignPieces(served.info_hash, first, (0, 1)))
    counterparts.send(DetachTorrent(served.info_hash))
    gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == first)
    assert gone.reason == DisconnectReason.TORRENT_DETACHED

    attach(counterparts, served)
    second = connect(counterparts, served.info_hash, served.url)
    assert second != first
    counterparts.expect(WorkWanted, lambda m: m.peer == second)
    counterparts.send(Shutdown("test over"))
    gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == second)
    assert gone.reason == DisconnectReason.SHUTDOWN
    assert agent.wait(10) == 0


def test_a_web_seed_that_cannot_run_is_connected_then_disconnected(
    counterparts: Counterparts, start_agent, served: Served
) -> None:
    start_agent()
    unknown = InfoHash(bytes(20))
    key = connect(counterparts, unknown, served.url)
    gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == key)
    assert gone.reason == DisconnectReason.UNKNOWN_TORRENT and gone.info_hash == unknown

    attach(counterparts, served)
    keys = {key}
    for url, words in (
        ("ftp://mirror.example/pub/", "http:// or https://"),
        ("http://user:secret@127.0.0.1/x/", ""),
        ("http://127.0.0.1:99999/x/", "port"),
    ):
        key = connect(counterparts, served.info_hash, url)
        gone = counterparts.expect(PeerDisconnected)
        assert gone.peer == key
        assert gone.reason == DisconnectReason.WEB_SEED_REFUSED, (url, gone)
        assert words in gone.message and "\n" not in gone.message, gone.message
        keys.add(key)

    magnet = InfoHash(bytes(range(20)))
    counterparts.send(AttachMagnet(magnet, OUR_PEER_ID))
    key = connect(counterparts, magnet, served.url)
    gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == key)
    assert gone.reason == DisconnectReason.WEB_SEED_REFUSED
    assert gone.message == "the torrent's metadata is not known yet"
    keys.add(key)

    # An attach without the info dictionary: no file list, so no web seed.
    other = InfoHash(bytes(range(1, 21)))
    attached(counterparts, attach_message(counterparts, other, PIECE, SIZE))
    key = connect(counterparts, other, served.url)
    gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == key)
    assert gone.reason == DisconnectReason.WEB_SEED_REFUSED and "file list" in gone.message
    keys.add(key)
    assert len(keys) == 6  # never a key twice
    assert not any(isinstance(m, WorkWanted) for m in counterparts.inbox)


def test_a_redirect_loop_gives_the_web_seed_up_and_releases_its_pieces(
    counterparts: Counterparts, start_agent, served: Served
) -> None:
    start_agent(web_seed_max_failures=2)
    attach(counterparts, served)
    with RedirectLoop(mode="pair") as server:
        key = connect(counterparts, served.info_hash, server.url)
        counterparts.expect(WorkWanted, lambda m: m.peer == key)
        counterparts.send(AssignPieces(served.info_hash, key, (0, 1, 2)))
        gone = counterparts.expect(PeerDisconnected, lambda m: m.peer == key, timeout=15.0)
    assert gone.reason == DisconnectReason.WEB_SEED_GIVEN_UP
    assert "redirect loop" in gone.message, gone.message
    released = {
        p for m in counterparts.inbox if isinstance(m, PiecesReleased) and m.peer == key
        for p in m.pieces
    }  # fmt: skip
    assert released == {0, 1, 2}
    assert counterparts.pieces == []
    rows = [r for m in counterparts.inbox if isinstance(m, TransferStats) for r in m.peers]
    last = [r for r in rows if r.peer == key][-1]
    assert last.web_seed is not None and last.web_seed.state == WebSeedState.GIVEN_UP
    assert "redirect loop" in last.web_seed.last_error


def test_a_busy_storage_link_holds_the_web_seeds_work_wanted_back(
    counterparts: Counterparts, start_agent, served: Served
) -> None:
    """While the storage agent answers nothing, the web seed asks for no more work; once it
    answers, the held ``WorkWanted`` goes out."""
    counterparts.ack_pieces = False
    start_agent()
    attach(counterparts, served)
    key = connect(counterparts, served.info_hash, served.url)
    counterparts.expect(WorkWanted, lambda m: m.peer == key)
    first = tuple(range(WINDOW + 8))
    counterparts.send(AssignPieces(served.info_hash, key, first))
    counterparts.expect(WorkWanted, lambda m: m.peer == key)  # asked at once: room then

    def stored() -> set[int]:
        return {p.piece for p in counterparts.pieces}

    counterparts.wait_until(lambda: stored() >= set(first), 15.0, "the first pieces stored")
    rest = tuple(range(len(first), served.num_pieces))
    counterparts.send(AssignPieces(served.info_hash, key, rest))
    counterparts.wait_until(lambda: stored() >= set(rest), 15.0, "the other pieces stored")
    time.sleep(1.5)  # the stats loop and the storage ticker both looked meanwhile
    counterparts.pump(0.1)
    assert not [m for m in counterparts.inbox if isinstance(m, WorkWanted)], "asked while busy"

    for piece in list(counterparts.pieces):
        counterparts.answer_piece(piece)
    want = counterparts.expect(WorkWanted, lambda m: m.peer == key, timeout=5.0)
    assert want.info_hash == served.info_hash and want.count >= 1


def test_web_seeds_take_no_connection_slot(
    counterparts: Counterparts, start_agent, served: Served
) -> None:
    start_agent("--max-connections", "1")
    attach(counterparts, served)
    keys = [connect(counterparts, served.info_hash, served.url + f"?n={n}") for n in range(2)]
    for key in keys:
        counterparts.expect(WorkWanted, lambda m, k=key: m.peer == k)  # type: ignore[misc]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = PeerAddress("127.0.0.1", probe.getsockname()[1])
    counterparts.send(ConnectPeer(served.info_hash, closed))
    failed = counterparts.expect(PeerConnectFailed, lambda m: m.address == closed)
    assert failed.reason == DisconnectReason.CONNECTION_REFUSED  # dialled: a slot was free
    assert not any(isinstance(m, PeerDisconnected) for m in counterparts.inbox)


def test_a_ca_file_that_is_no_pem_stops_the_agent_with_one_line(short_dir: Path) -> None:
    bad = short_dir / "ca.pem"
    bad.write_text("not a certificate\n")
    agent = AgentProcess("ipc:///nowhere/bus", short_dir, settings={"web_seed_ca_file": str(bad)})
    try:
        assert agent.wait(timeout=10) == 2
    finally:
        agent.stop()
    lines = agent.stderr().strip().splitlines()
    assert len(lines) == 1, lines
    assert str(bad) in lines[0] and "CA certificates" in lines[0], lines
