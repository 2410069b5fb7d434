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
