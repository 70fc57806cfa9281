"""The offline layer under the command line: whole-store copies, the
read-only recovery and verify (`_dry_run.py`, `_verifier.py`,
`_sqlite_copy.py`, `_core.state_effects`, the SQLite store's whole-store read
and write, `DurableLog.create_from_state`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import trio
from _values import I1, stored
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyrsistent import pmap
from test_durable import walk

import meerkat_actor as ma
from meerkat_actor import _core, _dry_run, _format, _sqlite_copy, _verifier
from meerkat_actor._core import RuntimeRecord, StoreState
from meerkat_actor._durable import DurableLog
from meerkat_actor._errors import NotAStore
from meerkat_actor._fs import FileIO
from meerkat_actor._packed import PackedInput, PackedReceipt, input_key
from meerkat_actor._sqlite_rows import I64_MAX
from meerkat_actor.testing import strategies as s


@st.composite
def records(draw: st.DrawFn) -> RuntimeRecord:
    inputs = draw(st.lists(s.stored_input_states(), max_size=4))
    receipts = draw(st.lists(s.receipts(), max_size=3))
    return RuntimeRecord(
        session_snapshot=draw(st.none() | st.binary(max_size=32)),
        input_states=pmap({p.key: p.blob for p in map(PackedInput.of, inputs)}),
        receipts=pmap({p.key: p.blob for p in map(PackedReceipt.of, receipts)}),
        runtime_state=draw(st.none() | s.runtime_states()),
        ops_snapshot=draw(st.none() | s.ops_snapshots()),
    )


@st.composite
def states(draw: st.DrawFn) -> StoreState:
    runtimes = draw(st.dictionaries(s.runtime_ids(), records(), max_size=3))
    oauth = draw(st.none() | st.binary(max_size=32))
    return StoreState(pmap(runtimes), oauth)


@settings(max_examples=30, deadline=None)
@given(states())
def test_state_effects_rebuild_the_state(state: StoreState) -> None:
    rebuilt = _core.redo(_core.EMPTY, _core.state_effects(state))
    assert rebuilt == _core.without_empty_records(state)
    assert _sqlite_copy.same_content(rebuilt, state)


def test_same_content_ignores_empty_records_only() -> None:
    empty = StoreState(pmap({ma.LogicalRuntimeId("r"): RuntimeRecord()}))
    assert _sqlite_copy.same_content(empty, _core.EMPTY)
    assert not _sqlite_copy.same_content(StoreState(oauth_flow_snapshot=b"x"), _core.EMPTY)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(state=states())
def test_sqlite_export_reads_back_the_same_content(tmp_path: Path, state: StoreState) -> None:
    target = tmp_path / f"{os.urandom(6).hex()}.db"
    back = _sqlite_copy.export_sqlite(state, str(target))
    assert _sqlite_copy.same_content(back, state)
    assert _sqlite_copy.same_content(_sqlite_copy.read_sqlite(str(target)), state)
    assert target.stat().st_mode & 0o777 == 0o600


def test_sqlite_read_keeps_receipts_above_2_63_and_legacy_clamped_rows(tmp_path: Path) -> None:
    run = ma.RunId.new()
    high = ma.RunBoundaryReceipt(
        run_id=run,
        boundary=ma.RunApplyBoundary.IMMEDIATE,
        contributing_input_ids=(),
        conversation_digest=None,
        message_count=1,
        sequence=2**64 - 1,
    )
    packed = PackedReceipt.of(high)
    record = RuntimeRecord(receipts=pmap({packed.key: packed.blob}))
    state = StoreState(pmap({ma.LogicalRuntimeId("r"): record}))
    path = tmp_path / "s.db"
    _sqlite_copy.export_sqlite(state, str(path))
    # Move the row to the slot an older Rust version clamped it to.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runtime_boundary_receipts SET sequence = ?", (I64_MAX,))
    assert _sqlite_copy.same_content(_sqlite_copy.read_sqlite(str(path)), state)
    # A row whose key disagrees with its JSON is damage, named.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE runtime_boundary_receipts SET sequence = 5")
    with pytest.raises(ma.CorruptStore, match=r"runtime_boundary_receipts.*sequence column 5"):
        _sqlite_copy.read_sqlite(str(path))


def test_read_sqlite_refuses_what_is_not_a_meerkat_store(tmp_path: Path) -> None:
    with pytest.raises(NotAStore, match="does not exist"):
        _sqlite_copy.read_sqlite(str(tmp_path / "missing.db"))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(NotAStore, match="no table runtime_input_states"):
        _sqlite_copy.read_sqlite(str(other))
    # Not a SQLite database at all: not a store (issue 16: the CLI's exit 3,
    # not 5). A SQLite database with damaged pages is a damaged store.
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(NotAStore, match=r"junk\.db is not a SQLite store: "):
        _sqlite_copy.read_sqlite(str(junk))
    damaged = tmp_path / "damaged.db"
    data = bytearray(other.read_bytes())
    data[100:] = b"\xa5" * (len(data) - 100)  # every page after the file header
    damaged.write_bytes(bytes(data))
    with pytest.raises(ma.CorruptStore, match=r"damaged\.db"):
        _sqlite_copy.read_sqlite(str(damaged))


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


async def _write_some(path: Path, n: int) -> list[ma.InputId]:
    ids = [ma.InputId.new() for _ in range(n)]
    async with ma.open_store(path, checkpoint_bytes=1 << 40) as store:
        for input_id in ids:
            await store.persist_input_state(
                ma.LogicalRuntimeId("r"), ma.StoredInputState.new_accepted(input_id)
            )
        # A copy taken while the store is open and idle: a log-only store.
        await trio.to_thread.run_sync(shutil.copytree, path, f"{path}-copy")
    return ids


async def test_read_store_changes_nothing_and_agrees_with_open_store(tmp_path: Path) -> None:
    store_dir = tmp_path / "s"
    ids = await _write_some(store_dir, 5)
    copy = tmp_path / "s-copy"
    (copy / "LOCK").unlink()
    segment = next(copy.glob("log-*.log"))
    data = bytearray(segment.read_bytes())
    end = len(data.rstrip(b"\0"))
    data[end : end + 24] = bytes(range(1, 25))  # a torn frame after the last record
    segment.write_bytes(bytes(data))
    (copy / "snapshot-00000000000000000009.snap.tmp").write_bytes(b"half a checkpoint")
    before = _digest(copy)

    view = await trio.to_thread.run_sync(_dry_run.read_store, str(copy))

    assert _digest(copy) == before, "a read-only tool changed a file"
    assert not (copy / "LOCK").exists(), "a read-only tool created the LOCK file"
    assert view.last_lsn == 5
    # Held packed: keyed by the input ids' 16 bytes.
    held = view.state.record(ma.LogicalRuntimeId("r")).input_states
    assert sorted(held) == sorted(input_key(i) for i in ids)
    read = view.state.input_states(ma.LogicalRuntimeId("r"))
    assert sorted(x.state.input_id for x in read) == sorted(ids)
    kinds = sorted(n.message.split(":")[0] for n in view.notes)
    assert len(kinds) == 2, view.notes
    assert any(n.file == str(segment) and n.offset == end for n in view.notes)
    # open_store recovers the same content (and does make the repairs).
    async with ma.open_store(copy) as store:
        got = await store.load_input_states(ma.LogicalRuntimeId("r"))
    assert sorted(x.state.input_id for x in got) == sorted(ids)
    assert not (copy / "snapshot-00000000000000000009.snap.tmp").exists()


async def test_read_store_reads_an_open_store_live_or_refuses_it(tmp_path: Path) -> None:
    async with ma.open_store(tmp_path / "s"):
        with pytest.raises(ma.StoreLocked, match="locked"):
            await trio.to_thread.run_sync(
                lambda: _dry_run.read_store(str(tmp_path / "s"), live=False)
            )
        # By default it is read live (tests/test_live_ops.py).
        view = await trio.to_thread.run_sync(_dry_run.read_store, str(tmp_path / "s"))
        assert [n.message.split(" (")[0] for n in view.notes] == ["read live beside the open store"]
    # ... and open_store fails while a read-only tool holds the store.
    with _dry_run.locked(_dry_run._DryRunIO(), str(tmp_path / "s")), pytest.raises(ma.StoreLocked):
        async with ma.open_store(tmp_path / "s"):
            pass


def _append_record(tmp_path: Path, effects: tuple[_core.Effect, ...]) -> Path:
    """A store whose log holds one oauth record, then a record of `effects`
    written here (well framed and checksummed); closed, no LOCK."""

    async def write() -> None:
        with trio.CancelScope() as scope:
            async with ma.open_store(tmp_path / "s") as store:
                await store.persist_auth_oauth_flow_snapshot(b"x")
                scope.cancel()
                await trio.lowlevel.checkpoint()

    trio.run(write)
    path = tmp_path / "s"
    [segment] = path.glob("log-*.log")
    data = bytearray(segment.read_bytes())
    *_, end = _format.scan_segment(_format.BytesReader(bytes(data)), 1, 1 << 30, 0, version=3)
    assert isinstance(end, _format.End)
    record = _format.encode_record(2, effects)
    data[end.offset : end.offset + len(record)] = record
    segment.write_bytes(bytes(data))
    (path / "LOCK").unlink(missing_ok=True)
    return path


@pytest.mark.parametrize("kind", ["input", "receipt"])
def test_verify_finds_a_packed_value_that_does_not_unpack(tmp_path: Path, kind: str) -> None:
    rt = ma.LogicalRuntimeId("r")
    if kind == "input":
        effect: _core.Effect = _core.PutInputStates(rt, [PackedInput(bytes(16), b"\xa1\x61a\x01")])
    else:
        effect = _core.InsertReceipt(rt, PackedReceipt(bytes(24), b"\xf6"))
    path = _append_record(tmp_path, (effect,))
    # Reading the value says the store is corrupt ...

    async def read() -> None:
        async with ma.open_store(path) as store:
            load = store.load_input_states if kind == "input" else store.load_boundary_receipts
            with pytest.raises(ma.CorruptStore):
                await load(rt)

    trio.run(read)
    (path / "LOCK").unlink(missing_ok=True)
    # ... and verify, which unpacks every value, reports the record (the
    # store opens: it is damage, not "corrupt").
    report = _verifier.verify_store(str(path))
    assert report.result == "damaged"
    assert any("does not decode" in p.message for p in report.problems)


def test_a_packed_input_under_another_inputs_key_is_corrupt(tmp_path: Path) -> None:
    other = ma.InputId(uuid.UUID(int=12345))
    packed = PackedInput(input_key(other), PackedInput.of(stored(I1)).blob)
    rt = ma.LogicalRuntimeId("r")
    path = _append_record(tmp_path, (_core.PutInputStates(rt, [packed]),))
    report = _verifier.verify_store(str(path))
    assert report.result == "damaged"
    assert any(f"holds input id {I1}" in p.message for p in report.problems)

    async def read() -> None:
        async with ma.open_store(path) as store:
            with pytest.raises(ma.CorruptStore, match=f"holds input id {I1}"):
                await store.load_input_state(rt, other)
            assert await store.load_input_state(rt, I1) is None

    trio.run(read)


async def test_verify_reports_a_damaged_snapshot_the_log_covers(tmp_path: Path) -> None:
    await _write_some(tmp_path / "s", 4)
    copy = tmp_path / "s-copy"
    # Give the log-only copy a snapshot at LSN 2, then damage its body.
    view = await trio.to_thread.run_sync(_dry_run.read_store, str(copy))
    snapshot = copy / "snapshot-00000000000000000002.snap"
    snapshot.write_bytes(_format.encode_snapshot(2, view.state))
    data = bytearray(snapshot.read_bytes())
    data[-1] ^= 0x40
    snapshot.write_bytes(bytes(data))
    report = await trio.to_thread.run_sync(_verifier.verify_store, str(copy))
    assert report.result == "damaged"
    [problem] = report.problems
    assert problem.severity == "damage"
    assert problem.file == str(snapshot)
    assert problem.offset == 40
    assert "checksum" in problem.message
    assert report.records == 4


class _FailAt(FileIO):
    """Fails the `at`-th call of a FileIO method (counting from 1); closing
    a file or releasing the lock never fails (their errors are only logged)."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.calls = 0

    def __getattribute__(self, name: str) -> object:
        attribute = super().__getattribute__(name)
        if name.startswith("_") or name in ("at", "calls", "close", "unlock"):
            return attribute

        def counted(*args: object) -> object:
            self.calls += 1
            if self.calls == self.at:
                raise OSError(5, f"injected failure in {name}")
            return attribute(*args)

        return counted


