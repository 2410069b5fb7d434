"""Entry point of ``torviz-tracker-agent``: the composition root of the tracker agent.

gevent patches the standard library before anything else is imported (pykka's registry lock
and every socket must be cooperative), then the common agent command line is parsed and the
one actor, ``TrackerAgent``, runs until ``Shutdown``, a signal, or the parent's death.

Agent-specific options: ``--announce-to-all-tiers`` announces to one tracker of every tier
instead of falling through the tiers (BEP 12); the config key ``[tracker_agent]
announce_to_all_tiers = true`` does the same (either one turns it on). ``--state-dir DIR``
keeps the DHT's routing table in ``DIR/dht.dat`` (the daemon passes its state directory).

With ``[tracker_agent] dht`` on (the default) the DHT's UDP socket is bound before the actor
starts: a taken ``dht_port`` prints one line and exits with status 2.

With ``[security] keys_dir`` (or ``--keys``) a tcp link to the coordinator is encrypted with
CURVE; a missing or broken key file, or an ``[tracker_agent] advertise_host`` that is a
wildcard or does not resolve, prints one line and exits with status 2.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from torviz.shared.config import Config  # noqa: E402
from torviz.shared.errors import ConfigError  # noqa: E402
from torviz.shared.runtime.address import resolve_host  # noqa: E402
from torviz.shared.runtime.agent import parse_agent_args, run_agent  # noqa: E402
from torviz.shared.runtime.curve import client_security  # noqa: E402
from torviz.shared.runtime.http import HttpError  # noqa: E402
from torviz.shared.runtime.service import ActorFactory, ServiceRunner  # noqa: E402

from .agent import ADVERTISE_KEY, TrackerAgent  # noqa: E402
from .dht_service import DhtService, state_file_for  # noqa: E402
from .http_client import tracker_client  # noqa: E402

SERVICE = "tracker_agent"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--announce-to-all-tiers",
        action="store_true",
        help="announce to one tracker of every tier, not only the first tier that answers",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the DHT's routing table in DIR/dht.dat (default: [tracker_agent] dht_state, "
        "else not kept)",
    )


def _dht_service(config: Config, state_dir: str | None) -> DhtService | None:
    """The DHT node with its socket bound, or None when ``[tracker_agent] dht`` is off.

    Raises:
        ConfigError: its port is taken.
    """
    section = config.tracker_agent
    if not section.dht:
        return None
    service = DhtService(
        section,
        ports=config.peer_agent.listen_ports,
        state_file=state_file_for(section, state_dir),
    )
    service.bind()
    return service


def main(argv: Sequence[str] | None = None) -> None:
    """Run the tracker agent; exits with the runner's exit code."""
    options = parse_agent_args(SERVICE, argv, _add_arguments)
    all_tiers = bool(options.extra.announce_to_all_tiers)
    try:
        curve = client_security(options.bus, options.config.security, options.agent_id)
        advertise = options.config.tracker_agent.advertise_host
        advertise_host = resolve_host(advertise, ADVERTISE_KEY) if advertise else ""
        dht = _dht_service(options.config, options.extra.state_dir)
        section = options.config.tracker_agent
        http = tracker_client(ca_file=section.ca_file, source_address=section.bind_address or None)
    except (ConfigError, HttpError) as exc:
        print(f"torviz-tracker-agent: error: {exc}", file=sys.stderr)
        sys.exit(2)

    def factories(runner: ServiceRunner) -> list[ActorFactory]:
        return [
            lambda: TrackerAgent.start(
                options,
                runner,
                announce_to_all_tiers=all_tiers,
                curve=curve,
                advertise_host=advertise_host,
                dht=dht,
                http=http,
            )
        ]

    sys.exit(run_agent(options, factories))


if __name__ == "__main__":
    main()
