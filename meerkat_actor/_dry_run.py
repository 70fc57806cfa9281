"""Read-only recovery of a store no process has open: what `open_store` would
recover and repair, found without changing a byte. `inspect`, `dump`,
`export-sqlite` and `verify` (`_verifier.py`) build on it.

Rule 1: it changes nothing. It runs the very recovery `open_store` runs
(`DurableLog.open`), against `_DryRunIO`, a file layer that reads for real
and records, instead of doing, every change recovery would make (truncating
a torn tail, removing a temp file); those become notes. No file is created,
not even LOCK.

Rule 2: a consistent view needs the lock, or proof that nothing changed
under the read. A closed store is read holding a shared `flock` on DIR/LOCK
(`open_store` fails while it runs). A store open in a process (which holds
the exclusive lock) is read live, taking no lock (`read_live`): the read is
repeated until one attempt is proven exact (below), or `StoreLocked` is
raised when the holder leaves no note to prove it with.

Rule 4: a live view is exact. It holds every write acknowledged before the
read began, and only whole records: it is the state after some LSN of the
log, no earlier than the last acknowledged write, the state a crash at that
moment would recover. An attempt counts only if, read before and after it:
the LOCK file's note (`_holder`) is the same, names a running process, and
its marks say no checkpoint was removing files (so no file the attempt read
or relied on went away); the FORMAT file is the same; and every listing of
the directory the attempt made equals the one made after it (so each was
the directory as it was at one instant: with nothing removed, a listing
misses only files created while it ran, and the later one would show them).
The end of the log is read as recovery reads it: a partial record there is
a write in flight, which is after every acknowledged one. `CorruptStore`
counts only when two such attempts in a row meet it at the same place: an
attempt that read the tail while a write completed can see damage that is
not there, but never twice at one offset, since the write is whole by then.

Rule 3: every function here blocks on the disk, and every file access goes
through `_fs.FileIO`; the command line calls them from plain synchronous code
(no trio run is active), and an async caller must use
`trio.to_thread.run_sync`.

Theory of operation. `read_store` checks that the directory is a store
(`check_store_directory`), takes the shared lock (`locked`), runs
`DurableLog.open` over a `_DryRunIO` with recovery's log warnings silenced,
and turns what the layer recorded into `Problem` notes beside the recovered
state, the LSNs and the directory's files.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final, Literal

from . import _format as fmt
from . import _holder
from ._core import StoreState
from ._durable import (
    DEFAULT_MAX_RECORD,
    DurableLog,
    _check_format_file,
    check_can_be_directory,
    check_entries,
)
from ._errors import CorruptStore, NotAStore, ReadFailed, StoreLocked
from ._fs import FileIO, Handle, LockHandle

__all__ = [
    "FileEntry",
    "Problem",
    "StoreView",
    "check_store_directory",
    "list_files",
    "locked",
    "read_store",
    "recover",
    "store_format_version",
]

_logger: Final = logging.getLogger("meerkat_actor")

Severity = Literal["note", "damage", "corrupt"]


@dataclass(frozen=True)
class FileEntry:
    """A file of a store directory."""

    name: str
    kind: Literal["format", "lock", "snapshot", "segment", "temp", "other"]
    bytes: int


@dataclass(frozen=True)
class Problem:
    """Something a read-only tool found: `offset` is a byte offset in `file`, or None."""

    severity: Severity
    file: str
    offset: int | None
    message: str


@dataclass(frozen=True)
class StoreView:
    """What opening the store would recover, and what it would change."""

    directory: str
    format_version: int
    state: StoreState
    last_lsn: int
    snapshot_lsn: int
    log_first_lsn: int | None
    files: list[FileEntry]
    notes: list[Problem]


class _DryRunIO(FileIO):
    """Reads for real; records changes instead of making them (Rule 1).

    Handles it hands out are fake (fd -1): recovery "opens" the last segment
    for appending, or "creates" one, and closes it again, without a write.
    Its lock is shared, and is no lock at all (fd -1) where there is no LOCK
    file: then no store holds the directory.
    """

    def __init__(self) -> None:
        self.truncated: list[tuple[str, int]] = []
        self.removed: list[str] = []

    def make_dir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)

    def make_new_dir(self, path: str) -> None:
        pass

    def make_private(self, path: str) -> None:
        pass

    def sync_dir(self, path: str) -> None:
        pass

    def lock(self, path: str, *, shared: bool = True) -> LockHandle:
        try:
            return super().lock(path, shared=True)
        except FileNotFoundError:
            return LockHandle(-1, path)

    def unlock(self, lock: LockHandle) -> None:
        if lock.fd >= 0:
            super().unlock(lock)

    def write_lock_note(self, lock: LockHandle, data: bytes) -> None:
        pass  # the note names a store's holder; a reader is none

    def extend_lock_note(self, lock: LockHandle, offset: int, data: bytes) -> None:
        pass

    def create(self, path: str) -> Handle:
        return Handle(-1, path)

    def create_private(self, path: str) -> None:
        pass

    def open_write(self, path: str) -> Handle:
        return Handle(-1, path)

    def write(self, handle: Handle, data: bytes) -> None:
        pass

    def write_at(self, handle: Handle, offset: int, data: bytes) -> None:
        pass

    def sync(self, handle: Handle) -> None:
        pass

    def close(self, handle: Handle) -> None:
        # Handles of files opened for writing are pretend (fd -1); files
        # opened for reading (`open_read`) are real and are closed.
        if handle.fd >= 0:
            super().close(handle)

    def truncate(self, path: str, size: int) -> None:
        self.truncated.append((path, size))

    def rename(self, source: str, target: str) -> None:
        pass

    def remove(self, path: str) -> None:
        self.removed.append(path)


@contextmanager
def locked(io: FileIO, directory: str) -> Iterator[None]:
    """Hold the store's shared lock (Rule 2) while the block runs.

    Args:
        io: the file layer (a `_DryRunIO`: its lock is shared).
        directory: the store directory.

    Raises:
        StoreLocked: an open store holds the directory.
        ReadFailed: the lock file cannot be opened.
    """
    try:
        lock = io.lock(os.path.join(directory, fmt.LOCK_FILE))
    except BlockingIOError as exc:
        raise _holder.locked_error(io, directory, reading=True) from exc
    except OSError as exc:
        raise ReadFailed(f"cannot lock {directory}: {exc}") from exc
    try:
        yield
    finally:
        io.unlock(lock)


def check_store_directory(path: str, io: FileIO | None = None) -> str:
    """The resolved directory `path` names, if it is a store.

    Args:
        path: the directory.
        io: the file layer (default: the real one).

    Returns:
        The resolved path.

    Raises:
        NotAStore: no such directory, or it holds no FORMAT file.
        UnsupportedFormat: a newer format version wrote it.
        CorruptStore: the FORMAT file is damaged, or an entry named like a
            store file is not a regular file (`_durable.check_entries`).
        ReadFailed: the directory cannot be read.
    """
    io = FileIO() if io is None else io
    directory = os.path.realpath(path)
    try:
        names = io.list_dir(directory)
    except FileNotFoundError as exc:
        raise NotAStore(f"{directory} does not exist") from exc
    except NotADirectoryError as exc:
        check_can_be_directory(directory)  # says what is there instead
        raise NotAStore(f"{directory} is not a directory") from exc
    except OSError as exc:
        raise ReadFailed(f"cannot read {directory}: {exc}") from exc
    if fmt.FORMAT_FILE not in names:
        raise NotAStore(
            f"{directory} is not a meerkat_actor store (it has no {fmt.FORMAT_FILE} file)"
        )
    try:
        check_entries(io, directory, names)
    except OSError as exc:
        raise ReadFailed(f"cannot read {directory}: {exc}") from exc
    store_format_version(io, directory)
    return directory


def store_format_version(io: FileIO, directory: str) -> int:
    """The format version the store's FORMAT file names (1 or 2: a version 1
    store is read as it is; nothing here converts it).

    Raises:
        UnsupportedFormat: a newer version.
        CorruptStore: the FORMAT file is damaged.
        ReadFailed: it cannot be read.
    """
    try:
        return _check_format_file(io, directory)
    except OSError as exc:
        raise ReadFailed(f"cannot read {directory}/{fmt.FORMAT_FILE}: {exc}") from exc


def list_files(directory: str, io: FileIO | None = None) -> list[FileEntry]:
    """The store directory's files, sorted by name, with their sizes.

    Args:
        directory: the store directory.
        io: the file layer (default: the real one).

    Returns:
        One entry per name (a symlink's own size, not its target's).

    Raises:
        ReadFailed: the directory cannot be listed.
    """
    io = FileIO() if io is None else io
    entries = []
    try:
        for name in sorted(io.list_dir(directory)):
            size = io.size(os.path.join(directory, name), follow_symlinks=False)
            entries.append(FileEntry(name, _kind(name), size))
    except OSError as exc:
        raise ReadFailed(f"cannot list {directory}: {exc}") from exc
    return entries


def _kind(name: str) -> Literal["format", "lock", "snapshot", "segment", "temp", "other"]:
    if name == fmt.FORMAT_FILE:
        return "format"
    if name == fmt.LOCK_FILE:
        return "lock"
    if fmt.parse_name(name, *fmt.SNAPSHOT_NAME) is not None:
        return "snapshot"
    if fmt.parse_name(name, *fmt.SEGMENT_NAME) is not None:
        return "segment"
    if name.endswith(".tmp"):
        return "temp"
    return "other"


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence recovery's warnings ("truncated a torn write ..."): a dry run
    did not do what they say; its notes say what opening would do."""
    was = _logger.disabled
    _logger.disabled = True
    try:
        yield
    finally:
        _logger.disabled = was


