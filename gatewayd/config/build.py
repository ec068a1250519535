# -*- test-case-name: tests.unit.test_config_loader -*-
"""
Plain data (parsed YAML, JSON, a plugin's flat keys) to schema dataclasses.

Every object, group and block starts from the schema defaults and the data
overrides what it names, so anything declared in a file gets the full set of
defaults (GatewayD forgets them for a non-default group's C{writes} block).
An object the data names replaces the default groups: declaring
C{servers: {tenant: ...}} means exactly that one server, not C{tenant} plus
a default listener on C{0.0.0.0:15432} as koanf's merge gives GatewayD.

Types are checked strictly and every problem is collected, not just the first.
"""

from __future__ import annotations

from typing import Any, Callable

from gatewayd.config.durations import parse_duration
from gatewayd.config.schema import GlobalConfig, PluginsConfig
from gatewayd.config.shape import (
    BLOCKS, BOOL, DUR, FLOAT, GROUPS, INT, MAPPING, OBJECT, RECORDS, SCALARS, STR, STRINGS,
    REQUIRED, Slot, child, describe, did_you_mean, item, slot_for, slots, valid_name,
)
from gatewayd.errors import ConfigError

_EXPECTED = {
    BOOL: "true or false",
    INT: "an integer",
    FLOAT: "a number",
    STR: "a string",
}


