"""Where the trio thread's time goes under full durable commit load.

64 tasks (by default) commit `atomic_apply` with 64 KiB sessions and 1-8
input states (the bench's payloads) to a durable store, beside a 1 ms
heartbeat that records how late each wake-up is. The actor's and the
writer's steps on the trio thread are timed by wrapping them, so the run
prints, per batch: its size, the time it held the loop, and how that time
splits between the core (`plan` + `redo`), the record encoding and the rest;
per write: the framing done on the trio thread (none once it moved to the
writer's worker thread); and the lag inside and outside checkpoints (whose
snapshot encoding holds the GIL in a worker thread).

    .venv/bin/python tools/lag_profile.py [--tasks 64] [--size 65536] [--seconds 3]
        [--checkpoint-bytes N]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import trio

import meerkat_actor as ma
from meerkat_actor import _actor, _core, _durable, _format, _writer
from meerkat_actor._bench._payloads import Session, Write, sessions, write_pool

TICK = 0.001


class Timer:
    """Accumulates the time spent in wrapped functions on the trio thread."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn`, timed under `name` when it runs on the main (trio) thread."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is not threading.main_thread():
                return fn(*args, **kwargs)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - start

        return timed


class Instruments:
    """Wraps the actor's and the writer's steps (module attributes, looked up
    at call time) and records what they cost."""

    def __init__(self) -> None:
        self.steps = Timer()
        self.framing = Timer()
        self.batches: list[tuple[int, float, dict[str, float]]] = []
        self.writes: list[float] = []
        self.framed: list[float] = []
        self.windows: list[tuple[float, float]] = []
        self.gc_pauses: list[float] = []
        self._gc_start = 0.0

    def install(self) -> None:
        steps = self.steps
        _core.plan = steps.wrap("plan", _core.plan)  # type: ignore[assignment]
        _core.redo = steps.wrap("redo", _core.redo)  # type: ignore[assignment]
        _durable.DurableLog.encode = steps.wrap("encode", _durable.DurableLog.encode)  # type: ignore[method-assign]
        _writer.frame_records = self.framing.wrap("frame", _format.frame_records)  # type: ignore[attr-defined]
        run_batch, commit = _actor._Actor.run_batch, _writer.Writer._commit
        write_snapshot = _writer.Writer._write_snapshot

        def timed_batch(actor: Any, *args: Any) -> Any:
            steps.spent = {}
            start = time.perf_counter()
            result = run_batch(actor, *args)
            self.batches.append((len(result[0]), time.perf_counter() - start, steps.spent))
            return result

        async def timed_slices(actor: Any, *args: Any) -> Any:
            # A batch applied in slices: its wall time includes the yields.
            steps.spent = {}
            start = time.perf_counter()
            result = await run_batch(actor, *args)
            self.batches.append((len(result[0]), time.perf_counter() - start, steps.spent))
            return result

        async def timed_commit(writer: Any) -> None:
            self.framing.spent = {}
            start = time.perf_counter()
            await commit(writer)
            self.writes.append(time.perf_counter() - start)
            self.framed.append(self.framing.spent.get("frame", 0.0))

        async def timed_snapshot(writer: Any, *args: Any) -> None:
            start = time.perf_counter()
            try:
                await write_snapshot(writer, *args)
            finally:
                self.windows.append((start, time.perf_counter()))

        sliced = inspect.iscoroutinefunction(run_batch)
        _actor._Actor.run_batch = timed_slices if sliced else timed_batch  # type: ignore[method-assign]
        _writer.Writer._commit = timed_commit  # type: ignore[method-assign]
        _writer.Writer._write_snapshot = timed_snapshot  # type: ignore[method-assign]

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_pauses.append(time.perf_counter() - self._gc_start)

    def reset(self) -> None:
        self.batches.clear()
        self.writes.clear()
        self.framed.clear()


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (
        f"n={len(values)} mean={statistics.fmean(values) * 1e3:.2f}"
        f" p99={p99 * 1e3:.2f} max={ordered[-1] * 1e3:.2f} ms"
    )


