"""`python -m meerkat_actor` / `meerkat-actor`: the operator's command line.

Commands: demo, inspect, verify, dump, checkpoint, export-sqlite,
import-sqlite, export-postgres, import-postgres, bench. docs/cli.md is the
reference; `--help` of the command and of each subcommand stands on its own
(an installed wheel has no docs/): what it does, its arguments, its exit
statuses, and the documentation's URL from the package metadata.

Rule 1: this module parses arguments and renders results (text, JSON lines,
exit statuses, the kind of an error); it computes nothing about a store. The
closed store is read by `_dry_run.py` (verified by `_verifier.py`, copied by
`_sqlite_copy.py`), what a state holds is counted by
`_contents.py`, the dump documents are built by `_dump.py`, snapshot names
are read by `_format.py`.

Rule 2: numbers in the human text (not in JSON) follow one rule, written in
docs/cli.md: a count or a size has a comma every three digits (`_count`,
`_size`: `1,048,576 B`), before what it counts (`15 consumed`); positions
and names (LSNs, byte offsets, sequences, format versions) as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict
from typing import Any, Final

import trio

import meerkat_actor  # for __version__, the one source of the version (pyproject reads it)

from . import _dry_run, _sqlite_copy, _verifier
from . import _format as fmt
from . import asyncio as store_for_asyncio
from ._actor import open_store
from ._codec import to_json
from ._contents import RuntimeSummary, StateCounts, count_state, runtime_summaries
from ._core import StoreState
from ._demo import count_input_states, read_everything, run_demo, run_demo_asyncio
from ._dump import UnknownRuntime, dump_documents, oauth_withheld
from ._durable import DEFAULT_MAX_RECORD, MAX_RECORD_LIMIT
from ._errors import (
    CorruptStore,
    NotAStore,
    ReadFailed,
    StoreLocked,
    UnsupportedFormat,
    WriteFailed,
)
from ._front import StoreFront
from ._ids import LogicalRuntimeId, RunId
from ._postgres import SCHEMA_NAME

EXIT_OK: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_FOUND: Final = 3
EXIT_LOCKED: Final = 4
EXIT_CORRUPT: Final = 5
EXIT_NEWER_FORMAT: Final = 6
EXIT_IO: Final = 7

DEFAULT_DEMO_DIR = "meerkat-demo-store"
_BENCH_TEXT: Final = "measure throughput, latency and recovery against peers"


class _Failed(Exception):
    """A command's failure: its JSON kind and exit status."""

    def __init__(self, kind: str, status: int, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


def _classify(exc: BaseException) -> _Failed | None:
    """The kind and exit status of an error a command may meet, or None."""
    message = str(exc)
    if isinstance(exc, FileExistsError):
        return _Failed("exists", EXIT_USAGE, f"{exc.filename} already exists")
    if isinstance(exc, NotAStore):
        return _Failed("not_found", EXIT_NOT_FOUND, message)
    if isinstance(exc, StoreLocked):
        return _Failed("locked", EXIT_LOCKED, message)
    if isinstance(exc, CorruptStore):
        return _Failed("corrupt", EXIT_CORRUPT, message)
    if isinstance(exc, UnsupportedFormat):
        return _Failed("unsupported_format", EXIT_NEWER_FORMAT, message)
    if isinstance(exc, (ReadFailed, WriteFailed, OSError)):
        return _Failed("io", EXIT_IO, message)
    if isinstance(exc, MemoryError):
        # Reading is bounded by the largest record (or snapshot chunk), not
        # the largest file: that much memory is what is missing.
        return _Failed(
            "io",
            EXIT_IO,
            "out of memory (a record or snapshot chunk of the store, or its"
            " state, does not fit in the memory this process may use)",
        )
    return None


# --- output helpers --------------------------------------------------------------------------


def _emit_json(document: object) -> None:
    print(_json_line(document))


def _json_line(document: object) -> str:
    """One JSON document; non-ASCII kept as is when stdout takes UTF-8."""
    utf8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
    return json.dumps(document, ensure_ascii=not utf8)


def _progress(message: str) -> None:
    """A progress line on stderr, only when stderr is a terminal."""
    if sys.stderr.isatty():
        print(f"meerkat-actor: {message}", file=sys.stderr, flush=True)


def _plain(value: object) -> str:
    """A JSON value for people: a string as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _count(n: int) -> str:
    """A count for people: a comma every three digits (Rule 2)."""
    return f"{n:,}"


def _many(n: int, noun: str) -> str:
    return f"{_count(n)} {noun}" if n == 1 else f"{_count(n)} {noun}s"


def _size(n: int) -> str:
    """A size in bytes for people (Rule 2)."""
    return f"{_count(n)} B"


def _file_json(files: list[_dry_run.FileEntry]) -> list[dict[str, Any]]:
    return [asdict(f) for f in files]


def _files_text(files: list[_dry_run.FileEntry]) -> list[str]:
    width = max((len(f.name) for f in files), default=0)
    return [f"  {f.name:<{width}}  {_size(f.bytes):>14}" for f in files]


def _counts_text(counts: StateCounts) -> str:
    return (
        f"{_many(counts.runtimes, 'runtime')}, {_many(counts.input_states, 'input state')},"
        f" {_many(counts.receipts, 'receipt')},"
        f" {_many(counts.session_snapshots, 'session snapshot')},"
        f" {_many(counts.runtime_states, 'runtime state')},"
        f" {_many(counts.ops_snapshots, 'ops snapshot')},"
        f" OAuth flow snapshot: {'yes' if counts.oauth_flow_snapshot else 'no'}"
    )


# --- inspect ---------------------------------------------------------------------------------


def _runtime_json(summary: RuntimeSummary) -> dict[str, Any]:
    state = summary.runtime_state
    return {
        "runtime_id": str(summary.runtime_id),
        "input_states": summary.input_states,
        "input_states_by_phase": summary.input_states_by_phase,
        "receipts": summary.receipts,
        "session_snapshot_bytes": summary.session_snapshot_bytes,
        "runtime_state": None if state is None else to_json(state),
        "ops_snapshot": summary.ops_snapshot,
    }


def _runtime_text(summary: RuntimeSummary) -> str:
    phases = ", ".join(f"{_count(v)} {k}" for k, v in summary.input_states_by_phase.items())
    session = summary.session_snapshot_bytes
    state = summary.runtime_state
    return (
        f"  {summary.runtime_id}: {_many(summary.input_states, 'input state')}"
        + (f" ({phases})" if phases else "")
        + f", {_many(summary.receipts, 'receipt')}"
        + (f", session snapshot {_size(session)}" if session is not None else "")
        + ("" if state is None else f", runtime state {_plain(to_json(state))}")
        + (", ops snapshot yes" if summary.ops_snapshot else "")
    )


def _inspect(args: argparse.Namespace) -> int:
    view = _dry_run.read_store(args.dir, args.max_record_bytes)
    summaries = runtime_summaries(view.state)
    runtimes = [_runtime_json(summary) for summary in summaries]
    document = {
        "store": view.directory,
        "format_version": view.format_version,
        "last_lsn": view.last_lsn,
        "snapshot_lsn": view.snapshot_lsn,
        "log_first_lsn": view.log_first_lsn,
        "files": _file_json(view.files),
        "runtimes": runtimes,
        "oauth_flow_snapshot": view.state.oauth_flow_snapshot is not None,
        "notes": [f"{n.file}: {n.message}" for n in view.notes],
    }
    if args.json:
        _emit_json(document)
        return EXIT_OK
    log = (
        "the log holds no record"
        if view.log_first_lsn is None
        else f"the oldest log segment starts at {view.log_first_lsn}"
    )
    lines = [
        f"store: {view.directory}",
        f"format version: {view.format_version}",
        f"LSN: last {view.last_lsn}; snapshot at {view.snapshot_lsn}; {log}",
        "files:",
        *_files_text(view.files),
        f"runtimes: {_count(len(summaries))}",
        *map(_runtime_text, summaries),
    ]
    present = "present" if document["oauth_flow_snapshot"] else "absent"
    lines.append(f"OAuth flow snapshot: {present}")
    if view.notes:
        lines.append("notes (what opening the store would repair):")
        lines += [f"  {n.file}: {n.message}" for n in view.notes]
    print("\n".join(lines))
    return EXIT_OK


# --- verify ----------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    _progress(f"verifying {args.dir} ...")
    report = _verifier.verify_store(args.dir, args.max_record_bytes)
    status = {"clean": EXIT_OK, "damaged": EXIT_PROBLEM, "corrupt": EXIT_CORRUPT}[report.result]
    checked = {"snapshots": report.snapshots, "segments": report.segments}
    checked["records"] = report.records
    if args.json:
        _emit_json(
            {
                "store": report.directory,
                "result": report.result,
                "checked": checked,
                "problems": [asdict(p) for p in report.problems],
            }
        )
        return status
    for p in report.problems:
        where = "" if p.offset is None else f" byte offset {p.offset}:"
        print(f"{p.severity}: {p.file}:{where} {p.message}")
    print(
        f"result: {report.result} ({_many(report.snapshots, 'snapshot')},"
        f" {_many(report.segments, 'segment')}, {_many(report.records, 'record')} checked"
        f" in {report.directory})"
    )
    return status


# --- dump ------------------------------------------------------------------------------------


def _dump(args: argparse.Namespace) -> int:
    view = _dry_run.read_store(args.dir, args.max_record_bytes)
    secrets = args.include_secrets
    try:
        documents = dump_documents(view.state, args.runtime, include_secrets=secrets)
    except UnknownRuntime as exc:
        raise _Failed(
            "not_found",
            EXIT_NOT_FOUND,
            f"{view.directory} holds no runtime {exc.runtime!r}"
            " (inspect lists the runtimes it holds)",
        ) from exc
    for document in documents:
        sys.stdout.write(_json_line(document) + "\n")
    if oauth_withheld(view.state, args.runtime, include_secrets=secrets):
        print(
            "note: the OAuth flow snapshot is not shown (pass --include-secrets)",
            file=sys.stderr,
        )
    return EXIT_OK


# --- checkpoint ------------------------------------------------------------------------------


async def _checkpoint_store(directory: str, max_record_bytes: int) -> None:
    async with open_store(directory, max_record_bytes=max_record_bytes) as store:
        await store.checkpoint()


def _checkpoint(args: argparse.Namespace) -> int:
    directory = _dry_run.check_store_directory(args.dir)  # never creates one
    before = _dry_run.list_files(directory)
    _progress(f"checkpoint of {directory} ...")
    trio.run(_checkpoint_store, directory, args.max_record_bytes)
    after = _dry_run.list_files(directory)
    newest = fmt.newest_snapshot(f.name for f in after)
    lsn = None if newest is None else newest[0]
    size = None if newest is None else next(f.bytes for f in after if f.name == newest[1])
    document = {
        "store": directory,
        "snapshot_lsn": lsn,
        "snapshot_bytes": size,
        "files_before": _file_json(before),
        "files_after": _file_json(after),
    }
    if args.json:
        _emit_json(document)
        return EXIT_OK
    taken = (
        "no snapshot: the store holds no record"
        if size is None
        else f"snapshot at LSN {lsn} ({_size(size)})"
    )
    print(
        f"checkpoint of {directory}: {taken};"
        f" files before: {len(before)} ({_size(sum(f.bytes for f in before))}),"
        f" after: {len(after)} ({_size(sum(f.bytes for f in after))})"
    )
    return EXIT_OK


# --- export / import -------------------------------------------------------------------------


def _report_copy(args: argparse.Namespace, source: str, target: str, state: StoreState) -> int:
    counts = count_state(state)
    document = {"source": source, "target": target, **asdict(counts), "identical": True}
    if args.json:
        _emit_json(document)
    else:
        verb = "exported" if args.command.startswith("export") else "imported"
        print(f"{verb} {source} to {target}: {_counts_text(counts)}; read back: identical")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    target = os.path.abspath(args.file)
    if os.path.lexists(target):
        raise FileExistsError(17, "exists", target)
    _progress(f"reading {args.dir} ...")
    view = _dry_run.read_store(args.dir, args.max_record_bytes)
    _progress(f"writing {target} ...")
    back = _sqlite_copy.export_sqlite(view.state, target)
    if not _sqlite_copy.same_content(view.state, back):
        raise _Failed(
            "mismatch",
            EXIT_PROBLEM,
            f"{target} does not read back as {view.directory} holds (the file is left as is)",
        )
    return _report_copy(args, view.directory, target, view.state)


def _import(args: argparse.Namespace) -> int:
    source = os.path.abspath(args.file)
    return _import_into(args, source, lambda: _sqlite_copy.read_sqlite(source))


def _import_into(args: argparse.Namespace, source: str, read: Callable[[], StoreState]) -> int:
    """Write what `read()` gives (the content of `source`) as a new store at
    `args.dir`, read it back and compare: `import-sqlite`, `import-postgres`."""
    target = os.path.realpath(args.dir)
    if os.path.lexists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise FileExistsError(17, "exists", target)
    _progress(f"reading {source} ...")
    state = read()
    _progress(f"writing {target} ...")
    try:
        view = _sqlite_copy.import_sqlite(state, target)
    except ValueError as exc:  # the directory filled up since the check above
        raise FileExistsError(17, "exists", target) from exc
    if not _sqlite_copy.same_content(state, view.state):
        raise _Failed(
            "mismatch",
            EXIT_PROBLEM,
            f"{target} does not read back as {source} holds (the directory is left as is)",
        )
    return _report_copy(args, source, target, state)


def _postgres_copy(schema: str) -> Any:
    """`_postgres_copy`, which needs psycopg (the `postgres` extra), once
    `schema` (the --schema option) is known to be a schema name."""
    if not SCHEMA_NAME.fullmatch(schema):
        raise _Failed(
            "usage",
            EXIT_USAGE,
            "--schema must be a lower-case identifier (a letter or _, then letters, digits"
            f" or _, at most 63 characters), got {schema!r}",
        )
    try:
        from . import _postgres_copy  # noqa: PLC0415 - psycopg is an optional extra
    except ImportError as exc:
        raise _Failed(
            "usage",
            EXIT_USAGE,
            f"this command needs psycopg: pip install 'meerkat_actor[postgres]' ({exc})",
        ) from exc
    return _postgres_copy


def _export_postgres(args: argparse.Namespace) -> int:
    copy = _postgres_copy(args.schema)
    target = f"PostgreSQL schema {args.schema}"
    _progress(f"reading {args.dir} ...")
    view = _dry_run.read_store(args.dir, args.max_record_bytes)
    _progress(f"writing {target} ...")
    back = copy.export_postgres(view.state, args.dsn, args.schema)
    if not _sqlite_copy.same_content(view.state, back):
        raise _Failed(
            "mismatch",
            EXIT_PROBLEM,
            f"{target} does not read back as {view.directory} holds (the schema is left as is)",
        )
    return _report_copy(args, view.directory, target, view.state)


def _import_postgres(args: argparse.Namespace) -> int:
    copy = _postgres_copy(args.schema)
    source = f"PostgreSQL schema {args.schema}"
    return _import_into(args, source, lambda: copy.read_postgres(args.dsn, args.schema))


# --- demo ------------------------------------------------------------------------------------


async def _demo_run(
    args: argparse.Namespace,
    opener: Callable[..., AbstractAsyncContextManager[StoreFront]],
    run: Callable[..., Awaitable[list[tuple[LogicalRuntimeId, RunId, int]]]],
) -> int:
    """The demo, on trio (`ma.open_store`, `run_demo`) or on asyncio
    (`meerkat_actor.asyncio.open_store`, `run_demo_asyncio`): this coroutine
    only awaits the store and `run`, so either loop runs it."""
    counts = {"runtimes": args.runtimes, "runs": args.runs, "inputs_per_run": args.inputs}
    flavour = " (asyncio)" if args.asyncio else ""
    if args.memory:
        print(f"store: in memory{flavour}")
        async with opener() as store:
            await run(store, **counts)
        return EXIT_OK
    path = args.dir
    print(f"store: {path}{flavour}")
    async with opener(path) as store:
        held = await count_input_states(store, args.runtimes)
        if held:
            print(f"recovered from earlier runs: {_many(held, 'input state')}")
        else:
            print("a new store")
        receipts = await run(store, **counts)
        before = await read_everything(store, receipts)
    async with opener(path) as store:
        after = await read_everything(store, receipts)
        inputs = await count_input_states(store, args.runtimes)
    if after != before:
        print("reopened: the store does NOT hold what was acknowledged", file=sys.stderr)
        return EXIT_PROBLEM
    print(
        f"reopened: every acknowledged write is back ({_many(len(receipts), 'receipt')} of this"
        f" run, {_many(inputs, 'input state')}); run the demo again to add to it"
    )
    return EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    args.dir = os.path.abspath(args.dir)
    if args.asyncio:
        return asyncio.run(_demo_run(args, store_for_asyncio.open_store, run_demo_asyncio))
    return trio.run(_demo_run, args, open_store, run_demo)


def _run_bench(args: argparse.Namespace) -> int:
    """`bench`: its options are the bench module's own (parsed here, so other
    commands never import it)."""
    from . import _bench  # noqa: PLC0415 - only the bench command needs it

    parser = _Parser(
        prog="meerkat-actor bench",
        description=_text(_BENCH_DESCRIPTION),
        epilog=_epilog(_BENCH_EXITS),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _bench.add_arguments(parser)
    status: int = _bench.run(parser.parse_args(args.bench_args))
    return status


# --- help ------------------------------------------------------------------------------------
#
# `--help` stands on its own: an installed wheel holds no docs/, so the help
# says what each command does, its arguments and exit statuses, and points at
# the documentation only by the URL in the package metadata (pyproject.toml's
# `project.urls`), never by a path of the source tree.

DISTRIBUTION: Final = "meerkat-actor"
_WIDTH: Final = 79

_DESCRIPTION: Final = """\
Look at, check, convert and maintain meerkat_actor stores from the shell
(`python -m meerkat_actor` is the same command).

