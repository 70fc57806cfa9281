"""The I/O-error loop's machinery (SQLite's `ioerr` tests, for `FileIO`).

`FaultIO` counts every file operation a store makes and fails the n-th one
with `OSError(code)`, once only or persistently (that one, and every later
mutating one, until `clear()`). `run_workload` drives one store through a
fixed workload with it, keeps a model of what was acknowledged and the
operations whose outcome is unknown, and checks, as it goes and after a
healthy reopen, what docs/durability.md promises. A violation raises
`AssertionError` naming the fault.

How a failing operation fails:

- most fail before they do anything;
- `write`/`write_at` with ENOSPC write the first half of their data, then
  fail (a disk that fills up part way through a write);
- `close`/`unlock` close the descriptor, then fail (close(2) releases the
  descriptor, and its lock, even when it reports an error).

`sync` and `sync_dir` are counted and fail like the others, but a healthy
one does not call fsync: these tests never cut the power, and without it a
run takes milliseconds instead of a disk's fsync latency per commit.
"""

from __future__ import annotations

import errno
import itertools
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import trio
from _workload import Operation, plan

import meerkat_actor as ma
from meerkat_actor._actor import ActorStore
from meerkat_actor._fs import FileIO, Handle, LockHandle
from meerkat_actor.testing import ReferenceModel, assert_store_matches_model

#: Operations that change the file system: a persistent fault fails these.
#: Reads, `open_write`, `lock`, `close` and `unlock` go on working (a full
#: or failing disk still reads, and opens what exists).
MUTATING = frozenset(
    {
        "make_dir",
        "make_new_dir",
        "make_private",
        "create",
        "create_private",
        "write",
        "write_at",
        "sync",
        "sync_dir",
        "truncate",
        "rename",
        "remove",
    }
)


@dataclass(frozen=True)
class Fault:
    """Fail the `at`-th file operation with `code`; `persistent`: and every
    later mutating one."""

    at: int
    code: int
    persistent: bool

    def __str__(self) -> str:
        how = "persistent" if self.persistent else "once"
        return f"{errno.errorcode[self.code]} at op #{self.at} ({how})"


