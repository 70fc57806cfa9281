"""The PostgreSQL backend's database: a connection pool, its transactions, the SQL.

Rule 1: this module holds no semantics. A write runs `_core.plan` against one
transaction as a `_core.ReadView` (`_View`: a few lookups by key, answered
with SQL inside that transaction) and translates the effects it returns into
SQL; a read runs `query.answer(view)` in one read-only transaction. Which
rows `plan` reads is `plan`'s business.

Rule 2: one operation, one transaction, and every write to a runtime holds
that runtime's lock. A write begins (READ COMMITTED), takes the transaction
advisory lock of its runtime (`pg_advisory_xact_lock`; the OAuth commands
take the store's OAuth lock instead) *before* it reads anything, then plans,
writes and commits; the lock is released after the commit is visible. So the
writes to one runtime, from any number of handles in any number of processes,
run one at a time, and each plans against every write committed before it:
a receipt key is inserted once (the others get `ReceiptConflict`),
`commit_machine_lifecycle(expected=...)` is a compare-and-set, and the OAuth
read-modify-write loses no update. Writes to different runtimes run in
parallel. A read runs in one REPEATABLE READ READ ONLY transaction: every
lookup of one query sees one snapshot, which holds every write acknowledged
before the query began.

Rule 3: every method blocks. Call it only from a worker thread. Any number
of threads may call at once: each checks a connection out of the pool for
its one transaction.

Rule 4: a connection lost once the COMMIT was sent leaves the write's
outcome unknown (the server may have committed it): the caller gets
`CommitOutcomeUnknown` (a `WriteFailed`). The handle is not poisoned: it
keeps no state of its own, and its next operation reads the database afresh.
Any other failure changes nothing: a failure before COMMIT rolls the
transaction back (a lost connection rolls it back on the server), and a
statement the server refuses aborts the pipeline, so the COMMIT queued after
it never runs.

Theory of operation. `Database.open` makes (or adopts) a
`psycopg_pool.ConnectionPool`, then creates the schema if it is missing
(under the schema's advisory lock, so racing openers create it once) or
checks its version (`SCHEMA_VERSION`; an older schema is migrated only when
asked, see `migrate`). Tables live in the named schema and are named in the
SQL with the schema (never through `search_path`). Connections run in
autocommit mode and this module issues BEGIN and COMMIT itself, with
`SET LOCAL` for the commit durability and the lock timeout, so a pool the
caller hands in needs no configuration. A write is two round trips in
psycopg's pipeline mode (BEGIN, settings, lock and the first lookup; then the
writes and COMMIT), which measured 15-30 % faster per commit than a round
trip per statement on the test machine (`tools/pg_commit_split.py`, run
against both versions); a read that needs one lookup is one
statement.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, Final, TypeVar, final

import psycopg
import psycopg.errors
import psycopg.sql
from psycopg.rows import tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout
from pyrsistent import pmap

from . import _core
from ._codec import CodecError, dumps_json, loads_json
from ._core import Command, Query
from ._errors import (
    CommitOutcomeUnknown,
    CorruptStore,
    NotAStore,
    ReadFailed,
    UnsupportedFormat,
    WriteFailed,
)
from ._ids import InputId, LogicalRuntimeId, RunId
from ._packed import PackedMap, input_key, pack_input, pack_receipt, receipt_key
from ._session_codec import SessionCodec
from ._types import PersistedOpsSnapshot, RunBoundaryReceipt, RuntimeState, StoredInputState

__all__ = [
    "SCHEMA_VERSION",
    "Database",
    "drop_schema",
    "schema_statements",
]

logger = logging.getLogger("meerkat_actor")

T = TypeVar("T")

#: The version of the schema this module writes (the `meerkat_schema_version` row).
SCHEMA_VERSION: Final = 1
U64_MAX: Final = 2**64 - 1
OAUTH_ROW_ID: Final = "auth_oauth_flow_state"

#: Migrations: `_MIGRATIONS[n]` takes a schema from version n to n + 1.
_MIGRATIONS: dict[int, tuple[str, ...]] = {}

_TABLES: Final = (
    "runtime_input_states",
    "runtime_boundary_receipts",
    "runtime_session_snapshots",
    "runtime_states",
    "runtime_ops_lifecycle",
    "runtime_auth_oauth_flow_state",
)
#: The per-runtime tables (all but the OAuth one).
_RUNTIME_TABLES: Final = _TABLES[:5]


def schema_statements(schema: str) -> tuple[str, ...]:
    """The statements that create version `SCHEMA_VERSION` of the schema, with
    a new random store id (the authority key's: it names this store wherever
    and however it is reached)."""
    s = _quoted(schema)
    return (
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE {s}.meerkat_schema_version (
    id integer NOT NULL PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL,
    store_id text NOT NULL
)""",
        f"""CREATE TABLE {s}.runtime_input_states (
    runtime_id bytea NOT NULL,
    input_id text NOT NULL,
    state_json bytea NOT NULL,
    PRIMARY KEY (runtime_id, input_id)
)""",
        f"""CREATE TABLE {s}.runtime_boundary_receipts (
    runtime_id bytea NOT NULL,
    run_id text NOT NULL,
    sequence numeric(20, 0) NOT NULL CHECK (sequence >= 0 AND sequence <= {U64_MAX}),
    receipt_json bytea NOT NULL,
    PRIMARY KEY (runtime_id, run_id, sequence)
)""",
        f"""CREATE TABLE {s}.runtime_session_snapshots (
    runtime_id bytea NOT NULL PRIMARY KEY,
    session_snapshot bytea NOT NULL
)""",
        f"""CREATE TABLE {s}.runtime_states (
    runtime_id bytea NOT NULL PRIMARY KEY,
    runtime_state_json bytea NOT NULL
)""",
        f"""CREATE TABLE {s}.runtime_ops_lifecycle (
    runtime_id bytea NOT NULL PRIMARY KEY,
    state_json bytea NOT NULL
)""",
        f"""CREATE TABLE {s}.runtime_auth_oauth_flow_state (
    id text NOT NULL PRIMARY KEY CHECK (id = '{OAUTH_ROW_ID}'),
    state_json bytea NOT NULL
)""",
        f"INSERT INTO {s}.meerkat_schema_version (id, version, store_id)"
        f" VALUES (1, {SCHEMA_VERSION}, '{uuid.uuid4()}')",
    )


