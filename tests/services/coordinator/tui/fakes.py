"""Stand-ins for the terminal and the daemon link, to drive ``tui.app.App`` without either."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from torviz.services.coordinator.tui.lines import Line, line_text
from torviz.shared.bus import Message, SessionChanges
from torviz.shared.errors import BusError

from .records import changes

__all__ = ["FakeLink", "FakeScreen"]


class FakeScreen:
    """Keys given per turn of the loop; frames kept. Running out of keys fails the test (a
    loop that does not end when it should)."""

    def __init__(self, *turns: list[str], size: tuple[int, int] = (80, 24)) -> None:
        self.turns = list(turns)
        self.size = size
        self.frames: list[list[Line]] = []

    def changed_size(self) -> bool:
        return False

    def draw(self, lines: list[Line]) -> None:
        self.frames.append(lines)

    def keys(self, timeout: float) -> Iterator[str]:
        assert timeout <= 1.0
        if not self.turns:
            raise AssertionError("the loop wants more keys than the test gave")
        yield from self.turns.pop(0)

    def text(self) -> list[str]:
        """The last frame's characters."""
        return [line_text(line) for line in self.frames[-1]]


class FakeLink:
    """Answers ``changes`` with ``answer`` (or raises ``down``), and each request with
    ``reply(message)``; records the requests."""

    def __init__(self, reply: Callable[[Message], Message] | None = None) -> None:
        self.answer: SessionChanges = changes(complete=True)
        self.down: BusError | None = None
        self.reply = reply
        self.sent: list[Message] = []
        self.polls = 0

    def changes(self, since: int, events_after: int) -> SessionChanges:
        self.polls += 1
        if self.down is not None:
            raise self.down
        return self.answer

    def request(self, message: Message) -> Message:
        self.sent.append(message)
        if self.down is not None:
            raise self.down
        assert self.reply is not None, message
        return self.reply(message)

    def close(self) -> None:
        pass
