"""
Telemetry over real sockets: the metrics endpoint over HTTP and HTTPS on a
free port, and spans exported by L{setup_otlp} to an in-process OTLP/gRPC
collector.  (Lives next to the logging tests because the observability room
owns tests/integration/test_logging*.py.)
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
import urllib.request
from concurrent import futures

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client import CollectorRegistry
from twisted.internet import threads
from twisted.trial.unittest import TestCase

from gatewayd.config.schema import Metrics
from gatewayd.observability.metrics import GatewayCollector, GatewayMetrics, metrics_service
from gatewayd.observability.tracing import Tracing, setup_otlp
from gatewayd.stats import Stats

pytestmark = pytest.mark.integration


def self_signed(directory: str) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = f"{directory}/cert.pem", f"{directory}/key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def fetch(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str, bytes, str | None]:
    """GET in a worker thread: status, content type, body, TLS version."""
    versions: list[str | None] = []

    class Handler(urllib.request.HTTPSHandler):
        def https_open(self, req):  # noqa: D102
            response = super().https_open(req)
            versions.append(response.fp.raw._sock.version())  # type: ignore[attr-defined]
            return response

    opener = urllib.request.build_opener(Handler(context=context))
    with opener.open(url, timeout=15) as response:
        return (response.status, response.headers["Content-Type"], response.read(),
                versions[0] if versions else None)


class MetricsEndpointTests(TestCase):
    """The service on a real port, scraped by a real HTTP client."""

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.stats = Stats()
        block = self.stats.block("default", "writes")
        block.client_connections = 4
        self.stats.ticks_fired = 9
        self.registry = CollectorRegistry()
        GatewayCollector(self.stats, self.registry)
        GatewayMetrics(self.registry).plugins_loaded_total.inc(2)

    def start(self, config: Metrics):
        service = metrics_service(config, self.registry,
                                  lambda: 'plugin_up{plugin="cache"} 1\n', self.reactor)
        assert service is not None
        service.startService()
        self.addCleanup(service.stopService)
        return service.port.getHost().port

    async def test_http(self) -> None:
        port = self.start(Metrics(address="127.0.0.1:0", path="/metrics"))
        status, content_type, body, _ = await threads.deferToThread(
            fetch, f"http://127.0.0.1:{port}/metrics")
        text = body.decode()
        self.assertEqual(status, 200)
        self.assertTrue(content_type.startswith("text/plain; version=0.0.4"))
        self.assertIn('gatewayd_client_connections{block="writes",group="default"} 4.0', text)
        self.assertIn("gatewayd_server_ticks_fired_total 9.0", text)
        self.assertIn("gatewayd_plugins_loaded_total 2.0", text)
        self.assertIn("process_cpu_seconds_total", text)
        self.assertLess(text.index('plugin_up{plugin="cache"} 1.0'),
                        text.index("gatewayd_client_connections"))
        self.stats.block("default", "writes").client_connections = 1
        _, _, body, _ = await threads.deferToThread(fetch, f"http://127.0.0.1:{port}/metrics")
        self.assertIn(b'gatewayd_client_connections{block="writes",group="default"} 1.0', body)

    async def test_https(self) -> None:
        cert, key = self._tls()
        port = self.start(Metrics(address="127.0.0.1:0", cert_file=cert, key_file=key))
        context = ssl.create_default_context(cafile=cert)
        status, _, body, version = await threads.deferToThread(
            fetch, f"https://localhost:{port}/metrics", context)
        self.assertEqual(status, 200)
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        self.assertIn(b"gatewayd_server_ticks_fired_total 9.0", body)

    def _tls(self) -> tuple[str, str]:
        import shutil
        import tempfile

        directory = tempfile.mkdtemp(prefix="gw-metrics-tls-")
        self.addCleanup(shutil.rmtree, directory, True)
        return self_signed(directory)

    def test_busy_port_fails_start(self) -> None:
        port = self.start(Metrics(address="127.0.0.1:0"))
        second = metrics_service(Metrics(address=f"127.0.0.1:{port}"), self.registry, None,
                                 self.reactor)
        from twisted.internet.error import CannotListenError

        self.assertRaises(CannotListenError, second.startService)
        self.assertFalse(second.running)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.arrived = threading.Event()

    def Export(self, request, context):  # noqa: N802 - gRPC API
        self.requests.append(request)
        self.arrived.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_setup_otlp_exports_to_a_collector() -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        provider = setup_otlp(f"127.0.0.1:{port}", "1.2.3", set_global=False)
        tracing = Tracing(provider)
        parent = tracing.start_span("connection", attributes={"group": "default"})
        child = tracing.start_span("hook.onOpened", parent_span=parent)
        child.end()
        parent.end()
        assert provider.force_flush(timeout_millis=15000)
        assert collector.arrived.wait(15)
        provider.shutdown()
    finally:
        server.stop(None)
    resource_spans = [rs for request in collector.requests for rs in request.resource_spans]
    attributes = {kv.key: kv.value.string_value
                  for kv in resource_spans[0].resource.attributes}
    assert attributes["service.name"] == "gatewayd"
    assert attributes["service.version"] == "1.2.3"
    spans = {span.name: span for rs in resource_spans for scope in rs.scope_spans
             for span in scope.spans}
    assert set(spans) == {"connection", "hook.onOpened"}
    assert spans["hook.onOpened"].parent_span_id == spans["connection"].span_id
    assert spans["hook.onOpened"].trace_id == spans["connection"].trace_id
    assert spans["connection"].parent_span_id == b""
