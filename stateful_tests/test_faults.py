"""Fault injection through the I/O layer (SPEC §6; `_fs.FileIO`).

Checkpoint crash points: a checkpoint is a rotation of the log (create the
new segment, write and sync its header, sync the directory, close the old
one) and then the snapshot protocol (create the temp file, write, sync,
close, rename, sync the directory, remove each covered segment and older
snapshot, sync the directory). At each of these steps in turn we either

- *fail*: the call raises `OSError`. The checkpoint reports `WriteFailed`,
  nothing acknowledged is lost, later writes still work; or
- *stop*: the call raises `_Stop`, a `BaseException` no handler catches,
  and every later mutating call does too, as if the process had died there.
  The store is abandoned.

Either way, reopening with a healthy `FileIO` recovers exactly the
acknowledged state, and the directory goes on working (write, checkpoint,
close, reopen).

Log failures: the write or the fdatasync of a group commit fails, once or
every time from then on. The group's callers get `WriteFailed`, later writes
`StorePoisoned`, reads still show the last durable state, the fdatasync is
called exactly once for the failed group (never retried), and a reopen shows
the durable state without the failed group.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import pytest
import trio
from _workload import Operation, plan

import meerkat_actor as ma
from meerkat_actor._actor import ActorStore
from meerkat_actor._format import read_frame
from meerkat_actor._fs import FileIO, Handle
from meerkat_actor.testing import ReferenceModel, assert_store_matches_model

# A store run to each fault at each step of the checkpoint protocol.
pytestmark = pytest.mark.slow


class _Stop(BaseException):
    """A simulated crash at one I/O call: escapes every `except Exception`."""


# --- workload ------------------------------------------------------------------------


_NEEDS_EVERY_EARLIER_OP = ("retire_input_payloads", "purge_runtime")


def _independent(ops: Iterator[Operation]) -> Iterator[Operation]:
    """The plan's operations without explicit checkpoints, and without what
    relies on every earlier operation having been applied (retiring and
    purging what the task wrote, a compare-and-set against the state it
    last committed): here a failed write leaves its effect out."""
    for op in ops:
        if op.kind == "checkpoint" or op.kind in _NEEDS_EVERY_EARLIER_OP:
            continue
        if op.kind == "lifecycle":
            commit, states, _ = op.args
            yield Operation(op.kind, op.runtime_id, (commit, states, ma.UNCHECKED))
        else:
            yield op


def operations(seed: int, count: int, task: int = 0) -> list[Operation]:
    """`count` operations of one task that each apply whatever failed before."""
    return list(islice(_independent(plan(seed, 0, task)), count))


async def commit(store: ma.RuntimeStore, model: ReferenceModel, ops: list[Operation]) -> None:
    """Perform `ops` one by one; each is acknowledged, so the model takes it."""
    for op in ops:
        await op.perform(store)
        op.apply(model)


# --- a file system that fails where it is told -----------------------------------------


def _kind(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(".tmp"):
        return "tmp"
    if name.startswith("log-"):
        return "segment"
    if name.startswith("snapshot-"):
        return "snapshot"
    return "other"


@dataclass(frozen=True)
class Step:
    """The `occurrence`-th call of `method` on a file of `kind` ("dir": any).

    `reported`: whether a failure there fails the checkpoint (closing the
    old segment after the new one is durable does not).
    """

    label: str
    method: str
    kind: str
    occurrence: int = 1
    reported: bool = True


CHECKPOINT_STEPS = (
    Step("rotate: create the new segment", "create", "segment"),
    Step("rotate: write its header", "write_at", "segment"),
    Step("rotate: sync its header", "sync", "segment"),
    Step("rotate: sync the directory", "sync_dir", "dir", 1),
    Step("rotate: close the old segment", "close", "segment", reported=False),
    Step("snapshot: create the temp file", "create", "tmp"),
    Step("snapshot: write", "write", "tmp"),
    Step("snapshot: write its header", "write_at", "tmp"),
    Step("snapshot: sync", "sync", "tmp"),
    Step("snapshot: close", "close", "tmp"),
    Step("snapshot: rename", "rename", "tmp"),
    Step("snapshot: sync the directory", "sync_dir", "dir", 2),
    Step("remove the covered segment", "remove", "segment"),
    Step("remove the older snapshot", "remove", "snapshot"),
    Step("final sync of the directory", "sync_dir", "dir", 3),
)

_MUTATING = {
    "make_dir",
    "create",
    "write",
    "write_at",
    "sync",
    "sync_dir",
    "rename",
    "remove",
    "truncate",
}


class FaultyIO(FileIO):
    """`FileIO` that, once armed, fails or stops at one step.

    `calls` lists `(method, kind)` of every call since arming; `fired` says
    whether the fault struck. After a stop every mutating call stops too:
    the "process" is dead (closing files and releasing the lock still work,
    as the kernel does them for a dead process).
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.step: Step | None = None
        self.mode = "fail"
        self.calls: list[tuple[str, str]] = []
        self.fired = False
        self.dead = False

    def arm(self, step: Step | None, mode: str) -> None:
        with self._mutex:
            self.step, self.mode, self.calls, self.fired = step, mode, [], False

    def disarm(self) -> None:
        with self._mutex:
            self.step = None

    def _at(self, method: str, path: str) -> None:
        with self._mutex:
            if self.dead and method in _MUTATING:
                raise _Stop(f"dead: {method} {path}")
            step = self.step
            if step is None:
                return
            kind = "dir" if method in ("sync_dir", "list_dir") else _kind(path)
            self.calls.append((method, kind))
            if self.fired or method != step.method or kind != step.kind:
                return
            if self.calls.count((method, kind)) < step.occurrence:
                return
            self.fired = True
            if self.mode == "stop":
                self.dead = True
                raise _Stop(f"stopped at {step.label}: {method} {path}")
        raise OSError(errno.EIO, f"injected failure at {step.label}", path)

    def create(self, path: str) -> Handle:
        self._at("create", path)
        return super().create(path)

    def write(self, handle: Handle, data: bytes) -> None:
        self._at("write", handle.path)
        super().write(handle, data)

    def write_at(self, handle: Handle, offset: int, data: bytes) -> None:
        self._at("write_at", handle.path)
        super().write_at(handle, offset, data)

    def sync(self, handle: Handle) -> None:
        self._at("sync", handle.path)
        super().sync(handle)

    def close(self, handle: Handle) -> None:
        self._at("close", handle.path)
        super().close(handle)

    def rename(self, source: str, target: str) -> None:
        self._at("rename", source)
        super().rename(source, target)

    def sync_dir(self, path: str) -> None:
        self._at("sync_dir", path)
        super().sync_dir(path)

    def remove(self, path: str) -> None:
        self._at("remove", path)
        super().remove(path)

    def truncate(self, path: str, size: int) -> None:
        self._at("truncate", path)
        super().truncate(path, size)

    def make_dir(self, path: str) -> None:
        self._at("make_dir", path)
        super().make_dir(path)


