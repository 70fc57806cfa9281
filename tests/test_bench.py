"""The benchmark suite (`meerkat-actor bench`, meerkat_actor/_bench/).

One `--quick --json` run as a subprocess (module-scoped: ~10-40 s) feeds the
checks of the JSON document (marked `slow`); the rest are fast in-process
tests of the baseline store, of the read-back checks that void a run on a
wrong answer, of the options, and of the table of a quick run (a smoke test:
no ratios) against recorded full runs (docs/bench-runs/).

The human table of a quick run shows no ratio, so the tests of the full
table's ratios render the quick run's document as a full run's (`as_full`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
import subprocess
import sys
import uuid
from contextlib import asynccontextmanager
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path

import _values
import pytest
import trio

import meerkat_actor as ma
from meerkat_actor import _bench
from meerkat_actor._bench import (
    _measure,
    _payloads,
    _recovery,
    _retention,
    _sqlite_loop,
    _throughput,
)
from meerkat_actor._bench._measure import BenchFailure
from meerkat_actor._bench._peers import DURABLE, PEERS, DictStore
from meerkat_actor._bench._report import RATIO_COLUMNS, RATIO_ROWS, table, write_plot
from meerkat_actor._bench._results import WORKLOADS, Report
from meerkat_actor._bench._sqlite_loop import LOOP, LOOP_TASKS, LOOP_WORKLOADS
from meerkat_actor._types import _stored_seed

SOURCES = {("actor", "checkpoint"), ("actor", "log"), ("sqlite", "file")}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "meerkat_actor", "bench", "--quick", "--json", "--dir", directory],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return directory, json.loads(done.stdout), done.stderr


@pytest.fixture(scope="module")
def document(quick_run):
    return quick_run[1]


RECORDED_RUNS = sorted((Path(__file__).parent.parent / "docs" / "bench-runs").glob("*.json"))
#: A ratio cell or figure of the table ("1.23x").
RATIO = re.compile(r"\b\d[\d,]*\.\d+x\b")
#: The lines of the full table that give ratios, and the explanations of them.
RATIO_TEXTS = (
    *RATIO_COLUMNS,
    *RATIO_ROWS,
    "durable actor ops/s:",
    "postgres ops/s:",
    "actor vs SQLite:",
    "ops/s over that peer's",
)


def as_full(document):
    """The quick run's document, as a full run's (whose table shows ratios)."""
    return {**document, "quick": False}


def no_ratio(text: str) -> None:
    assert not RATIO.findall(text)
    for ratio_text in RATIO_TEXTS:
        assert ratio_text not in text


def positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


# --- the quick run ---------------------------------------------------------------------------


@pytest.mark.slow
def test_quick_run_prints_one_json_document_and_no_progress(quick_run):
    directory, document, stderr = quick_run
    assert document["quick"] is True
    assert document["peers"] == list(PEERS)
    assert list(document["workloads"]) == list(WORKLOADS)
    # Progress goes to stderr only when it is a terminal; a warning may appear
    # (the temporary directory on tmpfs), nothing else.
    assert all(line.startswith("meerkat-actor: warning:") for line in stderr.splitlines())
    assert list(directory.iterdir()) == [], "the stores' directory was not removed"
    assert positive(document["elapsed_s"])
    assert document["machine"]["cpus"] >= 1


@pytest.mark.slow
def test_every_workload_peer_and_concurrency_has_exactly_one_row(document):
    tasks = document["settings"]["tasks"]
    assert tasks == [1, 8, 64]
    keys = [(r["workload"], r["peer"], r["tasks"]) for r in document["throughput"]]
    assert sorted(keys) == sorted(
        (workload, peer, n)
        for workload in WORKLOADS
        for peer in PEERS
        for n in tasks
        # the loop is sequential: the durable commits at one task only
        if peer != LOOP or (workload in LOOP_WORKLOADS and n == LOOP_TASKS)
    )
    assert LOOP_WORKLOADS == ("commit_4k", "commit_64k")
    assert LOOP_TASKS == 1


@pytest.mark.slow
def test_throughput_figures_are_positive_finite_and_verified(document):
    for row in document["throughput"]:
        where = (row["workload"], row["peer"], row["tasks"])
        for key in ("ops", "writes", "seconds", "ops_per_s", "p50_ms", "p99_ms", "max_ms"):
            assert positive(row[key]), (where, key, row[key])
        assert positive(row["worst_loop_lag_ms"]), where
        assert 0 <= row["worst_gc_pause_ms"] < math.inf, where
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], where
        assert row["ops_per_s"] == pytest.approx(row["ops"] / row["seconds"]), where
        assert row["verified"] is True
        if row["workload"] == "mixed":
            assert 0 < row["writes"] < row["ops"], where
        else:
            assert row["writes"] == row["ops"], where


@pytest.mark.slow
def test_fsyncs_per_commit_by_peer(document):
    for row in document["throughput"]:
        fsyncs, where = row["fsyncs_per_commit"], (row["workload"], row["peer"], row["tasks"])
        if row["peer"] == "actor":
            assert 0 < fsyncs <= 1, where
            assert isinstance(row["checkpoints"], int), where
            if row["tasks"] == 1:
                assert fsyncs == 1, where  # one caller: nothing to group
        elif row["peer"] == "memory":
            assert fsyncs == 0, where
            assert row["checkpoints"] == 0, where
        else:
            assert row["checkpoints"] is None, where
            assert row["largest_batch"] is None, where
            # The databases do not count theirs; the dict has no disk.
            assert fsyncs == (None if row["peer"] in ("sqlite", LOOP, "postgres") else 0), where
        if row["peer"] in ("actor", "memory"):
            assert 1 <= row["largest_batch"] <= row["tasks"], where


@pytest.mark.slow
def test_ratios_are_ops_per_second_over_sqlites_for_the_same_row(document):
    sqlite = {
        (r["workload"], r["tasks"]): r["ops_per_s"]
        for r in document["throughput"]
        if r["peer"] == "sqlite"
    }
    for row in document["throughput"]:
        expected = row["ops_per_s"] / sqlite[(row["workload"], row["tasks"])]
        assert row["ratio_vs_sqlite"] == pytest.approx(expected, rel=1e-12)
        if row["peer"] == "sqlite":
            assert row["ratio_vs_sqlite"] == 1


@pytest.mark.slow
def test_ratios_over_the_sqlite3_loop_and_the_in_memory_actor(document):
    rows = document["throughput"]
    loop = {(r["workload"], r["tasks"]): r["ops_per_s"] for r in rows if r["peer"] == LOOP}
    memory = {(r["workload"], r["tasks"]): r["ops_per_s"] for r in rows if r["peer"] == "memory"}
    assert sorted(loop) == [("commit_4k", 1), ("commit_64k", 1)]
    for row in rows:
        key, where = (row["workload"], row["tasks"]), (row["workload"], row["peer"], row["tasks"])
        if key in loop:
            assert row["ratio_vs_sqlite3_loop"] == pytest.approx(row["ops_per_s"] / loop[key])
        else:
            assert row["ratio_vs_sqlite3_loop"] is None, where
        assert row["ratio_vs_memory"] == pytest.approx(row["ops_per_s"] / memory[key]), where
    # the ratios the issue asks for: the durable actor over the loop at one
    # task, and over the in-memory actor at each concurrency
    actor = [r for r in rows if r["peer"] == "actor"]
    assert all(positive(r["ratio_vs_memory"]) for r in actor)
    assert all(
        positive(r["ratio_vs_sqlite3_loop"])
        for r in actor
        if r["tasks"] == 1 and r["workload"] in LOOP_WORKLOADS
    )


@pytest.mark.slow
def test_the_sqlite3_loop_rows_are_sequential_durable_commits(document):
    rows = [r for r in document["throughput"] if r["peer"] == LOOP]
    for row in rows:
        assert row["verified"] is True  # its file read back through open_sqlite_store
        assert row["writes"] == row["ops"] > 0
        assert row["tasks"] == 1
        assert row["fsyncs_per_commit"] is row["largest_batch"] is row["checkpoints"] is None
        # one transaction at a time: the row's wall time holds every latency,
        # and half of them are at least the median
        assert row["ops"] * row["p50_ms"] / 2 <= row["seconds"] * 1000


@pytest.mark.slow
def test_mixed_rows_report_reads_and_writes_apart(document):
    calls = {"load_session_snapshot", "load_input_state", "load_boundary_receipt"}
    for row in document["throughput"]:
        where = (row["workload"], row["peer"], row["tasks"])
        split = ("read_p50_us", "read_p99_us", "write_p50_ms", "write_p99_ms")
        if row["workload"] != "mixed":
            assert all(row[key] is None for key in (*split, "read_us_by_call")), where
            continue
        for key in split:
            assert positive(row[key]), (where, key)
        assert row["read_p50_us"] <= row["read_p99_us"], where
        assert row["write_p50_ms"] <= row["write_p99_ms"] <= row["max_ms"], where
        assert row["read_p99_us"] / 1000 <= row["max_ms"], where
        by_call = row["read_us_by_call"]
        assert set(by_call) == calls, where
        assert sum(c["reads"] for c in by_call.values()) == row["ops"] - row["writes"], where
        for call, figures in by_call.items():
            if figures["reads"]:
                assert 0 < figures["p50"] <= figures["p99"] <= row["max_ms"] * 1000, (where, call)


@pytest.mark.slow
def test_recovery_rows_found_every_input_state_they_wrote(document):
    sizes = document["settings"]["recovery_sizes"]
    rows = document["recovery"]
    assert sorted((r["input_states"], r["peer"], r["source"]) for r in rows) == sorted(
        (size, peer, source) for size in sizes for peer, source in SOURCES
    )
    for row in rows:
        assert row["found_input_states"] == row["input_states"]
        assert row["verified"] is True
        assert row["runtimes"] == document["settings"]["recovery_runtimes"]
        assert row["receipts"] >= row["input_states"] / 8
        for key in ("open_s", "read_all_s", "rss_before_mib", "rss_after_open_mib"):
            assert positive(row[key]), (row["input_states"], row["source"], key)
        assert row["peak_rss_mib"] >= row["rss_after_open_mib"]
        assert row["peak_rss_over_after_open"] == pytest.approx(
            row["peak_rss_mib"] / row["rss_after_open_mib"]
        )
        assert row["peak_rss_over_after_open"] >= 1
        assert positive(row["disk_bytes"])


@pytest.mark.slow
def test_checkpoint_rows_measure_commits_during_and_without_a_checkpoint(document):
    rows = document["checkpoint"]
    assert [r["input_states"] for r in rows] == document["settings"]["recovery_sizes"]
    for row in rows:
        for key, value in row.items():
            if key.startswith("worst_gc"):
                assert 0 <= value < math.inf, key
            else:
                assert positive(value), (row["input_states"], key, value)
        for stretch in ("during", "backup", "without"):
            assert row[f"p50_commit_ms_{stretch}"] <= row[f"p99_commit_ms_{stretch}"]
            assert row[f"p99_commit_ms_{stretch}"] <= row[f"worst_commit_ms_{stretch}"]
            assert isinstance(row[f"commits_{stretch}"], int)
        assert isinstance(row["backup_bytes"], int)
        for stretch in ("during", "backup"):
            assert row[f"p99_{stretch}_over_without"] == pytest.approx(
                row[f"p99_commit_ms_{stretch}"] / row["p99_commit_ms_without"]
            )
        # the baseline lasts as long as the longer of the two (1 s at least, capped)
        cap = document["settings"]["checkpoint_baseline_max"]
        longer = min(max(row["seconds"], row["backup_s"], 1.0), cap)
        assert row["baseline_s"] == pytest.approx(longer, rel=0.2, abs=0.05)


@pytest.mark.slow
def test_memory_rows_cover_every_peer(document):
    rows = document["memory"]
    sizes = document["settings"]["recovery_sizes"]
    durable = sorted((r["input_states"], r["peer"]) for r in rows if r["peer"] in DURABLE)
    assert durable == sorted((n, p) for n in sizes for p in ("actor", "actor", "sqlite"))
    assert sorted(r["peer"] for r in rows if r["peer"] not in DURABLE) == ["dict", "memory"]
    for row in rows:
        assert math.isfinite(row["bytes_per_state"])
        if row["peer"] != "sqlite":  # SQLite keeps the rows on disk
            assert row["bytes_per_state"] > 0, row
        if row["peer"] in DURABLE:
            assert positive(row["disk_bytes_per_state"]), row
        else:
            assert row["disk_bytes_per_state"] is None


def check_retention(document) -> None:
    """The retention rows of a run: both peers, before and after each size,
    exactly the expected counts, positive figures, and a removal row each."""
    runtimes = document["settings"]["recovery_runtimes"]
    for size in document["settings"]["retention_sizes"]:
        runtimes = min(runtimes, size)
        content = _retention._content(size, runtimes)
        kept = [rt for rt in content if not rt.purged]
        pending = sum(len(rt.plans[-1].input_ids) for rt in kept)
        rows = {(r["peer"], r["stage"]): r for r in document["retention"] if r["built"] == size}
        assert sorted(rows) == sorted(
            [(peer, stage) for peer in ("actor", "sqlite") for stage in ("before", "after")]
            + [("actor", "after_log")]
        )
        log = rows[("actor", "after_log")]
        for key in ("input_states", "runtimes", "payloads", "receipts"):
            assert log[key] == rows[("actor", "after")][key], key
        assert log["snapshot_bytes"] == rows[("actor", "before")]["snapshot_bytes"]
        assert log["verified"] is True
        for peer in ("actor", "sqlite"):
            before, after = rows[(peer, "before")], rows[(peer, "after")]
            assert before["verified"] is after["verified"] is True
            assert (before["input_states"], before["payloads"]) == (size, size)
            assert before["runtimes"] == runtimes
            assert before["receipts"] == sum(len(rt.plans) for rt in content)
            assert after["input_states"] == sum(rt.input_states for rt in kept)
            assert after["runtimes"] == len(kept) == runtimes - runtimes // 2 - runtimes % 2
            assert after["payloads"] == pending  # only the runs in flight keep theirs
            assert after["receipts"] == sum(len(rt.plans) for rt in kept)
            for row in (before, after):
                for key in ("open_s", "read_all_s", "rss_before_mib", "disk_bytes"):
                    assert positive(row[key]), (peer, row["stage"], key)
                assert row["peak_rss_mib"] >= row["rss_after_open_mib"]
                assert (row["snapshot_bytes"] is None) is (peer == "sqlite")
            if peer == "actor":
                assert after["snapshot_bytes"] < before["snapshot_bytes"]
        removals = {r["peer"]: r for r in document["removals"] if r["input_states"] == size}
        assert sorted(removals) == ["actor", "sqlite"]
        for peer, removal in removals.items():
            assert removal["retired"] == sum(rt.terminal for rt in content)
            assert removal["retire_calls"] == sum(1 for rt in content if rt.terminal)
            assert removal["purged"] == runtimes - len(kept)
            assert removal["purged_input_states"] == size - rows[(peer, "after")]["input_states"]
            for key in ("retire_s", "destroy_s", "purge_s", "select_s"):
                assert positive(removal[key]), (peer, key)
            vacuumed = removal["vacuumed_bytes"]
            if peer == "actor":
                assert positive(removal["checkpoint_s"])
                assert removal["vacuum_s"] is vacuumed is None
            else:
                assert removal["checkpoint_s"] is None
                assert positive(removal["vacuum_s"])
                assert 0 < vacuumed < rows[("sqlite", "after")]["disk_bytes"]


@pytest.mark.slow
def test_retention_rows_hold_what_the_removal_left(document):
    assert document["settings"]["parts"] == ["throughput", "recovery", "retention"]
    check_retention(document)


@pytest.mark.slow
def test_human_table_names_every_peer_workload_and_section(document):
    text = table(Report.from_json(as_full(document)))
    for peer in PEERS:
        assert f"\n  {peer} " in text
        assert f"\n{peer} " in text  # a row of the throughput tables
    for title in WORKLOADS.values():
        assert title in text
    for heading in (
        "Recovery:",
        "peak/after",
        "Checkpoint, then backup(), of the log-only actor store",
        "p99 vs none",
        "Memory per stored",
        "Retention:",
        "The removal, by one task",
        "actor vs SQLite:",
        "vs sqlite3-loop",
        "vs memory",
        "durable actor ops/s: ",
        " the sqlite3-loop's (1 task); ",
        " the in-memory actor's (1 / 8 / 64 tasks)",
        "mixed, by kind of call",
        "read p50 us",
        "load_input_state p50/p99 us",
        "write p99 ms",
    ):
        assert heading in text
    assert "\n              backup  " in text
    assert "(all)" in text
    assert "MISSING" not in text


@pytest.mark.slow
def test_from_json_presents_a_saved_run_without_measuring(document, tmp_path, capsys):
    document = as_full(document)
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(document))
    args = parser().parse_args(["--from-json", str(saved)])
    assert _bench.run(args) == 0
    assert capsys.readouterr().out == table(Report.from_json(document)) + "\n"
    assert _bench.run(parser().parse_args(["--from-json", str(saved), "--json"])) == 0
    assert json.loads(capsys.readouterr().out) == document
    missing = ["--from-json", str(tmp_path / "none.json"), "--json"]
    assert _bench.run(parser().parse_args(missing)) == 3
    assert json.loads(capsys.readouterr().out)["error"]["kind"] == "not_found"  # with --json
    older = {k: v for k, v in document.items() if k not in ("retention", "removals")}
    saved.write_text(json.dumps(older))  # a run from before the retention part
    assert _bench.run(parser().parse_args(["--from-json", str(saved)])) == 0
    assert "Retention:" not in capsys.readouterr().out
    saved.write_text(json.dumps(before_issue_12(document)))
    assert _bench.run(parser().parse_args(["--from-json", str(saved)])) == 0
    text = capsys.readouterr().out
    assert "backup  " not in text  # not measured then: no row
    assert f"\n{LOOP} " not in text  # no loop rows
    assert "the sqlite3-loop's" not in text
    assert "mixed, by kind of call" not in text
    assert "peak/after" in text  # computed from the figures the rows have
    saved.write_text("{}")
    assert _bench.run(parser().parse_args(["--from-json", str(saved), "--json"])) == 2
    out, err = capsys.readouterr()
    assert out == ""  # a usage error: no JSON, as argparse's own
    assert "not a `bench --json` document" in err


@pytest.mark.slow
def test_a_quick_runs_table_is_a_smoke_test_without_ratios(document, tmp_path):
    """Issue 16: `bench --quick` says its figures are a smoke test and prints
    no ratio (its rows are too short to compare); the figures themselves are
    there, and `--json` keeps every field."""
    saved = tmp_path / "quick.json"
    saved.write_text(json.dumps(document))
    shown = subprocess.run(
        [sys.executable, "-m", "meerkat_actor", "bench", "--from-json", saved],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == table(Report.from_json(document)) + "\n"
    first = shown.splitlines()[0]
    assert first.startswith("meerkat-actor bench --quick: a smoke test.")
    assert "not measurements" in first
    assert "no ratio" in first
    no_ratio(shown)
    for row in document["throughput"]:
        assert f"{row['ops_per_s']:,.0f}" in shown
    assert "Retention:" in shown
    assert "\nactor   before " in shown
    # The full table of the same figures has them all.
    full = table(Report.from_json(as_full(document)))
    assert RATIO.findall(full)
    for ratio_text in RATIO_TEXTS:
        assert ratio_text in full, ratio_text
    assert document["throughput"][0]["ratio_vs_sqlite"] > 0  # the JSON keeps them


@pytest.mark.parametrize("recorded", RECORDED_RUNS, ids=lambda p: p.stem)
def test_a_quick_table_shows_no_ratio_and_a_full_one_does(recorded):
    document = json.loads(recorded.read_text())
    assert document["quick"] is False
    full = table(Report.from_json(document))
    quick = table(Report.from_json({**document, "quick": True}))
    assert full.startswith("meerkat-actor bench\n")
    assert RATIO.findall(full)
    assert quick.startswith("meerkat-actor bench --quick: a smoke test.")
    no_ratio(quick)
    # Every figure but the ratios is still shown.
    for row in document["throughput"]:
        assert f"{row['ops_per_s']:,.0f}" in quick
    for row in document["recovery"]:
        assert f"{row['input_states']:,}" in quick
    if document.get("shared"):
        assert "vs 1 process" in full
        assert "Shared database:" in quick


@pytest.mark.slow
def test_plot_is_a_png(document, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "plot.png"
    write_plot(Report.from_json(document), str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def before_issue_12(document):
    """`document` as a run from before the fields of issue 12: no loop rows,
    no ratios but SQLite's, no split latency, no backup, no peak ratio."""
    new_fields = (
        "ratio_vs_sqlite3_loop",
        "ratio_vs_memory",
        "read_p50_us",
        "read_p99_us",
        "write_p50_ms",
        "write_p99_ms",
        "read_us_by_call",
        "peak_rss_over_after_open",
        "p99_during_over_without",
        "p99_backup_over_without",
    )

    def strip(row):
        return {k: v for k, v in row.items() if k not in new_fields and "backup" not in k}

    older = dict(document)
    older["peers"] = [p for p in document["peers"] if p != LOOP]
    older["throughput"] = [strip(r) for r in document["throughput"] if r["peer"] != LOOP]
    older["recovery"] = [strip(r) for r in document["recovery"]]
    older["checkpoint"] = [strip(r) for r in document["checkpoint"]]
    return older


