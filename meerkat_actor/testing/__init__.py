"""meerkat_actor.testing: the conformance kit (SPEC §8).

- `ReferenceModel`: SPEC §4 as a small plain-Python program.
- `strategies`: Hypothesis strategies for every type of the data model.
- `RuntimeStoreMachine`: a Hypothesis stateful machine that runs any
  `RuntimeStore` against the model; subclass it and set `open_store` (a
  fresh store per call) or `open_store_at` (a durable store at a location,
  which adds reopen, checkpoint and crash rules).
- `Capabilities` (and `FULL_CAPABILITIES`): what a backend declares it
  supports; the machine expects `Unsupported` from the rest.
- `Increment`, `Append`, `MarkMissing`, `RaiseError`, `ReturnNotBytes`,
  `ReturnBytearray`, `ReturnAwaitable`, `UpdaterFailed`: the OAuth updaters
  the machine uses (printed failing programs name them).
- `OpenStore`, `OpenStoreAt`: the types of the machine's store openers.
- `assert_store_matches_model`: the machine's invariant as a coroutine, for
  tests that build a model of what was acknowledged and compare a store to it;
  `identical`, the comparison it uses (type by type, all the way down).
- `RUNTIME_IDS`, `NEAR_RUNTIME_IDS`, `INPUT_IDS`, `RUN_IDS`, `SESSION_IDS`,
  `SEQUENCES`: the id pools the machine draws from; failure messages name
  pool ids by these names (`INPUT_IDS[2]`).
- `TrioBridge`: runs a trio-based store in a helper thread for synchronous
  callers (the machine's rules).

This subpackage needs the `test` extra (Hypothesis); the store itself does not.
"""

from . import _strategies as strategies
from ._bridge import TrioBridge
from ._machine import (
    FULL_CAPABILITIES,
    INPUT_IDS,
    NEAR_RUNTIME_IDS,
    RUN_IDS,
    RUNTIME_IDS,
    SEQUENCES,
    SESSION_IDS,
    Append,
    Capabilities,
    Increment,
    MarkMissing,
    OpenStore,
    OpenStoreAt,
    RaiseError,
    ReturnAwaitable,
    ReturnBytearray,
    ReturnNotBytes,
    RuntimeStoreMachine,
    UpdaterFailed,
    assert_store_matches_model,
    identical,
)
from ._model import ReferenceModel

__all__ = [
    "FULL_CAPABILITIES",
    "INPUT_IDS",
    "NEAR_RUNTIME_IDS",
    "RUNTIME_IDS",
    "RUN_IDS",
    "SEQUENCES",
    "SESSION_IDS",
    "Append",
    "Capabilities",
    "Increment",
    "MarkMissing",
    "OpenStore",
    "OpenStoreAt",
    "RaiseError",
    "ReferenceModel",
    "ReturnAwaitable",
    "ReturnBytearray",
    "ReturnNotBytes",
    "RuntimeStoreMachine",
    "TrioBridge",
    "UpdaterFailed",
    "assert_store_matches_model",
    "identical",
    "strategies",
]
