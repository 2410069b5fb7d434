"""One request to a UDP tracker (BEP 15) as a pure state machine: connect, request, retransmit.

Strategy: ``UdpExchange`` holds everything one announce or scrape needs between sending the
first datagram and knowing the outcome, and nothing else: no socket, no clock. The caller
(``udp_client``) sends the bytes it hands out, feeds back every datagram it receives with
``on_datagram(data, now)``, and calls ``on_timer(now)`` once ``deadline`` has passed. So the
whole retransmit schedule is tested with a fake clock, without sleeping.

Rules (BEP 15):
- Without a usable connection id the exchange first connects (protocol id 0x41727101980). An
  id is usable for ``lifetime`` (60) seconds after its connect reply; the caller caches it
  (``learned``) and hands it to later exchanges, which then skip the connect.
- Retransmission: a request unanswered for ``base * 2 ** n`` seconds is sent again, n = 0, 1 ...
  up to ``max_retransmits`` (15 * 2^n, n up to 8); after the last wait the exchange fails.
  n counts per request: the connect has its own, the announce or scrape starts again at 0
  once connected. A retransmission repeats the same bytes and transaction id, so a late
  answer to an earlier copy is still accepted.
- A request whose connection id expired while it was being retransmitted reconnects first
  (BEP 15: "rerequest a connection ID when it has expired"); that connect continues the
  request's n rather than resetting it, so the exchange stays bounded however slow the
  tracker is: at most 2 * (max_retransmits + 1) datagrams.
- Replies are checked by the shared codec. A reply with another transaction id is ignored (a
  stray, or a late answer to an earlier request), up to MAX_STRAY_REPLIES; more is a tracker
  talking nonsense and fails the exchange. Any other malformed reply fails it at once,
  naming the cause. An error packet is the tracker refusing us (``UdpTrackerError``), except
  when it answers a request that used a cached connection id: the id is then dropped
  (``forget_cached``) and the exchange connects afresh, once.
- ``timeout`` (optional) cuts the whole exchange short: used for ``stopped`` announces and
  scrapes, which must not linger.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from torviz.shared.errors import TrackerError
from torviz.shared.tracker import (
    CONNECTION_ID_LIFETIME,
    ConnectRequest,
    UdpTrackerError,
    decode_connect_response,
    encode_request,
)

__all__ = [
    "MAX_STRAY_REPLIES",
    "Connection",
    "RetransmitPolicy",
    "UdpExchange",
]

MAX_STRAY_REPLIES = 8
"""Replies with a wrong transaction id ignored in one exchange before it fails."""

_R = TypeVar("_R")


@dataclass(frozen=True, slots=True)
class RetransmitPolicy:
    """BEP 15's retransmit schedule: wait ``base * 2 ** n`` s, n = 0 .. ``max_retransmits``.

    Attributes:
        base: seconds of the first wait (BEP 15: 15).
        max_retransmits: retransmissions before giving up (BEP 15: 8).
    """

    base: float = 15.0
    max_retransmits: int = 8

    def __post_init__(self) -> None:
        if not self.base > 0 or not 0 <= self.max_retransmits <= 16:
            raise ValueError(f"unusable retransmit policy {self!r}")

    def wait(self, n: int) -> float:
        """Seconds to wait for a reply after the n-th (re)transmission, n from 0."""
        return math.ldexp(self.base, min(n, self.max_retransmits))

    @property
    def request_bound(self) -> float:
        """Seconds one request may take at most: every wait of the schedule added up."""
        return self.base * ((1 << (self.max_retransmits + 1)) - 1)

    @property
    def exchange_bound(self) -> float:
        """Seconds one exchange may take at most: a connect, then a request (which may
        reconnect, continuing its schedule)."""
        return 2 * self.request_bound


@dataclass(frozen=True, slots=True)
class Connection:
    """A connection id and when its connect reply arrived."""

    connection_id: int
    obtained: float

    def usable(self, now: float, lifetime: float = CONNECTION_ID_LIFETIME) -> bool:
        return now - self.obtained < lifetime


class _Phase(enum.Enum):
    CONNECTING = "connecting"
    REQUESTING = "requesting"
    DONE = "done"


class UdpExchange(Generic[_R]):
    """One announce or scrape to one UDP tracker address.

    Args:
        encode: builds the request datagram from a connection id and a transaction id.
        decode: checks a reply against the transaction id (the shared codec's decoder).
        now: when the exchange starts.
        new_tid: draws a 32-bit transaction id.
        policy: the retransmit schedule.
        cached: a connection id from an earlier exchange with this address, if any.
        timeout: seconds after which the exchange fails whatever the schedule says; None:
            only the schedule ends it.
        lifetime: seconds a connection id stays usable.
    """

    def __init__(
        self,
        encode: Callable[[int, int], bytes],
        decode: Callable[[bytes, int], _R],
        *,
        now: float,
        new_tid: Callable[[], int],
        policy: RetransmitPolicy,
        cached: Connection | None = None,
        timeout: float | None = None,
        lifetime: float = CONNECTION_ID_LIFETIME,
    ) -> None:
        self._encode = encode
        self._decode = decode
        self._new_tid = new_tid
        self._policy = policy
        self._lifetime = lifetime
        self._started = now
        self._timeout = timeout
        self._give_up_at = math.inf if timeout is None else now + timeout
        self._connection = cached if cached is not None and cached.usable(now, lifetime) else None
        self._from_cache = self._connection is not None
        self._phase = _Phase.CONNECTING
        self._rekeying = False
        self._n = 0
        self._tid = 0
        self._packet = b""
        self._sent_at = now
        self._strays = 0
        self.sent = 0
        """Datagrams handed out so far (first sends and retransmissions)."""
        self.learned: Connection | None = None
        """A connection id this exchange obtained; the caller takes it for its cache (and sets
        this back to None)."""
        self.forget_cached = False
        """The tracker refused the cached connection id: drop it from the cache."""
        self.outcome: _R | TrackerError | None = None
        """The decoded reply, or the error that ended the exchange; None while it runs.
        A ``UdpTrackerError`` is the tracker's refusal (an error packet)."""

    # --- queries ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._phase is _Phase.DONE

    @property
    def deadline(self) -> float:
        """When ``on_timer`` must be called next (inf once done)."""
        if self.done:
            return math.inf
        return min(self._sent_at + self._policy.wait(self._n), self._give_up_at)

    # --- events -------------------------------------------------------------------------------

    def start(self, now: float) -> bytes:
        """The first datagram: the request itself with a usable cached id, else a connect."""
        if self._connection is not None:
            return self._send_request(now)
        return self._send_connect(now)

    def on_timer(self, now: float) -> bytes | None:
        """Time passed: the datagram to retransmit, or None (not due yet, or given up)."""
        if self.done or now < self.deadline:
            return None
        if now >= self._give_up_at:
            limit = f"{self._timeout:g}" if self._timeout is not None else "?"
            self._fail(TrackerError("timed_out", f"timed out after {limit} s"))
            return None
        if self._n >= self._policy.max_retransmits:
            self._fail(TrackerError("timed_out", f"no reply after {self._n + 1} tries"))
            return None
        self._n += 1
        connection = self._connection
        expired = connection is not None and not connection.usable(now, self._lifetime)
        if self._phase is _Phase.REQUESTING and expired:
            self._rekeying = True
            return self._send_connect(now)
        self._sent_at = now
        self.sent += 1
        return self._packet

    def on_datagram(self, data: bytes, now: float) -> bytes | None:
        """A datagram from the tracker: the next datagram to send, or None.

        Never raises: a bad reply ends the exchange with ``outcome`` set to its error.
        """
        if self.done:
            return None
        try:
            if self._phase is _Phase.CONNECTING:
                reply = decode_connect_response(data, self._tid)
                self.learned = self._connection = Connection(reply.connection_id, now)
                self._from_cache = False
                if not self._rekeying:
                    self._n = 0  # a new request starts its own schedule
                self._rekeying = False
                return self._send_request(now)
            self.outcome = self._decode(data, self._tid)
            self._phase = _Phase.DONE
            return None
        except UdpTrackerError as refusal:
            if self._phase is _Phase.REQUESTING and self._from_cache:
                # Trackers forget ids early (restart, other rules): connect afresh, once.
                self.forget_cached = True
                self._from_cache = False
                self._connection = None
                self._n = 0
                return self._send_connect(now)
            self._fail(refusal)
            return None
        except TrackerError as error:
            if error.reason != "wrong_transaction":
                self._fail(error)
                return None
            self._strays += 1
            if self._strays > MAX_STRAY_REPLIES:
                text = f"the tracker sent {self._strays} replies with a wrong transaction id"
                self._fail(TrackerError("wrong_transaction", text))
            return None

    # --- internals ----------------------------------------------------------------------------

    def _send_connect(self, now: float) -> bytes:
        self._phase = _Phase.CONNECTING
        self._tid = self._new_tid()
        return self._transmit(encode_request(ConnectRequest(self._tid)), now)

    def _send_request(self, now: float) -> bytes:
        assert self._connection is not None
        self._phase = _Phase.REQUESTING
        self._tid = self._new_tid()
        return self._transmit(self._encode(self._connection.connection_id, self._tid), now)

    def _transmit(self, packet: bytes, now: float) -> bytes:
        self._packet = packet
        self._sent_at = now
        self.sent += 1
        return packet

    def _fail(self, error: TrackerError) -> None:
        """End the exchange with ``error``."""
        self.outcome = error
        self._phase = _Phase.DONE
