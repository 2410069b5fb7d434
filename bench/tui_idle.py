"""The terminal UI when idle: its CPU (and what its polling costs the daemon) with 1 and with
1,000 paused torrents, and how fast a key shows on screen.

Usage (from the repository root)::

    .venv/bin/python bench/tui_idle.py [--counts 1,1000] [--seconds 30] [--settle 3]
        [--keys 5] [--output FILE]

What it does: starts ``torviz-coordinator start`` (its own state directory, peer agent on
127.0.0.1, DHT off) and, for each count in ``--counts`` (ascending), brings it to that many
paused torrents: each made by torviz's ``create`` (the command's own code, run in this process
through its parser: one small file of distinct bytes each, a tracker URL on 127.0.0.1 that
nothing listens on) and added and paused over the control endpoint (one client, ``AddTorrent``
then ``PauseTorrent``). Then:

- **daemon alone**: the coordinator's CPU (utime + stime from /proc/PID/stat) over
  ``--seconds``, no UI attached;
- **UI idle**: ``torviz-coordinator tui`` in a private tmux server (120x40, TERM
  xterm-256color), waited for until its bottom line counts the torrents, left ``--settle``
  seconds, then the UI's CPU and the coordinator's over ``--seconds`` while nobody presses a
  key, and the UI's RSS;
- **key to frame**: ``?`` (help) then ``Esc`` (back), ``--keys`` times each, timed from
  ``send-keys`` until ``capture-pane`` shows the change (polled every 5 ms; the capture itself
  costs a few ms, so this is an upper bound).

Prints a markdown table and writes ``bench/results/tui-<time>.json`` with the machine and the
commit measured (the working tree as it is: this script runs it live). Every process it starts
is stopped at the end (tmux's server killed, the daemon shut down, else killed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.proctree import cpu_seconds, descendants, read_stat
from bench.sources import RESULTS, machine, source_state

COORDINATOR = Path(sys.executable).with_name("torviz-coordinator")
TRACKER = "http://127.0.0.1:9/announce"  # the discard port: nothing answers there
CONFIG = """
[peer_agent]
listen_host = "127.0.0.1"

[tracker_agent]
dht = false
announce_timeout = 2.0
bind_address = "127.0.0.1"
"""
WIDTH, HEIGHT = 120, 40
_POLL = 0.005


@dataclass(slots=True)
class Figures:
    torrents: int
    daemon_alone_cpu_pct: float
    ui_cpu_pct: float
    daemon_with_ui_cpu_pct: float
    ui_rss_mib: float
    help_key_ms: float
    back_key_ms: float
    seconds: float


class Tmux:
    """The UI in a private tmux server (a few commands; bench/ does not use tests/)."""

    def __init__(self, command: list[str]) -> None:
        self.name = f"torviz-bench-{os.getpid()}"
        self.env = {**os.environ, "TERM": "xterm-256color"}
        self.env.pop("TMUX", None)
        self.run(
            "set-option", "-g", "status", "off", ";",
            "set-option", "-g", "default-terminal", "xterm-256color", ";",
            "new-session", "-d", "-s", "ui", "-x", str(WIDTH), "-y", str(HEIGHT), "--", *command,
        )  # fmt: skip

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.name, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            env=self.env,
        ).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "ui")

    def pid(self) -> int:
        return int(self.run("display-message", "-p", "-t", "ui", "#{pane_pid}").strip())

    def wait(self, predicate: Callable[[str], bool], timeout: float) -> float:
        """Seconds until the screen satisfies ``predicate``.

        Raises:
            RuntimeError: not within ``timeout`` seconds.
        """
        started = time.monotonic()
        while True:
            screen = self.screen()
            if predicate(screen):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the UI never showed what was awaited:\n{screen}")
            time.sleep(_POLL)

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run("kill-server")


def _create(data: Path, out: Path, index: int) -> bytes:
    """One .torrent made by ``torviz-coordinator create`` (in this process); its bytes."""
    from torviz.services.coordinator.cli import main as cli

    source = data / f"t{index:05d}.bin"
    source.write_bytes(index.to_bytes(4, "big") * 4096)  # 16 KiB, distinct per torrent
    torrent = out / f"t{index:05d}.torrent"
    argv = ["create", str(source), "-o", str(torrent), "-t", TRACKER, "--threads", "1"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli([*argv, "--no-date", "--piece-size", "16K"])
    if code != 0:
        raise RuntimeError(f"create failed for {source}")
    return torrent.read_bytes()


def _fill(control: str, work: Path, have: int, want: int) -> None:
    """Bring the daemon from ``have`` to ``want`` paused torrents."""
    from torviz.shared.bus import AddTorrent, PauseTorrent, TorrentAdded, TorrentPaused
    from torviz.shared.runtime.control import ControlClient

    data, out = work / "data", work / "torrents"
    data.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    with ControlClient(control, timeout=30.0, green=False) as client:
        client.hello()
        for index in range(have, want):
            metainfo = _create(data, out, index)
            added = client.request(AddTorrent(metainfo, str(work / "dl")))
            if not isinstance(added, TorrentAdded):
                raise RuntimeError(f"add failed: {added}")
            paused = client.request(PauseTorrent(added.info_hash))
            if not isinstance(paused, TorrentPaused):
                raise RuntimeError(f"pause failed: {paused}")


def _cpu_pct(pids: list[int], seconds: float) -> list[float]:
    """Each process's CPU over ``seconds`` of sleeping here, in % of one core."""
    before = [cpu_seconds(pid) or 0.0 for pid in pids]
    started = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    after = [cpu_seconds(pid) or 0.0 for pid in pids]
    return [100.0 * (b - a) / elapsed for a, b in zip(before, after, strict=True)]


