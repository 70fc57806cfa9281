"""The public surface (SPEC §3, STYLE 4): exactly what the docs list, nothing else."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import meerkat_actor as ma

EXPECTED = {
    # stores
    "open_store",
    "open_sqlite_store",
    "open_postgres_store",
    "RuntimeStore",
    # graceful shutdown on SIGINT/SIGTERM (docs/operations.md#shutdown)
    "shutdown_on_signals",
    "StoreStatistics",
    # the handles open_store/open_sqlite_store yield (for annotations)
    "ActorStore",
    "PostgresStore",
    "SqliteStore",
    # session codecs (open_store(session_codec=...))
    "SessionCodec",
    "MeerkatSessionCodec",
    # identifiers
    "LogicalRuntimeId",
    "RunId",
    "InputId",
    "SessionId",
    # enums
    "RunApplyBoundary",
    "RuntimeState",
    "InputLifecycleState",
    "InputDurability",
    # values
    "RunBoundaryReceipt",
    "InputStateSeed",
    "InputState",
    "StoredInputState",
    "InputTerminalOutcome",
    "InputAbandonReason",
    "InputStateHistoryEntry",
    "SessionDelta",
    "PersistedOpsSnapshot",
    "MachineLifecycleCommit",
    # lifecycle
    "machine_transition",
    "LIFECYCLE_TRANSITIONS",
    # the input lifecycle table, which StoredInputState.transition follows
    "INPUT_LIFECYCLE_TRANSITIONS",
    # commit_machine_lifecycle(expected=...)'s default: compare nothing
    "UNCHECKED",
    "Unchecked",
    # errors
    "RuntimeStoreError",
    "WriteFailed",
    "ReadFailed",
    "SessionKeyMismatch",
    "NotFound",
    "Unsupported",
    "Internal",
    "ReceiptConflict",
    "NotRetirable",
    "RuntimeNotDestroyed",
    "LifecycleConflict",
    "StoreLocked",
    "StorePoisoned",
    "CorruptStore",
    "CommitOutcomeUnknown",
    "UnsupportedFormat",
    "StoreClosed",
    "InvalidTransition",
}

PACKAGE_DIR = Path(ma.__file__).parent


def test_all_is_exactly_the_documented_surface():
    assert len(ma.__all__) == len(set(ma.__all__)), "duplicate names in __all__"
    assert set(ma.__all__) == EXPECTED


def test_postgres_store_is_exported_without_importing_psycopg():
    assert "open_postgres_store" in ma.__all__
    assert callable(ma.open_postgres_store)
    # The core keeps its three dependencies: psycopg loads only when a
    # PostgreSQL store is opened.
    done = subprocess.run(
        [sys.executable, "-c", "import sys, meerkat_actor; print('psycopg' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "False"


def test_sqlite_store_is_exported():
    assert "open_sqlite_store" in ma.__all__
    assert callable(ma.open_sqlite_store)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_public_name_exists_and_comes_from_the_package(name):
    obj = getattr(ma, name)
    module = getattr(obj, "__module__", None)
    if module is not None and (inspect.isclass(obj) or inspect.isfunction(obj)):
        assert module.startswith("meerkat_actor."), f"{name} comes from {module}"


def test_star_import_gives_exactly_all():
    namespace: dict[str, object] = {}
    exec("from meerkat_actor import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(ma.__all__)


def test_every_error_derives_from_the_right_kind():
    direct = [ma.WriteFailed, ma.ReadFailed, ma.SessionKeyMismatch, ma.NotFound]
    direct += [ma.Unsupported, ma.Internal, ma.StoreClosed]
    for kind in direct:
        assert kind.__bases__ == (ma.RuntimeStoreError,), kind
    for kind in (ma.ReceiptConflict, ma.StoreLocked, ma.StorePoisoned, ma.CommitOutcomeUnknown):
        assert kind.__bases__ == (ma.WriteFailed,), kind
    assert ma.CorruptStore.__bases__ == (ma.ReadFailed,)
    assert ma.UnsupportedFormat.__bases__ == (ma.ReadFailed,)
    assert issubclass(ma.RuntimeStoreError, Exception)
    assert issubclass(ma.InvalidTransition, ValueError)
    assert not issubclass(ma.InvalidTransition, ma.RuntimeStoreError)


def test_every_error_documents_when_it_is_raised():
    for name in sorted(EXPECTED):
        obj = getattr(ma, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            assert obj.__doc__, f"{name} has no docstring"
            assert len(obj.__doc__.split()) >= 8, f"{name}'s docstring says too little"


def _private_or_dunder(name: str) -> bool:
    return name.startswith("_")


def _python_children(directory: Path) -> tuple[set[str], set[str]]:
    modules = {p.stem for p in directory.glob("*.py")}
    packages = {
        p.name
        for p in directory.iterdir()
        if p.is_dir() and p.name != "__pycache__" and any(p.glob("*.py"))
    }
    return modules, packages


def test_submodules_are_private_but_asyncio_and_testing_is_the_only_public_subpackage():
    modules, packages = _python_children(PACKAGE_DIR)
    assert "__init__" in modules
    public_modules = {m for m in modules if not _private_or_dunder(m)}
    # `meerkat_actor.asyncio`: the stores for asyncio programs (docs/asyncio.md).
    assert public_modules == {"asyncio"}, f"public modules: {public_modules}"
    public_packages = {p for p in packages if not _private_or_dunder(p)}
    assert public_packages == {"testing"}


def test_testing_subpackage_is_importable_and_its_modules_are_private():
    testing = importlib.import_module("meerkat_actor.testing")
    assert testing.__name__ == "meerkat_actor.testing"
    modules, packages = _python_children(PACKAGE_DIR / "testing")
    assert {m for m in modules if not _private_or_dunder(m)} == set()
    assert {p for p in packages if not _private_or_dunder(p)} == set()
    if hasattr(testing, "__all__"):
        for name in testing.__all__:
            assert hasattr(testing, name), name


@pytest.mark.parametrize(
    ("handle", "opener"),
    [(ma.ActorStore, "open_store"), (ma.SqliteStore, "open_sqlite_store")],
)
def test_store_handles_are_exported_without_a_public_constructor(handle, opener):
    with pytest.raises(TypeError, match=rf"no public constructor; use meerkat_actor\.{opener}\("):
        handle()
    with pytest.raises(TypeError, match="no public constructor"):
        handle(None, None, None)


async def test_the_handles_are_what_the_openers_yield_and_implement_the_protocol(tmp_path):
    async with ma.open_store() as memory, ma.open_store(tmp_path / "d") as durable:
        assert type(memory) is ma.ActorStore
        assert type(durable) is ma.ActorStore
        assert isinstance(durable, ma.RuntimeStore)
    async with ma.open_sqlite_store(tmp_path / "s.sqlite3") as sqlite:
        assert type(sqlite) is ma.SqliteStore
        assert isinstance(sqlite, ma.RuntimeStore)
        assert isinstance(sqlite.statistics(), ma.StoreStatistics)


def test_the_handles_share_one_documented_front():
    """Every contract method is written once: neither handle overrides it."""
    protocol = [n for n in vars(ma.RuntimeStore) if not n.startswith("_")]
    assert len(protocol) >= 15
    for handle in (ma.ActorStore, ma.SqliteStore):
        for name in protocol:
            method = getattr(handle, name)
            assert name not in vars(handle), f"{handle.__name__} overrides {name}"
            doc = method.__doc__ or ""
            assert "Raises:" in doc or "Returns:" in doc, f"{name} is not documented"


def test_version():
    assert isinstance(ma.__version__, str)
    assert ma.__version__.count(".") == 2
