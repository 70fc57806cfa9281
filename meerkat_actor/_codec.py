"""The two encodings of every value type (SPEC §7): CBOR plain data and Meerkat JSON.

Rule 1: one structural description per type. Field names, key order, which
keys are optional, defaulted or omitted, and how unions are tagged are written
down once (the `_SCHEMAS` table below) and serve both encodings. What differs
between the encodings is only a small *leaf policy*: how a UUID, a datetime and
a byte string are written, and whether an unknown key is an error.

Rule 2: decoding never trusts its input. Every value is type-checked (`bool`
is not an integer, a float is not an integer) and range-checked before a value
constructor sees it; every failure is a `CodecError` whose message starts with
the path of the offending item, e.g. `StoredInputState.history[2].timestamp:
expected RFC 3339 string, got int`. Encoding trusts its input: values are
valid by construction (SPEC §2).

Theory of operation
-------------------
The shape is Meerkat's serde JSON (Rust struct declaration order, the tag of
an internally tagged enum first, `skip_serializing_if` keys omitted):

- `RunBoundaryReceipt`: `run_id, boundary, contributing_input_ids,
  [conversation_digest], message_count, sequence`.
- `StoredInputState`: the flat persisted row of Meerkat's `InputStateSerde`:
  `input_id, current_state, [policy], [runtime_semantics], [terminal_outcome],
  [durability], [idempotency_key], attempt_count, recovery_count, [history],
  [reconstruction_source], [persisted_input], [last_run_id],
  [last_boundary_sequence], created_at, updated_at`. `current_state`,
  `terminal_outcome`, `attempt_count`, `last_run_id` and
  `last_boundary_sequence` come from the seed, the rest from the shell;
  `history` is omitted when empty, `attempt_count`/`recovery_count` are always
  written and default to 0 on read, `history` defaults to `[]` (but `null` is
  an error, as in serde).
- `InputState` and `InputStateSeed` alone (Rust never serializes them
  separately; this is our choice) encode as their own keys of that flat row,
  in the same order: the seed as `current_state, [terminal_outcome],
  attempt_count, [last_run_id], [last_boundary_sequence]`, the shell as the
  remaining keys.
- `InputStateHistoryEntry`: `timestamp, from, to, [reason]`.
- `InputTerminalOutcome`: internally tagged by `outcome_type`, e.g.
  `{"outcome_type":"superseded","superseded_by":"<uuid>"}`.
- `InputAbandonReason`: externally tagged: `"retired"` or
  `{"max_attempts_exhausted":{"attempts":3}}` (`{"retired":null}` is also
  read, as serde_json does).
- `SessionDelta`: `{"session_snapshot": <bytes>}`.
- `PersistedOpsSnapshot`: `epoch_id, authority_state, operation_specs,
  completion_entries, cursors`, each always written (`null` when `None`).
- `MachineLifecycleCommit`: `{"runtime_state": "<state>"}` (our choice).
- Enums are their wire strings (`"idle"`), ids their canonical form.
- Opaque documents (policy, runtime_semantics, reconstruction_source,
  persisted_input, the ops payloads) are thawed on encode and frozen by the
  value constructor on decode, unchanged. Frozen objects do not keep their key
  order, so the key order *inside* an opaque document is not preserved.

On read, as serde does: a missing `Option` key or an explicit `null` gives
`None`; a missing defaulted key gives its default; other missing keys are
errors. Key order on read is free.

The leaf policies:

============  ===============================  ==================================
leaf          JSON (`to_json`, lenient)        plain (`to_plain`, strict)
============  ===============================  ==================================
UUID / id     lowercase hyphenated string      16-byte `bytes` (big-endian)
datetime      RFC 3339, chrono AutoSi, `Z`     `int` microseconds since the Unix
                                               epoch, UTC
bytes         array of integers 0..255         `bytes`
unknown key   ignored (serde has no            `CodecError`
              deny_unknown_fields)
============  ===============================  ==================================

Plain data holds only dict (str keys), list, int, str, bytes, bool, None and
float, so it needs no CBOR tag. JSON timestamps are written like chrono's
`AutoSi`: no fraction when the microseconds are zero, 3 digits for whole
milliseconds, else 6 (Python has no nanoseconds). Read, a timestamp may have
`Z` or a numeric offset and any number of fraction digits; digits beyond the
microsecond are truncated, not rounded.

Where our JSON bytes can differ from a row Rust wrote, the value being the
same: the key order inside opaque documents (above); timestamp fractions
(Rust writes nanoseconds, which are truncated on read); and floats inside
opaque documents, written as Python's shortest repr (`1e+16` where serde_json
writes `1e16`).

Each schema node compiles, once per policy at import, into an encode and a
decode closure; the public functions dispatch on the value class through a
dict. Decoding reports paths lazily: a failing closure raises `_Fail`, and
each enclosing struct or list appends its key or index on the way out, so the
success path builds no path strings.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter, itemgetter
from typing import Any, Final, TypeVar

from ._check import U64_MAX
from ._frozen import thaw
from ._ids import InputId, LogicalRuntimeId, RunId, SessionId
from ._types import (
    InputAbandonReason,
    InputDurability,
    InputLifecycleState,
    InputState,
    InputStateHistoryEntry,
    InputStateSeed,
    InputTerminalOutcome,
    MachineLifecycleCommit,
    PersistedOpsSnapshot,
    RunApplyBoundary,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
    _commit_for,
    _stored_seed,
)

__all__ = [
    "CodecError",
    "dumps_json",
    "from_json",
    "from_plain",
    "loads_json",
    "to_json",
    "to_plain",
]

T = TypeVar("T")

_Enc = Callable[[Any], Any]
_Dec = Callable[[Any], Any]


class CodecError(ValueError):
    """Raised when data cannot be decoded into the requested value type.

    The message starts with the path of the offending item, e.g.
    `RunBoundaryReceipt.sequence: expected integer in [0, 2**64-1], got -1`.
    When a value constructor refused the decoded fields, that `TypeError` or
    `ValueError` is chained as the cause.
    """


class _Fail(Exception):
    """Internal: a decoding failure on its way up; enclosing nodes add path segments."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        self.segments: list[str] = []  # innermost first


