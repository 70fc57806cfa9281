"""The durable store, through `meerkat_actor.open_store(directory)` (SPEC §6, §7).

Every test works on a directory under `tmp_path`. Expected states come from
the in-memory store running the same writes, compared through every public
read. A store is stopped *uncleanly* by leaving its block by cancellation
(`crashed()`): no final checkpoint runs, so the next open has to replay the
log. Damage is done to the files between opens, by hand; offsets of records
come from a small walker written here (`walk`), not from the package's own
parser.

Byte layouts (docs/format.md, all integers big-endian): segment header 32
bytes, then records, then zero bytes up to the end of the file (segments are
preallocated); record = LSN u64, write LSN u64 (the LSN of the first record
of the same write, one group commit), payload length u32, CRC-32 of those 20
bytes and the payload, then the CBOR payload; snapshot header 40 bytes.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import random
import shutil
import struct
import sys
import threading
import time
import tracemalloc
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import _values
import cbor2
import pytest
import trio
import trio.testing
from _values import I1, I2, I3, OTHER, RT, RUN, SID, SID2, session

import meerkat_actor as ma
from meerkat_actor import InputLifecycleState as PHASE
from meerkat_actor import RuntimeState as RS
from meerkat_actor._fs import FileIO, Handle

OPS = ma.PersistedOpsSnapshot("epoch-1", {"authority": [1, 2]}, ["spec"], None, {"c": "d"})
U63 = 2**63
U64_MAX = 2**64 - 1
RECEIPT_KEYS = [(RUN, n) for n in (0, 1, 2, 99, U63 - 1, U63, U64_MAX)]
SEGMENT_HEADER = 32
PREALLOCATED = 1024 * 1024  # a new segment's size: header, then zeros
FRAME_HEADER = 24
LOGGER = "meerkat_actor"


def receipt(sequence: int, count: int = 1) -> ma.RunBoundaryReceipt:
    """This file's receipts: a run's start, with a digest naming the sequence."""
    return _values.receipt(
        sequence,
        boundary=ma.RunApplyBoundary.RUN_START,
        conversation_digest=f"digest-{sequence}",
        message_count=count,
    )


# An attempt count other than the default, so that recovery has to keep it.
stored = partial(_values.stored, attempts=1)


def seg(lsn: int) -> str:
    return f"log-{lsn:020d}.log"


def snap(lsn: int) -> str:
    return f"snapshot-{lsn:020d}.snap"


def store_files(*names: str) -> list[str]:
    return sorted(["FORMAT", "LOCK", *names])


def files(path: Path) -> dict[str, bytes]:
    """Every file of a store directory with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def flip(path: Path, offset: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 1 << bit
    path.write_bytes(bytes(data))


def segment_header(first_lsn: int, reserved: tuple[int, int] = (0, 0), version: int = 3) -> bytes:
    head = b"MKRTLOG\0" + struct.pack(">IIQI", version, reserved[0], first_lsn, reserved[1])
    return head + struct.pack(">I", zlib.crc32(head))


def flip_bytes(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def all_zero(data: bytes) -> bool:
    return data.count(0) == len(data)


@dataclasses.dataclass(frozen=True)
class Record:
    start: int
    end: int
    lsn: int
    write_lsn: int


def walk(segment: Path) -> list[Record]:
    """The records of a segment (a walker independent of the package: it
    follows the length fields and checks every CRC)."""
    data = segment.read_bytes()
    offset, records = SEGMENT_HEADER, []
    while offset + FRAME_HEADER <= len(data):
        lsn, write_lsn, length, crc = struct.unpack_from(">QQII", data, offset)
        end = offset + FRAME_HEADER + length
        if length == 0 or end > len(data):
            break
        assert crc == zlib.crc32(data[offset : offset + 20] + data[offset + 24 : end])
        records.append(Record(offset, end, lsn, write_lsn))
        offset = end
    assert all_zero(data[offset:]), "the rest of the segment is zeros"
    return records


def record_ends(segment: Path) -> list[int]:
    """The end offset of each record in a segment."""
    return [record.end for record in walk(segment)]


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


def overwrite(path: Path, data: bytes) -> None:
    """Make the file hold `data`, rewriting it in place (no truncation to 0,
    which makes ext4 flush the file on close)."""
    with open(path, "r+b") as file:
        file.write(data)
        file.truncate(len(data))


def frame(lsn: int, payload: bytes, write_lsn: int | None = None) -> bytes:
    """A record, its own write unless `write_lsn` says otherwise."""
    head = struct.pack(">QQI", lsn, lsn if write_lsn is None else write_lsn, len(payload))
    return head + struct.pack(">I", zlib.crc32(head + payload)) + payload


def oauth_effect(value: Any = b"s") -> bytes:
    return cbor2.dumps([{"op": "oauth", "snapshot": value}])


async def reads(store: Any) -> dict[object, object]:
    """Everything the writes of these tests can have set, through public reads."""
    seen: dict[object, object] = {"oauth": await store.load_auth_oauth_flow_snapshot()}
    for rt in (RT, OTHER):
        seen[rt, "session"] = await store.load_session_snapshot(rt)
        seen[rt, "inputs"] = await store.load_input_states(rt)
        seen[rt, "state"] = await store.load_runtime_state(rt)
        seen[rt, "ops"] = await store.load_ops_lifecycle(rt)
        for input_id in (I1, I2, I3):
            seen[rt, input_id] = await store.load_input_state(rt, input_id)
        for run_id, sequence in RECEIPT_KEYS:
            seen[rt, run_id, sequence] = await store.load_boundary_receipt(rt, run_id, sequence)
    return seen


Writes = Callable[[Any], Awaitable[object]]


async def every_kind_of_write(store: Any) -> int:
    """One of each write method (SPEC §3); returns how many records it makes."""
    await store.atomic_apply(RT, session(), receipt(1), [stored(I1), stored(I2)], SID)
    await store.commit_session_snapshot(OTHER, session(SID2, turn=1))
    await store.persist_input_state(OTHER, stored(I3, PHASE.QUEUED))
    await store.commit_machine_lifecycle(
        RT, ma.machine_transition(RS.INITIALIZING, RS.IDLE), [stored(I1, PHASE.STAGED)]
    )
    await store.persist_ops_lifecycle(RT, OPS)
    await store.persist_auth_oauth_flow_snapshot(b"oauth-0")
    await store.update_auth_oauth_flow_snapshot(lambda current: current + b"+1")
    await store.atomic_apply(OTHER, None, receipt(U63, count=2), [])
    await store.atomic_apply(OTHER, None, receipt(U64_MAX, count=3), [stored(I3, PHASE.APPLIED)])
    return 9


async def expected_after(*writes: Writes) -> dict[object, object]:
    """What the in-memory store shows after the same writes."""
    async with ma.open_store() as memory:
        for write in writes:
            await write(memory)
        return await reads(memory)


@asynccontextmanager
async def crashed(path: Path, **kwargs: Any) -> AsyncIterator[Any]:
    """Open a durable store and leave its block by cancellation (no final checkpoint)."""
    with trio.CancelScope() as scope:
        async with ma.open_store(path, **kwargs) as store:
            yield store
            scope.cancel()
            await trio.lowlevel.checkpoint()


async def reopened_reads(path: Path, **kwargs: Any) -> dict[object, object]:
    async with crashed(path, **kwargs) as store:
        return await reads(store)


async def writes_with_ends(path: Path, writes: list[Writes]) -> list[int]:
    """Run `writes` one by one in a store stopped uncleanly; return the end
    offset of each one's record in the store's only segment."""
    ends = []
    async with crashed(path) as store:
        for write in writes:
            await write(store)
            ends.append(record_ends(path / seg(1))[-1])
    assert sorted(os.listdir(path)) == store_files(seg(1))
    assert record_ends(path / seg(1)) == ends
    return ends


def oauth_write(value: bytes) -> Writes:
    async def write(store: Any) -> None:
        await store.persist_auth_oauth_flow_snapshot(value)

    return write


NINE_SMALL = [oauth_write(b"v%d" % n) for n in range(9)]


# --- reopen -----------------------------------------------------------------------------


async def test_every_kind_of_write_survives_a_clean_close(tmp_path):
    path = tmp_path / "store"
    async with ma.open_store(path) as store:
        records = await every_kind_of_write(store)
        assert await reads(store) == await expected_after(every_kind_of_write)
    # A clean close takes a final checkpoint.
    assert sorted(os.listdir(path)) == store_files(snap(records), seg(records + 1))
    async with ma.open_store(path) as store:
        seen = await reads(store)
        assert await store.load_auth_oauth_flow_snapshot() == b"oauth-0+1"
        assert await store.load_runtime_state(RT) is RS.IDLE
        assert await store.load_ops_lifecycle(RT) == OPS
        assert await store.load_input_state(RT, I1) == stored(I1, PHASE.STAGED)
    assert seen == await expected_after(every_kind_of_write)


async def test_every_kind_of_write_survives_an_unclean_stop(tmp_path):
    path = tmp_path / "store"
    async with crashed(path) as store:
        await every_kind_of_write(store)
    # No checkpoint ran: only the log holds the writes.
    assert sorted(os.listdir(path)) == store_files(seg(1))
    assert await reopened_reads(path) == await expected_after(every_kind_of_write)


async def test_writes_survive_a_checkpoint_and_later_writes_replay_on_top(tmp_path):
    path = tmp_path / "store"
    later = oauth_write(b"after-checkpoint")
    async with crashed(path) as store:
        records = await every_kind_of_write(store)
        await store.checkpoint()
        assert store.statistics().checkpoints == 1
        assert sorted(os.listdir(path)) == store_files(snap(records), seg(records + 1))
        assert record_ends(path / seg(records + 1)) == []
        await later(store)
    assert sorted(os.listdir(path)) == store_files(snap(records), seg(records + 1))
    assert await reopened_reads(path) == await expected_after(every_kind_of_write, later)


def input_write(input_id: ma.InputId, phase: PHASE) -> Writes:
    async def write(store: Any) -> None:
        await store.persist_input_state(RT, stored(input_id, phase))

    return write


async def test_several_checkpoints_leave_one_snapshot_and_one_segment(tmp_path):
    path = tmp_path / "store"
    done: list[Writes] = []
    phases = [PHASE.QUEUED, PHASE.STAGED, PHASE.APPLIED]
    for round_, phase in enumerate(phases):
        async with crashed(path) as store:
            for n in range(round_ + 2):
                for write in (
                    oauth_write(b"round %d write %d" % (round_, n)),
                    input_write(I1 if n % 2 else I2, phase),
                ):
                    await write(store)
                    done.append(write)
            await store.checkpoint()
            assert store.statistics().checkpoints == 1
            lsn = len(done)
            assert sorted(os.listdir(path)) == store_files(snap(lsn), seg(lsn + 1))
            # Nothing new since: a second checkpoint has nothing to do.
            await store.checkpoint()
            assert store.statistics().checkpoints == 1
        seen = await reopened_reads(path)
        assert seen == await expected_after(*done)
        assert seen["oauth"] == b"round %d write %d" % (round_, round_ + 1)
        assert seen[RT, I1] == stored(I1, phase)


async def test_u64_sequences_stay_distinct_after_reopen(tmp_path):
    path = tmp_path / "store"
    sequences = [0, U63 - 1, U63, U64_MAX]
    async with crashed(path) as store:
        for count, sequence in enumerate(sequences):
            await store.atomic_apply(RT, None, receipt(sequence, count), [])
    for from_snapshot in (False, True):  # replayed from the log, then from a snapshot
        assert (snap(4) in os.listdir(path)) is from_snapshot
        async with ma.open_store(path) as store:
            for count, sequence in enumerate(sequences):
                assert await store.load_boundary_receipt(RT, RUN, sequence) == receipt(
                    sequence, count
                )
            with pytest.raises(ma.ReceiptConflict):
                await store.atomic_apply(RT, None, receipt(U64_MAX, 9), [])
        assert snap(4) in os.listdir(path)


async def test_the_size_policy_takes_checkpoints_on_its_own(tmp_path):
    path = tmp_path / "store"
    async with crashed(path, checkpoint_bytes=1) as store:
        await store.persist_auth_oauth_flow_snapshot(b"one")
        for _ in range(10_000):  # the checkpoint runs in the background
            if store.statistics().checkpoints:
                break
            await trio.sleep(0.001)
        assert store.statistics().checkpoints == 1
        assert snap(1) in os.listdir(path)
        await store.persist_auth_oauth_flow_snapshot(b"two")
    async with crashed(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"two"


async def test_reopen_without_writes_changes_no_file(tmp_path):
    path = tmp_path / "store"
    async with ma.open_store(path) as store:
        await every_kind_of_write(store)
    before = files(path)
    async with ma.open_store(path) as store:
        await reads(store)
    assert files(path) == before


# --- torn tail --------------------------------------------------------------------------


async def big_atomic_apply(store: Any) -> None:
    await store.atomic_apply(RT, session(SID, turn=7), receipt(99), [stored(I3)], SID)


def torn_warnings(caplog: Any) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and "truncated a torn write" in r.getMessage()
    ]


@pytest.mark.parametrize("tear", ["file-cut", "zeroed"])
@pytest.mark.parametrize("last", [oauth_write(b"last"), big_atomic_apply], ids=["oauth", "apply"])
async def test_torn_last_record_at_every_offset(tmp_path, caplog, last, tear):
    """`file-cut`: the segment file ends inside the record. `zeroed`: the
    record's bytes from the cut on are still the preallocated zeros (what a
    torn append into a preallocated segment leaves).

    Every cut is recovered from, then written to and reopened, except for
    the big record, where each cut costs a truncation and a 1 MiB regrowth
    of the segment, both synced: there the write-and-reopen step runs for
    every cut inside the frame header and every 7th cut of the payload, and
    the `zeroed` tear only visits those cuts."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    pristine = tmp_path / "pristine"
    ends = await writes_with_ends(pristine, [*NINE_SMALL, last])
    start, end = ends[-2], ends[-1]
    assert end - start > FRAME_HEADER
    data = (pristine / seg(1)).read_bytes()
    before = await expected_after(*NINE_SMALL)
    with_last = await expected_after(*NINE_SMALL, last)
    after_next = await expected_after(*NINE_SMALL, oauth_write(b"next"))
    work = tmp_path / "work"
    shutil.copytree(pristine, work)
    segment = work / seg(1)
    sampled = {*range(start, start + FRAME_HEADER + 1), *range(start, end, 7), end - 1}
    cuts: Any = range(start, end)
    if last is big_atomic_apply and tear == "zeroed":
        cuts = sorted(sampled)
    for cut in cuts:
        torn = data[:cut] if tear == "file-cut" else data[:cut] + bytes(len(data) - cut)
        overwrite(segment, torn)
        caplog.clear()
        async with crashed(work) as store:
            if torn[:end] == data[:end]:
                # The bytes zeroed were zeros already: the record is whole.
                assert await reads(store) == with_last, cut
                continue
            assert await reads(store) == before, cut
            if not all_zero(torn[start:]):
                # A torn record: cut back to the end of the last whole one.
                assert segment.stat().st_size == start, cut
                [message] = torn_warnings(caplog)
                assert f"{segment} (offset {start}, {len(torn) - start} bytes)" in message
            else:
                # Only zeros after the last record (the cut fell on the record's
                # start or inside its LSN's leading zero bytes): the normal end.
                assert segment.stat().st_size == len(torn), cut
                assert torn_warnings(caplog) == [], cut
            if last is big_atomic_apply and cut not in sampled:
                continue
            await oauth_write(b"next")(store)
        assert segment.read_bytes()[:start] == data[:start]
        assert await reopened_reads(work) == after_next, cut


async def test_a_checksum_failing_last_record_is_a_torn_tail(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    ends = await writes_with_ends(path, NINE_SMALL)
    flip(path / seg(1), ends[-1] - 1)
    assert await reopened_reads(path) == await expected_after(*NINE_SMALL[:-1])
    assert (path / seg(1)).stat().st_size == ends[-2]
    [message] = torn_warnings(caplog)
    assert f"(offset {ends[-2]}, " in message
    assert message.endswith("record checksum mismatch")


def _random_tail(data: bytes, ends: list[int]) -> bytes:
    return random.Random(1234).randbytes(4096)


@pytest.mark.parametrize("where", ["after-the-last-record", "at-the-end-of-the-file"])
@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(_random_tail, id="random"),
        pytest.param(lambda data, ends: b"\x01", id="one-byte"),
        pytest.param(lambda data, ends: data[ends[2] : ends[3]], id="copy-of-record-4"),
        pytest.param(lambda data, ends: data[ends[-2] : ends[-1]], id="copy-of-last-record"),
        pytest.param(lambda data, ends: data[ends[0] : ends[3]], id="copy-of-records-2-4"),
        pytest.param(lambda data, ends: data[SEGMENT_HEADER : ends[-1]], id="copy-of-all"),
    ],
)
async def test_garbage_after_the_last_record_is_a_torn_tail(tmp_path, caplog, garbage, where):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    ends = await writes_with_ends(path, NINE_SMALL)
    segment = path / seg(1)
    data = segment.read_bytes()
    junk = garbage(data, ends)
    if where == "after-the-last-record":
        write_at(segment, ends[-1], junk)
    else:
        write_at(segment, len(data), junk)
    expected = await expected_after(*NINE_SMALL)
    async with crashed(path) as store:
        assert await reads(store) == expected
        assert segment.read_bytes() == data[: ends[-1]]
        await oauth_write(b"next")(store)
    [message] = torn_warnings(caplog)
    assert f"{segment} (offset {ends[-1]}, " in message
    assert await reopened_reads(path) == await expected_after(*NINE_SMALL, oauth_write(b"next"))


async def test_zeros_after_the_last_record_are_the_normal_end_of_the_log(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    await writes_with_ends(path, NINE_SMALL)
    segment = path / seg(1)
    write_at(segment, segment.stat().st_size, bytes(3 * 1024 * 1024 + 5))
    data = segment.read_bytes()
    async with crashed(path) as store:
        assert await reads(store) == await expected_after(*NINE_SMALL)
        assert segment.read_bytes() == data
        await oauth_write(b"next")(store)
    assert [r for r in caplog.records if r.name == LOGGER] == []
    assert await reopened_reads(path) == await expected_after(*NINE_SMALL, oauth_write(b"next"))


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(segment_header(10)[:0], id="0"),
        pytest.param(segment_header(10)[:1], id="1"),
        pytest.param(segment_header(10)[:16], id="16"),
        pytest.param(segment_header(10)[:31], id="31"),
        pytest.param(segment_header(10)[:20] + bytes(12), id="32-prefix-then-zeros"),
        pytest.param(segment_header(10)[:28] + b"\xff" * 4, id="32-bad-crc"),
        pytest.param(
            segment_header(10)[:20] + bytes(PREALLOCATED - 20), id="preallocated-header-prefix"
        ),
        pytest.param(bytes(PREALLOCATED), id="preallocated-all-zeros"),
        pytest.param(
            flip_bytes(segment_header(10), 8 * 8) + bytes(PREALLOCATED - 32),
            id="preallocated-version-bit",
        ),
    ],
)
async def test_a_torn_newest_segment_without_records_is_removed(tmp_path, caplog, content):
    """A crash while the next segment was being created (header and zero fill
    are one write): an invalid header and nothing but zeros after it."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    await writes_with_ends(path, NINE_SMALL)
    assert (path / seg(1)).stat().st_size == PREALLOCATED
    torn = path / seg(10)
    torn.write_bytes(content)
    async with crashed(path) as store:
        assert await reads(store) == await expected_after(*NINE_SMALL)
        await oauth_write(b"next")(store)
    [message] = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert message.startswith(f"{real(path)}: removed {torn}: its header is torn (")
    # The last surviving segment takes the next write (docs/format.md
    # section 8, steps 7 and 9); the torn one is not made again.
    assert sorted(os.listdir(path)) == store_files(seg(1))
    assert [(r.lsn, r.write_lsn) for r in walk(path / seg(1))][-1] == (10, 10)
    assert await reopened_reads(path) == await expected_after(*NINE_SMALL, oauth_write(b"next"))


@pytest.mark.parametrize(
    ("content", "offset", "message"),
    [
        pytest.param(
            bytes(PREALLOCATED - 1) + b"\x01",
            0,
            "segment has the wrong magic",
            id="zeros-then-a-byte",
        ),
        pytest.param(
            segment_header(10)[:20] + bytes(12) + frame(10, oauth_effect()),
            28,
            "segment header checksum mismatch",
            id="header-prefix-then-a-record",
        ),
    ],
)
async def test_a_newest_segment_with_a_bad_header_and_data_is_corruption(
    tmp_path, content, offset, message
):
    path = tmp_path / "store"
    await writes_with_ends(path, NINE_SMALL)
    (path / seg(10)).write_bytes(content)
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert str(info.value) == f"{path / seg(10)} at byte offset {offset}: {message}"
    assert files(path) == before


# --- group commits: a torn last write ---------------------------------------------------


class GateIO(FileIO):
    """Holds the sync of the next log append until `gate` is set, so that the
    commands sent meanwhile gather into one group commit."""

    def __init__(self) -> None:
        self.gate: threading.Event | None = None

    def sync(self, handle: Any) -> None:
        gate, self.gate = self.gate, None
        if gate is not None:
            assert gate.wait(timeout=60), "the test never opened the gate"
        super().sync(handle)


def input_number(n: int) -> ma.InputId:
    return ma.InputId(uuid.UUID(int=0x1000 + n))


def numbered_input(record: Record, data: bytes) -> int:
    """Which `input_number` a record's payload persists (decoded here, with cbor2)."""
    [effect] = cbor2.loads(data[record.start + FRAME_HEADER : record.end])
    # Version 3: the input ids ride beside the packed states.
    [key] = effect["ids"]
    return uuid.UUID(bytes=key).int - 0x1000


@dataclasses.dataclass
class GroupStore:
    """A store whose log holds LSN 1 and 2 (one write each), then LSNs 3-8 (one
    write: a group commit), then, if `later`, LSN 9 (its own write)."""

    records: list[Record]
    writes: list[Writes]  # in LSN order


async def group_commit_store(path: Path, *, later: bool = False) -> GroupStore:
    io = GateIO()

    def write(n: int) -> Writes:
        return input_write(input_number(n), PHASE.QUEUED)

    async with crashed(path, _io=io) as store:
        await write(0)(store)
        gate = threading.Event()
        io.gate = gate
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(write(1), store)
                # LSN 2's append is held in its sync: the next six gather.
                await trio.testing.wait_all_tasks_blocked()
                for n in range(2, 8):
                    nursery.start_soon(write(n), store)
                await trio.testing.wait_all_tasks_blocked()
                assert store.statistics().records == 1
                gate.set()
        finally:
            gate.set()
        if later:
            await write(8)(store)
        assert store.statistics().fsyncs == (4 if later else 3)
    assert sorted(os.listdir(path)) == store_files(seg(1))
    segment = path / seg(1)
    records = walk(segment)
    data = segment.read_bytes()
    order = [numbered_input(record, data) for record in records]
    assert sorted(order) == list(range(9 if later else 8))
    return GroupStore(records, [write(n) for n in order])


async def test_a_group_commit_is_one_write_whose_records_name_its_first_lsn(tmp_path):
    path = tmp_path / "store"
    group = await group_commit_store(path, later=True)
    assert [(r.lsn, r.write_lsn) for r in group.records] == [
        (1, 1),
        (2, 2),
        *((lsn, 3) for lsn in range(3, 9)),
        (9, 9),
    ]
    assert await reopened_reads(path) == await expected_after(*group.writes)


DAMAGES = {
    # A page of the write never reached the disk: the record reads as zeros.
    "zeroed": lambda data, r: data[: r.start] + bytes(r.end - r.start) + data[r.end :],
    # Its bytes are damaged: the CRC fails.
    "flipped": lambda data, r: flip_bytes(data, (r.end - 2) * 8 + 3),
    # Half of it is zeros (a torn sector).
    "half-zeroed": lambda data, r: (
        data[: (r.start + r.end) // 2] + bytes(r.end - (r.start + r.end) // 2) + data[r.end :]
    ),
    # Its header is damaged: the LSN is wrong.
    "lsn-flipped": lambda data, r: flip_bytes(data, (r.start + 7) * 8 + 4),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("lsn", [3, 5, 7, 8], ids=lambda n: f"lsn-{n}")
async def test_damage_inside_the_last_group_commit_is_a_torn_write(tmp_path, caplog, damage, lsn):
    """A crash during the last write may persist its pages in any order: a
    damaged record followed only by records of the same write is a torn
    write. The log is cut at the damaged record; the records before it stay."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    group = await group_commit_store(path)
    segment = path / seg(1)
    data = segment.read_bytes()
    damaged = group.records[lsn - 1]
    after = DAMAGES[damage](data, damaged)
    assert len(after) == len(data) == PREALLOCATED
    assert after[: damaged.start] == data[: damaged.start]
    assert after[damaged.end :] == data[damaged.end :]  # the rest of the write is intact
    overwrite(segment, after)
    kept = group.writes[: lsn - 1]
    next_write = input_write(I1, PHASE.APPLIED)
    async with crashed(path) as store:
        assert await reads(store) == await expected_after(*kept)
        assert len(await store.load_input_states(RT)) == lsn - 1
        if all_zero(after[damaged.start :]):
            # The last record zeroed: only zeros follow LSN 7, the normal end.
            assert segment.read_bytes() == after
            assert torn_warnings(caplog) == []
        else:
            assert segment.read_bytes() == data[: damaged.start]
            [message] = torn_warnings(caplog)
            assert message.startswith(
                f"{real(path)}: truncated a torn write at the end of {segment}"
                f" (offset {damaged.start}, {PREALLOCATED - damaged.start} bytes): "
            )
        await next_write(store)
    assert [(r.lsn, r.write_lsn) for r in walk(segment)][lsn - 1 :] == [(lsn, lsn)]
    assert await reopened_reads(path) == await expected_after(*kept, next_write)


PROBLEMS = {
    "zeroed": "record length 0",
    "flipped": "record checksum mismatch",
    "half-zeroed": "record checksum mismatch",
    "lsn-flipped": "record checksum mismatch",
}


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize(("lsn", "follows"), [(2, 3), (3, 9), (5, 9), (8, 9)], ids=str)
async def test_damage_followed_by_a_later_write_is_corruption(tmp_path, damage, lsn, follows):
    """A write starts only once the previous one is synced: a valid record of
    a later write after the damage proves the damaged record was synced.
    Records of the damaged record's own write in between prove nothing."""
    path = tmp_path / "store"
    group = await group_commit_store(path, later=True)
    segment = path / seg(1)
    damaged = group.records[lsn - 1]
    overwrite(segment, DAMAGES[damage](segment.read_bytes(), damaged))
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    later = group.records[follows - 1]
    assert later.write_lsn == follows > lsn
    assert str(info.value) == (
        f"{segment} at byte offset {damaged.start}: "
        + later_write(PROBLEMS[damage], follows, later.start)
    )
    assert files(path) == before


async def test_a_missing_record_of_the_last_group_commit_is_a_torn_write(tmp_path, caplog):
    # LSN 5 cut out of the write 3-8: LSN 6 follows where 5 is expected, but
    # it names write 3 (<= 5), so this is the torn last write.
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    group = await group_commit_store(path)
    segment = path / seg(1)
    data = segment.read_bytes()
    start, end = group.records[4].start, group.records[4].end
    overwrite(segment, data[:start] + data[end:])
    assert await reopened_reads(path) == await expected_after(*group.writes[:4])
    assert segment.read_bytes() == data[:start]
    [message] = torn_warnings(caplog)
    assert message.endswith(
        f"(offset {start}, {PREALLOCATED - end} bytes): record LSN 6, expected 5"
    )


@pytest.mark.parametrize(
    "cut",
    ["in-the-write-lsn", "in-the-length", "first-payload-byte", "mid-payload", "last-byte"],
)
async def test_a_group_commit_cut_short_keeps_its_whole_records(tmp_path, caplog, cut):
    """The file ends inside the last write: every record of it that is whole
    stays, and the cut one goes (the torn tail a crash leaves without
    preallocation)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    group = await group_commit_store(path)
    segment = path / seg(1)
    data = segment.read_bytes()
    for index in range(2, 8):
        record = group.records[index]
        offset = {
            "in-the-write-lsn": record.start + 8,  # the LSN's leading bytes are zeros
            "in-the-length": record.start + 18,
            "first-payload-byte": record.start + FRAME_HEADER + 1,
            "mid-payload": (record.start + FRAME_HEADER + record.end) // 2,
            "last-byte": record.end - 1,
        }[cut]
        overwrite(segment, data[:offset])
        caplog.clear()
        async with crashed(path) as store:
            assert await reads(store) == await expected_after(*group.writes[:index]), index
        assert segment.read_bytes() == data[: record.start]
        [message] = torn_warnings(caplog)
        assert f"(offset {record.start}, {offset - record.start} bytes): short record" in message


# --- corruption that must not be repaired -----------------------------------------------


def later_write(message: str, lsn: int, offset: int) -> str:
    """The end of a CorruptStore message for damage a later write follows."""
    return f"{message}, but a valid record of a later write (LSN {lsn}) follows at {offset}"


@pytest.mark.parametrize(
    "position",
    [
        pytest.param(0, id="lsn-high-byte"),
        pytest.param(7, id="lsn-low-byte"),
        pytest.param(8, id="write-lsn-high-byte"),
        pytest.param(15, id="write-lsn-low-byte"),
        pytest.param(16, id="length-high-byte"),
        pytest.param(19, id="length-low-byte"),
        pytest.param(21, id="crc"),
        pytest.param(FRAME_HEADER, id="payload-first-byte"),
        pytest.param(-1, id="payload-last-byte"),
    ],
)
@pytest.mark.parametrize("record", [0, 4, 7], ids=["first", "middle", "second-to-last"])
async def test_a_bit_flip_in_a_record_that_is_not_the_last_is_corruption(
    tmp_path, position, record
):
    # Each write was its own group commit: the record after the damaged one
    # belongs to a later write, so the damaged one had been synced.
    path = tmp_path / "store"
    ends = await writes_with_ends(path, NINE_SMALL)
    assert [(r.lsn, r.write_lsn) for r in walk(path / seg(1))] == [(n, n) for n in range(1, 10)]
    starts = [SEGMENT_HEADER, *ends[:-1]]
    start, end = starts[record], ends[record]
    flip(path / seg(1), start + position if position >= 0 else end + position, bit=5)
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    if position == 16:  # the length grows by 2**29: past the end of the file
        length = end - start - FRAME_HEADER + 2**29
        first = f"short record: {PREALLOCATED - start - FRAME_HEADER} of {length} payload bytes"
    else:
        first = "record checksum mismatch"
    assert str(info.value) == (
        f"{path / seg(1)} at byte offset {start}: {later_write(first, record + 2, end)}"
    )
    assert files(path) == before  # nothing was truncated or repaired


@pytest.mark.parametrize("write_lsn", [6, 0, U64_MAX])
async def test_a_record_whose_write_lsn_is_not_in_1_to_its_lsn_is_damage(
    tmp_path, caplog, write_lsn
):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    ends = await writes_with_ends(path, NINE_SMALL)
    segment = path / seg(1)
    data = segment.read_bytes()
    problem = f"record write LSN {write_lsn} is not in [1, LSN 5]"
    # Record 5, re-framed with a valid CRC: followed by later writes, corruption.
    bad = frame(5, data[ends[3] + FRAME_HEADER : ends[4]], write_lsn=write_lsn)
    write_at(segment, ends[3], bad)
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert (
        str(info.value) == f"{segment} at byte offset {ends[3]}: {later_write(problem, 6, ends[4])}"
    )
    assert files(path) == before
    # As the last record: a torn write, cut off.
    overwrite(segment, data[: ends[3]] + bad + bytes(PREALLOCATED - ends[4]))
    assert await reopened_reads(path) == await expected_after(*NINE_SMALL[:4])
    assert segment.stat().st_size == ends[3]
    [message] = torn_warnings(caplog)
    assert message.endswith(f"(offset {ends[3]}, {PREALLOCATED - ends[3]} bytes): {problem}")


async def test_records_spliced_out_of_the_middle_are_an_lsn_gap(tmp_path):
    path = tmp_path / "store"
    ends = await writes_with_ends(path, NINE_SMALL)
    segment = path / seg(1)
    data = segment.read_bytes()
    segment.write_bytes(data[: ends[3]] + data[ends[5] :])  # records 5 and 6 removed
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert str(info.value) == (
        f"{segment} at byte offset {ends[3]}: "
        + later_write("record LSN 7, expected 5", 7, ends[3])
    )
    assert files(path) == before


async def test_a_missing_second_to_last_record_is_an_lsn_gap(tmp_path):
    # Records 8 and 9 were separate writes: 9 could only be written once 8
    # was synced, so 8 is missing, not torn.
    path = tmp_path / "store"
    ends = await writes_with_ends(path, NINE_SMALL)
    segment = path / seg(1)
    data = segment.read_bytes()
    segment.write_bytes(data[: ends[6]] + data[ends[7] :])  # record 8 removed, 9 kept
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert str(info.value) == (
        f"{segment} at byte offset {ends[6]}: "
        + later_write("record LSN 9, expected 8", 9, ends[6])
    )
    assert files(path) == before


class NoSnapshotIO(FileIO):
    """Every checkpoint fails at the rename of its snapshot: the log keeps
    every segment, so a store gets several."""

    def rename(self, source: str, target: str) -> None:
        if target.endswith(".snap"):
            raise OSError(5, "injected: no snapshots today")
        super().rename(source, target)


async def three_segments(path: Path) -> dict[str, list[int]]:
    """Segments log-1, log-3 and log-5 of two records each; return each
    segment's record end offsets."""
    ends: dict[str, list[int]] = {}
    async with crashed(path, _io=NoSnapshotIO()) as store:
        for first in (1, 3, 5):
            name = seg(first)
            ends[name] = []
            for n in (first, first + 1):
                await store.persist_auth_oauth_flow_snapshot(b"v%d" % n)
                ends[name].append(record_ends(path / name)[-1])
            if first < 5:
                with pytest.raises(ma.WriteFailed, match="injected: no snapshots today"):
                    await store.checkpoint()
    return ends


async def test_a_log_of_several_segments_replays_in_order(tmp_path):
    path = tmp_path / "store"
    await three_segments(path)
    listing = sorted(os.listdir(path))
    # The failed checkpoints removed their temp files.
    assert listing == store_files(seg(1), seg(3), seg(5))
    async with crashed(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"v6"
        await store.persist_auth_oauth_flow_snapshot(b"v7")
    # The newest segment took the new record.
    assert sorted(os.listdir(path)) == store_files(seg(1), seg(3), seg(5))
    async with ma.open_store(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"v7"
    assert sorted(os.listdir(path)) == store_files(snap(7), seg(8))


def _delete(path: Path, name: str) -> None:
    (path / name).unlink()


def _rename(path: Path, name: str, to: str) -> None:
    (path / name).rename(path / to)


@pytest.mark.parametrize(
    ("damage", "where", "offset", "message"),
    [
        pytest.param(
            lambda p, e: _delete(p, seg(3)),
            seg(5),
            0,
            "segment starts at LSN 5, expected 3",
            id="middle-segment-deleted",
        ),
        pytest.param(
            lambda p, e: _delete(p, seg(1)),
            seg(3),
            0,
            "log starts at LSN 3, but the snapshot ends at 0: records in between are missing",
            id="first-segment-deleted",
        ),
        pytest.param(
            lambda p, e: _rename(p, seg(3), seg(4)),
            seg(4),
            16,
            "header first LSN 3 differs from the name",
            id="segment-renamed",
        ),
        pytest.param(
            lambda p, e: flip(p / seg(3), e[seg(3)][1] - 1),
            seg(3),
            "record-2",
            "record checksum mismatch",
            id="last-record-of-a-middle-segment-flipped",
        ),
        pytest.param(
            lambda p, e: os.truncate(p / seg(3), e[seg(3)][1] - 1),
            seg(3),
            "record-2",
            lambda e: (
                f"short record: {e[1] - 1 - e[0] - FRAME_HEADER} of"
                f" {e[1] - e[0] - FRAME_HEADER} payload bytes"
            ),
            id="middle-segment-torn",
        ),
        pytest.param(
            lambda p, e: write_at(p / seg(3), e[seg(3)][1] - 9, bytes(9)),
            seg(3),
            "record-2",
            "record checksum mismatch",
            id="middle-segment-torn-into-zeros",
        ),
        pytest.param(
            lambda p, e: write_at(p / seg(3), (p / seg(3)).stat().st_size, b"\x01"),
            seg(3),
            "end",
            "record length 0",
            id="garbage-after-the-zeros-of-a-middle-segment",
        ),
        pytest.param(
            lambda p, e: write_at(p / seg(3), e[seg(3)][0], bytes(e[seg(3)][1] - e[seg(3)][0])),
            seg(5),
            0,
            "segment starts at LSN 5, expected 4",
            id="last-record-of-a-middle-segment-zeroed",
        ),
        pytest.param(
            lambda p, e: os.truncate(p / seg(3), 20),
            seg(3),
            0,
            "segment header is short (20 of 32 bytes)",
            id="middle-segment-header-torn",
        ),
        pytest.param(
            lambda p, e: flip(p / seg(1), 3),
            seg(1),
            0,
            "segment has the wrong magic",
            id="first-segment-magic",
        ),
        pytest.param(
            lambda p, e: flip(p / seg(5), 20),
            seg(5),
            28,
            "segment header checksum mismatch",
            id="newest-segment-header-damaged",
        ),
        pytest.param(
            lambda p, e: write_at(p / seg(3), 0, segment_header(3, reserved=(1, 0))),
            seg(3),
            12,
            "segment header reserved fields are not zero",
            id="middle-segment-reserved-field",
        ),
        pytest.param(
            lambda p, e: write_at(p / seg(5), 0, segment_header(5, reserved=(0, 1))),
            seg(5),
            24,
            "segment header reserved fields are not zero",
            id="newest-segment-reserved-field",
        ),
    ],
)
async def test_damage_to_a_segment_that_is_not_a_torn_tail_is_corruption(
    tmp_path, damage, where, offset, message
):
    path = tmp_path / "store"
    ends = await three_segments(path)
    for name in os.listdir(path):
        if name.endswith(".tmp"):
            os.unlink(path / name)
    damage(path, ends)
    if offset == "record-2":
        offset = ends[where][0]
    elif offset == "end":
        offset = ends[where][1]
    if callable(message):
        message = message(ends[where])
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    # Outside the last segment damage is corruption whatever follows it.
    assert str(info.value) == f"{path / where} at byte offset {offset}: {message}"
    assert files(path) == before


async def checkpointed(path: Path) -> int:
    """A store whose state lives in one snapshot; the log it covers is gone."""
    async with ma.open_store(path) as store:
        records = await every_kind_of_write(store)
    assert sorted(os.listdir(path)) == store_files(snap(records), seg(records + 1))
    return records


@pytest.mark.parametrize(
    ("flipped", "offset", "message"),
    [
        pytest.param(0, 0, "snapshot has the wrong magic", id="magic"),
        pytest.param(12, 36, "snapshot header checksum mismatch", id="reserved"),
        pytest.param(20, 36, "snapshot header checksum mismatch", id="lsn"),
        pytest.param(33, 36, "snapshot header checksum mismatch", id="body-crc-field"),
        pytest.param(40, 40, "snapshot body checksum mismatch", id="body-first-byte"),
        pytest.param(41, 40, "snapshot body checksum mismatch", id="body-second-byte"),
        pytest.param(-1, 40, "snapshot body checksum mismatch", id="body-last-byte"),
    ],
)
async def test_a_damaged_newest_snapshot_is_corruption_named_with_its_offset(
    tmp_path, flipped, offset, message
):
    # Its log was deleted by the checkpoint: replaying what is left would
    # leave a gap, but the error names the first damage, the snapshot.
    path = tmp_path / "store"
    records = await checkpointed(path)
    target = path / snap(records)
    flip(target, flipped if flipped >= 0 else target.stat().st_size + flipped)
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert str(info.value) == (
        f"{target} at byte offset {offset}: {message}; the log does not cover it"
    )
    assert files(path) == before


def snapshot_with_reserved(data: bytes, reserved: int) -> bytes:
    head = data[:12] + struct.pack(">I", reserved) + data[16:36]
    return head + struct.pack(">I", zlib.crc32(head)) + data[40:]


async def test_a_snapshot_with_a_non_zero_reserved_field_is_corruption(tmp_path):
    path = tmp_path / "store"
    records = await checkpointed(path)
    target = path / snap(records)
    overwrite(target, snapshot_with_reserved(target.read_bytes(), 1))
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert str(info.value) == (
        f"{target} at byte offset 12: snapshot header reserved field is not zero;"
        " the log does not cover it"
    )
    assert files(path) == before


class KeepSegmentsIO(FileIO):
    """Checkpoints succeed but never delete a segment (as if the process
    died right after the snapshot's rename)."""

    def remove(self, path: str) -> None:
        if not path.endswith(".log"):
            super().remove(path)


async def test_a_damaged_snapshot_the_log_still_covers_is_ignored(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    async with ma.open_store(path, _io=KeepSegmentsIO()) as store:
        records = await every_kind_of_write(store)
    assert sorted(os.listdir(path)) == store_files(snap(records), seg(1), seg(records + 1))
    flip(path / snap(records), 50)
    assert await reopened_reads(path) == await expected_after(every_kind_of_write)
    assert any(
        f"ignored damaged snapshot {path / snap(records)}: the log covers it" in r.getMessage()
        for r in caplog.records
    )


async def test_segments_a_snapshot_covers_are_not_read(tmp_path, caplog):
    # A crash right after a checkpoint's rename leaves the old segment; it is
    # redundant and skipped, so damage in it does not matter.
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    async with ma.open_store(path, _io=KeepSegmentsIO()) as store:
        records = await every_kind_of_write(store)
    flip(path / seg(1), SEGMENT_HEADER + 20)
    flip(path / seg(1), 3)
    assert await reopened_reads(path) == await expected_after(every_kind_of_write)
    assert [r for r in caplog.records if r.name == LOGGER] == []
    async with ma.open_store(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"more")
    assert sorted(os.listdir(path)) == store_files(snap(records + 1), seg(records + 2))


async def test_a_snapshot_with_the_log_deleted_before_it_replays_from_the_snapshot(tmp_path):
    # The normal state after checkpoints: no log before the snapshot at all.
    path = tmp_path / "store"
    records = await checkpointed(path)
    async with crashed(path) as store:
        await oauth_write(b"on top")(store)
    assert sorted(os.listdir(path)) == store_files(snap(records), seg(records + 1))
    assert await reopened_reads(path) == await expected_after(
        every_kind_of_write, oauth_write(b"on top")
    )


# --- hostile files ----------------------------------------------------------------------


async def store_with_one_record(path: Path) -> int:
    """A store whose log holds one record (LSN 1); returns where it ends."""
    ends = await writes_with_ends(path, [oauth_write(b"first")])
    return ends[0]


OP_OAUTH_SNAPSHOT = b"\x81\xa2\x62op\x65oauth\x68snapshot"


@pytest.mark.parametrize(
    "declared",
    [
        pytest.param(b"\x5b" + (1 << 30).to_bytes(8, "big"), id="bytes"),
        pytest.param(b"\x7b" + (1 << 30).to_bytes(8, "big"), id="text"),
        pytest.param(b"\x5a" + (1 << 30).to_bytes(4, "big"), id="bytes-u32"),
        pytest.param(b"\x9b" + (1 << 40).to_bytes(8, "big"), id="array"),
    ],
)
async def test_a_record_declaring_a_gigabyte_fails_fast_in_bounded_memory(tmp_path, declared):
    path = tmp_path / "store"
    start = await store_with_one_record(path)
    payload = OP_OAUTH_SNAPSHOT + declared + b"abc"
    assert cbor2.loads(OP_OAUTH_SNAPSHOT + b"\x41s") == [{"op": "oauth", "snapshot": b"s"}]
    write_at(path / seg(1), start, frame(2, payload))
    before = files(path)
    tracemalloc.start()
    began = time.perf_counter()
    try:
        with pytest.raises(ma.CorruptStore) as info:
            await reopened_reads(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024
    assert time.perf_counter() - began < 5
    assert str(info.value).startswith(
        f"{path / seg(1)} at byte offset {start + FRAME_HEADER}: invalid CBOR"
    )
    assert files(path) == before


def _nest(depth: int) -> bytes:
    return OP_OAUTH_SNAPSHOT + b"\x81" * depth + b"\x41s"


def _tag(tag: int, inner: Any) -> bytes:
    return OP_OAUTH_SNAPSHOT + cbor2.dumps(cbor2.CBORTag(tag, inner))


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(_nest(200), id="nesting-200"),
        pytest.param(b"\x81" * 100_000, id="nesting-100000"),
        pytest.param(_tag(1, 1700000000), id="tag-1-epoch-datetime"),
        pytest.param(_tag(0, "2024-01-01T00:00:00Z"), id="tag-0-datetime"),
        pytest.param(_tag(35, "a+"), id="tag-35-regex"),
        pytest.param(_tag(258, [1, 2]), id="tag-258-set"),
        pytest.param(_tag(4, [-1, 15]), id="tag-4-decimal"),
        pytest.param(_tag(36, "Content-Type: text/plain\r\n\r\nx"), id="tag-36-mime"),
        pytest.param(_tag(28, [1]), id="tag-28-shareable"),
        pytest.param(_tag(55799, b"s"), id="tag-55799-self-describe"),
        pytest.param(_tag(4711, b"s"), id="tag-unknown"),
        pytest.param(b"\xd9\xd9\xf7" + oauth_effect(), id="tag-55799-around-the-payload"),
        pytest.param(b"\x9f" + oauth_effect()[1:] + b"\xff", id="indefinite-array"),
    ],
)
async def test_forbidden_cbor_in_a_record_is_corruption(tmp_path, payload):
    path = tmp_path / "store"
    start = await store_with_one_record(path)
    write_at(path / seg(1), start, frame(2, payload))
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert str(info.value).startswith(
        f"{path / seg(1)} at byte offset {start + FRAME_HEADER}: invalid CBOR"
    )
    assert files(path) == before


@pytest.mark.parametrize(
    ("plain", "message"),
    [
        pytest.param([{"op": "drop_table", "runtime": "rt"}], "unknown effect op", id="unknown-op"),
        pytest.param([{"op": "session", "runtime": "rt"}], "effect must be a map", id="missing"),
        pytest.param(
            [{"op": "oauth", "snapshot": b"s", "also": 1}], "effect must be a map", id="extra"
        ),
        pytest.param({"op": "oauth", "snapshot": b"s"}, "not a non-empty array", id="not-array"),
        pytest.param([], "not a non-empty array", id="empty"),
        pytest.param([{"op": "oauth", "snapshot": "text"}], "snapshot must be bytes", id="type"),
    ],
)
async def test_a_record_of_the_wrong_shape_is_corruption(tmp_path, plain, message):
    path = tmp_path / "store"
    start = await store_with_one_record(path)
    write_at(path / seg(1), start, frame(2, cbor2.dumps(plain)))
    with pytest.raises(ma.CorruptStore, match=message) as info:
        await reopened_reads(path)
    assert str(info.value).startswith(f"{path / seg(1)} at byte offset {start + FRAME_HEADER}: ")


BIG_LENGTH = 2**31


def header_only(lsn: int, length: int) -> bytes:
    """A frame header declaring `length` payload bytes, CRC over the header alone."""
    head = struct.pack(">QQI", lsn, lsn, length)
    return head + struct.pack(">I", zlib.crc32(head))


@pytest.mark.parametrize(
    ("follows", "torn"),
    [
        pytest.param(b"", True, id="nothing"),
        pytest.param(frame(3, oauth_effect(b"after")), False, id="a-later-write"),
        pytest.param(frame(3, oauth_effect(b"after"), write_lsn=2), True, id="the-same-write"),
        pytest.param(frame(2, oauth_effect(b"after")), True, id="lsn-2-of-write-2"),
        pytest.param(frame(1, oauth_effect(b"after")), True, id="a-stale-copy-of-lsn-1"),
    ],
)
async def test_a_frame_declaring_a_huge_length_is_judged_by_what_follows(
    tmp_path, caplog, follows, torn
):
    """Record 2's header declares 2 GiB (more than max_record_bytes and the
    file): damage, not a too-large record. Torn unless a record of a later
    write (write LSN > 2) follows."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "store"
    start = await store_with_one_record(path)
    segment = path / seg(1)
    write_at(segment, start, header_only(2, BIG_LENGTH) + follows)
    problem = f"short record: {PREALLOCATED - start - FRAME_HEADER} of {BIG_LENGTH} payload bytes"
    if not torn:
        before = files(path)
        with pytest.raises(ma.CorruptStore) as info:
            await reopened_reads(path)
        assert str(info.value) == (
            f"{segment} at byte offset {start}: " + later_write(problem, 3, start + FRAME_HEADER)
        )
        assert files(path) == before
        return
    assert await reopened_reads(path) == await expected_after(oauth_write(b"first"))
    assert segment.stat().st_size == start
    [message] = torn_warnings(caplog)
    assert message == (
        f"{real(path)}: truncated a torn write at the end of {segment}"
        f" (offset {start}, {PREALLOCATED - start} bytes): {problem}"
    )


def too_large(size: int, limit: int) -> str:
    return (
        f"record of {size} bytes is over max_record_bytes={limit}; open the store with a"
        " larger max_record_bytes"
    )


@pytest.mark.parametrize("last", [False, True], ids=["mid-log", "last-record"])
async def test_a_record_over_a_smaller_max_record_bytes_is_corruption(tmp_path, last):
    # A whole, valid record: the store was written with a larger limit. Even
    # as the very last record it is not torn, and nothing is truncated.
    path = tmp_path / "store"
    writes = [oauth_write(b"a"), oauth_write(b"x" * 500)]
    if not last:
        writes.append(oauth_write(b"b"))
    ends = await writes_with_ends(path, writes)
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path, max_record_bytes=100)
    size = ends[1] - ends[0] - FRAME_HEADER
    assert 500 < size < 600
    assert str(info.value) == (f"{path / seg(1)} at byte offset {ends[0]}: {too_large(size, 100)}")
    assert files(path) == before
    assert await reopened_reads(path, max_record_bytes=size) == await expected_after(*writes)


async def test_a_too_large_record_inside_a_torn_last_write_is_corruption(tmp_path):
    # Records 2 and 3, one write: record 3 is torn, record 2 is whole but over
    # the limit. The limit is checked first: CorruptStore, nothing cut.
    path = tmp_path / "store"
    start = await store_with_one_record(path)
    big = frame(2, oauth_effect(b"x" * 500), write_lsn=2)
    torn = frame(3, oauth_effect(b"y"), write_lsn=2)[:-3]
    write_at(path / seg(1), start, big + torn)
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path, max_record_bytes=100)
    assert str(info.value) == (
        f"{path / seg(1)} at byte offset {start}: {too_large(len(big) - FRAME_HEADER, 100)}"
    )
    assert files(path) == before


# --- format version and directories -----------------------------------------------------


def format_file(version: int) -> bytes:
    head = b"MKRTSTOR" + struct.pack(">I", version)
    return head + struct.pack(">I", zlib.crc32(head))


async def test_a_store_of_a_newer_format_version_is_refused_untouched(tmp_path):
    path = tmp_path / "store"
    await checkpointed(path)
    assert (path / "FORMAT").read_bytes() == format_file(3)
    (path / "FORMAT").write_bytes(format_file(4))
    before = files(path)
    with pytest.raises(ma.UnsupportedFormat) as info:
        await reopened_reads(path)
    assert str(info.value) == (
        f"{path} was written by format version 4; this build reads version 3 and older"
    )
    assert isinstance(info.value, ma.ReadFailed)
    assert files(path) == before
    (path / "FORMAT").write_bytes(format_file(3))
    assert await reopened_reads(path) == await expected_after(every_kind_of_write)


@pytest.mark.parametrize(
    ("damage", "offset", "message"),
    [
        (lambda data: data[:10], 0, "FORMAT file is 10 bytes, expected 16"),
        (lambda data: b"", 0, "FORMAT file is 0 bytes, expected 16"),
        (lambda data: b"X" + data[1:], 0, "FORMAT file has the wrong magic"),
        (
            lambda data: data[:13] + bytes([data[13] ^ 1]) + data[14:],
            12,
            "FORMAT file checksum mismatch",
        ),
        (
            lambda data: format_file(3)[:11] + b"\x01" + format_file(3)[12:],
            12,
            "FORMAT file checksum mismatch",
        ),
        (lambda data: format_file(0), 8, "FORMAT file names version 0; versions start at 1"),
    ],
    ids=["short", "empty", "magic", "crc", "version-without-crc", "version-0"],
)
async def test_a_corrupt_format_file_is_corruption(tmp_path, damage, offset, message):
    path = tmp_path / "store"
    await checkpointed(path)
    (path / "FORMAT").write_bytes(damage((path / "FORMAT").read_bytes()))
    before = files(path)
    with pytest.raises(ma.CorruptStore) as info:
        await reopened_reads(path)
    assert str(info.value) == f"{path / 'FORMAT'} at byte offset {offset}: {message}"
    assert files(path) == before


async def test_a_directory_that_is_not_a_store_is_refused(tmp_path):
    path = tmp_path / "documents"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    with pytest.raises(ma.ReadFailed) as info:
        await reopened_reads(path)
    assert type(info.value) is ma.ReadFailed
    assert str(info.value) == (
        f"{path} is not a meerkat_actor store (it holds 'notes.txt' and no FORMAT file)"
    )
    assert (path / "notes.txt").read_text() == "mine"
    assert "FORMAT" not in os.listdir(path)
    assert not any(name.startswith("log-") for name in os.listdir(path))


@pytest.mark.parametrize(
    ("names", "named"),
    [
        (["notes.txt"], "notes.txt"),
        (["notes.txt.tmp"], "notes.txt.tmp"),  # not a temp file the store makes
        (["log-00000000000000000001.log.tmp"], "log-00000000000000000001.log.tmp"),
        (["log-00000000000000000001.log"], "log-00000000000000000001.log"),
        (["b", "a", "FORMAT.tmp"], "a"),
    ],
)
@pytest.mark.usefixtures("no_umask")
async def test_a_refused_foreign_directory_is_left_as_it_was(tmp_path, names, named):
    # Refused before the LOCK file is created; nothing is removed or chmodded.
    path = tmp_path / "documents"
    path.mkdir(mode=0o755)
    for name in names:
        (path / name).write_text("mine")
    with pytest.raises(ma.ReadFailed) as info:
        await reopened_reads(path)
    assert type(info.value) is ma.ReadFailed
    assert str(info.value) == (
        f"{real(path)} is not a meerkat_actor store (it holds {named!r} and no FORMAT file)"
    )
    assert sorted(os.listdir(path)) == sorted(names)
    assert os.stat(path).st_mode & 0o777 == 0o755


async def test_a_path_that_is_a_file_is_refused(tmp_path):
    # Issue 16: the message says what the path is, not "File exists"
    # (tests/test_open_path.py has the other cases and the CLI's).
    path = tmp_path / "plain-file"
    path.write_text("x")
    with pytest.raises(ma.ReadFailed, match=f"^{path} is a file, not a store directory$"):
        await reopened_reads(path)
    assert path.read_text() == "x"
    assert sorted(os.listdir(tmp_path)) == ["plain-file"]


@pytest.mark.parametrize("kind", ["empty", "missing", "missing-parents"])
async def test_an_empty_or_missing_directory_is_initialised(tmp_path, kind):
    path = tmp_path / "a" / "b" / "store" if kind == "missing-parents" else tmp_path / "store"
    if kind == "empty":
        path.mkdir(mode=0o700)
    async with ma.open_store(path) as store:
        assert await reads(store) == await expected_after()
        assert sorted(os.listdir(path)) == store_files(seg(1))
        assert (path / "FORMAT").read_bytes() == format_file(3)
        segment = (path / seg(1)).read_bytes()
        assert segment[:SEGMENT_HEADER] == segment_header(1)
        assert all_zero(segment[SEGMENT_HEADER:])  # preallocated space, if any
        assert record_ends(path / seg(1)) == []
    # Nothing was written: a clean close has nothing to checkpoint.
    assert sorted(os.listdir(path)) == store_files(seg(1))
    async with ma.open_store(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"first")
    async with ma.open_store(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"first"


@pytest.mark.parametrize(
    "leftovers",
    [["FORMAT.tmp"], ["FORMAT.tmp", "LOCK"], [snap(3) + ".tmp", "FORMAT.tmp"]],
    ids=["format-temp", "with-lock", "with-snapshot-temp"],
)
async def test_a_store_whose_initialisation_crashed_opens(tmp_path, leftovers):
    # A crash while a new store wrote FORMAT (temp, fsync, rename) leaves its
    # temp file: it is removed before FORMAT is written again.
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    for name in leftovers:
        (path / name).write_bytes(format_file(1)[:5])
    async with ma.open_store(path) as store:
        assert sorted(os.listdir(path)) == store_files(seg(1))
        await store.persist_auth_oauth_flow_snapshot(b"ok")
    assert (path / "FORMAT").read_bytes() == format_file(3)
    assert sorted(os.listdir(path)) == store_files(snap(1), seg(2))
    async with ma.open_store(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"ok"


async def test_a_stale_format_temp_next_to_a_valid_format_is_removed(tmp_path):
    path = tmp_path / "store"
    await checkpointed(path)
    (path / "FORMAT.tmp").write_bytes(b"partial")
    assert await reopened_reads(path) == await expected_after(every_kind_of_write)
    assert "FORMAT.tmp" not in os.listdir(path)


# --- lock and permissions ---------------------------------------------------------------

CHILD = """
import sys
import trio
import meerkat_actor as ma

async def main():
    try:
        async with ma.open_store(sys.argv[1]):
            print("OPENED")
    except ma.StoreLocked as exc:
        print("LOCKED", exc)

trio.run(main)
"""


async def open_in_child(path: Path) -> str:
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-c", CHILD, str(path)], capture_stdout=True, capture_stderr=True
        )
    return result.stdout.decode().strip()


async def test_a_second_open_fails_with_store_locked(tmp_path):
    path = tmp_path / "store"
    link = tmp_path / "link"
    link.symlink_to(path, target_is_directory=True)
    async with ma.open_store(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"held")
        for spelling in (path, str(path), link, f"{tmp_path}/./store"):
            with pytest.raises(ma.StoreLocked) as info:
                await reopened_reads(spelling)
            # The message names the holder: this very process.
            assert str(info.value).startswith(
                f"{real(path)} is locked by another open store: this process (pid {os.getpid()},"
            )
            assert isinstance(info.value, ma.WriteFailed)
        # The failed opens did not disturb the lock or the store. Another
        # process is told who holds it (tests/test_live_ops.py has more).
        assert (await open_in_child(path)).startswith(
            f"LOCKED {real(path)} is locked by another open store: pid {os.getpid()} on host"
        )
        await store.persist_auth_oauth_flow_snapshot(b"still works")
    async with ma.open_store(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"still works"
    assert await open_in_child(path) == "OPENED"


async def test_the_lock_is_released_after_an_unclean_stop_and_a_failed_open(tmp_path):
    path = tmp_path / "store"
    async with crashed(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"x")
    (path / "FORMAT").write_bytes(format_file(4))
    with pytest.raises(ma.UnsupportedFormat):
        await reopened_reads(path)
    (path / "FORMAT").write_bytes(format_file(3))
    async with crashed(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"x"


def real(path: Path) -> str:
    return os.path.realpath(path)


def modes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()}


@pytest.fixture
def no_umask():
    """Let the store's own modes show: nothing masked out."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("no_umask")
async def test_the_directory_is_private_and_every_file_is_0600(tmp_path):
    path = tmp_path / "store"
    async with ma.open_store(path) as store:
        assert os.stat(path).st_mode & 0o777 == 0o700
        assert modes(path) == dict.fromkeys(store_files(seg(1)), 0o600)
        records = await every_kind_of_write(store)
        await store.checkpoint()
        assert modes(path) == dict.fromkeys(store_files(snap(records), seg(records + 1)), 0o600)
        await store.persist_auth_oauth_flow_snapshot(b"more")
    assert modes(path) == dict.fromkeys(store_files(snap(records + 1), seg(records + 2)), 0o600)
    assert os.stat(path).st_mode & 0o777 == 0o700


@pytest.mark.usefixtures("no_umask")
@pytest.mark.parametrize("mode", [0o755, 0o777, 0o711])
async def test_a_new_store_in_an_existing_directory_makes_it_private(tmp_path, mode):
    path = tmp_path / "store"
    path.mkdir()
    os.chmod(path, mode)
    async with ma.open_store(path) as store:
        assert os.stat(path).st_mode & 0o777 == 0o700
        await store.persist_auth_oauth_flow_snapshot(b"x")
    assert os.stat(path).st_mode & 0o777 == 0o700
    assert modes(path) == dict.fromkeys(store_files(snap(1), seg(2)), 0o600)


@pytest.mark.usefixtures("no_umask")
async def test_an_existing_store_keeps_the_mode_its_owner_gave_it(tmp_path):
    path = tmp_path / "store"
    async with ma.open_store(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"x")
    os.chmod(path, 0o750)
    async with ma.open_store(path) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"x"
        await store.persist_auth_oauth_flow_snapshot(b"y")
    assert os.stat(path).st_mode & 0o777 == 0o750


# --- auth authority key -----------------------------------------------------------------


async def test_auth_authority_key_names_the_resolved_directory(tmp_path):
    path = tmp_path / "store"
    link = tmp_path / "link"
    link.symlink_to(path, target_is_directory=True)
    expected = "actor:" + real(path)
    async with ma.open_store(path) as store:
        assert store.auth_authority_key() == expected
    for spelling in (path, link, f"{tmp_path}/../{tmp_path.name}/store"):
        async with ma.open_store(spelling) as store:
            assert store.auth_authority_key() == expected
    async with ma.open_store() as memory:
        assert memory.auth_authority_key() is None


# --- statistics -------------------------------------------------------------------------


async def test_statistics_count_group_commits_bytes_and_checkpoints(tmp_path):
    path = tmp_path / "store"
    async with crashed(path) as store:
        assert store.statistics().fsyncs == 0
        assert store.statistics().bytes_written == 0

        async def writer(n: int) -> None:
            await store.persist_input_state(RT, stored(ma.InputId(uuid.UUID(int=n + 1))))

        async with trio.open_nursery() as nursery:
            for n in range(64):
                nursery.start_soon(writer, n)
        stats = store.statistics()
        assert stats.records == 64
        assert 1 <= stats.fsyncs < stats.records
        assert stats.bytes_written == record_ends(path / seg(1))[-1] - SEGMENT_HEADER
        assert stats.checkpoints == 0
        assert len(await store.load_input_states(RT)) == 64

        await store.persist_auth_oauth_flow_snapshot(b"one more")
        after = store.statistics()
        assert after.records == 65
        assert after.fsyncs == stats.fsyncs + 1
        assert after.bytes_written > stats.bytes_written
        assert after.bytes_written == record_ends(path / seg(1))[-1] - SEGMENT_HEADER

        await store.checkpoint()
        assert store.statistics().checkpoints == 1
        await store.persist_auth_oauth_flow_snapshot(b"and another")
        await store.checkpoint()
        final = store.statistics()
        assert final.checkpoints == 2
        assert final.records == 66
        assert final.bytes_written > after.bytes_written
    async with ma.open_store() as memory:
        await memory.persist_auth_oauth_flow_snapshot(b"x")
        stats = memory.statistics()
        assert (stats.records, stats.fsyncs, stats.bytes_written, stats.checkpoints) == (0,) * 4


# --- max_record_bytes -------------------------------------------------------------------


async def test_a_command_over_max_record_bytes_fails_and_changes_nothing(tmp_path):
    path = tmp_path / "store"
    async with crashed(path, max_record_bytes=256) as store:
        await store.persist_auth_oauth_flow_snapshot(b"small")
        before = await reads(store)
        size = record_ends(path / seg(1))
        big = session(SID, padding="x" * 300)
        with pytest.raises(ma.WriteFailed) as info:
            await store.atomic_apply(RT, big, receipt(2), [stored(I1)], SID)
        assert type(info.value) is ma.WriteFailed
        assert "over the store's max_record_bytes=256" in str(info.value)
        assert await reads(store) == before
        assert record_ends(path / seg(1)) == size
        assert store.statistics().refused == 1
        # The store keeps working, and the same receipt key is still free.
        await store.atomic_apply(RT, None, receipt(2), [])
        # In one batch, the oversized command fails alone.
        async with trio.open_nursery() as nursery:
            failures: list[BaseException] = []

            async def too_big() -> None:
                try:
                    await store.commit_session_snapshot(OTHER, big)
                except ma.WriteFailed as exc:
                    failures.append(exc)

            nursery.start_soon(too_big)
            nursery.start_soon(store.persist_input_state, OTHER, stored(I2))
        assert len(failures) == 1
    seen = await reopened_reads(path, max_record_bytes=256)
    assert seen["oauth"] == b"small"
    assert seen[RT, "session"] is None
    assert seen[RT, I1] is None
    assert seen[RT, RUN, 2] == receipt(2)
    assert seen[OTHER, "session"] is None
    assert seen[OTHER, I2] == stored(I2)


async def test_a_record_of_exactly_max_record_bytes_is_accepted_and_reopens(tmp_path):
    path = tmp_path / "store"
    value = b"y" * 100
    limit = len(oauth_effect(value))
    async with crashed(path, max_record_bytes=limit) as store:
        await store.persist_auth_oauth_flow_snapshot(value)
        with pytest.raises(ma.WriteFailed, match=f"would be {limit + 1} bytes"):
            await store.persist_auth_oauth_flow_snapshot(value + b"y")
    async with crashed(path, max_record_bytes=limit) as store:
        assert await store.load_auth_oauth_flow_snapshot() == value


# --- arguments --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"path": 123}, TypeError, "path must be str, os.PathLike or None, got int"),
        ({"path": b"store"}, TypeError, "path must be str, os.PathLike or None, got bytes"),
        ({"checkpoint_bytes": 0}, ValueError, "checkpoint_bytes must be at least 1, got 0"),
        ({"checkpoint_bytes": 1.5}, TypeError, "checkpoint_bytes must be int, got float"),
        ({"max_record_bytes": -1}, ValueError, "max_record_bytes must be at least 1, got -1"),
        ({"max_record_bytes": 0}, ValueError, "max_record_bytes must be at least 1, got 0"),
        ({"max_record_bytes": True}, TypeError, "max_record_bytes must be int, got bool"),
        (
            {"max_record_bytes": 2**32},
            ValueError,
            "max_record_bytes must be at most 2**32-1 (the format's length field), got 4294967296",
        ),
        (
            {"max_record_bytes": 2**64},
            ValueError,
            f"max_record_bytes must be at most 2**32-1 (the format's length field), got {2**64}",
        ),
    ],
)
async def test_bad_arguments_to_open_store(tmp_path, kwargs, error, message):
    kwargs = {"path": tmp_path / "store", **kwargs}
    with pytest.raises(error) as info:
        async with ma.open_store(**kwargs):
            pytest.fail("opened")
    assert str(info.value) == message
    assert not (tmp_path / "store").exists()


async def test_the_largest_max_record_bytes_the_format_can_hold_is_accepted(tmp_path):
    path = tmp_path / "store"
    async with crashed(path, max_record_bytes=2**32 - 1) as store:
        await store.persist_auth_oauth_flow_snapshot(b"z")
    assert await reopened_reads(path, max_record_bytes=2**32 - 1) == await expected_after(
        oauth_write(b"z")
    )


class _NoSnapshots(FileIO):
    """Every snapshot fails to be created, as on a disk too full for one."""

    def __init__(self) -> None:
        self.snapshot_attempts = 0

    def create(self, path: str) -> Handle:
        if path.endswith(".snap.tmp"):
            self.snapshot_attempts += 1
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return super().create(path)


async def test_a_failing_checkpoint_is_not_retried_after_every_commit(tmp_path):
    # Each retry would rotate to a new 1 MiB segment and re-encode the state:
    # after a failure, the size policy waits for another checkpoint_bytes.
    io = _NoSnapshots()
    path = tmp_path / "store"
    async with ma.open_store(path, _io=io, checkpoint_bytes=4096) as store:
        for _ in range(200):  # ~25 KiB of records: six times the policy's size
            await store.persist_auth_oauth_flow_snapshot(os.urandom(100))
        assert await store.load_auth_oauth_flow_snapshot() is not None
    segments = [name for name in os.listdir(path) if name.startswith("log-")]
    assert io.snapshot_attempts <= 5
    assert len(segments) <= 5


async def test_a_newer_format_store_is_refused_before_anything_changes(tmp_path):
    path = tmp_path / "store"
    path.mkdir(mode=0o700)
    head = struct.pack(">8sI", b"MKRTSTOR", 4)
    (path / "FORMAT").write_bytes(head + struct.pack(">I", zlib.crc32(head)))
    in_progress = path / f"snapshot-{7:020d}.snap.tmp"
    in_progress.write_bytes(b"a newer writer's file")
    before = sorted(os.listdir(path))
    with pytest.raises(ma.UnsupportedFormat, match="format version 4"):
        async with ma.open_store(path):
            pass  # pragma: no cover
    assert in_progress.exists()
    assert sorted(os.listdir(path)) == before


# --- retention: removed bytes leave the disk (SPEC §3b) ------------------------------------

MARK_SESSION = "marker-session-7f3a"
MARK_INPUT = "marker-input-2c9d"
MARK_OPS = "marker-ops-88e1"
MARK_RETIRED = "marker-retired-51b0"
MARKERS = (MARK_SESSION, MARK_INPUT, MARK_OPS, MARK_RETIRED)


def consumed_with(input_id: ma.InputId, payload: str) -> ma.StoredInputState:
    """A consumed input state (terminal, with its outcome) holding `payload`."""
    shell = _values.input_state(input_id, persisted_input={"text": payload})
    seed = ma.InputStateSeed(
        phase=PHASE.CONSUMED, terminal_outcome=ma.InputTerminalOutcome.consumed()
    )
    return ma.StoredInputState(shell, seed)


async def doomed_and_kept(store: Any) -> None:
    """Runtime OTHER holds a marker in each of its parts, then is destroyed;
    RT keeps a consumed input whose payload is a marker, and other things."""
    await store.atomic_apply(
        OTHER,
        session(SID2, note=MARK_SESSION),
        receipt(1),
        [consumed_with(I3, MARK_INPUT)],
        SID2,
    )
    await store.persist_ops_lifecycle(OTHER, ma.PersistedOpsSnapshot("e", {"m": MARK_OPS}))
    await store.commit_machine_lifecycle(OTHER, ma.machine_transition(RS.INITIALIZING, RS.IDLE), [])
    await store.commit_machine_lifecycle(OTHER, ma.machine_transition(RS.IDLE, RS.DESTROYED), [])
    await store.atomic_apply(RT, session(), receipt(2), [consumed_with(I1, MARK_RETIRED)], SID)
    await store.persist_input_state(RT, stored(I2, PHASE.QUEUED))


async def purge_and_retire(store: Any) -> None:
    await store.purge_runtime(OTHER)
    await store.retire_input_payloads(RT, [I1])


def holding(path: Path, marker: str) -> list[str]:
    """The files of the directory whose bytes contain `marker`."""
    return [name for name, data in files(path).items() if marker.encode() in data]


async def test_purged_and_retired_bytes_leave_the_disk_at_the_checkpoint(tmp_path):
    path = tmp_path / "store"
    async with crashed(path) as store:
        await doomed_and_kept(store)
        await store.checkpoint()
        await purge_and_retire(store)
        assert await store.list_runtimes() == [RT]
        # Until the next checkpoint the old snapshot and the log hold them.
        assert all(holding(path, marker) for marker in MARKERS)
        await store.checkpoint()
        # 6 + 2 records: one snapshot, an empty segment after it; the covered
        # segments and the older snapshot are gone, and every marker with them.
        assert sorted(os.listdir(path)) == store_files(snap(8), seg(9))
        assert [marker for marker in MARKERS if holding(path, marker)] == []
    assert await reopened_reads(path) == await expected_after(doomed_and_kept, purge_and_retire)
    async with crashed(path) as store:
        assert await store.list_runtimes() == [RT]
        retired = await store.load_input_state(RT, I1)
        assert retired is not None
        assert retired.state.persisted_input is None
        assert retired.seed.phase is PHASE.CONSUMED
        assert await store.load_boundary_receipts(OTHER) == []


async def test_a_purge_recovers_from_the_log_alone(tmp_path):
    path = tmp_path / "store"
    async with crashed(path) as store:
        await doomed_and_kept(store)
        await purge_and_retire(store)
    # No checkpoint ran: one segment holds everything, the purge included
    # (so the markers are still on disk: only a checkpoint drops them).
    assert sorted(os.listdir(path)) == store_files(seg(1))
    assert holding(path, MARK_SESSION) == [seg(1)]
    assert await reopened_reads(path) == await expected_after(doomed_and_kept, purge_and_retire)
    async with crashed(path) as store:
        assert await store.list_runtimes() == [RT]
        assert await store.load_session_snapshot(OTHER) is None
        assert await store.load_runtime_state(OTHER) is None
        assert await store.load_ops_lifecycle(OTHER) is None
        assert await store.load_input_states(OTHER) == []
        assert await store.load_boundary_receipt(OTHER, RUN, 1) is None
        # A purged runtime reads as never written: it can start over.
        await store.commit_session_snapshot(OTHER, session(SID2))
    async with crashed(path) as store:
        assert await store.list_runtimes() == [RT, OTHER]
        assert await store.load_runtime_state(OTHER) is None
