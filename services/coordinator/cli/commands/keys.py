"""``torviz-coordinator keys``: make the CURVE keys that let agents on other hosts join.

Strategy: one keys folder on the coordinator's host holds everything (default: the user config
folder's ``keys``, e.g. ``~/.config/torviz/keys``)::

    coordinator.key, coordinator.key_secret    the coordinator's pair
    authorized/NAME.key                        the agents the coordinator admits
    agents/NAME/                               what to copy to agent NAME's host:
        NAME.key, NAME.key_secret              its pair
        coordinator.key                        whom it connects to
        authorized/*.key                       every agent's public key and the coordinator's,
                                               which a storage agent admits on its data endpoint

``keys init NAME...`` is additive: the coordinator's pair and every existing agent key are
kept, new agents get a pair, and every bundle's ``coordinator.key`` and ``authorized/`` are
refreshed. Re-run it to add an agent, then copy the bundles again.

Every agent key has a role, the one kind of agent it may register as (peer, storage or
tracker agent; ``shared.runtime.curve``): ``ROLE:NAME`` gives it (``storage:st1``), a bare
``NAME`` takes the one its name implies (``storage``/``storage-*``: storage agent,
``tracker``/``tracker-*``: tracker agent, anything else: peer agent). It is written in the
metadata of the key's files, public ones included, so every host that admits the key knows it.

What it prints for each agent runs as printed: the command that copies the agent's bundle to
its host (``tar`` over ``ssh``: nothing to install first on a fresh host), and the command
that starts the agent there, with the bus endpoint (and a storage agent's data endpoint) read
from the coordinator's config (``--config``, default the usual file). Where that config gives
agents on other hosts nothing to reach, it says what to set instead of printing a command
that would fail.

Rules:
- Folders are made 0700, secret files 0600; a pair is made in a private temporary folder and
  moved into place, the authorized public key last, so an interrupted run is simply re-run.
- Agent names are key names (``[A-Za-z0-9._-]{1,64}``, no leading dot, so no ``:``);
  ``coordinator`` is taken. Everything is checked before anything is written.
- A key keeps its role: a ``ROLE:NAME`` whose key exists with another role is an error, never
  a rewrite.
- Errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torviz.shared.bus import ServiceKind
from torviz.shared.config import Config
from torviz.shared.errors import ConfigError, TorvizError

from ...daemon.locations import default_config_file, load_config_file

__all__ = [
    "AGENT_CONFIG",
    "AGENT_KEYS_DIR",
    "EXIT_ERROR",
    "STORAGE_STATE_DIR",
    "AgentKey",
    "KeysReport",
    "agent_commands",
    "copy_command",
    "default_keys_dir",
    "init_keys",
    "parse_agent_names",
    "register",
]

EXIT_ERROR = 2
_AGENTS = "agents"
AGENT_KEYS_DIR = "/etc/torviz/keys/agents"
"""Where a bundle goes on its agent's host (as in deploy/systemd)."""
AGENT_CONFIG = "/etc/torviz/config.toml"
"""The config file an agent reads on its host (as in deploy/systemd; it may be empty)."""
STORAGE_STATE_DIR = "/var/lib/torviz/storage"
"""The storage agent's state folder (its unit's ``StateDirectory``)."""
_AGENT_USER = "torviz"
_ROLES = {
    "peer": ServiceKind.PEER_AGENT,
    "storage": ServiceKind.STORAGE_AGENT,
    "tracker": ServiceKind.TRACKER_AGENT,
}
_SHORT = {role: short for short, role in _ROLES.items()}
_PROGRAMS = {
    ServiceKind.PEER_AGENT: "torviz-peer-agent",
    ServiceKind.STORAGE_AGENT: "torviz-storage-agent",
    ServiceKind.TRACKER_AGENT: "torviz-tracker-agent",
}


