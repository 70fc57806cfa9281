"""Several processes on one PostgreSQL schema behave as one store (issue 15).

Real processes (`_pg_hammer_child.py`), started together, race on the same
keys: a receipt key inserted by all of them, an OAuth counter each adds to,
and a lifecycle compare-and-set each tries from the state it read. Afterwards
one more handle reads the database and the test checks that the processes'
reports and the database agree with one linearizable store:

- each receipt key has exactly one winner, whose input state is the only
  one written with it (the losers changed nothing);
- the counter is the number of increments acknowledged (no lost update);
- the compare-and-sets that won form one chain (idle -> running -> idle ...,
  each starting where the previous ended), their input states are all there
  and no loser's is, and the final state is the chain's end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest
import trio

import meerkat_actor as ma

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("postgres_dsn")]

CHILD = Path(__file__).with_name("_pg_hammer_child.py")
PROCESSES = 4
ROUNDS = 25


def _input_id(name: str, kind: str, n: int) -> ma.InputId:
    return ma.InputId(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{kind}/{n}"))


def test_processes_racing_on_one_schema_act_as_one_store(postgres_dsn: str, tmp_path: Path):
    schema = "hammer_" + uuid.uuid4().hex[:12]
    RS = ma.RuntimeState

    async def prepare() -> None:
        async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
            await store.commit_machine_lifecycle(
                ma.LogicalRuntimeId("lifecycle"),
                ma.machine_transition(RS.INITIALIZING, RS.IDLE),
                [],
            )

    trio.run(prepare)
    names = [f"host{n}" for n in range(PROCESSES)]
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), schema, name, str(ROUNDS)],
            cwd=tmp_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MEERKAT_TEST_POSTGRES_DSN": postgres_dsn},
        )
        for name in names
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == "ready\n", (line, child.stderr.read() if child.stderr else "")
    reports = []
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=300)
        assert child.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))

    async def check() -> None:
        async with ma.open_postgres_store(postgres_dsn, schema=schema) as store:
            # Receipts: one winner per round; only the winner's input state.
            winners: dict[int, str] = {}
            for report in reports:
                for r in report["won"]:
                    assert r not in winners, f"round {r} won by {winners[r]} and {report['name']}"
                    winners[r] = report["name"]
            assert sorted(winners) == list(range(ROUNDS))
            shared = ma.LogicalRuntimeId("shared")
            ids = {s.state.input_id for s in await store.load_input_states(shared)}
            assert ids == {_input_id(winners[r], "receipt", r) for r in range(ROUNDS)}
            assert len(await store.load_boundary_receipts(shared)) == ROUNDS
            # The counter: every acknowledged increment, no more, no less.
            total = sum(report["increments"] for report in reports)
            assert total == PROCESSES * ROUNDS
            assert await store.load_auth_oauth_flow_snapshot() == str(total).encode()
            # Compare-and-set: the wins alternate, so there are as many
            # idle->running as running->idle (or one more), and the final
            # state is where that chain ends.
            swaps = [swap for report in reports for swap in report["swaps"]]
            up, down = swaps.count("idle->running"), swaps.count("running->idle")
            assert up - down in (0, 1), swaps
            lifecycle = ma.LogicalRuntimeId("lifecycle")
            final = await store.load_runtime_state(lifecycle)
            assert final is (RS.RUNNING if up > down else RS.IDLE)
            written = {s.state.input_id for s in await store.load_input_states(lifecycle)}
            assert len(written) == len(swaps)
            assert swaps, "no compare-and-set won: the race did not happen"

    try:
        trio.run(check)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
