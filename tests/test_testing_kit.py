"""Unit tests of the public conformance kit, `meerkat_actor.testing` (SPEC §8).

What a backend author relies on, checked without running the stateful
machine (every test here takes milliseconds):

- `ReferenceModel` is the executable statement of SPEC §4: each rule of §4
  and of docs/semantics.md is checked against it directly;
- the model module stays plain Python, independent of the store's core;
- the OAuth updaters the machine draws behave as documented and print as
  runnable code;
- a mismatch between a store and the model fails with a message naming the
  operation, its arguments and both answers;
- every strategy draws valid values and reaches the u64 edges;
- `Capabilities` validates its flags (moved here from
  stateful_tests/test_capabilities.py, which keeps the machine runs).

The updaters (`Increment`, `Append`, `MarkMissing`, `RaiseError`,
`ReturnNotBytes`, `ReturnBytearray`, `ReturnAwaitable`) are exported by
`meerkat_actor.testing`, so that printed failing programs run; they are
defined in `meerkat_actor.testing._machine`, where the machine's rules draw
them.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import _values
import pytest
import trio
from _values import session_json
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

import meerkat_actor as ma
import meerkat_actor.testing as kit
from meerkat_actor import (
    InputId,
    InputLifecycleState,
    InputStateSeed,
    LogicalRuntimeId,
    PersistedOpsSnapshot,
    ReceiptConflict,
    RunApplyBoundary,
    RunBoundaryReceipt,
    RunId,
    RuntimeState,
    SessionDelta,
    SessionId,
    SessionKeyMismatch,
    StoredInputState,
    WriteFailed,
    machine_transition,
)
from meerkat_actor.testing import (
    Capabilities,
    ReferenceModel,
    RuntimeStoreMachine,
    UpdaterFailed,
    assert_store_matches_model,
    strategies,
)

# Private on purpose: the pools and updaters as the machine module defines them.
from meerkat_actor.testing._machine import (
    RUNTIME_IDS,
    SESSION_IDS,
    Append,
    Increment,
    MarkMissing,
    RaiseError,
    ReturnAwaitable,
    ReturnBytearray,
    ReturnNotBytes,
    _bad_calls,
    _Outcome,
)

MODEL_SOURCE = Path(kit.__file__).with_name("_model.py")

RT_A = LogicalRuntimeId("rt-a")
RT_B = LogicalRuntimeId("rt-b")
RUNTIMES = (RT_A, RT_B)
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)

# Insertion order (as listed) differs from UUID order.
ID_MID = InputId(uuid.UUID(int=2**127 + 7))
ID_LOW = InputId(uuid.UUID(int=1))
ID_HIGH = InputId(uuid.UUID(int=2**128 - 1))
ID_LOWER_MID = InputId(uuid.UUID(int=2**64))
INPUT_IDS = (ID_MID, ID_LOW, ID_HIGH, ID_LOWER_MID)

RUN_1 = RunId(uuid.UUID(int=2**126 + 1))
RUN_2 = RunId(uuid.UUID(int=2))
BIG_SEQUENCES = (2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1)
SEQUENCES = (0, 1, 5, *BIG_SEQUENCES)

SESSION_1 = SessionId(uuid.UUID(int=2**125 + 11))
SESSION_2 = SessionId(uuid.UUID(int=3))

UNREADABLE_SNAPSHOTS = (b"", b"not json", b"[]", b'{"id": 5}')


def delta(session_id: SessionId = SESSION_1, **extra: Any) -> SessionDelta:
    return SessionDelta(session_json(session_id, **extra))


stored = partial(_values.stored, now=EPOCH)


def receipt(run_id: RunId = RUN_1, sequence: int = 5, message_count: int = 0) -> RunBoundaryReceipt:
    """This module's receipts: keyed by run first, no messages unless given."""
    return _values.receipt(
        sequence,
        run_id,
        boundary=RunApplyBoundary.RUN_CHECKPOINT,
        contributing_input_ids=(ID_LOW,),
        conversation_digest="digest",
        message_count=message_count,
    )


def ops(epoch_id: str) -> PersistedOpsSnapshot:
    return PersistedOpsSnapshot(epoch_id=epoch_id, authority_state={"epoch": epoch_id})


def observe(model: ReferenceModel) -> dict[str, Any]:
    """Every public read over the ids this module uses: the observable state."""
    seen: dict[str, Any] = {"oauth": model.load_auth_oauth_flow_snapshot()}
    for rt in RUNTIMES:
        seen[f"{rt}/states"] = model.load_input_states(rt)
        seen[f"{rt}/session"] = model.load_session_snapshot(rt)
        seen[f"{rt}/runtime_state"] = model.load_runtime_state(rt)
        seen[f"{rt}/ops"] = model.load_ops_lifecycle(rt)
        for input_id in INPUT_IDS:
            seen[f"{rt}/state/{input_id}"] = model.load_input_state(rt, input_id)
        for run_id in (RUN_1, RUN_2):
            for sequence in SEQUENCES:
                seen[f"{rt}/receipt/{run_id}/{sequence}"] = model.load_boundary_receipt(
                    rt, run_id, sequence
                )
    return seen


def populated_model(oauth: bytes | None = b"oauth") -> ReferenceModel:
    """A model holding something of every kind under RT_A (and `oauth`)."""
    model = ReferenceModel()
    model.atomic_apply(RT_A, delta(SESSION_1), receipt(RUN_1, 5), [stored(ID_MID)])
    model.commit_machine_lifecycle(
        RT_A,
        machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE),
        [stored(ID_LOW)],
    )
    model.persist_ops_lifecycle(RT_A, ops("epoch-1"))
    if oauth is not None:
        model.persist_auth_oauth_flow_snapshot(oauth)
    return model


# --- ReferenceModel: values read back ------------------------------------------------------


def test_a_fresh_model_reads_nothing_and_uses_the_meerkat_codec() -> None:
    model = ReferenceModel()
    assert isinstance(model.session_codec, ma.MeerkatSessionCodec)
    for key, value in observe(model).items():
        assert value == ([] if key.endswith("/states") else None), key
    assert model.runtimes == {}


def test_every_write_reads_back() -> None:
    model = ReferenceModel()

    model.persist_auth_oauth_flow_snapshot(b"flow")
    assert model.load_auth_oauth_flow_snapshot() == b"flow"

    model.commit_session_snapshot(RT_A, delta(SESSION_1, messages=[]))
    assert model.load_session_snapshot(RT_A) == session_json(SESSION_1, messages=[])

    model.persist_input_state(RT_A, stored(ID_MID))
    assert model.load_input_state(RT_A, ID_MID) == stored(ID_MID)
    assert model.load_input_states(RT_A) == [stored(ID_MID)]

    model.atomic_apply(RT_A, delta(SESSION_2), receipt(RUN_2, 7), [stored(ID_LOW)])
    assert model.load_session_snapshot(RT_A) == session_json(SESSION_2)
    assert model.load_boundary_receipt(RT_A, RUN_2, 7) == receipt(RUN_2, 7)
    assert model.load_input_state(RT_A, ID_LOW) == stored(ID_LOW)

    commit = machine_transition(RuntimeState.IDLE, RuntimeState.RUNNING)
    model.commit_machine_lifecycle(RT_A, commit, [stored(ID_HIGH)])
    assert model.load_runtime_state(RT_A) is RuntimeState.RUNNING
    assert model.load_input_state(RT_A, ID_HIGH) == stored(ID_HIGH)

    model.persist_ops_lifecycle(RT_A, ops("epoch-1"))
    assert model.load_ops_lifecycle(RT_A) == ops("epoch-1")

    assert model.load_input_states(RT_A) == [stored(ID_LOW), stored(ID_MID), stored(ID_HIGH)]


def test_writes_return_none() -> None:
    model = ReferenceModel()
    commit = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    # The machine compares results: a store's writes return None, so must the model's.
    writes: list[Callable[[], object]] = [
        lambda: model.persist_auth_oauth_flow_snapshot(b"x"),
        lambda: model.update_auth_oauth_flow_snapshot(Increment()),
        lambda: model.commit_session_snapshot(RT_A, delta()),
        lambda: model.atomic_apply(RT_A, None, receipt(), []),
        lambda: model.persist_input_state(RT_A, stored(ID_LOW)),
        lambda: model.commit_machine_lifecycle(RT_A, commit, []),
        lambda: model.persist_ops_lifecycle(RT_A, ops("e")),
    ]
    for write in writes:
        assert write() is None


