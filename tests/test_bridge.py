"""TrioBridge: synchronous calls into a store living in a trio run in a thread."""

import threading
from contextlib import asynccontextmanager

import pytest
import trio
from _values import RT

import meerkat_actor as ma
from meerkat_actor.testing import TrioBridge


def test_calls_run_in_the_bridge_thread_and_return_results():
    bridge = TrioBridge(ma.open_store)
    try:
        store = bridge.resource
        bridge.call(store.persist_auth_oauth_flow_snapshot, b"one")
        assert bridge.call(store.load_auth_oauth_flow_snapshot) == b"one"

        async def thread_name() -> str:
            return threading.current_thread().name

        assert bridge.call(thread_name) == "trio-bridge"
    finally:
        bridge.close()
    assert not bridge.running


def test_exceptions_of_calls_reach_the_caller():
    bridge = TrioBridge(ma.open_store)
    try:
        with pytest.raises(TypeError, match="runtime_id must be LogicalRuntimeId"):
            bridge.call(bridge.resource.load_session_snapshot, "rt")
    finally:
        bridge.close()


def test_close_exits_the_context_and_the_store_is_closed():
    bridge = TrioBridge(ma.open_store)
    store = bridge.resource
    bridge.close()
    with pytest.raises(RuntimeError, match="not open"):
        _ = bridge.resource
    with pytest.raises(ma.StoreClosed):
        trio.run(store.load_session_snapshot, RT)


def test_abandon_cancels_the_run():
    exited = []

    @asynccontextmanager
    async def resource():
        try:
            yield "value"
        except BaseException as exc:
            exited.append(type(exc))
            raise

    bridge = TrioBridge(resource)
    assert bridge.resource == "value"
    bridge.abandon()
    assert exited == [trio.Cancelled]
    assert not bridge.running


def test_an_error_entering_the_context_is_raised_by_the_constructor():
    @asynccontextmanager
    async def broken():
        raise OSError("cannot open")
        yield  # pragma: no cover

    with pytest.raises(OSError, match="cannot open"):
        TrioBridge(broken)


def test_calls_after_close_are_refused():
    bridge = TrioBridge(ma.open_store)
    store = bridge.resource
    bridge.close()
    with pytest.raises(RuntimeError, match="not running"):
        bridge.call(store.load_auth_oauth_flow_snapshot)
