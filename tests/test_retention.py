"""Discovery and retention (SPEC §3b) on every store: in memory, durable, SQLite.

Every test runs once per store (`backend`). A test that checks what survives
closing writes in a store left *uncleanly* (the durable store: by
cancellation, so no final checkpoint runs and the next open must replay the
log records of the new effects), then `Backend.check_reopen` opens it three
times: after that unclean stop, after a clean close (a checkpoint) and from
the snapshot that close wrote. The in-memory store has nothing to reopen.

"Nothing changed" is always checked on the whole readable state (`view`):
`list_runtimes`, the OAuth snapshot, and for each runtime listed or named
every load, `load_boundary_receipts` included, and the single-key loads of
every input id and receipt key this file uses. "Reads as never written" is
the view of a runtime in a fresh in-memory store.

Only `import meerkat_actor as ma` is used against the stores; the SQLite
file and the durable directory are inspected with `sqlite3` and plain file
reads.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import sqlite3
import tempfile
import unicodedata
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from _values import T0, input_state, receipt, session, session_json, stored_seed
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sqlite_interop import EXPECTED_COLUMNS, rows, table_info

import meerkat_actor as ma
from meerkat_actor import InputLifecycleState as PHASE
from meerkat_actor import RuntimeState as RS
from meerkat_actor._codec import dumps_json

LRI = ma.LogicalRuntimeId
RT = LRI("rt")
OTHER = LRI("rt2")  # RT's string is a prefix of OTHER's
WILD = LRI("r_")  # LIKE wildcards: a pattern match of "r_" or "rt%" would catch RT
WILD2 = LRI("rt%")
T1 = T0 + timedelta(minutes=5, microseconds=7)

# Run ids whose UUID order (r1 < r2 < ... ) differs from their insertion order,
# from the order of their little-endian bytes (r1, r2) and from time order.
R1 = ma.RunId(uuid.UUID("00000001-0000-4000-8000-000000000000"))
R2 = ma.RunId(uuid.UUID("00000100-0000-4000-8000-000000000000"))
R3 = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-000000000001"))  # a UUIDv7
R4 = ma.RunId(uuid.UUID("7fffffff-ffff-4fff-bfff-ffffffffffff"))
R5 = ma.RunId(uuid.UUID("80000000-0000-4000-8000-000000000000"))  # top bit set
R6 = ma.RunId(uuid.UUID("ffffffff-ffff-ffff-ffff-ffffffffffff"))
RUNS = (R1, R2, R3, R4, R5, R6)
U63 = 2**63
U64_MAX = 2**64 - 1
SEQUENCES = (0, 1, 5, U63 - 1, U63, U63 + 1, U64_MAX)


def iid(n: int) -> ma.InputId:
    return ma.InputId(uuid.UUID(int=n))


I1, I2, I3, I4, I5, I6 = (iid(n << 100) for n in (1, 2, 3, 4, 5, 6))
UNKNOWN = iid(0xDEAD)
INPUT_IDS = (I1, I2, I3, I4, I5, I6, UNKNOWN)
RECEIPT_KEYS = tuple((run, seq) for run in (R1, R5) for seq in (0, U63, U64_MAX))

MARKER = "PURGE-MARKER-4f1c9e"
PAYLOAD_MARKER = "RETIRE-MARKER-77ab03"

# --- values ------------------------------------------------------------------------------

NON_TERMINAL = [PHASE.ACCEPTED, PHASE.QUEUED, PHASE.STAGED, PHASE.APPLIED]
NON_TERMINAL.append(PHASE.APPLIED_PENDING_CONSUMPTION)
OUTCOMES = {
    PHASE.CONSUMED: ma.InputTerminalOutcome.consumed(),
    PHASE.SUPERSEDED: ma.InputTerminalOutcome.superseded(I6),
    PHASE.COALESCED: ma.InputTerminalOutcome.coalesced(I6),
    PHASE.ABANDONED: ma.InputTerminalOutcome.abandoned(
        ma.InputAbandonReason.max_attempts_exhausted(3)
    ),
}
TERMINAL = list(OUTCOMES)


def shell(input_id: ma.InputId, payload: Any = None, **fields: Any) -> ma.InputState:
    """A shell with every field set to something other than its default."""
    defaults: dict[str, Any] = {
        "created_at": T0,
        "updated_at": T1,
        "history": (
            ma.InputStateHistoryEntry(T0, PHASE.ACCEPTED, PHASE.QUEUED, "queued"),
            ma.InputStateHistoryEntry(T1, PHASE.QUEUED, PHASE.STAGED, None),
        ),
        "policy": {"mode": "steer", "weights": [1, 2.5]},
        "runtime_semantics": {"kind": "prompt"},
        "durability": ma.InputDurability.DURABLE,
        "idempotency_key": f"idem-{input_id}",
        "recovery_count": 2,
        "reconstruction_source": {"from": "journal", "offset": 9},
        "persisted_input": payload,
    }
    return input_state(input_id, **{**defaults, **fields})


def finished(
    input_id: ma.InputId,
    phase: PHASE = PHASE.CONSUMED,
    payload: Any = None,
    **fields: Any,
) -> ma.StoredInputState:
    """A terminal input state (phase and its outcome) carrying `payload`."""
    if payload is None:
        payload = {"text": f"payload of {input_id}", "parts": [1, {"k": None}]}
    seed = ma.InputStateSeed(
        phase=phase,
        last_run_id=R3,
        last_boundary_sequence=U64_MAX,
        terminal_outcome=OUTCOMES[phase],
        attempt_count=3,
    )
    return ma.StoredInputState(shell(input_id, payload, **fields), seed)


def pending(
    input_id: ma.InputId,
    phase: PHASE = PHASE.QUEUED,
    outcome: ma.InputTerminalOutcome | None = None,
) -> ma.StoredInputState:
    """A state with a payload that is not terminal (phase or outcome). With
    an `outcome` its seed is one only a store can hold (`stored_seed`)."""
    if outcome is None:
        seed = ma.InputStateSeed(phase=phase, attempt_count=1)
    else:
        seed = stored_seed(phase, outcome, attempts=1)
    return ma.StoredInputState(shell(input_id, {"text": "still needed"}), seed)


def retired(state: ma.StoredInputState) -> ma.StoredInputState:
    """What `retire_input_payloads` must leave of `state`."""
    return dataclasses.replace(state, state=dataclasses.replace(state.state, persisted_input=None))


ORIGIN = {
    RS.IDLE: RS.INITIALIZING,
    RS.ATTACHED: RS.IDLE,
    RS.RUNNING: RS.IDLE,
    RS.RETIRED: RS.IDLE,
    RS.STOPPED: RS.IDLE,
    RS.DESTROYED: RS.STOPPED,
}


def to(state: RS) -> ma.MachineLifecycleCommit:
    """A commit token carrying `state` (the store does not check where from)."""
    return ma.machine_transition(ORIGIN[state], state)


def ops(epoch: str = "epoch-1") -> ma.PersistedOpsSnapshot:
    return ma.PersistedOpsSnapshot(epoch, {"authority": [1, 2]}, ["spec"], None, {"c": epoch})


# --- the three stores ----------------------------------------------------------------------


@dataclasses.dataclass
class Backend:
    kind: str
    tmp: Path

    @property
    def persistent(self) -> bool:
        return self.kind != "memory"

    @property
    def location(self) -> Path:
        return self.tmp / ("store" if self.kind == "durable" else "store.sqlite3")

    @asynccontextmanager
    async def open(self, *, clean: bool = False) -> AsyncIterator[Any]:
        """The store; a durable one is left uncleanly unless `clean`."""
        if self.kind == "memory":
            async with ma.open_store() as store:
                yield store
        elif self.kind == "sqlite":
            async with ma.open_sqlite_store(self.location) as store:
                yield store
        elif clean:
            async with ma.open_store(self.location) as store:
                yield store
        else:
            with trio.CancelScope() as scope:
                async with ma.open_store(self.location) as store:
                    yield store
                    scope.cancel()
                    await trio.lowlevel.checkpoint()

    async def check_reopen(self, expected: dict[object, object], runtimes: Iterable[LRI] = ()):
        """Reopened (replaying the log, then from a checkpoint), the store shows `expected`."""
        if not self.persistent:
            return
        runtimes = list(runtimes)
        async with self.open() as store:
            assert await view(store, runtimes) == expected, "after an unclean stop"
        async with self.open(clean=True) as store:
            assert await view(store, runtimes) == expected, "after replaying the log again"
        async with self.open(clean=True) as store:
            assert await view(store, runtimes) == expected, "after a checkpoint"


@pytest.fixture(params=["memory", "durable", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return Backend(request.param, tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[Any]:
    async with backend.open() as opened:
        yield opened


async def runtime_view(store: Any, rt: LRI) -> dict[str, object]:
    return {
        "session": await store.load_session_snapshot(rt),
        "inputs": await store.load_input_states(rt),
        "each input": [await store.load_input_state(rt, i) for i in INPUT_IDS],
        "receipts": await store.load_boundary_receipts(rt),
        "each receipt": [await store.load_boundary_receipt(rt, r, s) for r, s in RECEIPT_KEYS],
        "state": await store.load_runtime_state(rt),
        "ops": await store.load_ops_lifecycle(rt),
    }


async def view(store: Any, runtimes: Iterable[LRI] = ()) -> dict[object, object]:
    """Everything the store shows: listed runtimes and `runtimes` in full."""
    listed = await store.list_runtimes()
    seen: dict[object, object] = {
        "runtimes": listed,
        "oauth": await store.load_auth_oauth_flow_snapshot(),
    }
    for rt in {*listed, RT, OTHER, *runtimes}:
        seen[rt] = await runtime_view(store, rt)
    return seen


async def never_written(rt: LRI = RT) -> dict[str, object]:
    async with ma.open_store() as fresh:
        return await runtime_view(fresh, rt)


async def fill(store: Any, rt: LRI, tag: str = "") -> None:
    """Something in every part of `rt`: session, inputs (terminal and not),
    receipts, runtime state idle, ops snapshot."""
    await store.atomic_apply(
        rt,
        session(turn=1, tag=tag),
        receipt(0, R5, conversation_digest=f"digest{tag}"),
        [finished(I1, PHASE.CONSUMED), pending(I2)],
    )
    await store.atomic_apply(rt, None, receipt(U64_MAX, R1), [finished(I3, PHASE.ABANDONED)])
    await store.atomic_apply(rt, None, receipt(U63, R5), [])
    await store.commit_machine_lifecycle(rt, to(RS.IDLE), [finished(I4, PHASE.SUPERSEDED)])
    await store.persist_ops_lifecycle(rt, ops(f"epoch{tag}"))


# --- list_runtimes --------------------------------------------------------------------------


async def test_a_fresh_store_lists_no_runtimes(store):
    assert await store.list_runtimes() == []
    await store.persist_auth_oauth_flow_snapshot(b"oauth")
    await store.update_auth_oauth_flow_snapshot(lambda current: (current or b"") + b"!")
    # The store-wide OAuth snapshot belongs to no runtime.
    assert await store.list_runtimes() == []


async def test_each_kind_of_record_alone_lists_its_runtime(backend):
    only_session, only_input = LRI("only-session"), LRI("only-input")
    only_receipt, only_state = LRI("only-receipt"), LRI("only-state")
    only_ops, only_state_destroyed = LRI("only-ops"), LRI("only-state-destroyed")
    only_lifecycle_inputs = LRI("only-lifecycle-inputs")
    async with backend.open() as store:
        await store.commit_session_snapshot(only_session, session())
        await store.persist_input_state(only_input, pending(I1))
        await store.atomic_apply(only_receipt, None, receipt(7, R2), [])
        await store.commit_machine_lifecycle(only_state, to(RS.IDLE), [])
        await store.commit_machine_lifecycle(only_state_destroyed, to(RS.DESTROYED), [])
        await store.persist_ops_lifecycle(only_ops, ops())
        await store.commit_machine_lifecycle(
            only_lifecycle_inputs, to(RS.RUNNING), [pending(I2)], expected=None
        )
        expected = [
            only_input,
            only_lifecycle_inputs,
            only_ops,
            only_receipt,
            only_session,
            only_state,
            only_state_destroyed,
        ]
        assert await store.list_runtimes() == expected
        assert all(type(rt) is LRI for rt in await store.list_runtimes())
        # Each holds only its one thing.
        assert await store.load_boundary_receipts(only_receipt) == [receipt(7, R2)]
        assert await store.load_input_states(only_receipt) == []
        assert await store.load_session_snapshot(only_receipt) is None
        assert await store.load_runtime_state(only_ops) is None
        assert await store.load_input_states(only_state) == []
        seen = await view(store)
    assert seen["runtimes"] == expected
    await backend.check_reopen(seen)


RUNTIME_NAMES = [
    "a9",
    "a10",
    "a",
    "B",
    "Z",
    "_",
    "a b",
    "a-b",
    "ab",
    "a\x00b",  # an embedded NUL
    "a\x00",
    "A",
    "rt",
    "rt2",
    "r_",
    "rt%",
    unicodedata.normalize("NFC", "caf\u00e9"),
    unicodedata.normalize("NFD", "caf\u00e9"),  # another id, though it looks the same
    "\u65e5\u672c",
    "\ue000",  # private use, after every surrogate in UTF-16 order
    "\U0001f600",  # beyond the BMP: before U+E000 in UTF-16 order, after it by code point
    "\uffff",
    " ",
    "a ",  # a trailing space (SQLite's RTRIM collation would merge it with "a")
]


async def test_list_is_sorted_by_code_point_without_duplicates(backend):
    ids = [LRI(name) for name in RUNTIME_NAMES]
    assert len(set(ids)) == len(ids)
    async with backend.open() as store:
        for n, rt in enumerate(reversed(ids)):
            # Several records per runtime: each must be listed once.
            await store.atomic_apply(
                rt, session(tag=n), receipt(n, R3), [pending(I1), finished(I2)]
            )
            await store.atomic_apply(rt, None, receipt(n, R1), [])
            await store.commit_machine_lifecycle(rt, to(RS.IDLE), [])
            await store.persist_ops_lifecycle(rt, ops())
        listed = await store.list_runtimes()
        assert [rt.value for rt in listed] == sorted(RUNTIME_NAMES)
        for n, rt in enumerate(reversed(ids)):
            # Ids that differ only in normalization, case or trailing space stay apart.
            assert await store.load_session_snapshot(rt) == session(tag=n).session_snapshot
            assert await store.load_boundary_receipts(rt) == [receipt(n, R1), receipt(n, R3)]
        seen = await view(store)
    await backend.check_reopen(seen)


async def test_a_runtime_stays_listed_while_it_holds_anything(backend):
    async with backend.open() as store:
        await store.atomic_apply(RT, session(), receipt(1, R1), [pending(I1)])
        await store.persist_ops_lifecycle(RT, ops())
        await store.persist_input_state(OTHER, pending(I1))
        await store.commit_session_snapshot(OTHER, session())
        await store.clear_session_snapshot(RT)
        await store.delete_ops_lifecycle(RT)
        await store.clear_session_snapshot(OTHER)
        # RT still holds a receipt and an input state, OTHER an input state.
        assert await store.list_runtimes() == [RT, OTHER]
        assert await store.load_input_states(OTHER) == [pending(I1)]
        seen = await view(store)
    await backend.check_reopen(seen)


@pytest.mark.parametrize("only", ["session", "ops", "both"])
async def test_a_runtime_whose_only_things_were_removed_is_not_listed(backend, only):
    async with backend.open() as store:
        await store.persist_input_state(OTHER, pending(I1))
        if only in ("session", "both"):
            await store.commit_session_snapshot(RT, session())
        if only in ("ops", "both"):
            await store.persist_ops_lifecycle(RT, ops())
        assert await store.list_runtimes() == [RT, OTHER]
        await store.clear_session_snapshot(RT)
        await store.delete_ops_lifecycle(RT)
        assert await store.list_runtimes() == [OTHER]
        seen = await view(store)
    assert seen[RT] == await never_written()
    await backend.check_reopen(seen)


async def test_no_op_removals_and_empty_retires_do_not_list_a_runtime(backend):
    ghost = LRI("ghost")
    async with backend.open() as store:
        await store.clear_session_snapshot(ghost)
        await store.delete_ops_lifecycle(ghost)
        await store.retire_input_payloads(ghost, [])
        assert await store.list_runtimes() == []
        await store.persist_ops_lifecycle(RT, ops())
        await store.clear_session_snapshot(RT)  # RT has no session snapshot
        assert await store.list_runtimes() == [RT]
        seen = await view(store, [ghost])
    assert seen[ghost] == await never_written(ghost)
    await backend.check_reopen(seen, [ghost])


async def test_list_runtimes_sees_every_acknowledged_write_of_concurrent_callers(store):
    names = [LRI(f"task-{n:03d}") for n in range(40)]

    async def write(rt: LRI) -> None:
        await store.persist_input_state(rt, pending(I1))
        assert rt in await store.list_runtimes()

    async with trio.open_nursery() as nursery:
        for rt in names:
            nursery.start_soon(write, rt)
    assert await store.list_runtimes() == names


# --- load_boundary_receipts -----------------------------------------------------------------


async def test_receipts_are_sorted_by_run_uuid_then_sequence_as_numbers(backend):
    keys = [(run, seq) for run in RUNS for seq in SEQUENCES]
    # An insertion order unrelated to the sorted one.
    order = sorted(keys, key=lambda k: (str(k[1])[::-1], k[0].value.bytes_le))
    assert order != sorted(keys, key=lambda k: (k[0].value.int, k[1]))
    async with backend.open() as store:
        for n, (run, seq) in enumerate(order):
            await store.atomic_apply(RT, None, receipt(seq, run, message_count=n), [])
        # The same keys under another runtime, fewer of them.
        for run, seq in order[::5]:
            await store.atomic_apply(OTHER, None, receipt(seq, run, message_count=0), [])
        loaded = await store.load_boundary_receipts(RT)
        expected = sorted(
            (receipt(seq, run, message_count=order.index((run, seq))) for run, seq in keys),
            key=lambda r: (r.run_id.value.int, r.sequence),
        )
        assert [(r.run_id, r.sequence) for r in loaded] == [
            (r.run_id, r.sequence) for r in expected
        ]
        assert loaded == expected
        assert [r.sequence for r in loaded[: len(SEQUENCES)]] == list(SEQUENCES)
        assert await store.load_boundary_receipts(OTHER) == sorted(
            (receipt(seq, run, message_count=0) for run, seq in order[::5]),
            key=lambda r: (r.run_id.value.int, r.sequence),
        )
        seen = await view(store)
    await backend.check_reopen(seen)


async def test_receipts_of_one_run_sort_by_u64_value_not_by_signed_storage(store):
    for seq in (U64_MAX, U63, 0, U63 - 1, 2, U63 + 10, 1):
        await store.atomic_apply(RT, None, receipt(seq, R3), [])
    assert [r.sequence for r in await store.load_boundary_receipts(RT)] == [
        0,
        1,
        2,
        U63 - 1,
        U63,
        U63 + 10,
        U64_MAX,
    ]


async def test_receipts_of_unknown_or_other_runtimes_are_empty(store):
    assert await store.load_boundary_receipts(RT) == []
    await store.atomic_apply(OTHER, session(), receipt(1, R1), [pending(I1)])
    await store.atomic_apply(WILD, None, receipt(2, R1), [])
    await store.atomic_apply(WILD2, None, receipt(3, R1), [])
    await store.commit_machine_lifecycle(RT, to(RS.IDLE), [pending(I1)])
    # RT holds no receipt; "rt" is a prefix of "rt2", "r_" and "rt%" are patterns.
    assert await store.load_boundary_receipts(RT) == []
    assert await store.load_boundary_receipts(LRI("RT")) == []
    assert await store.load_boundary_receipts(OTHER) == [receipt(1, R1)]
    assert await store.load_boundary_receipts(WILD) == [receipt(2, R1)]
    assert await store.load_boundary_receipts(WILD2) == [receipt(3, R1)]


async def test_load_boundary_receipts_returns_a_fresh_list(store):
    await store.atomic_apply(RT, None, receipt(1, R1), [])
    first = await store.load_boundary_receipts(RT)
    assert type(first) is list
    first.append(receipt(2, R1))
    first.clear()
    assert await store.load_boundary_receipts(RT) == [receipt(1, R1)]
    listed = await store.list_runtimes()
    assert type(listed) is list
    listed.clear()
    assert await store.list_runtimes() == [RT]


async def test_a_refused_receipt_does_not_show_in_the_list(store):
    await store.atomic_apply(RT, None, receipt(1, R1), [])
    with pytest.raises(ma.ReceiptConflict):
        await store.atomic_apply(RT, None, receipt(1, R1, message_count=9), [])
    with pytest.raises(ma.SessionKeyMismatch):
        await store.atomic_apply(RT, session(), receipt(2, R1), [], ma.SessionId.new())
    with pytest.raises(ma.SessionKeyMismatch):
        await store.atomic_apply(OTHER, session(), receipt(2, R1), [], ma.SessionId.new())
    assert await store.load_boundary_receipts(RT) == [receipt(1, R1)]
    assert await store.list_runtimes() == [RT]


# --- clear_session_snapshot / delete_ops_lifecycle ------------------------------------------


async def test_clear_session_snapshot_removes_it_and_nothing_else(backend):
    async with backend.open() as store:
        await fill(store, RT)
        await fill(store, OTHER, "other")
        await store.persist_auth_oauth_flow_snapshot(b"oauth")
        before = await view(store)
        await store.clear_session_snapshot(RT)
        after = await view(store)
        assert await store.load_session_snapshot(RT) is None
        assert after[RT] == {**before[RT], "session": None}  # type: ignore[dict-item]
        assert {k: v for k, v in after.items() if k != RT} == {
            k: v for k, v in before.items() if k != RT
        }
        # It can be written again, by both writers of a snapshot.
        await store.clear_session_snapshot(OTHER)
        await store.commit_session_snapshot(OTHER, session(turn=3))
        await store.atomic_apply(RT, session(turn=4), receipt(9, R2), [])
        assert await store.load_session_snapshot(OTHER) == session(turn=3).session_snapshot
        assert await store.load_session_snapshot(RT) == session(turn=4).session_snapshot
        await store.clear_session_snapshot(RT)
        seen = await view(store)
    assert seen[RT]["session"] is None  # type: ignore[index]
    await backend.check_reopen(seen)


async def test_delete_ops_lifecycle_removes_it_and_nothing_else(backend):
    async with backend.open() as store:
        await fill(store, RT)
        await fill(store, OTHER, "other")
        await store.persist_auth_oauth_flow_snapshot(b"oauth")
        before = await view(store)
        await store.delete_ops_lifecycle(RT)
        after = await view(store)
        assert await store.load_ops_lifecycle(RT) is None
        assert after[RT] == {**before[RT], "ops": None}  # type: ignore[dict-item]
        assert {k: v for k, v in after.items() if k != RT} == {
            k: v for k, v in before.items() if k != RT
        }
        await store.delete_ops_lifecycle(OTHER)
        await store.persist_ops_lifecycle(OTHER, ops("again"))
        assert await store.load_ops_lifecycle(OTHER) == ops("again")
        seen = await view(store)
    await backend.check_reopen(seen)


@pytest.mark.parametrize("method", ["clear_session_snapshot", "delete_ops_lifecycle"])
async def test_removing_what_is_absent_is_a_no_op(backend, method):
    async with backend.open() as store:
        await fill(store, OTHER)
        await store.persist_input_state(RT, pending(I1))
        before = await view(store)
        await getattr(store, method)(RT)
        await getattr(store, method)(LRI("never"))
        assert await view(store) == before
        await getattr(store, method)(OTHER)
        once = await view(store)
        await getattr(store, method)(OTHER)
        assert await view(store) == once
    await backend.check_reopen(once)


# --- retire_input_payloads ------------------------------------------------------------------


@pytest.mark.parametrize("phase", TERMINAL, ids=lambda p: p.value)
async def test_retire_drops_the_payload_and_nothing_else(backend, phase):
    state = finished(I1, phase)
    async with backend.open() as store:
        await store.atomic_apply(RT, session(), receipt(1, R1), [state, pending(I2)])
        await store.persist_input_state(OTHER, state)
        before = await view(store)
        await store.retire_input_payloads(RT, [I1])
        after = await view(store)
        loaded = await store.load_input_state(RT, I1)
    assert loaded == retired(state)
    assert loaded.state.persisted_input is None
    # Every other field is the same, `updated_at` and history included.
    for field in dataclasses.fields(ma.InputState):
        if field.name != "persisted_input":
            assert getattr(loaded.state, field.name) == getattr(state.state, field.name)
    assert loaded.seed == state.seed
    assert after[RT]["inputs"] == [retired(state), pending(I2)]  # type: ignore[index]
    expected_rt = {**before[RT]}  # type: ignore[dict-item]
    expected_rt["inputs"] = [retired(state), pending(I2)]
    expected_rt["each input"] = [retired(state), pending(I2), None, None, None, None, None]
    assert after[RT] == expected_rt
    assert {k: v for k, v in after.items() if k != RT} == {
        k: v for k, v in before.items() if k != RT
    }
    await backend.check_reopen(after)


@pytest.mark.parametrize("payload", [0, False, "", [], {}, 0.0, "null"], ids=repr)
async def test_retire_drops_a_falsy_payload_too(store, payload):
    state = finished(I1, payload=payload)
    await store.persist_input_state(RT, state)
    assert (
        await store.load_input_state(RT, I1)
    ).state.persisted_input == state.state.persisted_input
    await store.retire_input_payloads(RT, [I1])
    assert await store.load_input_state(RT, I1) == retired(state)
    assert (await store.load_input_state(RT, I1)).state.persisted_input is None


async def test_retire_many_at_once_of_every_terminal_kind(backend):
    states = [finished(i, phase) for i, phase in zip((I1, I2, I3, I4), TERMINAL, strict=True)]
    async with backend.open() as store:
        await store.atomic_apply(RT, None, receipt(1, R1), [*states, pending(I5)])
        # In an order other than the stored one, with duplicates.
        await store.retire_input_payloads(RT, (I4, I2, I1, I4, I3, I2))
        assert await store.load_input_states(RT) == [*map(retired, states), pending(I5)]
        seen = await view(store)
    await backend.check_reopen(seen)


async def test_retiring_a_retired_state_or_none_is_a_no_op(backend):
    async with backend.open() as store:
        await store.persist_input_state(RT, finished(I1))
        await store.persist_input_state(RT, retired(finished(I2)))  # stored without a payload
        await store.retire_input_payloads(RT, [I1])
        before = await view(store)
        await store.retire_input_payloads(RT, [I1])
        await store.retire_input_payloads(RT, [I2, I1, I2])
        await store.retire_input_payloads(RT, [])
        await store.retire_input_payloads(RT, ())
        await store.retire_input_payloads(OTHER, [])
        after = await view(store)
    assert after == before
    assert after[RT]["inputs"] == [retired(finished(I1)), retired(finished(I2))]  # type: ignore[index]
    await backend.check_reopen(after)


NOT_RETIRABLE = [
    *[(pending(I3, phase), phase) for phase in NON_TERMINAL],
    # A terminal phase without its terminal outcome, and a terminal outcome
    # on a phase that is not terminal: no caller can build either, but a
    # store may hold one (Meerkat's Rust runtime or an older version wrote
    # it), and must not retire it.
    *[
        (dataclasses.replace(finished(I3, phase), seed=stored_seed(phase)), phase)
        for phase in TERMINAL
    ],
    (pending(I3, PHASE.QUEUED, ma.InputTerminalOutcome.consumed()), PHASE.QUEUED),
    (
        pending(I3, PHASE.APPLIED_PENDING_CONSUMPTION, OUTCOMES[PHASE.ABANDONED]),
        PHASE.APPLIED_PENDING_CONSUMPTION,
    ),
]


@pytest.mark.parametrize(
    ("bad", "phase"),
    NOT_RETIRABLE,
    ids=[
        f"{s.seed.phase.value}-outcome-{s.seed.terminal_outcome is not None}"
        for s, _ in NOT_RETIRABLE
    ],
)
@pytest.mark.parametrize("where", ["alone", "first", "middle", "last"])
async def test_retire_refuses_a_state_that_is_not_terminal_and_retires_nothing(
    backend, bad, phase, where
):
    good = [finished(I1), finished(I2, PHASE.ABANDONED)]
    ids = {
        "alone": [I3],
        "first": [I3, I1, I2],
        "middle": [I1, I3, I2],
        "last": [I1, I2, I3],
    }[where]
    async with backend.open() as store:
        await store.atomic_apply(RT, session(), receipt(1, R1), [*good, bad])
        await store.persist_input_state(OTHER, finished(I3))
        before = await view(store)
        with pytest.raises(ma.NotRetirable) as info:
            await store.retire_input_payloads(RT, ids)
        assert await view(store) == before
    error = info.value
    assert isinstance(error, ma.WriteFailed)
    assert error.runtime_id == "rt"
    assert error.input_id == I3
    assert type(error.input_id) is ma.InputId
    assert error.phase is phase
    message = str(error)
    assert "'rt'" in message
    assert str(I3) in message
    assert phase.value in message
    # Nothing of the call was applied, not even the ids listed before the bad one.
    assert before[RT]["inputs"] == [*good, bad]  # type: ignore[index]
    await backend.check_reopen(before)


async def test_retire_of_an_unknown_id_is_not_found_and_retires_nothing(backend):
    async with backend.open() as store:
        await store.atomic_apply(RT, None, receipt(1, R1), [finished(I1), finished(I2)])
        # I3 is stored, but under another runtime.
        await store.persist_input_state(OTHER, finished(I3))
        before = await view(store)
        for ids in ([I3], [I1, I2, I3], [I1, UNKNOWN], [UNKNOWN, I1]):
            with pytest.raises(ma.NotFound) as info:
                await store.retire_input_payloads(RT, ids)
            assert not isinstance(info.value, ma.NotRetirable)
            assert await view(store) == before, ids
        with pytest.raises(ma.NotFound) as info:
            await store.retire_input_payloads(LRI("never"), [I1])
        assert await view(store, [LRI("never")]) == {
            **before,
            LRI("never"): await never_written(LRI("never")),
        }
    message = str(info.value)
    assert "'never'" in message
    assert str(I1) in message
    assert isinstance(info.value, ma.RuntimeStoreError)
    await backend.check_reopen(before)


async def test_the_first_offending_id_in_the_list_decides_the_error(store):
    await store.atomic_apply(
        RT,
        None,
        receipt(1, R1),
        [finished(I1), pending(I2, PHASE.STAGED), pending(I3, PHASE.APPLIED)],
    )
    before = await view(store)
    with pytest.raises(ma.NotFound) as not_found:
        await store.retire_input_payloads(RT, [I1, UNKNOWN, I2])
    assert str(UNKNOWN) in str(not_found.value)
    with pytest.raises(ma.NotRetirable) as info:
        await store.retire_input_payloads(RT, [I1, I2, UNKNOWN])
    assert (info.value.input_id, info.value.phase) == (I2, PHASE.STAGED)
    with pytest.raises(ma.NotRetirable) as info:
        await store.retire_input_payloads(RT, [I3, I2])
    assert (info.value.input_id, info.value.phase) == (I3, PHASE.APPLIED)
    with pytest.raises(ma.NotRetirable) as info:
        await store.retire_input_payloads(RT, [I1, I1, I2, I3])
    assert (info.value.input_id, info.value.phase) == (I2, PHASE.STAGED)
    assert await view(store) == before


BAD_INPUT_IDS = [
    I1,  # a single id, not a sequence of them
    str(I1),
    [str(I1)],
    [I1, str(I2)],
    (I1, I1.value),
    [None],
    None,
    {I1},  # a set: no order
    b"ids",
    iter([I1]),
    5,
]


@pytest.mark.parametrize("input_ids", BAD_INPUT_IDS, ids=lambda v: type(v).__name__)
async def test_retire_with_wrong_input_ids_is_a_type_error_and_changes_nothing(store, input_ids):
    await store.persist_input_state(RT, finished(I1))
    await store.persist_input_state(RT, finished(I2))
    before = await view(store)
    with pytest.raises(TypeError, match="input_ids"):
        await store.retire_input_payloads(RT, input_ids)
    assert await view(store) == before


@pytest.mark.parametrize(
    "method",
    [
        "load_boundary_receipts",
        "clear_session_snapshot",
        "delete_ops_lifecycle",
        "retire_input_payloads",
        "purge_runtime",
    ],
)
@pytest.mark.parametrize("runtime_id", ["rt", None, b"rt", RT.value.encode()], ids=repr)
async def test_a_runtime_id_that_is_not_one_is_a_type_error(store, method, runtime_id):
    await fill(store, RT)
    before = await view(store)
    args = ([I1],) if method == "retire_input_payloads" else ()
    with pytest.raises(TypeError, match="runtime_id"):
        await getattr(store, method)(runtime_id, *args)
    assert await view(store) == before


async def test_a_retired_state_can_be_written_again(backend):
    state = finished(I1)
    async with backend.open() as store:
        await store.persist_input_state(RT, state)
        await store.retire_input_payloads(RT, [I1])
        await store.persist_input_state(RT, state)
        assert await store.load_input_state(RT, I1) == state
        await store.retire_input_payloads(RT, [I1])
        await store.atomic_apply(RT, None, receipt(1, R1), [pending(I1)])
        assert await store.load_input_state(RT, I1) == pending(I1)
        with pytest.raises(ma.NotRetirable):
            await store.retire_input_payloads(RT, [I1])
        await store.commit_machine_lifecycle(RT, to(RS.IDLE), [finished(I1, PHASE.COALESCED)])
        await store.retire_input_payloads(RT, [I1])
        assert await store.load_input_state(RT, I1) == retired(finished(I1, PHASE.COALESCED))
        seen = await view(store)
    await backend.check_reopen(seen)


async def test_retire_in_one_runtime_leaves_the_same_id_elsewhere_alone(backend):
    async with backend.open() as store:
        for rt in (RT, OTHER, WILD, WILD2):
            await store.persist_input_state(rt, finished(I1))
        await store.retire_input_payloads(RT, [I1])
        for rt in (OTHER, WILD, WILD2):
            assert await store.load_input_state(rt, I1) == finished(I1)
        assert await store.load_input_state(RT, I1) == retired(finished(I1))
        seen = await view(store, [WILD, WILD2])
    await backend.check_reopen(seen, [WILD, WILD2])


async def test_retire_of_many_states(backend):
    ids = [iid(n * 7919 + 1) for n in range(150)]
    states = [finished(i, TERMINAL[n % 4]) for n, i in enumerate(ids)]
    async with backend.open() as store:
        await store.atomic_apply(RT, None, receipt(1, R1), states)
        await store.retire_input_payloads(RT, ids[::-1])
        assert await store.load_input_states(RT) == sorted(
            map(retired, states), key=lambda s: s.input_id.value.int
        )
        seen = await view(store)
    await backend.check_reopen(seen)


# --- purge_runtime -----------------------------------------------------------------------


@pytest.mark.parametrize(
    # Every state a commit can carry (no transition leads to initializing), and none.
    "state",
    [None, *(s for s in RS if s not in (RS.DESTROYED, RS.INITIALIZING))],
    ids=lambda s: str(s and s.value),
)
async def test_purge_of_a_runtime_not_destroyed_is_refused_and_changes_nothing(backend, state):
    async with backend.open() as store:
        await fill(store, RT)
        await fill(store, OTHER)
        await store.commit_machine_lifecycle(OTHER, to(RS.DESTROYED), [])
        if state is None:
            # Everything but a runtime state.
            await store.purge_runtime(OTHER)
            await store.atomic_apply(OTHER, session(), receipt(1, R1), [finished(I1)])
            await store.persist_ops_lifecycle(OTHER, ops())
            target = OTHER
        else:
            await store.commit_machine_lifecycle(RT, to(state), [])
            target = RT
        await store.persist_auth_oauth_flow_snapshot(b"oauth")
        before = await view(store)
        with pytest.raises(ma.RuntimeNotDestroyed) as info:
            await store.purge_runtime(target)
        assert await view(store) == before
    error = info.value
    assert isinstance(error, ma.WriteFailed)
    assert error.actual is state
    assert error.runtime_id == target.value
    message = str(error)
    assert repr(target.value) in message
    assert ("no runtime state" if state is None else state.value) in message
    await backend.check_reopen(before)


async def test_purge_of_a_never_written_runtime_is_refused(store):
    await fill(store, OTHER)
    before = await view(store)
    with pytest.raises(ma.RuntimeNotDestroyed) as info:
        await store.purge_runtime(RT)
    assert info.value.actual is None
    assert await view(store) == before


async def test_purge_removes_everything_of_the_runtime_and_nothing_else(backend):
    async with backend.open() as store:
        for rt in (RT, OTHER, WILD, WILD2):
            await fill(store, rt, rt.value)
        await store.persist_auth_oauth_flow_snapshot(b"oauth-flows")
        await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [pending(I5)])
        before = await view(store, [WILD, WILD2])
        await store.purge_runtime(RT)
        after = await view(store, [WILD, WILD2])
    assert after[RT] == await never_written()
    assert after["runtimes"] == [WILD, WILD2, OTHER]
    assert after["oauth"] == b"oauth-flows"
    assert {k: v for k, v in after.items() if k not in (RT, "runtimes")} == {
        k: v for k, v in before.items() if k not in (RT, "runtimes")
    }
    await backend.check_reopen(after, [WILD, WILD2])


@pytest.mark.parametrize("how", ["lifecycle only", "with input states", "everything"])
async def test_purge_of_a_runtime_holding_little_or_much(backend, how):
    async with backend.open() as store:
        await fill(store, OTHER)
        if how == "everything":
            await fill(store, RT)
        inputs = [finished(I6)] if how != "lifecycle only" else []
        await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), inputs)
        assert RT in await store.list_runtimes()
        await store.purge_runtime(RT)
        seen = await view(store)
    assert seen[RT] == await never_written()
    assert seen["runtimes"] == [OTHER]
    await backend.check_reopen(seen)


async def test_a_purged_runtime_can_be_written_again_from_scratch(backend):
    async with backend.open() as store:
        await fill(store, RT)
        await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [])
        await store.purge_runtime(RT)
        # A purged runtime has no runtime state: purging again is refused.
        with pytest.raises(ma.RuntimeNotDestroyed) as info:
            await store.purge_runtime(RT)
        assert info.value.actual is None
        # The receipt keys of the purged runtime are free again.
        await store.atomic_apply(RT, session(turn=9), receipt(0, R5, message_count=1), [])
        await store.atomic_apply(RT, None, receipt(U64_MAX, R1, message_count=1), [])
        with pytest.raises(ma.ReceiptConflict):
            await store.atomic_apply(RT, None, receipt(U64_MAX, R1), [])
        # "No runtime state yet" holds again.
        await store.commit_machine_lifecycle(
            RT, to(RS.IDLE), [finished(I1, PHASE.COALESCED)], expected=None
        )
        assert await store.load_input_states(RT) == [finished(I1, PHASE.COALESCED)]
        assert await store.load_boundary_receipts(RT) == [
            receipt(U64_MAX, R1, message_count=1),
            receipt(0, R5, message_count=1),
        ]
        assert await store.load_ops_lifecycle(RT) is None
        assert await store.list_runtimes() == [RT]
        seen = await view(store)
    await backend.check_reopen(seen)


async def test_purge_then_rewrite_survives_replay_in_order(backend):
    """The log holds write, purge, write again: replay must keep that order."""
    async with backend.open() as store:
        for round_ in range(3):
            await store.atomic_apply(
                RT, session(turn=round_), receipt(1, R1, message_count=round_), [finished(I1)]
            )
            await store.persist_ops_lifecycle(RT, ops(f"epoch-{round_}"))
            await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [])
            if round_ < 2:
                await store.purge_runtime(RT)
        seen = await view(store)
    assert seen[RT]["receipts"] == [receipt(1, R1, message_count=2)]  # type: ignore[index]
    assert seen[RT]["ops"] == ops("epoch-2")  # type: ignore[index]
    await backend.check_reopen(seen)


async def test_purge_of_a_runtime_with_many_states_and_receipts(backend):
    ids = [iid(n * 104729 + 3) for n in range(300)]
    async with backend.open() as store:
        await store.atomic_apply(OTHER, None, receipt(0, R1), [pending(I1)])
        await store.atomic_apply(RT, session(), receipt(0, R2), [pending(i) for i in ids])
        for n in range(1, 120):
            await store.atomic_apply(RT, None, receipt(n * (2**57), R3), [])
        await store.commit_machine_lifecycle(
            RT, to(RS.DESTROYED), [finished(i) for i in ids[::3]], expected=None
        )
        assert len(await store.load_boundary_receipts(RT)) == 120
        await store.purge_runtime(RT)
        seen = await view(store)
        assert await store.load_input_states(RT) == []
        assert await store.load_boundary_receipts(RT) == []
        for n in range(0, 120, 7):
            assert await store.load_boundary_receipt(RT, R3, n * (2**57)) is None
    assert seen[RT] == await never_written()
    assert seen["runtimes"] == [OTHER]
    await backend.check_reopen(seen)


# --- commit_machine_lifecycle(expected=...) -------------------------------------------------


async def test_expected_matching_the_stored_state_applies(backend):
    async with backend.open() as store:
        await store.commit_machine_lifecycle(RT, to(RS.IDLE), [pending(I1)], expected=None)
        await store.commit_machine_lifecycle(
            RT, to(RS.RUNNING), [pending(I1, PHASE.STAGED)], expected=RS.IDLE
        )
        await store.commit_machine_lifecycle(RT, to(RS.RUNNING), [], expected=RS.RUNNING)
        await store.commit_machine_lifecycle(RT, to(RS.IDLE), [finished(I2)], expected=ma.UNCHECKED)
        await store.commit_machine_lifecycle(RT, to(RS.STOPPED), [])  # the default: unchecked
        await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [], expected=RS.STOPPED)
        assert await store.load_runtime_state(RT) is RS.DESTROYED
        assert await store.load_input_states(RT) == [pending(I1, PHASE.STAGED), finished(I2)]
        seen = await view(store)
    await backend.check_reopen(seen)


CONFLICTS = [
    (None, RS.IDLE),  # "none yet", but there is one
    (RS.IDLE, None),  # a state expected, none stored
    (RS.IDLE, RS.RUNNING),
    (RS.RUNNING, RS.IDLE),
    (RS.DESTROYED, RS.STOPPED),
    (RS.STOPPED, RS.DESTROYED),
    (RS.INITIALIZING, None),
    (RS.RETIRED, RS.ATTACHED),
]


@pytest.mark.parametrize(
    ("expected", "actual"),
    CONFLICTS,
    ids=[f"{e and e.value}-vs-{a and a.value}" for e, a in CONFLICTS],
)
async def test_expected_differing_from_the_stored_state_conflicts_and_changes_nothing(
    backend, expected, actual
):
    async with backend.open() as store:
        await fill(store, OTHER)
        await store.atomic_apply(RT, session(), receipt(1, R1), [pending(I1)])
        if actual is not None:
            await store.commit_machine_lifecycle(RT, to(actual), [])
        before = await view(store)
        with pytest.raises(ma.LifecycleConflict) as info:
            await store.commit_machine_lifecycle(
                RT,
                to(RS.STOPPED if actual is RS.DESTROYED else RS.DESTROYED),
                [finished(I1), pending(I2)],
                expected=expected,
            )
        assert await view(store) == before
        assert await store.load_input_state(RT, I2) is None
    error = info.value
    assert isinstance(error, ma.WriteFailed)
    assert error.expected is expected
    assert error.actual is actual
    assert error.runtime_id == "rt"
    message = str(error)
    assert "'rt'" in message
    assert (expected.value if expected else "no runtime state") in message
    assert (actual.value if actual else "no runtime state") in message
    await backend.check_reopen(before)


async def test_expected_none_on_a_runtime_holding_other_things_but_no_state(store):
    await fill(store, OTHER)
    await store.atomic_apply(RT, session(), receipt(1, R1), [pending(I1)])
    await store.persist_ops_lifecycle(RT, ops())
    # Other records are not a runtime state.
    await store.commit_machine_lifecycle(RT, to(RS.IDLE), [finished(I1)], expected=None)
    assert await store.load_runtime_state(RT) is RS.IDLE
    assert await store.load_input_state(RT, I1) == finished(I1)
    # OTHER's state is not RT's.
    await store.commit_machine_lifecycle(LRI("fresh"), to(RS.IDLE), [], expected=None)


@pytest.mark.parametrize(
    "expected",
    ["idle", "unchecked", 0, False, ma.Unchecked, RS, ma.InputLifecycleState.CONSUMED, object()],
    ids=repr,
)
async def test_expected_of_the_wrong_type_is_a_type_error_naming_it(store, expected):
    await fill(store, RT)
    before = await view(store)
    with pytest.raises(TypeError, match="expected"):
        await store.commit_machine_lifecycle(RT, to(RS.RUNNING), [finished(I5)], expected=expected)
    assert await view(store) == before


async def test_expected_is_keyword_only(store):
    with pytest.raises(TypeError):
        await store.commit_machine_lifecycle(RT, to(RS.IDLE), [], None)
    assert await store.list_runtimes() == []


@pytest.mark.parametrize("start", [None, RS.IDLE])
async def test_concurrent_callers_expecting_the_same_state_one_wins(store, start):
    if start is not None:
        await store.commit_machine_lifecycle(RT, to(start), [])
    winners: list[int] = []
    losers: list[ma.LifecycleConflict] = []

    async def contend(n: int) -> None:
        try:
            await store.commit_machine_lifecycle(
                RT, to(RS.RUNNING), [pending(iid(1000 + n))], expected=start
            )
        except ma.LifecycleConflict as error:
            losers.append(error)
        else:
            winners.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(24):
            nursery.start_soon(contend, n)
    assert len(winners) == 1
    assert len(losers) == 23
    assert all((e.expected, e.actual) == (start, RS.RUNNING) for e in losers)
    # Only the winner's input state was written.
    assert await store.load_input_states(RT) == [pending(iid(1000 + winners[0]))]


async def test_a_chain_of_compare_and_set_steps_under_contention(store):
    """Each task moves idle -> running -> idle with expected=, retrying on conflict:
    every successful step saw the state it expected, so the steps alternate."""
    await store.commit_machine_lifecycle(RT, to(RS.IDLE), [])
    log: list[RS] = []

    async def worker() -> None:
        done = 0
        while done < 5:
            current = await store.load_runtime_state(RT)
            target = RS.RUNNING if current is RS.IDLE else RS.IDLE
            try:
                await store.commit_machine_lifecycle(RT, to(target), [], expected=current)
            except ma.LifecycleConflict:
                continue
            log.append(target)
            done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(worker)
    assert len(log) == 30
    assert log == [RS.RUNNING, RS.IDLE] * 15
    assert await store.load_runtime_state(RT) is RS.IDLE


# --- closed stores, exports ----------------------------------------------------------------

NEW_CALLS = {
    "list_runtimes": lambda s: s.list_runtimes(),
    "load_boundary_receipts": lambda s: s.load_boundary_receipts(RT),
    "clear_session_snapshot": lambda s: s.clear_session_snapshot(RT),
    "delete_ops_lifecycle": lambda s: s.delete_ops_lifecycle(RT),
    "retire_input_payloads": lambda s: s.retire_input_payloads(RT, [I1]),
    "purge_runtime": lambda s: s.purge_runtime(RT),
    "commit_machine_lifecycle expected": lambda s: s.commit_machine_lifecycle(
        RT, to(RS.DESTROYED), [], expected=RS.DESTROYED
    ),
}


@pytest.mark.parametrize("name", NEW_CALLS)
async def test_a_closed_store_refuses_every_new_method(backend, name):
    async with backend.open(clean=True) as store:
        await fill(store, RT)
        await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [])
        await store.commit_session_snapshot(RT, session())
        seen = await view(store)
    with pytest.raises(ma.StoreClosed):
        await NEW_CALLS[name](store)
    await backend.check_reopen(seen)


def test_the_new_names_are_exported_and_errors_are_write_failed():
    for name in (
        "NotRetirable",
        "RuntimeNotDestroyed",
        "LifecycleConflict",
        "UNCHECKED",
        "Unchecked",
    ):
        assert name in ma.__all__, name
        assert hasattr(ma, name)
    for error in (ma.NotRetirable, ma.RuntimeNotDestroyed, ma.LifecycleConflict):
        assert issubclass(error, ma.WriteFailed)
        assert issubclass(error, ma.RuntimeStoreError)
        assert error.__doc__
    assert isinstance(ma.UNCHECKED, ma.Unchecked)
    assert ma.UNCHECKED is not None
    assert repr(ma.UNCHECKED) == "UNCHECKED"


def test_the_new_errors_survive_pickling_with_their_attributes():
    errors = [
        ma.NotRetirable("rt", I1, PHASE.QUEUED),
        ma.RuntimeNotDestroyed("rt", None),
        ma.RuntimeNotDestroyed("rt", RS.IDLE),
        ma.LifecycleConflict(None, RS.IDLE, runtime_id="rt"),
        ma.LifecycleConflict(RS.RUNNING, None),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy) == vars(error) if hasattr(error, "__dict__") else True
        for attr in ("runtime_id", "input_id", "phase", "actual", "expected"):
            assert getattr(copy, attr, None) == getattr(error, attr, None)


# --- the durable directory: purged and retired bytes are gone ------------------------------


def files_holding(directory: Path, marker: str) -> list[str]:
    needle = marker.encode()
    return sorted(
        str(p.relative_to(directory))
        for p in directory.rglob("*")
        if p.is_file() and needle in p.read_bytes()
    )


@pytest.fixture
def durable(tmp_path: Path) -> Backend:
    return Backend("durable", tmp_path)


async def test_purged_bytes_leave_the_directory_after_a_checkpoint(durable):
    directory = durable.location
    async with durable.open(clean=True) as store:
        await store.commit_session_snapshot(RT, ma.SessionDelta(session_json(secret=MARKER)))
        await store.atomic_apply(
            RT,
            None,
            receipt(1, R1, conversation_digest=MARKER),
            [finished(I1, payload={"m": MARKER}, idempotency_key=MARKER)],
        )
        await store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot(MARKER, MARKER))
        await store.commit_session_snapshot(OTHER, ma.SessionDelta(session_json(keep="KEEP-ME")))
        await store.checkpoint()
        assert files_holding(directory, MARKER)  # the snapshot holds it now
        await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [])
        await store.purge_runtime(RT)
        await store.checkpoint()
        assert files_holding(directory, MARKER) == []
        assert files_holding(directory, "KEEP-ME")
    assert files_holding(directory, MARKER) == []
    async with durable.open(clean=True) as store:
        assert await store.list_runtimes() == [OTHER]
        assert await store.load_session_snapshot(RT) is None


async def test_retired_payload_bytes_leave_the_directory_after_a_checkpoint(durable):
    directory = durable.location
    async with durable.open(clean=True) as store:
        await store.persist_input_state(RT, finished(I1, payload={"m": PAYLOAD_MARKER}))
        await store.persist_input_state(OTHER, finished(I1, payload={"m": "KEEP-ME"}))
        await store.checkpoint()
        assert files_holding(directory, PAYLOAD_MARKER)
        await store.retire_input_payloads(RT, [I1])
        await store.checkpoint()
        assert files_holding(directory, PAYLOAD_MARKER) == []
        assert files_holding(directory, "KEEP-ME")
    async with durable.open(clean=True) as store:
        assert await store.load_input_state(RT, I1) == retired(
            finished(I1, payload={"m": PAYLOAD_MARKER})
        )


# --- the SQLite file: still Meerkat's schema, rows deleted or rewritten --------------------

RUNTIME_TABLES = {
    "runtime_input_states": "state_json",
    "runtime_boundary_receipts": "receipt_json",
    "runtime_session_snapshots": "session_snapshot",
    "runtime_states": "runtime_state_json",
    "runtime_ops_lifecycle": "state_json",
}


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "retention.sqlite3"


def schema_and_nulls_are_rusts(path: Path) -> None:
    for table, columns in EXPECTED_COLUMNS.items():
        assert table_info(path, table) == columns, table
        for name, *_ in columns:
            assert rows(path, f"SELECT count(*) FROM {table} WHERE {name} IS NULL") == [(0,)]
    names = {n for (n,) in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == set(EXPECTED_COLUMNS)


def runtime_rows(path: Path, rt: LRI) -> dict[str, int]:
    return {
        table: rows(path, f"SELECT count(*) FROM {table} WHERE runtime_id = ?", rt.value)[0][0]
        for table in RUNTIME_TABLES
    }


async def test_sqlite_purge_deletes_every_row_of_the_runtime(sqlite_path):
    async with ma.open_sqlite_store(sqlite_path) as store:
        for rt in (RT, OTHER, WILD, WILD2):
            await fill(store, rt)
        await store.persist_auth_oauth_flow_snapshot(b"oauth")
        await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [])
        other_rows = {rt: runtime_rows(sqlite_path, rt) for rt in (OTHER, WILD, WILD2)}
        assert runtime_rows(sqlite_path, RT) == {
            "runtime_input_states": 4,
            "runtime_boundary_receipts": 3,
            "runtime_session_snapshots": 1,
            "runtime_states": 1,
            "runtime_ops_lifecycle": 1,
        }
        await store.purge_runtime(RT)
    assert runtime_rows(sqlite_path, RT) == dict.fromkeys(RUNTIME_TABLES, 0)
    assert {rt: runtime_rows(sqlite_path, rt) for rt in (OTHER, WILD, WILD2)} == other_rows
    assert rows(sqlite_path, "SELECT state_json FROM runtime_auth_oauth_flow_state") == [
        (b"oauth",)
    ]
    schema_and_nulls_are_rusts(sqlite_path)


async def test_sqlite_clear_and_delete_remove_the_rows(sqlite_path):
    async with ma.open_sqlite_store(sqlite_path) as store:
        await fill(store, RT)
        await fill(store, OTHER)
        await store.clear_session_snapshot(RT)
        await store.delete_ops_lifecycle(RT)
    counts = runtime_rows(sqlite_path, RT)
    assert counts["runtime_session_snapshots"] == 0
    assert counts["runtime_ops_lifecycle"] == 0
    assert counts["runtime_input_states"] == 4
    assert runtime_rows(sqlite_path, OTHER)["runtime_session_snapshots"] == 1
    assert runtime_rows(sqlite_path, OTHER)["runtime_ops_lifecycle"] == 1
    schema_and_nulls_are_rusts(sqlite_path)


async def test_sqlite_retire_rewrites_the_row_without_the_payload(sqlite_path, tmp_path):
    state = finished(I1, payload={"text": PAYLOAD_MARKER})
    async with ma.open_sqlite_store(sqlite_path) as store:
        await store.persist_input_state(RT, state)
        await store.persist_input_state(RT, pending(I2))
        await store.retire_input_payloads(RT, [I1])
    # The row is what persisting the retired value writes, byte for byte.
    reference = tmp_path / "reference.sqlite3"
    async with ma.open_sqlite_store(reference) as store:
        await store.persist_input_state(RT, retired(state))
    query = "SELECT input_id, state_json FROM runtime_input_states WHERE runtime_id = ?"
    written = dict(rows(sqlite_path, query, RT.value))
    assert set(written) == {str(I1), str(I2)}
    assert written[str(I1)] == dict(rows(reference, query, RT.value))[str(I1)]
    document = json.loads(written[str(I1)])
    assert "persisted_input" not in document
    assert document["current_state"] == "consumed"
    assert document["idempotency_key"] == f"idem-{I1}"
    assert PAYLOAD_MARKER.encode() not in written[str(I1)]
    assert "persisted_input" in json.loads(written[str(I2)])
    schema_and_nulls_are_rusts(sqlite_path)


async def test_sqlite_lists_runtimes_and_receipts_of_a_file_written_by_rust(sqlite_path):
    """Rows as Meerkat's Rust store writes them, including a receipt an older
    Rust clamped to 2**63-1 and receipts in the two's-complement slots."""
    async with ma.open_sqlite_store(sqlite_path):
        pass  # creates the tables
    high = receipt(U63 + 5, R3)
    lows = [receipt(seq, R3) for seq in (0, U63 - 1, U64_MAX)]
    r2 = receipt(7, R2)
    db = sqlite3.connect(sqlite_path, isolation_level=None)
    insert = "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)"

    doc = dumps_json
    for r in lows:
        column = r.sequence - 2**64 if r.sequence >= U63 else r.sequence
        db.execute(insert, ("rust-a", str(r.run_id), column, doc(r)))
    db.execute(insert, ("rust-a", str(R3), U63 - 2, doc(receipt(U63 - 2, R3))))
    db.execute(insert, ("rust-a", str(R2), 7, doc(r2)))
    db.execute("INSERT INTO runtime_states VALUES (?, ?)", ("rust-b", b'"destroyed"'))
    db.execute("INSERT INTO runtime_ops_lifecycle VALUES (?, ?)", ("Rust-c", dumps_json(ops())))
    db.close()
    async with ma.open_sqlite_store(sqlite_path) as store:
        assert await store.list_runtimes() == [LRI("Rust-c"), LRI("rust-a"), LRI("rust-b")]
        expected = [r2, lows[0], receipt(U63 - 2, R3), lows[1], lows[2]]
        assert await store.load_boundary_receipts(LRI("rust-a")) == expected
        await store.atomic_apply(LRI("rust-a"), None, high, [])
        assert await store.load_boundary_receipts(LRI("rust-a")) == [*expected[:4], high, lows[2]]
        await store.purge_runtime(LRI("rust-b"))
        assert await store.list_runtimes() == [LRI("Rust-c"), LRI("rust-a")]
    schema_and_nulls_are_rusts(sqlite_path)


