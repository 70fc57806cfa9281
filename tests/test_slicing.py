"""The actor applies a batch in time slices (`_actor.py` Rule 4).

A batch may hold the trio thread for at most `SLICE_SECONDS` of applying
before the actor yields (a cancel-shielded checkpoint) and goes on with the
next command. In a durable store each slice goes to the writer as a group of
its own before the actor yields, so its write and fsync overlap the planning
of the next slice. Slicing must change nothing else: groups are written and
answered in order (groups waiting together share one write and one fsync),
replies still wait for durability, reads still see only the published state,
commands keep their order and see each other's effects, a batch once started
is applied whole even if the host cancels, a write failure that lands between
two slices makes the rest of the batch see the fallen-back state, and an
actor failure answers the whole batch.

Most tests set `SLICE_SECONDS` to 0, so the actor yields before every command
of a batch but the first: every batch is as sliced as it can be. The commands
that give the tests a hook inside a batch are session commits: the store's
session codec runs on the actor's thread, in `plan`, once per command.
"""

from __future__ import annotations

import errno
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from _values import session, stored

import meerkat_actor as ma
from meerkat_actor import _actor, _core
from meerkat_actor import _format as fmt
from meerkat_actor._fs import FileIO

TIMEOUT = 30
N = 24


def rt(n: int) -> ma.LogicalRuntimeId:
    return ma.LogicalRuntimeId(f"slice-{n}")


class HookCodec:
    """The default session codec, with `hook(n)` called before the n-th
    snapshot it reads (n from 1): on the actor's thread, inside a batch."""

    def __init__(self, hook: Callable[[int], None] = lambda n: None) -> None:
        self.hook = hook
        self.calls = 0
        self._inner = ma.MeerkatSessionCodec()

    def session_id(self, snapshot: bytes) -> ma.SessionId:
        self.calls += 1
        self.hook(self.calls)
        return self._inner.session_id(snapshot)


@pytest.fixture
def thin_slices(monkeypatch):
    """Every command of a batch but the first starts a new slice."""
    monkeypatch.setattr(_actor, "SLICE_SECONDS", 0.0)


async def one_batch(
    calls: list[Callable[[], Awaitable[Any]]], order: list[int] | None = None
) -> dict[int, BaseException | None]:
    """Start every call at once (they reach the channel in one scheduler
    round, so the actor takes them as one batch); return each one's outcome.
    `order` receives the calls' numbers in the order they were sent."""
    outcomes: dict[int, BaseException | None] = {}

    async def call(n: int) -> None:
        if order is not None:
            order.append(n)  # the send happens in this same step
        try:
            await calls[n]()
        except Exception as exc:
            outcomes[n] = exc
        else:
            outcomes[n] = None

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            for n in range(len(calls)):
                nursery.start_soon(call, n)
    return outcomes


def session_commits(store: ma.ActorStore, count: int) -> list[Callable[[], Awaitable[Any]]]:
    return [lambda n=n: store.commit_session_snapshot(rt(n), session()) for n in range(count)]


def log_records(path: Path, bytes_written: int) -> list[tuple[int, int]]:
    """(LSN, write LSN) of every record in the store's first segment."""
    data = (path / fmt.segment_name(1)).read_bytes()
    offset, end = fmt.SEGMENT_HEADER, fmt.SEGMENT_HEADER + bytes_written
    found = []
    while offset < end:
        frame = fmt.read_frame(data, offset, 1 << 20)
        found.append((frame.lsn, frame.write_lsn))
        offset = frame.end
    return found


class Spy:
    """A task that runs whenever the actor yields: it notes how many commands
    the actor has applied, and whether a read of `slice-0` sees its session."""

    def __init__(self, store: ma.ActorStore) -> None:
        self.store = store
        self.seen: list[tuple[int, bool]] = []
        self.durable_when_seen: list[int] = []
        """For each read that saw `slice-0`: the durable LSN by then."""

    async def run(self) -> None:
        actor = self.store._actor
        while True:
            visible = await self.store.load_session_snapshot(rt(0)) is not None
            self.seen.append((actor.commands, visible))
            if visible and actor.writer is not None:
                self.durable_when_seen.append(actor.writer.durable_lsn)
            await trio.lowlevel.checkpoint()


