"""Our ZAP handler (ZeroMQ RFC 27): which CURVE clients a bound socket admits.

Strategy: libzmq asks, during each handshake on a socket that uses ZAP, a handler bound at
``inproc://zeromq.zap.01`` of the socket's context, and waits for the answer. ``ZapHandler``
binds a zmq.green ROUTER there and answers in one greenlet. Deciding is pure: ``answer_zap``
takes the request frames and the known keys and returns the reply frames with the decision;
the greenlet only receives (bounded), reloads keys, logs and sends.

Who is admitted:
- CURVE: a client whose public key the request's ZAP domain admits: a key in an authorized
  folder trusted for that domain (``CurveServer.authorized_dir``), or one of this process's own
  public keys trusted for it; its ZAP user id is the key's name, and the reply's metadata
  carries the key's role (``ROLE_PROPERTY``): ZeroMQ attaches both to every message of that
  connection (``frame.get("User-Id")``, ``frame.get("Role")``), and ZAP metadata takes
  precedence over any property the client sends itself. Bus and data endpoints ask in
  ``torviz``; the control endpoint asks in ``torviz-control``, where only the coordinator's own
  key is trusted, so an agent's key opens the bus and never the control endpoint. An unknown
  key triggers a reload of the authorized folders (at most once per ``reload_interval``), so a
  key file added there is admitted without a restart.
- NULL: libzmq asks about NULL clients only when the bound socket set a ZAP domain (ZeroMQ
  4.3: an empty ``ZMQ_ZAP_DOMAIN`` means no ZAP for NULL). torviz sets a domain only on CURVE
  servers, so plain ipc/inproc sockets on the same context are never asked about. A NULL
  request is admitted only with an empty domain, refused otherwise.
- PLAIN and any other mechanism: refused.

Rules:
- One handler per context (RFC 27): ``zap_handler(context)`` returns the running one or starts
  it; starting a second ``ZapHandler`` on a context refuses with a ``RuntimeError``.
- The handler must outlive every CURVE server of its context: while nothing is bound at the
  ZAP endpoint libzmq would admit any CURVE client, unless the server set
  ``ZMQ_ZAP_ENFORCE_DOMAIN`` (``BusSocket`` does, so a missing handler fails closed).
- Requests are hostile input: at most ``MAX_ZAP_FRAMES`` frames of ``MAX_ZAP_FRAME`` bytes;
  a malformed request is answered ``500`` (or dropped when it has no envelope to answer to)
  and counted; nothing here raises out of the greenlet. Reply strings stay within 255 bytes.
- An admitted CURVE key always gets its role in the reply (the role is checked against the
  ``Hello``'s service by ``shared.bus.check_identity``); a property name or value is at most 255
  bytes.
- A refusal is logged at warning with the client's address and key: the first of each key and
  address, then at most one line a ``REFUSAL_LOG_INTERVAL`` saying how many more came (a
  refused client retries for ever); an admission at info, once per key and address.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
import zmq
import zmq.green
from zmq.utils import z85

from torviz.shared.errors import ConfigError

from .curve import (
    CONTROL_ZAP_DOMAIN,
    ZAP_DOMAIN,
    AuthorizedKey,
    KeyPair,
    load_authorized_dir,
    role_of_name,
)

__all__ = [
    "CONTROL_ZAP_DOMAIN",
    "MAX_ZAP_FRAME",
    "MAX_ZAP_FRAMES",
    "REFUSAL_LOG_INTERVAL",
    "ROLE_PROPERTY",
    "ZAP_DOMAIN",
    "ZAP_ENDPOINT",
    "RefusalThrottle",
    "ZapDecision",
    "ZapHandler",
    "ZapStats",
    "answer_zap",
    "running_zap_handler",
    "zap_handler",
]

log = logging.getLogger(__name__)

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
MAX_ZAP_FRAMES = 16
"""Frames read per request: up to 4 routing ids, the delimiter, 6 fields, credentials."""
MAX_ZAP_FRAME = 512
"""Largest frame accepted, in bytes (RFC 27 strings are at most 255 characters)."""

_VERSION = b"1.0"
_MAX_ROUTING_IDS = 4
_MAX_TEXT = 255  # RFC 27: every string field
_MAX_LOGGED_ADMISSIONS = 10_000
ROLE_PROPERTY = "Role"
"""The ZAP metadata property (a message property to ZeroMQ) naming an admitted key's role."""
REFUSAL_LOG_INTERVAL = 60.0
"""Least seconds between two log lines about the refusals of one key from one address."""


