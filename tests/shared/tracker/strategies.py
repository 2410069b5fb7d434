"""Hypothesis strategies shared by the tracker codec tests."""

from __future__ import annotations

import ipaddress

from hypothesis import strategies as st

from torviz.shared.types import InfoHash, PeerAddress, PeerId

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
i63 = st.integers(0, 2**63 - 1)
ports = st.integers(1, 65535)
info_hashes = st.binary(min_size=20, max_size=20).map(InfoHash)
peer_ids = st.binary(min_size=20, max_size=20).map(PeerId)


def _usable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return not (
        ip.is_unspecified or ip.is_multicast or ip == ipaddress.IPv4Address("255.255.255.255")
    )


v4_peers = st.builds(
    lambda ip, port: PeerAddress(str(ip), port),
    st.ip_addresses(v=4).filter(_usable),
    ports,
)
v6_peers = st.builds(
    lambda ip, port: PeerAddress(str(ip), port),
    st.ip_addresses(v=6).filter(_usable),
    ports,
)
