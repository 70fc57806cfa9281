"""`meerkat_actor.asyncio` (issue 16): the stores for asyncio programs.

pytest runs in trio mode, so every test here is a plain function that runs
its own event loop: `run_asyncio(main)` (asyncio.run, or anyio on asyncio),
with warnings as errors, a hook that fails the test on anything unraisable
(trio's "Trio guest run got abandoned" warning is raised while a run-loop
generator is collected), and afterwards the checks that no trio run is left
on the thread and no host is registered.

What is compared with the trio stores is compared by running one script
against both (`ma.open_*` under `trio.run`, `meerkat_actor.asyncio.open_*`
under `asyncio.run`): the values read back, the errors (class and message),
the counters. What is specific to asyncio is checked through asyncio:
cancellation by `asyncio.timeout`, `asyncio.wait_for`, `Task.cancel` and
anyio's scopes, several stores and loops, the loop never being blocked.

Two tests hold a durable store's log write on a gate (`Writer._append`
waits on a `threading.Event`; it runs in a worker thread, so the loop goes
on): that makes "reached the store but not yet durable" a state a test can
stand in, instead of a race it hopes to hit.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import inspect
import itertools
import os
import re
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
import trio
from _values import (
    I1,
    I2,
    I3,
    OTHER,
    RT,
    RUN,
    SID,
    SID2,
    everything,
    increment,
    input_state,
    populate,
    receipt,
    session,
    stored,
)

import meerkat_actor as ma
from meerkat_actor import _guest, _writer
from meerkat_actor import asyncio as maa

PH = ma.InputLifecycleState
RS = ma.RuntimeState
LRI = ma.LogicalRuntimeId
TIMEOUT = 60.0  # seconds; only a hang ever gets near it
KINDS = ["memory", "durable", "sqlite", "postgres"]
LOCAL_KINDS = ["memory", "durable", "sqlite"]


def iid(n: int) -> ma.InputId:
    return ma.InputId(uuid.UUID(int=n))


I4 = iid(0x400)
UNKNOWN = iid(0xDEAD)


# --- running a loop --------------------------------------------------------------------------


@contextmanager
def strict() -> Iterator[None]:
    """Warnings are errors, and anything unraisable (a warning raised while
    a trio run-loop generator is collected, a never-retrieved exception)
    fails the test."""
    unraisable: list[str] = []
    previous_hook = sys.unraisablehook

    def hook(info: Any) -> None:
        unraisable.append(f"{info.exc_type.__name__}: {info.exc_value} ({info.object!r})")

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield
            gc.collect()
    finally:
        sys.unraisablehook = previous_hook
    assert not unraisable, unraisable


def run_loop(main: Callable[[], Awaitable[Any]], *, anyio_backend: bool = False) -> Any:
    """Run `main()` in a new asyncio loop (through anyio if asked); then
    check that no trio run is left on this thread and the loop's host is
    gone."""
    loops: list[asyncio.AbstractEventLoop] = []

    async def guarded() -> Any:
        loops.append(asyncio.get_running_loop())
        with anyio.fail_after(TIMEOUT):
            return await main()

    result = anyio.run(guarded, backend="asyncio") if anyio_backend else asyncio.run(guarded())
    assert not trio.lowlevel.in_trio_run(), "a trio guest run outlived its event loop"
    assert loops[0] not in _guest._hosts, "the loop's trio host is still registered"
    trio.run(trio.lowlevel.checkpoint)  # the thread can run trio again
    return result


def run_asyncio(main: Callable[[], Awaitable[Any]], *, anyio_backend: bool = False) -> Any:
    """`run_loop(main)`, `strict()`ly."""
    with strict():
        return run_loop(main, anyio_backend=anyio_backend)


def assert_no_guest_run() -> None:
    """(In the loop, once its last store has closed.) The guest run has
    ended: closing waited for it."""
    assert not trio.lowlevel.in_trio_run(), "the trio guest run is still going"


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.002)


async def settle() -> None:
    """Give the loop (and the trio guest run on it) time to do what it can."""
    for _ in range(5):
        await asyncio.sleep(0.01)


# --- the stores under test -------------------------------------------------------------------


@dataclass
class Backend:
    """One store location, opened through trio (`trio()`) or asyncio (`aio()`)."""

    kind: str
    location: Path
    dsn: str | None = None
    schema: str | None = None

    def _open(self, module: Any, **options: Any) -> AbstractAsyncContextManager[Any]:
        if self.kind == "memory":
            return module.open_store(**options)  # type: ignore[no-any-return]
        if self.kind == "durable":
            return module.open_store(self.location / "store", **options)  # type: ignore[no-any-return]
        if self.kind == "sqlite":
            return module.open_sqlite_store(self.location / "rt.sqlite3", **options)  # type: ignore[no-any-return]
        return module.open_postgres_store(self.dsn, schema=self.schema, **options)  # type: ignore[no-any-return]

    def trio(self, **options: Any) -> AbstractAsyncContextManager[Any]:
        return self._open(ma, **options)

    def aio(self, **options: Any) -> AbstractAsyncContextManager[Any]:
        return self._open(maa, **options)

    @property
    def persistent(self) -> bool:
        return self.kind != "memory"

    def normalize(self, value: Any) -> Any:
        """`value` with this backend's paths, schema and store id replaced by
        placeholders."""
        if isinstance(value, str):
            for path in {os.path.realpath(self.location), str(self.location)}:
                value = value.replace(path, "<location>")
            if self.schema:
                value = value.replace(self.schema, "<schema>")
            return re.sub(r"postgres:[0-9a-f-]{36}/", "postgres:<store id>/", value)
        if isinstance(value, tuple):
            return tuple(self.normalize(part) for part in value)
        if isinstance(value, list):
            return [self.normalize(part) for part in value]
        return value


@pytest.fixture
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    """`make(kind, name="a")`: a fresh location of that kind (a schema of its
    own for PostgreSQL, dropped afterwards)."""
    schemas: list[tuple[str, str]] = []

    def make(kind: str, name: str = "a") -> Backend:
        location = tmp_path / name
        location.mkdir(exist_ok=True)
        if kind != "postgres":
            return Backend(kind, location)
        dsn = request.getfixturevalue("postgres_dsn")
        schema = "aio_" + hashlib.sha256(f"{location}{uuid.uuid4()}".encode()).hexdigest()[:20]
        schemas.append((dsn, schema))
        return Backend(kind, location, dsn, schema)

    yield make
    for dsn, schema in schemas:
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# --- one script for both stores ----------------------------------------------------------------


@dataclass
class Recorder:
    """Runs calls and records each outcome: ("ok", value) or ("error", class, message)."""

    log: list[tuple[Any, ...]] = field(default_factory=list)

    async def __call__(self, label: str, call: Callable[[], Any]) -> None:
        try:
            value = call()
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            self.log.append((label, "error", type(exc), str(exc)))
        else:
            self.log.append((label, "ok", value))

    def entries(self) -> dict[str, tuple[Any, ...]]:
        return {entry[0]: entry[1:] for entry in self.log}


def refuse(current: bytes | None) -> bytes:
    raise ValueError(f"the updater refuses {current!r}")


def terminal(input_id: ma.InputId) -> ma.StoredInputState:
    shell = input_state(input_id, persisted_input={"text": "the payload"})
    seed = ma.InputStateSeed(
        phase=PH.CONSUMED, terminal_outcome=ma.InputTerminalOutcome.consumed(), attempt_count=1
    )
    return ma.StoredInputState(shell, seed)


# Bad arguments of the script: the error class and a word its message names.
BAD_ARGUMENTS = {
    "oauth persist str": (TypeError, "snapshot"),
    "oauth update not callable": (TypeError, "update"),
    "commit session bad runtime": (TypeError, "runtime_id"),
    "apply bad receipt": (TypeError, "receipt"),
    "apply single state": (TypeError, "input_updates"),
    "apply bad key": (TypeError, "session_store_key"),
    "receipt negative sequence": (ValueError, "sequence"),
    "receipt huge sequence": (ValueError, "sequence"),
    "receipt str sequence": (TypeError, "sequence"),
    "inputs bad runtime": (TypeError, "runtime_id"),
    "input bad id": (TypeError, "input_id"),
    "persist input bad": (TypeError, "state"),
    "lifecycle bad commit": (TypeError, "commit"),
    "ops bad": (TypeError, "snapshot"),
    "retire single id": (TypeError, "input_ids"),
}


async def bad_arguments(store: Any, r: Recorder) -> None:
    await r("oauth persist str", lambda: store.persist_auth_oauth_flow_snapshot("x"))
    await r("oauth update not callable", lambda: store.update_auth_oauth_flow_snapshot(b"x"))
    await r("commit session bad runtime", lambda: store.commit_session_snapshot("rt", session()))
    await r("apply bad receipt", lambda: store.atomic_apply(RT, None, "receipt", []))
    await r("apply single state", lambda: store.atomic_apply(RT, None, receipt(9), stored(I3)))
    await r("apply bad key", lambda: store.atomic_apply(RT, session(), receipt(9), [], "sid"))
    await r("receipt negative sequence", lambda: store.load_boundary_receipt(RT, RUN, -1))
    await r("receipt huge sequence", lambda: store.load_boundary_receipt(RT, RUN, 2**64))
    await r("receipt str sequence", lambda: store.load_boundary_receipt(RT, RUN, "7"))
    await r("inputs bad runtime", lambda: store.load_input_states("rt"))
    await r("input bad id", lambda: store.load_input_state(RT, "x"))
    await r("persist input bad", lambda: store.persist_input_state(RT, I3))
    await r("lifecycle bad commit", lambda: store.commit_machine_lifecycle(RT, "idle", []))
    await r("ops bad", lambda: store.persist_ops_lifecycle(RT, {"epoch": 1}))
    await r("retire single id", lambda: store.retire_input_payloads(RT, I4))


async def contract_script(store: Any) -> tuple[list[tuple[Any, ...]], tuple[int, ...]]:
    """Every method of the contract, with good and bad arguments; returns the
    log and the counters of calls that reached the store."""
    r = Recorder()
    await r("authority", store.auth_authority_key)
    await r("oauth empty", store.load_auth_oauth_flow_snapshot)
    await r("oauth persist", lambda: store.persist_auth_oauth_flow_snapshot(b"oauth-0"))
    await r("oauth update", lambda: store.update_auth_oauth_flow_snapshot(lambda c: c + b"+1"))
    await r("oauth updater raises", lambda: store.update_auth_oauth_flow_snapshot(refuse))
    await r("oauth updater str", lambda: store.update_auth_oauth_flow_snapshot(lambda c: "str"))
    await r("oauth read", store.load_auth_oauth_flow_snapshot)
    await r("commit session", lambda: store.commit_session_snapshot(RT, session(SID, turn=1)))
    await r(
        "commit unreadable session",
        lambda: store.commit_session_snapshot(RT, ma.SessionDelta(b"not json")),
    )
    await r("session read", lambda: store.load_session_snapshot(RT))
    await r("apply", lambda: store.atomic_apply(RT, session(SID), receipt(7), [stored(I1)], SID))
    await r(
        "apply conflict",
        lambda: store.atomic_apply(RT, session(SID, turn=2), receipt(7), [stored(I2)], SID),
    )
    await r(
        "apply key mismatch",
        lambda: store.atomic_apply(RT, session(SID, turn=3), receipt(8), [stored(I2)], SID2),
    )
    await r(
        "apply later wins",
        lambda: store.atomic_apply(RT, None, receipt(8), [stored(I2), stored(I2, PH.QUEUED)]),
    )
    before = await everything(store)
    await bad_arguments(store, r)
    await r("unchanged by bad arguments", lambda: everything(store))
    r.log[-1] = (*r.log[-1][:2], r.log[-1][2] == before)
    await r("receipt 7", lambda: store.load_boundary_receipt(RT, RUN, 7))
    await r("receipt 9", lambda: store.load_boundary_receipt(RT, RUN, 9))
    await r("receipts", lambda: store.load_boundary_receipts(RT))
    await r("inputs", lambda: store.load_input_states(RT))
    await r("input I2", lambda: store.load_input_state(RT, I2))
    await r("input unknown", lambda: store.load_input_state(RT, I3))
    await r("persist input", lambda: store.persist_input_state(RT, stored(I3)))
    await r(
        "lifecycle",
        lambda: store.commit_machine_lifecycle(
            RT,
            ma.machine_transition(RS.INITIALIZING, RS.IDLE),
            [stored(I1, PH.QUEUED)],
            expected=None,
        ),
    )
    await r(
        "lifecycle conflict",
        lambda: store.commit_machine_lifecycle(
            RT, ma.machine_transition(RS.IDLE, RS.RUNNING), [], expected=None
        ),
    )
    await r("runtime state", lambda: store.load_runtime_state(RT))
    ops = ma.PersistedOpsSnapshot("epoch-1", {"a": [1, 2]})
    await r("ops persist", lambda: store.persist_ops_lifecycle(RT, ops))
    await r("ops read", lambda: store.load_ops_lifecycle(RT))
    await r("ops delete", lambda: store.delete_ops_lifecycle(RT))
    await r("ops deleted", lambda: store.load_ops_lifecycle(RT))
    await r("persist terminal", lambda: store.persist_input_state(RT, terminal(I4)))
    await r("retire not terminal", lambda: store.retire_input_payloads(RT, [I4, I3]))
    await r("retire unknown", lambda: store.retire_input_payloads(RT, [UNKNOWN]))
    await r("retire", lambda: store.retire_input_payloads(RT, [I4]))
    await r("retired", lambda: store.load_input_state(RT, I4))
    await r("other runtime", lambda: store.commit_session_snapshot(OTHER, session(SID2)))
    await r("list", store.list_runtimes)
    await r("purge not destroyed", lambda: store.purge_runtime(RT))
    await r("clear session", lambda: store.clear_session_snapshot(RT))
    await r("session cleared", lambda: store.load_session_snapshot(RT))
    await r(
        "destroy",
        lambda: store.commit_machine_lifecycle(
            RT, ma.machine_transition(RS.IDLE, RS.DESTROYED), [], expected=RS.IDLE
        ),
    )
    await r("purge", lambda: store.purge_runtime(RT))
    await r("list after purge", store.list_runtimes)
    await r("everything", lambda: everything(store))
    stats = store.statistics()
    return r.log, (stats.commands, stats.refused, stats.effects)


async def closed_script(store: Any) -> list[tuple[Any, ...]]:
    """Every method on a closed handle (good arguments, then bad ones)."""
    r = Recorder()
    await r("oauth persist", lambda: store.persist_auth_oauth_flow_snapshot(b"x"))
    await r("oauth read", store.load_auth_oauth_flow_snapshot)
    await r("oauth update", lambda: store.update_auth_oauth_flow_snapshot(increment))
    await r("commit session", lambda: store.commit_session_snapshot(RT, session()))
    await r("apply", lambda: store.atomic_apply(RT, session(), receipt(70), [stored(I1)], SID))
    await r("inputs", lambda: store.load_input_states(RT))
    await r("input", lambda: store.load_input_state(RT, I1))
    await r("persist input", lambda: store.persist_input_state(RT, stored(I1)))
    await r("receipt", lambda: store.load_boundary_receipt(RT, RUN, 7))
    await r("session", lambda: store.load_session_snapshot(RT))
    await r("runtime state", lambda: store.load_runtime_state(RT))
    await r(
        "lifecycle",
        lambda: store.commit_machine_lifecycle(
            OTHER, ma.machine_transition(RS.INITIALIZING, RS.IDLE), []
        ),
    )
    await r(
        "ops persist", lambda: store.persist_ops_lifecycle(RT, ma.PersistedOpsSnapshot("e", {}))
    )
    await r("ops read", lambda: store.load_ops_lifecycle(RT))
    await r("list", store.list_runtimes)
    await r("receipts", lambda: store.load_boundary_receipts(RT))
    await r("clear session", lambda: store.clear_session_snapshot(RT))
    await r("ops delete", lambda: store.delete_ops_lifecycle(RT))
    await r("retire", lambda: store.retire_input_payloads(RT, [I1]))
    await r("purge", lambda: store.purge_runtime(RT))
    if hasattr(store, "checkpoint"):
        await r("checkpoint", store.checkpoint)
        await r("backup", lambda: store.backup(os.devnull + "-never-written"))
        await r("backup bad path", lambda: store.backup(3))
    await bad_arguments(store, r)
    return r.log


@pytest.mark.parametrize("kind", KINDS)
def test_every_method_answers_as_the_trio_store_does(backends: Any, kind: str) -> None:
    natives, ours = backends(kind, "trio"), backends(kind, "asyncio")

    async def script(backend: Backend, opener: Callable[..., Any]) -> Any:
        async with opener() as store:
            log, counters = await contract_script(store)
        return backend.normalize(log), counters

    expected = trio.run(script, natives, natives.trio)
    log, counters = run_asyncio(lambda: script(ours, ours.aio))
    assert log == expected[0]
    assert counters == expected[1]

    seen = {entry[0]: entry[1:] for entry in log}
    assert seen["oauth read"] == ("ok", b"oauth-0+1")
    assert seen["apply conflict"][:2] == ("error", ma.ReceiptConflict)
    assert seen["apply key mismatch"][:2] == ("error", ma.SessionKeyMismatch)
    assert seen["retire unknown"][:2] == ("error", ma.NotFound)
    assert seen["retire not terminal"][:2] == ("error", ma.NotRetirable)
    assert seen["lifecycle conflict"][:2] == ("error", ma.LifecycleConflict)
    assert seen["purge not destroyed"][:2] == ("error", ma.RuntimeNotDestroyed)
    assert seen["oauth updater raises"] == ("error", ValueError, "the updater refuses b'oauth-0+1'")
    assert seen["oauth updater str"][:2] == ("error", TypeError)
    assert seen["commit unreadable session"][:2] == ("error", ma.WriteFailed)
    assert seen["receipt 7"] == ("ok", receipt(7))
    assert seen["receipt 9"] == ("ok", None)
    assert seen["input I2"][1].seed.phase is PH.QUEUED
    assert seen["runtime state"] == ("ok", RS.IDLE)
    assert seen["ops read"] == ("ok", ma.PersistedOpsSnapshot("epoch-1", {"a": [1, 2]}))
    assert seen["ops deleted"] == ("ok", None)
    assert seen["retired"][1].state.persisted_input is None
    assert seen["list"] == ("ok", sorted([RT, OTHER], key=str))
    assert seen["list after purge"] == ("ok", [OTHER])
    assert seen["unchanged by bad arguments"] == ("ok", True)
    for label, (error, word) in BAD_ARGUMENTS.items():
        assert seen[label][:2] == ("error", error), label
        assert word in seen[label][2], (label, seen[label][2])
    if kind == "memory":
        assert seen["authority"] == ("ok", None)
    else:
        assert seen["authority"][1].startswith(("actor:", "sqlite:", "postgres")), seen["authority"]


@pytest.mark.parametrize("kind", KINDS)
def test_after_the_block_every_method_raises_store_closed(backends: Any, kind: str) -> None:
    natives, ours = backends(kind, "trio"), backends(kind, "asyncio")

    async def script(backend: Backend, opener: Callable[..., Any]) -> Any:
        async with opener() as store:
            await populate(store)
            key = store.auth_authority_key()
        before = store.statistics()
        log = await closed_script(store)
        assert store.statistics() == before  # still answers, and nothing reached the store
        assert store.auth_authority_key() == key
        return backend.normalize(log), backend.normalize(key), before.commands

    expected = trio.run(script, natives, natives.trio)
    log, key, commands = run_asyncio(lambda: script(ours, ours.aio))
    assert (log, key, commands) == expected
    assert commands == 4
    refused = {entry[0]: entry[1:] for entry in log if entry[0] not in BAD_ARGUMENTS}
    for label, outcome in refused.items():
        if label == "backup bad path":
            assert outcome[:2] == ("error", TypeError)
        else:
            assert outcome[:2] == ("error", ma.StoreClosed), label


# --- the openers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ours", "native"),
    [
        (maa.open_store, ma.open_store),
        (maa.open_sqlite_store, ma.open_sqlite_store),
        (maa.open_postgres_store, ma.open_postgres_store),
    ],
)
def test_the_openers_take_the_parameters_of_their_trio_namesakes(ours: Any, native: Any) -> None:
    def parameters(fn: Any) -> list[tuple[Any, ...]]:
        return [
            (p.name, p.kind, p.default, str(p.annotation))
            for p in inspect.signature(fn).parameters.values()
            if p.name != "_io"
        ]

    assert parameters(ours) == parameters(native)
    assert ours.__name__ == native.__name__
    assert native.__doc__
    assert native.__doc__ in (ours.__doc__ or "")


@pytest.mark.parametrize(
    ("ours", "natives"),
    [
        (maa.AsyncioActorStore, [ma.ActorStore]),
        (maa.AsyncioStore, [ma.SqliteStore, ma.PostgresStore]),
    ],
)
def test_the_handles_have_the_methods_of_the_trio_handles(ours: Any, natives: Any) -> None:
    def surface(cls: Any) -> dict[str, tuple[str, bool, str | None]]:
        return {
            name: (
                str(inspect.signature(getattr(cls, name))),
                inspect.iscoroutinefunction(getattr(cls, name)),
                getattr(cls, name).__doc__,
            )
            for name in dir(cls)
            if not name.startswith("_") and callable(getattr(cls, name))
        }

    for native in natives:
        assert surface(ours) == surface(native)
    assert issubclass(ours, ma.RuntimeStore)
    with pytest.raises(TypeError, match=r"meerkat_actor\.asyncio\.open_store"):
        ours()


OPENER_ERRORS = [
    ("memory", {"max_pending": 0}),
    ("memory", {"max_pending": "1"}),
    ("memory", {"max_batch": 0}),
    ("memory", {"checkpoint_bytes": -1}),
    ("memory", {"max_record_bytes": 2**32}),
    ("memory", {"session_codec": object()}),
    ("durable", {"max_pending": 1.5}),
    ("sqlite", {"synchronous": "SOMETIMES"}),
    ("sqlite", {"busy_timeout": -1}),
    ("sqlite", {"session_codec": 3}),
    ("postgres", {"lock_timeout": 0}),
    ("postgres", {"max_connections": 0}),
    ("postgres", {"synchronous_commit": "maybe"}),
]


@pytest.mark.parametrize(("kind", "options"), OPENER_ERRORS)
def test_a_bad_opener_argument_raises_what_trio_raises(
    backends: Any, kind: str, options: dict[str, Any]
) -> None:
    natives, ours = backends(kind, "trio"), backends(kind, "asyncio")

    async def attempt(backend: Backend, opener: Callable[..., Any]) -> Any:
        try:
            async with opener(**options):
                pass
        except Exception as exc:
            return type(exc), backend.normalize(str(exc))
        return None

    expected = trio.run(attempt, natives, natives.trio)
    assert expected is not None
    assert expected[0] in (TypeError, ValueError)
    assert run_asyncio(lambda: attempt(ours, ours.aio)) == expected
    assert next(iter(options)) in expected[1]
    assert not (ours.location / "store").exists()


def test_a_bad_path_and_unknown_arguments_are_refused_as_by_trio(tmp_path: Path) -> None:
    for call in (
        lambda m: m.open_store(3),
        lambda m: m.open_store(None, 1024),
        lambda m: m.open_store(max_pendin=3),
        lambda m: m.open_sqlite_store(None),
        lambda m: m.open_sqlite_store(),
    ):

        async def attempt(module: Any, call: Any = call) -> Any:
            try:
                async with call(module):
                    pass
            except TypeError as exc:
                return str(exc).replace("open_store() ", "").replace("open_sqlite_store() ", "")
            return None

        expected = trio.run(attempt, ma)
        assert expected is not None
        assert run_asyncio(lambda attempt=attempt: attempt(maa)) == expected


def test_open_store_on_a_locked_directory_raises_store_locked(tmp_path: Path) -> None:
    path = tmp_path / "store"

    async def main() -> None:
        async with maa.open_store(path) as store:
            await store.persist_auth_oauth_flow_snapshot(b"one")
            with pytest.raises(ma.StoreLocked):
                async with maa.open_store(path):
                    pytest.fail("opened twice")
            # The failed open left the first store working.
            await store.update_auth_oauth_flow_snapshot(lambda c: c + b"+two")
        assert_no_guest_run()
        async with maa.open_store(path) as again:  # the lock went with the store
            assert await again.load_auth_oauth_flow_snapshot() == b"one+two"

    run_asyncio(main)


def test_a_durable_store_moves_between_trio_and_asyncio(tmp_path: Path) -> None:
    path = tmp_path / "store"

    async def native_first() -> Any:
        async with ma.open_store(path) as store:
            await populate(store)
            return await everything(store)

    async def ours_then() -> Any:
        async with maa.open_store(path) as store:
            seen = await everything(store)
            await store.persist_input_state(RT, stored(I3))
            await store.update_auth_oauth_flow_snapshot(lambda c: c + b"+aio")
            return seen, await everything(store)

    async def native_last() -> Any:
        async with ma.open_store(path) as store:
            return await everything(store)

    written = trio.run(native_first)
    seen, after = run_asyncio(ours_then)
    assert seen == written
    assert after["oauth"] == b"oauth-0+aio"
    assert trio.run(native_last) == after


def snapshots(directory: Path) -> list[int]:
    return sorted(
        int(name[len("snapshot-") : -len(".snap")])
        for name in os.listdir(directory)
        if name.startswith("snapshot-") and name.endswith(".snap")
    )


def test_a_clean_close_takes_the_final_checkpoint(tmp_path: Path) -> None:
    async def write(opener: Any, path: Path) -> Any:
        async with opener(path) as store:
            await populate(store)
            for n in range(10):
                await store.persist_input_state(OTHER, stored(iid(n + 1)))
            assert snapshots(path) == []  # far below the size policy
        return store.statistics(), sorted(os.listdir(path))

    native_stats, native_files = trio.run(write, ma.open_store, tmp_path / "trio")
    stats, files = run_asyncio(lambda: write(maa.open_store, tmp_path / "aio"))
    assert files == native_files
    assert snapshots(tmp_path / "aio") == [stats.records] == [14]
    assert stats.checkpoints == native_stats.checkpoints == 1


class HostCrashed(Exception):
    pass


@pytest.mark.parametrize("kind", ["memory", "durable"])
def test_an_exit_by_exception_raises_it_as_itself_and_applies_nothing_queued(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "store" if kind == "durable" else None
    writers = 200

    async def main() -> Any:
        ran: list[int] = []
        outcomes: dict[int, BaseException | None] = {}
        first_applied = asyncio.Event()

        async def writer(store: Any, n: int) -> None:
            def update(current: bytes | None) -> bytes:
                ran.append(n)
                first_applied.set()
                return b"%d" % n

            try:
                await store.update_auth_oauth_flow_snapshot(update)
            except ma.StoreClosed as exc:
                outcomes[n] = exc
            else:
                outcomes[n] = None

        crash = HostCrashed("the host fell over")
        tasks = []
        try:
            async with maa.open_store(path, max_batch=1) as store:
                await store.persist_auth_oauth_flow_snapshot(b"before")
                tasks = [asyncio.create_task(writer(store, n)) for n in range(writers)]
                await first_applied.wait()
                raise crash
        except Exception as exc:  # whatever comes out, group or not, is checked below
            raised = exc
        assert raised is crash, repr(raised)
        assert type(raised) is HostCrashed
        await asyncio.gather(*tasks)
        assert_no_guest_run()
        return ran, outcomes, store.statistics()

    ran, outcomes, stats = run_asyncio(main)
    assert len(outcomes) == writers
    acknowledged = [n for n in ran if outcomes[n] is None]
    assert len(acknowledged) > 0
    assert 0 < len(ran) < writers / 2, "queued commands were applied after the exception"
    assert stats.commands == len(ran) + 1
    if kind == "memory":
        assert acknowledged == ran
    else:
        # Applied by the actor, perhaps, but answered StoreClosed only if
        # never made durable: what is acknowledged is what is there.
        assert acknowledged == ran[: len(acknowledged)]
        assert snapshots(tmp_path / "store") == []  # no final checkpoint

        async def reopen() -> Any:
            async with maa.open_store(path) as store:
                return await store.load_auth_oauth_flow_snapshot()

        assert run_asyncio(reopen) == b"%d" % acknowledged[-1]


# --- cancellation (SPEC §4) ------------------------------------------------------------------


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    opened = Gate(monkeypatch)
    yield opened
    opened.release.set()


class Gate:
    """Holds a durable store's log appends (in their worker thread) until
    `release` is set, once `close()` is called; `held` is set when one waits."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.release = threading.Event()
        self.held = threading.Event()

    def close(self) -> None:
        original = _writer.Writer._append

        def held_append(writer: Any, first_lsn: int, payloads: list[bytes]) -> int:
            self.held.set()
            if not self.release.wait(TIMEOUT):
                raise RuntimeError("the test never opened the gate")
            return original(writer, first_lsn, payloads)

        self.monkeypatch.setattr(_writer.Writer, "_append", held_append)