class Load:
    """The committing tasks and the heartbeat."""

    def __init__(self, runtimes: list[Session], pool: list[Write]) -> None:
        self.runtimes = runtimes
        self.pool = pool
        self.done = 0
        self.latencies: list[float] = []
        self.lags: list[float] = []  # each heartbeat's lag
        self.ends: list[float] = []  # and when it woke

    async def heartbeat(self) -> None:
        while True:
            start = time.perf_counter()
            await trio.sleep(TICK)
            now = time.perf_counter()
            self.lags.append(now - start - TICK)
            self.ends.append(now)

    async def committer(self, store: ma.ActorStore, n: int, deadline: float) -> None:
        session = self.runtimes[n]
        while time.perf_counter() < deadline and self.done < len(self.pool):
            write = self.pool[self.done]
            self.done += 1
            begin = time.perf_counter()
            await store.atomic_apply(
                session.runtime_id, session.delta, write.receipt, write.states, session.session_id
            )
            self.latencies.append(time.perf_counter() - begin)


async def main(tasks: int, size: int, seconds: float, checkpoint_bytes: int) -> None:
    probe = Instruments()
    probe.install()
    runtimes = await trio.to_thread.run_sync(sessions, "bench", tasks, size)
    pool = await trio.to_thread.run_sync(write_pool, f"commit-{size}", 20_000)
    load = Load(runtimes, pool)
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory() as directory:
        async with ma.open_store(directory + "/store", checkpoint_bytes=checkpoint_bytes) as store:
            gc.callbacks.append(probe.on_gc)
            async with trio.open_nursery() as outer:
                outer.start_soon(load.heartbeat)
                await trio.sleep(0.01)
                probe.reset()
                load.lags.clear()
                load.ends.clear()
                started = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for n in range(tasks):
                        nursery.start_soon(load.committer, store, n, started + seconds)
                elapsed = time.perf_counter() - started
                await trio.sleep(0.005)
                outer.cancel_scope.cancel()
            gc.callbacks.remove(probe.on_gc)
            stats = store.statistics()
    gc.unfreeze()
    report(probe, load, stats, tasks=tasks, size=size, elapsed=elapsed)


def report(
    probe: Instruments,
    /,
    load: Load,
    stats: ma.StoreStatistics,
    *,
    tasks: int,
    size: int,
    elapsed: float,
) -> None:
    lags = load.lags
    print(
        f"{tasks} tasks, {size} B sessions: {len(load.latencies)} commits in {elapsed:.2f} s"
        f" = {len(load.latencies) / elapsed:,.0f}/s; checkpoints {stats.checkpoints},"
        f" fsyncs/commit {stats.fsyncs / max(1, stats.records):.3f},"
        f" largest batch {stats.largest_batch}"
    )
    print(f"commit latency: {_ms(load.latencies)}")
    print(
        f"loop lag: {_ms(lags)}; over 5 ms: {sum(lag > 0.005 for lag in lags)},"
        f" over 20 ms: {sum(lag > 0.020 for lag in lags)}"
    )
    outside = [
        lag
        for lag, end in zip(lags, load.ends, strict=True)
        if not any(a <= end and end - lag - TICK <= b for a, b in probe.windows)
    ]
    print(
        f"loop lag outside checkpoints: {_ms(outside)};"
        f" over 20 ms: {sum(lag > 0.020 for lag in outside)}"
    )
    print(
        "checkpoints (the last one at close):",
        [f"{(b - a) * 1e3:.0f} ms" for a, b in probe.windows],
    )
    print(f"gc pauses: {_ms(probe.gc_pauses)}")
    batches = probe.batches
    sizes = [b[0] for b in batches]
    print(f"batch (run_batch, wall time, yields included): {_ms([b[1] for b in batches])}")
    print(f"batch sizes: mean {statistics.fmean(sizes):.1f} max {max(sizes)}")
    per_command: dict[str, float] = {}
    total, commands = sum(b[1] for b in batches), sum(sizes)
    for _, _, spent in batches:
        for name, value in spent.items():
            per_command[name] = per_command.get(name, 0.0) + value
    print(f"per command on the trio thread: {total / commands * 1e3:.3f} ms, of which")
    for name, value in sorted(per_command.items()):
        print(f"  {name:<8} {value / commands * 1e3:.3f} ms ({value / total:.0%})")
    print(f"  {'rest':<8} {(total - sum(per_command.values())) / commands * 1e3:.3f} ms")
    print(f"writer _commit (await, incl. write + fsync): {_ms(probe.writes)}")
    print(f"framing on the trio thread, per write: {_ms(probe.framed)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--size", type=int, default=64 * 1024)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--checkpoint-bytes", type=int, default=64 * 1024 * 1024)
    args = parser.parse_args()
    trio.run(main, args.tasks, args.size, args.seconds, args.checkpoint_bytes)