def _type_name(data: object) -> str:
    return "null" if data is None else type(data).__name__


# --- leaf policies -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LeafPolicy:
    """How one encoding writes and reads the leaves that differ between encodings."""

    strict: bool  # unknown keys are an error
    uuid_out: _Enc
    uuid_in: _Dec
    time_out: _Enc
    time_in: _Dec
    bytes_out: _Enc
    bytes_in: _Dec


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)


def _uuid_to_bytes(value: uuid.UUID) -> bytes:
    return value.bytes


def _uuid_from_bytes(data: Any) -> uuid.UUID:
    if type(data) is not bytes:
        raise _Fail(f"expected 16-byte UUID bytes, got {_type_name(data)}")
    if len(data) != 16:
        raise _Fail(f"expected 16-byte UUID bytes, got {len(data)} bytes")
    return uuid.UUID(bytes=data)


def _time_to_micros(value: datetime) -> int:
    return (value - _EPOCH) // _ONE_US


def _time_from_micros(data: Any) -> datetime:
    if type(data) is not int:
        raise _Fail(f"expected integer microseconds since the Unix epoch, got {_type_name(data)}")
    try:
        return _EPOCH + timedelta(microseconds=data)
    except OverflowError:
        raise _Fail(f"timestamp {data} microseconds is out of range") from None


def _bytes_identity(value: bytes) -> bytes:
    return value


def _bytes_from_plain(data: Any) -> bytes:
    if type(data) is not bytes:
        raise _Fail(f"expected bytes, got {_type_name(data)}")
    return data


_HEX = "[0-9a-fA-F]"
_UUID_HYPHENATED = re.compile(f"{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}}")
_UUID_SIMPLE = re.compile(f"{_HEX}{{32}}")


def _uuid_to_text(value: uuid.UUID) -> str:
    return str(value)


def _uuid_from_text(data: Any) -> uuid.UUID:
    # The forms Rust's uuid crate parses: hyphenated, simple (32 hex digits),
    # braced `{hyphenated}` and `urn:uuid:hyphenated`; hex digits in either case.
    if type(data) is not str:
        raise _Fail(f"expected UUID string, got {_type_name(data)}")
    text = data
    if len(text) == 38 and text[0] == "{" and text[-1] == "}":
        text = text[1:-1]
    elif len(text) == 45 and text.startswith("urn:uuid:"):
        text = text[9:]
    pattern = _UUID_SIMPLE if len(data) == 32 else _UUID_HYPHENATED
    if pattern.fullmatch(text) is None:
        raise _Fail(f"not a UUID: {data!r}")
    return uuid.UUID(text)


