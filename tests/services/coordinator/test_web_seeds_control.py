"""A torrent's web seed URLs: where they come from (url-list, a magnet's ws=, AddTorrent.web_seeds,
AddWebSeed), the control request's answers, and the user's URLs kept across a restart."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

from torviz.services.coordinator.core import Coordinator
from torviz.services.coordinator.core.web_seeds import WebSeeds
from torviz.shared.bencode import encode
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    MAX_WEB_SEEDS,
    AddTorrent,
    AddWebSeed,
    ConnectWebSeed,
    ControlFailed,
    TorrentAdded,
    TorrentOpened,
    WebSeedAdded,
    WebSeedRow,
    WebSeedUrlState,
)
from torviz.shared.magnet import Magnet, format_magnet, metainfo_from_magnet, parse_magnet
from torviz.shared.types import InfoHash

from .test_core import NUM_PIECES, PIECE, STORAGE, Recorder, full_core, sent

MIRROR = "http://127.0.0.1:8080/pub/"


def info_dict(name: bytes = b"file.bin") -> dict[bytes, Any]:
    """The info dictionary of a one-file torrent of ``NUM_PIECES`` pieces."""
    data = bytes(range(256)) * (PIECE * NUM_PIECES // 256)
    pieces = b"".join(
        hashlib.sha1(data[i : i + PIECE]).digest() for i in range(0, len(data), PIECE)
    )
    return {b"name": name, b"length": len(data), b"piece length": PIECE, b"pieces": pieces}


def web_torrent(url_list: list[str] | str | None = None, name: bytes = b"file.bin") -> bytes:
    """That torrent with that ``url-list`` (and an ``httpseeds``)."""
    top: dict[bytes, Any] = {b"info": info_dict(name), b"httpseeds": [b"http://127.0.0.9/seed.php"]}
    if isinstance(url_list, str):
        top[b"url-list"] = url_list.encode()
    elif url_list is not None:
        top[b"url-list"] = [url.encode() for url in url_list]
    return encode(top)


def add(core: Coordinator, metainfo: bytes, *web_seeds: str) -> InfoHash:
    reply = core.add_torrent(AddTorrent(metainfo, "", web_seeds=web_seeds), now=0.0)
    assert isinstance(reply, TorrentAdded), reply
    return reply.info_hash


def rows(core: Coordinator) -> dict[str, tuple[WebSeedUrlState, str]]:
    [status] = core.status(0.0).torrents
    return {row.url: (row.state, row.message) for row in status.web_seeds}


def test_url_list_and_added_urls_become_rows_bad_ones_invalid_duplicates_dropped() -> None:
    core = full_core()
    metainfo = web_torrent([MIRROR, "ftp://mirror.example/pub/", "HTTP://127.0.0.1:8080/pub/"])
    add(core, metainfo, "http://127.0.0.2/x", MIRROR, "http://user:pw@host/")  # never refused
    assert rows(core) == {
        MIRROR: (WebSeedUrlState.WAITING, ""),
        "ftp://mirror.example/pub/": (
            WebSeedUrlState.INVALID,
            "web seed URL must start with http:// or https://, not 'ftp'",
        ),
        "http://127.0.0.2/x": (WebSeedUrlState.WAITING, ""),
        "http://user:pw@host/": (WebSeedUrlState.INVALID, rows(core)["http://user:pw@host/"][1]),
    }
    assert "user" in rows(core)["http://user:pw@host/"][1]
    # httpseeds (BEP 17) is another protocol: no row.
    assert not any("seed.php" in url for url in rows(core))


def test_a_single_url_list_string_counts() -> None:
    core = full_core()
    add(core, web_torrent(MIRROR))
    assert list(rows(core)) == [MIRROR]


def test_a_magnet_links_ws_are_its_web_seeds_before_and_after_its_metadata() -> None:
    core = full_core()
    info_hash = InfoHash(hashlib.sha1(encode(info_dict())).digest())
    link = format_magnet(Magnet(info_hash, "file.bin", web_seeds=(MIRROR,)))
    reply = core.add_torrent(AddTorrent(b"", "", link), now=0.0)
    assert isinstance(reply, TorrentAdded)
    assert rows(core) == {MIRROR: (WebSeedUrlState.WAITING, "")}
    # Restored once fetched: the .torrent built from the link carries them as url-list.
    later = full_core()
    built = metainfo_from_magnet(parse_magnet(link), encode(info_dict()))
    later.restore(built, "/dl", paused=False, totals=(0, 0), now=0.0, magnet=link)
    assert rows(later) == {MIRROR: (WebSeedUrlState.WAITING, "")}


def test_add_web_seed_answers_and_tells_the_session_store() -> None:
    core = full_core()
    recorder = Recorder()
    core.session = recorder
    info_hash = add(core, web_torrent([MIRROR]))
    unknown = InfoHash(b"\x01" * 20)
    failed = core.add_web_seed(AddWebSeed(unknown, MIRROR), 0.0)
    assert isinstance(failed, ControlFailed) and failed.reason == "unknown_torrent"
    bad = core.add_web_seed(AddWebSeed(info_hash, "gopher://x/"), 0.0)
    assert bad == ControlFailed(
        "invalid_web_seed", "web seed URL must start with http:// or https://, not 'gopher'"
    )
    assert core.add_web_seed(AddWebSeed(info_hash, " http://Example.ORG/a b/ "), 0.0) == (
        WebSeedAdded(info_hash, "http://example.org/a%20b/", True)
    )
    again = core.add_web_seed(AddWebSeed(info_hash, "http://example.org/a%20b/"), 0.0)
    assert again == WebSeedAdded(info_hash, "http://example.org/a%20b/", False)
    assert list(rows(core)) == [MIRROR, "http://example.org/a%20b/"]
    told = [name for name, key, _ in recorder.events if key == info_hash]
    assert told[-1] == "web seeds http://example.org/a%20b/"  # the user's URLs only


def test_add_web_seed_past_the_cap_is_refused() -> None:
    core = full_core()
    info_hash = add(core, web_torrent([f"http://127.0.0.1/{n}/" for n in range(MAX_WEB_SEEDS)]))
    assert len(rows(core)) == MAX_WEB_SEEDS
    refused = core.add_web_seed(AddWebSeed(info_hash, "http://127.0.0.1/one-more/"), 0.0)
    assert isinstance(refused, ControlFailed) and refused.reason == "too_many_web_seeds"
    assert str(MAX_WEB_SEEDS) in refused.message
    known = core.add_web_seed(AddWebSeed(info_hash, "http://127.0.0.1/0/"), 0.0)
    assert known == WebSeedAdded(info_hash, "http://127.0.0.1/0/", False)  # no cap for a known


def test_an_added_web_seed_starts_at_once_on_an_open_torrent() -> None:
    core = full_core()
    info_hash = add(core, web_torrent())
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 0.0)
    core.take_outbox()
    core.add_web_seed(AddWebSeed(info_hash, MIRROR), 0.0)
    [(_, connect)] = sent(core, ConnectWebSeed)
    assert connect == ConnectWebSeed(info_hash, MIRROR)
    assert rows(core) == {MIRROR: (WebSeedUrlState.CONNECTED, "")}


def test_web_seeds_switched_off_show_disabled_and_never_start() -> None:
    core = full_core(web_seeds=False)
    info_hash = add(core, web_torrent([MIRROR, "ftp://x/"]))
    core.handle(STORAGE, TorrentOpened(info_hash, Bitfield(NUM_PIECES).to_bytes()), 0.0)
    core.tick(1.0)
    assert not sent(core, ConnectWebSeed)
    assert [state for state, _ in rows(core).values()] == [
        WebSeedUrlState.DISABLED,
        WebSeedUrlState.INVALID,
    ]


def test_rows_count_the_bytes_of_closed_sessions_and_the_live_one() -> None:
    seeds = WebSeeds()
    seeds.add(MIRROR, user=False)
    entry = seeds.get(MIRROR)
    assert entry is not None
    seeds.credit(MIRROR, 100)
    seeds.started(entry, b"pa1")
    assert seeds.connected(b"pa1", MIRROR, "pa1/1") is entry
    [row] = seeds.rows(lambda key: 50 if key == "pa1/1" else 0, enabled=True)
    assert row == WebSeedRow(MIRROR, WebSeedUrlState.CONNECTED, "", 150, 0)


PERSIST_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import random, sys
from pathlib import Path
from torviz.services.coordinator.core import Coordinator
from torviz.services.coordinator.daemon.run import _restore
from torviz.services.coordinator.session_store import SessionStore, StoreListener
from torviz.shared.bus import AddTorrent, AddWebSeed
from torviz.shared.config import CoordinatorConfig
from torviz.shared.types import PeerId

path, metainfo = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()

def core(store):
    return Coordinator(
        peer_id=PeerId(b"-TV0100-" + b"x" * 12), listen_port=6881, storage_endpoint="ipc:///x",
        config=CoordinatorConfig(download_dir="/dl"), rng=random.Random(1),
        session=StoreListener(store),
    )

store = SessionStore(path)
first = core(store)
added = first.add_torrent(AddTorrent(metainfo, "", web_seeds=("http://127.0.0.2/given/",)), 0.0)
first.add_web_seed(AddWebSeed(added.info_hash, "http://127.0.0.3/later/"), 0.0)
store.close()

store = SessionStore(path)
[saved] = store.load()
print("saved", *saved.web_seeds)
second = core(store)
_restore(second, store)
store.close()
[status] = second.status(0.0).torrents
print("rows", *(row.url for row in status.web_seeds))
"""


