"""The stateful machine: any `RuntimeStore` against the reference model (SPEC §8).

Rule 1: every operation runs on both the store and the model, and their
outcomes must agree: equal results, or exceptions of the same class (store
errors, the updater's own exception, `TypeError`). A disagreement fails with a
message naming the operation, the store's answer and the model's.

Rule 2: after every step the whole observable state must agree (the
invariant): for every runtime, input id and receipt key the machine can
reach, each load answers the same on both sides, as does the OAuth snapshot.

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

The store runs in a trio run in a helper thread (`TrioBridge`); the rules
are synchronous, as Hypothesis requires.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import trio
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from .._errors import ReceiptConflict, SessionKeyMismatch, Unsupported
from .._ids import InputId, LogicalRuntimeId, RunId, SessionId
from .._protocol import RuntimeStore
from .._session_codec import SessionCodec
from .._types import (
    InputLifecycleState,
    InputState,
    InputStateSeed,
    PersistedOpsSnapshot,
    RunApplyBoundary,
    RunBoundaryReceipt,
    RuntimeState,
    SessionDelta,
    StoredInputState,
    machine_transition,
)
from . import _strategies as mst
from ._bridge import TrioBridge
from ._model import ReferenceModel

__all__ = [
    "FULL_CAPABILITIES",
    "INPUT_IDS",
    "RUNTIME_IDS",
    "RUN_IDS",
    "SEQUENCES",
    "SESSION_IDS",
    "Append",
    "Capabilities",
    "Increment",
    "OpenStore",
    "OpenStoreAt",
    "RaiseError",
    "ReturnNotBytes",
    "RuntimeStoreMachine",
    "UpdaterFailed",
    "assert_store_matches_model",
]

OpenStore = Callable[[], AbstractAsyncContextManager[RuntimeStore]]
"""Opens a store when called; the async context manager closes it."""
OpenStoreAt = Callable[[Path], AbstractAsyncContextManager[RuntimeStore]]
"""Opens the durable store kept at a location (a directory)."""

# --- pools -------------------------------------------------------------------------

RUNTIME_IDS = (LogicalRuntimeId("rt-a"), LogicalRuntimeId("rt-b"), LogicalRuntimeId("rt-c"))
# Spread over the UUID order (first, middle, last) and not in creation order.
INPUT_IDS = tuple(InputId(uuid.UUID(int=n)) for n in (2**127 + 7, 1, 2**128 - 1, 2**64, 2**100 + 3))
RUN_IDS = tuple(RunId(uuid.UUID(int=n)) for n in (2**126 + 1, 2, 2**128 - 2))
SESSION_IDS = tuple(SessionId(uuid.UUID(int=n)) for n in (2**125 + 11, 3))
SEQUENCES = (0, 1, 2**63 - 1, 2**63, 2**64 - 1)
T = TypeVar("T")
_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def _session_json(session_id: SessionId) -> bytes:
    return json.dumps({"id": str(session_id), "messages": []}).encode()


_UNREADABLE_SNAPSHOTS = (b"", b"not json", b"[]", b'{"id": 5}', b'{"id": "not-a-uuid"}')


def _mostly(pool: tuple[T, ...], fresh: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Three draws in four from the pool (collisions), one fresh id."""
    from_pool = st.sampled_from(pool)
    return st.one_of(from_pool, from_pool, from_pool, fresh)


runtime_ids = _mostly(RUNTIME_IDS, mst.runtime_ids())
input_ids = _mostly(INPUT_IDS, mst.input_ids())
run_ids = _mostly(RUN_IDS, mst.run_ids())
sequences = st.sampled_from(SEQUENCES)
session_ids = st.sampled_from(SESSION_IDS)
# Built values, not lambdas, so a failing example prints as runnable code.
readable_deltas = st.sampled_from([SessionDelta(_session_json(s)) for s in SESSION_IDS])
deltas = st.one_of(
    readable_deltas, st.sampled_from([SessionDelta(b) for b in _UNREADABLE_SNAPSHOTS])
)

# Small stored states: the pool id plus a phase, so shrunk examples stay short;
# the full strategies add the rarer fields some of the time.
_simple_states = st.builds(
    StoredInputState,
    state=st.builds(
        InputState, input_id=input_ids, created_at=st.just(_EPOCH), updated_at=st.just(_EPOCH)
    ),
    seed=st.builds(
        InputStateSeed, phase=st.sampled_from(InputLifecycleState), attempt_count=st.integers(0, 3)
    ),
)
stored_states = st.one_of(_simple_states, mst.stored_input_states(input_id=input_ids))
state_lists = st.lists(stored_states, max_size=4)
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