def test_a_cancelled_call_that_reached_the_store_is_waited_for(tmp_path: Path, gate: Gate) -> None:
    path = tmp_path / "store"

    async def main() -> None:
        async with maa.open_store(path) as store:
            await store.persist_auth_oauth_flow_snapshot(b"A")
            gate.close()
            seen_at_cancellation: list[bytes | None] = []

            async def write_b() -> None:
                try:
                    await store.persist_auth_oauth_flow_snapshot(b"B")
                except asyncio.CancelledError:
                    seen_at_cancellation.append(await store.load_auth_oauth_flow_snapshot())
                    raise

            task = asyncio.create_task(write_b())
            try:
                await wait_until(gate.held.is_set, "the log append")
                # Applied by the actor, not durable: no reader sees it.
                assert await store.load_auth_oauth_flow_snapshot() == b"A"
                task.cancel()
                await settle()
                assert not task.done(), "a cancelled call returned before it was durable"
                task.cancel()  # again: changes nothing
                await settle()
                assert not task.done()
                assert await store.load_auth_oauth_flow_snapshot() == b"A"
            finally:
                gate.release.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert seen_at_cancellation == [b"B"]
        async with maa.open_store(path) as again:
            assert await again.load_auth_oauth_flow_snapshot() == b"B"

    run_asyncio(main)


