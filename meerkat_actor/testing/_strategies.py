"""Hypothesis strategies for every type of the data model (SPEC §2, §8).

Rule 1: every strategy draws only valid values (constructors would refuse
anything else; a seed's phase and terminal outcome agree) and covers the
edges a backend gets wrong: u64 sequences above 2**63, empty and optional
fields, every enum member and every outcome kind, timestamps with and
without microseconds, opaque JSON documents with nesting.

Rule 2: ids are drawn from the whole UUID space (any version), so sorting
and text/numeric order are exercised; the stateful machine draws from small
pools instead, to make collisions likely.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from .._ids import InputId, LogicalRuntimeId, RunId, SessionId
from .._types import (
    LIFECYCLE_TRANSITIONS,
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
    machine_transition,
)

__all__ = [
    "abandon_reasons",
    "history_entries",
    "input_durabilities",
    "input_ids",
    "input_lifecycle_states",
    "input_state_seeds",
    "input_states",
    "json_documents",
    "lifecycle_commits",
    "lifecycle_transitions",
    "ops_snapshots",
    "receipts",
    "run_apply_boundaries",
    "run_ids",
    "runtime_ids",
    "runtime_states",
    "sequences",
    "session_deltas",
    "session_ids",
    "stored_input_states",
    "terminal_outcomes",
    "utc_datetimes",
    "uuids",
]

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1


def uuids() -> st.SearchStrategy[uuid.UUID]:
    """Any 128-bit UUID, biased towards the edges of the ordering."""
    return st.one_of(
        st.uuids(),
        st.integers(min_value=0, max_value=2**128 - 1).map(lambda n: uuid.UUID(int=n)),
        st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), uuid.UUID(int=2**127)]),
    )


def runtime_ids() -> st.SearchStrategy[LogicalRuntimeId]:
    """Non-empty runtime ids, including non-ASCII text."""
    return st.text(min_size=1, max_size=24).map(LogicalRuntimeId)


def run_ids() -> st.SearchStrategy[RunId]:
    return uuids().map(RunId)


def input_ids() -> st.SearchStrategy[InputId]:
    return uuids().map(InputId)


def session_ids() -> st.SearchStrategy[SessionId]:
    return uuids().map(SessionId)


def sequences() -> st.SearchStrategy[int]:
    """u64 sequences, biased to 0, small values and the i64/u64 boundaries."""
    return st.one_of(
        st.integers(min_value=0, max_value=U64_MAX),
        st.integers(min_value=0, max_value=8),
        st.sampled_from([2**63 - 1, 2**63, 2**63 + 1, U64_MAX - 1, U64_MAX]),
    )


def _counts(maximum: int = U64_MAX) -> st.SearchStrategy[int]:
    # Above 2**53 a count is no longer a double: a JSON reader that parses
    # numbers as doubles rounds 2**53 + 1 and maximum - 1.
    return st.one_of(
        st.integers(min_value=0, max_value=10),
        st.integers(0, maximum),
        st.sampled_from(sorted({maximum, maximum - 1, min(2**53 + 1, maximum)})),
    )


def _u32_counts() -> st.SearchStrategy[int]:
    """Counts Meerkat keeps as u32 (attempts, recovery_count)."""
    return _counts(U32_MAX)


def utc_datetimes() -> st.SearchStrategy[datetime]:
    """Aware UTC datetimes in years 1..9999, some with zero or whole-ms fractions."""
    base = st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.just(UTC),
    )
    return st.one_of(
        base,
        base.map(lambda d: d.replace(microsecond=0)),
        base.map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
    )


_EDGE_LEAVES: tuple[Any, ...] = (
    True,
    False,
    0,
    1,
    1.0,
    -0.0,
    0.5,
    2**53 + 1,
    -(2**63),
    U64_MAX,
    1e300,
    "",
    "\u00e9",
    "e\u0301",
    "A",
    "a",
)
"""Leaves a backend that stores documents elsewhere gets wrong: JSON's
booleans and numbers (True is not 1, 1.0 is not 1, -0.0 keeps its sign,
2**53 + 1 is not a double), and text a collation or a Unicode normalisation
would merge (NFC and NFD forms of é, case)."""

_document_keys = st.one_of(st.text(max_size=8), st.sampled_from(("id", "ID", "\u00e9", "e\u0301")))


def json_documents(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Plain JSON-compatible documents (dicts, lists, str, int, float, bool, None)."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=U64_MAX),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=16),
        st.sampled_from(_EDGE_LEAVES),
    )
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(_document_keys, children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def _optional_documents() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.dictionaries(st.text(max_size=8), json_documents(), max_size=4))


def run_apply_boundaries() -> st.SearchStrategy[RunApplyBoundary]:
    return st.sampled_from(RunApplyBoundary)


def runtime_states() -> st.SearchStrategy[RuntimeState]:
    return st.sampled_from(RuntimeState)


def input_lifecycle_states() -> st.SearchStrategy[InputLifecycleState]:
    return st.sampled_from(InputLifecycleState)


def input_durabilities() -> st.SearchStrategy[InputDurability]:
    return st.sampled_from(InputDurability)


def receipts(
    run_id: st.SearchStrategy[RunId] | None = None,
    sequence: st.SearchStrategy[int] | None = None,
) -> st.SearchStrategy[RunBoundaryReceipt]:
    """Receipts; `run_id`/`sequence` narrow the key (for collisions)."""
    return st.builds(
        RunBoundaryReceipt,
        run_id=run_id if run_id is not None else run_ids(),
        boundary=run_apply_boundaries(),
        contributing_input_ids=st.lists(input_ids(), max_size=3).map(tuple),
        conversation_digest=st.one_of(st.none(), st.text(max_size=64)),
        message_count=_counts(),
        sequence=sequence if sequence is not None else sequences(),
    )


def abandon_reasons() -> st.SearchStrategy[InputAbandonReason]:
    return st.one_of(
        st.sampled_from(
            [
                InputAbandonReason.retired(),
                InputAbandonReason.reset(),
                InputAbandonReason.stopped(),
                InputAbandonReason.destroyed(),
                InputAbandonReason.cancelled(),
            ]
        ),
        _u32_counts().map(InputAbandonReason.max_attempts_exhausted),
    )


def terminal_outcomes() -> st.SearchStrategy[InputTerminalOutcome]:
    return st.one_of(
        st.just(InputTerminalOutcome.consumed()),
        input_ids().map(InputTerminalOutcome.superseded),
        input_ids().map(InputTerminalOutcome.coalesced),
        abandon_reasons().map(InputTerminalOutcome.abandoned),
    )


def history_entries() -> st.SearchStrategy[InputStateHistoryEntry]:
    return st.builds(
        InputStateHistoryEntry,
        timestamp=utc_datetimes(),
        from_state=input_lifecycle_states(),
        to_state=input_lifecycle_states(),
        reason=st.one_of(st.none(), st.text(max_size=16)),
    )


def _outcomes_of(phase: InputLifecycleState) -> st.SearchStrategy[InputTerminalOutcome]:
    """The outcomes a terminal `phase` may hold: those of its own kind."""
    if phase is InputLifecycleState.CONSUMED:
        return st.just(InputTerminalOutcome.consumed())
    if phase is InputLifecycleState.SUPERSEDED:
        return input_ids().map(InputTerminalOutcome.superseded)
    if phase is InputLifecycleState.COALESCED:
        return input_ids().map(InputTerminalOutcome.coalesced)
    return abandon_reasons().map(InputTerminalOutcome.abandoned)


def input_state_seeds() -> st.SearchStrategy[InputStateSeed]:
    """Seeds in every phase, each terminal one with an outcome of its kind
    (every outcome variant), the others with none: the constructor refuses
    a phase and an outcome that disagree. (Built by the constructor, so a
    failing example prints as `InputStateSeed(...)`.)"""
    common: dict[str, st.SearchStrategy[Any]] = {
        "last_run_id": st.one_of(st.none(), run_ids()),
        "last_boundary_sequence": st.one_of(st.none(), sequences()),
        "attempt_count": _u32_counts(),
    }
    not_terminal = [p for p in InputLifecycleState if not p.is_terminal]
    terminal = [p for p in InputLifecycleState if p.is_terminal]
    return st.one_of(
        st.builds(InputStateSeed, phase=st.sampled_from(not_terminal), **common),
        *[
            st.builds(InputStateSeed, phase=st.just(p), terminal_outcome=_outcomes_of(p), **common)
            for p in terminal
        ],
    )


def input_states(
    input_id: st.SearchStrategy[InputId] | None = None,
) -> st.SearchStrategy[InputState]:
    """Shell fields; `input_id` narrows the id (for collisions)."""
    return st.builds(
        InputState,
        input_id=input_id if input_id is not None else input_ids(),
        created_at=utc_datetimes(),
        updated_at=utc_datetimes(),
        history=st.lists(history_entries(), max_size=3).map(tuple),
        policy=_optional_documents(),
        runtime_semantics=_optional_documents(),
        durability=st.one_of(st.none(), input_durabilities()),
        idempotency_key=st.one_of(st.none(), st.text(max_size=16)),
        recovery_count=_u32_counts(),
        reconstruction_source=_optional_documents(),
        persisted_input=_optional_documents(),
    )


def stored_input_states(
    input_id: st.SearchStrategy[InputId] | None = None,
) -> st.SearchStrategy[StoredInputState]:
    return st.builds(StoredInputState, state=input_states(input_id), seed=input_state_seeds())


def session_deltas() -> st.SearchStrategy[SessionDelta]:
    """Arbitrary snapshot bytes (not necessarily a readable session)."""
    return st.binary(max_size=64).map(SessionDelta)


def ops_snapshots() -> st.SearchStrategy[PersistedOpsSnapshot]:
    return st.builds(
        PersistedOpsSnapshot,
        epoch_id=st.one_of(st.text(max_size=36), uuids().map(str)),
        authority_state=json_documents(),
        operation_specs=json_documents(),
        completion_entries=json_documents(),
        cursors=json_documents(),
    )


_LEGAL_TRANSITIONS = sorted(
    ((a, b) for a, targets in LIFECYCLE_TRANSITIONS.items() for b in targets),
    key=lambda pair: (pair[0].value, pair[1].value),
)


def lifecycle_transitions() -> st.SearchStrategy[tuple[RuntimeState, RuntimeState]]:
    """Legal `(from_state, to_state)` pairs of the transition table."""
    return st.sampled_from(_LEGAL_TRANSITIONS)


def lifecycle_commits() -> st.SearchStrategy[MachineLifecycleCommit]:
    return lifecycle_transitions().map(lambda pair: machine_transition(*pair))
