"""Session codecs: how a store reads the session id out of a session snapshot.

The store treats a session snapshot as opaque bytes except for one question:
which session does it belong to (SPEC §4)? A session codec answers it. The
default, `MeerkatSessionCodec`, reads Meerkat's session JSON: an object whose
`"id"` is a UUID string; no other field is read or validated.

A codec must be a pure function of the bytes: no I/O, no clock, no state. It
signals an unreadable snapshot by raising `ValueError`. The store treats any
exception from a codec (and any result that is not a `SessionId`) as
"unreadable" and fails the write with `WriteFailed`, chained to it: a codec's
bug must not take the store down.
"""

from __future__ import annotations

import json
import uuid
from typing import Protocol, final, runtime_checkable

from ._ids import SessionId

__all__ = ["MeerkatSessionCodec", "SessionCodec", "check_session_codec"]


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
            # Meerkat writes UTF-8 JSON; json.loads(bytes) would also guess
            # UTF-16/32, which Meerkat cannot read back.
            document = json.loads(snapshot.decode("utf-8"))
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


def check_session_codec(session_codec: object) -> SessionCodec:
    """The `session_codec=` argument of the `open_*` functions: `None` gives
    the default `MeerkatSessionCodec`; anything else must be an object (not a
    class) with a `session_id` method.

    Raises:
        TypeError: naming `session_codec`.
    """
    if session_codec is None:
        return MeerkatSessionCodec()
    if isinstance(session_codec, type) or not isinstance(session_codec, SessionCodec):
        raise TypeError(
            "session_codec must be an object with a session_id(bytes) method,"
            f" got {session_codec!r}"
        )
    return session_codec
