"""The `dump` documents: `meerkat_actor._dump`, without trio.

States are built with `_core.redo`; expected documents are written out here
(values in Meerkat JSON through `_codec.to_json`, the encoding the CLI is
specified to print), in the order docs/cli.md gives.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

import meerkat_actor as ma
from meerkat_actor import _core as core
from meerkat_actor._codec import to_json
from meerkat_actor._dump import UnknownRuntime, dump_documents, oauth_withheld, session_document

A1 = ma.LogicalRuntimeId("agent-1")
A10 = ma.LogicalRuntimeId("agent-10")
A2 = ma.LogicalRuntimeId("agent-2")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
SESSION = {"id": "5f0c2a4e-1b7d-4c8e-9a3f-2d6b8e1c4a70", "messages": ["h\u00e9llo"]}
OAUTH = b'{"flows": {"st-1": {"pkce_verifier": "secret"}}}'
OPS = ma.PersistedOpsSnapshot("epoch-1", cursors={"agent_applied_cursor": 2})
# Receipts sort by run id (UUID order), then by sequence as a number (here
# beyond the signed 64-bit range).
RUN_LOW = ma.RunId(uuid.UUID(int=0x01))
RUN_HIGH = ma.RunId(uuid.UUID(int=0xFF << 120))
U63 = 2**63


def stored(n: int) -> ma.StoredInputState:
    return ma.StoredInputState.new_accepted(ma.InputId(uuid.UUID(int=n)), now=T0)


def receipt(run_id: ma.RunId, sequence: int) -> ma.RunBoundaryReceipt:
    return ma.RunBoundaryReceipt(run_id, ma.RunApplyBoundary.IMMEDIATE, (), None, 1, sequence)


def state_of(*effects: core.Effect) -> core.StoreState:
    return core.redo(core.EMPTY, effects)


def kinds(documents: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(d["kind"], d.get("runtime_id")) for d in documents]


# Input ids written out of order; receipts too (by run, then sequence).
INPUTS = [stored(n) for n in (3, 1, 2)]
RECEIPTS = [receipt(RUN_HIGH, 0), receipt(RUN_LOW, U63 + 1), receipt(RUN_LOW, U63)]
STATE = state_of(
    core.PutInputStates(A2, (stored(9),)),
    core.SetOAuthFlowSnapshot(OAUTH),
    core.PutInputStates(A1, tuple(INPUTS)),
    *(core.InsertReceipt(A1, r) for r in RECEIPTS),
    core.SetOpsSnapshot(A1, OPS),
    core.SetRuntimeState(A1, ma.RuntimeState.IDLE),
    core.SetSessionSnapshot(A1, json.dumps(SESSION).encode()),
    core.SetRuntimeState(A10, ma.RuntimeState.RUNNING),
)


# --- one document per value ----------------------------------------------------------


def test_every_document_of_a_runtime_in_order():
    documents = list(dump_documents(STATE, "agent-1"))
    inputs = sorted(INPUTS, key=lambda s: s.state.input_id.value.int)
    receipts = [RECEIPTS[2], RECEIPTS[1], RECEIPTS[0]]
    assert documents == [
        {"kind": "session_snapshot", "runtime_id": "agent-1", "snapshot": SESSION},
        {"kind": "runtime_state", "runtime_id": "agent-1", "runtime_state": "idle"},
        {"kind": "ops_lifecycle", "runtime_id": "agent-1", "snapshot": to_json(OPS)},
        *(
            {
                "kind": "input_state",
                "runtime_id": "agent-1",
                "input_id": str(s.state.input_id),
                "state": to_json(s),
            }
            for s in inputs
        ),
        *(
            {
                "kind": "boundary_receipt",
                "runtime_id": "agent-1",
                "run_id": str(r.run_id),
                "sequence": r.sequence,
                "receipt": to_json(r),
            }
            for r in receipts
        ),
    ]
    assert [d["input_id"] for d in documents if d["kind"] == "input_state"] == [
        "00000000-0000-0000-0000-000000000001",
        "00000000-0000-0000-0000-000000000002",
        "00000000-0000-0000-0000-000000000003",
    ]
    assert [(d["run_id"], d["sequence"]) for d in documents if d["kind"] == "boundary_receipt"] == [
        (str(RUN_LOW), U63),
        (str(RUN_LOW), U63 + 1),
        (str(RUN_HIGH), 0),
    ]


def test_input_states_follow_the_cores_read_order():
    documents = dump_documents(STATE, "agent-1")
    dumped = [d["state"] for d in documents if d["kind"] == "input_state"]
    assert dumped == [to_json(s) for s in core.load_input_states(STATE, A1)]


def test_runtimes_in_code_point_order_and_the_oauth_snapshot_last():
    documents = list(dump_documents(STATE, include_secrets=True))
    runtimes = [d["runtime_id"] for d in documents[:-1]]
    assert list(dict.fromkeys(runtimes)) == ["agent-1", "agent-10", "agent-2"]
    assert documents[-1] == {
        "kind": "oauth_flow_snapshot",
        "snapshot_base64": base64.b64encode(OAUTH).decode(),
    }
    assert kinds(documents[-3:-1]) == [("runtime_state", "agent-10"), ("input_state", "agent-2")]


def test_a_record_that_holds_nothing_gives_no_document():
    empty = core.RuntimeRecord()
    state = core.StoreState(STATE.runtimes.set(ma.LogicalRuntimeId("agent-0"), empty))
    assert "agent-0" not in {d.get("runtime_id") for d in dump_documents(state)}
    with pytest.raises(UnknownRuntime):
        dump_documents(state, "agent-0")
    assert list(dump_documents(core.EMPTY, include_secrets=True)) == []


def test_an_unknown_runtime_is_an_error_before_any_document():
    # Raised by the call itself, not on iteration: a caller writes nothing.
    with pytest.raises(UnknownRuntime) as raised:
        dump_documents(STATE, "agent-3", include_secrets=True)
    assert raised.value.runtime == "agent-3"
    assert "agent-3" in str(raised.value)
    assert not oauth_withheld(STATE, "agent-3", include_secrets=False)
    with pytest.raises(UnknownRuntime):
        dump_documents(core.EMPTY, "agent-1")


def test_purged_and_cleared_runtimes_are_not_dumped():
    cleared = ma.LogicalRuntimeId("agent-cleared")
    state = core.redo(
        STATE,
        (
            core.SetOpsSnapshot(cleared, OPS),
            core.RemoveOpsSnapshot(cleared),
            core.RemoveRuntime(A10),
        ),
    )
    runtimes = {d.get("runtime_id") for d in dump_documents(state)}
    assert runtimes == {"agent-1", "agent-2"}
    for gone in ("agent-10", "agent-cleared"):
        with pytest.raises(UnknownRuntime):
            dump_documents(state, gone)


def test_receipts_follow_the_cores_read_order():
    dumped = [
        d["receipt"] for d in dump_documents(STATE, "agent-1") if d["kind"] == "boundary_receipt"
    ]
    assert dumped == [to_json(r) for r in core.load_boundary_receipts(STATE, A1)]


class _ListingView:
    """A `ReadView` that is not a `StoreState` and lists its runtimes and
    receipts in another order: the dump is the core's reads of any view."""

    def __init__(self, state: core.StoreState) -> None:
        self._state = state

    def __getattr__(self, name: str) -> object:
        return getattr(self._state, name)

    def runtime_ids(self) -> list[ma.LogicalRuntimeId]:
        return list(reversed(list(self._state.runtime_ids())))

    def boundary_receipts(self, runtime_id: ma.LogicalRuntimeId) -> list[ma.RunBoundaryReceipt]:
        return list(reversed(list(self._state.boundary_receipts(runtime_id))))