# --- options -------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(prog="meerkat-actor bench")
    _bench.add_arguments(made)
    return made


def test_options_parse():
    args = parser().parse_args(
        [
            "--quick",
            "--seconds",
            "0.5",
            "--recovery-sizes",
            "1_000,20",
            "--retention-sizes",
            "300",
            "--parts",
            "retention,throughput",
        ]
    )
    assert args.retention_sizes == (300,)
    assert args.parts == ("retention", "throughput")
    assert args.quick
    assert not args.json
    assert args.seconds == 0.5
    assert args.recovery_sizes == (1000, 20)
    assert args.dir is None
    assert args.plot is None


@pytest.mark.parametrize(
    "bad",
    [
        ["--seconds", "0"],
        ["--seconds", "x"],
        ["--recovery-sizes", "10,0"],
        ["--retention-sizes", "0"],
        ["--parts", "recovery,nope"],
        ["--nope"],
    ],
)
def test_bad_options_are_usage_errors(bad, capsys):
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args(bad)
    assert exit_.value.code == 2


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # find_spec -> None
    args = parser().parse_args(["--quick", "--json", "--plot", str(tmp_path / "p.png")])
    assert _bench.run(args) == 2
    out, err = capsys.readouterr()
    assert "pip install 'meerkat_actor[plot]'" in err
    assert out == ""  # a usage error, before anything is measured
    assert list(tmp_path.iterdir()) == []