def test_upserts_replace_by_input_id() -> None:
    model = ReferenceModel()
    model.persist_input_state(RT_A, stored(ID_MID, InputLifecycleState.QUEUED))
    model.persist_input_state(RT_A, stored(ID_MID, InputLifecycleState.STAGED))
    assert model.load_input_states(RT_A) == [stored(ID_MID, InputLifecycleState.STAGED)]
    model.atomic_apply(RT_A, None, receipt(), [stored(ID_MID, InputLifecycleState.APPLIED)])
    assert model.load_input_states(RT_A) == [stored(ID_MID, InputLifecycleState.APPLIED)]
    commit = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    model.commit_machine_lifecycle(RT_A, commit, [stored(ID_MID, InputLifecycleState.CONSUMED)])
    assert model.load_input_states(RT_A) == [stored(ID_MID, InputLifecycleState.CONSUMED)]


def test_reads_return_copies_the_caller_may_change() -> None:
    model = ReferenceModel()
    updates = [stored(ID_MID)]
    model.atomic_apply(RT_A, None, receipt(), updates)
    updates.append(stored(ID_LOW))
    model.load_input_states(RT_A).append(stored(ID_HIGH))
    assert model.load_input_states(RT_A) == [stored(ID_MID)]


# --- ReferenceModel: receipts --------------------------------------------------------------


def test_a_duplicate_receipt_key_is_a_conflict_and_nothing_of_the_call_applies() -> None:
    model = ReferenceModel()
    model.atomic_apply(RT_A, delta(SESSION_1), receipt(RUN_1, 5, message_count=1), [stored(ID_MID)])
    before = observe(model)

    with pytest.raises(ReceiptConflict, match="rt-a") as info:
        model.atomic_apply(
            RT_A,
            delta(SESSION_2),
            receipt(RUN_1, 5, message_count=2),  # same key, other content
            [stored(ID_LOW), stored(ID_MID, InputLifecycleState.QUEUED)],
        )

    assert isinstance(info.value, WriteFailed)
    assert observe(model) == before
    assert model.load_session_snapshot(RT_A) == session_json(SESSION_1)
    assert model.load_boundary_receipt(RT_A, RUN_1, 5) == receipt(RUN_1, 5, message_count=1)
    assert model.load_input_states(RT_A) == [stored(ID_MID)]


def test_an_identical_receipt_is_a_conflict_too() -> None:
    model = ReferenceModel()
    model.atomic_apply(RT_A, None, receipt(), [])
    with pytest.raises(ReceiptConflict):
        model.atomic_apply(RT_A, None, receipt(), [])


def test_receipt_keys_are_per_runtime_run_and_sequence() -> None:
    model = ReferenceModel()
    model.atomic_apply(RT_A, None, receipt(RUN_1, 5, message_count=1), [])
    model.atomic_apply(RT_B, None, receipt(RUN_1, 5, message_count=2), [])
    model.atomic_apply(RT_A, None, receipt(RUN_2, 5, message_count=3), [])
    model.atomic_apply(RT_A, None, receipt(RUN_1, 6, message_count=4), [])
    assert model.load_boundary_receipt(RT_A, RUN_1, 5) == receipt(RUN_1, 5, message_count=1)
    assert model.load_boundary_receipt(RT_B, RUN_1, 5) == receipt(RUN_1, 5, message_count=2)
    assert model.load_boundary_receipt(RT_A, RUN_2, 5) == receipt(RUN_2, 5, message_count=3)
    assert model.load_boundary_receipt(RT_A, RUN_1, 6) == receipt(RUN_1, 6, message_count=4)
    assert model.load_boundary_receipt(RT_B, RUN_2, 5) is None


def test_sequences_at_and_above_2_63_stay_distinct() -> None:
    model = ReferenceModel()
    for count, sequence in enumerate(BIG_SEQUENCES):
        model.atomic_apply(RT_A, None, receipt(RUN_1, sequence, message_count=count), [])
    for count, sequence in enumerate(BIG_SEQUENCES):
        got = model.load_boundary_receipt(RT_A, RUN_1, sequence)
        assert got == receipt(RUN_1, sequence, message_count=count)
    with pytest.raises(ReceiptConflict):
        model.atomic_apply(RT_A, None, receipt(RUN_1, 2**63 + 1, message_count=9), [])


def test_commit_session_snapshot_writes_no_receipt() -> None:
    model = ReferenceModel()
    model.commit_session_snapshot(RT_A, delta())
    assert all(model.load_boundary_receipt(RT_A, RUN_1, s) is None for s in SEQUENCES)
    model.atomic_apply(RT_A, None, receipt(RUN_1, 0), [])  # no conflict


# --- ReferenceModel: session snapshots and keys -----------------------------------------------


def test_session_key_mismatch_names_both_ids_and_applies_nothing() -> None:
    model = populated_model()
    before = observe(model)

    with pytest.raises(SessionKeyMismatch) as info:
        model.atomic_apply(RT_A, delta(SESSION_2), receipt(RUN_2, 9), [stored(ID_HIGH)], SESSION_1)

    assert info.value.expected == SESSION_1
    assert info.value.actual == SESSION_2
    assert not isinstance(info.value, WriteFailed)
    assert observe(model) == before
    # The receipt was not taken: the corrected call succeeds.
    model.atomic_apply(RT_A, delta(SESSION_2), receipt(RUN_2, 9), [stored(ID_HIGH)], SESSION_2)
    assert model.load_boundary_receipt(RT_A, RUN_2, 9) == receipt(RUN_2, 9)


def test_a_matching_session_key_only_validates_and_never_creates_an_alias() -> None:
    model = ReferenceModel()
    model.atomic_apply(RT_A, delta(SESSION_1), receipt(), [], SESSION_1)
    assert model.load_session_snapshot(RT_A) == session_json(SESSION_1)
    assert list(model.runtimes) == [RT_A]
    for alias in (str(SESSION_1), str(SESSION_1.value.hex)):
        assert model.load_session_snapshot(LogicalRuntimeId(alias)) is None


def test_without_a_delta_the_session_key_is_not_checked() -> None:
    model = ReferenceModel()
    model.commit_session_snapshot(RT_A, delta(SESSION_1))
    model.atomic_apply(RT_A, None, receipt(), [stored(ID_LOW)], SESSION_2)
    assert model.load_session_snapshot(RT_A) == session_json(SESSION_1)
    assert model.load_input_states(RT_A) == [stored(ID_LOW)]


def test_only_the_id_of_a_session_snapshot_is_read() -> None:
    model = ReferenceModel()
    snapshot = json.dumps({"id": str(SESSION_1), "messages": "anything", "x": [1, None]}).encode()
    model.commit_session_snapshot(RT_A, SessionDelta(snapshot))
    assert model.load_session_snapshot(RT_A) == snapshot


@pytest.mark.parametrize("key", [None, SESSION_1], ids=["no-key", "key"])
@pytest.mark.parametrize("snapshot", UNREADABLE_SNAPSHOTS)
def test_an_unreadable_snapshot_fails_atomic_apply_with_write_failed(
    snapshot: bytes, key: SessionId | None
) -> None:
    model = populated_model()
    before = observe(model)
    with pytest.raises(WriteFailed, match="rt-a") as info:
        model.atomic_apply(RT_A, SessionDelta(snapshot), receipt(RUN_2, 1), [stored(ID_HIGH)], key)
    assert type(info.value) is WriteFailed  # not a SessionKeyMismatch, not a subclass
    assert observe(model) == before


@pytest.mark.parametrize("snapshot", UNREADABLE_SNAPSHOTS)
def test_an_unreadable_snapshot_fails_commit_session_snapshot_with_write_failed(
    snapshot: bytes,
) -> None:
    model = populated_model()
    before = observe(model)
    with pytest.raises(WriteFailed, match="rt-a") as info:
        model.commit_session_snapshot(RT_A, SessionDelta(snapshot))
    assert type(info.value) is WriteFailed
    assert isinstance(info.value.__cause__, ValueError)  # chained to the codec's reason
    assert observe(model) == before


@pytest.mark.parametrize("snapshot", UNREADABLE_SNAPSHOTS)
def test_an_unreadable_snapshot_under_a_new_runtime_creates_nothing(snapshot: bytes) -> None:
    model = ReferenceModel()
    with pytest.raises(WriteFailed):
        model.commit_session_snapshot(RT_B, SessionDelta(snapshot))
    with pytest.raises(WriteFailed):
        model.atomic_apply(RT_B, SessionDelta(snapshot), receipt(), [stored(ID_LOW)])
    assert model.runtimes == {}
    assert model.load_boundary_receipt(RT_B, RUN_1, 5) is None


def test_checks_run_in_order_codec_then_key_then_receipt() -> None:
    """When several checks fail, every backend must raise the same error (the
    machine compares error classes): the model checks the snapshot, then the
    key, then the receipt, in the order docs/semantics.md lists them."""
    model = ReferenceModel()
    model.atomic_apply(RT_A, None, receipt(), [])
    with pytest.raises(WriteFailed) as info:
        model.atomic_apply(RT_A, SessionDelta(b"[]"), receipt(), [], SESSION_1)
    assert type(info.value) is WriteFailed
    with pytest.raises(SessionKeyMismatch):
        model.atomic_apply(RT_A, delta(SESSION_2), receipt(), [], SESSION_1)
    with pytest.raises(ReceiptConflict):
        model.atomic_apply(RT_A, delta(SESSION_1), receipt(), [], SESSION_1)


