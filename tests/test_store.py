"""The in-memory actor store through the public API (SPEC §3-§6).

`import meerkat_actor as ma` only, except where a test has to break the
actor on purpose: monkeypatching the pure core's `apply`, or tracking the
actor's reply slots so a caller left hanging by a bug can be released.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import inspect
import json
import logging
import pickle
import uuid
import warnings
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from _values import I1, I2, I3, OTHER, RT, RUN, SID, everything, populate, receipt, session, stored

import meerkat_actor as ma
from meerkat_actor import InputLifecycleState as PHASE
from meerkat_actor import RuntimeState as RS
from meerkat_actor import _actor, _core

TIMEOUT = 5


@pytest.fixture
async def store():
    async with ma.open_store() as opened:
        yield opened


async def everything_empty():
    """What a fresh store shows: the baseline for 'nothing was written'."""
    async with ma.open_store() as fresh:
        return await everything(fresh)


# --- round trips ----------------------------------------------------------------------


async def test_atomic_apply_round_trip(store):
    states = [stored(I1), stored(I2, PHASE.QUEUED)]
    await store.atomic_apply(RT, session(), receipt(), states, SID)
    assert await store.load_session_snapshot(RT) == session().session_snapshot
    assert await store.load_boundary_receipt(RT, RUN, 7) == receipt()
    assert await store.load_input_states(RT) == states
    assert await store.load_input_state(RT, I2) == stored(I2, PHASE.QUEUED)


async def test_receipt_loads_back_equal(store):
    rcpt = ma.RunBoundaryReceipt(
        RUN, ma.RunApplyBoundary.IMMEDIATE, (I1,), "machine-owned-digest", 42, 7
    )
    await store.atomic_apply(RT, None, rcpt, [])
    loaded = await store.load_boundary_receipt(RT, RUN, 7)
    assert loaded == rcpt
    assert loaded.boundary is ma.RunApplyBoundary.IMMEDIATE
    assert loaded.contributing_input_ids == (I1,)
    assert loaded.conversation_digest == "machine-owned-digest"
    assert (loaded.message_count, loaded.sequence) == (42, 7)
    assert await store.load_boundary_receipt(RT, RUN, 6) is None
    assert await store.load_boundary_receipt(RT, ma.RunId.new(), 7) is None


async def test_updating_an_input_state_keeps_one_entry_and_the_latest_wins(store):
    await store.atomic_apply(RT, None, receipt(1), [stored(I1)])
    await store.atomic_apply(RT, None, receipt(2), [stored(I1, PHASE.STAGED, attempts=1)])
    assert await store.load_input_states(RT) == [stored(I1, PHASE.STAGED, attempts=1)]
    await store.persist_input_state(RT, stored(I1, PHASE.CONSUMED))
    assert await store.load_input_states(RT) == [stored(I1, PHASE.CONSUMED)]


async def test_later_entries_in_one_call_win(store):
    await store.atomic_apply(
        RT, None, receipt(), [stored(I1, PHASE.QUEUED), stored(I2), stored(I1, PHASE.APPLIED)]
    )
    assert await store.load_input_states(RT) == [stored(I1, PHASE.APPLIED), stored(I2)]
    await store.commit_machine_lifecycle(
        RT,
        ma.machine_transition(RS.INITIALIZING, RS.IDLE),
        [stored(I2, PHASE.STAGED), stored(I2, PHASE.CONSUMED)],
    )
    assert await store.load_input_state(RT, I2) == stored(I2, PHASE.CONSUMED)


async def test_unknown_ids_load_as_none_or_empty(store):
    await populate(store)
    unknown = ma.LogicalRuntimeId("never-written")
    assert await store.load_input_states(unknown) == []
    assert await store.load_input_state(unknown, I1) is None
    assert await store.load_input_state(RT, I3) is None
    assert await store.load_boundary_receipt(unknown, RUN, 7) is None
    assert await store.load_boundary_receipt(RT, RUN, 2**64 - 1) is None
    assert await store.load_session_snapshot(unknown) is None
    assert await store.load_runtime_state(unknown) is None
    assert await store.load_ops_lifecycle(unknown) is None


async def test_fresh_store_is_empty(store):
    seen = await everything(store)
    assert seen["oauth"] is None
    assert all(value in (None, []) for value in seen.values())


async def test_runtimes_are_isolated(store):
    await populate(store)
    await store.persist_input_state(RT, stored(I2))
    assert await store.load_session_snapshot(OTHER) is None
    assert await store.load_input_states(OTHER) == []
    assert await store.load_input_state(OTHER, I1) is None
    assert await store.load_boundary_receipt(OTHER, RUN, 7) is None
    assert await store.load_runtime_state(OTHER) is None
    assert await store.load_ops_lifecycle(OTHER) is None
    # The same keys under another runtime are independent.
    other_session = session(ma.SessionId.new())
    await store.atomic_apply(OTHER, other_session, receipt(), [stored(I1, PHASE.CONSUMED)])
    assert await store.load_session_snapshot(RT) == session().session_snapshot
    assert await store.load_input_state(RT, I1) == stored(I1)
    assert await store.load_input_state(OTHER, I1) == stored(I1, PHASE.CONSUMED)
    assert await store.load_session_snapshot(OTHER) == other_session.session_snapshot


async def test_session_key_validates_without_creating_an_alias(store):
    await store.atomic_apply(RT, session(), receipt(), [stored(I1)], session_store_key=SID)
    alias = ma.LogicalRuntimeId(str(SID))
    assert await store.load_session_snapshot(alias) is None
    assert await store.load_input_states(alias) == []
    assert await store.load_boundary_receipt(alias, RUN, 7) is None
    assert await store.load_session_snapshot(RT) == session().session_snapshot


async def test_session_key_mismatch_fails_and_writes_nothing(store):
    await populate(store)
    before = await everything(store)
    key = ma.SessionId(uuid.UUID(int=0xBAD))
    with pytest.raises(ma.SessionKeyMismatch) as info:
        await store.atomic_apply(
            RT, session(SID, turn=2), receipt(8), [stored(I1, PHASE.QUEUED), stored(I2)], key
        )
    assert info.value.expected == key
    assert info.value.actual == SID
    message = str(info.value)
    assert "runtime-a" in message
    assert f"expected {key}" in message
    assert f"actual {SID}" in message
    assert await everything(store) == before
    assert await store.load_boundary_receipt(RT, RUN, 8) is None
    assert await store.load_input_state(RT, I2) is None


async def test_session_key_mismatch_on_an_empty_runtime_writes_nothing(store):
    with pytest.raises(ma.SessionKeyMismatch):
        await store.atomic_apply(RT, session(), receipt(), [stored(I1)], ma.SessionId.new())
    assert await everything(store) == await everything_empty()


async def test_duplicate_receipt_conflicts_and_applies_nothing(store):
    await store.atomic_apply(RT, session(), receipt(), [stored(I1)])
    before = await everything(store)
    new_session = session(SID, turn=2)
    different = dataclasses.replace(receipt(), message_count=1, conversation_digest=None)
    with pytest.raises(ma.ReceiptConflict) as info:
        await store.atomic_apply(
            RT, new_session, different, [stored(I1, PHASE.CONSUMED), stored(I2)], SID
        )
    assert isinstance(info.value, ma.WriteFailed)
    assert isinstance(info.value, ma.RuntimeStoreError)
    assert "runtime-a" in str(info.value)
    assert str(RUN) in str(info.value)
    assert "sequence 7" in str(info.value)
    assert await everything(store) == before
    assert await store.load_session_snapshot(RT) == session().session_snapshot
    assert await store.load_input_state(RT, I2) is None
    assert await store.load_boundary_receipt(RT, RUN, 7) == receipt()


async def test_receipts_with_u64_sequences_are_distinct(store):
    sequences = [2**63 - 1, 2**63, 2**64 - 1]
    for sequence in sequences:
        await store.atomic_apply(RT, None, receipt(sequence), [])
    for sequence in sequences:
        assert await store.load_boundary_receipt(RT, RUN, sequence) == receipt(sequence)
    with pytest.raises(ma.ReceiptConflict):
        await store.atomic_apply(RT, None, receipt(2**63), [])


async def test_input_states_load_sorted_by_uuid_regardless_of_insertion_order(store):
    ints = [2**128 - 1, 0x300, 2**127, 0, 2**64, 0x100, 2**63]
    ids = [ma.InputId(uuid.UUID(int=n)) for n in ints]
    for input_id in ids[:3]:
        await store.persist_input_state(RT, stored(input_id))
    await store.atomic_apply(RT, None, receipt(), [stored(i) for i in ids[3:5]])
    await store.commit_machine_lifecycle(
        RT, ma.machine_transition(RS.INITIALIZING, RS.IDLE), [stored(i) for i in ids[5:]]
    )
    loaded = await store.load_input_states(RT)
    assert [s.input_id.value.int for s in loaded] == sorted(ints)


async def test_commit_session_snapshot_replaces_the_snapshot_and_writes_no_receipt(store):
    await store.commit_session_snapshot(RT, session())
    assert await store.load_session_snapshot(RT) == session().session_snapshot
    second = session(ma.SessionId.new(), turn=2)
    await store.commit_session_snapshot(RT, second)
    assert await store.load_session_snapshot(RT) == second.session_snapshot
    assert await store.load_input_states(RT) == []
    # The receipt key is still free: commit_session_snapshot wrote no receipt.
    await store.atomic_apply(RT, None, receipt(), [])
    assert await store.load_boundary_receipt(RT, RUN, 7) == receipt()


UNREADABLE = [
    pytest.param(b"this is not json", "not JSON", id="not-json"),
    pytest.param(b"\xff\xfe\xfd", "not JSON", id="not-utf8"),
    pytest.param(json.dumps([{"id": str(SID)}]).encode(), "JSON object", id="json-array"),
    pytest.param(json.dumps({"name": "x"}).encode(), '"id"', id="missing-id"),
    pytest.param(json.dumps({"id": "not-a-uuid"}).encode(), "not a UUID", id="non-uuid-id"),
]


@pytest.mark.parametrize(("snapshot", "reason"), UNREADABLE)
async def test_unreadable_session_snapshot_fails_and_changes_nothing(store, snapshot, reason):
    await populate(store)
    before = await everything(store)
    delta = ma.SessionDelta(snapshot)
    with pytest.raises(ma.WriteFailed, match=f"runtime-a.*{reason}") as info:
        await store.commit_session_snapshot(RT, delta)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(ma.WriteFailed, match=reason):
        await store.atomic_apply(RT, delta, receipt(8), [stored(I2)])
    with pytest.raises(ma.WriteFailed, match=reason):
        await store.atomic_apply(OTHER, delta, receipt(8), [stored(I2)], SID)
    assert await everything(store) == before


async def test_custom_session_codec_is_used():
    calls = []

    class FirstLineCodec:
        """Snapshots are `<uuid>\\n<anything>`."""

        def session_id(self, snapshot: bytes) -> ma.SessionId:
            calls.append(snapshot)
            head = snapshot.split(b"\n", 1)[0].decode()
            try:
                return ma.SessionId.parse(head)
            except ValueError as exc:
                raise ValueError(f"no session id line: {exc}") from exc

    async with ma.open_store(session_codec=FirstLineCodec()) as store:
        snapshot = f"{SID}\nnot json at all".encode()
        await store.atomic_apply(RT, ma.SessionDelta(snapshot), receipt(), [], SID)
        assert calls == [snapshot]
        assert await store.load_session_snapshot(RT) == snapshot
        # Meerkat JSON is unreadable to this codec.
        with pytest.raises(ma.WriteFailed, match="no session id line"):
            await store.commit_session_snapshot(RT, session())
        with pytest.raises(ma.SessionKeyMismatch):
            await store.atomic_apply(
                RT, ma.SessionDelta(snapshot), receipt(8), [], ma.SessionId.new()
            )
        assert await store.load_session_snapshot(RT) == snapshot


async def test_session_key_without_a_delta_is_accepted(store):
    # Nothing to validate: the call applies its receipt and input states.
    await store.atomic_apply(RT, None, receipt(), [stored(I1)], ma.SessionId.new())
    assert await store.load_boundary_receipt(RT, RUN, 7) == receipt()
    assert await store.load_input_states(RT) == [stored(I1)]
    assert await store.load_session_snapshot(RT) is None


async def test_commit_machine_lifecycle_writes_state_and_inputs_together(store):
    commit = ma.machine_transition(RS.INITIALIZING, RS.IDLE)
    await store.commit_machine_lifecycle(RT, commit, [stored(I1), stored(I2)])
    assert await store.load_runtime_state(RT) is RS.IDLE
    assert await store.load_input_states(RT) == [stored(I1), stored(I2)]
    await store.commit_machine_lifecycle(
        RT, ma.machine_transition(RS.IDLE, RS.RETIRED), [stored(I1, PHASE.ABANDONED)]
    )
    assert await store.load_runtime_state(RT) is RS.RETIRED
    assert await store.load_input_states(RT) == [stored(I1, PHASE.ABANDONED), stored(I2)]
    await store.commit_machine_lifecycle(RT, ma.machine_transition(RS.RETIRED, RS.STOPPED), ())
    assert await store.load_runtime_state(RT) is RS.STOPPED
    assert await store.load_runtime_state(OTHER) is None


async def test_runtime_state_is_written_only_by_commit_machine_lifecycle(store):
    await store.atomic_apply(RT, session(), receipt(), [stored(I1)])
    await store.persist_input_state(RT, stored(I2))
    await store.commit_session_snapshot(RT, session())
    await store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("e"))
    assert await store.load_runtime_state(RT) is None
    await store.commit_machine_lifecycle(RT, ma.machine_transition(RS.IDLE, RS.RUNNING), [])
    assert await store.load_runtime_state(RT) is RS.RUNNING
    await store.atomic_apply(RT, None, receipt(8), [])
    assert await store.load_runtime_state(RT) is RS.RUNNING


async def test_ops_lifecycle_snapshot_is_replaced_per_runtime(store):
    first = ma.PersistedOpsSnapshot("epoch-1", {"a": 1}, [{"op": 1}], {"x": None}, {"c": 0})
    second = ma.PersistedOpsSnapshot("epoch-2", None, [], {}, {"c": 5})
    await store.persist_ops_lifecycle(RT, first)
    assert await store.load_ops_lifecycle(RT) == first
    assert await store.load_ops_lifecycle(OTHER) is None
    await store.persist_ops_lifecycle(OTHER, second)
    await store.persist_ops_lifecycle(RT, second)
    assert await store.load_ops_lifecycle(RT) == second
    await store.persist_ops_lifecycle(OTHER, first)
    assert await store.load_ops_lifecycle(OTHER) == first
    assert await store.load_ops_lifecycle(RT) == second


# --- the OAuth flow snapshot ------------------------------------------------------------


async def test_oauth_snapshot_persist_load_update(store):
    assert await store.load_auth_oauth_flow_snapshot() is None
    await store.persist_auth_oauth_flow_snapshot(b"verifier-1")
    assert await store.load_auth_oauth_flow_snapshot() == b"verifier-1"
    await store.persist_auth_oauth_flow_snapshot(b"")
    assert await store.load_auth_oauth_flow_snapshot() == b""
    await store.update_auth_oauth_flow_snapshot(lambda current: current + b"+x")
    assert await store.load_auth_oauth_flow_snapshot() == b"+x"


async def test_oauth_snapshot_is_store_wide(store):
    await store.persist_auth_oauth_flow_snapshot(b"shared")
    # Not attached to any runtime: runtime writes leave it alone and vice versa.
    await populate(store)
    await store.persist_auth_oauth_flow_snapshot(b"shared-2")
    assert await store.load_auth_oauth_flow_snapshot() == b"shared-2"
    assert await store.load_session_snapshot(RT) == session().session_snapshot
    assert await store.load_session_snapshot(OTHER) is None


async def test_oauth_updater_sees_none_when_nothing_was_stored(store):
    seen = []

    def update(current):
        seen.append(current)
        return b"first"

    await store.update_auth_oauth_flow_snapshot(update)
    assert seen == [None]
    await store.update_auth_oauth_flow_snapshot(update)
    assert seen == [None, b"first"]


async def test_oauth_update_is_a_counter_without_lost_updates():
    def increment(current: bytes | None) -> bytes:
        return str(int(current or b"0") + 1).encode()

    async with ma.open_store() as store:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(1000):
                    nursery.start_soon(store.update_auth_oauth_flow_snapshot, increment)
        assert await store.load_auth_oauth_flow_snapshot() == b"1000"
        stats = store.statistics()
        assert stats.commands == 1000
        assert stats.refused == 0
        assert stats.largest_batch > 1
        assert stats.batches < 1000


async def test_raising_updater_reaches_the_caller_and_changes_nothing(store):
    await populate(store)
    before = await everything(store)

    class UpdaterBug(Exception):
        pass

    boom = UpdaterBug("refresh failed")

    def update(current):
        raise boom

    with pytest.raises(UpdaterBug) as info:
        await store.update_auth_oauth_flow_snapshot(update)
    assert info.value is boom
    assert await everything(store) == before
    assert store.statistics().refused == 1
    # The store keeps working.
    await store.update_auth_oauth_flow_snapshot(lambda current: current + b"!")
    assert await store.load_auth_oauth_flow_snapshot() == b"oauth-0!"


@pytest.mark.parametrize("result", ["text", bytearray(b"x"), None, 5, memoryview(b"x")])
async def test_updater_returning_non_bytes_is_a_type_error(store, result):
    await populate(store)
    before = await everything(store)
    with pytest.raises(TypeError, match="updater must return bytes, got"):
        await store.update_auth_oauth_flow_snapshot(lambda current: result)
    assert await everything(store) == before


# --- bad arguments -----------------------------------------------------------------------

COMMIT = ma.machine_transition(RS.IDLE, RS.RUNNING)

BAD_CALLS = [
    pytest.param(
        lambda s: s.persist_auth_oauth_flow_snapshot(bytearray(b"x")),
        TypeError,
        "snapshot must be bytes, got bytearray",
        id="oauth-bytearray",
    ),
    pytest.param(
        lambda s: s.persist_auth_oauth_flow_snapshot("x"),
        TypeError,
        "snapshot must be bytes, got str",
        id="oauth-str",
    ),
    pytest.param(
        lambda s: s.update_auth_oauth_flow_snapshot(b"x"),
        TypeError,
        "update must be callable, got bytes",
        id="update-not-callable",
    ),
    pytest.param(
        lambda s: s.update_auth_oauth_flow_snapshot(None),
        TypeError,
        "update must be callable, got NoneType",
        id="update-none",
    ),
    pytest.param(
        lambda s: s.commit_session_snapshot("runtime-a", session()),
        TypeError,
        "runtime_id must be LogicalRuntimeId, got str",
        id="session-str-runtime",
    ),
    pytest.param(
        lambda s: s.commit_session_snapshot(RT, session().session_snapshot),
        TypeError,
        "delta must be SessionDelta, got bytes",
        id="session-raw-bytes",
    ),
    pytest.param(
        lambda s: s.atomic_apply("runtime-a", None, receipt(), []),
        TypeError,
        "runtime_id must be LogicalRuntimeId, got str",
        id="apply-str-runtime",
    ),
    pytest.param(
        lambda s: s.atomic_apply(RT, session().session_snapshot, receipt(), []),
        TypeError,
        "delta must be SessionDelta or None, got bytes",
        id="apply-raw-delta",
    ),
    pytest.param(
        lambda s: s.atomic_apply(RT, None, dataclasses.asdict(receipt()), []),
        TypeError,
        "receipt must be RunBoundaryReceipt, got dict",
        id="apply-dict-receipt",
    ),
    pytest.param(
        lambda s: s.atomic_apply(RT, None, receipt(), [{"input_id": str(I1)}]),
        TypeError,
        r"input_updates\[0\] must be StoredInputState, got dict",
        id="apply-dict-input",
    ),
    pytest.param(
        lambda s: s.atomic_apply(RT, None, receipt(), [stored(I1), stored(I2).state]),
        TypeError,
        r"input_updates\[1\] must be StoredInputState, got InputState",
        id="apply-shell-input",
    ),
    pytest.param(
        lambda s: s.atomic_apply(RT, None, receipt(), stored(I1)),
        TypeError,
        "input_updates must be a sequence of StoredInputState, got StoredInputState",
        id="apply-input-not-a-list",
    ),
    pytest.param(
        lambda s: s.atomic_apply(RT, session(), receipt(), [], str(SID)),
        TypeError,
        "session_store_key must be SessionId or None, got str",
        id="apply-str-key",
    ),
    pytest.param(
        lambda s: s.atomic_apply(RT, session(), receipt(), [], ma.RunId(SID.value)),
        TypeError,
        "session_store_key must be SessionId or None, got RunId",
        id="apply-run-id-key",
    ),
    pytest.param(
        lambda s: s.load_input_states("runtime-a"),
        TypeError,
        "runtime_id must be LogicalRuntimeId, got str",
        id="load-inputs-str-runtime",
    ),
    pytest.param(
        lambda s: s.load_input_state(RT, ma.RunId(I1.value)),
        TypeError,
        "input_id must be InputId, got RunId",
        id="load-input-run-id",
    ),
    pytest.param(
        lambda s: s.load_input_state(RT, str(I1)),
        TypeError,
        "input_id must be InputId, got str",
        id="load-input-str-id",
    ),
    pytest.param(
        lambda s: s.persist_input_state(RT, {"input_id": str(I1)}),
        TypeError,
        "state must be StoredInputState, got dict",
        id="persist-dict",
    ),
    pytest.param(
        lambda s: s.persist_input_state(None, stored(I1)),
        TypeError,
        "runtime_id must be LogicalRuntimeId, got NoneType",
        id="persist-none-runtime",
    ),
    pytest.param(
        lambda s: s.load_boundary_receipt(RT, I1, 7),
        TypeError,
        "run_id must be RunId, got InputId",
        id="receipt-input-id",
    ),
    pytest.param(
        lambda s: s.load_boundary_receipt(RT, RUN, -1),
        ValueError,
        r"sequence must be in \[0, 2\*\*64-1\], got -1",
        id="receipt-negative-sequence",
    ),
    pytest.param(
        lambda s: s.load_boundary_receipt(RT, RUN, 2**64),
        ValueError,
        r"sequence must be in \[0, 2\*\*64-1\], got 18446744073709551616",
        id="receipt-oversized-sequence",
    ),
    pytest.param(
        lambda s: s.load_boundary_receipt(RT, RUN, True),
        TypeError,
        "sequence must be int, got bool",
        id="receipt-bool-sequence",
    ),
    pytest.param(
        lambda s: s.load_boundary_receipt(RT, RUN, "7"),
        TypeError,
        "sequence must be int, got str",
        id="receipt-str-sequence",
    ),
    pytest.param(
        lambda s: s.load_session_snapshot(str(RT)),
        TypeError,
        "runtime_id must be LogicalRuntimeId, got str",
        id="load-session-str-runtime",
    ),
    pytest.param(
        lambda s: s.load_runtime_state(SID),
        TypeError,
        "runtime_id must be LogicalRuntimeId, got SessionId",
        id="load-state-session-id",
    ),
    pytest.param(
        lambda s: s.commit_machine_lifecycle(RT, RS.RUNNING, []),
        TypeError,
        "commit must be MachineLifecycleCommit, got RuntimeState",
        id="lifecycle-raw-state",
    ),
    pytest.param(
        lambda s: s.commit_machine_lifecycle(RT, COMMIT, [stored(I1), I2]),
        TypeError,
        r"input_states\[1\] must be StoredInputState, got InputId",
        id="lifecycle-bad-element",
    ),
    pytest.param(
        lambda s: s.commit_machine_lifecycle(RT, COMMIT, None),
        TypeError,
        "input_states must be a sequence of StoredInputState, got NoneType",
        id="lifecycle-none-states",
    ),
    pytest.param(
        lambda s: s.persist_ops_lifecycle(RT, {"epoch_id": "e"}),
        TypeError,
        "snapshot must be PersistedOpsSnapshot, got dict",
        id="ops-dict",
    ),
    pytest.param(
        lambda s: s.load_ops_lifecycle("runtime-a"),
        TypeError,
        "runtime_id must be LogicalRuntimeId, got str",
        id="load-ops-str-runtime",
    ),
]


@pytest.mark.parametrize(("call", "error", "message"), BAD_CALLS)
async def test_bad_arguments_are_refused_before_reaching_the_actor(store, call, error, message):
    await populate(store)
    before = await everything(store)
    stats = store.statistics()
    with pytest.raises(error, match=message):
        await call(store)
    after = store.statistics()
    assert after.commands == stats.commands
    assert after.batches == stats.batches
    assert await everything(store) == before


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: ma.LogicalRuntimeId(""), ValueError, "non-empty"),
        (lambda: receipt(-1), ValueError, r"sequence must be in \[0, 2\*\*64-1\], got -1"),
        (lambda: receipt(2**64), ValueError, r"sequence must be in \[0, 2\*\*64-1\]"),
        (lambda: ma.SessionDelta(bytearray(b"{}")), TypeError, "session_snapshot must be bytes"),
        (lambda: ma.SessionDelta("{}"), TypeError, "session_snapshot must be bytes, got str"),
    ],
)
def test_bad_values_cannot_even_be_built(build, error, message):
    with pytest.raises(error, match=message):
        build()


async def test_open_store_validates_its_arguments():
    with pytest.raises(TypeError, match="session_codec must be an object with a session_id"):
        async with ma.open_store(session_codec=object()):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match=r"got <class 'meerkat_actor\._session_codec\.Meerkat"):
        async with ma.open_store(session_codec=ma.MeerkatSessionCodec):  # the class
            pass  # pragma: no cover
    with pytest.raises(ValueError, match="max_pending must be at least 1, got 0"):
        async with ma.open_store(max_pending=0):
            pass  # pragma: no cover
    with pytest.raises(TypeError, match="max_batch must be int, got bool"):
        async with ma.open_store(max_batch=True):
            pass  # pragma: no cover


# --- cancellation ----------------------------------------------------------------------------


async def test_call_cancelled_before_sending_never_reaches_the_store(store):
    await populate(store)
    before = await everything(store)
    commands = store.statistics().commands
    with trio.move_on_after(0) as scope:
        await store.atomic_apply(RT, session(SID, turn=2), receipt(8), [stored(I2)])
    assert scope.cancelled_caught
    with trio.CancelScope() as scope:
        scope.cancel()
        await store.persist_auth_oauth_flow_snapshot(b"never")
    assert scope.cancelled_caught
    assert store.statistics().commands == commands
    assert await everything(store) == before
    # The store works afterwards.
    await store.atomic_apply(RT, None, receipt(8), [stored(I2)])
    assert await store.load_input_state(RT, I2) == stored(I2)


class _CancellingCodec:
    """The default codec, but cancels `scope` when called: that is, while the
    caller's command is inside the actor and the caller is waiting for it."""

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None

    def session_id(self, snapshot: bytes) -> ma.SessionId:
        if self.scope is not None:
            self.scope.cancel()
        return ma.MeerkatSessionCodec().session_id(snapshot)


