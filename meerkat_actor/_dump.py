"""The `dump` documents: a store state as Meerkat JSON lines.

Rule 1: pure. `dump_documents` turns a `StoreState` value into JSON-ready
dicts (values in Meerkat JSON, `_codec.to_json`); serialising and writing
them is the command line's job. Nothing here reads a file or prints.

Rule 2: secrets are opt-in. The OAuth flow snapshot (PKCE verifiers,
tokens) is a document only when the caller asks for secrets and dumps the
whole store; `oauth_withheld` says when a dump left it out, so the caller
can tell the operator. No other document carries it.

Theory of operation. One document per value, each with a `kind` and the
`runtime_id` it belongs to. Runtimes come in `_contents.held_runtimes`
order (by id, code point order); within a runtime: its session snapshot
(the parsed JSON document when the bytes are UTF-8 JSON, else
`snapshot_base64`: the store keeps whatever bytes the session codec
accepted), its runtime state, its ops snapshot, its input states in the
core's read order (`_core.load_input_states`: by input id), its receipts by
run id (UUID order), then sequence. The OAuth flow snapshot, when shown,
is the last document. Documents are made one at a time, so a caller that
writes each as it comes holds one runtime's values at a time, not the
whole dump.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from ._codec import to_json
from ._contents import held_runtimes
from ._core import StoreState, load_input_states
from ._types import RunBoundaryReceipt

__all__ = ["dump_documents", "oauth_withheld", "session_document"]


def dump_documents(
    state: StoreState, runtime: str | None = None, *, include_secrets: bool = False
) -> Iterator[dict[str, Any]]:
    """The documents of a dump of `state`, in order.

    Args:
        state: the store state.
        runtime: only this runtime's documents (its id as a string), or None
            for the whole store. An id the store does not hold gives no
            document.
        include_secrets: also the OAuth flow snapshot (base64), when
            `runtime` is None.

    Returns:
        An iterator of JSON-ready dicts, one per document (see the module
        banner for their kinds and order).
    """
    for runtime_id, record in held_runtimes(state):
        name = str(runtime_id)
        if runtime is not None and name != runtime:
            continue
        if record.session_snapshot is not None:
            yield session_document(name, record.session_snapshot)
        if record.runtime_state is not None:
            state_json = to_json(record.runtime_state)
            yield {"kind": "runtime_state", "runtime_id": name, "runtime_state": state_json}
        if record.ops_snapshot is not None:
            ops = to_json(record.ops_snapshot)
            yield {"kind": "ops_lifecycle", "runtime_id": name, "snapshot": ops}
        for stored in load_input_states(state, runtime_id):
            yield {
                "kind": "input_state",
                "runtime_id": name,
                "input_id": str(stored.state.input_id),
                "state": to_json(stored),
            }
        for receipt in sorted(record.receipts.values(), key=_receipt_order):
            yield {
                "kind": "boundary_receipt",
                "runtime_id": name,
                "run_id": str(receipt.run_id),
                "sequence": receipt.sequence,
                "receipt": to_json(receipt),
            }
    oauth = _oauth_in_scope(state, runtime)
    if oauth is not None and include_secrets:
        encoded = base64.b64encode(oauth).decode("ascii")
        yield {"kind": "oauth_flow_snapshot", "snapshot_base64": encoded}


def oauth_withheld(state: StoreState, runtime: str | None, *, include_secrets: bool) -> bool:
    """Whether `dump_documents` with these arguments leaves out an OAuth flow
    snapshot it would show with `include_secrets=True`.

    Args:
        state: the store state.
        runtime: as for `dump_documents`.
        include_secrets: as for `dump_documents`.

    Returns:
        True when the store has an OAuth flow snapshot, the dump is of the
        whole store, and secrets were not asked for.
    """
    return _oauth_in_scope(state, runtime) is not None and not include_secrets


def session_document(runtime_id: str, snapshot: bytes) -> dict[str, Any]:
    """The document of one session snapshot.

    Args:
        runtime_id: the runtime's id, as a string.
        snapshot: the snapshot's bytes, as stored.

    Returns:
        `{"kind": "session_snapshot", "runtime_id": ..., "snapshot": <the
        parsed document>}` when the bytes are UTF-8 JSON; otherwise the bytes
        in base64 under `snapshot_base64` instead of `snapshot`.
    """
    try:
        parsed = json.loads(snapshot.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        encoded = base64.b64encode(snapshot).decode("ascii")
        return {"kind": "session_snapshot", "runtime_id": runtime_id, "snapshot_base64": encoded}
    return {"kind": "session_snapshot", "runtime_id": runtime_id, "snapshot": parsed}


def _oauth_in_scope(state: StoreState, runtime: str | None) -> bytes | None:
    """The OAuth flow snapshot a dump covers: the store's, for a dump of the
    whole store; None for one runtime's dump (it is store-wide)."""
    return state.oauth_flow_snapshot if runtime is None else None


def _receipt_order(receipt: RunBoundaryReceipt) -> tuple[int, int]:
    return (receipt.run_id.value.int, receipt.sequence)
