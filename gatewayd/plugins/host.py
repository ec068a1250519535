# -*- test-case-name: tests.integration.test_plugin_host -*-
"""
The plugin host service: loads the plugins of C{gatewayd_plugins.yaml} into
the hook registry, watches their health, reloads crashed ones and merges
their Prometheus metrics.

Behaviour follows GatewayD's plugin registry with these deliberate fixes
(docs/plugins-host.md):
  - a reloaded plugin keeps its priority (GatewayD resets it to 1000, where it
    can replace the first plugin's hooks);
  - a plugin whose C{requires} are not met is not registered (GatewayD stops
    its process but still registers its hooks);
  - plugins start concurrently, then register in list order;
  - a reload that fails is retried every health-check period;
  - a failed metrics scrape drops that plugin's metrics only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from gatewayd.config.schema import PluginEntry, PluginsConfig
from gatewayd.interfaces import IHookRegistry, IPluginClient
from gatewayd.plugins.client import GrpcPluginClient
from gatewayd.plugins.errors import PluginLoadError
from gatewayd.plugins.metrics import fetch_metrics, merge, relabel, render

#: GatewayD's PluginPriorityStart: 0-999 are reserved for built-ins.
PRIORITY_START = 1000

InprocessLoader = Callable[[PluginEntry, int, Any], Any]
ClientFactory = Callable[..., IPluginClient]


def _default_inprocess_loader(entry: PluginEntry, priority: int, reactor: Any) -> Any:
    from gatewayd.sdk.inprocess import load_inprocess  # the SDK is optional for a host
    return load_inprocess(entry, priority, reactor)


def _version_key(version: str) -> tuple[int, ...] | None:
    match = re.match(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?", version.strip())
    if match is None:
        return None
    return tuple(int(part or 0) for part in match.groups())


@dataclass
class _Slot:
    """One enabled entry of the plugins list and what runs for it."""

    entry: PluginEntry
    priority: int
    plugin: Any = None  # IPlugin once loaded
    crashed: bool = False  # waiting for a reload


class PluginHost(Service):
    """
    Loads, health-checks, reloads and scrapes plugins.

    Embedding: add it to the gateway's MultiService before the servers and
    wait for L{when_loaded} before accepting clients, as GatewayD loads its
    plugins before it listens.
    """

    name = "plugins"

    def __init__(self, reactor: Any, config: PluginsConfig, registry: IHookRegistry,
                 log: Logger | None = None, dev: bool = False, metrics: Any = None, *,
                 inprocess_loader: InprocessLoader | None = None,
                 client_factory: ClientFactory | None = None,
                 transport: str | None = None) -> None:
        """
        @param config: the whole C{gatewayd_plugins.yaml}.
        @param registry: where loaded plugins are registered.
        @param dev: skip checksum checks (C{run --dev}).
        @param metrics: optional; C{metrics.plugins_loaded_total.inc()} is called
            when present (the registry counts hooks registered)
            (GatewayD's C{gatewayd_plugins_loaded_total} and
            C{gatewayd_plugin_hooks_registered_total}).
        @param inprocess_loader: C{(entry, priority, reactor) -> IPlugin} (or a
            Deferred of one) for entries with C{module}; defaults to
            C{gatewayd.sdk.inprocess.load_inprocess}.
        @param client_factory: builds out-of-process clients; defaults to
            L{GrpcPluginClient}.  Called as C{factory(reactor, entry, priority,
            log=, dev=, start_timeout=, call_timeout=, transport=)}.
        @param transport: C{"sync"}/C{"aio"} to override the gRPC bridge chosen
            for the reactor.
        """
        self._reactor = reactor
        self._config = config
        self._registry = registry
        self._log = log or Logger(namespace="gatewayd.plugins")
        self._dev = dev
        self._metrics = metrics
        self._inprocess_loader = inprocess_loader or _default_inprocess_loader
        self._client_factory = client_factory or GrpcPluginClient
        self._transport = transport
        self._slots: list[_Slot] = []
        self._starting: set[Any] = set()  # clients between spawn and registration
        self._loaded: Deferred[None] | None = None
        self._waiters: list[Deferred[None]] = []
        self._health = LoopingCall(self.check_health)
        self._health.clock = reactor
        self._merger = LoopingCall(self.merge_metrics)
        self._merger.clock = reactor
        self._scraped: dict[str, list[Any]] = {}
        self._merged_text = ""
        self._stopping = False

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._stopping = False
        self._loaded = self.load()
        self._loaded.addCallback(self._start_loops)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        self._stopping = True
        for loop in (self._health, self._merger):
            if loop.running:
                loop.stop()
        # Plugins still starting would outlive us: stop them too (their load then fails).
        stops = [_stop(client) for client in list(self._starting)]
        for slot in self._slots:
            plugin, slot.plugin = slot.plugin, None
            if plugin is None:
                continue
            self._registry.unregister(plugin.name)
            stops.append(_stop(plugin))
        self._scraped.clear()
        self._merged_text = ""
        return DeferredList(stops, consumeErrors=True).addCallback(lambda _: None)

    def when_loaded(self) -> Deferred[None]:
        """Fires once the initial load finished (whatever was refused)."""
        waiter: Deferred[None] = Deferred()
        if self._loaded is not None and self._loaded.called:
            waiter.callback(None)
        else:
            self._waiters.append(waiter)
        return waiter

    def _start_loops(self, _: Any) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(None)
        if self._stopping:
            return
        if self._config.health_check_period > 0:
            self._health.start(self._config.health_check_period, now=False)
        if self._config.enable_metrics_merger and self._config.metrics_merger_period > 0:
            self._merger.start(self._config.metrics_merger_period, now=False)

    # -- loading ---------------------------------------------------------------

    def load(self) -> Deferred[None]:
        """
        Start every enabled entry concurrently, then register them in list
        order.  Priority is C{1000 + index}, disabled entries included.
        Refusals are logged, one line each; never fails.
        """
        self._slots = []
        seen: set[str] = set()
        for index, entry in enumerate(self._config.plugins):
            if not entry.enabled:
                continue
            if entry.name in seen or not entry.name:
                self._refuse(entry.name or f"#{index}",
                             "duplicate plugin name" if entry.name else "entry has no name")
                continue
            seen.add(entry.name)
            self._slots.append(_Slot(entry, PRIORITY_START + index))
        starts = [self._start_plugin(slot.entry, slot.priority) for slot in self._slots]
        return DeferredList(starts, consumeErrors=True).addCallback(self._register_all)

    def _start_plugin(self, entry: PluginEntry, priority: int) -> Deferred[Any]:
        if entry.module:
            return maybeDeferred(self._inprocess_loader, entry, priority, self._reactor)
        client = self._client_factory(
            self._reactor, entry, priority, log=self._log, dev=self._dev,
            start_timeout=self._config.start_timeout, call_timeout=self._config.timeout,
            transport=self._transport)
        self._starting.add(client)

        def started(result: Any) -> Any:
            self._starting.discard(client)
            return client if not isinstance(result, Failure) else result
        return client.start().addBoth(started)

    def _register_all(self, results: list[tuple[bool, Any]]) -> Deferred[None]:
        pending = []
        for slot, (ok, result) in zip(self._slots, results):
            if not ok:
                self._refuse(slot.entry.name, _problem(result))
                continue
            if self._stopping:
                pending.append(_stop(result))
                continue
            unmet = self._unmet_requirement(result)
            if unmet:
                self._refuse(slot.entry.name, unmet)
                pending.append(_stop(result))
                continue
            self._register(slot, result)
        return DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    def _register(self, slot: _Slot, plugin: Any) -> None:
        slot.plugin = plugin
        slot.crashed = False
        self._registry.register(plugin)
        hooks = sorted(plugin.hooks)
        self._log.info("plugin {plugin} loaded: priority {priority}, hooks {hooks}",
                       plugin=plugin.name, priority=plugin.priority, hooks=hooks,
                       pid=getattr(plugin, "pid", None))
        # The registry counts gatewayd_plugin_hooks_registered_total itself.
        self._count("plugins_loaded_total", 1)

    def _count(self, counter: str, n: int) -> None:
        metric = getattr(self._metrics, counter, None)
        if metric is not None and n:
            metric.inc(n)

    def _unmet_requirement(self, plugin: Any) -> str | None:
        """Each requirement must be a plugin loaded before this one, not older than asked."""
        loaded = {slot.plugin.name: slot.plugin for slot in self._slots if slot.plugin is not None}
        for need in plugin.metadata.get("requires", []) if isinstance(plugin.metadata, dict) else []:
            name = need.get("name", "")
            other = loaded.get(name)
            if other is None:
                return f"requires plugin {name!r}, which is not loaded before it"
            other_id = other.metadata.get("id", {})
            if need.get("remoteUrl") and need["remoteUrl"] != other_id.get("remoteUrl"):
                return f"requires {name!r} from {need['remoteUrl']}, loaded one is from {other_id.get('remoteUrl')!r}"
            wanted, have = _version_key(need.get("version", "")), _version_key(other_id.get("version", ""))
            if wanted is not None and (have is None or have < wanted):
                return f"requires {name!r} >= {need['version']}, loaded version is {other_id.get('version')!r}"
        return None

    def _refuse(self, name: str, problem: str) -> None:
        self._log.error("plugin {plugin} not loaded: {problem}", plugin=name, problem=problem)

    # -- introspection -----------------------------------------------------------

    def plugins(self) -> list[Any]:
        """The loaded plugins, in priority order."""
        return [slot.plugin for slot in self._slots if slot.plugin is not None]

    def merged_metrics_text(self) -> str:
        """The last merged plugin metrics (Prometheus text), C{""} when none."""
        return self._merged_text

    # -- health ----------------------------------------------------------------

    def check_health(self) -> Deferred[None]:
        """
        One health-check pass: ping every out-of-process plugin; a failing one is
        unregistered, stopped and (with C{reloadOnCrash}) restarted with its
        priority.  Crashed plugins whose reload failed are retried.  Never fails.
        """
        checks = []
        for slot in self._slots:
            plugin = slot.plugin
            if plugin is not None and IPluginClient.providedBy(plugin):
                checks.append(plugin.ping().addCallback(self._after_ping, slot, plugin))
            elif slot.crashed and self._config.reload_on_crash:
                checks.append(self._reload(slot))
        return DeferredList(checks, consumeErrors=True).addCallback(lambda _: None)

    def _after_ping(self, healthy: bool, slot: _Slot, plugin: Any) -> Deferred[None] | None:
        if healthy or slot.plugin is not plugin or self._stopping:
            return None
        exited = getattr(plugin, "exit_status", None)
        status = f"process ended: {exited}" if exited else "not serving"
        reload = self._config.reload_on_crash
        self._log.error("plugin {plugin} failed its health check ({status}); unregistered{action}",
                        plugin=plugin.name, status=status,
                        action=", reloading" if reload else "")
        slot.plugin = None
        slot.crashed = True
        self._registry.unregister(plugin.name)
        self._scraped.pop(plugin.name, None)
        self._rebuild_metrics()
        stopped = plugin.stop()
        if reload:
            stopped.addCallback(lambda _: self._reload(slot))
        return stopped

    def _reload(self, slot: _Slot) -> Deferred[None]:
        if self._stopping or slot.plugin is not None:
            return succeed(None)
        d = self._start_plugin(slot.entry, slot.priority)

        def started(plugin: Any) -> Any:
            if self._stopping:
                return _stop(plugin)
            self._register(slot, plugin)
            self._log.info("plugin {plugin} reloaded with priority {priority}",
                           plugin=plugin.name, priority=slot.priority)
            return None

        def failed(failure: Failure) -> None:
            self._log.error("plugin {plugin} reload failed, retrying in {period:g}s: {problem}",
                            plugin=slot.entry.name, period=self._config.health_check_period,
                            problem=_problem(failure))

        return d.addCallbacks(started, failed)

    # -- metrics merger ----------------------------------------------------------

    def merge_metrics(self) -> Deferred[None]:
        """One merger pass: scrape each plugin's metrics socket.  Never fails."""
        scrapes = []
        timeout = max(min(self._config.metrics_merger_period, 5.0), 0.1)
        for plugin in self.plugins():
            socket_path = getattr(plugin, "metrics_socket", None)
            if not socket_path:
                continue
            d = fetch_metrics(self._reactor, socket_path, timeout)
            d.addCallback(relabel, plugin.name)
            scrapes.append(d.addCallbacks(self._scraped_ok, self._scrape_failed,
                                          callbackArgs=(plugin.name,), errbackArgs=(plugin.name,)))
        return DeferredList(scrapes, consumeErrors=True).addCallback(
            lambda _: self._rebuild_metrics())

    def _scraped_ok(self, families: list[Any], name: str) -> None:
        self._scraped[name] = families

    def _scrape_failed(self, failure: Failure, name: str) -> None:
        # Warn when a working scrape breaks; stay quiet while it stays broken.
        had_metrics = self._scraped.pop(name, None) is not None
        self._log.emit(LogLevel.warn if had_metrics else LogLevel.debug,
                       "plugin {plugin}: metrics scrape failed: {problem}",
                       plugin=name, problem=_problem(failure))

    def _rebuild_metrics(self) -> None:
        loaded = {plugin.name for plugin in self.plugins()}
        for name in list(self._scraped):
            if name not in loaded:
                del self._scraped[name]
        self._merged_text = render(merge(self._scraped[name] for name in sorted(self._scraped)))


def _problem(failure: Failure | Any) -> str:
    value = getattr(failure, "value", failure)
    if isinstance(value, PluginLoadError):
        return value.problem
    return str(value) or type(value).__name__


def _stop(plugin: Any) -> Deferred[None]:
    """Stop a client; an in-process plugin only if it has a C{stop()} of its own."""
    stop = getattr(plugin, "stop", None)
    return maybeDeferred(stop) if callable(stop) else succeed(None)
