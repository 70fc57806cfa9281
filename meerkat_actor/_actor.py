"""The storage actor and the store handle (SPEC §3, §6).

Rule 1: this module holds no semantics. What a command does is decided by
`_core.apply`; what a read returns by the `_core.load_*` functions. Here we
only move commands to the actor, replies back, and keep the state value.

Rule 2: one task, the actor, owns the working state. Nobody else assigns it.

Rule 3: every command the actor receives gets exactly one reply, on every
path: applied, refused, actor failure, close, cancellation. A caller never
waits for a reply that cannot come.

Rule 4: the actor never holds the trio thread for long. It applies a batch
in *slices*: a slice ends with the first command that finishes
`SLICE_SECONDS` (2 ms) or more after the slice began, and before the next
command the actor yields with a cancel-shielded checkpoint, so other tasks
run. In a durable store, before it yields, the actor hands the slice to the
writer as a group of its own, so the slice's write and fsync overlap the
planning of the next slice. Otherwise slicing changes only when other tasks
run: the batch's commands are applied in order each on the state the
previous one left, nothing is published or answered before it is durable
(groups are written and answered in order; in memory, before the whole batch
is applied), and cancellation still reaches the actor only between batches.

Theory of operation. `open_store()` starts the actor in a nursery and hands
out an `ActorStore`. A write builds its command in the caller's task (the
command's constructor checks the arguments, so bad input never travels),
sends `(command, reply)` on a bounded trio memory channel, and waits for the
one-shot reply. The actor receives one envelope, then drains every envelope
already waiting (up to `max_batch`): one *batch*. It applies the batch's
commands in order with the pure core, in slices (Rule 4), publishes the
resulting state value, then replies to each. Refused commands (store errors,
an OAuth updater that raised) get their error and leave the state as it was.
While the actor yields between two slices, `self.state` holds the working
state so far and only the writer may change it (`fall_back`, when an append
failed and poisoned the store); the next slice goes on from `self.state`, so
it sees the fallback, and `poison.check()` refuses the rest of the batch.

The public methods are `_front.StoreFront`'s; this module provides its two
hooks. Reads do not travel: a query is answered from the *published* state,
the value as of the last batch whose writes have all been acknowledged, with
the pure core's read functions. Immutability makes that safe without locks, and it is
linearizable: a write is visible to every reader from the moment before its
caller is told it succeeded.

Cancellation: a caller cancelled while its command is being sent has sent
nothing. Once sent, the caller waits for the reply shielded from
cancellation (as `trio.to_thread.run_sync` does by default), so the command
completes atomically and takes effect before any later call of that task; the
pending cancellation is delivered at the caller's next checkpoint. The
delay is the time to apply the batches ahead of it and make them durable.
The actor's own checkpoints between slices are shielded: a batch once taken
from the channel is applied whole and handed to the writer (one group per
slice); a
cancellation of the host's scope reaches the actor at its next `receive` or
`submit`. If the writer task has already ended by then, `submit` answers the
group with `StoreClosed` (Rule 3).

Failure: if applying a command raises anything but a store error or a
caller-code error, the actor has a bug; it marks itself failed, answers that
command, the rest of its batch and everything queued with `Internal` (chained
to the cause), and stops. Later calls get `Internal` at once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeVar, final

import trio

from . import _core
from ._check import check_positive
from ._core import Command, Query, StoreState
from ._durable import DEFAULT_MAX_RECORD, MAX_RECORD_LIMIT, DurableLog
from ._errors import Internal, Poison, RuntimeStoreError, StoreClosed, WriteFailed
from ._front import StoreFront, StoreStatistics
from ._fs import FileIO
from ._mailbox import Envelope, Outcome, Reply, deliver
from ._session_codec import SessionCodec, check_session_codec
from ._util import require_trio, unwrap_single_exception
from ._writer import Group, Writer

__all__ = ["ActorStore", "open_store"]

T = TypeVar("T")

logger = logging.getLogger("meerkat_actor")

DEFAULT_MAX_PENDING = 1024
DEFAULT_MAX_BATCH = 256
# The longest the actor holds the trio thread applying commands before it
# lets other tasks run (Rule 4): a batch is applied in slices of commands, and
# a slice ends with the first command that finishes past this.
SLICE_SECONDS = 0.002


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
        poison: Poison,
        *,
        state: StoreState = _core.EMPTY,
        next_lsn: int = 1,
    ) -> None:
        self.codec = codec
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.poison = poison
        self.state: StoreState = state
        self.published: StoreState = state
        self.next_lsn = next_lsn
        self.writer: Writer | None = None
        self.failure: BaseException | None = None
        self.commands = 0
        self.refused = 0
        self.batches = 0
        self.largest_batch = 0
        self.slices = 0  # yields inside batches (Rule 4)
        self.effects = 0

    def internal_error(self) -> Internal:
        error = Internal(f"the storage actor died: {self.failure!r}")
        error.__cause__ = self.failure
        return error

    def publish(self, state: StoreState) -> None:
        """The writer made `state` durable: readers may see it now."""
        self.published = state

    def fall_back(self) -> None:
        """The writer failed (and poisoned the store): fall back to the last
        durable state."""
        self.state = self.published

    async def run(self, receive: trio.MemoryReceiveChannel[Envelope]) -> None:
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
                outcomes, records, fatal = await self.run_batch(batch)
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

    async def run_batch(
        self, batch: list[Envelope]
    ) -> tuple[list[Outcome], list[bytes], BaseException | None]:
        """Apply a batch with the pure core, in order, in slices (Rule 4).

        Returns the outcome of each command of the last slice (its reply and
        error, `None` if applied), the log record payloads of its applied
        commands (durable stores only; the writer frames them), and a
        `BaseException` to re-raise once the batch is answered, if one struck.
        A durable store's earlier slices went to the writer as groups of their
        own (`submit_nowait`) before each yield; an in-memory store's outcomes
        are all returned.

        Between two slices the actor yields to trio with a cancel-shielded
        checkpoint, so a batch once started is always applied whole and
        answered: cancellation reaches the actor only between
        batches, as without slices. While it yields, `self.state` holds the
        working state so far; only the writer's `fall_back` may change it
        meanwhile (a failed append poisoned the store), and the slice after it
        continues from that state, where `poison.check()` refuses every command.
        """
        self.batches += 1
        self.largest_batch = max(self.largest_batch, len(batch))
        state = self.state
        outcomes: list[Outcome] = []
        records: list[bytes] = []
        fatal: BaseException | None = None
        writer = self.writer
        deadline = time.perf_counter() + SLICE_SECONDS
        for command, reply in batch:
            if self.failure is not None:
                outcomes.append((reply, self.internal_error()))
                continue
            if outcomes and time.perf_counter() >= deadline:
                self.slices += 1
                self.state = state
                if writer is not None:
                    # The slice so far is a group of its own: its write and
                    # fsync overlap the next slice's planning (Rule 4).
                    writer.submit_nowait(Group(records, state, self.next_lsn - 1, outcomes))
                    outcomes, records = [], []
                await trio.lowlevel.cancel_shielded_checkpoint()
                state = self.state
                deadline = time.perf_counter() + SLICE_SECONDS
            self.commands += 1
            try:
                self.poison.check()
                effects = _core.plan(state, command, self.codec)
                payload = None if writer is None or not effects else writer.log.encode(effects)
                new_state = _core.redo(state, effects)
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
                if payload is not None:
                    records.append(payload)
                    self.next_lsn += 1
                state = new_state
                self.effects += len(effects)
                outcomes.append((reply, None))
        self.state = state
        return outcomes, records, fatal


@final
class ActorStore(StoreFront):
    """A handle on an actor store, in memory or durable; made only by
    `open_store()`.

    Implements `RuntimeStore` (the methods are documented on it once, for
    every store) and adds `checkpoint()`, `backup()` and `statistics()`.
    Safe to share between any number of trio tasks of the run that opened
    it.
    """

    __construct_hint__ = "use meerkat_actor.open_store()"

    def __init__(
        self,
        actor: _Actor,
        send: trio.MemorySendChannel[Envelope],
        directory: str | None = None,
    ) -> None:
        self._actor = actor
        self._send = send
        self._directory = directory
        self._authority = None if directory is None else "actor:" + directory
        self._closed = False

    # --- the front's hooks -------------------------------------------------------

    def _refusal(self) -> RuntimeStoreError | None:
        if self._actor.failure is not None:
            return self._actor.internal_error()
        return super()._refusal()

    async def _submit(self, command: Command) -> None:
        reply = Reply()
        try:
            await self._send.send(Envelope(command, reply))
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise (self._refusal() or StoreClosed("the store is closed")) from exc
        with trio.CancelScope(shield=True):
            await reply.done.wait()
        if reply.error is not None:
            raise reply.error

    async def _answer(self, query: Query[T]) -> T:
        return query.answer(self._actor.published)

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
        error = self._refusal()
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
        writes go on; open it with `open_store(path)`. A missing `path` is
        built as `<path>.incomplete-<8 hex digits>` beside it, holding an
        INCOMPLETE marker, and renamed into place; the marker goes only after
        the snapshot and the FORMAT file are durable. So a backup cut short
        by a crash leaves no directory at `path`, or one `open_store` refuses
        as an incomplete backup, never one mistaken for an empty store. A
        poisoned store can still be backed up: the backup holds what is
        durable.

        Raises:
            TypeError: `path` is not a str or os.PathLike.
            ValueError: `path` exists and is not an empty directory.
            StoreClosed, Internal: the store cannot be used.
            WriteFailed: the backup could not be written (a directory holding
                INCOMPLETE may remain at `path`, or a `<path>.incomplete-...`
                one beside it: delete it before trying again).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be str or os.PathLike, got {type(path).__name__}")
        target = os.fspath(path)
        await trio.lowlevel.checkpoint()
        error = self._refusal()
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
            if self._actor.poison
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
        max_batch: the most commands the actor applies as one batch (one
            group commit in a durable store); the actor yields to other
            tasks every `SLICE_SECONDS` (2 ms) or so while it applies one.
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
    require_trio("meerkat_actor.open_store()")
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
        actor = _Actor(codec, max_batch, max_pending, Poison("the in-memory store"))
        async with _run_store(actor, None, None) as store:
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
            Poison(f"the store at {log.directory}"),
            state=recovered.state,
            next_lsn=recovered.last_lsn + 1,
        )
        writer = Writer(
            log,
            recovered,
            checkpoint_bytes=checkpoint_bytes,
            poison=actor.poison,
            publish=actor.publish,
            fall_back=actor.fall_back,
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
    send, receive = trio.open_memory_channel[Envelope](actor.max_pending)
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
