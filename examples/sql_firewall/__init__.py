"""A SQL firewall plugin: refuses statements by their syntax tree. See README.md."""

from examples.sql_firewall.plugin import SQLFirewall

__all__ = ["SQLFirewall"]
