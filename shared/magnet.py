"""Magnet URIs (BEP 9): parse one into a typed ``Magnet`` and format one back.

Strategy: a magnet link is user input, often pasted from anywhere, so it is parsed in one bounded
pass: the whole URI is capped at ``MAX_URI_LENGTH`` characters and ``MAX_PARAMS`` parameters
before anything is decoded, and every value is percent-decoded strictly (a stray ``%`` or bytes
that are not UTF-8 are an error, not silently kept).

Rules this module follows (each chosen on purpose):
- Exact topic: ``xt`` and the indexed forms ``xt.1``, ``xt.2``... (BEP 9 allows several) are all
  read. Exactly one BitTorrent v1 info hash (``urn:btih:``, 40 hex digits or 32 base32
  characters) must be among them; the same hash given twice is fine, two different ones are an
  error. Other topics (``urn:btmh:`` v2 hashes of a hybrid torrent, ``urn:sha1:``...) are
  ignored when a btih is present; a link with only those is ``unsupported_xt``.
- ``tr`` and ``tr.N`` trackers keep their order of appearance, duplicates dropped; ``ws`` web
  seeds likewise. Empty values are dropped.
- ``dn`` (first one wins) decodes ``+`` as a space, as browsers and libtorrent do; in every other
  value ``+`` is kept literally, since it is a legal character in tracker and web seed URLs.
- ``x.pe`` peers must be IP literals with a port (``1.2.3.4:6881``, ``[::1]:6881``); a host name
  is refused (``bad_peer_address``) because a ``PeerAddress`` is an IP by construction.
- ``so`` (BEP 53) is a comma list of indices and inclusive ranges; it expands to a sorted,
  deduplicated tuple of at most ``MAX_SELECT_ONLY`` indices, each below ``MAX_FILE_INDEX``.
- Unknown parameters (``xl``, ``as``, ``xs``, ``kt``...) and parameters without ``=`` are
  ignored: they carry nothing torviz uses.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

from torviz.shared.bencode import encode
from torviz.shared.errors import MagnetError
from torviz.shared.types import InfoHash, PeerAddress

__all__ = [
    "MAX_FILE_INDEX",
    "MAX_PARAMS",
    "MAX_SELECT_ONLY",
    "MAX_URI_LENGTH",
    "Magnet",
    "format_magnet",
    "metainfo_from_magnet",
    "parse_magnet",
]

MAX_URI_LENGTH = 64 * 1024
"""Longest magnet URI accepted, in characters (a real one is a few hundred)."""

MAX_PARAMS = 1024
"""Most ``key=value`` parameters accepted in one URI."""

MAX_SELECT_ONLY = 100_000
"""Most file indices an ``so`` parameter may expand to."""

MAX_FILE_INDEX = 1_000_000
"""File indices in ``so`` must be below this (no torrent torviz loads has more files)."""

_SCHEME = "magnet:?"
_BTIH = "urn:btih:"
_BTMH = "urn:btmh:"
_HEX = re.compile(r"[0-9a-fA-F]{40}")
_BASE32 = re.compile(r"[A-Za-z2-7]{32}")
_INDEXED_KEY = re.compile(r"(xt|tr|dn|ws|x\.pe)(?:\.[0-9]{1,6})?")
_SO_ITEM = re.compile(r"([0-9]{1,7})(?:-([0-9]{1,7}))?")
_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class Magnet:
    """What a magnet link says about a torrent before its metadata is fetched.

    Invariants: ``trackers`` and ``web_seeds`` hold no duplicates and no empty strings;
    ``select_only`` is sorted, deduplicated and every index is in ``0..MAX_FILE_INDEX-1``.
    """

    info_hash: InfoHash
    display_name: str | None = None
    trackers: tuple[str, ...] = ()
    web_seeds: tuple[str, ...] = ()
    peers: tuple[PeerAddress, ...] = ()
    select_only: tuple[int, ...] = ()


def parse_magnet(uri: str) -> Magnet:
    """Parse a ``magnet:?`` URI.

    Args:
        uri: the link as the user gave it; surrounding whitespace is ignored.

    Returns:
        The parsed ``Magnet``.

    Raises:
        MagnetError: with reason ``too_long``, ``not_magnet``, ``too_many_params``,
            ``bad_encoding``, ``missing_xt``, ``bad_info_hash``, ``conflicting_info_hash``,
            ``unsupported_xt``, ``bad_peer_address`` or ``bad_select_only``.
    """
    if len(uri) > MAX_URI_LENGTH:
        raise MagnetError(
            "too_long", f"magnet link is {len(uri)} characters; the limit is {MAX_URI_LENGTH}"
        )
    try:
        # A command line can smuggle undecodable bytes in as lone surrogates.
        uri.encode("utf-8")
    except UnicodeEncodeError:
        raise MagnetError("bad_encoding", "magnet link is not valid UTF-8 text") from None
    uri = uri.strip()
    if uri[: len(_SCHEME)].lower() != _SCHEME:
        raise MagnetError("not_magnet", "not a magnet link (it must start with 'magnet:?')")
    query = uri[len(_SCHEME) :]
    if query.count("&") >= MAX_PARAMS:
        raise MagnetError("too_many_params", f"magnet link has more than {MAX_PARAMS} parameters")

    topics: list[str] = []
    names: list[str] = []
    trackers: list[str] = []
    web_seeds: list[str] = []
    peers: list[PeerAddress] = []
    select_only: tuple[int, ...] = ()
    for part in query.split("&"):
        key, sep, raw_value = part.partition("=")
        if not sep:
            continue
        key = key.lower()
        indexed = _INDEXED_KEY.fullmatch(key)
        base = indexed.group(1) if indexed else key
        if base == "dn":
            names.append(_percent_decode(raw_value.replace("+", " ")))
        elif base == "xt":
            topics.append(_percent_decode(raw_value))
        elif base == "tr":
            trackers.append(_percent_decode(raw_value))
        elif base == "ws":
            web_seeds.append(_percent_decode(raw_value))
        elif base == "x.pe":
            peers.append(_parse_peer(_percent_decode(raw_value)))
        elif key == "so":
            select_only = _parse_select_only(_percent_decode(raw_value))

    return Magnet(
        info_hash=_info_hash_from_topics(topics),
        display_name=names[0] if names and names[0] else None,
        trackers=_unique(trackers),
        web_seeds=_unique(web_seeds),
        peers=tuple(dict.fromkeys(peers)),
        select_only=select_only,
    )


def format_magnet(magnet: Magnet) -> str:
    """Format a ``Magnet`` as a URI that ``parse_magnet`` reads back to an equal value.

    The info hash is written as 40 lowercase hex digits; every value is percent-encoded except
    the characters RFC 3986 leaves unreserved, so ``&``, ``=``, ``+`` and ``%`` survive. An
    empty display name is left out (it parses back as None, like a missing ``dn``).
    """
    params = [f"xt={_BTIH}{magnet.info_hash.hex}"]
    if magnet.display_name:
        params.append(f"dn={_percent_encode(magnet.display_name)}")
    params.extend(f"tr={_percent_encode(url)}" for url in magnet.trackers)
    params.extend(f"ws={_percent_encode(url)}" for url in magnet.web_seeds)
    params.extend(f"x.pe={_percent_encode(str(peer))}" for peer in magnet.peers)
    if magnet.select_only:
        params.append(f"so={_format_select_only(tuple(sorted(set(magnet.select_only))))}")
    return _SCHEME + "&".join(params)


def metainfo_from_magnet(magnet: Magnet, raw_info: bytes) -> bytes:
    """The .torrent file of a magnet link whose info dictionary was fetched (BEP 9).

    ``announce`` is the first ``tr`` and ``announce-list`` holds every ``tr`` as a tier of its
    own (as libtorrent does: a magnet link says nothing of tiers); ``url-list`` holds the
    ``ws`` web seeds. The info dictionary is spliced in byte for byte, never re-encoded, so
    the file's info hash is the magnet link's.

    Args:
        magnet: the parsed magnet link.
        raw_info: the info dictionary's exact bencoded bytes.

    Returns:
        The .torrent bytes (keys in bencode order).

    Raises:
        MagnetError: ``info_hash_mismatch`` when ``raw_info`` does not hash to the magnet
            link's info hash.
    """
    if hashlib.sha1(raw_info).digest() != magnet.info_hash.raw:
        raise MagnetError(
            "info_hash_mismatch",
            f"the info dictionary does not hash to the magnet link's {magnet.info_hash.hex}",
        )
    parts = []
    if magnet.trackers:
        parts.append(encode(b"announce") + encode(magnet.trackers[0].encode()))
        tiers = [[url.encode()] for url in magnet.trackers]
        parts.append(encode(b"announce-list") + encode(tiers))
    parts.append(encode(b"info") + raw_info)
    if magnet.web_seeds:
        parts.append(encode(b"url-list") + encode([url.encode() for url in magnet.web_seeds]))
    return b"d" + b"".join(parts) + b"e"


def _info_hash_from_topics(topics: list[str]) -> InfoHash:
    if not topics:
        raise MagnetError("missing_xt", "magnet link has no exact topic (xt=urn:btih:...)")
    hashes = {_parse_btih(t[len(_BTIH) :]) for t in topics if t[: len(_BTIH)].lower() == _BTIH}
    if len(hashes) > 1:
        listed = ", ".join(sorted(h.hex for h in hashes))
        raise MagnetError(
            "conflicting_info_hash", f"magnet link names more than one info hash: {listed}"
        )
    if hashes:
        return hashes.pop()
    if any(t[: len(_BTMH)].lower() == _BTMH for t in topics):
        raise MagnetError(
            "unsupported_xt",
            "magnet link has only a BitTorrent v2 hash (urn:btmh); torviz needs a v1 urn:btih",
        )
    shown = topics[0][:60]
    raise MagnetError(
        "unsupported_xt", f"magnet link topic {shown!r} is not a BitTorrent info hash (urn:btih)"
    )


def _parse_btih(text: str) -> InfoHash:
    if _HEX.fullmatch(text):
        return InfoHash.from_hex(text)
    if _BASE32.fullmatch(text):
        return InfoHash.from_base32(text)
    shown = text[:60]
    raise MagnetError(
        "bad_info_hash",
        f"info hash {shown!r} is neither 40 hex digits nor 32 base32 characters",
    )


def _parse_peer(text: str) -> PeerAddress:
    host, sep, port_text = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            host = "?"  # brackets are only for IPv6 literals
    elif ":" in host:
        host = "?"  # an IPv6 literal must be bracketed, or the port is ambiguous
    try:
        if not sep or not port_text.isdigit() or len(port_text) > 5:
            raise ValueError("no port")
        ipaddress.ip_address(host)
        return PeerAddress(host, int(port_text))
    except ValueError:
        raise MagnetError(
            "bad_peer_address",
            f"x.pe peer {text[:80]!r} is not an IP address with a port "
            "(like 192.0.2.1:6881 or [2001:db8::1]:6881)",
        ) from None


def _parse_select_only(text: str) -> tuple[int, ...]:
    chosen: set[int] = set()
    for item in text.split(","):
        match = _SO_ITEM.fullmatch(item)
        if match is None:
            raise MagnetError(
                "bad_select_only", f"so item {item[:40]!r} is not an index or a range like 4-6"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if first > last or last >= MAX_FILE_INDEX:
            raise MagnetError(
                "bad_select_only",
                f"so range {item!r} is reversed or past file index {MAX_FILE_INDEX - 1}",
            )
        # Bound the expansion before doing it: "0-999999" alone would be a million ints.
        if len(chosen) + (last - first + 1) > MAX_SELECT_ONLY:
            raise MagnetError("bad_select_only", f"so selects more than {MAX_SELECT_ONLY} files")
        chosen.update(range(first, last + 1))
    return tuple(sorted(chosen))


def _format_select_only(indices: tuple[int, ...]) -> str:
    runs: list[str] = []
    start = prev = indices[0]
    for index in (*indices[1:], None):
        if index is not None and index == prev + 1:
            prev = index
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if index is not None:
            start = prev = index
    return ",".join(runs)


def _percent_decode(text: str) -> str:
    """Strict RFC 3986 percent-decoding to UTF-8 text."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(c in _HEXDIGITS for c in pair):
                raise MagnetError(
                    "bad_encoding", f"bad percent escape {text[i : i + 3]!r} in magnet link"
                )
            out.append(int(pair, 16))
            i += 3
        else:
            out += char.encode("utf-8")
            i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise MagnetError(
            "bad_encoding", "a percent-encoded magnet link value is not UTF-8"
        ) from None


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _percent_encode(text: str) -> str:
    return "".join(
        chr(byte) if byte in _UNRESERVED else f"%{byte:02X}"
        for byte in text.encode("utf-8", errors="strict")
    )


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))
