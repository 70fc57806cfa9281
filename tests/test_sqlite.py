"""The SQLite backend through the public API (SPEC §3-§5, §9).

`import meerkat_actor as ma` for everything a user does; plain `sqlite3`
connections play the other writer (another process, Meerkat's Rust runtime)
that holds locks, drops tables or writes rows we cannot read. The stored
shapes and the schema are checked in test_sqlite_interop.py; the stateful
machine runs the backend against the reference model in stateful_tests/.
"""

from __future__ import annotations

import math
import os
import sqlite3
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest
import trio
import trio.testing
from _values import (
    I1,
    I2,
    OTHER,
    RT,
    RUN,
    SID,
    T0,
    everything,
    increment,
    populate,
    receipt,
    session,
    stored,
)

import meerkat_actor as ma
from meerkat_actor import InputLifecycleState as PHASE
from meerkat_actor import RuntimeState as RS
from meerkat_actor._codec import dumps_json
from meerkat_actor._sqlite import SqliteStore

# This file's third input id is the largest one (ffffffff-...), stored as TEXT.
I3 = ma.InputId(uuid.UUID(int=2**128 - 1))


def append(suffix: bytes):
    def update(current: bytes | None) -> bytes:
        return (current or b"") + suffix

    return update


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "runtime.sqlite3"


@pytest.fixture
async def store(path):
    async with ma.open_sqlite_store(path) as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    """Another writer on the same file (autocommit; short busy timeout)."""
    return sqlite3.connect(path, isolation_level=None, timeout=0.5)


# --- round trips ----------------------------------------------------------------------


async def test_fresh_store_is_empty(store):
    seen = await everything(store)
    assert all(value in (None, []) for value in seen.values())
    assert await store.load_input_state(RT, I1) is None


async def test_every_operation_reads_back(store):
    states = [stored(I2, PHASE.QUEUED), stored(I1)]
    await store.atomic_apply(RT, session(), receipt(), states, SID)
    assert await store.load_session_snapshot(RT) == session().session_snapshot
    assert await store.load_boundary_receipt(RT, RUN, 7) == receipt()
    assert await store.load_input_states(RT) == [stored(I1), stored(I2, PHASE.QUEUED)]
    assert await store.load_input_state(RT, I2) == stored(I2, PHASE.QUEUED)

    await store.commit_session_snapshot(RT, session(turn=2))
    assert await store.load_session_snapshot(RT) == session(turn=2).session_snapshot

    await store.persist_input_state(RT, stored(I1, PHASE.CONSUMED, attempts=2))
    assert await store.load_input_state(RT, I1) == stored(I1, PHASE.CONSUMED, attempts=2)

    commit = ma.machine_transition(RS.INITIALIZING, RS.IDLE)
    await store.commit_machine_lifecycle(RT, commit, [stored(I3, PHASE.STAGED)])
    assert await store.load_runtime_state(RT) is RS.IDLE
    assert await store.load_input_state(RT, I3) == stored(I3, PHASE.STAGED)

    ops = ma.PersistedOpsSnapshot("epoch-1", {"ops": {"x": 1}}, [1, "two"], None, {"c": 0.5})
    await store.persist_ops_lifecycle(RT, ops)
    assert await store.load_ops_lifecycle(RT) == ops
    ops2 = ma.PersistedOpsSnapshot("epoch-2")
    await store.persist_ops_lifecycle(RT, ops2)
    assert await store.load_ops_lifecycle(RT) == ops2

    await store.persist_auth_oauth_flow_snapshot(b"\x00oauth\xff")
    assert await store.load_auth_oauth_flow_snapshot() == b"\x00oauth\xff"
    await store.update_auth_oauth_flow_snapshot(append(b"!"))
    assert await store.load_auth_oauth_flow_snapshot() == b"\x00oauth\xff!"


async def test_updater_sees_none_when_nothing_was_stored(store):
    seen = []

    def update(current):
        seen.append(current)
        return b"first"

    await store.update_auth_oauth_flow_snapshot(update)
    assert seen == [None]
    assert await store.load_auth_oauth_flow_snapshot() == b"first"


async def test_runtimes_are_isolated(store):
    await populate(store)
    assert await store.load_session_snapshot(OTHER) is None
    assert await store.load_input_states(OTHER) == []
    assert await store.load_boundary_receipt(OTHER, RUN, 7) is None
    assert await store.load_runtime_state(OTHER) is None
    assert await store.load_ops_lifecycle(OTHER) is None
    await store.atomic_apply(OTHER, None, receipt(), [stored(I1, PHASE.CONSUMED)])
    assert await store.load_input_state(RT, I1) == stored(I1)
    assert await store.load_input_state(OTHER, I1) == stored(I1, PHASE.CONSUMED)


async def test_later_entries_in_one_call_win(store):
    await store.atomic_apply(
        RT, None, receipt(), [stored(I1, PHASE.QUEUED), stored(I2), stored(I1, PHASE.APPLIED)]
    )
    assert await store.load_input_states(RT) == [stored(I1, PHASE.APPLIED), stored(I2)]


