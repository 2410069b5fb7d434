"""Real-peer swarms for integration tests: libtorrent peers and opentracker as child processes.

Strategy: every reference program runs as its own process (`testing/processes.py` holds that
plumbing, `ManagedProcess`). `LtPeer` drives `testing/lt_peer.py` (which also defines the
config and status schema both sides share); `Swarm` owns everything one test starts and tears
it down; `testing/opentracker.py` builds its tracker on the same plumbing. Addresses and ports
for all of them come from here.

Rules:
- Loopback only. Each peer gets its own 127.0.0.x address from a per-session counter, so a
  tracker sees distinct IPs (127.0.0.1 stays for trackers and the code under test).
- Every process is stopped: by its owner (context manager or `Swarm.close`), else by
  `kill_leftovers()` at session end or interpreter exit.
- Every wait is bounded and fails with a `SwarmError` whose message names the process, what
  was awaited and the tail of its stderr.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import random
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from testing.lt_peer import LtPeerConfig, PeerConfigError, PeerStatus
from testing.processes import ManagedProcess, StopOnExit, SwarmError
from torviz.shared.types import PeerAddress

if TYPE_CHECKING:
    from testing.opentracker import InfoHashLike, OpenTracker

__all__ = [
    "LT_PEER_SCRIPT",
    "LtPeer",
    "LtPeerConfig",
    "PeerStatus",
    "Swarm",
    "free_port",
    "missing_interop_tools",
    "next_loopback_address",
]

LT_PEER_SCRIPT = Path(__file__).resolve().with_name("lt_peer.py")
OPENTRACKER_BINARY = Path("/usr/bin/opentracker")

_STOP_TIMEOUT_S = 5.0


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
_random = random.SystemRandom()  # not the seeded ``random`` a test may have set up


def _chosen_ports() -> range:
    """Ports ``free_port`` picks from: below the kernel's ephemeral range, which it hands to
    every ``bind(port 0)`` and outgoing connection, so a port chosen here and bound a moment
    later is not taken by some other test's socket meanwhile (the CI runs two lanes of tests
    at once; an ephemeral port was taken in between on a loaded run)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return range(10_000, low) if low > 12_000 else range(0)


def free_port(host: str = "127.0.0.1", *, udp: bool = True, attempts: int = 50) -> int:
    """A port on `host` that is free for TCP (and UDP when `udp`) right now.

    It is picked at random below the kernel's ephemeral ports (``_chosen_ports``; from the
    ephemeral ones only when there is no room below them). The sockets are closed before
    returning, so a racing process may still take the port: callers check after binding (see
    `opentracker.listener_count`) and retry. Ports handed out earlier in this session are
    never handed out again.

    Raises:
        SwarmError: reason ``no_free_port`` after `attempts` tries.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ports = _chosen_ports()
    for _ in range(attempts):
        wanted = _random.choice(ports) if ports else 0
        with socket.socket(family, socket.SOCK_STREAM) as tcp:
            try:
                tcp.bind((host, wanted))
            except OSError:
                continue
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


# --- libtorrent peers ------------------------------------------------------------------------


class LtPeer(StopOnExit):
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

    def wait_metadata(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until a magnet leecher has the info dict (written to its `config.torrent`)."""
        return self.process.wait_event("metadata", timeout)

    def connected_peers(self) -> list[dict[str, Any]]:
        """The peers of the newest status event (`report_peers`): address, source, client..."""
        event = self.process.last("status")
        peers = [] if event is None else event.get("peers", [])
        return [p for p in peers if isinstance(p, dict)]

    def wait_peer(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        """Wait for a status event listing a connected peer that satisfies `predicate`."""

        def listed(event: dict[str, Any]) -> bool:
            return any(isinstance(p, dict) and predicate(p) for p in event.get("peers", []))

        event = self.process.wait_event("status", timeout, listed)
        return next(p for p in event["peers"] if isinstance(p, dict) and predicate(p))

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
        disable_pex: bool = False,
        report_peers: bool = False,
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
            disable_pex=disable_pex,
            report_peers=report_peers,
        )
        return self.peer(config, wait=wait, timeout=timeout)

    def leecher(
        self,
        torrent: os.PathLike[str] | str,
        save_dir: os.PathLike[str] | str,
        *,
        connect_peers: Iterable[PeerAddress | str] = (),
        settings: Mapping[str, bool | int | str] | None = None,
        magnet: str = "",
        report_peers: bool = False,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> LtPeer:
        """Start a libtorrent leecher downloading into `save_dir` (made if missing).

        With `magnet`, it starts from that link alone (its ``x.pe`` peers are dialled, its
        ``tr`` trackers announced to) and writes the fetched .torrent to `torrent`.
        """
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        config = LtPeerConfig(
            role="leecher",
            torrent=Path(torrent),
            save_path=Path(save_dir),
            listen_host=self.next_address(),
            connect_peers=tuple(str(p) for p in connect_peers),
            settings=dict(settings or {}),
            magnet=magnet,
            report_peers=report_peers,
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
