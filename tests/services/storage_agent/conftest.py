"""Torrents with real content for the storage tests, a fixture giving each kind of store, and
the agent process with its fake coordinator and peer agents (see ``harness.py``).

Torrents are built as bencoded info dicts and parsed by ``shared.metainfo``, so the stores see
exactly what the service will give them.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from torviz.services.storage_agent.core.storage import Storage
from torviz.services.storage_agent.memory import MemoryStorage
from torviz.services.storage_agent.store import FileStorage
from torviz.shared.bencode import encode
from torviz.shared.bus import Welcome
from torviz.shared.metainfo import InfoDict, parse_info_dict

from .harness import AgentProcess, FakeCoordinator, PeerClient

NAME = "torrent"


@dataclass(frozen=True)
class Layout:
    """A torrent and the bytes it describes (padding regions are zeros)."""

    info: InfoDict
    content: bytes

    def piece(self, index: int) -> bytes:
        start = index * self.info.piece_length
        return self.content[start : start + self.info.geometry.piece_size(index)]

    def file_content(self, index: int) -> bytes:
        entry = self.info.files[index]
        return self.content[entry.offset : entry.offset + entry.length]


def build(
    files: Sequence[tuple[str, int] | tuple[str, int, str]],
    piece_length: int,
    *,
    single: bool = False,
    seed: int = 1,
) -> Layout:
    """A torrent of ``files`` ("dir/name", length[, attr]) with random content."""
    rng = random.Random(seed)
    chunks: list[bytes] = []
    entries: list[dict[bytes, object]] = []
    for spec in files:
        path, length = spec[0], spec[1]
        attr = spec[2] if len(spec) == 3 else ""
        chunks.append(bytes(length) if "p" in attr else rng.randbytes(length))
        entry: dict[bytes, object] = {
            b"length": length,
            b"path": [part.encode() for part in path.split("/")],
        }
        if attr:
            entry[b"attr"] = attr.encode()
        entries.append(entry)
    content = b"".join(chunks)
    hashes = b"".join(
        hashlib.sha1(content[i : i + piece_length]).digest()
        for i in range(0, len(content), piece_length)
    )
    info: dict[bytes, object] = {b"name": NAME.encode(), b"piece length": piece_length}
    info[b"pieces"] = hashes
    if single:
        info[b"length"] = len(content)
    else:
        info[b"files"] = entries
    return Layout(parse_info_dict(encode(info)), content)


def multi_file_layout() -> Layout:
    """Pieces of 1 KiB crossing files; empty files at start, middle and end; nested folders;
    a padding file that fills pieces 6 and 7."""
    return build(
        [
            ("empty_start", 0),
            ("a.bin", 2500),
            ("sub/deeper/b.bin", 400),  # smaller than a piece: piece 2 spans a, b and c
            ("sub/empty_middle", 0),
            ("c.bin", 3000),  # ends at 5900
            (".pad/2292", 2292, "p"),  # to 8192: the tail of piece 5, all of pieces 6 and 7
            ("d/e.bin", 5000),
            ("z/empty_end", 0),
        ],
        1024,
    )


def single_file_layout() -> Layout:
    """One file of 10,000 bytes in pieces of 1,536 (not a power of two; short last piece)."""
    return build([(NAME, 10_000)], 1536, single=True)


LAYOUTS: dict[str, Callable[[], Layout]] = {
    "multi": multi_file_layout,
    "single": single_file_layout,
}

StoreFactory = Callable[[InfoDict], Storage]


@pytest.fixture(params=["file", "memory"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: os.PathLike[str]
) -> Iterator[StoreFactory]:
    """Builds stores of one kind; every store made is closed at the end of the test."""
    made: list[Storage] = []

    def factory(info: InfoDict) -> Storage:
        store: Storage
        if request.param == "file":
            store = FileStorage(info, os.path.join(tmp_path, "downloads"))
        else:
            store = MemoryStorage(info)
        made.append(store)
        return store

    try:
        yield factory
    finally:
        for store in made:
            store.close()


def stored_file(store: Storage, index: int) -> bytes | None:
    """A file's content as the store holds it (on disk or in memory); None if it does not exist."""
    if isinstance(store, FileStorage):
        try:
            with open(store.file_path(index), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None
    assert isinstance(store, MemoryStorage)
    return store.file_data(index)


# --- the agent process and its counterparts (test_agent*.py) ----------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short directory for ipc:// endpoints (their paths are limited to ~100 bytes)."""
    with tempfile.TemporaryDirectory(prefix="tvz-sa-", dir="/tmp") as path:
        yield Path(path)


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


@pytest.fixture
def coordinator(zmq_context: zmq.Context[Any], short_dir: Path) -> FakeCoordinator:
    return FakeCoordinator(zmq_context, f"ipc://{short_dir}/bus")


@pytest.fixture
def start_agent(short_dir: Path, coordinator: FakeCoordinator) -> Iterator[Any]:
    """Starts agent processes on this test's endpoints; each is killed at the end."""
    started: list[AgentProcess] = []

    def start(data: str | None = "default", **kwargs: Any) -> AgentProcess:
        endpoint = f"ipc://{short_dir}/data" if data == "default" else data
        agent = AgentProcess.start(coordinator.endpoint, endpoint, short_dir, **kwargs)
        started.append(agent)
        return agent

    try:
        yield start
    finally:
        for agent in started:
            agent.kill()


@pytest.fixture
def agent(start_agent: Any, coordinator: FakeCoordinator) -> AgentProcess:
    """A running agent, welcomed by the fake coordinator."""
    process: AgentProcess = start_agent()
    coordinator.welcome()
    return process


@pytest.fixture
def peer(zmq_context: zmq.Context[Any], short_dir: Path, agent: AgentProcess) -> Any:
    """Makes welcomed peer-agent connections to the running agent's data endpoint."""
    count = 0

    def connect() -> PeerClient:
        nonlocal count
        count += 1
        client = PeerClient(zmq_context, f"ipc://{short_dir}/data", f"pa{count}")
        answer = client.hello()
        assert isinstance(answer, Welcome), answer
        return client

    return connect