def recover(io: _DryRunIO, directory: str, max_record: int) -> StoreView:
    """Run `open_store`'s recovery without changing anything (Rule 1); the
    caller holds the lock. `io.truncated` and `io.removed` keep what opening
    would repair.

    Args:
        io: a fresh dry-run layer.
        directory: the store directory (checked by `check_store_directory`).
        max_record: the store's `max_record_bytes`.

    Returns:
        What opening would recover, with one note per repair.

    Raises:
        CorruptStore, ReadFailed: as `open_store`.
    """
    with _quiet():
        log, recovered = DurableLog.open(io, directory, max_record)
    log.close()
    files = list_files(directory, io)
    segments = fmt.numbered((f.name for f in files), fmt.SEGMENT_NAME)
    oldest = segments[0][0] if segments else None
    notes = [
        Problem(
            "note",
            path,
            size,
            "a torn write at the end of the log (never acknowledged): opening the store"
            " cuts the file here",
        )
        for path, size in io.truncated
    ]
    notes += [
        Problem(
            "note",
            path,
            None,
            "left by an interrupted checkpoint or segment creation: opening the store removes it",
        )
        for path in io.removed
    ]
    return StoreView(
        directory=directory,
        format_version=store_format_version(io, directory),
        state=recovered.state,
        last_lsn=recovered.last_lsn,
        snapshot_lsn=recovered.snapshot_lsn,
        log_first_lsn=oldest if oldest is not None and oldest <= recovered.last_lsn else None,
        files=files,
        notes=notes,
    )