def test_a_backup_cut_short_at_any_step_is_never_an_empty_looking_store(tmp_path: Path) -> None:
    record = RuntimeRecord(session_snapshot=b"kept")
    state = StoreState(pmap({ma.LogicalRuntimeId("r"): record}), b"oauth")

    async def read_back(target: Path) -> bytes | None:
        async with ma.open_store(target) as store:
            return await store.load_session_snapshot(ma.LogicalRuntimeId("r"))

    outcomes = []
    for at in range(1, 100):
        target = tmp_path / f"b{at}" / "nested" / "backup"
        error = ""
        try:
            DurableLog.create_from_state(_FailAt(at), str(target), 3, state)
        except OSError as exc:
            error = str(exc)
        failed = "injected" in error
        assert failed or not error
        if not target.exists() or not any(target.iterdir()):
            outcomes.append("nothing")
            assert failed
            continue
        try:
            got = trio.run(read_back, target)
        except ma.ReadFailed as exc:
            error = str(exc)
            got = None
        if got is None:
            assert "not a meerkat_actor store" in error, f"step {at}: {error}"
            outcomes.append("refused")
            continue
        assert got == b"kept", f"step {at}: an incomplete store opened"
        outcomes.append("whole")
        if not failed:
            break
    assert outcomes[-1] == "whole"
    assert {"nothing", "refused"} <= set(outcomes)