async def test_sqlite_a_clamped_rust_receipt_sorts_by_its_own_sequence(sqlite_path):
    async with ma.open_sqlite_store(sqlite_path):
        pass
    clamped = receipt(U63 + 5, R3, conversation_digest="old")
    body = dumps_json(clamped)
    assert b'"sequence":9223372036854775813' in body
    db = sqlite3.connect(sqlite_path, isolation_level=None)
    db.execute(
        "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
        ("rust-a", str(R3), U63 - 1, body),  # clamped by an older Rust store
    )
    db.close()
    rt = LRI("rust-a")
    async with ma.open_sqlite_store(sqlite_path) as store:
        assert await store.load_boundary_receipt(rt, R3, U63 + 5) == clamped
        await store.atomic_apply(rt, None, receipt(U63 + 4, R3), [])
        await store.atomic_apply(rt, None, receipt(U63 + 6, R3), [])
        await store.atomic_apply(rt, None, receipt(3, R3), [])
        assert [r.sequence for r in await store.load_boundary_receipts(rt)] == [
            3,
            U63 + 4,
            U63 + 5,
            U63 + 6,
        ]
        assert (await store.load_boundary_receipts(rt))[2] == clamped
        await store.commit_machine_lifecycle(rt, to(RS.DESTROYED), [])
        await store.purge_runtime(rt)
        assert await store.load_boundary_receipts(rt) == []
        assert await store.load_boundary_receipt(rt, R3, U63 + 5) is None
    assert runtime_rows(sqlite_path, rt) == dict.fromkeys(RUNTIME_TABLES, 0)


