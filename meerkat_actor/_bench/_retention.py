"""Retention: what retiring payloads and purging runtimes give back (issue 11).

Rule 1: the same removal on both durable peers, in the same run. The
parent builds one actor store and one SQLite file with the same writes; each
goes through the same three fresh processes: open and check (`before`),
remove, open and check again (`after`). The actor store is also opened as
the removal left it before its checkpoint (`after_log`: the old snapshot
and the log of the removal).

Rule 2: a figure counts only if the store holds exactly what it should.
The `before` and `after` (and `after_log`) children rebuild the content from the seed and
check `list_runtimes()`, every input state of every listed runtime field by
field (the retired ones without their payload, the others with it), its
receipts, session snapshot and runtime state; every purged runtime must
read as one never written. The removal child checks that its selection of
retirable states is exactly the terminal ones. Anything else fails the run.

Theory of operation. The content: `size` input states over 1,000 runtimes.
Every runtime has runtime state `idle`, runs of 1-8 inputs with one receipt
each, and a 4 KiB session snapshot committed by its last run. All runs but
the last are over: their inputs are consumed (terminal). The last run is in
flight: its inputs are applied, pending consumption (not terminal, so their
payloads stay). The actor store is written with no checkpoint on the way
and closed (a final checkpoint: it opens from one snapshot); SQLite with
`synchronous=OFF` (the rows are the same; every child opens it with FULL).

The removal runs in one task, as a host's periodic sweep would: for every
runtime, `load_input_states` and one `retire_input_payloads` call with the
terminal states that still carry a payload (the recipe of
docs/operations.md); then every other runtime (even index) is committed to
`destroyed` and, in a second pass, purged. The actor store is copied while
open and idle (the copy holds the removal in its log only: `after_log`),
then takes a `checkpoint()` (its directory shrinks only then); SQLite's
file is vacuumed
by the parent once the `after` child has read it, to show what `VACUUM`
gives back.
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Final

import trio

from .._actor import ActorStore, open_store
from .._front import StoreFront
from .._ids import InputId, LogicalRuntimeId, RunId
from .._sqlite import open_sqlite_store
from .._types import RuntimeState, StoredInputState, machine_transition
from ._children import Measurement, run_child
from ._measure import BenchFailure, current_rss, peak_rss
from ._payloads import (
    CommitPlan,
    Session,
    Write,
    is_consumed_input,
    is_pending_input,
    plan_runtime,
    sessions,
    write_for,
)
from ._recovery import KIB, MIB, NEVER, commit_all, counts, disk_bytes
from ._results import RemovalRow, RetentionRow
from ._settings import Settings

__all__ = ["MEASUREMENTS", "run_retention"]

#: The durable peers, in table order.
RETENTION_PEERS: Final = ("actor", "sqlite")
#: The opens of each store, in table order (`after_log`: the actor store only).
STAGES: Final = ("before", "after_log", "after")
_START: Final = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
_DESTROY: Final = machine_transition(RuntimeState.IDLE, RuntimeState.DESTROYED)


# --- the stores' content ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Runtime:
    """One runtime of a retention store: its identity, its runs (the last one
    still in flight), and whether the removal purges it."""

    session: Session
    plans: list[CommitPlan]
    purged: bool

    @property
    def runtime_id(self) -> LogicalRuntimeId:
        return self.session.runtime_id

    @property
    def input_states(self) -> int:
        return sum(len(plan.input_ids) for plan in self.plans)

    @property
    def terminal(self) -> int:
        """Its consumed input states (all runs but the last)."""
        return sum(len(plan.input_ids) for plan in self.plans[:-1])


def _content(size: int, runtimes: int) -> list[_Runtime]:
    """The runtimes of the retention store of `size` input states."""
    made = sessions("retention", runtimes, 4 * KIB)
    return [
        _Runtime(session, plan_runtime(f"retention/{size}/{r}", count), purged=r % 2 == 0)
        for r, (session, count) in enumerate(zip(made, counts(size, runtimes), strict=True))
    ]


def _writes(content: Sequence[_Runtime]) -> list[list[Write]]:
    """Each runtime's writes: its runs, consumed, then the last one in flight."""
    return [
        [write_for(plan, pending=n == len(rt.plans) - 1) for n, plan in enumerate(rt.plans)]
        for rt in content
    ]


async def _write_all(
    store: StoreFront, content: Sequence[_Runtime], writes: Sequence[Sequence[Write]]
) -> None:
    """Each runtime's runtime state, then its writes in order (the last with its
    session snapshot); runtimes spread over `BUILD_TASKS` tasks."""

    async def start(session: Session) -> None:
        await store.commit_machine_lifecycle(session.runtime_id, _START, [])

    await commit_all(store, writes, [rt.session for rt in content], before=start)