# --- slices are real, and nothing but the yield changes -------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
async def test_other_tasks_run_between_slices_and_reads_see_only_published(
    tmp_path, thin_slices, durable
):
    path = tmp_path / "store" if durable else None
    async with ma.open_store(path) as store:
        actor = store._actor
        spy = Spy(store)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spy.run)
            await trio.lowlevel.checkpoint()
            order: list[int] = []
            outcomes = await one_batch(session_commits(store, N), order)
            nursery.cancel_scope.cancel()
        assert outcomes == dict.fromkeys(range(N))
        stats = store.statistics()
        assert (stats.batches, stats.largest_batch, stats.commands) == (1, N, N)
        assert actor.slices == N - 1
        # The spy ran between slices: it saw the batch part-applied, many
        # times (trio may run the actor twice in a row, in two scheduler
        # rounds, so not after every command) ...
        inside = {commands for commands, _ in spy.seen if 0 < commands < N}
        assert len(inside) >= N // 4, spy.seen
        # ... and never saw a write of the batch before the batch was over
        # (in memory) or before a write and fsync made it durable (durable:
        # published by the writer, which may happen before the batch is over,
        # since each slice is a group of its own).
        if durable:
            lsn = order.index(0) + 1  # a fresh store: command k has LSN k
            assert all(durable_lsn >= lsn for durable_lsn in spy.durable_when_seen), spy.seen
        else:
            assert not any(visible for commands, visible in spy.seen if commands < N), spy.seen
        for n in range(N):
            assert await store.load_session_snapshot(rt(n)) is not None


async def test_each_slice_is_written_as_a_group_in_order(tmp_path, thin_slices):
    path = tmp_path / "store"
    async with ma.open_store(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"first")  # LSN 1, its own write
        outcomes = await one_batch(session_commits(store, N))
        assert outcomes == dict.fromkeys(range(N))
        stats = store.statistics()
        assert (stats.batches, stats.largest_batch) == (2, N)
        assert store._actor.slices == N - 1
        assert stats.records == 1 + N
        # At least the first slice was written on its own (the writer took it
        # while the actor went on), and groups that waited together shared a
        # write: never more fsyncs than groups.
        assert 3 <= stats.fsyncs <= 1 + N
        # The records are LSNs 1 .. N+1 in order; each write's records name
        # the write's first LSN, and there are as many writes as fsyncs.
        records = log_records(path, stats.bytes_written)
        assert [lsn for lsn, _ in records] == list(range(1, N + 2))
        writes = sorted({write for _, write in records})
        assert len(writes) == stats.fsyncs
        for lsn, write in records:
            assert write == max(w for w in writes if w <= lsn)
        assert writes[:2] == [1, 2]


async def test_an_early_slice_is_answered_while_its_batch_goes_on(tmp_path, thin_slices):
    """The point of a group per slice: the first commands of a long batch
    are durable and answered before the batch's last command is applied."""
    answered_at: dict[int, int] = {}
    halfway = N // 2

    def hook(n: int) -> None:
        if n == halfway:  # give the writer's thread time to sync the first slices
            time.sleep(0.2)

    async with ma.open_store(tmp_path / "store", session_codec=HookCodec(hook)) as store:
        actor = store._actor

        order: list[int] = []

        async def commit(n: int) -> None:
            order.append(n)  # the send happens in this same step
            await store.commit_session_snapshot(rt(n), session())
            answered_at[n] = actor.commands

        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                for n in range(N):
                    nursery.start_soon(commit, n)
        assert store.statistics().largest_batch == N
        early = [n for n, commands in answered_at.items() if commands < N]
        assert early, answered_at
        # Groups are answered in order: the early answers are the batch's first.
        assert set(early) == set(order[: len(early)])


class GateIO(FileIO):
    """Holds the sync of the next log append until `gate` is set."""

    def __init__(self) -> None:
        self.gate: threading.Event | None = None

    def sync(self, handle: Any) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            assert gate.wait(timeout=TIMEOUT), "the test never opened the gate"
        super().sync(handle)


