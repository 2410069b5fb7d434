"""``shared/`` is pure: only ``shared/runtime/`` may do I/O on sockets or read the clock.

Pure code takes ``now`` as an argument and reports its next deadline; this test keeps it so by
walking the syntax tree of every module under ``shared/`` (except ``runtime/``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"

FORBIDDEN_MODULES = {
    "socket",
    "ssl",
    "select",
    "selectors",
    "asyncio",
    "gevent",
    "zmq",
    "pykka",
    "time",
    "urllib.request",
    "http.client",
    "requests",
    "threading",
    "subprocess",
}
# Reading the clock through datetime is just as impure as time.time().
FORBIDDEN_CALLS = {
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}


def _pure_modules() -> list[Path]:
    return sorted(p for p in SHARED.rglob("*.py") if "runtime" not in p.relative_to(SHARED).parts)


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES):
                found.append(f"{path.name}:{getattr(node, 'lineno', 0)} imports {name}")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and (node.func.value.id, node.func.attr) in FORBIDDEN_CALLS
        ):
            found.append(f"{path.name}:{node.lineno} reads the clock")
    return found


def test_there_are_pure_modules_to_check() -> None:
    assert len(_pure_modules()) >= 5


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(SHARED)))
def test_pure_module_does_no_io(path: Path) -> None:
    assert _violations(path) == []


def test_the_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nfrom zmq import green\nimport gevent.monkey\n"
        "from datetime import datetime\nx = datetime.now()\n"
    )
    assert len(_violations(bad)) == 4