async def test_call_cancelled_while_waiting_completes_atomically():
    codec = _CancellingCodec()
    async with ma.open_store(session_codec=codec) as store:
        with trio.fail_after(TIMEOUT), trio.CancelScope() as scope:
            codec.scope = scope
            await store.atomic_apply(RT, session(), receipt(), [stored(I1), stored(I2)])
            await trio.sleep_forever()  # the pending cancellation lands here
        codec.scope = None
        assert scope.cancelled_caught
        # The command was sent, so it completed, wholly.
        assert await store.load_session_snapshot(RT) == session().session_snapshot
        assert await store.load_boundary_receipt(RT, RUN, 7) == receipt()
        assert await store.load_input_states(RT) == [stored(I1), stored(I2)]
        # And the actor is fine.
        await store.atomic_apply(RT, session(SID, turn=2), receipt(8), [stored(I3)])
        assert await store.load_input_state(RT, I3) == stored(I3)


async def test_a_cancelled_call_takes_effect_before_the_next_call_of_its_task(store):
    with trio.CancelScope() as scope:

        def append_a(current):
            scope.cancel()  # cancel the caller while its command is in the actor
            return (current or b"") + b"a"

        await store.update_auth_oauth_flow_snapshot(append_a)
        await trio.sleep_forever()
    assert scope.cancelled_caught
    await store.update_auth_oauth_flow_snapshot(lambda current: current + b"b")
    assert await store.load_auth_oauth_flow_snapshot() == b"ab"


