"""
Prometheus metrics of a real gateway after real clients: one psql session,
then pgbench (initialise, then a select-only run) through the gateway into a
database of our own on the machine's PostgreSQL.  Values are asserted
exactly wherever they are deterministic: gauges once every client has gone
and the pool has refilled, one pool acquisition per client session, and the
pump relaying every byte the server sent.
"""

from __future__ import annotations

import urllib.request
from typing import Any, Iterator

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import fresh_database, pgbench, psql
from tests.support.gateway import Gateway, base_config
from tests.support.pg import wait_until
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("observability_e2e")]

POOL = 4
LABELS = {"group": "default", "block": "writes"}
#: client sessions each step opens through the gateway (each takes one pooled backend):
#: psql connects once; pgbench -i once; a pgbench run once to read the scale and
#: settings, then once per client (-c).
PSQL_SESSIONS = 1
PGBENCH_INIT_SESSIONS = 1
PGBENCH_CLIENTS = 2
PGBENCH_TRANSACTIONS = 50
PGBENCH_RUN_SESSIONS = 1 + PGBENCH_CLIENTS


@pytest.fixture(scope="module")
def database(service_pg: str) -> Iterator[str]:
    with fresh_database(prefix="gw_obs") as name:
        yield name


@pytest.fixture(scope="module")
def gateway(service_pg: str, database: str) -> Iterator[Gateway]:
    config = base_config({"writes": service_pg}, pool_size=POOL)
    metrics_port = free_port()
    config["metrics"]["default"] = {"enabled": True, "address": f"127.0.0.1:{metrics_port}"}
    gw = Gateway(config)
    gw.metrics_port = metrics_port  # type: ignore[attr-defined]
    with gw:
        yield gw


def scrape(gw: Gateway) -> dict[str, float]:
    """{sample name: value} of the default/writes block, parsed by prometheus_client."""
    url = f"http://127.0.0.1:{gw.metrics_port}/metrics"  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels == LABELS:
                out[sample.name] = sample.value
    return out


def settled(gw: Gateway) -> dict[str, float]:
    """The metrics once every client has gone and the pool is full again."""
    def quiet() -> bool:
        m = scrape(gw)
        return (m["gatewayd_client_connections"] == 0 and m["gatewayd_pool_busy"] == 0
                and m["gatewayd_pool_available"] == POOL
                and m["gatewayd_server_connections"] == POOL)

    wait_until(quiet, timeout=30, what="clients gone and the pool refilled")
    return scrape(gw)


