"""The agent's bookkeeping without sockets: attach, admission limits, keys, release."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from torviz.services.peer_agent.core.torrents import AttachError, ConnectRefusedError, Registry
from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import AttachMagnet, AttachTorrent
from torviz.shared.types import InfoHash, PeerAddress, PeerId

IH = InfoHash(hashlib.sha1(b"one").digest())
OTHER = InfoHash(hashlib.sha1(b"two").digest())
A = PeerAddress("127.0.0.2", 6881)
B = PeerAddress("127.0.0.3", 6881)
C = PeerAddress("::1", 6881)

ATTACH = AttachTorrent(
    info_hash=IH,
    piece_length=65536,
    total_length=65536 * 9 + 1,
    num_pieces=10,
    peer_id=PeerId(b"-TV0100-" + b"x" * 12),
    have=Bitfield(10, [0, 9]).to_bytes(),
    private=False,
    storage_endpoint="ipc:///tmp/data",
    storage_public_key="",
)


def registry(limit: int = 200) -> Registry[str]:
    reg: Registry[str] = Registry("pa1", limit)
    reg.attach(ATTACH)
    reg.attach(replace(ATTACH, info_hash=OTHER))
    return reg


def test_attach_builds_geometry_and_have_state() -> None:
    torrent = registry().torrent(IH)
    assert torrent is not None and torrent.geometry is not None
    assert torrent.geometry.num_pieces == 10
    assert torrent.geometry.piece_size(9) == 1
    assert torrent.have == Bitfield(10, [0, 9])
    assert torrent.storage_endpoint == "ipc:///tmp/data"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"num_pieces": 11}, "bad_geometry"),
        ({"piece_length": 65536 * 2}, "bad_geometry"),
        ({"total_length": 0}, "bad_geometry"),
        ({"have": b"\xff"}, "bad_have"),
        ({"have": b"\xff\xff"}, "bad_have"),  # spare bits set
    ],
)
def test_attach_refuses_inconsistent_torrents(change: dict[str, object], reason: str) -> None:
    reg: Registry[str] = Registry("pa1")
    with pytest.raises(AttachError) as caught:
        reg.attach(replace(ATTACH, **change))  # type: ignore[arg-type]
    assert caught.value.reason == reason
    assert reg.torrent(IH) is None


def test_keys_are_unique_and_never_reused() -> None:
    reg = registry()
    first = reg.reserve(IH, A)
    second = reg.reserve(IH, B)
    assert (first.key, second.key) == ("pa1/1", "pa1/2")
    reg.release(first.key)
    assert reg.reserve(IH, A).key == "pa1/3"


def test_web_seed_keys_share_the_counter_and_take_no_slot() -> None:
    reg = Registry[str]("pa1", max_connections=1)
    reg.attach(ATTACH)
    assert (reg.new_key(), reg.new_key()) == ("pa1/1", "pa1/2")
    assert reg.reserve(IH, A).key == "pa1/3"  # the one slot was still free
    assert len(reg) == 1


def test_one_connection_per_torrent_and_address() -> None:
    reg = registry()
    reg.reserve(IH, A)
    with pytest.raises(ConnectRefusedError) as caught:
        reg.reserve(IH, A)
    assert caught.value.reason == "already_connected"
    reg.reserve(OTHER, A)  # the same address for another torrent is another connection


def test_unknown_torrent_is_refused() -> None:
    with pytest.raises(ConnectRefusedError) as caught:
        Registry[str]("pa1").reserve(IH, A)
    assert caught.value.reason == "unknown_torrent"


def test_the_connection_limit_counts_every_torrent_and_frees_on_release() -> None:
    reg = registry(limit=2)
    first = reg.reserve(IH, A)
    reg.reserve(OTHER, B)
    with pytest.raises(ConnectRefusedError) as caught:
        reg.reserve(IH, C)
    assert caught.value.reason == "too_many_connections"
    assert reg.release(first.key) is first
    assert reg.release(first.key) is None
    reg.reserve(IH, C)
    assert len(reg) == 2


def test_lookup_checks_the_torrent() -> None:
    reg = registry()
    connection = reg.reserve(IH, A)
    reg.bind(connection.key, "handle")
    assert reg.lookup(IH, connection.key) is connection
    assert connection.handle == "handle"
    assert reg.lookup(OTHER, connection.key) is None
    assert reg.lookup(IH, "pa1/99") is None


def test_piece_verified_updates_have_and_names_the_connections() -> None:
    reg = registry()
    connection = reg.reserve(IH, A)
    reg.reserve(OTHER, B)
    assert reg.piece_verified(IH, 4) == [connection]
    torrent = reg.torrent(IH)
    assert torrent is not None and torrent.have is not None and 4 in torrent.have
    assert reg.piece_verified(IH, 10) == []  # out of range: ignored
    assert reg.piece_verified(InfoHash(b"\x00" * 20), 1) == []


def test_detach_hands_back_connections_which_release_later() -> None:
    reg = registry()
    connection = reg.reserve(IH, A)
    assert reg.detach(IH) == [connection]
    assert reg.torrent(IH) is None
    assert reg.detach(IH) == []
    assert len(reg) == 1  # still open until it reports its end
    assert reg.release(connection.key) is connection
    assert len(reg) == 0


def test_attach_again_keeps_connections() -> None:
    reg = registry()
    reg.reserve(IH, A)
    reg.attach(replace(ATTACH, have=Bitfield.full(10).to_bytes()))
    with pytest.raises(ConnectRefusedError):
        reg.reserve(IH, A)
    torrent = reg.torrent(IH)
    assert torrent is not None and torrent.have is not None and torrent.have.complete


def test_the_per_torrent_limit_counts_incoming_and_outgoing() -> None:
    reg: Registry[str] = Registry("pa1", 200, max_per_torrent=2)
    reg.attach(ATTACH)
    reg.attach(replace(ATTACH, info_hash=OTHER))
    reg.reserve(IH, A)
    reg.reserve(IH, PeerAddress("127.0.0.9", 40000), incoming=True)
    with pytest.raises(ConnectRefusedError) as caught:
        reg.reserve(IH, C, incoming=True)
    assert caught.value.reason == "too_many_for_torrent"
    reg.reserve(OTHER, C)  # another torrent has its own allowance


def test_banned_hosts_are_refused_and_named_for_closing() -> None:
    reg = registry()
    outgoing = reg.reserve(IH, A)
    incoming = reg.reserve(IH, PeerAddress("127.0.0.2", 50000), incoming=True)
    reg.reserve(IH, B)
    reg.reserve(OTHER, A)
    closing = reg.ban(IH, ["127.0.0.2", "not an address", "::ffff:127.0.0.7"])
    assert sorted(c.key for c in closing) == sorted([outgoing.key, incoming.key])
    for address, incoming_ in ((A, False), (PeerAddress("127.0.0.7", 1), True)):
        with pytest.raises(ConnectRefusedError) as caught:
            reg.reserve(IH, address, incoming=incoming_)
        assert caught.value.reason == "banned"
    assert reg.ban(InfoHash(b"\x00" * 20), ["127.0.0.2"]) == []
    reg.reserve(OTHER, PeerAddress("127.0.0.2", 1))  # banned for IH only


def test_bans_are_bounded_oldest_forgotten_first() -> None:
    reg = registry()
    hosts = [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(10_001)]
    reg.ban(IH, hosts[:5000])
    reg.ban(IH, hosts[5000:])
    torrent = reg.torrent(IH)
    assert torrent is not None and len(torrent.banned) == 10_000
    assert hosts[0] not in torrent.banned and hosts[-1] in torrent.banned


PEER = PeerId(b"-LT2110-" + b"p" * 12)


def test_a_second_connection_to_the_same_peer_id_is_refused() -> None:
    reg = registry()
    first = reg.reserve(IH, A)
    second = reg.reserve(IH, B)
    assert reg.claim(first.key, PEER) is None
    with pytest.raises(ConnectRefusedError) as caught:
        reg.claim(second.key, PEER)
    assert caught.value.reason == "duplicate_peer"
    other = reg.reserve(OTHER, B)
    assert reg.claim(other.key, PEER) is None  # another torrent: fine
    reg.release(first.key)
    third = reg.reserve(IH, C)
    assert reg.claim(third.key, PEER) is None  # the first one is gone


@pytest.mark.parametrize("ours_smaller", [True, False])
def test_a_crossed_dial_keeps_the_connection_opened_by_the_smaller_peer_id(
    ours_smaller: bool,
) -> None:
    reg = registry()
    ours = PeerId(b"\x00" * 20) if ours_smaller else PeerId(b"\xff" * 20)
    reg.attach(replace(ATTACH, peer_id=ours))
    dialled = reg.reserve(IH, A)
    accepted = reg.reserve(IH, PeerAddress(A.host, 50000), incoming=True)
    assert reg.claim(dialled.key, PEER) is None
    if ours_smaller:  # we opened the one to keep: the incoming one goes
        with pytest.raises(ConnectRefusedError):
            reg.claim(accepted.key, PEER)
    else:  # the peer opened the one to keep: it replaces ours
        assert reg.claim(accepted.key, PEER) == dialled.key
        reg.release(dialled.key)
        torrent = reg.torrent(IH)
        assert torrent is not None and torrent.peer_ids[PEER] == accepted.key


MAGNET = AttachMagnet(IH, PeerId(b"-TV0100-" + b"m" * 12))


def test_a_magnet_torrent_has_no_geometry_but_takes_connections_both_ways() -> None:
    reg: Registry[str] = Registry("pa1")
    torrent = reg.attach_magnet(MAGNET)
    assert torrent.geometry is None and torrent.have is None and torrent.storage_endpoint == ""
    assert reg.is_magnet(IH) and not reg.is_magnet(OTHER)
    dialled = reg.reserve(IH, A)
    incoming = reg.admit(IH, B, now=0.0).connection
    assert incoming.incoming
    assert reg.connections_of(IH) == [dialled, incoming]
    assert reg.piece_verified(IH, 0) == []  # no pieces before the geometry is known
    assert reg.claim(dialled.key, PeerId(b"-LT2110-" + b"1" * 12)) is None


def test_attach_upgrades_a_magnet_torrent_in_place_keeping_its_connections() -> None:
    reg: Registry[str] = Registry("pa1")
    magnet = reg.attach_magnet(MAGNET)
    first = reg.reserve(IH, A)
    peer = PeerId(b"-LT2110-" + b"1" * 12)
    reg.claim(first.key, peer)
    reg.ban(IH, ["10.0.0.9"])
    info = b"d4:name1:xe"
    torrent = reg.attach(replace(ATTACH, info=info, pex=True))
    assert not reg.is_magnet(IH)
    assert torrent.geometry is not None and torrent.geometry.num_pieces == 10
    assert torrent.have == Bitfield(10, [0, 9])
    assert (torrent.info, torrent.pex, torrent.storage_endpoint) == (info, True, "ipc:///tmp/data")
    assert torrent.partials is magnet.partials  # the sessions share it
    assert reg.connections_of(IH) == [first]
    assert reg.lookup(IH, first.key) is first
    with pytest.raises(ConnectRefusedError) as caught:
        reg.reserve(IH, A)
    assert caught.value.reason == "already_connected"
    with pytest.raises(ConnectRefusedError) as caught:
        reg.reserve(IH, PeerAddress("10.0.0.9", 1))
    assert caught.value.reason == "banned"
    second = reg.reserve(IH, B)
    with pytest.raises(ConnectRefusedError):
        reg.claim(second.key, peer)  # the peer id stayed known across the upgrade
    assert reg.piece_verified(IH, 3) == [first, second]


def test_a_private_torrent_never_offers_pex_and_a_magnet_never_downgrades() -> None:
    reg: Registry[str] = Registry("pa1")
    torrent = reg.attach(replace(ATTACH, private=True, pex=True))
    assert not torrent.pex
    assert reg.attach_magnet(MAGNET) is torrent  # attached already: nothing changes
    assert torrent.geometry is not None and not reg.is_magnet(IH)


def test_the_dht_port_is_kept_and_refreshed_and_never_for_a_private_torrent() -> None:
    reg: Registry[str] = Registry("pa1")
    assert reg.attach(ATTACH).dht_port == 0
    assert reg.attach(replace(ATTACH, dht_port=6881)).dht_port == 6881
    assert reg.attach(replace(ATTACH, dht_port=0)).dht_port == 0
    assert reg.attach(replace(ATTACH, dht_port=6881, private=True)).dht_port == 0


def test_a_magnet_torrent_keeps_its_dht_port_and_takes_a_new_one_until_its_metadata() -> None:
    reg: Registry[str] = Registry("pa1")
    assert reg.attach_magnet(replace(MAGNET, dht_port=6881)).dht_port == 6881
    assert reg.attach_magnet(replace(MAGNET, dht_port=7001)).dht_port == 7001
    reg.attach(replace(ATTACH, dht_port=7002))
    assert reg.attach_magnet(replace(MAGNET, dht_port=0)).dht_port == 7002  # a torrent now
