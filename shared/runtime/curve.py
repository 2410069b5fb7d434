"""CURVE key files, and which sockets use them.

Strategy: keys live in pyzmq's certificate files (``zmq.auth.create_certificates`` writes them;
they are read here as ``zmq.auth.load_certificate`` reads them, within bounds, metadata
included): ``NAME.key`` holds a public key, ``NAME.key_secret`` the pair. A keys folder
(``[security] keys_dir``) holds this process's pair, the coordinator's public key
(``coordinator.key``) and the public keys it admits (``authorized/*.key``; the file name without
``.key`` is the peer's name). ``server_security``, ``control_security`` and
``client_security`` turn an endpoint and the ``[security]`` section into a
``CurveServer``/``CurveClient`` for ``BusSocket`` (or ``None``: no CURVE) so that every process
applies the same rules:

- ipc and inproc never use CURVE: an ipc socket is a file in a folder only its owner can enter
  (``shared.runtime.ipc``; binding into a folder others may enter is refused).
- Every tcp socket uses CURVE, loopback included: any local user can reach a loopback port.
  Without a keys folder a process refuses to bind a tcp endpoint and to connect to one
  (``needs_keys``).
- Bus and data endpoints (ZAP domain ``torviz``) admit the keys in ``authorized/`` and the
  process's own; the control endpoint (ZAP domain ``torviz-control``) admits only the
  coordinator's own key, so controlling the daemon over tcp takes its secret key, as
  controlling it over ipc takes being its user.

Rules:
- Key files are hostile input: only regular files of at most ``MAX_KEY_FILE`` bytes are read,
  at most ``MAX_AUTHORIZED`` authorized keys are loaded, each key must be 40 Z85 characters
  that decode to 32 bytes, and a secret key must match its public key.
- Every missing, unreadable or invalid file is a ``ConfigError`` whose one line names the file
  and what to do about it (usually: run ``torviz-coordinator keys init``).
- Key names are ``[A-Za-z0-9._-]{1,64}`` not starting with a dot: a name becomes a file name.
- A key has a role, the one service kind it may register as (``check_identity`` in
  ``shared.bus`` refuses any other): ``role = "peer_agent"`` (or ``storage_agent``,
  ``tracker_agent``) in its file's ``metadata`` section, as ``keys init`` writes it. A key file
  without one (made before roles existed) takes the role its name implies (``role_of_name``):
  ``storage`` or ``storage-*`` a storage agent, ``tracker`` or ``tracker-*`` a tracker agent,
  anything else a peer agent. The key named ``coordinator`` is the coordinator's, which runs
  embedded agents of every kind: its role is ``coordinator``, whatever its file says.
- Metadata is hostile input too: at most ``MAX_METADATA`` entries, names of letters, digits,
  ``_``, ``.`` and ``-``, values of at most 255 bytes, no name twice; an unknown role is a
  ``ConfigError`` naming the file.

``HandshakeWatch`` is the client side at run time: libzmq reports a failed CURVE handshake only
through a socket monitor, and gives up for good on a connection whose handshake was refused
(it reconnects only after network errors), so the watch logs the failure and connects again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import zmq
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from shared.bus import ServiceKind
from shared.config import SecurityConfig
from shared.endpoints import parse_endpoint
from shared.errors import ConfigError

from .ipc import check_ipc_folder

__all__ = [
    "AGENT_ROLES",
    "AUTHORIZED_DIR",
    "CONTROL_ZAP_DOMAIN",
    "COORDINATOR_KEY",
    "MAX_AUTHORIZED",
    "MAX_KEY_FILE",
    "MAX_METADATA",
    "ROLE_METADATA",
    "ZAP_DOMAIN",
    "AuthorizedKey",
    "CurveClient",
    "CurveServer",
    "HandshakeWatch",
    "KeyPair",
    "ServerHandshakeWatch",
    "authorized_keys",
    "check_key_name",
    "check_public_key",
    "client_security",
    "control_security",
    "load_authorized_dir",
    "load_keypair",
    "load_public_key",
    "read_key_role",
    "role_of_name",
    "server_security",
]

log = logging.getLogger(__name__)

COORDINATOR_KEY = "coordinator"
"""Name of the coordinator's key pair (and of the public key every agent connects with)."""
AUTHORIZED_DIR = "authorized"
"""Sub-folder of a keys folder holding the public keys a bound socket admits."""
MAX_KEY_FILE = 64 * 1024
"""Largest key file read, in bytes (pyzmq writes about 400)."""
MAX_AUTHORIZED = 4096
"""Most ``*.key`` files loaded from an authorized folder."""
ZAP_DOMAIN = "torviz"
"""The ZAP domain of bus and data endpoints."""
CONTROL_ZAP_DOMAIN = "torviz-control"
"""The ZAP domain of the control endpoint, which admits only its own key."""
AGENT_ROLES = (ServiceKind.PEER_AGENT, ServiceKind.STORAGE_AGENT, ServiceKind.TRACKER_AGENT)
"""The roles a key file's metadata may give."""
ROLE_METADATA = "role"
"""The metadata entry of a key file that holds its role."""
MAX_METADATA = 32
"""Most entries read from a key file's ``metadata`` section."""
_MAX_METADATA_VALUE = 255
_METADATA_NAME = re.compile(rb"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

_KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_Z85_KEY = re.compile(rb"[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}")
_INIT_HINT = "run `torviz-coordinator keys init` and set [security] keys_dir"
_TCP_HINT = (
    "any local user can reach a tcp port, loopback included, so tcp takes keys: "
    f"{_INIT_HINT} (or --keys DIR), or use an ipc:// endpoint"
)


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A CURVE key pair, both keys Z85-encoded (40 ASCII bytes)."""

    name: str
    public: bytes
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    """An admitted public key's name (the file's, without ``.key``) and role."""

    name: str
    role: ServiceKind
    """The service kind it may register as; ``COORDINATOR``: any (the coordinator's own)."""


@dataclass(frozen=True, slots=True)
class CurveServer:
    """A bound socket's CURVE settings: its pair, where the admitted public keys are, and the
    ZAP domain it asks in (the ZAP handler keeps the admitted keys per domain).

    ``authorized_dir`` ``None``: only this process's own public key is admitted.
    """

    keys: KeyPair
    authorized_dir: Path | None
    domain: str = ZAP_DOMAIN


@dataclass(frozen=True, slots=True)
class CurveClient:
    """A connecting socket's CURVE settings: its pair and the server's public key (Z85)."""

    keys: KeyPair
    server_public: bytes


def check_key_name(name: str) -> str:
    """Return ``name`` if it can name a key file.

    Raises:
        ConfigError: ``bad_key_name``.
    """
    if not _KEY_NAME.fullmatch(name) or name.startswith("."):
        raise ConfigError(
            "bad_key_name",
            f"bad key name {name[:70]!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "not starting with '.'",
        )
    return name


def check_public_key(key: bytes, where: str, hint: str = "") -> bytes:
    """Return ``key`` if it is a Z85-encoded CURVE key (40 characters, 32 bytes decoded).

    Args:
        key: the Z85 text.
        where: names the key's origin in the error (a file, a message field).
        hint: what to do about it, appended to the error.

    Raises:
        ConfigError: ``invalid_key``.
    """
    if _Z85_KEY.fullmatch(key):
        try:
            if len(z85.decode(key)) == 32:
                return key
        except (ValueError, KeyError, struct.error):
            pass  # a 5-character group above 2**32 - 1: not a key
    fix = f": {hint}" if hint else ""
    raise ConfigError("invalid_key", f"{where}: not a CURVE key (40 Z85 characters expected){fix}")


def role_of_name(name: str) -> ServiceKind:
    """The role of a key without role metadata, from its name: ``coordinator`` the
    coordinator's; ``storage``/``storage-*`` a storage agent; ``tracker``/``tracker-*`` a tracker
    agent; anything else a peer agent (``peer-agents`` of deploy/compose.yaml included)."""
    if name == COORDINATOR_KEY:
        return ServiceKind.COORDINATOR
    for prefix, role in (
        ("storage", ServiceKind.STORAGE_AGENT),
        ("tracker", ServiceKind.TRACKER_AGENT),
    ):
        if name == prefix or name.startswith(f"{prefix}-"):
            return role
    return ServiceKind.PEER_AGENT


def _missing(path: Path, hint: str) -> ConfigError:
    return ConfigError("missing_key", f"CURVE key file {path} is missing: {hint}")


@dataclass(frozen=True, slots=True)
class _Certificate:
    public: bytes
    secret: bytes | None
    metadata: dict[str, str]


def _too_big(path: Path, size: int, hint: str) -> ConfigError:
    return ConfigError("invalid_key", f"{path} is {size} bytes, too big for a key file: {hint}")


def _read_certificate(path: Path, hint: str) -> _Certificate:
    """The keys and metadata of one certificate file, checked."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise _missing(path, hint) from None
    except OSError as exc:
        raise ConfigError("unreadable_key", f"cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError("invalid_key", f"{path} is not a regular file: {hint}")
    if info.st_size > MAX_KEY_FILE:
        raise _too_big(path, info.st_size, hint)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE + 1)  # it may have grown since the stat
    except OSError as exc:
        raise ConfigError(
            "unreadable_key", f"cannot read {path}: {exc.strerror or exc}: {hint}"
        ) from None
    if len(data) > MAX_KEY_FILE:
        raise _too_big(path, len(data), hint)
    return _parse_certificate(data, path, hint)


def _parse_certificate(data: bytes, path: Path, hint: str) -> _Certificate:
    """Parse pyzmq's (ZPL) certificate format: ``public-key`` and ``secret-key`` lines wherever
    they stand (as pyzmq reads them), and the indented ``name = value`` lines of the
    ``metadata`` section, bounded."""
    keys: dict[bytes, bytes] = {}
    metadata: dict[str, str] = {}
    section = b""

    def bad(what: str) -> ConfigError:
        return ConfigError("invalid_key", f"{path}: {what}: {hint}")

    for raw in data.splitlines():
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        which = next((k for k in (b"public-key", b"secret-key") if line.startswith(k)), None)
        if which is not None:
            _, equals, value = line.partition(b"=")
            if equals and which not in keys:
                keys[which] = value.strip(b" \t'\"")
            continue
        if raw[:1] not in (b" ", b"\t"):
            section = line  # an unindented line names a section
            continue
        if section != b"metadata":
            continue
        name, equals, value = line.partition(b"=")
        name = name.strip()
        if not equals or not _METADATA_NAME.fullmatch(name):
            raise bad("a metadata line is not `name = value`")
        value = _unquote(value.strip())
        if len(value) > _MAX_METADATA_VALUE:
            raise bad(f"metadata {name.decode()!r} is longer than {_MAX_METADATA_VALUE} bytes")
        text_name = name.decode("ascii")
        if text_name in metadata:
            raise bad(f"metadata {text_name!r} is given twice")
        if len(metadata) >= MAX_METADATA:
            raise bad(f"more than {MAX_METADATA} metadata entries")
        metadata[text_name] = value.decode("utf-8", "replace")
    public = keys.get(b"public-key")
    if public is None:
        raise ConfigError("invalid_key", f"{path} holds no public key: {hint}")
    check_public_key(public, str(path), hint)
    secret = keys.get(b"secret-key")
    if secret is not None:
        check_public_key(secret, str(path), hint)
    return _Certificate(public, secret, metadata)


def _unquote(value: bytes) -> bytes:
    if len(value) >= 2 and value[:1] in (b'"', b"'") and value[-1:] == value[:1]:
        return value[1:-1]
    return value


def _role(certificate: _Certificate, name: str, path: Path, hint: str) -> ServiceKind:
    """A key's role: its metadata's, else the one its name implies (``role_of_name``)."""
    if name == COORDINATOR_KEY:
        return ServiceKind.COORDINATOR
    given = certificate.metadata.get(ROLE_METADATA)
    if given is None:
        return role_of_name(name)
    for role in AGENT_ROLES:
        if given == role.value:
            return role
    roles = ", ".join(role.value for role in AGENT_ROLES)
    raise ConfigError("bad_key_role", f"{path}: role {given[:40]!r} is not one of {roles}: {hint}")


def read_key_role(path: Path, name: str) -> ServiceKind:
    """The role of the key in ``path`` whose name is ``name`` (see the module rules).

    Raises:
        ConfigError: the file is missing or invalid (see ``load_keypair``), ``bad_key_role``.
    """
    hint = "fix or remove it (keys are made by `torviz-coordinator keys init`)"
    return _role(_read_certificate(path, hint), name, path, hint)


def _pair_hint(name: str) -> str:
    if name == COORDINATOR_KEY:
        return _INIT_HINT
    return (
        f"run `torviz-coordinator keys init {name}` on the coordinator's host and copy "
        f"agents/{name}/ from its keys folder here"
    )


def _keys_folder(keys_dir: Path | str) -> Path:
    folder = Path(keys_dir).expanduser().absolute()
    if not folder.is_dir():
        raise ConfigError(
            "missing_keys_dir", f"the keys folder {folder} does not exist: {_INIT_HINT}"
        )
    return folder


def load_keypair(keys_dir: Path | str, name: str) -> KeyPair:
    """This process's key pair, from ``<keys_dir>/<name>.key_secret``.

    Raises:
        ConfigError: ``bad_key_name``, ``missing_keys_dir``, ``missing_key``,
            ``unreadable_key``, ``invalid_key``, ``key_mismatch`` (the secret does not belong to
            the public key in the same file).
    """
    check_key_name(name)
    path = _keys_folder(keys_dir) / f"{name}.key_secret"
    hint = _pair_hint(name)
    certificate = _read_certificate(path, hint)
    public, secret = certificate.public, certificate.secret
    if secret is None:
        raise ConfigError("invalid_key", f"{path} holds no secret key: {hint}")
    if zmq.curve_public(secret) != public:
        raise ConfigError(
            "key_mismatch", f"{path}: the secret key does not match the public key: {hint}"
        )
    return KeyPair(name, public, secret)


def load_public_key(keys_dir: Path | str, name: str) -> bytes:
    """The Z85 public key in ``<keys_dir>/<name>.key`` (e.g. the coordinator's).

    Raises:
        ConfigError: as ``load_keypair``, but the file needs no secret key.
    """
    check_key_name(name)
    path = _keys_folder(keys_dir) / f"{name}.key"
    return _read_certificate(path, _pair_hint(name)).public


def load_authorized_dir(folder: Path) -> dict[bytes, AuthorizedKey]:
    """Public key (Z85) -> name and role of every ``NAME.key`` in ``folder``; ``{}`` if it is
    absent.

    Hidden files and other extensions (``.key_secret``) are ignored. Where two files hold the
    same key, the first name in sorted order wins.

    Raises:
        ConfigError: ``too_many_keys``, ``unreadable_key``, ``bad_key_name``,
            ``bad_key_role`` and the errors of each file (see ``load_keypair``).
    """
    hint = f"fix or remove it (keys are made by `torviz-coordinator keys init`) in {folder}"
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith(".") or not entry.name.endswith(".key"):
                    continue
                if len(names) >= MAX_AUTHORIZED:
                    raise ConfigError(
                        "too_many_keys", f"{folder} holds more than {MAX_AUTHORIZED} keys"
                    )
                names.append(entry.name)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError("unreadable_key", f"cannot list {folder}: {exc.strerror}") from None
    keys: dict[bytes, AuthorizedKey] = {}
    for file_name in sorted(names):
        name = file_name.removesuffix(".key")
        try:
            check_key_name(name)
        except ConfigError as exc:
            raise ConfigError(exc.reason, f"{folder / file_name}: {exc.message}") from None
        certificate = _read_certificate(folder / file_name, hint)
        role = _role(certificate, name, folder / file_name, hint)
        keys.setdefault(certificate.public, AuthorizedKey(name, role))
    return keys


def authorized_keys(keys_dir: Path | str) -> dict[bytes, AuthorizedKey]:
    """Public key (Z85) -> name and role of every key in ``<keys_dir>/authorized``.

    Raises:
        ConfigError: see ``load_authorized_dir``; ``missing_keys_dir``.
    """
    return load_authorized_dir(_keys_folder(keys_dir) / AUTHORIZED_DIR)


def _bind_check(endpoint: str, security: SecurityConfig) -> bool:
    """Whether binding ``endpoint`` takes CURVE; refuses what may not be bound at all."""
    check_ipc_folder(endpoint)  # parses the endpoint first: a malformed one raises here
    if parse_endpoint(endpoint).scheme != "tcp":
        return False
    if not security.keys_dir:
        raise ConfigError(
            "needs_keys", f"refusing to bind {endpoint} without CURVE keys: {_TCP_HINT}"
        )
    return True


def server_security(
    endpoint: str, security: SecurityConfig, default_name: str
) -> CurveServer | None:
    """The CURVE settings of a socket that binds ``endpoint`` (a bus or data endpoint), or
    ``None`` for none (ipc, inproc).

    Args:
        endpoint: what the socket binds.
        security: the ``[security]`` section (``key_name`` empty: ``default_name``).
        default_name: the process's key name by default (agent id, or ``coordinator``).

    Raises:
        ConfigError: ``needs_keys`` (a tcp endpoint, loopback included, and no keys folder),
            ``ipc_folder_not_private`` (see ``shared.runtime.ipc.check_ipc_folder``), a
            malformed endpoint, or any key file error (the pair, or a file in
            ``authorized/``: reported at start rather than at the first connection).
    """
    if not _bind_check(endpoint, security):
        return None
    keys = load_keypair(security.keys_dir, security.key_name or default_name)
    authorized_keys(security.keys_dir)
    return CurveServer(keys, _keys_folder(security.keys_dir) / AUTHORIZED_DIR)


def control_security(endpoint: str, security: SecurityConfig) -> CurveServer | None:
    """The CURVE settings of the coordinator's control socket: like ``server_security``, but
    in the control ZAP domain, where only the coordinator's own key is admitted.

    Raises:
        ConfigError: as ``server_security``.
    """
    if not _bind_check(endpoint, security):
        return None
    keys = load_keypair(security.keys_dir, security.key_name or COORDINATOR_KEY)
    return CurveServer(keys, None, CONTROL_ZAP_DOMAIN)


def client_security(
    endpoint: str,
    security: SecurityConfig,
    default_name: str,
    server_public: bytes | None = None,
) -> CurveClient | None:
    """The CURVE settings of a socket that connects to ``endpoint``, or ``None`` for none
    (ipc, inproc). The CLI connects to the control endpoint with ``default_name``
    ``coordinator``: the daemon's own pair, the one key that endpoint admits.

    Args:
        endpoint: what the socket connects to.
        security: the ``[security]`` section (``key_name`` empty: ``default_name``).
        default_name: the process's key name by default (its agent id).
        server_public: the server's Z85 public key (e.g. a storage agent's, from
            ``AttachTorrent``); ``None``: the coordinator's, ``<keys_dir>/coordinator.key``.

    Raises:
        ConfigError: ``needs_keys`` (a tcp endpoint, loopback included, and no keys folder:
            whoever listens there could be anyone), a malformed endpoint, a key file error, or
            ``invalid_key`` when ``server_public`` is not a CURVE key (an empty one included).
    """
    if parse_endpoint(endpoint).scheme != "tcp":
        return None
    if not security.keys_dir:
        raise ConfigError(
            "needs_keys", f"refusing to connect to {endpoint} without CURVE keys: {_TCP_HINT}"
        )
    keys = load_keypair(security.keys_dir, security.key_name or default_name)
    if server_public is None:
        server_public = load_public_key(security.keys_dir, COORDINATOR_KEY)
    else:
        check_public_key(server_public, f"the server key for {endpoint}")
    return CurveClient(keys, server_public)


def _follow_monitor(monitor: zmq.Socket[Any], on_event: Callable[[int, str], None]) -> None:
    """Hand each event of a zmq socket monitor to ``on_event(event, endpoint)`` until the
    monitor closes."""
    while True:
        try:
            event = recv_monitor_message(monitor)
        except zmq.ZMQError:
            return  # closed with the socket
        except (RuntimeError, ValueError):
            continue  # a malformed event: libzmq's, but no reason to stop watching
        endpoint = event.get("endpoint", b"")
        where = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else "?"
        on_event(int(event["event"]), where)


class ServerHandshakeWatch:
    """The failed CURVE handshakes on one bound socket, followed through a zmq monitor.

    A client that holds another server public key (an agent bundle made by another
    ``keys init``) fails before the ZAP handler ever hears of it, so only this watch can tell
    the server's operator. libzmq does not name the client's address here. The first failure
    is logged at warning, then at most one line every ``LOG_EVERY`` seconds counting the
    failures since; each failure calls ``on_failure``.

    Args:
        sock: a zmq.green socket with CURVE server options set.
        name: the socket's name in logs.
        on_failure: called once per failed handshake (a counter).
        clock: monotonic seconds (for tests).
    """

    LOG_EVERY = 60.0
    EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

    def __init__(
        self,
        sock: zmq.Socket[Any],
        name: str,
        on_failure: Callable[[], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sock = sock
        self._name = name
        self._on_failure = on_failure
        self._clock = clock
        self._monitor: zmq.Socket[Any] = sock.get_monitor_socket(self.EVENTS)
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._last_log = float("-inf")
        self._unlogged = 0

    def start(self) -> None:
        """Spawn the greenlet that reads the monitor."""
        self._greenlet = gevent.spawn(
            _follow_monitor, self._monitor, lambda _, where: self.handshake_failed(where)
        )

    def close(self) -> None:
        """Stop watching; call before the socket is closed."""
        if self._greenlet is not None and self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=True, timeout=1.0)
        with contextlib.suppress(zmq.ZMQError):  # the socket is going away anyway
            self._sock.disable_monitor()
        self._monitor.close(linger=0)

    def handshake_failed(self, endpoint: str) -> None:
        """A client failed the CURVE handshake on ``endpoint``."""
        self._on_failure()
        now = self._clock()
        if now - self._last_log < self.LOG_EVERY:
            self._unlogged += 1
            return
        since = f" ({self._unlogged} more since the last line)" if self._unlogged else ""
        self._last_log, self._unlogged = now, 0
        log.warning(
            "%s: a client failed the CURVE handshake on %s: it does not hold this server's "
            "public key (an agent bundle from another `keys init`?); give it this host's "
            "coordinator.key or a fresh bundle%s",
            self._name,
            endpoint,
            since,
        )


class HandshakeWatch:
    """The CURVE handshakes of one client socket, followed through a zmq monitor.

    Each failure calls ``on_failure`` and is logged at error at most once per ``LOG_EVERY``
    seconds. After a refused key or a protocol error (the server speaks no CURVE) the socket
    connects again after ``RETRY_FIRST`` seconds, doubling up to ``RETRY_MAX``; a successful
    handshake resets the delay. A connection lost mid-handshake (a wrong server key looks like
    that) is retried by libzmq itself.

    Args:
        sock: a zmq.green socket, CURVE client options set, not yet connected.
        name: the socket's name in logs.
        key_name: this process's key name, for the "refused" line.
        on_failure: called once per failed handshake (a counter).
    """

    LOG_EVERY = 30.0
    RETRY_FIRST = 1.0
    RETRY_MAX = 30.0
    EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )

    def __init__(
        self, sock: zmq.Socket[Any], name: str, key_name: str, on_failure: Callable[[], None]
    ) -> None:
        self._sock = sock
        self._name = name
        self._key_name = key_name
        self._on_failure = on_failure
        self._monitor: zmq.Socket[Any] = sock.get_monitor_socket(self.EVENTS)
        self._endpoints: list[str] = []
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._retry: gevent.Greenlet[Any, Any] | None = None
        self._retry_delay = self.RETRY_FIRST
        self._last_log = float("-inf")
        self._closed = False

    def connected(self, endpoint: str) -> None:
        """Note an endpoint the socket connected to (it is the one connected again)."""
        self._endpoints.append(endpoint)

    def start(self) -> None:
        """Spawn the greenlet that reads the monitor."""
        self._greenlet = gevent.spawn(_follow_monitor, self._monitor, self.handshake_event)

    def close(self) -> None:
        """Stop watching and retrying; call before the socket is closed."""
        self._closed = True
        for greenlet in (self._greenlet, self._retry):
            if greenlet is not None and greenlet is not gevent.getcurrent():
                greenlet.kill(block=True, timeout=1.0)
        with contextlib.suppress(zmq.ZMQError):  # the socket is going away anyway
            self._sock.disable_monitor()
        self._monitor.close(linger=0)

    def handshake_event(self, event: int, endpoint: str) -> None:
        """React to one monitor event (``zmq.EVENT_HANDSHAKE_*``) about ``endpoint``."""
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self._retry_delay = self.RETRY_FIRST
            return
        self._on_failure()
        if event != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and self._retry is None:
            targets = [endpoint] if endpoint in self._endpoints else list(self._endpoints)
            self._retry = gevent.spawn_later(self._retry_delay, self._reconnect, targets)
            self._retry_delay = min(self._retry_delay * 2, self.RETRY_MAX)
        now = time.monotonic()
        if now - self._last_log < self.LOG_EVERY:
            return
        self._last_log = now
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            log.error(
                "%s: the server at %s refused this process's key (%s): is its public key in "
                "the server's authorized folder?",
                self._name,
                endpoint,
                self._key_name,
            )
        else:
            log.error(
                "%s: CURVE handshake with %s failed: wrong coordinator key, or the server "
                "uses no keys",
                self._name,
                endpoint,
            )

    def _reconnect(self, endpoints: list[str]) -> None:
        self._retry = None
        if self._closed:
            return
        for endpoint in endpoints:
            with contextlib.suppress(zmq.ZMQError):  # libzmq may have forgotten it already
                self._sock.disconnect(endpoint)
            try:
                self._sock.connect(endpoint)
            except zmq.ZMQError as exc:
                log.warning("%s: cannot connect to %s again: %s", self._name, endpoint, exc)
