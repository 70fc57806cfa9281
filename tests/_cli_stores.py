"""Stores with realistic content for the command-line and backup tests.

Everything here goes through the public API (`meerkat_actor.open_store`), as
a host would write a store; the expected values of the CLI's output are
computed from what the same API reads back (and `_codec.to_json`, the Meerkat
JSON the CLI is specified to print), never from the CLI's own code.

The content (`write_part_a`, then `write_part_b`, one log record per call,
`RECORDS_A` + `RECORDS_B` records): three runtimes whose ids sort differently
by code point than by number (`agent-1`, `agent-10`, `agent-2`); input states
in seven phases with history, terminal outcomes and opaque documents; five
receipts under three runs, two of them with sequences >= 2**63; two Meerkat
session snapshots (one replaced later); runtime states; two ops snapshots;
and an OAuth flow snapshot holding a PKCE verifier (`OAUTH_SECRET`), written
then updated. Part B changes values part A set, so a store whose log holds
part B over a snapshot of part A only reads right if the log is replayed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import subprocess
import sys
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import _values
import trio
from _values import T0, session_json, stored

import meerkat_actor as ma
from meerkat_actor import InputLifecycleState as PHASE
from meerkat_actor import RuntimeState as RS
from meerkat_actor._codec import to_json

A1 = ma.LogicalRuntimeId("agent-1")
A10 = ma.LogicalRuntimeId("agent-10")
A2 = ma.LogicalRuntimeId("agent-2")
RUNTIMES = (A1, A10, A2)  # sorted by id (code points)

S1 = ma.SessionId(uuid.UUID("5f0c2a4e-1b7d-4c8e-9a3f-2d6b8e1c4a70"))
S10 = ma.SessionId(uuid.UUID("0a9e7c5b-3d1f-4e2a-8b6c-9f0e1d2c3b4a"))
# Run ids: written in the order R1, R3, R2, sorted R1 < R2 < R3.
R1 = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-00000000aa01"))
R2 = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-00000000bb02"))
R3 = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-00000000cc03"))
U63 = 2**63
U64_MAX = 2**64 - 1
# Every receipt key written (runtime, run id, sequence), and two never written.
RECEIPT_KEYS = (
    (A1, R1, 0),
    (A1, R1, 1),
    (A10, R2, 5),
    (A10, R3, U63),
    (A10, R3, U64_MAX),
)
ABSENT_RECEIPT_KEYS = ((A1, R1, 2), (A2, R1, 0))


def _input(n: int) -> ma.InputId:
    # Input ids written in an order that differs from their sorted order.
    return ma.InputId(uuid.UUID(int=(0x9E3779B97F4A7C15 * n) % 2**128))


I_A1 = [_input(n) for n in (1, 2, 3, 4)]
I_A10 = [_input(n) for n in (5, 6, 7)]
I_A2 = [_input(n) for n in (8, 9)]
OAUTH_SECRET = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
OAUTH_V1 = json.dumps({"flows": {"st-1": {"pkce_verifier": OAUTH_SECRET}}}).encode()
OAUTH_V2_SUFFIX = b' {"flows":{"st-2":{"pkce_verifier":"second-verifier-7Qx"}}}'
RECORDS_A = 8
RECORDS_B = 9


def session(session_id: ma.SessionId, *messages: str) -> ma.SessionDelta:
    return ma.SessionDelta(
        session_json(
            session_id,
            messages=[{"role": "user", "content": m} for m in messages],
            metadata={"model": "claude", "turns": len(messages)},
        )
    )


def receipt(
    run_id: ma.RunId, sequence: int, inputs: tuple[ma.InputId, ...] = (), count: int = 1
) -> ma.RunBoundaryReceipt:
    """A run's start at sequence 0; a digest on even sequences only."""
    return _values.receipt(
        sequence,
        run_id,
        boundary=ma.RunApplyBoundary.RUN_START if sequence == 0 else ma.RunApplyBoundary.IMMEDIATE,
        contributing_input_ids=inputs,
        conversation_digest=f"sha256:{sequence:x}" if sequence % 2 == 0 else None,
        message_count=count,
    )


def accepted(input_id: ma.InputId, minute: int = 0) -> ma.StoredInputState:
    return stored(input_id, now=T0 + timedelta(minutes=minute))