def _stopped(exc: BaseException) -> bool:
    """Whether `exc` is `_Stop`, alone or inside (nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_stopped(inner) for inner in exc.exceptions)
    return isinstance(exc, _Stop)


async def until_stopped(body: Callable[[], Awaitable[None]]) -> None:
    """Run `body`, which must end by the simulated crash (`_Stop`)."""
    try:
        await body()
    except BaseException as exc:
        if not _stopped(exc):
            raise
    else:
        pytest.fail("the injected stop did not escape the store")


async def reopen_and_compare(directory: Path, model: ReferenceModel, seed: int) -> None:
    """A healthy reopen shows the model; the directory then works as usual."""
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)
        await commit(store, model, operations(seed + 1000, 40)[-5:])
        await store.checkpoint()
        await commit(store, model, operations(seed + 2000, 3))
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)


async def prepare(store: ActorStore, model: ReferenceModel, ops: list[Operation]) -> None:
    """Leave a snapshot and a segment behind it, each with records the next
    checkpoint covers: it then has a segment and a snapshot to remove."""
    await commit(store, model, ops[:10])
    await store.checkpoint()
    await commit(store, model, ops[10:20])


# --- checkpoint crash points --------------------------------------------------------------


def test_the_steps_are_those_a_checkpoint_makes(tmp_path: Path) -> None:
    """Guard: the listed steps are exactly the calls of a healthy checkpoint
    (the two removes in either order), so none is left untested."""
    io = FaultyIO()

    async def main() -> None:
        async with ma.open_store(tmp_path / "store", _io=io) as store:
            await prepare(store, ReferenceModel(), operations(1, 20))
            io.arm(Step("never", "none", "none"), "fail")
            await store.checkpoint()
            io.disarm()

    trio.run(main)
    expected = [(step.method, step.kind) for step in CHECKPOINT_STEPS]
    swapped = [*expected[:-3], expected[-2], expected[-3], expected[-1]]
    assert io.calls in (expected, swapped)


def _steps() -> list[object]:
    return [pytest.param(step, id=step.label) for step in CHECKPOINT_STEPS]


@pytest.mark.parametrize(
    "step",
    _steps(),
)
async def test_a_failed_checkpoint_step_loses_nothing(tmp_path: Path, step: Step) -> None:
    """The checkpoint raises WriteFailed; reads and later writes go on; a
    reopen after a crash (no clean close, so no final checkpoint to tidy up)
    recovers every acknowledged write."""
    io = FaultyIO()
    model = ReferenceModel()
    ops = operations(7, 40)
    directory = tmp_path / "store"
    with trio.CancelScope() as crash:
        async with ma.open_store(directory, _io=io) as store:
            await prepare(store, model, ops)
            io.arm(step, "fail")
            if step.reported:
                with pytest.raises(ma.WriteFailed, match="checkpoint"):
                    await store.checkpoint()
            else:
                await store.checkpoint()
            assert io.fired
            io.disarm()
            await assert_store_matches_model(store, model)
            await commit(store, model, ops[20:30])  # later writes work
            await assert_store_matches_model(store, model)
            crash.cancel()
            await trio.sleep_forever()
    await reopen_and_compare(directory, model, seed=7)


@pytest.mark.parametrize(
    "step",
    _steps(),
)
async def test_a_failed_checkpoint_can_be_retried_at_once(tmp_path: Path, step: Step) -> None:
    """With no write in between, the same checkpoint again succeeds."""
    io = FaultyIO()
    model = ReferenceModel()
    async with ma.open_store(tmp_path / "store", _io=io) as store:
        await prepare(store, model, operations(8, 20))
        io.arm(step, "fail")
        with contextlib.suppress(ma.WriteFailed):
            await store.checkpoint()
        io.disarm()
        await store.checkpoint()
        assert store.statistics().checkpoints == 2
    await reopen_and_compare(tmp_path / "store", model, seed=8)


async def test_a_failed_rotation_then_a_crash_in_the_next_checkpoint(tmp_path: Path) -> None:
    """Even an empty leftover segment (its header write failed) breaks
    recovery once a later rotation puts another segment after it."""
    io = FaultyIO()
    model = ReferenceModel()
    ops = operations(12, 40)
    directory = tmp_path / "store"

    async def run() -> None:
        async with ma.open_store(directory, _io=io) as store:
            await prepare(store, model, ops)
            io.arm(CHECKPOINT_STEPS[1], "fail")  # rotate: write its header
            with pytest.raises(ma.WriteFailed):
                await store.checkpoint()
            io.disarm()
            await commit(store, model, ops[20:30])
            io.arm(CHECKPOINT_STEPS[6], "stop")  # snapshot: write
            await store.checkpoint()

    await until_stopped(run)
    await reopen_and_compare(directory, model, seed=12)


@pytest.mark.parametrize("step", _steps())
async def test_a_crash_at_a_checkpoint_step_loses_nothing(tmp_path: Path, step: Step) -> None:
    io = FaultyIO()
    model = ReferenceModel()
    directory = tmp_path / "store"

    async def run() -> None:
        async with ma.open_store(directory, _io=io) as store:
            await prepare(store, model, operations(9, 20))
            io.arm(step, "stop")
            await store.checkpoint()

    await until_stopped(run)
    await reopen_and_compare(directory, model, seed=9)


async def test_a_crash_while_the_log_rotates_under_load_loses_nothing(tmp_path: Path) -> None:
    """A size-triggered checkpoint stopped at the new segment's creation,
    while eight tasks commit: every acknowledged write is recovered."""
    io = FaultyIO()
    model = ReferenceModel()
    directory = tmp_path / "store"
    acknowledged = 0

    async def writer(store: ma.RuntimeStore, ops: list[Operation]) -> None:
        nonlocal acknowledged
        for op in ops:
            await op.perform(store)
            op.apply(model)
            acknowledged += 1

    async def run() -> None:
        async with ma.open_store(directory, _io=io, checkpoint_bytes=4096) as store:
            io.arm(CHECKPOINT_STEPS[0], "stop")
            async with trio.open_nursery() as nursery:
                for task in range(8):
                    nursery.start_soon(writer, store, operations(10, 200, task))

    await until_stopped(run)
    assert 0 < acknowledged < 8 * 200
    await reopen_and_compare(directory, model, seed=10)


# --- log write and fdatasync failures -----------------------------------------------------


class FailingLog(FileIO):
    """`FileIO` whose log record writes (the group's first record goes in,
    then EIO) or log syncs fail from `arm()` on, once or persistently; it
    counts log syncs.

    Persistently means the disk is gone: every later write to a segment
    fails, including the zeros the store writes to take a failed group back.
    """

    def __init__(self, method: str, persistent: bool) -> None:
        self.method = method
        self.persistent = persistent
        self.armed = False
        self.failures = 0
        self.syncs_since_armed = 0

    def arm(self) -> None:
        self.armed = True

    def _fail_now(self, method: str, handle: Handle) -> bool:
        if not (self.armed and method == self.method and _kind(handle.path) == "segment"):
            return False
        return self.persistent or not self.failures

    def write_at(self, handle: Handle, offset: int, data: bytes) -> None:
        if self._fail_now("write", handle):
            if any(data):  # records; zeros are the store taking a failed group back
                self.failures += 1
                first = read_frame(data, 0, len(data)).end
                super().write_at(handle, offset, data[:first])
            raise OSError(errno.EIO, "injected write failure", handle.path)
        super().write_at(handle, offset, data)

    def sync(self, handle: Handle) -> None:
        if self.armed and _kind(handle.path) == "segment":
            self.syncs_since_armed += 1
        if self._fail_now("sync", handle):
            self.failures += 1
            raise OSError(errno.EIO, "injected fdatasync failure", handle.path)
        super().sync(handle)


async def _outcome(call: Callable[[], object]) -> BaseException | None:
    try:
        await call()  # type: ignore[misc]
    except ma.RuntimeStoreError as exc:
        return exc
    return None


@pytest.mark.parametrize(
    ("method", "persistent"),
    [
        pytest.param("write", False, id="write-once"),
        pytest.param("write", True, id="write-persistent"),
        pytest.param("sync", False, id="sync-once"),
        pytest.param("sync", True, id="sync-persistent"),
    ],
)
async def test_a_log_failure_poisons_the_store(
    tmp_path: Path, method: str, persistent: bool
) -> None:
    io = FailingLog(method, persistent)
    model = ReferenceModel()
    ops = operations(11, 60)
    directory = tmp_path / "store"
    async with ma.open_store(directory, _io=io) as store:
        await commit(store, model, ops[:20])
        io.arm()
        # Many callers at once: the first group fails, groups behind it too.
        outcomes: list[BaseException | None] = [None] * 20

        async def attempt(index: int, op: Operation) -> None:
            outcomes[index] = await _outcome(lambda: op.perform(store))

        async with trio.open_nursery() as nursery:
            for index, op in enumerate(ops[20:40]):
                nursery.start_soon(attempt, index, op)
        assert all(isinstance(error, ma.WriteFailed) for error in outcomes), outcomes
        failed_group = [e for e in outcomes if not isinstance(e, ma.StorePoisoned)]
        assert failed_group, "no caller got the group's WriteFailed"
        assert all(isinstance(e.__cause__, OSError) for e in outcomes if e is not None)
        assert io.failures == 1
        assert io.syncs_since_armed == (1 if method == "sync" else 0), "fdatasync retried"
        # Reads still served: the last durable state.
        await assert_store_matches_model(store, model)
        # Later writes are refused without touching the disk.
        for op in ops[40:45]:
            with pytest.raises(ma.StorePoisoned):
                await op.perform(store)
        with pytest.raises(ma.StorePoisoned):
            await store.checkpoint()
        assert io.failures == 1
        assert io.syncs_since_armed == (1 if method == "sync" else 0), "fdatasync retried"
        await assert_store_matches_model(store, model)
        assert "poisoned" in repr(store)
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)
        await commit(store, model, ops[45:50])
    async with ma.open_store(directory) as store:
        await assert_store_matches_model(store, model)
