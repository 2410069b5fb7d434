"""What the tracker agent tests share: the test's coordinator, the agent process, other peers.

- ``Coordinator``: a plain (blocking) pyzmq ROUTER playing the coordinator: sends commands,
  collects the agent's events, waits for one with a bound; ``replace`` plays a coordinator
  restarted on the same endpoint, ``answer_as_new`` how a new coordinator meets the agent.
- ``RunningAgent``: the agent subprocess and its log.
- ``raw_announce`` / ``scrape`` / ``listed``: talk to opentracker as other peers would, from
  their own 127.0.0.x addresses; ``swarm_with_two_peers`` sets up a whitelisted torrent with a
  seeder and a leecher already announced.
- ``memory_kib``: a process's resident and peak resident memory, from /proc.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from testing import OpenTracker, Swarm, next_loopback_address
from torviz.shared.bus import (
    Hello,
    HelloPolicy,
    Message,
    PeersDiscovered,
    Rejected,
    RejectReason,
    ServiceKind,
    TrackerState,
    TrackerStateChanged,
    TrackerTier,
    TrackTorrent,
    check_hello,
    decode_frames,
    encode_frames,
)
from torviz.shared.tracker import (
    AnnounceResponse,
    ScrapeStats,
    build_scrape_url,
    parse_announce_response,
    parse_scrape_response,
)
from torviz.shared.types import InfoHash, PeerAddress, PeerId

REPO = Path(__file__).resolve().parents[3]
AGENT_ID = "ta-test"
POLICY = HelloPolicy(
    service=ServiceKind.COORDINATOR,
    server_id="test-coordinator",
    accepts=frozenset({ServiceKind.TRACKER_AGENT}),
    heartbeat_interval=30.0,  # the test reads when it wants: no loss of the coordinator
)


@dataclass
class Coordinator:
    """The test's side of the bus: a ROUTER that sends commands and collects events."""

    socket: zmq.Socket[Any]
    endpoint: str
    identity: bytes | None = None
    received: list[Message] = field(default_factory=list)

    def send(self, message: Message) -> None:
        assert self.identity is not None, "no agent has said hello"
        self.socket.send_multipart([self.identity, *encode_frames(message)])

    def recv(self, timeout: float) -> Message | None:
        if not self.socket.poll(int(timeout * 1000)):
            return None
        identity, *frames = self.socket.recv_multipart()
        message, _ = decode_frames(frames)
        self.identity = identity
        self.received.append(message)
        return message

    def wait_for(self, predicate: Callable[[Message], bool], timeout: float) -> Message:
        """The first message (old or new) matching ``predicate``, waiting at most ``timeout``."""
        for old in self.received:
            if predicate(old):
                return old
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is not None and predicate(message):
                return message
        seen = [type(m).__name__ for m in self.received]
        raise AssertionError(f"no matching message within {timeout} s; received {seen}")

    def state(self, url: str, state: TrackerState, timeout: float = 5.0) -> TrackerStateChanged:
        found = self.wait_for(
            lambda m: isinstance(m, TrackerStateChanged) and m.url == url and m.state is state,
            timeout,
        )
        assert isinstance(found, TrackerStateChanged)
        return found

    def peers(self, info_hash: InfoHash) -> set[PeerAddress]:
        return {
            peer
            for m in self.received
            if isinstance(m, PeersDiscovered) and m.info_hash == info_hash
            for peer in m.peers
        }

    def index(self, message: Message) -> int:
        return next(i for i, m in enumerate(self.received) if m is message)

    def replace(self) -> None:
        """A new coordinator on the same endpoint: it knows nothing of the agent."""
        self.socket.close(linger=0)
        time.sleep(0.05)
        self.socket = self.socket.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.socket.bind(self.endpoint)
        self.identity = None
        self.received.clear()

    def answer_as_new(self, policy: HelloPolicy, timeout: float) -> Hello:
        """Play a coordinator that has not welcomed the agent: ``Rejected("hello_first")`` to
        anything but ``Hello``, ``Welcome`` to the ``Hello``; returns the ``Hello``."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if isinstance(message, Hello):
                self.send(check_hello(message, policy))
                return message
            if message is not None:
                self.send(Rejected(RejectReason.HELLO_FIRST, "test-coordinator: say Hello first"))
        seen = [type(m).__name__ for m in self.received]
        raise AssertionError(f"no Hello within {timeout} s; received {seen}")


@dataclass
class RunningAgent:
    process: subprocess.Popen[bytes]
    log_path: Path

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {timeout} s; {self.log()}") from None

    def log(self) -> str:
        try:
            return "log tail: " + self.log_path.read_text()[-3000:]
        except OSError:
            return "no log"


AGENT_PORT = 51413
"""The listen port the agent announces; opentracker lists it as 127.0.0.1:AGENT_PORT."""
ME = PeerAddress("127.0.0.1", AGENT_PORT)
PEER_ID = PeerId(b"-TV0100-agentundertest"[:20])
WAIT = 5.0

# --- talking to opentracker as other peers would -------------------------------------------------


def raw_announce(
    host: str,
    port: int,
    info_hash: InfoHash,
    *,
    peer_id: bytes,
    peer_port: int,
    source: str = "127.0.0.1",
    left: int = 100,
    event: str | None = "started",
    numwant: int = 50,
) -> AnnounceResponse:
    """Announce over HTTP from ``source`` as a peer other than the agent; returns the reply."""
    params: dict[str, str | int | bytes] = {
        "info_hash": info_hash.raw,
        "peer_id": PeerId(peer_id).raw,
        "port": peer_port,
        "uploaded": 0,
        "downloaded": 0,
        "left": left,
        "compact": 1,
        "numwant": numwant,
    }
    if event is not None:
        params["event"] = event
    connection = http.client.HTTPConnection(host, port, timeout=2.0, source_address=(source, 0))
    try:
        # quote, not quote_plus: a 0x20 byte must travel as %20, which every tracker decodes.
        query = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        connection.request("GET", f"/announce?{query}")
        body = connection.getresponse().read(1 << 20)
    finally:
        connection.close()
    reply = parse_announce_response(body)
    assert isinstance(reply, AnnounceResponse), reply
    return reply


def scrape(host: str, port: int, info_hash: InfoHash) -> ScrapeStats:
    """The tracker's counts for one torrent (complete, downloaded, incomplete)."""
    url = build_scrape_url(f"http://{host}:{port}/scrape", [info_hash])
    target = url.split(f"{port}", 1)[1]
    connection = http.client.HTTPConnection(host, port, timeout=2.0)
    try:
        connection.request("GET", target)
        body = connection.getresponse().read(1 << 20)
    finally:
        connection.close()
    return parse_scrape_response(body).get(info_hash, ScrapeStats(0, 0, 0))


