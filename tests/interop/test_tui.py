"""The terminal UI in a real terminal (tmux) on a real daemon and a loopback swarm (issue 16).

One daemon for the module, with a torrent downloading from a rate-limited libtorrent seeder
(``alpha.bin``, so its progress is seen moving); a second seeder serves the torrent added by a
pasted magnet link (``bravo``, ``x.pe=`` the seeder); a third torrent (``charlie.bin``) is
added by typing the start of its .torrent path and completing it with Tab. In tmux, the test
reads the screen as the design's screen text contract puts it: the list's header (``Name``,
``Progress``), a row per torrent with its name, ``NN.N%`` and state, the bottom line ending with
``? help``, the help page's ``torviz: keys``, the detail view's ``Files``, ``Trackers``,
``Peers``, ``Pieces``. The daemon's ``status --json`` is the judge of what a key did.

A second test runs ``tui`` with no daemon: it starts one in the background (``status`` finds
it; quitting the UI leaves it running) and ``S`` + ``y`` shuts it down.

Set ``TORVIZ_TUI_CAPTURE=FILE`` to save the list during the download in FILE and alpha's
detail view in FILE.detail (the README's captures).
Everything is on 127.0.0.0/8; every process is stopped at the end.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testing.content import (
    TorrentFile,
    make_content,
    make_torrent,
    multi_file_layout,
    single_file_layout,
)
from testing.swarm import LtPeer, Swarm, free_port
from tests.support.daemon import COORDINATOR, TorvizDaemon, descendants
from tests.support.magnets import torviz_config
from tests.support.tmux import Tmux, require_tmux

pytestmark = pytest.mark.interop

PIECE = 64 * 1024
ALPHA_SIZE = 16 * 1024 * 1024
ALPHA_RATE = 400_000
"""Bytes/s the alpha seeder uploads: about 40 s for the whole torrent, so it is seen moving
and still downloading (its seeder a peer) when the test opens its detail view."""
SCREEN_TIMEOUT = 15.0
"""Seconds a screen may take to show what a key or the daemon changed."""
HELP = "? help"
PERCENT = re.compile(r"(\d{1,3}\.\d)%")
PIECE_CELLS = re.compile(r"[.>?#0-9a-zA-Z]+")


@dataclass
class Scene:
    """What the module's tests share: the daemon, its swarm and the torrents."""

    work: Path
    daemon: TorvizDaemon
    swarm: Swarm
    alpha: TorrentFile
    alpha_seeder: LtPeer
    bravo: TorrentFile
    bravo_magnet: str
    charlie: TorrentFile


@pytest.fixture(scope="module", autouse=True)
def _tmux() -> None:
    require_tmux()


@pytest.fixture(scope="module")
def work() -> Iterator[Path]:
    """A short folder: the daemon's ipc sockets live in it, and their paths are bounded."""
    with tempfile.TemporaryDirectory(prefix="tv-tui-", dir="/tmp") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def scene(work: Path, interop_tools: None) -> Iterator[Scene]:
    with Swarm(work / "swarm") as swarm:
        alpha_data = make_content(
            work / "seed-a", single_file_layout(ALPHA_SIZE, "alpha.bin"), seed=161
        )
        bravo_data = make_content(work / "seed-b", multi_file_layout(2 * 1024 * 1024, "bravo"), 162)
        charlie_data = make_content(
            work / "seed-c", single_file_layout(1024 * 1024, "charlie.bin"), seed=163
        )
        torrents = work / "torrents"
        torrents.mkdir()
        bravo = make_torrent(bravo_data, PIECE, [], work / "bravo.torrent")  # not in torrents/
        probes = [
            make_torrent(d, PIECE, [], work / "probe.torrent") for d in (alpha_data, charlie_data)
        ]
        tracker = swarm.tracker([probe.info_hash for probe in probes])
        announce = [tracker.http_announce_url]
        alpha = make_torrent(alpha_data, PIECE, announce, torrents / "alpha.torrent")
        charlie = make_torrent(charlie_data, PIECE, announce, torrents / "charlie.torrent")
        alpha_seeder = swarm.seeder(
            alpha.path, alpha_data.root, seed_mode=True, upload_limit=ALPHA_RATE
        )
        bravo_seeder = swarm.seeder(bravo.path, bravo_data.root, seed_mode=True)
        magnet = bravo.magnet(peers=[bravo_seeder.address], name="bravo")
        config = torviz_config(work / "torviz.toml", free_port("127.0.0.1"))
        daemon = TorvizDaemon(work / "state", config, work / "dl", work / "daemon.log")
        (work / "dl").mkdir()
        try:
            daemon.start()
            added = daemon.cli("add", str(alpha.path))
            assert added.returncode == 0, added.stderr
            yield Scene(work, daemon, swarm, alpha, alpha_seeder, bravo, magnet, charlie)
        finally:
            daemon.stop()


def _tui(*args: str, width: int = 120, height: int = 30, home: Path | None = None) -> Tmux:
    env = {"HOME": str(home)} if home is not None else None
    return Tmux([*COORDINATOR, "tui", *args], width=width, height=height, env=env)


