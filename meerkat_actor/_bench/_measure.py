"""Measuring: the driver of concurrent tasks, the event-loop heartbeat, memory.

Rule 1: the clock covers the store, not the benchmark. Operations are built
before `drive` starts; inside, a task only picks the next prepared item,
calls the store and records how long the call took.

Rule 2: the event loop's worst lag is measured beside every timed part: a
heartbeat task sleeps 1 ms in a loop and records how late each wake-up is.
Anything that holds the trio thread (a store's own work on it, a garbage
collection, a blocking call) shows up as lag.
"""

from __future__ import annotations

import gc
import math
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import trio

__all__ = [
    "BenchFailure",
    "Heartbeat",
    "Timed",
    "current_rss",
    "drive",
    "heartbeat",
    "peak_rss",
    "percentile",
]

TICK: Final = 0.001


class Heartbeat:
    """Sleeps `TICK` in a loop; `worst` is the largest overshoot since `reset()`,
    `worst_gc` the longest garbage collection meanwhile (both in seconds)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_gc = 0.0
        self._gc_started = 0.0

    async def run(self) -> None:
        while True:
            start = time.perf_counter()
            await trio.sleep(TICK)
            self.worst = max(self.worst, time.perf_counter() - start - TICK)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """A `gc.callbacks` hook: time each collection."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.worst_gc = max(self.worst_gc, time.perf_counter() - self._gc_started)

    def reset(self) -> None:
        self.worst = 0.0
        self.worst_gc = 0.0

    async def settle(self) -> float:
        """Let the tick in progress finish, then return the worst lag (seconds)."""
        await trio.sleep(2 * TICK)
        return self.worst


@asynccontextmanager
async def heartbeat() -> AsyncIterator[Heartbeat]:
    """Run a `Heartbeat` (and time garbage collections) for the duration of the block."""
    beat = Heartbeat()
    gc.callbacks.append(beat.on_gc)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beat.run)
            await trio.sleep(2 * TICK)
            try:
                yield beat
            finally:
                nursery.cancel_scope.cancel()
    finally:
        gc.callbacks.remove(beat.on_gc)


@dataclass(frozen=True, slots=True)
class Timed:
    """What `drive` measured: each call's latency and start time (seconds),
    the wall time from the first start to the last return, and each call's
    prepared item (`items[n]` is the item of `latencies[n]`)."""

    latencies: list[float]
    starts: list[float]
    elapsed: float
    items: list[int]


async def drive(
    tasks: int,
    items: int,
    seconds: float,
    call: Callable[[int, int], Awaitable[None]],
) -> Timed:
    """Run `tasks` tasks that share the prepared items `0 .. items-1`.

    Each task takes the next item and awaits `call(task, item)`, until the
    items run out or `seconds` have passed since the start (a call started
    before then is finished and counted).
    """
    latencies: list[float] = []
    starts: list[float] = []
    done: list[int] = []
    next_item = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def task(number: int) -> None:
        nonlocal next_item
        while next_item < items:
            begin = time.perf_counter()
            if begin >= deadline:
                return
            item = next_item
            next_item += 1
            await call(number, item)
            latencies.append(time.perf_counter() - begin)
            starts.append(begin)
            done.append(item)

    async with trio.open_nursery() as nursery:
        for number in range(tasks):
            nursery.start_soon(task, number)
    return Timed(latencies, starts, time.perf_counter() - started, done)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (`fraction` in (0, 1])."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def current_rss() -> int:
    """This process's resident set size now, in bytes (Linux: /proc/self/statm;
    elsewhere the peak, which is what the platform offers)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return peak_rss()
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    """This process's peak resident set size so far, in bytes.

    On Linux this is `VmHWM` of /proc/self/status, the high-water mark of
    the process's own memory map. Not `ru_maxrss`: Linux carries it across
    `exec`, so a child process would report the peak of the parent that
    forked it whenever that is higher. Elsewhere, `ru_maxrss`.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class BenchFailure(Exception):
    """A store gave a wrong answer during the benchmark (its figures would be
    worthless), or a measuring child process failed."""
