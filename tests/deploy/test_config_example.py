"""deploy/config.example.toml documents every setting of shared/config.py at its default.

The sections and keys are found by introspecting the dataclasses, so a new setting that is not
added (with a comment) to the example fails here.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from torviz.shared.config import Config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "config.example.toml"


def _sections() -> dict[str, list[str]]:
    """Section name -> its field names, from the dataclasses."""
    sections: dict[str, list[str]] = {}
    defaults = Config()
    for section in dataclasses.fields(Config):
        default: Any = getattr(defaults, section.name)
        sections[section.name] = [f.name for f in dataclasses.fields(default)]
    return sections


def test_loading_the_example_gives_the_defaults() -> None:
    assert parse_config(EXAMPLE.read_text(encoding="utf-8")) == Config()


def test_every_section_and_key_is_in_the_example() -> None:
    document = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    expected = _sections()
    assert sorted(document) == sorted(expected)
    for name, keys in expected.items():
        assert sorted(document[name]) == sorted(keys), f"[{name}]"


def test_every_key_has_a_comment_above_it() -> None:
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    section = ""
    documented: set[tuple[str, str]] = set()
    for number, line in enumerate(lines):
        if line.startswith("["):
            section = line.strip("[]")
        elif line and not line.startswith("#"):
            key = line.split("=", 1)[0].strip()
            above = lines[number - 1]
            assert above.startswith("# ") and len(above) > 3, f"{section}.{key} has no comment"
            documented.add((section, key))
    expected = {(name, key) for name, keys in _sections().items() for key in keys}
    assert documented == expected
