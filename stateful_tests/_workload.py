"""Randomly generated operations, deterministic in a seed, with their model.

`plan(seed, generation, task)` yields the operations of one task: atomic
applies (a unique receipt, 1-3 input states, a session snapshot), input state
upserts, OAuth counter increments, lifecycle commits (a compare-and-set
against the state the task last committed), ops snapshots, and the SPEC §3b
removals: retiring the payloads of terminal states, clearing the session
snapshot, deleting the ops snapshot and purging the runtime once it is
destroyed (after which the task writes it again from nothing); now and then
an explicit checkpoint (a no-op on a store without `checkpoint()`, such as
the SQLite store). Every operation is one the store must accept: the plan
tracks what its task wrote. `Operation.perform` runs one on a store;
`Operation.apply` runs it on a `ReferenceModel`.

Each task writes only under its own runtime (`runtime_id(generation, task)`)
and updates only input ids it created, so a task's operations are totally
ordered and two tasks never touch the same key, except the store-wide OAuth
snapshot, a decimal counter every task increments.

Used by the kill -9 child (`_kill9_child.py`), by its parent
(`test_kill9.py`), which rebuilds the operations a child began from the same
arguments, and by the fault injection tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import uuid
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import meerkat_actor as ma
from meerkat_actor._types import _stored_seed
from meerkat_actor.testing import ReferenceModel

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
_TRANSITIONS = sorted(
    (
        (source, target)
        for source, targets in ma.LIFECYCLE_TRANSITIONS.items()
        for target in targets
    ),
    key=lambda pair: (pair[0].value, pair[1].value),
)
_KINDS = (
    "atomic_apply",
    "persist_input_state",
    "oauth_increment",
    "lifecycle",
    "checkpoint",
    "persist_ops_lifecycle",
    "retire_input_payloads",
    "clear_session_snapshot",
    "delete_ops_lifecycle",
    "purge_runtime",
)
_WEIGHTS = (40, 25, 15, 15, 2, 5, 8, 3, 3, 6)


def open_location(
    backend: str, location: str, checkpoint_bytes: int | None = None
) -> AbstractAsyncContextManager[ma.RuntimeStore]:
    """The store of a kill -9 chain: `actor` (the directory `location`),
    `sqlite` (the file `location`) or `postgres` (a schema named after
    `location`, on the server of `$MEERKAT_TEST_POSTGRES_DSN`)."""
    if backend == "sqlite":
        return ma.open_sqlite_store(location)
    if backend == "postgres":
        schema = "k9_" + hashlib.sha256(location.encode()).hexdigest()[:24]
        return ma.open_postgres_store(os.environ["MEERKAT_TEST_POSTGRES_DSN"], schema=schema)
    assert backend == "actor", backend
    if checkpoint_bytes is None:
        return ma.open_store(location)
    return ma.open_store(location, checkpoint_bytes=checkpoint_bytes)


def runtime_id(generation: int, task: int) -> ma.LogicalRuntimeId:
    return ma.LogicalRuntimeId(f"gen-{generation}-task-{task}")


def increment(current: bytes | None) -> bytes:
    """The OAuth snapshot as a decimal counter, plus one."""
    return str(int(current or b"0") + 1).encode()


@dataclass(frozen=True)
class Operation:
    """One call of a task: `kind` and the arguments after the runtime id."""

    kind: str
    runtime_id: ma.LogicalRuntimeId
    args: tuple[Any, ...] = ()

    async def perform(self, store: ma.RuntimeStore) -> None:
        if self.kind == "oauth_increment":
            await store.update_auth_oauth_flow_snapshot(increment)
        elif self.kind == "checkpoint":
            checkpoint = getattr(store, "checkpoint", None)
            if checkpoint is not None:
                await checkpoint()
        elif self.kind == "lifecycle":
            commit, states, expected = self.args
            await store.commit_machine_lifecycle(self.runtime_id, commit, states, expected=expected)
        else:
            await getattr(store, self.kind)(self.runtime_id, *self.args)

    def apply(self, model: ReferenceModel) -> None:
        """The operation's effect on the model."""
        if self.kind == "oauth_increment":
            model.update_auth_oauth_flow_snapshot(increment)
        elif self.kind == "lifecycle":
            commit, states, expected = self.args
            model.commit_machine_lifecycle(self.runtime_id, commit, states, expected=expected)
        elif self.kind != "checkpoint":
            getattr(model, self.kind)(self.runtime_id, *self.args)


