"""The SQLite backend's database: one connection, its transactions, and the SQL.

Rule 1: this module holds no semantics. A write runs `_core.plan` against
this database as a `_core.ReadView` (a few lookups by key, answered with
SQL inside the write transaction) and translates the effects it returns into
SQL; a read runs `query.answer(self)` inside a read transaction. Which rows
`plan` reads is `plan`'s business: it asks through the view, so it can never
see a partial state assembled by hand.

Rule 2: one operation, one SQLite transaction. A write runs in `BEGIN
IMMEDIATE` (the file's write lock, taken before anything is read, so no other
connection, in this process or another, commits in between); a refused or
failed write rolls back and changes nothing (for a failed COMMIT see Rule
4). A read runs in one deferred (read) transaction.

Rule 3: every method blocks. Call it only from a worker thread, and only
while holding the handle's lock (`_sqlite.SqliteStore`): one thread uses the
connection at a time.

Rule 4: a COMMIT that fails with anything but "nothing was written" (busy,
locked, a deferred constraint) leaves the write's outcome unknown: a WAL
frame may be on disk. The caller gets `WriteFailed` saying so, and the
database's `Poison` makes every later write raise `StorePoisoned` until the
store is reopened (reads keep working), as the actor store does after a
failed fsync (SPEC §6). A failure before COMMIT rolls back and poisons
nothing.

Theory of operation. `Database.open` creates the file (mode 0600, through
`_fs.FileIO`) if it is missing, connects one `sqlite3` connection
(autocommit mode: this module issues BEGIN/COMMIT itself), checks that the
file is a SQLite database, switches it to WAL, sets `synchronous` and the
busy timeout, and creates the six tables if missing (`_sqlite_rows.SCHEMA`).
Rows become values through `_sqlite_rows.RowCodec`, which owns the rule for
a row's key.

Receipt sequences: rows the seed-era Rust store clamped to 2**63-1 are found
here under their own sequence (the JSON says which sequence a row is for),
and inserting the receipt of 2**63-1 first moves such a row to its own
two's-complement slot, in the same transaction (`_unclamp`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, Final, TypeVar, final

from pyrsistent import pmap

from . import _core
from ._codec import dumps_json
from ._core import Command, Query, StoreState
from ._errors import CorruptStore, NotAStore, Poison, ReadFailed, WriteFailed
from ._fs import FileIO
from ._ids import InputId, LogicalRuntimeId, RunId
from ._packed import PackedMap, input_key, pack_input, pack_receipt, receipt_key
from ._session_codec import SessionCodec
from ._sqlite_rows import (
    COLUMNS,
    I64_MAX,
    OAUTH_ROW_ID,
    SCHEMA,
    ReceiptSlot,
    RowCodec,
    Text,
    name_of,
    sequence_to_i64,
    where_runtime,
)
from ._types import PersistedOpsSnapshot, RunBoundaryReceipt, RuntimeState, StoredInputState

__all__ = ["DEFAULT_BUSY_TIMEOUT", "SYNCHRONOUS_MODES", "Database"]

logger = logging.getLogger("meerkat_actor")

T = TypeVar("T")

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
_DELETE_RUNTIME_ROWS: Final = {
    table: f"DELETE FROM {table} WHERE runtime_id = ?"
    for table, columns in COLUMNS.items()
    if "runtime_id" in columns
}
"""The per-runtime tables (all but the OAuth one), each with its DELETE of a
runtime's rows."""

_UPSERT_OAUTH: Final = (
    "INSERT INTO runtime_auth_oauth_flow_state (id, state_json) VALUES (?, ?)"
    " ON CONFLICT(id) DO UPDATE SET state_json = excluded.state_json"
)


