"""The demo command: `python -m meerkat_actor demo`."""

import json
import re
import subprocess
import sys

import pytest

import meerkat_actor as ma
from meerkat_actor import _demo
from meerkat_actor.__main__ import main


async def test_demo_workload_reads_back_what_it_wrote():
    lines: list[str] = []
    async with ma.open_store() as store:
        await _demo.run_demo(store, runtimes=3, runs=4, inputs_per_run=2, out=lines.append)
        for n in (1, 2, 3):
            runtime = ma.LogicalRuntimeId(f"agent-{n}")
            states = await store.load_input_states(runtime)
            phases = [s.seed.phase for s in states]
            assert phases.count(ma.InputLifecycleState.CONSUMED) == 8
            assert phases.count(ma.InputLifecycleState.QUEUED) == 1
            assert await store.load_runtime_state(runtime) is ma.RuntimeState.IDLE
            assert await store.load_ops_lifecycle(runtime) is not None
        oauth = await store.load_auth_oauth_flow_snapshot()
        assert oauth is not None
        assert json.loads(oauth) == {"logins": 12}
        assert store.statistics().refused == 0
    table = "\n".join(lines)
    assert re.search(r"agent-1\s+idle\s+8 consumed, 1 queued\s+4\s+\d+ B yes", table)
    assert '{"logins": 12}' in table


def test_demo_runtime_ids_are_agent_1_to_n():
    assert _demo.demo_runtime_ids(3) == [
        ma.LogicalRuntimeId("agent-1"),
        ma.LogicalRuntimeId("agent-2"),
        ma.LogicalRuntimeId("agent-3"),
    ]
    assert _demo.demo_runtime_ids(0) == []


async def test_count_input_states_counts_the_demo_runtimes_only():
    async with ma.open_store() as store:
        assert await _demo.count_input_states(store, 2) == 0
        await _demo.run_demo(store, runtimes=2, runs=2, inputs_per_run=1, out=lambda _: None)
        # Each runtime: 2 runs of 1 input, plus the input queued at the end.
        assert await _demo.count_input_states(store, 2) == 6
        assert await _demo.count_input_states(store, 1) == 3
        assert await _demo.count_input_states(store, 5) == 6  # agent-3..5 hold nothing
        other = ma.StoredInputState.new_accepted(ma.InputId.new())
        await store.persist_input_state(ma.LogicalRuntimeId("not-a-demo-runtime"), other)
        assert await _demo.count_input_states(store, 2) == 6


def test_main_runs_the_demo_in_memory(capsys):
    assert main(["demo", "--memory", "--runtimes", "2", "--runs", "1", "--inputs", "1"]) == 0
    out = capsys.readouterr().out
    assert "store: in memory" in out
    assert "agent-2" in out
    assert '"logins": 2' in out


def test_main_runs_the_demo_on_a_durable_directory_and_recovers_it(tmp_path, capsys):
    store = tmp_path / "demo"
    args = ["demo", str(store), "--runtimes", "2", "--runs", "2", "--inputs", "1"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert f"store: {store}" in first
    assert "a new store" in first
    assert (
        "reopened: every acknowledged write is back (4 receipts of this run, 6 input states)"
        in first
    )
    # The table counts every receipt a runtime holds: 2 runs of 2 here.
    assert re.search(r"agent-1\s+idle\s+2 consumed, 1 queued\s+2\s+\d+ B yes", first)
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "recovered from earlier runs: 6 input states" in second
    assert '"logins": 8' in second
    assert "12 input states" in second
    # The second run's table: the receipts of both runs (4), not of this one.
    for runtime in ("agent-1", "agent-2"):
        assert re.search(rf"{runtime}\s+idle\s+4 consumed, 2 queued\s+4\s+\d+ B yes", second)
    assert "(4 receipts of this run, 12 input states)" in second


async def test_the_receipt_column_counts_every_run_on_the_store():
    async with ma.open_store() as store:
        await _demo.run_demo(store, runtimes=1, runs=2, inputs_per_run=1, out=lambda _: None)
        lines: list[str] = []
        receipts = await _demo.run_demo(
            store, runtimes=1, runs=3, inputs_per_run=1, out=lines.append
        )
        assert len(receipts) == 3
        assert re.search(r"agent-1\s+idle\s+5 consumed, 2 queued\s+5\s", "\n".join(lines))


async def test_read_everything_reads_every_listed_runtime_and_all_its_receipts():
    async with ma.open_store() as store:
        await _demo.run_demo(store, runtimes=2, runs=1, inputs_per_run=1, out=lambda _: None)
        receipts = await _demo.run_demo(
            store, runtimes=2, runs=1, inputs_per_run=1, out=lambda _: None
        )
        other = ma.LogicalRuntimeId("not-a-demo-runtime")
        await store.persist_input_state(other, ma.StoredInputState.new_accepted(ma.InputId.new()))
        seen = await _demo.read_everything(store, receipts)
        assert seen["runtimes"] == await store.list_runtimes()
        assert seen["runtimes"] == [*_demo.demo_runtime_ids(2), other]
        for rid in _demo.demo_runtime_ids(2):
            assert seen[f"{rid}/receipts"] == await store.load_boundary_receipts(rid)
            assert len(await store.load_boundary_receipts(rid)) == 2  # both runs
        assert seen[f"{other}/receipts"] == []


def test_python_dash_m_demo_as_the_readme_runs_it(tmp_path):
    # The README runs it twice in the default directory (./meerkat-demo-store).
    for logins in (20, 40):
        done = subprocess.run(
            [sys.executable, "-m", "meerkat_actor", "demo"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert f"store: {tmp_path / 'meerkat-demo-store'}" in done.stdout
        assert "agent-4" in done.stdout
        assert f'"logins": {logins}' in done.stdout
        assert "reopened: every acknowledged write is back" in done.stdout


def test_demo_rejects_bad_counts(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--runs", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def test_main_runs_the_demo_through_asyncio_and_trio_reopens_it(tmp_path, capsys):
    """`demo --asyncio`: the same workload in an asyncio program through
    meerkat_actor.asyncio; its store is the same store, which the trio demo
    then reopens and adds to."""
    directory = tmp_path / "store"
    assert main(["demo", str(directory), "--asyncio", "--runtimes", "3", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"store: {directory} (asyncio)" in out
    assert "a new store" in out
    assert 'OAuth flow snapshot: {"logins": 6}' in out
    assert "reopened: every acknowledged write is back (6 receipts of this run" in out
    assert main(["demo", str(directory), "--runtimes", "3", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert "recovered from earlier runs: 21 input states" in out
    assert 'OAuth flow snapshot: {"logins": 12}' in out
    assert main(["demo", "--memory", "--asyncio", "--runtimes", "2", "--runs", "1"]) == 0
    assert "store: in memory (asyncio)" in capsys.readouterr().out
