"""The SQLite backend's schema and row codec: Meerkat's six tables (SPEC §9),
and how a row's columns become a value and back.

Rule 1: no SQL runs here and no connection is held; these are pure functions
of column values (the schema is data: statements to run, columns to check).

Rule 2: a row is trusted only as far as its key columns and its JSON agree.
The one rule for every path that reads a row (a lookup by key, a listing, a
whole-store read for export or import): an input-state row is the state its
JSON holds when its `input_id` column names the same UUID (any spelling; a
non-canonical spelling is listed but never found by a lookup, which asks for
the canonical one); a receipt row is the receipt its JSON holds only under
its own key, spelled as this store writes it: the `run_id` column the
canonical (lower-case, hyphenated) run id, the `sequence` column its
two's-complement slot (or, for a row an older Rust store clamped, 2**63-1).
Anything else is damage (`CorruptStore` naming the file, table and key).

Theory of operation. Ids are stored as their canonical strings, JSON values
as BLOBs of Meerkat's JSON (`_codec.dumps_json`). SQLite integers are i64, so
a u64 receipt sequence is stored as its two's-complement bit pattern
(`sequence_to_i64`): every u64 stays a distinct key. TEXT values come from the
connection undecoded (`Text`, the connection's text factory), so a TEXT value
that is not UTF-8 is damage reported here, never an error of `sqlite3`.
"""

from __future__ import annotations

import uuid
from enum import Enum
from typing import Final, TypeVar, final

from ._codec import CodecError, loads_json
from ._errors import CorruptStore
from ._ids import LogicalRuntimeId
from ._types import RunBoundaryReceipt, StoredInputState

__all__ = [
    "COLUMNS",
    "I64_MAX",
    "OAUTH_ROW_ID",
    "SCHEMA",
    "ReceiptSlot",
    "RowCodec",
    "Text",
    "name_of",
    "receipt_slot",
    "sequence_to_i64",
]

T = TypeVar("T")

#: The six tables of Meerkat's Rust SQLite store (SPEC §9), every column
#: NOT NULL. Statements are run one by one at open.
SCHEMA: Final[tuple[str, ...]] = (
    """CREATE TABLE IF NOT EXISTS runtime_input_states (
    runtime_id TEXT NOT NULL,
    input_id TEXT NOT NULL,
    state_json BLOB NOT NULL,
    PRIMARY KEY (runtime_id, input_id)
)""",
    """CREATE TABLE IF NOT EXISTS runtime_boundary_receipts (
    runtime_id TEXT NOT NULL,
    run_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    receipt_json BLOB NOT NULL,
    PRIMARY KEY (runtime_id, run_id, sequence)
)""",
    """CREATE TABLE IF NOT EXISTS runtime_session_snapshots (
    runtime_id TEXT NOT NULL PRIMARY KEY,
    session_snapshot BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS runtime_states (
    runtime_id TEXT NOT NULL PRIMARY KEY,
    runtime_state_json BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS runtime_ops_lifecycle (
    runtime_id TEXT NOT NULL PRIMARY KEY,
    state_json BLOB NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS runtime_auth_oauth_flow_state (
    id TEXT NOT NULL PRIMARY KEY,
    state_json BLOB NOT NULL
)""",
)

#: The columns this backend reads and writes, per table: a table that exists
#: without them is not a Meerkat runtime store.
COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "runtime_input_states": ("runtime_id", "input_id", "state_json"),
    "runtime_boundary_receipts": ("runtime_id", "run_id", "sequence", "receipt_json"),
    "runtime_session_snapshots": ("runtime_id", "session_snapshot"),
    "runtime_states": ("runtime_id", "runtime_state_json"),
    "runtime_ops_lifecycle": ("runtime_id", "state_json"),
    "runtime_auth_oauth_flow_state": ("id", "state_json"),
}

OAUTH_ROW_ID: Final = "auth_oauth_flow_state"
I64_MAX: Final = 2**63 - 1


def sequence_to_i64(sequence: int) -> int:
    """The `sequence` column value of a u64 receipt sequence: its two's-complement
    bit pattern as an i64 (2**63 -> -2**63, 2**64-1 -> -1)."""
    return sequence - 2**64 if sequence > I64_MAX else sequence


class ReceiptSlot(Enum):
    """Where a receipt row stands relative to the receipt its JSON holds."""

    CANONICAL = "canonical"  # its own key, as this store writes it
    CLAMPED = "clamped"  # the slot 2**63-1 an older Rust store clamped it to


