"""Whole-store copies between the durable store and the SQLite backend:
`meerkat-actor export-sqlite` and `import-sqlite`.

Rule 1: a copy never changes its source. The durable side is read with the
read-only recovery of `_dry_run.py`; the SQLite side is opened read-only.

Rule 2: a copy only makes new things. The target must not exist (a SQLite
file) or be an empty directory (a store); a failed export removes the file
it created, and a failed (or killed) import leaves no directory (perhaps a
`<dir>.incomplete-<hex>` one beside it), the empty directory that was there,
or one holding INCOMPLETE, which `open_store` refuses as an incomplete
import: never an empty-looking store (`DurableLog.create_from_state`).

Rule 3: every function here blocks on the disk; the command line calls them
from plain synchronous code, and an async caller must use
`trio.to_thread.run_sync`.

Theory of operation. The SQLite side goes through `_sqlite_db.Database`
(`open`, `open_read_only`, `read_state`, `write_state`, `close`): one
transaction writes the whole state. The durable side is written by
`DurableLog.create_from_state` (one snapshot at LSN 0). Each copy reads the
result back, so the caller can compare it with `same_content`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import Final

from . import _core
from ._core import StoreState
from ._dry_run import StoreView, read_store
from ._durable import DurableLog
from ._errors import NotAStore
from ._fs import FileIO
from ._sqlite_db import DEFAULT_BUSY_TIMEOUT, Database

__all__ = ["export_sqlite", "import_sqlite", "read_sqlite", "same_content"]

#: The first 16 bytes of every SQLite database file (sqlite.org/fileformat.html).
SQLITE_HEADER: Final = b"SQLite format 3\x00"


def read_sqlite(path: str) -> StoreState:
    """The whole content of the SQLite store at `path`, read-only.

    Args:
        path: the SQLite file.

    Returns:
        Its content as a store state.

    Raises:
        NotAStore: no such file, not a SQLite database (it does not start
            with SQLite's header), or it lacks Meerkat's tables.
        CorruptStore: a SQLite database SQLite reports damaged, or a row
            does not decode.
        ReadFailed: SQLite failed.
        OSError: the file cannot be read.
    """
    if not os.path.isfile(path):
        what = "is not a file" if os.path.exists(path) else "does not exist"
        raise NotAStore(f"{os.path.abspath(path)} {what}")
    with open(path, "rb") as file:
        head = file.read(len(SQLITE_HEADER))
    # An empty file is an empty database to SQLite (then: no Meerkat tables).
    if head and head != SQLITE_HEADER:
        raise NotAStore(
            f"{os.path.abspath(path)} is not a SQLite store: it is not a SQLite database"
            " (it does not start with SQLite's file header)"
        )
    database = Database.open_read_only(path)
    try:
        return database.read_state()
    finally:
        database.close()


def export_sqlite(state: StoreState, path: str, io: FileIO | None = None) -> StoreState:
    """Write `state` into a new SQLite store at `path` (one transaction,
    `synchronous=FULL`); return what reading the file back gives.

    Args:
        state: what to write.
        path: the new SQLite file.
        io: the file layer that removes a half-written file (default: the real one).

    Returns:
        The content read back from the new file.

    Raises:
        FileExistsError: `path` exists.
        NotAStore: the directory `path` names does not exist.
        ReadFailed, WriteFailed, CorruptStore: as `open_sqlite_store` and its writes.
    """
    io = FileIO() if io is None else io
    if os.path.lexists(path):
        raise FileExistsError(errno.EEXIST, "the export's target exists", path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise NotAStore(f"cannot export to {path}: its directory {directory} does not exist")
    database = Database.open(path, "FULL", DEFAULT_BUSY_TIMEOUT)
    try:
        database.write_state(state)
    except BaseException:
        database.close()
        for leftover in (path, path + "-wal", path + "-shm"):
            with contextlib.suppress(FileNotFoundError):
                io.remove(leftover)  # the file this call created, half written
        raise
    try:
        return database.read_state()
    finally:
        database.close()


def import_sqlite(state: StoreState, path: str, io: FileIO | None = None) -> StoreView:
    """Write `state` as a new actor store at `path` (one snapshot at LSN 0);
    return what recovering it (read-only) gives.

    Args:
        state: what to write.
        path: the new store directory (missing, or empty).
        io: the file layer that writes it (default: the real one).

    Returns:
        The new store as `read_store` sees it.

    Raises:
        ValueError: `path` exists and is not an empty directory.
        OSError: writing failed.
    """
    DurableLog.create_from_state(FileIO() if io is None else io, path, 0, state)
    return read_store(path)


def same_content(a: StoreState, b: StoreState) -> bool:
    """True if every read gives the same answer on both.

    Args:
        a: one state.
        b: the other.

    Returns:
        Whether they hold the same content (empty runtime records aside).
    """
    if a.oauth_flow_snapshot != b.oauth_flow_snapshot:
        return False
    runtimes = _core.list_runtimes(a)
    if runtimes != _core.list_runtimes(b):
        return False
    # Compared as values, through the core's reads: packed bytes may differ
    # for equal values (a map's keys in another order, written by another
    # writer), and a value that does not decode raises CorruptStore.
    reads = (
        _core.load_session_snapshot,
        _core.load_runtime_state,
        _core.load_ops_lifecycle,
        _core.load_input_states,
        _core.load_boundary_receipts,
    )
    return all(read(a, rid) == read(b, rid) for rid in runtimes for read in reads)
