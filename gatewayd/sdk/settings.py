# -*- test-case-name: tests.unit.test_sdk -*-
"""
Reading plugin settings that arrive either typed (YAML C{config:} of an
in-process plugin) or as strings (environment variables of a plugin
process, GatewayD's convention: the entry's C{env:} list).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

__all__ = ["as_bool", "as_float", "as_list", "from_env"]

_TRUE = {"1", "t", "true", "yes", "y", "on"}
_FALSE = {"0", "f", "false", "no", "n", "off", ""}


def as_bool(value: Any, default: bool = False) -> bool:
    """
    C{True}/C{"true"}/C{"1"}/C{"yes"}/C{"on"} and their opposites; None means C{default}.
    @raise ValueError: anything else (a typo should not silently disable a rule).
    """
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"not a boolean: {value!r}")


def as_float(value: Any, default: float = 0.0) -> float:
    """A number, or C{default} for None/empty. @raise ValueError: not a number."""
    if value is None or value == "":
        return default
    return float(value)


def as_list(value: Any) -> list[str]:
    """A list as is, or a comma-separated string split (blanks dropped)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple, set, frozenset)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def from_env(names: Mapping[str, str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """
    Settings from environment variables: C{names} maps each setting to its
    variable (C{{"blockDrop": "BLOCK_DROP"}}); unset variables are left out.
    """
    env = os.environ if env is None else env
    return {key: env[var] for key, var in names.items() if var in env}
