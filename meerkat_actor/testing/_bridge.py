"""A bridge from synchronous code (Hypothesis rules) to a store living in trio
or in asyncio.

Rule 1: one bridge is one event loop run (`trio.run`, or `asyncio.run` for
`backend="asyncio"`) in one helper thread, holding one open store.
Synchronous callers hand it async functions with `call()`, which blocks
until the function has run inside that run (`trio.from_thread.run`,
`asyncio.run_coroutine_threadsafe`) and returns its result or raises its
exception. The code that runs there is written with anyio, so it is the
same on both.

Rule 2: the bridge always ends its thread. `close()` exits the store's
`async with` block cleanly; `abandon()` cancels the trio run instead, so the
store's context exits by cancellation (a durable backend can use it to model a
process that stops without a clean close). Either way the thread is joined,
and an exception that escaped the trio run is re-raised by the caller.

Why a thread: Hypothesis calls rules synchronously, and a stateful machine
keeps its store open across rules. Running trio in a helper thread, driven
with `trio.from_thread`, works with current trio and Hypothesis without
depending on either's internals; the cost is one thread start per example.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, suppress
from typing import Any, Generic, Literal, TypeVar

import anyio
import trio

__all__ = ["TrioBridge"]

S = TypeVar("S")
R = TypeVar("R")

_START_TIMEOUT = 60.0


class TrioBridge(Generic[S]):
    """Open `open_resource()` inside a trio run in a helper thread.

    Args:
        open_resource: a zero-argument callable returning an async context
            manager (e.g. `lambda: meerkat_actor.open_store()`); the bridge
            enters it inside the run and exposes its value as `.resource`.
        backend: `"trio"` (the default) or `"asyncio"`: the event loop the
            helper thread runs (`meerkat_actor.asyncio`'s stores need
            `"asyncio"`).

    Raises:
        Whatever entering the context raised, re-raised in the constructor.
    """

    timeout: float = 300.0
    """Seconds a `call` may take before it fails (class-wide; set it on an
    instance or a subclass for a slower store)."""

    def __init__(
        self,
        open_resource: Callable[[], AbstractAsyncContextManager[S]],
        backend: Literal["trio", "asyncio"] = "trio",
    ) -> None:
        if backend not in ("trio", "asyncio"):
            raise ValueError(f"backend must be 'trio' or 'asyncio', got {backend!r}")
        self.backend = backend
        self._open_resource = open_resource
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: anyio.Event | None = None
        self._cancel_scope: anyio.CancelScope | None = None
        self._resource: S | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._thread_main, name="trio-bridge", daemon=True)
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT):
            raise RuntimeError("the trio bridge did not start in time")
        if not self._thread.is_alive() or self._resource is None:
            self._thread.join()
            self._raise_error()

    @property
    def resource(self) -> S:
        """The value the context manager yielded (the open store)."""
        if self._resource is None:
            raise RuntimeError("the bridge is not open")
        return self._resource

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _thread_main(self) -> None:
        try:
            if self.backend == "trio":
                trio.run(self._main)
            else:
                asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        if self.backend == "trio":
            self._token = trio.lowlevel.current_trio_token()
        else:
            self._loop = asyncio.get_running_loop()
        self._stop = anyio.Event()
        with anyio.CancelScope() as scope:
            self._cancel_scope = scope
            async with self._open_resource() as resource:
                self._resource = resource
                self._ready.set()
                await self._stop.wait()

    def call(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """Run `await fn(*args)` in the bridge's trio run; return or raise its outcome.

        Raises:
            AssertionError: the call took longer than `timeout` seconds (a
                store that deadlocks fails the test instead of hanging it).
        """
        if not self.running or (self._token is None and self._loop is None):
            raise RuntimeError("the bridge is not running")
        if self._loop is not None:
            future = asyncio.run_coroutine_threadsafe(self._within_timeout(fn, args), self._loop)
            return future.result()
        return trio.from_thread.run(self._within_timeout, fn, args, trio_token=self._token)

    async def _within_timeout(self, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...]) -> R:
        with anyio.move_on_after(self.timeout):
            return await fn(*args)
        name = getattr(fn, "__qualname__", None) or repr(fn)
        raise AssertionError(
            f"{name} did not return within {self.timeout:g} s: the store hangs (a deadlock?)"
        )

    def close(self) -> None:
        """Exit the context cleanly and end the thread."""
        self._finish(abandon=False)

    def abandon(self) -> None:
        """Cancel the trio run (the context exits by cancellation) and end the thread."""
        self._finish(abandon=True)

    def _finish(self, *, abandon: bool) -> None:
        if self.running and (self._token is not None or self._loop is not None):
            scope, stop = self._cancel_scope, self._stop
            assert scope is not None
            assert stop is not None
            action = scope.cancel if abandon else stop.set
            if self._loop is not None:
                with suppress(RuntimeError):  # the loop has closed already
                    self._loop.call_soon_threadsafe(action)
            else:
                with suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(action, trio_token=self._token)
        self._thread.join()
        self._resource = None
        self._raise_error()

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            raise error
