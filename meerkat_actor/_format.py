"""The on-disk format of a durable store: bytes in, values out, no I/O.

Rule 1: this module only encodes and decodes bytes. Reading, writing and
syncing files is `_durable.py`'s job, through `_fs.py`.

Rule 2: decoding trusts nothing. Lengths and CRCs are checked before a single
byte of payload is decoded; the CBOR decoder rejects every tag (the format
uses none), indefinite lengths, duplicate keys and nesting deeper than
`MAX_DEPTH`; the decoded data must then have exactly the expected shape.
Every failure is a `FormatError` carrying the byte offset where it was found.

docs/format.md is the full specification; in brief (all integers big-endian,
byte ranges inclusive):

The FORMAT file (16 bytes), which makes a directory a store:

    0   8  magic  b"MKRTSTOR"
    8   4  format version (this build writes 3, reads 1 to 3)
    12  4  CRC-32 of bytes 0..11

Versions. Every file names its format version. This build writes version 3
and reads 1 to 3: version 2 added three effects (`remove_session`,
`remove_ops`, `remove_runtime`, SPEC §3b); version 3 holds input states and
receipts packed (`_packed.py`: the CBOR of the value as a byte string,
beside its key) in records and in a snapshot body of chunks. Frames and
headers are the same in all three. A segment or snapshot may carry any
version from 1 up to the FORMAT file's (rules H2, S1), and a segment's
records may hold only effects of the segment's version or older, in that
version's shape (rule 7): a version 1 segment holding a version 2 effect is
damage. `_durable.py` converts an older store (docs/format.md section 9).

A log segment, `log-<first LSN, 20 digits>.log`: a 32-byte header, then
records back to back.

    0   8  magic  b"MKRTLOG\\0"
    8   4  format version (1 or 2)
    12  4  reserved, 0
    16  8  first LSN: the LSN of the segment's first record
    24  4  reserved, 0
    28  4  CRC-32 of bytes 0..27

A record (one committed command): a 24-byte frame header, then the payload.

    0   8  LSN (log sequence number; the first record of a store is 1)
    8   8  write LSN: the LSN of the first record of the same write (group
           commit), so recovery can tell a torn last write from damage
    16  4  payload length N (1 <= N <= the store's maximum record size)
    20  4  CRC-32 of bytes 0..19 followed by the N payload bytes
    24  N  payload: CBOR array of the command's effects

Because the CRC covers the header, a zero-filled frame is never valid: the
CRC-32 of twenty zero bytes is not 0 (and N = 0 is refused anyway).

A snapshot, `snapshot-<LSN, 20 digits>.snap`: a 40-byte header, then the body.

    0   8  magic  b"MKRTSNAP"
    8   4  format version (1, 2 or 3)
    12  4  reserved, 0
    16  8  LSN: the snapshot holds the state after every record <= LSN
    24  8  body length B
    32  4  CRC-32 of the B body bytes
    36  4  CRC-32 of bytes 0..35
    40  B  body: version 3, chunks (a 4-byte length, then a CBOR array);
           versions 1 and 2, one CBOR map: the whole store state

Values inside payloads and bodies use the plain form of `_codec.to_plain`.

Rule 3: this module is the one reader of the log. `scan_segment` walks a
segment's records and states where they end; `later_write` is the torn-write
test; `read_snapshot` checks a snapshot. Recovery (`_durable.py`) and
`verify` (`_verifier.py`) both judge the files through them and through
nothing else, so they cannot disagree about what a valid record is. The
numbered validity rules are those of docs/format.md, cited here by number:

- H1-H4, a segment header (section 3): 32 bytes, magic, CRC, version (1 up
  to the store's), zero reserved fields, first LSN >= 1 and equal to the
  number in the file name.
- 1-7, a record (section 3): 1-4 make it *whole* (header bytes, 1 <= N and N
  payload bytes, CRC, 1 <= W <= LSN), 5 bounds N by the reader's maximum,
  6 requires the LSN expected next, 7 requires the payload to decode to
  effects of the segment's version.
- 8, the end of the records: at the first offset where a rule fails, the
  records end if every remaining byte is zero; otherwise the segment is
  damaged there.
- 9, torn or damaged: damage in the newest segment followed by a whole record
  of a *later* write (W above the LSN expected at the damage) is damage;
  followed only by records of the same write (or nothing), a torn write.
- S1-S3, a snapshot (section 4): header (version 1 up to the store's),
  length and CRCs; LSN equal to the number in the file name; a body of the
  right shape (the same in both versions).

Theory of operation. The scanner reads through a `Reader` (a size and
`read_at(offset, length)`), never through a whole `bytes` of its own, so a
reader that reads a file piece by piece bounds what scanning holds in memory
by the largest record. `scan_segment` yields one `Record` per valid record,
then exactly one terminal event: `End` (rule 8, the zero fill or the end of
the file) or `Damage` (the offset, the LSN expected there, the failed rule).
It never decides what to do about damage: recovery and verify do, each by the
same rules 5-9.
"""

from __future__ import annotations

import functools
import re
import struct
import uuid
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn, Protocol, final

import cbor2

from . import _core
from ._codec import CodecError, from_plain, to_plain
from ._core import Effect, RuntimeRecord, StoreState
from ._ids import InputId, LogicalRuntimeId
from ._packed import (
    MAX_DEPTH,
    CorruptValue,
    PackedInput,
    PackedMap,
    PackedReceipt,
    loads_strict,
)
from ._types import PersistedOpsSnapshot, RunBoundaryReceipt, RuntimeState, StoredInputState

