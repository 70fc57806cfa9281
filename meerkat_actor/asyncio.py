"""The stores for asyncio programs: the same openers, methods and errors.

    import asyncio
    from meerkat_actor import asyncio as ma_asyncio

    async def main() -> None:
        async with ma_asyncio.open_store("state-dir") as store:
            await store.persist_input_state(runtime_id, state)

    asyncio.run(main())

Rule 1: a handle here is a `StoreFront` like every other store, so the
contract's methods, their argument checks, docstrings and errors are the
same code as the trio handles'. Only the two plumbing methods differ: a
write goes to the store inside a trio guest run on this loop (`_guest`), a
read of an actor store is answered on the spot from its published state (an
immutable value; no trip to trio), a read of a SQLite or PostgreSQL store
runs as a trio task.

Rule 2: the openers take exactly the arguments of their trio namesakes
(`meerkat_actor.open_store`, `open_sqlite_store`, `open_postgres_store`) and
open the trio store inside the guest run; opening and closing behave the
same (a clean exit closes cleanly, with a durable store's final checkpoint;
an exit by an exception or a cancellation answers the calls still queued
with `StoreClosed`).

Rule 3: cancellation keeps SPEC §4's guarantee (`_guest`, Rule 4): a
cancelled call either never reached the store or takes effect before the
caller's `CancelledError`, so before any later call of that task.

A handle belongs to the loop that opened it: use it from that loop's tasks
(any number of them), not from another thread or loop. docs/asyncio.md says
how it works and what it costs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar, final

import trio

from . import _actor, _postgres, _sqlite
from ._actor import DEFAULT_CHECKPOINT_BYTES, DEFAULT_MAX_BATCH, DEFAULT_MAX_PENDING
from ._core import Command, Query
from ._durable import DEFAULT_MAX_RECORD
from ._errors import RuntimeStoreError, StoreClosed
from ._front import StoreFront, StoreStatistics
from ._guest import TrioHost, acquire_host, release_host, resolve, wait_uncancellably
from ._session_codec import SessionCodec
from ._shutdown import asyncio_shutdown_on_signals as shutdown_on_signals
from ._sqlite_db import DEFAULT_BUSY_TIMEOUT

__all__ = [
    "AsyncioActorStore",
    "AsyncioStore",
    "open_postgres_store",
    "open_sqlite_store",
    "open_store",
    "shutdown_on_signals",
]

T = TypeVar("T")
S = TypeVar("S", bound=StoreFront)


class AsyncioStore(StoreFront):
    """A handle for asyncio code on a SQLite or PostgreSQL store (and the base
    of `AsyncioActorStore`); made only by this module's openers.

    Implements `RuntimeStore` exactly as the trio handles do (the methods are
    documented once, on every store) and `statistics()`. Safe to share
    between any number of asyncio tasks of the loop that opened it.
    """

    __construct_hint__ = (
        "use meerkat_actor.asyncio.open_store(), open_sqlite_store() or open_postgres_store()"
    )

    def __init__(self, inner: StoreFront, host: TrioHost) -> None:
        self._inner = inner
        self._host = host
        self._authority = inner._authority
        self._closed = False

    # --- the front's plumbing, for asyncio (Rule 1) ----------------------------------------

    def _refusal(self) -> RuntimeStoreError | None:
        if self._closed:
            return StoreClosed("the store is closed (its `async with` block has exited)")
        return self._inner._refusal()

    async def _write(self, command: Command) -> None:
        self._check_usable()
        await self._submit(command)

    async def _read(self, query: Query[T]) -> T:
        self._check_usable()
        # A scheduling point, as every call of the trio handles is: a task
        # that only reads still lets the loop (and the store) run, and a
        # cancelled one gets its CancelledError here.
        await asyncio.sleep(0)
        self._check_usable()
        return await self._answer(query)

    def _check_usable(self) -> None:
        """Raise why the handle cannot take a call now (closed, failed, ...),
        or that it is called from a loop that is not its own."""
        error = self._refusal()
        if error is not None:
            raise error
        if asyncio.get_running_loop() is not self._host.loop:
            raise RuntimeError(
                "this store handle belongs to another asyncio event loop (the one that"
                " opened it); open a store in each loop (docs/asyncio.md, Rules and limits)"
            )

    async def _submit(self, command: Command) -> None:
        await self._host.call(self._inner._write, command)

    async def _answer(self, query: Query[T]) -> T:
        return await self._host.call(self._inner._read, query)

    def statistics(self) -> StoreStatistics:
        return self._inner.statistics()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<meerkat_actor.asyncio handle ({state}) on {self._inner!r}>"


@final
class AsyncioActorStore(AsyncioStore):
    """A handle for asyncio code on an actor store, in memory or durable; made
    only by `meerkat_actor.asyncio.open_store()`.

    Implements `RuntimeStore` and `checkpoint()`, `backup()` and
    `statistics()`, as `meerkat_actor.ActorStore` does. Reads are answered
    on the spot from the published state; writes go to the storage actor.
    """

    __construct_hint__ = "use meerkat_actor.asyncio.open_store()"

    _inner: _actor.ActorStore

    async def _submit(self, command: Command) -> None:
        await self._host.submit_envelope(self._inner._send, command)

    async def _answer(self, query: Query[T]) -> T:
        return query.answer(self._inner._actor.published)

    async def checkpoint(self) -> None:
        self._check_usable()
        await self._host.call(self._inner.checkpoint)

    async def backup(self, path: str | os.PathLike[str]) -> int:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be str or os.PathLike, got {type(path).__name__}")
        self._check_usable()
        return await self._host.call(self._inner.backup, path)

    checkpoint.__doc__ = _actor.ActorStore.checkpoint.__doc__
    backup.__doc__ = _actor.ActorStore.backup.__doc__


# --- opening -----------------------------------------------------------------------------


@final
class _Opening(Generic[S]):
    """One trio store held open by a trio task of the host (Rule 2)."""

    def __init__(
        self, host: TrioHost, opener: Callable[[], AbstractAsyncContextManager[S]]
    ) -> None:
        self.host = host
        self.opener = opener
        self.ready: asyncio.Future[S] = host.loop.create_future()
        self.closed: asyncio.Future[None] = host.loop.create_future()
        self.scope: trio.CancelScope | None = None
        self.stop: trio.Event | None = None
        self.abort_requested = False

    async def run(self) -> None:
        """The trio task: open, hand the store over, wait, close."""
        try:
            with trio.CancelScope() as scope:
                self.scope = scope
                self.stop = trio.Event()
                if self.abort_requested:
                    scope.cancel()
                async with self.opener() as store:
                    resolve(self.ready, store)
                    await self.stop.wait()
        except BaseException as exc:
            self.fail(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            resolve(self.ready, error=asyncio.CancelledError())
            resolve(self.closed)

    def fail(self, error: BaseException) -> None:
        if self.ready.done():
            resolve(self.closed, error=error)
        else:
            resolve(self.ready, error=error)
            resolve(self.closed)

    def abort(self) -> None:
        """In trio: exit the store's block by cancellation."""
        self.abort_requested = True
        if self.scope is not None:
            self.scope.cancel()

    def finish(self) -> None:
        """In trio: exit the store's block cleanly."""
        if self.stop is not None:
            self.stop.set()
        else:
            self.abort()

    async def open(self) -> S:
        token = self.host.token
        assert token is not None
        self.host.start_task(self.run, self.fail)
        try:
            return await wait_uncancellably(self.ready, lambda: token.run_sync_soon(self.abort))
        except asyncio.CancelledError:
            await wait_uncancellably(self.closed)
            raise

    async def close(self, *, clean: bool) -> None:
        token = self.host.token
        assert token is not None
        token.run_sync_soon(self.finish if clean else self.abort)
        await wait_uncancellably(self.closed, lambda: token.run_sync_soon(self.abort))


