"""What a store holds, counted: the figures the operator tools report.

Rule 1: pure. Every function here is a function of a `_core.ReadView` (a
`StoreState` value, or any other view: the SQLite database is one): no
file, no clock, no output. The command line (`__main__.py`) turns these
values into text or JSON; it counts nothing itself.

Rule 2: the core's reads decide. Which runtimes a store holds, and in which
order, is `_core.list_runtimes` (every runtime that holds anything, by its
id as a string); what a runtime holds is the `_core.load_*` reads. This
module restates none of their rules: a runtime that holds nothing (a purged
one, one whose last value was cleared, an empty record an older snapshot
kept) is not listed by `list_runtimes`, so it is neither counted nor shown.

Theory of operation. `count_state` sums over the listed runtimes
(`export-sqlite` and `import-sqlite` report it); `runtime_summaries` gives
one `RuntimeSummary` per listed runtime, in `list_runtimes` order
(`inspect`). Only the per-phase tally reads each input state's seed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import final

from ._core import (
    ReadView,
    list_runtimes,
    load_auth_oauth_flow_snapshot,
    load_boundary_receipts,
    load_input_states,
    load_ops_lifecycle,
    load_runtime_state,
    load_session_snapshot,
)
from ._ids import LogicalRuntimeId
from ._types import RuntimeState

__all__ = [
    "RuntimeSummary",
    "StateCounts",
    "count_state",
    "runtime_summaries",
    "summarise_runtime",
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


def count_state(view: ReadView) -> StateCounts:
    """Count what the store holds.

    Args:
        view: the store's content (a `StoreState`, or any `ReadView`).

    Returns:
        The number of runtimes `list_runtimes` lists, the input states and
        receipts over all of them, how many have a session snapshot, a
        runtime state and an ops snapshot, and whether the store has an
        OAuth flow snapshot.
    """
    summaries = runtime_summaries(view)
    return StateCounts(
        runtimes=len(summaries),
        input_states=sum(s.input_states for s in summaries),
        receipts=sum(s.receipts for s in summaries),
        session_snapshots=sum(s.session_snapshot_bytes is not None for s in summaries),
        runtime_states=sum(s.runtime_state is not None for s in summaries),
        ops_snapshots=sum(s.ops_snapshot for s in summaries),
        oauth_flow_snapshot=load_auth_oauth_flow_snapshot(view) is not None,
    )


def runtime_summaries(view: ReadView) -> list[RuntimeSummary]:
    """Summarise each runtime the store holds, in `list_runtimes` order (by
    runtime id as a string, code point by code point: `agent-1`, `agent-10`,
    `agent-2`).

    Args:
        view: the store's content.

    Returns:
        One `RuntimeSummary` per runtime.
    """
    return [summarise_runtime(view, runtime_id) for runtime_id in list_runtimes(view)]


def summarise_runtime(view: ReadView, runtime_id: LogicalRuntimeId) -> RuntimeSummary:
    """What one runtime holds, through the core's reads (all zero and None
    for a runtime the store does not hold).

    Args:
        view: the store's content.
        runtime_id: the runtime.

    Returns:
        Its `RuntimeSummary`.
    """
    states = load_input_states(view, runtime_id)
    phases = Counter(s.seed.phase.value for s in states)
    session = load_session_snapshot(view, runtime_id)
    return RuntimeSummary(
        runtime_id=runtime_id,
        input_states=len(states),
        input_states_by_phase=dict(sorted(phases.items())),
        receipts=len(load_boundary_receipts(view, runtime_id)),
        session_snapshot_bytes=None if session is None else len(session),
        runtime_state=load_runtime_state(view, runtime_id),
        ops_snapshot=load_ops_lifecycle(view, runtime_id) is not None,
    )
