"""dict <-> plugin.v1.Struct conversion (gatewayd.plugins.structs)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from gatewayd.plugins.structs import MAX_SAFE_INT, Struct, from_struct, from_value, to_struct, to_value
from gatewayd.protos.plugin.v1 import struct_pb2


def wire_round_trip(data: dict) -> dict:
    """Serialise to bytes and back, as the wire does."""
    return from_struct(Struct.FromString(to_struct(data).SerializeToString()))


def test_traffic_payload_round_trip_keeps_bytes_intact() -> None:
    payload = {
        "client": {"local": "0.0.0.0:15432", "remote": "127.0.0.1:45320"},
        "server": {"local": "127.0.0.1:50000", "remote": "127.0.0.1:5432"},
        "error": "",
        "request": b"Q\x00\x00\x00\x0eselect 1;\x00",
        "response": bytes(range(256)) * 4,
    }
    assert wire_round_trip(payload) == payload


def test_invalid_utf8_bytes_travel_as_bytes_value() -> None:
    raw = b"\xff\xfe\x00\xc3\x28 not utf-8"
    struct = to_struct({"cacheKey": raw})
    value = struct.fields["cacheKey"]
    assert value.WhichOneof("kind") == "bytes_value"
    encoded = struct.SerializeToString()
    # field 7, wire type 2: tag byte 0x3a followed by the length and the raw bytes
    assert b"\x3a" + bytes([len(raw)]) + raw in encoded
    assert wire_round_trip({"cacheKey": raw}) == {"cacheKey": raw}


def test_bytearray_and_memoryview_become_bytes() -> None:
    assert wire_round_trip({"a": bytearray(b"xy"), "b": memoryview(b"z")}) == {"a": b"xy", "b": b"z"}


def test_scalar_kinds() -> None:
    data = {"none": None, "t": True, "f": False, "i": 3, "neg": -7, "fl": 1.5, "s": "héllo",
            "empty_s": "", "empty_b": b""}
    back = wire_round_trip(data)
    assert back == data
    assert back["t"] is True and back["f"] is False
    assert type(back["i"]) is int and type(back["fl"]) is float
    assert type(back["empty_b"]) is bytes and type(back["empty_s"]) is str


def test_bool_is_not_a_number() -> None:
    assert to_value(True).WhichOneof("kind") == "bool_value"
    assert to_value(1).WhichOneof("kind") == "number_value"


def test_whole_doubles_decode_to_int_as_gatewayd_sends_float64() -> None:
    value = struct_pb2.Value(number_value=1000.0)
    assert from_value(value) == 1000 and type(from_value(value)) is int
    hooks = struct_pb2.Value(list_value=struct_pb2.ListValue(
        values=[struct_pb2.Value(number_value=n) for n in (14.0, 16.0, 18.0)]))
    assert from_value(hooks) == [14, 16, 18]


def test_non_finite_and_huge_doubles_stay_float() -> None:
    assert math.isnan(from_value(struct_pb2.Value(number_value=float("nan"))))
    assert from_value(struct_pb2.Value(number_value=float("inf"))) == float("inf")
    assert type(from_value(struct_pb2.Value(number_value=2.0 ** 60))) is float


def test_int_beyond_double_precision_is_refused() -> None:
    assert wire_round_trip({"n": MAX_SAFE_INT}) == {"n": MAX_SAFE_INT}
    with pytest.raises(ValueError, match=r"a\.b: integer"):
        to_struct({"a": {"b": MAX_SAFE_INT + 1}})


def test_nested_dicts_and_lists() -> None:
    data = {"__signals__": [{"name": "terminate", "metadata": {"terminate": True}},
                            {"name": "log", "metadata": {"level": "debug", "cacheKey": b"\x00\xff"}},
                            {"name": "passthrough", "metadata": None}],
            "empty_list": [], "empty_dict": {}, "tuple": (1, "two", [b"3"])}
    back = wire_round_trip(data)
    assert back == {**data, "tuple": [1, "two", [b"3"]]}


def test_empty_containers_keep_their_kind() -> None:
    struct = to_struct({"l": [], "d": {}})
    assert struct.fields["l"].WhichOneof("kind") == "list_value"
    assert struct.fields["d"].WhichOneof("kind") == "struct_value"


def test_unset_value_reads_as_none() -> None:
    assert from_value(struct_pb2.Value()) is None


def test_unsupported_types_are_refused_with_their_path() -> None:
    with pytest.raises(TypeError, match=r"x\.1: cannot put object"):
        to_struct({"x": [1, object()]})
    with pytest.raises(TypeError, match="not a str"):
        to_struct({1: "a"})  # type: ignore[dict-item]


def test_google_struct_fields_are_wire_compatible() -> None:
    """Fields 1-6 match google.protobuf.Struct: a Go host without bytes reads them unchanged."""
    from google.protobuf import struct_pb2 as google_struct

    data = {"a": "x", "n": 2, "b": True, "z": None, "l": [1, "y"], "d": {"k": "v"}}
    google = google_struct.Struct.FromString(to_struct(data).SerializeToString())
    assert dict(google) == {"a": "x", "n": 2.0, "b": True, "z": None, "l": [1.0, "y"], "d": {"k": "v"}}


json_like = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INT, MAX_SAFE_INT)
    | st.floats(allow_nan=False).filter(lambda f: not f.is_integer())
    | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


@given(st.dictionaries(st.text(max_size=8), json_like, max_size=6))
def test_round_trip_property(data: dict) -> None:
    assert wire_round_trip(data) == data
