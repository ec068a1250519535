# -*- test-case-name: tests.unit.test_observability_metrics -*-
"""
Prometheus metrics: GatewayD's metric families, plus the pool and latency
families PgBouncer operators look for, served over HTTP(S) by Twisted.

The data path only bumps plain ints in L{gatewayd.stats}; L{GatewayCollector}
turns them into families when Prometheus scrapes.  Events that are not
per-message (plugins loaded, hooks run, API calls) use ordinary prometheus
client objects held by L{GatewayMetrics}.

Nothing here touches prometheus_client's global C{REGISTRY} or imports
C{prometheus_client.twisted} (which installs the global reactor): the caller
passes its own L{CollectorRegistry} and reactor.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator
from urllib.parse import quote

from prometheus_client import (
    CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric, SummaryMetricFamily,
)
from prometheus_client.parser import text_string_to_metric_families
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory, Request, Site

from gatewayd.config.schema import Metrics as MetricsConfig
from gatewayd.errors import ConfigError
from gatewayd.stats import DURATION_BUCKETS, FixedHistogram, Stats

__all__ = [
    "GatewayCollector", "GatewayMetrics", "MetricsResource", "MetricsService", "metrics_service",
    "metrics_site", "parse_listen_address",
]

_BLOCK = ("group", "block")

# name -> (help, BlockStats attribute)
_CONNECTION_GAUGES = (
    ("gatewayd_client_connections", "Number of client connections", "client_connections"),
    ("gatewayd_server_connections", "Number of server connections", "server_connections"),
    ("gatewayd_tls_connections", "Number of TLS connections", "tls_connections"),
    ("gatewayd_proxied_connections", "Number of proxy connects", "proxied_connections"),
)
# name -> (help, sum attribute, count attribute)
_BYTE_SUMMARIES = (
    ("gatewayd_bytes_received_from_client", "Number of bytes received from client",
     "bytes_received_from_client", "reads_from_client"),
    ("gatewayd_bytes_sent_to_server", "Number of bytes sent to server",
     "bytes_sent_to_server", "writes_to_server"),
    ("gatewayd_bytes_received_from_server", "Number of bytes received from server",
     "bytes_received_from_server", "reads_from_server"),
    ("gatewayd_bytes_sent_to_client", "Number of bytes sent to client",
     "bytes_sent_to_client", "writes_to_client"),
)
_BLOCK_COUNTERS = (
    ("gatewayd_proxy_health_checks_total", "Number of proxy health checks",
     "proxy_health_checks"),
    ("gatewayd_proxy_passthroughs_to_client_total", "Number of successful proxy passthroughs",
     "passthroughs_to_client"),
    ("gatewayd_proxy_passthroughs_to_server_total", "Number of successful proxy passthroughs",
     "passthroughs_to_server"),
    ("gatewayd_proxy_passthrough_terminations_total",
     "Number of proxy passthrough terminations by plugins", "passthrough_terminations"),
    ("gatewayd_pool_exhausted_total",
     "Clients refused because no backend connection became free within waitTimeout",
     "pool_exhausted"),
    ("gatewayd_backend_dial_failures_total", "Failed attempts to dial the PostgreSQL server",
     "backend_dial_failures"),
)
# name -> (help, IBackendPool attribute)
_POOL_GAUGES = (
    ("gatewayd_pool_size", "Configured backend connections of the pool", "size"),
    ("gatewayd_pool_available", "Idle backend connections ready to hand out", "idle_count"),
    ("gatewayd_pool_busy", "Backend connections serving a client", "busy_count"),
    ("gatewayd_pool_waiting", "Clients queued for a backend connection", "waiting_count"),
)
_HISTOGRAMS = (
    ("gatewayd_pool_wait_seconds", "Time clients waited for a backend connection", "pool_wait"),
    ("gatewayd_query_duration_seconds", "Time from a query to its ReadyForQuery",
     "query_duration"),
    ("gatewayd_transaction_duration_seconds", "Time from BEGIN to the end of the transaction",
     "transaction_duration"),
)


class GatewayCollector:
    """
    Reads L{Stats} at scrape time and yields every per-(group, block) family.
    Registering it also adds the process, platform and GC collectors (GatewayD
    exposes Go's runtime and process collectors) unless C{runtime} is false.
    """

    def __init__(self, stats: Stats, registry: CollectorRegistry, *, runtime: bool = True) -> None:
        self.stats = stats
        registry.register(self)
        if runtime:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    def describe(self) -> list[Metric]:
        """The families without samples (lets the registry refuse a second collector)."""
        return list(self._families(Stats()))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.stats)

    def _families(self, stats: Stats) -> Iterator[Metric]:
        blocks = list(stats.blocks())
        for name, doc, attr in _CONNECTION_GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=_BLOCK)
            for b in blocks:
                gauge.add_metric((b.group, b.block), getattr(b, attr))
            yield gauge
        totals = SummaryMetricFamily("gatewayd_traffic_bytes", "Number of total bytes passed "
                                     "through GatewayD via client or server", labels=_BLOCK)
        for name, doc, sum_attr, count_attr in _BYTE_SUMMARIES:
            summary = SummaryMetricFamily(name, doc, labels=_BLOCK)
            for b in blocks:
                summary.add_metric((b.group, b.block), getattr(b, count_attr), getattr(b, sum_attr))
            yield summary
        for b in blocks:
            totals.add_metric(
                (b.group, b.block),
                sum(getattr(b, count) for _, _, _, count in _BYTE_SUMMARIES),
                sum(getattr(b, total) for _, _, total, _ in _BYTE_SUMMARIES))
        yield totals
        yield CounterMetricFamily("gatewayd_server_ticks_fired_total",
                                  "Total number of server ticks fired",
                                  value=stats.ticks_fired)
        for name, doc, attr in _BLOCK_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=_BLOCK)
            for b in blocks:
                counter.add_metric((b.group, b.block), getattr(b, attr))
            yield counter
        rejected = CounterMetricFamily(
            "gatewayd_clients_rejected_total",
            "Clients refused before a block was chosen (bad startup, TLS required, ...)",
            labels=("group",))
        for group, count in sorted(stats.clients_rejected.items()):
            rejected.add_metric((group,), count)
        yield rejected
        pools = [(b, b.pool) for b in blocks if b.pool is not None]
        for name, doc, attr in _POOL_GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=_BLOCK)
            for b, pool in pools:
                gauge.add_metric((b.group, b.block), getattr(pool, attr))
            yield gauge
        for name, doc, attr in _HISTOGRAMS:
            family = HistogramMetricFamily(name, doc, labels=_BLOCK)
            for b in blocks:
                histogram: FixedHistogram = getattr(b, attr)
                family.add_metric((b.group, b.block), histogram.cumulative(), histogram.sum)
            yield family


class GatewayMetrics:
    """
    The metrics other rooms update directly (not per message): attributes are
    named after the metric without C{gatewayd_}, e.g.
    C{metrics.plugin_hooks_executed_total.inc()}.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, namespace="gatewayd", registry=registry)

        self.plugins_loaded_total = counter("plugins_loaded_total", "Number of plugins loaded")
        self.plugin_hooks_registered_total = counter(
            "plugin_hooks_registered_total", "Number of plugin hooks registered")
        self.plugin_hooks_executed_total = counter(
            "plugin_hooks_executed_total", "Number of plugin hooks executed")
        self.api_requests_total = counter(
            "api_requests_total", "Number of API requests", ("method", "endpoint"))
        self.api_requests_errors_total = counter(
            "api_requests_errors_total", "Number of API request errors",
            ("method", "endpoint", "error"))
        self.plugin_hook_failures_total = counter(
            "plugin_hook_failures_total", "Plugin hook calls that failed or timed out",
            ("plugin", "hook"))
        self.plugin_hook_duration_seconds = Histogram(
            "plugin_hook_duration_seconds", "Time to run a hook through every plugin",
            ("hook",), namespace="gatewayd", registry=registry, buckets=DURATION_BUCKETS)


