"""Byte-level tests of `meerkat_actor._format`: bytes in, values out, no I/O.

Expected bytes are built here by hand (`struct` and `zlib`), following the
byte tables of the module banner, so a test checks the layout rather than
the module agreeing with itself. Every validity condition has a test that
breaks exactly that condition; decoding failures must be `FormatError`s with
the byte offset the banner promises.

The scanner's tests (`scan_segment`, `later_write`) walk hand-built segments.
The last section is the one that touches files: it writes small damaged
stores and checks, case by case, that recovery (`open_store`) and `verify`
give the verdict docs/format.md's rules give.
"""

from __future__ import annotations

import dataclasses
import os
import struct
import time
import tracemalloc
import uuid
import zlib
from functools import partial
from pathlib import Path
from typing import Any

import _values
import cbor2
import pytest
from _values import I1, I2, RT
from hypothesis import given, settings
from hypothesis import strategies as st

import meerkat_actor as ma
from meerkat_actor import _core
from meerkat_actor import _format as fmt
from meerkat_actor._codec import to_plain
from meerkat_actor._durable import DurableLog
from meerkat_actor._fs import FileIO
from meerkat_actor._packed import PackedInput, PackedReceipt
from meerkat_actor._verifier import verify_store
from meerkat_actor.testing import strategies as ms

OTHER = ma.LogicalRuntimeId("runtime-é")  # not ASCII: UTF-8 in the CBOR
BIG = 1 << 30  # a max_record that never gets in the way
GIB = 1 << 30
FRAME = 24  # the record frame header, per the banner's table
VERSION = 3  # the format version this build writes
NEWER = 4  # a version this build does not read


# --- hand-built bytes ------------------------------------------------------------------


def crc(data: bytes) -> bytes:
    return struct.pack(">I", zlib.crc32(data))


def format_file(version: int = VERSION, magic: bytes = b"MKRTSTOR") -> bytes:
    head = magic + struct.pack(">I", version)
    return head + crc(head)


def segment_header(
    first_lsn: int,
    version: int = VERSION,
    magic: bytes = b"MKRTLOG\0",
    reserved: tuple[int, int] = (0, 0),
) -> bytes:
    head = magic + struct.pack(">IIQI", version, reserved[0], first_lsn, reserved[1])
    return head + crc(head)


def frame(
    lsn: int, payload: bytes, write_lsn: int | None = None, length: int | None = None
) -> bytes:
    """A record: LSN u64, write LSN u64, length u32, CRC-32 of the 20 bytes
    before it and the payload, then the payload."""
    head = struct.pack(
        ">QQI",
        lsn,
        lsn if write_lsn is None else write_lsn,
        len(payload) if length is None else length,
    )
    return head + crc(head + payload) + payload


def effects_frame(lsn: int, plain: Any) -> bytes:
    return frame(lsn, cbor2.dumps(plain))


def snapshot_file(
    lsn: int,
    body: bytes,
    *,
    version: int = VERSION,
    magic: bytes = b"MKRTSNAP",
    length: int | None = None,
    body_crc: int | None = None,
    reserved: int = 0,
) -> bytes:
    head = magic + struct.pack(
        ">IIQQI",
        version,
        reserved,
        lsn,
        len(body) if length is None else length,
        zlib.crc32(body) if body_crc is None else body_crc,
    )
    return head + crc(head) + body


def body_of(oauth: bytes | None = None, runtimes: list[Any] | None = None) -> bytes:
    """A version 1 or 2 snapshot body: one CBOR map."""
    return cbor2.dumps({"oauth": oauth, "runtimes": runtimes or []})


def chunk(item: Any) -> bytes:
    """One chunk of a version 3 snapshot body: a u32 length, then the CBOR."""
    data = item if isinstance(item, bytes) else cbor2.dumps(item)
    return struct.pack(">I", len(data)) + data


def chunks_of(body: bytes) -> list[Any]:
    """The decoded chunks of a version 3 snapshot body (split here by hand)."""
    items, at = [], 0
    while at < len(body):
        (length,) = struct.unpack_from(">I", body, at)
        items.append(cbor2.loads(body[at + 4 : at + 4 + length]))
        at += 4 + length
    assert at == len(body)
    return items


def flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


# Every field other than its default, so that the codec has to carry it.
stored = partial(_values.stored, attempts=2)
receipt = partial(
    _values.receipt,
    boundary=ma.RunApplyBoundary.RUN_CHECKPOINT,
    contributing_input_ids=(I1, I2),
    conversation_digest="digest",
    message_count=3,
)


OPS = ma.PersistedOpsSnapshot(
    "epoch-1", {"a": [1, 2.5, None, True]}, ["spec"], {"done": {}}, {"cursor": "c"}
)

#: One of every effect of format version 1, with edge values (u64 sequences,
#: non-ASCII runtime id).
V1_EFFECTS: tuple[_core.Effect, ...] = (
    _core.SetOAuthFlowSnapshot(b"\x00pkce\xff"),
    _core.SetSessionSnapshot(RT, b'{"id": "x"}'),
    _core.InsertReceipt(RT, receipt(2**63)),
    _core.InsertReceipt(OTHER, receipt(2**64 - 1)),
    _core.PutInputStates(RT, (stored(I1), stored(I2, ma.InputLifecycleState.CONSUMED))),
    _core.SetRuntimeState(OTHER, ma.RuntimeState.RETIRED),
    _core.SetOpsSnapshot(RT, OPS),
)
#: The effects format version 2 added (SPEC §3b).
V2_EFFECTS: tuple[_core.Effect, ...] = (
    _core.RemoveSessionSnapshot(RT),
    _core.RemoveOpsSnapshot(OTHER),
    _core.RemoveRuntime(OTHER),
)
EVERY_EFFECT = (*V1_EFFECTS, *V2_EFFECTS)


def decode_payload(plain: Any, version: int = VERSION) -> tuple[_core.Effect, ...]:
    """Decode a record whose payload is `cbor2.dumps(plain)`, at offset 0,
    as a record of a segment of `version`."""
    return fmt.decode_effects(fmt.read_frame(effects_frame(1, plain), 0, BIG), version=version)


def decode_raw_payload(
    payload: bytes, offset: int = 0, version: int = VERSION
) -> tuple[_core.Effect, ...]:
    data = b"\xaa" * offset + frame(1, payload)
    return fmt.decode_effects(fmt.read_frame(data, offset, BIG), version=version)


def old_plain(effect: _core.Effect) -> dict[str, Any]:
    """The plain form of `effect` in a version 1 or 2 record (built here by
    hand where it differs from version 3: inputs and receipts as plain maps)."""
    match effect:
        case _core.InsertReceipt(runtime_id, packed):
            return {
                "op": "receipt",
                "runtime": runtime_id.value,
                "receipt": to_plain(packed.unpack()),
            }
        case _core.PutInputStates(runtime_id, states):
            return {
                "op": "inputs",
                "runtime": runtime_id.value,
                "states": [to_plain(packed.unpack()) for packed in states],
            }
    [plain] = cbor2.loads(fmt.encode_payload((effect,)))
    return plain


# --- the FORMAT file -------------------------------------------------------------------


def test_format_file_layout():
    data = fmt.encode_format_file()
    assert data == b"MKRTSTOR\x00\x00\x00\x03" + crc(b"MKRTSTOR\x00\x00\x00\x03")
    assert len(data) == 16
    assert fmt.decode_format_file(data) == fmt.FORMAT_VERSION == 3
    assert fmt.encode_format_file(1) == format_file(1)
    assert fmt.encode_format_file(2) == format_file(2)


@pytest.mark.parametrize("version", [1, 2, 3, 4, 2**32 - 1])
def test_format_file_reports_any_later_version_for_the_caller_to_judge(version):
    assert fmt.decode_format_file(format_file(version)) == version


@pytest.mark.parametrize(
    ("data", "offset", "message"),
    [
        (b"", 0, "FORMAT file is 0 bytes, expected 16"),
        (format_file()[:15], 0, "FORMAT file is 15 bytes, expected 16"),
        (format_file() + b"\0", 0, "FORMAT file is 17 bytes, expected 16"),
        (format_file(magic=b"MKRTSTOX"), 0, "FORMAT file has the wrong magic"),
        (format_file()[:12] + b"\0\0\0\0", 12, "FORMAT file checksum mismatch"),
        (format_file(0), 8, "FORMAT file names version 0; versions start at 1"),
    ],
)
def test_format_file_validity(data, offset, message):
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_format_file(data)
    assert str(info.value) == message
    assert info.value.offset == offset


def test_every_bit_flip_of_the_format_file_is_detected():
    data = fmt.encode_format_file()
    for bit in range(len(data) * 8):
        with pytest.raises(fmt.FormatError) as info:
            fmt.decode_format_file(flip(data, bit))
        assert info.value.offset == (0 if bit < 64 else 12), bit


# --- file names --------------------------------------------------------------------------


def test_file_names_have_twenty_digits():
    assert fmt.segment_name(1) == "log-00000000000000000001.log"
    assert fmt.snapshot_name(2**64 - 1) == "snapshot-18446744073709551615.snap"
    for n in (0, 1, 12345, 2**63, 2**64 - 1):
        assert fmt.parse_name(fmt.segment_name(n), "log-", ".log") == n
        assert fmt.parse_name(fmt.snapshot_name(n), "snapshot-", ".snap") == n


@pytest.mark.parametrize(
    "name",
    [
        "log-0000000000000000001.log",  # 19 digits
        "log-000000000000000000001.log",  # 21 digits
        "log-+0000000000000000001.log",
        "log- 0000000000000000001.log",
        "log-0000000000000000000x.log",
        "log-00000000000000000001.log.tmp",
        "log-00000000000000000001.snap",
        "snapshot-00000000000000000001.log",
        "LOG-00000000000000000001.log",
        "FORMAT",
        "LOCK",
    ],
)
def test_parse_name_rejects_other_names(name):
    assert fmt.parse_name(name, "log-", ".log") is None


@pytest.mark.parametrize("digit", ["\u0661", "\u00b2", "\uff11"])
def test_parse_name_accepts_only_ascii_digits(digit):
    # Arabic-Indic, superscript and full-width digits pass str.isdigit().
    assert digit.isdigit()
    assert fmt.parse_name(f"log-{digit * 20}.log", "log-", ".log") is None
    assert fmt.parse_name(f"log-{'0' * 19}{digit}.log", "log-", ".log") is None


