# -*- test-case-name: tests.unit.test_sdk -*-
"""
The one class a plugin author subclasses.

    from gatewayd.sdk import Plugin, hook

    class Firewall(Plugin):
        name = "sql-firewall"
        version = "0.1.0"

        @hook("onTrafficFromClient")
        def check(self, payload: dict) -> dict:
            ...
            return payload

    if __name__ == "__main__":
        Firewall.serve()

The same class runs in the gateway's process (C{module: "pkg.mod:Firewall"}
in gatewayd_plugins.yaml, see L{gatewayd.sdk.inprocess}) or as a separate
process that GatewayD or gatewayd spawn (L{Plugin.serve}, see
L{gatewayd.sdk.server}).  A hook receives the payload dict (traffic as
bytes) and returns the result dict; it may be C{async def}.  Returning None
means "unchanged".  Signals come from L{gatewayd.sdk.signals}.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Mapping, TypeVar

from gatewayd.hooks import names
from gatewayd.sdk.log import PluginLog, TwistedPluginLog

__all__ = ["Plugin", "hook", "hook_name"]

F = TypeVar("F", bound=Callable[..., Any])
_HOOK_ATTR = "__gatewayd_hooks__"
_BY_ENUM = {enum: names.NAME_BY_NUMBER[n] for n, enum, _ in names.HOOKS}
_BY_RPC = {rpc: names.NAME_BY_NUMBER[n] for n, _, rpc in names.HOOKS}


def hook_name(name: str | int) -> str:
    """
    The canonical hook name (C{"onTrafficFromClient"}) for any spelling:
    that one, the RPC (C{"OnTrafficFromClient"}), the enum name
    (C{"HOOK_NAME_ON_TRAFFIC_FROM_CLIENT"}) or the enum number (16).

    @raise ValueError: not a GatewayD hook.
    """
    if isinstance(name, int) and not isinstance(name, bool):
        found = names.NAME_BY_NUMBER.get(name)
    elif isinstance(name, str):
        found = name if name in names.ALL else _BY_RPC.get(name) or _BY_ENUM.get(name)
    else:
        found = None
    if found is None:
        raise ValueError(f"{name!r} is not a GatewayD hook (e.g. 'onTrafficFromClient')")
    return found


def hook(*hooks: str | int) -> Callable[[F], F]:
    """Mark a method as the handler of one or more hooks."""
    if not hooks:
        raise TypeError("@hook needs at least one hook name, e.g. @hook('onTrafficFromClient')")
    canonical = tuple(hook_name(h) for h in hooks)

    def mark(method: F) -> F:
        setattr(method, _HOOK_ATTR, getattr(method, _HOOK_ATTR, ()) + canonical)
        return method

    return mark


def _config_value(value: Any) -> str:
    """GetPluginConfig's config is map<string,string>: Go-style spellings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    return str(value)


class Plugin:
    """
    Base class of gatewayd plugins.

    Class attributes describe the plugin (C{GetPluginConfig}); methods marked
    with L{hook} handle hooks.  An instance gets its settings as
    C{self.config} (the C{config} map of its gatewayd_plugins.yaml entry
    in-process, or what L{serve} is given) and a logger as C{self.log}.

    @cvar name: the plugin's id name (GatewayD uses the config entry's name).
    @cvar version: semver, reported in C{id.version}.
    @cvar metrics_unix_socket: when set, L{serve} exposes the plugin's
        Prometheus metrics over HTTP on this Unix socket and tells the host
        (C{metricsEnabled}, C{metricsUnixDomainSocket}).
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    description: ClassVar[str] = ""
    authors: ClassVar[tuple[str, ...] | list[str]] = ()
    license: ClassVar[str] = ""
    project_url: ClassVar[str] = ""
    remote_url: ClassVar[str] = ""
    tags: ClassVar[tuple[str, ...] | list[str]] = ()
    categories: ClassVar[tuple[str, ...] | list[str]] = ()
    #: plugins that must be loaded first: ({"name", "version", "remoteUrl"}, ...)
    requires: ClassVar[tuple[Mapping[str, str], ...] | list[Mapping[str, str]]] = ()
    metrics_unix_socket: ClassVar[str | None] = None

    #: hook name -> method name, collected from the class and its bases.
    __hooks__: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                for name in getattr(value, _HOOK_ATTR, ()):
                    found[name] = attr
        cls.__hooks__ = found

    #: the gateway's reactor when running in-process (for timers); None out of process.
    reactor: Any = None

    def __init__(self, config: Mapping[str, Any] | None = None, *, log: PluginLog | None = None) -> None:
        self.config: dict[str, Any] = dict(config or {})
        self.log: PluginLog = log if log is not None else TwistedPluginLog(self.name or type(self).__name__)

    @classmethod
    def hook_names(cls) -> frozenset[str]:
        """The hooks this plugin handles."""
        return frozenset(cls.__hooks__)

    def handler(self, hook: str) -> Callable[[dict[str, Any]], Any] | None:
        """The bound method for C{hook}, or None."""
        attr = self.__hooks__.get(hook)
        return getattr(self, attr) if attr is not None else None

    def plugin_config(self) -> dict[str, Any]:
        """
        The C{GetPluginConfig} answer, in the shape GatewayD decodes: hooks
        as enum numbers, config values as strings, requires as a list.
        """
        config = {str(k): _config_value(v) for k, v in self.config.items()
                  if isinstance(v, (str, int, float, bool)) or v is None}
        if self.metrics_unix_socket:
            config["metricsEnabled"] = "true"
            config["metricsUnixDomainSocket"] = self.metrics_unix_socket
        return {
            "id": {"name": self.name, "version": self.version, "remoteUrl": self.remote_url},
            "description": self.description,
            "authors": list(self.authors),
            "license": self.license,
            "projectUrl": self.project_url,
            "config": config,
            "hooks": sorted(names.NUMBER_BY_NAME[h] for h in self.hook_names()),
            "requires": [dict(r) for r in self.requires],
            "tags": list(self.tags),
            "categories": list(self.categories),
        }

    @staticmethod
    def is_async(method: Callable[..., Any]) -> bool:
        return inspect.iscoroutinefunction(method)

    @classmethod
    def serve(cls, config: Mapping[str, Any] | None = None, **options: Any) -> None:
        """
        Run as a go-plugin plugin process (GatewayD's protocol): handshake on
        stdout, gRPC with AutoMTLS, until the host shuts it down.  Exits the
        process.  See L{gatewayd.sdk.server.serve} for C{options}.
        """
        from gatewayd.sdk.server import serve

        serve(cls, config=config, **options)