async def test_u64_sequences_are_distinct_keys(store):
    sequences = [0, 1, 2**63 - 1, 2**63, 2**64 - 1]
    for sequence in sequences:
        await store.atomic_apply(RT, None, receipt(sequence), [])
    for sequence in sequences:
        assert await store.load_boundary_receipt(RT, RUN, sequence) == receipt(sequence)
    assert await store.load_boundary_receipt(RT, RUN, 2**63 + 1) is None
    assert await store.load_boundary_receipt(RT, RUN, 2) is None


async def test_input_states_are_sorted_by_uuid(store):
    ids = [ma.InputId(uuid.UUID(int=n)) for n in (2**127 + 7, 1, 2**128 - 1, 2**64, 15)]
    for input_id in ids:
        await store.persist_input_state(RT, stored(input_id))
    loaded = await store.load_input_states(RT)
    assert [s.input_id for s in loaded] == sorted(ids, key=lambda i: i.value.int)


async def test_session_key_only_validates(store):
    await store.atomic_apply(RT, session(), receipt(), [], session_store_key=SID)
    assert await store.load_session_snapshot(ma.LogicalRuntimeId(str(SID))) is None
    # Without a delta there is nothing to check the key against.
    await store.atomic_apply(RT, None, receipt(8), [], ma.SessionId.new())
    assert await store.load_boundary_receipt(RT, RUN, 8) == receipt(8)


async def test_custom_session_codec_is_used(path):
    class FixedCodec:
        def session_id(self, snapshot: bytes) -> ma.SessionId:
            return SID

    async with ma.open_sqlite_store(path, session_codec=FixedCodec()) as store:
        await store.atomic_apply(RT, ma.SessionDelta(b"opaque"), receipt(), [], SID)
        assert await store.load_session_snapshot(RT) == b"opaque"


# --- refusals change nothing --------------------------------------------------------------


async def test_receipt_conflict_applies_nothing(store):
    await populate(store)
    before = await everything(store)
    with pytest.raises(ma.ReceiptConflict, match=r"runtime runtime-a: .* run .* sequence 7"):
        await store.atomic_apply(RT, session(turn=9), receipt(), [stored(I2)], SID)
    assert await everything(store) == before
    assert await store.load_input_state(RT, I2) is None


async def test_session_key_mismatch_applies_nothing(store):
    await populate(store)
    before = await everything(store)
    key = ma.SessionId(uuid.UUID(int=0xBAD))
    with pytest.raises(ma.SessionKeyMismatch, match="runtime-a") as info:
        await store.atomic_apply(RT, session(turn=2), receipt(8), [stored(I2)], key)
    assert (info.value.expected, info.value.actual) == (key, SID)
    assert await everything(store) == before


@pytest.mark.parametrize("snapshot", [b"", b"not json", b"[]", b'{"id": "nope"}'])
async def test_unreadable_session_snapshot_applies_nothing(store, snapshot):
    await populate(store)
    before = await everything(store)
    with pytest.raises(ma.WriteFailed, match="runtime runtime-a: session snapshot rejected"):
        await store.commit_session_snapshot(RT, ma.SessionDelta(snapshot))
    with pytest.raises(ma.WriteFailed, match="session snapshot rejected"):
        await store.atomic_apply(RT, ma.SessionDelta(snapshot), receipt(8), [stored(I2)])
    assert await everything(store) == before


async def test_raising_updater_reaches_the_caller_unchanged(store):
    await populate(store)
    before = await everything(store)
    error = LookupError("the updater's own error")

    def update(current):
        raise error

    with pytest.raises(LookupError) as info:
        await store.update_auth_oauth_flow_snapshot(update)
    assert info.value is error
    assert await everything(store) == before


@pytest.mark.parametrize("result", ["text", bytearray(b"x"), None])
async def test_updater_returning_non_bytes_is_a_type_error(store, result):
    await populate(store)
    before = await everything(store)
    with pytest.raises(TypeError, match=r"updater must return bytes, got"):
        await store.update_auth_oauth_flow_snapshot(lambda current: result)
    assert await everything(store) == before


BAD_CALLS = [
    ("persist_input_state", lambda: ("runtime-a", stored(I1)), TypeError, "runtime_id must be"),
    ("persist_input_state", lambda: (RT, {"input_id": "x"}), TypeError, "state must be"),
    ("load_input_states", lambda: ("runtime-a",), TypeError, "runtime_id must be"),
    ("load_input_state", lambda: (RT, RUN), TypeError, "input_id must be InputId"),
    ("load_boundary_receipt", lambda: (RT, RUN, -1), ValueError, r"sequence must be in"),
    ("load_boundary_receipt", lambda: (RT, RUN, 2**64), ValueError, r"sequence must be in"),
    ("load_boundary_receipt", lambda: (RT, RUN, True), TypeError, "sequence must be int"),
    ("load_boundary_receipt", lambda: (RT, I1, 0), TypeError, "run_id must be RunId"),
    ("load_session_snapshot", lambda: (None,), TypeError, "runtime_id must be"),
    ("load_runtime_state", lambda: (1,), TypeError, "runtime_id must be"),
    ("load_ops_lifecycle", lambda: ("x",), TypeError, "runtime_id must be"),
    ("persist_auth_oauth_flow_snapshot", lambda: ("text",), TypeError, "snapshot must be bytes"),
    ("update_auth_oauth_flow_snapshot", lambda: (42,), TypeError, "update must be callable"),
    ("commit_session_snapshot", lambda: (RT, b"{}"), TypeError, "delta must be SessionDelta"),
    ("atomic_apply", lambda: (RT, None, receipt(), [{}]), TypeError, r"input_updates\[0\]"),
    ("atomic_apply", lambda: (RT, None, receipt(), {stored(I1)}), TypeError, "input_updates"),
    ("atomic_apply", lambda: (RT, None, "receipt", []), TypeError, "receipt must be"),
    ("atomic_apply", lambda: (RT, None, receipt(), [], str(SID)), TypeError, "session_store_key"),
    ("commit_machine_lifecycle", lambda: (RT, RS.IDLE, []), TypeError, "commit must be"),
    ("persist_ops_lifecycle", lambda: (RT, {"epoch_id": "e"}), TypeError, "snapshot must be"),
]


