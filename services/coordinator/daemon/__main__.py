"""Entry point of the coordinator daemon: ``torviz-coordinator start`` and ``download`` run here.

The command line (``services.coordinator.cli``) parses ``start`` and ``download`` and then
replaces its process with this one (same pid, same arguments), so gevent patches the standard
library first thing, before anything imports threading, sockets, pykka or zmq, in a process that
runs nothing but the service. Run by hand it takes the same arguments:
``python -m torviz.services.coordinator.daemon start --state-dir DIR``.
"""

from gevent import monkey

monkey.patch_all()

import sys  # noqa: E402

from ..cli.serve import serve  # noqa: E402

__all__ = ["main"]


def main() -> None:
    sys.exit(serve(sys.argv[1:]))


if __name__ == "__main__":
    main()