async def test_operations_of_one_task_take_effect_in_issue_order(store):
    for n in range(50):
        await store.persist_auth_oauth_flow_snapshot(str(n).encode())
        await store.commit_session_snapshot(RT, session(SID, turn=n))
    assert await store.load_auth_oauth_flow_snapshot() == b"49"
    assert await store.load_session_snapshot(RT) == session(SID, turn=49).session_snapshot


async def test_many_cancelled_writers_leave_every_call_all_or_nothing():
    # A small channel makes some writers block in send, some wait for a
    # reply, some never start: cancel them all at an arbitrary moment.
    async with ma.open_store(max_pending=4, max_batch=3) as store:
        runtimes = [ma.LogicalRuntimeId(f"rt-{n}") for n in range(200)]

        async def writer(rt):
            await store.atomic_apply(rt, session(), receipt(), [stored(I1), stored(I2)])

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for rt in runtimes:
                    nursery.start_soon(writer, rt)
                for _ in range(5):
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
        landed = 0
        for rt in runtimes:
            parts = (
                await store.load_session_snapshot(rt) is not None,
                await store.load_boundary_receipt(rt, RUN, 7) is not None,
                await store.load_input_states(rt) == [stored(I1), stored(I2)],
            )
            assert parts in {(True, True, True), (False, False, False)}, rt
            landed += parts[0]
        assert landed == store.statistics().commands
        assert 0 < landed < len(runtimes)
        # The store still works.
        await store.atomic_apply(RT, session(), receipt(), [stored(I3)])
        assert await store.load_input_states(RT) == [stored(I3)]


