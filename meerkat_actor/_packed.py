"""Values held in their encoded form: how the store state keeps input states
and receipts (the bulk of a store) as bytes, not as Python objects.

Rule 1: a *packed* value is the CBOR encoding of the value's plain form
(`_codec.to_plain`, docs/format.md section 5), keyed by a small byte string:
an input state by its input id's 16 bytes, a receipt by its run id's 16
bytes followed by its sequence as 8 big-endian bytes. Both keys sort like
the values they name (UUID order, then sequence), so a listing is sorted
by sorting keys.

Rule 2: unpacking trusts nothing. `unpack_input` and `unpack_receipt` are
a fast path, not a lenient one: the CBOR is decoded under the format's
restrictions (no tags, no indefinite lengths, no duplicate keys, bounded
depth), then an inline pass checks every field as `_codec.from_plain` does
and builds the value without the constructors' second check. Anything the
inline pass does not accept (bad data, or a rarer shape it leaves to the
codec) is decoded again by `from_plain` itself, whose `CodecError` becomes
`CorruptValue`; a differential test holds the two paths equal.

Theory of operation. A stored input state costs a Python object per field
when decoded (about 2.6 KB for the bench's, against 480 bytes packed); held
packed, it costs one `bytes` object and its key. A read decodes the one
value it returns. Bytes a durable store recovers were checksummed when they
were read; they are unpacked (and so checked) when first read, and
`meerkat-actor verify` unpacks every one.
"""

from __future__ import annotations

import io
import itertools
import math
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn, TypeVar, cast, final

import cbor2
from pyrsistent import PMap, pmap

from ._check import U32_MAX, U64_MAX
from ._codec import CodecError, from_plain, to_plain
from ._frozen import thaw
from ._ids import InputId, RunId
from ._types import (
    InputDurability,
    InputLifecycleState,
    InputState,
    InputStateHistoryEntry,
    InputStateSeed,
    InputTerminalOutcome,
    RunApplyBoundary,
    RunBoundaryReceipt,
    StoredInputState,
)

__all__ = [
    "MAX_DEPTH",
    "POINT_READS",
    "CorruptValue",
    "DecodedMemo",
    "PackedInput",
    "PackedMap",
    "PackedReceipt",
    "input_key",
    "pack_input",
    "pack_receipt",
    "receipt_key",
    "unpack_input",
    "unpack_receipt",
]

T = TypeVar("T")

#: CBOR nesting limit of every decode (docs/format.md section 6): the format
#: nests 4 deep (an effect, a value, a history entry, ...) plus the opaque
#: JSON documents, which `_frozen.freeze` bounds at 128 levels.
MAX_DEPTH: Final = 160


class CorruptValue(ValueError):
    """Bytes that do not decode to a valid value; the message says which
    field and why. `offset` is where in the bytes, when it is known (the
    end of the item, for bytes after it), else 0."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


def _bad(message: str) -> NoReturn:
    raise CorruptValue(message)


# --- keys ---------------------------------------------------------------------------


def input_key(input_id: InputId) -> bytes:
    """The key of an input state: its input id's 16 bytes (big-endian)."""
    return input_id.value.bytes


def receipt_key(run_id: RunId, sequence: int) -> bytes:
    """The key of a receipt: the run id's 16 bytes, then the sequence as 8
    big-endian bytes (so keys sort by run id in UUID order, then sequence)."""
    return run_id.value.bytes + sequence.to_bytes(8, "big")


# --- packing ---------------------------------------------------------------------------


class _Packed:
    """A value in its packed form: `key` and `blob` (equal when both are)."""

    __slots__ = ("blob", "key")
    key: bytes
    blob: bytes

    def __init__(self, key: bytes, blob: bytes) -> None:
        self.key = key
        self.blob = blob

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, _Packed)
        return self.key == other.key and self.blob == other.blob

    def __hash__(self) -> int:
        return hash((type(self), self.key, self.blob))