def test_metrics_after_psql_and_pgbench(gateway: Gateway, database: str) -> None:
    before = settled(gateway)
    assert before["gatewayd_pool_wait_seconds_count"] == 0
    assert before["gatewayd_bytes_received_from_client_count"] == 0

    # A session held open is visible in the gauges while it lasts.
    with psycopg.connect(gateway.dsn(dbname=database), autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        during = scrape(gateway)
        assert during["gatewayd_client_connections"] == 1
        assert during["gatewayd_proxied_connections"] == 1
        assert during["gatewayd_pool_busy"] == 1
        assert during["gatewayd_pool_wait_seconds_count"] == 1
        # one request, ended by ReadyForQuery 'I': one query and one transaction timed
        assert during["gatewayd_query_duration_seconds_count"] == 1
        assert during["gatewayd_transaction_duration_seconds_count"] == 1
    held = settled(gateway)
    sessions = 1

    out = psql(gateway.dsn(dbname=database), "select 1")
    assert out.stdout.strip() == "1"
    sessions += PSQL_SESSIONS
    assert settled(gateway)["gatewayd_pool_wait_seconds_count"] == sessions

    init = pgbench(gateway.port, database, "-i", "-s", "1", "-q")
    assert init.returncode == 0, init.output
    sessions += PGBENCH_INIT_SESSIONS
    assert settled(gateway)["gatewayd_pool_wait_seconds_count"] == sessions

    run = pgbench(gateway.port, database, "-n", "-S", "-c", str(PGBENCH_CLIENTS),
                  "-t", str(PGBENCH_TRANSACTIONS))
    assert run.returncode == 0, run.output
    assert run.processed == PGBENCH_CLIENTS * PGBENCH_TRANSACTIONS
    sessions += PGBENCH_RUN_SESSIONS

    m = settled(gateway)
    assert m["gatewayd_client_connections"] == 0
    assert m["gatewayd_proxied_connections"] == 0
    assert m["gatewayd_tls_connections"] == 0
    assert m["gatewayd_server_connections"] == POOL
    assert m["gatewayd_pool_size"] == POOL
    assert m["gatewayd_pool_available"] == POOL
    assert m["gatewayd_pool_busy"] == 0
    assert m["gatewayd_pool_waiting"] == 0
    # One pool acquisition per client session, none refused or queued for long.
    assert m["gatewayd_pool_wait_seconds_count"] == sessions
    assert m["gatewayd_pool_exhausted_total"] == 0
    # every pgbench -S transaction is one autocommit query: each is timed
    run_queries = PGBENCH_CLIENTS * PGBENCH_TRANSACTIONS
    assert m["gatewayd_query_duration_seconds_count"] >= run_queries + 2
    assert m["gatewayd_transaction_duration_seconds_count"] >= run_queries + 2
    assert m["gatewayd_query_duration_seconds_sum"] > 0

    # Client -> server: every query is at least one read; all of it was forwarded.
    queries = 1 + 1 + PGBENCH_CLIENTS * PGBENCH_TRANSACTIONS
    assert m["gatewayd_bytes_received_from_client_sum"] > held[
        "gatewayd_bytes_received_from_client_sum"] > 0
    assert m["gatewayd_bytes_received_from_client_count"] >= queries
    assert m["gatewayd_bytes_sent_to_server_sum"] == m["gatewayd_bytes_received_from_client_sum"]
    # Server -> client: the pump forwards every byte it reads, one write per read.
    assert m["gatewayd_bytes_received_from_server_sum"] > 0
    assert m["gatewayd_bytes_sent_to_client_sum"] == m["gatewayd_bytes_received_from_server_sum"]
    assert m["gatewayd_bytes_sent_to_client_count"] == m[
        "gatewayd_bytes_received_from_server_count"]
    # The combined summary is the four directions added up.
    directions = ("received_from_client", "sent_to_server", "received_from_server",
                  "sent_to_client")
    assert m["gatewayd_traffic_bytes_sum"] == sum(
        m[f"gatewayd_bytes_{d}_sum"] for d in directions)
    assert m["gatewayd_traffic_bytes_count"] == sum(
        m[f"gatewayd_bytes_{d}_count"] for d in directions)
    # No plugin: nothing went through the framed relay.
    assert m["gatewayd_proxy_passthroughs_to_server_total"] == 0
    assert m["gatewayd_proxy_passthrough_terminations_total"] == 0


# -- traces: `gatewayd run --tracing` exporting to an OTLP/gRPC collector ---------------------

class Collector:
    """A minimal OTLP/gRPC trace collector in this process: keeps every span it is sent."""

    def __init__(self) -> None:
        import threading
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2, trace_service_pb2_grpc,
        )

        self.spans: list[Any] = []
        self.resources: list[dict[str, str]] = []
        self._lock = threading.Lock()
        collector = self

        class Servicer(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC API
                with collector._lock:
                    for resource_spans in request.resource_spans:
                        collector.resources.append({
                            kv.key: kv.value.string_value
                            for kv in resource_spans.resource.attributes})
                        for scope_spans in resource_spans.scope_spans:
                            collector.spans.extend(scope_spans.spans)
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def by_name(self, name: str) -> list[Any]:
        with self._lock:
            return [s for s in self.spans if s.name == name]

    def stop(self) -> None:
        self.server.stop(grace=None)


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def test_tracing_flag_exports_startup_and_connection_spans(service_pg: str, database: str) -> None:
    collector = Collector()
    try:
        gw = Gateway(base_config({"writes": service_pg}, pool_size=2),
                     extra_args=["--tracing", "--collector-url", f"127.0.0.1:{collector.port}"])
        with gw:
            out = psql(gw.dsn(dbname=database), "select 1")
            assert out.stdout.strip() == "1"
        assert gw.proc is not None and gw.proc.returncode == 0, gw.output()
        # The exit flushed the batch processor: everything has arrived, no polling needed.
        startup = collector.by_name("gatewayd.startup")
        assert len(startup) == 1
        assert startup[0].parent_span_id == b""
        # The test harness's own "is it listening?" probes connect and close without
        # a startup packet: spans of their own, with no block and no children.
        connections = [s for s in collector.by_name("gatewayd.connection")
                       if "gatewayd.block" in attributes(s)]
        assert len(connections) == 1, [s.name for s in collector.spans]
        conn = connections[0]
        assert conn.parent_span_id == b"" and conn.trace_id != startup[0].trace_id
        conn_attrs = attributes(conn)
        assert conn_attrs["gatewayd.group"] == "default"
        assert conn_attrs["gatewayd.block"] == "writes"
        assert conn_attrs["client.address"] == "127.0.0.1"
        for name in ("gatewayd.pool.acquire", "gatewayd.session"):
            (child,) = collector.by_name(name)
            assert child.parent_span_id == conn.span_id, name
            assert child.trace_id == conn.trace_id, name
        (session,) = collector.by_name("gatewayd.session")
        assert attributes(session)["db.namespace"] == database
        assert {r.get("service.name") for r in collector.resources} == {"gatewayd"}
    finally:
        collector.stop()
