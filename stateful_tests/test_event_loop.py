"""The event loop is never blocked (SPEC §6, "Never block the event loop").

A heartbeat task in the same trio run as a durable store sleeps 1 ms in a
loop and records how late each wake-up is, while (1) 64 tasks commit as fast
as they can for about two seconds, and (2) a checkpoint of a store holding a
few thousand input states runs. The assertion is generous (worst lag under
250 ms) so that a noisy CI machine does not fail it; the measured figures are
printed (`pytest -s`) and recorded as test properties (`--junitxml`).

The longest garbage collector pause is measured too: on this workload the
worst lags are full (generation 2) collections of the interpreter, whose cost
grows with every live object of the process, not the store's I/O. Objects
left by earlier tests of the same pytest process are frozen (`gc.freeze()`)
for the measurement, so that it reflects the store's own heap.
"""

from __future__ import annotations

import gc
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import _values
import pytest
import trio
from _workload import plan

import meerkat_actor as ma

# Seconds of full commit load, and a checkpoint of thousands of states.
pytestmark = pytest.mark.slow

TICK = 0.001
WORST_LAG_BOUND = 0.250
COMMIT_SECONDS = 2.0
COMMITTERS = 64
PREFILLED_STATES = 5000


class Heartbeat:
    """Sleeps `TICK` in a loop; `lags` holds how late each wake-up was,
    `gc_pauses` how long each garbage collection took meanwhile."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.gc_pauses: list[float] = [0.0]
        self._gc_start = 0.0

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await trio.sleep(TICK)
            self.lags.append(time.perf_counter() - start - TICK)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_start)

    def summary(self) -> dict[str, float]:
        lags = sorted(self.lags)
        return {
            "ticks": len(lags),
            "worst_lag_ms": lags[-1] * 1000,
            "p99_lag_ms": lags[int(len(lags) * 0.99)] * 1000,
            "median_lag_ms": statistics.median(lags) * 1000,
            "worst_gc_pause_ms": max(self.gc_pauses) * 1000,
        }


async def with_heartbeat(work: Callable[[], Awaitable[None]]) -> Heartbeat:
    """Run `work()` with a heartbeat beside it; return the heartbeat."""
    heartbeat = Heartbeat()
    gc.collect()
    gc.freeze()
    gc.callbacks.append(heartbeat.on_gc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat.run)
            await trio.sleep(0.05)  # let it settle
            await work()
            nursery.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(heartbeat.on_gc)
        gc.unfreeze()
    return heartbeat


def report(name: str, figures: dict[str, float], record_property: Any) -> None:
    print(f"\n{name}: " + ", ".join(f"{key} {value:.3g}" for key, value in figures.items()))
    for key, value in figures.items():
        record_property(f"{name}_{key}", round(value, 3))


async def test_heartbeat_keeps_ticking_under_full_commit_load(
    tmp_path: Path, record_property: Any
) -> None:
    committed = 0

    async def committer(store: ma.RuntimeStore, task: int, deadline: float) -> None:
        nonlocal committed
        for operation in plan(1, 0, task):
            if time.perf_counter() >= deadline:
                return
            if operation.kind != "checkpoint":
                await operation.perform(store)
                committed += 1

    async with ma.open_store(tmp_path / "store") as store:

        async def load() -> None:
            deadline = time.perf_counter() + COMMIT_SECONDS
            async with trio.open_nursery() as nursery:
                for task in range(COMMITTERS):
                    nursery.start_soon(committer, store, task, deadline)

        started = time.perf_counter()
        heartbeat = await with_heartbeat(load)
        elapsed = time.perf_counter() - started
        stats = store.statistics()
    figures = heartbeat.summary() | {
        "commits": committed,
        "commits_per_s": committed / elapsed,
        "fsyncs_per_commit": stats.fsyncs / committed,
    }
    report("commit_load", figures, record_property)
    assert committed > COMMITTERS
    assert figures["worst_lag_ms"] < WORST_LAG_BOUND * 1000, figures


async def test_heartbeat_keeps_ticking_during_a_large_checkpoint(
    tmp_path: Path, record_property: Any
) -> None:
    runtime = ma.LogicalRuntimeId("big")
    now = datetime(2025, 1, 1, tzinfo=UTC)

    def stored(n: int) -> ma.StoredInputState:
        persisted = {"n": n, "text": "lorem ipsum " * 40}
        return _values.stored(ma.InputId(uuid.UUID(int=n + 1)), now=now, persisted_input=persisted)

    async with ma.open_store(tmp_path / "store") as store:
        for first in range(0, PREFILLED_STATES, 100):
            receipt = _values.receipt(
                0,
                ma.RunId(uuid.UUID(int=first + 1)),
                contributing_input_ids=(),
                conversation_digest=None,
                message_count=0,
            )
            batch = [stored(n) for n in range(first, first + 100)]
            await store.atomic_apply(runtime, None, receipt, batch)
        assert len(await store.load_input_states(runtime)) == PREFILLED_STATES
        commits_during = 0
        duration = 0.0

        async def checkpoint_while_committing() -> None:
            nonlocal commits_during, duration

            async def commit_meanwhile() -> None:
                nonlocal commits_during
                for operation in islice(plan(2, 0, 0), 1_000_000):
                    if operation.kind != "checkpoint":
                        await operation.perform(store)
                        commits_during += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(commit_meanwhile)
                started = time.perf_counter()
                await store.checkpoint()
                duration = time.perf_counter() - started
                nursery.cancel_scope.cancel()

        heartbeat = await with_heartbeat(checkpoint_while_committing)
        snapshot_bytes = max(
            path.stat().st_size for path in (tmp_path / "store").glob("snapshot-*.snap")
        )
    figures = heartbeat.summary() | {
        "checkpoint_s": duration,
        "snapshot_mb": snapshot_bytes / 1e6,
        "commits_during_checkpoint": commits_during,
    }
    report("large_checkpoint", figures, record_property)
    assert figures["worst_lag_ms"] < WORST_LAG_BOUND * 1000, figures
