"""What travels between a caller and the storage actor: envelopes and replies.

Rule 1: a reply slot is set exactly once, by whoever answers the command (the
actor, or the writer once the command's group is durable).

Rule 2: nothing here decides anything; it only carries commands and outcomes.

Theory of operation. A caller wraps its command in an `Envelope` with a fresh
`Reply` and sends it on the actor's channel. The actor applies it and hands
the envelope's `Outcome` (the reply and the error to deliver, `None` on
success) either to `deliver` at once (in memory) or to the writer, which
delivers it once the command's log record is durable. Both the actor and the
writer import this module; neither imports the other for it.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias

import trio

from ._core import Command

__all__ = ["Envelope", "Outcome", "Reply", "deliver"]


class Reply:
    """A one-shot reply slot: set exactly once, by the actor or the writer."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: BaseException | None = None

    def set(self, error: BaseException | None = None) -> None:
        self.error = error
        self.done.set()


class Envelope(NamedTuple):
    command: Command
    reply: Reply


Outcome: TypeAlias = tuple[Reply, BaseException | None]


def deliver(outcomes: list[Outcome]) -> None:
    """Answer each reply with its outcome."""
    for reply, error in outcomes:
        reply.set(error)
