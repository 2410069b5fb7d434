"""Subcommands of ``torviz-coordinator``; each module registers its subparsers.

Modules import nothing heavy at import time: ``start`` and ``download`` load the service (gevent,
pykka, zmq) inside their handlers, after the entry point has patched the standard library.
"""

from __future__ import annotations

from types import ModuleType

from . import create, download, info, keys, remote, start

COMMANDS: list[ModuleType] = [start, download, remote, info, create, keys]
