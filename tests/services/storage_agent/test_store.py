"""The store with real files (and the in-memory store against the same behaviour)."""

from __future__ import annotations

import hashlib
import os
import random
import threading

import pytest

from torviz.services.storage_agent.core.errors import StorageError
from torviz.services.storage_agent.memory import MemoryStorage
from torviz.services.storage_agent.removal import remove_torrent_files
from torviz.services.storage_agent.store import FileStorage
from torviz.shared.bencode import encode
from torviz.shared.metainfo import parse_info_dict

from .conftest import LAYOUTS, NAME, Layout, StoreFactory, multi_file_layout, stored_file

# -- behaviour shared by both stores ------------------------------------------------------------


@pytest.mark.parametrize("layout_name", sorted(LAYOUTS))
def test_pieces_in_random_order_rebuild_every_file(make_store: StoreFactory, layout_name: str):
    layout = LAYOUTS[layout_name]()
    store = make_store(layout.info)
    order = list(range(layout.info.num_pieces))
    random.Random(7).shuffle(order)
    for piece in order:
        store.write_piece(piece, memoryview(layout.piece(piece)))
    store.flush()
    for index, entry in enumerate(layout.info.files):
        if entry.padding:
            assert stored_file(store, index) is None, entry.path
        else:
            assert stored_file(store, index) == layout.file_content(index), entry.path
    for piece in range(layout.info.num_pieces):
        assert store.read_piece(piece) == layout.piece(piece)


def test_blocks_across_file_boundaries(make_store: StoreFactory):
    layout = multi_file_layout()
    store = make_store(layout.info)
    for piece in range(layout.info.num_pieces):
        store.write_piece(piece, layout.piece(piece))
    geometry = layout.info.geometry
    # Piece 2 covers a.bin [2048, 2500), all of sub/deeper/b.bin and c.bin [0, 172).
    assert store.read(2, 400, 500) == layout.content[2048 + 400 : 2048 + 900]
    assert store.read(2, 0, 1024) == layout.content[2048:3072]
    rng = random.Random(3)
    for _ in range(300):
        piece = rng.randrange(geometry.num_pieces)
        size = geometry.piece_size(piece)
        offset = rng.randrange(size)
        length = rng.randint(1, size - offset)
        start = piece * geometry.piece_length + offset
        assert store.read(piece, offset, length) == layout.content[start : start + length]


def test_padding_reads_as_zeros_without_being_written(make_store: StoreFactory):
    layout = multi_file_layout()
    store = make_store(layout.info)
    assert store.read_piece(7) == bytes(1024)  # pieces 6 and 7 lie wholly in the padding file
    assert store.read(6, 100, 200) == bytes(200)
    with pytest.raises(StorageError) as caught:
        store.read_piece(5)  # c.bin then padding: c.bin was never written
    assert caught.value.reason == "file_missing"
    assert "'torrent/c.bin'" in str(caught.value)


@pytest.mark.parametrize(
    ("piece", "offset", "length"),
    [
        (-1, 0, 16),
        (13, 0, 16),  # the torrent has 13 pieces
        (0, -1, 16),
        (0, 0, 0),
        (0, 0, -5),
        (0, 1000, 25),  # one byte past the end of a full piece
        (12, 0, 905),  # the last piece has 904 bytes
        (12, 904, 1),
    ],
)
def test_invalid_read_ranges_are_refused(make_store: StoreFactory, piece, offset, length):
    store = make_store(multi_file_layout().info)
    with pytest.raises(StorageError) as caught:
        store.read(piece, offset, length)
    assert caught.value.reason == "invalid_range"


def test_invalid_writes_are_refused(make_store: StoreFactory):
    layout = multi_file_layout()
    store = make_store(layout.info)
    with pytest.raises(StorageError) as caught:
        store.write_piece(12, layout.piece(0))  # 1024 bytes for a piece of 904
    assert caught.value.reason == "bad_piece_length"
    with pytest.raises(StorageError) as caught:
        store.write_piece(13, layout.piece(0))
    assert caught.value.reason == "invalid_range"


