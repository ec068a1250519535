# -*- test-case-name: tests.unit.test_plugin_host -*-
"""
A plugin's stderr, relayed into our logs.

Go plugins log through hclog's JSON format (C{@level}, C{@message},
C{@timestamp}, C{@module} plus key/values), one object per line.  Each line
becomes one event with C{plugin=<name>} and the plugin's own fields, at the
plugin's level.  Other lines keep a C{[LEVEL]} prefix's level, like go-plugin;
unprefixed lines (a Python traceback, a Go panic) are logged at info rather
than go-plugin's debug, because that is where a crashing plugin says why.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.logger import Logger, LogLevel

from gatewayd.observability.formats import TRACE_KEY

#: hclog level -> (Twisted level, is trace)
_LEVELS: dict[str, tuple[LogLevel, bool]] = {
    "trace": (LogLevel.debug, True),
    "debug": (LogLevel.debug, False),
    "info": (LogLevel.info, False),
    "warn": (LogLevel.warn, False),
    "warning": (LogLevel.warn, False),
    "error": (LogLevel.error, False),
    "fatal": (LogLevel.critical, False),
}
_PREFIXES = {"[TRACE]": "trace", "[DEBUG]": "debug", "[INFO]": "info",
             "[WARN]": "warn", "[ERROR]": "error"}
#: Event keys a plugin field must not overwrite (ours, Twisted's, the JSON renderer's).
_RESERVED = frozenset({"plugin", "level", "time", "group", "message", "format", "system",
                       "isError", "why", "failure", TRACE_KEY})
#: A line longer than this is logged in pieces: never buffer a plugin's stderr unboundedly.
MAX_LINE = 64 * 1024


def parse_log_line(line: str) -> tuple[str, str, dict[str, Any]]:
    """
    @return: (hclog level name, message, extra fields) of one stderr line.
    """
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            record = json.loads(stripped)
        except ValueError:
            record = None
        if isinstance(record, dict) and "@message" in record:
            level = str(record.get("@level", "info")).lower()
            fields = {}
            for key, value in record.items():
                if key in ("@level", "@message", "@timestamp"):
                    continue
                name = "module" if key == "@module" else key.lstrip("@")
                if name.startswith("log_") or name in _RESERVED:
                    name = "plugin_" + name
                fields[name] = value
            return (level if level in _LEVELS else "info"), str(record["@message"]), fields
    for prefix, level in _PREFIXES.items():
        if stripped.startswith(prefix):
            return level, stripped[len(prefix):].strip(), {}
    return "info", stripped, {}


def emit_plugin_line(log: Logger, plugin: str, line: str) -> None:
    """Log one stderr line of C{plugin}."""
    if not line.strip():
        return
    level_name, message, fields = parse_log_line(line)
    level, trace = _LEVELS[level_name]
    if trace:
        fields[TRACE_KEY] = True
    # The message is data, not a format string: escape its braces.
    log.emit(level, message.replace("{", "{{").replace("}", "}}"), plugin=plugin, **fields)


class LineRelay:
    """Splits a byte stream into lines and logs each; bounded buffer."""

    def __init__(self, log: Logger, plugin: str) -> None:
        self._log = log
        self._plugin = plugin
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        buffer = self._buffer + data
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            emit_plugin_line(self._log, self._plugin, raw.decode("utf-8", "replace"))
        while len(buffer) > MAX_LINE:
            emit_plugin_line(self._log, self._plugin, buffer[:MAX_LINE].decode("utf-8", "replace"))
            buffer = buffer[MAX_LINE:]
        self._buffer = buffer

    def flush(self) -> None:
        if self._buffer:
            emit_plugin_line(self._log, self._plugin, self._buffer.decode("utf-8", "replace"))
            self._buffer = b""
