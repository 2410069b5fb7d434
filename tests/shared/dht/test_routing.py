"""The routing table's rules on a fake clock (BEP 5): entry, splitting, node states, replacement,
refresh, one node per IP, BEP 42 on entry, closest nodes, caps, and a change of our own id; the
table file (``dump``/``load``) is tested in ``test_table_file.py``.

The tables are built with ``tables.py``: our id is 0 in most tests, so a node's bucket is the
position of its highest set bit, and ``near(i, n)`` makes the ``n``-th id that shares exactly
``i`` leading bits with ours.
"""

from __future__ import annotations

import random

import pytest

from tests.shared.dht.tables import (
    MINUTES,
    OWN,
    answered,
    check_consistent,
    full_far_bucket,
    near,
    node,
    populated,
)
from torviz.shared.dht.node_id import (
    ID_BITS,
    NodeId,
    NodeInfo,
    bucket_index,
    distance,
    is_secure_node_id,
    secure_node_id,
)
from torviz.shared.dht.routing import (
    Admission,
    NodeState,
    Refusal,
    RoutingLimits,
    RoutingTable,
)
from torviz.shared.types import InfoHash, PeerAddress

# -- entry -------------------------------------------------------------------------------------


def test_empty_table() -> None:
    table = RoutingTable(OWN, 0.0)
    assert len(table) == 0 and table.bucket_count == 1
    assert table.closest(OWN) == []
    assert table.next_deadline() is None
    assert table.buckets_to_refresh(10_000.0, random.Random(1)) == []
    assert table.questionable(10_000.0) == []


def test_a_node_that_answered_enters_a_bucket() -> None:
    table = RoutingTable(OWN, 0.0)
    a = node(near(3))
    assert table.heard_from(a, 1.0, responded=True).admission is Admission.ADDED
    assert a.id in table and len(table) == 1
    status = table.status(a.id, 1.0)
    assert status is not None and status.state is NodeState.GOOD and status.in_bucket
    assert table.heard_from(a, 2.0, responded=True).admission is Admission.UPDATED
    assert table.closest(OWN) == [a]


def test_a_node_that_only_queried_us_waits_in_the_cache_and_is_to_be_pinged() -> None:
    table = RoutingTable(OWN, 0.0)
    a = node(near(3))
    result = table.heard_from(a, 1.0, responded=False)
    assert result.admission is Admission.CACHED and result.to_ping == (a,)
    assert a.id not in table and table.closest(OWN) == []
    # It queries again before the ping's answer: no second ping asked for within ping_retry.
    assert table.heard_from(a, 2.0, responded=False).to_ping == ()
    assert table.heard_from(a, 3.0, responded=True).admission is Admission.ADDED
    assert a.id in table


def test_own_id_and_other_family_refused() -> None:
    table = RoutingTable(OWN, 0.0)
    assert table.heard_from(node(OWN), 0.0, responded=True).refusal is Refusal.OWN_ID
    v6 = node(near(1), "2001:db8::1")
    assert table.heard_from(v6, 0.0, responded=True).refusal is Refusal.WRONG_FAMILY
    table6 = RoutingTable(OWN, 0.0, ipv6=True)
    assert answered(table6, v6) is Admission.ADDED
    assert table6.heard_from(node(near(2)), 0.0, responded=True).refusal is Refusal.WRONG_FAMILY


# -- splitting ---------------------------------------------------------------------------------


def test_only_the_bucket_holding_our_id_splits() -> None:
    table = RoutingTable(OWN, 0.0)
    far = [node(near(0, n)) for n in range(8)]
    for info in far:
        assert answered(table, info) is Admission.ADDED
    assert table.bucket_count == 1  # eight fit in the one bucket
    ninth = node(near(0, 100))
    assert answered(table, ninth) is Admission.CACHED  # split once; the far half is still full
    assert table.bucket_count == 2 and len(table) == 8
    for n in range(20):  # more far nodes never split the far bucket again
        answered(table, node(near(0, 200 + n)))
    assert table.bucket_count == 2 and len(table) == 8
    for n in range(8):  # the near half fills its own bucket without a split
        assert answered(table, node(near(1 + n % 2, n))) is Admission.ADDED
    assert table.bucket_count == 2 and len(table) == 16
    assert answered(table, node(near(2, 99))) is Admission.ADDED  # the ninth splits it
    assert table.bucket_count == 3 and len(table) == 17
    check_consistent(table)


