"""`await store.backup(path)`: a complete copy of a live store (docs/api.md,
docs/operations.md).

A backup is a new store at `path` holding every write acknowledged before the
call, as one snapshot at the source's durable LSN, taken while other tasks
keep writing. Checked here through the public API only: the backup opens with
`open_store`, holds a consistent point-in-time state (a prefix of every
chain of dependent writes, never a write not yet sent), is a full store
(writes, recovery without a final checkpoint, checkpoint), and refuses a
destination that is not empty.
"""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest
import trio
from _cli_stores import (
    RECORDS_A,
    RECORDS_B,
    Content,
    read_content,
    seg,
    snap,
    tree,
    write_all,
)
from _values import increment, receipt, stored

import meerkat_actor as ma

LAST = RECORDS_A + RECORDS_B
CHAIN_A = ma.LogicalRuntimeId("chain-a")
CHAIN_B = ma.LogicalRuntimeId("chain-b")
NOISE = [ma.LogicalRuntimeId(f"noise-{n}") for n in range(3)]
RUN = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-0000000000ff"))
EXTRA = ma.LogicalRuntimeId("after-backup")


def chain_input(n: int) -> ma.StoredInputState:
    return stored(ma.InputId(uuid.UUID(int=n + 1)))


def noise_receipt(sequence: int) -> ma.RunBoundaryReceipt:
    return receipt(
        sequence, RUN, contributing_input_ids=(), conversation_digest=None, message_count=1
    )


class Progress:
    """How many writes of each chain were sent and how many acknowledged."""

    def __init__(self) -> None:
        self.sent = dict.fromkeys(("a", "b", "oauth", *map(str, NOISE)), 0)
        self.acked = dict(self.sent)
        self._waiting: tuple[int, trio.Event] | None = None

    def ack(self, key: str) -> None:
        self.acked[key] += 1
        if self._waiting is not None and key == "b" and self.acked["b"] >= self._waiting[0]:
            self._waiting[1].set()

    async def wait_for_b(self, count: int) -> None:
        """Until `count` writes of chain-b were acknowledged."""
        event = trio.Event()
        self._waiting = (count, event)
        if self.acked["b"] >= count:
            event.set()
        await event.wait()

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        return dict(self.sent), dict(self.acked)


async def write_chains(store, progress: Progress, stop: trio.Event) -> None:
    """Dependent writes until `stop`: chain-a input n, then (after it was
    acknowledged) chain-b input n, then chain-a input n+1, ...; beside them,
    each noise runtime inserts receipts 0, 1, 2, ... and one task counts in
    the OAuth snapshot. Every write is sent only after the previous one of
    its chain was acknowledged."""

    async def chain() -> None:
        n = 0
        while not stop.is_set():
            for key, runtime in (("a", CHAIN_A), ("b", CHAIN_B)):
                progress.sent[key] += 1
                await store.persist_input_state(runtime, chain_input(n))
                progress.ack(key)
            n += 1

    async def noise(runtime: ma.LogicalRuntimeId) -> None:
        sequence = 0
        while not stop.is_set():
            progress.sent[str(runtime)] += 1
            await store.atomic_apply(runtime, None, noise_receipt(sequence), [])
            progress.ack(str(runtime))
            sequence += 1

    async def counter() -> None:
        while not stop.is_set():
            progress.sent["oauth"] += 1
            await store.update_auth_oauth_flow_snapshot(increment)
            progress.ack("oauth")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(chain)
        nursery.start_soon(counter)
        for runtime in NOISE:
            nursery.start_soon(noise, runtime)


async def prefix_length(present) -> int:
    """How many of items 0, 1, 2, ... are present; the rest must be absent
    (checked for 50 past the first absent one)."""
    n = 0
    while await present(n):
        n += 1
    for later in range(n + 1, n + 50):
        assert not await present(later), f"item {later} present after a missing {n}"
    return n


async def chain_lengths(store) -> dict[str, int]:
    """How much of each chain a store holds (each a prefix)."""
    lengths = {}
    for key, runtime in (("a", CHAIN_A), ("b", CHAIN_B)):
        ids = [s.input_id for s in await store.load_input_states(runtime)]
        lengths[key] = len(ids)
        assert ids == [chain_input(n).input_id for n in range(len(ids))], "not a prefix"
    for runtime in NOISE:

        async def has(sequence: int, runtime=runtime) -> bool:
            return await store.load_boundary_receipt(runtime, RUN, sequence) is not None

        lengths[str(runtime)] = await prefix_length(has)
    oauth = await store.load_auth_oauth_flow_snapshot()
    lengths["oauth"] = int(oauth or b"0")
    return lengths


def only_snapshot(path: Path) -> Path:
    snapshots = sorted(path.glob("snapshot-*.snap"))
    assert len(snapshots) == 1, sorted(os.listdir(path))
    return snapshots[0]