def test_missing_data_is_an_error_never_zeros(make_store: StoreFactory):
    layout = multi_file_layout()
    store = make_store(layout.info)
    store.write_piece(0, layout.piece(0))  # only a.bin [0, 1024)
    assert store.read(0, 0, 1024) == layout.piece(0)
    with pytest.raises(StorageError) as caught:
        store.read(2, 500, 16)  # inside sub/deeper/b.bin, never written
    assert caught.value.reason == "file_missing"
    assert caught.value.path == "torrent/sub/deeper/b.bin"


def test_empty_files_exist_from_the_start(make_store: StoreFactory):
    layout = multi_file_layout()
    store = make_store(layout.info)
    for index, entry in enumerate(layout.info.files):
        expected = b"" if entry.length == 0 else None
        assert stored_file(store, index) == expected, entry.path


def test_delete_files_removes_everything(make_store: StoreFactory):
    layout = multi_file_layout()
    store = make_store(layout.info)
    for piece in range(layout.info.num_pieces):
        store.write_piece(piece, layout.piece(piece))
    store.delete_files()
    for index in range(len(layout.info.files)):
        assert stored_file(store, index) is None
    with pytest.raises(StorageError) as caught:
        store.read_piece(0)
    assert caught.value.reason == "file_missing"
    if isinstance(store, FileStorage):
        assert os.listdir(store.download_dir) == []


def test_file_states_follow_what_was_written(make_store: StoreFactory):
    layout = multi_file_layout()
    store = make_store(layout.info)
    before = store.file_states()
    assert [state is not None for state in before] == [
        entry.length == 0 and not entry.padding for entry in layout.info.files
    ]  # only the empty files exist; the padding file never does
    store.write_piece(9, layout.piece(9))  # e.bin
    after = store.file_states()
    assert after[6] is not None and after[6].size == 5000
    assert after[:6] == before[:6]
    store.sync_files(range(len(layout.info.files)))  # missing files are skipped


# -- files on disk ------------------------------------------------------------------------------


def test_deleting_leaves_everything_that_is_not_the_torrents_alone(tmp_path):
    layout = multi_file_layout()
    store = file_store(tmp_path, layout)
    for piece in range(layout.info.num_pieces):
        store.write_piece(piece, layout.piece(piece))
    root = tmp_path / "downloads"
    (root / NAME / "sub" / "mine.txt").write_text("the user's")  # keeps sub/ (not sub/deeper/)
    (root / "other.txt").write_text("another download")
    (root / NAME / ".pad").mkdir()
    (root / NAME / ".pad" / "2292").write_text("not a padding file torviz wrote")
    os.symlink(root / "other.txt", root / NAME / "z" / "link")  # keeps z/
    store.delete_files()
    assert on_disk(tmp_path) == {
        f"{NAME}/sub/mine.txt",
        "other.txt",
        f"{NAME}/.pad/2292",
        f"{NAME}/z/link",
    }
    assert not (root / NAME / "sub" / "deeper").exists()
    assert not (root / NAME / "d").exists()
    assert (root / NAME / "z" / "link").is_symlink()


def deep_layout(depth: int) -> Layout:
    """One file of 3,000 bytes ``depth`` folders down. Deeper than the parser allows by default:
    the store must stay linear whatever limit the parser was given."""
    content = random.Random(5).randbytes(3000)
    hashes = b"".join(hashlib.sha1(content[i : i + 1024]).digest() for i in range(0, 3000, 1024))
    info = {
        b"files": [{b"length": 3000, b"path": [b"d"] * depth + [b"f.bin"]}],
        b"name": NAME.encode(),
        b"piece length": 1024,
        b"pieces": hashes,
    }
    return Layout(parse_info_dict(encode(info), max_path_depth=depth + 1), content)


@pytest.fixture
def lstat_calls(monkeypatch):
    """Every ``os.lstat`` made while the test runs (``os.path.realpath`` makes one per folder
    of the path it resolves, which is how a walk that re-resolves every step shows)."""
    calls: list[object] = []
    real_lstat = os.lstat

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real_lstat(path, *args, **kwargs)

    monkeypatch.setattr(os, "lstat", counting)
    return calls


@pytest.fixture
def deep_cleanup(tmp_path):
    """Removes deep trees the test made: pytest's own recursive clean-up would overflow."""
    layouts: list[Layout] = []
    yield layouts
    for layout in layouts:
        files = [(entry.path, entry.padding) for entry in layout.info.files]
        remove_torrent_files(str(tmp_path / "downloads"), files)