@pytest.mark.parametrize(("k", "buckets"), [(8, 158), (1, ID_BITS)])
def test_splitting_goes_as_deep_as_the_ids_need_and_stops_at_160_buckets(
    k: int, buckets: int
) -> None:
    """Ids 1..400 share 151 to 159 leading bits with ours. With k=8 the bucket of the 7 ids
    sharing 157 or more bits never fills; with k=1 the last bucket ends holding id 1 alone
    (the only id sharing 159 bits with ours)."""
    table = RoutingTable(OWN, 0.0, limits=RoutingLimits(k=k))
    for value in range(1, 401):
        answered(table, node(NodeId.from_int(value)))
    assert table.bucket_count == buckets
    assert NodeId.from_int(1) in table
    check_consistent(table)


def test_a_split_moves_cached_nodes_with_their_range() -> None:
    table = RoutingTable(OWN, 0.0)
    for n in range(8):
        answered(table, node(near(3, n)))
    waiting = node(near(0, 1))
    table.heard_from(waiting, 0.0, responded=False)  # cached: unconfirmed
    answered(table, node(near(4)))  # splits until bucket 0 stands apart
    status = table.status(waiting.id, 0.0)
    assert status is not None and not status.in_bucket
    check_consistent(table)


# -- node states -------------------------------------------------------------------------------


def test_good_then_questionable_after_15_minutes_then_good_again_by_query() -> None:
    table = RoutingTable(OWN, 0.0)
    a = node(near(2))
    answered(table, a, 100.0)

    def state(now: float) -> NodeState | None:
        status = table.status(a.id, now)
        return None if status is None else status.state

    assert state(100.0 + 15 * MINUTES - 0.1) is NodeState.GOOD
    assert state(100.0 + 15 * MINUTES) is NodeState.QUESTIONABLE
    table.heard_from(a, 2000.0, responded=False)  # answered once, queried us now: good
    assert state(2000.0 + 15 * MINUTES - 0.1) is NodeState.GOOD
    assert state(2000.0 + 15 * MINUTES) is NodeState.QUESTIONABLE


def test_two_failures_in_a_row_make_a_node_bad_an_answer_resets_a_query_does_not() -> None:
    table = RoutingTable(OWN, 0.0)
    a = node(near(2))
    answered(table, a, 0.0)
    table.failed(a, 1.0)
    assert table.status(a.id, 1.0).state is NodeState.GOOD  # type: ignore[union-attr]
    answered(table, a, 2.0)  # the count starts again
    table.failed(a, 3.0)
    table.heard_from(a, 4.0, responded=False)  # it queries us but never answers: no reset
    table.failed(a, 5.0)
    status = table.status(a.id, 5.0)
    assert status is not None and status.state is NodeState.BAD and status.failures == 2
    assert table.closest(OWN) == []  # a bad node is never handed out
    assert table.counts(5.0).bad == 1


def test_a_failure_reported_for_another_address_is_ignored() -> None:
    table = RoutingTable(OWN, 0.0)
    a = node(near(2))
    answered(table, a)
    impostor = NodeInfo(a.id, PeerAddress("10.200.0.1", 9999))
    table.failed(impostor, 1.0)
    table.failed(impostor, 2.0)
    assert table.status(a.id, 2.0).failures == 0  # type: ignore[union-attr]


# -- full buckets and replacement --------------------------------------------------------------


