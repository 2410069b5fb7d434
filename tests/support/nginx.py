"""nginx (Debian package nginx) on loopback as the web seed of tests: a real HTTP/1.1 file server.

Strategy: `Nginx(root_folder, work_folder)` writes its own config into `work_folder` and runs
`/usr/sbin/nginx -e ERROR_LOG -p WORK/ -c WORK/nginx.conf`: no file of the system's config
(/etc/nginx) is read, and the pid file, lock file, logs and temp folders all lie in
`work_folder`. nginx runs in the foreground as one process (`daemon off; master_process off;`)
under the supervisor of testing/opentracker.py (`--supervise`), so the pid the fixture holds
is the one that serves. It listens on 127.0.0.1 (or the host given) on a free port and serves
`root_folder` at `/` the way a web seed is served in the wild: `sendfile on`, keep-alive on,
byte ranges as nginx does them by default (single and multiple ranges, 416 past the end),
every file as `application/octet-stream`. With `tls=(certificate, key)` it serves HTTPS
instead (the URL's scheme says which); the readiness probe then skips verification (it only
checks the token: the test's client is what verifies the certificate).

The access log is one JSON object a line (method, URI, status, Range header, body bytes,
connection serial number and the request's number on its connection), so tests can assert what
a client asked for, its retries and its keep-alive (`requests`, `wait_requests`). The fixture's
own readiness probe (`/.torviz-fixture-probe`, answered 204 with a token only this instance
knows) is not logged: a probe answered by another server on a recycled port is not taken for
ours.

Rules:
- No nginx outlives the test: the supervisor stops it on SIGTERM and when its stdin closes (the
  test process died); `stop` (or leaving the `with` block) stops the supervisor, kills nginx's
  pid if it outlived it, and waits until the pid is gone. `kill_leftovers()` is the safety net.
- Every wait is bounded and fails with a `SwarmError` naming the server, what was awaited and
  the tail of nginx's error log.
- `user` is written only when the test runs as root (nginx ignores it otherwise, with a
  warning): `user root`, since pytest's temporary folders are 0700 and nginx must read them.
- A port another process took makes nginx exit at once (no `reuseport`): another free port is
  tried, up to `attempts` times.
- Tests call `nginx_or_skip()` first: it skips with the reason when nginx is missing, and fails
  under CI=true, where .ci/run installs it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import secrets
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from testing.processes import ManagedProcess, StopOnExit, SwarmError, process_exists
from testing.swarm import free_port

__all__ = [
    "NGINX_BINARY",
    "Nginx",
    "NginxRequest",
    "missing_nginx",
    "nginx_or_skip",
    "render_config",
]

NGINX_BINARY = Path("/usr/sbin/nginx")
PROBE_PATH = "/.torviz-fixture-probe"
_PROBE_HEADER = "X-Torviz-Fixture"
_REPO_ROOT = Path(__file__).resolve().parents[2]
_POLL_S = 0.05
_PROBE_TIMEOUT_S = 0.5
_STOP_TIMEOUT_S = 5.0
_LOG_TAIL_BYTES = 2000
_MAX_ACCESS_LOG = 16 * 1024 * 1024
# Characters a path may not hold in the config: quoting, escapes, variables, statement ends.
_UNSAFE_IN_CONFIG = set('"\\$;{}\n\r\0')
_TEMP_FOLDERS = ("body", "proxy", "fastcgi", "uwsgi", "scgi")


def missing_nginx() -> str | None:
    """Why nginx cannot run here (None when /usr/sbin/nginx is there and executable)."""
    if not os.access(NGINX_BINARY, os.X_OK):
        return f"{NGINX_BINARY} (Debian package nginx) is not installed"
    return None


def nginx_or_skip() -> None:
    """Skip the calling test when nginx is missing; under CI=true, fail it instead."""
    missing = missing_nginx()
    if missing is None:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{missing} (CI=true: CI installs it, so this is a failure)")
    pytest.skip(missing)


@dataclass(frozen=True, slots=True)
class NginxRequest:
    """One request nginx answered, from its access log.

    Attributes:
        method: ``GET``, ``HEAD`` ...
        uri: the request target as sent (still percent-encoded, with any query).
        status: the status nginx answered (206 for a range it served).
        range: the request's Range header, None when it had none.
        body_bytes: body bytes nginx sent.
        connection: nginx's serial number of the TCP connection the request came on.
        connection_requests: the request's number on that connection (1 for the first; more
            means the connection was kept alive).
    """

    method: str
    uri: str
    status: int
    range: str | None
    body_bytes: int
    connection: int
    connection_requests: int


def _config_path(path: Path) -> str:
    text = str(path)
    bad = sorted(_UNSAFE_IN_CONFIG.intersection(text))
    if bad:
        raise ValueError(f"path {text!r} has characters nginx's config cannot hold: {bad!r}")
    return f'"{text}"'


def _user_line() -> str:
    if os.geteuid() != 0:
        return ""
    return f"user {pwd.getpwuid(0).pw_name};\n"


def render_config(
    root_folder: Path,
    work_folder: Path,
    host: str,
    port: int,
    token: str,
    extra: str = "",
    tls: tuple[Path, Path] | None = None,
) -> str:
    """The whole nginx.conf of one instance (absolute paths only; see the module comment)."""
    work = work_folder
    temp = {name: _config_path(work / "temp" / name) for name in _TEMP_FOLDERS}
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if tls is not None:
        listen += " ssl"
        extra = (
            f"        ssl_certificate {_config_path(tls[0])};\n"
            f"        ssl_certificate_key {_config_path(tls[1])};\n{extra}"
        )
    log_fields = ",".join(
        f'"{key}":"${variable}"'
        for key, variable in (
            ("method", "request_method"),
            ("uri", "request_uri"),
            ("status", "status"),
            ("range", "http_range"),
            ("body_bytes", "body_bytes_sent"),
            ("connection", "connection"),
            ("connection_requests", "connection_requests"),
        )
    )
    return (
        "daemon off;\n"
        "master_process off;\n"
        "worker_processes 1;\n"
        f"{_user_line()}"
        f"pid {_config_path(work / 'nginx.pid')};\n"
        f"lock_file {_config_path(work / 'nginx.lock')};\n"
        f"error_log {_config_path(work / 'error.log')} info;\n"
        "events {\n"
        "    worker_connections 512;\n"
        "}\n"
        "http {\n"
        f"    log_format fixture escape=json '{{{log_fields}}}';\n"
        f"    access_log {_config_path(work / 'access.log')} fixture;\n"
        f"    client_body_temp_path {temp['body']};\n"
        f"    proxy_temp_path {temp['proxy']};\n"
        f"    fastcgi_temp_path {temp['fastcgi']};\n"
        f"    uwsgi_temp_path {temp['uwsgi']};\n"
        f"    scgi_temp_path {temp['scgi']};\n"
        "    types {}\n"
        "    default_type application/octet-stream;\n"
        "    sendfile on;\n"
        "    tcp_nopush on;\n"
        "    keepalive_timeout 30s;\n"
        "    keepalive_requests 1000;\n"
        "    server_tokens off;\n"
        "    server {\n"
        f"        listen {listen};\n"
        "        server_name localhost;\n"
        f"        root {_config_path(root_folder)};\n"
        f"        location = {PROBE_PATH} {{\n"
        "            access_log off;\n"
        f"            add_header {_PROBE_HEADER} {token} always;\n"
        "            return 204;\n"
        "        }\n"
        f"{extra}"
        "    }\n"
        "}\n"
    )


class Nginx(StopOnExit):
    """A running nginx serving `root_folder` on a loopback port; a context manager.

    Starting it waits until it answers (bounded). Use it in a `with` block, or call `stop()`.

    Args:
        root_folder: the folder served at `/` (must exist).
        work_folder: where the config, pid file, logs and temp folders go (made if missing).
        host: the loopback address to listen on.
        extra_config: lines added inside the `server` block (e.g. ``max_ranges 1;`` or a
            ``location`` that redirects), for tests that need a server configured otherwise.
        ready_timeout: seconds each start attempt may take to answer.
        attempts: start attempts, each on a new port, before giving up.
        tls: ``(certificate, key)`` PEM files: serve HTTPS with them.

    Raises:
        SwarmError: reason ``web_server_failed`` when no attempt came up.
        ValueError: a path nginx's config cannot hold, or a root folder that is not a folder.
    """

    def __init__(
        self,
        root_folder: Path,
        work_folder: Path,
        *,
        host: str = "127.0.0.1",
        extra_config: str = "",
        ready_timeout: float = 5.0,
        attempts: int = 3,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.root_folder = Path(root_folder).resolve()
        self.work_folder = Path(work_folder).resolve()
        if not self.root_folder.is_dir():
            raise ValueError(f"nginx root {self.root_folder} is not a folder")
        self.host = host
        self.tls = tls
        self.port = 0
        self.pid = 0
        self._token = secrets.token_hex(8)
        self._process: ManagedProcess | None = None
        for name in _TEMP_FOLDERS:
            (self.work_folder / "temp" / name).mkdir(parents=True, exist_ok=True)
        failures: list[str] = []
        for _ in range(attempts):
            self.pid = 0
            self.port = free_port(host, udp=False)
            config = render_config(
                self.root_folder,
                self.work_folder,
                host,
                self.port,
                self._token,
                extra_config,
                tls,
            )
            self.config_path.write_text(config)
            try:
                self._start(ready_timeout)
                return
            except SwarmError as exc:
                failures.append(f"{exc.reason}: {exc}")
                self.stop()
        raise SwarmError(
            "web_server_failed",
            f"nginx did not start on {host} in {attempts} tries: {'; '.join(failures)}",
        )

    @property
    def url(self) -> str:
        """The base URL, ending in `/`: a file ``root_folder/a/b`` is at ``url + "a/b"``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}/"

    @property
    def config_path(self) -> Path:
        return self.work_folder / "nginx.conf"

    @property
    def access_log(self) -> Path:
        return self.work_folder / "access.log"

    @property
    def error_log(self) -> Path:
        return self.work_folder / "error.log"

    def _start(self, ready_timeout: float) -> None:
        pythonpath = os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")]))
        argv = [
            sys.executable,
            "-m",
            "testing.opentracker",
            "--supervise",
            "--",
            str(NGINX_BINARY),
            "-e",
            str(self.error_log),
            "-p",
            f"{self.work_folder}/",
            "-c",
            str(self.config_path),
        ]
        self._process = ManagedProcess(
            f"nginx@{self.host}:{self.port}",
            argv,
            cwd=_REPO_ROOT,
            env={"PYTHONPATH": pythonpath},
            log_path=self.work_folder / "supervisor.log",
        )
        started = self._process.wait_event("started", ready_timeout)
        self.pid = int(started["pid"])
        self._wait_ready(ready_timeout)

    def _probe(self) -> bool:
        connection: http.client.HTTPConnection
        if self.tls is None:
            connection = http.client.HTTPConnection(self.host, self.port, timeout=_PROBE_TIMEOUT_S)
        else:
            unverified = ssl.create_default_context()
            unverified.check_hostname = False
            unverified.verify_mode = ssl.CERT_NONE
            connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=_PROBE_TIMEOUT_S, context=unverified
            )
        try:
            connection.request("GET", PROBE_PATH)
            response = connection.getresponse()
            response.read(1024)
            return response.status == 204 and response.getheader(_PROBE_HEADER) == self._token
        finally:
            connection.close()

    def _wait_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if not self._process.is_running() or self._process.last("exited") is not None:
                raise SwarmError(
                    "process_exited", f"{self._process.name} exited during start-up: {self._tail()}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self._probe():
                    return
            if time.monotonic() >= deadline:
                raise SwarmError(
                    "timeout",
                    f"{self._process.name} not answering within {timeout:.1f} s: {self._tail()}",
                )
            time.sleep(_POLL_S)

    def _tail(self) -> str:
        try:
            with self.error_log.open("rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        lines = [line for line in text.splitlines() if line.strip()]
        return "error log: " + (" | ".join(lines[-5:]) if lines else "(empty)")

    def requests(self) -> tuple[NginxRequest, ...]:
        """Every request nginx logged so far, oldest first (not the fixture's probes).

        nginx writes a request's line once the response is sent, which a client may see a
        moment before the line is written: `wait_requests` waits for a count.
        """
        try:
            with self.access_log.open("rb") as log:
                data = log.read(_MAX_ACCESS_LOG)
        except FileNotFoundError:
            return ()
        records = []
        for line in data.splitlines():
            if not line.endswith(b"}"):
                continue  # a line being written
            fields = json.loads(line)
            records.append(
                NginxRequest(
                    method=fields["method"],
                    uri=fields["uri"],
                    status=int(fields["status"]),
                    range=fields["range"] or None,
                    body_bytes=int(fields["body_bytes"]),
                    connection=int(fields["connection"]),
                    connection_requests=int(fields["connection_requests"]),
                )
            )
        return tuple(records)

    def wait_requests(self, count: int, timeout: float = 5.0) -> tuple[NginxRequest, ...]:
        """The logged requests once there are at least `count` of them.

        Raises:
            SwarmError: reason ``timeout`` naming how many came within `timeout` s.
        """
        deadline = time.monotonic() + timeout
        while True:
            seen = self.requests()
            if len(seen) >= count:
                return seen
            if time.monotonic() >= deadline:
                raise SwarmError(
                    "timeout",
                    f"nginx@{self.host}:{self.port} logged {len(seen)} requests, "
                    f"not {count}, within {timeout:.1f} s",
                )
            time.sleep(_POLL_S)

    @property
    def supervisor_pid(self) -> int:
        """The pid of the supervisor nginx runs under (0 before it started)."""
        return self._process.pid if self._process is not None else 0

    def is_running(self) -> bool:
        return self.pid != 0 and process_exists(self.pid)

    def stop(self) -> None:
        """Stop nginx and its supervisor; kill nginx if it outlived it. Safe to call again."""
        if self._process is not None:
            self._process.stop()
        if self.pid and process_exists(self.pid):
            try:
                cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
            except OSError:
                cmdline = b""
            if str(self.config_path).encode() in cmdline:  # ours, not a recycled pid
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                deadline = time.monotonic() + _STOP_TIMEOUT_S
                while process_exists(self.pid) and time.monotonic() < deadline:
                    time.sleep(_POLL_S)

    def __repr__(self) -> str:
        return f"Nginx({self.url}, root={self.root_folder}, pid={self.pid})"