def test_any_read_view_dumps_alike():
    view: Any = _ListingView(STATE)
    assert list(dump_documents(view, include_secrets=True)) == list(
        dump_documents(STATE, include_secrets=True)
    )
    assert oauth_withheld(view, None, include_secrets=False)


# --- session snapshots ---------------------------------------------------------------


@pytest.mark.parametrize(
    "snapshot",
    [
        b"\xff\xfe" + bytes(range(16)) + b" binary session state",  # not UTF-8
        b"ab" + bytes(range(1, 16)) + b" plain text",  # UTF-8, not JSON
        b'{"id": "s", "messages": [',  # JSON cut short
        b"",
    ],
)
def test_a_session_snapshot_that_is_not_json_is_base64(snapshot: bytes):
    expected = {
        "kind": "session_snapshot",
        "runtime_id": "agent-1",
        "snapshot_base64": base64.b64encode(snapshot).decode("ascii"),
    }
    assert session_document("agent-1", snapshot) == expected
    state = state_of(core.SetSessionSnapshot(A1, snapshot))
    assert list(dump_documents(state)) == [expected]
    assert base64.b64decode(expected["snapshot_base64"]) == snapshot


def test_a_json_session_snapshot_is_its_document():
    snapshot = json.dumps(SESSION, ensure_ascii=False).encode("utf-8")
    assert session_document("agent-\u00e9", snapshot) == {
        "kind": "session_snapshot",
        "runtime_id": "agent-\u00e9",
        "snapshot": SESSION,
    }
    # Any JSON value, not only an object.
    assert session_document("r", b"[1, 2]")["snapshot"] == [1, 2]


# --- the secrets switch --------------------------------------------------------------


def test_the_oauth_snapshot_is_shown_only_with_secrets_for_the_whole_store():
    shown = list(dump_documents(STATE, include_secrets=True))
    hidden = list(dump_documents(STATE))
    assert shown[:-1] == hidden
    assert all(d["kind"] != "oauth_flow_snapshot" for d in hidden)
    assert not any(b"secret" in json.dumps(d).encode() for d in hidden)
    assert oauth_withheld(STATE, None, include_secrets=False)
    assert not oauth_withheld(STATE, None, include_secrets=True)


def test_one_runtimes_dump_never_holds_the_oauth_snapshot():
    # It is store-wide: not part of any runtime, withheld from none.
    for secrets in (False, True):
        documents = list(dump_documents(STATE, "agent-1", include_secrets=secrets))
        assert all(d["kind"] != "oauth_flow_snapshot" for d in documents)
        assert not oauth_withheld(STATE, "agent-1", include_secrets=secrets)


def test_nothing_is_withheld_from_a_store_without_an_oauth_snapshot():
    state = dataclasses.replace(STATE, oauth_flow_snapshot=None)
    assert not oauth_withheld(state, None, include_secrets=False)
    assert list(dump_documents(state, include_secrets=True)) == list(dump_documents(STATE))