def test_full_bucket_of_good_nodes_caches_the_newcomer_and_pings_nobody() -> None:
    table = RoutingTable(OWN, 0.0)
    full_far_bucket(table)
    result = table.heard_from(node(near(0, 50)), 60.0, responded=True)
    assert result.admission is Admission.CACHED and result.to_ping == ()


def test_a_querier_of_the_full_last_bucket_is_pinged_and_its_answer_splits_the_bucket() -> None:
    """The one bucket (holding our id) is full of good nodes but can split: a node that
    queries us is worth a ping, at once and in ``questionable``; its answer splits the bucket."""
    table = RoutingTable(OWN, 0.0)
    for n in range(8):
        assert answered(table, node(near(3, n))) is Admission.ADDED
    assert table.bucket_count == 1
    querier = node(near(0, 1))
    result = table.heard_from(querier, 1.0, responded=False)
    assert result.admission is Admission.CACHED and result.to_ping == (querier,)
    later = node(near(1, 1))
    assert table.heard_from(later, 2.0, responded=False).to_ping == (later,)
    # Both unanswered: named again once ping_retry has passed (the table's nodes are good).
    assert table.questionable(40.0) == [querier, later]
    assert answered(table, querier, 41.0) is Admission.ADDED
    assert querier.id in table and table.bucket_count == 2 and len(table) == 9
    assert answered(table, later, 42.0) is Admission.ADDED  # the near half splits in turn
    assert table.bucket_count == 3 and len(table) == 10
    check_consistent(table)


def test_a_querier_of_a_full_bucket_that_cannot_split_is_not_pinged() -> None:
    table = RoutingTable(OWN, 0.0)
    full_far_bucket(table)  # bucket 0 is full and no longer the last
    querier = node(near(0, 77))
    assert table.heard_from(querier, 1.0, responded=False).to_ping == ()
    assert querier not in table.questionable(40.0)


def test_full_bucket_with_questionable_nodes_asks_to_ping_them_least_recent_first() -> None:
    table = RoutingTable(OWN, 0.0)
    far = [node(near(0, n)) for n in range(8)]
    for i, info in enumerate(far):
        answered(table, info, float(i))  # far[0] heard longest ago
    answered(table, node(near(5)), 0.0)
    now = 7.0 + 15 * MINUTES  # all eight questionable now
    result = table.heard_from(node(near(0, 50)), now, responded=True)
    assert result.admission is Admission.CACHED
    assert result.to_ping == tuple(far)
    # Within ping_retry, another newcomer does not repeat the pings; after it, it does.
    assert table.heard_from(node(near(0, 51)), now + 1, responded=True).to_ping == ()
    assert table.heard_from(node(near(0, 52)), now + 30, responded=True).to_ping == tuple(far)


def test_a_node_going_bad_is_replaced_at_once_by_the_freshest_confirmed_replacement() -> None:
    table = RoutingTable(OWN, 0.0)
    far = full_far_bucket(table)
    older, fresher = node(near(0, 60)), node(near(0, 61))
    unconfirmed = node(near(0, 62))
    answered(table, older, 10.0)
    answered(table, fresher, 20.0)
    table.heard_from(unconfirmed, 30.0, responded=False)
    table.failed(far[3], 40.0)
    assert far[3].id in table  # one failure: not bad yet
    table.failed(far[3], 41.0)
    assert far[3].id not in table and table.status(far[3].id, 41.0) is None
    assert fresher.id in table and older.id not in table
    assert table.status(older.id, 41.0).in_bucket is False  # type: ignore[union-attr]
    check_consistent(table)


def test_a_bad_node_without_replacement_stays_until_a_newcomer_takes_its_place() -> None:
    table = RoutingTable(OWN, 0.0)
    far = full_far_bucket(table)
    table.failed(far[0], 1.0)
    table.failed(far[0], 2.0)
    assert far[0].id in table and table.counts(2.0).bad == 1
    newcomer = node(near(0, 70))
    assert answered(table, newcomer, 3.0) is Admission.ADDED
    assert far[0].id not in table and newcomer.id in table
    check_consistent(table)


