"""What a store state holds, counted: the figures the operator tools report.

Rule 1: pure. Every function here is a function of a `StoreState` value: no
file, no clock, no output. The command line (`__main__.py`) turns these
values into text or JSON; it counts nothing itself.

Rule 2: a runtime whose record holds nothing is not a runtime here. Every
read answers for it as for a runtime never written, so it is neither counted
nor listed (`_core.without_empty_records` decides what "holds nothing"
means; this module does not restate it).

Theory of operation. `held_runtimes` is the one order the tools list
runtimes in: by runtime id, code point by code point (`agent-1`,
`agent-10`, `agent-2`), so `inspect` and `dump` agree. `count_state` sums
over those records (`export-sqlite` and `import-sqlite` report it);
`runtime_summaries` gives one `RuntimeSummary` per runtime (`inspect`).
Counting walks the runtimes, not the input states: a record's maps know
their sizes; only the per-phase tally reads each input state's seed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import final

from ._core import RuntimeRecord, StoreState, without_empty_records
from ._ids import LogicalRuntimeId
from ._types import RuntimeState

__all__ = [
    "RuntimeSummary",
    "StateCounts",
    "count_state",
    "held_runtimes",
    "runtime_summaries",
]


@final
@dataclass(frozen=True, slots=True)
class StateCounts:
    """How much a store holds. The field order is the order the command
    line reports them in (`dataclasses.asdict` keeps it)."""

    runtimes: int
    input_states: int
    receipts: int
    session_snapshots: int
    runtime_states: int
    ops_snapshots: int
    oauth_flow_snapshot: bool


@final
@dataclass(frozen=True, slots=True)
class RuntimeSummary:
    """What one runtime holds, as `inspect` shows it.

    `input_states_by_phase` maps a phase's name (`InputLifecycleState.value`)
    to the number of input states in it, phases sorted by name, those with
    none left out. `session_snapshot_bytes` is the snapshot's length, None if
    the runtime has none.
    """

    runtime_id: LogicalRuntimeId
    input_states: int
    input_states_by_phase: dict[str, int]
    receipts: int
    session_snapshot_bytes: int | None
    runtime_state: RuntimeState | None
    ops_snapshot: bool


def held_runtimes(state: StoreState) -> list[tuple[LogicalRuntimeId, RuntimeRecord]]:
    """The runtimes that hold something, with their records.

    Args:
        state: the store state.

    Returns:
        `(runtime id, record)` pairs sorted by runtime id as a string (code
        point order); runtimes whose record is empty are left out.
    """
    runtimes = without_empty_records(state).runtimes
    return [(runtime_id, runtimes[runtime_id]) for runtime_id in sorted(runtimes, key=str)]


def count_state(state: StoreState) -> StateCounts:
    """Count what `state` holds.

    Args:
        state: the store state.

    Returns:
        The number of runtimes that hold something, the input states and
        receipts over all of them, how many have a session snapshot, a
        runtime state and an ops snapshot, and whether the store has an
        OAuth flow snapshot.
    """
    records = without_empty_records(state).runtimes.values()
    return StateCounts(
        runtimes=len(records),
        input_states=sum(len(r.input_states) for r in records),
        receipts=sum(len(r.receipts) for r in records),
        session_snapshots=sum(r.session_snapshot is not None for r in records),
        runtime_states=sum(r.runtime_state is not None for r in records),
        ops_snapshots=sum(r.ops_snapshot is not None for r in records),
        oauth_flow_snapshot=state.oauth_flow_snapshot is not None,
    )


def runtime_summaries(state: StoreState) -> list[RuntimeSummary]:
    """Summarise each runtime that holds something, in `held_runtimes` order.

    Args:
        state: the store state.

    Returns:
        One `RuntimeSummary` per runtime.
    """
    return [_summary(runtime_id, record) for runtime_id, record in held_runtimes(state)]


def _summary(runtime_id: LogicalRuntimeId, record: RuntimeRecord) -> RuntimeSummary:
    phases = Counter(s.seed.phase.value for s in record.input_states.values())
    session = record.session_snapshot
    return RuntimeSummary(
        runtime_id=runtime_id,
        input_states=len(record.input_states),
        input_states_by_phase=dict(sorted(phases.items())),
        receipts=len(record.receipts),
        session_snapshot_bytes=None if session is None else len(session),
        runtime_state=record.runtime_state,
        ops_snapshot=record.ops_snapshot is not None,
    )
