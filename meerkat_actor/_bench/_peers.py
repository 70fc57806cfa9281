"""The stores a benchmark row runs against, and the naive baseline.

Rule 1: every peer gets the same calls. A workload talks to `BenchStore`, the
part of `RuntimeStore` the workloads use, so each peer runs the very same
operations.

Rule 2: the baseline keeps the contract's semantics. `DictStore` is what a
user might write first: plain dicts behind a `trio.Lock`, nothing on disk. It
still does what the workloads rely on: the session codec reads the
snapshot's id and checks `session_store_key`, a duplicate receipt is refused
with `ReceiptConflict`, input states are upserted by id and listed in id
order, a failed call changes nothing, and the OAuth updater runs atomically
(an updater that raises or returns non-bytes changes nothing).

The peers: `actor` (`open_store(dir)`, durable, default settings), `sqlite`
(`open_sqlite_store(file, synchronous="FULL")`, the durable peer),
`sqlite3-loop` (SQLite's best case: a plain `sqlite3` loop in a worker
thread, `_sqlite_loop`; it is no `BenchStore`, and runs the durable-commit
workloads at one task only), `memory` (`open_store()`, the same actor
without a disk), `postgres` (`open_postgres_store(dsn)`, a schema of its own
per row on a server the bench starts, `synchronous_commit=on`; only where
psycopg and PostgreSQL's binaries are installed) and `dict` (`DictStore`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Protocol

import trio

from .._actor import ActorStore, open_store
from .._errors import ReceiptConflict, SessionKeyMismatch, WriteFailed
from .._front import StoreStatistics
from .._ids import InputId, LogicalRuntimeId, RunId, SessionId
from .._postgres import open_postgres_store
from .._session_codec import MeerkatSessionCodec
from .._sqlite import open_sqlite_store
from .._types import RunBoundaryReceipt, SessionDelta, StoredInputState
from ._sqlite_loop import LOOP

__all__ = [
    "PEERS",
    "POSTGRES",
    "BenchStore",
    "DictStore",
    "open_peer",
    "postgres_schema",
    "statistics",
]

#: Every peer, in the order tables list them.
PEERS: Final = ("actor", "sqlite", LOOP, "postgres", "memory", "dict")
#: The peer that needs a PostgreSQL server (`open_peer(..., postgres=dsn)`).
POSTGRES: Final = "postgres"
#: The durable peers (the ones a recovery can reopen).
DURABLE: Final = ("actor", "sqlite")


class BenchStore(Protocol):
    """The operations the workloads use (a part of `RuntimeStore`)."""

    async def atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        delta: SessionDelta | None,
        receipt: RunBoundaryReceipt,
        input_updates: Sequence[StoredInputState],
        session_store_key: SessionId | None = None,
    ) -> None: ...

    async def load_input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]: ...

    async def load_input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None: ...

    async def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None: ...

    async def load_session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None: ...

    async def update_auth_oauth_flow_snapshot(
        self, update: Callable[[bytes | None], bytes]
    ) -> None: ...

    async def load_auth_oauth_flow_snapshot(self) -> bytes | None: ...


class DictStore:
    """The naive baseline: dicts behind one `trio.Lock`, no durability.

    Every call takes the lock; nothing inside awaits, so the lock is never
    contended and costs one trio checkpoint per call.
    """

    def __init__(self) -> None:
        self._lock = trio.Lock()
        self._codec = MeerkatSessionCodec()
        self._sessions: dict[LogicalRuntimeId, bytes] = {}
        self._receipts: dict[tuple[LogicalRuntimeId, RunId, int], RunBoundaryReceipt] = {}
        self._inputs: dict[LogicalRuntimeId, dict[InputId, StoredInputState]] = {}
        self._oauth: bytes | None = None

    async def atomic_apply(
        self,
        runtime_id: LogicalRuntimeId,
        delta: SessionDelta | None,
        receipt: RunBoundaryReceipt,
        input_updates: Sequence[StoredInputState],
        session_store_key: SessionId | None = None,
    ) -> None:
        async with self._lock:
            if delta is not None:
                try:
                    actual = self._codec.session_id(delta.session_snapshot)
                except ValueError as exc:
                    raise WriteFailed(f"runtime {runtime_id}: {exc}") from exc
                if session_store_key is not None and session_store_key != actual:
                    raise SessionKeyMismatch(session_store_key, actual, runtime_id=str(runtime_id))
            key = (runtime_id, receipt.run_id, receipt.sequence)
            if key in self._receipts:
                raise ReceiptConflict(
                    f"runtime {runtime_id}: a receipt for run {receipt.run_id}"
                    f" sequence {receipt.sequence} exists already"
                )
            # Every check passed: now change things (nothing below can fail).
            if delta is not None:
                self._sessions[runtime_id] = delta.session_snapshot
            self._receipts[key] = receipt
            states = self._inputs.setdefault(runtime_id, {})
            for stored in input_updates:
                states[stored.input_id] = stored

    async def load_input_states(self, runtime_id: LogicalRuntimeId) -> list[StoredInputState]:
        async with self._lock:
            states = self._inputs.get(runtime_id, {})
            return [states[key] for key in sorted(states, key=lambda i: i.value.int)]

    async def load_input_state(
        self, runtime_id: LogicalRuntimeId, input_id: InputId
    ) -> StoredInputState | None:
        async with self._lock:
            return self._inputs.get(runtime_id, {}).get(input_id)

    async def load_boundary_receipt(
        self, runtime_id: LogicalRuntimeId, run_id: RunId, sequence: int
    ) -> RunBoundaryReceipt | None:
        async with self._lock:
            return self._receipts.get((runtime_id, run_id, sequence))

    async def load_session_snapshot(self, runtime_id: LogicalRuntimeId) -> bytes | None:
        async with self._lock:
            return self._sessions.get(runtime_id)

    async def update_auth_oauth_flow_snapshot(
        self, update: Callable[[bytes | None], bytes]
    ) -> None:
        async with self._lock:
            new = update(self._oauth)
            if not isinstance(new, bytes):
                raise TypeError(f"the updater must return bytes, got {type(new).__name__}")
            self._oauth = new

    async def load_auth_oauth_flow_snapshot(self) -> bytes | None:
        async with self._lock:
            return self._oauth


def postgres_schema(directory: str) -> str:
    """The schema of the `postgres` peer's store for a row's `directory`."""
    return "bench_" + hashlib.sha256(directory.encode()).hexdigest()[:20]


@asynccontextmanager
async def open_peer(
    peer: str, directory: str, *, postgres: str | None = None
) -> AsyncIterator[BenchStore]:
    """Open a fresh, empty store of kind `peer`; durable ones live in `directory`
    (which must not exist yet, or be empty), the `postgres` one in a new
    schema named after it on the server of the connection string `postgres`
    (dropped afterwards)."""
    if peer == POSTGRES:
        if postgres is None:
            raise ValueError("the postgres peer needs a server: pass postgres=DSN")
        schema = postgres_schema(directory)
        try:
            async with open_postgres_store(postgres, schema=schema) as store:
                yield store
        finally:
            drop = _drop_schema()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(drop, postgres, schema)
    elif peer == "actor":
        async with open_store(os.path.join(directory, "actor")) as actor:
            yield actor
    elif peer == "sqlite":
        await trio.to_thread.run_sync(os.makedirs, directory, 0o700, True)
        path = os.path.join(directory, "peer.sqlite3")
        async with open_sqlite_store(path, synchronous="FULL") as sqlite:
            yield sqlite
    elif peer == "memory":
        async with open_store() as memory:
            yield memory
    elif peer == "dict":
        await trio.lowlevel.checkpoint()
        yield DictStore()
    elif peer == LOOP:
        raise ValueError(f"{LOOP} is not a store: it runs its own loop (_sqlite_loop)")
    else:
        raise ValueError(f"unknown peer {peer!r}; peers are {', '.join(PEERS)}")


def _drop_schema() -> Callable[[str, str], None]:
    from .._postgres_db import drop_schema  # noqa: PLC0415 - psycopg is an optional extra

    return drop_schema


def statistics(store: BenchStore) -> StoreStatistics | None:
    """The actor store's counters; `None` for the other peers."""
    return store.statistics() if isinstance(store, ActorStore) else None
