"""The stateful machine: any `RuntimeStore` against the reference model (SPEC §8).

Rule 1: every operation runs on both the store and the model, and their
outcomes must agree: equal results, or exceptions of the same class (store
errors, the updater's own exception, `TypeError`). A disagreement fails with a
message naming the operation, the store's answer and the model's.

Rule 2: after every step the whole observable state must agree (the
invariant): for every runtime, input id and receipt key the machine can
reach, each load answers the same on both sides, as do the OAuth snapshot,
`list_runtimes()` and each runtime's `load_boundary_receipts()`.

Rule 3: ids come from small fixed pools, so steps collide: the same input is
updated twice, a receipt key is reused, a session key matches or not, a
runtime is touched by several operations. Sequences include 2**63 and
2**64-1, where a signed 64-bit backend goes wrong.

Rule 4: a durable store must not notice a restart. For durable backends the
machine also closes and reopens the store, checkpoints it, and crashes it
(abandons it without a clean close) and reopens it; none of these changes the
model, so the invariant checks that every acknowledged write survived.

Use: subclass `RuntimeStoreMachine` and collect the subclass's `TestCase`.
For a store that forgets everything when closed, set `open_store` to a
zero-argument callable returning the async context manager that opens a
fresh, empty store:

    class InMemoryMachine(RuntimeStoreMachine):
        open_store = staticmethod(meerkat_actor.open_store)

    TestInMemoryStore = InMemoryMachine.TestCase

For a durable store, set `open_store_at` instead: a callable that opens the
store kept at a location (a directory the machine creates empty for each
test case and removes afterwards), the same store on every call:

    class DurableMachine(RuntimeStoreMachine):
        open_store_at = staticmethod(meerkat_actor.open_store)

    TestDurableStore = DurableMachine.TestCase

`capabilities` (a `Capabilities` value) says what the backend supports; the
machine expects `Unsupported` from everything else. A backend that keeps its
data elsewhere (a server, say) overrides `store_opener()` and declares
`capabilities = Capabilities(durable=True, ...)`. docs/conformance.md has a
complete worked example.

The store runs in a trio run (or an asyncio one: `backend = "asyncio"`) in a
helper thread (`TrioBridge`); the rules are synchronous, as Hypothesis
requires.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Container, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar, runtime_checkable

import anyio
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from .._errors import (
    LifecycleConflict,
    NotFound,
    NotRetirable,
    ReceiptConflict,
    RuntimeNotDestroyed,
    RuntimeStoreError,
    SessionKeyMismatch,
    StoreClosed,
    Unsupported,
)
from .._ids import InputId, LogicalRuntimeId, RunId, SessionId
from .._protocol import RuntimeStore
from .._session_codec import SessionCodec
from .._types import (
    LIFECYCLE_TRANSITIONS,
    UNCHECKED,
    InputAbandonReason,
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
    Unchecked,
    machine_transition,
)
from . import _strategies as mst
from ._bridge import TrioBridge
from ._model import ReferenceModel

__all__ = [
    "FULL_CAPABILITIES",
    "INPUT_IDS",
    "NEAR_RUNTIME_IDS",
    "RUNTIME_IDS",
    "RUN_IDS",
    "SEQUENCES",
    "SESSION_IDS",
    "Append",
    "Capabilities",
    "Increment",
    "MarkMissing",
    "OpenStore",
    "OpenStoreAt",
    "RaiseError",
    "ReturnAwaitable",
    "ReturnBytearray",
    "ReturnNotBytes",
    "RuntimeStoreMachine",
    "UpdaterFailed",
    "assert_store_matches_model",
    "identical",
]

OpenStore = Callable[[], AbstractAsyncContextManager[RuntimeStore]]
"""Opens a store when called; the async context manager closes it."""
OpenStoreAt = Callable[[Path], AbstractAsyncContextManager[RuntimeStore]]
"""Opens the durable store kept at a location (a directory)."""

# --- pools -------------------------------------------------------------------------

RUNTIME_IDS = (LogicalRuntimeId("rt-a"), LogicalRuntimeId("rt-b"), LogicalRuntimeId("rt-c"))
# Spread over the UUID order (first, middle, last) and not in creation order.
INPUT_IDS = tuple(InputId(uuid.UUID(int=n)) for n in (2**127 + 7, 1, 2**128 - 1, 2**64, 2**100 + 3))
# The second sorts first by UUID but not by `UUID.bytes_le` (Microsoft's GUID
# byte order, which reverses the first three fields).
RUN_IDS = tuple(RunId(uuid.UUID(int=n)) for n in (2**126 + 1, 0xFF << 96, 2**128 - 2))
SESSION_IDS = tuple(SessionId(uuid.UUID(int=n)) for n in (2**125 + 11, 3))
SEQUENCES = (0, 1, 2**63 - 1, 2**63, 2**64 - 1)
T = TypeVar("T")
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
# Every letter once, in an order that is not the alphabet: large_value repeats it.
_LETTERS = "".join(chr(0x61 + (i * 7) % 26) for i in range(26))
# 127 levels of lists and objects: under one more (an ops snapshot's
# authority_state), the deepest document the types accept (128).


def _nested(levels: int) -> Any:
    """`levels` levels of objects and lists, alternating, around a 0."""
    document: Any = 0
    for level in range(levels):
        document = [document] if level % 2 else {"k": document}
    return document


_DEEP = _nested(127)


def _session_json(session_id: SessionId) -> bytes:
    return json.dumps({"id": str(session_id), "messages": []}).encode()


_UNREADABLE_SNAPSHOTS = (b"", b"not json", b"[]", b'{"id": 5}', b'{"id": "not-a-uuid"}')
_ODD_READABLE_SNAPSHOTS = tuple(
    SessionDelta(snapshot)
    for snapshot in (
        # Not in the form a JSON column (jsonb, MySQL JSON) prints: it must
        # come back byte for byte.
        (
            '{ "messages" : [ {"role": "user", "text": "caf\\u00e9 cafe\u0301\\r\\n", "n": 1.0} ],'
            f' "id" : "{SESSION_IDS[0]}" }}\r\n'
        ).encode(),
        # An "id" nested before the top-level one, and the id in upper case:
        # the session codec decides, not a regex or a string compare.
        (
            f'{{"messages": [{{"id": "{SESSION_IDS[1]}"}}], "id": "{str(SESSION_IDS[0]).upper()}"}}'
        ).encode(),
    )
)
"""Readable snapshots a backend that parses or re-serialises them gets wrong."""


def _mostly(pool: tuple[T, ...], fresh: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Three draws in four from the pool (collisions), one fresh id."""
    from_pool = st.sampled_from(pool)
    return st.one_of(from_pool, from_pool, from_pool, fresh)


NEAR_RUNTIME_IDS = (
    LogicalRuntimeId("RT-A"),
    LogicalRuntimeId("rt-a "),
    LogicalRuntimeId("\uff52\uff54-\uff41"),
    LogicalRuntimeId("rt-\u00e9"),
    LogicalRuntimeId("rt-e\u0301"),
    LogicalRuntimeId("rt-\uffff"),
    LogicalRuntimeId("rt-\U00010000"),
    LogicalRuntimeId("rt-" + "x" * 297 + "1"),
    LogicalRuntimeId("rt-" + "x" * 297 + "2"),
)
"""Ids a store must keep apart from the pool's and from each other, though a
case-insensitive collation, a collation that pads with spaces, or a Unicode
normalisation (NFKC: full-width letters; NFC/NFD: the two forms of é) merges
them, that sorts by UTF-16 code units (U+FFFF after U+10000), or that
truncates at 255 characters: identifiers compare by value, their strings
exactly, and `list_runtimes` sorts by code point (SPEC §2, §3b)."""

runtime_ids = _mostly(RUNTIME_IDS, st.one_of(mst.runtime_ids(), st.sampled_from(NEAR_RUNTIME_IDS)))
# The rules of SPEC §3b stay in the pool: each runtime the machine has seen
# costs the invariant a read of everything it could hold, after every step.
pool_runtime_ids = st.sampled_from(RUNTIME_IDS)
input_ids = _mostly(INPUT_IDS, mst.input_ids())
run_ids = _mostly(RUN_IDS, mst.run_ids())
sequences = st.sampled_from(SEQUENCES)
session_ids = st.sampled_from(SESSION_IDS)
# Built values, not lambdas, so a failing example prints as runnable code.
readable_deltas = st.sampled_from(
    [SessionDelta(_session_json(s)) for s in SESSION_IDS] + list(_ODD_READABLE_SNAPSHOTS)
)
deltas = st.one_of(
    readable_deltas, st.sampled_from([SessionDelta(b) for b in _UNREADABLE_SNAPSHOTS])
)

# A seed in `phase`: a terminal phase holds an outcome of its own kind (the
# constructor refuses anything else), the other phases none.
_OUTCOMES = {
    InputLifecycleState.CONSUMED: InputTerminalOutcome.consumed(),
    InputLifecycleState.SUPERSEDED: InputTerminalOutcome.superseded(INPUT_IDS[1]),
    InputLifecycleState.COALESCED: InputTerminalOutcome.coalesced(INPUT_IDS[0]),
    InputLifecycleState.ABANDONED: InputTerminalOutcome.abandoned(InputAbandonReason.destroyed()),
}


def _seed(phase: InputLifecycleState, attempt_count: int = 0) -> InputStateSeed:
    return InputStateSeed(phase, terminal_outcome=_OUTCOMES.get(phase), attempt_count=attempt_count)


# Seeds whose phase and outcome disagree: a terminal phase without its
# outcome, an outcome on a phase that is not terminal. No caller can build
# one, but a store may hold one (Meerkat's Rust runtime or an earlier build
# wrote it): it must keep it as it is and never retire it (SPEC §3b). They
# print as their repr, `InputStateSeed._stored(...)`, which runs.
_disagreeing_seeds = st.one_of(
    st.sampled_from([p for p in InputLifecycleState if p.is_terminal]).map(InputStateSeed._stored),
    st.tuples(
        st.sampled_from([p for p in InputLifecycleState if not p.is_terminal]),
        st.sampled_from(list(_OUTCOMES.values())),
    ).map(lambda pair: InputStateSeed._stored(pair[0], terminal_outcome=pair[1])),
)
_simple_shells = st.builds(
    InputState, input_id=input_ids, created_at=st.just(_EPOCH), updated_at=st.just(_EPOCH)
)
# Small stored states: the pool id plus a phase, so shrunk examples stay short;
# the full strategies add the rarer fields some of the time.
_simple_states = st.builds(
    StoredInputState,
    state=_simple_shells,
    seed=st.one_of(
        st.builds(
            InputStateSeed,
            phase=st.sampled_from([p for p in InputLifecycleState if not p.is_terminal]),
            attempt_count=st.integers(0, 3),
        ),
        *[
            st.builds(
                InputStateSeed,
                phase=st.just(phase),
                terminal_outcome=st.just(outcome),
                attempt_count=st.integers(0, 3),
            )
            for phase, outcome in _OUTCOMES.items()
        ],
    ),
)
# Drawn where a state is only persisted (and then read, retired, ...), never
# rebuilt with `replace`, which would refuse it.
_disagreeing_states = st.builds(StoredInputState, state=_simple_shells, seed=_disagreeing_seeds)
# Finished states with a terminal outcome and a payload, so that
# `retire_input_payloads` succeeds (and changes something) often.
_TERMINAL_SEEDS = (
    InputStateSeed(InputLifecycleState.CONSUMED, terminal_outcome=InputTerminalOutcome.consumed()),
    InputStateSeed(
        InputLifecycleState.SUPERSEDED,
        terminal_outcome=InputTerminalOutcome.superseded(INPUT_IDS[1]),
    ),
    InputStateSeed(
        InputLifecycleState.COALESCED, terminal_outcome=InputTerminalOutcome.coalesced(INPUT_IDS[0])
    ),
    InputStateSeed(
        InputLifecycleState.ABANDONED,
        terminal_outcome=InputTerminalOutcome.abandoned(InputAbandonReason.destroyed()),
    ),
)
_HISTORY = (
    InputStateHistoryEntry(
        _EPOCH, InputLifecycleState.ACCEPTED, InputLifecycleState.CONSUMED, None
    ),
)
_terminal_states = st.builds(
    StoredInputState,
    state=st.builds(
        InputState,
        input_id=input_ids,
        created_at=st.just(_EPOCH),
        updated_at=st.just(_EPOCH),
        history=st.sampled_from([(), _HISTORY]),
        persisted_input=st.just({"text": "hello"}),
        # Retiring changes the payload only: not the other documents.
        reconstruction_source=st.sampled_from([None, {"queue": "inbox", "offset": 7}]),
    ),
    seed=st.sampled_from(_TERMINAL_SEEDS),
)
stored_states = st.one_of(
    _simple_states, _terminal_states, mst.stored_input_states(input_id=input_ids)
)
state_lists = st.lists(stored_states, max_size=4)
input_id_lists = st.lists(input_ids, max_size=4)
# Legal transitions, over half of them to `destroyed`, so that purges succeed often.
transitions = st.one_of(
    mst.lifecycle_transitions(),
    st.sampled_from(
        [(s, RuntimeState.DESTROYED) for s in RuntimeState if s is not RuntimeState.DESTROYED]
    ),
)
# Transitions that end a runtime's life, half of them to `destroyed`.
endings = st.one_of(
    st.sampled_from(
        [(s, RuntimeState.DESTROYED) for s in RuntimeState if s is not RuntimeState.DESTROYED]
    ),
    st.sampled_from(
        [
            (a, b)
            for a, targets in LIFECYCLE_TRANSITIONS.items()
            for b in sorted(targets, key=list(RuntimeState).index)
            if b in (RuntimeState.STOPPED, RuntimeState.RETIRED)
        ]
    ),
)
# Targets of the transition table (`initializing` is none): a commit to each.
_TARGETS = sorted(
    {b for targets in LIFECYCLE_TRANSITIONS.values() for b in targets}, key=list(RuntimeState).index
)
targets = st.sampled_from(_TARGETS)
expectations: st.SearchStrategy[RuntimeState | Unchecked | None] = st.one_of(
    st.just(UNCHECKED), st.none(), st.sampled_from(RuntimeState)
)
receipts = mst.receipts(run_id=run_ids, sequence=sequences)
ops_snapshots = mst.ops_snapshots()


# --- OAuth updaters: deterministic, with readable reprs --------------------------------


class UpdaterFailed(Exception):
    """Raised by `RaiseError`: the store must hand it to the caller unchanged."""


class _Updater:
    """Updaters compare and hash by value: Hypothesis labels strategies by
    hash, so identity hashing would make `derandomize` draw differently from
    one process to the next."""

    def _key(self) -> tuple[object, ...]:
        return (type(self).__name__,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Updater) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class Increment(_Updater):
    """Treat the snapshot as a decimal counter and add one (missing or not a number: 0)."""

    def __call__(self, current: bytes | None) -> bytes:
        try:
            value = int(current or b"0")
        except ValueError:
            value = 0
        return str(value + 1).encode()

    def __repr__(self) -> str:
        return "Increment()"


