# -*- test-case-name: tests.unit.test_sdk -*-
"""
Run an SDK plugin inside the gateway's process: no child process, no gRPC,
no Struct conversion.  A sync hook is a plain method call (zero IPC); an
C{async def} hook runs as a coroutine driven by Twisted
(C{Deferred.fromCoroutine}), so it may await Deferreds (and asyncio futures
when the gateway runs on the asyncio reactor).

gatewayd_plugins.yaml:

    plugins:
      - name: sql-firewall
        module: examples.sql_firewall.plugin:SQLFirewall
        config: {blockDrop: true}
        failureMode: closed

Unlike the gRPC server (which must hide errors from GatewayD), an exception
in an in-process hook fails the call, so the entry's C{failureMode} applies.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from gatewayd.interfaces import IPlugin
from gatewayd.plugins.errors import PluginLoadError
from gatewayd.sdk.log import TwistedPluginLog
from gatewayd.sdk.plugin import Plugin

__all__ = ["InProcessPlugin", "import_plugin_class", "load_inprocess"]


@implementer(IPlugin)
class InProcessPlugin:
    """
    An L{IPlugin} around a L{Plugin} instance.

    @ivar instance: the plugin object.
    @ivar failure_mode: the entry's C{failureMode} (the hook registry reads it).
    """

    def __init__(self, instance: Plugin, priority: int, *, name: str | None = None,
                 failure_mode: str = "open") -> None:
        self.instance = instance
        self.name = name or instance.name or type(instance).__name__
        self.priority = priority
        self.failure_mode = failure_mode
        self.hooks = instance.hook_names()
        self.metadata = instance.plugin_config()
        self._handlers = {h: instance.handler(h) for h in self.hooks}

    def __repr__(self) -> str:
        return f"<InProcessPlugin {self.name} priority={self.priority}>"

    @property
    def metrics_socket(self) -> str | None:
        """
        Where the plugin serves Prometheus metrics (its C{metricsUnixDomainSocket}
        when C{metricsEnabled} is not false): the host's merger scrapes it, as
        for plugin processes, so in-process plugins' metrics reach /metrics too.
        """
        config = self.metadata.get("config", {}) if isinstance(self.metadata, dict) else {}
        path = config.get("metricsUnixDomainSocket")
        if not path or str(config.get("metricsEnabled", "true")).lower() in ("false", "0"):
            return None
        return str(path)

    def call_hook(self, hook_name: str, payload: dict, timeout: float | None = None) -> Deferred[dict]:
        """
        Call the hook.  Sync handlers answer in an already fired Deferred;
        the registry enforces C{timeout} on async ones (by cancelling them).
        """
        handler = self._handlers.get(hook_name)
        if handler is None:
            return succeed(payload)
        try:
            result = handler(payload)
        except Exception:  # noqa: BLE001 - becomes a failed call; failureMode decides
            return fail()
        if inspect.isawaitable(result):
            return Deferred.fromCoroutine(_await(result)).addCallback(_normalise, payload)
        try:
            return succeed(_normalise(result, payload))
        except TypeError:
            return fail()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _normalise(result: Any, payload: dict) -> dict:
    """None means "unchanged"; anything but a dict is the plugin's bug."""
    if result is None:
        return payload
    if isinstance(result, dict):
        return result
    raise TypeError(f"a hook must return a dict or None, not {type(result).__name__}")


def import_plugin_class(spec: str) -> type[Plugin]:
    """
    Import C{"package.module:Class"} (C{Class} may be dotted).

    @raise ValueError: malformed spec, missing module or attribute, or not a
        L{Plugin} subclass.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{spec!r} is not 'package.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name}: {e}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{module_name} has no attribute {attr}") from None
    if not (isinstance(obj, type) and issubclass(obj, Plugin)):
        raise ValueError(f"{spec} is not a gatewayd.sdk.Plugin subclass")
    return obj


def load_inprocess(entry: Any, priority: int, reactor: Any, *,
                   observer: Any = None) -> InProcessPlugin:
    """
    Import and instantiate the plugin of a C{plugins[]} entry whose
    C{module} is set.

    @param entry: a L{gatewayd.config.schema.PluginEntry}.
    @param priority: its chain position (1000 + index in the file).
    @param reactor: given to the instance as C{self.reactor} (timers, etc.).
    @param observer: where the plugin's C{self.log} events go (e.g.
        C{GatewayLogging.observer("default")}); default: Twisted's global
        log publisher.
    @raise PluginLoadError: the class cannot be imported or instantiated.
    """
    try:
        cls = import_plugin_class(entry.module)
    except ValueError as e:
        raise PluginLoadError(entry.name or entry.module, f"module: {e}") from None
    name = entry.name or cls.name
    logger = Logger(namespace=f"gatewayd.plugins.{name}", observer=observer)
    try:
        instance = cls(dict(entry.config or {}), log=TwistedPluginLog(name, logger))
    except Exception as e:  # noqa: BLE001 - any constructor error refuses the plugin
        raise PluginLoadError(name, f"{entry.module}({entry.config!r}) failed: "
                                    f"{type(e).__name__}: {e}") from None
    instance.reactor = reactor
    return InProcessPlugin(instance, priority, name=name, failure_mode=entry.failure_mode or "open")
