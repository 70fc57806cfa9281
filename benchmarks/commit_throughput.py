"""Durable commit throughput: the actor store against Python's sqlite3, same run, same disk.

Each operation is one durable commit of a run boundary: a ~4 KiB session
snapshot, a receipt with a few contributing ids, and 1-8 input-state upserts.

- actor: `atomic_apply` on `open_store(dir)` from N concurrent trio tasks.
- sqlite: the same rows as Meerkat's SQLite schema (JSON blobs made by the
  same codec), one `BEGIN IMMEDIATE ... COMMIT` per operation, WAL mode,
  `synchronous=FULL`; N concurrent trio tasks, each with its own connection
  driven in a worker thread (SQLite serialises writers; `busy_timeout` waits).

Reports ops/s, p50/p99 latency, fsyncs per commit (the actor counts its own;
SQLite in WAL mode with synchronous=FULL syncs the WAL once per commit) and
the actor/SQLite throughput ratio per concurrency level.

    python benchmarks/commit_throughput.py [--ops 6000] [--dir /path/on/the/disk] [--no-session]

Operations are made before the clock starts (both backends get the same
ones), so the figures measure the stores, not the workload generator.
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

import meerkat_actor as ma
from meerkat_actor._codec import dumps_json

SCHEMA = """
CREATE TABLE IF NOT EXISTS runtime_input_states (
    runtime_id TEXT NOT NULL, input_id TEXT NOT NULL, state_json BLOB NOT NULL,
    PRIMARY KEY (runtime_id, input_id));
CREATE TABLE IF NOT EXISTS runtime_boundary_receipts (
    runtime_id TEXT NOT NULL, run_id TEXT NOT NULL, sequence INTEGER NOT NULL,
    receipt_json BLOB NOT NULL, PRIMARY KEY (runtime_id, run_id, sequence));
CREATE TABLE IF NOT EXISTS runtime_session_snapshots (
    runtime_id TEXT NOT NULL PRIMARY KEY, session_snapshot BLOB NOT NULL);