class Builder:
    """
    Builds dataclasses from plain data and collects L{ConfigError}s.

    @param path: the file (or source) named in errors.
    @param lenient_numbers: accept integral floats where integers are expected;
        hook payloads travel as protobuf C{Struct}s, whose numbers are doubles.
    """

    def __init__(self, path: str | None, lenient_numbers: bool = False) -> None:
        self.path = path
        self.lenient_numbers = lenient_numbers
        self.errors: list[ConfigError] = []

    def fail(self, where: str, problem: str) -> None:
        self.errors.append(ConfigError(self.path, where, problem))

    def record(self, cls: type, data: object, where: str) -> Any:
        """An instance of C{cls}: its defaults overridden by mapping C{data}."""
        obj = cls()
        if data is None:
            return obj
        if not isinstance(data, dict):
            self.fail(where, f"expected a mapping of keys, got {describe(data)}")
            return obj
        present = set()
        for name, value in data.items():
            if not isinstance(name, str):
                self.fail(child(where, str(name)), "unknown key")
                continue
            slot = slot_for(cls, name)
            if slot is None:
                hint = did_you_mean(name, [s.key for s in slots(cls)])
                self.fail(child(where, name), f"unknown key{hint}")
                continue
            present.add(name)
            ok, converted = self.value(slot, value, child(where, name))
            if ok:
                setattr(obj, slot.name, converted)
        for required in REQUIRED.get(cls, ()):
            if required not in present:
                self.fail(child(where, required), "required key is missing")
        return obj

    def value(self, slot: Slot, value: object, where: str) -> tuple[bool, Any]:
        """Convert C{value} for C{slot}: C{(True, converted)} or C{(False, None)} after an error."""
        if value is None:
            return self._null(slot, where)
        kind = slot.kind
        if kind in SCALARS:
            return self.scalar(kind, value, where)
        if kind == STRINGS:
            return self.strings(value, where)
        if kind == MAPPING:
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                self.fail(where, f"expected a mapping, got {describe(value)}")
                return False, None
            return True, dict(value)
        if kind == OBJECT:
            return True, self.record(slot.cls, value, where)
        if kind == RECORDS:
            return self.records(slot.cls, value, where)
        if kind == GROUPS:
            return self.groups(value, where, "group", lambda v, w: self.record(slot.cls, v, w))
        if kind == BLOCKS:
            def blocks(v: object, w: str) -> dict:
                ok, result = self.groups(
                    {} if v is None else v, w, "block", lambda b, bw: self.record(slot.cls, b, bw))
                return result if ok else {}
            return self.groups(value, where, "group", blocks)
        raise AssertionError(kind)

    def _null(self, slot: Slot, where: str) -> tuple[bool, Any]:
        """A key written with no value: the default, except where that would hide a mistake."""
        if slot.optional:
            return True, None
        if slot.kind == OBJECT:
            return True, slot.cls()
        if slot.kind in (STRINGS, RECORDS):
            return True, []
        if slot.kind == MAPPING:
            return True, {}
        if slot.kind in (GROUPS, BLOCKS):
            return False, None  # as if absent: the default groups stay
        self.fail(where, "has no value (remove the key to use the default)")
        return False, None

    def scalar(self, kind: str, value: object, where: str) -> tuple[bool, Any]:
        """Check one scalar against its kind."""
        if self.lenient_numbers and isinstance(value, float) and value.is_integer() and kind in (INT, DUR):
            value = int(value)
        if kind == DUR:
            try:
                return True, parse_duration(value)
            except ValueError as e:
                self.fail(where, str(e))
                return False, None
        ok = {
            BOOL: isinstance(value, bool),
            INT: isinstance(value, int) and not isinstance(value, bool),
            FLOAT: isinstance(value, (int, float)) and not isinstance(value, bool),
            STR: isinstance(value, str),
        }[kind]
        if not ok:
            hint = " (quote it)" if kind == STR and isinstance(value, (bool, int, float)) else ""
            self.fail(where, f"expected {_EXPECTED[kind]}, got {describe(value)}{hint}")
            return False, None
        return True, float(value) if kind == FLOAT else value

    def strings(self, value: object, where: str) -> tuple[bool, Any]:
        if not isinstance(value, list):
            self.fail(where, f"expected a list of strings, got {describe(value)}")
            return False, None
        ok = True
        for i, element in enumerate(value):
            if not isinstance(element, str):
                hint = " (quote it)" if isinstance(element, (bool, int, float)) else ""
                self.fail(item(where, i), f"expected a string, got {describe(element)}{hint}")
                ok = False
        return ok, list(value) if ok else None

    def records(self, cls: type, value: object, where: str) -> tuple[bool, Any]:
        if not isinstance(value, list):
            self.fail(where, f"expected a list, got {describe(value)}")
            return False, None
        result = []
        for i, element in enumerate(value):
            if not isinstance(element, dict):
                self.fail(item(where, i), f"expected a mapping of keys, got {describe(element)}")
                continue
            result.append(self.record(cls, element, item(where, i)))
        return True, result

    def groups(self, value: object, where: str, noun: str,
               build: Callable[[object, str], Any]) -> tuple[bool, Any]:
        """
        A map of group (or block) names: names are folded to lower case as
        GatewayD does, but two names that fold together are an error (GatewayD
        merges them silently).
        """
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping of {noun} names, got {describe(value)}")
            return False, None
        result: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for name, member in value.items():
            if not isinstance(name, str):
                self.fail(child(where, str(name)),
                          f"{noun} name must be a string, got {describe(name)} (quote it)")
                continue
            folded = name.lower()
            if folded in spelled:
                self.fail(child(where, name),
                          f"duplicate {noun} name: '{spelled[folded]}' is also declared "
                          f"and {noun} names are case-insensitive")
                continue
            spelled[folded] = name
            if not valid_name(folded):
                self.fail(child(where, name),
                          f"bad {noun} name: use letters, digits, '-' and '_', "
                          "starting with a letter or digit")
                continue
            result[folded] = build(member, child(where, folded))
        return True, result


def build_global(data: dict | None, path: str | None,
                 lenient_numbers: bool = False) -> tuple[GlobalConfig, list[ConfigError]]:
    """The global config from parsed YAML (None: all defaults)."""
    builder = Builder(path, lenient_numbers)
    return builder.record(GlobalConfig, data, ""), builder.errors


def build_plugins(data: dict | None, path: str | None) -> tuple[PluginsConfig, list[ConfigError]]:
    """The plugins config from parsed YAML (None: all defaults)."""
    builder = Builder(path)
    return builder.record(PluginsConfig, data, ""), builder.errors
