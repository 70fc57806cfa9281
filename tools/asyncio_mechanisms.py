"""How should asyncio code reach a trio store? Two mechanisms, measured.

    python tools/asyncio_mechanisms.py memory|durable [native] [thread] [guest-token] [guest]

The question behind `meerkat_actor.asyncio` (docs/asyncio.md, "Why guest
mode"). Each mechanism delivers a write's envelope to the actor store's
channel and gets the reply back to an asyncio future; only the transport
differs:

- `native`: no asyncio at all, the trio store's own `atomic_apply` in
  `trio.run` (the peer);
- `thread`: trio runs in a thread of its own; asyncio hands the envelope
  over with `TrioToken.run_sync_soon` and the reply comes back with
  `loop.call_soon_threadsafe` (both directions cross threads);
- `guest-token`: trio runs as a guest of the asyncio loop
  (`trio.lowlevel.start_guest_run`) on the loop's thread; the envelope goes
  with `run_sync_soon`, the reply resolves the future directly;
- `guest`: the same, but the envelope goes onto the channel with
  `send_nowait` straight from asyncio code (what `meerkat_actor.asyncio`
  does when nothing is queued ahead, `_guest._Channel.submit`).

Prints, per mechanism, the p50 latency of 1,500 writes from 1 task and the
commits per second of 6,000 writes from 64 tasks (bench writes with ~4 KiB
sessions). Reads are not measured: in either design a read of an actor
store is answered from its published state on the caller's thread.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import trio

import meerkat_actor as ma
from meerkat_actor import _core
from meerkat_actor._bench._payloads import Session, Write, sessions, write_pool
from meerkat_actor._mailbox import Envelope, Reply

ONE_TASK = 1500
MANY_TASKS = 6000

Post = Callable[["asyncio.Future[None]", "BaseException | None"], None]


class _FutureReply(Reply):
    __slots__ = ("future", "post")

    def __init__(self, future: asyncio.Future[None], post: Post) -> None:
        super().__init__()
        self.future = future
        self.post = post

    def set(self, error: BaseException | None = None) -> None:
        super().set(error)
        self.post(self.future, error)


def _resolve(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _work(tasks: int) -> tuple[list[Write], list[Session]]:
    count = ONE_TASK if tasks == 1 else MANY_TASKS
    return write_pool(f"mechanisms-{tasks}", count), sessions(f"mechanisms-{tasks}", tasks, 4096)


def _opener(kind: str) -> AbstractAsyncContextManager[ma.ActorStore]:
    if kind == "durable":
        return ma.open_store(tempfile.mkdtemp(prefix="mechanisms-") + "/store")
    return ma.open_store()


def _command(session: Session, write: Write) -> _core.AtomicApply:
    return _core.AtomicApply(
        session.runtime_id, session.delta, write.receipt, write.states, session.session_id
    )


async def _asyncio_rows(write: Callable[[_core.AtomicApply], Any]) -> list[tuple[float, float]]:
    rows = []
    for tasks in (1, 64):
        pool, runtimes = _work(tasks)
        writes = iter(pool)
        latencies: list[float] = []

        async def task(session: Session, writes: Iterator[Write], latencies: list[float]) -> None:
            for item in writes:
                start = time.perf_counter()
                await write(_command(session, item))
                latencies.append(time.perf_counter() - start)

        start = time.perf_counter()
        await asyncio.gather(*(task(session, writes, latencies) for session in runtimes))
        rows.append((len(pool) / (time.perf_counter() - start), statistics.median(latencies)))
    return rows


def native(kind: str) -> list[tuple[float, float]]:
    async def main() -> list[tuple[float, float]]:
        rows = []
        for tasks in (1, 64):
            pool, runtimes = _work(tasks)
            writes = iter(pool)
            latencies: list[float] = []
            async with _opener(kind) as store:

                async def task(
                    session: Session, writes: Iterator[Write], latencies: list[float]
                ) -> None:
                    for item in writes:
                        start = time.perf_counter()
                        await store.atomic_apply(
                            session.runtime_id,
                            session.delta,
                            item.receipt,
                            item.states,
                            session.session_id,
                        )
                        latencies.append(time.perf_counter() - start)

                start = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for session in runtimes:
                        nursery.start_soon(task, session, writes, latencies)
                rows.append(
                    (len(pool) / (time.perf_counter() - start), statistics.median(latencies))
                )
        return rows

    return trio.run(main)


def thread(kind: str) -> list[tuple[float, float]]:
    async def main() -> list[tuple[float, float]]:
        loop = asyncio.get_running_loop()
        ready = threading.Event()
        box: dict[str, Any] = {}

        async def trio_main() -> None:
            async with _opener(kind) as store:
                box["store"], box["stop"] = store, trio.Event()
                box["token"] = trio.lowlevel.current_trio_token()
                ready.set()
                await box["stop"].wait()

        runner = threading.Thread(target=trio.run, args=(trio_main,))
        runner.start()
        await asyncio.to_thread(ready.wait)
        send, token = box["store"]._send, box["token"]

        def post(future: asyncio.Future[None], error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_resolve, future, error)

        async def write(command: _core.AtomicApply) -> None:
            future = loop.create_future()
            token.run_sync_soon(send.send_nowait, Envelope(command, _FutureReply(future, post)))
            await future

        try:
            return await _asyncio_rows(write)
        finally:
            token.run_sync_soon(box["stop"].set)
            await asyncio.to_thread(runner.join)

    return asyncio.run(main())


def guest(kind: str, *, direct: bool = True) -> list[tuple[float, float]]:
    async def main() -> list[tuple[float, float]]:
        loop = asyncio.get_running_loop()
        box: dict[str, Any] = {}
        ready: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[None] = loop.create_future()

        async def trio_main() -> None:
            async with _opener(kind) as store:
                box["store"], box["stop"] = store, trio.Event()
                box["token"] = trio.lowlevel.current_trio_token()
                ready.set_result(None)
                await box["stop"].wait()

        trio.lowlevel.start_guest_run(
            trio_main,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            run_sync_soon_not_threadsafe=loop.call_soon,
            done_callback=lambda _: done.set_result(None),
            host_uses_signal_set_wakeup_fd=True,
        )
        await ready
        send, token = box["store"]._send, box["token"]

        async def write(command: _core.AtomicApply) -> None:
            future = loop.create_future()
            envelope = Envelope(command, _FutureReply(future, _resolve))
            if direct:
                send.send_nowait(envelope)
            else:
                token.run_sync_soon(send.send_nowait, envelope)
            await future

        try:
            return await _asyncio_rows(write)
        finally:
            token.run_sync_soon(box["stop"].set)
            await done

    return asyncio.run(main())


def guest_token(kind: str) -> list[tuple[float, float]]:
    return guest(kind, direct=False)


if __name__ == "__main__":
    store_kind = sys.argv[1]
    mechanisms = {
        "native": native,
        "thread": thread,
        "guest-token": guest_token,
        "guest": guest,
    }
    for name in sys.argv[2:] or list(mechanisms):
        (many, _), (one, p50) = reversed(mechanisms[name](store_kind))
        print(
            f"{store_kind:8} {name:11} 1 task: p50 {p50 * 1e6:6.0f} us ({one:5.0f} commits/s)"
            f" | 64 tasks: {many:5.0f} commits/s",
            flush=True,
        )
