"""The SQLite resume store: round trips, its journal settings, and every way it must not crash.

Each test opens a real database file under ``tmp_path`` through ``ResumeStore`` and, where a
test needs to break it, edits the file directly with ``sqlite3`` or overwrites its bytes.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from torviz.services.storage_agent.core.fastresume import FileRecord, ResumeRecord
from torviz.services.storage_agent.resume import DATABASE_NAME, ResumeStore
from torviz.shared.bitfield import Bitfield
from torviz.shared.types import InfoHash

IH = InfoHash(b"\x44" * 20)
OTHER = InfoHash(b"\x55" * 20)
CLOCK = 1_700_000_000 * 10**9


def sample(info_hash: InfoHash = IH, pieces: tuple[int, ...] = (0, 5, 9)) -> ResumeRecord:
    files = (
        FileRecord(("t", "a.bin"), False, 5000, 123_456_789, True),
        FileRecord(("t", ".pad", "7"), True, None, None, True),
        FileRecord(("t", "sub", "b.bin"), False, None, None, True),
        FileRecord(("t", "c.bin"), False, 777, 42, False),
    )
    return ResumeRecord(info_hash, "/downloads", Bitfield(10, pieces), files)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / DATABASE_NAME


def open_store(path: Path) -> ResumeStore:
    return ResumeStore(str(path), clock=lambda: CLOCK)


def test_records_round_trip_and_are_forgotten(path: Path) -> None:
    store = open_store(path)
    try:
        assert store.enabled and store.load(IH) is None
        assert store.save(sample()) and store.save(sample(OTHER, ()))
        assert store.load(IH) == sample()
        assert store.save(sample(pieces=(1,)))  # replaces, files and all
        assert store.load(IH) == sample(pieces=(1,))
        store.forget(IH)
        assert store.load(IH) is None and store.load(OTHER) == sample(OTHER, ())
    finally:
        store.close()
    again = open_store(path)  # what was committed is there after a reopen
    try:
        assert again.load(OTHER) == sample(OTHER, ())
    finally:
        again.close()


def test_the_journal_is_wal_with_normal_sync(path: Path) -> None:
    open_store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (1,)


def test_a_corrupt_database_is_moved_aside_and_replaced(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an SQLite database, it is garbage " * 100)
    caplog.set_level(logging.WARNING)
    store = open_store(path)
    try:
        assert store.enabled and store.load(IH) is None and store.save(sample())
    finally:
        store.close()
    aside = path.parent / f"{DATABASE_NAME}.corrupt-20231114T221320Z"
    assert aside.read_bytes().startswith(b"this is not an SQLite database")
    lines = [r.getMessage() for r in caplog.records if "moved aside" in r.getMessage()]
    assert len(lines) == 1 and "corrupt" in lines[0] and str(aside) in lines[0]
    open_store(path).close()  # the fresh one is fine
    path.write_bytes(b"\0" * 4096)  # and a second corrupt file does not overwrite the first
    open_store(path).close()
    assert (path.parent / f"{DATABASE_NAME}.corrupt-20231114T221320Z-2").exists()


def test_a_damaged_page_is_found_at_start(path: Path) -> None:
    store = open_store(path)
    for n in range(200):  # several pages of data
        store.save(sample(InfoHash(n.to_bytes(20, "big"))))
    store.close()
    data = bytearray(path.read_bytes())
    data[4096 * 2 : 4096 * 3] = b"\xff" * 4096  # a whole b-tree page overwritten
    path.write_bytes(bytes(data))
    again = open_store(path)
    try:
        assert again.enabled and again.load(InfoHash((5).to_bytes(20, "big"))) is None
    finally:
        again.close()
    assert list(path.parent.glob(f"{DATABASE_NAME}.corrupt-*"))


def test_a_database_of_another_kind_is_moved_aside(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    open_store(path).close()
    assert list(path.parent.glob(f"{DATABASE_NAME}.corrupt-*"))


@pytest.mark.parametrize(
    "edit",
    [
        "UPDATE torrents SET have = x'ff'",  # one byte for ten pieces
        "UPDATE torrents SET have = x'ffff'",  # spare bits set
        "UPDATE torrents SET num_pieces = -3",
        "DELETE FROM files WHERE file_index = 1",  # a gap in the file rows
        "DELETE FROM files",
        "UPDATE files SET size = 'big'",
    ],
)
def test_an_inconsistent_record_is_ignored(
    path: Path, edit: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store(path)
    try:
        store.save(sample())
        with sqlite3.connect(path) as db:
            db.execute(edit)
        caplog.set_level(logging.WARNING)
        assert store.load(IH) is None
        assert "resume record of" in caplog.text and "ignored" in caplog.text
    finally:
        store.close()


def test_an_unusable_folder_disables_resume_state_without_raising(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the folder should be")
    store = ResumeStore(str(tmp_path / "state" / DATABASE_NAME))
    assert not store.enabled
    assert store.load(IH) is None and not store.save(sample())
    store.forget(IH)
    store.close()
