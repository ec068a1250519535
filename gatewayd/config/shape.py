# -*- test-case-name: tests.unit.test_config_loader -*-
"""
What each schema field is, in one place.

The loader, the environment overrides, validation, the JSON Schema, rendering
and C{to_plain} all walk the dataclasses of L{gatewayd.config.schema}.  This
module classifies every field once (scalar, duration, list, group map...) so
that they all agree on the shape of the tree.
"""

from __future__ import annotations

import difflib
import functools
import re
import types
import typing
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

from gatewayd.config import schema
from gatewayd.config.schema import DURATION, yaml_key

# Field kinds.
BOOL, INT, FLOAT, STR, DUR = "bool", "int", "float", "str", "duration"
STRINGS = "strings"    # list[str]
RECORDS = "records"    # list[<dataclass>]
MAPPING = "mapping"    # dict[str, Any], free-form
OBJECT = "object"      # one nested dataclass
GROUPS = "groups"      # dict[group, <dataclass>]
BLOCKS = "blocks"      # dict[group, dict[block, <dataclass>]]

SCALARS = frozenset({BOOL, INT, FLOAT, STR, DUR})

#: Group and block names: lower case (after folding), usable as koanf path
#: segments (no dots) and as YAML keys without quoting.
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
_NAME = re.compile(NAME_PATTERN)

#: Keys that list entries must spell out; the dataclass default alone is not enough.
REQUIRED: dict[type, tuple[str, ...]] = {
    schema.LoadBalancingRule: ("condition", "distribution"),
    schema.Distribution: ("proxyName",),
    schema.Policy: ("name", "policy"),
    schema.PluginEntry: ("name",),
}


@dataclass(frozen=True)
class Slot:
    """One dataclass field, classified."""

    name: str            # Python attribute
    key: str             # YAML key
    kind: str
    cls: type | None     # the dataclass inside OBJECT/RECORDS/GROUPS/BLOCKS
    optional: bool       # None is a legal value (absent in YAML)
    enum: tuple[str, ...] | None
    doc: str
    ours: bool


@functools.cache
def slots(cls: type) -> tuple[Slot, ...]:
    """The classified fields of schema dataclass C{cls}, in declaration order."""
    hints = typing.get_type_hints(cls, vars(schema))
    result = []
    for f in fields(cls):
        kind, inner, optional = _classify(hints[f.name])
        if f.metadata.get("kind") == DURATION:
            kind = DUR
        result.append(Slot(
            name=f.name, key=yaml_key(f), kind=kind, cls=inner, optional=optional,
            enum=f.metadata.get("enum"), doc=f.metadata.get("doc", ""),
            ours=bool(f.metadata.get("ours"))))
    return tuple(result)


def slot_for(cls: type, key: str, *, fold: bool = False) -> Slot | None:
    """The slot of C{cls} whose YAML key is C{key} (case-insensitively when C{fold})."""
    for slot in slots(cls):
        if slot.key == key or (fold and slot.key.lower() == key.lower()):
            return slot
    return None


def _classify(hint: Any) -> tuple[str, type | None, bool]:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        kind, cls, _ = _classify(inner[0])
        return kind, cls, True
    if hint is bool:
        return BOOL, None, False
    if hint is int:
        return INT, None, False
    if hint is float:
        return FLOAT, None, False
    if hint is str:
        return STR, None, False
    if is_dataclass(hint):
        return OBJECT, hint, False
    if origin is list:
        if args[0] is str:
            return STRINGS, None, False
        return RECORDS, args[0], False
    if origin is dict:
        value = args[1]
        if typing.get_origin(value) is dict:
            return BLOCKS, typing.get_args(value)[1], False
        if is_dataclass(value):
            return GROUPS, value, False
        return MAPPING, None, False
    raise TypeError(f"unsupported schema type {hint!r}")


def child(path: str, key: str) -> str:
    """Dotted key path of C{key} under C{path}."""
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    """Key path of a list element."""
    return f"{path}[{index}]"


def valid_name(name: str) -> bool:
    """Whether a (lower-cased) group or block name is acceptable."""
    return bool(_NAME.match(name))


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """C{" (did you mean 'x'?)"} for the closest of C{choices}, or C{""}."""
    choices = list(choices)
    folded = {c.lower(): c for c in choices}
    if word.lower() in folded:
        return f" (did you mean '{folded[word.lower()]}'?)"
    if len(word) < 3 or not any(c.isalpha() for c in word):  # "1.1" is no typo of "1.3"
        return ""
    close = difflib.get_close_matches(word.lower(), list(folded), n=1, cutoff=0.6)
    return f" (did you mean '{folded[close[0]]}'?)" if close else ""


def describe(value: object) -> str:
    """A value as an error message shows it."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__
