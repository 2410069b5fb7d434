"""The agent's pure parts: torrent phases, the data-endpoint admission checks, the piece task."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from torviz.services.storage_agent.core.errors import (
    StorageError,
    storage_error_from_os,
    storage_failed,
)
from torviz.services.storage_agent.core.torrents import (
    MAX_WAITING,
    Phase,
    Refusal,
    Torrent,
    TorrentTable,
)
from torviz.services.storage_agent.memory import MemoryStorage
from torviz.services.storage_agent.pieces import hash_and_write
from torviz.services.storage_agent.store import open_storage
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import CloseTorrent, ReadBlock, StorageFailed, StorePiece
from torviz.shared.errors import MetainfoError
from torviz.shared.types import InfoHash

from .conftest import Layout, multi_file_layout
from .harness import torrent_from_files

IH = InfoHash(b"\x11" * 20)
OTHER = InfoHash(b"\x22" * 20)


def opened_table(layout: Layout, verified: tuple[int, ...] = ()) -> tuple[TorrentTable, Torrent]:
    table = TorrentTable()
    torrent = table.add(IH, "/downloads")
    assert isinstance(torrent, Torrent)
    torrent.opened(
        layout.info, MemoryStorage(layout.info), Bitfield(layout.info.num_pieces, verified)
    )
    return table, torrent


def reason(verdict: Torrent | Refusal) -> str:
    return verdict.reason if isinstance(verdict, Refusal) else "accepted"


# --- StorePiece admission -----------------------------------------------------------------------

LAYOUT = multi_file_layout()  # 13 pieces of 1 KiB, the last one shorter
LAST = LAYOUT.info.num_pieces - 1


@pytest.mark.parametrize(
    ("info_hash", "piece", "length", "expected"),
    [
        (IH, 0, 1024, "accepted"),
        (IH, LAST, LAYOUT.info.geometry.last_piece_size, "accepted"),
        (OTHER, 0, 1024, "unknown_torrent"),
        (IH, LAST + 1, 1024, "piece_out_of_range"),
        (IH, 0, 1023, "bad_piece_length"),
        (IH, 0, 1025, "bad_piece_length"),
        (IH, LAST, 1024, "bad_piece_length"),  # the short last piece sent full size
        (IH, 0, 0, "bad_piece_length"),
        (IH, 3, 1024, "already_verified"),
    ],
)
def test_check_piece(info_hash: InfoHash, piece: int, length: int, expected: str) -> None:
    table, _ = opened_table(LAYOUT, verified=(3,))
    assert reason(table.check_piece(StorePiece(info_hash, piece, ()), length)) == expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (Phase.OPENING, "torrent_not_open"),
        (Phase.CLOSING, "torrent_not_open"),
        (Phase.FAILED, "torrent_failed"),
        (Phase.CHECKING, "torrent_checking"),
        (Phase.OPEN, "accepted"),
    ],
)
def test_pieces_are_taken_only_while_open(phase: Phase, expected: str) -> None:
    table, torrent = opened_table(LAYOUT)
    torrent.phase = phase
    torrent.failure = "disk full" if phase is Phase.FAILED else None
    assert reason(table.check_piece(StorePiece(IH, 0, ()), 1024)) == expected


# --- ReadBlock admission ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info_hash", "piece", "offset", "length", "expected"),
    [
        (IH, 3, 0, 1024, "accepted"),
        (IH, 3, 1000, 24, "accepted"),
        (IH, 4, 0, 16, "piece_not_verified"),
        (OTHER, 3, 0, 16, "unknown_torrent"),
        (IH, 3, 1000, 25, "invalid_range"),  # crosses into the next piece
        (IH, LAST + 1, 0, 16, "invalid_range"),
        (IH, LAST, LAYOUT.info.geometry.last_piece_size, 1, "invalid_range"),
    ],
)
def test_check_read(
    info_hash: InfoHash, piece: int, offset: int, length: int, expected: str
) -> None:
    table, _ = opened_table(LAYOUT, verified=(3, LAST))
    verdict = table.check_read(ReadBlock(1, info_hash, piece, offset, length))
    assert reason(verdict) == expected


def test_nothing_is_read_during_a_recheck() -> None:
    table, torrent = opened_table(LAYOUT, verified=(3,))
    torrent.checking()
    assert reason(table.check_read(ReadBlock(1, IH, 3, 0, 16))) == "torrent_not_open"


def test_verified_pieces_stay_readable_after_a_write_failure() -> None:
    table, torrent = opened_table(LAYOUT, verified=(3,))
    assert torrent.failed("disk full")
    assert not torrent.failed("disk full again")  # reported once
    assert reason(table.check_read(ReadBlock(1, IH, 3, 0, 16))) == "accepted"
    assert reason(table.check_piece(StorePiece(IH, 4, ()), 1024)) == "torrent_failed"


# --- phases and the table -----------------------------------------------------------------------


def test_phases_of_a_torrent() -> None:
    table = TorrentTable()
    torrent = table.add(IH, "/a")
    assert isinstance(torrent, Torrent) and torrent.busy and torrent.phase is Phase.OPENING
    store = MemoryStorage(LAYOUT.info)
    with pytest.raises(ValueError, match="bitfield"):
        torrent.opened(LAYOUT.info, store, Bitfield(3))
    torrent.opened(LAYOUT.info, store, Bitfield(LAYOUT.info.num_pieces))
    assert not torrent.busy
    assert torrent.piece_verified(5) and not torrent.piece_verified(5)
    assert torrent.failed("disk full") and torrent.phase is Phase.FAILED
    assert torrent.reopening("/b") is store
    assert (torrent.phase, torrent.save_path, torrent.storage) == (Phase.OPENING, "/b", None)
    torrent.opened(LAYOUT.info, store, Bitfield(LAYOUT.info.num_pieces))
    assert torrent.checking() is store and torrent.busy and torrent.check_incomplete
    torrent.checked(Bitfield(LAYOUT.info.num_pieces, [1, 2]))
    assert torrent.phase is Phase.OPEN and not torrent.check_incomplete
    assert list(torrent.verified) == [1, 2] and not torrent.unsaved
    assert torrent.piece_verified(3) and torrent.unsaved  # to be recorded at the next flush
    torrent.checking()
    torrent.check_failed("disk gone")
    assert (torrent.phase, torrent.failure) == (Phase.FAILED, "disk gone")
    assert torrent.closing(delete_files=True) is store and torrent.busy and torrent.delete_files
    with pytest.raises(ValueError, match="already known"):
        table.add(IH, "/a")
    assert table.remove(IH) is torrent and table.get(IH) is None and len(table) == 0


def test_control_requests_wait_behind_a_busy_torrent_in_a_bounded_queue() -> None:
    torrent = Torrent(IH, "/a")
    for _ in range(MAX_WAITING):
        assert torrent.queue(CloseTorrent(IH, delete_files=False))
    assert not torrent.queue(CloseTorrent(IH, delete_files=False))
    waiting = torrent.take_waiting()
    assert len(waiting) == MAX_WAITING and not torrent.waiting


def test_the_table_is_bounded() -> None:
    table = TorrentTable(max_torrents=1)
    assert isinstance(table.add(IH, "/a"), Torrent)
    refused = table.add(OTHER, "/a")
    assert isinstance(refused, Refusal) and refused.reason == "too_many_torrents"


# --- the work run on worker threads -------------------------------------------------------------


def test_a_mismatching_piece_is_not_written_and_a_matching_one_is() -> None:
    store = MemoryStorage(LAYOUT.info)
    piece = memoryview(LAYOUT.piece(2))
    assert hash_and_write(store, 2, piece, bytes(20)) == (False, None)
    assert store.file_data(1) is None and store.file_data(2) is None  # files of piece 2
    assert hash_and_write(store, 2, piece, LAYOUT.info.piece_hash(2)) == (True, None)
    assert store.read_piece(2) == LAYOUT.piece(2)


def test_block_digests_come_only_when_the_smart_ban_asks_for_them() -> None:
    """A failed piece from several senders, or a good copy that judges one, is hashed per block."""
    store = MemoryStorage(LAYOUT.info)
    piece, good = memoryview(LAYOUT.piece(3)), LAYOUT.info.piece_hash(3)
    digests = (hashlib.sha1(LAYOUT.piece(3)).digest(),)  # pieces of 1 KiB: one block each
    assert hash_and_write(store, 3, piece, bytes(20), trace=True) == (False, None)
    assert hash_and_write(store, 3, piece, bytes(20), several=True) == (False, digests)
    assert hash_and_write(store, 3, piece, good, several=True) == (True, None)
    assert hash_and_write(store, 3, piece, good, trace=True) == (True, digests)


def test_open_storage_checks_the_hash_before_anything_is_made(tmp_path: Path) -> None:
    torrent = torrent_from_files("t", [("a", b"x" * 2000)], 1024)
    with pytest.raises(StorageError) as caught:
        open_storage(OTHER, torrent.raw_info, str(tmp_path / "made"), preallocate=False)
    assert caught.value.reason == "info_hash_mismatch"
    assert not (tmp_path / "made").exists()
    with pytest.raises(MetainfoError):
        open_storage(InfoHash(hashlib.sha1(b"de").digest()), b"de", "/x", preallocate=False)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            storage_error_from_os(OSError(errno.ENOSPC, "No space"), "writing", "t/a.bin"),
            ("t/a.bin", "ENOSPC", "disk full writing 't/a.bin' (ENOSPC)"),
        ),
        (MetainfoError("path_traversal", "a path component is '..'"), ("", "", "a path")),
        (RuntimeError("boom"), ("", "", "internal error in the storage agent: RuntimeError")),
    ],
)
def test_storage_failed_names_the_file_and_the_errno(
    error: Exception, expected: tuple[str, str, str]
) -> None:
    event = storage_failed(IH, error)
    assert isinstance(event, StorageFailed) and event.info_hash == IH
    assert (event.file, event.errno_name) == expected[:2]
    assert event.message.startswith(expected[2])
