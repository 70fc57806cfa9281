"""Tests for `meerkat_actor._codec`: Meerkat JSON and CBOR plain data.

The golden documents in `tests/golden/` are hand-written in the shape
Meerkat's Rust runtime writes with serde_json (compact, keys in Rust
declaration order), adapted from the research notes' examples so that every
timestamp has at most 6 fraction digits. Each decodes to an explicitly built
value and re-encodes to the same bytes. Opaque documents are frozen into maps
that do not keep key order, so for rows holding multi-key opaque objects the
comparison sorts the keys inside those documents only.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pmap

from meerkat_actor._codec import (
    CodecError,
    dumps_json,
    from_json,
    from_plain,
    loads_json,
    to_json,
    to_plain,
)
from meerkat_actor._ids import InputId, LogicalRuntimeId, RunId, SessionId
from meerkat_actor._types import (
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
from meerkat_actor.testing import _strategies as ms

GOLDEN = Path(__file__).parent / "golden"
U64_MAX = 2**64 - 1

RUN_A1 = RunId(uuid.UUID("01900000-0000-7000-8000-0000000000a1"))


def iid(last: str) -> InputId:
    """`InputId` 01900000-0000-7000-8000-<last, zero-padded to 12 hex digits>."""
    return InputId(uuid.UUID(f"01900000-0000-7000-8000-{last:0>12}"))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def golden(name: str) -> bytes:
    data = (GOLDEN / name).read_bytes()
    assert data.endswith(b"\n")
    return data[:-1]


def compact(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _sort_keys(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {key: _sort_keys(doc[key]) for key in sorted(doc)}
    if isinstance(doc, list):
        return [_sort_keys(item) for item in doc]
    return doc


OPAQUE_ROW_KEYS = ("policy", "runtime_semantics", "reconstruction_source", "persisted_input")
OPAQUE_OPS_KEYS = PersistedOpsSnapshot.PAYLOADS


def with_sorted_opaque(data: bytes, opaque_keys: tuple[str, ...]) -> bytes:
    """Re-serialize `data` with keys sorted inside the named opaque documents only."""
    doc = json.loads(data)
    for key in opaque_keys:
        if key in doc:
            doc[key] = _sort_keys(doc[key])
    return compact(doc)


def walk_plain(data: Any) -> None:
    """Assert `data` holds only the plain types CBOR encodes without tags."""
    kind = type(data)
    if kind is dict:
        for key, value in data.items():
            assert type(key) is str, key
            walk_plain(value)
    elif kind is list:
        for item in data:
            walk_plain(item)
    elif kind is int:
        assert -(2**64) <= data <= U64_MAX  # no bignum tag
    elif kind is float:
        assert math.isfinite(data)
    else:
        assert kind in (str, bytes, bool, type(None)), kind


# --- expected values of the golden documents -------------------------------------

RECEIPT_WITH_DIGEST = RunBoundaryReceipt(
    run_id=RUN_A1,
    boundary=RunApplyBoundary.RUN_START,
    contributing_input_ids=(iid("1"), iid("2")),
    conversation_digest="9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    message_count=4,
    sequence=0,
)

RECEIPT_WITHOUT_DIGEST = RunBoundaryReceipt(
    run_id=RUN_A1,
    boundary=RunApplyBoundary.RUN_CHECKPOINT,
    contributing_input_ids=(),
    conversation_digest=None,
    message_count=0,
    sequence=1,
)

FULL_ROW = StoredInputState(
    InputState(
        input_id=iid("1"),
        created_at=utc(2025, 3, 1, 12, 0, 0, 123),
        updated_at=utc(2025, 3, 1, 12, 0, 2, 654),
        history=(
            InputStateHistoryEntry(
                utc(2025, 3, 1, 12, 0, 0, 100001),
                InputLifecycleState.ACCEPTED,
                InputLifecycleState.QUEUED,
                "QueueAccepted",
            ),
            InputStateHistoryEntry(
                utc(2025, 3, 1, 12, 0, 1, 200000),
                InputLifecycleState.QUEUED,
                InputLifecycleState.STAGED,
            ),
            InputStateHistoryEntry(
                utc(2025, 3, 1, 12, 0, 2),
                InputLifecycleState.STAGED,
                InputLifecycleState.ABANDONED,
                "max attempts",
            ),
        ),
        policy={
            "version": 1,
            "decision": {
                "apply_mode": "stage_run_start",
                "wake_mode": "wake_if_idle",
                "queue_mode": "fifo",
                "consume_point": "on_run_complete",
                "drain_policy": "queue_next_turn",
                "routing_disposition": "queue",
                "record_transcript": True,
                "emit_operator_content": True,
                "policy_version": 1,
            },
        },
        runtime_semantics={
            "boundary": "run_start",
            "execution_kind": "content_turn",
            "peer_response_terminal_apply_intent": None,
        },
        durability=InputDurability.DURABLE,
        idempotency_key="req-abc-123",
        recovery_count=1,
        reconstruction_source={
            "source_type": "coalescing",
            "source_input_ids": [
                "01900000-0000-7000-8000-000000000010",
                "01900000-0000-7000-8000-000000000011",
            ],
        },
        persisted_input={
            "input_type": "prompt",
            "header": {
                "id": "01900000-0000-7000-8000-000000000001",
                "timestamp": "2025-03-01T12:00:00.000123Z",
                "source": {"type": "operator"},
                "durability": "durable",
                "visibility": {"transcript_eligible": True, "operator_eligible": True},
                "idempotency_key": "req-abc-123",
            },
            "text": "héllo ✓",
        },
    ),
    InputStateSeed(
        phase=InputLifecycleState.ABANDONED,
        last_run_id=RUN_A1,
        last_boundary_sequence=0,
        terminal_outcome=InputTerminalOutcome.abandoned(
            InputAbandonReason.max_attempts_exhausted(3)
        ),
        attempt_count=3,
    ),
)

CONSUMED_ROW = StoredInputState(
    InputState(
        input_id=iid("2"),
        created_at=utc(2025, 3, 1, 12, 0, 0, 1),
        updated_at=utc(2025, 3, 1, 12, 0, 5, 500000),
        durability=InputDurability.DURABLE,
    ),
    InputStateSeed(
        phase=InputLifecycleState.CONSUMED,
        last_run_id=RUN_A1,
        last_boundary_sequence=0,
        terminal_outcome=InputTerminalOutcome.consumed(),
        attempt_count=1,
    ),
)

SUPERSEDED_ROW = StoredInputState(
    InputState(
        input_id=iid("3"),
        created_at=utc(2025, 3, 1, 12, 0, 0),
        updated_at=utc(2025, 3, 1, 12, 0, 1),
    ),
    InputStateSeed(
        phase=InputLifecycleState.SUPERSEDED,
        terminal_outcome=InputTerminalOutcome.superseded(iid("4")),
    ),
)

COALESCED_ROW = StoredInputState(
    InputState(
        input_id=iid("10"),
        created_at=utc(2025, 3, 1, 12, 0, 0),
        updated_at=utc(2025, 3, 1, 12, 0, 1),
        reconstruction_source={
            "source_type": "projection",
            "rule_id": "rule-1",
            "source_event_id": "evt-1",
        },
    ),
    InputStateSeed(
        phase=InputLifecycleState.COALESCED,
        terminal_outcome=InputTerminalOutcome.coalesced(iid("1")),
    ),
)

NEW_ACCEPTED_ROW = StoredInputState.new_accepted(iid("5"), now=utc(2025, 3, 1, 12, 0, 0, 123456))

_COMPLETED_C1 = "01900000-0000-7000-8000-0000000000c1"
OPS_SNAPSHOT = PersistedOpsSnapshot(
    epoch_id="01900000-0000-7000-8000-0000000000e1",
    authority_state={
        "operations": {
            _COMPLETED_C1: {
                "status": "completed",
                "kind": "background_tool_op",
                "peer_ready": False,
                "progress_count": 2,
                "watcher_count": 0,
                "terminal_outcome": {
                    "outcome_type": "completed",
                    "id": _COMPLETED_C1,
                    "content": "done",
                    "is_error": False,
                    "duration_ms": 1200,
                    "tokens_used": 0,
                },
                "terminal_buffered": True,
            }
        },
        "completed_order": [_COMPLETED_C1],
        "max_completed": 256,
        "max_concurrent": None,
        "active_count": 0,
        "wait_request_id": None,
        "wait_operation_ids": [],
        "next_completion_seq": 2,
    },
    operation_specs={
        _COMPLETED_C1: {
            "id": _COMPLETED_C1,
            "kind": "background_tool_op",
            "owner_session_id": "01900000-0000-7000-8000-0000000000f1",
            "display_name": "shell: make test",
            "source_label": "shell",
            "child_session_id": None,
            "expect_peer_channel": False,
        }
    },
    completion_entries=[
        {
            "seq": 1,
            "operation_id": _COMPLETED_C1,
            "kind": "background_tool_op",
            "display_name": "shell: make test",
            "terminal_outcome": {"outcome_type": "failed", "error": "boom"},
            "completed_at_ms": 1740830400000,
        }
    ],
    cursors={"agent_applied_cursor": 1, "runtime_observed_seq": 1, "runtime_last_injected_seq": 0},
)


# --- golden documents -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "cls", "expected"),
    [
        ("receipt_with_digest.json", RunBoundaryReceipt, RECEIPT_WITH_DIGEST),
        ("receipt_without_digest.json", RunBoundaryReceipt, RECEIPT_WITHOUT_DIGEST),
        ("input_state_consumed.json", StoredInputState, CONSUMED_ROW),
        ("input_state_superseded.json", StoredInputState, SUPERSEDED_ROW),
        ("input_state_new_accepted.json", StoredInputState, NEW_ACCEPTED_ROW),
    ],
)
def test_golden_round_trips_byte_exact(name: str, cls: type, expected: Any) -> None:
    data = golden(name)
    assert loads_json(cls, data) == expected
    assert dumps_json(expected) == data
    assert from_json(cls, json.loads(data)) == expected
    assert to_json(expected) == json.loads(data)


def test_golden_receipt_without_digest_omits_the_key() -> None:
    assert b"conversation_digest" not in dumps_json(RECEIPT_WITHOUT_DIGEST)


@pytest.mark.parametrize(
    ("name", "cls", "expected", "opaque_keys"),
    [
        ("input_state_full.json", StoredInputState, FULL_ROW, OPAQUE_ROW_KEYS),
        ("input_state_coalesced.json", StoredInputState, COALESCED_ROW, OPAQUE_ROW_KEYS),
        ("ops_snapshot.json", PersistedOpsSnapshot, OPS_SNAPSHOT, OPAQUE_OPS_KEYS),
    ],
)
def test_golden_with_opaque_documents(
    name: str, cls: type, expected: Any, opaque_keys: tuple[str, ...]
) -> None:
    data = golden(name)
    assert loads_json(cls, data) == expected
    encoded = dumps_json(expected)
    # Same bytes outside the opaque documents (key order, omissions, timestamps) ...
    assert with_sorted_opaque(encoded, opaque_keys) == with_sorted_opaque(data, opaque_keys)
    # ... and the same top-level key order.
    assert list(json.loads(encoded)) == list(json.loads(data))


def test_golden_full_row_top_level_key_order() -> None:
    assert list(json.loads(dumps_json(FULL_ROW))) == [
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
    ]


def test_golden_full_row_writes_non_ascii_raw() -> None:
    assert "héllo ✓".encode() in dumps_json(FULL_ROW)


TERMINAL_OUTCOMES = [
    ('{"outcome_type":"consumed"}', InputTerminalOutcome.consumed()),
    (
        '{"outcome_type":"superseded","superseded_by":"01900000-0000-7000-8000-000000000099"}',
        InputTerminalOutcome.superseded(iid("99")),
    ),
    (
        '{"outcome_type":"coalesced","aggregate_id":"01900000-0000-7000-8000-000000000098"}',
        InputTerminalOutcome.coalesced(iid("98")),
    ),
    (
        '{"outcome_type":"abandoned","reason":"retired"}',
        InputTerminalOutcome.abandoned(InputAbandonReason.retired()),
    ),
    (
        '{"outcome_type":"abandoned","reason":"reset"}',
        InputTerminalOutcome.abandoned(InputAbandonReason.reset()),
    ),
    (
        '{"outcome_type":"abandoned","reason":"stopped"}',
        InputTerminalOutcome.abandoned(InputAbandonReason.stopped()),
    ),
    (
        '{"outcome_type":"abandoned","reason":"destroyed"}',
        InputTerminalOutcome.abandoned(InputAbandonReason.destroyed()),
    ),
    (
        '{"outcome_type":"abandoned","reason":"cancelled"}',
        InputTerminalOutcome.abandoned(InputAbandonReason.cancelled()),
    ),
    (
        '{"outcome_type":"abandoned","reason":{"max_attempts_exhausted":{"attempts":3}}}',
        InputTerminalOutcome.abandoned(InputAbandonReason.max_attempts_exhausted(3)),
    ),
]


@pytest.mark.parametrize(("text", "expected"), TERMINAL_OUTCOMES)
def test_golden_terminal_outcome(text: str, expected: InputTerminalOutcome) -> None:
    assert loads_json(InputTerminalOutcome, text) == expected
    assert dumps_json(expected) == text.encode()


@pytest.mark.parametrize(("text", "expected"), TERMINAL_OUTCOMES)
def test_golden_terminal_outcome_in_a_row(text: str, expected: InputTerminalOutcome) -> None:
    # In the terminal phase of the outcome's kind (a seed's phase and outcome agree).
    phase = InputLifecycleState(expected.kind)
    row = (
        '{"input_id":"01900000-0000-7000-8000-000000000007",'
        f'"current_state":"{phase.value}",'
        f'"terminal_outcome":{text},"attempt_count":2,"recovery_count":0,'
        '"created_at":"2025-03-01T12:00:00Z","updated_at":"2025-03-01T12:00:00.010Z"}'
    )
    value = StoredInputState(
        InputState(iid("7"), utc(2025, 3, 1, 12), utc(2025, 3, 1, 12, 0, 0, 10000)),
        InputStateSeed(phase, terminal_outcome=expected, attempt_count=2),
    )
    assert loads_json(StoredInputState, row) == value
    assert dumps_json(value) == row.encode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"retired"', InputAbandonReason.retired()),
        ('"reset"', InputAbandonReason.reset()),
        ('"stopped"', InputAbandonReason.stopped()),
        ('"destroyed"', InputAbandonReason.destroyed()),
        ('"cancelled"', InputAbandonReason.cancelled()),
        ('{"max_attempts_exhausted":{"attempts":0}}', InputAbandonReason.max_attempts_exhausted(0)),
    ],
)
def test_golden_abandon_reason(text: str, expected: InputAbandonReason) -> None:
    assert loads_json(InputAbandonReason, text) == expected
    assert dumps_json(expected) == text.encode()


def test_abandon_unit_variant_as_map_with_null_is_read() -> None:
    # serde_json accepts {"retired": null} for a unit variant.
    assert loads_json(InputAbandonReason, '{"retired":null}') == InputAbandonReason.retired()


@pytest.mark.parametrize("state", list(RuntimeState))
def test_golden_runtime_state_is_a_bare_string(state: RuntimeState) -> None:
    text = f'"{state.value}"'.encode()
    assert dumps_json(state) == text
    assert loads_json(RuntimeState, text) is state
    assert to_plain(state) == state.value
    assert from_plain(RuntimeState, state.value) is state


def test_runtime_state_wire_strings() -> None:
    assert [to_json(state) for state in RuntimeState] == [
        "initializing",
        "idle",
        "attached",
        "running",
        "retired",
        "stopped",
        "destroyed",
    ]


def test_golden_lifecycle_commit() -> None:
    commit = machine_transition(RuntimeState.INITIALIZING, RuntimeState.IDLE)
    assert dumps_json(commit) == b'{"runtime_state":"idle"}'
    assert loads_json(MachineLifecycleCommit, b'{"runtime_state":"idle"}') == commit
    assert to_plain(commit) == {"runtime_state": "idle"}
    assert from_plain(MachineLifecycleCommit, {"runtime_state": "idle"}) == commit


def test_golden_session_delta_is_a_byte_array() -> None:
    delta = SessionDelta(b'{"id":1}\x00\xff')
    text = b'{"session_snapshot":[123,34,105,100,34,58,49,125,0,255]}'
    assert dumps_json(delta) == text
    assert loads_json(SessionDelta, text) == delta
    assert to_plain(delta) == {"session_snapshot": b'{"id":1}\x00\xff'}


def test_golden_ops_snapshot_writes_null_payloads() -> None:
    snapshot = PersistedOpsSnapshot(epoch_id="e1")
    text = (
        b'{"epoch_id":"e1","authority_state":null,"operation_specs":null,'
        b'"completion_entries":null,"cursors":null}'
    )
    assert dumps_json(snapshot) == text
    assert loads_json(PersistedOpsSnapshot, text) == snapshot
    assert loads_json(PersistedOpsSnapshot, b'{"epoch_id":"e1"}') == snapshot


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (iid("1"), b'"01900000-0000-7000-8000-000000000001"'),
        (RUN_A1, b'"01900000-0000-7000-8000-0000000000a1"'),
        (
            SessionId(uuid.UUID("01900000-0000-7000-8000-0000000000F1")),
            b'"01900000-0000-7000-8000-0000000000f1"',
        ),
        (LogicalRuntimeId("rt-ü"), '"rt-ü"'.encode()),
        (RunApplyBoundary.IMMEDIATE, b'"immediate"'),
        (InputLifecycleState.APPLIED_PENDING_CONSUMPTION, b'"applied_pending_consumption"'),
        (InputDurability.DERIVED, b'"derived"'),
    ],
)
def test_golden_ids_and_enums(value: Any, text: bytes) -> None:
    assert dumps_json(value) == text
    assert loads_json(type(value), text) == value


def test_input_state_and_seed_encode_as_their_part_of_the_row() -> None:
    state_doc = to_json(FULL_ROW.state)
    seed_doc = to_json(FULL_ROW.seed)
    row = to_json(FULL_ROW)
    assert list(seed_doc) == [
        "current_state",
        "terminal_outcome",
        "attempt_count",
        "last_run_id",
        "last_boundary_sequence",
    ]
    assert list(state_doc) == [key for key in row if key not in seed_doc]
    assert {**state_doc, **seed_doc} == row
    assert from_json(InputState, state_doc) == FULL_ROW.state
    assert from_json(InputStateSeed, seed_doc) == FULL_ROW.seed
    assert to_json(InputStateSeed()) == {"current_state": "accepted", "attempt_count": 0}


def test_history_entry_json() -> None:
    entry = InputStateHistoryEntry(
        utc(2025, 3, 1, 12, 0, 1, 200000), InputLifecycleState.QUEUED, InputLifecycleState.STAGED
    )
    text = b'{"timestamp":"2025-03-01T12:00:01.200Z","from":"queued","to":"staged"}'
    assert dumps_json(entry) == text
    assert loads_json(InputStateHistoryEntry, text) == entry


# --- timestamps -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (utc(2025, 3, 1, 12, 0, 0), "2025-03-01T12:00:00Z"),
        (utc(2025, 3, 1, 12, 0, 0, 120000), "2025-03-01T12:00:00.120Z"),
        (utc(2025, 3, 1, 12, 0, 0, 1000), "2025-03-01T12:00:00.001Z"),
        (utc(2025, 3, 1, 12, 0, 0, 123), "2025-03-01T12:00:00.000123Z"),
        (utc(2025, 3, 1, 12, 0, 0, 120001), "2025-03-01T12:00:00.120001Z"),
        (utc(5, 1, 2, 3, 4, 5), "0005-01-02T03:04:05Z"),
        (utc(9999, 12, 31, 23, 59, 59, 999999), "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_timestamp_is_written_like_chrono_autosi(value: datetime, text: str) -> None:
    entry = InputStateHistoryEntry(value, InputLifecycleState.QUEUED, InputLifecycleState.STAGED)
    assert to_json(entry)["timestamp"] == text
    decoded = from_json(InputStateHistoryEntry, to_json(entry))
    assert decoded.timestamp == value


def _entry_at(text: str) -> dict[str, Any]:
    return {"timestamp": text, "from": "queued", "to": "staged"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T12:00:00.123456789Z", utc(2025, 3, 1, 12, 0, 0, 123456)),
        ("2025-03-01T12:00:00.999999999Z", utc(2025, 3, 1, 12, 0, 0, 999999)),
        ("2025-03-01T12:00:00.1234567Z", utc(2025, 3, 1, 12, 0, 0, 123456)),
        ("2025-03-01T12:00:00.5Z", utc(2025, 3, 1, 12, 0, 0, 500000)),
        ("2025-03-01T12:00:00.000000001Z", utc(2025, 3, 1, 12, 0, 0)),
        ("2025-03-01T14:00:00.5+02:00", utc(2025, 3, 1, 12, 0, 0, 500000)),
        ("2025-03-01T06:30:00-05:30", utc(2025, 3, 1, 12, 0, 0)),
        ("2025-03-01T00:30:00+01:00", utc(2025, 2, 28, 23, 30, 0)),
        ("2025-03-01T12:00:00+00:00", utc(2025, 3, 1, 12, 0, 0)),
        ("2025-03-01T12:00:00-00:00", utc(2025, 3, 1, 12, 0, 0)),
        ("2025-03-01t12:00:00z", utc(2025, 3, 1, 12, 0, 0)),
        ("2025-03-01 12:00:00Z", utc(2025, 3, 1, 12, 0, 0)),
    ],
)
def test_timestamp_decoding(text: str, expected: datetime) -> None:
    entry = from_json(InputStateHistoryEntry, _entry_at(text))
    assert entry.timestamp == expected
    assert entry.timestamp.tzinfo is UTC


def test_nine_digit_fraction_is_truncated_and_rewritten_with_six() -> None:
    entry = loads_json(
        InputStateHistoryEntry,
        '{"timestamp":"2025-03-01T12:00:00.100000001Z","from":"accepted","to":"queued"}',
    )
    assert entry.timestamp == utc(2025, 3, 1, 12, 0, 0, 100000)
    assert to_json(entry)["timestamp"] == "2025-03-01T12:00:00.100Z"


@pytest.mark.parametrize(
    "text",
    [
        "2025-03-01T12:00:00",  # no offset
        "2025-03-01T12:00Z",  # no seconds
        "2025-03-01T12:00:00.Z",  # empty fraction
        "2025-3-01T12:00:00Z",
        "2025-02-30T12:00:00Z",  # no such day
        "2025-03-01T24:00:00Z",
        "2016-12-31T23:59:60Z",  # leap second: not representable
        "2025-03-01T12:00:00+24:00",
        "2025-03-01T12:00:00+0200",
        "0001-01-01T00:00:00+01:00",  # before year 1 in UTC
        "\uff12\uff10\uff12\uff15-03-01T12:00:00Z",  # fullwidth digits
        " 2025-03-01T12:00:00Z",
    ],
)
def test_bad_timestamps_are_rejected(text: str) -> None:
    with pytest.raises(CodecError) as info:
        from_json(InputStateHistoryEntry, _entry_at(text))
    assert str(info.value).startswith(
        f"InputStateHistoryEntry.timestamp: not an RFC 3339 timestamp: {text!r}"
    )


@given(
    instant=st.datetimes(
        min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC)
    ),
    offset_minutes=st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    extra_digits=st.text(alphabet="0123456789", max_size=6),
)
def test_any_offset_and_extra_digits_decode_to_the_instant(
    instant: datetime, offset_minutes: int, extra_digits: str
) -> None:
    local = instant.astimezone(timezone(timedelta(minutes=offset_minutes)))
    sign = "-" if offset_minutes < 0 else "+"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = (
        f"{local.year:04d}-{local.month:02d}-{local.day:02d}T{local.hour:02d}:"
        f"{local.minute:02d}:{local.second:02d}.{local.microsecond:06d}{extra_digits}"
        f"{sign}{hours:02d}:{minutes:02d}"
    )
    assert from_json(InputStateHistoryEntry, _entry_at(text)).timestamp == instant


# --- leniency as serde's --------------------------------------------------------


def test_u64_max_sequence_round_trips() -> None:
    receipt = RunBoundaryReceipt(RUN_A1, RunApplyBoundary.IMMEDIATE, (), None, U64_MAX, U64_MAX)
    data = dumps_json(receipt)
    assert data.endswith(b'"message_count":18446744073709551615,"sequence":18446744073709551615}')
    assert loads_json(RunBoundaryReceipt, data) == receipt
    assert from_plain(RunBoundaryReceipt, cbor2.loads(cbor2.dumps(to_plain(receipt)))) == receipt


def test_unknown_keys_are_ignored_in_json() -> None:
    doc = json.loads(golden("input_state_full.json"))
    doc["stored_input_state_version"] = 3
    doc["history"][0]["detail"] = {"x": 1}
    doc["terminal_outcome"]["note"] = "extra"
    doc["terminal_outcome"]["reason"]["max_attempts_exhausted"]["limit"] = 3
    assert from_json(StoredInputState, doc) == FULL_ROW
    receipt = json.loads(golden("receipt_with_digest.json"))
    receipt["owner_contributions"] = []
    assert from_json(RunBoundaryReceipt, receipt) == RECEIPT_WITH_DIGEST


def test_tag_may_come_anywhere_in_the_outcome_object() -> None:
    text = '{"superseded_by":"01900000-0000-7000-8000-000000000099","outcome_type":"superseded"}'
    assert loads_json(InputTerminalOutcome, text) == InputTerminalOutcome.superseded(iid("99"))


def test_missing_defaulted_and_optional_keys_give_defaults() -> None:
    text = (
        '{"input_id":"01900000-0000-7000-8000-000000000005","current_state":"queued",'
        '"created_at":"2025-03-01T12:00:00Z","updated_at":"2025-03-01T12:00:00Z"}'
    )
    value = loads_json(StoredInputState, text)
    assert value == StoredInputState(
        InputState(iid("5"), utc(2025, 3, 1, 12), utc(2025, 3, 1, 12)),
        InputStateSeed(InputLifecycleState.QUEUED),
    )
    assert value.seed.attempt_count == 0
    assert value.state.recovery_count == 0
    assert value.state.history == ()


def test_explicit_nulls_for_options_give_none() -> None:
    doc = {
        "input_id": "01900000-0000-7000-8000-000000000005",
        "current_state": "accepted",
        "policy": None,
        "runtime_semantics": None,
        "terminal_outcome": None,
        "durability": None,
        "idempotency_key": None,
        "reconstruction_source": None,
        "persisted_input": None,
        "last_run_id": None,
        "last_boundary_sequence": None,
        "attempt_count": 0,
        "recovery_count": 0,
        "history": [{"timestamp": "2025-03-01T12:00:00Z", "from": "accepted", "to": "queued",
                     "reason": None}],
        "created_at": "2025-03-01T12:00:00.123456Z",
        "updated_at": "2025-03-01T12:00:00.123456Z",
    }  # fmt: skip
    value = from_json(StoredInputState, doc)
    assert value == StoredInputState(
        InputState(
            iid("5"),
            utc(2025, 3, 1, 12, 0, 0, 123456),
            utc(2025, 3, 1, 12, 0, 0, 123456),
            history=(
                InputStateHistoryEntry(
                    utc(2025, 3, 1, 12), InputLifecycleState.ACCEPTED, InputLifecycleState.QUEUED
                ),
            ),
        )
    )
    receipt = json.loads(golden("receipt_without_digest.json"))
    receipt["conversation_digest"] = None
    assert from_json(RunBoundaryReceipt, receipt) == RECEIPT_WITHOUT_DIGEST


@pytest.mark.parametrize(
    "text",
    [
        '"01900000-0000-7000-8000-0000000000A1"',
        '"019000000000700080000000000000a1"',
        '"{01900000-0000-7000-8000-0000000000a1}"',
        '"urn:uuid:01900000-0000-7000-8000-0000000000a1"',
    ],
)
def test_other_uuid_text_forms_are_read(text: str) -> None:
    # The forms Rust's uuid crate parses; the canonical form is written back.
    value = loads_json(RunId, text)
    assert value == RUN_A1
    assert dumps_json(value) == b'"01900000-0000-7000-8000-0000000000a1"'


# --- JSON decoding errors ---------------------------------------------------------


def _full_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(golden("input_state_full.json"))
    return doc


def _receipt_doc() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(golden("receipt_with_digest.json"))
    return doc


def _error(cls: type, doc: Any) -> str:
    with pytest.raises(CodecError) as info:
        from_json(cls, doc)
    return str(info.value)


def test_history_null_is_an_error() -> None:
    doc = _full_doc()
    doc["history"] = None
    assert _error(StoredInputState, doc) == "StoredInputState.history: expected array, got null"


def test_attempt_count_null_is_an_error() -> None:
    doc = _full_doc()
    doc["attempt_count"] = None
    assert _error(StoredInputState, doc) == (
        "StoredInputState.attempt_count: expected integer in [0, 2**64-1], got null"
    )


def test_bad_history_timestamp_names_the_path() -> None:
    doc = _full_doc()
    doc["history"][2]["timestamp"] = 1740830400
    assert _error(StoredInputState, doc) == (
        "StoredInputState.history[2].timestamp: expected RFC 3339 string, got int"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "not-a-uuid",
        "01900000-0000-7000-8000-0000000000a",
        "01900000-0000-7000-8000-0000000000ag",
        "0190000-00000-7000-8000-0000000000a1",
        "01900000_0000_7000_8000_0000000000a1",
        " 01900000-0000-7000-8000-0000000000a1",
        "{019000000000700080000000000000a1}",
        "urn:uuid:019000000000700080000000000000a1",
        "URN:UUID:01900000-0000-7000-8000-0000000000a1",
        "",
    ],
)
def test_bad_uuid_is_an_error(bad: str) -> None:
    doc = _full_doc()
    doc["input_id"] = bad
    assert _error(StoredInputState, doc) == f"StoredInputState.input_id: not a UUID: {bad!r}"


def test_bad_uuid_in_a_list_names_the_index() -> None:
    doc = _receipt_doc()
    doc["contributing_input_ids"][1] = "nope"
    assert _error(RunBoundaryReceipt, doc) == (
        "RunBoundaryReceipt.contributing_input_ids[1]: not a UUID: 'nope'"
    )
    doc["contributing_input_ids"][1] = 7
    assert _error(RunBoundaryReceipt, doc) == (
        "RunBoundaryReceipt.contributing_input_ids[1]: expected UUID string, got int"
    )


def test_unknown_enum_string_is_an_error() -> None:
    doc = _full_doc()
    doc["current_state"] = "recovering"
    assert _error(StoredInputState, doc) == (
        "StoredInputState.current_state: unknown InputLifecycleState 'recovering' (expected"
        " one of: accepted, queued, staged, applied, applied_pending_consumption, consumed,"
        " superseded, coalesced, abandoned)"
    )
    with pytest.raises(CodecError) as info:
        loads_json(RuntimeState, b'"recovering"')
    assert str(info.value) == (
        "RuntimeState: unknown RuntimeState 'recovering' (expected one of: initializing, idle,"
        " attached, running, retired, stopped, destroyed)"
    )
    doc = _full_doc()
    doc["history"][1]["to"] = "Staged"
    assert _error(StoredInputState, doc).startswith(
        "StoredInputState.history[1].to: unknown InputLifecycleState 'Staged'"
    )


def test_wrong_outcome_type_is_an_error() -> None:
    doc = _full_doc()
    doc["terminal_outcome"] = {"outcome_type": "expired"}
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.outcome_type: unknown InputTerminalOutcome variant"
        " 'expired' (expected one of: consumed, superseded, coalesced, abandoned)"
    )
    doc["terminal_outcome"] = {"superseded_by": "01900000-0000-7000-8000-000000000099"}
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.outcome_type: missing required key"
    )
    doc["terminal_outcome"] = {"outcome_type": 1}
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.outcome_type: expected string, got int"
    )
    doc["terminal_outcome"] = {"outcome_type": "superseded"}
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.superseded_by: missing required key"
    )


def test_bad_abandon_reason_is_an_error() -> None:
    doc = _full_doc()
    outcome = doc["terminal_outcome"]
    outcome["reason"] = "expired"
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.reason: unknown InputAbandonReason variant 'expired'"
        " (expected one of: retired, reset, stopped, destroyed, cancelled,"
        " max_attempts_exhausted)"
    )
    outcome["reason"] = "max_attempts_exhausted"
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.reason: InputAbandonReason variant"
        " 'max_attempts_exhausted' needs its fields"
    )
    outcome["reason"] = {"max_attempts_exhausted": {"attempts": -3}}
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.reason.max_attempts_exhausted.attempts:"
        " expected integer in [0, 2**64-1], got -3"
    )
    outcome["reason"] = {"retired": None, "reset": None}
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.reason: expected string or one-key object,"
        " got object with 2 keys"
    )
    outcome["reason"] = {"retired": {}}
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.reason.retired: unit variant takes no fields, got dict"
    )
    outcome["reason"] = None
    assert _error(StoredInputState, doc) == (
        "StoredInputState.terminal_outcome.reason: expected string or one-key object, got null"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sequence", -1, "expected integer in [0, 2**64-1], got -1"),
        ("sequence", 2**64, "expected integer in [0, 2**64-1], got 18446744073709551616"),
        ("sequence", 1.0, "expected integer in [0, 2**64-1], got float"),
        ("message_count", True, "expected integer in [0, 2**64-1], got bool"),
        ("message_count", "4", "expected integer in [0, 2**64-1], got str"),
        ("boundary", 1, "expected RunApplyBoundary string, got int"),
        ("conversation_digest", 5, "expected string, got int"),
        ("contributing_input_ids", {}, "expected array, got dict"),
        ("run_id", None, "expected UUID string, got null"),
    ],
)
def test_receipt_leaf_errors(key: str, value: Any, message: str) -> None:
    doc = _receipt_doc()
    doc[key] = value
    assert _error(RunBoundaryReceipt, doc) == f"RunBoundaryReceipt.{key}: {message}"


@pytest.mark.parametrize(
    "key", ["run_id", "boundary", "contributing_input_ids", "message_count", "sequence"]
)
def test_receipt_required_keys(key: str) -> None:
    doc = _receipt_doc()
    del doc[key]
    assert _error(RunBoundaryReceipt, doc) == f"RunBoundaryReceipt.{key}: missing required key"


@pytest.mark.parametrize("key", ["input_id", "current_state", "created_at", "updated_at"])
def test_row_required_keys(key: str) -> None:
    doc = _full_doc()
    del doc[key]
    assert _error(StoredInputState, doc) == f"StoredInputState.{key}: missing required key"


def test_top_level_shape_errors() -> None:
    assert _error(StoredInputState, []) == "StoredInputState: expected object, got list"
    assert _error(RunId, 5) == "RunId: expected UUID string, got int"
    assert _error(SessionDelta, {"session_snapshot": "abc"}) == (
        "SessionDelta.session_snapshot: expected array of byte values, got str"
    )
    assert _error(SessionDelta, {"session_snapshot": [1, 256]}) == (
        "SessionDelta.session_snapshot[1]: expected integer in [0, 255], got 256"
    )
    assert _error(SessionDelta, {"session_snapshot": [1, 2, True]}) == (
        "SessionDelta.session_snapshot[2]: expected integer in [0, 255], got bool"
    )
    assert _error(MachineLifecycleCommit, {}) == (
        "MachineLifecycleCommit.runtime_state: missing required key"
    )
    assert _error(PersistedOpsSnapshot, {"epoch_id": None}) == (
        "PersistedOpsSnapshot.epoch_id: expected string, got null"
    )


def test_constructor_errors_are_chained() -> None:
    with pytest.raises(CodecError) as info:
        from_json(LogicalRuntimeId, "")
    assert str(info.value) == "LogicalRuntimeId: LogicalRuntimeId value must be a non-empty string"
    assert isinstance(info.value.__cause__, ValueError)
    assert not isinstance(info.value.__cause__, CodecError)

    doc = _full_doc()
    doc["policy"]["decision"]["policy_version"] = 2**70
    with pytest.raises(CodecError) as info:
        from_json(StoredInputState, doc)
    assert str(info.value) == (
        "StoredInputState: policy.decision.policy_version: integer 1180591620717411303424"
        " is outside [-2**63, 2**64-1]"
    )
    assert type(info.value.__cause__) is ValueError


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_loads_json_errors() -> None:
    with pytest.raises(CodecError, match=r"^RunBoundaryReceipt: not valid JSON: "):
        loads_json(RunBoundaryReceipt, b'{"run_id":')
    with pytest.raises(CodecError, match=r"^RunId: JSON is not valid UTF-8: "):
        loads_json(RunId, b'"\xff"')
    with pytest.raises(CodecError, match=r"^PersistedOpsSnapshot: not valid JSON: NaN is not"):
        loads_json(PersistedOpsSnapshot, b'{"epoch_id":"e","cursors":NaN}')
    with pytest.raises(TypeError, match=r"^loads_json\(\) takes bytes or str, got dict$"):
        loads_json(RunId, {})  # type: ignore[arg-type]


def test_unsupported_types() -> None:
    with pytest.raises(TypeError, match=r"^to_json\(\) cannot encode object$"):
        to_json(object())
    with pytest.raises(TypeError, match=r"^to_plain\(\) cannot encode dict$"):
        to_plain({})
    with pytest.raises(TypeError, match=r"^from_json\(\) cannot decode <class 'dict'>"):
        from_json(dict, {})
    with pytest.raises(TypeError, match=r"^from_plain\(\) cannot decode 'StoredInputState'"):
        from_plain("StoredInputState", {})  # type: ignore[arg-type]


def test_a_lone_surrogate_cannot_reach_the_codec() -> None:
    # UTF-8 (JSON, CBOR) cannot hold one, so the constructors refuse it.
    with pytest.raises(ValueError, match=r"^conversation_digest must be valid Unicode text"):
        RunBoundaryReceipt(RUN_A1, RunApplyBoundary.IMMEDIATE, (), "\ud800", 0, 0)
    with pytest.raises(CodecError, match=r"conversation_digest must be valid Unicode text"):
        from_plain(
            RunBoundaryReceipt,
            {
                "run_id": RUN_A1.value.bytes,
                "boundary": "immediate",
                "contributing_input_ids": [],
                "conversation_digest": "\ud800",
                "message_count": 0,
                "sequence": 0,
            },
        )


# --- plain (CBOR) codec -------------------------------------------------------------


def _micros(value: datetime) -> int:
    return (value - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def test_plain_is_the_json_shape_with_other_leaves() -> None:
    assert to_plain(FULL_ROW) == {
        "input_id": iid("1").value.bytes,
        "current_state": "abandoned",
        "policy": json.loads(golden("input_state_full.json"))["policy"],
        "runtime_semantics": {
            "boundary": "run_start",
            "execution_kind": "content_turn",
            "peer_response_terminal_apply_intent": None,
        },
        "terminal_outcome": {
            "outcome_type": "abandoned",
            "reason": {"max_attempts_exhausted": {"attempts": 3}},
        },
        "durability": "durable",
        "idempotency_key": "req-abc-123",
        "attempt_count": 3,
        "recovery_count": 1,
        "history": [
            {"timestamp": 1740830400100001, "from": "accepted", "to": "queued",
             "reason": "QueueAccepted"},
            {"timestamp": 1740830401200000, "from": "queued", "to": "staged"},
            {"timestamp": 1740830402000000, "from": "staged", "to": "abandoned",
             "reason": "max attempts"},
        ],
        "reconstruction_source": json.loads(golden("input_state_full.json"))[
            "reconstruction_source"
        ],
        "persisted_input": json.loads(golden("input_state_full.json"))["persisted_input"],
        "last_run_id": RUN_A1.value.bytes,
        "last_boundary_sequence": 0,
        "created_at": 1740830400000123,
        "updated_at": 1740830402000654,
    }  # fmt: skip
    assert list(to_plain(FULL_ROW)) == list(to_json(FULL_ROW))
    assert _micros(utc(2025, 3, 1, 12, 0, 0, 123)) == 1740830400000123


def test_plain_receipt() -> None:
    assert to_plain(RECEIPT_WITHOUT_DIGEST) == {
        "run_id": b"\x01\x90" + b"\x00" * 4 + b"\x70\x00\x80\x00" + b"\x00" * 5 + b"\xa1",
        "boundary": "run_checkpoint",
        "contributing_input_ids": [],
        "message_count": 0,
        "sequence": 1,
    }


def test_plain_timestamps_before_the_epoch() -> None:
    entry = InputStateHistoryEntry(
        utc(1, 1, 1), InputLifecycleState.ACCEPTED, InputLifecycleState.QUEUED
    )
    plain = to_plain(entry)
    assert plain["timestamp"] == -62135596800000000
    assert from_plain(InputStateHistoryEntry, plain) == entry


GOLDEN_VALUES = [
    RECEIPT_WITH_DIGEST,
    RECEIPT_WITHOUT_DIGEST,
    FULL_ROW,
    FULL_ROW.state,
    FULL_ROW.seed,
    FULL_ROW.state.history[0],
    CONSUMED_ROW,
    SUPERSEDED_ROW,
    COALESCED_ROW,
    NEW_ACCEPTED_ROW,
    OPS_SNAPSHOT,
    PersistedOpsSnapshot(epoch_id=""),
    SessionDelta(b""),
    SessionDelta(bytes(range(256))),
    machine_transition(RuntimeState.RUNNING, RuntimeState.RETIRED),
    InputAbandonReason.max_attempts_exhausted(2**32 - 1),
    InputTerminalOutcome.coalesced(iid("1")),
    RuntimeState.DESTROYED,
    InputDurability.EPHEMERAL,
    iid("1"),
    SessionId(uuid.UUID(int=0)),
    LogicalRuntimeId("rt"),
]


@pytest.mark.parametrize("value", GOLDEN_VALUES, ids=lambda value: type(value).__name__)
def test_plain_round_trips_through_cbor(value: Any) -> None:
    plain = to_plain(value)
    walk_plain(plain)
    assert from_plain(type(value), plain) == value
    assert from_plain(type(value), cbor2.loads(cbor2.dumps(plain))) == value


@pytest.mark.parametrize("value", GOLDEN_VALUES, ids=lambda value: type(value).__name__)
def test_json_round_trips(value: Any) -> None:
    assert loads_json(type(value), dumps_json(value)) == value
    assert from_json(type(value), to_json(value)) == value


def _plain_error(cls: type, data: Any) -> str:
    with pytest.raises(CodecError) as info:
        from_plain(cls, data)
    return str(info.value)


def test_plain_rejects_unknown_keys() -> None:
    plain = to_plain(FULL_ROW)
    plain["extra"] = 1
    assert _plain_error(StoredInputState, plain) == "StoredInputState: unknown key 'extra'"
    plain = to_plain(FULL_ROW)
    plain["history"][1]["detail"] = None
    assert _plain_error(StoredInputState, plain) == (
        "StoredInputState.history[1]: unknown key 'detail'"
    )
    plain = to_plain(FULL_ROW)
    plain["terminal_outcome"]["note"] = "x"
    assert _plain_error(StoredInputState, plain) == (
        "StoredInputState.terminal_outcome: unknown key 'note'"
    )
    plain = to_plain(FULL_ROW)
    plain["terminal_outcome"]["reason"]["max_attempts_exhausted"][1] = 2
    assert _plain_error(StoredInputState, plain) == (
        "StoredInputState.terminal_outcome.reason.max_attempts_exhausted: unknown key 1"
    )
    plain = to_plain(FULL_ROW.seed)
    plain["input_id"] = b"\x00" * 16  # a shell key is unknown to the seed alone
    assert _plain_error(InputStateSeed, plain) == "InputStateSeed: unknown key 'input_id'"
    # The same documents are fine as JSON, where serde ignores unknown keys.
    doc = to_json(FULL_ROW)
    doc["extra"] = 1
    assert from_json(StoredInputState, doc) == FULL_ROW


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("input_id", "01900000-0000-7000-8000-000000000001",
         "expected 16-byte UUID bytes, got str"),
        ("input_id", b"\x00" * 15, "expected 16-byte UUID bytes, got 15 bytes"),
        ("input_id", bytearray(16), "expected 16-byte UUID bytes, got bytearray"),
        ("last_run_id", [0] * 16, "expected 16-byte UUID bytes, got list"),
        ("created_at", "2025-03-01T12:00:00Z",
         "expected integer microseconds since the Unix epoch, got str"),
        ("created_at", 1.5, "expected integer microseconds since the Unix epoch, got float"),
        ("created_at", True, "expected integer microseconds since the Unix epoch, got bool"),
        ("created_at", 2**62, "timestamp 4611686018427387904 microseconds is out of range"),
        ("attempt_count", -1, "expected integer in [0, 2**64-1], got -1"),
        ("current_state", b"accepted", "expected InputLifecycleState string, got bytes"),
        ("history", (), "expected array, got tuple"),
    ],
)  # fmt: skip
def test_plain_rejects_wrong_leaf_types(key: str, value: Any, message: str) -> None:
    plain = to_plain(FULL_ROW)
    plain[key] = value
    assert _plain_error(StoredInputState, plain) == f"StoredInputState.{key}: {message}"


def test_plain_bytes_and_documents() -> None:
    assert _plain_error(SessionDelta, {"session_snapshot": [1, 2]}) == (
        "SessionDelta.session_snapshot: expected bytes, got list"
    )
    plain = to_plain(OPS_SNAPSHOT)
    plain["cursors"] = {"blob": b"\x00"}
    with pytest.raises(CodecError) as info:
        from_plain(PersistedOpsSnapshot, plain)
    assert str(info.value) == "PersistedOpsSnapshot: cursors.blob: bytes is not a JSON value"
    assert type(info.value.__cause__) is TypeError
    plain["cursors"] = {1: "x"}
    assert _plain_error(PersistedOpsSnapshot, plain) == (
        "PersistedOpsSnapshot: cursors: JSON object keys must be str, got int"
    )


def test_plain_opaque_documents_are_thawed() -> None:
    plain = to_plain(OPS_SNAPSHOT)
    walk_plain(plain)
    assert plain["completion_entries"] == [
        {
            "seq": 1,
            "operation_id": _COMPLETED_C1,
            "kind": "background_tool_op",
            "display_name": "shell: make test",
            "terminal_outcome": {"outcome_type": "failed", "error": "boom"},
            "completed_at_ms": 1740830400000,
        }
    ]
    assert from_plain(PersistedOpsSnapshot, plain).cursors == pmap(
        {"agent_applied_cursor": 1, "runtime_observed_seq": 1, "runtime_last_injected_seq": 0}
    )


# --- properties -------------------------------------------------------------------------

STRATEGIES = [
    ("receipts", ms.receipts()),
    ("abandon_reasons", ms.abandon_reasons()),
    ("terminal_outcomes", ms.terminal_outcomes()),
    ("history_entries", ms.history_entries()),
    ("input_state_seeds", ms.input_state_seeds()),
    ("input_states", ms.input_states()),
    ("stored_input_states", ms.stored_input_states()),
    ("session_deltas", ms.session_deltas()),
    ("ops_snapshots", ms.ops_snapshots()),
    ("lifecycle_commits", ms.lifecycle_commits()),
    ("runtime_states", ms.runtime_states()),
    ("run_apply_boundaries", ms.run_apply_boundaries()),
    ("input_lifecycle_states", ms.input_lifecycle_states()),
    ("input_durabilities", ms.input_durabilities()),
    ("runtime_ids", ms.runtime_ids()),
    ("run_ids", ms.run_ids()),
    ("input_ids", ms.input_ids()),
    ("session_ids", ms.session_ids()),
]


@pytest.mark.parametrize("strategy", [s for _, s in STRATEGIES], ids=[n for n, _ in STRATEGIES])
@given(data=st.data())
def test_plain_round_trip_property(strategy: st.SearchStrategy[Any], data: st.DataObject) -> None:
    value = data.draw(strategy)
    plain = to_plain(value)
    walk_plain(plain)
    assert from_plain(type(value), plain) == value
    assert from_plain(type(value), cbor2.loads(cbor2.dumps(plain))) == value


@pytest.mark.parametrize("strategy", [s for _, s in STRATEGIES], ids=[n for n, _ in STRATEGIES])
@given(data=st.data())
def test_json_round_trip_property(strategy: st.SearchStrategy[Any], data: st.DataObject) -> None:
    value = data.draw(strategy)
    doc = to_json(value)
    assert from_json(type(value), doc) == value
    assert from_json(type(value), json.loads(json.dumps(doc))) == value
    encoded = dumps_json(value)
    assert loads_json(type(value), encoded) == value
    assert loads_json(type(value), encoded.decode()) == value


@given(value=ms.stored_input_states())
def test_plain_and_json_have_the_same_keys(value: StoredInputState) -> None:
    assert list(to_plain(value)) == list(to_json(value))


@given(value=ms.utc_datetimes())
def test_json_timestamp_has_zero_three_or_six_digits(value: datetime) -> None:
    entry = InputStateHistoryEntry(value, InputLifecycleState.QUEUED, InputLifecycleState.STAGED)
    text = to_json(entry)["timestamp"]
    assert text.endswith("Z")
    fraction = text[19:-1]
    assert fraction == "" or (fraction[0] == "." and len(fraction) in (4, 7))
    assert datetime.fromisoformat(text.replace("Z", "+00:00")) == value