# -- HTTP -------------------------------------------------------------------------

class _Merged:
    """What one scrape encodes: the plugins' families first (as GatewayD), then ours."""

    def __init__(self, registry: Any, extra_text: Callable[[], str] | None,
                 on_bad_extra: Callable[[Exception], None]) -> None:
        self._registry = registry
        self._extra_text = extra_text
        self._on_bad_extra = on_bad_extra

    def collect(self) -> Iterator[Metric]:
        if self._extra_text is not None:
            try:
                # Parsed and re-encoded so OpenMetrics scrapes stay valid too.
                extra = list(text_string_to_metric_families(self._extra_text() or ""))
            except Exception as e:  # noqa: BLE001 - a bad plugin must not hide our metrics
                self._on_bad_extra(e)
                extra = []
            yield from extra
        yield from self._registry.collect()


class MetricsResource(Resource):
    """
    Renders C{registry} (and the plugins' text) synchronously: about 2 ms for
    hundreds of series, fine for a 15 s scrape interval.  Honours the
    OpenMetrics C{Accept} header and C{?name[]=} filters like prometheus_client.

    @ivar extra_errors: scrapes where the plugins' text could not be parsed.
    """

    def __init__(self, registry: CollectorRegistry,
                 extra_text: Callable[[], str] | None = None) -> None:
        super().__init__()
        self.registry = registry
        self.extra_text = extra_text
        self.extra_errors = 0

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted API
        return notFound()

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 - Twisted API
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encoder, content_type = choose_encoder(accept)
        source: Any = self.registry
        names = request.args.get(b"name[]") if request.args else None
        if names:
            source = self.registry.restricted_registry(n.decode("utf-8", "replace") for n in names)
        extra = None if names else self.extra_text
        body = encoder(_Merged(source, extra, self._bad_extra))
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return body

    def _bad_extra(self, error: Exception) -> None:
        self.extra_errors += 1


