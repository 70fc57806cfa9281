"""Tools over a store no process has open: read-only recovery, a full verify
scan, and copies to and from the SQLite backend. The `meerkat-actor` command
line (`__main__.py`) is their user.

Rule 1: the read-only tools change nothing. They run the very recovery
`open_store` runs (`DurableLog.open`), against `_DryRunIO`, a file layer that
reads for real and records, instead of doing, every change recovery would
make (truncating a torn tail, removing a temp file); those become notes. No
file is created, not even LOCK.

Rule 2: a consistent view needs the lock. The read-only tools hold a shared
`flock` on DIR/LOCK while they read: an open store (which holds the
exclusive lock) makes them raise `StoreLocked`, and `open_store` fails while
they run. They do not read under a live writer, which preallocates, cuts,
rotates and deletes files as it goes.

Rule 3: every function here blocks on the disk; the command line calls them
from plain synchronous code (no trio run is active), and an async caller
must use `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal

from . import _core
from . import _format as fmt
from ._core import StoreState
from ._durable import DEFAULT_MAX_RECORD, DurableLog, _check_format_file
from ._errors import CorruptStore, NotAStore, ReadFailed, StoreLocked
from ._fs import FileIO, Handle, LockHandle
from ._sqlite_db import Database as _Database

__all__ = [
    "FileEntry",
    "Problem",
    "StoreView",
    "VerifyReport",
    "export_sqlite",
    "import_sqlite",
    "read_sqlite",
    "read_store",
    "verify_store",
]

_logger: Final = logging.getLogger("meerkat_actor")
_SEGMENT: Final = ("log-", ".log")
_SNAPSHOT: Final = ("snapshot-", ".snap")
_LOCKED_ERRNOS: Final = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)

Severity = Literal["note", "damage", "corrupt"]


@dataclass(frozen=True)
class FileEntry:
    """A file of a store directory."""

    name: str
    kind: Literal["format", "lock", "snapshot", "segment", "temp", "other"]
    bytes: int


@dataclass(frozen=True)
class Problem:
    """Something `verify` found: `offset` is a byte offset in `file`, or None."""

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


@dataclass
class VerifyReport:
    directory: str
    result: Literal["clean", "damaged", "corrupt"] = "clean"
    snapshots: int = 0
    segments: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    damaged_lsn: dict[Problem, int] = field(default_factory=dict, repr=False)


class _DryRunIO(FileIO):
    """Reads for real; records changes instead of making them (Rule 1).

    Handles it hands out are fake (fd -1): recovery "opens" the last segment
    for appending, or "creates" one, and closes it again, without a write.
    """

    def __init__(self) -> None:
        self.truncated: list[tuple[str, int]] = []
        self.removed: list[str] = []

    def make_dir(self, path: str) -> None:
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)

    def make_private(self, path: str) -> None:
        pass

    def sync_dir(self, path: str) -> None:
        pass

    def lock(self, path: str) -> LockHandle:
        return _shared_lock(path)

    def unlock(self, lock: LockHandle) -> None:
        if lock.fd >= 0:
            os.close(lock.fd)

    def create(self, path: str) -> Handle:
        return Handle(-1, path)

    def create_private_file(self, path: str) -> None:
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "no such file", path)

    def open_write(self, path: str) -> Handle:
        return Handle(-1, path)

    def write(self, handle: Handle, data: bytes) -> None:
        pass

    def write_at(self, handle: Handle, offset: int, data: bytes) -> None:
        pass

    def sync(self, handle: Handle) -> None:
        pass

    def close(self, handle: Handle) -> None:
        pass

    def truncate(self, path: str, size: int) -> None:
        self.truncated.append((path, size))

    def rename(self, source: str, target: str) -> None:
        pass

    def remove(self, path: str) -> None:
        self.removed.append(path)


def _shared_lock(path: str) -> LockHandle:
    """A shared, non-blocking `flock` on the existing file `path` (fd -1 if
    there is no such file: then no store holds it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return LockHandle(-1, path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in _LOCKED_ERRNOS:
            raise BlockingIOError(exc.errno, f"{path} is locked") from exc
        raise
    return LockHandle(fd, path)


@contextmanager
def _locked(directory: str) -> Iterator[None]:
    """Hold the store's shared lock (Rule 2)."""
    try:
        lock = _shared_lock(os.path.join(directory, fmt.LOCK_FILE))
    except BlockingIOError as exc:
        raise StoreLocked(f"{directory} is locked by another open store") from exc
    except OSError as exc:
        raise ReadFailed(f"cannot lock {directory}: {exc}") from exc
    try:
        yield
    finally:
        if lock.fd >= 0:
            os.close(lock.fd)


def check_store_directory(path: str) -> str:
    """The resolved directory `path` names, if it is a store.

    Raises:
        NotAStore: no such directory, or it holds no FORMAT file.
        UnsupportedFormat: a newer format version wrote it.
        CorruptStore: the FORMAT file is damaged.
    """
    directory = os.path.realpath(path)
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            raise NotAStore(f"{directory} is not a directory")
        os.stat(os.path.join(directory, fmt.FORMAT_FILE))
    except FileNotFoundError as exc:
        if exc.filename == directory:
            raise NotAStore(f"{directory} does not exist") from exc
        raise NotAStore(
            f"{directory} is not a meerkat_actor store (it has no {fmt.FORMAT_FILE} file)"
        ) from exc
    except OSError as exc:
        raise ReadFailed(f"cannot read {directory}: {exc}") from exc
    _format_version(directory)
    return directory


def _format_version(directory: str) -> int:
    try:
        return _check_format_file(FileIO(), directory)
    except OSError as exc:
        raise ReadFailed(f"cannot read {directory}/{fmt.FORMAT_FILE}: {exc}") from exc


def list_files(directory: str) -> list[FileEntry]:
    """The store directory's files, sorted by name, with their sizes."""
    entries = []
    try:
        names = sorted(os.listdir(directory))
        for name in names:
            size = os.lstat(os.path.join(directory, name)).st_size
            entries.append(FileEntry(name, _kind(name), size))
    except OSError as exc:
        raise ReadFailed(f"cannot list {directory}: {exc}") from exc
    return entries


def _kind(name: str) -> Literal["format", "lock", "snapshot", "segment", "temp", "other"]:
    if name == fmt.FORMAT_FILE:
        return "format"
    if name == fmt.LOCK_FILE:
        return "lock"
    if fmt.parse_name(name, *_SNAPSHOT) is not None:
        return "snapshot"
    if fmt.parse_name(name, *_SEGMENT) is not None:
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


def _recover(directory: str, max_record: int) -> tuple[StoreView, _DryRunIO]:
    """Run `open_store`'s recovery without changing anything (Rule 1)."""
    io = _DryRunIO()
    with _quiet():
        log, recovered = DurableLog.open(io, directory, max_record)
    log.close()
    files = list_files(directory)
    segment_lsns = [n for f in files if (n := fmt.parse_name(f.name, *_SEGMENT)) is not None]
    oldest = min(segment_lsns, default=None)
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
    view = StoreView(
        directory=directory,
        format_version=_format_version(directory),
        state=recovered.state,
        last_lsn=recovered.last_lsn,
        snapshot_lsn=recovered.snapshot_lsn,
        log_first_lsn=oldest if oldest is not None and oldest <= recovered.last_lsn else None,
        files=files,
        notes=notes,
    )
    return view, io


def read_store(path: str, max_record: int = DEFAULT_MAX_RECORD) -> StoreView:
    """What `open_store(path)` would recover, read without changing anything.

    Raises:
        NotAStore: `path` is not a store directory.
        StoreLocked: a store is open on it.
        UnsupportedFormat, CorruptStore, ReadFailed: as `open_store`.
    """
    directory = check_store_directory(path)
    with _locked(directory):
        return _recover(directory, max_record)[0]


# --- verify -------------------------------------------------------------------------------


def verify_store(path: str, max_record: int = DEFAULT_MAX_RECORD) -> VerifyReport:
    """Check every file of the store at `path`, changing nothing.

    Scans every snapshot and every record of every segment (checksums, LSN
    continuity, decoding and validation of every value), then runs the
    recovery `open_store` would run. `result` is "corrupt" if that recovery
    fails, "damaged" if the scan found damage recovery works around, else
    "clean" (notes, crash artifacts recovery repairs, allowed).

    Raises:
        NotAStore, StoreLocked, UnsupportedFormat, ReadFailed: as `read_store`.
        (A damaged FORMAT file is reported, not raised.)
    """
    try:
        directory = check_store_directory(path)
    except CorruptStore as exc:
        report = VerifyReport(os.path.realpath(path), "corrupt")
        report.problems.append(Problem("corrupt", exc.path or "", exc.offset, str(exc)))
        return report
    report = VerifyReport(directory)
    with _locked(directory):
        recovery_error: CorruptStore | None = None
        notes: list[Problem] = []
        truncated: list[tuple[str, int]] = []
        removed: list[str] = []
        snapshot_lsn = 0
        try:
            view, io = _recover(directory, max_record)
            notes, truncated, removed = view.notes, io.truncated, io.removed
            snapshot_lsn = view.snapshot_lsn
        except CorruptStore as exc:
            recovery_error = exc
        found = _scan(directory, max_record, report)
    for problem in found:
        if any(problem.file == p and (problem.offset or 0) >= size for p, size in truncated):
            if report.damaged_lsn.get(problem, 0) > snapshot_lsn:
                continue  # the torn tail, which the note reports
            # The snapshot holds this record: it was synced, so this is no
            # torn write but damage (opening cuts it; the snapshot has it).
            notes = [n for n in notes if n.file != problem.file]
        if problem.file in removed:
            continue  # a crash artifact opening removes, which the note reports
        if (
            recovery_error is not None
            and problem.file == recovery_error.path
            and problem.offset == recovery_error.offset
        ):
            continue  # reported below as what opening raises
        report.problems.append(problem)
    if recovery_error is not None:
        report.result = "corrupt"
        message = str(recovery_error)
        prefix = f"{recovery_error.path} at byte offset {recovery_error.offset}: "
        report.problems.append(
            Problem(
                "corrupt",
                recovery_error.path or directory,
                recovery_error.offset,
                message.removeprefix(prefix) + " (opening the store raises CorruptStore)",
            )
        )
    elif report.problems:
        report.result = "damaged"
    report.problems = notes + report.problems
    return report


def _scan(directory: str, max_record: int, report: VerifyReport) -> list[Problem]:
    """Check every snapshot and segment file on its own, then the log's
    continuity; every problem is "damage" (the caller refines)."""
    problems: list[Problem] = []
    names = sorted(os.listdir(directory))
    newest_snapshot = 0
    for name in names:
        lsn = fmt.parse_name(name, *_SNAPSHOT)
        if lsn is None:
            continue
        report.snapshots += 1
        path = os.path.join(directory, name)
        try:
            found_lsn, _ = fmt.decode_snapshot(_read(path))
            if found_lsn != lsn:
                raise fmt.FormatError(f"header LSN {found_lsn} differs from the name", 16)
        except fmt.FormatError as exc:
            problems.append(Problem("damage", path, exc.offset, f"snapshot: {exc}"))
            continue
        newest_snapshot = max(newest_snapshot, lsn)
    segments = sorted(
        (n, name) for name in names if (n := fmt.parse_name(name, *_SEGMENT)) is not None
    )
    previous_end: int | None = None
    for first_lsn, name in segments:
        report.segments += 1
        path = os.path.join(directory, name)
        last = _scan_segment(path, first_lsn, max_record, report, problems)
        if last is None:
            continue  # no records (or a damaged header, already reported)
        if previous_end is None:
            if first_lsn > newest_snapshot + 1:
                problems.append(
                    Problem(
                        "damage",
                        path,
                        0,
                        f"the log starts at LSN {first_lsn}, but the newest valid snapshot"
                        f" ends at {newest_snapshot}: records in between are missing",
                    )
                )
        elif first_lsn <= previous_end:
            problems.append(
                Problem(
                    "damage",
                    path,
                    0,
                    f"segment starts at LSN {first_lsn}, but the previous one ends at"
                    f" {previous_end}: records {first_lsn}..{previous_end} are there twice",
                )
            )
        elif first_lsn != previous_end + 1 and first_lsn - 1 > newest_snapshot:
            problems.append(
                Problem(
                    "damage",
                    path,
                    0,
                    f"segment starts at LSN {first_lsn}, but the previous one ends at"
                    f" {previous_end}",
                )
            )
        previous_end = last
    return problems


def _scan_segment(
    path: str, first_lsn: int, max_record: int, report: VerifyReport, problems: list[Problem]
) -> int | None:
    """Check one segment's header and records; return its last record's LSN.
    A damaged record's problem is also noted in `report.damaged_lsn` under
    the LSN that should be there."""
    data = _read(path)
    try:
        header_lsn = fmt.decode_segment_header(data)
        if header_lsn != first_lsn:
            raise fmt.FormatError(f"header first LSN {header_lsn} differs from the name", 16)
    except fmt.FormatError as exc:
        problems.append(Problem("damage", path, exc.offset, f"segment header: {exc}"))
        return None
    expected, offset, last = first_lsn, fmt.SEGMENT_HEADER, None
    while offset < len(data):
        try:
            frame = fmt.read_frame(data, offset, max_record)
            if frame.lsn != expected:
                raise fmt.FormatError(f"record LSN {frame.lsn}, expected {expected}", offset)
            fmt.decode_effects(frame)
        except fmt.FormatError as exc:
            if data.count(0, offset) == len(data) - offset:
                break  # the zero-filled, preallocated rest of the segment
            problem = Problem(
                "damage",
                path,
                exc.offset,
                f"{exc} (the {len(data) - offset} bytes from offset {offset} on are not checked)",
            )
            problems.append(problem)
            report.damaged_lsn[problem] = expected
            break
        report.records += 1
        last = frame.lsn
        expected += 1
        offset = frame.end
    return last


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ReadFailed(f"cannot read {path}: {exc}") from exc


# --- SQLite -------------------------------------------------------------------------------


def read_sqlite(path: str) -> StoreState:
    """The whole content of the SQLite store at `path`, read-only.

    Raises:
        NotAStore: no such file, or it lacks Meerkat's tables.
        CorruptStore: not a SQLite database, or a row does not decode.
        ReadFailed: SQLite failed.
    """
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        raise NotAStore(f"{os.path.abspath(path)} {what}")
    database = _Database.open_read_only(path)
    try:
        return database.read_state()
    finally:
        database.close()


def export_sqlite(state: StoreState, path: str) -> StoreState:
    """Write `state` into a new SQLite store at `path` (one transaction,
    `synchronous=FULL`); return what reading the file back gives.

    Raises:
        FileExistsError: `path` exists.
        ReadFailed, WriteFailed, CorruptStore: as `open_sqlite_store` and its writes.
    """
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "the export's target exists", path)
    database = _Database.open(path, "FULL", 5.0)
    try:
        database.write_state(state)
    except BaseException:
        database.close()
        for leftover in (path, path + "-wal", path + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(leftover)  # the file this call created, half written
        raise
    try:
        return database.read_state()
    finally:
        database.close()


def import_sqlite(state: StoreState, path: str) -> StoreView:
    """Write `state` as a new actor store at `path` (one snapshot at LSN 0);
    return what recovering it (read-only) gives.

    Raises:
        ValueError: `path` exists and is not an empty directory.
        OSError: writing failed.
    """
    DurableLog.create_from_state(FileIO(), path, 0, state)
    return read_store(path)


def same_content(a: StoreState, b: StoreState) -> bool:
    """True if every read gives the same answer on both."""
    return _core.without_empty_records(a) == _core.without_empty_records(b)
