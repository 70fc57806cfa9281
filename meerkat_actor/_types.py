"""The data model (SPEC §2): enums, values and the lifecycle commit token.

Rule 1: every value is immutable (a frozen, slotted dataclass; containers are
tuples or frozen JSON documents), hashable and compared by value.

Rule 2: constructors validate. A wrong type raises `TypeError`, a wrong value
`ValueError`, each naming the field; an invalid value cannot exist. Aware
datetimes are normalised to UTC.

Rule 3: the lifecycle transition table is data (`LIFECYCLE_TRANSITIONS`), and
`machine_transition()` is the only way to obtain a `MachineLifecycleCommit`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    overwritten.
    """

    run_id: RunId
    boundary: RunApplyBoundary
    contributing_input_ids: tuple[InputId, ...]
    conversation_digest: str | None
    message_count: int
    sequence: int

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
    """The lifecycle fields of a stored input state."""

    phase: InputLifecycleState = InputLifecycleState.ACCEPTED
    last_run_id: RunId | None = None
    last_boundary_sequence: int | None = None
    terminal_outcome: InputTerminalOutcome | None = None
    attempt_count: int = 0

    def __post_init__(self) -> None:
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
