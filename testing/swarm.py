"""Real-peer swarms for integration tests: libtorrent peers and opentracker as child processes.

Strategy: every reference program runs as its own process, started from the test process
and spoken to only through its stdout (one JSON object per line, read by a thread here: the
test process is not gevent-patched) and signals. `ManagedProcess` is that plumbing; `LtPeer`
drives `testing/lt_peer.py` (which also defines the config and status schema both sides
share); `Swarm` owns everything one test starts and tears it down. `testing/opentracker.py`
builds its tracker on the same plumbing.

Rules:
- Loopback only. Each peer gets its own 127.0.0.x address from a per-session counter, so a
  tracker sees distinct IPs (127.0.0.1 stays for trackers and the code under test).
- Every process is stopped: by its owner (context manager or `Swarm.close`), else by
  `kill_leftovers()` at session end or interpreter exit. Children also exit by themselves
  when their stdin closes, which covers a test process killed without any cleanup.
- Every wait is bounded and fails with a `SwarmError` whose message names the process, what
  was awaited and the tail of its stderr.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import importlib.util
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Self

from shared.errors import TorvizError
from shared.types import PeerAddress
from testing.lt_peer import LtPeerConfig, PeerConfigError, PeerStatus

if TYPE_CHECKING:
    from testing.opentracker import InfoHashLike, OpenTracker

__all__ = [
    "LT_PEER_SCRIPT",
    "LtPeer",
    "LtPeerConfig",
    "ManagedProcess",
    "PeerStatus",
    "Swarm",
    "SwarmError",
    "free_port",
    "kill_leftovers",
    "missing_interop_tools",
    "next_loopback_address",
    "process_exists",
]

LT_PEER_SCRIPT = Path(__file__).resolve().with_name("lt_peer.py")
OPENTRACKER_BINARY = Path("/usr/bin/opentracker")

_MAX_LINE = 64 * 1024
_MAX_EVENTS = 2000
_STDERR_TAIL_LINES = 60
_STOP_TIMEOUT_S = 5.0
_JOIN_TIMEOUT_S = 2.0


class SwarmError(TorvizError):
    """A reference process failed to start, reported an error, exited or timed out.

    Reasons: ``timeout``, ``process_error``, ``process_exited``, ``no_free_port``,
    ``bad_event``, ``not_ready``, ``tracker_failed``.
    """


# --- addresses and ports ---------------------------------------------------------------------

_address_lock = threading.Lock()
_address_counter = itertools.count()
_ADDRESSES_PER_BLOCK = 253  # last octet 2..254: .1 is the tracker's, .0/.255 are avoided


def next_loopback_address() -> str:
    """A loopback address not handed out before in this test session: 127.0.0.2, .3, ...

    After 127.0.0.254 it moves on to 127.0.1.2, and so on up to 127.0.255.254.

    Raises:
        SwarmError: reason ``no_free_address`` once all of them were handed out.
    """
    with _address_lock:
        index = next(_address_counter)
    block, offset = divmod(index, _ADDRESSES_PER_BLOCK)
    if block > 255:
        raise SwarmError("no_free_address", "every 127.0.x.y address was handed out")
    return f"127.0.{block}.{offset + 2}"


_ports_lock = threading.Lock()
_ports_handed_out: set[tuple[str, int]] = set()


def free_port(host: str = "127.0.0.1", *, udp: bool = True, attempts: int = 50) -> int:
    """A port on `host` that is free for TCP (and UDP when `udp`) right now.

    The sockets are closed before returning, so a racing process may still take the port:
    callers check after binding (see `opentracker.listener_count`) and retry. Ports handed
    out earlier in this session are never handed out again.

    Raises:
        SwarmError: reason ``no_free_port`` after `attempts` tries.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            if udp:
                try:
                    with socket.socket(family, socket.SOCK_DGRAM) as dgram:
                        dgram.bind((host, port))
                except OSError:
                    continue
        with _ports_lock:
            if (host, port) in _ports_handed_out:
                continue
            _ports_handed_out.add((host, port))
        return port
    raise SwarmError("no_free_port", f"no free port on {host} after {attempts} tries")


def missing_interop_tools() -> list[str]:
    """What interop tests need and this machine lacks (empty when all is there)."""
    missing = []
    if not os.access(OPENTRACKER_BINARY, os.X_OK):
        missing.append(f"{OPENTRACKER_BINARY} (Debian package opentracker)")
    if importlib.util.find_spec("libtorrent") is None:
        missing.append(f"libtorrent python bindings for {sys.executable} (pip install libtorrent)")
    return missing


