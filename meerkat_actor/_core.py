"""The pure core: the store state, the commands, their effects and the reads.

Rule 1: nothing here awaits, touches a file, reads a clock or draws a random
number. Every function is a pure function of its arguments (the OAuth updater
and the session codec are arguments: caller code the command carries or the
store was configured with).

Rule 2: the semantics of SPEC §4 live here and only here. The actor, the
persistence layer and every backend built on this module call these functions;
none of them decides anything of its own.

Theory of operation. `StoreState` is an immutable value: a pyrsistent map of
per-runtime `RuntimeRecord`s plus the store-wide OAuth flow snapshot. A write
is a frozen *command* (`AtomicApply`, `PersistInputState`, ...). `plan(state,
command, codec)` checks the command against the state and returns its
*effects*: a tuple of frozen records saying what to set (`InsertReceipt`,
`PutInputStates`, ...), or raises a store error and changes nothing. `redo
(state, effects)` applies effects and cannot fail; it is what a durable store
replays from its log, so replay never runs caller code (an OAuth updater's
result is an effect; the updater is not). `apply = redo . plan`.

`plan` reads the state only through `ReadView`, the few lookups it needs
(a receipt by key, the OAuth snapshot, ...). `StoreState` is a `ReadView`;
so is a backend that keeps its state elsewhere (the SQLite backend answers
the same lookups from its tables), which lets `plan` decide for every store.

Reads are frozen *queries* (`LoadInputStates`, `LoadBoundaryReceipt`, ...):
their constructors check the arguments as commands' do, and
`query.answer(view)` answers from any `ReadView` with the pure read functions
below (`load_input_states(view, runtime_id)`, ...). Any holder of a
`StoreState` value can answer them without a lock.

Every command and query names the public method it comes from
(`.operation`), for messages.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar, Final, Generic, Protocol, TypeAlias, TypeVar, final

from pyrsistent import PMap, pmap

from ._check import (
    check_bytes,
    check_instance,
    check_optional_instance,
    check_sync_callable,
    check_tuple,
    check_u64,
)
from ._errors import (
    CorruptStore,
    LifecycleConflict,
    NotFound,
    NotRetirable,
    ReceiptConflict,
    RuntimeNotDestroyed,
    SessionKeyMismatch,
    WriteFailed,
)
from ._ids import InputId, LogicalRuntimeId, RunId, SessionId
from ._packed import (
    POINT_READS,
    CorruptValue,
    PackedInput,
    PackedMap,
    PackedReceipt,
    input_key,
    receipt_key,
    unpack_input,
    unpack_receipt,
)
from ._session_codec import SessionCodec
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

__all__ = [
    "EMPTY",
    "AtomicApply",
    "CallerCodeError",
    "ClearSessionSnapshot",
    "Command",
    "CommitMachineLifecycle",
    "CommitSessionSnapshot",
    "DeleteOpsLifecycle",
    "Effect",
    "InsertReceipt",
    "ListRuntimes",
    "LoadAuthOAuthFlowSnapshot",
    "LoadBoundaryReceipt",
    "LoadBoundaryReceipts",
    "LoadInputState",
    "LoadInputStates",
    "LoadOpsLifecycle",
    "LoadRuntimeState",
    "LoadSessionSnapshot",
    "PersistInputState",
    "PersistOAuthFlowSnapshot",
    "PersistOpsLifecycle",
    "PurgeRuntime",
    "PutInputStates",
    "Query",
    "ReadView",
    "Rebuild",
    "RemoveOpsSnapshot",
    "RemoveRuntime",
    "RemoveSessionSnapshot",
    "RetireInputPayloads",
    "RuntimeRecord",
    "SetOAuthFlowSnapshot",
    "SetOpsSnapshot",
    "SetRuntimeState",
    "SetSessionSnapshot",
    "StoreState",
    "UpdateOAuthFlowSnapshot",
    "apply",
    "decode_input",
    "decode_receipt",
    "list_runtimes",
    "load_auth_oauth_flow_snapshot",
    "load_boundary_receipt",
    "load_boundary_receipts",
    "load_input_state",
    "load_input_states",
    "load_ops_lifecycle",
    "load_runtime_state",
    "load_session_snapshot",
    "plan",
    "redo",
    "state_effects",
    "without_empty_records",
]


# --- state --------------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class RuntimeRecord:
    """Everything one runtime holds. Runtimes never share anything.

    Input states and receipts, the bulk of a store, are held packed
    (`_packed.py`): a byte string each, keyed by a byte string that sorts
    like the value's id. A read unpacks the values it returns.
    """

    session_snapshot: bytes | None = None
    #: input key (`_packed.input_key`) -> packed input state
    input_states: PackedMap = field(default_factory=PackedMap)
    #: receipt key (`_packed.receipt_key`) -> packed receipt
    receipts: PackedMap = field(default_factory=PackedMap)
    runtime_state: RuntimeState | None = None
    ops_snapshot: PersistedOpsSnapshot | None = None

    def __post_init__(self) -> None:
        # A mapping of keys to packed values is taken as such (tests, tools).
        for name in ("input_states", "receipts"):
            value = getattr(self, name)
            if not isinstance(value, PackedMap):
                object.__setattr__(self, name, PackedMap(value))


_EMPTY_RECORD: Final = RuntimeRecord()


class ReadView(Protocol):
    """The lookups `plan` and the queries make: what a store must answer for
    the core to decide for it. Each is a lookup by key with no rule of its
    own; the rules (order, conflicts) are the core's.

    Method names are the public read methods' without `load_`.
    """

    def auth_oauth_flow_snapshot(self) -> bytes | None:
        """The store-wide OAuth flow snapshot, or `None`."""
        ...

    def session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        """The runtime's session snapshot, or `None`."""
        ...

    def input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        """One input state, or `None`."""
        ...

    def input_states(self, runtime_id: LogicalRuntimeId) -> Iterable[StoredInputState]:
        """Every input state of the runtime, one per input id, in any order."""
        ...

    def boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        """The receipt under `(runtime_id, run_id, sequence)`, or `None`."""
        ...

    def runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        """The runtime's lifecycle state, or `None`."""
        ...

    def ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        """The runtime's ops lifecycle snapshot, or `None`."""
        ...

    def boundary_receipts(self, runtime_id: LogicalRuntimeId) -> Iterable[RunBoundaryReceipt]:
        """Every receipt of the runtime, in any order."""
        ...

    def runtime_ids(self) -> Iterable[LogicalRuntimeId]:
        """Every runtime that holds anything (a session snapshot, an input
        state, a receipt, a runtime state or an ops snapshot), each once, in
        any order."""
        ...


