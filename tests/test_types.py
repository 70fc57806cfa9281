"""The data model (SPEC §2): `meerkat_actor._types`."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from zoneinfo import ZoneInfo

import _values
import pytest
from _values import I1, I2, RUN, receipt
from hypothesis import given, settings
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import meerkat_actor as ma
from meerkat_actor import RuntimeState as RS
from meerkat_actor.testing import _strategies as mst

# Microseconds and seconds in it: a conversion that drops either shows.
T0 = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
input_state = partial(_values.input_state, created_at=T0, updated_at=T0)


# --- enums --------------------------------------------------------------------


def test_enum_wire_values():
    assert [b.value for b in ma.RunApplyBoundary] == ["immediate", "run_start", "run_checkpoint"]
    assert [s.value for s in RS] == [
        "initializing",
        "idle",
        "attached",
        "running",
        "retired",
        "stopped",
        "destroyed",
    ]
    assert [s.value for s in ma.InputLifecycleState] == [
        "accepted",
        "queued",
        "staged",
        "applied",
        "applied_pending_consumption",
        "consumed",
        "superseded",
        "coalesced",
        "abandoned",
    ]
    assert [d.value for d in ma.InputDurability] == ["durable", "ephemeral", "derived"]
    assert ma.RuntimeState("idle") is RS.IDLE


def test_terminal_input_phases_are_the_last_four():
    terminal = {s for s in ma.InputLifecycleState if s.is_terminal}
    assert terminal == {
        ma.InputLifecycleState.CONSUMED,
        ma.InputLifecycleState.SUPERSEDED,
        ma.InputLifecycleState.COALESCED,
        ma.InputLifecycleState.ABANDONED,
    }


# --- lifecycle transitions ------------------------------------------------------

# SPEC §2, written out independently of the package's table.
SPEC_TRANSITIONS = {
    RS.INITIALIZING: {RS.IDLE, RS.STOPPED, RS.DESTROYED},
    RS.IDLE: {RS.ATTACHED, RS.RUNNING, RS.RETIRED, RS.STOPPED, RS.DESTROYED},
    RS.ATTACHED: {RS.RUNNING, RS.IDLE, RS.RETIRED, RS.STOPPED, RS.DESTROYED},
    RS.RUNNING: {RS.IDLE, RS.ATTACHED, RS.RETIRED, RS.STOPPED, RS.DESTROYED},
    RS.RETIRED: {RS.RUNNING, RS.STOPPED, RS.DESTROYED},
    RS.STOPPED: {RS.DESTROYED},
    RS.DESTROYED: set(),
}
ALL_PAIRS = [(a, b) for a in RS for b in RS]


def test_transition_table_matches_spec():
    assert {k: set(v) for k, v in ma.LIFECYCLE_TRANSITIONS.items()} == SPEC_TRANSITIONS


@pytest.mark.parametrize(("from_state", "to_state"), ALL_PAIRS)
def test_machine_transition_follows_the_table(from_state, to_state):
    if to_state in SPEC_TRANSITIONS[from_state]:
        commit = ma.machine_transition(from_state, to_state)
        assert isinstance(commit, ma.MachineLifecycleCommit)
        assert commit.runtime_state is to_state
    else:
        with pytest.raises(
            ma.InvalidTransition,
            match=f"no lifecycle transition {from_state.value} -> {to_state.value}",
        ):
            ma.machine_transition(from_state, to_state)


def test_invalid_transition_is_a_value_error_listing_the_allowed_targets():
    assert issubclass(ma.InvalidTransition, ValueError)
    with pytest.raises(ValueError, match=r"stopped -> idle \(from stopped: destroyed\)"):
        ma.machine_transition(RS.STOPPED, RS.IDLE)
    with pytest.raises(ValueError, match=r"\(from destroyed: none\)"):
        ma.machine_transition(RS.DESTROYED, RS.DESTROYED)


def test_machine_transition_refuses_non_states():
    with pytest.raises(TypeError, match="from_state must be RuntimeState, got str"):
        ma.machine_transition("idle", RS.RUNNING)
    with pytest.raises(TypeError, match="to_state must be RuntimeState, got NoneType"):
        ma.machine_transition(RS.IDLE, None)


def test_lifecycle_commit_has_no_public_constructor():
    with pytest.raises(TypeError, match=r"no public constructor; use machine_transition"):
        ma.MachineLifecycleCommit(RS.IDLE)
    with pytest.raises(TypeError, match="no public constructor"):
        ma.MachineLifecycleCommit()


def test_lifecycle_commit_value_semantics():
    a = ma.machine_transition(RS.IDLE, RS.RUNNING)
    b = ma.machine_transition(RS.ATTACHED, RS.RUNNING)
    c = ma.machine_transition(RS.RUNNING, RS.IDLE)
    assert a == b
    assert hash(a) == hash(b)
    assert a != c
    assert a != RS.RUNNING
    assert "running" in repr(a)


def test_lifecycle_commit_is_immutable():
    commit = ma.machine_transition(RS.IDLE, RS.RUNNING)
    with pytest.raises(AttributeError):
        commit._runtime_state = RS.DESTROYED
    with pytest.raises(AttributeError):
        commit.runtime_state = RS.DESTROYED  # type: ignore[misc]
    with pytest.raises(AttributeError):
        commit.extra = 1  # type: ignore[attr-defined]
    assert commit.runtime_state is RS.RUNNING


def test_lifecycle_commit_copies_and_pickles():
    commit = ma.machine_transition(RS.RETIRED, RS.STOPPED)
    assert copy.copy(commit) == commit
    assert copy.deepcopy(commit) == commit
    restored = pickle.loads(pickle.dumps(commit))
    assert restored == commit
    assert restored.runtime_state is RS.STOPPED


def test_transition_table_cannot_be_mutated_from_outside():
    table = ma.LIFECYCLE_TRANSITIONS
    before = dict(table)
    try:
        with pytest.raises(TypeError):
            table[RS.DESTROYED] = frozenset({RS.IDLE})  # type: ignore[index]
    finally:
        if isinstance(table, dict):  # undo the damage so later tests see the real table
            table.clear()
            table.update(before)


# --- RunBoundaryReceipt -----------------------------------------------------------


def test_receipt_holds_its_fields():
    r = receipt(contributing_input_ids=[I1, I2])
    assert r.run_id == RUN
    assert r.boundary is ma.RunApplyBoundary.IMMEDIATE
    assert r.contributing_input_ids == (I1, I2)
    assert r.conversation_digest == "machine-owned-digest"
    assert r.message_count == 42
    assert r.sequence == 7
    assert r == receipt(contributing_input_ids=(I1, I2))


@pytest.mark.parametrize("sequence", [0, 1, 2**63 - 1, 2**63, 2**64 - 1])
def test_receipt_accepts_every_u64_sequence(sequence):
    assert receipt(sequence=sequence).sequence == sequence


def test_receipt_optional_fields():
    r = receipt(conversation_digest=None, contributing_input_ids=(), message_count=0)
    assert r.conversation_digest is None
    assert r.contributing_input_ids == ()
    assert r.message_count == 0


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("run_id", I1, TypeError, "run_id must be RunId, got InputId"),
        ("run_id", str(RUN), TypeError, "run_id must be RunId, got str"),
        ("boundary", "immediate", TypeError, "boundary must be RunApplyBoundary, got str"),
        ("contributing_input_ids", "abc", TypeError, "contributing_input_ids must be a sequence"),
        ("contributing_input_ids", None, TypeError, "contributing_input_ids must be a sequence"),
        (
            "contributing_input_ids",
            (RUN,),
            TypeError,
            r"contributing_input_ids\[0\] must be InputId",
        ),
        ("conversation_digest", b"d", TypeError, "conversation_digest must be str, got bytes"),
        ("message_count", -1, ValueError, "message_count must be non-negative, got -1"),
        ("message_count", 2**64, ValueError, r"message_count must be at most 2\*\*64-1"),
        ("message_count", True, TypeError, "message_count must be int, got bool"),
        ("message_count", 1.0, TypeError, "message_count must be int, got float"),
        ("sequence", -1, ValueError, r"sequence must be in \[0, 2\*\*64-1\], got -1"),
        ("sequence", 2**64, ValueError, r"sequence must be in \[0, 2\*\*64-1\], got 184467"),
        ("sequence", False, TypeError, "sequence must be int, got bool"),
        ("sequence", "7", TypeError, "sequence must be int, got str"),
    ],
)
def test_receipt_validates_and_names_the_field(field, value, error, message):
    with pytest.raises(error, match=message):
        receipt(**{field: value})


# --- outcomes ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["retired", "reset", "stopped", "destroyed", "cancelled"])
def test_abandon_reason_simple_kinds(kind):
    reason = getattr(ma.InputAbandonReason, kind)()
    assert reason.kind == kind
    assert reason.attempts is None
    assert reason == ma.InputAbandonReason(kind)


def test_abandon_reason_max_attempts_carries_attempts():
    reason = ma.InputAbandonReason.max_attempts_exhausted(3)
    assert (reason.kind, reason.attempts) == ("max_attempts_exhausted", 3)
    assert reason != ma.InputAbandonReason.max_attempts_exhausted(4)


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("expired",), ValueError, "kind must be one of cancelled, destroyed, .*got 'expired'"),
        ((None,), TypeError, "kind must be str, got NoneType"),
        (("max_attempts_exhausted",), ValueError, "attempts is required when kind is"),
        (("max_attempts_exhausted", -1), ValueError, "attempts must be non-negative"),
        (("max_attempts_exhausted", True), TypeError, "attempts must be int, got bool"),
        (("retired", 3), ValueError, "attempts must be None when kind is 'retired'"),
        (("cancelled", 0), ValueError, "attempts must be None when kind is 'cancelled'"),
    ],
)
def test_abandon_reason_rules(args, error, message):
    with pytest.raises(error, match=message):
        ma.InputAbandonReason(*args)


def test_terminal_outcome_constructors_set_exactly_their_field():
    consumed = ma.InputTerminalOutcome.consumed()
    assert (consumed.kind, consumed.superseded_by, consumed.aggregate_id, consumed.reason) == (
        "consumed",
        None,
        None,
        None,
    )
    superseded = ma.InputTerminalOutcome.superseded(I2)
    assert (superseded.kind, superseded.superseded_by) == ("superseded", I2)
    coalesced = ma.InputTerminalOutcome.coalesced(I2)
    assert (coalesced.kind, coalesced.aggregate_id) == ("coalesced", I2)
    abandoned = ma.InputTerminalOutcome.abandoned(ma.InputAbandonReason.reset())
    assert (abandoned.kind, abandoned.reason) == ("abandoned", ma.InputAbandonReason.reset())
    assert superseded != coalesced


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"kind": "done"},
            ValueError,
            "kind must be one of abandoned, coalesced, consumed, .*'done'",
        ),
        ({"kind": 1}, TypeError, "kind must be str, got int"),
        ({"kind": "superseded"}, ValueError, "superseded_by is required when kind is"),
        ({"kind": "coalesced"}, ValueError, "aggregate_id is required when kind is 'coalesced'"),
        ({"kind": "abandoned"}, ValueError, "reason is required when kind is 'abandoned'"),
        (
            {"kind": "consumed", "superseded_by": I1},
            ValueError,
            "superseded_by must be None when kind is 'consumed'",
        ),
        (
            {"kind": "superseded", "superseded_by": I1, "aggregate_id": I2},
            ValueError,
            "aggregate_id must be None when kind is 'superseded'",
        ),
        (
            {"kind": "coalesced", "aggregate_id": I1, "reason": ma.InputAbandonReason.reset()},
            ValueError,
            "reason must be None when kind is 'coalesced'",
        ),
        (
            {"kind": "superseded", "superseded_by": RUN},
            TypeError,
            "superseded_by must be InputId or None, got RunId",
        ),
        (
            {"kind": "coalesced", "aggregate_id": str(I1)},
            TypeError,
            "aggregate_id must be InputId or None, got str",
        ),
        (
            {"kind": "abandoned", "reason": "reset"},
            TypeError,
            "reason must be InputAbandonReason or None, got str",
        ),
    ],
)
def test_terminal_outcome_rules(kwargs, error, message):
    with pytest.raises(error, match=message):
        ma.InputTerminalOutcome(**kwargs)


# --- timestamps ------------------------------------------------------------------------


def test_history_entry_holds_fields():
    entry = ma.InputStateHistoryEntry(
        T0, ma.InputLifecycleState.ACCEPTED, ma.InputLifecycleState.QUEUED, "queued it"
    )
    assert entry.timestamp == T0
    assert entry.reason == "queued it"
    assert ma.InputStateHistoryEntry(T0, entry.from_state, entry.to_state).reason is None


def test_naive_datetime_is_refused():
    with pytest.raises(ValueError, match="timestamp must be timezone-aware"):
        ma.InputStateHistoryEntry(
            datetime(2024, 1, 1), ma.InputLifecycleState.ACCEPTED, ma.InputLifecycleState.QUEUED
        )
    with pytest.raises(ValueError, match="created_at must be timezone-aware"):
        input_state(created_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="updated_at must be timezone-aware"):
        input_state(updated_at=datetime(2024, 1, 1))


@pytest.mark.parametrize(
    "tz", [timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30)), "zoneinfo"]
)
def test_aware_datetime_is_normalised_to_utc(tz):
    zone = ZoneInfo("Europe/Paris") if tz == "zoneinfo" else tz
    local = T0.astimezone(zone)
    assert local.tzinfo is not UTC
    state = input_state(created_at=local, updated_at=local)
    for value in (state.created_at, state.updated_at):
        assert value.tzinfo is UTC
        assert value == T0
        assert (value.hour, value.minute, value.microsecond) == (12, 30, 123456)
    assert state == input_state()


def test_datetime_out_of_range_in_utc_is_refused():
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    with pytest.raises(ValueError, match="created_at is out of range in UTC"):
        input_state(created_at=early)


def test_timestamp_type_is_checked():
    with pytest.raises(TypeError, match="created_at must be datetime, got str"):
        input_state(created_at=T0.isoformat())
    with pytest.raises(TypeError, match="from_state must be InputLifecycleState, got str"):
        ma.InputStateHistoryEntry(T0, "accepted", ma.InputLifecycleState.QUEUED)
    with pytest.raises(TypeError, match="reason must be str, got int"):
        ma.InputStateHistoryEntry(
            T0, ma.InputLifecycleState.ACCEPTED, ma.InputLifecycleState.QUEUED, 5
        )


# --- seeds and input states ---------------------------------------------------------------


def test_seed_defaults():
    seed = ma.InputStateSeed()
    assert seed.phase is ma.InputLifecycleState.ACCEPTED
    assert seed.last_run_id is None
    assert seed.last_boundary_sequence is None
    assert seed.terminal_outcome is None
    assert seed.attempt_count == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"phase": "queued"}, TypeError, "phase must be InputLifecycleState, got str"),
        ({"last_run_id": I1}, TypeError, "last_run_id must be RunId or None, got InputId"),
        ({"last_boundary_sequence": -1}, ValueError, r"last_boundary_sequence must be in \[0"),
        ({"last_boundary_sequence": 2**64}, ValueError, "last_boundary_sequence must be in"),
        ({"terminal_outcome": "consumed"}, TypeError, "terminal_outcome must be InputTermin"),
        ({"attempt_count": -1}, ValueError, "attempt_count must be non-negative"),
        ({"attempt_count": None}, TypeError, "attempt_count must be int, got NoneType"),
    ],
)
def test_seed_validates(kwargs, error, message):
    with pytest.raises(error, match=message):
        ma.InputStateSeed(**kwargs)


def test_seed_accepts_the_edges_of_its_ranges():
    seed = ma.InputStateSeed(
        phase=ma.InputLifecycleState.CONSUMED,
        last_run_id=RUN,
        last_boundary_sequence=2**64 - 1,
        terminal_outcome=ma.InputTerminalOutcome.consumed(),
        attempt_count=2**32 - 1,
    )
    assert seed.last_boundary_sequence == 2**64 - 1
    assert seed.attempt_count == 2**32 - 1


def test_counts_meerkat_keeps_as_u32_are_bounded():
    with pytest.raises(
        ValueError, match=r"attempt_count must be at most 2\*\*32-1, got 4294967296"
    ):
        ma.InputStateSeed(attempt_count=2**32)
    with pytest.raises(ValueError, match=r"attempts must be at most 2\*\*32-1"):
        ma.InputAbandonReason.max_attempts_exhausted(2**32)
    with pytest.raises(ValueError, match=r"recovery_count must be at most 2\*\*32-1"):
        input_state(recovery_count=2**32)
    assert ma.InputAbandonReason.max_attempts_exhausted(2**32 - 1).attempts == 2**32 - 1
    assert input_state(recovery_count=2**32 - 1).recovery_count == 2**32 - 1
    # message_count is a u64.
    assert receipt(message_count=2**64 - 1).message_count == 2**64 - 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: receipt(conversation_digest="a\ud800"),
            "conversation_digest must be valid Unicode",
        ),
        (lambda: input_state(idempotency_key="\udfff"), "idempotency_key must be valid Unicode"),
        (lambda: input_state(policy={"k": "\ud800"}), "policy.k must be valid Unicode"),
        (lambda: input_state(policy={"\ud800": 1}), "policy key must be valid Unicode"),
        (lambda: ma.PersistedOpsSnapshot("\ud800"), "epoch_id must be valid Unicode"),
        (
            lambda: ma.InputStateHistoryEntry(
                T0, ma.InputLifecycleState.ACCEPTED, ma.InputLifecycleState.QUEUED, "\ud800"
            ),
            "reason must be valid Unicode",
        ),
    ],
)
def test_strings_with_lone_surrogates_are_refused(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_input_state_defaults_and_documents_frozen():
    state = input_state(
        history=[
            ma.InputStateHistoryEntry(
                T0, ma.InputLifecycleState.ACCEPTED, ma.InputLifecycleState.QUEUED
            )
        ],
        policy={"mode": "steer", "limits": [1, 2, {"x": None}]},
        runtime_semantics=["a", 1.5],
        durability=ma.InputDurability.DURABLE,
        idempotency_key="k",
        recovery_count=2,
        reconstruction_source="text",
        persisted_input={"text": "hi"},
    )
    assert isinstance(state.history, tuple)
    assert isinstance(state.policy, PMap)
    assert state.policy == pmap({"mode": "steer", "limits": (1, 2, pmap({"x": None}))})
    assert state.runtime_semantics == ("a", 1.5)
    assert state.reconstruction_source == "text"
    assert isinstance(state.persisted_input, PMap)
    hash(state)
    bare = input_state()
    assert bare.history == ()
    assert bare.policy is None
    assert bare.durability is None
    assert bare.recovery_count == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"input_id": RUN}, TypeError, "input_id must be InputId, got RunId"),
        ({"history": [{"from": "accepted"}]}, TypeError, r"history\[0\] must be InputStateHist"),
        ({"history": "abc"}, TypeError, "history must be a sequence of InputStateHistoryEntry"),
        ({"policy": {"x": float("nan")}}, ValueError, "policy.x: nan is not a JSON number"),
        ({"persisted_input": {1: "a"}}, TypeError, "persisted_input: JSON object keys must be"),
        ({"runtime_semantics": {1, 2}}, TypeError, "runtime_semantics: set is not a JSON value"),
        ({"reconstruction_source": 2**64}, ValueError, "reconstruction_source: integer"),
        ({"durability": "durable"}, TypeError, "durability must be InputDurability or None"),
        ({"idempotency_key": 5}, TypeError, "idempotency_key must be str, got int"),
        ({"recovery_count": -3}, ValueError, "recovery_count must be non-negative, got -3"),
    ],
)
def test_input_state_validates_and_names_the_field(kwargs, error, message):
    with pytest.raises(error, match=message):
        input_state(**kwargs)


def test_stored_input_state_new_accepted():
    before = datetime.now(UTC)
    stored = ma.StoredInputState.new_accepted(I1)
    after = datetime.now(UTC)
    assert stored.input_id == I1
    assert stored.state.input_id == I1
    assert stored.seed == ma.InputStateSeed()
    assert stored.state.history == ()
    assert stored.state.created_at == stored.state.updated_at
    assert stored.state.created_at.tzinfo is UTC
    assert before <= stored.state.created_at <= after


def test_stored_input_state_new_accepted_with_explicit_time():
    stored = ma.StoredInputState.new_accepted(I1, now=T0.astimezone(timezone(timedelta(hours=9))))
    assert stored.state.created_at == T0
    assert stored.state.created_at.tzinfo is UTC
    assert stored == ma.StoredInputState.new_accepted(I1, now=T0)
    with pytest.raises(ValueError, match="created_at must be timezone-aware"):
        ma.StoredInputState.new_accepted(I1, now=datetime(2024, 1, 1))


def test_stored_input_state_validates():
    with pytest.raises(TypeError, match="input_id must be InputId, got RunId"):
        ma.StoredInputState.new_accepted(RUN)
    with pytest.raises(TypeError, match="state must be InputState, got dict"):
        ma.StoredInputState({"input_id": str(I1)})
    with pytest.raises(TypeError, match="seed must be InputStateSeed, got dict"):
        ma.StoredInputState(input_state(), {})


# --- SessionDelta and PersistedOpsSnapshot ---------------------------------------------


def test_session_delta_takes_bytes_only():
    assert ma.SessionDelta(b"{}").session_snapshot == b"{}"
    for bad in (bytearray(b"{}"), memoryview(b"{}"), "{}", None):
        with pytest.raises(TypeError, match="session_snapshot must be bytes, got"):
            ma.SessionDelta(bad)


def test_session_delta_narrows_bytes_subclass():
    class Blob(bytes):
        pass

    delta = ma.SessionDelta(Blob(b"x"))
    assert type(delta.session_snapshot) is bytes
    assert delta == ma.SessionDelta(b"x")


def test_ops_snapshot_freezes_payloads():
    snap = ma.PersistedOpsSnapshot(
        "epoch-1", {"a": [1]}, [{"op": "x"}], {"done": True}, {"cursor": 2**63}
    )
    assert snap.authority_state == pmap({"a": (1,)})
    assert snap.operation_specs == (pmap({"op": "x"}),)
    assert snap.cursors == pmap({"cursor": 2**63})
    assert snap == ma.PersistedOpsSnapshot(
        "epoch-1", {"a": (1,)}, ({"op": "x"},), {"done": True}, {"cursor": 2**63}
    )
    hash(snap)
    assert ma.PersistedOpsSnapshot("e").authority_state is None


def test_ops_snapshot_validates():
    with pytest.raises(TypeError, match="epoch_id must be str, got NoneType"):
        ma.PersistedOpsSnapshot(None)
    with pytest.raises(ValueError, match=r"cursors.c\[0\]: inf is not a JSON number"):
        ma.PersistedOpsSnapshot("e", cursors={"c": [float("inf")]})
    with pytest.raises(TypeError, match="authority_state: bytes is not a JSON value"):
        ma.PersistedOpsSnapshot("e", authority_state=b"x")


# --- every value: frozen, hashable, equal by value ----------------------------------------


SAMPLES = [
    receipt(),
    ma.InputAbandonReason.max_attempts_exhausted(2),
    ma.InputTerminalOutcome.abandoned(ma.InputAbandonReason.retired()),
    ma.InputStateHistoryEntry(T0, ma.InputLifecycleState.ACCEPTED, ma.InputLifecycleState.QUEUED),
    ma.InputStateSeed(attempt_count=1),
    input_state(policy={"a": [1]}),
    ma.StoredInputState(input_state()),
    ma.SessionDelta(b"x"),
    ma.PersistedOpsSnapshot("e", {"a": 1}),
]


@pytest.mark.parametrize("value", SAMPLES, ids=lambda v: type(v).__name__)
def test_values_are_frozen_hashable_and_equal_by_value(value):
    first = dataclasses.fields(value)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, first, None)
    with pytest.raises((AttributeError, TypeError)):
        value.not_a_field = 1
    twin = dataclasses.replace(value)
    assert twin is not value
    assert twin == value
    assert hash(twin) == hash(value)
    assert len({value, twin}) == 1


@settings(max_examples=30)
@given(
    st.one_of(
        mst.receipts(),
        mst.stored_input_states(),
        mst.ops_snapshots(),
        mst.terminal_outcomes(),
        mst.session_deltas(),
    )
)
def test_constructors_accept_their_own_output(value):
    # Re-validating a valid value is the identity: normalisation is idempotent.
    twin = dataclasses.replace(value)
    assert twin == value
    assert hash(twin) == hash(value)