def test_parse_snapshot_name_is_the_inverse_of_snapshot_name():
    for n in (0, 1, 17, 2**63, 2**64 - 1):
        assert fmt.parse_snapshot_name(fmt.snapshot_name(n)) == n
    for name in (
        fmt.segment_name(17),
        fmt.snapshot_name(17) + ".tmp",
        "snapshot-17.snap",
        "FORMAT",
        "LOCK",
    ):
        assert fmt.parse_snapshot_name(name) is None, name


def test_newest_snapshot_is_the_highest_lsn():
    names = [
        "FORMAT",
        "LOCK",
        fmt.snapshot_name(9),
        fmt.segment_name(2**64 - 1),  # a higher number, but a segment
        fmt.snapshot_name(10) + ".tmp",  # a snapshot never finished
        fmt.snapshot_name(8),
    ]
    assert fmt.newest_snapshot(names) == (9, "snapshot-00000000000000000009.snap")
    assert fmt.newest_snapshot(reversed(names)) == (9, fmt.snapshot_name(9))
    assert fmt.newest_snapshot([fmt.snapshot_name(2**64 - 1), fmt.snapshot_name(2**63)]) == (
        2**64 - 1,
        fmt.snapshot_name(2**64 - 1),
    )
    assert fmt.newest_snapshot(["FORMAT", fmt.segment_name(1)]) is None
    assert fmt.newest_snapshot([]) is None


# --- segment headers -----------------------------------------------------------------------


@pytest.mark.parametrize("first_lsn", [1, 2, 2**63, 2**64 - 1])
def test_segment_header_layout(first_lsn):
    data = fmt.encode_segment_header(first_lsn)
    assert data == segment_header(first_lsn)
    assert len(data) == fmt.SEGMENT_HEADER == 32
    assert data[:8] == b"MKRTLOG\0"
    assert data[8:12] == b"\0\0\0\3"
    assert data[12:16] == data[24:28] == b"\0\0\0\0"
    assert int.from_bytes(data[16:24], "big") == first_lsn
    assert fmt.decode_segment_header(data) == fmt.SegmentHeader(first_lsn, 3)
    # Records may follow the header: only its 32 bytes are looked at.
    assert fmt.decode_segment_header(data + b"\xff" * 100) == fmt.SegmentHeader(first_lsn, 3)
    # Version 1 and 2 headers (stores written by earlier builds) read as such.
    for version in (1, 2):
        old = fmt.encode_segment_header(first_lsn, version)
        assert old == segment_header(first_lsn, version=version)
        assert fmt.decode_segment_header(old) == fmt.SegmentHeader(first_lsn, version)
        assert fmt.decode_segment_header(old, store_version=version) == fmt.SegmentHeader(
            first_lsn, version
        )


@pytest.mark.parametrize(
    ("data", "offset", "message"),
    [
        (b"", 0, "segment header is short (0 of 32 bytes)"),
        (segment_header(1)[:31], 0, "segment header is short (31 of 32 bytes)"),
        (segment_header(1, magic=b"MKRTLOGX"), 0, "segment has the wrong magic"),
        (segment_header(1)[:28] + b"\0\0\0\0", 28, "segment header checksum mismatch"),
        (
            segment_header(1, version=4),
            8,
            "segment format version 4, in a store of version 3 (this build reads 1 to 3)",
        ),
        (
            segment_header(1, version=0),
            8,
            "segment format version 0, in a store of version 3 (this build reads 1 to 3)",
        ),
        (segment_header(0), 16, "segment first LSN is 0"),
        (b"\0" * 32, 0, "segment has the wrong magic"),
        (segment_header(1, reserved=(1, 0)), 12, "segment header reserved fields are not zero"),
        (
            segment_header(1, reserved=(0, 2**31)),
            24,
            "segment header reserved fields are not zero",
        ),
        (
            segment_header(1, reserved=(7, 7)),
            12,
            "segment header reserved fields are not zero",
        ),
    ],
)
def test_segment_header_validity(data, offset, message):
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_segment_header(data)
    assert str(info.value) == message
    assert info.value.offset == offset


def test_every_bit_flip_of_a_segment_header_is_detected():
    data = segment_header(7)
    for bit in range(len(data) * 8):
        with pytest.raises(fmt.FormatError) as info:
            fmt.decode_segment_header(flip(data, bit))
        assert info.value.offset == (0 if bit < 64 else 28), bit


def test_every_truncation_of_a_segment_header_is_short():
    data = segment_header(7)
    for size in range(32):
        with pytest.raises(fmt.FormatError, match="segment header is short") as info:
            fmt.decode_segment_header(data[:size])
        assert info.value.offset == 0


# --- record frames ------------------------------------------------------------------------


def test_record_layout():
    effects = (_core.SetOAuthFlowSnapshot(b"token"),)
    data = fmt.encode_record(5, effects)
    payload = cbor2.dumps([{"op": "oauth", "snapshot": b"token"}])
    assert fmt.encode_payload(effects) == payload
    assert data == frame(5, payload)
    assert fmt.FRAME_HEADER == FRAME == 24
    assert int.from_bytes(data[0:8], "big") == 5
    assert int.from_bytes(data[8:16], "big") == 5  # its own write
    assert int.from_bytes(data[16:20], "big") == len(payload) == len(data) - 24
    assert data[20:24] == crc(data[:20] + payload)
    assert data[24:] == payload
    got = fmt.read_frame(data, 0, BIG)
    assert got == fmt.Frame(5, 5, payload, 0, len(data))


def test_a_record_names_the_write_it_belongs_to():
    effects = (_core.SetOAuthFlowSnapshot(b"token"),)
    payload = fmt.encode_payload(effects)
    data = fmt.encode_record(7, effects, write_lsn=5)
    assert data == frame(7, payload, write_lsn=5)
    assert int.from_bytes(data[8:16], "big") == 5
    assert fmt.read_frame(data, 0, BIG) == fmt.Frame(7, 5, payload, 0, len(data))


def test_frame_records_frames_one_write():
    payloads = [b"\x81\x01", b"\x82\x01\x02", b"\x83\x01\x02\x03"]
    data = fmt.frame_records(10, payloads)
    assert data == b"".join(frame(10 + n, p, write_lsn=10) for n, p in enumerate(payloads))
    offset, got = 0, []
    while offset < len(data):
        record = fmt.read_frame(data, offset, BIG)
        got.append((record.lsn, record.write_lsn, record.payload))
        offset = record.end
    assert got == [(10, 10, payloads[0]), (11, 10, payloads[1]), (12, 10, payloads[2])]
    # A write of one record is what encode_record makes.
    effects = (_core.SetRuntimeState(RT, ma.RuntimeState.IDLE),)
    assert fmt.frame_records(3, [fmt.encode_payload(effects)]) == fmt.encode_record(3, effects)
    assert fmt.frame_records(3, []) == b""


def test_zero_filled_bytes_are_never_a_valid_frame():
    # The CRC covers the header, so all-zero bytes cannot check out
    # (zlib.crc32(b"") == 0, but crc32 of twenty zero bytes is not).
    assert zlib.crc32(b"") == 0
    assert zlib.crc32(b"\0" * 20) != 0
    for size in (24, 25, 64, 4096):
        with pytest.raises(fmt.FormatError) as info:
            fmt.read_frame(b"\0" * size, 0, BIG)
        assert str(info.value) == "record length 0"
        assert info.value.offset == 0


def test_an_empty_payload_is_invalid_even_with_a_correct_crc():
    with pytest.raises(fmt.FormatError) as info:
        fmt.read_frame(b"x" * 3 + frame(1, b""), 3, 100)
    assert str(info.value) == "record length 0"
    assert info.value.offset == 3


def test_read_frame_at_an_offset():
    first = frame(1, b"\x81\x01")
    second = frame(2, b"\x82\x01\x02", write_lsn=1)
    data = b"H" * 32 + first + second
    got = fmt.read_frame(data, 32, BIG)
    assert got == fmt.Frame(1, 1, b"\x81\x01", 32, 32 + len(first))
    got = fmt.read_frame(data, got.end, BIG)
    assert got == fmt.Frame(2, 1, b"\x82\x01\x02", 32 + len(first), len(data))
    assert not hasattr(fmt, "iter_frames")


@pytest.mark.parametrize(
    ("lsn", "write_lsn"),
    [(5, 6), (5, 0), (1, 2), (0, 0), (2**64 - 2, 2**64 - 1)],
)
def test_a_write_lsn_outside_1_to_the_lsn_is_invalid(lsn, write_lsn):
    data = b"P" * 9 + frame(lsn, b"\x81\x01", write_lsn=write_lsn)
    for max_record in (BIG, 1):  # checked before the size limit
        with pytest.raises(fmt.FormatError) as info:
            fmt.read_frame(data, 9, max_record)
        assert type(info.value) is fmt.FormatError
        assert str(info.value) == f"record write LSN {write_lsn} is not in [1, LSN {lsn}]"
        assert info.value.offset == 9


@pytest.mark.parametrize(("lsn", "write_lsn"), [(5, 5), (5, 1), (5, 4), (2**64 - 1, 1)])
def test_a_write_lsn_from_1_to_the_lsn_is_valid(lsn, write_lsn):
    got = fmt.read_frame(frame(lsn, b"\x81\x01", write_lsn=write_lsn), 0, BIG)
    assert (got.lsn, got.write_lsn) == (lsn, write_lsn)


def test_record_length_limit_is_inclusive():
    payload = b"\x58\x1e" + b"x" * 30  # a 32-byte CBOR payload
    data = b"P" * 5 + frame(9, payload)
    assert fmt.read_frame(data, 5, 32).payload == payload
    with pytest.raises(fmt.RecordTooLarge) as info:
        fmt.read_frame(data, 5, 31)
    assert isinstance(info.value, fmt.FormatError)
    assert str(info.value) == (
        "record of 32 bytes is over max_record_bytes=31; open the store with a larger"
        " max_record_bytes"
    )
    assert info.value.offset == 5


@pytest.mark.parametrize(
    ("data", "message"),
    [
        pytest.param(frame(1, b"x" * 40)[:-1] + b"y", "record checksum mismatch", id="bad-crc"),
        pytest.param(frame(1, b"x" * 40)[:-1], "short record: 39 of 40 payload bytes", id="short"),
        pytest.param(
            frame(1, b"x" * 40, write_lsn=2),
            "record write LSN 2 is not in [1, LSN 1]",
            id="bad-write-lsn",
        ),
    ],
)
def test_only_a_whole_valid_record_is_too_large(data, message):
    # Torn or damaged bytes over the limit are damage, not RecordTooLarge.
    with pytest.raises(fmt.FormatError) as info:
        fmt.read_frame(data, 0, 10)
    assert type(info.value) is fmt.FormatError
    assert str(info.value) == message
    assert info.value.offset == 0