def test_unconfirmed_cached_nodes_are_pinged_when_a_bucket_has_a_bad_node() -> None:
    table = RoutingTable(OWN, 0.0)
    far = full_far_bucket(table)
    waiting = node(near(0, 80))
    assert table.heard_from(waiting, 1.0, responded=False).to_ping == ()  # bucket full of good
    table.failed(far[0], 2.0)
    table.failed(far[0], 3.0)  # bad, and no confirmed replacement
    assert waiting in table.questionable(100.0)
    assert answered(table, waiting, 101.0) is Admission.ADDED
    assert far[0].id not in table


def test_a_cached_node_that_fails_twice_is_forgotten() -> None:
    table = RoutingTable(OWN, 0.0)
    full_far_bucket(table)
    waiting = node(near(0, 80))
    answered(table, waiting, 1.0)
    table.failed(waiting, 2.0)
    table.failed(waiting, 3.0)
    assert table.status(waiting.id, 3.0) is None
    check_consistent(table)


def test_replacement_cache_is_bounded_dropping_unconfirmed_then_oldest() -> None:
    table = RoutingTable(OWN, 0.0, limits=RoutingLimits(max_replacements=3))
    full_far_bucket(table)
    u = node(near(0, 90))
    table.heard_from(u, 1.0, responded=False)
    c1, c2, c3 = (node(near(0, 91 + i)) for i in range(3))
    answered(table, c1, 2.0)
    answered(table, c2, 3.0)
    assert table.counts(3.0).replacements == 3
    assert answered(table, c3, 4.0) is Admission.CACHED  # the unconfirmed one makes room
    assert table.status(u.id, 4.0) is None
    late = node(near(0, 99))
    refused = table.heard_from(late, 5.0, responded=False)
    assert refused.admission is Admission.REFUSED and refused.refusal is Refusal.CACHE_FULL
    c4 = node(near(0, 100))
    assert answered(table, c4, 6.0) is Admission.CACHED  # the oldest confirmed makes room
    assert table.status(c1.id, 6.0) is None
    assert table.counts(6.0).replacements == 3
    check_consistent(table)


def test_remove_promotes_a_replacement() -> None:
    table = RoutingTable(OWN, 0.0)
    far = full_far_bucket(table)
    spare = node(near(0, 40))
    answered(table, spare, 1.0)
    assert table.remove(far[2].id) and not table.remove(far[2].id)
    assert spare.id in table and len(table) == 9
    check_consistent(table)


# -- one node per IP and per id, BEP 42 ---------------------------------------------------------


def test_one_node_per_public_ip_and_one_address_per_id() -> None:
    table = RoutingTable(OWN, 0.0)
    a = node(near(2), "203.0.113.1", 1000)
    answered(table, a)
    same_ip = table.heard_from(node(near(3), "203.0.113.1", 2000), 1.0, responded=True)
    assert same_ip.refusal is Refusal.IP_IN_USE
    moved = table.heard_from(node(a.id, "203.0.113.2", 1000), 1.0, responded=True)
    assert moved.refusal is Refusal.ID_AT_OTHER_ADDRESS
    # The same IP and port answering under a new id: the node restarted with a new id.
    renamed = node(near(4), "203.0.113.1", 1000)
    assert table.heard_from(renamed, 2.0, responded=False).refusal is Refusal.IP_IN_USE
    assert answered(table, renamed, 3.0) is Admission.ADDED
    assert a.id not in table and renamed.id in table
    check_consistent(table)


def test_an_ip_in_a_replacement_cache_counts_too() -> None:
    table = RoutingTable(OWN, 0.0)
    table.heard_from(node(near(2), "198.51.100.7"), 0.0, responded=False)
    other = table.heard_from(node(near(3), "198.51.100.7", 7000), 0.0, responded=False)
    assert other.refusal is Refusal.IP_IN_USE


