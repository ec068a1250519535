# -*- test-case-name: tests.unit.test_cache_plugin -*-
"""
The cache plugin's settings: GatewayD's cache plugin environment variables
(C{REDIS_URL}, C{EXPIRY}, ...) as defaults, the in-process C{config:} map
over them (same camelCase keys as GatewayD's C{GetPluginConfig}).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from gatewayd.sdk.settings import as_bool, as_list, from_env

__all__ = ["ENV", "CacheSettings", "parse_duration"]

#: config key -> environment variable (GatewayD's names, plus ours at the end).
ENV = {
    "redisURL": "REDIS_URL",
    "expiry": "EXPIRY",
    "defaultDBName": "DEFAULT_DB_NAME",
    "scanCount": "SCAN_COUNT",
    "periodicInvalidatorEnabled": "PERIODIC_INVALIDATOR_ENABLED",
    "periodicInvalidatorStartDelay": "PERIODIC_INVALIDATOR_START_DELAY",
    "periodicInvalidatorInterval": "PERIODIC_INVALIDATOR_INTERVAL",
    "apiGRPCAddress": "API_GRPC_ADDRESS",
    "exitOnStartupError": "EXIT_ON_STARTUP_ERROR",
    "metricsEnabled": "METRICS_ENABLED",
    "metricsUnixDomainSocket": "METRICS_UNIX_DOMAIN_SOCKET",
    "metricsEndpoint": "METRICS_ENDPOINT",
    # ours
    "maxResponseSize": "MAX_RESPONSE_SIZE",
    "keyPrefix": "KEY_PREFIX",
    "redisTimeout": "REDIS_TIMEOUT",
    "volatileFunctions": "VOLATILE_FUNCTIONS",
}

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_SIZE = re.compile(r"(\d+)\s*([kmg]i?b?|b)?", re.IGNORECASE)


def parse_duration(value: Any) -> float:
    """
    Seconds from a Go duration (C{"1h30m"}, C{"500ms"}) or a number of seconds.
    @raise ValueError: neither.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r} (e.g. '1h', '30s', '500ms')")
    return total


def parse_size(value: Any) -> int:
    """Bytes from C{8388608}, C{"8MB"}, C{"512kb"}, C{"1GiB"}. @raise ValueError: not a size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.fullmatch(str(value).strip())
    if not match:
        raise ValueError(f"not a size: {value!r} (e.g. 8388608, '8MB')")
    unit = (match.group(2) or "b").lower()[:1]
    return int(match.group(1)) * {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[unit]


@dataclass
class CacheSettings:
    redis_url: str = "redis://localhost:6379/0"
    expiry: float = 3600.0
    default_db: str = ""
    max_response_size: int = 8 * 1024 * 1024
    key_prefix: str = "gatewayd:cache:"
    redis_timeout: float = 1.0
    volatile_functions: frozenset[str] = frozenset()
    metrics_enabled: bool = True
    metrics_socket: str = ""

    @classmethod
    def load(cls, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> CacheSettings:
        """
        Environment first, C{config} over it.  Like GatewayD, an invalid or
        non-positive C{EXPIRY} means 1h.
        @raise ValueError: an invalid setting (named).
        """
        merged: dict[str, Any] = dict(from_env(ENV, env))
        merged.update({k: v for k, v in config.items() if v is not None})
        out = cls()
        try:
            if merged.get("redisURL"):
                out.redis_url = str(merged["redisURL"])
            try:
                expiry = parse_duration(merged.get("expiry", "1h"))
            except ValueError:
                expiry = 0.0
            out.expiry = expiry if expiry > 0 else 3600.0
            out.default_db = str(merged.get("defaultDBName") or "")
            if merged.get("maxResponseSize") not in (None, ""):
                out.max_response_size = parse_size(merged["maxResponseSize"])
            if "keyPrefix" in merged:
                out.key_prefix = str(merged["keyPrefix"])
            if merged.get("redisTimeout") not in (None, ""):
                out.redis_timeout = parse_duration(merged["redisTimeout"])
            out.volatile_functions = frozenset(f.lower() for f in as_list(merged.get("volatileFunctions")))
            out.metrics_enabled = as_bool(merged.get("metricsEnabled"), True)
            out.metrics_socket = str(merged.get("metricsUnixDomainSocket") or "")
        except ValueError as e:
            raise ValueError(f"cache plugin settings: {e}") from None
        return out