def test_settings_overrides():
    changed = _bench.QUICK.with_overrides(1.5, (50, 70))
    assert (changed.seconds, changed.recovery_sizes, changed.memory_states) == (1.5, (50, 70), 50)
    assert _bench.QUICK.with_overrides(None, None) == _bench.QUICK
    parts = _bench.QUICK.with_overrides(None, None, retention_sizes=(9,), parts=("retention",))
    assert (parts.retention_sizes, parts.parts) == ((9,), ("retention",))
    # the parts run in their own order, whatever the order asked
    assert _bench.QUICK.with_overrides(None, None, parts=("retention", "throughput")).parts == (
        "throughput",
        "retention",
    )


def test_plot_needs_the_throughput_part(tmp_path, capsys):
    args = parser().parse_args(["--parts", "retention", "--plot", str(tmp_path / "p.png")])
    assert _bench.run(args) == 2
    assert "--plot draws the throughput part" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# --- the retention part alone, quick ---------------------------------------------------------


def test_quick_retention_part_alone(tmp_path):
    """`bench --quick --parts retention`: only the retention rows, every one
    verified with exact counts (a few seconds: fresh processes)."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "meerkat_actor", "bench", "--quick", "--json"),
            *("--parts", "retention", "--retention-sizes", "150", "--dir", str(tmp_path)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["settings"]["parts"] == ["retention"]
    assert document["settings"]["retention_sizes"] == [150]
    assert document["throughput"] == document["recovery"] == document["memory"] == []
    assert len(document["retention"]) == 5
    check_retention(document)
    text = table(Report.from_json(document))
    assert "Retention: 150 input states over 40 runtimes" in text
    assert "Throughput:" not in text
    assert list(tmp_path.iterdir()) == []


# --- the naive baseline keeps the contract's semantics ------------------------------------------


def receipt_for(states, run_id=None) -> ma.RunBoundaryReceipt:
    return _values.receipt(
        0,
        run_id or ma.RunId.new(),
        boundary=ma.RunApplyBoundary.RUN_START,
        contributing_input_ids=tuple(s.input_id for s in states),
        conversation_digest=None,
        message_count=1,
    )


async def test_dict_store_refuses_a_duplicate_receipt_and_a_wrong_session_key():
    store = DictStore()
    runtime = ma.LogicalRuntimeId("rt")
    session = ma.SessionId.new()
    delta = ma.SessionDelta(_payloads.session_snapshot(session, 100))
    first = [ma.StoredInputState.new_accepted(ma.InputId.new()) for _ in range(3)]
    receipt = receipt_for(first)
    await store.atomic_apply(runtime, delta, receipt, first, session)
    again = [ma.StoredInputState.new_accepted(ma.InputId.new())]
    with pytest.raises(ma.ReceiptConflict):
        await store.atomic_apply(runtime, None, receipt, again)
    with pytest.raises(ma.SessionKeyMismatch):
        await store.atomic_apply(runtime, delta, receipt_for(again), again, ma.SessionId.new())
    with pytest.raises(ma.WriteFailed):
        await store.atomic_apply(runtime, ma.SessionDelta(b"[]"), receipt_for(again), again)
    held = await store.load_input_states(runtime)
    assert held == sorted(first, key=lambda s: s.input_id.value.int)
    assert await store.load_session_snapshot(runtime) == delta.session_snapshot
    assert await store.load_boundary_receipt(runtime, receipt.run_id, 0) == receipt
    assert await store.load_input_state(runtime, first[0].input_id) == first[0]
    assert await store.load_input_states(ma.LogicalRuntimeId("other")) == []


async def test_dict_store_oauth_update_is_all_or_nothing():
    store = DictStore()
    await store.update_auth_oauth_flow_snapshot(_payloads.oauth_increment)
    assert _payloads.oauth_counter(await store.load_auth_oauth_flow_snapshot()) == 1

    def boom(current: bytes | None) -> bytes:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store.update_auth_oauth_flow_snapshot(boom)
    with pytest.raises(TypeError):
        await store.update_auth_oauth_flow_snapshot(lambda current: "text")  # type: ignore[arg-type, return-value]
    assert _payloads.oauth_counter(await store.load_auth_oauth_flow_snapshot()) == 1


def test_session_snapshots_are_meerkat_json_of_the_asked_size():
    session = ma.SessionId.new()
    for size in (4096, 65536):
        snapshot = _payloads.session_snapshot(session, size)
        assert size <= len(snapshot) < size + 400
        assert ma.MeerkatSessionCodec().session_id(snapshot) == session


# --- a wrong answer voids the run ----------------------------------------------------------------


class LosesInputStates(DictStore):
    """Keeps only the first input state of every commit."""

    async def atomic_apply(self, runtime_id, delta, receipt, input_updates, session_store_key=None):
        await super().atomic_apply(runtime_id, delta, receipt, input_updates[:1], session_store_key)


class LosesUpdates(DictStore):
    """Reads the OAuth snapshot, yields, then writes: concurrent updates are lost."""

    async def update_auth_oauth_flow_snapshot(self, update):
        current = await self.load_auth_oauth_flow_snapshot()
        await trio.lowlevel.checkpoint()
        self._oauth = update(current)


def broken_peer(store_class):
    @asynccontextmanager
    async def open_peer(peer, directory, **options):
        yield store_class()

    return open_peer


async def test_a_store_that_loses_input_states_fails_the_row(monkeypatch, tmp_path):
    monkeypatch.setattr(_throughput, "open_peer", broken_peer(LosesInputStates))
    prepared = _throughput._prepare_commits(4096, 40, 4)
    with pytest.raises(BenchFailure, match="holds"):
        await _throughput._row(
            "commit_4k", "dict", 4, directory=str(tmp_path), seconds=1, prepared=prepared, items=40
        )


async def test_a_store_that_loses_oauth_updates_fails_the_row(monkeypatch, tmp_path):
    monkeypatch.setattr(_throughput, "open_peer", broken_peer(LosesUpdates))
    with pytest.raises(BenchFailure, match="lost updates"):
        await _throughput._row(
            "oauth", "dict", 8, directory=str(tmp_path), seconds=1, prepared=None, items=80
        )


# --- PostgreSQL, and several processes on one database -------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("postgres_dsn")  # skipped or failed as the other PostgreSQL tests
def test_the_postgres_peer_runs_every_workload_and_concurrency(document):
    rows = {(r["workload"], r["tasks"]) for r in document["throughput"] if r["peer"] == "postgres"}
    assert rows == {(w, t) for w in document["workloads"] for t in document["settings"]["tasks"]}
    assert "throwaway cluster" in document["machine"]["postgres"]
    for row in document["throughput"]:
        if row["peer"] == "postgres":
            assert row["verified"] is True
            assert positive(row["ops_per_s"])


@pytest.mark.slow
@pytest.mark.usefixtures("postgres_dsn")
def test_shared_database_rows_for_1_2_and_4_processes(document):
    shared = document["shared"]
    assert {(r["peer"], r["processes"]) for r in shared} == {
        (peer, n) for peer in ("postgres", "sqlite") for n in (1, 2, 4)
    }
    one = {r["peer"]: r["ops_per_s"] for r in shared if r["processes"] == 1}
    sqlite = {r["processes"]: r["ops_per_s"] for r in shared if r["peer"] == "sqlite"}
    for r in shared:
        assert r["verified"] is True
        assert r["workload"] == "commit_4k"
        assert r["tasks_per_process"] == 8
        assert positive(r["ops_per_s"])
        assert r["ops_per_s"] == pytest.approx(r["ops"] / r["seconds"])
        assert r["ratio_vs_one_process"] == pytest.approx(r["ops_per_s"] / one[r["peer"]])
        assert r["ratio_vs_sqlite"] == pytest.approx(r["ops_per_s"] / sqlite[r["processes"]])
        assert 0 < r["p50_ms"] <= r["p99_ms"]


@pytest.mark.slow
@pytest.mark.usefixtures("postgres_dsn")
def test_the_report_gives_postgres_over_sqlite_and_over_the_actor_store(quick_run, tmp_path):
    document = as_full(quick_run[1])
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(document))
    shown = subprocess.run(
        [sys.executable, "-m", "meerkat_actor", "bench", "--from-json", saved],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for workload in document["workloads"]:
        rows = [r for r in document["throughput"] if r["workload"] == workload]
        ops = {(r["peer"], r["tasks"]): r["ops_per_s"] for r in rows}
        tasks = sorted({r["tasks"] for r in rows if r["peer"] == "postgres"})
        over_sqlite = " / ".join(f"{ops['postgres', t] / ops['sqlite', t]:.2f}x" for t in tasks)
        over_actor = " / ".join(f"{ops['postgres', t] / ops['actor', t]:.2f}x" for t in tasks)
        assert (
            f"postgres ops/s: {over_sqlite} the SQLite backend's; {over_actor} the durable"
            f" actor store's ({' / '.join(map(str, tasks))} tasks)"
        ) in shown


@pytest.mark.slow
def test_the_report_shows_the_shared_rows(quick_run, tmp_path):
    document = quick_run[1]
    saved = tmp_path / "run.json"
    saved.write_text(json.dumps(document))
    shown = subprocess.run(
        [sys.executable, "-m", "meerkat_actor", "bench", "--from-json", saved],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Shared database:" in shown
    for row in document["shared"]:
        assert f"{row['ops_per_s']:,.0f}" in shown
    # A document of a run before the shared rows still renders.
    del document["shared"]
    saved.write_text(json.dumps(document))
    old = subprocess.run(
        [sys.executable, "-m", "meerkat_actor", "bench", "--from-json", saved],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Shared database:" not in old


# --- the sqlite3-loop peer ----------------------------------------------------------------------


async def test_the_sqlite3_loop_writes_the_rows_the_sqlite_backend_reads(tmp_path):
    """What the loop wrote, read back through `open_sqlite_store`, is every
    value of every write: the same rows as the backend's `atomic_apply`."""
    prepared = _throughput._prepare_commits(4096, 30, 1)
    session = prepared.sessions[0]
    writes = [op for op in prepared.items if isinstance(op, _payloads.Write)]
    path = str(tmp_path / "loop" / "loop.sqlite3")
    loop = _sqlite_loop.SqliteLoop(path)
    try:
        assert loop.synchronous() == 2  # FULL
        mode = loop.connection.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode.lower() == "wal"
        timed = loop.run(session, writes, 60)
    finally:
        loop.close()
    assert timed.items == list(range(30))
    assert len(timed.latencies) == len(timed.starts) == 30
    assert timed.starts == sorted(timed.starts)
    assert sum(timed.latencies) <= timed.elapsed  # one after another
    async with ma.open_sqlite_store(path) as store:
        rid = session.runtime_id
        assert await store.list_runtimes() == [rid]
        expected = {s.input_id: s for write in writes for s in write.states}
        held = await store.load_input_states(rid)
        assert {s.input_id: s for s in held} == expected
        assert len(held) == len(expected)
        receipts = await store.load_boundary_receipts(rid)
        assert sorted(receipts, key=lambda r: str(r.run_id)) == sorted(
            (w.receipt for w in writes), key=lambda r: str(r.run_id)
        )
        assert await store.load_session_snapshot(rid) == session.delta.session_snapshot
        first = writes[0]
        assert await store.load_input_state(rid, first.states[0].input_id) == first.states[0]
        # the backend keeps using the file: a duplicate receipt is refused
        with pytest.raises(ma.ReceiptConflict):
            await store.atomic_apply(rid, None, first.receipt, first.states)


