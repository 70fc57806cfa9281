"""The files of a durable store: open and recover, append, rotate, checkpoint.

Rule 1: every method here blocks on the disk and runs in a worker thread
(`trio.to_thread.run_sync`), never on the trio thread. All file operations go
through the `_fs.FileIO` layer.

Rule 2: nothing is ever silently dropped. Recovery truncates exactly one kind
of damage, a torn or checksum-failing record at the very end of the newest
segment (a crash artifact, when nothing valid follows it). Anything else
raises `CorruptStore` naming the file and the byte offset.

Rule 3: the fsync order makes every step safe to interrupt. A log append is
write, then fdatasync, and only then acknowledged. A segment is created
(header, fsync of the file, fsync of the directory) before records go in. A
checkpoint is: snapshot to a temp file, fsync it, rename it, fsync the
directory, and only then delete what it covers (older segments, older
snapshots), then fsync the directory again.

Rule 4: the LOCK file's note (`_holder`) is advice. It is written after
the lock is taken, through the locking descriptor, cleared on close, and a
failure to write it is logged, never raised: the lock is what excludes.
Checkpoints remove files only between two marks appended to it, so that a
live reader can tell whether a removal overlapped its read, or, when a mark
cannot be written, after emptying LOCK (no note: nothing is read live).

Theory of operation. `DurableLog.open()` locks the directory (`flock` on
LOCK), writes the note naming this process into it, creates or checks the
FORMAT file, removes temp files a crashed
checkpoint left, then recovers: it loads the newest snapshot that checks out,
replays the records after it in LSN order (they must be contiguous), and
positions the writer at the end of the log. It judges bytes only through
`_format`'s scanner (`read_snapshot`, `segment_header`, `scan_segment`,
`later_write`) and the numbered rules of docs/format.md, the same code
`meerkat-actor verify` (`_verifier.py`) reads with. `append()` writes one
group of framed records and syncs it. `rotate()` starts a new segment at a given LSN,
so that a checkpoint taken at LSN L can delete every segment before the one
starting at L + 1. `write_snapshot()` runs the checkpoint protocol.

Versions. Recovery reads every version `_format` reads (1 and 2) and writes
nothing new: a version 1 store stays version 1 while it is only opened and
read. Records are appended only to a segment of this build's version, never
to an older one. Before this build writes its first record, segment or
snapshot into a version 1 store, `_convert()` moves the store to version 2:
FORMAT rewritten atomically (temp, fsync, rename, fsync of the directory),
then a new version 2 segment at the next LSN. The next checkpoint writes a
version 2 snapshot and deletes every older segment and snapshot, so after it
the directory holds only version 2 files. No version 2 file exists while
FORMAT says 1, so an older build meets either a version 1 store it reads or
FORMAT 2, which it refuses (`UnsupportedFormat`) before reading anything.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final

from . import _core, _holder
from . import _format as fmt
from ._core import Effect, StoreState
from ._errors import (
    CorruptStore,
    NotAStore,
    ReadFailed,
    UnsupportedFormat,
    WriteFailed,
)
from ._fs import FileIO, Handle, LockHandle, not_regular

__all__ = ["DEFAULT_MAX_RECORD", "MAX_RECORD_LIMIT", "DurableLog", "Recovered"]

logger = logging.getLogger("meerkat_actor")

DEFAULT_MAX_RECORD: Final = 64 * 1024 * 1024
MAX_RECORD_LIMIT: Final = 2**32 - 1  # the frame's length field is 32 bits
#: Log segments are zero-filled ahead of the records, this much at a time, so
#: that an append overwrites allocated blocks instead of growing the file.
PREALLOCATE: Final = 1024 * 1024
_TMP: Final = ".tmp"
#: Marks a store being made from a state (backup, import) until it is whole.
INCOMPLETE_FILE: Final = "INCOMPLETE"


@dataclass
class Recovered:
    """What `DurableLog.open()` found."""

    state: StoreState
    last_lsn: int
    snapshot_lsn: int
    log_bytes: int  # record bytes after the snapshot, for the checkpoint policy
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Replay:
    """Where replay stands: the state so far and the next LSN it needs."""

    rebuild: _core.Rebuild
    snapshot_lsn: int
    last_lsn: int = 0
    log_bytes: int = 0
    expected: int | None = None
    #: The last segment read whole so far: (path, header, end of its last
    #: record); new records go there if it is still the last at the end.
    tail: tuple[str, fmt.SegmentHeader, int] | None = None

    def __post_init__(self) -> None:
        self.last_lsn = self.snapshot_lsn


def _corrupt(path: str, offset: int, message: str) -> CorruptStore:
    """`CorruptStore` naming the file and byte offset, also kept as the
    attributes `path` and `offset` (for `meerkat-actor verify`)."""
    error = CorruptStore(f"{path} at byte offset {offset}: {message}")
    error.path = path
    error.offset = offset
    return error


class DurableLog:
    """One open store directory. Not thread-safe by itself: `append`/`rotate`
    run one at a time (the writer), `write_snapshot` may overlap them (it
    touches only snapshot files and segments older than the current one)."""

    def __init__(self, io: FileIO, directory: str, lock: LockHandle, max_record: int) -> None:
        self.io = io
        self.directory = directory
        self._lock: LockHandle | None = lock
        #: Where the LOCK file's note ends (its line, then the marks), or
        #: None if no note was written (no mark is appended then).
        self._note_end: int | None = None
        #: True while the marks say a removal is under way (Rule 4): the
        #: closing mark could not be appended.
        self._removing = False
        #: The holder the note names (`_note_end` is not None).
        self._note_holder: _holder.Holder | None = None
        self.max_record = max_record
        self._segment: Handle | None = None
        #: The version the FORMAT file names: 1 until a version 1 store is converted.
        self.format_version = fmt.FORMAT_VERSION
        #: Set while the store is older than this build: the LSN where the
        #: first segment of this build's version will start (`_convert`).
        self._convert_at: int | None = None
        #: A record-less segment of an older version where the next segment
        #: must go: removed before that segment is created.
        self._stale_empty: str | None = None
        self.segment_first_lsn = 0
        self._segment_size = 0  # where the next record goes: the end of the last durable one
        self._allocated = 0  # the segment file's size: records, then zeros

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    # --- open and recover ------------------------------------------------------------

    @classmethod
    def open(
        cls, io: FileIO, path: str, max_record: int = DEFAULT_MAX_RECORD
    ) -> tuple[DurableLog, Recovered]:
        """Lock, initialise or check, and recover the store in directory `path`.

        Raises:
            StoreLocked: another open store holds the directory.
            UnsupportedFormat: the directory was written by a newer format.
            ReadFailed: `path` is a non-empty directory that is not a store,
                or cannot be read; or (its refinement `NotAStore`) it is not
                a directory (a regular file, say), or goes through one: then
                nothing was created.
            CorruptStore: damage recovery must not repair.
        """
        directory = os.path.realpath(path)
        try:
            check_can_be_directory(directory)
            _make_dirs(io, directory)
            # Refuse a foreign directory, or a newer format, before leaving a
            # LOCK file in it (both are checked again under the lock).
            names = io.list_dir(directory)
            _check_not_foreign(directory, names)
            check_entries(io, directory, names)
            if fmt.FORMAT_FILE in names:
                _check_format_file(io, directory)
            lock = io.lock(os.path.join(directory, fmt.LOCK_FILE))
        except BlockingIOError as exc:
            raise _holder.locked_error(io, directory) from exc
        except OSError as exc:
            raise ReadFailed(f"cannot open store directory {directory}: {exc}") from exc
        log = cls(io, directory, lock, max_record)
        try:
            log._write_note()
            recovered = log._recover()
        except BaseException:
            log.close()
            raise
        return log, recovered

    def _write_note(self, holder: _holder.Holder | None = None) -> None:
        """Name this process in the LOCK file (Rule 4; best effort), or
        write `holder` there in place of the note and its marks. LOCK is
        emptied first: a write that fails then leaves at most part of a
        line, which names nobody (if emptying fails, nothing changed)."""
        assert self._lock is not None
        try:
            holder = _holder.this_process(self.io) if holder is None else holder
            note = _holder.encode(holder)
            self.io.write_lock_note(self._lock, b"")
        except OSError as exc:
            logger.warning("%s: cannot write the holder's note into LOCK: %s", self.directory, exc)
            return
        self._note_end = None
        try:
            self.io.write_lock_note(self._lock, note)
        except OSError as exc:
            logger.warning("%s: cannot write the holder's note into LOCK: %s", self.directory, exc)
            return
        self._note_end = len(note)
        self._note_holder = holder

    def _drop_note(self) -> bool:
        """Empty the LOCK file, so that no reader relies on marks that can
        no longer be written (Rule 4); False if that failed too."""
        assert self._lock is not None
        try:
            self.io.write_lock_note(self._lock, b"")
        except OSError as exc:
            logger.warning("%s: cannot empty LOCK: %s", self.directory, exc)
            return False
        self._note_end = None
        return True

    def _mark(self) -> bool:
        """Append one mark to the LOCK file's note (Rule 4); False if that failed."""
        if self._lock is None or self._note_end is None:
            return False
        try:
            self.io.extend_lock_note(self._lock, self._note_end, _holder.MARK)
        except OSError as exc:
            logger.warning("%s: cannot append a mark to LOCK: %s", self.directory, exc)
            return False
        self._note_end += len(_holder.MARK)
        return True

    def _recover(self) -> Recovered:
        io = self.io
        try:
            names = io.list_dir(self.directory)
            if fmt.FORMAT_FILE in names:
                # A newer format is refused before any change.
                self.format_version = self._check_format()
            for name in names:
                if _is_own_temp(name):
                    io.remove(self._path(name))  # an atomic write that never finished
            names = [n for n in names if not _is_own_temp(n)]
            if fmt.FORMAT_FILE not in names:
                self._initialise(names)
        except OSError as exc:
            raise ReadFailed(f"cannot read store directory {self.directory}: {exc}") from exc
        segments = fmt.numbered(names, fmt.SEGMENT_NAME)
        snapshots = fmt.numbered(names, fmt.SNAPSHOT_NAME)[::-1]
        warnings: list[str] = []
        state, snapshot_lsn, bad_snapshot = self._load_snapshot(snapshots, warnings)
        try:
            state, last_lsn, log_bytes = self._replay(segments, state, snapshot_lsn, warnings)
        except CorruptStore as exc:
            if bad_snapshot is None:
                raise
            # The log cannot stand in for the damaged snapshot: name the
            # snapshot, the first damage, not the log's resulting gap.
            _, bad_path, bad_offset, message = bad_snapshot
            raise _corrupt(bad_path, bad_offset, f"{message}; the log does not cover it") from exc
        if bad_snapshot is not None:
            bad_lsn, bad_path, bad_offset, message = bad_snapshot
            if last_lsn < bad_lsn:
                raise _corrupt(bad_path, bad_offset, f"{message}; the log does not cover it")
            warnings.append(f"ignored damaged snapshot {bad_path}: the log covers it")
        for warning in warnings:
            logger.warning("%s: %s", self.directory, warning)
        return Recovered(state, last_lsn, snapshot_lsn, log_bytes, warnings)

    def _initialise(self, names: list[str]) -> None:
        """Make an empty directory a store: private mode, then the FORMAT file."""
        _check_not_foreign(self.directory, names)
        self.io.make_private(self.directory)
        self._write_atomically(fmt.FORMAT_FILE, fmt.encode_format_file())
        # The store directory's own entry, in case make_dir just created it.
        self.io.sync_dir(os.path.dirname(self.directory))

    def _check_format(self) -> int:
        return _check_format_file(self.io, self.directory)

    def _load_snapshot(
        self, snapshots: list[tuple[int, str]], warnings: list[str]
    ) -> tuple[StoreState, int, tuple[int, str, int, str] | None]:
        """The newest snapshot that checks out; the newest damaged one above it, if any."""
        bad: tuple[int, str, int, str] | None = None
        for lsn, name in snapshots:
            path = self._path(name)
            try:
                with _FileReader(self.io, path) as reader:
                    state = fmt.read_snapshot(reader, lsn, self.format_version)
            except OSError as exc:
                raise ReadFailed(f"cannot read {path}: {exc}") from exc
            except fmt.FormatError as exc:
                if bad is None:
                    bad = (lsn, path, exc.offset, str(exc))
                continue
            return state, lsn, bad
        return _core.EMPTY, 0, bad

    def _replay(
        self,
        segments: list[tuple[int, str]],
        state: StoreState,
        snapshot_lsn: int,
        warnings: list[str],
    ) -> tuple[StoreState, int, int]:
        """Replay the records after `snapshot_lsn`; open the writer at the end."""
        # Segments whose successor starts at or before snapshot_lsn + 1 hold
        # only records the snapshot has: they are not read.
        start = 0
        for i in range(len(segments) - 1):
            if segments[i + 1][0] <= snapshot_lsn + 1:
                start = i + 1
        relevant = segments[start:]
        replay = _Replay(_core.Rebuild(state), snapshot_lsn)
        for index, (first_lsn, name) in enumerate(relevant):
            is_last = index == len(relevant) - 1
            if not self._replay_segment(replay, self._path(name), first_lsn, is_last, warnings):
                break  # a torn, empty last segment was removed
        if replay.tail is not None:
            # The last segment that survived (step 7 may have removed the
            # ones after it): new records go after its last one (step 9).
            path, header, end = replay.tail
            assert replay.expected is not None
            self._open_segment_for_append(path, header, end, replay.expected - 1, replay.last_lsn)
        if self._segment is None:
            if self.format_version < fmt.FORMAT_VERSION:
                # Writes nothing into an older store until it is written to.
                self._convert_at = replay.last_lsn + 1
            else:
                self._start_segment(replay.last_lsn + 1)
        return replay.rebuild.state(), replay.last_lsn, replay.log_bytes

    def _replay_segment(
        self, replay: _Replay, path: str, first_lsn: int, is_last: bool, warnings: list[str]
    ) -> bool:
        """Replay one segment; False if it was a torn, record-less last segment.

        The segment is judged by `_format`'s scanner and docs/format.md's
        rules: H1-H4 (header), 1-8 (records), 9 (torn write or damage).
        """
        try:
            reader = _FileReader(self.io, path)
        except OSError as exc:
            raise ReadFailed(f"cannot read {path}: {exc}") from exc
        with reader:
            return self._replay_from(
                reader, replay, path, first_lsn, is_last=is_last, warnings=warnings
            )

    def _replay_from(
        self,
        reader: fmt.Reader,
        replay: _Replay,
        path: str,
        first_lsn: int,
        *,
        is_last: bool,
        warnings: list[str],
    ) -> bool:
        # A segment a failed rotation left behind (format.md section 8, step
        # 7): no record, and a first LSN (its name's) below the one expected
        # next, since the records it was meant for went on in the previous
        # segment. Its header may be torn too, when its removal also failed.
        left_by_rotation = (
            replay.expected is not None
            and first_lsn < replay.expected
            and fmt.is_zero_from(reader, fmt.SEGMENT_HEADER)
        )
        try:
            header = fmt.segment_header(reader, self.format_version)
        except fmt.FormatError as exc:
            if is_last and fmt.is_zero_from(reader, fmt.SEGMENT_HEADER):
                # A crash interrupted the segment's creation (header and
                # zero fill in one write): no record was ever written to it.
                warnings.append(f"removed {path}: its header is torn ({exc})")
                self._remove_durably(path)
                return False
            if not left_by_rotation:
                raise _corrupt(path, exc.offset, str(exc)) from exc
            warnings.append(
                f"removed {path}: a record-less segment a failed rotation left"
                f" (its header is torn: {exc})"
            )
            self._remove_durably(path)
            return True
        if left_by_rotation:
            warnings.append(f"removed {path}: a record-less segment a failed rotation left")
            self._remove_durably(path)
            return True
        _check_segment_start(path, header.first_lsn, first_lsn, replay)
        end = fmt.SEGMENT_HEADER
        events = fmt.scan_segment(
            reader, first_lsn, self.max_record, replay.snapshot_lsn, version=header.version
        )
        for event in events:
            if isinstance(event, fmt.Record):
                if event.effects is not None:
                    replay.rebuild.apply(event.effects)
                    replay.log_bytes += event.frame.end - event.frame.offset
                replay.last_lsn = max(replay.last_lsn, event.frame.lsn)
                continue
            if isinstance(event, fmt.Damage):
                self._torn_write(path, reader, event, is_last)
                warnings.append(
                    f"truncated a torn write at the end of {path}"
                    f" (offset {event.offset}, {reader.size() - event.offset} bytes):"
                    f" {event.error}"
                )
                self._truncate(path, event.offset)
            end, replay.expected = event.offset, event.expected
        replay.tail = (path, header, end)
        return True

    @staticmethod
    def _torn_write(path: str, reader: fmt.Reader, damage: fmt.Damage, is_last: bool) -> None:
        """Raise `CorruptStore` unless `damage` is a torn write: the last
        segment's last write, cut by a crash (docs/format.md section 8, step 6).

        A whole record that breaks rule 5 or 7 is damage wherever it is, and
        so is any damage in a segment that is not the last. In the last one,
        rule 9 decides: a write starts only after the previous one was synced,
        so a valid record of a *later* write after the damage proves the
        damaged record had been synced (corruption), while records of the
        same write (or none) are what a crash during it leaves (its pages may
        reach the disk in any order).
        """
        error = damage.error
        if damage.whole or not is_last:
            raise _corrupt(path, error.offset, str(error)) from error
        later = fmt.later_write(reader, damage)
        if later is not None:
            raise _corrupt(
                path,
                damage.offset,
                f"{error}, but a valid record of a later write (LSN {later.lsn})"
                f" follows at {later.offset}",
            ) from error

    def _open_segment_for_append(
        self, path: str, header: fmt.SegmentHeader, size: int, segment_last: int, last_lsn: int
    ) -> None:
        if segment_last != last_lsn:
            # The snapshot is ahead of this segment's end (it was never
            # rotated after): new records must go to a segment of their own.
            return
        if header.version != fmt.FORMAT_VERSION:
            # Never append to a segment of an older version: new records go
            # to a segment of their own, at the next LSN. If this one holds
            # no record, it is where that segment goes: remove it first.
            if size <= fmt.SEGMENT_HEADER:
                self._stale_empty = path
            return
        try:
            self._segment = self.io.open_write(path)
            allocated = self.io.size(path)
        except OSError as exc:
            raise ReadFailed(f"cannot open {path} for appending: {exc}") from exc
        self.segment_first_lsn = header.first_lsn
        self._segment_size = size
        self._allocated = allocated

    def _truncate(self, path: str, size: int) -> None:
        try:
            self.io.truncate(path, size)
        except OSError as exc:
            raise WriteFailed(f"cannot truncate the torn tail of {path}: {exc}") from exc

    def _remove_durably(self, path: str) -> None:
        try:
            self.io.remove(path)
            self.io.sync_dir(self.directory)
        except OSError as exc:
            raise WriteFailed(f"cannot remove {path}: {exc}") from exc

    # --- a new store from a state (backup, import) ------------------------------------

    @classmethod
    def create_from_state(cls, io: FileIO, path: str, lsn: int, state: StoreState) -> int:
        """Make `path` a new store holding `state` as of `lsn`; return the
        snapshot's size in bytes.

        `path` must not exist or be an empty directory. The directory never
        shows up empty: a missing `path` is made as a directory named
        `<path>.incomplete-<8 hex digits>` beside it, the marker file
        INCOMPLETE is made durable in it, and only then is it renamed to
        `path` (and the parent directory synced). An existing empty `path`
        gets the marker in place. Then, under the directory's lock, the
        snapshot and the FORMAT file (each temp file -> fsync -> rename ->
        fsync of the directory); then the marker is removed. So a crash or
        failure at any step leaves no directory at `path` (maybe a leftover
        `.incomplete-` one beside it), the empty directory that was there, or
        a directory holding INCOMPLETE, which `open_store` refuses as an
        incomplete backup or import: never an empty-looking store. No log
        segment is written; the first open creates one at `lsn + 1`.

        Raises:
            ValueError: `path` exists and is not an empty directory.
            OSError: a step failed (a partial directory may remain).
        """
        directory = os.path.realpath(path)
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise ValueError(f"path must not exist or be an empty directory: {directory} is a file")
        marker = os.path.join(directory, INCOMPLETE_FILE)
        if os.path.isdir(directory):
            names = io.list_dir(directory)
            if names:
                raise ValueError(
                    f"path must not exist or be an empty directory: {directory}"
                    f" holds {sorted(names)[0]!r}"
                )
            io.make_private(directory)
            _write_marker(io, marker)
            io.sync_dir(directory)
        else:
            parent = os.path.dirname(directory)
            _make_dirs(io, parent)
            building = f"{directory}.incomplete-{secrets.token_hex(4)}"
            io.make_new_dir(building)
            _write_marker(io, os.path.join(building, INCOMPLETE_FILE))
            io.sync_dir(building)
            io.rename(building, directory)  # fails if something took the name
            io.sync_dir(parent)
        try:
            lock = io.lock(os.path.join(directory, fmt.LOCK_FILE))
        except BlockingIOError as exc:
            raise _holder.locked_error(io, directory) from exc
        log = cls(io, directory, lock, MAX_RECORD_LIMIT)
        try:
            log._write_note()
            size = log._write_snapshot_file(lsn, state)
            log._write_atomically(fmt.FORMAT_FILE, fmt.encode_format_file())  # this build's
            io.remove(marker)
            io.sync_dir(directory)
        finally:
            log.close()
        return size

    # --- writing ---------------------------------------------------------------------

    def _write_atomically(self, name: str, data: bytes) -> None:
        """temp file -> fsync -> rename -> fsync directory. Raises OSError.

        If a step before the rename fails, the temp file is removed (best
        effort), so a retry can create it again.
        """
        self._write_file_atomically(name, lambda handle: self.io.write(handle, data))

    def _write_file_atomically(self, name: str, fill: Callable[[Handle], object]) -> None:
        """`_write_atomically` with the temp file's content written by `fill`."""
        io = self.io
        temp = self._path(name + _TMP)
        handle = _create_anew(io, temp)
        try:
            try:
                fill(handle)
                io.sync(handle)
            finally:
                io.close(handle)
            io.rename(temp, self._path(name))
        except BaseException:
            # Any failure, encoding included: a retry must be able to create it.
            self._discard(temp)
            raise
        io.sync_dir(self.directory)

    def _write_snapshot_file(self, lsn: int, state: StoreState) -> int:
        """Write the snapshot of `state` at `lsn` atomically, its body chunk by
        chunk (the header, which holds the body's length and CRC, last, at
        offset 0); return the file's size. Raises OSError."""
        io = self.io
        size = 0

        def fill(handle: Handle) -> None:
            # Chunks go out in writes of about CHUNK_BYTES; the first one
            # starts with room for the header.
            nonlocal size
            pending = [bytes(fmt.SNAPSHOT_HEADER)]
            buffered = length = crc = unsynced = 0
            for chunk in fmt.snapshot_chunks(state):
                crc = zlib.crc32(chunk, crc)
                length += len(chunk)
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= fmt.CHUNK_BYTES:
                    io.write(handle, b"".join(pending))
                    unsynced += buffered
                    pending, buffered = [], 0
                if unsynced >= SNAPSHOT_SYNC_BYTES:
                    # Flush as we go: one sync of the whole snapshot at the
                    # end would hold the disk (and the log's fsyncs behind
                    # it) for as long as it takes to write it all.
                    io.sync(handle)
                    unsynced = 0
            if pending:
                io.write(handle, b"".join(pending))
            io.write_at(handle, 0, fmt.snapshot_header(lsn, length, crc, fmt.FORMAT_VERSION))
            size = fmt.SNAPSHOT_HEADER + length

        self._write_file_atomically(fmt.snapshot_name(lsn), fill)
        return size

    def _discard(self, path: str) -> None:
        """Remove a file a failed step left behind; failures are only logged."""
        try:
            self.io.remove(path)
        except FileNotFoundError:
            pass
        except OSError:
            logger.exception("cannot remove %s after a failed write", path)

    @property
    def outdated(self) -> bool:
        """True while the store is of an older format than this build writes
        (until the first write or checkpoint converts it)."""
        return self._convert_at is not None

    def _convert(self) -> None:
        """Move an older store to this build's format before its first write:
        FORMAT rewritten atomically, then a segment of this build's version
        at the next LSN (docs/format.md section 9). Safe to retry after a
        failure; every crash point leaves a store that opens with every
        acknowledged record.

        Raises:
            WriteFailed: a step failed (the store still reads as before).
        """
        assert self._convert_at is not None
        if self.format_version < fmt.FORMAT_VERSION:
            try:
                self._write_atomically(fmt.FORMAT_FILE, fmt.encode_format_file())
            except OSError as exc:
                raise WriteFailed(
                    f"cannot convert {self.directory} to format version {fmt.FORMAT_VERSION}:"
                    f" writing {fmt.FORMAT_FILE} failed: {exc}"
                ) from exc
            logger.info(
                "%s: converted from format version %d to %d",
                self.directory,
                self.format_version,
                fmt.FORMAT_VERSION,
            )
            self.format_version = fmt.FORMAT_VERSION
        self._start_segment(self._convert_at)
        self._convert_at = None

    def _start_segment(self, first_lsn: int) -> None:
        """Create the segment new records go to, replacing a record-less
        segment of an older version that has its name (`_stale_empty`)."""
        if self._stale_empty is not None:
            self._remove_durably(self._stale_empty)
            self._stale_empty = None
        self._create_segment(first_lsn)

    def _create_segment(self, first_lsn: int) -> None:
        """Create, fill and sync a new segment, then sync the directory.

        On an I/O failure the new file is removed again (best effort) and
        `WriteFailed` is raised: the current segment stays in use.
        """
        io = self.io
        path = self._path(fmt.segment_name(first_lsn))
        header = fmt.encode_segment_header(first_lsn)
        try:
            handle = _create_anew(io, path)
        except OSError as exc:
            raise WriteFailed(f"cannot create log segment {path}: {exc}") from exc
        try:
            io.write_at(handle, 0, header + bytes(PREALLOCATE - len(header)))
            io.sync(handle)
            io.sync_dir(self.directory)
        except BaseException as exc:
            try:
                io.close(handle)
            except OSError:
                logger.exception("cannot close %s", path)
            if not isinstance(exc, OSError):
                raise
            self._discard(path)
            try:
                io.sync_dir(self.directory)
            except OSError:
                logger.exception("cannot sync %s after removing %s", self.directory, path)
            raise WriteFailed(f"cannot create log segment {path}: {exc}") from exc
        self._segment = handle
        self.segment_first_lsn = first_lsn
        self._segment_size = len(header)
        self._allocated = PREALLOCATE

    def encode(self, effects: tuple[Effect, ...]) -> bytes:
        """The log record payload of one command's effects.

        The one place that decides the `max_record_bytes` refusal: the limit
        recovery enforces is the limit a write is held to.

        Raises:
            WriteFailed: the record would exceed `max_record`.
        """
        payload = fmt.encode_payload(effects)
        if len(payload) > self.max_record:
            raise WriteFailed(
                f"the command's log record would be {len(payload)} bytes,"
                f" over the store's max_record_bytes={self.max_record}"
            )
        return payload

    def append(self, data: bytes) -> None:
        """Write framed records at the end of the log and make them durable.

        On failure the failed records are zeroed or cut off (best effort, so a
        reopen in this boot cannot see them) and `OSError` propagates: the
        caller must poison the store. Never retried. The first append to an
        older store converts it first (`_convert`; `WriteFailed` if that
        fails, nothing appended).
        """
        if self._convert_at is not None:
            self._convert()
        segment = self._segment
        if segment is None:
            raise OSError("the log is closed")
        start, end = self._segment_size, self._segment_size + len(data)
        try:
            if end > self._allocated:
                # Grow the zero-filled tail first: this sync also makes the new
                # size durable, and the appends after it overwrite allocated
                # blocks, which fdatasync makes durable without a metadata commit.
                grown = max(end, self._allocated + PREALLOCATE)
                self.io.write_at(segment, self._allocated, bytes(grown - self._allocated))
                self._allocated = grown
            self.io.write_at(segment, start, data)
            self.io.sync(segment)
        except OSError:
            self._undo_append(segment, start, len(data))
            raise
        self._segment_size = end

    def _undo_append(self, segment: Handle, start: int, length: int) -> None:
        """Best effort after a failed append: make the failed records unreadable
        (zero them; if that fails too, cut the file at `start`), so a reopen in
        this boot does not replay a write whose callers got `WriteFailed`."""
        try:
            self.io.write_at(segment, start, bytes(length))
            return
        except OSError:
            logger.exception("cannot zero %s back after a failed append", segment.path)
        try:
            self.io.truncate(segment.path, start)
            self._allocated = start
        except OSError:
            logger.exception("cannot cut %s back after a failed append", segment.path)

    def rotate(self, first_lsn: int) -> None:
        """Start a new segment whose first record will be `first_lsn`.

        Does nothing if the current segment holds no record yet. Raises
        `WriteFailed` if the new segment cannot be created (the current one
        stays in use). In an older store (nothing appended yet), converts it
        instead (`_convert`): its new segment starts at `first_lsn`.
        """
        if self._convert_at is not None:
            assert first_lsn == self._convert_at, (first_lsn, self._convert_at)
            self._convert()
            return
        if self._segment is not None and self._segment_size <= fmt.SEGMENT_HEADER:
            return
        old = self._segment
        self._create_segment(first_lsn)
        if old is not None:
            try:
                self.io.close(old)
            except OSError:
                logger.exception("cannot close %s", old.path)

    def write_snapshot(self, lsn: int, state: StoreState, keep_from_lsn: int) -> int:
        """The checkpoint protocol; return the snapshot's size in bytes.

        Writes `state` (as of `lsn`) as a snapshot, then deletes the segments
        that start before `keep_from_lsn` (the current segment's first LSN,
        which must be `lsn + 1` or less) and every older snapshot. The
        snapshot is of this build's version; after a conversion, every older
        segment starts before `keep_from_lsn` and every older snapshot is at
        or below `lsn` (one at `lsn` is replaced by the rename), so afterwards
        the directory holds only files of this build's version.

        Raises:
            OSError: a step failed; everything acknowledged is still in the
                log, and the store remains usable.
        """
        size = self._write_snapshot_file(lsn, state)
        covered = []
        for name in self.io.list_dir(self.directory):
            seg = fmt.parse_name(name, *fmt.SEGMENT_NAME)
            snap = fmt.parse_name(name, *fmt.SNAPSHOT_NAME)
            if (seg is not None and seg < keep_from_lsn) or (snap is not None and snap < lsn):
                covered.append(name)
        if not covered:
            return size
        # Removed only between two marks (Rule 4). Once the marks fill
        # NOTE_LIMIT bytes the note is written anew (a new nonce: a reader
        # that saw the old one sees a change), so LOCK stays one page. If a
        # mark cannot be written (a full disk), the note goes instead, and
        # with it the live view; only if that fails too do the files stay
        # (the next checkpoint removes them).
        if not self._removing:
            if (
                self._note_end is not None
                and self._note_holder is not None
                and self._note_end + 2 * len(_holder.MARK) > _holder.NOTE_LIMIT
            ):
                self._write_note(replace(self._note_holder, nonce=secrets.token_hex(8)))
            if self._note_end is not None and not self._mark() and not self._drop_note():
                return size
            self._removing = self._note_end is not None
        try:
            for name in covered:
                self.io.remove(self._path(name))
        finally:
            if self._removing and (self._mark() or self._drop_note()):
                self._removing = False
        self.io.sync_dir(self.directory)
        return size

    def close(self) -> None:
        """Close the segment and release the lock. Errors are logged, not raised."""
        if self._segment is not None:
            try:
                self.io.close(self._segment)
            except OSError:
                logger.exception("cannot close %s", self._segment.path)
            self._segment = None
        if self._lock is not None:
            # Rule 4: the note goes with the lock (`unlock` empties LOCK);
            # after a crash it stays, naming a process that is not running.
            try:
                self.io.unlock(self._lock)
            except OSError:
                logger.exception("cannot release the lock of %s cleanly", self.directory)
            self._lock = None


