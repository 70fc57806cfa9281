"""Identifiers (SPEC §2): `meerkat_actor._ids`."""

from __future__ import annotations

import dataclasses
import time
import types
import uuid

import pytest

import meerkat_actor as ma
from meerkat_actor import _ids

UUID_KINDS = [ma.RunId, ma.InputId, ma.SessionId]

U = uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")


# --- LogicalRuntimeId -----------------------------------------------------------


def test_runtime_id_wraps_a_non_empty_string():
    rid = ma.LogicalRuntimeId("runtime-1")
    assert rid.value == "runtime-1"
    assert str(rid) == "runtime-1"


def test_runtime_id_accepts_any_non_empty_text():
    assert str(ma.LogicalRuntimeId("é ✓")) == "é ✓"
    assert str(ma.LogicalRuntimeId(" ")) == " "


def test_runtime_id_refuses_empty_string():
    with pytest.raises(ValueError, match="LogicalRuntimeId value must be a non-empty string"):
        ma.LogicalRuntimeId("")


@pytest.mark.parametrize("bad", [None, 5, b"runtime", ["r"]])
def test_runtime_id_refuses_non_str(bad):
    with pytest.raises(TypeError, match="LogicalRuntimeId value must be str"):
        ma.LogicalRuntimeId(bad)


def test_runtime_id_refuses_lone_surrogates():
    with pytest.raises(ValueError, match="LogicalRuntimeId value must be valid Unicode"):
        ma.LogicalRuntimeId("rt-\ud800")


def test_runtime_id_narrows_str_subclass():
    class Name(str):
        pass

    rid = ma.LogicalRuntimeId(Name("r"))
    assert type(rid.value) is str
    assert rid == ma.LogicalRuntimeId("r")


def test_runtime_id_equality_hash_and_order_by_value():
    a1, a2, b = ma.LogicalRuntimeId("a"), ma.LogicalRuntimeId("a"), ma.LogicalRuntimeId("b")
    assert a1 == a2
    assert hash(a1) == hash(a2)
    assert a1 != b
    assert a1 < b
    assert len({a1, a2, b}) == 2
    assert ma.LogicalRuntimeId("a") != "a"


def test_runtime_id_is_frozen():
    rid = ma.LogicalRuntimeId("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rid.value = "b"  # type: ignore[misc]


# --- UUID ids -----------------------------------------------------------------


@pytest.mark.parametrize("kind", UUID_KINDS)
def test_uuid_id_canonical_form_is_lowercase_hyphenated(kind):
    ident = kind(U)
    assert ident.value == U
    assert str(ident) == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11" in repr(ident)


@pytest.mark.parametrize("kind", [*UUID_KINDS, ma.LogicalRuntimeId])
def test_repr_is_runnable(kind):
    ident = kind.new() if kind is not ma.LogicalRuntimeId else kind("rt 'quoted'")
    namespace = {"UUID": uuid.UUID, kind.__name__: kind}
    assert eval(repr(ident), namespace) == ident


@pytest.mark.parametrize("kind", UUID_KINDS)
def test_uuid_id_accepts_any_version(kind):
    for u in (uuid.uuid1(), uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)):
        assert kind(u).value == u


@pytest.mark.parametrize("kind", UUID_KINDS)
@pytest.mark.parametrize("bad", [str(U), U.int, U.bytes, None])
def test_uuid_id_refuses_non_uuid(kind, bad):
    with pytest.raises(TypeError, match=rf"{kind.__name__} value must be uuid\.UUID.*parse\(\)"):
        kind(bad)


@pytest.mark.parametrize("kind", UUID_KINDS)
def test_uuid_id_equality_and_hash_by_value(kind):
    assert kind(U) == kind(uuid.UUID(str(U)))
    assert hash(kind(U)) == hash(kind(uuid.UUID(str(U))))
    assert kind(U) != kind(uuid.UUID(int=1))
    assert kind(U) != U
    assert kind(U) != str(U)