@pytest.mark.parametrize(("name", "args", "error", "message"), BAD_CALLS)
async def test_bad_arguments_are_refused_and_change_nothing(store, name, args, error, message):
    await populate(store)
    before = await everything(store)
    with pytest.raises(error, match=message):
        await getattr(store, name)(*args())
    assert await everything(store) == before


# --- SQLite failures --------------------------------------------------------------------------


async def test_write_blocked_past_the_busy_timeout_fails_and_changes_nothing(path):
    async with ma.open_sqlite_store(path, busy_timeout=0.05) as store:
        await populate(store)
        before = await everything(store)
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(
                ma.WriteFailed, match=r"persist_input_state for runtime 'runtime-a': .*locked"
            ) as info:
                await store.persist_input_state(RT, stored(I2))
            assert isinstance(info.value.__cause__, sqlite3.OperationalError)
            with pytest.raises(ma.WriteFailed, match=r"update_auth_oauth_flow_snapshot: "):
                await store.update_auth_oauth_flow_snapshot(append(b"x"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await everything(store) == before
        await store.persist_input_state(RT, stored(I2))
        assert await store.load_input_state(RT, I2) == stored(I2)


async def test_write_waits_for_another_writer_within_the_busy_timeout(store, path):
    other = raw(path)
    other.execute("BEGIN IMMEDIATE")

    async def release_later():
        await trio.sleep(0.2)
        other.execute("ROLLBACK")

    start = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(release_later)
        await store.persist_input_state(RT, stored(I1))
    other.close()
    assert time.monotonic() - start >= 0.15
    assert await store.load_input_state(RT, I1) == stored(I1)


async def test_sqlite_errors_become_read_failed_and_write_failed(store, path):
    await populate(store)
    other = raw(path)
    other.execute("DROP TABLE runtime_states")
    other.close()
    with pytest.raises(ma.ReadFailed, match=r"load_runtime_state for runtime 'runtime-a': .*") as r:
        await store.load_runtime_state(RT)
    assert not isinstance(r.value, ma.CorruptStore)
    assert isinstance(r.value.__cause__, sqlite3.OperationalError)
    commit = ma.machine_transition(RS.IDLE, RS.RUNNING)
    with pytest.raises(ma.WriteFailed, match=r"commit_machine_lifecycle for runtime 'runtime-a'"):
        await store.commit_machine_lifecycle(RT, commit, [stored(I2)])


async def test_a_failure_on_the_last_effect_rolls_back_the_earlier_ones(store, path):
    await store.commit_session_snapshot(RT, session(turn=1))
    other = raw(path)
    # RAISE(FAIL) keeps the rows the transaction wrote before it: only our
    # ROLLBACK removes the session snapshot and receipt written first.
    other.execute(
        "CREATE TRIGGER no_inputs BEFORE INSERT ON runtime_input_states"
        " BEGIN SELECT RAISE(FAIL, 'disk says no'); END"
    )
    with pytest.raises(
        ma.WriteFailed, match=r"atomic_apply for runtime 'runtime-a': .*disk says no"
    ):
        await store.atomic_apply(RT, session(turn=2), receipt(), [stored(I1)], SID)
    assert not store._database.connection.in_transaction
    assert await store.load_session_snapshot(RT) == session(turn=1).session_snapshot
    assert await store.load_boundary_receipt(RT, RUN, 7) is None
    assert other.execute("SELECT count(*) FROM runtime_boundary_receipts").fetchone() == (0,)
    # A failure before COMMIT poisons nothing: the store goes on writing.
    other.execute("DROP TRIGGER no_inputs")
    other.close()
    await store.atomic_apply(RT, session(turn=2), receipt(), [stored(I1)], SID)
    assert await store.load_boundary_receipt(RT, RUN, 7) == receipt()


async def test_no_transaction_is_left_open_after_any_failure(path):
    async with ma.open_sqlite_store(path, busy_timeout=0.05) as store:
        connection = store._database.connection
        await store.atomic_apply(RT, None, receipt(), [])

        def exits(current):
            raise SystemExit("the updater exits")

        failures = [
            (lambda: store.atomic_apply(RT, None, receipt(), []), ma.ReceiptConflict),
            (lambda: store.commit_session_snapshot(RT, ma.SessionDelta(b"x")), ma.WriteFailed),
            (lambda: store.update_auth_oauth_flow_snapshot(lambda c: 1 / 0), ZeroDivisionError),
            (lambda: store.update_auth_oauth_flow_snapshot(exits), SystemExit),
        ]
        for call, error in failures:
            with pytest.raises(error):
                await call()
            assert not connection.in_transaction
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(ma.WriteFailed, match="locked"):
            await store.persist_input_state(RT, stored(I2))
        other.execute("ROLLBACK")
        other.close()
        assert not connection.in_transaction
        await store.persist_input_state(RT, stored(I2))
        assert await store.load_input_state(RT, I2) == stored(I2)


async def test_a_receipt_refused_by_a_constraint_is_write_failed_naming_it(store, path):
    other = raw(path)
    other.execute(
        "CREATE TRIGGER frozen BEFORE INSERT ON runtime_boundary_receipts"
        " BEGIN SELECT RAISE(ABORT, 'receipts are frozen'); END"
    )
    other.close()
    with pytest.raises(ma.WriteFailed) as info:
        await store.atomic_apply(RT, None, receipt(2**63 - 1), [stored(I1)])
    message = str(info.value)
    assert f"atomic_apply for runtime 'runtime-a': SQLite refused the receipt of run {RUN}" in (
        message
    )
    assert f"sequence {2**63 - 1}" in message
    assert "receipts are frozen" in message
    assert "clamped" not in message
    assert not isinstance(info.value, ma.ReceiptConflict)
    assert isinstance(info.value.__cause__, sqlite3.IntegrityError)
    assert await store.load_input_state(RT, I1) is None


class FailingCommit:
    """The store's connection, but its next COMMIT fails with SQLite result
    `code` (an extended code, as `sqlite3` reports it), after committing if
    `lands` (the WAL frame reached the disk) or without."""

    def __init__(self, connection: sqlite3.Connection, code: int, name: str, lands: bool):
        self.connection, self.code, self.name, self.lands = connection, code, name, lands
        self.armed = True

    def execute(self, sql: str, *args):
        if sql == "COMMIT" and self.armed:
            self.armed = False
            if self.lands:
                self.connection.execute(sql)
            error = sqlite3.OperationalError(f"{self.name} (injected)")
            error.sqlite_errorcode = self.code
            error.sqlite_errorname = self.name
            raise error
        return self.connection.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.connection, name)


def fail_next_commit(store, code: int, name: str, lands: bool) -> FailingCommit:
    database = store._database
    database.connection = FailingCommit(database.connection, code, name, lands)
    return database.connection


@pytest.mark.parametrize(
    ("code", "name"),
    [(778, "SQLITE_IOERR_WRITE"), (1034, "SQLITE_IOERR_FSYNC"), (13, "SQLITE_FULL")],
)
@pytest.mark.parametrize("lands", [True, False], ids=["landed", "lost"])
async def test_a_commit_with_an_unknown_outcome_poisons_writes_until_reopen(
    path, code, name, lands
):
    async with ma.open_sqlite_store(path) as store:
        await populate(store)
        fail_next_commit(store, code, name, lands)
        with pytest.raises(ma.WriteFailed) as info:
            await store.atomic_apply(RT, session(turn=2), receipt(8), [stored(I2)], SID)
        assert not isinstance(info.value, ma.StorePoisoned)
        message = str(info.value)
        assert message.startswith(f"atomic_apply for runtime 'runtime-a': COMMIT failed on {path}")
        assert "the outcome of this write is unknown until the store is reopened" in message
        cause = info.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError)
        assert cause.sqlite_errorcode == code
        assert not store._database.connection.in_transaction

        writes = [
            lambda: store.persist_input_state(RT, stored(I3)),
            lambda: store.atomic_apply(RT, None, receipt(9), []),
            lambda: store.commit_session_snapshot(RT, session(turn=3)),
            lambda: store.update_auth_oauth_flow_snapshot(append(b"!")),
            lambda: store.persist_auth_oauth_flow_snapshot(b"x"),
            lambda: store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("epoch-2")),
            lambda: store.commit_machine_lifecycle(
                RT, ma.machine_transition(RS.IDLE, RS.RUNNING), []
            ),
        ]
        for write in writes:
            with pytest.raises(ma.StorePoisoned, match=r"refuses writes: an earlier COMMIT") as p:
                await write()
            assert p.value.__cause__ is cause
        # Reads keep working, and show what SQLite has.
        assert await store.load_auth_oauth_flow_snapshot() == b"oauth-0"
        assert await store.load_input_state(RT, I3) is None
    async with ma.open_sqlite_store(path) as store:
        # Reopened: the write is wholly there or wholly absent, and writes work.
        found = await store.load_boundary_receipt(RT, RUN, 8)
        assert found == (receipt(8) if lands else None)
        assert (await store.load_input_state(RT, I2) is not None) == lands
        expected = session(turn=2) if lands else session()
        assert await store.load_session_snapshot(RT) == expected.session_snapshot
        await store.persist_input_state(RT, stored(I3))
        assert await store.load_input_state(RT, I3) == stored(I3)


