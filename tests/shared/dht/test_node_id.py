"""Node ids: the XOR metric, bucket numbering, refresh targets and BEP 42's secure ids.

The BEP 42 vectors are the table of BEP 42 itself (IP, rand, example id): each id must pass the
check for its IP, and an id we generate for that IP and rand must share its 21-bit prefix and
last byte (the other bits are random).
"""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from torviz.shared.dht.node_id import (
    ID_BITS,
    NodeId,
    NodeInfo,
    bucket_index,
    common_prefix_length,
    crc32c,
    distance,
    is_bep42_exempt,
    is_secure_node_id,
    random_id_in_bucket,
    random_node_id,
    secure_node_id,
)
from torviz.shared.types import InfoHash, PeerAddress

BEP42_VECTORS = [
    ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
    ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
    ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
    ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
    ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
]

ids = st.binary(min_size=20, max_size=20).map(NodeId)


def _prefix21(node_id: NodeId) -> int:
    return int.from_bytes(node_id.raw[:3], "big") >> 3


# -- NodeId ----------------------------------------------------------------------------------


def test_node_id_is_exactly_20_bytes() -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        NodeId(b"x" * 19)
    with pytest.raises(ValueError, match="20 bytes"):
        NodeId(b"x" * 21)
    with pytest.raises(ValueError, match="40 characters"):
        NodeId.from_hex("ab")
    with pytest.raises(ValueError, match="160-bit"):
        NodeId.from_int(1 << 160)
    with pytest.raises(ValueError, match="160-bit"):
        NodeId.from_int(-1)


def test_node_id_forms() -> None:
    node_id = NodeId.from_hex("00" * 19 + "ff")
    assert node_id.value == 255
    assert NodeId.from_int(255) == node_id
    assert repr(node_id) == "NodeId(" + "00" * 19 + "ff)"
    assert str(node_id) == node_id.hex == "00" * 19 + "ff"
    assert NodeId.from_info_hash(InfoHash(b"\x01" * 20)) == NodeId(b"\x01" * 20)
    assert NodeId.from_int(1) < NodeId.from_int(2) < NodeId(b"\x01" + b"\x00" * 19)
    info = NodeInfo(node_id, PeerAddress("127.0.0.1", 6881))
    assert str(info) == "00000000@127.0.0.1:6881"


def test_distance_is_xor() -> None:
    a = NodeId.from_int(0b1100)
    b = NodeId.from_int(0b1010)
    assert distance(a, b) == 0b0110
    assert distance(a, a) == 0
    assert distance(NodeId(b"\xff" * 20), NodeId(b"\x00" * 20)) == (1 << 160) - 1
    assert distance(a, InfoHash(b.raw)) == 0b0110


@given(ids, ids, ids)
def test_distance_is_a_metric(a: NodeId, b: NodeId, c: NodeId) -> None:
    assert distance(a, b) == distance(b, a)
    assert (distance(a, b) == 0) == (a == b)
    # XOR metric: d(a, c) <= d(a, b) + d(b, c) (it even holds for XOR: d(a,c) = d(a,b)^d(b,c))
    assert distance(a, c) == distance(a, b) ^ distance(b, c)
    assert distance(a, c) <= distance(a, b) + distance(b, c)


def test_common_prefix_length_and_bucket_index() -> None:
    zero = NodeId(b"\x00" * 20)
    assert common_prefix_length(zero, zero) == 160
    assert bucket_index(zero, zero) == 159  # capped: our own id has no bucket
    assert common_prefix_length(zero, NodeId(b"\x80" + b"\x00" * 19)) == 0
    assert common_prefix_length(zero, NodeId(b"\x01" + b"\x00" * 19)) == 7
    assert common_prefix_length(zero, NodeId.from_int(1)) == 159
    assert bucket_index(zero, NodeId(b"\x00\x40" + b"\x00" * 18)) == 9


@given(ids, st.integers(min_value=0, max_value=ID_BITS - 1), st.integers(min_value=0))
def test_random_id_in_bucket_lands_in_that_bucket(own: NodeId, index: int, seed: int) -> None:
    target = random_id_in_bucket(own, index, random.Random(seed))
    assert bucket_index(own, target) == index
    assert common_prefix_length(own, target) == index


def test_random_id_in_bucket_is_random_after_the_prefix() -> None:
    own = NodeId(b"\x00" * 20)
    rng = random.Random(7)
    targets = {random_id_in_bucket(own, 3, rng) for _ in range(50)}
    assert len(targets) == 50
    assert all(t.raw[0] >> 4 == 0b0001 for t in targets)  # 000 then the flipped 1
    with pytest.raises(ValueError, match="out of range"):
        random_id_in_bucket(own, 160, rng)
    with pytest.raises(ValueError, match="out of range"):
        random_id_in_bucket(own, -1, rng)