async def test_the_sqlite3_loop_stops_at_its_time_and_refuses_a_duplicate(tmp_path):
    prepared = _throughput._prepare_commits(4096, 5, 1)
    writes = [op for op in prepared.items if isinstance(op, _payloads.Write)]
    loop = _sqlite_loop.SqliteLoop(str(tmp_path / "loop.sqlite3"))
    try:
        assert loop.run(prepared.sessions[0], writes, 1e-9).items in ([], [0])
        assert loop.run(prepared.sessions[0], writes[1:], 60).items == [0, 1, 2, 3]
        with pytest.raises(sqlite3.IntegrityError):  # the receipt's primary key
            loop.run(prepared.sessions[0], writes[1:], 60)
        assert not loop.connection.in_transaction  # rolled back
    finally:
        loop.close()


async def test_a_sqlite3_loop_row_is_read_back_and_checked(tmp_path):
    prepared = _throughput._prepare_commits(4096, 40, 1)
    row = await _throughput._row(
        "commit_4k",
        LOOP,
        1,
        directory=str(tmp_path / "row"),
        seconds=5,
        prepared=prepared,
        items=40,
    )
    assert (row.peer, row.tasks, row.ops, row.writes, row.verified) == (LOOP, 1, 40, 40, True)
    assert row.fsyncs_per_commit is row.largest_batch is row.checkpoints is None
    assert row.read_p50_us is None
    assert row.read_us_by_call is None
    with pytest.raises(ValueError, match="1 task"):
        await _throughput._row(
            "commit_4k",
            LOOP,
            8,
            directory=str(tmp_path / "r8"),
            seconds=1,
            prepared=prepared,
            items=40,
        )
    with pytest.raises(ValueError, match="only writes"):
        await _throughput._row(
            "mixed",
            LOOP,
            1,
            directory=str(tmp_path / "rm"),
            seconds=1,
            prepared=_throughput._prepare_mixed(20, 1),
            items=20,
        )


