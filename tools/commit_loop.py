"""Commits per second of one store under N concurrent tasks (no bench harness).

    python tools/commit_loop.py durable|memory|sqlite3-loop SESSION_BYTES [TASKS] [COMMITS]

Each task commits bench-shaped writes (`_bench._payloads`) with
`atomic_apply` until the pool is used up; prints commits per second. Used for
the "slice groups" figures in docs/benchmarks.md (64 tasks, 65536 and 4096).
`sqlite3-loop` runs the bench's peer of that name (`_bench._sqlite_loop`) on
the same writes, at one task, in a worker thread.
"""

from __future__ import annotations

import sys
import tempfile
import time

import trio

import meerkat_actor as ma
from meerkat_actor._bench._payloads import sessions, write_pool
from meerkat_actor._bench._sqlite_loop import SqliteLoop


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
    opener = ma.open_store(directory + "/store") if kind == "durable" else ma.open_store()
    async with opener as store:
        writes = iter(pool)

        async def task(session: object) -> None:
            for write in writes:
                await store.atomic_apply(
                    session.runtime_id,  # type: ignore[attr-defined]
                    session.delta,  # type: ignore[attr-defined]
                    write.receipt,
                    write.states,
                    session.session_id,  # type: ignore[attr-defined]
                )

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for session in runtimes:
                nursery.start_soon(task, session)
        elapsed = time.perf_counter() - start
    print(f"{kind} {size} B sessions, {tasks} tasks: {commits / elapsed:.0f} commits/s")


if __name__ == "__main__":
    args = sys.argv[1:]
    trio.run(
        main,
        args[0],
        int(args[1]),
        int(args[2]) if len(args) > 2 else 64,
        int(args[3]) if len(args) > 3 else 3000,
    )
