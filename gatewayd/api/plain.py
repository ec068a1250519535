# -*- test-case-name: tests.unit.test_api_state -*-
"""
The configuration as the admin API shows it: GatewayD's JSON (Go's
C{encoding/json} of its config structs, so durations are integer
nanoseconds, not the C{"1m0s"} strings of the YAML files) with every secret
redacted.

Redaction is L{gatewayd.config.redact} (passwords, tokens, secret-looking
plugin C{env} entries, passwords inside URLs), plus plugin C{args} written as
C{--password=...}: a command line is where secrets hide next.
"""

from __future__ import annotations

import re
from typing import Any

from gatewayd.config import redact
from gatewayd.config.plain import REDACTED, looks_secret
from gatewayd.config.shape import BLOCKS, DUR, GROUPS, OBJECT, RECORDS, slots

_FLAG = re.compile(r"^(?P<flag>--?(?P<name>[A-Za-z0-9_.-]+)=)(?P<value>.+)$")
_BARE_FLAG = re.compile(r"^--?(?P<name>[A-Za-z0-9_.-]+)$")


def nanoseconds(seconds: float) -> int:
    """A duration in float seconds as Go's C{time.Duration} (integer nanoseconds)."""
    return int(round(seconds * 1_000_000_000))


def to_json(obj: Any) -> Any:
    """
    A config dataclass (or list/dict of them) as YAML-keyed plain data with
    durations in nanoseconds.  Unset optional objects are left out, as in
    L{gatewayd.config.to_plain}.
    """
    if isinstance(obj, list):
        return [to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if not hasattr(obj, "__dataclass_fields__"):
        return obj
    result: dict[str, Any] = {}
    for slot in slots(type(obj)):
        value = getattr(obj, slot.name)
        if value is None:
            continue
        if slot.kind == DUR:
            result[slot.key] = nanoseconds(value)
        elif slot.kind in (OBJECT, RECORDS, GROUPS, BLOCKS) or isinstance(value, (list, dict)):
            result[slot.key] = to_json(value)
        else:
            result[slot.key] = value
    return result


def redacted(plain: Any) -> Any:
    """L{gatewayd.config.redact}, then C{--secret=value} flags in every C{args} list."""
    return _redact_args(redact(plain))


def _redact_args(plain: Any, key: str = "") -> Any:
    if isinstance(plain, dict):
        return {k: _redact_args(v, str(k)) for k, v in plain.items()}
    if isinstance(plain, list):
        if key == "args":
            return _redact_command_line(plain)
        return [_redact_args(v) for v in plain]
    return plain


def _redact_command_line(args: list[Any]) -> list[Any]:
    """C{--token=x} and C{--token x} both lose C{x}."""
    out: list[Any] = []
    secret_next = False
    for arg in args:
        if not isinstance(arg, str):
            out.append(arg)
            secret_next = False
            continue
        if secret_next and not arg.startswith("-"):
            out.append(REDACTED)
            secret_next = False
            continue
        secret_next = False
        match = _FLAG.match(arg)
        if match is not None:
            secret = looks_secret(match.group("name").replace("-", "_"))
            out.append(match.group("flag") + REDACTED if secret else arg)
        else:
            out.append(arg)
            bare = _BARE_FLAG.match(arg)
            secret_next = bare is not None and looks_secret(bare.group("name").replace("-", "_"))
    return out