async def test_a_sqlite3_loop_that_writes_other_rows_fails_the_row(monkeypatch, tmp_path):
    # Input states go nowhere: the read back through the backend finds none.
    nothing = (
        "INSERT INTO runtime_input_states (runtime_id, input_id, state_json) SELECT ?, ?, ? WHERE 0"
    )
    monkeypatch.setattr(_sqlite_loop, "_UPSERT_INPUT", nothing)
    prepared = _throughput._prepare_commits(4096, 10, 1)
    with pytest.raises(BenchFailure, match="holds 0 input states"):
        await _throughput._row(
            "commit_4k", LOOP, 1, directory=str(tmp_path), seconds=5, prepared=prepared, items=10
        )


def test_the_mixed_workload_splits_its_latencies_by_call():
    prepared = _throughput._prepare_mixed(10, 1)
    kinds = [type(op).__name__ for op in prepared.items]
    assert kinds[0] == kinds[5] == "Write"
    latencies = [0.001 * (n + 1) for n in range(10)]
    timed = _measure.Timed(latencies, [0.0] * 10, 1.0, list(range(10)))
    split = _throughput._split_latencies(prepared, timed)
    assert split["write_p50_ms"] == pytest.approx(1.0)  # items 0 and 5: 1 and 6 ms
    assert split["write_p99_ms"] == pytest.approx(6.0)
    reads = sorted(latencies[n] for n in range(10) if n not in (0, 5))
    assert split["read_p50_us"] == pytest.approx(reads[3] * 1e6)
    assert split["read_p99_us"] == pytest.approx(reads[-1] * 1e6)
    by_call = split["read_us_by_call"]
    assert sum(c["reads"] for c in by_call.values()) == 8
    assert _throughput._split_latencies(_throughput._prepare_commits(4096, 3, 1), timed) == {}
    assert _throughput._split_latencies(None, timed) == {}