def test_a_declared_length_beyond_the_data_is_short_in_bounded_memory():
    # A header claiming 4 GiB - 1 of payload in 24 bytes, with a CRC of the
    # header alone: short, whatever the maximum, and nothing is allocated.
    data = frame(1, b"", length=2**32 - 1)
    assert len(data) == FRAME
    tracemalloc.start()
    try:
        for max_record in (1024, 2**32 - 1):
            with pytest.raises(fmt.FormatError) as info:
                fmt.read_frame(data, 0, max_record)
            assert str(info.value) == "short record: 0 of 4294967295 payload bytes"
            assert info.value.offset == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_every_truncation_of_a_record_is_detected():
    data = b"P" * 10 + fmt.encode_record(3, EVERY_EFFECT[:2])
    for end in range(10, len(data)):
        with pytest.raises(fmt.FormatError) as info:
            fmt.read_frame(data[:end], 10, BIG)
        assert info.value.offset == 10
        remaining = end - 10
        if remaining < FRAME:
            assert str(info.value) == f"short record header ({remaining} bytes)"
        else:
            assert str(info.value).startswith(f"short record: {remaining - FRAME} of ")


def test_every_bit_flip_of_a_record_is_detected():
    # The CRC covers LSN, write LSN, length and payload.
    record = fmt.encode_record(3, (_core.SetSessionSnapshot(RT, b"{}"),))
    data = b"P" * 7 + record + frame(4, b"\x01")
    for bit in range(7 * 8, (7 + len(record)) * 8):
        with pytest.raises(fmt.FormatError) as info:
            fmt.read_frame(flip(data, bit), 7, 4096)
        assert type(info.value) is fmt.FormatError, bit
        assert info.value.offset == 7, bit


# --- effects in record payloads -------------------------------------------------------------


@pytest.mark.parametrize("effect", EVERY_EFFECT, ids=lambda e: type(e).__name__)
def test_each_effect_round_trips(effect):
    data = fmt.encode_record(1, (effect,))
    assert fmt.decode_effects(fmt.read_frame(data, 0, BIG), version=3) == (effect,)


def test_a_record_keeps_its_effects_in_order():
    data = fmt.encode_record(2**64 - 1, EVERY_EFFECT)
    got = fmt.read_frame(data, 0, BIG)
    assert got.lsn == 2**64 - 1
    assert fmt.decode_effects(got, version=3) == EVERY_EFFECT
    backwards = tuple(reversed(EVERY_EFFECT))
    assert fmt.decode_effects(
        fmt.read_frame(fmt.encode_record(1, backwards), 0, BIG), version=3
    ) == (backwards)


def test_effects_are_plain_data_with_an_op_key():
    payload = cbor2.loads(fmt.read_frame(fmt.encode_record(1, EVERY_EFFECT), 0, BIG).payload)
    assert [item["op"] for item in payload] == [
        "oauth",
        "session",
        "receipt",
        "receipt",
        "inputs",
        "runtime_state",
        "ops",
        "remove_session",
        "remove_ops",
        "remove_runtime",
    ]
    assert payload[0] == {"op": "oauth", "snapshot": b"\x00pkce\xff"}
    assert payload[1] == {"op": "session", "runtime": "runtime-a", "snapshot": b'{"id": "x"}'}
    # Version 3: a receipt is its key (run id's 16 bytes, then the sequence
    # as 8 big-endian bytes) and the CBOR of its plain form.
    r = receipt(2**63)
    assert payload[2] == {
        "op": "receipt",
        "runtime": "runtime-a",
        "key": r.run_id.value.bytes + b"\x80" + bytes(7),
        "receipt": cbor2.dumps(to_plain(r)),
    }
    assert cbor2.loads(payload[2]["receipt"]) == to_plain(r)
    assert payload[3]["key"] == r.run_id.value.bytes + b"\xff" * 8
    assert payload[3]["runtime"] == "runtime-é"
    # Input states: the ids (16 bytes each) beside the CBOR of each state.
    states = (stored(I1), stored(I2, ma.InputLifecycleState.CONSUMED))
    assert payload[4] == {
        "op": "inputs",
        "runtime": "runtime-a",
        "ids": [I1.value.bytes, I2.value.bytes],
        "states": [cbor2.dumps(to_plain(s)) for s in states],
    }
    assert [cbor2.loads(blob) for blob in payload[4]["states"]] == [to_plain(s) for s in states]
    assert payload[5] == {"op": "runtime_state", "runtime": "runtime-é", "state": "retired"}
    assert payload[7:] == [
        {"op": "remove_session", "runtime": "runtime-a"},
        {"op": "remove_ops", "runtime": "runtime-é"},
        {"op": "remove_runtime", "runtime": "runtime-é"},
    ]


@pytest.mark.parametrize(
    ("effect", "encoded"),
    [
        (
            _core.RemoveSessionSnapshot(ma.LogicalRuntimeId("rt")),
            # map(2): "op": "remove_session", "runtime": "rt"
            b"\xa2\x62op\x6eremove_session\x67runtime\x62rt",
        ),
        (
            _core.RemoveOpsSnapshot(ma.LogicalRuntimeId("rt")),
            b"\xa2\x62op\x6aremove_ops\x67runtime\x62rt",
        ),
        (
            _core.RemoveRuntime(ma.LogicalRuntimeId("rt")),
            b"\xa2\x62op\x6eremove_runtime\x67runtime\x62rt",
        ),
    ],
    ids=lambda v: type(v).__name__,
)
def test_the_version_2_effects_byte_for_byte(effect, encoded):
    # docs/format.md section 7: a one-effect payload is array(1) + the map.
    payload = b"\x81" + encoded
    assert fmt.encode_payload((effect,)) == payload
    assert decode_raw_payload(payload) == (effect,)


@pytest.mark.parametrize("effect", V2_EFFECTS, ids=lambda e: type(e).__name__)
def test_a_version_2_effect_in_a_version_1_segment_is_damage(effect):
    data = b"P" * 3 + fmt.encode_record(1, (V1_EFFECTS[1], effect))
    got = fmt.read_frame(data, 3, BIG)
    assert fmt.decode_effects(got, version=2) == (V1_EFFECTS[1], effect)
    op = cbor2.loads(fmt.encode_payload((effect,)))[0]["op"]
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_effects(got, version=1)
    assert str(info.value) == (
        f"record payload: effect op {op!r} is format version 2, in a version 1 segment"
    )
    assert (info.value.offset, info.value.rule) == (3 + FRAME, "7")


def test_version_1_effects_read_in_a_version_1_segment():
    # Their version 1 and 2 shapes (inputs and receipts as plain maps), as a
    # version 1 or 2 writer wrote them: held packed once decoded.
    plain = [old_plain(effect) for effect in V1_EFFECTS]
    assert plain[2]["receipt"] == to_plain(receipt(2**63))
    assert plain[4]["states"][0] == to_plain(stored(I1))
    for version in (1, 2):
        assert decode_payload(plain, version=version) == V1_EFFECTS
    got = decode_payload(plain, version=2)
    assert got[2].receipt == PackedReceipt.of(receipt(2**63))
    assert got[4].states[0] == PackedInput.of(stored(I1))


def test_the_version_2_effects_read_in_a_version_2_segment_in_their_one_shape():
    plain = [old_plain(effect) for effect in EVERY_EFFECT]
    assert decode_payload(plain, version=2) == EVERY_EFFECT
    # The shapes version 3 did not change are the same bytes in both.
    for effect, item in zip(EVERY_EFFECT, plain, strict=True):
        if not isinstance(effect, _core.InsertReceipt | _core.PutInputStates):
            assert cbor2.dumps([item]) == fmt.encode_payload((effect,))


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("index", [2, 4], ids=["receipt", "inputs"])
def test_a_version_3_shape_in_an_older_segment_is_damage_and_the_other_way_round(version, index):
    effect = V1_EFFECTS[index]
    new = cbor2.loads(fmt.encode_payload((effect,)))
    with pytest.raises(fmt.FormatError) as info:
        decode_payload(new, version=version)
    keys = "op, runtime, receipt" if index == 2 else "op, runtime, states"
    assert str(info.value).startswith(f"record payload: effect must be a map with keys {keys}")
    assert (info.value.offset, info.value.rule) == (FRAME, "7")
    old = [old_plain(effect)]
    assert decode_payload(old, version=version) == (effect,)
    with pytest.raises(fmt.FormatError) as info:
        decode_payload(old, version=3)
    keys = "op, runtime, key, receipt" if index == 2 else "op, runtime, ids, states"
    assert str(info.value).startswith(f"record payload: effect must be a map with keys {keys}")


def test_the_deepest_documents_the_types_allow_round_trip():
    deepest = nested(128, [])  # 129 nested arrays: the most `freeze` accepts
    with pytest.raises(ValueError, match="deeper than 128"):
        ma.PersistedOpsSnapshot("e", nested(129, []))
    ops = ma.PersistedOpsSnapshot("e", deepest, deepest, deepest, deepest)
    base = stored(I1)
    state = dataclasses.replace(base.state, policy=deepest, persisted_input=deepest)
    effects = (
        _core.SetOpsSnapshot(RT, ops),
        _core.PutInputStates(RT, (dataclasses.replace(base, state=state),)),
    )
    data = fmt.encode_record(1, effects)
    assert fmt.decode_effects(fmt.read_frame(data, 0, BIG), version=3) == effects
    store_state = _core.redo(_core.EMPTY, effects)
    assert fmt.decode_snapshot(fmt.encode_snapshot(1, store_state)) == (1, store_state)


def _effect_strategy() -> st.SearchStrategy[_core.Effect]:
    return st.one_of(
        st.builds(_core.SetOAuthFlowSnapshot, st.binary(max_size=64)),
        st.builds(_core.SetSessionSnapshot, ms.runtime_ids(), st.binary(max_size=64)),
        st.builds(_core.InsertReceipt, ms.runtime_ids(), ms.receipts()),
        st.builds(
            _core.PutInputStates,
            ms.runtime_ids(),
            st.lists(ms.stored_input_states(), min_size=1, max_size=3).map(tuple),
        ),
        st.builds(_core.SetRuntimeState, ms.runtime_ids(), ms.runtime_states()),
        st.builds(_core.SetOpsSnapshot, ms.runtime_ids(), ms.ops_snapshots()),
        st.builds(_core.RemoveSessionSnapshot, ms.runtime_ids()),
        st.builds(_core.RemoveOpsSnapshot, ms.runtime_ids()),
        st.builds(_core.RemoveRuntime, ms.runtime_ids()),
    )


