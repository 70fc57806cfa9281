"""Recovery, checkpoint and memory: big stores, each opened in a fresh process.

Rule 1: one open, one process. Every open is measured in a child process
(`python -m meerkat_actor._bench child SPEC`), so its time and its peak
resident memory are the recovery's own, not the leftovers of the parent
that built the store (the peak is the child's own memory map's high-water
mark: `ru_maxrss` would carry the parent's peak across `exec`).

Rule 2: a recovery counts only if it recovered everything. The child
rebuilds, from the same seed, the plan of every runtime (run ids, input ids
and each input's index) and checks every field of every input state the
reopened store holds against it, plus each runtime's last receipt and its
session snapshot. Anything missing, extra or different fails the run.

Theory of operation. For each size the parent builds one actor store with
a huge `checkpoint_bytes` (so nothing is checkpointed on the way): 1,000
runtimes, each with runs of 1-8 consumed inputs (one receipt per run; the
last run also commits a 4 KiB session snapshot), written by 64 tasks. While
that store is open and idle, `shutil.copytree` copies it: the copy holds
everything in its log only. Closing the original takes a final checkpoint:
it becomes the store that recovers from a snapshot. The same writes go to a
SQLite file. Then three children open the three stores; the child of the
log-only copy afterwards runs `checkpoint()` on it while tasks commit, then
`backup()` to a new directory under the same load, and measures their
latency against the same load with neither. Each child also reports its
peak resident memory right after the open over its resident memory then.
"""

from __future__ import annotations

import gc
import os
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Final

import trio

from .._actor import ActorStore, open_store
from .._ids import LogicalRuntimeId, RunId
from .._sqlite import open_sqlite_store
from .._types import RunApplyBoundary, RunBoundaryReceipt, StoredInputState
from ._children import Measurement, run_child
from ._measure import BenchFailure, current_rss, heartbeat, peak_rss, percentile
from ._payloads import (
    CommitPlan,
    Session,
    Write,
    is_consumed_input,
    plan_runtime,
    sessions,
    write_for,
    write_pool,
)
from ._peers import BenchStore, open_peer
from ._results import BuildRow, CheckpointRow, MemoryRow, RecoveryRow
from ._settings import Settings

__all__ = ["MEASUREMENTS", "run_recovery"]

KIB: Final = 1024
MIB: Final = 1024 * 1024
NEVER: Final = 1 << 50  # checkpoint_bytes: no checkpoint by size
BUILD_TASKS: Final = 64
CHECKPOINT_STATE_LISTS: Final = 256


_MEASURED: Final = {
    "checkpoint": "RSS growth of a new process recovering the store from its snapshot",
    "log": "RSS growth of a new process recovering the store from its log only",
    "file": "RSS growth of a new process opening the file (the rows stay on disk)",
}


# --- the stores' content ------------------------------------------------------------------


def counts(size: int, runtimes: int) -> list[int]:
    """Input states per runtime: `size` spread evenly over `runtimes`."""
    return [size // runtimes + (1 if r < size % runtimes else 0) for r in range(runtimes)]


def _plans(size: int, runtimes: int) -> list[list[CommitPlan]]:
    return [
        plan_runtime(f"recovery/{size}/{r}", count)
        for r, count in enumerate(counts(size, runtimes))
    ]


def _sessions(runtimes: int) -> list[Session]:
    return sessions("recovery", runtimes, 4 * KIB)


async def commit_all(
    store: BenchStore,
    writes: Sequence[Sequence[Write]],
    runtimes: Sequence[Session],
    *,
    before: Callable[[Session], Awaitable[None]] | None = None,
) -> None:
    """Every runtime's writes in order (its last with its session snapshot),
    after `before(session)` if given; runtimes spread over `BUILD_TASKS` tasks."""

    async def task(first: int) -> None:
        for r in range(first, len(writes), BUILD_TASKS):
            session = runtimes[r]
            if before is not None:
                await before(session)
            for n, write in enumerate(writes[r]):
                last = n == len(writes[r]) - 1
                await store.atomic_apply(
                    session.runtime_id,
                    session.delta if last else None,
                    write.receipt,
                    write.states,
                    session.session_id if last else None,
                )

    async with trio.open_nursery() as nursery:
        for first in range(min(BUILD_TASKS, len(writes))):
            nursery.start_soon(task, first)


def disk_bytes(path: str) -> int:
    """The apparent size of every file under a directory (an actor store), or
    of a file with its `-wal` and `-shm` files where they exist (a SQLite
    store)."""
    if os.path.isfile(path):
        return sum(
            os.path.getsize(path + suffix)
            for suffix in ("", "-wal", "-shm")
            if os.path.exists(path + suffix)
        )
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(path)
        for name in names
    )