@pytest.mark.parametrize(("code", "name"), [(5, "SQLITE_BUSY"), (6, "SQLITE_LOCKED")])
async def test_a_commit_that_wrote_nothing_does_not_poison(store, code, name):
    await populate(store)
    before = await everything(store)
    fail_next_commit(store, code, name, lands=False)
    with pytest.raises(ma.WriteFailed, match=r"SQLite failed to commit on .*SQLITE_") as info:
        await store.persist_input_state(RT, stored(I2))
    assert "unknown" not in str(info.value)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert await everything(store) == before
    await store.persist_input_state(RT, stored(I2))
    assert await store.load_input_state(RT, I2) == stored(I2)


@pytest.mark.parametrize(
    ("table", "row", "load"),
    [
        (
            "runtime_states",
            ("runtime-a", b'"sleeping"'),
            lambda s: s.load_runtime_state(RT),
        ),
        (
            "runtime_ops_lifecycle",
            ("runtime-a", b"{not json"),
            lambda s: s.load_ops_lifecycle(RT),
        ),
        (
            "runtime_session_snapshots",
            ("runtime-a", 12345),
            lambda s: s.load_session_snapshot(RT),
        ),
        (
            "runtime_input_states",
            ("runtime-a", str(I1), b'{"input_id": 1}'),
            lambda s: s.load_input_states(RT),
        ),
        (
            "runtime_input_states",
            ("runtime-a", str(I1), b'{"input_id": 1}'),
            lambda s: s.load_input_state(RT, I1),
        ),
        (
            "runtime_boundary_receipts",
            ("runtime-a", str(RUN), 7, b"[]"),
            lambda s: s.load_boundary_receipt(RT, RUN, 7),
        ),
    ],
)
async def test_a_row_that_does_not_decode_is_corrupt_store(store, path, table, row, load):
    other = raw(path)
    marks = ", ".join("?" * len(row))
    other.execute(f"INSERT INTO {table} VALUES ({marks})", row)
    other.close()
    with pytest.raises(ma.CorruptStore, match=rf"{path}: {table}, runtime 'runtime-a'") as info:
        await load(store)
    assert isinstance(info.value, ma.ReadFailed)