# --- actor failure -------------------------------------------------------------------------


class _ActorBug(RuntimeError):
    pass


def _break_core_on(monkeypatch, should_fail):
    """Make the pure core raise `_ActorBug` for commands matching `should_fail`."""
    real_plan = _core.plan
    raised: list[BaseException] = []

    def plan(state, command, codec):
        if should_fail(command):
            raised.append(_ActorBug(f"bug applying {type(command).__name__}"))
            raise raised[-1]
        return real_plan(state, command, codec)

    monkeypatch.setattr(_core, "plan", plan)
    return raised


def _is_poisoned_ops(command):
    return isinstance(command, _core.PersistOpsLifecycle) and command.snapshot.epoch_id == "bug"


ALL_CALLS = [
    pytest.param(lambda s: s.persist_auth_oauth_flow_snapshot(b"x"), id="persist_oauth"),
    pytest.param(lambda s: s.load_auth_oauth_flow_snapshot(), id="load_oauth"),
    pytest.param(lambda s: s.update_auth_oauth_flow_snapshot(lambda c: b"x"), id="update_oauth"),
    pytest.param(lambda s: s.commit_session_snapshot(RT, session()), id="commit_session"),
    pytest.param(lambda s: s.atomic_apply(RT, session(), receipt(9), []), id="atomic_apply"),
    pytest.param(lambda s: s.load_input_states(RT), id="load_input_states"),
    pytest.param(lambda s: s.load_input_state(RT, I1), id="load_input_state"),
    pytest.param(lambda s: s.persist_input_state(RT, stored(I1)), id="persist_input_state"),
    pytest.param(lambda s: s.load_boundary_receipt(RT, RUN, 7), id="load_receipt"),
    pytest.param(lambda s: s.load_session_snapshot(RT), id="load_session"),
    pytest.param(lambda s: s.load_runtime_state(RT), id="load_runtime_state"),
    pytest.param(lambda s: s.commit_machine_lifecycle(RT, COMMIT, []), id="commit_lifecycle"),
    pytest.param(
        lambda s: s.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("e")), id="persist_ops"
    ),
    pytest.param(lambda s: s.load_ops_lifecycle(RT), id="load_ops"),
]


