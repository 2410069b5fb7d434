"""One-shot download: seeding ends after ``seed_time`` or at ``seed_ratio``, whichever is first."""

from __future__ import annotations

import pytest

from torviz.services.coordinator.cli.oneshot import DownloadJob


def job(seed_time: float | None, seed_ratio: float | None) -> DownloadJob:
    return DownloadJob(b"", "t", 1000, "/d", seed_time, seed_ratio, stall_timeout=60.0)


@pytest.mark.parametrize(
    ("seed_time", "seed_ratio", "seeded_for", "uploaded", "done"),
    [
        (None, None, 0.0, 0, True),  # no seeding asked: stop at once
        (30.0, None, 29.9, 10**9, False),
        (30.0, None, 30.0, 0, True),
        (None, 1.5, 10**6, 1499, False),
        (None, 1.5, 0.0, 1500, True),
        (30.0, 1.5, 5.0, 1500, True),  # whichever comes first
        (30.0, 1.5, 30.0, 0, True),
        (0.0, None, 0.0, 0, True),
    ],
)
def test_seeding_ends_by_time_or_ratio(
    seed_time: float | None, seed_ratio: float | None, seeded_for: float, uploaded: int, done: bool
) -> None:
    assert job(seed_time, seed_ratio).done_seeding(seeded_for, uploaded) is done
