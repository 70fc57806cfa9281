"""Kill -9: acknowledged writes survive SIGKILL at any instant (SPEC §6).

Run for both durable backends: the actor store (a directory) and the SQLite
store (a file in WAL mode). A child process (`_kill9_child.py`) opens the
store and commits randomly generated operations from many trio tasks,
writing `begin` before and `ack` after each. The parent kills it with SIGKILL at a random moment
(sometimes before the store has even opened, i.e. during recovery), reopens
the store and checks, for every task of the child:

- acknowledged ⊆ recovered ⊆ acknowledged + in flight: the task's runtime holds
  exactly the effect of its acknowledged operations, or of those and the one
  it had begun (a task has at most one operation in flight);
- each operation is wholly present or wholly absent: the runtime equals a
  reference model fed whole operations, so a receipt without its input states,
  or a snapshot without its receipt, matches neither candidate;
- the store-wide OAuth counter counts every acknowledged increment and at most
  the in-flight ones besides;
- nothing recovered after an earlier kill has changed.

A chain of kills shares one store, so later children recover from the crash
artifacts of earlier ones: for the actor store torn tails, half-written
snapshots and segments (the children checkpoint by size, some every 4 KiB);
for SQLite the `-wal` file the killed child left (recovered on reopen). The
parent closes the store cleanly after its check half of the time and
abandons it (no final checkpoint) otherwise.

Kills, as chains x kills per chain: actor store 5 x 10 with
HYPOTHESIS_PROFILE=ci, 5 x 20 with deep, 1 x 10 otherwise; SQLite store
2 x 5 with ci, 5 x 20 with deep, 1 x 5 otherwise. The seed is random and
printed in every failure; KILL9_SEED=<seed> replays the same operations,
task counts and checkpoint sizes (the kill instants still vary).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import pytest
import trio
from _workload import Operation, Read, open_location, plan, reads_for, runtime_id

import meerkat_actor as ma
from meerkat_actor.testing import ReferenceModel

# Child processes killed at random moments, generations of them: minutes.
pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("_kill9_child.py")
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
#: (chains, kills per chain) of each backend in this profile.
SCALE = {
    "actor": {"ci": (5, 10), "deep": (5, 20)}.get(PROFILE, (1, 10)),
    "sqlite": {"ci": (2, 5), "deep": (5, 20)}.get(PROFILE, (1, 5)),
    "postgres": {"ci": (2, 5), "deep": (5, 20)}.get(PROFILE, (1, 5)),
}
BASE_SEED = int(os.environ.get("KILL9_SEED") or random.SystemRandom().randrange(2**32))
READY_TIMEOUT = 30.0
CHECKPOINT_BYTES = (4096, 64 * 1024, 64 * 1024 * 1024)


@dataclass
class Totals:
    """What the kills showed, for the report."""

    kills: int = 0
    before_ready: int = 0
    acknowledged: int = 0
    in_flight: int = 0  # in-flight operations that change their runtime
    in_flight_present: int = 0
    in_flight_absent: int = 0
    torn_tails: int = 0  # torn records or segment headers recovery repaired
    mid_checkpoint: int = 0  # kills that left a snapshot temp file behind (actor)
    wal_left: int = 0  # kills that left a non-empty -wal file to recover (SQLite)


@dataclass
class TaskLog:
    begun: int = 0
    acked: int = 0


def parse(output: bytes, where: str) -> dict[int, TaskLog]:
    """The child's report: per task, how many operations were begun and acked."""
    lines = output.split(b"\n")[:-1]  # a line without its newline was never written whole
    tasks: dict[int, TaskLog] = {}
    for raw in lines[1:] if lines[:1] == [b"ready"] else lines:
        line = raw.decode()
        word, task_text, index_text, *rest = line.split(" ", 3)
        log = tasks.setdefault(int(task_text), TaskLog())
        index = int(index_text)
        if word == "error":
            pytest.fail(f"{where}: task {task_text} operation {index} failed: {rest}")
        elif word == "begin":
            assert index == log.begun == log.acked, f"{where}: out of order: {line}"
            log.begun += 1
        else:
            assert word == "ack", f"{where}: unexpected line {line!r}"
            assert index == log.acked == log.begun - 1, f"{where}: out of order: {line}"
            log.acked += 1
    return tasks


def model_reads(model: ReferenceModel, reads: list[Read]) -> list[Any]:
    return [getattr(model, name)(*args) for name, args in reads]