def test_create_from_state_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("keep me")
    with pytest.raises(ValueError, match="must not exist or be an empty directory"):
        DurableLog.create_from_state(FileIO(), str(tmp_path), 0, _core.EMPTY)
    assert (tmp_path / "x").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def _frames(segment: Path) -> list[tuple[int, int]]:
    """(offset, end) of each record of a segment."""
    return [(r.start, r.end) for r in walk(segment)]


async def test_verify_finds_overlapping_segments_a_snapshot_covers(tmp_path: Path) -> None:
    await _write_some(tmp_path / "s", 12)
    copy = tmp_path / "s-copy"
    (copy / "LOCK").unlink()
    log1 = copy / "log-00000000000000000001.log"
    data = log1.read_bytes()
    spans = _frames(log1)
    # log-9 holds records 9..12 (a copy), log-1 is cut after record 10; a
    # snapshot at LSN 8 covers the overlap.
    (copy / "log-00000000000000000009.log").write_bytes(
        _format.encode_segment_header(9) + data[spans[8][0] : spans[11][1]]
    )
    log1.write_bytes(data[: spans[9][1]])
    cut = tmp_path / "cut"
    shutil.copytree(copy, cut)
    (cut / "log-00000000000000000009.log").unlink()
    (cut / "log-00000000000000000001.log").write_bytes(data[: spans[7][1]])
    at_8 = await trio.to_thread.run_sync(_dry_run.read_store, str(cut))
    (copy / "snapshot-00000000000000000008.snap").write_bytes(
        _format.encode_snapshot(8, at_8.state)
    )
    report = await trio.to_thread.run_sync(_verifier.verify_store, str(copy))
    assert report.result == "damaged", report
    [problem] = report.problems
    assert problem.file.endswith("log-00000000000000000009.log")
    assert "records 9..10 are there twice" in problem.message


