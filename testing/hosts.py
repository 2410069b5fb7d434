"""Simulated hosts for multi-host tests and benchmarks: network namespaces made by
deploy/netns-hosts.sh, and the programs running on them (torviz on them: cluster.py).

Strategy: `namespace_hosts` runs `deploy/netns-hosts.sh up PREFIX N SUBNET`; host i is the
namespace PREFIX-i with address SUBNET.i, and reaches the other hosts and nothing else. A
program runs on a host as `ip netns exec PREFIX-i ARGV` (ip execs in place, so the pid held is
the program's own). The test process reaches a host's addresses through `call_in_netns`, which
runs a function on a short-lived thread moved into the namespace with setns(2): a thread's
sockets belong to its namespace, and the rest of the process is untouched. libtorrent peers
and opentracker reuse testing/swarm.py (`Swarm`, with its `netns` option).

Rules:
- `NamespaceHosts.close` removes everything, even after a failure: every process is asked to
  stop at once, reaped (killed after a bound), then the swarm is closed, any process still
  found in our namespaces is killed by pid, and `down` removes the namespaces.
- Every wait is bounded and fails naming what was awaited, with the tail of the logs.
- Needs root and iproute2: `HostsError` says which is missing (tests turn that into a skip:
  tests/support/netns.py).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

from testing.lt_peer import LtPeerConfig
from testing.opentracker import InfoHashLike, OpenTracker
from testing.swarm import LtPeer, Swarm
from torviz.shared.errors import TorvizError

__all__ = [
    "NETNS_SCRIPT",
    "Host",
    "HostProcess",
    "HostsError",
    "NamespaceHosts",
    "call_in_netns",
    "namespace_hosts",
]

REPO = Path(__file__).resolve().parents[1]
NETNS_SCRIPT = REPO / "deploy" / "netns-hosts.sh"

_CLONE_NEWNET = 0x40000000
_SCRIPT_TIMEOUT_S = 60.0
_CALL_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 8.0
_RUN_TIMEOUT_S = 30.0
_LOG_TAIL_BYTES = 4096
_LOG_READ_BYTES = 4 << 20

_T = TypeVar("_T")


class HostsError(TorvizError):
    """Simulated hosts could not be made or used.

    Reasons: ``no_ip`` (iproute2 missing), ``not_root``, ``not_permitted`` (the kernel refused
    namespaces), ``up_failed``, ``setns_failed``, ``timeout``; and from torviz on the hosts
    (cluster.py): ``process_exited``, ``keys_failed``, ``cli_failed``.
    """


def call_in_netns(
    netns: str, fn: Callable[..., _T], *args: Any, timeout: float = _CALL_TIMEOUT_S
) -> _T:
    """Run ``fn(*args)`` on a thread inside network namespace ``netns``; return its result.

    Sockets ``fn`` opens live in that namespace (a namespace is per thread for setns(2)); the
    thread ends with ``fn``, so no other code of this process ever runs there.

    Raises:
        HostsError: ``setns_failed`` (no such namespace, or not allowed), ``timeout`` when ``fn``
            has not returned after ``timeout`` s.
        Exception: whatever ``fn`` raised.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        except OSError as exc:
            outcome["error"] = HostsError("setns_failed", f"no namespace {netns}: {exc}")
            return
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                outcome["error"] = HostsError(
                    "setns_failed", f"setns into {netns}: {os.strerror(errno)}"
                )
                return
        finally:
            os.close(fd)
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise HostsError(
            "timeout", f"{getattr(fn, '__name__', fn)} in {netns}: no answer in {timeout:.0f} s"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Host:
    """One simulated host: namespace ``netns`` with address ``address`` (host ``index``)."""

    index: int
    netns: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run on this host."""
        return ["ip", "netns", "exec", self.netns, *argv]


_live_lock = threading.Lock()
_live: dict[int, HostProcess] = {}


def _kill_leftovers() -> None:
    with _live_lock:
        leftovers = list(_live.values())
    for process in leftovers:
        process.stop(timeout=2.0)


atexit.register(_kill_leftovers)


class HostProcess:
    """A program on a host, its stdout and stderr appended to ``log_path``.

    Args:
        host: where it runs.
        name: shown in messages.
        argv: its command line (without the ``ip netns exec`` part).
        log_path: its output, appended.
        env: extra environment variables.
        cwd: its working directory (default: the repository root).
    """

    def __init__(
        self,
        host: Host,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.host = host
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] | None = log_path.open("ab")
        self.popen = subprocess.Popen(
            host.command(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd or REPO,
            env={**os.environ, **(env or {})},
        )
        with _live_lock:
            _live[self.popen.pid] = self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, signum: int) -> None:
        """Signal it if it still runs."""
        if self.popen.poll() is None:
            self.popen.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """Its exit code, or None if it still runs after ``timeout`` s."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> int | None:
        """SIGKILL and reap it; returns the exit code."""
        self.send_signal(signal.SIGKILL)
        return self.wait(_STOP_TIMEOUT_S)

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` s; reaps it. Safe to call again."""
        self.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        if code is None:
            code = self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None
        with _live_lock:
            _live.pop(self.popen.pid, None)
        return code

    def log_text(self, limit: int = _LOG_READ_BYTES) -> str:
        """What it wrote so far: the last ``limit`` bytes."""
        try:
            with self.log_path.open("rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(max(0, size - limit))
                return log.read(limit).decode(errors="replace")
        except OSError:
            return ""

    def log_tail(self, skip: str = "") -> str:
        """The last few KiB of its output (for failure messages), without the lines holding
        ``skip`` when given (e.g. one logged per CLI request)."""
        lines = self.log_text().splitlines()
        if skip:
            lines = [line for line in lines if skip not in line]
        return "\n".join(lines)[-_LOG_TAIL_BYTES:]

    def __repr__(self) -> str:
        return f"HostProcess({self.name} on {self.host.netns}, pid={self.pid})"


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(NETNS_SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=_SCRIPT_TIMEOUT_S,
        check=False,
    )


class NamespaceHosts:
    """Hosts made by ``namespace_hosts``, and everything started on them.

    Args:
        prefix: the namespaces' prefix (host i is ``PREFIX-i``).
        hosts: the hosts, in order.
        work_dir: logs and the swarm's files go below it.
    """

    def __init__(self, prefix: str, hosts: Sequence[Host], work_dir: Path) -> None:
        self.prefix = prefix
        self.hosts = list(hosts)
        self.work_dir = work_dir
        self.log_dir = work_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.swarm = Swarm(work_dir / "swarm")
        self.processes: list[HostProcess] = []

    def __getitem__(self, index: int) -> Host:
        """Host ``index``, counted from 1 as the script names them."""
        return self.hosts[index - 1]

    @property
    def subnet(self) -> str:
        """The first three octets of the hosts' /24."""
        return self.hosts[0].address.rsplit(".", 1)[0]

    def add_address(self, index: int, last_octet: int) -> str:
        """Give host ``index`` one more address in the subnet; returns it.

        Raises:
            HostsError: ``up_failed`` when ``ip`` refuses.
        """
        address = f"{self.subnet}.{last_octet}"
        result = subprocess.run(
            ["ip", "-n", self[index].netns, "addr", "add", f"{address}/24", "dev", "eth0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            raise HostsError("up_failed", f"adding {address}: {result.stderr.strip()}")
        return address

    def start(
        self,
        index: int,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        cwd: Path | None = None,
    ) -> HostProcess:
        """Start ``argv`` on host ``index``; its output goes to ``NAME.log`` in ``log_dir``
        (default: ``logs/`` of the work folder)."""
        log_path = (log_dir or self.log_dir) / f"{name}.log"
        process = HostProcess(self[index], name, argv, log_path, env, cwd)
        self.processes.append(process)
        return process

    def run(
        self,
        index: int,
        argv: Sequence[str],
        timeout: float = _RUN_TIMEOUT_S,
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on host ``index`` to completion (bounded by ``timeout`` s)."""
        return subprocess.run(
            self[index].command(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd or REPO,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def tracker(self, index: int, info_hashes: Iterable[InfoHashLike]) -> OpenTracker:
        """opentracker on host ``index``'s address, whitelisting ``info_hashes``; ready."""
        host = self[index]
        return self.swarm.tracker(info_hashes, host=host.address, netns=host.netns)

    def seeder(
        self,
        index: int,
        torrent: os.PathLike[str] | str,
        data_dir: Path,
        address: str,
        *,
        upload_limit: int = 0,
        timeout: float = 30.0,
    ) -> LtPeer:
        """A libtorrent seeder (seed mode) on host ``index`` at ``address``; ready (listening,
        announced) when returned.

        Args:
            upload_limit: bytes per second it uploads this torrent, 0 for no limit.
        """
        config = LtPeerConfig(
            role="seeder",
            torrent=Path(torrent),
            save_path=data_dir,
            listen_host=address,
            seed_mode=True,
            upload_limit=upload_limit,
        )
        return self.swarm.peer(config, netns=self[index].netns, timeout=timeout)

    def call(self, index: int, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` from this process, with host ``index``'s network (`call_in_netns`)."""
        return call_in_netns(self[index].netns, fn, *args)

    def close(self) -> None:
        """Stop everything started here, then remove the namespaces. Never raises."""
        processes, self.processes = self.processes, []
        for process in processes:
            with contextlib.suppress(OSError):
                process.send_signal(signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.stop()
            except Exception as exc:  # keep stopping the others
                print(f"hosts: stopping {process!r} failed: {exc}", file=sys.stderr)
        self.swarm.close()
        for netns in [host.netns for host in self.hosts] + [f"{self.prefix}-hub"]:
            self._kill_namespace_leftovers(netns)
        down = _script("down", self.prefix)
        if down.returncode != 0:
            print(f"hosts: down {self.prefix} failed: {down.stderr.strip()}", file=sys.stderr)

    @staticmethod
    def _kill_namespace_leftovers(netns: str) -> None:
        # Only programs this object started can be in our namespaces (the prefix is ours).
        listing = subprocess.run(
            ["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10, check=False
        )
        for pid in (int(p) for p in listing.stdout.split() if p.isdigit()):
            print(f"hosts: killing leftover pid {pid} in {netns}", file=sys.stderr)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _check_requirements() -> None:
    if shutil.which("ip") is None:
        raise HostsError("no_ip", "the 'ip' command (iproute2) is missing")
    if os.geteuid() != 0:
        raise HostsError("not_root", "building network namespaces needs root")


@contextlib.contextmanager
def namespace_hosts(
    work_dir: Path, count: int, subnet: str, prefix: str | None = None
) -> Iterator[NamespaceHosts]:
    """Build ``count`` hosts at ``subnet``.1 .. ``subnet``.count; remove them all afterwards.

    Args:
        work_dir: logs and the swarm's files go below it.
        count: how many hosts, 1..250.
        subnet: the first three octets of their /24, e.g. ``"10.213.17"``; pick one per test
            module so that runs never share one.
        prefix: namespace prefix (default: ``tvh`` + this process's pid).

    Raises:
        HostsError: ``no_ip``, ``not_root``, ``not_permitted`` or ``up_failed``.
    """
    _check_requirements()
    prefix = prefix or f"tvh{os.getpid()}"
    result = _script("up", prefix, str(count), subnet)
    if result.returncode != 0:
        message = result.stderr.strip()
        reason = (
            "not_permitted"
            if "not permitted" in message or "Permission denied" in message
            else "up_failed"
        )
        raise HostsError(reason, f"netns-hosts.sh up {prefix} {count} {subnet}: {message}")
    rows = [line.split() for line in result.stdout.splitlines() if line.strip()]
    hosts = [Host(i, row[0], row[1]) for i, row in enumerate(rows, start=1)]
    try:
        made = NamespaceHosts(prefix, hosts, work_dir)
    except BaseException:
        _script("down", prefix)
        raise
    try:
        yield made
    finally:
        made.close()
