"""Announce tokens on a fake clock: bound to the IP, rotated every 5 minutes, the previous secret
still accepted, nothing older."""

from __future__ import annotations

import hashlib
import itertools
import random

import pytest

from torviz.shared.dht.tokens import ROTATION_SECONDS, TOKEN_BYTES, TokenKeeper


def counter_bytes() -> tuple[list[bytes], TokenKeeper]:
    """A keeper whose secrets are 16 bytes of 0x01, 0x02, ... in order (visible in tests)."""
    handed: list[bytes] = []
    counter = itertools.count(1)

    def random_bytes(n: int) -> bytes:
        secret = bytes([next(counter)]) * n
        handed.append(secret)
        return secret

    return handed, TokenKeeper(0.0, random_bytes)


def seeded_keeper(seed: int = 7, now: float = 0.0) -> TokenKeeper:
    return TokenKeeper(now, random.Random(seed).randbytes)


def test_token_is_sha1_of_secret_and_packed_ip_truncated() -> None:
    secrets, keeper = counter_bytes()
    current = secrets[0]  # the first secret drawn is the current one
    assert keeper.token("1.2.3.4", 0.0) == hashlib.sha1(current + bytes([1, 2, 3, 4])).digest()[:8]
    assert len(keeper.token("2001:db8::1", 0.0)) == TOKEN_BYTES


def test_token_binds_the_ip_not_the_port_and_mapped_ipv4_is_ipv4() -> None:
    keeper = seeded_keeper()
    token = keeper.token("10.0.0.1", 1.0)
    assert keeper.is_valid(token, "10.0.0.1", 2.0)
    assert keeper.is_valid(token, "::ffff:10.0.0.1", 2.0)
    assert not keeper.is_valid(token, "10.0.0.2", 2.0)
    assert keeper.token("10.0.0.1", 3.0) == token  # stable within a rotation


def test_previous_secret_accepted_after_one_rotation_not_after_two() -> None:
    keeper = seeded_keeper()
    token = keeper.token("10.0.0.1", 0.0)
    assert keeper.is_valid(token, "10.0.0.1", ROTATION_SECONDS - 0.001)
    assert keeper.is_valid(token, "10.0.0.1", ROTATION_SECONDS)  # rotated once: previous
    assert keeper.token("10.0.0.1", ROTATION_SECONDS) != token
    assert keeper.is_valid(token, "10.0.0.1", 2 * ROTATION_SECONDS - 0.001)
    assert not keeper.is_valid(token, "10.0.0.1", 2 * ROTATION_SECONDS)


def test_a_token_never_outlives_ten_minutes_when_calls_are_sparse() -> None:
    """Rotation is lazy but stays on its 5-minute schedule: a token handed out at 4:59 under
    the secret of minute 0 dies at 10:00, even if nothing was called between 5:00 and 7:30."""
    keeper = seeded_keeper()
    token = keeper.token("10.0.0.1", 299.0)
    assert keeper.is_valid(token, "10.0.0.1", 450.0)  # first call after the due rotation
    assert keeper.next_deadline() == 600.0
    assert not keeper.is_valid(token, "10.0.0.1", 600.0)


def test_a_long_sleep_invalidates_both_secrets() -> None:
    keeper = seeded_keeper()
    token = keeper.token("10.0.0.1", 0.0)
    assert not keeper.is_valid(token, "10.0.0.1", 3 * ROTATION_SECONDS + 1)
    fresh = keeper.token("10.0.0.1", 3 * ROTATION_SECONDS + 1)
    assert keeper.is_valid(fresh, "10.0.0.1", 4 * ROTATION_SECONDS)


def test_a_clock_going_backwards_rotates_nothing() -> None:
    keeper = seeded_keeper(now=1000.0)
    token = keeper.token("10.0.0.1", 1000.0)
    assert keeper.is_valid(token, "10.0.0.1", 10.0)
    assert keeper.token("10.0.0.1", 10.0) == token


@pytest.mark.parametrize(
    "token", [b"", b"\x00" * 8, b"\x00" * 7, b"x" * 1000, b"\xff" * 20], ids=repr
)
def test_garbage_tokens_are_refused(token: bytes) -> None:
    assert not seeded_keeper().is_valid(token, "10.0.0.1", 1.0)


def test_bad_ip_is_invalid_not_an_exception_but_token_for_it_raises() -> None:
    keeper = seeded_keeper()
    assert not keeper.is_valid(b"\x00" * 8, "not an ip", 1.0)
    with pytest.raises(ValueError):
        keeper.token("not an ip", 1.0)


def test_two_keepers_give_different_tokens() -> None:
    assert seeded_keeper(1).token("10.0.0.1", 0.0) != seeded_keeper(2).token("10.0.0.1", 0.0)


def test_bad_parameters_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenKeeper(0.0, random.Random(1).randbytes, rotation=0)
    with pytest.raises(ValueError, match="3 bytes"):
        TokenKeeper(0.0, lambda n: b"abc")
