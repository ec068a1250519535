# -*- test-case-name: tests.integration.test_embedding -*-
"""
L{GatewayService}: the whole gateway as one Twisted C{MultiService}.

This is the embedding API.  twistd (L{gatewayd.tap}), the C{gatewayd} CLI and
any existing Twisted application build the gateway the same way::

    svc = GatewayService(config, reactor)
    svc.setServiceParent(application_or_parent_service)

Nothing here imports the global reactor: it is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application.service import IService, MultiService
from twisted.internet import defer, task
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from gatewayd import __version__
from gatewayd.api import api_services
from gatewayd.backend import BackendTarget, split_address
from gatewayd.act.registry import ActRegistry
from gatewayd.block import Block
from gatewayd.cancel import CancelRegistry
from gatewayd.config import Config, apply_flat, flatten, to_plain
from gatewayd.config.schema import Server
from gatewayd.errors import ConfigError, ConfigErrors
from gatewayd.hooks import names as hook
from gatewayd.hooks.registry import HookRegistry
from gatewayd.interfaces import IHookRegistry
from gatewayd.loadbalancer import BalancerConfigError, build_balancer
from gatewayd.observability.logging import GatewayLogging
from gatewayd.observability.metrics import GatewayCollector, GatewayMetrics, metrics_service
from gatewayd.observability.tracing import Tracing
from gatewayd.plugins.host import PluginHost
from gatewayd.pool import BackendPool
from gatewayd.server import GatewayServerFactory
from gatewayd.stats import Stats
from gatewayd.tls import backend_tls, server_context


_MISSING = object()


def listen_description(network: str, address: str) -> str:
    """A Twisted server endpoint string for a GatewayD C{network}/C{address} pair."""
    if network == "unix":
        return "unix:" + address.replace(":", r"\:")
    host, port = split_address(address, 15432)
    interface = host.replace(":", r"\:")
    return f"tcp:{port}:interface={interface}" if host else f"tcp:{port}"


@dataclass
class ServerGroup:
    """One tenant: its listener and its blocks."""

    name: str
    config: Server
    factory: GatewayServerFactory
    blocks: dict[str, Block]
    port: Any = None
    address: str = ""
    ticker: Any = field(default=None, repr=False)


class GatewayService(MultiService):
    """
    Pools, listeners, cancellation, hooks and observability built from a
    L{Config}.  C{startService} dials the pools and opens the listeners;
    C{stopService} stops accepting, drains sessions (C{drainTimeout}) and closes
    everything.

    @ivar ready: fires with {group: "host:port"} once every listener is bound,
        or fails with the first bind error.
    @ivar tracing: gatewayd's spans (L{Tracing}); disabled unless a
        C{tracer_provider} was given.  The caller owns the provider: it flushes
        and shuts it down after L{stopService} (the CLI uses
        L{gatewayd.observability.tracing.shutdown_provider}).
    """

    name = "gatewayd"

    def __init__(self, config: Config, reactor: Any, *, hooks: IHookRegistry | None = None,
                 logging: GatewayLogging | None = None, dev: bool = False,
                 tracer_provider: Any = None) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.dev = dev
        self.tracing = Tracing(tracer_provider, version=__version__)
        #: C{gatewayd.startup} while starting (tracing on); start-up hooks run under it
        self._startup_span: Any = None
        self.stats = Stats()
        self.logging = logging or GatewayLogging(config.global_.loggers,
                                                 config_path=config.global_path)
        self.log = self.logging.logger("default", "gatewayd")
        self.cancels = CancelRegistry(self.log)
        self.registry = CollectorRegistry()
        GatewayCollector(self.stats, self.registry)
        self.metrics = GatewayMetrics(self.registry)
        self.hooks = hooks if hooks is not None else self._hook_registry()
        self.groups: dict[str, ServerGroup] = {}
        self.ready: defer.Deferred[dict[str, str]] = defer.Deferred()
        self._build()

    # -- building --------------------------------------------------------------------------

    def _build(self) -> None:
        self._build_groups()
        self._metrics_service()
        self.plugin_host = PluginHost(self.reactor, self.config.plugins, self.hooks,
                                      log=self.logging.logger("default", "gatewayd.plugins"),
                                      dev=self.dev, metrics=self.metrics)
        self.plugin_host.setServiceParent(self)
        for service in api_services(self, self.config.global_.api, self.reactor):
            service.setServiceParent(self)

    def _build_groups(self) -> None:
        """Server groups with their blocks and pools (not started) from C{self.config}."""
        g = self.config.global_
        path = self.config.global_path
        self.groups = {}
        for group, server in g.servers.items():
            log = self.logging.logger(group if group in g.loggers else "default",
                                      "gatewayd.server")
            names = list(server.proxies) if server.proxies else list(g.proxies.get(group, {}))
            blocks = {name: self._block(group, name, log) for name in names}
            try:
                balancer = build_balancer(
                    group, names, server.load_balancer,
                    load=lambda name, blocks=blocks: blocks[name].pool.busy_count)
            except BalancerConfigError as e:
                raise ConfigError(path, *e.args) from None
            tls_context = None
            if server.enable_tls:
                tls_context = server_context(server.cert_file, server.key_file,
                                             server.tls_min_version, config_path=path,
                                             key_prefix=f"servers.{group}.")
            factory = GatewayServerFactory(group, server, blocks, balancer, self.cancels,
                                           self.hooks, self.stats, self.reactor, log, tls_context,
                                           tracing=self.tracing)
            self.groups[group] = ServerGroup(group, server, factory, blocks)

    def _hook_registry(self) -> IHookRegistry:
        """Act from the plugins file, and the registry plugins will register with."""
        plugins = self.config.plugins
        act = ActRegistry.from_config(plugins, reactor=self.reactor,
                                      log=self.logging.logger("default", "gatewayd.act"),
                                      path=self.config.plugins_path)
        if isinstance(act.publisher, IService):
            act.publisher.setServiceParent(self)
        return HookRegistry(self.reactor, act, timeout=plugins.timeout,
                            log=self.logging.logger("default", "gatewayd.hooks"),
                            metrics=self.metrics,
                            failure_modes={p.name: p.failure_mode for p in plugins.plugins},
                            tracing=self.tracing)

    def _metrics_service(self) -> None:
        metrics = self.config.global_.metrics.get("default")
        if metrics is None:
            return
        service = metrics_service(metrics, self.registry, self.plugin_metrics_text, self.reactor,
                                  config_path=self.config.global_path)
        if service is not None:
            service.setServiceParent(self)

    def plugin_metrics_text(self) -> str:
        """Plugins' merged metrics (label C{plugin}), written before ours like GatewayD."""
        host = getattr(self, "plugin_host", None)
        return host.merged_metrics_text() if host is not None else ""

    def _block(self, group: str, name: str, log: Logger) -> Block:
        g = self.config.global_
        client = g.clients[group][name]
        host = split_address(client.address)[0] if client.network != "unix" else ""
        tls = backend_tls(client.sslmode, host, rootcert=client.sslrootcert, cert=client.sslcert,
                          key=client.sslkey, server_name=client.sslservername,
                          config_path=self.config.global_path,
                          key_prefix=f"clients.{group}.{name}.")
        target = BackendTarget(group, name, client, tls, self.reactor)
        stats = self.stats.block(group, name)
        pool = BackendPool(self.reactor, target.dial, client, g.pools[group][name],
                           g.proxies[group][name], stats, log)
        pool.on_first_fill = lambda conn: self._new_client(group, name, client, conn)
        return Block(group, name, target, pool, stats)

    def _new_client(self, group: str, name: str, client: Any, conn: Any) -> None:
        """GatewayD's OnNewClient, for each connection of a pool's first fill."""
        if not self.hooks.is_subscribed(hook.ON_NEW_CLIENT):
            return
        plain = to_plain(client)
        payload = {key: plain[key] for key in (
            "network", "address", "receiveChunkSize", "receiveDeadline", "receiveTimeout",
            "sendDeadline", "dialTimeout", "tcpKeepAlive", "tcpKeepAlivePeriod", "retries",
            "backoff", "backoffMultiplier", "disableBackoffCaps") if key in plain}
        local = conn.local_address()
        payload.update({"id": f"{group}/{name}/{local}", "name": name, "group": group,
                        "localAddress": local, "remoteAddress": client.address})
        self._run(hook.ON_NEW_CLIENT, payload, self._startup_span)

    # -- lifecycle -------------------------------------------------------------------------

    def startService(self) -> None:  # noqa: N802
        self.logging.start()
        if self.tracing.enabled:
            self._startup_span = self.tracing.start_span("gatewayd.startup", None, {
                "gatewayd.version": __version__,
                "gatewayd.groups": sorted(self.groups),
                "gatewayd.plugins": len(self.config.plugins.plugins)})
        super().startService()
        # As GatewayD: plugins are loaded (or refused) first, then OnConfigLoaded
        # may change the configuration, then pools dial and servers listen.
        self.plugin_host.when_loaded().addBoth(lambda _: self._config_loaded()).addCallback(
            lambda _: self._listen_all())

    def _config_loaded(self) -> Any:
        """
        GatewayD's OnConfigLoaded: plugins get the flattened global config and
        may return changed keys.  GatewayD drops the result under its default
        policy (reference 3.4); we apply it, validated like the file.
        """
        if not self.running or not self.hooks.is_subscribed(hook.ON_CONFIG_LOADED):
            return None
        flat = flatten(to_plain(self.config.global_))
        return self.hooks.run(hook.ON_CONFIG_LOADED, dict(flat)).addCallback(
            self._apply_config_result, flat)

    def _apply_config_result(self, result: dict[str, Any], flat: dict[str, Any]) -> None:
        changed = {key: value for key, value in result.items()
                   if not key.startswith("__") and flat.get(key, _MISSING) != value}
        if not changed:
            return
        try:
            new = apply_flat(self.config.global_, changed, "plugin result (OnConfigLoaded)")
        except (ConfigError, ConfigErrors) as e:
            for line in str(e).splitlines():
                self.log.error("ignoring a plugin's configuration change: {why}", why=line)
            return
        previous, self.config = self.config, replace(self.config, global_=new)
        try:
            self._build_groups()
        except ConfigError as e:
            self.log.error("ignoring a plugin's configuration change: {why}", why=str(e))
            self.config = previous
            self._build_groups()
            return
        self.log.info("configuration changed by a plugin: {keys}", keys=", ".join(sorted(changed)))

    def _listen_all(self) -> None:
        if not self.running:
            return
        self._fire(hook.ON_BOOTING, {"status": "1"})
        for group in self.groups.values():
            for block in group.blocks.values():
                block.pool.start()
                self._fire(hook.ON_NEW_POOL, {"name": block.name, "size": block.pool.size})
        self._announce_config()
        listening = [self._listen(group) for group in self.groups.values()]
        defer.gatherResults(listening, consumeErrors=True).addCallbacks(
            self._listening, self._listen_failed)

    def _listen(self, group: ServerGroup) -> defer.Deferred[None]:
        description = listen_description(group.config.network, group.config.address)
        endpoint = serverFromString(self.reactor, description)

        def bound(port: Any) -> None:
            group.port = port
            host = port.getHost()
            name = getattr(host, "name", "")
            group.address = (f"{host.host}:{host.port}" if hasattr(host, "port")
                             else name.decode() if isinstance(name, bytes) else str(name))
            self.log.info("server {server} listening on {address} ({n} block(s): {blocks})",
                          server=group.name, address=group.address, n=len(group.blocks),
                          blocks=", ".join(group.blocks))
            self._fire(hook.ON_RUN, {"address": group.address})
            if group.config.enable_ticker:
                group.ticker = task.LoopingCall(self._tick, group)
                group.ticker.clock = self.reactor
                group.ticker.start(group.config.tick_interval or 5.0, now=False)

        return endpoint.listen(group.factory).addCallback(bound)

    def _listening(self, _: Any) -> None:
        self._fire(hook.ON_BOOTED, {"status": "0"})
        if self._startup_span is not None:
            self._startup_span.set_attribute(
                "gatewayd.listening", [f"{n}={g.address}" for n, g in sorted(self.groups.items())])
            self._end_startup(None)
        self.ready.callback({name: g.address for name, g in self.groups.items()})

    def _listen_failed(self, failure: Any) -> None:
        error = failure.value.subFailure if hasattr(failure.value, "subFailure") else failure
        self.log.error("cannot listen: {why}", why=error.getErrorMessage())
        if self._startup_span is not None:
            self._end_startup(error)
        self.ready.errback(error)

    def _end_startup(self, error: Any) -> None:
        span, self._startup_span = self._startup_span, None
        Tracing.end(span, error)

    def _tick(self, group: ServerGroup) -> None:
        self.stats.ticks_fired += 1
        n = len(group.factory.connections)
        self.log.info("{group}: {n} active connection(s)", group=group.name, n=n)
        self._fire(hook.ON_TICK, {"connections": n})

    @defer.inlineCallbacks
    def stopService(self) -> Any:  # noqa: N802
        """Stop accepting, drain sessions up to each server's drainTimeout, close."""
        if self._startup_span is not None:
            self._end_startup("stopped before listening")
        stopping = []
        for group in self.groups.values():
            if group.ticker is not None and group.ticker.running:
                group.ticker.stop()
            if group.port is not None:
                stopping.append(defer.maybeDeferred(group.port.stopListening))
        yield defer.DeferredList(stopping)
        total = sum(len(g.factory.connections) for g in self.groups.values())
        if total:
            self.log.info("draining {n} client connection(s)", n=total)
        yield defer.DeferredList([g.factory.drain(g.config.drain_timeout)
                                  for g in self.groups.values()])
        if self.hooks.is_subscribed(hook.ON_SHUTDOWN):  # before plugins are stopped
            yield self.hooks.run(hook.ON_SHUTDOWN, {"connections": 0})
        yield defer.DeferredList([b.pool.stop() for g in self.groups.values()
                                  for b in g.blocks.values()])
        yield defer.maybeDeferred(super().stopService)
        self.logging.stop()

    def _announce_config(self) -> None:
        """GatewayD's start-up notifications, once plugins are loaded (Act only)."""
        plain = to_plain(self.config.global_)
        self._fire(hook.ON_NEW_LOGGER, plain.get("loggers", {}))
        for group in self.groups.values():
            for _ in group.blocks:
                self._fire(hook.ON_NEW_PROXY, plain.get("proxies", {}))
            self._fire(hook.ON_NEW_SERVER, plain.get("servers", {}))

    def signalled(self, name: str) -> None:
        """A stop signal arrived (C{terminated}, C{interrupt}, ...): GatewayD's OnSignal."""
        self.log.info("received {signal}, stopping", signal=name)
        self._fire(hook.ON_SIGNAL, {"signal": name})

    # -- helpers ---------------------------------------------------------------------------

    def _fire(self, name: str, payload: dict[str, Any]) -> None:
        if self.hooks.is_subscribed(name):
            self._run(name, payload, self._startup_span)

    def _run(self, name: str, payload: dict[str, Any], parent: Any) -> None:
        """Run a hook; with tracing, under C{parent} (start-up hooks under C{gatewayd.startup})."""
        if parent is None:
            self.hooks.run(name, payload)
        else:
            self.hooks.run(name, payload, parent=parent)

    @property
    def version(self) -> str:
        return __version__

