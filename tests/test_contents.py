"""What a state holds, counted: `meerkat_actor._contents`, without trio.

States are built with `_core.redo` (effects need no session codec); the
expected figures are written out by hand from what each test put in.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from _values import OUTCOME_OF

import meerkat_actor as ma
from meerkat_actor import _core as core
from meerkat_actor._contents import (
    RuntimeSummary,
    StateCounts,
    count_state,
    runtime_summaries,
    summarise_runtime,
)

PHASE = ma.InputLifecycleState
A1 = ma.LogicalRuntimeId("agent-1")
A10 = ma.LogicalRuntimeId("agent-10")
A2 = ma.LogicalRuntimeId("agent-2")
IDLE = ma.LogicalRuntimeId("agent-0-idle")  # an empty record
RUN = ma.RunId(uuid.UUID(int=0x10))
T0 = datetime(2024, 1, 1, tzinfo=UTC)
OPS = ma.PersistedOpsSnapshot("epoch-1", cursors={"agent_applied_cursor": 0})


def stored(n: int, phase: ma.InputLifecycleState = PHASE.ACCEPTED) -> ma.StoredInputState:
    base = ma.StoredInputState.new_accepted(ma.InputId(uuid.UUID(int=n)), now=T0)
    return dataclasses.replace(
        base, seed=ma.InputStateSeed(phase, terminal_outcome=OUTCOME_OF.get(phase))
    )


def receipt(sequence: int) -> ma.RunBoundaryReceipt:
    return ma.RunBoundaryReceipt(RUN, ma.RunApplyBoundary.IMMEDIATE, (), None, 1, sequence)


def with_empty_record(state: core.StoreState, runtime_id: ma.LogicalRuntimeId) -> core.StoreState:
    """`state` plus a record that holds nothing (as a runtime whose last
    value was removed, or a backend that lists every runtime, would leave)."""
    return core.StoreState(
        state.runtimes.set(runtime_id, core.RuntimeRecord()), state.oauth_flow_snapshot
    )


STATE = core.redo(
    core.EMPTY,
    (
        core.PutInputStates(
            A1, (stored(3, PHASE.QUEUED), stored(1, PHASE.CONSUMED), stored(2, PHASE.CONSUMED))
        ),
        core.InsertReceipt(A1, receipt(0)),
        core.InsertReceipt(A1, receipt(2**64 - 1)),
        core.SetSessionSnapshot(A1, b'{"id": "s"}'),
        core.SetRuntimeState(A1, ma.RuntimeState.IDLE),
        core.SetOpsSnapshot(A1, OPS),
        core.SetRuntimeState(A10, ma.RuntimeState.RUNNING),
        core.SetSessionSnapshot(A2, b"\xff" * 300),
        core.SetOpsSnapshot(A2, OPS),
        core.SetOAuthFlowSnapshot(b"verifier"),
    ),
)


def test_an_empty_state_counts_nothing():
    assert count_state(core.EMPTY) == StateCounts(0, 0, 0, 0, 0, 0, False)
    assert runtime_summaries(core.EMPTY) == []


def test_records_that_hold_nothing_are_not_runtimes():
    state = with_empty_record(with_empty_record(core.EMPTY, A1), A2)
    assert count_state(state) == StateCounts(0, 0, 0, 0, 0, 0, False)
    assert runtime_summaries(state) == []
    # Beside runtimes that hold something, too.
    assert count_state(with_empty_record(STATE, IDLE)) == count_state(STATE)
    assert runtime_summaries(with_empty_record(STATE, IDLE)) == runtime_summaries(STATE)


def test_count_state_sums_over_every_runtime():
    assert count_state(STATE) == StateCounts(
        runtimes=3,
        input_states=3,
        receipts=2,
        session_snapshots=2,
        runtime_states=2,
        ops_snapshots=2,
        oauth_flow_snapshot=True,
    )


def test_the_oauth_flow_snapshot_alone_is_no_runtime():
    state = core.redo(core.EMPTY, (core.SetOAuthFlowSnapshot(b"x"),))
    assert count_state(state) == StateCounts(0, 0, 0, 0, 0, 0, True)


def test_counts_keep_the_order_the_command_line_reports():
    assert list(dataclasses.asdict(count_state(STATE))) == [
        "runtimes",
        "input_states",
        "receipts",
        "session_snapshots",
        "runtime_states",
        "ops_snapshots",
        "oauth_flow_snapshot",
    ]


def test_runtimes_in_code_point_order_of_their_ids():
    state = with_empty_record(STATE, IDLE)
    assert [s.runtime_id for s in runtime_summaries(state)] == [A1, A10, A2]
    assert [s.runtime_id for s in runtime_summaries(state)] == core.list_runtimes(state)


def test_runtime_summaries():
    assert runtime_summaries(STATE) == [
        RuntimeSummary(
            runtime_id=A1,
            input_states=3,
            input_states_by_phase={"consumed": 2, "queued": 1},
            receipts=2,
            session_snapshot_bytes=len(b'{"id": "s"}'),
            runtime_state=ma.RuntimeState.IDLE,
            ops_snapshot=True,
        ),
        RuntimeSummary(A10, 0, {}, 0, None, ma.RuntimeState.RUNNING, False),
        RuntimeSummary(A2, 0, {}, 0, 300, None, True),
    ]


def test_phases_are_sorted_by_name_whatever_the_write_order():
    phases = [PHASE.STAGED, PHASE.ABANDONED, PHASE.APPLIED_PENDING_CONSUMPTION, PHASE.STAGED]
    state = core.redo(
        core.EMPTY,
        (core.PutInputStates(A1, tuple(stored(n, p) for n, p in enumerate(phases))),),
    )
    (summary,) = runtime_summaries(state)
    assert list(summary.input_states_by_phase.items()) == [
        ("abandoned", 1),
        ("applied_pending_consumption", 1),
        ("staged", 2),
    ]


def test_an_input_state_written_twice_counts_once():
    state = core.redo(
        core.EMPTY,
        (
            core.PutInputStates(A1, (stored(1),)),
            core.PutInputStates(A1, (stored(1, PHASE.CONSUMED),)),
        ),
    )
    assert count_state(state).input_states == 1
    assert runtime_summaries(state)[0].input_states_by_phase == {"consumed": 1}


def test_a_removed_value_leaves_no_trace_in_the_counts():
    # A runtime whose only value was cleared, and one purged: as never written.
    state = core.redo(
        STATE,
        (
            core.SetSessionSnapshot(ma.LogicalRuntimeId("cleared"), b"{}"),
            core.RemoveSessionSnapshot(ma.LogicalRuntimeId("cleared")),
            core.RemoveRuntime(A10),
        ),
    )
    assert [s.runtime_id for s in runtime_summaries(state)] == [A1, A2]
    assert count_state(state) == dataclasses.replace(
        count_state(STATE), runtimes=2, runtime_states=1
    )


def test_receipts_are_counted_with_the_cores_read():
    assert runtime_summaries(STATE)[0].receipts == len(core.load_boundary_receipts(STATE, A1))


def test_summarise_a_runtime_the_store_does_not_hold():
    assert summarise_runtime(STATE, IDLE) == RuntimeSummary(IDLE, 0, {}, 0, None, None, False)


class _ListingView:
    """A `ReadView` that is not a `StoreState`: the counts come from the
    view's lookups and the core's reads, whatever the view is."""

    def __init__(self, state: core.StoreState) -> None:
        self._state = state

    def __getattr__(self, name: str) -> object:
        return getattr(self._state, name)

    def runtime_ids(self) -> list[ma.LogicalRuntimeId]:
        return list(reversed(list(self._state.runtime_ids())))


def test_any_read_view_is_counted_alike():
    view: Any = _ListingView(with_empty_record(STATE, IDLE))
    assert runtime_summaries(view) == runtime_summaries(STATE)
    assert count_state(view) == count_state(STATE)
