"""Disk errors become one StorageError naming the file, the cause and what to do.

Each path is provoked for real where an unprivileged process on CI can do it: ENOSPC from
/dev/full, EFBIG from RLIMIT_FSIZE in a child process, EACCES from a read-only folder (skipped
for root, which bypasses permissions), ELOOP from a planted symlink. Causes that need a broken
disk or a special mount (EIO, EROFS, EDQUOT) are checked through the mapping table.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap

import pytest

from torviz.services.storage_agent.core.errors import StorageError, storage_error_from_os
from torviz.services.storage_agent.store import FileStorage

from .conftest import NAME, build, multi_file_layout


class DevFullStorage(FileStorage):
    """Writes of one file go to /dev/full, which fails every write with ENOSPC."""

    def _open_fd(self, index: int, writable: bool) -> int:
        if self.info.files[index].path[-1] == "c.bin":
            return os.open("/dev/full", os.O_WRONLY | os.O_CLOEXEC)
        return super()._open_fd(index, writable)


def test_disk_full_names_the_file_and_what_to_do(tmp_path):
    layout = multi_file_layout()
    store = DevFullStorage(layout.info, str(tmp_path / "downloads"))
    try:
        store.write_piece(0, layout.piece(0))  # a.bin: a real file, fine
        with pytest.raises(StorageError) as caught:
            store.write_piece(3, layout.piece(3))  # c.bin
    finally:
        store._release_all()  # /dev/full cannot be fsynced: skip the flush of close()
    error = caught.value
    assert error.reason == "disk_full"
    assert error.errno_name == "ENOSPC"
    assert error.path == "torrent/c.bin"
    assert str(error) == (
        "disk full writing 'torrent/c.bin' (ENOSPC): free some space, then resume the torrent"
    )
    assert isinstance(error.__cause__, OSError)


_EFBIG_CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    from torviz.services.storage_agent.core.errors import StorageError
    from torviz.services.storage_agent.store import FileStorage
    from torviz.shared.metainfo import parse_info_dict

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
    info = parse_info_dict(open(sys.argv[1], "rb").read())
    store = FileStorage(info, sys.argv[2])
    try:
        store.write_piece(0, bytes(info.piece_length))
    except StorageError as exc:
        print(json.dumps([exc.reason, exc.errno_name, str(exc)]))
    else:
        print(json.dumps(None))
    """
)


def test_file_too_large_for_the_process_limit(tmp_path):
    from torviz.shared.bencode import encode

    raw = {b"name": NAME, b"piece length": 65536, b"pieces": bytes(20 * 16), b"length": 1 << 20}
    (tmp_path / "info").write_bytes(encode(raw))
    child = subprocess.run(
        [sys.executable, "-c", _EFBIG_CHILD, str(tmp_path / "info"), str(tmp_path / "dl")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    reason, errno_name, message = json.loads(child.stdout)
    assert (reason, errno_name) == ("file_too_large", "EFBIG")
    assert message.startswith("file too large creating 'torrent' (EFBIG): ")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions: no EACCES as root")
def test_permission_denied(tmp_path):
    layout = multi_file_layout()
    store = FileStorage(layout.info, str(tmp_path / "downloads"))
    folder = tmp_path / "downloads" / NAME
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(StorageError) as caught:
            store.write_piece(0, layout.piece(0))
    finally:
        folder.chmod(stat.S_IRWXU)
        store.close()
    assert caught.value.reason == "permission_denied"
    assert str(caught.value).startswith("permission denied creating 'torrent/a.bin' (EACCES): ")


def test_missing_file_on_read(tmp_path):
    layout = build([("x.bin", 3000)], 1024)
    store = FileStorage(layout.info, str(tmp_path / "downloads"))
    try:
        with pytest.raises(StorageError) as caught:
            store.read(1, 0, 10)
    finally:
        store.close()
    assert caught.value.reason == "file_missing"
    assert str(caught.value) == (
        "file missing opening 'torrent/x.bin' (ENOENT): "
        "the file was moved or deleted: put it back or recheck the torrent"
    )


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "disk_full"),
        (errno.EDQUOT, "quota_exceeded"),
        (errno.EACCES, "permission_denied"),
        (errno.EPERM, "permission_denied"),
        (errno.EROFS, "read_only_filesystem"),
        (errno.EIO, "io_error"),
        (errno.EFBIG, "file_too_large"),
        (errno.ENOENT, "file_missing"),
        (errno.ELOOP, "symlink_refused"),
        (errno.EMFILE, "too_many_open_files"),
        (errno.EXDEV, "os_error"),  # not in the table: generic, errno name kept
    ],
)
def test_mapping_table(code, reason):
    error = storage_error_from_os(OSError(code, os.strerror(code)), "writing", "t/f.bin")
    name = errno.errorcode[code]
    assert (error.reason, error.errno_name, error.path) == (reason, name, "t/f.bin")
    text = str(error)
    assert "\n" not in text
    assert f" writing 't/f.bin' ({name}): " in text
    assert len(text.split(": ", 1)[1]) > 10  # says what to do


def test_read_only_filesystem_message():
    error = storage_error_from_os(OSError(errno.EROFS, "x"), "writing", "t/f.bin")
    assert str(error) == (
        "read-only file system writing 't/f.bin' (EROFS): choose a writable download directory "
        "or remount it read-write, then resume the torrent"
    )
