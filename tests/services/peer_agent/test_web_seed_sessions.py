"""``WebSeeds`` in this process (plain threads): routing rules and the bounded close.

A real HTTP server on loopback (``FileServer``, tests/support/hostile_http.py) serves a
multi-file torrent; the coordinator link is a list and the storage link a recording sink, so
the tests can see exactly what goes out and block the driver where a test needs it stuck.
Every wait is bounded; every session is closed in ``finally``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TypeVar

import pytest

from testing import make_content, make_torrent
from testing.content import multi_file_layout
from tests.support.hostile_http import FileServer
from torviz.services.peer_agent.core.torrents import Torrent
from torviz.services.peer_agent.web_seeds import WebSeeds
from torviz.shared import bus
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import DisconnectReason
from torviz.shared.config import PeerAgentConfig
from torviz.shared.geometry import TorrentGeometry
from torviz.shared.metainfo import Metainfo, parse_metainfo
from torviz.shared.types import InfoHash, PeerId

PIECE = 16 * 1024
SIZE = 200 * 1024 + 333
WAIT_S = 10.0
M = TypeVar("M", bound=bus.Message)


@dataclass
class Outbox:
    """The coordinator link: what was sent, in order; ``hold`` blocks drivers' sends."""

    messages: list[bus.Message] = field(default_factory=list)
    hold: threading.Event | None = None
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, message: bus.Message) -> None:
        hold = self.hold
        if hold is not None and threading.current_thread().name.endswith("-driver"):
            hold.wait(WAIT_S)
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def of(self, kind: type[M], key: str) -> list[M]:
        with self.cond:
            return [
                m for m in self.messages if isinstance(m, kind) and getattr(m, "peer", "") == key
            ]

    def wait(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while not done():
                left = deadline - time.monotonic()
                assert left > 0, f"no {what} within {WAIT_S} s: {self.messages}"
                self.cond.wait(left)


@dataclass
class Sink:
    pieces: dict[int, bytes] = field(default_factory=dict)

    def store(self, message: bus.StorePiece, data: bytearray) -> None:
        self.pieces[message.piece] = bytes(data)

    def busy(self) -> bool:
        return False


@dataclass(frozen=True)
class Setup:
    meta: Metainfo
    url: str
    torrent: Torrent
    content: bytes

    def piece(self, piece: int) -> bytes:
        return self.content[piece * PIECE : (piece + 1) * PIECE]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("web-seed-sessions")
    spec = make_content(root / "files", multi_file_layout(SIZE, name="multi"), seed=23)
    meta = parse_metainfo(make_torrent(spec, PIECE, [], root / "t.torrent").path.read_bytes())
    info = meta.info
    torrent = Torrent(
        info_hash=meta.info_hash,
        geometry=TorrentGeometry(PIECE, SIZE, (SIZE,)),  # as the agent's registry has it
        peer_id=PeerId(b"-TV0100-" + b"s" * 12),
        have=Bitfield(info.num_pieces),
        private=False,
        storage_endpoint="ipc:///nowhere",
        info=meta.raw_info,
    )
    content = b"".join((root / "files").joinpath(*f.path).read_bytes() for f in info.files)
    with FileServer(root / "files") as server:
        yield Setup(meta, server.url, torrent, content)


@pytest.fixture
def outbox() -> Outbox:
    return Outbox()


@pytest.fixture
def seeds(outbox: Outbox) -> Iterator[WebSeeds]:
    counter = iter(range(1, 1000))
    web_seeds = WebSeeds(PeerAgentConfig(), new_key=lambda: f"t/{next(counter)}", send=outbox)
    try:
        yield web_seeds
    finally:
        if outbox.hold is not None:
            outbox.hold.set()
        web_seeds.close()


def test_commands_reach_only_the_web_seed_of_their_key_and_torrent(
    setup: Setup, seeds: WebSeeds, outbox: Outbox
) -> None:
    sink = Sink()
    info_hash = setup.meta.info_hash
    key = seeds.connect(bus.ConnectWebSeed(info_hash, setup.url), setup.torrent, sink)
    outbox.wait(lambda: bool(outbox.of(bus.WorkWanted, key)), "WorkWanted")
    other = InfoHash(bytes(20))

    assert not seeds.command(bus.AssignPieces(info_hash, "t/999", (0,)))  # a connection's
    assert seeds.command(bus.AssignPieces(other, key, (0, 1)))  # its key, another torrent
    assert seeds.command(bus.SetChoke(info_hash, key, True))  # nothing to a web seed
    time.sleep(0.5)
    assert sink.pieces == {} and seeds.is_web_seed(key)

    assert seeds.command(bus.AssignPieces(info_hash, key, (2, 3)))
    outbox.wait(lambda: len(outbox.of(bus.PieceDownloaded, key)) == 2, "two pieces")
    assert set(sink.pieces) == {2, 3}
    assert sink.pieces[2] == setup.piece(2) and sink.pieces[3] == setup.piece(3)

    assert seeds.command(bus.DisconnectPeer(info_hash, key, DisconnectReason.STOPPED))
    outbox.wait(lambda: bool(outbox.of(bus.PeerDisconnected, key)), "PeerDisconnected")
    assert not seeds.is_web_seed(key) and len(seeds) == 0
    assert not seeds.command(bus.AssignPieces(info_hash, key, (4,)))  # ended: a stranger now


def test_close_all_reports_a_session_whose_driver_is_stuck_once_and_in_time(
    setup: Setup, seeds: WebSeeds, outbox: Outbox
) -> None:
    """A driver blocked in its event handler cannot report its end: ``close_all`` does, within
    its bound, and the driver's own ``Closed`` later is dropped (one ``PeerDisconnected``)."""
    outbox.hold = threading.Event()
    info_hash = setup.meta.info_hash
    key = seeds.connect(bus.ConnectWebSeed(info_hash, setup.url), setup.torrent, Sink())
    time.sleep(0.2)  # the driver is now blocked sending its first WorkWanted

    started = time.monotonic()
    seeds.close_all(DisconnectReason.SHUTDOWN, "stopping", timeout=0.5)
    assert time.monotonic() - started < 3.0
    gone = outbox.of(bus.PeerDisconnected, key)
    assert len(gone) == 1 and gone[0].reason == DisconnectReason.SHUTDOWN
    assert len(seeds) == 0

    outbox.hold.set()  # the driver goes on: its WorkWanted, then its Closed, dropped
    time.sleep(1.0)
    assert len(outbox.of(bus.PeerDisconnected, key)) == 1


def test_the_torrents_geometry_must_match_its_info_dictionary(
    setup: Setup, seeds: WebSeeds, outbox: Outbox
) -> None:
    other = TorrentGeometry(PIECE * 2, SIZE, (SIZE,))
    torrent = replace(setup.torrent, geometry=other)
    key = seeds.connect(bus.ConnectWebSeed(setup.meta.info_hash, setup.url), torrent, Sink())
    (gone,) = outbox.of(bus.PeerDisconnected, key)
    assert gone.reason == DisconnectReason.WEB_SEED_REFUSED
    assert "does not match" in gone.message