def default_keys_dir() -> Path:
    """``keys`` in the user config folder (next to ``config.toml``)."""
    return default_config_file().parent / "keys"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``keys`` subcommand and its ``init`` and ``list`` actions."""
    parser = subparsers.add_parser(
        "keys",
        help="make the CURVE keys agents on other hosts need",
        description="Make and list the CURVE keys that authenticate and encrypt the bus "
        "between the coordinator and agents on other hosts.",
    )
    actions = parser.add_subparsers(dest="keys_action", metavar="ACTION", required=True)
    init = actions.add_parser(
        "init",
        help="make the coordinator's key pair and one per agent",
        description="Make the coordinator's key pair (kept if present) and a key pair per "
        "agent NAME (kept if present), refresh what each agent's host needs in "
        "DIR/agents/NAME/, and print the commands that copy each bundle to its host and "
        "start the agent there. A key's role is the one kind of agent it may register as: "
        "ROLE:NAME gives it (ROLE: peer, storage or tracker); a bare NAME takes the role its "
        "name implies (storage or storage-*: storage agent; tracker or tracker-*: tracker "
        "agent; anything else: peer agent).",
    )
    init.add_argument(
        "--dir",
        metavar="DIR",
        help=f"keys folder (default: the config's [security] keys_dir, else {default_keys_dir()})",
    )
    init.add_argument(
        "--config",
        metavar="FILE",
        help="the coordinator's config, for the endpoints in the printed agent commands "
        f"(default: {default_config_file()})",
    )
    init.add_argument(
        "names", nargs="*", metavar="[ROLE:]NAME", help="agent ids (--agent-id), with a role"
    )
    init.set_defaults(handler=run_init)
    listing = actions.add_parser("list", help="show the coordinator's and the agents' keys")
    listing.add_argument("--dir", metavar="DIR", help="keys folder")
    listing.set_defaults(handler=run_list)


@dataclass(frozen=True, slots=True)
class AgentKey:
    """One agent named on the command line: its name, its key's role, whether it is new."""

    name: str
    role: ServiceKind
    new: bool


@dataclass(frozen=True, slots=True)
class KeysReport:
    """What ``init_keys`` did: the folder, whether the coordinator's pair is new, and the
    agents named, in order."""

    folder: Path
    coordinator_new: bool
    agents: tuple[AgentKey, ...]

    @property
    def new_agents(self) -> tuple[str, ...]:
        """The agents whose pair is new."""
        return tuple(agent.name for agent in self.agents if agent.new)

    @property
    def kept_agents(self) -> tuple[str, ...]:
        """The agents whose pair was kept."""
        return tuple(agent.name for agent in self.agents if not agent.new)


def run_init(args: argparse.Namespace) -> int:
    """``keys init``: make the keys and print what to do with them."""
    config_path = Path(args.config) if args.config else default_config_file()
    try:
        config = load_config_file(args.config)
        folder = _keys_folder(args.dir, config)
        report = init_keys(folder, args.names)
    except (TorvizError, OSError) as exc:
        return _fail(exc)
    print(_instructions(report, config, config_path), end="")
    return 0


def _keys_folder(given: str | None, config: Config) -> Path:
    """``--dir``, else the config's ``[security] keys_dir``, else the default folder."""
    chosen = given or config.security.keys_dir
    return Path(chosen).expanduser().absolute() if chosen else default_keys_dir()


def run_list(args: argparse.Namespace) -> int:
    """``keys list``: names, roles and public keys of the coordinator and the agents."""
    from torviz.shared.runtime.curve import COORDINATOR_KEY, authorized_keys, load_public_key

    folder = Path(args.dir).expanduser() if args.dir else default_keys_dir()
    try:
        if not folder.is_dir():
            raise ConfigError(
                "missing_keys_dir",
                f"no keys folder at {folder}: make one with `torviz-coordinator keys init`",
            )
        coordinator = load_public_key(folder, COORDINATOR_KEY)
        agents = sorted(
            (entry.name, entry.role.value, key) for key, entry in authorized_keys(folder).items()
        )
    except (TorvizError, OSError) as exc:
        return _fail(exc)
    print(f"keys folder: {folder}")
    print(f"{COORDINATOR_KEY:<20} {ServiceKind.COORDINATOR.value:<14} {coordinator.decode()}")
    for name, role, key in agents:
        print(f"{name:<20} {role:<14} {key.decode()}")
    return 0


def _fail(exc: TorvizError | OSError) -> int:
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        line = f"{where}{exc.strerror or exc}"
    else:
        line = str(exc)
    print(f"torviz: error: {line}", file=sys.stderr)
    return EXIT_ERROR