class Append(_Updater):
    """Append fixed bytes to the snapshot."""

    def __init__(self, suffix: bytes) -> None:
        self.suffix = suffix

    def _key(self) -> tuple[object, ...]:
        return ("Append", self.suffix)

    def __call__(self, current: bytes | None) -> bytes:
        return (current or b"") + self.suffix

    def __repr__(self) -> str:
        return f"Append({self.suffix!r})"


class RaiseError(_Updater):
    """Raise `UpdaterFailed`: nothing may change."""

    def __call__(self, current: bytes | None) -> bytes:
        raise UpdaterFailed(f"updater refused {current!r}")

    def __repr__(self) -> str:
        return "RaiseError()"


class ReturnNotBytes(_Updater):
    """Return a str: the store must raise TypeError and change nothing."""

    def __call__(self, current: bytes | None) -> bytes:
        return "not bytes"  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "ReturnNotBytes()"


class MarkMissing(_Updater):
    """`b"<none>"` when there is no snapshot, else the snapshot and `b"."`:
    a store that hands the updater `b""` for a missing snapshot (or `None`
    for an empty one) stores something else."""

    def __call__(self, current: bytes | None) -> bytes:
        return b"<none>" if current is None else current + b"."

    def __repr__(self) -> str:
        return "MarkMissing()"


class ReturnBytearray(_Updater):
    """Return a `bytearray`: the store must raise TypeError (bytes only,
    SPEC §3) and change nothing."""

    def __call__(self, current: bytes | None) -> bytes:
        return bytearray(b"mutable")  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "ReturnBytearray()"


class _Later:
    """An awaitable that would give bytes (not a coroutine, so nothing warns
    when it is never awaited)."""

    def __await__(self) -> Generator[Any, None, bytes]:
        yield from ()
        return b"awaited"

    def __repr__(self) -> str:
        return "<awaitable>"


class ReturnAwaitable(_Updater):
    """Return an awaitable, as an `async def` updater would: the updater is
    synchronous (SPEC §3), so the store must raise TypeError, not await it
    and store its result."""

    def __call__(self, current: bytes | None) -> bytes:
        return _Later()  # type: ignore[return-value]

    def __repr__(self) -> str:
        return "ReturnAwaitable()"


updaters = st.one_of(
    st.just(Increment()),
    st.binary(min_size=1, max_size=3).map(Append),
    st.just(MarkMissing()),
    st.just(RaiseError()),
    st.sampled_from((ReturnNotBytes(), ReturnBytearray(), ReturnAwaitable())),
)