def test_recovery_check_catches_a_missing_extra_or_changed_input_state():
    plans = _payloads.plan_runtime("check", 20)
    states = [s for plan in plans for s in _payloads.write_for(plan).states]
    states.sort(key=lambda s: s.input_id.value.int)
    runtime = ma.LogicalRuntimeId("rt")
    assert _recovery._check_runtime(states, plans, runtime) == 20
    with pytest.raises(BenchFailure, match="19 input states, wrote 20"):
        _recovery._check_runtime(states[1:], plans, runtime)
    changed = replace(states[5], seed=replace(states[5].seed, attempt_count=2))
    with pytest.raises(BenchFailure, match="differs"):
        _recovery._check_runtime([*states[:5], changed, *states[6:]], plans, runtime)
    stranger = _payloads.consumed_input(uuid.uuid4(), plans[0].run_id, 0)
    with pytest.raises(BenchFailure, match="never written"):
        _recovery._check_runtime([stranger, *states[1:]], plans, runtime)
    with pytest.raises(BenchFailure, match="never written"):
        _recovery._check_runtime([states[0], *states[:-1]], plans, runtime)


def test_is_consumed_input_compares_every_field():
    input_id, run_id = uuid.uuid4(), uuid.uuid4()
    stored = _payloads.consumed_input(input_id, run_id, 7)
    check = _payloads.is_consumed_input
    assert check(stored, input_id, run_id, 7)
    assert not check(stored, uuid.uuid4(), run_id, 7)
    assert not check(stored, input_id, uuid.uuid4(), 7)
    assert not check(stored, input_id, run_id, 8)
    later = _payloads.EPOCH + timedelta(days=1)
    entry = stored.state.history[0]
    other_state = {
        "input_id": ma.InputId.new(),
        "created_at": later,
        "updated_at": later,
        "history": (replace(entry, reason="other"),),
        "policy": {"a": 1},
        "runtime_semantics": {"a": 1},
        "durability": ma.InputDurability.EPHEMERAL,
        "idempotency_key": "key",
        "recovery_count": 1,
        "reconstruction_source": {"a": 1},
        "persisted_input": {"type": "user_message", "text": "other"},
    }
    other_seed = {
        "phase": ma.InputLifecycleState.APPLIED,
        "last_run_id": ma.RunId.new(),
        "last_boundary_sequence": 1,
        "terminal_outcome": None,
        "attempt_count": 2,
    }
    assert set(other_state) == {f.name for f in fields(ma.InputState)}
    assert set(other_seed) == {f.name for f in fields(ma.InputStateSeed)}
    for name, value in other_state.items():
        changed = ma.StoredInputState(replace(stored.state, **{name: value}), stored.seed)
        assert not check(changed, input_id, run_id, 7), name
    for name, value in other_seed.items():
        # A wrong seed read back may hold a phase and an outcome that
        # disagree, which only a store's decoder builds (`_stored_seed`).
        seed_fields = {f.name: getattr(stored.seed, f.name) for f in fields(ma.InputStateSeed)}
        changed = ma.StoredInputState(stored.state, _stored_seed(**{**seed_fields, name: value}))
        assert not check(changed, input_id, run_id, 7), name
    for history in ((), (entry, entry), (replace(entry, timestamp=later),)):
        changed = ma.StoredInputState(replace(stored.state, history=history), stored.seed)
        assert not check(changed, input_id, run_id, 7), history