def _time_to_rfc3339(value: datetime) -> str:
    # chrono's SecondsFormat::AutoSi with use_z: the shortest of 0/3/6/9
    # fraction digits that is exact; Python stops at microseconds.
    base = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    micros = value.microsecond
    if micros == 0:
        return base + "Z"
    if micros % 1000 == 0:
        return f"{base}.{micros // 1000:03d}Z"
    return f"{base}.{micros:06d}Z"


_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)


def _time_from_rfc3339(data: Any) -> datetime:
    if type(data) is not str:
        raise _Fail(f"expected RFC 3339 string, got {_type_name(data)}")
    match = _RFC3339.fullmatch(data)
    if match is None:
        raise _Fail(f"not an RFC 3339 timestamp: {data!r}")
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0  # truncate, never round
    try:
        value = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, UTC
        )
        if sign is not None:
            hours, minutes = int(off_h), int(off_m)
            if hours > 23 or minutes > 59:
                raise ValueError(f"offset {sign}{off_h}:{off_m} is out of range")
            offset = timedelta(hours=hours, minutes=minutes)
            value = value - offset if sign == "+" else value + offset
    except (ValueError, OverflowError) as exc:
        raise _Fail(f"not an RFC 3339 timestamp: {data!r} ({exc})") from None
    return value


def _bytes_to_list(value: bytes) -> list[int]:
    return list(value)


def _bytes_from_list(data: Any) -> bytes:
    # serde's Vec<u8>: a JSON array of integers 0..255.
    if type(data) is not list:
        raise _Fail(f"expected array of byte values, got {_type_name(data)}")
    if set(map(type, data)) <= {int}:
        try:
            return bytes(data)
        except ValueError:
            pass
    for index, item in enumerate(data):  # slow path: find the culprit
        if type(item) is not int or not 0 <= item <= 255:
            fail = _Fail(f"expected integer in [0, 255], got {_describe(item)}")
            fail.segments.append(f"[{index}]")
            raise fail
    raise AssertionError("unreachable")  # pragma: no cover


_PLAIN: Final = _LeafPolicy(
    strict=True,
    uuid_out=_uuid_to_bytes,
    uuid_in=_uuid_from_bytes,
    time_out=_time_to_micros,
    time_in=_time_from_micros,
    bytes_out=_bytes_identity,
    bytes_in=_bytes_from_plain,
)

_JSON: Final = _LeafPolicy(
    strict=False,
    uuid_out=_uuid_to_text,
    uuid_in=_uuid_from_text,
    time_out=_time_to_rfc3339,
    time_in=_time_from_rfc3339,
    bytes_out=_bytes_to_list,
    bytes_in=_bytes_from_list,
)


def _describe(data: object) -> str:
    return str(data) if type(data) is int else _type_name(data)


# --- schema nodes ----------------------------------------------------------------


class _Node(abc.ABC):
    """A schema node: compiles into an encode and a decode closure for a policy.

    `encoder()` may return None, meaning the value is written as it is.
    """

    __slots__ = ()

    def encoder(self, policy: _LeafPolicy) -> _Enc | None:
        return None

    @abc.abstractmethod
    def decoder(self, policy: _LeafPolicy) -> _Dec:
        """The decode closure of this node under `policy`."""


class _Str(_Node):
    __slots__ = ()

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        def decode(data: Any) -> str:
            if type(data) is not str:
                raise _Fail(f"expected string, got {_type_name(data)}")
            return data

        return decode


class _U64(_Node):
    """A non-negative integer up to 2**64-1.

    Rust's u64 and usize. Meerkat's counts (`attempt_count`, `recovery_count`,
    `attempts`) are u32 there; we read the model's wider range so every value
    round-trips, and a count above 2**32-1 is one Meerkat cannot read.
    """

    __slots__ = ()

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        def decode(data: Any) -> int:
            if type(data) is not int or not 0 <= data <= U64_MAX:
                raise _Fail(f"expected integer in [0, 2**64-1], got {_describe(data)}")
            return data

        return decode


class _Enum(_Node):
    """A unit enum written as its value string."""

    __slots__ = ("cls", "members")

    def __init__(self, cls: Any) -> None:
        self.cls = cls
        self.members: dict[str, Any] = {member.value: member for member in cls}

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        return attrgetter("_value_")

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        members = self.members
        expected = ", ".join(members)
        name = self.cls.__name__

        def decode(data: Any) -> Any:
            if type(data) is not str:
                raise _Fail(f"expected {name} string, got {_type_name(data)}")
            member = members.get(data)
            if member is None:
                raise _Fail(f"unknown {name} {data!r} (expected one of: {expected})")
            return member

        return decode


