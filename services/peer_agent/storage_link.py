"""The peer agent's storage links: a DEALER to a storage agent's data endpoint, with the pieces
sent on it that the storage agent has not answered yet.

Strategy: torrents that share a storage endpoint share one ``StorageLink``; ``StorageLinks``
holds them by endpoint and opens each on first use, as a CURVE client with the agent's key pair
when ``AttachTorrent.storage_public_key`` names the endpoint's key (tcp only; ipc never uses
CURVE), plain otherwise. It opens with
``Hello`` and carries the agent's ``StorePiece`` (plus the piece's buffer, zero-copy) and
``ReadBlock`` messages. Every piece sent is kept in the link's ``Deliveries`` until its
``PieceStored`` arrives (see ``core/deliveries.py`` for the rules: the window, retries after passing
refusals, the resend of everything after a storage restart, probes, the reconnect of a link
silent for ``RECONNECT_AFTER`` seconds, and the answer timeout).
The agent actor hands the link what the storage agent says about the link itself (``Welcome``,
``Rejected``, ``PieceStored``, ``Heartbeat``: ``received``) and calls ``tick`` a few times a
second; connections call ``store`` and ``busy`` straight from their greenlets. Under gevent
nothing preempts, so these calls never interleave inside the link and need no lock.

Rules:
- One sender greenlet owns the socket (``BusSocket``): ``store`` and ``send`` only queue.
- A piece's buffer is sent again as it is (the same ``bytearray``, read, never written).
- ``busy`` is what stops the connections reading: the window is full, or ZeroMQ does not take
  the queued messages fast enough (``STORAGE_BACKLOG``).
- The DEALER's routing identity is the agent's process identity (``<agent id>/<incarnation>``,
  as on the coordinator's bus), so another process with the same agent id never takes over
  this link. A link opened again (silent too long) keeps it: the storage agent's ROUTER hands
  the identity over to the new connection.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable

from torviz.shared import bus
from torviz.shared.bus.hello import routing_identity
from torviz.shared.endpoints import parse_endpoint
from torviz.shared.errors import ConfigError
from torviz.shared.runtime.curve import CurveClient, KeyPair, check_public_key
from torviz.shared.runtime.link import process_incarnation
from torviz.shared.runtime.sockets import BusSocket, Incoming

from .core.deliveries import Deliveries, Delivery, Verdict

__all__ = ["STORAGE_BACKLOG", "STORAGE_HWM", "StorageLink", "StorageLinks"]

log = logging.getLogger(__name__)

STORAGE_HWM = 16
"""ZeroMQ's high-water mark on a storage link, in messages: what ZeroMQ may hold for it."""
STORAGE_BACKLOG = 16
"""Messages queued behind a full ZeroMQ queue on one storage link before readers pause. With
``STORAGE_HWM`` this bounds what waits for a slow storage agent to a few dozen pieces per link,
instead of ZeroMQ's default of a thousand (a gigabyte of 1 MiB pieces)."""