async def test_sqlite_compare_and_set_across_two_handles_has_one_winner(sqlite_path):
    async with (
        ma.open_sqlite_store(sqlite_path) as one,
        ma.open_sqlite_store(sqlite_path) as two,
    ):
        await one.commit_machine_lifecycle(RT, to(RS.IDLE), [])
        winners: list[int] = []
        losers: list[ma.LifecycleConflict] = []

        async def contend(store: Any, n: int) -> None:
            try:
                await store.commit_machine_lifecycle(
                    RT, to(RS.RUNNING), [pending(iid(2000 + n))], expected=RS.IDLE
                )
            except ma.LifecycleConflict as error:
                losers.append(error)
            else:
                winners.append(n)

        async with trio.open_nursery() as nursery:
            for n in range(12):
                nursery.start_soon(contend, one if n % 2 else two, n)
        assert len(winners) == 1
        assert len(losers) == 11
        assert all(e.actual is RS.RUNNING for e in losers)
        assert await two.load_input_states(RT) == [pending(iid(2000 + winners[0]))]


async def test_sqlite_purge_racing_a_lifecycle_commit_of_another_handle(sqlite_path):
    """Either the commit came first (purge refused: state idle) or the purge
    did (then the commit's state and input states are all that is left)."""
    for attempt in range(8):
        rt = LRI(f"race-{attempt}")
        async with (
            ma.open_sqlite_store(sqlite_path) as one,
            ma.open_sqlite_store(sqlite_path) as two,
        ):
            await fill(one, rt)
            await one.commit_machine_lifecycle(rt, to(RS.DESTROYED), [])
            outcome: dict[str, object] = {}

            async def purge() -> None:
                try:
                    await one.purge_runtime(rt)  # noqa: B023
                    outcome["purge"] = "done"  # noqa: B023
                except ma.RuntimeNotDestroyed as error:
                    outcome["purge"] = error.actual  # noqa: B023

            async def revive() -> None:
                await two.commit_machine_lifecycle(rt, to(RS.IDLE), [pending(I6)])  # noqa: B023

            async with trio.open_nursery() as nursery:
                nursery.start_soon(purge)
                nursery.start_soon(revive)
            state = await one.load_runtime_state(rt)
            inputs = await one.load_input_states(rt)
            assert state is RS.IDLE
            if outcome["purge"] == "done":
                assert inputs == [pending(I6)]
                assert await one.load_boundary_receipts(rt) == []
            else:
                assert outcome["purge"] is RS.IDLE
                assert pending(I6) in inputs
                assert len(await one.load_boundary_receipts(rt)) == 3