#: The values' own codecs are property-tested in test_codec.py under the full
#: profile; these only check the framing around them, so 50 examples will do.
FRAMING_EXAMPLES = settings(max_examples=min(50, settings.default.max_examples))


@FRAMING_EXAMPLES
@given(
    lsn=st.integers(1, 2**64 - 1),
    effects=st.lists(_effect_strategy(), min_size=1, max_size=4).map(tuple),
)
def test_any_effects_round_trip(lsn, effects):
    data = fmt.encode_record(lsn, effects)
    got = fmt.read_frame(data, 0, len(data))
    assert got.lsn == got.write_lsn == lsn
    assert got.end == len(data)
    assert fmt.decode_effects(got, version=3) == effects


@FRAMING_EXAMPLES
@given(
    first_lsn=st.integers(1, 2**64 - 1),
    writes=st.lists(st.lists(_effect_strategy(), min_size=1, max_size=3).map(tuple), max_size=5),
)
def test_any_write_of_several_records_round_trips(first_lsn, writes):
    writes = writes[: 2**64 - first_lsn]  # LSNs stay u64
    data = fmt.frame_records(first_lsn, [fmt.encode_payload(effects) for effects in writes])
    offset = 0
    for n, effects in enumerate(writes):
        got = fmt.read_frame(data, offset, len(data))
        assert (got.lsn, got.write_lsn) == (first_lsn + n, first_lsn)
        assert fmt.decode_effects(got, version=3) == effects
        offset = got.end
    assert offset == len(data)


def _oauth(**extra: Any) -> dict[str, Any]:
    return {"op": "oauth", "snapshot": b"s", **extra}


SESSION = {"op": "session", "runtime": "rt", "snapshot": b"{}"}


@pytest.mark.parametrize(
    ("plain", "message"),
    [
        ({"op": "oauth", "snapshot": b"s"}, "record payload is not a non-empty array"),
        ([], "record payload is not a non-empty array"),
        (7, "record payload is not a non-empty array"),
        (b"\x80", "record payload is not a non-empty array"),
        ([None], "record payload: unknown effect op None"),
        ([[_oauth()]], "record payload: unknown effect op None"),
        ([{"snapshot": b"s"}], "record payload: unknown effect op None"),
        ([{"op": "delete_everything"}], "record payload: unknown effect op 'delete_everything'"),
        ([{"op": 1}], "record payload: unknown effect op 1"),
        ([{"op": "oauth"}], "record payload: effect must be a map with keys op, snapshot"),
        ([_oauth(extra=1)], "record payload: effect must be a map with keys op, snapshot"),
        ([{**SESSION, "runtime": 5}], "record payload: runtime id must be a string, got int"),
        ([{**SESSION, "runtime": ""}], "record payload: "),
        ([{**SESSION, "snapshot": "{}"}], "record payload: snapshot must be bytes, got str"),
        ([_oauth(), {"op": "session", "runtime": "rt"}], "record payload: effect must be a map"),
        (
            [{"op": "inputs", "runtime": "rt", "ids": [], "states": []}],
            "record payload: keys and values must be non-empty arrays of the same length",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "ids": [bytes(16)], "states": {}}],
            "record payload: keys and values must be non-empty arrays of the same length",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "ids": [bytes(16)], "states": [b"a", b"b"]}],
            "record payload: keys and values must be non-empty arrays of the same length",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "ids": {}, "states": [b"a"]}],
            "record payload: the keys must be an array",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "ids": [bytes(15)], "states": [b"a"]}],
            "record payload: each of the keys must be 16 bytes",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "ids": ["0" * 16], "states": [b"a"]}],
            "record payload: each of the keys must be 16 bytes",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "ids": [bytes(16)], "states": [b""]}],
            "record payload: a packed value must be non-empty bytes",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "ids": [bytes(16)], "states": [{}]}],
            "record payload: a packed value must be non-empty bytes, got dict",
        ),
        (
            [{"op": "inputs", "runtime": "rt", "states": [to_plain(stored(I1))]}],
            "record payload: effect must be a map with keys op, runtime, ids, states",
        ),
        (
            [{"op": "receipt", "runtime": "rt", "key": bytes(24), "receipt": {}}],
            "record payload: a packed value must be non-empty bytes, got dict",
        ),
        (
            [{"op": "receipt", "runtime": "rt", "key": bytes(16), "receipt": b"r"}],
            "record payload: each of key must be 24 bytes",
        ),
        (
            [{"op": "receipt", "runtime": "rt", "receipt": to_plain(receipt(1))}],
            "record payload: effect must be a map with keys op, runtime, key, receipt",
        ),
        ([{"op": "runtime_state", "runtime": "rt", "state": "asleep"}], "record payload: "),
        ([{"op": "ops", "runtime": "rt", "snapshot": {"epoch_id": 1}}], "record payload: "),
        ([{"op": "oauth", "snapshot": cbor2.undefined}], "record payload: snapshot must be"),
        ([{"op": "oauth", "snapshot": cbor2.CBORSimpleValue(16)}], "record payload: "),
        ([{"op": "oauth", "snapshot": float("nan")}], "record payload: snapshot must be"),
        ([{"op": "oauth", "snapshot": b"s", 1: 2}], "record payload: effect must be a map"),
        ([{"op": "remove_session"}], "record payload: effect must be a map with keys op, runtime"),
        (
            [{"op": "remove_ops", "runtime": "rt", "snapshot": None}],
            "record payload: effect must be a map with keys op, runtime",
        ),
        ([{"op": "remove_runtime", "runtime": 7}], "record payload: runtime id must be a string"),
        ([{"op": "remove_runtime", "runtime": b"rt"}], "record payload: runtime id must be a"),
        ([{"op": "remove_runtime", "runtime": ""}], "record payload: "),
        ([{"op": "Remove_Runtime", "runtime": "rt"}], "record payload: unknown effect op"),
    ],
)
def test_wrong_shapes_are_format_errors_at_the_payload(plain, message):
    with pytest.raises(fmt.FormatError) as info:
        decode_raw_payload(cbor2.dumps(plain), offset=5)
    assert str(info.value).startswith(message)
    assert info.value.offset == 5 + FRAME


@pytest.mark.parametrize(
    ("plain", "message"),
    [
        ([{"op": "inputs", "runtime": "rt", "states": []}], "record payload: inputs effect"),
        ([{"op": "inputs", "runtime": "rt", "states": {}}], "record payload: inputs effect"),
        ([{"op": "receipt", "runtime": "rt", "receipt": {}}], "record payload: "),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_wrong_version_1_and_2_shapes_are_format_errors_at_the_payload(plain, message, version):
    with pytest.raises(fmt.FormatError) as info:
        decode_raw_payload(cbor2.dumps(plain), offset=5, version=version)
    assert str(info.value).startswith(message)
    assert info.value.offset == 5 + FRAME


@pytest.mark.parametrize(
    ("sequence", "message"),
    [
        (-1, "^record payload: "),
        (2**64, "^invalid CBOR: "),  # a bignum: CBOR tag 2
    ],
)
def test_a_receipt_with_a_sequence_outside_u64_is_rejected(sequence, message):
    plain = to_plain(receipt(1))
    plain["sequence"] = sequence
    with pytest.raises(fmt.FormatError, match=message):
        decode_payload([{"op": "receipt", "runtime": "rt", "receipt": plain}], version=2)


@pytest.mark.parametrize(
    ("leaf", "message"),
    [
        (cbor2.undefined, "UndefinedType is not a JSON value"),
        (cbor2.CBORSimpleValue(16), "CBORSimpleValue is not a JSON value"),
        (float("nan"), "nan is not a JSON number"),
        (float("-inf"), "-inf is not a JSON number"),
        (-(2**63) - 1, "is outside [-2**63, 2**64-1]"),
    ],
)
def test_opaque_documents_refuse_what_json_cannot_hold(leaf, message):
    # docs/format.md section 6: simple values other than false, true and null
    # are damage, and documents hold only what JSON can.
    ops = to_plain(OPS)
    ops["authority_state"] = {"a": [leaf]}
    with pytest.raises(fmt.FormatError) as info:
        decode_payload([{"op": "ops", "runtime": "rt", "snapshot": ops}])
    assert str(info.value).startswith("record payload: ")
    assert message in str(info.value)


# --- hardened CBOR --------------------------------------------------------------------------

#: Tags cbor2 decodes itself (dates, bignums, decimals, rationals, regex,
#: MIME, UUID, sets, IP addresses, shared references, self-describe, ...)
#: and some it does not know: the format uses none of them.
TAGS = [0, 1, 2, 3, 4, 5, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 52, 54, 256]
TAGS += [258, 260, 261, 1004, 1040, 4000, 43000, 55799, 2**32, 2**64 - 1]


def tagged(tag: int) -> bytes:
    """The CBOR of a tag wrapping a value its built-in decoder would accept."""
    inner = {
        0: "2024-01-01T00:00:00Z",
        1: 1700000000,
        2: b"\x01\x00",
        3: b"\x01\x00",
        4: [-1, 15],
        5: [-1, 15],
        30: [1, 3],
        32: "http://example.com",
        35: "a+",
        36: "Content-Type: text/plain\r\n\r\nhi",
        37: b"\x00" * 16,
        52: b"\x7f\x00\x00\x01",
        54: b"\x00" * 16,
        258: [1, 2],
        260: b"\x7f\x00\x00\x01",
        261: {b"\x7f\x00\x00\x00": 8},
        28: [1],
        29: 0,
    }.get(tag, b"s")
    return cbor2.dumps(cbor2.CBORTag(tag, inner))


def _cbor_map(items: list[tuple[bytes, bytes]]) -> bytes:
    assert len(items) < 24
    return bytes([0xA0 + len(items)]) + b"".join(k + v for k, v in items)


def _text(value: str) -> bytes:
    return cbor2.dumps(value)


def test_cbor_helpers_are_sound():
    # The raw-byte builders below produce what cbor2 itself would.
    plain = _cbor_map([(_text("op"), _text("oauth")), (_text("snapshot"), cbor2.dumps(b"s"))])
    assert plain == cbor2.dumps(_oauth())
    assert decode_raw_payload(b"\x81" + plain) == (_core.SetOAuthFlowSnapshot(b"s"),)


@pytest.mark.parametrize("tag", TAGS)
def test_cbor_tags_are_rejected_at_top_level(tag):
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: ") as info:
        decode_raw_payload(tagged(tag), offset=3)
    assert info.value.offset == 3 + FRAME


@pytest.mark.parametrize("tag", TAGS)
def test_cbor_tags_are_rejected_inside_an_effect(tag):
    effect = _cbor_map([(_text("op"), _text("oauth")), (_text("snapshot"), tagged(tag))])
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: ") as info:
        decode_raw_payload(b"\x81" + effect)
    assert info.value.offset == FRAME


def test_a_tag_as_a_map_key_is_rejected():
    effect = _cbor_map([(tagged(1), _text("oauth"))])
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: "):
        decode_raw_payload(b"\x81" + effect)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x9f" + cbor2.dumps(_oauth()) + b"\xff", id="array"),
        pytest.param(
            b"\x81\xbf" + _text("op") + _text("oauth") + _text("snapshot") + b"\x41s\xff",
            id="map",
        ),
        pytest.param(
            b"\x81\xa2" + _text("op") + _text("oauth") + _text("snapshot") + b"\x5f\x41s\xff",
            id="bytes",
        ),
        pytest.param(
            b"\x81\xa2" + _text("op") + b"\x7f\x65oauth\xff" + _text("snapshot") + b"\x41s",
            id="text",
        ),
    ],
)
def test_indefinite_lengths_are_rejected(payload):
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: .*indefinite"):
        decode_raw_payload(payload)


