"""Entry point of ``torviz-storage-agent``: the storage agent's composition root.

gevent patches the process first, before pykka or zmq are imported (see
``shared.runtime.service``); then the command line and config are read and one actor runs until
``Shutdown``, a signal, the coordinator refusing it, or the parent process going away.

Keys: with ``[security] keys_dir`` (or ``--keys``) the link to the coordinator and the data
endpoint use CURVE when they are tcp; without keys both must be ipc (a tcp port, loopback
included, is open to every local user), and an ipc data socket is bound 0600 in a folder only
this user may enter. A missing key, a tcp endpoint without keys, or an ipc data endpoint in a
folder others may enter, prints one line and exits with status 2.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from torviz.shared.errors import ConfigError  # noqa: E402
from torviz.shared.runtime.agent import AgentOptions, parse_agent_args, run_agent  # noqa: E402
from torviz.shared.runtime.curve import client_security, server_security  # noqa: E402
from torviz.shared.runtime.service import ActorFactory, ServiceRunner  # noqa: E402

from .agent import StorageAgent  # noqa: E402
from .settings import AgentSettings  # noqa: E402

__all__ = ["main", "settings_from"]

_SERVICE = "storage_agent"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        metavar="ENDPOINT",
        help="endpoint to bind for peer agents (overrides [storage_agent] data)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep resume state in DIR/resume.sqlite (default: none; every open checks the files)",
    )


def settings_from(options: AgentOptions) -> AgentSettings:
    """The agent's settings from its command line and its config section.

    Raises:
        ConfigError: no data endpoint anywhere, an unusable ``hash_threads`` or
            ``flush_interval``, a malformed endpoint, a key file that is missing or broken, a
            tcp endpoint without keys (``needs_keys``), or an ipc data endpoint in a folder
            others may enter (``ipc_folder_not_private``).
    """
    section = options.config.storage_agent
    data = options.extra.data or section.data
    if not data:
        raise ConfigError(
            "no_data_endpoint",
            "no data endpoint: pass --data ENDPOINT or set [storage_agent] data in the config",
        )
    if section.hash_threads < 1:
        raise ConfigError(
            "bad_value",
            f"storage_agent.hash_threads must be at least 1, not {section.hash_threads}",
        )
    if not section.flush_interval > 0:
        raise ConfigError(
            "bad_value",
            f"storage_agent.flush_interval must be a positive number of seconds, "
            f"not {section.flush_interval}",
        )
    security = options.config.security
    return AgentSettings(
        agent_id=options.agent_id,
        bus=options.bus,
        data=data,
        bus_curve=client_security(options.bus, security, options.agent_id),
        data_curve=server_security(data, security, options.agent_id),
        heartbeat_misses=options.config.coordinator.heartbeat_misses,
        preallocate=section.preallocate,
        hash_threads=section.hash_threads,
        state_dir=options.extra.state_dir,
        flush_interval=section.flush_interval,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the storage agent; exits with its status (2 for a bad command line or config)."""
    options = parse_agent_args(_SERVICE, argv, _add_arguments)
    try:
        settings = settings_from(options)
    except ConfigError as exc:
        print(f"torviz-storage-agent: error: {exc}", file=sys.stderr)
        sys.exit(2)

    def factories(runner: ServiceRunner) -> list[ActorFactory]:
        return [lambda: StorageAgent.start(settings, runner)]

    sys.exit(run_agent(options, factories))


if __name__ == "__main__":
    main()