@final
@dataclass(frozen=True, slots=True)
class StoreState:
    """The whole store: per-runtime records and the one OAuth flow snapshot.

    A `ReadView` of itself. `redo` keeps no empty record: a runtime whose
    last thing was removed leaves the map (so memory shrinks with it).
    """

    runtimes: PMap[LogicalRuntimeId, RuntimeRecord] = field(default_factory=pmap)
    oauth_flow_snapshot: bytes | None = None

    def record(self, runtime_id: LogicalRuntimeId) -> RuntimeRecord:
        """The runtime's record; an empty one for a runtime never written."""
        return self.runtimes.get(runtime_id, _EMPTY_RECORD)

    # --- ReadView --------------------------------------------------------------

    def auth_oauth_flow_snapshot(self) -> bytes | None:
        return self.oauth_flow_snapshot

    def session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        return self.record(runtime_id).session_snapshot

    def input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        key = input_key(input_id)
        blob = self.record(runtime_id).input_states.get(key)
        return None if blob is None else decode_input(runtime_id, key, blob, memo=True)

    def input_states(self, runtime_id: LogicalRuntimeId) -> Iterable[StoredInputState]:
        # In key order, which is UUID order: the caller's sort has little to do.
        states = self.record(runtime_id).input_states.sorted_items()
        return [decode_input(runtime_id, key, blob) for key, blob in states]

    def boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        key = receipt_key(run_id, sequence)
        blob = self.record(runtime_id).receipts.get(key)
        return None if blob is None else decode_receipt(runtime_id, key, blob, memo=True)

    def runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        return self.record(runtime_id).runtime_state

    def ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        return self.record(runtime_id).ops_snapshot

    def boundary_receipts(self, runtime_id: LogicalRuntimeId) -> Iterable[RunBoundaryReceipt]:
        receipts = self.record(runtime_id).receipts.sorted_items()
        return [decode_receipt(runtime_id, key, blob) for key, blob in receipts]

    def runtime_ids(self) -> Iterable[LogicalRuntimeId]:
        # `redo` drops a record that becomes empty, but a state decoded from
        # an older snapshot may hold one: it names nothing.
        return (rid for rid, record in self.runtimes.items() if record != _EMPTY_RECORD)


EMPTY: Final = StoreState()


def decode_input(
    runtime_id: LogicalRuntimeId, key: bytes, blob: bytes, *, memo: bool = False
) -> StoredInputState:
    """The input state stored under `key`: decoded, and its id checked
    against the key (a value under another's key is damage too). With
    `memo`, through the memo of recent point reads (`_packed.POINT_READS`):
    the store state's point reads use it, listings and other backends'
    fresh blobs do not."""
    try:
        stored = POINT_READS.input(blob) if memo else unpack_input(blob)
    except CorruptValue as exc:
        raise CorruptStore(f"runtime {str(runtime_id)!r}: a stored input state: {exc}") from None
    if stored.state.input_id.value.bytes != key:
        raise CorruptStore(
            f"runtime {str(runtime_id)!r}: the input state stored under {key.hex()}"
            f" holds input id {stored.state.input_id}"
        )
    return stored


