"""``torviz-coordinator start``: the daemon, with its three agents as local child processes.

A configuration the daemon cannot run with (a bad config file, a tcp endpoint without
``[security] keys_dir``, loopback included, a control endpoint that is not local) is one line
and exit status 2, as for the agents: a restart cannot mend it, and the systemd units stop
restarting on it. Other failures exit 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shared.errors import ConfigError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "start",
        help="run the daemon: the coordinator and its agents",
        description="Run the torviz daemon in the foreground, logging to stderr. "
        "SIGINT or SIGTERM (or `torviz-coordinator shutdown`) stops it and its agents.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--download-dir", metavar="DIR", help="where new torrents are saved")
    parser.add_argument("--state-dir", metavar="DIR", help="state, sockets and the daemon lock")
    parser.add_argument(
        "--control",
        metavar="ADDR",
        help="control endpoint (default: ipc in the state directory); tcp, e.g. "
        "tcp://127.0.0.1:7700, needs [security] keys_dir and admits only the daemon's own key",
    )
    parser.add_argument("--log-level", default="INFO", metavar="LEVEL")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from shared.runtime.service import EXIT_CONFIG  # gevent: only once the command is known

    try:
        return _run(args)
    except ConfigError as exc:
        print(f"torviz: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _run(args: argparse.Namespace) -> int:
    from ..daemon import DaemonOptions, run_daemon
    from ..locations import default_download_dir, default_state_dir, load_config_file

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