async def store_reads(store: ma.RuntimeStore, reads: list[Read]) -> list[Any]:
    return [await getattr(store, name)(*args) for name, args in reads]


@dataclass
class Candidates:
    """What one task's runtime may look like after the kill."""

    reads: list[Read]
    acked: list[Any]  # the acknowledged operations' effect
    with_in_flight: list[Any] | None  # plus the in-flight one, if there is one
    in_flight: Operation | None

    def explain(self, got: list[Any]) -> str:
        message = (
            "recovered neither its acknowledged operations"
            f" [{describe_difference(self.reads, got, self.acked)}]"
        )
        if self.in_flight is None or self.with_in_flight is None:
            return message + " (none was in flight)"
        return (
            f"{message} nor those and the one in flight, {self.in_flight.kind}"
            f" [{describe_difference(self.reads, got, self.with_in_flight)}]"
        )


def candidates(seed: int, generation: int, task: int, log: TaskLog) -> Candidates:
    operations = list(islice(plan(seed, generation, task), log.begun))
    reads = reads_for(runtime_id(generation, task), operations)
    model = ReferenceModel()
    for operation in operations[: log.acked]:
        operation.apply(model)
    acked = model_reads(model, reads)
    if log.begun == log.acked:
        return Candidates(reads, acked, None, None)
    in_flight = operations[log.acked]
    in_flight.apply(model)
    return Candidates(reads, acked, model_reads(model, reads), in_flight)


def store_location(backend: str, tmp_path: Path) -> Path:
    """Where a chain's store lives: a directory, or a SQLite file."""
    return tmp_path / ("runtime.sqlite3" if backend == "sqlite" else "store")


def open_backend(backend: str, location: Path) -> AbstractAsyncContextManager[ma.RuntimeStore]:
    return open_location(backend, str(location))


def describe_difference(reads: list[Read], got: list[Any], expected: list[Any]) -> str:
    return "; ".join(
        f"{name}{args[1:]}: recovered {g!r}, expected {e!r}"
        for (name, args), g, e in zip(reads, got, expected, strict=True)
        if g != e
    )


@dataclass
class Chain:
    """One store and what its earlier kills left in it."""

    backend: str
    location: Path
    seed: int
    rng: random.Random
    totals: Totals
    expected: dict[ma.LogicalRuntimeId, tuple[list[Read], list[Any]]] = field(default_factory=dict)
    counter: int = 0
    ready_latency: float = 0.4

    def kill_one(self, generation: int, out: Path) -> tuple[bytes, bool]:
        """Run a child, SIGKILL it at a random moment; its output and whether it was ready."""
        rng = self.rng
        tasks = rng.choice((1, 4, 16, 64))
        checkpoint = rng.choice(CHECKPOINT_BYTES)
        early = rng.random() < 0.15
        argv = [sys.executable, str(CHILD), self.backend, str(self.location), str(self.seed)]
        argv += [str(generation), str(tasks), str(checkpoint)]
        with out.open("wb") as stdout, out.with_suffix(".err").open("wb") as stderr:
            started = time.monotonic()
            child = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
            try:
                if early:
                    time.sleep(rng.uniform(0, 1.2) * self.ready_latency)
                else:
                    self._wait_ready(child, out)
                    self.ready_latency = time.monotonic() - started
                    time.sleep(rng.choice((0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.4))))
                child.send_signal(signal.SIGKILL)
            finally:
                child.kill()
                code = child.wait()
        assert code == -signal.SIGKILL, (
            f"the child exited by itself with {code}: {out.with_suffix('.err').read_text()}"
        )
        output = out.read_bytes()
        return output, output.startswith(b"ready\n")

    @staticmethod
    def _wait_ready(child: subprocess.Popen[bytes], out: Path) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while not out.read_bytes().startswith(b"ready\n"):
            assert child.poll() is None, f"the child died before opening the store: {out}"
            assert time.monotonic() < deadline, "the child did not open the store in time"
            time.sleep(0.002)

    async def check(self, generation: int, tasks: dict[int, TaskLog], where: str) -> None:
        """Reopen the store and check it against the child's report."""
        totals = self.totals
        with trio.CancelScope() as scope:
            async with open_backend(self.backend, self.location) as store:
                for rt, (reads, expected) in self.expected.items():
                    got = await store_reads(store, reads)
                    assert got == expected, (
                        f"{where}: runtime {rt} of an earlier kill changed: "
                        + describe_difference(reads, got, expected)
                    )
                acked_increments = in_flight_increments = 0
                for task, log in sorted(tasks.items()):
                    found = candidates(self.seed, generation, task, log)
                    got = await store_reads(store, found.reads)
                    totals.acknowledged += log.acked
                    kind = found.in_flight.kind if found.in_flight else None
                    acked_increments += sum(
                        op.kind == "oauth_increment"
                        for op in islice(plan(self.seed, generation, task), log.acked)
                    )
                    in_flight_increments += kind == "oauth_increment"
                    visible = kind in ("atomic_apply", "persist_input_state", "lifecycle")
                    totals.in_flight += visible
                    if got == found.acked:
                        totals.in_flight_absent += visible
                    elif got == found.with_in_flight:
                        totals.in_flight_present += visible
                    else:
                        raise AssertionError(f"{where}: task {task} {found.explain(got)}")
                    self.expected[runtime_id(generation, task)] = (found.reads, got)
                counter = int(await store.load_auth_oauth_flow_snapshot() or b"0")
                low = self.counter + acked_increments
                assert low <= counter <= low + in_flight_increments, (
                    f"{where}: OAuth counter {counter}, expected {low} acknowledged"
                    f" + up to {in_flight_increments} in flight"
                )
                self.counter = counter
                if self.rng.random() < 0.5:
                    scope.cancel()  # leave without the final checkpoint, as a crash would
                    await trio.sleep_forever()


