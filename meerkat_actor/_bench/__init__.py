"""`meerkat-actor bench`: the benchmark suite (issue 5 §2).

Rule 1: same run, same disk, same operations. Every figure of a store comes
with its peers' figures for the same workload and concurrency, measured in the
same run, in the same directory: the durable actor store, the SQLite backend
(the durable peer), SQLite's best case (`sqlite3-loop`: a plain `sqlite3`
loop writing the backend's rows, the durable commits at one task), the
PostgreSQL store (on a throwaway cluster the run starts, where PostgreSQL and
psycopg are installed), the in-memory actor store and a naive baseline
(dicts behind a `trio.Lock`).
Ratios are against SQLite, the loop and the in-memory actor, pair by pair.

Rule 2: measure the store, not the benchmark. Payloads are built before the
clock starts, in worker threads; nothing of the benchmark blocks the trio
event loop (directories are made, copied and removed in worker threads,
child processes run through `trio.run_process`); a heartbeat beside every
timed part records the loop's worst lag. Recoveries run in fresh processes.

Rule 3: a wrong answer voids the run. Every row reads back what it wrote,
every recovery checks every input state it should hold; a difference fails
the command (exit 1) instead of printing figures of a broken store.

Modules: `_payloads` (realistic values), `_peers` (the stores and the
baseline), `_sqlite_loop` (the plain sqlite3 loop), `_measure` (driver,
heartbeat, memory), `_throughput` (the four workloads at each
concurrency), `_shared` (several processes committing to one database),
`_recovery` (recovery, checkpoint and backup, memory), `_retention`
(retiring payloads and purging runtimes: memory, snapshot, disk and open
time before and after), `_children` (running a measurement
in a fresh process), `_results` (the rows), `_report` (table, JSON, plot).
See docs/benchmarks.md.

The command line (`meerkat_actor/__main__.py`) calls `add_arguments(parser)`
to configure the `bench` subcommand and `run(args)` to run it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable

import trio

from .. import __version__
from .._errors import ReadFailed, WriteFailed
from ._measure import BenchFailure
from ._peers import PEERS
from ._recovery import run_recovery
from ._report import describe_machine, filesystem_of, table, write_plot
from ._results import WORKLOADS, Report
from ._retention import run_retention
from ._settings import FULL, PARTS, QUICK, Settings
from ._throughput import run_throughput

__all__ = ["add_arguments", "run"]

PLOT_EXTRA = "pip install 'meerkat_actor[plot]'"
_MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of counts: {text!r}"
        ) from None
    if any(size < 1 for size in sizes):
        raise argparse.ArgumentTypeError(f"every size must be at least 1, got {text}")
    return sizes


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(","))
    unknown = [part for part in parts if part not in PARTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown part {unknown[0]!r}; the parts are {', '.join(PARTS)}"
        )
    return parts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Configure the `bench` subcommand's parser."""
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke test of every workload and peer with tiny counts (seconds, not minutes):"
        " its figures are not measurements, and it prints no ratios",
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="make the stores in a new temporary directory inside DIR (created if missing;"
        " default: the current directory); it is removed afterwards",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--plot",
        metavar="PATH",
        help=f"also write a PNG of throughput against concurrency (needs: {PLOT_EXTRA})",
    )
    parser.add_argument(
        "--from-json",
        metavar="FILE",
        help="measure nothing: present the report of an earlier --json run (as the table,"
        " or with --json, --plot)",
    )
    parser.add_argument(
        "--seconds",
        type=_positive_float,
        metavar="S",
        help=f"time budget of each throughput row (default {FULL.seconds:g}; --quick"
        f" {QUICK.seconds:g})",
    )
    parser.add_argument(
        "--recovery-sizes",
        type=_sizes,
        metavar="N,N",
        help="input states of the recovery stores (default"
        f" {','.join(str(n) for n in FULL.recovery_sizes)}; --quick"
        f" {','.join(str(n) for n in QUICK.recovery_sizes)})",
    )
    parser.add_argument(
        "--retention-sizes",
        type=_sizes,
        metavar="N,N",
        help="input states of the retention stores (default"
        f" {','.join(str(n) for n in FULL.retention_sizes)}; --quick"
        f" {','.join(str(n) for n in QUICK.retention_sizes)})",
    )
    parser.add_argument(
        "--parts",
        type=_parts,
        metavar="PART,PART",
        help=f"run only these parts (of {', '.join(PARTS)}; default: all)",
    )


def _error(args: argparse.Namespace, kind: str, message: str, status: int) -> int:
    """Report an error as every command does (stderr; with --json also stdout)."""
    print(f"meerkat-actor: error: {message}", file=sys.stderr)
    if args.json:
        print(json.dumps({"error": {"kind": kind, "message": message}}))
    return status