async def test_retire_keeps_the_timestamps_to_the_microsecond(store):
    """`updated_at` stays exactly what was stored, microseconds included."""
    when = datetime(2030, 1, 2, 3, 4, 5, 999999, tzinfo=UTC)
    state = finished(I1, created_at=when - timedelta(days=400), updated_at=when)
    await store.persist_input_state(RT, state)
    await store.retire_input_payloads(RT, [I1])
    loaded = await store.load_input_state(RT, I1)
    assert loaded.state.updated_at == when
    assert loaded.state.created_at == when - timedelta(days=400)
    assert loaded == retired(state)


# --- concurrency: linearizable, and what was acknowledged is what reopens ------------------


async def test_concurrent_purges_of_one_runtime_one_succeeds(store):
    await fill(store, RT)
    await store.commit_machine_lifecycle(RT, to(RS.DESTROYED), [])
    done: list[int] = []
    refused: list[ma.RuntimeNotDestroyed] = []

    async def purge(n: int) -> None:
        try:
            await store.purge_runtime(RT)
        except ma.RuntimeNotDestroyed as error:
            refused.append(error)
        else:
            done.append(n)

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(purge, n)
    assert len(done) == 1
    assert len(refused) == 9
    assert all(error.actual is None for error in refused)
    assert await runtime_view(store, RT) == await never_written()


