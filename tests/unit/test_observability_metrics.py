"""
Prometheus exposition of L{gatewayd.stats}, the metrics other rooms update,
and the HTTP resource/service (through Twisted's fakes, no sockets).
"""

from __future__ import annotations

import gzip

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import DuplicateTimeseries
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.config.schema import Metrics
from gatewayd.errors import ConfigError
from gatewayd.interfaces import IBackendPool
from gatewayd.observability.metrics import (
    GatewayCollector, GatewayMetrics, MetricsResource, metrics_service, metrics_site,
    parse_listen_address,
)
from gatewayd.stats import Stats

GATEWAYD_FAMILIES = {
    # name in the exposition -> type (gatewayd.md 8.1)
    "gatewayd_client_connections": "gauge",
    "gatewayd_server_connections": "gauge",
    "gatewayd_tls_connections": "gauge",
    "gatewayd_proxied_connections": "gauge",
    "gatewayd_bytes_received_from_client": "summary",
    "gatewayd_bytes_sent_to_server": "summary",
    "gatewayd_bytes_received_from_server": "summary",
    "gatewayd_bytes_sent_to_client": "summary",
    "gatewayd_traffic_bytes": "summary",
    "gatewayd_server_ticks_fired_total": "counter",
    "gatewayd_proxy_health_checks_total": "counter",
    "gatewayd_proxy_passthroughs_to_client_total": "counter",
    "gatewayd_proxy_passthroughs_to_server_total": "counter",
    "gatewayd_proxy_passthrough_terminations_total": "counter",
    "gatewayd_pool_size": "gauge",
    "gatewayd_pool_available": "gauge",
    "gatewayd_pool_busy": "gauge",
    "gatewayd_pool_waiting": "gauge",
    "gatewayd_pool_wait_seconds": "histogram",
    "gatewayd_query_duration_seconds": "histogram",
    "gatewayd_transaction_duration_seconds": "histogram",
    "gatewayd_pool_exhausted_total": "counter",
    "gatewayd_backend_dial_failures_total": "counter",
    "gatewayd_clients_rejected_total": "counter",
}


@implementer(IBackendPool)
class FakePool:
    """A pool with fixed numbers: the collector only reads these four attributes."""

    def __init__(self, size: int, idle: int, busy: int, waiting: int) -> None:
        self.size, self.idle_count, self.busy_count, self.waiting_count = size, idle, busy, waiting
        self.healthy = True

    def acquire(self, timeout: float) -> object:
        raise NotImplementedError

    def release(self, connection: object) -> None:
        raise NotImplementedError

    def start(self) -> None:
        pass

    def stop(self) -> object:
        return None


def known_stats() -> Stats:
    stats = Stats()
    w = stats.block("default", "writes")
    w.client_connections, w.server_connections = 3, 5
    w.tls_connections, w.proxied_connections = 1, 3
    w.bytes_received_from_client, w.reads_from_client = 1000, 10
    w.bytes_sent_to_server, w.writes_to_server = 900, 9
    w.bytes_received_from_server, w.reads_from_server = 5000, 20
    w.bytes_sent_to_client, w.writes_to_client = 4800, 19
    w.proxy_health_checks, w.passthroughs_to_client, w.passthroughs_to_server = 4, 19, 9
    w.passthrough_terminations, w.pool_exhausted, w.backend_dial_failures = 2, 1, 6
    w.query_duration.observe(0.0003)
    w.query_duration.observe(0.004)
    w.query_duration.observe(75.0)
    w.pool = FakePool(size=10, idle=6, busy=4, waiting=2)
    r = stats.block("tenant1", "reads")
    r.client_connections = 7
    r.pool_wait.observe(0.02)
    stats.ticks_fired = 12
    stats.clients_rejected["default"] = 3
    return stats


def exposition(stats: Stats) -> list[str]:
    registry = CollectorRegistry()
    GatewayCollector(stats, registry, runtime=False)
    return generate_latest(registry).decode().splitlines()