def _primary_code(exc: sqlite3.Error) -> int | None:
    """The SQLite primary result code of `exc` (its extended code's low byte)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def _is_corruption(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _where(operation: str, runtime_id: LogicalRuntimeId | None) -> str:
    return operation if runtime_id is None else f"{operation} for runtime {str(runtime_id)!r}"


@final
class Database:
    """One `sqlite3` connection and the blocking work done with it.

    Every method blocks: call it only from a worker thread, and only while
    holding the handle's lock (one thread uses the connection at a time).
    """

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self.connection = connection
        self.path = path
        self.resolved = os.path.realpath(path)
        self.closed = False
        self.rows = RowCodec(path)
        # A COMMIT whose outcome is unknown refuses every later write.
        self.poison = Poison(f"the SQLite store {path}", "COMMIT")
        # Counters for `statistics()`.
        self.commands = 0
        self.refused = 0
        self.effects = 0
        self.transactions = 0
        self.write_transactions = 0

    # --- open and close -------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, synchronous: str, busy_timeout: float) -> Database:
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
            FileIO().create_private(path)
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
                name_of(name)
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            mode = name_of(connection.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode != "wal":
                try:
                    switched = connection.execute("PRAGMA journal_mode=WAL").fetchone()
                except sqlite3.OperationalError as exc:
                    # Another connection holds the file: keep its current mode.
                    logger.warning("%s stays in %s journal mode: %s", path, mode, exc)
                else:
                    # SQLite answers with the mode now in force; it keeps the
                    # old one, without an error, where WAL is not possible.
                    now = name_of(switched[0]).lower() if switched else mode
                    if now != "wal":
                        logger.warning(
                            "%s stays in %s journal mode: SQLite refused to switch it to WAL",
                            path,
                            now,
                        )
            connection.execute(f"PRAGMA synchronous={synchronous}")
            if not tables.issuperset(COLUMNS):
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
    def _connect(cls, target: str, path: str, **options: Any) -> Database:
        """Connect (autocommit, any thread, TEXT kept as bytes) to `target`."""
        try:
            connection = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, **options
            )
        except sqlite3.Error as exc:
            raise ReadFailed(f"cannot open SQLite store {path}: {exc}") from exc
        connection.text_factory = Text
        return cls(connection, path)

    def _check_columns(self, error: type[ReadFailed] = ReadFailed) -> None:
        """Raise `error` unless every table has the columns this module uses."""
        for table, columns in COLUMNS.items():
            present = {
                name_of(row[1]) for row in self.connection.execute(f"PRAGMA table_info({table})")
            }
            missing = [column for column in columns if column not in present]
            if missing:
                what = f"no table {table}" if not present else f"table {table} has no column"
                detail = "" if not present else f" {', '.join(missing)}"
                raise error(f"{self.path} is not a Meerkat runtime store: {what}{detail}")

    @classmethod
    def open_read_only(cls, path: str) -> Database:
        """Connect read-only (`mode=ro`) to an existing Meerkat SQLite store.

        Raises:
            NotAStore: the file lacks Meerkat's tables.
            CorruptStore: the file is not a SQLite database, or is damaged.
            ReadFailed: the file cannot be opened.
        """
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        database = cls._connect(uri, path, uri=True)
        try:
            database.run_read("open", None, database._check_columns, NotAStore)
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
        """Run one command as one write transaction, `_core.plan` deciding.

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
        where = _where(command.operation, getattr(command, "runtime_id", None))
        self.commands += 1
        try:
            self.poison.check(where)
            effects = self._transaction(where, self._apply, command, codec)
        except _core.CallerCodeError as exc:
            self.refused += 1
            return exc.error
        except BaseException:
            self.refused += 1
            raise
        self.effects += len(effects)
        return None

    def _apply(self, command: Command, codec: SessionCodec) -> tuple[_core.Effect, ...]:
        effects = _core.plan(self, command, codec)
        for effect in effects:
            self._write(effect)
        return effects

    def _transaction(self, where: str, work: Callable[..., T], *args: Any) -> T:
        """Run `work(*args)` in one write transaction and commit it.

        Raises:
            WriteFailed: SQLite failed (chained), rolled back; or COMMIT
                failed (see `_commit`).
            BaseException: whatever `work` raised, rolled back.
        """
        connection = self.connection
        self.transactions += 1
        self.write_transactions += 1
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = work(*args)
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            raise WriteFailed(f"{where}: SQLite failed on {self.path}: {exc}") from exc
        self._commit(where)
        return result

    def _commit(self, where: str) -> None:
        """COMMIT the open write transaction; poison the handle if its outcome
        is unknown.

        Raises:
            WriteFailed: COMMIT failed. If SQLite's code says nothing was
                written (busy, locked, a deferred constraint), the transaction
                was rolled back. Otherwise (an I/O error, a full disk, ...) a
                WAL frame may be on disk: the message says the outcome is
                unknown, and `self.poison` makes every later write raise
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
            self.poison.set(exc)
            raise WriteFailed(
                f"{where}: COMMIT failed on {self.path} ({exc}): the outcome of this write"
                " is unknown until the store is reopened (it may be on disk), and this"
                " handle refuses every later write until then"
            ) from exc

    def _write(self, effect: _core.Effect) -> None:
        """Translate one effect of `_core.plan` into SQL."""
        execute = self.connection.execute
        match effect:
            case _core.SetSessionSnapshot(runtime_id, snapshot):
                execute(_UPSERT_SESSION, (str(runtime_id), snapshot))
            case _core.InsertReceipt(runtime_id, packed):
                receipt = _core.decode_receipt(runtime_id, packed.key, packed.blob)
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
                    [
                        (str(runtime_id), str(s.state.input_id), dumps_json(s))
                        for s in (
                            _core.decode_input(runtime_id, packed.key, packed.blob)
                            for packed in states
                        )
                    ],
                )
            case _core.SetRuntimeState(runtime_id, runtime_state):
                execute(_UPSERT_RUNTIME_STATE, (str(runtime_id), dumps_json(runtime_state)))
            case _core.SetOpsSnapshot(runtime_id, snapshot):
                execute(_UPSERT_OPS, (str(runtime_id), dumps_json(snapshot)))
            case _core.SetOAuthFlowSnapshot(snapshot):
                execute(_UPSERT_OAUTH, (OAUTH_ROW_ID, snapshot))
            case _core.RemoveSessionSnapshot(runtime_id):
                execute(_DELETE_RUNTIME_ROWS["runtime_session_snapshots"], (str(runtime_id),))
            case _core.RemoveOpsSnapshot(runtime_id):
                execute(_DELETE_RUNTIME_ROWS["runtime_ops_lifecycle"], (str(runtime_id),))
            case _core.RemoveRuntime(runtime_id):
                for delete in _DELETE_RUNTIME_ROWS.values():
                    execute(delete, (str(runtime_id),))
            case _:  # pragma: no cover - the Effect union is closed
                raise TypeError(f"not a store effect: {effect!r}")

    def _unclamp(self, runtime_id: LogicalRuntimeId, run_id: RunId) -> None:
        """Free the slot 2**63-1 of `run_id` for the receipt of 2**63-1.

        An older Rust version stored the receipt of a sequence above 2**63-1
        in that slot (clamped). Called, inside the write transaction, only
        after `boundary_receipt` found no receipt of 2**63-1, so a row in the slot
        is such a clamped row: it moves to its own two's-complement slot, or
        is dropped if that slot holds the same receipt already. It is still
        found under its own sequence afterwards.

        Raises:
            CorruptStore: the clamped row's own slot holds a different
                receipt, or a row does not decode.
        """
        found = self._receipt_row(runtime_id, run_id, I64_MAX)
        if found is None or found[1] is not ReceiptSlot.CLAMPED:
            return  # free, or not a clamped row: the INSERT reports it
        clamped = found[0]
        own = sequence_to_i64(clamped.sequence)
        there_row = self._receipt_row(runtime_id, run_id, own)
        there = None if there_row is None else there_row[0]
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
        self._transaction(f"export to {self.path}", self._write_all, _core.state_effects(state))

    def _write_all(self, effects: Iterable[_core.Effect]) -> None:
        for effect in effects:
            self._write(effect)

    def read_state(self) -> StoreState:
        """The whole content, every row decoded and checked against its key
        (the one rule of `_sqlite_rows`), in one read transaction.

        Raises:
            CorruptStore: a row does not decode or does not match its key.
            ReadFailed: SQLite failed.
        """
        return self.run_read("read the whole store", None, self._read_state)

    def _read_state(self) -> StoreState:
        runtimes: dict[LogicalRuntimeId, _core.RuntimeRecord] = {}
        for runtime_id in sorted(self.runtime_ids(), key=str):
            states = self.input_states(runtime_id)
            runtimes[runtime_id] = _core.RuntimeRecord(
                session_snapshot=self.session_snapshot(runtime_id),
                input_states=PackedMap.adopt(
                    {input_key(s.state.input_id): pack_input(s) for s in states}
                ),
                receipts=PackedMap.adopt(
                    {
                        receipt_key(*key): pack_receipt(receipt)
                        for key, receipt in self._receipts(runtime_id).items()
                    }
                ),
                runtime_state=self.runtime_state(runtime_id),
                ops_snapshot=self.ops_lifecycle(runtime_id),
            )
        return StoreState(pmap(runtimes), self.auth_oauth_flow_snapshot())

    def _receipts(
        self, runtime_id: LogicalRuntimeId
    ) -> dict[tuple[RunId, int], RunBoundaryReceipt]:
        """Every receipt of the runtime by key (a legacy row clamped to
        2**63-1 counts under its receipt's sequence, unless the canonical row
        of that sequence exists too)."""
        found: dict[tuple[RunId, int], RunBoundaryReceipt] = {}
        rows = self.connection.execute(
            "SELECT run_id, sequence, receipt_json FROM runtime_boundary_receipts"
            " WHERE runtime_id = ?",
            (str(runtime_id),),
        ).fetchall()
        for raw_run, slot, value in rows:
            receipt, kind = self.rows.receipt_row(runtime_id, raw_run, slot, value)
            key = (receipt.run_id, receipt.sequence)
            if kind is ReceiptSlot.CANONICAL or key not in found:
                found[key] = receipt
        return found

    # --- reads ----------------------------------------------------------------------------

    def read(self, query: Query[T]) -> T:
        """Answer `query` from the tables in one read transaction.

        Raises:
            ReadFailed: SQLite failed (chained to the `sqlite3` error).
            CorruptStore: a row does not decode, or SQLite reports damage.
        """
        return self.run_read(
            query.operation, getattr(query, "runtime_id", None), query.answer, self
        )

    def run_read(
        self,
        operation: str,
        runtime_id: LogicalRuntimeId | None,
        work: Callable[..., T],
        *args: Any,
    ) -> T:
        """Run `work(*args)` in one read transaction.

        Raises:
            ReadFailed: SQLite failed (chained to the `sqlite3` error).
            CorruptStore: a row does not decode, or SQLite reports damage.
        """
        connection = self.connection
        self.transactions += 1
        try:
            connection.execute("BEGIN")
            try:
                result = work(*args)
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

    # --- the ReadView: lookups by key, inside a transaction ---------------------------------

    def runtime_ids(self) -> list[LogicalRuntimeId]:
        """Every runtime with a row in any of the five per-runtime tables.

        Raises:
            CorruptStore: a row's runtime_id is not text.
        """
        keys: set[str] = set()
        for table in _DELETE_RUNTIME_ROWS:
            for (raw,) in self.connection.execute(f"SELECT DISTINCT runtime_id FROM {table}"):
                keys.add(self.rows.runtime_key(raw, table))
        return [LogicalRuntimeId(key) for key in keys]

    def boundary_receipts(self, runtime_id: LogicalRuntimeId) -> list[RunBoundaryReceipt]:
        return list(self._receipts(runtime_id).values())

    def _per_runtime(self, table: str, column: str, runtime_id: LogicalRuntimeId) -> object:
        """`column` of the runtime's row in a one-row-per-runtime table, or `None`."""
        row = self.connection.execute(
            f"SELECT {column} FROM {table} WHERE runtime_id = ?", (str(runtime_id),)
        ).fetchone()
        return None if row is None else row[0]

    def auth_oauth_flow_snapshot(self) -> bytes | None:
        table = "runtime_auth_oauth_flow_state"
        row = self.connection.execute(
            f"SELECT state_json FROM {table} WHERE id = ?", (OAUTH_ROW_ID,)
        ).fetchone()
        return None if row is None else self.rows.blob(row[0], table, f"id {OAUTH_ROW_ID!r}")

    def session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        table = "runtime_session_snapshots"
        value = self._per_runtime(table, "session_snapshot", runtime_id)
        return None if value is None else self.rows.blob(value, table, where_runtime(runtime_id))

    def runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        table = "runtime_states"
        value = self._per_runtime(table, "runtime_state_json", runtime_id)
        if value is None:
            return None
        return self.rows.decode(RuntimeState, value, table, where_runtime(runtime_id))

    def ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        table = "runtime_ops_lifecycle"
        value = self._per_runtime(table, "state_json", runtime_id)
        if value is None:
            return None
        return self.rows.decode(PersistedOpsSnapshot, value, table, where_runtime(runtime_id))

    def input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        row = self.connection.execute(
            "SELECT input_id, state_json FROM runtime_input_states"
            " WHERE runtime_id = ? AND input_id = ?",
            (str(runtime_id), str(input_id)),
        ).fetchone()
        return None if row is None else self.rows.input_row(runtime_id, row[0], row[1])[1]

    def input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        rows = self.connection.execute(
            "SELECT input_id, state_json FROM runtime_input_states WHERE runtime_id = ?",
            (str(runtime_id),),
        ).fetchall()
        states: dict[InputId, StoredInputState] = {}
        for raw_key, value in rows:
            key, stored = self.rows.input_row(runtime_id, raw_key, value)
            if key == str(stored.state.input_id):
                states[stored.state.input_id] = stored
            else:  # another spelling of the id: the canonical row wins
                states.setdefault(stored.state.input_id, stored)
        return list(states.values())

    def boundary_receipt(
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
        found = self._receipt_row(runtime_id, run_id, slot)
        if found is not None and found[1] is ReceiptSlot.CANONICAL:
            return found[0]  # the slot is this key's alone
        if sequence > I64_MAX:
            legacy = self._receipt_row(runtime_id, run_id, I64_MAX)
            if legacy is not None and legacy[0].sequence == sequence:
                return legacy[0]
        return None

    def _receipt_row(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, slot: int
    ) -> tuple[RunBoundaryReceipt, ReceiptSlot] | None:
        """The row under `(runtime_id, run_id, slot)`, checked (`RowCodec.receipt_row`).

        Raises:
            CorruptStore: the row does not decode, or is neither the receipt's
                own row nor a clamped one.
        """
        row = self.connection.execute(
            "SELECT run_id, receipt_json FROM runtime_boundary_receipts"
            " WHERE runtime_id = ? AND run_id = ? AND sequence = ?",
            (str(runtime_id), str(run_id), slot),
        ).fetchone()
        return None if row is None else self.rows.receipt_row(runtime_id, row[0], slot, row[1])
