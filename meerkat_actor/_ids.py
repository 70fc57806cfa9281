"""Identifiers (SPEC §2).

`LogicalRuntimeId` wraps a non-empty string. `RunId`, `InputId` and
`SessionId` wrap a `uuid.UUID` of any version; `.new()` makes a UUIDv7
(RFC 9562: 48-bit Unix milliseconds, then random bits, with a counter in the
12 `rand_a` bits so ids made in one process within one millisecond still sort
in creation order). Equality, hashing and ordering are by value and never mix
kinds: `RunId(u) != InputId(u)`. `str()` gives the canonical form: the runtime
id itself, or the lowercase hyphenated UUID.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Self, final

from ._check import check_str

__all__ = ["InputId", "LogicalRuntimeId", "RunId", "SessionId", "uuid7"]


class _Uuid7Clock:
    """Process-wide UUIDv7 source: millisecond timestamp plus a counter."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def next(self) -> uuid.UUID:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                # Same (or a stepped-back) millisecond: keep the last timestamp
                # and count up in rand_a; on overflow borrow the next millisecond.
                ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:
                    ms += 1
                    self._counter = 0
            else:
                self._counter = int.from_bytes(os.urandom(2), "big") & 0x3FF
            self._last_ms = ms
            counter = self._counter
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
        return uuid.UUID(int=value)


_UUID7_CLOCK = _Uuid7Clock()


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7; successive calls in one process sort increasing."""
    return _UUID7_CLOCK.next()


@final
@dataclass(frozen=True, slots=True, order=True)
class LogicalRuntimeId:
    """The name of one runtime in a store: a non-empty string."""

    value: str
    # Ids key every map of the store state: hash once, not on every lookup.
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = check_str(self.value, "LogicalRuntimeId value")
        if not text:
            raise ValueError("LogicalRuntimeId value must be a non-empty string")
        object.__setattr__(self, "value", text)
        object.__setattr__(self, "_hash", hash(text))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[object, ...]:
        # The str hash differs between processes: rebuild, never copy `_hash`.
        return (type(self), (self.value,))

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return f"LogicalRuntimeId({self.value!r})"


@dataclass(frozen=True, slots=True, order=True)
class _UuidId:
    value: uuid.UUID
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.value, uuid.UUID):
            raise TypeError(
                f"{type(self).__name__} value must be uuid.UUID, got {type(self.value).__name__}"
                f" (use {type(self).__name__}.parse() for a string)"
            )
        object.__setattr__(self, "_hash", hash(self.value.int))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.value,))

    @classmethod
    def new(cls) -> Self:
        """A fresh, time-ordered id (UUIDv7)."""
        return cls(uuid7())

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a UUID string (any form `uuid.UUID` accepts).

        Raises:
            TypeError: `text` is not a `str`.
            ValueError: `text` is not a UUID.
        """
        if not isinstance(text, str):
            raise TypeError(f"{cls.__name__}.parse() takes str, got {type(text).__name__}")
        try:
            return cls(uuid.UUID(text))
        except ValueError:
            raise ValueError(f"{cls.__name__}.parse(): not a UUID: {text!r}") from None

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        # Runnable with `from uuid import UUID`, as Hypothesis prints failing steps.
        return f"{type(self).__name__}(UUID('{self.value}'))"


@final
class RunId(_UuidId):
    """Identifies one run of a runtime."""

    __slots__ = ()


@final
class InputId(_UuidId):
    """Identifies one input of a runtime; input states are keyed and sorted by it."""

    __slots__ = ()


@final
class SessionId(_UuidId):
    """Identifies a session; read from a session snapshot by the session codec."""

    __slots__ = ()
