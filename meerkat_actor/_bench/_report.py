"""Presenting a run: the human table, the machine description and the plot.

Rule: presentation only. Nothing here measures or decides; every figure comes
from a `Report`. The plot imports matplotlib when it is asked for, so the
package never depends on it.

A `--quick` run is a smoke test: its rows are too short to compare, so its
table says so and shows no ratio (no `vs ...` or `.../...` column, no
after/before row, no ratio line); its JSON document keeps every field, with
`"quick": true`.
"""

from __future__ import annotations

import importlib
import os
import platform
import shutil
import sys
from collections.abc import Iterable
from typing import Any, Final

from ._peers import PEERS
from ._results import (
    WORKLOADS,
    CheckpointRow,
    RemovalRow,
    Report,
    RetentionRow,
    SharedRow,
    ThroughputRow,
)
from ._sqlite_loop import LOOP, LOOP_TASKS

__all__ = ["PEER_TITLES", "describe_machine", "filesystem_of", "table", "write_plot"]

MIB: Final = 1024 * 1024

#: The columns that compare two figures: left out of a quick run's table.
RATIO_COLUMNS: Final = frozenset(
    {
        "vs SQLite",
        "vs sqlite3-loop",
        "vs memory",
        "vs 1 process",
        "p99 vs none",
        "peak/after",
    }
)
#: The retention table's rows that compare two figures (the `stage` cell).
RATIO_ROWS: Final = frozenset({"after/before", "VACUUM/before"})
QUICK_TITLE: Final = (
    "meerkat-actor bench --quick: a smoke test. Its rows are a few milliseconds long and its"
    " stores tiny: the figures below show that every workload and peer runs and reads back"
    " what it wrote; they are not measurements, and no ratio between them is shown. Run"
    " `meerkat-actor bench` (no --quick) for figures."
)

PEER_TITLES: Final = {
    "actor": "open_store(dir): the actor store, durable (default settings)",
    "sqlite": 'open_sqlite_store(file, synchronous="FULL"): the SQLite backend, durable',
    LOOP: "a plain sqlite3 loop in one worker thread, no trio (WAL, synchronous=FULL, the"
    " backend's rows): SQLite's best case; the commits at 1 task only",
    "postgres": 'open_postgres_store(dsn, synchronous_commit="on"): the PostgreSQL store, on a'
    " local server the bench starts (a Unix socket)",
    "memory": "open_store(): the actor store in memory",
    "dict": "dicts behind a trio.Lock, in memory: the naive baseline",
}


def filesystem_of(path: str) -> tuple[str, str]:
    """The (device, filesystem type) `path` lives on, from /proc/mounts
    (("?", "?") where that is not available)."""
    best = ("", "?", "?")
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                device, point, kind = line.split()[:3]
                inside = path == point or path.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best[0]):
                    best = (point, device, kind)
    except OSError:
        pass
    return best[1], best[2]


def describe_machine(directory: str) -> dict[str, Any]:
    """What the figures depend on: CPUs, Python, the disk the stores are on."""
    device, kind = filesystem_of(os.path.realpath(directory))
    usage = shutil.disk_usage(directory)
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "cpus": os.cpu_count(),
        "store_dir": os.path.realpath(directory),
        "device": device,
        "filesystem": kind,
        "disk_total_gib": round(usage.total / 2**30, 1),
        "disk_free_gib": round(usage.free / 2**30, 1),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _load(averages: list[float] | None) -> str:
    return "?" if not averages else " ".join(f"{a:.2f}" for a in averages)


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def _seconds(value: float) -> str:
    return f"{value:.3f}" if value < 1 else f"{value:,.1f}"