def track(info_hash: InfoHash, *tiers: tuple[str, ...], left: int = 1000) -> TrackTorrent:
    return TrackTorrent(
        info_hash=info_hash,
        tiers=tuple(TrackerTier(urls) for urls in tiers),
        peer_id=PEER_ID,
        listen_port=AGENT_PORT,
        private=False,
        uploaded=0,
        downloaded=0,
        left=left,
    )


def fresh_info_hash() -> InfoHash:
    """A random info hash without a 0x20 byte.

    The opentracker fixture's readiness probe sends its query with ``urlencode``'s default
    ``quote_plus``, which turns 0x20 into ``+``; opentracker reads that as 0x2B, so a
    whitelisted hash containing 0x20 never shows as accepted and the fixture gives up.
    """
    return InfoHash(os.urandom(20).replace(b" ", b"!"))


def announce_others(
    tracker: OpenTracker, info_hash: InfoHash, lefts: tuple[int, ...] = (0, 100)
) -> set[PeerAddress]:
    """Announce one peer per entry of ``lefts`` (0: a seeder) from its own loopback address."""
    peers = set()
    for n, left in enumerate(lefts, start=1):
        source = next_loopback_address()
        raw_announce(
            tracker.host,
            tracker.port,
            info_hash,
            peer_id=f"-XX0001-otherpeer{n:03d}".encode(),
            peer_port=7000 + n,
            source=source,
            left=left,
        )
        peers.add(PeerAddress(source, 7000 + n))
    return peers


def swarm_with_two_peers(swarm: Swarm) -> tuple[InfoHash, OpenTracker, set[PeerAddress]]:
    """A whitelisted torrent on a fresh opentracker, with a seeder and a leecher announced."""
    info_hash = fresh_info_hash()
    tracker = swarm.tracker([info_hash])
    return info_hash, tracker, announce_others(tracker, info_hash)


def memory_kib(pid: int) -> tuple[int, int]:
    """``(VmRSS, VmHWM)`` of a process in KiB: its resident memory now and at its peak."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def listed(tracker: OpenTracker, info_hash: InfoHash) -> set[PeerAddress]:
    """Who opentracker hands out now (asked as a third peer, which it then lists too)."""
    reply = raw_announce(
        tracker.host,
        tracker.port,
        info_hash,
        peer_id=b"-XX0001-observer0001",
        peer_port=7999,
        event=None,
    )
    return set(reply.addresses)


def wait_until_forgotten(tracker: OpenTracker, info_hash: InfoHash, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while ME in listed(tracker, info_hash):
        assert time.monotonic() < deadline, "opentracker still lists the agent"
        time.sleep(0.05)
