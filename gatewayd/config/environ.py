# -*- test-case-name: tests.unit.test_config_env -*-
"""
C{GATEWAYD_*} environment overrides.

GatewayD's scheme: drop the prefix, split on C{_}, one part per key level:
C{GATEWAYD_<OBJECT>_<GROUP>_<BLOCK>_<KEY>} for the global file and
C{GATEWAYD_<KEY>} (C{GATEWAYD_ACTIONREDIS_ENABLED}) for the plugins file.
Parts match the schema's keys case-insensitively at every level, so
multi-word client keys (C{DIALTIMEOUT}) and nested ones
(C{..._LOADBALANCER_CONSISTENTHASH_USESOURCEIP}) work, where GatewayD
silently drops them.  Group and block names match the declared ones, even
when they contain C{_}.

Unlike GatewayD, a variable that names nothing is an error, values are parsed
with the field's type and then validated with the rest of the config, and a
variable cannot create a group or block (GatewayD cannot either).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from gatewayd.config.build import Builder
from gatewayd.config.schema import GlobalConfig, PluginsConfig
from gatewayd.config.shape import (
    BLOCKS, BOOL, DUR, FLOAT, GROUPS, INT, MAPPING, OBJECT, RECORDS, STR, STRINGS, Slot, child,
    did_you_mean, slot_for, slots,
)
from gatewayd.errors import ConfigError

PREFIX = "GATEWAYD_"

_TRUE = {"1", "t", "true", "y", "yes", "on"}
_FALSE = {"0", "f", "false", "n", "no", "off"}


class _EnvError(Exception):
    pass


class EnvOverrides:
    """
    Applies the environment to both built configs.

    @ivar errors: problems, each naming its variable.
    @ivar origins: dotted key path -> variable, per file (C{"global"}, C{"plugins"}),
        so that validation errors about a value the environment set can name it.
    """

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []
        self.origins: dict[str, dict[str, str]] = {"global": {}, "plugins": {}}
        self._pending: list[tuple[Any, str, Any]] = []

    def apply(self, env: Mapping[str, str], global_: GlobalConfig, plugins: PluginsConfig) -> None:
        for var in sorted(env):
            if not var.startswith(PREFIX):
                continue
            try:
                self._apply_one(var, env[var], global_, plugins)
            except _EnvError as e:
                self.errors.append(ConfigError(None, var, str(e)))

    def _apply_one(self, var: str, raw: str, global_: GlobalConfig, plugins: PluginsConfig) -> None:
        parts = var[len(PREFIX):].lower().split("_")
        if not all(parts):
            raise _EnvError("empty name part (two '_' in a row, or a trailing '_')")
        top = slot_for(GlobalConfig, parts[0], fold=True)
        if top is not None:
            target, origins = global_, self.origins["global"]
        else:
            top = slot_for(PluginsConfig, parts[0], fold=True)
            target, origins = plugins, self.origins["plugins"]
        if top is None:
            known = [s.key.upper() for s in slots(GlobalConfig) + slots(PluginsConfig)]
            raise _EnvError(f"no config key {parts[0].upper()!r}{did_you_mean(parts[0], known)}"
                            " in gatewayd.yaml or gatewayd_plugins.yaml")
        self._pending = []
        owner, slot, path = self._resolve(target, top, parts[1:])
        builder = Builder(None)
        value = _convert(slot, raw, path, builder)
        if builder.errors:
            raise _EnvError("; ".join(f"{e.key}: {e.problem}" for e in builder.errors))
        for parent, name, created in self._pending:
            setattr(parent, name, created)
        setattr(owner, slot.name, value)
        origins[path] = var

    def _resolve(self, obj: Any, slot: Slot, rest: list[str]) -> tuple[Any, Slot, str]:
        """Walk C{rest} from C{slot} of C{obj} down to a leaf: (owner, leaf slot, key path)."""
        path = slot.key
        while True:
            if slot.kind in (GROUPS, BLOCKS):
                groups = getattr(obj, slot.name)
                depth = 2 if slot.kind == BLOCKS else 1
                for level in range(depth):
                    noun = "group" if level == 0 else "block"
                    name, rest = _match_name(groups, rest, path, noun)
                    path = child(path, name)
                    groups = groups[name]
                obj = groups
                if not rest:
                    raise _EnvError(f"names the {path} {noun}, not one of its keys")
                slot, rest, path = self._key(obj, rest, path)
                continue
            if slot.kind == OBJECT and rest:
                value = getattr(obj, slot.name)
                if value is None:  # an optional object (consistentHash): setting a key creates it
                    value = slot.cls()
                    self._pending.append((obj, slot.name, value))
                obj = value
                slot, rest, path = self._key(obj, rest, path)
                continue
            if rest:
                raise _EnvError(f"{path} has no key {rest[0].upper()!r} ({path} is a value)")
            if slot.kind == OBJECT:
                keys = ", ".join(s.key.upper() for s in slots(slot.cls))
                raise _EnvError(f"names the {path} object; set one of its keys ({keys})")
            return obj, slot, path

    @staticmethod
    def _key(obj: Any, rest: list[str], path: str) -> tuple[Slot, list[str], str]:
        slot = slot_for(type(obj), rest[0], fold=True)
        if slot is None:
            known = [s.key.upper() for s in slots(type(obj))]
            raise _EnvError(f"{path} has no key {rest[0].upper()!r}{did_you_mean(rest[0], known)}")
        return slot, rest[1:], child(path, slot.key)


def _match_name(groups: dict, rest: list[str], path: str, noun: str) -> tuple[str, list[str]]:
    """The declared group/block that C{rest} starts with (names may contain '_'), longest first."""
    if not rest:
        raise _EnvError(f"names {path}, not a key: add the {noun} name and a key")
    for name in sorted(groups, key=len, reverse=True):
        size = name.count("_") + 1
        if "_".join(rest[:size]) == name and len(rest) >= size:
            return name, rest[size:]
    wanted = rest[0]
    declared = ", ".join(groups) or "none"
    raise _EnvError(f"no {noun} {wanted!r} in {path} (declared: {declared}); "
                    f"environment variables cannot create a {noun}")


def _convert(slot: Slot, raw: str, path: str, builder: Builder) -> Any:
    """Parse one environment string with the field's type."""
    kind = slot.kind
    text = raw.strip()
    if kind == BOOL:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise _EnvError(f"{path}: expected true or false (or 1/0), got {raw!r}")
    if kind == INT:
        try:
            return int(text)
        except ValueError:
            raise _EnvError(f"{path}: expected an integer, got {raw!r}") from None
    if kind == FLOAT:
        try:
            return float(text)
        except ValueError:
            raise _EnvError(f"{path}: expected a number, got {raw!r}") from None
    if kind == DUR:
        ok, value = builder.scalar(DUR, text, path)
        return value
    if kind == STR:
        return raw
    if kind == STRINGS:
        if text.startswith("["):
            ok, value = builder.strings(_json(text, path), path)
            return value
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind == RECORDS:
        ok, value = builder.records(slot.cls, _json(text, path), path)
        return value
    if kind == MAPPING:
        ok, value = builder.value(slot, _json(text, path), path)
        return value
    raise AssertionError(kind)


def _json(text: str, path: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise _EnvError(f"{path}: expected JSON ({e.msg} at column {e.colno})") from None