def decode_receipt(
    runtime_id: LogicalRuntimeId, key: bytes, blob: bytes, *, memo: bool = False
) -> RunBoundaryReceipt:
    """The receipt stored under `key`: decoded, and its key checked (`memo`
    as for `decode_input`)."""
    try:
        receipt = POINT_READS.receipt(blob) if memo else unpack_receipt(blob)
    except CorruptValue as exc:
        raise CorruptStore(f"runtime {str(runtime_id)!r}: a stored receipt: {exc}") from None
    if receipt_key(receipt.run_id, receipt.sequence) != key:
        raise CorruptStore(
            f"runtime {str(runtime_id)!r}: the receipt stored under {key.hex()}"
            f" holds run {receipt.run_id} sequence {receipt.sequence}"
        )
    return receipt


# --- commands (writes) -------------------------------------------------------------
#
# A command is built in the caller's task, from the method's arguments; its
# constructor is the one place that checks them (TypeError/ValueError naming
# the argument), so a bad argument never reaches the actor.


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@final
@dataclass(frozen=True, slots=True)
class PersistOAuthFlowSnapshot:
    operation: ClassVar[str] = "persist_auth_oauth_flow_snapshot"

    snapshot: bytes

    def __post_init__(self) -> None:
        _set(self, "snapshot", check_bytes(self.snapshot, "snapshot"))


@final
@dataclass(frozen=True, slots=True)
class UpdateOAuthFlowSnapshot:
    operation: ClassVar[str] = "update_auth_oauth_flow_snapshot"

    update: Callable[[bytes | None], bytes]

    def __post_init__(self) -> None:
        check_sync_callable(self.update, "update")


@final
@dataclass(frozen=True, slots=True)
class CommitSessionSnapshot:
    operation: ClassVar[str] = "commit_session_snapshot"

    runtime_id: LogicalRuntimeId
    delta: SessionDelta

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(self.delta, SessionDelta, "delta")


@final
@dataclass(frozen=True, slots=True)
class AtomicApply:
    operation: ClassVar[str] = "atomic_apply"

    runtime_id: LogicalRuntimeId
    delta: SessionDelta | None
    receipt: RunBoundaryReceipt
    input_updates: Sequence[StoredInputState]
    session_store_key: SessionId | None

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        check_optional_instance(self.delta, SessionDelta, "delta")
        check_instance(self.receipt, RunBoundaryReceipt, "receipt")
        _set(
            self,
            "input_updates",
            check_tuple(self.input_updates, StoredInputState, "input_updates"),
        )
        check_optional_instance(self.session_store_key, SessionId, "session_store_key")


@final
@dataclass(frozen=True, slots=True)
class PersistInputState:
    operation: ClassVar[str] = "persist_input_state"

    runtime_id: LogicalRuntimeId
    state: StoredInputState

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(self.state, StoredInputState, "state")


@final
@dataclass(frozen=True, slots=True)
class CommitMachineLifecycle:
    operation: ClassVar[str] = "commit_machine_lifecycle"

    runtime_id: LogicalRuntimeId
    commit: MachineLifecycleCommit
    input_states: Sequence[StoredInputState]
    expected: RuntimeState | Unchecked | None = UNCHECKED

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(self.commit, MachineLifecycleCommit, "commit")
        _set(
            self,
            "input_states",
            check_tuple(self.input_states, StoredInputState, "input_states"),
        )
        if not isinstance(self.expected, (RuntimeState, Unchecked)) and self.expected is not None:
            raise TypeError(
                "expected must be a RuntimeState or None (no runtime state yet),"
                f" got {type(self.expected).__name__}"
            )


@final
@dataclass(frozen=True, slots=True)
class PersistOpsLifecycle:
    operation: ClassVar[str] = "persist_ops_lifecycle"

    runtime_id: LogicalRuntimeId
    snapshot: PersistedOpsSnapshot

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(self.snapshot, PersistedOpsSnapshot, "snapshot")


@final
@dataclass(frozen=True, slots=True)
class ClearSessionSnapshot:
    operation: ClassVar[str] = "clear_session_snapshot"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")


@final
@dataclass(frozen=True, slots=True)
class DeleteOpsLifecycle:
    operation: ClassVar[str] = "delete_ops_lifecycle"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")


@final
@dataclass(frozen=True, slots=True)
class RetireInputPayloads:
    operation: ClassVar[str] = "retire_input_payloads"

    runtime_id: LogicalRuntimeId
    input_ids: Sequence[InputId]

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        _set(self, "input_ids", check_tuple(self.input_ids, InputId, "input_ids"))


@final
@dataclass(frozen=True, slots=True)
class PurgeRuntime:
    operation: ClassVar[str] = "purge_runtime"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")