__all__ = [
    "FORMAT_FILE",
    "FORMAT_VERSION",
    "FRAME_HEADER",
    "MAX_DEPTH",
    "OLDEST_VERSION",
    "SEGMENT_HEADER",
    "SEGMENT_NAME",
    "SNAPSHOT_HEADER",
    "SNAPSHOT_NAME",
    "BytesReader",
    "Damage",
    "End",
    "FormatError",
    "Frame",
    "Reader",
    "Record",
    "RecordTooLarge",
    "SegmentHeader",
    "check_segment_name",
    "decode_effects",
    "decode_format_file",
    "decode_segment_header",
    "decode_snapshot",
    "encode_format_file",
    "encode_payload",
    "encode_record",
    "encode_segment_header",
    "encode_snapshot",
    "frame_at",
    "frame_records",
    "is_zero_from",
    "later_write",
    "newest_snapshot",
    "numbered",
    "parse_snapshot_name",
    "read_frame",
    "read_snapshot",
    "scan_segment",
    "segment_header",
    "segment_name",
    "snapshot_chunks",
    "snapshot_header",
    "snapshot_name",
]

#: The version this build writes; it reads every version from OLDEST_VERSION on.
FORMAT_VERSION: Final = 3
OLDEST_VERSION: Final = 1
FORMAT_FILE: Final = "FORMAT"
LOCK_FILE: Final = "LOCK"

_FORMAT_MAGIC: Final = b"MKRTSTOR"
_SEGMENT_MAGIC: Final = b"MKRTLOG\0"
_SNAPSHOT_MAGIC: Final = b"MKRTSNAP"

_FORMAT_STRUCT: Final = struct.Struct(">8sI")  # + CRC
_SEGMENT_STRUCT: Final = struct.Struct(">8sIIQI")  # + CRC
_FRAME_STRUCT: Final = struct.Struct(">QQI")  # + CRC
_SNAPSHOT_STRUCT: Final = struct.Struct(">8sIIQQI")  # + CRC
_CRC: Final = struct.Struct(">I")

FORMAT_SIZE: Final = _FORMAT_STRUCT.size + 4  # 16
SEGMENT_HEADER: Final = _SEGMENT_STRUCT.size + 4  # 32
FRAME_HEADER: Final = _FRAME_STRUCT.size + 4  # 24
SNAPSHOT_HEADER: Final = _SNAPSHOT_STRUCT.size + 4  # 40


class FormatError(ValueError):
    """Bytes that are not a valid part of the format; `offset` locates the fault
    and `rule` names the rule of docs/format.md that failed ("3", "H1", ...),
    where one does."""

    def __init__(self, message: str, offset: int, rule: str | None = None) -> None:
        super().__init__(message)
        self.offset = offset
        self.rule = rule


class RecordTooLarge(FormatError):
    """A whole, checksum-valid record longer than the reader's maximum record
    size: not a torn write, but a store written with a larger limit."""


def _fail(message: str, offset: int, rule: str | None = None) -> NoReturn:
    raise FormatError(message, offset, rule)


#: The (prefix, suffix) of segment and snapshot file names, for `parse_name`.
SEGMENT_NAME: Final = ("log-", ".log")
SNAPSHOT_NAME: Final = ("snapshot-", ".snap")


def segment_name(first_lsn: int) -> str:
    return f"log-{first_lsn:020d}.log"


def snapshot_name(lsn: int) -> str:
    return f"snapshot-{lsn:020d}.snap"


