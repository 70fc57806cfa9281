"""Microseconds per PostgreSQL store commit, with and without the commit's
WAL flush (the figures behind the pipelined write in `_postgres_db`).

    python tools/pg_commit_split.py [COMMITS]

On a throwaway cluster: COMMITS (default 600) bench-shaped `atomic_apply`
calls (4 KiB sessions) one at a time, with `synchronous_commit="on"`, then
the same on a new schema with `"off"`. Run it with `PYTHONPATH` at another
checkout to compare two versions of the store.
"""

from __future__ import annotations

import sys
import time

import trio

import meerkat_actor as ma
from meerkat_actor._bench._payloads import sessions, write_pool
from meerkat_actor._pgcluster import TemporaryCluster, find_binaries


async def run(dsn: str, synchronous_commit: str, commits: int) -> None:
    pool = write_pool("commit-4096", commits)
    (host,) = sessions("bench", 1, 4096)
    schema = f"split_{synchronous_commit}"
    async with ma.open_postgres_store(
        dsn, schema=schema, synchronous_commit=synchronous_commit
    ) as store:
        started = time.perf_counter()
        for write in pool:
            await store.atomic_apply(
                host.runtime_id, host.delta, write.receipt, write.states, host.session_id
            )
        elapsed = time.perf_counter() - started
    print(f"synchronous_commit={synchronous_commit}: {elapsed / commits * 1e6:.0f} µs/commit")


def main() -> None:
    commits = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    bindir = find_binaries()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries found")
    with TemporaryCluster(bindir) as cluster:
        for mode in ("on", "off"):
            trio.run(run, cluster.dsn, mode, commits)


if __name__ == "__main__":
    main()
