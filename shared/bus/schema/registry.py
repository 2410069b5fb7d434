"""How a class becomes a bus message or record: the decorators and the one registry of tags.

Strategy: ``@bus_message(tag=N)`` makes a class a frozen slotted dataclass and files it under its
tag in ``MESSAGES``, the one registry the codec reads; ``@bus_record`` does the same for records
nested in messages, kept in declaration order (``registered_records``). The messages themselves
are declared in the sibling modules of this package, one per channel.

Rules:
- A tag is 1..65535, never one of ``RETIRED_TAGS`` and never taken twice; a clash is a
  ``TypeError`` at import time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, TypeVar, dataclass_transform

RETIRED_TAGS: frozenset[int] = frozenset({50})  # 50: ListeningOn, now part of AgentInfo


class Message:
    """Base of every bus message: a frozen slotted dataclass made by ``@bus_message``."""

    __slots__ = ()
    TAG: ClassVar[int]
    HAS_DATA: ClassVar[bool] = False


M = TypeVar("M", bound=Message)
R = TypeVar("R")

_messages: dict[int, type[Message]] = {}
_records: list[type] = []

MESSAGES: Mapping[int, type[Message]] = MappingProxyType(_messages)
"""Every message class by tag: the one registry the codec reads."""


@dataclass_transform(frozen_default=True)
def bus_message(tag: int, *, has_data: bool = False) -> Callable[[type[M]], type[M]]:
    """Make a class a frozen slotted dataclass and register it as the message ``tag``.

    Args:
        tag: the class's stable wire number, 1..65535.
        has_data: whether the message travels with a data frame.

    Raises:
        TypeError: the tag is out of range, retired or already taken (at import time).
    """

    def register(cls: type[M]) -> type[M]:
        if not 0 < tag < 65536 or tag in RETIRED_TAGS:
            raise TypeError(f"{cls.__name__}: tag {tag} is out of range or retired")
        if tag in _messages:
            raise TypeError(f"{cls.__name__}: tag {tag} is taken by {_messages[tag].__name__}")
        made = dataclass(frozen=True, slots=True)(cls)
        made.TAG = tag
        made.HAS_DATA = has_data
        _messages[tag] = made
        return made

    return register


@dataclass_transform(frozen_default=True)
def bus_record(cls: type[R]) -> type[R]:
    """Make a class a frozen slotted dataclass nested in messages as a positional array."""
    made = dataclass(frozen=True, slots=True)(cls)
    _records.append(made)
    return made


def registered_records() -> tuple[type, ...]:
    """Every class made by ``@bus_record`` so far, in declaration order.

    Returns:
        The record classes.
    """
    return tuple(_records)