def parse_name(name: str, prefix: str, suffix: str) -> int | None:
    """The number in `<prefix><20 digits><suffix>`, or None for other names."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    digits = name[len(prefix) : len(name) - len(suffix)]
    if len(digits) != 20 or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits)


def numbered(names: Iterable[str], pattern: tuple[str, str]) -> list[tuple[int, str]]:
    """The names of the form `pattern` (`SEGMENT_NAME`, `SNAPSHOT_NAME`) with
    their numbers, in increasing order of number."""
    return sorted((n, name) for name in names if (n := parse_name(name, *pattern)) is not None)


def parse_snapshot_name(name: str) -> int | None:
    """The LSN in a snapshot file name (the inverse of `snapshot_name`), or
    None for a name that is not one."""
    return parse_name(name, *SNAPSHOT_NAME)


def newest_snapshot(names: Iterable[str]) -> tuple[int, str] | None:
    """The newest snapshot among file names.

    Args:
        names: file names of a store directory (any others are ignored).

    Returns:
        `(LSN, name)` of the snapshot with the highest LSN, or None if no
        name is a snapshot's.
    """
    snapshots = numbered(names, SNAPSHOT_NAME)
    return snapshots[-1] if snapshots else None


# --- hardened CBOR ----------------------------------------------------------------------


def _loads(data: bytes, offset: int, rule: str) -> Any:
    """Decode exactly one CBOR item that fills `data`, under the restrictions
    (`_packed.loads_strict`; a failure breaks `rule`)."""
    try:
        return loads_strict(data)
    except CorruptValue as exc:
        _fail(str(exc), offset + exc.offset, rule)


def _dumps(value: Any) -> bytes:
    return cbor2.dumps(value)


# --- the FORMAT file ---------------------------------------------------------------------


def encode_format_file(version: int = FORMAT_VERSION) -> bytes:
    """The FORMAT file naming `version` (this build's unless a test says otherwise)."""
    head = _FORMAT_STRUCT.pack(_FORMAT_MAGIC, version)
    return head + _CRC.pack(zlib.crc32(head))


def decode_format_file(data: bytes) -> int:
    """The format version the FORMAT file names (any version, for the caller to judge)."""
    if len(data) != FORMAT_SIZE:
        _fail(f"FORMAT file is {len(data)} bytes, expected {FORMAT_SIZE}", 0)
    magic, version = _FORMAT_STRUCT.unpack_from(data)
    if magic != _FORMAT_MAGIC:
        _fail("FORMAT file has the wrong magic", 0)
    if zlib.crc32(data[:12]) != _CRC.unpack_from(data, 12)[0]:
        _fail("FORMAT file checksum mismatch", 12)
    if version < 1:
        _fail(f"FORMAT file names version {version}; versions start at 1", 8)
    return int(version)


# --- segments and records -----------------------------------------------------------------


def encode_segment_header(first_lsn: int, version: int = FORMAT_VERSION) -> bytes:
    """A segment header (of this build's version unless a test says otherwise)."""
    head = _SEGMENT_STRUCT.pack(_SEGMENT_MAGIC, version, 0, first_lsn, 0)
    return head + _CRC.pack(zlib.crc32(head))


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """A segment header that checked out (rules H1-H3, H4's first half)."""

    first_lsn: int
    version: int  # which effects its records may hold (rule 7)


def _check_version(version: int, store_version: int, what: str, offset: int, rule: str) -> None:
    """A file's version must be OLDEST_VERSION up to the store's (FORMAT's)."""
    if not OLDEST_VERSION <= version <= store_version:
        _fail(
            f"{what} format version {version}, in a store of version {store_version}"
            f" (this build reads {OLDEST_VERSION} to {FORMAT_VERSION})",
            offset,
            rule,
        )


def decode_segment_header(data: bytes, store_version: int = FORMAT_VERSION) -> SegmentHeader:
    """Check a segment's first `SEGMENT_HEADER` bytes (rules H1-H3, first
    LSN >= 1), in a store whose FORMAT file names `store_version`."""
    if len(data) < SEGMENT_HEADER:
        _fail(f"segment header is short ({len(data)} of {SEGMENT_HEADER} bytes)", 0, "H1")
    magic, version, reserved, first_lsn, reserved2 = _SEGMENT_STRUCT.unpack_from(data)
    if magic != _SEGMENT_MAGIC:
        _fail("segment has the wrong magic", 0, "H1")
    if zlib.crc32(data[:28]) != _CRC.unpack_from(data, 28)[0]:
        _fail("segment header checksum mismatch", 28, "H1")
    _check_version(version, store_version, "segment", 8, "H2")
    if reserved or reserved2:
        _fail("segment header reserved fields are not zero", 12 if reserved else 24, "H3")
    if first_lsn < 1:
        _fail("segment first LSN is 0", 16, "H4")
    return SegmentHeader(int(first_lsn), int(version))


def check_segment_name(header_lsn: int, name_lsn: int) -> None:
    """Rule H4: the header's first LSN is the number in the file name.

    Raises:
        FormatError: they differ (offset 16, the header field).
    """
    if header_lsn != name_lsn:
        _fail(f"header first LSN {header_lsn} differs from the name", 16, "H4")


def encode_payload(effects: tuple[Effect, ...]) -> bytes:
    """The CBOR payload of one record: the command's effects."""
    return _dumps([_effect_to_plain(effect) for effect in effects])


def frame_records(first_lsn: int, payloads: list[bytes]) -> bytes:
    """Frame the payloads of one write as records `first_lsn`, `first_lsn + 1`, ..."""
    parts: list[bytes] = []
    for index, payload in enumerate(payloads):
        head = _FRAME_STRUCT.pack(first_lsn + index, first_lsn, len(payload))
        parts += (head, _CRC.pack(zlib.crc32(payload, zlib.crc32(head))), payload)
    return b"".join(parts)


def encode_record(lsn: int, effects: tuple[Effect, ...], write_lsn: int | None = None) -> bytes:
    """One framed record (its own write unless `write_lsn` says otherwise)."""
    payload = encode_payload(effects)
    head = _FRAME_STRUCT.pack(lsn, lsn if write_lsn is None else write_lsn, len(payload))
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


@dataclass(frozen=True, slots=True)
class Frame:
    """A record whose frame checked out: its LSNs, payload and where it ends."""

    lsn: int
    write_lsn: int
    payload: bytes
    offset: int
    end: int


def read_frame(data: bytes, offset: int, max_record: int) -> Frame:
    """Check the record at `offset` of a segment's bytes; return it.

    Args:
        data: the segment's bytes (or any bytes holding a record).
        offset: where the record starts.
        max_record: the largest payload allowed (rule 5).

    Returns:
        The record, if rules 1-5 hold.

    Raises:
        RecordTooLarge: a whole record with a valid CRC whose payload is
            longer than `max_record`.
        FormatError: short header, bad length, short payload, CRC mismatch or
            a write LSN after the LSN (the offset is the record's start).
    """
    return frame_at(BytesReader(data), offset, max_record)


def frame_at(reader: Reader, offset: int, max_record: int) -> Frame:
    """Check rules 1-5 for the record at `offset` of what `reader` reads.

    Reads the 24-byte header, then the payload only once its length fits in
    the file: a damaged length allocates nothing.

    Args:
        reader: the segment.
        offset: where the record starts.
        max_record: the largest payload allowed (rule 5).

    Returns:
        The whole record.

    Raises:
        RecordTooLarge: rules 1-4 hold but not rule 5.
        FormatError: rule 1, 2, 3 or 4 fails (the offset is the record's start).
    """
    remaining = reader.size() - offset
    if remaining < FRAME_HEADER:
        _fail(f"short record header ({remaining} bytes)", offset, "1")
    head = reader.read_at(offset, FRAME_HEADER)
    lsn, write_lsn, length = _FRAME_STRUCT.unpack_from(head)
    if length < 1:
        _fail("record length 0", offset, "2")
    end = offset + FRAME_HEADER + length
    if end > offset + remaining:
        _fail(f"short record: {remaining - FRAME_HEADER} of {length} payload bytes", offset, "2")
    payload = reader.read_at(offset + FRAME_HEADER, length)
    if zlib.crc32(payload, zlib.crc32(head[:20])) != _CRC.unpack_from(head, 20)[0]:
        _fail("record checksum mismatch", offset, "3")
    if not 1 <= write_lsn <= lsn:
        _fail(f"record write LSN {write_lsn} is not in [1, LSN {lsn}]", offset, "4")
    if length > max_record:
        raise RecordTooLarge(
            f"record of {length} bytes is over max_record_bytes={max_record};"
            " open the store with a larger max_record_bytes",
            offset,
            "5",
        )
    return Frame(int(lsn), int(write_lsn), payload, offset, end)


def decode_effects(frame: Frame, *, version: int) -> tuple[Effect, ...]:
    """The effects in a checked record's payload (rule 7), found in a segment
    of format `version`: an effect of a later version is damage.

    Raises:
        FormatError: the payload breaks rule 7 (the offset is the payload's).
    """
    at = frame.offset + FRAME_HEADER
    data = _loads(frame.payload, at, "7")
    if not isinstance(data, list) or not data:
        _fail("record payload is not a non-empty array", at, "7")
    try:
        return tuple(_effect_from_plain(item, version) for item in data)
    except (CodecError, TypeError, ValueError, KeyError) as exc:
        _fail(f"record payload: {exc}", at, "7")


# --- the scanner: one reader of segments and snapshots ---------------------------------


class Reader(Protocol):
    """Random access to one file's bytes: all the scanner reads through."""

    def size(self) -> int:
        """The file's length in bytes."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset` (fewer only at the end of the file)."""
        ...


@final
class BytesReader:
    """A `Reader` over bytes already in memory."""

    __slots__ = ("_data",)

    def __init__(self, data: bytes) -> None:
        self._data = data

    def size(self) -> int:
        """The length of the bytes."""
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        """The bytes `offset .. offset + length - 1` (fewer at the end)."""
        return self._data[offset : offset + length]


@dataclass(frozen=True, slots=True)
class Record:
    """A valid record (rules 1-6, and 7 if its payload was decoded).

    `effects` is None for a record at or below the scan's `decode_above`
    LSN, whose payload was not decoded (a reader may skip rule 7 there)."""

    frame: Frame
    effects: tuple[Effect, ...] | None


@dataclass(frozen=True, slots=True)
class End:
    """Rule 8: the records end at `offset`; every byte after it is zero."""

    offset: int
    expected: int  # the LSN a next record would carry


@dataclass(frozen=True, slots=True)
class Damage:
    """Rule 8: a rule fails at `offset`, where record `expected` should
    start, and a non-zero byte remains. `error` says which rule (its offset
    is the record's, or its payload's for rule 7)."""

    offset: int
    expected: int
    error: FormatError

    @property
    def whole(self) -> bool:
        """A whole record broke rule 5 or 7: damage wherever it is (rules 1-4
        held, so no crash could have left it)."""
        return self.error.rule in ("5", "7")


_ZERO_CHUNK: Final = 1 << 20


def is_zero_from(reader: Reader, offset: int) -> bool:
    """True if every byte of the file from `offset` on is zero (or none is left).

    Reads a MiB at a time.
    """
    size = reader.size()
    while offset < size:
        chunk = reader.read_at(offset, min(_ZERO_CHUNK, size - offset))
        if chunk.count(0) != len(chunk):
            return False
        offset += len(chunk)
    return True


def segment_header(reader: Reader, store_version: int = FORMAT_VERSION) -> SegmentHeader:
    """Check rules H1-H3 and H4's first half (LSN >= 1) for a segment of a
    store whose FORMAT file names `store_version`; return the header.

    Raises:
        FormatError: a rule fails.
    """
    return decode_segment_header(reader.read_at(0, SEGMENT_HEADER), store_version)


def scan_segment(
    reader: Reader, first_lsn: int, max_record: int, decode_above: int, *, version: int
) -> Iterator[Record | End | Damage]:
    """Walk a segment's records, after a header already checked (rules H1-H4).

    Args:
        reader: the segment file.
        first_lsn: the segment's first LSN: the LSN rule 6 expects first.
        max_record: the reader's maximum record size (rule 5).
        decode_above: decode (rule 7) the payloads of records with a larger
            LSN; 0 decodes every one.
        version: the segment header's format version: the effects its
            records may hold (rule 7).

    Returns:
        An iterator of one `Record` per valid record, in order, then exactly
        one `End` or `Damage` (rule 8), after which it stops.
    """
    expected, offset = first_lsn, SEGMENT_HEADER
    size = reader.size()
    while offset < size:
        try:
            frame = frame_at(reader, offset, max_record)
            if frame.lsn != expected:
                _fail(f"record LSN {frame.lsn}, expected {expected}", offset, "6")
            effects = decode_effects(frame, version=version) if frame.lsn > decode_above else None
        except FormatError as exc:
            if is_zero_from(reader, offset):
                break
            yield Damage(offset, expected, exc)
            return
        yield Record(frame, effects)
        expected += 1
        offset = frame.end
    yield End(offset, expected)


_NONZERO: Final = re.compile(rb"[^\x00]")


def later_write(reader: Reader, damage: Damage) -> Frame | None:
    """Rule 9: the first whole record (rules 1-4) after `damage` that belongs
    to a later write than the damaged record, or None.

    Only records with `damage.expected <= LSN < damage.expected + 2**32`
    count (older LSNs are stale copies, not evidence). A record of the same
    write (write LSN <= `damage.expected`) is stepped over: the damage may be
    a torn write whose pages reached the disk in any order.

    Scans byte by byte, with cheap filters first (plausible LSN and length)
    and skipping zero runs: a record's LSN (>= 1) has a non-zero byte among
    its first 8, so a record starts within 7 bytes before a non-zero byte.
    The bytes after the damage are read at once.
    """
    start, expected = damage.offset, damage.expected
    data = reader.read_at(start, reader.size() - start)
    tail = BytesReader(data)
    limit = len(data) - FRAME_HEADER
    offset = 0
    while offset <= limit:
        if data[offset] == 0:
            found = _NONZERO.search(data, offset)
            if found is None:
                return None
            offset = max(offset, found.start() - 7)
            if offset > limit:
                return None
        lsn = int.from_bytes(data[offset : offset + 8], "big")
        length = int.from_bytes(data[offset + 16 : offset + 20], "big")
        if expected <= lsn < expected + (1 << 32) and 1 <= length <= limit - offset:
            try:
                frame = frame_at(tail, offset, len(data))
            except FormatError:
                pass
            else:
                if frame.write_lsn > expected:
                    return Frame(
                        frame.lsn,
                        frame.write_lsn,
                        frame.payload,
                        start + frame.offset,
                        start + frame.end,
                    )
                offset = frame.end
                continue
        offset += 1
    return None


# --- effects as plain data ------------------------------------------------------------------


def _effect_to_plain(effect: Effect) -> dict[str, Any]:
    match effect:
        case _core.SetOAuthFlowSnapshot(snapshot):
            return {"op": "oauth", "snapshot": snapshot}
        case _core.SetSessionSnapshot(runtime_id, snapshot):
            return {"op": "session", "runtime": runtime_id.value, "snapshot": snapshot}
        case _core.InsertReceipt(runtime_id, receipt):
            return {
                "op": "receipt",
                "runtime": runtime_id.value,
                "key": receipt.key,
                "receipt": receipt.blob,
            }
        case _core.PutInputStates(runtime_id, states):
            return {
                "op": "inputs",
                "runtime": runtime_id.value,
                "ids": [packed.key for packed in states],
                "states": [packed.blob for packed in states],
            }
        case _core.SetRuntimeState(runtime_id, runtime_state):
            return {
                "op": "runtime_state",
                "runtime": runtime_id.value,
                "state": runtime_state.value,
            }
        case _core.SetOpsSnapshot(runtime_id, snapshot):
            return {"op": "ops", "runtime": runtime_id.value, "snapshot": to_plain(snapshot)}
        case _core.RemoveSessionSnapshot(runtime_id):
            return {"op": "remove_session", "runtime": runtime_id.value}
        case _core.RemoveOpsSnapshot(runtime_id):
            return {"op": "remove_ops", "runtime": runtime_id.value}
        case _core.RemoveRuntime(runtime_id):
            return {"op": "remove_runtime", "runtime": runtime_id.value}
    raise TypeError(f"not an effect: {effect!r}")  # pragma: no cover


def _fields(item: Any, *names: str) -> list[Any]:
    if not isinstance(item, dict) or set(item) != {"op", *names}:
        raise ValueError(f"effect must be a map with keys op, {', '.join(names)}: {item!r:.80}")
    return [item[name] for name in names]


def _runtime(value: Any) -> LogicalRuntimeId:
    if not isinstance(value, str):
        raise ValueError(f"runtime id must be a string, got {type(value).__name__}")
    return _runtime_id(value)


@functools.lru_cache(maxsize=4096)
def _runtime_id(value: str) -> LogicalRuntimeId:
    # A log names the same few runtimes over and over: one id object each.
    return LogicalRuntimeId(value)


def _blob(value: Any) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError(f"snapshot must be bytes, got {type(value).__name__}")
    return value


def _packed(value: Any) -> bytes:
    if type(value) is not bytes or not value:
        raise ValueError(f"a packed value must be non-empty bytes, got {type(value).__name__}")
    return value


def _keys(keys: Any, size: int, what: str) -> list[bytes]:
    if type(keys) is not list:
        raise ValueError(f"{what} must be an array, got {type(keys).__name__}")
    for key in keys:
        if type(key) is not bytes or len(key) != size:
            raise ValueError(f"each of {what} must be {size} bytes, got {key!r:.40}")
    return keys


def _entries(keys: Any, values: Any, size: int) -> list[tuple[bytes, bytes]]:
    """The (key, packed value) pairs of two parallel arrays (version 3)."""
    _keys(keys, size, "the keys")
    if type(values) is not list or len(values) != len(keys) or not values:
        raise ValueError("keys and values must be non-empty arrays of the same length")
    for value in values:
        _packed(value)
    return list(zip(keys, values, strict=True))


#: The format version that introduced each effect op: a segment of version V
#: may hold only the ops of version V or older (rule 7).
_OP_VERSION: Final = {
    "oauth": 1,
    "session": 1,
    "receipt": 1,
    "inputs": 1,
    "runtime_state": 1,
    "ops": 1,
    "remove_session": 2,
    "remove_ops": 2,
    "remove_runtime": 2,
}


def _effect_from_plain(item: Any, version: int) -> Effect:
    op = item.get("op") if isinstance(item, dict) else None
    since = _OP_VERSION.get(op) if isinstance(op, str) else None
    if since is None:
        raise ValueError(f"unknown effect op {op!r:.40}")
    if since > version:
        raise ValueError(
            f"effect op {op!r} is format version {since}, in a version {version} segment"
        )
    if op == "oauth":
        (snapshot,) = _fields(item, "snapshot")
        return _core.SetOAuthFlowSnapshot(_blob(snapshot))
    if op == "session":
        runtime, snapshot = _fields(item, "runtime", "snapshot")
        return _core.SetSessionSnapshot(_runtime(runtime), _blob(snapshot))
    if op == "receipt" and version < 3:
        runtime, receipt = _fields(item, "runtime", "receipt")
        return _core.InsertReceipt(_runtime(runtime), from_plain(RunBoundaryReceipt, receipt))
    if op == "receipt":
        runtime, key, receipt = _fields(item, "runtime", "key", "receipt")
        return _core.InsertReceipt(
            _runtime(runtime), PackedReceipt(_keys([key], 24, "key")[0], _packed(receipt))
        )
    if op == "inputs" and version < 3:
        runtime, states = _fields(item, "runtime", "states")
        if not isinstance(states, list) or not states:
            raise ValueError("inputs effect needs a non-empty array of states")
        return _core.PutInputStates(
            _runtime(runtime), tuple(from_plain(StoredInputState, s) for s in states)
        )
    if op == "inputs":
        runtime, ids, states = _fields(item, "runtime", "ids", "states")
        return _core.PutInputStates(
            _runtime(runtime), [PackedInput(k, v) for k, v in _entries(ids, states, 16)]
        )
    if op == "runtime_state":
        runtime, state = _fields(item, "runtime", "state")
        return _core.SetRuntimeState(_runtime(runtime), from_plain(RuntimeState, state))
    if op == "ops":
        runtime, snapshot = _fields(item, "runtime", "snapshot")
        return _core.SetOpsSnapshot(_runtime(runtime), from_plain(PersistedOpsSnapshot, snapshot))
    (runtime,) = _fields(item, "runtime")
    if op == "remove_session":
        return _core.RemoveSessionSnapshot(_runtime(runtime))
    if op == "remove_ops":
        return _core.RemoveOpsSnapshot(_runtime(runtime))
    assert op == "remove_runtime"
    return _core.RemoveRuntime(_runtime(runtime))


# --- snapshots ---------------------------------------------------------------------------


_EMPTY_RECORD: Final = RuntimeRecord()

#: A version 3 snapshot body is chunks of about this size (a value larger
#: than this makes a larger chunk).
CHUNK_BYTES: Final = 1 << 20
_CHUNK_LENGTH: Final = struct.Struct(">I")


def snapshot_chunks(state: StoreState) -> Iterator[bytes]:
    """The body of a version 3 snapshot of `state`, as framed chunks (a
    4-byte length, then a CBOR array). Runtimes come in the order of their
    ids and each one's values in key order, so one state always gives the
    same bytes. Each chunk is encoded when asked for: a writer holds one at a
    time."""
    if state.oauth_flow_snapshot is not None:
        yield _chunk(["oauth", state.oauth_flow_snapshot])
    for runtime_id in sorted(state.runtimes, key=str):
        record = state.runtimes[runtime_id]
        if record == _EMPTY_RECORD:
            continue  # holds nothing (an older snapshot may have kept one)
        yield _chunk(
            [
                "runtime",
                runtime_id.value,
                record.session_snapshot,
                None if record.runtime_state is None else record.runtime_state.value,
                None if record.ops_snapshot is None else to_plain(record.ops_snapshot),
            ]
        )
        for kind, values in (("inputs", record.input_states), ("receipts", record.receipts)):
            keys: list[bytes] = []
            blobs: list[bytes] = []
            size = 0
            for key, blob in values.sorted_items():
                keys.append(key)
                blobs.append(blob)
                size += len(blob) + 32
                if size >= CHUNK_BYTES:
                    yield _chunk([kind, runtime_id.value, keys, blobs])
                    keys, blobs, size = [], [], 0
            if keys:
                yield _chunk([kind, runtime_id.value, keys, blobs])


def _chunk(item: list[Any]) -> bytes:
    data = _dumps(item)
    return _CHUNK_LENGTH.pack(len(data)) + data


def snapshot_header(lsn: int, body_length: int, body_crc: int, version: int) -> bytes:
    """The 40-byte header of a snapshot whose body has this length and CRC."""
    head = _SNAPSHOT_STRUCT.pack(_SNAPSHOT_MAGIC, version, 0, lsn, body_length, body_crc)
    return head + _CRC.pack(zlib.crc32(head))


def encode_snapshot(lsn: int, state: StoreState, version: int = FORMAT_VERSION) -> bytes:
    """A whole snapshot file: header and body of `state` as of `lsn`, of this
    build's version unless a test asks for an older one (versions 1 and 2
    have one CBOR map as the body). A durable store streams the chunks
    instead (`snapshot_chunks`)."""
    body = b"".join(snapshot_chunks(state)) if version >= 3 else _dumps(_plain_body(state))
    return snapshot_header(lsn, len(body), zlib.crc32(body), version) + body


def _plain_body(state: StoreState) -> dict[str, Any]:
    """The body of a version 1 or 2 snapshot (for tests of older stores)."""
    runtimes = []
    for runtime_id, record in state.runtimes.items():
        runtimes.append(
            {
                "runtime": runtime_id.value,
                "session": record.session_snapshot,
                "runtime_state": None
                if record.runtime_state is None
                else record.runtime_state.value,
                "ops": None if record.ops_snapshot is None else to_plain(record.ops_snapshot),
                "inputs": [
                    to_plain(state.input_state(runtime_id, _input_id(k)))
                    for k, _ in record.input_states.sorted_items()
                ],
                "receipts": [to_plain(r) for r in state.boundary_receipts(runtime_id)],
            }
        )
    return {"oauth": state.oauth_flow_snapshot, "runtimes": runtimes}


def _input_id(key: bytes) -> InputId:
    return InputId(uuid.UUID(bytes=key))


def _check_snapshot_header(
    head: bytes, file_size: int, store_version: int
) -> tuple[int, int, int, int]:
    """Rule S1 but the body CRC: return (version, LSN, body length, body CRC)."""
    if len(head) < SNAPSHOT_HEADER:
        _fail(f"snapshot header is short ({len(head)} of {SNAPSHOT_HEADER} bytes)", 0, "S1")
    magic, version, reserved, lsn, length, body_crc = _SNAPSHOT_STRUCT.unpack_from(head)
    if magic != _SNAPSHOT_MAGIC:
        _fail("snapshot has the wrong magic", 0, "S1")
    if zlib.crc32(head[:36]) != _CRC.unpack_from(head, 36)[0]:
        _fail("snapshot header checksum mismatch", 36, "S1")
    _check_version(version, store_version, "snapshot", 8, "S1")
    if reserved:
        _fail("snapshot header reserved field is not zero", 12, "S1")
    if file_size != SNAPSHOT_HEADER + length:
        message = f"snapshot body is {file_size - SNAPSHOT_HEADER} bytes, header says {length}"
        _fail(message, 24, "S1")
    return int(version), int(lsn), int(length), int(body_crc)


def decode_snapshot_header(data: bytes, store_version: int = FORMAT_VERSION) -> tuple[int, int]:
    """Check a snapshot's header against the file's bytes (a snapshot of a
    store whose FORMAT file names `store_version`); return (LSN, body length)."""
    _, lsn, length, body_crc = _check_snapshot_header(
        data[:SNAPSHOT_HEADER], len(data), store_version
    )
    if zlib.crc32(memoryview(data)[SNAPSHOT_HEADER:]) != body_crc:
        _fail("snapshot body checksum mismatch", SNAPSHOT_HEADER, "S1")
    return lsn, length


def decode_snapshot(data: bytes, store_version: int = FORMAT_VERSION) -> tuple[int, StoreState]:
    """Check and decode a whole snapshot file of a store whose FORMAT file
    names `store_version`; return (LSN, state).

    Raises:
        FormatError: rule S1 or S3 fails.
    """
    reader = BytesReader(data)
    lsn = _check_snapshot_header(data[:SNAPSHOT_HEADER], len(data), store_version)[1]
    return lsn, read_snapshot(reader, lsn, store_version)


def read_snapshot(reader: Reader, name_lsn: int, store_version: int = FORMAT_VERSION) -> StoreState:
    """Check a snapshot file whose name says LSN `name_lsn` (rules S1-S3).

    A version 3 body is read chunk by chunk: what this holds in memory
    besides the state is one chunk.

    Args:
        reader: the snapshot file.
        name_lsn: the number in its file name.
        store_version: the version the store's FORMAT file names (rule S1:
            the snapshot's may not be newer).

    Returns:
        The state it holds.

    Raises:
        FormatError: a rule fails.
    """
    size = reader.size()
    head = reader.read_at(0, min(size, SNAPSHOT_HEADER))
    version, lsn, length, body_crc = _check_snapshot_header(head, size, store_version)
    if lsn != name_lsn:
        _fail(f"header LSN {lsn} differs from the name", 16, "S2")
    if version < 3:
        body = reader.read_at(SNAPSHOT_HEADER, length)
        if zlib.crc32(body) != body_crc:
            _fail("snapshot body checksum mismatch", SNAPSHOT_HEADER, "S1")
        plain = _loads(body, SNAPSHOT_HEADER, "S3")
        try:
            state = _state_from_plain(plain)
        except (CodecError, TypeError, ValueError, KeyError) as exc:
            _fail(f"snapshot body: {exc}", SNAPSHOT_HEADER, "S3")
    else:
        state = _read_chunks(reader, length, body_crc)
    return state


def _read_chunks(reader: Reader, length: int, body_crc: int) -> StoreState:
    loader = _ChunkLoader()
    crc = 0
    offset = SNAPSHOT_HEADER
    end = SNAPSHOT_HEADER + length
    problem: tuple[str, int] | None = None
    while offset < end:
        if end - offset < _CHUNK_LENGTH.size:
            problem = ("snapshot body ends inside a chunk length", offset)
            break
        prefix = reader.read_at(offset, _CHUNK_LENGTH.size)
        (size,) = _CHUNK_LENGTH.unpack(prefix)
        if size == 0 or size > end - offset - _CHUNK_LENGTH.size:
            problem = (f"snapshot chunk of {size} bytes does not fit the body", offset)
            break
        data = reader.read_at(offset + _CHUNK_LENGTH.size, size)
        try:
            loader.chunk(_loads(data, offset + _CHUNK_LENGTH.size, "S3"))
        except FormatError as exc:
            problem = (str(exc), exc.offset)
            break
        except (CodecError, TypeError, ValueError, KeyError) as exc:
            problem = (f"snapshot chunk: {exc}", offset)
            break
        # Counted once it decoded: on a problem the rest, this chunk
        # included, is counted below.
        crc = zlib.crc32(data, zlib.crc32(prefix, crc))
        offset += _CHUNK_LENGTH.size + size
    if problem is None:
        # The CRC covers the whole body: when it does not check, that is the
        # damage to report, whatever a chunk looked like.
        if crc != body_crc:
            _fail("snapshot body checksum mismatch", SNAPSHOT_HEADER, "S1")
        return loader.finish()
    while offset < end:  # the rest, this chunk included, a window at a time
        piece = reader.read_at(offset, min(CHUNK_BYTES, end - offset))
        crc = zlib.crc32(piece, crc)
        offset += len(piece)
    if crc != body_crc:
        _fail("snapshot body checksum mismatch", SNAPSHOT_HEADER, "S1")
    _fail(problem[0], problem[1], "S3")


class _ChunkLoader:
    """Builds the state from version 3 chunks (docs/format.md section 4)."""

    def __init__(self) -> None:
        self.runtimes = _core.EMPTY.runtimes.evolver()
        self.oauth: bytes | None = None
        self.seen_oauth = False
        self.current: LogicalRuntimeId | None = None
        self.seen: set[LogicalRuntimeId] = set()
        self.record = RuntimeRecord()
        self.inputs: dict[bytes, bytes] = {}
        self.receipts: dict[bytes, bytes] = {}

    def chunk(self, item: Any) -> None:
        if type(item) is not list or not item:
            raise ValueError("a chunk must be a non-empty array")
        kind = item[0]
        if kind == "oauth":
            if len(item) != 2 or self.seen_oauth or self.current is not None:
                raise ValueError('the oauth chunk must come once, first, as ["oauth", bytes]')
            self.seen_oauth = True
            self.oauth = _blob(item[1])
        elif kind == "runtime":
            if len(item) != 5:
                raise ValueError("a runtime chunk has 5 items")
            self._end_runtime()
            runtime_id = _runtime(item[1])
            if runtime_id in self.seen:
                raise ValueError(f"runtime {runtime_id} appears twice")
            self.seen.add(runtime_id)
            self.current = runtime_id
            session, runtime_state, ops = item[2:]
            self.record = RuntimeRecord(
                session_snapshot=None if session is None else _blob(session),
                runtime_state=None
                if runtime_state is None
                else from_plain(RuntimeState, runtime_state),
                ops_snapshot=None if ops is None else from_plain(PersistedOpsSnapshot, ops),
            )
        elif kind in ("inputs", "receipts"):
            if len(item) != 4:
                raise ValueError(f"an {kind} chunk has 4 items")
            if self.current is None or item[1] != self.current.value:
                raise ValueError(
                    f"an {kind} chunk names {item[1]!r:.40}, not the runtime before it"
                )
            target = self.inputs if kind == "inputs" else self.receipts
            entries = _entries(item[2], item[3], 16 if kind == "inputs" else 24)
            before = len(target)
            target.update(entries)
            if len(target) != before + len(entries):
                raise ValueError(f"runtime {self.current} holds a key twice in its {kind}")
        else:
            raise ValueError(f"unknown chunk kind {kind!r:.40}")

    def _end_runtime(self) -> None:
        if self.current is not None:
            self.runtimes[self.current] = RuntimeRecord(
                session_snapshot=self.record.session_snapshot,
                input_states=PackedMap.adopt(self.inputs),
                receipts=PackedMap.adopt(self.receipts),
                runtime_state=self.record.runtime_state,
                ops_snapshot=self.record.ops_snapshot,
            )
        self.inputs = {}
        self.receipts = {}

    def finish(self) -> StoreState:
        self._end_runtime()
        return StoreState(self.runtimes.persistent(), self.oauth)


def _state_from_plain(body: Any) -> StoreState:
    if not isinstance(body, dict) or set(body) != {"oauth", "runtimes"}:
        raise ValueError("snapshot body must be a map with keys oauth, runtimes")
    oauth = body["oauth"]
    if oauth is not None:
        _blob(oauth)
    if not isinstance(body["runtimes"], list):
        raise ValueError("runtimes must be an array")
    state = _core.EMPTY
    runtimes = state.runtimes.evolver()
    seen: set[LogicalRuntimeId] = set()
    for item in body["runtimes"]:
        keys = ("runtime", "session", "runtime_state", "ops", "inputs", "receipts")
        if not isinstance(item, dict) or set(item) != set(keys):
            raise ValueError(f"runtime entry must be a map with keys {', '.join(keys)}")
        runtime_id = _runtime(item["runtime"])
        if runtime_id in seen:
            raise ValueError(f"runtime {runtime_id} appears twice")
        seen.add(runtime_id)
        session = None if item["session"] is None else _blob(item["session"])
        runtime_state = (
            None
            if item["runtime_state"] is None
            else from_plain(RuntimeState, item["runtime_state"])
        )
        ops = None if item["ops"] is None else from_plain(PersistedOpsSnapshot, item["ops"])
        if not isinstance(item["inputs"], list) or not isinstance(item["receipts"], list):
            raise ValueError("inputs and receipts must be arrays")
        inputs = [PackedInput.of(from_plain(StoredInputState, s)) for s in item["inputs"]]
        receipts = [PackedReceipt.of(from_plain(RunBoundaryReceipt, r)) for r in item["receipts"]]
        input_map = {p.key: p.blob for p in inputs}
        receipt_map = {p.key: p.blob for p in receipts}
        if len(input_map) != len(inputs) or len(receipt_map) != len(receipts):
            raise ValueError(f"runtime {runtime_id} holds a duplicate input id or receipt key")
        runtimes[runtime_id] = RuntimeRecord(
            session_snapshot=session,
            input_states=PackedMap.adopt(input_map),
            receipts=PackedMap.adopt(receipt_map),
            runtime_state=runtime_state,
            ops_snapshot=ops,
        )
    return StoreState(runtimes.persistent(), oauth)
