"""The data model (SPEC §2): `meerkat_actor._types`."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle
import uuid
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from zoneinfo import ZoneInfo

import _values
import pytest
from _values import I1, I2, RUN, receipt
from hypothesis import find, given, settings
from hypothesis import strategies as st
from pyrsistent import PMap, pmap

import meerkat_actor as ma
from meerkat_actor import RuntimeState as RS
from meerkat_actor import _packed
from meerkat_actor._codec import CodecError, from_json, from_plain, loads_json, to_json, to_plain
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


# --- RunBoundaryReceipt defaults (issue 16) -------------------------------------------------


def test_receipt_needs_only_run_id_and_boundary():
    r = ma.RunBoundaryReceipt(RUN, ma.RunApplyBoundary.RUN_START)
    assert r.contributing_input_ids == ()
    assert type(r.contributing_input_ids) is tuple
    assert r.conversation_digest is None
    assert r.message_count == 0
    assert r.sequence == 0
    spelled_out = ma.RunBoundaryReceipt(
        run_id=RUN,
        boundary=ma.RunApplyBoundary.RUN_START,
        contributing_input_ids=(),
        conversation_digest=None,
        message_count=0,
        sequence=0,
    )
    assert r == spelled_out
    assert hash(r) == hash(spelled_out)


def test_receipt_positional_order_is_unchanged():
    r = ma.RunBoundaryReceipt(RUN, ma.RunApplyBoundary.IMMEDIATE, [I1, I2], "digest", 3, 9)
    assert r.contributing_input_ids == (I1, I2)
    assert r.conversation_digest == "digest"
    assert (r.message_count, r.sequence) == (3, 9)
    # Some fields positional, the rest by name: each lands where it is named.
    r = ma.RunBoundaryReceipt(RUN, ma.RunApplyBoundary.IMMEDIATE, (I1,), sequence=5)
    assert (r.contributing_input_ids, r.conversation_digest, r.message_count, r.sequence) == (
        (I1,),
        None,
        0,
        5,
    )


def test_receipt_still_requires_run_id_and_boundary():
    with pytest.raises(TypeError, match="boundary"):
        ma.RunBoundaryReceipt(RUN)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="run_id"):
        ma.RunBoundaryReceipt(boundary=ma.RunApplyBoundary.IMMEDIATE)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "value", "error", "message"),
    [
        ("contributing_input_ids", None, TypeError, "contributing_input_ids must be a sequence"),
        ("message_count", None, TypeError, "message_count must be int, got NoneType"),
        ("sequence", None, TypeError, "sequence must be int, got NoneType"),
        ("sequence", -1, ValueError, r"sequence must be in \[0, 2\*\*64-1\]"),
    ],
)
def test_receipt_defaulted_fields_are_validated_when_given(field, value, error, message):
    with pytest.raises(error, match=message):
        ma.RunBoundaryReceipt(RUN, ma.RunApplyBoundary.IMMEDIATE, **{field: value})


def test_receipt_with_defaults_round_trips_both_codecs():
    r = ma.RunBoundaryReceipt(RUN, ma.RunApplyBoundary.RUN_CHECKPOINT)
    assert from_plain(ma.RunBoundaryReceipt, to_plain(r)) == r
    assert from_json(ma.RunBoundaryReceipt, to_json(r)) == r
    assert "conversation_digest" not in to_json(r)  # serde skips a None digest


# --- the input lifecycle table and StoredInputState.transition (issue 16) -----------------

P = ma.InputLifecycleState
# Meerkat's input lifecycle machine (meerkat-runtime's input lifecycle
# authority), written out independently of the package's table.
MEERKAT_INPUT_TRANSITIONS = {
    P.ACCEPTED: {P.QUEUED, P.CONSUMED, P.ABANDONED},
    P.QUEUED: {P.STAGED, P.SUPERSEDED, P.COALESCED, P.ABANDONED},
    P.STAGED: {P.QUEUED, P.APPLIED, P.ABANDONED},
    P.APPLIED: {P.APPLIED_PENDING_CONSUMPTION, P.ABANDONED},
    P.APPLIED_PENDING_CONSUMPTION: {P.CONSUMED, P.ABANDONED},
    P.CONSUMED: set(),
    P.SUPERSEDED: set(),
    P.COALESCED: set(),
    P.ABANDONED: set(),
}
ALLOWED_MOVES = sorted(
    ((a, b) for a, targets in MEERKAT_INPUT_TRANSITIONS.items() for b in targets),
    key=lambda pair: (pair[0].value, pair[1].value),
)
FORBIDDEN_MOVES = [(a, b) for a in P for b in P if b not in MEERKAT_INPUT_TRANSITIONS[a]]
OUTCOME_OF = _values.OUTCOME_OF
RUN2 = ma.RunId.new()
T1 = T0 + timedelta(seconds=5)


def in_phase(phase: ma.InputLifecycleState, **seed_fields) -> ma.StoredInputState:
    """An input in `phase` (with the outcome of its kind, if terminal), a
    history of one entry and every shell field set, so a transition that
    drops or resets one shows."""
    shell = input_state(
        history=(ma.InputStateHistoryEntry(T0, P.ACCEPTED, P.QUEUED, "first"),),
        policy={"mode": "steer"},
        runtime_semantics={"kind": "prompt"},
        durability=ma.InputDurability.DERIVED,
        idempotency_key="idem-1",
        recovery_count=2,
        reconstruction_source={"from": "journal"},
        persisted_input={"text": "hello"},
    )
    fields = {"last_run_id": RUN, "last_boundary_sequence": None, "attempt_count": 1}
    fields.update(seed_fields)
    seed = ma.InputStateSeed(phase, terminal_outcome=OUTCOME_OF.get(phase), **fields)
    return ma.StoredInputState(shell, seed)


def arguments_for(to: ma.InputLifecycleState) -> dict:
    """What a move to `to` needs: a run to stage for, a boundary sequence,
    a terminal outcome."""
    if to is P.STAGED:
        return {"run_id": RUN2}
    if to is P.APPLIED_PENDING_CONSUMPTION:
        return {"sequence": 2**64 - 1}
    if to.is_terminal:
        return {"outcome": OUTCOME_OF[to]}
    return {}


def test_input_transition_table_is_meerkats():
    assert {a: set(b) for a, b in ma.INPUT_LIFECYCLE_TRANSITIONS.items()} == (
        MEERKAT_INPUT_TRANSITIONS
    )
    with pytest.raises(TypeError):
        ma.INPUT_LIFECYCLE_TRANSITIONS[P.CONSUMED] = frozenset({P.QUEUED})  # type: ignore[index]
    assert all(isinstance(t, frozenset) for t in ma.INPUT_LIFECYCLE_TRANSITIONS.values())


@pytest.mark.parametrize(("source", "to"), ALLOWED_MOVES, ids=lambda p: p.value)
def test_transition_takes_every_allowed_move(source, to):
    before = in_phase(source)
    moved = before.transition(to, reason=f"to {to.value}", at=T1, **arguments_for(to))
    assert isinstance(moved, ma.StoredInputState)
    # The seed, as Meerkat's machine sets it.
    assert moved.seed.phase is to
    assert moved.seed.terminal_outcome == OUTCOME_OF.get(to)
    assert moved.seed.last_run_id == (RUN2 if to is P.STAGED else RUN)
    assert moved.seed.last_boundary_sequence == (
        2**64 - 1 if to is P.APPLIED_PENDING_CONSUMPTION else None
    )
    assert moved.seed.attempt_count == (2 if to is P.STAGED else 1)
    # One more history entry, after the others; updated_at is its time.
    assert moved.state.history == (
        *before.state.history,
        ma.InputStateHistoryEntry(T1, source, to, f"to {to.value}"),
    )
    assert moved.state.updated_at == T1
    # Every other shell field is kept, and the old value is untouched.
    assert dataclasses.replace(moved.state, history=before.state.history, updated_at=T0) == (
        before.state
    )
    assert before == in_phase(source)


@pytest.mark.parametrize(("source", "to"), FORBIDDEN_MOVES, ids=lambda p: p.value)
def test_transition_refuses_every_forbidden_move(source, to):
    before = in_phase(source)
    with pytest.raises(ma.InvalidTransition) as info:
        before.transition(to, at=T1, **arguments_for(to))
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert f"{source.value} -> {to.value}" in message
    assert str(before.input_id) in message
    allowed = sorted(s.value for s in MEERKAT_INPUT_TRANSITIONS[source])
    assert f"(from {source.value}: {', '.join(allowed) or 'none'}" in message
    assert before == in_phase(source)


def test_a_forbidden_move_is_refused_before_its_arguments_are_looked_at():
    # accepted -> superseded would also lack its outcome: the move is the error.
    with pytest.raises(ma.InvalidTransition, match="accepted -> superseded"):
        in_phase(P.ACCEPTED).transition(P.SUPERSEDED)


def test_history_is_appended_in_order_with_each_reason():
    times = [T0 + timedelta(seconds=n) for n in range(1, 6)]
    state = ma.StoredInputState.new_accepted(I1, now=T0)
    state = state.transition(P.QUEUED, reason="policy resolved", at=times[0])
    state = state.transition(P.STAGED, run_id=RUN, at=times[1])
    state = state.transition(P.APPLIED, reason="boundary applied", run_id=RUN, at=times[2])
    state = state.transition(
        P.APPLIED_PENDING_CONSUMPTION, reason="receipt", sequence=4, at=times[3]
    )
    state = state.transition(
        P.CONSUMED, reason="done", outcome=ma.InputTerminalOutcome.consumed(), at=times[4]
    )
    assert [(e.timestamp, e.from_state, e.to_state, e.reason) for e in state.state.history] == [
        (times[0], P.ACCEPTED, P.QUEUED, "policy resolved"),
        (times[1], P.QUEUED, P.STAGED, None),
        (times[2], P.STAGED, P.APPLIED, "boundary applied"),
        (times[3], P.APPLIED, P.APPLIED_PENDING_CONSUMPTION, "receipt"),
        (times[4], P.APPLIED_PENDING_CONSUMPTION, P.CONSUMED, "done"),
    ]
    assert state.state.created_at == T0
    assert state.state.updated_at == times[4]
    assert state.seed == ma.InputStateSeed(
        P.CONSUMED,
        last_run_id=RUN,
        last_boundary_sequence=4,
        terminal_outcome=ma.InputTerminalOutcome.consumed(),
        attempt_count=1,
    )


def test_each_staging_counts_an_attempt_and_records_its_run():
    state = in_phase(P.QUEUED, attempt_count=0, last_run_id=None)
    state = state.transition(P.STAGED, run_id=RUN, at=T1)
    state = state.transition(P.QUEUED, reason="rolled back", at=T1)  # a rollback keeps both
    assert (state.seed.attempt_count, state.seed.last_run_id) == (1, RUN)
    state = state.transition(P.STAGED, run_id=RUN2, at=T1)
    assert (state.seed.attempt_count, state.seed.last_run_id) == (2, RUN2)
    # A fourth, fifth, ... rollback is the caller's call: no automatic abandon.
    for _ in range(3):
        state = state.transition(P.QUEUED, at=T1).transition(P.STAGED, run_id=RUN2, at=T1)
    assert state.seed.phase is P.STAGED
    assert state.seed.attempt_count == 5


def test_staging_past_the_u32_attempt_count_is_refused():
    state = in_phase(P.QUEUED, attempt_count=2**32 - 1)
    with pytest.raises(ValueError, match=r"attempt_count must be at most 2\*\*32-1"):
        state.transition(P.STAGED, run_id=RUN)


def test_updated_at_defaults_to_now_in_utc():
    state = in_phase(P.ACCEPTED)
    before = datetime.now(UTC)
    moved = state.transition(P.QUEUED)
    after = datetime.now(UTC)
    assert before <= moved.state.updated_at <= after
    assert moved.state.updated_at.tzinfo is UTC
    assert moved.state.history[-1].timestamp == moved.state.updated_at


def test_at_is_normalised_to_utc_and_must_be_aware():
    berlin = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    moved = in_phase(P.ACCEPTED).transition(P.QUEUED, at=berlin)
    assert moved.state.updated_at == T0
    assert moved.state.updated_at.tzinfo is UTC
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        in_phase(P.ACCEPTED).transition(P.QUEUED, at=datetime(2024, 5, 1))
    with pytest.raises(TypeError, match="at must be datetime, got str"):
        in_phase(P.ACCEPTED).transition(P.QUEUED, at="2024-05-01T00:00:00Z")  # type: ignore[arg-type]


@pytest.mark.parametrize("to", [p for p in P if p.is_terminal], ids=lambda p: p.value)
def test_a_terminal_move_requires_its_outcome(to):
    source = P.APPLIED_PENDING_CONSUMPTION if to is P.CONSUMED else P.QUEUED
    with pytest.raises(ValueError, match="outcome is required") as info:
        in_phase(source).transition(to)
    assert not isinstance(info.value, ma.InvalidTransition)
    assert f"phase is {to.value!r}" in str(info.value)


@pytest.mark.parametrize(
    ("to", "wrong"),
    [
        (P.CONSUMED, P.ABANDONED),
        (P.ABANDONED, P.CONSUMED),
        (P.SUPERSEDED, P.COALESCED),
        (P.COALESCED, P.SUPERSEDED),
    ],
    ids=lambda p: p.value,
)
def test_a_terminal_move_refuses_an_outcome_of_another_kind(to, wrong):
    source = P.APPLIED_PENDING_CONSUMPTION if to is P.CONSUMED else P.QUEUED
    with pytest.raises(ValueError, match=f"outcome of kind {wrong.value!r} does not match") as e:
        in_phase(source).transition(to, outcome=OUTCOME_OF[wrong])
    assert f"it must be of kind {to.value!r}" in str(e.value)


def test_a_move_to_a_phase_that_is_not_terminal_refuses_an_outcome():
    with pytest.raises(ValueError, match="outcome must be None when phase is 'queued'"):
        in_phase(P.ACCEPTED).transition(P.QUEUED, outcome=ma.InputTerminalOutcome.consumed())


def test_staging_requires_a_run_and_applying_requires_the_same_run():
    with pytest.raises(ValueError, match="queued -> staged: run_id is required"):
        in_phase(P.QUEUED).transition(P.STAGED)
    staged = in_phase(P.STAGED, last_run_id=RUN)
    with pytest.raises(ma.InvalidTransition, match=f"run_id {RUN2} is not the run") as info:
        staged.transition(P.APPLIED, run_id=RUN2)
    assert f"last_run_id {RUN}" in str(info.value)
    assert staged.transition(P.APPLIED, run_id=RUN, at=T1).seed.last_run_id == RUN
    assert staged.transition(P.APPLIED, at=T1).seed.last_run_id == RUN


def test_applied_pending_consumption_requires_the_boundary_sequence():
    with pytest.raises(ValueError, match="sequence is required"):
        in_phase(P.APPLIED).transition(P.APPLIED_PENDING_CONSUMPTION)
    moved = in_phase(P.APPLIED).transition(P.APPLIED_PENDING_CONSUMPTION, sequence=0)
    assert moved.seed.last_boundary_sequence == 0  # 0 is a sequence, not "missing"


def test_run_id_and_sequence_are_recorded_on_any_move_that_gives_them():
    moved = in_phase(P.ACCEPTED, last_run_id=None).transition(
        P.ABANDONED,
        run_id=RUN2,
        sequence=7,
        outcome=ma.InputTerminalOutcome.abandoned(ma.InputAbandonReason.reset()),
    )
    assert (moved.seed.last_run_id, moved.seed.last_boundary_sequence) == (RUN2, 7)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"to": "queued"}, TypeError, "to must be InputLifecycleState, got str"),
        ({"reason": 5}, TypeError, "reason must be str, got int"),
        ({"run_id": I1}, TypeError, "run_id must be RunId or None, got InputId"),
        ({"sequence": -1}, ValueError, r"sequence must be in \[0, 2\*\*64-1\]"),
        ({"sequence": 2**64}, ValueError, r"sequence must be in \[0, 2\*\*64-1\]"),
        ({"sequence": True}, TypeError, "sequence must be int, got bool"),
        ({"outcome": "consumed"}, TypeError, "outcome must be InputTerminalOutcome or None"),
    ],
)
def test_transition_checks_its_arguments(kwargs, error, message):
    kwargs = {"to": P.QUEUED, **kwargs}
    with pytest.raises(error, match=message):
        in_phase(P.ACCEPTED).transition(**kwargs)


def test_transition_makes_a_consistent_value_from_an_inconsistent_stored_one():
    # A store may hold a seed whose phase and outcome disagree (see below):
    # moving it on gives a value whose outcome is the one passed.
    legacy = ma.StoredInputState(
        input_state(), _values.stored_seed(P.ACCEPTED, ma.InputTerminalOutcome.consumed())
    )
    moved = legacy.transition(P.QUEUED, at=T1)
    assert moved.seed.terminal_outcome is None
    assert moved.seed == ma.InputStateSeed(P.QUEUED)
    stuck = ma.StoredInputState(input_state(), _values.stored_seed(P.CONSUMED))
    with pytest.raises(ma.InvalidTransition, match="consumed -> queued"):
        stuck.transition(P.QUEUED)


# --- a seed's phase and terminal outcome agree (issue 16) -----------------------------------

OUTCOME_KINDS = [None, *OUTCOME_OF.values()]


def agrees(phase: ma.InputLifecycleState, outcome: ma.InputTerminalOutcome | None) -> bool:
    if phase.is_terminal:
        return outcome is not None and outcome.kind == phase.value
    return outcome is None


@pytest.mark.parametrize("phase", list(P), ids=lambda p: p.value)
@pytest.mark.parametrize("outcome", OUTCOME_KINDS, ids=lambda o: "none" if o is None else o.kind)
def test_seed_constructor_requires_phase_and_outcome_to_agree(phase, outcome):
    if agrees(phase, outcome):
        seed = ma.InputStateSeed(phase, terminal_outcome=outcome)
        assert (seed.phase, seed.terminal_outcome) == (phase, outcome)
        assert dataclasses.replace(seed) == seed
        return
    with pytest.raises(ValueError, match="terminal_outcome") as info:
        ma.InputStateSeed(phase, terminal_outcome=outcome)
    message = str(info.value)
    assert "terminal_outcome" in message
    assert f"phase is {phase.value!r}" in message or f"phase {phase.value!r}" in message
    assert type(info.value) is ValueError


def test_seed_disagreement_messages_say_what_is_wanted():
    with pytest.raises(
        ValueError,
        match=r"terminal_outcome is required when phase is 'consumed' .*kind 'consumed'",
    ):
        ma.InputStateSeed(P.CONSUMED)
    with pytest.raises(
        ValueError,
        match=r"terminal_outcome must be None when phase is 'accepted' .*got a 'consumed' outcome",
    ):
        ma.InputStateSeed(P.ACCEPTED, terminal_outcome=ma.InputTerminalOutcome.consumed())
    with pytest.raises(
        ValueError,
        match="terminal_outcome of kind 'superseded' does not match phase 'abandoned'",
    ):
        ma.InputStateSeed(P.ABANDONED, terminal_outcome=OUTCOME_OF[P.SUPERSEDED])


def test_a_field_error_is_reported_before_the_disagreement():
    # A wrong field type is named as before, not as a phase/outcome problem.
    with pytest.raises(TypeError, match="phase must be InputLifecycleState, got str"):
        ma.InputStateSeed("consumed")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="terminal_outcome must be InputTerminalOutcome"):
        ma.InputStateSeed(P.CONSUMED, terminal_outcome="consumed")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attempt_count must be non-negative"):
        ma.InputStateSeed(P.CONSUMED, attempt_count=-1)


def test_replace_checks_the_agreement_too():
    seed = ma.InputStateSeed(P.QUEUED)
    with pytest.raises(ValueError, match="terminal_outcome is required"):
        dataclasses.replace(seed, phase=P.CONSUMED)
    done = dataclasses.replace(
        seed, phase=P.CONSUMED, terminal_outcome=ma.InputTerminalOutcome.consumed()
    )
    assert done.phase is P.CONSUMED


@settings(max_examples=200)
@given(mst.input_state_seeds())
def test_the_kits_seeds_agree(seed):
    assert agrees(seed.phase, seed.terminal_outcome)


def test_the_kits_seeds_cover_every_phase_and_outcome_variant():
    for phase in P:
        find(mst.input_state_seeds(), lambda s, phase=phase: s.phase is phase)
    for kind in ("retired", "reset", "stopped", "destroyed", "cancelled", "max_attempts_exhausted"):
        find(
            mst.input_state_seeds(),
            lambda s, kind=kind: (
                s.terminal_outcome is not None
                and s.terminal_outcome.reason is not None
                and s.terminal_outcome.reason.kind == kind
            ),
        )


# --- seeds a store holds are read as they are (issue 16) ------------------------------------

DISAGREEING = [
    (P.CONSUMED, None),
    (P.ABANDONED, None),
    (P.ACCEPTED, ma.InputTerminalOutcome.consumed()),
    (P.QUEUED, OUTCOME_OF[P.SUPERSEDED]),
    (P.CONSUMED, OUTCOME_OF[P.ABANDONED]),
    (P.COALESCED, OUTCOME_OF[P.SUPERSEDED]),
]


@pytest.mark.parametrize(("phase", "outcome"), DISAGREEING, ids=str)
def test_decoders_read_a_stored_seed_whose_phase_and_outcome_disagree(phase, outcome):
    seed = _values.stored_seed(phase, outcome, attempts=3)
    assert (seed.phase, seed.terminal_outcome, seed.attempt_count) == (phase, outcome, 3)
    value = ma.StoredInputState(input_state(), seed)
    # Meerkat JSON (the SQLite and PostgreSQL rows), plain CBOR data (the
    # log and snapshots of versions 1 and 2), packed bytes (version 3: the
    # fast path takes a consumed outcome or none, the checked path the rest).
    assert from_json(ma.StoredInputState, to_json(value)) == value
    assert loads_json(ma.StoredInputState, json.dumps(to_json(value))) == value
    assert from_plain(ma.StoredInputState, to_plain(value)) == value
    packed = _packed.pack_input(value)
    assert _packed.unpack_input(packed) == value
    assert from_plain(ma.StoredInputState, _packed.loads_strict(packed)) == value


def test_a_stored_seed_is_still_checked_field_by_field():
    with pytest.raises(CodecError, match="attempt_count"):
        from_json(ma.InputStateSeed, {"current_state": "consumed", "attempt_count": -1})
    with pytest.raises(CodecError, match="current_state"):
        from_json(ma.InputStateSeed, {"current_state": "finished", "attempt_count": 0})


def test_a_seed_prints_as_code_that_builds_it_again():
    # The kit prints failing examples as programs: an agreeing seed prints as
    # its constructor call, a disagreeing one as the internal builder that
    # made it (the constructor would refuse it).
    namespace = {name: getattr(ma, name) for name in ma.__all__}
    namespace["UUID"] = uuid.UUID
    agreeing = ma.InputStateSeed(P.ABANDONED, RUN, 5, OUTCOME_OF[P.ABANDONED], attempt_count=2)
    assert repr(agreeing).startswith("InputStateSeed(phase=InputLifecycleState.ABANDONED, ")
    assert eval(repr(agreeing), namespace) == agreeing
    for phase, outcome in DISAGREEING:
        seed = _values.stored_seed(phase, outcome, attempts=1)
        assert repr(seed).startswith("InputStateSeed._stored(phase=")
        assert eval(repr(seed), namespace) == seed
