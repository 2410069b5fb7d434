"""Fast resume decisions, without I/O: which pieces a record lets an open trust, which to hash.

The layout is ``conftest.multi_file_layout``: 13 pieces of 1 KiB; a.bin is pieces 0-2, b.bin
piece 2, c.bin pieces 2-5, a padding file fills 5-7, e.bin is pieces 8-12; three empty files.
"""

from __future__ import annotations

import pytest

from torviz.services.storage_agent.core.fastresume import (
    SETTLE_NS,
    CheckPlan,
    ResumeRecord,
    make_record,
    plan_open,
)
from torviz.services.storage_agent.core.storage import FileState
from torviz.shared.bitfield import Bitfield
from torviz.shared.types import InfoHash

from .conftest import multi_file_layout

LAYOUT = multi_file_layout()
INFO = LAYOUT.info
IH = InfoHash(b"\x33" * 20)
ROOT = "/downloads"
NOW = 1_700_000_000 * 10**9
OLD = NOW - 60 * 10**9  # written a minute before: settled
A, B, C, PAD, E = 1, 2, 4, 5, 6  # file indices


def states(**changes: FileState | None) -> list[FileState | None]:
    """Every file present and settled, except ``changes`` (by name: a, b, c, e)."""
    found: list[FileState | None] = [
        None if entry.padding else FileState(entry.length, OLD) for entry in INFO.files
    ]
    for name, state in changes.items():
        found[{"a": A, "b": B, "c": C, "e": E}[name]] = state
    return found


def record(have: list[int], found: list[FileState | None], *, now: int = NOW) -> ResumeRecord:
    return make_record(IH, INFO, ROOT, Bitfield(13, have), found, now_ns=now, final=False)


def pieces(plan: CheckPlan) -> list[int]:
    return list(plan.pieces())


EVERYTHING = list(range(13))


def test_an_unchanged_torrent_is_trusted_without_hashing() -> None:
    plan = plan_open(INFO, ROOT, record(EVERYTHING, states()), states())
    assert plan.trusted == Bitfield.full(13)
    assert pieces(plan) == [] and plan.changed == ()


@pytest.mark.parametrize(
    ("change", "recheck"),
    [
        ({"e": FileState(5000, OLD + 1)}, [8, 9, 10, 11, 12]),  # touched
        ({"b": FileState(400, OLD + 1)}, [2]),  # a piece shared by a, b and c
        ({"c": FileState(3000, OLD - 1)}, [2, 3, 4, 5]),  # an older time is a change too
        ({"a": FileState(2000, OLD)}, [0, 1, 2]),  # truncated, same time
        ({"c": FileState(4000, OLD)}, [2, 3, 4, 5]),  # longer
    ],
)
def test_only_the_pieces_of_changed_files_are_hashed(change, recheck) -> None:
    plan = plan_open(INFO, ROOT, record(EVERYTHING, states()), states(**change))
    assert pieces(plan) == recheck
    assert plan.check_count == len(recheck)
    assert set(plan.trusted) == set(EVERYTHING) - set(recheck)


def test_a_deleted_file_loses_its_pieces_without_hashing_them() -> None:
    plan = plan_open(INFO, ROOT, record(EVERYTHING, states()), states(c=None))
    assert pieces(plan) == []  # nothing to read: c.bin is not there
    assert set(plan.trusted) == set(EVERYTHING) - {2, 3, 4, 5}
    assert plan.changed == (C,)


def test_a_file_that_appeared_since_the_record_is_checked() -> None:
    """The crash case: the record was taken before the file got its first piece."""
    before = record([0, 1], states(c=None, e=None))
    plan = plan_open(INFO, ROOT, before, states(e=None))
    assert pieces(plan) == [2, 3, 4, 5]
    assert set(plan.trusted) == {0, 1}


def test_a_file_written_just_before_the_record_is_not_trusted_by_its_time() -> None:
    recent = states(e=FileState(5000, NOW - SETTLE_NS // 2))
    kept = record([8, 9], recent)
    assert [f.settled for f in kept.files][E] is False
    plan = plan_open(INFO, ROOT, kept, recent)  # same size and time, and still checked
    assert pieces(plan) == [8, 9, 10, 11, 12]
    final = make_record(IH, INFO, ROOT, Bitfield(13, [8, 9]), recent, now_ns=NOW, final=True)
    assert pieces(plan_open(INFO, ROOT, final, recent)) == []


@pytest.mark.parametrize(
    ("kept", "why"),
    [
        (None, "no resume record"),
        (ResumeRecord(IH, "/elsewhere", Bitfield(13), record([], states()).files), "saved for"),
        (ResumeRecord(IH, ROOT, Bitfield(12), record([], states()).files), "12 pieces, not 13"),
        (ResumeRecord(IH, ROOT, Bitfield(13), record([], states()).files[:-1]), "7 files"),
    ],
)
def test_an_unusable_record_means_checking_every_file_there(kept, why) -> None:
    plan = plan_open(INFO, ROOT, kept, states(b=None))
    assert why in plan.note
    assert len(plan.trusted) == 0
    assert pieces(plan) == [0, 1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]  # not 2: b.bin is missing


def test_nothing_on_disk_and_no_record_means_no_hashing() -> None:
    plan = plan_open(INFO, ROOT, None, states(a=None, b=None, c=None, e=FileState(0, OLD)))
    assert pieces(plan) == [] and plan.changed == ()


def test_the_files_to_sync_are_those_the_hashed_pieces_touch() -> None:
    plan = plan_open(INFO, ROOT, record(EVERYTHING, states()), states(c=FileState(3000, 1)))
    assert plan.files_to_sync(INFO) == [A, B, C]  # piece 2 holds a, b and c; not the padding
    plan = plan_open(INFO, ROOT, None, states())
    assert plan.files_to_sync(INFO) == [A, B, C, E]


def test_a_record_keeps_paths_sizes_and_times() -> None:
    kept = record([3], states(a=None))
    assert kept.save_path == ROOT and kept.have == Bitfield(13, [3])
    assert kept.files[A].size is None and kept.files[A].settled
    assert (kept.files[E].size, kept.files[E].mtime_ns) == (5000, OLD)
    assert kept.files[PAD].padding and kept.files[PAD].size is None
    assert [f.path for f in kept.files] == [entry.path for entry in INFO.files]
