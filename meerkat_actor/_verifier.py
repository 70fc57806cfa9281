"""`verify`: a full read-only check of every file of a store no process has
open.

Rule 1: it changes nothing and holds the store's shared lock while it reads,
as `_dry_run.py` does (it runs that module's read-only recovery).

Rule 2: it judges bytes only through `_format`'s scanner (`scan_segment`,
`read_snapshot`, the header checks), the one reader recovery uses too. So its
verdict agrees with `open_store` by construction: it reports "corrupt"
exactly when the recovery it runs raises, and a torn tail that opening would
cut is the very `Damage` event (same file, same offset) that recovery cut.

Rule 3: every function here blocks on the disk; every file access goes
through `_fs.FileIO`, and every file is read a window at a time
(`_durable._FileReader`, as recovery reads): verify's memory is bounded by
the largest record or snapshot chunk, not by the largest file.

Theory of operation. `verify_store` runs the read-only recovery (its notes
are what opening repairs; its `CorruptStore`, if any, is the verdict), then
scans every snapshot and every segment on its own, with rule 7 checked for
every record (recovery checks it only above the snapshot), and the log's
continuity across segments. A scan finding is "damage" unless recovery
already judged it: the torn tail it cuts (a note), a file it removes (a
note), or the damage it raises on (reported once, as "corrupt"). One rule is
verify's own: a torn-looking record the snapshot holds was synced, so it is
damage, not a torn write (opening still cuts it; the snapshot has it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from . import _core
from . import _format as fmt
from ._codec import CodecError, from_plain
from ._core import Effect
from ._dry_run import (
    Problem,
    _DryRunIO,
    check_store_directory,
    locked,
    recover,
    store_format_version,
)
from ._durable import DEFAULT_MAX_RECORD, _FileReader
from ._errors import CorruptStore, ReadFailed
from ._fs import FileIO
from ._packed import CorruptValue, input_key, loads_strict, receipt_key
from ._types import RunBoundaryReceipt, StoredInputState

__all__ = ["VerifyReport", "verify_store"]


@dataclass
class VerifyReport:
    """What `verify_store` found: the verdict, what it checked, the problems."""

    directory: str
    result: Literal["clean", "damaged", "corrupt"] = "clean"
    snapshots: int = 0
    segments: int = 0
    records: int = 0
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class _Finding:
    """A scan's problem, with the scanner's event when it is a segment's damage."""

    problem: Problem
    damage: fmt.Damage | None = None


def verify_store(path: str, max_record: int = DEFAULT_MAX_RECORD) -> VerifyReport:
    """Check every file of the store at `path`, changing nothing.

    Scans every snapshot and every record of every segment (checksums, LSN
    continuity, decoding and validation of every value), then runs the
    recovery `open_store` would run. `result` is "corrupt" if that recovery
    fails, "damaged" if the scan found damage recovery works around, else
    "clean" (notes, crash artifacts recovery repairs, allowed).

    Args:
        path: the store directory.
        max_record: the store's `max_record_bytes`.

    Returns:
        The report: notes first, then damage, then what opening raises.

    Raises:
        NotAStore, StoreLocked, UnsupportedFormat, ReadFailed: as `read_store`.
        (A damaged FORMAT file is reported, not raised.)
    """
    io = _DryRunIO()
    try:
        directory = check_store_directory(path, io)
    except CorruptStore as exc:
        report = VerifyReport(os.path.realpath(path), "corrupt")
        report.problems.append(Problem("corrupt", exc.path or "", exc.offset, str(exc)))
        return report
    report = VerifyReport(directory)
    with locked(io, directory):
        recovery_error: CorruptStore | None = None
        notes: list[Problem] = []
        snapshot_lsn = 0
        try:
            view = recover(io, directory, max_record)
            notes, snapshot_lsn = view.notes, view.snapshot_lsn
        except CorruptStore as exc:
            recovery_error = exc
        found = _scan(io, directory, max_record, report)
    cut = set(io.truncated)
    for finding in found:
        problem, damage = finding.problem, finding.damage
        if damage is not None and (problem.file, damage.offset) in cut:
            # Recovery's scan stopped at this same event and cuts the file here.
            if damage.expected > snapshot_lsn:
                continue  # the torn tail, which the note reports
            # The snapshot holds this record: it was synced, so this is no
            # torn write but damage (opening cuts it; the snapshot has it).
            notes = [n for n in notes if n.file != problem.file]
        if problem.file in io.removed:
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


def _reader(io: FileIO, path: str) -> _FileReader:
    """The file read a window at a time (as recovery reads it), so what
    verify holds is bounded by the largest record or snapshot chunk, not
    by the largest file. Raises ReadFailed naming the file."""
    try:
        return _FileReader(io, path)
    except OSError as exc:
        raise ReadFailed(f"cannot read {path}: {exc}") from exc


def _unreadable(path: str, error: ReadFailed) -> Problem:
    """A file the scan cannot read. Had recovery needed it, recovery would
    have failed first (`ReadFailed`, as `open_store` does): this is a file
    opening never reads (an older snapshot, a segment the snapshot covers),
    so the store opens, and verify reports the file as damage."""
    return Problem("damage", path, None, f"{error} (opening the store does not read it)")