@final
class PackedInput(_Packed):
    """An input state in its packed form: `key` (`input_key`) and `blob`."""

    __slots__ = ()

    @classmethod
    def of(cls, stored: StoredInputState) -> PackedInput:
        return cls(input_key(stored.state.input_id), pack_input(stored))

    def unpack(self) -> StoredInputState:
        return unpack_input(self.blob)

    def __repr__(self) -> str:
        return f"PackedInput({uuid.UUID(bytes=self.key)}, {len(self.blob)} bytes)"


@final
class PackedReceipt(_Packed):
    """A receipt in its packed form: `key` (`receipt_key`) and `blob`."""

    __slots__ = ()

    @classmethod
    def of(cls, receipt: RunBoundaryReceipt) -> PackedReceipt:
        return cls(receipt_key(receipt.run_id, receipt.sequence), pack_receipt(receipt))

    def unpack(self) -> RunBoundaryReceipt:
        return unpack_receipt(self.blob)

    def __repr__(self) -> str:
        run = uuid.UUID(bytes=self.key[:16])
        return (
            f"PackedReceipt({run}/{int.from_bytes(self.key[16:], 'big')}, {len(self.blob)} bytes)"
        )


def pack_input(stored: StoredInputState) -> bytes:
    """The packed form of an input state: CBOR of its plain form, exactly
    `cbor2.dumps(to_plain(stored))` (a test holds them equal), built here
    without the codec's generic machinery."""
    state, seed = stored.state, stored.seed
    plain: dict[str, Any] = {
        "input_id": state.input_id.value.bytes,
        "current_state": seed.phase.value,
    }
    if state.policy is not None:
        plain["policy"] = thaw(state.policy)
    if state.runtime_semantics is not None:
        plain["runtime_semantics"] = thaw(state.runtime_semantics)
    if seed.terminal_outcome is not None:
        outcome = seed.terminal_outcome
        plain["terminal_outcome"] = _CONSUMED_PLAIN if outcome == _CONSUMED else to_plain(outcome)
    if state.durability is not None:
        plain["durability"] = state.durability.value
    if state.idempotency_key is not None:
        plain["idempotency_key"] = state.idempotency_key
    plain["attempt_count"] = seed.attempt_count
    plain["recovery_count"] = state.recovery_count
    if state.history:
        plain["history"] = [
            {
                "timestamp": (entry.timestamp - _EPOCH) // _ONE_US,
                "from": entry.from_state.value,
                "to": entry.to_state.value,
            }
            if entry.reason is None
            else {
                "timestamp": (entry.timestamp - _EPOCH) // _ONE_US,
                "from": entry.from_state.value,
                "to": entry.to_state.value,
                "reason": entry.reason,
            }
            for entry in state.history
        ]
    if state.reconstruction_source is not None:
        plain["reconstruction_source"] = thaw(state.reconstruction_source)
    if state.persisted_input is not None:
        plain["persisted_input"] = thaw(state.persisted_input)
    if seed.last_run_id is not None:
        plain["last_run_id"] = seed.last_run_id.value.bytes
    if seed.last_boundary_sequence is not None:
        plain["last_boundary_sequence"] = seed.last_boundary_sequence
    plain["created_at"] = (state.created_at - _EPOCH) // _ONE_US
    plain["updated_at"] = (state.updated_at - _EPOCH) // _ONE_US
    return cbor2.dumps(plain)


def pack_receipt(receipt: RunBoundaryReceipt) -> bytes:
    """The packed form of a receipt (CBOR of its plain form)."""
    return cbor2.dumps(to_plain(receipt))


# --- unpacking ------------------------------------------------------------------------------


def _reject_tag(*args: object) -> NoReturn:
    raise ValueError("CBOR tags are not part of this format")


# cbor2 decodes these tags itself unless overridden: map each to a rejection.
_NO_SEMANTIC_TAGS: Final[dict[int, Any]] = dict.fromkeys(
    (*range(0, 1024), 1004, 1040, 43000, 55799), _reject_tag
)


