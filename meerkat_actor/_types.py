"""The data model (SPEC §2): enums, values and the lifecycle commit token.

Rule 1: every value is immutable (a frozen, slotted dataclass; containers are
tuples or frozen JSON documents), hashable and compared by value.

Rule 2: constructors validate. A wrong type raises `TypeError`, a wrong value
`ValueError`, each naming the field; an invalid value cannot exist. Aware
datetimes are normalised to UTC.

Rule 3: the lifecycle transition tables are data: `LIFECYCLE_TRANSITIONS`
for runtimes (`machine_transition()` is the only way to obtain a
`MachineLifecycleCommit`) and `INPUT_LIFECYCLE_TRANSITIONS` for inputs
(`StoredInputState.transition()` moves an input along it).

Rule 4: a seed's phase and terminal outcome agree: a terminal phase has the
outcome of its own kind, any other phase none. Callers' values are checked
by the constructor; values a store decodes from its own bytes are built by
`_stored_seed`, which checks every field but not that agreement, because
Meerkat's Rust runtime and older versions of this package could write a
seed without it, and a store must read back whatever it holds
(docs/semantics.md, "Inputs: phases and outcomes").
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeVar, final

from ._check import (
    U32_MAX,
    check_bytes,
    check_count,
    check_instance,
    check_optional_instance,
    check_optional_str,
    check_str,
    check_tuple,
    check_u64,
    check_utc,
)
from ._errors import InvalidTransition
from ._frozen import freeze
from ._ids import InputId, RunId
from ._util import NoPublicConstructor

__all__ = [
    "INPUT_LIFECYCLE_TRANSITIONS",
    "LIFECYCLE_TRANSITIONS",
    "UNCHECKED",
    "InputAbandonReason",
    "InputDurability",
    "InputLifecycleState",
    "InputState",
    "InputStateHistoryEntry",
    "InputStateSeed",
    "InputTerminalOutcome",
    "MachineLifecycleCommit",
    "PersistedOpsSnapshot",
    "RunApplyBoundary",
    "RunBoundaryReceipt",
    "RuntimeState",
    "SessionDelta",
    "StoredInputState",
    "Unchecked",
    "machine_transition",
]

T = TypeVar("T")


def _set(obj: object, name: str, value: object) -> None:
    # Frozen dataclasses normalise fields in __post_init__ through this.
    object.__setattr__(obj, name, value)


# --- enums -----------------------------------------------------------------


class _WireEnum(enum.Enum):
    """An enum whose values are wire strings and whose repr is runnable
    (`RuntimeState.IDLE`), so a failing example prints as code."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


@final
class RunApplyBoundary(_WireEnum):
    """Where a run primitive was applied."""

    IMMEDIATE = "immediate"
    RUN_START = "run_start"
    RUN_CHECKPOINT = "run_checkpoint"


@final
class RuntimeState(_WireEnum):
    """The lifecycle state of a runtime."""

    INITIALIZING = "initializing"
    IDLE = "idle"
    ATTACHED = "attached"
    RUNNING = "running"
    RETIRED = "retired"
    STOPPED = "stopped"
    DESTROYED = "destroyed"


@final
class InputLifecycleState(_WireEnum):
    """The lifecycle phase of an input; the last four are terminal."""

    ACCEPTED = "accepted"
    QUEUED = "queued"
    STAGED = "staged"
    APPLIED = "applied"
    APPLIED_PENDING_CONSUMPTION = "applied_pending_consumption"
    CONSUMED = "consumed"
    SUPERSEDED = "superseded"
    COALESCED = "coalesced"
    ABANDONED = "abandoned"

    @property
    def is_terminal(self) -> bool:
        """True for consumed, superseded, coalesced and abandoned."""
        return self in _TERMINAL_PHASES


_TERMINAL_PHASES = frozenset(
    {
        InputLifecycleState.CONSUMED,
        InputLifecycleState.SUPERSEDED,
        InputLifecycleState.COALESCED,
        InputLifecycleState.ABANDONED,
    }
)


@final
class InputDurability(_WireEnum):
    """How an input must be kept."""

    DURABLE = "durable"
    EPHEMERAL = "ephemeral"
    DERIVED = "derived"


