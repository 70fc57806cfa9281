"""The pure core, without trio: `meerkat_actor._core`.

Commands, their effects, `plan`/`redo`/`apply`, and the read functions.
"""

from __future__ import annotations

import dataclasses
import uuid

import pytest
from _values import I1, I2, I3, OTHER, RT, RUN, SID, receipt, session, stored, stored_seed
from hypothesis import given, settings
from hypothesis import strategies as st

import meerkat_actor as ma
from meerkat_actor import RuntimeState as RS
from meerkat_actor import _core as core
from meerkat_actor.testing import _strategies as mst

CODEC = ma.MeerkatSessionCodec()


def run(state, *commands):
    """Apply commands in order; return the final state."""
    for command in commands:
        state, _ = core.apply(state, command, CODEC)
    return state


# --- the empty state and reads -------------------------------------------------------


def test_reads_of_the_empty_state():
    s = core.EMPTY
    assert core.load_input_states(s, RT) == []
    assert core.load_input_state(s, RT, I1) is None
    assert core.load_boundary_receipt(s, RT, RUN, 7) is None
    assert core.load_session_snapshot(s, RT) is None
    assert core.load_runtime_state(s, RT) is None
    assert core.load_ops_lifecycle(s, RT) is None
    assert core.load_auth_oauth_flow_snapshot(s) is None
    assert s.record(RT) == core.RuntimeRecord()


def test_state_and_records_are_immutable_values():
    with pytest.raises(dataclasses.FrozenInstanceError):
        core.EMPTY.oauth_flow_snapshot = b"x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        core.RuntimeRecord().runtime_state = RS.IDLE  # type: ignore[misc]
    assert core.StoreState() == core.EMPTY