# --- ReferenceModel: input states --------------------------------------------------------


@pytest.mark.parametrize("via", ["atomic_apply", "commit_machine_lifecycle"])
def test_later_entries_in_one_call_win(via: str) -> None:
    model = ReferenceModel()
    entries = [
        stored(ID_MID, InputLifecycleState.QUEUED),
        stored(ID_LOW, InputLifecycleState.QUEUED),
        stored(ID_MID, InputLifecycleState.STAGED, attempts=1),
        stored(ID_MID, InputLifecycleState.APPLIED, attempts=2),
    ]
    if via == "atomic_apply":
        model.atomic_apply(RT_A, None, receipt(), entries)
    else:
        commit = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
        model.commit_machine_lifecycle(RT_A, commit, entries)
    assert model.load_input_states(RT_A) == [
        stored(ID_LOW, InputLifecycleState.QUEUED),
        stored(ID_MID, InputLifecycleState.APPLIED, attempts=2),
    ]


def test_load_input_states_is_sorted_by_uuid_order_not_insertion_order() -> None:
    model = ReferenceModel()
    model.persist_input_state(RT_A, stored(ID_MID))
    model.atomic_apply(RT_A, None, receipt(), [stored(ID_LOW), stored(ID_HIGH)])
    model.persist_input_state(RT_A, stored(ID_LOWER_MID))

    ids = [s.state.input_id for s in model.load_input_states(RT_A)]
    assert ids != list(INPUT_IDS)  # the insertion order
    assert ids == [ID_LOW, ID_LOWER_MID, ID_MID, ID_HIGH]
    assert [i.value.int for i in ids] == sorted(i.value.int for i in INPUT_IDS)
    # ... which is also the order of the canonical strings (docs/semantics.md).
    assert [str(i) for i in ids] == sorted(str(i) for i in INPUT_IDS)


@given(st.lists(strategies.input_ids(), max_size=8))
@settings(max_examples=25)
def test_load_input_states_sorts_any_ids(ids: list[InputId]) -> None:
    model = ReferenceModel()
    for input_id in ids:
        model.persist_input_state(RT_A, stored(input_id))
    loaded = [s.state.input_id for s in model.load_input_states(RT_A)]
    assert loaded == sorted(set(ids), key=lambda i: i.value)
    assert [str(i) for i in loaded] == sorted(str(i) for i in set(ids))


def test_an_unknown_runtime_reads_empty() -> None:
    model = populated_model()
    unknown = LogicalRuntimeId("never-written")
    assert model.load_input_states(unknown) == []
    assert model.load_input_state(unknown, ID_MID) is None
    assert model.load_boundary_receipt(unknown, RUN_1, 5) is None
    assert model.load_session_snapshot(unknown) is None
    assert model.load_runtime_state(unknown) is None
    assert model.load_ops_lifecycle(unknown) is None
    assert unknown not in model.runtimes  # reads create nothing


# --- ReferenceModel: isolation ----------------------------------------------------------


def _writes_under(rt: LogicalRuntimeId) -> dict[str, Callable[[ReferenceModel], None]]:
    commit = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    return {
        "commit_session_snapshot": lambda m: m.commit_session_snapshot(rt, delta(SESSION_2)),
        "atomic_apply": lambda m: m.atomic_apply(
            rt, delta(SESSION_2), receipt(RUN_2, 2**63), [stored(ID_HIGH)], SESSION_2
        ),
        "persist_input_state": lambda m: m.persist_input_state(rt, stored(ID_HIGH)),
        "commit_machine_lifecycle": lambda m: m.commit_machine_lifecycle(
            rt, commit, [stored(ID_HIGH)]
        ),
        "persist_ops_lifecycle": lambda m: m.persist_ops_lifecycle(rt, ops("epoch-b")),
    }


@pytest.mark.parametrize("write", sorted(_writes_under(RT_A)))
def test_runtimes_are_isolated(write: str) -> None:
    model = populated_model()
    before_a = {k: v for k, v in observe(model).items() if k.startswith(f"{RT_A}/")}
    before_b = {k: v for k, v in observe(model).items() if k.startswith(f"{RT_B}/")}

    _writes_under(RT_B)[write](model)
    after = observe(model)
    assert {k: v for k, v in after.items() if k.startswith(f"{RT_A}/")} == before_a
    assert {k: v for k, v in after.items() if k.startswith(f"{RT_B}/")} != before_b

    # ... and the other way round, on a fresh model.
    model = ReferenceModel()
    _writes_under(RT_A)[write](model)
    assert all(
        value == ([] if key.endswith("/states") else None)
        for key, value in observe(model).items()
        if key.startswith(f"{RT_B}/")
    )


# --- ReferenceModel: runtime state and ops snapshot ----------------------------------------


def test_runtime_state_is_written_only_by_commit_machine_lifecycle() -> None:
    model = ReferenceModel()
    others = {k: w for k, w in _writes_under(RT_A).items() if k != "commit_machine_lifecycle"}
    for write in others.values():
        write(model)
    assert model.load_runtime_state(RT_A) is None

    commit = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    model.commit_machine_lifecycle(RT_A, commit, [stored(ID_LOW), stored(ID_MID)])
    assert model.load_runtime_state(RT_A) is RuntimeState.IDLE
    assert model.load_input_state(RT_A, ID_LOW) == stored(ID_LOW)
    assert model.load_input_state(RT_A, ID_MID) == stored(ID_MID)


def test_commit_machine_lifecycle_does_not_compare_with_the_stored_state() -> None:
    model = ReferenceModel()
    model.commit_machine_lifecycle(
        RT_A, machine_transition(RuntimeState.RETIRED, RuntimeState.RUNNING), []
    )
    assert model.load_runtime_state(RT_A) is RuntimeState.RUNNING
    model.commit_machine_lifecycle(
        RT_A, machine_transition(RuntimeState.STOPPED, RuntimeState.DESTROYED), []
    )
    assert model.load_runtime_state(RT_A) is RuntimeState.DESTROYED
    assert model.load_input_states(RT_A) == []


def test_the_ops_snapshot_is_replaced_per_runtime() -> None:
    model = ReferenceModel()
    model.persist_ops_lifecycle(RT_A, ops("a1"))
    model.persist_ops_lifecycle(RT_B, ops("b1"))
    model.persist_ops_lifecycle(RT_A, ops("a2"))
    assert model.load_ops_lifecycle(RT_A) == ops("a2")
    assert model.load_ops_lifecycle(RT_B) == ops("b1")


# --- ReferenceModel: OAuth flow snapshot ---------------------------------------------------


def test_the_oauth_snapshot_is_store_wide() -> None:
    model = ReferenceModel()
    model.persist_auth_oauth_flow_snapshot(b"flow")
    model.update_auth_oauth_flow_snapshot(Append(b"+"))
    assert model.load_auth_oauth_flow_snapshot() == b"flow+"
    assert model.runtimes == {}
    model.commit_session_snapshot(RT_A, delta())
    assert model.load_auth_oauth_flow_snapshot() == b"flow+"


def test_the_updater_sees_the_current_value() -> None:
    model = ReferenceModel()
    seen: list[bytes | None] = []

    def record(current: bytes | None) -> bytes:
        seen.append(current)
        return (current or b"") + b"."

    model.update_auth_oauth_flow_snapshot(record)
    model.update_auth_oauth_flow_snapshot(record)
    model.persist_auth_oauth_flow_snapshot(b"reset")
    model.update_auth_oauth_flow_snapshot(record)
    assert seen == [None, b".", b"reset"]
    assert model.load_auth_oauth_flow_snapshot() == b"reset."


@pytest.mark.parametrize("initial", [None, b"7"])
def test_the_updaters_exception_propagates_unchanged_and_nothing_changes(
    initial: bytes | None,
) -> None:
    model = populated_model(oauth=initial)
    before = observe(model)
    error = UpdaterFailed("mine")

    def fail(current: bytes | None) -> bytes:
        raise error

    with pytest.raises(UpdaterFailed) as info:
        model.update_auth_oauth_flow_snapshot(fail)
    assert info.value is error
    assert observe(model) == before


@pytest.mark.parametrize("result", ["text", bytearray(b"ba"), memoryview(b"mv"), None, 1])
def test_an_updater_returning_non_bytes_is_a_type_error_and_nothing_changes(
    result: object,
) -> None:
    model = populated_model()
    before = observe(model)
    with pytest.raises(TypeError, match="bytes"):
        model.update_auth_oauth_flow_snapshot(lambda current: result)  # type: ignore[arg-type,return-value]
    assert observe(model) == before


# --- ReferenceModel: a custom session codec ------------------------------------------------