Command: TypeAlias = (
    PersistOAuthFlowSnapshot
    | UpdateOAuthFlowSnapshot
    | CommitSessionSnapshot
    | AtomicApply
    | PersistInputState
    | CommitMachineLifecycle
    | PersistOpsLifecycle
    | ClearSessionSnapshot
    | DeleteOpsLifecycle
    | RetireInputPayloads
    | PurgeRuntime
)


# --- queries (reads) ----------------------------------------------------------------
#
# A query is built in the caller's task like a command, and its constructor
# checks the arguments the same way. `answer(view)` is pure: the same view
# gives the same answer, whichever store holds it.

T_co = TypeVar("T_co", covariant=True)


class Query(ABC, Generic[T_co]):
    """A read: its arguments, checked, and how to answer it from a `ReadView`."""

    __slots__ = ()
    operation: ClassVar[str]

    @abstractmethod
    def answer(self, view: ReadView) -> T_co:
        """The query's answer from `view`: a pure function of the lookups it makes."""


@final
@dataclass(frozen=True, slots=True)
class LoadAuthOAuthFlowSnapshot(Query["bytes | None"]):
    operation: ClassVar[str] = "load_auth_oauth_flow_snapshot"

    def answer(self, view: ReadView) -> bytes | None:
        return load_auth_oauth_flow_snapshot(view)


@final
@dataclass(frozen=True, slots=True)
class LoadSessionSnapshot(Query["bytes | None"]):
    operation: ClassVar[str] = "load_session_snapshot"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")

    def answer(self, view: ReadView) -> bytes | None:
        return load_session_snapshot(view, self.runtime_id)


@final
@dataclass(frozen=True, slots=True)
class LoadInputStates(Query["list[StoredInputState]"]):
    operation: ClassVar[str] = "load_input_states"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")

    def answer(self, view: ReadView) -> list[StoredInputState]:
        return load_input_states(view, self.runtime_id)


@final
@dataclass(frozen=True, slots=True)
class LoadInputState(Query["StoredInputState | None"]):
    operation: ClassVar[str] = "load_input_state"

    runtime_id: LogicalRuntimeId
    input_id: InputId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(self.input_id, InputId, "input_id")

    def answer(self, view: ReadView) -> StoredInputState | None:
        return load_input_state(view, self.runtime_id, self.input_id)


@final
@dataclass(frozen=True, slots=True)
class LoadBoundaryReceipt(Query["RunBoundaryReceipt | None"]):
    operation: ClassVar[str] = "load_boundary_receipt"

    runtime_id: LogicalRuntimeId
    run_id: RunId
    sequence: int

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(self.run_id, RunId, "run_id")
        _set(self, "sequence", check_u64(self.sequence, "sequence"))

    def answer(self, view: ReadView) -> RunBoundaryReceipt | None:
        return load_boundary_receipt(view, self.runtime_id, self.run_id, self.sequence)


@final
@dataclass(frozen=True, slots=True)
class LoadRuntimeState(Query["RuntimeState | None"]):
    operation: ClassVar[str] = "load_runtime_state"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")

    def answer(self, view: ReadView) -> RuntimeState | None:
        return load_runtime_state(view, self.runtime_id)


@final
@dataclass(frozen=True, slots=True)
class LoadOpsLifecycle(Query["PersistedOpsSnapshot | None"]):
    operation: ClassVar[str] = "load_ops_lifecycle"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")

    def answer(self, view: ReadView) -> PersistedOpsSnapshot | None:
        return load_ops_lifecycle(view, self.runtime_id)


@final
@dataclass(frozen=True, slots=True)
class ListRuntimes(Query["list[LogicalRuntimeId]"]):
    operation: ClassVar[str] = "list_runtimes"

    def answer(self, view: ReadView) -> list[LogicalRuntimeId]:
        return list_runtimes(view)


@final
@dataclass(frozen=True, slots=True)
class LoadBoundaryReceipts(Query["list[RunBoundaryReceipt]"]):
    operation: ClassVar[str] = "load_boundary_receipts"

    runtime_id: LogicalRuntimeId

    def __post_init__(self) -> None:
        check_instance(self.runtime_id, LogicalRuntimeId, "runtime_id")

    def answer(self, view: ReadView) -> list[RunBoundaryReceipt]:
        return load_boundary_receipts(view, self.runtime_id)


# --- effects (what the redo log records) ----------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class SetOAuthFlowSnapshot:
    snapshot: bytes


@final
@dataclass(frozen=True, slots=True)
class SetSessionSnapshot:
    runtime_id: LogicalRuntimeId
    snapshot: bytes


