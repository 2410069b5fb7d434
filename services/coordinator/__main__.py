"""Entry point of ``torviz-coordinator`` and ``python -m torviz.services.coordinator``: the
command line.

Nothing here patches gevent: the quick commands (``info``, ``create``, ``keys``, ``status`` ...)
stay plain Python (``create`` hashes in real threads), and the long-running ones (``start``,
``download``) hand their process over to the daemon's own entry point,
``services.coordinator.daemon``, which patches first thing (see ``cli``).
"""

from __future__ import annotations

import sys

from .cli import main as cli_main

__all__ = ["main"]


def main() -> None:
    sys.exit(cli_main())


if __name__ == "__main__":
    main()