def loads_strict(data: bytes) -> Any:
    """Decode one CBOR item filling `data` under docs/format.md section 6.

    Raises:
        CorruptValue: not one valid CBOR item, or a forbidden construct.
    """
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream,
            tag_hook=_reject_tag,
            semantic_decoders=_NO_SEMANTIC_TAGS,
            allow_indefinite=False,
            allow_duplicate_keys=False,
            max_depth=MAX_DEPTH,
        ).decode()
    except Exception as exc:  # cbor2 raises several kinds; all mean "not valid"
        _bad(f"invalid CBOR: {exc}")
    end = stream.tell()
    if end != len(data):
        raise CorruptValue(f"{len(data) - end} bytes follow the CBOR item", end)
    return value


_new = object.__new__
_set = object.__setattr__
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)
_UNKNOWN_SAFETY: Final = uuid.SafeUUID.unknown

_PHASES: Final = {member.value: member for member in InputLifecycleState}
_DURABILITIES: Final = {member.value: member for member in InputDurability}
_BOUNDARIES: Final = {member.value: member for member in RunApplyBoundary}
_CONSUMED: Final = InputTerminalOutcome.consumed()
_CONSUMED_PLAIN: Final = {"outcome_type": "consumed"}
_OPAQUE_FIELDS: Final = ("policy", "runtime_semantics", "reconstruction_source", "persisted_input")
_INT_MIN: Final = -(2**63)
_FREEZE_DEPTH: Final = 128

_INPUT_KEYS: Final = frozenset(
    {
        "input_id",
        "current_state",
        "policy",
        "runtime_semantics",
        "terminal_outcome",
        "durability",
        "idempotency_key",
        "attempt_count",
        "recovery_count",
        "history",
        "reconstruction_source",
        "persisted_input",
        "last_run_id",
        "last_boundary_sequence",
        "created_at",
        "updated_at",
    }
)
_HISTORY_KEYS: Final = frozenset({"timestamp", "from", "to", "reason"})
_RECEIPT_KEYS: Final = frozenset(
    {
        "run_id",
        "boundary",
        "contributing_input_ids",
        "conversation_digest",
        "message_count",
        "sequence",
    }
)
# The fast path: the codec's checks, inline and with no message built. On
# the first failure (or a shape it leaves to the codec) `_codec.from_plain`
# decodes the value again: it accepts what the fast path would have, or
# raises the error that names the field.


class _Slow(Exception):
    pass


def _fast_id(cls: type[Any], data: Any) -> Any:
    if type(data) is not bytes or len(data) != 16:
        raise _Slow
    value = _new(uuid.UUID)
    number = int.from_bytes(data, "big")
    _set(value, "int", number)
    _set(value, "is_safe", _UNKNOWN_SAFETY)
    result = _new(cls)
    _set(result, "value", value)
    _set(result, "_hash", hash(number))
    return result


def _fast_time(data: Any) -> datetime:
    # Timestamps repeat (created_at, updated_at and the history's are often
    # one instant): keep the last few, immutable, datetimes.
    if type(data) is not int:
        raise _Slow
    value = _TIMES.get(data)
    if value is None:
        if len(_TIMES) >= 64:
            _TIMES.clear()
        value = _TIMES[data] = _EPOCH + timedelta(microseconds=data)
    return value


_TIMES: dict[int, datetime] = {}


def _fast_freeze(data: Any, depth: int) -> Any:
    # `freeze` for data fresh from CBOR: text is valid Unicode already.
    kind = type(data)
    if kind is str or kind is bool or data is None:
        return data
    if kind is int:
        if not _INT_MIN <= data <= U64_MAX:
            raise _Slow
        return data
    if depth >= _FREEZE_DEPTH:
        raise _Slow
    if kind is dict:
        for key in data:
            if type(key) is not str:
                raise _Slow
        return pmap({key: _fast_freeze(item, depth + 1) for key, item in data.items()})
    if kind is list:
        return tuple([_fast_freeze(item, depth + 1) for item in data])
    if kind is float and math.isfinite(data):
        return data
    raise _Slow


