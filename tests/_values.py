"""Values the tests share: ids, a time, and builders of the contract's values.

`from _values import ...` works in `tests/` and `stateful_tests/` alike:
pyproject's `[tool.pytest.ini_options] pythonpath` puts this directory on
`sys.path` however pytest is started.

The builders take every field as a parameter with the default most tests
want. A test module whose values differ on purpose (a non-default attempt
count that has to survive recovery, a receipt per sequence) says so where it
binds the builder, e.g. `stored = partial(_values.stored, attempts=1)`.
Modules with their own value sets (the kit's id pools, the Rust rows, the
CLI's realistic store) build them with these builders too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import meerkat_actor as ma
from meerkat_actor._codec import from_json, to_json

RT = ma.LogicalRuntimeId("runtime-a")
OTHER = ma.LogicalRuntimeId("runtime-b")
SID = ma.SessionId(uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))
SID2 = ma.SessionId(uuid.UUID("b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12"))
RUN = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-000000000001"))
I1 = ma.InputId(uuid.UUID(int=0x100))
I2 = ma.InputId(uuid.UUID(int=0x200))
I3 = ma.InputId(uuid.UUID(int=0x300))
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def session_json(session_id: ma.SessionId = SID, **extra: Any) -> bytes:
    """A Meerkat session snapshot document: `{"id": ..., **extra}`."""
    return json.dumps({"id": str(session_id), **extra}).encode()


def session(session_id: ma.SessionId = SID, **extra: Any) -> ma.SessionDelta:
    """A session snapshot with no messages yet (`extra` adds or replaces keys)."""
    return ma.SessionDelta(session_json(session_id, messages=[], **extra))


def receipt(
    sequence: int = 7,
    run_id: ma.RunId = RUN,
    *,
    boundary: ma.RunApplyBoundary = ma.RunApplyBoundary.IMMEDIATE,
    contributing_input_ids: Iterable[ma.InputId] = (I1,),
    conversation_digest: str | None = "machine-owned-digest",
    message_count: int = 42,
) -> ma.RunBoundaryReceipt:
    """A receipt; the keyword names are the fields' (values are passed as
    given, so a test can hand the constructor a wrong type)."""
    return ma.RunBoundaryReceipt(
        run_id=run_id,
        boundary=boundary,
        contributing_input_ids=contributing_input_ids,  # type: ignore[arg-type]
        conversation_digest=conversation_digest,
        message_count=message_count,
        sequence=sequence,
    )


def input_state(input_id: ma.InputId = I1, **fields: Any) -> ma.InputState:
    """An input state's shell, created and updated at `T0` unless `fields` say
    otherwise."""
    return ma.InputState(**{"input_id": input_id, "created_at": T0, "updated_at": T0, **fields})


#: An outcome of each terminal phase's kind: a seed's phase and terminal
#: outcome agree (terminal phase, outcome of its kind; other phases, none).
OUTCOME_OF = {
    ma.InputLifecycleState.CONSUMED: ma.InputTerminalOutcome.consumed(),
    ma.InputLifecycleState.SUPERSEDED: ma.InputTerminalOutcome.superseded(I2),
    ma.InputLifecycleState.COALESCED: ma.InputTerminalOutcome.coalesced(I3),
    ma.InputLifecycleState.ABANDONED: ma.InputTerminalOutcome.abandoned(
        ma.InputAbandonReason.cancelled()
    ),
}


def stored(
    input_id: ma.InputId,
    phase: ma.InputLifecycleState = ma.InputLifecycleState.ACCEPTED,
    attempts: int = 0,
    *,
    now: datetime = T0,
    **fields: Any,
) -> ma.StoredInputState:
    """`input_id` accepted at `now` (its shell has `fields` besides), in
    `phase` after `attempts` attempts (a terminal phase with the outcome
    `OUTCOME_OF[phase]`)."""
    shell = input_state(input_id, created_at=now, updated_at=now, **fields)
    seed = ma.InputStateSeed(
        phase=phase, terminal_outcome=OUTCOME_OF.get(phase), attempt_count=attempts
    )
    return ma.StoredInputState(shell, seed)


def stored_seed(
    phase: ma.InputLifecycleState,
    terminal_outcome: ma.InputTerminalOutcome | None = None,
    attempts: int = 0,
) -> ma.InputStateSeed:
    """A seed whose phase and terminal outcome may disagree, which no caller
    can build but a store may hold (Meerkat's Rust runtime or an older
    version wrote it): decoded from its Meerkat JSON, as a store reads it."""
    doc: dict[str, Any] = {"current_state": phase.value, "attempt_count": attempts}
    if terminal_outcome is not None:
        doc["terminal_outcome"] = to_json(terminal_outcome)
    return from_json(ma.InputStateSeed, doc)


def increment(current: bytes | None) -> bytes:
    """An OAuth updater: the snapshot as a decimal counter, plus one."""
    return str(int(current or b"0") + 1).encode()


async def populate(store: ma.RuntimeStore) -> None:
    """Put something in every part of a store (under `RT`)."""
    await store.atomic_apply(RT, session(), receipt(), [stored(I1)], SID)
    await store.commit_machine_lifecycle(
        RT, ma.machine_transition(ma.RuntimeState.INITIALIZING, ma.RuntimeState.IDLE), []
    )
    await store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("epoch-1", {"a": [1, 2]}))
    await store.persist_auth_oauth_flow_snapshot(b"oauth-0")


async def everything(
    store: ma.RuntimeStore,
    runtimes: Iterable[ma.LogicalRuntimeId] = (RT, OTHER),
    receipt_keys: Sequence[tuple[ma.RunId, int]] = ((RUN, 7), (RUN, 8)),
    *,
    all_receipts: bool = True,
) -> dict[object, object]:
    """Every value the store shows for the given runtimes and receipt keys
    (and each runtime's list of receipts, unless `all_receipts` is false: a
    test that damages one receipt row cannot read them all)."""
    seen: dict[object, object] = {
        "oauth": await store.load_auth_oauth_flow_snapshot(),
        "runtimes": await store.list_runtimes(),
    }
    for rt in runtimes:
        if all_receipts:
            seen[rt, "receipts"] = await store.load_boundary_receipts(rt)
        seen[rt, "session"] = await store.load_session_snapshot(rt)
        seen[rt, "inputs"] = await store.load_input_states(rt)
        seen[rt, "state"] = await store.load_runtime_state(rt)
        seen[rt, "ops"] = await store.load_ops_lifecycle(rt)
        for run_id, sequence in receipt_keys:
            seen[rt, run_id, sequence] = await store.load_boundary_receipt(rt, run_id, sequence)
    return seen