# --- sizes on disk ------------------------------------------------------------------------------


def _snapshot_bytes(directory: str) -> int:
    """The size of the actor store's newest snapshot file."""
    names = sorted(n for n in os.listdir(directory) if n.startswith("snapshot-"))
    if not names:
        raise BenchFailure(f"{directory} holds no snapshot")
    return os.path.getsize(os.path.join(directory, names[-1]))


def _vacuum(path: str) -> float:
    """`VACUUM` the closed SQLite file; return the seconds it took."""
    started = time.perf_counter()
    connection = sqlite3.connect(path)
    try:
        connection.execute("VACUUM")
    finally:
        connection.close()
    return time.perf_counter() - started


# --- the parent -----------------------------------------------------------------------------


async def _build(
    size: int, runtimes: int, paths: dict[str, str], progress: Callable[[str], None]
) -> None:
    """Write the same content to a new actor store (closed: one snapshot) and a
    new SQLite file."""
    progress(f"retention {size:,}: preparing {size:,} input states")

    def prepare() -> tuple[list[_Runtime], list[list[Write]]]:
        content = _content(size, runtimes)
        return content, _writes(content)

    content, writes = await trio.to_thread.run_sync(prepare)
    await trio.to_thread.run_sync(gc.collect)
    gc.freeze()  # many long-lived objects: keep the collector from rescanning them
    try:
        progress(f"retention {size:,}: writing the actor store")
        async with open_store(paths["actor"], checkpoint_bytes=NEVER) as store:
            await _write_all(store, content, writes)
        progress(f"retention {size:,}: writing the SQLite file")
        async with open_sqlite_store(paths["sqlite"], synchronous="OFF") as sqlite:
            await _write_all(sqlite, content, writes)
    finally:
        del writes, content
        gc.unfreeze()
    await trio.to_thread.run_sync(gc.collect)


async def _open(peer: str, stage: str, path: str, size: int, runtimes: int) -> RetentionRow:
    snapshot = None
    if peer == "actor":
        snapshot = await trio.to_thread.run_sync(_snapshot_bytes, path)
    spec: dict[str, Any] = {
        "kind": "retention-open",
        "peer": peer,
        "stage": stage,
        "path": path,
        "size": size,
        "runtimes": runtimes,
        "snapshot_bytes": snapshot,
        "disk_bytes": await trio.to_thread.run_sync(disk_bytes, path),
    }
    result = await run_child(spec)
    return RetentionRow(**result["retention"])


async def run_retention(
    settings: Settings, workdir: str, progress: Callable[[str], None]
) -> tuple[list[RetentionRow], list[RemovalRow]]:
    """Build each retention store, open it, remove, and open it again."""
    rows: list[RetentionRow] = []
    removals: list[RemovalRow] = []
    for size in settings.retention_sizes:
        runtimes = min(settings.recovery_runtimes, size)
        directory = os.path.join(workdir, f"retention-{size}")
        await trio.to_thread.run_sync(partial(os.makedirs, directory, 0o700, exist_ok=True))
        paths = {
            "actor": os.path.join(directory, "actor"),
            "after_log": os.path.join(directory, "actor-log-only"),
            "sqlite": os.path.join(directory, "peer.sqlite3"),
        }
        await _build(size, runtimes, paths, progress)
        for peer in RETENTION_PEERS:
            progress(f"retention {size:,}: opening the {peer} store in a new process")
            rows.append(await _open(peer, "before", paths[peer], size, runtimes))
        done: dict[str, RemovalRow] = {}
        for peer in RETENTION_PEERS:
            progress(f"retention {size:,}: retiring and purging in the {peer} store")
            spec = {
                "kind": "retention-remove",
                "peer": peer,
                "path": paths[peer],
                "size": size,
                "runtimes": runtimes,
                "log_copy": paths["after_log"] if peer == "actor" else None,
            }
            done[peer] = RemovalRow(**(await run_child(spec))["removal"])
        progress(f"retention {size:,}: opening the actor store's log-only copy in a new process")
        rows.append(await _open("actor", "after_log", paths["after_log"], size, runtimes))
        for peer in RETENTION_PEERS:
            progress(f"retention {size:,}: opening the {peer} store again in a new process")
            rows.append(await _open(peer, "after", paths[peer], size, runtimes))
        progress(f"retention {size:,}: VACUUM of the SQLite file")
        vacuum_s = await trio.to_thread.run_sync(_vacuum, paths["sqlite"])
        vacuumed = await trio.to_thread.run_sync(disk_bytes, paths["sqlite"])
        done["sqlite"] = replace(done["sqlite"], vacuum_s=vacuum_s, vacuumed_bytes=vacuumed)
        removals += [done[peer] for peer in RETENTION_PEERS]
        await trio.to_thread.run_sync(partial(shutil.rmtree, directory, ignore_errors=True))
    return rows, removals


