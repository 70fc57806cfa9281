"""Files shared with Meerkat's Rust runtime (SPEC §7, §9).

The Rust side is played by plain `sqlite3`: a database built with the Rust
store's DDL and rows holding hand-written JSON in exactly the shape serde
writes (compact, struct field order, absent optional fields omitted,
nanosecond timestamps). Each test checks one direction:

- read: every load returns the Python values the rows describe;
- write: what we store is, column by column, what the Rust store writes
  (canonical id strings, the two's-complement `sequence`, BLOBs, the bare
  `"idle"`, raw snapshot bytes), byte for byte where the JSON has no opaque
  document whose inner key order may differ;
- schema: the tables we create have the Rust store's columns, and a file
  whose tables Rust created (or that has tables we do not know) opens and is
  left alone.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import _values
import pytest
from _values import input_state

import meerkat_actor as ma
from meerkat_actor.__main__ import main
from meerkat_actor._sqlite_db import Database

GOLDEN = Path(__file__).parent / "golden"

RUNTIME = "rust-runtime"
RT = ma.LogicalRuntimeId(RUNTIME)
OTHER = ma.LogicalRuntimeId("rust-runtime-2")


def iid(n: int) -> ma.InputId:
    return ma.InputId(uuid.UUID(f"01900000-0000-7000-8000-{n:012x}"))


def rid(n: int) -> ma.RunId:
    return ma.RunId(uuid.UUID(f"01900000-0000-7000-8000-{n:012x}"))


RUN_A = rid(0xA1)
RUN_B = rid(0xB2)
SESSION_ID = "01900000-0000-7000-8000-0000000000f1"
SESSION_BYTES = ('{"id":"' + SESSION_ID + '","messages":[],"created_at":"x"}').encode()

# The Rust store's DDL, restated: note the single-column primary keys carry
# no NOT NULL there (SQLite then allows NULL in them); ours add it.
RUST_DDL = """
CREATE TABLE IF NOT EXISTS runtime_input_states (
    runtime_id TEXT NOT NULL, input_id TEXT NOT NULL, state_json BLOB NOT NULL,
    PRIMARY KEY (runtime_id, input_id));
CREATE TABLE IF NOT EXISTS runtime_boundary_receipts (
    runtime_id TEXT NOT NULL, run_id TEXT NOT NULL, sequence INTEGER NOT NULL,
    receipt_json BLOB NOT NULL, PRIMARY KEY (runtime_id, run_id, sequence));
