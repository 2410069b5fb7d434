"""torviz's one-shot download against a libtorrent leecher on the same loopback swarm.

Usage (from the repository root, as root for the py-spy profile)::

    /work/venv/bin/python bench/download_vs_libtorrent.py [--size-mib 1024] [--runs 3]
        [--variants 1seed-1m,4seed-1m,1seed-256k,20files-1m,startup] [--tools torviz,libtorrent]
        [--settle 3] [--warmup 1] [--no-profile] [--spy peer_agent,storage_agent]
        [--commit REV | --live] [--no-compile] [--cache /tmp/torviz-bench] [--timeout 180]
        [--verify first|all|none] [--output FILE]

The swarm of each variant: random content (made once, cached under ``--cache``), opentracker on
127.0.0.1, one or four libtorrent seeders in seed mode on their own 127.0.0.x (data in the page
cache), and one untimed libtorrent download first (``--warmup``: the seeders' first upload pays
for mapping their data). Each round times, in alternating order,

- torviz: ``torviz-coordinator download TORRENT -o DIR --config CFG`` (``listen_host`` 127.0.0.1,
  DHT off), wall time from spawning the command to its exit 0; CPU seconds of the coordinator and
  its three agents from ``getrusage(RUSAGE_CHILDREN)`` (the coordinator waits for its agents, so
  their time is included; checked against per-process /proc samples); peak RSS summed over the
  four processes, sampled every 50 ms, with CPU (user, system), page faults and exit time per
  process;
- libtorrent: a fresh leecher process (``testing/lt_peer.py``) on its own 127.0.0.x, wall
  time from spawning it until it reports every piece verified and flushed, its CPU seconds read
  from /proc at that moment.

Both also get the time their first and last byte reached the disk (allocated blocks of the
output, sampled every 50 ms), and the seeders' CPU seconds while serving them. Outputs are
deleted between runs, then the machine settles for ``--settle`` seconds (see `clear`). The first
torviz download of each variant is compared byte for byte with the seeded content
(``--verify``). The ``startup`` variant downloads a one-piece (16 KiB) torrent: its wall time is
the fixed cost of starting and stopping.

What is measured: by default a copy of the working tree's ``shared`` and ``services`` taken at
the start and byte-compiled (other work edits the tree meanwhile); ``--commit REV`` measures a
commit instead, ``--live`` the working tree itself.

After the headline variant's rounds (unless ``--no-profile``) two more torviz downloads of it
run: one at ``--log-level INFO`` whose log gives the start-up timeline, and one with py-spy
attached to the agents named by ``--spy``; then each service's import time is taken with
``python -X importtime``. None of this counts in the figures.

Prints a markdown table and writes every figure to ``bench/results/download-<time>.json`` (the
profile's log and stacks go to the directory of the same name).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.comparison import (
    Measure,
    alternating,
    by_tool,
    markdown_table,
    median_by_role,
    median_of,
    outcome_text,
    print_table,
    roles_text,
    runs_cell,
    write_report,
)
from bench.leechers import RunResult, run_libtorrent, run_torviz
from bench.proctree import TreeSampler, cpu_seconds
from bench.profiling import Spies, finish_pyspy, start_pyspy, timeline
from bench.sources import (
    REPO,
    compile_tree,
    fmt,
    freeze_worktree,
    import_costs,
    machine,
    median,
    snapshot,
    source_state,
)
from bench.workload import KIB, MIB, cached_content, clear, read_through
from testing.content import ContentSpec, TorrentFile, make_torrent
from testing.swarm import Swarm

RESULTS = REPO / "bench" / "results"
CONFIG = '[peer_agent]\nlisten_host = "127.0.0.1"\n\n[tracker_agent]\ndht = false\n'
HEADLINE = "1seed-1m"
PROFILE_RATE = 100
TARGET_RATIO = 2.0  # the target: torviz's median at most 2x libtorrent's
MEASURE = Measure(ratio_spec=".1f")


@dataclass(frozen=True, slots=True)
class Variant:
    """One swarm to download from: how many seeders, which piece length, which layout."""

    key: str
    label: str
    seeders: int
    piece_length: int
    layout: str  # "single", "files20" or "tiny"


VARIANTS = {
    v.key: v
    for v in (
        Variant("1seed-1m", "1 seeder, 1 MiB pieces", 1, MIB, "single"),
        Variant("4seed-1m", "4 seeders, 1 MiB pieces", 4, MIB, "single"),
        Variant("1seed-256k", "1 seeder, 256 KiB pieces", 1, 256 * KIB, "single"),
        Variant("20files-1m", "20 files, 1 seeder, 1 MiB pieces", 1, MIB, "files20"),
        Variant("startup", "one 16 KiB piece (start-up + shutdown)", 1, 16 * KIB, "tiny"),
    )
}


# --- the profile of the headline -------------------------------------------------------------


def profile_headline(
    torrent: TorrentFile,
    spec: ContentSpec,
    work: Path,
    config: Path,
    spy_roles: list[str],
    timeout: float,
    env: dict[str, str],
    keep: Path,
    settle: float,
) -> dict[str, Any]:
    """The two diagnostic downloads of the headline variant (see the module comment); their
    log and profiles are copied to `keep`."""
    keep.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {}
    out = work / "profile-out"
    # 1. INFO log: when each service starts, connects, and the first bytes land.
    log_path = work / "timeline.log"
    spawned_wall = time.time()
    result = run_torviz(
        HEADLINE,
        -1,
        torrent,
        spec,
        out,
        config,
        timeout=timeout,
        verify=False,
        extra=("--log-level", "INFO"),
        env=env,
        log_path=log_path,
    )
    clear(out, settle)
    shutil.copy(log_path, keep / "timeline.log")
    report["timeline_run"] = asdict(result)
    report["timeline"] = timeline(log_path, spawned_wall, limit=(result.first_bytes_s or 5.0) + 1)
    # 2. py-spy on the chosen agents.
    spies: Spies = {}

    def attach(sampler: TreeSampler) -> None:
        for role in spy_roles:
            for pid in sampler.pids_by_role().get(role, []):
                raw = work / f"pyspy-{role}.txt"
                spies[role] = (start_pyspy(pid, raw, rate=PROFILE_RATE), raw, time.monotonic())

    result = run_torviz(
        HEADLINE,
        -2,
        torrent,
        spec,
        out,
        config,
        timeout=timeout,
        verify=False,
        env=env,
        on_tree=attach,
    )
    clear(out, settle)
    report["profiled_run"] = asdict(result)
    report["pyspy"] = finish_pyspy(spies, rate=PROFILE_RATE, keep=keep)
    report["imports"] = import_costs(env)
    for role, cost in report["imports"].items():
        top = ", ".join(f"{name} {sec:.2f}" for name, sec in cost["top"][:5])
        print(f"imports {role}: {cost['imports_s']:.2f} s ({top})", flush=True)
    return report


# --- the rounds ------------------------------------------------------------------------------


@contextlib.contextmanager
def seeded_swarm(
    work: Path, spec: ContentSpec, variant: Variant
) -> Iterator[tuple[Swarm, TorrentFile]]:
    """opentracker, the torrent (announcing to it) and the variant's seeders, ready."""
    with Swarm(work / "swarm") as swarm:
        tracker = swarm.tracker()
        torrent = make_torrent(
            spec, variant.piece_length, [tracker.http_announce_url], work / f"{variant.key}.torrent"
        )
        tracker.add_info_hash(torrent.info_hash)
        for _ in range(variant.seeders):
            swarm.seeder(torrent.path, spec.root, seed_mode=True, timeout=60.0)
        yield swarm, torrent


