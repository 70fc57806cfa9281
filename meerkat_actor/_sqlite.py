"""The SQLite backend: a `RuntimeStore` over Meerkat's six SQLite tables (SPEC §9).

Rule 1: this module holds no semantics. Every write builds the same command
the actor store builds (its constructor checks the arguments), loads the rows
the command needs into a partial `StoreState`, and lets `_core.plan` decide:
the effects it returns are translated into SQL, its errors are the call's
errors. The only read rule with logic in it, the order of
`load_input_states`, is `_core.load_input_states` as well.

Rule 2: one operation, one SQLite transaction. A write runs in `BEGIN
IMMEDIATE` (the file's write lock, taken before anything is read, so no other
connection, in this process or another, commits in between); a refused or
failed write rolls back and changes nothing (for a failed COMMIT see Rule
5). A read runs in one deferred (read) transaction.

Rule 3: nothing blocking runs on the trio thread. Every SQLite call, the
schema creation at open and the close run in a worker thread
(`trio.to_thread.run_sync`), and never with `abandon_on_cancel=True`: a
thread that may still commit is waited for, never abandoned.

Rule 4: the file stays Meerkat's. Tables, columns and stored shapes are
those of the seed-era Rust SQLite store (SPEC §7, §9), but for the receipt
sequence encoding below; tables this module does not know are never touched.

Rule 5: a COMMIT that fails with anything but "nothing was written" (busy,
locked, a deferred constraint) leaves the write's outcome unknown: a WAL
frame may be on disk. The caller gets `WriteFailed` saying so, and the
handle is poisoned: every later write raises `StorePoisoned` until the store
is reopened (reads keep working), as the actor store does after a failed
fsync (SPEC §6). A failure before COMMIT rolls back and poisons nothing.

Theory of operation. `open_sqlite_store(path)` creates the file (mode 0600)
if it is missing, connects one `sqlite3` connection in a worker thread
(autocommit mode: this module issues BEGIN/COMMIT itself), checks that the
file is a SQLite database, switches it to WAL, sets `synchronous` and the
busy timeout, and creates the six tables if missing. A handle, `SqliteStore`,
serializes all use of the connection with a `trio.Lock` (FIFO, so calls run
in the order they queued, and reads are linearizable: each sees every write
acknowledged before it). A call checks its arguments in the caller's task,
waits for the lock (cancellable: a call cancelled there never reached the
store), then runs its transaction in a worker thread and waits for it
uncancellably, so once started it commits or rolls back before the caller
hears of any cancellation (delivered at its next checkpoint) and before any
later call of that task. Nothing interrupts SQLite's wait for a lock another
connection holds, so a cancelled call (and a close) can take up to the busy
timeout per lock waited for; `open_sqlite_store` documents the bound.

Receipt sequences are u64; SQLite integers are i64. The `sequence` column
holds the two's-complement bit pattern of the u64 (SPEC §9), so every u64 is
a distinct key; the receipt JSON keeps the exact value. The file's schema
and row shapes are those of the seed-era Rust store (the one behind the
`RuntimeStore` interface SPEC.md restates), which clamps sequences at or
above 2**63 to 2**63-1 when it writes and when it looks up: such a Rust
reader never finds our receipts at or above 2**63. Later Rust versions use
two's complement too, but also changed row shapes this module does not
write (docs/sqlite.md, "Interop"). Rows the seed-era store clamped are found
here under their own sequence (the JSON says which sequence a row is for),
and inserting the receipt of 2**63-1 first moves such a row to its own
two's-complement slot, in the same transaction.

Text. The connection's text factory keeps TEXT values as bytes (`_Text`);
this module decodes the ones it reads itself, so a TEXT value that is not
UTF-8 is `CorruptStore` naming its row, never an error of the `sqlite3`
module's decoder.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar, final

import trio
from pyrsistent import pmap

from . import _core
from ._check import check_instance, check_u64
from ._codec import CodecError, dumps_json, loads_json
from ._core import Command, StoreState
from ._errors import (
    CorruptStore,
    NotAStore,
    ReadFailed,
    StoreClosed,
    StorePoisoned,
    WriteFailed,
)
from ._ids import InputId, LogicalRuntimeId, RunId, SessionId
from ._session_codec import SessionCodec, check_session_codec
from ._types import (
    MachineLifecycleCommit,
    PersistedOpsSnapshot,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
)
from ._util import NoPublicConstructor

__all__ = ["SCHEMA", "SqliteStore", "open_sqlite_store"]

logger = logging.getLogger("meerkat_actor")

T = TypeVar("T")

#: The six tables of Meerkat's Rust SQLite store (SPEC §9), every column
#: NOT NULL. Statements are run one by one at open.
SCHEMA: Final[tuple[str, ...]] = (
    """CREATE TABLE IF NOT EXISTS runtime_input_states (
    runtime_id TEXT NOT NULL,
    input_id TEXT NOT NULL,
    state_json BLOB NOT NULL,
    PRIMARY KEY (runtime_id, input_id)
)""",
    """CREATE TABLE IF NOT EXISTS runtime_boundary_receipts (
    runtime_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    receipt_json BLOB NOT NULL,
    PRIMARY KEY (runtime_id, run_id, sequence)
)""",
    """CREATE TABLE IF NOT EXISTS runtime_session_snapshots (
    runtime_id TEXT NOT NULL PRIMARY KEY,
    session_snapshot BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS runtime_states (
    runtime_id TEXT NOT NULL PRIMARY KEY,
    runtime_state_json BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS runtime_ops_lifecycle (
    runtime_id TEXT NOT NULL PRIMARY KEY,
    state_json BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS runtime_auth_oauth_flow_state (
    id TEXT NOT NULL PRIMARY KEY,
    state_json BLOB NOT NULL
)""",
)

#: The columns this module reads and writes, per table: a table that exists
#: without them is not a Meerkat runtime store.
_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "runtime_input_states": ("runtime_id", "input_id", "state_json"),
    "runtime_boundary_receipts": ("runtime_id", "run_id", "sequence", "receipt_json"),
    "runtime_session_snapshots": ("runtime_id", "session_snapshot"),
    "runtime_states": ("runtime_id", "runtime_state_json"),
    "runtime_ops_lifecycle": ("runtime_id", "state_json"),
    "runtime_auth_oauth_flow_state": ("id", "state_json"),
}

OAUTH_ROW_ID: Final = "auth_oauth_flow_state"
I64_MAX: Final = 2**63 - 1
SYNCHRONOUS_MODES: Final = ("OFF", "NORMAL", "FULL", "EXTRA")
DEFAULT_BUSY_TIMEOUT: Final = 5.0
FILE_MODE: Final = 0o600

# SQLite primary result codes meaning "this file is damaged or not a database".
_SQLITE_CORRUPT: Final = 11
_SQLITE_NOTADB: Final = 26
# Primary result codes with which a COMMIT fails having written nothing: the
# lock it needs was not obtained (BUSY, LOCKED), or a deferred constraint
# refused it (CONSTRAINT). Any other COMMIT failure (the IOERR family, FULL,
# ...) may have left a WAL frame on disk: the write's outcome is unknown.
_COMMIT_WROTE_NOTHING: Final = frozenset({5, 6, 19})

_UPSERT_SESSION: Final = (
    "INSERT INTO runtime_session_snapshots (runtime_id, session_snapshot) VALUES (?, ?)"
    " ON CONFLICT(runtime_id) DO UPDATE SET session_snapshot = excluded.session_snapshot"
)
_INSERT_RECEIPT: Final = (
    "INSERT INTO runtime_boundary_receipts (runtime_id, run_id, sequence, receipt_json)"
    " VALUES (?, ?, ?, ?)"
)
_UPSERT_INPUT: Final = (
    "INSERT INTO runtime_input_states (runtime_id, input_id, state_json) VALUES (?, ?, ?)"
    " ON CONFLICT(runtime_id, input_id) DO UPDATE SET state_json = excluded.state_json"
)
_UPSERT_RUNTIME_STATE: Final = (
    "INSERT INTO runtime_states (runtime_id, runtime_state_json) VALUES (?, ?)"
    " ON CONFLICT(runtime_id) DO UPDATE SET runtime_state_json = excluded.runtime_state_json"
)
_UPSERT_OPS: Final = (
    "INSERT INTO runtime_ops_lifecycle (runtime_id, state_json) VALUES (?, ?)"
    " ON CONFLICT(runtime_id) DO UPDATE SET state_json = excluded.state_json"
)
_UPSERT_OAUTH: Final = (
    "INSERT INTO runtime_auth_oauth_flow_state (id, state_json) VALUES (?, ?)"
    " ON CONFLICT(id) DO UPDATE SET state_json = excluded.state_json"
)

#: The method each command comes from, for error messages.
_OPERATIONS: Final[dict[type, str]] = {
    _core.PersistOAuthFlowSnapshot: "persist_auth_oauth_flow_snapshot",
    _core.UpdateOAuthFlowSnapshot: "update_auth_oauth_flow_snapshot",
    _core.CommitSessionSnapshot: "commit_session_snapshot",
    _core.AtomicApply: "atomic_apply",
    _core.PersistInputState: "persist_input_state",
    _core.CommitMachineLifecycle: "commit_machine_lifecycle",
    _core.PersistOpsLifecycle: "persist_ops_lifecycle",
}


def sequence_to_i64(sequence: int) -> int:
    """The `sequence` column value of a u64 receipt sequence: its two's-complement
    bit pattern as an i64 (2**63 -> -2**63, 2**64-1 -> -1)."""
    return sequence - 2**64 if sequence > I64_MAX else sequence


def _primary_code(exc: sqlite3.Error) -> int | None:
    """The SQLite primary result code of `exc` (its extended code's low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_corruption(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


class _Text(bytes):
    """A TEXT value as the connection returns it: its bytes, undecoded (the
    connection's `text_factory`), so a value that is not UTF-8 reaches this
    module, which reports it as damage, rather than the `sqlite3` decoder."""

    __slots__ = ()


def _name(value: object) -> str:
    """A schema name or PRAGMA result: undecodable bytes never match ours."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _where(operation: str, runtime_id: LogicalRuntimeId | None) -> str:
    return operation if runtime_id is None else f"{operation} for runtime {str(runtime_id)!r}"


# --- the database: blocking, used only in worker threads, under the handle's lock ---------


@final
class _Database:
    """One `sqlite3` connection and the blocking work done with it.

    Every method blocks: call it only from a worker thread, and only while
    holding the handle's lock (one thread uses the connection at a time).
    """

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self.connection = connection
        self.path = path
        self.resolved = os.path.realpath(path)
        self.closed = False
        # The error of a COMMIT whose outcome is unknown: writes are refused.
        self.poisoned: sqlite3.Error | None = None

    # --- open and close -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, synchronous: str, busy_timeout: float) -> _Database:
        """Create the file if missing (0600), connect, and prepare the schema.

        Raises:
            ReadFailed: the directory is missing, or the file cannot be opened
                or is not a Meerkat runtime store.
            CorruptStore: the file is not a SQLite database, or is damaged.
        """
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            raise ReadFailed(
                f"cannot open SQLite store {path}: its directory {directory} does not exist"
            )
        try:
            _create_private(path)
        except OSError as exc:
            raise ReadFailed(f"cannot create SQLite store {path}: {exc}") from exc
        database = cls._connect(path, path, timeout=busy_timeout)
        try:
            database._prepare(synchronous)
        except BaseException:
            database.connection.close()
            raise
        return database

    def _prepare(self, synchronous: str) -> None:
        connection, path = self.connection, self.path
        try:
            # The first statement that reads the file: refuses a non-database.
            tables = {
                _name(name)
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            mode = _name(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode != "wal":
                try:
                    switched = connection.execute("PRAGMA journal_mode=WAL").fetchone()
                except sqlite3.OperationalError as exc:
                    # Another connection holds the file: keep its current mode.
                    logger.warning("%s stays in %s journal mode: %s", path, mode, exc)
                else:
                    # SQLite answers with the mode now in force; it keeps the
                    # old one, without an error, where WAL is not possible.
                    now = _name(switched[0]).lower() if switched else mode
                    if now != "wal":
                        logger.warning(
                            "%s stays in %s journal mode: SQLite refused to switch it to WAL",
                            path,
                            now,
                        )
            connection.execute(f"PRAGMA synchronous={synchronous}")
            if not tables.issuperset(_COLUMNS):
                # A write only when a table is missing: a file whose tables
                # exist opens even while another connection holds a lock.
                connection.execute("BEGIN IMMEDIATE")
                try:
                    for statement in SCHEMA:
                        connection.execute(statement)
                    connection.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            self._check_columns()
        except sqlite3.Error as exc:
            if _is_corruption(exc):
                raise CorruptStore(
                    f"{path} is not a SQLite database, or it is damaged: {exc}"
                ) from exc
            raise ReadFailed(f"cannot open SQLite store {path}: {exc}") from exc

    @classmethod
    def _connect(cls, target: str, path: str, **options: Any) -> _Database:
        """Connect (autocommit, any thread, TEXT kept as bytes) to `target`."""
        try:
            connection = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, **options
            )
        except sqlite3.Error as exc:
            raise ReadFailed(f"cannot open SQLite store {path}: {exc}") from exc
        connection.text_factory = _Text
        return cls(connection, path)

    def _check_columns(self, error: type[ReadFailed] = ReadFailed) -> None:
        """Raise `error` unless every table has the columns this module uses."""
        for table, columns in _COLUMNS.items():
            present = {
                _name(row[1]) for row in self.connection.execute(f"PRAGMA table_info({table})")
            }
            missing = [column for column in columns if column not in present]
            if missing:
                what = f"no table {table}" if not present else f"table {table} has no column"
                detail = "" if not present else f" {', '.join(missing)}"
                raise error(f"{self.path} is not a Meerkat runtime store: {what}{detail}")

    @classmethod
    def open_read_only(cls, path: str) -> _Database:
        """Connect read-only (`mode=ro`) to an existing Meerkat SQLite store.

        Raises:
            NotAStore: the file lacks Meerkat's tables.
            CorruptStore: the file is not a SQLite database, or is damaged.
            ReadFailed: the file cannot be opened.
        """
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        database = cls._connect(uri, path, uri=True)
        try:
            database.read("open", None, database._check_columns, NotAStore)
        except BaseException:
            database.connection.close()
            raise
        return database

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL on the last close)."""
        if not self.closed:
            self.closed = True
            self.connection.close()

    def _rollback(self) -> None:
        if self.connection.in_transaction:
            try:
                self.connection.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("ROLLBACK failed on %s", self.path)

    # --- writes ---------------------------------------------------------------------------

    def execute(self, command: Command, codec: SessionCodec) -> BaseException | None:
        """Run one command as one write transaction.

        Returns:
            `None` when it committed, or the caller-code exception (the OAuth
            updater's own, or `TypeError` for a non-bytes result) to raise in
            the caller; the transaction was rolled back.

        Raises:
            RuntimeStoreError: what `_core.plan` raises (rolled back), or
                `WriteFailed` (chained to the `sqlite3` error) when SQLite
                fails (see `_commit` for a failed COMMIT), or `CorruptStore`
                when a row the command needs does not decode.
            StorePoisoned: an earlier COMMIT's outcome is unknown.
        """
        operation = _OPERATIONS[type(command)]
        where = _where(operation, getattr(command, "runtime_id", None))
        if self.poisoned is not None:
            raise StorePoisoned(
                f"{where}: the SQLite store {self.path} refuses writes: an earlier COMMIT"
                f" failed ({self.poisoned}) and its outcome is unknown; reopen the store"
            ) from self.poisoned
        connection = self.connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                effects = _core.plan(self._state_for(command), command, codec)
                for effect in effects:
                    self._write(effect)
            except _core.CallerCodeError as exc:
                self._rollback()
                return exc.error
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            raise WriteFailed(f"{where}: SQLite failed on {self.path}: {exc}") from exc
        self._commit(where)
        return None

    def _commit(self, where: str) -> None:
        """COMMIT the open write transaction; poison the handle if its outcome
        is unknown.

        Raises:
            WriteFailed: COMMIT failed. If SQLite's code says nothing was
                written (busy, locked, a deferred constraint), the transaction
                was rolled back. Otherwise (an I/O error, a full disk, ...) a
                WAL frame may be on disk: the message says the outcome is
                unknown, and `self.poisoned` makes every later write raise
                `StorePoisoned`.
        """
        try:
            self.connection.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            if _primary_code(exc) in _COMMIT_WROTE_NOTHING:
                raise WriteFailed(
                    f"{where}: SQLite failed to commit on {self.path}: {exc}"
                ) from exc
            self.poisoned = exc
            raise WriteFailed(
                f"{where}: COMMIT failed on {self.path} ({exc}): the outcome of this write"
                " is unknown until the store is reopened (it may be on disk), and this"
                " handle refuses every later write until then"
            ) from exc

    def _state_for(self, command: Command) -> StoreState:
        """The part of the store state `_core.plan` reads for `command`."""
        match command:
            case _core.AtomicApply(runtime_id=runtime_id, receipt=receipt):
                found = self.find_receipt(runtime_id, receipt.run_id, receipt.sequence)
                if found is None:
                    return _core.EMPTY
                key = (receipt.run_id, receipt.sequence)
                record = _core.RuntimeRecord(receipts=pmap({key: found}))
                return StoreState(runtimes=pmap({runtime_id: record}))
            case _core.UpdateOAuthFlowSnapshot():
                return StoreState(oauth_flow_snapshot=self.oauth_flow_snapshot())
        return _core.EMPTY

    def _write(self, effect: _core.Effect) -> None:
        """Translate one effect of `_core.plan` into SQL."""
        execute = self.connection.execute
        match effect:
            case _core.SetSessionSnapshot(runtime_id, snapshot):
                execute(_UPSERT_SESSION, (str(runtime_id), snapshot))
            case _core.InsertReceipt(runtime_id, receipt):
                slot = sequence_to_i64(receipt.sequence)
                if slot == I64_MAX:
                    self._unclamp(runtime_id, receipt.run_id)
                try:
                    execute(
                        _INSERT_RECEIPT,
                        (str(runtime_id), str(receipt.run_id), slot, dumps_json(receipt)),
                    )
                except sqlite3.IntegrityError as exc:
                    # `plan` found no receipt under the key and `_unclamp`
                    # freed the slot: another constraint (a trigger, ...).
                    raise WriteFailed(
                        f"atomic_apply for runtime {str(runtime_id)!r}: SQLite refused the"
                        f" receipt of run {receipt.run_id} sequence {receipt.sequence}"
                        f" (sequence column {slot}) in {self.path}: {exc}"
                    ) from exc
            case _core.PutInputStates(runtime_id, states):
                self.connection.executemany(
                    _UPSERT_INPUT,
                    [(str(runtime_id), str(s.state.input_id), dumps_json(s)) for s in states],
                )
            case _core.SetRuntimeState(runtime_id, runtime_state):
                execute(_UPSERT_RUNTIME_STATE, (str(runtime_id), dumps_json(runtime_state)))
            case _core.SetOpsSnapshot(runtime_id, snapshot):
                execute(_UPSERT_OPS, (str(runtime_id), dumps_json(snapshot)))
            case _core.SetOAuthFlowSnapshot(snapshot):
                execute(_UPSERT_OAUTH, (OAUTH_ROW_ID, snapshot))
            case _:  # pragma: no cover - the Effect union is closed
                raise TypeError(f"not a store effect: {effect!r}")

    def _unclamp(self, runtime_id: LogicalRuntimeId, run_id: RunId) -> None:
        """Free the slot 2**63-1 of `run_id` for the receipt of 2**63-1.

        An older Rust version stored the receipt of a sequence above 2**63-1
        in that slot (clamped). Called, inside the write transaction, only
        after `find_receipt` found no receipt of 2**63-1, so a row in the slot
        is such a clamped row: it moves to its own two's-complement slot, or
        is dropped if that slot holds the same receipt already. It is still
        found under its own sequence afterwards.

        Raises:
            CorruptStore: the clamped row's own slot holds a different
                receipt, or a row does not decode.
        """
        clamped = self._receipt_row(runtime_id, run_id, I64_MAX)
        if clamped is None or clamped.run_id != run_id or clamped.sequence <= I64_MAX:
            return  # free, or not a clamped row: the INSERT reports it
        own = sequence_to_i64(clamped.sequence)
        there = self._receipt_row(runtime_id, run_id, own)
        key = (str(runtime_id), str(run_id), I64_MAX)
        if there is None:
            self.connection.execute(
                "UPDATE runtime_boundary_receipts SET sequence = ?"
                " WHERE runtime_id = ? AND run_id = ? AND sequence = ?",
                (own, *key),
            )
        elif there == clamped:
            self.connection.execute(
                "DELETE FROM runtime_boundary_receipts"
                " WHERE runtime_id = ? AND run_id = ? AND sequence = ?",
                key,
            )
        else:
            raise CorruptStore(
                f"{self.path}: runtime_boundary_receipts, runtime {str(runtime_id)!r},"
                f" run_id {str(run_id)!r}: the row at sequence column {I64_MAX} holds the"
                f" receipt of sequence {clamped.sequence} (clamped by an older Meerkat), and"
                f" the row at its own sequence column {own} holds a different receipt (run"
                f" {there.run_id} sequence {there.sequence}); the receipt of sequence"
                f" {I64_MAX} cannot be stored"
            )

    # --- the whole store (export and import) ----------------------------------------------

    def write_state(self, state: StoreState) -> None:
        """Write every value of `state` in one write transaction.

        Meant for a new, empty store (`meerkat-actor export-sqlite`): values
        already there under the same keys are replaced, receipts conflict.

        Raises:
            WriteFailed: SQLite failed (rolled back, or outcome unknown: see
                `_commit`).
        """
        where = f"export to {self.path}"
        try:
            self.connection.execute("BEGIN IMMEDIATE")
            try:
                for effect in _core.state_effects(state):
                    self._write(effect)
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            raise WriteFailed(f"{where}: SQLite failed: {exc}") from exc
        self._commit(where)

    def read_state(self) -> StoreState:
        """The whole content, every row decoded and checked against its key,
        in one read transaction.

        Raises:
            CorruptStore: a row does not decode or does not match its key.
            ReadFailed: SQLite failed.
        """
        return self.read("read the whole store", None, self._read_state)

    def _read_state(self) -> StoreState:
        keys: set[str] = set()
        for table in _COLUMNS:
            if "runtime_id" not in _COLUMNS[table]:
                continue
            for (raw,) in self.connection.execute(f"SELECT DISTINCT runtime_id FROM {table}"):
                key = self._text(raw, table, f"runtime_id {raw!r}")
                if not isinstance(key, str) or not key:
                    raise CorruptStore(f"{self.path}: {table}: runtime_id {key!r} is not an id")
                keys.add(key)
        runtimes: dict[LogicalRuntimeId, _core.RuntimeRecord] = {}
        for key in sorted(keys):
            runtime_id = LogicalRuntimeId(key)
            states = self.input_states(runtime_id)
            runtimes[runtime_id] = _core.RuntimeRecord(
                session_snapshot=self.session_snapshot(runtime_id),
                input_states=pmap({s.state.input_id: s for s in states}),
                receipts=pmap(self._receipts(runtime_id)),
                runtime_state=self.runtime_state(runtime_id),
                ops_snapshot=self.ops_snapshot(runtime_id),
            )
        return StoreState(pmap(runtimes), self.oauth_flow_snapshot())

    def _receipts(
        self, runtime_id: LogicalRuntimeId
    ) -> dict[tuple[RunId, int], RunBoundaryReceipt]:
        """Every receipt of the runtime by key; each row checked against its key
        (a legacy row clamped to 2**63-1 counts under its receipt's sequence,
        unless the canonical row of that sequence exists too)."""
        table = "runtime_boundary_receipts"
        found: dict[tuple[RunId, int], RunBoundaryReceipt] = {}
        rows = self.connection.execute(
            f"SELECT run_id, sequence, receipt_json FROM {table} WHERE runtime_id = ?",
            (str(runtime_id),),
        ).fetchall()
        for raw_run, slot, value in rows:
            run_text = self._text(raw_run, table, f"runtime {str(runtime_id)!r}")
            where = f"runtime {str(runtime_id)!r}, run_id {run_text!r}, sequence column {slot!r}"
            receipt = self._decode(RunBoundaryReceipt, value, table, where)
            try:
                run_matches = isinstance(run_text, str) and uuid.UUID(run_text) == (
                    receipt.run_id.value
                )
            except ValueError:
                run_matches = False
            canonical = slot == sequence_to_i64(receipt.sequence)
            clamped = slot == I64_MAX and receipt.sequence > I64_MAX
            if not (run_matches and isinstance(slot, int) and (canonical or clamped)):
                raise CorruptStore(
                    f"{self.path}: {table}, {where}: the row holds the receipt of run"
                    f" {receipt.run_id} sequence {receipt.sequence}"
                )
            key = (receipt.run_id, receipt.sequence)
            if canonical or key not in found:
                found[key] = receipt
        return found

    # --- reads ----------------------------------------------------------------------------

    def read(
        self,
        operation: str,
        runtime_id: LogicalRuntimeId | None,
        query: Callable[..., T],
        *args: Any,
    ) -> T:
        """Run `query(*args)` in one read transaction.

        Raises:
            ReadFailed: SQLite failed (chained to the `sqlite3` error).
            CorruptStore: a row does not decode, or SQLite reports damage.
        """
        connection = self.connection
        try:
            connection.execute("BEGIN")
            try:
                result = query(*args)
                connection.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            where = _where(operation, runtime_id)
            if _is_corruption(exc):
                raise CorruptStore(f"{where}: {self.path} is damaged: {exc}") from exc
            raise ReadFailed(f"{where}: SQLite failed on {self.path}: {exc}") from exc
        return result

    def _blob(self, value: object, table: str, where: str) -> bytes:
        """A blob column's value; a TEXT value (another writer's) as its UTF-8.

        Raises:
            CorruptStore: the value is neither a BLOB nor UTF-8 TEXT.
        """
        if isinstance(value, _Text):
            self._text(value, table, where)
            return bytes(value)
        if isinstance(value, bytes):
            return value
        raise CorruptStore(
            f"{self.path}: {table}, {where}: expected a BLOB, got {type(value).__name__}"
        )

    def _text(self, value: object, table: str, where: str) -> object:
        """A TEXT value decoded (`str`); any other value unchanged.

        Raises:
            CorruptStore: the TEXT value is not UTF-8.
        """
        if not isinstance(value, _Text):
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptStore(
                f"{self.path}: {table}, {where}: a TEXT value that is not UTF-8: {exc}"
            ) from exc

    def _decode(self, cls: type[T], value: object, table: str, where: str) -> T:
        try:
            return loads_json(cls, self._blob(value, table, where))
        except CodecError as exc:
            raise CorruptStore(f"{self.path}: {table}, {where}: {exc}") from exc

    def _per_runtime(self, table: str, column: str, runtime_id: LogicalRuntimeId) -> object:
        """`column` of the runtime's row in a one-row-per-runtime table, or `None`."""
        row = self.connection.execute(
            f"SELECT {column} FROM {table} WHERE runtime_id = ?", (str(runtime_id),)
        ).fetchone()
        return None if row is None else row[0]

    def oauth_flow_snapshot(self) -> bytes | None:
        row = self.connection.execute(
            "SELECT state_json FROM runtime_auth_oauth_flow_state WHERE id = ?", (OAUTH_ROW_ID,)
        ).fetchone()
        if row is None:
            return None
        return self._blob(row[0], "runtime_auth_oauth_flow_state", f"id {OAUTH_ROW_ID!r}")

    def session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        table = "runtime_session_snapshots"
        value = self._per_runtime(table, "session_snapshot", runtime_id)
        return None if value is None else self._blob(value, table, f"runtime {str(runtime_id)!r}")

    def runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        table = "runtime_states"
        value = self._per_runtime(table, "runtime_state_json", runtime_id)
        where = f"runtime {str(runtime_id)!r}"
        return None if value is None else self._decode(RuntimeState, value, table, where)

    def ops_snapshot(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        table = "runtime_ops_lifecycle"
        value = self._per_runtime(table, "state_json", runtime_id)
        where = f"runtime {str(runtime_id)!r}"
        return None if value is None else self._decode(PersistedOpsSnapshot, value, table, where)

    def _input_row(
        self, runtime_id: LogicalRuntimeId, raw_key: object, value: object
    ) -> tuple[object, StoredInputState]:
        """An input-state row's decoded key and value, checked to agree."""
        table = "runtime_input_states"
        shown = bytes(raw_key) if isinstance(raw_key, _Text) else raw_key
        key = self._text(raw_key, table, f"runtime {str(runtime_id)!r}, input_id {shown!r}")
        where = f"runtime {str(runtime_id)!r}, input_id {key!r}"
        stored = self._decode(StoredInputState, value, table, where)
        try:
            matches = isinstance(key, str) and uuid.UUID(key) == stored.state.input_id.value
        except ValueError:
            matches = False
        if not matches:
            raise CorruptStore(
                f"{self.path}: {table}, {where}: the row holds input {stored.state.input_id}"
            )
        return key, stored

    def input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        row = self.connection.execute(
            "SELECT input_id, state_json FROM runtime_input_states"
            " WHERE runtime_id = ? AND input_id = ?",
            (str(runtime_id), str(input_id)),
        ).fetchone()
        return None if row is None else self._input_row(runtime_id, row[0], row[1])[1]

    def input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        rows = self.connection.execute(
            "SELECT input_id, state_json FROM runtime_input_states WHERE runtime_id = ?",
            (str(runtime_id),),
        ).fetchall()
        states: dict[InputId, StoredInputState] = {}
        for raw_key, value in rows:
            key, stored = self._input_row(runtime_id, raw_key, value)
            if key == str(stored.state.input_id):
                states[stored.state.input_id] = stored
            else:  # another spelling of the id: the canonical row wins
                states.setdefault(stored.state.input_id, stored)
        # The order (UUID order) is the core's rule; the ids' text case is irrelevant.
        record = _core.RuntimeRecord(input_states=pmap(states))
        return _core.load_input_states(StoreState(runtimes=pmap({runtime_id: record})), runtime_id)

    def find_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        """The receipt under `(runtime_id, run_id, sequence)`, or `None`.

        Looks in the row keyed by the sequence's two's-complement i64, then,
        for a sequence above 2**63-1, in the row an older Rust version would
        have clamped it to (2**63-1), which is this key's only if its JSON
        says so.

        Raises:
            CorruptStore: the row does not decode, or holds another receipt
                (other than a clamped one).
        """
        slot = sequence_to_i64(sequence)
        receipt = self._receipt_row(runtime_id, run_id, slot)
        if receipt is not None:
            if receipt.run_id == run_id and receipt.sequence == sequence:
                return receipt
            clamped = slot == I64_MAX and receipt.run_id == run_id and receipt.sequence > I64_MAX
            if not clamped:
                raise CorruptStore(
                    f"{self.path}: runtime_boundary_receipts, runtime {str(runtime_id)!r},"
                    f" run_id {str(run_id)!r}, sequence column {slot}: the row holds the"
                    f" receipt of run {receipt.run_id} sequence {receipt.sequence}"
                )
        if sequence > I64_MAX:
            legacy = self._receipt_row(runtime_id, run_id, I64_MAX)
            if legacy is not None and legacy.run_id == run_id and legacy.sequence == sequence:
                return legacy
        return None

    def _receipt_row(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, slot: int
    ) -> RunBoundaryReceipt | None:
        row = self.connection.execute(
            "SELECT receipt_json FROM runtime_boundary_receipts"
            " WHERE runtime_id = ? AND run_id = ? AND sequence = ?",
            (str(runtime_id), str(run_id), slot),
        ).fetchone()
        if row is None:
            return None
        where = f"runtime {str(runtime_id)!r}, run_id {str(run_id)!r}, sequence column {slot}"
        return self._decode(RunBoundaryReceipt, row[0], "runtime_boundary_receipts", where)


def _create_private(path: str) -> None:
    """Create the file `path` names, empty, with mode 0600 unless something is
    there, and make its directory entry durable.

    The path is resolved first: a dangling symlink gets its target created
    here, 0600, not by SQLite with its default (0644 under the usual umask).
    """
    target = os.path.realpath(path)
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)
    directory = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- the handle ------------------------------------------------------------------------------


@final
class SqliteStore(metaclass=NoPublicConstructor):
    """A handle on a SQLite store; made only by `open_sqlite_store()`.

    Implements `RuntimeStore`. Safe to share between any number of trio tasks
    of the run that opened it; their calls run one at a time, in the order
    they reached the store. Another handle, or Meerkat's Rust runtime, may use
    the same file at the same time: SQLite's locking keeps every operation
    atomic and isolated.
    """

    __construct_hint__ = "use meerkat_actor.open_sqlite_store()"

    def __init__(self, database: _Database, codec: SessionCodec, authority: str) -> None:
        self._database = database
        self._codec = codec
        self._authority = authority
        self._lock = trio.Lock()
        self._closed = False

    # --- plumbing -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker thread, holding the connection's lock.

        Waiting for the lock is cancellable (nothing happened yet); the
        thread, once started, is waited for even if the caller is cancelled.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise StoreClosed("the store is closed (its `async with` block has exited)")
        async with self._lock:
            if self._database.closed:
                raise StoreClosed("the store closed before this call reached it")
            return await trio.to_thread.run_sync(fn, *args)

    async def _write(self, command: Command) -> None:
        error = await self._call(self._database.execute, command, self._codec)
        if error is not None:
            raise error

    async def _read(
        self,
        operation: str,
        runtime_id: LogicalRuntimeId | None,
        query: Callable[..., T],
        *args: Any,
    ) -> T:
        return await self._call(self._database.read, operation, runtime_id, query, *args)

    async def _close(self) -> None:
        """Refuse new calls, let the ones already waiting finish, close the file."""
        self._closed = True
        with trio.CancelScope(shield=True):
            async with self._lock:
                await trio.to_thread.run_sync(self._database.close)

    # --- RuntimeStore ---------------------------------------------------------------------

    def auth_authority_key(self) -> str | None:
        """`"sqlite:"` + the resolved path of the database file.

        Returns:
            The same string for every open of the same file (symlinks
            resolved), so a host can key process-local auth state by it.
        """
        return self._authority

    async def persist_auth_oauth_flow_snapshot(self, snapshot: bytes) -> None:
        """Replace the store-wide OAuth flow snapshot (stored as raw bytes).

        Args:
            snapshot: the serialized OAuth flow state.

        Raises:
            TypeError: `snapshot` is not `bytes`.
            WriteFailed: SQLite failed; nothing changed, unless the message
                says the COMMIT's outcome is unknown (the handle is then
                poisoned).
            StorePoisoned: an earlier COMMIT's outcome is unknown; reopen.
            StoreClosed: the store is closed.
        """
        await self._write(_core.PersistOAuthFlowSnapshot(snapshot))

    async def load_auth_oauth_flow_snapshot(self) -> bytes | None:
        """The store-wide OAuth flow snapshot.

        Returns:
            The snapshot's bytes, or `None` if never written.

        Raises:
            ReadFailed: SQLite failed.
            StoreClosed: the store is closed.
        """
        database = self._database
        return await self._read("load_auth_oauth_flow_snapshot", None, database.oauth_flow_snapshot)

    async def update_auth_oauth_flow_snapshot(
        self, update: Callable[[bytes | None], bytes]
    ) -> None:
        """Atomically replace the OAuth flow snapshot with `update(current)`.

        `update` runs in a worker thread inside the write transaction
        (`BEGIN IMMEDIATE`), with the current value (`None` if there is
        none): no other call of any handle or process on the file commits in
        between, so it is safe as a counter under any concurrency. Keep it
        quick: the file's write lock is held while it runs.

        Args:
            update: maps the current snapshot to the new one.

        Raises:
            TypeError: `update` is not callable, or it returned something
                other than `bytes` (nothing changed).
            Exception: whatever `update` raised, unchanged (nothing changed).
            CorruptStore: the current snapshot is a TEXT value that is not
                UTF-8, or neither BLOB nor TEXT (nothing changed).
            WriteFailed: SQLite failed; nothing changed, unless the message
                says the COMMIT's outcome is unknown (the handle is then
                poisoned).
            StorePoisoned: an earlier COMMIT's outcome is unknown; reopen.
            StoreClosed: the store is closed.
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
            WriteFailed: the session codec cannot read the snapshot, or SQLite
                failed; nothing changed, unless the message says the COMMIT's
                outcome is unknown (the handle is then poisoned).
            StorePoisoned: an earlier COMMIT's outcome is unknown; reopen.
            StoreClosed: the store is closed.
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
        """Commit a session snapshot (optional), a receipt and input states in
        one transaction.

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
            WriteFailed: the session codec cannot read the snapshot, or SQLite
                failed.
            SessionKeyMismatch: `session_store_key` differs from the
                snapshot's session id.
            ReceiptConflict: a receipt with the same `(run_id, sequence)`
                exists for the runtime.
            CorruptStore: the row under the receipt's key does not decode,
                or holds another receipt.
            StorePoisoned: an earlier COMMIT's outcome is unknown; reopen.
            StoreClosed: the store is closed.
            In every error case nothing of the call was applied, except a
            `WriteFailed` whose message says the COMMIT's outcome is unknown:
            reopen the store and look the receipt up to know.
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
            ReadFailed: SQLite failed, or (`CorruptStore`) a row does not decode.
            StoreClosed: the store is closed.
        """
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return await self._read(
            "load_input_states", runtime_id, self._database.input_states, runtime_id
        )

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
            ReadFailed: SQLite failed, or (`CorruptStore`) the row does not decode.
            StoreClosed: the store is closed.
        """
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(input_id, InputId, "input_id")
        return await self._read(
            "load_input_state", runtime_id, self._database.input_state, runtime_id, input_id
        )

    async def persist_input_state(
        self, runtime_id: LogicalRuntimeId, state: StoredInputState
    ) -> None:
        """Upsert one input state by its input id.

        Args:
            runtime_id: the runtime.
            state: the input state.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: SQLite failed; nothing changed, unless the message
                says the COMMIT's outcome is unknown (the handle is then
                poisoned).
            StorePoisoned: an earlier COMMIT's outcome is unknown; reopen.
            StoreClosed: the store is closed.
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
            ReadFailed: SQLite failed, or (`CorruptStore`) the row does not
                decode or holds another receipt.
            StoreClosed: the store is closed.
        """
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(run_id, RunId, "run_id")
        sequence = check_u64(sequence, "sequence")
        return await self._read(
            "load_boundary_receipt",
            runtime_id,
            self._database.find_receipt,
            runtime_id,
            run_id,
            sequence,
        )

    async def load_session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        """The runtime's session snapshot.

        Args:
            runtime_id: the runtime.

        Returns:
            The snapshot's bytes, or `None`.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            ReadFailed: SQLite failed.
            StoreClosed: the store is closed.
        """
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return await self._read(
            "load_session_snapshot", runtime_id, self._database.session_snapshot, runtime_id
        )

    async def load_runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        """The runtime's lifecycle state.

        Args:
            runtime_id: the runtime.

        Returns:
            The state last committed by `commit_machine_lifecycle`, or `None`.

        Raises:
            TypeError: `runtime_id` is not a `LogicalRuntimeId`.
            ReadFailed: SQLite failed, or (`CorruptStore`) the row does not decode.
            StoreClosed: the store is closed.
        """
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return await self._read(
            "load_runtime_state", runtime_id, self._database.runtime_state, runtime_id
        )

    async def commit_machine_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        commit: MachineLifecycleCommit,
        input_states: Sequence[StoredInputState],
    ) -> None:
        """Write the runtime state chosen by `commit` and upsert `input_states`,
        in one transaction.

        Args:
            runtime_id: the runtime.
            commit: from `machine_transition(from_state, to_state)`.
            input_states: upserted by input id; a later entry wins.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: SQLite failed; nothing changed, unless the message
                says the COMMIT's outcome is unknown (the handle is then
                poisoned).
            StorePoisoned: an earlier COMMIT's outcome is unknown; reopen.
            StoreClosed: the store is closed.
        """
        await self._write(_core.CommitMachineLifecycle(runtime_id, commit, input_states))

    async def persist_ops_lifecycle(
        self, runtime_id: LogicalRuntimeId, snapshot: PersistedOpsSnapshot
    ) -> None:
        """Replace the runtime's ops lifecycle snapshot.

        Args:
            runtime_id: the runtime.
            snapshot: the new snapshot.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: SQLite failed; nothing changed, unless the message
                says the COMMIT's outcome is unknown (the handle is then
                poisoned).
            StorePoisoned: an earlier COMMIT's outcome is unknown; reopen.
            StoreClosed: the store is closed.
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
            ReadFailed: SQLite failed, or (`CorruptStore`) the row does not decode.
            StoreClosed: the store is closed.
        """
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return await self._read(
            "load_ops_lifecycle", runtime_id, self._database.ops_snapshot, runtime_id
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<meerkat_actor SQLite store at {self._database.path} ({state})>"


# --- opening -------------------------------------------------------------------------------


def _check_path(path: object) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a text path, got {type(text).__name__}")
    if not text:
        raise ValueError("path must not be empty")
    if "\0" in text:
        raise ValueError("path must not contain NUL characters")
    # Absolute: SQLite never reads it as ":memory:" or a URI.
    return os.path.abspath(text)


def _check_synchronous(synchronous: object) -> str:
    if not isinstance(synchronous, str):
        raise TypeError(f"synchronous must be str, got {type(synchronous).__name__}")
    mode = synchronous.upper()
    if mode not in SYNCHRONOUS_MODES:
        raise ValueError(
            f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, got {synchronous!r}"
        )
    return mode


def _check_busy_timeout(busy_timeout: object) -> float:
    if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)):
        raise TypeError(f"busy_timeout must be int or float, got {type(busy_timeout).__name__}")
    seconds = float(busy_timeout)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"busy_timeout must be a finite number of seconds >= 0, got {seconds}")
    return seconds


@asynccontextmanager
async def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    session_codec: SessionCodec | None = None,
    synchronous: str = "FULL",
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
) -> AsyncIterator[SqliteStore]:
    """Open the SQLite store in the file `path` for an `async with` block.

    The file holds Meerkat's six runtime tables (created if missing; other
    tables are left alone), so a file Meerkat's Rust runtime wrote opens
    here and one written here opens there. See docs/sqlite.md.

    Args:
        path: the database file; created with mode 0600 if missing (its
            directory must exist).
        session_codec: reads the session id out of session snapshots;
            default `MeerkatSessionCodec` (Meerkat session JSON).
        synchronous: SQLite's `PRAGMA synchronous` for this connection:
            `"FULL"` (default: an acknowledged write survives a power loss),
            `"NORMAL"` (in WAL mode, survives a crash of the process but
            maybe not a power loss), `"EXTRA"` or `"OFF"` (not durable).
            Any case.
        busy_timeout: seconds to wait for another connection (another
            handle, another process) holding the file's lock before a call
            fails with `WriteFailed`/`ReadFailed`. It also bounds
            cancellation, which SQLite's wait does not see: a call cancelled
            once its transaction started in the worker thread returns (and
            the cancellation is delivered) only when that transaction
            committed or failed, so after up to `busy_timeout` per lock it
            waits for (one for a write in WAL mode; in rollback-journal mode
            its COMMIT may wait once more) plus its own work. A call
            cancelled while waiting for its turn on the handle returns at
            once. Closing waits for the running call and for every call
            queued before the close, each bounded the same way.

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
        ReadFailed: the directory does not exist, the file cannot be opened,
            or it is a SQLite database with a table of the same name but
            without the columns Meerkat's store has.
        CorruptStore: the file is not a SQLite database, or is damaged.

    Opening (and closing) runs in a worker thread. The store closes when the
    block exits: calls already waiting for the connection finish first
    (see `busy_timeout` for how long that can take); later calls raise
    `StoreClosed`.
    """
    codec = check_session_codec(session_codec)
    location = _check_path(path)
    mode = _check_synchronous(synchronous)
    timeout = _check_busy_timeout(busy_timeout)
    database = await trio.to_thread.run_sync(_Database.open, location, mode, timeout)
    store: SqliteStore = SqliteStore._create(database, codec, "sqlite:" + database.resolved)
    try:
        yield store
    finally:
        await store._close()
