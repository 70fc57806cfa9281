"""Point reads of the durable actor store: the bench's mixed row, and misses.

    python tools/point_reads.py
    PYTHONPATH=/path/to/other/checkout python tools/point_reads.py

Prints two lines:

- the p50 of each point read in the bench's `mixed` row at 1 task (the
  bench's own row function, 2 s): it reads a few keys in a cycle, so a
  store with a read memo answers from it;
- the p50 of 4,000 `load_input_state` and 4,000 `load_boundary_receipt`
  calls of keys drawn at random from 1,000 bench writes (4,452 input
  states): mostly memo misses, the cost of decoding a stored value.

Used for issue 12's target 6 in docs/benchmarks.md: run it at two commits,
one after the other, a few times.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time

import trio

import meerkat_actor as ma
from meerkat_actor._bench import _throughput
from meerkat_actor._bench._payloads import sessions, write_pool

RANDOM_READS = 4000


async def mixed_row(directory: str) -> str:
    prepared = _throughput._prepare_mixed(20_000, 1)
    row = await _throughput._row(
        "mixed", "actor", 1, directory=directory, seconds=2.0, prepared=prepared, items=20_000
    )
    by_call = row.read_us_by_call or {}
    return ", ".join(f"{call} {figures['p50']:.1f}" for call, figures in by_call.items())


async def random_reads(directory: str) -> str:
    writes = write_pool("mixed-preload", 1000)
    session = sessions("bench", 1, 4096)[0]
    async with ma.open_store(directory) as store:
        for write in writes:
            await store.atomic_apply(
                session.runtime_id, session.delta, write.receipt, write.states, session.session_id
            )
        input_ids = [state.input_id for write in writes for state in write.states]
        run_ids = [write.receipt.run_id for write in writes]
        rng = random.Random(1)
        inputs: list[float] = []
        receipts: list[float] = []
        for _ in range(RANDOM_READS):
            start = time.perf_counter()
            await store.load_input_state(session.runtime_id, rng.choice(input_ids))
            inputs.append(time.perf_counter() - start)
        for _ in range(RANDOM_READS):
            start = time.perf_counter()
            await store.load_boundary_receipt(session.runtime_id, rng.choice(run_ids), 0)
            receipts.append(time.perf_counter() - start)
    return (
        f"{len(input_ids)} input states: load_input_state"
        f" {statistics.median(inputs) * 1e6:.1f}, load_boundary_receipt"
        f" {statistics.median(receipts) * 1e6:.1f}"
    )


async def main() -> None:
    print(f"meerkat_actor from {ma.__file__}")
    with tempfile.TemporaryDirectory() as directory:
        print(f"mixed row, 1 task, p50 µs: {await mixed_row(directory + '/mixed')}")
    with tempfile.TemporaryDirectory() as directory:
        print(f"random keys, p50 µs: {await random_reads(directory + '/random')}")


if __name__ == "__main__":
    trio.run(main)