async def test_actor_failure_reaches_the_caller_as_internal(monkeypatch, caplog):
    raised = _break_core_on(monkeypatch, _is_poisoned_ops)
    async with ma.open_store() as store:
        await populate(store)
        with trio.fail_after(TIMEOUT), pytest.raises(ma.Internal) as info:
            await store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("bug"))
        assert info.value.__cause__ is raised[0]
        assert isinstance(info.value, ma.RuntimeStoreError)
        assert "failed" in repr(store)
    assert any("storage actor died" in r.getMessage() for r in caplog.records)
    assert any(r.levelno >= logging.ERROR for r in caplog.records)


@pytest.mark.parametrize("call", ALL_CALLS)
async def test_every_call_after_an_actor_failure_gets_internal(monkeypatch, call):
    raised = _break_core_on(monkeypatch, _is_poisoned_ops)
    async with ma.open_store() as store:
        await populate(store)
        with trio.fail_after(TIMEOUT):
            with pytest.raises(ma.Internal):
                await store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("bug"))
            with pytest.raises(ma.Internal) as info:
                await call(store)
            assert info.value.__cause__ is raised[0]
            # Still Internal on a second try: the failure is permanent.
            with pytest.raises(ma.Internal):
                await call(store)


async def test_actor_failure_answers_every_waiting_caller(monkeypatch):
    _break_core_on(monkeypatch, _is_poisoned_ops)
    outcomes: list[str] = []

    async def writer(store, n):
        try:
            if n == 10:
                await store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("bug"))
            else:
                await store.persist_input_state(RT, stored(ma.InputId(uuid.UUID(int=n))))
        except ma.Internal:
            outcomes.append("internal")
        else:
            outcomes.append("ok")

    async with ma.open_store(max_pending=8, max_batch=4) as store:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for n in range(40):
                    nursery.start_soon(writer, store, n)
        assert len(outcomes) == 40
        assert outcomes.count("internal") >= 1
        with pytest.raises(ma.Internal):
            await store.load_input_states(RT)