def test_fake_pool_provides_interface() -> None:
    assert verifyObject(IBackendPool, FakePool(1, 1, 0, 0))


def test_exact_exposition_lines() -> None:
    lines = exposition(known_stats())
    expected = [
        '# TYPE gatewayd_client_connections gauge',
        'gatewayd_client_connections{block="writes",group="default"} 3.0',
        'gatewayd_client_connections{block="reads",group="tenant1"} 7.0',
        'gatewayd_server_connections{block="writes",group="default"} 5.0',
        'gatewayd_tls_connections{block="writes",group="default"} 1.0',
        'gatewayd_proxied_connections{block="writes",group="default"} 3.0',
        '# TYPE gatewayd_bytes_received_from_client summary',
        'gatewayd_bytes_received_from_client_count{block="writes",group="default"} 10.0',
        'gatewayd_bytes_received_from_client_sum{block="writes",group="default"} 1000.0',
        'gatewayd_bytes_sent_to_server_count{block="writes",group="default"} 9.0',
        'gatewayd_bytes_sent_to_server_sum{block="writes",group="default"} 900.0',
        'gatewayd_bytes_received_from_server_count{block="writes",group="default"} 20.0',
        'gatewayd_bytes_received_from_server_sum{block="writes",group="default"} 5000.0',
        'gatewayd_bytes_sent_to_client_count{block="writes",group="default"} 19.0',
        'gatewayd_bytes_sent_to_client_sum{block="writes",group="default"} 4800.0',
        '# TYPE gatewayd_traffic_bytes summary',
        'gatewayd_traffic_bytes_count{block="writes",group="default"} 58.0',
        'gatewayd_traffic_bytes_sum{block="writes",group="default"} 11700.0',
        'gatewayd_traffic_bytes_count{block="reads",group="tenant1"} 0.0',
        '# TYPE gatewayd_server_ticks_fired_total counter',
        'gatewayd_server_ticks_fired_total 12.0',
        'gatewayd_proxy_health_checks_total{block="writes",group="default"} 4.0',
        'gatewayd_proxy_passthroughs_to_client_total{block="writes",group="default"} 19.0',
        'gatewayd_proxy_passthroughs_to_server_total{block="writes",group="default"} 9.0',
        'gatewayd_proxy_passthrough_terminations_total{block="writes",group="default"} 2.0',
        'gatewayd_pool_exhausted_total{block="writes",group="default"} 1.0',
        'gatewayd_backend_dial_failures_total{block="writes",group="default"} 6.0',
        'gatewayd_clients_rejected_total{group="default"} 3.0',
        'gatewayd_pool_size{block="writes",group="default"} 10.0',
        'gatewayd_pool_available{block="writes",group="default"} 6.0',
        'gatewayd_pool_busy{block="writes",group="default"} 4.0',
        'gatewayd_pool_waiting{block="writes",group="default"} 2.0',
        '# TYPE gatewayd_query_duration_seconds histogram',
        'gatewayd_query_duration_seconds_bucket{block="writes",group="default",le="0.00025"} 0.0',
        'gatewayd_query_duration_seconds_bucket{block="writes",group="default",le="0.0005"} 1.0',
        'gatewayd_query_duration_seconds_bucket{block="writes",group="default",le="0.005"} 2.0',
        'gatewayd_query_duration_seconds_bucket{block="writes",group="default",le="60.0"} 2.0',
        'gatewayd_query_duration_seconds_bucket{block="writes",group="default",le="+Inf"} 3.0',
        'gatewayd_query_duration_seconds_count{block="writes",group="default"} 3.0',
        'gatewayd_query_duration_seconds_sum{block="writes",group="default"} 75.0043',
        'gatewayd_pool_wait_seconds_bucket{block="reads",group="tenant1",le="0.01"} 0.0',
        'gatewayd_pool_wait_seconds_bucket{block="reads",group="tenant1",le="0.025"} 1.0',
        'gatewayd_pool_wait_seconds_sum{block="reads",group="tenant1"} 0.02',
    ]
    missing = [line for line in expected if line not in lines]
    assert missing == []
    # A block without a pool has no pool gauges (rather than zeros that look like an outage).
    assert not any(line.startswith("gatewayd_pool_size{") and "tenant1" in line for line in lines)