updaters = st.one_of(
    st.just(Increment()),
    st.binary(min_size=1, max_size=3).map(Append),
    st.just(RaiseError()),
    st.just(ReturnNotBytes()),
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
            `reopen` rule (and `checkpoint` for a store with a `checkpoint()`
            method), and requires `auth_authority_key()` to return the same
            string on every open; a store that is not durable must return
            `None` there.
        crash_safe: every acknowledged write survives the store being
            abandoned without a clean close (its trio run cancelled, nothing
            flushed). Adds the `crash_and_reopen` rule. Implies `durable`.
        ops_lifecycle: `persist_ops_lifecycle` and `load_ops_lifecycle`.
        oauth_flow_snapshot: `persist_auth_oauth_flow_snapshot`,
            `load_auth_oauth_flow_snapshot` and
            `update_auth_oauth_flow_snapshot`.
    """

    durable: bool = False
    crash_safe: bool = False
    ops_lifecycle: bool = True
    oauth_flow_snapshot: bool = True

    def __post_init__(self) -> None:
        for name in ("durable", "crash_safe", "ops_lifecycle", "oauth_flow_snapshot"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"Capabilities.{name} must be a bool")
        if self.crash_safe and not self.durable:
            raise ValueError("Capabilities.crash_safe implies durable=True")

    def supports(self, operation: str) -> bool:
        """Whether the backend declares `operation` (a `RuntimeStore` method name)."""
        family = _FAMILIES.get(operation)
        return family is None or bool(getattr(self, family))


FULL_CAPABILITIES = Capabilities()
"""Every operation; not durable (an in-memory store)."""

_FAMILIES = {
    "persist_ops_lifecycle": "ops_lifecycle",
    "load_ops_lifecycle": "ops_lifecycle",
    "persist_auth_oauth_flow_snapshot": "oauth_flow_snapshot",
    "load_auth_oauth_flow_snapshot": "oauth_flow_snapshot",
    "update_auth_oauth_flow_snapshot": "oauth_flow_snapshot",
}
"""The operations a backend may declare unsupported, by capability flag."""


# --- outcomes -------------------------------------------------------------------------

_DISTINCT_ERRORS: tuple[type[Exception], ...] = (ReceiptConflict, SessionKeyMismatch)
"""Error classes the model raises for a reason of their own: a store may raise
a refinement of the class the model raised, but not one of these in its place."""


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
        return not any(
            isinstance(self.error, other) and other is not wanted and issubclass(other, wanted)
            for other in _DISTINCT_ERRORS
        )

    def _same_value(self, expected: _Outcome) -> bool:
        # The type too: a memoryview or bytearray equals bytes, a tuple is not a list.
        return type(self.value) is type(expected.value) and bool(self.value == expected.value)

    def __repr__(self) -> str:
        if self.error is not None:
            return f"raised {type(self.error).__name__}: {self.error}"
        return f"returned {self.value!r}"


def _model_outcome(fn: Callable[..., Any], *args: Any) -> _Outcome:
    try:
        return _Outcome(fn(*args))
    except Exception as exc:
        return _Outcome(error=exc)


def _expected(
    model: ReferenceModel, capabilities: Capabilities, name: str, args: tuple[Any, ...]
) -> _Outcome:
    """What the store must answer to `name(*args)`; runs it on the model
    unless the backend declared the operation unsupported."""
    if not capabilities.supports(name):
        return _Outcome(error=Unsupported(f"{name} is declared unsupported"))
    return _model_outcome(getattr(model, name), *args)


async def _store_outcome(fn: Callable[..., Any], *args: Any) -> _Outcome:
    try:
        return _Outcome(await fn(*args))
    except Exception as exc:
        return _Outcome(error=exc)


def _observations(
    model: ReferenceModel,
    runtime_ids: Iterable[LogicalRuntimeId] = (),
    receipt_keys: Iterable[tuple[LogicalRuntimeId, RunId, int]] = (),
) -> list[tuple[str, tuple[Any, ...]]]:
    """Every read that together shows the whole state: for the pools, for
    every runtime and receipt key the model holds, and for those given (the
    ones sent to the store, which a failed write must not have left behind)."""
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
        keys = {(run_id, sequence) for run_id in RUN_IDS for sequence in SEQUENCES}
        keys |= sent.get(runtime_id, set())
        if held is not None:
            keys |= held.receipts.keys()
        reads += [
            ("load_boundary_receipt", (runtime_id, run_id, sequence))
            for run_id, sequence in sorted(keys, key=lambda k: (k[0].value, k[1]))
        ]
    return reads


async def assert_store_matches_model(
    store: RuntimeStore,
    model: ReferenceModel,
    capabilities: Capabilities = FULL_CAPABILITIES,
    *,
    runtime_ids: Iterable[LogicalRuntimeId] = (),
    receipt_keys: Iterable[tuple[LogicalRuntimeId, RunId, int]] = (),
) -> None:
    """Raise `AssertionError` unless the whole observable state of `store`
    equals the model's: every read answers alike, for the machine's id pools,
    everything the model holds, and the extra `runtime_ids` and
    `(runtime_id, run_id, sequence)` `receipt_keys` given (reads of a family
    declared unsupported in `capabilities` must raise `Unsupported`).

    The machine's invariant; tests of crash recovery use it too, with a model
    that holds what was acknowledged.
    """
    for name, args in _observations(model, runtime_ids, receipt_keys):
        got = await _store_outcome(getattr(store, name), *args)
        expected = _expected(model, capabilities, name, args)
        if not got.same_as(expected):
            raise AssertionError(
                f"state differs at {name}{_args_repr(args)}:"
                f" the store {got!r}, the model {expected!r}"
            )


@runtime_checkable
class _Checkpointable(Protocol):
    """A store with an explicit checkpoint (not part of `RuntimeStore`)."""

    async def checkpoint(self) -> None: ...


def _bad_calls(
    runtime_id: LogicalRuntimeId, receipt: RunBoundaryReceipt
) -> Sequence[tuple[str, tuple[Any, ...], type[Exception]]]:
    """Calls every backend must refuse before doing anything."""
    state = StoredInputState.new_accepted(INPUT_IDS[0], now=_EPOCH)
    return (
        ("persist_input_state", (str(runtime_id), state), TypeError),
        ("persist_input_state", (runtime_id, {"input_id": str(INPUT_IDS[0])}), TypeError),
        ("load_boundary_receipt", (runtime_id, receipt.run_id, -1), ValueError),
        ("load_boundary_receipt", (runtime_id, receipt.run_id, 2**64), ValueError),
        ("persist_auth_oauth_flow_snapshot", ("text",), TypeError),
        ("commit_session_snapshot", (runtime_id, _session_json(SESSION_IDS[0])), TypeError),
        ("atomic_apply", (runtime_id, None, receipt, [{"not": "a state"}]), TypeError),
        ("update_auth_oauth_flow_snapshot", (42,), TypeError),
        ("commit_machine_lifecycle", (runtime_id, RuntimeState.IDLE, [state]), TypeError),
        ("load_input_states", (str(runtime_id),), TypeError),
        ("load_input_state", (runtime_id, receipt.run_id), TypeError),
        ("load_boundary_receipt", (runtime_id, str(receipt.run_id), 0), TypeError),
        ("load_session_snapshot", (str(runtime_id),), TypeError),
        ("load_runtime_state", (None,), TypeError),
        ("load_ops_lifecycle", (str(runtime_id),), TypeError),
        ("persist_ops_lifecycle", (runtime_id, {"epoch_id": "e"}), TypeError),
    )


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
        try:
            self.bridge: TrioBridge[RuntimeStore] = TrioBridge(self._open)
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
        """Close the store and remove the location. Also called when opening
        the store failed (then there is no store to close): an override that
        cleans up more must call this one and cope with that."""
        try:
            bridge = getattr(self, "bridge", None)
            if bridge is not None:
                bridge.close()
        finally:
            self._remove_location()

    def _remove_location(self) -> None:
        if self.location is not None:
            shutil.rmtree(self.location, ignore_errors=True)
            self.location = None

    # --- plumbing ------------------------------------------------------------------

    def _same(self, name: str, *args: Any) -> None:
        """Run `name(*args)` on both sides; their outcomes must agree."""
        self._note_sent(args)
        expected = _expected(self.model, self.capabilities, name, args)
        store = self.bridge.resource
        actual = self.bridge.call(_store_outcome, getattr(store, name), *args)
        if not actual.same_as(expected):
            raise AssertionError(
                f"{name}{_args_repr(args)}: the store {actual!r}, the model {expected!r}"
            )

    def _note_sent(self, args: tuple[Any, ...]) -> None:
        """Remember the runtime id and receipt key of a call, so the invariant
        also reads them (a failed write must leave nothing behind there)."""
        runtime_id = next((a for a in args if isinstance(a, LogicalRuntimeId)), None)
        if runtime_id is None:
            return
        self.seen_runtimes[runtime_id] = None
        for arg in args:
            if isinstance(arg, RunBoundaryReceipt):
                self.seen_receipts[(runtime_id, arg.run_id, arg.sequence)] = None

    # --- writes --------------------------------------------------------------------

    @rule(runtime_id=runtime_ids, delta=deltas)
    def commit_session_snapshot(self, runtime_id: LogicalRuntimeId, delta: SessionDelta) -> None:
        self._same("commit_session_snapshot", runtime_id, delta)

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
        self._same("atomic_apply", runtime_id, delta, receipt, input_updates, session_store_key)
        return runtime_id, receipt

    @rule(
        earlier=applied,
        message_count=st.integers(0, 3),
        delta=st.one_of(st.none(), readable_deltas),
        input_updates=state_lists,
    )
    def atomic_apply_same_key(
        self,
        earlier: tuple[LogicalRuntimeId, RunBoundaryReceipt],
        message_count: int,
        delta: SessionDelta | None,
        input_updates: list[StoredInputState],
    ) -> None:
        """`atomic_apply` again with an earlier call's receipt key (runtime,
        run id, sequence) and a receipt that may differ in its body: if the
        earlier call landed, this one must fail whole (`ReceiptConflict`)."""
        runtime_id, receipt = earlier
        again = replace(receipt, message_count=message_count)
        self._same("atomic_apply", runtime_id, delta, again, input_updates, None)

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
        first = _expected(self.model, self.capabilities, "atomic_apply", args)
        later = _expected(self.model, self.capabilities, "atomic_apply", args)
        outcomes: list[_Outcome] = []

        async def one(store: RuntimeStore) -> None:
            outcomes.append(await _store_outcome(store.atomic_apply, *args))

        async def run(store: RuntimeStore) -> None:
            async with trio.open_nursery() as nursery:
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
            return StoredInputState(shell.state, InputStateSeed(phase=phase, attempt_count=n))

        last = version(2 * _CANCEL_POINTS + 1)
        _model_outcome(self.model.persist_input_state, runtime_id, last)

        async def run(store: RuntimeStore) -> str | None:
            for points in range(_CANCEL_POINTS + 1):
                first, second = version(2 * points), version(2 * points + 1)
                scope = trio.CancelScope()

                async def caller(
                    scope: trio.CancelScope, first: StoredInputState, second: StoredInputState
                ) -> None:
                    with scope:
                        await store.persist_input_state(runtime_id, first)
                    await store.persist_input_state(runtime_id, second)

                async def canceller(scope: trio.CancelScope, points: int) -> None:
                    for _ in range(points):
                        await trio.lowlevel.checkpoint()
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(caller, scope, first, second)
                    nursery.start_soon(canceller, scope, points)
                got = await store.load_input_state(runtime_id, input_id)
                if got != second:
                    return (
                        f"cancelled after {points} scheduling points, then persisted"
                        f" attempt_count={second.seed.attempt_count}: the store then"
                        f" returned {got!r}"
                    )
            return None

        problem = self.bridge.call(run, self.bridge.resource)
        if problem is not None:
            raise AssertionError(
                f"persist_input_state({runtime_id!r}, ...) cancelled, then again: {problem}"
            )

    @rule(runtime_id=runtime_ids, state=stored_states)
    def persist_input_state(self, runtime_id: LogicalRuntimeId, state: StoredInputState) -> None:
        self._same("persist_input_state", runtime_id, state)

    @rule(runtime_id=runtime_ids, transition=mst.lifecycle_transitions(), input_states=state_lists)
    def commit_machine_lifecycle(
        self,
        runtime_id: LogicalRuntimeId,
        transition: tuple[RuntimeState, RuntimeState],
        input_states: list[StoredInputState],
    ) -> None:
        commit = machine_transition(*transition)
        self._same("commit_machine_lifecycle", runtime_id, commit, input_states)

    @rule(runtime_id=runtime_ids, snapshot=ops_snapshots)
    def persist_ops_lifecycle(
        self, runtime_id: LogicalRuntimeId, snapshot: PersistedOpsSnapshot
    ) -> None:
        self._same("persist_ops_lifecycle", runtime_id, snapshot)

    @rule(snapshot=st.binary(max_size=8))
    def persist_auth_oauth_flow_snapshot(self, snapshot: bytes) -> None:
        self._same("persist_auth_oauth_flow_snapshot", snapshot)

    @rule(update=updaters)
    def update_auth_oauth_flow_snapshot(self, update: Callable[[bytes | None], bytes]) -> None:
        self._same("update_auth_oauth_flow_snapshot", update)

    @precondition(lambda self: self.capabilities.oauth_flow_snapshot)
    @rule(tasks=st.integers(min_value=2, max_value=40))
    def concurrent_increments(self, tasks: int) -> None:
        """`tasks` trio tasks increment the OAuth counter at once: no update is lost."""
        for _ in range(tasks):
            _model_outcome(self.model.update_auth_oauth_flow_snapshot, Increment())

        async def run(store: RuntimeStore) -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(store.update_auth_oauth_flow_snapshot, Increment())

        self.bridge.call(run, self.bridge.resource)

    @rule(call=st.integers(0, _BAD_CALLS - 1), runtime_id=runtime_ids, receipt=receipts)
    def bad_argument(
        self, call: int, runtime_id: LogicalRuntimeId, receipt: RunBoundaryReceipt
    ) -> None:
        """A call with a bad argument raises TypeError/ValueError and changes nothing.

        (A bad call of an unsupported operation may raise `Unsupported` instead.)
        """
        name, args, error = _bad_calls(runtime_id, receipt)[call]
        errors: tuple[type[Exception], ...] = (error,)
        if not self.capabilities.supports(name):
            errors = (error, Unsupported)
        store = self.bridge.resource
        outcome = self.bridge.call(_store_outcome, getattr(store, name), *args)
        if not isinstance(outcome.error, errors):
            raise AssertionError(
                f"{name}{_args_repr(args)}: expected {error.__name__}, the store {outcome!r}"
            )

    # --- reads ------------------------------------------------------------------------

    @rule(runtime_id=runtime_ids, input_id=input_ids)
    def load_input_state(self, runtime_id: LogicalRuntimeId, input_id: InputId) -> None:
        self._same("load_input_state", runtime_id, input_id)

    @rule(runtime_id=runtime_ids, run_id=run_ids, sequence=sequences)
    def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> None:
        self._same("load_boundary_receipt", runtime_id, run_id, sequence)

    # --- durable stores: restarts leave the model unchanged ----------------------------

    @precondition(lambda self: self.capabilities.durable)
    @rule()
    def reopen(self) -> None:
        """Close the store cleanly and open it again."""
        self.bridge.close()
        self.bridge = TrioBridge(self._open)
        self._check_authority_key(self.authority_key)

    @precondition(
        lambda self: self.capabilities.durable and isinstance(self.bridge.resource, _Checkpointable)
    )
    @rule()
    def checkpoint(self) -> None:
        """Snapshot the state now (stores with a `checkpoint()` method)."""
        store = self.bridge.resource
        assert isinstance(store, _Checkpointable)
        self.bridge.call(store.checkpoint)

    @precondition(lambda self: self.capabilities.crash_safe)
    @rule()
    def crash_and_reopen(self) -> None:
        """Abandon the store without a clean close (its trio run is cancelled),
        then open it again: every acknowledged write must be there."""
        self.bridge.abandon()
        self.bridge = TrioBridge(self._open)
        self._check_authority_key(self.authority_key)

    def _check_authority_key(self, before: str | None) -> str | None:
        """`auth_authority_key()`: `None` unless durable; then a string, the
        same on every open of the store."""
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
            raise AssertionError(
                f"auth_authority_key(): {key!r} after reopening, {before!r} before"
            )
        return key

    # --- the invariant ------------------------------------------------------------------

    @invariant()
    def whole_state_matches_model(self) -> None:
        self.bridge.call(
            partial(
                assert_store_matches_model,
                runtime_ids=self.seen_runtimes,
                receipt_keys=self.seen_receipts,
            ),
            self.bridge.resource,
            self.model,
            self.capabilities,
        )


def _args_repr(args: tuple[Any, ...]) -> str:
    return "(" + ", ".join(repr(a) for a in args) + ")"
