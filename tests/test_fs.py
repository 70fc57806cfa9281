"""The file layer (`_fs.FileIO`): the methods the read-only tools and the
SQLite backend use beside the durable store's own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from meerkat_actor._fs import FileIO


class _SyncSpy(FileIO):
    """Records the directories it syncs."""

    def __init__(self) -> None:
        self.synced: list[str] = []

    def sync_dir(self, path: str) -> None:
        self.synced.append(path)
        super().sync_dir(path)


def test_create_private_makes_an_empty_0600_file_and_syncs_its_directory(tmp_path: Path):
    io = _SyncSpy()
    target = tmp_path / "store.sqlite3"
    io.create_private(str(target))
    assert target.read_bytes() == b""
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert io.synced == [str(tmp_path)]


def test_create_private_leaves_what_is_there_alone(tmp_path: Path):
    io = _SyncSpy()
    target = tmp_path / "store.sqlite3"
    target.write_bytes(b"keep me")
    target.chmod(0o640)
    io.create_private(str(target))
    assert target.read_bytes() == b"keep me"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert io.synced == []


def test_create_private_creates_a_dangling_symlinks_target(tmp_path: Path):
    (tmp_path / "real").mkdir()
    link = tmp_path / "link.sqlite3"
    link.symlink_to(tmp_path / "real" / "db.sqlite3")
    io = _SyncSpy()
    io.create_private(str(link))
    assert link.is_symlink()
    created = tmp_path / "real" / "db.sqlite3"
    assert created.read_bytes() == b""
    assert stat.S_IMODE(created.stat().st_mode) == 0o600
    assert io.synced == [str(tmp_path / "real")]


def test_create_private_in_a_missing_directory_fails(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        FileIO().create_private(str(tmp_path / "missing" / "db.sqlite3"))
    assert not (tmp_path / "missing").exists()


def test_a_shared_lock_needs_the_file_and_conflicts_only_with_an_exclusive_one(tmp_path: Path):
    io = FileIO()
    path = str(tmp_path / "LOCK")
    with pytest.raises(FileNotFoundError):
        io.lock(path, shared=True)
    assert not os.path.exists(path)  # a shared lock creates nothing
    exclusive = io.lock(path)
    with pytest.raises(BlockingIOError):
        io.lock(path, shared=True)
    io.unlock(exclusive)
    first, second = io.lock(path, shared=True), io.lock(path, shared=True)
    with pytest.raises(BlockingIOError):
        io.lock(path)
    io.unlock(first)
    io.unlock(second)
    io.unlock(io.lock(path))


def test_size_of_a_symlink_itself(tmp_path: Path):
    (tmp_path / "target").write_bytes(b"x" * 100)
    (tmp_path / "link").symlink_to(tmp_path / "target")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    io = FileIO()
    assert io.size(str(tmp_path / "link")) == 100
    assert io.size(str(tmp_path / "link"), follow_symlinks=False) < 100
    assert io.size(str(tmp_path / "dangling"), follow_symlinks=False) > 0