def test_duplicate_map_keys_are_rejected():
    effect = _cbor_map(
        [
            (_text("op"), _text("oauth")),
            (_text("snapshot"), cbor2.dumps(b"a")),
            (_text("snapshot"), cbor2.dumps(b"b")),
        ]
    )
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: .*[Dd]uplicate"):
        decode_raw_payload(b"\x81" + effect)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\x81\xa2\x62op\x65oa\xffth\x68snapshot\x41s", id="invalid-utf8"),
        pytest.param(b"\xff", id="lone-break"),
        pytest.param(b"\x1c", id="reserved-additional-info"),
        pytest.param(b"\x81", id="truncated-array"),
        pytest.param(b"\x81\xa2", id="truncated-map"),
        pytest.param(b"\x81\xa1\x62op", id="truncated-value"),
    ],
)
def test_malformed_cbor_is_rejected(payload):
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: ") as info:
        decode_raw_payload(payload)
    assert info.value.offset == FRAME


def test_nesting_up_to_the_limit_decodes_and_beyond_it_is_rejected():
    # At MAX_DEPTH the CBOR layer accepts and the shape check refuses; one
    # more level and the decoder itself stops.
    with pytest.raises(fmt.FormatError, match=r"^record payload: unknown effect op None"):
        decode_payload(nested(fmt.MAX_DEPTH, 1))
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: .*depth") as info:
        decode_payload(nested(fmt.MAX_DEPTH + 1, 1))
    assert info.value.offset == FRAME


def test_very_deep_nesting_fails_fast():
    payload = b"\x81" * 100_000 + b"\x01"
    started = time.perf_counter()
    with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: .*depth"):
        decode_raw_payload(payload)
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"\x5b" + GIB.to_bytes(8, "big"), id="bytes-u64-length"),
        pytest.param(b"\x5a" + GIB.to_bytes(4, "big"), id="bytes-u32-length"),
        pytest.param(b"\x7b" + GIB.to_bytes(8, "big"), id="text-u64-length"),
        pytest.param(b"\x7a" + GIB.to_bytes(4, "big"), id="text-u32-length"),
        pytest.param(b"\x9b" + (1 << 40).to_bytes(8, "big"), id="array-2**40-items"),
        pytest.param(b"\xbb" + (1 << 40).to_bytes(8, "big"), id="map-2**40-pairs"),
    ],
)
@pytest.mark.parametrize("inside", [False, True], ids=["top", "in-effect"])
def test_huge_declared_lengths_fail_fast_in_bounded_memory(head, inside):
    if inside:
        payload = b"\x81\xa2" + _text("op") + _text("oauth") + _text("snapshot") + head + b"abc"
    else:
        payload = head + b"abc"
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: ") as info:
            decode_raw_payload(payload)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.offset == FRAME
    assert peak < 50 * 1024 * 1024
    assert time.perf_counter() - started < 1


@pytest.mark.parametrize(
    "extra",
    [b"\x00", b"\x00garbage", cbor2.dumps([_oauth()]), b"\xff"],
    ids=["zero", "garbage", "second-item", "break"],
)
def test_bytes_after_the_cbor_item_are_rejected(extra):
    item = cbor2.dumps([_oauth()])
    with pytest.raises(fmt.FormatError) as info:
        decode_raw_payload(item + extra, offset=3)
    assert str(info.value) == f"{len(extra)} bytes follow the CBOR item"
    assert info.value.offset == 3 + FRAME + len(item)
    body = body_of(b"o")
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_snapshot(snapshot_file(1, body + extra, version=2))
    assert str(info.value) == f"{len(extra)} bytes follow the CBOR item"
    assert info.value.offset == 40 + len(body)


@pytest.mark.parametrize(
    "extra",
    [b"\x00", b"\x00garbage", cbor2.dumps([_oauth()]), b"\xff"],
    ids=["zero", "garbage", "second-item", "break"],
)
def test_bytes_after_the_cbor_item_of_a_chunk_are_rejected(extra):
    # Version 3: inside a chunk (its length counts the extra bytes).
    item = cbor2.dumps(["oauth", b"o"])
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_snapshot(snapshot_file(1, chunk(item + extra)))
    assert str(info.value) == f"{len(extra)} bytes follow the CBOR item"
    assert info.value.offset == 44 + len(item)


# --- snapshots -------------------------------------------------------------------------------


def rich_state() -> _core.StoreState:
    effects = (
        *V1_EFFECTS,
        _core.SetSessionSnapshot(OTHER, b"other-session"),
        _core.InsertReceipt(RT, receipt(0)),
        _core.SetRuntimeState(RT, ma.RuntimeState.IDLE),
    )
    state = _core.redo(_core.EMPTY, effects)
    # A runtime that holds only an input state (no session, no receipts).
    return _core.redo(state, (_core.PutInputStates(ma.LogicalRuntimeId("z"), (stored(I2),)),))


def test_snapshot_layout():
    data = fmt.encode_snapshot(42, rich_state())
    body = data[40:]
    assert fmt.SNAPSHOT_HEADER == 40
    assert data[:8] == b"MKRTSNAP"
    assert data[8:12] == b"\0\0\0\3"
    assert data[12:16] == b"\0\0\0\0"
    assert int.from_bytes(data[16:24], "big") == 42
    assert int.from_bytes(data[24:32], "big") == len(body)
    assert data[32:36] == crc(body)
    assert data[36:40] == crc(data[:36])
    assert data == snapshot_file(42, body)
    # The body: chunks (u32 length, CBOR array). OAuth first; then each
    # runtime in id order, its inputs and receipts (key order) after it.
    received = sorted([receipt(0), receipt(2**63)], key=lambda r: r.sequence)
    assert chunks_of(body) == [
        ["oauth", b"\x00pkce\xff"],
        ["runtime", "runtime-a", b'{"id": "x"}', "idle", to_plain(OPS)],
        [
            "inputs",
            "runtime-a",
            [I1.value.bytes, I2.value.bytes],
            [
                cbor2.dumps(to_plain(stored(I1))),
                cbor2.dumps(to_plain(stored(I2, ma.InputLifecycleState.CONSUMED))),
            ],
        ],
        [
            "receipts",
            "runtime-a",
            [r.run_id.value.bytes + r.sequence.to_bytes(8, "big") for r in received],
            [cbor2.dumps(to_plain(r)) for r in received],
        ],
        ["runtime", "runtime-é", b"other-session", "retired", None],
        [
            "receipts",
            "runtime-é",
            [receipt(2**64 - 1).run_id.value.bytes + b"\xff" * 8],
            [cbor2.dumps(to_plain(receipt(2**64 - 1)))],
        ],
        ["runtime", "z", None, None, None],
        ["inputs", "z", [I2.value.bytes], [cbor2.dumps(to_plain(stored(I2)))]],
    ]
    # Built here by hand, chunk by chunk, the same bytes.
    assert body == b"".join(chunk(item) for item in chunks_of(body))


def test_a_snapshot_body_is_the_same_bytes_for_one_state():
    state = rich_state()
    # The same state built in the other order gives the same bytes.
    reversed_state = _core.redo(
        _core.EMPTY,
        tuple(
            reversed(
                fmt.decode_effects(
                    fmt.read_frame(fmt.encode_record(1, _core.state_effects(state)), 0, BIG),
                    version=3,
                )
            )
        ),
    )
    assert reversed_state == state
    assert fmt.encode_snapshot(9, reversed_state) == fmt.encode_snapshot(9, state)
    assert b"".join(fmt.snapshot_chunks(state)) == fmt.encode_snapshot(9, state)[40:]


