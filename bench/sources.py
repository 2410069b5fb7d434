"""What a benchmark measures and where: the source tree, the machine, start-up import costs.

Strategy: other work edits the working tree while a benchmark runs, so torviz is run from a copy
of ``shared`` and ``services`` taken at the start (`freeze_worktree`) or extracted from a commit
(`snapshot`), byte-compiled once (`compile_tree`), and put first on ``PYTHONPATH`` (the editable
install's import hook comes after it). The results record which commit and which changed files
were measured (`source_state`) and on what machine (`machine`).

Rules:
- git is only read (``rev-parse``, ``status``, ``archive``); nothing in the repository is
  written.
- Every subprocess has a timeout.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = [
    "REPO",
    "RESULTS",
    "compile_tree",
    "fmt",
    "freeze_worktree",
    "git",
    "import_costs",
    "machine",
    "median",
    "snapshot",
    "source_state",
    "start_report",
]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def git(*argv: str) -> str:
    """A git command's output in the repository ('' when it fails)."""
    try:
        return subprocess.run(
            ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def snapshot(cache: Path, rev: str) -> tuple[str, Path]:
    """The source of commit `rev` extracted under `cache`/src (once): torviz runs from there.

    The package is installed editable from the working tree, but its import hook comes after
    PYTHONPATH: pointing PYTHONPATH at the snapshot measures that commit, whatever else is
    being edited in the working tree meanwhile.

    Raises:
        SystemExit: `rev` is not a commit.
    """
    commit = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    if not commit:
        raise SystemExit(f"not a commit: {rev}")
    root = cache / "src" / commit
    if not (root / "services").is_dir():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        # Commits since the package took the name torviz have torviz/ (two symlinks) too.
        named = git("ls-tree", "--name-only", commit, "torviz")
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "shared", "services", *named.split()],
            cwd=REPO,
            capture_output=True,
            check=True,
            timeout=60,
        )
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return commit, root


def freeze_worktree(cache: Path, stamp: str) -> Path:
    """A copy of the working tree's ``shared``, ``services`` and ``torviz`` taken now: other
    work edits the tree while a benchmark runs, and every run must measure the same code."""
    root = cache / "src" / f"worktree-{stamp}"
    shutil.rmtree(root, ignore_errors=True)
    for package in ("shared", "services", "torviz"):
        shutil.copytree(
            REPO / package,
            root / package,
            symlinks=True,  # torviz/shared and torviz/services stay links to the copies
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    return root


def compile_tree(root: Path) -> None:
    """Byte-compile the measured copy once, as an installed package would be.

    This environment sets PYTHONDONTWRITEBYTECODE, so without it every service process would
    compile torviz's sources again at each start (~0.1 s of CPU per process).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(root / "shared"), str(root / "services")],
        env=env,
        check=True,
        timeout=300,
    )


def source_state(commit: str | None) -> dict[str, Any]:
    """The commit measured and, for the working tree, the files changed on top of it."""
    if commit is not None:
        return {
            "commit": commit,
            "subject": git("log", "-1", "--format=%s", commit),
            "snapshot": True,
        }
    dirty = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "changed": [p for p in dirty if p.startswith(("shared/", "services/"))],
    }


def machine() -> dict[str, Any]:
    """CPU count and model, memory, kernel, Python and libtorrent versions, load average."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import libtorrent as lt

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libtorrent": lt.__version__,
        "loadavg_at_start": os.getloadavg(),
    }


_IMPORTS = {
    "coordinator": "from gevent import monkey; monkey.patch_all(); import services.coordinator.cli",
    "peer_agent": "import services.peer_agent.__main__",
    "storage_agent": "import services.storage_agent.__main__",
    "tracker_agent": "import services.tracker_agent.__main__",
}


def import_costs(env: dict[str, str], repeats: int = 3) -> dict[str, Any]:
    """What each service spends importing its modules (``python -X importtime``), best of
    `repeats`, with the packages costing most (each module's own time, by top-level package)."""
    costs: dict[str, Any] = {}
    for role, code in _IMPORTS.items():
        best: tuple[float, dict[str, float]] | None = None
        for _ in range(repeats):
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", code],
                capture_output=True,
                text=True,
                env={**os.environ, **env},
                cwd=env.get("PYTHONPATH", REPO),
                timeout=60,
                check=False,
            )
            wall = time.monotonic() - started
            groups: dict[str, float] = {}
            for line in done.stderr.splitlines():
                _, _, rest = line.partition("import time:")
                parts = rest.split("|")
                if len(parts) != 3 or not parts[0].strip().isdigit():
                    continue
                # Each module's own time, charged to its top-level package.
                top = parts[2].strip().split(".")[0]
                groups[top] = groups.get(top, 0.0) + int(parts[0]) / 1e6
            if best is None or wall < best[0]:
                best = (wall, groups)
        assert best is not None
        wall, groups = best
        ranked = sorted(groups.items(), key=lambda kv: -kv[1])
        costs[role] = {
            "process_wall_s": round(wall, 3),
            "imports_s": round(sum(groups.values()), 3),
            "top": [[name, round(sec, 3)] for name, sec in ranked[:8]],
        }
    return costs


def start_report(args: Any, kind: str) -> tuple[dict[str, Any], Path]:
    """Begin one run of a benchmark script: the code to measure, and its results record.

    Unless ``args.live``, the working tree is copied and byte-compiled under ``args.cache`` and
    ``args.env`` set to run that copy (others may edit the tree meanwhile); with it, ``args.env``
    is empty.

    Returns:
        The report's header (date, machine, source, arguments, an empty ``runs`` list) and the
        path of its JSON file (``args.output`` or ``bench/results/<kind>-<time>.json``).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    args.env = {}
    source: Path | None = None
    if not args.live:
        source = freeze_worktree(args.cache, stamp)
        compile_tree(source)
        args.env = {"PYTHONPATH": str(source)}
        print(f"measuring the working tree as copied to {source}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    output: Path = args.output or RESULTS / f"{kind}-{stamp}.json"
    report: dict[str, Any] = {
        "date": stamp,
        "machine": machine(),
        "source": {**source_state(None), "run_from": str(source or REPO)},
        "args": {k: str(v) for k, v in vars(args).items()},
        "runs": [],
    }
    return report, output


def median(values: list[float]) -> float | None:
    """The median, or None when no run produced the value."""
    return statistics.median(values) if values else None


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    """A table cell: ``value`` formatted with ``spec`` and ``unit``, or ``n/a``."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"