_INDEX = """<html>
<head><title>GatewayD Prometheus Metrics Server</title></head>
<body>
<h1>GatewayD Prometheus Metrics Server</h1>
<p><a href="{href}">Metrics</a></p>
</body>
</html>
"""


class _Branch(Resource):
    """A path prefix that is not a page itself: 404 for it and unknown children."""

    def getChild(self, path: bytes, request: Request) -> Resource:  # noqa: N802 - Twisted API
        return notFound()

    def render(self, request: Request) -> bytes:
        return notFound().render(request)


class _IndexPage(Resource):
    """C{/}: a page linking to the metrics path, as GatewayD serves."""

    isLeaf = True

    def __init__(self, path: str) -> None:
        super().__init__()
        self._body = _INDEX.format(href=quote(path)).encode("utf-8")

    def render_GET(self, request: Request) -> bytes:  # noqa: N802 - Twisted API
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return self._body


class _QuietSite(Site):
    """No access log: a scrape every few seconds is not news (GatewayD logs none)."""

    def log(self, request: Request) -> None:
        pass


def metrics_site(path: str, registry: CollectorRegistry,
                 extra_text: Callable[[], str] | None = None, *, reactor: Any,
                 timeout: float = 10.0) -> Site:
    """
    The web site: C{/} (index), C{path} (gzip when asked), 404 elsewhere.

    @param timeout: idle connection timeout in seconds.
    """
    segments = [s for s in path.strip("/").split("/") if s]
    metrics: Resource = EncodingResourceWrapper(
        MetricsResource(registry, extra_text), [GzipEncoderFactory()])
    root = _Branch()
    if not segments:
        root.putChild(b"", metrics)
    else:
        root.putChild(b"", _IndexPage("/" + "/".join(segments)))
        parent = root
        for segment in segments[:-1]:
            child = _Branch()
            parent.putChild(segment.encode("utf-8"), child)
            parent = child
        parent.putChild(segments[-1].encode("utf-8"), metrics)
    site = _QuietSite(root, timeout=timeout or 10.0, reactor=reactor)
    site.displayTracebacks = False
    site.noisy = False
    return site


