"""The SQLite backend's handle: `open_sqlite_store` and `SqliteStore` (SPEC §9).

Rule 1: this module holds no semantics and no SQL. `SqliteStore` is a
`_front.StoreFront`: the public methods, their argument checks and their
docstrings are the front's; this module provides its hooks, which hand a
command or a query to the database (`_sqlite_db.Database`) in a worker
thread. Which rows a command needs and what it writes are decided there, by
`_core.plan` over the database as a read view.

Rule 2: nothing blocking runs on the trio thread. Every SQLite call, the
schema creation at open and the close run in a worker thread
(`trio.to_thread.run_sync`), and never with `abandon_on_cancel=True`: a
thread that may still commit is waited for, never abandoned.

Rule 3: the file stays Meerkat's. Tables, columns and stored shapes are
those of the seed-era Rust SQLite store (SPEC §7, §9), but for the receipt
sequence encoding (`_sqlite_rows`); tables this backend does not know are
never touched.

Theory of operation. `open_sqlite_store(path)` checks its arguments, opens
the database in a worker thread and hands out a `SqliteStore`. The handle
serializes all use of the connection with a `trio.Lock` (FIFO, so calls run
in the order they queued, and reads are linearizable: each sees every write
acknowledged before it). A call checks its arguments in the caller's task
(the front), waits for the lock (cancellable: a call cancelled there never
reached the store), then runs its transaction in a worker thread and waits
for it uncancellably, so once started it commits or rolls back before the
caller hears of any cancellation (delivered at its next checkpoint) and
before any later call of that task. Nothing interrupts SQLite's wait for a
lock another connection holds, so a cancelled call (and a close) can take up
to the busy timeout per lock waited for; `open_sqlite_store` documents the
bound.

Receipt sequences are u64; SQLite integers are i64. The `sequence` column
holds the two's-complement bit pattern of the u64 (SPEC §9), so every u64 is
a distinct key; the receipt JSON keeps the exact value. The seed-era Rust
store clamps sequences at or above 2**63 to 2**63-1 when it writes and when
it looks up: such a Rust reader never finds our receipts at or above 2**63.
Later Rust versions use two's complement too, but also changed row shapes
this backend does not write (docs/sqlite.md, "Interop").
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar, final

import trio

from ._core import Command, Query
from ._errors import StoreClosed
from ._front import StoreFront, StoreStatistics
from ._session_codec import SessionCodec, check_session_codec
from ._sqlite_db import DEFAULT_BUSY_TIMEOUT, SYNCHRONOUS_MODES, Database
from ._util import require_trio

__all__ = ["SqliteStore", "open_sqlite_store"]

T = TypeVar("T")


@final
class SqliteStore(StoreFront):
    """A handle on a SQLite store; made only by `open_sqlite_store()`.

    Implements `RuntimeStore` (the methods are documented on it once, for
    every store) and `statistics()`. Safe to share between any number of
    trio tasks of the run that opened it; their calls run one at a time, in
    the order they reached the store. Another handle, or Meerkat's Rust
    runtime, may use the same file at the same time: SQLite's locking keeps
    every operation atomic and isolated.
    """

    __construct_hint__ = "use meerkat_actor.open_sqlite_store()"

    def __init__(self, database: Database, codec: SessionCodec, authority: str) -> None:
        self._database = database
        self._codec = codec
        self._authority = authority
        self._lock = trio.Lock()
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
            pending=self._lock.statistics().tasks_waiting,
            max_pending=0,
            transactions=database.transactions,
        )

    # --- plumbing -------------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` in a worker thread, holding the connection's lock.

        Waiting for the lock is cancellable (nothing happened yet); the
        thread, once started, is waited for even if the caller is cancelled.
        """
        async with self._lock:
            if self._database.closed:
                raise StoreClosed("the store closed before this call reached it")
            return await trio.to_thread.run_sync(fn, *args)

    async def _close(self) -> None:
        """Refuse new calls, let the ones already waiting finish, close the file."""
        self._closed = True
        with trio.CancelScope(shield=True):
            async with self._lock:
                await trio.to_thread.run_sync(self._database.close)

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
    require_trio("meerkat_actor.open_sqlite_store()")
    codec = check_session_codec(session_codec)
    location = _check_path(path)
    mode = _check_synchronous(synchronous)
    timeout = _check_busy_timeout(busy_timeout)
    database = await trio.to_thread.run_sync(Database.open, location, mode, timeout)
    store: SqliteStore = SqliteStore._create(database, codec, "sqlite:" + database.resolved)
    try:
        yield store
    finally:
        await store._close()