def test_families_names_types_and_labels() -> None:
    text = "\n".join(exposition(known_stats())) + "\n"
    families = {f.name: f for f in text_string_to_metric_families(text)}
    seen = {}
    for family in families.values():
        exposed = family.name + "_total" if family.type == "counter" else family.name
        seen[exposed] = family.type
    assert seen == GATEWAYD_FAMILIES
    for family in families.values():
        for sample in family.samples:
            labels = set(sample.labels) - {"le"}
            if family.name == "gatewayd_server_ticks_fired":
                assert labels == set()
            elif family.name == "gatewayd_clients_rejected":
                assert labels == {"group"}
            else:
                assert labels == {"group", "block"}, (family.name, sample)


def test_scrape_reads_current_values() -> None:
    stats = Stats()
    registry = CollectorRegistry()
    GatewayCollector(stats, registry, runtime=False)
    assert registry.get_sample_value(
        "gatewayd_client_connections", {"group": "default", "block": "b"}) is None
    stats.block("default", "b").client_connections += 2
    assert registry.get_sample_value(
        "gatewayd_client_connections", {"group": "default", "block": "b"}) == 2
    stats.block("default", "b").client_connections -= 1
    assert registry.get_sample_value(
        "gatewayd_client_connections", {"group": "default", "block": "b"}) == 1


def test_runtime_collectors_and_duplicate_registration() -> None:
    registry = CollectorRegistry()
    GatewayCollector(Stats(), registry)
    names = {f.name for f in registry.collect()}
    assert "python_info" in names
    assert "python_gc_objects_collected" in names
    with pytest.raises(DuplicateTimeseries):
        GatewayCollector(Stats(), registry, runtime=False)


def test_gateway_metrics_objects() -> None:
    registry = CollectorRegistry()
    m = GatewayMetrics(registry)
    m.plugins_loaded_total.inc(2)
    m.plugin_hooks_registered_total.inc(5)
    m.plugin_hooks_executed_total.inc()
    m.api_requests_total.labels(method="GET", endpoint="/v1/status").inc()
    m.api_requests_errors_total.labels(method="GET", endpoint="/v1/x", error="not found").inc()
    m.plugin_hook_failures_total.labels(plugin="cache", hook="onTrafficFromClient").inc()
    m.plugin_hook_duration_seconds.labels(hook="onTrafficFromClient").observe(0.002)
    value = registry.get_sample_value
    assert value("gatewayd_plugins_loaded_total") == 2
    assert value("gatewayd_plugin_hooks_registered_total") == 5
    assert value("gatewayd_plugin_hooks_executed_total") == 1
    assert value("gatewayd_api_requests_total", {"method": "GET", "endpoint": "/v1/status"}) == 1
    assert value("gatewayd_api_requests_errors_total",
                 {"method": "GET", "endpoint": "/v1/x", "error": "not found"}) == 1
    assert value("gatewayd_plugin_hook_failures_total",
                 {"plugin": "cache", "hook": "onTrafficFromClient"}) == 1
    assert value("gatewayd_plugin_hook_duration_seconds_bucket",
                 {"hook": "onTrafficFromClient", "le": "0.0025"}) == 1
    assert value("gatewayd_plugin_hook_duration_seconds_bucket",
                 {"hook": "onTrafficFromClient", "le": "0.001"}) == 0


# -- HTTP resource -----------------------------------------------------------------

PLUGIN_TEXT = """# HELP cache_hits_total Cache hits
# TYPE cache_hits_total counter
cache_hits_total{plugin="gatewayd_plugin_cache"} 42
"""


