"""Point-read latency of a durable store holding bench-shaped writes.

    python tools/read_loop.py

Writes 20 bench writes, then times 5,000 `load_input_state` calls of one
input state (a memo hit after the first), 5,000 `load_session_snapshot`
calls, and `_packed.unpack_input` of that state's bytes (the cost of a
miss). Used for the "read memo" figures in docs/benchmarks.md.
"""

from __future__ import annotations

import tempfile
import time
import timeit

import trio

import meerkat_actor as ma
from meerkat_actor import _packed
from meerkat_actor._bench._payloads import sessions, write_pool

READS = 5000


async def main() -> None:
    writes = write_pool("mixed-preload", 20)
    session = sessions("bench", 1, 4096)[0]
    rt = session.runtime_id
    async with ma.open_store(tempfile.mkdtemp(prefix="read-loop-") + "/store") as store:
        for write in writes:
            await store.atomic_apply(
                rt, session.delta, write.receipt, write.states, session.session_id
            )
        input_id = writes[0].states[0].input_id
        start = time.perf_counter()
        for _ in range(READS):
            await store.load_input_state(rt, input_id)
        hit = (time.perf_counter() - start) / READS
        start = time.perf_counter()
        for _ in range(READS):
            await store.load_session_snapshot(rt)
        session_read = (time.perf_counter() - start) / READS
    blob = _packed.pack_input(writes[0].states[0])
    miss = timeit.timeit(lambda: _packed.unpack_input(blob), number=READS) / READS
    print(f"load_input_state (memo hit): {hit * 1e6:.1f} us")
    print(f"load_session_snapshot: {session_read * 1e6:.1f} us")
    print(f"unpack_input (what a miss adds): {miss * 1e6:.1f} us")


if __name__ == "__main__":
    trio.run(main)
