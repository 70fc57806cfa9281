"""The `RuntimeStore` protocol (SPEC §3): what every store of this package, and
every backend the conformance kit checks, implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

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

__all__ = ["RuntimeStore"]


@runtime_checkable
class RuntimeStore(Protocol):
    """Atomic persistence for the runtime state of an agent host.

    Every method is atomic: it takes effect completely or not at all. Writes
    are acknowledged when they return; reads see every write acknowledged
    before them. See docs/semantics.md for the full contract.
    """

    def auth_authority_key(self) -> str | None:
        """A stable key naming the durable location, or `None` in memory."""
        ...

    async def persist_auth_oauth_flow_snapshot(self, snapshot: bytes) -> None:
        """Replace the store-wide OAuth flow snapshot."""
        ...

    async def load_auth_oauth_flow_snapshot(self) -> bytes | None:
        """The store-wide OAuth flow snapshot, or `None`."""
        ...

    async def update_auth_oauth_flow_snapshot(
        self, update: Callable[[bytes | None], bytes]
    ) -> None:
        """Atomically replace the OAuth flow snapshot with `update(current)`."""
        ...

    async def commit_session_snapshot(
        self, runtime_id: LogicalRuntimeId, delta: SessionDelta
    ) -> None:
        """Replace the runtime's session snapshot (no receipt)."""
        ...

    async def atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        delta: SessionDelta | None,
        receipt: RunBoundaryReceipt,
        input_updates: Sequence[StoredInputState],
        session_store_key: SessionId | None = None,
    ) -> None:
        """Commit a session snapshot, a receipt and input states as one."""
        ...

    async def load_input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        """The runtime's input states sorted by input id."""
        ...

    async def load_input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        """One input state, or `None`."""
        ...

    async def persist_input_state(
        self, runtime_id: LogicalRuntimeId, state: StoredInputState
    ) -> None:
        """Upsert one input state."""
        ...

    async def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        """The receipt stored under `(runtime_id, run_id, sequence)`, or `None`."""
        ...

    async def load_session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        """The runtime's session snapshot, or `None`."""
        ...

    async def load_runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        """The runtime's lifecycle state, or `None`."""
        ...

    async def commit_machine_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        commit: MachineLifecycleCommit,
        input_states: Sequence[StoredInputState],
        *,
        expected: RuntimeState | Unchecked | None = UNCHECKED,
    ) -> None:
        """Write the runtime state and input states as one; with `expected`,
        only if the stored runtime state is `expected` (compare-and-set)."""
        ...

    async def persist_ops_lifecycle(
        self, runtime_id: LogicalRuntimeId, snapshot: PersistedOpsSnapshot
    ) -> None:
        """Replace the runtime's ops lifecycle snapshot."""
        ...

    async def load_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        """The runtime's ops lifecycle snapshot, or `None`."""
        ...

    # --- discovery and retention (SPEC §3b) ---------------------------------------

    async def list_runtimes(self) -> list[LogicalRuntimeId]:
        """Every runtime that holds anything, sorted by its string."""
        ...

    async def load_boundary_receipts(
        self, runtime_id: LogicalRuntimeId
    ) -> list[RunBoundaryReceipt]:
        """The runtime's receipts sorted by `(run_id, sequence)`."""
        ...

    async def clear_session_snapshot(self, runtime_id: LogicalRuntimeId) -> None:
        """Remove the runtime's session snapshot (no-op if none)."""
        ...

    async def delete_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> None:
        """Remove the runtime's ops lifecycle snapshot (no-op if none)."""
        ...

    async def retire_input_payloads(
        self, runtime_id: LogicalRuntimeId, input_ids: Sequence[InputId]
    ) -> None:
        """Set `persisted_input` to `None` on terminal input states, as one."""
        ...

    async def purge_runtime(self, runtime_id: LogicalRuntimeId) -> None:
        """Remove everything of a destroyed runtime."""
        ...
