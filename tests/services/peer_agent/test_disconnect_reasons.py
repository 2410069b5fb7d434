"""Every code that can end a peer connection is a ``DisconnectReason``, so that the
``PeerDisconnected`` or ``PeerConnectFailed`` the peer agent sends names it (an unlisted code
would go out as ``unknown``)."""

from __future__ import annotations

import errno
import re
from pathlib import Path

from torviz.services.peer_agent.connection import _socket_error
from torviz.shared.bus import DisconnectReason
from torviz.shared.types import PeerAddress

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [
    *sorted((ROOT / "services" / "peer_agent").rglob("*.py")),  # core/ too
    *sorted((ROOT / "shared" / "wire").glob("*.py")),
    ROOT / "shared" / "bitfield.py",
]
# The first argument of what raises or carries a connection's ending, as a literal.
_ENDINGS = re.compile(
    r"\b(?:WireError|BitfieldError|ConnectRefusedError|Refuse|Disconnect|_end|close"
    r"|_close_connections|_refuse_bad)\(\s*\"([a-z_]+)\""
)
# The frame limits of the wire decoder: (minimum, maximum, reason).
_LIMITS = re.compile(r"\(\s*\d+,\s*\w+,\s*\"([a-z_]+)\"\s*\)")


def _codes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in SOURCES:
        text = path.read_text()
        for code in _ENDINGS.findall(text) + _LIMITS.findall(text):
            found.setdefault(code, set()).add(path.name)
    return found


def test_every_code_that_ends_a_connection_is_a_disconnect_reason() -> None:
    codes = _codes()
    assert len(codes) > 25, sorted(codes)  # the scan finds them (it cannot pass on nothing)
    assert {"bad_pstrlen", "frame_too_large", "idle_timeout", "too_many_incoming"} <= set(codes)
    unlisted = {code: sorted(files) for code, files in codes.items() if code not in _members()}
    assert unlisted == {}, "add these to DisconnectReason in shared/bus/vocabulary.py"


def test_the_socket_errors_are_disconnect_reasons_too() -> None:
    address = PeerAddress("127.0.0.1", 6881)
    for number in (0, errno.ECONNRESET, errno.ETIMEDOUT, errno.ECONNREFUSED, errno.EHOSTUNREACH):
        reason, _ = _socket_error(OSError(number, "x"), address, dialling=True)
        assert isinstance(reason, DisconnectReason)
    reason, _ = _socket_error(TimeoutError(), address, dialling=False)
    assert reason is DisconnectReason.SOCKET_TIMEOUT


def _members() -> set[str]:
    return {member.value for member in DisconnectReason}
