"""meerkat_actor: an actor-based, in-process storage engine on trio.

One storage actor task owns the whole store state as an immutable value and
applies commands one at a time; see `docs/architecture.md`. Every store
implements the `RuntimeStore` protocol of the Meerkat agent runtime.

    import meerkat_actor as ma

    async with ma.open_store() as store:
        await store.persist_input_state(runtime_id, ma.StoredInputState.new_accepted(input_id))
"""

from ._actor import ActorStore, open_store
from ._errors import (
    CommitOutcomeUnknown,
    CorruptStore,
    Internal,
    InvalidTransition,
    LifecycleConflict,
    NotFound,
    NotRetirable,
    ReadFailed,
    ReceiptConflict,
    RuntimeNotDestroyed,
    RuntimeStoreError,
    SessionKeyMismatch,
    StoreClosed,
    StoreLocked,
    StorePoisoned,
    Unsupported,
    UnsupportedFormat,
    WriteFailed,
)
from ._front import StoreStatistics
from ._ids import InputId, LogicalRuntimeId, RunId, SessionId
from ._postgres import PostgresStore, open_postgres_store
from ._protocol import RuntimeStore
from ._session_codec import MeerkatSessionCodec, SessionCodec
from ._shutdown import shutdown_on_signals
from ._sqlite import SqliteStore, open_sqlite_store
from ._types import (
    INPUT_LIFECYCLE_TRANSITIONS,
    LIFECYCLE_TRANSITIONS,
    UNCHECKED,
    InputAbandonReason,
    InputDurability,
    InputLifecycleState,
    InputState,
    InputStateHistoryEntry,
    InputStateSeed,
    InputTerminalOutcome,
    MachineLifecycleCommit,
    PersistedOpsSnapshot,
    RunApplyBoundary,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
    Unchecked,
    machine_transition,
)

__all__ = [
    "INPUT_LIFECYCLE_TRANSITIONS",
    "LIFECYCLE_TRANSITIONS",
    "UNCHECKED",
    "ActorStore",
    "CommitOutcomeUnknown",
    "CorruptStore",
    "InputAbandonReason",
    "InputDurability",
    "InputId",
    "InputLifecycleState",
    "InputState",
    "InputStateHistoryEntry",
    "InputStateSeed",
    "InputTerminalOutcome",
    "Internal",
    "InvalidTransition",
    "LifecycleConflict",
    "LogicalRuntimeId",
    "MachineLifecycleCommit",
    "MeerkatSessionCodec",
    "NotFound",
    "NotRetirable",
    "PersistedOpsSnapshot",
    "PostgresStore",
    "ReadFailed",
    "ReceiptConflict",
    "RunApplyBoundary",
    "RunBoundaryReceipt",
    "RunId",
    "RuntimeNotDestroyed",
    "RuntimeState",
    "RuntimeStore",
    "RuntimeStoreError",
    "SessionCodec",
    "SessionDelta",
    "SessionId",
    "SessionKeyMismatch",
    "SqliteStore",
    "StoreClosed",
    "StoreLocked",
    "StorePoisoned",
    "StoreStatistics",
    "StoredInputState",
    "Unchecked",
    "Unsupported",
    "UnsupportedFormat",
    "WriteFailed",
    "machine_transition",
    "open_postgres_store",
    "open_sqlite_store",
    "open_store",
    "shutdown_on_signals",
]

__version__ = "0.1.0"
