"""The only I/O in ``shared/``: zmq.green bus sockets, the service runner, logging setup.

Strategy: names are re-exported lazily. A service's entry point must call
``gevent.monkey.patch_all()`` before pykka or zmq are imported, and a CLI command may import
``ControlClient`` or ``setup_logging`` before deciding whether to patch; so importing this
package imports nothing, and each name loads its own module on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .logging import ContextAdapter, setup_logging, short_hash, with_context
    from .service import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, ActorFactory, ServiceRunner
    from .sockets import (
        BusSocket,
        ControlClient,
        DaemonUnreachableError,
        Incoming,
        SocketStats,
        control_request,
    )

__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "ActorFactory",
    "BusSocket",
    "ContextAdapter",
    "ControlClient",
    "DaemonUnreachableError",
    "Incoming",
    "ServiceRunner",
    "SocketStats",
    "control_request",
    "setup_logging",
    "short_hash",
    "with_context",
]

_HOME = {
    **dict.fromkeys(["ContextAdapter", "setup_logging", "short_hash", "with_context"], "logging"),
    **dict.fromkeys(
        ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "ActorFactory", "ServiceRunner"], "service"
    ),
    **dict.fromkeys(
        [
            "BusSocket",
            "ControlClient",
            "DaemonUnreachableError",
            "Incoming",
            "SocketStats",
            "control_request",
        ],
        "sockets",
    ),
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
