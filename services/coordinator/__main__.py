"""Entry point of ``torviz-coordinator``.

Only the long-running subcommands (``start``, ``download``) patch gevent; they do it first thing,
in their own handlers, before pykka or zmq are imported. Short commands stay plain Python.
"""

from __future__ import annotations

import sys


def main() -> None:
    from .cli import main as cli_main

    sys.exit(cli_main())


if __name__ == "__main__":
    main()
