"""Entry point of ``torviz-peer-agent``, the composition root of the peer agent.

gevent patches the standard library before anything else is imported, so pykka's actors and
every socket are green. Then the common agent command line is parsed (plus
``--max-connections``), the CURVE keys, ``advertise_host`` and the web seeds' CA file are
checked (a missing key, a name that does not resolve or a CA file that is no PEM prints one
line and exits 2, before any actor starts), and the
runner starts the one ``PeerAgent`` actor; it starts a ``PeerConnection`` actor per peer
itself.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import sys  # noqa: E402

from torviz.shared.errors import ConfigError  # noqa: E402
from torviz.shared.runtime.agent import AgentOptions, parse_agent_args, run_agent  # noqa: E402
from torviz.shared.runtime.curve import client_security, load_keypair  # noqa: E402
from torviz.shared.runtime.http import HttpClient, HttpError  # noqa: E402
from torviz.shared.runtime.service import ActorFactory, ServiceRunner  # noqa: E402

from .address import resolve_advertise_host  # noqa: E402
from .agent import PeerAgent  # noqa: E402
from .core.torrents import DEFAULT_MAX_CONNECTIONS  # noqa: E402
from .settings import AgentSettings  # noqa: E402

__all__ = ["main"]


_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
_KEEP_FREE_HEAP = 256 * 1024 * 1024


def _tune_allocator() -> None:
    """Let freed piece buffers be reused instead of going back to the kernel.

    Every piece is a fresh ``bytearray`` (ZeroMQ holds the previous ones until they are sent).
    With glibc's defaults a 1 MiB buffer is often mmapped or the heap top trimmed after it is
    freed, so the next one page-faults on every 4 KiB it touches: measured at ~13% of the
    session's time. Larger thresholds keep up to ``_KEEP_FREE_HEAP`` of freed heap for reuse.
    A no-op where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 64 * 1024 * 1024)
    mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE_HEAP)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-connections",
        type=int,
        default=DEFAULT_MAX_CONNECTIONS,
        help=f"peer connections held at once (default {DEFAULT_MAX_CONNECTIONS})",
    )


def _settings(options: AgentOptions) -> AgentSettings:
    """The agent's settings from its options, keys loaded and checked.

    Raises:
        ConfigError: a key file is missing or invalid, ``advertise_host`` is unusable, or
            ``web_seed_ca_file`` cannot be read as PEM certificates.
    """
    config = options.config
    if config.peer_agent.web_seed_ca_file:  # read once here, so a bad file stops us at start
        try:
            HttpClient(ca_file=config.peer_agent.web_seed_ca_file).close()
        except HttpError as exc:
            raise ConfigError(exc.reason, exc.message) from None
    security = config.security
    advertise = config.peer_agent.advertise_host
    return AgentSettings(
        agent_id=options.agent_id,
        bus_endpoint=options.bus,
        config=config.peer_agent,
        max_connections=max(1, options.extra.max_connections),
        heartbeat_misses=config.coordinator.heartbeat_misses,
        advertise_host=resolve_advertise_host(advertise) if advertise else "",
        curve=client_security(options.bus, security, options.agent_id),
        keys=(
            load_keypair(security.keys_dir, security.key_name or options.agent_id)
            if security.keys_dir
            else None
        ),
    )


def main() -> None:
    """Run the peer agent until ``Shutdown``, a signal, or the parent's death."""
    options = parse_agent_args("peer_agent", add_arguments=_add_arguments)
    try:
        settings = _settings(options)
    except ConfigError as exc:
        print(f"torviz-peer-agent: error: {exc}", file=sys.stderr)
        sys.exit(2)
    _tune_allocator()

    def factories(runner: ServiceRunner) -> list[ActorFactory]:
        return [lambda: PeerAgent.start(settings, runner.request_stop)]

    sys.exit(run_agent(options, factories))


if __name__ == "__main__":
    main()