# --- lifecycle transitions ---------------------------------------------------

#: The legal runtime lifecycle transitions, `from -> {to, ...}` (SPEC §2).
#: Destroyed is final; a state never transitions to itself.
LIFECYCLE_TRANSITIONS: Mapping[RuntimeState, frozenset[RuntimeState]] = MappingProxyType(
    {
        RuntimeState.INITIALIZING: frozenset(
            {RuntimeState.IDLE, RuntimeState.STOPPED, RuntimeState.DESTROYED}
        ),
        RuntimeState.IDLE: frozenset(
            {
                RuntimeState.ATTACHED,
                RuntimeState.RUNNING,
                RuntimeState.RETIRED,
                RuntimeState.STOPPED,
                RuntimeState.DESTROYED,
            }
        ),
        RuntimeState.ATTACHED: frozenset(
            {
                RuntimeState.RUNNING,
                RuntimeState.IDLE,
                RuntimeState.RETIRED,
                RuntimeState.STOPPED,
                RuntimeState.DESTROYED,
            }
        ),
        RuntimeState.RUNNING: frozenset(
            {
                RuntimeState.IDLE,
                RuntimeState.ATTACHED,
                RuntimeState.RETIRED,
                RuntimeState.STOPPED,
                RuntimeState.DESTROYED,
            }
        ),
        RuntimeState.RETIRED: frozenset(
            {RuntimeState.RUNNING, RuntimeState.STOPPED, RuntimeState.DESTROYED}
        ),
        RuntimeState.STOPPED: frozenset({RuntimeState.DESTROYED}),
        RuntimeState.DESTROYED: frozenset(),
    }
)


_I = InputLifecycleState

#: The legal input lifecycle transitions, `from -> {to, ...}`: Meerkat's
#: input lifecycle machine (queue an accepted input, stage it for a run,
#: roll a staged one back, mark it applied, then applied pending
#: consumption, consume it; supersede or coalesce a queued one; consume an
#: accepted one at once; abandon any that is not terminal). Terminal phases
#: have no transitions; a phase never transitions to itself.
INPUT_LIFECYCLE_TRANSITIONS: Mapping[InputLifecycleState, frozenset[InputLifecycleState]] = (
    MappingProxyType(
        {
            _I.ACCEPTED: frozenset({_I.QUEUED, _I.CONSUMED, _I.ABANDONED}),
            _I.QUEUED: frozenset({_I.STAGED, _I.SUPERSEDED, _I.COALESCED, _I.ABANDONED}),
            _I.STAGED: frozenset({_I.QUEUED, _I.APPLIED, _I.ABANDONED}),
            _I.APPLIED: frozenset({_I.APPLIED_PENDING_CONSUMPTION, _I.ABANDONED}),
            _I.APPLIED_PENDING_CONSUMPTION: frozenset({_I.CONSUMED, _I.ABANDONED}),
            _I.CONSUMED: frozenset(),
            _I.SUPERSEDED: frozenset(),
            _I.COALESCED: frozenset(),
            _I.ABANDONED: frozenset(),
        }
    )
)

#: The outcome kind each terminal phase holds (a phase not listed holds none).
_OUTCOME_KIND: Mapping[InputLifecycleState, str] = MappingProxyType(
    {
        _I.CONSUMED: "consumed",
        _I.SUPERSEDED: "superseded",
        _I.COALESCED: "coalesced",
        _I.ABANDONED: "abandoned",
    }
)


def _phase_outcome_problem(
    phase: InputLifecycleState, outcome: InputTerminalOutcome | None, name: str
) -> str | None:
    """What is wrong with holding `outcome` (the field `name`) in `phase`, or None."""
    wanted = _OUTCOME_KIND.get(phase)
    if wanted is None:
        if outcome is None:
            return None
        return (
            f"{name} must be None when phase is {phase.value!r} (not terminal),"
            f" got a {outcome.kind!r} outcome"
        )
    if outcome is None:
        return (
            f"{name} is required when phase is {phase.value!r} (terminal):"
            f" an outcome of kind {wanted!r}"
        )
    if outcome.kind != wanted:
        return (
            f"{name} of kind {outcome.kind!r} does not match phase {phase.value!r}:"
            f" it must be of kind {wanted!r}"
        )
    return None