async def test_base_exception_in_the_actor_does_not_leave_callers_hanging(monkeypatch):
    class Abort(BaseException):
        pass

    # Keep hold of every reply slot so a hanging caller can be released at
    # the end (the wait is shielded: a timeout cannot reach it).
    replies: list[_actor.Reply] = []
    real_reply = _actor.Reply

    class TrackedReply(real_reply):
        __slots__ = ()

        def __init__(self) -> None:
            super().__init__()
            replies.append(self)

    monkeypatch.setattr(_actor, "Reply", TrackedReply)
    outcome: list[BaseException | None] = []
    answered = trio.Event()

    def update(current):
        raise Abort

    async def caller(store):
        try:
            await store.update_auth_oauth_flow_snapshot(update)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)
        answered.set()

    released = RuntimeError("released by the test: the store never replied")
    async with trio.open_nursery() as outer:
        try:
            async with ma.open_store() as store:
                outer.start_soon(caller, store)
                with trio.move_on_after(1):
                    await answered.wait()
        except* Abort:
            pass  # the actor's death may take the store's nursery down with it
        await trio.testing.wait_all_tasks_blocked()
        for reply in replies:
            if not reply.done.is_set():
                reply.set(released)
    assert len(outcome) == 1
    assert outcome[0] is not released, "the caller was never answered"
    assert isinstance(outcome[0], (ma.RuntimeStoreError, Abort))


