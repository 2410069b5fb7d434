"""Where a daemon keeps its state, and how the CLI finds a running daemon.

A daemon owns one state directory (default: the platform's user state dir, e.g.
``~/.local/state/torviz``), which it makes private (0700) at start. Its endpoints default to
ZeroMQ ipc sockets inside it (``bus.sock``, ``control.sock``, ``data.sock``, each 0600), and
while it runs it writes ``daemon.json`` there (its pid, its control endpoint and, with keys,
its keys folder and key name) and holds ``daemon.lock``, so a second daemon on the same state
directory refuses to start. The CLI reads ``daemon.json`` of the default state directory unless
given ``--control`` or ``--state-dir``; another user cannot read it, and is told so.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import platformdirs

from torviz.shared.config import Config
from torviz.shared.endpoints import is_local
from torviz.shared.errors import ConfigError, TorvizError

__all__ = [
    "DaemonAddress",
    "DaemonLock",
    "Endpoints",
    "default_config_file",
    "default_download_dir",
    "default_state_dir",
    "find_control_endpoint",
    "find_daemon",
    "load_config_file",
    "resolve_endpoints",
]

_APP = "torviz"
_DAEMON_FILE = "daemon.json"
_LOCK_FILE = "daemon.lock"


def default_state_dir() -> Path:
    return Path(platformdirs.user_state_dir(_APP))


def default_config_file() -> Path:
    return Path(platformdirs.user_config_dir(_APP)) / "config.toml"


def default_download_dir() -> Path:
    downloads = Path(platformdirs.user_downloads_dir())
    return downloads if downloads.is_dir() else Path.cwd()


def load_config_file(path: str | None) -> Config:
    """The given file, else the default config file if it exists, else the built-in defaults."""
    from torviz.shared.config import parse_config

    candidate = Path(path) if path else default_config_file()
    if not path and not candidate.exists():
        return Config()
    try:
        return parse_config(candidate.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError("unreadable_config", f"cannot read {candidate}: {exc.strerror}") from None
    except ConfigError as exc:
        raise ConfigError(exc.reason, f"{candidate}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Endpoints:
    bus: str
    control: str
    data: str


def resolve_endpoints(config: Config, state_dir: Path, control: str | None = None) -> Endpoints:
    """Fill the endpoints the config leaves empty with ipc sockets in ``state_dir``."""

    def ipc(name: str) -> str:
        path = state_dir / f"{name}.sock"
        if len(str(path)) > 100:
            raise ConfigError(
                "state_dir_too_long",
                f"the state directory path is too long for a socket ({state_dir}): "
                "use a shorter --state-dir or set tcp:// endpoints in the config",
            )
        return f"ipc://{path}"

    endpoints = Endpoints(
        bus=config.coordinator.bus or ipc("bus"),
        control=control or config.coordinator.control or ipc("control"),
        data=config.storage_agent.data or ipc("data"),
    )
    if not is_local(endpoints.control):
        raise ConfigError(
            "control_not_local",
            f"the control endpoint {endpoints.control} is not local: bind it to ipc or a "
            "loopback address (tcp://127.0.0.1:PORT) and reach a remote daemon over ssh",
        )
    return endpoints


class DaemonLock:
    """Held by the running daemon: one daemon per state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._handle: IO[str] | None = None

    def acquire(self, control: str, keys: tuple[str, str] | None = None) -> None:
        """Take the lock and publish ``daemon.json``.

        Args:
            control: the control endpoint.
            keys: ``(keys_dir, key_name)`` when the daemon uses CURVE keys: the CLI of the
                daemon's user finds them there for a tcp control endpoint.

        Raises:
            TorvizError: another daemon runs on this state directory.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        handle = open(self.state_dir / _LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise TorvizError(
                "daemon_running",
                f"a torviz daemon already runs with state directory {self.state_dir} "
                "(stop it with `torviz-coordinator shutdown`, or use another --state-dir)",
            ) from None
        self._handle = handle
        info: dict[str, object] = {"pid": os.getpid(), "control": control}
        if keys is not None:
            info["keys_dir"] = str(Path(keys[0]).expanduser().absolute())
            info["key_name"] = keys[1]
        tmp = self.state_dir / f".{_DAEMON_FILE}.tmp"
        tmp.write_text(json.dumps(info), encoding="utf-8")
        tmp.replace(self.state_dir / _DAEMON_FILE)

    def release(self) -> None:
        if self._handle is None:
            return
        (self.state_dir / _DAEMON_FILE).unlink(missing_ok=True)
        self._handle.close()
        self._handle = None


@dataclass(frozen=True, slots=True)
class DaemonAddress:
    """How the CLI reaches a daemon: its control endpoint and, if ``daemon.json`` names them,
    the daemon's keys folder and key name (empty otherwise)."""

    control: str
    keys_dir: str = ""
    key_name: str = ""
    pid: int = 0
    """The daemon's process id from ``daemon.json`` (0: unknown)."""

    @property
    def running(self) -> bool:
        """Whether ``daemon.json`` names a process that still runs (it may still be starting)."""
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # another user's process: it runs
        return True


def _text(info: dict[str, object], key: str) -> str:
    value = info.get(key)
    return value if isinstance(value, str) else ""


def find_daemon(control: str | None, state_dir: str | None) -> DaemonAddress:
    """The daemon the CLI should talk to.

    ``--control`` wins (no keys known: the CLI's own flags and config give them); otherwise the
    ``daemon.json`` of ``--state-dir`` (or the default state directory); otherwise the default
    ipc socket there, which gives a clear "no daemon" or "permission denied" error.
    """
    if control:
        return DaemonAddress(control)
    directory = Path(state_dir) if state_dir else default_state_dir()
    try:
        info = json.loads((directory / _DAEMON_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict) and _text(info, "control"):
        pid = info.get("pid")
        return DaemonAddress(
            _text(info, "control"),
            _text(info, "keys_dir"),
            _text(info, "key_name"),
            pid if isinstance(pid, int) and not isinstance(pid, bool) else 0,
        )
    return DaemonAddress(f"ipc://{directory / 'control.sock'}")


def find_control_endpoint(control: str | None, state_dir: str | None) -> str:
    """The control endpoint the CLI should talk to (see ``find_daemon``)."""
    return find_daemon(control, state_dir).control
