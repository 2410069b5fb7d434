"""ZeroMQ endpoint strings: which transport, and whether traffic can leave this host.

Strategy: one small parser (``parse_endpoint``) splits ``scheme://address`` into typed parts;
``is_local`` and ``is_tcp`` answer from those parts. Security decisions hang on the answers,
so every doubt resolves to "not local" and to "refused":

- Every tcp endpoint, loopback included, needs CURVE keys (``is_tcp``): any local user can
  connect to a port on 127.0.0.1, so only a key tells who is calling.
- ``is_local`` only says whether traffic stays on this host: the control endpoint must.

Rules:
- ``ipc://`` and ``inproc://`` are local: they never leave the machine. An ipc path is a file
  whose folder and mode say who may connect; an abstract ipc name (``ipc://@NAME``) has no
  owner or mode, so every local user could connect: it is refused (``abstract_ipc``).
- ``tcp://`` is local only when its host is an IPv4 loopback address (127.0.0.0/8), ``::1``
  (bracketed ``[::1]`` or bare) or ``localhost``. A wildcard (``*``, ``0.0.0.0``, ``::``),
  an interface name, any other address or host name is not local: a name may resolve
  anywhere, and a wildcard listens on every interface.
- Anything else (another transport, no port, a source address ``a;b``, an over-long string)
  is a ``ConfigError`` with a ``reason`` and one line naming the endpoint. Parsing is bounded
  by ``MAX_ENDPOINT`` characters. Pure: no socket, no name resolution.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from torviz.shared.errors import ConfigError

__all__ = ["MAX_ENDPOINT", "Endpoint", "is_local", "is_tcp", "parse_endpoint"]

MAX_ENDPOINT = 1024
"""Longest endpoint string accepted, in characters (an ipc path is at most ~100 bytes)."""

_SCHEMES = frozenset({"tcp", "ipc", "inproc"})
_WILDCARDS = frozenset({"*", "0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed endpoint.

    ``host`` and ``port`` are set for tcp only (``host`` without brackets, ``port`` as written:
    digits or ``*``); ``path`` is the ipc path or inproc name, empty for tcp.
    """

    scheme: str
    host: str = ""
    port: str = ""
    path: str = ""


def _bad(reason: str, endpoint: str, why: str) -> ConfigError:
    shown = endpoint if len(endpoint) <= 80 else endpoint[:77] + "..."
    return ConfigError(reason, f"bad endpoint {shown!r}: {why}")


def parse_endpoint(endpoint: str) -> Endpoint:
    """Split a ZeroMQ endpoint into its parts.

    Args:
        endpoint: e.g. ``"tcp://127.0.0.1:7700"``, ``"tcp://[::1]:*"``, ``"ipc:///run/x.sock"``.

    Returns:
        The parts; ``host`` is lower-cased and unbracketed.

    Raises:
        ConfigError: ``endpoint_too_long``, ``bad_endpoint`` (no ``scheme://`` or empty
            address), ``unsupported_transport``, ``abstract_ipc``, ``bad_tcp_endpoint`` (no
            host or port, a port out of range, a source address).
    """
    if len(endpoint) > MAX_ENDPOINT:
        raise _bad("endpoint_too_long", endpoint, f"longer than {MAX_ENDPOINT} characters")
    scheme, separator, address = endpoint.partition("://")
    if not separator or not scheme:
        raise _bad("bad_endpoint", endpoint, "expected TRANSPORT://ADDRESS, e.g. tcp://HOST:PORT")
    scheme = scheme.lower()
    if scheme not in _SCHEMES:
        raise _bad("unsupported_transport", endpoint, "torviz uses tcp://, ipc:// or inproc://")
    if not address:
        raise _bad("bad_endpoint", endpoint, "the address after :// is empty")
    if scheme == "ipc" and address.startswith("@"):
        raise _bad(
            "abstract_ipc",
            endpoint,
            "an abstract socket (@NAME) is open to every local user: give a file path",
        )
    if scheme != "tcp":
        return Endpoint(scheme, path=address)
    return _parse_tcp(endpoint, address)


def _parse_tcp(endpoint: str, address: str) -> Endpoint:
    if ";" in address:
        raise _bad("bad_tcp_endpoint", endpoint, "source addresses (a;b) are not supported")
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port:
        raise _bad("bad_tcp_endpoint", endpoint, "expected tcp://HOST:PORT")
    if port != "*" and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise _bad("bad_tcp_endpoint", endpoint, "the port is a number up to 65535, or *")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise _bad("bad_tcp_endpoint", endpoint, "an IPv6 address is written [ADDRESS]")
        host = host[1:-1]
    return Endpoint("tcp", host=host.lower(), port=port)


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    if host in _WILDCARDS:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name or an interface: it may resolve or belong anywhere
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def is_local(endpoint: str) -> bool:
    """Whether traffic on ``endpoint`` stays on this host (see the module rules); a local tcp
    endpoint still needs keys (``is_tcp``).

    Raises:
        ConfigError: the endpoint is malformed (see ``parse_endpoint``).
    """
    parts = parse_endpoint(endpoint)
    return parts.scheme != "tcp" or _loopback_host(parts.host)


def is_tcp(endpoint: str) -> bool:
    """Whether ``endpoint`` is a tcp endpoint (loopback included): those need CURVE keys.

    Raises:
        ConfigError: the endpoint is malformed (see ``parse_endpoint``).
    """
    return parse_endpoint(endpoint).scheme == "tcp"
