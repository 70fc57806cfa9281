"""Packed values (`_packed.py`): the store state's form of input states and
receipts, and the fast, hardened unpacking that must agree with the codec."""

from __future__ import annotations

import uuid
from typing import Any

import cbor2
import pytest
from _values import stored
from hypothesis import given
from hypothesis import strategies as st
from pyrsistent import pmap

import meerkat_actor as ma
from meerkat_actor import _core as core
from meerkat_actor._codec import CodecError, from_plain, to_plain
from meerkat_actor._errors import CorruptStore
from meerkat_actor._packed import (
    CorruptValue,
    DecodedMemo,
    PackedInput,
    PackedReceipt,
    input_key,
    pack_input,
    pack_receipt,
    receipt_key,
    unpack_input,
    unpack_receipt,
)
from meerkat_actor.testing import strategies as mst

RT = ma.LogicalRuntimeId("rt")


@given(mst.stored_input_states())
def test_an_input_state_unpacks_to_itself_and_packs_to_the_same_bytes(
    stored: ma.StoredInputState,
) -> None:
    blob = pack_input(stored)
    assert blob == cbor2.dumps(to_plain(stored))  # the fast packer is the codec's form
    back = unpack_input(blob)
    assert back == stored
    assert pack_input(back) == blob  # one value, one encoding
    assert from_plain(ma.StoredInputState, cbor2.loads(blob)) == stored


@given(mst.receipts())
def test_a_receipt_unpacks_to_itself_and_packs_to_the_same_bytes(
    receipt: ma.RunBoundaryReceipt,
) -> None:
    blob = pack_receipt(receipt)
    assert unpack_receipt(blob) == receipt
    assert pack_receipt(unpack_receipt(blob)) == blob


@given(st.lists(mst.input_ids(), min_size=2, max_size=8, unique=True))
def test_input_keys_sort_like_input_ids(ids: list[ma.InputId]) -> None:
    assert sorted(ids, key=lambda i: i.value.int) == sorted(ids, key=input_key)


@given(st.lists(st.tuples(mst.run_ids(), mst.sequences()), min_size=2, max_size=8, unique=True))
def test_receipt_keys_sort_by_run_id_then_sequence(keys: list[tuple[ma.RunId, int]]) -> None:
    by_value = sorted(keys, key=lambda k: (k[0].value.int, k[1]))
    assert by_value == sorted(keys, key=lambda k: receipt_key(*k))
    assert len({receipt_key(*k) for k in keys}) == len(keys)


# --- the fast path agrees with the codec on bad input -----------------------------

_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**65),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=20),
    st.sampled_from(
        [
            "accepted",
            "consumed",
            "durable",
            "retired",
            {"outcome_type": "consumed"},
            {"outcome_type": "superseded", "superseded_by": b"\x01" * 16},
            {"outcome_type": "abandoned", "reason": {"max_attempts_exhausted": {"attempts": 3}}},
            {"outcome_type": "abandoned", "reason": {"retired": None}},
            {"outcome_type": "abandoned", "reason": "max_attempts_exhausted"},
            {"outcome_type": "consumed", "extra": 1},
            [],
            [{"timestamp": 0, "from": "accepted", "to": "queued"}],
            [{"timestamp": 0, "from": "accepted", "to": "queued", "reason": 5}],
            [{"timestamp": 0, "from": "accepted"}],
            {1: "int key"},
            {"nested": [1.5, {"deep": None}]},
            2**32 - 1,
            2**32,
            2**64 - 1,
            -1,
        ]
    ),
)

_INPUT_FIELDS = [
    "input_id",
    "current_state",
    "policy",
    "runtime_semantics",
    "terminal_outcome",
    "durability",
    "idempotency_key",
    "attempt_count",
    "recovery_count",
    "history",
    "reconstruction_source",
    "persisted_input",
    "last_run_id",
    "last_boundary_sequence",
    "created_at",
    "updated_at",
    "unknown_key",
]


def _outcome(unpack: Any, blob: bytes) -> tuple[str, Any]:
    try:
        return ("ok", unpack(blob))
    except CorruptValue as exc:
        return ("error", str(exc))


@given(
    mst.stored_input_states(),
    st.lists(
        st.tuples(st.sampled_from(_INPUT_FIELDS), st.one_of(st.just("<delete>"), _LEAVES)),
        min_size=1,
        max_size=3,
    ),
)
def test_a_damaged_input_state_is_refused_exactly_when_the_codec_refuses_it(
    stored: ma.StoredInputState, changes: list[tuple[str, Any]]
) -> None:
    plain = to_plain(stored)
    for key, value in changes:
        if value == "<delete>":
            plain.pop(key, None)
        else:
            plain[key] = value
    blob = cbor2.dumps(plain)
    try:
        expected: Any = from_plain(ma.StoredInputState, plain)
    except CodecError:
        expected = None
    kind, got = _outcome(unpack_input, blob)
    if expected is None:
        assert kind == "error", got
        # Named by its field, or (an integer beyond 64 bits, which CBOR
        # writes as a tag) refused by the decoder.
        assert got.startswith(("StoredInputState", "invalid CBOR")), got
    else:
        assert kind == "ok", got
        assert got == expected
        assert pack_input(got) == pack_input(expected)