# --- child processes -------------------------------------------------------------------------

_live_lock = threading.Lock()
_live: dict[int, ManagedProcess] = {}


def kill_leftovers() -> list[str]:
    """Stop every child process still running; returns their names (empty when all was clean).

    Registered with atexit and called by the session fixture: a safety net behind the fixtures
    that normally stop their own processes.
    """
    with _live_lock:
        leftovers = list(_live.values())
    for process in leftovers:  # all at once: each may take a second to shut down
        process.request_stop()
    for process in reversed(leftovers):
        process.stop(timeout=2.0)
    return [p.name for p in leftovers]


atexit.register(kill_leftovers)


class ManagedProcess:
    """A child process whose stdout is a stream of JSON-object lines, read by a thread.

    The child gets a pipe as stdin and is expected to exit when it reaches EOF. The last event
    of each kind is kept (plus a bounded history), and waiters are woken on every event.

    Args:
        name: shown in every error message.
        argv: the command line.
        cwd: working directory of the child.
        env: extra environment variables for the child.
        log_path: where the child's stderr is copied in full (optional).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self._cond = threading.Condition()
        self._last: dict[str, dict[str, Any]] = {}
        self._history: collections.deque[dict[str, Any]] = collections.deque(maxlen=_MAX_EVENTS)
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        self._eof = False
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
        self.pid = self.popen.pid
        with _live_lock:
            _live[self.pid] = self
        self._log = log_path.open("ab") if log_path is not None else None
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._threads = [
            threading.Thread(target=reader, args=(stream,), name=f"{name}-{label}", daemon=True)
            for reader, stream, label in (
                (self._read_stdout, self.popen.stdout, "stdout"),
                (self._read_stderr, self.popen.stderr, "stderr"),
            )
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self, stream: IO[bytes]) -> None:
        while line := stream.readline(_MAX_LINE):
            try:
                event = json.loads(line)
            except ValueError:
                event = None
            if not isinstance(event, dict) or not isinstance(event.get("event"), str):
                event = {"event": "raw", "line": line.decode("utf-8", "replace").rstrip()}
            with self._cond:
                self._last[event["event"]] = event
                self._history.append(event)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        while line := stream.readline(_MAX_LINE):
            if self._log is not None:
                self._log.write(line)
                self._log.flush()
            with self._cond:
                self._stderr.append(line.decode("utf-8", "replace").rstrip())

    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr, joined by ' | ' (for error messages)."""
        with self._cond:
            return " | ".join(self._stderr)

    def events(self) -> list[dict[str, Any]]:
        """A copy of the retained events, oldest first."""
        with self._cond:
            return list(self._history)

    def last(self, kind: str) -> dict[str, Any] | None:
        """The most recent event of `kind`, if any."""
        with self._cond:
            return self._last.get(kind)

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def wait_event(
        self,
        kind: str,
        timeout: float,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """Wait until the latest event of `kind` exists (and satisfies `predicate`).

        Raises:
            SwarmError: ``process_error`` when the child reports an error event,
                ``process_exited`` when its stdout ends first, ``timeout`` after `timeout` s.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                event = self._last.get(kind)
                if event is not None and (predicate is None or predicate(event)):
                    return event
                error = self._last.get("error")
                if error is not None and kind != "error":
                    raise SwarmError(
                        "process_error",
                        f"{self.name} reported {error.get('reason')}: {error.get('message')}; "
                        f"stderr: {' | '.join(self._stderr)}",
                    )
                if self._eof:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SwarmError(
                        "timeout",
                        f"{self.name}: no {kind!r} event within {timeout:.1f} s; "
                        f"stderr: {' | '.join(self._stderr)}",
                    )
                self._cond.wait(remaining)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=1.0)
        raise SwarmError(
            "process_exited",
            f"{self.name} exited with code {self.popen.poll()} before {kind!r}; "
            f"stderr: {self.stderr_tail()}",
        )

    def send_signal(self, signum: int) -> None:
        """Signal the child if it still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def request_stop(self) -> None:
        """Ask the child to exit (SIGTERM and stdin EOF) without waiting for it."""
        if self.popen.poll() is None:
            with contextlib.suppress(OSError):
                self.popen.terminate()
        if self.popen.stdin is not None:
            with contextlib.suppress(OSError):
                self.popen.stdin.close()

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> int | None:
        """Terminate the child (SIGTERM and stdin EOF), kill it after `timeout` s, reap it.

        Safe to call more than once. Returns the exit code (None if it could not be reaped).
        """
        self.request_stop()
        if self.popen.poll() is None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=_STOP_TIMEOUT_S)
        for thread in self._threads:
            thread.join(_JOIN_TIMEOUT_S)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr, self._log):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with _live_lock:
            _live.pop(self.pid, None)
        return self.popen.poll()


