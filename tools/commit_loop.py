"""Commits per second of one store under N concurrent tasks (no bench harness).

    python tools/commit_loop.py durable|memory|sqlite3-loop|postgres SESSION_BYTES [TASKS] [COMMITS]

Each task commits bench-shaped writes (`_bench._payloads`) with
`atomic_apply` until the pool is used up; prints commits per second. Used for
the "slice groups" figures in docs/benchmarks.md (64 tasks, 65536 and 4096).
`sqlite3-loop` runs the bench's peer of that name (`_bench._sqlite_loop`) on
the same writes, at one task, in a worker thread. `postgres` runs the
PostgreSQL store on a throwaway cluster started for the run (`_pgcluster`),
or on `$MEERKAT_BENCH_POSTGRES_DSN`'s server.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import trio

import meerkat_actor as ma
from meerkat_actor._bench._payloads import Session, Write, sessions, write_pool
from meerkat_actor._bench._sqlite_loop import SqliteLoop
from meerkat_actor._pgcluster import TemporaryCluster, find_binaries


async def main(kind: str, size: int, tasks: int, commits: int) -> None:
    pool = write_pool(f"commit-{size}", commits)
    runtimes = sessions("bench", tasks, size)
    directory = tempfile.mkdtemp(prefix="commit-loop-")
    if kind == "sqlite3-loop":
        loop = SqliteLoop(directory + "/loop.sqlite3")
        try:
            timed = await trio.to_thread.run_sync(loop.run, runtimes[0], pool, 3600.0)
        finally:
            loop.close()
        print(f"{kind} {size} B sessions, 1 task: {commits / timed.elapsed:.0f} commits/s")
        return
    if kind == "postgres":
        configured = os.environ.get("MEERKAT_BENCH_POSTGRES_DSN")
        cluster = None if configured else TemporaryCluster(find_binaries() or "").start()
        dsn = configured or (cluster.dsn if cluster else "")
        try:
            async with ma.open_postgres_store(dsn, schema="commit_loop") as pg:
                await _commit(kind, pg, pool, runtimes)
        finally:
            if cluster is not None:
                cluster.remove()
        return
    opener = ma.open_store(directory + "/store") if kind == "durable" else ma.open_store()
    async with opener as store:
        await _commit(kind, store, pool, runtimes)


async def _commit(
    kind: str, store: ma.RuntimeStore, pool: list[Write], runtimes: list[Session]
) -> None:
    """Commit every write of `pool`, one task per runtime; print commits/s."""
    writes = iter(pool)

    async def task(session: Session) -> None:
        for write in writes:
            await store.atomic_apply(
                session.runtime_id, session.delta, write.receipt, write.states, session.session_id
            )

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for session in runtimes:
            nursery.start_soon(task, session)
    elapsed = time.perf_counter() - start
    size = len(runtimes[0].delta.session_snapshot)
    print(f"{kind} ~{size} B sessions, {len(runtimes)} tasks: {len(pool) / elapsed:.0f} commits/s")


if __name__ == "__main__":
    args = sys.argv[1:]
    trio.run(
        main,
        args[0],
        int(args[1]),
        int(args[2]) if len(args) > 2 else 64,
        int(args[3]) if len(args) > 3 else 3000,
    )
