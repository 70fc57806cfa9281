"""Several processes on one database: the `commit_4k` workload run by 1, 2
and 4 processes at once against one PostgreSQL schema, and against one
SQLite file for comparison (the actor store's directory is one process's).

Rule 1: each process is a host of a fleet. It opens its own handle, commits
to runtimes of its own (`host<N>-<task>`) with receipts of its own, and runs
`tasks_per_process` tasks; the processes share only the database. They all
start at one wall-clock instant (after every one has opened its store) and
stop after the row's time budget.

Rule 2: a row is checked before it counts. Each child reads back, through
its handle, that every runtime it wrote holds exactly the receipts its task
committed; a missing or extra receipt fails the run (`BenchFailure`).

Theory of operation. The parent runs one child per process through the
bench's child entry point (`_children.run_child`, kind `shared_commits`), all
at once; each child's result carries its call latencies, and the parent
reports their count over the longest child's time (ops/s of the fleet), the
latency percentiles over every call, and ratios: over the same peer with one
process, and over SQLite with as many processes.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Final

import trio

from .._postgres import open_postgres_store
from .._sqlite import open_sqlite_store
from ._children import Measurement, run_child
from ._measure import BenchFailure, drive, percentile
from ._payloads import sessions, write_pool
from ._peers import POSTGRES, postgres_schema
from ._results import SharedRow

__all__ = ["MEASUREMENTS", "SHARED_PEERS", "SHARED_PROCESSES", "run_shared"]

#: The peers that several processes can share, and how many processes.
SHARED_PEERS: Final = (POSTGRES, "sqlite")
SHARED_PROCESSES: Final = (1, 2, 4)
#: Each process's concurrency, and its session snapshot size.
TASKS_PER_PROCESS: Final = 8
SESSION_BYTES: Final = 4 * 1024
#: Seconds between starting the children and their common start.
_START_DELAY: Final = 1.5


async def _shared_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One host: open the shared store, wait for the common start, commit
    for the time budget, check the runtimes it wrote."""
    index, tasks, seconds = spec["index"], spec["tasks"], spec["seconds"]
    pool = await trio.to_thread.run_sync(write_pool, f"shared-{index}", spec["writes"])
    hosts = sessions(f"host{index}", tasks, SESSION_BYTES)
    opener = (
        open_postgres_store(spec["dsn"], schema=spec["schema"])
        if spec["peer"] == POSTGRES
        else open_sqlite_store(spec["path"], synchronous="FULL")
    )
    done: list[list[int]] = [[] for _ in range(tasks)]
    async with opener as store:

        async def commit(task: int, item: int) -> None:
            host, write = hosts[task], pool[item]
            await store.atomic_apply(
                host.runtime_id, host.delta, write.receipt, write.states, host.session_id
            )
            done[task].append(item)

        await trio.sleep(max(0.0, spec["start_at"] - time.time()))
        timed = await drive(tasks, len(pool), seconds, commit)
        for task, items in enumerate(done):
            receipts = await store.load_boundary_receipts(hosts[task].runtime_id)
            found = sorted(str(r.run_id) for r in receipts)
            expected = sorted(str(pool[item].receipt.run_id) for item in items)
            if found != expected:
                raise BenchFailure(
                    f"{spec['peer']}, process {index}: runtime {hosts[task].runtime_id} holds"
                    f" {len(found)} receipts after {len(expected)} acknowledged commits"
                )
    if len(timed.latencies) >= len(pool):
        raise BenchFailure(f"process {index} ran out of its {len(pool)} prepared commits")
    return {"latencies": timed.latencies, "elapsed": timed.elapsed}


async def _row(
    peer: str, processes: int, seconds: float, directory: str, postgres: str | None
) -> SharedRow:
    start_at = time.time() + _START_DELAY + 0.25 * processes
    # Enough prepared commits for 2,000 per second per task (far above what
    # any peer does here), at least 200.
    writes = max(200, int(2000 * seconds * TASKS_PER_PROCESS))
    base = {
        "kind": "shared_commits",
        "peer": peer,
        "tasks": TASKS_PER_PROCESS,
        "seconds": seconds,
        "start_at": start_at,
        "writes": writes,
        "dsn": postgres,
        "schema": postgres_schema(directory),
        "path": os.path.join(directory, "shared.sqlite3"),
    }
    results: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        results.append(await run_child({**base, "index": index}))

    async with trio.open_nursery() as nursery:
        for index in range(processes):
            nursery.start_soon(one, index)
    latencies = [value for result in results for value in result["latencies"]]
    elapsed = max(result["elapsed"] for result in results)
    return SharedRow(
        workload="commit_4k",
        peer=peer,
        processes=processes,
        tasks_per_process=TASKS_PER_PROCESS,
        ops=len(latencies),
        seconds=elapsed,
        ops_per_s=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        verified=True,
    )


def _with_ratios(rows: list[SharedRow]) -> list[SharedRow]:
    one = {r.peer: r.ops_per_s for r in rows if r.processes == 1}
    sqlite = {r.processes: r.ops_per_s for r in rows if r.peer == "sqlite"}
    return [
        replace(
            r,
            ratio_vs_one_process=r.ops_per_s / one[r.peer] if r.peer in one else 0.0,
            ratio_vs_sqlite=r.ops_per_s / sqlite[r.processes] if r.processes in sqlite else 0.0,
        )
        for r in rows
    ]


async def run_shared(
    seconds: float, workdir: str, postgres: str | None, progress: Callable[[str], None]
) -> list[SharedRow]:
    """Every peer of `SHARED_PEERS` (PostgreSQL only with a server) at each
    count of `SHARED_PROCESSES`; rows with ratios."""
    rows: list[SharedRow] = []
    for peer in SHARED_PEERS:
        if peer == POSTGRES and postgres is None:
            continue
        for processes in SHARED_PROCESSES:
            progress(f"shared commit_4k: {peer}, {processes} processes")
            directory = os.path.join(workdir, f"shared-{peer}-{processes}")
            await trio.to_thread.run_sync(partial(os.makedirs, directory, 0o700, exist_ok=True))
            try:
                rows.append(await _row(peer, processes, seconds, directory, postgres))
            finally:
                if peer == POSTGRES and postgres is not None:
                    from .._postgres_db import drop_schema  # noqa: PLC0415 - optional extra

                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(
                            drop_schema, postgres, postgres_schema(directory)
                        )
                await trio.to_thread.run_sync(partial(shutil.rmtree, directory, True))
    return _with_ratios(rows)


MEASUREMENTS: Final[dict[str, Measurement]] = {"shared_commits": _shared_child}