# --- commands check their arguments -------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: core.PersistOAuthFlowSnapshot(bytearray(b"x")), TypeError, "snapshot must be"),
        (lambda: core.PersistOAuthFlowSnapshot("x"), TypeError, "snapshot must be bytes, got str"),
        (lambda: core.UpdateOAuthFlowSnapshot(b"x"), TypeError, "update must be callable"),
        (lambda: core.CommitSessionSnapshot("r", session()), TypeError, "runtime_id must be"),
        (lambda: core.CommitSessionSnapshot(RT, b"{}"), TypeError, "delta must be SessionDelta"),
        (
            lambda: core.AtomicApply(RT, b"{}", receipt(), [], None),
            TypeError,
            "delta must be SessionDelta or None, got bytes",
        ),
        (
            lambda: core.AtomicApply(RT, None, {"sequence": 1}, [], None),
            TypeError,
            "receipt must be RunBoundaryReceipt, got dict",
        ),
        (
            lambda: core.AtomicApply(RT, None, receipt(), [stored(I1), {}], None),
            TypeError,
            r"input_updates\[1\] must be StoredInputState, got dict",
        ),
        (
            lambda: core.AtomicApply(RT, None, receipt(), None, None),
            TypeError,
            "input_updates must be a sequence of StoredInputState, got NoneType",
        ),
        (
            lambda: core.AtomicApply(RT, None, receipt(), [], str(SID)),
            TypeError,
            "session_store_key must be SessionId or None, got str",
        ),
        (
            lambda: core.AtomicApply(RT, None, receipt(), [], ma.RunId(SID.value)),
            TypeError,
            "session_store_key must be SessionId or None, got RunId",
        ),
        (lambda: core.PersistInputState(RT, None), TypeError, "state must be StoredInputState"),
        (
            lambda: core.CommitMachineLifecycle(RT, RS.IDLE, []),
            TypeError,
            "commit must be MachineLifecycleCommit, got RuntimeState",
        ),
        (
            lambda: core.CommitMachineLifecycle(
                RT, ma.machine_transition(RS.IDLE, RS.RUNNING), stored(I1)
            ),
            TypeError,
            "input_states must be a sequence of StoredInputState, got StoredInputState",
        ),
        (
            lambda: core.PersistOpsLifecycle(RT, {"epoch_id": "e"}),
            TypeError,
            "snapshot must be PersistedOpsSnapshot, got dict",
        ),
    ],
)
def test_commands_refuse_bad_arguments(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_commands_are_frozen_and_sequences_become_tuples():
    cmd = core.AtomicApply(RT, None, receipt(), [stored(I1)], None)
    assert cmd.input_updates == (stored(I1),)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cmd.receipt = receipt(8)  # type: ignore[misc]
    lifecycle = core.CommitMachineLifecycle(RT, ma.machine_transition(RS.IDLE, RS.RUNNING), [])
    assert lifecycle.input_states == ()


# --- effects -------------------------------------------------------------------------------


def test_atomic_apply_effects():
    cmd = core.AtomicApply(RT, session(), receipt(), [stored(I1), stored(I2)], SID)
    effects = core.plan(core.EMPTY, cmd, CODEC)
    assert effects == (
        core.SetSessionSnapshot(RT, session().session_snapshot),
        core.InsertReceipt(RT, receipt()),
        core.PutInputStates(RT, (stored(I1), stored(I2))),
    )


def test_atomic_apply_without_delta_or_inputs_only_inserts_the_receipt():
    effects = core.plan(core.EMPTY, core.AtomicApply(RT, None, receipt(), [], None), CODEC)
    assert effects == (core.InsertReceipt(RT, receipt()),)


def test_atomic_apply_without_delta_ignores_the_session_key():
    # Nothing to validate: the key only checks a snapshot's id.
    cmd = core.AtomicApply(RT, None, receipt(), [], ma.SessionId(uuid.UUID(int=99)))
    state, effects = core.apply(core.EMPTY, cmd, CODEC)
    assert effects == (core.InsertReceipt(RT, receipt()),)
    assert core.load_session_snapshot(state, RT) is None
    assert core.load_boundary_receipt(state, RT, RUN, 7) == receipt()


def test_other_command_effects():
    commit = ma.machine_transition(RS.INITIALIZING, RS.IDLE)
    ops = ma.PersistedOpsSnapshot("epoch", {"a": 1})
    assert core.plan(core.EMPTY, core.CommitSessionSnapshot(RT, session()), CODEC) == (
        core.SetSessionSnapshot(RT, session().session_snapshot),
    )
    assert core.plan(core.EMPTY, core.PersistInputState(RT, stored(I1)), CODEC) == (
        core.PutInputStates(RT, (stored(I1),)),
    )
    assert core.plan(core.EMPTY, core.CommitMachineLifecycle(RT, commit, []), CODEC) == (
        core.SetRuntimeState(RT, RS.IDLE),
    )
    assert core.plan(core.EMPTY, core.CommitMachineLifecycle(RT, commit, [stored(I1)]), CODEC) == (
        core.SetRuntimeState(RT, RS.IDLE),
        core.PutInputStates(RT, (stored(I1),)),
    )
    assert core.plan(core.EMPTY, core.PersistOpsLifecycle(RT, ops), CODEC) == (
        core.SetOpsSnapshot(RT, ops),
    )
    assert core.plan(core.EMPTY, core.PersistOAuthFlowSnapshot(b"o"), CODEC) == (
        core.SetOAuthFlowSnapshot(b"o"),
    )


def test_oauth_update_effect_is_the_result_not_the_updater():
    seen = []

    def update(current):
        seen.append(current)
        return (current or b"") + b"+"

    state = run(core.EMPTY, core.PersistOAuthFlowSnapshot(b"a"))
    effects = core.plan(state, core.UpdateOAuthFlowSnapshot(update), CODEC)
    assert effects == (core.SetOAuthFlowSnapshot(b"a+"),)
    assert seen == [b"a"]
    # Replaying the effect does not run the updater again.
    assert core.load_auth_oauth_flow_snapshot(core.redo(state, effects)) == b"a+"
    assert seen == [b"a"]


def test_oauth_updater_sees_none_when_nothing_is_stored():
    seen = []
    state = run(core.EMPTY, core.UpdateOAuthFlowSnapshot(lambda cur: seen.append(cur) or b"1"))
    assert seen == [None]
    assert core.load_auth_oauth_flow_snapshot(state) == b"1"


def test_oauth_updater_result_is_narrowed_to_bytes():
    class Blob(bytes):
        pass

    state = run(core.EMPTY, core.UpdateOAuthFlowSnapshot(lambda cur: Blob(b"x")))
    assert type(core.load_auth_oauth_flow_snapshot(state)) is bytes


# --- errors leave the state untouched ----------------------------------------------------------


def _populated():
    return run(
        core.EMPTY,
        core.AtomicApply(RT, session(), receipt(), [stored(I1)], None),
        core.PersistOAuthFlowSnapshot(b"oauth"),
    )


def test_receipt_conflict_refuses_the_whole_command():
    before = _populated()
    other_sid = ma.SessionId(uuid.UUID(int=5))
    cmd = core.AtomicApply(RT, session(other_sid), receipt(), [stored(I2)], other_sid)
    with pytest.raises(ma.ReceiptConflict, match=f"runtime runtime-a: a receipt for run {RUN}"):
        core.apply(before, cmd, CODEC)
    assert issubclass(ma.ReceiptConflict, ma.WriteFailed)
    # Same receipt key under another runtime is fine.
    after, _ = core.apply(before, dataclasses.replace(cmd, runtime_id=OTHER), CODEC)
    assert core.load_boundary_receipt(after, OTHER, RUN, 7) == receipt()
    assert core.load_session_snapshot(before, RT) == session().session_snapshot
    assert core.load_input_state(before, RT, I2) is None


def test_session_key_mismatch():
    state = _populated()
    key = ma.SessionId(uuid.UUID(int=77))
    cmd = core.AtomicApply(RT, session(), receipt(8), [stored(I2)], key)
    with pytest.raises(ma.SessionKeyMismatch) as info:
        core.plan(state, cmd, CODEC)
    assert info.value.expected == key
    assert info.value.actual == SID
    assert str(info.value) == (
        f"session store key mismatch for runtime 'runtime-a': expected {key}, actual {SID}"
    )


@pytest.mark.parametrize(
    ("snapshot", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"name": "x"}', 'no string "id"'),
        (b'{"id": "nope"}', "not a UUID"),
    ],
)
def test_unreadable_snapshot_is_write_failed(snapshot, reason):
    state = _populated()
    for cmd in (
        core.CommitSessionSnapshot(RT, ma.SessionDelta(snapshot)),
        core.AtomicApply(RT, ma.SessionDelta(snapshot), receipt(8), [stored(I2)], None),
    ):
        with pytest.raises(ma.WriteFailed, match=f"runtime runtime-a: session snapshot .*{reason}"):
            core.apply(state, cmd, CODEC)
    assert core.load_session_snapshot(state, RT) == session().session_snapshot