@final
class MachineLifecycleCommit(metaclass=NoPublicConstructor):
    """A token carrying the runtime state chosen by a legal lifecycle transition.

    It has no public constructor: obtain one from `machine_transition()`, so
    a caller cannot commit an arbitrary lifecycle state.
    """

    __slots__ = ("_runtime_state",)
    __construct_hint__ = "use machine_transition(from_state, to_state)"
    _runtime_state: RuntimeState

    def __init__(self, runtime_state: RuntimeState) -> None:
        self._runtime_state = runtime_state

    @property
    def runtime_state(self) -> RuntimeState:
        """The runtime state this commit writes."""
        return self._runtime_state

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MachineLifecycleCommit):
            return NotImplemented
        return self._runtime_state is other._runtime_state

    def __hash__(self) -> int:
        return hash((MachineLifecycleCommit, self._runtime_state))

    def __repr__(self) -> str:
        return f"<MachineLifecycleCommit runtime_state={self._runtime_state.value}>"

    def __setattr__(self, name: str, value: object) -> None:
        if hasattr(self, "_runtime_state"):
            raise AttributeError("MachineLifecycleCommit is immutable")
        object.__setattr__(self, name, value)

    def __reduce__(self) -> tuple[object, ...]:
        return (_commit_for, (self._runtime_state,))


@final
class Unchecked(enum.Enum):
    """The type of `UNCHECKED`, the default of `commit_machine_lifecycle`'s
    `expected=`: the stored runtime state is not compared (`None` cannot
    mean that; it means "no runtime state yet")."""

    UNCHECKED = "unchecked"

    def __repr__(self) -> str:
        return "UNCHECKED"


UNCHECKED: Final = Unchecked.UNCHECKED


def _commit_for(runtime_state: RuntimeState) -> MachineLifecycleCommit:
    """Internal: rebuild a commit for a state already known to be reachable."""
    check_instance(runtime_state, RuntimeState, "runtime_state")
    return MachineLifecycleCommit._create(runtime_state)


def machine_transition(from_state: RuntimeState, to_state: RuntimeState) -> MachineLifecycleCommit:
    """Return the commit token for the lifecycle transition `from_state -> to_state`.

    Raises:
        TypeError: either argument is not a `RuntimeState`.
        InvalidTransition: the transition is not in `LIFECYCLE_TRANSITIONS`.
    """
    check_instance(from_state, RuntimeState, "from_state")
    check_instance(to_state, RuntimeState, "to_state")
    if to_state not in LIFECYCLE_TRANSITIONS[from_state]:
        allowed = ", ".join(sorted(s.value for s in LIFECYCLE_TRANSITIONS[from_state])) or "none"
        raise InvalidTransition(
            f"no lifecycle transition {from_state.value} -> {to_state.value}"
            f" (from {from_state.value}: {allowed})"
        )
    return _commit_for(to_state)


# --- values -----------------------------------------------------------------


@final
@dataclass(frozen=True, slots=True)
class RunBoundaryReceipt:
    """Proof that a run primitive was applied.

    A store keys it by `(runtime_id, run_id, sequence)`; receipts are never
    overwritten. Only `run_id` and `boundary` are required: by default no
    input contributed, there is no conversation digest, no message was
    counted and the sequence is 0 (a run's first boundary).
    """

    run_id: RunId
    boundary: RunApplyBoundary
    contributing_input_ids: tuple[InputId, ...] = ()
    conversation_digest: str | None = None
    message_count: int = 0
    sequence: int = 0

    def __post_init__(self) -> None:
        check_instance(self.run_id, RunId, "run_id")
        check_instance(self.boundary, RunApplyBoundary, "boundary")
        _set(
            self,
            "contributing_input_ids",
            check_tuple(self.contributing_input_ids, InputId, "contributing_input_ids"),
        )
        _set(
            self,
            "conversation_digest",
            check_optional_str(self.conversation_digest, "conversation_digest"),
        )
        _set(self, "message_count", check_count(self.message_count, "message_count"))
        _set(self, "sequence", check_u64(self.sequence, "sequence"))


