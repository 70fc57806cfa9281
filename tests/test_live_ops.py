"""Operations on a live store (issue 16, item 3; docs/operations.md):

- the LOCK file names its holder, `StoreLocked` says who holds a store and
  what to do instead, and a stale note (a process that died) neither blocks
  an open nor is reported as running;
- SIGINT and SIGTERM stop a host that uses `shutdown_on_signals` cleanly:
  exit 0, no traceback, the final checkpoint taken, every acknowledged write
  there after reopening (real child processes: tests/_live_ops_child.py and
  the `demo` command);
- the live view (`_dry_run.read_live`; `inspect`, `dump`, `export-sqlite` on
  an open store) beside a writer in another process: every write
  acknowledged before the read began, nothing half-written, no byte of the
  directory changed by the reader.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import errno
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import trio

import meerkat_actor as ma
from meerkat_actor import _core, _dry_run, _holder
from meerkat_actor import _format as fmt
from meerkat_actor._durable import DEFAULT_MAX_RECORD, DurableLog
from meerkat_actor._fs import FileIO, Handle, LockHandle
from meerkat_actor._shutdown import (
    Shutdown,
    asyncio_shutdown_on_signals,
    shutdown_on_signals,
)

CHILD = Path(__file__).with_name("_live_ops_child.py")
RUNTIME = ma.LogicalRuntimeId("w")
#: Generous: a loaded 2-vCPU machine starts a Python child in about a second.
TIMEOUT = 60.0

HOLD = """
import sys, trio, meerkat_actor as ma
async def main():
    async with ma.open_store(sys.argv[1]) as store:
        await store.persist_auth_oauth_flow_snapshot(b"held")
        print("open", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
trio.run(main)
"""


# --- child processes -------------------------------------------------------------------------


class Child:
    """A child process whose stdout lines are collected as they come."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._new: queue.Queue[None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            self._new.put(None)
        self._new.put(None)

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not condition():
            if self.process.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"the child ended before {what}: {self.finish()}")
            with suppress(queue.Empty):
                self._new.get(timeout=max(0.0, min(0.5, deadline - time.monotonic())))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.lines[-5:]}")

    def acked(self) -> int:
        """The last n the child printed `ACK n` for."""
        for line in reversed(self.lines):
            if line.startswith("ACK "):
                return int(line.split()[1])
        return 0

    def finish(self) -> tuple[int, str]:
        """Wait for the child to end; its exit status and stderr."""
        process = self.process
        if process.stdin is not None and not process.stdin.closed:
            with suppress(BrokenPipeError):
                process.stdin.close()
        process.wait(timeout=TIMEOUT)
        assert process.stderr is not None
        stderr = "" if process.stderr.closed else process.stderr.read()
        process.stderr.close()
        self._reader.join(TIMEOUT)
        return process.returncode, stderr

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.finish()


@contextmanager
def child(*args: str) -> Iterator[Child]:
    running = Child([str(a) for a in args])
    try:
        yield running
    finally:
        running.kill()


def writer(directory: Path, flavour: str = "trio", checkpoint_bytes: int = 1 << 30, pause=0.0):
    return child(CHILD, directory, flavour, checkpoint_bytes, pause)


@contextmanager
def held(directory: Path) -> Iterator[Child]:
    """A child process that has the store open (after one write) while the block runs."""
    with child("-c", HOLD, directory) as holder:
        holder.wait_for(lambda: "open" in holder.lines, "the store to open")
        yield holder


# --- reading a store -----------------------------------------------------------------------


def input_id(n: int) -> ma.InputId:
    return ma.InputId(uuid.UUID(int=n))


def counted(state: _core.StoreState) -> tuple[int, set[int]]:
    """What the writer's state says: its counter c, and the n of its inputs."""
    oauth = _core.load_auth_oauth_flow_snapshot(state)
    inputs = {s.state.input_id.value.int for s in _core.load_input_states(state, RUNTIME)}
    return (0 if oauth is None else int(oauth)), inputs


