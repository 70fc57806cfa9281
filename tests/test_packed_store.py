"""A durable store holding a packed value that does not decode (or that
sits under the wrong key): the store opens, a read of that value raises
`CorruptStore` naming the runtime, other reads work, and `verify` reports
the record (docs/format.md section 5)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

import meerkat_actor as ma
from meerkat_actor import _core as core
from meerkat_actor import _format as fmt
from meerkat_actor._packed import PackedInput, PackedReceipt, input_key, pack_input
from meerkat_actor._verifier import verify_store

RT = ma.LogicalRuntimeId("rt")
GOOD = ma.InputId(uuid.UUID(int=1))
BAD = ma.InputId(uuid.UUID(int=2))
RUN = ma.RunId(uuid.UUID(int=3))


def _stored(input_id: ma.InputId) -> ma.StoredInputState:
    return ma.StoredInputState.new_accepted(input_id, now=datetime(2026, 1, 1, tzinfo=UTC))


def _store_with(path: Path, effects: tuple[core.Effect, ...]) -> None:
    """A closed store (snapshot at 0 and an empty segment at LSN 1), then one
    record at LSN 1 holding `effects`, written where the writer would."""

    async def make() -> None:
        async with ma.open_store(path):
            pass

    trio.run(make)
    segment = path / fmt.segment_name(1)
    data = bytearray(segment.read_bytes())
    record = fmt.encode_record(1, effects)
    data[fmt.SEGMENT_HEADER : fmt.SEGMENT_HEADER + len(record)] = record
    segment.write_bytes(bytes(data))


def test_an_undecodable_packed_state_opens_fails_its_read_and_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "store"
    effects = (core.PutInputStates(RT, [_stored(GOOD), PackedInput(input_key(BAD), b"\xa0")]),)
    _store_with(path, effects)
    report = verify_store(str(path))
    assert report.result == "damaged"
    (problem,) = [p for p in report.problems if p.severity == "damage"]
    assert problem.file.endswith(fmt.segment_name(1))
    assert problem.offset == fmt.SEGMENT_HEADER
    assert f"input state {input_key(BAD).hex()} does not decode" in problem.message

    async def read() -> None:
        async with ma.open_store(path) as store:
            assert await store.list_runtimes() == [RT]
            assert await store.load_input_state(RT, GOOD) == _stored(GOOD)
            with pytest.raises(
                ma.CorruptStore, match=r"runtime 'rt': a stored input state: .*missing"
            ):
                await store.load_input_state(RT, BAD)
            with pytest.raises(ma.CorruptStore, match="runtime 'rt'"):
                await store.load_input_states(RT)

    trio.run(read)


def test_a_packed_state_under_another_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "store"
    _store_with(
        path, (core.PutInputStates(RT, [PackedInput(input_key(BAD), pack_input(_stored(GOOD)))]),)
    )
    report = verify_store(str(path))
    assert report.result == "damaged"
    assert any(f"holds input id {GOOD}" in p.message for p in report.problems)


def test_a_packed_receipt_under_another_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "store"
    receipt = ma.RunBoundaryReceipt(RUN, ma.RunApplyBoundary.IMMEDIATE, (), None, 0, 5)
    good = PackedReceipt.of(receipt)
    wrong = PackedReceipt(good.key[:16] + (6).to_bytes(8, "big"), good.blob)
    _store_with(path, (core.InsertReceipt(RT, wrong),))
    report = verify_store(str(path))
    assert report.result == "damaged"
    assert any(f"holds run {RUN} sequence 5" in p.message for p in report.problems)


def test_a_checkpoint_carries_the_damage_into_the_snapshot_where_verify_finds_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store"
    _store_with(path, (core.PutInputStates(RT, [PackedInput(input_key(BAD), b"\xa0")]),))

    async def checkpoint() -> None:
        async with ma.open_store(path) as store:
            await store.checkpoint()

    trio.run(checkpoint)
    report = verify_store(str(path))
    assert report.result == "damaged"
    (problem,) = [p for p in report.problems if p.severity == "damage"]
    assert problem.file.endswith(".snap")
    assert "does not decode" in problem.message


def test_one_state_gives_the_same_snapshot_bytes_under_any_hash_seed(tmp_path: Path) -> None:
    """Opaque documents' object keys are written sorted and runtimes in id
    order, so the bytes do not depend on the string hash seed."""
    program = """
import sys, uuid
from datetime import UTC, datetime
import meerkat_actor as ma
from meerkat_actor import _core, _format
now = datetime(2026, 1, 1, tzinfo=UTC)
doc = {f"key{n}": {"nested": n, "z": [n, "x"], "a": None} for n in range(20)}
effects = []
for r in range(20):
    iid = ma.InputId(uuid.UUID(int=r + 1))
    state = ma.InputState(iid, now, now, persisted_input=doc, policy=doc)
    rt = ma.LogicalRuntimeId(f"rt-{r}")
    effects.append(_core.PutInputStates(rt, [ma.StoredInputState(state)]))
state = _core.redo(_core.EMPTY, tuple(effects))
sys.stdout.buffer.write(_format.encode_snapshot(7, state))
"""
    outputs = {
        subprocess.run(
            [sys.executable, "-c", program],
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outputs) == 1
    (data,) = outputs
    assert fmt.decode_snapshot(data)[0] == 7
