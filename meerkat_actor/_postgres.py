"""The PostgreSQL backend's handle: `open_postgres_store` and `PostgresStore`.

Rule 1: this module holds no semantics and no SQL. `PostgresStore` is a
`_front.StoreFront`: the public methods, their argument checks and their
docstrings are the front's; this module provides its hooks, which hand a
command or a query to the database (`_postgres_db.Database`) in a worker
thread, where `_core.plan` decides over the database as a read view.

Rule 2: nothing blocking runs on the trio thread, and nothing needs psycopg
until a PostgreSQL store is opened: the core keeps its three dependencies,
and `open_postgres_store` without the `postgres` extra raises an
`ImportError` that says what to install.

Rule 3: a call that started runs to its end. Every database call runs in a
worker thread (`_util.run_in_thread`, never abandoned), at most the pool's
size at once (a `trio.CapacityLimiter`); a call cancelled while it waits
for the limiter never reached the database, and one cancelled after that
commits or rolls back before the caller hears of the cancellation. PostgreSQL's waits are bounded by
`lock_timeout` (for the runtime's lock) and the pool's `connect_timeout`.

Theory of operation. Calls of one handle run concurrently, each in its own
transaction on its own pooled connection; the database orders them (see
`_postgres_db`, Rule 2): writes to one runtime one at a time under its
advisory lock, reads on a snapshot. Several handles, in several processes,
on one schema behave as one store. Threaded psycopg rather than its
asyncio API: the asyncio API needs an asyncio loop, which a trio program
does not run; the thread hop costs what it costs the SQLite backend.
"""

from __future__ import annotations

import math
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar, final

import trio

from ._core import Command, Query
from ._errors import StoreClosed
from ._front import StoreFront, StoreStatistics
from ._session_codec import SessionCodec, check_session_codec
from ._util import require_trio, run_in_thread

if TYPE_CHECKING:
    from ._postgres_db import Database

__all__ = ["PostgresStore", "open_postgres_store"]

T = TypeVar("T")

_INSTALL_HINT = "pip install 'meerkat_actor[postgres]'"
#: PostgreSQL's largest `lock_timeout`: 2**31 - 1 ms.
_MAX_LOCK_TIMEOUT: Final = (2**31 - 1) // 1000
#: What a schema name may be: a lower-case SQL identifier (letters, digits and
#: `_`, quoted in every statement, so a reserved word is a name like another),
#: but not PostgreSQL's own (`pg_...`, `information_schema`).
SCHEMA_NAME: Final = re.compile(r"(?!pg_)(?!information_schema$)[a-z_][a-z0-9_]{0,62}")
#: PostgreSQL's `synchronous_commit` values ("off" alone acknowledges a
#: COMMIT before its WAL is flushed: not durable).
SYNCHRONOUS_COMMIT_MODES: Final = ("on", "remote_apply", "remote_write", "local", "off")


@final
class PostgresStore(StoreFront):
    """A handle on a PostgreSQL store; made only by `open_postgres_store()`.

    Implements `RuntimeStore` (the methods are documented on it once, for
    every store) and `statistics()`. Safe to share between any number of
    trio tasks of the run that opened it; their calls run concurrently, up
    to the pool's size. Other handles, in this process or others, may use
    the same schema at the same time (docs/postgres.md).
    """

    __construct_hint__ = "use meerkat_actor.open_postgres_store()"

    def __init__(self, database: Database, codec: SessionCodec, limit: int) -> None:
        self._database = database
        self._codec = codec
        self._authority = database.authority
        self._limiter = trio.CapacityLimiter(limit)
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()
        self._closed = False

    # --- the front's hooks ----------------------------------------------------------------

    async def _submit(self, command: Command) -> None:
        error = await self._call(self._database.execute, command, self._codec)
        if error is not None:
            raise error

    async def _answer(self, query: Query[T]) -> T:
        return await self._call(self._database.read, query)

    def statistics(self) -> StoreStatistics:
        database = self._database
        return StoreStatistics(
            commands=database.commands,
            refused=database.refused,
            batches=database.write_transactions,
            largest_batch=min(database.write_transactions, 1),
            effects=database.effects,
            records=0,
            fsyncs=0,
            bytes_written=0,
            checkpoints=0,
            pending=self._limiter.statistics().tasks_waiting,
            max_pending=0,
            transactions=database.transactions,
        )

    # --- plumbing -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker thread (at most the pool's size at once).

        Waiting for the limiter is cancellable (nothing happened yet); the
        thread, once started, is waited for even if the caller is cancelled.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise StoreClosed("the store closed before this call reached it")
        self._running += 1
        if self._running == 1:
            self._idle = trio.Event()
        try:
            async with self._limiter:
                return await run_in_thread(partial(fn, *args), "meerkat_actor PostgreSQL call")
        finally:
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def _close(self) -> None:
        """Refuse new calls, let the ones already made finish, close the pool."""
        self._closed = True
        with trio.CancelScope(shield=True):
            await self._idle.wait()
            await trio.to_thread.run_sync(self._database.close)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<meerkat_actor {self._database.location} ({state})>"


# --- opening -------------------------------------------------------------------------------