def drop_schema(dsn: str, schema: str) -> None:
    """Drop `schema` and everything in it (the bench's and the tests'
    throwaway stores). Blocks."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as connection:
        connection.execute(
            psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                psycopg.sql.Identifier(schema)
            )
        )


def _quoted(schema: str) -> str:
    """The schema as a quoted SQL identifier (the caller checked it holds
    only lower-case letters, digits and `_`, so nothing in it needs escaping;
    quoted, a reserved word such as `user` is a name like any other)."""
    return f'"{schema}"'


def lock_key(*parts: str) -> int:
    """A signed 64-bit advisory lock key for `parts` (a collision only makes
    two unrelated writes wait for each other)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _key(runtime_id: LogicalRuntimeId) -> bytes:
    """A runtime id as its `runtime_id` column holds it: UTF-8 bytes (`bytea`,
    since a runtime id may hold NUL, which PostgreSQL's text cannot)."""
    return runtime_id.value.encode("utf-8")


def _where(operation: str, runtime_id: LogicalRuntimeId | None) -> str:
    return operation if runtime_id is None else f"{operation} for runtime {str(runtime_id)!r}"


def _lost(exc: BaseException) -> bool:
    """The error means the connection (or the pool's supply of them) is gone."""
    return isinstance(exc, psycopg.OperationalError | PoolTimeout)


class _SecondLookup(Exception):
    """A view limited to one statement was asked for a second one."""