def test_calls_queued_behind_a_full_channel_are_withdrawn_when_cancelled(
    tmp_path: Path, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The actor waits for the writer (no room for another group), the channel
    (one slot) is full, the rest wait in order outside it. Cancelled, those
    outside are withdrawn at once and never happen; those inside are waited for."""
    monkeypatch.setattr(_writer, "MAX_PENDING_BYTES", 0)
    path = tmp_path / "store"
    callers = 12

    async def main() -> Any:
        async with maa.open_store(path, max_pending=1, max_batch=1) as store:
            await store.persist_auth_oauth_flow_snapshot(b"start")
            gate.close()
            visible: dict[int, bool] = {}

            async def write(n: int) -> None:
                try:
                    await store.persist_input_state(RT, stored(iid(n + 1)))
                except asyncio.CancelledError:
                    visible[n] = await store.load_input_state(RT, iid(n + 1)) is not None
                    raise

            tasks = []
            try:
                for n in range(callers):
                    tasks.append(asyncio.create_task(write(n)))
                    await asyncio.sleep(0)  # each call is issued in turn
                await wait_until(lambda: store.statistics().pending == 1, "a full channel")
                await settle()
                # Applied: "start", then one group in the log append, one
                # waiting for it, one waiting in the actor. One in the channel.
                assert store.statistics().commands == 4, store.statistics()
                for task in tasks:
                    task.cancel()
                await settle()
                done = [task.done() for task in tasks]
                assert done == [False] * 4 + [True] * (callers - 4), done
                assert all(visible[n] is False for n in range(4, callers))
            finally:
                gate.release.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results), results
            assert [visible[n] for n in range(callers)] == [True] * 4 + [False] * (callers - 4)
            assert store.statistics().commands == 5
            stored_now = await store.load_input_states(RT)
        async with maa.open_store(path) as again:
            return stored_now, await again.load_input_states(RT)

    stored_then, reopened = run_asyncio(main)
    assert [s.input_id for s in reopened] == [iid(n + 1) for n in range(4)]
    assert reopened == stored_then


def test_calls_of_many_tasks_reach_the_store_in_the_order_they_were_made() -> None:
    """Through a one-slot channel, with the overflow in use all the time:
    the order the actor applies commands is the order they were issued."""
    tasks, rounds = 40, 25

    async def main() -> list[int]:
        issued = itertools.count()
        applied: list[int] = []

        def updater(n: int) -> Callable[[bytes | None], bytes]:
            def update(current: bytes | None) -> bytes:
                applied.append(n)
                return b"%d" % n

            return update

        async with maa.open_store(max_pending=1, max_batch=3) as store:

            async def caller() -> None:
                for _ in range(rounds):
                    await store.update_auth_oauth_flow_snapshot(updater(next(issued)))

            await asyncio.gather(*(caller() for _ in range(tasks)))
            assert store.statistics().largest_batch > 1
        return applied

    applied = run_asyncio(main)
    assert len(applied) == tasks * rounds
    assert applied == sorted(applied)


# How each writer cancels its calls, and with what delays (0 included: the
# timeout fires before the call can have reached the store).
DELAYS = [0, 0, 1e-5, 5e-5, 2e-4, 5e-4, 1e-3, 3e-3, None]


async def cancel_by(mechanism: str, call: Awaitable[None], i: int) -> bool:
    """Await `call`, cancelled by `mechanism` (not if its delay is None);
    return whether it was cancelled."""
    delay = DELAYS[i % len(DELAYS)]
    try:
        if delay is None:
            await call
        elif mechanism == "timeout":
            async with asyncio.timeout(delay):
                await call
        elif mechanism == "wait_for":
            await asyncio.wait_for(call, delay)
        elif mechanism == "task":
            task = asyncio.ensure_future(call)
            for _ in range(i % 7):
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return True
        elif mechanism == "anyio":
            with anyio.move_on_after(delay) as scope:
                await call
            return scope.cancelled_caught
        else:
            raise AssertionError(mechanism)
    except TimeoutError:
        return True
    return False


OUTCOMES = ("acked", "happened", "never")
SIZES = {"memory": (16, 40), "durable": (16, 25), "sqlite": (6, 12)}


@pytest.mark.parametrize("kind", LOCAL_KINDS)
@pytest.mark.parametrize("mechanism", ["timeout", "wait_for", "task", "anyio"])
def test_a_cancelled_write_never_happened_or_is_visible_before_the_cancellation(
    backends: Any, kind: str, mechanism: str
) -> None:
    backend: Backend = backends(kind)
    writers, calls = SIZES[kind]
    options = {} if kind == "sqlite" else {"max_pending": 1}
    outcomes: dict[tuple[int, int], str] = {}

    def key(w: int, i: int) -> ma.InputId:
        return iid((w + 1) << 32 | i)

    async def check(store: Any) -> None:
        for w in range(writers):
            present = {s.input_id for s in await store.load_input_states(LRI(f"w{w}"))}
            assert present == {key(w, i) for i in range(calls) if outcomes[w, i] != "never"}, (
                f"writer {w}"
            )

    async def main() -> None:
        async with backend.aio(**options) as store:

            async def writer(w: int) -> None:
                runtime = LRI(f"w{w}")
                for i in range(calls):
                    cancelled = await cancel_by(
                        mechanism, store.persist_input_state(runtime, stored(key(w, i))), w + i
                    )
                    # Before this task's next call: the write is there or never will be.
                    present = await store.load_input_state(runtime, key(w, i)) is not None
                    if not cancelled:
                        assert present, "an acknowledged write is not visible"
                    outcomes[w, i] = (
                        "acked" if not cancelled else "happened" if present else "never"
                    )

            if mechanism == "anyio":
                async with anyio.create_task_group() as group:
                    for w in range(writers):
                        group.start_soon(writer, w)
            else:
                await asyncio.gather(*(writer(w) for w in range(writers)))
            await check(store)
            stats = store.statistics()
        counts = {what: list(outcomes.values()).count(what) for what in OUTCOMES}
        assert counts["acked"] > 0, counts
        assert counts["never"] > 0, counts
        if kind != "sqlite":  # and calls cancelled once they had reached the store
            assert counts["happened"] > 0, counts
        if kind == "memory":
            assert stats.commands == counts["acked"] + counts["happened"], (stats, counts)
        if backend.persistent:
            async with backend.aio() as store:  # nothing withdrawn turned up later
                await check(store)

    run_asyncio(main, anyio_backend=mechanism == "anyio")


def test_anyio_scopes_cancelled_repeatedly_around_calls(tmp_path: Path) -> None:
    """anyio cancels a task again and again until it leaves the scope; an
    already-sent call is still waited for (and its effect is visible)."""

    async def main() -> None:
        async with maa.open_store(tmp_path / "store", max_pending=2) as store:
            counter = 0

            async def worker() -> None:
                nonlocal counter
                for i in range(40):
                    with anyio.CancelScope() as scope:
                        if i % 3 == 0:
                            scope.cancel()  # cancelled before the call starts
                        await store.update_auth_oauth_flow_snapshot(increment)
                    if not scope.cancelled_caught:
                        counter += 1
                    with anyio.move_on_after(0.0005 * (i % 4)):
                        await store.update_auth_oauth_flow_snapshot(increment)
                        counter += 1

            async with anyio.create_task_group() as group:
                for _ in range(8):
                    group.start_soon(worker)
            total = int(await store.load_auth_oauth_flow_snapshot() or b"0")
            assert total >= counter
            assert store.statistics().commands == total

            # A whole task group cancelled from outside while its calls run.
            with anyio.move_on_after(0.02):
                async with anyio.create_task_group() as group:
                    for _ in range(8):
                        group.start_soon(worker)
            assert int(await store.load_auth_oauth_flow_snapshot() or b"0") == (
                store.statistics().commands
            )

    run_asyncio(main, anyio_backend=True)


@pytest.mark.parametrize("beside", [False, True], ids=["alone", "beside-another-store"])
@pytest.mark.parametrize("kind", LOCAL_KINDS)
def test_cancelling_the_open_or_the_close_strands_nothing(
    backends: Any, kind: str, beside: bool
) -> None:
    """Cancelled at many points of its open or its close, a store is closed
    when the CancelledError arrives: the directory can be opened again at
    once, and (alone on its loop) the trio guest run has ended. Beside
    another store the guest run goes on, so only the store's own close can
    have released the directory."""
    backend: Backend = backends(kind)
    acknowledged: list[int] = []

    async def use(phase: str, reached: asyncio.Event) -> None:
        async with backend.aio() as store:
            n = len(acknowledged)
            await store.persist_input_state(RT, stored(iid(n + 1)))
            acknowledged.append(n + 1)
            if phase == "close":
                reached.set()
            else:
                await asyncio.sleep(TIMEOUT)

    async def cancel_at(phase: str, step: int) -> None:
        reached = asyncio.Event()
        task = asyncio.create_task(use(phase, reached))
        if phase == "close":
            await reached.wait()
        for _ in range(step):
            await asyncio.sleep(0)
        if step >= 10:
            await asyncio.sleep(0.0005 * (step - 9) ** 2)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        if not beside:
            assert_no_guest_run()
        async with backend.aio():  # not locked
            pass

    async def cancellations() -> None:
        for phase in ("open", "close"):
            for step in range(18):
                await cancel_at(phase, step)

    async def main() -> None:
        if beside:
            async with maa.open_store() as other:
                await cancellations()
                await other.update_auth_oauth_flow_snapshot(increment)  # still served
        else:
            await cancellations()
        async with backend.aio() as store:  # every acknowledged write is there
            if backend.persistent:
                found = {s.input_id for s in await store.load_input_states(RT)}
                assert {iid(n) for n in acknowledged} <= found

    run_asyncio(main)


def test_a_call_made_while_the_block_exits_is_refused(tmp_path: Path) -> None:
    """Once the block's body has ended, the handle is closed: a call another
    task makes while the store closes gets StoreClosed, as in trio."""
    path = tmp_path / "store"

    async def main() -> list[str]:
        outcomes: list[str] = []
        exiting = asyncio.Event()

        async def late(store: Any) -> None:
            await exiting.wait()
            for call in (
                lambda: store.persist_input_state(RT, stored(I3)),
                lambda: store.load_input_states(RT),
            ):
                try:
                    await call()
                except ma.StoreClosed:
                    outcomes.append("closed")
                else:
                    outcomes.append("answered")

        async with maa.open_store(path) as store:
            await store.persist_input_state(RT, stored(I1))
            task = asyncio.create_task(late(store))
            await asyncio.sleep(0)
            exiting.set()
        await task
        async with maa.open_store(path) as again:
            assert [s.input_id for s in await again.load_input_states(RT)] == [I1]
        return outcomes

    assert run_asyncio(main) == ["closed", "closed"]


def test_a_cancelled_first_open_can_be_followed_by_another() -> None:
    """Cancelled while the loop's trio guest run is starting: the run ends
    (it would otherwise stay on the thread and refuse every later start)."""

    async def main(step: int) -> None:
        task = asyncio.create_task(maa.open_store().__aenter__())
        for _ in range(step):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_no_guest_run()
        async with maa.open_store() as store:
            await store.persist_auth_oauth_flow_snapshot(b"fine")

    for step in range(8):
        run_asyncio(lambda step=step: main(step))


# --- several stores, loops and threads -------------------------------------------------------


def test_several_stores_share_one_loop(backends: Any) -> None:
    memory, durable, sqlite = (backends(kind, kind) for kind in LOCAL_KINDS)

    async def main() -> None:
        for round_ in range(2):  # the second round runs on a new guest run
            async with memory.aio() as one, durable.aio() as two:
                await one.persist_auth_oauth_flow_snapshot(b"one")
                async with sqlite.aio() as three:
                    await asyncio.gather(
                        two.update_auth_oauth_flow_snapshot(increment),
                        three.update_auth_oauth_flow_snapshot(increment),
                        one.update_auth_oauth_flow_snapshot(lambda c: c + b"+"),
                    )
                    assert await three.load_auth_oauth_flow_snapshot() == b"%d" % (round_ + 1)
                # The others still work after one closed.
                await two.update_auth_oauth_flow_snapshot(increment)
                assert await one.load_auth_oauth_flow_snapshot() == b"one+"
                assert await two.load_auth_oauth_flow_snapshot() == b"%d" % (2 * round_ + 2)
            assert_no_guest_run()

    run_asyncio(main)


def test_concurrent_opens_and_closes_on_one_loop(backends: Any) -> None:
    locations = [backends("durable", f"s{n}") for n in range(4)]

    async def user(n: int, rounds: int) -> int:
        total = 0
        for r in range(rounds):
            backend = locations[n % len(locations)]
            async with backend.aio() if n < len(locations) else maa.open_store() as store:
                await store.update_auth_oauth_flow_snapshot(increment)
                total += 1
                await asyncio.sleep(0.001 * ((n + r) % 3))
        return total

    async def main() -> None:
        for _ in range(3):
            await asyncio.gather(*(user(n, 4) for n in range(10)))
            assert_no_guest_run()
        for backend in locations:
            async with backend.aio() as store:
                assert await store.load_auth_oauth_flow_snapshot() == b"12"

    run_asyncio(main)


def test_two_loops_in_two_threads_each_with_a_store(tmp_path: Path) -> None:
    barrier = threading.Barrier(2, timeout=TIMEOUT)
    results: dict[int, Any] = {}

    async def main(n: int) -> Any:
        async with maa.open_store(tmp_path / f"store{n}") as store:
            await asyncio.to_thread(barrier.wait)  # both open at once
            hosts = sum(not loop.is_closed() for loop in _guest._hosts)
            for i in range(200):
                await store.persist_input_state(RT, stored(iid(i + 1)))
            await asyncio.to_thread(barrier.wait)
            count = len(await store.load_input_states(RT))
            return count, store.auth_authority_key(), hosts

    def thread(n: int) -> None:
        try:
            results[n] = run_loop(lambda: main(n))
        except BaseException as exc:
            results[n] = exc

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(2)]
    with strict():  # process-wide: once, around both threads
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert results[0][0] == results[1][0] == 200, results
    assert results[0][1] != results[1][1]
    assert results[0][2] == results[1][2] == 2  # a guest run per loop


@pytest.mark.parametrize("kind", ["memory", "durable"])
def test_64_tasks_lose_no_write_and_no_counter_update(backends: Any, kind: str) -> None:
    backend: Backend = backends(kind)
    tasks, each = 64, 15

    async def main() -> None:
        async with backend.aio(max_pending=8) as store:

            async def task(t: int) -> list[ma.InputId]:
                runtime = LRI(f"t{t}")
                written = []
                for i in range(each):
                    state = stored(iid((t + 1) << 16 | i))
                    await store.persist_input_state(runtime, state)
                    assert await store.load_input_state(runtime, state.input_id) == state
                    await store.update_auth_oauth_flow_snapshot(increment)
                    written.append(state.input_id)
                return written

            written = await asyncio.gather(*(task(t) for t in range(tasks)))
            assert await store.load_auth_oauth_flow_snapshot() == b"%d" % (tasks * each)
            for t, ids in enumerate(written):
                assert [s.input_id for s in await store.load_input_states(LRI(f"t{t}"))] == ids
            assert store.statistics().largest_batch > 1
        if backend.persistent:
            async with backend.aio() as store:
                assert await store.load_auth_oauth_flow_snapshot() == b"%d" % (tasks * each)
                assert len(await store.list_runtimes()) == tasks

    run_asyncio(main)


# --- the trio openers outside trio -----------------------------------------------------------


NATIVE_OPENERS = [
    ("open_store", ma.open_store),
    ("open_sqlite_store", lambda: ma.open_sqlite_store("never.sqlite3")),
    ("open_postgres_store", lambda: ma.open_postgres_store("host=/nonexistent dbname=x")),
]


@pytest.mark.parametrize(("name", "opener"), NATIVE_OPENERS)
def test_a_trio_opener_called_from_asyncio_names_meerkat_actor_asyncio(
    name: str, opener: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> str:
        with pytest.raises(RuntimeError) as raised:
            async with opener():
                pytest.fail("opened")
        return str(raised.value)

    message = run_asyncio(main)
    assert "meerkat_actor.asyncio" in message
    assert name in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("name", "opener"), NATIVE_OPENERS)
def test_a_trio_opener_driven_without_any_loop_says_it_needs_trio(
    name: str, opener: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    entering = opener().__aenter__()
    try:
        with pytest.raises(RuntimeError, match="trio") as raised:
            entering.send(None)
    finally:
        entering.close()
    assert name in str(raised.value)
    assert os.listdir(tmp_path) == []


def test_an_asyncio_opener_called_from_trio_fails_plainly() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError):
            async with maa.open_store():
                pytest.fail("opened")

    trio.run(main)


def test_an_asyncio_loop_inside_a_trio_run_cannot_open_a_store() -> None:
    """trio allows one run per thread: an asyncio loop run from inside a trio
    run gets a clear error, at once, and its loop keeps no host."""

    async def inner() -> None:
        async with asyncio.timeout(TIMEOUT):
            with pytest.raises(RuntimeError, match="cannot start trio on this thread"):
                async with maa.open_store():
                    pytest.fail("opened")
            assert asyncio.get_running_loop() not in _guest._hosts

    async def outer() -> None:
        asyncio.run(inner())  # blocks this trio run's thread meanwhile

    errors: list[BaseException] = []

    def thread() -> None:  # a thread of its own: a hang fails the test
        try:
            trio.run(outer)
        except BaseException as exc:
            errors.append(exc)

    with strict():
        runner = threading.Thread(target=thread, daemon=True)
        runner.start()
        runner.join(TIMEOUT)
    assert not runner.is_alive(), "opening hung"
    assert errors == []


# --- the event loop is never blocked ---------------------------------------------------------


def test_the_loop_keeps_ticking_while_a_durable_store_works(tmp_path: Path) -> None:
    async def main() -> Any:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def heartbeat() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        async with maa.open_store(tmp_path / "store", checkpoint_bytes=64 * 1024) as store:
            beat = asyncio.create_task(heartbeat())
            await asyncio.sleep(0.02)

            async def writer(w: int) -> None:
                for i in range(100):
                    await store.atomic_apply(
                        LRI(f"w{w}"),
                        session(SID, turn=i, text="x" * 200),
                        receipt(i),
                        [stored(iid(i + 1))],
                        SID,
                    )

            await asyncio.gather(*(writer(w) for w in range(20)))
            await store.checkpoint()
            stats = store.statistics()
            stop.set()
            await beat
        return gaps, stats

    gaps, stats = run_asyncio(main)
    assert stats.commands == 2000
    assert stats.checkpoints >= 2
    assert len(gaps) > 20
    assert max(gaps) < 0.25, f"the loop stood still for {max(gaps):.3f} s"


def test_a_handle_used_from_another_loop_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    """A handle belongs to the loop that opened it: a call from another loop
    (another thread's) raises a RuntimeError saying so, and nothing reaches
    the store."""
    outcome: dict[str, BaseException | None] = {}

    async def main() -> int:
        async with maa.open_store(tmp_path / "store") as store:

            def elsewhere() -> None:
                async def call(name: str, coro: Awaitable[Any]) -> None:
                    try:
                        await coro
                    except BaseException as exc:
                        outcome[name] = exc
                    else:
                        outcome[name] = None

                async def calls() -> None:
                    await call("write", store.persist_input_state(RT, stored(iid(1))))
                    await call("read", store.load_input_states(RT))
                    await call("checkpoint", store.checkpoint())

                asyncio.run(calls())

            await asyncio.to_thread(elsewhere)
            return len(await store.load_input_states(RT))

    assert run_asyncio(main) == 0
    for name in ("write", "read", "checkpoint"):
        error = outcome[name]
        assert isinstance(error, RuntimeError), (name, error)
        assert "another asyncio event loop" in str(error), (name, error)


def test_a_task_that_only_reads_lets_the_loop_run_and_can_be_cancelled() -> None:
    """Every read is a scheduling point, as every call of a trio handle is:
    another task runs between a reader's reads, and a reader cancelled from
    outside gets its CancelledError at its next read."""

    async def main() -> tuple[int, int]:
        async with maa.open_store() as store:
            await store.persist_input_state(RT, stored(iid(1)))
            ticks = 0
            reads = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            async def reader() -> None:
                nonlocal reads
                for _ in range(2000):  # no await but the store's
                    await store.load_input_state(RT, iid(1))
                    reads += 1

            tick_task = asyncio.create_task(ticker())
            await asyncio.create_task(reader())
            tick_task.cancel()
            with suppress(asyncio.CancelledError):
                await tick_task
            ticks_while_reading = ticks
            # A reader cancelled before its next read stops there.
            read_task = asyncio.create_task(reader())
            for _ in range(10):
                await asyncio.sleep(0)
            read_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await read_task
            assert reads < 4000
            return ticks_while_reading, reads

    ticks, _ = run_asyncio(main)
    assert ticks >= 1000  # interleaved with the 2,000 reads, not starved