async def test_mixed_retention_writes_from_many_tasks_reopen_as_acknowledged(backend):
    """Commands of many tasks land in shared batches (one log write each in the
    durable store); whatever order they took, a reopened store shows exactly
    what the last reads showed."""
    names = [LRI(f"mix-{n}") for n in range(6)]
    async with backend.open() as store:
        for rt in names:
            await fill(store, rt, rt.value)
        if hasattr(store, "checkpoint"):
            await store.checkpoint()  # the snapshot holds the runtimes; the log the rest

        async def churn(rt: LRI, n: int) -> None:
            await store.retire_input_payloads(rt, [I1, I3])
            await store.clear_session_snapshot(rt)
            if n % 2:
                await store.commit_machine_lifecycle(rt, to(RS.DESTROYED), [], expected=RS.IDLE)
                await store.purge_runtime(rt)
                if n % 3 == 0:
                    await store.persist_input_state(rt, finished(I5))
                    await store.retire_input_payloads(rt, [I5])
            else:
                await store.delete_ops_lifecycle(rt)
                await store.atomic_apply(rt, None, receipt(n, R6), [pending(I2, PHASE.STAGED)])

        async with trio.open_nursery() as nursery:
            for n, rt in enumerate(names):
                nursery.start_soon(churn, rt, n)
        seen = await view(store, names)
    assert seen["runtimes"] == [names[0], names[2], names[3], names[4]]
    assert seen[names[3]]["inputs"] == [retired(finished(I5))]  # type: ignore[index]
    assert seen[names[1]] == await never_written(names[1])
    assert seen[names[2]]["ops"] is None  # type: ignore[index]
    assert seen[names[2]]["inputs"] == [  # type: ignore[index]
        retired(finished(I1)),
        pending(I2, PHASE.STAGED),
        retired(finished(I3, PHASE.ABANDONED)),
        finished(I4, PHASE.SUPERSEDED),
    ]
    await backend.check_reopen(seen, names)


