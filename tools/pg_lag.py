"""The PostgreSQL store's throughput and event-loop lag by pool size.

    python tools/pg_lag.py [SIZES]   (default 2,4,10,16)

On a throwaway cluster (`_pgcluster`): 64 tasks commit 1,500 bench-shaped
writes (4 KiB sessions) with `atomic_apply`, beside a 1 ms heartbeat, once
per `max_connections` value; prints commits per second and the heartbeat's
worst overshoot. Used for "Choosing max_connections" in docs/postgres.md.
"""

from __future__ import annotations

import sys
import time

import trio

import meerkat_actor as ma
from meerkat_actor._bench._payloads import Session, Write, sessions, write_pool
from meerkat_actor._pgcluster import TemporaryCluster, find_binaries


async def run(dsn: str, connections: int, pool: list[Write], hosts: list[Session]) -> None:
    lag = 0.0
    done = False

    async def beat() -> None:
        nonlocal lag
        while not done:
            started = time.perf_counter()
            await trio.sleep(0.001)
            lag = max(lag, time.perf_counter() - started - 0.001)

    schema = f"lag{connections}"
    async with (
        ma.open_postgres_store(dsn, schema=schema, max_connections=connections) as store,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(beat)
        writes = iter(pool)

        async def task(host: Session) -> None:
            for write in writes:
                await store.atomic_apply(
                    host.runtime_id, host.delta, write.receipt, write.states, host.session_id
                )

        started = time.perf_counter()
        async with trio.open_nursery() as tasks:
            for host in hosts:
                tasks.start_soon(task, host)
        elapsed = time.perf_counter() - started
        done = True
    print(
        f"max_connections {connections}: {len(pool) / elapsed:.0f} commits/s,"
        f" worst loop lag {lag * 1000:.1f} ms"
    )


def main() -> None:
    sizes = [int(n) for n in (sys.argv[1] if len(sys.argv) > 1 else "2,4,10,16").split(",")]
    pool = write_pool("commit-4096", 1500)
    hosts = sessions("bench", 64, 4096)
    bindir = find_binaries()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries found")
    with TemporaryCluster(bindir) as cluster:
        for connections in sizes:
            trio.run(run, cluster.dsn, connections, pool, hosts)


if __name__ == "__main__":
    main()