DIR is a durable store's directory (what open_store(DIR) opens); FILE a
SQLite store's file (open_sqlite_store(FILE)). inspect, verify, dump and the
reading side of export-sqlite and export-postgres change no file and create
none."""

_COMMON: Final = """\
Every command but demo takes --json: one JSON document on stdout instead of
the text (dump always prints JSON lines). An error is one line on stderr,
`meerkat-actor: error: <message>`, naming the path; with --json, stdout
also gets {"error": {"kind": KIND, "message": MESSAGE}}. Counts and sizes
in the text have a comma every three digits (1,048,576 B); LSNs and byte
offsets are written as they are.

Run `meerkat-actor COMMAND --help` for what a command does, its arguments
and its exit statuses."""

_EXITS: Final = (
    ("0", "success (verify: clean; notes about crash artifacts allowed)"),
    (
        "1",
        "a problem found (kind mismatch): verify found damage that opening works around;"
        " an export or import read its copy back and it differs",
    ),
    (
        "2",
        "usage: wrong arguments (no JSON); or (kind exists) the destination of an export or"
        " import exists",
    ),
    (
        "3",
        "not found (kind not_found): a path that does not exist or is not a store (a"
        " file where a store directory should be, a directory without a FORMAT file,"
        " a file that is not a SQLite store, a schema without a store), or a runtime"
        " the store does not hold",
    ),
    ("4", "locked (kind locked): the store is open in a process"),
    ("5", "corrupt (kind corrupt): opening the store would raise CorruptStore"),
    (
        "6",
        "newer format (kind unsupported_format): the store was written by a newer format version",
    ),
    ("7", "I/O (kind io): an I/O error (the server's, for PostgreSQL), or out of memory"),
)

_NO_STORE: Final = (
    "3",
    "DIR does not exist or is not a store (a file, or a directory without a FORMAT file)",
)
_LOCKED: Final = ("4", "the store is locked: a process has it open")
_CORRUPT: Final = ("5", "the store is corrupt: opening it would raise CorruptStore")
_NEWER: Final = ("6", "the store was written by a newer format version")
_IO: Final = ("7", "an I/O error, or out of memory")
_COPIED: Final = ("0", "copied and read back identical")
_SERVER: Final = ("7", "the server cannot be reached or fails, an I/O error, or out of memory")
_READ_EXITS: Final = (_NO_STORE, _LOCKED, _CORRUPT, _NEWER, _IO)
_POSTGRES_EXTRA: Final = "needs the postgres extra: pip install 'meerkat_actor[postgres]'"

_BENCH_DESCRIPTION: Final = f"""\
{_BENCH_TEXT[0].upper()}{_BENCH_TEXT[1:]}: the durable actor store against
the same operations on the SQLite backend (synchronous=FULL), a plain
sqlite3 loop, the PostgreSQL store (where a server can be started), the
in-memory actor store and a naive dict store, in one run, in one directory;
then recovery, checkpoint and backup, memory per input state, and what
retiring payloads and purging runtimes give back. Every store's answers are
checked. A full run takes tens of minutes; --quick is a smoke test of a few
seconds whose figures are not measurements (it prints no ratios)."""

_BENCH_EXITS: Final = (
    ("0", "done"),
    ("1", "a store gave a wrong answer (no figures are printed for it)"),
    ("2", "a bad option, or --plot without matplotlib"),
    ("3", "the --from-json file does not exist"),
    ("7", "an I/O error"),
)


def _documentation_url() -> str | None:
    """The Documentation URL of the installed distribution (`project.urls`),
    or None when no metadata is installed (a source tree on sys.path)."""
    import importlib.metadata  # noqa: PLC0415 - only help needs it (slow to import)

    try:
        urls = importlib.metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in urls:
        label, _, url = str(entry).partition(",")
        if label.strip().lower() == "documentation":
            return url.strip()
    return None


def _text(text: str) -> str:
    """Paragraphs (blank-line separated) filled to the help's width."""
    paragraphs = textwrap.dedent(text).split("\n\n")
    return "\n\n".join(textwrap.fill(p, _WIDTH, break_on_hyphens=False) for p in paragraphs)


