"""deploy/README.md read as a script: the fenced blocks of its "Running across machines" section,
the markers saying where each runs, and the substitution table that puts the guide's fixed
paths and addresses on simulated hosts (tests/deploy/test_guide.py follows it).

Strategy: the markers live in a fence's info string, after the language, where renderers do
not show them (GitHub highlights by the first word only):

  ```sh host=1                                    run, line by line, on host 1 (10.0.0.1)
  ```sh host=2,3                                  the same lines on host 2, then on host 3
  ```toml host=1 file=/etc/torviz/config.toml     the whole content of that file on host 1
  ```sh skip-in-test=WHY                          not run by the test; WHY is one word

Every block of the section carries `host=` or `skip-in-test=`: a command the guide gains is
either followed or visibly left out, never silently skipped. A `sh` line ending in ` &` is a
service (it keeps running); any other line must exit 0.

The substitution table (`HostMap`), the only changes made to the guide's text:
  /opt/torviz/bin/                        -> the test's virtualenv bin/
  /etc/torviz, /var/lib/torviz, /srv/torviz -> the same below a folder per host (the
                                             simulated hosts share one filesystem)
  10.0.0.N                                -> host N's address
  ssh root@10.0.0.N 'CMD'                 -> ip netns exec HOST-N bash -c 'CMD' (CMD mapped
                                             for host N)
  sudo -u torviz CMD                      -> CMD (the test runs as root)
  -o torviz, -g torviz, torviz:torviz     -> root (there is no torviz user)
  FILE.torrent                            -> the test's torrent
Any other /opt/torviz path in a line that runs is an error: it would name the real machine.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from torviz.shared.errors import TorvizError

__all__ = [
    "GUIDE",
    "SECTION",
    "SERVICES",
    "Block",
    "Command",
    "GuideError",
    "HostMap",
    "agent_commands",
    "commands",
    "options_of",
    "read_blocks",
]

GUIDE = Path(__file__).resolve().parents[2] / "deploy" / "README.md"
SECTION = "## Running across machines"
SERVICES = ("torviz-storage-agent", "torviz-tracker-agent", "torviz-peer-agent")
"""The agents' programs; with ``torviz-coordinator start`` the lines that keep running."""
GUIDE_ADDRESS = "10.0.0"
"""The guide's hosts are 10.0.0.1, 10.0.0.2, ..."""
ROOTS = ("/etc/torviz", "/var/lib/torviz", "/srv/torviz")
BIN = "/opt/torviz/bin/"
TORRENT = "FILE.torrent"

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<info>.*)$")
_ADDRESS = re.compile(rf"(?<![\d.]){re.escape(GUIDE_ADDRESS)}\.(\d{{1,3}})(?![\d])")
_ROOT = re.compile(rf"(?<![\w./-])({'|'.join(re.escape(r) for r in ROOTS)})(?=[/\s'\"]|$)")
_SSH = re.compile(rf"\|\s*ssh\s+root@{re.escape(GUIDE_ADDRESS)}\.(\d{{1,3}})\s+(.+)$")
_USERS = (
    (re.compile(r"(?<![\w-])sudo -u torviz\s+"), ""),
    (re.compile(r"(?<=\s-o )torviz(?![\w:-])"), "root"),
    (re.compile(r"(?<=\s-g )torviz(?![\w:-])"), "root"),
    (re.compile(r"(?<![\w/.-])torviz:torviz(?![\w-])"), "root:root"),
)
_MARKERS = ("host", "file", "skip-in-test")


