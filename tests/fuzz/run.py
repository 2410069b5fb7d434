"""Run the fuzz targets under atheris (libFuzzer), one target per process.

Usage (from the repository root)::

    .venv/bin/python tests/fuzz/run.py --list
    .venv/bin/python tests/fuzz/run.py TARGET [--runs N | --seconds S] [--corpus DIR]
    .venv/bin/python tests/fuzz/run.py --all --seconds 300 --summary FILE   # a long campaign
    .venv/bin/python tests/fuzz/run.py --replay FILE [--target TARGET]      # plain Python

Strategy: this file is a driver. For each target it writes the seed corpus into a fresh
directory (or into ``--corpus DIR/<target>`` to keep what the fuzzer learns between
campaigns), starts a child process of itself that imports the parsers under atheris'
instrumentation and hands control to libFuzzer, then reads libFuzzer's final statistics. The
child never returns (libFuzzer exits the process), which is why the driver, not the child, owns
the temporary directories and the summary.

Rules:
- A finding is whatever libFuzzer reports: an exception escaping the target (``crash``), an
  input running longer than ``--timeout`` seconds (``timeout``) or the process growing past
  ``--rss-limit-mb`` (``oom``). Its input is copied to ``<save-crashes>/<target>-<kind>-<sha>.bin``
  (``tests/fuzz/regressions/`` by default), where the replay test runs it on every test run from
  then on; fix the parser, then keep the file as the regression vector.
- One target runs at a time: a campaign on a shared 2-core machine should not starve the rest.
  Wrap the driver in ``nice`` (``campaign.sh`` does).
- Exit status: 0 when every target ran clean, 1 when any finding was made, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
REGRESSIONS = HERE / "regressions"
DEFAULT_MODULE = "tests.fuzz.targets"
FINDING_KINDS = ("crash", "timeout", "oom", "leak")

_STAT = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_COVERAGE = re.compile(r"#\d+\s+\w+\s+cov: (\d+) ft: (\d+)")
_SLOWEST = re.compile(r"stat::slowest_unit_time_sec:\s*(\d+)")
_PEAK_RSS = re.compile(r"stat::peak_rss_mb:\s*(\d+)")


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one target's run produced.

    Attributes:
        target: the target's name.
        executions: inputs libFuzzer ran (seeds included); 0 if it did not report.
        seconds: wall time of the child process.
        coverage: the last ``cov`` figure libFuzzer printed (edges reached), 0 if none.
        slowest: seconds the slowest input took (libFuzzer rounds down to whole seconds).
        peak_rss_mb: the child's peak memory.
        findings: where each finding's input was saved.
        returncode: the child's exit status.
        log_tail: the end of the child's output, for a report.
    """

    target: str
    executions: int
    seconds: float
    coverage: int
    slowest: int
    peak_rss_mb: int
    findings: tuple[Path, ...]
    returncode: int
    log_tail: str

    @property
    def clean(self) -> bool:
        return self.returncode == 0 and not self.findings