def test_codec_errors_are_chained():
    with pytest.raises(ma.WriteFailed) as info:
        core.plan(core.EMPTY, core.CommitSessionSnapshot(RT, ma.SessionDelta(b"{")), CODEC)
    assert isinstance(info.value.__cause__, ValueError)


def test_codec_returning_a_non_session_id_is_write_failed():
    class Bad:
        def session_id(self, snapshot):
            return str(SID)

    with pytest.raises(ma.WriteFailed, match="returned str, not SessionId"):
        core.plan(core.EMPTY, core.CommitSessionSnapshot(RT, session()), Bad())


def test_oauth_updater_errors_are_carried_as_caller_code_errors():
    state = _populated()
    boom = KeyError("boom")

    def raising(cur):
        raise boom

    with pytest.raises(core.CallerCodeError) as info:
        core.apply(state, core.UpdateOAuthFlowSnapshot(raising), CODEC)
    assert info.value.error is boom
    with pytest.raises(core.CallerCodeError) as info:
        core.apply(state, core.UpdateOAuthFlowSnapshot(lambda cur: "text"), CODEC)
    assert isinstance(info.value.error, TypeError)
    assert "the updater must return bytes, got str" in str(info.value.error)
    assert core.load_auth_oauth_flow_snapshot(state) == b"oauth"


def test_a_failed_apply_returns_nothing_and_the_input_state_value_is_unchanged():
    state = _populated()
    snapshot = (state.runtimes, state.oauth_flow_snapshot)
    with pytest.raises(ma.ReceiptConflict):
        core.apply(state, core.AtomicApply(RT, None, receipt(), [stored(I3)], None), CODEC)
    assert (state.runtimes, state.oauth_flow_snapshot) == snapshot
    assert state == _populated()


# --- semantics of applied commands -------------------------------------------------------


def test_apply_is_redo_of_plan_and_leaves_the_old_state_alone():
    old = _populated()
    cmd = core.AtomicApply(RT, session(SID, v=2), receipt(8), [stored(I2)], SID)
    new, effects = core.apply(old, cmd, CODEC)
    assert effects == core.plan(old, cmd, CODEC)
    assert new == core.redo(old, effects)
    assert core.load_input_states(old, RT) == [stored(I1)]
    assert core.load_input_states(new, RT) == [stored(I1), stored(I2)]


