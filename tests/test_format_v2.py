"""A store of format version 2 under this build (format version 3):
reading it, converting it, and every crash point of the conversion
(docs/format.md section 9).

The fixture `tests/fixtures/store-v2/` was written by the version 2 writer
(commit b513eaf; `tests/fixtures/make_store_v2.py` says how): a version 2
snapshot at LSN 20 and a version 2 segment holding LSNs 21-35 after it,
whose records hold every op of version 2 (inputs and receipts in their
version 2 shape, a retire, and the purge of `agent-purged`).
`tests/fixtures/store-v2.json` is what it holds, read back through the
public API when it was made. Each test works on a copy under `tmp_path`.

Expected contents are that JSON, changed by hand for each write of the
retention methods (SPEC §3b) a test makes (`_old_stores.py`, shared with
test_format_v1.py): an independent statement, not the store's own reading.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from _old_stores import (
    ALPHA,
    PURGE_MARKER,
    RETIRE_MARKER,
    SWEEP,
    V2,
    StepIO,
    assert_consistent,
    checkpoint,
    content,
    crashed_open,
    files,
    format_file,
    holds,
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

FIXTURE = V2.path
SNAPSHOT_LSN, LAST_LSN = V2.snapshot_lsn, V2.last_lsn  # 20, 35
V2_SNAPSHOT, V2_SEGMENT = V2.snapshot, V2.segment
expected = V2.expected
WRITES = V2.writes
purge, retire = WRITES["purge"], WRITES["retire"]

#: Only the fixture's files hold these: what records after its snapshot removed.
PURGED_MARKER = b"PURGED-IN-LOG"  # everything of agent-purged (remove_runtime)
RETIRED_MARKER = b"RETIRED-IN-LOG"  # alpha's payload retired in the log

EVERY_VERSION_2_OP = {
    "oauth",
    "session",
    "receipt",
    "inputs",
    "runtime_state",
    "ops",
    "remove_session",
    "remove_ops",
    "remove_runtime",
}


def copy_fixture(tmp_path: Path) -> Path:
    return V2.copy(tmp_path)


def segment_ops(path: Path, first_lsn: int, version: int) -> list[tuple[int, list[Any]]]:
    """(LSN, the payload's effects as plain CBOR) of each record of a segment,
    decoded here with cbor2 (the scanner only finds the frames)."""
    reader = fmt.BytesReader(path.read_bytes())
    found = []
    for event in fmt.scan_segment(reader, first_lsn, 1 << 30, 0, version=version):
        if isinstance(event, fmt.Record):
            found.append((event.frame.lsn, cbor2.loads(event.frame.payload)))
        else:
            assert isinstance(event, fmt.End), event
    return found


# --- reading a version 2 store ----------------------------------------------------------------


def test_the_fixture_is_a_version_2_store_with_every_version_2_op_after_its_snapshot():
    assert versions(FIXTURE) == {"FORMAT": 2, V2_SEGMENT: 2, V2_SNAPSHOT: 2}
    view = read_store(str(FIXTURE))
    assert (view.format_version, view.snapshot_lsn, view.last_lsn) == (2, SNAPSHOT_LSN, LAST_LSN)
    records = segment_ops(FIXTURE / V2_SEGMENT, SNAPSHOT_LSN + 1, 2)
    assert [lsn for lsn, _ in records] == list(range(SNAPSHOT_LSN + 1, LAST_LSN + 1))
    assert {item["op"] for _, items in records for item in items} == EVERY_VERSION_2_OP
    # Inputs and receipts in their version 2 shape: plain maps.
    for _, items in records:
        for item in items:
            if item["op"] == "inputs":
                assert set(item) == {"op", "runtime", "states"}
                assert all(isinstance(state, dict) for state in item["states"])
            elif item["op"] == "receipt":
                assert set(item) == {"op", "runtime", "receipt"}
                assert isinstance(item["receipt"], dict)
    # The snapshot: one CBOR map, holding the runtime the log purges.
    body = cbor2.loads((FIXTURE / V2_SNAPSHOT).read_bytes()[40:])
    assert set(body) == {"oauth", "runtimes"}
    assert "agent-purged" in {r["runtime"] for r in body["runtimes"]}
    assert holds(FIXTURE, PURGED_MARKER) == [V2_SNAPSHOT]
    assert holds(FIXTURE, RETIRED_MARKER) == [V2_SNAPSHOT]


async def test_the_fixture_opens_and_reads_back_exactly_and_stays_version_2(tmp_path):
    path = copy_fixture(tmp_path)
    before = files(path)
    assert await read_all(path) == expected()
    # Opening and reading wrote nothing: no conversion, no new segment.
    assert files(path) == before
    assert versions(path)["FORMAT"] == 2


async def test_the_offline_readers_read_the_fixture(tmp_path):
    path = copy_fixture(tmp_path)
    report = verify_store(str(path))
    assert (report.result, report.problems) == ("clean", [])
    assert (report.snapshots, report.segments, report.records) == (1, 1, LAST_LSN - SNAPSHOT_LSN)
    view = read_store(str(path))
    assert sorted(map(str, view.state.runtime_ids())) == sorted(expected()["runtimes"])
    # export-sqlite and back (import-sqlite writes a version 3 store).
    exported = export_sqlite(view.state, str(tmp_path / "copy.sqlite3"))
    assert same_content(exported, view.state)
    assert same_content(read_sqlite(str(tmp_path / "copy.sqlite3")), view.state)
    imported = import_sqlite(exported, str(tmp_path / "imported"))
    assert imported.format_version == 3
    assert versions(tmp_path / "imported") == {"FORMAT": 3, fmt.snapshot_name(0): 3}
    assert await read_all(tmp_path / "imported") == expected()
    assert files(path) == files(FIXTURE)  # the source was only read


async def test_a_backup_of_a_version_2_store_is_version_3(tmp_path):
    path = copy_fixture(tmp_path)

    async def body(store: Any) -> None:
        await store.backup(tmp_path / "backup")

    await crashed_open(path, body)
    assert versions(tmp_path / "backup") == {"FORMAT": 3, fmt.snapshot_name(LAST_LSN): 3}
    assert versions(path)["FORMAT"] == 2
    assert await read_all(tmp_path / "backup") == expected()
    assert verify_store(str(tmp_path / "backup")).result == "clean"
    assert holds(tmp_path / "backup", PURGED_MARKER) == []
    assert holds(tmp_path / "backup", RETIRED_MARKER) == []


def test_the_command_line_reads_the_fixture_and_its_checkpoint_converts_it(tmp_path, capsys):
    path = copy_fixture(tmp_path)
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == 2
    assert main(["verify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "clean"
    assert versions(path)["FORMAT"] == 2
    assert main(["checkpoint", str(path)]) == 0
    capsys.readouterr()
    assert set(versions(path).values()) == {3}
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == 3
    assert main(["verify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["result"] == "clean"


# --- converting ------------------------------------------------------------------------------


async def test_the_first_write_converts_then_a_checkpoint_leaves_only_version_3(tmp_path):
    path = copy_fixture(tmp_path)
    old = files(path)
    writes = ["purge", "retire", "clear", "delete_ops"]

    async def body(store: Any) -> None:
        for name in writes:
            await WRITES[name](store)
        # Commands that change nothing write no record.
        await store.clear_session_snapshot(ALPHA)
        await retire(store)
        assert await content(store) == expected(*writes)

    await crashed_open(path, body)
    # FORMAT 3; the version 2 files untouched; the new records in a new
    # version 3 segment at LSN 36 (never appended to the version 2 one).
    new_segment = fmt.segment_name(LAST_LSN + 1)
    assert versions(path) == {"FORMAT": 3, V2_SEGMENT: 2, new_segment: 3, V2_SNAPSHOT: 2}
    assert (path / V2_SEGMENT).read_bytes() == old[V2_SEGMENT]
    assert (path / V2_SNAPSHOT).read_bytes() == old[V2_SNAPSHOT]
    # retire is two records (ALPHA's, BETA's); the no-op clear is none.
    last = LAST_LSN + len(writes) + 1
    view = read_store(str(path))
    assert (view.format_version, view.last_lsn) == (3, last)
    # The new records have the version 3 shapes: the retires are inputs
    # records of ids beside packed states.
    new = segment_ops(path / new_segment, LAST_LSN + 1, 3)
    assert [lsn for lsn, _ in new] == list(range(LAST_LSN + 1, last + 1))
    inputs = [item for _, items in new for item in items if item["op"] == "inputs"]
    assert len(inputs) == 2
    for item in inputs:
        assert set(item) == {"op", "runtime", "ids", "states"}
        assert all(type(blob) is bytes for blob in item["states"])
        assert [len(key) for key in item["ids"]] == [16] * len(item["states"])
    report = verify_store(str(path))
    assert (report.result, report.problems, report.segments) == ("clean", [], 2)
    assert await read_all(path) == expected(*writes)

    await crashed_open(path, checkpoint)
    assert versions(path) == {
        "FORMAT": 3,
        fmt.segment_name(last + 1): 3,
        fmt.snapshot_name(last): 3,
    }
    assert verify_store(str(path)).result == "clean"
    assert await read_all(path) == expected(*writes)
    # Nothing the records removed is left in any file.
    for marker in (PURGED_MARKER, RETIRED_MARKER, PURGE_MARKER, RETIRE_MARKER):
        assert holds(path, marker) == [], marker


async def test_a_checkpoint_converts_a_version_2_store_even_with_nothing_new(tmp_path):
    path = copy_fixture(tmp_path)

    async def twice(store: Any) -> None:
        await store.checkpoint()
        await store.checkpoint()  # converted now: nothing to do

    await crashed_open(path, twice)
    assert versions(path) == {
        "FORMAT": 3,
        fmt.segment_name(LAST_LSN + 1): 3,
        fmt.snapshot_name(LAST_LSN): 3,
    }
    assert await read_all(path) == expected()
    assert holds(path, PURGED_MARKER) == []
    # A version 2 store whose snapshot holds everything (no segment at all):
    # the snapshot is rewritten as version 3 under its own name.
    only_snapshot = tmp_path / "only-snapshot"
    only_snapshot.mkdir(mode=0o700)
    state = read_store(str(FIXTURE)).state
    (only_snapshot / "FORMAT").write_bytes(format_file(2))
    (only_snapshot / fmt.snapshot_name(LAST_LSN)).write_bytes(
        fmt.encode_snapshot(LAST_LSN, state, version=2)
    )
    assert verify_store(str(only_snapshot)).result == "clean"
    assert await read_all(only_snapshot) == expected()
    assert sorted(os.listdir(only_snapshot)) == ["FORMAT", "LOCK", fmt.snapshot_name(LAST_LSN)]
    await crashed_open(only_snapshot, twice)
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
    assert holds(path, PURGE_MARKER) == []


async def test_a_record_less_version_2_segment_is_replaced_by_a_version_3_one(tmp_path):
    """A version 2 checkpoint leaves an empty segment at the snapshot's LSN + 1:
    the version 3 segment takes its name (the empty one is removed first)."""
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    state = read_store(str(FIXTURE)).state
    (path / "FORMAT").write_bytes(format_file(2))
    (path / fmt.snapshot_name(LAST_LSN)).write_bytes(
        fmt.encode_snapshot(LAST_LSN, state, version=2)
    )
    empty = path / fmt.segment_name(LAST_LSN + 1)
    empty.write_bytes(fmt.encode_segment_header(LAST_LSN + 1, 2) + bytes(1 << 20))
    assert verify_store(str(path)).result == "clean"
    await crashed_open(path, purge)
    assert versions(path) == {"FORMAT": 3, empty.name: 3, fmt.snapshot_name(LAST_LSN): 2}
    assert await read_all(path) == expected("purge")
    assert verify_store(str(path)).result == "clean"
    # A crash after FORMAT was rewritten, before the empty segment was
    # replaced: opening replaces it (a note for the read-only tools).
    (path / "FORMAT").write_bytes(format_file(3))
    empty.write_bytes(fmt.encode_segment_header(LAST_LSN + 1, 2) + bytes(1 << 20))
    (path / "LOCK").unlink()
    report = verify_store(str(path))
    assert report.result == "clean"
    assert [(p.severity, p.file) for p in report.problems] == [("note", str(empty))]
    assert await read_all(path) == expected()
    assert versions(path) == {"FORMAT": 3, empty.name: 3, fmt.snapshot_name(LAST_LSN): 2}
    await crashed_open(path, purge)
    assert await read_all(path) == expected("purge")


# --- what is refused -------------------------------------------------------------------------


async def test_a_store_whose_format_says_4_is_refused_untouched(tmp_path):
    path = copy_fixture(tmp_path)
    (path / "FORMAT").write_bytes(format_file(4))
    before = files(path)
    message = f"{path} was written by format version 4; this build reads version 3 and older"
    with pytest.raises(ma.UnsupportedFormat) as info:
        await read_all(path)
    assert str(info.value) == message
    with pytest.raises(ma.UnsupportedFormat):
        read_store(str(path))
    with pytest.raises(ma.UnsupportedFormat):
        verify_store(str(path))
    assert files(path) == before


def _end_of_records(path: Path, first_lsn: int, version: int) -> int:
    reader = fmt.BytesReader(path.read_bytes())
    *_, end = fmt.scan_segment(reader, first_lsn, 1 << 30, 0, version=version)
    assert isinstance(end, fmt.End)
    return end.offset


@pytest.mark.parametrize("kind", ["inputs", "receipt"])
async def test_a_version_3_record_in_a_version_2_segment_is_corrupt(tmp_path, kind):
    """Version 3 changed the shape of two ops: in a version 2 segment, the
    new shape is damage (rule 7), not something to guess at."""
    path = copy_fixture(tmp_path)
    segment = path / V2_SEGMENT
    at = _end_of_records(segment, SNAPSHOT_LSN + 1, 2)
    state = read_store(str(FIXTURE)).state
    if kind == "inputs":
        effect: _core.Effect = _core.PutInputStates(ALPHA, list(state.input_states(ALPHA))[:1])
        keys = "op, runtime, states"
    else:
        effect = _core.InsertReceipt(ALPHA, next(iter(state.boundary_receipts(ALPHA))))
        keys = "op, runtime, receipt"
    record = fmt.encode_record(LAST_LSN + 1, (effect,))
    data = bytearray(segment.read_bytes())
    data[at : at + len(record)] = record
    segment.write_bytes(bytes(data))
    prefix = (
        f"{segment} at byte offset {at + 24}: record payload: effect must be a map with keys {keys}"
    )
    with pytest.raises(ma.CorruptStore) as info:
        await read_all(path)
    assert str(info.value).startswith(prefix)
    report = verify_store(str(path))
    assert report.result == "corrupt"
    assert [(p.file, p.offset) for p in report.problems] == [(str(segment), at + 24)]
    # The same record in a version 3 segment is fine.
    assert fmt.decode_effects(fmt.read_frame(record, 0, 1 << 30), version=3) == (effect,)


async def test_a_version_3_file_under_format_2_is_corrupt(tmp_path):
    """Conversion rewrites FORMAT before it writes any version 3 file, so a
    version 3 segment or snapshot in a version 2 store is damage (rules H2, S1)."""
    path = copy_fixture(tmp_path)
    segment = path / V2_SEGMENT
    data = segment.read_bytes()
    segment.write_bytes(fmt.encode_segment_header(SNAPSHOT_LSN + 1, 3) + data[32:])
    with pytest.raises(ma.CorruptStore, match=r"at byte offset 8: segment format version 3,"):
        await read_all(path)
    assert verify_store(str(path)).result == "corrupt"
    # A version 3 snapshot under FORMAT 2.
    path = tmp_path / "snapshot"
    path.mkdir(mode=0o700)
    (path / "FORMAT").write_bytes(format_file(2))
    state = read_store(str(FIXTURE)).state
    (path / fmt.snapshot_name(LAST_LSN)).write_bytes(fmt.encode_snapshot(LAST_LSN, state))
    with pytest.raises(ma.CorruptStore, match=r"at byte offset 8: snapshot format version 3,"):
        await read_all(path)
    (path / "LOCK").unlink(missing_ok=True)
    assert verify_store(str(path)).result == "corrupt"
    # Under FORMAT 3 the same file reads.
    (path / "FORMAT").write_bytes(format_file(3))
    assert await read_all(path) == expected()


# --- crashes during the conversion ----------------------------------------------------------


CRASH_STATES: dict[str, Callable[[Path], object]] = {
    "FORMAT.tmp written, not renamed": lambda p: (p / "FORMAT.tmp").write_bytes(format_file(3)),
    "FORMAT.tmp torn": lambda p: (p / "FORMAT.tmp").write_bytes(format_file(3)[:5]),
    "FORMAT renamed, no new segment": lambda p: (p / "FORMAT").write_bytes(format_file(3)),
    "new segment created, empty": lambda p: (
        (p / "FORMAT").write_bytes(format_file(3)),
        (p / fmt.segment_name(LAST_LSN + 1)).write_bytes(b""),
    ),
    "new segment's header torn": lambda p: (
        (p / "FORMAT").write_bytes(format_file(3)),
        (p / fmt.segment_name(LAST_LSN + 1)).write_bytes(
            fmt.encode_segment_header(LAST_LSN + 1)[:20] + bytes((1 << 20) - 20)
        ),
    ),
    "new segment whole, no record": lambda p: (
        (p / "FORMAT").write_bytes(format_file(3)),
        (p / fmt.segment_name(LAST_LSN + 1)).write_bytes(
            fmt.encode_segment_header(LAST_LSN + 1) + bytes((1 << 20) - 32)
        ),
    ),
    "snapshot temp left by the checkpoint": lambda p: (
        (p / "FORMAT").write_bytes(format_file(3)),
        (p / (fmt.snapshot_name(LAST_LSN) + ".tmp")).write_bytes(b"MKRTSNAP half"),
    ),
}


@pytest.mark.parametrize("label", list(CRASH_STATES))
async def test_every_crash_state_of_the_conversion_opens(tmp_path, label):
    """The states a crash (or power loss) can leave at each step of the
    conversion, built by hand: each opens with the fixture's content, and
    the next write and checkpoint leave only version 3 files."""
    path = copy_fixture(tmp_path)
    CRASH_STATES[label](path)
    assert_consistent(path)
    assert verify_store(str(path)).result == "clean"
    assert await read_all(path) == expected()
    assert_consistent(path)
    await crashed_open(path, purge)
    assert read_store(str(path)).format_version == 3
    assert await read_all(path) == expected("purge")
    assert versions(path)[V2_SEGMENT] == 2
    async with ma.open_store(path) as store:
        await store.checkpoint()
    assert set(versions(path).values()) == {3}
    assert await read_all(path) == expected("purge")
    assert verify_store(str(path)).result == "clean"


async def test_the_sweep_covers_the_conversion_steps(tmp_path):
    """Guard: the healthy run makes the conversion's calls in the documented
    order (FORMAT first, then the new segment, then the records; the
    checkpoint writes its snapshot, header last, and deletes the version 2
    files last)."""
    io = StepIO()
    path = copy_fixture(tmp_path)
    assert await sweep_run(V2, path, io) == ([*SWEEP, "checkpoint"], [])
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
    snap = fmt.snapshot_name(LAST_LSN + len(SWEEP))
    temp = [method for method, name in calls if name == snap + ".tmp"]
    assert temp[0] == "create"
    assert temp[-3:] == ["write_at", "sync", "rename"]  # the header last, at offset 0
    assert set(temp[1:-3]) == {"write"}  # the placeholder header, then the chunks
    removed = [name for method, name in calls if method == "remove"]
    assert sorted(removed) == sorted([V2_SEGMENT, V2_SNAPSHOT, new])
    assert set(versions(path).values()) == {3}
    assert await read_all(path) == expected(*SWEEP)


@pytest.mark.parametrize("mode", ["stop", "fail"])
async def test_a_crash_or_failure_at_any_step_of_the_conversion_loses_nothing(tmp_path, mode):
    healthy = StepIO()
    await sweep_run(V2, V2.copy(tmp_path / "healthy"), healthy)
    for at in range(len(healthy.calls)):
        path = V2.copy(tmp_path / f"{mode}-{at}")
        io = StepIO(at, mode)
        acked, failed = await sweep_run(V2, path, io)
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
        assert holds(path, PURGED_MARKER) == [], step
