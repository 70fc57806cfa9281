"""Opaque JSON documents, frozen: `meerkat_actor._frozen`."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from pyrsistent import PMap, pmap

from meerkat_actor._frozen import freeze, thaw
from meerkat_actor.testing import _strategies as mst


@pytest.mark.parametrize("scalar", [None, True, False, 0, -(2**63), 2**64 - 1, 1.5, -0.0, "", "é"])
def test_scalars_freeze_to_themselves(scalar):
    frozen = freeze(scalar, "doc")
    assert frozen == scalar
    assert type(frozen) is type(scalar)


def test_bool_stays_bool_and_is_not_confused_with_int():
    assert freeze(True, "doc") is True
    assert freeze([1, True], "doc") == (1, True)
    assert type(freeze([1, True], "doc")[1]) is bool


def test_object_becomes_pmap_and_array_becomes_tuple():
    frozen = freeze({"a": [1, {"b": [None, "x"]}], "c": {}}, "doc")
    assert isinstance(frozen, PMap)
    assert isinstance(frozen["a"], tuple)
    assert isinstance(frozen["a"][1], PMap)
    assert frozen == pmap({"a": (1, pmap({"b": (None, "x")})), "c": pmap()})
    hash(frozen)


def test_tuples_and_frozen_values_are_accepted():
    doc = {"a": (1, 2), "b": pmap({"c": [3]})}
    frozen = freeze(doc, "doc")
    assert frozen == pmap({"a": (1, 2), "b": pmap({"c": (3,)})})
    assert freeze(frozen, "doc") == frozen


def test_subclasses_are_narrowed_to_plain_types():
    class Text(str):
        pass

    class Number(int):
        pass

    frozen = freeze({Text("k"): [Text("v"), Number(3)]}, "doc")
    assert frozen == pmap({"k": ("v", 3)})
    key = next(iter(frozen))
    assert type(key) is str
    assert type(frozen["k"][0]) is str
    assert type(frozen["k"][1]) is int


def test_thaw_gives_plain_dicts_and_lists():
    doc = {"a": [1, {"b": [None, "x", 2.5]}], "c": {}, "d": True}
    thawed = thaw(freeze(doc, "doc"))
    assert thawed == doc
    assert type(thawed) is dict
    assert type(thawed["a"]) is list
    assert type(thawed["a"][1]) is dict
    assert json.loads(json.dumps(thawed)) == doc


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused_with_their_path(bad):
    with pytest.raises(ValueError, match=r"policy\.a\[1\]: .* is not a JSON number"):
        freeze({"a": [0, bad]}, "policy")
    with pytest.raises(ValueError, match=r"policy: .* is not a JSON number"):
        freeze(bad, "policy")


@pytest.mark.parametrize("bad", [-(2**63) - 1, 2**64, 10**30, -(10**30)])
def test_out_of_range_integers_are_refused(bad):
    with pytest.raises(ValueError, match=r"doc\.n: integer .* is outside \[-2\*\*63, 2\*\*64-1\]"):
        freeze({"n": bad}, "doc")


@pytest.mark.parametrize("key", [1, None, 1.5, ("a",), b"k"])
def test_non_str_keys_are_refused(key):
    with pytest.raises(TypeError, match="doc: JSON object keys must be str, got"):
        freeze({key: 1}, "doc")


@pytest.mark.parametrize("bad", [b"bytes", bytearray(b"x"), {1, 2}, frozenset(), object(), 1j])
def test_non_json_types_are_refused(bad):
    with pytest.raises(TypeError, match=r"doc\[0\]: .* is not a JSON value"):
        freeze([bad], "doc")


def test_strings_must_be_valid_unicode():
    with pytest.raises(ValueError, match=r"doc\[1\] must be valid Unicode"):
        freeze(["ok", "\ud83d"], "doc")
    with pytest.raises(ValueError, match="doc key must be valid Unicode"):
        freeze({"\udc00": 1}, "doc")
    assert freeze("\U0001f600", "doc") == "\U0001f600"


def test_nesting_is_bounded():
    deep: object = "leaf"
    for _ in range(128):
        deep = [deep]
    assert thaw(freeze(deep, "doc")) == deep
    too_deep: object = "leaf"
    for _ in range(200):
        too_deep = {"a": too_deep}
    with pytest.raises(ValueError, match="nested deeper than 128 levels"):
        freeze(too_deep, "doc")


def test_freezing_does_not_alias_the_input():
    doc = {"a": [1]}
    frozen = freeze(doc, "doc")
    doc["a"].append(2)
    doc["b"] = 3
    assert frozen == pmap({"a": (1,)})


@settings(max_examples=60)
@given(mst.json_documents())
def test_freeze_thaw_round_trip(doc):
    frozen = freeze(doc, "doc")
    hash(frozen)
    assert freeze(frozen, "doc") == frozen
    assert thaw(frozen) == doc
    # What JSON can carry survives a real JSON round trip.
    assert freeze(json.loads(json.dumps(thaw(frozen))), "doc") == frozen
