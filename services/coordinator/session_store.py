"""The daemon's session on disk: which torrents it has, where they go, whether they are paused.

One SQLite database (stdlib ``sqlite3``, WAL mode) in the state directory. Each torrent keeps
its exact .torrent bytes (so nothing is re-encoded), its download directory, its paused flag and
its transfer totals. A torrent added from a magnet link keeps the link (``magnet``, its
.torrent empty) until its info dictionary arrives; then the .torrent built from it replaces the
link, so a restart never fetches it again. The metadata pieces it received meanwhile are kept
too (``metadata_pieces``), so a restart asks only for the rest. The web seed URLs the user
added (``add --web-seed``, ``web-seed``) are kept as a JSON list (``web_seeds``); those of the
``url-list`` come from the .torrent each time. Which pieces are verified is
*not* here: the storage agent owns that, next to the data, and reports it when the torrent is
opened again.

Writes are small and happen when something changes (add, remove, pause, resume) plus the
totals every few seconds; each is one transaction, so a crash leaves either the old or the new
row, never half of one. They run in order on one thread of their own (gevent's thread pool), so
the coordinator's actor never waits for the disk; ``close`` waits for them.

A database that cannot be read is moved aside and a fresh one started: the daemon comes up
with no torrents and says so, rather than not at all.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import gevent.threadpool

from torviz.shared.bus import MAX_WEB_SEEDS
from torviz.shared.magnet import format_magnet
from torviz.shared.types import InfoHash

from .core.torrent import Torrent

__all__ = ["SavedTorrent", "SessionStore", "StoreListener"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS torrents (
    info_hash BLOB PRIMARY KEY,
    metainfo BLOB NOT NULL,
    save_path TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL,
    uploaded INTEGER NOT NULL DEFAULT 0,
    downloaded INTEGER NOT NULL DEFAULT 0,
    magnet TEXT NOT NULL DEFAULT '',
    web_seeds TEXT NOT NULL DEFAULT '[]'
)
"""
_PIECES_SCHEMA = """
CREATE TABLE IF NOT EXISTS metadata_pieces (
    info_hash BLOB NOT NULL,
    piece INTEGER NOT NULL,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (info_hash, piece)
)
"""
_MIGRATE = {
    "magnet": "ALTER TABLE torrents ADD COLUMN magnet TEXT NOT NULL DEFAULT ''",
    "web_seeds": "ALTER TABLE torrents ADD COLUMN web_seeds TEXT NOT NULL DEFAULT '[]'",
}
"""Columns a database of an earlier version lacks, and how each is added."""


@dataclass(frozen=True, slots=True)
class SavedTorrent:
    info_hash: InfoHash
    metainfo: bytes
    save_path: str
    paused: bool
    uploaded: int
    downloaded: int
    magnet: str = ""
    """The magnet link of a torrent added from one (with ``metainfo`` empty: its info
    dictionary never arrived)."""
    metadata: tuple[int, dict[int, bytes]] | None = None
    """Its metadata pieces received so far: the size they belong to, and each by index."""
    web_seeds: tuple[str, ...] = ()
    """The web seed URLs the user added to it."""