def moved(
    stored: ma.StoredInputState,
    phase: ma.InputLifecycleState,
    minute: int,
    *,
    outcome: ma.InputTerminalOutcome | None = None,
    run: tuple[ma.RunId, int] | None = None,
    **shell: Any,
) -> ma.StoredInputState:
    """`stored` moved to `phase` at T0 + `minute` (microseconds in the time)."""
    when = T0 + timedelta(minutes=minute, microseconds=123_456)
    history = (
        *stored.state.history,
        ma.InputStateHistoryEntry(when, stored.seed.phase, phase, f"to {phase.value}"),
    )
    state = ma.InputState(
        input_id=stored.state.input_id,
        created_at=stored.state.created_at,
        updated_at=when,
        history=history,
        **shell,
    )
    seed = ma.InputStateSeed(
        phase=phase,
        last_run_id=None if run is None else run[0],
        last_boundary_sequence=None if run is None else run[1],
        terminal_outcome=outcome,
        attempt_count=stored.seed.attempt_count + 1,
    )
    return ma.StoredInputState(state, seed)


def consumed(input_id: ma.InputId, run: tuple[ma.RunId, int], minute: int) -> ma.StoredInputState:
    return moved(
        accepted(input_id),
        PHASE.CONSUMED,
        minute,
        outcome=ma.InputTerminalOutcome.consumed(),
        run=run,
        durability=ma.InputDurability.DURABLE,
    )


OPS_1 = ma.PersistedOpsSnapshot(
    "epoch-agent-1",
    authority_state={"leader": "agent-1", "term": 3},
    operation_specs=[{"id": "op-1", "kind": "tool", "args": {"path": "/tmp/x"}}],
    completion_entries=None,
    cursors={"agent_applied_cursor": 2},
)
OPS_2 = ma.PersistedOpsSnapshot("epoch-agent-2", cursors={"agent_applied_cursor": 0})


async def write_part_a(store: Any) -> None:
    """`RECORDS_A` writes, one record each."""
    await store.commit_machine_lifecycle(
        A1,
        ma.machine_transition(RS.INITIALIZING, RS.IDLE),
        [accepted(i, n) for n, i in enumerate(I_A1[:3])],
    )
    await store.atomic_apply(
        A1,
        session(S1, "hello", "list the files"),
        receipt(R1, 0, (I_A1[0], I_A1[1]), 2),
        [consumed(I_A1[0], (R1, 0), 5), consumed(I_A1[1], (R1, 0), 5)],
        session_store_key=S1,
    )
    await store.persist_ops_lifecycle(A1, OPS_1)
    await store.commit_machine_lifecycle(A10, ma.machine_transition(RS.INITIALIZING, RS.IDLE), [])
    staged = moved(
        accepted(I_A10[0], 1),
        PHASE.STAGED,
        2,
        policy={"retry": {"max": 3}, "priority": 1.5},
        persisted_input={"text": "summarise the thread", "attachments": []},
        durability=ma.InputDurability.EPHEMERAL,
        idempotency_key="idem-5",
        recovery_count=1,
    )
    await store.persist_input_state(A10, staged)
    abandoned = moved(
        accepted(I_A10[1], 1),
        PHASE.ABANDONED,
        3,
        outcome=ma.InputTerminalOutcome.abandoned(ma.InputAbandonReason.max_attempts_exhausted(3)),
        run=(R3, U63),
    )
    await store.atomic_apply(
        A10,
        session(S10, "compile the report"),
        receipt(R3, U63, (I_A10[1],), 1),
        [abandoned],
        session_store_key=S10,
    )
    pending = moved(accepted(I_A2[0], 4), PHASE.APPLIED_PENDING_CONSUMPTION, 6, run=(R2, 5))
    await store.persist_input_state(A2, pending)
    await store.persist_auth_oauth_flow_snapshot(OAUTH_V1)