_RECEIPT_FIELDS = [
    "run_id",
    "boundary",
    "contributing_input_ids",
    "conversation_digest",
    "message_count",
    "sequence",
    "other",
]


@given(
    mst.receipts(),
    st.lists(
        st.tuples(
            st.sampled_from(_RECEIPT_FIELDS),
            st.one_of(st.just("<delete>"), _LEAVES, st.just([b"\x02" * 16, b"short"])),
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_a_damaged_receipt_is_refused_exactly_when_the_codec_refuses_it(
    receipt: ma.RunBoundaryReceipt, changes: list[tuple[str, Any]]
) -> None:
    plain = to_plain(receipt)
    for key, value in changes:
        if value == "<delete>":
            plain.pop(key, None)
        else:
            plain[key] = value
    try:
        expected: Any = from_plain(ma.RunBoundaryReceipt, plain)
    except CodecError:
        expected = None
    kind, got = _outcome(unpack_receipt, cbor2.dumps(plain))
    assert (kind == "ok") == (expected is not None), got
    if expected is not None:
        assert got == expected


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "invalid CBOR"),
        (b"\xa0\x00", "1 bytes follow"),  # an item, then a stray byte
        (cbor2.dumps(cbor2.CBORTag(1, 0)), "invalid CBOR"),  # a tag
        (b"\xbf\xff", "invalid CBOR"),  # an indefinite-length map
        (b"\xa2\x61a\x01\x61a\x02", "invalid CBOR"),  # a duplicate key
        (b"\x81" * 200 + b"\x00", "invalid CBOR"),  # nested too deep
        (b"\x5a\xff\xff\xff\xff", "invalid CBOR"),  # a length beyond the data
        (b"\xf7", "StoredInputState"),  # undefined: not a map
    ],
)
def test_bytes_that_are_not_one_valid_item_are_refused(blob: bytes, message: str) -> None:
    with pytest.raises(CorruptValue, match=message):
        unpack_input(blob)


def test_a_state_holding_damaged_bytes_reads_as_corrupt_store_naming_the_runtime() -> None:
    input_id = ma.InputId(uuid.UUID(int=7))
    run_id = ma.RunId(uuid.UUID(int=9))
    record = core.RuntimeRecord(
        input_states=pmap({input_key(input_id): b"\xa1\x61x\x01"}),
        receipts=pmap({receipt_key(run_id, 3): b"\x00"}),
    )
    state = core.StoreState(pmap({RT: record}))
    with pytest.raises(CorruptStore, match=r"runtime 'rt': a stored input state: .*unknown key"):
        core.load_input_state(state, RT, input_id)
    with pytest.raises(CorruptStore, match="runtime 'rt'"):
        core.load_input_states(state, RT)
    with pytest.raises(CorruptStore, match="runtime 'rt': a stored receipt"):
        core.load_boundary_receipt(state, RT, run_id, 3)
    # Other reads do not touch the damaged values.
    assert core.load_input_state(state, RT, ma.InputId(uuid.UUID(int=8))) is None
    assert core.list_runtimes(state) == [RT]


@given(mst.stored_input_states(), mst.receipts())
def test_packed_effects_equal_the_effects_of_the_values(
    stored: ma.StoredInputState, receipt: ma.RunBoundaryReceipt
) -> None:
    assert core.PutInputStates(RT, [stored]) == core.PutInputStates(RT, [PackedInput.of(stored)])
    assert core.InsertReceipt(RT, receipt) == core.InsertReceipt(RT, PackedReceipt.of(receipt))
    assert core.PutInputStates(RT, [stored]).states[0].unpack() == stored
    assert core.InsertReceipt(RT, receipt).receipt.unpack() == receipt


# --- Rebuild: the recovery form of redo ---------------------------------------------

_RUNTIMES = st.sampled_from([ma.LogicalRuntimeId(n) for n in ("a", "b", "c")])
_RUNS = st.sampled_from([ma.RunId(uuid.UUID(int=n)) for n in (1, 2)])
_EFFECTS = st.one_of(
    st.builds(core.SetOAuthFlowSnapshot, st.binary(max_size=8)),
    st.builds(core.SetSessionSnapshot, _RUNTIMES, st.binary(max_size=8)),
    st.builds(
        core.InsertReceipt, _RUNTIMES, mst.receipts(run_id=_RUNS, sequence=st.integers(0, 3))
    ),
    st.builds(
        core.PutInputStates,
        _RUNTIMES,
        st.lists(mst.stored_input_states(), min_size=1, max_size=3),
    ),
    st.builds(core.SetRuntimeState, _RUNTIMES, mst.runtime_states()),
    st.builds(core.SetOpsSnapshot, _RUNTIMES, mst.ops_snapshots()),
    st.builds(core.RemoveSessionSnapshot, _RUNTIMES),
    st.builds(core.RemoveOpsSnapshot, _RUNTIMES),
    st.builds(core.RemoveRuntime, _RUNTIMES),
)


