"""Cancellation and actor death while a durable store is busy: every caller
gets an answer (SPEC §6: nobody hangs). Each test releases callers left
without a reply at the end, so a regression fails instead of hanging.

Each test first asserts that its run reached the state the race needs (a
test that cannot reach it fails instead of passing without testing
anything), then the exact outcome of every call: which errors are
acceptable, and that a write answered as failed left nothing behind."""

import random
import threading

import pytest
import trio
import trio._core._run as _trio_run

import meerkat_actor._actor as A
from meerkat_actor import Internal, StoreClosed, open_store
from meerkat_actor._fs import FileIO


def _pin_scheduler(monkeypatch, coin):
    """Make trio reverse every batch of runnable tasks (`coin` < 0.5) or none,
    so that a run takes the same path every time.

    Both knobs are private to trio: the plain scheduler's coin
    (`_r.random()`), and `_ALLOW_DETERMINISTIC_SCHEDULING`, which pytest-trio
    turns on when Hypothesis is installed (trio then shuffles each batch
    with `_r` instead of tossing the coin). The test fails here, rather than
    running unpinned, if either is gone or if the two coins do not give two
    different orders of the same two tasks."""
    generator = getattr(_trio_run, "_r", None)
    if not isinstance(generator, random.Random) or not hasattr(
        _trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING"
    ):
        pytest.fail("trio._core._run._r or _ALLOW_DETERMINISTIC_SCHEDULING is gone: cannot pin")
    monkeypatch.setattr(_trio_run, "_ALLOW_DETERMINISTIC_SCHEDULING", False)
    orders = []
    for side in (1 - coin, coin):
        monkeypatch.setattr(generator, "random", lambda side=side: side)
        orders.append(trio.run(_two_tasks))
    if orders[0] == orders[1]:
        pytest.fail(f"trio's scheduler ignores the pinned coin: {orders}")


async def _two_tasks():
    """The order in which two tasks started together run."""
    seen = []

    async def task(name):
        seen.append(name)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task, "a")
        nursery.start_soon(task, "b")
    return seen


def _track(monkeypatch):
    created = []
    orig = A.Reply.__init__

    def init(self):
        orig(self)
        created.append(self)

    monkeypatch.setattr(A.Reply, "__init__", init)
    return created


async def _release_stuck(created, gone):
    await gone.wait()
    for _ in range(50):
        await trio.lowlevel.checkpoint()
    stuck = [r for r in created if not r.done.is_set()]
    for r in stuck:
        r.set(RuntimeError("released by the test"))  # else the run never ends
    return len(stuck)


async def _call(outcomes, key, fn, *args):
    """Run a store call; record `None` (it returned) or the exception it raised."""
    try:
        await fn(*args)
    except BaseException as exc:
        outcomes[key] = exc
    else:
        outcomes[key] = None


async def _durable_oauth(path):
    """What a reopened store holds as the OAuth snapshot."""
    async with open_store(str(path)) as store:
        return await store.load_auth_oauth_flow_snapshot()


class _Held:
    """A durable store held open by a task (`hold`) until `scope` is cancelled."""

    def __init__(self, path, **options):
        self.path = path
        self.options = options
        self.scope = trio.CancelScope()
        self.ready, self.gone = trio.Event(), trio.Event()
        self.store = None

    async def hold(self):
        with self.scope:
            async with open_store(str(self.path), **self.options) as store:
                self.store = store
                self.ready.set()
                await trio.sleep_forever()
        self.gone.set()


@pytest.mark.parametrize("coin", [0.1, 0.9])
def test_host_cancel_just_after_actor_submits(tmp_path, monkeypatch, coin):
    """The host cancels the store's block the moment the actor has handed a
    group to the writer, before the writer takes it. The write is answered:
    durable, or `StoreClosed` and absent after a reopen."""
    _pin_scheduler(monkeypatch, coin)
    created = _track(monkeypatch)
    result = {}
    outcomes = {}

    async def main():
        held = _Held(tmp_path / "s")
        async with trio.open_nursery() as n:
            n.start_soon(held.hold)
            await held.ready.wait()
            await trio.sleep(0.01)
            writer = held.store._actor.writer
            submit = writer.submit

            async def submit_then_cancel(group):
                await submit(group)
                result["pending_at_cancel"] = len(writer._pending)
                held.scope.cancel()

            monkeypatch.setattr(writer, "submit", submit_then_cancel)
            write = held.store.persist_auth_oauth_flow_snapshot
            n.start_soon(_call, outcomes, "write", write, b"x")
            result["stuck"] = await _release_stuck(created, held.gone)

    trio.run(main)

    assert result.get("pending_at_cancel") == 1, "cancelled before the group reached the writer"
    assert result["stuck"] == 0
    error = outcomes["write"]
    assert error is None or type(error) is StoreClosed, repr(error)
    durable = trio.run(_durable_oauth, tmp_path / "s")
    assert durable == (b"x" if error is None else None)