def read_store(path: str, max_record: int = DEFAULT_MAX_RECORD, *, live: bool = True) -> StoreView:
    """What `open_store(path)` would recover, read without changing anything;
    of a store open in a process, the live view (`read_live`).

    Args:
        path: the store directory.
        max_record: the store's `max_record_bytes`.
        live: read a store that is open elsewhere live; False: raise
            `StoreLocked` instead.

    Returns:
        The recovered state, LSNs, files and notes.

    Raises:
        NotAStore: `path` is not a store directory.
        StoreLocked: a store is open on it, and (`live`) its holder leaves
            no note to read it live with (an older meerkat_actor, or a
            process whose liveness cannot be checked from here).
        UnsupportedFormat, CorruptStore, ReadFailed: as `open_store`.
    """
    io = _DryRunIO()
    directory = check_store_directory(path, io)
    try:
        with locked(io, directory):
            return recover(io, directory, max_record)
    except StoreLocked:
        if not live:
            raise
    return read_live(directory, max_record)


# --- the live view (Rule 4) ------------------------------------------------------------------

#: How long `read_live` tries before it gives up on a store that changes
#: under every attempt (each checkpoint or new segment costs one attempt).
LIVE_TIMEOUT: Final = 10.0
#: How long it waits for a note that names a running process (a store opening
#: right now writes it at once) before it reports the store locked.
_NOTE_WAIT: Final = 1.0


class _LiveIO(_DryRunIO):
    """A dry run beside a live writer: takes no lock at all, and keeps the
    store files each listing of the directory saw (Rule 4)."""

    def __init__(self, directory: str) -> None:
        super().__init__()
        self.directory = directory
        self.listings: list[frozenset[str]] = []

    def lock(self, path: str, *, shared: bool = True) -> LockHandle:
        return LockHandle(-1, path)

    def list_dir(self, path: str) -> list[str]:
        names = super().list_dir(path)
        if os.path.realpath(path) == self.directory:
            self.listings.append(_store_files(names))
        return names


