"""``torviz-coordinator start``: the daemon, with its three agents as local child processes.

Its options are parsed here; then the process becomes the daemon (``handover``), which runs it
through ``serve.start``.

A configuration the daemon cannot run with (a bad config file, a tcp endpoint without
``[security] keys_dir``, loopback included, a control endpoint that is not local) is one line
and exit status 2, as for the agents: a restart cannot mend it, and the systemd units stop
restarting on it. Other failures exit 1.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..handover import to_daemon


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
    parser.set_defaults(handler=to_daemon)