def _columns(
    rows: Iterable[tuple[str, ...]], right: Iterable[bool], drop: frozenset[str] = frozenset()
) -> list[str]:
    """Align rows of cells into lines; `right` says which columns align right.
    The columns whose heading (first row) is in `drop` are left out."""
    rows = list(rows)
    flags = list(right)
    if drop:
        keep = [i for i, heading in enumerate(rows[0]) if heading not in drop]
        rows = [tuple(row[i] for i in keep) for row in rows]
        flags = [flags[i] for i in keep]
    widths = [max(len(row[i]) for row in rows) for i in range(len(flags))]
    return [
        "  ".join(
            cell.rjust(width) if flag else cell.ljust(width)
            for cell, width, flag in zip(row, widths, flags, strict=True)
        ).rstrip()
        for row in rows
    ]


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _durable_ratios(rows: list[ThroughputRow]) -> str | None:
    """One line: the durable actor's ops/s over the `sqlite3-loop` peer's (at
    one task) and over the in-memory actor's (at each concurrency)."""
    actor = sorted((r for r in rows if r.peer == "actor"), key=lambda r: r.tasks)
    parts: list[str] = []
    loop = [r for r in actor if r.ratio_vs_sqlite3_loop is not None]
    if loop:
        parts += [
            f"{_times(r.ratio_vs_sqlite3_loop)} the sqlite3-loop's ({r.tasks} task)" for r in loop
        ]
    memory = [r for r in actor if r.ratio_vs_memory is not None]
    if memory:
        parts.append(
            " / ".join(_times(r.ratio_vs_memory) for r in memory)
            + " the in-memory actor's ("
            + " / ".join(str(r.tasks) for r in memory)
            + " tasks)"
        )
    return "durable actor ops/s: " + "; ".join(parts) if parts else None


def _shared_lines(rows: list[SharedRow], drop: frozenset[str]) -> list[str]:
    cells: list[tuple[str, ...]] = [
        (
            "peer",
            "processes",
            "tasks each",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "vs 1 process",
            "vs SQLite",
        )
    ]
    for r in rows:
        cells.append(
            (
                r.peer,
                f"{r.processes:,}",
                f"{r.tasks_per_process:,}",
                f"{r.ops_per_s:,.0f}",
                _ms(r.p50_ms),
                _ms(r.p99_ms),
                _times(r.ratio_vs_one_process),
                _times(r.ratio_vs_sqlite),
            )
        )
    return [
        "",
        "Shared database: durable commits (atomic_apply, 4 KiB session) from several"
        " processes at once on one database, each process with its own runtimes; ops/s of"
        " all of them together, latency over every call; every runtime checked afterwards.",
        *_columns(cells, [False, True, True, True, True, True, True, True], drop),
    ]


def _throughput_lines(rows: list[ThroughputRow], drop: frozenset[str]) -> list[str]:
    lines: list[str] = []
    for workload, title in WORKLOADS.items():
        mine = [r for r in rows if r.workload == workload]
        if not mine:
            continue
        mine.sort(key=lambda r: (r.tasks, PEERS.index(r.peer)))
        loop = any(r.ratio_vs_sqlite3_loop is not None for r in mine)
        header = [
            "peer",
            "tasks",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "fsync/commit",
            "batch",
            "loop lag ms",
            "gc ms",
            "vs SQLite",
            *(["vs sqlite3-loop"] if loop else []),
            "vs memory",
        ]
        cells: list[tuple[str, ...]] = [tuple(header)]
        for r in mine:
            cells.append(
                (
                    r.peer,
                    f"{r.tasks:,}",
                    f"{r.ops_per_s:,.0f}",
                    _ms(r.p50_ms),
                    _ms(r.p99_ms),
                    _ms(r.max_ms),
                    "n/a" if r.fsyncs_per_commit is None else f"{r.fsyncs_per_commit:.3f}",
                    "-" if r.largest_batch is None else f"{r.largest_batch:,}",
                    _ms(r.worst_loop_lag_ms),
                    _ms(r.worst_gc_pause_ms),
                    f"{r.ratio_vs_sqlite:.2f}x",
                    *([_times(r.ratio_vs_sqlite3_loop)] if loop else []),
                    _times(r.ratio_vs_memory),
                )
            )
        lines += ["", title, *_columns(cells, [False] + [True] * (len(header) - 1), drop)]
        if not drop:
            summary = _durable_ratios(mine)
            if summary is not None:
                lines.append(summary)
            postgres = _postgres_ratios(mine)
            if postgres is not None:
                lines.append(postgres)
        lines += _split_lines(mine)
    return lines


