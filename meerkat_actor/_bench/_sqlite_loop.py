"""The `sqlite3-loop` peer: SQLite's best case for a durable commit.

Rule 1: the same rows as the SQLite backend. One operation writes what the
backend's `atomic_apply` writes for it, in the same tables (the backend's
schema, `_sqlite_rows.SCHEMA`): the runtime's session snapshot row (upsert),
the receipt row (its sequence column `_sqlite_rows.sequence_to_i64`, its
JSON `_codec.dumps_json`) and one row per input state (upsert, its JSON
`dumps_json`). The row check of the throughput part reads the file back
through `open_sqlite_store`, so a row this loop wrote differently fails the
run.

Rule 2: nothing but SQLite. A plain `sqlite3` connection (autocommit mode:
the loop issues BEGIN IMMEDIATE and COMMIT itself), WAL, `synchronous=FULL`,
one transaction per operation, run as a plain loop in one worker thread: no
trio, no thread hop, no lock and no task switch per operation. The receipt
and the input states are encoded to their JSON inside the timed operation (a
store is handed values, as every peer is); the session snapshot is stored as
given. It does not do what the backend adds around the rows: no argument
checks, no session codec reading the snapshot's id, no look-up of an
existing receipt before the INSERT (the table's primary key refuses a
duplicate anyway).

A loop is sequential: it runs the durable-commit workloads at one task only.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Final, final

from .._codec import dumps_json
from .._sqlite_rows import SCHEMA, sequence_to_i64
from ._measure import Timed
from ._payloads import Session, Write

__all__ = ["LOOP", "LOOP_TASKS", "LOOP_WORKLOADS", "SqliteLoop"]

#: The peer's name.
LOOP: Final = "sqlite3-loop"
#: The workloads it runs, and at which concurrency (a loop is sequential).
LOOP_WORKLOADS: Final = ("commit_4k", "commit_64k")
LOOP_TASKS: Final = 1
#: The file it writes, in its row's directory.
FILE_NAME: Final = "loop.sqlite3"

_UPSERT_SESSION: Final = (
    "INSERT INTO runtime_session_snapshots (runtime_id, session_snapshot) VALUES (?, ?)"
    " ON CONFLICT(runtime_id) DO UPDATE SET session_snapshot = excluded.session_snapshot"
)
_INSERT_RECEIPT: Final = (
    "INSERT INTO runtime_boundary_receipts (runtime_id, run_id, sequence, receipt_json)"
    " VALUES (?, ?, ?, ?)"
)
_UPSERT_INPUT: Final = (
    "INSERT INTO runtime_input_states (runtime_id, input_id, state_json) VALUES (?, ?, ?)"
    " ON CONFLICT(runtime_id, input_id) DO UPDATE SET state_json = excluded.state_json"
)


@final
class SqliteLoop:
    """One `sqlite3` connection to a new file, and the timed loop.

    Every method blocks: call each from a worker thread, one at a time.
    """

    def __init__(self, path: str) -> None:
        """Create the file (its directory is made if missing), switch it to WAL
        with `synchronous=FULL`, and create the backend's tables."""
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.path = path
        self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            mode = self.connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OSError(f"{path}: SQLite refused WAL mode (it stays in {mode})")
            self.connection.execute("PRAGMA synchronous=FULL")
            for statement in SCHEMA:
                self.connection.execute(statement)
        except BaseException:
            self.connection.close()
            raise

    def run(self, session: Session, writes: Sequence[Write], seconds: float) -> Timed:
        """Commit `writes` in order as `session`'s runtime, one transaction
        each, until they run out or `seconds` have passed (a transaction
        started before then is finished and counted)."""
        execute = self.connection.execute
        executemany = self.connection.executemany
        runtime = str(session.runtime_id)
        snapshot = session.delta.session_snapshot
        latencies: list[float] = []
        starts: list[float] = []
        items: list[int] = []
        started = time.perf_counter()
        deadline = started + seconds
        for item, write in enumerate(writes):
            begin = time.perf_counter()
            if begin >= deadline:
                break
            receipt = write.receipt
            execute("BEGIN IMMEDIATE")
            try:
                execute(_UPSERT_SESSION, (runtime, snapshot))
                execute(
                    _INSERT_RECEIPT,
                    (
                        runtime,
                        str(receipt.run_id),
                        sequence_to_i64(receipt.sequence),
                        dumps_json(receipt),
                    ),
                )
                executemany(
                    _UPSERT_INPUT,
                    [(runtime, str(s.input_id), dumps_json(s)) for s in write.states],
                )
                execute("COMMIT")
            except BaseException:
                if self.connection.in_transaction:
                    execute("ROLLBACK")
                raise
            latencies.append(time.perf_counter() - begin)
            starts.append(begin)
            items.append(item)
        return Timed(latencies, starts, time.perf_counter() - started, items)

    def synchronous(self) -> int:
        """The connection's `PRAGMA synchronous` (2: FULL)."""
        value: int = self.connection.execute("PRAGMA synchronous").fetchone()[0]
        return value

    def close(self) -> None:
        """Close the connection (SQLite checkpoints the WAL at the last close)."""
        self.connection.close()
