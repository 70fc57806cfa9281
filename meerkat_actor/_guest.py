"""Trio as a guest of an asyncio event loop: the engine of `meerkat_actor.asyncio`.

Rule 1: one trio guest run per asyncio loop (`TrioHost`), shared by every
store that loop opens, started by the first open and ended when the last one
closes. Trio allows one run per thread; the guest run lives on the loop's
own thread (`trio.lowlevel.start_guest_run`), so trio code and asyncio code
never run at the same time and share every object without locks.

Rule 2: asyncio code hands work to the guest run with
`TrioToken.run_sync_soon` (documented as callable from anywhere, and first
in, first out), and trio code answers by resolving an asyncio future, which
it may do directly: it runs on the loop's thread, inside one of the loop's
callbacks. One exception, for speed: a write's envelope is put on the
actor's channel with `send_nowait` straight from asyncio code when nothing
is queued ahead of it (`_Channel.submit`). That runs on the loop's thread
between two guest ticks, where trio's run state is at rest (the guest run is
suspended; its I/O thread, if waiting, touches only its poller), and
`send_nowait` needs no current task: at most it reschedules the actor, which
in guest mode wakes the guest run as `run_sync_soon` would. It saves a
scheduling round of trio per write (docs/asyncio.md has the figures).

Rule 3: every asyncio future handed to trio is resolved exactly once, on
every path: the call's result or exception, a withdrawal, the guest run's
end. An asyncio caller never waits for an answer that cannot come.

Rule 4: cancelling an asyncio caller keeps SPEC §4's guarantee. A call that
has not reached the store is withdrawn and never happens; one that has is
waited for (cancelling it again changes nothing) and then the caller gets
its `CancelledError`. So a cancelled call takes effect before any later call
of the same task, exactly as in trio, where the wait is cancel-shielded.

Theory of operation. Why guest mode (docs/asyncio.md has the figures): the
published state is an immutable value, so a read on an actor store needs no
trip to trio at all, in any design; a write needs one trip to the actor and
one answer back. In guest mode the answer costs nothing (trio resolves the
future on the loop's thread), and the trip there wakes trio's I/O thread
only when trio was idle. With trio in a thread of its own both directions
cross threads. `tools/asyncio_mechanisms.py` measured both against native
trio, and guest mode won at 1 and at 64 tasks.

A write to an actor store travels as the trio handle's own does: an
envelope on the actor's channel (`submit_envelope`). Its reply slot
resolves the caller's future. When the channel is full, envelopes wait in
order in an overflow queue that one pump task feeds to the channel, so
order is kept and a caller cancelled while queued is withdrawn. Everything
else (reads of SQLite and PostgreSQL stores, `checkpoint()`, `backup()`,
opening and closing) runs as a trio task in the host's nursery (`call`).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, final

import trio

from ._errors import Internal, StoreClosed
from ._mailbox import Envelope, Reply

__all__ = ["TrioHost", "acquire_host", "release_host"]

T = TypeVar("T")


def resolve(
    future: asyncio.Future[Any], value: Any = None, error: BaseException | None = None
) -> None:
    """Set `future` to `value`, or to raise `error`, unless it is already
    done (Rule 3)."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


async def wait_uncancellably(
    future: asyncio.Future[T], on_cancel: Callable[[], None] | None = None
) -> T:
    """Await `future`; if the caller is cancelled, call `on_cancel()` (if
    given) once, wait for `future` anyway, then raise the `CancelledError`
    (Rule 4)."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError as cancelled:
        if on_cancel is not None:
            on_cancel()
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError:
                continue  # cancelled again (anyio repeats): still wait
            except BaseException:
                break
        if not future.cancelled():
            future.exception()  # retrieved: the caller gets CancelledError instead
        raise cancelled


class _WithdrawnError(Exception):
    """The call was withdrawn before it reached the store (Rule 4)."""


@final
class _EnvelopeReply(Reply):
    """A reply slot that also resolves an asyncio future (Rule 2)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        super().__init__()
        self.future = future

    def set(self, error: BaseException | None = None) -> None:
        super().set(error)
        resolve(self.future, None, error)