def render(resource: MetricsResource, *, accept: str | None = None,
           args: dict[bytes, list[bytes]] | None = None) -> tuple[DummyRequest, bytes]:
    request = DummyRequest([b""])
    if accept:
        request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
    if args:
        request.args = args
    body = resource.render_GET(request)
    return request, body


def registry_with_stats() -> CollectorRegistry:
    registry = CollectorRegistry()
    GatewayCollector(known_stats(), registry, runtime=False)
    return registry


def test_resource_text_format_with_plugin_metrics_first() -> None:
    resource = MetricsResource(registry_with_stats(), lambda: PLUGIN_TEXT)
    request, body = render(resource)
    assert request.responseHeaders.getRawHeaders(b"content-type") == [
        b"text/plain; version=0.0.4; charset=utf-8"]
    text = body.decode()
    assert text.index('cache_hits_total{plugin="gatewayd_plugin_cache"} 42.0') < text.index(
        "gatewayd_client_connections{")
    assert 'gatewayd_server_ticks_fired_total 12.0' in text


def test_resource_openmetrics_negotiation() -> None:
    resource = MetricsResource(registry_with_stats(), lambda: PLUGIN_TEXT)
    request, body = render(resource, accept="application/openmetrics-text; version=1.0.0")
    content_type = request.responseHeaders.getRawHeaders(b"content-type")[0].decode()
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert text.count("# EOF") == 1  # the plugins' text was merged, not pasted
    assert 'cache_hits_total{plugin="gatewayd_plugin_cache"} 42.0' in text
    assert OPENMETRICS.startswith("application/openmetrics-text")


def test_resource_bad_plugin_text_keeps_our_metrics() -> None:
    resource = MetricsResource(registry_with_stats(), lambda: "this is { not prometheus\n")
    _, body = render(resource)
    assert b"gatewayd_client_connections{" in body
    assert resource.extra_errors == 1


def test_resource_name_filter() -> None:
    resource = MetricsResource(registry_with_stats(), lambda: PLUGIN_TEXT)
    _, body = render(resource, args={b"name[]": [b"gatewayd_server_ticks_fired_total"]})
    assert body.decode().splitlines()[-1] == "gatewayd_server_ticks_fired_total 12.0"
    assert b"gatewayd_client_connections" not in body
    assert b"cache_hits_total" not in body


def test_parse_listen_address() -> None:
    assert parse_listen_address("localhost:9090") == ("127.0.0.1", 9090)
    assert parse_listen_address("0.0.0.0:9090") == ("0.0.0.0", 9090)
    assert parse_listen_address(":9090") == ("", 9090)
    assert parse_listen_address("[::1]:9091") == ("::1", 9091)
    with pytest.raises(ValueError):
        parse_listen_address("localhost")


def test_disabled_metrics_has_no_service() -> None:
    assert metrics_service(Metrics(enabled=False), CollectorRegistry(), None,
                           MemoryReactorClock()) is None


@pytest.mark.parametrize("config,key", [
    (Metrics(address="nowhere"), "metrics.default.address"),
    (Metrics(path="metrics"), "metrics.default.path"),
    (Metrics(cert_file="/nonexistent/cert.pem"), "metrics.default.keyFile"),
    (Metrics(cert_file="/nonexistent/c.pem", key_file="/nonexistent/k.pem"),
     "metrics.default.certFile"),
])
def test_bad_config_names_the_key(config: Metrics, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        metrics_service(config, CollectorRegistry(), None, MemoryReactorClock(),
                        config_path="etc/gatewayd.yaml")
    assert info.value.key == key
    assert str(info.value).startswith(f"etc/gatewayd.yaml: {key}: ")


def http_get(site, path: bytes, headers: bytes = b"") -> bytes:
    """One HTTP/1.1 request through the site's protocol and a StringTransport."""
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET " + path + b" HTTP/1.1\r\nHost: metrics\r\n" + headers
                          + b"Connection: close\r\n\r\n")
    return transport.value()


