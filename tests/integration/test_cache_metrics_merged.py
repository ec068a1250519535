"""The in-process cache plugin's metrics reach the gateway's /metrics, labelled plugin=..."""

from __future__ import annotations

import subprocess
import tempfile
import urllib.request
import uuid

import psycopg
import pytest

from tests.support.gateway import Gateway, base_config
from tests.support.pg import wait_until
from tests.support.ports import free_port

pytestmark = pytest.mark.integration

DIRECT = "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"


def test_cache_hits_are_merged_into_gateway_metrics(service_pg: str, redis_service: str) -> None:
    table = f"gw_cache_merge_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DIRECT, autocommit=True) as conn:
        conn.execute(f"create table {table}(id int primary key, v text)")
        conn.execute(f"insert into {table} values (1, 'one')")
    metrics = free_port()
    config = base_config({"writes": service_pg})
    config["metrics"] = {"default": {"enabled": True, "address": f"127.0.0.1:{metrics}"}}
    plugins = {"metricsMergerPeriod": "200ms", "plugins": [{
        "name": "gatewayd-plugin-cache", "module": "examples.cache.plugin:CachePlugin",
        "config": {"redisURL": "redis://127.0.0.1:6379/0",
                   "keyPrefix": f"gwtest:{uuid.uuid4().hex[:8]}:", "expiry": "1m",
                   "metricsUnixDomainSocket": f"{tempfile.mkdtemp()}/cache.sock"}}]}
    try:
        with Gateway(config, plugins) as gateway:
            for _ in range(2):
                subprocess.run(["psql", "-X", "-At", "-d", gateway.dsn(dbname="test"), "-c",
                                f"select v from {table} where id = 1"], check=True,
                               capture_output=True, timeout=60)

            def merged_hits() -> float:
                text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics",
                                              timeout=10).read().decode()
                for line in text.splitlines():
                    if line.startswith('gatewayd_cache_hits_total{plugin="gatewayd_plugin_cache"}'):
                        return float(line.rsplit(" ", 1)[1])
                return 0.0

            wait_until(lambda: merged_hits() == 1.0, what="the merged cache hit counter")
    finally:
        with psycopg.connect(DIRECT, autocommit=True) as conn:
            conn.execute(f"drop table if exists {table}")