def _fast_input(data: Any) -> StoredInputState:  # noqa: PLR0915 - one inline pass, for speed
    if type(data) is not dict or not _INPUT_KEYS.issuperset(data):
        raise _Slow
    get = data.get
    state = _new(InputState)
    _set(state, "input_id", _fast_id(InputId, data["input_id"]))
    _set(state, "created_at", _fast_time(data["created_at"]))
    _set(state, "updated_at", _fast_time(data["updated_at"]))
    history = get("history", ())
    if history:
        if type(history) is not list:
            raise _Slow
        entries = []
        for item in history:
            if type(item) is not dict or not _HISTORY_KEYS.issuperset(item):
                raise _Slow
            reason = item.get("reason")
            if reason is not None and type(reason) is not str:
                raise _Slow
            entry = _new(InputStateHistoryEntry)
            _set(entry, "timestamp", _fast_time(item["timestamp"]))
            _set(entry, "from_state", _PHASES[item["from"]])
            _set(entry, "to_state", _PHASES[item["to"]])
            _set(entry, "reason", reason)
            entries.append(entry)
        history = tuple(entries)
    elif type(history) is not list and history != ():
        raise _Slow
    else:
        history = ()
    _set(state, "history", history)
    for name in _OPAQUE_FIELDS:
        value = get(name)
        _set(state, name, None if value is None else _fast_freeze(value, 0))
    durability = get("durability")
    _set(state, "durability", None if durability is None else _DURABILITIES[durability])
    key = get("idempotency_key")
    if key is not None and type(key) is not str:
        raise _Slow
    _set(state, "idempotency_key", key)
    recovery = get("recovery_count", 0)
    if type(recovery) is not int or not 0 <= recovery <= U32_MAX:
        raise _Slow
    _set(state, "recovery_count", recovery)
    seed = _new(InputStateSeed)
    _set(seed, "phase", _PHASES[data["current_state"]])
    run_id = get("last_run_id")
    _set(seed, "last_run_id", None if run_id is None else _fast_id(RunId, run_id))
    sequence = get("last_boundary_sequence")
    if sequence is not None and (type(sequence) is not int or not 0 <= sequence <= U64_MAX):
        raise _Slow
    _set(seed, "last_boundary_sequence", sequence)
    outcome = get("terminal_outcome")
    if outcome is None:
        _set(seed, "terminal_outcome", None)
    elif outcome == _CONSUMED_PLAIN:
        _set(seed, "terminal_outcome", _CONSUMED)
    else:
        raise _Slow  # the other outcomes are rarer: the checked path builds them
    attempts = get("attempt_count", 0)
    if type(attempts) is not int or not 0 <= attempts <= U32_MAX:
        raise _Slow
    _set(seed, "attempt_count", attempts)
    stored = _new(StoredInputState)
    _set(stored, "state", state)
    _set(stored, "seed", seed)
    return stored


def _fast_receipt(data: Any) -> RunBoundaryReceipt:
    if type(data) is not dict or not _RECEIPT_KEYS.issuperset(data):
        raise _Slow
    ids = data["contributing_input_ids"]
    digest = data.get("conversation_digest")
    count, sequence = data["message_count"], data["sequence"]
    if (
        type(ids) is not list
        or (digest is not None and type(digest) is not str)
        or type(count) is not int
        or not 0 <= count <= U64_MAX
        or type(sequence) is not int
        or not 0 <= sequence <= U64_MAX
    ):
        raise _Slow
    receipt = _new(RunBoundaryReceipt)
    _set(receipt, "run_id", _fast_id(RunId, data["run_id"]))
    _set(receipt, "boundary", _BOUNDARIES[data["boundary"]])
    _set(receipt, "contributing_input_ids", tuple([_fast_id(InputId, i) for i in ids]))
    _set(receipt, "conversation_digest", digest)
    _set(receipt, "message_count", count)
    _set(receipt, "sequence", sequence)
    return receipt


def _slow(cls: type[T], data: Any) -> T:
    try:
        return from_plain(cls, data)
    except CodecError as exc:
        raise CorruptValue(str(exc)) from None