def split_response(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.split(b"\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    if headers.get(b"transfer-encoding") == b"chunked":
        chunks, rest = [], body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            chunks.append(rest[:size])
            rest = rest[size + 2:]
        body = b"".join(chunks)
    return status, headers, body


def test_service_listens_on_configured_address_and_serves_paths() -> None:
    reactor = MemoryReactorClock()
    registry = registry_with_stats()
    service = metrics_service(Metrics(address="127.0.0.1:9123", path="/custom/metrics"),
                              registry, lambda: PLUGIN_TEXT, reactor)
    assert service is not None
    service.startService()
    assert len(reactor.tcpServers) == 1
    port, site, _, interface = reactor.tcpServers[0]
    assert (port, interface) == (9123, "127.0.0.1")
    assert service.when_listening().result is not None

    status, headers, body = split_response(http_get(site, b"/custom/metrics"))
    assert status == b"HTTP/1.1 200 OK"
    assert headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert b'gatewayd_client_connections{block="writes",group="default"} 3.0' in body

    status, headers, body = split_response(
        http_get(site, b"/custom/metrics", b"Accept-Encoding: gzip\r\n"))
    assert headers[b"content-encoding"] == b"gzip"
    assert b"gatewayd_server_ticks_fired_total 12.0" in gzip.decompress(body)

    status, headers, body = split_response(http_get(site, b"/"))
    assert status == b"HTTP/1.1 200 OK"
    assert b'<a href="/custom/metrics">' in body

    for missing in (b"/custom", b"/custom/metrics/extra", b"/other"):
        status, _, _ = split_response(http_get(site, missing))
        assert status == b"HTTP/1.1 404 Not Found", missing
    service.stopService()


def test_service_ipv6_interface() -> None:
    reactor = MemoryReactorClock()
    service = metrics_service(Metrics(address="[::1]:9124"), CollectorRegistry(), None, reactor)
    assert service is not None
    service.startService()
    assert reactor.tcpServers[0][0] == 9124
    assert reactor.tcpServers[0][3] == "::1"


def test_metrics_at_root_path() -> None:
    site = metrics_site("/", registry_with_stats(), reactor=MemoryReactorClock())
    status, _, body = split_response(http_get(site, b"/"))
    assert status == b"HTTP/1.1 200 OK"
    assert b"gatewayd_server_ticks_fired_total 12.0" in body


def test_idle_connections_time_out_on_the_injected_clock() -> None:
    reactor = MemoryReactorClock()
    service = metrics_service(Metrics(address="127.0.0.1:9125", timeout=3.0,
                                      read_header_timeout=5.0),
                              CollectorRegistry(), None, reactor)
    service.startService()
    site = reactor.tcpServers[0][1]
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50001))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\n")  # and then nothing more
    reactor.advance(2.9)
    assert not transport.disconnecting
    reactor.advance(0.2)
    assert transport.disconnecting


def test_no_global_reactor_and_no_global_registry() -> None:
    """Importing and building everything must leave twistd free to pick its reactor."""
    import subprocess
    import sys

    code = """
import sys
from prometheus_client import REGISTRY, CollectorRegistry
from twisted.internet.testing import MemoryReactorClock
from gatewayd.config.schema import Logger, Metrics
from gatewayd.observability.logging import GatewayLogging
from gatewayd.observability.metrics import GatewayCollector, GatewayMetrics, metrics_service
from gatewayd.observability.tracing import Tracing
from gatewayd.stats import Stats
before = set(REGISTRY._names_to_collectors)
registry = CollectorRegistry()
GatewayCollector(Stats(), registry)
GatewayMetrics(registry)
metrics_service(Metrics(), registry, None, MemoryReactorClock()).startService()
GatewayLogging({"default": Logger(output=["stdout"])}).logger("default", "x").info("hi")
Tracing().start_span("x").end()
assert "twisted.internet.reactor" not in sys.modules, "global reactor imported"
assert "prometheus_client.twisted" not in sys.modules
assert set(REGISTRY._names_to_collectors) == before, "global registry touched"
print("clean")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "clean"
