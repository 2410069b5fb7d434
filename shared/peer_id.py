"""torviz's own peer id, and naming the client behind a peer id seen in a handshake.

Strategy: ``generate_peer_id`` builds an Azureus-style id ``-TVabcd-`` + 12 random bytes, fresh
for every start (randomness comes from the injected ``random_bytes``, ``os.urandom`` by default).
``identify_client`` recognises the conventions real clients use and never fails: anything it does
not know is ``ClientInfo("unknown", "")``, with the id's first bytes in ``prefix`` for logs.

Version decoding rules (``charint``: ``0-9`` -> 0..9, ``A-Z`` -> 10..35, ``a-z`` -> 36..61):
- Azureus style ``-XXabcd-``: by default ``a.b.c``, plus ``.d`` when ``d`` is not 0, each
  character through ``charint`` (libtorrent shows versions the same way):
  ``-LT2010-`` -> 2.0.1, ``-LT2110-`` -> 2.1.1, ``-qB4530-`` -> 4.5.3, ``-lt0D80-`` -> 0.13.8
  (the libtorrent (rakshasa) version under rtorrent), ``-DE13F0-`` -> 1.3.15.
  Exceptions: Vuze/Azureus and BiglyBT always show four parts (``-AZ5770-`` -> 5.7.7.0);
  Transmission ``-TRabcd-`` is ``a.bc`` (``-TR300Z-`` -> 3.00, ``-TR2940-`` -> 2.94; its
  build marker ``d`` is dropped; ``-TR0072-`` -> 0.72) and from 4.0 on ``a.b.c``
  (``-TR4050-`` -> 4.0.5); BitComet and the like ``-BCabcd-`` -> ``ab.cd`` as numbers
  (``-BC0150-`` -> 1.50); WebTorrent ``-WWabcd-`` -> ``ab.cd`` as plain numbers
  (``-WW0109-`` -> 1.9); µTorrent and BitTorrent ``-UTabc?-`` use hex digits ``a.b.c``.
- Old BitComet ``exbc`` + two binary bytes: ``major.minor`` with two-digit minor; ``LORD``
  after them means BitLord.
- Mainline ``M7-4-0--`` and aria2 ``A2-1-36-0-``: numbers separated by dashes -> 7.4.0, 1.36.0.
- Shadow style ``S58B-----``: a client letter then up to five characters of the alphabet
  ``0-9A-Za-z.-`` (values 0..63) padded with ``-``: ``S58B`` -> Shad0w 5.8.11.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata

from shared.types import PeerId

__all__ = ["TORVIZ_CLIENT_CODE", "ClientInfo", "generate_peer_id", "identify_client"]

TORVIZ_CLIENT_CODE = "TV"

_ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SHADOW_ALPHABET = _ALPHANUMERIC + ".-"


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """The client behind a peer id.

    Attributes:
        name: client name (``"unknown"`` if not recognised).
        version: its version as the client itself writes it, or ``""``.
        prefix: the id's first 8 bytes, printable (others as ``%XX``); not compared.
    """

    name: str
    version: str
    prefix: str = field(default="", compare=False)

    def __str__(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


# --- torviz's own id -------------------------------------------------------------------------


@cache
def _package_version() -> str:
    try:
        return metadata.version("torviz")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _version_chars(version: str) -> str:
    """Four Azureus-style characters for ``major.minor.patch``: 0.1.0 -> ``0100``."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    parts += [0] * (3 - len(parts))
    if any(p >= len(_ALPHANUMERIC) for p in parts):
        raise ValueError(f"version {version!r} does not fit an Azureus-style peer id")
    return "".join(_ALPHANUMERIC[p] for p in parts) + "0"


def generate_peer_id(
    random_bytes: Callable[[int], bytes] = os.urandom, *, version: str | None = None
) -> PeerId:
    """A fresh peer id ``-TVabcd-`` + 12 random bytes for this start of torviz.

    Args:
        random_bytes: source of the 12 random bytes (tests pass a fixed one).
        version: ``major.minor.patch``; defaults to the installed torviz package version.
    """
    head = f"-{TORVIZ_CLIENT_CODE}{_version_chars(version or _package_version())}-"
    tail = random_bytes(12)
    if len(tail) != 12:
        raise ValueError("random_bytes(12) must return 12 bytes")
    return PeerId(head.encode("ascii") + tail)


# --- naming other clients --------------------------------------------------------------------


def _charint(char: str) -> int:
    index = _ALPHANUMERIC.find(char)
    if index < 0 or not char:
        raise ValueError(char)
    return index


def _azureus_default(chars: str) -> str:
    parts = [_charint(c) for c in chars]
    shown = parts if parts[3] else parts[:3]
    return ".".join(map(str, shown))


