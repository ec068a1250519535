# -*- test-case-name: tests.unit.test_config_lint -*-
"""
C{gatewayd config lint}: the JSON Schema of both files, generated from the
schema dataclasses, plus the cross-reference validation that GatewayD's lint
skips (it only runs at C{gatewayd run} there).

The generated schema is also useful on its own, for editors (Draft 2020-12).
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import jsonschema

from gatewayd.config.build import build_global, build_plugins
from gatewayd.config.durations import GO_DURATION_PATTERN, compact_duration, parse_duration
from gatewayd.config.files import read_yaml
from gatewayd.config.schema import GlobalConfig, PluginsConfig
from gatewayd.config.shape import (
    BLOCKS, BOOL, DUR, FLOAT, GROUPS, INT, MAPPING, NAME_PATTERN, OBJECT, RECORDS, REQUIRED,
    SCALARS, STR, STRINGS, Slot, child, describe, did_you_mean, item, slots,
)
from gatewayd.config.validate import MIN_FLOAT, MIN_INT, validate_global, validate_plugins
from gatewayd.errors import ConfigError

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_JSON_TYPES = {BOOL: "boolean", INT: "integer", FLOAT: "number", STR: "string"}
_DURATION = {"oneOf": [{"type": "string", "pattern": GO_DURATION_PATTERN}, {"type": "integer"}]}


def json_schema(cls: type = GlobalConfig) -> dict[str, Any]:
    """The JSON Schema (Draft 2020-12) of schema dataclass C{cls}: a file's root."""
    defs: dict[str, Any] = {}
    root = _object(cls, defs)
    return {"$schema": DRAFT, "title": cls.__name__, **root, "$defs": defs}


