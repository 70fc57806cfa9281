"""Small shared helpers with no semantics of their own."""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

__all__ = ["NoPublicConstructor"]

T = TypeVar("T")


class NoPublicConstructor(type):
    """Metaclass for classes built only by this package (as trio does it).

    `Cls(...)` raises `TypeError`; the package builds instances with
    `Cls._create(...)`.
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"{cls.__module__}.{cls.__qualname__} has no public constructor"
            + (f"; {cls.__construct_hint__}" if hasattr(cls, "__construct_hint__") else "")
        )

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        return super().__call__(*args, **kwargs)  # type: ignore[misc, no-any-return]