@final
@dataclass(frozen=True, slots=True, init=False)
class InsertReceipt:
    """Insert a receipt; built from a receipt or its packed form (held packed)."""

    runtime_id: LogicalRuntimeId
    receipt: PackedReceipt

    def __init__(
        self, runtime_id: LogicalRuntimeId, receipt: RunBoundaryReceipt | PackedReceipt
    ) -> None:
        _set(self, "runtime_id", runtime_id)
        _set(
            self,
            "receipt",
            receipt if isinstance(receipt, PackedReceipt) else PackedReceipt.of(receipt),
        )


@final
@dataclass(frozen=True, slots=True, init=False)
class PutInputStates:
    """Upsert by input id, in order: a later entry wins over an earlier one.
    Built from input states or their packed forms (held packed)."""

    runtime_id: LogicalRuntimeId
    states: tuple[PackedInput, ...]

    def __init__(
        self,
        runtime_id: LogicalRuntimeId,
        states: Iterable[StoredInputState | PackedInput],
    ) -> None:
        _set(self, "runtime_id", runtime_id)
        _set(
            self,
            "states",
            tuple(s if isinstance(s, PackedInput) else PackedInput.of(s) for s in states),
        )


@final
@dataclass(frozen=True, slots=True)
class SetRuntimeState:
    runtime_id: LogicalRuntimeId
    runtime_state: RuntimeState


@final
@dataclass(frozen=True, slots=True)
class SetOpsSnapshot:
    runtime_id: LogicalRuntimeId
    snapshot: PersistedOpsSnapshot


@final
@dataclass(frozen=True, slots=True)
class RemoveSessionSnapshot:
    runtime_id: LogicalRuntimeId


@final
@dataclass(frozen=True, slots=True)
class RemoveOpsSnapshot:
    runtime_id: LogicalRuntimeId


@final
@dataclass(frozen=True, slots=True)
class RemoveRuntime:
    """Remove everything the runtime holds (`purge_runtime`)."""

    runtime_id: LogicalRuntimeId


Effect: TypeAlias = (
    SetOAuthFlowSnapshot
    | SetSessionSnapshot
    | InsertReceipt
    | PutInputStates
    | SetRuntimeState
    | SetOpsSnapshot
    | RemoveSessionSnapshot
    | RemoveOpsSnapshot
    | RemoveRuntime
)


class CallerCodeError(Exception):
    """Carries an exception raised by caller code run inside a command (the
    OAuth updater), or a wrong result from it. The shell re-raises `.error` in
    the caller; the state is unchanged."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


# --- plan: command -> effects, or a store error --------------------------------------------


def _session_effect(
    runtime_id: LogicalRuntimeId,
    delta: SessionDelta,
    codec: SessionCodec,
    session_store_key: SessionId | None,
) -> SetSessionSnapshot:
    """Ask the codec for the snapshot's session id; validate it against the key."""
    try:
        actual = codec.session_id(delta.session_snapshot)
    except Exception as exc:
        raise WriteFailed(
            f"runtime {runtime_id}: session snapshot rejected by {codec!r}: {exc}"
        ) from exc
    if not isinstance(actual, SessionId):
        raise WriteFailed(
            f"runtime {runtime_id}: {codec!r}.session_id() returned"
            f" {type(actual).__name__}, not SessionId"
        )
    if session_store_key is not None and session_store_key != actual:
        raise SessionKeyMismatch(session_store_key, actual, runtime_id=str(runtime_id))
    return SetSessionSnapshot(runtime_id, delta.session_snapshot)


def _plan_atomic_apply(view: ReadView, cmd: AtomicApply, codec: SessionCodec) -> list[Effect]:
    effects: list[Effect] = []
    if cmd.delta is not None:
        effects.append(_session_effect(cmd.runtime_id, cmd.delta, codec, cmd.session_store_key))
    receipt = cmd.receipt
    if view.boundary_receipt(cmd.runtime_id, receipt.run_id, receipt.sequence) is not None:
        raise ReceiptConflict(
            f"runtime {cmd.runtime_id}: a receipt for run {receipt.run_id}"
            f" sequence {receipt.sequence} exists already; receipts are immutable"
        )
    effects.append(InsertReceipt(cmd.runtime_id, receipt))
    if cmd.input_updates:
        effects.append(PutInputStates(cmd.runtime_id, tuple(cmd.input_updates)))
    return effects


def _plan_update_oauth(view: ReadView, cmd: UpdateOAuthFlowSnapshot) -> list[Effect]:
    try:
        new: object = cmd.update(view.auth_oauth_flow_snapshot())
    except Exception as exc:
        raise CallerCodeError(exc) from exc
    if not isinstance(new, bytes):
        if inspect.isawaitable(new):
            # An async updater the up-front check did not recognise: close
            # the coroutine, so Python does not warn that it was never awaited.
            close = getattr(new, "close", None)
            if callable(close):
                close()
            raise CallerCodeError(
                TypeError(
                    "update_auth_oauth_flow_snapshot: update must be a plain function"
                    f" returning bytes, but it returned an awaitable ({type(new).__name__});"
                    " the store runs it inside one atomic step, which cannot await"
                )
            )
        raise CallerCodeError(
            TypeError(
                "update_auth_oauth_flow_snapshot: the updater must return bytes,"
                f" got {type(new).__name__}"
            )
        )
    return [SetOAuthFlowSnapshot(bytes(new))]