@given(
    st.lists(st.lists(_EFFECTS, max_size=4).map(tuple), max_size=6),
    st.lists(st.lists(_EFFECTS, max_size=4).map(tuple), max_size=6),
)
def test_rebuild_gives_the_state_redo_gives(
    before: list[tuple[core.Effect, ...]], records: list[tuple[core.Effect, ...]]
) -> None:
    base = core.EMPTY
    for effects in before:  # a snapshot's state, then the log's records
        base = core.redo(base, effects)
    rebuild = core.Rebuild(base)
    expected = base
    for effects in records:
        rebuild.apply(effects)
        expected = core.redo(expected, effects)
    got = rebuild.state()
    assert got == expected
    assert list(got.runtimes) == [
        r for r in got.runtimes if got.runtimes[r] != core.RuntimeRecord()
    ]
    assert base == core.redo(core.EMPTY, tuple(e for es in before for e in es))  # untouched


# --- the memo of point reads -------------------------------------------------------------


def _input(n: int, text: str = "x") -> ma.StoredInputState:
    return stored(ma.InputId(uuid.UUID(int=n)), persisted_input={"text": text})


def test_the_memo_answers_for_the_same_blob_object_only() -> None:
    memo = DecodedMemo()
    blob = pack_input(_input(1))
    first = memo.input(blob)
    assert memo.input(blob) is first  # a hit: no decode
    twin = bytes(bytearray(blob))  # equal bytes, another object: decoded again
    assert twin is not blob
    again = memo.input(twin)
    assert again == first
    assert again is not first
    changed = pack_input(_input(1, "y"))  # a write puts a new blob under the key
    assert memo.input(changed).state.persisted_input == pmap({"text": "y"})
    assert memo.input(blob).state.persisted_input == pmap({"text": "x"})


def test_the_memo_is_bounded_by_entries_and_bytes_and_skips_large_blobs() -> None:
    memo = DecodedMemo(entries=4, blob_bytes=10_000, largest=2_000)
    blobs = [pack_input(_input(n)) for n in range(20)]
    values = [memo.input(b) for b in blobs]
    assert len(memo._young) + len(memo._old) <= 8
    assert memo.input(blobs[-1]) is values[-1]  # the newest are still there
    assert memo.input(blobs[0]) is not values[0]  # the oldest were dropped
    large = pack_input(_input(99, "z" * 3_000))
    assert memo.input(large) is not memo.input(large)  # never kept
    small = DecodedMemo(entries=100, blob_bytes=3 * len(blobs[0]), largest=2_000)
    for b in blobs:
        small.input(b)
    assert sum(len(b) for b, _ in small._young.values()) <= 3 * len(blobs[0])
    assert len(small._young) + len(small._old) <= 6


def test_the_memo_keeps_nothing_that_failed_to_decode() -> None:
    memo = DecodedMemo()
    bad = b"\xa1\x61x\x01"
    for _ in range(2):
        with pytest.raises(CorruptValue):
            memo.input(bad)
    assert not memo._young
    assert not memo._old


def test_a_memoized_value_under_another_key_is_still_corrupt_store() -> None:
    # The same blob object read under its own key (memoized) and then found
    # under another input's key: the key check runs on every read.
    blob = pack_input(_input(5))
    right, wrong = ma.InputId(uuid.UUID(int=5)), ma.InputId(uuid.UUID(int=6))
    record = core.RuntimeRecord(input_states=pmap({input_key(right): blob, input_key(wrong): blob}))
    state = core.StoreState(pmap({RT: record}))
    assert core.load_input_state(state, RT, right) is not None
    assert core.load_input_state(state, RT, right) is core.load_input_state(state, RT, right)
    with pytest.raises(CorruptStore, match="holds input id"):
        core.load_input_state(state, RT, wrong)


async def test_point_reads_follow_every_write_through_the_memo() -> None:
    async with ma.open_store() as store:
        iid = ma.InputId(uuid.UUID(int=11))
        for text in ["a", "b", "a", "c"]:
            await store.persist_input_state(RT, stored(iid, persisted_input={"text": text}))
            for _ in range(2):
                got = await store.load_input_state(RT, iid)
                assert got is not None
                assert got.state.persisted_input == pmap({"text": text})