def _object(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    default = cls()
    properties = {slot.key: _slot(cls, slot, getattr(default, slot.name), defs)
                  for slot in slots(cls)}
    result: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc:
        result["description"] = doc[0]
    if cls in REQUIRED:
        result["required"] = list(REQUIRED[cls])
    return result


def _ref(cls: type, defs: dict[str, Any]) -> dict[str, Any]:
    if cls.__name__ not in defs:
        defs[cls.__name__] = {}  # placeholder against recursion
        defs[cls.__name__] = _object(cls, defs)
    return {"$ref": f"#/$defs/{cls.__name__}"}


def _named(member: dict[str, Any]) -> dict[str, Any]:
    """A map whose keys are group or block names."""
    return {"type": "object", "patternProperties": {NAME_PATTERN: member},
            "additionalProperties": False}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _slot(owner: type, slot: Slot, default: Any, defs: dict[str, Any]) -> dict[str, Any]:
    kind = slot.kind
    if kind == DUR:
        schema: dict[str, Any] = dict(_DURATION)
    elif kind in _JSON_TYPES:
        schema = {"type": _JSON_TYPES[kind]}
        if slot.enum:
            schema["enum"] = list(slot.enum)
        if kind == INT:
            schema["minimum"] = MIN_INT.get((owner, slot.key), 0)
        if kind == FLOAT:
            schema["minimum"] = MIN_FLOAT.get((owner, slot.key), 0)
    elif kind == STRINGS:
        items: dict[str, Any] = {"type": "string"}
        if slot.enum:
            items["enum"] = list(slot.enum)
        schema = {"type": "array", "items": items}
    elif kind == RECORDS:
        schema = {"type": "array", "items": _ref(slot.cls, defs)}
    elif kind == MAPPING:
        schema = {"type": "object"}
    elif kind == OBJECT:
        schema = _ref(slot.cls, defs)
    elif kind == GROUPS:
        schema = _named(_nullable(_ref(slot.cls, defs)))
    elif kind == BLOCKS:
        schema = _named(_nullable(_named(_nullable(_ref(slot.cls, defs)))))
    else:
        raise AssertionError(kind)
    if kind not in SCALARS or slot.optional:
        schema = _nullable(schema)
    if slot.doc:
        schema["description"] = slot.doc
    if kind in SCALARS and default is not None:
        schema["default"] = compact_duration(default) if kind == DUR else default
    return schema


@functools.cache
def _validator(cls: type) -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(json_schema(cls))


def schema_errors(cls: type, data: Any, path: str) -> list[ConfigError]:
    """The JSON Schema's verdict on C{data}, one L{ConfigError} per problem."""
    errors: list[ConfigError] = []
    for error in _validator(cls).iter_errors({} if data is None else data):
        errors.extend(_convert(error, path))
    return errors


def _where(error: jsonschema.ValidationError) -> str:
    where = ""
    for part in error.absolute_path:
        where = item(where, part) if isinstance(part, int) else child(where, str(part))
    return where


def _convert(error: jsonschema.ValidationError, path: str) -> list[ConfigError]:
    where, schema, instance = _where(error), error.schema, error.instance
    kind = error.validator
    if kind == "additionalProperties":
        known = list(schema.get("properties", {}))
        patterns = list(schema.get("patternProperties", {}))
        extra = [k for k in instance if k not in known
                 and not any(re.search(p, str(k)) for p in patterns)]
        if patterns:
            return [ConfigError(path, child(where, str(k)),
                                "bad name: use lower-case letters, digits, '-' and '_', "
                                "starting with a letter or digit") for k in extra]
        return [ConfigError(path, child(where, str(k)), f"unknown key{did_you_mean(str(k), known)}")
                for k in extra]
    if kind == "required":
        return [ConfigError(path, child(where, k), "required key is missing")
                for k in error.validator_value if k not in instance]
    if kind == "oneOf" and schema.get("oneOf") == _DURATION["oneOf"]:
        try:
            parse_duration(instance)
            problem = f"invalid duration {instance!r}"
        except ValueError as e:
            problem = str(e)
        return [ConfigError(path, where, problem)]
    if kind == "anyOf" and error.context:
        # Our anyOfs are always [<schema>, null]: report why <schema> failed.
        inner = [e for e in error.context if e.relative_schema_path[0] == 0]
        return [c for e in inner for c in _convert(e, path)]
    if kind == "type":
        return [ConfigError(path, where, f"expected {error.validator_value}, got {describe(instance)}")]
    if kind == "minimum":
        return [ConfigError(path, where,
                            f"must be >= {_num(error.validator_value)} (got {_num(instance)})")]
    if kind == "enum":
        allowed = [str(v) for v in error.validator_value]
        return [ConfigError(path, where, f"{instance!r} is not one of: {', '.join(allowed)}"
                            f"{did_you_mean(str(instance), allowed)}")]
    return [ConfigError(path, where, error.message)]


def _num(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _fold_names(data: Any) -> Any:
    """Lower-case group and block names as loading does, before the schema sees them."""
    if not isinstance(data, dict):
        return data
    folded = dict(data)
    for slot in slots(GlobalConfig):
        groups = data.get(slot.key)
        if slot.kind in (GROUPS, BLOCKS) and isinstance(groups, dict):
            folded[slot.key] = {
                (g.lower() if isinstance(g, str) else g):
                    ({(b.lower() if isinstance(b, str) else b): v for b, v in m.items()}
                     if slot.kind == BLOCKS and isinstance(m, dict) else m)
                for g, m in groups.items()}
    return folded


def _merge(first: list[ConfigError], second: list[ConfigError]) -> list[ConfigError]:
    """C{first}, then the errors of C{second} about keys C{first} did not mention."""
    seen = {e.key for e in first}
    return first + [e for e in second if e.key not in seen]


def _lint(cls: type, data: Any, built: tuple[Any, list[ConfigError]],
          validate: Callable[[Any, str], list[ConfigError]], path: str) -> list[ConfigError]:
    """
    The loader's findings in file order (types and unknown keys, or, when the
    types are right, every validation rule), then whatever the JSON Schema
    finds about keys they did not mention.
    """
    cfg, build_errors = built
    ours = build_errors or validate(cfg, path)
    return _merge(ours, schema_errors(cls, data, path))


def lint_global(path: str) -> list[ConfigError]:
    """Every problem of a global config file (schema, types, cross-references); [] if valid."""
    try:
        data = read_yaml(path)
    except ConfigError as e:
        return [e]
    return _lint(GlobalConfig, _fold_names(data), build_global(data, path), validate_global, path)


def lint_plugins(path: str) -> list[ConfigError]:
    """Every problem of a plugins config file; [] if valid."""
    try:
        data = read_yaml(path)
    except ConfigError as e:
        return [e]
    return _lint(PluginsConfig, data, build_plugins(data, path), validate_plugins, path)