#: A snapshot being written is synced every this many bytes (and at the end).
SNAPSHOT_SYNC_BYTES: Final = 4 << 20


class _FileReader:
    """A `_format.Reader` of one file, read a window at a time
    (`FileIO.read_at`, `WINDOW` bytes or the piece asked for if larger), so
    what reading holds is one window, not the file, and a scan of small
    records makes one read per window. A read that fails raises
    `ReadFailed` naming the file."""

    WINDOW: Final = 4 << 20

    def __init__(self, io: FileIO, path: str) -> None:
        self._io = io
        self._path = path
        self._handle = io.open_read(path)
        try:
            self._size = io.size(path)
        except BaseException:
            io.close(self._handle)
            raise
        self._start = 0
        self._window = b""

    def size(self) -> int:
        return self._size

    def read_at(self, offset: int, length: int) -> bytes:
        start = offset - self._start
        if start >= 0 and start + length <= len(self._window):
            return self._window[start : start + length]
        try:
            if length >= self.WINDOW:
                return self._io.read_at(self._handle, offset, length)
            self._window = b""  # not two windows at once
            self._window = self._io.read_at(self._handle, offset, self.WINDOW)
        except OSError as exc:
            raise ReadFailed(f"cannot read {self._path}: {exc}") from exc
        self._start = offset
        return self._window[:length]

    def __enter__(self) -> _FileReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A read-only descriptor: close(2) releases it even when it reports
        # an error, and what was read stands. Logged, not raised (a bare
        # OSError escaped `open_store` here).
        try:
            self._io.close(self._handle)
        except OSError:
            logger.exception("cannot close %s after reading it", self._path)


