"""The command line becomes the daemon: ``start`` and ``download`` exec its entry point.

Strategy: the daemon needs gevent patched before anything else is imported, and the command
line has already imported its parser and every command's options, so the long-running commands
do not run here: once their arguments parse, this process is replaced (``os.execv``: same pid,
same stdin, stdout and stderr, same environment and working directory) by
``python -m torviz.services.coordinator.daemon`` with the same arguments, whose first statement
patches gevent. A supervisor (systemd, a test) keeps watching the same process, and its exit code is
the daemon's.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from .. import daemon

__all__ = ["DAEMON_ENTRY", "to_daemon"]

DAEMON_ENTRY = daemon.__name__
"""The daemon's entry point, run with ``python -m``."""


def to_daemon(args: argparse.Namespace) -> NoReturn:
    """Replace this process with the daemon's entry point, given the same command line.

    Args:
        args: the parsed command line; ``args.argv`` is the command line as given.

    Raises:
        OSError: the interpreter could not be executed.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", DAEMON_ENTRY, *args.argv])
