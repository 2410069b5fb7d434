"""ipc socket files only their owner can reach: a private folder, a 0600 socket, and a probe.

Strategy: an ipc endpoint is a file, and the kernel decides who may connect to it from the
socket file's mode and from whether its folder can be entered. So a socket torviz binds lives
in a folder this user owns and nobody else may enter (0700), and is itself created 0600
whatever the umask: the umask is narrowed around the bind (so the file never exists with a
wider mode), then the mode is set. The CLI probes a socket with a plain ``AF_UNIX`` connect
before ZeroMQ's, which is asynchronous and would only time out: the probe tells at once
whether the socket is missing, not listening, or another user's.

Rules:
- ``make_private_dir`` makes a folder 0700 or narrows one this user owns to 0700; a folder
  owned by another user is a ``ConfigError`` (its owner could swap the socket for theirs).
- ``check_ipc_folder`` refuses (``ipc_folder_not_private``) to bind into an existing folder
  that another user owns or may enter; a missing folder is left to the bind's own error.
- A probe is one connect, bounded by a timeout; it never sends a byte.
"""

from __future__ import annotations

import contextlib
import enum
import os
import pwd
import socket
import stat
from pathlib import Path
from typing import Any

from torviz.shared.endpoints import parse_endpoint
from torviz.shared.errors import ConfigError

__all__ = [
    "FOLDER_MODE",
    "SOCKET_MODE",
    "IpcState",
    "bind_private",
    "check_ipc_folder",
    "ipc_path",
    "make_private_dir",
    "owner_of",
    "probe_ipc",
]

FOLDER_MODE = 0o700
"""Mode of a folder holding sockets: only its owner may enter it."""
SOCKET_MODE = 0o600
"""Mode of a bound ipc socket file: only its owner may connect."""

_BIND_UMASK = 0o077  # not 0o177: a folder made meanwhile by another thread must stay usable
_PROBE_TIMEOUT = 1.0


class IpcState(enum.Enum):
    """What a probe of an ipc socket found."""

    LISTENING = "listening"
    """Something accepted the connection (or the answer is unknown: let ZeroMQ try)."""
    MISSING = "missing"
    """No socket file (nothing was ever bound there, or its folder is gone)."""
    NOT_LISTENING = "not_listening"
    """A socket file nobody listens on any more (its process died)."""
    DENIED = "denied"
    """The socket or a folder above it belongs to another user."""


def ipc_path(endpoint: str) -> str | None:
    """The file path of an ipc endpoint; ``None`` for tcp and inproc.

    Raises:
        ConfigError: the endpoint is malformed (see ``shared.endpoints.parse_endpoint``).
    """
    parts = parse_endpoint(endpoint)
    return parts.path if parts.scheme == "ipc" else None


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def make_private_dir(path: Path) -> Path:
    """Make ``path`` (and missing parents) and leave it a folder only this user can enter.

    Returns:
        ``path``.

    Raises:
        ConfigError: ``not_a_folder``; ``folder_not_private`` when another user owns it.
        OSError: it cannot be made or changed.
    """
    with contextlib.suppress(FileExistsError):  # a file there is refused below
        path.mkdir(mode=FOLDER_MODE, parents=True)  # the mode is masked: set below
    info = os.stat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError("not_a_folder", f"{path} is not a folder")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            "folder_not_private",
            f"{path} belongs to {_user(info.st_uid)}: use a folder of this user's own",
        )
    if stat.S_IMODE(info.st_mode) != FOLDER_MODE:
        os.chmod(path, FOLDER_MODE)
    return path


def check_ipc_folder(endpoint: str) -> None:
    """Refuse to bind an ipc socket in a folder other users own or may enter.

    Does nothing for tcp and inproc endpoints, or when the folder does not exist (the bind
    then fails and says so).

    Raises:
        ConfigError: ``ipc_folder_not_private``, ``unusable_ipc_folder`` (it cannot be
            examined), or a malformed endpoint.
    """
    path = ipc_path(endpoint)
    if path is None:
        return
    folder = Path(os.path.abspath(path)).parent
    try:
        info = os.stat(folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(
            "unusable_ipc_folder", f"cannot use {endpoint}: {folder}: {exc.strerror}"
        ) from None
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid != os.geteuid() or mode & 0o077:
        raise ConfigError(
            "ipc_folder_not_private",
            f"refusing to bind {endpoint}: its folder {folder} (owner {_user(info.st_uid)}, "
            f"mode {mode:04o}) lets other users in: use a folder only this user owns and "
            "can enter (mode 0700)",
        )


def bind_private(sock: Any, endpoint: str) -> None:
    """``sock.bind(endpoint)``; an ipc socket file is made ``SOCKET_MODE`` whatever the umask.

    Args:
        sock: a ZeroMQ socket.
        endpoint: what to bind.

    Raises:
        ConfigError: see ``check_ipc_folder``.
        zmq.ZMQError: the bind fails.
    """
    path = ipc_path(endpoint)
    if path is None:
        sock.bind(endpoint)
        return
    check_ipc_folder(endpoint)
    previous = os.umask(_BIND_UMASK)  # libzmq makes the file in bind(): never wider than 0700
    try:
        sock.bind(endpoint)
    finally:
        os.umask(previous)
    os.chmod(path, SOCKET_MODE)


def probe_ipc(path: str, timeout: float = _PROBE_TIMEOUT) -> IpcState:
    """Connect to the ipc socket at ``path`` and hang up at once; what did that find?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except PermissionError:
        return IpcState.DENIED
    except (FileNotFoundError, NotADirectoryError):
        return IpcState.MISSING
    except ConnectionRefusedError:
        return IpcState.NOT_LISTENING
    except OSError:
        return IpcState.LISTENING  # a full backlog, a path too long: ZeroMQ will tell
    finally:
        probe.close()
    return IpcState.LISTENING


def owner_of(path: str) -> str | None:
    """The user who owns ``path`` or, if it cannot be examined, the nearest folder above it
    that can; ``None`` when that is this user (or nothing can be examined)."""
    candidate = Path(os.path.abspath(path))
    for place in (candidate, *candidate.parents):
        try:
            info = os.stat(place)
        except OSError:
            continue
        return None if info.st_uid == os.geteuid() else _user(info.st_uid)
    return None