def _key_ms(tmux: Tmux, key: str, shown: Callable[[str], bool], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        tmux.run("send-keys", "-t", "ui", key)
        times.append(1000.0 * tmux.wait(shown, 10.0))
        time.sleep(0.3)
        if key == "?":
            tmux.run("send-keys", "-t", "ui", "Escape")
            tmux.wait(lambda s: "torviz: keys" not in s, 10.0)
        else:
            tmux.run("send-keys", "-t", "ui", "?")
            tmux.wait(lambda s: "torviz: keys" in s, 10.0)
        time.sleep(0.3)
    return times


def measure(count: int, state: Path, daemon_pid: int, args: argparse.Namespace) -> Figures:
    [alone] = _cpu_pct([daemon_pid], args.seconds)
    tmux = Tmux([str(COORDINATOR), "tui", "--state-dir", str(state)])
    try:
        counted = f"{count} torrent{'s' if count != 1 else ''}"
        tmux.wait(lambda s: counted in s and s.rstrip().endswith("? help"), 60.0)
        time.sleep(args.settle)
        ui_pid = tmux.pid()
        ui, daemon = _cpu_pct([ui_pid, daemon_pid], args.seconds)
        stat = read_stat(ui_pid)
        rss = stat.rss / 2**20 if stat else 0.0
        help_ms = _key_ms(tmux, "?", lambda s: "torviz: keys" in s, args.keys)
        tmux.run("send-keys", "-t", "ui", "?")
        tmux.wait(lambda s: "torviz: keys" in s, 10.0)
        back_ms = _key_ms(tmux, "Escape", lambda s: "torviz: keys" not in s, args.keys)
        tmux.run("send-keys", "-t", "ui", "Escape")
    finally:
        tmux.close()
    return Figures(
        torrents=count,
        daemon_alone_cpu_pct=round(alone, 2),
        ui_cpu_pct=round(ui, 2),
        daemon_with_ui_cpu_pct=round(daemon, 2),
        ui_rss_mib=round(rss, 1),
        help_key_ms=round(statistics.median(help_ms), 1),
        back_key_ms=round(statistics.median(back_ms), 1),
        seconds=args.seconds,
    )


def _start_daemon(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    (work / "torviz.toml").write_text(CONFIG)
    (work / "dl").mkdir()
    where = ["--state-dir", str(work / "state"), "--download-dir", str(work / "dl")]
    with open(work / "daemon.log", "ab") as log:  # the daemon keeps its own descriptor
        process = subprocess.Popen(
            [str(COORDINATOR), "start", *where, "--config", str(work / "torviz.toml")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError, ValueError):
            info = json.loads((work / "state" / "daemon.json").read_text())
            if info.get("pid") == process.pid:
                return process, str(info["control"])
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start: {(work / 'daemon.log').read_text()}")
        time.sleep(0.1)


def _stop_daemon(process: subprocess.Popen[bytes], state: Path) -> None:
    children = descendants(process.pid)
    subprocess.run(
        [str(COORDINATOR), "shutdown", "--state-dir", str(state)],
        capture_output=True,
        timeout=30,
        check=False,
    )
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1,1000", help="torrent counts, ascending")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=3.0)
    parser.add_argument("--keys", type=int, default=5)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if shutil.which("tmux") is None:
        print("tmux is not installed (Debian package tmux)", file=sys.stderr)
        return 1
    counts = sorted(int(c) for c in args.counts.split(","))
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    report: dict[str, Any] = {
        "date": stamp,
        "machine": machine(),
        "source": source_state(None),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    results: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="tv-tui-bench-", dir="/tmp") as tmp:
        work = Path(tmp)
        process, control = _start_daemon(work)
        try:
            have = 0
            for count in counts:
                started = time.monotonic()
                _fill(control, work, have, count)
                have = count
                print(f"{count} paused torrents ({time.monotonic() - started:.1f} s)", flush=True)
                figures = measure(count, work / "state", process.pid, args)
                print(json.dumps(asdict(figures)), flush=True)
                results.append(figures)
        finally:
            _stop_daemon(process, work / "state")
    report["runs"] = [asdict(r) for r in results]
    print(
        "| torrents | UI CPU, idle | coordinator CPU, UI attached | coordinator CPU, no UI "
        "| UI RSS | `?` to help shown | `Esc` to list shown |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.torrents:,} | {r.ui_cpu_pct:.2f}% | {r.daemon_with_ui_cpu_pct:.2f}% "
            f"| {r.daemon_alone_cpu_pct:.2f}% | {r.ui_rss_mib:.0f} MiB "
            f"| {r.help_key_ms:.0f} ms | {r.back_key_ms:.0f} ms |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = args.output or RESULTS / f"tui-{stamp}.json"
    output.write_text(json.dumps(report, indent=1))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