async def test_sqlite_retire_racing_a_rewrite_by_another_handle(sqlite_path):
    """Retire checks and rewrites in one transaction: if another handle made the
    input pending again, either retire came first (and the pending state is
    what is left) or it is refused; a retired copy of the old state never
    overwrites the new one."""
    for attempt in range(10):
        rt = LRI(f"race-{attempt}")
        async with (
            ma.open_sqlite_store(sqlite_path) as one,
            ma.open_sqlite_store(sqlite_path) as two,
        ):
            await one.persist_input_state(rt, finished(I1))
            outcome: list[object] = []

            async def retire() -> None:
                try:
                    await one.retire_input_payloads(rt, [I1])  # noqa: B023
                    outcome.append("retired")  # noqa: B023
                except ma.NotRetirable as error:
                    outcome.append(error.phase)  # noqa: B023

            async def rewrite() -> None:
                await two.persist_input_state(rt, pending(I1, PHASE.QUEUED))  # noqa: B023

            async with trio.open_nursery() as nursery:
                nursery.start_soon(retire)
                nursery.start_soon(rewrite)
            assert outcome in (["retired"], [PHASE.QUEUED])
            assert await one.load_input_state(rt, I1) == pending(I1, PHASE.QUEUED)


async def test_sqlite_a_receipt_row_under_another_key_fails_the_listing(sqlite_path):
    async with ma.open_sqlite_store(sqlite_path) as store:
        await store.atomic_apply(RT, None, receipt(1, R1), [])
    db = sqlite3.connect(sqlite_path, isolation_level=None)
    # The row of (R2, 1) holds the receipt of (R1, 1).
    db.execute(
        "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
        (RT.value, str(R2), 1, dumps_json(receipt(1, R1))),
    )
    db.close()
    async with ma.open_sqlite_store(sqlite_path) as store:
        with pytest.raises(ma.CorruptStore) as info:
            await store.load_boundary_receipts(RT)
        assert isinstance(info.value, ma.ReadFailed)
        assert "runtime_boundary_receipts" in str(info.value)
        assert await store.load_boundary_receipts(OTHER) == []


