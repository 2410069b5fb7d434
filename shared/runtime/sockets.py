"""ZeroMQ sockets for bus messages: one owner per socket, nothing blocks the caller.

Strategy: a ``BusSocket`` wraps one zmq.green DEALER or ROUTER socket and two greenlets. The
sender greenlet is the only code that sends: ``send()`` encodes at the call site (a schema bug
fails there) and queues the frames, so actors and other greenlets never touch the socket and
multipart frames of two senders cannot interleave. The receiver greenlet is the only code that
receives: it reads at most ``_MAX_FRAMES`` frames per message (the rest is drained and thrown
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
it is a CURVE client whose handshakes a ``curve.HandshakeWatch`` follows (a monitor greenlet,
closed with the socket): a failure (a refused key, a wrong server key, a server without CURVE)
is counted in ``stats.auth_failures`` and logged at error at most once per 30 s, and since
libzmq gives up on a refused connection, the watch connects again, backing off from 1 s to
30 s. A CURVE server with a hello policy also checks that the caller's key may speak for the agent
it names (``shared.bus.check_identity``): the ZAP handler names each admitted key, and ZeroMQ
hands that name over with every message (``User-Id``), and the key's role (``Role``): a
key registers only as the service kind of its role. A refused ``Hello`` is logged once per
key and address, then once a minute with a count.

Rules:
- Who may connect is settled before the first byte: ``bind`` refuses a tcp endpoint without a
  ``CurveServer`` (``needs_keys``: any local user can reach a loopback port), and binds an ipc
  socket 0600 in a folder only this user may enter (``shared.runtime.ipc``).
- Input is hostile: malformed messages are logged (the first few, then every 1000th), counted
  in ``stats`` and dropped; a handler that raises is counted too. Nothing here crashes on input.
- A bound endpoint may require the handshake (``hello_policy``): the socket answers ``Hello``
  itself and drops any other message from a peer it has not welcomed (``forget`` un-welcomes
  one). Its owner may veto a ``Hello`` that passed (``vet_hello``, called in the receiver
  greenlet: the coordinator refuses a second live process of an agent, the storage agent
  forgets the previous process of one), and may ask whether ZeroMQ still holds a connection
  for an identity (``reachable``: a process that exited has none).
- ``ControlClient`` is the short-lived request/reply helper for the CLI: plain blocking zmq in a
  plain process, zmq.green when gevent has patched threading. A refusal is reported at once as
  ``PermissionDeniedError``, never as a timeout: an ipc socket is probed with a plain connect
  first (another user's socket or folder: ``EACCES``), and a CURVE handshake is followed on a
  socket monitor (the daemon's ZAP handler refused the key, or the daemon's key is another).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.queue
import pykka
import zmq
import zmq.green
from zmq.utils.monitor import recv_monitor_message

from shared.bus import (
    MAX_DATA_BYTES,
    Goodbye,
    Heartbeat,
    Hello,
    HelloPolicy,
    Message,
    Rejected,
    RejectReason,
    ServiceKind,
    Welcome,
    check_hello,
    check_identity,
    decode_frames,
    encode_frames,
    make_hello,
    raise_if_rejected,
)
from shared.endpoints import is_tcp
from shared.errors import BusError, ConfigError

from .curve import CurveClient, CurveServer, HandshakeWatch, ServerHandshakeWatch
from .ipc import IpcState, bind_private, ipc_path, owner_of, probe_ipc
from .zap import ROLE_PROPERTY, RefusalThrottle, zap_handler

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

_MAX_FRAMES = 3  # routing identity + header + data
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


_STARTING_POLL = 0.1  # seconds between two probes of a starting daemon's socket


class DaemonUnreachableError(BusError):
    """No daemon answered a control request in time."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(
            "no_daemon",
            f"no torviz daemon at {endpoint}: start one with `torviz-coordinator start`",
        )
        self.endpoint = endpoint


class PermissionDeniedError(BusError):
    """The daemon is there, but this process may not talk to it (another user's socket, or a
    key the daemon does not admit)."""

    def __init__(self, endpoint: str, why: str) -> None:
        super().__init__("permission_denied", f"permission denied: {why}")
        self.endpoint = endpoint


def _needs_keys(endpoint: str, what: str) -> ConfigError:
    return ConfigError(
        "needs_keys",
        f"refusing to {what} {endpoint} without CURVE keys: any local user can reach a tcp "
        "port, loopback included (use ipc://, or keys from `torviz-coordinator keys init`)",
    )