def test_uuid_id_kinds_never_mix():
    assert ma.RunId(U) != ma.InputId(U)
    assert ma.InputId(U) != ma.SessionId(U)
    assert ma.RunId(U) != ma.SessionId(U)
    assert len({ma.RunId(U), ma.InputId(U), ma.SessionId(U)}) == 3
    with pytest.raises(TypeError):
        _ = ma.RunId(U) < ma.InputId(U)  # type: ignore[operator]


@pytest.mark.parametrize("kind", UUID_KINDS)
def test_uuid_id_orders_by_uuid(kind):
    ints = [2**127, 0, 5, 2**128 - 1, 2**64, 2**63]
    ids = [kind(uuid.UUID(int=n)) for n in ints]
    assert [i.value.int for i in sorted(ids)] == sorted(ints)
    assert kind(uuid.UUID(int=1)) < kind(uuid.UUID(int=2))


@pytest.mark.parametrize("kind", UUID_KINDS)
def test_uuid_id_is_frozen(kind):
    ident = kind(U)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.value = uuid.uuid4()  # type: ignore[misc]


@pytest.mark.parametrize("kind", UUID_KINDS)
def test_parse_accepts_uuid_text_and_canonicalises(kind):
    assert kind.parse("A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11") == kind(U)
    assert kind.parse("a0eebc999c0b4ef8bb6d6bb9bd380a11") == kind(U)
    assert str(kind.parse("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}")) == str(U)
    assert isinstance(kind.parse(str(U)), kind)


@pytest.mark.parametrize("kind", UUID_KINDS)
@pytest.mark.parametrize("bad", ["", "nope", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "g" * 32])
def test_parse_refuses_non_uuid_text(kind, bad):
    with pytest.raises(ValueError, match=rf"{kind.__name__}\.parse\(\): not a UUID: "):
        kind.parse(bad)


@pytest.mark.parametrize("kind", UUID_KINDS)
@pytest.mark.parametrize("bad", [None, 5, U, U.bytes])
def test_parse_refuses_non_str(kind, bad):
    with pytest.raises(TypeError, match=rf"{kind.__name__}\.parse\(\) takes str, got "):
        kind.parse(bad)


# --- UUIDv7 ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", UUID_KINDS)
def test_new_makes_version_7_uuids(kind):
    ident = kind.new()
    assert isinstance(ident, kind)
    assert ident.value.version == 7
    assert ident.value.variant == uuid.RFC_4122


def test_new_embeds_the_current_unix_millisecond():
    before = time.time_ns() // 1_000_000
    ident = ma.RunId.new()
    after = time.time_ns() // 1_000_000
    # The clock may borrow a millisecond or two under a burst; allow a little slack.
    assert before <= ident.value.int >> 80 <= after + 5


def test_new_ids_increase_within_a_process():
    values = [ma.InputId.new() for _ in range(5000)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    # Different kinds share one clock, so they interleave in creation order too.
    mixed = [f().value for f in (ma.RunId.new, ma.InputId.new, ma.SessionId.new) * 100]
    assert mixed == sorted(mixed)


def _fake_clock(monkeypatch, readings):
    """Make `_ids` read successive nanosecond times from `readings`."""
    it = iter(readings)
    monkeypatch.setattr(_ids, "time", types.SimpleNamespace(time_ns=lambda: next(it)))


def test_uuid7_counter_keeps_order_within_one_millisecond(monkeypatch):
    clock = _ids._Uuid7Clock()
    # 5000 ids in one millisecond overflow the 12-bit counter: the clock must
    # borrow the next millisecond and still increase.
    _fake_clock(monkeypatch, [1_700_000_000_000 * 1_000_000] * 5000)
    values = [clock.next() for _ in range(5000)]
    assert values == sorted(values)
    assert len(set(values)) == 5000
    assert all(v.version == 7 for v in values)
    assert values[-1].int >> 80 > values[0].int >> 80


def test_uuid7_stays_increasing_when_the_clock_steps_back(monkeypatch):
    clock = _ids._Uuid7Clock()
    ms = 1_000_000
    _fake_clock(monkeypatch, [10_000 * ms, 10_001 * ms, 9_000 * ms, 9_500 * ms, 10_002 * ms])
    values = [clock.next() for _ in range(5)]
    assert values == sorted(values)
    assert len(set(values)) == 5
