"""bench/ and testing/ stand apart from the test tree: neither imports anything from ``tests``,
and testing/ (which the benchmarks use without pytest) does not import pytest.

The check walks the syntax tree of every module, so an import inside a function counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imports(source: str, filename: str) -> list[tuple[int, str]]:
    """Every absolute module a source imports, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _forbidden(source: str, filename: str, banned: tuple[str, ...]) -> list[str]:
    return [
        f"{filename}:{line} imports {name}"
        for line, name in _imports(source, filename)
        if any(name == top or name.startswith(top + ".") for top in banned)
    ]


@pytest.mark.parametrize(
    ("folder", "banned"), [("bench", ("tests",)), ("testing", ("tests", "pytest"))]
)
def test_nothing_is_imported_from_the_test_tree(folder: str, banned: tuple[str, ...]) -> None:
    modules = sorted((REPO / folder).rglob("*.py"))
    assert modules, f"no modules under {folder}/"
    found = [
        problem
        for path in modules
        for problem in _forbidden(path.read_text(), str(path.relative_to(REPO)), banned)
    ]
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        "import tests.support.daemon\n",
        "from tests.services.peer_agent import fake_peers\n",
        "def f():\n    from tests import conftest\n",
    ],
)
def test_the_check_sees_an_import_from_the_test_tree(source: str) -> None:
    assert _forbidden(source, "planted.py", ("tests",))
    assert not _forbidden("import testing.swarm\nimport testsuite\n", "fine.py", ("tests",))