@final
class _Channel:
    """The trio side of one actor store's channel, for asyncio callers:
    `send_nowait` in order, an overflow queue and its pump when full."""

    def __init__(self, host: TrioHost, send: trio.MemorySendChannel[Envelope]) -> None:
        self.host = host
        self.send = send
        self.overflow: deque[Envelope] = deque()
        # Envelopes handed to trio by `submit` and not yet enqueued: while
        # there are any, `submit` must not send past them.
        self.handoffs = 0
        self.pumping = False
        # The envelope the pump is sending (blocked in `send`: the channel is
        # full) and the scope that withdraws it.
        self.in_flight: tuple[Envelope, trio.CancelScope] | None = None

    def sent_now(self, envelope: Envelope) -> bool:
        """`send_nowait(envelope)`: True if it is done with (sent, or answered
        `StoreClosed`), False if the channel is full."""
        try:
            self.send.send_nowait(envelope)
        except trio.WouldBlock:
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            envelope.reply.set(StoreClosed("the store is closed"))
        return True

    def submit(self, envelope: Envelope, token: trio.lowlevel.TrioToken) -> None:
        """On the loop's thread, from asyncio code (between two guest ticks):
        send `envelope` at once if nothing is ahead of it, else hand it to
        trio in order (Rule 2's exception)."""
        if not self.overflow and not self.handoffs and self.sent_now(envelope):
            return
        self.handoffs += 1
        token.run_sync_soon(self.handoff, envelope)

    def handoff(self, envelope: Envelope) -> None:
        """In trio: an envelope `submit` could not send at once."""
        self.handoffs -= 1
        self.enqueue(envelope)

    def enqueue(self, envelope: Envelope) -> None:
        """In trio (a `run_sync_soon` callback): send `envelope`, or queue it."""
        if not self.overflow and self.sent_now(envelope):
            return
        self.overflow.append(envelope)
        if not self.pumping:
            try:
                self.host.nursery.start_soon(self.pump)
            except RuntimeError:  # the host is ending: nothing can reach the store
                while self.overflow:
                    self.overflow.popleft().reply.set(StoreClosed("the store is closed"))
            else:
                self.pumping = True

    def withdraw(self, envelope: Envelope) -> None:
        """In trio: drop `envelope` if it has not reached the channel yet."""
        if self.in_flight is not None and self.in_flight[0] is envelope:
            # The pump waits to send it: cancel that send, which then has
            # sent nothing (trio's `send` is all or nothing); the pump answers.
            self.in_flight[1].cancel()
            return
        try:
            self.overflow.remove(envelope)
        except ValueError:
            return  # sent already: its reply will come
        envelope.reply.set(_WithdrawnError())

    async def pump(self) -> None:
        try:
            while self.overflow:
                envelope = self.overflow.popleft()
                try:
                    with trio.CancelScope() as withdrawal:
                        self.in_flight = (envelope, withdrawal)
                        await self.send.send(envelope)
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    envelope.reply.set(StoreClosed("the store is closed"))
                except BaseException:
                    envelope.reply.set(StoreClosed("the store closed before this call reached it"))
                    raise
                else:
                    if withdrawal.cancelled_caught:
                        envelope.reply.set(_WithdrawnError())
                finally:
                    self.in_flight = None
        finally:
            self.pumping = False
            while self.overflow:
                self.overflow.popleft().reply.set(
                    StoreClosed("the store closed before this call reached it")
                )


