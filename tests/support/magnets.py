"""Helpers for the magnet-link interop tests: torviz's config with a known listen port, the raw
info dictionary of a .torrent, a ``download MAGNET`` run whose stdout lines are timestamped, and
a watch on the resident memory of a process tree.

Strategy: ``download`` runs as a real subprocess (the user's command) with a config that pins
the peer agent to one port on 127.0.0.1, so libtorrent peers and hostile test peers can dial
torviz while it is still fetching the metadata: tests decide who talks to torviz first, which
makes the order of events deterministic. Every wait is bounded, every process is stopped by
``close``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from tests.support.daemon import COORDINATOR, descendants

__all__ = ["DownloadRun", "RssWatch", "info_dict", "info_hash_of", "rss_kib", "torviz_config"]


def torviz_config(path: Path, listen_port: int, *, metadata_timeout: float = 20.0) -> Path:
    """Write a loopback-only torviz config whose peer agent listens on ``listen_port``.

    Args:
        path: where to write the TOML file.
        listen_port: the one port of 127.0.0.1 the peer agent listens on.
        metadata_timeout: seconds a peer may take to answer a metadata request.

    Returns:
        ``path``.
    """
    path.write_text(
        f"""
[coordinator]
metadata_timeout = {metadata_timeout}

[peer_agent]
listen_host = "127.0.0.1"
listen_ports = [{listen_port}, {listen_port}]

[tracker_agent]
dht = false
announce_timeout = 5.0
bind_address = "127.0.0.1"
"""
    )
    return path


def info_dict(torrent: Path) -> bytes:
    """The info dictionary of a .torrent made by ``testing.content.make_torrent``, verbatim.

    libtorrent writes keys sorted, so ``info`` is the last one: its value runs from after
    ``4:info`` to the closing ``e`` of the outer dictionary.

    Raises:
        AssertionError: the bytes are not laid out so.
    """
    data = torrent.read_bytes()
    start = data.rindex(b"4:info") + len(b"4:info")
    assert data.endswith(b"ee"), "the .torrent does not end with its info dictionary"
    return data[start:-1]


def info_hash_of(info: bytes) -> str:
    return hashlib.sha1(info).hexdigest()


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssWatch:
    """Samples the resident memory of a process and its descendants every 0.2 s, in a thread.

    ``peak`` maps each pid seen to its highest RSS in KiB; ``root_peak`` is the root's.
    """

    def __init__(self, root: int, max_seconds: float = 600.0) -> None:
        self.root = root
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, name="rss-watch", daemon=True)
        self._thread.start()

    @property
    def root_peak(self) -> int:
        return self.peak.get(self.root, 0)

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            for pid in {self.root, *descendants(self.root)}:
                self.peak[pid] = max(self.peak.get(pid, 0), rss_kib(pid))
            self._stop.wait(0.2)

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._thread.join(timeout=5)
        return dict(self.peak)


class DownloadRun:
    """``torviz-coordinator download SOURCE -o OUT --config CONFIG`` as a subprocess.

    Each stdout line is kept with the monotonic time it was read; stderr goes to a file.

    Args:
        source: a magnet link or .torrent path.
        out: the download directory.
        config: the TOML config.
        log: where stderr goes.
        extra: more ``download`` arguments.
    """

    def __init__(self, source: str, out: Path, config: Path, log: Path, *extra: str) -> None:
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        self.log = log
        self._stderr: IO[bytes] = log.open("ab")
        self.process = subprocess.Popen(
            [*COORDINATOR, "download", source, "-o", str(out), "--config", str(config), *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._reader = threading.Thread(target=self._read, name="download-stdout", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            for part in raw.decode("utf-8", "replace").replace("\r", "\n").splitlines():
                if part.strip():
                    self.lines.append((time.monotonic(), part.strip()))

    @property
    def stdout(self) -> str:
        return "\n".join(line for _, line in self.lines)

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def first_line_with(self, text: str) -> float | None:
        """Seconds from the start to the first stdout line containing ``text``."""
        return next((at - self.started for at, line in self.lines if text in line), None)

    def wait(self, timeout: float) -> int:
        """Wait for the exit code; raises AssertionError (with the output) after ``timeout``."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"download still running after {timeout} s; stdout: {self.stdout[-1500:]}; "
                f"stderr: {self.stderr[-1500:]}"
            ) from None
        self._reader.join(timeout=5)
        return code

    def close(self) -> None:
        """Stop the download and every process under it."""
        children = descendants(self.process.pid)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in children):
            time.sleep(0.1)
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(timeout=5)
        self._stderr.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