# --- closing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ALL_CALLS)
async def test_every_method_raises_store_closed_after_close(call):
    async with ma.open_store() as store:
        await populate(store)
    with pytest.raises(ma.StoreClosed, match="closed"):
        await call(store)
    assert "closed" in repr(store)


async def _close_while_writers_queue(max_pending: int, writers: int = 100):
    """Start `writers` OAuth updates, then close the store as soon as the actor
    has applied the first one: the rest are queued in (or blocked on) the
    channel when the `async with` block exits. One command per batch keeps the
    actor from draining the queue before the close."""
    ran: list[int] = []
    ran_at_close: list[int] = []
    outcomes: dict[int, str] = {}
    first_applied = trio.Event()

    async def writer(store, n):
        def update(current):
            ran.append(n)
            first_applied.set()
            return str(n).encode()

        try:
            await store.update_auth_oauth_flow_snapshot(update)
        except ma.StoreClosed:
            outcomes[n] = "closed"
        else:
            outcomes[n] = "ok"

    with trio.fail_after(TIMEOUT):
        async with (
            trio.open_nursery() as nursery,
            ma.open_store(max_pending=max_pending, max_batch=1) as store,
        ):
            for n in range(writers):
                nursery.start_soon(writer, store, n)
            await first_applied.wait()
            ran_at_close.extend(ran)
    assert len(outcomes) == writers
    # A command ran exactly once and its caller was told so, or it never ran.
    assert len(ran) == len(set(ran))
    assert sorted(ran) == sorted(n for n, outcome in outcomes.items() if outcome == "ok")
    assert store.statistics().commands == len(ran)
    return ran_at_close, ran, outcomes


async def test_commands_sent_before_close_complete():
    ran_at_close, ran, outcomes = await _close_while_writers_queue(max_pending=128)
    # Every writer had sent its command before the close: all of them ran,
    # most of them after the block had exited.
    assert set(outcomes.values()) == {"ok"}
    assert len(ran) == 100
    assert len(ran_at_close) < 10


async def test_senders_blocked_on_a_full_channel_at_close_get_store_closed():
    _, ran, outcomes = await _close_while_writers_queue(max_pending=4)
    assert 0 < len(ran) < 100
    assert "closed" in outcomes.values()


async def test_closing_by_an_exception_answers_every_queued_caller():
    # When the block exits by an exception the actor is cancelled with
    # commands still queued: each caller gets an answer of its own (a
    # command ran and was acknowledged, or was refused with its own
    # StoreClosed and left nothing behind), and nobody hangs.
    ran: list[int] = []
    outcomes: dict[int, BaseException | None] = {}
    first_applied = trio.Event()

    class HostCrashed(Exception):
        pass

    async def writer(store, n):
        def update(current):
            ran.append(n)
            first_applied.set()
            return b"%d" % n

        try:
            await store.update_auth_oauth_flow_snapshot(update)
        except ma.StoreClosed as exc:
            outcomes[n] = exc
        else:
            outcomes[n] = None

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            try:
                async with ma.open_store(max_batch=1) as store:
                    for n in range(50):
                        nursery.start_soon(writer, store, n)
                    await first_applied.wait()
                    raise HostCrashed
            except* HostCrashed:
                pass
    assert len(outcomes) == 50
    assert sorted(ran) == sorted(n for n, error in outcomes.items() if error is None)
    refusals = [error for error in outcomes.values() if error is not None]
    assert len({id(error) for error in refusals}) == len(refusals)
    assert store.statistics().commands == len(ran)


async def test_writes_acknowledged_before_close_are_counted():
    async with ma.open_store() as store:
        await populate(store)
        stats = store.statistics()
    assert stats.commands == 4
    assert store.statistics() == stats


# --- statistics and the handle ------------------------------------------------------------------


async def test_statistics_make_sense():
    async with ma.open_store(max_pending=64) as store:
        fresh = store.statistics()
        assert fresh == ma.StoreStatistics(
            commands=0,
            refused=0,
            batches=0,
            largest_batch=0,
            effects=0,
            records=0,
            fsyncs=0,
            bytes_written=0,
            checkpoints=0,
            pending=0,
            max_pending=64,
        )
        await store.atomic_apply(RT, session(), receipt(), [stored(I1)])  # 3 effects
        with pytest.raises(ma.ReceiptConflict):
            await store.atomic_apply(RT, None, receipt(), [])
        await store.load_input_states(RT)  # reads are not commands
        stats = store.statistics()
        assert (stats.commands, stats.refused, stats.effects) == (2, 1, 3)
        assert stats.batches == 2
        assert stats.largest_batch == 1

        async with trio.open_nursery() as nursery:
            for n in range(50):
                input_id = ma.InputId(uuid.UUID(int=n))
                nursery.start_soon(store.persist_input_state, OTHER, stored(input_id))
        stats = store.statistics()
        assert stats.commands == 52
        assert stats.effects == 53
        assert stats.largest_batch > 1
        assert stats.batches < 52
        assert (stats.fsyncs, stats.bytes_written, stats.checkpoints, stats.pending) == (0, 0, 0, 0)
        assert len(await store.load_input_states(OTHER)) == 50
        with pytest.raises(dataclasses.FrozenInstanceError):
            stats.commands = 0  # type: ignore[misc]


