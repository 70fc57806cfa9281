"""Session codecs: how a store reads the session id out of a session snapshot.

The store treats a session snapshot as opaque bytes except for one question:
which session does it belong to (SPEC §4)? A session codec answers it. The
default, `MeerkatSessionCodec`, reads Meerkat's session JSON: an object whose
`"id"` is a UUID string; no other field is read or validated.

A codec must be a pure function of the bytes: no I/O, no clock, no state. It
signals an unreadable snapshot by raising `ValueError` (the store turns that
into `WriteFailed`); any other exception is a bug in the codec.
"""

from __future__ import annotations

import json
import uuid
from typing import Protocol, final, runtime_checkable

from ._ids import SessionId

__all__ = ["MeerkatSessionCodec", "SessionCodec"]


@runtime_checkable
class SessionCodec(Protocol):
    """Reads the session id of a serialized session snapshot."""

    def session_id(self, snapshot: bytes) -> SessionId:
        """Return the id of the session serialized in `snapshot`.

        Raises:
            ValueError: `snapshot` is not a session this codec can read.
        """
        ...


@final
class MeerkatSessionCodec:
    """The default codec: Meerkat session JSON, `{"id": "<uuid>", ...}`."""

    __slots__ = ()

    def session_id(self, snapshot: bytes) -> SessionId:
        try:
            document = json.loads(snapshot)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise ValueError(f"session snapshot is not JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise ValueError(
                f"session snapshot must be a JSON object, got {type(document).__name__}"
            )
        raw = document.get("id")
        if not isinstance(raw, str):
            raise ValueError('session snapshot has no string "id" field')
        try:
            return SessionId(uuid.UUID(raw))
        except ValueError:
            raise ValueError(f'session snapshot "id" is not a UUID: {raw!r}') from None

    def __repr__(self) -> str:
        return "MeerkatSessionCodec()"