def _build_input(data: Any) -> StoredInputState:
    try:
        return _fast_input(data)
    except (_Slow, KeyError, TypeError, OverflowError):
        return _slow(StoredInputState, data)


def _build_receipt(data: Any) -> RunBoundaryReceipt:
    try:
        return _fast_receipt(data)
    except (_Slow, KeyError, TypeError):
        return _slow(RunBoundaryReceipt, data)


def unpack_input(blob: bytes) -> StoredInputState:
    """The input state `blob` holds.

    Raises:
        CorruptValue: `blob` is not the packed form of a valid input state.
    """
    return _build_input(loads_strict(blob))


def unpack_receipt(blob: bytes) -> RunBoundaryReceipt:
    """The receipt `blob` holds.

    Raises:
        CorruptValue: `blob` is not the packed form of a valid receipt.
    """
    return _build_receipt(loads_strict(blob))


# --- the memo of recent point reads ------------------------------------------------------


@final
class DecodedMemo:
    """The values of the packed blobs most recently decoded by point reads,
    so that reading the same input state or receipt again costs a lookup,
    not a decode (about 25 µs for the bench's input state).

    Theory of operation. An entry is keyed by the *identity* of the blob it
    was decoded from and keeps that blob alive: a blob is immutable, and a
    write to a key puts a new blob object in the store state, so an entry
    can never answer for a value that has changed (and an id cannot be
    reused while the entry holds its blob). Values are immutable too, so one
    decoded value can be returned to every reader, as the store did when it
    held objects.

    Bounded two ways: two generations of at most `entries` entries and
    `blob_bytes` bytes of blob each; a hit in the older is moved to the
    newer, and when the newer is full the older is dropped (an approximate
    LRU with O(1) steps). Blobs over `largest` bytes are not kept. Each step
    is a single dict operation or reference swap, so a race between threads
    can at worst lose an entry, never return a wrong one.
    """

    def __init__(
        self, entries: int = 256, blob_bytes: int = 1 << 20, largest: int = 64 << 10
    ) -> None:
        self._entries = entries
        self._blob_bytes = blob_bytes
        self._largest = largest
        self._young: dict[int, tuple[bytes, object]] = {}
        self._old: dict[int, tuple[bytes, object]] = {}
        self._young_bytes = 0

    def clear(self) -> None:
        self._young, self._old, self._young_bytes = {}, {}, 0

    def _get(self, blob: bytes) -> object | None:
        key = id(blob)
        entry = self._young.get(key)
        if entry is None:
            entry = self._old.get(key)
            if entry is None or entry[0] is not blob:
                return None
            self._put(blob, entry[1])
            return entry[1]
        return entry[1] if entry[0] is blob else None

    def _put(self, blob: bytes, value: object) -> None:
        size = len(blob)
        if size > self._largest:
            return
        if len(self._young) >= self._entries or self._young_bytes + size > self._blob_bytes:
            self._old, self._young, self._young_bytes = self._young, {}, 0
        self._young[id(blob)] = (blob, value)
        self._young_bytes += size

    def _remembered(self, blob: bytes, unpack: Callable[[bytes], T]) -> T:
        value = self._get(blob)
        if value is None:
            value = unpack(blob)
            self._put(blob, value)
        return cast(T, value)

    def input(self, blob: bytes) -> StoredInputState:
        """`unpack_input(blob)`, remembered."""
        return self._remembered(blob, unpack_input)

    def receipt(self, blob: bytes) -> RunBoundaryReceipt:
        """`unpack_receipt(blob)`, remembered."""
        return self._remembered(blob, unpack_receipt)


#: The memo the store state's point reads share (`_core.StoreState`).
POINT_READS: Final = DecodedMemo()


# --- the map that holds them ------------------------------------------------------------