"""


_MESSAGES = [{"role": "user", "content": "x" * 60} for _ in range(50)]
_SNAPSHOTS: dict[ma.LogicalRuntimeId, bytes] = {}
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def make_operation(rng: random.Random, runtime: ma.LogicalRuntimeId) -> tuple:
    """One commit's arguments; cheap to make, so the measurement is the store's."""
    snapshot = _SNAPSHOTS.get(runtime)
    if snapshot is None:
        document = {"id": str(ma.SessionId.new()), "messages": _MESSAGES}
        snapshot = _SNAPSHOTS[runtime] = json.dumps(document).encode()  # ~4 KiB
    messages = _MESSAGES
    states = [
        ma.StoredInputState.new_accepted(ma.InputId.new(), now=_EPOCH)
        for _ in range(rng.randint(1, 8))
    ]
    receipt = ma.RunBoundaryReceipt(
        run_id=ma.RunId.new(),
        boundary=ma.RunApplyBoundary.RUN_START,
        contributing_input_ids=tuple(s.input_id for s in states[:3]),
        conversation_digest="0" * 64,
        message_count=len(messages),
        sequence=0,
    )
    return runtime, ma.SessionDelta(snapshot), receipt, states


async def drive(
    operations: list[list[tuple]], op: Callable[[int, tuple], Awaitable[None]]
) -> list[float]:
    """Run worker n over `operations[n]`, all workers at once; return latencies."""
    latencies: list[float] = []

    async def worker(n: int) -> None:
        for operation in operations[n]:
            started = time.perf_counter()
            await op(n, operation)
            latencies.append(time.perf_counter() - started)

    async with trio.open_nursery() as nursery:
        for n in range(len(operations)):
            nursery.start_soon(worker, n)
    return latencies


def plan(concurrency: int, total: int, with_session: bool) -> list[list[tuple]]:
    """Pre-made operations, so the timed part measures the store, not the generator."""
    per_worker = max(1, total // concurrency)
    plans = []
    for n in range(concurrency):
        rng = random.Random(n)
        runtime = ma.LogicalRuntimeId(f"rt-{n}")
        made = [make_operation(rng, runtime) for _ in range(per_worker)]
        if not with_session:
            made = [(r, None, receipt, states) for r, _, receipt, states in made]
        plans.append(made)
    return plans


async def bench_actor(directory: Path, operations: list[list[tuple]]) -> dict[str, float]:
    async with ma.open_store(directory) as store:

        async def op(n: int, operation: tuple) -> None:
            await store.atomic_apply(*operation)

        started = time.perf_counter()
        latencies = await drive(operations, op)
        elapsed = time.perf_counter() - started
        stats = store.statistics()
    return summarize(latencies, elapsed, stats.fsyncs / max(stats.records, 1))


async def bench_sqlite(path: Path, operations: list[list[tuple]]) -> dict[str, float]:
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.executescript(SCHEMA)
    setup.close()
    limiter = trio.CapacityLimiter(len(operations))
    connections: dict[int, sqlite3.Connection] = {}

    def connection(n: int) -> sqlite3.Connection:
        if n not in connections:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA busy_timeout=60000")
            connections[n] = conn
        return connections[n]

    def commit(n: int, operation: tuple) -> None:
        runtime, delta, receipt, states = operation
        conn = connection(n)
        conn.execute("BEGIN IMMEDIATE")
        try:
            if delta is not None:
                conn.execute(
                    "INSERT INTO runtime_session_snapshots VALUES (?, ?) ON CONFLICT(runtime_id)"
                    " DO UPDATE SET session_snapshot = excluded.session_snapshot",
                    (str(runtime), delta.session_snapshot),
                )
            conn.execute(
                "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
                (str(runtime), str(receipt.run_id), receipt.sequence, dumps_json(receipt)),
            )
            conn.executemany(
                "INSERT INTO runtime_input_states VALUES (?, ?, ?) ON CONFLICT(runtime_id,"
                " input_id) DO UPDATE SET state_json = excluded.state_json",
                [(str(runtime), str(s.input_id), dumps_json(s)) for s in states],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def op(n: int, operation: tuple) -> None:
        await trio.to_thread.run_sync(commit, n, operation, limiter=limiter)

    for n in range(len(operations)):  # connect outside the timed part
        connection(n)
    started = time.perf_counter()
    latencies = await drive(operations, op)
    elapsed = time.perf_counter() - started
    for conn in connections.values():
        conn.close()
    return summarize(latencies, elapsed, 1.0)


def summarize(latencies: list[float], elapsed: float, fsyncs_per_commit: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "ops": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else 0.0,
        "fsyncs_per_commit": fsyncs_per_commit,
    }


async def main(total: int, base: Path | None, with_session: bool) -> None:
    what = "with" if with_session else "without"
    print(f"atomic_apply {what} a 4 KiB session snapshot, 1-8 input states; {total} ops per row")
    print(f"{'backend':<8} {'tasks':>5} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'fsync/op':>9}")
    for concurrency in (1, 8, 64):
        count = total if concurrency > 1 else total // 2
        with tempfile.TemporaryDirectory(dir=base) as tmp:
            actor = await bench_actor(Path(tmp) / "actor", plan(concurrency, count, with_session))
            sqlite = await bench_sqlite(
                Path(tmp) / "peer.sqlite3", plan(concurrency, count, with_session)
            )
        for name, result in (("actor", actor), ("sqlite", sqlite)):
            print(
                f"{name:<8} {concurrency:>5} {result['ops']:>9.0f} {result['p50_ms']:>8.2f}"
                f" {result['p99_ms']:>8.2f} {result['fsyncs_per_commit']:>9.3f}"
            )
        print(f"{'ratio':<8} {concurrency:>5} {actor['ops'] / sqlite['ops']:>9.2f}x actor/sqlite")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=6000, help="operations per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the stores")
    parser.add_argument(
        "--no-session", action="store_true", help="commit receipts and input states only"
    )
    args = parser.parse_args()
    trio.run(main, args.ops, args.dir, not args.no_session)