def test_atomic_apply_round_trip():
    state = run(core.EMPTY, core.AtomicApply(RT, session(), receipt(), [stored(I1)], SID))
    assert core.load_session_snapshot(state, RT) == session().session_snapshot
    assert core.load_boundary_receipt(state, RT, RUN, 7) == receipt()
    assert core.load_boundary_receipt(state, RT, RUN, 8) is None
    assert core.load_input_state(state, RT, I1) == stored(I1)
    # The key validated; it did not create an alias runtime named after the session.
    assert list(state.runtimes) == [RT]


def test_later_entries_in_one_command_win():
    queued = stored(I1, ma.InputLifecycleState.QUEUED)
    staged = stored(I1, ma.InputLifecycleState.STAGED)
    state = run(
        core.EMPTY, core.AtomicApply(RT, None, receipt(), [queued, stored(I2), staged], None)
    )
    assert core.load_input_states(state, RT) == [staged, stored(I2)]
    commit = ma.machine_transition(RS.IDLE, RS.RUNNING)
    state = run(state, core.CommitMachineLifecycle(RT, commit, [queued, queued, stored(I1)]))
    assert core.load_input_state(state, RT, I1) == stored(I1)


def test_runtimes_are_isolated():
    state = run(
        core.EMPTY,
        core.AtomicApply(RT, session(), receipt(), [stored(I1)], None),
        core.CommitMachineLifecycle(RT, ma.machine_transition(RS.INITIALIZING, RS.IDLE), []),
        core.PersistOpsLifecycle(RT, ma.PersistedOpsSnapshot("e")),
    )
    assert core.load_input_states(state, OTHER) == []
    assert core.load_input_state(state, OTHER, I1) is None
    assert core.load_boundary_receipt(state, OTHER, RUN, 7) is None
    assert core.load_session_snapshot(state, OTHER) is None
    assert core.load_runtime_state(state, OTHER) is None
    assert core.load_ops_lifecycle(state, OTHER) is None
    assert OTHER not in state.runtimes


def test_oauth_snapshot_is_store_wide():
    state = run(core.EMPTY, core.PersistOAuthFlowSnapshot(b"x"))
    assert state.runtimes == core.EMPTY.runtimes
    assert core.load_auth_oauth_flow_snapshot(state) == b"x"


def test_session_snapshot_and_ops_snapshot_are_replaced():
    second = session(SID, turn=2)
    state = run(
        core.EMPTY,
        core.CommitSessionSnapshot(RT, session()),
        core.CommitSessionSnapshot(RT, second),
        core.PersistOpsLifecycle(RT, ma.PersistedOpsSnapshot("e1")),
        core.PersistOpsLifecycle(RT, ma.PersistedOpsSnapshot("e2")),
    )
    assert core.load_session_snapshot(state, RT) == second.session_snapshot
    assert core.load_ops_lifecycle(state, RT) == ma.PersistedOpsSnapshot("e2")
    assert core.load_boundary_receipt(state, RT, RUN, 7) is None
    assert state.record(RT).receipts == core.RuntimeRecord().receipts


def test_receipts_with_large_sequences_are_distinct():
    sequences = [2**63 - 1, 2**63, 2**64 - 1]
    state = run(core.EMPTY, *(core.AtomicApply(RT, None, receipt(s), [], None) for s in sequences))
    for s in sequences:
        assert core.load_boundary_receipt(state, RT, RUN, s) == receipt(s)


def test_runtime_state_is_set_by_lifecycle_commits():
    state = run(
        core.EMPTY,
        core.CommitMachineLifecycle(RT, ma.machine_transition(RS.INITIALIZING, RS.IDLE), []),
        core.CommitMachineLifecycle(RT, ma.machine_transition(RS.IDLE, RS.RUNNING), [stored(I1)]),
    )
    assert core.load_runtime_state(state, RT) is RS.RUNNING
    assert core.load_input_states(state, RT) == [stored(I1)]


def test_input_states_load_sorted_by_uuid():
    ids = [ma.InputId(uuid.UUID(int=n)) for n in (2**127, 3, 2**128 - 1, 0, 2**64)]
    state = run(core.EMPTY, *(core.PersistInputState(RT, stored(i)) for i in ids))
    assert [s.input_id for s in core.load_input_states(state, RT)] == sorted(ids)


