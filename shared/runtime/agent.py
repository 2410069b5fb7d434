"""What every agent's entry point shares: its command line, its config, and the parent watchdog.

An agent is started as::

    torviz-<kind> --coordinator ENDPOINT [--config FILE] [--agent-id ID] [--keys DIR]
                  [--key-name NAME] [--parent-pid PID] [--log-level LEVEL]
                  [--log-file FILE] [agent-specific options]

``--bus`` is an older spelling of ``--coordinator``, still accepted (and hidden in the help).
``--keys`` and ``--key-name`` override ``[security] keys_dir`` and ``key_name`` of the config
file, so one config can serve every host while each agent names its own key pair.

``run_agent`` sets up logging, starts the service runner with the agent's actors, and, when
``--parent-pid`` is given (the embedded mode, where the coordinator starts its agents as child
processes), stops the agent as soon as that process is gone, so no agent outlives its
coordinator even when the coordinator is killed with SIGKILL.

The caller must have run ``gevent.monkey.patch_all()`` before importing this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gevent

from torviz.shared.config import Config, parse_config
from torviz.shared.errors import ConfigError

from .logging import LOG_LEVELS, setup_logging
from .service import ActorFactory, ServiceRunner

__all__ = [
    "MAX_AGENT_ID",
    "AgentOptions",
    "agent_id_problem",
    "parse_agent_args",
    "run_agent",
    "watch_parent",
]

MAX_AGENT_ID = 200
"""Bytes of an agent id: with ``/`` and its process's incarnation it is the routing identity,
which ZeroMQ bounds at 255 bytes."""

_DESCRIPTIONS = {
    "tracker_agent": "The torviz tracker agent: finds peers for the coordinator's torrents "
    "through HTTP and UDP trackers and the DHT.",
    "peer_agent": "A torviz peer agent: holds peer connections for the coordinator (the peer "
    "wire protocol), fetching the pieces it is assigned and serving the blocks peers ask for.",
    "storage_agent": "The torviz storage agent: the one service that touches downloaded files; "
    "it verifies every piece, writes and reads them, and keeps the resume state.",
}
_EPILOG = (
    "Usually started by `torviz-coordinator start`; run it by hand to serve a coordinator on "
    "another host (deploy/README.md)."
)


@dataclass(frozen=True, slots=True)
class AgentOptions:
    service: str
    """The service name: ``tracker_agent``, ``peer_agent`` or ``storage_agent``."""
    bus: str
    """The coordinator's bus endpoint (``--coordinator``, or its older name ``--bus``)."""
    agent_id: str
    """Unique among agents of this kind; also the DEALER routing id."""
    config: Config
    """The loaded config, ``[security]`` overridden by ``--keys`` and ``--key-name``."""
    parent_pid: int | None
    log_level: str
    log_file: str | None
    """Append log lines to this file instead of stderr."""
    extra: argparse.Namespace
    """Values of the agent-specific options."""


