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
        (errno.EIO, False): None,
        (errno.ENOSPC, False): 60,
        (errno.EIO, True): 40,
        (errno.ENOSPC, True): 60,
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
    total = healthy.count + 5  # the count varies a little with thread timing
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
    assert sum(struck.values()) >= min(len(plan), healthy.count) - 5
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
