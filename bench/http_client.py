"""HTTP tracker announces under gevent: the former ``http.client`` code against urllib3.

Usage (from the repository root)::

    .venv/bin/python bench/http_client.py [--announces 500] [--concurrency 1,20]
        [--rounds 3] [--old-commit 656444c] [--output FILE]

What it does: this process is gevent-patched first thing, as every service is. It loads the
tracker agent's former HTTP client (``services/tracker_agent/http_client.py`` at
``--old-commit``, the hand-written ``http.client`` GET: one new connection per request,
``Connection: close``) from git, and measures, against three loopback servers:

- **opentracker** (``testing/opentracker.py``, HTTP on 127.0.0.1, one whitelisted hash);
- **http keep-alive**: a ``ThreadingHTTPServer`` speaking HTTP/1.1 in its own process,
  answering every GET with the same bencoded announce reply (50 compact peers);
- **https keep-alive**: the same behind TLS (a self-signed certificate made with
  ``openssl``, trusted through ``ca_file`` / an ``ssl_context``),

``--announces`` announce GETs (each reply parsed with the shared codec), by
``--concurrency`` greenlets at once, with each client variant:

- **http.client**: the former code (``http_get`` of the old module);
- **urllib3**: ``HttpClient.get`` (shared/runtime/http.py), connections kept alive;
- **urllib3 close**: the same asking ``Connection: close`` (what keep-alive saves).

Wall time and this process's CPU (user + system, ``getrusage``) per round; the variants
alternate within a round, and the medians over ``--rounds`` are printed as a markdown table
and written to ``bench/results/http-client-<time>.json``. The servers run in other
processes, so the CPU is the client's alone. Every process it starts is stopped at the end.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import ssl  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sources import REPO, RESULTS, git, source_state  # noqa: E402
from testing.opentracker import start_opentracker  # noqa: E402
from torviz.shared.errors import TorvizError  # noqa: E402
from torviz.shared.runtime.http import HttpClient  # noqa: E402
from torviz.shared.tracker import (  # noqa: E402
    AnnounceRequest,
    AnnounceResponse,
    build_announce_url,
    parse_announce_response,
)
from torviz.shared.types import InfoHash, PeerId  # noqa: E402

OLD_COMMIT = "656444c"  # the last commit with the hand-written http.client GET
INFO_HASH = InfoHash(bytes.fromhex("ab" * 20))
TIMEOUT = 10.0

SERVER = r"""
import http.server, socketserver, ssl, sys
body = bytes.fromhex(sys.argv[1])
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else the body waits for the client's delayed ACK
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True
server = Server(("127.0.0.1", 0), Handler)
if len(sys.argv) > 2:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

Fetch = Callable[[str], bytes]


