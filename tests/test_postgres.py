"""The PostgreSQL store through the public API, against a real server.

The server is the session's (`postgres_dsn` in conftest.py: a throwaway
cluster, or `$MEERKAT_TEST_POSTGRES_DSN`). Each test works in a schema of its
own. Plain `psycopg` connections play the other writer: a person with psql
who damages a row, an older or newer version of this package. Several
handles in one trio run play several hosts (the multi-process tests are in
stateful_tests/test_postgres_processes.py); the stateful machine runs the
store against the reference model in stateful_tests/test_backends.py.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack

import psycopg
import pytest
import trio
from _values import I1, I2, OTHER, RT, RUN, SID, everything, increment, populate, receipt, session
from _values import stored as stored_state
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

import meerkat_actor as ma
from meerkat_actor import _postgres_db
from meerkat_actor._dry_run import read_store
from meerkat_actor._errors import NotAStore
from meerkat_actor._postgres_copy import export_postgres

pytestmark = pytest.mark.usefixtures("postgres_dsn")


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:16]
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def sql(dsn: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(dsn, autocommit=True) as connection:
        cursor = connection.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def tables(dsn: str, schema: str) -> set[str]:
    rows = sql(
        dsn, "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
    )
    return {str(name) for (name,) in rows}


# --- opening ---------------------------------------------------------------------------------


async def test_a_new_schema_gets_the_six_tables_and_a_version(postgres_dsn: str, schema: str):
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        assert isinstance(store, ma.PostgresStore)
        assert isinstance(store, ma.RuntimeStore)
        await populate(store)
    assert tables(postgres_dsn, schema) == {
        "meerkat_schema_version",
        "runtime_input_states",
        "runtime_boundary_receipts",
        "runtime_session_snapshots",
        "runtime_states",
        "runtime_ops_lifecycle",
        "runtime_auth_oauth_flow_state",
    }
    assert sql(postgres_dsn, f"SELECT id, version FROM {schema}.meerkat_schema_version") == [
        (1, _postgres_db.SCHEMA_VERSION)
    ]


async def test_what_one_handle_wrote_the_next_one_reads(postgres_dsn: str, schema: str):
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await populate(store)
        before = await everything(store)
        key = store.auth_authority_key()
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as again:
        assert await everything(again) == before
        assert again.auth_authority_key() == key
    assert key is not None
    assert key.startswith("postgres:")
    assert key.endswith(f"/{schema}")


async def test_two_schemas_share_nothing(postgres_dsn: str, schema: str):
    other = schema + "_b"
    try:
        async with (
            ma.open_postgres_store(postgres_dsn, schema=schema) as one,
            ma.open_postgres_store(postgres_dsn, schema=other) as two,
        ):
            await populate(one)
            assert await two.list_runtimes() == []
            assert await two.load_auth_oauth_flow_snapshot() is None
            assert one.auth_authority_key() != two.auth_authority_key()
    finally:
        sql(postgres_dsn, f"DROP SCHEMA IF EXISTS {other} CASCADE")


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"schema": "Meerkat"}, ValueError, "schema"),
        ({"schema": "a-b"}, ValueError, "schema"),
        ({"schema": "x" * 64}, ValueError, "schema"),
        ({"schema": 3}, TypeError, "schema"),
        ({"schema": "pg_meerkat"}, ValueError, "schema"),
        ({"schema": "information_schema"}, ValueError, "schema"),
        ({"lock_timeout": 3e6}, ValueError, "lock_timeout"),
        ({"synchronous_commit": "maybe"}, ValueError, "synchronous_commit"),
        ({"synchronous_commit": True}, TypeError, "synchronous_commit"),
        ({"lock_timeout": 0}, ValueError, "lock_timeout"),
        ({"lock_timeout": float("nan")}, ValueError, "lock_timeout"),
        ({"lock_timeout": "5"}, TypeError, "lock_timeout"),
        ({"connect_timeout": -1}, ValueError, "connect_timeout"),
        ({"max_connections": 0}, ValueError, "max_connections"),
        ({"max_connections": 2.0}, TypeError, "max_connections"),
        ({"migrate": 1}, TypeError, "migrate"),
        ({"session_codec": object()}, TypeError, "session_codec"),
    ],
)
async def test_a_bad_argument_is_refused_before_anything_is_created(
    postgres_dsn: str, schema: str, kwargs: dict[str, object], error: type[Exception], words: str
):
    arguments: dict[str, object] = {"schema": schema, **kwargs}
    with pytest.raises(error, match=words):
        async with ma.open_postgres_store(postgres_dsn, **arguments):  # type: ignore[arg-type]
            pass
    assert tables(postgres_dsn, schema) == set()


@pytest.mark.parametrize("target", [b"host=/tmp", None, 5, "   "])
async def test_a_bad_target_names_dsn_or_pool(schema: str, target: object):
    with pytest.raises((TypeError, ValueError), match="dsn_or_pool"):
        async with ma.open_postgres_store(target, schema=schema):
            pass


async def test_no_server_is_read_failed_within_the_connect_timeout(tmp_path):
    dsn = f"host={tmp_path} port=5432 user=nobody dbname=postgres"
    started = trio.current_time()
    with pytest.raises(ma.ReadFailed, match=r"schema meerkat.*no connection"):
        async with ma.open_postgres_store(dsn, connect_timeout=1.0):
            pass
    assert trio.current_time() - started < 10


async def test_tables_of_our_names_without_a_version_are_not_a_store(
    postgres_dsn: str, schema: str
):
    sql(postgres_dsn, f"CREATE SCHEMA {schema}")
    sql(postgres_dsn, f"CREATE TABLE {schema}.runtime_states (runtime_id text, x int)")
    with pytest.raises(NotAStore, match=f"schema {schema}.*runtime_states.*version"):
        async with ma.open_postgres_store(postgres_dsn, schema=schema):
            pass
    assert tables(postgres_dsn, schema) == {"runtime_states"}


async def test_a_newer_schema_is_refused_and_left_alone(postgres_dsn: str, schema: str):
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await populate(store)
    newer = _postgres_db.SCHEMA_VERSION + 1
    sql(postgres_dsn, f"UPDATE {schema}.meerkat_schema_version SET version = {newer}")
    with pytest.raises(ma.UnsupportedFormat, match=f"version {newer}"):
        async with ma.open_postgres_store(postgres_dsn, schema=schema):
            pass
    assert sql(postgres_dsn, f"SELECT version FROM {schema}.meerkat_schema_version") == [(newer,)]


async def test_an_older_schema_migrates_only_when_asked(
    postgres_dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch
):
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await populate(store)
        before = await everything(store)
    # This package's next schema version: a column more.
    current = _postgres_db.SCHEMA_VERSION
    monkeypatch.setattr(_postgres_db, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(
        _postgres_db._MIGRATIONS,
        current,
        ("ALTER TABLE {schema}.runtime_states ADD COLUMN note text",),
    )
    with pytest.raises(ma.UnsupportedFormat, match="migrate=True"):
        async with ma.open_postgres_store(postgres_dsn, schema=schema):
            pass
    assert sql(postgres_dsn, f"SELECT version FROM {schema}.meerkat_schema_version") == [(current,)]
    async with ma.open_postgres_store(postgres_dsn, schema=schema, migrate=True) as store:
        assert await everything(store) == before
    assert sql(postgres_dsn, f"SELECT version FROM {schema}.meerkat_schema_version") == [
        (current + 1,)
    ]
    columns = sql(
        postgres_dsn,
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = %s AND table_name = 'runtime_states'",
        (schema,),
    )
    assert ("note",) in columns


async def test_a_pool_the_caller_owns_stays_open(postgres_dsn: str, schema: str):
    with ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True) as pool:
        async with ma.open_postgres_store(pool, schema=schema) as store:
            await populate(store)
        assert not pool.closed
        with pool.connection() as connection:
            assert connection.execute(
                f"SELECT count(*) FROM {schema}.runtime_session_snapshots"
            ).fetchone() == (1,)


async def test_a_closed_handle_refuses_calls(postgres_dsn: str, schema: str):
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        pass
    with pytest.raises(ma.StoreClosed):
        await store.load_session_snapshot(RT)
    with pytest.raises(ma.StoreClosed):
        await store.persist_auth_oauth_flow_snapshot(b"x")


# --- values ------------------------------------------------------------------------------------


async def test_every_u64_sequence_is_its_own_receipt(postgres_dsn: str, schema: str):
    sequences = [0, 2**63 - 1, 2**63, 2**64 - 1]
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        for n, sequence in enumerate(sequences):
            state = stored_state(ma.InputId(uuid.UUID(int=0x1000 + n)))
            await store.atomic_apply(RT, None, receipt(sequence), [state], None)
        for sequence in sequences:
            found = await store.load_boundary_receipt(RT, RUN, sequence)
            assert found == receipt(sequence)
        assert sorted(r.sequence for r in await store.load_boundary_receipts(RT)) == sequences
        with pytest.raises(ma.ReceiptConflict):
            await store.atomic_apply(RT, None, receipt(2**64 - 1), [], None)
    rows = sql(postgres_dsn, f"SELECT sequence FROM {schema}.runtime_boundary_receipts")
    assert sorted(int(str(s)) for (s,) in rows) == sequences


async def test_a_damaged_row_is_corrupt_store_naming_table_and_key(postgres_dsn: str, schema: str):
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await populate(store)
        await store.persist_input_state(RT, stored_state(I2))
        sql(
            postgres_dsn,
            f"UPDATE {schema}.runtime_input_states SET state_json = %s WHERE input_id = %s",
            (b"{not json", str(I2)),
        )
        with pytest.raises(ma.CorruptStore, match=rf"runtime_input_states.*input_id '{I2}'"):
            await store.load_input_state(RT, I2)
        with pytest.raises(ma.CorruptStore, match="runtime_input_states"):
            await store.load_input_states(RT)
        # A write that needs the row fails.
        with pytest.raises(ma.CorruptStore, match=f"input_id '{I2}'"):
            await store.retire_input_payloads(RT, [I2])
        # Another input's row, copied under I2's key: the JSON names I1.
        sql(
            postgres_dsn,
            f"UPDATE {schema}.runtime_input_states SET state_json ="
            f" (SELECT state_json FROM {schema}.runtime_input_states WHERE input_id = %s)"
            " WHERE input_id = %s",
            (str(I1), str(I2)),
        )
        with pytest.raises(ma.CorruptStore, match=f"holds input {I1}"):
            await store.load_input_state(RT, I2)
        # A receipt moved to another sequence.
        sql(postgres_dsn, f"UPDATE {schema}.runtime_boundary_receipts SET sequence = 9")
        with pytest.raises(ma.CorruptStore, match=r"runtime_boundary_receipts.*sequence 9"):
            await store.load_boundary_receipt(RT, RUN, 9)
        assert await store.load_boundary_receipt(RT, RUN, 7) is None


# --- several handles on one schema -------------------------------------------------------------


async def _race(dsn: str, schema: str, handles: int, attempt) -> None:
    """Open `handles` stores, then start `attempt(store, n)` on every one at
    once (the opens would otherwise spread the attempts out)."""
    async with AsyncExitStack() as stack:
        stores = [
            await stack.enter_async_context(ma.open_postgres_store(dsn, schema=schema))
            for _ in range(handles)
        ]
        go = trio.Event()

        async def run(store: ma.PostgresStore, n: int) -> None:
            await go.wait()
            await attempt(store, n)

        async with trio.open_nursery() as nursery:
            for n, store in enumerate(stores):
                nursery.start_soon(run, store, n)
            await trio.sleep(0.05)
            go.set()


async def test_racing_handles_insert_one_receipt_once(postgres_dsn: str, schema: str):
    handles, rounds = 6, 8
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as first:
        await first.list_runtimes()  # the schema exists before the race
    for round_ in range(rounds):
        outcomes: dict[int, str] = {}

        async def attempt(
            store: ma.PostgresStore,
            n: int,
            round_: int = round_,
            outcomes: dict[int, str] = outcomes,
        ) -> None:
            state = stored_state(ma.InputId(uuid.UUID(int=(round_ << 16) + n)))
            try:
                await store.atomic_apply(RT, session(), receipt(round_), [state], SID)
            except ma.ReceiptConflict:
                outcomes[n] = "conflict"
            else:
                outcomes[n] = "won"

        await _race(postgres_dsn, schema, handles, attempt)
        winners = [n for n, outcome in outcomes.items() if outcome == "won"]
        assert len(winners) == 1, outcomes
        assert len(outcomes) == handles
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        # One input state per round, the winner's: the losers changed nothing.
        states = await store.load_input_states(RT)
        assert sorted(s.state.input_id.value.int >> 16 for s in states) == list(range(rounds))
        assert len(await store.load_boundary_receipts(RT)) == rounds


async def test_oauth_updates_from_many_handles_lose_nothing(postgres_dsn: str, schema: str):
    handles, each = 4, 15

    async def worker() -> None:
        async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
            for _ in range(each):
                await store.update_auth_oauth_flow_snapshot(increment)

    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await store.list_runtimes()
        async with trio.open_nursery() as nursery:
            for _ in range(handles):
                nursery.start_soon(worker)
        assert await store.load_auth_oauth_flow_snapshot() == str(handles * each).encode()


async def test_lifecycle_compare_and_set_has_one_winner(postgres_dsn: str, schema: str):
    RS = ma.RuntimeState
    steps = [(RS.IDLE, RS.RUNNING), (RS.RUNNING, RS.IDLE)] * 4
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await store.commit_machine_lifecycle(
            RT, ma.machine_transition(RS.INITIALIZING, RS.IDLE), []
        )
    for before, after in steps:
        results: list[str] = []

        async def attempt(
            store: ma.PostgresStore,
            n: int,
            before: RS = before,
            after: RS = after,
            results: list[str] = results,
        ) -> None:
            try:
                await store.commit_machine_lifecycle(
                    RT, ma.machine_transition(before, after), [], expected=before
                )
            except ma.LifecycleConflict as exc:
                results.append(f"conflict, found {exc.actual}")
            else:
                results.append("won")

        await _race(postgres_dsn, schema, 5, attempt)
        assert sorted(results) == [f"conflict, found {after}"] * 4 + ["won"], (before, after)


async def test_a_write_waiting_for_a_runtime_lock_times_out_and_changes_nothing(
    postgres_dsn: str, schema: str
):
    async with ma.open_postgres_store(postgres_dsn, schema=schema, lock_timeout=0.5) as store:
        await populate(store)
        before = await everything(store)
        key = _postgres_db.lock_key("meerkat_actor", schema, "runtime", str(RT))
        with psycopg.connect(postgres_dsn) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            with pytest.raises(ma.WriteFailed, match=f"runtime '{RT}'.*lock"):
                await store.persist_input_state(RT, stored_state(I2))
            # Another runtime's writes do not wait.
            await store.persist_input_state(OTHER, stored_state(I2))
            holder.rollback()
        await store.persist_input_state(RT, stored_state(I2))
        after = await everything(store)
        assert after[RT, "inputs"] == [*before[RT, "inputs"], stored_state(I2)]


# --- the server going away ---------------------------------------------------------------------


async def test_a_server_restart_fails_calls_then_the_pool_recovers(
    postgres_dsn: str, schema: str, postgres_cluster
):
    async with ma.open_postgres_store(postgres_dsn, schema=schema, connect_timeout=2) as store:
        await populate(store)
        before = await everything(store)
        await trio.to_thread.run_sync(postgres_cluster.stop, "immediate")
        try:
            with pytest.raises(ma.WriteFailed):
                await store.persist_input_state(RT, stored_state(I2))
            with pytest.raises(ma.ReadFailed):
                await store.load_input_states(RT)
        finally:
            await trio.to_thread.run_sync(postgres_cluster.start)
        # The pool throws the dead connections away and makes new ones.
        for _ in range(3):
            try:
                assert await everything(store) == before
                break
            except ma.ReadFailed:
                await trio.sleep(0.5)
        else:
            raise AssertionError("the store did not recover after the server came back")
        await store.persist_input_state(RT, stored_state(I2))
        assert await store.load_input_state(RT, I2) == stored_state(I2)


async def test_a_connection_lost_during_commit_is_commit_outcome_unknown(
    postgres_dsn: str, schema: str
):
    """A deferred constraint trigger holds COMMIT on the server while another
    connection terminates the writer's backend: the store cannot know whether
    the write committed, and says so; the handle goes on working."""
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await populate(store)
        sql(
            postgres_dsn,
            f"CREATE FUNCTION {schema}.slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$",
        )
        sql(
            postgres_dsn,
            f"CREATE CONSTRAINT TRIGGER slow AFTER INSERT OR UPDATE ON {schema}.runtime_states"
            f" DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.slow_commit()",
        )

        async def kill_the_committer() -> None:
            while True:
                await trio.sleep(0.1)
                rows = sql(
                    postgres_dsn,
                    "SELECT pid FROM pg_stat_activity WHERE query = 'COMMIT'"
                    " AND state = 'active' AND pid <> pg_backend_pid()",
                )
                if rows:
                    sql(postgres_dsn, "SELECT pg_terminate_backend(%s)", (rows[0][0],))
                    return

        RS = ma.RuntimeState
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_the_committer)
            with pytest.raises(ma.CommitOutcomeUnknown, match="may or may not"):
                await store.commit_machine_lifecycle(
                    RT, ma.machine_transition(RS.IDLE, RS.RUNNING), []
                )
        sql(postgres_dsn, f"DROP TRIGGER slow ON {schema}.runtime_states")
        # Not poisoned: the next write reads the database afresh.
        assert await store.load_runtime_state(RT) in (RS.IDLE, RS.RUNNING)
        await store.persist_input_state(RT, stored_state(I2))
        assert await store.load_input_state(RT, I2) == stored_state(I2)


async def test_a_statement_the_server_refuses_fails_the_whole_write(postgres_dsn: str, schema: str):
    """A constraint someone added refuses the input-state row of an
    `atomic_apply` whose session and receipt statements ran before it: the
    COMMIT queued after it never runs, the call is a plain `WriteFailed` (not
    an unknown outcome), nothing of it is written, and the handle goes on."""
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        await populate(store)
        before = await everything(store)
        sql(
            postgres_dsn,
            f"ALTER TABLE {schema}.runtime_input_states ADD CONSTRAINT no_i2"
            f" CHECK (input_id <> '{I2}')",
        )
        with pytest.raises(ma.WriteFailed, match="no_i2") as caught:
            await store.atomic_apply(RT, session(note="later"), receipt(8), [stored_state(I2)], SID)
        assert not isinstance(caught.value, ma.CommitOutcomeUnknown)
        assert await everything(store) == before
        sql(postgres_dsn, f"ALTER TABLE {schema}.runtime_input_states DROP CONSTRAINT no_i2")
        await store.atomic_apply(RT, session(note="later"), receipt(8), [stored_state(I2)], SID)
        assert await store.load_boundary_receipt(RT, RUN, 8) == receipt(8)


async def test_a_server_crash_under_load_loses_no_acknowledged_write(
    postgres_dsn: str, schema: str, postgres_cluster
):
    """Eight tasks commit without pause while the server is killed (`pg_ctl
    stop -m immediate`: a crash) and started again. Every call returns or
    raises `WriteFailed` (none hangs, nothing else escapes); afterwards every
    acknowledged write is there, no write that failed outright is, and the
    ones whose outcome was unknown are there whole or not at all."""
    acked: set[int] = set()
    failed: set[int] = set()
    unknown: set[int] = set()
    next_item = iter(range(10**6))
    stop = trio.Event()
    recovered = trio.Event()
    wanted = [10**9]  # acknowledged writes that show the store recovered

    async with ma.open_postgres_store(
        postgres_dsn, schema=schema, connect_timeout=2, lock_timeout=2
    ) as store:
        await store.list_runtimes()

        async def writer() -> None:
            while not stop.is_set():
                n = next(next_item)
                state = stored_state(ma.InputId(uuid.UUID(int=0x9000 + n)))
                try:
                    await store.atomic_apply(RT, session(), receipt(n), [state], SID)
                except ma.CommitOutcomeUnknown:
                    unknown.add(n)
                except ma.WriteFailed:
                    failed.add(n)
                    await trio.sleep(0.05)
                else:
                    acked.add(n)
                    if len(acked) >= wanted[0]:
                        recovered.set()

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(writer)
            await trio.sleep(1.0)
            before_crash = len(acked)
            await trio.to_thread.run_sync(postgres_cluster.stop, "immediate")
            await trio.sleep(1.0)
            await trio.to_thread.run_sync(postgres_cluster.start)
            wanted[0] = before_crash + 50
            with trio.fail_after(30):
                await recovered.wait()
            stop.set()
        assert failed, "no write failed: the server did not go away under load"
        receipts = {r.sequence for r in await store.load_boundary_receipts(RT)}
        inputs = {s.state.input_id.value.int - 0x9000 for s in await store.load_input_states(RT)}
    assert acked <= receipts
    assert not failed & receipts
    assert receipts <= acked | unknown
    # Whole or not at all: a write's receipt and its input state together.
    assert inputs == receipts


# --- what a review found ---------------------------------------------------------------------


async def test_a_reserved_word_is_a_schema_name_like_another(postgres_dsn: str):
    try:
        async with ma.open_postgres_store(postgres_dsn, schema="user") as store:
            await populate(store)
            before = await everything(store)
        async with ma.open_postgres_store(postgres_dsn, schema="user") as store:
            assert await everything(store) == before
    finally:
        sql(postgres_dsn, 'DROP SCHEMA IF EXISTS "user" CASCADE')


async def test_the_authority_key_names_the_store_not_the_way_to_it(postgres_dsn: str, schema: str):
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        key = store.auth_authority_key()
    (store_id,) = sql(postgres_dsn, f"SELECT store_id FROM {schema}.meerkat_schema_version")[0]
    assert key is not None
    assert str(uuid.UUID(str(store_id))) in key
    # The same store through another spelling of the connection string.
    other = postgres_dsn.replace("dbname=postgres", "dbname=postgres application_name=x")
    async with ma.open_postgres_store(other, schema=schema) as store:
        assert store.auth_authority_key() == key
    # A store of the same name, made again, is another store.
    sql(postgres_dsn, f"DROP SCHEMA {schema} CASCADE")
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        assert store.auth_authority_key() != key


async def test_a_callers_pool_gets_its_connections_back_as_they_were(
    postgres_dsn: str, schema: str
):
    def configure(connection: psycopg.Connection) -> None:
        connection.row_factory = dict_row  # type: ignore[assignment]

    with ConnectionPool(
        postgres_dsn, min_size=2, max_size=2, open=True, configure=configure
    ) as pool:
        async with ma.open_postgres_store(pool, schema=schema) as store:
            await populate(store)
            before = await everything(store)
            assert before[RT, "inputs"] == [stored_state(I1)]
        for _ in range(2):
            with pool.connection() as connection:
                assert connection.autocommit is False
                row = connection.execute("SELECT 1 AS one").fetchone()
                assert row == {"one": 1}


def test_racing_exports_to_one_schema_leave_one_whole_export(
    postgres_dsn: str, schema: str, tmp_path
):
    """Two exports of different stores into one new schema at once: exactly
    one lands, whole; the other is refused and removes nothing."""

    async def build(path, runtime) -> None:
        async with ma.open_store(path) as store:
            await store.atomic_apply(runtime, session(), receipt(), [stored_state(I1)], SID)

    trio.run(build, tmp_path / "a", RT)
    trio.run(build, tmp_path / "b", OTHER)
    states = [read_store(str(tmp_path / name)).state for name in ("a", "b")]
    outcomes: list[object] = [None, None]
    go = threading.Barrier(2)

    def export(n: int) -> None:
        go.wait()
        try:
            outcomes[n] = export_postgres(states[n], postgres_dsn, schema)
        except Exception as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=export, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [o for o in outcomes if isinstance(o, Exception)]
    assert len(failed) == 1, outcomes
    assert isinstance(failed[0], FileExistsError)
    winner = 0 if not isinstance(outcomes[0], Exception) else 1
    runtimes = {RT: 0, OTHER: 1}

    async def read() -> list[ma.LogicalRuntimeId]:
        async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
            return await store.list_runtimes()

    assert [runtimes[rt] for rt in trio.run(read)] == [winner]


async def test_a_connection_lost_while_waiting_for_the_lock_is_a_plain_failure(
    postgres_dsn: str, schema: str
):
    """A write that looks nothing up (`persist_input_state`) waits for its
    runtime's lock; its connection is cut before the lock comes: nothing was
    committed, and the store says so (`WriteFailed`, not an unknown outcome)."""
    async with ma.open_postgres_store(postgres_dsn, schema=schema, lock_timeout=30) as store:
        await populate(store)
        before = await everything(store)
        key = _postgres_db.lock_key("meerkat_actor", schema, "runtime", str(RT))
        with psycopg.connect(postgres_dsn) as holder:
            holder.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            holder_pid = holder.info.backend_pid

            async def cut() -> None:
                while True:
                    await trio.sleep(0.05)
                    rows = sql(
                        postgres_dsn,
                        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND pid <> %s",
                        (holder_pid,),
                    )
                    if rows:
                        sql(postgres_dsn, "SELECT pg_terminate_backend(%s)", (rows[0][0],))
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cut)
                with pytest.raises(ma.WriteFailed) as caught:
                    await store.persist_input_state(RT, stored_state(I2))
            assert not isinstance(caught.value, ma.CommitOutcomeUnknown)
            holder.rollback()
        assert await everything(store) == before


async def test_any_runtime_id_round_trips(postgres_dsn: str, schema: str):
    """Runtime ids are any text UTF-8 can hold, NUL included (which
    PostgreSQL's text type refuses: the column is bytea)."""
    names = ["\x00", "a\x00b", "ünïcödé ✓", "\U0001f600", " ", "x" * 1000]
    async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
        for n, name in enumerate(names):
            runtime = ma.LogicalRuntimeId(name)
            await store.atomic_apply(runtime, session(), receipt(n), [stored_state(I1)], SID)
        assert sorted(r.value for r in await store.list_runtimes()) == sorted(names)
        for n, name in enumerate(names):
            runtime = ma.LogicalRuntimeId(name)
            assert await store.load_input_states(runtime) == [stored_state(I1)]
            assert await store.load_boundary_receipt(runtime, RUN, n) == receipt(n)
        await store.clear_session_snapshot(ma.LogicalRuntimeId("\x00"))
        assert await store.load_session_snapshot(ma.LogicalRuntimeId("\x00")) is None
