"""The throughput workloads: each peer, each concurrency, the same prepared operations.

Rule 1: pair by pair. For every workload and concurrency level the peers run
one after another on fresh stores in the same directory, with the same
prepared operations, so a ratio compares like with like (and drift of a
shared machine hits neighbours alike).

Rule 2: a row counts only if the store was right. After the clock stops, each
row reads back what its tasks wrote (the input states of every runtime, the
session snapshot, the last receipt; the OAuth counter) and a wrong answer
fails the run with `BenchFailure`. Reads inside the mixed workload are
checked as they return.

Theory of operation. A workload prepares its operations once, in a worker
thread (`_payloads`). Task n of a row is runtime `bench-n` with its own
session; the tasks share the prepared items and take the next one until the
items or the row's time run out (`_measure.drive`). Each row runs beside a
heartbeat, and reads the actor's counters before and after for fsyncs per
commit. The `sqlite3-loop` peer is no store and has no tasks: its row runs
the same prepared writes as one plain loop in one worker thread
(`_sqlite_loop`), beside the same heartbeat, and its file is then read back
through `open_sqlite_store` by the same check as every other row. The mixed
workload's rows also report the latency of its point reads and of its writes
apart (and of each read method), from the item each call ran.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Final

import trio

from .._ids import InputId, RunId
from .._pgcluster import TemporaryCluster, find_binaries
from .._sqlite import open_sqlite_store
from ._measure import BenchFailure, Timed, drive, heartbeat, percentile
from ._payloads import Session, Write, oauth_counter, oauth_increment, sessions, write_pool
from ._peers import PEERS, POSTGRES, BenchStore, open_peer, statistics
from ._results import WORKLOADS, SharedRow, ThroughputRow
from ._settings import Settings
from ._shared import run_shared
from ._sqlite_loop import FILE_NAME, LOOP, LOOP_TASKS, LOOP_WORKLOADS, SqliteLoop

__all__ = ["run_throughput"]

KIB = 1024
MIXED_PRELOAD_WRITES = 4
WRITE_EVERY = 5  # the mixed workload: every fifth operation is a write


@dataclass(frozen=True, slots=True)
class ReadSession:
    pass


@dataclass(frozen=True, slots=True)
class ReadInput:
    input_id: InputId


@dataclass(frozen=True, slots=True)
class ReadReceipt:
    run_id: RunId


MixedOperation = Write | ReadSession | ReadInput | ReadReceipt

#: The store method each kind of point read calls.
READ_CALLS: Final[dict[type[MixedOperation], str]] = {
    ReadSession: "load_session_snapshot",
    ReadInput: "load_input_state",
    ReadReceipt: "load_boundary_receipt",
}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A workload's prepared operations: the runtimes' sessions, the items,
    what each runtime holds before the clock starts, and whether any item
    is a point read."""

    sessions: list[Session]
    items: list[MixedOperation]
    preload: list[Write]
    reads: bool = False


class _Row:
    """What one row's tasks did, for the read-back check."""

    def __init__(self, tasks: int) -> None:
        self.items: list[list[int]] = [[] for _ in range(tasks)]
        self.writes = 0


def _prepare_commits(size: int, writes: int, tasks: int) -> Prepared:
    pool: list[MixedOperation] = list(write_pool(f"commit-{size}", writes))
    return Prepared(sessions("bench", tasks, size), pool, [])