# --- libtorrent peers ------------------------------------------------------------------------


class LtPeer:
    """A libtorrent seeder or leecher in its own process (see `testing/lt_peer.py`).

    Starting it does not wait; call `wait_ready`. Use as a context manager, or let a `Swarm`
    own it, so it is stopped even when the test fails.
    """

    def __init__(
        self, config: LtPeerConfig, *, log_path: Path | None = None, netns: str | None = None
    ) -> None:
        self.config = config
        self.name = f"lt-{config.role}@{config.listen_host}"
        # In a network namespace (a simulated host, testing/hosts.py) `ip netns exec`
        # execs in place: the pid held is still the peer's own.
        wrapper = ["ip", "netns", "exec", netns] if netns else []
        self.process = ManagedProcess(
            self.name,
            [*wrapper, sys.executable, str(LT_PEER_SCRIPT), "--config", config.to_json()],
            log_path=log_path,
        )
        self._address: PeerAddress | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> PeerAddress:
        """Where this peer listens; known once `wait_ready` returned."""
        if self._address is None:
            raise SwarmError("not_ready", f"{self.name}: address unknown before wait_ready()")
        return self._address

    def wait_ready(self, timeout: float = 30.0) -> PeerAddress:
        """Wait until the peer listens, has checked its data and (seeders) announced once.

        Returns:
            The address it listens on.

        Raises:
            SwarmError: the peer failed, exited or timed out.
        """
        event = self.process.wait_event("ready", timeout)
        host, _, port = str(event.get("listen", "")).rpartition(":")
        try:
            self._address = PeerAddress(host.strip("[]"), int(port))
        except ValueError as exc:
            raise SwarmError("bad_event", f"{self.name}: bad listen address {event!r}") from exc
        return self._address

    @property
    def announce_result(self) -> str:
        """How the first announce went when the peer became ready.

        ``ok``, ``error``, ``timeout`` (no answer within 10 s) or ``none`` (not awaited: a
        leecher, or a torrent without trackers).
        """
        event = self.process.last("ready")
        if event is None:
            raise SwarmError("not_ready", f"{self.name}: not ready yet")
        return str(event.get("announce"))

    def _status(self, event: Mapping[str, Any]) -> PeerStatus:
        try:
            return PeerStatus.from_event(event)
        except PeerConfigError as exc:
            raise SwarmError("bad_event", f"{self.name}: {exc}") from exc

    def wait_finished(self, timeout: float = 60.0) -> PeerStatus:
        """Wait until every wanted piece is verified and flushed to disk."""
        return self._status(self.process.wait_event("finished", timeout))

    def wait_status(self, predicate: Callable[[PeerStatus], bool], timeout: float) -> PeerStatus:
        """Wait for a status event satisfying `predicate` (checked on the newest one)."""
        event = self.process.wait_event("status", timeout, lambda e: predicate(self._status(e)))
        return self._status(event)

    def status(self) -> PeerStatus | None:
        """The newest status snapshot, if any arrived yet."""
        event = self.process.last("status")
        return None if event is None else self._status(event)

    def tracker_events(self) -> list[dict[str, Any]]:
        """Every tracker_reply / tracker_error event seen so far."""
        kinds = ("tracker_reply", "tracker_error")
        return [e for e in self.process.events() if e["event"] in kinds]

    def is_running(self) -> bool:
        return self.process.is_running()

    def __repr__(self) -> str:
        return f"LtPeer({self.name}, pid={self.pid})"

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> int | None:
        """Terminate (then kill after `timeout` s); returns the exit code."""
        return self.process.stop(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# --- one test's swarm ------------------------------------------------------------------------


class Swarm:
    """Everything one test starts: trackers and peers, stopped together by `close()`.

    Args:
        tmp_dir: a directory owned by the test; trackers and logs go below it.
    """

    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = Path(tmp_dir)
        self.log_dir = self.tmp_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._owned: list[LtPeer | OpenTracker] = []
        self._serial = itertools.count(1)

    def next_address(self) -> str:
        """A fresh 127.0.0.x address for one peer."""
        return next_loopback_address()

    def tracker(
        self,
        info_hashes: Iterable[InfoHashLike] = (),
        *,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> OpenTracker:
        """Start an opentracker on `host` whitelisting `info_hashes`; ready when returned.

        With `netns`, it runs in that network namespace, where `host` is one of its addresses.
        """
        from testing.opentracker import start_opentracker

        tracker = start_opentracker(self.tmp_dir, info_hashes, host=host, netns=netns)
        self._owned.append(tracker)
        return tracker

    def peer(
        self,
        config: LtPeerConfig,
        *,
        wait: bool = True,
        timeout: float = 30.0,
        netns: str | None = None,
    ) -> LtPeer:
        """Start a peer from a full config; waits for ready unless `wait` is False.

        With `netns`, it runs in that network namespace (`config.listen_host` must be one of
        its addresses).
        """
        log_path = self.log_dir / f"{next(self._serial):02d}-{config.role}-{config.listen_host}.log"
        peer = LtPeer(config, log_path=log_path, netns=netns)
        self._owned.append(peer)
        if wait:
            peer.wait_ready(timeout)
        return peer

    def seeder(
        self,
        torrent: os.PathLike[str] | str,
        data_dir: os.PathLike[str] | str,
        *,
        seed_mode: bool = False,
        connect_peers: Iterable[PeerAddress | str] = (),
        settings: Mapping[str, bool | int | str] | None = None,
        upload_limit: int = 0,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> LtPeer:
        """Start a libtorrent seeder of the complete data in `data_dir` on a fresh address.

        Ready (awaited unless `wait` is False) means: listening, data checked (or trusted with
        `seed_mode`), and the first announce answered when the torrent names a tracker.
        """
        config = LtPeerConfig(
            role="seeder",
            torrent=Path(torrent),
            save_path=Path(data_dir),
            listen_host=self.next_address(),
            seed_mode=seed_mode,
            connect_peers=tuple(str(p) for p in connect_peers),
            settings=dict(settings or {}),
            upload_limit=upload_limit,
        )
        return self.peer(config, wait=wait, timeout=timeout)

    def leecher(
        self,
        torrent: os.PathLike[str] | str,
        save_dir: os.PathLike[str] | str,
        *,
        connect_peers: Iterable[PeerAddress | str] = (),
        settings: Mapping[str, bool | int | str] | None = None,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> LtPeer:
        """Start a libtorrent leecher downloading into `save_dir` (made if missing)."""
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        config = LtPeerConfig(
            role="leecher",
            torrent=Path(torrent),
            save_path=Path(save_dir),
            listen_host=self.next_address(),
            connect_peers=tuple(str(p) for p in connect_peers),
            settings=dict(settings or {}),
        )
        return self.peer(config, wait=wait, timeout=timeout)

    @property
    def trackers(self) -> list[OpenTracker]:
        """The trackers started so far (and not yet closed), oldest first."""
        return [o for o in self._owned if not isinstance(o, LtPeer)]

    @property
    def peers(self) -> list[LtPeer]:
        """The libtorrent peers started so far (and not yet closed), oldest first."""
        return [o for o in self._owned if isinstance(o, LtPeer)]

    def pids(self) -> list[int]:
        """The pids of every process this swarm started (trackers include opentracker's own)."""
        pids: list[int] = []
        for owned in self._owned:
            pids.extend(owned.pids if not isinstance(owned, LtPeer) else [owned.pid])
        return pids

    def close(self) -> None:
        """Stop everything; never raises (teardown must not hide the test's own failure).

        Peers are all asked to stop at once (a libtorrent session takes up to a second to shut
        down) and reaped newest first; trackers go last, so the peers' final announces reach
        them.
        """
        peers, trackers = self.peers, self.trackers
        self._owned.clear()
        for peer in peers:
            peer.process.request_stop()
        ordered: list[LtPeer | OpenTracker] = [*reversed(peers), *reversed(trackers)]
        for owned in ordered:
            try:
                owned.stop()
            except Exception as exc:  # keep stopping the others
                print(f"swarm: stopping {owned!r} failed: {exc}", file=sys.stderr)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def process_exists(pid: int) -> bool:
    """Whether `pid` names a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"