def _postgres_ratios(rows: list[ThroughputRow]) -> str | None:
    """One line: the PostgreSQL store's ops/s over the SQLite backend's and
    over the durable actor store's, at each concurrency (None without
    PostgreSQL rows)."""
    actor = {r.tasks: r.ops_per_s for r in rows if r.peer == "actor"}
    postgres = sorted((r for r in rows if r.peer == "postgres"), key=lambda r: r.tasks)
    if not postgres:
        return None
    tasks = " / ".join(str(r.tasks) for r in postgres)
    over_sqlite = " / ".join(_times(r.ratio_vs_sqlite) for r in postgres)
    over_actor = " / ".join(
        _times(r.ops_per_s / actor[r.tasks] if r.tasks in actor else None) for r in postgres
    )
    return (
        f"postgres ops/s: {over_sqlite} the SQLite backend's; {over_actor} the durable actor"
        f" store's ({tasks} tasks)"
    )


def _split_lines(rows: list[ThroughputRow]) -> list[str]:
    """The mixed workload's latency by kind of call (nothing for the others)."""
    split = [r for r in rows if r.read_us_by_call is not None]
    if not split:
        return []
    calls = list(next(r.read_us_by_call for r in split if r.read_us_by_call is not None))
    cells: list[tuple[str, ...]] = [
        (
            "peer",
            "tasks",
            "reads",
            "read p50 us",
            "read p99 us",
            *(f"{call} p50/p99 us" for call in calls),
            "writes",
            "write p50 ms",
            "write p99 ms",
        )
    ]

    def both(figures: dict[str, float]) -> str:
        return f"{_ms(figures.get('p50'))} / {_ms(figures.get('p99'))}"

    for r in split:
        by_call = r.read_us_by_call or {}
        cells.append(
            (
                r.peer,
                f"{r.tasks:,}",
                f"{r.ops - r.writes:,}",
                _ms(r.read_p50_us),
                _ms(r.read_p99_us),
                *(both(by_call.get(call, {})) for call in calls),
                f"{r.writes:,}",
                _ms(r.write_p50_ms),
                _ms(r.write_p99_ms),
            )
        )
    return [
        "",
        "mixed, by kind of call: its point reads alone (microseconds; and each read method),"
        " its atomic_apply calls alone (milliseconds)",
        *_columns(cells, [False] + [True] * (len(cells[0]) - 1)),
    ]


def _ratio(after: float | None, before: float | None) -> str:
    if after is None or before is None or before == 0:
        return "-"
    return f"{after / before:.2f}x"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


_STAGES: Final = {"after_log": "after, not checkpointed"}