def plan(seed: int, generation: int, task: int) -> Iterator[Operation]:
    """The operations of one task, deterministic in its arguments."""
    rng = random.Random(f"{seed}/{generation}/{task}")
    rt = runtime_id(generation, task)
    known: list[ma.InputId] = []  # input ids this task has written, for updates
    retirable: set[ma.InputId] = set()  # of those, the terminal ones (with an outcome)
    runtime_state: ma.RuntimeState | None = None  # what this task last committed

    def fresh_uuid() -> uuid.UUID:
        return uuid.UUID(int=rng.getrandbits(128))

    def outcome(phase: ma.InputLifecycleState) -> ma.InputTerminalOutcome | None:
        """Mostly the outcome a terminal phase has; now and then none (a seed
        only a store's decoder builds: see `input_state`)."""
        if not phase.is_terminal or rng.random() < 0.2:
            return None
        if phase is ma.InputLifecycleState.CONSUMED:
            return ma.InputTerminalOutcome.consumed()
        if phase is ma.InputLifecycleState.SUPERSEDED:
            return ma.InputTerminalOutcome.superseded(ma.InputId(fresh_uuid()))
        if phase is ma.InputLifecycleState.COALESCED:
            return ma.InputTerminalOutcome.coalesced(ma.InputId(fresh_uuid()))
        return ma.InputTerminalOutcome.abandoned(ma.InputAbandonReason.cancelled())

    def input_state(index: int) -> ma.StoredInputState:
        if known and rng.random() < 0.4:
            input_id = rng.choice(known)
        else:
            input_id = ma.InputId(fresh_uuid())
            known.append(input_id)
        shell = ma.StoredInputState.new_accepted(input_id, now=_EPOCH).state
        padding = "x" * rng.choice((0, 0, 10, 200, 2000))
        phase = rng.choice(list(ma.InputLifecycleState))
        terminal_outcome = outcome(phase)
        if terminal_outcome is None:
            retirable.discard(input_id)
        else:
            retirable.add(input_id)
        return ma.StoredInputState(
            ma.InputState(
                input_id=input_id,
                created_at=shell.created_at,
                updated_at=_EPOCH + timedelta(microseconds=index),
                persisted_input={"op": index, "padding": padding},
            ),
            # `_stored_seed`: a terminal phase without its outcome is what
            # Meerkat's Rust runtime or an older build may have left in a
            # store; no caller can build one, but a store must keep it.
            _stored_seed(phase, None, None, terminal_outcome, rng.randrange(5)),
        )

    for index in range(sys.maxsize):
        kind = rng.choices(_KINDS, _WEIGHTS)[0]
        if kind == "atomic_apply":
            states = [input_state(index) for _ in range(rng.randint(1, 3))]
            session_id = ma.SessionId(fresh_uuid())
            snapshot = json.dumps({"id": str(session_id), "task": task, "op": index}).encode()
            receipt = ma.RunBoundaryReceipt(
                run_id=ma.RunId(fresh_uuid()),
                boundary=rng.choice(list(ma.RunApplyBoundary)),
                contributing_input_ids=tuple(s.state.input_id for s in states),
                conversation_digest=f"digest-{index}",
                message_count=index,
                sequence=rng.getrandbits(64),
            )
            key = session_id if rng.random() < 0.5 else None
            yield Operation(kind, rt, (ma.SessionDelta(snapshot), receipt, states, key))
        elif kind == "persist_input_state":
            yield Operation(kind, rt, (input_state(index),))
        elif kind == "lifecycle":
            commit = ma.machine_transition(*rng.choice(_TRANSITIONS))
            states = [input_state(index) for _ in range(rng.randint(0, 2))]
            yield Operation(kind, rt, (commit, states, runtime_state))
            runtime_state = commit.runtime_state
        elif kind == "persist_ops_lifecycle":
            ops = ma.PersistedOpsSnapshot(f"epoch-{index}", {"op": index})
            yield Operation(kind, rt, (ops,))
        elif kind == "retire_input_payloads":
            if retirable:
                chosen = rng.sample(sorted(retirable, key=str), min(len(retirable), 3))
                yield Operation(kind, rt, (chosen,))
        elif kind == "purge_runtime":
            if runtime_state is ma.RuntimeState.DESTROYED:
                yield Operation(kind, rt)
                known.clear()
                retirable.clear()
                runtime_state = None
        else:
            yield Operation(kind, rt)


Read = tuple[str, tuple[Any, ...]]
"""A read: a `RuntimeStore` method's name and its arguments."""


def reads_for(rt: ma.LogicalRuntimeId, operations: list[Operation]) -> list[Read]:
    """The reads that show all of a runtime the operations can have touched."""
    reads: list[Read] = [
        ("load_input_states", (rt,)),
        ("load_boundary_receipts", (rt,)),
        ("load_session_snapshot", (rt,)),
        ("load_runtime_state", (rt,)),
        ("load_ops_lifecycle", (rt,)),
    ]
    for operation in operations:
        if operation.kind == "atomic_apply":
            receipt = operation.args[1]
            reads.append(("load_boundary_receipt", (rt, receipt.run_id, receipt.sequence)))
    return reads