def bench_variant(
    variant: Variant, spec: ContentSpec, args: argparse.Namespace, work: Path, config: Path
) -> tuple[list[RunResult], dict[str, Any] | None]:
    """Every timed run of one variant on its own swarm, and the headline's profile if asked.

    Returns:
        The runs in the order they ran, and the profile report (None unless the headline was
        profiled).
    """
    results: list[RunResult] = []
    profile: dict[str, Any] | None = None
    read_through(spec)
    with seeded_swarm(work, spec, variant) as (swarm, torrent):
        out = work / "out"
        seeders = [peer.pid for peer in swarm.peers]
        for warmup in range(args.warmup):
            # The seeders' first upload maps their data (page faults on every page): whichever
            # client went first would pay for it. An untimed download takes that cost.
            result = run_libtorrent(variant.key, -1, swarm, torrent, out, timeout=args.timeout)
            print(f"  warm-up {warmup}: libtorrent {result.wall_s:.2f} s", flush=True)
            clear(out, 0.0)
        time.sleep(args.settle)
        for run in range(args.runs):
            for tool in [t for t in alternating(run) if t in args.tools]:
                seeder_cpu = sum(cpu_seconds(pid) or 0.0 for pid in seeders)
                if tool == "torviz":
                    verify = args.verify == "all" or (args.verify == "first" and run == 0)
                    result = run_torviz(
                        variant.key,
                        run,
                        torrent,
                        spec,
                        out,
                        config,
                        timeout=args.timeout,
                        verify=verify,
                        env=args.env,
                    )
                else:
                    result = run_libtorrent(
                        variant.key, run, swarm, torrent, out, timeout=args.timeout
                    )
                result.seeder_cpu_s = sum(cpu_seconds(pid) or 0.0 for pid in seeders) - seeder_cpu
                clear(out, args.settle)
                results.append(result)
                print(describe(result, torrent.total_size), flush=True)
        if variant.key == HEADLINE and args.profile:
            profile = profile_headline(
                torrent,
                spec,
                work,
                config,
                args.spy,
                args.timeout,
                args.env,
                args.keep,
                args.settle,
            )
    return results, profile