def _retention_lines(
    rows: list[RetentionRow], removals: list[RemovalRow], ratios: bool
) -> list[str]:
    """The retention part: the opens before and after, then the removal itself
    (without `ratios`: no after/before rows, no actor-vs-SQLite line)."""
    lines: list[str] = []
    for size in sorted({r.input_states for r in removals}):
        done = {r.peer: r for r in removals if r.input_states == size}
        opens = {(r.peer, r.stage): r for r in rows if r.built == size}
        cells: list[tuple[str, ...]] = [
            (
                "peer",
                "stage",
                "input states",
                "runtimes",
                "payloads",
                "receipts",
                "open s",
                "read all s",
                "RSS growth MiB",
                "peak RSS MiB",
                "snapshot MiB",
                "on disk MiB",
            )
        ]
        for peer, removal in done.items():
            before, after = opens.get((peer, "before")), opens.get((peer, "after"))
            if before is None or after is None:
                continue
            log = opens.get((peer, "after_log"))
            for r in (before, *([log] if log else []), after):
                cells.append(
                    (
                        peer,
                        _STAGES.get(r.stage, r.stage),
                        f"{r.input_states:,}",
                        f"{r.runtimes:,}",
                        f"{r.payloads:,}",
                        f"{r.receipts:,}",
                        _seconds(r.open_s),
                        _seconds(r.read_all_s),
                        f"{r.rss_after_open_mib - r.rss_before_mib:,.1f}",
                        f"{r.peak_rss_mib:,.0f}",
                        _mib(r.snapshot_bytes),
                        _mib(r.disk_bytes),
                    )
                )
            cells.append(
                (
                    peer,
                    "after/before",
                    _ratio(after.input_states, before.input_states),
                    _ratio(after.runtimes, before.runtimes),
                    _ratio(after.payloads, before.payloads),
                    _ratio(after.receipts, before.receipts),
                    _ratio(after.open_s, before.open_s),
                    _ratio(after.read_all_s, before.read_all_s),
                    _ratio(
                        after.rss_after_open_mib - after.rss_before_mib,
                        before.rss_after_open_mib - before.rss_before_mib,
                    ),
                    _ratio(after.peak_rss_mib, before.peak_rss_mib),
                    _ratio(after.snapshot_bytes, before.snapshot_bytes),
                    _ratio(after.disk_bytes, before.disk_bytes),
                )
            )
            if removal.vacuumed_bytes is not None:
                cells.append((peer, "after VACUUM", *[""] * 9, _mib(removal.vacuumed_bytes)))
                cells.append(
                    (
                        peer,
                        "VACUUM/before",
                        *[""] * 9,
                        _ratio(removal.vacuumed_bytes, before.disk_bytes),
                    )
                )
        first = next(iter(done.values()))
        lines += [
            "",
            f"Retention: {size:,} input states over {first.runtimes:,} runtimes; the removal"
            " retires the payload of every terminal input state, then destroys and purges"
            f" {first.purged:,} runtimes. Each open in a new process, everything checked"
            " after it. RSS growth = resident memory of the open store. Not checkpointed ="
            " the actor store as the removal left it before its checkpoint (the old snapshot,"
            " the removal in the log).",
            *_columns(
                [c for c in cells if ratios or c[1] not in RATIO_ROWS],
                [False, False, *[True] * 10],
            ),
        ]
        cells = [
            (
                "peer",
                "pick s",
                "retire calls",
                "retired",
                "retire s",
                "retired/s",
                "destroy s",
                "purged",
                "purge s",
                "purged/s",
                "checkpoint s",
                "VACUUM s",
                "RSS after open MiB",
                "after removal MiB",
            )
        ]
        for m in done.values():
            cells.append(
                (
                    m.peer,
                    _seconds(m.select_s),
                    f"{m.retire_calls:,}",
                    f"{m.retired:,}",
                    _seconds(m.retire_s),
                    f"{m.retired / m.retire_s:,.0f}" if m.retire_s else "-",
                    _seconds(m.destroy_s),
                    f"{m.purged:,}",
                    _seconds(m.purge_s),
                    f"{m.purged / m.purge_s:,.0f}" if m.purge_s else "-",
                    "-" if m.checkpoint_s is None else _seconds(m.checkpoint_s),
                    "-" if m.vacuum_s is None else _seconds(m.vacuum_s),
                    f"{m.rss_after_open_mib:,.0f}",
                    f"{m.rss_after_removal_mib:,.0f}",
                )
            )
        lines += [
            "",
            "The removal, by one task in a new process: per runtime one load_input_states (pick:"
            " the terminal states) and one retire_input_payloads call; then"
            " commit_machine_lifecycle to destroyed and purge_runtime, one call each per runtime.",
            *_columns(cells, [False, *[True] * 13]),
        ]
        actor, sqlite = done.get("actor"), done.get("sqlite")
        actor_after, sqlite_after = opens.get(("actor", "after")), opens.get(("sqlite", "after"))
        if ratios and actor and sqlite and actor_after and sqlite_after:
            lines.append(
                "actor vs SQLite: retire time "
                + _ratio(actor.retire_s, sqlite.retire_s)
                + ", purge time "
                + _ratio(actor.purge_s, sqlite.purge_s)
                + ", on disk after "
                + _ratio(actor_after.disk_bytes, sqlite_after.disk_bytes)
                + (
                    f" ({_ratio(actor_after.disk_bytes, sqlite.vacuumed_bytes)} of the vacuumed"
                    " file)"
                    if sqlite.vacuumed_bytes
                    else ""
                )
                + ", open then read all after "
                + _ratio(
                    actor_after.open_s + actor_after.read_all_s,
                    sqlite_after.open_s + sqlite_after.read_all_s,
                )
            )
    return lines