# --- the parent -----------------------------------------------------------------------------


async def _build(
    size: int, runtimes: int, directory: str, progress: Callable[[str], None]
) -> tuple[BuildRow, dict[str, str]]:
    """The three recovery stores of `size` input states; their paths by source."""
    paths = {
        "checkpoint": os.path.join(directory, "actor"),
        "log": os.path.join(directory, "actor-log-only"),
        "file": os.path.join(directory, "peer.sqlite3"),
    }
    progress(f"recovery {size:,}: preparing {size:,} input states")

    def prepare() -> tuple[list[list[Write]], list[Session]]:
        plans = _plans(size, runtimes)
        return [[write_for(plan) for plan in runtime] for runtime in plans], _sessions(runtimes)

    writes, runtime_sessions = await trio.to_thread.run_sync(prepare)
    receipts = sum(len(w) for w in writes)
    # Millions of long-lived objects: keep the collector from rescanning them.
    await trio.to_thread.run_sync(gc.collect)
    gc.freeze()
    try:
        progress(f"recovery {size:,}: writing the actor store")
        started = time.perf_counter()
        async with open_store(paths["checkpoint"], checkpoint_bytes=NEVER) as store:
            await commit_all(store, writes, runtime_sessions)
            commit_s = time.perf_counter() - started
            progress(f"recovery {size:,}: copying it while open (the log-only store)")
            await trio.to_thread.run_sync(shutil.copytree, paths["checkpoint"], paths["log"])
            closing = time.perf_counter()
        close_s = time.perf_counter() - closing
        progress(f"recovery {size:,}: writing the SQLite file")
        started = time.perf_counter()
        await trio.to_thread.run_sync(partial(os.makedirs, directory, exist_ok=True))
        async with open_sqlite_store(paths["file"], synchronous="OFF") as sqlite:
            await commit_all(sqlite, writes, runtime_sessions)
        sqlite_s = time.perf_counter() - started
    finally:
        del writes
        gc.unfreeze()
    await trio.to_thread.run_sync(gc.collect)
    return BuildRow(size, receipts, commit_s, close_s, sqlite_s), paths


async def run_recovery(
    settings: Settings, workdir: str, progress: Callable[[str], None]
) -> tuple[list[RecoveryRow], list[CheckpointRow], list[MemoryRow], list[BuildRow]]:
    """Build, reopen and checkpoint the recovery stores; measure memory per state."""
    recovery: list[RecoveryRow] = []
    checkpoints: list[CheckpointRow] = []
    memory: list[MemoryRow] = []
    builds: list[BuildRow] = []
    for size in settings.recovery_sizes:
        runtimes = min(settings.recovery_runtimes, size)
        directory = os.path.join(workdir, f"recovery-{size}")
        build, paths = await _build(size, runtimes, directory, progress)
        builds.append(build)
        for source, peer in (("checkpoint", "actor"), ("log", "actor"), ("file", "sqlite")):
            progress(f"recovery {size:,}: opening the {peer} store ({source}) in a new process")
            disk = await trio.to_thread.run_sync(disk_bytes, paths[source])
            spec: dict[str, Any] = {
                "kind": "recover",
                "peer": peer,
                "source": source,
                "path": paths[source],
                "size": size,
                "runtimes": runtimes,
                "receipts": build.receipts,
                "disk_bytes": disk,
                "checkpoint": None,
            }
            if source == "log":
                spec["checkpoint"] = {
                    "tasks": settings.checkpoint_tasks,
                    "pause": settings.checkpoint_pause,
                    "baseline_max": settings.checkpoint_baseline_max,
                }
            result = await run_child(spec)
            row = RecoveryRow(**result["recovery"])
            recovery.append(row)
            if result.get("checkpoint") is not None:
                checkpoints.append(CheckpointRow(**result["checkpoint"]))
            memory.append(
                MemoryRow(
                    peer=peer,
                    input_states=size,
                    bytes_per_state=(row.rss_after_open_mib - row.rss_before_mib) * MIB / size,
                    disk_bytes_per_state=disk / size,
                    measured=_MEASURED[source],
                )
            )
        await trio.to_thread.run_sync(partial(shutil.rmtree, directory, ignore_errors=True))
    size = settings.memory_states
    for peer in ("memory", "dict"):
        progress(f"memory: {size:,} input states in the {peer} peer")
        runtimes = min(settings.recovery_runtimes, size)
        result = await run_child(
            {"kind": "memory", "peer": peer, "size": size, "runtimes": runtimes}
        )
        memory.append(MemoryRow(**result["memory"]))
    return recovery, checkpoints, memory, builds


