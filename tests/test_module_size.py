"""No module is over 600 lines: the code stays in rooms a reader can hold in mind.

Every ``.py`` file under ``shared/``, ``services/``, ``testing/`` and ``bench/`` is found afresh
at each run (a module that is moved or split is checked where it lands) and counted as ``wc -l``
does. There are no exemptions: a module that grows past the bound is split by theme.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("shared", "services", "testing", "bench")
MAX_LINES = 600


def _modules(root: Path = REPO) -> list[Path]:
    """Every Python module under the checked folders.

    Args:
        root: The repository to look in.

    Returns:
        The module paths, sorted.
    """
    return sorted(p for folder in FOLDERS for p in (root / folder).rglob("*.py") if p.is_file())


def _lines(path: Path) -> int:
    """How many lines a module has, counted as ``wc -l`` counts them.

    Args:
        path: The module.

    Returns:
        Its number of lines.
    """
    return len(path.read_bytes().splitlines())


def _oversized(root: Path = REPO) -> list[str]:
    """The modules over ``MAX_LINES``, each with its line count.

    Args:
        root: The repository to look in.

    Returns:
        One ``path: N lines`` entry per module over the bound.
    """
    return [
        f"{p.relative_to(root)}: {n} lines" for p in _modules(root) if (n := _lines(p)) > MAX_LINES
    ]


def test_there_are_modules_to_check() -> None:
    modules = _modules()
    assert len(modules) >= 50
    assert {p.relative_to(REPO).parts[0] for p in modules} == set(FOLDERS)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_module_is_at_most_600_lines(path: Path) -> None:
    assert _lines(path) <= MAX_LINES, f"{path.relative_to(REPO)} has {_lines(path)} lines"


def test_the_check_finds_a_module_one_line_over(tmp_path: Path) -> None:
    package = tmp_path / "services" / "some_agent"
    package.mkdir(parents=True)
    (package / "fits.py").write_text("x = 1\n" * MAX_LINES)
    assert _oversized(tmp_path) == []
    (package / "grown.py").write_text("x = 1\n" * (MAX_LINES + 1))
    assert _oversized(tmp_path) == [f"{Path('services/some_agent/grown.py')}: 601 lines"]
