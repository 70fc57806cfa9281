"""Whole-store copies between the durable store and a PostgreSQL schema:
`meerkat-actor export-postgres` and `import-postgres`.

Rule 1: a copy never changes its source. The durable side is read with the
read-only recovery of `_dry_run.py`; the PostgreSQL side is read in one
read-only transaction and never created.

Rule 2: a copy only makes new things. An export's target schema must hold
no store, or an empty one; the schema and the store's tables are created if
missing, in the same transaction as the write, which checks the store is
empty while it holds every table against writers: a failed export leaves
nothing, and never touches anything of anyone else's. An import's target is
a new store directory, written as `import-sqlite` writes one
(`_sqlite_copy.import_sqlite`).

Rule 3: every function here blocks (disk and network); the command line
calls them from plain synchronous code. Importing this module needs psycopg
(the `postgres` extra).

Theory of operation. The PostgreSQL side goes through `_postgres_db.Database`
(one transaction writes the whole state, one reads it back), so an export
lands whole or not at all; each copy reads its result back, so the caller
can compare it with `_sqlite_copy.same_content`.
"""

from __future__ import annotations

from ._core import StoreState
from ._postgres import SCHEMA_NAME
from ._postgres_db import Database

__all__ = ["export_postgres", "read_postgres"]

_TIMEOUTS = {"lock_timeout": 5.0, "connect_timeout": 10.0}


def _open(dsn: str, schema: str, *, create: bool, prepare: bool = True) -> Database:
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"schema must be a lower-case identifier, got {schema!r}")
    return Database.open(
        dsn,
        schema,
        synchronous_commit="on",
        max_connections=1,
        migrate=False,
        create=create,
        prepare=prepare,
        **_TIMEOUTS,
    )


def read_postgres(dsn: str, schema: str) -> StoreState:
    """The whole content of the PostgreSQL store in `schema`, read-only.

    Raises:
        NotAStore: the schema holds no store.
        ReadFailed: the server cannot be reached or failed.
        CorruptStore: a row does not decode or does not match its key.
        UnsupportedFormat: the schema is of another version.
    """
    database = _open(dsn, schema, create=False)
    try:
        return database.read_state()
    finally:
        database.close()


def export_postgres(state: StoreState, dsn: str, schema: str) -> StoreState:
    """Write `state` into `schema`'s store (the schema and its tables created
    if missing; an existing store must be empty) in one transaction; return
    what reading it back gives (`Database.export_state`).

    Raises:
        ValueError: `schema` is not a schema name this package accepts.
        FileExistsError: the schema's store holds something.
        ReadFailed, WriteFailed, UnsupportedFormat: as `open_postgres_store`
            and its writes (nothing was created or changed).
        CommitOutcomeUnknown: the connection failed during the COMMIT.
    """
    database = _open(dsn, schema, create=True, prepare=False)
    try:
        database.export_state(state)
        return database.read_state()
    finally:
        database.close()