def test_a_large_snapshot_body_is_split_into_chunks_of_about_chunk_bytes():
    big = b"x" * (fmt.CHUNK_BYTES // 3)
    effects = [_core.SetSessionSnapshot(RT, b"s")]
    ids = [ma.InputId(uuid.UUID(int=n)) for n in range(1, 8)]
    for input_id in ids:
        base = stored(input_id)
        state = dataclasses.replace(base.state, persisted_input={"blob": big.decode()})
        effects.append(_core.PutInputStates(RT, (dataclasses.replace(base, state=state),)))
    state = _core.redo(_core.EMPTY, tuple(effects))
    data = fmt.encode_snapshot(1, state)
    items = chunks_of(data[40:])
    assert [item[0] for item in items[:1]] == ["runtime"]
    inputs = items[1:]
    assert len(inputs) > 1
    assert all(item[:2] == ["inputs", RT.value] for item in inputs)
    assert [key for item in inputs for key in item[2]] == [i.value.bytes for i in ids]
    assert fmt.decode_snapshot(data) == (1, state)


@pytest.mark.parametrize("lsn", [0, 1, 2**64 - 1])
def test_snapshot_round_trips(lsn):
    for state in (_core.EMPTY, rich_state()):
        assert fmt.decode_snapshot(fmt.encode_snapshot(lsn, state)) == (lsn, state)


def test_version_1_and_2_snapshots_have_one_map_body_and_read_back():
    state = rich_state()
    v1, v2 = fmt.encode_snapshot(7, state, version=1), fmt.encode_snapshot(7, state, version=2)
    assert v1[8:12] == b"\0\0\0\1"
    assert v2[8:12] == b"\0\0\0\2"
    assert v1[40:] == v2[40:]
    assert v2 == snapshot_file(7, v1[40:], version=2)
    plain = cbor2.loads(v2[40:])
    assert set(plain) == {"oauth", "runtimes"}
    assert plain["oauth"] == b"\x00pkce\xff"
    assert sorted(r["runtime"] for r in plain["runtimes"]) == ["runtime-a", "runtime-é", "z"]
    [a] = [r for r in plain["runtimes"] if r["runtime"] == "runtime-a"]
    assert a["inputs"] == [
        to_plain(stored(I1)),
        to_plain(stored(I2, ma.InputLifecycleState.CONSUMED)),
    ]
    assert a["receipts"] == [to_plain(receipt(0)), to_plain(receipt(2**63))]
    for old, version in ((v1, 1), (v2, 2)):
        assert fmt.decode_snapshot(old) == (7, state)
        assert fmt.decode_snapshot(old, store_version=version) == (7, state)
        assert fmt.read_snapshot(fmt.BytesReader(old), 7, version) == state
    # A snapshot newer than the store's FORMAT file breaks rule S1.
    new = fmt.encode_snapshot(7, state)
    for old, version in ((v2, 1), (new, 1), (new, 2)):
        with pytest.raises(fmt.FormatError) as info:
            fmt.decode_snapshot(old, store_version=version)
        assert (info.value.offset, info.value.rule) == (8, "S1")


@FRAMING_EXAMPLES
@given(effects=st.lists(_effect_strategy(), max_size=8).map(tuple))
def test_any_state_round_trips_through_a_snapshot(effects):
    state = _core.redo(_core.EMPTY, effects)
    assert fmt.decode_snapshot(fmt.encode_snapshot(3, state)) == (3, state)


def test_the_empty_state_snapshot_body():
    # Version 3: no chunk at all.
    data = fmt.encode_snapshot(0, _core.EMPTY)
    assert data == snapshot_file(0, b"")
    assert fmt.decode_snapshot(data) == (0, _core.EMPTY)
    old = fmt.encode_snapshot(0, _core.EMPTY, version=2)
    assert cbor2.loads(old[40:]) == {"oauth": None, "runtimes": []}


GOOD_BODY = chunk(["oauth", b"o"])


@pytest.mark.parametrize(
    ("data", "offset", "message"),
    [
        (b"", 0, "snapshot header is short (0 of 40 bytes)"),
        (snapshot_file(1, GOOD_BODY)[:39], 0, "snapshot header is short (39 of 40 bytes)"),
        (snapshot_file(1, GOOD_BODY, magic=b"MKRTSNAX"), 0, "snapshot has the wrong magic"),
        (
            snapshot_file(1, GOOD_BODY)[:36] + b"\0\0\0\0" + GOOD_BODY,
            36,
            "snapshot header checksum mismatch",
        ),
        (
            snapshot_file(1, GOOD_BODY, version=4),
            8,
            "snapshot format version 4, in a store of version 3 (this build reads 1 to 3)",
        ),
        (
            snapshot_file(1, GOOD_BODY, version=0),
            8,
            "snapshot format version 0, in a store of version 3 (this build reads 1 to 3)",
        ),
        (
            snapshot_file(1, GOOD_BODY, reserved=1),
            12,
            "snapshot header reserved field is not zero",
        ),
        (
            snapshot_file(1, GOOD_BODY, reserved=2**32 - 1, body_crc=0),
            12,
            "snapshot header reserved field is not zero",
        ),
        (
            snapshot_file(1, GOOD_BODY)[:-1],
            24,
            f"snapshot body is {len(GOOD_BODY) - 1} bytes, header says {len(GOOD_BODY)}",
        ),
        (
            snapshot_file(1, GOOD_BODY) + b"\0",
            24,
            f"snapshot body is {len(GOOD_BODY) + 1} bytes, header says {len(GOOD_BODY)}",
        ),
        (
            snapshot_file(1, GOOD_BODY, length=2**63),
            24,
            f"snapshot body is {len(GOOD_BODY)} bytes, header says {2**63}",
        ),
        (snapshot_file(1, GOOD_BODY, body_crc=0), 40, "snapshot body checksum mismatch"),
    ],
)
def test_snapshot_validity(data, offset, message):
    assert fmt.decode_snapshot(snapshot_file(1, GOOD_BODY)) == (
        1,
        _core.StoreState(oauth_flow_snapshot=b"o"),
    )
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_snapshot(data)
    assert str(info.value) == message
    assert info.value.offset == offset


def test_every_bit_flip_of_a_snapshot_is_detected():
    data = fmt.encode_snapshot(5, _core.redo(_core.EMPTY, EVERY_EFFECT[:2]))
    for bit in range(len(data) * 8):
        with pytest.raises(fmt.FormatError) as info:
            fmt.decode_snapshot(flip(data, bit))
        if bit < 64:
            assert info.value.offset == 0, bit  # magic
        elif bit < 40 * 8:
            assert info.value.offset == 36, bit  # header CRC
        else:
            assert info.value.offset == 40, bit  # body CRC


RUNTIME_ENTRY = {
    "runtime": "rt",
    "session": None,
    "runtime_state": None,
    "ops": None,
    "inputs": [],
    "receipts": [],
}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "snapshot body: snapshot body must be a map with keys oauth, runtimes"),
        ({"oauth": None}, "snapshot body: snapshot body must be a map"),
        ({"oauth": None, "runtimes": [], "x": 1}, "snapshot body: snapshot body must be a map"),
        ({"oauth": "text", "runtimes": []}, "snapshot body: snapshot must be bytes, got str"),
        ({"oauth": None, "runtimes": {}}, "snapshot body: runtimes must be an array"),
        ({"oauth": None, "runtimes": [7]}, "snapshot body: runtime entry must be a map"),
        (
            {"oauth": None, "runtimes": [{**RUNTIME_ENTRY, "extra": 1}]},
            "snapshot body: runtime entry must be a map",
        ),
        (
            {"oauth": None, "runtimes": [RUNTIME_ENTRY, RUNTIME_ENTRY]},
            "snapshot body: runtime rt appears twice",
        ),
        (
            {"oauth": None, "runtimes": [{**RUNTIME_ENTRY, "inputs": {}}]},
            "snapshot body: inputs and receipts must be arrays",
        ),
        (
            {"oauth": None, "runtimes": [{**RUNTIME_ENTRY, "session": "s"}]},
            "snapshot body: snapshot must be bytes, got str",
        ),
        (
            {
                "oauth": None,
                "runtimes": [{**RUNTIME_ENTRY, "inputs": [to_plain(stored(I1))] * 2}],
            },
            "snapshot body: runtime rt holds a duplicate input id or receipt key",
        ),
        (
            {
                "oauth": None,
                "runtimes": [{**RUNTIME_ENTRY, "receipts": [to_plain(receipt(1))] * 2}],
            },
            "snapshot body: runtime rt holds a duplicate input id or receipt key",
        ),
        (
            {"oauth": None, "runtimes": [{**RUNTIME_ENTRY, "runtime_state": "asleep"}]},
            "snapshot body: ",
        ),
        ({"oauth": None, "runtimes": [{**RUNTIME_ENTRY, "runtime": ""}]}, "snapshot body: "),
    ],
)
def test_snapshot_bodies_of_the_wrong_shape(body, message):
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_snapshot(snapshot_file(1, cbor2.dumps(body), version=2))
    assert str(info.value).startswith(message)
    assert info.value.offset == 40


RUNTIME_CHUNK = ["runtime", "rt", None, None, None]
INPUTS_CHUNK = ["inputs", "rt", [bytes(16)], [b"state"]]
RECEIPTS_CHUNK = ["receipts", "rt", [bytes(24)], [b"receipt"]]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([{"oauth": None}], "snapshot chunk: a chunk must be a non-empty array"),
        ([[]], "snapshot chunk: a chunk must be a non-empty array"),
        ([["nope"]], "snapshot chunk: unknown chunk kind 'nope'"),
        ([["oauth", b"o"], ["oauth", b"o"]], "snapshot chunk: the oauth chunk must come once"),
        ([RUNTIME_CHUNK, ["oauth", b"o"]], "snapshot chunk: the oauth chunk must come once"),
        ([["oauth"]], "snapshot chunk: the oauth chunk must come once"),
        ([["oauth", "text"]], "snapshot chunk: snapshot must be bytes, got str"),
        ([RUNTIME_CHUNK[:4]], "snapshot chunk: a runtime chunk has 5 items"),
        ([RUNTIME_CHUNK, RUNTIME_CHUNK], "snapshot chunk: runtime rt appears twice"),
        ([["runtime", "", None, None, None]], "snapshot chunk: "),
        ([["runtime", "rt", "s", None, None]], "snapshot chunk: snapshot must be bytes, got str"),
        ([["runtime", "rt", None, "asleep", None]], "snapshot chunk: "),
        ([["runtime", "rt", None, None, {"epoch_id": 1}]], "snapshot chunk: "),
        ([INPUTS_CHUNK], "snapshot chunk: an inputs chunk names 'rt', not the runtime before it"),
        (
            [["runtime", "other", None, None, None], RECEIPTS_CHUNK],
            "snapshot chunk: an receipts chunk names 'rt', not the runtime before it",
        ),
        ([RUNTIME_CHUNK, INPUTS_CHUNK[:3]], "snapshot chunk: an inputs chunk has 4 items"),
        (
            [RUNTIME_CHUNK, ["inputs", "rt", [bytes(24)], [b"s"]]],
            "snapshot chunk: each of the keys must be 16 bytes",
        ),
        (
            [RUNTIME_CHUNK, ["receipts", "rt", [bytes(16)], [b"r"]]],
            "snapshot chunk: each of the keys must be 24 bytes",
        ),
        (
            [RUNTIME_CHUNK, ["inputs", "rt", [], []]],
            "snapshot chunk: keys and values must be non-empty arrays of the same length",
        ),
        (
            [RUNTIME_CHUNK, ["inputs", "rt", [bytes(16)], [b""]]],
            "snapshot chunk: a packed value must be non-empty bytes",
        ),
        (
            [RUNTIME_CHUNK, INPUTS_CHUNK, INPUTS_CHUNK],
            "snapshot chunk: runtime rt holds a key twice in its inputs",
        ),
        (
            [RUNTIME_CHUNK, ["receipts", "rt", [bytes(24)] * 2, [b"a", b"b"]]],
            "snapshot chunk: runtime rt holds a key twice in its receipts",
        ),
    ],
)
def test_version_3_snapshot_chunks_of_the_wrong_shape(items, message):
    parts = [chunk(item) for item in items]
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_snapshot(snapshot_file(1, b"".join(parts)))
    assert str(info.value).startswith(message)
    assert info.value.rule == "S3"
    # The offset is the start of the chunk at fault: the last one here.
    assert info.value.offset == 40 + sum(map(len, parts[:-1]))