class HidesFromListing:
    """A store whose `list_runtimes` leaves out one runtime it still holds."""

    def __init__(self, store, hidden):
        self._store = store
        self._hidden = hidden

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def list_runtimes(self):
        return [rid for rid in await self._store.list_runtimes() if rid != self._hidden]


async def test_retention_check_catches_what_the_removal_should_have_changed():
    content = _retention._content(60, 6)
    writes = _retention._writes(content)
    async with ma.open_store() as store:
        await _retention._write_all(store, content, writes)
        found, listed = await _retention._verify(store, content, after=False)
        assert (found.input_states, found.payloads, len(listed)) == (60, 60, 6)
        with pytest.raises(BenchFailure, match="list_runtimes"):  # nothing purged yet
            await _retention._verify(store, content, after=True)
        purged = [rt for rt in content if rt.purged]
        for rt in purged:
            await store.commit_machine_lifecycle(rt.runtime_id, _retention._DESTROY, [])
            await store.purge_runtime(rt.runtime_id)
        with pytest.raises(BenchFailure, match="differs"):  # payloads not retired
            await _retention._verify(store, content, after=True)
        for rt in content:
            if not rt.purged:
                ids = [ma.InputId(i) for plan in rt.plans[:-1] for i in plan.input_ids]
                await store.retire_input_payloads(rt.runtime_id, ids)
        found, listed = await _retention._verify(store, content, after=True)
        kept = [rt for rt in content if not rt.purged]
        assert found.input_states == sum(rt.input_states for rt in kept)
        assert found.payloads == sum(len(rt.plans[-1].input_ids) for rt in kept)
        assert listed == [rt.runtime_id for rt in kept]
        # A purged runtime that still holds something is caught, even unlisted.
        again = purged[0]
        await store.commit_machine_lifecycle(again.runtime_id, _retention._START, [])
        with pytest.raises(BenchFailure, match="list_runtimes"):
            await _retention._verify(store, content, after=True)
        hiding = HidesFromListing(store, again.runtime_id)
        with pytest.raises(BenchFailure, match="still has its runtime state"):
            await _retention._verify(hiding, content, after=True)