async def test_no_reply_and_no_read_before_a_sliced_batch_is_durable(tmp_path, thin_slices):
    io = GateIO()
    path = tmp_path / "store"
    async with ma.open_store(path, _io=io) as store:
        gate = threading.Event()
        io.gate = gate
        outcomes: dict[int, BaseException | None] = {}

        async def batch() -> None:
            outcomes.update(await one_batch(session_commits(store, N)))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(batch)
                # Every command applied, in slices; the first slice's append
                # is held in its sync, the other slices' groups wait behind it.
                await trio.testing.wait_all_tasks_blocked()
                assert store.statistics().commands == N
                assert store._actor.slices == N - 1
                assert store.statistics().records == 0
                assert outcomes == {}, "a caller was answered before its write was durable"
                for n in range(N):
                    assert await store.load_session_snapshot(rt(n)) is None
                gate.set()
        finally:
            gate.set()
        assert outcomes == dict.fromkeys(range(N))
        assert store.statistics().fsyncs == 2  # the first slice, then all that waited
        for n in range(N):
            assert await store.load_session_snapshot(rt(n)) is not None


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
async def test_commands_keep_their_order_and_see_each_other_across_slices(
    tmp_path, thin_slices, durable
):
    path = tmp_path / "store" if durable else None
    ran: list[tuple[int, bytes | None]] = []

    def append(n: int) -> Callable[[bytes | None], bytes]:
        def updater(old: bytes | None) -> bytes:
            ran.append((n, old))
            return (old or b"") + b"%d," % n

        return updater

    async with ma.open_store(path) as store:
        order: list[int] = []
        calls = [lambda n=n: store.update_auth_oauth_flow_snapshot(append(n)) for n in range(N)]
        outcomes = await one_batch(calls, order)
        assert outcomes == dict.fromkeys(range(N))
        assert store.statistics().largest_batch == N
        assert store._actor.slices == N - 1
        # Applied in the order sent, each on the state the previous one left.
        assert [n for n, _ in ran] == order
        expected = b""
        for n, old in ran:
            assert old == (expected or None)
            expected += b"%d," % n
        assert await store.load_auth_oauth_flow_snapshot() == expected
    if durable:
        async with ma.open_store(path) as reopened:
            assert await reopened.load_auth_oauth_flow_snapshot() == expected


# --- failures inside a sliced batch ---------------------------------------------------


class FailingSyncIO(FileIO):
    """The sync of the next log append waits for `gate`, then fails."""

    def __init__(self) -> None:
        self.gate: threading.Event | None = None

    def sync(self, handle: Any) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            assert gate.wait(timeout=TIMEOUT), "the test never opened the gate"
            raise OSError(errno.EIO, "injected sync failure")
        super().sync(handle)


async def test_a_write_failure_between_slices_falls_the_rest_of_the_batch_back(
    tmp_path, thin_slices
):
    """The append of an earlier write fails while a batch is half applied:
    the writer poisons the store and falls the actor back to the durable
    state; the next slice must continue from that state (refusing every
    command), not from the working state it had before it yielded."""
    io = FailingSyncIO()
    gate = threading.Event()
    appended = threading.Event()
    opened_at = 3

    def hook(n: int) -> None:
        # Inside the batch, at its third command: let the earlier append fail,
        # and give its thread time to hand the failure back to trio.
        if n == opened_at:
            gate.set()
            assert appended.wait(timeout=TIMEOUT)
            time.sleep(0.05)

    path = tmp_path / "store"
    async with ma.open_store(path, _io=io, session_codec=HookCodec(hook)) as store:
        actor = store._actor
        writer = actor.writer
        assert writer is not None
        append = writer._append

        def signalling_append(*args: Any) -> int:
            try:
                return append(*args)
            finally:
                appended.set()

        writer._append = signalling_append  # type: ignore[method-assign]
        io.gate = gate
        first: list[BaseException] = []

        async def doomed() -> None:
            try:
                await store.persist_input_state(rt(99), stored(ma.InputId(uuid.UUID(int=1))))
            except ma.WriteFailed as exc:
                first.append(exc)

        try:
            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(doomed)
                    await trio.testing.wait_all_tasks_blocked()  # its sync is held
                    before = store.statistics()
                    outcomes = await one_batch(session_commits(store, N))
        finally:
            gate.set()
        assert len(first) == 1
        stats = store.statistics()
        assert stats.batches == before.batches + 1
        assert stats.largest_batch == N
        refused = stats.refused - before.refused
        applied = N - refused
        # The failure landed inside the batch: some of its commands were
        # applied before it, and the rest were refused by the poison.
        assert opened_at <= applied < N, (applied, refused)
        assert all(isinstance(error, ma.StorePoisoned) for error in outcomes.values()), outcomes
        # The working state is the durable one: the batch's commands applied
        # before the failure are gone with it.
        assert actor.state is actor.published
        assert actor.state.runtimes.get(rt(0)) is None
        with pytest.raises(ma.StorePoisoned):
            await store.commit_session_snapshot(rt(0), session())
    async with ma.open_store(path) as reopened:
        assert await reopened.list_runtimes() == []


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
async def test_a_host_cancel_inside_a_batch_lets_it_finish_whole(tmp_path, thin_slices, durable):
    """Slices yield with a cancel-shielded checkpoint: a batch once started
    is applied whole and answered as one group; the cancellation reaches the
    actor between batches. Every caller gets one answer: a write answered as
    applied is in the store, one answered `StoreClosed` is not."""
    path = tmp_path / "store" if durable else None
    scope = trio.CancelScope()
    cancelled_at = 5

    def hook(n: int) -> None:
        if n == cancelled_at:
            scope.cancel()

    box: dict[str, ma.ActorStore] = {}
    ready = trio.Event()

    async def hold() -> None:
        with scope:
            async with ma.open_store(path, session_codec=HookCodec(hook)) as store:
                box["store"] = store
                ready.set()
                await trio.sleep_forever()

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hold)
            await ready.wait()
            store = box["store"]
            outcomes = await one_batch(session_commits(store, N))
    stats = store.statistics()
    assert (stats.batches, stats.largest_batch, stats.commands) == (1, N, N)
    assert store._actor.slices == N - 1
    assert set(outcomes) == set(range(N))
    if not durable:
        assert outcomes == dict.fromkeys(range(N))  # applied and published before the cancel
        return
    assert all(error is None or isinstance(error, ma.StoreClosed) for error in outcomes.values())
    async with ma.open_store(path) as reopened:
        for n, error in outcomes.items():
            assert (await reopened.load_session_snapshot(rt(n)) is not None) == (error is None)


