"""Small shared helpers with no semantics of their own."""

from __future__ import annotations

from abc import ABCMeta
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

__all__ = ["NoPublicConstructor", "unwrap_single_exception"]

T = TypeVar("T")


class NoPublicConstructor(ABCMeta):
    """Metaclass for classes built only by this package (as trio does it).

    `Cls(...)` raises `TypeError`; the package builds instances with
    `Cls._create(...)`. An `ABCMeta`, so a base of such classes can declare
    the hooks its subclasses must provide with `abc.abstractmethod`.
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor"
            + (f"; {cls.__construct_hint__}" if hasattr(cls, "__construct_hint__") else "")
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]


@contextmanager
def unwrap_single_exception() -> Iterator[None]:
    """Re-raise a group holding exactly one exception as that exception.

    For context managers whose nursery is an implementation detail: the
    caller's own exception comes out as itself, with its own cause and
    context, not wrapped in an `ExceptionGroup`.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        inner = group.exceptions[0]
        context, suppress = inner.__context__, inner.__suppress_context__
        try:
            raise inner
        finally:
            inner.__context__, inner.__suppress_context__ = context, suppress
            del inner, group