def _azureus_four(chars: str) -> str:
    return ".".join(str(_charint(c)) for c in chars)


def _two_two(chars: str) -> str:
    return f"{int(chars[:2])}.{int(chars[2:]):02d}"


def _webtorrent(chars: str) -> str:
    return f"{int(chars[:2])}.{int(chars[2:])}"


def _transmission(chars: str) -> str:
    if chars.startswith("000"):
        return f"0.{int(chars[3])}"
    if chars.startswith("00"):
        return f"0.{int(chars[2:]):02d}"
    if _charint(chars[0]) <= 3:
        return f"{int(chars[0])}.{int(chars[1:3]):02d}"
    return ".".join(str(_charint(c)) for c in chars[:3])


def _utorrent(chars: str) -> str:
    return ".".join(str(int(c, 16)) for c in chars[:3])


_AZUREUS: dict[str, tuple[str, Callable[[str], str]]] = {
    "AG": ("Ares", _azureus_default),
    "AZ": ("Vuze", _azureus_four),
    "BC": ("BitComet", _two_two),
    "BI": ("BiglyBT", _azureus_four),
    "BN": ("Baidu Netdisk", _azureus_default),
    "BT": ("BitTorrent", _utorrent),
    "DE": ("Deluge", _azureus_default),
    "FD": ("Free Download Manager", _azureus_default),
    "FW": ("FrostWire", _azureus_default),
    "HL": ("Halite", _azureus_default),
    "KT": ("KTorrent", _azureus_default),
    "LT": ("libtorrent", _azureus_default),
    "LW": ("LimeWire", _azureus_default),
    "MO": ("MonoTorrent", _azureus_default),
    "PI": ("PicoTorrent", _azureus_default),
    "SD": ("Thunder", _azureus_default),
    "TR": ("Transmission", _transmission),
    "TV": ("torviz", _azureus_default),
    "UM": ("µTorrent Mac", _utorrent),
    "UT": ("µTorrent", _utorrent),
    "UW": ("µTorrent Web", _utorrent),
    "WW": ("WebTorrent", _webtorrent),
    "XL": ("Xunlei", _azureus_default),
    "lt": ("rtorrent", _azureus_default),
    "qB": ("qBittorrent", _azureus_default),
}

_SHADOW: dict[str, str] = {
    "A": "ABC",
    "O": "Osprey",
    "Q": "BTQueue",
    "R": "Tribler",
    "S": "Shad0w",
    "T": "BitTornado",
    "U": "UPnP NAT Bit Torrent",
}

_DASHED_NUMBERS = re.compile(r"(\d+)-(\d+)-(\d+)-")


def _printable_prefix(peer_id: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"%{b:02X}" for b in peer_id[:8])


def _identify(peer_id: bytes) -> tuple[str, str] | None:
    text = peer_id.decode("latin-1")
    if len(text) >= 8 and text[0] == "-" and text[7] == "-" and text[1:3] in _AZUREUS:
        name, formatter = _AZUREUS[text[1:3]]
        try:
            return name, formatter(text[3:7])
        except ValueError:
            return name, ""
    if text.startswith("exbc") and len(peer_id) >= 6:
        name = "BitLord" if peer_id[6:10] == b"LORD" else "BitComet"
        return name, f"{peer_id[4]}.{peer_id[5]:02d}"
    if text.startswith("A2-"):
        match = _DASHED_NUMBERS.match(text, 3)
        return "aria2", ".".join(match.groups()) if match else ""
    if text.startswith("M") and (match := _DASHED_NUMBERS.match(text[:8] + "-", 1)):
        return "BitTorrent", ".".join(match.groups())
    if len(text) >= 9 and text[0] in _SHADOW and text[6:9] == "---":
        chars = text[1:6].rstrip("-")
        if chars and all(c in _SHADOW_ALPHABET for c in chars):
            return _SHADOW[text[0]], ".".join(str(_SHADOW_ALPHABET.index(c)) for c in chars)
    return None


def identify_client(peer_id: bytes | PeerId) -> ClientInfo:
    """Name the client that generated ``peer_id`` (see the module comment for the rules).

    Args:
        peer_id: the 20 bytes from a handshake (shorter input is tolerated).

    Returns:
        ``ClientInfo(name, version, prefix)``; ``ClientInfo("unknown", "")`` when unrecognised.
    """
    raw = peer_id.raw if isinstance(peer_id, PeerId) else bytes(peer_id)
    found = _identify(raw)
    name, version = found if found is not None else ("unknown", "")
    return ClientInfo(name, version, _printable_prefix(raw))
