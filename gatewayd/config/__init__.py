"""
gatewayd's configuration: the two YAML files of GatewayD (C{gatewayd.yaml},
C{gatewayd_plugins.yaml}), their defaults, C{GATEWAYD_*} overrides and
validation.  See C{docs/configuration.md}.
"""

from gatewayd.config.durations import format_duration, parse_duration
from gatewayd.config.loader import Config, apply_flat, load
from gatewayd.config.plain import flatten, redact, to_plain

__all__ = [
    "Config", "apply_flat", "flatten", "format_duration", "load", "parse_duration", "redact",
    "to_plain",
]