_POOL = [ma.InputId(uuid.UUID(int=n)) for n in (0, 1, 2**63, 2**64, 2**127, 2**128 - 1)]


@settings(max_examples=40)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(_POOL), mst.input_ids()),
            st.sampled_from(ma.InputLifecycleState),
        ),
        max_size=12,
    )
)
def test_input_states_upsert_and_sort_property(entries):
    # Persisting one by one or in one lifecycle commit gives the same result:
    # the last entry per id, sorted by UUID.
    states = [stored(input_id, phase) for input_id, phase in entries]
    expected = {s.input_id: s for s in states}
    one_by_one = run(core.EMPTY, *(core.PersistInputState(RT, s) for s in states))
    commit = ma.machine_transition(RS.INITIALIZING, RS.IDLE)
    together = run(core.EMPTY, core.CommitMachineLifecycle(RT, commit, states))
    want = [expected[k] for k in sorted(expected, key=lambda i: i.value.int)]
    assert core.load_input_states(one_by_one, RT) == want
    assert core.load_input_states(together, RT) == want


@settings(max_examples=25)
@given(mst.receipts(), st.lists(mst.stored_input_states(), max_size=2))
def test_atomic_apply_property(rcpt, states):
    state, effects = core.apply(core.EMPTY, core.AtomicApply(RT, None, rcpt, states, None), CODEC)
    assert core.redo(core.EMPTY, effects) == state
    assert core.load_boundary_receipt(state, RT, rcpt.run_id, rcpt.sequence) == rcpt
    with pytest.raises(ma.ReceiptConflict):
        core.apply(state, core.AtomicApply(RT, None, rcpt, [], None), CODEC)


# --- ReadView and queries: plan and the reads see the state only through the view ------------


class RecordingView:
    """A `ReadView` that is not a `StoreState`: it answers from a state and
    records each lookup, so a test sees exactly what plan and the reads ask."""

    def __init__(self, state: core.StoreState) -> None:
        self.state = state
        self.asked: list[str] = []

    def __getattr__(self, name: str):
        lookup = getattr(self.state, name)

        def recorded(*args):
            self.asked.append(name)
            return lookup(*args)

        return recorded


def test_plan_decides_from_any_read_view():
    state = run(core.EMPTY, core.AtomicApply(RT, None, receipt(), [], None))
    view = RecordingView(state)
    with pytest.raises(ma.ReceiptConflict, match="sequence 7 exists already"):
        core.plan(view, core.AtomicApply(RT, None, receipt(), [], None), CODEC)
    assert view.asked == ["boundary_receipt"]
    view.asked.clear()
    effects = core.plan(view, core.AtomicApply(RT, None, receipt(8), [], None), CODEC)
    assert effects == (core.InsertReceipt(RT, receipt(8)),)
    assert view.asked == ["boundary_receipt"]


def test_oauth_update_reads_the_current_value_through_the_view():
    state = run(core.EMPTY, core.PersistOAuthFlowSnapshot(b"1"))
    view = RecordingView(state)
    seen: list[bytes | None] = []

    def update(current):
        seen.append(current)
        return b"2"

    effects = core.plan(view, core.UpdateOAuthFlowSnapshot(update), CODEC)
    assert seen == [b"1"]
    assert effects == (core.SetOAuthFlowSnapshot(b"2"),)
    assert view.asked == ["auth_oauth_flow_snapshot"]


def test_blind_writes_read_nothing():
    view = RecordingView(core.EMPTY)
    core.plan(view, core.PersistInputState(RT, stored(I1)), CODEC)
    commit = ma.machine_transition(ma.RuntimeState.INITIALIZING, ma.RuntimeState.IDLE)
    core.plan(view, core.CommitMachineLifecycle(RT, commit, []), CODEC)
    core.plan(view, core.PersistOAuthFlowSnapshot(b"x"), CODEC)
    assert view.asked == []