class _UuidId(_Node):
    """A UUID-valued id class (`RunId`, `InputId`, `SessionId`)."""

    __slots__ = ("cls",)

    def __init__(self, cls: Any) -> None:
        self.cls = cls

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        uuid_out = policy.uuid_out

        def encode(value: Any) -> Any:
            return uuid_out(value.value)

        return encode

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        cls, uuid_in = self.cls, policy.uuid_in

        def decode(data: Any) -> Any:
            return cls(uuid_in(data))

        return decode


class _RuntimeId(_Node):
    """`LogicalRuntimeId`: its string in both encodings."""

    __slots__ = ()

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        return attrgetter("value")

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        check = _Str().decoder(policy)

        def decode(data: Any) -> LogicalRuntimeId:
            text = check(data)
            try:
                return LogicalRuntimeId(text)
            except (TypeError, ValueError) as exc:
                raise _Fail(str(exc)) from exc

        return decode


class _Time(_Node):
    __slots__ = ()

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        return policy.time_out

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        return policy.time_in


class _Bytes(_Node):
    __slots__ = ()

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        return policy.bytes_out

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        return policy.bytes_in


class _Opaque(_Node):
    """An opaque JSON document: thawed on encode; the value constructor freezes
    (and validates) it on decode."""

    __slots__ = ()

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        return thaw

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        def decode(data: Any) -> Any:
            return data

        return decode


class _Seq(_Node):
    """A Rust `Vec<T>`: a list on the wire, a tuple in the value."""

    __slots__ = ("item",)

    def __init__(self, item: _Node) -> None:
        self.item = item

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        item = self.item.encoder(policy)
        if item is None:
            return list
        return lambda value: list(map(item, value))

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        item = self.item.decoder(policy)

        def decode(data: Any) -> tuple[Any, ...]:
            if type(data) is not list:
                raise _Fail(f"expected array, got {_type_name(data)}")
            try:
                return tuple(map(item, data))
            except _Fail as fail:
                for index, element in enumerate(data):  # rare: find the index
                    try:
                        item(element)
                    except _Fail:
                        fail.segments.append(f"[{index}]")
                        break
                raise

        return decode


# How a field is written (`omit`) and read (`presence`).
_WRITE_ALWAYS, _OMIT_IF_NONE, _OMIT_IF_EMPTY = 0, 1, 2
_REQUIRED, _OPTION, _DEFAULT = 0, 1, 2
_MISSING: Final = object()


@dataclass(frozen=True, slots=True)
class _Field:
    """One key of a struct.

    `key` is the wire name, `attr` the constructor keyword, `get` the
    attribute path read when encoding (defaults to `attr`).
    """

    key: str
    node: _Node
    attr: str
    omit: int
    presence: int
    default: Any = None
    get: str | None = None


def _required(key: str, node: _Node, attr: str | None = None) -> _Field:
    """A plain Rust field: always written, required on read."""
    return _Field(key, node, attr or key, _WRITE_ALWAYS, _REQUIRED)


def _skipped(key: str, node: _Node, attr: str | None = None) -> _Field:
    """`Option<T>` with `skip_serializing_if = "Option::is_none"`."""
    return _Field(key, node, attr or key, _OMIT_IF_NONE, _OPTION)


def _nullable(key: str, node: _Node) -> _Field:
    """An always-written field that may be `null` (read: missing or null is None)."""
    return _Field(key, node, key, _WRITE_ALWAYS, _OPTION)


def _defaulted(key: str, node: _Node, default: Any, *, omit_empty: bool = False) -> _Field:
    """`#[serde(default)]`: a missing key reads as `default`, `null` is an error."""
    omit = _OMIT_IF_EMPTY if omit_empty else _WRITE_ALWAYS
    return _Field(key, node, key, omit, _DEFAULT, default)


