"""The routing table's file (``RoutingTable.dump``/``load``, ``table_file.py``): a round trip
keeps our id and the nodes, loaded nodes wait to be pinged, the BEP 42 check applies on load,
every broken file gives an empty table and a reason, bad entries are skipped one by one, and no
mangled file makes ``load`` raise.
"""

from __future__ import annotations

import random

import pytest

from tests.shared.dht.tables import OWN, answered, check_consistent, near, node, populated
from torviz.shared.bencode import encode
from torviz.shared.dht.routing import MAX_DUMP_BYTES, NodeState, RoutingTable


@pytest.mark.parametrize("ipv6", [False, True])
def test_dump_and_load_keep_id_and_nodes_loaded_nodes_are_questionable(ipv6: bool) -> None:
    table = populated(ipv6)
    loaded = RoutingTable.load(table.dump(), 5000.0, fallback_id=OWN, ipv6=ipv6)
    assert loaded.reason is None and loaded.skipped == 0
    again = loaded.table
    assert again.own_id == table.own_id
    assert {s.info for s in again.nodes(0.0)} == {s.info for s in table.nodes(0.0)}
    assert {s.state for s in again.nodes(5000.0)} == {NodeState.QUESTIONABLE}
    assert again.counts(5000.0).replacements == table.counts(0.0).replacements
    assert len(again.questionable(5000.0, limit=1000)) == len(again)
    check_consistent(again)


def test_load_applies_the_bep42_check_and_skips_refused_entries() -> None:
    table = RoutingTable(OWN, 0.0)
    answered(table, node(near(1), "10.0.0.1"))
    answered(table, node(near(2), "8.8.8.8"))
    loaded = RoutingTable.load(
        table.dump(), 0.0, fallback_id=OWN, id_check=lambda node_id, ip: False
    )
    assert loaded.reason is None and loaded.skipped == 1 and len(loaded.table) == 1


def _entry(node_id: bytes, ip: bytes, port: int) -> bytes:
    return node_id + ip + port.to_bytes(2, "big")


GOOD_ID = b"\x11" * 20

BROKEN = [
    (b"", "not bencode"),
    (b"garbage", "not bencode"),
    (b"d1:v", "not bencode"),
    (b"i1e", "not a dictionary"),
    (b"l" * 100 + b"e" * 100, "not bencode"),
    (encode({b"id": GOOD_ID, b"nodes": b""}), "version None"),
    (encode({b"v": 2, b"id": GOOD_ID, b"nodes": b""}), "version 2"),
    (encode({b"v": 1, b"id": b"short", b"nodes": b""}), "20-byte id"),
    (encode({b"v": 1, b"id": [GOOD_ID], b"nodes": b""}), "20-byte id"),
    (encode({b"v": 1, b"id": GOOD_ID, b"nodes": b"x" * 27}), "26-byte entries"),
    (encode({b"v": 1, b"id": GOOD_ID, b"nodes": [b"x" * 26]}), "26-byte entries"),
    (encode({b"v": 1, b"id": GOOD_ID}), "26-byte entries"),
    (b"d1:vi1e" + b"1:x" * 10, "not bencode"),  # truncated
    (encode({b"v": 1, b"id": GOOD_ID, b"nodes": b"x" * (MAX_DUMP_BYTES + 2)}), "over"),
]


@pytest.mark.parametrize(("data", "reason"), BROKEN, ids=[r for _, r in BROKEN])
def test_a_broken_file_gives_an_empty_table_and_a_reason(data: bytes, reason: str) -> None:
    loaded = RoutingTable.load(data, 0.0, fallback_id=OWN)
    assert loaded.reason is not None and reason in loaded.reason
    assert len(loaded.table) == 0 and loaded.table.own_id == OWN


def test_bad_entries_are_skipped_not_fatal() -> None:
    entries = [
        _entry(b"\x80" + b"\x00" * 19, bytes([10, 0, 0, 1]), 0),  # port 0
        _entry(b"\x80" + b"\x00" * 19, bytes([203, 0, 113, 2]), 80),
        _entry(b"\x80" + b"\x00" * 19, bytes([10, 0, 0, 3]), 81),  # same id again
        _entry(b"\x40" + b"\x00" * 19, bytes([203, 0, 113, 2]), 82),  # same public IP again
        _entry(GOOD_ID, bytes([10, 0, 0, 4]), 83),  # our own id
        _entry(b"\x20" + b"\x00" * 19, bytes([0, 0, 0, 0]), 84),  # unspecified address
        _entry(b"\x10" + b"\x00" * 19, bytes([224, 0, 0, 1]), 85),  # multicast
    ]
    data = encode({b"v": 1, b"id": GOOD_ID, b"nodes": b"".join(entries)})
    loaded = RoutingTable.load(data, 0.0, fallback_id=OWN)
    assert loaded.reason is None and loaded.skipped == 6 and len(loaded.table) == 1


def test_entries_pushed_out_of_a_full_replacement_cache_count_as_skipped() -> None:
    # 17 nodes of one bucket: 8 in it, 8 in its replacement cache, one pushed out.
    entries = [
        _entry(bytes([0x80, i]) + bytes(18), bytes([10, 0, 0, i + 1]), 6881) for i in range(17)
    ]
    data = encode({b"v": 1, b"id": bytes(20), b"nodes": b"".join(entries)})
    loaded = RoutingTable.load(data, 0.0, fallback_id=OWN)
    counts = loaded.table.counts(0.0)
    assert loaded.reason is None and (counts.nodes, counts.replacements) == (8, 8)
    assert loaded.skipped == 1


def test_mangled_dumps_never_raise() -> None:
    rng = random.Random(8)
    good = populated().dump()
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = bytes(data[: rng.randrange(len(data) + 1)]) if rng.random() < 0.3 else bytes(data)
        loaded = RoutingTable.load(cut, 0.0, fallback_id=OWN)
        check_consistent(loaded.table)
