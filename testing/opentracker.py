"""opentracker on loopback for integration tests, plus the small supervisor it runs under.

Strategy: Debian builds opentracker as a closed tracker. Each instance gets its own root
directory holding its config and `whitelist.txt` (40 hex digits per line). As root,
opentracker chroots into that directory and drops to `nobody`, so the directory is 0755, the
files 0644, and the whitelist is named relative to the root (an absolute path would not
resolve inside the chroot). It serves HTTP and UDP on one port, bound to a loopback address.

Rules:
- opentracker never runs directly under the test process: it runs under
  `python -m testing.opentracker --supervise -- /usr/bin/opentracker -f CONF`, which
  terminates it on SIGTERM or when its stdin closes (a test process killed without cleanup),
  and forwards SIGHUP. A parent-death signal would not do: the kernel clears it when
  opentracker drops to another user.
- opentracker sets SO_REUSEPORT, so a port another process took is NOT an error for it: after
  start-up exactly one listener must own the port, else another port is tried.
- Ready means an HTTP announce is answered and, when hashes are whitelisted, accepted. The
  probe announces from port 1 and withdraws (`event=stopped`) at once: opentracker checks
  its whitelist only when adding a peer.
- A whitelist change is written to a new file, renamed over the old one, then SIGHUP makes
  opentracker re-read it; the change is confirmed by probing.
- With `netns` (a simulated host, testing/hosts.py) opentracker runs under
  `ip netns exec`, and the port choice, probes and listener count run on a thread moved into
  that namespace: the test process's own namespace cannot reach the host's address.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar

from testing.processes import ManagedProcess, StopOnExit, SwarmError, process_exists
from testing.swarm import OPENTRACKER_BINARY, free_port
from torviz.shared.types import InfoHash, PeerAddress

__all__ = ["InfoHashLike", "OpenTracker", "announce_probe", "listener_count", "start_opentracker"]

InfoHashLike = InfoHash | str | bytes

_REPO_ROOT = Path(__file__).resolve().parents[1]
_WHITELIST = "whitelist.txt"
_PROBE_PEER_ID = b"-TZ0000-fixtureprobe"
_PROBE_HASH = InfoHash(b"\x00" * 19 + b"\x01")
_MAX_REPLY = 64 * 1024
_PROBE_TIMEOUT_S = 0.5
_POLL_S = 0.05

_T = TypeVar("_T")


def _to_info_hash(value: InfoHashLike) -> InfoHash:
    if isinstance(value, InfoHash):
        return value
    if isinstance(value, bytes):
        return InfoHash(value)
    return InfoHash.from_hex(value)


def _write_whitelist(root: Path, hashes: Iterable[InfoHash]) -> None:
    # Write-then-rename: opentracker may re-read at any moment and must never see half a file.
    fd, tmp_name = tempfile.mkstemp(prefix=".whitelist-", dir=root)
    with os.fdopen(fd, "w") as tmp:
        tmp.write("".join(f"{h.hex}\n" for h in hashes))
    os.chmod(tmp_name, 0o644)
    os.replace(tmp_name, root / _WHITELIST)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _announce(host: str, port: int, info_hash: InfoHash, event: str) -> bytes:
    query = urllib.parse.urlencode(
        {
            "info_hash": info_hash.raw,
            "peer_id": _PROBE_PEER_ID,
            "port": 1,
            "uploaded": 0,
            "downloaded": 0,
            "left": 1,
            "event": event,
            "compact": 1,
            "numwant": 0,
        },
        # quote, not quote_plus: a 0x20 byte of the hash must travel as %20, since opentracker
        # reads "+" as 0x2B and would then be asked about a different info hash.
        quote_via=urllib.parse.quote,
    )
    connection = http.client.HTTPConnection(host, port, timeout=_PROBE_TIMEOUT_S)
    try:
        connection.request("GET", f"/announce?{query}")
        return connection.getresponse().read(_MAX_REPLY)
    finally:
        connection.close()


def announce_probe(host: str, port: int, info_hash: InfoHash) -> bytes:
    """Announce as 127.0.0.x:1 and withdraw at once; returns the first reply's body.

    opentracker checks its whitelist only when a peer is added (an `event=stopped` announce is
    answered for any hash), so the probe really announces and then sends `event=stopped`,
    leaving no peer behind. Replies are read up to 64 KiB.

    Raises:
        OSError, http.client.HTTPException: the tracker did not answer.
    """
    body = _announce(host, port, info_hash, "started")
    if b"failure reason" not in body:
        _announce(host, port, info_hash, "stopped")
    return body


def listener_count(host: str, port: int, proto: Literal["tcp", "udp"] = "tcp") -> int | None:
    """How many sockets are bound (UDP) or listening (TCP) on IPv4 `host`:`port`.

    Read from /proc/net: opentracker sets SO_REUSEPORT, so a second process can bind a port that
    is already taken and nothing fails. Returns None for IPv6 or where /proc/net is not available.
    The calling thread's network namespace is read (/proc/net is the main thread's).
    """
    if ":" in host:
        return None
    try:
        lines = (Path("/proc/thread-self/net") / proto).read_text().splitlines()[1:]
    except OSError:
        try:
            lines = (Path("/proc/net") / proto).read_text().splitlines()[1:]
        except OSError:
            return None
    packed = socket.inet_aton(host)
    want = f"{int.from_bytes(packed, 'little'):08X}:{port:04X}"
    count = 0
    for line in lines:
        fields = line.split()
        # TCP state 0A is LISTEN; UDP sockets bound to a port show state 07.
        if len(fields) > 3 and fields[1] == want and (proto == "udp" or fields[3] == "0A"):
            count += 1
    return count


class OpenTracker(StopOnExit):
    """A running opentracker (HTTP and UDP on one loopback port) and its whitelist.

    Made by `start_opentracker`; stop it with `stop()` or by using it as a context manager.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        root_dir: Path,
        process: ManagedProcess,
        opentracker_pid: int,
        info_hashes: Iterable[InfoHash],
        netns: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.root_dir = root_dir
        self.process = process
        self.opentracker_pid = opentracker_pid
        self.netns = netns
        self._hashes = list(info_hashes)
        self._lock = threading.Lock()

    @property
    def address(self) -> PeerAddress:
        return PeerAddress(self.host, self.port)

    @property
    def http_announce_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/announce"

    @property
    def http_scrape_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}/scrape"

    @property
    def udp_announce_url(self) -> str:
        return f"udp://{_url_host(self.host)}:{self.port}/announce"

    @property
    def pids(self) -> tuple[int, int]:
        """The supervisor's pid and opentracker's own."""
        return (self.process.pid, self.opentracker_pid)

    @property
    def info_hashes(self) -> tuple[InfoHash, ...]:
        with self._lock:
            return tuple(self._hashes)

    def is_authorized(self, info_hash: InfoHashLike) -> bool:
        """Whether opentracker accepts announces for `info_hash` right now.

        Raises:
            OSError, http.client.HTTPException: the tracker did not answer.
        """
        body = self._probe(_to_info_hash(info_hash))
        return b"failure reason" not in body

    def _probe(self, info_hash: InfoHash) -> bytes:
        return _in_netns(self.netns, announce_probe, self.host, self.port, info_hash)

    def add_info_hash(self, info_hash: InfoHashLike, timeout: float = 5.0) -> None:
        """Whitelist one more hash and wait until opentracker accepts it (SIGHUP reload)."""
        wanted = _to_info_hash(info_hash)
        with self._lock:
            if wanted not in self._hashes:
                self._hashes.append(wanted)
            hashes = list(self._hashes)
        self._reload(hashes, wanted, expect=True, timeout=timeout)

    def remove_info_hash(self, info_hash: InfoHashLike, timeout: float = 5.0) -> None:
        """Drop a hash from the whitelist and wait until opentracker refuses it."""
        unwanted = _to_info_hash(info_hash)
        with self._lock:
            self._hashes = [h for h in self._hashes if h != unwanted]
            hashes = list(self._hashes)
        self._reload(hashes, unwanted, expect=False, timeout=timeout)

    def _reload(
        self, hashes: list[InfoHash], probe: InfoHash, *, expect: bool, timeout: float
    ) -> None:
        _write_whitelist(self.root_dir, hashes)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.is_authorized(probe) == expect:
                    return
            time.sleep(_POLL_S)
        raise SwarmError(
            "timeout", f"opentracker did not apply its new whitelist within {timeout:.1f} s"
        )

    def wait_ready(self, timeout: float) -> None:
        """Wait until HTTP announces are answered (and, with a whitelist, accepted)."""
        with self._lock:
            probe = self._hashes[-1] if self._hashes else None
        deadline = time.monotonic() + timeout
        while True:
            if not self.process.is_running():
                raise SwarmError(
                    "process_exited",
                    f"{self.process.name} exited during start-up; "
                    f"stderr: {self.process.stderr_tail()}",
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                body = self._probe(probe or _PROBE_HASH)
                if probe is None or b"failure reason" not in body:
                    return
            if time.monotonic() >= deadline:
                raise SwarmError(
                    "timeout",
                    f"{self.process.name} not answering within {timeout:.1f} s; "
                    f"stderr: {self.process.stderr_tail()}",
                )
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Stop the supervisor (which stops opentracker); kill opentracker if it outlived it."""
        self.process.stop()
        if process_exists(self.opentracker_pid):
            try:
                cmdline = Path(f"/proc/{self.opentracker_pid}/cmdline").read_bytes()
            except OSError:
                cmdline = b""
            if OPENTRACKER_BINARY.name.encode() in cmdline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.opentracker_pid, signal.SIGKILL)

    def __repr__(self) -> str:
        return f"OpenTracker({self.host}:{self.port}, pids={self.pids})"


def _in_netns(netns: str | None, fn: Callable[..., _T], *args: Any) -> _T:
    """`fn(*args)` here, or on a thread inside network namespace `netns`."""
    if netns is None:
        return fn(*args)
    from testing.hosts import call_in_netns

    return call_in_netns(netns, fn, *args)


def start_opentracker(
    tmp_dir: Path,
    info_hashes: Iterable[InfoHashLike] = (),
    host: str = "127.0.0.1",
    *,
    ready_timeout: float = 5.0,
    attempts: int = 3,
    netns: str | None = None,
) -> OpenTracker:
    """Start opentracker on a free port of `host` with `info_hashes` whitelisted.

    Args:
        tmp_dir: a directory owned by the test; the tracker's root directory is made inside.
        info_hashes: hashes to whitelist (InfoHash, 40 hex digits or 20 raw bytes).
        host: an IPv4 loopback address, or with `netns` an address of that namespace.
        ready_timeout: seconds to wait for each start attempt to answer.
        attempts: start attempts, each on a new port, before giving up.
        netns: run opentracker in this network namespace (`ip netns exec`).

    Returns:
        The running tracker; the caller stops it (or uses it as a context manager).

    Raises:
        SwarmError: reason ``tracker_failed`` when no attempt came up.
    """
    hashes = [_to_info_hash(h) for h in info_hashes]
    root = Path(tempfile.mkdtemp(prefix="opentracker-", dir=tmp_dir))
    root.chmod(0o755)  # opentracker reads it as nobody after chroot
    _write_whitelist(root, hashes)
    failures: list[str] = []
    for _ in range(attempts):
        port = _in_netns(netns, free_port, host)
        config = root / "opentracker.conf"
        config.write_text(
            f"listen.tcp_udp {host}:{port}\n"
            f"tracker.rootdir {root}\n"
            "tracker.user nobody\n"
            f"access.whitelist {_WHITELIST}\n"
        )
        config.chmod(0o644)
        # The supervisor runs as `-m testing.opentracker`: the repository root must be
        # importable whatever the current directory of the test run.
        pythonpath = os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))
        supervisor = [sys.executable, "-m", "testing.opentracker", "--supervise", "--"]
        if netns is not None:
            supervisor = ["ip", "netns", "exec", netns, *supervisor]
        process = ManagedProcess(
            f"opentracker@{host}:{port}",
            [*supervisor, str(OPENTRACKER_BINARY), "-f", str(config)],
            cwd=_REPO_ROOT,
            env={"PYTHONPATH": pythonpath},
            log_path=root / "opentracker.log",
        )
        tracker: OpenTracker | None = None
        try:
            started = process.wait_event("started", ready_timeout)
            tracker = OpenTracker(
                host,
                port,
                root_dir=root,
                process=process,
                opentracker_pid=int(started["pid"]),
                info_hashes=hashes,
                netns=netns,
            )
            tracker.wait_ready(ready_timeout)
            listeners = _in_netns(netns, listener_count, host, port)
            if listeners not in (None, 1):
                raise SwarmError("port_taken", f"{listeners} listeners share {host}:{port}")
            return tracker
        except SwarmError as exc:
            failures.append(f"{exc.reason}: {exc}")
            if tracker is not None:
                tracker.stop()
            else:
                process.stop()
    raise SwarmError(
        "tracker_failed",
        f"opentracker did not start on {host} in {attempts} tries: {'; '.join(failures)}",
    )


# --- the supervisor (runs in its own process) ------------------------------------------------


def _emit(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _watch_stdin(stop: threading.Event) -> None:
    try:
        while os.read(sys.stdin.fileno(), 4096):
            pass
    except (OSError, ValueError):
        pass
    stop.set()


def supervise(command: list[str]) -> int:
    """Run `command` until SIGTERM/SIGINT or stdin EOF, forwarding SIGHUP; then stop it.

    Prints ``{"event":"started","pid":N}`` once the child runs, and ``{"event":"exited",...}``
    if it exits by itself. Returns the child's exit code if it exited by itself, else 0.
    """
    stop = threading.Event()
    children: list[subprocess.Popen[bytes]] = []

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGHUP)

    # Handlers first: a SIGTERM arriving during start-up must still stop the child.
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    threading.Thread(target=_watch_stdin, args=(stop,), daemon=True).start()
    # The child's stdout goes to our stderr: our stdout carries only JSON events.
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
    children.append(child)
    _emit(event="started", pid=child.pid)
    while not stop.wait(0.1):
        code = child.poll()
        if code is not None:
            _emit(event="exited", code=code)
            return code
    child.terminate()
    try:
        child.wait(timeout=3.0)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(timeout=3.0)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m testing.opentracker --supervise -- COMMAND...`."""
    parser = argparse.ArgumentParser(description="supervise a reference process for tests")
    parser.add_argument("--supervise", action="store_true", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to supervise")
    return supervise(command)


if __name__ == "__main__":
    sys.exit(main())
