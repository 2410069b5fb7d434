"""The control client: one request to the daemon and its reply, for the command line.

Strategy: ``ControlClient`` is the short-lived request/reply helper for the CLI: a DEALER to the
coordinator's control endpoint, one request at a time, plain blocking zmq in a plain process,
zmq.green when gevent has patched threading. ``control_request`` says hello, sends one request
and returns the reply.

Rules:
- A refusal is reported at once as ``PermissionDeniedError``, never as a timeout: an ipc socket
  is probed with a plain connect first (another user's socket or folder: ``EACCES``), and a
  CURVE handshake is followed on a socket monitor (the daemon's ZAP handler refused the key, or
  the daemon's key is another).
- No answer within the timeout is ``DaemonUnreachableError``, after which the client is closed
  (a late reply would be taken as the answer to the next request).
- Replies are hostile input: at most ``MAX_FRAMES`` frames, decoded by the bus codec.
- Every name here is importable from ``shared.runtime.sockets`` too, where it lived before.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
import time
from typing import Any

import zmq
import zmq.green
from zmq.utils.monitor import recv_monitor_message

from torviz.shared.bus import (
    MAX_DATA_BYTES,
    Message,
    Rejected,
    ServiceKind,
    Welcome,
    decode_frames,
    encode_frames,
    make_hello,
    raise_if_rejected,
)
from torviz.shared.endpoints import is_tcp
from torviz.shared.errors import BusError

from .curve import CurveClient
from .ipc import IpcState, ipc_path, owner_of, probe_ipc
from .socket_rules import needs_keys, recv_bounded

__all__ = [
    "ControlClient",
    "DaemonUnreachableError",
    "PermissionDeniedError",
    "control_request",
]

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
            raise needs_keys(endpoint, "connect to")
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
        frames = recv_bounded(self._socket)
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