@pytest.mark.parametrize(
    ("body", "offset", "message"),
    [
        (b"\0\0\0", 40, "snapshot body ends inside a chunk length"),
        (chunk(["oauth", b"o"]) + b"\0\0", 40 + 13, "snapshot body ends inside a chunk length"),
        (b"\0\0\0\0", 40, "snapshot chunk of 0 bytes does not fit the body"),
        (b"\0\0\0\x09" + cbor2.dumps(["oauth"]), 40, "snapshot chunk of 9 bytes does not fit"),
        (b"\xff\xff\xff\xff" + b"x" * 10, 40, "snapshot chunk of 4294967295 bytes does not fit"),
    ],
)
def test_version_3_snapshot_chunk_framing(body, offset, message):
    assert len(chunk(["oauth", b"o"])) == 13
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_snapshot(snapshot_file(1, body))
    assert str(info.value).startswith(message)
    assert (info.value.offset, info.value.rule) == (offset, "S3")


def test_a_version_3_snapshot_of_the_wrong_shape_with_a_bad_crc_is_a_checksum_mismatch():
    body = chunk(["nope"]) + chunk(["oauth", b"o"])
    with pytest.raises(fmt.FormatError) as info:
        fmt.decode_snapshot(snapshot_file(1, body, body_crc=zlib.crc32(body) ^ 1))
    assert (str(info.value), info.value.offset, info.value.rule) == (
        "snapshot body checksum mismatch",
        40,
        "S1",
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b"\xa2" + _text("oauth") + tagged(tag) + _text("runtimes") + b"\x80", id=str(tag)
        )
        for tag in (1, 35, 258, 55799, 4000)
    ]
    + [
        pytest.param(b"\xa2" + _text("oauth") + b"\x5b" + GIB.to_bytes(8, "big"), id="1GiB-bytes"),
        pytest.param(cbor2.dumps(nested(fmt.MAX_DEPTH + 1)), id="too-deep"),
        pytest.param(
            b"\xbf" + _text("oauth") + b"\xf6" + _text("runtimes") + b"\x80\xff", id="indef"
        ),
        pytest.param(b"\xa2" + _text("oauth") + b"\xf6" + _text("oauth") + b"\xf6", id="dup-key"),
    ],
)
def test_hostile_snapshot_bodies_are_rejected(body):
    tracemalloc.start()
    try:
        with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: ") as info:
            fmt.decode_snapshot(snapshot_file(1, body, version=2))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.offset == 40
    assert peak < 50 * 1024 * 1024


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(cbor2.dumps(["oauth"])[:-1] + tagged(tag), id=str(tag))
        for tag in (1, 35, 258, 55799, 4000)
    ]
    + [
        pytest.param(b"\x82" + _text("oauth") + b"\x5b" + GIB.to_bytes(8, "big"), id="1GiB-bytes"),
        pytest.param(cbor2.dumps(nested(fmt.MAX_DEPTH + 1)), id="too-deep"),
        pytest.param(b"\x9f" + _text("oauth") + b"\xf6\xff", id="indef"),
        pytest.param(
            b"\x82" + _text("oauth") + b"\xa2" + _text("a") + b"\xf6" + _text("a") + b"\xf6",
            id="dup-key",
        ),
    ],
)
def test_hostile_snapshot_chunks_are_rejected(body):
    tracemalloc.start()
    try:
        with pytest.raises(fmt.FormatError, match=r"^invalid CBOR: ") as info:
            fmt.decode_snapshot(snapshot_file(1, chunk(body)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.value.offset, info.value.rule) == (44, "S3")
    assert peak < 50 * 1024 * 1024


# --- the scanner ----------------------------------------------------------------------


def oauth(value: bytes) -> bytes:
    """A valid payload: one effect setting the OAuth snapshot."""
    return cbor2.dumps([{"op": "oauth", "snapshot": value}])


def records(first: int, count: int, *, write_of: dict[int, int] | None = None) -> list[bytes]:
    """Records `first` .. `first + count - 1`, each its own write unless
    `write_of` maps an LSN to its write LSN."""
    writes = write_of or {}
    return [
        frame(n, oauth(b"v%d" % n), write_lsn=writes.get(n)) for n in range(first, first + count)
    ]


def segment(first_lsn: int, parts: list[bytes], zeros: int = 4096) -> bytes:
    return segment_header(first_lsn) + b"".join(parts) + bytes(zeros)


class CountingReader:
    """A `Reader` over bytes that records the length of every read."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[int] = []

    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, length: int) -> bytes:
        self.reads.append(length)
        return self.data[offset : offset + length]


def scan(
    data: bytes, first_lsn: int = 1, max_record: int = BIG, decode_above: int = 0
) -> tuple[list[fmt.Record], fmt.End | fmt.Damage]:
    events = list(
        fmt.scan_segment(fmt.BytesReader(data), first_lsn, max_record, decode_above, version=3)
    )
    *found, last = events
    assert all(isinstance(e, fmt.Record) for e in found)
    assert isinstance(last, fmt.End | fmt.Damage)
    return [e for e in found if isinstance(e, fmt.Record)], last


def offsets(parts: list[bytes]) -> list[int]:
    """Where each part starts in a segment (after the 32-byte header)."""
    starts, at = [], 32
    for part in parts:
        starts.append(at)
        at += len(part)
    return starts


def test_scan_a_clean_segment_ends_at_the_zero_fill():
    parts = records(7, 3)
    found, end = scan(segment(7, parts), first_lsn=7)
    assert [r.frame.lsn for r in found] == [7, 8, 9]
    assert [r.effects for r in found] == [
        (_core.SetOAuthFlowSnapshot(b"v%d" % n),) for n in (7, 8, 9)
    ]
    assert end == fmt.End(32 + sum(map(len, parts)), 10)


def test_scan_a_header_only_segment_has_no_record():
    for data in (segment_header(5), segment(5, [])):
        assert scan(data, first_lsn=5) == ([], fmt.End(32, 5))


def test_scan_a_segment_filled_to_its_last_byte():
    parts = records(1, 2)
    data = segment_header(1) + b"".join(parts)
    assert scan(data)[1] == fmt.End(len(data), 3)


def test_scan_a_torn_tail_is_damage_with_nothing_later():
    # Cut short at the end of the file (rule 2), or inside the zero fill,
    # where the missing bytes read as zeros (rule 3).
    parts = records(1, 3)
    for zeros, rule in ((0, "2"), (4096, "3")):
        data = segment(1, [*parts[:2], parts[2][:-5]], zeros)
        found, damage = scan(data)
        assert [r.frame.lsn for r in found] == [1, 2]
        assert isinstance(damage, fmt.Damage)
        assert (damage.offset, damage.expected, damage.error.rule) == (offsets(parts)[2], 3, rule)
        assert not damage.whole
        assert fmt.later_write(fmt.BytesReader(data), damage) is None


def test_scan_a_bad_crc_followed_by_good_records():
    parts = records(1, 5)
    data = bytearray(segment(1, parts))
    at = offsets(parts)[2]
    data[at + FRAME + 3] ^= 0x10  # a payload byte of record 3
    found, damage = scan(bytes(data))
    assert [r.frame.lsn for r in found] == [1, 2]
    assert isinstance(damage, fmt.Damage)
    assert (damage.offset, damage.expected, damage.error.rule) == (at, 3, "3")
    assert str(damage.error) == "record checksum mismatch"
    # Rule 9: record 4 is a later write (W = 4 > 3): evidence of damage.
    later = fmt.later_write(fmt.BytesReader(bytes(data)), damage)
    assert later is not None
    assert (later.lsn, later.write_lsn, later.offset) == (4, 4, offsets(parts)[3])


def test_later_write_steps_over_records_of_the_same_write_and_stale_copies():
    # Records 3, 4, 5 are one write; 3 is damaged; then a stale copy of LSN 2.
    parts = records(1, 5, write_of={4: 3, 5: 3})
    stale = frame(2, oauth(b"old"))
    data = bytearray(segment(1, [*parts, stale]))
    at = offsets(parts)[2]
    data[at + 30] ^= 1
    damage = scan(bytes(data))[1]
    assert isinstance(damage, fmt.Damage)
    assert fmt.later_write(fmt.BytesReader(bytes(data)), damage) is None
    # ... but a record of a later write after them is found, past the others.
    later_part = frame(6, oauth(b"later"))
    data = bytearray(segment(1, [*parts, stale, later_part]))
    data[at + 30] ^= 1
    later = fmt.later_write(fmt.BytesReader(bytes(data)), damage)
    assert later is not None
    assert (later.lsn, later.offset) == (6, offsets([*parts, stale, later_part])[6])


@pytest.mark.parametrize(
    ("lsn", "message"),
    [
        pytest.param(9, "record LSN 9, expected 3", id="gap"),
        pytest.param(2, "record LSN 2, expected 3", id="overlap"),
        pytest.param(3 + 2**32, f"record LSN {3 + 2**32}, expected 3", id="far"),
    ],
)
def test_scan_an_lsn_gap_or_overlap_breaks_rule_6(lsn, message):
    parts = [*records(1, 2), frame(lsn, oauth(b"x")), *records(4, 1)]
    data = segment(1, parts)
    found, damage = scan(data)
    assert [r.frame.lsn for r in found] == [1, 2]
    assert isinstance(damage, fmt.Damage)
    assert (damage.offset, damage.error.rule, str(damage.error)) == (
        offsets(parts)[2],
        "6",
        message,
    )
    assert not damage.whole
    later = fmt.later_write(fmt.BytesReader(data), damage)
    if lsn == 9:  # the misplaced record is itself a later write
        assert later is not None
        assert later.offset == offsets(parts)[2]
    else:  # record 4 is; LSN 3 + 2**32 is out of rule 9's window
        assert later is not None
        assert later.lsn == 4


def test_scan_a_record_beyond_the_maximum_is_whole_damage():
    parts = [*records(1, 1), frame(2, oauth(b"x" * 100)), *records(3, 1)]
    found, damage = scan(segment(1, parts), max_record=50)
    assert [r.frame.lsn for r in found] == [1]
    assert isinstance(damage, fmt.Damage)
    assert isinstance(damage.error, fmt.RecordTooLarge)
    assert (damage.offset, damage.error.rule) == (offsets(parts)[1], "5")
    assert damage.whole
    # A declared length beyond the file is a short record (rule 2), not too large.
    huge = [*records(1, 1), frame(2, b"", length=2**31)]
    damage = scan(segment(1, huge), max_record=50)[1]
    assert isinstance(damage, fmt.Damage)
    assert type(damage.error) is fmt.FormatError
    assert damage.error.rule == "2"
    assert not damage.whole


def test_scan_garbage_after_the_last_record_is_damage_not_the_end():
    parts = records(1, 2)
    data = segment(1, parts) + b"\x01" + bytes(100)
    found, damage = scan(data)
    assert [r.frame.lsn for r in found] == [1, 2]
    assert isinstance(damage, fmt.Damage)
    assert (damage.offset, damage.expected) == (32 + sum(map(len, parts)), 3)
    assert fmt.later_write(fmt.BytesReader(data), damage) is None
    # The same bytes, zero: the end of the records.
    assert scan(segment(1, parts) + bytes(101))[1] == fmt.End(32 + sum(map(len, parts)), 3)


def test_scan_decodes_payloads_only_above_decode_above():
    bad = frame(2, cbor2.dumps([{"op": "nope"}]))
    parts = [*records(1, 1), bad, *records(3, 1)]
    found, end = scan(segment(1, parts), decode_above=2)
    assert [(r.frame.lsn, r.effects is None) for r in found] == [(1, True), (2, True), (3, False)]
    assert isinstance(end, fmt.End)
    found, damage = scan(segment(1, parts), decode_above=1)
    assert isinstance(damage, fmt.Damage)
    assert (damage.offset, damage.error.rule, damage.error.offset) == (
        offsets(parts)[1],
        "7",
        offsets(parts)[1] + FRAME,
    )
    assert damage.whole


def test_scan_reads_no_more_at_once_than_a_record():
    # The scanner asks for headers and payloads, never the whole file, so a
    # reader that reads piece by piece bounds memory by the largest record
    # (the zero fill is checked a MiB at a time).
    parts = [frame(n, oauth(bytes(100 * n))) for n in range(1, 6)]
    reader = CountingReader(segment(1, parts, zeros=3 << 20))
    events = list(fmt.scan_segment(reader, 1, BIG, 0, version=3))
    assert isinstance(events[-1], fmt.End)
    largest = max(len(p) for p in parts) - FRAME
    assert max(r for r in reader.reads if r < 1 << 20) <= largest
    assert max(reader.reads) <= 1 << 20


def test_segment_header_and_name_rules():
    assert fmt.segment_header(fmt.BytesReader(segment_header(9) + bytes(10))).first_lsn == 9
    fmt.check_segment_name(9, 9)
    with pytest.raises(fmt.FormatError) as info:
        fmt.check_segment_name(9, 8)
    assert (info.value.offset, info.value.rule) == (16, "H4")
    with pytest.raises(fmt.FormatError) as info:
        fmt.segment_header(fmt.BytesReader(segment_header(9, version=4)))
    assert info.value.rule == "H2"
    # A store's files may not be newer than its FORMAT file.
    for version, store_version in ((2, 1), (3, 1), (3, 2)):
        header = segment_header(9, version=version)
        with pytest.raises(fmt.FormatError) as info:
            fmt.segment_header(fmt.BytesReader(header), store_version=store_version)
        assert (info.value.offset, info.value.rule) == (8, "H2")


def test_read_snapshot_checks_the_name():
    data = fmt.encode_snapshot(4, _core.EMPTY)
    assert fmt.read_snapshot(fmt.BytesReader(data), 4) == _core.EMPTY
    with pytest.raises(fmt.FormatError) as info:
        fmt.read_snapshot(fmt.BytesReader(data), 5)
    assert (str(info.value), info.value.offset, info.value.rule) == (
        "header LSN 4 differs from the name",
        16,
        "S2",
    )


# --- recovery and verify agree ------------------------------------------------------------

Store = dict[str, bytes]


def log_store(parts: list[bytes], first_lsn: int = 1, zeros: int = 4096) -> Store:
    return {
        "FORMAT": fmt.encode_format_file(),
        fmt.segment_name(first_lsn): segment(first_lsn, parts, zeros),
    }


def damaged(parts: list[bytes], index: int, at: int = 30) -> list[bytes]:
    """`parts` with one byte of part `index` flipped, `at` bytes into it."""
    part = bytearray(parts[index])
    part[at] ^= 0x04
    return [*parts[:index], bytes(part), *parts[index + 1 :]]


FIVE = records(1, 5)
SEG1 = fmt.segment_name(1)


def _at(index: int, parts: list[bytes] = FIVE) -> int:
    return offsets(parts)[index]


#: (store files, what recovery does, where): "ok" opens untouched; "torn"
#: cuts `where` = (file, offset); "removed" removes the file; "corrupt" raises
#: naming (file, offset). Verify must say the same.
AGREEMENT_CASES: dict[str, tuple[Store, str, tuple[str, int] | None]] = {
    "clean": (log_store(FIVE), "ok", None),
    "header-only segment": (log_store([]), "ok", None),
    "torn tail": (log_store([*FIVE[:4], FIVE[4][:-7]]), "torn", (SEG1, _at(4))),
    "bad crc, later writes follow": (log_store(damaged(FIVE, 2)), "corrupt", (SEG1, _at(2))),
    "bad crc, same write follows": (
        log_store(damaged(records(1, 5, write_of={5: 4}), 3)),
        "torn",
        (SEG1, _at(3)),
    ),
    "bad crc in the last record": (log_store(damaged(FIVE, 4)), "torn", (SEG1, _at(4))),
    "lsn gap mid-log": (
        log_store([*FIVE[:2], frame(9, oauth(b"x")), *FIVE[3:]]),
        "corrupt",
        (SEG1, _at(2)),
    ),
    "lsn overlap mid-log": (
        log_store([*FIVE[:2], frame(2, oauth(b"x")), *FIVE[3:]]),
        "corrupt",
        (SEG1, _at(2)),
    ),
    "stale lsn at the end": (
        log_store([*FIVE[:4], frame(4, oauth(b"x"))]),
        "torn",
        (SEG1, _at(4)),
    ),
    "length beyond the max": (
        log_store([*FIVE[:4], frame(5, oauth(b"x" * 5000))]),
        "corrupt",
        (SEG1, _at(4)),
    ),
    "huge declared length": (
        log_store([*FIVE[:4], frame(5, b"", length=2**31)]),
        "torn",
        (SEG1, _at(4)),
    ),
    "garbage after the last record": (
        log_store([*FIVE, b"\x07garbage"]),
        "torn",
        (SEG1, 32 + sum(map(len, FIVE))),
    ),
    "bad payload in the last record": (
        log_store([*FIVE[:4], frame(5, cbor2.dumps([{"op": "nope"}]))]),
        "corrupt",
        (SEG1, _at(4) + FRAME),
    ),
    "torn header of a new last segment": (
        {**log_store(FIVE), fmt.segment_name(6): b"MKRTLOG" + bytes(200)},
        "removed",
        (fmt.segment_name(6), 0),
    ),
    "damage in a segment that is not the last": (
        {
            **log_store(damaged(FIVE, 4), zeros=0),
            fmt.segment_name(6): segment(6, records(6, 1)),
        },
        "corrupt",
        (SEG1, _at(4)),
    ),
    "a segment missing between two": (
        {**log_store(FIVE, zeros=0), fmt.segment_name(7): segment(7, records(7, 1))},
        "corrupt",
        (fmt.segment_name(7), 0),
    ),
}


def write_store(directory: Path, files: Store) -> None:
    directory.mkdir(mode=0o700)
    for name, data in files.items():
        (directory / name).write_bytes(data)


def recovery_verdict(directory: Path) -> tuple[str, tuple[str, int] | None]:
    """What opening does: "corrupt" (file, offset), "torn" (file, offset cut
    to), "removed" (file, 0; a segment removed may be created anew) or "ok"."""
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    try:
        log, _ = DurableLog.open(FileIO(), str(directory), 1000)
    except ma.CorruptStore as exc:
        return "corrupt", (os.path.basename(exc.path or ""), exc.offset or 0)
    log.close()
    after = {p.name: p.read_bytes() for p in directory.iterdir()}
    for name, data in before.items():
        kept = after.get(name)
        if kept is None or not data.startswith(kept):  # gone, or made anew
            return "removed", (name, 0)
        if kept != data:
            return "torn", (name, len(kept))
    return "ok", None


def verify_verdict(directory: Path) -> tuple[str, tuple[str, int] | None]:
    """The same, as `verify` reports it."""
    report = verify_store(str(directory), 1000)
    notes = [p for p in report.problems if p.severity == "note"]
    if report.result == "corrupt":
        [corrupt] = [p for p in report.problems if p.severity == "corrupt"]
        assert corrupt.offset is not None
        return "corrupt", (os.path.basename(corrupt.file), corrupt.offset)
    assert report.result == "clean", report
    if not notes:
        return "ok", None
    [note] = notes
    if note.offset is None:
        return "removed", (os.path.basename(note.file), 0)
    return "torn", (os.path.basename(note.file), note.offset)


@pytest.mark.parametrize("case", list(AGREEMENT_CASES))
def test_recovery_and_verify_agree_on_a_damaged_store(tmp_path: Path, case: str):
    files, verdict, where = AGREEMENT_CASES[case]
    write_store(tmp_path / "for-verify", files)
    write_store(tmp_path / "for-open", files)
    assert verify_verdict(tmp_path / "for-verify") == (verdict, where)
    assert {p.name: p.read_bytes() for p in (tmp_path / "for-verify").iterdir()} == files
    assert recovery_verdict(tmp_path / "for-open") == (verdict, where)
