# -*- test-case-name: tests.unit.test_sdk -*-
"""
The logger a plugin writes to, wherever it runs.

A plugin calls C{self.log.info("blocked", query=sql)}.  In-process the
event goes to the gateway's Twisted logging (namespace
C{gatewayd.plugins.<name>}, field C{plugin}); out-of-process it is one
hclog JSON line on stderr, which both GatewayD and our plugin host parse
and re-log with the plugin's name (go-plugin's format: C{@level},
C{@message}, C{@timestamp} with six fractional digits, C{@module}, and the
fields as extra keys).
"""

from __future__ import annotations

import json
import sys
import threading
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

from twisted.logger import Logger, LogLevel

__all__ = ["HclogLog", "LEVELS", "PluginLog", "TwistedPluginLog"]

#: hclog level names in rank order.
LEVELS = ("trace", "debug", "info", "warn", "error")
_RANK = {name: rank for rank, name in enumerate(LEVELS)}
_TWISTED = {"trace": LogLevel.debug, "debug": LogLevel.debug, "info": LogLevel.info,
            "warn": LogLevel.warn, "error": LogLevel.error}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


class PluginLog:
    """The methods a plugin uses; subclasses decide where events go."""

    def log(self, level: str, message: str, **fields: Any) -> None:
        raise NotImplementedError

    def trace(self, message: str, **fields: Any) -> None:
        self.log("trace", message, **fields)

    def debug(self, message: str, **fields: Any) -> None:
        self.log("debug", message, **fields)

    def info(self, message: str, **fields: Any) -> None:
        self.log("info", message, **fields)

    def warn(self, message: str, **fields: Any) -> None:
        self.log("warn", message, **fields)

    warning = warn

    def error(self, message: str, **fields: Any) -> None:
        self.log("error", message, **fields)


class TwistedPluginLog(PluginLog):
    """In-process: events go to the gateway's logging, tagged with the plugin name."""

    def __init__(self, plugin: str, logger: Logger | None = None) -> None:
        self.plugin = plugin
        self._logger = logger if logger is not None else Logger(namespace=f"gatewayd.plugins.{plugin}")

    def log(self, level: str, message: str, **fields: Any) -> None:
        safe = {k: v for k, v in fields.items()
                if not k.startswith("log_") and k not in ("format", "plugin_message")}
        self._logger.emit(_TWISTED.get(level, LogLevel.info), "{plugin_message}",
                          plugin_message=message, plugin=self.plugin, **safe)


class HclogLog(PluginLog):
    """
    Out-of-process: hclog JSON lines on C{stream} (stderr), thread-safe.

    @param level: the lowest level written (C{trace} ... C{error}).
    """

    def __init__(self, module: str, stream: TextIO | None = None, level: str = "info",
                 now: Callable[[], datetime] | None = None) -> None:
        self.module = module
        self._stream = stream
        self.level = level if level in _RANK else "info"
        self._now = now if now is not None else (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()

    def enabled(self, level: str) -> bool:
        return _RANK.get(level, 2) >= _RANK[self.level]

    def log(self, level: str, message: str, **fields: Any) -> None:
        if level not in _RANK:
            level = "info"
        if not self.enabled(level):
            return
        stamp = self._now().astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event: dict[str, Any] = {"@level": level, "@message": message, "@module": self.module,
                                 "@timestamp": stamp}
        for key, value in fields.items():
            if not key.startswith("@"):
                event[key] = value
        line = json.dumps(event, default=_jsonable, ensure_ascii=False)
        stream = self._stream if self._stream is not None else sys.__stderr__
        with self._lock:
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):
                pass  # a closed stderr must not crash the plugin
