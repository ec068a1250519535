"""
OnConfigLoaded results are applied (GatewayD drops them under its default
policy, reference 3.4), validated like the file; a bad change is ignored with
a log line and the gateway runs on the file's configuration.
"""

from __future__ import annotations

import urllib.request

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.gateway import Gateway, base_config
from tests.support.pg import wait_until
from tests.support.ports import free_port

pytestmark = pytest.mark.integration


def pool_size(port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gatewayd_pool_size":
                return sample.value
    raise AssertionError("no gatewayd_pool_size")


def start(service_pg: str, changes: dict) -> tuple[Gateway, int]:
    metrics = free_port()
    config = base_config({"writes": service_pg}, pool_size=2)
    config["metrics"] = {"default": {"enabled": True, "address": f"127.0.0.1:{metrics}"}}
    plugin = {"name": "test-config-changer",
              "module": "tests.support.plugins.config_changer:ConfigChanger",
              "config": {"set": changes}}
    return Gateway(config, {"plugins": [plugin]}).start(), metrics


def test_plugin_changes_the_pool_size(service_pg: str) -> None:
    gateway, metrics = start(service_pg, {"pools.default.writes.size": 3})
    try:
        assert pool_size(metrics) == 3
        with psycopg.connect(gateway.dsn(dbname="test")) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        wait_until(lambda: "configuration changed by a plugin: pools.default.writes.size"
                   in gateway.output(), what="the change logged")
    finally:
        assert gateway.stop() == 0


def test_invalid_change_is_ignored_with_a_log_line(service_pg: str) -> None:
    gateway, metrics = start(service_pg, {"pools.default.writes.size": 0})
    try:
        assert pool_size(metrics) == 2
        with psycopg.connect(gateway.dsn(dbname="test")) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        wait_until(lambda: "ignoring a plugin's configuration change" in gateway.output()
                   and "pools.default.writes.size" in gateway.output(), what="the refusal logged")
    finally:
        assert gateway.stop() == 0