@asynccontextmanager
async def _open(
    opener: Callable[[], AbstractAsyncContextManager[S]],
    wrap: Callable[[S, TrioHost], AsyncioStore],
) -> AsyncIterator[Any]:
    host = await acquire_host()
    try:
        opening = _Opening(host, opener)
        store = wrap(await opening.open(), host)
        try:
            yield store
        except BaseException:
            store._closed = True
            await opening.close(clean=False)
            raise
        store._closed = True
        await opening.close(clean=True)
    finally:
        await release_host(host)


def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    session_codec: SessionCodec | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_batch: int = DEFAULT_MAX_BATCH,
    checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD,
) -> AbstractAsyncContextManager[AsyncioActorStore]:
    return _open(
        lambda: _actor.open_store(
            path,
            session_codec=session_codec,
            max_pending=max_pending,
            max_batch=max_batch,
            checkpoint_bytes=checkpoint_bytes,
            max_record_bytes=max_record_bytes,
        ),
        AsyncioActorStore._create,
    )


def open_sqlite_store(
    path: str | os.PathLike[str],
    *,
    session_codec: SessionCodec | None = None,
    synchronous: str = "FULL",
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
) -> AbstractAsyncContextManager[AsyncioStore]:
    return _open(
        lambda: _sqlite.open_sqlite_store(
            path, session_codec=session_codec, synchronous=synchronous, busy_timeout=busy_timeout
        ),
        AsyncioStore._create,
    )


def open_postgres_store(
    dsn_or_pool: object,
    *,
    schema: str = "meerkat",
    session_codec: SessionCodec | None = None,
    synchronous_commit: str = "on",
    lock_timeout: float = 5.0,
    connect_timeout: float = 10.0,
    max_connections: int = 4,
    migrate: bool = False,
) -> AbstractAsyncContextManager[AsyncioStore]:
    return _open(
        lambda: _postgres.open_postgres_store(
            dsn_or_pool,
            schema=schema,
            session_codec=session_codec,
            synchronous_commit=synchronous_commit,
            lock_timeout=lock_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            migrate=migrate,
        ),
        AsyncioStore._create,
    )


def _same_doc(asyncio_fn: Callable[..., Any], trio_fn: Callable[..., Any], name: str) -> None:
    asyncio_fn.__doc__ = (
        f"`meerkat_actor.{name}` for asyncio programs: the same arguments, the same"
        " `async with` behaviour, a handle with the same methods and errors.\n\n"
        + (trio_fn.__doc__ or "")
    )


_same_doc(open_store, _actor.open_store, "open_store")
_same_doc(open_sqlite_store, _sqlite.open_sqlite_store, "open_sqlite_store")
_same_doc(open_postgres_store, _postgres.open_postgres_store, "open_postgres_store")
