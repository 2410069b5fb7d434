"""A DHT node of the test's own on a real loopback UDP socket, pumped by hand, for the tests
that run a real tracker agent's DHT (``test_dht_agent.py``, ``test_dht_ipv6.py``)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable

from torviz.shared.dht.krpc import Query, decode_krpc
from torviz.shared.dht.node import DhtConfig, DhtNode
from torviz.shared.errors import KrpcError
from torviz.shared.types import InfoHash, PeerAddress

__all__ = ["ANNOUNCED", "LOOPBACK", "LoopbackNode", "free_udp_port"]

LOOPBACK = "127.0.0.1"
ANNOUNCED = PeerAddress("127.0.0.3", 7777)
"""A peer another node announced to the test's node."""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class LoopbackNode:
    """The test's own DHT node: the sans-IO node on a real UDP socket, pumped by hand."""

    def __init__(self, host: str = LOOPBACK, *, seed: int = 1) -> None:
        """A node on ``host`` (127.0.0.1, or ::1 for a node that runs IPv6 only)."""
        ipv6 = ":" in host
        self.sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.address = PeerAddress(host, self.sock.getsockname()[1])
        config = DhtConfig(port=self.address.port, ipv4=not ipv6, ipv6=ipv6)
        self.node = DhtNode(config, None, 0.0, random.Random(seed))
        self.queries: list[tuple[str, PeerAddress]] = []
        self._started = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._started

    def pump(self, until: Callable[[], bool], timeout: float) -> bool:
        """Receive, answer and send until ``until()`` holds (at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not until():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.flush()
            self.sock.settimeout(min(left, 0.2))
            try:
                data, source = self.sock.recvfrom(4096)
            except TimeoutError:
                self.node.tick(self.now())
                continue
            sender = PeerAddress(source[0], source[1])
            try:
                message = decode_krpc(data)
            except KrpcError:
                message = None
            if isinstance(message, Query):
                self.queries.append((message.method, sender))
            self.node.receive(data, sender, self.now())
        self.flush()
        return True

    def flush(self) -> None:
        for datagram, address in self.node.take_outgoing():
            self.sock.sendto(datagram, (address.host, address.port))

    def asked(self, method: str, by: PeerAddress) -> bool:
        return (method, by) in self.queries

    def store_announce(self, info_hash: InfoHash) -> None:
        """Have another (in-memory) node announce ``ANNOUNCED`` here for ``info_hash``."""
        other = DhtNode(DhtConfig(port=ANNOUNCED.port), None, 0.0, random.Random(2))
        other.bootstrap([self.address], self.now())
        other.add_torrent(info_hash, ANNOUNCED.port, self.now())
        for _ in range(50):  # in-memory rounds between the two nodes
            moved = False
            other.tick(self.now())
            for datagram, address in other.take_outgoing():
                if address == self.address:
                    moved = True
                    self.node.receive(datagram, ANNOUNCED, self.now())
            for datagram, address in self.node.take_outgoing():
                if address == ANNOUNCED:
                    moved = True
                    other.receive(datagram, self.address, self.now())
                else:
                    self.sock.sendto(datagram, (address.host, address.port))
            if not moved:
                break
        assert self.node.summary(self.now()).stored_peers == 1

    def close(self) -> None:
        self.sock.close()