async def test_cancelled_purges_and_retires_leave_each_call_all_or_nothing(backend):
    names = [LRI(f"gone-{n:02d}") for n in range(40)]
    async with backend.open() as store:
        for rt in names:
            await fill(store, rt)
            await store.commit_machine_lifecycle(rt, to(RS.DESTROYED), [])
        whole = {rt: await runtime_view(store, rt) for rt in names}

        purged: list[LRI] = []

        async def retire_and_purge(rt: LRI) -> None:
            await store.retire_input_payloads(rt, [I1, I3, I4])
            await store.purge_runtime(rt)
            purged.append(rt)

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for rt in names:
                    nursery.start_soon(retire_and_purge, rt)
                # Cancel everyone once some purges were acknowledged: the rest are
                # then unsent, waiting for a reply, or between their two calls.
                while len(purged) < 3:
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
        fates = []
        for rt in names:
            now = await runtime_view(store, rt)
            if now == whole[rt]:
                fates.append("untouched")
            elif now == await never_written(rt):
                fates.append("purged")
            else:
                expected = {**whole[rt]}
                expected["inputs"] = [
                    retired(finished(I1)),
                    pending(I2),
                    retired(finished(I3, PHASE.ABANDONED)),
                    retired(finished(I4, PHASE.SUPERSEDED)),
                ]
                expected["each input"] = [*expected["inputs"], None, None, None]
                assert now == expected, rt
                fates.append("retired")
            assert fates[-1] == "purged" or rt not in purged
        assert [rt for rt in names if rt in await store.list_runtimes()] == [
            rt for rt, fate in zip(names, fates, strict=True) if fate != "purged"
        ]
        seen = await view(store, names)
    await backend.check_reopen(seen, names)


