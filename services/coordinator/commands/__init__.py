"""Subcommands of ``torviz-coordinator``; each module registers one subparser."""

from __future__ import annotations

from types import ModuleType

from . import create, info

COMMANDS: list[ModuleType] = [info, create]