AbandonKind = Literal[
    "retired", "reset", "stopped", "destroyed", "cancelled", "max_attempts_exhausted"
]
_ABANDON_KINDS: frozenset[str] = frozenset(
    {"retired", "reset", "stopped", "destroyed", "cancelled", "max_attempts_exhausted"}
)


@final
@dataclass(frozen=True, slots=True)
class InputAbandonReason:
    """Why an input was abandoned.

    `kind` is the wire name; `attempts` is set exactly when `kind` is
    `"max_attempts_exhausted"`. Build with the class methods, e.g.
    `InputAbandonReason.retired()` or `InputAbandonReason.max_attempts_exhausted(3)`.
    """

    kind: AbandonKind
    attempts: int | None = None

    def __post_init__(self) -> None:
        check_str(self.kind, "kind")
        if self.kind not in _ABANDON_KINDS:
            raise ValueError(
                f"kind must be one of {', '.join(sorted(_ABANDON_KINDS))}, got {self.kind!r}"
            )
        if self.kind == "max_attempts_exhausted":
            if self.attempts is None:
                raise ValueError("attempts is required when kind is 'max_attempts_exhausted'")
            _set(self, "attempts", check_count(self.attempts, "attempts", U32_MAX))
        elif self.attempts is not None:
            raise ValueError(f"attempts must be None when kind is {self.kind!r}")

    @classmethod
    def retired(cls) -> InputAbandonReason:
        return cls("retired")

    @classmethod
    def reset(cls) -> InputAbandonReason:
        return cls("reset")

    @classmethod
    def stopped(cls) -> InputAbandonReason:
        return cls("stopped")

    @classmethod
    def destroyed(cls) -> InputAbandonReason:
        return cls("destroyed")

    @classmethod
    def cancelled(cls) -> InputAbandonReason:
        return cls("cancelled")

    @classmethod
    def max_attempts_exhausted(cls, attempts: int) -> InputAbandonReason:
        return cls("max_attempts_exhausted", attempts)


OutcomeKind = Literal["consumed", "superseded", "coalesced", "abandoned"]
_OUTCOME_FIELD: dict[str, str | None] = {
    "consumed": None,
    "superseded": "superseded_by",
    "coalesced": "aggregate_id",
    "abandoned": "reason",
}


@final
@dataclass(frozen=True, slots=True)
class InputTerminalOutcome:
    """How an input ended.

    `kind` is the wire name. Exactly the field that belongs to the kind is
    set: `superseded_by` for `"superseded"`, `aggregate_id` for
    `"coalesced"`, `reason` for `"abandoned"`, none for `"consumed"`. Build
    with the class methods, e.g. `InputTerminalOutcome.superseded(other_id)`.
    """

    kind: OutcomeKind
    superseded_by: InputId | None = None
    aggregate_id: InputId | None = None
    reason: InputAbandonReason | None = None

    def __post_init__(self) -> None:
        check_str(self.kind, "kind")
        if self.kind not in _OUTCOME_FIELD:
            raise ValueError(
                f"kind must be one of {', '.join(sorted(_OUTCOME_FIELD))}, got {self.kind!r}"
            )
        check_optional_instance(self.superseded_by, InputId, "superseded_by")
        check_optional_instance(self.aggregate_id, InputId, "aggregate_id")
        check_optional_instance(self.reason, InputAbandonReason, "reason")
        wanted = _OUTCOME_FIELD[self.kind]
        for name in ("superseded_by", "aggregate_id", "reason"):
            present = getattr(self, name) is not None
            if name == wanted and not present:
                raise ValueError(f"{name} is required when kind is {self.kind!r}")
            if name != wanted and present:
                raise ValueError(f"{name} must be None when kind is {self.kind!r}")

    @classmethod
    def consumed(cls) -> InputTerminalOutcome:
        return cls("consumed")

    @classmethod
    def superseded(cls, superseded_by: InputId) -> InputTerminalOutcome:
        return cls("superseded", superseded_by=superseded_by)

    @classmethod
    def coalesced(cls, aggregate_id: InputId) -> InputTerminalOutcome:
        return cls("coalesced", aggregate_id=aggregate_id)

    @classmethod
    def abandoned(cls, reason: InputAbandonReason) -> InputTerminalOutcome:
        return cls("abandoned", reason=reason)


