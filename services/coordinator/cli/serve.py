"""``start`` and ``download`` as they run in the daemon's process, after gevent's patch.

Strategy: the daemon's entry point (``services.coordinator.daemon.__main__``) patches gevent and
calls ``serve`` with the command line the CLI was given; ``serve`` parses it with the CLI's own
parser (the same options, help and usage errors) and runs the command's service half: ``start``
here, ``download`` in ``oneshot``. This module imports the service (pykka, zmq) at import time,
so only the patched process imports it.

Rules: the same one-line errors and exit codes as every command (``run_command``); for
``start``, a configuration the daemon cannot run with is exit status 2 (``EXIT_CONFIG``), as for
the agents, so the systemd units stop restarting on it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from torviz.shared.errors import ConfigError
from torviz.shared.runtime.service import EXIT_CONFIG

from ..daemon.locations import default_download_dir, default_state_dir, load_config_file
from ..daemon.run import DaemonOptions, run_daemon
from . import oneshot, parse, run_command

__all__ = ["serve", "start"]


def start(args: argparse.Namespace) -> int:
    """``torviz-coordinator start``: run the daemon until it is stopped."""
    try:
        return _start(args)
    except ConfigError as exc:
        print(f"torviz: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _start(args: argparse.Namespace) -> int:
    config = load_config_file(args.config)
    download_dir = (
        args.download_dir or config.coordinator.download_dir or str(default_download_dir())
    )
    options = DaemonOptions(
        config=config,
        config_file=args.config,
        state_dir=Path(args.state_dir) if args.state_dir else default_state_dir(),
        download_dir=str(Path(download_dir).resolve()),
        control=args.control,
        log_level=args.log_level,
    )
    return run_daemon(options)


SERVICES: dict[str, Callable[[argparse.Namespace], int]] = {
    "start": start,
    "download": oneshot.run,
}


def serve(argv: Sequence[str]) -> int:
    """Run ``start`` or ``download`` from their command line; returns the exit code.

    Raises:
        SystemExit: a usage error (status 2), or a command that does not run in the daemon.
    """
    args = parse(argv)
    service = SERVICES.get(args.command)
    if service is None:
        print(
            f"torviz: error: {args.command} does not run in the daemon: "
            f"use `torviz-coordinator {args.command}`",
            file=sys.stderr,
        )
        raise SystemExit(2)
    return run_command(service, args)
