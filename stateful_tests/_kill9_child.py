"""The child process of test_kill9.py: commits random operations until killed.

    python _kill9_child.py BACKEND LOCATION SEED GENERATION TASKS CHECKPOINT_BYTES

Opens a store and writes `ready`: with BACKEND `actor`, the durable actor
store in the directory LOCATION, checkpointing every CHECKPOINT_BYTES of log;
with `sqlite`, the SQLite store in the file LOCATION (CHECKPOINT_BYTES is
ignored: SQLite checkpoints its WAL itself); with `postgres`, the PostgreSQL
store in a schema named after LOCATION on `$MEERKAT_TEST_POSTGRES_DSN`'s
server (CHECKPOINT_BYTES ignored). Then it runs TASKS trio tasks.
Task `t` performs the operations `_workload.plan(SEED, GENERATION, t)` yields,
one after the other, forever, and reports each on stdout, one `write(2)` per
line, so a SIGKILL never leaves half a line behind another:

    begin <task> <index>     written before the call is made
    ack <task> <index>       written after the call returned (it is durable)

An operation that raises writes `error <task> <index> <message>` and stops the
task: the parent fails on it.
"""

from __future__ import annotations

import os
import sys

import trio
from _workload import open_location, plan

import meerkat_actor as ma


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


async def _task(store: ma.RuntimeStore, seed: int, generation: int, task: int) -> None:
    for index, operation in enumerate(plan(seed, generation, task)):
        _say(f"begin {task} {index}")
        try:
            await operation.perform(store)
        except Exception as exc:
            _say(f"error {task} {index} {type(exc).__name__}: {exc}".replace("\n", " "))
            return
        _say(f"ack {task} {index}")


async def main(
    backend: str, location: str, seed: int, generation: int, tasks: int, checkpoint: int
) -> None:
    async with open_location(backend, location, checkpoint) as store:
        _say("ready")
        async with trio.open_nursery() as nursery:
            for task in range(tasks):
                nursery.start_soon(_task, store, seed, generation, task)


if __name__ == "__main__":
    backend, location, *numbers = sys.argv[1:]
    seed, generation, tasks, checkpoint = map(int, numbers)
    trio.run(main, backend, location, seed, generation, tasks, checkpoint)