# --- the child: recovery ----------------------------------------------------------------------


def _check_runtime(
    held: list[StoredInputState], plans: list[CommitPlan], runtime_id: LogicalRuntimeId
) -> int:
    """Check a runtime's recovered input states against its plan, every field
    of every one; return how many there are. Raises `BenchFailure` on the
    first difference."""
    expected: dict[int, tuple[uuid.UUID, uuid.UUID, int]] = {}
    for plan in plans:
        for n, input_id in enumerate(plan.input_ids):
            expected[input_id.int] = (input_id, plan.run_id, plan.first_index + n)
    if len(held) != len(expected):
        raise BenchFailure(f"{runtime_id}: {len(held)} input states, wrote {len(expected)}")
    for stored in held:
        want = expected.pop(stored.input_id.value.int, None)
        if want is None:
            raise BenchFailure(
                f"{runtime_id}: an input state never written (or twice): {stored.input_id}"
            )
        if not is_consumed_input(stored, *want):
            raise BenchFailure(f"{runtime_id}: input state {stored.input_id} differs")
    return len(held)


async def _verify(store: BenchStore, size: int, runtimes: int) -> tuple[int, float]:
    """Check everything the store should hold; return (input states found,
    seconds spent in `load_input_states`)."""
    plans, runtime_sessions = await trio.to_thread.run_sync(
        lambda: (_plans(size, runtimes), _sessions(runtimes))
    )
    found = 0
    reading = 0.0
    for plan, session in zip(plans, runtime_sessions, strict=True):
        started = time.perf_counter()
        held = await store.load_input_states(session.runtime_id)
        reading += time.perf_counter() - started
        found += await trio.to_thread.run_sync(_check_runtime, held, plan, session.runtime_id)
        last = write_for(plan[-1]).receipt
        if await store.load_boundary_receipt(session.runtime_id, last.run_id, 0) != last:
            raise BenchFailure(f"{session.runtime_id}: the last receipt is missing or differs")
        if await store.load_session_snapshot(session.runtime_id) != session.delta.session_snapshot:
            raise BenchFailure(f"{session.runtime_id}: the session snapshot is missing or differs")
    if found != size:
        raise BenchFailure(f"found {found} input states, wrote {size}")
    return found, reading


async def _recover_child(spec: dict[str, Any]) -> dict[str, Any]:
    path, size, runtimes = spec["path"], spec["size"], spec["runtimes"]
    rss_before = await trio.to_thread.run_sync(current_rss)
    checkpoint: dict[str, Any] | None = None
    opened: AbstractAsyncContextManager[BenchStore]
    if spec["peer"] == "actor":
        opened = open_store(path, checkpoint_bytes=NEVER)
    else:
        opened = open_sqlite_store(path, synchronous="FULL")
    with trio.CancelScope() as scope:
        started = time.perf_counter()
        async with opened as store:
            open_s = time.perf_counter() - started
            rss_after = await trio.to_thread.run_sync(current_rss)
            peak = peak_rss()
            found, read_all_s = await _verify(store, size, runtimes)
            if spec["checkpoint"] is not None and isinstance(store, ActorStore):
                checkpoint = await _checkpoint_bench(store, path, size, spec["checkpoint"])
                # Leave without the final checkpoint a clean close would take:
                # this copy is thrown away, and that checkpoint would take as
                # long again.
                scope.cancel()
    recovery = RecoveryRow(
        peer=spec["peer"],
        source=spec["source"],
        input_states=size,
        runtimes=runtimes,
        receipts=spec["receipts"],
        found_input_states=found,
        verified=found == size,
        open_s=open_s,
        read_all_s=read_all_s,
        rss_before_mib=rss_before / MIB,
        rss_after_open_mib=rss_after / MIB,
        peak_rss_mib=peak / MIB,
        disk_bytes=spec["disk_bytes"],
        peak_rss_over_after_open=peak / rss_after,
    )
    return {"recovery": asdict(recovery), "checkpoint": checkpoint}


