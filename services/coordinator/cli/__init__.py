"""The ``torviz-coordinator`` command line: one parser, one module per subcommand.

Strategy: the command line is a client of the daemon, never the daemon itself. Its quick
commands run here, as plain Python (``create`` hashes in real threads, and none of them pays for
gevent, zmq or pykka until it talks to a daemon); the commands that talk to a running daemon
(``add``, ``status``, ``shutdown`` ...) do so over its control endpoint; the two long-running
commands, ``start`` and ``download``, are parsed here and then hand over: the process becomes the
daemon's entry point (``services.coordinator.daemon``, by exec, same pid and arguments), which
patches gevent first thing and runs them through ``serve``.

Modules:
- ``commands``: one module per subcommand, each with ``register(subparsers)``, which adds its
  subparser and sets ``handler`` to a function ``(args) -> int``.
- ``handover``: the exec into the daemon's entry point.
- ``serve``: ``start`` and ``download`` as they run in the daemon's process (imported there only).
- ``oneshot``: the one-shot download's watcher, beside the coordinator in that process.
- ``progress``: the one-line progress display of ``create`` and ``download``.
- ``sources``: a .torrent file or a magnet link as ``download`` and ``add`` take it.
- ``phases``: what a magnet download is doing (finding peers, fetching metadata, downloading).
- ``saving``: ``--save-torrent`` and ``export``: a .torrent written atomically.

Rules: importing this package (the parser and every command's options) imports nothing of
gevent, zmq or pykka; a command imports the I/O it needs when it runs. ``main`` turns every
deliberate error (``TorvizError``) and ``OSError`` into one line on stderr and a non-zero exit
code (2 for a command line that cannot run as given, such as a bad magnet link, as for
argparse's usage errors): a user never sees a traceback for a bad input.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from torviz.shared.errors import TorvizError

from .commands import COMMANDS
from .sources import UsageError

__all__ = ["build_parser", "main", "run_command"]

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


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a command line (``None``: this process's); ``args.argv`` keeps it, for a handover.

    Raises:
        SystemExit: a usage error (status 2, argparse's message) or ``--help``.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    return build_parser().parse_args(arguments, namespace=argparse.Namespace(argv=arguments))


def run_command(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run one command's handler; every deliberate error is one line on stderr.

    Returns:
        The handler's exit code, or 2 for a ``UsageError`` (a bad magnet link), 1 for another
        ``TorvizError`` or an ``OSError``, 130 for Ctrl-C.
    """
    try:
        return handler(args)
    except UsageError as exc:
        print(f"torviz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand and return its exit code."""
    args = parse(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return run_command(handler, args)