async def write_part_b(store: Any) -> None:
    """`RECORDS_B` writes, one record each; the last is a small input state
    of its own (`I_A2[1]`)."""
    await store.atomic_apply(
        A1,
        session(S1, "hello", "list the files", "now delete tmp"),
        receipt(R1, 1, (I_A1[2],), 3),
        [consumed(I_A1[2], (R1, 1), 9)],
        session_store_key=S1,
    )
    await store.persist_input_state(A1, moved(accepted(I_A1[3], 10), PHASE.QUEUED, 11))
    superseded = moved(
        accepted(I_A10[2], 12),
        PHASE.SUPERSEDED,
        13,
        outcome=ma.InputTerminalOutcome.superseded(I_A10[0]),
    )
    await store.commit_machine_lifecycle(
        A10, ma.machine_transition(RS.IDLE, RS.RUNNING), [superseded]
    )
    await store.atomic_apply(A10, None, receipt(R3, U64_MAX, (), 7), [])
    await store.atomic_apply(A10, None, receipt(R2, 5, (I_A10[0],), 4), [])
    await store.persist_ops_lifecycle(A2, OPS_2)
    await store.update_auth_oauth_flow_snapshot(lambda current: current + OAUTH_V2_SUFFIX)
    await store.persist_ops_lifecycle(A1, OPS_1)
    await store.persist_input_state(A2, accepted(I_A2[1], 20))


async def write_all(store: Any) -> None:
    await write_part_a(store)
    await write_part_b(store)


# --- reading back -------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeContent:
    runtime_id: ma.LogicalRuntimeId
    session: bytes | None
    runtime_state: ma.RuntimeState | None
    ops: ma.PersistedOpsSnapshot | None
    inputs: list[ma.StoredInputState]
    receipts: list[ma.RunBoundaryReceipt]  # by run id, then sequence

    @property
    def empty(self) -> bool:
        return (
            self.session is None
            and self.runtime_state is None
            and self.ops is None
            and not self.inputs
            and not self.receipts
        )


@dataclass(frozen=True)
class Content:
    runtimes: list[RuntimeContent]  # sorted by id, the empty ones left out
    oauth: bytes | None


async def read_content(store: Any, runtimes: tuple[ma.LogicalRuntimeId, ...] = RUNTIMES) -> Content:
    """Everything the store shows for `runtimes` and the receipt keys of this
    module, through the public reads."""
    result = []
    for rt in sorted(runtimes, key=str):
        receipts = []
        for key_rt, run_id, sequence in sorted(
            (*RECEIPT_KEYS, *ABSENT_RECEIPT_KEYS), key=lambda k: (k[1].value, k[2])
        ):
            if key_rt == rt:
                found = await store.load_boundary_receipt(rt, run_id, sequence)
                if found is not None:
                    receipts.append(found)
        content = RuntimeContent(
            rt,
            await store.load_session_snapshot(rt),
            await store.load_runtime_state(rt),
            await store.load_ops_lifecycle(rt),
            await store.load_input_states(rt),
            receipts,
        )
        if not content.empty:
            result.append(content)
    return Content(result, await store.load_auth_oauth_flow_snapshot())


def read_store(path: Path) -> Content:
    """Open the durable store at `path`, read it, close it cleanly."""

    async def read() -> Content:
        async with ma.open_store(path) as store:
            return await read_content(store)

    return trio.run(read)


def read_sqlite(path: Path) -> Content:
    async def read() -> Content:
        async with ma.open_sqlite_store(path) as store:
            return await read_content(store)

    return trio.run(read)


# --- what the CLI should print ------------------------------------------------


