"""The storage actor and the store handle (SPEC §3, §6).

Rule 1: this module holds no semantics. What a command does is decided by
`_core.apply`; what a read returns by the `_core.load_*` functions. Here we
only move commands to the actor, replies back, and keep the state value.

Rule 2: one task, the actor, owns the working state. Nobody else assigns it.

Rule 3: every command the actor receives gets exactly one reply, on every
path: applied, refused, actor failure, close, cancellation. A caller never
waits for a reply that cannot come.

Theory of operation. `open_store()` starts the actor in a nursery and hands
out an `ActorStore`. A write builds its command in the caller's task (the
command's constructor checks the arguments, so bad input never travels),
sends `(command, reply)` on a bounded trio memory channel, and waits for the
one-shot reply. The actor receives one envelope, then drains every envelope
already waiting (up to `max_batch`): one *batch*. It applies the batch's
commands in order with the pure core, publishes the resulting state value,
then replies to each. Refused commands (store errors, an OAuth updater that
raised) get their error and leave the state as it was.

Reads do not travel: they read the *published* state, the value as of the
last batch whose writes have all been acknowledged, with the pure core's read
functions. Immutability makes that safe without locks, and it is
linearizable: a write is visible to every reader from the moment before its
caller is told it succeeded.

Cancellation: a caller cancelled while its command is being sent has sent
nothing. Once sent, the caller waits for the reply shielded from
cancellation (as `trio.to_thread.run_sync` does by default), so the command
completes atomically and takes effect before any later call of that task; the
pending cancellation is delivered at the caller's next checkpoint. A command
is applied in microseconds, so the delay is short.

Failure: if applying a command raises anything but a store error or a
caller-code error, the actor has a bug; it marks itself failed, answers that
command, the rest of its batch and everything queued with `Internal` (chained
to the cause), and stops. Later calls get `Internal` at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple, final

import trio

from . import _core
from ._check import check_instance, check_positive, check_u64
from ._core import Command, StoreState
from ._durable import DEFAULT_MAX_RECORD, MAX_RECORD_LIMIT, DurableLog
from ._errors import Internal, RuntimeStoreError, StoreClosed, StorePoisoned, WriteFailed
from ._format import encode_payload
from ._fs import FileIO
from ._ids import InputId, LogicalRuntimeId, RunId, SessionId
from ._session_codec import SessionCodec, check_session_codec
from ._types import (
    MachineLifecycleCommit,
    PersistedOpsSnapshot,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
)
from ._util import NoPublicConstructor, unwrap_single_exception
from ._writer import Group, Outcome, Writer, deliver

__all__ = ["ActorStore", "StoreStatistics", "open_store"]

logger = logging.getLogger("meerkat_actor")

DEFAULT_MAX_PENDING = 1024
DEFAULT_MAX_BATCH = 256


@final
@dataclass(frozen=True, slots=True)
class StoreStatistics:
    """A snapshot of a store's counters (`store.statistics()`).

    Attributes:
        commands: write commands the actor has taken, applied or refused.
        refused: of those, the ones that failed (store error or caller code).
        batches: groups of commands applied together.
        largest_batch: the most commands in one batch.
        effects: effect records produced by applied commands.
        records: log records written (one per applied command; 0 in memory).
        fsyncs: log syncs, one per group commit (0 for an in-memory store).
        bytes_written: log bytes written (0 for an in-memory store).
        checkpoints: snapshots written (0 for an in-memory store).
        pending: commands sent and waiting for the actor now.
        max_pending: the command channel's bound.
    """

    commands: int
    refused: int
    batches: int
    largest_batch: int
    effects: int
    records: int
    fsyncs: int
    bytes_written: int
    checkpoints: int
    pending: int
    max_pending: int


class _Reply:
    """A one-shot reply slot: set exactly once, by the actor."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None

    def set(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


class _Envelope(NamedTuple):
    command: Command
    reply: _Reply


class _Actor:
    """The actor task's state: the working state value and counters.

    `writer` is `None` for an in-memory store; for a durable one, applied
    batches go to it as groups and are answered once durable (`_writer.py`).
    """

    def __init__(
        self,
        codec: SessionCodec,
        max_batch: int,
        max_pending: int,
        *,
        state: StoreState = _core.EMPTY,
        next_lsn: int = 1,
        max_record: int = DEFAULT_MAX_RECORD,
    ) -> None:
        self.codec = codec
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.max_record = max_record
        self.state: StoreState = state
        self.published: StoreState = state
        self.next_lsn = next_lsn
        self.writer: Writer | None = None
        self.failure: BaseException | None = None
        self.poisoned: BaseException | None = None
        self.commands = 0
        self.refused = 0
        self.batches = 0
        self.largest_batch = 0
        self.effects = 0

    def internal_error(self) -> Internal:
        error = Internal(f"the storage actor died: {self.failure!r}")
        error.__cause__ = self.failure
        return error

    def publish(self, state: StoreState) -> None:
        """The writer made `state` durable: readers may see it now."""
        self.published = state

    def poison(self, cause: BaseException) -> None:
        """The writer failed: fall back to the last durable state, refuse writes."""
        self.poisoned = cause
        self.state = self.published

    async def run(self, receive: trio.MemoryReceiveChannel[_Envelope]) -> None:
        try:
            while self.failure is None:
                try:
                    batch = [await receive.receive()]
                except trio.EndOfChannel:
                    return
                while len(batch) < self.max_batch:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                outcomes, records, fatal = self.run_batch(batch)
                if self.writer is None:
                    self.published = self.state
                    deliver(outcomes)
                else:
                    group = Group(records, self.state, self.next_lsn - 1, outcomes)
                    try:
                        await self.writer.submit(group)
                    except BaseException:
                        # Cancelled while waiting for room: the group never
                        # reached the writer. Answer its callers (Rule 3).
                        for reply, _ in outcomes:
                            reply.set(
                                StoreClosed("the store closed before this command was durable")
                            )
                        raise
                if fatal is not None:
                    raise fatal
        finally:
            # Answer everything still queued, then close: no sender can slip
            # in between, since nothing here yields to trio.
            while True:
                try:
                    envelope = receive.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                envelope.reply.set(
                    self.internal_error()
                    if self.failure is not None
                    else StoreClosed("the store closed before this command was applied")
                )
            receive.close()
            if self.writer is not None:
                self.writer.close_input()

    def run_batch(
        self, batch: list[_Envelope]
    ) -> tuple[list[Outcome], list[bytes], BaseException | None]:
        """Apply a batch with the pure core.

        Returns each command's outcome (its reply and error, `None` if
        applied), the log record payloads of the applied commands (durable
        stores only; the writer frames them), and a `BaseException` to
        re-raise once the batch is answered, if one struck.
        """
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        state = self.state
        outcomes: list[Outcome] = []
        records: list[bytes] = []
        fatal: BaseException | None = None
        durable = self.writer is not None
        for command, reply in batch:
            if self.failure is not None:
                outcomes.append((reply, self.internal_error()))
                continue
            self.commands += 1
            if self.poisoned is not None:
                self.refused += 1
                outcomes.append((reply, self.poisoned_error()))
                continue
            try:
                new_state, effects = _core.apply(state, command, self.codec)
                payload = encode_payload(effects) if durable else b""
            except RuntimeStoreError as exc:
                self.refused += 1
                outcomes.append((reply, exc))
            except _core.CallerCodeError as exc:
                self.refused += 1
                outcomes.append((reply, exc.error))
            except BaseException as exc:
                # A bug, or a BaseException (KeyboardInterrupt, SystemExit)
                # raised while applying: the actor dies, but first every
                # command of the batch gets its answer (Rule 3).
                logger.exception("the storage actor died applying %r", command)
                self.failure = exc
                outcomes.append((reply, self.internal_error()))
                if not isinstance(exc, Exception):
                    fatal = exc
            else:
                if len(payload) > self.max_record:
                    self.refused += 1
                    outcomes.append(
                        (
                            reply,
                            WriteFailed(
                                f"the command's log record would be {len(payload)} bytes,"
                                f" over the store's max_record_bytes={self.max_record}"
                            ),
                        )
                    )
                    continue
                if durable:
                    records.append(payload)
                    self.next_lsn += 1
                state = new_state
                self.effects += len(effects)
                outcomes.append((reply, None))
        self.state = state
        return outcomes, records, fatal

    def poisoned_error(self) -> StorePoisoned:
        error = StorePoisoned(
            f"the store is poisoned by an earlier write failure ({self.poisoned}); reopen it"
        )
        error.__cause__ = self.poisoned
        return error


@final
class ActorStore(metaclass=NoPublicConstructor):
    """A handle on an actor store; made only by `open_store()`.

    Implements `RuntimeStore`. Safe to share between any number of trio tasks
    of the run that opened it.
    """

    __construct_hint__ = "use meerkat_actor.open_store()"

    def __init__(
        self,
        actor: _Actor,
        send: trio.MemorySendChannel[_Envelope],
        directory: str | None = None,
    ) -> None:
        self._actor = actor
        self._send = send
        self._directory = directory
        self._closed = False

    # --- plumbing -------------------------------------------------------------

    def _unusable(self) -> RuntimeStoreError | None:
        if self._actor.failure is not None:
            return self._actor.internal_error()
        if self._closed:
            return StoreClosed("the store is closed (its `async with` block has exited)")
        return None

    async def _write(self, command: Command) -> None:
        error = self._unusable()
        if error is not None:
            await trio.lowlevel.checkpoint()
            raise error
        reply = _Reply()
        try:
            await self._send.send(_Envelope(command, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise (self._unusable() or StoreClosed("the store is closed")) from exc
        with trio.CancelScope(shield=True):
            await reply.done.wait()
        if reply.error is not None:
            raise reply.error

    async def _readable(self) -> StoreState:
        await trio.lowlevel.checkpoint()
        error = self._unusable()
        if error is not None:
            raise error
        return self._actor.published

    # --- RuntimeStore -----------------------------------------------------------

    def auth_authority_key(self) -> str | None:
        """`"actor:" + the resolved store directory`; `None` in memory.

        Stable across reopens of the same directory, so a host can reuse
        process-local auth state keyed by it.
        """
        return None if self._directory is None else "actor:" + self._directory

    async def persist_auth_oauth_flow_snapshot(self, snapshot: bytes) -> None:
        """Replace the store-wide OAuth flow snapshot.

        Raises:
            TypeError: `snapshot` is not `bytes`.
            StoreClosed, Internal: the store cannot take writes.
        """
        await self._write(_core.PersistOAuthFlowSnapshot(snapshot))

    async def load_auth_oauth_flow_snapshot(self) -> bytes | None:
        """The store-wide OAuth flow snapshot, or `None` if never written."""
        return _core.load_auth_oauth_flow_snapshot(await self._readable())

    async def update_auth_oauth_flow_snapshot(
        self, update: Callable[[bytes | None], bytes]
    ) -> None:
        """Atomically replace the OAuth flow snapshot with `update(current)`.

        `update` runs inside the actor with the current value (`None` if
        there is none); no other command runs in between, so it is safe as a
        counter under any concurrency. It must be quick and must not block:
        it runs on the trio thread.

        Raises:
            TypeError: `update` is not callable, or it returned non-bytes
                (nothing changed).
            Exception: whatever `update` raised, unchanged (nothing changed).
        """
        await self._write(_core.UpdateOAuthFlowSnapshot(update))

    async def commit_session_snapshot(
        self, runtime_id: LogicalRuntimeId, delta: SessionDelta
    ) -> None:
        """Replace the runtime's session snapshot; writes no receipt.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: the session codec cannot read the snapshot.
        """
        await self._write(_core.CommitSessionSnapshot(runtime_id, delta))

    async def atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        delta: SessionDelta | None,
        receipt: RunBoundaryReceipt,
        input_updates: Sequence[StoredInputState],
        session_store_key: SessionId | None = None,
    ) -> None:
        """Commit a session snapshot (optional), a receipt and input states as one.

        Raises:
            TypeError: wrong argument types.
            WriteFailed: the session codec cannot read the snapshot.
            SessionKeyMismatch: `session_store_key` differs from the
                snapshot's session id.
            ReceiptConflict: a receipt with the same `(run_id, sequence)`
                exists for the runtime.
            In every case nothing of the call was applied.
        """
        await self._write(
            _core.AtomicApply(runtime_id, delta, receipt, input_updates, session_store_key)
        )

    async def load_input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        """The runtime's input states sorted by input id; `[]` if it has none."""
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return _core.load_input_states(await self._readable(), runtime_id)

    async def load_input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        """One input state, or `None`."""
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(input_id, InputId, "input_id")
        return _core.load_input_state(await self._readable(), runtime_id, input_id)

    async def persist_input_state(
        self, runtime_id: LogicalRuntimeId, state: StoredInputState
    ) -> None:
        """Upsert one input state by its input id."""
        await self._write(_core.PersistInputState(runtime_id, state))

    async def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        """The receipt under `(runtime_id, run_id, sequence)`, or `None`.

        Raises:
            ValueError: `sequence` is outside [0, 2**64-1].
        """
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        check_instance(run_id, RunId, "run_id")
        sequence = check_u64(sequence, "sequence")
        return _core.load_boundary_receipt(await self._readable(), runtime_id, run_id, sequence)

    async def load_session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        """The runtime's session snapshot, or `None`."""
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return _core.load_session_snapshot(await self._readable(), runtime_id)

    async def load_runtime_state(self, runtime_id: LogicalRuntimeId) -> RuntimeState | None:
        """The runtime's lifecycle state, or `None` if never committed."""
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return _core.load_runtime_state(await self._readable(), runtime_id)

    async def commit_machine_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        commit: MachineLifecycleCommit,
        input_states: Sequence[StoredInputState],
    ) -> None:
        """Write the runtime state chosen by `commit` and upsert `input_states`, as one."""
        await self._write(_core.CommitMachineLifecycle(runtime_id, commit, input_states))

    async def persist_ops_lifecycle(
        self, runtime_id: LogicalRuntimeId, snapshot: PersistedOpsSnapshot
    ) -> None:
        """Replace the runtime's ops lifecycle snapshot."""
        await self._write(_core.PersistOpsLifecycle(runtime_id, snapshot))

    async def load_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> PersistedOpsSnapshot | None:
        """The runtime's ops lifecycle snapshot, or `None`."""
        check_instance(runtime_id, LogicalRuntimeId, "runtime_id")
        return _core.load_ops_lifecycle(await self._readable(), runtime_id)

    # --- extras ---------------------------------------------------------------

    async def checkpoint(self) -> None:
        """Write a snapshot covering every write acknowledged so far, and drop
        the log it makes redundant. Returns once the snapshot is durable.

        Writes go on while the snapshot is written (in a worker thread). An
        in-memory store has nothing to write: the call only checkpoints trio.

        Raises:
            StoreClosed, Internal: the store cannot be used.
            StorePoisoned: an earlier log write failed; reopen the store.
            WriteFailed: the snapshot could not be written; nothing
                acknowledged is lost (the log still holds it).
        """
        error = self._unusable()
        if error is not None:
            await trio.lowlevel.checkpoint()
            raise error
        writer = self._actor.writer
        if writer is None:
            await trio.lowlevel.checkpoint()
            return
        await writer.checkpoint()

    async def backup(self, path: str | os.PathLike[str]) -> int:
        """Write a new, complete store at `path` holding every write
        acknowledged before the call; return its snapshot's size in bytes.

        `path` must not exist or be an empty directory. The backup is one
        snapshot (at the source's durable LSN; 0 for an in-memory store, whose
        content so becomes a durable store), written in a worker thread while
        writes go on; open it with `open_store(path)`. The snapshot goes in
        before the FORMAT file, so a backup cut short by a crash is refused
        by `open_store` as not a store, never mistaken for an empty one. A
        poisoned store can still be backed up: the backup holds what is
        durable.

        Raises:
            TypeError: `path` is not a str or os.PathLike.
            ValueError: `path` exists and is not an empty directory.
            StoreClosed, Internal: the store cannot be used.
            WriteFailed: the backup could not be written (a partial directory
                may remain at `path`: delete it before trying again).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be str or os.PathLike, got {type(path).__name__}")
        target = os.fspath(path)
        await trio.lowlevel.checkpoint()
        error = self._unusable()
        if error is not None:
            raise error
        writer = self._actor.writer
        if writer is None:
            io, lsn, state = FileIO(), 0, self._actor.published
        else:
            io, lsn, state = writer.log.io, writer.durable_lsn, writer.published
        try:
            return await trio.to_thread.run_sync(
                DurableLog.create_from_state, io, target, lsn, state, abandon_on_cancel=False
            )
        except OSError as exc:
            raise WriteFailed(f"cannot write a backup at {target}: {exc}") from exc

    def statistics(self) -> StoreStatistics:
        """The store's counters now (see `StoreStatistics`)."""
        actor = self._actor
        writer = actor.writer
        return StoreStatistics(
            commands=actor.commands,
            refused=actor.refused,
            batches=actor.batches,
            largest_batch=actor.largest_batch,
            effects=actor.effects,
            records=0 if writer is None else writer.records,
            fsyncs=0 if writer is None else writer.fsyncs,
            bytes_written=0 if writer is None else writer.bytes_written,
            checkpoints=0 if writer is None else writer.checkpoints,
            pending=self._send.statistics().current_buffer_used,
            max_pending=actor.max_pending,
        )

    def __repr__(self) -> str:
        state = (
            "closed"
            if self._closed
            else "failed"
            if self._actor.failure
            else "poisoned"
            if self._actor.poisoned
            else "open"
        )
        where = "in-memory" if self._directory is None else f"durable at {self._directory}"
        return f"<meerkat_actor {where} store ({state})>"


DEFAULT_CHECKPOINT_BYTES = 64 * 1024 * 1024


@asynccontextmanager
async def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    session_codec: SessionCodec | None = None,
    max_pending: int = DEFAULT_MAX_PENDING,
    max_batch: int = DEFAULT_MAX_BATCH,
    checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD,
    _io: FileIO | None = None,
) -> AsyncIterator[ActorStore]:
    """Open an actor store for the duration of an `async with` block.

    Args:
        path: a directory for a durable store (created 0700 if missing);
            `None` for an in-memory store.
        session_codec: reads the session id out of session snapshots;
            default `MeerkatSessionCodec` (Meerkat session JSON).
        max_pending: how many sent commands may wait for the actor before
            senders block (the channel's bound).
        max_batch: the most commands the actor applies as one batch.
        checkpoint_bytes: (durable) take a snapshot when the log written since
            the last one exceeds this many bytes.
        max_record_bytes: (durable) the largest log record a command may
            produce; a bigger one fails with `WriteFailed`. Recovery refuses
            records above it as `CorruptStore`.

    Durable stores recover on open (in a worker thread): the newest valid
    snapshot plus the log after it. A torn record at the very end of the log
    is truncated (a crash artifact, logged as a warning); other damage raises
    `CorruptStore`.

    Raises:
        StoreLocked: another open store holds the directory.
        UnsupportedFormat: the directory was written by a newer format.
        CorruptStore: the directory is damaged beyond a torn tail.
        ReadFailed: `path` is not a store or cannot be read.

    The store closes when the block exits. On a normal exit, commands already
    sent are applied and answered first, and a durable store takes a final
    checkpoint; if the block exits by an exception or cancellation, commands
    still queued are answered with `StoreClosed` and not applied. Later calls
    raise `StoreClosed`.
    """
    codec = check_session_codec(session_codec)
    check_positive(max_pending, "max_pending")
    check_positive(max_batch, "max_batch")
    check_positive(checkpoint_bytes, "checkpoint_bytes")
    check_positive(max_record_bytes, "max_record_bytes")
    if max_record_bytes > MAX_RECORD_LIMIT:
        raise ValueError(
            f"max_record_bytes must be at most 2**32-1 (the format's length field), got"
            f" {max_record_bytes}"
        )
    if path is not None and not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be str, os.PathLike or None, got {type(path).__name__}")
    if path is None:
        async with _run_store(_Actor(codec, max_batch, max_pending), None, None) as store:
            yield store
        return
    io = FileIO() if _io is None else _io
    log, recovered = await trio.to_thread.run_sync(
        DurableLog.open, io, os.fspath(path), max_record_bytes
    )
    try:
        actor = _Actor(
            codec,
            max_batch,
            max_pending,
            state=recovered.state,
            next_lsn=recovered.last_lsn + 1,
            max_record=max_record_bytes,
        )
        writer = Writer(
            log,
            recovered,
            checkpoint_bytes=checkpoint_bytes,
            publish=actor.publish,
            poison=actor.poison,
        )
        actor.writer = writer
        async with _run_store(actor, writer, log.directory) as store:
            yield store
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(log.close)


@asynccontextmanager
async def _run_store(
    actor: _Actor, writer: Writer | None, directory: str | None
) -> AsyncIterator[ActorStore]:
    send, receive = trio.open_memory_channel[_Envelope](actor.max_pending)
    # The nursery is an implementation detail: an exception from the caller's
    # block (or a lone one from the store's tasks) leaves it as itself, not
    # wrapped in an ExceptionGroup.
    with unwrap_single_exception():
        async with trio.open_nursery() as nursery:
            if writer is not None:
                nursery.start_soon(writer.run)
            nursery.start_soon(actor.run, receive)
            store: ActorStore = ActorStore._create(actor, send, directory)
            try:
                yield store
            finally:
                store._closed = True
                send.close()