class FirstSixteenBytes:
    """A codec whose snapshots start with the 16 raw bytes of the session id."""

    def session_id(self, snapshot: bytes) -> SessionId:
        if len(snapshot) < 16:
            raise ValueError("too short")
        return SessionId(uuid.UUID(bytes=snapshot[:16]))


def test_a_custom_session_codec_is_used() -> None:
    model = ReferenceModel(FirstSixteenBytes())
    raw = SESSION_2.value.bytes + b"not json at all"

    model.commit_session_snapshot(RT_A, SessionDelta(raw))
    assert model.load_session_snapshot(RT_A) == raw
    model.atomic_apply(RT_A, SessionDelta(raw), receipt(), [], SESSION_2)

    # Meerkat JSON is what this codec cannot read (too short) ...
    with pytest.raises(WriteFailed):
        model.commit_session_snapshot(RT_A, SessionDelta(b'{"id":1}'))
    # ... or reads as another id.
    with pytest.raises(SessionKeyMismatch) as info:
        model.atomic_apply(RT_A, delta(SESSION_2), receipt(RUN_2), [], SESSION_2)
    assert info.value.actual == SessionId(uuid.UUID(bytes=session_json(SESSION_2)[:16]))
    assert model.load_session_snapshot(RT_A) == raw


@pytest.mark.parametrize(
    "answer",
    [RuntimeError("codec bug"), uuid.UUID(int=3), str(SESSION_1), None],
    ids=["raises", "uuid", "str", "none"],
)
def test_any_codec_failure_is_write_failed(answer: object) -> None:
    class Broken:
        def session_id(self, snapshot: bytes) -> SessionId:
            if isinstance(answer, Exception):
                raise answer
            return answer  # type: ignore[return-value]

    model = ReferenceModel(Broken())
    with pytest.raises(WriteFailed) as info:
        model.commit_session_snapshot(RT_A, delta())
    assert type(info.value) is WriteFailed
    if isinstance(answer, Exception):
        assert info.value.__cause__ is answer
    with pytest.raises(WriteFailed):
        model.atomic_apply(RT_A, delta(), receipt(), [stored(ID_LOW)], SESSION_1)
    assert model.runtimes == {}


# --- the model module stays plain Python ------------------------------------------------


