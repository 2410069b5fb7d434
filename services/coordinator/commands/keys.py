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

Rules:
- Folders are made 0700, secret files 0600; a pair is made in a private temporary folder and
  moved into place, the authorized public key last, so an interrupted run is simply re-run.
- Agent names are key names (``[A-Za-z0-9._-]{1,64}``, no leading dot); ``coordinator`` is
  taken. Everything is checked before anything is written.
- Errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shared.errors import ConfigError, TorvizError

__all__ = ["EXIT_ERROR", "KeysReport", "default_keys_dir", "init_keys", "register"]

EXIT_ERROR = 2
_AGENTS = "agents"
_AGENT_KEYS_DIR = "/etc/torviz/keys/agents"  # on every host, as in deploy/systemd


def default_keys_dir() -> Path:
    """``keys`` in the user config folder (next to ``config.toml``)."""
    from ..locations import default_config_file

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
        "agent NAME (kept if present), and refresh what each agent's host needs in "
        "DIR/agents/NAME/.",
    )
    init.add_argument("--dir", metavar="DIR", help=f"keys folder (default: {default_keys_dir()})")
    init.add_argument("names", nargs="*", metavar="NAME", help="agent ids (--agent-id)")
    init.set_defaults(handler=run_init)
    listing = actions.add_parser("list", help="show the coordinator's and the agents' keys")
    listing.add_argument("--dir", metavar="DIR", help="keys folder")
    listing.set_defaults(handler=run_list)


@dataclass(frozen=True, slots=True)
class KeysReport:
    """What ``init_keys`` did: the folder, whether the coordinator's pair is new, and the
    agents whose pair is new and those whose pair was kept."""

    folder: Path
    coordinator_new: bool
    new_agents: tuple[str, ...]
    kept_agents: tuple[str, ...]


def run_init(args: argparse.Namespace) -> int:
    """``keys init``: make the keys and print what to do with them."""
    folder = Path(args.dir).expanduser().absolute() if args.dir else default_keys_dir()
    try:
        report = init_keys(folder, args.names)
    except (TorvizError, OSError) as exc:
        return _fail(exc)
    print(_instructions(report), end="")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """``keys list``: names and public keys of the coordinator and the authorized agents."""
    from shared.runtime.curve import COORDINATOR_KEY, authorized_keys, load_public_key

    folder = Path(args.dir).expanduser() if args.dir else default_keys_dir()
    try:
        if not folder.is_dir():
            raise ConfigError(
                "missing_keys_dir",
                f"no keys folder at {folder}: make one with `torviz-coordinator keys init`",
            )
        coordinator = load_public_key(folder, COORDINATOR_KEY)
        agents = sorted((name, key) for key, name in authorized_keys(folder).items())
    except (TorvizError, OSError) as exc:
        return _fail(exc)
    print(f"keys folder: {folder}")
    print(f"{COORDINATOR_KEY:<20} {coordinator.decode()}")
    for name, key in agents:
        print(f"{name:<20} {key.decode()}")
    return 0


def _fail(exc: TorvizError | OSError) -> int:
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        line = f"{where}{exc.strerror or exc}"
    else:
        line = str(exc)
    print(f"torviz: error: {line}", file=sys.stderr)
    return EXIT_ERROR


def init_keys(folder: Path, names: list[str]) -> KeysReport:
    """Make the coordinator's pair and one per agent in ``folder``; refresh every bundle.

    Args:
        folder: the keys folder (made if missing).
        names: agent ids; existing ones keep their pair.

    Raises:
        ConfigError: a bad or reserved agent name; an existing key file that is invalid;
            ``orphan_public_key`` when ``coordinator.key`` exists without its secret.
        OSError: the folder cannot be written.
    """
    from shared.runtime.curve import AUTHORIZED_DIR, COORDINATOR_KEY, check_key_name

    agents = list(dict.fromkeys(check_key_name(name) for name in names))
    if COORDINATOR_KEY in agents:
        raise ConfigError(
            "reserved_key_name",
            f"{COORDINATOR_KEY!r} is the coordinator's own key: choose another agent name",
        )
    _make_private_dir(folder)
    authorized = folder / AUTHORIZED_DIR
    _make_private_dir(authorized)
    _make_private_dir(folder / _AGENTS)
    coordinator_new = _ensure_coordinator(folder)
    new: list[str] = []
    kept: list[str] = []
    for name in agents:
        if (authorized / f"{name}.key").exists():
            kept.append(name)
            continue
        _new_agent(folder, name)
        new.append(name)
    _refresh_bundles(folder)
    return KeysReport(folder, coordinator_new, tuple(new), tuple(kept))