def _row(screen: str, name: str) -> str:
    """The list's row of ``name``: the line starting with it after the selection mark, up to
    the log pane beside the list (the log's lines name torrents too)."""
    rows = (line.split("│")[0] for line in screen.splitlines() if line[1:].startswith(name))
    return next(rows, "")


def _percent(screen: str, name: str) -> float | None:
    match = PERCENT.search(_row(screen, name))
    return float(match.group(1)) if match else None


def _after(screen: str, heading: str) -> list[str]:
    """The lines after the first line starting with ``heading`` (none if there is none)."""
    lines = screen.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), len(lines))
    return lines[start + 1 :]


def _state(scene: Scene, torrent: TorrentFile) -> str:
    state = scene.daemon.status(torrent.info_hash_hex)["state"]
    assert isinstance(state, str)
    return state


def _check_layout(tmux: Tmux, width: int, height: int) -> None:
    """After a resize: the whole screen redrawn at the new size, the list and bottom line there.

    A line drawn wider than the window would wrap onto the next one and push the bottom line
    off the screen, so "the last line ends with ``? help``" also says that no line was wider.
    """

    def redrawn(screen: str) -> bool:
        lines = (screen.split("\n") + [""] * height)[:height]
        return (
            lines[-1].rstrip().endswith(HELP)
            and sum(HELP in line for line in lines) == 1
            and all(_row(screen, name) for name in ("alpha.bin", "bravo", "charlie.bin"))
            and "Name" in screen
            and "Progress" in screen
        )

    tmux.resize(width, height)
    assert tmux.size() == (width, height)
    tmux.wait_for(redrawn, SCREEN_TIMEOUT)
    lines = tmux.lines()
    assert len(lines) == height
    assert all(len(line) <= width for line in lines)


def test_the_tui_shows_and_drives_the_daemon(scene: Scene) -> None:
    # HOME is the scene's folder: its paths show as ~/... and ~ is typed in the prompt.
    with _tui("--state-dir", str(scene.daemon.state_dir), home=scene.work) as tmux:
        # The list: the header, alpha's row with its progress moving, the bottom line.
        screen = tmux.wait_for(  # the whole first frame: a capture may come while it is drawn
            lambda s: _percent(s, "alpha.bin") is not None and s.rstrip().endswith(HELP),
            SCREEN_TIMEOUT,
        )
        assert "Name" in screen and "Progress" in screen
        assert tmux.lines()[-1].rstrip().endswith(HELP)  # the last line of the window
        first = _percent(screen, "alpha.bin")
        assert first is not None
        screen = tmux.wait_for(lambda s: (_percent(s, "alpha.bin") or 0.0) > first, SCREEN_TIMEOUT)
        assert "downloading" in _row(screen, "alpha.bin")

        # + and a pasted magnet link: bravo comes in and downloads from its seeder.
        tmux.send_keys("+")
        tmux.wait_for("Add (magnet link or .torrent path):", SCREEN_TIMEOUT)
        tmux.paste(scene.bravo_magnet)
        tmux.send_keys("Enter")
        tmux.wait_for(lambda s: bool(_row(s, "bravo")) and "Add (" not in s, SCREEN_TIMEOUT)

        # + and a path typed in part (from ~), completed with Tab: charlie.bin comes in.
        tmux.send_keys("+")
        tmux.wait_for("Add (magnet link or .torrent path):", SCREEN_TIMEOUT)
        tmux.type_text("~/torrents/ch")
        tmux.send_keys("Tab")
        tmux.wait_for("charlie.torrent", SCREEN_TIMEOUT)
        tmux.send_keys("Enter")
        tmux.wait_for(lambda s: bool(_row(s, "charlie.bin")) and "Add (" not in s, SCREEN_TIMEOUT)
        capture = os.environ.get("TORVIZ_TUI_CAPTURE")
        if capture:  # three torrents, alpha still on its way
            Path(capture).write_text(tmux.wait_for(lambda s: "Add (" not in s, SCREEN_TIMEOUT))
        listed = json.loads(scene.daemon.cli("status", "--json").stdout)["torrents"]
        assert {t["info_hash"] for t in listed} == {
            scene.alpha.info_hash_hex,
            scene.bravo.info_hash_hex,
            scene.charlie.info_hash_hex,
        }

        # A bad input: its one-line error in the prompt, the text kept; Esc cancels.
        tmux.send_keys("+")
        tmux.wait_for("Add (magnet link or .torrent path):", SCREEN_TIMEOUT)
        tmux.type_text("/no/such/file.torrent")
        tmux.send_keys("Enter")
        screen = tmux.wait_for(
            lambda s: any(
                "Add (" in line
                and "/no/such/file.torrent" in line
                and "no such file" in line.lower()
                for line in s.splitlines()
            ),
            SCREEN_TIMEOUT,
        )
        assert "Traceback" not in screen
        tmux.send_keys("Escape")
        tmux.wait_for(lambda s: "Add (" not in s, SCREEN_TIMEOUT)

        # space on alpha (the first row, by name): paused, and the daemon agrees; again: resumed.
        tmux.send_keys("Home", "k", "k", "k")
        tmux.send_keys("Space")
        tmux.wait_for(lambda s: "paused" in _row(s, "alpha.bin"), SCREEN_TIMEOUT)
        assert _state(scene, scene.alpha) == "paused"
        tmux.send_keys("Space")
        tmux.wait_for(lambda s: "paused" not in _row(s, "alpha.bin"), SCREEN_TIMEOUT)
        assert _state(scene, scene.alpha) != "paused"

        # ? the help page; Esc back to the list.
        tmux.send_keys("?")
        tmux.wait_for("torviz: keys", SCREEN_TIMEOUT)
        tmux.send_keys("Escape")
        tmux.wait_for(lambda s: "torviz: keys" not in s and "Progress" in s, SCREEN_TIMEOUT)

        # Enter: alpha's detail, with its seeder among the peers and the piece map.
        tmux.send_keys("Enter")
        seeder = str(scene.alpha_seeder.address.host)
        screen = tmux.wait_for(  # the whole frame: a capture may come while one is drawn
            lambda s: (
                all(h in s for h in ("Files", "Trackers", "Peers", "Pieces"))
                and seeder in s
                and any("missing" in line for line in _after(s, "Pieces"))
            ),
            SCREEN_TIMEOUT,
        )
        if capture:
            Path(f"{capture}.detail").write_text(screen)
        peers = itertools.takewhile(lambda line: line.startswith(" "), _after(screen, "Peers"))
        assert any(seeder in line and "@" in line for line in peers), screen  # agent@host
        below = _after(screen, "Pieces")
        legend = next(i for i, line in enumerate(below) if "missing" in line)
        cells = "".join(line.strip() for line in below[:legend])
        # One character per cell: delivered (a host's letter, or #) or on its way (>).
        assert PIECE_CELLS.fullmatch(cells), screen
        assert re.search(r"[#a-zA-Z0-9>]", cells), screen
        tmux.send_keys("Escape")
        tmux.wait_for(lambda s: "Progress" in s and "Pieces" not in s, SCREEN_TIMEOUT)

        # A: the agents view.
        tmux.send_keys("A")
        tmux.wait_for(
            lambda s: (
                any(line.startswith("Agents") for line in s.splitlines()) and "peer_agent" in s
            ),
            SCREEN_TIMEOUT,
        )
        tmux.send_keys("Escape")
        tmux.wait_for(lambda s: "Progress" in s, SCREEN_TIMEOUT)

        # Resizes: everything redrawn at the new size.
        _check_layout(tmux, 80, 24)
        _check_layout(tmux, 200, 60)

        # q: exit 0, and the daemon still answers.
        tmux.send_keys("q")
        assert tmux.wait_exit(SCREEN_TIMEOUT) == 0
    status = scene.daemon.cli("status")
    assert status.returncode == 0, status.stderr