def _scan(io: FileIO, directory: str, max_record: int, report: VerifyReport) -> list[_Finding]:
    """Check every snapshot and segment file on its own, then the log's
    continuity; every problem is "damage" (the caller refines)."""
    found: list[_Finding] = []
    version = store_format_version(io, directory)
    names = sorted(io.list_dir(directory))
    newest_snapshot = 0
    for name in names:
        lsn = fmt.parse_name(name, *fmt.SNAPSHOT_NAME)
        if lsn is None:
            continue
        report.snapshots += 1
        path = os.path.join(directory, name)
        try:
            with _reader(io, path) as reader:
                state = fmt.read_snapshot(reader, lsn, version)
        except ReadFailed as exc:
            found.append(_Finding(_unreadable(path, exc)))
            continue
        except fmt.FormatError as exc:
            found.append(_Finding(Problem("damage", path, exc.offset, f"snapshot: {exc}")))
            continue
        for problem in _packed_problems(_core.state_effects(state)):
            found.append(_Finding(Problem("damage", path, fmt.SNAPSHOT_HEADER, problem)))
        newest_snapshot = max(newest_snapshot, lsn)
    segments = fmt.numbered(names, fmt.SEGMENT_NAME)
    previous_end: int | None = None
    for first_lsn, name in segments:
        report.segments += 1
        path = os.path.join(directory, name)
        try:
            with _reader(io, path) as reader:
                last = _scan_segment(
                    reader,
                    path,
                    first_lsn,
                    store_version=version,
                    max_record=max_record,
                    report=report,
                    found=found,
                )
        except ReadFailed as exc:
            found.append(_Finding(_unreadable(path, exc)))
            continue
        if last is None:
            continue  # no records (or a damaged header, already reported)
        message = None
        if previous_end is None:
            if first_lsn > newest_snapshot + 1:
                message = (
                    f"the log starts at LSN {first_lsn}, but the newest valid snapshot"
                    f" ends at {newest_snapshot}: records in between are missing"
                )
        elif first_lsn <= previous_end:
            message = (
                f"segment starts at LSN {first_lsn}, but the previous one ends at"
                f" {previous_end}: records {first_lsn}..{previous_end} are there twice"
            )
        elif first_lsn != previous_end + 1 and first_lsn - 1 > newest_snapshot:
            message = (
                f"segment starts at LSN {first_lsn}, but the previous one ends at {previous_end}"
            )
        if message is not None:
            found.append(_Finding(Problem("damage", path, 0, message)))
        previous_end = last
    return found


def _packed_problems(effects: Iterable[Effect]) -> Iterator[str]:
    """Decode every packed value of `effects` with the codec (not the fast
    path reads use) and check its key: docs/format.md section 5."""
    for effect in effects:
        if isinstance(effect, _core.PutInputStates):
            for packed in effect.states:
                where = f"runtime {str(effect.runtime_id)!r}: input state {_hex(packed.key)}"
                try:
                    stored = from_plain(StoredInputState, loads_strict(packed.blob))
                except (CodecError, CorruptValue) as exc:
                    yield f"{where} does not decode: {exc}"
                    continue
                if input_key(stored.state.input_id) != packed.key:
                    yield f"{where} holds input id {stored.state.input_id}"
        elif isinstance(effect, _core.InsertReceipt):
            blob, key = effect.receipt.blob, effect.receipt.key
            where = f"runtime {str(effect.runtime_id)!r}: receipt {_hex(key)}"
            try:
                receipt = from_plain(RunBoundaryReceipt, loads_strict(blob))
            except (CodecError, CorruptValue) as exc:
                yield f"{where} does not decode: {exc}"
                continue
            if receipt_key(receipt.run_id, receipt.sequence) != key:
                yield f"{where} holds run {receipt.run_id} sequence {receipt.sequence}"


def _hex(key: bytes) -> str:
    return key.hex()


def _scan_segment(
    reader: fmt.Reader,
    path: str,
    first_lsn: int,
    *,
    store_version: int,
    max_record: int,
    report: VerifyReport,
    found: list[_Finding],
) -> int | None:
    """Check one segment's header (rules H1-H4) and records (rules 1-8, rule 7
    for every record, by the header's version); return its last record's LSN,
    None if it has none."""
    try:
        header = fmt.segment_header(reader, store_version)
        fmt.check_segment_name(header.first_lsn, first_lsn)
    except fmt.FormatError as exc:
        found.append(_Finding(Problem("damage", path, exc.offset, f"segment header: {exc}")))
        return None
    last = None
    for event in fmt.scan_segment(reader, first_lsn, max_record, 0, version=header.version):
        if isinstance(event, fmt.Record):
            report.records += 1
            last = event.frame.lsn
            for problem in _packed_problems(event.effects or ()):
                found.append(_Finding(Problem("damage", path, event.frame.offset, problem)))
        elif isinstance(event, fmt.Damage):
            unchecked = reader.size() - event.offset
            message = (
                f"{event.error} (the {unchecked} bytes from offset {event.offset} on are not"
                " checked)"
            )
            found.append(_Finding(Problem("damage", path, event.error.offset, message), event))
    return last
