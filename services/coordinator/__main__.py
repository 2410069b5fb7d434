"""Entry point of ``torviz-coordinator``.

The long-running subcommands (``start``, ``download``) run the coordinator service, so gevent
patches the standard library first thing, before anything imports threading, sockets, pykka or
zmq. Short commands (``info``, ``create``, ``status`` ...) stay plain Python: ``create`` hashes in
real threads.
"""

from __future__ import annotations

import sys

SERVICE_COMMANDS = frozenset({"start", "download"})


def main() -> None:
    if SERVICE_COMMANDS.intersection(sys.argv[1:2]):
        from gevent import monkey

        monkey.patch_all()

    from .cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
