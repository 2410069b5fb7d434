"""Fixtures for the runtime tests: a zmq.green context, short ipc paths, service processes.

The pytest process itself is not monkey-patched: bus sockets here run in greenlets of an
unpatched gevent hub (zmq.green needs only the hub), and every wait goes through gevent with a
timeout. Anything that needs a patched process runs ``bus_service_script.py`` as a subprocess,
which is always killed at the end of the test.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq.green

from torviz.shared.runtime.zap import running_zap_handler

SCRIPT = Path(__file__).with_name("bus_service_script.py")
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def green_context() -> Iterator[zmq.Context[Any]]:
    """A fresh zmq.green context; its ZAP handler, if a CURVE server started one, is stopped
    before the context is destroyed."""
    context: zmq.Context[Any] = zmq.green.Context()
    try:
        yield context
    finally:
        handler = running_zap_handler(context)
        if handler is not None:
            handler.stop()
        context.destroy(linger=0)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for ipc:// endpoints (their paths are limited to ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="tvz-", dir="/tmp") as path:
        yield Path(path)


class ServiceProcess:
    """``bus_service_script.py MODE ENDPOINT MARKER`` running as a child process."""

    def __init__(self, mode: str, endpoint: str, workdir: Path) -> None:
        self.marker = workdir / f"{mode}.marker"
        self.stderr_path = workdir / f"{mode}.stderr"
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, str(SCRIPT), mode, endpoint, str(self.marker)],
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=REPO,
            )

    def ready(self, timeout: float = 10.0) -> str:
        """Wait for the ``READY <endpoint>`` line and return the bound endpoint."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buffer = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"service not ready in {timeout}s: {self.stderr()}"
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 4096)
                assert chunk, f"service exited before it was ready: {self.stderr()}"
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode()
        assert line.startswith("READY "), line
        return line.removeprefix("READY ")

    def wait(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)

    def signal(self, signum: signal.Signals) -> None:
        self.proc.send_signal(signum)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def markers(self) -> list[str]:
        return self.marker.read_text().splitlines() if self.marker.exists() else []

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start_service(short_dir: Path) -> Iterator[Any]:
    """Start service processes; every one is killed at the end of the test."""
    started: list[ServiceProcess] = []

    def start(mode: str, endpoint: str = "-") -> ServiceProcess:
        service = ServiceProcess(mode, endpoint, short_dir)
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.kill()