def _imported_modules(source: str) -> set[str]:
    """Absolute names of every module `source` (a module of
    meerkat_actor.testing) imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = ["meerkat_actor", "testing"][: 2 - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_the_model_imports_neither_trio_nor_pyrsistent_nor_the_core() -> None:
    imported = _imported_modules(MODEL_SOURCE.read_text(encoding="utf-8"))
    assert "meerkat_actor._errors" in imported  # the resolver sees relative imports
    forbidden = ("trio", "pyrsistent", "meerkat_actor._core", "hypothesis")
    offending = {
        name for name in imported for bad in forbidden if name == bad or name.startswith(bad + ".")
    }
    assert not offending, f"_model.py must stay plain Python, but imports {sorted(offending)}"


def test_the_import_resolver_catches_every_form() -> None:
    source = (
        "import trio\nimport pyrsistent as p\nfrom .. import _core\n"
        "from .._core import x\ndef f():\n    from trio import lowlevel\n"
    )
    imported = _imported_modules(source)
    assert {"trio", "pyrsistent", "meerkat_actor._core", "trio.lowlevel"} <= imported


def test_the_model_is_small_enough_to_read_in_one_sitting() -> None:
    lines = MODEL_SOURCE.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 250, f"_model.py has {len(lines)} lines"


# --- the OAuth updaters ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (None, b"1"),
        (b"", b"1"),
        (b"0", b"1"),
        (b"41", b"42"),
        (b"999", b"1000"),
        (b"not a number", b"1"),
        (b"\xff\xfe", b"1"),
    ],
)
def test_increment_counts_in_decimal(current: bytes | None, expected: bytes) -> None:
    assert Increment()(current) == expected


@given(st.one_of(st.none(), st.binary(max_size=12)))
@settings(max_examples=25)
def test_increment_always_returns_a_decimal_count(current: bytes | None) -> None:
    result = Increment()(current)
    assert isinstance(result, bytes)
    assert result == str(int(result)).encode()  # a plain decimal number
    assert Increment()(result) == str(int(result) + 1).encode()


@given(st.one_of(st.none(), st.binary(max_size=8)), st.binary(min_size=1, max_size=3))
@settings(max_examples=25)
def test_append_appends_its_suffix(current: bytes | None, suffix: bytes) -> None:
    assert Append(suffix)(current) == (current or b"") + suffix


@pytest.mark.parametrize("current", [None, b"", b"abc"])
def test_raise_error_raises_updater_failed(current: bytes | None) -> None:
    with pytest.raises(UpdaterFailed, match="updater refused"):
        RaiseError()(current)


def test_updater_failed_is_not_a_store_error() -> None:
    # The store must hand it on unchanged, not wrap it in a RuntimeStoreError.
    assert issubclass(UpdaterFailed, Exception)
    assert not issubclass(UpdaterFailed, ma.RuntimeStoreError)
    assert "UpdaterFailed" in kit.__all__


@pytest.mark.parametrize("current", [None, b"", b"abc"])
def test_return_not_bytes_returns_a_str(current: bytes | None) -> None:
    result: object = ReturnNotBytes()(current)
    assert type(result) is str


def test_mark_missing_tells_none_from_empty() -> None:
    assert MarkMissing()(None) == b"<none>"
    assert MarkMissing()(b"") == b"."
    assert MarkMissing()(b"ab") == b"ab."


def test_return_bytearray_and_return_awaitable_return_no_bytes() -> None:
    assert type(ReturnBytearray()(None)) is bytearray
    later: object = ReturnAwaitable()(b"x")
    assert inspect.isawaitable(later)
    assert not inspect.iscoroutine(later)  # never awaited: nothing may warn

    async def awaited() -> object:
        return await later  # type: ignore[misc]

    assert trio.run(awaited) == b"awaited"


@pytest.mark.parametrize("update", [ReturnBytearray(), ReturnAwaitable()])
def test_the_shipped_store_refuses_an_updater_result_that_is_not_bytes(
    update: Callable[[bytes | None], bytes],
) -> None:
    async def main() -> None:
        async with ma.open_store() as store:
            await store.persist_auth_oauth_flow_snapshot(b"kept")
            with pytest.raises(TypeError, match="bytes"):
                await store.update_auth_oauth_flow_snapshot(update)
            assert await store.load_auth_oauth_flow_snapshot() == b"kept"

    trio.run(main)


_UPDATER_NAMESPACE = {
    "Increment": Increment,
    "Append": Append,
    "MarkMissing": MarkMissing,
    "RaiseError": RaiseError,
    "ReturnNotBytes": ReturnNotBytes,
    "ReturnBytearray": ReturnBytearray,
    "ReturnAwaitable": ReturnAwaitable,
}


def _outcome(update: Callable[[bytes | None], bytes], current: bytes | None) -> object:
    try:
        return update(current)
    except UpdaterFailed as exc:
        return ("raised", str(exc))


@given(
    st.one_of(
        st.just(Increment()),
        st.binary(max_size=6).map(Append),
        st.just(RaiseError()),
        st.just(ReturnNotBytes()),
        st.sampled_from((MarkMissing(), ReturnBytearray())),
    )
)
@settings(max_examples=25)
def test_updater_reprs_are_runnable(update: Callable[[bytes | None], bytes]) -> None:
    again = eval(repr(update), dict(_UPDATER_NAMESPACE))
    assert type(again) is type(update)
    assert repr(again) == repr(update)
    for current in (None, b"", b"12", b"\x00'\"\\"):
        assert _outcome(again, current) == _outcome(update, current)


def test_return_awaitable_repr_is_runnable() -> None:
    again = eval(repr(ReturnAwaitable()), dict(_UPDATER_NAMESPACE))
    assert again == ReturnAwaitable()


# --- mismatch messages ----------------------------------------------------------------------


class Lying:
    """The in-memory store, except that `name` answers `wrong(real_method, *args)`."""

    def __init__(
        self,
        store: ma.RuntimeStore,
        name: str,
        wrong: Callable[..., Awaitable[Any]],
    ) -> None:
        self._store = store
        self._name = name
        self._wrong = wrong

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if name != self._name:
            return real

        async def lie(*args: Any, **kwargs: Any) -> Any:
            return await self._wrong(partial(real, **kwargs), *args)

        return lie


def lying_machine(name: str, wrong: Callable[..., Awaitable[Any]]) -> type[RuntimeStoreMachine]:
    @asynccontextmanager
    async def open_lying() -> AsyncIterator[Any]:
        async with ma.open_store() as store:
            yield Lying(store, name, wrong)

    class LyingMachine(RuntimeStoreMachine):
        open_store = staticmethod(open_lying)

    return LyingMachine


async def reversed_states(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return list(reversed(await real(*args)))


async def forgets(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    await real(*args)
    return None


async def accepts_anything(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    try:
        return await real(*args)
    except WriteFailed:
        return None


async def _invents_in_rt_b(
    lying: dict[str, bool], real: Callable[..., Awaitable[Any]], *args: Any
) -> Any:
    """`load_input_state` in RT_B answers a state nobody wrote, once `lying["on"]`."""
    runtime_id = args[0] if args else real.keywords["runtime_id"]  # type: ignore[attr-defined]
    if lying["on"] and runtime_id == RT_B:
        return stored(ID_MID)
    return await real(*args)


def test_point_reads_where_no_step_wrote_wait_for_the_next_full_check() -> None:
    """The invariant makes the reads of one input state in the runtimes the
    step wrote to; in the others at every fourth check (and after restarts,
    and at teardown). A lie there is found by the fourth check."""
    lying = {"on": False}
    machine = lying_machine("load_input_state", partial(_invents_in_rt_b, lying))()
    try:
        machine.whole_state_matches_model()  # the first check is a full one
        lying["on"] = True
        for n in (ID_LOW, ID_HIGH):
            machine.persist_input_state(RT_A, stored(n))
            machine.whole_state_matches_model()  # checks 2 and 3: RT_A only
        machine.persist_input_state(RT_A, stored(ID_LOWER_MID))
        with pytest.raises(AssertionError) as info:
            machine.whole_state_matches_model()  # check 4: every runtime
    finally:
        machine.teardown()  # no second report of the same failure
    message = str(info.value)
    assert message.startswith("state differs at load_input_state("), message
    assert "RUNTIME_IDS[1]" in message


def test_teardown_checks_the_whole_state_once_more() -> None:
    lying = {"on": False}
    machine = lying_machine("load_input_state", partial(_invents_in_rt_b, lying))()
    machine.whole_state_matches_model()
    lying["on"] = True
    machine.persist_input_state(RT_A, stored(ID_LOW))
    machine.whole_state_matches_model()
    with pytest.raises(AssertionError, match=r"^state differs at load_input_state\("):
        machine.teardown()
    assert not machine.bridge.running  # closed all the same


def test_a_wrong_read_in_the_invariant_names_the_read_and_both_answers() -> None:
    machine = lying_machine("load_input_states", reversed_states)()
    rt = RT_A
    low, high = stored(ID_LOW), stored(ID_HIGH)
    try:
        machine.persist_input_state(rt, high)
        machine.whole_state_matches_model()  # one state: reversed is right
        machine.persist_input_state(rt, low)
        with pytest.raises(AssertionError) as info:
            machine.whole_state_matches_model()
    finally:
        machine.teardown()
    message = str(info.value)
    # The machine names pool ids by their pool (RT_A is RUNTIME_IDS[0]).
    assert rt == kit.RUNTIME_IDS[0]
    # Every other check passes arguments by keyword.
    assert message.startswith(
        (
            "state differs at load_input_states(RUNTIME_IDS[0]):",
            "state differs at load_input_states(runtime_id=RUNTIME_IDS[0]):",
        )
    ), message
    assert f"the store returned {[high, low]!r}" in message
    assert f"the model returned {[low, high]!r}" in message


def test_a_wrong_answer_to_a_rule_names_the_operation_arguments_and_both_answers() -> None:
    machine = lying_machine("load_input_state", forgets)()
    rt = RT_B
    state = stored(ID_MID, InputLifecycleState.QUEUED)
    try:
        machine.persist_input_state(rt, state)
        with pytest.raises(AssertionError) as info:
            machine.load_input_state(rt, ID_MID)
    finally:
        machine.teardown()
    message = str(info.value)
    assert (rt, ID_MID) == (kit.RUNTIME_IDS[1], kit.INPUT_IDS[0])
    # The machine's second call (this one) passes its arguments by keyword.
    assert message == (
        "load_input_state(runtime_id=RUNTIME_IDS[1], input_id=INPUT_IDS[0]):"
        f" the store returned None, the model returned {state!r}"
    )


def test_a_missing_error_names_the_error_the_model_raised() -> None:
    machine = lying_machine("commit_session_snapshot", accepts_anything)()
    rt = RT_A
    bad = SessionDelta(b"not json")
    try:
        with pytest.raises(AssertionError) as info:
            machine.commit_session_snapshot(rt, bad)
    finally:
        machine.teardown()
    message = str(info.value)
    assert message.startswith(f"commit_session_snapshot(RUNTIME_IDS[0], {bad!r}):")
    assert "the store returned None" in message
    assert "the model raised WriteFailed: runtime rt-a" in message


def test_an_honest_store_passes_the_same_steps() -> None:
    machine = lying_machine("nothing", forgets)()
    rt = RT_A
    try:
        machine.persist_input_state(rt, stored(ID_HIGH))
        machine.persist_input_state(rt, stored(ID_LOW))
        machine.commit_session_snapshot(rt, SessionDelta(b"not json"))
        machine.atomic_apply(rt, delta(SESSION_1), receipt(RUN_1, 2**63), [], SESSION_2)
        machine.atomic_apply(rt, None, receipt(RUN_1, 2**63 + 1), [stored(ID_MID)], None)
        machine.update_auth_oauth_flow_snapshot(RaiseError())
        machine.update_auth_oauth_flow_snapshot(ReturnNotBytes())
        machine.update_auth_oauth_flow_snapshot(Increment())
        machine.load_input_state(rt, ID_LOW)
        machine.load_boundary_receipt(rt, RUN_1, 2**63 + 1)
        machine.whole_state_matches_model()
    finally:
        machine.teardown()
    assert machine.model.load_boundary_receipt(rt, RUN_1, 2**63 + 1) is not None
    assert machine.model.load_auth_oauth_flow_snapshot() == b"1"


async def _both(store: ma.RuntimeStore, model: ReferenceModel, name: str, *args: Any) -> None:
    getattr(model, name)(*args)
    await getattr(store, name)(*args)


async def test_assert_store_matches_model_passes_for_the_same_writes() -> None:
    model = ReferenceModel()
    fresh = LogicalRuntimeId("outside-the-pools")
    commit = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    async with ma.open_store() as store:
        await assert_store_matches_model(store, model)
        await _both(store, model, "persist_auth_oauth_flow_snapshot", b"flow")
        await _both(store, model, "update_auth_oauth_flow_snapshot", Append(b"!"))
        await _both(store, model, "commit_session_snapshot", RT_A, delta())
        await _both(store, model, "persist_input_state", RT_A, stored(ID_HIGH))
        await _both(
            store,
            model,
            "atomic_apply",
            fresh,
            delta(SESSION_2),
            receipt(RUN_2, 2**64 - 1),
            [stored(ID_MID), stored(ID_LOW)],
            SESSION_2,
        )
        await _both(store, model, "commit_machine_lifecycle", RT_A, commit, [stored(ID_LOW)])
        await _both(store, model, "persist_ops_lifecycle", fresh, ops("epoch"))
        await assert_store_matches_model(store, model)


@pytest.mark.parametrize(
    ("model_only", "read"),
    [
        (lambda m: m.persist_input_state(RT_A, stored(ID_LOW)), "load_input_states"),
        (lambda m: m.commit_session_snapshot(RT_B, delta()), "load_session_snapshot"),
        (lambda m: m.persist_auth_oauth_flow_snapshot(b"x"), "load_auth_oauth_flow_snapshot"),
        (
            lambda m: m.atomic_apply(LogicalRuntimeId("fresh"), None, receipt(RUN_2, 2**63), []),
            "load_boundary_receipt",
        ),
        (lambda m: m.persist_ops_lifecycle(RT_A, ops("e")), "load_ops_lifecycle"),
        (
            lambda m: m.commit_machine_lifecycle(
                RT_A, machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE), []
            ),
            "load_runtime_state",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
async def test_assert_store_matches_model_fails_where_the_state_differs(
    model_only: Callable[[ReferenceModel], None], read: str
) -> None:
    model = ReferenceModel()
    async with ma.open_store() as store:
        await _both(store, model, "persist_input_state", RT_A, stored(ID_HIGH))
        model_only(model)
        with pytest.raises(AssertionError, match=rf"^state differs at {read}\(") as info:
            await assert_store_matches_model(store, model)
    assert "the store returned" in str(info.value)
    assert "the model returned" in str(info.value)


async def test_assert_store_matches_model_expects_unsupported_where_declared() -> None:
    async with ma.open_store() as store:
        with pytest.raises(
            AssertionError,
            match=r"state differs at load_ops_lifecycle\(.*the store returned None,"
            r" the model raised Unsupported",
        ):
            await assert_store_matches_model(
                store, ReferenceModel(), Capabilities(ops_lifecycle=False)
            )


# --- strategies ---------------------------------------------------------------------------------


def _is_json(value: Any) -> bool:
    if value is None or isinstance(value, bool | str):
        return True
    if isinstance(value, int):
        return -(2**63) <= value <= 2**64 - 1
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _is_utc(value: Any) -> bool:
    return (
        isinstance(value, datetime)
        and value.tzinfo is not None
        and value.utcoffset() == timedelta(0)
    )


def _rebuilds(value: Any) -> bool:
    """The constructor accepts the value's own fields again (it is valid)."""
    return bool(dataclasses.replace(value) == value)


