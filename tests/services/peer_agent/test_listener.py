"""The pre-handshake queue: a share per host, a shorter deadline under pressure, the oldest
dropped for a newcomer. The pure ``Backlog`` with a fake clock, then a real ``Listener`` on
loopback with gevent sockets in this (unpatched) test process."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import gevent
import gevent.socket
import pytest

from torviz.services.peer_agent.core.backlog import Backlog
from torviz.services.peer_agent.listener import Listener
from torviz.shared.types import InfoHash, PeerAddress, PeerId
from torviz.shared.wire.handshake import Handshake, HandshakeHeader, Reserved, encode_handshake

HEADER = encode_handshake(
    Handshake(
        InfoHash(hashlib.sha1(b"listener").digest()),
        PeerId(b"-XX0001-" + b"h" * 12),
        Reserved.build(fast=True),
    )
)

# -- the policy ---------------------------------------------------------------------------------


def test_one_host_gets_only_its_share_of_the_queue() -> None:
    backlog: Backlog[str] = Backlog(max_pending=8, max_per_host=2)
    assert backlog.admit("a1", "10.0.0.1", 0.0).admitted
    assert backlog.admit("a2", "10.0.0.1", 0.0).admitted
    refused = backlog.admit("a3", "10.0.0.1", 0.0)
    assert not refused.admitted and refused.reason == "too_many_from_host"
    assert backlog.admit("b1", "10.0.0.2", 0.0).admitted
    backlog.done("a1")  # its header arrived: the host may queue another
    assert backlog.admit("a3", "10.0.0.1", 0.0).admitted
    assert len(backlog) == 3 and "a1" not in backlog


def test_a_full_queue_drops_the_socket_waiting_longest_for_a_new_one() -> None:
    backlog: Backlog[str] = Backlog(max_pending=3, max_per_host=3)
    for n in range(3):
        assert backlog.admit(f"s{n}", f"10.0.0.{n}", float(n)).drop is None
    decision = backlog.admit("new", "10.0.0.9", 5.0)
    assert decision.admitted and decision.drop == "s0"
    assert "s0" not in backlog and len(backlog) == 3


def test_the_deadline_shrinks_while_the_queue_is_half_full() -> None:
    backlog: Backlog[str] = Backlog(
        max_pending=4, max_per_host=4, timeout=10.0, pressured_timeout=2.0
    )
    backlog.admit("old", "10.0.0.1", 0.0)
    assert not backlog.pressured and backlog.next_deadline() == 10.0
    assert backlog.expired(5.0) == []
    backlog.admit("new", "10.0.0.2", 5.0)  # two of four: under pressure
    assert backlog.pressured and backlog.next_deadline() == 2.0
    assert backlog.expired(6.0) == ["old"]  # 6 s waiting: past the shorter deadline
    assert not backlog.pressured
    assert backlog.expired(9.0) == []  # alone again: ten seconds
    assert backlog.expired(15.0) == ["new"]
    assert backlog.next_deadline() is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Backlog(max_pending=0)
    with pytest.raises(ValueError):
        Backlog(max_per_host=0)
    with pytest.raises(ValueError):
        Backlog(pressured_timeout=0.0)
    backlog: Backlog[str] = Backlog()
    backlog.admit("x", "10.0.0.1", 0.0)
    with pytest.raises(ValueError):
        backlog.admit("x", "10.0.0.1", 0.0)


# -- the listener on real sockets -----------------------------------------------------------


class Routed:
    """``on_header``: records the peers routed and closes their sockets."""

    def __init__(self) -> None:
        self.hosts: list[str] = []

    def __call__(
        self,
        sock: gevent.socket.socket,
        address: PeerAddress,
        header: HandshakeHeader,
        preread: bytes,
    ) -> None:
        assert preread == HEADER[: len(preread)] and len(preread) == 48
        self.hosts.append(address.host)
        sock.close()


@pytest.fixture
def start_listener() -> Iterator[object]:
    listeners: list[Listener] = []
    clients: list[gevent.socket.socket] = []

    def start(**options: object) -> tuple[Listener, Routed, object]:
        sock = gevent.socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        routed = Routed()
        listener = Listener(sock, routed, **options)  # type: ignore[arg-type]
        listener.start()
        listeners.append(listener)

        def dial(host: str) -> gevent.socket.socket:
            client = gevent.socket.create_connection(
                sock.getsockname(), timeout=5.0, source_address=(host, 0)
            )
            clients.append(client)
            return client

        return listener, routed, dial

    try:
        yield start
    finally:
        for client in clients:
            client.close()
        for listener in listeners:
            listener.close()


def closed_by_peer(client: gevent.socket.socket, within: float) -> bool:
    """Whether the listener closed ``client`` within ``within`` seconds."""
    client.settimeout(within)
    try:
        data: bytes = client.recv(1)
    except TimeoutError:
        return False
    except OSError:
        return True
    return data == b""


def wait_until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        gevent.sleep(0.01)


def test_a_host_flooding_the_queue_is_held_to_its_share(start_listener) -> None:
    listener, routed, dial = start_listener(max_pending=16, max_pending_per_host=3)
    flood = [dial("127.0.0.70") for _ in range(10)]
    wait_until(lambda: listener.refused >= 7)
    assert listener.pending == 3
    assert sum(closed_by_peer(c, 0.2) for c in flood) == 7  # refused at once; 3 still wait
    honest = dial("127.0.0.71")
    honest.sendall(HEADER)
    wait_until(lambda: routed.hosts == ["127.0.0.71"])


def test_the_oldest_waiting_socket_is_dropped_for_a_new_one(start_listener) -> None:
    listener, routed, dial = start_listener(
        max_pending=4, max_pending_per_host=4, header_timeout=30.0, pressured_timeout=30.0
    )
    idle = []
    for n in range(4):  # from four hosts: the per-host share does not apply
        idle.append(dial(f"127.0.0.{80 + n}"))
        wait_until(lambda n=n: listener.pending == n + 1)
    honest = dial("127.0.0.90")
    honest.sendall(HEADER)
    wait_until(lambda: routed.hosts == ["127.0.0.90"])
    assert closed_by_peer(idle[0], 1.0)  # the one waiting longest made room
    assert not any(closed_by_peer(c, 0.05) for c in idle[1:])


def test_a_socket_waits_its_header_timeout_but_less_under_pressure(start_listener) -> None:
    listener, _, dial = start_listener(
        max_pending=4, max_pending_per_host=4, header_timeout=30.0, pressured_timeout=0.5
    )
    first = dial("127.0.0.100")
    wait_until(lambda: listener.pending == 1)
    assert not closed_by_peer(first, 1.0)  # alone: its deadline is 30 s away
    first.sendall(HEADER[:10])  # trickling does not reset the deadline
    others = [dial("127.0.0.101"), dial("127.0.0.102")]  # three of four: under pressure
    started = time.monotonic()
    # Dropped half a second after they came (the first at once): far sooner than 30 s. The
    # bound is generous, for a loaded machine.
    assert closed_by_peer(first, 10.0)
    assert all(closed_by_peer(c, 10.0) for c in others)
    assert time.monotonic() - started < 10.0
    wait_until(lambda: listener.pending == 0)
    # A peer that closes or sends garbage is dropped without a word, the listener goes on.
    third = dial("127.0.0.103")
    third.sendall(b"\x13Not BitTorrent at all")
    assert closed_by_peer(third, 2.0)
