"""BEP 19 (GetRight style) web seed URLs: checking one, and mapping it to a file of the torrent.

Strategy: a web seed URL is checked once, where it enters torviz (a torrent's ``url-list``, a
magnet's ``ws=``, ``add --web-seed``), into a ``WebSeedUrl``; every request URL is then built
from that and a file's path components, with string logic only (``urllib.parse`` splits, nothing
resolves a name or opens a socket).

Rules:
- Only ``http`` and ``https``. ``WebSeedError`` reasons: ``url_too_long`` (over
  ``MAX_URL_LENGTH`` characters), ``control_character`` (C0 or DEL anywhere: checked before the
  split, since ``urlsplit`` silently drops tabs and newlines), ``unsupported_scheme``,
  ``missing_host``, ``bad_host``, ``user_info_in_url`` (credentials in a torrent leak to every
  mirror and log), ``fragment_in_url``, ``bad_port`` (not 1..65535 in digits),
  ``bad_percent_encoding`` (a ``%`` not followed by two hex digits).
- Lenient where browsers are: a space, a non-ASCII character or another character that may not
  appear in a URL, found in the path or the query, is percent-encoded from its UTF-8 bytes
  (libtorrent's ``maybe_url_encode`` does the same with a redirect's path); a ``%XX`` already
  there is kept, never encoded twice. A non-ASCII host is IDNA-encoded.
- The mapping (BEP 19): a URL whose path ends in ``/`` is a folder, and the file's path is
  appended: the torrent's ``name`` for a single-file torrent, ``name/dir/file`` for a
  multi-file one (BEP 19's own example: ``http://mirror.com/pub/`` + ``michael`` +
  ``Readme.txt``). An empty path counts as ``/``.
- One file or several is counted as libtorrent counts it (``num_files() == 1`` in
  ``web_peer_connection.cpp``, padding files included): a torrent with one file, whether written
  with ``length`` or as ``files`` with one entry, uses a URL not ending in ``/`` as that file's
  URL. A torrent with several files needs a folder; a URL not ending in ``/`` gets one added,
  as libtorrent does ("handle incorrect .torrent files which are multi-file but have web seeds
  not ending with a slash"): mirrors are listed without their slash in real torrents, and
  using such a URL as it stands for every file could only fail.
- The ``/`` test and the appending apply to the URL's path, with its query kept after the
  appended parts. libtorrent tests and appends to the whole string, which breaks a URL with a
  query (a signed mirror URL); here it keeps working.
- Each appended component is encoded from its UTF-8 bytes: RFC 3986 unreserved characters
  (``A-Z a-z 0-9 - . _ ~``) kept, every other byte as ``%XX`` in upper-case hex; ``/`` appears
  only between components. libtorrent's ``escape_path`` keeps more (``;?:@=&,$+!*()``), which a
  server decodes to the same path; encoding them as well is never wrong, and keeps a ``?`` or
  ``#`` in a file name from cutting the URL short.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from torviz.shared.errors import WebSeedError

__all__ = [
    "MAX_URL_LENGTH",
    "WebSeedUrl",
    "encode_component",
    "file_url",
    "parse_web_seed_url",
]

MAX_URL_LENGTH = 4096
"""The longest web seed URL accepted, in characters (as given, before any encoding)."""

_SCHEMES = ("http", "https")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# What may stay as it is in a path or a query (RFC 3986 pchar, plus "/" and "?"): unreserved,
# sub-delims, ":", "@" and "%" (checked separately to start a valid escape). "[" and "]" belong
# to the host only, so they are encoded, as urllib3 would encode them anyway.
_URL_SAFE = _UNRESERVED | frozenset(b":/?@!$&'()*+,;=%")
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")
_MAX_HOST = 253
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class WebSeedUrl:
    """A checked web seed URL, normalised (scheme and host in lower case, unsafe characters of
    the path and query percent-encoded).

    Attributes:
        scheme: ``http`` or ``https``.
        host: the host name (IDNA, lower case) or IP address (an IPv6 address without brackets).
        port: the port given in the URL, or None for the scheme's default.
        path: the path, starting with ``/`` (``/`` when the URL had none).
        query: the query without its ``?``, or None when the URL had no ``?``.
    """

    scheme: str
    host: str
    port: int | None
    path: str
    query: str | None

    @property
    def is_folder(self) -> bool:
        """Whether the path ends in ``/``: BEP 19's sign that the file's path is appended."""
        return self.path.endswith("/")

    @property
    def netloc(self) -> str:
        """``host[:port]``, the IPv6 address in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The whole URL, normalised."""
        return self.with_path(self.path)

    def with_path(self, path: str) -> str:
        """This URL with ``path`` in place of its own, the query kept.

        Args:
            path: an already encoded path starting with ``/``.

        Returns:
            The URL as a string.
        """
        query = "" if self.query is None else f"?{self.query}"
        return f"{self.scheme}://{self.netloc}{path}{query}"

    def __str__(self) -> str:
        return self.url


def parse_web_seed_url(text: str) -> WebSeedUrl:
    """Check a web seed URL and normalise it.

    Args:
        text: the URL as found in a ``url-list``, a magnet's ``ws=`` or on the command line
            (surrounding white space is ignored).

    Returns:
        The checked URL.

    Raises:
        WebSeedError: the URL cannot be used; the reasons are listed in the module comment.
    """
    text = text.strip(" ")
    if len(text) > MAX_URL_LENGTH:
        raise WebSeedError(
            "url_too_long", f"web seed URL of {len(text)} characters (at most {MAX_URL_LENGTH})"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise WebSeedError("control_character", "web seed URL contains a control character")
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        shown = scheme[:20] if sep else text[:40]
        raise WebSeedError(
            "unsupported_scheme", f"web seed URL must start with http:// or https://, not {shown!r}"
        )
    if "#" in text:
        raise WebSeedError("fragment_in_url", "web seed URL has a fragment ('#...')")
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # an unbalanced IPv6 bracket
        raise WebSeedError("bad_host", f"web seed URL has a bad host: {exc}") from None
    netloc = parts.netloc
    if "@" in netloc:
        raise WebSeedError("user_info_in_url", "web seed URL carries a user name or password")
    host_text, port = _split_port(netloc)
    host = _host(host_text)
    path = _encode_loose(parts.path) or "/"
    query = _encode_loose(parts.query) if "?" in text else None
    return WebSeedUrl(scheme.lower(), host, port, path, query)


def encode_component(component: str) -> str:
    """Percent-encode one path component for a URL: RFC 3986 unreserved characters kept,
    every other UTF-8 byte (``/`` included) as ``%XX``.

    Args:
        component: a file or folder name.

    Returns:
        The encoded component.
    """
    return "".join(
        chr(b) if b in _UNRESERVED else f"%{b:02X}"
        for b in component.encode("utf-8", "surrogatepass")
    )


def file_url(seed: WebSeedUrl, path: Sequence[str], *, only_file: bool) -> str:
    """The URL of one file of the torrent on the web seed ``seed`` (BEP 19).

    Args:
        seed: the checked web seed URL.
        path: the file's path components as ``FileEntry.path`` holds them: ``(name,)`` for a
            single-file torrent, ``(name, dir..., file)`` for a multi-file one.
        only_file: the torrent has exactly one file (padding files counted), as libtorrent
            counts it: a URL not ending in ``/`` is then that file's URL.

    Returns:
        The URL to request.

    Raises:
        ValueError: ``path`` is empty.
    """
    if not path:
        raise ValueError("a file has at least one path component")
    if only_file and not seed.is_folder:
        return seed.url
    folder = seed.path if seed.is_folder else f"{seed.path}/"
    return seed.with_path(folder + "/".join(encode_component(part) for part in path))


def _split_port(netloc: str) -> tuple[str, int | None]:
    """``netloc`` (no user info) as host text and port; an empty port means the default."""
    bracket = netloc.rfind("]")
    colon = netloc.rfind(":")
    if colon <= bracket:  # no port, or the colons are inside an IPv6 literal
        return netloc, None
    host, port_text = netloc[:colon], netloc[colon + 1 :]
    if not port_text:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise WebSeedError("bad_port", f"web seed URL has a bad port {port_text[:20]!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise WebSeedError("bad_port", f"web seed URL has port {port} (must be 1..65535)")
    return host, port


def _host(text: str) -> str:
    if not text:
        raise WebSeedError("missing_host", "web seed URL has no host")
    if text.startswith("["):
        if not text.endswith("]"):
            raise WebSeedError("bad_host", f"web seed URL has a bad host {text[:60]!r}")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise WebSeedError(
                "bad_host", f"web seed URL has a bad IPv6 address {text[:60]!r}"
            ) from None
    host = text.lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise WebSeedError("bad_host", f"web seed URL has a bad host {text[:60]!r}") from None
    if len(host) > _MAX_HOST or not set(host) <= _HOST_CHARS or host.strip(".") == "":
        raise WebSeedError("bad_host", f"web seed URL has a bad host {text[:60]!r}")
    return host


def _encode_loose(text: str) -> str:
    """Percent-encode what may not stand in a URL's path or query, keeping valid escapes."""
    if _BAD_PERCENT.search(text):
        raise WebSeedError(
            "bad_percent_encoding", "web seed URL has a '%' not followed by two hex digits"
        )
    return "".join(
        chr(b) if b in _URL_SAFE else f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass")
    )