def test_a_deep_folder_is_walked_once_per_folder(tmp_path, lstat_calls, deep_cleanup):
    depth = 1000
    layout = deep_layout(depth)
    deep_cleanup.append(layout)
    store = file_store(tmp_path, layout)
    try:
        before = len(lstat_calls)
        for piece in range(layout.info.num_pieces):
            store.write_piece(piece, layout.piece(piece))
        writing = len(lstat_calls) - before
    finally:
        store.close()
    again = file_store(tmp_path, layout)
    try:
        before = len(lstat_calls)
        assert again.read_piece(2) == layout.piece(2)
        reading = len(lstat_calls) - before
    finally:
        again.close()
    assert (tmp_path / "downloads" / NAME / ("d/" * depth + "f.bin")).read_bytes() == layout.content
    # One lstat per folder (and a few for the download directory); re-resolving the whole path
    # at every step made this about depth * depth / 2 = 500,000.
    assert writing <= depth + 20
    assert reading <= depth + 20


def test_deleting_a_deep_torrent_walks_each_folder_once(tmp_path, lstat_calls, deep_cleanup):
    depth = 150
    layout = deep_layout(depth)
    deep_cleanup.append(layout)
    store = file_store(tmp_path, layout)
    for piece in range(layout.info.num_pieces):
        store.write_piece(piece, layout.piece(piece))
    before = len(lstat_calls)
    store.delete_files()
    deleting = len(lstat_calls) - before
    assert not (tmp_path / "downloads" / NAME).exists()
    assert (tmp_path / "downloads").is_dir()
    assert deleting <= depth + 20  # was cubic: every folder's parent walked from the top


def test_a_link_deep_down_leading_outside_is_still_refused(tmp_path):
    depth = 100
    layout = deep_layout(depth)
    outside = tmp_path / "outside"
    outside.mkdir()
    parent = tmp_path / "downloads" / NAME / ("d/" * 60)
    parent.mkdir(parents=True)
    (parent / "d").symlink_to(outside, target_is_directory=True)
    store = file_store(tmp_path, layout)
    try:
        with pytest.raises(StorageError) as caught:
            store.write_piece(0, layout.piece(0))
        assert caught.value.reason == "path_escapes_download_dir"
        assert list(outside.iterdir()) == []
        store.delete_files()  # leaves the link and what it leads to alone
        assert (parent / "d").is_symlink()
    finally:
        store.close()


def test_removing_by_paths_refuses_a_tampered_path(tmp_path):
    (tmp_path / "victim").write_text("keep")
    with pytest.raises(StorageError) as caught:
        remove_torrent_files(str(tmp_path / "downloads"), [(("..", "victim"), False)])
    assert caught.value.reason == "bad_path"
    assert (tmp_path / "victim").read_text() == "keep"
    assert remove_torrent_files(str(tmp_path), [(("absent", "file"), False)]) == 0


def file_store(tmp_path, layout: Layout, **options) -> FileStorage:
    return FileStorage(layout.info, str(tmp_path / "downloads"), **options)


def on_disk(tmp_path) -> set[str]:
    root = tmp_path / "downloads"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_files_are_created_lazily(tmp_path):
    layout = multi_file_layout()
    store = file_store(tmp_path, layout)
    try:
        empty = {"torrent/empty_start", "torrent/sub/empty_middle", "torrent/z/empty_end"}
        assert on_disk(tmp_path) == empty
        store.write_piece(0, layout.piece(0))
        assert on_disk(tmp_path) == empty | {"torrent/a.bin"}
        store.write_piece(2, layout.piece(2))
        assert on_disk(tmp_path) == empty | {
            "torrent/a.bin",
            "torrent/sub/deeper/b.bin",
            "torrent/c.bin",
        }
        # Created at full length straight away; a padding file never appears.
        assert os.path.getsize(store.file_path(4)) == 3000
        store.write_piece(7, layout.piece(7))
        assert not (tmp_path / "downloads" / NAME / ".pad").exists()
    finally:
        store.close()


