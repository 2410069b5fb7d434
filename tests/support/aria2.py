"""aria2 (Debian package aria2) as a seeder for interop tests: a BitTorrent client that is not
libtorrent, announcing to opentracker and serving a torrent whose data is already on disk.

Strategy: `start_aria2_seeder` runs `aria2c` on one .torrent with the data in place
(`--check-integrity`: it hashes the data first and seeds only what verified), seeding forever
(`--seed-ratio=0.0`), with DHT, local peer discovery and peer exchange off, so that the
tracker is its only source of peers. `--interface` binds every socket of it to one address:
it listens there and opentracker records that address for its announces. aria2c runs under
the supervisor of testing/opentracker.py (`--supervise`), like opentracker itself.
Ready means its log (`--log`, level info) shows the data verified, the port listened on and
an announce sent with `event=started`; a test that needs to know opentracker took the
announce asks opentracker (`announced_seeders`, a scrape).

Rules:
- No aria2c outlives the test: the supervisor stops it on SIGTERM and when its stdin closes
  (the test process died), and `ManagedProcess` is reaped by its owner or by
  `kill_leftovers()`; `Aria2Seeder.stop` also kills the aria2c pid if it outlived both.
- `--no-conf`: a user's ~/.aria2/aria2.conf never changes what a test runs.
- Every wait is bounded and fails naming the seeder, what was awaited and its log's tail.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from testing.processes import ManagedProcess, StopOnExit, SwarmError, process_exists
from testing.swarm import free_port
from torviz.shared.bencode import decode
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "ARIA2C",
    "Aria2Config",
    "Aria2Seeder",
    "announced_seeders",
    "missing_aria2",
    "seeder_argv",
    "start_aria2_seeder",
    "wait_announced",
]

ARIA2C = "aria2c"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_POLL_S = 0.1
_LOG_TAIL_BYTES = 3000
_SCRAPE_TIMEOUT_S = 2.0
_MAX_REPLY = 64 * 1024


def missing_aria2() -> str | None:
    """Why aria2 seeders cannot run here (None when ``aria2c`` is on the PATH)."""
    if shutil.which(ARIA2C) is None:
        return "aria2c (Debian package aria2) is not installed"
    return None


@dataclass(frozen=True, slots=True)
class Aria2Config:
    """One aria2c seeder.

    Attributes:
        torrent: the .torrent file.
        data_dir: the folder holding the torrent's content (its save path: ``NAME/...`` of a
            multi-file torrent lies in it).
        listen_host: the address it binds every socket to (listening, announces).
        listen_port: its TCP port for peers.
        log_path: its log file (level info: verification, listening, announces).
        upload_limit: bytes per second it uploads, 0 for no limit.
    """

    torrent: Path
    data_dir: Path
    listen_host: str
    listen_port: int
    log_path: Path
    upload_limit: int = 0


def seeder_argv(config: Aria2Config) -> list[str]:
    """The ``aria2c`` command line of a seeder."""
    return [
        ARIA2C,
        "--no-conf=true",
        "--seed-ratio=0.0",  # 0.0: seed whatever the share ratio, until stopped
        "--check-integrity=true",
        "--bt-seed-unverified=false",
        "--enable-dht=false",
        "--enable-dht6=false",
        "--bt-enable-lpd=false",
        "--enable-peer-exchange=false",
        "--disable-ipv6=true",
        f"--interface={config.listen_host}",
        f"--listen-port={config.listen_port}",
        f"--max-upload-limit={config.upload_limit}",
        f"--dir={config.data_dir}",
        "--file-allocation=none",
        "--auto-file-renaming=false",
        "--allow-overwrite=false",
        f"--log={config.log_path}",
        "--log-level=info",
        "--console-log-level=warn",
        "--summary-interval=0",
        "--enable-color=false",
        str(config.torrent),
    ]


class Aria2Seeder(StopOnExit):
    """A running aria2c seeder (made by `start_aria2_seeder`); stop it with `stop()` or use it
    as a context manager."""

    def __init__(self, config: Aria2Config, process: ManagedProcess, aria2_pid: int) -> None:
        self.config = config
        self.process = process
        self.aria2_pid = aria2_pid

    @property
    def address(self) -> PeerAddress:
        return PeerAddress(self.config.listen_host, self.config.listen_port)

    def log_text(self) -> str:
        """Its log so far ('' before it wrote one)."""
        try:
            return self.config.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        """The end of its log and of its console output, for failure messages."""
        return f"log: {self.log_text()[-_LOG_TAIL_BYTES:]} console: {self.process.stderr_tail()}"

    def wait_ready(self, timeout: float) -> None:
        """Wait until the data verified, the port listens and an announce went out.

        Raises:
            SwarmError: ``process_exited``, ``not_ready`` (a verification or bind failure in
                its log) or ``timeout``; the message holds its log's tail.
        """
        deadline = time.monotonic() + timeout
        port = self.config.listen_port
        wanted = {
            "its data verified": "Verification finished successfully",
            f"listening on port {port}": f"listening on TCP port {port}",
            "an announce sent": "event=started",
        }
        while True:
            log = self.log_text()
            for failure in ("failed to bind TCP port", "Checksum error detected", "errorCode="):
                if failure in log:
                    raise SwarmError("not_ready", f"{self!r}: {failure!r}; {self.log_tail()}")
            missing = [what for what, line in wanted.items() if line not in log]
            if not missing:
                return
            if not self.process.is_running():
                raise SwarmError(
                    "process_exited", f"{self!r} exited before {missing[0]}; {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise SwarmError(
                    "timeout", f"{self!r}: not {missing[0]} in {timeout:.0f} s; {self.log_tail()}"
                )
            time.sleep(_POLL_S)

    def stop(self) -> int | None:
        """Stop the supervisor (which stops aria2c); kill aria2c if it outlived it. Safe to
        call again. Returns the supervisor's exit code."""
        code = self.process.stop()
        if process_exists(self.aria2_pid):
            try:
                cmdline = Path(f"/proc/{self.aria2_pid}/cmdline").read_bytes()
            except OSError:
                cmdline = b""
            if ARIA2C.encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.aria2_pid, signal.SIGKILL)
        return code

    def __repr__(self) -> str:
        return f"Aria2Seeder({self.config.listen_host}:{self.config.listen_port})"


