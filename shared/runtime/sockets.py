"""ZeroMQ sockets for bus messages: one owner per socket, nothing blocks the caller.

Strategy: a ``BusSocket`` wraps one zmq.green DEALER or ROUTER socket and two greenlets. The
sender greenlet is the only code that sends: ``send()`` encodes at the call site (a schema bug
fails there) and queues the frames, so actors and other greenlets never touch the socket and
multipart frames of two senders cannot interleave. The receiver greenlet is the only code that
receives: it reads at most ``MAX_FRAMES`` frames per message (the rest is drained and thrown
away), decodes them with ``shared.bus.decode_frames`` and hands an ``Incoming`` to the handler.
zmq.green keeps separate read and write events, so exactly one reader and one writer is safe.

A pykka actor owns its ``BusSocket``: it builds and starts it in ``on_start`` with
``handler=self.actor_ref.tell`` (every message becomes an actor message), sends from its own
handlers, and calls ``close()`` in ``on_stop``::

    def on_start(self) -> None:
        self.bus = BusSocket.dealer(self.actor_ref.tell, name="peer-agent", identity="pa1")
        self.bus.connect(self.config.coordinator)
        self.bus.start()
        self.bus.send(make_hello(ServiceKind.PEER_AGENT, "pa1", host, pid))

CURVE (set in the constructor, so before ``bind``/``connect``): given a ``CurveServer`` (from
``shared.runtime.curve.server_security`` or ``control_security``) a socket is a CURVE server in
the server's ZAP domain; the ZAP handler of its context (``shared.runtime.zap``) is started
first if it is not running, and decides which client keys are admitted. Given a ``CurveClient``
it is a CURVE client whose handshakes a ``HandshakeWatch`` (``shared.runtime.handshakes``)
follows (a monitor greenlet, closed with the socket): a failure (a refused key, a wrong server
key, a server without CURVE) is counted in ``stats.auth_failures`` and logged at error at most
once per 30 s, and since libzmq gives up on a refused connection, the watch connects again,
backing off from 1 s to 30 s.

A bound endpoint may require the handshake (``hello_policy``): its ``HelloGate``
(``shared.runtime.hello_gate``) answers ``Hello`` itself, checks a CURVE caller's key against
the agent it names, lets its owner veto (``vet_hello``), logs refusals, and drops any other
message from a peer not welcomed (``forget`` un-welcomes one).

The control client of the command line (``ControlClient``, ``control_request`` and their
errors) lives in ``shared.runtime.control`` and is importable from here as before.

Rules:
- Who may connect is settled before the first byte: ``bind`` refuses a tcp endpoint without a
  ``CurveServer`` (``needs_keys``: any local user can reach a loopback port), and binds an ipc
  socket 0600 in a folder only this user may enter (``shared.runtime.ipc``).
- Input is hostile: malformed messages are logged (the first few, then every 1000th), counted
  in ``stats`` and dropped; a handler that raises is counted too. Nothing here crashes on input.
- The owner may ask whether ZeroMQ still holds a connection for an identity (``reachable``: a
  process that exited has none).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.queue
import pykka
import zmq
import zmq.green

from torviz.shared.bus import (
    MAX_DATA_BYTES,
    Heartbeat,
    Hello,
    HelloPolicy,
    Message,
    Rejected,
    Welcome,
    decode_frames,
    encode_frames,
)
from torviz.shared.endpoints import is_tcp
from torviz.shared.errors import BusError

from .control import (
    ControlClient,
    DaemonUnreachableError,
    PermissionDeniedError,
    control_request,
)
from .control import _probe as _control_probe
from .curve import CurveClient, CurveServer
from .handshakes import HandshakeWatch, ServerHandshakeWatch
from .hello_gate import HelloGate
from .ipc import bind_private
from .socket_rules import MAX_FRAMES, needs_keys, recv_bounded
from .zap import ROLE_PROPERTY, zap_handler

__all__ = [
    "BusSocket",
    "ControlClient",
    "DaemonUnreachableError",
    "Incoming",
    "PermissionDeniedError",
    "SocketStats",
    "control_request",
]

log = logging.getLogger(__name__)

_probe = _control_probe  # tests/cli/test_daemon_starting.py imports it from here, as before
_YIELD_EVERY = 16  # messages received between two forced yields to other greenlets
_LOUD_DROPS = 10  # malformed messages logged at warning before going quiet
_STOP = object()

Frames = list[bytes | memoryview]
Handler = Callable[["Incoming"], object]


@dataclass(frozen=True, slots=True)
class Incoming:
    """One decoded message as it came off a socket."""

    message: Message
    data: memoryview | None
    """The data frame (piece or block bytes), zero-copy; ``None`` for header-only messages."""
    sender: bytes | None
    """The peer's routing identity on a ROUTER socket (pass it to ``send(to=...)``)."""


