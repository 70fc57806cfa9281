"""The store's errors (SPEC §5).

Rule 1: every error a store method raises on purpose is a `RuntimeStoreError`,
except bad arguments, which are `TypeError`/`ValueError` raised in the caller
before anything reaches the store.

Rule 2: each class's docstring says exactly when it is raised, and who is at
fault: the caller (`SessionKeyMismatch`, `ReceiptConflict`, `StoreClosed`), the
data (`CorruptStore`), or the machine (`WriteFailed` from I/O, `Internal`).

The direct kinds mirror the Rust `RuntimeStoreError` enum of the seed;
refinements subclass the nearest kind so `except WriteFailed` also catches a
`ReceiptConflict`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ids import InputId, SessionId
    from ._types import InputLifecycleState, RuntimeState

__all__ = [
    "CommitOutcomeUnknown",
    "CorruptStore",
    "Internal",
    "InvalidTransition",
    "LifecycleConflict",
    "NotFound",
    "NotRetirable",
    "Poison",
    "ReadFailed",
    "ReceiptConflict",
    "RuntimeNotDestroyed",
    "RuntimeStoreError",
    "SessionKeyMismatch",
    "StoreClosed",
    "StoreLocked",
    "StorePoisoned",
    "Unsupported",
    "UnsupportedFormat",
    "WriteFailed",
]


class RuntimeStoreError(Exception):
    """Base class of every error a store operation raises on purpose.

    Bad arguments are not store errors: they raise `TypeError` or
    `ValueError` before the operation reaches the store.
    """


class WriteFailed(RuntimeStoreError):
    """A write was refused or could not be made durable.

    Raised directly when the session codec cannot read a session snapshot
    (the message names the runtime and the codec's reason), in durable
    stores when writing or syncing the log fails, and in the SQLite store
    when SQLite fails a write (chained to the `sqlite3` error). Subclasses
    narrow the cause.

    A refused write changed nothing. A write whose storage failed under it
    (the log's write or fsync, SQLite's COMMIT) is not visible in this
    store, which is then poisoned (`StorePoisoned`); whether it reappears
    after a reopen depends on what reached the disk, and the message says
    the outcome is unknown until then. See docs/durability.md and
    docs/sqlite.md.
    """


class ReadFailed(RuntimeStoreError):
    """A read could not be served from the store's data (in the SQLite store:
    SQLite failed the read, chained to the `sqlite3` error), or a store could
    not be opened."""


class SessionKeyMismatch(RuntimeStoreError):
    """`atomic_apply` was given a `session_store_key` that differs from the
    session id inside its session snapshot. Nothing of the call was applied.

    Attributes:
        expected: the `session_store_key` the caller passed.
        actual: the session id the session codec read from the snapshot.
        runtime_id: the runtime the call was for (`""` if not given).
    """

    expected: SessionId
    actual: SessionId
    runtime_id: str

    def __init__(self, expected: SessionId, actual: SessionId, *, runtime_id: str = "") -> None:
        where = f" for runtime {runtime_id!r}" if runtime_id else ""
        super().__init__(f"session store key mismatch{where}: expected {expected}, actual {actual}")
        self.expected = expected
        self.actual = actual
        self.runtime_id = runtime_id

    def __reduce__(self) -> tuple[object, ...]:
        return (_session_key_mismatch, (self.expected, self.actual, self.runtime_id))


def _session_key_mismatch(
    expected: SessionId, actual: SessionId, runtime_id: str
) -> SessionKeyMismatch:
    return SessionKeyMismatch(expected, actual, runtime_id=runtime_id)


class NotFound(RuntimeStoreError):
    """A named thing the operation needs does not exist.

    Raised by `retire_input_payloads` for an input id the runtime holds no
    state for (the message names the runtime and the input; nothing of the
    call was applied). Loads of unknown keys never raise it: they return
    `None` or `[]`.
    """


class Unsupported(RuntimeStoreError):
    """The backend does not implement this operation.

    The stores of this package implement every operation; other backends
    declare what they leave out to the conformance kit, which then expects
    this error from those operations.
    """


class Internal(RuntimeStoreError):
    """The store failed in a way that is not the caller's fault.

    Raised to every waiting and later caller once the storage actor has died
    of an unexpected exception; the cause is chained (`__cause__`). The store
    must be closed and reopened.
    """


class ReceiptConflict(WriteFailed):
    """`atomic_apply` tried to insert a run-boundary receipt under a key
    `(runtime_id, run_id, sequence)` that already holds one.

    Receipts are immutable: the whole call was refused and nothing of it was
    applied. A caller unsure whether an earlier commit landed can load the
    receipt to find out.
    """


class NotRetirable(WriteFailed):
    """`retire_input_payloads` named an input state that is not terminal: its
    phase is not consumed, superseded, coalesced or abandoned, or it has no
    terminal outcome. Nothing of the call was applied (not even the ids
    listed before it).

    Attributes:
        runtime_id: the runtime the call was for.
        input_id: the first input id of the call that cannot be retired.
        phase: that input state's phase.
    """

    runtime_id: str
    input_id: InputId
    phase: InputLifecycleState

    def __init__(self, runtime_id: str, input_id: InputId, phase: InputLifecycleState) -> None:
        super().__init__(
            f"runtime {runtime_id!r}: input {input_id} is not retirable (phase"
            f" {phase.value}): only a terminal state (consumed, superseded, coalesced,"
            " abandoned) with a terminal outcome can have its payload retired"
        )
        self.runtime_id = runtime_id
        self.input_id = input_id
        self.phase = phase

    def __reduce__(self) -> tuple[object, ...]:
        return (NotRetirable, (self.runtime_id, self.input_id, self.phase))


class RuntimeNotDestroyed(WriteFailed):
    """`purge_runtime` was called for a runtime whose runtime state is not
    `destroyed` (or that has none). Nothing was removed.

    Attributes:
        runtime_id: the runtime the call was for.
        actual: its runtime state (`None`: it has none).
    """

    runtime_id: str
    actual: RuntimeState | None

    def __init__(self, runtime_id: str, actual: RuntimeState | None) -> None:
        state = "no runtime state" if actual is None else f"runtime state {actual.value}"
        super().__init__(
            f"runtime {runtime_id!r} cannot be purged: it has {state}; only a runtime"
            " whose runtime state is destroyed can be purged"
        )
        self.runtime_id = runtime_id
        self.actual = actual

    def __reduce__(self) -> tuple[object, ...]:
        return (RuntimeNotDestroyed, (self.runtime_id, self.actual))


class LifecycleConflict(WriteFailed):
    """`commit_machine_lifecycle(..., expected=...)` found a stored runtime
    state other than `expected` (a compare-and-set that lost). Nothing of the
    call was applied.

    Attributes:
        expected: the runtime state the caller expected (`None`: none yet).
        actual: the runtime state the store holds (`None`: none).
        runtime_id: the runtime the call was for.
    """

    expected: RuntimeState | None
    actual: RuntimeState | None
    runtime_id: str

    def __init__(
        self, expected: RuntimeState | None, actual: RuntimeState | None, *, runtime_id: str = ""
    ) -> None:
        where = f" for runtime {runtime_id!r}" if runtime_id else ""

        def name(state: RuntimeState | None) -> str:
            return "no runtime state" if state is None else state.value

        super().__init__(
            f"lifecycle conflict{where}: expected {name(expected)}, actual {name(actual)}"
        )
        self.expected = expected
        self.actual = actual
        self.runtime_id = runtime_id

    def __reduce__(self) -> tuple[object, ...]:
        return (_lifecycle_conflict, (self.expected, self.actual, self.runtime_id))


def _lifecycle_conflict(
    expected: RuntimeState | None, actual: RuntimeState | None, runtime_id: str
) -> LifecycleConflict:
    return LifecycleConflict(expected, actual, runtime_id=runtime_id)


class StoreLocked(WriteFailed):
    """Opening a durable store (or a read-only command reading one) found its
    directory locked by another open store, in this process or another.

    The message names the directory and the holder its LOCK file's note
    names (pid, host, program, when it opened the store), if that process
    is running, or says it is not running, and what to do instead: take a
    backup in the process that holds it (`await store.backup(path)`), or
    stop that process with SIGTERM or SIGINT (docs/operations.md#shutdown).

    Attributes:
        directory: the store directory (`None` if not given).
        pid: the holder's process id, when its note names a process that
            is running or cannot be checked (another host); else `None`.
        host: the holder's host name, likewise; else `None`.
    """

    directory: str | None = None
    pid: int | None = None
    host: str | None = None


class CommitOutcomeUnknown(WriteFailed):
    """The PostgreSQL store lost its connection while COMMIT was on its way:
    the server may have committed the write or not, and no one can say
    which until it is read back (for `atomic_apply`, look its receipt up
    with `load_boundary_receipt`; the write either is there whole or is not
    there at all). Every other `WriteFailed` means nothing was written."""


class StorePoisoned(WriteFailed):
    """A durable store failed to write or sync its log earlier (the SQLite
    store: a COMMIT failed with an outcome it cannot know), and this handle
    refuses every later write until the store is reopened. Reads keep
    working; reopening recovers from disk."""


class Poison:
    """The one place that decides a poisoned store's refusal (SPEC §6).

    A store handle owns one; every part of it that may refuse a write (the
    actor, the writer, the SQLite database) asks it. Once `set`, it stays
    set: retrying after a failure of unknown outcome is never correct, so
    only reopening the store clears it.
    """

    __slots__ = ("cause", "failed", "location")

    def __init__(self, location: str, failed: str = "log write") -> None:
        """`location` names the store in messages ("the store at /srv/state"),
        `failed` what fails with an unknown outcome ("log write", "COMMIT")."""
        self.location = location
        self.failed = failed
        self.cause: BaseException | None = None

    def set(self, cause: BaseException) -> None:
        """Poison the store: `cause` is the failure whose outcome is unknown."""
        if self.cause is None:
            self.cause = cause

    def __bool__(self) -> bool:
        return self.cause is not None

    def error(self, where: str = "") -> StorePoisoned:
        """The refusal of a write, chained to the cause."""
        prefix = f"{where}: " if where else ""
        error = StorePoisoned(
            f"{prefix}{self.location} refuses writes: an earlier {self.failed} failed"
            f" ({self.cause}) and its outcome is unknown; reopen the store"
        )
        error.__cause__ = self.cause
        return error

    def check(self, where: str = "") -> None:
        """Raise the refusal if the store is poisoned.

        Raises:
            StorePoisoned: the store is poisoned.
        """
        if self.cause is not None:
            raise self.error(where)


class CorruptStore(ReadFailed):
    """A durable store's files are damaged in a way recovery must not paper
    over (anything but a torn record at the very end of the log). The message
    names the file and the byte offset.

    The SQLite store raises it for a file that is not a SQLite database (or
    that SQLite reports damaged), and for a row whose JSON does not decode or
    does not match its key; the message names the file, the table, the
    runtime and the key.

    Attributes:
        path: the damaged file, when a durable store names one (else `None`).
        offset: the byte offset of the damage in `path` (else `None`).
    """

    path: str | None = None
    offset: int | None = None


class UnsupportedFormat(ReadFailed):
    """Opening a durable store found files written by a newer format version
    than this build reads. Nothing was changed; open it with a newer
    meerkat_actor."""


class NotAStore(ReadFailed):
    """Internal refinement of `ReadFailed`, not exported: the path holds
    something that is not a store (a directory without a FORMAT file, a
    SQLite file without Meerkat's tables; for the command line's readers, a
    file that is not a SQLite database), or it, or the directory a new file
    would go in, does not exist, or a store directory's path names a file
    (`open_store` on a regular file: nothing is created). The command line
    maps it to its "not found" exit status."""


class StoreClosed(RuntimeStoreError):
    """The operation was called on a store whose `async with` block has
    exited, or the store closed while the operation was waiting to be sent.
    The caller's code closed it."""


class InvalidTransition(ValueError):
    """`machine_transition(from_state, to_state)` was asked for a lifecycle
    transition that is not in the transition table (SPEC §2), or
    `StoredInputState.transition(to)` for an input lifecycle move that is not
    in `INPUT_LIFECYCLE_TRANSITIONS` (or to `applied` with a run the input
    was not staged for). The message names both states. The caller's code
    asked for it; nothing was written."""
