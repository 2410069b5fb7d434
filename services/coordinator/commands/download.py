"""``torviz-coordinator download``: fetch one torrent and exit, like aria2c.

The same four services as the daemon run as separate local processes (the coordinator in this
one), with a private state directory, so a download never disturbs a running daemon.

stderr belongs to the outcome: the progress line, and one line saying what to do when the
download cannot go on. The services' log lines go nowhere unless asked for: ``--log-level``
shows them on stderr, ``--log-file`` appends them (at INFO unless a level is given) to a file.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shared.metainfo import parse_metainfo
from shared.runtime.logging import LOG_LEVELS

from .info import read_torrent_file

DEFAULT_STALL_TIMEOUT = 60.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "download",
        help="download one torrent, verify it, and exit",
        description="Download TORRENT into DIR, verify every piece, optionally seed, and exit "
        "0; exit 1 with one line saying why when it cannot go on.",
    )
    parser.add_argument("torrent", metavar="TORRENT", help="a .torrent file")
    parser.add_argument("-o", "--output", metavar="DIR", default=".", help="download directory")
    parser.add_argument(
        "--seed-time", type=float, metavar="SECONDS", help="after downloading, seed this long"
    )
    parser.add_argument(
        "--seed-ratio",
        type=float,
        metavar="RATIO",
        help="after downloading, seed until uploaded/size reaches RATIO (with --seed-time: "
        "whichever comes first)",
    )
    parser.add_argument(
        "--stall-timeout",
        type=float,
        default=DEFAULT_STALL_TIMEOUT,
        metavar="SECONDS",
        help="give up after this long without peers or progress (default %(default)s)",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        help=f"show the services' log lines from this level on: {LOG_LEVELS} (default: none "
        "on stderr; INFO with --log-file)",
    )
    parser.add_argument(
        "--log-file", metavar="FILE", help="append every service's log lines to FILE"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..daemon import DaemonOptions, run_daemon
    from ..locations import load_config_file
    from ..oneshot import DownloadJob, DownloadWatcher

    data = read_torrent_file(args.torrent)
    config = load_config_file(args.config)
    metainfo = parse_metainfo(data, max_path_depth=config.coordinator.max_path_depth)
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    job = DownloadJob(
        metainfo=data,
        name=metainfo.info.name,
        total_length=metainfo.info.total_length,
        download_dir=str(output),
        seed_time=None if args.seed_time is None else max(0.0, args.seed_time),
        seed_ratio=None if args.seed_ratio is None else max(0.0, args.seed_ratio),
        stall_timeout=max(1.0, args.stall_timeout),
    )
    state_dir = Path(tempfile.mkdtemp(prefix="torviz-"))
    try:
        options = DaemonOptions(
            config=config,
            config_file=args.config,
            state_dir=state_dir,
            download_dir=str(output),
            log_level=args.log_level or ("INFO" if args.log_file else "OFF"),
            log_file=str(Path(args.log_file).resolve()) if args.log_file else None,
            persistent=False,
        )
        return run_daemon(
            options,
            watcher=lambda coordinator, runner: DownloadWatcher.start(coordinator, runner, job),
        )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
