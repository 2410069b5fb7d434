"""What every ZeroMQ socket of the bus and of the control client holds to alike.

Strategy: ``BusSocket`` (``shared.runtime.sockets``) and ``ControlClient``
(``shared.runtime.control``) read with the same bound and refuse tcp without keys with the same
words; both take these from here, so neither imports the other.

Rules:
- A message has at most ``MAX_FRAMES`` frames (routing identity, header, data); the frames past
  it are drained, and the message is reported as too long rather than handed on.
- No tcp without CURVE: any local user can reach a tcp port, loopback included.
"""

from __future__ import annotations

from typing import Any

import zmq

from torviz.shared.errors import ConfigError

__all__ = ["MAX_FRAMES", "needs_keys", "recv_bounded"]

MAX_FRAMES = 3
"""Frames of one message read at most: routing identity + header + data."""


def needs_keys(endpoint: str, what: str) -> ConfigError:
    """The refusal of a tcp endpoint without CURVE keys.

    Args:
        endpoint: the endpoint refused.
        what: what was refused (``"bind"``, ``"connect to"``).

    Returns:
        The ``needs_keys`` error to raise.
    """
    return ConfigError(
        "needs_keys",
        f"refusing to {what} {endpoint} without CURVE keys: any local user can reach a tcp "
        "port, loopback included (use ipc://, or keys from `torviz-coordinator keys init`)",
    )


def recv_bounded(sock: zmq.Socket[Any]) -> list[zmq.Frame] | None:
    """One multipart message, or ``None`` when it had more than ``MAX_FRAMES`` frames.

    Args:
        sock: a socket with a message ready.

    Returns:
        The frames (zero-copy), or ``None`` for a message too long (all of it drained).
    """
    frames = [sock.recv(copy=False)]
    too_many = False
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv(copy=False)  # parts of a multipart arrive together: never waits
        if len(frames) < MAX_FRAMES:
            frames.append(frame)
        else:
            too_many = True
    return None if too_many else frames