async def test_largest_batch_respects_max_batch():
    async with ma.open_store(max_batch=5) as store:
        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(store.persist_auth_oauth_flow_snapshot, b"%d" % n)
        stats = store.statistics()
        assert stats.commands == 40
        assert 1 < stats.largest_batch <= 5
        assert stats.batches >= 8


async def test_in_memory_store_handle(store):
    assert store.auth_authority_key() is None
    assert isinstance(store, ma.RuntimeStore)
    assert "in-memory" in repr(store)
    assert "open" in repr(store)
    with pytest.raises(TypeError, match="no public constructor"):
        type(store)()


async def test_store_is_shared_between_tasks(store):
    async def write(n):
        await store.persist_input_state(RT, stored(ma.InputId(uuid.UUID(int=n))))

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(write, n)
    loaded = await store.load_input_states(RT)
    assert [s.input_id.value.int for s in loaded] == list(range(20))


async def test_input_updates_must_be_an_ordered_sequence():
    # The order decides which of two states for one input wins, so a set or
    # a generator (whose order is not the caller's) is refused.
    first = ma.StoredInputState.new_accepted(ma.InputId.new())
    async with ma.open_store() as store:
        for updates in ({first}, (s for s in [first])):
            with pytest.raises(TypeError, match="input_updates must be a sequence of"):
                await store.atomic_apply(RT, None, receipt(0), updates)
        assert await store.load_input_states(RT) == []
        assert store.statistics().commands == 0


async def test_session_key_mismatch_pickles_with_its_runtime():
    expected, actual = ma.SessionId.new(), ma.SessionId.new()
    error = ma.SessionKeyMismatch(expected, actual, runtime_id="rt-x")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.expected, copy.actual, copy.runtime_id) == (expected, actual, "rt-x")
    assert str(copy) == str(error)
    assert "rt-x" in str(copy)


# --- an async OAuth updater (issue 16) ------------------------------------------------------


async def async_update(current: bytes | None) -> bytes:
    return b"never stored"


class AsyncCall:
    async def __call__(self, current: bytes | None) -> bytes:
        return b"never stored"


class AsyncMethod:
    async def update(self, current: bytes | None) -> bytes:
        return b"never stored"


async def async_generator(current: bytes | None):
    yield b"never stored"


ASYNC_UPDATERS = [
    pytest.param(async_update, id="async-def"),
    pytest.param(functools.partial(async_update), id="partial"),
    pytest.param(functools.partial(functools.partial(async_update)), id="partial-of-partial"),
    pytest.param(AsyncCall(), id="async-__call__"),
    pytest.param(functools.partial(AsyncCall()), id="partial-of-async-__call__"),
    pytest.param(AsyncMethod().update, id="bound-async-method"),
    pytest.param(async_generator, id="async-generator"),
]


@asynccontextmanager
async def any_store(kind: str, tmp_path):
    """The three stores of this package, by name."""
    if kind == "memory":
        opener = ma.open_store()
    elif kind == "durable":
        opener = ma.open_store(tmp_path / "store")
    else:
        opener = ma.open_sqlite_store(tmp_path / "store.sqlite3")
    async with opener as store:
        yield store


BACKENDS = ["memory", "durable", "sqlite"]


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("update", ASYNC_UPDATERS)
async def test_an_async_updater_is_refused_before_anything_reaches_the_store(
    kind, update, tmp_path
):
    async with any_store(kind, tmp_path) as store:
        await populate(store)
        before = await everything(store)
        counted = store.statistics().commands
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(TypeError) as info:
                await store.update_auth_oauth_flow_snapshot(update)
            gc.collect()  # a coroutine created and dropped would warn now
        message = str(info.value)
        assert message.startswith("update must be a plain function")
        assert "async" in message
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught
        # It never reached the store: not counted, and nothing changed.
        assert store.statistics().commands == counted
        assert await everything(store) == before
        # The store keeps working, with a plain function.
        await store.update_auth_oauth_flow_snapshot(lambda current: current + b"!")
        assert await store.load_auth_oauth_flow_snapshot() == b"oauth-0!"


@pytest.mark.parametrize("kind", BACKENDS)
async def test_an_updater_that_returns_a_coroutine_is_refused_and_the_coroutine_closed(
    kind, tmp_path
):
    made = []

    def sneaky(current: bytes | None):
        made.append(async_update(current))  # a plain function, but async inside
        return made[-1]

    async with any_store(kind, tmp_path) as store:
        await populate(store)
        before = await everything(store)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(TypeError, match="update must be a plain function") as info:
                await store.update_auth_oauth_flow_snapshot(sneaky)
            [coroutine] = made
            assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
            del coroutine
            made.clear()
            gc.collect()
        assert "returned an awaitable (coroutine)" in str(info.value)
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught
        assert await everything(store) == before
        assert store.statistics().refused == 1  # this one did reach the store


@pytest.mark.parametrize(
    "update",
    [
        pytest.param(lambda current: b"plain", id="lambda"),
        pytest.param(functools.partial(lambda suffix, current: suffix, b"plain"), id="partial"),
        pytest.param(type("Call", (), {"__call__": lambda self, current: b"plain"})(), id="obj"),
    ],
)
async def test_plain_updaters_are_not_mistaken_for_async_ones(store, update):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await store.update_auth_oauth_flow_snapshot(update)
    assert await store.load_auth_oauth_flow_snapshot() == b"plain"
