"""The store of announced peers on a fake clock: expiry, the three caps, one datagram of values."""

from __future__ import annotations

import random

import pytest

from torviz.shared.bencode import encode
from torviz.shared.dht.peer_store import (
    MAX_VALUES_V4,
    MAX_VALUES_V6,
    PeerStore,
    PeerStoreLimits,
)
from torviz.shared.types import InfoHash, PeerAddress

H1 = InfoHash(b"\x01" * 20)
H2 = InfoHash(b"\x02" * 20)
H3 = InfoHash(b"\x03" * 20)


def peer(i: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", port)


def peer6(i: int) -> PeerAddress:
    return PeerAddress(f"2001:db8::{i:x}", 6881)


def store(**limits: float) -> PeerStore:
    return PeerStore(random.Random(5), PeerStoreLimits(**limits))  # type: ignore[arg-type]


def test_announced_peers_come_back_by_family() -> None:
    s = store()
    assert s.announce(H1, peer(1), 0.0)
    assert s.announce(H1, peer6(1), 0.0)
    assert s.values(H1, 50, ipv6=False) == [peer(1)]
    assert s.values(H1, 50, ipv6=True) == [peer6(1)]
    assert s.values(H2, 50, ipv6=False) == []
    assert s.count(H1) == 2 and s.count() == 2 and s.info_hash_count == 1


def test_announce_expires_after_30_minutes_and_a_reannounce_extends_it() -> None:
    s = store()
    s.announce(H1, peer(1), 0.0)
    s.announce(H1, peer(2), 100.0)
    assert s.next_deadline() == 1800.0
    assert s.sweep(1799.9) == 0
    s.announce(H1, peer(1), 1000.0)  # refreshed: now the younger of the two
    assert s.next_deadline() == 1900.0
    assert s.sweep(1900.0) == 1
    assert s.values(H1, 10, ipv6=False) == [peer(1)]
    assert s.sweep(2800.0) == 1
    assert s.count() == 0 and s.info_hash_count == 0 and s.next_deadline() is None


def test_announce_sweeps_expired_entries_first() -> None:
    s = store(max_info_hashes=1)
    s.announce(H1, peer(1), 0.0)
    assert not s.announce(H2, peer(2), 10.0)  # the one slot is taken
    assert s.announce(H2, peer(2), 1800.0)  # H1's only peer expired, freeing the slot
    assert s.count(H1) == 0 and s.count(H2) == 1


def test_full_info_hash_drops_its_oldest_peer() -> None:
    s = store(max_peers_per_info_hash=3)
    for i in range(3):
        s.announce(H1, peer(i), float(i))
    s.announce(H1, peer(0), 5.0)  # peer 0 re-announced: peer 1 is now the oldest
    s.announce(H1, peer(9), 6.0)
    assert sorted(s.values(H1, 10, ipv6=False)) == sorted([peer(0), peer(2), peer(9)])
    s.announce(H2, peer(1), 7.0)  # another swarm is unaffected by H1's cap
    assert s.count(H1) == 3 and s.count(H2) == 1


def test_full_store_drops_the_oldest_peer_of_all() -> None:
    s = store(max_peers=3)
    s.announce(H1, peer(1), 0.0)
    s.announce(H2, peer(2), 1.0)
    s.announce(H2, peer(3), 2.0)
    s.announce(H3, peer(4), 3.0)
    assert s.count() == 3
    assert s.count(H1) == 0 and s.info_hash_count == 2  # H1's last peer went, and H1 with it
    assert s.count(H3) == 1


def test_full_store_with_per_hash_cap_one_keeps_consistent() -> None:
    """The newest announce replaces an info hash's only peer without losing the info hash."""
    s = store(max_peers_per_info_hash=1, max_peers=1)
    s.announce(H1, peer(1), 0.0)
    assert s.announce(H1, peer(2), 1.0)
    assert s.values(H1, 5, ipv6=False) == [peer(2)]
    assert s.announce(H2, peer(3), 2.0)
    assert s.values(H2, 5, ipv6=False) == [peer(3)] and s.count(H1) == 0 and s.count() == 1


def test_new_info_hash_beyond_the_cap_is_refused_existing_ones_still_grow() -> None:
    s = store(max_info_hashes=2)
    assert s.announce(H1, peer(1), 0.0)
    assert s.announce(H2, peer(2), 0.0)
    assert not s.announce(H3, peer(3), 0.0)
    assert s.announce(H1, peer(4), 0.0)
    assert s.info_hash_count == 2 and s.count(H3) == 0


def test_values_are_a_random_sample_capped_to_one_datagram() -> None:
    s = store()
    for i in range(300):
        s.announce(H1, peer(i), 0.0)
        s.announce(H1, peer6(i), 0.0)
    v4 = s.values(H1, 1000, ipv6=False)
    v6 = s.values(H1, 1000, ipv6=True)
    assert len(v4) == MAX_VALUES_V4 == 100 and len(set(v4)) == 100
    assert len(v6) == MAX_VALUES_V6 == 50 and all(p.is_ipv6 for p in v6)
    assert s.values(H1, 8, ipv6=False) != s.values(H1, 8, ipv6=False)  # sampled afresh
    assert s.values(H1, 0, ipv6=False) == [] and s.values(H1, -1, ipv6=False) == []
    # What one answer carries, bencoded as BEP 5 values, fits one IPv6-minimum datagram.
    assert len(encode([b"\x00" * 6] * len(v4))) == 802
    assert len(encode([b"\x00" * 18] * len(v6))) == 1052  # < 1,232


def test_a_flood_of_announces_stays_within_every_cap() -> None:
    s = store(max_peers=1000, max_peers_per_info_hash=50, max_info_hashes=30)
    rng = random.Random(1)
    for i in range(20_000):
        h = InfoHash(rng.randbytes(1) * 20)
        s.announce(h, peer(rng.randrange(100_000)), float(i) / 100)
    assert s.count() <= 1000
    assert s.info_hash_count <= 30
    assert all(s.count(InfoHash(bytes([b]) * 20)) <= 50 for b in range(256))


@pytest.mark.parametrize(
    "field", ["expiry", "max_peers_per_info_hash", "max_peers", "max_info_hashes"]
)
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PeerStoreLimits(**{field: 0})