NOT_UTF8 = "CAST(x'ff00fe' AS TEXT)"


@pytest.mark.parametrize(
    ("table", "values", "where", "load"),
    [
        (
            "runtime_auth_oauth_flow_state",
            f"('auth_oauth_flow_state', {NOT_UTF8})",
            "id 'auth_oauth_flow_state'",
            lambda s: s.load_auth_oauth_flow_snapshot(),
        ),
        (
            "runtime_auth_oauth_flow_state",
            f"('auth_oauth_flow_state', {NOT_UTF8})",
            "id 'auth_oauth_flow_state'",
            lambda s: s.update_auth_oauth_flow_snapshot(append(b"x")),
        ),
        (
            "runtime_session_snapshots",
            f"('runtime-a', {NOT_UTF8})",
            "runtime 'runtime-a'",
            lambda s: s.load_session_snapshot(RT),
        ),
        (
            "runtime_states",
            f"('runtime-a', {NOT_UTF8})",
            "runtime 'runtime-a'",
            lambda s: s.load_runtime_state(RT),
        ),
        (
            "runtime_ops_lifecycle",
            f"('runtime-a', {NOT_UTF8})",
            "runtime 'runtime-a'",
            lambda s: s.load_ops_lifecycle(RT),
        ),
        (
            "runtime_input_states",
            f"('runtime-a', '{I1}', {NOT_UTF8})",
            f"runtime 'runtime-a', input_id '{I1}'",
            lambda s: s.load_input_state(RT, I1),
        ),
        (
            "runtime_input_states",
            f"('runtime-a', {NOT_UTF8}, x'7b7d')",
            r"runtime 'runtime-a', input_id b'\xff\x00\xfe'",
            lambda s: s.load_input_states(RT),
        ),
        (
            "runtime_boundary_receipts",
            f"('runtime-a', '{RUN}', 7, {NOT_UTF8})",
            f"runtime 'runtime-a', run_id '{RUN}', sequence column 7",
            lambda s: s.load_boundary_receipt(RT, RUN, 7),
        ),
        (
            "runtime_boundary_receipts",
            f"('runtime-a', '{RUN}', 7, {NOT_UTF8})",
            f"runtime 'runtime-a', run_id '{RUN}', sequence column 7",
            lambda s: s.atomic_apply(RT, None, receipt(7), []),
        ),
    ],
)
async def test_a_text_value_that_is_not_utf8_is_corrupt_store(
    store, path, table, values, where, load
):
    other = raw(path)
    other.execute(f"INSERT INTO {table} VALUES {values}")
    other.close()
    with pytest.raises(ma.CorruptStore) as info:
        await load(store)
    message = str(info.value)
    assert message.startswith(f"{path}: {table}, {where}: a TEXT value that is not UTF-8"), message
    assert isinstance(info.value.__cause__, UnicodeDecodeError)
    assert not store._database.connection.in_transaction


async def test_an_input_row_under_the_wrong_key_is_corrupt_store(store, path):
    other = raw(path)
    body = ma.StoredInputState.new_accepted(I2, now=T0)
    other.execute(
        "INSERT INTO runtime_input_states VALUES (?, ?, ?)",
        ("runtime-a", str(I1), dumps_json(body)),
    )
    other.close()
    with pytest.raises(ma.CorruptStore, match=rf"input_id '{I1}': the row holds input {I2}"):
        await store.load_input_states(RT)


