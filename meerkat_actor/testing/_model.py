"""The reference model: SPEC §4 as a small, plain-Python program.

Rule 1: plain Python only. No trio, no pyrsistent, no code shared with the
store's pure core (`_core.py`): the model is an independent statement of the
semantics, so a bug in the core cannot hide by being copied here.

Rule 2: every write checks everything first, then mutates. A write that
raises has changed nothing; that is what atomicity means for a single-thread
model.

Rule 3: the model raises the same error classes a store must raise, and the
updater's own exception unchanged; it does not check argument types (the
stores do that before anything reaches them, and the conformance machine
only sends well-typed calls to the model).

Each method has the name and arguments of the `RuntimeStore` method it
models, but is synchronous. The discovery and retention methods of SPEC §3b
come last.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from .._errors import (
    LifecycleConflict,
    NotFound,
    NotRetirable,
    ReceiptConflict,
    RuntimeNotDestroyed,
    SessionKeyMismatch,
    WriteFailed,
)
from .._ids import InputId, LogicalRuntimeId, RunId, SessionId
from .._session_codec import MeerkatSessionCodec, SessionCodec
from .._types import (
    UNCHECKED,
    InputLifecycleState,
    MachineLifecycleCommit,
    PersistedOpsSnapshot,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
    Unchecked,
)

__all__ = ["ReferenceModel"]

_TERMINAL_PHASES = {
    InputLifecycleState.CONSUMED,
    InputLifecycleState.SUPERSEDED,
    InputLifecycleState.COALESCED,
    InputLifecycleState.ABANDONED,
}


@dataclass
class _Runtime:
    session_snapshot: bytes | None = None
    input_states: dict[InputId, StoredInputState] = field(default_factory=dict)
    receipts: dict[tuple[RunId, int], RunBoundaryReceipt] = field(default_factory=dict)
    runtime_state: RuntimeState | None = None
    ops_snapshot: PersistedOpsSnapshot | None = None

    def holds_anything(self) -> bool:
        return bool(
            self.session_snapshot is not None
            or self.input_states
            or self.receipts
            or self.runtime_state is not None
            or self.ops_snapshot is not None
        )


class ReferenceModel:
    """An in-memory `RuntimeStore` written for reading, not for speed."""

    def __init__(self, session_codec: SessionCodec | None = None) -> None:
        self.session_codec: SessionCodec = (
            MeerkatSessionCodec() if session_codec is None else session_codec
        )
        self.runtimes: dict[LogicalRuntimeId, _Runtime] = {}
        self.oauth_flow_snapshot: bytes | None = None

    def _runtime(self, runtime_id: LogicalRuntimeId) -> _Runtime:
        return self.runtimes.setdefault(runtime_id, _Runtime())

    def _peek(self, runtime_id: LogicalRuntimeId) -> _Runtime:
        return self.runtimes.get(runtime_id) or _Runtime()

    def _session_id(self, runtime_id: LogicalRuntimeId, delta: SessionDelta) -> SessionId:
        """The snapshot's session id; any codec failure is WriteFailed."""
        try:
            session_id = self.session_codec.session_id(delta.session_snapshot)
        except Exception as exc:
            raise WriteFailed(f"runtime {runtime_id}: unreadable session snapshot") from exc
        if not isinstance(session_id, SessionId):
            raise WriteFailed(f"runtime {runtime_id}: codec returned no SessionId")
        return session_id

    # --- OAuth flow snapshot: one per store ------------------------------------

    def persist_auth_oauth_flow_snapshot(self, snapshot: bytes) -> None:
        self.oauth_flow_snapshot = snapshot

    def load_auth_oauth_flow_snapshot(self) -> bytes | None:
        return self.oauth_flow_snapshot

    def update_auth_oauth_flow_snapshot(self, update: Callable[[bytes | None], bytes]) -> None:
        new: object = update(self.oauth_flow_snapshot)  # its exception reaches the caller
        if not isinstance(new, bytes):
            if inspect.iscoroutine(new):
                new.close()  # never awaited, and Python must not warn about it
            raise TypeError(f"the updater must return bytes, got {type(new).__name__}")
        self.oauth_flow_snapshot = new

    # --- session snapshots, receipts, input states --------------------------------

    def commit_session_snapshot(self, runtime_id: LogicalRuntimeId, delta: SessionDelta) -> None:
        self._session_id(runtime_id, delta)
        self._runtime(runtime_id).session_snapshot = delta.session_snapshot

    def atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        delta: SessionDelta | None,
        receipt: RunBoundaryReceipt,
        input_updates: Sequence[StoredInputState],
        session_store_key: SessionId | None = None,
    ) -> None:
        # Check everything ...
        if delta is not None:
            actual = self._session_id(runtime_id, delta)
            if session_store_key is not None and actual != session_store_key:
                raise SessionKeyMismatch(session_store_key, actual, runtime_id=str(runtime_id))
        key = (receipt.run_id, receipt.sequence)
        if key in self._peek(runtime_id).receipts:
            raise ReceiptConflict(f"runtime {runtime_id}: receipt {key} exists")
        # ... then write everything.
        runtime = self._runtime(runtime_id)
        if delta is not None:
            runtime.session_snapshot = delta.session_snapshot
        runtime.receipts[key] = receipt
        for stored in input_updates:
            runtime.input_states[stored.state.input_id] = stored

    def persist_input_state(self, runtime_id: LogicalRuntimeId, state: StoredInputState) -> None:
        self._runtime(runtime_id).input_states[state.state.input_id] = state

    def commit_machine_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        commit: MachineLifecycleCommit,
        input_states: Sequence[StoredInputState],
        *,
        expected: RuntimeState | Unchecked | None = UNCHECKED,
    ) -> None:
        actual = self._peek(runtime_id).runtime_state
        if expected is not UNCHECKED and expected != actual:
            raise LifecycleConflict(expected, actual, runtime_id=str(runtime_id))
        runtime = self._runtime(runtime_id)
        runtime.runtime_state = commit.runtime_state
        for stored in input_states:
            runtime.input_states[stored.state.input_id] = stored

    def persist_ops_lifecycle(
        self, runtime_id: LogicalRuntimeId, snapshot: PersistedOpsSnapshot
    ) -> None:
        self._runtime(runtime_id).ops_snapshot = snapshot

    # --- reads ---------------------------------------------------------------------

    def load_input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        states = self._peek(runtime_id).input_states
        return [states[input_id] for input_id in sorted(states, key=lambda i: i.value)]

    def load_input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        return self._peek(runtime_id).input_states.get(input_id)

    def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        return self._peek(runtime_id).receipts.get((run_id, sequence))

    def load_session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        return self._peek(runtime_id).session_snapshot

    def load_runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        return self._peek(runtime_id).runtime_state

    def load_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        return self._peek(runtime_id).ops_snapshot

    # --- discovery and retention (SPEC §3b) ----------------------------------------

    def list_runtimes(self) -> list[LogicalRuntimeId]:
        held = [rid for rid, runtime in self.runtimes.items() if runtime.holds_anything()]
        return sorted(held, key=str)

    def load_boundary_receipts(self, runtime_id: LogicalRuntimeId) -> list[RunBoundaryReceipt]:
        receipts = self._peek(runtime_id).receipts
        return [receipts[key] for key in sorted(receipts, key=lambda k: (k[0].value, k[1]))]

    def clear_session_snapshot(self, runtime_id: LogicalRuntimeId) -> None:
        if runtime_id in self.runtimes:
            self.runtimes[runtime_id].session_snapshot = None

    def delete_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> None:
        if runtime_id in self.runtimes:
            self.runtimes[runtime_id].ops_snapshot = None

    def retire_input_payloads(
        self, runtime_id: LogicalRuntimeId, input_ids: Sequence[InputId]
    ) -> None:
        states = self._peek(runtime_id).input_states
        # Check every id, in the order given: the first bad one decides ...
        for input_id in input_ids:
            stored = states.get(input_id)
            if stored is None:
                raise NotFound(f"runtime {runtime_id}: no input state {input_id}")
            phase = stored.seed.phase
            if phase not in _TERMINAL_PHASES or stored.seed.terminal_outcome is None:
                raise NotRetirable(str(runtime_id), input_id, phase)
        # ... then drop the payloads, and nothing else.
        for input_id in input_ids:
            stored = states[input_id]
            states[input_id] = replace(stored, state=replace(stored.state, persisted_input=None))

    def purge_runtime(self, runtime_id: LogicalRuntimeId) -> None:
        actual = self._peek(runtime_id).runtime_state
        if actual is not RuntimeState.DESTROYED:
            raise RuntimeNotDestroyed(str(runtime_id), actual)
        del self.runtimes[runtime_id]