@final
class PackedMap:
    """An immutable map from byte keys to packed values, built for memory
    and the garbage collector rather than for generality.

    Theory of operation. A `pyrsistent.PMap` costs a bucket list per entry,
    which the garbage collector tracks: a store of 10^6 input states made a
    full collection walk 10^6 lists (0.7 s on an idle machine, the event
    loop stalled meanwhile). A `PackedMap` is a *base*, a plain `dict`
    holding only `bytes` (CPython does not track such a dict, and it costs
    about 50 bytes an entry), plus an *overlay*, a small `PMap` of the
    entries set since the base was built. Setting a key makes a new map
    sharing the base, with a new overlay; once the overlay holds more than
    an eighth of the base (and at least `MERGE_AT`), the next set builds a
    new base (one `dict` copy, amortised over the sets that filled the
    overlay). Nothing is ever changed in place: the base is private to the
    maps that share it and never written after it is built.

    Keys are never removed one by one (a store only removes a whole
    runtime), so a map has no delete. Equality is by content.
    """

    __slots__ = ("_base", "_length", "_overlay")

    #: The overlay is merged into a new base once it holds more than
    #: max(MERGE_AT, len(base) // 8) entries.
    MERGE_AT: Final = 64

    _base: dict[bytes, bytes]
    _overlay: PMap[bytes, bytes]
    _length: int

    def __init__(self, base: Mapping[bytes, bytes] | None = None) -> None:
        """A map holding `base` (copied into a new dict)."""
        self._base = {} if base is None else dict(base)
        self._overlay = _EMPTY_OVERLAY
        self._length = len(self._base)

    @classmethod
    def _of(cls, base: dict[bytes, bytes], overlay: PMap[bytes, bytes], length: int) -> PackedMap:
        result = _new(cls)
        result._base = base
        result._overlay = overlay
        result._length = length
        return result

    @classmethod
    def adopt(cls, base: dict[bytes, bytes]) -> PackedMap:
        """A map holding `base` itself, which the caller must never change
        again (recovery hands over the dicts it built)."""
        return cls._of(base, _EMPTY_OVERLAY, len(base))

    def get(self, key: bytes) -> bytes | None:
        value = self._overlay.get(key)
        if value is None:
            return self._base.get(key)
        return value

    def __getitem__(self, key: bytes) -> bytes:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._overlay or key in self._base

    def __len__(self) -> int:
        return self._length

    def __bool__(self) -> bool:
        return self._length > 0

    def __iter__(self) -> Iterator[bytes]:
        overlay = self._overlay
        if not overlay:
            return iter(self._base)
        return itertools.chain((k for k in self._base if k not in overlay), overlay.keys())

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        """Every (key, value), in no particular order."""
        overlay = self._overlay
        if not overlay:
            return self._base.items()
        return itertools.chain(
            ((k, v) for k, v in self._base.items() if k not in overlay), overlay.items()
        )

    def sorted_items(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) in key order."""
        if not self._overlay:
            return sorted(self._base.items())
        return sorted(self.items())

    def to_dict(self) -> dict[bytes, bytes]:
        """A new dict of the content."""
        merged = dict(self._base)
        merged.update(self._overlay)
        return merged

    def set(self, key: bytes, value: bytes) -> PackedMap:
        """A map with `key` set to `value`."""
        return self.update(((key, value),))

    def update(self, pairs: Iterable[tuple[bytes, bytes]]) -> PackedMap:
        """A map with every (key, value) of `pairs` set, in order (a later
        pair wins)."""
        base, length, old = self._base, self._length, self._overlay
        changes = dict(pairs)
        for key in changes:
            if key not in old and key not in base:
                length += 1
        if len(old) + len(changes) > max(self.MERGE_AT, len(base) >> 3):
            merged = dict(base)
            merged.update(old)
            merged.update(changes)
            return self._of(merged, _EMPTY_OVERLAY, length)
        return self._of(base, old.update(changes), length)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PackedMap):
            return NotImplemented
        if self._length != other._length:
            return False
        if self._base is other._base and self._overlay is other._overlay:
            return True
        return all(other.get(k) == v for k, v in self.items())

    def __hash__(self) -> int:
        return hash(frozenset(self.items()))

    def __repr__(self) -> str:
        return f"PackedMap({self._length} entries)"


_EMPTY_OVERLAY: Final[PMap[bytes, bytes]] = pmap()
