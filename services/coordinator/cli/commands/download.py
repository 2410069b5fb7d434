"""``torviz-coordinator download``: fetch one torrent and exit, like aria2c.

The same four services as the daemon run as separate local processes (the coordinator in this
one), with a private state directory, so a download never disturbs a running daemon.

stderr belongs to the outcome: the progress line, and one line saying what to do when the
download cannot go on. The services' log lines go nowhere unless asked for: ``--log-level``
shows them on stderr, ``--log-file`` appends them (at INFO unless a level is given) to a file.

Its options are parsed here; then the process becomes the daemon (``handover``), which runs the
download through ``oneshot.run``.
"""

from __future__ import annotations

import argparse
from typing import Any

from torviz.shared.runtime.logging import LOG_LEVELS

from ..handover import to_daemon

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
    parser.set_defaults(handler=to_daemon)
