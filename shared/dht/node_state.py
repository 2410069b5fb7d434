"""The state file of a ``DhtNode``: its routing tables (one per address family) in one blob.

Strategy: each ``RoutingTable`` dumps itself (``table_file.py``); this module wraps the dumps of
both families in a bencoded dictionary keyed ``4`` and ``6`` and unwraps it at start. The blob is
untrusted (truncated, stale, garbage): reading never raises, it falls back to empty tables and
says why.

Rules:
- The id of the first family read (IPv4 when run) is ours; a second table saved under another id
  is rebuilt around it.
- A family not in the file (or not run before) starts empty; a family in the file but not run now
  is ignored.
"""

from __future__ import annotations

from torviz.shared.bencode import BencodeLimits, decode, encode
from torviz.shared.dht.node_id import NodeId
from torviz.shared.dht.routing import MAX_DUMP_BYTES, IdCheck, RoutingLimits, RoutingTable
from torviz.shared.errors import BencodeError

__all__ = ["dump_tables", "load_tables"]

_STATE_LIMITS = BencodeLimits(
    max_size=2 * MAX_DUMP_BYTES + 64, max_depth=2, max_string_length=MAX_DUMP_BYTES, max_items=4
)


def dump_tables(tables: dict[bool, RoutingTable]) -> bytes:
    """The state blob of the tables (keyed by family: True is IPv6)."""
    return encode({(b"6" if ipv6 else b"4"): t.dump() for ipv6, t in tables.items()})


def load_tables(
    saved: bytes | None,
    fallback: NodeId,
    now: float,
    *,
    families: list[bool],
    limits: RoutingLimits,
    id_check: IdCheck | None,
) -> tuple[dict[bool, RoutingTable], str | None]:
    """The tables from a state blob, or empty ones.

    Args:
        saved: ``dump_tables`` output from the last run, or None.
        fallback: Our id when the blob gives none.
        now: The clock.
        families: The families run now (False: IPv4, True: IPv6), in order.
        limits: The tables' parameters.
        id_check: The BEP 42 check for nodes entering them (None: no check).

    Returns:
        The tables by family, and why (part of) the blob was unusable, or None.
    """
    problem: str | None = None
    parts: dict[bytes, bytes] = {}
    if saved is not None:
        try:
            value = decode(saved, strict=True, limits=_STATE_LIMITS)
        except BencodeError as exc:
            value = None
            problem = f"DHT state is not bencode: {exc}"
        if isinstance(value, dict):
            parts = {k: v for k, v in value.items() if isinstance(v, bytes)}
        elif problem is None:
            problem = "DHT state is not a dictionary"
    tables: dict[bool, RoutingTable] = {}
    own = fallback
    for ipv6 in families:
        data = parts.get(b"6" if ipv6 else b"4")
        if data is None:
            tables[ipv6] = RoutingTable(own, now, limits=limits, id_check=id_check, ipv6=ipv6)
            continue
        loaded = RoutingTable.load(
            data, now, fallback_id=own, limits=limits, id_check=id_check, ipv6=ipv6
        )
        problem = loaded.reason or problem
        table = loaded.table
        if not tables:
            own = table.own_id  # the first family's saved id is ours
        elif table.own_id != own:
            table.change_own_id(own, now)
        tables[ipv6] = table
    return tables, problem
