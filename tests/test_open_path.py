"""The open path's holes (issue 14, items 1-5): crashes while a store is being
made (backup, import, first open), stray segments after a clean close, files
that are not regular files where the format expects one, and verify's memory.

A crash is simulated by `CrashIO`: at its n-th file operation it raises
`Stop` (a BaseException, which escapes every `except Exception`), and so does
every later operation that could change the disk; closing descriptors and
releasing locks still happen, as the kernel does for a dead process. Each
test runs a step for every n until it completes, then opens what is left.
"""

from __future__ import annotations

import contextlib
import functools
import os
import stat
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from _values import OTHER, RT, everything, populate

import meerkat_actor as ma
from meerkat_actor import _core, _verifier
from meerkat_actor import _format as fmt
from meerkat_actor.__main__ import main
from meerkat_actor._durable import DurableLog
from meerkat_actor._fs import FileIO
from meerkat_actor._sqlite_copy import import_sqlite

#: Not crash points: reads, and what the kernel does anyway for a dead process.
_PASSIVE = {"list_dir", "read", "read_at", "size", "open_read", "close", "unlock", "is_regular"}


class Stop(BaseException):
    """The simulated crash."""


class CrashIO(FileIO):
    """Stops at file operation number `at` (0-based) and at every later one."""

    def __init__(self, at: int | None = None) -> None:
        self._mutex = threading.Lock()
        self.at = at
        self.calls: list[str] = []
        self.dead = False

    def _step(self, method: str) -> None:
        with self._mutex:
            if self.dead:
                raise Stop(method)
            if len(self.calls) == self.at:
                self.dead = True
                raise Stop(method)
            self.calls.append(method)


def _wrap(name: str) -> Callable[..., Any]:
    base = getattr(FileIO, name)

    @functools.wraps(base)
    def call(self: CrashIO, *args: Any, **kwargs: Any) -> Any:
        self._step(name)
        return base(self, *args, **kwargs)

    return call


for _name, _value in list(vars(FileIO).items()):
    if callable(_value) and not _name.startswith("_") and _name not in _PASSIVE:
        setattr(CrashIO, _name, _wrap(_name))


def _state() -> _core.StoreState:
    rebuild = _core.Rebuild(_core.EMPTY)
    rebuild.apply((_core.SetOAuthFlowSnapshot(b"oauth"),))
    rebuild.apply((_core.SetSessionSnapshot(RT, b'{"session": 1}'),))
    return rebuild.state()


async def _outcome(path: Path) -> str:
    """What opening `path` gives: "absent", "refused: ...", "empty" or "full"."""
    if not os.path.lexists(path):  # noqa: ASYNC240 - a test's own check
        return "absent"
    try:
        async with ma.open_store(path) as store:
            oauth = await store.load_auth_oauth_flow_snapshot()
            session = await store.load_session_snapshot(RT)
    except ma.ReadFailed as exc:
        return f"refused: {exc}"
    if oauth == b"oauth" and session == b'{"session": 1}':
        return "full"
    assert oauth is None, oauth
    assert session is None, session
    return "empty"


async def _opened(path: Path) -> object:
    """Everything the store at `path` holds, or the `ReadFailed` opening it raises."""
    try:
        async with ma.open_store(path) as store:
            return await everything(store)
    except ma.ReadFailed as exc:
        return exc


def _every_crash(step: Callable[[CrashIO], object]) -> list[int]:
    """Run `step` with a crash at each file operation in turn; return the
    crash points (the last run completes)."""
    points = []
    at = 0
    while True:
        io = CrashIO(at)
        try:
            step(io)
        except Stop:
            points.append(at)
            at += 1
            continue
        assert not io.dead
        return points


# --- 1. a store made from a state, and a first open --------------------------------