def test_queries_answer_from_any_view_and_sort_input_states():
    ids = [ma.InputId(uuid.UUID(int=n)) for n in (3, 1, 2)]
    state = run(core.EMPTY, *(core.PersistInputState(RT, stored(i)) for i in ids))
    view = RecordingView(state)
    listed = core.LoadInputStates(RT).answer(view)
    assert [s.input_id for s in listed] == sorted(ids, key=lambda i: i.value.int)
    assert core.LoadInputState(RT, ids[0]).answer(view) == stored(ids[0])
    assert core.LoadBoundaryReceipt(RT, RUN, 7).answer(view) is None
    assert core.LoadSessionSnapshot(RT).answer(view) is None
    assert core.LoadRuntimeState(RT).answer(view) is None
    assert core.LoadOpsLifecycle(RT).answer(view) is None
    assert core.LoadAuthOAuthFlowSnapshot().answer(view) is None
    assert view.asked == [
        "input_states",
        "input_state",
        "boundary_receipt",
        "session_snapshot",
        "runtime_state",
        "ops_lifecycle",
        "auth_oauth_flow_snapshot",
    ]


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: core.LoadInputStates("r"), TypeError, "runtime_id must be LogicalRuntimeId"),
        (lambda: core.LoadInputState(RT, str(I1)), TypeError, "input_id must be InputId, got str"),
        (lambda: core.LoadBoundaryReceipt(RT, str(RUN), 1), TypeError, "run_id must be RunId"),
        (lambda: core.LoadBoundaryReceipt(RT, RUN, -1), ValueError, r"sequence must be in \[0"),
        (lambda: core.LoadBoundaryReceipt(RT, RUN, 2**64), ValueError, "sequence must be in"),
        (lambda: core.LoadBoundaryReceipt(RT, RUN, True), TypeError, "sequence must be int"),
        (lambda: core.LoadSessionSnapshot(None), TypeError, "runtime_id must be"),
        (lambda: core.LoadRuntimeState(b"r"), TypeError, "runtime_id must be"),
        (lambda: core.LoadOpsLifecycle(1), TypeError, "runtime_id must be"),
    ],
)
def test_queries_refuse_bad_arguments(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_every_command_and_query_names_its_public_method():
    for cls in [*core.Command.__args__, *core.Query.__subclasses__()]:
        assert hasattr(ma.RuntimeStore, cls.operation), cls


def test_a_query_without_an_answer_cannot_be_built():
    class Unanswered(core.Query[None]):
        operation = "load_nothing"

    with pytest.raises(TypeError, match="abstract"):
        Unanswered()


# --- discovery and retention (SPEC §3b) ---------------------------------------------------

IS = ma.InputLifecycleState
DESTROY = ma.machine_transition(RS.IDLE, RS.DESTROYED)
TO_IDLE = ma.machine_transition(RS.INITIALIZING, RS.IDLE)


def terminal(input_id, payload="payload", **fields):
    """`input_id` consumed, with a terminal outcome and a payload."""
    base = stored(input_id, persisted_input={"text": payload}, **fields)
    seed = dataclasses.replace(
        base.seed, phase=IS.CONSUMED, terminal_outcome=ma.InputTerminalOutcome.consumed()
    )
    return dataclasses.replace(base, seed=seed)


def test_list_runtimes_names_every_runtime_that_holds_anything_sorted_by_string():
    names = ["b", "B", "a10", "a9", "é", "a"]
    state = core.EMPTY
    ops = ma.PersistedOpsSnapshot("e")
    holders = [
        core.CommitSessionSnapshot(ma.LogicalRuntimeId(names[0]), session()),
        core.PersistInputState(ma.LogicalRuntimeId(names[1]), stored(I1)),
        core.AtomicApply(ma.LogicalRuntimeId(names[2]), None, receipt(), [], None),
        core.CommitMachineLifecycle(ma.LogicalRuntimeId(names[3]), TO_IDLE, []),
        core.PersistOpsLifecycle(ma.LogicalRuntimeId(names[4]), ops),
        core.PersistInputState(ma.LogicalRuntimeId(names[5]), stored(I1)),
    ]
    state = run(state, *holders, core.PersistOAuthFlowSnapshot(b"x"))
    assert [str(r) for r in core.list_runtimes(state)] == sorted(names)
    assert core.ListRuntimes().answer(state) == core.list_runtimes(state)


def test_a_runtime_whose_last_value_is_removed_leaves_the_state():
    state = run(core.EMPTY, core.CommitSessionSnapshot(RT, session()))
    state = run(state, core.PersistOpsLifecycle(RT, ma.PersistedOpsSnapshot("e")))
    state = run(state, core.ClearSessionSnapshot(RT))
    assert core.list_runtimes(state) == [RT]
    state = run(state, core.DeleteOpsLifecycle(RT))
    assert core.list_runtimes(state) == []
    assert RT not in state.runtimes  # memory shrinks with it
    assert state == core.EMPTY


def test_clear_and_delete_of_absent_values_have_no_effects():
    state = run(core.EMPTY, core.PersistInputState(RT, stored(I1)))
    assert core.plan(state, core.ClearSessionSnapshot(RT), CODEC) == ()
    assert core.plan(state, core.DeleteOpsLifecycle(RT), CODEC) == ()
    assert core.plan(state, core.ClearSessionSnapshot(OTHER), CODEC) == ()


def test_load_boundary_receipts_sorts_by_uuid_then_number():
    low = ma.RunId(uuid.UUID(int=1))
    high = ma.RunId(uuid.UUID("f" * 32))
    keys = [(high, 0), (low, 2**64 - 1), (low, 2**63), (low, 0), (high, 2**63 - 1)]
    state = run(
        core.EMPTY,
        *(core.AtomicApply(RT, None, receipt(run_id=r, sequence=q), [], None) for r, q in keys),
    )
    got = [(r.run_id, r.sequence) for r in core.load_boundary_receipts(state, RT)]
    assert got == [(low, 0), (low, 2**63), (low, 2**64 - 1), (high, 0), (high, 2**63 - 1)]
    assert core.load_boundary_receipts(state, OTHER) == []


def test_retire_drops_only_the_payload():
    before = terminal(I1, "big")
    state = run(core.EMPTY, core.PersistInputState(RT, before))
    state, effects = core.apply(state, core.RetireInputPayloads(RT, [I1]), CODEC)
    after = core.load_input_state(state, RT, I1)
    assert after.state.persisted_input is None
    assert dataclasses.replace(after.state, persisted_input=before.state.persisted_input) == (
        before.state
    )
    assert after.seed == before.seed
    # retiring again, naming an id twice, or nothing: no effects
    assert core.plan(state, core.RetireInputPayloads(RT, [I1, I1]), CODEC) == ()
    assert core.plan(state, core.RetireInputPayloads(RT, []), CODEC) == ()
    assert len(effects) == 1


@pytest.mark.parametrize("bad_first", [True, False])
def test_a_refused_retire_retires_nothing_and_the_first_bad_id_decides(bad_first):
    state = run(
        core.EMPTY,
        core.PersistInputState(RT, terminal(I1)),
        core.PersistInputState(RT, stored(I2, IS.QUEUED)),
    )
    ids = [I2, I1, I3] if bad_first else [I1, I3, I2]
    with pytest.raises(ma.NotRetirable if bad_first else ma.NotFound) as caught:
        core.apply(state, core.RetireInputPayloads(RT, ids), CODEC)
    if bad_first:
        assert caught.value.input_id == I2
        assert caught.value.phase is IS.QUEUED
        assert caught.value.runtime_id == str(RT)
        assert "queued" in str(caught.value)
    else:
        assert str(I3) in str(caught.value)
    assert isinstance(caught.value, (ma.WriteFailed, ma.NotFound))


def test_retire_refuses_a_terminal_phase_without_an_outcome():
    # No caller can build it, but a store may hold one (docs/semantics.md).
    no_outcome = dataclasses.replace(
        stored(I1, IS.ABANDONED, persisted_input={"x": 1}), seed=stored_seed(IS.ABANDONED)
    )
    state = run(core.EMPTY, core.PersistInputState(RT, no_outcome))
    with pytest.raises(ma.NotRetirable, match="abandoned"):
        core.plan(state, core.RetireInputPayloads(RT, [I1]), CODEC)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: core.RetireInputPayloads(RT, I1), "input_ids"),
        (lambda: core.RetireInputPayloads(RT, str(I1)), "input_ids"),
        (lambda: core.RetireInputPayloads(RT, [I1, str(I2)]), r"input_ids\[1\]"),
        (lambda: core.RetireInputPayloads("r", [I1]), "runtime_id"),
        (lambda: core.PurgeRuntime("r"), "runtime_id"),
        (lambda: core.ClearSessionSnapshot(None), "runtime_id"),
        (lambda: core.DeleteOpsLifecycle(b"r"), "runtime_id"),
        (lambda: core.LoadBoundaryReceipts("r"), "runtime_id"),
        (lambda: core.CommitMachineLifecycle(RT, TO_IDLE, [], expected="idle"), "expected"),
    ],
)
def test_the_new_commands_check_their_arguments(build, message):
    with pytest.raises(TypeError, match=message):
        build()


