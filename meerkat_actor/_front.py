"""The store front: every public method of the contract, written once.

Rule 1: a method here checks its arguments (by building the frozen command
or query, whose constructor is the one place that checks them), refuses if
the handle cannot be used, and hands the value to one of two hooks. It holds
no semantics (those are `_core`'s) and no I/O (that is the backend's).

Rule 2: every store handle of this package is a `StoreFront`; a backend
provides only the hooks. The docstrings a user reads live here, once.

Rule 3: refusals that are not semantics are decided in one place each: a
closed handle here (`_refusal`), a poisoned store by the handle's
`_errors.Poison`, a record too large by the durable log.

Theory of operation. A write builds its command (`_core.AtomicApply`, ...)
and awaits `_submit(command)`: the actor store sends it to its actor, the
SQLite store runs it as one transaction. A read builds its query
(`_core.LoadInputStates`, ...) and awaits `_answer(query)`: the actor store
answers from its published state value, the SQLite store from its tables in
one read transaction; both through `query.answer(view)`, the core's pure
read functions over a `_core.ReadView`. A new method of the contract is one
command or query in `_core`, one method here, and (only where the backend
must translate a new effect or lookup) a few lines in the backend.

Cancellation: a call cancelled before its hook reached the store never
happened; once reached, it completes atomically and takes effect before any
later call of the same task (each backend's hook guarantees this, see
`_actor.py` and `_sqlite.py`).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, final

import trio

from . import _core
from ._core import Command, Query
from ._errors import RuntimeStoreError, StoreClosed
from ._ids import InputId, LogicalRuntimeId, RunId, SessionId
from ._types import (
    UNCHECKED,
    MachineLifecycleCommit,
    PersistedOpsSnapshot,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
    Unchecked,
)
from ._util import NoPublicConstructor

__all__ = ["StoreFront", "StoreStatistics"]

T = TypeVar("T")


@final
@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """A snapshot of a store's counters (`store.statistics()`).

    Every counter counts since the store was opened. A store reports what
    it has: the SQLite backend writes no log of its own, so its `records`,
    `fsyncs`, `bytes_written` and `checkpoints` stay 0.

    Attributes:
        commands: write calls that reached the store, applied or refused.
        refused: of those, the ones that failed (a store error, the OAuth
            updater's error, a poisoned store).
        batches: groups of commands applied together (the SQLite backend:
            write transactions begun, one command each).
        largest_batch: the most commands in one batch.
        effects: effect records produced by applied commands.
        records: log records written (one per applied command; 0 in memory).
        fsyncs: log syncs, one per group commit (0 in memory).
        bytes_written: log bytes written (0 in memory).
        checkpoints: snapshots written (0 in memory).
        pending: calls sent and waiting for the store now (the SQLite
            backend: calls waiting for the connection).
        max_pending: the bound on waiting calls (0: unbounded, the SQLite
            backend).
        transactions: database transactions run, reads and writes (the
            SQLite backend; 0 for the actor stores, which have none).
    """

    commands: int
    refused: int
    batches: int
    largest_batch: int
    effects: int
    records: int
    fsyncs: int
    bytes_written: int
    checkpoints: int
    pending: int
    max_pending: int
    transactions: int = 0


class StoreFront(metaclass=NoPublicConstructor):
    """The `RuntimeStore` methods over two backend hooks; see the module docstring.

    Subclasses set `_authority` and `_closed` and implement `_submit`,
    `_answer` and `statistics`; they may extend `_refusal`.
    """

    _authority: str | None
    _closed: bool

    # --- the hooks -------------------------------------------------------------------------

    @abstractmethod
    async def _submit(self, command: Command) -> None:
        """Apply `command` atomically, or raise its error (nothing applied).

        Must contain a trio checkpoint, and must not return before the
        command took effect or was refused. Called only while `_refusal()`
        is `None`.
        """

    @abstractmethod
    async def _answer(self, query: Query[T]) -> T:
        """Answer `query` as of every write acknowledged before the call."""

    def _refusal(self) -> RuntimeStoreError | None:
        """Why the handle cannot take a call now, or `None`."""
        if self._closed:
            return StoreClosed("the store is closed (its `async with` block has exited)")
        return None

    @abstractmethod
    def statistics(self) -> StoreStatistics:
        """The store's counters now (see `StoreStatistics`). Not a coroutine;
        answers on a closed store too."""

    # --- plumbing ---------------------------------------------------------------------------

    async def _write(self, command: Command) -> None:
        error = self._refusal()
        if error is not None:
            await trio.lowlevel.checkpoint()
            raise error
        await self._submit(command)

    async def _read(self, query: Query[T]) -> T:
        await trio.lowlevel.checkpoint()
        error = self._refusal()
        if error is not None:
            raise error
        return await self._answer(query)

    # --- RuntimeStore ---------------------------------------------------------------------

    def auth_authority_key(self) -> str | None:
        """A stable key naming the store's durable location.

        Returns:
            `"actor:"` + the resolved store directory (a durable actor
            store), `"sqlite:"` + the resolved database path (the SQLite
            backend), or `None` (an in-memory store). The same string for
            every open of the same location (symlinks resolved), so a host
            can key process-local auth state by it. Answers on a closed store
            too.
        """
        return self._authority

    async def persist_auth_oauth_flow_snapshot(self, snapshot: bytes) -> None:
        """Replace the store-wide OAuth flow snapshot (stored as raw bytes).

        Args:
            snapshot: the serialized OAuth flow state.

        Raises:
            TypeError: `snapshot` is not `bytes`.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown (the store is then
                poisoned).
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.PersistOAuthFlowSnapshot(snapshot))

    async def load_auth_oauth_flow_snapshot(self) -> bytes | None:
        """The store-wide OAuth flow snapshot.

        Returns:
            The snapshot's bytes, or `None` if never written.

        Raises:
            ReadFailed: the store failed to read.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadAuthOAuthFlowSnapshot())

    async def update_auth_oauth_flow_snapshot(
        self, update: Callable[[bytes | None], bytes]
    ) -> None:
        """Atomically replace the OAuth flow snapshot with `update(current)`.

        `update` runs with the current value (`None` if there is none) and
        no other write of the store commits in between, so it is safe as a
        counter under any concurrency. Where it runs: inside the actor, on
        the trio thread (actor stores); in a worker thread inside the write
        transaction, holding the file's write lock (the SQLite backend).
        Either way it must be quick, must not block and must not await (an
        `async def` updater is refused: its result is not `bytes`).

        Args:
            update: maps the current snapshot to the new one.

        Raises:
            TypeError: `update` is not callable, or it returned something
                other than `bytes` (nothing changed).
            Exception: whatever `update` raised, unchanged (nothing changed).
            CorruptStore: (SQLite) the current snapshot's row is damaged.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.UpdateOAuthFlowSnapshot(update))

    async def commit_session_snapshot(
        self, runtime_id: LogicalRuntimeId, delta: SessionDelta
    ) -> None:
        """Replace the runtime's session snapshot; writes no receipt.

        Args:
            runtime_id: the runtime.
            delta: the serialized session; its session id must be readable by
                the store's session codec.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: the session codec cannot read the snapshot, or the
                store failed to write; nothing changed, unless the message
                says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.CommitSessionSnapshot(runtime_id, delta))

    async def atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        delta: SessionDelta | None,
        receipt: RunBoundaryReceipt,
        input_updates: Sequence[StoredInputState],
        session_store_key: SessionId | None = None,
    ) -> None:
        """Commit a session snapshot (optional), a receipt and input states as one.

        Args:
            runtime_id: the runtime.
            delta: the new session snapshot, or `None` to keep the current one.
            receipt: inserted under `(runtime_id, receipt.run_id,
                receipt.sequence)`.
            input_updates: upserted by input id; a later entry wins.
            session_store_key: if given (and `delta` too), must equal the
                snapshot's session id. It only validates.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: the session codec cannot read the snapshot, or the
                store failed to write.
            SessionKeyMismatch: `session_store_key` differs from the
                snapshot's session id.
            ReceiptConflict: a receipt with the same `(run_id, sequence)`
                exists for the runtime.
            CorruptStore: (SQLite) the row under the receipt's key does not
                decode, or holds another receipt.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
            In every error case nothing of the call was applied, except a
            `WriteFailed` whose message says the outcome is unknown: reopen
            the store and look the receipt up to know.
        """
        await self._write(
            _core.AtomicApply(runtime_id, delta, receipt, input_updates, session_store_key)
        )

    async def load_input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        """The runtime's input states.

        Args:
            runtime_id: the runtime.

        Returns:
            Its input states sorted by input id (UUID order); `[]` if none.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            ReadFailed: the store failed to read, or (`CorruptStore`) a
                stored value does not decode.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadInputStates(runtime_id))

    async def load_input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        """One input state.

        Args:
            runtime_id: the runtime.
            input_id: the input.

        Returns:
            The stored state, or `None`.

        Raises:
            TypeError: wrong argument types.
            ReadFailed: the store failed to read, or (`CorruptStore`) the
                stored value does not decode.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadInputState(runtime_id, input_id))

    async def persist_input_state(
        self, runtime_id: LogicalRuntimeId, state: StoredInputState
    ) -> None:
        """Upsert one input state by its input id.

        Args:
            runtime_id: the runtime.
            state: the input state.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.PersistInputState(runtime_id, state))

    async def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        """The receipt under `(runtime_id, run_id, sequence)`.

        Args:
            runtime_id: the runtime.
            run_id: the run.
            sequence: the receipt's sequence, in [0, 2**64-1].

        Returns:
            The receipt, or `None`.

        Raises:
            TypeError: wrong argument types.
            ValueError: `sequence` is outside [0, 2**64-1].
            ReadFailed: the store failed to read, or (`CorruptStore`) the
                stored value does not decode or holds another receipt.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadBoundaryReceipt(runtime_id, run_id, sequence))

    async def load_session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        """The runtime's session snapshot.

        Args:
            runtime_id: the runtime.

        Returns:
            The snapshot's bytes, or `None`.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            ReadFailed: the store failed to read.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadSessionSnapshot(runtime_id))

    async def load_runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        """The runtime's lifecycle state.

        Args:
            runtime_id: the runtime.

        Returns:
            The state last committed by `commit_machine_lifecycle`, or `None`.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            ReadFailed: the store failed to read, or (`CorruptStore`) the
                stored value does not decode.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadRuntimeState(runtime_id))

    async def commit_machine_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        commit: MachineLifecycleCommit,
        input_states: Sequence[StoredInputState],
        *,
        expected: RuntimeState | Unchecked | None = UNCHECKED,
    ) -> None:
        """Write the runtime state chosen by `commit` and upsert `input_states`, as one.

        Args:
            runtime_id: the runtime.
            commit: from `machine_transition(from_state, to_state)`.
            input_states: upserted by input id; a later entry wins.
            expected: a compare-and-set: if given, the call applies only if
                the stored runtime state is `expected` (`None`: the runtime
                has none yet). Left out (`UNCHECKED`), nothing is compared.

        Raises:
            TypeError: wrong argument types.
            LifecycleConflict: the stored runtime state is not `expected`
                (`.expected`, `.actual`); nothing changed.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.CommitMachineLifecycle(runtime_id, commit, input_states, expected))

    async def persist_ops_lifecycle(
        self, runtime_id: LogicalRuntimeId, snapshot: PersistedOpsSnapshot
    ) -> None:
        """Replace the runtime's ops lifecycle snapshot.

        Args:
            runtime_id: the runtime.
            snapshot: the new snapshot.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.PersistOpsLifecycle(runtime_id, snapshot))

    async def load_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        """The runtime's ops lifecycle snapshot.

        Args:
            runtime_id: the runtime.

        Returns:
            The snapshot, or `None`.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            ReadFailed: the store failed to read, or (`CorruptStore`) the
                stored value does not decode.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadOpsLifecycle(runtime_id))

    # --- discovery and retention (SPEC §3b) -------------------------------------------

    async def list_runtimes(self) -> list[LogicalRuntimeId]:
        """Every runtime the store holds anything for.

        Returns:
            The runtimes with a session snapshot, an input state, a receipt,
            a runtime state or an ops snapshot, sorted by their string. A
            purged runtime, or one whose last thing was removed, is not
            listed.

        Raises:
            ReadFailed: the store failed to read.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.ListRuntimes())

    async def load_boundary_receipts(
        self, runtime_id: LogicalRuntimeId
    ) -> list[RunBoundaryReceipt]:
        """All of the runtime's run-boundary receipts.

        Args:
            runtime_id: the runtime.

        Returns:
            Its receipts sorted by `(run_id, sequence)` (UUID order, then
            number); `[]` if none.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            ReadFailed: the store failed to read, or (`CorruptStore`) a
                stored value does not decode or does not match its key.
            StoreClosed, Internal: the store cannot take calls.
        """
        return await self._read(_core.LoadBoundaryReceipts(runtime_id))

    async def clear_session_snapshot(self, runtime_id: LogicalRuntimeId) -> None:
        """Remove the runtime's session snapshot; a no-op if it has none.

        Args:
            runtime_id: the runtime.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.ClearSessionSnapshot(runtime_id))

    async def delete_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> None:
        """Remove the runtime's ops lifecycle snapshot; a no-op if it has none.

        Args:
            runtime_id: the runtime.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.DeleteOpsLifecycle(runtime_id))

    async def retire_input_payloads(
        self, runtime_id: LogicalRuntimeId, input_ids: Sequence[InputId]
    ) -> None:
        """Drop the payload (`persisted_input`) of finished input states, as one.

        Each named state keeps everything else, `updated_at` and history
        included, so a redelivered input is still recognised as done.
        Retiring a retired state is a no-op; so is an empty `input_ids`.

        Args:
            runtime_id: the runtime.
            input_ids: the input states to retire. Each must be stored and
                terminal (phase consumed, superseded, coalesced or abandoned,
                with a terminal outcome).

        Raises:
            TypeError: wrong argument types (`input_ids` must be a sequence
                of `InputId`, not a single one).
            NotFound: an id names no stored input state of the runtime.
            NotRetirable: a named state is not terminal (`.input_id`,
                `.phase`). Of several offending ids, the first in
                `input_ids` decides the error; nothing is retired.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.RetireInputPayloads(runtime_id, input_ids))

    async def purge_runtime(self, runtime_id: LogicalRuntimeId) -> None:
        """Remove everything of a destroyed runtime, as one.

        Afterwards the runtime reads exactly as one never written (no
        session snapshot, input states, receipts, runtime state or ops
        snapshot) and `list_runtimes` leaves it out; it may be written again
        from scratch. The store-wide OAuth flow snapshot is untouched.

        Args:
            runtime_id: the runtime; its runtime state must be `destroyed`.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            RuntimeNotDestroyed: its runtime state is not `destroyed` (or it
                has none; `.actual`); nothing changed.
            WriteFailed: the store failed to write; nothing changed, unless
                the message says the outcome is unknown.
            StorePoisoned: an earlier write's outcome is unknown; reopen.
            StoreClosed, Internal: the store cannot take calls.
        """
        await self._write(_core.PurgeRuntime(runtime_id))
