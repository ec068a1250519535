# -*- test-case-name: tests.unit.test_config_plain -*-
"""
Config dataclasses back to plain data: YAML-keyed dicts (C{to_plain}), the
koanf-style flat map GatewayD sends in C{OnConfigLoaded} (C{flatten}), and a
copy safe to show over the admin API (C{redact}).
"""

from __future__ import annotations

import re
from typing import Any

from gatewayd.config.durations import format_duration
from gatewayd.config.shape import BLOCKS, DUR, GROUPS, OBJECT, RECORDS, slots

REDACTED = "REDACTED"

#: Names that look secret: matched as substrings of the lower-cased key.
_SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "credential")
#: Keys that hold a *path* to a secret, not the secret; shown as they are.
_PATH_KEYS = frozenset({"certfile", "keyfile", "tokenfile", "sslkey", "sslcert", "sslrootcert"})
#: Names that contain a secret word but hold public values (go-plugin's handshake cookie).
_PUBLIC = frozenset({"magic_cookie_key"})
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*:)[^@/\s]+(?=@)")


def to_plain(obj: Any) -> Any:
    """
    A config dataclass (or list/dict of them) as YAML-keyed plain data.

    Durations become Go strings (C{"1m0s"}, as GatewayD's payloads carry them);
    optional objects that are unset are left out, so loading the result again
    gives the same config.
    """
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if not hasattr(obj, "__dataclass_fields__"):
        return obj
    result: dict[str, Any] = {}
    for slot in slots(type(obj)):
        value = getattr(obj, slot.name)
        if value is None:
            continue
        if slot.kind == DUR:
            result[slot.key] = format_duration(value)
        elif slot.kind in (OBJECT, RECORDS, GROUPS, BLOCKS):
            result[slot.key] = to_plain(value)
        elif isinstance(value, (list, dict)):
            result[slot.key] = to_plain(value)
        else:
            result[slot.key] = value
    return result


def flatten(plain: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """
    koanf's flattening: nested mappings become dotted keys; lists and empty
    mappings stay values.  C{{"servers": {"default": {"address": ...}}}} ->
    C{{"servers.default.address": ...}}.
    """
    flat: dict[str, Any] = {}
    for key, value in plain.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def unflatten_into(plain: dict[str, Any], flat: dict[str, Any]) -> list[str]:
    """
    Merge dotted keys into nested C{plain} in place.

    @return: the keys that could not be placed (a value stands where a mapping is needed).
    """
    bad = []
    for dotted, value in flat.items():
        parts = dotted.split(".")
        node = plain
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                bad.append(dotted)
                break
            node = nxt
        else:
            node[parts[-1]] = value
    return bad


def looks_secret(name: str) -> bool:
    """Whether a key or environment variable name suggests a secret value."""
    lowered = name.rsplit(".", 1)[-1].lower()
    if lowered in _PATH_KEYS or lowered in _PUBLIC or lowered.endswith(("file", "path")):
        return False
    return any(word in lowered for word in _SECRET_WORDS)


def redact(plain: Any, _key: str = "") -> Any:
    """
    A copy of plain config data with secrets replaced by C{"REDACTED"}:
    values of keys whose name looks secret (password, token, secret, *key*
    but not the certFile/keyFile paths), the values of secret-looking plugin
    C{env} entries (C{"REDIS_PASSWORD=REDACTED"}), and passwords inside URLs
    (C{postgres://user:REDACTED@host}).  Works on nested and flattened data.
    Empty values stay empty, so an unset token still reads as unset.
    """
    if isinstance(plain, dict):
        return {k: redact(v, str(k)) for k, v in plain.items()}
    if isinstance(plain, list):
        if _key.rsplit(".", 1)[-1] == "env":
            return [_redact_env(v) if isinstance(v, str) else redact(v) for v in plain]
        return [redact(v, _key) for v in plain]
    if _key and looks_secret(_key) and plain not in ("", None):
        return REDACTED
    if isinstance(plain, str):
        return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, plain)
    return plain


def _redact_env(entry: str) -> str:
    name, sep, value = entry.partition("=")
    if sep and value and looks_secret(name):
        return f"{name}={REDACTED}"
    return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, entry)
