"""`meerkat-actor export-postgres` and `import-postgres` (docs/cli.md), as
subprocesses, against the session's PostgreSQL server.

The store is tests/_cli_stores.py's (three runtimes, input states in seven
phases, receipts with sequences >= 2**63, every kind of value); expected
content comes from the public API reading the stores back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import trio
from _cli_stores import cli, counts, json_out, read_content, read_store, tree, write_all

import meerkat_actor as ma

pytestmark = pytest.mark.usefixtures("postgres_dsn")


@pytest.fixture
def schema(postgres_dsn: str) -> Iterator[str]:
    name = "cli_" + uuid.uuid4().hex[:16]
    yield name
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pgcli") / "store"

    async def build() -> None:
        async with ma.open_store(path) as opened:
            await write_all(opened)

    trio.run(build)
    return path


def read_postgres(dsn: str, schema: str):
    async def read():
        async with ma.open_postgres_store(dsn, schema=schema) as opened:
            return await read_content(opened)

    return trio.run(read)


def test_export_then_import_gives_back_every_value(
    store: Path, postgres_dsn: str, schema: str, tmp_path: Path
):
    content = read_store(store)
    before = tree(store)
    exported = cli("export-postgres", store, postgres_dsn, "--schema", schema, "--json")
    assert exported.returncode == 0, exported.stderr
    document = json_out(exported)
    assert document["identical"] is True
    assert document["target"] == f"PostgreSQL schema {schema}"
    assert {k: document[k] for k in counts(content)} == counts(content)
    assert tree(store) == before  # the source is not changed
    assert read_postgres(postgres_dsn, schema) == content

    target = tmp_path / "back"
    imported = cli("import-postgres", postgres_dsn, target, "--schema", schema)
    assert imported.returncode == 0, imported.stderr
    assert "read back: identical" in imported.stdout
    assert read_store(target) == content


def test_export_refuses_a_schema_that_holds_a_store(store: Path, postgres_dsn: str, schema: str):
    assert cli("export-postgres", store, postgres_dsn, "--schema", schema).returncode == 0
    content = read_postgres(postgres_dsn, schema)
    again = cli("export-postgres", store, postgres_dsn, "--schema", schema)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert schema in again.stderr
    assert read_postgres(postgres_dsn, schema) == content


def test_export_beside_other_tables_leaves_them_alone(store: Path, postgres_dsn: str, schema: str):
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
        connection.execute(f"CREATE TABLE {schema}.theirs (x int)")
        connection.execute(f"INSERT INTO {schema}.theirs VALUES (42)")
    assert cli("export-postgres", store, postgres_dsn, "--schema", schema).returncode == 0
    assert read_postgres(postgres_dsn, schema) == read_store(store)
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        assert connection.execute(f"SELECT x FROM {schema}.theirs").fetchall() == [(42,)]


def test_import_of_a_schema_without_a_store_exits_3_and_creates_nothing(
    postgres_dsn: str, schema: str, tmp_path: Path
):
    target = tmp_path / "new"
    done = cli("import-postgres", postgres_dsn, target, "--schema", schema, "--json")
    assert done.returncode == 3, done.stderr
    assert f"schema {schema} holds no Meerkat store" in done.stderr
    assert not target.exists()
    with psycopg.connect(postgres_dsn, autocommit=True) as connection:
        found = connection.execute(
            "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (schema,)
        ).fetchall()
    assert found == []  # reading never creates


def test_import_into_a_directory_that_holds_files_exits_2(
    store: Path, postgres_dsn: str, schema: str, tmp_path: Path
):
    assert cli("export-postgres", store, postgres_dsn, "--schema", schema).returncode == 0
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    done = cli("import-postgres", postgres_dsn, target, "--schema", schema)
    assert done.returncode == 2
    assert "already exists" in done.stderr
    assert sorted(p.name for p in target.iterdir()) == ["notes.txt"]


def test_a_bad_schema_name_is_a_usage_error(store: Path, postgres_dsn: str):
    for name in ("Bad-Name", "x; DROP TABLE y", ""):
        done = cli("export-postgres", store, postgres_dsn, "--schema", name)
        assert done.returncode == 2
        assert "--schema must be a lower-case identifier" in done.stderr
        assert "Traceback" not in done.stderr
        done = cli("import-postgres", postgres_dsn, store.parent / "x", "--schema", name)
        assert done.returncode == 2
        assert "--schema" in done.stderr