def test_retention_content_has_terminal_and_pending_inputs():
    content = _retention._content(400, 40)
    assert sum(rt.input_states for rt in content) == 400
    assert [rt.purged for rt in content[:4]] == [True, False, True, False]
    states = [s for write in _retention._writes(content)[0] for s in write.states]
    terminal = [s for s in states if s.seed.phase.is_terminal]
    assert len(terminal) == content[0].terminal
    assert len(states) - len(terminal) == len(content[0].plans[-1].input_ids) > 0
    assert all(s.state.persisted_input is not None for s in states)
    plan = content[0].plans[-1]
    stored = _payloads.pending_input(plan.input_ids[0], plan.run_id, plan.first_index)
    assert _payloads.is_pending_input(stored, plan.input_ids[0], plan.run_id, plan.first_index)
    assert not _payloads.is_consumed_input(stored, plan.input_ids[0], plan.run_id, plan.first_index)
    consumed = _payloads.consumed_input(plan.input_ids[0], plan.run_id, plan.first_index)
    retired = ma.StoredInputState(replace(consumed.state, persisted_input=None), consumed.seed)
    args = (plan.input_ids[0], plan.run_id, plan.first_index)
    assert _payloads.is_consumed_input(retired, *args, retired=True)
    assert not _payloads.is_consumed_input(retired, *args)
    assert not _payloads.is_consumed_input(consumed, *args, retired=True)
