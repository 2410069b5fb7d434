"""The handshake gate of a bound bus endpoint: which ``Hello`` is welcomed, and who is told no.

Strategy: a ROUTER ``BusSocket`` with a hello policy hands every message from a peer to its
``HelloGate`` before its owner sees it. The gate answers ``Hello`` itself (``Welcome`` or
``Rejected``, through the ``answer`` callback: the socket's sender greenlet sends it) and keeps
the welcomed peers; any other message passes only from a welcomed peer. A CURVE server's gate
also checks that the caller's key may speak for the agent it names (``shared.bus.
check_identity``): the ZAP handler names each admitted key, and ZeroMQ hands that name over with
every message (``User-Id``), and the key's role (``Role``): a key registers only as the service
kind of its role.

Rules:
- The owner may veto a ``Hello`` that passed (``vet_hello``, called in the receiver greenlet:
  the coordinator refuses a second live process of an agent, the storage agent forgets the
  previous process of one); the owner logs its own refusals.
- At most ``max_peers`` peers are welcomed at once: a newcomer is refused, or with
  ``evict_oldest`` the longest-welcomed peer is forgotten (the control endpoint, where every CLI
  command is a new peer that never says goodbye).
- A message from a peer not welcomed is dropped and counted; unless it is itself a handshake
  answer or a goodbye, the peer is told ``hello_first`` (a peer welcomed by a previous
  incarnation of this endpoint learns that it must introduce itself again).
- A refused ``Hello`` is logged once per key (or agent id without CURVE) and address, then
  once a minute with a count; the lines keep the logger of ``shared.runtime.sockets``, where
  this gate lived before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from torviz.shared.bus import (
    Goodbye,
    Hello,
    HelloPolicy,
    Message,
    Rejected,
    RejectReason,
    Welcome,
    check_hello,
    check_identity,
)

from .zap import RefusalThrottle

__all__ = ["HelloGate"]

log = logging.getLogger(f"{__package__}.sockets")  # the lines' logger since before the split


class HelloGate:
    """The welcomed peers of one bound endpoint, and the check of each message against them.

    Args:
        name: the socket's name in logs and refusals.
        policy: what a ``Hello`` must say to be welcomed.
        own_key_name: a CURVE server's own key name (``None``: no CURVE, no identity check).
        max_peers: most peers welcomed at once.
        evict_oldest: when ``max_peers`` are welcomed, forget the longest-welcomed one instead
            of refusing the newcomer.
        vet_hello: called with the sender and its ``Hello`` once the policy would welcome it; a
            ``Rejected`` it returns is the answer instead (the callback logs it).
        answer: sends a ``Welcome`` or ``Rejected`` to a sender (never blocks).
        on_unwelcomed: called once per message dropped for coming from a peer not welcomed.
    """

    def __init__(
        self,
        name: str,
        policy: HelloPolicy,
        *,
        own_key_name: str | None,
        max_peers: int,
        evict_oldest: bool,
        vet_hello: Callable[[bytes, Hello], Rejected | None] | None,
        answer: Callable[[bytes, Welcome | Rejected], object],
        on_unwelcomed: Callable[[], None],
    ) -> None:
        self.name = name
        self.welcomed: dict[bytes, Hello] = {}
        """The ``Hello`` of every welcomed peer by identity (never rebound: the socket shows it)."""
        self._policy = policy
        self._own_key_name = own_key_name
        self._max_peers = max_peers
        self._evict_oldest = evict_oldest
        self._vet_hello = vet_hello
        self._answer = answer
        self._on_unwelcomed = on_unwelcomed
        self._key_names: dict[bytes, str] = {}
        """CURVE server: the key name each welcomed peer was admitted with."""
        self._refusals = RefusalThrottle()
        """Which refused ``Hello``s to log: once per key (or agent id) and address."""

    def forget(self, identity: bytes) -> None:
        """Drop a welcomed peer: its next message other than ``Hello`` is refused.

        Args:
            identity: the peer's routing identity.
        """
        self.welcomed.pop(identity, None)
        self._key_names.pop(identity, None)

    def admit(
        self,
        sender: bytes,
        message: Message,
        key_name: str | None,
        key_role: str | None = None,
        address: str = "",
    ) -> bool:
        """Check one message from ``sender``; answers ``Hello`` itself.

        Args:
            sender: the peer's routing identity.
            message: what it sent.
            key_name: its CURVE key's name (``None`` without CURVE; ``""`` if ZeroMQ has none).
            key_role: its key's role, as the ZAP handler gave it.
            address: where it connected from, for refusal lines.

        Returns:
            Whether the message goes on to the socket's owner.
        """
        if isinstance(message, Hello):
            answer: Welcome | Rejected = check_hello(message, self._policy)
            if isinstance(answer, Welcome) and key_name is not None:
                assert self._own_key_name is not None
                taken = self._key_names.get(sender)
                refusal = check_identity(message, sender, key_name, self._own_key_name, key_role)
                if refusal is None and taken is not None and taken != key_name:
                    refusal = Rejected(
                        RejectReason.IDENTITY_NOT_ALLOWED,
                        f"{message.agent_id!r} is already here with the key of {taken!r}",
                    )
                answer = refusal or answer
            vetoed = False
            if isinstance(answer, Welcome) and self._vet_hello is not None:
                veto = self._vet_hello(sender, message)
                if veto is not None:
                    answer, vetoed = veto, True
            if sender not in self.welcomed and len(self.welcomed) >= self._max_peers:
                if self._evict_oldest:
                    del self.welcomed[next(iter(self.welcomed))]  # dicts keep insertion order
                else:
                    answer = Rejected(
                        RejectReason.TOO_MANY_PEERS, f"{self.name} serves {self._max_peers} peers"
                    )
            self._answer(sender, answer)
            if isinstance(answer, Rejected):
                if not vetoed:  # the vetoing owner logs its own refusals
                    self._log_refusal(message, answer, key_name, address)
                self.welcomed.pop(sender, None)
                return False
            log.info("%s: welcomed %s %s", self.name, message.service, message.agent_id)
            self.welcomed[sender] = message
            if key_name is not None:
                self._key_names[sender] = key_name
            return True
        if sender not in self.welcomed:
            self._on_unwelcomed()
            if not isinstance(message, Goodbye | Rejected | Welcome):
                # A peer that was welcomed by a previous incarnation of this endpoint (it
                # restarted) learns that it must introduce itself again.
                answer = Rejected(RejectReason.HELLO_FIRST, f"{self.name}: say Hello first")
                self._answer(sender, answer)
            return False
        if isinstance(message, Goodbye):
            del self.welcomed[sender]
            self._key_names.pop(sender, None)
        return True

    def _log_refusal(
        self, hello: Hello, answer: Rejected, key_name: str | None, address: str
    ) -> None:
        """Log a refused ``Hello`` at warning: the first of each key (or agent id without
        CURVE) and address, then one line a minute counting the others (a refused agent may
        be restarted for ever)."""
        who = (key_name or hello.agent_id).encode("utf-8", "replace")
        left_out = self._refusals.log_now(self.name, who, address, time.monotonic())
        if left_out is None:
            return
        again = f" ({left_out} more refusals since the last line)" if left_out else ""
        origin = f" from {address}" if address else ""
        log.warning(
            "%s: rejected %s%s: %s%s", self.name, hello.agent_id, origin, answer.message, again
        )
