"""Opaque JSON documents, frozen.

Some fields of the data model (`InputState.policy`, `PersistedOpsSnapshot.
authority_state`, ...) are JSON documents the store never interprets. They are
stored frozen so the values holding them stay immutable and hashable:

    JSON object -> pyrsistent.PMap with str keys
    JSON array  -> tuple
    string, bool, None, int, finite float -> themselves

`freeze` accepts plain JSON-compatible Python data (dicts, lists, tuples, and
already-frozen values) and rejects anything JSON cannot hold: non-str keys,
NaN and infinities, integers outside [-2**63, 2**64 - 1] (what Meerkat's
serde_json reads as an integer), and other types. `thaw` gives back plain
dicts and lists, ready for `json.dumps` or CBOR.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pyrsistent import PMap, pmap

from ._check import check_str

__all__ = ["freeze", "thaw"]

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_MAX_DEPTH = 128


def freeze(value: Any, name: str, _depth: int = 0) -> Any:
    """Return the frozen form of a JSON-compatible `value`.

    Args:
        value: plain JSON-compatible data.
        name: the field's name, used in error messages.

    Raises:
        TypeError: a value JSON cannot represent, or a non-str object key.
        ValueError: a non-finite float, an out-of-range integer, or nesting
            deeper than 128 levels.
    """
    if _depth > _MAX_DEPTH:
        raise ValueError(f"{name}: JSON document nested deeper than {_MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return check_str(value, name)
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"{name}: integer {value} is outside [-2**63, 2**64-1]")
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{name}: {value!r} is not a JSON number")
        return float(value)
    if isinstance(value, Mapping):
        items = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{name}: JSON object keys must be str, got {type(key).__name__}")
            items[check_str(key, f"{name} key")] = freeze(item, f"{name}.{key}", _depth + 1)
        return pmap(items)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(item, f"{name}[{i}]", _depth + 1) for i, item in enumerate(value))
    raise TypeError(f"{name}: {type(value).__name__} is not a JSON value")


def thaw(value: Any) -> Any:
    """Return plain dicts and lists for a frozen document. Object keys come
    in sorted order (a `PMap` keeps no order of its own, and its iteration
    order varies with the string hash seed): one value, one encoding."""
    if isinstance(value, PMap):
        return {key: thaw(value[key]) for key in sorted(value)}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value
