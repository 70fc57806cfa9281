"""The demo: a small agent-host-like workload on a store, and a summary of it.

Several runtimes run side by side as trio tasks, as an agent host would: each
starts up (lifecycle `initializing -> idle`), accepts and queues inputs, and
for every run commits a session snapshot, a run-boundary receipt and the
consumed inputs (taken through the input lifecycle by `transition`, so each
has its history) in one `atomic_apply`; it persists its ops lifecycle snapshot; all of them share
one OAuth flow snapshot, updated atomically as a counter. At the end it reads
everything back through the public API and prints what the store holds (the
receipts column counts every receipt a runtime holds, `load_boundary_receipts`:
a second run of the demo on the same store shows those of both runs).

SIGINT (Ctrl-C) and SIGTERM stop the workload the way a host should stop
(`shutdown_on_signals`, docs/operations.md#shutdown): the runtimes' tasks
are cancelled, the summary is printed, and the caller's store block exits
normally, so the store closes cleanly (a durable one with its final
checkpoint). Only from the main thread, where signals are handled.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import trio

from ._front import StoreFront
from ._ids import InputId, LogicalRuntimeId, RunId, SessionId
from ._shutdown import Shutdown, asyncio_shutdown_on_signals, shutdown_on_signals
from ._types import (
    InputDurability,
    InputLifecycleState,
    InputState,
    InputTerminalOutcome,
    PersistedOpsSnapshot,
    RunApplyBoundary,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
    machine_transition,
)

__all__ = [
    "count_input_states",
    "demo_runtime_ids",
    "read_everything",
    "run_demo",
    "run_demo_asyncio",
]

#: Any store of this package: the workload only calls the contract's methods
#: and `statistics()`, so it runs on trio's handles and on asyncio's alike.
DemoStore = StoreFront


@dataclass
class _RuntimeLog:
    """What one demo runtime did, to read back and check at the end."""

    runtime_id: LogicalRuntimeId
    session_id: SessionId = field(default_factory=SessionId.new)
    receipts: list[tuple[RunId, int]] = field(default_factory=list)


def _session(session_id: SessionId, messages: list[str]) -> bytes:
    document = {
        "id": str(session_id),
        "messages": [{"role": "user", "content": m} for m in messages],
    }
    return json.dumps(document).encode()


def _queued() -> StoredInputState:
    """A new input, accepted and queued (durable: it must survive a restart)."""
    now = datetime.now(UTC)
    shell = InputState(InputId.new(), now, now, durability=InputDurability.DURABLE)
    return StoredInputState(shell).transition(InputLifecycleState.QUEUED, reason="policy resolved")


def _consumed(queued: StoredInputState, run_id: RunId, sequence: int) -> StoredInputState:
    """`queued` taken through one run: staged for it, applied at the boundary
    whose receipt has `sequence`, consumed. Each move is checked against the
    input lifecycle and recorded in the history."""
    return (
        queued.transition(InputLifecycleState.STAGED, reason="run started", run_id=run_id)
        .transition(InputLifecycleState.APPLIED, reason="boundary applied")
        .transition(
            InputLifecycleState.APPLIED_PENDING_CONSUMPTION,
            reason="receipt committed",
            sequence=sequence,
        )
        .transition(
            InputLifecycleState.CONSUMED,
            reason="run complete",
            outcome=InputTerminalOutcome.consumed(),
        )
    )


def _increment(current: bytes | None) -> bytes:
    document = json.loads(current) if current is not None else {"logins": 0}
    document["logins"] += 1
    return json.dumps(document).encode()


async def _runtime_task(store: DemoStore, log: _RuntimeLog, runs: int, inputs_per_run: int) -> None:
    rid = log.runtime_id
    if await store.load_runtime_state(rid) is None:
        await store.commit_machine_lifecycle(
            rid, machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE), []
        )
    # A runtime seen in an earlier run of the demo continues its session.
    messages: list[str] = []
    previous = await store.load_session_snapshot(rid)
    if previous is not None:
        document = json.loads(previous)
        log.session_id = SessionId.parse(document["id"])
        messages = [m["content"] for m in document["messages"]]
    for _ in range(runs):
        queued = [_queued() for _ in range(inputs_per_run)]
        for stored in queued:
            await store.persist_input_state(rid, stored)
        await store.commit_machine_lifecycle(
            rid, machine_transition(RuntimeState.IDLE, RuntimeState.RUNNING), []
        )
        run_id = RunId.new()
        messages += [f"input {len(messages) + i}" for i in range(inputs_per_run)]
        receipt = RunBoundaryReceipt(  # the run's first boundary: sequence 0
            run_id,
            RunApplyBoundary.RUN_START,
            tuple(s.input_id for s in queued),
            message_count=len(messages),
        )
        await store.atomic_apply(
            rid,
            SessionDelta(_session(log.session_id, messages)),
            receipt,
            [_consumed(s, run_id, receipt.sequence) for s in queued],
            session_store_key=log.session_id,
        )
        log.receipts.append((run_id, receipt.sequence))
        await store.commit_machine_lifecycle(
            rid, machine_transition(RuntimeState.RUNNING, RuntimeState.IDLE), []
        )
        await store.update_auth_oauth_flow_snapshot(_increment)
    # One input stays queued, so the summary shows more than one phase.
    await store.persist_input_state(rid, _queued())
    await store.persist_ops_lifecycle(
        rid, PersistedOpsSnapshot(epoch_id=str(RunId.new()), cursors={"agent_applied_cursor": runs})
    )


@asynccontextmanager
async def _stopped_by_signals_asyncio() -> AsyncIterator[Shutdown]:
    """`_stopped_by_signals` for asyncio."""
    if threading.current_thread() is not threading.main_thread():
        yield Shutdown()
        return
    async with asyncio_shutdown_on_signals() as shutdown:
        yield shutdown


@asynccontextmanager
async def _stopped_by_signals() -> AsyncIterator[Shutdown]:
    """`shutdown_on_signals()` in the main thread; elsewhere (a test's
    worker thread) signals are not Python's to handle there: no stop."""
    if threading.current_thread() is not threading.main_thread():
        yield Shutdown()
        return
    async with shutdown_on_signals() as shutdown:
        yield shutdown


