"""The web seed a benchmark downloads from: nginx on loopback, a tmpfs, a url-list torrent.

Strategy: `WebServer` runs Debian's nginx (``/usr/sbin/nginx``) in the foreground as one process
(``daemon off; master_process off;``) with a config of its own written into a work folder (no
file of /etc/nginx is read): ``sendfile on``, keep-alive, byte ranges as nginx does them by
default, every file ``application/octet-stream``, on a free port of 127.0.0.1. Its access log is
one JSON object a line, so what a client asked for in one run can be counted. `storage` mounts a
tmpfs for the run when memory allows (else says why the disk is used), and
`make_web_seed_torrent` writes a v1 .torrent with libtorrent whose only source is one web seed
URL (``url-list``, no tracker): neither client's own torrent code makes it.

This is the benchmark's own small copy of what ``tests/support/nginx.py`` does for the tests:
nothing under bench/ imports from tests/ (``tests/test_bench_apart.py``).

Rules:
- nginx never outlives the `with` block (SIGTERM, then SIGKILL, then reaped); a port taken by
  another process meanwhile makes nginx exit at once, and another free port is tried.
- The tmpfs is unmounted when the block ends, whatever happened in it.
- Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench.workload import MIB
from testing.content import ContentSpec, TorrentFile
from testing.swarm import free_port
from torviz.shared.bencode import decode
from torviz.shared.types import InfoHash

__all__ = [
    "HOST",
    "NGINX",
    "WebServer",
    "make_web_seed_torrent",
    "mem_available",
    "storage",
]

NGINX = Path("/usr/sbin/nginx")
HOST = "127.0.0.1"
PROBE_PATH = "/.bench-probe"
READY_TIMEOUT = 5.0
STOP_TIMEOUT = 5.0
START_ATTEMPTS = 3
TMPFS_SLACK = 256 * MIB  # beside the content and one download: nginx's logs, a client's files
MEMORY_MARGIN = 2 << 30  # free memory the tmpfs must leave to everything else
_CREATION_DATE = 1_700_000_000


class WebServer:
    """nginx serving `root` on a free port of 127.0.0.1, in the foreground, as one process.

    The config, pid file, logs and temp folders all lie in `work`; the access log is one JSON
    object a line, so a run's requests can be counted (`served_since`). A context manager:
    leaving the block stops nginx (SIGTERM, then SIGKILL) and waits until it is gone.

    Raises:
        RuntimeError: nginx did not answer after `START_ATTEMPTS` tries, each on a new port.
    """

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root.resolve()
        self.work = work.resolve()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        (self.work / "temp").mkdir(parents=True, exist_ok=True)
        failures = []
        for _ in range(START_ATTEMPTS):
            self.port = free_port(HOST, udp=False)
            (self.work / "nginx.conf").write_text(self._config())
            try:
                self._start()
                return
            except RuntimeError as exc:
                failures.append(str(exc))
                self.stop()
        raise RuntimeError(f"nginx did not start: {'; '.join(failures)}")

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    @property
    def access_log(self) -> Path:
        return self.work / "access.log"

    def _config(self) -> str:
        work = self.work
        user = f"user {pwd.getpwuid(0).pw_name};\n" if os.geteuid() == 0 else ""
        fields = ",".join(
            f'"{key}":"${variable}"'
            for key, variable in (
                ("uri", "request_uri"),
                ("status", "status"),
                ("range", "http_range"),
                ("body_bytes", "body_bytes_sent"),
                ("connection", "connection"),
            )
        )
        temp = "".join(
            f'    {kind}_temp_path "{work}/temp";\n'
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return (
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f'{user}pid "{work}/nginx.pid";\n'
            f'lock_file "{work}/nginx.lock";\nerror_log "{work}/error.log" warn;\n'
            "events {\n    worker_connections 512;\n}\nhttp {\n"
            f"    log_format bench escape=json '{{{fields}}}';\n"
            f'    access_log "{work}/access.log" bench;\n{temp}'
            "    types {}\n    default_type application/octet-stream;\n"
            "    sendfile on;\n    tcp_nopush on;\n"
            "    keepalive_timeout 30s;\n    keepalive_requests 10000;\n"
            "    server {\n"
            f"        listen {HOST}:{self.port};\n"
            f'        root "{self.root}";\n'
            f"        location = {PROBE_PATH} {{\n            access_log off;\n"
            "            return 204;\n        }\n"
            "    }\n}\n"
        )

    def _start(self) -> None:
        argv = [str(NGINX), "-e", str(self.work / "error.log"), "-p", f"{self.work}/"]
        argv += ["-c", str(self.work / "nginx.conf")]
        self._process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited {self._process.returncode}: {self._tail()}")
            connection = http.client.HTTPConnection(HOST, self.port, timeout=0.5)
            with contextlib.suppress(OSError, http.client.HTTPException):
                connection.request("GET", PROBE_PATH)
                if connection.getresponse().status == 204:
                    return
            connection.close()
            time.sleep(0.05)
        raise RuntimeError(f"nginx not answering on port {self.port}: {self._tail()}")

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = (self.work / "error.log").read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-3:])
        return "(no error log)"

    def log_size(self) -> int:
        """Bytes in the access log now: where the next run's lines start."""
        with contextlib.suppress(OSError):
            return self.access_log.stat().st_size
        return 0

    def served_since(self, offset: int) -> tuple[int, int, int, dict[str, int]]:
        """Requests, distinct connections, body bytes and the count per status logged after
        byte `offset` of the access log."""
        with self.access_log.open("rb") as log:
            log.seek(offset)
            lines = log.read().splitlines()
        records = [json.loads(line) for line in lines if line.endswith(b"}")]
        statuses: dict[str, int] = {}
        for record in records:
            statuses[record["status"]] = statuses.get(record["status"], 0) + 1
        return (
            len(records),
            len({record["connection"] for record in records}),
            sum(int(record["body_bytes"]) for record in records),
            statuses,
        )

    def stop(self) -> None:
        """Stop nginx (SIGTERM, then SIGKILL) and reap it. Safe to call again."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def mem_available() -> int:
    """MemAvailable from /proc/meminfo, bytes (0 when unreadable)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