class GuideError(TorvizError):
    """The guide cannot be followed as written.

    Reasons: ``no_section``, ``unclosed_block``, ``unmarked_block``, ``bad_marker``,
    ``bad_command``.
    """


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced block of the guide's section.

    Attributes:
        line: the line number of its opening fence (from 1).
        language: the first word of the info string (``sh``, ``toml``, ...).
        hosts: where it runs (empty when skipped).
        file: for a file block, the path it is the content of.
        skip: why the test does not run it (None when it does).
        text: its content, the fence's indentation removed.
    """

    line: int
    language: str
    hosts: tuple[int, ...]
    file: str | None
    skip: str | None
    text: str


@dataclass(frozen=True, slots=True)
class Command:
    """One command of a ``sh`` block, as the guide writes it (continuation lines joined)."""

    host: int
    line: int
    text: str

    @property
    def background(self) -> bool:
        """Whether it keeps running (it ends in `` &``)."""
        return self.text.rstrip().endswith(" &")

    @property
    def argv(self) -> list[str]:
        """A service's words, without the ``&`` and a leading ``sudo -u USER``.

        Raises:
            GuideError: ``bad_command`` when it is more than one simple command.
        """
        words = shlex.split(self.text, comments=True)
        if words and words[-1] == "&":
            words = words[:-1]
        if words[:2] == ["sudo", "-u"]:
            words = words[3:]
        if not words or any(w in ("|", "||", "&&", ";", "&", ">", "<", ">>") for w in words):
            raise GuideError(
                "bad_command", f"line {self.line}: a service must be one simple command"
            )
        return words


def read_blocks(text: str, section: str = SECTION) -> list[Block]:
    """The fenced blocks between ``section`` and the next heading of its level.

    Raises:
        GuideError: ``no_section``, ``unclosed_block``, ``unmarked_block`` (neither ``host=``
            nor ``skip-in-test=``) or ``bad_marker``.
    """
    lines = text.splitlines()
    try:
        start = lines.index(section)
    except ValueError:
        raise GuideError("no_section", f"no line {section!r} in the guide") from None
    level = section.split(" ", 1)[0] + " "
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(level)), len(lines))
    blocks: list[Block] = []
    i = start + 1
    while i < end:
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < end and lines[j].rstrip() != indent + fence:
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j])
            j += 1
        if j >= end:
            raise GuideError("unclosed_block", f"line {i + 1}: the block is never closed")
        blocks.append(_block(i + 1, opening["info"], "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def _block(line: int, info: str, text: str) -> Block:
    words = info.split()
    language = words[0] if words else ""
    markers: dict[str, str] = {}
    for word in words[1:]:
        key, sep, value = word.partition("=")
        if not sep or key not in _MARKERS or not value or key in markers:
            raise GuideError("bad_marker", f"line {line}: {word!r} is not one of {_MARKERS}=...")
        markers[key] = value
    skip = markers.get("skip-in-test")
    if ("host" in markers) == (skip is not None):
        raise GuideError(
            "unmarked_block",
            f"line {line}: a block must say host=N (the test runs it) or skip-in-test=WHY",
        )
    hosts: tuple[int, ...] = ()
    if "host" in markers:
        try:
            hosts = tuple(int(h) for h in markers["host"].split(","))
        except ValueError:
            raise GuideError("bad_marker", f"line {line}: host={markers['host']}") from None
    if "file" in markers and (skip is not None or not markers["file"].startswith("/")):
        raise GuideError("bad_marker", f"line {line}: file= needs host= and an absolute path")
    if "file" not in markers and skip is None and language != "sh":
        raise GuideError("bad_marker", f"line {line}: only sh blocks run; {language} needs file=")
    return Block(line, language, hosts, markers.get("file"), skip, text)


def commands(block: Block) -> list[Command]:
    """The commands of a ``sh`` block, for each of its hosts in turn; comment-only and blank
    lines are left out, a line ending in a backslash continues on the next."""
    found: list[Command] = []
    pending: list[str] = []
    first = 0
    for offset, raw in enumerate(block.text.splitlines(), start=1):
        if not pending:
            first = block.line + offset
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
        if raw.endswith("\\"):
            pending.append(raw[:-1])
            continue
        pending.append(raw)
        found.append(Command(0, first, " ".join(part.strip() for part in pending)))
        pending = []
    return [Command(host, c.line, c.text) for host in block.hosts for c in found]


def options_of(argv: list[str]) -> tuple[str, frozenset[tuple[str, str]]]:
    """A command's program (its file name) and its ``--option value`` pairs, in any order."""
    pairs: set[tuple[str, str]] = set()
    i = 1
    while i < len(argv):
        word = argv[i]
        key, sep, value = word.partition("=")
        if sep and word.startswith("--"):
            pairs.add((key, value))
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            pairs.add((word, argv[i + 1]))
            i += 1
        else:
            pairs.add((word, ""))
        i += 1
    return Path(argv[0]).name if argv else "", frozenset(pairs)