def test_purge_needs_a_destroyed_runtime_and_removes_all_of_it():
    state = run(
        core.EMPTY,
        core.AtomicApply(RT, session(), receipt(), [terminal(I1)], SID),
        core.PersistOpsLifecycle(RT, ma.PersistedOpsSnapshot("e")),
        core.PersistInputState(OTHER, stored(I1)),
        core.PersistOAuthFlowSnapshot(b"oauth"),
    )
    with pytest.raises(ma.RuntimeNotDestroyed) as caught:
        core.plan(state, core.PurgeRuntime(RT), CODEC)
    assert caught.value.actual is None
    state = run(state, core.CommitMachineLifecycle(RT, TO_IDLE, []))
    with pytest.raises(ma.RuntimeNotDestroyed, match="idle"):
        core.plan(state, core.PurgeRuntime(RT), CODEC)
    state = run(state, core.CommitMachineLifecycle(RT, DESTROY, []), core.PurgeRuntime(RT))
    assert RT not in state.runtimes
    assert core.list_runtimes(state) == [OTHER]
    assert core.load_boundary_receipt(state, RT, RUN, 7) is None
    assert state.oauth_flow_snapshot == b"oauth"
    # written again from nothing: the receipt key is free
    state = run(state, core.AtomicApply(RT, None, receipt(), [], None))
    assert core.load_boundary_receipts(state, RT) == [receipt()]