def run_chain(backend: str, chain_index: int, tmp_path: Path, totals: Totals) -> None:
    seed = BASE_SEED + chain_index
    location = store_location(backend, tmp_path)
    chain = Chain(backend, location, seed, random.Random(seed), totals)
    kills = SCALE[backend][1]
    for generation in range(kills):
        where = (
            f"KILL9_SEED={BASE_SEED} {backend} chain {chain_index} kill {generation} ({tmp_path})"
        )
        output, ready = chain.kill_one(generation, tmp_path / f"child-{generation}.out")
        totals.kills += 1
        totals.before_ready += not ready
        if backend == "sqlite":
            wal = Path(f"{location}-wal")
            totals.wal_left += wal.exists() and wal.stat().st_size > 0
        else:
            names = os.listdir(location) if location.exists() else []
            totals.mid_checkpoint += any(name.endswith(".tmp") for name in names)
        trio.run(chain.check, generation, parse(output, where), where)


@pytest.fixture(scope="module")
def totals() -> Iterator[dict[str, Totals]]:
    found = {backend: Totals() for backend in SCALE}
    yield found
    for backend, seen in found.items():
        if not seen.kills:
            continue
        artifacts = {
            "sqlite": f"{seen.wal_left} kills left a WAL to recover",
            "postgres": "the server rolled back every transaction a kill cut off",
        }.get(
            backend,
            f"{seen.mid_checkpoint} kills interrupted a checkpoint;"
            f" {seen.torn_tails} torn writes repaired",
        )
        print(
            f"\nkill -9, {backend} store (seed {BASE_SEED}): {seen.kills} kills"
            f" ({seen.before_ready} before the store opened); {seen.acknowledged} acknowledged"
            f" operations all recovered; {seen.in_flight} in flight: {seen.in_flight_present}"
            f" present, {seen.in_flight_absent} absent, none partial; {artifacts}"
        )


CHAINS = [(backend, chain) for backend, (chains, _) in SCALE.items() for chain in range(chains)]


@pytest.mark.parametrize(("backend", "chain"), CHAINS, ids=[f"{b}-{c}" for b, c in CHAINS])
def test_kill9_recovers_exactly_the_acknowledged_writes(
    backend: str,
    chain: int,
    tmp_path: Path,
    totals: dict[str, Totals],
    caplog: pytest.LogCaptureFixture,
    record_property: Any,
    request: pytest.FixtureRequest,
) -> None:
    if backend == "postgres":
        request.getfixturevalue("postgres_dsn")  # the server, for parent and children
    found = totals[backend]
    with caplog.at_level(logging.WARNING, logger="meerkat_actor"):
        run_chain(backend, chain, tmp_path, found)
    found.torn_tails += sum("torn" in message for message in caplog.messages)
    record_property("kill9_seed", BASE_SEED)
    record_property("kill9_kills_so_far", found.kills)
    record_property("kill9_in_flight_present", found.in_flight_present)
    record_property("kill9_in_flight_absent", found.in_flight_absent)