def _load(module: str, *, instrument: bool) -> ModuleType:
    """Import the target registry, its parsers under atheris' instrumentation if asked."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    if not instrument:
        return importlib.import_module(module)
    import atheris

    with atheris.instrument_imports(include=["torviz.shared"]):
        return importlib.import_module(module)


def _write_seeds(module: ModuleType, name: str, corpus: Path) -> int:
    corpus.mkdir(parents=True, exist_ok=True)
    count = 0
    for data in module.TARGETS[name].seeds():
        (corpus / f"seed-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
        count += 1
    return count


def _child(args: argparse.Namespace) -> None:
    """Inside the child: hand the instrumented target to libFuzzer (never returns)."""
    import atheris

    module = _load(args.module, instrument=True)
    target = module.TARGETS[args.target]
    flags = [
        sys.argv[0],
        str(args.corpus_dir),
        f"-max_len={args.max_len or target.max_len}",
        f"-timeout={args.timeout}",
        f"-rss_limit_mb={args.rss_limit_mb}",
        f"-artifact_prefix={args.artifacts}/",
        "-print_final_stats=1",
        "-print_pcs=0",
    ]
    if args.runs is not None:
        flags.append(f"-runs={args.runs}")
    if args.seconds is not None:
        flags.append(f"-max_total_time={args.seconds}")
    atheris.Setup(flags, target.run)
    atheris.Fuzz()


def fuzz(
    name: str,
    *,
    runs: int | None = None,
    seconds: int | None = None,
    corpus: Path | None = None,
    save_crashes: Path = REGRESSIONS,
    module: str = DEFAULT_MODULE,
    timeout: int = 10,
    rss_limit_mb: int = 2048,
    max_len: int | None = None,
) -> Outcome:
    """Fuzz one target in a child process and report what happened.

    Args:
        name: a key of the registry's ``TARGETS``.
        runs: stop after this many inputs.
        seconds: stop after this much time (with ``runs``, whichever comes first).
        corpus: keep the corpus in ``corpus/<name>`` instead of a temporary directory.
        save_crashes: directory that receives each finding's input.
        module: the registry module (tests use a planted one).
        timeout: seconds one input may run before it is a ``timeout`` finding.
        rss_limit_mb: memory ceiling before an ``oom`` finding.
        max_len: longest generated input; the target's own default when None.

    Returns:
        The outcome; the child's output is summarised in ``log_tail``.
    """
    registry = _load(module, instrument=False)
    if name not in registry.TARGETS:
        raise SystemExit(f"unknown target {name!r}; --list shows them")
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as scratch:
        work = Path(scratch)
        corpus_dir = corpus / name if corpus is not None else work / "corpus"
        _write_seeds(registry, name, corpus_dir)
        artifacts = work / "artifacts"
        artifacts.mkdir()
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            name,
            "--module",
            module,
            "--corpus-dir",
            str(corpus_dir),
            "--artifacts",
            str(artifacts),
            "--timeout",
            str(timeout),
            "--rss-limit-mb",
            str(rss_limit_mb),
        ]
        for flag, value in (("--runs", runs), ("--seconds", seconds), ("--max-len", max_len)):
            if value is not None:
                command += [flag, str(value)]
        # Generous: startup, seed replay and libFuzzer's own shutdown on top of the budget.
        limit = (seconds or 0) + 30 + (runs or 0) // 50
        started = time.monotonic()
        try:
            done = subprocess.run(
                command,
                check=False,
                cwd=REPO,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=limit,
            )
            output, returncode = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:  # subprocess.run has killed the child
            output = _text(exc.stdout) + _text(exc.stderr) + f"\ndriver: killed after {limit} s"
            returncode = -9
        elapsed = time.monotonic() - started
        findings = _save_findings(name, artifacts, save_crashes)
    return Outcome(
        target=name,
        executions=_executions(output),
        seconds=elapsed,
        coverage=_last(_COVERAGE, output),
        slowest=_last(_SLOWEST, output),
        peak_rss_mb=_last(_PEAK_RSS, output),
        findings=findings,
        returncode=returncode,
        log_tail="\n".join(output.splitlines()[-40:]),
    )


def _text(stream: str | bytes | None) -> str:
    if stream is None:
        return ""
    return stream if isinstance(stream, str) else stream.decode("utf-8", errors="replace")


def _executions(output: str) -> int:
    for pattern in (_STAT, _DONE):
        found = pattern.findall(output)
        if found:
            last = found[-1]
            return int(last[0] if isinstance(last, tuple) else last)
    return 0


def _last(pattern: re.Pattern[str], output: str) -> int:
    """The first group of the pattern's last match, 0 if none."""
    found = list(pattern.finditer(output))
    return int(found[-1].group(1)) if found else 0


def _save_findings(name: str, artifacts: Path, destination: Path) -> tuple[Path, ...]:
    saved: list[Path] = []
    for artifact in sorted(artifacts.iterdir()):
        kind = artifact.name.split("-", 1)[0]
        if kind not in FINDING_KINDS:
            continue
        data = artifact.read_bytes()
        destination.mkdir(parents=True, exist_ok=True)
        path = destination / f"{name}-{kind}-{hashlib.sha1(data).hexdigest()[:12]}.bin"
        path.write_bytes(data)
        saved.append(path)
    return tuple(saved)