CREATE TABLE IF NOT EXISTS runtime_session_snapshots (
    runtime_id TEXT PRIMARY KEY, session_snapshot BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS runtime_states (
    runtime_id TEXT PRIMARY KEY, runtime_state_json BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS runtime_ops_lifecycle (
    runtime_id TEXT PRIMARY KEY, state_json BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS runtime_auth_oauth_flow_state (
    id TEXT PRIMARY KEY, state_json BLOB NOT NULL);
"""

# (name, declared type, NOT NULL, position in the primary key) per column.
EXPECTED_COLUMNS = {
    "runtime_input_states": [
        ("runtime_id", "TEXT", 1, 1),
        ("input_id", "TEXT", 1, 2),
        ("state_json", "BLOB", 1, 0),
    ],
    "runtime_boundary_receipts": [
        ("runtime_id", "TEXT", 1, 1),
        ("run_id", "TEXT", 1, 2),
        ("sequence", "INTEGER", 1, 3),
        ("receipt_json", "BLOB", 1, 0),
    ],
    "runtime_session_snapshots": [("runtime_id", "TEXT", 1, 1), ("session_snapshot", "BLOB", 1, 0)],
    "runtime_states": [("runtime_id", "TEXT", 1, 1), ("runtime_state_json", "BLOB", 1, 0)],
    "runtime_ops_lifecycle": [("runtime_id", "TEXT", 1, 1), ("state_json", "BLOB", 1, 0)],
    "runtime_auth_oauth_flow_state": [("id", "TEXT", 1, 1), ("state_json", "BLOB", 1, 0)],
}


SINGLE_KEY_TABLES = {
    "runtime_session_snapshots",
    "runtime_states",
    "runtime_ops_lifecycle",
    "runtime_auth_oauth_flow_state",
}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


T0 = utc(2025, 3, 1, 12, 0, 0, 123456)
T1 = utc(2025, 3, 1, 12, 0, 5, 500000)


def shell(input_id: ma.InputId, **fields: object) -> ma.InputState:
    return input_state(input_id, created_at=T0, updated_at=T1, **fields)


def abandoned(reason: ma.InputAbandonReason) -> ma.InputStateSeed:
    return ma.InputStateSeed(
        phase=ma.InputLifecycleState.ABANDONED,
        terminal_outcome=ma.InputTerminalOutcome.abandoned(reason),
    )


def minimal_doc(input_id: ma.InputId, middle: str = "") -> str:
    """A serde row with the required keys and `middle` (already serialized
    optional keys, in their serde position) spliced in."""
    return (
        f'{{"input_id":"{input_id}","current_state":"{{phase}}",{middle}'
        '"attempt_count":0,"recovery_count":0,'
        '"created_at":"2025-03-01T12:00:00.123456Z","updated_at":"2025-03-01T12:00:05.500Z"}'
    )


# --- input states: (JSON exactly as Rust writes it, the value it describes) ----------------

FULL_DOC = (
    '{"input_id":"01900000-0000-7000-8000-000000000001","current_state":"abandoned",'
    '"policy":{"version":1,"decision":{"apply_mode":"stage_run_start","record_transcript":true}},'
    '"runtime_semantics":{"boundary":"run_start","peer_response_terminal_apply_intent":null},'
    '"terminal_outcome":{"outcome_type":"abandoned","reason":{"max_attempts_exhausted":'
    '{"attempts":3}}},"durability":"durable","idempotency_key":"req-abc-123",'
    '"attempt_count":3,"recovery_count":1,"history":['
    '{"timestamp":"2025-03-01T12:00:00.100001Z","from":"accepted","to":"queued",'
    '"reason":"QueueAccepted"},'
    '{"timestamp":"2025-03-01T12:00:01.200Z","from":"queued","to":"abandoned"}],'
    '"reconstruction_source":{"source_type":"coalescing","source_input_ids":'
    '["01900000-0000-7000-8000-000000000010"]},'
    '"persisted_input":{"input_type":"prompt","text":"h\u00e9llo \u2713","n":1.5},'
    '"last_run_id":"01900000-0000-7000-8000-0000000000a1",'
    '"last_boundary_sequence":18446744073709551615,'
    '"created_at":"2025-03-01T12:00:00.123456Z","updated_at":"2025-03-01T12:00:05.500Z"}'
)
FULL = ma.StoredInputState(
    shell(
        iid(1),
        policy={
            "version": 1,
            "decision": {"apply_mode": "stage_run_start", "record_transcript": True},
        },
        runtime_semantics={"boundary": "run_start", "peer_response_terminal_apply_intent": None},
        durability=ma.InputDurability.DURABLE,
        idempotency_key="req-abc-123",
        recovery_count=1,
        history=(
            ma.InputStateHistoryEntry(
                utc(2025, 3, 1, 12, 0, 0, 100001),
                ma.InputLifecycleState.ACCEPTED,
                ma.InputLifecycleState.QUEUED,
                "QueueAccepted",
            ),
            ma.InputStateHistoryEntry(
                utc(2025, 3, 1, 12, 0, 1, 200000),
                ma.InputLifecycleState.QUEUED,
                ma.InputLifecycleState.ABANDONED,
            ),
        ),
        reconstruction_source={
            "source_type": "coalescing",
            "source_input_ids": ["01900000-0000-7000-8000-000000000010"],
        },
        persisted_input={"input_type": "prompt", "text": "h\u00e9llo \u2713", "n": 1.5},
    ),
    ma.InputStateSeed(
        phase=ma.InputLifecycleState.ABANDONED,
        last_run_id=RUN_A,
        last_boundary_sequence=2**64 - 1,
        terminal_outcome=ma.InputTerminalOutcome.abandoned(
            ma.InputAbandonReason.max_attempts_exhausted(3)
        ),
        attempt_count=3,
    ),
)


def _simple_cases() -> list[tuple[str, ma.StoredInputState]]:
    """Rows with no opaque document: our bytes must equal these exactly."""
    phase = ma.InputLifecycleState
    cases = [
        (minimal_doc(iid(2)).replace("{phase}", "accepted"), ma.StoredInputState(shell(iid(2)))),
        (
            minimal_doc(
                iid(3), '"terminal_outcome":{"outcome_type":"consumed"},"durability":"ephemeral",'
            ).replace("{phase}", "consumed"),
            ma.StoredInputState(
                shell(iid(3), durability=ma.InputDurability.EPHEMERAL),
                ma.InputStateSeed(
                    phase=phase.CONSUMED, terminal_outcome=ma.InputTerminalOutcome.consumed()
                ),
            ),
        ),
        (
            minimal_doc(
                iid(4),
                f'"terminal_outcome":{{"outcome_type":"superseded","superseded_by":"{iid(5)}"}},',
            ).replace("{phase}", "superseded"),
            ma.StoredInputState(
                shell(iid(4)),
                ma.InputStateSeed(
                    phase=phase.SUPERSEDED,
                    terminal_outcome=ma.InputTerminalOutcome.superseded(iid(5)),
                ),
            ),
        ),
        (
            minimal_doc(
                iid(6),
                f'"terminal_outcome":{{"outcome_type":"coalesced","aggregate_id":"{iid(7)}"}},'
                '"durability":"derived",',
            ).replace("{phase}", "coalesced"),
            ma.StoredInputState(
                shell(iid(6), durability=ma.InputDurability.DERIVED),
                ma.InputStateSeed(
                    phase=phase.COALESCED,
                    terminal_outcome=ma.InputTerminalOutcome.coalesced(iid(7)),
                ),
            ),
        ),
    ]
    for n, reason in enumerate(["retired", "reset", "stopped", "destroyed", "cancelled"], 8):
        doc = minimal_doc(
            iid(n), f'"terminal_outcome":{{"outcome_type":"abandoned","reason":"{reason}"}},'
        ).replace("{phase}", "abandoned")
        cases.append(
            (doc, ma.StoredInputState(shell(iid(n)), abandoned(ma.InputAbandonReason(reason))))
        )
    # A non-terminal input mid-run: attempts, the last boundary, the key.
    doc = (
        f'{{"input_id":"{iid(13)}","current_state":"staged","idempotency_key":"k-13",'
        '"attempt_count":2,"recovery_count":0,'
        f'"last_run_id":"{RUN_B}","last_boundary_sequence":0,'
        '"created_at":"2025-03-01T12:00:00.123456Z","updated_at":"2025-03-01T12:00:05.500Z"}'
    )
    value = ma.StoredInputState(
        shell(iid(13), idempotency_key="k-13"),
        ma.InputStateSeed(
            phase=phase.STAGED, last_run_id=RUN_B, last_boundary_sequence=0, attempt_count=2
        ),
    )
    cases.append((doc, value))
    return cases


SIMPLE = _simple_cases()

# Rows only Rust writes: nanosecond timestamps (truncated on read), explicit
# nulls (serde reads them as absent), defaulted keys left out, and an id in
# upper case (its column too) that must still sort in UUID order.
NANOS_DOC = (
    f'{{"input_id":"{iid(20)}","current_state":"queued",'
    '"created_at":"2025-03-01T12:00:00.123456789Z","updated_at":"2025-03-01T12:00:05.500000001Z"}'
)
NANOS = ma.StoredInputState(
    ma.InputState(input_id=iid(20), created_at=T0, updated_at=T1),
    ma.InputStateSeed(phase=ma.InputLifecycleState.QUEUED),
)
NULLS_DOC = (
    f'{{"input_id":"{iid(21)}","current_state":"accepted","policy":null,'
    '"terminal_outcome":null,"durability":null,"idempotency_key":null,"attempt_count":0,'
    '"recovery_count":0,"reconstruction_source":null,"persisted_input":null,"last_run_id":null,'
    '"last_boundary_sequence":null,'
    '"created_at":"2025-03-01T12:00:00.123456Z","updated_at":"2025-03-01T12:00:05.500Z"}'
)
NULLS = ma.StoredInputState(shell(iid(21)))
UPPER_ID = "01900000-0000-7000-8000-00000000000E"  # as text before ...0a, as a UUID after ...0d
UPPER_DOC = minimal_doc(iid(14)).replace(str(iid(14)), UPPER_ID).replace("{phase}", "accepted")
UPPER = ma.StoredInputState(shell(iid(14)))

# --- receipts: (run id, sequence column as Rust writes it, JSON, value) -------------------


def receipt_doc(run_id: ma.RunId, boundary: str, ids: list[int], digest: str | None, seq: int):
    inputs = ",".join(f'"{iid(n)}"' for n in ids)
    middle = "" if digest is None else f'"conversation_digest":"{digest}",'
    return (
        f'{{"run_id":"{run_id}","boundary":"{boundary}","contributing_input_ids":[{inputs}],'
        f'{middle}"message_count":4,"sequence":{seq}}}'
    )


def receipt(run_id, boundary, ids, digest, seq) -> ma.RunBoundaryReceipt:
    """The value `receipt_doc` with the same arguments describes."""
    return _values.receipt(
        seq,
        run_id,
        boundary=ma.RunApplyBoundary(boundary),
        contributing_input_ids=tuple(iid(n) for n in ids),
        conversation_digest=digest,
        message_count=4,
    )


RECEIPTS = [
    (RUN_A, "run_start", [1, 2], "9f86d081884c7d659a2f", 0, 0),
    (RUN_A, "run_checkpoint", [], None, 2**63 - 1, 2**63 - 1),
    (RUN_A, "immediate", [3], "d", 2**63, -(2**63)),
    (RUN_A, "run_start", [], None, 2**64 - 1, -1),
    (RUN_B, "immediate", [1], None, 5, 5),
]
# A receipt an older Rust store wrote with its sequence clamped to 2**63-1.
CLAMPED = (RUN_B, "run_checkpoint", [2], "old", 2**63 + 5, 2**63 - 1)

OPS_DOC = (GOLDEN / "ops_snapshot.json").read_text().strip()
OPS_VALUE = ma.PersistedOpsSnapshot(
    **json.loads(OPS_DOC),
)
OAUTH = b'{"flows":{"state-1":{"pkce_verifier":"abc","redirect":"http://localhost"}}}'


def build_rust_file(path: Path) -> None:
    """The database a Rust runtime would leave: its DDL and its rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(RUST_DDL)
    rows = [(FULL_DOC, FULL), *SIMPLE]
    for doc, value in rows:
        db.execute(
            "INSERT INTO runtime_input_states VALUES (?, ?, ?)",
            (RUNTIME, str(value.input_id), doc.encode()),
        )
    for doc, input_id in ((NANOS_DOC, iid(20)), (NULLS_DOC, iid(21)), (UPPER_DOC, UPPER_ID)):
        db.execute(
            "INSERT INTO runtime_input_states VALUES (?, ?, ?)",
            (RUNTIME, str(input_id), doc.encode()),
        )
    for run_id, boundary, ids, digest, seq, column in [*RECEIPTS, CLAMPED]:
        db.execute(
            "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
            (
                RUNTIME,
                str(run_id),
                column,
                receipt_doc(run_id, boundary, ids, digest, seq).encode(),
            ),
        )
    db.execute("INSERT INTO runtime_session_snapshots VALUES (?, ?)", (RUNTIME, SESSION_BYTES))
    # Lenient: TEXT where Rust writes a BLOB.
    db.execute(
        "INSERT INTO runtime_session_snapshots VALUES (?, ?)", (str(OTHER), SESSION_BYTES.decode())
    )
    db.execute("INSERT INTO runtime_states VALUES (?, ?)", (RUNTIME, b'"idle"'))
    db.execute("INSERT INTO runtime_states VALUES (?, ?)", (str(OTHER), '"running"'))
    db.execute("INSERT INTO runtime_ops_lifecycle VALUES (?, ?)", (RUNTIME, OPS_DOC.encode()))
    db.execute(
        "INSERT INTO runtime_auth_oauth_flow_state VALUES ('auth_oauth_flow_state', ?)", (OAUTH,)
    )
    db.close()


@pytest.fixture
def rust_file(tmp_path: Path) -> Path:
    path = tmp_path / "sessions.sqlite3"
    build_rust_file(path)
    return path


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ours.sqlite3"


def table_info(path: Path, table: str) -> list[tuple[str, str, int, int]]:
    db = sqlite3.connect(path)
    try:
        return [(r[1], r[2], r[3], r[5]) for r in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def rows(path: Path, sql: str, *args: object) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


# --- reading what Rust wrote ------------------------------------------------------------------


async def test_input_states_written_by_rust_load_as_their_values(rust_file):
    expected = {value.input_id: value for _, value in [(FULL_DOC, FULL), *SIMPLE]}
    expected[NANOS.input_id] = NANOS
    expected[NULLS.input_id] = NULLS
    async with ma.open_sqlite_store(rust_file) as store:
        loaded = await store.load_input_states(RT)
        for input_id, value in expected.items():
            assert await store.load_input_state(RT, input_id) == value, input_id
        assert await store.load_input_states(OTHER) == []
    expected[UPPER.input_id] = UPPER  # keyed by a non-canonical spelling: listed, not looked up
    assert {s.input_id: s for s in loaded} == expected
    # UUID order, though the upper-case key sorts before ...0a as text.
    assert [s.input_id for s in loaded] == sorted(expected, key=lambda i: i.value.int)


async def test_full_input_state_fields(rust_file):
    async with ma.open_sqlite_store(rust_file) as store:
        full = await store.load_input_state(RT, iid(1))
    assert full.state.policy["decision"]["record_transcript"] is True
    assert full.state.history[1].reason is None
    assert full.seed.terminal_outcome.reason.attempts == 3
    assert full.seed.last_boundary_sequence == 2**64 - 1


async def test_receipts_written_by_rust_load_with_exact_u64_sequences(rust_file):
    async with ma.open_sqlite_store(rust_file) as store:
        for run_id, boundary, ids, digest, seq, _ in RECEIPTS:
            found = await store.load_boundary_receipt(RT, run_id, seq)
            assert found == receipt(run_id, boundary, ids, digest, seq)
        assert await store.load_boundary_receipt(RT, RUN_A, 1) is None
        assert await store.load_boundary_receipt(ma.LogicalRuntimeId("x"), RUN_A, 0) is None


async def test_a_receipt_an_older_rust_clamped_is_found_under_its_own_sequence(rust_file):
    run_id, seq = CLAMPED[0], CLAMPED[4]
    async with ma.open_sqlite_store(rust_file) as store:
        assert await store.load_boundary_receipt(RT, run_id, seq) == receipt(*CLAMPED[:5])
        # Its row is not the receipt of 2**63-1, nor of another large sequence.
        assert await store.load_boundary_receipt(RT, run_id, 2**63 - 1) is None
        assert await store.load_boundary_receipt(RT, run_id, 2**63 + 6) is None
        with pytest.raises(ma.ReceiptConflict):
            await store.atomic_apply(RT, None, receipt(*CLAMPED[:5]), [])
        # A sequence the clamped row does not hold is free.
        fresh = receipt(run_id, "immediate", [], None, 2**63 + 6)
        await store.atomic_apply(RT, None, fresh, [])
        assert await store.load_boundary_receipt(RT, run_id, 2**63 + 6) == fresh
        assert await store.load_boundary_receipt(RT, run_id, seq) == receipt(*CLAMPED[:5])


CLAMPED_SLOT = "SELECT sequence, receipt_json FROM runtime_boundary_receipts WHERE run_id = ?"


async def test_a_clamped_row_moves_aside_for_the_receipt_of_2_63_minus_1(rust_file):
    run_id, seq = CLAMPED[0], CLAMPED[4]
    body = receipt_doc(*CLAMPED[:5]).encode()
    mine = receipt(run_id, "immediate", [], None, 2**63 - 1)
    async with ma.open_sqlite_store(rust_file) as store:
        await store.atomic_apply(RT, None, mine, [ma.StoredInputState(shell(iid(31)))])
        assert await store.load_boundary_receipt(RT, run_id, 2**63 - 1) == mine
        assert await store.load_boundary_receipt(RT, run_id, seq) == receipt(*CLAMPED[:5])
        with pytest.raises(ma.ReceiptConflict):
            await store.atomic_apply(RT, None, mine, [])
    # The clamped row now sits in its own two's-complement slot, its bytes unchanged.
    written = dict(rows(rust_file, CLAMPED_SLOT, str(run_id)))
    assert set(written) == {5, seq - 2**64, 2**63 - 1}
    assert written[seq - 2**64] == body
    assert json.loads(written[2**63 - 1])["sequence"] == 2**63 - 1


async def test_a_clamped_duplicate_of_a_stored_receipt_is_dropped(rust_file):
    # A seed-era Rust inserted a clamped copy of a receipt we had stored at its own slot.
    run_id, seq = CLAMPED[0], CLAMPED[4]
    db = sqlite3.connect(rust_file, isolation_level=None)
    db.execute(
        "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
        (RUNTIME, str(run_id), seq - 2**64, receipt_doc(*CLAMPED[:5]).encode()),
    )
    db.close()
    mine = receipt(run_id, "immediate", [], None, 2**63 - 1)
    async with ma.open_sqlite_store(rust_file) as store:
        assert await store.load_boundary_receipt(RT, run_id, seq) == receipt(*CLAMPED[:5])
        await store.atomic_apply(RT, None, mine, [])
        assert await store.load_boundary_receipt(RT, run_id, 2**63 - 1) == mine
        assert await store.load_boundary_receipt(RT, run_id, seq) == receipt(*CLAMPED[:5])
    assert sorted(column for column, _ in rows(rust_file, CLAMPED_SLOT, str(run_id))) == [
        seq - 2**64,
        5,
        2**63 - 1,
    ]


async def test_a_clamped_row_whose_own_slot_holds_another_receipt_is_corrupt_store(rust_file):
    run_id, seq = CLAMPED[0], CLAMPED[4]
    other = receipt_doc(run_id, "immediate", [], "another digest", seq).encode()
    db = sqlite3.connect(rust_file, isolation_level=None)
    db.execute(
        "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
        (RUNTIME, str(run_id), seq - 2**64, other),
    )
    db.close()
    before = rows(rust_file, CLAMPED_SLOT, str(run_id))
    async with ma.open_sqlite_store(rust_file) as store:
        with pytest.raises(ma.CorruptStore) as info:
            await store.atomic_apply(
                RT,
                None,
                receipt(run_id, "immediate", [], None, 2**63 - 1),
                [ma.StoredInputState(shell(iid(32)))],
            )
        assert await store.load_input_state(RT, iid(32)) is None
    message = str(info.value)
    assert f"{rust_file}: runtime_boundary_receipts, runtime '{RUNTIME}', run_id '{run_id}'" in (
        message
    )
    assert f"sequence column {2**63 - 1} holds the receipt of sequence {seq}" in message
    assert f"its own sequence column {seq - 2**64} holds a different receipt" in message
    assert rows(rust_file, CLAMPED_SLOT, str(run_id)) == before


async def test_a_damaged_row_in_the_clamped_slot_fails_every_high_sequence(tmp_path):
    path = tmp_path / "damaged.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(RUST_DDL)
    db.execute(
        "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
        (RUNTIME, str(RUN_A), 2**63 - 1, b"garbage"),
    )
    db.close()
    async with ma.open_sqlite_store(path) as store:
        for sequence in (2**63 - 1, 2**63, 2**64 - 1):
            with pytest.raises(ma.CorruptStore, match=rf"sequence column {2**63 - 1}"):
                await store.load_boundary_receipt(RT, RUN_A, sequence)
            with pytest.raises(ma.CorruptStore, match=rf"sequence column {2**63 - 1}"):
                await store.atomic_apply(
                    RT, None, receipt(RUN_A, "immediate", [], None, sequence), []
                )
        # Other runs and lower sequences are unaffected.
        await store.atomic_apply(RT, None, receipt(RUN_A, "immediate", [], None, 2**63 - 2), [])
        await store.atomic_apply(RT, None, receipt(RUN_B, "immediate", [], None, 2**63), [])


async def test_snapshots_and_states_written_by_rust_load(rust_file):
    async with ma.open_sqlite_store(rust_file) as store:
        assert await store.load_session_snapshot(RT) == SESSION_BYTES
        assert await store.load_session_snapshot(OTHER) == SESSION_BYTES  # a TEXT value
        assert await store.load_runtime_state(RT) is ma.RuntimeState.IDLE
        assert await store.load_runtime_state(OTHER) is ma.RuntimeState.RUNNING
        assert await store.load_ops_lifecycle(RT) == OPS_VALUE
        assert await store.load_ops_lifecycle(OTHER) is None
        assert await store.load_auth_oauth_flow_snapshot() == OAUTH


async def test_writing_to_a_rust_file_keeps_its_rows_and_schema(rust_file):
    before = {t: table_info(rust_file, t) for t in EXPECTED_COLUMNS}
    async with ma.open_sqlite_store(rust_file) as store:
        await store.update_auth_oauth_flow_snapshot(lambda current: current + b" ")
        await store.persist_input_state(RT, ma.StoredInputState(shell(iid(30))))
        assert (
            len(await store.load_input_states(RT)) == len(SIMPLE) + 5
        )  # FULL, NANOS, NULLS, UPPER, the new one
        with pytest.raises(ma.ReceiptConflict):
            await store.atomic_apply(RT, None, receipt(*RECEIPTS[2][:5]), [])
    assert {t: table_info(rust_file, t) for t in EXPECTED_COLUMNS} == before
    assert rows(rust_file, "SELECT state_json FROM runtime_auth_oauth_flow_state") == [
        (OAUTH + b" ",)
    ]


# --- what we write is what Rust writes --------------------------------------------------------


async def test_input_state_rows_have_the_rust_shape(path):
    async with ma.open_sqlite_store(path) as store:
        await store.persist_input_state(RT, FULL)
        await store.atomic_apply(RT, None, receipt(*RECEIPTS[0][:5]), [v for _, v in SIMPLE])
    stored = {
        key: (body, kind)
        for key, body, kind in rows(
            path,
            "SELECT input_id, state_json, typeof(state_json) FROM runtime_input_states"
            " WHERE runtime_id = ?",
            RUNTIME,
        )
    }
    assert set(stored) == {str(v.input_id) for _, v in [(FULL_DOC, FULL), *SIMPLE]}
    for doc, value in SIMPLE:
        body, kind = stored[str(value.input_id)]
        assert kind == "blob"
        assert body == doc.encode(), value.input_id
    body, kind = stored[str(FULL.input_id)]
    assert kind == "blob"
    written, expected = json.loads(body), json.loads(FULL_DOC)
    assert written == expected
    assert list(written) == list(expected)  # serde's key order at the top level


async def test_receipt_rows_have_the_rust_shape_and_twos_complement_sequences(path):
    async with ma.open_sqlite_store(path) as store:
        for run_id, boundary, ids, digest, seq, _ in RECEIPTS:
            await store.atomic_apply(RT, None, receipt(run_id, boundary, ids, digest, seq), [])
    written = rows(
        path,
        "SELECT runtime_id, run_id, sequence, typeof(sequence), receipt_json, typeof(receipt_json)"
        " FROM runtime_boundary_receipts",
    )
    expected = [
        (RUNTIME, str(run_id), column, "integer", receipt_doc(*r[:5]).encode(), "blob")
        for r in RECEIPTS
        for run_id, column in [(r[0], r[5])]
    ]
    assert sorted(written) == sorted(expected)


async def test_session_state_ops_and_oauth_rows_have_the_rust_shape(path):
    async with ma.open_sqlite_store(path) as store:
        await store.commit_session_snapshot(RT, ma.SessionDelta(SESSION_BYTES))
        await store.commit_machine_lifecycle(
            RT, ma.machine_transition(ma.RuntimeState.INITIALIZING, ma.RuntimeState.IDLE), []
        )
        await store.persist_ops_lifecycle(RT, OPS_VALUE)
        await store.persist_auth_oauth_flow_snapshot(OAUTH)
    assert rows(
        path,
        "SELECT runtime_id, session_snapshot, typeof(session_snapshot)"
        " FROM runtime_session_snapshots",
    ) == [(RUNTIME, SESSION_BYTES, "blob")]
    assert rows(
        path,
        "SELECT runtime_id, runtime_state_json, typeof(runtime_state_json) FROM runtime_states",
    ) == [(RUNTIME, b'"idle"', "blob")]
    ((runtime_id, ops, kind),) = rows(
        path, "SELECT runtime_id, state_json, typeof(state_json) FROM runtime_ops_lifecycle"
    )
    assert (runtime_id, kind) == (RUNTIME, "blob")
    assert json.loads(ops) == json.loads(OPS_DOC)
    assert list(json.loads(ops)) == list(json.loads(OPS_DOC))
    assert rows(
        path, "SELECT id, state_json, typeof(state_json) FROM runtime_auth_oauth_flow_state"
    ) == [("auth_oauth_flow_state", OAUTH, "blob")]


# --- the schema ---------------------------------------------------------------------------------


async def test_the_schema_we_create_has_the_rust_columns(path):
    async with ma.open_sqlite_store(path):
        pass
    for table, columns in EXPECTED_COLUMNS.items():
        assert table_info(path, table) == columns, table
    names = {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert names == set(EXPECTED_COLUMNS)


async def test_a_file_whose_tables_rust_created_opens_unchanged(tmp_path):
    path = tmp_path / "rust-ddl.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(RUST_DDL)
    db.close()
    # Rust's single-column primary keys lack NOT NULL; everything else is ours.
    rust_columns = {
        table: [
            (name, kind, 0 if table in SINGLE_KEY_TABLES and pk else notnull, pk)
            for name, kind, notnull, pk in columns
        ]
        for table, columns in EXPECTED_COLUMNS.items()
    }
    assert {t: table_info(path, t) for t in EXPECTED_COLUMNS} == rust_columns
    async with ma.open_sqlite_store(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"x")
        assert await store.load_auth_oauth_flow_snapshot() == b"x"
    assert {t: table_info(path, t) for t in EXPECTED_COLUMNS} == rust_columns


async def test_extra_tables_are_left_alone(path):
    future = "SELECT type, name, sql FROM sqlite_master WHERE tbl_name = 'runtime_future_things'"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE runtime_future_things (k TEXT PRIMARY KEY, v BLOB NOT NULL)")
    db.execute("CREATE INDEX runtime_future_by_v ON runtime_future_things (v)")
    db.execute("INSERT INTO runtime_future_things VALUES ('a', x'00ff')")
    schema = db.execute(future).fetchall()
    db.close()
    assert len(schema) == 3  # the table, its key's index, the extra index
    async with ma.open_sqlite_store(path) as store:
        await store.persist_input_state(RT, FULL)
    assert rows(path, "SELECT k, v FROM runtime_future_things") == [("a", b"\x00\xff")]
    assert rows(path, future) == schema


async def test_a_rollback_journal_file_opens_and_becomes_wal(rust_file):
    db = sqlite3.connect(rust_file)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()
    async with ma.open_sqlite_store(rust_file) as store:
        assert await store.load_runtime_state(RT) is ma.RuntimeState.IDLE
    assert rows(rust_file, "PRAGMA journal_mode") == [("wal",)]


async def test_a_rollback_journal_file_in_use_opens_in_its_own_mode(rust_file):
    reader = sqlite3.connect(rust_file, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM runtime_states").fetchone()  # holds a shared lock
    try:
        async with ma.open_sqlite_store(rust_file, busy_timeout=0.05) as store:
            assert await store.load_runtime_state(RT) is ma.RuntimeState.IDLE
            reader.execute("COMMIT")
            await store.persist_auth_oauth_flow_snapshot(b"written in rollback mode")
            assert await store.load_auth_oauth_flow_snapshot() == b"written in rollback mode"
    finally:
        reader.close()
    assert rows(rust_file, "PRAGMA journal_mode") == [("delete",)]


# --- one rule for a receipt row's key, in every path that reads it ------------------------


def _file_with_receipt_row(path: Path, run_text: str, sequence: int) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(RUST_DDL)
    db.execute(
        "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
        (RUNTIME, run_text, sequence, receipt_doc(RUN_A, "immediate", [], None, 5).encode()),
    )
    db.close()


@pytest.mark.parametrize("spelling", [str(RUN_A).upper(), str(RUN_A).replace("-", "")])
async def test_a_receipt_row_under_another_spelling_of_its_run_id_is_no_receipt_anywhere(
    tmp_path, spelling
):
    """The store cannot find such a row under its key; the whole-store read
    (export, import-sqlite) does not take it for that receipt either: it is
    damage naming the row, in both paths."""
    path = tmp_path / "spelled.sqlite3"
    _file_with_receipt_row(path, spelling, 5)
    async with ma.open_sqlite_store(path) as store:
        assert await store.load_boundary_receipt(RT, RUN_A, 5) is None
    database = Database.open_read_only(str(path))
    try:
        with pytest.raises(ma.CorruptStore, match=rf"run_id '{spelling}', sequence column 5"):
            database.read_state()
    finally:
        database.close()


async def test_a_receipt_row_spelled_as_the_store_writes_it_is_found_in_both_paths(tmp_path):
    path = tmp_path / "canonical.sqlite3"
    _file_with_receipt_row(path, str(RUN_A), 5)
    expected = receipt(RUN_A, "immediate", [], None, 5)
    async with ma.open_sqlite_store(path) as store:
        assert await store.load_boundary_receipt(RT, RUN_A, 5) == expected
    database = Database.open_read_only(str(path))
    try:
        state = database.read_state()
    finally:
        database.close()
    assert state.boundary_receipt(RT, RUN_A, 5) == expected


# --- discovery and retention on a file Rust wrote (SPEC §3b) ---------------------------------

RUNTIME_TABLES = [t for t in EXPECTED_COLUMNS if t != "runtime_auth_oauth_flow_state"]


def runtime_rows(path: Path, runtime: str) -> dict[str, int]:
    return {
        table: rows(path, f"SELECT count(*) FROM {table} WHERE runtime_id = ?", runtime)[0][0]
        for table in RUNTIME_TABLES
    }


async def test_list_runtimes_and_receipts_of_a_rust_file(rust_file):
    async with ma.open_sqlite_store(rust_file) as store:
        assert await store.list_runtimes() == [RT, OTHER]
        listed = await store.load_boundary_receipts(RT)
        assert await store.load_boundary_receipts(OTHER) == []
    expected = [receipt(*r[:5]) for r in [*RECEIPTS, CLAMPED]]
    # UUID order of the run id, then the sequence as a number: the rows'
    # two's-complement columns (0, 2**63-1, -2**63, -1) sort otherwise.
    expected.sort(key=lambda r: (r.run_id.value.int, r.sequence))
    assert listed == expected
    assert [r.sequence for r in listed[:4]] == [0, 2**63 - 1, 2**63, 2**64 - 1]
    assert listed[4:] == [receipt(*RECEIPTS[4][:5]), receipt(*CLAMPED[:5])]


async def test_retire_rewrites_the_row_without_persisted_input_and_nothing_else(rust_file):
    assert FULL.seed.terminal_outcome is not None
    async with ma.open_sqlite_store(rust_file) as store:
        await store.retire_input_payloads(RT, [iid(1)])
        retired = await store.load_input_state(RT, iid(1))
    ((body, kind),) = rows(
        rust_file,
        "SELECT state_json, typeof(state_json) FROM runtime_input_states"
        " WHERE runtime_id = ? AND input_id = ?",
        RUNTIME,
        str(iid(1)),
    )
    expected = json.loads(FULL_DOC)
    del expected["persisted_input"]  # serde omits an absent optional field
    assert kind == "blob"
    assert json.loads(body) == expected
    assert list(json.loads(body)) == list(expected)
    assert retired == ma.StoredInputState(
        dataclasses.replace(FULL.state, persisted_input=None), FULL.seed
    )


async def test_clear_and_delete_remove_rows_rust_wrote(rust_file):
    async with ma.open_sqlite_store(rust_file) as store:
        await store.clear_session_snapshot(OTHER)  # a TEXT row, as a lenient writer left it
        await store.delete_ops_lifecycle(RT)
        await store.delete_ops_lifecycle(OTHER)  # none: a no-op
    assert runtime_rows(rust_file, str(OTHER)) == {
        "runtime_input_states": 0,
        "runtime_boundary_receipts": 0,
        "runtime_session_snapshots": 0,
        "runtime_states": 1,
        "runtime_ops_lifecycle": 0,
    }
    assert rows(rust_file, "SELECT count(*) FROM runtime_ops_lifecycle") == [(0,)]
    assert rows(rust_file, "SELECT runtime_id FROM runtime_session_snapshots") == [(RUNTIME,)]


async def test_purge_deletes_every_row_of_the_runtime_whatever_its_spelling(rust_file):
    before = {t: table_info(rust_file, t) for t in EXPECTED_COLUMNS}
    other_before = runtime_rows(rust_file, str(OTHER))
    async with ma.open_sqlite_store(rust_file) as store:
        with pytest.raises(ma.RuntimeNotDestroyed) as caught:
            await store.purge_runtime(RT)
        assert caught.value.actual is ma.RuntimeState.IDLE
        destroy = ma.machine_transition(ma.RuntimeState.IDLE, ma.RuntimeState.DESTROYED)
        await store.commit_machine_lifecycle(RT, destroy, [], expected=ma.RuntimeState.IDLE)
        await store.purge_runtime(RT)
        assert await store.list_runtimes() == [OTHER]
        assert await store.load_boundary_receipts(RT) == []
        assert await store.load_boundary_receipt(RT, CLAMPED[0], CLAMPED[4]) is None
        assert await store.load_input_states(RT) == []
        assert await store.load_auth_oauth_flow_snapshot() == OAUTH
        # the keys are free again, the clamped slot too
        await store.atomic_apply(RT, None, receipt(*CLAMPED[:5]), [])
    # The rows under the upper-case input id and in the clamped receipt slot went too.
    assert runtime_rows(rust_file, RUNTIME) == {
        "runtime_input_states": 0,
        "runtime_boundary_receipts": 1,
        "runtime_session_snapshots": 0,
        "runtime_states": 0,
        "runtime_ops_lifecycle": 0,
    }
    assert runtime_rows(rust_file, str(OTHER)) == other_before
    assert {t: table_info(rust_file, t) for t in EXPECTED_COLUMNS} == before
    ((column,),) = rows(rust_file, "SELECT sequence FROM runtime_boundary_receipts")
    assert column == CLAMPED[4] - 2**64  # its own two's-complement slot


# --- seeds whose phase and outcome disagree (issue 16) --------------------------------------

# Rows Meerkat's Rust runtime can write (it checks no agreement between
# `current_state` and `terminal_outcome`) and our constructor refuses: a
# terminal phase without its outcome, an outcome on a phase that is not
# terminal, an outcome of another kind. Each is read, exported and imported
# as it is: a store never loses or rewrites what it holds.
DISAGREEING_ROWS = [
    (iid(40), "consumed", "", None),
    (iid(41), "queued", '"terminal_outcome":{"outcome_type":"consumed"},', "consumed"),
    (
        iid(42),
        "consumed",
        '"terminal_outcome":{"outcome_type":"abandoned","reason":"cancelled"},',
        "abandoned",
    ),
]


def _disagreeing_values() -> list[ma.StoredInputState]:
    outcomes = {
        None: None,
        "consumed": ma.InputTerminalOutcome.consumed(),
        "abandoned": ma.InputTerminalOutcome.abandoned(ma.InputAbandonReason.cancelled()),
    }
    return [
        ma.StoredInputState(
            shell(input_id),
            _values.stored_seed(ma.InputLifecycleState(phase), outcomes[outcome]),
        )
        for input_id, phase, _, outcome in DISAGREEING_ROWS
    ]


async def test_rows_whose_phase_and_outcome_disagree_are_read_and_kept_as_they_are(tmp_path):
    path = tmp_path / "rust.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(RUST_DDL)
    for input_id, phase, middle, _ in DISAGREEING_ROWS:
        doc = minimal_doc(input_id, middle).replace("{phase}", phase)
        db.execute(
            "INSERT INTO runtime_input_states VALUES (?, ?, ?)",
            (RUNTIME, str(input_id), doc.encode()),
        )
    db.close()
    expected = _disagreeing_values()
    for value in expected:  # no caller could have built these
        with pytest.raises(ValueError, match="terminal_outcome"):
            ma.InputStateSeed(value.seed.phase, terminal_outcome=value.seed.terminal_outcome)
    async with ma.open_sqlite_store(path) as store:
        assert await store.load_input_states(RT) == expected
        # Written back unchanged (a host that loads and re-persists them).
        await store.persist_input_state(RT, expected[0])
        assert await store.load_input_state(RT, expected[0].input_id) == expected[0]
    # Imported into a durable store, through its log and a snapshot.
    directory = tmp_path / "imported"
    assert main(["import-sqlite", str(path), str(directory)]) == 0
    async with ma.open_store(directory) as store:
        assert await store.load_input_states(RT) == expected
        await store.checkpoint()
    async with ma.open_store(directory) as store:
        assert await store.load_input_states(RT) == expected
    assert main(["verify", str(directory)]) == 0
