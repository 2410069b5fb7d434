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
  Enhanced CTorrent ``-CDabcd-`` -> ``ab.cd`` as plain numbers (``-CD0303-`` -> 3.3, its
  ``dnh3.3``); CTorrent ``-CTabcd-`` -> ``a.b.cd`` (``-CT1304-`` -> 1.3.4); KTorrent marks
  development and release-candidate builds in the third character (``-KT11R1-`` -> 1.1 RC 1);
  clients with no meaningful digits (LimeWire, Bitflu, Folx) show no version.
- Old BitComet ``exbc`` (and its mods ``FUTB``, ``xUTB``) + two binary bytes: ``major.minor``
  with two-digit minor; ``LORD`` after them means BitLord. Old BitSpirit: a zero byte, its
  version byte, then ``BS``.
- Mainline style ``M7-4-0--`` (BitTorrent; ``Q`` for Queen Bee) and aria2 ``A2-1-36-0-``:
  numbers separated by dashes -> 7.4.0, 1.36.0.
- Shadow style ``S58B-----``: a client letter then up to five characters of the alphabet
  ``0-9A-Za-z.-`` (values 0..63) padded with ``-``: ``S58B`` -> Shad0w 5.8.11. Either ``---``
  follows the five, or (ABC, BitTornado, Tribler: ``T03I--008...``) the version has at most
  three characters and what follows the padding is free, as libtorrent reads them.
- Conventions of their own (``_CUSTOM``: ``XBT054-`` XBT Client 0.5.4, ``-ML2.7.2-`` MLDonkey,
  ``DNA0100...`` BitTorrent DNA, ``TIX0137-`` Tixati, ``Pando-``, ``AZ2500BT`` BitTyrant...)
  are tried first, as libtorrent does, since some would otherwise pass for another style.

The tables are facts gathered from BEP 20, libtorrent's ``identify_client``, Transmission's
client table and Vuze's decoder definitions; names are the clients' own spelling.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata

from torviz.shared.types import PeerId

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
    return f"{_number(chars[:2])}.{_number(chars[2:]):02d}"


def _plain_two_two(chars: str) -> str:
    return f"{_number(chars[:2])}.{_number(chars[2:])}"


def _one_three(chars: str) -> str:
    return f"{_number(chars[0])}.{_digits(chars[1:])}"


def _two_parts(chars: str) -> str:
    return f"{_charint(chars[0])}.{_charint(chars[1])}"


def _ctorrent(chars: str) -> str:
    return f"{_charint(chars[0])}.{_charint(chars[1])}.{_number(chars[2:])}"


def _bitrocket(chars: str) -> str:
    return f"{_number(chars[0])}.{_number(chars[1])} ({_digits(chars[2:])})"


def _ktorrent(chars: str) -> str:
    stage = {"D": "Dev", "R": "RC"}.get(chars[2])
    if stage is None:
        return _azureus_default(chars)
    return f"{_charint(chars[0])}.{_charint(chars[1])} {stage} {_charint(chars[3])}"


def _xtorrent(chars: str) -> str:
    return f"{_charint(chars[0])}.{_charint(chars[1])} ({_number(chars[2:])})"


def _no_version(chars: str) -> str:
    return ""


def _transmission(chars: str) -> str:
    if chars.startswith("000"):
        return f"0.{_number(chars[3])}"
    if chars.startswith("00"):
        return f"0.{_number(chars[2:]):02d}"
    if _charint(chars[0]) <= 3:
        return f"{_number(chars[0])}.{_number(chars[1:3]):02d}"
    return ".".join(str(_charint(c)) for c in chars[:3])


def _utorrent(chars: str) -> str:
    return ".".join(str(int(c, 16)) for c in chars[:3])


def _number(chars: str) -> int:
    """Decimal digits only (``int`` would also take ``+``, spaces and ``_``)."""
    return int(_digits(chars))


def _digits(chars: str) -> str:
    if not chars.isascii() or not chars.isdigit():
        raise ValueError(chars)
    return chars


