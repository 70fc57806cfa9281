"""Session codecs: `meerkat_actor._session_codec`."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given, settings

import meerkat_actor as ma
from meerkat_actor.testing import _strategies as mst

SID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
CODEC = ma.MeerkatSessionCodec()


def test_reads_the_id_of_a_meerkat_session():
    snapshot = json.dumps({"id": SID, "messages": [], "metadata": {"x": 1}}).encode()
    session_id = CODEC.session_id(snapshot)
    assert session_id == ma.SessionId(uuid.UUID(SID))
    assert isinstance(session_id, ma.SessionId)


def test_only_the_id_is_read():
    # Other fields are opaque: wrong types there do not matter.
    assert CODEC.session_id(json.dumps({"id": SID, "messages": 5, "v": None}).encode()) == (
        ma.SessionId.parse(SID)
    )
    assert CODEC.session_id(json.dumps({"id": SID}).encode()) == ma.SessionId.parse(SID)


def test_uppercase_id_is_canonicalised():
    session_id = CODEC.session_id(json.dumps({"id": SID.upper()}).encode())
    assert str(session_id) == SID


@pytest.mark.parametrize(
    ("snapshot", "message"),
    [
        (b"", "session snapshot is not JSON"),
        (b"not json", "session snapshot is not JSON"),
        (b'{"id": ', "session snapshot is not JSON"),
        (b"\xff\xfe\x00garbage", "session snapshot is not JSON"),
        (b"[" * 100_000, "session snapshot is not JSON"),
        (json.dumps([{"id": SID}]).encode(), "must be a JSON object, got list"),
        (b'"a string"', "must be a JSON object, got str"),
        (b"null", "must be a JSON object, got NoneType"),
        (b"{}", 'session snapshot has no string "id" field'),
        (json.dumps({"session_id": SID}).encode(), 'no string "id" field'),
        (json.dumps({"id": None}).encode(), 'no string "id" field'),
        (json.dumps({"id": 12345}).encode(), 'no string "id" field'),
        (json.dumps({"id": "not-a-uuid"}).encode(), 'session snapshot "id" is not a UUID: \'not-a'),
        (json.dumps({"id": ""}).encode(), '"id" is not a UUID'),
    ],
)
def test_unreadable_snapshot_raises_value_error(snapshot, message):
    with pytest.raises(ValueError, match=message):
        CODEC.session_id(snapshot)


def test_codec_is_stateless_and_satisfies_the_protocol():
    assert isinstance(CODEC, ma.SessionCodec)
    assert repr(CODEC) == "MeerkatSessionCodec()"
    with pytest.raises(AttributeError):
        CODEC.cache = {}  # type: ignore[attr-defined]


def test_any_object_with_session_id_is_a_codec():
    class Fixed:
        def session_id(self, snapshot: bytes) -> ma.SessionId:
            return ma.SessionId.parse(SID)

    assert isinstance(Fixed(), ma.SessionCodec)
    assert not isinstance(object(), ma.SessionCodec)


@settings(max_examples=50)
@given(mst.session_ids())
def test_reads_back_any_session_id(session_id):
    snapshot = json.dumps({"id": str(session_id), "payload": "x"}).encode()
    assert CODEC.session_id(snapshot) == session_id


def test_utf16_json_and_a_bom_are_unreadable():
    # Meerkat writes UTF-8 JSON; other encodings would not read back there.
    codec = ma.MeerkatSessionCodec()
    document = '{"id": "00000000-0000-0000-0000-000000000001"}'
    assert str(codec.session_id(document.encode())) == "00000000-0000-0000-0000-000000000001"
    for encoded in (
        document.encode("utf-16"),
        document.encode("utf-32"),
        b"\xef\xbb\xbf" + document.encode(),
    ):
        with pytest.raises(ValueError, match="not JSON"):
            codec.session_id(encoded)