@final
@dataclass(frozen=True, slots=True)
class InputStateHistoryEntry:
    """One recorded phase change of an input."""

    timestamp: datetime
    from_state: InputLifecycleState
    to_state: InputLifecycleState
    reason: str | None = None

    def __post_init__(self) -> None:
        _set(self, "timestamp", check_utc(self.timestamp, "timestamp"))
        check_instance(self.from_state, InputLifecycleState, "from_state")
        check_instance(self.to_state, InputLifecycleState, "to_state")
        _set(self, "reason", check_optional_str(self.reason, "reason"))


@final
@dataclass(frozen=True, slots=True)
class InputStateSeed:
    """The lifecycle fields of a stored input state.

    The phase and the terminal outcome agree: a terminal phase (`consumed`,
    `superseded`, `coalesced`, `abandoned`) holds an outcome of the same
    kind, any other phase none. The constructor refuses anything else with
    a `ValueError` naming `terminal_outcome` and `phase`. (A store gives
    back a seed it holds as it is, even one a Meerkat Rust runtime or an
    older version wrote without that agreement; see docs/semantics.md.)
    """

    phase: InputLifecycleState = InputLifecycleState.ACCEPTED
    last_run_id: RunId | None = None
    last_boundary_sequence: int | None = None
    terminal_outcome: InputTerminalOutcome | None = None
    attempt_count: int = 0

    def __post_init__(self) -> None:
        self._check_fields()
        problem = _phase_outcome_problem(self.phase, self.terminal_outcome, "terminal_outcome")
        if problem is not None:
            raise ValueError(problem)

    @classmethod
    def _stored(
        cls,
        phase: InputLifecycleState = InputLifecycleState.ACCEPTED,
        last_run_id: RunId | None = None,
        last_boundary_sequence: int | None = None,
        terminal_outcome: InputTerminalOutcome | None = None,
        attempt_count: int = 0,
    ) -> InputStateSeed:
        """Internal: a seed as a store may hold it, phase and outcome unchecked
        (Rule 4). Not for callers: the repr of such a seed names it, so that a
        failing example the conformance kit prints runs as written."""
        return _stored_seed(
            phase, last_run_id, last_boundary_sequence, terminal_outcome, attempt_count
        )

    def __repr__(self) -> str:
        fields = (
            f"phase={self.phase!r}, last_run_id={self.last_run_id!r},"
            f" last_boundary_sequence={self.last_boundary_sequence!r},"
            f" terminal_outcome={self.terminal_outcome!r}, attempt_count={self.attempt_count!r}"
        )
        agree = _phase_outcome_problem(self.phase, self.terminal_outcome, "") is None
        return f"InputStateSeed({fields})" if agree else f"InputStateSeed._stored({fields})"

    def _check_fields(self) -> None:
        """Check (and normalise) each field on its own."""
        check_instance(self.phase, InputLifecycleState, "phase")
        check_optional_instance(self.last_run_id, RunId, "last_run_id")
        if self.last_boundary_sequence is not None:
            _set(
                self,
                "last_boundary_sequence",
                check_u64(self.last_boundary_sequence, "last_boundary_sequence"),
            )
        check_optional_instance(self.terminal_outcome, InputTerminalOutcome, "terminal_outcome")
        _set(self, "attempt_count", check_count(self.attempt_count, "attempt_count", U32_MAX))


def _stored_seed(
    phase: InputLifecycleState,
    last_run_id: RunId | None,
    last_boundary_sequence: int | None,
    terminal_outcome: InputTerminalOutcome | None,
    attempt_count: int,
) -> InputStateSeed:
    """Internal: a seed decoded from a store's bytes or rows.

    Every field is checked as the constructor checks it, but not the
    agreement of phase and outcome: a store holds what Meerkat's Rust runtime
    or an older version wrote, and reads it back as it is (Rule 4).
    """
    seed: InputStateSeed = object.__new__(InputStateSeed)
    _set(seed, "phase", phase)
    _set(seed, "last_run_id", last_run_id)
    _set(seed, "last_boundary_sequence", last_boundary_sequence)
    _set(seed, "terminal_outcome", terminal_outcome)
    _set(seed, "attempt_count", attempt_count)
    seed._check_fields()
    return seed


