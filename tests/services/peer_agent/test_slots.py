"""Who gets a connection slot: the per-host cap, the outgoing share, replacement of idle peers.

The policy (``slots.decide``) on rows written by hand with a fake clock, then the registry that
applies it and learns idleness from ``observe``.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from torviz.services.peer_agent.core.slots import (
    Admit,
    Occupant,
    Refuse,
    SlotLimits,
    decide,
    least_useful,
)
from torviz.services.peer_agent.core.torrents import ConnectRefusedError, Registry
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import AttachTorrent
from torviz.shared.types import InfoHash, PeerAddress, PeerId

LIMITS = SlotLimits(max_connections=200, max_per_torrent=10, max_per_host=2, replace_after=60.0)


def occupants(spec: str, now: float = 100.0) -> list[Occupant]:
    """One row per character: ``i``/``o`` an incoming/outgoing connection useful just now,
    ``I``/``O`` one idle since time 0; each from its own host, key ``k<n>``."""
    return [
        Occupant(f"k{n}", f"10.0.0.{n}", kind in "iI", 0.0 if kind.isupper() else now)
        for n, kind in enumerate(spec)
    ]


def test_limits_are_checked() -> None:
    assert LIMITS.max_incoming == 8  # 20% of the slots stay for our dials
    assert SlotLimits(max_per_torrent=2).max_incoming == 2  # the share rounds down
    assert SlotLimits(max_per_torrent=1, outgoing_share=0.9).max_incoming == 1
    for bad in (
        {"max_per_host": 0},
        {"max_per_torrent": 0},
        {"outgoing_share": 1.0},
        {"outgoing_share": -0.1},
        {"replace_after": -1.0},
    ):
        with pytest.raises(ValueError):
            replace(LIMITS, **bad)


def test_one_host_holds_at_most_its_cap_of_incoming_connections() -> None:
    rows = [Occupant("a", "10.9.9.9", True, 100.0), Occupant("b", "10.9.9.9", False, 100.0)]
    verdict = decide(LIMITS, rows, 2, "10.9.9.9", incoming=True, now=100.0)
    assert isinstance(verdict, Refuse) and verdict.reason == "too_many_from_host"
    assert decide(LIMITS, rows, 2, "10.1.1.1", incoming=True, now=100.0) == Admit()
    # The coordinator picks whom we dial: the cap does not apply to our dials.
    assert decide(LIMITS, rows, 2, "10.9.9.9", incoming=False, now=100.0) == Admit()


def test_incoming_peers_leave_the_outgoing_share_to_our_dials() -> None:
    rows = occupants("iiiiiiii")  # 8 incoming, all useful: the incoming share is full
    verdict = decide(LIMITS, rows, 8, "10.1.1.1", incoming=True, now=100.0)
    assert isinstance(verdict, Refuse) and verdict.reason == "too_many_incoming"
    assert decide(LIMITS, rows, 8, "10.1.1.1", incoming=False, now=100.0) == Admit()
    full = occupants("iiiiiiiioo")
    verdict = decide(LIMITS, full, 10, "10.1.1.1", incoming=False, now=100.0)
    assert isinstance(verdict, Refuse) and verdict.reason == "too_many_for_torrent"


def test_a_full_torrent_lets_a_newcomer_replace_the_connection_idle_longest() -> None:
    rows = occupants("ooiIoiIooi")  # full; k3 and k6 idle since 0
    rows[6] = replace(rows[6], useful_at=10.0)  # k3 has been idle longer
    assert decide(LIMITS, rows, 10, "10.1.1.1", incoming=True, now=100.0) == Admit("k3")
    # Idle, but not for long enough yet.
    verdict = decide(LIMITS, rows, 10, "10.1.1.1", incoming=True, now=59.0)
    assert isinstance(verdict, Refuse) and verdict.reason == "too_many_for_torrent"
    # Our dials never replace anyone.
    verdict = decide(LIMITS, rows, 10, "10.1.1.1", incoming=False, now=100.0)
    assert isinstance(verdict, Refuse)
    # Without replacement (``may_replace``) a full torrent refuses.
    verdict = decide(LIMITS, rows, 10, "10.1.1.1", incoming=True, now=100.0, may_replace=False)
    assert isinstance(verdict, Refuse)


def test_a_full_incoming_share_replaces_only_an_incoming_connection() -> None:
    rows = occupants("OIiiiiiii")  # 8 incoming (full share), k0 (ours) and k1 idle
    assert decide(LIMITS, rows, 9, "10.1.1.1", incoming=True, now=100.0) == Admit("k1")
    rows[1] = replace(rows[1], useful_at=100.0)  # only our dial is idle: it keeps its slot
    verdict = decide(LIMITS, rows, 9, "10.1.1.1", incoming=True, now=100.0)
    assert isinstance(verdict, Refuse) and verdict.reason == "too_many_incoming"


def test_a_full_agent_makes_room_in_the_same_torrent() -> None:
    rows = occupants("oIi")
    verdict = decide(LIMITS, rows, 200, "10.1.1.1", incoming=True, now=100.0)
    assert verdict == Admit("k1")
    verdict = decide(LIMITS, occupants("oii"), 200, "10.1.1.1", incoming=True, now=100.0)
    assert isinstance(verdict, Refuse) and verdict.reason == "too_many_connections"


def test_of_equally_idle_connections_the_busiest_host_loses_one() -> None:
    rows = [
        Occupant("a", "10.0.0.1", True, 0.0),
        Occupant("b", "10.0.0.2", True, 0.0),
        Occupant("c", "10.0.0.2", True, 0.0),
    ]
    chosen = least_useful(rows, 100.0, 60.0)
    assert chosen is not None and chosen.host == "10.0.0.2"
    assert least_useful(rows, 59.0, 60.0) is None
    assert least_useful([], 100.0, 60.0) is None


# -- the registry -----------------------------------------------------------------------------

IH = InfoHash(hashlib.sha1(b"slots").digest())
ATTACH = AttachTorrent(
    info_hash=IH,
    piece_length=65536,
    total_length=65536 * 10,
    num_pieces=10,
    peer_id=PeerId(b"-TV0100-" + b"x" * 12),
    have=Bitfield(10).to_bytes(),
    private=False,
    storage_endpoint="ipc:///tmp/data",
    storage_public_key="",
)


def registry(**limits: object) -> Registry[str]:
    reg: Registry[str] = Registry("pa1", **limits)  # type: ignore[arg-type]
    reg.attach(ATTACH)
    return reg


def test_the_registry_caps_each_host_ipv4_mapped_included() -> None:
    reg = registry(max_per_host=2)
    reg.admit(IH, PeerAddress("127.0.0.50", 1), now=0.0)
    reg.reserve(IH, PeerAddress("127.0.0.50", 6881))  # our dial to it counts too
    for host in ("127.0.0.50", "::ffff:127.0.0.50"):
        with pytest.raises(ConnectRefusedError) as caught:
            reg.admit(IH, PeerAddress(host, 2), now=0.0)
        assert caught.value.reason == "too_many_from_host"
    reg.admit(IH, PeerAddress("127.0.0.51", 1), now=0.0)


def test_the_registry_replaces_an_idle_connection_and_keeps_a_useful_one() -> None:
    reg = registry(max_per_torrent=3, outgoing_share=0.0, replace_after=60.0)
    busy = reg.admit(IH, PeerAddress("10.0.0.1", 1), now=0.0).connection
    idle = reg.admit(IH, PeerAddress("10.0.0.2", 1), now=0.0).connection
    late = reg.admit(IH, PeerAddress("10.0.0.3", 1), now=30.0).connection
    reg.observe(busy.key, 50.0, interested=True, payload=0)
    reg.observe(idle.key, 50.0, interested=False, payload=0)  # nothing: still idle since 0
    with pytest.raises(ConnectRefusedError) as caught:
        reg.admit(IH, PeerAddress("10.0.0.9", 1), now=59.0)  # nobody idle for 60 s yet
    assert caught.value.reason == "too_many_for_torrent"
    admitted = reg.admit(IH, PeerAddress("10.0.0.9", 1), now=61.0)
    assert admitted.replaced is idle
    assert reg.get(idle.key) is None and reg.release(idle.key) is None  # its slot is taken
    assert len(reg) == 3 and admitted.connection.useful_at == 61.0
    # Payload moving either way makes a connection useful, as interest does.
    reg.observe(late.key, 95.0, interested=False, payload=16384)
    reg.observe(busy.key, 95.0, interested=True, payload=0)
    with pytest.raises(ConnectRefusedError):
        reg.admit(IH, PeerAddress("10.0.0.10", 1), now=100.0)
    # ``reserve`` never replaces: dials are refused when full.
    with pytest.raises(ConnectRefusedError):
        reg.reserve(IH, PeerAddress("10.0.0.11", 1), now=1000.0)
    # Later, nothing moved since: the one idle longest (the newcomer, since 61) goes.
    reg.observe(late.key, 200.0, interested=False, payload=16384)
    again = reg.admit(IH, PeerAddress("10.0.0.10", 1), now=200.0)
    assert again.replaced is admitted.connection


def test_the_registry_keeps_the_outgoing_share_for_dials() -> None:
    reg = registry(max_per_torrent=5, outgoing_share=0.4, replace_after=1e9)
    for n in range(3):
        reg.admit(IH, PeerAddress(f"10.0.0.{n}", 1), now=0.0)
    with pytest.raises(ConnectRefusedError) as caught:
        reg.admit(IH, PeerAddress("10.0.1.1", 1), now=0.0)
    assert caught.value.reason == "too_many_incoming"
    reg.reserve(IH, PeerAddress("10.0.2.1", 1))
    reg.reserve(IH, PeerAddress("10.0.2.2", 1))
    with pytest.raises(ConnectRefusedError) as caught:
        reg.reserve(IH, PeerAddress("10.0.2.3", 1))
    assert caught.value.reason == "too_many_for_torrent"
