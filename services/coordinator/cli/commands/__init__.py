"""Subcommands of ``torviz-coordinator``; each module registers its subparsers.

Modules import nothing of gevent, zmq or pykka at import time: the parser is built in the
command line's plain process. ``start`` and ``download`` only parse here and hand over to the
daemon's entry point (``..handover``); the commands that need zmq (``keys``, the control
requests of ``remote``) import it when they run.
"""

from __future__ import annotations

from types import ModuleType

from . import create, download, export, info, keys, remote, start, tui

COMMANDS: list[ModuleType] = [start, download, remote, export, info, create, keys, tui]
