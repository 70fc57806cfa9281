"""The conformance kit against every backend this package ships (SPEC §8).

- the in-memory actor store;
- the durable actor store, with the reopen, checkpoint and crash rules; a
  second variant checkpoints by size every 4 KiB of log, so snapshots are
  written (and covered segments deleted) in the middle of runs;
- the SQLite backend, with the reopen and crash rules;
- the PostgreSQL store, with the reopen and crash rules, against the
  session's server (`postgres_dsn` in conftest.py: a throwaway cluster).

Every backend declares every capability. To keep CI near its time budget,
the SQLite machine runs a quarter of the profile's examples (each of its
reads is a worker-thread round trip: an example costs about ten times the
actor store's), and so does the small-checkpoint variant; the PostgreSQL machine
an eighth. Run deeper with
`HYPOTHESIS_PROFILE=deep python -m pytest stateful_tests/test_backends.py`.
"""

import hashlib
import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import ClassVar

import psycopg
import pytest
from hypothesis import settings

import meerkat_actor as ma
from meerkat_actor.testing import Capabilities, RuntimeStoreMachine

# The conformance machine at the profile's budget against each store: minutes.
pytestmark = pytest.mark.slow


class InMemoryStoreMachine(RuntimeStoreMachine):
    open_store = staticmethod(ma.open_store)


class DurableStoreMachine(RuntimeStoreMachine):
    open_store_at = staticmethod(ma.open_store)
    capabilities = Capabilities(durable=True, crash_safe=True)


class SmallCheckpointsMachine(RuntimeStoreMachine):
    capabilities = Capabilities(durable=True, crash_safe=True)

    @staticmethod
    def open_store_at(location: Path) -> AbstractAsyncContextManager[ma.RuntimeStore]:
        return ma.open_store(location / "store", checkpoint_bytes=4096)


class SqliteStoreMachine(RuntimeStoreMachine):
    capabilities = Capabilities(durable=True, crash_safe=True)

    @staticmethod
    def open_store_at(location: Path) -> AbstractAsyncContextManager[ma.RuntimeStore]:
        return ma.open_sqlite_store(location / "runtime.sqlite3")


TestInMemoryStore = InMemoryStoreMachine.TestCase
TestDurableStore = DurableStoreMachine.TestCase
TestDurableStoreSmallCheckpoints = SmallCheckpointsMachine.TestCase
TestSqliteStore = SqliteStoreMachine.TestCase
TestSqliteStore.settings = settings(max_examples=max(10, settings.default.max_examples // 4))
# A quarter too (CI time): the durable machine's rules, with checkpoints far
# more often.
TestDurableStoreSmallCheckpoints.settings = settings(
    max_examples=max(10, settings.default.max_examples // 4)
)


# --- PostgreSQL -----------------------------------------------------------------------------
#
# One server for the session (the `postgres_dsn` fixture); each location the
# machine opens is a schema of its own, named after the resolved path (so the
# same location through a symbolic link is the same store, as the kit's
# `open_elsewhere` rule requires), dropped when the test case ends.


def _postgres_schema(location: Path) -> str:
    digest = hashlib.sha256(os.path.realpath(location).encode()).hexdigest()
    return "kit_" + digest[:24]


class PostgresStoreMachine(RuntimeStoreMachine):
    capabilities = Capabilities(durable=True, crash_safe=True)
    schemas: ClassVar[set[str]] = set()

    @staticmethod
    def open_store_at(location: Path) -> AbstractAsyncContextManager[ma.RuntimeStore]:
        schema = _postgres_schema(location)
        PostgresStoreMachine.schemas.add(schema)
        return ma.open_postgres_store(os.environ["MEERKAT_TEST_POSTGRES_DSN"], schema=schema)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            dropped = sorted(PostgresStoreMachine.schemas)
            PostgresStoreMachine.schemas.clear()
            if dropped:
                with psycopg.connect(os.environ["MEERKAT_TEST_POSTGRES_DSN"]) as connection:
                    for schema in dropped:
                        connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


TestPostgresStore = pytest.mark.usefixtures("postgres_dsn")(PostgresStoreMachine.TestCase)
# An eighth of the profile's examples (CI time): each call is a thread hop
# and a round trip or more to the server (about 0.4 ms for a read), so an
# example costs about three times the SQLite machine's.
TestPostgresStore.settings = settings(max_examples=max(10, settings.default.max_examples // 8))