class SessionStore:
    """Args:
    path: the database file (created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer = gevent.threadpool.ThreadPool(1)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as exc:
            aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            log.error("session database %s is unreadable (%s): moved to %s", path, exc, aside)
            path.rename(aside)
            self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            db.execute(_PIECES_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(torrents)")}
            for column, alter in _MIGRATE.items():
                if column not in columns:
                    db.execute(alter)
            db.execute("SELECT count(*) FROM torrents").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def load(self) -> list[SavedTorrent]:
        """Every saved torrent, oldest first; rows that make no sense are skipped."""
        rows = self._db.execute(
            "SELECT info_hash, metainfo, save_path, paused, uploaded, downloaded, magnet, "
            "web_seeds FROM torrents ORDER BY added_at"
        ).fetchall()
        saved = []
        for info_hash, metainfo, save_path, paused, uploaded, downloaded, magnet, seeds in rows:
            try:
                key = InfoHash(bytes(info_hash))
            except (TypeError, ValueError):
                log.warning("skipping a session row with a bad info hash")
                continue
            saved.append(
                SavedTorrent(
                    key,
                    bytes(metainfo),
                    str(save_path),
                    bool(paused),
                    uploaded,
                    downloaded,
                    str(magnet or ""),
                    self._metadata(key) if magnet and not metainfo else None,
                    _web_seeds(seeds),
                )
            )
        return saved

    def add(
        self,
        info_hash: InfoHash,
        metainfo: bytes,
        save_path: str,
        *,
        paused: bool,
        magnet: str = "",
        web_seeds: tuple[str, ...] = (),
    ) -> None:
        """Keep a new torrent: its .torrent bytes, or (empty) its magnet link, and the web
        seed URLs the user gave with it."""
        self._write(
            "INSERT OR REPLACE INTO torrents "
            "(info_hash, metainfo, save_path, paused, added_at, magnet, web_seeds) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    info_hash.raw,
                    metainfo,
                    save_path,
                    int(paused),
                    time.time(),
                    magnet,
                    json.dumps(list(web_seeds)),
                )
            ],
        )

    def set_web_seeds(self, info_hash: InfoHash, urls: tuple[str, ...]) -> None:
        """The web seed URLs the user added to a torrent, all of them."""
        self._write(
            "UPDATE torrents SET web_seeds = ? WHERE info_hash = ?",
            [(json.dumps(list(urls)), info_hash.raw)],
        )

    def set_metainfo(self, info_hash: InfoHash, metainfo: bytes) -> None:
        """A magnet link's info dictionary arrived: its .torrent is kept beside the link (whose
        ``so`` and ``ws`` still count) and the pieces kept for the fetch go."""
        self._write(
            "UPDATE torrents SET metainfo = ? WHERE info_hash = ?",
            [(metainfo, info_hash.raw)],
        )
        self._write("DELETE FROM metadata_pieces WHERE info_hash = ?", [(info_hash.raw,)])

    def add_metadata_piece(self, info_hash: InfoHash, size: int, piece: int, data: bytes) -> None:
        """Keep one metadata piece of a magnet link's torrent (pieces of another size go)."""
        key = info_hash.raw
        self._write("DELETE FROM metadata_pieces WHERE info_hash = ? AND size != ?", [(key, size)])
        self._write(
            "INSERT OR REPLACE INTO metadata_pieces (info_hash, piece, size, data) "
            "VALUES (?, ?, ?, ?)",
            [(key, piece, size, data)],
        )

    def _metadata(self, info_hash: InfoHash) -> tuple[int, dict[int, bytes]] | None:
        rows = self._db.execute(
            "SELECT piece, size, data FROM metadata_pieces WHERE info_hash = ? ORDER BY piece",
            (info_hash.raw,),
        ).fetchall()
        if not rows:
            return None
        size = int(rows[0][1])
        return size, {int(piece): bytes(data) for piece, each, data in rows if each == size}

    def set_paused(self, info_hash: InfoHash, paused: bool) -> None:
        self._write(
            "UPDATE torrents SET paused = ? WHERE info_hash = ?", [(int(paused), info_hash.raw)]
        )

    def set_totals(self, totals: dict[InfoHash, tuple[int, int]]) -> None:
        """Save ``(uploaded, downloaded)`` for several torrents in one transaction."""
        self._write(
            "UPDATE torrents SET uploaded = ?, downloaded = ? WHERE info_hash = ?",
            [(up, down, key.raw) for key, (up, down) in totals.items()],
        )

    def remove(self, info_hash: InfoHash) -> None:
        self._write("DELETE FROM torrents WHERE info_hash = ?", [(info_hash.raw,)])
        self._write("DELETE FROM metadata_pieces WHERE info_hash = ?", [(info_hash.raw,)])

    def close(self) -> None:
        """Wait for the queued writes, then close the database."""
        self._writer.join()
        self._writer.kill()
        self._db.close()

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        self._writer.spawn(self._run, sql, rows)

    def _run(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        """On the writer thread: one transaction; a failure is logged, never raised."""
        try:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(sql, rows)
        except sqlite3.Error as exc:
            log.error("cannot save the session in %s: %s", self.path, exc)


def _web_seeds(text: object) -> tuple[str, ...]:
    """A row's ``web_seeds`` column; what is not a JSON list of strings counts as none."""
    try:
        urls = json.loads(str(text or "[]"))
    except ValueError:
        log.warning("skipping a session row's unreadable web seeds")
        return ()
    if not isinstance(urls, list):
        return ()
    return tuple(url for url in urls if isinstance(url, str))[:MAX_WEB_SEEDS]


class StoreListener:
    """Keeps the coordinator's session changes in a ``SessionStore``."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store

    def torrent_added(self, torrent: Torrent, *, paused: bool) -> None:
        self.store.add(
            torrent.info_hash,
            torrent.metainfo_bytes,
            torrent.save_path,
            paused=paused,
            magnet=format_magnet(torrent.magnet)
            if torrent.metainfo is None and torrent.magnet
            else "",
            web_seeds=torrent.web_seeds.user_urls(),
        )

    def torrent_fetched(self, torrent: Torrent) -> None:
        self.store.set_metainfo(torrent.info_hash, torrent.metainfo_bytes)

    def metadata_piece(self, info_hash: InfoHash, size: int, piece: int, data: bytes) -> None:
        self.store.add_metadata_piece(info_hash, size, piece, data)

    def torrent_paused(self, info_hash: InfoHash, paused: bool) -> None:
        self.store.set_paused(info_hash, paused)

    def torrent_removed(self, info_hash: InfoHash) -> None:
        self.store.remove(info_hash)

    def web_seeds_changed(self, info_hash: InfoHash, urls: tuple[str, ...]) -> None:
        self.store.set_web_seeds(info_hash, urls)
