"""Crash-state (power-loss) simulation for the durable store.

`kill -9` cannot show a power loss: the page cache keeps every write the
dead process made. This module records what a workload asks of the file
system and builds the disk states a power loss could leave at each point.

1. `Recorder`, a `FileIO`, performs every call on a real directory (the
   store works as usual; its fsyncs are recorded, not made, which changes
   nothing but speed) and logs every mutating operation in order, with the
   bytes written: `Write` (`write`, `write_at`), `Truncate`, `Link`
   (`create`, `make_dir`, `make_new_dir`, the LOCK file `lock` creates),
   `Unlink` (`remove`), `Rename`, `Sync` (`sync`: fdatasync) and `SyncDir`.
   The workload notes its *marks* (an operation begun, acknowledged, a
   backup begun or returned) at their place in that log.
2. The rules, POSIX's without the help ext4 gives in practice: a file's
   data is durable once a `Sync` of that file (or `Truncate`, which fsyncs)
   follows it; a directory entry (`Link`, `Unlink`, `Rename`) once a
   `SyncDir` of its directory (for a rename: of the target's directory)
   follows it. At a crash point (after the first `c` operations) every
   operation that is not yet durable may or may not have reached the disk,
   and a write may have reached it in part (a page at a time). `crash_states`
   builds, for one crash point: only what was durable (`durable`); everything
   (`all`, what `kill -9` leaves); prefixes of the pending operations in
   issue order (`prefix-<n>`); random subsets of them, each write whole or
   not (`writes-<n>`) or page by page, 4 KiB aligned (`pages-<n>`). The
   pending directory entries of a subset are kept or dropped together with
   every later one of the same name: a rename is never kept without the
   create of the name it moves, which no file system does.
3. `Checker` materialises each state into a fresh directory, opens it with
   the real `ma.open_store` (once per distinct state: equal states share
   one open), runs `verify_store` on it first, and checks it against the
   marks before the crash point: every acknowledged operation present with
   its exact value, the one operation each task may have had in flight
   wholly present or wholly absent (a task's runtime equals the reference
   model's with or without it; an atomic apply's receipt, input states and
   session come together or not at all), the shared OAuth counter between
   the acknowledged increments and those plus the in-flight ones, and no
   error. A backup's target must be absent, refused as incomplete
   (`ReadFailed` naming it and INCOMPLETE) before the backup returned, or
   open with exactly the state the backup was asked for.

`HYPOTHESIS_PROFILE` chooses how much is checked (`Scale`): `ci` samples
the crash points and a few states each; `deep` takes every crash point and
more states each.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import trio
from _workload import Operation, Read, plan, reads_for, runtime_id

import meerkat_actor as ma
from meerkat_actor._fs import FileIO, Handle, LockHandle
from meerkat_actor._verifier import verify_store
from meerkat_actor.testing import ReferenceModel

PAGE = 4096
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")


# --- what the simulation takes, per profile ------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """How much one simulation checks.

    `points`: crash points sampled (None: every one); `prefixes`, `writes`,
    `pages`: how many states of each kind per crash point (None for
    `prefixes`: every prefix); `recoveries`: how many crash states are
    opened again while recorded, to crash that recovery in turn.
    """

    points: int | None
    prefixes: int | None
    writes: int
    pages: int
    recoveries: int


SCALES = {
    "ci": Scale(points=150, prefixes=1, writes=1, pages=2, recoveries=6),
    "deep": Scale(points=None, prefixes=None, writes=3, pages=6, recoveries=100),
}
SCALE = SCALES.get(PROFILE, Scale(points=30, prefixes=1, writes=1, pages=1, recoveries=2))


# --- the recorded operations ----------------------------------------------------------------


@dataclass(frozen=True)
class Write:
    ino: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Truncate:
    """`FileIO.truncate`: cut and fsync, so durable at once with every
    earlier write of the file."""

    ino: int
    size: int


@dataclass(frozen=True)
class Link:
    """A new directory entry: a file or directory created."""

    parent: int
    name: str
    ino: int
    directory: bool


@dataclass(frozen=True)
class Unlink:
    parent: int
    name: str
    ino: int


@dataclass(frozen=True)
class Rename:
    parent: int
    name: str
    new_parent: int
    new_name: str
    ino: int


@dataclass(frozen=True)
class Sync:
    ino: int


@dataclass(frozen=True)
class SyncDir:
    ino: int


Op = Write | Truncate | Link | Unlink | Rename | Sync | SyncDir
_META = (Link, Unlink, Rename)


@dataclass
class Entry:
    """A recorded operation; `durable_at`: the index of the operation that
    made it durable (None: nothing did)."""

    op: Op
    label: str
    durable_at: int | None = None


@dataclass(frozen=True)
class Begin:
    task: int
    index: int


@dataclass(frozen=True)
class Ack:
    task: int
    index: int


@dataclass(frozen=True)
class BackupBegin:
    """A backup to `target` (relative to the root) asked for while no
    operation was in flight: it must hold `counts[t]` operations of task t."""

    target: str
    counts: tuple[int, ...]


@dataclass(frozen=True)
class BackupAck:
    target: str


Mark = Begin | Ack | BackupBegin | BackupAck

#: A file system state: relative path -> content, None for a directory.
Tree = dict[str, bytes | None]


class Recorder(FileIO):
    """The real file system, with every mutating call recorded (module docstring).

    `root` is the directory under which every recorded path lies; what it
    holds when the recorder is made is the durable starting state. `drop`
    (for the teeth tests): a `sync` or `sync_dir` (the method's name and
    the path) it accepts is recorded as nothing, as if the disk ignored it.
    """

    def __init__(self, root: str | Path, drop: Callable[[str, str], bool] | None = None) -> None:
        self.root = os.path.realpath(root)
        self.drop = drop
        self._mutex = threading.RLock()
        self.entries: list[Entry] = []
        self.marks: list[tuple[int, Mark]] = []
        self.base_files: dict[int, bytes] = {}
        self.base_dirs: dict[int, dict[str, int]] = {0: {}}
        self._dirs: dict[int, dict[str, int]] = {0: {}}  # the current entries
        self._next_ino = 1
        self._handles: dict[int, list[int]] = {}  # fd -> [ino, position]
        self._pending_data: dict[int, list[int]] = {}
        self._pending_meta: dict[int, list[int]] = {}
        self._capture(self.root, 0)

    def _capture(self, path: str, ino: int) -> None:
        for name in sorted(os.listdir(path)):
            child = os.path.join(path, name)
            new = self._new_ino()
            self.base_dirs[ino][name] = new
            self._dirs[ino][name] = new
            if os.path.isdir(child):
                self.base_dirs[new] = {}
                self._dirs[new] = {}
                self._capture(child, new)
            else:
                with open(child, "rb") as file:
                    self.base_files[new] = file.read()

    def _new_ino(self) -> int:
        self._next_ino += 1
        return self._next_ino - 1

    def mark(self, mark: Mark) -> None:
        """Note `mark` here in the log (after every operation recorded so far)."""
        with self._mutex:
            self.marks.append((len(self.entries), mark))

    # --- the namespace ----------------------------------------------------------------------

    def _parts(self, path: str) -> list[str]:
        rel = os.path.relpath(os.path.abspath(path), self.root)
        if rel == ".":
            return []
        if rel.startswith(".."):
            raise AssertionError(f"{path} is outside the recorded root {self.root}")
        return rel.split(os.sep)

    def _lookup(self, path: str) -> tuple[int, str, int | None]:
        """(parent directory ino, name, ino or None) of `path`."""
        parts = self._parts(path)
        if not parts:
            raise AssertionError(f"the recorded root itself: {path}")
        parent = 0
        for part in parts[:-1]:
            parent = self._dirs[parent][part]
        return parent, parts[-1], self._dirs[parent].get(parts[-1])

    def _dir_ino(self, path: str) -> int:
        ino = 0
        for part in self._parts(path):
            ino = self._dirs[ino][part]
        return ino

    def _record(self, op: Op, label: str) -> int:
        index = len(self.entries)
        self.entries.append(Entry(op, label))
        if isinstance(op, Write):
            self._pending_data.setdefault(op.ino, []).append(index)
        elif isinstance(op, Link | Unlink):
            self._pending_meta.setdefault(op.parent, []).append(index)
        elif isinstance(op, Rename):
            self._pending_meta.setdefault(op.new_parent, []).append(index)
        elif isinstance(op, Sync | Truncate):
            for pending in self._pending_data.pop(op.ino, []):
                self.entries[pending].durable_at = index
            self.entries[index].durable_at = index
        elif isinstance(op, SyncDir):
            for pending in self._pending_meta.pop(op.ino, []):
                self.entries[pending].durable_at = index
            self.entries[index].durable_at = index
        return index

    def _link(self, path: str, *, directory: bool) -> int:
        parent, name, _ = self._lookup(path)
        ino = self._new_ino()
        self._dirs[parent][name] = ino
        if directory:
            self._dirs[ino] = {}
        kind = "mkdir" if directory else "create"
        self._record(Link(parent, name, ino, directory), f"{kind} {self._rel(path)}")
        return ino

    def _rel(self, path: str) -> str:
        return "/".join(self._parts(path))

    # --- FileIO -----------------------------------------------------------------------------

    def make_dir(self, path: str) -> None:
        with self._mutex:
            missing = []
            current = os.path.abspath(path)
            while not os.path.isdir(current):
                missing.append(current)
                current = os.path.dirname(current)
            super().make_dir(path)
            for new in reversed(missing):
                self._link(new, directory=True)

    def make_new_dir(self, path: str) -> None:
        with self._mutex:
            super().make_new_dir(path)
            self._link(path, directory=True)

    def lock(self, path: str, *, shared: bool = False) -> LockHandle:
        with self._mutex:
            existed = os.path.lexists(path)
            handle = super().lock(path, shared=shared)
            if not existed:
                self._link(path, directory=False)
            return handle

    def create(self, path: str) -> Handle:
        with self._mutex:
            handle = super().create(path)
            self._handles[handle.fd] = [self._link(path, directory=False), 0]
            return handle

    def create_private(self, path: str) -> None:
        with self._mutex:
            target = os.path.realpath(path)
            if os.path.lexists(target):
                return
            self.close(self.create(target))
            self.sync_dir(os.path.dirname(target))

    def open_write(self, path: str) -> Handle:
        with self._mutex:
            handle = super().open_write(path)
            _, _, ino = self._lookup(path)
            assert ino is not None, path
            self._handles[handle.fd] = [ino, 0]
            return handle

    def write(self, handle: Handle, data: bytes) -> None:
        with self._mutex:
            super().write(handle, data)
            state = self._handles[handle.fd]
            label = f"write {self._rel(handle.path)} {state[1]}+{len(data)}"
            self._record(Write(state[0], state[1], bytes(data)), label)
            state[1] += len(data)

    def write_at(self, handle: Handle, offset: int, data: bytes) -> None:
        with self._mutex:
            super().write_at(handle, offset, data)
            ino = self._handles[handle.fd][0]
            label = f"write_at {self._rel(handle.path)} {offset}+{len(data)}"
            self._record(Write(ino, offset, bytes(data)), label)

    def sync(self, handle: Handle) -> None:
        with self._mutex:
            if self.drop is not None and self.drop("sync", handle.path):
                return
            self._record(Sync(self._handles[handle.fd][0]), f"sync {self._rel(handle.path)}")

    def sync_dir(self, path: str) -> None:
        with self._mutex:
            if self.drop is not None and self.drop("sync_dir", path):
                return
            self._record(SyncDir(self._dir_ino(path)), f"sync_dir {self._rel(path) or '.'}")

    def close(self, handle: Handle) -> None:
        with self._mutex:
            super().close(handle)
            self._handles.pop(handle.fd, None)

    def truncate(self, path: str, size: int) -> None:
        with self._mutex:
            super().truncate(path, size)
            _, _, ino = self._lookup(path)
            assert ino is not None, path
            self._record(Truncate(ino, size), f"truncate {self._rel(path)} {size}")

    def rename(self, source: str, target: str) -> None:
        with self._mutex:
            super().rename(source, target)
            parent, name, ino = self._lookup(source)
            new_parent, new_name, _ = self._lookup(target)
            assert ino is not None, source
            del self._dirs[parent][name]
            self._dirs[new_parent][new_name] = ino
            label = f"rename {self._rel(source)} {self._rel(target)}"
            self._record(Rename(parent, name, new_parent, new_name, ino), label)

    def remove(self, path: str) -> None:
        with self._mutex:
            super().remove(path)
            parent, name, ino = self._lookup(path)
            assert ino is not None, path
            del self._dirs[parent][name]
            self._record(Unlink(parent, name, ino), f"remove {self._rel(path)}")


# --- crash states ---------------------------------------------------------------------------

#: Which pending operations a state keeps: entry index -> the byte ranges
#: kept (relative to the write; `WHOLE` for all of an operation).
Keep = dict[int, list[tuple[int, int]]]
WHOLE: list[tuple[int, int]] = [(0, -1)]


def _names(op: Op) -> list[tuple[int, str]]:
    if isinstance(op, Link | Unlink):
        return [(op.parent, op.name)]
    if isinstance(op, Rename):
        return [(op.parent, op.name), (op.new_parent, op.new_name)]
    return []


def _close_names(entries: list[Entry], pending: list[int], keep: Keep) -> Keep:
    """Drop every pending directory entry kept after an earlier pending one
    of the same name was dropped (module docstring, rule 2)."""
    dropped: set[tuple[int, str]] = set()
    for index in pending:
        names = _names(entries[index].op)
        if not names:
            continue
        if index not in keep or dropped.intersection(names):
            keep.pop(index, None)
            dropped.update(names)
    return keep


def build(rec: Recorder, point: int, keep: Keep) -> Tree:
    """The disk after the first `point` operations, with the durable ones
    and the pending ones `keep` names (each in part, if it says so)."""
    files = {ino: bytearray(data) for ino, data in rec.base_files.items()}
    dirs = {ino: dict(entries) for ino, entries in rec.base_dirs.items()}
    for entry in rec.entries[:point]:
        if isinstance(entry.op, Link) and entry.op.directory:
            dirs[entry.op.ino] = {}  # exists, whether or not its entry survives
    for index in range(point):
        entry = rec.entries[index]
        op = entry.op
        durable = entry.durable_at is not None and entry.durable_at < point
        ranges = WHOLE if durable else keep.get(index)
        if isinstance(op, Write):
            content = files.setdefault(op.ino, bytearray())
            for low, until in ranges or ():
                high = len(op.data) if until < 0 else until
                start = op.offset + low
                if len(content) < start:
                    content.extend(bytes(start - len(content)))
                content[start : op.offset + high] = op.data[low:high]
        elif isinstance(op, Truncate):
            content = files.setdefault(op.ino, bytearray())
            del content[op.size :]
            content.extend(bytes(op.size - len(content)))
        elif ranges is None:
            continue
        elif isinstance(op, Link):
            dirs[op.parent][op.name] = op.ino
        elif isinstance(op, Unlink):
            if dirs[op.parent].get(op.name) == op.ino:
                del dirs[op.parent][op.name]
        elif isinstance(op, Rename):
            if dirs[op.parent].get(op.name) == op.ino:
                del dirs[op.parent][op.name]
            dirs[op.new_parent][op.new_name] = op.ino
    tree: Tree = {}

    def walk(ino: int, prefix: str) -> None:
        for name, child in dirs[ino].items():
            path = prefix + name
            if child in dirs:
                tree[path] = None
                walk(child, path + "/")
            else:
                tree[path] = bytes(files.get(child, b""))

    walk(0, "")
    return tree


def pending_at(rec: Recorder, point: int) -> list[int]:
    """The operations among the first `point` that may or may not be on the disk."""
    return [
        index
        for index, entry in enumerate(rec.entries[:point])
        if isinstance(entry.op, Write | Link | Unlink | Rename)
        and (entry.durable_at is None or entry.durable_at >= point)
    ]


def _pages(op: Write) -> list[tuple[int, int]]:
    """The write's bytes split at the file's page boundaries."""
    pieces = []
    low = 0
    while low < len(op.data):
        high = min(len(op.data), (op.offset + low) // PAGE * PAGE + PAGE - op.offset)
        pieces.append((low, high))
        low = high
    return pieces


def crash_states(
    rec: Recorder, point: int, scale: Scale, rng: random.Random
) -> Iterator[tuple[str, Keep]]:
    """The states to check at one crash point: (label, what they keep)."""
    pending = pending_at(rec, point)
    yield "durable", {}
    if not pending:
        return
    yield "all", dict.fromkeys(pending, WHOLE)
    cuts = list(range(1, len(pending)))
    if scale.prefixes is not None:
        cuts = sorted(rng.sample(cuts, min(scale.prefixes, len(cuts))))
    for cut in cuts:
        yield f"prefix-{cut}", dict.fromkeys(pending[:cut], WHOLE)
    entries = rec.entries
    for draw in range(scale.writes):
        keep = {index: WHOLE for index in pending if rng.random() < 0.5}
        yield f"writes-{draw}", _close_names(entries, pending, keep)
    if not any(isinstance(entries[index].op, Write) for index in pending):
        return
    for draw in range(scale.pages):
        keep = {}
        for index in pending:
            op = entries[index].op
            if isinstance(op, Write):
                kept = [piece for piece in _pages(op) if rng.random() < 0.5]
                if kept:
                    keep[index] = kept
            elif rng.random() < 0.5:
                keep[index] = WHOLE
        yield f"pages-{draw}", _close_names(entries, pending, keep)


def crash_points(rec: Recorder, scale: Scale, rng: random.Random) -> list[int]:
    """After each operation (1 .. len), or a sample of them: first the points
    right after a directory operation, a directory sync or a truncation (where
    files appear, move and go: the first open, rotations, checkpoints,
    backups, recovery's repairs), then others at random, and the last."""
    points = list(range(1, len(rec.entries) + 1))
    if scale.points is None or len(points) <= scale.points:
        return points
    rare = [
        point
        for point in points[:-1]
        if isinstance(rec.entries[point - 1].op, Link | Unlink | Rename | SyncDir | Truncate)
    ]
    chosen = set(rng.sample(rare, min(len(rare), scale.points // 2)))
    rest = [point for point in points[:-1] if point not in chosen]
    chosen.update(rng.sample(rest, scale.points - 1 - len(chosen)))
    return sorted({*chosen, points[-1]})


def materialise(tree: Tree, directory: Path) -> None:
    for path, content in sorted(tree.items()):
        target = directory / path
        if content is None:
            target.mkdir(mode=0o700)
        else:
            target.write_bytes(content)
            target.chmod(0o600)


def tree_key(tree: Tree) -> tuple[tuple[str, str], ...]:
    """A state's identity."""
    return tuple(
        (path, "dir" if content is None else hashlib.sha1(content).hexdigest())
        for path, content in sorted(tree.items())
    )


def subtree(tree: Tree, top: str) -> Tree:
    return {path: content for path, content in tree.items() if path.split("/")[0] == top}


# --- the workload ---------------------------------------------------------------------------


STORE = "store"
BACKUP = "backup"


@dataclass(frozen=True)
class Workload:
    """`tasks` tasks commit concurrently (group commits): `first` operations
    each in a new store with `checkpoint_bytes` (size-triggered checkpoints
    and log rotations), then an explicit checkpoint and a backup, a clean
    close, a reopen, and `second` more each; then the store is abandoned
    (no clean close). `backup`: whether to make the backup."""

    seed: int
    tasks: int = 3
    first: int = 12
    second: int = 8
    checkpoint_bytes: int = 6000
    backup: bool = True

    def operations(self) -> list[list[Operation]]:
        total = self.first + self.second
        return [list(islice(plan(self.seed, 0, task), total)) for task in range(self.tasks)]


async def _run_tasks(
    rec: Recorder, store: ma.RuntimeStore, ops: list[list[Operation]], start: int, stop: int
) -> None:
    async def one(task: int) -> None:
        for index in range(start, stop):
            rec.mark(Begin(task, index))
            await ops[task][index].perform(store)
            rec.mark(Ack(task, index))

    async with trio.open_nursery() as nursery:
        for task in range(len(ops)):
            nursery.start_soon(one, task)


async def run_workload(rec: Recorder, workload: Workload) -> None:
    """Run `workload` in `rec.root`, recording it."""
    ops = workload.operations()
    directory = Path(rec.root) / STORE
    async with ma.open_store(
        directory, _io=rec, checkpoint_bytes=workload.checkpoint_bytes
    ) as store:
        await _run_tasks(rec, store, ops, 0, workload.first)
        await store.checkpoint()
        if workload.backup:
            rec.mark(BackupBegin(BACKUP, (workload.first,) * workload.tasks))
            await store.backup(Path(rec.root) / BACKUP)
            rec.mark(BackupAck(BACKUP))
    total = workload.first + workload.second
    with trio.CancelScope() as abandon:
        async with ma.open_store(
            directory, _io=rec, checkpoint_bytes=workload.checkpoint_bytes
        ) as store:
            await _run_tasks(rec, store, ops, workload.first, total)
            abandon.cancel()  # a crash, not a clean close: no final checkpoint
            await trio.sleep_forever()


# --- checking -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What one opened state showed: per task its reads, the OAuth counter,
    the runtimes listed, the warnings recovery logged; or the error."""

    reads: tuple[list[Any], ...] = ()
    counter: int = 0
    runtimes: frozenset[str] = frozenset()
    warnings: int = 0
    error: BaseException | None = None


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@dataclass
class Counts:
    """What a simulation did, for the report."""

    points: int = 0  # crash points
    states: int = 0  # crash states built and checked
    opened: int = 0  # distinct states opened with open_store (and verified)
    recovered_with_warnings: int = 0  # opens that repaired something (torn tail, segment)
    lost_in_flight: int = 0  # in-flight operations found absent
    kept_in_flight: int = 0  # in-flight operations found present
    backup_states: int = 0  # crash states of the backup target checked
    backup_refused: int = 0  # of those, refused as incomplete
    backup_absent: int = 0  # of those, no directory (or no store) yet
    recoveries: int = 0  # crash states opened again while recorded
    recovery_points: int = 0  # crash points of those recoveries
    recovery_states: int = 0  # states checked of those recoveries

    def __str__(self) -> str:
        return ", ".join(f"{name}={value}" for name, value in vars(self).items())


@dataclass
class Checker:
    """Checks the crash states of one recorded workload (module docstring).

    Failures are collected in `failures` (at most `max_failures`), not
    raised, so that a test can also assert that a broken store fails.
    """

    workload: Workload
    scratch: Path
    scale: Scale = SCALE
    max_failures: int = 20
    counts: Counts = field(default_factory=Counts)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ops = self.workload.operations()
        self.reads = [
            reads_for(runtime_id(0, task), task_ops) for task, task_ops in enumerate(self.ops)
        ]
        # model_reads[t][n]: task t's reads after its first n operations.
        self.model_reads: list[list[list[Any]]] = []
        self.increments: list[list[int]] = []
        for task, task_ops in enumerate(self.ops):
            model = ReferenceModel()
            after = [self._model_reads(model, task)]
            increments = [0]
            for op in task_ops:
                op.apply(model)
                after.append(self._model_reads(model, task))
                increments.append(increments[-1] + (op.kind == "oauth_increment"))
            self.model_reads.append(after)
            self.increments.append(increments)
        self._seen: dict[tuple[Any, ...], Observed] = {}

    def _model_reads(self, model: ReferenceModel, task: int) -> list[Any]:
        return [getattr(model, name)(*args) for name, args in self.reads[task]]

    def fail(self, message: str) -> None:
        if len(self.failures) < self.max_failures:
            self.failures.append(message)

    # --- opening a state ---------------------------------------------------------------------

    async def observe(self, tree: Tree, top: str) -> Observed:
        """Open the store at `top` of `tree` (once per distinct content)."""
        key = (top, tree_key(subtree(tree, top)))
        seen = self._seen.get(key)
        if seen is not None:
            return seen
        directory = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            materialise(tree, directory)
            observed = await self._open(directory / top)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        self.counts.opened += 1
        self.counts.recovered_with_warnings += observed.warnings > 0
        self._seen[key] = observed
        return observed

    async def _open(self, directory: Path) -> Observed:
        if (directory / "FORMAT").is_file():
            report = verify_store(str(directory))
            if report.result != "clean":
                problems = "; ".join(str(problem) for problem in report.problems)
                return Observed(error=AssertionError(f"verify: {report.result}: {problems}"))
        handler = _Warnings()
        logger = logging.getLogger("meerkat_actor")
        logger.addHandler(handler)
        try:
            return await self._read(directory, handler)
        except ma.RuntimeStoreError as exc:
            return Observed(error=exc)
        finally:
            logger.removeHandler(handler)

    async def _read(self, directory: Path, handler: _Warnings) -> Observed:
        with trio.CancelScope() as scope:
            async with ma.open_store(directory) as store:
                observed = await self.read_store(store, handler.count)
                scope.cancel()  # leave as a crash would: no final checkpoint
                await trio.sleep_forever()
        return observed

    async def read_store(self, store: ma.RuntimeStore, warnings: int) -> Observed:
        reads = []
        for task_reads in self.reads:
            reads.append([await getattr(store, name)(*args) for name, args in task_reads])
        counter = int(await store.load_auth_oauth_flow_snapshot() or b"0")
        runtimes = frozenset(str(rt) for rt in await store.list_runtimes())
        return Observed(tuple(reads), counter, runtimes, warnings)

    # --- expectations ------------------------------------------------------------------------

    def check_store(self, observed: Observed, marks: list[Mark], where: str) -> None:
        """The main store against the marks made before the crash point."""
        if observed.error is not None:
            self.fail(f"{where}: {type(observed.error).__name__}: {observed.error}")
            return
        begun = [0] * len(self.ops)
        acked = [0] * len(self.ops)
        for mark in marks:
            if isinstance(mark, Begin):
                begun[mark.task] += 1
            elif isinstance(mark, Ack):
                acked[mark.task] += 1
        low = high = 0
        for task, got in enumerate(observed.reads):
            n = acked[task]
            in_flight = begun[task] > n
            low += self.increments[task][n]
            high += self.increments[task][n + in_flight]
            if got == self.model_reads[task][n]:
                if in_flight and got != self.model_reads[task][n + 1]:
                    self.counts.lost_in_flight += 1
                continue
            if in_flight and got == self.model_reads[task][n + 1]:
                self.counts.kept_in_flight += 1
                continue
            self.fail(
                f"{where}: task {task} shows neither its {n} acknowledged operations"
                + (
                    f" nor those and the one in flight ({self.ops[task][n].kind})"
                    if in_flight
                    else ""
                )
                + ": "
                + _difference(self.reads[task], got, self.model_reads[task][n])
            )
        if not low <= observed.counter <= high:
            self.fail(
                f"{where}: OAuth counter {observed.counter}, expected {low} acknowledged"
                f" + up to {high - low} in flight"
            )
        expected = {str(runtime_id(0, task)) for task in range(len(self.ops))}
        if not observed.runtimes <= expected:
            self.fail(f"{where}: unknown runtimes {sorted(observed.runtimes - expected)}")

    async def check_backup(self, tree: Tree, begin: BackupBegin, acked: bool, where: str) -> None:
        """The backup target: absent or refused as incomplete before the
        backup returned, or whole (exactly what it was asked to hold)."""
        self.counts.backup_states += 1
        top = begin.target
        entries = {path for path in tree if path.split("/")[0] == top}
        if not entries - {top}:
            # No directory, or the empty one (an empty directory could only
            # be one that was there before, and this one was not).
            if acked:
                self.fail(f"{where}: backup acknowledged, but {top} is missing or empty")
            elif entries:
                self.fail(f"{where}: backup {top} shows up as an empty directory")
            self.counts.backup_absent += 1
            return
        observed = await self.observe(tree, top)
        error = observed.error
        if error is not None:
            incomplete = (
                isinstance(error, ma.ReadFailed)
                and "INCOMPLETE" in str(error)
                and f"/{top}" in str(error)
            )
            if acked or not incomplete:
                self.fail(f"{where}: backup {top}: {type(error).__name__}: {error}")
            self.counts.backup_refused += 1
            return
        for task, got in enumerate(observed.reads):
            want = self.model_reads[task][begin.counts[task]]
            if got != want:
                self.fail(
                    f"{where}: backup {top}, task {task}: "
                    + _difference(self.reads[task], got, want)
                )
        want_counter = sum(self.increments[task][count] for task, count in enumerate(begin.counts))
        if observed.counter != want_counter:
            self.fail(f"{where}: backup OAuth counter {observed.counter}, expected {want_counter}")

    # --- the simulation ----------------------------------------------------------------------

    async def check_recording(self, rec: Recorder, rng: random.Random) -> list[tuple[int, Tree]]:
        """Check the crash states of `rec`; return the states whose open
        repaired something (candidates to crash during recovery)."""
        repaired: list[tuple[int, Tree]] = []
        distinct: set[tuple[tuple[str, str], ...]] = set()
        for point in crash_points(rec, self.scale, rng):
            self.counts.points += 1
            marks = [mark for at, mark in rec.marks if at <= point]
            backup = next((m for m in marks if isinstance(m, BackupBegin)), None)
            backup_acked = any(isinstance(m, BackupAck) for m in marks)
            for label, keep in crash_states(rec, point, self.scale, rng):
                self.counts.states += 1
                tree = build(rec, point, keep)
                where = f"crash after {point} ({rec.entries[point - 1].label}), {label}"
                observed = await self.observe(tree, STORE)
                self.check_store(observed, marks, where)
                if observed.warnings and observed.error is None:
                    key = tree_key(subtree(tree, STORE))
                    if key not in distinct:
                        distinct.add(key)
                        repaired.append((point, tree))
                if backup is not None:
                    await self.check_backup(tree, backup, backup_acked, where)
                if len(self.failures) >= self.max_failures:
                    return repaired
        return repaired

    async def check_recovery(
        self, rec: Recorder, point: int, tree: Tree, rng: random.Random
    ) -> None:
        """Open the crash state `tree` (of `rec` at `point`) while recording,
        then check that every crash state of that recovery shows what it showed."""
        self.counts.recoveries += 1
        root = Path(tempfile.mkdtemp(dir=self.scratch))
        try:
            materialise(subtree(tree, STORE), root)
            recovery = Recorder(root)
            first = Observed()
            with trio.CancelScope() as scope:
                async with ma.open_store(root / STORE, _io=recovery) as store:
                    first = await self.read_store(store, 0)
                    scope.cancel()
                    await trio.sleep_forever()
        finally:
            shutil.rmtree(root, ignore_errors=True)
        origin = f"crash after {point} ({rec.entries[point - 1].label})"
        marks = [mark for at, mark in rec.marks if at <= point]
        self.check_store(first, marks, f"{origin}, recorded recovery")
        for again in crash_points(recovery, Scale(None, None, 2, 2, 0), rng):
            self.counts.recovery_points += 1
            for label, keep in crash_states(recovery, again, self.scale, rng):
                self.counts.recovery_states += 1
                observed = await self.observe(build(recovery, again, keep), STORE)
                where = (
                    f"{origin}, then a crash during its recovery after {again}"
                    f" ({recovery.entries[again - 1].label}), {label}"
                )
                if observed.error is not None:
                    self.fail(f"{where}: {type(observed.error).__name__}: {observed.error}")
                elif (observed.reads, observed.counter) != (first.reads, first.counter):
                    self.fail(f"{where}: shows something else than the interrupted recovery did")


def _difference(reads: list[Read], got: list[Any], expected: list[Any]) -> str:
    return "; ".join(
        f"{name}{args[1:]}: recovered {g!r}, expected {e!r}"
        for (name, args), g, e in zip(reads, got, expected, strict=True)
        if g != e
    )[:2000]


async def simulate(
    workload: Workload,
    scratch: Path,
    *,
    scale: Scale = SCALE,
    drop: Callable[[str, str], bool] | None = None,
) -> Checker:
    """Record `workload`, then check its crash states and crashes during
    the recovery of some of them; the checker holds counts and failures."""
    root = scratch / "recorded"
    root.mkdir()
    rec = Recorder(root, drop)
    await run_workload(rec, workload)
    shutil.rmtree(root, ignore_errors=True)
    checker = Checker(workload, scratch, scale)
    rng = random.Random(workload.seed)
    repaired = await checker.check_recording(rec, rng)
    if not checker.failures:
        chosen = rng.sample(repaired, min(scale.recoveries, len(repaired)))
        for point, tree in sorted(chosen, key=lambda pair: pair[0]):
            await checker.check_recovery(rec, point, tree, rng)
    return checker
