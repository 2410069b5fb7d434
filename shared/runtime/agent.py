"""What every agent's entry point shares: its command line, its config, and the parent watchdog.

An agent is started as::

    torviz-<kind> --bus ENDPOINT [--config FILE] [--agent-id ID] [--parent-pid PID]
                  [--log-level LEVEL] [agent-specific options]

``run_agent`` sets up logging, starts the service runner with the agent's actors, and, when
``--parent-pid`` is given (the embedded mode, where the coordinator starts its agents as child
processes), stops the agent as soon as that process is gone, so no agent outlives its
coordinator even when the coordinator is killed with SIGKILL.

The caller must have run ``gevent.monkey.patch_all()`` before importing this module.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gevent

from shared.config import Config, parse_config
from shared.errors import ConfigError

from .logging import setup_logging
from .service import ActorFactory, ServiceRunner

__all__ = ["AgentOptions", "parse_agent_args", "run_agent", "watch_parent"]


@dataclass(frozen=True, slots=True)
class AgentOptions:
    service: str
    """The service name: ``tracker_agent``, ``peer_agent`` or ``storage_agent``."""
    bus: str
    """The coordinator's bus endpoint."""
    agent_id: str
    """Unique among agents of this kind; also the DEALER routing id."""
    config: Config
    parent_pid: int | None
    log_level: str
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
    parser = argparse.ArgumentParser(prog=f"torviz-{service.replace('_', '-')}")
    parser.add_argument("--bus", required=True, help="the coordinator's bus endpoint")
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--agent-id", help="unique name of this agent (default: kind-host-pid)")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    parser.add_argument("--log-level", default="INFO")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    config = Config()
    if args.config:
        try:
            with open(args.config, encoding="utf-8") as handle:
                config = parse_config(handle.read())
        except (OSError, ConfigError) as exc:
            parser.exit(2, f"torviz: error: config {args.config}: {exc}\n")
    agent_id = args.agent_id or f"{service}-{socket.gethostname()}-{os.getpid()}"
    known = {"bus", "config", "agent_id", "parent_pid", "log_level"}
    extra = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in known})
    return AgentOptions(
        service=service,
        bus=args.bus,
        agent_id=agent_id,
        config=config,
        parent_pid=args.parent_pid,
        log_level=args.log_level,
        extra=extra,
    )


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
    setup_logging(options.service, options.log_level, agent_id=options.agent_id)
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
