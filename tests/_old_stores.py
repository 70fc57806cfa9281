"""Machinery of the tests of stores of older format versions
(test_format_v1.py, test_format_v2.py): the committed fixtures
`tests/fixtures/store-v<N>/` and their expected content `store-v<N>.json`,
the retention writes the tests make (each with its expected change, stated
here by hand, not read from the store), the store's content through the
public reads, and an I/O layer that crashes or fails at one file operation.

Both fixtures have the runtimes `agent-alpha`, `agent-beta` and `agent-gone`
(destroyed: purgeable), input states whose payload text starts with
`RETIRE-ME` (terminal: retirable) and the marker `PURGE-ME-gone` in
everything of `agent-gone`.
"""

from __future__ import annotations

import base64
import copy
import errno
import json
import os
import shutil
import struct
import threading
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

import meerkat_actor as ma
from meerkat_actor import _format as fmt
from meerkat_actor._codec import to_json
from meerkat_actor._fs import FileIO, Handle

FIXTURES = Path(__file__).parent / "fixtures"

ALPHA = ma.LogicalRuntimeId("agent-alpha")
BETA = ma.LogicalRuntimeId("agent-beta")
GONE = ma.LogicalRuntimeId("agent-gone")  # destroyed: purgeable
PURGE_MARKER = b"PURGE-ME-gone"
RETIRE_MARKER = b"RETIRE-ME"

Write = Callable[[Any], Awaitable[None]]


# --- the store's content ------------------------------------------------------------------


async def content(store: Any) -> dict[str, Any]:
    """Everything the store holds, through the public reads, in the JSON
    shape of tests/fixtures/store-v<N>.json."""
    runtimes: dict[str, Any] = {}
    for rt in await store.list_runtimes():
        snapshot = await store.load_session_snapshot(rt)
        runtime_state = await store.load_runtime_state(rt)
        ops = await store.load_ops_lifecycle(rt)
        runtimes[str(rt)] = {
            "session_base64": None
            if snapshot is None
            else base64.b64encode(snapshot).decode("ascii"),
            "runtime_state": None if runtime_state is None else to_json(runtime_state),
            "ops": None if ops is None else to_json(ops),
            "inputs": [to_json(s) for s in await store.load_input_states(rt)],
            "receipts": [to_json(r) for r in await store.load_boundary_receipts(rt)],
        }
    oauth = await store.load_auth_oauth_flow_snapshot()
    return {
        "oauth_base64": None if oauth is None else base64.b64encode(oauth).decode("ascii"),
        "runtimes": runtimes,
    }


# --- one fixture ----------------------------------------------------------------------------


@dataclass(frozen=True)
class OldStore:
    """One committed fixture store of an older format version."""

    version: int
    path: Path = field(init=False)
    content: dict[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        path = FIXTURES / f"store-v{self.version}"
        content = json.loads((FIXTURES / f"store-v{self.version}.json").read_text())
        assert content["format_version"] == self.version
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "content", content)

    @property
    def snapshot_lsn(self) -> int:
        return int(self.content["snapshot_lsn"])

    @property
    def last_lsn(self) -> int:
        return int(self.content["last_lsn"])

    @property
    def snapshot(self) -> str:
        """The fixture's snapshot's file name."""
        return fmt.snapshot_name(self.snapshot_lsn)

    @property
    def segment(self) -> str:
        """The fixture's segment's file name (its records follow the snapshot)."""
        return fmt.segment_name(self.snapshot_lsn + 1)

    def retirable(self, runtime: str) -> list[ma.InputId]:
        """The runtime's input states whose payload carries a RETIRE-ME
        marker (all terminal, with an outcome)."""
        return [
            ma.InputId(uuid.UUID(doc["input_id"]))
            for doc in self.content["runtimes"][runtime]["inputs"]
            if str((doc.get("persisted_input") or {}).get("text", "")).startswith("RETIRE-ME")
        ]

    def copy(self, tmp_path: Path) -> Path:
        """A copy of the fixture under `tmp_path` (each test works on one)."""
        target = tmp_path / "store"
        shutil.copytree(self.path, target)
        return target

    def expected(self, *done: str) -> dict[str, Any]:
        """The fixture's content after the named writes (any order: they commute)."""
        result = {
            "oauth_base64": self.content["oauth_base64"],
            "runtimes": copy.deepcopy(self.content["runtimes"]),
        }
        runtimes = result["runtimes"]
        for write in done:
            if write == "purge":
                del runtimes["agent-gone"]
            elif write.startswith("retire"):
                names = {
                    "retire": ("agent-alpha", "agent-beta"),
                    "retire_alpha": ("agent-alpha",),
                    "retire_beta": ("agent-beta",),
                }[write]
                for runtime in names:
                    ids = {str(i) for i in self.retirable(runtime)}
                    for doc in runtimes[runtime]["inputs"]:
                        if doc["input_id"] in ids:
                            del doc["persisted_input"]
            elif write == "clear":
                runtimes["agent-alpha"]["session_base64"] = None
            elif write == "delete_ops":
                runtimes["agent-beta"]["ops"] = None
            else:  # pragma: no cover
                raise AssertionError(write)
        return result

    @property
    def writes(self) -> dict[str, Write]:
        """The retention writes (SPEC §3b) the tests make, by name: one
        record each, but "retire", which is two (one per runtime)."""
        retire_alpha_ids = self.retirable("agent-alpha")
        retire_beta_ids = self.retirable("agent-beta")

        async def purge(store: Any) -> None:
            await store.purge_runtime(GONE)

        async def retire_alpha(store: Any) -> None:
            await store.retire_input_payloads(ALPHA, retire_alpha_ids)

        async def retire_beta(store: Any) -> None:
            await store.retire_input_payloads(BETA, retire_beta_ids)

        async def retire(store: Any) -> None:
            await retire_alpha(store)
            await retire_beta(store)

        async def clear(store: Any) -> None:
            await store.clear_session_snapshot(ALPHA)

        async def delete_ops(store: Any) -> None:
            await store.delete_ops_lifecycle(BETA)

        return {
            "purge": purge,
            "retire": retire,
            "retire_alpha": retire_alpha,
            "retire_beta": retire_beta,
            "clear": clear,
            "delete_ops": delete_ops,
        }