def test_files_are_sparse_unless_preallocated(tmp_path):
    length = 64 * 1024 * 1024
    layout = Layout(_info_without_content(length, 1024 * 1024), b"")
    store = file_store(tmp_path, layout)
    try:
        store.write_piece(5, bytes(range(256)) * 4096)
        stat = os.stat(store.file_path(0))
        assert stat.st_size == length
        assert stat.st_blocks * 512 <= 4 * 1024 * 1024
    finally:
        store.close()
    preallocated = FileStorage(layout.info, str(tmp_path / "other"), preallocate=True)
    try:
        preallocated.write_piece(5, bytes(1024 * 1024))
        assert os.stat(preallocated.file_path(0)).st_blocks * 512 >= length
    finally:
        preallocated.close()


def _info_without_content(length: int, piece_length: int):
    """A single-file torrent whose hashes are all zero: enough for tests that never verify."""
    from torviz.shared.bencode import encode
    from torviz.shared.metainfo import parse_info_dict

    pieces = -(-length // piece_length)
    raw = {b"name": NAME, b"piece length": piece_length, b"pieces": bytes(20 * pieces)}
    raw[b"length"] = length
    return parse_info_dict(encode(raw))


def test_existing_files_are_kept_extended_but_never_shrunk(tmp_path):
    layout = multi_file_layout()
    folder = tmp_path / "downloads" / NAME
    (folder / "d").mkdir(parents=True)
    right = layout.file_content(1)  # a.bin, already complete
    (folder / "a.bin").write_bytes(right)
    (folder / "c.bin").write_bytes(b"x" * 100)  # too short: extended, prefix kept
    (folder / "d" / "e.bin").write_bytes(b"y" * 6000)  # too long: tail kept
    store = file_store(tmp_path, layout)
    try:
        assert store.read(1, 0, 1024) == layout.piece(1)  # reused as it is
        store.write_piece(5, layout.piece(5))  # the tail of c.bin [2220, 3000)
        store.write_piece(8, layout.piece(8))  # the start of e.bin
        store.flush()
    finally:
        store.close()
    c_bin = (folder / "c.bin").read_bytes()
    assert len(c_bin) == 3000
    assert c_bin[:100] == b"x" * 100
    assert c_bin[100:2220] == bytes(2120)  # extended sparse, never written
    assert c_bin[2220:] == layout.file_content(4)[2220:]
    e_bin = (folder / "d" / "e.bin").read_bytes()
    assert len(e_bin) == 6000
    assert e_bin[:1024] == layout.file_content(6)[:1024]
    assert e_bin[5000:] == b"y" * 1000
    assert (folder / "a.bin").read_bytes() == right


def test_a_symlinked_folder_leading_outside_is_refused(tmp_path):
    layout = multi_file_layout()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "downloads" / NAME).mkdir(parents=True)
    (tmp_path / "downloads" / NAME / "d").symlink_to(outside, target_is_directory=True)
    store = file_store(tmp_path, layout)
    try:
        store.write_piece(0, layout.piece(0))  # a.bin, not behind the link: allowed
        for action in (lambda: store.write_piece(8, layout.piece(8)), lambda: store.read(8, 0, 1)):
            with pytest.raises(StorageError) as caught:
                action()
            assert caught.value.reason == "path_escapes_download_dir"
            assert "'torrent/d'" in str(caught.value)
        assert list(outside.iterdir()) == []  # nothing was created through the link
    finally:
        store.close()


def test_empty_file_behind_an_escaping_link_is_refused_at_open(tmp_path):
    layout = multi_file_layout()
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / NAME).symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError) as caught:
        file_store(tmp_path, layout)
    assert caught.value.reason == "path_escapes_download_dir"
    assert list(outside.iterdir()) == []


def test_a_symlinked_folder_inside_the_download_dir_is_followed(tmp_path):
    layout = multi_file_layout()
    real = tmp_path / "downloads" / "elsewhere"
    real.mkdir(parents=True)
    (tmp_path / "downloads" / NAME).mkdir()
    (tmp_path / "downloads" / NAME / "sub").symlink_to(real, target_is_directory=True)
    store = file_store(tmp_path, layout)
    try:
        store.write_piece(2, layout.piece(2))
        assert (real / "deeper" / "b.bin").read_bytes() == layout.file_content(2)
    finally:
        store.close()