class StorageLink:
    """A DEALER to one storage agent's data endpoint and the pieces it has not answered.

    Args:
        endpoint: the storage agent's data endpoint.
        handler: gets every message that arrives (in the socket's receiver greenlet).
        identity: the DEALER's routing identity (``routing_identity(agent id, incarnation)``).
        hello: makes the ``Hello`` that opens the link (and reopens it after a restart).
        curve: CURVE client keys when the storage endpoint has a public key, else None.
        clock: monotonic seconds.
        deliveries: the bookkeeping of unanswered pieces (tests pass their own limits).

    Raises:
        zmq.ZMQError: the endpoint cannot be connected to (malformed, say).
    """

    def __init__(
        self,
        endpoint: str,
        handler: Callable[[Incoming], object],
        *,
        identity: str,
        hello: Callable[[], bus.Hello],
        curve: CurveClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        deliveries: Deliveries | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.deliveries = deliveries if deliveries is not None else Deliveries()
        self.reconnects = 0
        """Times the link was opened again after a silence."""
        self._handler = handler
        self._identity = identity
        self._curve = curve
        self._hello = hello
        self._clock = clock
        self._probes = itertools.count(1)
        self._socket = self._open()

    def _open(self) -> BusSocket:
        sock = BusSocket.dealer(
            self._handler,
            name=f"data {self.endpoint}",
            identity=self._identity,
            hwm=STORAGE_HWM,
            curve=self._curve,
        )
        try:
            sock.connect(self.endpoint)
        except Exception:
            sock.close(linger=0)
            raise
        return sock

    def start(self) -> None:
        """Start the socket's greenlets and say ``Hello``."""
        self._socket.start()
        self._socket.send(self._hello())

    def close(self) -> None:
        """Say ``Goodbye`` and close; pieces still unanswered are given up."""
        if self.deliveries:
            log.info(
                "storage %s: closing with %d pieces unanswered", self.endpoint, len(self.deliveries)
            )
        self._socket.send(bus.Goodbye("stopping"))
        self._socket.close()

    # -- the connections' side -------------------------------------------------------------------

    def store(self, message: bus.StorePiece, data: bytearray) -> None:
        """Send a finished piece and keep it until the storage agent answers for it."""
        self._socket.send(message, memoryview(data))  # a view, not a copy
        self.deliveries.sent(message, data, self._clock())

    def busy(self) -> bool:
        """Whether connections should stop reading: the window or the socket's queue is full."""
        return self.deliveries.full or self._socket.pending >= STORAGE_BACKLOG

    def send(self, message: bus.Message) -> bool:
        """Queue a message without a data frame (``ReadBlock``); False if it was dropped."""
        return self._socket.send(message)

    # -- the agent's side ------------------------------------------------------------------------

    def received(self, message: bus.Message) -> None:
        """Handle what the storage agent says about the link and the pieces sent on it."""
        now = self._clock()
        deliveries = self.deliveries
        match message:
            case bus.PieceStored():
                self._settled(message, now)
            case bus.Welcome(server_id=server_id):
                deliveries.welcomed()
                deliveries.heard(now)
                log.info("storage agent %s at %s welcomed us", server_id, self.endpoint)
            case bus.Rejected(reason=bus.RejectReason.HELLO_FIRST):
                resend = deliveries.restarted(now)
                if resend is None:
                    return  # an echo of the restart being handled
                log.info(
                    "the storage agent at %s restarted: saying hello and sending %d pieces again",
                    self.endpoint,
                    len(resend),
                )
                self._socket.send(self._hello())
                self._resend(resend)
            case bus.Rejected(reason, text):
                deliveries.heard(now)
                log.error(
                    "the storage agent at %s refused this agent (%s): %s",
                    self.endpoint,
                    reason,
                    text,
                )
            case _:
                deliveries.heard(now)

    def tick(self, now: float) -> None:
        """Open a link silent too long again, send again what is due, drop what went
        unanswered too long, probe a silent link."""
        deliveries = self.deliveries
        resend = deliveries.reconnect_due(now)
        if resend is not None:
            self._reconnect(resend)
        self._resend(deliveries.due(now))
        for delivery in deliveries.expired(now):
            log.warning(
                "gave up piece %d of %s: no answer from the storage agent in %.0f s",
                delivery.message.piece,
                delivery.message.info_hash,
                deliveries.answer_timeout,
            )
        if deliveries.probe_due(now):
            # A restarted storage agent answers hello_first; a live one ignores it.
            self._socket.send(bus.Heartbeat(next(self._probes)))

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do; None while nothing waits."""
        return self.deliveries.next_deadline()

    def _reconnect(self, resend: list[Delivery]) -> None:
        """A new socket to the same endpoint, ``Hello``, then every unanswered piece again."""
        log.warning(
            "no answer from the storage agent at %s for %.0f s with %d pieces waiting: "
            "connecting again and sending them again",
            self.endpoint,
            self.deliveries.reconnect_after,
            len(resend),
        )
        self.reconnects += 1
        old = self._socket
        try:
            fresh = self._open()
        except Exception as exc:  # connected once: it cannot fail now but for a bug
            log.error("storage %s: cannot connect again: %s", self.endpoint, exc)
            return
        old.close(linger=0)  # what it still queued is sent again below
        self._socket = fresh
        fresh.start()
        fresh.send(self._hello())
        self._resend(resend)

    def _resend(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._socket.send(delivery.message, memoryview(delivery.data))

    def _settled(self, stored: bus.PieceStored, now: float) -> None:
        settled = self.deliveries.settle(stored, now)
        delivery = settled.delivery
        match settled.verdict:
            case Verdict.GIVEN_UP:
                assert delivery is not None
                log.warning(
                    "gave up piece %d of %s: refused %d times (%s)",
                    stored.piece,
                    stored.info_hash,
                    delivery.attempts,
                    stored.reason,
                )
            case Verdict.REFUSED:
                log.warning(
                    "piece %d of %s dropped: the storage agent refused it (%s)",
                    stored.piece,
                    stored.info_hash,
                    stored.reason,
                )
            case Verdict.RETRY:
                log.debug(
                    "piece %d of %s refused (%s): sending it again",
                    stored.piece,
                    stored.info_hash,
                    stored.reason,
                )
            case Verdict.UNKNOWN:
                log.debug(
                    "answer for piece %d of %s that is not in flight ignored",
                    stored.piece,
                    stored.info_hash,
                )
            case Verdict.DONE:
                pass


class StorageLinks:
    """The agent's storage links by endpoint, each opened on first use.

    Args:
        handler: gets ``(endpoint, incoming)`` for every message of every link (in the
            links' receiver greenlets: it should only hand it to the actor).
        agent_id: this agent's id.
        hello: makes the ``Hello`` that opens a link.
        keys: the agent's own key pair, for endpoints that name a CURVE public key.
        clock: monotonic seconds.
        incarnation: the process's token in the links' routing identity (default:
            ``process_incarnation()``, as the coordinator link's).
        deliveries: makes each link's ``Deliveries`` (tests pass shorter limits).
    """

    def __init__(
        self,
        handler: Callable[[str, Incoming], None],
        *,
        agent_id: str,
        hello: Callable[[], bus.Hello],
        keys: KeyPair | None = None,
        clock: Callable[[], float] = time.monotonic,
        incarnation: str | None = None,
        deliveries: Callable[[], Deliveries] = Deliveries,
    ) -> None:
        self._handler = handler
        self._identity = routing_identity(agent_id, incarnation or process_incarnation())
        self._deliveries = deliveries
        self._hello = hello
        self._keys = keys
        self._clock = clock
        self._links: dict[str, StorageLink] = {}
        self._public_keys: dict[str, str] = {}

    def open(self, endpoint: str, public_key: str = "") -> StorageLink:
        """The link to ``endpoint``, opened (and started) on first use.

        Args:
            endpoint: the storage agent's data endpoint.
            public_key: its Z85 CURVE public key, or empty for none.

        Raises:
            zmq.ZMQError: the endpoint cannot be connected to.
            ConfigError: the key is malformed (``invalid_key``), or the endpoint uses CURVE
                and this agent has no key pair (``needs_keys``).
        """
        link = self._links.get(endpoint)
        if link is not None and self._public_keys.get(endpoint) == public_key:
            return link
        if link is not None:  # the storage agent there has a new key: connect again
            log.warning("storage at %s has a new key: connecting again", endpoint)
            link.close()
            del self._links[endpoint]

        def handler(incoming: Incoming) -> None:
            self._handler(endpoint, incoming)

        link = StorageLink(
            endpoint,
            handler,
            identity=self._identity,
            hello=self._hello,
            curve=self._curve(endpoint, public_key),
            clock=self._clock,
            deliveries=self._deliveries(),
        )
        link.start()
        self._links[endpoint] = link
        self._public_keys[endpoint] = public_key
        return link

    def get(self, endpoint: str) -> StorageLink | None:
        return self._links.get(endpoint)

    def tick(self, now: float) -> None:
        """Tick every link (see ``StorageLink.tick``)."""
        for link in list(self._links.values()):
            link.tick(now)

    def next_deadline(self) -> float | None:
        """The earliest deadline of any link; None while nothing waits anywhere."""
        deadlines = [d for link in self._links.values() if (d := link.next_deadline()) is not None]
        return min(deadlines, default=None)

    def close(self) -> None:
        for link in self._links.values():
            link.close()
        self._links.clear()

    def _curve(self, endpoint: str, public_key: str) -> CurveClient | None:
        if parse_endpoint(endpoint).scheme != "tcp":
            return None
        if not public_key:  # no tcp link goes in the clear: anyone may listen on a port
            raise ConfigError(
                "needs_keys",
                f"the storage agent at {endpoint} uses no CURVE key: a tcp data endpoint "
                "takes keys on both sides ([security] keys_dir), or use ipc",
            )
        server_public = check_public_key(public_key.encode(), f"the public key of {endpoint}")
        if self._keys is None:
            raise ConfigError(
                "needs_keys",
                f"the storage agent at {endpoint} uses CURVE and this agent has no keys: "
                "set [security] keys_dir (or --keys)",
            )
        return CurveClient(self._keys, server_public)