@final
@dataclass(frozen=True, slots=True)
class InputState:
    """The shell fields of a stored input state.

    `policy`, `runtime_semantics`, `reconstruction_source` and
    `persisted_input` are opaque JSON documents, stored frozen (objects
    become `pyrsistent.PMap`, arrays tuples), or `None`.
    """

    input_id: InputId
    created_at: datetime
    updated_at: datetime
    history: tuple[InputStateHistoryEntry, ...] = ()
    policy: Any = None
    runtime_semantics: Any = None
    durability: InputDurability | None = None
    idempotency_key: str | None = None
    recovery_count: int = 0
    reconstruction_source: Any = None
    persisted_input: Any = None

    def __post_init__(self) -> None:
        check_instance(self.input_id, InputId, "input_id")
        _set(self, "created_at", check_utc(self.created_at, "created_at"))
        _set(self, "updated_at", check_utc(self.updated_at, "updated_at"))
        _set(self, "history", check_tuple(self.history, InputStateHistoryEntry, "history"))
        for name in ("policy", "runtime_semantics", "reconstruction_source", "persisted_input"):
            _set(self, name, freeze(getattr(self, name), name))
        check_optional_instance(self.durability, InputDurability, "durability")
        _set(self, "idempotency_key", check_optional_str(self.idempotency_key, "idempotency_key"))
        _set(self, "recovery_count", check_count(self.recovery_count, "recovery_count", U32_MAX))