@pytest.mark.parametrize("durable", [False, True], ids=["memory", "durable"])
async def test_an_actor_failure_inside_a_sliced_batch_answers_all_of_it(
    tmp_path, monkeypatch, thin_slices, durable
):
    path = tmp_path / "store" if durable else None
    redo = _core.redo
    calls = 0
    dies_at = 6

    def failing_redo(state: Any, effects: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == dies_at:
            raise RuntimeError("a bug in redo")
        return redo(state, effects)

    async with ma.open_store(path) as store:
        monkeypatch.setattr(_core, "redo", failing_redo)
        order: list[int] = []
        outcomes = await one_batch(session_commits(store, N), order)
        monkeypatch.setattr(_core, "redo", redo)
        assert store.statistics().largest_batch == N
        # Commands before the failing one were applied (and, durable, made
        # durable before their reply); it and every later one got Internal.
        for position, n in enumerate(order):
            if position < dies_at - 1:
                assert outcomes[n] is None, (position, outcomes[n])
            else:
                assert isinstance(outcomes[n], ma.Internal), (position, outcomes[n])
                assert isinstance(outcomes[n].__cause__, RuntimeError)
        with pytest.raises(ma.Internal):
            await store.commit_session_snapshot(rt(0), session())
    if durable:
        async with ma.open_store(path) as reopened:
            held = {n for n in range(N) if await reopened.load_session_snapshot(rt(n))}
            assert held == set(order[: dies_at - 1])


# --- the point of it: the loop is not held for a whole batch --------------------------


async def test_a_slow_batch_does_not_hold_the_event_loop():
    """64 commands that each hold the thread for 1 ms (the codec busy-waits),
    as one batch: with slices of `SLICE_SECONDS` (2 ms) a task beside the
    store waits a few ms at most between two runs, not the batch's 64 ms."""

    def busy(n: int) -> None:
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass

    gaps: list[float] = []

    async def beside() -> None:
        while True:
            start = time.perf_counter()
            await trio.lowlevel.checkpoint()
            gaps.append(time.perf_counter() - start)

    async with ma.open_store(session_codec=HookCodec(busy)) as store:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beside)
            await trio.lowlevel.checkpoint()
            started = time.perf_counter()
            outcomes = await one_batch(session_commits(store, 64))
            elapsed = time.perf_counter() - started
            nursery.cancel_scope.cancel()
        assert outcomes == dict.fromkeys(range(64))
        assert store.statistics().largest_batch == 64
        assert elapsed >= 0.064
        assert store._actor.slices >= 64 * 0.001 / _actor.SLICE_SECONDS / 2
        # Generous for a shared CI machine: unsliced, this is >= 64 ms.
        assert max(gaps) < 0.030, f"the loop was held for {max(gaps) * 1000:.1f} ms"