@pytest.mark.parametrize("host", ["127.0.0.1", "10.1.1.1", "192.168.0.9", "::1", "fd00::5"])
def test_local_nodes_on_one_ip_count_per_ip_and_port(host: str) -> None:
    """Eight nodes on one local IP (libtorrent sessions on loopback, a LAN host) all enter, as
    in bucket as in cache; one node per IP and port and one address per id still hold."""
    rng = random.Random(8)
    table = RoutingTable(OWN, 0.0, id_check=is_secure_node_id, ipv6=":" in host)
    sessions = [node(NodeId(rng.randbytes(20)), host, 6881 + i) for i in range(8)]
    for i, info in enumerate(sessions):
        assert answered(table, info, float(i)) is Admission.ADDED
    assert len(table) == 8 and {s.info for s in table.nodes(8.0)} == set(sessions)
    querier = node(NodeId(rng.randbytes(20)), host, 7000)
    assert table.heard_from(querier, 9.0, responded=False).admission is Admission.CACHED
    # Same IP and port under another id: refused on a query, replaces the old id on an answer.
    renamed = node(NodeId(rng.randbytes(20)), host, 6881)
    assert table.heard_from(renamed, 10.0, responded=False).refusal is Refusal.IP_IN_USE
    assert answered(table, renamed, 11.0) is Admission.ADDED
    assert sessions[0].id not in table and renamed.id in table
    moved = node(sessions[1].id, host, 7001)  # a known id from another port
    assert table.heard_from(moved, 12.0, responded=True).refusal is Refusal.ID_AT_OTHER_ADDRESS
    check_consistent(table)
    loaded = RoutingTable.load(table.dump(), 13.0, fallback_id=OWN, ipv6=":" in host).table
    assert {s.info for s in loaded.nodes(13.0)} == {s.info for s in table.nodes(13.0)}
    check_consistent(loaded)


def test_public_nodes_on_one_ip_still_count_once_whatever_their_ports() -> None:
    table = RoutingTable(OWN, 0.0)
    first = node(near(2), "203.0.113.9", 6881)
    assert answered(table, first) is Admission.ADDED
    for port, responded in ((6882, True), (6883, False)):
        other = node(near(3, port), "203.0.113.9", port)
        assert table.heard_from(other, 1.0, responded=responded).refusal is Refusal.IP_IN_USE
    v6 = RoutingTable(OWN, 0.0, ipv6=True)
    assert answered(v6, node(near(2), "2001:db8::9", 6881)) is Admission.ADDED
    second = node(near(3), "2001:db8::9", 6882)
    assert v6.heard_from(second, 1.0, responded=True).refusal is Refusal.IP_IN_USE
    assert len(table) == len(v6) == 1


def test_bep42_check_on_entry_with_local_addresses_exempt() -> None:
    rng = random.Random(3)
    table = RoutingTable(OWN, 0.0, id_check=is_secure_node_id)
    secure = NodeInfo(secure_node_id("124.31.75.21", 1, rng), PeerAddress("124.31.75.21", 1))
    insecure = NodeInfo(NodeId(b"\x55" * 20), PeerAddress("21.75.31.124", 1))
    assert answered(table, secure) is Admission.ADDED
    result = table.heard_from(insecure, 0.0, responded=True)
    assert result.refusal is Refusal.INSECURE_ID
    assert table.heard_from(insecure, 0.0, responded=False).refusal is Refusal.INSECURE_ID

    def refuse_all(node_id: NodeId, ip: str) -> bool:
        return False

    strict = RoutingTable(OWN, 0.0, id_check=refuse_all)
    for host in ("127.0.0.1", "10.0.0.1", "192.168.1.1"):  # local: never checked
        assert answered(strict, node(NodeId(rng.randbytes(20)), host)) is Admission.ADDED
    public = node(near(2), "8.8.8.8")
    assert strict.heard_from(public, 0.0, responded=True).refusal is Refusal.INSECURE_ID
    unchecked = RoutingTable(OWN, 0.0)  # no predicate: no check
    assert answered(unchecked, insecure) is Admission.ADDED