async def test_backups_taken_under_concurrent_writes_are_acknowledged_prefixes(tmp_path: Path):
    backups = []
    # Small checkpoints, so that some backups run beside a checkpoint.
    async with ma.open_store(tmp_path / "source", checkpoint_bytes=8192) as store:
        progress, stop = Progress(), trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_chains, store, progress, stop)
            for n in range(4):
                await progress.wait_for_b(10 * (n + 1))
                _, acked_before = progress.snapshot()
                target = tmp_path / f"backup-{n}"
                size = await store.backup(target)
                sent_by_return, _ = progress.snapshot()
                backups.append((target, size, acked_before, sent_by_return))
            stop.set()
        assert store.statistics().checkpoints >= 1
        final = await chain_lengths(store)

    for target, size, acked_before, sent_by_return in backups:
        assert only_snapshot(target).stat().st_size == size
        async with ma.open_store(target) as backup:
            held = await chain_lengths(backup)
        for key in held:
            # Everything acknowledged before the call, nothing not yet sent.
            assert acked_before[key] <= held[key] <= sent_by_return[key], (key, target)
        # A point in time: chain-b's write n follows chain-a's write n, which
        # follows chain-b's write n-1.
        assert held["b"] <= held["a"] <= held["b"] + 1, held
        # The snapshot is at the LSN of what it holds: every write is one
        # record, and every write adds one to one of the counts.
        assert int(only_snapshot(target).name[len("snapshot-") : -len(".snap")]) == sum(
            held.values()
        )
    # The source kept everything.
    assert final == progress.acked


async def test_backup_of_a_durable_store_is_a_full_store(tmp_path: Path):
    source, target = tmp_path / "source", tmp_path / "backup"
    target.mkdir()  # an empty directory is fine
    async with ma.open_store(source) as store:
        await write_all(store)
        content = await read_content(store)
        size = await store.backup(target)
        # The source goes on.
        await store.persist_input_state(EXTRA, chain_input(1))
    assert sorted(os.listdir(target)) in (["FORMAT", snap(LAST)], ["FORMAT", "LOCK", snap(LAST)])
    assert (target / snap(LAST)).stat().st_size == size
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in os.listdir(target):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600, name

    # Write to the backup, stop without a final checkpoint, recover.
    with trio.CancelScope() as scope:
        async with ma.open_store(target) as backup:
            assert await read_content(backup) == content
            assert await backup.load_input_states(EXTRA) == []
            await backup.persist_input_state(EXTRA, chain_input(2))
            await backup.persist_auth_oauth_flow_snapshot(b"written to the backup")
            scope.cancel()
            await trio.lowlevel.checkpoint()
    # The new records continue the source's LSNs, after the snapshot.
    assert sorted(os.listdir(target)) == ["FORMAT", "LOCK", seg(LAST + 1), snap(LAST)]
    async with ma.open_store(target) as backup:
        assert await backup.load_input_states(EXTRA) == [chain_input(2)]
        assert await backup.load_auth_oauth_flow_snapshot() == b"written to the backup"
        runtimes = await read_content(backup)
        assert runtimes.runtimes == content.runtimes
        await backup.checkpoint()
        assert [p.name for p in target.glob("snapshot-*")] == [snap(LAST + 2)]
    async with ma.open_store(target) as backup:
        assert await backup.load_input_states(EXTRA) == [chain_input(2)]
        assert (await read_content(backup)).runtimes == content.runtimes


async def test_backup_of_an_in_memory_store_makes_it_durable(tmp_path: Path):
    target = tmp_path / "from-memory"
    async with ma.open_store() as memory:
        await write_all(memory)
        content: Content = await read_content(memory)
        size = await memory.backup(target)
    assert only_snapshot(target) == target / snap(0)
    assert (target / snap(0)).stat().st_size == size
    with trio.CancelScope() as scope:
        async with ma.open_store(target) as store:
            assert await read_content(store) == content
            await store.persist_input_state(EXTRA, chain_input(3))
            scope.cancel()
            await trio.lowlevel.checkpoint()
    async with ma.open_store(target) as store:
        assert await read_content(store) == content
        assert await store.load_input_states(EXTRA) == [chain_input(3)]


async def test_backup_refuses_a_destination_that_is_not_empty(tmp_path: Path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    a_file = tmp_path / "a-file"
    a_file.write_text("mine too")
    async with ma.open_store(tmp_path / "source") as store:
        await store.persist_auth_oauth_flow_snapshot(b"x")
        before = tree(tmp_path / "occupied"), tree(a_file)
        with pytest.raises(ValueError, match="occupied"):
            await store.backup(occupied)
        with pytest.raises(ValueError, match="a-file"):
            await store.backup(a_file)
        assert (tree(occupied), tree(a_file)) == before
        # The store is still usable.
        await store.persist_auth_oauth_flow_snapshot(b"y")
        assert await store.load_auth_oauth_flow_snapshot() == b"y"


async def test_backup_of_a_closed_store_raises_store_closed(tmp_path: Path):
    async with ma.open_store(tmp_path / "source") as store:
        await store.persist_auth_oauth_flow_snapshot(b"x")
    with pytest.raises(ma.StoreClosed):
        await store.backup(tmp_path / "backup")
    assert not (tmp_path / "backup").exists()
    async with ma.open_store() as memory:
        pass
    with pytest.raises(ma.StoreClosed):
        await memory.backup(tmp_path / "backup")
    assert not (tmp_path / "backup").exists()