def test_a_symlinked_file_is_never_followed(tmp_path):
    layout = multi_file_layout()
    target = tmp_path / "precious"
    target.write_bytes(b"keep me")
    (tmp_path / "downloads" / NAME).mkdir(parents=True)
    (tmp_path / "downloads" / NAME / "a.bin").symlink_to(target)
    store = file_store(tmp_path, layout)
    try:
        with pytest.raises(StorageError) as caught:
            store.write_piece(0, layout.piece(0))
        assert caught.value.reason == "symlink_refused"
        assert "'torrent/a.bin'" in str(caught.value)
        assert target.read_bytes() == b"keep me"
    finally:
        store.close()


def test_a_fifo_in_place_of_a_file_is_refused_without_hanging(tmp_path):
    layout = multi_file_layout()
    (tmp_path / "downloads" / NAME).mkdir(parents=True)
    os.mkfifo(tmp_path / "downloads" / NAME / "a.bin")
    store = file_store(tmp_path, layout)
    try:
        for action in (lambda: store.read(0, 0, 16), lambda: store.write_piece(0, layout.piece(0))):
            with pytest.raises(StorageError) as caught:
                action()
            assert caught.value.reason == "not_a_regular_file"
    finally:
        store.close()


def test_wrong_kinds_of_entries_name_the_cause(tmp_path):
    layout = multi_file_layout()
    folder = tmp_path / "downloads" / NAME
    (folder / "a.bin").mkdir(parents=True)  # a folder where a file belongs
    (folder / "d").write_bytes(b"")  # a file where a folder belongs
    store = file_store(tmp_path, layout)
    try:
        with pytest.raises(StorageError) as caught:
            store.write_piece(0, layout.piece(0))
        assert caught.value.reason == "is_a_directory"
        with pytest.raises(StorageError) as caught:
            store.write_piece(9, layout.piece(9))
        assert caught.value.reason == "not_a_directory"
    finally:
        store.close()


def test_a_truncated_file_reads_as_short(tmp_path):
    layout = multi_file_layout()
    store = file_store(tmp_path, layout)
    try:
        store.write_piece(0, layout.piece(0))
        store.write_piece(1, layout.piece(1))
        store.close()
        os.truncate(store.file_path(1), 1500)
        assert store.read(1, 0, 476) == layout.piece(1)[:476]
        with pytest.raises(StorageError) as caught:
            store.read(1, 400, 100)
        assert caught.value.reason == "file_short"
        assert "torrent/a.bin" in str(caught.value)
    finally:
        store.close()


def test_open_descriptors_stay_within_the_bound(tmp_path):
    layout = build_many_files()
    before = len(os.listdir("/proc/self/fd"))
    store = file_store(tmp_path, layout, max_open_files=3)
    try:
        for piece in range(layout.info.num_pieces):
            store.write_piece(piece, layout.piece(piece))
            assert len(os.listdir("/proc/self/fd")) <= before + 3
        for piece in range(layout.info.num_pieces):
            assert store.read_piece(piece) == layout.piece(piece)
    finally:
        store.close()
    assert len(os.listdir("/proc/self/fd")) == before


def build_many_files() -> Layout:
    from .conftest import build

    return build([(f"f{i:02}", 300 + 37 * i) for i in range(40)], 1024)


def test_threads_share_a_store_while_descriptors_are_evicted(tmp_path):
    layout = build_many_files()
    store = file_store(tmp_path, layout, max_open_files=1)
    pieces = list(range(layout.info.num_pieces))
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            order = pieces[:]
            random.Random(seed).shuffle(order)
            for piece in order:
                store.write_piece(piece, layout.piece(piece))
            for piece in order:
                assert store.read_piece(piece) == layout.piece(piece)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            thread.join(timeout=30)
        store.close()
    assert not errors
    assert not any(thread.is_alive() for thread in threads)


def test_data_survives_close_and_reopen(tmp_path):
    layout = single_layout = LAYOUTS["single"]()
    store = file_store(tmp_path, single_layout)
    for piece in range(layout.info.num_pieces):
        store.write_piece(piece, layout.piece(piece))
    store.close()
    again = file_store(tmp_path, layout)
    try:
        assert (tmp_path / "downloads" / NAME).read_bytes() == layout.content
        assert again.read_piece(6) == layout.piece(6)
    finally:
        again.close()


def test_memory_store_starts_empty():
    layout = multi_file_layout()
    store = MemoryStorage(layout.info)
    assert store.file_data(1) is None
    store.write_piece(0, layout.piece(0))
    assert store.file_data(1) == layout.piece(0) + bytes(2500 - 1024)