# -- closest -----------------------------------------------------------------------------------


def test_closest_matches_brute_force_and_leaves_bad_nodes_out() -> None:
    rng = random.Random(11)
    own = NodeId(rng.randbytes(20))
    table = RoutingTable(own, 0.0)
    for _ in range(3000):
        answered(table, node(NodeId(rng.randbytes(20))))
    members = [s.info for s in table.nodes(0.0)]
    for victim in members[::7]:
        table.failed(victim, 1.0)
        table.failed(victim, 2.0)
    alive = [s.info for s in table.nodes(2.0) if s.state is not NodeState.BAD]
    assert len(alive) < len(members)
    targets = [NodeId(rng.randbytes(20)) for _ in range(50)]
    targets += [own, NodeId.from_int(own.value ^ 1), NodeId.from_int(own.value ^ (1 << 159))]
    for target in targets:
        expected = sorted(alive, key=lambda info: distance(info.id, target))[:8]
        assert table.closest(target) == expected
    info_hash = InfoHash(rng.randbytes(20))
    assert (
        table.closest(info_hash, 3)
        == sorted(alive, key=lambda info: distance(info.id, info_hash))[:3]
    )
    assert table.closest(own, 0) == []


# -- refresh -----------------------------------------------------------------------------------


def test_quiet_buckets_get_a_random_target_in_their_range_once_per_15_minutes() -> None:
    rng = random.Random(5)
    table = RoutingTable(OWN, 0.0)
    full_far_bucket(table)
    for n in range(8):
        answered(table, node(near(1 + n % 3, n)))
    count = table.bucket_count
    assert count >= 3
    assert table.next_deadline() == 15 * MINUTES
    assert table.buckets_to_refresh(15 * MINUTES - 1, rng) == []
    assert answered(table, node(near(1, 1000)), 600.0) is Admission.ADDED  # bucket 1 changed
    targets = table.buckets_to_refresh(15 * MINUTES, rng)
    indexes = [min(bucket_index(OWN, t), count - 1) for t in targets]
    assert indexes == [i for i in range(count) if i != 1]
    assert table.buckets_to_refresh(15 * MINUTES + 1, rng) == []  # each asked once
    assert table.next_deadline() == 600.0 + 15 * MINUTES
    assert [min(bucket_index(OWN, t), count - 1) for t in table.buckets_to_refresh(1500, rng)] == [
        1
    ]


def test_refresh_targets_spread_over_the_last_buckets_whole_range() -> None:
    rng = random.Random(9)
    table = RoutingTable(OWN, 0.0)
    answered(table, node(near(0)))
    seen = set()
    for i in range(64):
        (target,) = table.buckets_to_refresh(15 * MINUTES * (i + 1), rng)
        seen.add(bucket_index(OWN, target) >= 1)  # the one bucket covers both halves
    assert seen == {True, False}


def test_a_query_from_a_node_does_not_count_as_a_change_of_its_bucket() -> None:
    table = RoutingTable(OWN, 0.0)
    a = node(near(0))
    answered(table, a, 0.0)
    table.heard_from(a, 800.0, responded=False)
    assert table.next_deadline() == 15 * MINUTES


# -- questionable ------------------------------------------------------------------------------


def test_questionable_lists_nodes_to_ping_bounded_and_not_twice_within_ping_retry() -> None:
    table = RoutingTable(OWN, 0.0)
    nodes = [node(near(n % 5, n)) for n in range(20)]
    for i, info in enumerate(nodes):
        answered(table, info, float(i))
    now = 20.0 + 15 * MINUTES
    first = table.questionable(now, limit=5)
    assert first == nodes[:5]  # least recently heard first
    second = table.questionable(now + 1, limit=100)
    assert len(second) == len(table) - 5 and not set(first) & set(second)
    assert table.questionable(now + 2) == []
    assert len(table.questionable(now + 31, limit=100)) == len(table)


