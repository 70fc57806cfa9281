"""meerkat_actor.testing: the conformance kit (SPEC §8).

- `ReferenceModel`: SPEC §4 as a small plain-Python program.
- `strategies`: Hypothesis strategies for every type of the data model.
- `RuntimeStoreMachine`: a Hypothesis stateful machine that runs any
  `RuntimeStore` against the model; subclass it and set `open_store` (a
  fresh store per call) or `open_store_at` (a durable store at a location,
  which adds reopen, checkpoint and crash rules).
- `assert_store_matches_model`: the machine's invariant as a coroutine, for
  tests that build a model of what was acknowledged and compare a store to it.
- `TrioBridge`: runs a trio-based store in a helper thread for synchronous
  callers (the machine's rules).

This subpackage needs the `test` extra (Hypothesis); the store itself does not.
"""

from . import _strategies as strategies
from ._bridge import TrioBridge
from ._machine import (
    Capabilities,
    RuntimeStoreMachine,
    UpdaterFailed,
    assert_store_matches_model,
)
from ._model import ReferenceModel

__all__ = [
    "Capabilities",
    "ReferenceModel",
    "RuntimeStoreMachine",
    "TrioBridge",
    "UpdaterFailed",
    "assert_store_matches_model",
    "strategies",
]