@contextlib.contextmanager
def storage(work: Path, size: int, use_disk: bool) -> Iterator[tuple[Path, str]]:
    """Where the served content and the downloads live: a tmpfs mounted on `work`/tmpfs for
    the run when memory allows (unmounted after), else `work` on the disk.

    Yields:
        The folder, and one line saying which it is (for the report).
    """
    wanted = 2 * size + TMPFS_SLACK
    reason = "--disk"
    if not use_disk:
        mount = work / "tmpfs"
        mount.mkdir()
        free = mem_available()
        if free < wanted + MEMORY_MARGIN:
            reason = (
                f"{free / MIB:.0f} MiB free memory, {(wanted + MEMORY_MARGIN) / MIB:.0f} wanted"
            )
        else:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={wanted // 1024}k", "tmpfs", str(mount)],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            )
            if done.returncode == 0:
                try:
                    yield mount, f"tmpfs ({wanted / MIB:.0f} MiB, mounted for the run)"
                finally:
                    # Busy (a process left holding a file): detach it lazily instead.
                    for argv in (["umount", str(mount)], ["umount", "-l", str(mount)]):
                        if subprocess.run(argv, check=False, timeout=60).returncode == 0:
                            break
                return
            reason = f"mount failed: {done.stderr.strip()}"
    yield work, f"disk ({reason})"


def make_web_seed_torrent(
    spec: ContentSpec, piece_length: int, url: str, path: Path
) -> TorrentFile:
    """Hash `spec` with libtorrent into a v1 .torrent whose only source is the web seed `url`
    (a ``url-list`` of one URL, no tracker)."""
    import libtorrent as lt

    entries = [
        lt.create_file_entry(name, file.size)
        for name, file in zip(spec.torrent_paths(), spec.layout.files, strict=True)
    ]
    creator = lt.create_torrent(entries, piece_length, lt.create_torrent.v1_only)
    creator.add_url_seed(url)
    creator.set_creator("torviz web seed benchmark")
    creator.set_creation_date(_CREATION_DATE)
    lt.set_piece_hashes(creator, str(spec.root))
    data = lt.bencode(creator.generate())
    path.write_bytes(data)
    info = lt.torrent_info(data)
    decoded = decode(data, strict=False)
    seeds = decoded.get(b"url-list") if isinstance(decoded, dict) else None
    if seeds not in (url.encode(), [url.encode()]):
        raise RuntimeError(f"the torrent's web seeds are {seeds!r}, not [{url!r}]")
    return TorrentFile(
        path=path,
        info_hash=InfoHash.from_hex(str(info.info_hashes().v1)),
        piece_length=int(info.piece_length()),
        num_pieces=int(info.num_pieces()),
        total_size=int(info.total_size()),
    )
