"""Write tokens for ``announce_peer`` (BEP 5): handed out with ``get_peers``, checked on announce.

Strategy: a token is ``SHA1(secret + packed IP)[:8]``, so torviz keeps no per-requester state: it
recomputes the token of the announcing address and compares. The secret is rotated every
``rotation`` seconds (5 minutes, as BEP 5 suggests), lazily, on the first call after it is due;
the previous secret is kept, so a token stays valid for 5 to 10 minutes ("tokens up to ten minutes
old are accepted"). Pure: the caller passes ``now`` (monotonic seconds) and a source of random
bytes (``os.urandom`` in the shell, a seeded generator in tests).

Rules:
- A token binds the requester's IP only, not its port (BEP 5: the port may differ, e.g. behind NAT
  with ``implied_port``); IPv4-mapped IPv6 counts as the IPv4 address.
- After a gap of two rotations or more, both secrets are new: an old token is refused however
  long the caller slept.
- A clock that goes backwards rotates nothing; comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable

__all__ = ["ROTATION_SECONDS", "SECRET_BYTES", "TOKEN_BYTES", "TokenKeeper"]

ROTATION_SECONDS = 300.0
"""How often the secret changes (seconds); a token lives one to two of these."""

SECRET_BYTES = 16
TOKEN_BYTES = 8


class TokenKeeper:
    """The current and previous token secrets, rotated on a clock the caller passes in."""

    def __init__(
        self,
        now: float,
        random_bytes: Callable[[int], bytes],
        *,
        rotation: float = ROTATION_SECONDS,
    ) -> None:
        """Start with two fresh secrets.

        Args:
            now: The current time (monotonic seconds).
            random_bytes: Returns ``n`` unpredictable bytes (``os.urandom`` outside tests).
            rotation: Seconds between secret rotations (positive).

        Raises:
            ValueError: ``rotation`` is not positive.
        """
        if not rotation > 0:
            raise ValueError(f"token rotation must be positive, not {rotation}")
        self._random_bytes = random_bytes
        self._rotation = rotation
        self._current = self._new_secret()
        self._previous = self._new_secret()
        self._rotated_at = now

    def token(self, ip: str, now: float) -> bytes:
        """The token to hand to ``ip`` in a ``get_peers`` response.

        Args:
            ip: The requester's IP address (textual, IPv4 or IPv6).
            now: The current time (monotonic seconds).

        Returns:
            ``TOKEN_BYTES`` bytes.

        Raises:
            ValueError: ``ip`` is not an IP address.
        """
        self._rotate(now)
        return _token(self._current, _packed(ip))

    def is_valid(self, token: bytes, ip: str, now: float) -> bool:
        """Whether ``token`` was handed to ``ip`` under the current or the previous secret.

        Args:
            token: The token an ``announce_peer`` carries (any length; untrusted).
            ip: The announcer's IP address (textual).
            now: The current time (monotonic seconds).

        Returns:
            True when it matches either secret; False for anything else, including an ``ip``
            that is not an IP address.
        """
        self._rotate(now)
        try:
            packed = _packed(ip)
        except ValueError:
            return False
        return any(
            hmac.compare_digest(token, _token(secret, packed))
            for secret in (self._current, self._previous)
        )

    def next_deadline(self) -> float:
        """When the secret rotates next (monotonic seconds)."""
        return self._rotated_at + self._rotation

    def _rotate(self, now: float) -> None:
        elapsed = now - self._rotated_at
        if elapsed < self._rotation:
            return
        if elapsed >= 2 * self._rotation:
            self._previous = self._new_secret()
            self._rotated_at = now
        else:
            # Stay on the schedule, so no token outlives two rotations after it was handed out.
            self._previous = self._current
            self._rotated_at += self._rotation
        self._current = self._new_secret()

    def _new_secret(self) -> bytes:
        secret = self._random_bytes(SECRET_BYTES)
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"random source gave {len(secret)} bytes, not {SECRET_BYTES}")
        return secret


def _packed(ip: str) -> bytes:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.packed
    return address.packed


def _token(secret: bytes, packed_ip: bytes) -> bytes:
    return hashlib.sha1(secret + packed_ip).digest()[:TOKEN_BYTES]