def _plan_lifecycle(view: ReadView, cmd: CommitMachineLifecycle) -> list[Effect]:
    if cmd.expected is not UNCHECKED:
        actual = view.runtime_state(cmd.runtime_id)
        if actual is not cmd.expected:
            raise LifecycleConflict(cmd.expected, actual, runtime_id=str(cmd.runtime_id))
    effects: list[Effect] = [SetRuntimeState(cmd.runtime_id, cmd.commit.runtime_state)]
    if cmd.input_states:
        effects.append(PutInputStates(cmd.runtime_id, tuple(cmd.input_states)))
    return effects


def _plan_retire(view: ReadView, cmd: RetireInputPayloads) -> list[Effect]:
    """Check every named state first (in the order given: the first one that
    is unknown or not terminal decides the error), then rewrite the ones that
    still hold a payload, each once."""
    retired: dict[InputId, StoredInputState] = {}
    for input_id in cmd.input_ids:
        stored = view.input_state(cmd.runtime_id, input_id)
        if stored is None:
            raise NotFound(
                f"runtime {str(cmd.runtime_id)!r}: no input state {input_id} to retire;"
                " nothing was retired"
            )
        seed = stored.seed
        if not seed.phase.is_terminal or seed.terminal_outcome is None:
            raise NotRetirable(str(cmd.runtime_id), input_id, seed.phase)
        if stored.state.persisted_input is not None:
            retired[input_id] = replace(stored, state=replace(stored.state, persisted_input=None))
    if not retired:
        return []
    return [PutInputStates(cmd.runtime_id, tuple(retired.values()))]


def _plan_purge(view: ReadView, cmd: PurgeRuntime) -> list[Effect]:
    actual = view.runtime_state(cmd.runtime_id)
    if actual is not RuntimeState.DESTROYED:
        raise RuntimeNotDestroyed(str(cmd.runtime_id), actual)
    return [RemoveRuntime(cmd.runtime_id)]


def plan(view: ReadView, command: Command, codec: SessionCodec) -> tuple[Effect, ...]:
    """Return the effects of `command` on the state `view` shows.

    `view` is read only through the `ReadView` lookups, so a backend whose
    state is not a `StoreState` lets this function decide for it all the same.

    Raises:
        WriteFailed: the session codec cannot read the command's snapshot.
        SessionKeyMismatch: `AtomicApply.session_store_key` differs from the
            snapshot's session id.
        ReceiptConflict: `AtomicApply` would overwrite an existing receipt.
        LifecycleConflict: `CommitMachineLifecycle.expected` is not the
            stored runtime state.
        NotFound, NotRetirable: `RetireInputPayloads` names an unknown or a
            non-terminal input state.
        RuntimeNotDestroyed: `PurgeRuntime` of a runtime not destroyed.
        CallerCodeError: the OAuth updater raised or returned non-bytes.

    A command that would change nothing (clearing a snapshot that is not
    there, retiring retired payloads) has no effects.
    """
    effects: list[Effect]
    match command:
        case AtomicApply():
            effects = _plan_atomic_apply(view, command, codec)
        case CommitSessionSnapshot(runtime_id, delta):
            effects = [_session_effect(runtime_id, delta, codec, None)]
        case PersistInputState(runtime_id, stored):
            effects = [PutInputStates(runtime_id, (stored,))]
        case CommitMachineLifecycle():
            effects = _plan_lifecycle(view, command)
        case PersistOpsLifecycle(runtime_id, snapshot):
            effects = [SetOpsSnapshot(runtime_id, snapshot)]
        case PersistOAuthFlowSnapshot(snapshot):
            effects = [SetOAuthFlowSnapshot(snapshot)]
        case UpdateOAuthFlowSnapshot():
            effects = _plan_update_oauth(view, command)
        case ClearSessionSnapshot(runtime_id):
            present = view.session_snapshot(runtime_id) is not None
            effects = [RemoveSessionSnapshot(runtime_id)] if present else []
        case DeleteOpsLifecycle(runtime_id):
            present = view.ops_lifecycle(runtime_id) is not None
            effects = [RemoveOpsSnapshot(runtime_id)] if present else []
        case RetireInputPayloads():
            effects = _plan_retire(view, command)
        case PurgeRuntime():
            effects = _plan_purge(view, command)
        case _:  # pragma: no cover - the Command union is closed
            raise TypeError(f"not a store command: {command!r}")
    return tuple(effects)


# --- redo: effects -> state (total; what recovery replays) --------------------------------