@final
@dataclass(frozen=True, slots=True)
class StoredInputState:
    """An input state as a store keeps it: the shell fields and the lifecycle seed.

    The terminal outcome and attempt count live in `seed` only.
    """

    state: InputState
    seed: InputStateSeed = field(default_factory=InputStateSeed)

    def __post_init__(self) -> None:
        check_instance(self.state, InputState, "state")
        check_instance(self.seed, InputStateSeed, "seed")

    @property
    def input_id(self) -> InputId:
        """The input's id (`state.input_id`)."""
        return self.state.input_id

    @classmethod
    def new_accepted(cls, input_id: InputId, *, now: datetime | None = None) -> StoredInputState:
        """A freshly accepted input: phase `accepted`, no history, created now.

        Args:
            input_id: the input's id.
            now: the creation time (aware); defaults to the current UTC time.
        """
        check_instance(input_id, InputId, "input_id")
        created = datetime.now(UTC) if now is None else now
        return cls(InputState(input_id=input_id, created_at=created, updated_at=created))

    def transition(
        self,
        to: InputLifecycleState,
        *,
        reason: str | None = None,
        run_id: RunId | None = None,
        sequence: int | None = None,
        outcome: InputTerminalOutcome | None = None,
        at: datetime | None = None,
    ) -> StoredInputState:
        """This input moved to phase `to`, as a new value (this one is unchanged).

        The move must be in `INPUT_LIFECYCLE_TRANSITIONS`. The new value has
        one more history entry (`at`, the old phase, `to`, `reason`),
        `updated_at` set to `at`, and its seed set as Meerkat's input
        lifecycle machine sets it:

        - `phase` is `to`; `terminal_outcome` is `outcome` (required for a
          terminal `to`, of the matching kind; `None` otherwise);
        - `last_run_id` is `run_id` if given, else unchanged; staging
          (`queued -> staged`) requires it and counts one more attempt
          (`attempt_count + 1`); marking applied (`staged -> applied`)
          with a `run_id` requires the one it was staged for;
        - `last_boundary_sequence` is `sequence` (the boundary receipt's) if
          given, else unchanged; `applied -> applied_pending_consumption`
          requires it.

        Every other field is kept. Nothing is written anywhere: persist the
        result (`persist_input_state`, `atomic_apply`, ...). The caller
        decides every move: a fourth rollback of a staged input is not
        turned into `abandoned` here, as Meerkat's machine does after three
        attempts.

        Args:
            to: the new phase.
            reason: why, recorded in the history entry.
            run_id: the run the input is staged for or applied in.
            sequence: the boundary receipt's sequence, 0 .. 2**64-1.
            outcome: how the input ended, for a terminal `to`.
            at: when (aware; stored in UTC); defaults to the current UTC time.

        Returns:
            The moved input state.

        Raises:
            TypeError: an argument of the wrong type.
            InvalidTransition: the move is not in the table (the message
                names both phases), or `run_id` is not the run a staged
                input was staged for.
            ValueError: `outcome`, `run_id` or `sequence` missing where the
                move requires it, an outcome of the wrong kind, an outcome
                for a phase that is not terminal, or a naive `at`.
        """
        check_instance(to, InputLifecycleState, "to")
        reason = check_optional_str(reason, "reason")
        check_optional_instance(run_id, RunId, "run_id")
        if sequence is not None:
            sequence = check_u64(sequence, "sequence")
        check_optional_instance(outcome, InputTerminalOutcome, "outcome")
        when = datetime.now(UTC) if at is None else check_utc(at, "at")
        seed = self.seed
        phase = seed.phase
        if to not in INPUT_LIFECYCLE_TRANSITIONS[phase]:
            allowed = ", ".join(sorted(p.value for p in INPUT_LIFECYCLE_TRANSITIONS[phase])) or (
                "none: it is terminal" if phase.is_terminal else "none"
            )
            raise InvalidTransition(
                f"input {self.input_id}: no input lifecycle transition"
                f" {phase.value} -> {to.value} (from {phase.value}: {allowed})"
            )
        problem = _phase_outcome_problem(to, outcome, "outcome")
        if problem is not None:
            raise ValueError(f"input {self.input_id}: {phase.value} -> {to.value}: {problem}")
        attempts = seed.attempt_count
        if to is InputLifecycleState.STAGED:
            if run_id is None:
                raise ValueError(
                    f"input {self.input_id}: {phase.value} -> staged: run_id is required"
                    " (the run the input is staged for)"
                )
            attempts += 1
        elif to is InputLifecycleState.APPLIED:
            staged_for = seed.last_run_id
            if run_id is not None and staged_for is not None and run_id != staged_for:
                raise InvalidTransition(
                    f"input {self.input_id}: {phase.value} -> applied: run_id {run_id} is not"
                    f" the run the input was staged for (last_run_id {staged_for})"
                )
        elif to is InputLifecycleState.APPLIED_PENDING_CONSUMPTION and sequence is None:
            raise ValueError(
                f"input {self.input_id}: {phase.value} -> applied_pending_consumption:"
                " sequence is required (the boundary receipt's sequence)"
            )
        new_seed = InputStateSeed(
            phase=to,
            last_run_id=seed.last_run_id if run_id is None else run_id,
            last_boundary_sequence=seed.last_boundary_sequence if sequence is None else sequence,
            terminal_outcome=outcome,
            attempt_count=attempts,
        )
        entry = InputStateHistoryEntry(when, phase, to, reason)
        state = replace(self.state, updated_at=when, history=(*self.state.history, entry))
        return StoredInputState(state, new_seed)


@final
@dataclass(frozen=True, slots=True)
class SessionDelta:
    """A serialized session snapshot, opaque to the store except for its id."""

    session_snapshot: bytes

    def __post_init__(self) -> None:
        _set(self, "session_snapshot", check_bytes(self.session_snapshot, "session_snapshot"))


@final
@dataclass(frozen=True, slots=True)
class PersistedOpsSnapshot:
    """A runtime's ops lifecycle registry state; the four payloads are opaque
    JSON documents, stored frozen."""

    epoch_id: str
    authority_state: Any = None
    operation_specs: Any = None
    completion_entries: Any = None
    cursors: Any = None

    PAYLOADS: ClassVar[tuple[str, ...]] = (
        "authority_state",
        "operation_specs",
        "completion_entries",
        "cursors",
    )

    def __post_init__(self) -> None:
        _set(self, "epoch_id", check_str(self.epoch_id, "epoch_id"))
        for name in self.PAYLOADS:
            _set(self, name, freeze(getattr(self, name), name))
