"""A store of format version 1 under this build (format version 3):
reading it, converting it (straight to version 3), and every crash point of
the conversion (docs/format.md section 9, "Converting a version 1 store").

The fixture `tests/fixtures/store-v1/` was written by the version 1 writer
(commit 1403c41; `tests/fixtures/make_store_v1.py` says how): a version 1
snapshot at LSN 14 and a version 1 segment holding LSNs 15-23 after it.
`tests/fixtures/store-v1.json` is what it holds, read back through the
public API when it was made. Each test works on a copy under `tmp_path`.

Expected contents are that JSON, changed by hand here for each write of the
retention methods (SPEC §3b) a test makes: an independent statement, not the
store's own reading. The machinery is shared with test_format_v2.py
(`_old_stores.py`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _old_stores import (
    ALPHA,
    GONE,
    SWEEP,
    V1,
    StepIO,
    assert_consistent,
    content,
    crashed_open,
    format_file,
    read_all,
    sweep_run,
    versions,
)

import meerkat_actor as ma
from meerkat_actor import _core
from meerkat_actor import _format as fmt
from meerkat_actor.__main__ import main
from meerkat_actor._dry_run import read_store
from meerkat_actor._sqlite_copy import export_sqlite, import_sqlite, read_sqlite, same_content
from meerkat_actor._verifier import verify_store

CONTENT: dict[str, Any] = V1.content
FIXTURE = V1.path
SNAPSHOT_LSN, LAST_LSN = V1.snapshot_lsn, V1.last_lsn  # 14, 23
V1_SNAPSHOT = V1.snapshot
V1_SEGMENT = V1.segment

RETIRE_ALPHA = V1.retirable("agent-alpha")
RETIRE_BETA = V1.retirable("agent-beta")
expected = V1.expected
WRITES = V1.writes
purge, retire = WRITES["purge"], WRITES["retire"]


def copy_fixture(tmp_path: Path) -> Path:
    return V1.copy(tmp_path)


# --- reading a version 1 store ----------------------------------------------------------------


async def test_the_fixture_is_a_version_1_store_with_a_log_after_its_snapshot():
    assert versions(FIXTURE) == {"FORMAT": 1, V1_SEGMENT: 1, V1_SNAPSHOT: 1}
    view = read_store(str(FIXTURE))
    assert (view.format_version, view.snapshot_lsn, view.last_lsn) == (1, SNAPSHOT_LSN, LAST_LSN)


async def test_the_fixture_opens_and_reads_back_exactly_and_stays_version_1(tmp_path):
    path = copy_fixture(tmp_path)
    before = {name: (path / name).read_bytes() for name in os.listdir(path)}
    assert await read_all(path) == expected()
    # Opening and reading wrote nothing: no conversion, no new segment.
    assert {name: (path / name).read_bytes() for name in os.listdir(path)} == before
    assert versions(path)["FORMAT"] == 1


async def test_the_offline_readers_read_the_fixture(tmp_path):
    path = copy_fixture(tmp_path)
    report = verify_store(str(path))
    assert (report.result, report.problems) == ("clean", [])
    assert (report.snapshots, report.segments, report.records) == (1, 1, LAST_LSN - SNAPSHOT_LSN)
    view = read_store(str(path))
    # export-sqlite and back (import-sqlite writes a version 3 store).
    exported = export_sqlite(view.state, str(tmp_path / "copy.sqlite3"))
    assert same_content(exported, view.state)
    assert same_content(read_sqlite(str(tmp_path / "copy.sqlite3")), view.state)
    imported = import_sqlite(exported, str(tmp_path / "imported"))
    assert imported.format_version == 3
    assert versions(tmp_path / "imported") == {"FORMAT": 3, fmt.snapshot_name(0): 3}
    assert await read_all(tmp_path / "imported") == expected()
    assert versions(path)["FORMAT"] == 1  # the source was only read


async def test_a_backup_of_a_version_1_store_is_version_3(tmp_path):
    path = copy_fixture(tmp_path)

    async def body(store: Any) -> None:
        await store.backup(tmp_path / "backup")

    await crashed_open(path, body)
    assert versions(tmp_path / "backup") == {"FORMAT": 3, fmt.snapshot_name(LAST_LSN): 3}
    assert versions(path)["FORMAT"] == 1
    assert await read_all(tmp_path / "backup") == expected()
    assert verify_store(str(tmp_path / "backup")).result == "clean"


def test_the_command_line_reads_the_fixture_and_its_checkpoint_converts_it(tmp_path, capsys):
    path = copy_fixture(tmp_path)
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == 1
    assert main(["verify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "clean"
    assert versions(path)["FORMAT"] == 1
    assert main(["checkpoint", str(path)]) == 0
    capsys.readouterr()
    assert set(versions(path).values()) == {3}
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == 3


# --- converting ------------------------------------------------------------------------------


async def test_the_first_write_converts_then_a_checkpoint_leaves_only_version_3(tmp_path):
    path = copy_fixture(tmp_path)
    v1_segment = (path / V1_SEGMENT).read_bytes()
    writes = ["purge", "retire", "clear", "delete_ops"]

    async def body(store: Any) -> None:
        for name in writes:
            await WRITES[name](store)
        # Commands that change nothing write no record.
        await store.clear_session_snapshot(ALPHA)
        await retire(store)
        assert await content(store) == expected(*writes)

    await crashed_open(path, body)
    # FORMAT 3; the version 1 files untouched; the new records in a new
    # version 3 segment at LSN 24 (never appended to the version 1 one).
    new_segment = fmt.segment_name(LAST_LSN + 1)
    assert versions(path) == {"FORMAT": 3, V1_SEGMENT: 1, new_segment: 3, V1_SNAPSHOT: 1}
    assert (path / V1_SEGMENT).read_bytes() == v1_segment
    view = read_store(str(path))
    assert (view.format_version, view.last_lsn) == (3, LAST_LSN + len(writes) + 1)
    # retire is two records (ALPHA's, BETA's); the no-op clear is none.
    report = verify_store(str(path))
    assert (report.result, report.problems, report.segments) == ("clean", [], 2)
    assert await read_all(path) == expected(*writes)

    async def checkpoint(store: Any) -> None:
        await store.checkpoint()

    await crashed_open(path, checkpoint)
    last = LAST_LSN + len(writes) + 1
    assert versions(path) == {
        "FORMAT": 3,
        fmt.segment_name(last + 1): 3,
        fmt.snapshot_name(last): 3,
    }
    assert verify_store(str(path)).result == "clean"
    assert await read_all(path) == expected(*writes)


async def test_a_checkpoint_converts_a_version_1_store_even_with_nothing_new(tmp_path):
    path = copy_fixture(tmp_path)

    async def checkpoint(store: Any) -> None:
        await store.checkpoint()
        await store.checkpoint()  # converted now: nothing to do

    await crashed_open(path, checkpoint)
    assert versions(path) == {
        "FORMAT": 3,
        fmt.segment_name(LAST_LSN + 1): 3,
        fmt.snapshot_name(LAST_LSN): 3,
    }
    assert await read_all(path) == expected()
    # A version 1 store whose snapshot holds everything (no segment at all):
    # the snapshot is rewritten as version 3 under its own name.
    only_snapshot = tmp_path / "only-snapshot"
    only_snapshot.mkdir(mode=0o700)
    state = read_store(str(FIXTURE)).state
    (only_snapshot / "FORMAT").write_bytes(format_file(1))
    (only_snapshot / fmt.snapshot_name(LAST_LSN)).write_bytes(
        fmt.encode_snapshot(LAST_LSN, state, version=1)
    )
    assert await read_all(only_snapshot) == expected()
    assert sorted(os.listdir(only_snapshot)) == ["FORMAT", "LOCK", fmt.snapshot_name(LAST_LSN)]
    await crashed_open(only_snapshot, checkpoint)
    assert versions(only_snapshot) == {
        "FORMAT": 3,
        fmt.segment_name(LAST_LSN + 1): 3,
        fmt.snapshot_name(LAST_LSN): 3,
    }
    assert await read_all(only_snapshot) == expected()


async def test_a_clean_close_after_writes_converts_and_checkpoints(tmp_path):
    path = copy_fixture(tmp_path)
    async with ma.open_store(path) as store:
        await purge(store)
    assert set(versions(path).values()) == {3}
    assert await read_all(path) == expected("purge")


async def test_a_record_less_version_1_segment_is_replaced_by_a_version_3_one(tmp_path):
    """A version 1 checkpoint leaves an empty segment at the snapshot's LSN + 1:
    the version 3 segment takes its name (the empty one is removed first)."""
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    state = read_store(str(FIXTURE)).state
    (path / "FORMAT").write_bytes(format_file(1))
    (path / fmt.snapshot_name(LAST_LSN)).write_bytes(
        fmt.encode_snapshot(LAST_LSN, state, version=1)
    )
    empty = path / fmt.segment_name(LAST_LSN + 1)
    empty.write_bytes(fmt.encode_segment_header(LAST_LSN + 1, 1) + bytes(1 << 20))
    assert verify_store(str(path)).result == "clean"
    await crashed_open(path, purge)
    assert versions(path) == {"FORMAT": 3, empty.name: 3, fmt.snapshot_name(LAST_LSN): 1}
    assert await read_all(path) == expected("purge")
    assert verify_store(str(path)).result == "clean"
    # A crash after FORMAT was rewritten, before the empty segment was
    # replaced: opening replaces it (a note for the read-only tools).
    (path / "FORMAT").write_bytes(format_file(3))
    empty.write_bytes(fmt.encode_segment_header(LAST_LSN + 1, 1) + bytes(1 << 20))
    (path / "LOCK").unlink()
    report = verify_store(str(path))
    assert report.result == "clean"
    assert [(p.severity, p.file) for p in report.problems] == [("note", str(empty))]
    assert await read_all(path) == expected()
    assert versions(path) == {"FORMAT": 3, empty.name: 3, fmt.snapshot_name(LAST_LSN): 1}
    await crashed_open(path, purge)
    assert await read_all(path) == expected("purge")


# --- what is refused -------------------------------------------------------------------------


async def test_a_store_whose_format_says_4_is_refused_untouched(tmp_path):
    path = copy_fixture(tmp_path)
    (path / "FORMAT").write_bytes(format_file(4))
    before = {name: (path / name).read_bytes() for name in os.listdir(path)}
    message = f"{path} was written by format version 4; this build reads version 3 and older"
    with pytest.raises(ma.UnsupportedFormat) as info:
        await read_all(path)
    assert str(info.value) == message
    with pytest.raises(ma.UnsupportedFormat):
        read_store(str(path))
    with pytest.raises(ma.UnsupportedFormat):
        verify_store(str(path))
    assert {name: (path / name).read_bytes() for name in os.listdir(path)} == before


def _end_of_records(path: Path, first_lsn: int, version: int) -> int:
    reader = fmt.BytesReader(path.read_bytes())
    *_, end = fmt.scan_segment(reader, first_lsn, 1 << 30, 0, version=version)
    assert isinstance(end, fmt.End)
    return end.offset


async def test_a_version_2_effect_in_a_version_1_segment_is_corrupt(tmp_path):
    path = copy_fixture(tmp_path)
    segment = path / V1_SEGMENT
    at = _end_of_records(segment, SNAPSHOT_LSN + 1, 1)
    record = fmt.encode_record(LAST_LSN + 1, (_core.RemoveRuntime(GONE),))
    data = bytearray(segment.read_bytes())
    data[at : at + len(record)] = record
    segment.write_bytes(bytes(data))
    message = (
        f"{segment} at byte offset {at + 24}: record payload: effect op 'remove_runtime' is"
        " format version 2, in a version 1 segment"
    )
    with pytest.raises(ma.CorruptStore) as info:
        await read_all(path)
    assert str(info.value) == message
    report = verify_store(str(path))
    assert report.result == "corrupt"
    assert [(p.file, p.offset) for p in report.problems] == [(str(segment), at + 24)]
    # The same record in a version 2 store's version 2 segment is fine.
    assert fmt.decode_effects(fmt.read_frame(record, 0, 1 << 30), version=2) == (
        _core.RemoveRuntime(GONE),
    )


@pytest.mark.parametrize("version", [2, 3])
async def test_a_newer_file_under_format_1_is_corrupt(tmp_path, version):
    """Conversion rewrites FORMAT before it writes any newer file, so a
    version 2 or 3 segment in a version 1 store is damage (rule H2)."""
    path = copy_fixture(tmp_path)
    # A newer header where the version 1 one was (records unchanged).
    segment = path / V1_SEGMENT
    data = segment.read_bytes()
    segment.write_bytes(fmt.encode_segment_header(SNAPSHOT_LSN + 1, version) + data[32:])
    with pytest.raises(
        ma.CorruptStore, match=rf"at byte offset 8: segment format version {version},"
    ):
        await read_all(path)
    if version == 2:
        # Version 1 records are version 2 records: under FORMAT 2, it reads.
        (path / "FORMAT").write_bytes(format_file(2))
        assert await read_all(path) == expected()


# --- crashes during the conversion ----------------------------------------------------------


async def test_every_crash_state_of_the_conversion_opens(tmp_path):
    """The states a crash (or power loss) can leave at each step of the
    conversion, built by hand: each opens with the fixture's content, and
    the next write and checkpoint leave only version 3 files."""
    v3_segment = fmt.segment_name(LAST_LSN + 1)
    header = fmt.encode_segment_header(LAST_LSN + 1)
    states: dict[str, Callable[[Path], None]] = {
        "FORMAT.tmp written, not renamed": lambda p: (p / "FORMAT.tmp").write_bytes(format_file(3)),
        "FORMAT.tmp torn": lambda p: (p / "FORMAT.tmp").write_bytes(format_file(3)[:5]),
        "FORMAT renamed, no new segment": lambda p: (p / "FORMAT").write_bytes(format_file(3)),
        "new segment created, empty": lambda p: (
            (p / "FORMAT").write_bytes(format_file(3)),
            (p / v3_segment).write_bytes(b""),
        ),
        "new segment's header torn": lambda p: (
            (p / "FORMAT").write_bytes(format_file(3)),
            (p / v3_segment).write_bytes(header[:20] + bytes((1 << 20) - 20)),
        ),
        "new segment whole, no record": lambda p: (
            (p / "FORMAT").write_bytes(format_file(3)),
            (p / v3_segment).write_bytes(header + bytes((1 << 20) - 32)),
        ),
    }
    for label, make in states.items():
        path = tmp_path / label.replace(" ", "-").replace(",", "").replace("'", "")
        shutil.copytree(FIXTURE, path)
        make(path)
        assert_consistent(path)
        assert verify_store(str(path)).result == "clean", label
        assert await read_all(path) == expected(), label
        assert_consistent(path)
        await crashed_open(path, purge)
        assert read_store(str(path)).format_version == 3, label
        assert await read_all(path) == expected("purge"), label
        assert versions(path)[V1_SEGMENT] == 1
        async with ma.open_store(path) as store:
            await store.checkpoint()
        assert set(versions(path).values()) == {3}, label
        assert await read_all(path) == expected("purge"), label
        assert verify_store(str(path)).result == "clean", label


async def _sweep_run(path: Path, io: StepIO) -> tuple[list[str], list[str]]:
    return await sweep_run(V1, path, io)


async def test_the_sweep_covers_the_conversion_steps(tmp_path):
    """Guard: the healthy run makes the conversion's calls in the documented
    order (FORMAT first, then the new segment, then the records; the
    checkpoint deletes the version 1 files last)."""
    io = StepIO()
    path = copy_fixture(tmp_path)
    assert await _sweep_run(path, io) == ([*SWEEP, "checkpoint"], [])
    calls = io.calls
    assert calls[:5] == [
        ("create", "FORMAT.tmp"),
        ("write", "FORMAT.tmp"),
        ("sync", "FORMAT.tmp"),
        ("rename", "FORMAT.tmp"),
        ("sync_dir", "store"),
    ]
    new = fmt.segment_name(LAST_LSN + 1)
    assert calls[5:9] == [
        ("create", new),
        ("write_at", new),
        ("sync", new),
        ("sync_dir", "store"),
    ]
    assert calls[9:11] == [("write_at", new), ("sync", new)]  # the first record
    removed = [name for method, name in calls if method == "remove"]
    assert sorted(removed) == sorted([V1_SEGMENT, V1_SNAPSHOT, new])
    assert set(versions(path).values()) == {3}


@pytest.mark.parametrize("mode", ["stop", "fail"])
async def test_a_crash_or_failure_at_any_step_of_the_conversion_loses_nothing(tmp_path, mode):
    healthy = StepIO()
    await _sweep_run(copy_fixture(tmp_path / "healthy"), healthy)
    for at in range(len(healthy.calls)):
        path = copy_fixture(tmp_path / f"{mode}-{at}")
        io = StepIO(at, mode)
        acked, failed = await _sweep_run(path, io)
        step = f"{mode} at {at}: {healthy.calls[at]}"
        assert_consistent(path)
        got = await read_all(path)
        present = [name for name in acked if name != "checkpoint"]
        if mode == "stop":
            # The write in flight when the process died may be there or not.
            in_flight = [name for name in SWEEP if name not in acked][:1]
            if got != expected(*present):
                present += in_flight
        # A write that raised (mode "fail") left no effect.
        assert got == expected(*present), step
        assert not set(failed) & set(present), step
        assert verify_store(str(path)).result == "clean", step
        # The directory goes on working: the rest of the writes, a checkpoint,
        # and then nothing but version 3 files.
        async with ma.open_store(path) as store:
            for name in ("clear", "delete_ops"):
                await WRITES[name](store)
            await store.checkpoint()
        assert set(versions(path).values()) == {3}, step
        assert await read_all(path) == expected(*present, "clear", "delete_ops"), step