def test_random_node_id_uses_the_rng_given() -> None:
    assert random_node_id(random.Random(1)) == random_node_id(random.Random(1))
    assert random_node_id(random.Random(1)) != random_node_id(random.Random(2))


# -- BEP 42 ----------------------------------------------------------------------------------


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4
    assert crc32c(b"") == 0


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42_VECTORS)
def test_bep42_vectors_pass_the_check(ip: str, rand: int, example: str) -> None:
    node_id = NodeId.from_hex(example)
    assert node_id.raw[-1] == rand
    assert is_secure_node_id(node_id, ip)
    assert is_secure_node_id(node_id, ipaddress.ip_address(ip))
    assert is_secure_node_id(node_id, f"::ffff:{ip}")  # IPv4-mapped counts as IPv4


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42_VECTORS)
def test_bep42_vectors_are_generated(ip: str, rand: int, example: str) -> None:
    expected = NodeId.from_hex(example)
    for seed in range(5):
        node_id = secure_node_id(ip, rand, random.Random(seed))
        assert _prefix21(node_id) == _prefix21(expected)
        assert node_id.raw[-1] == rand
        assert is_secure_node_id(node_id, ip)


@pytest.mark.parametrize(("ip", "rand", "example"), BEP42_VECTORS)
def test_bep42_check_refuses_other_ids(ip: str, rand: int, example: str) -> None:
    good = NodeId.from_hex(example)
    for bit in range(21):  # any of the 21 prefix bits flipped
        assert not is_secure_node_id(NodeId.from_int(good.value ^ (1 << (159 - bit))), ip)
    # the three random bits after the prefix are free
    assert is_secure_node_id(NodeId.from_int(good.value ^ (0b111 << (159 - 23))), ip)
    # another r (the low 3 bits of the last byte) asks for another prefix
    other_r = NodeId(good.raw[:-1] + bytes([good.raw[-1] ^ 0x01]))
    assert not is_secure_node_id(other_r, ip)
    # the high bits of the last byte are not part of r
    assert is_secure_node_id(NodeId(good.raw[:-1] + bytes([good.raw[-1] ^ 0x80])), ip)
    # another address: the id belongs to the vector's address only
    assert not is_secure_node_id(good, "1.2.3.4")


def test_bep42_ignores_masked_out_bits() -> None:
    node_id = NodeId.from_hex(BEP42_VECTORS[0][2])  # 124.31.75.21
    # 0x03 keeps only the two low bits of the first octet: 124 & 3 == 252 & 3 == 0
    assert is_secure_node_id(node_id, "252.31.75.21")
    # 0x0f keeps the low nibble of the second octet: 31 & 0x0f == 0xff & 0x0f
    assert is_secure_node_id(node_id, "124.255.75.21")
    assert not is_secure_node_id(node_id, "125.31.75.21")


def test_bep42_ipv6_uses_the_top_64_bits() -> None:
    ip = "2001:db8:1234:5678::1"
    for rand in (0, 7, 200):
        node_id = secure_node_id(ip, rand, random.Random(rand))
        assert is_secure_node_id(node_id, ip)
        assert is_secure_node_id(node_id, "2001:db8:1234:5678:ffff:ffff:ffff:ffff")
        assert not is_secure_node_id(node_id, "2001:db8:1234:5679::1")
    # the IPv6 mask is 01 03 07 0f 1f 3f 7f ff, r in the top 3 bits of the first byte
    masked = bytes(
        a & m
        for a, m in zip(
            bytes.fromhex("20010db812345678"), b"\x01\x03\x07\x0f\x1f\x3f\x7f\xff", strict=True
        )
    )
    crc = crc32c(bytes([masked[0] | (5 << 5)]) + masked[1:])
    node_id = secure_node_id(ip, 5, random.Random(0))
    assert _prefix21(node_id) == crc >> 11


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.1.1",
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
    ],
)
def test_local_addresses_are_exempt(ip: str) -> None:
    assert is_bep42_exempt(ip)
    assert is_secure_node_id(NodeId(b"\x00" * 20), ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "172.32.0.1", "11.0.0.1", "2001:db8::1"])
def test_public_addresses_are_not_exempt(ip: str) -> None:
    assert not is_bep42_exempt(ip)


def test_secure_node_id_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="one byte"):
        secure_node_id("1.2.3.4", 256, random.Random(0))
    with pytest.raises(ValueError, match="one byte"):
        secure_node_id("1.2.3.4", -1, random.Random(0))
    with pytest.raises(ValueError):
        secure_node_id("not an ip", 1, random.Random(0))
    with pytest.raises(ValueError):
        is_secure_node_id(NodeId(b"\x00" * 20), "example.com")