async def test_a_corrupt_receipt_at_the_key_fails_atomic_apply_and_changes_nothing(store, path):
    await populate(store)
    other = raw(path)
    other.execute(
        "INSERT INTO runtime_boundary_receipts VALUES (?, ?, ?, ?)",
        ("runtime-a", str(RUN), 8, b"garbage"),
    )
    other.close()
    before = await everything(store, receipt_keys=((RUN, 7),), all_receipts=False)
    with pytest.raises(ma.CorruptStore, match="runtime_boundary_receipts, runtime 'runtime-a'"):
        await store.atomic_apply(RT, session(turn=3), receipt(8), [stored(I2)])
    assert await everything(store, receipt_keys=((RUN, 7),), all_receipts=False) == before
    with pytest.raises(ma.CorruptStore, match="runtime_boundary_receipts, runtime 'runtime-a'"):
        await store.load_boundary_receipts(RT)


async def test_a_file_that_is_not_a_database_is_corrupt_store(path):
    path.write_bytes(b"this is not a SQLite database, just text. " * 200)
    with pytest.raises(ma.CorruptStore, match=rf"{path} is not a SQLite database"):
        async with ma.open_sqlite_store(path):
            pass


async def test_a_missing_directory_is_a_clear_error(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "rt.sqlite3"
    with pytest.raises(ma.ReadFailed, match=r"its directory .*no/such/dir does not exist"):
        async with ma.open_sqlite_store(missing):
            pass
    assert not (tmp_path / "no").exists()


async def test_a_table_without_meerkat_columns_is_refused(path):
    other = raw(path)
    other.execute("CREATE TABLE runtime_states (name TEXT)")
    other.close()
    with pytest.raises(ma.ReadFailed, match=r"table runtime_states has no column runtime_id"):
        async with ma.open_sqlite_store(path):
            pass


# --- durability, sharing, closing ---------------------------------------------------------------


async def test_reopen_keeps_everything(path):
    async with ma.open_sqlite_store(path) as store:
        await populate(store)
        await store.persist_input_state(OTHER, stored(I3, PHASE.QUEUED))
        before = await everything(store)
    async with ma.open_sqlite_store(path) as store:
        assert await everything(store) == before
        assert before["oauth"] == b"oauth-0"


async def test_two_handles_on_one_file_see_each_other(path):
    async with ma.open_sqlite_store(path) as one, ma.open_sqlite_store(path) as two:
        await populate(one)
        assert await everything(two) == await everything(one)
        await two.persist_input_state(RT, stored(I2))
        assert await one.load_input_state(RT, I2) == stored(I2)
        with pytest.raises(ma.ReceiptConflict):
            await two.atomic_apply(RT, None, receipt(), [])


async def test_concurrent_oauth_increments_lose_nothing(store):
    async with trio.open_nursery() as nursery:
        for _ in range(60):
            nursery.start_soon(store.update_auth_oauth_flow_snapshot, increment)
    assert await store.load_auth_oauth_flow_snapshot() == b"60"


async def test_concurrent_oauth_increments_through_two_handles_lose_nothing(path):
    async with ma.open_sqlite_store(path) as one, ma.open_sqlite_store(path) as two:
        async with trio.open_nursery() as nursery:
            for _ in range(25):
                nursery.start_soon(one.update_auth_oauth_flow_snapshot, increment)
                nursery.start_soon(two.update_auth_oauth_flow_snapshot, increment)
        assert await one.load_auth_oauth_flow_snapshot() == b"50"


async def test_store_closed_after_close(path):
    async with ma.open_sqlite_store(path) as store:
        await populate(store)
    assert "closed" in repr(store)
    with pytest.raises(ma.StoreClosed, match="closed"):
        await store.persist_auth_oauth_flow_snapshot(b"x")
    with pytest.raises(ma.StoreClosed):
        await store.load_input_states(RT)
    with pytest.raises(ma.StoreClosed):
        await store.atomic_apply(RT, None, receipt(9), [])
    # Bad arguments are still the caller's error first.
    with pytest.raises(TypeError):
        await store.load_input_states("runtime-a")


async def test_calls_waiting_at_close_complete(path):
    async with trio.open_nursery() as nursery:
        async with ma.open_sqlite_store(path) as store:
            for n in range(10):
                input_id = ma.InputId(uuid.UUID(int=n))
                nursery.start_soon(store.persist_input_state, RT, stored(input_id))
            await trio.testing.wait_all_tasks_blocked()
        # Closed: the ten calls had reached the store, and finished first.
        with pytest.raises(ma.StoreClosed):
            await store.persist_input_state(RT, stored(I1))
    async with ma.open_sqlite_store(path) as store:
        assert len(await store.load_input_states(RT)) == 10


# --- cancellation -----------------------------------------------------------------------------


async def test_a_cancelled_call_commits_before_the_next_call_of_its_task(store):
    entered, release = threading.Event(), threading.Event()

    def slow(current):
        entered.set()
        release.wait(5)
        return (current or b"") + b"a"

    scopes: list[trio.CancelScope] = []

    async def task():
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await store.update_auth_oauth_flow_snapshot(slow)
            await trio.sleep_forever()
        await store.update_auth_oauth_flow_snapshot(append(b"b"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(task)
        await trio.to_thread.run_sync(entered.wait, 5)
        scopes[0].cancel()
        await trio.sleep(0.05)  # the cancelled call is still in its transaction
        release.set()
    assert scopes[0].cancelled_caught
    assert await store.load_auth_oauth_flow_snapshot() == b"ab"


async def test_a_call_cancelled_while_waiting_never_reaches_the_store(store):
    entered, release = threading.Event(), threading.Event()

    def slow(current):
        entered.set()
        release.wait(5)
        return b"first"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.update_auth_oauth_flow_snapshot, slow)
        await trio.to_thread.run_sync(entered.wait, 5)
        with trio.move_on_after(0.05) as scope:
            await store.persist_auth_oauth_flow_snapshot(b"never")
        assert scope.cancelled_caught
        release.set()
    assert await store.load_auth_oauth_flow_snapshot() == b"first"


async def test_cancelled_writers_leave_every_call_all_or_nothing(store, path):
    # Another connection holds the write lock, so the first writer's worker
    # thread waits inside SQLite (BEGIN IMMEDIATE) while all are cancelled;
    # the lock is released only after the cancellation.
    other = raw(path)
    other.execute("BEGIN IMMEDIATE")
    returned: dict[int, float] = {}

    async def writer(n: int):
        input_id = ma.InputId(uuid.UUID(int=n + 1))
        await store.atomic_apply(RT, session(), receipt(n), [stored(input_id)])
        returned[n] = trio.current_time()

    cancelled = trio.Event()

    async def release_after_the_cancel():
        await cancelled.wait()
        await trio.sleep(0.05)
        other.execute("ROLLBACK")

    async with trio.open_nursery() as outer:
        outer.start_soon(release_after_the_cancel)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                for n in range(40):
                    nursery.start_soon(writer, n)
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                cancelled_at = trio.current_time()
                cancelled.set()
    other.close()
    landed = {s.input_id.value.int - 1 for s in await store.load_input_states(RT)}
    for n in range(40):
        found = await store.load_boundary_receipt(RT, RUN, n)
        assert (found is not None) == (n in landed)
    # The one call whose thread was running when the cancel came (whichever
    # trio started first) committed after it (nothing could commit before:
    # the lock was held); the calls still waiting for their turn never
    # reached the store.
    assert len(landed) == 1
    assert returned.keys() == landed
    (first,) = landed
    assert returned[first] > cancelled_at


async def test_a_cancelled_call_blocked_by_another_connection_takes_up_to_busy_timeout(path):
    async with ma.open_sqlite_store(path, busy_timeout=0.3) as store:
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")
        start = time.monotonic()
        try:
            with trio.move_on_after(0.02), pytest.raises(ma.WriteFailed, match="locked"):
                await store.persist_input_state(RT, stored(I1))
        finally:
            other.execute("ROLLBACK")
            other.close()
        waited = time.monotonic() - start
        assert 0.25 <= waited < 3, waited  # the documented bound: busy_timeout, not 0.02 s
        assert await store.load_input_state(RT, I1) is None


# --- the trio thread is never blocked -----------------------------------------------------------


async def test_heartbeat_keeps_ticking_while_writes_run(store):
    lags: list[float] = []

    async def heartbeat():
        while True:
            start = time.perf_counter()
            await trio.sleep(0.002)
            lags.append(time.perf_counter() - start - 0.002)

    async def writer(n: int):
        for k in range(10):
            await store.persist_input_state(RT, stored(ma.InputId(uuid.UUID(int=n * 100 + k))))
            await store.update_auth_oauth_flow_snapshot(increment)

    async with trio.open_nursery() as outer:
        outer.start_soon(heartbeat)
        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(writer, n)
        outer.cancel_scope.cancel()
    assert await store.load_auth_oauth_flow_snapshot() == b"200"
    assert len(lags) > 10
    assert max(lags) < 0.25


# --- the file and the handle -------------------------------------------------------------------


def assert_private(path: Path) -> None:
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name


async def test_a_new_file_is_private(path):
    old = os.umask(0o022)
    try:
        async with ma.open_sqlite_store(path) as store:
            await populate(store)
            assert_private(path)
    finally:
        os.umask(old)


async def test_a_dangling_symlink_gets_a_private_target(tmp_path):
    target = tmp_path / "real.sqlite3"
    link = tmp_path / "link.sqlite3"
    link.symlink_to(target)
    old = os.umask(0o022)
    try:
        async with ma.open_sqlite_store(link) as store:
            await store.persist_auth_oauth_flow_snapshot(b"pkce verifier")
            assert_private(target)
            assert store.auth_authority_key() == "sqlite:" + str(target.resolve())
    finally:
        os.umask(old)
    assert link.is_symlink()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    async with ma.open_sqlite_store(target) as store:
        assert await store.load_auth_oauth_flow_snapshot() == b"pkce verifier"


async def test_an_existing_files_mode_is_left_alone(path):
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    async with ma.open_sqlite_store(path):
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


async def test_wal_mode_and_synchronous(path):
    async with ma.open_sqlite_store(path, synchronous="normal") as store:
        connection = store._database.connection
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == b"wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    async with ma.open_sqlite_store(path) as store:
        assert store._database.connection.execute("PRAGMA synchronous").fetchone()[0] == 2


async def test_a_refused_wal_switch_is_logged_and_the_store_works(path, monkeypatch, caplog):
    class NoWal(sqlite3.Connection):
        """A connection on which SQLite answers the WAL switch with the old mode,
        as it does where WAL is impossible."""

        def execute(self, sql, *args):
            if sql == "PRAGMA journal_mode=WAL":
                sql = "PRAGMA journal_mode"
            return super().execute(sql, *args)

    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: connect(*a, factory=NoWal, **k))
    with caplog.at_level("WARNING", logger="meerkat_actor"):
        async with ma.open_sqlite_store(path) as store:
            await populate(store)
            assert await store.load_auth_oauth_flow_snapshot() == b"oauth-0"
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} stays in delete journal mode: SQLite refused to switch it to WAL"
    ]
    monkeypatch.undo()
    assert raw(path).execute("PRAGMA journal_mode").fetchone() == ("delete",)