def _prepare_mixed(operations: int, tasks: int) -> Prepared:
    preload = write_pool("mixed-preload", MIXED_PRELOAD_WRITES)
    writes = iter(write_pool("mixed", (operations + WRITE_EVERY - 1) // WRITE_EVERY))
    input_ids = [state.input_id for write in preload for state in write.states]
    run_ids = [write.receipt.run_id for write in preload]
    items: list[MixedOperation] = []
    for n in range(operations):
        if n % WRITE_EVERY == 0:
            items.append(next(writes))
        elif n % 3 == 0:
            items.append(ReadSession())
        elif n % 3 == 1:
            items.append(ReadInput(input_ids[n % len(input_ids)]))
        else:
            items.append(ReadReceipt(run_ids[n % len(run_ids)]))
    return Prepared(sessions("bench", tasks, 4 * KIB), items, preload, reads=True)


async def _apply(store: BenchStore, session: Session, write: Write) -> None:
    await store.atomic_apply(
        session.runtime_id, session.delta, write.receipt, write.states, session.session_id
    )


async def _preload(store: BenchStore, prepared: Prepared, tasks: int) -> None:
    """Give each runtime the writes the mixed workload reads (one task each)."""

    async def preload(session: Session) -> None:
        for write in prepared.preload:
            await _apply(store, session, write)

    async with trio.open_nursery() as nursery:
        for session in prepared.sessions[:tasks]:
            nursery.start_soon(preload, session)


async def _perform(store: BenchStore, prepared: Prepared, row: _Row, task: int, item: int) -> None:
    session = prepared.sessions[task]
    operation = prepared.items[item]
    row.items[task].append(item)
    if isinstance(operation, Write):
        row.writes += 1
        await _apply(store, session, operation)
        return
    found: object
    if isinstance(operation, ReadSession):
        found = await store.load_session_snapshot(session.runtime_id)
    elif isinstance(operation, ReadInput):
        found = await store.load_input_state(session.runtime_id, operation.input_id)
    else:
        found = await store.load_boundary_receipt(session.runtime_id, operation.run_id, 0)
    if found is None:
        raise BenchFailure(f"{operation} of {session.runtime_id} found nothing")


async def _check_writes(
    store: BenchStore, prepared: Prepared, row: _Row, peer: str, name: str
) -> None:
    """Every runtime holds exactly the input states its task wrote."""
    for task, done in enumerate(row.items):
        session = prepared.sessions[task]
        writes = list(prepared.preload)
        writes += [op for op in (prepared.items[i] for i in done) if isinstance(op, Write)]
        expected = {state.input_id: state for write in writes for state in write.states}
        held = await store.load_input_states(session.runtime_id)
        if {state.input_id: state for state in held} != expected or len(held) != len(expected):
            raise BenchFailure(
                f"{name} on {peer}: {session.runtime_id} holds {len(held)} input states,"
                f" wrote {len(expected)} (or they differ)"
            )
        if not writes:
            continue
        receipt = writes[-1].receipt
        if await store.load_boundary_receipt(session.runtime_id, receipt.run_id, 0) != receipt:
            raise BenchFailure(f"{name} on {peer}: {session.runtime_id} lost its last receipt")
        if await store.load_session_snapshot(session.runtime_id) != session.delta.session_snapshot:
            raise BenchFailure(f"{name} on {peer}: {session.runtime_id} has the wrong session")


@dataclass(frozen=True, slots=True)
class _Measured:
    """What one row's run measured, before it becomes a `ThroughputRow`."""

    timed: Timed
    writes: int
    worst_lag: float
    worst_gc: float
    fsyncs: float | None
    checkpoints: int | None
    largest_batch: int | None


async def _row(
    name: str,
    peer: str,
    tasks: int,
    *,
    directory: str,
    seconds: float,
    prepared: Prepared | None,
    items: int,
    postgres: str | None = None,
) -> ThroughputRow:
    if peer == LOOP:
        if prepared is None or tasks != LOOP_TASKS:
            raise ValueError(f"{LOOP} runs the commit workloads at {LOOP_TASKS} task only")
        measured = await _loop_row(name, directory, seconds, prepared, items)
    else:
        measured = await _store_row(
            name,
            peer,
            tasks,
            directory=directory,
            seconds=seconds,
            prepared=prepared,
            items=items,
            postgres=postgres,
        )
    timed = measured.timed
    ops = len(timed.latencies)
    return ThroughputRow(
        workload=name,
        peer=peer,
        tasks=tasks,
        ops=ops,
        writes=measured.writes,
        seconds=timed.elapsed,
        ops_per_s=ops / timed.elapsed,
        p50_ms=percentile(timed.latencies, 0.50) * 1000,
        p99_ms=percentile(timed.latencies, 0.99) * 1000,
        max_ms=max(timed.latencies) * 1000,
        fsyncs_per_commit=measured.fsyncs,
        checkpoints=measured.checkpoints,
        largest_batch=measured.largest_batch,
        worst_loop_lag_ms=measured.worst_lag * 1000,
        worst_gc_pause_ms=measured.worst_gc * 1000,
        verified=True,
        **_split_latencies(prepared, timed),
    )


def _split_latencies(prepared: Prepared | None, timed: Timed) -> dict[str, Any]:
    """The mixed workload's latencies by kind of call: the point reads (µs),
    the writes (ms), and each read method (µs); nothing for the workloads
    without reads."""
    if prepared is None or not prepared.reads:
        return {}
    writes: list[float] = []
    reads: list[float] = []
    by_call: dict[str, list[float]] = {call: [] for call in READ_CALLS.values()}
    for latency, item in zip(timed.latencies, timed.items, strict=True):
        operation = prepared.items[item]
        if isinstance(operation, Write):
            writes.append(latency)
        else:
            reads.append(latency)
            by_call[READ_CALLS[type(operation)]].append(latency)

    def at(values: list[float], fraction: float, unit: float) -> float | None:
        return percentile(values, fraction) * unit if values else None

    read_us_by_call: dict[str, dict[str, float]] = {}
    for call, latencies in by_call.items():
        read_us_by_call[call] = {"reads": len(latencies)}
        if latencies:
            read_us_by_call[call]["p50"] = percentile(latencies, 0.50) * 1e6
            read_us_by_call[call]["p99"] = percentile(latencies, 0.99) * 1e6
    return {
        "read_p50_us": at(reads, 0.50, 1e6),
        "read_p99_us": at(reads, 0.99, 1e6),
        "write_p50_ms": at(writes, 0.50, 1e3),
        "write_p99_ms": at(writes, 0.99, 1e3),
        "read_us_by_call": read_us_by_call,
    }


async def _loop_row(
    name: str, directory: str, seconds: float, prepared: Prepared, items: int
) -> _Measured:
    """The `sqlite3-loop` peer: the prepared writes as one plain loop in one
    worker thread, then its file read back through `open_sqlite_store`."""
    writes = [op for op in prepared.items[:items] if isinstance(op, Write)]
    if len(writes) != items:
        raise ValueError(f"{LOOP} runs only writes; {name} has other operations")
    path = os.path.join(directory, FILE_NAME)
    loop = await trio.to_thread.run_sync(SqliteLoop, path)
    try:
        async with heartbeat() as beat:
            beat.reset()
            timed = await trio.to_thread.run_sync(loop.run, prepared.sessions[0], writes, seconds)
            worst_lag = await beat.settle()
            worst_gc = beat.worst_gc
    finally:
        await trio.to_thread.run_sync(loop.close)
    row = _Row(LOOP_TASKS)
    row.items[0] = list(timed.items)
    row.writes = len(timed.items)
    async with open_sqlite_store(path, synchronous="FULL") as store:
        await _check_writes(store, prepared, row, LOOP, name)
    return _Measured(timed, row.writes, worst_lag, worst_gc, None, None, None)


async def _store_row(
    name: str,
    peer: str,
    tasks: int,
    *,
    directory: str,
    seconds: float,
    prepared: Prepared | None,
    items: int,
    postgres: str | None,
) -> _Measured:
    row = _Row(tasks)
    async with open_peer(peer, directory, postgres=postgres) as store:
        call: Callable[[int, int], Awaitable[None]]
        if prepared is None:  # the OAuth workload: no payload but the updater
            await store.update_auth_oauth_flow_snapshot(oauth_increment)
            before_counter = oauth_counter(await store.load_auth_oauth_flow_snapshot())

            async def increment(task: int, item: int) -> None:
                await store.update_auth_oauth_flow_snapshot(oauth_increment)

            call = increment
        else:
            await _preload(store, prepared, tasks)
            call = partial(_perform, store, prepared, row)
        before = statistics(store)
        async with heartbeat() as beat:
            beat.reset()
            timed: Timed = await drive(tasks, items, seconds, call)
            worst_lag = await beat.settle()
            worst_gc = beat.worst_gc
        after = statistics(store)
        ops = len(timed.latencies)
        if prepared is None:
            writes = ops
            counter = oauth_counter(await store.load_auth_oauth_flow_snapshot())
            if counter != before_counter + ops:
                raise BenchFailure(
                    f"oauth on {peer}: the counter is {counter} after {ops} increments"
                    f" from {before_counter} (lost updates)"
                )
        else:
            writes = row.writes
            await _check_writes(store, prepared, row, peer, name)
    fsyncs: float | None = None
    checkpoints: int | None = None
    largest_batch: int | None = None
    if before is not None and after is not None:
        fsyncs = (after.fsyncs - before.fsyncs) / writes if writes else 0.0
        checkpoints = after.checkpoints - before.checkpoints
        largest_batch = after.largest_batch
    elif peer not in ("sqlite", POSTGRES):  # the databases do not count theirs
        fsyncs = 0.0
    return _Measured(timed, writes, worst_lag, worst_gc, fsyncs, checkpoints, largest_batch)


def with_ratios(rows: list[ThroughputRow]) -> list[ThroughputRow]:
    """Each row with its ratios set from the rows of the same workload and
    concurrency: `ratio_vs_sqlite` from SQLite's, `ratio_vs_sqlite3_loop` from
    the `sqlite3-loop` peer's and `ratio_vs_memory` from the in-memory
    actor's (`None` where that peer has no row)."""

    def ops_per_s(peer: str) -> dict[tuple[str, int], float]:
        return {(r.workload, r.tasks): r.ops_per_s for r in rows if r.peer == peer}

    sqlite, loop, memory = ops_per_s("sqlite"), ops_per_s(LOOP), ops_per_s("memory")

    def over(row: ThroughputRow, peer: dict[tuple[str, int], float]) -> float | None:
        theirs = peer.get((row.workload, row.tasks))
        return None if theirs is None else row.ops_per_s / theirs

    return [
        replace(
            r,
            ratio_vs_sqlite=r.ops_per_s / sqlite[(r.workload, r.tasks)],
            ratio_vs_sqlite3_loop=over(r, loop),
            ratio_vs_memory=over(r, memory),
        )
        for r in rows
    ]


@asynccontextmanager
async def postgres_server(
    progress: Callable[[str], None], notes: dict[str, object]
) -> AsyncIterator[str | None]:
    """A PostgreSQL server for the `postgres` peer: `$MEERKAT_BENCH_POSTGRES_DSN`,
    or a throwaway cluster started for the run (`_pgcluster`), or `None` when
    psycopg or the server's binaries are missing (`notes["postgres"]` says
    which server, or why there is none)."""
    configured = os.environ.get("MEERKAT_BENCH_POSTGRES_DSN")
    if configured:
        notes["postgres"] = "the server of $MEERKAT_BENCH_POSTGRES_DSN"
        yield configured
        return
    if (
        importlib.util.find_spec("psycopg") is None
        or importlib.util.find_spec("psycopg_pool") is None
    ):
        notes["postgres"] = (
            "skipped: psycopg is not installed (pip install 'meerkat_actor[postgres]')"
        )
        progress(f"postgres peer {notes['postgres']}")
        yield None
        return
    bindir = find_binaries()
    if bindir is None:
        notes["postgres"] = "skipped: no PostgreSQL server binaries (initdb, pg_ctl) found"
        progress(f"postgres peer {notes['postgres']}")
        yield None
        return
    progress(f"postgres: starting a throwaway cluster ({bindir})")
    cluster = TemporaryCluster(bindir)
    try:
        await trio.to_thread.run_sync(cluster.start)
        notes["postgres"] = (
            f"a throwaway cluster of {bindir} on a Unix socket in {cluster.directory},"
            " default settings (fsync on)"
        )
        yield cluster.dsn
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.remove)


async def run_throughput(
    settings: Settings,
    workdir: str,
    progress: Callable[[str], None],
    notes: dict[str, object] | None = None,
) -> tuple[list[ThroughputRow], list[SharedRow]]:
    """Every workload, concurrency and peer; rows in that order, with ratios;
    then the shared-database rows (`_shared`). `notes` gets the PostgreSQL
    server's description (`postgres_server`)."""
    async with postgres_server(progress, {} if notes is None else notes) as postgres:
        rows = await _run_throughput(settings, workdir, progress, postgres)
        shared = await run_shared(settings.seconds, workdir, postgres, progress)
    return rows, shared


async def _run_throughput(
    settings: Settings, workdir: str, progress: Callable[[str], None], postgres: str | None
) -> list[ThroughputRow]:
    most = max(settings.tasks)
    preparations: dict[str, tuple[Callable[[], Prepared | None], int]] = {
        "commit_4k": (
            partial(_prepare_commits, 4 * KIB, settings.commit_4k_writes, most),
            settings.commit_4k_writes,
        ),
        "commit_64k": (
            partial(_prepare_commits, 64 * KIB, settings.commit_64k_writes, most),
            settings.commit_64k_writes,
        ),
        "mixed": (
            partial(_prepare_mixed, settings.mixed_operations, most),
            settings.mixed_operations,
        ),
        "oauth": (lambda: None, settings.oauth_operations),
    }
    rows: list[ThroughputRow] = []
    for name in WORKLOADS:
        prepare, items = preparations[name]
        progress(f"{name}: preparing operations")
        prepared = await trio.to_thread.run_sync(prepare)
        # The prepared operations are the benchmark's, not the store's: keep
        # the garbage collector from scanning them in every timed row.
        await trio.to_thread.run_sync(gc.collect)
        gc.freeze()
        try:
            for tasks in settings.tasks:
                for peer in PEERS:
                    if peer == LOOP and (name not in LOOP_WORKLOADS or tasks != LOOP_TASKS):
                        continue  # a loop is sequential; it runs the commits only
                    if peer == POSTGRES and postgres is None:
                        continue  # no server (`postgres_server` said why)
                    progress(f"{name}: {peer}, {tasks} task{'s' if tasks > 1 else ''}")
                    directory = os.path.join(workdir, f"{name}-{peer}-{tasks}")
                    row = await _row(
                        name,
                        peer,
                        tasks,
                        directory=directory,
                        seconds=settings.seconds,
                        prepared=prepared,
                        items=items,
                        postgres=postgres,
                    )
                    rows.append(row)
                    await trio.to_thread.run_sync(partial(shutil.rmtree, directory, True))
        finally:
            gc.unfreeze()
        del prepared
    return with_ratios(rows)
