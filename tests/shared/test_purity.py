"""Pure code does no I/O: ``shared/`` (except ``shared/runtime/``) and every ``services/*/core/``.

Pure code takes ``now`` as an argument and reports its next deadline; this test keeps it so by
walking the syntax tree of every module under ``shared/`` (except ``runtime/``) and under each
service's ``core/`` subpackage, found afresh at every run (a service whose ``core/`` lands later is
checked from then on). No socket, gevent, zmq, pykka, thread, process or clock import there, and
no reading of the clock through ``datetime``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "shared"
SERVICES = ROOT / "services"

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


def _core_folders(services: Path = SERVICES) -> list[Path]:
    """Every ``services/<service>/core/`` package present now.

    Args:
        services: The ``services/`` folder to look in.

    Returns:
        The ``core`` folders, sorted.
    """
    return sorted(p for p in services.glob("*/core") if p.is_dir())


def _pure_modules() -> list[Path]:
    """Every module that must stay pure: ``shared/`` less ``runtime/``, and each ``core/``.

    Returns:
        The module paths, sorted.
    """
    shared = [p for p in SHARED.rglob("*.py") if "runtime" not in p.relative_to(SHARED).parts]
    cores = [p for folder in _core_folders() for p in folder.rglob("*.py")]
    return sorted(shared + cores)


def _violations(path: Path) -> list[str]:
    """What in one module imports a forbidden module or reads the clock.

    Args:
        path: The module to check.

    Returns:
        One line per violation, naming the file, line and the import or call.
    """
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


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_does_no_io(path: Path) -> None:
    assert _violations(path) == []


def test_the_checker_catches_violations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import time\nfrom zmq import green\nimport gevent.monkey\n"
        "from datetime import datetime\nx = datetime.now()\n"
    )
    assert len(_violations(bad)) == 4


@pytest.mark.parametrize(
    "planted",
    [
        "import socket",
        "import gevent",
        "from gevent import sleep",
        "import zmq.green as zmq",
        "from zmq import green",
        "import pykka",
        "from pykka import ThreadingActor",
        "import time",
        "from time import monotonic",
        "import threading",
        "import subprocess",
    ],
)
def test_a_forbidden_import_planted_in_a_service_core_is_found(
    tmp_path: Path, planted: str
) -> None:
    """A ``services/`` copy with a forbidden import added to a ``core/`` module fails the check.

    The copy's ``core/`` folders are found the same way as the real ones, and a clean module there
    passes until the import is planted.
    """
    core = tmp_path / "services" / "some_agent" / "core"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text('"""Pure parts."""\n')
    module = core / "policy.py"
    module.write_text(
        '"""A pure policy."""\n\n\ndef next_deadline(now: float) -> float:\n    return now + 1.0\n'
    )
    (tmp_path / "services" / "some_agent" / "agent.py").write_text("import zmq\n")  # outside core/
    assert _core_folders(tmp_path / "services") == [core]
    modules = [p for folder in _core_folders(tmp_path / "services") for p in folder.rglob("*.py")]
    assert all(_violations(p) == [] for p in modules)
    module.write_text(planted + "\n" + module.read_text())
    assert [v for p in modules for v in _violations(p)] == [
        f"policy.py:1 imports {planted.split()[1]}"
    ]
