"""``torviz-coordinator tui``: the terminal UI on the running daemon, started if none runs.

Strategy: the daemon is resolved as every control command resolves it (``daemon_target``:
``--control``, else the ``daemon.json`` of ``--state-dir`` or the default state directory).
When no ``--control`` was given, no ``daemon.json`` names a live process and nothing answers a
hello, a daemon is started in the background as ``start`` would start it, with the same
``--state-dir`` and ``--config`` (``daemon.background``), waited for (bounded), and the UI says
so in its first line. Then the UI runs (``tui.app.run_tui``) until ``q``; quitting it leaves the
daemon running.

Rules: a daemon that cannot start is one line (the last line of its log) and exit 1, never a
traceback; a daemon whose process runs but does not answer yet is not started twice: the UI
shows it "not answering" and retries; the UI is a plain process (blocking pyzmq, no gevent),
imported only when the command runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..daemon_target import DaemonTarget, add_daemon_options, daemon_target

__all__ = ["PROBE_TIMEOUT", "register", "run"]

PROBE_TIMEOUT = 1.0
"""Seconds one hello to the daemon may take when looking for it."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "tui",
        help="the terminal UI: watch and drive the daemon's torrents",
        description="Show the daemon's torrents, their peers and pieces and its log, and drive "
        "them with keys (? lists them). Without a running daemon (and without --control), "
        "starts one in the background as `start` would; q leaves the daemon running.",
    )
    add_daemon_options(parser)
    parser.add_argument(
        "--config", metavar="FILE", help="TOML configuration file of a daemon started here"
    )
    parser.set_defaults(handler=run)


def answers(target: DaemonTarget, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the daemon at ``target`` answers a hello within ``timeout`` seconds.

    Raises:
        PermissionDeniedError: it is there but another user's, or it refused our key.
        BusError: it rejected us or answered something malformed.
    """
    from torviz.shared.runtime.control import ControlClient, DaemonUnreachableError

    try:
        with ControlClient(
            target.control, timeout=timeout, green=False, curve=target.curve
        ) as client:
            client.hello()
    except DaemonUnreachableError:
        return False
    return True


def ensure_daemon(args: argparse.Namespace) -> tuple[DaemonTarget, str | None]:
    """The daemon to attach to, started in the background when none runs.

    Returns:
        The daemon's target, and the notice to show (None when it was already running).

    Raises:
        TorvizError: ``daemon_not_started`` (with its log's last line); a bad config or key.
    """
    target = daemon_target(args)
    if args.control or target.running or answers(target):
        return target, None
    from ...daemon.background import start_background

    daemon = start_background(args.state_dir, args.config)
    daemon.wait_ready(lambda: answers(daemon_target(args)))
    notice = f"started a torviz daemon in the background (pid {daemon.pid}); q leaves it running"
    return daemon_target(args), notice


def run(args: argparse.Namespace) -> int:
    """``torviz-coordinator tui``; returns the UI's exit code."""
    target, notice = ensure_daemon(args)
    from ...tui.app import run_tui  # blessed and the UI: only when it runs

    return run_tui(target, notice)
