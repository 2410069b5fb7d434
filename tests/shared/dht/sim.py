"""An in-memory UDP network for ``DhtNode``s: a fake clock, delivery in send order, optional loss.

Each node has its own address (10.x.y.z: a private range, so BEP 42 does not apply to the
simulated ids). ``run`` advances the clock in steps, ticking every node and delivering every
datagram sent, until the network is quiet; every loop is bounded.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Protocol

from torviz.shared.dht.node import DhtConfig, DhtEvent, DhtNode
from torviz.shared.dht.node_id import NodeId
from torviz.shared.types import PeerAddress

MAX_DELIVERIES_PER_STEP = 2_000_000


class SimNode(Protocol):
    """What the network drives: a ``DhtNode``, or a hostile stand-in."""

    def receive(self, datagram: bytes, address: PeerAddress, now: float) -> None: ...
    def tick(self, now: float) -> None: ...
    def take_outgoing(self) -> list[tuple[bytes, PeerAddress]]: ...
    def take_events(self) -> list[DhtEvent]: ...


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
        self.others: dict[PeerAddress, SimNode] = {}  # hostile stand-ins
        self.events: dict[PeerAddress, list[DhtEvent]] = {}
        self.queue: deque[tuple[PeerAddress, PeerAddress, bytes]] = deque()
        self.delivered = 0
        self.lost = 0
        self.sent_by: dict[PeerAddress, int] = {}
        # A node is ticked only once its next deadline has come, as the shell's timer does;
        # a node that received or sent something has its deadline asked afresh.
        self.deadlines: dict[PeerAddress, float] = {}
        self._touched: set[PeerAddress] = set()

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

    def add_other(self, address: PeerAddress, node: SimNode) -> None:
        """A stand-in that is not a ``DhtNode`` (it gets datagrams and ticks all the same)."""
        self.others[address] = node
        self.events[address] = []

    def _get(self, address: PeerAddress) -> SimNode | None:
        return self.nodes.get(address) or self.others.get(address)

    def collect(self, address: PeerAddress) -> None:
        """Queue what the node at ``address`` wants to send, and keep its events."""
        node = self._get(address)
        assert node is not None
        self._touched.add(address)
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
                node = self._get(destination)
                if node is None:
                    continue
                self.delivered += 1
                node.receive(data, source, self.now)
                self.collect(destination)
        self._refresh()
        return generations

    def step(self, dt: float) -> None:
        """Advance the clock, tick every node, deliver everything."""
        self.now += dt
        for address, node in [*self.nodes.items(), *self.others.items()]:
            if self.deadlines.get(address, 0.0) <= self.now:
                node.tick(self.now)
                self.collect(address)
        self._refresh()
        self.deliver()

    def _refresh(self) -> None:
        for address in self._touched:
            node = self.nodes.get(address)
            if node is not None:
                self.deadlines[address] = node.next_deadline(self.now)
        self._touched.clear()

    def run(self, seconds: float, dt: float = 0.5) -> None:
        for _ in range(round(seconds / dt)):
            self.step(dt)

    def take_events(self, address: PeerAddress) -> list[DhtEvent]:
        out, self.events[address] = self.events[address], []
        return out