# -- caps --------------------------------------------------------------------------------------


def test_a_flood_of_random_nodes_stays_within_the_caps() -> None:
    rng = random.Random(2)
    table = RoutingTable(NodeId(rng.randbytes(20)), 0.0)
    for i in range(20_000):
        info = node(NodeId(rng.randbytes(20)))
        table.heard_from(info, float(i), responded=rng.random() < 0.5)
    counts = table.counts(20_000.0)
    assert counts.nodes <= counts.buckets * 8
    assert counts.replacements <= counts.buckets * 8
    assert counts.buckets < 30  # ~log2(20,000 / 8) splits, far from the 160 cap
    check_consistent(table)


def test_limits_validated() -> None:
    with pytest.raises(ValueError, match="k must be positive"):
        RoutingLimits(k=0)
    with pytest.raises(ValueError, match="ping_retry"):
        RoutingLimits(ping_retry=-1)


# -- a new own id ------------------------------------------------------------------------------


def test_change_own_id_keeps_the_nodes_that_fit() -> None:
    table = populated()
    known = {s.info for s in table.nodes(0.0)} | {
        e.info for b in table._buckets for e in b.cache.values()
    }
    member = sorted(s.info for s in table.nodes(0.0))[0]
    table.change_own_id(member.id, 10.0)  # the worst case: a node has the id we take
    assert table.own_id == member.id and table.status(member.id, 10.0) is None
    check_consistent(table)
    kept = {s.info for s in table.nodes(10.0)}
    assert len(kept) >= 8
    assert all(s.state is NodeState.GOOD for s in table.nodes(10.0))  # history kept
    limits = table.limits
    for info in known - {member}:
        if table.status(info.id, 10.0) is None:  # dropped only when no room was left for it
            bucket = table._buckets[min(bucket_index(member.id, info.id), table.bucket_count - 1)]
            assert len(bucket.nodes) == limits.k and len(bucket.cache) == limits.max_replacements
    assert table.closest(member.id, 1) == sorted(kept, key=lambda i: distance(i.id, member.id))[:1]


@pytest.mark.parametrize("seed", range(4))
def test_random_operation_sequences_keep_the_table_consistent(seed: int) -> None:
    """Answers, queries, failures, removals, pings, refreshes and id changes in random order
    over a small population (so ids and IPs collide often; half the IPs local, counted per IP
    and port, half public): the indexes always agree."""
    rng = random.Random(seed)
    ids = [NodeId(rng.randbytes(20)) for _ in range(60)]
    hosts = [f"10.0.0.{i}" for i in range(1, 21)] + [f"203.0.113.{i}" for i in range(1, 21)]
    table = RoutingTable(ids[0], 0.0, limits=RoutingLimits(k=3, max_replacements=2))
    now = 0.0
    for _ in range(3000):
        now += rng.random() * 60
        info = NodeInfo(rng.choice(ids), PeerAddress(rng.choice(hosts), rng.choice((1, 2))))
        op = rng.random()
        if op < 0.4:
            result = table.heard_from(info, now, responded=True)
            assert result.admission is not Admission.REFUSED or result.refusal is not None
        elif op < 0.6:
            table.heard_from(info, now, responded=False)
        elif op < 0.85:
            table.failed(info, now)
        elif op < 0.9:
            table.remove(info.id)
        elif op < 0.95:
            table.questionable(now, limit=rng.randrange(5))
            table.buckets_to_refresh(now, rng)
        elif op < 0.97:
            table.change_own_id(rng.choice(ids), now)
        else:
            table = RoutingTable.load(
                table.dump(), now, fallback_id=ids[0], limits=table.limits
            ).table
        check_consistent(table)
        for status in table.nodes(now):
            assert status.info.id != table.own_id