@final
class _View:
    """One transaction's lookups: the `_core.ReadView` `plan` and the queries use.

    With `single`, the view runs outside a transaction and allows one
    lookup: one statement is atomic and sees one snapshot on its own, so a
    query that needs one lookup needs no BEGIN and COMMIT (two round trips
    fewer). A second lookup raises `_SecondLookup`, and the query is run
    again inside a transaction.
    """

    __slots__ = ("connection", "database", "lookups", "single")

    def __init__(
        self, database: Database, connection: psycopg.Connection[Any], *, single: bool = False
    ) -> None:
        self.database = database
        self.connection = connection
        self.single = single
        self.lookups = 0

    def _execute(self, statement: str, params: tuple[object, ...]) -> psycopg.Cursor[Any]:
        if self.single and self.lookups:
            raise _SecondLookup
        self.lookups += 1
        return self.connection.execute(statement, params)

    def _one(self, statement: str, params: tuple[object, ...]) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._execute(statement, params).fetchone()
        return row

    def _all(self, statement: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return self._execute(statement, params).fetchall()

    def auth_oauth_flow_snapshot(self) -> bytes | None:
        row = self._one(self.database.sql["get_oauth"], (OAUTH_ROW_ID,))
        return None if row is None else bytes(row[0])

    def session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        row = self._one(self.database.sql["get_session"], (_key(runtime_id),))
        return None if row is None else bytes(row[0])

    def runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        row = self._one(self.database.sql["get_runtime_state"], (_key(runtime_id),))
        if row is None:
            return None
        return self.database.decode(RuntimeState, row[0], "runtime_states", runtime_id)

    def ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        row = self._one(self.database.sql["get_ops"], (_key(runtime_id),))
        if row is None:
            return None
        return self.database.decode(
            PersistedOpsSnapshot, row[0], "runtime_ops_lifecycle", runtime_id
        )

    def input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        key = str(input_id)
        row = self._one(self.database.sql["get_input"], (_key(runtime_id), key))
        return None if row is None else self.database.input_row(runtime_id, key, row[0])

    def input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        rows = self._all(self.database.sql["get_inputs"], (_key(runtime_id),))
        return [self.database.input_row(runtime_id, key, value) for key, value in rows]

    def boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        run = str(run_id)
        row = self._one(self.database.sql["get_receipt"], (_key(runtime_id), run, sequence))
        if row is None:
            return None
        return self.database.receipt_row(runtime_id, run, sequence, row[0])

    def boundary_receipts(self, runtime_id: LogicalRuntimeId) -> list[RunBoundaryReceipt]:
        rows = self._all(self.database.sql["get_receipts"], (_key(runtime_id),))
        return [
            self.database.receipt_row(runtime_id, run, slot, value) for run, slot, value in rows
        ]

    def runtime_ids(self) -> list[LogicalRuntimeId]:
        return [
            self.database.runtime_id(bytes(key))
            for (key,) in self._all(self.database.sql["runtimes"], ())
        ]


@final
class Database:
    """A connection pool on one schema, and the blocking work done with it.

    `schema` is checked by the caller (`_postgres.SCHEMA_NAME`: an
    identifier that needs no quoting), as is `synchronous_commit`.

    Every method blocks: call it only from a worker thread (any number at once).
    """

    def __init__(
        self,
        pool: ConnectionPool[Any],
        schema: str,
        *,
        owns_pool: bool,
        synchronous_commit: str,
        lock_timeout: float,
        connect_timeout: float = 10.0,
    ) -> None:
        self.pool = pool
        self.connect_timeout = connect_timeout
        self.schema = schema
        self.owns_pool = owns_pool
        self.closed = False
        self.authority = ""
        self.location = f"schema {schema}"
        timeout_ms = max(1, round(lock_timeout * 1000))
        self.begin_write = (
            "BEGIN ISOLATION LEVEL READ COMMITTED",
            f"SET LOCAL synchronous_commit TO '{synchronous_commit}'",
            f"SET LOCAL lock_timeout TO {timeout_ms}",
        )
        self.begin_read = (
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
            f" SET LOCAL lock_timeout TO {timeout_ms}"
        )
        s = _quoted(schema)
        self.sql: dict[str, str] = {
            "get_oauth": f"SELECT state_json FROM {s}.runtime_auth_oauth_flow_state WHERE id = %s",
            "get_session": (
                f"SELECT session_snapshot FROM {s}.runtime_session_snapshots WHERE runtime_id = %s"
            ),
            "get_runtime_state": (
                f"SELECT runtime_state_json FROM {s}.runtime_states WHERE runtime_id = %s"
            ),
            "get_ops": f"SELECT state_json FROM {s}.runtime_ops_lifecycle WHERE runtime_id = %s",
            "get_input": (
                f"SELECT state_json FROM {s}.runtime_input_states"
                " WHERE runtime_id = %s AND input_id = %s"
            ),
            "get_inputs": (
                f"SELECT input_id, state_json FROM {s}.runtime_input_states WHERE runtime_id = %s"
            ),
            "get_receipt": (
                f"SELECT receipt_json FROM {s}.runtime_boundary_receipts"
                " WHERE runtime_id = %s AND run_id = %s AND sequence = %s::numeric"
            ),
            "get_receipts": (
                f"SELECT run_id, sequence, receipt_json FROM {s}.runtime_boundary_receipts"
                " WHERE runtime_id = %s"
            ),
            "runtimes": " UNION ".join(
                f"SELECT runtime_id FROM {s}.{table}" for table in _RUNTIME_TABLES
            ),
            "put_session": (
                f"INSERT INTO {s}.runtime_session_snapshots (runtime_id, session_snapshot)"
                " VALUES (%s, %s) ON CONFLICT (runtime_id)"
                " DO UPDATE SET session_snapshot = excluded.session_snapshot"
            ),
            "put_receipt": (
                f"INSERT INTO {s}.runtime_boundary_receipts"
                " (runtime_id, run_id, sequence, receipt_json) VALUES (%s, %s, %s::numeric, %s)"
            ),
            "put_input": (
                f"INSERT INTO {s}.runtime_input_states (runtime_id, input_id, state_json)"
                " VALUES (%s, %s, %s) ON CONFLICT (runtime_id, input_id)"
                " DO UPDATE SET state_json = excluded.state_json"
            ),
            "put_runtime_state": (
                f"INSERT INTO {s}.runtime_states (runtime_id, runtime_state_json)"
                " VALUES (%s, %s) ON CONFLICT (runtime_id)"
                " DO UPDATE SET runtime_state_json = excluded.runtime_state_json"
            ),
            "put_ops": (
                f"INSERT INTO {s}.runtime_ops_lifecycle (runtime_id, state_json)"
                " VALUES (%s, %s) ON CONFLICT (runtime_id)"
                " DO UPDATE SET state_json = excluded.state_json"
            ),
            "put_oauth": (
                f"INSERT INTO {s}.runtime_auth_oauth_flow_state (id, state_json)"
                " VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET state_json = excluded.state_json"
            ),
        }
        self.delete_runtime_rows: dict[str, str] = {
            table: f"DELETE FROM {s}.{table} WHERE runtime_id = %s" for table in _RUNTIME_TABLES
        }
        self.tables = ", ".join(f"{s}.{table}" for table in (*_TABLES, "meerkat_schema_version"))
        self.schema_lock = lock_key("meerkat_actor", schema, "schema")
        self.oauth_lock = lock_key("meerkat_actor", schema, "oauth")
        # Counters for `statistics()` (updated under the GIL; approximate
        # only if two threads finish at once).
        self.commands = 0
        self.refused = 0
        self.effects = 0
        self.transactions = 0
        self.write_transactions = 0

    # --- open and close -------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        target: str | ConnectionPool[Any],
        schema: str,
        *,
        synchronous_commit: str,
        lock_timeout: float,
        connect_timeout: float,
        max_connections: int,
        migrate: bool,
        create: bool = True,
        prepare: bool = True,
    ) -> Database:
        """Open the pool (unless one is handed in) and create or check the schema
        (with `create` false, a schema without a store is `NotAStore`; with
        `prepare` false, the schema is not looked at: `export_state` does it
        in its own transaction).

        Raises:
            ReadFailed: the server cannot be reached, or the schema holds
                tables of Meerkat's names without a version row (not a store
                this module made).
            UnsupportedFormat: the schema's version is newer than
                `SCHEMA_VERSION`, or older and `migrate` is false.
        """
        if isinstance(target, ConnectionPool):
            pool: ConnectionPool[Any] = target
            owns = False
        else:
            pool = ConnectionPool(
                target,
                min_size=1,
                max_size=max_connections,
                kwargs={
                    "autocommit": True,
                    # A server or network that goes silent fails a call (and
                    # lets the store close) within about a minute, not the
                    # OS's TCP defaults (hours). Unix sockets ignore these.
                    "keepalives": 1,
                    "keepalives_idle": 30,
                    "keepalives_interval": 10,
                    "keepalives_count": 3,
                    "tcp_user_timeout": 60_000,
                },
                open=False,
                timeout=connect_timeout,
                name=f"meerkat_actor {schema}",
            )
            owns = True
        database = cls(
            pool,
            schema,
            owns_pool=owns,
            synchronous_commit=synchronous_commit,
            lock_timeout=lock_timeout,
            connect_timeout=connect_timeout,
        )
        try:
            if owns:
                try:
                    pool.open(wait=True, timeout=connect_timeout)
                except PoolTimeout as exc:
                    raise ReadFailed(
                        f"cannot open the PostgreSQL store in schema {schema}: no connection"
                        f" to the server within {connect_timeout} s ({exc})"
                    ) from exc
            if prepare:
                database._prepare(migrate, create)
        except BaseException:
            database.close()
            raise
        return database

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection from the pool, in autocommit mode (this module issues
        BEGIN and COMMIT itself) and returning tuples; a connection of a
        caller's pool gets its own settings back when it goes back idle.

        Raises:
            PoolTimeout: no connection within `connect_timeout`.
        """
        with self.pool.connection(timeout=self.connect_timeout) as connection:
            autocommit, rows = connection.autocommit, connection.row_factory
            if not autocommit:
                connection.autocommit = True
            connection.row_factory = tuple_row
            try:
                yield connection
            finally:
                idle = psycopg.pq.TransactionStatus.IDLE
                if not connection.closed and connection.info.transaction_status == idle:
                    connection.row_factory = rows
                    if not autocommit:
                        connection.autocommit = False

    def _prepare(self, migrate: bool, create: bool = True) -> None:
        schema = self.schema
        try:
            with self._connection() as connection:
                # READ COMMITTED: each statement after the lock sees what the
                # opener that held it before committed.
                connection.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                try:
                    connection.execute("SELECT pg_advisory_xact_lock(%s)", (self.schema_lock,))
                    version = self._schema_version(connection)
                    if version is None and not create:
                        raise NotAStore(f"schema {schema} holds no Meerkat store")
                    if version is None:
                        for statement in schema_statements(schema):
                            connection.execute(statement)
                    elif version > SCHEMA_VERSION:
                        raise UnsupportedFormat(
                            f"schema {schema} is at version {version} of the Meerkat PostgreSQL"
                            f" schema; this meerkat_actor knows versions up to {SCHEMA_VERSION}"
                        )
                    elif version < SCHEMA_VERSION:
                        if not migrate:
                            raise UnsupportedFormat(
                                f"schema {schema} is at version {version} of the Meerkat"
                                f" PostgreSQL schema; this meerkat_actor writes version"
                                f" {SCHEMA_VERSION}: open it with migrate=True (or run"
                                " `meerkat-actor migrate-postgres`) to migrate it"
                            )
                        for step in range(version, SCHEMA_VERSION):
                            for statement in _MIGRATIONS[step]:
                                connection.execute(statement.format(schema=_quoted(schema)))
                        connection.execute(
                            f"UPDATE {_quoted(schema)}.meerkat_schema_version SET version = %s",
                            (SCHEMA_VERSION,),
                        )
                    connection.execute("COMMIT")
                except BaseException:
                    self._rollback(connection)
                    raise
                self.authority = self._authority(connection)
        except (psycopg.Error, PoolTimeout) as exc:
            raise ReadFailed(f"cannot open the PostgreSQL store in schema {schema}: {exc}") from exc

    def _schema_version(self, connection: psycopg.Connection[Any]) -> int | None:
        """The schema's version, or `None` if it holds none of Meerkat's tables
        (from the catalog, which shows every table, whatever the role may read).

        Raises:
            NotAStore: Meerkat-named tables without a (valid) version row.
        """
        schema = self.schema
        present = {
            str(name)
            for (name,) in connection.execute(
                "SELECT c.relname FROM pg_catalog.pg_class c"
                " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                (schema,),
            )
        }
        ours = present.intersection((*_TABLES, "meerkat_schema_version"))
        if not ours:
            return None
        if "meerkat_schema_version" not in ours:
            raise NotAStore(
                f"schema {schema} holds {', '.join(sorted(ours))} but no"
                " meerkat_schema_version table: not a store this package made"
            )
        rows = connection.execute(
            f"SELECT id, version FROM {_quoted(schema)}.meerkat_schema_version"
        ).fetchall()
        if len(rows) != 1 or not isinstance(rows[0][1], int):
            raise NotAStore(f"schema {schema}: meerkat_schema_version holds {rows!r}, not one row")
        version: int = rows[0][1]
        missing = [table for table in _TABLES if table not in present]
        if missing and version == SCHEMA_VERSION:
            raise NotAStore(f"schema {schema} (version {version}) has no table {missing[0]}")
        return version

    def _authority(self, connection: psycopg.Connection[Any]) -> str:
        """`postgres:` + the store id the schema was created with + database +
        schema: the same for every handle on this store, however the server is
        reached, and different for every other store."""
        database = connection.execute("SELECT current_database()").fetchone()
        name = str(database[0]) if database else ""
        row = connection.execute(
            f"SELECT store_id FROM {_quoted(self.schema)}.meerkat_schema_version"
        ).fetchone()
        self.location = f"PostgreSQL store {name}.{self.schema}"
        return f"postgres:{row[0] if row else ''}/{name}/{self.schema}"

    def close(self) -> None:
        """Close the pool if this database made it."""
        if not self.closed:
            self.closed = True
            if self.owns_pool:
                self.pool.close()

    @staticmethod
    def _rollback(connection: psycopg.Connection[Any]) -> None:
        if (
            connection.closed
            or connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            return
        try:
            connection.execute("ROLLBACK")
        except psycopg.Error:
            logger.debug("ROLLBACK failed", exc_info=True)

    # --- rows to values ----------------------------------------------------------------------

    def runtime_id(self, key: bytes) -> LogicalRuntimeId:
        """A `runtime_id` column's value as the id.

        Raises:
            CorruptStore: not the UTF-8 of a non-empty id.
        """
        try:
            return LogicalRuntimeId(key.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CorruptStore(
                f"{self.location}: a runtime_id of {key!r} is not a runtime id: {exc}"
            ) from exc

    def corrupt(self, table: str, where: str, message: str) -> CorruptStore:
        return CorruptStore(f"{self.location}: {table}, {where}: {message}")

    def decode(self, cls: type[T], value: object, table: str, runtime_id: LogicalRuntimeId) -> T:
        where = f"runtime {str(runtime_id)!r}"
        try:
            return loads_json(cls, bytes(value))  # type: ignore[call-overload]
        except (CodecError, TypeError) as exc:
            raise self.corrupt(table, where, str(exc)) from exc

    def input_row(self, runtime_id: LogicalRuntimeId, key: str, value: object) -> StoredInputState:
        table = "runtime_input_states"
        where = f"runtime {str(runtime_id)!r}, input_id {key!r}"
        try:
            stored = loads_json(StoredInputState, bytes(value))  # type: ignore[call-overload]
        except (CodecError, TypeError) as exc:
            raise self.corrupt(table, where, str(exc)) from exc
        if str(stored.state.input_id) != key:
            raise self.corrupt(table, where, f"the row holds input {stored.state.input_id}")
        return stored

    def receipt_row(
        self, runtime_id: LogicalRuntimeId, run: str, slot: object, value: object
    ) -> RunBoundaryReceipt:
        table = "runtime_boundary_receipts"
        where = f"runtime {str(runtime_id)!r}, run_id {run!r}, sequence {slot}"
        try:
            receipt = loads_json(RunBoundaryReceipt, bytes(value))  # type: ignore[call-overload]
        except (CodecError, TypeError) as exc:
            raise self.corrupt(table, where, str(exc)) from exc
        sequence = int(slot) if isinstance(slot, int | Decimal) else None
        if str(receipt.run_id) != run or sequence != receipt.sequence:
            raise self.corrupt(
                table,
                where,
                f"the row holds the receipt of run {receipt.run_id} sequence {receipt.sequence}",
            )
        return receipt

    # --- writes ---------------------------------------------------------------------------

    def execute(self, command: Command, codec: SessionCodec) -> BaseException | None:
        """Run one command as one write transaction, `_core.plan` deciding.

        Returns:
            `None` when it committed, or the caller-code exception (the OAuth
            updater's own, or `TypeError` for a non-bytes result) to raise in
            the caller; the transaction was rolled back.

        Raises:
            RuntimeStoreError: what `_core.plan` raises (rolled back), or
                `WriteFailed` (chained to the `psycopg` error) when the
                server or the connection fails before COMMIT (rolled back),
                or `CommitOutcomeUnknown` when it fails during COMMIT, or
                `CorruptStore` when a row the command needs does not decode.
        """
        runtime_id: LogicalRuntimeId | None = getattr(command, "runtime_id", None)
        where = _where(command.operation, runtime_id)
        self.commands += 1
        lock = (
            self.oauth_lock
            if runtime_id is None
            else lock_key("meerkat_actor", self.schema, "runtime", str(runtime_id))
        )
        try:
            effects = self._transaction(where, lock, command, codec)
        except _core.CallerCodeError as exc:
            self.refused += 1
            return exc.error
        except BaseException:
            self.refused += 1
            raise
        self.effects += len(effects)
        return None

    def _transaction(
        self, where: str, lock: int, command: Command, codec: SessionCodec
    ) -> tuple[_core.Effect, ...]:
        """One write transaction in two round trips, through psycopg's pipeline
        mode: BEGIN, the settings, the lock and `plan`'s first lookup go
        together (each further lookup is a round trip of its own; a command
        that looks nothing up waits for the lock alone), then the writes and
        the COMMIT.

        Raises:
            WriteFailed: the server refused a statement or the COMMIT, or the
                connection failed before the COMMIT was sent: rolled back.
            CommitOutcomeUnknown: the connection failed once the COMMIT was
                sent.
        """
        self.transactions += 1
        self.write_transactions += 1
        committing = False
        try:
            with self._connection() as connection:
                try:
                    with connection.pipeline() as pipeline:
                        for statement in self.begin_write:
                            connection.execute(statement)
                        connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
                        view = _View(self, connection)
                        effects = _core.plan(view, command, codec)
                        if not view.lookups:
                            # Nothing read yet: know that BEGIN and the lock
                            # went through before the COMMIT goes out, so a
                            # lost connection until then is a plain failure.
                            pipeline.sync()
                        for effect in effects:
                            self._write(connection, effect)
                        # From here on the COMMIT may reach the server (libpq
                        # may send it before this call returns).
                        committing = True
                        connection.execute("COMMIT")
                except BaseException as exc:
                    if committing and self._maybe_committed(exc, connection):
                        raise CommitOutcomeUnknown(
                            f"{where}: the connection to {self.location} failed during COMMIT"
                            f" ({exc}): the write may or may not have been committed; read it"
                            " back (for atomic_apply, load_boundary_receipt of its receipt)"
                            " to know"
                        ) from exc
                    self._rollback(connection)
                    raise
                return effects
        except (psycopg.Error, PoolTimeout) as exc:
            raise WriteFailed(f"{where}: PostgreSQL failed on {self.location}: {exc}") from exc

    @staticmethod
    def _maybe_committed(exc: BaseException, connection: psycopg.Connection[Any]) -> bool:
        """Whether the transaction may have committed although `exc` was raised
        while its COMMIT was on its way: the connection failed. A statement
        the server refused (an error with an SQLSTATE, or the pipeline aborted
        by one) means the COMMIT queued after it never ran."""
        if isinstance(exc, psycopg.errors.PipelineAborted):
            return False
        if isinstance(exc, psycopg.Error) and exc.sqlstate is not None and not connection.broken:
            return False
        if connection.closed or connection.broken:
            return True
        return _lost(exc)

    def _write(self, connection: psycopg.Connection[Any], effect: _core.Effect) -> None:
        """Translate one effect of `_core.plan` into SQL."""
        sql = self.sql
        execute = connection.execute
        match effect:
            case _core.SetSessionSnapshot(runtime_id, snapshot):
                execute(sql["put_session"], (_key(runtime_id), snapshot))
            case _core.InsertReceipt(runtime_id, packed):
                receipt = _core.decode_receipt(runtime_id, packed.key, packed.blob)
                execute(
                    sql["put_receipt"],
                    (_key(runtime_id), str(receipt.run_id), receipt.sequence, dumps_json(receipt)),
                )
            case _core.PutInputStates(runtime_id, states):
                with connection.cursor() as cursor:
                    cursor.executemany(
                        sql["put_input"],
                        [
                            (_key(runtime_id), str(s.state.input_id), dumps_json(s))
                            for s in (
                                _core.decode_input(runtime_id, packed.key, packed.blob)
                                for packed in states
                            )
                        ],
                    )
            case _core.SetRuntimeState(runtime_id, runtime_state):
                execute(sql["put_runtime_state"], (_key(runtime_id), dumps_json(runtime_state)))
            case _core.SetOpsSnapshot(runtime_id, snapshot):
                execute(sql["put_ops"], (_key(runtime_id), dumps_json(snapshot)))
            case _core.SetOAuthFlowSnapshot(snapshot):
                execute(sql["put_oauth"], (OAUTH_ROW_ID, snapshot))
            case _core.RemoveSessionSnapshot(runtime_id):
                execute(self.delete_runtime_rows["runtime_session_snapshots"], (_key(runtime_id),))
            case _core.RemoveOpsSnapshot(runtime_id):
                execute(self.delete_runtime_rows["runtime_ops_lifecycle"], (_key(runtime_id),))
            case _core.RemoveRuntime(runtime_id):
                for delete in self.delete_runtime_rows.values():
                    execute(delete, (_key(runtime_id),))
            case _:  # pragma: no cover - the Effect union is closed
                raise TypeError(f"not a store effect: {effect!r}")

    # --- reads ----------------------------------------------------------------------------

    def read(self, query: Query[T]) -> T:
        """Answer `query` in one read-only transaction.

        Raises:
            ReadFailed: the server or the connection failed (chained).
            CorruptStore: a row does not decode or does not match its key.
        """
        return self.run_read(query.operation, getattr(query, "runtime_id", None), query.answer)

    def run_read(
        self,
        operation: str,
        runtime_id: LogicalRuntimeId | None,
        work: Callable[[_View], T],
    ) -> T:
        """Run `work(view)` as one statement on its own or, if it needs more
        lookups than one, in one REPEATABLE READ READ ONLY transaction."""
        self.transactions += 1
        try:
            with self._connection() as connection:
                try:
                    return work(_View(self, connection, single=True))
                except _SecondLookup:
                    pass
                try:
                    connection.execute(self.begin_read)
                    result = work(_View(self, connection))
                    connection.execute("COMMIT")
                except BaseException:
                    self._rollback(connection)
                    raise
                return result
        except (psycopg.Error, PoolTimeout) as exc:
            where = _where(operation, runtime_id)
            raise ReadFailed(f"{where}: PostgreSQL failed on {self.location}: {exc}") from exc

    def export_state(self, state: _core.StoreState) -> None:
        """Write every value of `state` as the whole content of the schema's
        store, in one transaction that also creates the schema and its tables
        if they are missing: under the schema's lock (the one openers take),
        with every table locked against writers (`EXCLUSIVE`), it checks that
        the store is empty, then writes. Any failure rolls all of it back,
        the creation included: nothing of anyone else's is ever touched.

        Raises:
            FileExistsError: the schema's store holds something.
            NotAStore, UnsupportedFormat: as `open_postgres_store`.
            WriteFailed: the server refused a row or failed (rolled back).
            CommitOutcomeUnknown: the connection failed during COMMIT.
        """
        where = f"export to schema {self.schema}"
        self.transactions += 1
        self.write_transactions += 1
        committing = False
        try:
            with self._connection() as connection:
                try:
                    for statement in self.begin_write:
                        connection.execute(statement)
                    connection.execute("SELECT pg_advisory_xact_lock(%s)", (self.schema_lock,))
                    version = self._schema_version(connection)
                    if version is None:
                        for statement in schema_statements(self.schema):
                            connection.execute(statement)
                    elif version != SCHEMA_VERSION:
                        raise UnsupportedFormat(
                            f"schema {self.schema} is at version {version} of the Meerkat"
                            f" PostgreSQL schema; this meerkat_actor writes version"
                            f" {SCHEMA_VERSION}"
                        )
                    connection.execute(f"LOCK TABLE {self.tables} IN EXCLUSIVE MODE")
                    for table in _TABLES:
                        row = connection.execute(
                            f"SELECT 1 FROM {_quoted(self.schema)}.{table} LIMIT 1"
                        ).fetchone()
                        if row is not None:
                            raise FileExistsError(
                                17, "the export's target holds a store", f"schema {self.schema}"
                            )
                    for effect in _core.state_effects(state):
                        self._write(connection, effect)
                    committing = True
                    connection.execute("COMMIT")
                except BaseException as exc:
                    if committing and self._maybe_committed(exc, connection):
                        raise CommitOutcomeUnknown(
                            f"{where}: the connection failed during COMMIT ({exc}): the export"
                            " may or may not be there; read the schema back to know"
                        ) from exc
                    self._rollback(connection)
                    raise
        except (psycopg.Error, PoolTimeout) as exc:
            raise WriteFailed(f"{where}: PostgreSQL failed: {exc}") from exc

    def read_state(self) -> _core.StoreState:
        """The whole content in one read transaction (export, dump)."""
        return self.run_read("read the whole store", None, _read_state)


def _read_state(view: _View) -> _core.StoreState:
    runtimes: dict[LogicalRuntimeId, _core.RuntimeRecord] = {}
    for runtime_id in sorted(view.runtime_ids(), key=str):
        runtimes[runtime_id] = _core.RuntimeRecord(
            session_snapshot=view.session_snapshot(runtime_id),
            input_states=PackedMap.adopt(
                {input_key(s.state.input_id): pack_input(s) for s in view.input_states(runtime_id)}
            ),
            receipts=PackedMap.adopt(
                {
                    receipt_key(r.run_id, r.sequence): pack_receipt(r)
                    for r in view.boundary_receipts(runtime_id)
                }
            ),
            runtime_state=view.runtime_state(runtime_id),
            ops_snapshot=view.ops_lifecycle(runtime_id),
        )
    return _core.StoreState(pmap(runtimes), view.auth_oauth_flow_snapshot())
