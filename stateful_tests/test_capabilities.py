"""The kit's capability flags (SPEC §8): what a backend declares unsupported
must raise `Unsupported`, everything else must match the model.

Each declaration is checked both ways: a backend that tells the truth passes
the machine, and a backend whose declaration is false (it claims what it
lacks, or implements what it declared unsupported, or claims durability it
does not have) is caught within the CI profile's example budget.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

import meerkat_actor as ma
from meerkat_actor.testing import Capabilities, RuntimeStoreMachine

# The conformance machine runs, within the CI budget, to each failure.
pytestmark = pytest.mark.slow

_UNSUPPORTED = {
    "persist_ops_lifecycle",
    "load_ops_lifecycle",
    "persist_auth_oauth_flow_snapshot",
    "load_auth_oauth_flow_snapshot",
    "update_auth_oauth_flow_snapshot",
}


class _WithoutOpsAndOAuth:
    """The in-memory actor store, less ops lifecycle and OAuth (as Meerkat's
    default `RuntimeStore` methods leave them out)."""

    def __init__(self, store: ma.RuntimeStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in _UNSUPPORTED:

            async def unsupported(*args: object, **kwargs: object) -> None:
                raise ma.Unsupported(name)

            return unsupported
        return getattr(self._store, name)


@asynccontextmanager
async def _open_partial() -> AsyncIterator[Any]:
    async with ma.open_store() as store:
        yield _WithoutOpsAndOAuth(store)


@asynccontextmanager
async def _open_forgetful(location: Path) -> AsyncIterator[ma.RuntimeStore]:
    """Claims a location but keeps everything in memory: not durable."""
    async with ma.open_store() as store:
        yield store


_RETENTION = {
    "list_runtimes",
    "load_boundary_receipts",
    "clear_session_snapshot",
    "delete_ops_lifecycle",
    "retire_input_payloads",
    "purge_runtime",
}


class _SeedOnly:
    """The in-memory actor store, less discovery and retention (SPEC §3b), as
    a backend written against the seed's interface: those methods, and a
    lifecycle commit with `expected=`, raise `failure` (`Unsupported` for a
    truthful backend); `commit_all` makes every lifecycle commit raise it."""

    failure: type[Exception] = ma.Unsupported
    commit_all = False

    def __init__(self, store: ma.RuntimeStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        failure = self.failure
        if name in _RETENTION:

            async def unsupported(*args: object, **kwargs: object) -> None:
                raise failure(name)

            return unsupported
        return getattr(self._store, name)

    async def commit_machine_lifecycle(self, *args: Any, **kwargs: Any) -> None:
        if "expected" in kwargs or self.commit_all:
            raise self.failure("commit_machine_lifecycle(expected=...)")
        await self._store.commit_machine_lifecycle(*args, **kwargs)


class _SeedOnlyNotImplemented(_SeedOnly):
    failure = NotImplementedError


class _SeedOnlyNoCommits(_SeedOnly):
    commit_all = True


def _opener(wrapper: type[_SeedOnly]) -> Any:
    @asynccontextmanager
    async def open_wrapped() -> AsyncIterator[Any]:
        async with ma.open_store() as store:
            yield wrapper(store)

    return open_wrapped


def _budget() -> settings:
    ci = settings.get_profile("ci")
    return settings(
        max_examples=ci.max_examples,
        stateful_step_count=ci.stateful_step_count,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def _failure(machine: type[RuntimeStoreMachine]) -> str:
    """Run `machine` within the CI budget; it must fail. Returns the message."""
    with pytest.raises(AssertionError) as info:
        run_state_machine_as_test(machine, settings=_budget())
    return str(info.value)


class PartialMachine(RuntimeStoreMachine):
    open_store = staticmethod(_open_partial)
    capabilities = Capabilities(ops_lifecycle=False, oauth_flow_snapshot=False)


TestPartialBackendDeclaredTruthfully = PartialMachine.TestCase
# A quarter of the profile's budget: the full machine runs against the same
# store in test_backends.py; this one only adds the Unsupported checks.
TestPartialBackendDeclaredTruthfully.settings = settings(
    max_examples=max(10, settings.default.max_examples // 4)
)


def test_a_backend_that_claims_what_it_lacks_is_caught() -> None:
    class Claims(RuntimeStoreMachine):
        open_store = staticmethod(_open_partial)

    message = _failure(Claims)
    assert "raised Unsupported" in message
    assert any(name in message for name in _UNSUPPORTED)


def test_a_backend_that_implements_what_it_declared_unsupported_is_caught() -> None:
    class Implements(RuntimeStoreMachine):
        open_store = staticmethod(ma.open_store)
        capabilities = Capabilities(ops_lifecycle=False)

    message = _failure(Implements)
    assert "ops_lifecycle" in message
    assert "the model raised Unsupported" in message


def test_a_store_that_is_not_durable_declared_durable_is_caught() -> None:
    class Forgetful(RuntimeStoreMachine):
        open_store_at = staticmethod(_open_forgetful)
        capabilities = Capabilities(durable=True)

    message = _failure(Forgetful)
    # The in-memory store has no authority key; and after a reopen it is empty.
    assert "auth_authority_key()" in message or "state differs" in message


def test_a_durable_store_declared_in_memory_fails_on_its_authority_key() -> None:
    class Undeclared(RuntimeStoreMachine):
        open_store_at = staticmethod(ma.open_store)
        capabilities = Capabilities()

    with pytest.raises(
        AssertionError, match=r"auth_authority_key\(\): a store that is not durable"
    ):
        run_state_machine_as_test(Undeclared, settings=_budget())


class SeedOnlyMachine(RuntimeStoreMachine):
    open_store = staticmethod(_opener(_SeedOnly))
    capabilities = Capabilities(retention=False)


TestSeedOnlyBackendDeclaredTruthfully = SeedOnlyMachine.TestCase
# A quarter of the budget, as for the partial backend above.
TestSeedOnlyBackendDeclaredTruthfully.settings = settings(
    max_examples=max(10, settings.default.max_examples // 4)
)


def test_retention_covers_the_lifecycle_commit_only_with_expected() -> None:
    caps = Capabilities(retention=False)
    assert not caps.supports("commit_machine_lifecycle", ["expected"])
    assert caps.supports("commit_machine_lifecycle")
    assert not any(caps.supports(name) for name in _RETENTION)
    # Without ops snapshots there is nothing to delete: a no-op, not Unsupported.
    assert Capabilities(ops_lifecycle=False).supports("delete_ops_lifecycle")
    assert Capabilities().supports("commit_machine_lifecycle", ["expected"])


def test_a_backend_that_claims_retention_it_lacks_is_caught() -> None:
    class Claims(RuntimeStoreMachine):
        open_store = staticmethod(_opener(_SeedOnly))

    message = _failure(Claims)
    assert "raised Unsupported" in message
    assert any(name in message for name in (*_RETENTION, "commit_machine_lifecycle"))


def test_a_backend_that_implements_retention_declared_unsupported_is_caught() -> None:
    class Implements(RuntimeStoreMachine):
        open_store = staticmethod(ma.open_store)
        capabilities = Capabilities(retention=False)

    message = _failure(Implements)
    assert "the model raised Unsupported" in message


def test_retention_declared_unsupported_must_raise_unsupported() -> None:
    class RaisesOther(RuntimeStoreMachine):
        open_store = staticmethod(_opener(_SeedOnlyNotImplemented))
        capabilities = Capabilities(retention=False)

    message = _failure(RaisesOther)
    assert "raised NotImplementedError" in message
    assert "the model raised Unsupported" in message


def test_without_retention_a_lifecycle_commit_without_expected_must_work() -> None:
    class NoCommits(RuntimeStoreMachine):
        open_store = staticmethod(_opener(_SeedOnlyNoCommits))
        capabilities = Capabilities(retention=False)

    message = _failure(NoCommits)
    assert message.startswith("commit_machine_lifecycle(")
    assert "the store raised Unsupported" in message
    # The call (before the answers; `bad_argument` says what it expected
    # first) passed no `expected=`.
    call = re.split(r": the store |: expected \w+, the store ", message)[0]
    assert "expected=" not in call, message
