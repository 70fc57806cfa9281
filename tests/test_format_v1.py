"""A store of format version 1 under this build (format version 2):
reading it, converting it, and every crash point of the conversion
(docs/format.md section 9, "Converting a version 1 store").

The fixture `tests/fixtures/store-v1/` was written by the version 1 writer
(commit 1403c41; `tests/fixtures/make_store_v1.py` says how): a version 1
snapshot at LSN 14 and a version 1 segment holding LSNs 15-23 after it.
`tests/fixtures/store-v1.json` is what it holds, read back through the
public API when it was made. Each test works on a copy under `tmp_path`.

Expected contents are that JSON, changed by hand here for each write of the
retention methods (SPEC §3b) a test makes: an independent statement, not the
store's own reading.
"""

from __future__ import annotations

import base64
import copy
import errno
import json
import os
import shutil
import struct
import threading
import uuid
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import meerkat_actor as ma
from meerkat_actor import _core
from meerkat_actor import _format as fmt
from meerkat_actor.__main__ import main
from meerkat_actor._codec import to_json
from meerkat_actor._dry_run import read_store
from meerkat_actor._fs import FileIO, Handle
from meerkat_actor._sqlite_copy import export_sqlite, import_sqlite, read_sqlite, same_content
from meerkat_actor._verifier import verify_store

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = FIXTURES / "store-v1"
CONTENT: dict[str, Any] = json.loads((FIXTURES / "store-v1.json").read_text())
SNAPSHOT_LSN, LAST_LSN = CONTENT["snapshot_lsn"], CONTENT["last_lsn"]  # 14, 23
V1_SNAPSHOT = f"snapshot-{SNAPSHOT_LSN:020d}.snap"
V1_SEGMENT = f"log-{SNAPSHOT_LSN + 1:020d}.log"

ALPHA = ma.LogicalRuntimeId("agent-alpha")
BETA = ma.LogicalRuntimeId("agent-beta")
GONE = ma.LogicalRuntimeId("agent-gone")  # destroyed: purgeable


def _retirable(runtime: str) -> list[ma.InputId]:
    """The runtime's input states whose payload carries a RETIRE-ME marker
    (all terminal, with an outcome)."""
    return [
        ma.InputId(uuid.UUID(doc["input_id"]))
        for doc in CONTENT["runtimes"][runtime]["inputs"]
        if str((doc.get("persisted_input") or {}).get("text", "")).startswith("RETIRE-ME")
    ]


RETIRE_ALPHA = _retirable("agent-alpha")
RETIRE_BETA = _retirable("agent-beta")
PURGE_MARKER = b"PURGE-ME-gone"
RETIRE_MARKER = b"RETIRE-ME"


# --- the store's content, and what it should be -----------------------------------------


async def content(store: Any) -> dict[str, Any]:
    """Everything the store holds, through the public reads, in the JSON
    shape of tests/fixtures/store-v1.json."""
    runtimes: dict[str, Any] = {}
    for rt in await store.list_runtimes():
        snapshot = await store.load_session_snapshot(rt)
        runtime_state = await store.load_runtime_state(rt)
        ops = await store.load_ops_lifecycle(rt)
        runtimes[str(rt)] = {
            "session_base64": None
            if snapshot is None
            else base64.b64encode(snapshot).decode("ascii"),
            "runtime_state": None if runtime_state is None else to_json(runtime_state),
            "ops": None if ops is None else to_json(ops),
            "inputs": [to_json(s) for s in await store.load_input_states(rt)],
            "receipts": [to_json(r) for r in await store.load_boundary_receipts(rt)],
        }
    oauth = await store.load_auth_oauth_flow_snapshot()
    return {
        "oauth_base64": None if oauth is None else base64.b64encode(oauth).decode("ascii"),
        "runtimes": runtimes,
    }


def expected(*done: str) -> dict[str, Any]:
    """The fixture's content after the named writes (any order: they commute)."""
    result = {
        "oauth_base64": CONTENT["oauth_base64"],
        "runtimes": copy.deepcopy(CONTENT["runtimes"]),
    }
    runtimes = result["runtimes"]
    for write in done:
        if write == "purge":
            del runtimes["agent-gone"]
        elif write.startswith("retire"):
            retired = {
                "retire": (("agent-alpha", RETIRE_ALPHA), ("agent-beta", RETIRE_BETA)),
                "retire_alpha": (("agent-alpha", RETIRE_ALPHA),),
                "retire_beta": (("agent-beta", RETIRE_BETA),),
            }[write]
            for runtime, ids in retired:
                for doc in runtimes[runtime]["inputs"]:
                    if doc["input_id"] in {str(i) for i in ids}:
                        del doc["persisted_input"]
        elif write == "clear":
            runtimes["agent-alpha"]["session_base64"] = None
        elif write == "delete_ops":
            runtimes["agent-beta"]["ops"] = None
        else:  # pragma: no cover
            raise AssertionError(write)
    return result