@final
class TrioHost:
    """One trio guest run on one asyncio loop (Rule 1)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.users = 0
        self.token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._started: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self._pending: set[asyncio.Future[Any]] = set()
        self._channels: weakref.WeakKeyDictionary[trio.MemorySendChannel[Envelope], _Channel] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def nursery(self) -> trio.Nursery:
        assert self._nursery is not None
        return self._nursery

    async def start(self) -> None:
        try:
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=self.loop.call_soon,
                done_callback=self._finished,
                host_uses_signal_set_wakeup_fd=True,
                strict_exception_groups=True,
            )
        except RuntimeError as exc:
            resolve(self.done)  # no run to wait for: `stop()` returns at once
            raise RuntimeError(
                "meerkat_actor.asyncio cannot start trio on this thread: a trio run is"
                f" already active here ({exc}); from trio code, use meerkat_actor.open_store()"
            ) from exc
        # Even if cancelled: the guest run is live now, and a caller cancelled
        # here must end it (`acquire_host`), which needs its token; a run left
        # behind would make every later start on this thread fail.
        await wait_uncancellably(self._started)

    async def _main(self) -> None:
        self.token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._started.set_result(None)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _finished(self, result: Any) -> None:
        """The guest run ended (on the loop's thread; `result` is its
        `outcome.Outcome`): answer every caller (Rule 3)."""
        error: BaseException | None = getattr(result, "error", None)
        for future in list(self._pending):
            resolve(future, error=Internal(f"the trio guest run ended: {result!r}"))
        self._pending.clear()
        resolve(
            self._started,
            error=error or Internal("the trio guest run ended before it started"),
        )
        if error is not None:
            self.done.set_exception(error)
            self.done.exception()  # retrieved here; `stop()` re-raises it
        else:
            self.done.set_result(None)

    async def stop(self) -> None:
        """End the guest run (no store is open on it) and wait until it has."""
        if self.token is not None and not self.done.done():
            assert self._stop is not None
            stop = self._stop
            with contextlib.suppress(trio.RunFinishedError):
                self.token.run_sync_soon(stop.set)
        # Even if cancelled: a loop that closed under a live guest run would
        # strand its trio tasks (trio warns "got abandoned").
        await wait_uncancellably(self.done)

    # --- calls --------------------------------------------------------------------------

    def channel(self, send: trio.MemorySendChannel[Envelope]) -> _Channel:
        channel = self._channels.get(send)
        if channel is None:
            channel = self._channels[send] = _Channel(self, send)
        return channel

    async def submit_envelope(self, send: trio.MemorySendChannel[Envelope], command: Any) -> None:
        """Send `command` to an actor store's channel and wait for its reply;
        raise its error. Cancellation: Rule 4."""
        future: asyncio.Future[None] = self.loop.create_future()
        envelope = Envelope(command, _EnvelopeReply(future))
        channel = self.channel(send)
        token = self._token()
        channel.submit(envelope, token)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        await wait_uncancellably(future, lambda: token.run_sync_soon(channel.withdraw, envelope))

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` as a trio task in the guest run; return its
        result or raise its exception. Cancellation: the trio task is
        cancelled and waited for (Rule 4)."""
        future: asyncio.Future[T] = self.loop.create_future()
        task = _CallTask(future, fn, args)
        token = self._token()
        self.start_task(task.run, task.fail)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return await wait_uncancellably(future, lambda: token.run_sync_soon(task.cancel))

    def start_task(
        self, run: Callable[[], Awaitable[None]], fail: Callable[[BaseException], None]
    ) -> None:
        """Start `run()` as a trio task in the host's nursery, soon; if it
        cannot start (the host is ending), call `fail(error)` instead."""
        self._token().run_sync_soon(self._start_task, run, fail)

    def _start_task(
        self, run: Callable[[], Awaitable[None]], fail: Callable[[BaseException], None]
    ) -> None:
        # A `run_sync_soon` callback: it must not raise (trio would end the run).
        try:
            self.nursery.start_soon(run)
        except RuntimeError as exc:
            fail(StoreClosed(f"the store is closed ({exc})"))

    def _token(self) -> trio.lowlevel.TrioToken:
        if self.token is None or self.done.done():
            raise StoreClosed("the store is closed (its trio guest run has ended)")
        return self.token


@final
class _CallTask:
    __slots__ = ("args", "cancelled", "fn", "future", "scope")

    def __init__(
        self, future: asyncio.Future[Any], fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.scope: trio.CancelScope | None = None
        self.cancelled = False

    def fail(self, error: BaseException) -> None:
        resolve(self.future, error=error)

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()

    async def run(self) -> None:
        try:
            with trio.CancelScope() as scope:
                self.scope = scope
                if self.cancelled:
                    scope.cancel()
                value = await self.fn(*self.args)
                resolve(self.future, value)
                return
            resolve(self.future, error=asyncio.CancelledError())
        except BaseException as exc:
            resolve(self.future, error=exc)
            if not isinstance(exc, Exception):
                raise


_hosts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TrioHost] = weakref.WeakKeyDictionary()


async def acquire_host() -> TrioHost:
    """The running loop's trio host, started if need be; one more user."""
    loop = asyncio.get_running_loop()
    while True:
        host = _hosts.get(loop)
        if host is None:
            host = _hosts[loop] = TrioHost(loop)
            host.users += 1
            try:
                await host.start()
            except BaseException:
                # Cancelled (or failed) while starting: end the guest run
                # unless another opener has joined it meanwhile.
                await release_host(host)
                raise
            return host
        if host.done.done() or host.users == 0:
            # Ending (its last store closed): wait, then start a new one. How
            # that run ended is not this opener's business: `asyncio.wait`
            # does not raise it.
            await asyncio.wait([host.done])
            if _hosts.get(loop) is host:
                del _hosts[loop]
            continue
        await asyncio.wait([host._started])
        if host.done.done() or host.users == 0 or host._started.exception() is not None:
            continue  # its starter gave up (cancelled) while we waited
        host.users += 1
        return host


async def release_host(host: TrioHost) -> None:
    """One user fewer; the last one ends the guest run and waits for it."""
    host.users -= 1
    if host.users == 0:
        try:
            await host.stop()
        finally:
            if _hosts.get(host.loop) is host and host.done.done():
                del _hosts[host.loop]