def load_old_client(commit: str) -> ModuleType:
    """The tracker agent's HTTP client as it was at ``commit``, imported from git."""
    source = git("show", f"{commit}:services/tracker_agent/http_client.py")
    if "http.client" not in source:
        raise SystemExit(f"no http.client tracker client at {commit}")
    spec = importlib.util.spec_from_loader("old_http_client", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{commit}:http_client.py", "exec"), module.__dict__)
    return module


def reply_body() -> bytes:
    from torviz.shared.bencode import encode

    peers = b"".join(bytes([127, 0, 0, n % 250 + 2, 0x1A, n]) for n in range(50))
    return encode({b"interval": 1800, b"complete": 3, b"incomplete": 7, b"peers": peers})


@contextlib.contextmanager
def python_server(tls: tuple[Path, Path] | None) -> Iterator[str]:
    """A keep-alive HTTP/1.1 server in its own process; yields its announce URL."""
    argv = [sys.executable, "-c", SERVER, reply_body().hex()]
    if tls is not None:
        argv += [str(tls[0]), str(tls[1])]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        scheme = "https" if tls else "http"
        yield f"{scheme}://127.0.0.1:{port}/announce"
    finally:
        process.terminate()
        process.wait(timeout=10)


def self_signed(folder: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise SystemExit("openssl is needed for the https variant")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def clients(old: ModuleType, cert: Path) -> dict[str, Fetch]:
    trusting = ssl.create_default_context(cafile=str(cert))
    pooled = HttpClient(ca_file=str(cert))
    closing = HttpClient(ca_file=str(cert))

    def old_get(url: str) -> bytes:
        body: bytes = old.http_get(url, timeout=TIMEOUT, ssl_context=trusting)
        return body

    return {
        "http.client": old_get,
        "urllib3": lambda url: pooled.get(url, timeout=TIMEOUT).body,
        "urllib3 close": lambda url: (
            closing.get(url, timeout=TIMEOUT, headers={"Connection": "close"}).body
        ),
    }


def run(fetch: Fetch, url: str, announces: int, concurrency: int) -> tuple[float, float, int]:
    """Wall and CPU seconds of ``announces`` announces by ``concurrency`` greenlets, failures."""
    failures: list[str] = []

    def one(n: int) -> None:
        request = AnnounceRequest(
            info_hash=INFO_HASH,
            peer_id=PeerId(b"-TV0100-" + f"{n:012d}".encode()),
            port=6881 + n % 1000,
            uploaded=0,
            downloaded=0,
            left=1,
        )
        try:
            result = parse_announce_response(fetch(build_announce_url(url, request)))
        except TorvizError as exc:
            failures.append(str(exc))
            return
        assert isinstance(result, AnnounceResponse)

    pool = gevent.pool.Pool(concurrency)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    for n in range(announces):
        pool.spawn(one, n)
    pool.join(raise_error=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for text in sorted(set(failures)):
        print(f"  {failures.count(text)} failed: {text}", file=sys.stderr)
    return wall, cpu, len(failures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--announces", type=int, default=500)
    parser.add_argument("--concurrency", default="1,20")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old-commit", default=OLD_COMMIT)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    old = load_old_client(args.old_commit)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="torviz-bench-http-") as tmp:
        folder = Path(tmp)
        cert, key = self_signed(folder)
        fetches = clients(old, cert)
        with (
            start_opentracker(folder, [INFO_HASH]) as tracker,
            python_server(None) as plain,
            python_server((cert, key)) as tls,
        ):
            servers = {
                "opentracker": tracker.http_announce_url,
                "http keep-alive": plain,
                "https keep-alive": tls,
            }
            for server, url in servers.items():
                for concurrency in concurrencies:
                    samples: dict[str, list[tuple[float, float, int]]] = {v: [] for v in fetches}
                    for _ in range(args.rounds):
                        for variant, fetch in fetches.items():
                            samples[variant].append(run(fetch, url, args.announces, concurrency))
                    for variant, runs in samples.items():
                        wall = statistics.median(w for w, _, _ in runs)
                        cpu = statistics.median(c for _, c, _ in runs)
                        row = {
                            "server": server,
                            "concurrency": concurrency,
                            "client": variant,
                            "wall_s": round(wall, 3),
                            "cpu_s": round(cpu, 3),
                            "per_s": round(args.announces / wall),
                            "cpu_ms_each": round(1000 * cpu / args.announces, 3),
                            "failed": sum(f for _, _, f in runs),
                        }
                        print(json.dumps(row), flush=True)
                        rows.append(row)
    print(f"\n{args.announces} announces, medians of {args.rounds} rounds\n")
    print("| server | greenlets | client | wall s | announces/s | CPU s | CPU ms each | failed |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['server']} | {r['concurrency']} | {r['client']} | {r['wall_s']} | "
            f"{r['per_s']} | {r['cpu_s']} | {r['cpu_ms_each']} | {r['failed']} |"
        )
    report = {
        "source": source_state(None),
        "old_commit": args.old_commit,
        "announces": args.announces,
        "rounds": args.rounds,
        "load": Path("/proc/loadavg").read_text().split()[:3],
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS / f"http-client-{time.strftime('%Y%m%dT%H%M%SZ')}.json"
    output.write_text(json.dumps(report, indent=1))
    print(f"\nwritten to {output.relative_to(REPO) if output.is_relative_to(REPO) else output}")


if __name__ == "__main__":
    main()