class _Struct(_Node):
    """A Rust struct (or struct variant): a map with keys in declaration order."""

    __slots__ = ("build", "fields")

    def __init__(self, fields: Iterable[_Field], build: Callable[[dict[str, Any]], Any]) -> None:
        self.fields = tuple(fields)
        self.build = build

    def encoder(self, policy: _LeafPolicy, tag: tuple[str, str] | None = None) -> _Enc:
        steps = tuple(
            (f.key, attrgetter(f.get or f.attr), f.node.encoder(policy), f.omit)
            for f in self.fields
        )

        def encode(value: Any) -> dict[str, Any]:
            out: dict[str, Any] = {} if tag is None else {tag[0]: tag[1]}
            for key, get, enc, omit in steps:
                item = get(value)
                if item is None:
                    if omit:
                        continue
                    out[key] = None
                elif omit == _OMIT_IF_EMPTY and not item:
                    continue
                else:
                    out[key] = item if enc is None else enc(item)
            return out

        return encode

    def decoder(self, policy: _LeafPolicy, extra_keys: Iterable[str] = ()) -> _Dec:
        steps = tuple(
            (f.key, f.attr, f.node.decoder(policy), f.presence, f.default) for f in self.fields
        )
        known = frozenset(f.key for f in self.fields).union(extra_keys)
        strict = policy.strict
        build = self.build

        def decode(data: Any) -> Any:
            if type(data) is not dict:
                raise _Fail(f"expected object, got {_type_name(data)}")
            if strict and not known.issuperset(data):
                unknown = next(key for key in data if key not in known)
                raise _Fail(f"unknown key {unknown!r}")
            kwargs: dict[str, Any] = {}
            key = ""
            try:
                for key, attr, dec, presence, default in steps:
                    raw = data.get(key, _MISSING)
                    if raw is _MISSING:
                        if presence == _REQUIRED:
                            raise _Fail("missing required key")
                        kwargs[attr] = default
                    elif raw is None and presence == _OPTION:
                        kwargs[attr] = None
                    else:
                        kwargs[attr] = dec(raw)
            except _Fail as fail:
                fail.segments.append("." + key)
                raise
            try:
                return build(kwargs)
            except (TypeError, ValueError) as exc:
                raise _Fail(str(exc)) from exc

        return decode


class _InternallyTagged(_Node):
    """`#[serde(tag = "...")]`: `{tag: variant, ...variant fields}`."""

    __slots__ = ("name", "tag", "variants")

    def __init__(self, name: str, tag: str, variants: Mapping[str, _Struct]) -> None:
        self.name = name
        self.tag = tag
        self.variants = dict(variants)

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        encoders = {
            kind: struct.encoder(policy, tag=(self.tag, kind))
            for kind, struct in self.variants.items()
        }

        def encode(value: Any) -> Any:
            return encoders[value.kind](value)

        return encode

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        tag = self.tag
        decoders = {
            kind: struct.decoder(policy, extra_keys=(tag,))
            for kind, struct in self.variants.items()
        }
        expected = ", ".join(decoders)
        name = self.name

        def decode(data: Any) -> Any:
            if type(data) is not dict:
                raise _Fail(f"expected object, got {_type_name(data)}")
            kind = data.get(tag, _MISSING)
            if kind is _MISSING:
                fail = _Fail("missing required key")
            elif type(kind) is not str:
                fail = _Fail(f"expected string, got {_type_name(kind)}")
            elif kind not in decoders:
                fail = _Fail(f"unknown {name} variant {kind!r} (expected one of: {expected})")
            else:
                return decoders[kind](data)
            fail.segments.append("." + tag)
            raise fail

        return decode


class _ExternallyTagged(_Node):
    """serde's default enum tagging: a unit variant is its name, a struct
    variant `{name: {fields}}`."""

    __slots__ = ("name", "structs", "units")

    def __init__(self, name: str, units: Mapping[str, Any], structs: Mapping[str, _Struct]) -> None:
        self.name = name
        self.units = dict(units)
        self.structs = dict(structs)

    def encoder(self, policy: _LeafPolicy) -> _Enc:
        units = frozenset(self.units)
        encoders = {kind: struct.encoder(policy) for kind, struct in self.structs.items()}

        def encode(value: Any) -> Any:
            kind = value.kind
            if kind in units:
                return kind
            return {kind: encoders[kind](value)}

        return encode

    def decoder(self, policy: _LeafPolicy) -> _Dec:
        units = self.units
        decoders = {kind: struct.decoder(policy) for kind, struct in self.structs.items()}
        expected = ", ".join([*units, *decoders])
        name = self.name

        def decode(data: Any) -> Any:
            if type(data) is str:
                unit = units.get(data)
                if unit is not None:
                    return unit
                if data in decoders:
                    raise _Fail(f"{name} variant {data!r} needs its fields")
                raise _Fail(f"unknown {name} variant {data!r} (expected one of: {expected})")
            if type(data) is not dict:
                raise _Fail(f"expected string or one-key object, got {_type_name(data)}")
            if len(data) != 1:
                raise _Fail(f"expected string or one-key object, got object with {len(data)} keys")
            ((kind, body),) = data.items()
            if kind in units and body is None:
                return units[kind]
            decode_body = decoders.get(kind)
            if decode_body is None:
                if kind in units:
                    fail = _Fail(f"unit variant takes no fields, got {_type_name(body)}")
                    fail.segments.append(f".{kind}")
                    raise fail
                raise _Fail(f"unknown {name} variant {kind!r} (expected one of: {expected})")
            try:
                return decode_body(body)
            except _Fail as fail:
                fail.segments.append(f".{kind}")
                raise

        return decode