def agent_commands(text: str) -> list[list[str]]:
    """The agent commands in a program's output: each line holding an agent's program, from
    that program on (an indentation, a prompt or ``sudo -u USER`` before it is left out)."""
    programs = "|".join(re.escape(p) for p in SERVICES)
    pattern = re.compile(rf"(?:^|\s)(\S*(?:{programs})(?:\s.*)?)$")
    found = []
    for line in text.splitlines():
        match = pattern.search(line)
        if match is not None and Path(match.group(1).split()[0]).name in SERVICES:
            found.append(shlex.split(match.group(1), comments=True))
    return found


@dataclass(frozen=True, slots=True)
class HostMap:
    """The substitution table (see the module header) for one set of simulated hosts.

    Attributes:
        roots: host -> the folder standing for its ``/`` (for the guide's fixed paths).
        addresses: host -> its address.
        netns: host -> its network namespace.
        bin_dir: the virtualenv ``bin`` folder standing for ``/opt/torviz/bin``.
        torrent: the torrent standing for ``FILE.torrent``.
    """

    roots: Mapping[int, Path]
    addresses: Mapping[int, str]
    netns: Mapping[int, str]
    bin_dir: Path
    torrent: Path

    def path(self, guide_path: str, host: int) -> Path:
        """Where a path of the guide is on ``host``."""
        return Path(self.text(guide_path, host))

    def text(self, text: str, host: int) -> str:
        """``text`` (a command or a file) as it reads on ``host``: every row of the table but
        the ssh one.

        Raises:
            GuideError: ``bad_command`` for an address of no host, or a path below
                /opt/torviz other than its bin folder.
        """
        for pattern, replacement in _USERS:
            text = pattern.sub(replacement, text)
        text = text.replace(BIN, f"{self.bin_dir}/")
        if "/opt/torviz" in text:
            raise GuideError("bad_command", f"only {BIN} of /opt/torviz maps here: {text!r}")
        root = self.roots[host]
        text = _ROOT.sub(lambda m: f"{root}{m.group(1)}", text)
        text = _ADDRESS.sub(lambda m: self._address(int(m.group(1)), text), text)
        return text.replace(TORRENT, str(self.torrent))

    def _address(self, host: int, text: str) -> str:
        if host not in self.addresses:
            raise GuideError("bad_command", f"{GUIDE_ADDRESS}.{host} is no host here: {text!r}")
        return self.addresses[host]

    def command(self, command: Command) -> str:
        """A command as it runs on its host: ``text``, and a pipe into ``ssh root@10.0.0.N
        'CMD'`` runs CMD on host N.

        Raises:
            GuideError: ``bad_command`` when the remote command is not one quoted word.
        """
        ssh = _SSH.search(command.text)
        if ssh is None:
            return self.text(command.text, command.host)
        target = int(ssh.group(1))
        remote = shlex.split(ssh.group(2), comments=True)
        if len(remote) != 1 or target not in self.netns:
            raise GuideError(
                "bad_command",
                f"line {command.line}: ssh root@HOST takes the remote command as one quoted word",
            )
        local = self.text(command.text[: ssh.start()], command.host)
        there = self.text(remote[0], target)
        return f"{local}| ip netns exec {self.netns[target]} bash -c {shlex.quote(there)}"

    def unmap(self, text: str) -> str:
        """A program's output read back in the guide's terms (host paths to the guide's,
        addresses to 10.0.0.N, the virtualenv's bin to /opt/torviz/bin)."""
        text = text.replace(f"{self.bin_dir}/", BIN)
        for root in self.roots.values():
            for guide_root in ROOTS:
                text = text.replace(f"{root}{guide_root}", guide_root)
        for host, address in self.addresses.items():
            text = re.sub(rf"(?<![\d.]){re.escape(address)}(?!\d)", f"{GUIDE_ADDRESS}.{host}", text)
        return text
