"""A one-line progress display on stderr: percent, bytes, rate and time left.

Strategy: the line is built by a pure function (``render_line``) from numbers and a width, so it
can be tested without a terminal; ``Progress`` only decides when to redraw and asks blessed for
the terminal's own control sequences (carriage return, clear to end of line, hide the cursor),
so no escape code is written by hand and a terminal without them degrades to plain text.
blessed is only ever shown an output stream, never the keyboard, so it sends the terminal no
queries (see ``_OutputOnly``).

Rules:
- Draw only when the stream is a terminal. When stderr is a pipe or a file (scripts, CI, tests)
  nothing is written at all: a log full of redrawn lines helps nobody, and the command's own
  summary on stdout says what happened.
- Redraw at most every ``min_interval`` seconds (plus the first and the final state), so a fast
  producer calling ``update`` per piece costs almost nothing.
- The rate is averaged over the whole run; the time left is ``remaining / rate``.
- Sizes use binary units (KiB, MiB, GiB), as every BitTorrent client shows them.
- A job whose size is not known yet (a magnet link fetching its metadata) shows a line of text
  in place of the bar (``show``), redrawn at once when the text changes; ``set_total`` starts
  the bar, and its rate, from then.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, TextIO, cast

import blessed

from torviz.shared.units import human_size

__all__ = ["Progress", "format_duration", "human_size", "render_line"]


def format_duration(seconds: float) -> str:
    """``75`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``."""
    whole = max(0, int(seconds + 0.5))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render_line(label: str, done: int, total: int, elapsed: float, width: int) -> str:
    """The progress line for ``done`` of ``total`` bytes after ``elapsed`` seconds.

    The bar takes whatever ``width`` leaves after the text; below 10 columns it is dropped, and
    the result never exceeds ``width`` characters (a wrapped line could not be redrawn).
    """
    done = min(max(done, 0), total)
    fraction = done / total if total > 0 else 1.0
    rate = done / elapsed if elapsed > 0 else 0.0
    if done >= total:
        eta = "done"
    elif rate > 0:
        eta = "ETA " + format_duration((total - done) / rate)
    else:
        eta = "ETA --:--"
    head = f"{label} {fraction * 100:3.0f}% "
    tail = f" {human_size(done)} / {human_size(total)}  {human_size(rate)}/s  {eta}"
    room = width - len(head) - len(tail) - 2
    if room >= 10:
        filled = int(room * fraction)
        bar = "[" + "#" * filled + "." * (room - filled) + "]"
        return head + bar + tail
    return (head.rstrip() + tail)[: max(width, 0)]


class _OutputOnly:
    """The output stream as blessed should see it: a file descriptor to draw on, no keyboard.

    Given ``sys.__stderr__`` itself, blessed takes stdin for a keyboard and, on a terminal,
    sends capability and version queries at start-up and waits for the answers: junk on some
    terminals and a 10 s stall where nothing answers (measured under ``script``). Any other
    object keeps blessed to capability lookups in its terminfo database.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def fileno(self) -> int:
        return self._stream.fileno()

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()


class Progress:
    """A redrawn progress line for a job of ``total`` bytes; use it as a context manager.

    Args:
        total: bytes the job will process.
        label: a short word shown first (``"hashing"``).
        stream: where to draw; stderr by default. Nothing is drawn unless it is a terminal.
        clock: seconds, monotonic; passed in so tests can drive it.
        min_interval: least seconds between two redraws.
        text: shown instead of the bar until ``set_total`` (a job whose size is not known).
    """

    def __init__(
        self,
        total: int,
        label: str,
        *,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        min_interval: float = 0.1,
        text: str | None = None,
    ) -> None:
        self._stream = stream if stream is not None else sys.stderr
        # blessed only needs fileno/write/flush of its stream; the cast states that duck type.
        self._term = blessed.Terminal(stream=cast("IO[str]", _OutputOnly(self._stream)))
        self.enabled: bool = bool(self._term.is_a_tty)
        self._total = total
        self._label = label
        self._clock = clock
        self._min_interval = min_interval
        self._start = clock()
        self._last_draw: float | None = None
        self._done = 0
        self._text = text

    def __enter__(self) -> Progress:
        if self.enabled:
            self._write(self._term.hide_cursor)
            self._draw(self._clock())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(finished=exc_type is None)

    @property
    def done(self) -> int:
        return self._done

    def elapsed(self) -> float:
        """Seconds since the display was created."""
        return self._clock() - self._start

    def relabel(self, label: str) -> None:
        """Change the leading text (e.g. the peer count of a download) from the next redraw."""
        self._label = label

    def show(self, text: str) -> None:
        """Show ``label: text`` instead of the bar, until ``set_total``."""
        changed = text != self._text
        self._text = text
        if not self.enabled:
            return
        now = self._clock()
        if changed or self._last_draw is None or now - self._last_draw >= self._min_interval:
            self._draw(now)

    def print_above(self, text: str, file: TextIO) -> None:
        """Print a line of ``text`` to ``file`` (on a terminal: where the progress line was,
        which is drawn again below it)."""
        if self.enabled:
            self._write(self._term.cr + self._term.clear_eol)
        print(text, file=file, flush=True)
        if self.enabled:
            self._draw(self._clock())

    def set_total(self, total: int) -> None:
        """The job's size is known now: show the bar from here, its rate counted from now."""
        if self._text is not None or total != self._total:
            self._start = self._clock()
            self._last_draw = None
        self._total = total
        self._text = None

    def advance(self, amount: int) -> None:
        """Count ``amount`` more bytes as done."""
        self.update(self._done + amount)

    def update(self, done: int) -> None:
        """Set the bytes done so far; redraws if the last redraw is old enough."""
        self._done = done
        if not self.enabled:
            return
        now = self._clock()
        if self._last_draw is None or now - self._last_draw >= self._min_interval:
            self._draw(now)

    def close(self, *, finished: bool = True) -> None:
        """Draw the final state (when ``finished``), end the line and show the cursor again."""
        if not self.enabled:
            return
        if finished:
            self._draw(self._clock())
        self._write("\n" + self._term.normal_cursor)
        self.enabled = False

    def _draw(self, now: float) -> None:
        self._last_draw = now
        width = max(int(self._term.width or 80) - 1, 20)
        if self._text is not None:
            line = f"{self._label}: {self._text}"[:width]
        else:
            line = render_line(self._label, self._done, self._total, now - self._start, width)
        self._write(self._term.cr + line + self._term.clear_eol)

    def _write(self, text: str) -> None:
        self._stream.write(text)
        self._stream.flush()
