"""Cancellation and actor death while a durable store is busy: every caller
gets an answer (SPEC §6: nobody hangs). Each test releases callers left
without a reply at the end, so a regression fails instead of hanging."""

import contextlib
import threading

import pytest
import trio
import trio._core._run as _trio_run

import meerkat_actor._actor as A
from meerkat_actor import open_store
from meerkat_actor._fs import FileIO


def _pin_scheduler(monkeypatch, coin):
    """Fix trio's batch-order coin (a private detail) so the race is hit;
    without it the test still runs, just less surely."""
    generator = getattr(_trio_run, "_r", None)
    if generator is not None:
        monkeypatch.setattr(generator, "random", lambda: coin)


def _track(monkeypatch):
    created = []
    orig = A._Reply.__init__

    def init(self):
        orig(self)
        created.append(self)

    monkeypatch.setattr(A._Reply, "__init__", init)
    return created


async def _release_stuck(created, gone):
    await gone.wait()
    for _ in range(50):
        await trio.lowlevel.checkpoint()
    stuck = [r for r in created if not r.done.is_set()]
    for r in stuck:
        r.set(RuntimeError("released by the test"))  # else the run never ends
    return len(stuck)


@pytest.mark.parametrize("coin", [0.1, 0.9])
def test_host_cancel_just_after_actor_submits(tmp_path, monkeypatch, coin):
    _pin_scheduler(monkeypatch, coin)
    created = _track(monkeypatch)
    result = {}

    async def main():
        cs = trio.CancelScope()
        ready, gone = trio.Event(), trio.Event()
        box = {}

        async def hold():
            with cs:
                async with open_store(str(tmp_path / "s")) as store:
                    box["s"] = store
                    ready.set()
                    await trio.sleep_forever()
            gone.set()

        async def caller():
            with contextlib.suppress(Exception):
                await box["s"].persist_auth_oauth_flow_snapshot(b"x")

        async def canceller():
            writer = box["s"]._actor.writer
            # Poll: cancel as soon as the group is handed over (or give up
            # waiting for that moment, and cancel anyway).
            for _ in range(10_000):
                if writer._pending:
                    break
                await trio.lowlevel.cancel_shielded_checkpoint()
            cs.cancel()

        async with trio.open_nursery() as n:
            n.start_soon(hold)
            await ready.wait()
            await trio.sleep(0.01)
            n.start_soon(canceller)
            n.start_soon(caller)
            result["stuck"] = await _release_stuck(created, gone)

    trio.run(main)

    assert result["stuck"] == 0


@pytest.mark.parametrize("coin", [0.1, 0.9])
def test_base_exception_in_updater_strands_batch(tmp_path, monkeypatch, coin):
    """SPEC: 'If the actor dies of an unexpected exception, every waiting and
    later caller gets Internal; nobody hangs.' With a BaseException (here
    SystemExit from an OAuth updater) the actor submits the batch, then
    re-raises; the nursery cancels the just-woken writer before it runs."""
    _pin_scheduler(monkeypatch, coin)
    created = _track(monkeypatch)
    result = {}

    async def main():
        ready, gone = trio.Event(), trio.Event()
        box = {}

        async def hold():
            try:
                async with open_store(str(tmp_path / "s")) as store:
                    box["s"] = store
                    ready.set()
                    await trio.sleep_forever()
            except BaseException as exc:
                result["store_exit"] = repr(exc)
            gone.set()

        def updater(old):
            raise SystemExit(3)

        async def caller(fn, *args):
            try:
                await fn(*args)
            except BaseException as exc:
                result.setdefault("caller_errors", []).append(repr(exc))

        async with trio.open_nursery() as n:
            n.start_soon(hold)
            await ready.wait()
            store = box["s"]
            # one batch: a good write (gets a record), then the dying updater
            n.start_soon(caller, store.persist_auth_oauth_flow_snapshot, b"ok")
            n.start_soon(caller, store.update_auth_oauth_flow_snapshot, updater)
            result["stuck"] = await _release_stuck(created, gone)

    trio.run(main)

    assert result["stuck"] == 0


BIG = 9 * 1024 * 1024


class SlowSync(FileIO):
    def __init__(self):
        self.armed = False
        self.gate = threading.Event()

    def sync(self, handle):
        if self.armed and handle.path.endswith(".log"):
            self.gate.wait(10)
        super().sync(handle)


def test_cancel_while_the_actor_waits_for_room(tmp_path, monkeypatch):
    """More than 16 MiB queued behind a slow fsync, the actor waiting in
    Writer.submit, then the store is cancelled: the batch in the actor's hands
    is answered too."""
    created = []
    orig = A._Reply.__init__

    def init(self):
        orig(self)
        created.append(self)

    monkeypatch.setattr(A._Reply, "__init__", init)
    io = SlowSync()
    stuck = []

    async def main():
        cs = trio.CancelScope()
        ready, gone = trio.Event(), trio.Event()
        box = {}

        async def hold():
            with cs:
                async with open_store(str(tmp_path / "s"), _io=io) as store:
                    box["s"] = store
                    ready.set()
                    await trio.sleep_forever()
            gone.set()

        async def write(i):
            with contextlib.suppress(Exception):
                await box["s"].persist_auth_oauth_flow_snapshot(bytes([i]) * BIG)

        async with trio.open_nursery() as n:
            n.start_soon(hold)
            await ready.wait()
            io.armed = True
            for i in range(4):  # one batch each: group 1 in flight, 2 and 3 queued, 4 blocked
                n.start_soon(write, i + 1)
                await trio.sleep(0.3)
            writer = box["s"]._actor.writer
            assert writer._pending, "the test needs groups queued behind the slow fsync"
            cs.cancel()
            io.gate.set()
            await gone.wait()
            for _ in range(50):
                await trio.lowlevel.checkpoint()
            for r in created:
                if not r.done.is_set():
                    stuck.append(r)
                    r.set(RuntimeError("released by the test"))  # else the run hangs forever

    trio.run(main)

    assert not stuck