class FaultIO(FileIO):
    """A `FileIO` that counts its operations and fails as `fault` says."""

    def __init__(self, fault: Fault | None = None) -> None:
        self.fault = fault
        self._mutex = threading.Lock()
        self.count = 0
        self.ops: list[tuple[str, str]] = []  # (method, file name) of each op
        self.fired: list[tuple[int, str, str]] = []  # (op number, method, path) failed
        self.cleared = False
        #: (method, file name prefix): fail the next such call once, with EIO
        #: (a second, targeted fault; not counted in `fired`).
        self.next_failure: tuple[str, str] | None = None

    def clear(self) -> None:
        """The fault is over: every later operation succeeds."""
        with self._mutex:
            self.cleared = True

    @property
    def failing(self) -> bool:
        """Whether the next mutating operation would fail."""
        fault = self.fault
        return bool(self.fired) and fault is not None and fault.persistent and not self.cleared

    def _fails(self, method: str, path: str) -> int | None:
        """Count the operation; the errno to fail it with, or None."""
        with self._mutex:
            self.count += 1
            self.ops.append((method, os.path.basename(path)))
            target = self.next_failure
            if target is not None and (method, True) == (
                target[0],
                os.path.basename(path).startswith(target[1]),
            ):
                self.next_failure = None
                return errno.EIO
            fault = self.fault
            if fault is None or self.cleared:
                return None
            if self.count == fault.at or (
                fault.persistent and self.count > fault.at and method in MUTATING
            ):
                self.fired.append((self.count, method, path))
                return fault.code
            return None

    def _error(self, code: int, method: str, path: str) -> OSError:
        return OSError(code, f"injected {errno.errorcode[code]} in {method}", path)

    def _check(self, method: str, path: str) -> None:
        code = self._fails(method, path)
        if code is not None:
            raise self._error(code, method, path)

    # --- directories --------------------------------------------------------------

    def make_dir(self, path: str) -> None:
        self._check("make_dir", path)
        super().make_dir(path)

    def make_new_dir(self, path: str) -> None:
        self._check("make_new_dir", path)
        super().make_new_dir(path)

    def make_private(self, path: str) -> None:
        self._check("make_private", path)
        super().make_private(path)

    def list_dir(self, path: str) -> list[str]:
        self._check("list_dir", path)
        return super().list_dir(path)

    def file_kind(self, path: str) -> str | None:
        self._check("file_kind", path)
        return super().file_kind(path)

    def sync_dir(self, path: str) -> None:
        self._check("sync_dir", path)

    def lock(self, path: str, *, shared: bool = False) -> LockHandle:
        self._check("lock", path)
        return super().lock(path, shared=shared)

    def unlock(self, lock: LockHandle) -> None:
        code = self._fails("unlock", lock.path)
        super().unlock(lock)
        if code is not None:
            raise self._error(code, "unlock", lock.path)

    # --- files ---------------------------------------------------------------------

    def create(self, path: str) -> Handle:
        self._check("create", path)
        return super().create(path)

    def create_private(self, path: str) -> None:
        self._check("create_private", path)
        super().create_private(path)

    def open_write(self, path: str) -> Handle:
        self._check("open_write", path)
        return super().open_write(path)

    def write(self, handle: Handle, data: bytes) -> None:
        code = self._fails("write", handle.path)
        if code is not None:
            if code == errno.ENOSPC and len(data) > 1:
                super().write(handle, data[: len(data) // 2])
            raise self._error(code, "write", handle.path)
        super().write(handle, data)

    def write_at(self, handle: Handle, offset: int, data: bytes) -> None:
        code = self._fails("write_at", handle.path)
        if code is not None:
            if code == errno.ENOSPC and len(data) > 1:
                super().write_at(handle, offset, data[: len(data) // 2])
            raise self._error(code, "write_at", handle.path)
        super().write_at(handle, offset, data)

    def sync(self, handle: Handle) -> None:
        self._check("sync", handle.path)

    def close(self, handle: Handle) -> None:
        code = self._fails("close", handle.path)
        super().close(handle)
        if code is not None:
            raise self._error(code, "close", handle.path)

    def open_read(self, path: str) -> Handle:
        self._check("open_read", path)
        return super().open_read(path)

    def read_at(self, handle: Handle, offset: int, length: int) -> bytes:
        self._check("read_at", handle.path)
        return super().read_at(handle, offset, length)

    def read(self, path: str) -> bytes:
        self._check("read", path)
        return super().read(path)

    def size(self, path: str, *, follow_symlinks: bool = True) -> int:
        self._check("size", path)
        return super().size(path, follow_symlinks=follow_symlinks)

    def truncate(self, path: str, size: int) -> None:
        self._check("truncate", path)
        super().truncate(path, size)

    def rename(self, source: str, target: str) -> None:
        self._check("rename", source)
        super().rename(source, target)

    def remove(self, path: str) -> None:
        self._check("remove", path)
        super().remove(path)


# --- the workload ------------------------------------------------------------------------


def operations(seed: int, count: int, generation: int, task: int) -> list[Operation]:
    """`count` operations of one task, each valid whatever failed before it:
    no explicit checkpoints, no retiring or purging (they need what the task
    wrote before), lifecycle commits without compare-and-set."""

    def independent() -> Iterator[Operation]:
        for op in plan(seed, generation, task):
            if op.kind in ("checkpoint", "retire_input_payloads", "purge_runtime"):
                continue
            if op.kind == "lifecycle":
                commit, states, _ = op.args
                yield Operation(op.kind, op.runtime_id, (commit, states, ma.UNCHECKED))
            else:
                yield op

    return list(islice(independent(), count))


@dataclass(frozen=True)
class Workload:
    """The store's life: a new store, `sequential` writes, `tasks` tasks of
    `per_task` writes at once (group commits), `checkpoint()`, `backup()`,
    `after` writes, close; reopen, `reopened` writes, `checkpoint()`, close.
    `checkpoint_bytes` is small, so the size policy rotates and checkpoints
    as it goes."""

    seed: int = 1
    sequential: int = 12
    tasks: int = 3
    per_task: int = 6
    after: int = 6
    reopened: int = 6
    checkpoint_bytes: int = 3000


#: Kinds of outcome, counted over the loop.
Outcomes = Counter[str]


@dataclass
class Run:
    """One run of the workload: what was acknowledged, what is unknown."""

    fault: Fault | None
    root: Path
    acked: list[Operation] = field(default_factory=list)
    unknown: list[Operation] = field(default_factory=list)  # raised WriteFailed: whole or absent
    poisoned: bool = False  # a log write failed in the current open store
    outcomes: Outcomes = field(default_factory=Counter)
    backup_model: ReferenceModel | None = None
    backup_raised: bool = False

    @property
    def directory(self) -> Path:
        return self.root / "store"

    @property
    def backup_path(self) -> Path:
        return self.root / "backup"

    def fail(self, message: str) -> AssertionError:
        return AssertionError(f"[{self.fault}] {message}")

    def model(self, extra: tuple[Operation, ...] = ()) -> ReferenceModel:
        model = ReferenceModel()
        for op in (*self.acked, *extra):
            op.apply(model)
        return model


def _typed(run: Run, exc: BaseException, where: str) -> ma.RuntimeStoreError:
    """`exc` must be a store error (never a bare OSError or anything else)."""
    if isinstance(exc, ma.Internal) or not isinstance(exc, ma.RuntimeStoreError):
        raise run.fail(f"{where}: {type(exc).__name__} escaped: {exc!r}") from exc
    return exc


async def write(run: Run, store: ActorStore, op: Operation, io: FaultIO) -> None:
    """Perform one write and check its outcome against the poisoning rules."""
    poisoned = run.poisoned
    try:
        await op.perform(store)
    except BaseException as raw:
        exc = _typed(run, raw, f"{op.kind}")
        if isinstance(exc, ma.StorePoisoned):
            if not poisoned and not run.poisoned:
                raise run.fail(f"{op.kind}: StorePoisoned, but no log write failed: {exc}") from exc
            run.outcomes["write refused: StorePoisoned"] += 1
            return
        if not isinstance(exc, ma.WriteFailed) or type(exc) is not ma.WriteFailed:
            raise run.fail(f"{op.kind}: unexpected {type(exc).__name__}: {exc}") from exc
        if poisoned:
            raise run.fail(
                f"{op.kind} on a poisoned store: WriteFailed, not StorePoisoned: {exc}"
            ) from exc
        if not io.fired:
            raise run.fail(f"{op.kind}: WriteFailed before any fault: {exc}") from exc
        if str(store._directory) not in str(exc) or not isinstance(exc.__cause__, OSError):
            raise run.fail(
                f"{op.kind}: WriteFailed without the store or the cause: {exc!r}"
            ) from exc
        if not store._actor.poison:
            raise run.fail(f"{op.kind}: a failed log write did not poison the store") from exc
        run.poisoned = True
        run.unknown.append(op)
        run.outcomes["write failed: WriteFailed (poisons)"] += 1
        return
    if poisoned:
        raise run.fail(f"{op.kind} succeeded on a poisoned store")
    run.acked.append(op)
    run.outcomes["write acknowledged"] += 1


async def checkpoint(run: Run, store: ActorStore, io: FaultIO) -> None:
    """`checkpoint()`: StorePoisoned iff poisoned; a failure does not poison;
    once a once-only fault is over, a checkpoint succeeds."""
    poisoned = run.poisoned
    over = bool(io.fired) and io.fault is not None and not io.fault.persistent
    try:
        await store.checkpoint()
    except BaseException as raw:
        exc = _typed(run, raw, "checkpoint")
        if isinstance(exc, ma.StorePoisoned):
            if not poisoned:
                raise run.fail(
                    f"checkpoint: StorePoisoned, but no log write failed: {exc}"
                ) from exc
            run.outcomes["checkpoint refused: StorePoisoned"] += 1
            return
        if type(exc) is not ma.WriteFailed or "checkpoint" not in str(exc):
            raise run.fail(f"checkpoint: unexpected {type(exc).__name__}: {exc}") from exc
        if poisoned:
            raise run.fail(f"checkpoint of a poisoned store: not StorePoisoned: {exc}") from exc
        if store._actor.poison:
            raise run.fail(f"a failed checkpoint poisoned the store: {exc}") from exc
        if over:
            # A once-only fault struck before the call: the next checkpoint tries again.
            raise run.fail(f"checkpoint failed after a once-only fault was over: {exc}") from exc
        run.outcomes["checkpoint failed: WriteFailed"] += 1
        return
    if poisoned:
        raise run.fail("checkpoint succeeded on a poisoned store")
    run.outcomes["checkpoint done"] += 1


async def backup(run: Run, store: ActorStore, io: FaultIO) -> None:
    """`backup()`: WriteFailed or done; never poisons. Checked after the run."""
    run.backup_model = run.model()
    try:
        await store.backup(run.backup_path)
    except BaseException as raw:
        exc = _typed(run, raw, "backup")
        if type(exc) is not ma.WriteFailed or str(run.backup_path) not in str(exc):
            raise run.fail(f"backup: unexpected {type(exc).__name__}: {exc}") from exc
        if store._actor.poison and not run.poisoned:
            raise run.fail(f"a failed backup poisoned the store: {exc}") from exc
        run.backup_raised = True
        run.outcomes["backup failed: WriteFailed"] += 1
        return
    run.outcomes["backup done"] += 1


async def open_or_refuse(
    run: Run, stack: AsyncExitStack, io: FileIO, directory: Path, checkpoint_bytes: int
) -> ActorStore | None:
    """Open a store; a refusal must be a store error naming the directory."""
    try:
        return await stack.enter_async_context(
            ma.open_store(directory, _io=io, checkpoint_bytes=checkpoint_bytes)
        )
    except BaseException as raw:
        exc = _typed(run, raw, "open")
        if not isinstance(exc, (ma.ReadFailed, ma.WriteFailed)) or isinstance(
            exc, (ma.StorePoisoned, ma.StoreLocked)
        ):
            raise run.fail(f"open: unexpected {type(exc).__name__}: {exc}") from exc
        if str(directory) not in str(exc):
            raise run.fail(f"open: the error does not name the store's files: {exc}") from exc
        if isinstance(exc, ma.CorruptStore):
            raise run.fail(f"open with a faulty FileIO called the store corrupt: {exc}") from exc
        run.outcomes[f"open refused: {type(exc).__name__}"] += 1
        return None


async def matches_some(run: Run, store: ma.RuntimeStore, where: str) -> None:
    """The store holds every acknowledged write and each unknown one whole
    or not at all; the unknown ones it holds become acknowledged."""
    unknown = run.unknown
    subsets = [
        combo
        for size in (0, len(unknown), *range(1, len(unknown)))
        for combo in itertools.combinations(unknown, size)
    ]
    seen: set[tuple[int, ...]] = set()
    first: AssertionError | None = None
    for combo in subsets:
        key = tuple(id(op) for op in combo)
        if key in seen:
            continue
        seen.add(key)
        try:
            await assert_store_matches_model(store, run.model(combo))
        except AssertionError as exc:
            first = first or exc
            continue
        run.acked.extend(combo)
        run.unknown = []
        if combo:
            run.outcomes["unknown outcome found applied"] += len(combo)
        run.outcomes["unknown outcome found absent"] += len(unknown) - len(combo)
        return
    raise run.fail(
        f"{where}: the store is not the acknowledged writes plus whole unknown ones"
        f" ({len(unknown)} unknown): {first}"
    )


async def run_workload(root: Path, fault: Fault | None, workload: Workload) -> tuple[Run, FaultIO]:
    """Run the workload with `fault`, then check a healthy reopen; raise
    `AssertionError` on any violation."""
    io = FaultIO(fault)
    run = Run(fault, root)
    wl = workload
    with trio.fail_after(60):
        await _life(run, io, wl)
        io.clear()
        await _healthy_reopen(run, wl)
    return run, io


async def _life(run: Run, io: FaultIO, wl: Workload) -> None:
    # A new store: writes, group commits, checkpoint, backup, writes, close.
    async with AsyncExitStack() as stack:
        store = await open_or_refuse(run, stack, io, run.directory, wl.checkpoint_bytes)
        if store is not None:
            for op in operations(wl.seed, wl.sequential, 0, 0):
                await write(run, store, op, io)

            async def task(index: int) -> None:
                for op in operations(wl.seed, wl.per_task, 0, index):
                    await write(run, store, op, io)

            async with trio.open_nursery() as nursery:
                for index in range(1, wl.tasks + 1):
                    nursery.start_soon(task, index)
            await checkpoint(run, store, io)
            await backup(run, store, io)
            for op in operations(wl.seed, wl.after, 0, wl.tasks + 1):
                await write(run, store, op, io)
            # Reads show exactly the durable state: acknowledged writes only.
            try:
                await assert_store_matches_model(store, run.model())
            except AssertionError as exc:
                raise run.fail(f"reads of the open store: {exc}") from exc
    # Reopen with the same FileIO (the fault may strike in recovery).
    run.poisoned = False
    async with AsyncExitStack() as stack:
        store = await open_or_refuse(run, stack, io, run.directory, wl.checkpoint_bytes)
        if store is not None:
            run.outcomes["reopen with the fault: opened"] += 1
            await matches_some(run, store, "reopen with the faulty FileIO")
            for op in operations(wl.seed, wl.reopened, 1, 0):
                await write(run, store, op, io)
            await checkpoint(run, store, io)


async def _healthy_reopen(run: Run, wl: Workload) -> None:
    """After the fault: everything acknowledged is there, the store works."""
    io = FaultIO()
    run.poisoned = False
    async with AsyncExitStack() as stack:
        store = await open_or_refuse(run, stack, io, run.directory, wl.checkpoint_bytes)
        if store is None:
            raise run.fail("a healthy reopen after the fault was refused")
        await matches_some(run, store, "healthy reopen")
        for op in operations(wl.seed, 3, 2, 0):
            await write(run, store, op, io)
        await checkpoint(run, store, io)
    async with ma.open_store(run.directory) as store:
        try:
            await assert_store_matches_model(store, run.model())
        except AssertionError as exc:
            raise run.fail(f"second healthy reopen: {exc}") from exc
    await _check_backup(run)


async def _check_backup(run: Run) -> None:
    """A backup that returned holds the state at its call; one that raised
    left nothing at its path, or a directory `open_store` refuses as
    incomplete, or (its last directory sync failed) the whole backup."""
    path = run.backup_path
    if run.backup_model is None:
        return
    if run.backup_raised and not path.exists():
        run.outcomes["failed backup: nothing at its path"] += 1
        return
    try:
        async with ma.open_store(path) as store:
            try:
                await assert_store_matches_model(store, run.backup_model)
            except AssertionError as exc:
                raise run.fail(f"the backup: {exc}") from exc
    except ma.ReadFailed as exc:
        if not run.backup_raised:
            raise run.fail(f"a backup that returned does not open: {exc}") from exc
        if "incomplete" not in str(exc) or str(path) not in str(exc):
            raise run.fail(f"a failed backup opens with an unexpected error: {exc}") from exc
        run.outcomes["failed backup: refused as incomplete"] += 1
        return
    if run.backup_raised:
        run.outcomes["failed backup: whole"] += 1


def fault_plan(total: int, sample: int | None) -> list[int]:
    """The op numbers to fail: all of 1..total, or `sample` of them spread
    evenly (deterministic)."""
    if sample is None or sample >= total:
        return list(range(1, total + 1))
    step = total / sample
    return sorted({1 + int(i * step) for i in range(sample)} | {total})
