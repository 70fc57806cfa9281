"""The operator command line, `python -m meerkat_actor` (docs/cli.md, issue 5).

Every test runs the CLI as a subprocess and checks its exit code, the key
parts of its messages and its JSON documents against stores written here
with the public API (tests/_cli_stores.py: three runtimes, input states in
seven phases, receipts with sequences >= 2**63, session snapshots, runtime
states, ops snapshots and an OAuth flow snapshot). Expected values come from
the API reading the same store back, never from the CLI's code.

The stores (built once per module, `stores`): `clean` was closed normally
(one snapshot at LSN 17, an empty segment); `logged` was left without a final
checkpoint (snapshot at LSN 8, its log holds 9..17); `covered` is `logged`
plus the segment the snapshot covers (1..8), as a crash during a checkpoint
leaves it. Tests that damage or change a store work on a copy. Read-only
commands are checked to change no file (a hash and the mode of every file)
and to create no LOCK file.
"""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from _cli_stores import (
    A1,
    A2,
    A10,
    OAUTH_SECRET,
    R1,
    R2,
    R3,
    RECORDS_A,
    RECORDS_B,
    U63,
    U64_MAX,
    Content,
    RuntimeContent,
    by_name,
    cli,
    cli_all,
    counts,
    expected_dump,
    expected_runtimes,
    file_entries,
    flip,
    format_file,
    held_open_by_child,
    json_lines,
    json_out,
    read_content,
    read_sqlite,
    read_store,
    seg,
    snap,
    tree,
    write_all,
    write_at,
    write_part_a,
    write_part_b,
)
from test_durable import walk  # the record walker independent of the package

import meerkat_actor as ma
from meerkat_actor.__main__ import main

LAST = RECORDS_A + RECORDS_B  # the LSN of the last record
ERROR = "meerkat-actor: error: "
SECRETS = (OAUTH_SECRET, "second-verifier-7Qx")


@dataclass(frozen=True)
class Stores:
    base: Path
    clean: Path
    logged: Path
    covered: Path
    binary: Path
    sqlite: Path
    content: Content
    binary_content: Content


class _PrefixCodec:
    """A session codec for snapshots that are not JSON: a 2-byte tag, then
    the session id's 16 bytes, then anything."""

    def session_id(self, snapshot: bytes) -> ma.SessionId:
        if len(snapshot) < 18:
            raise ValueError("too short")
        return ma.SessionId(uuid.UUID(bytes=snapshot[2:18]))


BINARY_SESSION = b"\xff\xfe" + bytes(range(16)) + b"\x00\x80 binary session state"


async def _build(base: Path) -> tuple[Content, Content]:
    async with ma.open_store(base / "clean") as store:
        await write_all(store)
        content = await read_content(store)
    with trio.CancelScope() as scope:
        async with ma.open_store(base / "logged") as store:
            await write_part_a(store)
            # A copy while it is open and idle: the log of part A, no snapshot.
            shutil.copytree(base / "logged", base / "early")
            await store.checkpoint()
            await write_part_b(store)
            assert await read_content(store) == content
            scope.cancel()  # no final checkpoint
            await trio.lowlevel.checkpoint()
    shutil.copytree(base / "logged", base / "covered")
    shutil.copy2(base / "early" / seg(1), base / "covered" / seg(1))
    async with ma.open_store(base / "binary", session_codec=_PrefixCodec()) as store:
        await store.commit_session_snapshot(A1, ma.SessionDelta(BINARY_SESSION))
        binary = await read_content(store)
    async with ma.open_sqlite_store(base / "source.sqlite3") as store:
        await write_all(store)
        assert await read_content(store) == content
    return content, binary


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Stores:
    base = tmp_path_factory.mktemp("stores")
    content, binary = trio.run(_build, base)
    assert sorted(os.listdir(base / "clean")) == ["FORMAT", "LOCK", seg(LAST + 1), snap(LAST)]
    assert sorted(os.listdir(base / "logged")) == [
        "FORMAT",
        "LOCK",
        seg(RECORDS_A + 1),
        snap(RECORDS_A),
    ]
    assert [r.lsn for r in walk(base / "logged" / seg(RECORDS_A + 1))] == list(
        range(RECORDS_A + 1, LAST + 1)
    )
    return Stores(
        base,
        base / "clean",
        base / "logged",
        base / "covered",
        base / "binary",
        base / "source.sqlite3",
        content,
        binary,
    )


@pytest.fixture
def copy_of(stores: Stores, tmp_path: Path):
    """A copy of one of the module's stores, for a test to change."""

    def make(which: Path, name: str = "copy") -> Path:
        target = tmp_path / name
        shutil.copytree(which, target)
        return target

    return make


@contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    """Assert that no file under `paths` is created, changed or removed."""
    before = [tree(p) for p in paths]
    yield
    assert [tree(p) for p in paths] == before


def error_message(done: subprocess.CompletedProcess[str]) -> str:
    """The one `meerkat-actor: error: ...` line of stderr, without the prefix."""
    lines = [line for line in done.stderr.splitlines() if line.startswith(ERROR)]
    assert len(lines) == 1, done.stderr
    return lines[0][len(ERROR) :]


def json_error(done: subprocess.CompletedProcess[str], kind: str) -> str:
    document = json_out(done)
    assert set(document) == {"error"}
    assert document["error"]["kind"] == kind, document
    message = document["error"]["message"]
    assert message == error_message(done)
    return message


def no_secrets(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- inspect ----------------------------------------------------------------------


def test_inspect_json_of_a_cleanly_closed_store(stores: Stores):
    with unchanged(stores.clean):
        done = cli("inspect", stores.clean, "--json")
    assert done.returncode == 0, done.stderr
    document = json_out(done)
    assert by_name(document.pop("files")) == file_entries(stores.clean)
    assert document == {
        "store": str(stores.clean),
        "format_version": 3,
        "last_lsn": LAST,
        "snapshot_lsn": LAST,
        "log_first_lsn": None,
        "runtimes": expected_runtimes(stores.content),
        "oauth_flow_snapshot": True,
        "notes": [],
    }
    no_secrets(done.stdout, done.stderr)


def test_inspect_json_of_a_store_with_a_log_after_its_snapshot(stores: Stores):
    with unchanged(stores.logged):
        done = cli("inspect", stores.logged, "--json")
    assert done.returncode == 0, done.stderr
    document = json_out(done)
    assert (document["last_lsn"], document["snapshot_lsn"], document["log_first_lsn"]) == (
        LAST,
        RECORDS_A,
        RECORDS_A + 1,
    )
    assert by_name(document["files"]) == file_entries(stores.logged)
    assert [f["kind"] for f in by_name(document["files"])] == [
        "format",
        "lock",
        "segment",
        "snapshot",
    ]
    # Part B changed what part A wrote: the counts are those of the replayed log.
    assert document["runtimes"] == expected_runtimes(stores.content)
    assert document["notes"] == []


def test_inspect_human_output(stores: Stores):
    done = cli("inspect", stores.logged)
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines()]
    assert f"store: {stores.logged}" in lines
    assert "format version: 3" in lines
    oldest = f"the oldest log segment starts at {RECORDS_A + 1}"
    assert f"LSN: last {LAST}; snapshot at {RECORDS_A}; {oldest}" in lines
    assert "runtimes: 3" in lines
    assert "OAuth flow snapshot: present" in lines
    for name in ("FORMAT", "LOCK", seg(RECORDS_A + 1), snap(RECORDS_A)):
        assert any(line.startswith(name) for line in lines), name
    segment_line = next(line for line in lines if line.startswith(seg(RECORDS_A + 1)))
    assert segment_line.endswith("1,048,576 B")
    by_runtime = {line.split(":")[0]: line for line in lines if line.startswith("agent-")}
    assert list(by_runtime) == ["agent-1", "agent-10", "agent-2"]
    agent_1 = by_runtime["agent-1"]
    for part in (
        "4 input states",
        "(3 consumed, 1 queued)",  # a count before what it counts (docs/cli.md, Numbers)
        "2 receipts",
        f"session snapshot {len(stores.content.runtimes[0].session or b''):,} B",
        "runtime state idle",
        "ops snapshot yes",
    ):
        assert part in agent_1, (part, agent_1)
    assert "3 receipts" in by_runtime["agent-10"]
    assert "runtime state running" in by_runtime["agent-10"]
    assert "ops snapshot yes" not in by_runtime["agent-10"]  # it has none
    agent_2 = by_runtime["agent-2"]
    assert "2 input states" in agent_2
    assert "1 applied_pending_consumption" in agent_2
    assert "1 accepted" in agent_2
    assert "ops snapshot yes" in agent_2
    # It has neither; whether the line says so or leaves them out is open.
    assert not re.search(r"session snapshot \d", agent_2)
    assert not re.search(r"runtime state \S*[a-z]", agent_2.replace("runtime state none", ""))
    no_secrets(done.stdout, done.stderr)


