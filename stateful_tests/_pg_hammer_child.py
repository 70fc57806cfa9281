"""A child process of test_postgres_processes.py: one host of a fleet.

    python _pg_hammer_child.py SCHEMA NAME ROUNDS

Opens the PostgreSQL store in SCHEMA on `$MEERKAT_TEST_POSTGRES_DSN`'s server,
prints `ready` and waits for a line on stdin (so every process starts at
once), then, ROUNDS times, in three trio tasks at once:

- inserts the receipt of round r (runtime `shared`, sequence r) with an
  input state of its own (input id: this process and round);
- adds one to the OAuth counter (`update_auth_oauth_flow_snapshot`);
- tries the lifecycle compare-and-set from the state it last read to the
  other of idle and running, writing an input state of its own with it.

Prints one JSON line: the rounds it won, its counter increments, and the
compare-and-sets it won (each with the state it expected).
"""

from __future__ import annotations

import json
import os
import sys
import uuid

import trio

import meerkat_actor as ma

SHARED = ma.LogicalRuntimeId("shared")
LIFECYCLE = ma.LogicalRuntimeId("lifecycle")
RUN = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-0000000000aa"))
SID = ma.SessionId(uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"))


def state(input_id: uuid.UUID) -> ma.StoredInputState:
    return ma.StoredInputState.new_accepted(ma.InputId(input_id))


def input_id(name: str, kind: str, n: int) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{kind}/{n}")


def increment(current: bytes | None) -> bytes:
    return str(int(current or b"0") + 1).encode()


async def main(schema: str, name: str, rounds: int) -> None:
    dsn = os.environ["MEERKAT_TEST_POSTGRES_DSN"]
    won: list[int] = []
    increments = 0
    swaps: list[str] = []
    async with ma.open_postgres_store(dsn, schema=schema, lock_timeout=30) as store:
        print("ready", flush=True)
        await trio.to_thread.run_sync(sys.stdin.readline)  # the parent's "go"

        async def receipts() -> None:
            session = ma.SessionDelta(json.dumps({"id": str(SID), "by": name}).encode())
            for r in range(rounds):
                receipt = ma.RunBoundaryReceipt(
                    run_id=RUN,
                    boundary=ma.RunApplyBoundary.IMMEDIATE,
                    contributing_input_ids=[],
                    conversation_digest=None,
                    message_count=r,
                    sequence=r,
                )
                try:
                    await store.atomic_apply(
                        SHARED, session, receipt, [state(input_id(name, "receipt", r))], SID
                    )
                except ma.ReceiptConflict:
                    continue
                won.append(r)

        async def counter() -> None:
            nonlocal increments
            for _ in range(rounds):
                await store.update_auth_oauth_flow_snapshot(increment)
                increments += 1

        async def lifecycle() -> None:
            RS = ma.RuntimeState
            for n in range(rounds):
                seen = await store.load_runtime_state(LIFECYCLE)
                assert seen in (RS.IDLE, RS.RUNNING), seen
                after = RS.RUNNING if seen is RS.IDLE else RS.IDLE
                try:
                    await store.commit_machine_lifecycle(
                        LIFECYCLE,
                        ma.machine_transition(seen, after),
                        [state(input_id(name, "swap", n))],
                        expected=seen,
                    )
                except ma.LifecycleConflict:
                    continue
                swaps.append(f"{seen.value}->{after.value}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receipts)
            nursery.start_soon(counter)
            nursery.start_soon(lifecycle)
    print(json.dumps({"name": name, "won": won, "increments": increments, "swaps": swaps}))


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]))
