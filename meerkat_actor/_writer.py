"""The writer: pipelined group commit and checkpoints for a durable store.

Rule 1: a reply goes out only after the records of its group are durable
(written and fdatasync'ed). Refusals too: they were decided on state that
includes earlier, not yet durable commands.

Rule 2: one fsync per group, never retried. If a group's write or sync fails,
every caller of that group and of every group behind it gets a `WriteFailed`,
the actor's working state falls back to the last durable state, and the store
is poisoned: later writes fail with `StorePoisoned` until it is reopened.

Rule 3: blocking calls run in worker threads, and never abandoned: a thread
that may still write finishes before its task does, even when cancelled.

Theory of operation. The actor applies a batch, encodes one record payload
per applied command (LSNs assigned in order) and submits each slice of the
batch as a group (`submit_nowait` between slices, so its write overlaps the
next slice's planning; `submit` for the last, which waits for room). The
writer task takes *every* group waiting (so while one write is in flight, the
next groups gather: pipelining) and, in one worker thread call (`_append`),
frames their records into one buffer (each record names the LSN of the
write's first record, which lets recovery tell a torn last write from
damage; framing reads no store state, so its CRC-32s and the copy into one
buffer stay off the trio thread) and makes one `append` (write + fdatasync);
then it publishes the last group's state for readers and answers every
caller. Back-pressure: the
actor waits in `submit` while more than `MAX_PENDING_BYTES` are waiting.

Checkpoints: when the log written since the last snapshot exceeds
`checkpoint_bytes`, on `checkpoint()` and on a clean close, the writer (between
two appends, so nothing is in flight) rotates to a new segment starting at
`durable LSN + 1`, then a checkpoint task writes the published state, as of
that LSN, as a snapshot in a worker thread while commits continue, and
deletes the segments and snapshots it makes redundant. A failed checkpoint
loses nothing (the log still holds every record) and does not poison the
store; `checkpoint()` reports it as `WriteFailed`. In a store of an older
format (`DurableLog.outdated`), `checkpoint()` also runs when nothing is
new since the snapshot: it converts the store (docs/format.md section 9),
so that once it returns the directory holds only this build's files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

import trio

from ._core import StoreState
from ._durable import DurableLog, Recovered
from ._errors import Internal, Poison, StoreClosed, WriteFailed
from ._format import FRAME_HEADER, frame_records
from ._mailbox import Outcome, deliver
from ._util import run_in_thread

__all__ = ["Group", "Writer"]

logger = logging.getLogger("meerkat_actor")

MAX_PENDING_BYTES: Final = 16 * 1024 * 1024


@dataclass(slots=True)
class Group:
    """One applied batch: its records' payloads (LSNs up to `last_lsn`), the
    resulting state and the replies."""

    records: list[bytes]
    state: StoreState
    last_lsn: int
    outcomes: list[Outcome]

    @property
    def size(self) -> int:
        return sum(len(record) + FRAME_HEADER for record in self.records)


class Writer:
    """The trio side of a durable store's log; see the module docstring."""

    def __init__(
        self,
        log: DurableLog,
        recovered: Recovered,
        *,
        checkpoint_bytes: int,
        poison: Poison,
        publish: Callable[[StoreState], None],
        fall_back: Callable[[], None],
    ) -> None:
        self.log = log
        self.checkpoint_bytes = checkpoint_bytes
        self.poison = poison
        self._publish = publish
        self._fall_back = fall_back
        self.published: StoreState = recovered.state
        self.durable_lsn = recovered.last_lsn
        self.snapshot_lsn = recovered.snapshot_lsn
        self.log_bytes = recovered.log_bytes  # record bytes not covered by a snapshot
        self.fsyncs = 0
        self.bytes_written = 0
        self.records = 0
        self.checkpoints = 0
        self._pending: list[Group] = []
        self._pending_bytes = 0
        self._wake = trio.Event()
        self._space = trio.Event()
        self._input_closed = False
        self._finished = False
        self._want_checkpoint = False
        self._checkpointing = False
        self._checkpoint_done = trio.Event()
        self._checkpoint_error: BaseException | None = None
        self._failed_checkpoints = 0

    # --- the actor's side ----------------------------------------------------------------

    async def submit(self, group: Group) -> None:
        """Queue a group for the next append; wait while too much is queued.

        If the writer task has already ended (the host cancelled the store
        while the actor was finishing a batch between two slices), nobody
        would write or answer the group: its callers get `StoreClosed` here.
        """
        if self._finished:
            self._fail_groups(
                [group], StoreClosed("the store closed before this command was durable")
            )
            return
        while self._pending_bytes > MAX_PENDING_BYTES and not self.poison:
            if self._space.is_set():
                self._space = trio.Event()
            await self._space.wait()
        self._pending.append(group)
        self._pending_bytes += group.size
        self._wake.set()

    def submit_nowait(self, group: Group) -> None:
        """Queue a group without waiting for room: the actor's groups from
        inside a batch (a batch's last group goes through `submit`, which
        waits, so the queue exceeds `MAX_PENDING_BYTES` by at most one batch)."""
        if self._finished:
            self._fail_groups(
                [group], StoreClosed("the store closed before this command was durable")
            )
            return
        self._pending.append(group)
        self._pending_bytes += group.size
        self._wake.set()

    def close_input(self) -> None:
        """No more groups will come (the actor has finished)."""
        self._input_closed = True
        self._wake.set()

    # --- checkpoints requested by callers -------------------------------------------------

    async def checkpoint(self) -> None:
        """Return once a snapshot covers every write acknowledged before the call
        (and the store is of this build's format).

        Raises:
            StorePoisoned: the store is poisoned (nothing is written any more).
            WriteFailed: the checkpoint failed; nothing acknowledged is lost.
        """
        target = self.durable_lsn
        while True:
            self.poison.check("checkpoint")
            if self.snapshot_lsn >= target and not self.log.outdated:
                break
            if self._finished:
                raise StoreClosed("the store closed before the checkpoint was taken")
            done = self._checkpoint_done
            was_running = self._checkpointing
            self._want_checkpoint = True
            self._wake.set()
            await done.wait()
            error = self._checkpoint_error
            behind = self.snapshot_lsn < target or self.log.outdated
            if not was_running and error is not None and behind:
                raise WriteFailed(f"checkpoint of {self.log.directory} failed: {error}") from error
        await trio.lowlevel.checkpoint()

    # --- the writer task ---------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as checkpoints:
                while not (self._input_closed and not self._pending):
                    await self._wake.wait()
                    self._wake = trio.Event()
                    if self._pending:
                        await self._commit()
                    if self._checkpoint_due():
                        await self._start_checkpoint(checkpoints)
            # Clean close: one last checkpoint, so the next open is quick.
            if not self.poison and self.snapshot_lsn < self.durable_lsn:
                async with trio.open_nursery() as last:
                    await self._start_checkpoint(last)
        finally:
            self._finished = True
            self._fail_pending(StoreClosed("the store closed before this command was durable"))
            self._release_checkpoint_waiters()

    def _checkpoint_due(self) -> bool:
        if self.poison or self._checkpointing:
            return False
        if self.snapshot_lsn >= self.durable_lsn and not (
            self._want_checkpoint and self.log.outdated
        ):
            self._want_checkpoint = False
            return False
        return self._want_checkpoint or self.log_bytes >= self._policy_threshold

    @property
    def _policy_threshold(self) -> int:
        """Log bytes that trigger the size policy: `checkpoint_bytes`, doubled
        after each failed checkpoint in a row (up to 1024 times), so a
        persistent failure (a full disk) is not retried after every commit."""
        return self.checkpoint_bytes << min(self._failed_checkpoints, 10)

    async def _commit(self) -> None:
        groups, self._pending = self._pending, []
        self._pending_bytes = 0
        self._space.set()
        if self.poison:
            for group in groups:
                deliver([(reply, self.poison.error()) for reply, _ in group.outcomes])
            return
        payloads = [record for group in groups for record in group.records]
        if payloads:
            try:
                written = await run_in_thread(partial(self._append, self.durable_lsn + 1, payloads))
            except trio.Cancelled:
                # Cancelled before the thread started (once started, it is
                # never abandoned): nothing was written; answer, then go.
                for group in groups:
                    for reply, _ in group.outcomes:
                        reply.set(StoreClosed("the store closed before this command was durable"))
                raise
            except Exception as exc:
                # OSError, or anything else the append raised part way: the
                # disk's state is unknown, so fail-stop all the same.
                self._fail(groups, exc)
                return
            except BaseException as exc:
                # Not an error of the append (a test's simulated crash, an
                # interpreter shutting down): the writer dies with it, but
                # first answers this write's callers, so that nobody hangs.
                for group in groups:
                    for reply, _ in group.outcomes:
                        failure = Internal(f"the writer of {self.log.directory} died: {exc!r}")
                        failure.__cause__ = exc
                        reply.set(failure)
                raise
            self.fsyncs += 1
            self.bytes_written += written
            self.log_bytes += written
            self.records += len(payloads)
        last = groups[-1]
        self.durable_lsn = last.last_lsn
        self.published = last.state
        self._publish(last.state)
        for group in groups:
            deliver(group.outcomes)

    def _append(self, first_lsn: int, payloads: list[bytes]) -> int:
        """(In a worker thread.) Frame `payloads` as one write, records
        `first_lsn`, `first_lsn + 1`, ... (each names `first_lsn`, the write's
        first LSN), append it (write + fdatasync); return its size in bytes.

        Framing reads no store state, so it runs here rather than on the trio
        thread: the CRC-32 of a large record releases the GIL, and joining the
        frames into one buffer would otherwise hold the loop for as long as
        copying the write takes.
        """
        data = frame_records(first_lsn, payloads)
        self.log.append(data)
        return len(data)

    def _fail(self, groups: list[Group], exc: Exception) -> None:
        logger.error("%s: log write failed, the store is poisoned: %s", self.log.directory, exc)
        self.poison.set(exc)
        self._fall_back()
        error = WriteFailed(f"writing the log of {self.log.directory} failed: {exc}")
        for group in groups:
            for reply, _ in group.outcomes:
                failure = WriteFailed(str(error))
                failure.__cause__ = exc
                reply.set(failure)
        self._fail_pending(self.poison.error())
        self._space.set()
        self._release_checkpoint_waiters()

    def _fail_pending(self, error: BaseException) -> None:
        groups, self._pending = self._pending, []
        self._fail_groups(groups, error)

    @staticmethod
    def _fail_groups(groups: list[Group], error: BaseException) -> None:
        for group in groups:
            for reply, _ in group.outcomes:
                failure = type(error)(str(error))
                failure.__cause__ = error.__cause__
                reply.set(failure)

    async def _start_checkpoint(self, nursery: trio.Nursery) -> None:
        """Rotate the log (nothing is in flight now), then snapshot in the background."""
        self._want_checkpoint = False
        self._checkpointing = True
        lsn, state, covered = self.durable_lsn, self.published, self.log_bytes
        try:
            await trio.to_thread.run_sync(self.log.rotate, lsn + 1, abandon_on_cancel=False)
        except WriteFailed as exc:
            logger.error("%s: checkpoint at LSN %d failed: %s", self.log.directory, lsn, exc)
            self._finish_checkpoint(exc)
            return
        nursery.start_soon(self._write_snapshot, lsn, state, covered, self.log.segment_first_lsn)

    async def _write_snapshot(self, lsn: int, state: StoreState, covered: int, keep: int) -> None:
        try:
            await trio.to_thread.run_sync(
                self.log.write_snapshot, lsn, state, keep, abandon_on_cancel=False
            )
        except Exception as exc:
            # An I/O error, or one in encoding the snapshot (MemoryError, a
            # bug): the log still holds everything, so the store goes on and
            # `checkpoint()` raises WriteFailed. Only a cancellation ends it.
            logger.error("%s: checkpoint at LSN %d failed: %r", self.log.directory, lsn, exc)
            self._finish_checkpoint(exc)
            return
        self.snapshot_lsn = lsn
        self.log_bytes -= covered
        self.checkpoints += 1
        self._finish_checkpoint(None)

    def _release_checkpoint_waiters(self) -> None:
        """Wake `checkpoint()` callers to re-check (poisoned, or closing)."""
        self._checkpoint_error = None
        done, self._checkpoint_done = self._checkpoint_done, trio.Event()
        done.set()

    def _finish_checkpoint(self, error: BaseException | None) -> None:
        self._checkpointing = False
        self._checkpoint_error = error
        self._failed_checkpoints = 0 if error is None else self._failed_checkpoints + 1
        done, self._checkpoint_done = self._checkpoint_done, trio.Event()
        done.set()
        self._wake.set()
