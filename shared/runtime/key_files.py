"""CURVE key files: where they are, and reading them as the hostile input they are.

Strategy: keys live in pyzmq's certificate files (``zmq.auth.create_certificates`` writes them;
they are read here as ``zmq.auth.load_certificate`` reads them, within bounds, metadata
included): ``NAME.key`` holds a public key, ``NAME.key_secret`` the pair. A keys folder
(``[security] keys_dir``) holds this process's pair, the coordinator's public key
(``coordinator.key``) and the public keys it admits (``authorized/*.key``; the file name without
``.key`` is the peer's name). Which sockets use which keys is ``shared.runtime.curve``'s part;
this module only finds, bounds and parses the files.

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
"""

from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.utils import z85

from torviz.shared.bus import ServiceKind
from torviz.shared.errors import ConfigError

__all__ = [
    "AGENT_ROLES",
    "AUTHORIZED_DIR",
    "COORDINATOR_KEY",
    "INIT_HINT",
    "MAX_AUTHORIZED",
    "MAX_KEY_FILE",
    "MAX_METADATA",
    "ROLE_METADATA",
    "AuthorizedKey",
    "KeyPair",
    "authorized_keys",
    "check_key_name",
    "check_public_key",
    "keys_folder",
    "load_authorized_dir",
    "load_keypair",
    "load_public_key",
    "read_key_role",
    "role_of_name",
]

COORDINATOR_KEY = "coordinator"
"""Name of the coordinator's key pair (and of the public key every agent connects with)."""
AUTHORIZED_DIR = "authorized"
"""Sub-folder of a keys folder holding the public keys a bound socket admits."""
MAX_KEY_FILE = 64 * 1024
"""Largest key file read, in bytes (pyzmq writes about 400)."""
MAX_AUTHORIZED = 4096
"""Most ``*.key`` files loaded from an authorized folder."""
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
INIT_HINT = "run `torviz-coordinator keys init` and set [security] keys_dir"
"""What to do when keys are missing, for error lines."""


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
        return INIT_HINT
    return (
        f"run `torviz-coordinator keys init {name}` on the coordinator's host and copy "
        f"agents/{name}/ from its keys folder here"
    )


def keys_folder(keys_dir: Path | str) -> Path:
    """The keys folder ``keys_dir``, absolute (``~`` expanded).

    Raises:
        ConfigError: ``missing_keys_dir``.
    """
    folder = Path(keys_dir).expanduser().absolute()
    if not folder.is_dir():
        raise ConfigError(
            "missing_keys_dir", f"the keys folder {folder} does not exist: {INIT_HINT}"
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
    path = keys_folder(keys_dir) / f"{name}.key_secret"
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
    path = keys_folder(keys_dir) / f"{name}.key"
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
    return load_authorized_dir(keys_folder(keys_dir) / AUTHORIZED_DIR)