def _make_private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True)
        os.chmod(path, 0o700)  # mkdir's mode is masked by the umask


def _ensure_coordinator(folder: Path) -> bool:
    """Keep a valid coordinator pair, or make one; returns whether it is new."""
    from shared.runtime.curve import COORDINATOR_KEY, load_keypair

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
    with _pair(folder, COORDINATOR_KEY) as (new_public, new_secret):
        os.replace(new_secret, secret)
        os.replace(new_public, public)
    return True


def _new_agent(folder: Path, name: str) -> None:
    from shared.runtime.curve import AUTHORIZED_DIR

    bundle = folder / _AGENTS / name
    _make_private_dir(bundle)
    with _pair(folder, name) as (public, secret):
        shutil.copyfile(public, bundle / f"{name}.key")
        os.replace(secret, bundle / f"{name}.key_secret")
        os.replace(public, folder / AUTHORIZED_DIR / f"{name}.key")  # last: the agent exists


@contextlib.contextmanager
def _pair(folder: Path, name: str) -> Iterator[tuple[Path, Path]]:
    """A fresh pair in a private temporary folder inside ``folder``: (public, secret) paths."""
    import zmq.auth

    with tempfile.TemporaryDirectory(prefix=".keys-", dir=folder) as tmp:  # mode 0700
        public, secret = zmq.auth.create_certificates(tmp, name)
        os.chmod(secret, 0o600)
        os.chmod(public, 0o644)
        yield Path(public), Path(secret)


def _write_public(path: Path, key: bytes) -> None:
    """Write a public key file atomically, in the format ``zmq.auth.load_certificate`` reads."""
    staged = path.parent / f".{path.name}.tmp"
    text = (
        f'#   ZeroMQ CURVE Public Certificate\nmetadata\ncurve\n    public-key = "{key.decode()}"\n'
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
    from shared.runtime.curve import (
        AUTHORIZED_DIR,
        COORDINATOR_KEY,
        MAX_AUTHORIZED,
        check_key_name,
        load_authorized_dir,
        load_public_key,
    )

    load_public_key(folder, COORDINATOR_KEY)  # checked before it is copied anywhere
    sources = {
        f"{name}.key": folder / AUTHORIZED_DIR / f"{name}.key"
        for name in load_authorized_dir(folder / AUTHORIZED_DIR).values()
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


def _instructions(report: KeysReport) -> str:
    """What to do next, for a person: short."""
    from shared.runtime.curve import COORDINATOR_KEY

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
    for name in report.kept_agents:
        lines.append(f"agent {name}: key kept; {folder / _AGENTS / name}/ refreshed")
    for name in report.new_agents:
        bundle = folder / _AGENTS / name
        lines += [
            f"agent {name}: copy {bundle}/ to its host, e.g.",
            f"  rsync -a {bundle}/ HOST:{_AGENT_KEYS_DIR}/{name}/",
            "  and run there:",
            f"  torviz-<kind>-agent --coordinator tcp://COORDINATOR:PORT --agent-id {name} "
            f"--keys {_AGENT_KEYS_DIR}/{name}",
        ]
    if report.new_agents:
        lines.append(
            "a storage agent admits the agents in its authorized/: after adding agents, "
            "copy its bundle again"
        )
    return "\n".join(lines) + "\n"