def session_document(runtime_id: str, snapshot: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(snapshot.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {
            "kind": "session_snapshot",
            "runtime_id": runtime_id,
            "snapshot_base64": base64.b64encode(snapshot).decode(),
        }
    return {"kind": "session_snapshot", "runtime_id": runtime_id, "snapshot": parsed}


def expected_dump(content: Content, *, secrets: bool = False) -> list[dict[str, Any]]:
    """The JSON lines of `dump` for `content`, as docs/cli.md specifies them."""
    lines: list[dict[str, Any]] = []
    for rt in content.runtimes:
        rid = str(rt.runtime_id)
        if rt.session is not None:
            lines.append(session_document(rid, rt.session))
        if rt.runtime_state is not None:
            lines.append(
                {
                    "kind": "runtime_state",
                    "runtime_id": rid,
                    "runtime_state": to_json(rt.runtime_state),
                }
            )
        if rt.ops is not None:
            lines.append({"kind": "ops_lifecycle", "runtime_id": rid, "snapshot": to_json(rt.ops)})
        lines.extend(
            {
                "kind": "input_state",
                "runtime_id": rid,
                "input_id": str(s.input_id),
                "state": to_json(s),
            }
            for s in rt.inputs
        )
        lines.extend(
            {
                "kind": "boundary_receipt",
                "runtime_id": rid,
                "run_id": str(r.run_id),
                "sequence": r.sequence,
                "receipt": to_json(r),
            }
            for r in rt.receipts
        )
    if secrets and content.oauth is not None:
        lines.append(
            {
                "kind": "oauth_flow_snapshot",
                "snapshot_base64": base64.b64encode(content.oauth).decode(),
            }
        )
    return lines


def expected_runtimes(content: Content) -> list[dict[str, Any]]:
    """The `runtimes` list of `inspect --json` for `content`."""
    return [
        {
            "runtime_id": str(rt.runtime_id),
            "input_states": len(rt.inputs),
            "input_states_by_phase": dict(Counter(s.seed.phase.value for s in rt.inputs)),
            "receipts": len(rt.receipts),
            "session_snapshot_bytes": None if rt.session is None else len(rt.session),
            "runtime_state": None if rt.runtime_state is None else to_json(rt.runtime_state),
            "ops_snapshot": rt.ops is not None,
        }
        for rt in content.runtimes
    ]


def counts(content: Content) -> dict[str, Any]:
    """The counts of `export-sqlite --json` / `import-sqlite --json`."""
    rts = content.runtimes
    return {
        "runtimes": len(rts),
        "input_states": sum(len(rt.inputs) for rt in rts),
        "receipts": sum(len(rt.receipts) for rt in rts),
        "session_snapshots": sum(rt.session is not None for rt in rts),
        "runtime_states": sum(rt.runtime_state is not None for rt in rts),
        "ops_snapshots": sum(rt.ops is not None for rt in rts),
        "oauth_flow_snapshot": content.oauth is not None,
    }


def file_kind(name: str) -> str:
    if name == "FORMAT":
        return "format"
    if name == "LOCK":
        return "lock"
    if name.endswith(".tmp"):
        return "temp"
    if name.startswith("snapshot-") and name.endswith(".snap"):
        return "snapshot"
    if name.startswith("log-") and name.endswith(".log"):
        return "segment"
    return "other"


def file_entries(path: Path) -> list[dict[str, Any]]:
    """The `files` entries of `inspect --json` for the directory, by name."""
    return [
        {"name": p.name, "kind": file_kind(p.name), "bytes": p.stat().st_size}
        for p in sorted(path.iterdir())
    ]


def by_name(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda e: e["name"])


# --- files --------------------------------------------------------------------

SEGMENT_HEADER = 32
FRAME_HEADER = 24


def seg(lsn: int) -> str:
    return f"log-{lsn:020d}.log"


def snap(lsn: int) -> str:
    return f"snapshot-{lsn:020d}.snap"


def write_at(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as file:
        file.seek(offset)
        file.write(data)


def flip(path: Path, offset: int) -> None:
    data = path.read_bytes()
    write_at(path, offset, bytes([data[offset] ^ 0x01]))


def format_file(version: int) -> bytes:
    head = b"MKRTSTOR" + struct.pack(">I", version)
    return head + struct.pack(">I", zlib.crc32(head))


def tree(path: Path) -> dict[str, str] | None:
    """Every file under `path` with the SHA-256 of its bytes and its mode;
    None if `path` does not exist."""
    if not path.exists():
        return None
    if not path.is_dir():
        return {"": f"{oct(path.stat().st_mode)} {hashlib.sha256(path.read_bytes()).hexdigest()}"}
    found = {}
    for root, dirs, names in os.walk(path):
        for name in dirs + names:
            full = Path(root, name)
            key = str(full.relative_to(path))
            mode = oct(full.lstat().st_mode)
            digest = "" if full.is_dir() else hashlib.sha256(full.read_bytes()).hexdigest()
            found[key] = f"{mode} {digest}"
    return found


# --- running the CLI and holding a store open in another process -------------------


def cli(*args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meerkat_actor", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_all(*commands: list[object], timeout: float = 60) -> list[subprocess.CompletedProcess[str]]:
    """Run several CLI commands at the same time (the machine has cores to
    spare); their results in order."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "meerkat_actor", *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    results = []
    for process in started:
        out, err = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def json_out(done: subprocess.CompletedProcess[str]) -> Any:
    """The one JSON document on stdout."""
    return json.loads(done.stdout)


def json_lines(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


_HOLDER = """
import sys, trio, meerkat_actor as ma
async def main():
    async with ma.open_store(sys.argv[1]):
        print("open", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)
trio.run(main)
"""


@contextmanager
def held_open_by_child(path: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process that has the store at `path` open while the block runs."""
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "open\n", child.stderr.read() if child.stderr else line
        yield child
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)