# --- the child: checkpoint under load ----------------------------------------------------------


class _Committers:
    """`tasks` runtimes committing one `atomic_apply` each, then pausing.

    Receipts are prepared in advance (one run, increasing sequence numbers:
    a long run's checkpoint boundaries); the input states cycle through a few
    prepared lists (1-8 each), so later commits update inputs already held.
    """

    def __init__(self, store: ActorStore, tasks: int, pause: float, commits: int) -> None:
        self.store = store
        self.pause = pause
        self.sessions = sessions("checkpointing", tasks, 4 * KIB)
        self.lists = [w.states for w in write_pool("checkpoint", CHECKPOINT_STATE_LISTS)]
        run_id = RunId.new()
        self.receipts = [
            RunBoundaryReceipt(
                run_id=run_id,
                boundary=RunApplyBoundary.RUN_CHECKPOINT,
                contributing_input_ids=tuple(s.input_id for s in self.lists[n % len(self.lists)]),
                conversation_digest=None,
                message_count=n,
                sequence=n,
            )
            for n in range(commits)
        ]
        self.next = 0
        self.exhausted = False
        self.commits: list[_Commit] = []

    async def run(self, stop: trio.Event) -> None:
        async def task(session: Session) -> None:
            due = time.perf_counter()
            while not stop.is_set():
                if self.next >= len(self.receipts):
                    self.exhausted = True
                    return
                n = self.next
                self.next += 1
                begin = time.perf_counter()
                await self.store.atomic_apply(
                    session.runtime_id,
                    session.delta,
                    self.receipts[n],
                    self.lists[n % len(self.lists)],
                    session.session_id,
                )
                end = time.perf_counter()
                self.commits.append(_Commit(due, begin, end))
                due = end + self.pause
                await trio.sleep(self.pause)

        async with trio.open_nursery() as nursery:
            for session in self.sessions:
                nursery.start_soon(task, session)


@dataclass(frozen=True, slots=True)
class _Commit:
    """One commit of a committer task: when the task meant to start it (its
    pause over), when it called `atomic_apply`, and when that returned."""

    due: float
    begin: float
    end: float


def _latencies(commits: list[_Commit], start: float, end: float) -> list[float]:
    """Call latencies of the commits that ran (at least partly) between start and end."""
    return [c.end - c.begin for c in commits if c.begin < end and c.end > start]


def _delays(commits: list[_Commit], start: float, end: float) -> list[float]:
    """For the commits due (at least partly) between start and end: how long
    after its due time each one returned. Unlike the call latency this also
    counts a stall of the event loop while the task should have been calling."""
    return [c.end - c.due for c in commits if c.due < end and c.end > start]


@dataclass(frozen=True, slots=True)
class _Stretch:
    """The load's figures over one stretch: commit latencies (s), the worst
    delay, loop lag and garbage collection (s), and how long it lasted."""

    seconds: float
    latencies: list[float]
    worst_delay: float
    worst_lag: float
    worst_gc: float

    def figures(self, suffix: str) -> dict[str, Any]:
        """The `CheckpointRow` fields of this stretch, named with `suffix`."""
        return {
            f"commits_{suffix}": len(self.latencies),
            f"p50_commit_ms_{suffix}": percentile(self.latencies, 0.5) * 1000,
            f"p99_commit_ms_{suffix}": percentile(self.latencies, 0.99) * 1000,
            f"worst_commit_ms_{suffix}": max(self.latencies) * 1000,
            f"worst_delay_ms_{suffix}": self.worst_delay * 1000,
            f"worst_loop_lag_ms_{suffix}": self.worst_lag * 1000,
            f"worst_gc_pause_ms_{suffix}": self.worst_gc * 1000,
        }

    @property
    def p99(self) -> float:
        return percentile(self.latencies, 0.99)