def _recv_bounded(sock: zmq.Socket[Any]) -> list[zmq.Frame] | None:
    """One multipart message, or ``None`` when it had more than ``_MAX_FRAMES`` frames."""
    frames = [sock.recv(copy=False)]
    too_many = False
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv(copy=False)  # parts of a multipart arrive together: never waits
        if len(frames) < _MAX_FRAMES:
            frames.append(frame)
        else:
            too_many = True
    return None if too_many else frames


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
        self.welcomed: dict[bytes, Hello] = {}
        """ROUTER with ``hello_policy``: the ``Hello`` of every welcomed peer by identity."""
        self._router = socket_type == zmq.ROUTER
        self._handler = handler
        self._policy = hello_policy
        self._vet_hello = vet_hello
        self._max_peers = max_peers
        self._evict_oldest = evict_oldest
        self._max_pending = max_pending
        self._queue: gevent.queue.Queue[Any] = gevent.queue.Queue()  # bounded in _enqueue
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._closed = False
        self._watch: HandshakeWatch | None = None
        self._server_watch: ServerHandshakeWatch | None = None
        self._curve_server = isinstance(curve, CurveServer)
        self._own_key_name = curve.keys.name if isinstance(curve, CurveServer) else None
        self._key_names: dict[bytes, str] = {}
        self._refusals = RefusalThrottle()
        """Which refused ``Hello``s to log: once per key (or agent id) and address."""
        """CURVE server: the key name each welcomed peer was admitted with."""
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
            raise _needs_keys(endpoint, "bind")
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
        if self._policy is None:
            raise ValueError(f"{self.name}: only a ROUTER with a hello policy welcomes peers")
        self.welcomed.pop(identity, None)
        self._key_names.pop(identity, None)

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
                frames = _recv_bounded(self._socket)
            except zmq.ZMQError as exc:
                log.info("%s: receiver stops: %s", self.name, exc)
                return
            if frames is None:
                self._drop(None, "wrong_frame_count", f"more than {_MAX_FRAMES} frames")
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
            and self._policy is not None
            and not self._admit(sender, message, *self._caller(frames[0]))
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

    def _admit(
        self,
        sender: bytes,
        message: Message,
        key_name: str | None,
        key_role: str | None = None,
        address: str = "",
    ) -> bool:
        """The handshake gate of a bound endpoint; answers ``Hello`` itself."""
        assert self._policy is not None
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
            self._enqueue([sender, *encode_frames(answer)], answer)
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
            self.stats.unwelcomed += 1
            if not isinstance(message, Goodbye | Rejected | Welcome):
                # A peer that was welcomed by a previous incarnation of this endpoint (it
                # restarted) learns that it must introduce itself again.
                answer = Rejected(RejectReason.HELLO_FIRST, f"{self.name}: say Hello first")
                self._enqueue([sender, *encode_frames(answer)], answer)
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


def _green_default() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("threading"))