def receipt_slot(run_text: object, slot: object, receipt: RunBoundaryReceipt) -> ReceiptSlot | None:
    """The one rule for a receipt row's key (module docstring, Rule 2).

    Args:
        run_text: the row's `run_id` column, decoded.
        slot: the row's `sequence` column.
        receipt: the receipt the row's JSON holds.

    Returns:
        `CANONICAL` if the row is the receipt's own row, `CLAMPED` if it is
        the row an older Rust store clamped it to, `None` if it is neither
        (the row is damaged).
    """
    if run_text != str(receipt.run_id) or not isinstance(slot, int) or isinstance(slot, bool):
        return None
    if slot == sequence_to_i64(receipt.sequence):
        return ReceiptSlot.CANONICAL
    if slot == I64_MAX and receipt.sequence > I64_MAX:
        return ReceiptSlot.CLAMPED
    return None


class Text(bytes):
    """A TEXT value as the connection returns it: its bytes, undecoded (the
    connection's `text_factory`), so a value that is not UTF-8 reaches this
    module, which reports it as damage, rather than the `sqlite3` decoder."""

    __slots__ = ()


def name_of(value: object) -> str:
    """A schema name or PRAGMA result: undecodable bytes never match ours."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def where_runtime(runtime_id: LogicalRuntimeId) -> str:
    return f"runtime {str(runtime_id)!r}"


@final
class RowCodec:
    """Column values of the file at `path` to values; damage is `CorruptStore`
    naming the file, the table and the key."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def corrupt(self, table: str, where: str, message: str) -> CorruptStore:
        return CorruptStore(f"{self.path}: {table}, {where}: {message}")

    def blob(self, value: object, table: str, where: str) -> bytes:
        """A blob column's value; a TEXT value (another writer's) as its UTF-8.

        Raises:
            CorruptStore: the value is neither a BLOB nor UTF-8 TEXT.
        """
        if isinstance(value, Text):
            self.text(value, table, where)
            return bytes(value)
        if isinstance(value, bytes):
            return value
        raise self.corrupt(table, where, f"expected a BLOB, got {type(value).__name__}")

    def text(self, value: object, table: str, where: str) -> object:
        """A TEXT value decoded (`str`); any other value unchanged.

        Raises:
            CorruptStore: the TEXT value is not UTF-8.
        """
        if not isinstance(value, Text):
            return value
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.corrupt(table, where, f"a TEXT value that is not UTF-8: {exc}") from exc

    def decode(self, cls: type[T], value: object, table: str, where: str) -> T:
        """A JSON column's value as a `cls`.

        Raises:
            CorruptStore: the value is not a BLOB or UTF-8 TEXT of a `cls`.
        """
        try:
            return loads_json(cls, self.blob(value, table, where))
        except CodecError as exc:
            raise self.corrupt(table, where, str(exc)) from exc

    def runtime_key(self, raw: object, table: str) -> str:
        """A `runtime_id` column's value as a runtime id's text.

        Raises:
            CorruptStore: it is not UTF-8 TEXT of a non-empty id.
        """
        key = self.text(raw, table, f"runtime_id {raw!r}")
        if not isinstance(key, str) or not key:
            raise CorruptStore(f"{self.path}: {table}: runtime_id {key!r} is not an id")
        return key

    def input_row(
        self, runtime_id: LogicalRuntimeId, raw_key: object, value: object
    ) -> tuple[object, StoredInputState]:
        """An input-state row's decoded key and value, checked to agree.

        Raises:
            CorruptStore: the value does not decode, or the key does not name
                the input the value holds.
        """
        table = "runtime_input_states"
        shown = bytes(raw_key) if isinstance(raw_key, Text) else raw_key
        key = self.text(raw_key, table, f"{where_runtime(runtime_id)}, input_id {shown!r}")
        where = f"{where_runtime(runtime_id)}, input_id {key!r}"
        stored = self.decode(StoredInputState, value, table, where)
        try:
            matches = isinstance(key, str) and uuid.UUID(key) == stored.state.input_id.value
        except ValueError:
            matches = False
        if not matches:
            raise self.corrupt(table, where, f"the row holds input {stored.state.input_id}")
        return key, stored

    def receipt_row(
        self, runtime_id: LogicalRuntimeId, raw_run: object, slot: object, value: object
    ) -> tuple[RunBoundaryReceipt, ReceiptSlot]:
        """A receipt row's value and where it stands (`receipt_slot`).

        Raises:
            CorruptStore: the value does not decode, or the row is not the
                receipt's own row nor a clamped one (`receipt_slot`).
        """
        table = "runtime_boundary_receipts"
        run_text = self.text(raw_run, table, where_runtime(runtime_id))
        where = f"{where_runtime(runtime_id)}, run_id {run_text!r}, sequence column {slot!r}"
        receipt = self.decode(RunBoundaryReceipt, value, table, where)
        kind = receipt_slot(run_text, slot, receipt)
        if kind is None:
            raise self.corrupt(
                table,
                where,
                f"the row holds the receipt of run {receipt.run_id} sequence {receipt.sequence}",
            )
        return receipt, kind