class RefusalThrottle:
    """Which refusals to log: the first of each key and address, then one line an interval
    counting those left out. Pure (the time is passed in) and bounded (``max_entries`` keys and
    addresses remembered, the oldest forgotten first).
    """

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL, max_entries: int = 1024) -> None:
        self.interval = interval
        self.max_entries = max_entries
        self._seen: dict[tuple[str, bytes, str], tuple[float, int]] = {}
        """(domain, key, address) -> when it was last logged, refusals left out since."""

    def log_now(self, domain: str, key: bytes, address: str, now: float) -> int | None:
        """A refusal happened: None to stay quiet, else how many were left out before it."""
        what = (domain, key, address)
        last = self._seen.get(what)
        if last is not None and now - last[0] < self.interval:
            self._seen[what] = (last[0], last[1] + 1)
            return None
        self._seen.pop(what, None)
        self._seen[what] = (now, 0)
        while len(self._seen) > self.max_entries:
            del self._seen[next(iter(self._seen))]
        return 0 if last is None else last[1]


@dataclass(frozen=True, slots=True)
class ZapDecision:
    """The answer to one ZAP request.

    ``reply`` is ``None`` when the request had no envelope to answer to. ``reason`` is a
    snake_case code: ``known_key``, ``null_no_domain`` (admitted); ``unknown_key``,
    ``null_with_domain``, ``mechanism_refused`` (refused, 400); ``malformed`` (500).
    """

    reply: list[bytes] | None
    status: bytes
    reason: str
    detail: str
    user_id: str = ""
    role: str = ""
    """An admitted CURVE key's role (a ``ServiceKind`` value), sent as ``ROLE_PROPERTY``."""
    mechanism: str = ""
    address: str = ""
    domain: str = ""
    client_key: bytes = b""
    """The client's public key, Z85, for CURVE requests."""

    @property
    def admitted(self) -> bool:
        return self.status == b"200"


@dataclass(slots=True)
class ZapStats:
    """Counters of one handler, for logs and tests."""

    admitted: int = 0
    refused: int = 0
    malformed: int = 0
    reloads: int = 0


def _text(frame: bytes) -> str:
    return frame.decode("ascii", "replace")


KnownKeys = Mapping[bytes, AuthorizedKey] | Callable[[str], Mapping[bytes, AuthorizedKey]]
"""Admitted CURVE public keys (Z85) -> name (the user id) and role; or a function of the ZAP
domain giving them."""


def _metadata(properties: Mapping[str, str]) -> bytes:
    """ZMTP metadata (RFC 37): a one-byte name length, the name, a four-byte value length, the
    value; names and values cut at 255 bytes."""
    out = b""
    for name, value in properties.items():
        raw_name = name.encode("ascii")[:_MAX_TEXT]
        raw_value = value.encode("ascii", "replace")[:_MAX_TEXT]
        out += bytes([len(raw_name)]) + raw_name + struct.pack(">I", len(raw_value)) + raw_value
    return out


def answer_zap(frames: Sequence[bytes], known: KnownKeys) -> ZapDecision:
    """Decide one ZAP request, as received on a ROUTER (routing ids, delimiter, fields).

    Args:
        frames: the request's frames.
        known: admitted CURVE public keys (Z85) -> the name (user id) and role to give them,
            the same for every domain, or a function from the request's ZAP domain to those.

    Returns:
        The decision, with the reply frames to send back on the same ROUTER.
    """
    try:
        delimiter = list(frames[: _MAX_ROUTING_IDS + 1]).index(b"")
    except ValueError:
        return ZapDecision(None, b"500", "malformed", "no address envelope to answer to")
    envelope = list(frames[: delimiter + 1])
    body = frames[delimiter + 1 :]
    request_id = body[1] if len(body) > 1 and len(body[1]) <= MAX_ZAP_FRAME else b""

    def reply(status: bytes, reason: str, detail: str, **fields: Any) -> ZapDecision:
        user_id: str = fields.get("user_id", "")
        role: str = fields.get("role", "")
        text = detail.encode("ascii", "replace")[:_MAX_TEXT]
        frames_out = [*envelope, _VERSION, request_id, status, text]
        metadata = _metadata({ROLE_PROPERTY: role}) if role else b""
        frames_out += [user_id.encode("ascii", "replace")[:_MAX_TEXT], metadata]
        return ZapDecision(frames_out, status, reason, detail, **fields)

    if len(frames) > MAX_ZAP_FRAMES:
        return reply(b"500", "malformed", f"more than {MAX_ZAP_FRAMES} frames")
    if len(body) < 6:
        return reply(b"500", "malformed", f"{len(body)} request fields, expected at least 6")
    if any(len(frame) > MAX_ZAP_FRAME for frame in frames):
        return reply(b"500", "malformed", f"a frame is longer than {MAX_ZAP_FRAME} bytes")
    version, _, domain_frame, address_frame, _, mechanism_frame, *credentials = body
    if version != _VERSION:
        return reply(b"500", "malformed", f"unsupported ZAP version {_text(version)!r}")
    about = {
        "mechanism": _text(mechanism_frame),
        "address": _text(address_frame),
        "domain": _text(domain_frame),
    }
    mechanism = about["mechanism"]
    if mechanism == "CURVE":
        if len(credentials) != 1 or len(credentials[0]) != 32:
            return reply(b"500", "malformed", "CURVE credentials are one 32-byte key", **about)
        key = z85.encode(credentials[0])
        admitted = known(about["domain"]) if callable(known) else known
        entry = admitted.get(key)
        if entry is None:
            return reply(b"400", "unknown_key", "unknown CURVE key", client_key=key, **about)
        return reply(
            b"200",
            "known_key",
            "OK",
            user_id=entry.name,
            role=entry.role.value,
            client_key=key,
            **about,
        )
    if mechanism == "NULL":
        if credentials:
            return reply(b"500", "malformed", "NULL takes no credentials", **about)
        if about["domain"]:
            detail = f"NULL clients are refused in ZAP domain {about['domain']!r}"
            return reply(b"400", "null_with_domain", detail, **about)
        return reply(b"200", "null_no_domain", "OK", **about)
    return reply(b"400", "mechanism_refused", f"mechanism {mechanism!r} is refused", **about)