def test_max_record_bytes_is_the_limit_recovery_reads_with(stores: Stores):
    largest = max(r.end - r.start - 24 for r in walk(stores.logged / seg(RECORDS_A + 1)))
    with unchanged(stores.logged):
        small, enough = cli_all(
            ["inspect", stores.logged, "--max-record-bytes", largest - 1],
            ["inspect", stores.logged, "--max-record-bytes", largest, "--json"],
        )
    assert small.returncode == 5, small.stderr
    assert seg(RECORDS_A + 1) in error_message(small)
    assert enough.returncode == 0, enough.stderr
    assert json_out(enough)["last_lsn"] == LAST


# --- verify -----------------------------------------------------------------------


def test_verify_a_clean_store(stores: Stores):
    with unchanged(stores.clean, stores.logged):
        clean, logged = cli_all(["verify", stores.clean, "--json"], ["verify", stores.logged])
    assert clean.returncode == 0, clean.stderr
    assert json_out(clean) == {
        "store": str(stores.clean),
        "result": "clean",
        "checked": {"snapshots": 1, "segments": 1, "records": 0},
        "problems": [],
    }
    assert logged.returncode == 0, logged.stderr
    lines = logged.stdout.splitlines()
    assert lines[-1].startswith("result: clean")
    assert not [line for line in lines if line.startswith(("note:", "damage:", "corrupt:"))]


def test_verify_counts_what_it_checked(stores: Stores):
    with unchanged(stores.covered):
        done = cli("verify", stores.covered, "--json")
    assert done.returncode == 0, done.stderr
    document = json_out(done)
    assert document["result"] == "clean"
    assert document["checked"] == {"snapshots": 1, "segments": 2, "records": LAST}


