"""Argument checks: the one place that validates values at the API boundary.

Value constructors (`_types.py`) and the store handles call these; each raises
`TypeError` for a wrong type and `ValueError` for a wrong value, with a message
that starts with the argument or field name.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

__all__ = [
    "U32_MAX",
    "U64_MAX",
    "check_bytes",
    "check_count",
    "check_instance",
    "check_optional_instance",
    "check_optional_str",
    "check_positive",
    "check_str",
    "check_sync_callable",
    "check_tuple",
    "check_u64",
    "check_utc",
]

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

T = TypeVar("T")


def _type_name(value: object) -> str:
    return type(value).__name__


def check_instance(value: Any, cls: type[T], name: str) -> T:
    """`value` must be an instance of `cls`."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be {cls.__name__}, got {_type_name(value)}")
    return value


def check_optional_instance(value: Any, cls: type[T], name: str) -> T | None:
    """`value` must be `None` or an instance of `cls`."""
    if value is not None and not isinstance(value, cls):
        raise TypeError(f"{name} must be {cls.__name__} or None, got {_type_name(value)}")
    return value


def check_str(value: Any, name: str) -> str:
    """`value` must be a `str` that UTF-8 can hold (no lone surrogates, which
    neither CBOR nor Meerkat's JSON can store); a subclass is narrowed to `str`."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, got {_type_name(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be valid Unicode text (it holds a lone surrogate)") from None
    return str(value)


def check_optional_str(value: Any, name: str) -> str | None:
    """`value` must be `None` or a `str`."""
    return None if value is None else check_str(value, f"{name}")


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be int, got {_type_name(value)}")
    return int(value)


def check_positive(value: Any, name: str) -> int:
    """`value` must be an `int` of at least 1 (`bool` is refused)."""
    number = _check_int(value, name)
    if number < 1:
        raise ValueError(f"{name} must be at least 1, got {number}")
    return number


def check_u64(value: Any, name: str) -> int:
    """`value` must be an `int` in [0, 2**64 - 1] (`bool` is refused)."""
    number = _check_int(value, name)
    if not 0 <= number <= U64_MAX:
        raise ValueError(f"{name} must be in [0, 2**64-1], got {number}")
    return number


def check_count(value: Any, name: str, maximum: int = U64_MAX) -> int:
    """`value` must be a non-negative `int` at most `maximum` (u64 by default;
    `U32_MAX` for the counts Meerkat keeps as u32)."""
    number = _check_int(value, name)
    if number < 0:
        raise ValueError(f"{name} must be non-negative, got {number}")
    if number > maximum:
        bound = "2**32-1" if maximum == U32_MAX else "2**64-1"
        raise ValueError(f"{name} must be at most {bound}, got {number}")
    return number


def check_bytes(value: Any, name: str) -> bytes:
    """`value` must be `bytes` (not `bytearray`, `memoryview` or `str`)."""
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, got {_type_name(value)}")
    return bytes(value)


def check_utc(value: Any, name: str) -> datetime:
    """`value` must be a timezone-aware `datetime`; it is returned in UTC.

    An aware datetime in another zone is converted to the same instant in
    UTC; a naive one is refused, since the store cannot know its zone.
    """
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be datetime, got {_type_name(value)}")
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {value.isoformat()}")
    if value.tzinfo is UTC and type(value) is datetime:
        return value
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name} is out of range in UTC: {value.isoformat()}") from None
    return datetime(
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, UTC
    )


def check_tuple(value: Any, cls: type[T], name: str) -> tuple[T, ...]:
    """`value` must be a sequence (list, tuple, ...) of `cls` instances; it is
    returned as a tuple. `str` and `bytes` are refused, and so are sets and
    iterators, whose order (which decides the winner among duplicates) is not
    the caller's."""
    if isinstance(value, (str, bytes, bytearray)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of {cls.__name__}, got {_type_name(value)}")
    items = tuple(value)
    for i, item in enumerate(items):
        check_instance(item, cls, f"{name}[{i}]")
    return items


def _is_async_callable(value: Any) -> bool:
    """Whether calling `value` gives a coroutine or an async generator: an
    `async def` function or method, a `functools.partial` of one, or an object
    whose `__call__` is one."""
    while isinstance(value, functools.partial):
        value = value.func
    if inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value):
        return True
    if isinstance(value, type):  # calling a class constructs an instance
        return False
    call = inspect.getattr_static(type(value), "__call__", None)
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def check_sync_callable(value: Any, name: str) -> Any:
    """`value` must be callable and not async: code the store runs inside an
    atomic step (the OAuth updater) cannot await."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {_type_name(value)}")
    if _is_async_callable(value):
        raise TypeError(
            f"{name} must be a plain function, got an async one"
            f" ({getattr(value, '__qualname__', _type_name(value))}): the store runs it inside"
            " one atomic step, which cannot await; compute what you need first, then pass"
            " a plain function that returns bytes"
        )
    return value