# --- capabilities ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a backend declares it supports (as in Akka's persistence TCK).

    The machine runs every operation against every backend. An operation of a
    family declared unsupported must raise `Unsupported` (on reads and writes
    alike, as Meerkat's default `RuntimeStore` methods do), and changes
    nothing; the machine checks exactly that instead of the model's answer.

    Attributes:
        durable: the data survives a clean close and a reopen. Adds the
            `reopen` rule (and `checkpoint` and `checkpoint_during_writes`
            for a store with a `checkpoint()` method), and requires
            `auth_authority_key()` to return the same string on every open;
            a store that is not durable must return `None` there.
        crash_safe: every acknowledged write survives the store being
            abandoned without a clean close (its trio run cancelled, nothing
            flushed). Adds the `crash_and_reopen` rule. Implies `durable`.
        ops_lifecycle: `persist_ops_lifecycle` and `load_ops_lifecycle`.
        oauth_flow_snapshot: `persist_auth_oauth_flow_snapshot`,
            `load_auth_oauth_flow_snapshot` and
            `update_auth_oauth_flow_snapshot`.
        retention: discovery and retention (SPEC §3b): `list_runtimes`,
            `load_boundary_receipts`, `clear_session_snapshot`,
            `delete_ops_lifecycle`, `retire_input_payloads`, `purge_runtime`,
            and `commit_machine_lifecycle` called with `expected=` (without
            it, the commit is core and always checked). Without
            `ops_lifecycle`, `delete_ops_lifecycle` has nothing to delete:
            it is a no-op.
    """

    durable: bool = False
    crash_safe: bool = False
    ops_lifecycle: bool = True
    oauth_flow_snapshot: bool = True
    retention: bool = True

    def __post_init__(self) -> None:
        for name in ("durable", "crash_safe", "ops_lifecycle", "oauth_flow_snapshot", "retention"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Capabilities.{name} must be a bool")
        if self.crash_safe and not self.durable:
            raise ValueError("Capabilities.crash_safe implies durable=True")

    def supports(self, operation: str, keywords: Iterable[str] = ()) -> bool:
        """Whether the backend declares `operation` (a `RuntimeStore` method
        name) called with the keyword arguments named in `keywords`."""
        families = list(_FAMILIES.get(operation, ()))
        families += [
            _KEYWORD_FAMILIES[(operation, k)]
            for k in keywords
            if (operation, k) in _KEYWORD_FAMILIES
        ]
        return all(getattr(self, family) for family in families)


FULL_CAPABILITIES = Capabilities()
"""Every operation; not durable (an in-memory store)."""

_FAMILIES: dict[str, tuple[str, ...]] = {
    "persist_ops_lifecycle": ("ops_lifecycle",),
    "load_ops_lifecycle": ("ops_lifecycle",),
    "persist_auth_oauth_flow_snapshot": ("oauth_flow_snapshot",),
    "load_auth_oauth_flow_snapshot": ("oauth_flow_snapshot",),
    "update_auth_oauth_flow_snapshot": ("oauth_flow_snapshot",),
    "list_runtimes": ("retention",),
    "load_boundary_receipts": ("retention",),
    "clear_session_snapshot": ("retention",),
    "delete_ops_lifecycle": ("retention",),
    "retire_input_payloads": ("retention",),
    "purge_runtime": ("retention",),
}
"""The operations a backend may declare unsupported, by capability flag
(unsupported if any flag it needs is off)."""
_KEYWORD_FAMILIES = {("commit_machine_lifecycle", "expected"): "retention"}
"""Operations that belong to a family only when called with a keyword."""


# --- outcomes -------------------------------------------------------------------------

_DISTINCT_ERRORS: tuple[type[Exception], ...] = (
    ReceiptConflict,
    SessionKeyMismatch,
    NotRetirable,
    RuntimeNotDestroyed,
    LifecycleConflict,
)
"""Error classes the model raises for a reason of their own: a store may raise
a refinement of the class the model raised, but not one of these in its place."""
_ERROR_FIELDS: dict[type[BaseException], tuple[str, ...]] = {
    SessionKeyMismatch: ("expected", "actual"),
    NotRetirable: ("input_id", "phase"),
    RuntimeNotDestroyed: ("actual",),
    LifecycleConflict: ("expected", "actual"),
}
"""Attributes an error must carry as the model's does (SPEC §3b)."""


def _names(message: str, value: object) -> bool:
    """Whether `message` names `value`: its string, plain or quoted (`repr`,
    with or without the quotes)."""
    text = str(value)
    quoted = repr(text)
    return text in message or quoted in message or quoted[1:-1] in message


def _message_problem(
    model: ReferenceModel, name: str, args: tuple[Any, ...], got: BaseException, want: BaseException
) -> str | None:
    """What the store's error `got` (of the class the model raised, `want`)
    leaves out that SPEC §5 asks of it, or `None`: a store error names the
    runtime (and, for a receipt conflict, the run and sequence; for an unknown
    input id, that id), and chains its cause where the model's does (a codec
    that rejected a snapshot)."""
    if want.__cause__ is not None and got.__cause__ is None:
        return f"it does not chain its cause (the model's error has {want.__cause__!r})"
    if not isinstance(got, RuntimeStoreError) or isinstance(got, (StoreClosed, Unsupported)):
        return None
    message = str(got)
    wanted: list[object] = [a for a in args[:1] if isinstance(a, LogicalRuntimeId)]
    if isinstance(got, ReceiptConflict):
        receipt = next(a for a in args if isinstance(a, RunBoundaryReceipt))
        wanted += [receipt.run_id, receipt.sequence]
    elif isinstance(got, NotFound) and name == "retire_input_payloads" and wanted:
        runtime_id = args[0]
        wanted += [
            next(
                (i for i in args[1] if model.load_input_state(runtime_id, i) is None),
                "an unknown input id",
            )
        ]
    missing = [value for value in wanted if not _names(message, value)]
    if missing:
        return "its message does not name " + " or ".join(repr(str(v)) for v in missing)
    return None


class _Outcome:
    """A result or an exception, comparable across store and model."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error

    def same_as(self, expected: _Outcome) -> bool:
        """Whether this (the store's) outcome agrees with `expected`: the same
        error class (any `Unsupported` where that is expected), or equal values."""
        if isinstance(expected.error, Unsupported):
            return isinstance(self.error, Unsupported)
        if self.error is None or expected.error is None:
            return self.error is None and expected.error is None and self._same_value(expected)
        # The model's class, or a refinement of it (SPEC §5) that is not itself
        # a class the model raises for another reason (ReceiptConflict is a
        # WriteFailed, but it means something else).
        wanted = type(expected.error)
        if not isinstance(self.error, wanted):
            return False
        fields = _ERROR_FIELDS.get(wanted, ())
        missing = object()
        if not all(
            identical(getattr(self.error, f, missing), getattr(expected.error, f)) for f in fields
        ):
            return False
        return not any(
            isinstance(self.error, other) and other is not wanted and issubclass(other, wanted)
            for other in _DISTINCT_ERRORS
        )

    def _same_value(self, expected: _Outcome) -> bool:
        return identical(self.value, expected.value)

    def __repr__(self) -> str:
        if self.error is not None:
            fields = _ERROR_FIELDS.get(type(self.error), ())
            carried = "".join(f", .{f}={getattr(self.error, f, None)!r}" for f in fields)
            return f"raised {type(self.error).__name__}: {self.error}{carried}"
        return f"returned {self.value!r}"


def identical(got: object, want: object) -> bool:
    """Whether `got` is `want` in every detail a caller can observe: equal,
    and of the same type all the way down.

    `==` is not enough. Inside an opaque JSON document `True == 1 == 1.0`
    and `-0.0 == 0.0`, so a backend that re-serialises documents through a
    JSON column (a boolean read back as an integer, `1.0` as `1`, `-0.0` as
    `0`) would pass; and a `bytearray` or `memoryview` equals `bytes`, a
    tuple is not a list. This compares types at every level (a `bool` is not
    an `int`), floats by value and sign, mappings key by key, sequences item
    by item, and dataclasses (every value of the data model) field by field;
    timestamps must be the same instant in the same time zone.
    """
    if got is want:
        return True
    kind = type(want)
    if type(got) is not kind:
        return False
    if kind in _PLAIN:
        return bool(got == want)
    compare = _COMPARERS.get(kind)
    if compare is None:
        compare = _COMPARERS[kind] = _comparer(kind)
    return compare(got, want)


_PLAIN = frozenset({str, bytes, int, bool, type(None)})
"""Types whose `==` already compares every detail (the common leaves)."""


_COMPARERS: dict[type[Any], Callable[[Any, Any], bool]] = {}
"""How `identical` compares two values of one type (not of `_PLAIN`), by
type: decided once per type, as the checks run on every read."""


def _comparer(kind: type[Any]) -> Callable[[Any, Any], bool]:
    """How `identical` compares two values, both of type `kind`."""
    if issubclass(kind, float):
        return _same_float
    if issubclass(kind, (str, bytes, int, Enum, uuid.UUID)):
        return _equal
    if issubclass(kind, datetime):
        return _same_instant_and_zone
    if issubclass(kind, Mapping):
        return _same_mapping
    if issubclass(kind, (tuple, list)):
        return _same_items
    if dataclasses.is_dataclass(kind):
        return partial(_same_fields, tuple(f.name for f in dataclasses.fields(kind)))
    return _equal


def _equal(got: Any, want: Any) -> bool:
    return bool(got == want)


def _same_float(got: float, want: float) -> bool:
    return got == want and math.copysign(1.0, got) == math.copysign(1.0, want)


def _same_instant_and_zone(got: datetime, want: datetime) -> bool:
    return got == want and got.utcoffset() == want.utcoffset()


def _same_mapping(got: Mapping[Any, Any], want: Mapping[Any, Any]) -> bool:
    if len(got) != len(want):
        return False
    if {_key_identity(k) for k in got} != {_key_identity(k) for k in want}:
        return False
    return all(_leaf_or_identical(got[k], want[k]) for k in want)


def _same_items(got: Sequence[Any], want: Sequence[Any]) -> bool:
    if len(got) != len(want):
        return False
    return all(_leaf_or_identical(a, b) for a, b in zip(got, want, strict=True))


def _same_fields(names: tuple[str, ...], got: object, want: object) -> bool:
    return all(_leaf_or_identical(getattr(got, n), getattr(want, n)) for n in names)


def _leaf_or_identical(got: object, want: object) -> bool:
    """`identical(got, want)`, without a further call for the common leaves."""
    kind = type(want)
    if type(got) is not kind:
        return False
    if kind in _PLAIN:
        return bool(got == want)
    return identical(got, want)


def _key_identity(key: object) -> tuple[type, object]:
    return (type(key), key)


def _model_outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _Outcome:
    try:
        return _Outcome(fn(*args, **kwargs))
    except Exception as exc:
        return _Outcome(error=exc)


def _expected(
    model: ReferenceModel,
    capabilities: Capabilities,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None = None,
) -> _Outcome:
    """What the store must answer to `name(*args, **kwargs)`; runs it on the
    model unless the backend declared the operation unsupported."""
    kwargs = kwargs or {}
    defaults = _defaults(name) if hasattr(RuntimeStore, name) else {}
    # A keyword given its default value is the call without it.
    keywords = [k for k, v in kwargs.items() if not (k in defaults and v is defaults[k])]
    if not capabilities.supports(name, keywords):
        return _Outcome(error=Unsupported(f"{name} is declared unsupported"))
    return _model_outcome(getattr(model, name), *args, **kwargs)


async def _store_outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> _Outcome:
    try:
        return _Outcome(await fn(*args, **kwargs))
    except Exception as exc:
        return _Outcome(error=exc)


def _observations(
    model: ReferenceModel,
    runtime_ids: Iterable[LogicalRuntimeId] = (),
    receipt_keys: Iterable[tuple[LogicalRuntimeId, RunId, int]] = (),
    point_reads: Container[LogicalRuntimeId] | None = None,
) -> list[tuple[str, tuple[Any, ...]]]:
    """Every read that together shows the whole state: for the pools, for
    every runtime and receipt key the model holds, and for those given (the
    ones sent to the store, which a failed write must not have left behind).
    With `point_reads`, the reads of one input state or one receipt only for
    the runtimes in it (the reads of whole runtimes for all)."""
    reads: list[tuple[str, tuple[Any, ...]]] = [("load_auth_oauth_flow_snapshot", ())]
    sent: dict[LogicalRuntimeId, set[tuple[RunId, int]]] = {}
    for runtime_id, run_id, sequence in receipt_keys:
        sent.setdefault(runtime_id, set()).add((run_id, sequence))
    for runtime_id in dict.fromkeys((*RUNTIME_IDS, *model.runtimes, *runtime_ids, *sent)):
        held = model.runtimes.get(runtime_id)
        reads += [
            ("load_input_states", (runtime_id,)),
            ("load_session_snapshot", (runtime_id,)),
            ("load_runtime_state", (runtime_id,)),
            ("load_ops_lifecycle", (runtime_id,)),
        ]
        if point_reads is not None and runtime_id not in point_reads:
            reads.append(("load_boundary_receipts", (runtime_id,)))
            continue
        # One by one too (a per-input cache is a separate read path): every
        # input of the pool the model holds there, and one it does not.
        # (The pool's only: a runtime may hold over a hundred.)
        held_inputs = held.input_states if held is not None else {}
        absent = next((i for i in INPUT_IDS if i not in held_inputs), None)
        reads += [
            ("load_input_state", (runtime_id, input_id))
            for input_id in INPUT_IDS
            if input_id in held_inputs
        ]
        if absent is not None:
            reads.append(("load_input_state", (runtime_id, absent)))
        # Every key of the pools in the pool's runtimes and those the model
        # holds; elsewhere the keys sent there (and the list read below).
        keys: set[tuple[RunId, int]] = set()
        if held is not None or runtime_id in RUNTIME_IDS:
            keys = {(run_id, sequence) for run_id in RUN_IDS for sequence in SEQUENCES}
        keys |= sent.get(runtime_id, set())
        if held is not None:
            keys |= held.receipts.keys()
        reads += [
            ("load_boundary_receipt", (runtime_id, run_id, sequence))
            for run_id, sequence in sorted(keys, key=lambda k: (k[0].value, k[1]))
        ]
        reads.append(("load_boundary_receipts", (runtime_id,)))
    # Last: a difference in what a runtime holds is reported by the read of it.
    reads.append(("list_runtimes", ()))
    return reads


async def assert_store_matches_model(
    store: RuntimeStore,
    model: ReferenceModel,
    capabilities: Capabilities = FULL_CAPABILITIES,
    *,
    runtime_ids: Iterable[LogicalRuntimeId] = (),
    receipt_keys: Iterable[tuple[LogicalRuntimeId, RunId, int]] = (),
    by_name: bool = False,
    point_reads: Container[LogicalRuntimeId] | None = None,
) -> None:
    """Raise `AssertionError` unless the whole observable state of `store`
    equals the model's: every read answers alike, for the machine's id pools,
    everything the model holds, and the extra `runtime_ids` and
    `(runtime_id, run_id, sequence)` `receipt_keys` given (reads of a family
    declared unsupported in `capabilities` must raise `Unsupported`).
    `list_runtimes()` is compared last, after the reads per runtime (which
    name what differs more precisely), so the runtimes it lists are the
    model's: every runtime the store lists has been read in full.

    The machine's invariant; tests of crash recovery use it too, with a model
    that holds what was acknowledged. With `by_name`, every read passes
    its arguments by keyword (the machine alternates). With `point_reads`,
    the reads of one input state or one receipt are made only in the
    runtimes it holds (the machine passes those written since its last
    check, between full checks: see `RuntimeStoreMachine.whole_state_matches_model`).
    """
    for name, args in _observations(model, runtime_ids, receipt_keys, point_reads):
        call_args, call_kwargs = _by_name(name, args, {}) if by_name else (args, {})
        got = await _store_outcome(getattr(store, name), *call_args, **call_kwargs)
        expected = _expected(model, capabilities, name, args)
        if not got.same_as(expected):
            raise AssertionError(
                f"state differs at {name}{_args_repr(call_args, call_kwargs)}:"
                f" the store {got!r}, the model {expected!r}"
            )


def _copy_model(model: ReferenceModel) -> ReferenceModel:
    """An independent model in the same state (its values are immutable:
    the tables are copied, the values shared)."""
    twin = ReferenceModel(model.session_codec)
    twin.oauth_flow_snapshot = model.oauth_flow_snapshot
    twin.runtimes = {
        runtime_id: replace(
            runtime, input_states=dict(runtime.input_states), receipts=dict(runtime.receipts)
        )
        for runtime_id, runtime in model.runtimes.items()
    }
    return twin


async def _what_a_new_store_holds(store: RuntimeStore, capabilities: Capabilities) -> str:
    """What a store that should be empty holds, or `""`."""
    held = []
    if capabilities.retention:
        runtimes = await store.list_runtimes()
        if runtimes:
            held.append(f"runtimes {runtimes!r}")
    if capabilities.oauth_flow_snapshot:
        oauth = await store.load_auth_oauth_flow_snapshot()
        if oauth is not None:
            held.append(f"the OAuth snapshot {oauth!r}")
    for runtime_id in RUNTIME_IDS:
        if await store.load_input_states(runtime_id):
            held.append(f"input states of {runtime_id!r}")
        if await store.load_session_snapshot(runtime_id) is not None:
            held.append(f"a session snapshot of {runtime_id!r}")
    return ", ".join(held)


@functools.cache
def _parameters(name: str) -> tuple[str, ...]:
    """The names of `RuntimeStore.<name>`'s parameters, in order (not `self`)."""
    signature = inspect.signature(getattr(RuntimeStore, name))
    return tuple(signature.parameters)[1:]


def _by_name(
    name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """`args` and `kwargs` of a call of `RuntimeStore.<name>`, all as keywords."""
    named = dict(zip(_parameters(name), args, strict=False))
    if len(named) < len(args):  # more arguments than parameters: leave them as given
        return args, kwargs
    defaults = _defaults(name)
    called = {
        key: tuple(value) if isinstance(value, list) else value
        for key, value in {**named, **kwargs}.items()
        # An argument equal to its default is left out: the default must exist.
        if not (key in defaults and value is defaults[key])
    }
    return (), called


@functools.cache
def _defaults(name: str) -> dict[str, Any]:
    """The default values of `RuntimeStore.<name>`'s parameters that have one."""
    signature = inspect.signature(getattr(RuntimeStore, name))
    return {
        key: parameter.default
        for key, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


@runtime_checkable
class _Checkpointable(Protocol):
    """A store with an explicit checkpoint (not part of `RuntimeStore`)."""

    async def checkpoint(self) -> None: ...


def _bad_calls(
    runtime_id: LogicalRuntimeId, receipt: RunBoundaryReceipt
) -> Sequence[tuple[str, tuple[Any, ...], type[Exception], str]]:
    """Calls every backend must refuse before doing anything, each with the
    error class and the name of the bad argument, which the message must
    contain (SPEC §4). (A keyword argument is given as a last argument of
    type `_Keywords`.)"""
    state = StoredInputState.new_accepted(INPUT_IDS[0], now=_EPOCH)
    idle = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    return (
        ("persist_input_state", (str(runtime_id), state), TypeError, "runtime_id"),
        ("persist_input_state", (runtime_id, {"input_id": str(INPUT_IDS[0])}), TypeError, "state"),
        ("load_boundary_receipt", (runtime_id, receipt.run_id, -1), ValueError, "sequence"),
        ("load_boundary_receipt", (runtime_id, receipt.run_id, 2**64), ValueError, "sequence"),
        ("load_boundary_receipt", (runtime_id, receipt.run_id, True), TypeError, "sequence"),
        ("persist_auth_oauth_flow_snapshot", ("text",), TypeError, "snapshot"),
        ("persist_auth_oauth_flow_snapshot", (bytearray(b"x"),), TypeError, "snapshot"),
        (
            "commit_session_snapshot",
            (runtime_id, _session_json(SESSION_IDS[0])),
            TypeError,
            "delta",
        ),
        (
            "atomic_apply",
            (runtime_id, None, receipt, [{"not": "a state"}]),
            TypeError,
            "input_updates",
        ),
        ("update_auth_oauth_flow_snapshot", (42,), TypeError, "update"),
        ("commit_machine_lifecycle", (runtime_id, RuntimeState.IDLE, [state]), TypeError, "commit"),
        ("load_input_states", (str(runtime_id),), TypeError, "runtime_id"),
        ("load_input_state", (runtime_id, receipt.run_id), TypeError, "input_id"),
        ("load_boundary_receipt", (runtime_id, str(receipt.run_id), 0), TypeError, "run_id"),
        ("load_session_snapshot", (str(runtime_id),), TypeError, "runtime_id"),
        ("load_runtime_state", (None,), TypeError, "runtime_id"),
        ("load_ops_lifecycle", (str(runtime_id),), TypeError, "runtime_id"),
        ("persist_ops_lifecycle", (runtime_id, {"epoch_id": "e"}), TypeError, "snapshot"),
        ("load_boundary_receipts", (str(runtime_id),), TypeError, "runtime_id"),
        ("clear_session_snapshot", (str(runtime_id),), TypeError, "runtime_id"),
        ("delete_ops_lifecycle", (None,), TypeError, "runtime_id"),
        ("retire_input_payloads", (runtime_id, INPUT_IDS[0]), TypeError, "input_ids"),
        ("retire_input_payloads", (runtime_id, [str(INPUT_IDS[0])]), TypeError, "input_ids"),
        ("purge_runtime", (str(runtime_id),), TypeError, "runtime_id"),
        (
            "commit_machine_lifecycle",
            (runtime_id, idle, [], _Keywords(expected="idle")),
            TypeError,
            "expected",
        ),
    )


class _Keywords(dict[str, Any]):
    """Keyword arguments of a call in `_bad_calls`."""


def _split(args: tuple[Any, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if args and isinstance(args[-1], _Keywords):
        return args[:-1], dict(args[-1])
    return args, {}


async def _cancel_after(scope: anyio.CancelScope, points: int) -> None:
    """Cancel `scope` after `points` scheduling points."""
    for _ in range(points):
        await anyio.lowlevel.checkpoint()
    scope.cancel()


async def _cancelled_persist(
    store: RuntimeStore, runtime_id: LogicalRuntimeId, written: StoredInputState, points: int
) -> _Outcome:
    """`persist_input_state(runtime_id, written)`, cancelled after `points`
    scheduling points; then `load_input_state` of its input id."""
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as nursery:
            nursery.start_soon(_cancel_after, scope, points)
            await store.persist_input_state(runtime_id, written)
    return await _store_outcome(store.load_input_state, runtime_id, written.state.input_id)


def _commit_to(to_state: RuntimeState) -> MachineLifecycleCommit:
    """A commit to `to_state` (a target of the transition table)."""
    source = next(a for a, targets in LIFECYCLE_TRANSITIONS.items() if to_state in targets)
    return machine_transition(source, to_state)


_Call = tuple[str, tuple[Any, ...], dict[str, Any]]
"""A call of a `RuntimeStore` method: its name, arguments and keyword arguments."""

_INPUT_RACES = (
    "apply_and_persist_input",
    "lifecycle_and_persist_input",
    "retire_and_persist_input",
    "purge_and_apply",
    "retire_and_requeue_input",
    "purge_and_revive",
)
"""Pairs of operations `race_input_writes` runs at once."""
_OTHER_RACES = (
    "oauth_persist_update",
    "session_commit_and_apply",
    "session_clear_and_commit",
    "ops_delete_and_persist",
)
"""Pairs of operations `race_other_writes` runs at once."""
_READ_DURING = ("atomic_apply", "commit_machine_lifecycle", "retire_input_payloads")
"""The writes `read_during_write` reads during."""


_RACE_SHELL = StoredInputState.new_accepted(INPUT_IDS[0], now=_EPOCH)
_RACE_UPDATE = Increment()
_RACE_DELTA = SessionDelta(_session_json(SESSION_IDS[0]))


def _other_delta(delta: SessionDelta) -> SessionDelta:
    """A readable snapshot of the pool's other session."""
    other = next(s for s in SESSION_IDS if _session_json(s) != delta.session_snapshot)
    return SessionDelta(_session_json(other))


_BULK_SHELL = StoredInputState(
    InputState(
        input_id=INPUT_IDS[0],
        created_at=_EPOCH,
        updated_at=_EPOCH,
        history=_HISTORY,
        persisted_input={"text": "hello"},
    ),
    _TERMINAL_SEEDS[0],
)
"""A finished input state with a payload: `many_input_states` and
`large_value` give it other ids and fields."""

_MANY_INPUTS = LogicalRuntimeId("many-inputs")
_MANY_RECEIPTS = LogicalRuntimeId("many-receipts")
"""The runtimes of `many_input_states` and `many_receipts`, purged at the end
of each (the invariant reads every runtime the machine has sent, after every
step: a hundred input states or receipts there would cost it dearly)."""

_MANY_RUNTIMES = 101
"""`many_runtimes` makes this many runtimes, or a few more."""

_VARIABLE_LIMIT = 999
"""SQLite's limit on the variables of one statement (before 3.32):
`retire_many_ids` puts the id that decides its outcome after this many."""

_UNKNOWN_IDS = tuple(InputId(uuid.UUID(int=2**96 + n)) for n in range(_VARIABLE_LIMIT + 1))
"""Input ids no rule stores (`retire_many_ids`): more distinct ids than a
statement may bind."""

_CHECKPOINT_WRITES = 6
"""`checkpoint_during_writes` writes until the checkpoint has returned, at
most this many times."""


def _checkpoint_write(
    n: int, runtime_id: LogicalRuntimeId, shell: StoredInputState, receipt: RunBoundaryReceipt
) -> tuple[str, tuple[Any, ...]]:
    """The `n`-th write of `checkpoint_during_writes`: in turn `shell` with a
    new `attempt_count`, a receipt of a new sequence, a session snapshot, an
    ops snapshot and an OAuth update, each a value not held before."""
    kind = n % 5
    if kind == 0:
        seed = replace(shell.seed, attempt_count=(shell.seed.attempt_count + n + 1) % 2**32)
        return "persist_input_state", (runtime_id, StoredInputState(shell.state, seed))
    if kind == 1:
        again = replace(receipt, sequence=(receipt.sequence + n) % 2**64)
        return "atomic_apply", (runtime_id, None, again, [], None)
    if kind == 2:
        document = {"id": str(SESSION_IDS[0]), "messages": [], "write": n}
        return "commit_session_snapshot", (runtime_id, SessionDelta(json.dumps(document).encode()))
    if kind == 3:
        ops = PersistedOpsSnapshot(epoch_id=f"write {n} of {shell.state.input_id}")
        return "persist_ops_lifecycle", (runtime_id, ops)
    return "update_auth_oauth_flow_snapshot", (Append(b"c"),)


_BAD_CALLS_PER_STEP = 5
"""`bad_argument` makes this many of the bad calls in one step."""

_BUSY_PASSES = 4
_READ_PAUSE = 0.001
"""`read_during_write` reads back to back `_BUSY_PASSES` times, then
once per `_READ_PAUSE` seconds until the write has returned (and once more)."""

_CANCEL_POINTS = 12
"""`cancelled_then_persist` cancels a call after 0 to this many scheduling points."""

_BAD_CALLS = len(
    _bad_calls(
        RUNTIME_IDS[0],
        RunBoundaryReceipt(RUN_IDS[0], RunApplyBoundary.IMMEDIATE, (), None, 0, 0),
    )
)


# --- the machine ------------------------------------------------------------------------


class RuntimeStoreMachine(RuleBasedStateMachine):
    """Drives random operation sequences against a store and the reference model.

    Subclasses set `open_store` (a store that starts empty on every call) or
    `open_store_at` (a durable store kept at a location), `capabilities` if
    the backend leaves something out or is durable, and `session_codec` if
    the store was opened with a non-default one. See docs/conformance.md.
    """

    open_store: ClassVar[OpenStore]
    open_store_at: ClassVar[OpenStoreAt]
    capabilities: ClassVar[Capabilities] = FULL_CAPABILITIES
    """What the backend supports. A subclass that sets `open_store_at` and no
    `capabilities` is taken as durable and crash-safe (every flag on)."""
    durable: ClassVar[bool] = False
    """`capabilities.durable`, kept in step by `__init_subclass__`; read only."""
    session_codec: ClassVar[SessionCodec | None] = None
    backend: ClassVar[Literal["trio", "asyncio"]] = "trio"
    """The event loop the store runs on: `"asyncio"` for a store opened with
    `meerkat_actor.asyncio`'s openers (or any asyncio backend). The rules'
    concurrency (task groups, cancel scopes) is anyio's, the same on both."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "durable" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__}: declare durability with"
                " capabilities = Capabilities(durable=True, ...), not durable = ..."
            )
        declared = any(
            "capabilities" in klass.__dict__
            for klass in cls.__mro__
            if klass is not RuntimeStoreMachine and issubclass(klass, RuntimeStoreMachine)
        )
        if "open_store_at" in cls.__dict__ and not declared:
            cls.capabilities = Capabilities(durable=True, crash_safe=True)
        if not isinstance(cls.capabilities, Capabilities):
            raise TypeError(f"{cls.__name__}.capabilities must be a Capabilities value")
        cls.durable = cls.capabilities.durable

    def __init__(self) -> None:
        super().__init__()
        self.model = ReferenceModel(self.session_codec)
        self.location: Path | None = None
        self._open = self.store_opener()
        self.seen_runtimes: dict[LogicalRuntimeId, None] = {}
        self.seen_receipts: dict[tuple[LogicalRuntimeId, RunId, int], None] = {}
        self._calls = 0
        self._checks = 0
        # Runtimes sent to since the last check, and whether the next check
        # must be a full one (see whole_state_matches_model).
        self._written: set[LogicalRuntimeId] = set()
        self._full_check_due = True
        self._failed = False
        # The steps of many values already taken in this test case.
        self._once: set[str] = set()
        try:
            self.bridge: TrioBridge[RuntimeStore] = TrioBridge(self._open, self.backend)
            self.authority_key = self._check_authority_key(None)
        except BaseException:
            self.teardown()
            raise

    def store_opener(self) -> OpenStore:
        """The zero-argument callable that opens this machine's store.

        Called once per machine (test case). For a durable store every call
        of the result must open the same store: the reopen rules call it again.
        The default binds `open_store_at` to a fresh temporary directory
        (`self.location`, removed by `teardown`), or returns `open_store`.
        """
        cls = type(self)
        if hasattr(cls, "open_store_at"):
            location = Path(tempfile.mkdtemp(prefix="meerkat-machine-"))
            self.location = location
            open_store_at = cls.open_store_at
            return lambda: open_store_at(location)
        if hasattr(cls, "open_store"):
            return cls.open_store
        raise TypeError(
            f"{cls.__name__} must set open_store (a fresh store per call) or"
            " open_store_at (a durable store at a location)"
        )

    def teardown(self) -> None:
        """Check the whole state once more (unless the test case is already
        failing), close the store and remove the location. Also called when
        opening the store failed (then there is no store to close): an
        override that cleans up more must call this one *first*, before it
        releases anything the store needs (a server, a schema), since the
        last check reads the store, and cope with a store that never opened."""
        bridge = getattr(self, "bridge", None)
        try:
            failing = self._failed or sys.exc_info()[1] is not None
            if bridge is not None and bridge.running and not failing:
                self._full_check_due = True
                self.whole_state_matches_model()
        finally:
            self._close(bridge)

    def _close(self, bridge: TrioBridge[RuntimeStore] | None) -> None:
        try:
            if bridge is not None:
                bridge.close()
        finally:
            self._remove_location()

    def _remove_location(self) -> None:
        if self.location is not None:
            shutil.rmtree(self.location, ignore_errors=True)
            self.location = None

    # --- plumbing ------------------------------------------------------------------

    def check(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Run `name(*args, **kwargs)` (a `RuntimeStore` method) on the store
        and on the model; their outcomes must agree (`AssertionError`
        otherwise, naming the call and both answers). Public: a rule of your
        own uses it (docs/conformance.md, "Adding your own rule"). Notes the
        runtime id and receipt key sent (`note_sent`).

        Every other call reaches the store with every argument by keyword
        (the parameter names of `RuntimeStore`, which callers may use; an
        argument equal to its default left out; lists passed as tuples, any
        sequence being allowed), the others positionally (their order): a
        backend must accept both."""
        self.note_sent(args)
        expected = _expected(self.model, self.capabilities, name, args, kwargs)
        self._check_against(expected, name, args, kwargs)

    def _check_against(
        self,
        expected: _Outcome,
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        shown: str | None = None,
    ) -> None:
        """`check`'s call and comparison, with the model's answer given (the
        model has run already); `shown` replaces the arguments in a message."""
        self._calls += 1
        by_name = self._calls % 2 == 0
        call_args, call_kwargs = _by_name(name, args, kwargs) if by_name else (args, kwargs)
        call = partial(
            _store_outcome, getattr(self.bridge.resource, name), *call_args, **call_kwargs
        )
        actual = self.bridge.call(call)
        described = name + (shown if shown is not None else _args_repr(call_args, call_kwargs))
        if not actual.same_as(expected):
            self._failed = True
            raise AssertionError(f"{described}: the store {actual!r}, the model {expected!r}")
        if actual.error is not None and expected.error is not None:
            problem = _message_problem(self.model, name, args, actual.error, expected.error)
            if problem is not None:
                self._failed = True
                raise AssertionError(
                    f"{described}: the store {actual!r}, as the model does, but {problem} (SPEC §5)"
                )

    def note_sent(self, args: tuple[Any, ...]) -> None:
        """Remember the runtime id and receipt key among `args` (a call's
        arguments), so the invariant also reads them (a failed write must
        leave nothing behind there). Public, for rules of your own."""
        runtime_id = next((a for a in args if isinstance(a, LogicalRuntimeId)), None)
        if runtime_id is None:
            return
        self.seen_runtimes[runtime_id] = None
        self._written.add(runtime_id)
        for arg in args:
            if isinstance(arg, RunBoundaryReceipt):
                self.seen_receipts[(runtime_id, arg.run_id, arg.sequence)] = None

    # --- writes --------------------------------------------------------------------

    @rule(runtime_id=runtime_ids, delta=deltas)
    def commit_session_snapshot(self, runtime_id: LogicalRuntimeId, delta: SessionDelta) -> None:
        self.check("commit_session_snapshot", runtime_id, delta)

    applied = Bundle("applied")
    """`(runtime_id, receipt)` of earlier `atomic_apply` calls, to reuse their keys."""

    @rule(
        target=applied,
        runtime_id=runtime_ids,
        delta=st.one_of(st.none(), deltas),
        receipt=receipts,
        input_updates=state_lists,
        session_store_key=st.one_of(st.none(), session_ids),
    )
    def atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        delta: SessionDelta | None,
        receipt: RunBoundaryReceipt,
        input_updates: list[StoredInputState],
        session_store_key: SessionId | None,
    ) -> tuple[LogicalRuntimeId, RunBoundaryReceipt]:
        self.check("atomic_apply", runtime_id, delta, receipt, input_updates, session_store_key)
        return runtime_id, receipt

    @rule(
        runtime_id=pool_runtime_ids,
        receipt=receipts,
        case=st.sampled_from(("mismatched key", "unreadable snapshot", "no delta")),
    )
    def two_checks_at_once(
        self, runtime_id: LogicalRuntimeId, receipt: RunBoundaryReceipt, case: str
    ) -> None:
        """`atomic_apply` calls that fail two of its checks at once, where
        only the model's order of checks gives the right error:
        after a session snapshot and a receipt are stored, the same receipt
        key again with a snapshot whose id is not `session_store_key`
        (`SessionKeyMismatch`, not `ReceiptConflict`), or with an unreadable
        snapshot (`WriteFailed`, not `ReceiptConflict`); or no delta with a
        key other than the stored snapshot's id (nothing to compare: the key
        validates the call's own snapshot only). The order of checks is the
        one docs/semantics.md gives (codec, session key, receipt)."""
        stored = SessionDelta(_session_json(SESSION_IDS[0]))
        self.check("commit_session_snapshot", runtime_id, stored)
        if case == "no delta":
            self.check("atomic_apply", runtime_id, None, receipt, [], SESSION_IDS[1])
            return
        self.check("atomic_apply", runtime_id, None, receipt, [], None)
        delta = stored if case == "mismatched key" else SessionDelta(_UNREADABLE_SNAPSHOTS[1])
        self.check("atomic_apply", runtime_id, delta, receipt, [], SESSION_IDS[1])

    @rule(
        earlier=applied,
        message_count=st.integers(0, 3),
        delta=st.one_of(st.none(), deltas),
        input_updates=state_lists,
        session_store_key=st.one_of(st.none(), session_ids),
    )
    def atomic_apply_same_key(
        self,
        earlier: tuple[LogicalRuntimeId, RunBoundaryReceipt],
        message_count: int,
        delta: SessionDelta | None,
        input_updates: list[StoredInputState],
        session_store_key: SessionId | None,
    ) -> None:
        """`atomic_apply` again with an earlier call's receipt key (runtime,
        run id, sequence) and a receipt that may differ in its body: if the
        earlier call landed, this one must fail whole (`ReceiptConflict`).
        The snapshot may be unreadable and the session key may mismatch, so
        that several checks fail at once: the error must be the one SPEC §4
        checks first (the session codec, then the session key, then the
        receipt)."""
        runtime_id, receipt = earlier
        again = replace(receipt, message_count=message_count)
        self.check("atomic_apply", runtime_id, delta, again, input_updates, session_store_key)

    @rule(
        earlier=applied,
        sequence=sequences,
        message_count=st.integers(0, 3),
        session_store_key=st.one_of(st.none(), session_ids),
    )
    def atomic_apply_same_run(
        self,
        earlier: tuple[LogicalRuntimeId, RunBoundaryReceipt],
        sequence: int,
        message_count: int,
        session_store_key: SessionId | None,
    ) -> None:
        """`atomic_apply` of another receipt of an earlier call's run (same
        runtime and run id, `sequence` drawn anew), so that runs hold several
        receipts and `load_boundary_receipts` has sequences to order. No
        snapshot, but maybe a session key: with no snapshot to check it
        against, the key checks nothing (not the snapshot stored earlier)."""
        runtime_id, receipt = earlier
        again = replace(receipt, sequence=sequence, message_count=message_count)
        self.check("atomic_apply", runtime_id, None, again, [], session_store_key)

    @rule(
        runtime_id=runtime_ids,
        receipt=receipts,
        input_updates=state_lists,
        tasks=st.integers(min_value=2, max_value=8),
    )
    def concurrent_atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        receipt: RunBoundaryReceipt,
        input_updates: list[StoredInputState],
        tasks: int,
    ) -> None:
        """`tasks` trio tasks make the same `atomic_apply` call at once: at
        most one may succeed (exactly one if the key was free), the others
        raise what the model raises for a second attempt (`ReceiptConflict`)."""
        args = (runtime_id, None, receipt, input_updates, None)
        self.note_sent(args)
        first = _expected(self.model, self.capabilities, "atomic_apply", args)
        later = _expected(self.model, self.capabilities, "atomic_apply", args)
        outcomes: list[_Outcome] = []

        async def one(store: RuntimeStore) -> None:
            outcomes.append(await _store_outcome(store.atomic_apply, *args))

        async def run(store: RuntimeStore) -> None:
            async with anyio.create_task_group() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(one, store)

        self.bridge.call(run, self.bridge.resource)
        if first.error is not None:  # the model refuses every one of them
            agree = all(o.same_as(first) for o in outcomes)
        else:  # one wins, the rest come second
            winners = [o for o in outcomes if o.same_as(first)]
            agree = len(winners) == 1 and all(
                o.same_as(later) for o in outcomes if o is not winners[0]
            )
        if not agree:
            expected = (
                f"one call that {first!r} and the rest {later!r}"
                if first.error is None
                else f"every call {first!r}"
            )
            raise AssertionError(
                f"atomic_apply{_args_repr(args)} from {tasks} concurrent tasks:"
                f" the store {outcomes!r}; expected {expected}"
            )

    @rule(runtime_id=runtime_ids, shell=stored_states, phase=st.sampled_from(InputLifecycleState))
    def cancelled_then_persist(
        self, runtime_id: LogicalRuntimeId, shell: StoredInputState, phase: InputLifecycleState
    ) -> None:
        """For each of 0 to 12 scheduling points: one task calls
        `persist_input_state` with a first state, is cancelled after that many
        points, then persists a second state of the same input. The cancelled
        call took effect or not, but never after the later call of the same
        task (SPEC §4, cancellation): the second state must be the one stored,
        then and at the end. (Trio's scheduler varies the order of ready
        tasks, so which point a defect shows at varies from run to run; going
        through all of them in one step makes the step catch it anyway.)"""
        input_id = shell.state.input_id

        def version(n: int) -> StoredInputState:
            return StoredInputState(shell.state, _seed(phase, n))

        last = version(2 * _CANCEL_POINTS + 1)
        self.note_sent((runtime_id,))
        _model_outcome(self.model.persist_input_state, runtime_id, last)

        async def run(store: RuntimeStore) -> str | None:
            for points in range(_CANCEL_POINTS + 1):
                first, second = version(2 * points), version(2 * points + 1)
                scope = anyio.CancelScope()

                async def caller(
                    scope: anyio.CancelScope, first: StoredInputState, second: StoredInputState
                ) -> None:
                    with scope:
                        await store.persist_input_state(runtime_id, first)
                    await store.persist_input_state(runtime_id, second)

                async with anyio.create_task_group() as nursery:
                    nursery.start_soon(caller, scope, first, second)
                    nursery.start_soon(_cancel_after, scope, points)
                got = await store.load_input_state(runtime_id, input_id)
                if not identical(got, second):
                    return (
                        f"cancelled after {points} scheduling points, then persisted"
                        f" attempt_count={second.seed.attempt_count}: load_input_state"
                        f"{_args_repr((runtime_id, input_id))} then returned {got!r}"
                    )
            return None

        problem = self.bridge.call(run, self.bridge.resource)
        if problem is not None:
            raise AssertionError(
                f"persist_input_state({runtime_id!r}, ...) cancelled, then again: {problem}"
            )

    @precondition(lambda self: "many_input_states" not in self._once)
    @rule(count=st.integers(101, 160), first=st.integers(0, 2**128 - 1), retire=st.booleans())
    def many_input_states(self, count: int, first: int, retire: bool) -> None:
        """One `atomic_apply` with `count` (101 to 160) finished input states
        of ids spread over the UUID order from `first`, in a runtime of its
        own; `load_input_states` must return them all, in order (a backend
        that pages its reads by 100 shows it); then (if `retire`)
        `retire_input_payloads` of all of them (or its `IN (...)` lists) and
        the same read. Then the runtime is destroyed and purged (with the
        retention capability), so the invariant need not read them all after
        every later step. At most once per test case, as are the other steps
        of many values (`many_receipts`, `many_runtimes`, `retire_many_ids`):
        their defects show the first time, and each costs as much as a dozen
        other steps."""
        self._once.add("many_input_states")
        runtime_id = _MANY_INPUTS
        step = 2**128 // count
        states = [
            StoredInputState(
                replace(
                    _BULK_SHELL.state,
                    input_id=InputId(uuid.UUID(int=(first + k * step) % 2**128)),
                ),
                _BULK_SHELL.seed,
            )
            for k in range(count)
        ]
        receipt = RunBoundaryReceipt(
            RUN_IDS[0], RunApplyBoundary.RUN_CHECKPOINT, (), None, count, first % 2**64
        )
        self.check("atomic_apply", runtime_id, None, receipt, states, None)
        self.check("load_input_states", runtime_id)
        if retire:
            ids = [stored.state.input_id for stored in states]
            self.check("retire_input_payloads", runtime_id, ids)
            self.check("load_input_states", runtime_id)
        if self.capabilities.retention:
            ending = machine_transition(RuntimeState.STOPPED, RuntimeState.DESTROYED)
            self.check("commit_machine_lifecycle", runtime_id, ending, [])
            self.check("purge_runtime", runtime_id)

    @precondition(lambda self: self.capabilities.retention and "many_receipts" not in self._once)
    @rule(count=st.integers(101, 130), run=st.sampled_from(RUN_IDS), tasks=st.integers(4, 16))
    def many_receipts(self, count: int, run: RunId, tasks: int) -> None:
        """`count` (101 to 130) receipts of one run in a runtime of its own,
        written by `tasks` tasks at once, read back with
        `load_boundary_receipts` (in sequence order, every one: a backend
        that pages by 100, or by any smaller size, shows it), then the
        runtime destroyed and purged, so that the invariant need not read
        them all after every later step. At most once per test case."""
        self._once.add("many_receipts")
        runtime_id = _MANY_RECEIPTS
        receipts = [
            RunBoundaryReceipt(
                run, RunApplyBoundary.RUN_CHECKPOINT, (), None, n, n * (2**57 + 3) % 2**64
            )
            for n in range(count)
        ]
        for receipt in receipts:
            _model_outcome(self.model.atomic_apply, runtime_id, None, receipt, [])
        pending = list(reversed(receipts))
        failures: list[_Outcome] = []

        async def writer(store: RuntimeStore) -> None:
            while pending:
                outcome = await _store_outcome(
                    store.atomic_apply, runtime_id, None, pending.pop(), []
                )
                if outcome.error is not None:
                    failures.append(outcome)

        async def run_all(store: RuntimeStore) -> None:
            async with anyio.create_task_group() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(writer, store)

        self.bridge.call(run_all, self.bridge.resource)
        if failures:
            raise AssertionError(
                f"atomic_apply({_readable(runtime_id)}, None, <one of {count} receipts of run"
                f" {_readable(run)}>, []) from {tasks} tasks at once: the store"
                f" {failures[0]!r}, the model returned None"
            )
        self.check("load_boundary_receipts", runtime_id)
        self.check("list_runtimes")
        ending = machine_transition(RuntimeState.STOPPED, RuntimeState.DESTROYED)
        self.check("commit_machine_lifecycle", runtime_id, ending, [])
        self.check("purge_runtime", runtime_id)

    @precondition(lambda self: self.capabilities.retention and "many_runtimes" not in self._once)
    @rule(extra=st.integers(0, 9), tasks=st.integers(16, 64))
    def many_runtimes(self, extra: int, tasks: int) -> None:
        """101 + `extra` runtimes of their own (`many-runtimes-0`, ...), each
        given the runtime state `destroyed` (`commit_machine_lifecycle`) by
        `tasks` tasks at once, so that writes to different runtimes race;
        `list_runtimes` must name them all, in code point order (`-10`
        before `-9`), beside the rest; then `tasks` tasks purge them all at
        once, and `list_runtimes` again. A backend that returns only the
        first page of runtimes (100), or that keeps the list of runtimes as
        one document which a write reads and writes back in two steps (so
        that writes to two runtimes lose each other's change), shows it.
        The runtimes are not noted as sent (`note_sent`): gone at the end of
        the step, they cost the invariant nothing. At most once per test
        case: the defects show the first time, and the step costs as much
        as a dozen others."""
        self._once.add("many_runtimes")
        runtimes = [LogicalRuntimeId(f"many-runtimes-{n}") for n in range(_MANY_RUNTIMES + extra)]
        ending = machine_transition(RuntimeState.STOPPED, RuntimeState.DESTROYED)
        self._all_at_once("commit_machine_lifecycle", [(r, ending, []) for r in runtimes], tasks)
        written = f"{len(runtimes)} runtimes given a state by {tasks} tasks at once"
        self._check_list_runtimes(f"after {written}")
        self._all_at_once("purge_runtime", [(r,) for r in runtimes], tasks)
        self._check_list_runtimes(f"after {written}, then purged by as many")

    def _check_list_runtimes(self, when: str) -> None:
        """`check("list_runtimes")`, with a message that says which runtimes
        differ rather than printing both lists."""
        expected = _expected(self.model, self.capabilities, "list_runtimes", ())
        actual = self.bridge.call(_store_outcome, self.bridge.resource.list_runtimes)
        if actual.same_as(expected):
            return
        self._failed = True
        if actual.error is None and expected.error is None and isinstance(actual.value, list):
            got, want = actual.value, expected.value
            left_out = [r for r in want if r not in got]
            extra = [r for r in got if r not in want]
            detail = f"the store returned {len(got)} runtimes, the model {len(want)}"
            if left_out:
                detail += f"; the store left out {_readable(left_out[:5])}"
                detail += f" (of {len(left_out)})" if len(left_out) > 5 else ""
            if extra:
                detail += f"; the store listed {_readable(extra[:5])}, which hold nothing"
                detail += f" (of {len(extra)})" if len(extra) > 5 else ""
            if not left_out and not extra:
                detail += f"; in another order or form: {actual!r}"
        else:
            detail = f"the store {actual!r}, the model {expected!r}"
        raise AssertionError(f"list_runtimes() {when}: {detail}")

    def _all_at_once(self, name: str, calls: list[tuple[Any, ...]], tasks: int) -> None:
        """`name(*args)` for each `args` of `calls`, made by `tasks` tasks at
        once (each takes the next call when its last one has returned) and
        on the model in the order given (the calls must commute); every
        outcome must be the model's. Notes nothing as sent."""
        if self.capabilities.supports(name):
            model = getattr(self.model, name)
            expected = [_model_outcome(model, *args) for args in calls]
        else:
            expected = [_expected(self.model, self.capabilities, name, args) for args in calls]
        outcomes: list[_Outcome] = [_Outcome() for _ in calls]
        pending = list(reversed(range(len(calls))))

        async def worker(store: RuntimeStore) -> None:
            method = getattr(store, name)
            while pending:
                i = pending.pop()
                outcomes[i] = await _store_outcome(method, *calls[i])

        async def run(store: RuntimeStore) -> None:
            async with anyio.create_task_group() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(worker, store)

        self.bridge.call(run, self.bridge.resource)
        for args, got, want in zip(calls, outcomes, expected, strict=True):
            if not got.same_as(want):
                self._failed = True
                raise AssertionError(
                    f"{name}{_args_repr(args)}, one of {len(calls)} such calls made by {tasks}"
                    f" tasks at once: the store {got!r}, the model {want!r}"
                )

    @rule(
        runtime_id=runtime_ids,
        kind=st.sampled_from(("session", "oauth", "input", "ops")),
        size=st.sampled_from((65_537, 262_145, 1_048_577)),
    )
    def large_value(self, runtime_id: LogicalRuntimeId, kind: str, size: int) -> None:
        """Write one value of `size` bytes or more (just over 64 KiB, 256 KiB
        or 1 MiB): a session snapshot, the OAuth snapshot, an input state with
        a long history and a large document, or an ops snapshot (whose
        document also nests 128 levels deep, the most the types accept). A
        backend with a column, a page, a message or a nesting limit that
        truncates or refuses shows it at the next read."""
        text = (_LETTERS * (size // len(_LETTERS) + 1))[:size]
        if kind == "session":
            snapshot = json.dumps(
                {"id": str(SESSION_IDS[0]), "messages": [{"role": "user", "content": text}]}
            ).encode()
            self.check("commit_session_snapshot", runtime_id, SessionDelta(snapshot))
        elif kind == "oauth":
            self.check("persist_auth_oauth_flow_snapshot", text.encode() + b"\x00\xff")
        elif kind == "input":
            entries = tuple(
                InputStateHistoryEntry(
                    _EPOCH,
                    InputLifecycleState.ACCEPTED,
                    InputLifecycleState.QUEUED,
                    f"step {n}",
                )
                for n in range(40)
            )
            shell = replace(
                _BULK_SHELL.state,
                input_id=INPUT_IDS[2],
                history=entries,
                persisted_input={"text": text, "flags": [True, 1, 1.0, -0.0]},
            )
            self.check("persist_input_state", runtime_id, StoredInputState(shell, _BULK_SHELL.seed))
        else:
            ops = PersistedOpsSnapshot(
                epoch_id="large",
                authority_state={"blob": text, "deep": _DEEP},
                operation_specs=[],
                completion_entries=[],
                cursors={},
            )
            self.check("persist_ops_lifecycle", runtime_id, ops)

    @rule(
        runtime_id=pool_runtime_ids,
        shell=stored_states,
        points=st.integers(0, _CANCEL_POINTS),
        applies=st.booleans(),
        receipt=receipts,
        delta=st.one_of(st.none(), readable_deltas),
    )
    def cancelled_then_restart(
        self,
        runtime_id: LogicalRuntimeId,
        shell: StoredInputState,
        points: int,
        *,
        applies: bool = False,
        receipt: RunBoundaryReceipt | None = None,
        delta: SessionDelta | None = None,
    ) -> None:
        """`persist_input_state` cancelled after `points` scheduling points,
        then a read; the same for the last two other input ids of the pool,
        cancelled after `points + 1` and `points + 2` (modulo 13: which point a defect
        shows at depends on how many the backend's write takes); then a
        restart (a crash for a crash-safe store, a clean reopen for a durable
        one; for a store that is neither, 20 scheduling points of nothing)
        and the same reads again. Each cancelled write took effect or not,
        but the two reads must agree: a write a reader has seen is
        acknowledged to the world and must survive (SPEC §4, cancellation;
        §6, durability), and one nobody saw must not appear later.

        If `applies`, also before the restart (`_cancelled_applies`):
        `atomic_apply` calls (of `receipt`'s run and `delta`) cancelled after
        0, 1, ..., `points` scheduling points, each wholly applied or wholly
        absent, and after the restart as the model adopted them."""
        # Not the ids `_cancelled_applies` writes (the first two others).
        others = [i for i in INPUT_IDS if i != shell.state.input_id][2:4]
        cases: list[tuple[StoredInputState, int]] = [
            (
                shell
                if k == 0
                else replace(shell, state=replace(shell.state, input_id=others[k - 1])),
                (points + k) % (_CANCEL_POINTS + 1),
            )
            for k in range(3)
        ]
        self.note_sent((runtime_id,))
        cancelled_writes: list[tuple[StoredInputState, int, _Outcome]] = []
        for case, after in cases:
            input_id = case.state.input_id
            before = self.model.load_input_state(runtime_id, input_id)
            seed = replace(
                case.seed, attempt_count=(before.seed.attempt_count + 1) % 2**32 if before else 7
            )
            written = StoredInputState(case.state, seed)
            seen = self.bridge.call(
                _cancelled_persist, self.bridge.resource, runtime_id, written, after
            )
            if not (seen.same_as(_Outcome(before)) or seen.same_as(_Outcome(written))):
                raise AssertionError(
                    f"persist_input_state({runtime_id!r}, ...) cancelled after {after} scheduling"
                    f" points: load_input_state{_args_repr((runtime_id, input_id))}"
                    f" then {seen!r}, neither the state before nor the one"
                    " written"
                )
            if seen.same_as(_Outcome(written)):
                self.model.persist_input_state(runtime_id, written)
            cancelled_writes.append((written, after, seen))
        reads = (
            []
            if receipt is None or not applies
            else self._cancelled_applies(runtime_id, shell, points, receipt, delta)
        )
        restart = self._restart()
        for written, after, seen in cancelled_writes:
            input_id = written.state.input_id
            again = self.bridge.call(
                partial(_store_outcome, self.bridge.resource.load_input_state, runtime_id, input_id)
            )
            if not again.same_as(seen):
                raise AssertionError(
                    f"persist_input_state({runtime_id!r}, ...) cancelled after {after} scheduling"
                    f" points: load_input_state{_args_repr((runtime_id, input_id))}"
                    f" {seen!r} after the cancellation, then {again!r}"
                    f" after {restart}"
                )
        if reads:
            self._check_after_restart(reads, f"atomic_apply({_readable(runtime_id)}, ...)", restart)

    def _restart(self) -> str:
        """A crash for a crash-safe store, a clean reopen for a durable one,
        20 scheduling points of nothing otherwise; returns what it did."""
        if self.capabilities.crash_safe:
            self.crash_and_reopen()
            return "a crash and a reopen"
        if self.capabilities.durable:
            self.reopen()
            return "a reopen"

        async def idle() -> None:
            for _ in range(20):
                await anyio.lowlevel.checkpoint()

        self.bridge.call(idle)
        return "20 scheduling points"

    def _cancelled_applies(
        self,
        runtime_id: LogicalRuntimeId,
        shell: StoredInputState,
        points: int,
        receipt: RunBoundaryReceipt,
        delta: SessionDelta | None,
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """`cancelled_then_restart`'s `atomic_apply` calls: for each of 0 to
        `points` scheduling points in turn, an `atomic_apply` (`delta`, a
        receipt of its own of `receipt`'s run, and two input states of
        `shell` under the first two pool ids other than its own, with a new
        attempt count) cancelled after that many points, then the reads of
        everything it may change (its receipt, both input states, the
        session snapshot if `delta`). The call took effect whole or not at
        all (SPEC §4): every read answers as before it, or every read as
        after it (as after it if it returned before the cancellation); the
        model adopts which. Returns the reads to make again after the
        restart (every receipt, the input states, the session if `delta`).
        A backend that commits the statements it has sent so far when a
        call is cancelled between them is seen half done here."""
        ids = [i for i in INPUT_IDS if i != shell.state.input_id][:2]
        calls: list[tuple[tuple[Any, ...], list[tuple[str, tuple[Any, ...]]]]] = []
        for p in range(points + 1):
            seed = replace(shell.seed, attempt_count=(shell.seed.attempt_count + p + 1) % 2**32)
            states = [StoredInputState(replace(shell.state, input_id=i), seed) for i in ids]
            key = replace(receipt, sequence=(receipt.sequence + p) % 2**64)
            args = (runtime_id, delta, key, states, None)
            self.note_sent(args)
            these: list[tuple[str, tuple[Any, ...]]] = [
                ("load_boundary_receipt", (runtime_id, key.run_id, key.sequence)),
                *(("load_input_state", (runtime_id, i)) for i in ids),
            ]
            if delta is not None:
                these.append(("load_session_snapshot", (runtime_id,)))
            calls.append((args, these))

        async def cancelled(store: RuntimeStore) -> list[tuple[_Outcome | None, list[_Outcome]]]:
            results: list[tuple[_Outcome | None, list[_Outcome]]] = []
            for p, (args, these) in enumerate(calls):
                outcome: _Outcome | None = None
                with anyio.CancelScope() as scope:
                    async with anyio.create_task_group() as nursery:
                        nursery.start_soon(_cancel_after, scope, p)
                        outcome = await _store_outcome(store.atomic_apply, *args)
                seen = [await _store_outcome(getattr(store, n), *a) for n, a in these]
                results.append((outcome, seen))
            return results

        results = self.bridge.call(cancelled, self.bridge.resource)
        for p, ((args, these), (outcome, seen)) in enumerate(zip(calls, results, strict=True)):
            after = _copy_model(self.model)
            expected = _expected(after, self.capabilities, "atomic_apply", args)
            new = [_expected(after, self.capabilities, n, a) for n, a in these]
            if (outcome is None or outcome.same_as(expected)) and all(
                g.same_as(w) for g, w in zip(seen, new, strict=True)
            ):
                self.model = after  # applied (or refused, as the model was)
                continue
            old = [_expected(self.model, self.capabilities, n, a) for n, a in these]
            call = f"atomic_apply{_args_repr(args)} cancelled after {p} scheduling points"
            if outcome is not None and not outcome.same_as(expected):
                raise AssertionError(
                    f"{call} (it returned first): the store {outcome!r}, the model {expected!r}"
                )
            if outcome is None and all(g.same_as(o) for g, o in zip(seen, old, strict=True)):
                continue  # never applied
            differs = "; ".join(
                f"{n}{_args_repr(a)} {g!r} (before: {o!r}, after: {w!r})"
                for (n, a), g, o, w in zip(these, seen, old, new, strict=True)
            )
            happened = (
                "returned first, but is not wholly applied"
                if outcome is not None
                else "neither wholly applied nor wholly absent"
            )
            raise AssertionError(f"{call}: then {happened}: {differs}")
        reads = [these[0] for _args, these in calls]
        reads += [("load_input_state", (runtime_id, i)) for i in ids]
        if delta is not None:
            reads.append(("load_session_snapshot", (runtime_id,)))
        return reads

    def _check_after_restart(
        self, reads: list[tuple[str, tuple[Any, ...]]], writes: str, restart: str
    ) -> None:
        """`reads` (of what `writes`, cancelled, may have changed) answer as
        the model does after `restart`."""

        async def again(store: RuntimeStore) -> list[_Outcome]:
            return [await _store_outcome(getattr(store, n), *a) for n, a in reads]

        held = self.bridge.call(again, self.bridge.resource)
        for (name, args), got in zip(reads, held, strict=True):
            want = _expected(self.model, self.capabilities, name, args)
            if not got.same_as(want):
                raise AssertionError(
                    f"{writes} cancelled, then {restart}: {name}{_args_repr(args)} {got!r},"
                    f" the model {want!r} (as the store answered before the restart)"
                )

    @rule(runtime_id=runtime_ids, state=st.one_of(stored_states, _disagreeing_states))
    def persist_input_state(self, runtime_id: LogicalRuntimeId, state: StoredInputState) -> None:
        self.check("persist_input_state", runtime_id, state)

    @rule(
        runtime_id=runtime_ids,
        transition=transitions,
        input_states=state_lists,
        expected=expectations,
    )
    def commit_machine_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        transition: tuple[RuntimeState, RuntimeState],
        input_states: list[StoredInputState],
        expected: RuntimeState | Unchecked | None,
    ) -> None:
        """`commit_machine_lifecycle(runtime_id, machine_transition(*transition),
        input_states)`, with `expected=expected` unless that is `UNCHECKED`
        (then the keyword is left out, as a caller of SPEC §4 would)."""
        commit = machine_transition(*transition)
        # UNCHECKED is left out, as a caller of SPEC §4 would, or (every other
        # time, if the backend declares `expected=`) passed: the same call.
        explicit = expected is not UNCHECKED or (
            self._calls % 2 == 1
            and self.capabilities.supports("commit_machine_lifecycle", ["expected"])
        )
        kwargs = {"expected": expected} if explicit else {}
        self.check("commit_machine_lifecycle", runtime_id, commit, input_states, **kwargs)

    @rule(runtime_id=pool_runtime_ids, to_state=targets, input_states=state_lists)
    def compare_and_set_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        to_state: RuntimeState,
        input_states: list[StoredInputState],
    ) -> None:
        """`commit_machine_lifecycle` to `to_state` with `expected=` the
        runtime state the runtime holds now (`None` if it has none): the
        compare-and-set succeeds."""
        expected = self.model.load_runtime_state(runtime_id)
        self.check(
            "commit_machine_lifecycle",
            runtime_id,
            _commit_to(to_state),
            input_states,
            expected=expected,
        )

    @rule(
        runtime_id=pool_runtime_ids,
        to_state=targets,
        shell=stored_states,
        tasks=st.integers(min_value=2, max_value=8),
    )
    def concurrent_compare_and_set(
        self,
        runtime_id: LogicalRuntimeId,
        to_state: RuntimeState,
        shell: StoredInputState,
        tasks: int,
    ) -> None:
        """`tasks` trio tasks race `commit_machine_lifecycle` to `to_state`,
        all with `expected=` the runtime state held now, task i with one input
        state of `shell`'s id and `attempt_count=i`: exactly one wins, the
        others raise `LifecycleConflict` (unless `to_state` is the state held
        now: then all succeed, with the same input state) and wrote nothing.
        The winner's input state is the one stored."""
        expected = self.model.load_runtime_state(runtime_id)
        commit = _commit_to(to_state)
        distinct = to_state != expected

        def version(i: int) -> StoredInputState:
            seed = replace(shell.seed, attempt_count=i if distinct else 0)
            return StoredInputState(shell.state, seed)

        kwargs = {"expected": expected}
        name = "commit_machine_lifecycle"
        self.note_sent((runtime_id,))
        # The model: the first call wins, a second with the same expected
        # comes after it.
        first = _expected(
            self.model, self.capabilities, name, (runtime_id, commit, [version(0)]), kwargs
        )
        later = _expected(
            self.model, self.capabilities, name, (runtime_id, commit, [version(1)]), kwargs
        )
        outcomes: dict[int, _Outcome] = {}

        async def one(store: RuntimeStore, i: int) -> None:
            outcomes[i] = await _store_outcome(
                store.commit_machine_lifecycle, runtime_id, commit, [version(i)], **kwargs
            )

        async def run(store: RuntimeStore) -> None:
            async with anyio.create_task_group() as nursery:
                for i in range(tasks):
                    nursery.start_soon(one, store, i)

        self.bridge.call(run, self.bridge.resource)
        done = [outcomes[i] for i in range(tasks)]
        winners = [i for i, o in enumerate(done) if o.error is None]
        if first.error is not None or later.error is None:  # all alike
            agree = all(o.same_as(first) for o in done)
        else:  # one wins, the rest lose
            agree = len(winners) == 1 and all(
                o.same_as(later) for i, o in enumerate(done) if i != winners[0]
            )
        if not agree:
            raise AssertionError(
                f"{name}({runtime_id!r}, <a commit to {to_state.value}>, [<its input state>],"
                f" expected={expected!r}) from {tasks} concurrent tasks: the store"
                f" {done!r}; expected one call that {first!r} and the rest {later!r}"
            )
        if first.error is None and later.error is not None:
            # The model let task 0 win; the store's winner wrote its own state.
            self.model.persist_input_state(runtime_id, version(winners[0]))

    @rule(
        race=st.sampled_from(_INPUT_RACES),
        runtime_id=pool_runtime_ids,
        shell=_terminal_states,
        receipt=receipts,
        to_state=targets,
    )
    def race_input_writes(
        self,
        *,
        race: str,
        runtime_id: LogicalRuntimeId,
        shell: StoredInputState,
        receipt: RunBoundaryReceipt,
        to_state: RuntimeState,
    ) -> None:
        """`race_two_operations` of a pair that writes an input state (see
        `_INPUT_RACES`)."""
        self.race_two_operations(
            race=race, runtime_id=runtime_id, shell=shell, receipt=receipt, to_state=to_state
        )

    @rule(
        race=st.sampled_from(_OTHER_RACES),
        runtime_id=pool_runtime_ids,
        receipt=receipts,
        snapshot=st.binary(min_size=1, max_size=8),
        update=st.sampled_from((Increment(), Append(b"+"))),
        delta=readable_deltas,
        ops=ops_snapshots,
    )
    def race_other_writes(
        self,
        *,
        race: str,
        runtime_id: LogicalRuntimeId,
        receipt: RunBoundaryReceipt,
        snapshot: bytes,
        update: Callable[[bytes | None], bytes],
        delta: SessionDelta,
        ops: PersistedOpsSnapshot,
    ) -> None:
        """`race_two_operations` of a pair that writes the OAuth snapshot, a
        session or an ops snapshot (see `_OTHER_RACES`)."""
        self.race_two_operations(
            race=race,
            runtime_id=runtime_id,
            receipt=receipt,
            snapshot=snapshot,
            update=update,
            delta=delta,
            ops=ops,
        )

    def race_two_operations(
        self,
        *,
        race: str,
        runtime_id: LogicalRuntimeId,
        receipt: RunBoundaryReceipt,
        shell: StoredInputState = _RACE_SHELL,
        snapshot: bytes = b"1",
        update: Callable[[bytes | None], bytes] = _RACE_UPDATE,
        delta: SessionDelta = _RACE_DELTA,
        to_state: RuntimeState = RuntimeState.IDLE,
        ops: PersistedOpsSnapshot | None = None,
    ) -> None:
        """Two different operations on the same data, from two trio tasks at
        once, seven times: the second starts 0 to 3 scheduling points after
        the first, then the other way round (which interleaving shows a
        defect depends on how many points each operation takes, so the step
        tries them all). The store must be linearizable: its two outcomes,
        and what it holds of the data afterwards, must be those of running
        the two one after the other, in one order or the other. A backend
        whose writes do not all take the same lock, or that reads and writes
        in two steps, loses an update here.

        `race` names the pair (see `_RACES`): an OAuth persist and an update;
        an `atomic_apply` and a `persist_input_state` of the same input; a
        compare-and-set lifecycle commit and a `persist_input_state` of another
        input of the runtime; a
        retirement and a `persist_input_state`; a purge and an `atomic_apply`;
        a retirement and a `persist_input_state` that makes the state
        non-terminal again (a backend that checks, then drops the payload of
        whatever row is there now, is caught); a purge and a lifecycle commit
        that revives the destroyed runtime (a backend that checks the state,
        then deletes in another transaction, is caught);
        a session commit and an `atomic_apply` with a session; a session
        clear and a session commit; an ops delete and an ops persist."""
        input_id = shell.state.input_id
        for attempt, delay in enumerate((0, 1, 2, 3, -1, -2, -3)):
            # Values of their own for each attempt (a write lost in one
            # attempt must not be hidden by the same value written in an
            # earlier one), and a receipt key of its own.
            seed = replace(shell.seed, attempt_count=shell.seed.attempt_count + attempt + 1)
            other = StoredInputState(shell.state, seed)
            neighbour = StoredInputState(
                replace(shell.state, input_id=next(i for i in INPUT_IDS if i != input_id)), seed
            )
            sequence = (receipt.sequence + attempt) % 2**64
            apply = (runtime_id, None, replace(receipt, sequence=sequence), [shell], None)
            calls: tuple[_Call, _Call]
            if race == "oauth_persist_update":
                calls = (
                    ("persist_auth_oauth_flow_snapshot", (snapshot,), {}),
                    ("update_auth_oauth_flow_snapshot", (update,), {}),
                )
            elif race == "apply_and_persist_input":
                calls = (
                    ("atomic_apply", apply, {}),
                    ("persist_input_state", (runtime_id, other), {}),
                )
            elif race == "lifecycle_and_persist_input":
                expected = self.model.load_runtime_state(runtime_id)
                commit = _commit_to(to_state)
                calls = (
                    (
                        "commit_machine_lifecycle",
                        (runtime_id, commit, [shell]),
                        {"expected": expected},
                    ),
                    # Another input of the runtime: a commit that rewrites
                    # all of the runtime's inputs must not lose it.
                    ("persist_input_state", (runtime_id, neighbour), {}),
                )
            elif race == "retire_and_persist_input":
                self.check("persist_input_state", runtime_id, shell)
                calls = (
                    ("retire_input_payloads", (runtime_id, [input_id]), {}),
                    ("persist_input_state", (runtime_id, other), {}),
                )
            elif race == "purge_and_apply":
                ending = machine_transition(RuntimeState.STOPPED, RuntimeState.DESTROYED)
                self.check("commit_machine_lifecycle", runtime_id, ending, [])
                calls = (("purge_runtime", (runtime_id,), {}), ("atomic_apply", apply, {}))
            elif race == "retire_and_requeue_input":
                # The state made non-terminal again (payload kept): a
                # retirement must see it whole, before (it succeeds, and the
                # requeued state keeps its payload) or after (NotRetirable).
                self.check("persist_input_state", runtime_id, shell)
                requeued = StoredInputState(
                    shell.state,
                    InputStateSeed(InputLifecycleState.QUEUED, attempt_count=seed.attempt_count),
                )
                calls = (
                    ("retire_input_payloads", (runtime_id, [input_id]), {}),
                    ("persist_input_state", (runtime_id, requeued), {}),
                )
            elif race == "purge_and_revive":
                # A lifecycle commit of the destroyed runtime to another
                # state (the model does not check the transition): a purge
                # must come wholly before it, or be refused after it.
                ending = machine_transition(RuntimeState.STOPPED, RuntimeState.DESTROYED)
                self.check("commit_machine_lifecycle", runtime_id, ending, [])
                revived = RuntimeState.IDLE if to_state is RuntimeState.DESTROYED else to_state
                calls = (
                    ("purge_runtime", (runtime_id,), {}),
                    ("commit_machine_lifecycle", (runtime_id, _commit_to(revived), [other]), {}),
                )
            elif race == "session_commit_and_apply":
                with_session = (runtime_id, _other_delta(delta), *apply[2:])
                calls = (
                    ("commit_session_snapshot", (runtime_id, delta), {}),
                    ("atomic_apply", with_session, {}),
                )
            elif race == "session_clear_and_commit":
                calls = (
                    ("clear_session_snapshot", (runtime_id,), {}),
                    ("commit_session_snapshot", (runtime_id, delta), {}),
                )
            else:
                assert race == "ops_delete_and_persist"
                assert ops is not None
                calls = (
                    ("delete_ops_lifecycle", (runtime_id,), {}),
                    ("persist_ops_lifecycle", (runtime_id, ops), {}),
                )
            self._race(calls, delay, runtime_id)

    @rule(
        write=st.sampled_from(_READ_DURING),
        runtime_id=pool_runtime_ids,
        receipt=receipts,
        input_updates=st.lists(stored_states, min_size=1, max_size=3),
        delta=st.one_of(st.none(), readable_deltas),
        to_state=targets,
        readers=st.integers(1, 3),
    )
    def read_during_write(
        self,
        *,
        write: str,
        runtime_id: LogicalRuntimeId,
        receipt: RunBoundaryReceipt,
        input_updates: list[StoredInputState],
        delta: SessionDelta | None,
        to_state: RuntimeState,
        readers: int,
    ) -> None:
        """A write (`write`, one of `_READ_DURING`) in one task while
        `readers` other tasks read, over and over until it has returned,
        everything it may change. Every read must answer as before the write
        or as after it, and once a task has seen anything of the write, that
        task's later reads must all see all of it (SPEC §4: the write is
        atomic for readers too).

        The writes: `atomic_apply` of `receipt`, `input_updates` and `delta`
        (read: its receipt, each of its input states, the session snapshot,
        the runtime's lists); `commit_machine_lifecycle` to `to_state` with
        `input_updates` (read: the runtime state, each input state, the
        runtime's states, `list_runtimes`); `retire_input_payloads` of the
        ids of `input_updates` and one more pool id, each first persisted
        finished, with a payload (read: each input state, the runtime's
        states). A backend that commits the receipt and the input states, a
        lifecycle commit's runtime state and its input states, or a
        retirement's ids in several steps is seen half-done here."""
        args, reads = self._write_to_read_during(
            write,
            runtime_id,
            receipt=receipt,
            input_updates=input_updates,
            delta=delta,
            to_state=to_state,
        )
        self.note_sent(args)
        before = _copy_model(self.model)
        expected = _expected(self.model, self.capabilities, write, args)
        answers = [
            (
                _expected(before, self.capabilities, name, read_args),
                _expected(self.model, self.capabilities, name, read_args),
            )
            for name, read_args in reads
        ]
        calls = [f"{name}{_args_repr(read_args)}" for name, read_args in reads]
        problems: list[str] = []
        written: list[_Outcome] = []

        async def write_once(store: RuntimeStore, done: anyio.Event) -> None:
            written.append(await _store_outcome(getattr(store, write), *args))
            done.set()

        async def read(store: RuntimeStore, done: anyio.Event, task: int) -> None:
            seen_after: str | None = None
            passes = 0
            while not problems:
                last = done.is_set()
                order = (
                    range(len(reads)) if (passes + task) % 2 == 0 else reversed(range(len(reads)))
                )
                for i in order:
                    name, read_args = reads[i]
                    got = await _store_outcome(getattr(store, name), *read_args)
                    old, new = answers[i]
                    is_old, is_new = got.same_as(old), got.same_as(new)
                    call = calls[i]
                    if not (is_old or is_new):
                        problems.append(
                            f"{call} answered {got!r}: neither before ({old!r}) nor after ({new!r})"
                        )
                        return
                    if is_new and not is_old:
                        seen_after = seen_after or call
                    elif last and is_old and not is_new:
                        problems.append(
                            f"{call} answered as before the write ({got!r}) after"
                            f" {write} had returned"
                        )
                        return
                    elif seen_after is not None and is_old and not is_new:
                        problems.append(
                            f"{call} answered as before the write ({got!r}) after"
                            f" {seen_after} had answered as after it"
                        )
                        return
                passes += 1
                if last:
                    return
                if passes >= _BUSY_PASSES:
                    # A write that waits for a disk: look every millisecond.
                    with anyio.move_on_after(_READ_PAUSE):
                        await done.wait()

        async def run(store: RuntimeStore) -> None:
            done = anyio.Event()
            async with anyio.create_task_group() as nursery:
                for task in range(readers):
                    nursery.start_soon(read, store, done, task)
                nursery.start_soon(write_once, store, done)

        self.bridge.call(run, self.bridge.resource)
        if not written[0].same_as(expected):
            raise AssertionError(
                f"{write}{_args_repr(args)} while {readers} tasks read:"
                f" the store {written[0]!r}, the model {expected!r}"
            )
        if problems:
            raise AssertionError(
                f"{write}{_args_repr(args)} seen half done by a task reading meanwhile:"
                f" {problems[0]}"
            )

    def _write_to_read_during(
        self,
        write: str,
        runtime_id: LogicalRuntimeId,
        *,
        receipt: RunBoundaryReceipt,
        input_updates: list[StoredInputState],
        delta: SessionDelta | None,
        to_state: RuntimeState,
    ) -> tuple[tuple[Any, ...], list[tuple[str, tuple[Any, ...]]]]:
        """The arguments of `read_during_write`'s write, and the reads of
        everything it may change (a retirement's states persisted first)."""
        ids = list(dict.fromkeys(s.state.input_id for s in input_updates))
        if write == "atomic_apply":
            args: tuple[Any, ...] = (runtime_id, delta, receipt, input_updates, None)
        elif write == "commit_machine_lifecycle":
            args = (runtime_id, _commit_to(to_state), input_updates)
        else:
            assert write == "retire_input_payloads"
            ids.append(next(i for i in INPUT_IDS if i not in ids))  # at least two ids
            for n, input_id in enumerate(ids):
                shell = input_updates[min(n, len(input_updates) - 1)].state
                finished = replace(shell, input_id=input_id, persisted_input={"text": "hello"})
                seed = _TERMINAL_SEEDS[n % len(_TERMINAL_SEEDS)]
                self.check("persist_input_state", runtime_id, StoredInputState(finished, seed))
            args = (runtime_id, ids)
        point_reads = [("load_input_state", (runtime_id, input_id)) for input_id in ids]
        if write == "atomic_apply":
            return args, [
                ("load_boundary_receipt", (runtime_id, receipt.run_id, receipt.sequence)),
                *point_reads,
                ("load_session_snapshot", (runtime_id,)),
                ("load_input_states", (runtime_id,)),
                ("load_boundary_receipts", (runtime_id,)),
                ("list_runtimes", ()),
            ]
        if write == "commit_machine_lifecycle":
            return args, [
                ("load_runtime_state", (runtime_id,)),
                *point_reads,
                ("load_input_states", (runtime_id,)),
                ("list_runtimes", ()),
            ]
        return args, [*point_reads, ("load_input_states", (runtime_id,))]

    def _race(self, calls: tuple[_Call, _Call], delay: int, runtime_id: LogicalRuntimeId) -> None:
        """Run `calls` from two tasks (the second `abs(delay)` points later; a
        negative delay starts the second call first); adopt the serial order
        that explains the store's answers and what it then holds of
        `runtime_id` and the OAuth snapshot, or fail."""
        for _, args, _kwargs in calls:
            self.note_sent(args)
        reads: list[tuple[str, tuple[Any, ...]]] = [
            ("load_auth_oauth_flow_snapshot", ()),
            ("load_session_snapshot", (runtime_id,)),
            ("load_input_states", (runtime_id,)),
            ("load_runtime_state", (runtime_id,)),
            ("load_ops_lifecycle", (runtime_id,)),
            ("load_boundary_receipts", (runtime_id,)),
            *(
                ("load_boundary_receipt", (runtime_id, arg.run_id, arg.sequence))
                for _, args, _kwargs in calls
                for arg in args
                if isinstance(arg, RunBoundaryReceipt)
            ),
            ("list_runtimes", ()),
        ]
        serial: list[tuple[ReferenceModel, list[_Outcome], list[_Outcome]]] = []
        for order in ((0, 1), (1, 0)):
            model = _copy_model(self.model)
            outcomes: list[_Outcome] = [_Outcome(), _Outcome()]
            for i in order:
                name, args, kwargs = calls[i]
                outcomes[i] = _expected(model, self.capabilities, name, args, kwargs)
            after = [_expected(model, self.capabilities, name, args) for name, args in reads]
            serial.append((model, outcomes, after))
        first, second = (0, 1) if delay >= 0 else (1, 0)
        got: list[_Outcome] = [_Outcome(), _Outcome()]

        async def one(store: RuntimeStore, i: int, wait: int) -> None:
            for _ in range(wait):
                await anyio.lowlevel.checkpoint()
            name, args, kwargs = calls[i]
            got[i] = await _store_outcome(getattr(store, name), *args, **kwargs)

        async def run(store: RuntimeStore) -> list[_Outcome]:
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(one, store, first, 0)
                nursery.start_soon(one, store, second, abs(delay))
            return [await _store_outcome(getattr(store, name), *args) for name, args in reads]

        held = self.bridge.call(run, self.bridge.resource)
        for model, outcomes, after in serial:
            answers = all(g.same_as(o) for g, o in zip(got, outcomes, strict=True))
            if answers and all(h.same_as(a) for h, a in zip(held, after, strict=True)):
                self.model = model
                return
        differs = next(
            (
                f"{name}{_args_repr(args)}: the store then {h!r}, the model (in either order)"
                f" {serial[0][2][i]!r} or {serial[1][2][i]!r}"
                for i, ((name, args), h) in enumerate(zip(reads, held, strict=True))
                if not (h.same_as(serial[0][2][i]) or h.same_as(serial[1][2][i]))
            ),
            None,
        )
        described = " and ".join(
            f"{name}{_args_repr(args, kwargs)}" for name, args, kwargs in calls
        )
        explained = "; ".join(
            f"{label}: {outcomes!r}"
            for label, (_, outcomes, _after) in zip(
                ("in the order given", "in the other order"), serial, strict=True
            )
        )
        raise AssertionError(
            f"{calls[0][0]} racing {calls[1][0]}: {described} from two tasks at once"
            f" (the second {abs(delay)} scheduling points after the first): the store"
            f" {got!r}, and neither order of the two explains its answers and what it"
            f" then held (the model {explained})"
            + (f"; state differs at {differs}" if differs else "")
        )

    # --- discovery and retention (SPEC §3b) ------------------------------------------

    @rule(runtime_id=pool_runtime_ids)
    def clear_session_snapshot(self, runtime_id: LogicalRuntimeId) -> None:
        self.check("clear_session_snapshot", runtime_id)

    @rule(runtime_id=pool_runtime_ids)
    def delete_ops_lifecycle(self, runtime_id: LogicalRuntimeId) -> None:
        self.check("delete_ops_lifecycle", runtime_id)

    @rule(runtime_id=pool_runtime_ids, input_ids=input_id_lists)
    def retire_input_payloads(self, runtime_id: LogicalRuntimeId, input_ids: list[InputId]) -> None:
        """Ids from the pool: some terminal, some not, some unknown; the first
        bad one in the list decides the error, and a refused call retired none."""
        self.check("retire_input_payloads", runtime_id, input_ids)

    @rule(
        runtime_id=pool_runtime_ids,
        finished=st.lists(_terminal_states, min_size=1, max_size=3),
        unfinished=st.lists(st.one_of(_simple_states, _disagreeing_states), max_size=1),
        input_ids=st.lists(input_ids, max_size=2),
    )
    def finish_then_retire(
        self,
        runtime_id: LogicalRuntimeId,
        finished: list[StoredInputState],
        unfinished: list[StoredInputState],
        input_ids: list[InputId],
    ) -> None:
        """`persist_input_state` of each `finished` state (terminal, with a
        payload) and then of each `unfinished` one (not terminal, or with a
        phase and an outcome that disagree, as a store may hold), then
        `retire_input_payloads` of all their ids followed by `input_ids`. The
        call succeeds only if every id names a terminal state; when refused,
        the finished states listed first keep their payloads."""
        for stored in finished + unfinished:
            self.check("persist_input_state", runtime_id, stored)
        ids = [stored.state.input_id for stored in finished + unfinished] + input_ids
        self.check("retire_input_payloads", runtime_id, ids)
        # Again: retiring what is retired already is allowed, and a no-op.
        self.check("retire_input_payloads", runtime_id, ids)

    @precondition(lambda self: self.capabilities.retention and "retire_many_ids" not in self._once)
    @rule(
        runtime_id=pool_runtime_ids,
        shell=_terminal_states,
        repeats=st.integers(_VARIABLE_LIMIT, _VARIABLE_LIMIT + 30),
        last=st.sampled_from(("finished", "unfinished", "unknown")),
    )
    def retire_many_ids(
        self, runtime_id: LogicalRuntimeId, shell: StoredInputState, repeats: int, last: str
    ) -> None:
        """`retire_input_payloads` of more ids than SQLite (before 3.32) binds
        in one statement, cheaply: `persist_input_state` of `shell` (finished,
        with a payload) and of a second finished state whose payload is gone
        already, then a list of `shell`'s id followed by the second one's
        `repeats` (999 to 1,029) times and by what decides the outcome: the
        id of a third state, finished (the call retires it) or not
        (`NotRetirable`), or 1,000 distinct ids the runtime does not hold
        (`NotFound`: the first of them); then `load_input_states`. A backend
        that refuses a long list, checks or retires only the first 999 ids,
        or commits them in chunks, shows it. At most once per test case."""
        self._once.add("retire_many_ids")
        others = [i for i in INPUT_IDS if i != shell.state.input_id]
        first, again, third = shell.state.input_id, others[0], others[1]
        retired = StoredInputState(
            replace(shell.state, input_id=again, persisted_input=None), shell.seed
        )
        self.check("persist_input_state", runtime_id, shell)
        self.check("persist_input_state", runtime_id, retired)
        tail: list[InputId]
        if last == "unknown":
            tail = list(_UNKNOWN_IDS)
            described = f"[InputId(UUID(int=2**96 + n)) for n in range({len(tail)})]"
        else:
            seed = shell.seed if last == "finished" else InputStateSeed(InputLifecycleState.QUEUED)
            self.check(
                "persist_input_state",
                runtime_id,
                StoredInputState(replace(shell.state, input_id=third), seed),
            )
            tail = [third]
            described = f"[{_readable(third)}]"
        ids = [first] + [again] * repeats + tail
        args = (runtime_id, ids)
        self.note_sent(args)
        # The model's answer to the list without its repeats (the same: the
        # first bad id decides, and retiring twice is retiring once), at a
        # thousandth of the cost.
        expected = _expected(
            self.model,
            self.capabilities,
            "retire_input_payloads",
            (runtime_id, list(dict.fromkeys(ids))),
        )
        shown = (
            f"({_readable(runtime_id)}, [{_readable(first)}]"
            f" + [{_readable(again)}] * {repeats} + {described})"
        )
        self._check_against(expected, "retire_input_payloads", args, {}, shown)
        self.check("load_input_states", runtime_id)

    @rule(runtime_id=pool_runtime_ids)
    def purge_runtime(self, runtime_id: LogicalRuntimeId) -> None:
        self.check("purge_runtime", runtime_id)

    @rule(runtime_id=pool_runtime_ids, transition=endings, receipt=receipts, state=stored_states)
    def end_purge_and_reuse(
        self,
        runtime_id: LogicalRuntimeId,
        transition: tuple[RuntimeState, RuntimeState],
        receipt: RunBoundaryReceipt,
        state: StoredInputState,
    ) -> None:
        """Commit `transition` (to `destroyed` half of the time, else to
        `stopped` or `retired`), `purge_runtime` (refused unless destroyed),
        then write the runtime again (`atomic_apply` with `receipt` and
        `state`) and read it back (`load_boundary_receipts`,
        `load_input_states`, `list_runtimes`): a purged runtime starts from
        scratch."""
        self.check("commit_machine_lifecycle", runtime_id, machine_transition(*transition), [])
        self.check("purge_runtime", runtime_id)
        self.check("atomic_apply", runtime_id, None, receipt, [state], None)
        self.check("load_boundary_receipts", runtime_id)
        self.check("load_input_states", runtime_id)
        self.check("list_runtimes")

    @rule(runtime_id=runtime_ids, snapshot=ops_snapshots)
    def persist_ops_lifecycle(
        self, runtime_id: LogicalRuntimeId, snapshot: PersistedOpsSnapshot
    ) -> None:
        self.check("persist_ops_lifecycle", runtime_id, snapshot)

    @rule(snapshot=st.binary(max_size=8))
    def persist_auth_oauth_flow_snapshot(self, snapshot: bytes) -> None:
        self.check("persist_auth_oauth_flow_snapshot", snapshot)

    @rule(update=updaters)
    def update_auth_oauth_flow_snapshot(self, update: Callable[[bytes | None], bytes]) -> None:
        self.check("update_auth_oauth_flow_snapshot", update)

    @initialize(
        update=st.sampled_from(
            (None, MarkMissing(), Increment(), ReturnBytearray(), ReturnAwaitable())
        )
    )
    def first_oauth_update(self, update: Callable[[bytes | None], bytes] | None) -> None:
        """In four test cases of five, the first step updates the OAuth
        snapshot while there is none (the only time an update sees none: no
        call removes it): with `MarkMissing()`, which tells `None` from
        `b""`; `Increment()`; or an updater whose result is not bytes (a
        `bytearray`, an awaitable), which must change nothing."""
        if update is not None:
            self.check("update_auth_oauth_flow_snapshot", update)

    @precondition(lambda self: self.capabilities.oauth_flow_snapshot)
    @rule(tasks=st.integers(min_value=2, max_value=40))
    def concurrent_increments(self, tasks: int) -> None:
        """`tasks` trio tasks increment the OAuth counter at once: no update is lost."""
        for _ in range(tasks):
            _model_outcome(self.model.update_auth_oauth_flow_snapshot, Increment())

        async def run(store: RuntimeStore) -> None:
            async with anyio.create_task_group() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(store.update_auth_oauth_flow_snapshot, Increment())

        self.bridge.call(run, self.bridge.resource)

    @rule(call=st.integers(0, _BAD_CALLS - 1), runtime_id=runtime_ids, receipt=receipts)
    def bad_argument(
        self, call: int, runtime_id: LogicalRuntimeId, receipt: RunBoundaryReceipt
    ) -> None:
        """Calls with a bad argument raise TypeError/ValueError, with a message
        that names the argument, and change nothing: the bad call number
        `call` and the next four (of the 25, in a ring), one after the other.

        (A bad call of an unsupported operation may raise `Unsupported` instead.)
        """
        calls = _bad_calls(runtime_id, receipt)
        chosen = [calls[(call + i) % len(calls)] for i in range(_BAD_CALLS_PER_STEP)]
        self.note_sent((runtime_id, receipt))  # a refused write must leave nothing there

        async def run(store: RuntimeStore) -> str | None:
            for name, call_args, error, argument in chosen:
                args, kwargs = _split(call_args)
                errors: tuple[type[Exception], ...] = (error,)
                if not self.capabilities.supports(name, kwargs):
                    errors = (error, Unsupported)
                outcome = await _store_outcome(getattr(store, name), *args, **kwargs)
                if not isinstance(outcome.error, errors):
                    return (
                        f"{name}{_args_repr(args, kwargs)}: expected {error.__name__},"
                        f" the store {outcome!r}"
                    )
                if isinstance(outcome.error, error) and argument not in str(outcome.error):
                    return (
                        f"{name}{_args_repr(args, kwargs)}: the store {outcome!r}, whose"
                        f" message does not name the argument {argument!r} (SPEC §4)"
                    )
            return None

        problem = self.bridge.call(run, self.bridge.resource)
        if problem is not None:
            raise AssertionError(problem)

    # --- reads ------------------------------------------------------------------------

    @rule(runtime_id=runtime_ids, input_id=input_ids)
    def load_input_state(self, runtime_id: LogicalRuntimeId, input_id: InputId) -> None:
        self.check("load_input_state", runtime_id, input_id)

    @rule(runtime_id=runtime_ids, run_id=run_ids, sequence=sequences)
    def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> None:
        self.check("load_boundary_receipt", runtime_id, run_id, sequence)

    # --- durable stores: restarts leave the model unchanged ----------------------------

    @precondition(lambda self: self.capabilities.durable)
    @rule()
    def reopen(self) -> None:
        """Close the store cleanly and open it again. A call on the closed
        handle must then raise `StoreClosed` (SPEC §5), not answer from a
        cache or write to a store another handle now has open."""
        closed = self.bridge.resource
        self.bridge.close()
        self.bridge = TrioBridge(self._open, self.backend)
        self._full_check_due = True
        self._check_authority_key(self.authority_key)
        for name, args in (
            ("load_session_snapshot", (RUNTIME_IDS[0],)),
            ("persist_input_state", (RUNTIME_IDS[0], _BULK_SHELL)),
        ):
            outcome = self.bridge.call(partial(_store_outcome, getattr(closed, name), *args))
            if not isinstance(outcome.error, StoreClosed):
                raise AssertionError(
                    f"{name}{_args_repr(args)} on a handle closed by reopen: the store"
                    f" {outcome!r}, expected StoreClosed"
                )

    @precondition(
        lambda self: self.capabilities.durable and isinstance(self.bridge.resource, _Checkpointable)
    )
    @rule()
    def checkpoint(self) -> None:
        """Snapshot the state now (stores with a `checkpoint()` method); the
        next check is a full one (a checkpoint may rebuild any read path)."""
        store = self.bridge.resource
        assert isinstance(store, _Checkpointable)
        self.bridge.call(store.checkpoint)
        self._full_check_due = True

    @precondition(
        lambda self: (
            self.capabilities.durable
            and isinstance(self.bridge.resource, _Checkpointable)
            and "checkpoint_during_writes" not in self._once
        )
    )
    @rule(
        runtime_id=pool_runtime_ids,
        shell=stored_states,
        receipt=receipts,
        delay=st.integers(0, 2),
    )
    def checkpoint_during_writes(
        self,
        runtime_id: LogicalRuntimeId,
        shell: StoredInputState,
        receipt: RunBoundaryReceipt,
        delay: int,
    ) -> None:
        """`checkpoint()` in one task, started `delay` scheduling points after
        another task's first write has returned (so that there is something
        to write), while that task goes on writing, one call after the
        other, until the checkpoint has returned and once more (at most 6
        writes in all: an input state, a receipt, a session snapshot, an ops
        snapshot, an OAuth update, each a value not held before). Then a
        crash (for a crash-safe store: a clean close could write out what a
        checkpoint lost) or a clean reopen, and a read of each thing written
        (then the invariant's full check): every acknowledged write must be
        there. A store whose checkpoint copies its tables, waits while the
        copy is written, then replaces its snapshot with it and truncates
        its log loses the writes made meanwhile (SPEC §6: a checkpoint drops
        only the log it covers). At most once per test case: with the
        restart, the step costs as much as a few others."""
        self._once.add("checkpoint_during_writes")
        made: list[str] = []
        problems: list[str] = []

        async def writer(store: RuntimeStore, first: anyio.Event, done: anyio.Event) -> None:
            for n in range(_CHECKPOINT_WRITES):
                last = done.is_set()
                name, args = _checkpoint_write(n, runtime_id, shell, receipt)
                self.note_sent(args)
                expected = _expected(self.model, self.capabilities, name, args)
                got = await _store_outcome(getattr(store, name), *args)
                first.set()
                made.append(f"{name}{_args_repr(args)}")
                if not got.same_as(expected):
                    problems.append(f"{made[-1]}: the store {got!r}, the model {expected!r}")
                    done.set()
                    return
                if last:
                    return

        async def run(store: RuntimeStore) -> _Outcome:
            assert isinstance(store, _Checkpointable)
            first, done = anyio.Event(), anyio.Event()
            async with anyio.create_task_group() as nursery:
                nursery.start_soon(writer, store, first, done)
                # After a write, so that the checkpoint has something to write.
                await first.wait()
                for _ in range(delay):
                    await anyio.lowlevel.checkpoint()
                outcome = await _store_outcome(store.checkpoint)
                done.set()
            return outcome

        checkpointed = self.bridge.call(run, self.bridge.resource)
        if problems or checkpointed.error is not None:
            self._failed = True
            raise AssertionError(
                f"checkpoint() while another task wrote: {problems[0]}"
                if problems
                else f"checkpoint() while another task wrote: {checkpointed!r}"
            )
        restart = self._restart()  # a durable store: a crash or a reopen
        # What the writes wrote (the invariant, due in full after a restart,
        # then reads the rest).
        reads: list[tuple[str, tuple[Any, ...]]] = [
            ("load_input_state", (runtime_id, shell.state.input_id)),
            ("load_boundary_receipts", (runtime_id,)),
            ("load_session_snapshot", (runtime_id,)),
            ("load_ops_lifecycle", (runtime_id,)),
            ("load_auth_oauth_flow_snapshot", ()),
        ]

        async def read_back(store: RuntimeStore) -> list[_Outcome]:
            return [await _store_outcome(getattr(store, name), *args) for name, args in reads]

        for (name, args), got in zip(
            reads, self.bridge.call(read_back, self.bridge.resource), strict=True
        ):
            expected = _expected(self.model, self.capabilities, name, args)
            if not got.same_as(expected):
                self._failed = True
                raise AssertionError(
                    f"checkpoint() while another task made {len(made)} writes, then"
                    f" {restart}: {name}{_args_repr(args)}: the store {got!r}, the model"
                    f" {expected!r} (the writes: {'; '.join(made)})"
                )

    @precondition(lambda self: self.capabilities.crash_safe)
    @rule()
    def crash_and_reopen(self) -> None:
        """Abandon the store without a clean close (its trio run is cancelled),
        then open it again: every acknowledged write must be there."""
        self.bridge.abandon()
        self.bridge = TrioBridge(self._open, self.backend)
        self._full_check_due = True
        self._check_authority_key(self.authority_key)

    @precondition(
        lambda self: (
            self.capabilities.durable
            and self.location is not None
            and "open_elsewhere" not in self._once
        )
    )
    @rule()
    def open_elsewhere(self) -> None:
        """Close the store; open it through a symbolic link to its location,
        through a path with `..` in it and through a path relative to the
        working directory (the same store: `auth_authority_key()` must be the
        same, since it names the *resolved* location, SPEC §3); then open a
        new store at another, empty location (a different key, and nothing in
        it: stores at two locations share nothing); then reopen the store. At
        most once per test case: its five opens cost as much as a dozen other
        steps."""
        self._once.add("open_elsewhere")
        location = self.location
        assert location is not None
        opener = type(self).open_store_at
        self.bridge.close()
        link = location.parent / (location.name + "-link")
        elsewhere = Path(tempfile.mkdtemp(prefix="meerkat-machine-elsewhere-"))
        try:
            link.symlink_to(location, target_is_directory=True)
            for how, path in (
                ("through a symbolic link to its location", link),
                ("through a path with '..'", location / ".." / location.name),
                ("through a relative path", Path(os.path.relpath(location))),
            ):
                linked = TrioBridge(partial(opener, path), self.backend)
                try:
                    key = linked.resource.auth_authority_key()
                finally:
                    linked.close()
                if key != self.authority_key:
                    raise AssertionError(
                        f"auth_authority_key(): {key!r} when opened {how} ({str(path)!r}),"
                        f" {self.authority_key!r} when opened at it"
                    )
            other = TrioBridge(partial(opener, elsewhere), self.backend)
            try:
                key = other.resource.auth_authority_key()
                held = other.call(_what_a_new_store_holds, other.resource, self.capabilities)
            finally:
                other.close()
            if key == self.authority_key:
                raise AssertionError(
                    f"auth_authority_key(): {key!r} for the store at another location too"
                )
            if held:
                raise AssertionError(f"a new store at another location holds {held}")
        finally:
            link.unlink(missing_ok=True)
            shutil.rmtree(elsewhere, ignore_errors=True)
            self.bridge = TrioBridge(self._open, self.backend)
            self._full_check_due = True
        self._check_authority_key(self.authority_key)

    def _check_authority_key(self, before: str | None, when: str = "after reopening") -> str | None:
        """`auth_authority_key()`: `None` unless durable; then a string, the
        same on every open of the store, and all the while it is open."""
        key = self.bridge.resource.auth_authority_key()
        if not self.capabilities.durable:
            if key is not None:
                raise AssertionError(
                    f"auth_authority_key(): a store that is not durable returned {key!r},"
                    " expected None"
                )
        elif not isinstance(key, str) or not key:
            raise AssertionError(
                f"auth_authority_key(): a durable store returned {key!r}, expected a string"
            )
        elif before is not None and key != before:
            raise AssertionError(f"auth_authority_key(): {key!r} {when}, {before!r} before")
        return key

    # --- the invariant ------------------------------------------------------------------

    @invariant()
    def whole_state_matches_model(self) -> None:
        """After every step, every read of a whole runtime (its input states,
        receipts, session, state, ops), the OAuth snapshot and
        `list_runtimes()`; the reads of one input state or one receipt at
        every key of the pools only in the runtimes sent to since the last
        check (`note_sent`), and in every runtime at every fourth check,
        after a restart and at `teardown`, when `auth_authority_key()` is
        also read (it must not change while the store is open). (Those
        point reads are most of the cost; a defect they show elsewhere is
        found by the next full check, in the same test case.)"""
        self._checks += 1
        full = self._full_check_due or self._checks % 4 == 0
        written, self._written = self._written, set()
        self._full_check_due = False
        failed, self._failed = self._failed, True  # until it has passed
        if full:
            self._check_authority_key(self.authority_key, "while the store was open")
        self.bridge.call(
            partial(
                assert_store_matches_model,
                runtime_ids=self.seen_runtimes,
                receipt_keys=self.seen_receipts,
                # Alternate, and so that every other full check (every
                # fourth) passes arguments by keyword.
                by_name=(self._checks + self._checks // 4) % 2 == 0,
                point_reads=None if full else written,
            ),
            self.bridge.resource,
            self.model,
            self.capabilities,
        )
        self._failed = failed


def _args_repr(args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> str:
    """A call's arguments for a message: ids of the machine's pools by their
    names (`RUNTIME_IDS[0]`, `INPUT_IDS[2]`, ... exported by
    `meerkat_actor.testing`), so a failure reads as the program that made it."""
    parts = [_readable(a) for a in args]
    parts += [f"{k}={_readable(v)}" for k, v in (kwargs or {}).items()]
    return "(" + ", ".join(parts) + ")"


def _readable(value: object) -> str:
    name = _POOL_NAMES.get((type(value), value)) if _hashable(value) else None
    if name is not None:
        return name
    if isinstance(value, list):
        return "[" + ", ".join(_readable(v) for v in value) + "]"
    return repr(value)


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


_POOL_NAMES: dict[tuple[type, object], str] = {
    (type(value), value): f"{pool}[{index}]"
    for pool, values in (
        ("RUNTIME_IDS", RUNTIME_IDS),
        ("NEAR_RUNTIME_IDS", NEAR_RUNTIME_IDS),
        ("INPUT_IDS", INPUT_IDS),
        ("RUN_IDS", RUN_IDS),
        ("SESSION_IDS", SESSION_IDS),
    )
    for index, value in enumerate(values)
}