def describe(r: RunResult, size: int) -> str:
    """One line for a run: times, CPU, memory, load, and why it failed if it did."""
    rate = size / r.wall_s / 1e6
    text = f"  {r.variant} run {r.run} {r.tool:10s} {r.wall_s:7.2f} s {rate:6.0f} MB/s"
    if r.cpu_s is not None:
        text += f"  cpu {r.cpu_s:5.2f} s"
    if r.seeder_cpu_s is not None:
        text += f"  seeders {r.seeder_cpu_s:4.2f} s"
    if r.peak_rss:
        text += f"  rss {r.peak_rss / MIB:5.0f} MiB"
    if r.first_bytes_s is not None:
        text += f"  first bytes {r.first_bytes_s:.2f} s"
    if r.all_bytes_s is not None:
        text += f"  all bytes {r.all_bytes_s:.2f} s"
    if r.cpu_by_role:
        text += roles_text(r.cpu_by_role)
    text += f"  load {r.loadavg:.1f}"
    if r.verified is not None:
        text += "  verified" if r.verified else "  NOT VERIFIED"
    return text + outcome_text(r)


def summarise_variant(variant: Variant, size: int, results: list[RunResult]) -> dict[str, Any]:
    """Medians over the successful runs of each client (a failed run counts only as failed)."""
    tv, lt = by_tool(results)
    roles = sorted({role for r in tv for role in r.cpu_by_role})
    return {
        "variant": variant.key,
        "label": variant.label,
        **MEASURE.summarise(size, results),
        "torviz_cpu_s": median_of(tv, "cpu_s"),
        "torviz_peak_rss": median([float(r.peak_rss) for r in tv if r.peak_rss]),
        "libtorrent_cpu_s": median_of(lt, "cpu_s"),
        "libtorrent_peak_rss": median([float(r.peak_rss) for r in lt if r.peak_rss]),
        "seeder_cpu_s_serving_torviz": median_of(tv, "seeder_cpu_s", nonzero=True),
        "seeder_cpu_s_serving_libtorrent": median_of(lt, "seeder_cpu_s", nonzero=True),
        "torviz_first_bytes_s": median_of(tv, "first_bytes_s", nonzero=True),
        "libtorrent_first_bytes_s": median_of(lt, "first_bytes_s", nonzero=True),
        "torviz_exit_after_all_bytes_s": median(
            [r.wall_s - r.all_bytes_s for r in tv if r.all_bytes_s is not None]
        ),
        "torviz_cpu_by_role": median_by_role(tv, "cpu_by_role"),
        "torviz_detail_by_role": {
            role: {
                key: median([float(r.detail_by_role.get(role, {}).get(key, 0.0)) for r in tv])
                for key in ("user_s", "sys_s", "minor_faults")
            }
            for role in roles
        },
    }


COLUMNS = (
    "variant",
    "torviz",
    "libtorrent",
    "torviz / libtorrent",
    "torviz MB/s",
    "libtorrent MB/s",
    "torviz CPU",
    "torviz peak RSS (sum)",
    "libtorrent CPU",
    "runs (torviz, lt, failed)",
)


