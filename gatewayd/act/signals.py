# -*- test-case-name: tests.unit.test_act -*-
"""
Signals: what a plugin asks for in its hook result.

A plugin puts C{"__signals__": [{"name": ..., "metadata": {...}}, ...]} in
the dict it returns.  Each signal names an action (and the policy guarding
it) and carries metadata the policy and the action read.  The builders here
produce the exact shapes the Go SDK's C{act.Terminate()}, C{act.Log()} and
C{act.Passthrough()} produce, so Python and Go plugins are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "OUTPUTS_KEY",
    "RESERVED_KEYS",
    "SIGNALS_KEY",
    "TERMINAL_KEY",
    "Signal",
    "log",
    "parse_signals",
    "passthrough",
    "terminate",
]

#: Reserved result keys (GatewayD's names).
SIGNALS_KEY = "__signals__"
OUTPUTS_KEY = "__outputs__"
TERMINAL_KEY = "__terminal__"
RESERVED_KEYS = frozenset({SIGNALS_KEY, OUTPUTS_KEY, TERMINAL_KEY})


@dataclass(frozen=True, slots=True)
class Signal:
    """One signal: the name of the action it asks for, and its metadata."""

    name: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape (a Struct inside the C{__signals__} list)."""
        return {"name": self.name, "metadata": dict(self.metadata) if self.metadata else None}


def passthrough() -> dict[str, Any]:
    """C{act.Passthrough()}: let the request through (the default anyway)."""
    return {"name": "passthrough", "metadata": None}


def terminate() -> dict[str, Any]:
    """
    C{act.Terminate()}: stop the chain and answer the client with the
    result's C{response} (or GatewayD's "Request terminated" error).
    """
    return {"name": "terminate", "metadata": {"terminate": True}}


def log(level: str, message: str, **fields: Any) -> dict[str, Any]:
    """C{act.Log(level, message, fields)}: log C{message} at C{level} with C{fields}."""
    metadata: dict[str, Any] = dict(fields)
    metadata.update({"log": True, "level": level, "message": message})
    return {"name": "log", "metadata": metadata}


def parse_signals(value: Any) -> tuple[list[Signal], list[str]]:
    """
    Read a result's C{__signals__} value.

    @return: the well-formed signals, and one problem string per entry that
        was skipped (not a map, no name...).  Nothing here raises: a plugin's
        malformed signal must not break the chain.
    """
    if value is None:
        return [], []
    if not isinstance(value, (list, tuple)):
        return [], [f"__signals__ is a {type(value).__name__}, not a list"]
    signals: list[Signal] = []
    problems: list[str] = []
    for index, item in enumerate(value):
        if isinstance(item, Signal):
            signals.append(item)
            continue
        if not isinstance(item, Mapping):
            problems.append(f"__signals__[{index}] is a {type(item).__name__}, not a map")
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"__signals__[{index}] has no name")
            continue
        metadata = item.get("metadata")
        if metadata is None:
            metadata = {}
        elif not isinstance(metadata, Mapping):
            problems.append(f"__signals__[{index}].metadata is not a map")
            continue
        signals.append(Signal(name, metadata))
    return signals, problems