def parse_agent_args(
    service: str,
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> AgentOptions:
    """Parse an agent's command line and load its config file.

    A bad option or config file prints one line and exits with status 2.
    """
    parser = argparse.ArgumentParser(
        prog=f"torviz-{service.replace('_', '-')}",
        description=_DESCRIPTIONS.get(service),
        epilog=_EPILOG,
    )
    parser.add_argument(
        "--coordinator", metavar="ENDPOINT", help="the coordinator's bus endpoint (required)"
    )
    parser.add_argument("--bus", help=argparse.SUPPRESS)  # the older name of --coordinator
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument(
        "--agent-id",
        help="unique name of this agent (default: KIND-HOST-PID; KEY_NAME-HOST-PID with a key)",
    )
    parser.add_argument(
        "--keys", metavar="DIR", help="folder of CURVE keys (overrides [security] keys_dir)"
    )
    parser.add_argument(
        "--key-name",
        metavar="NAME",
        help="this agent's key pair in the keys folder (overrides [security] key_name; "
        "default: the agent id)",
    )
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument(
        "--log-level",
        default="INFO",
        metavar="LEVEL",
        help=f"the least severe log lines to write: {LOG_LEVELS} (default: %(default)s)",
    )
    parser.add_argument(
        "--log-file", metavar="FILE", help="append log lines to FILE instead of stderr"
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.coordinator and args.bus and args.coordinator != args.bus:
        parser.error("--bus is another name for --coordinator: give one endpoint")
    endpoint = args.coordinator or args.bus
    if not endpoint:
        parser.error("the following arguments are required: --coordinator")
    config = Config()
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as handle:
                config = parse_config(handle.read())
        except (OSError, ConfigError) as exc:
            parser.exit(2, f"torviz: error: config {args.config}: {exc}\n")
    config = _override_security(config, args.keys, args.key_name)
    # A key shared by several agents (a scaled service) names them: the coordinator admits a
    # key's agents only under ids that start with its name (shared.bus.check_identity).
    prefix = config.security.key_name or service
    agent_id = args.agent_id or f"{prefix}-{socket.gethostname()}-{os.getpid()}"
    problem = agent_id_problem(agent_id)
    if problem:
        parser.error(f"--agent-id {agent_id[:40]!r}: {problem}")
    known = {
        *("coordinator", "bus", "config", "agent_id"),
        *("keys", "key_name", "parent_pid", "log_level", "log_file"),
    }
    extra = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in known})
    return AgentOptions(
        service=service,
        bus=endpoint,
        agent_id=agent_id,
        config=config,
        parent_pid=args.parent_pid,
        log_level=args.log_level,
        log_file=args.log_file,
        extra=extra,
    )


def agent_id_problem(agent_id: str) -> str:
    """Why ``agent_id`` cannot name an agent, or "" when it can.

    An agent id is at most ``MAX_AGENT_ID`` characters (UTF-8 bytes) and holds no ``/`` nor
    whitespace: ``<agent id>/<incarnation>`` is the routing identity of each of its processes,
    and ``<agent id>/<n>`` its peer keys.
    """
    if not agent_id:
        return "an agent id is not empty"
    if len(agent_id.encode()) > MAX_AGENT_ID:
        return f"an agent id is at most {MAX_AGENT_ID} bytes"
    if "/" in agent_id or any(char.isspace() for char in agent_id):
        return "an agent id holds no '/' and no spaces"
    return ""


def _override_security(config: Config, keys: str | None, key_name: str | None) -> Config:
    """The config with ``--keys`` / ``--key-name`` in ``[security]`` (the config is frozen)."""
    changes: dict[str, str] = {}
    if keys is not None:
        changes["keys_dir"] = keys
    if key_name is not None:
        changes["key_name"] = key_name
    if not changes:
        return config
    return dataclasses.replace(config, security=dataclasses.replace(config.security, **changes))


def watch_parent(
    pid: int, runner: ServiceRunner, interval: float = 0.5
) -> gevent.Greenlet[Any, Any]:
    """Stop ``runner`` once ``pid`` is no longer our parent (it died and we were re-parented)."""

    def watch() -> None:
        while os.getppid() == pid:
            gevent.sleep(interval)
        runner.request_stop(0, "parent process gone")

    return gevent.spawn(watch)


def run_agent(
    options: AgentOptions, factories: Callable[[ServiceRunner], Sequence[ActorFactory]]
) -> int:
    """Run an agent until it is told to stop; returns the exit code.

    Args:
        options: from ``parse_agent_args``.
        factories: given the runner (so actors can call ``request_stop`` on ``Shutdown``),
            returns the actor factories in start order.
    """
    try:
        setup_logging(
            options.service, options.log_level, agent_id=options.agent_id, path=options.log_file
        )
    except ConfigError as exc:
        print(f"torviz: error: {exc}", file=sys.stderr)
        return 2
    runner = ServiceRunner(options.service)
    watchdog = None
    if options.parent_pid is not None:
        if os.getppid() != options.parent_pid:
            print(f"torviz: parent process {options.parent_pid} is gone", file=sys.stderr)
            return 1
        watchdog = watch_parent(options.parent_pid, runner)
    try:
        return runner.run(factories(runner))
    finally:
        if watchdog is not None:
            watchdog.kill(block=False)