@pytest.mark.parametrize("existing", [False, True], ids=["new-path", "empty-dir"])
async def test_interrupted_create_from_state_never_opens_as_empty(
    tmp_path: Path, existing: bool
) -> None:
    """backup() and import-sqlite make a store with `create_from_state`: a
    crash at any file operation leaves no store at the target, a directory
    open_store refuses as an incomplete backup, or the whole store; never a
    store that opens empty (docs/format.md section 10)."""
    outcomes: dict[str, int] = {}

    def step(io: CrashIO) -> None:
        target = tmp_path / f"t{len(outcomes_seen)}" / "backup"
        outcomes_seen.append(target)
        if existing:
            target.mkdir(parents=True)
        DurableLog.create_from_state(io, str(target), 7, _state())

    outcomes_seen: list[Path] = []
    points = _every_crash(step)
    assert len(points) > 5
    for index, target in enumerate(outcomes_seen):
        outcome = await _outcome(target)
        if outcome.startswith("refused"):
            assert "INCOMPLETE" in outcome or "incomplete" in outcome, outcome
            outcome = "refused"
        if outcome == "empty":
            # Only the empty directory that was there before may stay as it was.
            assert existing, outcome
            assert index < len(points), outcome
            outcome = "untouched"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if index == len(outcomes_seen) - 1:
            assert outcome == "full"
    assert outcomes.get("refused", 0) > 0
    # No directory left next to the target that opens as a store either.
    for target in outcomes_seen:
        for name in os.listdir(target.parent) if target.parent.exists() else ():
            if name != "backup":
                assert name.endswith(".incomplete") or ".incomplete-" in name, name
                left = target.parent / name
                assert not os.listdir(left) or (await _outcome(left)).startswith("refused")


async def test_interrupted_backup_through_the_api(tmp_path: Path) -> None:
    """store.backup() with the source's file layer crashing at each step."""
    source = tmp_path / "source"
    async with ma.open_store(source) as store:
        await populate(store)
        expected = await everything(store)
    at = 0
    while True:
        io = CrashIO()
        target = tmp_path / f"b{at}"
        with trio.CancelScope() as scope:
            async with ma.open_store(source, _io=io) as store:
                io.at = len(io.calls) + at
                with contextlib.suppress(Stop):
                    await store.backup(target)
                scope.cancel()  # the source is not the subject; no checkpoint
        if not io.dead:
            break
        if target.exists():
            outcome = await _opened(target)
            # Crashed after the marker was gone: the backup is whole.
            assert outcome == expected or "INCOMPLETE" in str(outcome), (at, outcome)
        at += 1
    assert at > 5
    async with ma.open_store(target) as backup:
        assert await everything(backup) == expected


async def test_interrupted_import_sqlite(tmp_path: Path) -> None:
    targets: list[Path] = []

    def step(io: CrashIO) -> None:
        target = tmp_path / f"i{len(targets)}"
        targets.append(target)
        import_sqlite(_state(), str(target), io)

    _every_crash(step)
    for target in targets[:-1]:
        outcome = await _outcome(target)
        assert outcome in ("absent", "full") or "INCOMPLETE" in outcome, outcome
    assert await _outcome(targets[-1]) == "full"


async def test_interrupted_first_open(tmp_path: Path) -> None:
    """open_store of a new path, crashed at each step: no store, or a valid
    empty store."""
    targets: list[Path] = []

    def step(io: CrashIO) -> None:
        target = tmp_path / f"n{len(targets)}" / "store"
        targets.append(target)
        log, _ = DurableLog.open(io, str(target))
        log.close()

    _every_crash(step)
    assert len(targets) > 5
    for target in targets:
        assert await _outcome(target) in ("absent", "empty")


# --- 2. a stray later segment after a clean close -----------------------------------