def assert_a_prefix(state: _core.StoreState, acked: int) -> int:
    """The state is one the writer passed through (never half of a write),
    holding every write it acknowledged (`acked`) or more; its counter."""
    c, inputs = counted(state)
    assert c >= acked, (c, acked)
    assert inputs in (set(range(1, c + 1)), set(range(1, c + 2))), (c, sorted(inputs)[-3:])
    return c


def reopened(directory: Path) -> _core.StoreState:
    async def read() -> _core.StoreState:
        async with ma.open_store(directory) as store:
            return store._actor.published

    return trio.run(read)


def assert_closed_with_final_checkpoint(directory: Path) -> int:
    """The files of a store closed cleanly after its final checkpoint: one
    snapshot at the last LSN, one empty segment after it, LOCK empty."""
    names = sorted(os.listdir(directory))
    snapshots = fmt.numbered(names, fmt.SNAPSHOT_NAME)
    segments = fmt.numbered(names, fmt.SEGMENT_NAME)
    assert len(snapshots) == 1, names
    assert len(segments) == 1, names
    (lsn, _), ((first, segment),) = snapshots[0], segments
    assert first == lsn + 1, names
    assert names == sorted(["FORMAT", "LOCK", snapshots[0][1], segment])
    assert not (directory / segment).read_bytes()[fmt.SEGMENT_HEADER :].strip(b"\0")
    assert (directory / "LOCK").read_bytes() == b""
    return lsn


