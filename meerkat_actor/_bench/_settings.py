"""How big a benchmark run is: the full suite, or the `--quick` smoke run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Final

__all__ = ["FULL", "PARTS", "QUICK", "Settings"]

#: The parts of a run, in the order they run (`--parts` picks some).
PARTS: Final = ("throughput", "recovery", "retention")


@dataclass(frozen=True, slots=True)
class Settings:
    """The sizes of one run.

    Attributes:
        quick: a smoke run (tiny counts; figures not meaningful).
        seconds: time budget of one throughput row (a row also ends when its
            prepared operations run out).
        tasks: the concurrency levels of the throughput workloads.
        commit_4k_writes, commit_64k_writes: prepared writes of the commit
            workloads (shared by the rows of a workload, each on a new store).
        mixed_operations: prepared operations of the mixed workload (one in
            five a write).
        oauth_operations: most OAuth increments in one row.
        recovery_sizes: input states of the recovery stores.
        recovery_runtimes: runtimes the recovery stores spread them over.
        memory_states: input states held by the memory measurement of the
            non-durable peers.
        checkpoint_tasks: tasks committing while a checkpoint runs.
        checkpoint_pause: each of those tasks' pause between two commits (s).
        checkpoint_baseline_max: longest stretch of the same load measured
            without a checkpoint, for comparison (s).
        retention_sizes: input states of the retention stores (spread over
            `recovery_runtimes` runtimes).
        parts: the parts that run (of `PARTS`, in that order).
    """

    quick: bool
    seconds: float
    tasks: tuple[int, ...]
    commit_4k_writes: int
    commit_64k_writes: int
    mixed_operations: int
    oauth_operations: int
    recovery_sizes: tuple[int, ...]
    recovery_runtimes: int
    memory_states: int
    checkpoint_tasks: int
    checkpoint_pause: float
    checkpoint_baseline_max: float
    retention_sizes: tuple[int, ...]
    parts: tuple[str, ...] = PARTS

    def with_overrides(
        self,
        seconds: float | None,
        recovery_sizes: tuple[int, ...] | None,
        *,
        retention_sizes: tuple[int, ...] | None = None,
        parts: tuple[str, ...] | None = None,
    ) -> Settings:
        """These settings with the command line's explicit choices applied."""
        changed = self
        if retention_sizes is not None:
            changed = replace(changed, retention_sizes=retention_sizes)
        if parts is not None:
            changed = replace(changed, parts=tuple(p for p in PARTS if p in parts))
        if seconds is not None:
            changed = replace(changed, seconds=seconds)
        if recovery_sizes is not None:
            changed = replace(
                changed, recovery_sizes=recovery_sizes, memory_states=min(recovery_sizes)
            )
        return changed

    def as_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["tasks"] = list(self.tasks)
        document["recovery_sizes"] = list(self.recovery_sizes)
        document["retention_sizes"] = list(self.retention_sizes)
        document["parts"] = list(self.parts)
        return document


FULL = Settings(
    quick=False,
    seconds=2.0,
    tasks=(1, 8, 64),
    commit_4k_writes=30_000,
    commit_64k_writes=12_000,
    mixed_operations=60_000,
    oauth_operations=200_000,
    recovery_sizes=(100_000, 1_000_000),
    recovery_runtimes=1_000,
    memory_states=100_000,
    checkpoint_tasks=8,
    checkpoint_pause=0.01,
    checkpoint_baseline_max=10.0,
    retention_sizes=(100_000,),
)

QUICK = Settings(
    quick=True,
    seconds=0.05,
    tasks=(1, 8, 64),
    commit_4k_writes=300,
    commit_64k_writes=200,
    mixed_operations=500,
    oauth_operations=500,
    recovery_sizes=(400, 1_000),
    recovery_runtimes=40,
    memory_states=400,
    checkpoint_tasks=8,
    checkpoint_pause=0.01,
    checkpoint_baseline_max=0.2,
    retention_sizes=(400,),
)
