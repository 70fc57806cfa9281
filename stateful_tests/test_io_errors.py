"""The I/O-error loop (SQLite's `ioerr` tests, for `FileIO`; docs/durability.md).

A workload (a new store; writes of every kind, atomic applies with input
states; group commits from several tasks; size-policy rotations and
checkpoints under a small `checkpoint_bytes`; `checkpoint()`; `backup()`;
close; reopen; writes; close) makes N file operations. For every n (CI: a
smaller workload, and a deterministic sample where it would take too long)
the workload runs again with the n-th operation failing with EIO or ENOSPC,
once or persistently (every later mutating operation too), and
`_ioerr.run_workload` checks:

- only store errors reach the caller, never a bare `OSError`, never a hang;
- every acknowledged write survives, with its value, a healthy reopen after
  the fault; a write that raised `WriteFailed` is whole or absent;
- poisoning as documented: a failed log write poisons (later writes and
  `checkpoint()` raise `StorePoisoned`), a failed checkpoint or backup does
  not, and once a once-only fault is over the next checkpoint succeeds;
- a failed backup leaves nothing at its path, a directory `open_store`
  refuses as incomplete, or the whole backup;
- an open that fails raises `ReadFailed`/`WriteFailed` naming the store; a
  later healthy open recovers, and the store then works.

Run with `-s` to see the counts.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio
from _ioerr import (
    Fault,
    FaultIO,
    Run,
    Workload,
    checkpoint,
    fault_plan,
    matches_some,
    open_or_refuse,
    operations,
    run_workload,
    write,
)
from _workload import Operation

import meerkat_actor as ma
from meerkat_actor.testing import ReferenceModel, assert_store_matches_model

# Hundreds of store lives per test.
pytestmark = pytest.mark.slow

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
DEEP = PROFILE == "deep"

#: CI and dev: a modest workload; deep: a larger one, every n of every mode.
WORKLOAD = (
    Workload(seed=3, sequential=30, tasks=4, per_task=12, after=12, reopened=12)
    if DEEP
    else Workload(seed=1, sequential=10, tasks=3, per_task=5, after=5, reopened=5)
)
#: How many n of the loop each mode runs (None: every n).
SAMPLE: dict[tuple[int, bool], int | None] = (
    dict.fromkeys([(errno.EIO, False), (errno.EIO, True), (errno.ENOSPC, False)], None)
    | {(errno.ENOSPC, True): None}
    if DEEP
    else {
        (errno.EIO, False): 110,
        (errno.ENOSPC, False): 50,
        (errno.EIO, True): 30,
        (errno.ENOSPC, True): 40,
    }
)

MODES = [
    pytest.param(code, persistent, id=f"{errno.errorcode[code]}-{how}")
    for code in (errno.EIO, errno.ENOSPC)
    for persistent, how in ((False, "once"), (True, "persistent"))
]


def _report(title: str, lines: dict[str, object]) -> None:
    print(f"\n{title}")
    for key, value in lines.items():
        print(f"  {key}: {value}")


async def _healthy_count(tmp_path: Path) -> tuple[Run, FaultIO]:
    return await run_workload(tmp_path / "healthy", None, WORKLOAD)


async def test_the_workload_exercises_every_path(tmp_path: Path) -> None:
    """Guard: without a fault the workload commits, groups, rotates,
    checkpoints, backs up and reopens, so the loop reaches all of it."""
    run, io = await _healthy_count(tmp_path)
    methods = Counter(method for method, _ in io.ops)
    created = Counter(name.split("-")[0] for method, name in io.ops if method == "create")
    _report(
        "workload without a fault",
        {
            "file operations": io.count,
            "by method": dict(methods.most_common()),
            "files created": dict(created),
            "outcomes": dict(run.outcomes),
        },
    )
    assert created["log"] >= 4, "too few log rotations"
    assert created["snapshot"] >= 3, "too few checkpoints"
    assert created["INCOMPLETE"] == 1, "no backup"
    assert methods["open_read"] >= 1, "the reopen replays nothing"
    assert run.outcomes["checkpoint done"] == 3
    assert run.outcomes["backup done"] == 1
    assert not run.unknown
    assert len(run.acked) == (
        WORKLOAD.sequential
        + WORKLOAD.tasks * WORKLOAD.per_task
        + WORKLOAD.after
        + WORKLOAD.reopened
        + 3
    )


@pytest.mark.parametrize(("code", "persistent"), MODES)
async def test_io_error_loop(tmp_path: Path, code: int, persistent: bool) -> None:
    _, healthy = await _healthy_count(tmp_path)
    # The count varies with thread timing (how commits group, when the size
    # policy's checkpoints run): try a little past it.
    total = healthy.count * 11 // 10 + 5
    plan = fault_plan(total, SAMPLE[(code, persistent)])
    outcomes: Counter[str] = Counter()
    struck: Counter[str] = Counter()
    violations: list[str] = []
    started = time.perf_counter()
    for n in plan:
        root = tmp_path / f"n{n}"
        root.mkdir()
        try:
            run, io = await run_workload(root, Fault(n, code, persistent), WORKLOAD)
        except AssertionError as exc:
            violations.append(str(exc))
        else:
            outcomes.update(run.outcomes)
            if io.fired:
                struck[io.fired[0][1]] += 1
        shutil.rmtree(root)
    _report(
        f"I/O-error loop, {errno.errorcode[code]}, {'persistent' if persistent else 'once'}"
        f" ({PROFILE} profile)",
        {
            "operations in the workload": healthy.count,
            "faults injected": f"{len(plan)} (n in 1..{total})",
            "first failed operation by method": dict(struck.most_common()),
            "outcomes": dict(outcomes.most_common()),
            "violations": len(violations),
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
    assert sum(struck.values()) >= sum(1 for n in plan if n <= healthy.count * 8 // 10)
    assert not violations, "\n".join(violations[:10])


# --- faults while an existing store opens and recovers ------------------------------------


async def _existing_store(directory: Path) -> list[Operation]:
    """A store that recovery has work in: a snapshot, several segments after
    it, a torn write at the end, and a temp file a crashed checkpoint left.
    Returns the writes it holds, in order."""
    done: list[Operation] = []
    with trio.CancelScope() as crash:
        async with ma.open_store(directory, checkpoint_bytes=4000) as store:
            for op in operations(5, 20, 0, 0):
                await op.perform(store)
                done.append(op)
            await store.checkpoint()
            for op in operations(5, 25, 0, 1):
                await op.perform(store)
                done.append(op)
            crash.cancel()  # no final checkpoint
            await trio.sleep_forever()
    names = sorted(os.listdir(directory))
    last = directory / [n for n in names if n.startswith("log-")][-1]
    (directory / "snapshot-99999999999999999999.snap.tmp").write_bytes(b"half a snapshot")
    with last.open("r+b") as file:
        end = len(file.read().rstrip(b"\0"))
        file.seek(end)
        file.write(b"\x07" * 40)  # a torn record after the last one
    return done


async def test_io_errors_while_opening_an_existing_store(tmp_path: Path) -> None:
    """Fail the n-th operation of the open (persistently: and the writes
    after it): the open raises ReadFailed or WriteFailed naming the store, or
    succeeds with everything; a later healthy open recovers everything, and
    the store works."""
    template = tmp_path / "template"
    base = await _existing_store(template)
    probe = FaultIO()
    shutil.copytree(template, tmp_path / "probe")
    async with ma.open_store(tmp_path / "probe", _io=probe) as store:
        opened_after = probe.count
        await assert_store_matches_model(store, _model(base))
    assert {"truncate", "remove", "read_at", "open_write"} <= {m for m, _ in probe.ops}
    outcomes: Counter[str] = Counter()
    struck: Counter[str] = Counter()
    violations: list[str] = []
    faults = 0
    for code in (errno.EIO, errno.ENOSPC):
        for persistent in (False, True):
            for n in range(1, opened_after + 1):
                faults += 1
                root = tmp_path / f"{code}-{persistent}-{n}"
                shutil.copytree(template, root / "store")
                run = Run(Fault(n, code, persistent), root, acked=list(base))
                io = FaultIO(run.fault)
                try:
                    with trio.fail_after(30):
                        await _open_then_heal(run, io)
                except AssertionError as exc:
                    violations.append(str(exc))
                if io.fired:
                    struck[io.fired[0][1]] += 1
                outcomes.update(run.outcomes)
                shutil.rmtree(root)
    _report(
        "I/O errors while opening an existing store",
        {
            "operations of the open": opened_after,
            "faults injected": faults,
            "failed operation by method": dict(struck.most_common()),
            "outcomes": dict(outcomes.most_common()),
            "violations": len(violations),
        },
    )
    assert not violations, "\n".join(violations[:10])


def _model(ops: list[Operation]) -> ReferenceModel:
    model = ReferenceModel()
    for op in ops:
        op.apply(model)
    return model


async def _open_then_heal(run: Run, io: FaultIO) -> None:
    async with AsyncExitStack() as stack:
        store = await open_or_refuse(run, stack, io, run.directory, 4000)
        if store is not None:
            run.outcomes["opened"] += 1
            try:
                await assert_store_matches_model(store, run.model())
            except AssertionError as exc:
                raise run.fail(f"opened with the fault: {exc}") from exc
            for op in operations(6, 4, 1, 0):
                await write(run, store, op, io)
    io.clear()
    run.poisoned = False
    healthy = FaultIO()
    async with AsyncExitStack() as stack:
        store = await open_or_refuse(run, stack, healthy, run.directory, 4000)
        if store is None:
            raise run.fail("a healthy open after the fault was refused")
        await matches_some(run, store, "healthy open after the fault")
        for op in operations(6, 3, 2, 0):
            await write(run, store, op, healthy)
        await checkpoint(run, store, healthy)
    async with ma.open_store(run.directory) as store:
        try:
            await assert_store_matches_model(store, run.model())
        except AssertionError as exc:
            raise run.fail(f"second healthy open: {exc}") from exc


async def test_a_failed_close_of_a_file_read_in_recovery_does_not_fail_the_open(
    tmp_path: Path,
) -> None:
    """Regression: `close` of the segment recovery had read raised, and the
    bare OSError escaped `open_store`. A read-only descriptor is released by
    close(2) whatever it reports; the open goes on."""
    directory = tmp_path / "store"
    base = await _existing_store(directory)
    io = FaultIO()
    io.next_failure = ("close", "log-")
    async with ma.open_store(directory, _io=io) as store:
        assert io.next_failure is None, "no segment was closed after reading"
        await assert_store_matches_model(store, _model(base))
        for op in operations(6, 3, 1, 0):
            await op.perform(store)
            base.append(op)
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, _model(base))


# --- a disk that fills up and gets its space back, in one process ----------------------------


async def _checkpoint_ops(tmp_path: Path) -> int:
    """How many file operations `checkpoint()` makes after the writes of
    `_disk_full_store` (rotation and snapshot)."""
    io = FaultIO()
    async with ma.open_store(tmp_path / "probe", _io=io) as store:
        for op in operations(8, 15, 0, 0):
            await op.perform(store)
        before = io.count
        await store.checkpoint()
        return io.count - before


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=errno.errorcode.get)
@pytest.mark.parametrize("then", ["checkpoint", "crash"])
async def test_disk_full_during_a_checkpoint_then_space_back(
    tmp_path: Path, then: str, code: int
) -> None:
    """ENOSPC from the n-th operation of `checkpoint()` on (every step of
    the rotation and the snapshot in turn), until the call returns; then the
    space comes back. As docs/durability.md says, the failed checkpoint does
    not poison: without a reopen the store takes writes, and the next
    checkpoint (at once, or after writes) succeeds. Or (`crash`), whatever
    the failed one left behind, a crash after a later rotation (its snapshot
    failing) recovers everything."""
    steps = await _checkpoint_ops(tmp_path)
    outcomes: Counter[str] = Counter()
    violations: list[str] = []
    for n in range(1, steps + 1):
        root = tmp_path / f"n{n}"
        try:
            outcomes[await _fill_then_free(root, n, then, code)] += 1
        except AssertionError as exc:
            violations.append(f"[{errno.errorcode[code]} from op {n}, then {then}] {exc}")
        except ma.RuntimeStoreError as exc:
            violations.append(f"[{errno.errorcode[code]} from op {n}, then {then}] {exc!r}")
    _report(
        f"{errno.errorcode[code]} during checkpoint(), then healthy again, then {then}",
        {
            "operations of the checkpoint": steps,
            "outcomes": dict(outcomes),
            "violations": len(violations),
        },
    )
    assert not violations, "\n".join(violations)


async def _fill_then_free(root: Path, n: int, then: str, code: int) -> str:
    model = ReferenceModel()
    directory = root / "store"
    io = FaultIO()
    with trio.CancelScope() as crash:
        async with ma.open_store(directory, _io=io, checkpoint_bytes=1 << 30) as store:
            for op in operations(8, 15, 0, 0):
                await op.perform(store)
                op.apply(model)
            io.fault = Fault(io.count + n, code, persistent=True)
            outcome = "checkpoint failed, store went on"
            try:
                await store.checkpoint()
            except ma.WriteFailed as exc:
                error: ma.WriteFailed | None = exc
            else:
                error = None
                outcome = "checkpoint survived the fault"  # only a failed close
            assert error is None or type(error) is ma.WriteFailed, repr(error)
            assert error is None or "checkpoint" in str(error), error
            io.clear()  # space is back
            assert "poisoned" not in repr(store)
            if then == "checkpoint":
                await store.checkpoint()  # the next checkpoint works, at once
            for op in operations(8, 5, 1, 0):
                await op.perform(store)  # takes writes without a reopen
                op.apply(model)
            if then == "checkpoint":
                await store.checkpoint()  # and after writes
                for op in operations(8, 5, 2, 0):
                    await op.perform(store)
                    op.apply(model)
            else:
                # A rotation, then the snapshot fails, then a crash.
                io.next_failure = ("create", "snapshot-")
                with pytest.raises(ma.WriteFailed, match="checkpoint"):
                    await store.checkpoint()
                crash.cancel()
                await trio.sleep_forever()
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)
    return outcome


async def test_disk_full_during_writes_then_space_back(tmp_path: Path) -> None:
    """ENOSPC while writes go on: the failed write poisons the store, and it
    stays poisoned when the space comes back (docs/durability.md: until it is
    reopened); the reopen recovers everything acknowledged and works."""
    model = ReferenceModel()
    directory = tmp_path / "store"
    io = FaultIO()
    async with ma.open_store(directory, _io=io, checkpoint_bytes=3000) as store:
        ops = operations(9, 30, 0, 0)
        for op in ops[:10]:
            await op.perform(store)
            op.apply(model)
        io.fault = Fault(io.count + 1, errno.ENOSPC, persistent=True)
        with pytest.raises(ma.WriteFailed) as failed:
            await ops[10].perform(store)
        assert type(failed.value) is ma.WriteFailed
        assert isinstance(failed.value.__cause__, OSError)
        assert failed.value.__cause__.errno == errno.ENOSPC
        io.clear()  # space is back
        for op in ops[11:14]:
            with pytest.raises(ma.StorePoisoned, match="reopen the store"):
                await op.perform(store)
        with pytest.raises(ma.StorePoisoned):
            await store.checkpoint()
        await assert_store_matches_model(store, model)
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)
        for op in ops[14:20]:
            await op.perform(store)
            op.apply(model)
        await store.checkpoint()
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)


async def test_disk_full_while_a_segment_grows(tmp_path: Path) -> None:
    """A segment is zero-filled 1 MiB at a time ahead of its records; the
    write that grows it fails with ENOSPC (half written): the write fails and
    poisons, nothing acknowledged is lost, and the reopen works."""
    model = ReferenceModel()
    directory = tmp_path / "store"
    io = FaultIO()
    big = ma.PersistedOpsSnapshot("big", {"blob": "y" * 200_000})
    rt = ma.LogicalRuntimeId("grow")
    async with ma.open_store(directory, _io=io, checkpoint_bytes=1 << 30) as store:
        for _ in range(4):  # about 800 kB of the first 1 MiB
            await store.persist_ops_lifecycle(rt, big)
        model.persist_ops_lifecycle(rt, big)
        grown = ma.PersistedOpsSnapshot("grown", {"blob": "z" * 300_000})
        io.fault = Fault(io.count + 1, errno.ENOSPC, persistent=False)
        with pytest.raises(ma.WriteFailed):
            await store.persist_ops_lifecycle(rt, grown)
        assert io.fired
        assert io.fired[0][1] == "write_at"
        with pytest.raises(ma.StorePoisoned):
            await store.persist_ops_lifecycle(rt, big)
        assert await store.load_ops_lifecycle(rt) == big
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)
        await store.persist_ops_lifecycle(rt, grown)
        model.persist_ops_lifecycle(rt, grown)
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)
