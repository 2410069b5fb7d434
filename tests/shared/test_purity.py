"""Pure code does no I/O: ``shared/`` (except ``shared/runtime/``) and every ``services/*/core/``.

Pure code takes ``now`` as an argument and reports its next deadline; this test keeps it so by
walking the syntax tree of every module under ``shared/`` (except ``runtime/``) and under each
service's ``core/`` subpackage, found afresh at every run (a service whose ``core/`` lands later is
checked from then on). No socket, gevent, zmq, pykka, thread, process or clock import there, no
reading of the clock through ``datetime``, and nothing of ``shared.runtime`` (the I/O layer: its
modules import zmq and gevent, or read the clock), however it is spelled: ``import``, ``from
shared import runtime``, or relative to the module's own package.
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
    # The I/O layer of shared/, by its name now and once installed as torviz.shared.
    "shared.runtime",
    "torviz.shared.runtime",
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


def _forbidden(name: str) -> bool:
    """Whether importing the dotted ``name`` imports a forbidden module (or a part of one).

    Args:
        name: An absolute module name, or a module name and an imported name joined by a dot.

    Returns:
        True when it is a forbidden module or lies inside one.
    """
    return any(name == m or name.startswith(m + ".") for m in FORBIDDEN_MODULES)


def _imported(node: ast.ImportFrom, path: Path, root: Path) -> list[str]:
    """What a ``from ... import ...`` imports, as absolute names: the module first, then each
    imported name under it (``from shared import runtime`` imports ``shared.runtime``).

    Args:
        node: The import.
        path: The module it is in (a relative import is resolved from its package).
        root: The folder the module's top-level package is in.

    Returns:
        The absolute names; none when a relative import climbs out of ``root``.
    """
    base = node.module or ""
    if node.level:
        package = list(path.relative_to(root).parent.parts)
        if node.level - 1 > len(package):
            return []
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([node.module] if node.module else [])])
    if not base:
        return []
    return [base, *(f"{base}.{alias.name}" for alias in node.names)]


def _violations(path: Path, root: Path = ROOT) -> list[str]:
    """What in one module imports a forbidden module or reads the clock.

    Args:
        path: The module to check.
        root: The folder its top-level package is in (relative imports resolve from there).

    Returns:
        One line per violation, naming the file, line and the import or call.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if _forbidden(alias.name)]
        elif isinstance(node, ast.ImportFrom):
            names = [name for name in _imported(node, path, root) if _forbidden(name)][:1]
        for name in names:
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
    assert all(_violations(p, tmp_path) == [] for p in modules)
    module.write_text(planted + "\n" + module.read_text())
    assert [v for p in modules for v in _violations(p, tmp_path)] == [
        f"policy.py:1 imports {planted.split()[1]}"
    ]


@pytest.mark.parametrize(
    ("where", "planted", "found"),
    [
        ("services/some_agent/core", "from shared.runtime.logging import with_context", None),
        ("services/some_agent/core", "from shared.runtime import logging", None),
        ("services/some_agent/core", "import shared.runtime.sockets", None),
        ("services/some_agent/core", "from shared import runtime", "shared.runtime"),
        ("services/some_agent/core", "from shared import bus, runtime", "shared.runtime"),
        ("services/some_agent/core", "from torviz.shared.runtime.curve import KeyPair", None),
        ("shared/tracker", "from ..runtime.sockets import BusSocket", "shared.runtime.sockets"),
        ("shared", "from .runtime import with_context", "shared.runtime"),
        ("shared", "from . import runtime", "shared.runtime"),
    ],
)
def test_an_import_of_the_runtime_planted_in_pure_code_is_found(
    tmp_path: Path, where: str, planted: str, found: str | None
) -> None:
    """``shared.runtime`` is the I/O layer: pure code may not import any of it, however spelled.

    The copy's ``core/`` folders are found as the real ones are; a module next to the planted one
    that imports the rest of ``shared`` (absolutely and relatively) passes.
    """
    package = tmp_path / where
    package.mkdir(parents=True)
    module = package / "policy.py"
    clean = package / "clean.py"
    clean.write_text(
        "from shared.bus import Hello\nfrom shared import types\nfrom . import policy\n"
    )
    module.write_text(planted + "\n")
    if where.startswith("services/"):
        assert _core_folders(tmp_path / "services") == [package]
    assert _violations(clean, tmp_path) == []
    name = found or planted.split()[1]
    assert _violations(module, tmp_path) == [f"policy.py:1 imports {name}"]


def test_a_relative_import_resolves_from_the_modules_own_package(tmp_path: Path) -> None:
    """The same relative import is the runtime in ``shared/`` and harmless one level down."""
    (tmp_path / "shared" / "tracker").mkdir(parents=True)
    (tmp_path / "shared" / "runtime.py").write_text("import zmq\n")
    top = tmp_path / "shared" / "top.py"
    down = tmp_path / "shared" / "tracker" / "down.py"
    for module in (top, down):
        module.write_text("from .runtime import BusSocket\n")
    assert _violations(top, tmp_path) == ["top.py:1 imports shared.runtime"]
    assert _violations(down, tmp_path) == []  # shared.tracker.runtime: not the I/O layer
    outside = tmp_path / "loose.py"
    outside.write_text("from ..runtime import BusSocket\n")  # climbs out of the tree
    assert _violations(outside, tmp_path) == []