def _redo_one(record: RuntimeRecord, effect: Effect) -> RuntimeRecord:
    match effect:
        case SetSessionSnapshot(_, snapshot):
            return replace(record, session_snapshot=snapshot)
        case InsertReceipt(_, receipt):
            return replace(record, receipts=record.receipts.set(receipt.key, receipt.blob))
        case PutInputStates(_, states):
            return replace(
                record, input_states=record.input_states.update((p.key, p.blob) for p in states)
            )
        case SetRuntimeState(_, runtime_state):
            return replace(record, runtime_state=runtime_state)
        case SetOpsSnapshot(_, snapshot):
            return replace(record, ops_snapshot=snapshot)
        case RemoveSessionSnapshot():
            return replace(record, session_snapshot=None)
        case RemoveOpsSnapshot():
            return replace(record, ops_snapshot=None)
        case RemoveRuntime():
            return _EMPTY_RECORD
    raise TypeError(f"not a runtime effect: {effect!r}")  # pragma: no cover


def redo(state: StoreState, effects: tuple[Effect, ...]) -> StoreState:
    """Apply `effects` to `state`, in order. Never fails for valid effects."""
    runtimes = state.runtimes
    oauth = state.oauth_flow_snapshot
    # Effects of one command mostly touch one runtime: update its record
    # locally and store it in the map once per run of effects.
    # A record that ends up empty leaves the map.
    current: LogicalRuntimeId | None = None
    record = _EMPTY_RECORD
    for effect in effects:
        if isinstance(effect, SetOAuthFlowSnapshot):
            oauth = effect.snapshot
            continue
        if effect.runtime_id != current:
            if current is not None:
                runtimes = _store_record(runtimes, current, record)
            current = effect.runtime_id
            record = runtimes.get(current, _EMPTY_RECORD)
        record = _redo_one(record, effect)
    if current is not None:
        runtimes = _store_record(runtimes, current, record)
    return StoreState(runtimes, oauth)


def _store_record(
    runtimes: PMap[LogicalRuntimeId, RuntimeRecord],
    runtime_id: LogicalRuntimeId,
    record: RuntimeRecord,
) -> PMap[LogicalRuntimeId, RuntimeRecord]:
    if record == _EMPTY_RECORD:
        return runtimes.discard(runtime_id)
    return runtimes.set(runtime_id, record)


class _Staged:
    """One runtime's record while a `Rebuild` applies effects to it, in
    mutable form."""

    __slots__ = ("inputs", "ops_snapshot", "receipts", "runtime_state", "session_snapshot")

    def __init__(self, record: RuntimeRecord) -> None:
        self.session_snapshot = record.session_snapshot
        self.inputs: dict[bytes, bytes] | PackedMap = record.input_states
        self.receipts: dict[bytes, bytes] | PackedMap = record.receipts
        self.runtime_state = record.runtime_state
        self.ops_snapshot = record.ops_snapshot

    def record(self) -> RuntimeRecord:
        inputs, receipts = self.inputs, self.receipts
        return RuntimeRecord(
            self.session_snapshot,
            inputs if isinstance(inputs, PackedMap) else PackedMap.adopt(inputs),
            receipts if isinstance(receipts, PackedMap) else PackedMap.adopt(receipts),
            self.runtime_state,
            self.ops_snapshot,
        )


class Rebuild:
    """`redo` for recovery: applies many records' effects to a state, the
    records touched in mutable form, and gives the state at the end.

    `Rebuild(s)` then `apply(e1)`, `apply(e2)`, ... and `state()` equals
    `redo(redo(s, e1), e2)...` (a property test holds them equal). It skips
    the copy of a runtime's maps that `redo` makes for each record: replaying
    a log of 10^5 records builds each map once.
    """

    def __init__(self, state: StoreState) -> None:
        self._base = state
        self._oauth = state.oauth_flow_snapshot
        self._staged: dict[LogicalRuntimeId, _Staged] = {}

    def apply(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SetOAuthFlowSnapshot):
                self._oauth = effect.snapshot
                continue
            staged = self._staged.get(effect.runtime_id)
            if staged is None:
                staged = self._staged[effect.runtime_id] = _Staged(
                    self._base.record(effect.runtime_id)
                )
            match effect:
                case SetSessionSnapshot(_, snapshot):
                    staged.session_snapshot = snapshot
                case InsertReceipt(_, receipt):
                    receipts = staged.receipts
                    if isinstance(receipts, PackedMap):
                        receipts = staged.receipts = receipts.to_dict()
                    receipts[receipt.key] = receipt.blob
                case PutInputStates(_, states):
                    inputs = staged.inputs
                    if isinstance(inputs, PackedMap):
                        inputs = staged.inputs = inputs.to_dict()
                    for packed in states:
                        inputs[packed.key] = packed.blob
                case SetRuntimeState(_, runtime_state):
                    staged.runtime_state = runtime_state
                case SetOpsSnapshot(_, snapshot):
                    staged.ops_snapshot = snapshot
                case RemoveSessionSnapshot():
                    staged.session_snapshot = None
                case RemoveOpsSnapshot():
                    staged.ops_snapshot = None
                case RemoveRuntime():
                    self._staged[effect.runtime_id] = _Staged(_EMPTY_RECORD)
                case _:  # pragma: no cover - the Effect union is closed
                    raise TypeError(f"not an effect: {effect!r}")

    def state(self) -> StoreState:
        """The state after every effect applied so far."""
        if not self._staged:
            return StoreState(self._base.runtimes, self._oauth)
        runtimes = self._base.runtimes.evolver()
        for runtime_id, staged in self._staged.items():
            record = staged.record()
            if record != _EMPTY_RECORD:
                runtimes[runtime_id] = record
            elif runtime_id in self._base.runtimes:
                runtimes.remove(runtime_id)
        return StoreState(runtimes.persistent(), self._oauth)