def parse_agent_names(names: list[str]) -> dict[str, ServiceKind | None]:
    """Agent name -> the role given with it (``ROLE:NAME``), or ``None`` for a bare ``NAME``;
    in the order given, each name once.

    Raises:
        ConfigError: ``bad_key_role`` (a role other than peer, storage or tracker, or one
            name given two different roles), ``bad_key_name``, ``reserved_key_name``.
    """
    from torviz.shared.runtime.curve import COORDINATOR_KEY, check_key_name

    agents: dict[str, ServiceKind | None] = {}
    for given in names:
        short, colon, name = given.rpartition(":")
        role = None
        if colon:
            role = _ROLES.get(short)
            if role is None:
                raise ConfigError(
                    "bad_key_role",
                    f"bad role {short[:20]!r} in {given[:90]!r}: use peer, storage or tracker "
                    "(as in storage:NAME)",
                )
        check_key_name(name)
        if name == COORDINATOR_KEY:
            raise ConfigError(
                "reserved_key_name",
                f"{COORDINATOR_KEY!r} is the coordinator's own key: choose another agent name",
            )
        before = agents.get(name)
        if role is not None and before is not None and before != role:
            raise ConfigError(
                "bad_key_role",
                f"agent {name} is given two roles, {_SHORT[before]} and {_SHORT[role]}",
            )
        agents[name] = role if role is not None else before
    return agents


def init_keys(folder: Path, names: list[str]) -> KeysReport:
    """Make the coordinator's pair and one per agent in ``folder``; refresh every bundle.

    Args:
        folder: the keys folder (made if missing).
        names: ``NAME`` or ``ROLE:NAME`` (see ``parse_agent_names``); existing ones keep
            their pair and role.

    Raises:
        ConfigError: a bad or reserved agent name, a bad role; ``role_conflict`` when an
            existing key has another role than the one given; an existing key file that is
            invalid; ``orphan_public_key`` when ``coordinator.key`` exists without its secret.
        OSError: the folder cannot be written.
    """
    from torviz.shared.runtime.curve import AUTHORIZED_DIR, read_key_role, role_of_name

    wanted = parse_agent_names(names)
    authorized = folder / AUTHORIZED_DIR
    plan: list[AgentKey] = []
    for name, given in wanted.items():
        path = authorized / f"{name}.key"
        if path.exists():
            role = read_key_role(path, name)
            if given is not None and given != role:
                raise _role_conflict(folder, name, role, given)
            plan.append(AgentKey(name, role, new=False))
        else:
            plan.append(AgentKey(name, given or role_of_name(name), new=True))
    _make_private_dir(folder)
    _make_private_dir(authorized)
    _make_private_dir(folder / _AGENTS)
    coordinator_new = _ensure_coordinator(folder)
    for agent in plan:
        if agent.new:
            _new_agent(folder, agent.name, agent.role)
    _refresh_bundles(folder)
    return KeysReport(folder, coordinator_new, tuple(plan))


def _role_conflict(folder: Path, name: str, role: ServiceKind, given: ServiceKind) -> ConfigError:
    from torviz.shared.runtime.curve import AUTHORIZED_DIR

    return ConfigError(
        "role_conflict",
        f"agent {name} already has a {_SHORT.get(role, role.value)} agent's key, not a "
        f"{_SHORT[given]} agent's: a key keeps its role; for a new key remove "
        f"{folder / AUTHORIZED_DIR / name}.key and {folder / _AGENTS / name}/ first",
    )


def _make_private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def _ensure_coordinator(folder: Path) -> bool:
    """Keep a valid coordinator pair, or make one; returns whether it is new."""
    from torviz.shared.runtime.curve import COORDINATOR_KEY, load_keypair

    secret = folder / f"{COORDINATOR_KEY}.key_secret"
    public = folder / f"{COORDINATOR_KEY}.key"
    if secret.exists():
        keys = load_keypair(folder, COORDINATOR_KEY)  # checks the kept pair
        if not public.exists():
            _write_public(public, keys.public)
        return False
    if public.exists():
        raise ConfigError(
            "orphan_public_key",
            f"{public} exists without {secret.name}: restore the secret key, or remove "
            f"{public.name} to make a new pair (every agent then needs the new one)",
        )
    with _pair(folder, COORDINATOR_KEY, None) as (new_public, new_secret):
        os.replace(new_secret, secret)
        os.replace(new_public, public)
    return True


