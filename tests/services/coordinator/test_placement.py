"""The placement policy: which peer agent dials the next peer."""

from __future__ import annotations

import pytest

from torviz.services.coordinator.core.placement import Load, choose


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ([], None),
        ([Load(0, 100, 0.0)], 0),
        # Fewer connections for the same capacity wins.
        ([Load(10, 100, 0.0), Load(3, 100, 0.0)], 1),
        # Shares of capacity, not raw counts: 20 of 200 beats 10 of 50.
        ([Load(10, 50, 0.0), Load(20, 200, 0.0)], 1),
        # A new agent (no connections, no traffic) takes the next peer.
        ([Load(30, 200, 5e7), Load(30, 200, 4e7), Load(0, 200, 0.0)], 2),
        # Same connections: the one carrying less traffic wins.
        ([Load(10, 100, 9e7), Load(10, 100, 1e7)], 1),
        # Traffic outweighs a few connections: 12 idle ones beat 10 busy ones.
        ([Load(10, 100, 9e7), Load(12, 100, 0.0)], 1),
        # A full agent is never chosen; when all are full, nobody is.
        ([Load(50, 50, 0.0), Load(90, 100, 9e7)], 1),
        ([Load(50, 50, 0.0), Load(100, 100, 0.0)], None),
        # Ties go to fewer connections, then to the agent that joined first.
        ([Load(0, 0, 0.0), Load(0, 0, 0.0)], 0),
        # Capacity not told yet (0) counts as a nominal one, not as full.
        ([Load(5, 0, 0.0), Load(50, 100, 0.0)], 0),
    ],
)
def test_choose(loads: list[Load], expected: int | None) -> None:
    assert choose(loads) == expected


def test_new_peers_spread_until_loads_even_out() -> None:
    loads = [Load(0, 100, 0.0), Load(0, 100, 0.0), Load(0, 50, 0.0)]
    for _ in range(100):
        index = choose(loads)
        assert index is not None
        old = loads[index]
        loads[index] = Load(old.connections + 1, old.capacity, old.rate)
    assert [load.connections for load in loads] == [40, 40, 20]
