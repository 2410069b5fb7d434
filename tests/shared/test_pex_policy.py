"""PeX policy on a fake clock: sending diffs, rate and size caps, receiving caps, BEP 27."""

from __future__ import annotations

import pytest

from torviz.shared.pex_policy import PexCandidate, PexDisabledError, PexLimits, PexPolicy
from torviz.shared.types import PeerAddress
from torviz.shared.wire.pex import PexFlags, PexMessage

ME = PeerAddress("127.0.0.1", 6881)
R = PeerAddress("10.9.9.9", 7000)  # the receiving (or sending) connection


def peer(i: int, port: int = 6881) -> PeerAddress:
    return PeerAddress(f"10.0.{i // 256}.{i % 256}", port)


def test_private_torrent_refused() -> None:
    with pytest.raises(PexDisabledError, match="private"):
        PexPolicy(private=True)


def test_sends_connected_peers_never_the_receiver_then_only_diffs() -> None:
    policy = PexPolicy(private=False, own_addresses=[ME])
    policy.connected(R)
    policy.connected(ME)  # our own address is never advertised
    policy.connected(peer(1), PexFlags.SEED)
    policy.connected(PeerAddress("2001:db8::5", 1), PexFlags.REACHABLE)
    policy.open(R)
    first = policy.next_message(R, now=0.0)
    assert first == PexMessage(
        added=(peer(1),),
        added_flags=(PexFlags.SEED,),
        added6=(PeerAddress("2001:db8::5", 1),),
        added6_flags=(PexFlags.REACHABLE,),
    )
    assert policy.next_deadline(R) == 60.0
    policy.connected(peer(2))
    policy.disconnected(peer(1))
    assert policy.next_message(R, now=59.9) is None  # at most once a minute
    second = policy.next_message(R, now=60.0)
    assert second == PexMessage(added=(peer(2),), added_flags=(0,), dropped=(peer(1),))
    assert policy.next_message(R, now=500.0) is None  # nothing changed: nothing sent


def test_peer_that_came_and_went_between_messages_is_never_mentioned() -> None:
    policy = PexPolicy(private=False)
    policy.connected(peer(1))
    policy.open(R)
    assert policy.next_message(R, now=0.0) is not None
    policy.connected(peer(2))
    policy.disconnected(peer(2))
    assert policy.next_message(R, now=60.0) is None


def test_at_most_50_added_per_message_rest_waits() -> None:
    policy = PexPolicy(private=False)
    for i in range(120):
        policy.connected(peer(i))
    policy.open(R)
    sizes = []
    seen: set[PeerAddress] = set()
    for minute in range(4):
        message = policy.next_message(R, now=60.0 * minute)
        sizes.append(0 if message is None else len(message.added))
        if message is not None:
            assert not seen & set(message.added)
            seen |= set(message.added)
    assert sizes == [50, 50, 20, 0]
    assert seen == {peer(i) for i in range(120)}


def test_unopened_connection_gets_nothing() -> None:
    policy = PexPolicy(private=False)
    policy.connected(peer(1))
    assert policy.next_message(R, now=0.0) is None
    assert policy.next_deadline(R) is None


def _added(*peers: PeerAddress) -> PexMessage:
    return PexMessage(added=peers, added_flags=tuple(0 for _ in peers))


def test_receive_caps_per_message_and_per_source() -> None:
    policy = PexPolicy(private=False)
    flood = _added(*(peer(i) for i in range(100)))
    receipt = policy.receive(R, flood, now=0.0)
    assert len(receipt.candidates) == 50 and receipt.ignored == 50
    assert receipt.candidates[0] == PexCandidate(peer(0), 0, R)
    total = 50
    for minute in range(1, 10):
        batch = _added(*(peer(1000 + 100 * minute + i) for i in range(60)))
        total += len(policy.receive(R, batch, now=60.0 * minute).candidates)
    assert total == 200  # per source per torrent
    # a dropped entry frees room for one more
    freed = PexMessage(dropped=(peer(0),), added=(peer(5000),), added_flags=(0,))
    assert [c.address for c in policy.receive(R, freed, now=700.0).candidates] == [peer(5000)]
    # another source still gets its own budget
    other = PeerAddress("10.8.8.8", 7000)
    assert len(policy.receive(other, _added(peer(6000)), now=0.0).candidates) == 1


def test_receive_too_frequent_ignored() -> None:
    policy = PexPolicy(private=False)
    assert len(policy.receive(R, _added(peer(1)), now=0.0).candidates) == 1
    late = policy.receive(R, _added(peer(2)), now=10.0)
    assert late.too_frequent and late.candidates == () and late.ignored == 1
    assert len(policy.receive(R, _added(peer(2)), now=45.0).candidates) == 1


def test_source_itself_and_own_address_never_candidates() -> None:
    policy = PexPolicy(private=False, own_addresses=[ME])
    receipt = policy.receive(R, _added(R, ME, peer(1)), now=0.0)
    assert [c.address for c in receipt.candidates] == [peer(1)]


def test_attempts_per_address_bounded_across_sources() -> None:
    policy = PexPolicy(private=False, limits=PexLimits(max_attempts_per_address=3))
    victim = PeerAddress("192.0.2.7", 80)
    assert not policy.may_attempt(victim)  # not learned through PeX: not this policy's to allow
    sources = [PeerAddress(f"10.7.0.{i}", 7000) for i in range(1, 10)]
    attempts = 0
    for source in sources:
        for candidate in policy.receive(source, _added(victim), now=0.0).candidates:
            assert candidate.address == victim
        while policy.record_attempt(victim):
            attempts += 1
    assert attempts == 3
    assert not policy.may_attempt(victim)
    assert policy.receive(sources[0], _added(victim), now=100.0).candidates == ()


def test_attempt_ledger_fails_closed_when_full() -> None:
    policy = PexPolicy(private=False, limits=PexLimits(max_tracked_addresses=2))
    got = policy.receive(R, _added(peer(1), peer(2), peer(3)), now=0.0)
    assert [c.address for c in got.candidates] == [peer(1), peer(2)]
    assert got.ignored == 1