def demo_runtime_ids(runtimes: int) -> list[LogicalRuntimeId]:
    """The ids the demo's runtimes write under: `agent-1` to `agent-<runtimes>`."""
    return [LogicalRuntimeId(f"agent-{n}") for n in range(1, runtimes + 1)]


async def count_input_states(store: DemoStore, runtimes: int) -> int:
    """How many input states the demo's first `runtimes` runtimes hold in
    `store` (what earlier demo runs left, or this one), through the public
    reads."""
    return sum([len(await store.load_input_states(rid)) for rid in demo_runtime_ids(runtimes)])


async def run_demo(
    store: DemoStore,
    *,
    runtimes: int = 4,
    runs: int = 5,
    inputs_per_run: int = 3,
    out: Callable[[str], None] = print,
) -> list[tuple[LogicalRuntimeId, RunId, int]]:
    """Run the workload on `store`, print a summary with `out`, and return the
    receipt keys `(runtime_id, run_id, sequence)` this run committed."""
    logs = [_RuntimeLog(runtime_id) for runtime_id in demo_runtime_ids(runtimes)]
    started = trio.current_time()
    async with _stopped_by_signals() as shutdown, trio.open_nursery() as nursery:
        for log in logs:
            nursery.start_soon(_runtime_task, store, log, runs, inputs_per_run)
    elapsed = trio.current_time() - started
    shape = (runtimes, runs, inputs_per_run)
    return await _summarise(store, logs, shutdown, elapsed, shape, out=out)


async def run_demo_asyncio(
    store: DemoStore,
    *,
    runtimes: int = 4,
    runs: int = 5,
    inputs_per_run: int = 3,
    out: Callable[[str], None] = print,
) -> list[tuple[LogicalRuntimeId, RunId, int]]:
    """`run_demo` for an asyncio program (a store of `meerkat_actor.asyncio`):
    the same workload, its runtimes as asyncio tasks, stopped by SIGINT or
    SIGTERM the same way (`asyncio_shutdown_on_signals`)."""
    logs = [_RuntimeLog(runtime_id) for runtime_id in demo_runtime_ids(runtimes)]
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with _stopped_by_signals_asyncio() as shutdown, asyncio.TaskGroup() as tasks:
        for log in logs:
            tasks.create_task(_runtime_task(store, log, runs, inputs_per_run))
    elapsed = loop.time() - started
    shape = (runtimes, runs, inputs_per_run)
    return await _summarise(store, logs, shutdown, elapsed, shape, out=out)