# --- the children ---------------------------------------------------------------------------------


def _opened(peer: str, path: str) -> AbstractAsyncContextManager[StoreFront]:
    if peer == "actor":
        return open_store(path, checkpoint_bytes=NEVER)
    return open_sqlite_store(path, synchronous="FULL")


def _check_states(
    held: list[StoredInputState], runtime: _Runtime, retired: bool
) -> tuple[int, int]:
    """Check a runtime's input states against its plan, every field of every
    one (the consumed ones without their payload when `retired`); return how
    many there are and how many still carry a payload. Raises `BenchFailure`
    on the first difference."""
    expected: dict[int, tuple[uuid.UUID, uuid.UUID, int, bool]] = {}
    for k, plan in enumerate(runtime.plans):
        pending = k == len(runtime.plans) - 1
        for n, input_id in enumerate(plan.input_ids):
            expected[input_id.int] = (input_id, plan.run_id, plan.first_index + n, pending)
    where = runtime.runtime_id
    if len(held) != len(expected):
        raise BenchFailure(f"{where}: {len(held)} input states, wrote {len(expected)}")
    payloads = 0
    for stored in held:
        want = expected.pop(stored.input_id.value.int, None)
        if want is None:
            raise BenchFailure(
                f"{where}: an input state never written (or twice): {stored.input_id}"
            )
        input_id, run_id, index, pending = want
        if pending:
            same = is_pending_input(stored, input_id, run_id, index)
        else:
            same = is_consumed_input(stored, input_id, run_id, index, retired=retired)
        if not same:
            raise BenchFailure(f"{where}: input state {stored.input_id} differs")
        payloads += stored.state.persisted_input is not None
    return len(held), payloads


async def _check_purged(store: StoreFront, runtime: _Runtime) -> None:
    """A purged runtime must read exactly as one never written."""
    rid = runtime.runtime_id
    first = runtime.plans[0]
    left = {
        "session snapshot": await store.load_session_snapshot(rid),
        "input states": await store.load_input_states(rid),
        "first input state": await store.load_input_state(rid, InputId(first.input_ids[0])),
        "receipts": await store.load_boundary_receipts(rid),
        "first receipt": await store.load_boundary_receipt(rid, RunId(first.run_id), 0),
        "runtime state": await store.load_runtime_state(rid),
        "ops snapshot": await store.load_ops_lifecycle(rid),
    }
    for what, value in left.items():
        if value not in (None, []):
            raise BenchFailure(f"{rid} was purged, yet it still has its {what}")


@dataclass(slots=True)
class _Found:
    input_states: int = 0
    payloads: int = 0
    receipts: int = 0
    reading_s: float = 0.0


async def _verify(
    store: StoreFront, content: Sequence[_Runtime], after: bool
) -> tuple[_Found, list[LogicalRuntimeId]]:
    """Check everything the store should hold before the removal or `after` it;
    return what was found and the runtimes listed."""
    listed = await store.list_runtimes()
    want = sorted((rt.runtime_id for rt in content if not (after and rt.purged)), key=str)
    if listed != want:
        extra = sorted(set(map(str, listed)) - set(map(str, want)))[:3]
        missing = sorted(set(map(str, want)) - set(map(str, listed)))[:3]
        raise BenchFailure(
            f"list_runtimes() gave {len(listed)} runtimes, expected {len(want)}"
            f" (extra: {extra}, missing: {missing}, or out of order)"
        )
    found = _Found()
    for rt in content:
        rid = rt.runtime_id
        if after and rt.purged:
            await _check_purged(store, rt)
            continue
        started = time.perf_counter()
        held = await store.load_input_states(rid)
        found.reading_s += time.perf_counter() - started
        count, payloads = await trio.to_thread.run_sync(_check_states, held, rt, after)
        found.input_states += count
        found.payloads += payloads
        receipts = await store.load_boundary_receipts(rid)
        keys = [(r.run_id.value.int, r.sequence) for r in receipts]
        if keys != sorted((plan.run_id.int, 0) for plan in rt.plans):
            raise BenchFailure(f"{rid}: load_boundary_receipts gave other receipts than written")
        found.receipts += len(receipts)
        last = write_for(rt.plans[-1], pending=True).receipt
        if await store.load_boundary_receipt(rid, last.run_id, 0) != last:
            raise BenchFailure(f"{rid}: the last receipt is missing or differs")
        if await store.load_session_snapshot(rid) != rt.session.delta.session_snapshot:
            raise BenchFailure(f"{rid}: the session snapshot is missing or differs")
        if await store.load_runtime_state(rid) is not RuntimeState.IDLE:
            raise BenchFailure(f"{rid}: the runtime state is not idle")
    return found, listed