def test_the_users_web_seeds_come_back_after_a_restart(tmp_path: Path) -> None:
    torrent = tmp_path / "t.torrent"
    torrent.write_bytes(web_torrent([MIRROR]))
    result = subprocess.run(
        [sys.executable, "-c", PERSIST_SCRIPT, str(tmp_path / "session.sqlite"), str(torrent)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "saved http://127.0.0.2/given/ http://127.0.0.3/later/",  # url-list is not kept
        f"rows {MIRROR} http://127.0.0.2/given/ http://127.0.0.3/later/",
    ]


OLD_DATABASE_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import sqlite3, sys
from torviz.services.coordinator.session_store import SessionStore
from torviz.shared.types import InfoHash

db = sqlite3.connect(sys.argv[1])
db.execute("CREATE TABLE torrents (info_hash BLOB PRIMARY KEY, metainfo BLOB NOT NULL, "
           "save_path TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0, added_at REAL NOT NULL, "
           "uploaded INTEGER NOT NULL DEFAULT 0, downloaded INTEGER NOT NULL DEFAULT 0, "
           "magnet TEXT NOT NULL DEFAULT '')")
db.execute("INSERT INTO torrents (info_hash, metainfo, save_path, added_at) VALUES (?, ?, ?, 1)",
           (b"a" * 20, b"meta", "/dl"))
db.execute("INSERT INTO torrents (info_hash, metainfo, save_path, added_at) VALUES (?, ?, ?, 2)",
           (b"b" * 20, b"meta", "/dl"))
db.commit()
db.close()
store = SessionStore(__import__("pathlib").Path(sys.argv[1]))
store.set_web_seeds(InfoHash(b"b" * 20), ("http://x/",))
store.close()
store = SessionStore(__import__("pathlib").Path(sys.argv[1]))
print([row.web_seeds for row in store.load()])
store._db.execute("UPDATE torrents SET web_seeds = 'not json'")
print([row.web_seeds for row in store.load()])
store.close()
"""


def test_a_database_of_an_earlier_version_gets_the_web_seeds_column(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", OLD_DATABASE_SCRIPT, str(tmp_path / "session.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[(), ('http://x/',)]", "[(), ()]"]