async def purge(store: Any) -> None:
    await store.purge_runtime(GONE)


async def retire_alpha(store: Any) -> None:
    await store.retire_input_payloads(ALPHA, RETIRE_ALPHA)


async def retire_beta(store: Any) -> None:
    await store.retire_input_payloads(BETA, RETIRE_BETA)


async def retire(store: Any) -> None:
    """Two records: one per runtime."""
    await retire_alpha(store)
    await retire_beta(store)


async def clear(store: Any) -> None:
    await store.clear_session_snapshot(ALPHA)


async def delete_ops(store: Any) -> None:
    await store.delete_ops_lifecycle(BETA)


WRITES: dict[str, Callable[[Any], Awaitable[None]]] = {
    "purge": purge,
    "retire": retire,
    "retire_alpha": retire_alpha,
    "retire_beta": retire_beta,
    "clear": clear,
    "delete_ops": delete_ops,
}


# --- files ---------------------------------------------------------------------------------


def copy_fixture(tmp_path: Path) -> Path:
    target = tmp_path / "store"
    shutil.copytree(FIXTURE, target)
    return target


def versions(path: Path) -> dict[str, int]:
    """The format version of every FORMAT, segment and snapshot file, by name."""
    found = {}
    for name in sorted(os.listdir(path)):
        data = (path / name).read_bytes()
        if name == "FORMAT":
            found[name] = fmt.decode_format_file(data)
        elif len(data) >= 12 and (
            fmt.parse_name(name, *fmt.SEGMENT_NAME) is not None
            or fmt.parse_name(name, *fmt.SNAPSHOT_NAME) is not None
        ):
            found[name] = struct.unpack(">I", data[8:12])[0]
    return found


def assert_consistent(path: Path) -> None:
    """The invariant of the conversion: a version 2 file only under FORMAT 2."""
    found = versions(path)
    if found["FORMAT"] == 1:
        assert set(found.values()) == {1}, found


def holds(path: Path, marker: bytes) -> list[str]:
    """The files of the directory whose bytes contain `marker`."""
    return sorted(name for name in os.listdir(path) if marker in (path / name).read_bytes())


def format_file(version: int) -> bytes:
    head = b"MKRTSTOR" + struct.pack(">I", version)
    return head + struct.pack(">I", zlib.crc32(head))


async def crashed_open(path: Path, body: Callable[[Any], Awaitable[None]], **kwargs: Any) -> None:
    """Run `body` on the store at `path`, then leave by cancellation: no final
    checkpoint (a stop without the clean close)."""
    with trio.CancelScope() as scope:
        async with ma.open_store(path, **kwargs) as store:
            await body(store)
            scope.cancel()
            await trio.lowlevel.checkpoint()


