"""A daemon that is starting (its process runs, its control socket is not bound yet) is waited
for; a dead one's leftovers are reported at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from torviz.services.coordinator.daemon.locations import find_daemon
from torviz.shared.runtime.sockets import DaemonUnreachableError, _probe


def test_a_socket_bound_while_waiting_is_used() -> None:
    with tempfile.TemporaryDirectory(prefix="tv-") as folder:
        path = os.path.join(folder, "control.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)

        def bind_late() -> None:
            time.sleep(0.5)
            server.bind(path)
            server.listen(1)

        binder = threading.Thread(target=bind_late)
        binder.start()
        try:
            with pytest.raises(DaemonUnreachableError):
                _probe(f"ipc://{path}", path)  # not starting: at once
            started = time.monotonic()
            _probe(f"ipc://{path}", path, starting=10.0)
            assert time.monotonic() - started < 5.0
        finally:
            binder.join()
            server.close()


def test_only_a_live_daemon_is_waited_for(tmp_path: Path) -> None:
    (tmp_path / "daemon.json").write_text(json.dumps({"pid": os.getpid(), "control": "ipc://x"}))
    assert find_daemon(None, str(tmp_path)).running
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    (tmp_path / "daemon.json").write_text(json.dumps({"pid": int(gone.stdout), "control": "x"}))
    assert not find_daemon(None, str(tmp_path)).running