async def test_auth_authority_key_is_the_resolved_path(path, tmp_path, monkeypatch):
    async with ma.open_sqlite_store(path) as store:
        key = store.auth_authority_key()
    assert key == "sqlite:" + str(path.resolve())
    link = tmp_path / "link.sqlite3"
    link.symlink_to(path)
    async with ma.open_sqlite_store(link) as store:
        assert store.auth_authority_key() == key
    monkeypatch.chdir(tmp_path)
    async with ma.open_sqlite_store(path.name) as store:
        assert store.auth_authority_key() == key


async def test_a_relative_path_named_like_memory_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    async with ma.open_sqlite_store(":memory:") as store:
        await populate(store)
    assert (tmp_path / ":memory:").stat().st_size > 0


async def test_handle_has_no_public_constructor_and_is_a_runtime_store(store):
    assert isinstance(store, ma.RuntimeStore)
    with pytest.raises(TypeError, match=r"no public constructor; use meerkat_actor\.open_sqlite"):
        SqliteStore()
    assert repr(store).startswith("<meerkat_actor SQLite store at ")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"path": b"rt.sqlite3"}, TypeError, "path must be str or os.PathLike"),
        ({"path": 3}, TypeError, "path must be str or os.PathLike"),
        ({"path": ""}, ValueError, "path must not be empty"),
        ({"path": "a\0b"}, ValueError, "path must not contain NUL"),
        ({"synchronous": 2}, TypeError, "synchronous must be str"),
        ({"synchronous": "SOMETIMES"}, ValueError, "synchronous must be one of OFF, NORMAL"),
        ({"busy_timeout": True}, TypeError, "busy_timeout must be int or float"),
        ({"busy_timeout": "5"}, TypeError, "busy_timeout must be int or float"),
        ({"busy_timeout": -1}, ValueError, "busy_timeout must be a finite number"),
        ({"busy_timeout": math.nan}, ValueError, "busy_timeout must be a finite number"),
        ({"busy_timeout": math.inf}, ValueError, "busy_timeout must be a finite number"),
        ({"session_codec": object()}, TypeError, "session_codec must be an object with"),
        ({"session_codec": ma.MeerkatSessionCodec}, TypeError, "session_codec must be"),
    ],
)
async def test_open_validates_its_arguments(path, kwargs, error, message):
    arguments = {"path": path, **kwargs}
    with pytest.raises(error, match=message):
        async with ma.open_sqlite_store(**arguments):
            pass
    if "path" not in kwargs:
        assert not path.exists()


