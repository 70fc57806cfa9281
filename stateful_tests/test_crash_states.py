"""Power loss: the disk states a crash can leave, opened (SPEC §6).

`_crashsim` records a workload's file operations and builds, at each crash
point, the states POSIX's fsync rules allow (durable only, everything,
prefixes, random subsets by write call and by 4 KiB page, directory entries
kept or dropped); each is opened with the real `open_store` and checked
against what was acknowledged. See `_crashsim` and docs/durability.md
("Power-loss simulation").

How much runs: `HYPOTHESIS_PROFILE=ci` samples crash points and a few states
each; `deep` checks every crash point with more states each (`_crashsim.SCALES`).
The counts are printed (`pytest -s`).
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from itertools import islice
from pathlib import Path

import pytest
from _crashsim import (
    PROFILE,
    SCALE,
    WHOLE,
    Recorder,
    Workload,
    build,
    crash_states,
    materialise,
    pending_at,
    simulate,
)
from _workload import plan

import meerkat_actor as ma
from meerkat_actor._fs import FileIO
from meerkat_actor._sqlite_copy import import_sqlite, read_sqlite
from meerkat_actor.testing import ReferenceModel, assert_store_matches_model

# Hundreds of stores opened, each from a fresh directory: tens of seconds.
pytestmark = pytest.mark.slow

#: The workloads: (seed, tasks, operations before and after the reopen,
#: checkpoint_bytes). Small checkpoint sizes make checkpoints and rotations
#: frequent; several tasks make group commits.
WORKLOADS = {
    "ci": [
        Workload(1),
        Workload(2, tasks=4, first=10, second=10, checkpoint_bytes=3000),
        Workload(3, tasks=1, first=30, second=10, checkpoint_bytes=2500),
    ],
    "deep": [
        Workload(seed, tasks=tasks, first=first, second=second, checkpoint_bytes=size)
        for seed, tasks, first, second, size in [
            (1, 3, 12, 8, 6000),
            (2, 4, 10, 10, 3000),
            (3, 1, 30, 10, 2500),
            (4, 2, 30, 20, 20000),
            (5, 6, 12, 12, 4000),
            (6, 8, 10, 10, 2000),
            (7, 1, 60, 20, 1500),
            (8, 3, 25, 25, 64 * 1024 * 1024),
            (9, 4, 20, 20, 5000),
            (10, 2, 40, 40, 8000),
        ]
    ],
}.get(PROFILE, [Workload(1)])


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: f"seed{w.seed}")
async def test_every_crash_state_recovers_what_was_acknowledged(
    tmp_path: Path, workload: Workload
) -> None:
    checker = await simulate(workload, tmp_path)
    counts = checker.counts
    print(f"\ncrash states ({PROFILE}, {SCALE}), {workload}: {counts}")
    assert not checker.failures, "\n".join(checker.failures)
    # The simulation reached what it is for.
    assert counts.points >= 20
    assert counts.opened >= 20
    assert counts.recovered_with_warnings > 0, "no state with a torn tail or segment"
    assert counts.lost_in_flight > 0
    assert counts.kept_in_flight > 0
    assert counts.backup_refused > 0
    assert counts.backup_absent > 0
    assert counts.recoveries > 0
    assert counts.recovery_states > 0


def _log_sync(method: str, path: str) -> bool:
    return method == "sync" and os.path.basename(path).startswith("log-")


def _snapshot_sync(method: str, path: str) -> bool:
    return method == "sync" and os.path.basename(path).startswith("snapshot-")


def _store_dir_sync(method: str, path: str) -> bool:
    return method == "sync_dir" and os.path.basename(path) == "store"


@pytest.mark.parametrize(
    ("drop", "expected"),
    [
        pytest.param(_log_sync, "acknowledged operations", id="log-fdatasync"),
        pytest.param(_snapshot_sync, "snapshot-", id="snapshot-fsync"),
        pytest.param(_store_dir_sync, "acknowledged operations", id="directory-fsync"),
    ],
)
async def test_the_simulator_fails_a_store_without_its_fsyncs(
    tmp_path: Path, drop: Callable[[str, str], bool], expected: str
) -> None:
    """Teeth: with the fdatasync of the log segments, the fsync of the
    snapshot before its rename, or the fsync of the store directory made a
    no-op (a disk that ignores them), the simulation must report
    acknowledged operations lost or the store refused after a power loss."""
    checker = await simulate(Workload(1, backup=False), tmp_path, drop=drop)
    print(f"\nteeth ({drop.__name__}): {checker.counts}; first failure: {checker.failures[:1]}")
    assert checker.failures
    assert any(expected in failure for failure in checker.failures)


# --- the simulator's rules ------------------------------------------------------------------


def _record(root: Path) -> Recorder:
    """A small recording: a file written and synced, written again, renamed."""
    rec = Recorder(root)
    io: FileIO = rec
    handle = io.create(str(root / "a.tmp"))  # 0
    io.write(handle, b"x" * 5000)  # 1
    io.sync(handle)  # 2
    io.sync_dir(str(root))  # 3
    io.write_at(handle, 4096, b"y" * 100)  # 4: unsynced, on the second page
    io.write(handle, b"z" * 10)  # 5: at the file position, 5000
    io.close(handle)
    io.rename(str(root / "a.tmp"), str(root / "a"))  # 6: unsynced
    return rec


def test_data_is_durable_after_sync_and_entries_after_sync_dir(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    assert [entry.label.split()[0] for entry in rec.entries] == [
        "create",
        "write",
        "sync",
        "sync_dir",
        "write_at",
        "write",
        "rename",
    ]
    # Synced data whose new entry is not: the file is not there.
    assert build(rec, 2, {}) == {}
    assert build(rec, 3, {}) == {}
    assert build(rec, 4, {}) == {"a.tmp": b"x" * 5000}
    # Only what the syncs made durable: the old name, the old bytes.
    assert pending_at(rec, 7) == [4, 5, 6]
    assert build(rec, 7, {}) == {"a.tmp": b"x" * 5000}
    everything = dict.fromkeys(pending_at(rec, 7), WHOLE)
    assert build(rec, 7, everything) == {"a": b"x" * 4096 + b"y" * 100 + b"x" * 804 + b"z" * 10}


def test_states_of_a_crash_point(tmp_path: Path) -> None:
    rec = _record(tmp_path)
    states = dict(crash_states(rec, 7, SCALE, random.Random(0)))
    assert states["durable"] == {}
    assert set(states["all"]) == {4, 5, 6}
    trees = [build(rec, 7, keep) for keep in states.values()]
    for tree in trees:
        # One name or the other, never both, never none: a rename is atomic.
        assert len(tree) == 1
        content = next(iter(tree.values()))
        assert content is not None
        assert content[:4096] == b"x" * 4096
        # A partial write keeps whole pages of it: never half of y's page.
        assert content[4096:4196] in (b"x" * 100, b"y" * 100)


def test_a_directory_renamed_before_its_creation_is_durable(tmp_path: Path) -> None:
    """The backup's protocol in small: a directory made, a marker synced in
    it, the directory renamed, nothing of the parent synced. A state holds
    the directory under either name with its marker, or nothing; never the
    rename without the mkdir it moves."""
    rec = Recorder(tmp_path)
    io: FileIO = rec
    io.make_new_dir(str(tmp_path / "d.tmp"))
    handle = io.create(str(tmp_path / "d.tmp" / "m"))
    io.write(handle, b"marker")
    io.sync(handle)
    io.close(handle)
    io.sync_dir(str(tmp_path / "d.tmp"))
    io.rename(str(tmp_path / "d.tmp"), str(tmp_path / "d"))
    point = len(rec.entries)
    allowed = [{}, {"d.tmp": None, "d.tmp/m": b"marker"}, {"d": None, "d/m": b"marker"}]
    seen = []
    for seed in range(20):
        for label, keep in crash_states(rec, point, SCALE, random.Random(seed)):
            tree = build(rec, point, keep)
            assert tree in allowed, (label, tree)
            seen.append(tree)
    assert all(tree in seen for tree in allowed)


async def test_every_crash_state_of_an_import_is_no_store_incomplete_or_whole(
    tmp_path: Path,
) -> None:
    """`import-sqlite` (`_sqlite_copy.import_sqlite`) writes a new store the
    way `backup()` does (`DurableLog.create_from_state`); at every crash point
    of an import, in every state the fsync rules allow, the target is absent
    (or the empty directory), refused as incomplete (`ReadFailed` naming
    INCOMPLETE), or opens whole; once the import has returned, whole."""
    source = tmp_path / "source.db"
    model = ReferenceModel()
    async with ma.open_sqlite_store(source) as sqlite_store:
        for task in range(3):
            for operation in islice(plan(11, 0, task), 12):
                await operation.perform(sqlite_store)
                operation.apply(model)
    state = read_sqlite(str(source))
    root = tmp_path / "recorded"
    root.mkdir()
    rec = Recorder(root)
    import_sqlite(state, str(root / "imported"), io=rec)
    rng = random.Random(11)
    counts = {"states": 0, "absent": 0, "incomplete": 0, "whole": 0}
    last = len(rec.entries)
    for point in range(1, last + 1):
        for label, keep in crash_states(rec, point, SCALE, rng):
            counts["states"] += 1
            tree = build(rec, point, keep)
            where = f"crash after {point} ({rec.entries[point - 1].label}), {label}"
            held = {path for path in tree if path.split("/")[0] == "imported"}
            if not held - {"imported"}:
                assert point < last, f"{where}: the import returned, but nothing is there"
                counts["absent"] += 1
                continue
            directory = tmp_path / f"state-{counts['states']}"
            directory.mkdir()
            materialise({p: c for p, c in tree.items() if p in held}, directory)
            refused: ma.ReadFailed | None = None
            try:
                async with ma.open_store(directory / "imported") as store:
                    await assert_store_matches_model(store, model, runtime_ids=model.runtimes)
            except ma.ReadFailed as exc:
                refused = exc
            if refused is None:
                counts["whole"] += 1
            else:
                assert point < last, f"{where}: refused after the import returned: {refused}"
                assert "INCOMPLETE" in str(refused), f"{where}: {refused}"
                counts["incomplete"] += 1
            shutil.rmtree(directory)
    print(f"\nimport: {last} crash points, {counts}")
    assert counts["whole"] >= 1