def _is_u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**64 - 1


_STRATEGY_CHECKS: dict[str, Callable[[Any], bool]] = {
    "abandon_reasons": lambda v: isinstance(v, ma.InputAbandonReason) and _rebuilds(v),
    "history_entries": lambda v: (
        isinstance(v, ma.InputStateHistoryEntry) and _is_utc(v.timestamp) and _rebuilds(v)
    ),
    "input_durabilities": lambda v: isinstance(v, ma.InputDurability),
    "input_ids": lambda v: type(v) is InputId and isinstance(v.value, uuid.UUID),
    "input_lifecycle_states": lambda v: isinstance(v, InputLifecycleState),
    "input_state_seeds": lambda v: (
        isinstance(v, InputStateSeed)
        and (v.last_boundary_sequence is None or _is_u64(v.last_boundary_sequence))
        and 0 <= v.attempt_count <= 2**32 - 1
        and _rebuilds(v)
    ),
    "input_states": lambda v: (
        isinstance(v, ma.InputState)
        and _is_utc(v.created_at)
        and _is_utc(v.updated_at)
        and 0 <= v.recovery_count <= 2**32 - 1
        and _rebuilds(v)
    ),
    "json_documents": _is_json,
    "lifecycle_commits": lambda v: (
        isinstance(v, ma.MachineLifecycleCommit)
        and any(v.runtime_state in targets for targets in ma.LIFECYCLE_TRANSITIONS.values())
    ),
    "lifecycle_transitions": lambda v: (
        isinstance(v, tuple) and len(v) == 2 and v[1] in ma.LIFECYCLE_TRANSITIONS[v[0]]
    ),
    "ops_snapshots": lambda v: isinstance(v, PersistedOpsSnapshot) and _rebuilds(v),
    "receipts": lambda v: (
        isinstance(v, RunBoundaryReceipt)
        and _is_u64(v.sequence)
        and _is_u64(v.message_count)
        and _rebuilds(v)
    ),
    "run_apply_boundaries": lambda v: isinstance(v, RunApplyBoundary),
    "run_ids": lambda v: type(v) is RunId and isinstance(v.value, uuid.UUID),
    "runtime_ids": lambda v: type(v) is LogicalRuntimeId and v.value != "",
    "runtime_states": lambda v: isinstance(v, RuntimeState),
    "sequences": _is_u64,
    "session_deltas": lambda v: isinstance(v, SessionDelta) and type(v.session_snapshot) is bytes,
    "session_ids": lambda v: type(v) is SessionId and isinstance(v.value, uuid.UUID),
    "stored_input_states": lambda v: (
        isinstance(v, StoredInputState) and _rebuilds(v) and _rebuilds(v.state)
    ),
    "terminal_outcomes": lambda v: isinstance(v, ma.InputTerminalOutcome) and _rebuilds(v),
    "utc_datetimes": _is_utc,
    "uuids": lambda v: isinstance(v, uuid.UUID),
}


def test_every_strategy_has_a_check() -> None:
    assert sorted(_STRATEGY_CHECKS) == sorted(strategies.__all__)


# The compound values draw nested JSON documents: fewer examples keep the file fast.
_COMPOUND = {"input_states", "stored_input_states", "ops_snapshots"}


@pytest.mark.parametrize("name", sorted(set(strategies.__all__) - _COMPOUND))
@given(data=st.data())
@settings(max_examples=25)
def test_every_strategy_draws_valid_values(name: str, data: st.DataObject) -> None:
    value = data.draw(getattr(strategies, name)(), label=name)
    assert _STRATEGY_CHECKS[name](value), f"{name} drew an invalid value: {value!r}"


@pytest.mark.parametrize("name", sorted(_COMPOUND))
@given(data=st.data())
@settings(max_examples=10)
def test_every_compound_strategy_draws_valid_values(name: str, data: st.DataObject) -> None:
    value = data.draw(getattr(strategies, name)(), label=name)
    assert _STRATEGY_CHECKS[name](value), f"{name} drew an invalid value: {value!r}"


@given(data=st.data())
@settings(max_examples=10)
def test_narrowed_strategies_keep_their_key(data: st.DataObject) -> None:
    run_id = data.draw(strategies.run_ids())
    sequence = data.draw(strategies.sequences())
    drawn = data.draw(strategies.receipts(run_id=st.just(run_id), sequence=st.just(sequence)))
    assert (drawn.run_id, drawn.sequence) == (run_id, sequence)
    input_id = data.draw(strategies.input_ids())
    state = data.draw(strategies.stored_input_states(input_id=st.just(input_id)))
    assert state.state.input_id == input_id


# No shrinking: finding an example is the point, and shrinking a receipt is slow.
_FIND = settings(database=None, max_examples=2000, phases=[Phase.generate])


def test_receipts_reach_sequences_at_and_above_2_63() -> None:
    found = find(strategies.receipts(), lambda r: r.sequence >= 2**63, settings=_FIND)
    assert 2**63 <= found.sequence <= 2**64 - 1
    top = find(strategies.receipts(), lambda r: r.sequence == 2**64 - 1, settings=_FIND)
    assert top.sequence == 2**64 - 1


def test_sequences_reach_both_boundaries() -> None:
    for target in (0, 2**63 - 1, 2**63, 2**64 - 1):
        found = find(strategies.sequences(), target.__eq__, settings=_FIND)
        assert found == target


# --- Capabilities (moved from stateful_tests/test_capabilities.py) ----------------------------

_UNSUPPORTED = {
    "persist_ops_lifecycle",
    "load_ops_lifecycle",
    "persist_auth_oauth_flow_snapshot",
    "load_auth_oauth_flow_snapshot",
    "update_auth_oauth_flow_snapshot",
}


def test_crash_safe_implies_durable() -> None:
    with pytest.raises(ValueError, match="crash_safe implies durable"):
        Capabilities(crash_safe=True)


@pytest.mark.parametrize("flag", ["durable", "crash_safe", "ops_lifecycle", "oauth_flow_snapshot"])
def test_flags_must_be_bools(flag: str) -> None:
    with pytest.raises(TypeError, match=f"Capabilities.{flag} must be a bool"):
        Capabilities(**{flag: 1})  # type: ignore[arg-type]


def test_flags_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Capabilities(True)  # type: ignore[call-arg]


def test_open_store_at_without_capabilities_means_every_flag() -> None:
    class Durable(RuntimeStoreMachine):
        open_store_at = staticmethod(ma.open_store)

    assert Durable.capabilities == Capabilities(durable=True, crash_safe=True)
    assert Durable.durable is True


def test_durable_attribute_is_refused_in_favour_of_capabilities() -> None:
    with pytest.raises(TypeError, match=r"capabilities = Capabilities\(durable=True"):

        class Old(RuntimeStoreMachine):
            open_store = staticmethod(ma.open_store)
            durable = True


def test_capabilities_must_be_a_capabilities_value() -> None:
    with pytest.raises(TypeError, match="capabilities must be a Capabilities value"):

        class Wrong(RuntimeStoreMachine):
            open_store = staticmethod(ma.open_store)
            capabilities = ("durable",)  # type: ignore[assignment]


def test_supports_names_only_the_optional_families() -> None:
    none = Capabilities(ops_lifecycle=False, oauth_flow_snapshot=False)
    for name in _UNSUPPORTED:
        assert not none.supports(name)
        assert Capabilities().supports(name)
    for name in ("atomic_apply", "load_input_states", "commit_machine_lifecycle"):
        assert none.supports(name)


# --- review fixes: inheritance, refinements, bad calls, fresh ids, cleanup ----------------


def test_a_subclass_keeps_the_capabilities_its_base_declared() -> None:
    class Base(RuntimeStoreMachine):
        capabilities = Capabilities(durable=True, oauth_flow_snapshot=False)

    class Child(Base):
        open_store_at = staticmethod(ma.open_store)

    assert Child.capabilities == Capabilities(durable=True, oauth_flow_snapshot=False)
    assert Child.durable is True


def test_an_error_refinement_is_accepted_but_not_a_distinct_error() -> None:
    class Refined(ma.WriteFailed):
        pass

    class RefinedConflict(ma.ReceiptConflict):
        pass

    wanted = _Outcome(error=ma.WriteFailed("x"))
    assert _Outcome(error=Refined("x")).same_as(wanted)
    assert not _Outcome(error=ma.ReceiptConflict("x")).same_as(wanted)
    assert _Outcome(error=RefinedConflict("x")).same_as(_Outcome(error=ma.ReceiptConflict("x")))
    assert not _Outcome(error=ma.WriteFailed("x")).same_as(_Outcome(error=ma.ReceiptConflict("x")))
    assert not _Outcome(value=bytearray(b"a")).same_as(_Outcome(value=b"a"))