def start_aria2_seeder(
    torrent: Path,
    data_dir: Path,
    listen_host: str,
    log_dir: Path,
    *,
    upload_limit: int = 0,
    netns: str | None = None,
    timeout: float = 30.0,
) -> Aria2Seeder:
    """Start an aria2c seeder and wait until it is ready (`Aria2Seeder.wait_ready`).

    Args:
        torrent: the .torrent file.
        data_dir: the folder holding the content (the torrent's save path).
        listen_host: the address it binds to: a loopback address, or with ``netns`` one of
            that namespace's addresses.
        log_dir: its log (``aria2-HOST.log``) and console output go here.
        upload_limit: bytes per second, 0 for no limit.
        netns: run it in this network namespace (``ip netns exec``; testing/hosts.py).
        timeout: seconds to wait for it to be ready.

    Raises:
        SwarmError: ``process_exited``, ``not_ready`` or ``timeout``; it is stopped first.
    """
    if netns is None:
        port = free_port(listen_host, udp=False)
    else:
        from testing.hosts import call_in_netns

        port = call_in_netns(netns, free_port, listen_host)
    log_dir.mkdir(parents=True, exist_ok=True)
    config = Aria2Config(
        torrent=torrent,
        data_dir=data_dir,
        listen_host=listen_host,
        listen_port=port,
        log_path=log_dir / f"aria2-{listen_host}.log",
        upload_limit=upload_limit,
    )
    config.log_path.unlink(missing_ok=True)
    supervisor = [sys.executable, "-m", "testing.opentracker", "--supervise", "--"]
    if netns is not None:
        supervisor = ["ip", "netns", "exec", netns, *supervisor]
    pythonpath = os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))
    process = ManagedProcess(
        f"aria2c@{listen_host}:{port}",
        [*supervisor, *seeder_argv(config)],
        cwd=_REPO_ROOT,
        env={"PYTHONPATH": pythonpath},
        log_path=log_dir / f"aria2-{listen_host}.console",
    )
    seeder: Aria2Seeder | None = None
    try:
        started = process.wait_event("started", timeout)
        seeder = Aria2Seeder(config, process, int(started["pid"]))
        seeder.wait_ready(timeout)
    except BaseException:
        if seeder is not None:
            seeder.stop()
        else:
            process.stop()
        raise
    return seeder


def _scrape(host: str, port: int, info_hash: InfoHash) -> int:
    query = urllib.parse.quote(info_hash.raw)
    connection = http.client.HTTPConnection(host, port, timeout=_SCRAPE_TIMEOUT_S)
    try:
        connection.request("GET", f"/scrape?info_hash={query}")
        body = connection.getresponse().read(_MAX_REPLY)
    finally:
        connection.close()
    document = decode(body, strict=False)
    files = document.get(b"files", {}) if isinstance(document, dict) else {}
    entry = files.get(info_hash.raw, {}) if isinstance(files, dict) else {}
    complete = entry.get(b"complete", 0) if isinstance(entry, dict) else 0
    return complete if isinstance(complete, int) else 0


def announced_seeders(
    host: str, port: int, info_hash: InfoHash, *, netns: str | None = None
) -> int:
    """How many seeders opentracker at ``host``:``port`` knows for ``info_hash`` (a scrape's
    ``complete``); run from ``netns`` when given.

    Raises:
        OSError, http.client.HTTPException: the tracker did not answer.
    """
    if netns is None:
        return _scrape(host, port, info_hash)
    from testing.hosts import call_in_netns

    return call_in_netns(netns, _scrape, host, port, info_hash)


def wait_announced(
    host: str,
    port: int,
    info_hash: InfoHash,
    count: int,
    timeout: float,
    *,
    netns: str | None = None,
) -> None:
    """Wait until opentracker lists at least ``count`` seeders of ``info_hash``.

    Raises:
        SwarmError: ``timeout`` with the last count seen.
    """
    deadline = time.monotonic() + timeout
    seen = -1
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            seen = announced_seeders(host, port, info_hash, netns=netns)
            if seen >= count:
                return
        if time.monotonic() > deadline:
            raise SwarmError(
                "timeout",
                f"opentracker {host}:{port} lists {seen} seeders of {info_hash.hex}, "
                f"not {count}, after {timeout:.0f} s",
            )
        time.sleep(_POLL_S)