def _store_files(names: list[str]) -> frozenset[str]:
    """The names whose set a live read compares: FORMAT, segments, snapshots."""
    return frozenset(
        name
        for name in names
        if name == fmt.FORMAT_FILE
        or fmt.parse_name(name, *fmt.SEGMENT_NAME) is not None
        or fmt.parse_name(name, *fmt.SNAPSHOT_NAME) is not None
    )


@dataclass(frozen=True)
class _Seal:
    """What a live attempt compares before and after itself (Rule 4)."""

    holder: _holder.Holder
    lock_size: int
    format_file: bytes

    def quiet(self, note_length: int) -> bool:
        """No checkpoint is removing files: an even count of marks."""
        return (self.lock_size - note_length) % 2 == 0


def _seal(io: FileIO, directory: str) -> tuple[_Seal, int] | None:
    """The seal now and the note's length, or None: no note naming a
    running process (the holder is older, gone, or cannot be checked)."""
    try:
        data, size = io.read_lock_note(os.path.join(directory, fmt.LOCK_FILE), _holder.NOTE_LIMIT)
        format_file = io.read(os.path.join(directory, fmt.FORMAT_FILE))
    except OSError:
        return None
    decoded = _holder.decode(data)
    if decoded is None or _holder.running(io, decoded[0]) is not True:
        return None
    holder, length = decoded
    return _Seal(holder, size, format_file), length


def _vanished(exc: BaseException) -> bool:
    """A `ReadFailed` for a file that went away while it was read."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, FileNotFoundError):
            return True
        cause = cause.__cause__
    return False


def read_live(
    directory: str, max_record: int = DEFAULT_MAX_RECORD, *, timeout: float = LIVE_TIMEOUT
) -> StoreView:
    """The live view of a store open in a process (Rule 4), read without a
    lock and without changing a byte; a store that is closed meanwhile is
    read under the shared lock instead.

    Args:
        directory: the store directory (checked by `check_store_directory`).
        max_record: the store's `max_record_bytes`.
        timeout: give up after this many seconds of attempts that could not
            be proven exact.

    Returns:
        The state as of one LSN (`last_lsn`), no earlier than the last
        write acknowledged before the call; its one note says so and names
        the holder.

    Raises:
        StoreLocked: the holder leaves no note naming a running process
            (an older meerkat_actor, another PID namespace or host).
        CorruptStore: met twice in a row at the same place (Rule 4).
        ReadFailed: the store changed under every attempt for `timeout`
            seconds, or a file cannot be read.
    """
    io = FileIO()
    started = time.monotonic()
    pause = 0.001
    failed: tuple[str | None, int | None, str] | None = None
    while True:
        elapsed = time.monotonic() - started
        sealed = _seal(io, directory)
        if sealed is None:
            try:
                return read_store(directory, max_record, live=False)
            except StoreLocked:
                if elapsed >= _NOTE_WAIT:
                    raise
        elif sealed[0].quiet(sealed[1]):
            before, _ = sealed
            attempt = _LiveIO(directory)
            view: StoreView | None = None
            error: CorruptStore | None = None
            try:
                view = recover(attempt, directory, max_record)
            except CorruptStore as exc:
                error = exc
            except ReadFailed as exc:
                if not _vanished(exc):
                    raise
            after = _seal(io, directory)
            final = _store_files(io.list_dir(directory))
            exact = (
                after is not None
                and after[0] == before
                and all(listing == final for listing in attempt.listings)
            )
            if exact and view is not None:
                return _live_view(view, before.holder)
            if exact and error is not None:
                place = (error.path, error.offset, str(error))
                if place == failed:
                    raise error
                failed = place
        if elapsed >= timeout:
            raise ReadFailed(
                f"{directory} changed under every attempt to read it live for {timeout:g} s"
                " (checkpoints, new segments); try again"
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _live_view(view: StoreView, holder: _holder.Holder) -> StoreView:
    """`view` with the live read's one note in place of what opening would
    repair (the holder opened the store and repaired it; a partial record at
    the end is a write in flight)."""
    note = Problem(
        "note",
        os.path.join(view.directory, fmt.LOCK_FILE),
        None,
        f"read live beside the open store ({holder.describe()}): the state as of LSN"
        f" {view.last_lsn}; writes acknowledged after the read began may be missing",
    )
    return dataclasses.replace(view, notes=[note])