def files(directory: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, mode and mtime, and the directory's own mtime."""
    found = {".": (b"", 0, os.stat(directory).st_mtime_ns)}
    for name in os.listdir(directory):
        status = os.stat(directory / name)
        found[name] = ((directory / name).read_bytes(), status.st_mode, status.st_mtime_ns)
    return found


# --- 1. the LOCK file names its holder -------------------------------------------------------


async def test_a_store_open_in_another_process_is_refused_naming_it(tmp_path: Path):
    store = tmp_path / "store"
    with held(store) as holder:
        note, size = FileIO().read_lock_note(str(store / "LOCK"), 4096)
        decoded = _holder.decode(note)
        assert decoded is not None
        assert size == decoded[1]
        assert decoded[0].pid == holder.pid
        with pytest.raises(ma.StoreLocked) as info:
            async with ma.open_store(store):
                pass
        error = info.value
        assert (error.directory, error.pid, error.host) == (
            str(store),
            holder.pid,
            socket.gethostname(),
        )
        message = str(error)
        assert message.startswith(
            f"{store} is locked by another open store: pid {holder.pid} on host"
            f" {socket.gethostname()} (-c, opened 20"
        )
        assert "which is running" in message
        assert "`await store.backup(path)`" in message
        assert f"`kill -TERM {holder.pid}`" in message
        assert "shutdown_on_signals()" in message
        # The refused open disturbed neither the lock nor the note.
        assert FileIO().read_lock_note(str(store / "LOCK"), 4096) == (note, size)
        assert holder.finish() == (0, "")
    # A clean close takes the note away with the lock.
    assert (store / "LOCK").read_bytes() == b""
    async with ma.open_store(store) as opened:
        assert await opened.load_auth_oauth_flow_snapshot() == b"held"


async def test_a_stale_note_blocks_nothing_and_is_not_reported_as_running(tmp_path: Path):
    store = tmp_path / "store"
    with held(store) as holder:
        holder.process.kill()  # kill -9: its note stays behind
        holder.process.wait(TIMEOUT)
    stale = (store / "LOCK").read_bytes()
    decoded = _holder.decode(stale)
    assert decoded is not None
    assert decoded[0].pid == holder.pid
    assert _holder.running(FileIO(), decoded[0]) is False
    # A reader holds the (shared) lock: an open is refused, and the message
    # says the process the note names is not running.
    reader = FileIO().lock(str(store / "LOCK"), shared=True)
    try:
        with pytest.raises(ma.StoreLocked) as info:
            async with ma.open_store(store):
                pass
    finally:
        FileIO().unlock(reader)
    message = str(info.value)
    assert f"it was last held by pid {holder.pid} on host" in message
    assert "which is not running" in message
    assert "a read-only command" in message
    assert "which is running" not in message
    assert info.value.pid is None
    # The stale note blocks nothing: the open replaces it with its own.
    async with ma.open_store(store) as opened:
        assert await opened.load_auth_oauth_flow_snapshot() == b"held"
        mine = _holder.decode((store / "LOCK").read_bytes())
        assert mine is not None
        assert mine[0].pid == os.getpid()
    assert (store / "LOCK").read_bytes() == b""


async def test_an_empty_lock_file_as_older_versions_leave_it_opens(tmp_path: Path):
    store = tmp_path / "store"
    async with ma.open_store(store) as opened:
        await opened.persist_auth_oauth_flow_snapshot(b"x")
    assert (store / "LOCK").read_bytes() == b""
    # An older build holding it writes no note: the message says so.
    older = FileIO().lock(str(store / "LOCK"))
    try:
        with pytest.raises(ma.StoreLocked) as info:
            async with ma.open_store(store):
                pass
    finally:
        FileIO().unlock(older)
    assert "left no note" in str(info.value)
    assert "an older meerkat_actor" in str(info.value)
    assert f"fuser -v {store}/LOCK" in str(info.value)
    async with ma.open_store(store) as opened:
        assert await opened.load_auth_oauth_flow_snapshot() == b"x"


def test_a_note_names_a_process_only_while_that_process_runs():
    io = FileIO()
    me = _holder.this_process(io)
    assert me.pid == os.getpid()
    assert _holder.running(io, me) is True
    if me.start_ticks is not None:  # Linux: a reused pid is told apart
        reused = _holder.Holder(**{**me.__dict__, "start_ticks": me.start_ticks + 1})
        assert _holder.running(io, reused) is False
    elsewhere = _holder.Holder(**{**me.__dict__, "host": me.host + "-other"})
    assert _holder.running(io, elsewhere) is None
    line = _holder.encode(me)
    assert _holder.decode(line) == (me, len(line))
    assert _holder.decode(line + b"..") == (me, len(line))  # marks follow the line
    for garbage in (b"", line[:-1], b"\xff\n", b"[]\n", b'{"meerkat_actor_lock": 2}\n'):
        assert _holder.decode(garbage) is None
    no_pid = json.loads(line)
    no_pid["pid"] = 0
    assert _holder.decode(json.dumps(no_pid).encode() + b"\n") is None


# --- 2. shutdown on SIGINT and SIGTERM -------------------------------------------------------


@pytest.mark.parametrize("flavour", ["trio", "asyncio"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_a_host_cleanly(tmp_path: Path, flavour: str, signum: signal.Signals):
    store = tmp_path / "store"
    with writer(store, flavour, pause=0.002) as host:
        host.wait_for(lambda: host.acked() >= 5, "five acknowledged writes")
        host.process.send_signal(signum)
        status, stderr = host.finish()
    assert status == 0, stderr
    assert stderr == ""
    assert host.lines[-1] == f"STOPPED {signum.name}"
    last = assert_closed_with_final_checkpoint(store)
    state = reopened(store)
    c = assert_a_prefix(state, host.acked())
    assert c <= host.acked() + 1
    assert last >= 2 * host.acked()


@pytest.mark.parametrize("flavour", ["trio", "asyncio"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_demo_cleanly(tmp_path: Path, signum: signal.Signals, flavour: str):
    store = tmp_path / "demo"
    first = store / fmt.segment_name(1)

    def written() -> bool:  # a record after the first segment's header
        try:
            with open(first, "rb") as file:
                return bool(file.read(fmt.SEGMENT_HEADER + 8)[fmt.SEGMENT_HEADER :].strip(b"\0"))
        except FileNotFoundError:
            return False

    args = ["-m", "meerkat_actor", "demo", store, "--runtimes", "2", "--runs", "1000000"]
    if flavour == "asyncio":
        args.append("--asyncio")
    with child(*args) as demo:
        demo.wait_for(lambda: "a new store" in demo.lines, "the demo to start")
        demo.wait_for(written, "the demo's first write")
        demo.process.send_signal(signum)
        status, stderr = demo.finish()
    assert status == 0, stderr
    assert stderr == ""
    assert f"stopped by {signum.name}: the workload was cut short" in demo.lines
    assert demo.lines[-1].startswith("reopened: every acknowledged write is back")
    assert_closed_with_final_checkpoint(store)


async def test_the_trio_helper_stops_its_block_and_gives_the_signals_back():
    before = signal.getsignal(signal.SIGTERM)
    async with shutdown_on_signals() as shutdown:
        assert signal.getsignal(signal.SIGTERM) is not before
        signal.raise_signal(signal.SIGTERM)
        await trio.sleep_forever()
    assert shutdown.signal is signal.SIGTERM
    assert shutdown.requested
    assert signal.getsignal(signal.SIGTERM) is before
    async with shutdown_on_signals(signal.SIGUSR1) as quiet:
        await trio.lowlevel.checkpoint()
    assert quiet == Shutdown()
    assert not quiet.requested
    with pytest.raises(ValueError, match="its own"):  # not an ExceptionGroup
        async with shutdown_on_signals():
            raise ValueError("its own")
    with pytest.raises(TypeError, match="signal numbers"):
        async with shutdown_on_signals("SIGTERM"):  # type: ignore[arg-type]
            pass


def test_the_asyncio_helper_stops_its_block_and_gives_the_signals_back():
    async def main() -> tuple[Shutdown, object, object]:
        before = signal.getsignal(signal.SIGINT)  # asyncio.run's own handler
        async with asyncio_shutdown_on_signals() as shutdown:
            signal.raise_signal(signal.SIGINT)
            await asyncio.sleep(TIMEOUT)
        await asyncio.sleep(0)  # not cancelled any more
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0
        async with asyncio_shutdown_on_signals() as quiet:
            await asyncio.sleep(0)
        assert not quiet.requested
        with pytest.raises(ValueError, match="its own"):
            async with asyncio_shutdown_on_signals():
                raise ValueError("its own")
        return shutdown, before, signal.getsignal(signal.SIGINT)

    shutdown, before, after = asyncio.run(main())
    assert shutdown.signal is signal.SIGINT
    assert after is before


# --- 3. the live view ------------------------------------------------------------------------


def test_a_live_view_beside_a_writer_is_exact(tmp_path: Path):
    """Reads while the writer appends, rotates and checkpoints (a few KiB
    apart): each holds every write acknowledged before it began, and is a
    state the writer passed through."""
    store = tmp_path / "store"
    snapshots: set[str] = set()
    with writer(store, checkpoint_bytes=4096) as host:
        host.wait_for(lambda: host.acked() >= 20, "twenty acknowledged writes")
        deadline = time.monotonic() + 2.0
        reads = 0
        while time.monotonic() < deadline or len(snapshots) < 3:
            acked = host.acked()
            view = _dry_run.read_store(str(store))
            assert_a_prefix(view.state, acked)
            (note,) = view.notes
            assert note.message.startswith(f"read live beside the open store (pid {host.pid} ")
            snapshots.update(f.name for f in view.files if f.kind == "snapshot")
            reads += 1
            assert time.monotonic() < deadline + TIMEOUT, "no checkpoint seen"
        # The command line reads it live too, and prints whole documents.
        acked = host.acked()
        done = subprocess.run(
            [sys.executable, "-m", "meerkat_actor", "dump", str(store), "--include-secrets"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        documents = [json.loads(line) for line in done.stdout.splitlines()]
        (oauth,) = [d for d in documents if d["kind"] == "oauth_flow_snapshot"]
        assert int(base64.b64decode(oauth["snapshot_base64"])) >= acked
        host.process.send_signal(signal.SIGTERM)
        assert host.finish()[0] == 0
    assert reads >= 3
    assert_a_prefix(reopened(store), host.acked())


def test_a_live_view_changes_no_byte(tmp_path: Path):
    store = tmp_path / "store"
    with held(store):
        before = files(store)
        view = _dry_run.read_store(str(store))
        done = subprocess.run(
            [sys.executable, "-m", "meerkat_actor", "inspect", str(store), "--json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        assert files(store) == before
    assert _core.load_auth_oauth_flow_snapshot(view.state) == b"held"
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["oauth_flow_snapshot"] is True


async def test_a_write_in_flight_is_not_seen_nor_cut(tmp_path: Path):
    store = tmp_path / "store"
    async with ma.open_store(store) as opened:
        for n in (1, 2):
            await opened.persist_auth_oauth_flow_snapshot(str(n).encode())
        log = opened._actor.writer.log  # type: ignore[union-attr]
        segment = log._segment.path  # type: ignore[union-attr]
        end = log._segment_size
        # Half of a next record, as a reader may find a write in progress.
        whole = fmt.frame_records(3, [b"\xa0" * 64])
        await trio.to_thread.run_sync(_write_at, segment, end, whole[: len(whole) // 2])
        before = await trio.Path(segment).read_bytes()
        view = await trio.to_thread.run_sync(_dry_run.read_store, str(store))
        assert view.last_lsn == 2
        assert _core.load_auth_oauth_flow_snapshot(view.state) == b"2"
        assert await trio.Path(segment).read_bytes() == before


async def test_damage_in_a_live_store_is_reported_not_retried_forever(tmp_path: Path):
    store = tmp_path / "store"
    async with ma.open_store(store) as opened:
        for n in range(1, 4):
            await opened.persist_auth_oauth_flow_snapshot(str(n).encode())
        segment = opened._actor.writer.log._segment.path  # type: ignore[union-attr]
        where = fmt.SEGMENT_HEADER + fmt.FRAME_HEADER  # the first record's payload
        first = (await trio.Path(segment).read_bytes())[where]
        await trio.to_thread.run_sync(_write_at, segment, where, bytes([first ^ 0xFF]))
        with pytest.raises(ma.CorruptStore) as info:
            await trio.to_thread.run_sync(_dry_run.read_store, str(store))
        assert segment in str(info.value)


async def test_a_live_read_waits_out_a_checkpoint_removing_files(tmp_path: Path):
    store = tmp_path / "store"
    async with ma.open_store(store) as opened:
        await opened.persist_auth_oauth_flow_snapshot(b"1")
        lock = opened._actor.writer.log._lock  # type: ignore[union-attr]
        end = len((store / "LOCK").read_bytes())
        io = FileIO()
        io.extend_lock_note(lock, end, _holder.MARK)  # removing ...
        with pytest.raises(ma.ReadFailed, match="changed under every attempt"):
            await trio.to_thread.run_sync(
                lambda: _dry_run.read_live(os.path.realpath(store), timeout=0.3)
            )
        io.extend_lock_note(lock, end + 1, _holder.MARK)  # ... done
        view = await trio.to_thread.run_sync(_dry_run.read_store, str(store))
        assert _core.load_auth_oauth_flow_snapshot(view.state) == b"1"


def test_a_holder_that_leaves_no_note_cannot_be_read_live(tmp_path: Path):
    store = tmp_path / "store"
    trio.run(_make, store)
    older = FileIO().lock(str(store / "LOCK"))  # as an older meerkat_actor would
    try:
        with pytest.raises(ma.StoreLocked, match="left no note: an older meerkat_actor"):
            _dry_run.read_store(str(store))
    finally:
        FileIO().unlock(older)
    assert _dry_run.read_store(str(store)).notes == []


def _write_at(path: str, offset: int, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


async def _make(store: Path) -> None:
    async with ma.open_store(store) as opened:
        await opened.persist_auth_oauth_flow_snapshot(b"x")


# --- review: the note's marks stay bounded; a failing mark never blocks removal --------------


class _NoSyncIO(FileIO):
    """The real file layer without fsyncs (these tests never cut the power)."""

    def sync(self, handle: Handle) -> None:
        pass

    def sync_dir(self, path: str) -> None:
        pass


class _FullDiskIO(_NoSyncIO):
    """A full disk as LOCK sees it: its note was written, its next mark needs a block."""

    def extend_lock_note(self, lock: LockHandle, offset: int, data: bytes) -> None:
        if offset > 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().extend_lock_note(lock, offset, data)


def _note(directory: Path) -> tuple[_holder.Holder, int]:
    decoded = _holder.decode((directory / "LOCK").read_bytes())
    assert decoded is not None
    return decoded[0], (directory / "LOCK").stat().st_size - decoded[1]


def test_the_lock_file_stays_one_page_over_many_checkpoints(tmp_path: Path):
    """Two marks per checkpoint would grow LOCK without bound in a long-lived
    host; once they fill NOTE_LIMIT bytes the note is written anew, with a
    new nonce (so a live reader that saw the old one sees a change)."""
    store = tmp_path / "store"
    log, _ = DurableLog.open(_NoSyncIO(), str(store), DEFAULT_MAX_RECORD)
    try:
        first, _ = _note(store)
        sizes = set()
        for lsn in range(1, 2 * _holder.NOTE_LIMIT):
            log.write_snapshot(lsn, _core.EMPTY, 1)  # removes the snapshot before
            sizes.add((store / "LOCK").stat().st_size)
        assert max(sizes) <= _holder.NOTE_LIMIT
        holder, marks = _note(store)
        assert marks % 2 == 0
        assert holder.nonce != first.nonce
        assert dataclasses.replace(holder, nonce=first.nonce) == first
    finally:
        log.close()
    assert (store / "LOCK").read_bytes() == b""


async def test_a_checkpoint_that_cannot_mark_still_removes_what_it_covers(tmp_path: Path):
    """A full disk fails the mark before the removals: the note goes (a live
    reader then reads nothing live) and the files are removed all the same;
    before, every checkpoint left one more whole snapshot behind."""
    store = tmp_path / "store"
    async with ma.open_store(store, _io=_FullDiskIO()) as opened:
        for n in range(5):
            await opened.persist_auth_oauth_flow_snapshot(str(n).encode())
            await opened.checkpoint()
        names = sorted(os.listdir(store))
        assert (store / "LOCK").read_bytes() == b""
        with pytest.raises(ma.StoreLocked, match="left no note"):
            await trio.to_thread.run_sync(_dry_run.read_store, str(store))
    assert len(fmt.numbered(names, fmt.SNAPSHOT_NAME)) == 1, names
    assert len(fmt.numbered(names, fmt.SEGMENT_NAME)) == 1, names
    async with ma.open_store(store) as again:
        assert await again.load_auth_oauth_flow_snapshot() == b"4"


# --- review: the asyncio helper's bookkeeping -------------------------------------------------


def test_the_asyncio_helper_takes_back_its_cancellation_once():
    """A signal's cancellation and another one (here two deadlines at one
    instant) meet in the block: the helper must uncancel once, or the outer
    deadline's cancellation is lost and the code runs on past it."""

    async def main() -> bool:
        when = asyncio.get_running_loop().time() + 0.05
        ran_on = False
        with suppress(TimeoutError):
            async with asyncio.timeout_at(when):  # the outer deadline
                with suppress(TimeoutError):  # the inner one is handled here
                    async with (
                        asyncio.timeout_at(when),
                        asyncio_shutdown_on_signals(signal.SIGUSR1),
                    ):
                        try:
                            await asyncio.sleep(TIMEOUT)  # both deadlines fire
                        except asyncio.CancelledError:
                            signal.raise_signal(signal.SIGUSR1)
                            await asyncio.sleep(TIMEOUT)  # the signal cancels this
                await asyncio.sleep(0.5)  # the outer deadline has passed
                ran_on = True
        return ran_on

    assert asyncio.run(main()) is False


def test_the_asyncio_helper_gives_back_a_handler_the_loop_held():
    async def main() -> list[str]:
        got: list[str] = []
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, got.append, "the host's own")
        try:
            async with asyncio_shutdown_on_signals(signal.SIGUSR1):
                await asyncio.sleep(0)
            signal.raise_signal(signal.SIGUSR1)
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.01)
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)
        return got

    assert asyncio.run(main()) == ["the host's own"]
