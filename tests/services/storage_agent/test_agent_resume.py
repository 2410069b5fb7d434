"""Keeping verified work: the real agent with ``--state-dir``, restarted, killed, and its files
changed behind its back.

Each test runs ``python -m torviz.services.storage_agent`` (see ``harness.py``) with a state
directory under ``tmp_path``, plays the coordinator and a peer agent, and looks at the real files
and at the resume database itself. "No hashing" is checked by the absence of ``CheckProgress`` (sent
whenever a piece is hashed at open or recheck) and by the agent's log, never by timing alone.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zmq

from torviz.shared.bitfield import Bitfield
from torviz.shared.bus import (
    CheckProgress,
    CloseTorrent,
    Message,
    OpenTorrent,
    PieceVerified,
    RecheckTorrent,
    Shutdown,
    StorageFailed,
    TorrentClosed,
    TorrentOpened,
    Welcome,
)

from .harness import (
    AgentProcess,
    FakeCoordinator,
    PeerClient,
    Torrent,
    disk_bytes,
    store_all,
    torrent_from_files,
)

WAIT = 10.0
MiB = 1 << 20


def three_files(name: str = "keep", seed: int = 3) -> Torrent:
    """40 pieces of 4 KiB: a.bin is pieces 0-9, sub/b.bin 9-26, c.bin 26-39."""
    rng = random.Random(seed)
    return torrent_from_files(
        name,
        [
            ("a.bin", rng.randbytes(40_000)),
            ("sub/b.bin", rng.randbytes(70_000)),
            ("sub/deep/empty", b""),
            ("c.bin", rng.randbytes(50_001)),
        ],
        4096,
    )


@pytest.fixture(scope="module")
def big() -> Torrent:
    """64 MiB in one file, 256 pieces of 256 KiB."""
    return torrent_from_files("big", [("data.bin", os.urandom(64 * MiB))], 256 * 1024)


def pieces_of(have: bytes, torrent: Torrent) -> set[int]:
    return set(Bitfield.from_bytes(have, torrent.num_pieces))


def on_disk(torrent: Torrent, save: Path) -> set[int]:
    """The pieces whose bytes on disk are correct (computed by the test, not the agent)."""
    stream = disk_bytes(torrent, save)
    size = torrent.info.piece_length
    return {
        piece
        for piece in range(torrent.num_pieces)
        if hashlib.sha1(stream[piece * size : (piece + 1) * size]).digest()
        == torrent.info.piece_hash(piece)
    }


def put_on_disk(torrent: Torrent, save: Path) -> None:
    """Write the torrent's files, complete, under ``save`` (a copy the agent never saw)."""
    for index, _ in enumerate(torrent.info.files):
        path = torrent.file_path(save, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(torrent.file_content(index))


def files_under(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@dataclass
class Resume:
    """One test's arrangement: agents started with resume state in ``state``, downloading into
    ``save``, the fake coordinator that welcomes them, and fake peer agents on the data socket."""

    start_agent: Any
    coordinator: FakeCoordinator
    zmq_context: zmq.Context[Any]
    short_dir: Path
    state: Path
    save: Path

    def start(self, flush: float = 60.0) -> AgentProcess:
        """An agent with resume state in ``state``, flushing every ``flush`` seconds, welcomed."""
        config = self.state.parent / f"flush-{flush}.toml"
        config.write_text(f"[storage_agent]\nflush_interval = {flush}\n")
        agent: AgentProcess = self.start_agent(
            extra=["--state-dir", str(self.state), "--config", str(config)]
        )
        self.coordinator.welcome()
        return agent

    def connect(self, name: str) -> PeerClient:
        """A fake peer agent ``name`` on the data socket, welcomed."""
        client = PeerClient(self.zmq_context, f"ipc://{self.short_dir}/data", name)
        assert isinstance(client.hello(), Welcome)
        return client

    def until(self, kinds: tuple[type[Message], ...]) -> tuple[Message, list[CheckProgress]]:
        """Receive until a message of one of ``kinds``; returns it and the ``CheckProgress`` seen.

        Other messages (heartbeats, ``PieceVerified`` ...) are kept in the backlog for later.
        """
        progress: list[CheckProgress] = []
        deadline = time.monotonic() + WAIT
        kept: list[Message] = []
        try:
            while True:
                assert time.monotonic() < deadline, f"no {kinds} within {WAIT}s"
                message = self.coordinator.recv(max(0.01, deadline - time.monotonic()))
                if isinstance(message, kinds):
                    return message, progress
                if isinstance(message, CheckProgress):
                    progress.append(message)
                elif type(message).__name__ != "Heartbeat":
                    kept.append(message)
        finally:
            self.coordinator.backlog.extend(kept)

    def open(
        self, torrent: Torrent, save: Path | None = None
    ) -> tuple[set[int], list[CheckProgress], float]:
        """Open a torrent (in ``save``, default the test's): the pieces it has, the progress
        events before, and the seconds it took."""
        started = time.monotonic()
        self.coordinator.send(
            OpenTorrent(torrent.info_hash, torrent.raw_info, str(save or self.save))
        )
        opened, progress = self.until((TorrentOpened,))
        took = time.monotonic() - started
        assert isinstance(opened, TorrentOpened) and opened.info_hash == torrent.info_hash
        return pieces_of(opened.have, torrent), progress, took

    def close(self, torrent: Torrent, *, delete_files: bool = False) -> None:
        self.coordinator.send(CloseTorrent(torrent.info_hash, delete_files=delete_files))
        closed, _ = self.until((TorrentClosed, StorageFailed))
        assert closed == TorrentClosed(torrent.info_hash), closed

    def store(self, torrent: Torrent, client: PeerClient, pieces: Sequence[int]) -> None:
        """Store ``pieces`` from ``client``; every one must be reported verified."""
        assert store_all(self.coordinator, torrent, [client], list(pieces)) == set(pieces)

    def complete(self, torrent: Torrent) -> PeerClient:
        """Open ``torrent`` and store every piece of it from a fake peer agent ``pa1``."""
        self.open(torrent)
        client = self.connect("pa1")
        self.store(torrent, client, range(torrent.num_pieces))
        return client

    def recorded(self, torrent: Torrent) -> set[int] | None:
        """The pieces the resume database lists for ``torrent`` (None: no record)."""
        with sqlite3.connect(self.state / "resume.sqlite", timeout=5.0) as db:
            row = db.execute(
                "SELECT have FROM torrents WHERE info_hash = ?", (torrent.info_hash.raw,)
            ).fetchone()
        return None if row is None else pieces_of(row[0], torrent)


@pytest.fixture
def resume(
    start_agent: Any,
    coordinator: FakeCoordinator,
    zmq_context: zmq.Context[Any],
    short_dir: Path,
    tmp_path: Path,
) -> Resume:
    return Resume(
        start_agent, coordinator, zmq_context, short_dir, tmp_path / "state", tmp_path / "downloads"
    )


# --- restarts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", ["Shutdown", "SIGTERM", "CloseTorrent and Shutdown"])
def test_a_graceful_stop_keeps_the_pieces_and_the_next_open_hashes_nothing(
    stop: str, resume: Resume
) -> None:
    torrent = three_files()
    agent = resume.start()
    have, progress, _ = resume.open(torrent)
    assert have == set() and progress == []  # nothing on disk: nothing hashed
    half = list(range(0, torrent.num_pieces, 2))
    resume.store(torrent, resume.connect("pa1"), half)
    if stop == "SIGTERM":
        agent.proc.send_signal(signal.SIGTERM)
    else:  # what a stopping coordinator sends: the close must finish, not be cut short
        if stop != "Shutdown":
            resume.coordinator.send(CloseTorrent(torrent.info_hash, delete_files=False))
        resume.coordinator.send(Shutdown("restart"))
    assert agent.wait(5.0) == 0
    assert resume.recorded(torrent) == set(half)

    again = resume.start()
    have, progress, _ = resume.open(torrent)
    assert have == set(half)
    assert progress == []  # every file matched its record: no piece was read
    assert "resume record, 0 of 3 files changed: nothing to check" in again.log()
    rest = [p for p in range(torrent.num_pieces) if p not in have]
    resume.store(torrent, resume.connect("pa2"), rest)
    assert on_disk(torrent, resume.save) == set(range(torrent.num_pieces))


def test_a_complete_copy_is_checked_once_then_reopens_at_once(resume: Resume, big: Torrent) -> None:
    put_on_disk(big, resume.save)
    agent = resume.start()
    have, progress, took = resume.open(big)
    assert have == set(range(256))  # straight to seeding
    assert progress[0] == CheckProgress(big.info_hash, 0, 256)
    assert progress[-1] == CheckProgress(big.info_hash, 256, 256)
    assert [p.checked for p in progress] == sorted(p.checked for p in progress)
    assert len(progress) <= 3 + 4 * took  # a few per second, not one per piece
    resume.close(big)

    have, progress, took = resume.open(big)
    assert have == set(range(256)) and progress == []
    assert took < 1.0, f"a fast resume of 64 MiB took {took:.2f}s"
    assert agent.log().count("nothing to check") == 1


def test_a_close_during_the_check_cancels_it_and_nothing_unchecked_is_recorded(
    resume: Resume, big: Torrent
) -> None:
    put_on_disk(big, resume.save)
    agent = resume.start()
    resume.coordinator.send(OpenTorrent(big.info_hash, big.raw_info, str(resume.save)))
    resume.coordinator.send(CloseTorrent(big.info_hash, delete_files=False))  # while checked
    answer, _ = resume.until((TorrentOpened, TorrentClosed))
    assert answer == TorrentClosed(big.info_hash), "the check was not cancelled"
    assert "opening cancelled by a close" in agent.log()
    assert resume.recorded(big) is None

    have, progress, _ = resume.open(big)  # checked in full this time
    assert have == set(range(256)) and progress[-1].checked == 256


def test_after_sigkill_every_verified_piece_is_found_and_nothing_more(resume: Resume) -> None:
    torrent = three_files()
    agent = resume.start(flush=0.2)
    resume.open(torrent)
    client = resume.connect("pa1")
    first = list(range(10))
    resume.store(torrent, client, first)
    deadline = time.monotonic() + WAIT
    while resume.recorded(torrent) != set(first):  # the periodic flush records them
        assert time.monotonic() < deadline, resume.recorded(torrent)
        time.sleep(0.05)

    second = [p for p in range(10, torrent.num_pieces) if p % 3]  # with gaps
    resume.store(torrent, client, second)
    agent.proc.kill()  # right after the last PieceVerified, long before the next flush
    agent.proc.wait(timeout=10)
    assert resume.recorded(torrent) == set(first)  # the record lags behind ...

    resume.start()
    have, progress, _ = resume.open(torrent)
    assert have == set(first) | set(second)  # ... but nothing verified is lost
    assert progress, "the files written since the record are checked again"


# --- files changed behind the agent's back ------------------------------------------------------


def test_touching_one_file_rechecks_only_the_pieces_touching_it(resume: Resume) -> None:
    torrent = three_files()
    resume.start()
    resume.complete(torrent)
    resume.close(torrent)

    b = torrent.file_path(resume.save, 1)
    os.utime(b, ns=(b.stat().st_atime_ns, b.stat().st_mtime_ns + 5 * 10**9))
    have, progress, _ = resume.open(torrent)
    assert have == set(range(torrent.num_pieces))
    assert {p.total for p in progress} == {len(range(9, 27))}  # b.bin: pieces 9 to 26
    assert progress[-1].checked == 18


def test_a_truncated_file_loses_exactly_its_missing_pieces(resume: Resume) -> None:
    torrent = three_files()
    resume.start()
    resume.complete(torrent)
    resume.close(torrent)

    os.truncate(torrent.file_path(resume.save, 3), 20_000)  # c.bin starts at byte 110,000
    have, progress, _ = resume.open(torrent)
    every = set(range(torrent.num_pieces))
    assert have == on_disk(torrent, resume.save) == every - set(range(31, 40))
    assert {p.total for p in progress} == {14}  # c.bin: pieces 26 to 39


def test_a_recheck_finds_a_corrupted_byte_and_updates_the_record(resume: Resume) -> None:
    torrent = three_files()
    resume.start()
    client = resume.complete(torrent)
    every = set(range(torrent.num_pieces))

    with torrent.file_path(resume.save, 3).open("r+b") as handle:  # a byte of piece 30 in c.bin
        handle.seek(30 * 4096 + 100 - 110_000)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    resume.coordinator.send(RecheckTorrent(torrent.info_hash))
    answer, progress = resume.until((TorrentOpened, StorageFailed))
    assert isinstance(answer, TorrentOpened)
    assert pieces_of(answer.have, torrent) == every - {30}
    assert progress[0] == CheckProgress(torrent.info_hash, 0, 40)
    assert progress[-1] == CheckProgress(torrent.info_hash, 40, 40)
    assert resume.recorded(torrent) == every - {30}
    assert not any(isinstance(m, PieceVerified) for m in resume.coordinator.backlog)

    client.store(torrent.info_hash, 30, torrent.piece(30), ["pa1/2"])  # fetched again
    assert resume.coordinator.expect(PieceVerified) == PieceVerified(torrent.info_hash, 30)
    assert on_disk(torrent, resume.save) == every


# --- deleting -----------------------------------------------------------------------------------


def test_delete_files_removes_exactly_the_torrents_files_and_its_record(resume: Resume) -> None:
    save = resume.save
    open_one, closed_one = three_files("open"), three_files("closed", seed=4)
    resume.start()
    client = resume.connect("pa1")
    for torrent in (open_one, closed_one):
        resume.open(torrent)
        resume.store(torrent, client, range(torrent.num_pieces))
    (save / "open" / "notes.txt").write_text("the user's, in the torrent's folder")
    (save / "unrelated.bin").write_bytes(b"another download")

    before = files_under(save)
    resume.close(open_one)  # without delete_files: nothing is touched
    resume.close(closed_one)
    assert files_under(save) == before
    assert resume.recorded(open_one) is not None

    resume.open(open_one)
    resume.close(open_one, delete_files=True)  # an open torrent
    resume.close(closed_one, delete_files=True)  # a closed one: paths from its record
    assert sorted(files_under(save)) == ["open/notes.txt", "unrelated.bin"]
    assert sorted(p.name for p in save.iterdir()) == ["open", "unrelated.bin"]
    assert list((save / "open").iterdir()) == [save / "open" / "notes.txt"]  # sub/ is gone
    assert resume.recorded(open_one) is None and resume.recorded(closed_one) is None


# --- a broken database, a full disk -------------------------------------------------------------


def test_a_corrupt_database_is_moved_aside_and_the_files_are_checked(resume: Resume) -> None:
    torrent, state = three_files(), resume.state
    state.mkdir()
    (state / "resume.sqlite").write_bytes(b"\x13 not a database \x37" * 500)
    put_on_disk(torrent, resume.save)
    agent = resume.start()
    have, progress, _ = resume.open(torrent)
    assert have == set(range(torrent.num_pieces)) and progress
    aside = list(state.glob("resume.sqlite.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"\x13 not a database")
    lines = [line for line in agent.log().splitlines() if "moved aside" in line]
    assert len(lines) == 1 and "corrupt" in lines[0], agent.log()
    assert "Traceback" not in agent.log()
    assert resume.recorded(torrent) == have  # the fresh database works


@pytest.fixture
def small_disk(short_dir: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: a real ENOSPC. Mounting needs root (CI runs as root on a VM)."""
    mount = short_dir / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs for a real full disk needs root")
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"mount -t tmpfs is not permitted here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=10, check=False)


def test_a_full_disk_stops_the_torrent_and_a_reopen_continues_after_space_is_freed(
    small_disk: Path, resume: Resume
) -> None:
    filler = small_disk / "filler"
    filler.write_bytes(os.urandom(MiB))  # leaves less than 1 MiB free
    torrent = torrent_from_files("fill", [("big.bin", os.urandom(3 * MiB // 2))], 65536)
    save = small_disk / "downloads"
    agent = resume.start()
    resume.open(torrent, save)
    client = resume.connect("pa1")
    verified: list[int] = []
    failed = None
    for piece in range(torrent.num_pieces):
        client.store(torrent.info_hash, piece, torrent.piece(piece), ["pa1/1"])
        answer, _ = resume.until((PieceVerified, StorageFailed))
        if isinstance(answer, StorageFailed):
            failed = answer
            break
        verified.append(piece)
    assert failed is not None and 0 < len(verified) < torrent.num_pieces
    assert (failed.file, failed.errno_name) == ("fill/big.bin", "ENOSPC")
    assert failed.message == (
        "disk full writing 'fill/big.bin' (ENOSPC): free some space, then resume the torrent"
    )
    client.store(torrent.info_hash, len(verified) + 1, torrent.piece(len(verified) + 1), ["x/1"])
    resume.coordinator.expect_none(StorageFailed, within=0.3)  # stopped: reported once
    assert "Traceback" not in agent.log()

    filler.unlink()
    have, _, _ = resume.open(torrent, save)  # the coordinator's resume
    assert have == set(verified)
    rest = [p for p in range(torrent.num_pieces) if p not in have]
    resume.store(torrent, client, rest)
    assert torrent.file_path(save, 0).read_bytes() == torrent.content