def _check_seconds(name: str, value: object, *, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be int or float, got {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number of seconds {bound}, got {value!r}")
    return seconds


def _import_database() -> type[Database]:
    try:
        from ._postgres_db import Database  # noqa: PLC0415 - psycopg is an optional extra
    except ImportError as exc:
        raise ImportError(
            f"the PostgreSQL store needs psycopg 3 and psycopg-pool: {_INSTALL_HINT} ({exc})"
        ) from exc
    return Database


@asynccontextmanager
async def open_postgres_store(
    dsn_or_pool: object,
    *,
    schema: str = "meerkat",
    session_codec: SessionCodec | None = None,
    synchronous_commit: str = "on",
    lock_timeout: float = 5.0,
    connect_timeout: float = 10.0,
    max_connections: int = 4,
    migrate: bool = False,
) -> AsyncIterator[PostgresStore]:
    """Open the PostgreSQL store in `schema` for an `async with` block.

    The schema holds Meerkat's six runtime tables and a version table; it
    is created (with its tables) if missing. Any number of handles, in any
    number of processes, may open the same schema at once: together they
    behave as one store (docs/postgres.md). Needs the `postgres` extra.

    Args:
        dsn_or_pool: a libpq connection string or URL (the store makes and
            owns a `psycopg_pool.ConnectionPool` of up to `max_connections`
            connections), or a `psycopg_pool.ConnectionPool` that the caller
            owns (opened; the store uses it and leaves it open).
        schema: the PostgreSQL schema of the store's tables: a lower-case
            identifier (letters, digits, `_`; at most 63 characters).
        session_codec: reads the session id out of session snapshots;
            default `MeerkatSessionCodec` (Meerkat session JSON).
        synchronous_commit: PostgreSQL's `synchronous_commit` for the
            store's writes: `"on"` (default: an acknowledged write survives
            a crash of the server or its machine), `"remote_apply"`,
            `"remote_write"` (with replicas), `"local"`, or `"off"` (an
            acknowledged write may be lost if the server crashes).
        lock_timeout: seconds a write waits for another handle's write to
            the same runtime (or a read for a lock) before it fails with
            `WriteFailed`/`ReadFailed`. It also bounds cancellation: a call
            that reached the database returns only when its transaction
            committed or failed.
        connect_timeout: seconds to wait for a connection (at open, and
            for every call when the server is away) before failing.
        max_connections: the most connections the store's pool opens, and
            the most calls of this handle that run at once (default 4:
            each running call is a worker thread, and the trio thread
            shares the GIL with them; see docs/postgres.md).
        migrate: migrate a schema of an older version to this package's
            (otherwise such a schema is refused with `UnsupportedFormat`).

    Raises:
        TypeError, ValueError: a bad argument (the message names it).
        ImportError: psycopg is not installed (the message says what to
            install).
        ReadFailed: the server cannot be reached within `connect_timeout`.
        ReadFailed: (its refinement `NotAStore`) the schema holds tables
            of Meerkat's names but no version table.
        UnsupportedFormat: the schema's version is newer than this
            package's, or older and `migrate` is false.

    The store closes when the block exits: calls already running finish
    first; later calls raise `StoreClosed`. A pool the store made is closed.
    """
    require_trio("meerkat_actor.open_postgres_store()")
    codec = check_session_codec(session_codec)
    if not isinstance(schema, str):
        raise TypeError(f"schema must be str, got {type(schema).__name__}")
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            "schema must be a lower-case identifier (a letter or _, then letters, digits"
            " or _, at most 63 characters; not pg_... nor information_schema),"
            f" got {schema!r}"
        )
    if not isinstance(synchronous_commit, str):
        raise TypeError(f"synchronous_commit must be str, got {type(synchronous_commit).__name__}")
    if synchronous_commit.lower() not in SYNCHRONOUS_COMMIT_MODES:
        raise ValueError(
            f"synchronous_commit must be one of {', '.join(SYNCHRONOUS_COMMIT_MODES)},"
            f" got {synchronous_commit!r}"
        )
    lock_seconds = _check_seconds("lock_timeout", lock_timeout, positive=True)
    if lock_seconds > _MAX_LOCK_TIMEOUT:
        raise ValueError(
            f"lock_timeout must be at most {_MAX_LOCK_TIMEOUT} s (PostgreSQL's limit),"
            f" got {lock_timeout!r}"
        )
    connect_seconds = _check_seconds("connect_timeout", connect_timeout, positive=True)
    if isinstance(max_connections, bool) or not isinstance(max_connections, int):
        raise TypeError(f"max_connections must be int, got {type(max_connections).__name__}")
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections}")
    if not isinstance(migrate, bool):
        raise TypeError(f"migrate must be bool, got {type(migrate).__name__}")
    database_type = _import_database()
    from psycopg_pool import ConnectionPool  # noqa: PLC0415 - psycopg is an optional extra

    if isinstance(dsn_or_pool, ConnectionPool):
        target: Any = dsn_or_pool
        limit = dsn_or_pool.max_size
    elif isinstance(dsn_or_pool, str):
        if not dsn_or_pool.strip():
            raise ValueError("dsn_or_pool must not be an empty connection string")
        target = dsn_or_pool
        limit = max_connections
    else:
        raise TypeError(
            "dsn_or_pool must be a connection string or a psycopg_pool.ConnectionPool,"
            f" got {type(dsn_or_pool).__name__}"
        )
    database = await trio.to_thread.run_sync(
        lambda: database_type.open(
            target,
            schema,
            synchronous_commit=synchronous_commit.lower(),
            lock_timeout=lock_seconds,
            connect_timeout=connect_seconds,
            max_connections=max_connections,
            migrate=migrate,
        )
    )
    store: PostgresStore = PostgresStore._create(database, codec, limit)
    try:
        yield store
    finally:
        await store._close()