async def _summarise(
    store: DemoStore,
    logs: list[_RuntimeLog],
    shutdown: Shutdown,
    elapsed: float,
    shape: tuple[int, int, int],
    *,
    out: Callable[[str], None],
) -> list[tuple[LogicalRuntimeId, RunId, int]]:
    """Print what the store holds of the workload's runtimes; return the
    receipt keys the workload committed."""
    runtimes, runs, inputs_per_run = shape
    if shutdown.signal is not None:
        out(f"stopped by {shutdown.signal.name}: the workload was cut short")

    # Counts and sizes with a comma every three digits, as every command's
    # text has them (docs/cli.md, "Numbers").
    out(f"workload: {runtimes:,} runtimes x {runs:,} runs x {inputs_per_run:,} inputs")
    out("")
    out(f"{'runtime':<10} {'state':<8} {'inputs by phase':<28} {'receipts':>8} {'session':>9} ops")
    for log in logs:
        rid = log.runtime_id
        states = await store.load_input_states(rid)
        phases = Counter(s.seed.phase.value for s in states)
        # Every receipt the runtime holds: this run's and earlier runs'.
        receipts = await store.load_boundary_receipts(rid)
        snapshot = await store.load_session_snapshot(rid)
        runtime_state = await store.load_runtime_state(rid)
        ops = await store.load_ops_lifecycle(rid)
        out(
            f"{rid!s:<10} {runtime_state.value if runtime_state else '-':<8}"
            f" {', '.join(f'{n:,} {p}' for p, n in sorted(phases.items())):<28}"
            f" {len(receipts):>8,}"
            f" {len(snapshot or b''):>7,} B"
            f" {'yes' if ops else 'no'}"
        )
    oauth = await store.load_auth_oauth_flow_snapshot()
    out("")
    out(f"OAuth flow snapshot: {oauth.decode() if oauth else 'none'}")
    stats = store.statistics()
    line = (
        f"{stats.commands:,} commands in {stats.batches:,} batches"
        f" (largest {stats.largest_batch:,}), {stats.refused:,} refused,"
        f" {elapsed * 1000:,.1f} ms"
    )
    if store.auth_authority_key() is not None:
        line += f"; {stats.fsyncs:,} fsyncs for {stats.records:,} log records"
    out(line)
    return [(log.runtime_id, run_id, seq) for log in logs for run_id, seq in log.receipts]


async def read_everything(
    store: DemoStore, receipts: list[tuple[LogicalRuntimeId, RunId, int]]
) -> dict[str, object]:
    """Everything `store` holds, through the public reads: the runtimes
    `list_runtimes` lists, for each of them all it holds (its receipts by
    `load_boundary_receipts`, of every run of the demo), the OAuth flow
    snapshot, and the `receipts` this run acknowledged, each looked up by
    its key."""
    runtime_ids = await store.list_runtimes()
    seen: dict[str, object] = {
        "oauth": await store.load_auth_oauth_flow_snapshot(),
        "runtimes": runtime_ids,
    }
    for rid in runtime_ids:
        seen[f"{rid}/inputs"] = await store.load_input_states(rid)
        seen[f"{rid}/session"] = await store.load_session_snapshot(rid)
        seen[f"{rid}/state"] = await store.load_runtime_state(rid)
        seen[f"{rid}/ops"] = await store.load_ops_lifecycle(rid)
        seen[f"{rid}/receipts"] = await store.load_boundary_receipts(rid)
    for rid, run_id, sequence in receipts:
        seen[f"{rid}/receipt/{run_id}/{sequence}"] = await store.load_boundary_receipt(
            rid, run_id, sequence
        )
    return seen