async def test_a_damaged_record_the_snapshot_holds_is_damage_not_a_torn_write(
    tmp_path: Path,
) -> None:
    await _write_some(tmp_path / "s", 6)
    copy = tmp_path / "s-copy"
    (copy / "LOCK").unlink()
    full = await trio.to_thread.run_sync(_dry_run.read_store, str(copy))
    (copy / "snapshot-00000000000000000006.snap").write_bytes(
        _format.encode_snapshot(6, full.state)
    )
    log1 = copy / "log-00000000000000000001.log"
    data = bytearray(log1.read_bytes())
    last_offset, _ = _frames(log1)[-1]
    data[last_offset + 30] ^= 0x01  # the last record: what a torn write looks like
    log1.write_bytes(bytes(data))
    report = await trio.to_thread.run_sync(_verifier.verify_store, str(copy))
    assert report.result == "damaged"
    assert [p.severity for p in report.problems] == ["damage"]
    assert report.problems[0].offset == last_offset


async def test_a_dangling_symlink_in_the_store_does_not_stop_inspect(tmp_path: Path) -> None:
    async with ma.open_store(tmp_path / "s"):
        pass
    (tmp_path / "s" / "stray").symlink_to(tmp_path / "nowhere")
    view = await trio.to_thread.run_sync(_dry_run.read_store, str(tmp_path / "s"))
    assert ("stray", "other") in [(f.name, f.kind) for f in view.files]