def _usage_error(message: str) -> int:
    """A usage error: stderr only, exit 2 (as argparse's own)."""
    print(f"meerkat-actor bench: error: {message}", file=sys.stderr)
    return 2


def _progress() -> Callable[[str], None]:
    """Progress lines on stderr when it is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        return lambda message: None
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {message}", file=sys.stderr, flush=True)

    return say


async def _main(
    settings: Settings, workdir: str, machine: dict[str, object], progress: Callable[[str], None]
) -> Report:
    started = time.perf_counter()
    report = Report(
        version=__version__,
        quick=settings.quick,
        machine=machine,
        settings=settings.as_json(),
        peers=list(PEERS),
        workloads=dict(WORKLOADS),
    )
    if "throughput" in settings.parts:
        report.throughput, report.shared = await run_throughput(
            settings, workdir, progress, report.machine
        )
    if "recovery" in settings.parts:
        (
            report.recovery,
            report.checkpoint,
            report.memory,
            report.builds,
        ) = await run_recovery(settings, workdir, progress)
    if "retention" in settings.parts:
        report.retention, report.removals = await run_retention(settings, workdir, progress)
    report.elapsed_s = time.perf_counter() - started
    if hasattr(os, "getloadavg"):
        report.machine["load_average_at_end"] = list(os.getloadavg())
    return report


def _benchmark(args: argparse.Namespace) -> Report | int:
    """Run the benchmark in a new temporary directory; the report, or an exit status."""
    settings = (QUICK if args.quick else FULL).with_overrides(
        args.seconds,
        args.recovery_sizes,
        retention_sizes=args.retention_sizes,
        parts=args.parts,
    )
    parent = os.path.abspath(args.dir if args.dir is not None else os.getcwd())
    try:
        os.makedirs(parent, exist_ok=True)
        workdir = tempfile.mkdtemp(prefix="meerkat-bench-", dir=parent)
    except OSError as exc:
        return _error(args, "io", f"cannot make a directory in {parent}: {exc}", 7)
    try:
        machine = describe_machine(workdir)
        if filesystem_of(workdir)[1] in _MEMORY_FILESYSTEMS:
            print(
                f"meerkat-actor: warning: {workdir} is on {machine['filesystem']}, not a disk:"
                " fsyncs cost nothing there",
                file=sys.stderr,
            )
        report: Report = trio.run(_main, settings, workdir, machine, _progress())
    except BenchFailure as failure:
        return _error(args, "mismatch", f"benchmark aborted: {failure}", 1)
    except (OSError, ReadFailed, WriteFailed) as exc:
        return _error(args, "io", f"benchmark aborted in {workdir}: {exc}", 7)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _load(args: argparse.Namespace) -> Report | int:
    """The report of an earlier `--json` run (`--from-json FILE`), or an exit status."""
    path = args.from_json
    try:
        with open(path, encoding="utf-8") as file:
            return Report.from_json(json.load(file))
    except FileNotFoundError:
        return _error(args, "not_found", f"{path} does not exist", 3)
    except OSError as exc:
        return _error(args, "io", f"cannot read {path}: {exc}", 7)
    except (ValueError, KeyError, TypeError) as exc:
        return _usage_error(f"--from-json: {path} is not a `bench --json` document ({exc!r})")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed `args` ask for; return the exit status.

    0: done; 1: a store gave a wrong answer (nothing is reported for it);
    2: a bad option, or `--plot` without matplotlib; 3: `--from-json` file
    missing; 7: an I/O error.
    """
    plot = None if args.plot is None else os.path.abspath(args.plot)
    if plot is not None and args.parts is not None and "throughput" not in args.parts:
        return _usage_error("--plot draws the throughput part: add it to --parts")
    if plot is not None:
        if importlib.util.find_spec("matplotlib") is None:
            return _usage_error(f"--plot needs matplotlib: {PLOT_EXTRA}")
        if not os.path.isdir(os.path.dirname(plot)):
            return _usage_error(f"--plot: no directory {os.path.dirname(plot)}")
    report = _benchmark(args) if args.from_json is None else _load(args)
    if isinstance(report, int):
        return report
    if plot is not None:
        try:
            write_plot(report, plot)
        except OSError as exc:
            return _error(args, "io", f"cannot write the plot {plot}: {exc}", 7)
    if args.json:
        print(json.dumps(report.as_json(), indent=1))
    else:
        print(table(report))
        if plot is not None:
            print(f"plot: {plot}")
    return 0
