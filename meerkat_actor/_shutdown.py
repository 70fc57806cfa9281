"""Graceful shutdown on SIGINT and SIGTERM, for trio and asyncio hosts.

Rule 1: a signal cancels the host's work, never the store. The helper's
block runs inside the store's `async with`; a signal cancels the block, which
then exits normally, so the store's block exits normally too and the store
closes cleanly: the commands already sent are applied and answered, and a
durable store takes its final checkpoint (docs/operations.md#shutdown).

Rule 2: the signals are the helper's only while its block runs. Before and
after, whatever handled them before does (trio's KeyboardInterrupt, asyncio's
runner, the default); a signal that arrives again while the block winds down
is delivered to that handler as the block exits, so a second Ctrl-C or
SIGTERM stops a shutdown that takes too long, the way it stops a process
that has no helper (nothing acknowledged is lost: the log holds it).

Rule 3: no thread, no polling. trio: `trio.open_signal_receiver` and a
nursery whose cancel scope is the block's (as trio's docs build it); asyncio:
`loop.add_signal_handler` and `Task.cancel`, undone with `Task.uncancel` as
`asyncio.timeout` does. Both only in the main thread, where Python runs
signal handlers.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import trio

from ._util import unwrap_single_exception

__all__ = ["DEFAULT_SIGNALS", "Shutdown", "asyncio_shutdown_on_signals", "shutdown_on_signals"]

#: What `shutdown_on_signals()` handles by default: Ctrl-C and `kill`'s default.
DEFAULT_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


@dataclass
class Shutdown:
    """What `shutdown_on_signals()` yields: whether, and by which signal,
    the block was stopped.

    Attributes:
        signal: the signal that stopped the block (`None`: none came, or
            not yet).
    """

    signal: signal.Signals | None = None

    @property
    def requested(self) -> bool:
        """True once a signal stopped (or is stopping) the block."""
        return self.signal is not None


def _signals(signals: tuple[int, ...]) -> tuple[signal.Signals, ...]:
    chosen = signals or DEFAULT_SIGNALS
    for number in chosen:
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"signals must be signal numbers, got {number!r}")
    return tuple(signal.Signals(number) for number in chosen)


@asynccontextmanager
async def shutdown_on_signals(*signals: int) -> AsyncIterator[Shutdown]:
    """Run the block until it ends or one of `signals` (default SIGINT and
    SIGTERM) arrives; a signal cancels the block, which then exits normally.

    Use it inside the store's block, around the host's work, so that the
    store closes cleanly (with a durable store's final checkpoint)::

        async with ma.open_store("state") as store:
            async with ma.shutdown_on_signals() as shutdown:
                await serve(store)
        if shutdown.signal is not None:
            log.info("stopped by %s", shutdown.signal.name)

    Args:
        signals: the signal numbers to stop on (default SIGINT, SIGTERM).

    Yields:
        A `Shutdown`, whose `signal` says which signal stopped the block.

    Cancellation: the block is cancelled like any trio scope (a store call
    in flight completes or never started; SPEC §4). While the block winds
    down, the signals stay with the helper; one that arrives again is
    delivered to the previous handler as the block exits (Rule 2). An
    exception from the block comes out as itself.

    Raises:
        RuntimeError: not called from the main thread (trio's signal rule).
        TypeError, ValueError: `signals` holds something that is not a
            signal number.
    """
    wanted = _signals(signals)
    shutdown = Shutdown()
    with trio.open_signal_receiver(*wanted) as receiver, unwrap_single_exception():
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for number in receiver:
                    shutdown.signal = signal.Signals(number)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(watch)
            try:
                yield shutdown
            finally:
                # The block ended (or was cancelled): the watcher goes too.
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def asyncio_shutdown_on_signals(*signals: int) -> AsyncIterator[Shutdown]:
    """`shutdown_on_signals()` for asyncio programs (with the stores of
    `meerkat_actor.asyncio`): a signal cancels the task running the block,
    and the block exits normally, its `CancelledError` absorbed::

        async with ma_asyncio.open_store("state") as store:
            async with asyncio_shutdown_on_signals() as shutdown:
                await serve(store)

    Works under `asyncio.run` (whose own Ctrl-C handler is restored when the
    block exits) and on loops that support `loop.add_signal_handler` (not
    Windows' proactor loop).

    Args:
        signals: the signal numbers to stop on (default SIGINT, SIGTERM).

    Raises:
        RuntimeError: not called from a task of a running loop in the main
            thread.
        NotImplementedError: the loop cannot handle signals.
    """
    wanted = _signals(signals)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("asyncio_shutdown_on_signals() must be used from an asyncio task")
    shutdown = Shutdown()
    cancelling = task.cancelling()
    requested = False
    again: list[signal.Signals] = []

    def on_signal(number: signal.Signals) -> None:
        nonlocal requested
        if requested:
            again.append(number)  # Rule 2: delivered to the old handler at exit
            return
        shutdown.signal = number
        requested = True
        task.cancel(f"stopped by {number.name}")

    previous: dict[signal.Signals, Any] = {number: signal.getsignal(number) for number in wanted}
    # A handler the loop itself holds (`loop.add_signal_handler` before the
    # block): add_signal_handler replaces it and remove_signal_handler drops
    # it, so it is put back with the loop, not with signal.signal. asyncio
    # has no public getter: its selector loops keep them in _signal_handlers.
    held = getattr(loop, "_signal_handlers", None)
    looped: dict[signal.Signals, tuple[Any, tuple[Any, ...]]] = {}
    if isinstance(held, dict):
        for number in wanted:
            handle = held.get(number)
            callback = getattr(handle, "_callback", None)
            if isinstance(handle, asyncio.Handle) and callable(callback):
                looped[number] = (callback, tuple(getattr(handle, "_args", None) or ()))
    installed: list[signal.Signals] = []
    try:
        for number in wanted:
            loop.add_signal_handler(number, on_signal, number)
            installed.append(number)
        try:
            yield shutdown
        except asyncio.CancelledError:
            if requested:
                # Ours is taken back once, here: the finally must not again.
                requested = False
                if task.uncancel() <= cancelling:
                    return  # ours: the block exits normally
            raise
        finally:
            if requested:
                # The block swallowed our cancellation: take it back.
                task.uncancel()
    finally:
        for number in installed:
            loop.remove_signal_handler(number)
            if number in looped:
                callback, args = looped[number]
                loop.add_signal_handler(number, callback, *args)
                continue
            # remove_signal_handler leaves SIG_DFL (or Python's Ctrl-C
            # handler); put back what was there, asyncio.run's own included.
            if previous[number] is not None:
                signal.signal(number, previous[number])
        for number in again:
            signal.raise_signal(number)
