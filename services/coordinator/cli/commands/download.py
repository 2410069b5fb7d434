"""``torviz-coordinator download``: fetch one torrent and exit, like aria2c.

The same four services as the daemon run as separate local processes (the coordinator in this
one), with a private state directory, so a download never disturbs a running daemon.

stderr belongs to the outcome: the progress line, and one line saying what to do when the
download cannot go on. The services' log lines go nowhere unless asked for: ``--log-level``
shows them on stderr, ``--log-file`` appends them (at INFO unless a level is given) to a file.

TORRENT is a .torrent file or a magnet link; a magnet link is parsed here first (a bad one is
one line and exit status 2, before any service starts), and ``--save-torrent FILE`` is checked
here (an existing FILE only with ``--force``), and so is each ``--web-seed URL`` (exit 1). Then
the process becomes the daemon (``handover``), which runs the download through ``oneshot.run``.
"""

from __future__ import annotations

import argparse
from typing import Any

from torviz.shared.runtime.logging import LOG_LEVELS

from ..handover import to_daemon
from ..sources import check_output, read_source
from ..web_seeds import add_web_seed_option, check_web_seeds

DEFAULT_STALL_TIMEOUT = 60.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "download",
        help="download one torrent, verify it, and exit",
        description="Download TORRENT (a .torrent file or a magnet link) into DIR, verify every "
        "piece, optionally seed, and exit 0; exit 1 with one line saying why when it cannot go "
        "on, 2 for a magnet link that cannot be used. A magnet link shows its phase: finding "
        "peers, fetching metadata, then the progress of the download.",
    )
    parser.add_argument("torrent", metavar="TORRENT", help="a .torrent file or a magnet link")
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
    add_web_seed_option(parser)
    add_save_options(parser)
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


def add_save_options(parser: argparse.ArgumentParser) -> None:
    """``--save-torrent FILE`` and ``--force``, as ``download`` and ``add`` take them."""
    parser.add_argument(
        "--save-torrent",
        metavar="FILE",
        help="once the torrent's metadata is in (at once for a .torrent), write it to FILE as a "
        ".torrent, atomically; an existing FILE is refused unless --force",
    )
    parser.add_argument(
        "--force", action="store_true", help="let --save-torrent overwrite an existing FILE"
    )


def run(args: argparse.Namespace) -> int:
    """Check what can be checked without a daemon, then become one (``oneshot.run``).

    Raises:
        UsageError: a magnet link that cannot be used.
        TorvizError: a --save-torrent FILE that exists (without --force) or is a folder.
        WebSeedError: a --web-seed URL that cannot be used.
    """
    read_source(args.torrent)  # read again by the daemon's process; a bad one stops here
    check_web_seeds(args.web_seeds)
    check_output(args.save_torrent, args.force)
    to_daemon(args)