# Azureus style ``-XXabcd-``: the two-character code, the client, how ``abcd`` reads. Gathered
# from BEP 20, libtorrent's identify_client, Transmission's client table and Vuze's decoder
# definitions; where they disagree on a code, the client still shipping wins (``BL`` is BitLord,
# not BitBlinder; ``AR`` Arctic Torrent, not Ares).
_AZUREUS: dict[str, tuple[str, Callable[[str], str]]] = {
    "7T": ("aTorrent", _azureus_default),
    "AB": ("AnyEvent BitTorrent", _azureus_default),
    "AG": ("Ares", _azureus_default),
    "AN": ("Ares", _azureus_default),
    "AR": ("Arctic Torrent", _azureus_default),
    "AT": ("Artemis", _azureus_default),
    "AV": ("Avicora", _azureus_default),
    "AX": ("BitPump", _two_two),
    "AZ": ("Vuze", _azureus_four),
    "A~": ("Ares", _azureus_default),
    "BB": ("BitBuddy", _one_three),
    "BC": ("BitComet", _two_two),
    "BE": ("BitTorrent SDK", _azureus_default),
    "BF": ("Bitflu", _no_version),
    "BG": ("BTG", _azureus_default),
    "BH": ("BitZilla", _azureus_default),
    "BI": ("BiglyBT", _azureus_four),
    "BL": ("BitLord", _azureus_default),
    "BM": ("BitMagnet", _azureus_default),
    "BN": ("Baidu Netdisk", _azureus_default),
    "BP": ("BitTorrent Pro", _azureus_default),
    "BR": ("BitRocket", _bitrocket),
    "BS": ("BTSlave", _azureus_default),
    "BT": ("BitTorrent", _utorrent),
    "BU": ("BigUp", _azureus_default),
    "BW": ("BitWombat", _azureus_default),
    "BX": ("BittorrentX", _azureus_default),
    "CB": ("Shareaza Plus", _azureus_default),
    "CD": ("Enhanced CTorrent", _plain_two_two),
    "CT": ("CTorrent", _ctorrent),
    "DE": ("Deluge", _azureus_default),
    "DP": ("Propagate Data Client", _azureus_default),
    "EB": ("EBit", _azureus_default),
    "ES": ("Electric Sheep", _azureus_default),
    "FC": ("FileCroc", _azureus_default),
    "FD": ("Free Download Manager", _azureus_default),
    "FL": ("Folx", _no_version),
    "FT": ("FoxTorrent", _azureus_default),
    "FW": ("FrostWire", _azureus_default),
    "FX": ("Freebox BitTorrent", _azureus_default),
    "GR": ("GetRight", _azureus_default),
    "GS": ("GSTorrent", _azureus_default),
    "HK": ("Hekate", _azureus_default),
    "HL": ("Halite", _azureus_default),
    "HN": ("Hydranode", _azureus_default),
    "IL": ("iLivid", _azureus_default),
    "KC": ("Koinonein", _azureus_default),
    "KG": ("KGet", _azureus_default),
    "KT": ("KTorrent", _ktorrent),
    "LC": ("LeechCraft", _azureus_default),
    "LH": ("LH-ABC", _azureus_default),
    "LK": ("Linkage", _azureus_default),
    "LP": ("Lphant", _two_two),
    "LR": ("LibreTorrent", _azureus_default),
    "LT": ("libtorrent", _azureus_default),
    "LW": ("LimeWire", _no_version),  # the digits are its protocol revision
    "MG": ("MediaGet", _two_parts),
    "MK": ("Meerkat", _azureus_default),
    "MO": ("MonoTorrent", _azureus_default),
    "MP": ("MooPolice", _azureus_default),
    "MR": ("Miro", _azureus_default),
    "MT": ("Moonlight", _azureus_default),
    "NE": ("BT Next Evolution", _azureus_default),
    "NX": ("Net Transport", _azureus_default),
    "OS": ("OneSwarm", _azureus_default),
    "OT": ("OmegaTorrent", _azureus_default),
    "PC": ("CacheLogic", _azureus_default),
    "PD": ("Pando", _azureus_default),
    "PE": ("PeerProject", _azureus_default),
    "PI": ("PicoTorrent", _azureus_default),
    "PT": ("Popcorn Time", _azureus_default),
    "QD": ("QQDownload", _azureus_default),
    "QT": ("Qt 4 Torrent example", _azureus_default),
    "RT": ("Retriever", _azureus_default),
    "RZ": ("RezTorrent", _azureus_default),
    "S~": ("Shareaza", _azureus_default),
    "SB": ("Swiftbit", _azureus_default),
    "SD": ("Thunder", _azureus_default),
    "SG": ("GS Torrent", _azureus_default),
    "SK": ("spark", _azureus_default),
    "SM": ("SoMud", _azureus_default),
    "SN": ("ShareNet", _azureus_default),
    "SP": ("BitSpirit", _azureus_default),
    "SS": ("SwarmScope", _azureus_default),
    "ST": ("SymTorrent", _azureus_default),
    "SZ": ("Shareaza", _azureus_default),
    "TB": ("Torch", _azureus_default),
    "TL": ("Tribler", _azureus_default),
    "TN": ("Torrent.NET", _azureus_default),
    "TR": ("Transmission", _transmission),
    "TS": ("TorrentStorm", _azureus_default),
    "TT": ("TuoTu", _azureus_default),
    "TV": ("torviz", _azureus_default),
    "UE": ("µTorrent Embedded", _utorrent),
    "UL": ("uLeecher!", _azureus_default),
    "UM": ("µTorrent Mac", _utorrent),
    "UT": ("µTorrent", _utorrent),
    "UW": ("µTorrent Web", _utorrent),
    "VG": ("Vagaa", _azureus_default),
    "WD": ("WebTorrent Desktop", _plain_two_two),
    "WT": ("BitLet", _azureus_default),
    "WW": ("WebTorrent", _plain_two_two),
    "WY": ("FireTorrent", _azureus_default),
    "XC": ("Xtorrent", _xtorrent),
    "XF": ("Xfplay", _azureus_default),
    "XL": ("Xunlei", _azureus_default),
    "XS": ("XSwifter", _azureus_default),
    "XT": ("XanTorrent", _azureus_default),
    "XX": ("Xtorrent", _xtorrent),
    "ZO": ("Zona", _azureus_default),
    "ZT": ("ZipTorrent", _azureus_default),
    "bk": ("BitKitten", _azureus_default),
    "lt": ("rtorrent", _azureus_default),
    "pX": ("pHoeniX", _azureus_default),
    "pb": ("pbTorrent", _azureus_default),
    "qB": ("qBittorrent", _azureus_default),
    "st": ("SharkTorrent", _azureus_default),
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

# Mainline style ``M7-4-0--``: a letter, then numbers separated by dashes.
_MAINLINE: dict[str, str] = {"M": "BitTorrent", "Q": "Queen Bee"}

_DASHED_NUMBERS = re.compile(r"(\d+)-(\d+)-(\d+)-")


def _chars_at(*positions: int) -> Callable[[str], str]:
    """A version made of single digits at ``positions``, joined by dots."""
    return lambda text: ".".join(_digits(text[p]) for p in positions)


def _dotted(text: str) -> str:
    """MLDonkey's ``-ML2.7.2-``: the version is written out between the code and a dash."""
    version = text[3:].split("-", 1)[0]
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ValueError(version)
    return version


def _dna(text: str) -> str:
    return ".".join(str(_number(text[i : i + 2])) for i in (3, 5, 7))


def _bits_on_wheels(text: str) -> str:
    return {"A0B": "1.0.5", "A0C": "1.0.6"}.get(text[4:7], "")


# Conventions of their own, tried first (as libtorrent does): (offset, prefix, client, how to
# read the version from the whole id, or None).
_CUSTOM: tuple[tuple[int, str, str, Callable[[str], str] | None], ...] = (
    (0, "-aria2-", "aria2", None),
    (0, "-BOW", "Bits on Wheels", _bits_on_wheels),
    (0, "-FG", "FlashGet", lambda text: _two_two(text[3:7])),
    (0, "-G3", "G3 Torrent", None),
    (0, "-ML", "MLDonkey", _dotted),
    (0, "-Qt-", "Qt", None),
    (0, "-WS", "HTTP Seed", None),
    (0, "10-------", "JVtorrent", None),
    (0, "271-", "GreedBT", lambda text: "2.7.1"),
    (0, "346-", "TorrentTopia", None),
    (0, "AZ2500BT", "BitTyrant", None),
    (0, "Azureus", "Azureus", lambda text: "1"),
    (5, "Azureus", "Azureus", lambda text: "2.0.3.2"),
    (0, "BLZ", "Blizzard Downloader", None),
    (0, "BTDWV-", "Deadman Walking", None),
    (0, "BTM", "BTuga Revolution", None),
    (0, "BitLet", "BitLet", None),
    (0, "DNA", "BitTorrent DNA", _dna),
    (0, "DansClient", "XanTorrent", None),
    (0, "Deadman Walking-", "Deadman", None),
    (0, "LIME", "LimeWire", None),
    (0, "Mbrst", "Burst!", _chars_at(5, 7, 9)),
    (0, "OP", "Opera", lambda text: _digits(text[2:6])),
    (0, "P87.P---", "BitTorrent Plus!", None),
    (0, "PEERAPP", "PeerApp", None),
    (0, "PRC.P---", "BitTorrent Plus! II", None),
    (0, "Pando", "Pando", None),
    (0, "Plus", "Plus!", None),
    (0, "QVOD", "QVOD", lambda text: _azureus_four(text[4:8])),
    (0, "S3-", "Amazon S3", _chars_at(3, 5, 7)),
    (0, "S587Plus", "BitTorrent Plus!", None),
    (0, "T00---0", "Teeweety", None),
    (0, "TIX", "Tixati", lambda text: _two_two(text[3:7])),
    (0, "XBT", "XBT Client", _chars_at(3, 4, 5)),
    (0, "a00---0", "Swarmy", None),
    (0, "a02---0", "Swarmy", None),
    (0, "arclight", "Hurricane Electric", None),
    (0, "btpd", "BitTorrent Protocol Daemon", None),
    (0, "btuga", "BTugaXP", None),
    (0, "eX", "eXeem", None),
    (0, "martini", "Martini Man", None),
    (0, "oernu", "BTugaXP", None),
    (0, "turbobt", "TurboBT", None),
    (4, "btfans", "SimpleBT", None),
)

# BitComet before it went Azureus style, and its mods: prefix -> client.
_BITCOMET = {"exbc": "BitComet", "FUTB": "BitComet (Solidox Mod)", "xUTB": "BitComet (Mod 2)"}


def _printable_prefix(peer_id: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"%{b:02X}" for b in peer_id[:8])


def _version(read: Callable[[str], str] | None, text: str) -> str:
    if read is None:
        return ""
    try:
        return read(text)
    except (ValueError, IndexError):
        return ""


def _identify(peer_id: bytes) -> tuple[str, str] | None:
    text = peer_id.decode("latin-1")
    for offset, prefix, name, read in _CUSTOM:
        if text.startswith(prefix, offset):
            return name, _version(read, text)
    if len(text) >= 8 and text[0] == "-" and text[7] == "-" and text[1:3] in _AZUREUS:
        name, formatter = _AZUREUS[text[1:3]]
        return name, _version(formatter, text[3:7])
    if text[:4] in _BITCOMET and len(peer_id) >= 6:
        name = "BitLord" if peer_id[6:10] == b"LORD" else _BITCOMET[text[:4]]
        return name, f"{peer_id[4]}.{peer_id[5]:02d}"
    if len(peer_id) >= 4 and peer_id[0] == 0 and peer_id[2:4] == b"BS":
        return "BitSpirit", str(peer_id[1] or 1)
    if text.startswith("A2-"):
        match = _DASHED_NUMBERS.match(text, 3)
        return "aria2", ".".join(match.groups()) if match else ""
    if text[:1] in _MAINLINE and (match := _DASHED_NUMBERS.match(text[:8] + "-", 1)):
        return _MAINLINE[text[0]], ".".join(match.groups())
    if text[:1] in _SHADOW and (text[6:9] == "---" or text[4:6] == "--"):
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
