"""Where a PostgreSQL store's point read goes: the worker-thread hop or the
database (the `docs/postgres.md` "How it runs under trio" figures).

    python tools/pg_read_split.py [READS]

On a throwaway cluster: `load_session_snapshot` of one runtime READS times
(default 3,000) through the store (a worker thread per call), then the
same query through `_postgres_db.Database.read` called directly on the trio
thread (no hop; this tool may block its own loop), then a no-op
`_util.run_in_thread` call (the hop alone). Prints each p50 and mean.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import trio

import meerkat_actor as ma
from meerkat_actor import _core
from meerkat_actor._pgcluster import TemporaryCluster, find_binaries
from meerkat_actor._util import run_in_thread

RUNTIME = ma.LogicalRuntimeId("split")


async def timed(label: str, reads: int, call: Callable[[], Awaitable[object]]) -> None:
    spans = []
    for _ in range(reads):
        started = time.perf_counter()
        await call()
        spans.append(time.perf_counter() - started)
    print(
        f"{label:45} p50 {statistics.median(spans) * 1e6:6.0f} µs"
        f"  mean {statistics.mean(spans) * 1e6:6.0f} µs"
    )


async def main(dsn: str, reads: int) -> None:
    async with ma.open_postgres_store(dsn, schema="split") as store:
        await store.commit_session_snapshot(
            RUNTIME, ma.SessionDelta(b'{"id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}')
        )
        database = store._database
        query = _core.LoadSessionSnapshot(RUNTIME)

        async def direct() -> object:
            return database.read(query)

        await timed(
            "through the store (hop + query)", reads, lambda: store.load_session_snapshot(RUNTIME)
        )
        await timed("Database.read on the trio thread (query)", reads, direct)
        await timed("run_in_thread of a no-op (hop)", reads, lambda: run_in_thread(lambda: None))


if __name__ == "__main__":
    bindir = find_binaries()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries found")
    with TemporaryCluster(bindir) as cluster:
        trio.run(main, cluster.dsn, int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
