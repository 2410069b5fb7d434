"""The tracker agent's DHT node (BEP 5, BEP 32): a UDP socket per address family and the
greenlets around the sans-IO ``DhtNode`` of ``shared/dht``.

Strategy: ``DhtService`` binds the sockets and builds the node from the saved table when there
is one. The IPv4 socket is on ``[tracker_agent] bind_address`` (any address when empty) and
``dht_port``; the IPv6 one on ``dht_bind6``, the same port, IPv6 only (``IPV6_V6ONLY``), so
the node keeps an IPv6 table beside the IPv4 one (BEP 32). A ``bind_address`` that is an IPv6
address gives one IPv6 socket there and no IPv4 table. Per socket a receiver (each datagram
into ``DhtNode.receive`` with its source) and a sender run; besides them a timer
(``DhtNode.tick`` every ``TICK`` seconds, the status report, the table saved every
``SAVE_INTERVAL``) and a resolver (bootstrap host names, the only DNS the DHT does). After
every call into the node, ``_flush`` queues what it wants sent for the sender of the
destination's family and turns its events into bus messages, handed to ``emit`` (the actor
sends them on the bus).

Rules:
- Only greenlets of this process touch the node, and no call into it yields, so its calls
  never interleave. Each socket is read by its receiver and written by its sender only (one
  greenlet waiting per direction, as gevent requires); at most ``SEND_QUEUE`` datagrams wait
  per socket, more are dropped.
- The IPv6 socket is optional: when it cannot be bound (a host without IPv6, the port taken
  there) the node runs IPv4 only, said in one INFO line. The IPv4 socket (or the one of an
  IPv6 ``bind_address``) is not: a taken port stops the agent with one line.
- A private torrent (BEP 27) is never given to the node; ``TrackTorrent.dht_nodes`` (the
  .torrent's ``nodes``) and ``DhtNodeSeen`` (a peer's ``PORT``) are bootstrap candidates.
- A send error (no route, a full buffer) drops that datagram; a bug in the node drops the
  datagram or tick that raised it, logged, never the agent.
- Local-only mode (``core/dht_rules.py``): public bootstrap entries are skipped and no
  datagram goes to a public address, of either family.
- The table is saved to ``state_file`` (when there is one) every ``SAVE_INTERVAL`` and at
  ``close``, written to a temporary file and renamed, so a crash leaves the old one whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket as stdlib_socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import gevent.socket

from torviz.shared.bus import HostPort, Message, TrackTorrent
from torviz.shared.config import TrackerAgentConfig, split_host_port
from torviz.shared.dht.node import AnnounceDone, DhtConfig, DhtNode, ExternalAddress, PeersFound
from torviz.shared.errors import ConfigError
from torviz.shared.types import InfoHash, PeerAddress

from .core.dht_rules import (
    LOCAL_ONLY_ENV,
    StatusReports,
    is_local_host,
    peers_discovered,
    public_entries,
)

NodeFactory = Callable[[DhtConfig, bytes | None, float, random.Random], DhtNode]
"""Builds the node from its config, the saved table (None: none), the time and the
randomness."""


def default_node_factory(
    config: DhtConfig, saved: bytes | None, now: float, rng: random.Random
) -> DhtNode:
    """The node of ``shared.dht`` (a random id unless the saved table has one)."""
    return DhtNode(config, None, now, rng, saved=saved)


__all__ = [
    "MAX_DATAGRAM",
    "SAVE_INTERVAL",
    "TICK",
    "DhtService",
    "NodeFactory",
    "default_node_factory",
    "local_only",
    "state_file_for",
]

log = logging.getLogger(__name__)

MAX_DATAGRAM = 4096
"""Bytes read per datagram; KRPC packets are well under 1,500."""
TICK = 1.0
"""Seconds at most between two ticks of the node (it is ticked sooner when its next deadline,
a query timeout or a due search, is sooner)."""
SAVE_INTERVAL = 300.0
"""Seconds between two saves of the table."""
RESOLVE_TIMEOUT = 10.0
"""Seconds a bootstrap name may take to resolve."""
REBOOTSTRAP_INTERVAL = 300.0
"""Seconds between two resolutions of the configured list while the table is empty (the node
itself bootstraps again from what was resolved, backing off)."""
SEND_QUEUE = 4096
"""Datagrams waiting for the sender at most."""
STATE_FILE_NAME = "dht.dat"


def local_only() -> bool:
    """Whether the environment restricts the DHT to local addresses (the test suite's guard)."""
    return os.environ.get(LOCAL_ONLY_ENV, "") == "1"


def state_file_for(config: TrackerAgentConfig, state_dir: str | None) -> Path | None:
    """Where the table is kept: ``dht_state``, else ``dht.dat`` in ``state_dir``, else
    nowhere."""
    if config.dht_state:
        return Path(config.dht_state)
    if state_dir:
        return Path(state_dir) / STATE_FILE_NAME
    return None


class DhtService:
    """The DHT node of a tracker agent and its sockets (one per address family).

    Args:
        config: the agent's section (``bind_address``, ``dht_bind6``, ``dht_port``,
            ``dht_bootstrap``).
        ports: the ports to try in order when ``dht_port`` is 0 (the peer agent's
            ``listen_ports`` range).
        state_file: where the table is loaded from and saved to (None: not kept).
        clock: monotonic seconds.
        rng: the node's randomness (ids, transaction ids, tokens).
        node_factory: builds the node (tests pass their own).
    """

    def __init__(
        self,
        config: TrackerAgentConfig,
        *,
        ports: tuple[int, int] = (6881, 6999),
        state_file: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        node_factory: NodeFactory = default_node_factory,
    ) -> None:
        self._config = config
        self._ports = ports
        self._state_file = state_file
        self._emit: Callable[[Sequence[Message]], None] = _drop
        self._clock = clock
        self._rng = rng or random.Random()
        self._node_factory = node_factory
        self._node: DhtNode | None = None
        self._sockets: dict[bool, gevent.socket.socket] = {}
        """The bound sockets by family (True: IPv6)."""
        self._outboxes: dict[bool, gevent.queue.Queue[tuple[bytes, PeerAddress]]] = {}
        self._no_ipv6 = ""
        """Why there is no IPv6 socket though ``dht_bind6`` asks for one (logged at start)."""
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._reports = StatusReports()
        self._local_only = local_only()
        self._refused_sends = 0
        self.port = 0
        """The UDP port bound (0 until ``bind``)."""

    # -- lifecycle -------------------------------------------------------------------------------

    def bind(self) -> int:
        """Bind the sockets (the entry point does this first, so a refusal is one line): the
        main one (IPv4, or IPv6 on an IPv6 ``bind_address``), then the IPv6 one on its port
        when ``dht_bind6`` asks for it and the host allows it.

        Returns:
            The UDP port bound.

        Raises:
            ConfigError: ``dht_port_taken`` (the port, or every port of the range, is taken).
        """
        if not self._sockets:
            main = self._bind()
            self.port = main.getsockname()[1]
            self._sockets[self._main_ipv6] = main
            if not self._main_ipv6 and self._config.dht_bind6:
                second = self._bind6(self._config.dht_bind6, self.port)
                if second is not None:
                    self._sockets[True] = second
        return self.port

    @property
    def families(self) -> list[str]:
        """The address families the node runs (``IPv4``, ``IPv6``; empty before ``bind``)."""
        return [name for v6, name in ((False, "IPv4"), (True, "IPv6")) if v6 in self._sockets]

    def start(self, emit: Callable[[Sequence[Message]], None]) -> None:
        """Load the table, start the greenlets and the bootstrap (binding first if needed).

        Args:
            emit: takes the bus messages the node's events become (called from this
                service's greenlets and from the caller's).

        Raises:
            ConfigError: as ``bind``.
        """
        self.bind()
        self._emit = emit
        now = self._clock()
        config = DhtConfig(port=self.port, ipv4=False in self._sockets, ipv6=True in self._sockets)
        self._node = node = self._node_factory(config, self._load(), now, self._rng)
        if node.load_problem:
            log.warning("DHT table %s not used: %s", self._state_file, node.load_problem)
        self._greenlets = [gevent.spawn(self._timer_loop), gevent.spawn(self._bootstrap_loop)]
        for ipv6, sock in self._sockets.items():
            outbox: gevent.queue.Queue[tuple[bytes, PeerAddress]] = gevent.queue.Queue()
            self._outboxes[ipv6] = outbox
            self._greenlets.append(gevent.spawn(self._receive_loop, sock))
            self._greenlets.append(gevent.spawn(self._send_loop, sock, outbox))
        if self._no_ipv6:
            log.info("DHT: no IPv6 node (%s); IPv4 only", self._no_ipv6)
        log.info(
            "DHT node listening on UDP %s, %s (%d nodes from the saved table)",
            self.port,
            " and ".join(self.families),
            self._node.summary(now).nodes,
        )

    def close(self) -> None:
        """Stop the greenlets, save the table, close the socket."""
        for greenlet in self._greenlets:
            greenlet.kill(block=False)
        self._greenlets = []
        self._save()
        for sock in self._sockets.values():
            sock.close()
        self._sockets = {}
        self._outboxes = {}

    # -- commands from the coordinator -----------------------------------------------------------

    def track(self, message: TrackTorrent) -> None:
        """Look a public torrent up and announce it (``listen_port``); its ``nodes`` are
        bootstrap candidates. A private torrent is left alone."""
        node = self._node
        if node is None or message.private:
            return
        if not node.add_torrent(message.info_hash, message.listen_port, self._clock()):
            log.warning("DHT: too many torrents; %s is not looked up", message.info_hash)
        if message.dht_nodes:
            gevent.spawn(self._resolve_and_bootstrap, message.dht_nodes)
        self._flush()

    def untrack(self, info_hash: InfoHash) -> None:
        if self._node is not None:
            self._node.remove_torrent(info_hash)
            self._flush()

    def node_seen(self, address: PeerAddress) -> None:
        """A peer's ``PORT``: ping its node, which joins the table if it answers."""
        if self._node is not None and self._may_reach(address.host):
            self._node.ping(address, self._clock())
            self._flush()

    def forget_all(self) -> None:
        """A new registration: the torrents are forgotten (the coordinator sends them again);
        the table stays, and the next status report goes out at once."""
        if self._node is not None:
            for info_hash in self._node.torrents():
                self._node.remove_torrent(info_hash)
        self._reports.reset()
        self._flush()

    # -- greenlets --------------------------------------------------------------------------------

    def _receive_loop(self, sock: gevent.socket.socket) -> None:
        """Every datagram of ``sock`` into the node, with its source (of the socket's
        family)."""
        while True:
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except OSError as exc:  # e.g. an ICMP error reported on the socket
                log.debug("DHT socket: %s", exc)
                gevent.sleep(0.01)
                continue
            try:
                address = PeerAddress(source[0], source[1])
            except ValueError:
                continue
            node = self._node
            if node is None:
                continue
            try:
                node.receive(bytes(data), address, self._clock())
            except Exception:  # a bug must cost one datagram, not the agent
                log.exception("DHT: a datagram from %s broke the node", address)
            self._flush()

    def _timer_loop(self) -> None:
        last_save = self._clock()
        while True:
            node = self._node
            if node is None:
                return
            now = self._clock()
            gevent.sleep(min(TICK, max(0.01, node.next_deadline(now) - now)))
            now = self._clock()
            try:
                node.tick(now)
            except Exception:
                log.exception("DHT: a tick broke the node")
            self._flush()
            report = self._reports.due(node.summary(now), node.torrent_summaries(now), now)
            if report is not None:
                self._emit([report])
            if now - last_save >= SAVE_INTERVAL:
                last_save = now
                self._save()

    def _bootstrap_loop(self) -> None:
        """Join through the configured nodes now, and again while the table stays empty."""
        entries = [HostPort(*split_host_port(e, "")) for e in self._bootstrap_list()]
        first = True
        while True:
            node = self._node
            if node is not None and (first or node.summary(self._clock()).nodes == 0):
                first = False
                self._resolve_and_bootstrap(entries)
            gevent.sleep(REBOOTSTRAP_INTERVAL)

    def _bootstrap_list(self) -> list[str]:
        """``dht_bootstrap``; in local-only mode without its public entries (logged)."""
        entries = list(self._config.dht_bootstrap)
        if not self._local_only:
            return entries
        public = public_entries(entries)
        if public:
            log.warning(
                "DHT: not joining through %s: %s=1 allows loopback and private addresses only",
                ", ".join(public),
                LOCAL_ONLY_ENV,
            )
        return [entry for entry in entries if entry not in public]

    def _resolve_and_bootstrap(self, entries: Iterable[HostPort]) -> None:
        addresses = []
        for entry in entries:
            addresses.extend(self._resolve(entry))
        addresses = [a for a in dict.fromkeys(addresses) if self._may_reach(a.host)]
        if addresses and self._node is not None:
            self._node.bootstrap(addresses, self._clock())
            self._flush()

    def _resolve(self, entry: HostPort) -> list[PeerAddress]:
        try:
            return [PeerAddress(entry.host, entry.port)]
        except ValueError:
            if self._local_only:
                return []  # a name: local-only mode resolves none
        if len(self._sockets) == 2:
            family = stdlib_socket.AF_UNSPEC
        else:
            family = stdlib_socket.AF_INET6 if self._main_ipv6 else stdlib_socket.AF_INET
        try:
            with gevent.Timeout(RESOLVE_TIMEOUT):
                infos = gevent.socket.getaddrinfo(
                    entry.host, entry.port, family, stdlib_socket.SOCK_DGRAM
                )
        except (OSError, gevent.Timeout) as exc:
            log.info("DHT bootstrap node %s:%d does not resolve: %s", entry.host, entry.port, exc)
            return []
        found = []
        for info in infos:
            with contextlib.suppress(ValueError):
                found.append(PeerAddress(str(info[4][0]), int(info[4][1])))
        return found

    # -- the node's output -------------------------------------------------------------------------

    def _flush(self) -> None:
        node = self._node
        if node is None:
            return
        for datagram, address in node.take_outgoing():
            if not self._may_reach(address.host):
                self._refused_sends += 1
                if self._refused_sends == 1:
                    log.warning("DHT: not sending to %s (local-only mode)", address)
                continue
            outbox = self._outboxes.get(address.is_ipv6)  # None: a family we do not run
            if outbox is not None and outbox.qsize() < SEND_QUEUE:
                outbox.put((datagram, address))
        messages: list[Message] = []
        for event in node.take_events():
            match event:
                case PeersFound(info_hash, peers):
                    messages.extend(peers_discovered(info_hash, peers))
                case AnnounceDone(info_hash, count):
                    log.info("DHT: %s announced to %d nodes", info_hash, count)
                case ExternalAddress(ip):
                    log.info("DHT: our external address is %s", ip)
        if messages:
            self._emit(messages)

    def _send_loop(
        self, sock: gevent.socket.socket, outbox: gevent.queue.Queue[tuple[bytes, PeerAddress]]
    ) -> None:
        while True:
            datagram, address = outbox.get()
            try:
                sock.sendto(datagram, (address.host, address.port))
            except OSError as exc:
                log.debug("DHT: sending to %s failed: %s", address, exc)

    def _may_reach(self, host: str) -> bool:
        return not self._local_only or is_local_host(host)

    # -- the socket and the table ----------------------------------------------------------------

    @property
    def _main_ipv6(self) -> bool:
        """Whether the main socket is IPv6 (``bind_address`` is an IPv6 address)."""
        return ":" in self._config.bind_address

    def _bind(self) -> gevent.socket.socket:
        host = self._config.bind_address or "0.0.0.0"
        family = stdlib_socket.AF_INET6 if self._main_ipv6 else stdlib_socket.AF_INET
        wanted = self._config.dht_port
        candidates = [wanted] if wanted else list(range(self._ports[0], self._ports[1] + 1))
        for port in candidates:
            sock = gevent.socket.socket(family, stdlib_socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
        where = f"port {wanted}" if wanted else f"any port of {self._ports[0]}-{self._ports[1]}"
        raise ConfigError(
            "dht_port_taken",
            f"the DHT cannot bind UDP {host} {where}: {last.strerror or last}; set "
            "[tracker_agent] dht_port to a free port",
        )

    def _bind6(self, host: str, port: int) -> gevent.socket.socket | None:
        """The IPv6 socket beside the IPv4 one: IPv6 only, on ``port``; None (the reason kept
        for the log) when the host has no IPv6 or the port is taken there."""
        sock = None
        try:
            sock = gevent.socket.socket(stdlib_socket.AF_INET6, stdlib_socket.SOCK_DGRAM)
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
        except OSError as exc:
            if sock is not None:
                sock.close()
            self._no_ipv6 = f"cannot bind UDP [{host}]:{port}: {exc.strerror or exc}"
            return None
        return sock

    def _load(self) -> bytes | None:
        path = self._state_file
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("DHT table %s unreadable (%s): starting from the bootstrap list", path, exc)
            return None

    def _save(self) -> None:
        path, node = self._state_file, self._node
        if path is None or node is None:
            return
        try:
            data = node.dump()
            partial = path.with_name(path.name + ".part")
            partial.write_bytes(data)
            os.replace(partial, path)
        except OSError as exc:
            log.warning("DHT table not saved to %s: %s", path, exc)


def _drop(messages: Sequence[Message]) -> None:
    """Before ``start``: nobody to tell."""