def _recv_bounded(sock: zmq.Socket[Any]) -> list[bytes]:
    """One request; frames past ``MAX_ZAP_FRAMES + 1`` are drained and dropped."""
    frames: list[bytes] = [sock.recv()]
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv()  # parts of a multipart arrive together: never waits
        if len(frames) <= MAX_ZAP_FRAMES:
            frames.append(frame)  # one past the limit, so answer_zap sees "too many"
    return frames


_HANDLERS: weakref.WeakKeyDictionary[zmq.Context[Any], ZapHandler] = weakref.WeakKeyDictionary()


def running_zap_handler(context: zmq.Context[Any]) -> ZapHandler | None:
    """The handler answering on ``context``, if one runs (for stats, or to stop it)."""
    handler = _HANDLERS.get(context)
    return handler if handler is not None and handler.running else None


def zap_handler(context: zmq.Context[Any] | None = None) -> ZapHandler:
    """The running ZAP handler of ``context`` (default: zmq.green's instance), started if none.

    Call it from the hub's thread before a CURVE server binds.
    """
    ctx = context if context is not None else zmq.green.Context.instance()
    handler = running_zap_handler(ctx)
    if handler is None:
        handler = ZapHandler(ctx)
        handler.start()
    return handler


class ZapHandler:
    """The ZAP handler of one zmq.green context (see the module rules).

    Args:
        context: a zmq.green context (default: the process-wide instance).
        reload_interval: least seconds between two reloads of the authorized folders.
        clock: monotonic seconds (for tests).
    """

    def __init__(
        self,
        context: zmq.Context[Any] | None = None,
        *,
        reload_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context if context is not None else zmq.green.Context.instance()
        self.stats = ZapStats()
        self.reload_interval = reload_interval
        self._clock = clock
        self._own: dict[str, dict[bytes, AuthorizedKey]] = {}
        """ZAP domain -> this process's own keys trusted there."""
        self._dirs: dict[str, list[Path]] = {}
        """ZAP domain -> the authorized folders trusted there."""
        self._loaded: dict[Path, dict[bytes, AuthorizedKey]] = {}
        """Authorized folder -> its keys, as last loaded."""
        self._last_reload = float("-inf")
        self._logged: set[tuple[bytes, str]] = set()
        self._refusals = RefusalThrottle()
        self._socket: zmq.Socket[Any] | None = None
        self._greenlet: gevent.Greenlet[Any, Any] | None = None

    @property
    def running(self) -> bool:
        """Whether it is bound and answering."""
        return self._greenlet is not None and not self._greenlet.dead

    def trust(self, own: KeyPair, authorized_dir: Path | None, domain: str = ZAP_DOMAIN) -> None:
        """Admit in ``domain`` ``own``'s public key (with the role its name implies: the
        endpoint lets its own key be any agent anyway), and the keys in ``authorized_dir``
        (loaded now).

        Raises:
            ConfigError: a key file in ``authorized_dir`` is invalid (nothing is trusted then).
        """
        if authorized_dir is not None and authorized_dir not in self._loaded:
            self._loaded[authorized_dir] = load_authorized_dir(authorized_dir)
        self._own.setdefault(domain, {})[own.public] = AuthorizedKey(
            own.name, role_of_name(own.name)
        )
        folders = self._dirs.setdefault(domain, [])
        if authorized_dir is not None and authorized_dir not in folders:
            folders.append(authorized_dir)

    def known(self, domain: str = ZAP_DOMAIN) -> dict[bytes, AuthorizedKey]:
        """Every public key (Z85) admitted in ``domain`` -> its name and role."""
        admitted: dict[bytes, AuthorizedKey] = {}
        for folder in self._dirs.get(domain, ()):
            admitted.update(self._loaded.get(folder, {}))
        admitted.update(self._own.get(domain, {}))
        return admitted

    def start(self) -> None:
        """Bind the ZAP endpoint and start answering.

        Raises:
            RuntimeError: a handler already answers on this context (use ``zap_handler``),
                or another ZAP handler (not torviz's) is bound there.
        """
        current = _HANDLERS.get(self.context)
        if current is not None and current.running:
            raise RuntimeError(
                "a ZAP handler already runs on this zmq context: use zap_handler(context)"
            )
        sock: zmq.Socket[Any] = self.context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            sock.close()
            raise RuntimeError(f"cannot bind the ZAP handler at {ZAP_ENDPOINT}: {exc}") from None
        self._socket = sock
        self._greenlet = gevent.spawn(self._serve)
        _HANDLERS[self.context] = self

    def stop(self) -> None:
        """Stop answering and unbind; only once no CURVE server of the context is left."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=1.0)
        if self._socket is not None:
            with contextlib.suppress(zmq.ZMQError):  # now: closing frees the name only later
                self._socket.unbind(ZAP_ENDPOINT)
            self._socket.close(linger=0)
        if _HANDLERS.get(self.context) is self:
            del _HANDLERS[self.context]

    def _serve(self) -> None:
        assert self._socket is not None
        try:
            self._answer_all(self._socket)
        finally:
            if _HANDLERS.get(self.context) is self:
                del _HANDLERS[self.context]

    def _answer_all(self, sock: zmq.Socket[Any]) -> None:
        while True:
            try:
                frames = _recv_bounded(sock)
            except zmq.ZMQError as exc:
                log.info("ZAP handler stops: %s", exc)
                return
            try:
                decision = self.decide(frames)
            except Exception:  # a bug here must not leave a handshake waiting forever
                log.exception("ZAP handler failed on a request")
                decision = answer_zap(frames, {})
            if decision.reply is None:
                continue
            try:
                sock.send_multipart(decision.reply)
            except zmq.ZMQError as exc:
                log.warning("ZAP handler could not reply: %s", exc)
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return

    def decide(self, frames: Sequence[bytes]) -> ZapDecision:
        """Answer one request: reload on an unknown key, count and log the decision."""
        decision = answer_zap(frames, self.known)
        if decision.reason == "unknown_key" and self._reload():
            decision = answer_zap(frames, self.known)
        self._record(decision)
        return decision

    def _reload(self) -> bool:
        """Reload the authorized folders if allowed now; returns whether it did."""
        now = self._clock()
        if not self._loaded or now - self._last_reload < self.reload_interval:
            return False
        self._last_reload = now
        self.stats.reloads += 1
        fresh: dict[Path, dict[bytes, AuthorizedKey]] = {}
        for folder in self._loaded:
            try:
                fresh[folder] = load_authorized_dir(folder)
            except ConfigError as exc:
                log.warning("keeping the previous authorized keys: %s", exc)
                return False
        self._loaded = fresh  # a removed key file is no longer admitted, either
        return True

    def _record(self, decision: ZapDecision) -> None:
        if decision.admitted:
            self.stats.admitted += 1
            seen = (decision.client_key, decision.address)
            if seen not in self._logged:
                if len(self._logged) >= _MAX_LOGGED_ADMISSIONS:
                    self._logged.clear()
                self._logged.add(seen)
                log.info(
                    "admitted %s %s from %s",
                    decision.mechanism,
                    f"key {decision.user_id} ({decision.role}, {_key_text(decision.client_key)})"
                    if decision.client_key
                    else "client",
                    decision.address or "a local socket",
                )
            return
        if decision.reason == "malformed":
            self.stats.malformed += 1
            log.warning("ZAP handler answered a malformed request: %s", decision.detail)
            return
        self.stats.refused += 1
        origin = decision.address or "a local socket"
        left_out = self._refusals.log_now(
            decision.domain, decision.client_key, origin, self._clock()
        )
        if left_out is None:
            return
        again = f" ({left_out} more refusals since the last line)" if left_out else ""
        if decision.reason == "unknown_key":
            log.warning(
                "refused an unknown CURVE key %s from %s: %s%s",
                _key_text(decision.client_key),
                origin,
                _where_to_add(self._dirs.get(decision.domain, ())),
                again,
            )
        else:
            log.warning(
                "refused a %s client from %s: %s%s",
                decision.mechanism,
                origin,
                decision.detail,
                again,
            )


def _key_text(key: bytes) -> str:
    return key.decode("ascii", "replace")


def _where_to_add(folders: Iterable[Path]) -> str:
    shown = " or ".join(str(folder) for folder in folders)
    if not shown:
        return "this process admits no other key (it has no authorized folder)"
    return f"add its .key to {shown} to admit it"