def parse_listen_address(address: str) -> tuple[str, int]:
    """C{host:port} as GatewayD writes it (C{:9090}, C{[::1]:9090}) -> (interface, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    return host, int(port)


class MetricsService(Service):
    """
    Listens on the metrics endpoint while running.  A busy port fails
    C{startService} at once (GatewayD instead probes the URL and, if anything
    answers, silently serves nothing).
    """

    name = "metrics"

    def __init__(self, endpoint: IStreamServerEndpoint, site: Site) -> None:
        self.endpoint = endpoint
        self.site = site
        self.port: IListeningPort | None = None
        #: why listening failed, when it failed after C{startService} returned
        self.failure: Failure | None = None
        self._waiting: list[Deferred[IListeningPort]] = []

    def startService(self) -> None:  # noqa: N802 - Twisted API
        super().startService()
        failed: list[Failure] = []
        d = self.endpoint.listen(self.site)
        d.addCallbacks(self._listening, self._not_listening)
        d.addErrback(failed.append)
        if failed:  # TCP endpoints fail synchronously: refuse to start, loudly
            super().stopService()
            failed[0].raiseException()

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)

    def _not_listening(self, failure: Failure) -> Failure:
        self.failure = failure
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.errback(failure)
        return failure

    def when_listening(self) -> Deferred[IListeningPort]:
        """Fires with the listening port (at once when already listening)."""
        if self.port is not None:
            return succeed(self.port)
        if self.failure is not None:
            return fail(self.failure)
        d: Deferred[IListeningPort] = Deferred()
        self._waiting.append(d)
        return d

    def stopService(self) -> Deferred[None] | None:  # noqa: N802 - Twisted API
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return port.stopListening()  # type: ignore[return-value]


def metrics_service(config: MetricsConfig, registry: CollectorRegistry,
                    extra_text: Callable[[], str] | None, reactor: Any, *,
                    config_path: str | None = None,
                    key_prefix: str = "metrics.default.") -> MetricsService | None:
    """
    The metrics endpoint of C{config} (C{metrics.default}), or None when
    disabled.  HTTPS with TLS 1.2+ when both C{certFile} and C{keyFile} are set.

    @raise ConfigError: bad C{address}, C{path} or certificate files.
    """
    if not config.enabled:
        return None
    try:
        interface, port = parse_listen_address(config.address)
    except ValueError as e:
        raise ConfigError(config_path, key_prefix + "address", str(e)) from None
    if not config.path.startswith("/"):
        raise ConfigError(config_path, key_prefix + "path", f"must start with '/': {config.path!r}")
    # Twisted has one idle timeout; the shorter of GatewayD's two bounds slow clients.
    timeout = min((t for t in (config.timeout, config.read_header_timeout) if t > 0), default=10.0)
    site = metrics_site(config.path, registry, extra_text, reactor=reactor, timeout=timeout)
    ipv6 = ":" in interface
    endpoint: IStreamServerEndpoint
    if config.cert_file or config.key_file:
        if not (config.cert_file and config.key_file):
            missing = "keyFile" if config.cert_file else "certFile"
            raise ConfigError(config_path, key_prefix + missing,
                              "certFile and keyFile must be set together")
        from gatewayd.tls import server_context

        context = server_context(config.cert_file, config.key_file, "1.2",
                                 config_path=config_path, key_prefix=key_prefix)
        endpoint = SSL4ServerEndpoint(reactor, port, context, interface=interface)
    elif ipv6:
        endpoint = TCP6ServerEndpoint(reactor, port, interface=interface)
    else:
        endpoint = TCP4ServerEndpoint(reactor, port, interface=interface)
    return MetricsService(endpoint, site)
