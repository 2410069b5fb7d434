"""Resume state: what the storage agent knows to be verified and durable, kept in SQLite.

Strategy: one database per storage agent (``<state dir>/resume.sqlite``), one row per torrent
(info hash, download directory, verified-piece bitfield) and one row per file (path, and size
and mtime as of the last flush). The agent writes a record only after the pieces it lists were
written *and* fdatasynced, so a record never claims a piece whose bytes could still be lost;
a crash loses at most the pieces verified since the last record, and the file times tell which
files to check again (``core.fastresume``).

Durability: WAL journal with ``synchronous=NORMAL``. A commit is then atomic and survives the
agent being killed (it is in the OS's hands once ``COMMIT`` returns); only a power cut can roll
back the last few commits, which leaves an *older* record (fewer pieces, older file times) and
so only makes the next open check more, never trust more. The data files themselves are synced
before every commit, which is the ordering that matters. ``FULL`` would add an fsync of the
journal per commit and buy nothing here.

Rules:
- Every call is blocking and thread-safe (one native lock around the connection): the agent
  runs them on a worker thread of their own, never on the event loop.
- Never fatal. A database that is corrupt or cannot be opened is logged in one line, moved
  aside to ``resume.sqlite.corrupt-<time>`` and replaced by an empty one (every torrent is then
  checked as if new). Any other SQLite failure (disk full, I/O error) is logged and the agent
  goes on without that write: a stale record is safe, only slower.
- Records are read back as hostile data: bounded row counts, bitfields checked against their
  piece count; anything inconsistent is ignored as if there were no record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from torviz.shared.bitfield import Bitfield, BitfieldError
from torviz.shared.metainfo import MAX_FILES, MAX_PIECES
from torviz.shared.types import InfoHash

from .core.fastresume import FileRecord, ResumeRecord
from .store import native_lock

__all__ = ["DATABASE_NAME", "ResumeStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")

DATABASE_NAME = "resume.sqlite"
_SCHEMA_VERSION = 1
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS torrents (
    info_hash  BLOB PRIMARY KEY,     -- 20 bytes
    save_path  TEXT NOT NULL,        -- real path of the download directory
    num_pieces INTEGER NOT NULL,
    have       BLOB NOT NULL,        -- verified and durable pieces, BitTorrent bitfield layout
    saved_ns   INTEGER NOT NULL      -- wall clock of the commit, for people reading the file
);
CREATE TABLE IF NOT EXISTS files (
    info_hash  BLOB NOT NULL,
    file_index INTEGER NOT NULL,
    path       TEXT NOT NULL,        -- components joined by '/', relative to save_path
    padding    INTEGER NOT NULL,     -- BEP 47 padding file: never on disk
    size       INTEGER,              -- NULL: the file was not there
    mtime_ns   INTEGER,
    settled    INTEGER NOT NULL,     -- 0: written too recently for its mtime to be trusted
    PRIMARY KEY (info_hash, file_index)
) WITHOUT ROWID;
"""