def summary_table(summaries: list[dict[str, Any]]) -> str:
    """The figures of every variant as a markdown table (medians; n/a without a successful run)."""
    rows = []
    for s in summaries:
        rss = s["torviz_peak_rss"]
        rows.append(
            [
                f"{s['label']} ({s['bytes'] / MIB:.0f} MiB)",
                *MEASURE.cells(s),
                fmt(s["torviz_cpu_s"], ".2f", " s"),
                fmt(rss / MIB if rss else None, ".0f", " MiB"),
                fmt(s["libtorrent_cpu_s"], ".2f", " s"),
                runs_cell(s),
            ]
        )
    return markdown_table(COLUMNS, rows)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns 0, or 1 if a run failed or the disk is too full."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="content size (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool and variant")
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: all)",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/torviz-bench"))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per download")
    parser.add_argument("--verify", choices=("first", "all", "none"), default="first")
    parser.add_argument(
        "--tools", default="torviz,libtorrent", help="which leechers to time (default: both)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="untimed libtorrent downloads before the rounds"
    )
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument(
        "--no-compile",
        dest="compile",
        action="store_false",
        help="do not byte-compile the measured copy (start-up then includes compiling)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=3.0,
        help="seconds to wait after deleting each download before the next (see clear())",
    )
    parser.add_argument(
        "--spy",
        default="peer_agent,storage_agent",
        help="roles py-spy profiles in the profile run (default: peer_agent,storage_agent)",
    )
    parser.add_argument("--output", type=Path, help="results JSON (default bench/results/...)")
    parser.add_argument(
        "--commit",
        metavar="REV",
        help="measure this commit (extracted under the cache) instead of the working tree",
    )
    parser.add_argument(
        "--live",
        action="store_true",
        help="run the working tree itself, not a copy taken at the start (edits show mid-run)",
    )
    args = parser.parse_args(argv)
    args.spy = [role for role in args.spy.split(",") if role]
    args.tools = [tool for tool in args.tools.split(",") if tool]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    commit: str | None = None
    args.env = {}
    if args.commit:
        commit, source = snapshot(args.cache, args.commit)
        print(f"measuring commit {commit[:12]} from {source}", flush=True)
    elif args.live:
        source = None
    else:
        source = freeze_worktree(args.cache, stamp)
        print(f"measuring the working tree as copied to {source}", flush=True)
    if source is not None:
        args.env = {"PYTHONPATH": str(source)}
        if args.compile:
            compile_tree(source)
    keys = [k for k in args.variants.split(",") if k]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    size = args.size_mib * MIB
    args.cache.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.cache).free
    if free < 4 * size:
        print(f"only {free / 2**30:.1f} GiB free under {args.cache}", file=sys.stderr)
        return 1
    output = args.output or RESULTS / f"download-{stamp}.json"
    args.keep = output.with_suffix("")  # the profile's log and stacks
    report: dict[str, Any] = {
        "date": stamp,
        "machine": machine(),
        "source": {**source_state(commit), "run_from": str(source or REPO)},
        "args": {k: str(v) for k, v in vars(args).items()},
        "variants": [],
        "runs": [],
    }
    summaries: list[dict[str, Any]] = []
    for key in keys:
        variant = VARIANTS[key]
        spec = cached_content(args.cache, variant.layout, size)
        print(f"== {variant.label}: {spec.total_size / MIB:.2f} MiB", flush=True)
        with tempfile.TemporaryDirectory(prefix="dl-", dir=args.cache) as tmp:
            work = Path(tmp)
            config = work / "torviz.toml"
            config.write_text(CONFIG)
            results, profile = bench_variant(variant, spec, args, work, config)
        summary = summarise_variant(variant, spec.total_size, results)
        summaries.append(summary)
        report["variants"].append(summary)
        report["runs"].extend(asdict(r) for r in results)
        if profile is not None:
            report["profile"] = profile
        output.write_text(json.dumps(report, indent=1))
    table = summary_table(summaries)
    print_table(table)
    headline = next((s for s in summaries if s["variant"] == HEADLINE), None)
    if headline is not None and headline["ratio"] is not None:
        verdict = "meets" if headline["ratio"] <= TARGET_RATIO else "misses"
        print(
            f"\nheadline: torviz/libtorrent = {headline['ratio']:.2f}x, "
            f"{verdict} the target of at most {TARGET_RATIO:.0f}x"
        )
    report["table"] = table
    if commit is None and args.live:
        report["source_at_end"] = source_state(None)
    write_report(report, output)
    failed = sum(s["failed_runs"] for s in summaries)
    if failed:
        print(f"{failed} runs failed: see their errors above", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
