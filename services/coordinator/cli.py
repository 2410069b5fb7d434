"""The ``torviz-coordinator`` command line: one parser, one module per subcommand.

Each module in ``services.coordinator.commands`` exposes ``register(subparsers)``, which adds its
subparser and sets ``handler`` to a function ``(args) -> int``. ``main`` turns every deliberate
error (``TorvizError``) and ``OSError`` into one line on stderr and a non-zero exit code: a user
never sees a traceback for a bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from shared.errors import TorvizError

from .commands import COMMANDS

__all__ = ["build_parser", "main"]

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="torviz-coordinator",
        description="torviz: a BitTorrent client built as actor services over ZeroMQ.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except TorvizError as exc:
        print(f"torviz: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"torviz: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("torviz: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code
