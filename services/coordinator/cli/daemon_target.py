"""Which daemon a command talks to, and how: its control endpoint and the CURVE keys for it.

Strategy: ``daemon_target(args)`` resolves the flags every daemon command takes (``--control``,
``--state-dir``, ``--keys``, ``--key-name``) once, into a ``DaemonTarget``; ``request`` sends one
request to it (hello, request, reply) and turns ``ControlFailed`` into a ``TorvizError``. A
long-lived client such as the terminal UI keeps a ``ControlClient`` open on the same target.

Rules: importing this module imports nothing of zmq (the CLI's quick commands stay quick);
the keys come from the flags, else from the ``daemon.json`` of the daemon found, else from
``[security]`` of the default config file. An ipc endpoint needs no keys, and no config file is
read for it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torviz.shared.bus import ControlFailed, Message
from torviz.shared.config import SecurityConfig
from torviz.shared.endpoints import is_tcp
from torviz.shared.errors import BusError, TorvizError

from ..daemon.locations import find_daemon, load_config_file

if TYPE_CHECKING:
    from torviz.shared.runtime.curve import CurveClient

__all__ = [
    "REQUEST_TIMEOUT",
    "DaemonTarget",
    "add_daemon_options",
    "daemon_target",
    "expect",
    "request",
]

REQUEST_TIMEOUT = 10.0


@dataclass(frozen=True)
class DaemonTarget:
    """A daemon to talk to."""

    control: str
    """Its control endpoint (``ipc://...`` or ``tcp://...``)."""
    curve: CurveClient | None
    """CURVE client settings for a tcp endpoint; ``None`` for ipc."""
    running: bool
    """Its process was seen running (a socket not there yet means it is starting)."""


def add_daemon_options(parser: argparse.ArgumentParser) -> None:
    """The options that name a daemon and its keys: ``--control``, ``--state-dir``,
    ``--keys``, ``--key-name`` (``daemon_target`` reads them)."""
    parser.add_argument("--control", metavar="ADDR", help="the daemon's control endpoint")
    parser.add_argument("--state-dir", metavar="DIR", help="the daemon's state directory")
    parser.add_argument(
        "--keys",
        metavar="DIR",
        help="the daemon's CURVE keys folder, for a tcp control endpoint "
        "(default: the daemon's, or [security] keys_dir)",
    )
    parser.add_argument(
        "--key-name",
        metavar="NAME",
        help="the key pair to use in the keys folder (default: coordinator, the daemon's own)",
    )


def _security(args: argparse.Namespace, keys_dir: str, key_name: str) -> SecurityConfig:
    """The CLI's ``[security]``: flags, then what ``daemon.json`` names, then the config file."""
    keys, name = getattr(args, "keys", None), getattr(args, "key_name", None)
    if not keys and not keys_dir:
        configured = load_config_file(None).security
        keys_dir, key_name = configured.keys_dir, configured.key_name
    return SecurityConfig(keys_dir=keys or keys_dir, key_name=name or key_name)


def daemon_target(args: argparse.Namespace) -> DaemonTarget:
    """The daemon ``args`` name (``--control``, ``--state-dir``, ``--keys``, ``--key-name``).

    Raises:
        ConfigError: a tcp endpoint without keys, or a bad key file.
    """
    from torviz.shared.runtime.curve import COORDINATOR_KEY, client_security  # zmq: when it runs

    daemon = find_daemon(getattr(args, "control", None), getattr(args, "state_dir", None))
    curve = None
    if is_tcp(daemon.control):  # ipc needs no keys: never read a config that is not needed
        security = _security(args, daemon.keys_dir, daemon.key_name)
        curve = client_security(daemon.control, security, COORDINATOR_KEY)
    return DaemonTarget(daemon.control, curve, daemon.running)


def request(target: DaemonTarget, message: Message, timeout: float = REQUEST_TIMEOUT) -> Message:
    """Send ``message`` to the daemon and return its reply.

    Raises:
        TorvizError: the daemon answered ``ControlFailed`` (its reason and message).
        DaemonUnreachableError, PermissionDeniedError, BusError: see ``control_request``.
    """
    from torviz.shared.runtime.sockets import control_request

    # A daemon whose process runs but whose socket is not there yet is starting: wait for it.
    starting = timeout if target.running else 0.0
    reply = control_request(
        target.control, message, timeout=timeout, curve=target.curve, starting=starting
    )
    if isinstance(reply, ControlFailed):
        raise TorvizError(reply.reason, reply.message)
    return reply


def expect(reply: Message, kind: type[Any]) -> Any:
    """``reply`` if it is a ``kind``; else the daemon answered something unexpected."""
    if not isinstance(reply, kind):
        raise BusError("unexpected_reply", f"the daemon answered {type(reply).__name__}")
    return reply
