"""The test ports (``testing.swarm.free_port``) come from below the kernel's ephemeral range,
so that no socket the kernel numbers itself (another test's ``bind`` to port 0, an outgoing
connection) takes one between its choice and its use; each is bindable and handed out once."""

from __future__ import annotations

import socket
from pathlib import Path

from testing.swarm import free_port


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port("127.0.0.1") for _ in range(20)]
    assert len(set(ports)) == len(ports)
    assert all(port < low for port in ports), (low, ports)
    for port in ports[:3]:
        with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", port))
            udp.bind(("127.0.0.1", port))