def replay(path: Path, target: str | None = None, module: str = DEFAULT_MODULE) -> None:
    """Run one saved input through its target in plain Python, so a traceback shows the bug.

    Args:
        path: the input; its file name starts with the target's name (``<target>-...``).
        target: the target, when the file name does not say.
        module: the registry module.

    Raises:
        Whatever the target raises: that is the finding.
    """
    registry = _load(module, instrument=False)
    name = target or path.name.split("-", 1)[0]
    if name not in registry.TARGETS:
        raise SystemExit(f"{path.name}: no target {name!r}; pass --target")
    registry.TARGETS[name].run(path.read_bytes())


def summary_table(outcomes: list[Outcome]) -> str:
    """A Markdown table of a campaign: one row per target."""
    rows = [
        "| target | executions | seconds | exec/s | edges | slowest input | peak RSS | findings |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for o in outcomes:
        found = ", ".join(p.name for p in o.findings) or (
            "none" if o.returncode == 0 else f"exit {o.returncode}"
        )
        rate = o.executions / o.seconds if o.seconds else 0.0
        rows.append(
            f"| {o.target} | {o.executions:,} | {o.seconds:.0f} | {rate:,.0f} | "
            f"{o.coverage} | {o.slowest} s | {o.peak_rss_mb} MB | {found} |"
        )
    return "\n".join(rows) + "\n"


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tests/fuzz/run.py", description="Fuzz torviz's parsers of outside bytes."
    )
    parser.add_argument("target", nargs="?", help="the target to fuzz (see --list)")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--all", action="store_true", help="fuzz every target, one at a time")
    parser.add_argument("--runs", type=int, help="stop each target after N inputs")
    parser.add_argument("--seconds", type=int, help="stop each target after S seconds")
    parser.add_argument("--corpus", type=Path, help="keep corpora in DIR/<target>")
    parser.add_argument("--save-crashes", type=Path, default=REGRESSIONS, help="findings go here")
    parser.add_argument("--summary", type=Path, help="append a Markdown table of results here")
    parser.add_argument("--replay", type=Path, nargs="+", help="run saved inputs in plain Python")
    parser.add_argument("--module", default=DEFAULT_MODULE, help=argparse.SUPPRESS)
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input (default 10)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory ceiling (MiB)")
    parser.add_argument("--max-len", type=int, help="longest input (default: per target)")
    # Internal: the child process.
    parser.add_argument("--child", dest="child_target", help=argparse.SUPPRESS)
    parser.add_argument("--corpus-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--artifacts", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The command line; see the module docstring."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.child_target:
        args.target = args.child_target
        _child(args)
        return 0  # not reached: libFuzzer exits the process
    if args.replay:
        for path in args.replay:
            replay(path, args.target, args.module)
            print(f"{path.name}: no finding")
        return 0
    registry = _load(args.module, instrument=False)
    if args.list:
        for target in registry.TARGETS.values():
            print(f"{target.name:22} {(target.run.__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = list(registry.TARGETS) if args.all else [args.target] if args.target else []
    if not names:
        print("name a target, or pass --all or --list", file=sys.stderr)
        return 2
    if args.runs is None and args.seconds is None:
        args.runs = 10_000
    outcomes: list[Outcome] = []
    for name in names:
        outcome = fuzz(
            name,
            runs=args.runs,
            seconds=args.seconds,
            corpus=args.corpus,
            save_crashes=args.save_crashes,
            module=args.module,
            timeout=args.timeout,
            rss_limit_mb=args.rss_limit_mb,
            max_len=args.max_len,
        )
        outcomes.append(outcome)
        verdict = "clean" if outcome.clean else "FINDING"
        print(
            f"{name}: {outcome.executions} executions in {outcome.seconds:.0f} s, "
            f"{outcome.coverage} edges, {verdict}",
            flush=True,
        )
        for path in outcome.findings:
            print(f"  saved {path}", flush=True)
        if not outcome.clean:
            print(outcome.log_tail, file=sys.stderr, flush=True)
    table = summary_table(outcomes)
    print(table, end="")
    if args.summary is not None:
        with args.summary.open("a", encoding="utf-8") as out:
            out.write(table)
    return 0 if all(o.clean for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