def _write_marker(io: FileIO, marker: str) -> None:
    """Create the INCOMPLETE marker `marker` and sync it (not its directory)."""
    handle = io.create(marker)
    try:
        io.write(handle, b"a backup or import of a meerkat_actor store that did not finish\n")
        io.sync(handle)
    finally:
        io.close(handle)


def _create_anew(io: FileIO, path: str) -> Handle:
    """`io.create(path)`, replacing a file of that name an earlier failed
    attempt left: a temp file, or a record-less segment of a failed rotation
    to the same LSN, whose removal (`_discard`) failed too. Without this, a
    checkpoint retried before the next write (same LSN, same names) failed
    with EEXIST until the store was reopened. Both are this store's own
    leftovers: the directory is locked, a segment takes records only once
    it is current, and a rotation's LSN is past every record."""
    try:
        return io.create(path)
    except FileExistsError:
        logger.warning("replacing %s, left by an earlier failed write", path)
        io.remove(path)
        return io.create(path)


def check_can_be_directory(directory: str) -> None:
    """Refuse a store directory path that names something other than a
    directory (a regular file, a FIFO, a dangling symbolic link), or that
    goes through one, before anything is created. Reads only.

    Raises:
        NotAStore: the message names the path and what it is.
        OSError: a path cannot be looked at (permissions, say).
    """
    current = directory
    while True:
        try:
            mode: int | None = os.stat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            # Nothing there (yet), or a path through a file: look further up.
            mode = None
        if mode is not None or os.path.lexists(current):
            if mode is not None and stat.S_ISDIR(mode):
                return
            kind = "a dangling symbolic link" if mode is None else not_regular(mode)
            kind = "a file" if kind is None else kind
            if current == directory:
                raise NotAStore(f"{directory} is {kind}, not a store directory")
            raise NotAStore(
                f"{directory} cannot be a store directory: {current} is {kind}, not a directory"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent


def _make_dirs(io: FileIO, directory: str) -> None:
    """Create `directory` and its missing parents (0700), and make each new
    directory entry durable (an fsync of the parent of each one created)."""
    created = []
    current = directory
    while not os.path.isdir(current):
        created.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    io.make_dir(directory)
    for new in reversed(created):
        io.sync_dir(os.path.dirname(new))


def _check_segment_start(path: str, header_lsn: int, first_lsn: int, replay: _Replay) -> None:
    """The segment must start where the name says and where the log left off."""
    try:
        fmt.check_segment_name(header_lsn, first_lsn)
    except fmt.FormatError as exc:
        raise _corrupt(path, exc.offset, str(exc)) from exc
    if replay.expected is None:
        if first_lsn > replay.snapshot_lsn + 1:
            raise _corrupt(
                path,
                0,
                f"log starts at LSN {first_lsn}, but the snapshot ends at"
                f" {replay.snapshot_lsn}: records in between are missing",
            )
    elif first_lsn != replay.expected:
        raise _corrupt(path, 0, f"segment starts at LSN {first_lsn}, expected {replay.expected}")


def _check_format_file(io: FileIO, directory: str) -> int:
    """The FORMAT file must be valid and name a version this build reads;
    return that version. Raises OSError if it cannot be read."""
    path = os.path.join(directory, fmt.FORMAT_FILE)
    data = io.read(path)
    try:
        version = fmt.decode_format_file(data)
    except fmt.FormatError as exc:
        raise _corrupt(path, exc.offset, str(exc)) from exc
    if version > fmt.FORMAT_VERSION:
        raise UnsupportedFormat(
            f"{directory} was written by format version {version};"
            f" this build reads version {fmt.FORMAT_VERSION} and older"
        )
    return version


def _is_own_temp(name: str) -> bool:
    """A temp file this module's atomic writes create (FORMAT, snapshots)."""
    if not name.endswith(_TMP):
        return False
    base = name[: -len(_TMP)]
    return base == fmt.FORMAT_FILE or fmt.parse_name(base, *fmt.SNAPSHOT_NAME) is not None


def check_entries(io: FileIO, directory: str, names: list[str]) -> None:
    """Every entry with a name the format gives a file (FORMAT, LOCK, a
    segment, a snapshot, a temp file) must be a regular file (or a symlink
    to one), whether recovery would read it or not: docs/format.md section 1.
    The one rule `open_store` and the read-only tools (`verify`, `inspect`,
    `dump`) both apply before anything else. Opens nothing, so a FIFO
    cannot hang it.

    Raises:
        CorruptStore: an entry is not a regular file; names it.
        OSError: an entry cannot be looked at.
    """
    for name in sorted(names):
        named = (
            name in (fmt.FORMAT_FILE, fmt.LOCK_FILE)
            or _is_own_temp(name)
            or fmt.parse_name(name, *fmt.SEGMENT_NAME) is not None
            or fmt.parse_name(name, *fmt.SNAPSHOT_NAME) is not None
        )
        if not named:
            continue
        path = os.path.join(directory, name)
        kind = io.file_kind(path)
        if kind is not None:
            error = CorruptStore(
                f"{path} is {kind}, not a regular file: the format expects a file by that name"
            )
            error.path = path
            raise error


def _check_not_foreign(directory: str, names: list[str]) -> None:
    """Refuse a directory holding files but no FORMAT: it is not a store."""
    if fmt.FORMAT_FILE in names:
        return
    if INCOMPLETE_FILE in names:
        raise ReadFailed(
            f"{directory} is not a meerkat_actor store: it holds {INCOMPLETE_FILE}, an"
            " incomplete backup or import (it did not finish; delete it and make it again)"
        )
    strangers = sorted(n for n in names if n != fmt.LOCK_FILE and not _is_own_temp(n))
    if strangers:
        raise ReadFailed(
            f"{directory} is not a meerkat_actor store (it holds {strangers[0]!r}"
            f" and no {fmt.FORMAT_FILE} file)"
        )
