"""Tab completion of a path in the add prompt.

Strategy: the text typed so far names a folder and the start of a name in it; Tab completes to
the longest prefix shared by every entry that starts so (shell-like), a lone folder gets its
``/`` so the next Tab goes inside it. ``~`` is expanded for the lookup, and kept in the text.

Rules: reads folder listings only (bounded: ``MAX_ENTRIES``), never a file's content; a folder
that cannot be read completes nothing; a magnet link is left alone.
"""

from __future__ import annotations

import os

__all__ = ["MAX_ENTRIES", "complete_path", "matches"]

MAX_ENTRIES = 10_000
"""Entries of one folder looked at, at most."""


def _split(text: str) -> tuple[str, str]:
    """(folder as typed, including its ``/``; the start of the name)."""
    cut = text.rfind("/") + 1
    return text[:cut], text[cut:]


def matches(text: str) -> list[str]:
    """The entries of ``text``'s folder whose name starts with its last part, folders with a
    trailing ``/``, sorted."""
    folder, start = _split(text)
    where = os.path.expanduser(folder) if folder else "."
    found: list[str] = []
    try:
        with os.scandir(where) as entries:
            for count, entry in enumerate(entries):
                if count >= MAX_ENTRIES:
                    break
                if not entry.name.startswith(start):
                    continue
                if entry.name.startswith(".") and not start.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                found.append(entry.name + ("/" if is_dir else ""))
    except OSError:
        return []
    return sorted(found)


def complete_path(text: str) -> str:
    """``text`` completed as far as every match agrees (unchanged when nothing matches)."""
    if text.lstrip()[:7].lower() == "magnet:":
        return text
    folder, _ = _split(text)
    names = matches(text)
    if not names:
        return text
    common = os.path.commonprefix(names)  # noqa: RUF071 (names, not paths: a shared start)
    return folder + common if len(folder + common) >= len(text) else text
