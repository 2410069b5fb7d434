"""An in-memory UDP network for ``DhtNode``s: a fake clock, delivery in send order, optional loss.

Each node has its own address (10.x.y.z: a private range, so BEP 42 does not apply to the
simulated ids). ``run`` advances the clock in steps, ticking every node and delivering every
datagram sent, until the network is quiet; every loop is bounded.
"""

from __future__ import annotations

import random
from collections import deque

from torviz.shared.dht.node import DhtConfig, DhtEvent, DhtNode
from torviz.shared.dht.node_id import NodeId
from torviz.shared.types import PeerAddress

MAX_DELIVERIES_PER_STEP = 2_000_000


def address_of(index: int, port: int = 6881) -> PeerAddress:
    """The simulated address of node ``index`` (0 .. 2**24 - 1)."""
    return PeerAddress(f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", port)


class SimNetwork:
    """Nodes joined by an in-memory network."""

    def __init__(self, seed: int = 1, *, loss: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.now = 0.0
        self.nodes: dict[PeerAddress, DhtNode] = {}
        self.events: dict[PeerAddress, list[DhtEvent]] = {}
        self.queue: deque[tuple[PeerAddress, PeerAddress, bytes]] = deque()
        self.delivered = 0
        self.lost = 0
        self.sent_by: dict[PeerAddress, int] = {}

    def add(
        self, address: PeerAddress, config: DhtConfig | None = None, own_id: NodeId | None = None
    ) -> DhtNode:
        node = DhtNode(
            config or DhtConfig(),
            own_id,
            self.now,
            random.Random(self.rng.getrandbits(64)),
        )
        self.nodes[address] = node
        self.events[address] = []
        return node

    def collect(self, address: PeerAddress) -> None:
        """Queue what the node at ``address`` wants to send, and keep its events."""
        node = self.nodes[address]
        for data, destination in node.take_outgoing():
            self.sent_by[address] = self.sent_by.get(address, 0) + 1
            if self.loss and self.rng.random() < self.loss:
                self.lost += 1
                continue
            self.queue.append((address, destination, data))
        self.events[address].extend(node.take_events())

    def deliver(self) -> int:
        """Deliver until nothing is in flight (datagrams to unknown addresses vanish).

        Returns:
            How many generations it took: datagrams sent in answer to generation n belong to
            generation n + 1, so a lookup's round trips are about half of this.
        """
        generations = 0
        delivered = 0
        while self.queue:
            generations += 1
            wave, self.queue = self.queue, deque()
            for source, destination, data in wave:
                delivered += 1
                if delivered > MAX_DELIVERIES_PER_STEP:
                    raise AssertionError("the network did not quiet down")
                node = self.nodes.get(destination)
                if node is None:
                    continue
                self.delivered += 1
                node.receive(data, source, self.now)
                self.collect(destination)
        return generations

    def step(self, dt: float) -> None:
        """Advance the clock, tick every node, deliver everything."""
        self.now += dt
        for address, node in self.nodes.items():
            node.tick(self.now)
            self.collect(address)
        self.deliver()

    def run(self, seconds: float, dt: float = 0.5) -> None:
        for _ in range(round(seconds / dt)):
            self.step(dt)

    def take_events(self, address: PeerAddress) -> list[DhtEvent]:
        out, self.events[address] = self.events[address], []
        return out