def middle_record_damaged(store: Path) -> tuple[Path, int]:
    """Flip a payload byte of a record followed by later writes; return the
    segment and the record's offset."""
    segment = store / seg(RECORDS_A + 1)
    records = walk(segment)
    middle = records[len(records) // 2]
    assert middle.write_lsn == middle.lsn < records[-1].write_lsn
    flip(segment, middle.start + 24 + 3)
    return segment, middle.start


def test_corrupt_store_verify_names_the_file_and_offset(stores: Stores, copy_of):
    store = copy_of(stores.logged)
    segment, offset = middle_record_damaged(store)
    with unchanged(store):
        as_json, human = cli_all(["verify", store, "--json"], ["verify", store])
    assert as_json.returncode == 5, as_json.stderr
    document = json_out(as_json)
    assert document["store"] == str(store)
    assert document["result"] == "corrupt"
    corrupt = [p for p in document["problems"] if p["severity"] == "corrupt"]
    assert [(p["file"], p["offset"]) for p in corrupt] == [(str(segment), offset)]
    assert corrupt[0]["message"]
    assert human.returncode == 5, human.stderr
    lines = human.stdout.splitlines()
    assert any(
        line.startswith("corrupt: ") and segment.name in line and f"byte offset {offset}:" in line
        for line in lines
    ), human.stdout
    assert lines[-1].startswith("result: corrupt")


def test_corrupt_store_other_commands_exit_5_and_change_nothing(
    stores: Stores, copy_of, tmp_path: Path
):
    store = copy_of(stores.logged)
    segment, offset = middle_record_damaged(store)
    target = tmp_path / "out.sqlite3"
    with unchanged(store):
        inspect, dump, export = cli_all(
            ["inspect", store, "--json"],
            ["dump", store, "--include-secrets"],
            ["export-sqlite", store, target],
        )
        checkpoint = cli("checkpoint", store)
    message = json_error(inspect, "corrupt")
    assert inspect.returncode == 5
    assert str(segment) in message
    assert str(offset) in message
    assert dump.returncode == 5, dump.stderr
    assert dump.stdout == ""  # no partial content
    assert segment.name in error_message(dump)
    assert export.returncode == 5, export.stderr
    assert not target.exists()
    assert checkpoint.returncode == 5, checkpoint.stderr


def test_damaged_snapshot_that_the_log_covers_is_damage(stores: Stores, copy_of):
    store = copy_of(stores.covered)
    snapshot = store / snap(RECORDS_A)
    flip(snapshot, 40 + 100)  # inside the body: the body CRC fails
    with unchanged(store):
        verify, inspect = cli_all(["verify", store, "--json"], ["inspect", store, "--json"])
    assert verify.returncode == 1, verify.stderr
    document = json_out(verify)
    assert document["result"] == "damaged"
    assert [(p["severity"], p["file"]) for p in document["problems"]] == [("damage", str(snapshot))]
    # Opening works around it: everything is still there.
    assert inspect.returncode == 0, inspect.stderr
    assert json_out(inspect)["runtimes"] == expected_runtimes(stores.content)


def test_damaged_snapshot_that_the_log_does_not_cover_is_corrupt(stores: Stores, copy_of):
    store = copy_of(stores.clean)  # its log was dropped by the final checkpoint
    snapshot = store / snap(LAST)
    flip(snapshot, 40 + 100)
    with unchanged(store):
        verify, dump = cli_all(["verify", store, "--json"], ["dump", store])
    assert verify.returncode == 5, verify.stderr
    document = json_out(verify)
    assert document["result"] == "corrupt"
    assert [p["file"] for p in document["problems"] if p["severity"] == "corrupt"] == [
        str(snapshot)
    ]
    assert dump.returncode == 5, dump.stderr
    assert dump.stdout == ""
    assert snapshot.name in error_message(dump)


def test_bad_record_in_a_segment_the_snapshot_covers_is_damage(stores: Stores, copy_of):
    store = copy_of(stores.covered)
    old = store / seg(1)
    record = walk(old)[3]
    flip(old, record.start + 24 + 1)
    with unchanged(store):
        verify, human, dump = cli_all(
            ["verify", store, "--json"], ["verify", store], ["dump", store]
        )
    assert verify.returncode == 1, verify.stderr
    document = json_out(verify)
    assert document["result"] == "damaged"
    assert [(p["severity"], p["file"], p["offset"]) for p in document["problems"]] == [
        ("damage", str(old), record.start)
    ]
    assert human.returncode == 1
    assert any(
        line.startswith("damage: ") and f"byte offset {record.start}:" in line
        for line in human.stdout.splitlines()
    ), human.stdout
    assert human.stdout.splitlines()[-1].startswith("result: damaged")
    assert dump.returncode == 0, dump.stderr
    assert json_lines(dump) == expected_dump(stores.content)


# --- crash artifacts: notes, and read-only commands change nothing -----------------


@pytest.fixture(scope="module")
def artifacts(stores: Stores) -> tuple[Path, Content, int]:
    """`logged` with the last record torn (its payload's second half never
    reached the disk), a leftover snapshot temp file, and no LOCK file; with
    what opening it recovers and the torn record's offset."""
    store = stores.base / "artifacts"
    shutil.copytree(stores.logged, store)
    segment = store / seg(RECORDS_A + 1)
    last = walk(segment)[-1]
    half = last.start + 24 + (last.end - last.start - 24) // 2
    write_at(segment, half, bytes(last.end - half))
    (store / (snap(LAST) + ".tmp")).write_bytes(b"MKRTSNAP half written")
    (store / "LOCK").unlink()
    scratch = stores.base / "artifacts-opened"
    shutil.copytree(store, scratch)
    recovered = read_store(scratch)
    assert recovered != stores.content  # the torn write is lost
    return store, recovered, last.start


def test_torn_tail_and_temp_file_are_notes(artifacts):
    store, _, offset = artifacts
    with unchanged(store):
        as_json, human = cli_all(["verify", store, "--json"], ["verify", store])
    assert as_json.returncode == 0, as_json.stderr
    document = json_out(as_json)
    assert document["result"] == "clean"
    problems = document["problems"]
    assert {p["severity"] for p in problems} == {"note"}
    assert (str(store / seg(RECORDS_A + 1)), offset) in [(p["file"], p["offset"]) for p in problems]
    assert str(store / (snap(LAST) + ".tmp")) in [p["file"] for p in problems]
    assert human.returncode == 0
    assert len([line for line in human.stdout.splitlines() if line.startswith("note: ")]) == len(
        problems
    )
    assert human.stdout.splitlines()[-1].startswith("result: clean")
    assert not (store / "LOCK").exists()


def test_read_only_commands_show_what_opening_recovers_and_change_nothing(
    artifacts, tmp_path: Path
):
    store, recovered, _ = artifacts
    target = tmp_path / "artifacts.sqlite3"
    with unchanged(store):
        inspect, dump, export = cli_all(
            ["inspect", store, "--json"],
            ["dump", store, "--include-secrets"],
            ["export-sqlite", store, target, "--json"],
        )
    assert not (store / "LOCK").exists()
    assert inspect.returncode == 0, inspect.stderr
    document = json_out(inspect)
    assert by_name(document["files"]) == file_entries(store)  # the temp file, as "temp"
    assert document["runtimes"] == expected_runtimes(recovered)
    assert document["last_lsn"] == LAST - 1
    assert len(document["notes"]) >= 2  # the torn write, the temp file
    assert dump.returncode == 0, dump.stderr
    assert json_lines(dump) == expected_dump(recovered, secrets=True)
    assert export.returncode == 0, export.stderr
    assert json_out(export)["identical"] is True
    assert read_sqlite(target) == recovered


def test_a_half_created_last_segment_is_a_note(stores: Stores, copy_of):
    # A crash while creating the next segment: shorter than its header.
    store = copy_of(stores.logged)
    (store / seg(LAST + 1)).write_bytes(bytes(10))
    with unchanged(store):
        done = cli("verify", store, "--json")
    assert done.returncode == 0, done.stderr
    document = json_out(done)
    assert document["result"] == "clean"
    assert [(p["severity"], p["file"]) for p in document["problems"]] == [
        ("note", str(store / seg(LAST + 1)))
    ]


def test_records_missing_before_the_log_is_corrupt(stores: Stores, copy_of):
    # The snapshot the log starts after is gone: records 1..8 are missing.
    store = copy_of(stores.logged)
    (store / snap(RECORDS_A)).unlink()
    with unchanged(store):
        done = cli("verify", store, "--json")
    assert done.returncode == 5, done.stderr
    document = json_out(done)
    assert document["result"] == "corrupt"
    assert [p["file"] for p in document["problems"] if p["severity"] == "corrupt"] == [
        str(store / seg(RECORDS_A + 1))
    ]


# --- errors shared by every command --------------------------------------------------


def every_command(directory: Path, target: Path, *, as_json: bool) -> dict[str, list[object]]:
    """Each command that takes a store directory, on `directory` (export to `target`)."""
    flag = ["--json"] if as_json else []
    return {
        "inspect": ["inspect", directory, *flag],
        "verify": ["verify", directory, *flag],
        "dump": ["dump", directory, *flag],
        "checkpoint": ["checkpoint", directory, *flag],
        "export-sqlite": ["export-sqlite", directory, target, *flag],
    }


def test_usage_errors_exit_2(tmp_path: Path):
    no_dir, no_file, unknown = cli_all(
        ["inspect"], ["export-sqlite", tmp_path], ["inspect", tmp_path, "--no-such-option"]
    )
    for done in (no_dir, no_file, unknown):
        assert done.returncode == 2, done.stderr
        assert "usage:" in done.stderr
    assert sorted(os.listdir(tmp_path)) == []


def test_missing_directory_is_not_found_and_not_created(tmp_path: Path):
    missing = tmp_path / "no-such-store"
    commands = every_command(missing, tmp_path / "out.sqlite3", as_json=True)
    results = dict(zip(commands, cli_all(*commands.values()), strict=True))
    for command, done in results.items():
        assert done.returncode == 3, (command, done.stderr)
        assert str(missing) in error_message(done), command
        json_error(done, "not_found")  # dump too, with --json
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("kind", ["empty", "other files"])
def test_a_directory_that_is_not_a_store_is_not_found_and_left_alone(kind: str, tmp_path: Path):
    # An empty directory (which open_store would make a store) and one with
    # other files.
    directory = tmp_path / "dir"
    directory.mkdir()
    if kind == "other files":
        (directory / "notes.txt").write_text("not a store")
    commands = every_command(directory, tmp_path / "out.sqlite3", as_json=False)
    with unchanged(tmp_path):
        results = dict(zip(commands, cli_all(*commands.values()), strict=True))
    for command, done in results.items():
        assert done.returncode == 3, (command, done.stderr)
        assert str(directory) in error_message(done), command


def test_newer_format_is_refused_by_every_command(stores: Stores, copy_of, tmp_path: Path):
    store = copy_of(stores.logged)
    (store / "FORMAT").write_bytes(format_file(4))  # a version this build does not read
    target = tmp_path / "out.sqlite3"
    with unchanged(store):
        commands = every_command(store, target, as_json=True)
        checkpoint = commands.pop("checkpoint")
        results = dict(zip(commands, cli_all(*commands.values()), strict=True))
        # Alone: a checkpoint may wait for no lock the others hold.
        results["checkpoint"] = cli(*checkpoint)
    for command, done in results.items():
        assert done.returncode == 6, (command, done.stderr)
        assert str(store) in error_message(done), command
        json_error(done, "unsupported_format")
    assert not target.exists()


def test_a_store_open_in_another_process_is_read_live_or_locked(
    stores: Stores, copy_of, tmp_path: Path
):
    """inspect, dump and export-sqlite read a store another process has open
    live (docs/cli.md); verify and checkpoint exit 4, naming the holder and
    what to do instead (tests/test_live_ops.py reads beside a writer)."""
    store = copy_of(stores.clean)
    target = tmp_path / "out.sqlite3"
    closed = cli("dump", store)
    with held_open_by_child(store) as child:
        with unchanged(store):
            commands = every_command(store, target, as_json=False)
            commands["inspect"].append("--json")
            commands["checkpoint"].append("--json")
            results = dict(zip(commands, cli_all(*commands.values()), strict=True))
        for command in ("inspect", "dump", "export-sqlite"):
            assert results[command].returncode == 0, (command, results[command].stderr)
        assert results["dump"].stdout == closed.stdout
        (note,) = json_out(results["inspect"])["notes"]
        assert f"read live beside the open store (pid {child.pid} on host" in note
        assert target.exists()
        for command in ("verify", "checkpoint"):
            done = results[command]
            assert done.returncode == 4, (command, done.stderr)
            message = error_message(done)
            assert message.startswith(
                f"{store} is locked by another open store: pid {child.pid} on host"
                f" {socket.gethostname()} ("
            ), command
            assert "which is running" in message, command
            assert "`await store.backup(path)`" in message, command
            assert f"`kill -TERM {child.pid}`" in message, command
        assert results["verify"].stdout == ""
        json_error(results["checkpoint"], "locked")
    # Once the other process closed it, the store reads as before.
    assert cli("inspect", store).returncode == 0


def run_main_in_this_process(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # pragma: no cover - either way is fine
        return int(exc.code or 0)


async def test_a_store_open_in_this_process_is_locked(stores: Stores, copy_of):
    store = copy_of(stores.clean)
    async with ma.open_store(store) as opened:
        done = await trio.run_process(
            [sys.executable, "-m", "meerkat_actor", "inspect", str(store), "--json"],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        # The command's own code, run in the process that has the store open.
        code = await trio.to_thread.run_sync(run_main_in_this_process, ["verify", str(store)])
        assert await opened.load_auth_oauth_flow_snapshot() == stores.content.oauth
    # inspect reads it live; verify, which reads only a closed store, is told
    # that this very process has it open.
    assert done.returncode == 0, done.stderr
    (note,) = json.loads(done.stdout)["notes"]
    assert f"read live beside the open store (pid {os.getpid()} on host" in note
    assert code == 4


# --- dump -----------------------------------------------------------------------


def key_orders(lines: list[dict[str, Any]]) -> list[list[str]]:
    return [list(line) for line in lines]


def test_dump_prints_the_store_as_meerkat_json_without_the_oauth_snapshot(stores: Stores):
    with unchanged(stores.clean):
        done = cli("dump", stores.clean)
    assert done.returncode == 0, done.stderr
    lines = json_lines(done)
    expected = expected_dump(stores.content)
    assert lines == expected
    assert key_orders(lines) == key_orders(expected)
    assert len(done.stdout.splitlines()) == len(expected)
    assert "note: the OAuth flow snapshot is not shown (pass --include-secrets)" in done.stderr
    assert "oauth_flow_snapshot" not in done.stdout
    assert base64.b64encode(stores.content.oauth or b"").decode() not in done.stdout
    no_secrets(done.stdout, done.stderr)
    # The u64 sequences come out exact.
    sequences = [line["sequence"] for line in lines if line["kind"] == "boundary_receipt"]
    assert U63 in sequences
    assert U64_MAX in sequences


def test_dump_with_secrets_replays_the_log_and_ends_with_the_oauth_snapshot(stores: Stores):
    with unchanged(stores.logged):
        done = cli("dump", stores.logged, "--include-secrets")
    assert done.returncode == 0, done.stderr
    lines = json_lines(done)
    assert lines == expected_dump(stores.content, secrets=True)
    assert lines[-1] == {
        "kind": "oauth_flow_snapshot",
        "snapshot_base64": base64.b64encode(stores.content.oauth or b"").decode(),
    }
    assert "not shown" not in done.stderr


def test_dump_one_runtime(stores: Stores):
    done, unknown = cli_all(
        ["dump", stores.clean, "--runtime", A10, "--include-secrets"],
        ["dump", stores.clean, "--runtime", "agent-3"],
    )
    assert done.returncode == 0, done.stderr
    expected = [
        line for line in expected_dump(stores.content) if line.get("runtime_id") == str(A10)
    ]
    assert len(expected) == 8
    assert json_lines(done) == expected
    no_secrets(done.stdout)
    assert unknown.returncode == 3, unknown.stderr
    assert unknown.stdout == ""
    message = error_message(unknown)
    assert str(stores.clean) in message
    assert "holds no runtime 'agent-3'" in message


def test_dump_of_a_runtime_the_store_does_not_hold_is_not_found(stores: Stores):
    with unchanged(stores.clean):
        text, as_json, prefix = cli_all(
            ["dump", stores.clean, "--runtime", "agent-3", "--include-secrets"],
            ["dump", stores.clean, "--runtime", "agent-3", "--json"],
            ["dump", stores.clean, "--runtime", "agent"],  # a prefix of held ids is no id
        )
    for done in (text, as_json, prefix):
        assert done.returncode == 3, done.stderr
        assert "(inspect lists the runtimes it holds)" in error_message(done)
        no_secrets(done.stdout, done.stderr)
    assert text.stdout == prefix.stdout == ""
    assert "not shown" not in text.stderr
    message = json_error(as_json, "not_found")
    assert (
        message
        == f"{stores.clean} holds no runtime 'agent-3' (inspect lists the runtimes it holds)"
    )
    # With --json and no error, dump prints its JSON lines as without it.
    whole, whole_json = cli_all(["dump", stores.clean], ["dump", stores.clean, "--json"])
    assert whole.returncode == whole_json.returncode == 0
    assert json_lines(whole) == json_lines(whole_json) == expected_dump(stores.content)


# --- after retention (SPEC §3b): purged and cleared runtimes, receipt order -----------
#
# The store `retained` is `write_all` plus: receipts that sort differently by
# UUID and number than by the signed 64-bit columns SQLite keeps them in;
# `agent-9`, destroyed and purged; `agent-5` whose only value (a session
# snapshot) was cleared; `agent-6` whose only value (an ops snapshot) was
# deleted. Built through the public API on a SQLite store, then copied into a
# store directory with `import-sqlite` (what the CLI reads); the durable
# store's own log of these writes is checked below where its format holds them.

A5, A6, A9 = (ma.LogicalRuntimeId(f"agent-{n}") for n in (5, 6, 9))
R0 = ma.RunId(uuid.UUID("0190d7c2-0000-7000-8000-00000000aa00"))  # sorts before R1
RS = ma.RuntimeState


def retained_receipt(run_id: ma.RunId, sequence: int) -> ma.RunBoundaryReceipt:
    return ma.RunBoundaryReceipt(run_id, ma.RunApplyBoundary.IMMEDIATE, (), None, 1, sequence)


# The receipts of the listed runtimes, in the order dump lists them, by hand.
RETAINED_RECEIPTS = {
    "agent-1": [(R0, U63), (R1, 0), (R1, 1), (R1, 7), (R1, U63), (R1, U64_MAX)],
    "agent-10": [(R2, 5), (R3, 7), (R3, U63), (R3, U64_MAX)],
    "agent-2": [],
}


async def write_retention(store: Any) -> None:
    """`write_all`, then the receipts, purge and clears described above."""
    await write_all(store)
    for run_id, sequence in ((R1, U64_MAX), (R1, U63), (R0, U63), (R1, 7)):
        await store.atomic_apply(A1, None, retained_receipt(run_id, sequence), [])
    await store.atomic_apply(A10, None, retained_receipt(R3, 7), [])
    await store.commit_machine_lifecycle(
        A9,
        ma.machine_transition(RS.INITIALIZING, RS.IDLE),
        [ma.StoredInputState.new_accepted(ma.InputId(uuid.UUID(int=99)))],
    )
    await store.atomic_apply(A9, None, retained_receipt(R0, U64_MAX), [])
    await store.persist_ops_lifecycle(A9, ma.PersistedOpsSnapshot("epoch-9"))
    await store.commit_machine_lifecycle(A9, ma.machine_transition(RS.IDLE, RS.DESTROYED), [])
    await store.purge_runtime(A9)
    await store.commit_session_snapshot(
        A5, ma.SessionDelta(b'{"id": "5f0c2a4e-1b7d-4c8e-9a3f-2d6b8e1c4a75"}')
    )
    await store.clear_session_snapshot(A5)
    await store.persist_ops_lifecycle(A6, ma.PersistedOpsSnapshot("epoch-6"))
    await store.delete_ops_lifecycle(A6)


async def listed_content(store: Any) -> Content:
    """What the store holds, through the §3b reads: the runtimes
    `list_runtimes` lists, their receipts by `load_boundary_receipts`."""
    runtimes = [
        RuntimeContent(
            rt,
            await store.load_session_snapshot(rt),
            await store.load_runtime_state(rt),
            await store.load_ops_lifecycle(rt),
            await store.load_input_states(rt),
            await store.load_boundary_receipts(rt),
        )
        for rt in await store.list_runtimes()
    ]
    return Content(runtimes, await store.load_auth_oauth_flow_snapshot())


@dataclass(frozen=True)
class Retained:
    sqlite: Path
    directory: Path  # import-sqlite of `sqlite`
    content: Content


@pytest.fixture(scope="module")
def retained(tmp_path_factory: pytest.TempPathFactory) -> Retained:
    base = tmp_path_factory.mktemp("retained")

    async def build() -> Content:
        async with ma.open_sqlite_store(base / "retained.sqlite3") as store:
            await write_retention(store)
            return await listed_content(store)

    content = trio.run(build)
    done = cli("import-sqlite", base / "retained.sqlite3", base / "retained")
    assert done.returncode == 0, done.stderr
    return Retained(base / "retained.sqlite3", base / "retained", content)


def test_the_retained_store_lists_what_the_api_lists(retained: Retained):
    # The expectations below come from the API; check them against the hand-written ones.
    assert [str(rt.runtime_id) for rt in retained.content.runtimes] == list(RETAINED_RECEIPTS)
    for rt in retained.content.runtimes:
        keys = [(r.run_id, r.sequence) for r in rt.receipts]
        assert keys == RETAINED_RECEIPTS[str(rt.runtime_id)]
    # And the copy holds the same.
    assert read_listed(retained.directory) == retained.content


def read_listed(path: Path) -> Content:
    """Open the durable store at `path` and read it with `listed_content`."""

    async def read() -> Content:
        async with ma.open_store(path) as store:
            return await listed_content(store)

    return trio.run(read)


def test_inspect_and_dump_after_purge_and_clears(retained: Retained):
    with unchanged(retained.directory):
        inspected, text, dumped = cli_all(
            ["inspect", retained.directory, "--json"],
            ["inspect", retained.directory],
            ["dump", retained.directory, "--include-secrets"],
        )
    for done in (inspected, text, dumped):
        assert done.returncode == 0, done.stderr
    runtimes = json_out(inspected)["runtimes"]
    assert runtimes == expected_runtimes(retained.content)
    assert [r["runtime_id"] for r in runtimes] == ["agent-1", "agent-10", "agent-2"]
    assert [r["receipts"] for r in runtimes] == [6, 4, 0]
    assert "runtimes: 3" in text.stdout.splitlines()
    for gone in ("agent-5", "agent-6", "agent-9"):
        assert gone not in text.stdout
        assert gone not in dumped.stdout
    lines = json_lines(dumped)
    assert lines == expected_dump(retained.content, secrets=True)
    receipts: dict[str, list[tuple[ma.RunId, int]]] = {name: [] for name in RETAINED_RECEIPTS}
    for line in lines:
        if line["kind"] == "boundary_receipt":
            key = (ma.RunId(uuid.UUID(line["run_id"])), line["sequence"])
            receipts[line["runtime_id"]].append(key)
    assert receipts == RETAINED_RECEIPTS


def test_dump_of_a_purged_or_cleared_runtime_is_not_found(retained: Retained):
    with unchanged(retained.directory):
        purged, cleared, deleted, held = cli_all(
            ["dump", retained.directory, "--runtime", "agent-9", "--json"],
            ["dump", retained.directory, "--runtime", "agent-5"],
            ["dump", retained.directory, "--runtime", "agent-6"],
            ["dump", retained.directory, "--runtime", "agent-10"],
        )
    assert json_error(purged, "not_found") == (
        f"{retained.directory} holds no runtime 'agent-9' (inspect lists the runtimes it holds)"
    )
    for done in (purged, cleared, deleted):
        assert done.returncode == 3, done.stderr
    assert cleared.stdout == deleted.stdout == ""
    assert "holds no runtime 'agent-5'" in error_message(cleared)
    assert "holds no runtime 'agent-6'" in error_message(deleted)
    assert held.returncode == 0, held.stderr
    keys = [
        (line["run_id"], line["sequence"])
        for line in json_lines(held)
        if line["kind"] == "boundary_receipt"
    ]
    assert keys == [(str(r), q) for r, q in RETAINED_RECEIPTS["agent-10"]]


def test_a_durable_store_after_purge_and_clears(retained: Retained, tmp_path: Path):
    # The same writes on a durable store, its log replayed by the CLI: the
    # same runtimes, receipts and errors as the copy of the SQLite store.
    directory = tmp_path / "durable"

    async def build() -> Content:
        with trio.CancelScope() as scope:
            async with ma.open_store(directory) as store:
                await write_retention(store)
                content = await listed_content(store)
                scope.cancel()  # no final checkpoint: the log holds every write
                await trio.lowlevel.checkpoint()
        return content

    assert trio.run(build) == retained.content
    with unchanged(directory):
        inspected, dumped, purged = cli_all(
            ["inspect", directory, "--json"],
            ["dump", directory, "--include-secrets"],
            ["dump", directory, "--runtime", "agent-9", "--json"],
        )
    assert inspected.returncode == 0, inspected.stderr
    assert json_out(inspected)["runtimes"] == expected_runtimes(retained.content)
    assert dumped.returncode == 0, dumped.stderr
    assert json_lines(dumped) == expected_dump(retained.content, secrets=True)
    assert purged.returncode == 3, purged.stderr
    assert json_error(purged, "not_found") == (
        f"{directory} holds no runtime 'agent-9' (inspect lists the runtimes it holds)"
    )


def test_export_of_the_retained_store_counts_what_it_lists(retained: Retained, tmp_path: Path):
    done = cli("export-sqlite", retained.directory, tmp_path / "again.sqlite3", "--json")
    assert done.returncode == 0, done.stderr
    assert json_out(done)["runtimes"] == 3
    assert json_out(done)["receipts"] == 10
    assert json_out(done) == {
        "source": str(retained.directory),
        "target": str(tmp_path / "again.sqlite3"),
        **counts(retained.content),
        "identical": True,
    }


def test_dump_a_session_snapshot_that_is_not_json_as_base64(stores: Stores):
    done = cli("dump", stores.binary)
    assert done.returncode == 0, done.stderr
    assert json_lines(done) == [
        {
            "kind": "session_snapshot",
            "runtime_id": str(A1),
            "snapshot_base64": base64.b64encode(BINARY_SESSION).decode(),
        }
    ]
    assert expected_dump(stores.binary_content) == json_lines(done)


def test_export_and_import_keep_session_bytes_that_are_not_json(stores: Stores, tmp_path: Path):
    exported, imported = tmp_path / "binary.sqlite3", tmp_path / "imported"
    export = cli("export-sqlite", stores.binary, exported)
    assert export.returncode == 0, export.stderr
    done = cli("import-sqlite", exported, imported)
    assert done.returncode == 0, done.stderr
    assert read_store(imported) == stores.binary_content
    assert stores.binary_content.runtimes[0].session == BINARY_SESSION


# --- checkpoint -----------------------------------------------------------------


def test_checkpoint_leaves_one_snapshot_and_the_same_content(stores: Stores, copy_of):
    store = copy_of(stores.logged)
    before = file_entries(store)
    done = cli("checkpoint", store)
    assert done.returncode == 0, done.stderr
    snapshots = sorted(p.name for p in store.glob("snapshot-*"))
    assert snapshots == [snap(LAST)]
    size = (store / snap(LAST)).stat().st_size
    after = file_entries(store)
    line = done.stdout.strip()
    assert line.startswith(f"checkpoint of {store}: snapshot at LSN {LAST} ({size:,} B);")
    total_before = sum(e["bytes"] for e in before)
    assert f"files before: {len(before)} ({total_before:,} B), after: {len(after)} (" in line
    assert not list(store.glob("*.tmp"))
    assert read_store(store) == stores.content


def test_checkpoint_json_of_a_store_with_a_redundant_segment(stores: Stores, copy_of):
    store = copy_of(stores.covered)
    before = file_entries(store)
    done = cli("checkpoint", store, "--json")
    assert done.returncode == 0, done.stderr
    document = json_out(done)
    after = file_entries(store)
    assert [e["name"] for e in after if e["kind"] == "snapshot"] == [snap(LAST)]
    # Every segment the snapshot covers is gone.
    assert all(int(e["name"][4:24]) > LAST for e in after if e["kind"] == "segment")
    assert document["store"] == str(store)
    assert document["snapshot_lsn"] == LAST
    assert document["snapshot_bytes"] == (store / snap(LAST)).stat().st_size
    assert by_name(document["files_before"]) == before
    assert by_name(document["files_after"]) == after
    assert read_store(store) == stores.content


# --- export-sqlite and import-sqlite --------------------------------------------------

COUNTS_TEXT = (
    "3 runtimes, 9 input states, 5 receipts, 2 session snapshots, 2 runtime states,"
    " 2 ops snapshots, OAuth flow snapshot: yes; read back: identical"
)


def test_export_sqlite_writes_what_the_store_holds(stores: Stores, tmp_path: Path):
    target = tmp_path / "runtime.sqlite3"
    with unchanged(stores.clean):
        done = cli("export-sqlite", stores.clean, target)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"exported {stores.clean} to {target}: {COUNTS_TEXT}"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert read_sqlite(target) == stores.content


def test_export_then_import_round_trips_everything(stores: Stores, tmp_path: Path):
    exported = tmp_path / "runtime.sqlite3"
    imported = tmp_path / "imported"
    with unchanged(stores.logged):
        export = cli("export-sqlite", stores.logged, exported, "--json")
    assert export.returncode == 0, export.stderr
    assert json_out(export) == {
        "source": str(stores.logged),
        "target": str(exported),
        **counts(stores.content),
        "identical": True,
    }
    with unchanged(exported):
        done = cli("import-sqlite", exported, imported, "--json")
    assert done.returncode == 0, done.stderr
    assert json_out(done) == {
        "source": str(exported),
        "target": str(imported),
        **counts(stores.content),
        "identical": True,
    }
    names = sorted(os.listdir(imported))
    assert [n for n in names if n != "LOCK"] == ["FORMAT", *[n for n in names if "snapshot-" in n]]
    assert len([n for n in names if n.startswith("snapshot-")]) == 1
    assert stat.S_IMODE(imported.stat().st_mode) == 0o700
    for name in names:
        assert stat.S_IMODE((imported / name).stat().st_mode) == 0o600, name
    back = read_store(imported)
    assert back == stores.content
    assert back.oauth is not None
    assert OAUTH_SECRET.encode() in back.oauth
    assert {r.sequence for rt in back.runtimes for r in rt.receipts if r.run_id == R3} == {
        U63,
        U64_MAX,
    }


def test_import_sqlite_into_an_empty_directory_then_the_store_takes_writes(
    stores: Stores, tmp_path: Path
):
    target = tmp_path / "store"
    target.mkdir()
    with unchanged(stores.sqlite):
        done = cli("import-sqlite", stores.sqlite, target)
    assert done.returncode == 0, done.stderr
    assert f"{stores.sqlite} to {target}: {COUNTS_TEXT}" in done.stdout

    async def write_more() -> None:
        async with ma.open_store(target) as store:
            assert await read_content(store) == stores.content
            await store.persist_auth_oauth_flow_snapshot(b"after import")

    trio.run(write_more)
    assert read_store(target).oauth == b"after import"


def test_export_to_an_existing_file_and_import_into_a_non_empty_directory_are_refused(
    stores: Stores, tmp_path: Path
):
    existing = tmp_path / "existing.sqlite3"
    existing.write_bytes(b"keep me")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "notes.txt").write_text("keep me")
    with unchanged(tmp_path):
        export, import_, onto_a_file = cli_all(
            ["export-sqlite", stores.clean, existing, "--json"],
            ["import-sqlite", stores.sqlite, occupied, "--json"],
            ["import-sqlite", stores.sqlite, existing],
        )
    assert export.returncode == 2, export.stderr
    assert str(existing) in json_error(export, "exists")
    assert import_.returncode == 2, import_.stderr
    assert str(occupied) in json_error(import_, "exists")
    assert onto_a_file.returncode == 2, onto_a_file.stderr
    assert str(existing) in error_message(onto_a_file)


def test_export_into_a_missing_directory_is_not_found(stores: Stores, tmp_path: Path):
    target = tmp_path / "no-such-dir" / "out.sqlite3"
    with unchanged(stores.clean):
        as_json, human = cli_all(
            ["export-sqlite", stores.clean, target, "--json"],
            ["export-sqlite", stores.clean, target],
        )
    assert as_json.returncode == 3, as_json.stderr
    assert str(target) in json_error(as_json, "not_found")
    assert human.returncode == 3, human.stderr
    assert str(target.parent) in error_message(human)
    assert sorted(os.listdir(tmp_path)) == []


def test_import_of_a_missing_file_or_one_without_meerkat_tables_is_not_found(
    stores: Stores, tmp_path: Path
):
    missing = tmp_path / "missing.sqlite3"
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    connection.close()
    target = tmp_path / "store"
    with unchanged(tmp_path):
        gone, foreign = cli_all(
            ["import-sqlite", missing, target, "--json"], ["import-sqlite", other, target]
        )
    assert gone.returncode == 3, gone.stderr
    assert str(missing) in json_error(gone, "not_found")
    assert foreign.returncode == 3, foreign.stderr
    assert str(other) in error_message(foreign)


def test_import_of_a_damaged_row_is_corrupt(stores: Stores, tmp_path: Path):
    damaged = tmp_path / "damaged.sqlite3"
    shutil.copy2(stores.sqlite, damaged)
    with sqlite3.connect(damaged) as connection:
        connection.execute(
            "UPDATE runtime_input_states SET state_json = ? WHERE runtime_id = ?",
            (b'{"input_id": 17}', str(A2)),
        )
    connection.close()
    target = tmp_path / "store"
    with unchanged(damaged):
        done = cli("import-sqlite", damaged, target, "--json")
    assert done.returncode == 5, done.stderr
    assert str(damaged) in json_error(done, "corrupt")
    assert not target.exists()


def test_import_of_a_receipt_row_under_an_upper_case_run_id_is_corrupt(
    stores: Stores, tmp_path: Path
):
    """The SQLite store never finds such a row under its key, so the import
    does not take it for that receipt either (one rule for both paths)."""
    spelled = tmp_path / "spelled.sqlite3"
    shutil.copy2(stores.sqlite, spelled)
    with sqlite3.connect(spelled) as connection:
        changed = connection.execute(
            "UPDATE runtime_boundary_receipts SET run_id = upper(run_id)"
            " WHERE rowid = (SELECT min(rowid) FROM runtime_boundary_receipts)"
        ).rowcount
    connection.close()
    assert changed == 1
    target = tmp_path / "store"
    with unchanged(spelled):
        done = cli("import-sqlite", spelled, target, "--json")
    assert done.returncode == 5, done.stderr
    message = json_error(done, "corrupt")
    assert str(spelled) in message
    assert "runtime_boundary_receipts" in message
    assert not target.exists()


# --- issue 16: papercuts -------------------------------------------------------------------------
#
# --version; a file that is not SQLite is "not found" for import-sqlite (exit
# 3, not 5); a file where a store directory should be is named as such by
# every command; --help stands on its own (an installed wheel has no docs/);
# one rule for the numbers of the human text (docs/cli.md, "Numbers").

SUBCOMMANDS = (
    "demo",
    "inspect",
    "verify",
    "dump",
    "checkpoint",
    "export-sqlite",
    "import-sqlite",
    "export-postgres",
    "import-postgres",
    "bench",
)


def documentation_url() -> str | None:
    """The Documentation URL of the installed distribution's metadata."""
    try:
        urls = importlib.metadata.metadata("meerkat-actor").get_all("Project-URL") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [url.split(",", 1)[1].strip() for url in urls if url.startswith("Documentation,")]
    return found[0] if found else None


def test_version_is_the_package_version(capsys):
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"meerkat-actor {ma.__version__}\n"
    # One source of truth: the installed metadata is read from __version__.
    assert importlib.metadata.version("meerkat-actor") == ma.__version__
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"meerkat-actor {ma.__version__}\n"


def test_the_meerkat_actor_script_prints_the_same_version():
    script = shutil.which("meerkat-actor", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("no meerkat-actor script beside this Python (not installed with pip)")
    done = subprocess.run(
        [script, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"meerkat-actor {ma.__version__}\n"


def test_help_stands_on_its_own():
    """`--help` of the command and of every subcommand exits 0, says what it
    does, its arguments and exit statuses, and names no file of the source
    tree (docs/ is not in the wheel): the documentation only by its URL."""
    runs = [["--help"], *([command, "--help"] for command in SUBCOMMANDS)]
    results = dict(zip(map(tuple, runs), cli_all(*runs), strict=True))
    url = documentation_url()
    for args, done in results.items():
        assert done.returncode == 0, (args, done.stderr)
        assert done.stderr == ""
        text = done.stdout
        if url is not None:  # the one pointer to the docs: project.urls' URL
            assert text.endswith(f"\n\ndocumentation: {url}\n"), args
            text = text.removesuffix(f"documentation: {url}\n")
        assert "documentation:" not in text
        for path_like in ("docs/", ".md", "README"):
            assert path_like not in text, (args, path_like)
        assert re.search(r"^exit status.*:$", text, re.M), args
    top = results[("--help",)].stdout
    assert "--version" in top
    for command in SUBCOMMANDS:
        assert re.search(rf"^    {command}\b", top, re.M), command
    codes = re.findall(r"^ +(\d)  ", top.split("exit status", 1)[1], re.M)
    assert codes == [str(code) for code in range(8)]
    for command in SUBCOMMANDS:
        text = results[(command, "--help")].stdout
        assert text.startswith(f"usage: meerkat-actor {command} "), command
        listed = re.findall(r"^ +(\d)  ", text.split("\nexit status:\n", 1)[1], re.M)
        assert listed[0] == "0", command
        assert len(set(listed)) == len(listed), command
    # What each command's exit statuses say about the cases of issue 16.
    assert "3  FILE does not exist, is not a SQLite database" in results[
        ("import-sqlite", "--help")
    ].stdout.replace("\n      ", " ")
    for command in ("inspect", "verify", "checkpoint", "demo"):
        assert "a file" in results[(command, "--help")].stdout, command


# A file that is not SQLite, for `import-sqlite`: not found (3), not damaged (5).
NOT_SQLITE = {
    "text": b"hello, this is not a database\n",
    "short": b"SQLite",
    "zeros": bytes(8192),
    "sqlite 2 header": b"** This file contains an SQLite 2.1 database **\x00" + bytes(1000),
}


@pytest.mark.parametrize("content", NOT_SQLITE.values(), ids=NOT_SQLITE.keys())
def test_import_of_a_file_that_is_not_sqlite_is_not_found(content: bytes, tmp_path: Path):
    source = tmp_path / "file"
    source.write_bytes(content)
    target = tmp_path / "store"
    with unchanged(tmp_path):
        human, as_json = cli_all(
            ["import-sqlite", source, target], ["import-sqlite", source, target, "--json"]
        )
    expected = (
        f"{source} is not a SQLite store: it is not a SQLite database (it does not start"
        " with SQLite's file header)"
    )
    assert human.returncode == 3, human.stderr
    assert error_message(human) == expected
    assert human.stdout == ""
    assert as_json.returncode == 3, as_json.stderr
    assert json_error(as_json, "not_found") == expected


def test_import_of_a_store_file_or_an_empty_file_is_not_found(stores: Stores, tmp_path: Path):
    """The likely mistakes: a durable store's snapshot given as the SQLite
    file; an empty file (an empty database to SQLite: no Meerkat tables)."""
    empty = tmp_path / "empty.sqlite3"
    empty.touch()
    snapshot = stores.clean / snap(LAST)
    with unchanged(tmp_path), unchanged(stores.clean):
        from_snapshot, from_empty = cli_all(
            ["import-sqlite", snapshot, tmp_path / "a"],
            ["import-sqlite", empty, tmp_path / "b", "--json"],
        )
    assert from_snapshot.returncode == 3, from_snapshot.stderr
    assert error_message(from_snapshot).startswith(f"{snapshot} is not a SQLite store: ")
    assert from_empty.returncode == 3, from_empty.stderr
    assert json_error(from_empty, "not_found").startswith(f"{empty} is not a Meerkat runtime store")


def test_import_of_a_damaged_sqlite_database_is_corrupt(stores: Stores, tmp_path: Path):
    """A SQLite database (its header is right) whose pages are damaged is
    still exit 5: it is a SQLite store, damaged."""
    damaged = tmp_path / "damaged.sqlite3"
    data = bytearray(stores.sqlite.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # the schema page, after the file header
    damaged.write_bytes(bytes(data))
    target = tmp_path / "store"
    done = cli("import-sqlite", damaged, target, "--json")
    assert done.returncode == 5, done.stderr
    assert str(damaged) in json_error(done, "corrupt")
    assert not target.exists()


def test_a_file_where_a_store_directory_should_be_is_not_found(tmp_path: Path):
    """Every command that takes a store directory, given a regular file (or a
    path through one), exits 3 naming it as a file; nothing is created or
    changed (`open_store` raises the same: tests/test_open_path.py)."""
    plain = tmp_path / "plain"
    plain.write_text("not a store")
    inside = plain / "store"
    runs: dict[tuple[str, str], list[object]] = {}
    for where, path in (("file", plain), ("through", inside)):
        for command, args in every_command(path, tmp_path / "out.sqlite3", as_json=True).items():
            runs[where, command] = args
        runs[where, "demo"] = ["demo", path]
        if importlib.util.find_spec("psycopg") is not None:
            # The store is read before any connection is made.
            runs[where, "export-postgres"] = ["export-postgres", path, "dbname=none", "--json"]
    with unchanged(tmp_path):
        results = dict(zip(runs, cli_all(*runs.values()), strict=True))
    for (where, command), done in results.items():
        assert done.returncode == 3, (where, command, done.stderr)
        message = error_message(done)
        if where == "file":
            assert message == f"{plain} is a file, not a store directory", command
        else:
            assert message == (
                f"{inside} cannot be a store directory: {plain} is a file, not a directory"
            ), command
        if command != "demo":
            assert json_error(done, "not_found") == message


_POSITIONS = (
    re.compile(r"(?:log|snapshot)-\d+\.(?:log|snap)"),  # file names
    re.compile(r"LSN:? (?:last )?\d+(?:; snapshot at \d+)?"),
    re.compile(r"starts at \d+"),
    re.compile(r"byte offset \d+"),
)


def ungrouped_numbers(text: str, *paths: Path) -> list[str]:
    """The numbers of 4 digits or more without thousands separators in the
    human text `text`, leaving out positions and names (LSNs, file names,
    byte offsets) and the given paths."""
    for path in paths:
        text = text.replace(str(path), "<path>")
    for pattern in _POSITIONS:
        text = pattern.sub("", text)
    return re.findall(r"(?<![\d,.])\d{4,}(?![\d,])", text)


def test_counts_and_sizes_have_thousands_separators(tmp_path: Path):
    """docs/cli.md, Numbers: every count and size of the human text has a
    comma every three digits, a count before what it counts; LSNs and file
    names as they are; --json plain numbers."""
    store = tmp_path / "store"
    demo = cli("demo", store, "--runtimes", "1", "--runs", "1", "--inputs", "1000")
    assert demo.returncode == 0, demo.stderr
    assert re.search(r"agent-1 +idle +1,000 consumed, 1 queued +1 +[\d,]+ B yes", demo.stdout)
    assert re.search(r"^1,0\d\d commands in 1,0\d\d batches \(largest 1\)", demo.stdout, re.M)
    assert "(1 receipt of this run, 1,001 input states)" in demo.stdout
    again = cli("demo", store, "--runtimes", "1", "--runs", "1", "--inputs", "1")
    assert again.returncode == 0, again.stderr
    assert "recovered from earlier runs: 1,001 input states" in again.stdout
    as_json = json_out(cli("inspect", store, "--json"))
    (runtime,) = as_json["runtimes"]
    assert runtime["input_states"] == 1003  # plain JSON numbers
    session = runtime["session_snapshot_bytes"]
    snapshot = next(f for f in as_json["files"] if f["kind"] == "snapshot")
    assert snapshot["bytes"] >= 1000
    inspect = cli("inspect", store)
    assert inspect.returncode == 0, inspect.stderr
    assert (
        f"agent-1: 1,003 input states (1,001 consumed, 2 queued), 2 receipts,"
        f" session snapshot {session:,} B"
    ) in inspect.stdout
    assert re.search(rf"{snapshot['name']} +{snapshot['bytes']:,} B\n", inspect.stdout)
    assert f"LSN: last {as_json['last_lsn']}; snapshot at {as_json['snapshot_lsn']}" in (
        inspect.stdout
    )
    assert as_json["last_lsn"] >= 1000  # an LSN: no separator
    exported = cli("export-sqlite", store, tmp_path / "copy.sqlite3")
    imported = cli("import-sqlite", tmp_path / "copy.sqlite3", tmp_path / "back")
    for done in (exported, imported):
        assert done.returncode == 0, done.stderr
        assert ": 1 runtime, 1,003 input states, 2 receipts, 1 session snapshot," in done.stdout
    checkpoint = cli("checkpoint", store)
    verify = cli("verify", store)
    assert checkpoint.returncode == 0, checkpoint.stderr
    assert re.search(r"\(\d{1,3}(?:,\d{3})+ B\); files before: \d+ \(", checkpoint.stdout)
    assert verify.returncode == 0, verify.stderr
    for done in (demo, again, inspect, exported, imported, checkpoint, verify):
        assert ungrouped_numbers(done.stdout + done.stderr, tmp_path) == [], done.stdout


def test_the_number_rule_finds_what_it_should():
    assert ungrouped_numbers("12345 input states, 1,234 B, 999 receipts") == ["12345"]
    assert ungrouped_numbers("LSN: last 4089; snapshot at 4089; log-00000000000000004090.log") == []
    assert ungrouped_numbers("at byte offset 123456: checksum; 2,732.2 ms") == []