class ResumeStore:
    """The resume database of one storage agent.

    Args:
        path: the database file; its folder is created if missing.
        clock: wall-clock nanoseconds (for the ``saved_ns`` column and the name of a moved-aside
            corrupt file).

    A store that could not be opened at all (even fresh) is ``enabled`` False and does nothing.
    """

    def __init__(self, path: str, *, clock: Callable[[], int] = time.time_ns) -> None:
        self.path = path
        self._clock = clock
        self._lock = native_lock()
        self._db: sqlite3.Connection | None = None
        self._warned: set[str] = set()
        with self._lock:
            self._start()

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def load(self, info_hash: InfoHash) -> ResumeRecord | None:
        """The torrent's record, or None if there is none or it is not usable."""
        return self._run("read", lambda db: _load(db, info_hash))

    def save(self, record: ResumeRecord) -> bool:
        """Replace the torrent's record in one transaction; False if it could not be written."""
        return bool(self._run("write", lambda db: _save(db, record, self._clock())))

    def forget(self, info_hash: InfoHash) -> None:
        """Delete the torrent's record (if any)."""

        def forget(db: sqlite3.Connection) -> bool:
            with _transaction(db):
                db.execute("DELETE FROM files WHERE info_hash = ?", (info_hash.raw,))
                db.execute("DELETE FROM torrents WHERE info_hash = ?", (info_hash.raw,))
            return True

        self._run("write", forget)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error as exc:
                    log.warning("closing the resume database failed: %s", exc)
                self._db = None

    # -- opening and recovering -----------------------------------------------------------------

    def _start(self) -> None:
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        except OSError as exc:
            log.error(
                "resume state disabled: cannot create %s: %s", os.path.dirname(self.path), exc
            )
            return
        try:
            self._db = _connect(self.path)
            return
        except sqlite3.Error as exc:
            problem = "corrupt" if _is_corrupt(exc) else "unreadable"
            self._move_aside(f"{problem} ({exc})")
        try:
            self._db = _connect(self.path)
        except sqlite3.Error as exc:
            log.error("resume state disabled: cannot create %s: %s", self.path, exc)

    def _move_aside(self, why: str) -> None:
        """Rename the database (and its WAL files) out of the way; called with the lock held."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):  # it is being thrown away
                self._db.close()
            self._db = None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock() / 1e9))
        target = f"{self.path}.corrupt-{stamp}"
        suffix = 1
        while os.path.lexists(target):
            suffix += 1
            target = f"{self.path}.corrupt-{stamp}-{suffix}"
        try:
            os.replace(self.path, target)
            for extra in ("-wal", "-shm"):  # a stale WAL must never be replayed into a new file
                if os.path.lexists(self.path + extra):
                    os.replace(self.path + extra, target + extra)
        except OSError as exc:
            log.error("resume database %s is %s and cannot be moved aside: %s", self.path, why, exc)
            return
        log.warning(
            "resume database %s is %s: moved aside to %s; starting a fresh one "
            "(torrents are checked again on open)",
            self.path,
            why,
            target,
        )

    def _run(self, what: str, work: Callable[[sqlite3.Connection], T]) -> T | None:
        """Run ``work`` on the connection; a failure is logged and gives None, never raised."""
        with self._lock:
            if self._db is None:
                return None
            try:
                return work(self._db)
            except sqlite3.Error as exc:
                if _is_corrupt(exc):
                    self._move_aside(f"corrupt ({exc})")
                    try:
                        self._db = _connect(self.path)
                    except sqlite3.Error as again:
                        log.error("resume state disabled: cannot create %s: %s", self.path, again)
                elif what not in self._warned:  # once per kind, not once per flush
                    self._warned.add(what)
                    log.warning(
                        "cannot %s the resume database %s (%s): going on without it; "
                        "torrents may be checked again on their next open",
                        what,
                        self.path,
                        exc,
                    )
                return None


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return isinstance(exc, _NotOurDatabase)
    return code & 0xFF in _CORRUPT_CODES


class _NotOurDatabase(sqlite3.DatabaseError):
    """The file is an SQLite database, but not one this code wrote (or one that fails checks)."""


def _connect(path: str) -> sqlite3.Connection:
    """Open (or create) the database and check it; raises ``sqlite3.Error`` if it is unusable."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        rows = db.execute("PRAGMA quick_check").fetchmany(2)
        if rows != [("ok",)]:
            raise _NotOurDatabase(f"integrity check failed: {rows[0][0]}")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise _NotOurDatabase(f"schema version {version}, expected {_SCHEMA_VERSION}")
        with _transaction(db):
            # One statement at a time: ``executescript`` would commit on its own.
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    except BaseException:
        db.close()
        raise
    return db


class _transaction:  # noqa: N801 - used like a function: ``with _transaction(db):``
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is None:
            self._db.execute("COMMIT")
        elif self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _save(db: sqlite3.Connection, record: ResumeRecord, now_ns: int) -> bool:
    key = record.info_hash.raw
    rows = [
        (key, index, "/".join(f.path), int(f.padding), f.size, f.mtime_ns, int(f.settled))
        for index, f in enumerate(record.files)
    ]
    with _transaction(db):
        db.execute(
            "INSERT OR REPLACE INTO torrents VALUES (?, ?, ?, ?, ?)",
            (key, record.save_path, record.have.size, record.have.to_bytes(), now_ns),
        )
        db.execute("DELETE FROM files WHERE info_hash = ?", (key,))
        db.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return True


def _load(db: sqlite3.Connection, info_hash: InfoHash) -> ResumeRecord | None:
    key = info_hash.raw
    row = db.execute(
        "SELECT save_path, num_pieces, have FROM torrents WHERE info_hash = ?", (key,)
    ).fetchone()
    if row is None:
        return None
    save_path, num_pieces, raw_have = row
    where = f"resume record of {info_hash.hex} ignored"
    if not (isinstance(num_pieces, int) and 0 < num_pieces <= MAX_PIECES):
        log.warning("%s: %r pieces", where, num_pieces)
        return None
    if not isinstance(raw_have, bytes) or not isinstance(save_path, str):
        log.warning("%s: wrong column types", where)
        return None
    try:
        have = Bitfield.from_bytes(raw_have, num_pieces)
    except BitfieldError as exc:
        log.warning("%s: %s", where, exc)
        return None
    rows = db.execute(
        "SELECT file_index, path, padding, size, mtime_ns, settled FROM files "
        "WHERE info_hash = ? ORDER BY file_index LIMIT ?",
        (key, MAX_FILES + 1),
    ).fetchall()
    files: list[FileRecord] = []
    for position, (index, path, padding, size, mtime_ns, settled) in enumerate(rows):
        if index != position or not isinstance(path, str) or not path:
            log.warning("%s: file rows out of order", where)
            return None
        if not (size is None or isinstance(size, int)) or not (
            mtime_ns is None or isinstance(mtime_ns, int)
        ):
            log.warning("%s: a file size or time is not a number", where)
            return None
        files.append(
            FileRecord(tuple(path.split("/")), bool(padding), size, mtime_ns, bool(settled))
        )
    if not files or len(files) > MAX_FILES:
        log.warning("%s: %d file rows", where, len(files))
        return None
    return ResumeRecord(info_hash, save_path, have, tuple(files))
