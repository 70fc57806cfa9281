"""The figures a benchmark run produces, as frozen rows (the JSON document's shape)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = [
    "WORKLOADS",
    "BuildRow",
    "CheckpointRow",
    "MemoryRow",
    "RecoveryRow",
    "RemovalRow",
    "Report",
    "RetentionRow",
    "ThroughputRow",
]

#: The throughput workloads, in table order, with their one-line titles.
WORKLOADS: Final = {
    "commit_4k": "durable commits: atomic_apply, 4 KiB session, 1-8 input states",
    "commit_64k": "durable commits: atomic_apply, 64 KiB session, 1-8 input states",
    "mixed": "mixed: 80% point reads, 20% atomic_apply (4 KiB session)",
    "oauth": "OAuth read-modify-write: update_auth_oauth_flow_snapshot (counter)",
}


@dataclass(frozen=True, slots=True)
class ThroughputRow:
    """One workload on one peer at one concurrency.

    `fsyncs_per_commit` is `None` for SQLite (it does not count them: in WAL
    mode with synchronous=FULL it syncs the WAL once per COMMIT) and 0 for the
    peers without a disk. For the actor stores, `checkpoints` counts the
    snapshots taken during the row and `largest_batch` is the most commands
    the actor applied in one go (both `None` for SQLite and the dict).
    `ratio_vs_sqlite` is `ops_per_s` over SQLite's `ops_per_s` in the same
    workload at the same concurrency; `ratio_vs_sqlite3_loop` and
    `ratio_vs_memory` the same over the `sqlite3-loop` peer's and the
    in-memory actor's (`None` where that peer has no row: the loop runs the
    durable-commit workloads at one task only).

    The mixed workload's rows also split the latency by kind of call:
    `read_p50_us`/`read_p99_us` over its point reads (microseconds),
    `write_p50_ms`/`write_p99_ms` over its `atomic_apply` calls, and
    `read_us_by_call` each point-read method's `reads`, `p50` and `p99`
    (microseconds). `None` in the other workloads.
    """

    workload: str
    peer: str
    tasks: int
    ops: int
    writes: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    fsyncs_per_commit: float | None
    checkpoints: int | None
    largest_batch: int | None
    worst_loop_lag_ms: float
    worst_gc_pause_ms: float
    verified: bool
    ratio_vs_sqlite: float = 0.0
    ratio_vs_sqlite3_loop: float | None = None
    ratio_vs_memory: float | None = None
    read_p50_us: float | None = None
    read_p99_us: float | None = None
    write_p50_ms: float | None = None
    write_p99_ms: float | None = None
    read_us_by_call: dict[str, dict[str, float]] | None = None


@dataclass(frozen=True, slots=True)
class RecoveryRow:
    """Opening a store that holds `input_states` input states, in a fresh process.

    `source` is `checkpoint` (the actor store closed cleanly: one snapshot),
    `log` (a copy taken while it was open: everything in the log) or `file`
    (the SQLite file). `open_s` is the open call; `read_all_s` the time of
    `load_input_states` for every runtime afterwards; `found_input_states`
    the input states the reopened store holds that match what was written.
    `peak_rss_over_after_open` is `peak_rss_mib` over `rss_after_open_mib`
    (the peak is read right after the open: the open's own peak).
    """

    peer: str
    source: str
    input_states: int
    runtimes: int
    receipts: int
    found_input_states: int
    verified: bool
    open_s: float
    read_all_s: float
    rss_before_mib: float
    rss_after_open_mib: float
    peak_rss_mib: float
    disk_bytes: int
    peak_rss_over_after_open: float | None = None


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """An explicit `checkpoint()` of the log-only actor store with `input_states`
    input states, while `tasks` tasks commit (each pausing `pause_ms` between
    commits: the `*_during` figures); then a `backup()` of it to a new
    directory under the same load (`*_backup`; `backup_bytes` is the size
    `backup()` returned, its snapshot's); then the same load for as long as
    the longer of the two took (at least 1 s, at most a cap) with neither
    (`*_without`).

    `*_commit_ms_*` are call latencies of `atomic_apply`; `worst_delay_ms_*`
    counts from when a task meant to call (its pause over) to the return, so
    it also holds a stall of the event loop that struck between two calls.
    `p99_during_over_without` and `p99_backup_over_without` are the commit
    p99 during the checkpoint and during the backup over the p99 without
    either. The backup fields are `None` in documents of runs before they
    were measured.
    """

    input_states: int
    seconds: float
    snapshot_bytes: int
    tasks: int
    pause_ms: float
    commits_during: int
    p50_commit_ms_during: float
    p99_commit_ms_during: float
    worst_commit_ms_during: float
    worst_delay_ms_during: float
    worst_loop_lag_ms_during: float
    worst_gc_pause_ms_during: float
    baseline_s: float
    commits_without: int
    p50_commit_ms_without: float
    p99_commit_ms_without: float
    worst_commit_ms_without: float
    worst_delay_ms_without: float
    worst_loop_lag_ms_without: float
    worst_gc_pause_ms_without: float
    peak_rss_mib: float
    p99_during_over_without: float | None = None
    backup_s: float | None = None
    backup_bytes: int | None = None
    commits_backup: int | None = None
    p50_commit_ms_backup: float | None = None
    p99_commit_ms_backup: float | None = None
    worst_commit_ms_backup: float | None = None
    worst_delay_ms_backup: float | None = None
    worst_loop_lag_ms_backup: float | None = None
    worst_gc_pause_ms_backup: float | None = None
    p99_backup_over_without: float | None = None


@dataclass(frozen=True, slots=True)
class MemoryRow:
    """Memory per stored input state: the process's RSS growth once the store
    holds `input_states` input states (with their receipts and the runtimes'
    session snapshots), divided by `input_states`. `disk_bytes_per_state` is
    the store's size on disk per input state (`None` without a disk)."""

    peer: str
    input_states: int
    bytes_per_state: float
    disk_bytes_per_state: float | None
    measured: str


@dataclass(frozen=True, slots=True)
class BuildRow:
    """Building the recovery stores (the parent process, not timed as results
    elsewhere): the actor store with 64 committing tasks, its close (a final
    checkpoint of everything), and the SQLite file with synchronous=OFF."""

    input_states: int
    receipts: int
    actor_commit_s: float
    actor_close_s: float
    sqlite_commit_s: float


@dataclass(frozen=True, slots=True)
class RetentionRow:
    """One open of a retention store, in a fresh process, before or after the
    removal (`stage`: `before`; `after`, once the removal is checkpointed;
    `after_log`, the actor store as the removal left it before that
    checkpoint: its old snapshot and the removal in its log).

    The store was built with `built` input states; it held `input_states`
    input states over `runtimes` runtimes
    (listed by `list_runtimes`), of which `payloads` still carry their
    `persisted_input`. `open_s` is the open call, `read_all_s` the time of
    `load_input_states` for every listed runtime afterwards. `rss_*` are the
    child's resident memory before the open and right after it (their
    difference is the open store's resident memory), `peak_rss_mib` its
    high-water mark. `snapshot_bytes` is the actor store's snapshot file
    (`None` for SQLite); `disk_bytes` every file of the store (SQLite: the
    database with its WAL, if any). `verified`: the child found exactly what
    the store should hold (else the run fails).
    """

    peer: str
    stage: str
    built: int
    input_states: int
    runtimes: int
    payloads: int
    receipts: int
    open_s: float
    read_all_s: float
    rss_before_mib: float
    rss_after_open_mib: float
    peak_rss_mib: float
    snapshot_bytes: int | None
    disk_bytes: int
    verified: bool


@dataclass(frozen=True, slots=True)
class RemovalRow:
    """The removal of a retention store, by one task in a fresh process.

    For every runtime, `load_input_states` picks the terminal states that
    still carry a payload (`select_s` in all) and one `retire_input_payloads`
    call retires them (`retire_calls` calls, `retired` payloads, `retire_s`).
    Then half of the runtimes are committed to `destroyed`
    (`commit_machine_lifecycle`, `destroy_s`) and purged (`purge_runtime`,
    `purged` calls, `purge_s`), which removes `purged_input_states` input
    states and `purged_receipts` receipts. `rss_after_open_mib` and
    `rss_after_removal_mib` are the process's resident memory before the
    calls and after them (and a `gc.collect()`). The actor store then takes a
    `checkpoint()` (`checkpoint_s`; `None` for SQLite). SQLite's file is
    then vacuumed by the parent (`vacuum_s`, `vacuumed_bytes`: its size
    afterwards; `None` for the actor store).
    """

    peer: str
    input_states: int
    runtimes: int
    select_s: float
    retire_calls: int
    retired: int
    retire_s: float
    destroy_s: float
    purged: int
    purged_input_states: int
    purged_receipts: int
    purge_s: float
    rss_after_open_mib: float
    rss_after_removal_mib: float
    checkpoint_s: float | None
    vacuum_s: float | None = None
    vacuumed_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class SharedRow:
    """`processes` processes of `tasks_per_process` tasks each, on one database
    of `peer`: the fleet's ops/s, latency over every call, and ratios over the
    same peer with one process and over SQLite with as many processes."""

    workload: str
    peer: str
    processes: int
    tasks_per_process: int
    ops: int
    seconds: float
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    verified: bool
    ratio_vs_one_process: float = 0.0
    ratio_vs_sqlite: float = 0.0


@dataclass(slots=True)
class Report:
    """Everything one run measured."""

    version: str
    quick: bool
    machine: dict[str, Any]
    settings: dict[str, Any]
    peers: list[str]
    workloads: dict[str, str]
    throughput: list[ThroughputRow] = field(default_factory=list)
    recovery: list[RecoveryRow] = field(default_factory=list)
    checkpoint: list[CheckpointRow] = field(default_factory=list)
    memory: list[MemoryRow] = field(default_factory=list)
    builds: list[BuildRow] = field(default_factory=list)
    retention: list[RetentionRow] = field(default_factory=list)
    removals: list[RemovalRow] = field(default_factory=list)
    shared: list[SharedRow] = field(default_factory=list)
    elapsed_s: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Report:
        """The report an earlier `as_json()` made.

        Raises:
            KeyError, TypeError: `document` is not such a report.
        """
        return cls(
            version=document["version"],
            quick=document["quick"],
            machine=document["machine"],
            settings=document["settings"],
            peers=document["peers"],
            workloads=document["workloads"],
            throughput=[ThroughputRow(**row) for row in document["throughput"]],
            recovery=[RecoveryRow(**row) for row in document["recovery"]],
            checkpoint=[CheckpointRow(**row) for row in document["checkpoint"]],
            memory=[MemoryRow(**row) for row in document["memory"]],
            builds=[BuildRow(**row) for row in document["builds"]],
            # Documents of runs before the retention part have neither.
            retention=[RetentionRow(**row) for row in document.get("retention", [])],
            removals=[RemovalRow(**row) for row in document.get("removals", [])],
            # Documents of runs before the shared-database rows have none.
            shared=[SharedRow(**row) for row in document.get("shared", [])],
            elapsed_s=document["elapsed_s"],
        )