def _new_agent(folder: Path, name: str, role: ServiceKind) -> None:
    from torviz.shared.runtime.curve import AUTHORIZED_DIR

    bundle = folder / _AGENTS / name
    _make_private_dir(bundle)
    with _pair(folder, name, role) as (public, secret):
        shutil.copyfile(public, bundle / f"{name}.key")
        os.replace(secret, bundle / f"{name}.key_secret")
        os.replace(public, folder / AUTHORIZED_DIR / f"{name}.key")  # last: the agent exists


@contextlib.contextmanager
def _pair(folder: Path, name: str, role: ServiceKind | None) -> Iterator[tuple[Path, Path]]:
    """A fresh pair in a private temporary folder inside ``folder``: (public, secret) paths,
    both with ``role`` in their metadata (pyzmq writes metadata in the secret file only)."""
    import zmq.auth

    from torviz.shared.runtime.curve import ROLE_METADATA

    metadata = {ROLE_METADATA: role.value} if role is not None else None
    with tempfile.TemporaryDirectory(prefix=".keys-", dir=folder) as tmp:  # mode 0700
        public, secret = zmq.auth.create_certificates(tmp, name, metadata=metadata)
        key, _ = zmq.auth.load_certificate(public)
        _write_public(Path(public), key, role)
        os.chmod(secret, 0o600)
        yield Path(public), Path(secret)


def _write_public(path: Path, key: bytes, role: ServiceKind | None = None) -> None:
    """Write a public key file atomically, in the format ``zmq.auth.load_certificate`` reads,
    with ``role`` in its metadata."""
    from torviz.shared.runtime.curve import ROLE_METADATA

    staged = path.parent / f".{path.name}.tmp"
    metadata = f'    {ROLE_METADATA} = "{role.value}"\n' if role is not None else ""
    text = (
        f"#   ZeroMQ CURVE Public Certificate\nmetadata\n{metadata}curve\n"
        f'    public-key = "{key.decode()}"\n'
    )
    staged.write_text(text, encoding="utf-8")
    os.chmod(staged, 0o644)
    os.replace(staged, path)


def _copy_public(source: Path, dest: Path) -> None:
    """Copy a (checked) public key file atomically."""
    staged = dest.parent / f".{dest.name}.tmp"
    shutil.copyfile(source, staged)
    os.chmod(staged, 0o644)
    os.replace(staged, dest)


def _refresh_bundles(folder: Path) -> None:
    """Give every bundle the current coordinator key and every authorized key."""
    from torviz.shared.runtime.curve import (
        AUTHORIZED_DIR,
        COORDINATOR_KEY,
        MAX_AUTHORIZED,
        check_key_name,
        load_authorized_dir,
        load_public_key,
    )

    load_public_key(folder, COORDINATOR_KEY)  # checked before it is copied anywhere
    sources = {
        f"{entry.name}.key": folder / AUTHORIZED_DIR / f"{entry.name}.key"
        for entry in load_authorized_dir(folder / AUTHORIZED_DIR).values()
    }
    sources[f"{COORDINATOR_KEY}.key"] = folder / f"{COORDINATOR_KEY}.key"
    bundles = sorted(path for path in (folder / _AGENTS).iterdir() if path.is_dir())
    for bundle in bundles[:MAX_AUTHORIZED]:
        try:
            check_key_name(bundle.name)
        except ConfigError:
            continue  # not a bundle of ours
        _copy_public(folder / f"{COORDINATOR_KEY}.key", bundle / f"{COORDINATOR_KEY}.key")
        target = bundle / AUTHORIZED_DIR
        _make_private_dir(target)
        for file_name, source in sources.items():
            _copy_public(source, target / file_name)
        for stale in target.glob("*.key"):
            if stale.name not in sources:
                stale.unlink()


def copy_command(folder: Path, name: str) -> str:
    """The shell command, run on the coordinator's host, that copies agent ``name``'s bundle
    to ``HOST`` (a placeholder: the agent host's ssh name) into ``AGENT_KEYS_DIR``, readable by
    the user the units run as, and makes sure ``AGENT_CONFIG`` exists there. Needs only tar and
    ssh on both hosts, and no folder made beforehand."""
    remote = (
        f"install -d -m 0700 {AGENT_KEYS_DIR} && tar -C {AGENT_KEYS_DIR} -xf - && "
        f"chown -R {_AGENT_USER}:{_AGENT_USER} {AGENT_KEYS_DIR.rsplit('/', 1)[0]} && "
        f"touch {AGENT_CONFIG}"
    )
    source = shlex.quote(str(folder / _AGENTS))
    return f"tar -C {source} -cf - {name} | ssh HOST {shlex.quote(remote)}"


