"""What the benchmark's operations carry: realistic values, deterministic in a seed.

Rule 1: pure and deterministic. Every value is a function of its arguments
(a seed string, an index); nothing reads a clock or the process's random
state, so a child process rebuilds exactly what its parent wrote and can check
a recovered store against it.

Rule 2: built before the clock starts. Constructing these values validates
every field (tens of microseconds per input state), which would dominate a
timed loop; the throughput workloads draw from pools built here, in a worker
thread, before they run.

The shapes are those of an agent host's run boundary: a Meerkat session
snapshot (`{"id": <uuid>, "messages": [...]}`, which the default
`MeerkatSessionCodec` reads) of about 4 KiB or 64 KiB, a `RunBoundaryReceipt`
whose contributing input ids are the run's inputs, and 1-8 input states that
the run consumed (one history entry, a terminal outcome, a small persisted
input document). The retention part also writes inputs of a run still in
flight (`pending_input`: applied, pending consumption, not terminal), whose
payload cannot be retired.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from .._ids import InputId, LogicalRuntimeId, RunId, SessionId
from .._types import (
    InputDurability,
    InputLifecycleState,
    InputState,
    InputStateHistoryEntry,
    InputStateSeed,
    InputTerminalOutcome,
    RunApplyBoundary,
    RunBoundaryReceipt,
    SessionDelta,
    StoredInputState,
)

__all__ = [
    "EPOCH",
    "CommitPlan",
    "Session",
    "Write",
    "consumed_input",
    "is_consumed_input",
    "is_pending_input",
    "oauth_counter",
    "oauth_increment",
    "oauth_initial",
    "pending_input",
    "plan_runtime",
    "session_snapshot",
    "sessions",
    "write_for",
    "write_pool",
]

EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)
MAX_INPUTS_PER_COMMIT: Final = 8
_LOREM: Final = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor"
    " incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud"
    " exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. "
)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def session_snapshot(session_id: SessionId, size: int) -> bytes:
    """A Meerkat session JSON document of at least `size` bytes (alternating
    user and assistant messages of ~240 characters)."""
    messages: list[dict[str, str]] = []
    document = {"id": str(session_id), "messages": messages}
    length = len(json.dumps(document))
    while length < size:
        n = len(messages)
        message = {
            "role": "user" if n % 2 == 0 else "assistant",
            "content": f"message {n}: {_LOREM}",
        }
        messages.append(message)
        length += len(json.dumps(message)) + 2
    return json.dumps(document).encode()


_ACCEPTED: Final = InputLifecycleState.ACCEPTED
_CONSUMED: Final = InputLifecycleState.CONSUMED
_PENDING: Final = InputLifecycleState.APPLIED_PENDING_CONSUMPTION
_CONSUMED_OUTCOME: Final = InputTerminalOutcome.consumed()
_REASON: Final = "run complete"
_PENDING_REASON: Final = "run started"
_INPUT_TYPE: Final = "user_message"


def _input_text(index: int) -> str:
    return f"input {index}: {_LOREM[:120]}"


def _input(
    input_id: uuid.UUID, run_id: uuid.UUID, index: int, *, pending: bool
) -> StoredInputState:
    at = EPOCH + timedelta(seconds=index)
    phase, reason = (_PENDING, _PENDING_REASON) if pending else (_CONSUMED, _REASON)
    state = InputState(
        input_id=InputId(input_id),
        created_at=at,
        updated_at=at,
        history=(InputStateHistoryEntry(at, _ACCEPTED, phase, reason),),
        durability=InputDurability.DURABLE,
        persisted_input={"type": _INPUT_TYPE, "text": _input_text(index)},
    )
    seed = InputStateSeed(
        phase=phase,
        last_run_id=RunId(run_id),
        last_boundary_sequence=0,
        terminal_outcome=None if pending else _CONSUMED_OUTCOME,
        attempt_count=1,
    )
    return StoredInputState(state, seed)


def consumed_input(input_id: uuid.UUID, run_id: uuid.UUID, index: int) -> StoredInputState:
    """The `index`-th input of a runtime, consumed by run `run_id` (terminal)."""
    return _input(input_id, run_id, index, pending=False)


def pending_input(input_id: uuid.UUID, run_id: uuid.UUID, index: int) -> StoredInputState:
    """The `index`-th input of a runtime, applied by run `run_id`, which has
    not finished: phase applied-pending-consumption, no terminal outcome (not
    terminal, so its payload cannot be retired)."""
    return _input(input_id, run_id, index, pending=True)


def _matches(
    stored: StoredInputState,
    input_id: uuid.UUID,
    run_id: uuid.UUID,
    index: int,
    *,
    pending: bool,
    retired: bool,
) -> bool:
    at = EPOCH + timedelta(seconds=index)
    phase, reason = (_PENDING, _PENDING_REASON) if pending else (_CONSUMED, _REASON)
    state, seed = stored.state, stored.seed
    history, document = state.history, state.persisted_input
    if retired:
        payload = document is None
    else:
        payload = (
            document is not None
            and len(document) == 2
            and document.get("type") == _INPUT_TYPE
            and document.get("text") == _input_text(index)
        )
    return (
        state.input_id.value == input_id
        and state.created_at == at
        and state.updated_at == at
        and len(history) == 1
        and history[0].timestamp == at
        and history[0].from_state is _ACCEPTED
        and history[0].to_state is phase
        and history[0].reason == reason
        and state.policy is None
        and state.runtime_semantics is None
        and state.durability is InputDurability.DURABLE
        and state.idempotency_key is None
        and state.recovery_count == 0
        and state.reconstruction_source is None
        and payload
        and seed.phase is phase
        and seed.last_run_id is not None
        and seed.last_run_id.value == run_id
        and seed.last_boundary_sequence == 0
        and seed.terminal_outcome == (None if pending else _CONSUMED_OUTCOME)
        and seed.attempt_count == 1
    )


def is_consumed_input(
    stored: StoredInputState,
    input_id: uuid.UUID,
    run_id: uuid.UUID,
    index: int,
    *,
    retired: bool = False,
) -> bool:
    """Whether `stored == consumed_input(input_id, run_id, index)`, compared
    field by field without building the expected value (constructors validate,
    and a recovery check compares a million of these). With `retired`, the
    payload must be gone (`persisted_input` is `None`) and all else the same."""
    return _matches(stored, input_id, run_id, index, pending=False, retired=retired)


def is_pending_input(
    stored: StoredInputState, input_id: uuid.UUID, run_id: uuid.UUID, index: int
) -> bool:
    """Whether `stored == pending_input(input_id, run_id, index)`, field by field."""
    return _matches(stored, input_id, run_id, index, pending=True, retired=False)


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """One run boundary as plain numbers: the run id, its inputs' ids, and the
    runtime-wide index of its first input (which fixes the inputs' content)."""

    run_id: uuid.UUID
    input_ids: tuple[uuid.UUID, ...]
    first_index: int


def plan_runtime(seed: str, count: int) -> list[CommitPlan]:
    """`count` inputs of one runtime, split into runs of 1-8 inputs."""
    rng = random.Random(seed)
    plans: list[CommitPlan] = []
    done = 0
    while done < count:
        size = min(count - done, rng.randint(1, MAX_INPUTS_PER_COMMIT))
        run_id = _uuid(rng)
        plans.append(CommitPlan(run_id, tuple(_uuid(rng) for _ in range(size)), done))
        done += size
    return plans


@dataclass(frozen=True, slots=True)
class Write:
    """The runtime-independent part of one `atomic_apply`: a receipt and the
    input states of its run (the caller adds its runtime id and session)."""

    receipt: RunBoundaryReceipt
    states: tuple[StoredInputState, ...]


def write_for(plan: CommitPlan, *, pending: bool = False) -> Write:
    """The receipt and input states `plan` describes: consumed inputs, or with
    `pending` inputs of a run still in flight (`pending_input`)."""
    states = tuple(
        _input(input_id, plan.run_id, plan.first_index + n, pending=pending)
        for n, input_id in enumerate(plan.input_ids)
    )
    receipt = RunBoundaryReceipt(
        run_id=RunId(plan.run_id),
        boundary=RunApplyBoundary.RUN_START,
        contributing_input_ids=tuple(state.input_id for state in states),
        conversation_digest=f"{plan.run_id.int:064x}",
        message_count=plan.first_index + len(states),
        sequence=0,
    )
    return Write(receipt, states)


def write_pool(seed: str, writes: int) -> list[Write]:
    """`writes` distinct writes (unique run and input ids), about 4.5 inputs each."""
    rng = random.Random(seed)
    pool: list[Write] = []
    index = 0
    for _ in range(writes):
        size = rng.randint(1, MAX_INPUTS_PER_COMMIT)
        plan = CommitPlan(_uuid(rng), tuple(_uuid(rng) for _ in range(size)), index)
        pool.append(write_for(plan))
        index += size
    return pool


@dataclass(frozen=True, slots=True)
class Session:
    """A runtime's identity in a workload: its id, session id and snapshot."""

    runtime_id: LogicalRuntimeId
    session_id: SessionId
    delta: SessionDelta


def sessions(prefix: str, count: int, size: int) -> list[Session]:
    """`count` runtimes named `prefix-0...`, each with its own session snapshot."""
    rng = random.Random(f"{prefix}/{size}")
    made: list[Session] = []
    for n in range(count):
        session_id = SessionId(_uuid(rng))
        made.append(
            Session(
                LogicalRuntimeId(f"{prefix}-{n}"),
                session_id,
                SessionDelta(session_snapshot(session_id, size)),
            )
        )
    return made


def oauth_initial() -> bytes:
    """An OAuth flow snapshot of ~1 KiB: four pending PKCE flows and a counter."""
    rng = random.Random("oauth")
    flows = [
        {
            "state": f"{rng.getrandbits(128):032x}",
            "code_verifier": f"{rng.getrandbits(256):064x}{rng.getrandbits(128):032x}",
            "redirect_uri": "http://127.0.0.1:8765/callback",
            "provider": "example",
            "created_at": "2026-01-01T00:00:00Z",
        }
        for _ in range(4)
    ]
    return json.dumps({"counter": 0, "flows": flows}).encode()


def oauth_increment(current: bytes | None) -> bytes:
    """The updater of the OAuth workload: parse, add one to the counter, serialize."""
    document = json.loads(current if current is not None else oauth_initial())
    document["counter"] += 1
    return json.dumps(document).encode()


def oauth_counter(snapshot: bytes | None) -> int:
    """The counter in an OAuth flow snapshot made by `oauth_increment`."""
    if snapshot is None:
        return 0
    counter = json.loads(snapshot)["counter"]
    if not isinstance(counter, int):
        raise ValueError(f"the OAuth snapshot's counter is {counter!r}")
    return counter