def _checkpoint_lines(rows: list[CheckpointRow], drop: frozenset[str]) -> list[str]:
    """Commits during the checkpoint, during the backup, and with neither."""
    cells: list[tuple[str, ...]] = [
        (
            "input states",
            "",
            "seconds",
            "commits",
            "p50 ms",
            "p99 ms",
            "p99 vs none",
            "worst ms",
            "worst delay ms",
            "loop lag ms",
            "gc ms",
            "snapshot MiB",
        )
    ]
    for c in rows:
        cells.append(
            (
                f"{c.input_states:,}",
                "checkpoint",
                f"{c.seconds:,.2f}",
                f"{c.commits_during:,}",
                _ms(c.p50_commit_ms_during),
                _ms(c.p99_commit_ms_during),
                _ratio(c.p99_commit_ms_during, c.p99_commit_ms_without),
                _ms(c.worst_commit_ms_during),
                _ms(c.worst_delay_ms_during),
                _ms(c.worst_loop_lag_ms_during),
                _ms(c.worst_gc_pause_ms_during),
                f"{c.snapshot_bytes / MIB:,.1f}",
            )
        )
        if c.backup_s is not None and c.commits_backup is not None:
            cells.append(
                (
                    "",
                    "backup",
                    f"{c.backup_s:,.2f}",
                    f"{c.commits_backup:,}",
                    _ms(c.p50_commit_ms_backup),
                    _ms(c.p99_commit_ms_backup),
                    _ratio(c.p99_commit_ms_backup, c.p99_commit_ms_without),
                    _ms(c.worst_commit_ms_backup),
                    _ms(c.worst_delay_ms_backup),
                    _ms(c.worst_loop_lag_ms_backup),
                    _ms(c.worst_gc_pause_ms_backup),
                    _mib(c.backup_bytes),
                )
            )
        cells.append(
            (
                "",
                "neither",
                f"{c.baseline_s:,.2f}",
                f"{c.commits_without:,}",
                _ms(c.p50_commit_ms_without),
                _ms(c.p99_commit_ms_without),
                "",
                _ms(c.worst_commit_ms_without),
                _ms(c.worst_delay_ms_without),
                _ms(c.worst_loop_lag_ms_without),
                _ms(c.worst_gc_pause_ms_without),
                "",
            )
        )
    first = rows[0]
    return [
        "",
        f"Checkpoint, then backup(), of the log-only actor store while {first.tasks} tasks"
        f" commit (4 KiB session, 1-8 input states, {first.pause_ms:g} ms pause each); then"
        " the same load with neither."
        + ("" if drop else " p99 vs none = the commit p99 over the p99 with neither.")
        + " Delay = from when a task meant to commit (its pause over) to the return: it also"
        " counts a stall between two calls.",
        *_columns(cells, [True, False, *[True] * 10], drop),
    ]