# --- statistics ---------------------------------------------------------------------------


async def test_statistics_count_commands_refusals_effects_and_transactions(store):
    before = store.statistics()
    assert before == ma.StoreStatistics(
        commands=0,
        refused=0,
        batches=0,
        largest_batch=0,
        effects=0,
        records=0,
        fsyncs=0,
        bytes_written=0,
        checkpoints=0,
        pending=0,
        max_pending=0,
        transactions=0,
    )
    await store.atomic_apply(RT, session(), receipt(), [stored(I1)])  # 3 effects
    with pytest.raises(ma.ReceiptConflict):
        await store.atomic_apply(RT, None, receipt(), [])
    with pytest.raises(ZeroDivisionError):
        await store.update_auth_oauth_flow_snapshot(lambda current: 1 // 0)
    with pytest.raises(TypeError):  # refused before reaching the store: not counted
        await store.persist_input_state(RT, None)
    assert await store.load_input_states(RT) == [stored(I1)]
    stats = store.statistics()
    assert (stats.commands, stats.refused, stats.effects) == (3, 2, 3)
    assert (stats.batches, stats.largest_batch) == (3, 1)
    assert stats.transactions == 4  # three writes and one read
    assert (stats.records, stats.fsyncs, stats.bytes_written, stats.checkpoints) == (0, 0, 0, 0)


async def test_statistics_show_calls_waiting_for_the_connection(store):
    entered, release = threading.Event(), threading.Event()

    def slow(current):
        entered.set()
        release.wait(10)
        return b"x"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(store.update_auth_oauth_flow_snapshot, slow)
        await trio.to_thread.run_sync(entered.wait, 10)
        nursery.start_soon(store.load_auth_oauth_flow_snapshot)
        nursery.start_soon(store.persist_auth_oauth_flow_snapshot, b"y")
        await trio.testing.wait_all_tasks_blocked()
        assert store.statistics().pending == 2
        release.set()
    assert store.statistics().pending == 0
    assert await store.load_auth_oauth_flow_snapshot() == b"y"


async def test_statistics_answer_after_close(path):
    async with ma.open_sqlite_store(path) as store:
        await store.persist_auth_oauth_flow_snapshot(b"x")
    assert store.statistics().commands == 1
