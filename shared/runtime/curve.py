"""CURVE for sockets: which sockets use keys, and with which settings.

Strategy: ``server_security``, ``control_security`` and ``client_security`` turn an endpoint
and the ``[security]`` section into a ``CurveServer``/``CurveClient`` for ``BusSocket`` (or
``None``: no CURVE) so that every process applies the same rules. The key files themselves are
found and read in ``shared.runtime.key_files``, the handshakes followed at run time in
``shared.runtime.handshakes``; every name of both is importable from here too, as before they
had modules of their own.

Rules:
- ipc and inproc never use CURVE: an ipc socket is a file in a folder only its owner can enter
  (``shared.runtime.ipc``; binding into a folder others may enter is refused).
- Every tcp socket uses CURVE, loopback included: any local user can reach a loopback port.
  Without a keys folder a process refuses to bind a tcp endpoint and to connect to one
  (``needs_keys``).
- Bus and data endpoints (ZAP domain ``torviz``) admit the keys in ``authorized/`` and the
  process's own; the control endpoint (ZAP domain ``torviz-control``) admits only the
  coordinator's own key, so controlling the daemon over tcp takes its secret key, as
  controlling it over ipc takes being its user.
- A bound socket's key files are all read when its settings are made: a bad file in
  ``authorized/`` is reported at start rather than at the first connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torviz.shared.config import SecurityConfig
from torviz.shared.endpoints import parse_endpoint
from torviz.shared.errors import ConfigError

from .handshakes import HandshakeWatch, ServerHandshakeWatch
from .ipc import check_ipc_folder
from .key_files import (
    AGENT_ROLES,
    AUTHORIZED_DIR,
    COORDINATOR_KEY,
    INIT_HINT,
    MAX_AUTHORIZED,
    MAX_KEY_FILE,
    MAX_METADATA,
    ROLE_METADATA,
    AuthorizedKey,
    KeyPair,
    authorized_keys,
    check_key_name,
    check_public_key,
    keys_folder,
    load_authorized_dir,
    load_keypair,
    load_public_key,
    read_key_role,
    role_of_name,
)

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

ZAP_DOMAIN = "torviz"
"""The ZAP domain of bus and data endpoints."""
CONTROL_ZAP_DOMAIN = "torviz-control"
"""The ZAP domain of the control endpoint, which admits only its own key."""
_TCP_HINT = (
    "any local user can reach a tcp port, loopback included, so tcp takes keys: "
    f"{INIT_HINT} (or --keys DIR), or use an ipc:// endpoint"
)


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
    return CurveServer(keys, keys_folder(security.keys_dir) / AUTHORIZED_DIR)


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
