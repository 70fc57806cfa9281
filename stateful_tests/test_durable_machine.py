"""The durable actor store against the reference model (SPEC §6, §8).

Besides every operation, the machine closes and reopens the store, checkpoints
it, and crashes it (cancels its trio run without a clean close) and reopens
it; the invariant then checks the recovered state against the model. One
variant checkpoints by size every 4 KiB of log, so snapshots are written (and
covered segments deleted) in the middle of runs, between and during writes.
"""

from pathlib import Path

import meerkat_actor as ma
from meerkat_actor.testing import RuntimeStoreMachine


class DurableStoreMachine(RuntimeStoreMachine):
    open_store_at = staticmethod(ma.open_store)


class SmallCheckpointsMachine(RuntimeStoreMachine):
    @staticmethod
    def open_store_at(location: Path):
        return ma.open_store(location / "store", checkpoint_bytes=4096)


TestDurableStore = DurableStoreMachine.TestCase
TestDurableStoreSmallCheckpoints = SmallCheckpointsMachine.TestCase