def test_compare_and_set_of_the_runtime_state():
    state = run(core.EMPTY)
    with pytest.raises(ma.LifecycleConflict) as caught:
        core.plan(state, core.CommitMachineLifecycle(RT, TO_IDLE, [], RS.IDLE), CODEC)
    assert (caught.value.expected, caught.value.actual) == (RS.IDLE, None)
    state = run(state, core.CommitMachineLifecycle(RT, TO_IDLE, [stored(I1)], None))
    assert core.load_runtime_state(state, RT) is RS.IDLE
    with pytest.raises(ma.LifecycleConflict) as caught:
        core.plan(state, core.CommitMachineLifecycle(RT, DESTROY, [stored(I2)], None), CODEC)
    assert (caught.value.expected, caught.value.actual) == (None, RS.IDLE)
    assert caught.value.runtime_id == str(RT)
    # another runtime's state decides nothing here
    other = run(state, core.CommitMachineLifecycle(OTHER, DESTROY, []))
    with pytest.raises(ma.LifecycleConflict):
        core.plan(other, core.CommitMachineLifecycle(RT, DESTROY, [], RS.DESTROYED), CODEC)
    state = run(state, core.CommitMachineLifecycle(RT, DESTROY, [], RS.IDLE))
    assert core.load_runtime_state(state, RT) is RS.DESTROYED
    assert core.load_input_state(state, RT, I2) is None
    # UNCHECKED (the default) compares nothing
    assert core.CommitMachineLifecycle(RT, TO_IDLE, []).expected is ma.UNCHECKED
    assert core.plan(state, core.CommitMachineLifecycle(RT, TO_IDLE, []), CODEC)


@settings(max_examples=50)
@given(st.lists(mst.stored_input_states(), max_size=6), st.data())
def test_retire_then_redo_equals_the_state_with_payloads_dropped(states, data):
    state = run(core.EMPTY, *(core.PersistInputState(RT, s) for s in states))
    held = core.load_input_states(state, RT)
    ids = data.draw(st.lists(st.sampled_from([s.state.input_id for s in held]))) if held else []
    command = core.RetireInputPayloads(RT, ids)
    chosen = [core.load_input_state(state, RT, i) for i in ids]
    if all(s.seed.phase.is_terminal and s.seed.terminal_outcome for s in chosen):
        after, _ = core.apply(state, command, CODEC)
        for s in held:
            got = core.load_input_state(after, RT, s.state.input_id)
            if s.state.input_id in ids:
                assert got.state.persisted_input is None
                assert dataclasses.replace(got.state, persisted_input=None) == dataclasses.replace(
                    s.state, persisted_input=None
                )
            else:
                assert got == s
    else:
        with pytest.raises((ma.NotRetirable, ma.NotFound)):
            core.apply(state, command, CODEC)