def test_the_dry_run_layer_overrides_every_changing_file_operation() -> None:
    # open_read and read_at (format 3: a snapshot read piece by piece) only read.
    reads = {"read", "list_dir", "size", "open_read", "read_at", "file_kind", "read_lock_note"}
    # What a LOCK file's note says about a process (tests/test_live_ops.py).
    reads |= {"host_name", "process_start", "boot_time", "boot_id", "pid_namespace"}
    reads.add("process_exists")
    changing = {
        name
        for name, value in vars(FileIO).items()
        if callable(value) and not name.startswith("_") and name not in reads
    }
    assert changing, "FileIO has no changing methods?"
    assert changing <= set(vars(_dry_run._DryRunIO)), changing - set(vars(_dry_run._DryRunIO))


def test_the_offline_readers_leave_no_file_open(tmp_path: Path) -> None:
    """read_store and verify_store close every file they open (a snapshot is
    read through `FileIO.open_read`, whose handle the dry-run layer's `close`
    must still close)."""

    async def write() -> None:
        async with ma.open_store(tmp_path / "s") as store:
            await store.persist_auth_oauth_flow_snapshot(b"x")
            await store.checkpoint()

    trio.run(write)
    assert any(p.name.startswith("snapshot-") for p in (tmp_path / "s").iterdir())
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        _dry_run.read_store(str(tmp_path / "s"))
        _verifier.verify_store(str(tmp_path / "s"))
    assert len(os.listdir("/proc/self/fd")) == before


def test_cli_output_escapes_what_the_terminal_cannot_encode(tmp_path: Path) -> None:
    async def write() -> None:
        async with ma.open_store(tmp_path / "s") as store:
            await store.persist_input_state(
                ma.LogicalRuntimeId("агент-😀"), ma.StoredInputState.new_accepted(ma.InputId.new())
            )

    trio.run(write)
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    for args in (["inspect", str(tmp_path / "s")], ["inspect", "--json", str(tmp_path / "s")]):
        done = subprocess.run(
            [sys.executable, "-m", "meerkat_actor", *args],
            capture_output=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert b"\\u0430" in done.stdout or b"\\u0430".upper() in done.stdout.upper()
    assert json.loads(done.stdout)["runtimes"][0]["runtime_id"] == "агент-😀"


def test_max_record_bytes_beyond_the_format_is_a_usage_error(tmp_path: Path) -> None:
    too_big = ["--max-record-bytes", str(2**32)]
    done = subprocess.run(
        [sys.executable, "-m", "meerkat_actor", "checkpoint", str(tmp_path), *too_big],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert "must be at most 4294967295" in done.stderr
    assert "Traceback" not in done.stderr