async def _under_load(
    committers: _Committers, pause: float, work: Callable[[], Awaitable[object]]
) -> tuple[_Stretch, object]:
    """Start the committers, let them settle, run `work` while they commit;
    the stretch's figures and what `work` returned. The stretch lasts at
    least three pauses, so some commit overlaps it even when `work` is
    quicker than one commit cycle (a checkpoint of a `--quick` store)."""
    committers.commits.clear()
    async with heartbeat() as beat, trio.open_nursery() as nursery:
        stop = trio.Event()
        nursery.start_soon(committers.run, stop)
        await trio.sleep(max(0.1, 10 * pause))
        beat.reset()
        start = time.perf_counter()
        result = await work()
        rest = start + 3 * pause - time.perf_counter()
        if rest > 0:
            await trio.sleep(rest)
        end = time.perf_counter()
        lag = await beat.settle()
        worst_gc = beat.worst_gc
        stop.set()
    latencies = _latencies(committers.commits, start, end)
    if not latencies:
        raise BenchFailure("no commit ran during a stretch of the checkpoint load")
    delay = max(_delays(committers.commits, start, end), default=0.0)
    return _Stretch(end - start, latencies, delay, lag, worst_gc), result


async def _checkpoint_bench(
    store: ActorStore, path: str, size: int, spec: dict[str, Any]
) -> dict[str, Any]:
    """`checkpoint()`, then `backup()`, under the load; then the load alone."""
    tasks, pause, baseline_max = spec["tasks"], spec["pause"], spec["baseline_max"]
    # Enough prepared commits for a checkpoint and a backup of ~0.2 ms per
    # input state each (several times what this machine takes) and the
    # baseline after them.
    commits = int(tasks / pause * (4e-4 * size + baseline_max + 2))
    committers = await trio.to_thread.run_sync(_Committers, store, tasks, pause, commits)
    during, _ = await _under_load(committers, pause, store.checkpoint)
    target = os.path.join(os.path.dirname(path), "backup-under-load")
    backup, backup_bytes = await _under_load(committers, pause, partial(store.backup, target))
    await trio.to_thread.run_sync(partial(shutil.rmtree, target, ignore_errors=True))
    baseline_s = min(max(during.seconds, backup.seconds, 1.0), baseline_max)
    without, _ = await _under_load(committers, pause, partial(trio.sleep, baseline_s))
    if committers.exhausted:
        raise BenchFailure(f"the checkpoint load ran out of its {commits} prepared commits")
    if not isinstance(backup_bytes, int):
        raise BenchFailure(f"backup() returned {backup_bytes!r}, not its size")

    def snapshot_bytes() -> int:
        names = [n for n in os.listdir(path) if n.startswith("snapshot-")]
        return max(os.path.getsize(os.path.join(path, n)) for n in names)

    row = CheckpointRow(
        input_states=size,
        seconds=during.seconds,
        snapshot_bytes=await trio.to_thread.run_sync(snapshot_bytes),
        tasks=tasks,
        pause_ms=pause * 1000,
        **during.figures("during"),
        baseline_s=without.seconds,
        **without.figures("without"),
        peak_rss_mib=peak_rss() / MIB,
        p99_during_over_without=during.p99 / without.p99,
        backup_s=backup.seconds,
        backup_bytes=backup_bytes,
        **backup.figures("backup"),
        p99_backup_over_without=backup.p99 / without.p99,
    )
    return asdict(row)


# --- the child: memory of the peers without a disk ----------------------------------------------


async def _memory_child(spec: dict[str, Any]) -> dict[str, Any]:
    peer, size, runtimes = spec["peer"], spec["size"], spec["runtimes"]
    await trio.to_thread.run_sync(gc.collect)
    rss_before = await trio.to_thread.run_sync(current_rss)

    def prepare() -> tuple[list[list[Write]], list[Session]]:
        return [[write_for(p) for p in plans] for plans in _plans(size, runtimes)], _sessions(
            runtimes
        )

    writes, runtime_sessions = await trio.to_thread.run_sync(prepare)
    async with open_peer(peer, "") as store:
        await commit_all(store, writes, runtime_sessions)
        del writes
        await trio.to_thread.run_sync(gc.collect)
        rss_after = await trio.to_thread.run_sync(current_rss)
        found, _ = await _verify(store, size, runtimes)
    row = MemoryRow(
        peer=peer,
        input_states=size,
        bytes_per_state=(rss_after - rss_before) / size,
        disk_bytes_per_state=None,
        measured="RSS growth of a new process committing the same content",
    )
    return {"memory": asdict(row), "found": found}


# --- the measurements this module's children run -------------------------------------------

MEASUREMENTS: Final[dict[str, Measurement]] = {"recover": _recover_child, "memory": _memory_child}
