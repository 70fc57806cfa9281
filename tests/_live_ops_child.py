"""A host process for tests/test_live_ops.py: writes to a durable store until
SIGINT or SIGTERM stops it, the way docs/operations.md#shutdown says a host
should (`shutdown_on_signals`), then closes the store and exits 0.

    python tests/_live_ops_child.py DIR {trio|asyncio} CHECKPOINT_BYTES PAUSE

Write n (n = 1, 2, ...) is two acknowledged writes: the input state with id
`InputId(UUID(int=n))` for runtime `w`, then the OAuth flow snapshot
`b"n"`; after both returned it prints `ACK n` (flushed). Every state a
reader may see is therefore: inputs 1..c, and perhaps c + 1, with the
snapshot saying c. When stopped it prints `STOPPED <signal name>`.
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import trio

import meerkat_actor as ma
from meerkat_actor import asyncio as ma_asyncio
from meerkat_actor._shutdown import Shutdown, asyncio_shutdown_on_signals, shutdown_on_signals

RUNTIME = ma.LogicalRuntimeId("w")


def input_id(n: int) -> ma.InputId:
    return ma.InputId(uuid.UUID(int=n))


async def work(store: ma.ActorStore | ma_asyncio.AsyncioActorStore, pause: float, sleep) -> None:
    n = 0
    while True:
        n += 1
        await store.persist_input_state(RUNTIME, ma.StoredInputState.new_accepted(input_id(n)))
        await store.persist_auth_oauth_flow_snapshot(str(n).encode())
        print("ACK", n, flush=True)
        await sleep(pause)


def stopped(shutdown: Shutdown) -> None:
    name = shutdown.signal.name if shutdown.signal is not None else "-"
    print("STOPPED", name, flush=True)


async def main_trio(directory: str, checkpoint_bytes: int, pause: float) -> None:
    async with (
        ma.open_store(directory, checkpoint_bytes=checkpoint_bytes) as store,
        shutdown_on_signals() as shutdown,  # inside the store's block
    ):
        print("OPEN", flush=True)
        await work(store, pause, trio.sleep)
    stopped(shutdown)


async def main_asyncio(directory: str, checkpoint_bytes: int, pause: float) -> None:
    async with (
        ma_asyncio.open_store(directory, checkpoint_bytes=checkpoint_bytes) as store,
        asyncio_shutdown_on_signals() as shutdown,  # inside the store's block
    ):
        print("OPEN", flush=True)
        await work(store, pause, asyncio.sleep)
    stopped(shutdown)


if __name__ == "__main__":
    directory, flavour, checkpoint_bytes, pause = sys.argv[1:5]
    if flavour == "trio":
        trio.run(main_trio, directory, int(checkpoint_bytes), float(pause))
    else:
        asyncio.run(main_asyncio(directory, int(checkpoint_bytes), float(pause)))
