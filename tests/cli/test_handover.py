"""The command line and the daemon apart: ``start`` hands its process over to the daemon's entry
point, the only place in the coordinator that patches gevent, first thing and unconditionally;
``shared.runtime`` re-exports nothing, so importing it loads nothing."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import torviz.services.coordinator
from torviz.services.coordinator.cli.handover import DAEMON_ENTRY

COORDINATOR = [sys.executable, "-m", "torviz.services.coordinator"]
PACKAGE = Path(torviz.services.coordinator.__file__).parent
ENTRY = PACKAGE / "daemon" / "__main__.py"
STACK = ("gevent", "zmq", "pykka")


def _patch_calls(tree: ast.AST) -> list[ast.Call]:
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "patch_all"
    ]


def test_the_daemon_entry_point_patches_first_and_alone() -> None:
    body = ast.parse(ENTRY.read_text()).body
    statements = body[1:] if isinstance(body[0], ast.Expr) else body  # after the docstring
    first, second = statements[:2]
    assert isinstance(first, ast.ImportFrom)
    assert (first.module, [alias.name for alias in first.names]) == ("gevent", ["monkey"])
    assert isinstance(second, ast.Expr) and _patch_calls(second) == [second.value]
    patching = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if _patch_calls(ast.parse(path.read_text()))
    )
    assert patching == ["daemon/__main__.py"]
    assert DAEMON_ENTRY == "torviz.services.coordinator.daemon"


def test_shared_runtime_reexports_nothing_and_loads_nothing() -> None:
    code = (
        "import sys, shared.runtime as r; "
        "print(sorted(n for n in vars(r) if not n.startswith('__') or n == '__getattr__')); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {STACK!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.splitlines() == ["[]", "[]"]


def test_a_command_that_is_not_the_daemons_is_refused_there() -> None:
    result = subprocess.run(
        [sys.executable, "-m", DAEMON_ENTRY, "info", "x.torrent"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "torviz: error: info does not run in the daemon: use `torviz-coordinator info`"
    ]


def test_start_becomes_the_daemon_in_the_same_process(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    args = ["start", "--state-dir", str(tmp_path / "s"), "--config", str(config)]
    args += ["--download-dir", str(tmp_path), "--log-level", "WARNING"]
    process = subprocess.Popen(
        [*COORDINATOR, *args], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 30
        published: object = None
        while published != process.pid:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.1)
            try:
                published = json.loads((tmp_path / "s" / "daemon.json").read_text())["pid"]
            except (OSError, ValueError, KeyError):
                continue
        command = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")[:-1]
        assert [part.decode() for part in command[1:]] == ["-m", DAEMON_ENTRY, *args]
        stopped = subprocess.run(
            [*COORDINATOR, "shutdown", "--state-dir", str(tmp_path / "s")],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert stopped.returncode == 0, stopped.stderr
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
