"""The daemon's session database, in a gevent-patched child process (as in the daemon)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
from gevent import monkey
monkey.patch_all()
import sys
from pathlib import Path
from torviz.services.coordinator.session_store import SessionStore
from torviz.shared.types import InfoHash

path = Path(sys.argv[1])
a, b = InfoHash(b"a" * 20), InfoHash(b"b" * 20)
store = SessionStore(path)
store.add(a, b"meta-a", "/dl/a", paused=False)
store.add(b, b"meta-b", "/dl/b", paused=False)
store.set_paused(b, True)
store.set_totals({a: (5, 7), b: (1, 2)})
store.remove(a)
store.close()  # waits for the queued writes

again = SessionStore(path)
[row] = again.load()
assert (row.info_hash, row.metainfo, row.save_path, row.paused) == (b, b"meta-b", "/dl/b", True)
assert (row.uploaded, row.downloaded) == (1, 2)
again.close()

path.write_bytes(b"this is not a database" * 100)
fresh = SessionStore(path)
assert fresh.load() == []
fresh.close()
print("ok", len(list(path.parent.glob("*.corrupt-*"))))
"""


def test_writes_land_in_order_and_survive_a_restart_and_a_corrupt_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "session.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok", "1"]


MAGNET_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import sqlite3
import sys
from pathlib import Path
from torviz.services.coordinator.session_store import SessionStore
from torviz.shared.types import InfoHash

path = Path(sys.argv[1])
# A database of the version before magnet links: no magnet column.
old = sqlite3.connect(path)
old.execute(
    "CREATE TABLE torrents (info_hash BLOB PRIMARY KEY, metainfo BLOB NOT NULL, "
    "save_path TEXT NOT NULL, paused INTEGER NOT NULL DEFAULT 0, added_at REAL NOT NULL, "
    "uploaded INTEGER NOT NULL DEFAULT 0, downloaded INTEGER NOT NULL DEFAULT 0)"
)
old.execute("INSERT INTO torrents VALUES (?, ?, '/dl/old', 0, 1.0, 0, 0)", (b"o" * 20, b"meta-o"))
old.commit()
old.close()

a, b = InfoHash(b"a" * 20), InfoHash(b"b" * 20)
store = SessionStore(path)
store.add(a, b"", "/dl/a", paused=False, magnet="magnet:?xt=urn:btih:" + "61" * 20)
store.add(b, b"", "/dl/b", paused=True, magnet="magnet:?xt=urn:btih:" + "62" * 20)
store.add_metadata_piece(b, 40000, 0, b"b0")  # gone with the .torrent below
store.set_metainfo(b, b"meta-b")
store.add_metadata_piece(a, 99, 0, b"another size: replaced")
store.add_metadata_piece(a, 40000, 1, b"a1")
store.add_metadata_piece(a, 40000, 0, b"a0")
# The coordinator's listener: a magnet torrent is kept as its link, then as its .torrent.
from torviz.services.coordinator.core.torrent import Torrent
from torviz.services.coordinator.session_store import StoreListener
from torviz.shared.bus import TorrentState
from torviz.shared.magnet import parse_magnet
uri = "magnet:?xt=urn:btih:" + "63" * 20 + "&dn=c&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce"
fetching = Torrent(None, b"", "/dl/c", 0.0, parse_magnet(uri), TorrentState.METADATA)
StoreListener(store).torrent_added(fetching, paused=False)
store.close()
store = SessionStore(path)
[kept] = [row for row in store.load() if row.info_hash.raw[:1] == b"c"]
assert kept.metainfo == b"" and parse_magnet(kept.magnet) == parse_magnet(uri), kept
fetching.metainfo_bytes = b"meta-c"
StoreListener(store).torrent_fetched(fetching)
store.close()

again = SessionStore(path)
rows = {row.info_hash.raw[:1]: row for row in again.load()}
assert rows[b"o"].metainfo == b"meta-o" and rows[b"o"].magnet == ""
assert (rows[b"a"].metainfo, rows[b"a"].magnet) == (b"", "magnet:?xt=urn:btih:" + "61" * 20)
assert rows[b"a"].metadata == (40000, {0: b"a0", 1: b"a1"})
assert rows[b"b"].metadata is None and rows[b"o"].metadata is None
# The link stays beside its .torrent: its so= and ws= still count.
b_link = "magnet:?xt=urn:btih:" + "62" * 20
assert (rows[b"b"].metainfo, rows[b"b"].magnet, rows[b"b"].paused) == (b"meta-b", b_link, True)
assert rows[b"c"].metainfo == b"meta-c" and parse_magnet(rows[b"c"].magnet) == parse_magnet(uri)
again.close()
print("ok")
"""


def test_a_magnet_link_is_kept_and_its_torrent_beside_it_once_fetched(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", MAGNET_SCRIPT, str(tmp_path / "session.sqlite")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok"]