class _Parser(argparse.ArgumentParser):
    """A parser whose help ends with the documentation's URL, looked up in the
    package metadata only when help is printed (the lookup takes a while)."""

    def format_help(self) -> str:
        text = super().format_help()
        url = _documentation_url()
        return text if url is None else f"{text}\ndocumentation: {url}\n"


def _epilog(exits: Sequence[tuple[str, str]], notes: str = "", title: str = "exit status") -> str:
    """A command's help after its arguments: notes, then the exit statuses."""
    parts = [_text(notes)] if notes else []
    rows = [f"{title}:"]
    for code, meaning in exits:
        rows.append(
            textwrap.fill(
                meaning,
                _WIDTH,
                initial_indent=f"  {code:>2}  ",
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
            )
        )
    parts.append("\n".join(rows))
    return "\n\n".join(parts)


# --- the parser ------------------------------------------------------------------------------


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _record_limit(text: str) -> int:
    value = _positive(text)
    if value > MAX_RECORD_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be at most {MAX_RECORD_LIMIT} (the format's length field), got {value}"
        )
    return value


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    parser = _Parser(
        prog="meerkat-actor",
        description=_text(_DESCRIPTION),
        epilog=_epilog(_EXITS, _COMMON, "exit status (the same for every command)"),
        formatter_class=raw,
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{DISTRIBUTION} {meerkat_actor.__version__}",
        help="print the version (meerkat-actor X.Y.Z) and exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document instead of the text (an error: {"error": ...})',
    )
    record = argparse.ArgumentParser(add_help=False)
    record.add_argument(
        "--max-record-bytes",
        type=_record_limit,
        default=DEFAULT_MAX_RECORD,
        metavar="N",
        help="the max_record_bytes the store was written with: a larger record reads as damage"
        f" (default {DEFAULT_MAX_RECORD:,}, 64 MiB)",
    )

    def add(
        name: str,
        run: Callable[[argparse.Namespace], int],
        text: str,
        description: str,
        exits: Sequence[tuple[str, str]],
        *parents: Any,
    ) -> Any:
        sub = commands.add_parser(
            name,
            help=text,
            description=_text(description),
            epilog=_epilog(exits),
            parents=list(parents),
            formatter_class=raw,
        )
        sub.set_defaults(run=run)
        return sub

    demo = add(
        "demo",
        _demo,
        "run a small agent-host workload on a durable store, reopen it, and summarise it",
        """\
        Run a small agent-host workload on the durable store in DIR (created if
        missing): --runtimes runtimes side by side, each starting up and making
        --runs runs of --inputs inputs (each run one atomic_apply of a session
        snapshot, a receipt and the consumed inputs), its ops snapshot, and
        logins counted in the shared OAuth flow snapshot. Then print what the
        store holds and its counters, close it, reopen it and compare
        everything written with what is read back. Run it again to add to the
        same store.""",
        (
            ("0", "reopened: every acknowledged write is back"),
            ("1", "the reopened store does not hold what was acknowledged"),
            ("2", "a bad argument"),
            (
                "3",
                "DIR is not a store (a file, or a directory holding other files and no"
                " FORMAT file)",
            ),
            _LOCKED,
            _CORRUPT,
            _NEWER,
            _IO,
        ),
    )
    demo.add_argument(
        "dir",
        nargs="?",
        default=DEFAULT_DEMO_DIR,
        metavar="DIR",
        help=f"the store directory (default ./{DEFAULT_DEMO_DIR}; created if missing)",
    )
    demo.add_argument("--memory", action="store_true", help="use an in-memory store instead")
    demo.add_argument(
        "--asyncio",
        action="store_true",
        help="run the workload in an asyncio program, through meerkat_actor.asyncio",
    )
    demo.add_argument(
        "--runtimes", type=_positive, default=4, metavar="N", help="runtimes (default 4)"
    )
    demo.add_argument(
        "--runs", type=_positive, default=5, metavar="N", help="runs per runtime (default 5)"
    )
    demo.add_argument(
        "--inputs", type=_positive, default=3, metavar="N", help="inputs per run (default 3)"
    )

    add(
        "inspect",
        _inspect,
        "show a closed store's files, LSNs and per-runtime counts (changes nothing)",
        """\
        Show what the closed store in DIR holds, after the recovery opening it
        would do: the format version; the LSNs (the last, the newest
        snapshot's, the oldest log segment's); every file and its size; per
        runtime its input states by phase, receipts, session snapshot size,
        runtime state and whether it has an ops snapshot; whether an OAuth
        flow snapshot is present (never its content); and what opening would
        repair (a torn tail, a leftover temp file). Changes no file and
        creates none, not even LOCK.""",
        (("0", "shown"), *_READ_EXITS),
        as_json,
        record,
    ).add_argument("dir", metavar="DIR", help="the store directory")
    add(
        "verify",
        _verify,
        "check every snapshot and record of a closed store (changes nothing)",
        """\
        Check every file of the closed store in DIR, changing nothing: the
        FORMAT file; every snapshot (checksums, its LSN, its values); every log
        segment and record (checksums, LSN continuity, payloads); then the
        recovery opening would run, and its verdict. It reads more than
        opening does. One line per problem, `<severity>: <file>: byte offset
        <n>: <message>`, then the result. Severities: note (a crash artifact
        that opening repairs, nothing acknowledged lost), damage (opening
        works around it, nothing lost now), corrupt (opening fails here).""",
        (
            ("0", "clean (notes allowed)"),
            ("1", "damaged: opening works around the damage"),
            _NO_STORE,
            _LOCKED,
            ("5", "corrupt: opening would raise CorruptStore"),
            _NEWER,
            ("7", "a file that opening reads cannot be read, or out of memory"),
        ),
        as_json,
        record,
    ).add_argument("dir", metavar="DIR", help="the store directory")
    dump = add(
        "dump",
        _dump,
        "print a closed store's content as Meerkat JSON lines",
        """\
        Print the content of the closed store in DIR as JSON lines on stdout,
        in Meerkat's JSON shapes, changing nothing: for each runtime (sorted by
        id) its session snapshot, runtime state, ops snapshot, input states and
        receipts; then the OAuth flow snapshot, only with --include-secrets (it
        holds PKCE verifiers; without it stderr says it was left out). Stops
        quietly, exit 0, when its reader goes away (`| head`).""",
        (
            ("0", "printed"),
            (
                "3",
                "DIR does not exist or is not a store, or --runtime names a runtime it does"
                " not hold",
            ),
            _LOCKED,
            _CORRUPT,
            _NEWER,
            _IO,
        ),
        record,
    )
    dump.add_argument(
        "--json",
        action="store_true",
        help="on an error, also print it as one JSON document (the output is JSON lines anyway)",
    )
    dump.add_argument("dir", metavar="DIR", help="the store directory")
    dump.add_argument("--runtime", metavar="ID", help="only this runtime's documents")
    dump.add_argument(
        "--include-secrets", action="store_true", help="also print the OAuth flow snapshot"
    )
    add(
        "checkpoint",
        _checkpoint,
        "take a snapshot of a closed store and drop the log it covers",
        """\
        Open the store in DIR exclusively, as open_store does (recovery may
        repair a torn tail), write a snapshot covering every record, remove
        the log segments and older snapshots it covers, and close it. A store
        of an older format version is converted to this one on the way. DIR
        must already be a store: it is never created.""",
        (("0", "done (a store that holds no record gets no snapshot)"), *_READ_EXITS),
        as_json,
        record,
    ).add_argument("dir", metavar="DIR", help="the store directory")
    export = add(
        "export-sqlite",
        _export,
        "copy a closed store into a new SQLite file (Meerkat's schema)",
        """\
        Read the closed store DIR (changing nothing) and write all of it into a
        new SQLite database FILE in Meerkat's schema, which open_sqlite_store
        and Meerkat's Rust runtime open: one transaction, synchronous=FULL,
        mode 0600. Then read FILE back and compare it with DIR. FILE holds the
        OAuth flow snapshot (secrets), like any copy of the store.""",
        (
            _COPIED,
            ("1", "FILE reads back different from DIR (FILE is left for inspection)"),
            ("2", "FILE exists"),
            (
                "3",
                "DIR does not exist or is not a store, or FILE's directory does not exist",
            ),
            _LOCKED,
            _CORRUPT,
            _NEWER,
            _IO,
        ),
        as_json,
        record,
    )
    export.add_argument("dir", metavar="DIR", help="the store directory")
    export.add_argument("file", metavar="FILE", help="the new SQLite file (must not exist)")
    imported = add(
        "import-sqlite",
        _import,
        "copy a SQLite store (Meerkat's schema) into a new store directory",
        """\
        Read the SQLite store FILE (Meerkat's schema, as open_sqlite_store and
        Meerkat's Rust runtime write it) over a read-only connection, decoding
        and checking every row, and write it as a new durable store in DIR;
        then recover DIR read-only and compare. FILE's content is never
        changed (SQLite may leave FILE-wal and FILE-shm beside it).""",
        (
            _COPIED,
            ("1", "DIR reads back different from FILE (DIR is left for inspection)"),
            ("2", "DIR exists and is not an empty directory"),
            (
                "3",
                "FILE does not exist, is not a SQLite database, or holds no Meerkat tables",
            ),
            ("5", "FILE is a damaged SQLite database, or a row does not decode"),
            ("7", "an I/O error, or out of memory"),
        ),
        as_json,
    )
    imported.add_argument("file", metavar="FILE", help="the SQLite file")
    imported.add_argument(
        "dir", metavar="DIR", help="the new store directory (must not exist, or be empty)"
    )
    export = add(
        "export-postgres",
        _export_postgres,
        "copy a closed store into a PostgreSQL schema (needs the postgres extra)",
        f"""\
        Read the closed store DIR (changing nothing) and write all of it, in
        one transaction, into the PostgreSQL store in schema --schema on the
        server DSN names (the schema and the store's tables are created if
        missing; other tables are left alone); then read the schema back and
        compare. It {_POSTGRES_EXTRA}.""",
        (
            _COPIED,
            ("1", "the schema reads back different from DIR (it is left for inspection)"),
            (
                "2",
                "the schema holds a store that is not empty, --schema is not a lower-case"
                " identifier, or psycopg is not installed",
            ),
            _NO_STORE,
            _LOCKED,
            _CORRUPT,
            _NEWER,
            _SERVER,
        ),
        as_json,
        record,
    )
    export.add_argument("dir", metavar="DIR", help="the store directory")
    export.add_argument("dsn", metavar="DSN", help="a libpq connection string or URL")
    export.add_argument(
        "--schema",
        default="meerkat",
        metavar="NAME",
        help="the target schema (holding no store with data; default meerkat)",
    )
    imported = add(
        "import-postgres",
        _import_postgres,
        "copy a PostgreSQL store into a new store directory (needs the postgres extra)",
        f"""\
        Read the PostgreSQL store in schema --schema on the server DSN names, in
        one read-only transaction, decoding and checking every row, and write
        it as a new durable store in DIR; then recover DIR read-only and
        compare. Nothing is created or changed on the server. It
        {_POSTGRES_EXTRA}.""",
        (
            _COPIED,
            ("1", "DIR reads back different from the schema (DIR is left for inspection)"),
            (
                "2",
                "DIR exists and is not an empty directory, --schema is not a lower-case"
                " identifier, or psycopg is not installed",
            ),
            ("3", "the schema holds no store"),
            ("5", "a row does not decode"),
            ("6", "the schema was written by a newer schema version"),
            _SERVER,
        ),
        as_json,
    )
    imported.add_argument("dsn", metavar="DSN", help="a libpq connection string or URL")
    imported.add_argument(
        "dir", metavar="DIR", help="the new store directory (must not exist, or be empty)"
    )
    imported.add_argument(
        "--schema", default="meerkat", metavar="NAME", help="the source schema (default meerkat)"
    )
    commands.add_parser("bench", help=_BENCH_TEXT, add_help=False).set_defaults(run=_run_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    for stream in (sys.stdout, sys.stderr):
        # A runtime id or path the terminal's encoding cannot show is escaped,
        # not a UnicodeEncodeError.
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        status: int = args.run(args)
    except _Failed as failure:
        return _fail(args, failure)
    except BrokenPipeError:
        # The reader (`| head`) went away: stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (OSError, ReadFailed, WriteFailed, MemoryError) as exc:
        classified = _classify(exc)
        if classified is None:
            raise
        return _fail(args, classified)
    return status


def _fail(args: argparse.Namespace, failure: _Failed) -> int:
    print(f"meerkat-actor: error: {failure}", file=sys.stderr)
    if getattr(args, "json", False):
        _emit_json({"error": {"kind": failure.kind, "message": str(failure)}})
    return failure.status


if __name__ == "__main__":
    sys.exit(main())