# --- the structural description ---------------------------------------------------


def _positional(cls: Any) -> Callable[[dict[str, Any]], Any]:
    """Build the dataclass `cls` from decoded fields, passing them positionally
    (markedly faster than `cls(**kwargs)`)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if len(names) == 1:
        (name,) = names
        return lambda kwargs: cls(kwargs[name])
    get = itemgetter(*names)
    return lambda kwargs: cls(*get(kwargs))


def _record(cls: Any, fields: Iterable[_Field], build: Callable[..., Any] | None = None) -> _Struct:
    """The struct of the dataclass `cls`; `fields` must decode every field of it
    (a missing key gives its default). `build`, if given, makes the value from
    the fields in declaration order instead of the constructor."""
    fields = tuple(fields)
    missing = {f.name for f in dataclasses.fields(cls)} ^ {f.attr for f in fields}
    if missing:  # a schema bug, caught at import
        raise AssertionError(f"schema of {cls.__name__} does not match its fields: {missing}")
    if build is None:
        return _Struct(fields, _positional(cls))
    get = itemgetter(*[f.name for f in dataclasses.fields(cls)])
    return _Struct(fields, lambda kwargs: build(*get(kwargs)))


_INPUT_ID = _UuidId(InputId)
_RUN_ID = _UuidId(RunId)
_U64_NODE = _U64()
_STR = _Str()
_TIME = _Time()
_OPAQUE = _Opaque()

_RECEIPT = _record(
    RunBoundaryReceipt,
    [
        _required("run_id", _RUN_ID),
        _required("boundary", _Enum(RunApplyBoundary)),
        _required("contributing_input_ids", _Seq(_INPUT_ID)),
        _skipped("conversation_digest", _STR),
        _required("message_count", _U64_NODE),
        _required("sequence", _U64_NODE),
    ],
)

_ABANDON_REASON = _ExternallyTagged(
    "InputAbandonReason",
    units={
        reason.kind: reason
        for reason in (
            InputAbandonReason.retired(),
            InputAbandonReason.reset(),
            InputAbandonReason.stopped(),
            InputAbandonReason.destroyed(),
            InputAbandonReason.cancelled(),
        )
    },
    structs={
        "max_attempts_exhausted": _Struct(
            [_required("attempts", _U64_NODE)],
            lambda kw: InputAbandonReason.max_attempts_exhausted(kw["attempts"]),
        )
    },
)

_TERMINAL_OUTCOME = _InternallyTagged(
    "InputTerminalOutcome",
    "outcome_type",
    {
        "consumed": _Struct([], lambda kw: InputTerminalOutcome.consumed()),
        "superseded": _Struct(
            [_required("superseded_by", _INPUT_ID)],
            lambda kw: InputTerminalOutcome.superseded(kw["superseded_by"]),
        ),
        "coalesced": _Struct(
            [_required("aggregate_id", _INPUT_ID)],
            lambda kw: InputTerminalOutcome.coalesced(kw["aggregate_id"]),
        ),
        "abandoned": _Struct(
            [_required("reason", _ABANDON_REASON)],
            lambda kw: InputTerminalOutcome.abandoned(kw["reason"]),
        ),
    },
)

_LIFECYCLE_STATE = _Enum(InputLifecycleState)

_HISTORY_ENTRY = _record(
    InputStateHistoryEntry,
    [
        _required("timestamp", _TIME),
        _required("from", _LIFECYCLE_STATE, attr="from_state"),
        _required("to", _LIFECYCLE_STATE, attr="to_state"),
        _skipped("reason", _STR),
    ],
)

# The flat persisted input row (Meerkat's InputStateSerde), in wire order; each
# field is tagged with the part of StoredInputState it belongs to.
_INPUT_ROW: tuple[tuple[str, _Field], ...] = (
    ("state", _required("input_id", _INPUT_ID)),
    ("seed", _required("current_state", _LIFECYCLE_STATE, attr="phase")),
    ("state", _skipped("policy", _OPAQUE)),
    ("state", _skipped("runtime_semantics", _OPAQUE)),
    ("seed", _skipped("terminal_outcome", _TERMINAL_OUTCOME)),
    ("state", _skipped("durability", _Enum(InputDurability))),
    ("state", _skipped("idempotency_key", _STR)),
    ("seed", _defaulted("attempt_count", _U64_NODE, 0)),
    ("state", _defaulted("recovery_count", _U64_NODE, 0)),
    ("state", _defaulted("history", _Seq(_HISTORY_ENTRY), (), omit_empty=True)),
    ("state", _skipped("reconstruction_source", _OPAQUE)),
    ("state", _skipped("persisted_input", _OPAQUE)),
    ("seed", _skipped("last_run_id", _RUN_ID)),
    ("seed", _skipped("last_boundary_sequence", _U64_NODE)),
    ("state", _required("created_at", _TIME)),
    ("state", _required("updated_at", _TIME)),
)
_INPUT_STATE = _record(InputState, [f for part, f in _INPUT_ROW if part == "state"])
# A stored seed is read as it is, even one whose phase and terminal outcome
# disagree (Meerkat's Rust runtime and older versions could write one):
# `_stored_seed` checks every field but not that (`_types`, Rule 4).
_INPUT_STATE_SEED = _record(
    InputStateSeed, [f for part, f in _INPUT_ROW if part == "seed"], build=_stored_seed
)
_build_state = _INPUT_STATE.build
_build_seed = _INPUT_STATE_SEED.build


def _build_stored(kwargs: dict[str, Any]) -> StoredInputState:
    return StoredInputState(_build_state(kwargs), _build_seed(kwargs))


_STORED_INPUT_STATE = _Struct(
    [
        _Field(f.key, f.node, f.attr, f.omit, f.presence, f.default, get=f"{part}.{f.attr}")
        for part, f in _INPUT_ROW
    ],
    _build_stored,
)

_SESSION_DELTA = _record(SessionDelta, [_required("session_snapshot", _Bytes())])

_OPS_SNAPSHOT = _record(
    PersistedOpsSnapshot,
    [
        _required("epoch_id", _STR),
        *(_nullable(name, _OPAQUE) for name in PersistedOpsSnapshot.PAYLOADS),
    ],
)

_RUNTIME_STATE = _Enum(RuntimeState)

_LIFECYCLE_COMMIT = _Struct(
    [_required("runtime_state", _RUNTIME_STATE)],
    lambda kw: _commit_for(kw["runtime_state"]),
)

#: Every value class the codecs handle, and its schema.
_SCHEMAS: dict[type, _Node] = {
    RunBoundaryReceipt: _RECEIPT,
    InputAbandonReason: _ABANDON_REASON,
    InputTerminalOutcome: _TERMINAL_OUTCOME,
    InputStateHistoryEntry: _HISTORY_ENTRY,
    InputStateSeed: _INPUT_STATE_SEED,
    InputState: _INPUT_STATE,
    StoredInputState: _STORED_INPUT_STATE,
    SessionDelta: _SESSION_DELTA,
    PersistedOpsSnapshot: _OPS_SNAPSHOT,
    MachineLifecycleCommit: _LIFECYCLE_COMMIT,
    RuntimeState: _RUNTIME_STATE,
    RunApplyBoundary: _Enum(RunApplyBoundary),
    InputLifecycleState: _LIFECYCLE_STATE,
    InputDurability: _Enum(InputDurability),
    RunId: _RUN_ID,
    InputId: _INPUT_ID,
    SessionId: _UuidId(SessionId),
    LogicalRuntimeId: _RuntimeId(),
}


def _identity(value: Any) -> Any:
    return value


def _compile(policy: _LeafPolicy) -> tuple[dict[type, _Enc], dict[type, _Dec]]:
    encoders = {cls: node.encoder(policy) or _identity for cls, node in _SCHEMAS.items()}
    decoders = {cls: node.decoder(policy) for cls, node in _SCHEMAS.items()}
    return encoders, decoders


_PLAIN_ENCODERS, _PLAIN_DECODERS = _compile(_PLAIN)
_JSON_ENCODERS, _JSON_DECODERS = _compile(_JSON)


# --- public functions ---------------------------------------------------------------


def _encode(encoders: dict[type, _Enc], value: Any, function: str) -> Any:
    encode = encoders.get(type(value))
    if encode is None:
        raise TypeError(f"{function}() cannot encode {type(value).__name__}")
    return encode(value)


def _decode(decoders: dict[type, _Dec], cls: type[T], data: Any, function: str) -> T:
    decode = decoders.get(cls) if isinstance(cls, type) else None
    if decode is None:
        raise TypeError(f"{function}() cannot decode {cls!r}: not a meerkat_actor value type")
    try:
        return decode(data)  # type: ignore[no-any-return]
    except _Fail as fail:
        path = cls.__name__ + "".join(reversed(fail.segments))
        raise CodecError(f"{path}: {fail.message}") from fail.__cause__


def to_plain(value: Any) -> Any:
    """Encode a value as plain CBOR-encodable data (no CBOR tags needed).

    Args:
        value: an instance of a value type of `_types.py` or `_ids.py`.

    Returns:
        Nested dicts (str keys), lists, ints, strs, bytes, bools, None and
        floats: the Meerkat JSON shape with UUIDs as 16 bytes, datetimes as
        int microseconds since the Unix epoch and bytes as bytes.

    Raises:
        TypeError: `value` is not of a value type.
    """
    return _encode(_PLAIN_ENCODERS, value, "to_plain")


def from_plain(cls: type[T], data: Any) -> T:
    """Decode plain data written by `to_plain` into an instance of `cls`.

    Strict: unknown keys and wrong leaf types are errors.

    Args:
        cls: the value class, e.g. `StoredInputState` or `RuntimeState`.
        data: plain data, e.g. as `cbor2.loads` returns it.

    Raises:
        TypeError: `cls` is not a value type.
        CodecError: `data` does not describe a valid `cls`; the message starts
            with the path of the offending item.
    """
    return _decode(_PLAIN_DECODERS, cls, data, "from_plain")


def to_json(value: Any) -> Any:
    """Encode a value as the JSON-compatible data Meerkat's Rust runtime writes.

    Args:
        value: an instance of a value type of `_types.py` or `_ids.py`.

    Returns:
        Dicts (keys in serde order), lists, strs, ints, floats, bools and None.

    Raises:
        TypeError: `value` is not of a value type.
    """
    return _encode(_JSON_ENCODERS, value, "to_json")


def from_json(cls: type[T], doc: Any) -> T:
    """Decode JSON-compatible data (as `json.loads` returns it) into `cls`.

    Lenient as serde is: unknown keys are ignored, missing `Option` keys and
    explicit nulls give None, missing defaulted keys give their default.

    Args:
        cls: the value class.
        doc: the parsed JSON document.

    Raises:
        TypeError: `cls` is not a value type.
        CodecError: `doc` does not describe a valid `cls`.
    """
    return _decode(_JSON_DECODERS, cls, doc, "from_json")


def dumps_json(value: Any) -> bytes:
    """Return the compact UTF-8 JSON bytes Meerkat's serde_json writes for `value`.

    Every string of a value is valid Unicode (the constructors refuse lone
    surrogates), so the text always encodes.

    Raises:
        TypeError: `value` is not of a value type.
    """
    return json.dumps(to_json(value), separators=(",", ":"), ensure_ascii=False).encode()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_json(cls: type[T], data: bytes | str) -> T:
    """Parse JSON text (bytes must be UTF-8) and decode it into `cls`.

    Raises:
        TypeError: `cls` is not a value type, or `data` is not bytes or str.
        CodecError: `data` is not JSON, or does not describe a valid `cls`.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CodecError(f"{_class_name(cls)}: JSON is not valid UTF-8: {exc}") from exc
    elif isinstance(data, str):
        text = data
    else:
        raise TypeError(f"loads_json() takes bytes or str, got {type(data).__name__}")
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise CodecError(f"{_class_name(cls)}: not valid JSON: {exc}") from exc
    return from_json(cls, doc)


def _class_name(cls: object) -> str:
    return getattr(cls, "__name__", repr(cls))
