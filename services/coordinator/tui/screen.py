"""The terminal: blessed draws the frames ``render`` builds.

Strategy: the screen keeps the last frame drawn and writes only the lines that differ
(``move_xy`` + styled text + ``clear_eol``), so an idle UI writes nothing and a busy one a few
lines a second. A change of size redraws everything. Styles map to colours, or to reverse and
bold on a terminal without colours.

Rules: the only module here that writes to the terminal; enter/exit restore it (normal screen,
cursor shown, cooked mode) even when the UI fails.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType
from typing import Any

import blessed

from .lines import Line, Style

__all__ = ["Screen", "key_names"]

ESC_DELAY = 0.1
"""Seconds to wait for the rest of an escape sequence before a lone ESC is the Esc key
(blessed's default, 0.35 s, makes Esc feel slow; vim's ``ttimeoutlen`` is 0.1 s too)."""


def _styles(term: blessed.Terminal) -> dict[Style, str]:
    """Each style's escape sequence on ``term``."""
    colours = term.number_of_colors >= 8
    bold, reverse = term.bold, term.reverse

    def colour(name: str, fallback: str = "") -> str:
        return str(getattr(term, name)) if colours else fallback

    origins = ("cyan", "magenta", "blue", "green", "yellow", "red", "bright_cyan", "bright_blue")
    styles = {
        Style.NORMAL: "",
        Style.SELECTED: str(reverse),
        Style.HEADER: str(bold),
        Style.TITLE: str(bold) + colour("cyan"),
        Style.DIM: colour("bright_black"),
        Style.GOOD: colour("green"),
        Style.WARN: colour("yellow", str(bold)),
        Style.BAD: colour("red", str(bold)),
        Style.BAR_DONE: colour("green"),
        Style.BAR_TODO: colour("bright_black"),
        Style.INPUT: "",
        Style.CURSOR: str(reverse),
    }
    for i, name in enumerate(origins):
        styles[Style[f"ORIGIN_{i}"]] = colour(name, str(bold) if i % 2 else "")
    return styles


class Screen:
    """A full-screen blessed terminal that draws frames of styled lines."""

    def __init__(self, term: blessed.Terminal) -> None:
        self.term = term
        self._styles = _styles(term)
        self._normal = str(term.normal)
        self._shown: list[Line] = []
        self._size = (0, 0)
        self.resized = True
        self._stack: contextlib.ExitStack | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) now."""
        return self.term.width, self.term.height

    def __enter__(self) -> Screen:
        stack = contextlib.ExitStack()
        stack.enter_context(self.term.fullscreen())
        stack.enter_context(self.term.hidden_cursor())
        stack.enter_context(self.term.cbreak())
        self._stack = stack
        with contextlib.suppress(ValueError):  # not the main thread: the size is polled anyway
            previous = signal.signal(signal.SIGWINCH, self._on_winch)
            stack.callback(signal.signal, signal.SIGWINCH, previous)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._stack is not None:
            self._write(self._normal)
            self._stack.close()
            self._stack = None

    def _on_winch(self, signum: int, frame: FrameType | None) -> None:
        self.resized = True

    def changed_size(self) -> bool:
        """Whether the terminal's size changed since the last frame (then all is redrawn)."""
        if self.resized or self.size != self._size:
            self.resized = False
            return True
        return False

    def draw(self, lines: list[Line]) -> None:
        """Draw a frame, writing only the lines that differ from the last one."""
        size = self.size
        out: list[str] = []
        if size != self._size:
            self._shown = []
            self._size = size
            out.append(str(self.term.home) + str(self.term.clear))
        for y, line in enumerate(lines):
            if y < len(self._shown) and self._shown[y] == line:
                continue
            # Clear first: a full-width line must not be followed by an erase (the cursor
            # waits on its last cell, and the erase would take that cell).
            out.append(self.term.move_xy(0, y) + str(self.term.clear_eol))
            for text, style in line:
                code = self._styles.get(style, "")
                out.append(f"{code}{text}{self._normal}" if code else text)
        self._shown = list(lines)
        if out:
            self._write("".join(out))

    def keys(self, timeout: float) -> Iterator[str]:
        """The keys pressed: waits up to ``timeout`` s for the first, then takes what is
        pending (a paste arrives as many keys at once). Each is a character or a key name."""
        key = self.term.inkey(timeout=timeout, esc_delay=ESC_DELAY)
        while key:
            yield from key_names(key)
            key = self.term.inkey(timeout=0, esc_delay=ESC_DELAY)

    def _write(self, text: str) -> None:
        stream: Any = self.term.stream or sys.stdout
        stream.write(text)
        stream.flush()


def key_names(key: Any) -> list[str]:
    """A blessed keystroke as this UI's key names: a character, or the name of a special key.

    Esc quickly followed by a key arrives as one "Alt" keystroke (``ESC q``): it is the two
    keys the user typed (this UI binds nothing to Alt).
    """
    text = str(key)
    if key.is_sequence and len(text) == 2 and text[0] == "\x1b" and text[1].isprintable():
        return ["KEY_ESCAPE", text[1]]
    if key.is_sequence and key.name:
        return [str(key.name)]
    return [text]