@dataclass(slots=True)
class SocketStats:
    """Counters of one socket, for logs and tests."""

    received: int = 0
    sent: int = 0
    malformed: int = 0
    unwelcomed: int = 0
    handler_errors: int = 0
    send_dropped: int = 0
    send_errors: int = 0
    auth_failures: int = 0
    """CURVE client: handshakes that failed (key refused, wrong server key, no CURVE)."""


class BusSocket:
    """A DEALER or ROUTER bus socket owned by a sender and a receiver greenlet.

    Args:
        socket_type: ``zmq.DEALER`` or ``zmq.ROUTER``.
        handler: called in the receiver greenlet with each ``Incoming`` (e.g. an actor's
            ``tell``); it must not block for long.
        name: shown in logs.
        identity: a DEALER's routing id, so the bound side sees a stable name across reconnects.
        hello_policy: ROUTER only: answer ``Hello`` here and drop messages from peers not
            welcomed. The ``Hello`` of a welcomed peer is still passed to the handler.
        max_pending: queued outgoing messages before ``send`` starts dropping.
        max_peers: ROUTER with ``hello_policy``: most peers welcomed at once.
        evict_oldest: ROUTER with ``hello_policy``: when ``max_peers`` are welcomed, forget the
            longest-welcomed one instead of refusing the newcomer. For the control endpoint,
            where every CLI command is a new, short-lived peer that never says goodbye.
        hwm: ZeroMQ's send and receive high-water marks (messages queued per peer) when set;
            a data endpoint lowers them so that queued pieces stay a few megabytes, not the
            gigabyte of ZeroMQ's default 1000 messages of 1 MiB.
        vet_hello: ROUTER with ``hello_policy``: called with the sender and its ``Hello`` once
            the policy would welcome it; a ``Rejected`` it returns is the answer instead (the
            callback logs it: the socket does not). Runs in the receiver greenlet: it must not
            block, and reads the owner's state between two of the owner's messages.
        context: a zmq.green context (default: the process-wide instance).
        curve: CURVE server or client settings (``None``: plain ZeroMQ, for ipc and inproc
            and for tcp without keys).

    Raises:
        ConfigError: a key file in the ``CurveServer``'s authorized folder is invalid.
    """

    def __init__(
        self,
        socket_type: int,
        handler: Handler,
        *,
        name: str,
        identity: str | None = None,
        hello_policy: HelloPolicy | None = None,
        max_pending: int = 10_000,
        max_peers: int = 1024,
        evict_oldest: bool = False,
        hwm: int | None = None,
        context: zmq.Context[Any] | None = None,
        curve: CurveServer | CurveClient | None = None,
        vet_hello: Callable[[bytes, Hello], Rejected | None] | None = None,
    ) -> None:
        if socket_type not in (zmq.DEALER, zmq.ROUTER):
            raise ValueError("a bus socket is a DEALER or a ROUTER")
        if hello_policy is not None and socket_type != zmq.ROUTER:
            raise ValueError("only the bound ROUTER side checks Hello")
        if vet_hello is not None and hello_policy is None:
            raise ValueError("vet_hello needs a hello_policy")
        if hwm is not None and hwm < 1:
            raise ValueError("a high-water mark is at least 1 (0 would mean no limit)")
        self.name = name
        self.stats = SocketStats()
        self._router = socket_type == zmq.ROUTER
        self._handler = handler
        self._max_pending = max_pending
        self._queue: gevent.queue.Queue[Any] = gevent.queue.Queue()  # bounded in _enqueue
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._closed = False
        self._watch: HandshakeWatch | None = None
        self._server_watch: ServerHandshakeWatch | None = None
        self._curve_server = isinstance(curve, CurveServer)
        self._own_key_name = curve.keys.name if isinstance(curve, CurveServer) else None
        self._gate: HelloGate | None = None
        if hello_policy is not None:
            self._gate = HelloGate(
                name,
                hello_policy,
                own_key_name=self._own_key_name,
                max_peers=max_peers,
                evict_oldest=evict_oldest,
                vet_hello=vet_hello,
                answer=self._answer,
                on_unwelcomed=self._count_unwelcomed,
            )
        self.welcomed: dict[bytes, Hello] = self._gate.welcomed if self._gate else {}
        """ROUTER with ``hello_policy``: the ``Hello`` of every welcomed peer by identity."""
        ctx = context if context is not None else zmq.green.Context.instance()
        if isinstance(curve, CurveServer):  # before any socket exists: trust() may raise
            zap_handler(ctx).trust(curve.keys, curve.authorized_dir, curve.domain)
        self._socket: zmq.Socket[Any] = ctx.socket(socket_type)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_DATA_BYTES)  # bigger frames: disconnect
        self._socket.setsockopt(zmq.LINGER, 0)
        if hwm is not None:  # before bind/connect: ZeroMQ reads them when a pipe is made
            self._socket.setsockopt(zmq.SNDHWM, hwm)
            self._socket.setsockopt(zmq.RCVHWM, hwm)
        if identity is not None:
            self._socket.setsockopt(zmq.ROUTING_ID, identity.encode())
        if self._router:
            self._socket.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a restarted agent takes over
        if curve is not None:
            self._apply_curve(curve)

    def _apply_curve(self, curve: CurveServer | CurveClient) -> None:
        sock = self._socket
        sock.setsockopt(zmq.CURVE_PUBLICKEY, curve.keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, curve.keys.secret)
        if isinstance(curve, CurveServer):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.ZAP_DOMAIN, curve.domain.encode())
            try:  # without a ZAP handler, refuse every client rather than admit them all
                sock.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
            except zmq.ZMQError as exc:  # a libzmq without the option: the handler runs anyway
                log.debug("%s: ZMQ_ZAP_ENFORCE_DOMAIN unavailable: %s", self.name, exc)
            self._server_watch = ServerHandshakeWatch(sock, self.name, self._count_auth_failure)
            return
        sock.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
        self._watch = HandshakeWatch(sock, self.name, curve.keys.name, self._count_auth_failure)

    def _count_auth_failure(self) -> None:
        self.stats.auth_failures += 1

    def _count_unwelcomed(self) -> None:
        self.stats.unwelcomed += 1

    def _answer(self, to: bytes, answer: Welcome | Rejected) -> None:
        """Queue the hello gate's answer to a peer."""
        self._enqueue([to, *encode_frames(answer)], answer)

    @classmethod
    def dealer(cls, handler: Handler, *, name: str, **kwargs: Any) -> BusSocket:
        """A connecting socket (agents, the CLI); see the class for ``kwargs``."""
        return cls(zmq.DEALER, handler, name=name, **kwargs)

    @classmethod
    def router(cls, handler: Handler, *, name: str, **kwargs: Any) -> BusSocket:
        """A bound socket serving many peers (coordinator bus, storage data endpoint)."""
        return cls(zmq.ROUTER, handler, name=name, **kwargs)

    @property
    def pending(self) -> int:
        """Messages queued and not yet handed to ZeroMQ."""
        return int(self._queue.qsize())

    def bind(self, endpoint: str) -> str:
        """Bind and return the actual endpoint (``tcp://127.0.0.1:*`` picks a free port).

        Raises:
            ConfigError: ``needs_keys`` (tcp, and this socket is no CURVE server), an ipc
                folder others may enter (``ipc_folder_not_private``), a malformed endpoint.
            zmq.ZMQError: the endpoint cannot be bound.
        """
        if is_tcp(endpoint) and not self._curve_server:
            raise needs_keys(endpoint, "bind")
        bind_private(self._socket, endpoint)
        return self._socket.getsockopt_string(zmq.LAST_ENDPOINT)

    def connect(self, endpoint: str) -> None:
        """Connect; ZeroMQ reconnects by itself and queues messages meanwhile.

        A CURVE client whose handshake is refused (its key unknown to the server, or the server
        speaks no CURVE) connects again after 1 s, then after twice as long each time up to
        30 s: a key added to the server's authorized folder is admitted without a restart.
        """
        self._socket.connect(endpoint)
        if self._watch is not None:
            self._watch.connected(endpoint)

    def start(self) -> None:
        """Spawn the sender and receiver greenlets (call once, from the hub's thread)."""
        if self._greenlets or self._closed:
            raise RuntimeError(f"{self.name}: socket already started or closed")
        self._greenlets = [gevent.spawn(self._send_loop), gevent.spawn(self._receive_loop)]
        if self._watch is not None:
            self._watch.start()
        if self._server_watch is not None:
            self._server_watch.start()

    def forget(self, identity: bytes) -> None:
        """Drop a welcomed peer: its next message other than ``Hello`` is answered
        ``Rejected("hello_first")`` (e.g. an agent declared dead after missed heartbeats).

        Raises:
            ValueError: the socket has no ``hello_policy``.
        """
        if self._gate is None:
            raise ValueError(f"{self.name}: only a ROUTER with a hello policy welcomes peers")
        self._gate.forget(identity)

    def reachable(self, identity: bytes) -> bool:
        """ROUTER: whether ZeroMQ holds a connection for ``identity`` right now.

        A process that exited (a crash, SIGKILL) has none once its socket's closing reached
        us; one that is alive has one, unless the network cut it (ZeroMQ reconnects). Asked by
        sending it a ``Heartbeat`` with ``ROUTER_MANDATORY`` set for that one send, which
        fails at once for an identity without a connection: a ROUTER's sends never wait, so
        this cannot interleave with the sender greenlet's messages.

        Raises:
            ValueError: on a DEALER.
        """
        if not self._router:
            raise ValueError(f"{self.name}: only a ROUTER addresses peers")
        if self._closed:
            return False
        sock = self._socket
        frames: Frames = [identity, *encode_frames(Heartbeat(0))]
        sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            return True  # connected, with its queue full
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EHOSTUNREACH:
                return False
            log.debug("%s: reachability of %r unknown: %s", self.name, identity, exc)
            return True
        finally:
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.stats.sent += 1
        return True

    def send(
        self, message: Message, data: bytes | memoryview | None = None, *, to: bytes | None = None
    ) -> bool:
        """Queue one message; returns at once.

        Args:
            message: any bus message.
            data: its data frame when ``HAS_DATA``; sent with ``copy=False``, so never reuse it.
            to: ROUTER only: the recipient's identity (``Incoming.sender``).

        Returns:
            False when the message was dropped: the socket is closed or the queue is full.

        Raises:
            BusError: the message breaks the schema (a bug on our side).
            ValueError: ``to`` given on a DEALER or missing on a ROUTER.
        """
        if (to is not None) != self._router:
            raise ValueError(f"{self.name}: a ROUTER needs `to`, a DEALER takes none")
        frames: Frames = encode_frames(message, data)
        if to is not None:
            frames.insert(0, to)
        return self._enqueue(frames, message)

    def close(self, linger: float = 1.0) -> None:
        """Stop both greenlets and close the socket.

        Args:
            linger: seconds to let queued messages go out before they are dropped.
        """
        if self._closed:
            return
        self._closed = True
        current = gevent.getcurrent()
        if self._greenlets:
            sender, receiver = self._greenlets
            self._queue.put(_STOP)
            sender.join(timeout=linger)
            for greenlet in (sender, receiver):
                if greenlet is not current:
                    greenlet.kill(block=True, timeout=1.0)
        while not self._queue.empty():  # what the sender never reached is lost: count it
            if self._queue.get_nowait() is not _STOP:
                self.stats.send_dropped += 1
        if self._watch is not None:
            self._watch.close()
        if self._server_watch is not None:
            self._server_watch.close()
        self._socket.close(linger=int(linger * 1000))

    def _enqueue(self, frames: Frames, message: Message) -> bool:
        if self._closed or self._queue.qsize() >= self._max_pending:
            self.stats.send_dropped += 1
            if _loud(self.stats.send_dropped):
                log.warning(
                    "%s: dropped outgoing %s (%d so far): %s",
                    self.name,
                    type(message).__name__,
                    self.stats.send_dropped,
                    "socket closed" if self._closed else f"{self._max_pending} already queued",
                )
            return False
        self._queue.put_nowait(frames)
        return True

    def _send_loop(self) -> None:
        while True:
            frames = self._queue.get()
            if frames is _STOP:
                return
            try:
                self._socket.send_multipart(frames, copy=False)
            except zmq.ZMQError as exc:
                self.stats.send_errors += 1
                log.warning("%s: send failed: %s", self.name, exc)
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
            else:
                self.stats.sent += 1

    def _receive_loop(self) -> None:
        count = 0
        while True:
            try:
                frames = recv_bounded(self._socket)
            except zmq.ZMQError as exc:
                log.info("%s: receiver stops: %s", self.name, exc)
                return
            if frames is None:
                self._drop(None, "wrong_frame_count", f"more than {MAX_FRAMES} frames")
                continue
            data_frame = self._dispatch(frames)
            count += 1
            if data_frame or count % _YIELD_EVERY == 0:
                gevent.sleep(0)  # a busy socket never blocks: let the actors run

    def _dispatch(self, frames: list[zmq.Frame]) -> bool:
        """Decode and hand on one message; returns whether it carried a data frame."""
        sender = None
        if self._router:
            sender = frames.pop(0).bytes
            if not frames:
                self._drop(sender, "wrong_frame_count", "no header frame")
                return False
        try:
            message, data = decode_frames([frame.buffer for frame in frames])
        except BusError as exc:
            self._drop(sender, exc.reason, exc.message)
            return False
        if (
            sender is not None
            and self._gate is not None
            and not self._gate.admit(sender, message, *self._caller(frames[0]))
        ):
            return False
        self.stats.received += 1
        try:
            self._handler(Incoming(message, data, sender))
        except pykka.ActorDeadError:
            # The owning actor is stopping; a message that arrives meanwhile has no one to read
            # it, which is no error (a late Goodbye at shutdown, say).
            self.stats.handler_errors += 1
            log.debug("%s: %s arrived after its actor stopped", self.name, type(message).__name__)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("%s: handler failed on %s", self.name, type(message).__name__)
        return data is not None

    def _caller(self, frame: zmq.Frame) -> tuple[str | None, str | None, str]:
        """Who sent a message: the ZAP user id (our key name) and role of a CURVE client
        (``None``, ``None`` without CURVE; ``""`` if ZeroMQ has none), and its address."""
        key_name = key_role = None
        if self._own_key_name is not None:
            key_name, key_role = _property(frame, "User-Id"), _property(frame, ROLE_PROPERTY)
        return key_name, key_role, _property(frame, "Peer-Address")

    def _drop(self, sender: bytes | None, reason: str, detail: str) -> None:
        self.stats.malformed += 1
        count = self.stats.malformed
        if _loud(count):
            who = f" from {sender.hex()}" if sender else ""
            log.warning(
                "%s: dropped malformed message%s (%s, %d so far): %s",
                self.name,
                who,
                reason,
                count,
                detail,
            )


def _property(frame: zmq.Frame, name: str) -> str:
    """A ZeroMQ message property (``User-Id``, ``Peer-Address``, ZAP metadata); ``""`` if the
    message has none."""
    try:
        return str(frame.get(name))
    except zmq.ZMQError:
        return ""


def _loud(count: int) -> bool:
    """Whether the ``count``-th drop is logged: the first few, then every 1000th."""
    return count <= _LOUD_DROPS or count % 1000 == 0