@pytest.mark.parametrize("coin", [0.1, 0.9])
def test_base_exception_in_updater_strands_batch(tmp_path, monkeypatch, coin):
    """SPEC: 'If the actor dies of an unexpected exception, every waiting and
    later caller gets Internal; nobody hangs.' With a BaseException (here
    SystemExit from an OAuth updater) the actor submits the batch, then
    re-raises; the nursery cancels the just-woken writer before it runs.

    The race needs one batch holding a good write (applied: it gets a log
    record) and then the dying updater, and a writer that never wrote it;
    the store's statistics show both. Every caller then gets `StoreClosed`
    (the writer was cancelled) or `Internal` (the actor died), and the
    SystemExit leaves the store's block."""
    _pin_scheduler(monkeypatch, coin)
    # The batch must be one slice: a slice of its own would take the good
    # write to the writer before the updater dies.
    monkeypatch.setattr(A, "SLICE_SECONDS", 60.0)
    created = _track(monkeypatch)
    result = {}
    outcomes = {}

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
                result["store_exit"] = exc
            gone.set()

        def updater(old):
            raise SystemExit(3)

        async with trio.open_nursery() as n:
            n.start_soon(hold)
            await ready.wait()
            store = box["s"]
            # One batch: a good write (gets a record), then the dying updater.
            # A reversed batch of runnable tasks (coin < 0.5) reaches the actor
            # in the order started, an unreversed one the other way round.
            calls = [
                ("good", store.persist_auth_oauth_flow_snapshot, b"ok"),
                ("dying", store.update_auth_oauth_flow_snapshot, updater),
            ]
            for call in calls if coin < 0.5 else calls[::-1]:
                n.start_soon(_call, outcomes, *call)
            result["stuck"] = await _release_stuck(created, gone)
            result["statistics"] = store.statistics()

    trio.run(main)

    statistics = result["statistics"]
    assert (statistics.batches, statistics.largest_batch) == (1, 2), statistics
    assert statistics.effects > 0, "the good write was not applied before the updater died"
    assert statistics.records == 0, "the writer wrote the batch before it was cancelled"
    assert result["stuck"] == 0
    assert set(outcomes) == {"good", "dying"}
    for name, error in outcomes.items():
        assert type(error) in (StoreClosed, Internal), f"{name}: {error!r}"
    store_exit = result["store_exit"]
    assert type(store_exit) is SystemExit, repr(store_exit)
    assert store_exit.code == 3
    assert trio.run(_durable_oauth, tmp_path / "s") is None


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
    is answered too. Each write is durable or answered with `StoreClosed`."""
    created = _track(monkeypatch)
    io = SlowSync()
    result = {}
    outcomes = {}

    async def main():
        held = _Held(tmp_path / "s", _io=io)
        async with trio.open_nursery() as n:
            n.start_soon(held.hold)
            await held.ready.wait()
            io.armed = True
            for i in range(1, 5):  # one batch each: group 1 in flight, 2 and 3 queued, 4 blocked
                value = bytes([i]) * BIG
                n.start_soon(_call, outcomes, i, held.store.persist_auth_oauth_flow_snapshot, value)
                await trio.sleep(0.3)
            writer = held.store._actor.writer
            assert writer._pending, "the test needs groups queued behind the slow fsync"
            held.scope.cancel()
            io.gate.set()
            result["stuck"] = await _release_stuck(created, held.gone)

    trio.run(main)

    assert result["stuck"] == 0
    assert set(outcomes) == {1, 2, 3, 4}
    for i, error in outcomes.items():
        assert error is None or type(error) is StoreClosed, f"write {i}: {error!r}"
    durable = [i for i, error in outcomes.items() if error is None]
    expected = bytes([max(durable)]) * BIG if durable else None
    assert trio.run(_durable_oauth, tmp_path / "s") == expected
