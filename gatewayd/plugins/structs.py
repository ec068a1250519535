# -*- test-case-name: tests.unit.test_plugin_host_structs -*-
"""
Conversion between Python dicts and C{plugin.v1.Struct}, the payload of every
plugin RPC.

C{google.protobuf.Struct} and its json_format helpers cannot carry bytes; the
GatewayD SDK's Struct adds C{bytes_value = 7} for raw traffic, so we convert by
hand.  Mapping:

    ==========================  ==========================  =====================
    Python                      Value member                back to Python
    ==========================  ==========================  =====================
    None                        null_value                  None
    bool                        bool_value                  bool
    int (|n| <= 2**53), float   number_value (double)       int if whole, else float
    str                         string_value                str
    bytes/bytearray/memoryview  bytes_value                 bytes
    Mapping[str, ...]           struct_value                dict
    list/tuple                  list_value                  list
    ==========================  ==========================  =====================

Numbers: the wire has only doubles (Go's C{AsInterface()} gives float64), so a
count sent as 3 arrives as 3.0.  L{from_struct} turns whole doubles back into
C{int}: every integer up to 2**53 is exact in a double, and Python compares
C{3 == 3.0} anyway, so nothing is lost while hook code gets the ints it expects
(C{size}, C{connections}, hook numbers in C{GetPluginConfig}).  Non-finite and
fractional doubles stay floats.  Integers beyond 2**53 would be silently rounded
by GatewayD; we refuse them with C{ValueError} instead.

Text that is not valid UTF-8 must travel as bytes: the Go side rejects invalid
UTF-8 in C{string_value} when it unmarshals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatewayd.protos.plugin.v1.struct_pb2 import ListValue, Struct, Value

__all__ = ["to_struct", "from_struct", "to_value", "from_value", "Struct", "Value", "ListValue"]

#: Largest integer a double holds exactly.
MAX_SAFE_INT = 2 ** 53


def to_struct(data: Mapping[str, Any]) -> Struct:
    """
    Build a C{plugin.v1.Struct} from C{data}.

    @raise TypeError: a key is not a str, or a value has an unsupported type.
    @raise ValueError: an int does not fit a double exactly.
    """
    struct = Struct()
    _fill_struct(struct, data, "")
    return struct


def from_struct(struct: Struct) -> dict[str, Any]:
    """The dict C{struct} holds (see the module docstring for the mapping)."""
    return {key: from_value(value) for key, value in struct.fields.items()}


def to_value(obj: Any) -> Value:
    """Build one C{plugin.v1.Value}."""
    value = Value()
    _fill_value(value, obj, "")
    return value


def from_value(value: Value) -> Any:
    """The Python object C{value} holds.  A Value with no member set reads as None."""
    kind = value.WhichOneof("kind")
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and -MAX_SAFE_INT <= number <= MAX_SAFE_INT:
            return int(number)
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return from_struct(value.struct_value)
    if kind == "list_value":
        return [from_value(item) for item in value.list_value.values]
    return None


def _fill_struct(struct: Struct, data: Mapping[str, Any], path: str) -> None:
    fields = struct.fields
    for key, obj in data.items():
        if not isinstance(key, str):
            raise TypeError(f"struct key {path}{key!r} is not a str")
        # fields[key] creates the map entry in place: no intermediate Value copy.
        _fill_value(fields[key], obj, f"{path}{key}.")


def _fill_value(value: Value, obj: Any, path: str) -> None:
    # Order matters: bool is an int subclass; bytes first as traffic is the common case.
    if isinstance(obj, bytes):
        value.bytes_value = obj
    elif isinstance(obj, str):
        value.string_value = obj
    elif obj is None:
        value.null_value = 0
    elif isinstance(obj, bool):
        value.bool_value = obj
    elif isinstance(obj, int):
        if not -MAX_SAFE_INT <= obj <= MAX_SAFE_INT:
            raise ValueError(f"{path.rstrip('.') or 'value'}: integer {obj} does not fit a "
                             "double exactly (plugin numbers are float64)")
        value.number_value = obj
    elif isinstance(obj, float):
        value.number_value = obj
    elif isinstance(obj, (bytearray, memoryview)):
        value.bytes_value = bytes(obj)
    elif isinstance(obj, Mapping):
        value.struct_value.SetInParent()  # an empty dict must still be a struct_value
        _fill_struct(value.struct_value, obj, path)
    elif isinstance(obj, (list, tuple)):
        values = value.list_value
        values.SetInParent()
        for index, item in enumerate(obj):
            _fill_value(values.values.add(), item, f"{path}{index}.")
    else:
        raise TypeError(f"{path.rstrip('.') or 'value'}: cannot put "
                        f"{type(obj).__name__} in a plugin.v1.Value")