def state_effects(state: StoreState) -> tuple[Effect, ...]:
    """Effects that rebuild `state` from `EMPTY`: `redo(EMPTY, state_effects(s))`
    equals `s` without its empty runtime records. Used to copy a whole store
    (export to SQLite)."""
    effects: list[Effect] = []
    for runtime_id, record in state.runtimes.items():
        if record.session_snapshot is not None:
            effects.append(SetSessionSnapshot(runtime_id, record.session_snapshot))
        if record.input_states:
            effects.append(
                PutInputStates(
                    runtime_id, [PackedInput(k, v) for k, v in record.input_states.items()]
                )
            )
        effects.extend(
            InsertReceipt(runtime_id, PackedReceipt(k, v)) for k, v in record.receipts.items()
        )
        if record.runtime_state is not None:
            effects.append(SetRuntimeState(runtime_id, record.runtime_state))
        if record.ops_snapshot is not None:
            effects.append(SetOpsSnapshot(runtime_id, record.ops_snapshot))
    if state.oauth_flow_snapshot is not None:
        effects.append(SetOAuthFlowSnapshot(state.oauth_flow_snapshot))
    return tuple(effects)


def without_empty_records(state: StoreState) -> StoreState:
    """`state` without runtimes that hold nothing (equal for every read)."""
    empty = [runtime_id for runtime_id, record in state.runtimes.items() if record == _EMPTY_RECORD]
    if not empty:
        return state
    runtimes = state.runtimes.evolver()
    for runtime_id in empty:
        del runtimes[runtime_id]
    return StoreState(runtimes.persistent(), state.oauth_flow_snapshot)


def apply(
    state: StoreState, command: Command, codec: SessionCodec
) -> tuple[StoreState, tuple[Effect, ...]]:
    """Run one command: return the new state and the effects to log.

    On any error `state` is untouched (it is immutable) and nothing is logged.
    """
    effects = plan(state, command, codec)
    return redo(state, effects), effects


# --- reads: pure functions of a ReadView -------------------------------------------


def load_input_states(view: ReadView, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
    """The runtime's input states sorted by input id (UUID order); `[]` if unknown."""
    return sorted(view.input_states(runtime_id), key=_uuid_order)


def _uuid_order(stored: StoredInputState) -> int:
    return stored.state.input_id.value.int


def load_input_state(
    view: ReadView, runtime_id: LogicalRuntimeId, input_id: InputId
) -> StoredInputState | None:
    return view.input_state(runtime_id, input_id)


def load_boundary_receipt(
    view: ReadView, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
) -> RunBoundaryReceipt | None:
    return view.boundary_receipt(runtime_id, run_id, sequence)


def load_session_snapshot(view: ReadView, runtime_id: LogicalRuntimeId) -> bytes | None:
    return view.session_snapshot(runtime_id)


def load_runtime_state(view: ReadView, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
    return view.runtime_state(runtime_id)


def load_ops_lifecycle(view: ReadView, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
    return view.ops_lifecycle(runtime_id)


def load_auth_oauth_flow_snapshot(view: ReadView) -> bytes | None:
    return view.auth_oauth_flow_snapshot()


def list_runtimes(view: ReadView) -> list[LogicalRuntimeId]:
    """Every runtime that holds anything, sorted by its string."""
    return sorted(view.runtime_ids(), key=str)


def load_boundary_receipts(
    view: ReadView, runtime_id: LogicalRuntimeId
) -> list[RunBoundaryReceipt]:
    """The runtime's receipts sorted by `(run_id, sequence)` (UUID order, then
    number); `[]` if none."""
    return sorted(view.boundary_receipts(runtime_id), key=_receipt_order)


def _receipt_order(receipt: RunBoundaryReceipt) -> tuple[int, int]:
    return (receipt.run_id.value.int, receipt.sequence)
