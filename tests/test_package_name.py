"""The installed distribution owns one top-level name, ``torviz``.

The folders stay where the layout wants them (``shared/``, ``services/`` at the root); the
``torviz/`` package names them through two symlinks, so every import, console script and
``python -m`` reads ``torviz.shared`` and ``torviz.services``. Shown here: the wheel built from
the tracked files holds only ``torviz`` (and its dist-info), nothing in the repository imports
the bare names (two copies of one module would break ``isinstance`` across them), and the
symlinks point where they should.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BARE = ("shared", "services")


def _tracked(pattern: str) -> list[Path]:
    listing = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", pattern],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [REPO / line for line in listing.stdout.splitlines() if line]


def _bare_imports(path: Path, root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found += [
            f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)} imports {name}"
            for name in names
            if name.split(".")[0] in BARE
        ]
    return found


def test_the_package_names_the_folders_through_symlinks() -> None:
    for name in BARE:
        link = REPO / "torviz" / name
        assert link.is_symlink(), link
        assert link.resolve() == (REPO / name).resolve()


def test_nothing_imports_the_bare_names() -> None:
    offenders = [line for path in _tracked("*.py") for line in _bare_imports(path)]
    assert offenders == []


def test_the_checker_sees_a_bare_import(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("from shared.bus import Hello\nimport services.coordinator\n")
    assert len(_bare_imports(planted, tmp_path)) == 2


def test_the_wheel_holds_only_torviz(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    for path in _tracked("*"):
        target = source / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            target.symlink_to(path.readlink())
        elif path.is_file():
            shutil.copy2(path, target)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "wheels"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("torviz-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"torviz"}
    assert "torviz/shared/bus/codec.py" in names
    assert "torviz/services/coordinator/__main__.py" in names
