"""The conformance kit through `meerkat_actor.asyncio` (issue 16).

The same machine as test_backends.py, with `backend = "asyncio"`: every rule
runs in an asyncio event loop (the kit's bridge runs `asyncio.run` in its
helper thread) against stores opened with `meerkat_actor.asyncio`'s openers,
so the trio store runs as a guest of that loop. Concurrency and cancellation
rules use asyncio tasks and asyncio cancellation (through anyio).

CI time: the in-memory and durable machines run a quarter of the profile's
examples, SQLite and PostgreSQL an eighth (their trio machines run more;
what is under test here is the path between asyncio and the store, which
each of them takes on every call). Deeper:
`HYPOTHESIS_PROFILE=deep python -m pytest stateful_tests/test_asyncio_kit.py`.
"""

import os
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest
from hypothesis import settings
from test_backends import PostgresStoreMachine, _postgres_schema

import meerkat_actor as ma
from meerkat_actor import asyncio as maa
from meerkat_actor.testing import Capabilities, RuntimeStoreMachine

pytestmark = pytest.mark.slow


def _share(divisor: int) -> settings:
    return settings(max_examples=max(10, settings.default.max_examples // divisor))


class AsyncioInMemoryMachine(RuntimeStoreMachine):
    backend = "asyncio"
    open_store = staticmethod(maa.open_store)


class AsyncioDurableMachine(RuntimeStoreMachine):
    backend = "asyncio"
    capabilities = Capabilities(durable=True, crash_safe=True)

    @staticmethod
    def open_store_at(location: Path) -> AbstractAsyncContextManager[ma.RuntimeStore]:
        # Small checkpoints: snapshots are written in the middle of runs too.
        return maa.open_store(location / "store", checkpoint_bytes=16384)


class AsyncioSqliteMachine(RuntimeStoreMachine):
    backend = "asyncio"
    capabilities = Capabilities(durable=True, crash_safe=True)

    @staticmethod
    def open_store_at(location: Path) -> AbstractAsyncContextManager[ma.RuntimeStore]:
        return maa.open_sqlite_store(location / "runtime.sqlite3")


class AsyncioPostgresMachine(PostgresStoreMachine):
    backend = "asyncio"

    @staticmethod
    def open_store_at(location: Path) -> AbstractAsyncContextManager[ma.RuntimeStore]:
        schema = _postgres_schema(location)
        PostgresStoreMachine.schemas.add(schema)
        return maa.open_postgres_store(os.environ["MEERKAT_TEST_POSTGRES_DSN"], schema=schema)


TestAsyncioInMemoryStore = AsyncioInMemoryMachine.TestCase
TestAsyncioInMemoryStore.settings = _share(4)
TestAsyncioDurableStore = AsyncioDurableMachine.TestCase
TestAsyncioDurableStore.settings = _share(4)
TestAsyncioSqliteStore = AsyncioSqliteMachine.TestCase
TestAsyncioSqliteStore.settings = _share(8)
TestAsyncioPostgresStore = pytest.mark.usefixtures("postgres_dsn")(AsyncioPostgresMachine.TestCase)
TestAsyncioPostgresStore.settings = _share(8)
