"""The tmux driver of the terminal UI tests (tests/support/tmux.py) on a small real program:
keys, a paste, the screen, a resize the program sees, its exit status, and a server gone at
close."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.tmux import TMUX, Tmux, require_tmux


@pytest.fixture(autouse=True)
def _tmux() -> None:
    require_tmux()


# Tells its TERM and size, echoes each line it reads, tells its size again on "size", exits
# with the number it is given on "exit N".
PROGRAM = r"""
import os, shutil, sys
def size():
    columns, lines = shutil.get_terminal_size()
    print(f"size {columns}x{lines}", flush=True)
print("term", os.environ.get("TERM"), os.environ.get("PROBE"), flush=True)
size()
for line in sys.stdin:
    line = line.rstrip("\n")
    if line.startswith("exit "):
        sys.exit(int(line[5:]))
    if line == "size":
        size()
    else:
        print(f"got [{line}]", flush=True)
"""


def test_keys_paste_screen_resize_and_exit_status() -> None:
    with Tmux([sys.executable, "-c", PROGRAM], width=90, height=20, env={"PROBE": "p1"}) as tmux:
        tmux.wait_for("size 90x20")
        assert "term xterm-256color p1" in tmux.screen()
        assert tmux.size() == (90, 20)
        assert len(tmux.lines()) == 20
        assert tmux.exit_status() is None
        tmux.type_text("hello world")
        tmux.send_keys("Enter")
        tmux.wait_for("got [hello world]")
        tmux.paste("magnet:?xt=urn:btih:" + "ab" * 20)
        tmux.send_keys("Enter")
        tmux.wait_for("got [magnet:?xt=urn:btih:" + "ab" * 20 + "]")
        tmux.resize(80, 24)
        tmux.type_text("size")
        tmux.send_keys("Enter")
        tmux.wait_for("size 80x24")
        assert tmux.size() == (80, 24)
        with pytest.raises(AssertionError, match="never showed 'nothing like this'"):
            tmux.wait_for("nothing like this", timeout=0.3)
        pid = tmux.pid()
        tmux.type_text("exit 7")
        tmux.send_keys("Enter")
        assert tmux.wait_exit() == 7
        assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)
    listed = subprocess.run(
        [TMUX, "-L", tmux.name, "list-sessions"], capture_output=True, text=True, check=False
    )
    assert listed.returncode != 0  # the server is gone


def test_close_ends_a_running_command() -> None:
    with Tmux(["sleep", "60"], width=80, height=24) as tmux:
        pid = tmux.pid()
        assert os.path.exists(f"/proc/{pid}")
        with pytest.raises(AssertionError, match="did not exit"):
            tmux.wait_exit(timeout=0.3)
    deadline = 50
    while os.path.exists(f"/proc/{pid}") and not _zombie(pid) and deadline:
        deadline -= 1
        subprocess.run(["sleep", "0.1"], check=False)
    assert not os.path.exists(f"/proc/{pid}") or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