@pytest.mark.parametrize("stray", ["empty", "torn-header", "zeros"])
async def test_stray_later_segment_after_clean_close(tmp_path: Path, stray: str) -> None:
    path = tmp_path / "store"
    async with ma.open_store(path) as store:
        await populate(store)
        expected = await everything(store)
    names = sorted(os.listdir(path))
    segments = fmt.numbered(names, fmt.SEGMENT_NAME)
    assert len(segments) == 1
    assert fmt.numbered(names, fmt.SNAPSHOT_NAME)
    later = path / fmt.segment_name(segments[0][0] + 5)
    later.write_bytes(
        {
            "empty": b"",
            "torn-header": fmt.encode_segment_header(segments[0][0] + 5)[:20] + bytes(100),
            "zeros": bytes(4096),
        }[stray]
    )
    async with ma.open_store(path) as store:
        assert await everything(store) == expected
        await store.persist_auth_oauth_flow_snapshot(b"after")
    assert not later.exists()
    async with ma.open_store(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"after"


async def test_stray_later_segment_after_records(tmp_path: Path) -> None:
    """The last surviving segment holds records: new ones go after them."""
    path = tmp_path / "store"
    with trio.CancelScope() as scope:
        async with ma.open_store(path) as store:
            await populate(store)
            expected = await everything(store)
            scope.cancel()
    (path / fmt.segment_name(99)).write_bytes(b"")
    with trio.CancelScope() as scope:
        async with ma.open_store(path) as store:
            assert await everything(store) == expected
            await store.persist_auth_oauth_flow_snapshot(b"after")
            scope.cancel()
    assert sorted(n for n in os.listdir(path) if n.startswith("log-")) == [fmt.segment_name(1)]
    async with ma.open_store(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"after"


# --- 3 and 4. entries that are not regular files ------------------------------------


async def _closed_store(path: Path) -> None:
    """A store with an old snapshot and segment kept (covered) beside the newest."""
    async with ma.open_store(path) as store:
        await populate(store)


def _verdict(path: Path) -> tuple[str, list[str]]:
    report = _verifier.verify_store(str(path))
    return report.result, [f"{p.severity} {p.file}: {p.message}" for p in report.problems]


def _open_error(path: Path) -> str | None:
    async def go() -> None:
        async with ma.open_store(path):
            pass

    try:
        trio.run(go)
    except ma.ReadFailed as exc:
        return str(exc)
    return None


def _covered_names(path: Path) -> tuple[str, str]:
    """Names an older snapshot and a covered segment would have."""
    snapshots = fmt.numbered(os.listdir(path), fmt.SNAPSHOT_NAME)
    lsn = snapshots[-1][0]
    return fmt.snapshot_name(lsn - 1), fmt.segment_name(1)


@pytest.mark.parametrize("kind", ["dir", "fifo"])
@pytest.mark.parametrize("where", ["LOCK", "temp", "covered-segment", "old-snapshot", "segment"])
def test_not_a_regular_file(tmp_path: Path, where: str, kind: str) -> None:
    """open_store and verify agree: an entry the format names that is not a
    regular file is an error naming it (never a hang, never "clean")."""
    path = tmp_path / "store"
    trio.run(_closed_store, path)
    old_snapshot, covered = _covered_names(path)
    current = fmt.numbered(os.listdir(path), fmt.SEGMENT_NAME)[-1][1]
    name = {
        "LOCK": "LOCK",
        "temp": fmt.snapshot_name(3) + ".tmp",
        "covered-segment": covered,
        "old-snapshot": old_snapshot,
        "segment": fmt.segment_name(int(current[4:24]) + 3),
    }[where]
    entry = path / name
    if entry.exists():
        entry.unlink()
    if kind == "dir":
        entry.mkdir()
    else:
        os.mkfifo(entry)
    result, problems = _run_with_timeout(lambda: _verdict(path))
    error = _run_with_timeout(lambda: _open_error(path))
    assert error is not None
    assert name in error, error
    assert "regular file" in error, error
    assert result == "corrupt", problems
    assert any(name in p and "regular file" in p for p in problems), problems
    assert stat.S_ISDIR(entry.lstat().st_mode) == (kind == "dir")  # nothing removed


def _run_with_timeout(function: Callable[[], Any], timeout: float = 20) -> Any:
    """Run `function` in a thread; fail (not hang) if it blocks."""
    result: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(function())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        # Unblock a FIFO open (a writer) so the thread can end, then fail.
        pytest.fail("blocked on a FIFO")
    if errors:
        raise errors[0]
    return result[0]


@pytest.mark.parametrize("method", ["read", "open_read", "open_write", "truncate", "lock"])
def test_the_file_layer_never_blocks_on_a_fifo(tmp_path: Path, method: str) -> None:
    """The second line of defence (an entry replaced after it was checked):
    every open of an existing file is non-blocking and refuses a FIFO."""
    fifo = tmp_path / "log-00000000000000000001.log"
    os.mkfifo(fifo)
    call: Callable[[], object] = {
        "read": lambda: FileIO().read(str(fifo)),
        "open_read": lambda: FileIO().open_read(str(fifo)),
        "open_write": lambda: FileIO().open_write(str(fifo)),
        "truncate": lambda: FileIO().truncate(str(fifo), 0),
        "lock": lambda: FileIO().lock(str(fifo)),
    }[method]

    def attempt() -> str:
        try:
            call()
        except OSError as exc:
            return str(exc)
        return "no error"

    message = _run_with_timeout(attempt)
    assert "regular file" in message or "No such device" in message, message
    assert str(fifo) in message, message


@pytest.mark.parametrize("which", ["covered-segment", "old-snapshot"])
def test_unreadable_covered_file(
    tmp_path: Path, which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A covered file open_store never reads: open succeeds, verify reports
    the file (damage), instead of failing with an I/O error."""
    path = tmp_path / "store"
    trio.run(_closed_store, path)
    old_snapshot, covered = _covered_names(path)
    name = covered if which == "covered-segment" else old_snapshot
    source = fmt.numbered(os.listdir(path), fmt.SNAPSHOT_NAME)[-1][1]
    if which == "old-snapshot":
        (path / name).write_bytes((path / source).read_bytes()[:100])
    else:
        (path / name).write_bytes(fmt.encode_segment_header(1) + bytes(64))
    # Tests run as root here, which mode 0o000 does not stop: refuse in the layer.
    for method in ("open_read", "read"):
        real = getattr(FileIO, method)

        def refuse(self: FileIO, file: str, real: Any = real) -> Any:
            if os.path.basename(file) == name:
                raise PermissionError(13, "Permission denied", file)
            return real(self, file)

        monkeypatch.setattr(FileIO, method, refuse)
    assert _open_error(path) is None
    result, problems = _verdict(path)
    assert result == "damaged", problems
    assert any(name in p and "cannot read" in p for p in problems), problems


# --- 5. verify's memory ---------------------------------------------------------------


def test_verify_memory_is_bounded_by_the_record(tmp_path: Path) -> None:
    path = tmp_path / "store"
    path.mkdir()
    (path / "FORMAT").write_bytes(fmt.encode_format_file())
    value = bytes(range(256)) * 1024  # 256 KiB
    with open(path / fmt.segment_name(1), "wb") as file:
        file.write(fmt.encode_segment_header(1))
        for lsn in range(1, 193):  # 48 MiB of records
            effect = _core.SetSessionSnapshot(OTHER, value + lsn.to_bytes(4, "big"))
            file.write(fmt.encode_record(lsn, (effect,)))
    size = (path / fmt.segment_name(1)).stat().st_size
    assert size > 48 << 20
    tracemalloc.start()
    try:
        report = _verifier.verify_store(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.result == "clean", report.problems
    assert report.records == 192
    assert peak < size // 6, (peak, size)  # about two windows and a record


def test_verify_out_of_memory_is_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "store"
    trio.run(_closed_store, path)

    def starved(*args: object, **kwargs: object) -> None:
        raise MemoryError

    monkeypatch.setattr(_verifier, "verify_store", starved)
    status = main(["verify", str(path)])
    err = capsys.readouterr().err
    assert status == 7
    assert "Traceback" not in err, err
    assert "out of memory" in err, err


# --- issue 16: a store directory's path that is not a directory ---------------------------------


def _listing(path: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under `path`: its mode and, for a regular file, its bytes."""
    found: dict[str, tuple[int, bytes | None]] = {}
    for entry in sorted(path.rglob("*")):
        mode = entry.lstat().st_mode
        found[str(entry.relative_to(path))] = (
            mode,
            entry.read_bytes() if stat.S_ISREG(mode) else None,
        )
    return found


@pytest.mark.parametrize("kind", ["file", "fifo", "symlink to a file", "through a file"])
async def test_open_store_on_a_path_that_is_not_a_directory(tmp_path: Path, kind: str) -> None:
    """`open_store(path)` where `path` is a regular file (or another
    non-directory, or goes through one) raises `ReadFailed` saying what the
    path is, not an OS error text ("File exists"); nothing is created or
    changed."""
    plain = tmp_path / "plain"
    if kind == "fifo":
        os.mkfifo(plain)
    else:
        plain.write_text("my notes")
    path = {
        "file": plain,
        "fifo": plain,
        "symlink to a file": tmp_path / "link",
        "through a file": plain / "store",
    }[kind]
    if kind == "symlink to a file":
        path.symlink_to(plain)
    what = "a FIFO" if kind == "fifo" else "a file"
    expected = (
        f"{plain / 'store'} cannot be a store directory: {plain} is a file, not a directory"
        if kind == "through a file"
        else f"{plain} is {what}, not a store directory"  # the path resolved
    )
    before = _listing(tmp_path)
    for spelling in (path, str(path)):
        with pytest.raises(ma.ReadFailed) as info:
            async with ma.open_store(spelling):
                pytest.fail("opened")
        assert str(info.value) == expected
        assert "File exists" not in str(info.value)
        assert not isinstance(info.value, (ma.CorruptStore, ma.UnsupportedFormat))
    assert _listing(tmp_path) == before


def test_the_cli_names_a_file_given_for_a_store_directory(tmp_path: Path, capsys) -> None:
    """The commands that open a store (checkpoint, demo) and those that read
    one say the same, exit 3 (tests/test_cli.py runs every command)."""
    plain = tmp_path / "plain"
    plain.write_text("my notes")
    before = _listing(tmp_path)
    for args in (["checkpoint", str(plain)], ["demo", str(plain)], ["inspect", str(plain)]):
        assert main(args) == 3, args
        err = capsys.readouterr().err
        assert err == f"meerkat-actor: error: {plain} is a file, not a store directory\n", args
    assert _listing(tmp_path) == before