class _ChecksThenUnsupported:
    """The in-memory store, with OAuth checking its argument, then Unsupported."""

    def __init__(self, store: ma.RuntimeStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if "oauth" in name:

            async def unsupported(*args: object) -> None:
                if name == "update_auth_oauth_flow_snapshot" and not callable(args[0]):
                    raise TypeError("update must be callable")
                raise ma.Unsupported(name)

            return unsupported
        return getattr(self._store, name)


@asynccontextmanager
async def _open_checks_then_unsupported() -> AsyncIterator[Any]:
    async with ma.open_store() as store:
        yield _ChecksThenUnsupported(store)


def test_a_bad_call_of_an_unsupported_operation_may_raise_type_error_first() -> None:
    class NoOAuth(RuntimeStoreMachine):
        open_store = staticmethod(_open_checks_then_unsupported)
        capabilities = Capabilities(oauth_flow_snapshot=False)

    receipt = ma.RunBoundaryReceipt(ma.RunId.new(), ma.RunApplyBoundary.IMMEDIATE, (), None, 0, 0)
    calls = _bad_calls(RUNTIME_IDS[0], receipt)
    index = next(i for i, c in enumerate(calls) if c[0] == "update_auth_oauth_flow_snapshot")
    machine = NoOAuth()
    try:
        machine.bad_argument(index, RUNTIME_IDS[0], receipt)  # TypeError: accepted
        machine.whole_state_matches_model()
    finally:
        machine.teardown()


class _KeepsSnapshotOnMismatch:
    """Writes the session snapshot, then checks the session key (a defect)."""

    def __init__(self, store: ma.RuntimeStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def atomic_apply(self, runtime_id: Any, delta: Any, *args: Any) -> None:
        if delta is not None:
            await self._store.commit_session_snapshot(runtime_id, delta)
        await self._store.atomic_apply(runtime_id, delta, *args)


@asynccontextmanager
async def _open_keeps_snapshot() -> AsyncIterator[Any]:
    async with ma.open_store() as store:
        yield _KeepsSnapshotOnMismatch(store)


def test_a_refused_write_under_a_fresh_runtime_id_is_still_looked_at() -> None:
    class Keeps(RuntimeStoreMachine):
        open_store = staticmethod(_open_keeps_snapshot)

    fresh = ma.LogicalRuntimeId("fresh-runtime-not-in-any-pool")
    delta = ma.SessionDelta(json.dumps({"id": str(SESSION_IDS[0])}).encode())
    wrong = SESSION_IDS[1]
    receipt = ma.RunBoundaryReceipt(ma.RunId.new(), ma.RunApplyBoundary.IMMEDIATE, (), None, 0, 0)
    machine = Keeps()
    try:
        # Both sides raise SessionKeyMismatch: the rule agrees ...
        machine.atomic_apply(fresh, delta, receipt, [], wrong)
        # ... but the store kept the snapshot under an id the model never held.
        with pytest.raises(AssertionError, match=r"state differs at load_session_snapshot\("):
            machine.whole_state_matches_model()
    finally:
        machine.teardown()


def test_teardown_runs_when_the_store_fails_to_open() -> None:
    torn_down: list[bool] = []

    @asynccontextmanager
    async def fails() -> AsyncIterator[Any]:
        raise ma.ReadFailed("cannot open")
        yield  # pragma: no cover

    class Failing(RuntimeStoreMachine):
        open_store = staticmethod(fails)

        def teardown(self) -> None:
            torn_down.append(True)
            super().teardown()

    with pytest.raises(ma.ReadFailed, match="cannot open"):
        Failing()
    assert torn_down == [True]


def test_the_updaters_are_public_and_hash_by_value() -> None:
    for name in ("Increment", "Append", "RaiseError", "ReturnNotBytes", "FULL_CAPABILITIES"):
        assert name in kit.__all__
    assert kit.Append(b"x") == kit.Append(b"x")
    assert hash(kit.Append(b"x")) == hash(kit.Append(b"x"))
    assert kit.Increment() == kit.Increment()
    assert kit.Increment() != kit.RaiseError()


# --- the model: discovery and retention (SPEC §3b) ----------------------------------


def _finished(input_id: InputId) -> StoredInputState:
    """A consumed state with a payload and a history entry."""
    shell = stored(input_id, persisted_input={"text": "hi"}).state
    shell = dataclasses.replace(
        shell,
        history=(
            ma.InputStateHistoryEntry(
                EPOCH, InputLifecycleState.ACCEPTED, InputLifecycleState.CONSUMED, None
            ),
        ),
    )
    seed = InputStateSeed(
        InputLifecycleState.CONSUMED, terminal_outcome=ma.InputTerminalOutcome.consumed()
    )
    return StoredInputState(shell, seed)


def test_model_retire_drops_only_the_payload_and_checks_in_list_order() -> None:
    model = ReferenceModel()
    done_low, done_high = _finished(ID_LOW), _finished(ID_HIGH)
    model.persist_input_state(RT_A, done_low)
    model.persist_input_state(RT_A, done_high)
    # Consumed with no outcome: only a store's decoder builds it (an old or Rust writer's).
    no_outcome = StoredInputState(
        stored(ID_MID).state, _values.stored_seed(InputLifecycleState.CONSUMED)
    )
    model.persist_input_state(RT_A, no_outcome)
    before = observe(model)
    # The first bad id decides: unknown before not-terminal is NotFound ...
    with pytest.raises(ma.NotFound):
        model.retire_input_payloads(RT_A, [ID_LOW, ID_LOWER_MID, ID_MID])
    # ... and not-terminal before unknown is NotRetirable; nothing retired.
    with pytest.raises(ma.NotRetirable) as info:
        model.retire_input_payloads(RT_A, [ID_LOW, ID_MID, ID_LOWER_MID])
    assert (info.value.input_id, info.value.phase) == (ID_MID, InputLifecycleState.CONSUMED)
    assert observe(model) == before
    model.retire_input_payloads(RT_A, [ID_LOW, ID_LOW, ID_HIGH])
    after = model.load_input_state(RT_A, ID_LOW)
    assert after is not None
    assert after.state.persisted_input is None
    assert dataclasses.replace(after.state, persisted_input=done_low.state.persisted_input) == (
        done_low.state
    )
    assert after.seed == done_low.seed
    snapshot = observe(model)
    model.retire_input_payloads(RT_A, [ID_HIGH])  # already retired
    model.retire_input_payloads(RT_B, [])
    assert observe(model) == snapshot


def test_model_purge_lists_and_cas() -> None:
    model = ReferenceModel()
    assert model.list_runtimes() == []
    model.persist_auth_oauth_flow_snapshot(b"oauth")
    model.commit_session_snapshot(RT_B, delta())
    model.atomic_apply(RT_A, None, receipt(RUN_1, 2**63), [])
    model.atomic_apply(RT_A, None, receipt(RUN_1, 1), [])
    model.atomic_apply(RT_A, None, receipt(RUN_2, 9), [])
    assert model.list_runtimes() == [RT_A, RT_B]
    assert [(r.run_id, r.sequence) for r in model.load_boundary_receipts(RT_A)] == [
        (RUN_2, 9),
        (RUN_1, 1),
        (RUN_1, 2**63),
    ]
    model.clear_session_snapshot(RT_B)
    model.delete_ops_lifecycle(RT_B)
    assert model.list_runtimes() == [RT_A]  # RT_B holds nothing any more
    with pytest.raises(ma.RuntimeNotDestroyed) as refused:
        model.purge_runtime(RT_A)
    assert refused.value.actual is None
    idle = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    destroy = machine_transition(RuntimeState.IDLE, RuntimeState.DESTROYED)
    with pytest.raises(ma.LifecycleConflict) as conflict:
        model.commit_machine_lifecycle(RT_A, idle, [], expected=RuntimeState.IDLE)
    assert (conflict.value.expected, conflict.value.actual) == (RuntimeState.IDLE, None)
    model.commit_machine_lifecycle(RT_A, idle, [], expected=None)
    with pytest.raises(ma.LifecycleConflict):
        model.commit_machine_lifecycle(RT_A, destroy, [], expected=None)
    model.commit_machine_lifecycle(RT_A, destroy, [], expected=RuntimeState.IDLE)
    model.purge_runtime(RT_A)
    assert model.list_runtimes() == []
    assert model.load_boundary_receipts(RT_A) == []
    assert model.load_runtime_state(RT_A) is None
    assert model.load_auth_oauth_flow_snapshot() == b"oauth"
    model.atomic_apply(RT_A, None, receipt(RUN_1, 2**63), [])  # the key is free again
    assert model.list_runtimes() == [RT_A]


# --- error shapes (SPEC §4, §5) -----------------------------------------------------------


async def _bare_type_error(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    try:
        return await real(*args)
    except TypeError:
        raise TypeError("wrong type") from None


async def _message_without_runtime(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    try:
        return await real(*args)
    except ma.RuntimeNotDestroyed as exc:
        error = ma.RuntimeNotDestroyed(exc.runtime_id, exc.actual)
        error.args = ("the runtime is not destroyed",)
        raise error from None


async def _cause_dropped(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    try:
        return await real(*args)
    except WriteFailed as exc:
        raise WriteFailed(str(exc)) from None


def test_a_bad_argument_message_must_name_the_argument() -> None:
    receipt = ma.RunBoundaryReceipt(ma.RunId.new(), ma.RunApplyBoundary.IMMEDIATE, (), None, 0, 0)
    calls = _bad_calls(RUNTIME_IDS[0], receipt)
    index = next(i for i, c in enumerate(calls) if c[0] == "load_session_snapshot")
    assert calls[index][3] == "runtime_id"
    machine = lying_machine("load_session_snapshot", _bare_type_error)()
    try:
        with pytest.raises(AssertionError) as info:
            machine.bad_argument(index, RUNTIME_IDS[0], receipt)
    finally:
        machine.teardown()
    message = str(info.value)
    assert message.startswith("load_session_snapshot("), message
    assert "TypeError: wrong type" in message
    assert "does not name the argument 'runtime_id'" in message


def test_every_bad_call_names_its_argument_in_the_shipped_store() -> None:
    receipt = ma.RunBoundaryReceipt(ma.RunId.new(), ma.RunApplyBoundary.IMMEDIATE, (), None, 0, 0)
    calls = _bad_calls(RUNTIME_IDS[0], receipt)
    assert len({c[3] for c in calls}) > 5  # not one name for every call
    machine = lying_machine("nothing", forgets)()
    try:
        for index in range(len(calls)):
            machine.bad_argument(index, RUNTIME_IDS[0], receipt)
    finally:
        machine.teardown()


def test_a_store_error_must_name_the_runtime() -> None:
    machine = lying_machine("purge_runtime", _message_without_runtime)()
    try:
        with pytest.raises(AssertionError) as info:
            machine.check("purge_runtime", RT_A)
    finally:
        machine.teardown()
    message = str(info.value)
    assert message.startswith("purge_runtime("), message
    assert "RuntimeNotDestroyed: the runtime is not destroyed" in message
    assert f"does not name {str(RT_A)!r}" in message
    assert "SPEC §5" in message


def test_a_codec_error_must_be_chained() -> None:
    machine = lying_machine("commit_session_snapshot", _cause_dropped)()
    try:
        with pytest.raises(AssertionError) as info:
            machine.check("commit_session_snapshot", RT_A, ma.SessionDelta(b"not json"))
    finally:
        machine.teardown()
    message = str(info.value)
    assert message.startswith("commit_session_snapshot("), message
    assert "does not chain its cause" in message


# --- many runtimes, many ids, a checkpoint racing writes -----------------------------------


def finished(input_id: InputId) -> StoredInputState:
    """`input_id` consumed, with a payload to retire."""
    consumed = InputStateSeed(
        InputLifecycleState.CONSUMED, terminal_outcome=ma.InputTerminalOutcome.consumed()
    )
    return StoredInputState(stored(input_id, persisted_input={"text": "hi"}).state, consumed)


async def first_page(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return (await real(*args))[:100]


async def refuses_long_lists(real: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    ids = args[1] if len(args) > 1 else real.keywords["input_ids"]  # type: ignore[attr-defined]
    if len(ids) > 998:
        raise WriteFailed("too many SQL variables")
    return await real(*args)


def test_many_runtimes_passes_an_honest_store_and_leaves_nothing_to_read() -> None:
    machine = lying_machine("nothing", forgets)()
    try:
        machine.many_runtimes(extra=2, tasks=16)
        assert not any(str(r).startswith("many-runtimes-") for r in machine.seen_runtimes)
        assert machine.model.list_runtimes() == []
        machine.whole_state_matches_model()
    finally:
        machine.teardown()


def test_many_runtimes_names_what_a_first_page_leaves_out() -> None:
    machine = lying_machine("list_runtimes", first_page)()
    try:
        with pytest.raises(AssertionError) as info:
            machine.many_runtimes(extra=0, tasks=16)
    finally:
        machine.teardown()
    message = str(info.value)
    assert message.startswith(
        "list_runtimes() after 101 runtimes given a state by 16 tasks at once:"
        " the store returned 100 runtimes, the model 101; the store left out ["
    ), message
    assert "many-runtimes-99" in message  # the last in code point order
    assert len(message) < 500


@pytest.mark.parametrize("last", ["finished", "unfinished", "unknown"])
def test_retire_many_ids_passes_an_honest_store(last: str) -> None:
    machine = lying_machine("nothing", forgets)()
    try:
        machine.retire_many_ids(RT_A, finished(ID_MID), 999, last)
        machine.whole_state_matches_model()
    finally:
        machine.teardown()
    # The pool's other ids come next: ID_LOW repeated, then ID_HIGH.
    assert kit.INPUT_IDS[:3] == (ID_MID, ID_LOW, ID_HIGH)
    states = {s.state.input_id: s for s in machine.model.load_input_states(RT_A)}
    retired = last == "finished"
    assert (states[ID_MID].state.persisted_input is None) is retired
    if last != "unknown":
        assert (states[ID_HIGH].state.persisted_input is None) is retired


def test_retire_many_ids_prints_the_long_list_short() -> None:
    machine = lying_machine("retire_input_payloads", refuses_long_lists)()
    try:
        with pytest.raises(AssertionError) as info:
            machine.retire_many_ids(RT_A, finished(ID_MID), 1000, "unknown")
    finally:
        machine.teardown()
    message = str(info.value)
    assert message.startswith(
        "retire_input_payloads(RUNTIME_IDS[0], [INPUT_IDS[0]] + [INPUT_IDS[1]] * 1000"
        " + [InputId(UUID(int=2**96 + n)) for n in range(1000)]):"
        " the store raised WriteFailed: too many SQL variables, the model raised NotFound"
    ), message
    assert len(message) < 500


def test_checkpoint_during_writes_passes_the_durable_store() -> None:
    class DurableMachine(RuntimeStoreMachine):
        open_store_at = staticmethod(ma.open_store)

    machine = DurableMachine()
    try:
        for delay in (0, 2):
            machine.checkpoint_during_writes(RT_A, stored(ID_LOW), receipt(RUN_1, 0), delay)
            machine.whole_state_matches_model()
    finally:
        machine.teardown()
    assert machine.model.load_input_state(RT_A, ID_LOW) is not None


# --- identical: the comparison every check uses --------------------------------------


@pytest.mark.parametrize(
    ("got", "want"),
    [
        (1, True),
        (True, 1),
        (1.0, 1),
        (1, 1.0),
        (0.0, -0.0),
        (-0.0, 0.0),
        (bytearray(b"x"), b"x"),
        (memoryview(b"x"), b"x"),
        ((1, 2), [1, 2]),
        ([1, 2], (1, 2)),
        ([1, 2], [1, 2, 3]),
        ({"a": 1}, {"a": True}),
        ({1: "x"}, {True: "x"}),
        ({"a": 1}, {"b": 1}),
        ({"a": [1, {"b": 1.0}]}, {"a": [1, {"b": 1}]}),
        (
            datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
        (datetime(2026, 1, 1), datetime(2026, 1, 1, tzinfo=UTC)),
        (ma.InputLifecycleState.QUEUED, "queued"),
    ],
)
def test_identical_tells_apart_what_equality_does_not(got: object, want: object) -> None:
    """`==` says yes (or the types differ in a way a reader sees); `identical` no."""
    assert not kit.identical(got, want)


def test_identical_looks_inside_data_model_values() -> None:
    """A document inside an input state, and a field of a dataclass, compared
    by type too; equal copies are identical, and the answer for one pair of
    a type does not stick to the next pair of that type."""
    state = _values.stored(ma.InputId(uuid.UUID(int=7)), persisted_input={"flag": True, "n": 1.0})
    same = _values.stored(ma.InputId(uuid.UUID(int=7)), persisted_input={"flag": True, "n": 1.0})
    coerced = _values.stored(ma.InputId(uuid.UUID(int=7)), persisted_input={"flag": 1, "n": 1})
    assert state == coerced  # what `==` cannot tell
    assert kit.identical(same, state)
    assert not kit.identical(coerced, state)
    assert kit.identical([same, same], [state, state])
    assert not kit.identical([same, coerced], [state, state])
    assert not kit.identical((same,), [state])
    assert kit.identical(float("inf"), float("inf"))
    assert not kit.identical(-0.0, 0.0)
