"""The schema as a guarded contract: snapshot, unique tags, closed unions, frozen handshake."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import pkgutil
import types
import typing
from pathlib import Path
from typing import Annotated

import pytest

from torviz.shared.bus import (
    BUS_PROTOCOL_VERSION,
    MESSAGES,
    RETIRED_TAGS,
    Heartbeat,
    Hello,
    Message,
    Rejected,
    StorePiece,
    Welcome,
    bus_message,
    codec,
    render_schema,
    schema,
)
from torviz.shared.bus.vocabulary import Range, Size

SNAPSHOT = Path(__file__).resolve().parents[2] / "vectors" / "bus_schema.snapshot"
UPDATE_ENV = "TORVIZ_UPDATE_SNAPSHOT"


def test_schema_matches_the_snapshot() -> None:
    rendered = render_schema()
    if os.environ.get(UPDATE_ENV) == "1":
        SNAPSHOT.write_text(rendered)
    expected = SNAPSHOT.read_text() if SNAPSHOT.exists() else ""
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=str(SNAPSHOT),
                tofile="render_schema()",
            )
        )
        pytest.fail(
            "the bus schema changed on the wire:\n"
            f"{diff}\n"
            "If this is deliberate: bump BUS_PROTOCOL_VERSION (unless only new messages were "
            f"added), then regenerate with `{UPDATE_ENV}=1 pytest tests/shared/bus` and commit "
            "the snapshot with the change.",
            pytrace=False,
        )


def test_snapshot_names_the_protocol_version() -> None:
    assert render_schema().splitlines()[0] == f"BUS_PROTOCOL_VERSION {BUS_PROTOCOL_VERSION}"
    assert BUS_PROTOCOL_VERSION == 10


def test_tags_are_unique_and_registered_under_their_class() -> None:
    tags = [cls.TAG for cls in MESSAGES.values()]
    assert len(tags) == len(set(tags))
    assert all(MESSAGES[cls.TAG] is cls for cls in MESSAGES.values())
    assert all(0 < tag < 128 for tag in tags)  # one msgpack byte each, for now
    assert not set(tags) & RETIRED_TAGS


def test_every_message_class_in_the_schema_is_registered() -> None:
    modules = [schema] + [
        importlib.import_module(f"{schema.__name__}.{info.name}")
        for info in pkgutil.iter_modules(schema.__path__)
    ]
    assert len(modules) >= 5
    declared = {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, Message) and value is not Message
    }
    assert declared == set(MESSAGES.values())


@pytest.mark.parametrize("tag", [0, 65536, 1, 60])
def test_a_taken_or_out_of_range_tag_is_refused_at_import(tag: int) -> None:
    with pytest.raises(TypeError, match=f"tag {tag}"):

        @bus_message(tag=tag)
        class Clash(Message):
            pass

    assert MESSAGES[1] is Hello and MESSAGES[60] is StorePiece


def test_messages_are_frozen_slotted_dataclasses() -> None:
    for cls in MESSAGES.values():
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen
        assert "__slots__" in vars(cls)
    heartbeat = Heartbeat(seq=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        heartbeat.seq = 2  # type: ignore[misc]
    assert not hasattr(heartbeat, "__dict__")


def test_direction_unions_cover_every_message_exactly_once() -> None:
    unions = [
        schema.Lifecycle,
        schema.ToTrackerAgent,
        schema.FromTrackerAgent,
        schema.ToPeerAgent,
        schema.FromPeerAgent,
        schema.DataRequest,
        schema.DataReply,
        schema.ToStorageAgent,
        schema.FromStorageAgent,
        schema.ControlRequest,
        schema.ControlReply,
    ]
    members = [cls for union in unions for cls in typing.get_args(union)]
    assert all(isinstance(union, types.UnionType) for union in unions)
    assert sorted(cls.__name__ for cls in members) == sorted(
        cls.__name__ for cls in MESSAGES.values()
    )


def test_only_data_path_messages_carry_a_data_frame() -> None:
    assert {cls.__name__ for cls in MESSAGES.values() if cls.HAS_DATA} == {
        "StorePiece",
        "BlockRead",
    }


def test_the_handshake_layout_is_frozen_across_versions() -> None:
    # These three must read the same in every protocol version (see schema's header).
    def layout(cls: type) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    assert (Hello.TAG, Welcome.TAG, Rejected.TAG) == (1, 2, 3)
    assert layout(Hello) == [
        "protocol_version",
        "schema_digest",
        "service",
        "agent_id",
        "host",
        "pid",
        "capabilities",
    ]
    assert layout(Welcome) == ["protocol_version", "service", "server_id", "heartbeat_interval"]
    assert layout(Rejected) == ["reason", "message"]


@dataclasses.dataclass(frozen=True)
class _Unbounded:
    name: str


@dataclasses.dataclass(frozen=True)
class _SizedInt:
    count: Annotated[int, Size(0, 3)]


@dataclasses.dataclass(frozen=True)
class _RangedStr:
    name: Annotated[str, Range(0, 3)]


@dataclasses.dataclass(frozen=True)
class _Mapping:
    table: dict[str, int]


@dataclasses.dataclass(frozen=True)
class _Either:
    value: int | str


@dataclasses.dataclass(frozen=True)
class _UnknownRecord:
    inner: _Either


@dataclasses.dataclass
class _Mutable:
    count: int


@pytest.mark.parametrize(
    "cls", [_Unbounded, _SizedInt, _RangedStr, _Mapping, _Either, _UnknownRecord, _Mutable]
)
def test_the_codec_refuses_field_types_outside_the_contract(cls: type) -> None:
    with pytest.raises(TypeError, match=cls.__name__):
        codec._compile_record(cls)
