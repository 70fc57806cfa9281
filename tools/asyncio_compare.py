"""meerkat_actor.asyncio against native trio: issue 16's targets.

    python tools/asyncio_compare.py [ROUNDS]

Runs the same workload on the same kind of store, natively in `trio.run` and
through `meerkat_actor.asyncio` in `asyncio.run`, alternately, ROUNDS times
(default 3), for the in-memory and the durable actor store:

- `read`: p50 of 20,000 `load_input_state` calls of keys drawn at random
  from 200 bench writes (the same keys on both sides);
- `write 1 task`: p50 latency of 1,000 `atomic_apply` calls (bench writes,
  ~4 KiB session snapshots) from one task;
- `write 64 tasks`: commits per second of 4,000 such calls from 64 tasks.

Prints each round's figures and the asyncio/native ratio of the medians of
the rounds. Targets (issue 16): read ≤ 2x, write at 1 task ≤ 1.5x native
latency, 64 tasks ≥ 0.70x native throughput.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import meerkat_actor as ma
from meerkat_actor import asyncio as maa
from meerkat_actor._bench._payloads import Session, Write, sessions, write_pool

READS = 20_000
WRITES_1 = 1_000
WRITES_64 = 4_000


class Workload:
    def __init__(self, round_: int) -> None:
        self.preload = write_pool(f"preload-{round_}", 200)
        self.session = sessions(f"reads-{round_}", 1, 4096)[0]
        keys = [state.input_id for write in self.preload for state in write.states]
        rng = random.Random(round_)
        self.keys = [rng.choice(keys) for _ in range(READS)]
        self.one = write_pool(f"one-{round_}", WRITES_1)
        self.one_session = sessions(f"one-{round_}", 1, 4096)[0]
        self.many = write_pool(f"many-{round_}", WRITES_64)
        self.many_sessions = sessions(f"many-{round_}", 64, 4096)


def commit(store: Any, session: Session, write: Write) -> Awaitable[None]:
    return store.atomic_apply(  # type: ignore[no-any-return]
        session.runtime_id, session.delta, write.receipt, write.states, session.session_id
    )


async def measure(
    store: Any,
    work: Workload,
    gather: Callable[[list[Callable[[], Awaitable[None]]]], Awaitable[None]],
) -> dict[str, float]:
    for write in work.preload:
        await commit(store, work.session, write)
    runtime = work.session.runtime_id
    reads: list[float] = []
    for key in work.keys:
        start = time.perf_counter()
        await store.load_input_state(runtime, key)
        reads.append(time.perf_counter() - start)
    writes: list[float] = []
    for write in work.one:
        start = time.perf_counter()
        await commit(store, work.one_session, write)
        writes.append(time.perf_counter() - start)
    pool = iter(work.many)

    def task(session: Session) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            for write in pool:
                await commit(store, session, write)

        return run

    start = time.perf_counter()
    await gather([task(session) for session in work.many_sessions])
    elapsed = time.perf_counter() - start
    return {
        "read": statistics.median(reads) * 1e6,
        "write1": statistics.median(writes) * 1e6,
        "tput64": WRITES_64 / elapsed,
    }


async def trio_gather(fns: list[Callable[[], Awaitable[None]]]) -> None:
    async with trio.open_nursery() as nursery:
        for fn in fns:
            nursery.start_soon(fn)


async def asyncio_gather(fns: list[Callable[[], Awaitable[None]]]) -> None:
    await asyncio.gather(*(fn() for fn in fns))


def native(kind: str, work: Workload) -> dict[str, float]:
    async def main() -> dict[str, float]:
        path = None if kind == "memory" else tempfile.mkdtemp(prefix="aio-cmp-") + "/store"
        async with ma.open_store(path) as store:
            return await measure(store, work, trio_gather)

    return trio.run(main)


def through_asyncio(kind: str, work: Workload) -> dict[str, float]:
    async def main() -> dict[str, float]:
        path = None if kind == "memory" else tempfile.mkdtemp(prefix="aio-cmp-") + "/store"
        async with maa.open_store(path) as store:
            return await measure(store, work, asyncio_gather)

    return asyncio.run(main())


def main(rounds: int) -> None:
    for kind in ("memory", "durable"):
        results: dict[str, list[dict[str, float]]] = {"native": [], "asyncio": []}
        for n in range(rounds):
            for name, fn in (("native", native), ("asyncio", through_asyncio)):
                figures = fn(kind, Workload(n))
                results[name].append(figures)
                print(
                    f"{kind:7} {name:7} round {n}: read p50 {figures['read']:6.1f} us,"
                    f" write 1 task p50 {figures['write1']:7.0f} us,"
                    f" 64 tasks {figures['tput64']:6.0f} commits/s",
                    flush=True,
                )
        med = {
            name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
            for name, rows in results.items()
        }
        a, t = med["asyncio"], med["native"]
        print(
            f"{kind}: asyncio/native (medians of {rounds} rounds):"
            f" read {a['read'] / t['read']:.2f}x (target <= 2),"
            f" write 1 task {a['write1'] / t['write1']:.2f}x (<= 1.5),"
            f" 64 tasks {a['tput64'] / t['tput64']:.2f}x (>= 0.70)",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