V1 = OldStore(1)
V2 = OldStore(2)


# --- files ---------------------------------------------------------------------------------


def versions(path: Path) -> dict[str, int]:
    """The format version of every FORMAT, segment and snapshot file, by name."""
    found = {}
    for name in sorted(os.listdir(path)):
        data = (path / name).read_bytes()
        if name == "FORMAT":
            found[name] = fmt.decode_format_file(data)
        elif len(data) >= 12 and (
            fmt.parse_name(name, *fmt.SEGMENT_NAME) is not None
            or fmt.parse_name(name, *fmt.SNAPSHOT_NAME) is not None
        ):
            found[name] = struct.unpack(">I", data[8:12])[0]
    return found


def assert_consistent(path: Path) -> None:
    """The invariant of a conversion: no file newer than the FORMAT file."""
    found = versions(path)
    assert all(version <= found["FORMAT"] for version in found.values()), found


def holds(path: Path, marker: bytes) -> list[str]:
    """The files of the directory whose bytes contain `marker`."""
    return sorted(name for name in os.listdir(path) if marker in (path / name).read_bytes())


def format_file(version: int) -> bytes:
    head = b"MKRTSTOR" + struct.pack(">I", version)
    return head + struct.pack(">I", zlib.crc32(head))


def files(path: Path) -> dict[str, bytes]:
    return {name: (path / name).read_bytes() for name in os.listdir(path)}


async def crashed_open(path: Path, body: Write, **kwargs: Any) -> None:
    """Run `body` on the store at `path`, then leave by cancellation: no final
    checkpoint (a stop without the clean close)."""
    with trio.CancelScope() as scope:
        async with ma.open_store(path, **kwargs) as store:
            await body(store)
            scope.cancel()
            await trio.lowlevel.checkpoint()


async def read_all(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def body(store: Any) -> None:
        result.update(await content(store))

    await crashed_open(path, body)
    return result


async def checkpoint(store: Any) -> None:
    await store.checkpoint()


# --- a crash or a failure at one file operation ------------------------------------------------


MUTATING = ("create", "write", "write_at", "sync", "sync_dir", "rename", "remove", "truncate")


class Stop(BaseException):
    """A simulated crash at one I/O call: escapes every `except Exception`."""


class StepIO(FileIO):
    """Counts the mutating calls; at call number `at` (0-based) it fails once
    with `OSError` (mode "fail") or stops, and so does every later mutating
    call (mode "stop": the process is dead)."""

    def __init__(self, at: int | None = None, mode: str = "stop") -> None:
        self._mutex = threading.Lock()
        self.at, self.mode = at, mode
        self.calls: list[tuple[str, str]] = []
        self.dead = False

    def _step(self, method: str, path: str) -> None:
        with self._mutex:
            if self.dead:
                raise Stop(f"dead: {method} {path}")
            index = len(self.calls)
            self.calls.append((method, os.path.basename(path)))
            if index != self.at:
                return
            if self.mode == "stop":
                self.dead = True
                raise Stop(f"stopped at {method} {path}")
        raise OSError(errno.EIO, f"injected failure at {method}", path)


def _wrap(method: str) -> Callable[..., Any]:
    base = getattr(FileIO, method)

    def call(self: StepIO, *args: Any) -> Any:
        target = args[0]
        self._step(method, target.path if isinstance(target, Handle) else target)
        return base(self, *args)

    call.__name__ = method
    return call


for _method in MUTATING:
    setattr(StepIO, _method, _wrap(_method))


def stopped(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(stopped(inner) for inner in exc.exceptions)
    return isinstance(exc, Stop)


SWEEP = ("purge", "retire_alpha", "retire_beta")


async def sweep_run(old: OldStore, path: Path, io: StepIO) -> tuple[list[str], list[str]]:
    """The conversion workload: three writes (the first converts the store),
    then a checkpoint (which deletes the older files), then a clean close.
    Returns the writes acknowledged and the writes that raised."""
    writes = old.writes
    acked: list[str] = []
    failed: list[str] = []
    try:
        async with ma.open_store(path, _io=io) as store:
            for name in (*SWEEP, "checkpoint"):
                try:
                    if name == "checkpoint":
                        await store.checkpoint()
                    else:
                        await writes[name](store)
                except ma.WriteFailed:
                    failed.append(name)
                else:
                    acked.append(name)
    except BaseException as exc:
        if not stopped(exc):
            raise
    return acked, failed
