"""The in-memory actor store against the reference model."""

import meerkat_actor as ma
from meerkat_actor.testing import RuntimeStoreMachine


class InMemoryStoreMachine(RuntimeStoreMachine):
    open_store = staticmethod(ma.open_store)


TestInMemoryStore = InMemoryStoreMachine.TestCase