class ControlClient:
    """Request/reply over a DEALER to the coordinator's control endpoint, one request at a time.

    Args:
        endpoint: e.g. ``"ipc:///home/me/.local/state/torviz/control.sock"``.
        timeout: seconds to wait for each reply.
        green: use zmq.green (default: when gevent has patched threading).
        curve: the CURVE client settings; required for a tcp endpoint (from
            ``shared.runtime.curve.client_security``).
        identity: the routing identity, which is also the agent id ``hello`` gives (a CURVE
            endpoint admits only a caller whose identity is the agent id it names); default
            ``cli-<pid>-<random>``, so that concurrent commands never take over each other.

    After a ``DaemonUnreachableError`` the client must be closed: a late reply would be taken as the
    answer to the next request.

    Raises:
        DaemonUnreachableError: an ipc socket that is missing or that nobody listens on.
        PermissionDeniedError: an ipc socket this user may not connect to.
        ConfigError: ``needs_keys`` (a tcp endpoint without ``curve``), a malformed endpoint.
    """

    _HANDSHAKE_EVENTS = (
        zmq.EVENT_HANDSHAKE_FAILED_AUTH
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        | zmq.EVENT_HANDSHAKE_SUCCEEDED
    )

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = 5.0,
        green: bool | None = None,
        curve: CurveClient | None = None,
        identity: str | None = None,
        starting: float = 0.0,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.identity = identity or f"cli-{os.getpid()}-{secrets.token_hex(4)}"
        self._curve = curve
        path = ipc_path(endpoint)
        if path is not None:
            _probe(endpoint, path, starting)
        elif is_tcp(endpoint) and curve is None:
            raise _needs_keys(endpoint, "connect to")
        module: Any = zmq.green if (green if green is not None else _green_default()) else zmq
        self._poller_class = module.Poller
        self._socket: zmq.Socket[Any] = module.Context.instance().socket(zmq.DEALER)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.MAXMSGSIZE, MAX_DATA_BYTES)
        self._socket.setsockopt(zmq.ROUTING_ID, self.identity.encode())
        self._monitor: zmq.Socket[Any] | None = None
        if curve is not None:
            self._socket.setsockopt(zmq.CURVE_PUBLICKEY, curve.keys.public)
            self._socket.setsockopt(zmq.CURVE_SECRETKEY, curve.keys.secret)
            self._socket.setsockopt(zmq.CURVE_SERVERKEY, curve.server_public)
            self._monitor = self._socket.get_monitor_socket(self._HANDSHAKE_EVENTS)
        self._socket.connect(endpoint)

    def hello(self, agent_id: str | None = None, host: str = "", pid: int = 0) -> Welcome:
        """Introduce this client (as ``agent_id``, default its identity); returns the
        ``Welcome``.

        Raises:
            BusError: the daemon rejected us (``reason`` from ``Rejected``) or answered oddly.
            DaemonUnreachableError: no answer within the timeout.
            PermissionDeniedError: the daemon refused this client's key.
        """
        answer = self.request(make_hello(ServiceKind.CLI, agent_id or self.identity, host, pid))
        if not isinstance(answer, Welcome | Rejected):
            raise BusError("unexpected_reply", f"{type(answer).__name__} in answer to Hello")
        return raise_if_rejected(answer)

    def request(self, message: Message) -> Message:
        """Send one request and wait for its reply.

        Raises:
            DaemonUnreachableError: no answer within the timeout.
            PermissionDeniedError: the daemon refused this client's key.
            BusError: the reply is malformed.
        """
        self._socket.send_multipart(encode_frames(message), copy=False)
        poller = self._poller_class()
        poller.register(self._socket, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            ready = dict(poller.poll(max(1, int(left * 1000)))) if left > 0 else {}
            if self._socket in ready:
                break
            if self._monitor is not None and self._monitor in ready:
                self._handshake_event(self._monitor)
                continue
            raise DaemonUnreachableError(self.endpoint)
        frames = _recv_bounded(self._socket)
        if frames is None:
            raise BusError("wrong_frame_count", "the daemon's reply has too many frames")
        reply, _ = decode_frames([frame.buffer for frame in frames])
        return reply

    def _handshake_event(self, monitor: zmq.Socket[Any]) -> None:
        """Raise on a failed CURVE handshake: the daemon answers a refused key with nothing."""
        try:
            event = int(recv_monitor_message(monitor)["event"])
        except (RuntimeError, ValueError, KeyError):
            return  # a malformed event: libzmq's, and no verdict
        assert self._curve is not None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            raise PermissionDeniedError(
                self.endpoint,
                f"the daemon at {self.endpoint} does not admit the key "
                f"{self._curve.keys.name!r}: its control endpoint admits only the daemon's own "
                "key; run the command as the daemon's user, with its keys folder",
            )
        if event != zmq.EVENT_HANDSHAKE_SUCCEEDED:
            raise PermissionDeniedError(
                self.endpoint,
                f"the CURVE handshake with {self.endpoint} failed: the daemon's public key is "
                "not the coordinator.key in the keys folder given, or it uses no keys",
            )

    def close(self) -> None:
        """Close the socket at once (unsent requests are dropped)."""
        if self._monitor is not None:
            with contextlib.suppress(zmq.ZMQError):  # the socket is going away anyway
                self._socket.disable_monitor()
            self._monitor.close(linger=0)
        self._socket.close(linger=0)

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _probe(endpoint: str, path: str, starting: float = 0.0) -> None:
    """Fail at once, with the reason, when the ipc socket at ``path`` cannot be used.

    Args:
        starting: seconds to wait for a socket that is missing or not listening yet, because
            the daemon is known to be starting (its process runs but has not bound yet).
    """
    deadline = time.monotonic() + starting
    state = probe_ipc(path)
    while state in (IpcState.MISSING, IpcState.NOT_LISTENING) and time.monotonic() < deadline:
        time.sleep(_STARTING_POLL)
        state = probe_ipc(path)
    if state in (IpcState.MISSING, IpcState.NOT_LISTENING):
        raise DaemonUnreachableError(endpoint)
    if state is IpcState.DENIED:
        owner = owner_of(path)
        who = f"user {owner}" if owner else "another user"
        run_as = owner if owner else "the daemon's user"
        raise PermissionDeniedError(
            endpoint, f"{path} belongs to {who}: run the command as {run_as}"
        )


def control_request(
    endpoint: str,
    message: Message,
    *,
    timeout: float = 5.0,
    curve: CurveClient | None = None,
    starting: float = 0.0,
) -> Message:
    """Say hello to the daemon at ``endpoint``, send one request, return its reply.

    Args:
        endpoint: the control endpoint.
        message: the request.
        timeout: seconds to wait for each reply.
        curve: CURVE client settings, required for a tcp endpoint.
        starting: seconds to wait for an ipc socket that is not there yet (the daemon's
            process runs, so it is starting); 0 fails at once.

    Raises:
        DaemonUnreachableError: nothing answered within ``timeout`` seconds.
        PermissionDeniedError: the daemon is another user's, or refused our key.
        ConfigError: a tcp endpoint without ``curve``.
        BusError: the daemon rejected us or replied with a malformed message.
    """
    with ControlClient(endpoint, timeout=timeout, curve=curve, starting=starting) as client:
        client.hello()
        return client.request(message)