async def _open_child(spec: dict[str, Any]) -> dict[str, Any]:
    peer, size, runtimes = spec["peer"], spec["size"], spec["runtimes"]
    content = await trio.to_thread.run_sync(_content, size, runtimes)
    await trio.to_thread.run_sync(gc.collect)
    rss_before = await trio.to_thread.run_sync(current_rss)
    with trio.CancelScope() as scope:
        started = time.perf_counter()
        async with _opened(peer, spec["path"]) as store:
            open_s = time.perf_counter() - started
            rss_after = await trio.to_thread.run_sync(current_rss)
            peak = peak_rss()
            found, listed = await _verify(store, content, spec["stage"] != "before")
            if spec["stage"] == "after_log":
                # Leave without the checkpoint a clean close would take: this
                # copy is thrown away.
                scope.cancel()
    row = RetentionRow(
        peer=peer,
        stage=spec["stage"],
        built=size,
        input_states=found.input_states,
        runtimes=len(listed),
        payloads=found.payloads,
        receipts=found.receipts,
        open_s=open_s,
        read_all_s=found.reading_s,
        rss_before_mib=rss_before / MIB,
        rss_after_open_mib=rss_after / MIB,
        peak_rss_mib=peak / MIB,
        snapshot_bytes=spec["snapshot_bytes"],
        disk_bytes=spec["disk_bytes"],
        verified=True,
    )
    return {"retention": asdict(row)}


async def _remove_child(spec: dict[str, Any]) -> dict[str, Any]:
    peer, size, runtimes = spec["peer"], spec["size"], spec["runtimes"]
    content = await trio.to_thread.run_sync(_content, size, runtimes)
    purged = [rt for rt in content if rt.purged]
    select_s = retire_s = destroy_s = purge_s = 0.0
    checkpoint_s: float | None = None
    calls = retired = 0
    async with _opened(peer, spec["path"]) as store:
        await trio.to_thread.run_sync(gc.collect)
        rss_after_open = await trio.to_thread.run_sync(current_rss)
        for rt in content:
            started = time.perf_counter()
            held = await store.load_input_states(rt.runtime_id)
            ids = [
                s.input_id
                for s in held
                if s.seed.phase.is_terminal
                and s.seed.terminal_outcome is not None
                and s.state.persisted_input is not None
            ]
            select_s += time.perf_counter() - started
            if len(ids) != rt.terminal:
                raise BenchFailure(
                    f"{rt.runtime_id}: {len(ids)} retirable input states, wrote {rt.terminal}"
                )
            if ids:
                started = time.perf_counter()
                await store.retire_input_payloads(rt.runtime_id, ids)
                retire_s += time.perf_counter() - started
                calls += 1
                retired += len(ids)
        for rt in purged:
            started = time.perf_counter()
            await store.commit_machine_lifecycle(
                rt.runtime_id, _DESTROY, [], expected=RuntimeState.IDLE
            )
            destroy_s += time.perf_counter() - started
        for rt in purged:
            started = time.perf_counter()
            await store.purge_runtime(rt.runtime_id)
            purge_s += time.perf_counter() - started
        await trio.to_thread.run_sync(gc.collect)
        rss_after_removal = await trio.to_thread.run_sync(current_rss)
        if isinstance(store, ActorStore):
            # Open and idle, every write acknowledged: the copy holds the
            # removal in its log (after the snapshot the store opened from).
            await trio.to_thread.run_sync(shutil.copytree, spec["path"], spec["log_copy"])
            started = time.perf_counter()
            await store.checkpoint()
            checkpoint_s = time.perf_counter() - started
    row = RemovalRow(
        peer=peer,
        input_states=size,
        runtimes=len(content),
        select_s=select_s,
        retire_calls=calls,
        retired=retired,
        retire_s=retire_s,
        destroy_s=destroy_s,
        purged=len(purged),
        purged_input_states=sum(rt.input_states for rt in purged),
        purged_receipts=sum(len(rt.plans) for rt in purged),
        purge_s=purge_s,
        rss_after_open_mib=rss_after_open / MIB,
        rss_after_removal_mib=rss_after_removal / MIB,
        checkpoint_s=checkpoint_s,
    )
    return {"removal": asdict(row)}


MEASUREMENTS: Final[dict[str, Measurement]] = {
    "retention-open": _open_child,
    "retention-remove": _remove_child,
}