async def read_all(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def body(store: Any) -> None:
        result.update(await content(store))

    await crashed_open(path, body)
    return result


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
    # export-sqlite and back (import-sqlite writes a version 2 store).
    exported = export_sqlite(view.state, str(tmp_path / "copy.sqlite3"))
    assert same_content(exported, view.state)
    assert same_content(read_sqlite(str(tmp_path / "copy.sqlite3")), view.state)
    imported = import_sqlite(exported, str(tmp_path / "imported"))
    assert imported.format_version == 2
    assert versions(tmp_path / "imported") == {"FORMAT": 2, fmt.snapshot_name(0): 2}
    assert await read_all(tmp_path / "imported") == expected()
    assert versions(path)["FORMAT"] == 1  # the source was only read


async def test_a_backup_of_a_version_1_store_is_version_2(tmp_path):
    path = copy_fixture(tmp_path)

    async def body(store: Any) -> None:
        await store.backup(tmp_path / "backup")

    await crashed_open(path, body)
    assert versions(tmp_path / "backup") == {"FORMAT": 2, fmt.snapshot_name(LAST_LSN): 2}
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
    assert set(versions(path).values()) == {2}
    assert main(["inspect", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format_version"] == 2


# --- converting ------------------------------------------------------------------------------


async def test_the_first_write_converts_then_a_checkpoint_leaves_only_version_2(tmp_path):
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
    # FORMAT 2; the version 1 files untouched; the new records in a new
    # version 2 segment at LSN 24 (never appended to the version 1 one).
    new_segment = fmt.segment_name(LAST_LSN + 1)
    assert versions(path) == {"FORMAT": 2, V1_SEGMENT: 1, new_segment: 2, V1_SNAPSHOT: 1}
    assert (path / V1_SEGMENT).read_bytes() == v1_segment
    view = read_store(str(path))
    assert (view.format_version, view.last_lsn) == (2, LAST_LSN + len(writes) + 1)
    # retire is two records (ALPHA's, BETA's); the no-op clear is none.
    report = verify_store(str(path))
    assert (report.result, report.problems, report.segments) == ("clean", [], 2)
    assert await read_all(path) == expected(*writes)

    async def checkpoint(store: Any) -> None:
        await store.checkpoint()

    await crashed_open(path, checkpoint)
    last = LAST_LSN + len(writes) + 1
    assert versions(path) == {
        "FORMAT": 2,
        fmt.segment_name(last + 1): 2,
        fmt.snapshot_name(last): 2,
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
        "FORMAT": 2,
        fmt.segment_name(LAST_LSN + 1): 2,
        fmt.snapshot_name(LAST_LSN): 2,
    }
    assert await read_all(path) == expected()
    # A version 1 store whose snapshot holds everything (no segment at all):
    # the snapshot is rewritten as version 2 under its own name.
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
        "FORMAT": 2,
        fmt.segment_name(LAST_LSN + 1): 2,
        fmt.snapshot_name(LAST_LSN): 2,
    }
    assert await read_all(only_snapshot) == expected()


async def test_a_clean_close_after_writes_converts_and_checkpoints(tmp_path):
    path = copy_fixture(tmp_path)
    async with ma.open_store(path) as store:
        await purge(store)
    assert set(versions(path).values()) == {2}
    assert await read_all(path) == expected("purge")


async def test_a_record_less_version_1_segment_is_replaced_by_a_version_2_one(tmp_path):
    """A version 1 checkpoint leaves an empty segment at the snapshot's LSN + 1:
    the version 2 segment takes its name (the empty one is removed first)."""
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
    assert versions(path) == {"FORMAT": 2, empty.name: 2, fmt.snapshot_name(LAST_LSN): 1}
    assert await read_all(path) == expected("purge")
    assert verify_store(str(path)).result == "clean"
    # A crash after FORMAT was rewritten, before the empty segment was
    # replaced: opening replaces it (a note for the read-only tools).
    (path / "FORMAT").write_bytes(format_file(2))
    empty.write_bytes(fmt.encode_segment_header(LAST_LSN + 1, 1) + bytes(1 << 20))
    (path / "LOCK").unlink()
    report = verify_store(str(path))
    assert report.result == "clean"
    assert [(p.severity, p.file) for p in report.problems] == [("note", str(empty))]
    assert await read_all(path) == expected()
    assert versions(path) == {"FORMAT": 2, empty.name: 2, fmt.snapshot_name(LAST_LSN): 1}
    await crashed_open(path, purge)
    assert await read_all(path) == expected("purge")


# --- what is refused -------------------------------------------------------------------------


async def test_a_store_whose_format_says_3_is_refused_untouched(tmp_path):
    path = copy_fixture(tmp_path)
    (path / "FORMAT").write_bytes(format_file(3))
    before = {name: (path / name).read_bytes() for name in os.listdir(path)}
    message = f"{path} was written by format version 3; this build reads version 2 and older"
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


async def test_a_version_2_file_under_format_1_is_corrupt(tmp_path):
    """Conversion rewrites FORMAT before it writes any version 2 file, so a
    version 2 segment in a version 1 store is damage (rule H2)."""
    path = copy_fixture(tmp_path)
    # A version 2 header where the version 1 one was (records unchanged).
    segment = path / V1_SEGMENT
    data = segment.read_bytes()
    segment.write_bytes(fmt.encode_segment_header(SNAPSHOT_LSN + 1, 2) + data[32:])
    with pytest.raises(ma.CorruptStore, match=r"at byte offset 8: segment format version 2,"):
        await read_all(path)
    (path / "FORMAT").write_bytes(format_file(2))
    assert await read_all(path) == expected()


# --- crashes during the conversion ----------------------------------------------------------


async def test_every_crash_state_of_the_conversion_opens(tmp_path):
    """The states a crash (or power loss) can leave at each step of the
    conversion, built by hand: each opens with the fixture's content, and
    the next write and checkpoint leave only version 2 files."""
    v2_segment = fmt.segment_name(LAST_LSN + 1)
    header = fmt.encode_segment_header(LAST_LSN + 1)
    states: dict[str, Callable[[Path], None]] = {
        "FORMAT.tmp written, not renamed": lambda p: (p / "FORMAT.tmp").write_bytes(format_file(2)),
        "FORMAT.tmp torn": lambda p: (p / "FORMAT.tmp").write_bytes(format_file(2)[:5]),
        "FORMAT renamed, no new segment": lambda p: (p / "FORMAT").write_bytes(format_file(2)),
        "new segment created, empty": lambda p: (
            (p / "FORMAT").write_bytes(format_file(2)),
            (p / v2_segment).write_bytes(b""),
        ),
        "new segment's header torn": lambda p: (
            (p / "FORMAT").write_bytes(format_file(2)),
            (p / v2_segment).write_bytes(header[:20] + bytes((1 << 20) - 20)),
        ),
        "new segment whole, no record": lambda p: (
            (p / "FORMAT").write_bytes(format_file(2)),
            (p / v2_segment).write_bytes(header + bytes((1 << 20) - 32)),
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
        assert read_store(str(path)).format_version == 2, label
        assert await read_all(path) == expected("purge"), label
        assert versions(path)[V1_SEGMENT] == 1
        async with ma.open_store(path) as store:
            await store.checkpoint()
        assert set(versions(path).values()) == {2}, label
        assert await read_all(path) == expected("purge"), label
        assert verify_store(str(path)).result == "clean", label


_MUTATING = ("create", "write", "write_at", "sync", "sync_dir", "rename", "remove", "truncate")


class _Stop(BaseException):
    """A simulated crash at one I/O call: escapes every `except Exception`."""


class StepIO(FileIO):
    """Counts the mutating calls; at call number `at` (0-based) it fails once
    with `OSError` (mode "fail") or stops, and so does every later mutating
    call (mode "stop": the process is dead)."""

    def __init__(self, at: int | None = None, mode: str = "stop") -> None:
        self._mutex = threading.Lock()
        self.at, self.mode = at, mode
        self.calls: list[tuple[str, str]] = []
        self.dead = False

    def _step(self, method: str, path: str) -> None:
        with self._mutex:
            if self.dead:
                raise _Stop(f"dead: {method} {path}")
            index = len(self.calls)
            self.calls.append((method, os.path.basename(path)))
            if index != self.at:
                return
            if self.mode == "stop":
                self.dead = True
                raise _Stop(f"stopped at {method} {path}")
        raise OSError(errno.EIO, f"injected failure at {method}", path)


def _wrap(method: str) -> Callable[..., Any]:
    base = getattr(FileIO, method)

    def call(self: StepIO, *args: Any) -> Any:
        target = args[0]
        self._step(method, target.path if isinstance(target, Handle) else target)
        return base(self, *args)

    call.__name__ = method
    return call


for _method in _MUTATING:
    setattr(StepIO, _method, _wrap(_method))


def _stopped(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_stopped(inner) for inner in exc.exceptions)
    return isinstance(exc, _Stop)


SWEEP = ("purge", "retire_alpha", "retire_beta")


async def _sweep_run(path: Path, io: StepIO) -> tuple[list[str], list[str]]:
    """The conversion workload: two writes (the first converts the store),
    then a checkpoint (which deletes the version 1 files), then a clean
    close. Returns the writes acknowledged and the writes that raised."""
    acked: list[str] = []
    failed: list[str] = []
    try:
        async with ma.open_store(path, _io=io) as store:
            for name in (*SWEEP, "checkpoint"):
                try:
                    if name == "checkpoint":
                        await store.checkpoint()
                    else:
                        await WRITES[name](store)
                except ma.WriteFailed:
                    failed.append(name)
                else:
                    acked.append(name)
    except BaseException as exc:
        if not _stopped(exc):
            raise
    return acked, failed


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
    assert set(versions(path).values()) == {2}


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
        # and then nothing but version 2 files.
        async with ma.open_store(path) as store:
            for name in ("clear", "delete_ops"):
                await WRITES[name](store)
            await store.checkpoint()
        assert set(versions(path).values()) == {2}, step
        assert await read_all(path) == expected(*present, "clear", "delete_ops"), step