def agent_commands(
    config: Config, agents: tuple[AgentKey, ...], where: str = "the config"
) -> tuple[dict[str, str], list[str]]:
    """The command that starts each agent on its host, and notes on what the config lacks.

    Args:
        config: the coordinator's config (its bus endpoint, the storage agent's data
            endpoint).
        agents: the agents to start.
        where: names the config in the notes (its path).

    Returns:
        (commands, notes): agent name -> the command that starts it, for every agent whose
        command can run as printed; and one line per missing setting (no command is given
        for an agent that would fail).
    """
    from torviz.shared.endpoints import parse_endpoint

    bus = config.coordinator.bus
    parts = parse_endpoint(bus) if bus else None
    if parts is None or parts.scheme != "tcp":
        return {}, [
            f"no agent commands: {where} has no tcp bus endpoint, so agents on other hosts "
            'cannot reach the coordinator: set [coordinator] bus = "tcp://ADDRESS:7700" '
            "(ADDRESS: this host's address) and embedded_agents = false, then run keys init "
            "again"
        ]
    if parts.host in ("*", "0.0.0.0", "::") or parts.port == "*":
        return {}, [
            f"no agent commands: the bus endpoint {bus} names no address agents can dial: set "
            '[coordinator] bus = "tcp://ADDRESS:7700" (ADDRESS: this host\'s address), then '
            "run keys init again"
        ]
    commands: dict[str, str] = {}
    notes: list[str] = []
    if parts.host == "localhost" or parts.host.startswith("127.") or parts.host == "::1":
        notes.append(f"the bus endpoint {bus} is loopback: only agents on this host reach it")
    data = config.storage_agent.data
    for agent in agents:
        argv = [
            _PROGRAMS[agent.role],
            *("--coordinator", bus, "--agent-id", agent.name),
            *("--keys", f"{AGENT_KEYS_DIR}/{agent.name}", "--config", AGENT_CONFIG),
        ]
        if agent.role == ServiceKind.STORAGE_AGENT:
            if not data:
                notes.append(
                    f"no command for the storage agent {agent.name}: {where} has no "
                    '[storage_agent] data endpoint: set data = "tcp://ADDRESS:7701" (where '
                    "peer agents on other hosts reach it), then run keys init again"
                )
                continue
            argv += ["--data", data, "--state-dir", STORAGE_STATE_DIR]
        commands[agent.name] = shlex.join(argv)
    return commands, notes


def _instructions(report: KeysReport, config: Config, config_path: Path) -> str:
    """What to do next, for a person: short, and every command runs as printed."""
    from torviz.shared.runtime.curve import COORDINATOR_KEY

    folder = report.folder
    state = "made" if report.coordinator_new else "kept"
    lines = [
        f"coordinator key pair {state}: {folder / COORDINATOR_KEY}.key (public), "
        f"{COORDINATOR_KEY}.key_secret (private, stays here)",
        "put in the coordinator's config:",
        "  [security]",
        f"  keys_dir = {json.dumps(str(folder))}",
        "a tcp control endpoint then admits only this pair: the CLI of the daemon's user "
        "finds it (or give --keys)",
    ]
    if not report.agents:
        return "\n".join(lines) + "\n"
    commands, notes = agent_commands(config, report.agents, str(config_path))
    home = AGENT_KEYS_DIR.rsplit("/", 1)[0]
    lines.append(
        "for each agent below: the first command, run here, copies its bundle to its host HOST "
        f"(skip it on this host when this folder is {home}); the second, run on HOST as root, "
        f"starts it with the endpoints of {config_path} (its systemd unit runs the same)"
    )
    for agent in report.agents:
        kind = "key made" if agent.new else "key kept, bundle refreshed"
        lines.append(f"agent {agent.name} ({_SHORT[agent.role]} agent, {kind}):")
        lines.append(f"  {copy_command(folder, agent.name)}")
        if agent.name in commands:
            lines.append(f"  {commands[agent.name]}")
    lines += notes
    if report.new_agents:
        lines.append(
            "a storage agent admits the agents in its authorized/: after adding agents, "
            "copy its bundle again"
        )
    return "\n".join(lines) + "\n"