# --- random sequences: the three stores agree, and agree again after reopening -------------

POOL_RUNTIMES = (RT, OTHER, WILD)
POOL_INPUTS = (I1, I2, I3)


def _states() -> st.SearchStrategy[ma.StoredInputState]:
    return st.one_of(
        st.builds(finished, st.sampled_from(POOL_INPUTS), st.sampled_from(TERMINAL)),
        st.builds(pending, st.sampled_from(POOL_INPUTS), st.sampled_from(NON_TERMINAL)),
        st.builds(
            lambda s: retired(finished(s)),
            st.sampled_from(POOL_INPUTS),
        ),
    )


_RT = st.sampled_from(POOL_RUNTIMES)
_EXPECTED = st.sampled_from([ma.UNCHECKED, None, RS.IDLE, RS.RUNNING, RS.DESTROYED])
OPERATIONS = st.one_of(
    st.tuples(st.just("persist_input_state"), _RT, _states()),
    st.tuples(
        st.just("atomic_apply"),
        _RT,
        st.sampled_from([None, session(turn=1), session(turn=2)]),
        st.builds(receipt, st.sampled_from([0, U63, U64_MAX]), st.sampled_from([R1, R5])),
        st.lists(_states(), max_size=3),
    ),
    st.tuples(
        st.just("commit_machine_lifecycle"),
        _RT,
        st.sampled_from([RS.IDLE, RS.RUNNING, RS.STOPPED, RS.DESTROYED]),
        st.lists(_states(), max_size=2),
        _EXPECTED,
    ),
    st.tuples(st.just("persist_ops_lifecycle"), _RT, st.sampled_from(["e1", "e2"])),
    st.tuples(st.just("clear_session_snapshot"), _RT),
    st.tuples(st.just("delete_ops_lifecycle"), _RT),
    st.tuples(
        st.just("retire_input_payloads"),
        _RT,
        st.lists(st.sampled_from((*POOL_INPUTS, UNKNOWN)), max_size=3),
    ),
    st.tuples(st.just("purge_runtime"), _RT),
    # Destroy, then purge: common enough that purges do happen.
    st.tuples(st.just("destroy_and_purge"), _RT),
)


async def _run(store: Any, op: tuple[Any, ...]) -> object:
    """Apply `op`; return what a caller sees of it (the error and its attributes)."""
    name, rt, *args = op
    try:
        if name == "persist_ops_lifecycle":
            await store.persist_ops_lifecycle(rt, ops(args[0]))
        elif name == "commit_machine_lifecycle":
            state, inputs, expected = args
            await store.commit_machine_lifecycle(rt, to(state), inputs, expected=expected)
        elif name == "destroy_and_purge":
            await store.commit_machine_lifecycle(rt, to(RS.DESTROYED), [])
            await store.purge_runtime(rt)
        else:
            await getattr(store, name)(rt, *args)
    except ma.RuntimeStoreError as error:
        attrs = ("runtime_id", "input_id", "phase", "expected", "actual")
        return (type(error), *(getattr(error, a, None) for a in attrs))
    return "ok"


@settings(max_examples=min(60, settings.default.max_examples))
@given(st.lists(OPERATIONS, min_size=1, max_size=25))
def test_random_operation_sequences_agree_across_the_three_stores(operations):
    async def main() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            backends = [Backend(kind, Path(tmp)) for kind in ("memory", "durable", "sqlite")]
            async with (
                backends[0].open() as memory,
                backends[1].open() as durable,
                backends[2].open() as sqlite,
            ):
                for op in operations:
                    outcomes = [await _run(s, op) for s in (memory, durable, sqlite)]
                    assert outcomes[1] == outcomes[0], ("durable", op)
                    assert outcomes[2] == outcomes[0], ("sqlite", op)
                seen = await view(memory, POOL_RUNTIMES)
                assert await view(durable, POOL_RUNTIMES) == seen
                assert await view(sqlite, POOL_RUNTIMES) == seen
            await backends[1].check_reopen(seen, POOL_RUNTIMES)
            await backends[2].check_reopen(seen, POOL_RUNTIMES)

    trio.run(main)