def table(report: Report) -> str:
    """The human-readable report."""
    machine = report.machine
    width = max((len(peer) for peer in report.peers), default=0)
    drop = RATIO_COLUMNS if report.quick else frozenset()
    lines = [
        QUICK_TITLE if report.quick else "meerkat-actor bench",
        f"machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}",
        f"stores in {machine['store_dir']} ({machine['filesystem']} on {machine['device']})",
        "load average (1, 5, 15 min): at start "
        + _load(machine.get("load_average_at_start"))
        + ", at end "
        + _load(machine.get("load_average_at_end")),
        *([f"postgres: {machine['postgres']}"] if "postgres" in machine else []),
        "peers:",
        *(f"  {peer:<{width}} {PEER_TITLES[peer]}" for peer in report.peers),
    ]
    if report.throughput:
        lines += [
            "",
            "Throughput: every row runs the same prepared operations on a new store"
            f" ({report.settings['seconds']:g} s per row at most).",
            "Latency per call; batch = most commands the actor applied in one go; loop lag = worst"
            " overshoot of a 1 ms heartbeat sleep; gc = longest garbage collection"
            + (
                "."
                if drop
                else "; vs SQLite, vs sqlite3-loop, vs memory = ops/s over that peer's (the"
                " SQLite backend's, the plain sqlite3 loop's, the in-memory actor's), same"
                f" workload and tasks (- where it has no row: the loop runs the commits at"
                f" {LOOP_TASKS} task only)."
            ),
            "SQLite does not count fsyncs: in WAL mode with synchronous=FULL it syncs the WAL once"
            " per COMMIT.",
            *_throughput_lines(report.throughput, drop),
        ]
    if report.shared:
        lines += _shared_lines(report.shared, drop)
    if report.recovery:
        cells: list[tuple[str, ...]] = [
            (
                "input states",
                "peer",
                "from",
                "open s",
                "read all s",
                "peak RSS MiB",
                "RSS after MiB",
                "peak/after",
                "on disk MiB",
                "found",
            )
        ]
        for r in report.recovery:
            cells.append(
                (
                    f"{r.input_states:,}",
                    r.peer,
                    r.source,
                    _seconds(r.open_s),
                    _seconds(r.read_all_s),
                    f"{r.peak_rss_mib:,.0f}",
                    f"{r.rss_after_open_mib:,.0f}",
                    _ratio(r.peak_rss_mib, r.rss_after_open_mib),
                    f"{r.disk_bytes / MIB:,.1f}",
                    f"{r.found_input_states:,}" + (" (all)" if r.verified else " (MISSING)"),
                )
            )
        runtimes = report.recovery[0].runtimes
        lines += [
            "",
            f"Recovery: opening a store in a new process ({runtimes:,} runtimes;"
            " every input state checked afterwards)."
            + ("" if drop else " peak/after = the open's peak RSS over the RSS right after it."),
            *_columns(cells, [True, False, False, True, True, True, True, True, True, False], drop),
        ]
    if report.checkpoint:
        lines += _checkpoint_lines(report.checkpoint, drop)
    if report.memory:
        cells = [("peer", "input states", "bytes/state", "disk bytes/state", "measured")]
        for m in report.memory:
            disk = "-" if m.disk_bytes_per_state is None else f"{m.disk_bytes_per_state:,.0f}"
            cells.append(
                (m.peer, f"{m.input_states:,}", f"{m.bytes_per_state:,.0f}", disk, m.measured)
            )
        lines += [
            "",
            "Memory per stored input state (with its share of receipts and session snapshots)",
            *_columns(cells, [False, True, True, True, False]),
        ]
    lines += _retention_lines(report.retention, report.removals, ratios=not drop)
    lines += ["", f"total time: {report.elapsed_s:.1f} s"]
    return "\n".join(lines)


def write_plot(report: Report, path: str) -> None:
    """Throughput against concurrency, one panel per workload, one line per
    peer, as a PNG at `path`. Needs matplotlib (imported here)."""
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    pyplot: Any = importlib.import_module("matplotlib.pyplot")
    figure, axes = pyplot.subplots(2, 2, figsize=(12, 8.5))
    styles: dict[str, dict[str, str]] = {
        "actor": {"marker": "o", "color": "tab:blue"},
        "sqlite": {"marker": "s", "color": "tab:orange"},
        "memory": {"marker": "^", "color": "tab:green", "linestyle": "--"},
        "dict": {"marker": "v", "color": "tab:gray", "linestyle": ":"},
        LOOP: {"marker": "D", "color": "tab:red", "linestyle": "none"},
        "postgres": {"marker": "P", "color": "tab:purple"},
    }
    tasks = sorted({r.tasks for r in report.throughput})
    for axis, (workload, title) in zip(axes.flat, WORKLOADS.items(), strict=True):
        for peer in report.peers:
            rows = sorted(
                (r for r in report.throughput if r.workload == workload and r.peer == peer),
                key=lambda r: r.tasks,
            )
            axis.plot(
                [r.tasks for r in rows],
                [r.ops_per_s for r in rows],
                label=peer,
                **styles[peer],
            )
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(tasks)
        axis.set_xticklabels([str(t) for t in tasks])
        axis.set_title(title.replace(": ", ":\n", 1), fontsize=10)
        axis.set_xlabel("concurrent trio tasks")
        axis.set_ylabel("operations per second")
        axis.grid(True, which="both", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(labels))
    machine = report.machine
    figure.suptitle(
        f"meerkat-actor bench: throughput vs concurrency ({machine['cpus']} CPUs,"
        f" {machine['filesystem']}, Python {machine['python']})"
    )
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
