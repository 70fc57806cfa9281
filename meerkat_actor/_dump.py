"""The `dump` documents: a store's content as Meerkat JSON lines.

Rule 1: pure. `dump_documents` turns a `_core.ReadView` (a `StoreState`
value, or any other view) into JSON-ready dicts (values in Meerkat JSON,
`_codec.to_json`); serialising and writing them is the command line's job.
Nothing here reads a file or prints.

Rule 2: the core's reads decide. The runtimes are `_core.list_runtimes`
(those that hold anything, by id as a string, code point order), their
values the `_core.load_*` reads in the order those return them: input
states by input id, receipts by `(run_id, sequence)` (`load_boundary_receipts`:
UUID order, then number). This module keeps no order or "holds nothing"
rule of its own.

Rule 3: secrets are opt-in. The OAuth flow snapshot (PKCE verifiers,
tokens) is a document only when the caller asks for secrets and dumps the
whole store; `oauth_withheld` says when a dump left it out, so the caller
can tell the operator. No other document carries it.

Theory of operation. One document per value, each with a `kind` and the
`runtime_id` it belongs to. Within a runtime: its session snapshot (the
parsed JSON document when the bytes are UTF-8 JSON, else `snapshot_base64`:
the store keeps whatever bytes the session codec accepted), its runtime
state, its ops snapshot, its input states, its receipts. The OAuth flow
snapshot, when shown, is the last document. A dump of one runtime the store
does not hold is an error (`UnknownRuntime`), raised by `dump_documents`
itself, before any document is made. Documents are made one at a time, so
a caller that writes each as it comes holds one runtime's values at a time,
not the whole dump.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

from ._codec import to_json
from ._core import (
    ReadView,
    list_runtimes,
    load_auth_oauth_flow_snapshot,
    load_boundary_receipts,
    load_input_states,
    load_ops_lifecycle,
    load_runtime_state,
    load_session_snapshot,
)
from ._ids import LogicalRuntimeId

__all__ = ["UnknownRuntime", "dump_documents", "oauth_withheld", "session_document"]


class UnknownRuntime(LookupError):
    """`dump_documents` was asked for one runtime the store does not hold
    (never written, purged, or holding nothing any more)."""

    def __init__(self, runtime: str) -> None:
        super().__init__(f"the store holds no runtime {runtime!r}")
        self.runtime = runtime


def dump_documents(
    view: ReadView, runtime: str | None = None, *, include_secrets: bool = False
) -> Iterator[dict[str, Any]]:
    """The documents of a dump of the store, in order.

    Args:
        view: the store's content (a `StoreState`, or any `ReadView`).
        runtime: only this runtime's documents (its id as a string), or None
            for the whole store.
        include_secrets: also the OAuth flow snapshot (base64), when
            `runtime` is None.

    Returns:
        An iterator of JSON-ready dicts, one per document (see the module
        banner for their kinds and order).

    Raises:
        UnknownRuntime: `runtime` is not one `list_runtimes` lists (raised
            by this call, before any document).
    """
    runtime_ids = _runtimes_in_scope(view, runtime)
    oauth = _oauth_in_scope(view, runtime) if include_secrets else None
    return _documents(view, runtime_ids, oauth)


def _runtimes_in_scope(view: ReadView, runtime: str | None) -> list[LogicalRuntimeId]:
    listed = list_runtimes(view)
    if runtime is None:
        return listed
    chosen = [runtime_id for runtime_id in listed if str(runtime_id) == runtime]
    if not chosen:
        raise UnknownRuntime(runtime)
    return chosen


def _documents(
    view: ReadView, runtime_ids: Sequence[LogicalRuntimeId], oauth: bytes | None
) -> Iterator[dict[str, Any]]:
    for runtime_id in runtime_ids:
        yield from _runtime_documents(view, runtime_id)
    if oauth is not None:
        encoded = base64.b64encode(oauth).decode("ascii")
        yield {"kind": "oauth_flow_snapshot", "snapshot_base64": encoded}


def _runtime_documents(view: ReadView, runtime_id: LogicalRuntimeId) -> Iterator[dict[str, Any]]:
    name = str(runtime_id)
    session = load_session_snapshot(view, runtime_id)
    if session is not None:
        yield session_document(name, session)
    runtime_state = load_runtime_state(view, runtime_id)
    if runtime_state is not None:
        state_json = to_json(runtime_state)
        yield {"kind": "runtime_state", "runtime_id": name, "runtime_state": state_json}
    ops_snapshot = load_ops_lifecycle(view, runtime_id)
    if ops_snapshot is not None:
        yield {"kind": "ops_lifecycle", "runtime_id": name, "snapshot": to_json(ops_snapshot)}
    for stored in load_input_states(view, runtime_id):
        yield {
            "kind": "input_state",
            "runtime_id": name,
            "input_id": str(stored.state.input_id),
            "state": to_json(stored),
        }
    for receipt in load_boundary_receipts(view, runtime_id):
        yield {
            "kind": "boundary_receipt",
            "runtime_id": name,
            "run_id": str(receipt.run_id),
            "sequence": receipt.sequence,
            "receipt": to_json(receipt),
        }


def oauth_withheld(view: ReadView, runtime: str | None, *, include_secrets: bool) -> bool:
    """Whether `dump_documents` with these arguments leaves out an OAuth flow
    snapshot it would show with `include_secrets=True`.

    Args:
        view: the store's content.
        runtime: as for `dump_documents`.
        include_secrets: as for `dump_documents`.

    Returns:
        True when the store has an OAuth flow snapshot, the dump is of the
        whole store, and secrets were not asked for.
    """
    return _oauth_in_scope(view, runtime) is not None and not include_secrets


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


def _oauth_in_scope(view: ReadView, runtime: str | None) -> bytes | None:
    """The OAuth flow snapshot a dump covers: the store's, for a dump of the
    whole store; None for one runtime's dump (it is store-wide)."""
    return load_auth_oauth_flow_snapshot(view) if runtime is None else None
