"""The data a benchmark downloads, and keeping runs comparable between downloads.

Strategy: content is deterministic random bytes (`testing.content.make_content`, one fixed
seed), written once under a cache directory and reused while its manifest (layout and seed)
matches, so reruns skip generating a gigabyte. Layouts: one file, twenty files whose boundaries
never meet a piece boundary, or one 16 KiB piece (to time start-up and shutdown alone).

Rules:
- Content is only ever read from the cache; downloads go elsewhere and are deleted with `clear`.
- Progress is observed from outside (`bytes_on_disk`: allocated blocks of the output), never
  by asking the client under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from testing.content import (
    ContentSpec,
    FileSpec,
    Layout,
    make_content,
    single_file_layout,
)

__all__ = [
    "KIB",
    "MIB",
    "SEED",
    "STARTUP_SIZE",
    "bytes_on_disk",
    "cached_content",
    "clear",
    "layout_for",
    "read_through",
    "twenty_file_layout",
]

MIB = 1 << 20
KIB = 1 << 10
SEED = 20_240_601  # content seed: the same bytes (and info hashes) on every machine
STARTUP_SIZE = 16 * KIB


def twenty_file_layout(total: int, name: str = "multi20") -> Layout:
    """20 files in three directories whose inner boundaries all lie at odd byte offsets.

    The first file has an odd size and the next 18 even ones (slightly different from each
    other), so no boundary falls on a piece boundary; the last takes the rest.
    """
    if total < 20 * MIB:
        raise ValueError("the 20-file layout needs at least 20 MiB")
    base = total // 20
    sizes = [base | 1] + [(base + (k - 10) * 2 * 4099) & ~1 for k in range(1, 19)]
    sizes.append(total - sum(sizes))
    files = tuple(
        FileSpec(PurePosixPath(f"dir{k % 3}/part-{k:02d}.bin"), size)
        for k, size in enumerate(sizes)
    )
    return Layout(name=name, files=files)


def layout_for(kind: str, size: int) -> Layout:
    """The layout of a variant: ``single`` or ``files20`` of `size` bytes, else one piece."""
    if kind == "single":
        return single_file_layout(size, "single.bin")
    if kind == "files20":
        return twenty_file_layout(size)
    return single_file_layout(STARTUP_SIZE, "tiny.bin")


def cached_content(cache: Path, kind: str, size: int) -> ContentSpec:
    """The content of one layout, made once and reused while its manifest matches."""
    layout = layout_for(kind, size)
    root = cache / "content" / f"{kind}-{layout.total_size}"
    manifest = root / "manifest.json"
    expected = {"seed": SEED, "files": [[str(f.path), f.size] for f in layout.files]}
    if manifest.exists():
        saved = json.loads(manifest.read_text())
        spec = ContentSpec(root, layout, SEED, tuple(saved.get("sha1", ())))
        sizes_ok = all(
            p.is_file() and p.stat().st_size == f.size
            for p, f in zip(spec.file_paths(), layout.files, strict=True)
        )
        if saved.get("layout") == expected and sizes_ok:
            return spec
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"making {layout.total_size / MIB:.0f} MiB of content in {root} ...", flush=True)
    spec = make_content(root, layout, SEED)
    manifest.write_text(json.dumps({"layout": expected, "sha1": list(spec.sha1)}))
    return spec


def read_through(spec: ContentSpec) -> None:
    """Read every file once, so the seeders serve from the page cache."""
    for path in spec.file_paths():
        with path.open("rb") as stream:
            while stream.read(8 * MIB):
                pass


def bytes_on_disk(out: Path) -> Callable[[], int]:
    """A progress probe: bytes allocated under `out` (files are sparse until written)."""

    def probe() -> int:
        total = 0
        for base, _, names in os.walk(out):
            for name in names:
                with contextlib.suppress(OSError):
                    total += os.stat(os.path.join(base, name)).st_blocks * 512
        return total

    return probe


def clear(out: Path, settle: float) -> None:
    """Delete a download, write back whatever is dirty, then wait `settle` seconds.

    Why wait: on the virtual machines this was written on, memory left free for about a second
    goes back to the hypervisor, and filling 1 GiB of page cache from such memory costs ~2 s of
    system CPU instead of ~0.2 s for memory freed a moment before. A client that starts writing
    at once reuses the warm pages the previous run's output just released; one that starts later
    does not. Settling first gives every run the same, cold, start.
    """
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    time.sleep(settle)
