"""Small shared helpers with no semantics of their own."""

from __future__ import annotations

import asyncio
from abc import ABCMeta
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import trio

if TYPE_CHECKING:
    import outcome  # trio's own dependency

__all__ = ["NoPublicConstructor", "require_trio", "run_in_thread", "unwrap_single_exception"]

T = TypeVar("T")


class NoPublicConstructor(ABCMeta):
    """Metaclass for classes built only by this package (as trio does it).

    `Cls(...)` raises `TypeError`; the package builds instances with
    `Cls._create(...)`. An `ABCMeta`, so a base of such classes can declare
    the hooks its subclasses must provide with `abc.abstractmethod`.
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor"
            + (f"; {cls.__construct_hint__}" if hasattr(cls, "__construct_hint__") else "")
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Re-raise a group holding exactly one exception as that exception.

    For context managers whose nursery is an implementation detail: the
    caller's own exception comes out as itself, with its own cause and
    context, not wrapped in an `ExceptionGroup`.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        inner = group.exceptions[0]
        context, suppress = inner.__context__, inner.__suppress_context__
        try:
            raise inner
        finally:
            inner.__context__, inner.__suppress_context__ = context, suppress
            del inner, group


async def run_in_thread(fn: Callable[[], T], name: str = "meerkat_actor log append") -> T:
    """`await trio.to_thread.run_sync(fn, abandon_on_cancel=False)`, minus its
    thread limiter and its context copy: for the one call a durable store
    makes per group commit, where those cost as much as the hop itself.

    A checkpoint: raises `trio.Cancelled` if cancelled *before* `fn` starts
    (then `fn` never runs); once started, `fn` runs to the end and its result
    or exception (any `BaseException`) is this call's, a cancellation then
    being delivered at the caller's next checkpoint. `fn` runs in one of
    trio's cached worker threads (`trio.lowlevel.start_thread_soon`).
    """
    await trio.lowlevel.checkpoint_if_cancelled()
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[T]) -> None:
        # In the worker thread: hand the result to the waiting task.
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    def never(_: Any) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.FAILED

    trio.lowlevel.start_thread_soon(fn, deliver, name=name)
    result: T = await trio.lowlevel.wait_task_rescheduled(never)
    return result


def require_trio(what: str) -> None:
    """Raise a clear `RuntimeError` unless called from a trio task.

    `what` names the call (`"meerkat_actor.open_store()"`); the message says
    that an asyncio program uses `meerkat_actor.asyncio` instead (whose
    openers have the same names), rather than letting trio fail deep inside
    with an error about its run context.
    """
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        pass
    else:
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"{what} must be called from a trio task (inside trio.run); from an"
            " asyncio program use meerkat_actor.asyncio, which has the same openers"
        ) from None
    raise RuntimeError(
        f"{what} runs on trio, but it was called from asyncio: use meerkat_actor.asyncio"
        " instead (`from meerkat_actor import asyncio as ma_asyncio`; the same openers,"
        " arguments, methods and errors); see docs/asyncio.md"
    ) from None