def _daemon_pid(state: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads((state / "daemon.json").read_text())
        if isinstance(info, dict) and isinstance(info.get("pid"), int):
            return int(info["pid"])
    return 0


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}"):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # ours only if this process started it
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_tui_starts_a_daemon_when_none_runs(work: Path, interop_tools: None) -> None:
    state, downloads = work / "state2", work / "dl2"
    downloads.mkdir()
    config = work / "alone.toml"
    config.write_text(
        f'[coordinator]\ndownload_dir = "{downloads}"\n\n'
        '[peer_agent]\nlisten_host = "127.0.0.1"\n\n[tracker_agent]\ndht = false\n'
    )
    pid = 0
    try:
        with _tui("--state-dir", str(state), "--config", str(config)) as tmux:
            tmux.wait_for("started a torviz daemon in the background", 30.0)
            pid = _daemon_pid(state)
            assert pid > 0
            assert f"pid {pid}" in tmux.screen()
            found = _cli_status(state)
            assert found.returncode == 0, found.stderr
            tmux.send_keys("q")
            assert tmux.wait_exit(SCREEN_TIMEOUT) == 0
        assert _cli_status(state).returncode == 0  # quitting the UI left it running
        with _tui("--state-dir", str(state)) as tmux:
            screen = tmux.wait_for(lambda s: s.rstrip().endswith(HELP), SCREEN_TIMEOUT)
            assert "started a torviz daemon" not in screen  # attached, none started
            tmux.send_keys("S")
            tmux.wait_for("Shut down the daemon and its agents? (y/n)", SCREEN_TIMEOUT)
            tmux.send_keys("y")
            assert tmux.wait_exit(SCREEN_TIMEOUT) == 0
        assert _gone(pid, 30.0), "the daemon still runs after S + y"
    finally:
        if pid:
            for process in {pid, *descendants(pid)}:
                with contextlib.suppress(OSError):
                    os.kill(process, signal.SIGKILL)


def _cli_status(state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COORDINATOR, "status", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
