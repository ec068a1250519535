"""etc/prometheus.yml and etc/grafana-dashboard.json match what gatewayd exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import CollectorRegistry

from gatewayd.observability.metrics import GatewayCollector, GatewayMetrics
from gatewayd.stats import Stats

ETC = Path(__file__).resolve().parents[2] / "etc"


class _Pool:
    size, idle_count, busy_count, waiting_count = 4, 2, 2, 0


def exported() -> dict[str, set[str]]:
    """Sample name -> label names, with every family populated once."""
    stats = Stats()
    stats.block("default", "writes").pool = _Pool()
    stats.clients_rejected["default"] = 1
    registry = CollectorRegistry()
    GatewayCollector(stats, registry, runtime=False)
    metrics = GatewayMetrics(registry)
    metrics.api_requests_total.labels("GET", "/healthz").inc()
    metrics.api_requests_errors_total.labels("GET", "/healthz", "Unavailable").inc()
    metrics.plugin_hook_failures_total.labels("p", "onTick").inc()
    metrics.plugin_hook_duration_seconds.labels("onTick").observe(0.01)
    metrics.plugins_loaded_total.inc()
    metrics.plugin_hooks_registered_total.inc()
    metrics.plugin_hooks_executed_total.inc()
    found: dict[str, set[str]] = {}
    for family in registry.collect():
        for sample in family.samples:
            found.setdefault(sample.name, set()).update(sample.labels)
    return found


def dashboard() -> dict[str, Any]:
    return json.loads((ETC / "grafana-dashboard.json").read_text())


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def test_prometheus_scrapes_the_configured_metrics_endpoint() -> None:
    scrape = yaml.safe_load((ETC / "prometheus.yml").read_text())
    gatewayd = yaml.safe_load((ETC / "gatewayd.yaml").read_text())["metrics"]["default"]
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "gatewayd")
    assert job["metrics_path"] == gatewayd["path"]
    assert job["static_configs"][0]["targets"] == [gatewayd["address"]]
    assert job["scrape_timeout"] < job["scrape_interval"]


def test_every_metric_in_the_dashboard_is_exported_with_those_labels() -> None:
    names = exported()
    used = set()
    for expr in expressions():
        for metric in re.findall(r"\bgatewayd_[a-z_]+", expr):
            used.add(metric)
            assert metric in names, f"{metric} is not exported ({expr})"
            for group in re.findall(r"by \(([^)]*)\)", expr):
                labels = {label.strip() for label in group.split(",")} - {"le"}
                assert labels <= names[metric], f"{metric} has no label {labels - names[metric]}"
            for label in re.findall(r"(\w+)=~?\"", expr):
                assert label in names[metric] | {"job", "instance"}, (metric, label)
    # The panels the issue asks for are there.
    for wanted in ("gatewayd_client_connections", "gatewayd_pool_available", "gatewayd_pool_busy",
                   "gatewayd_pool_waiting", "gatewayd_pool_wait_seconds_bucket",
                   "gatewayd_bytes_received_from_client_sum", "gatewayd_bytes_sent_to_client_sum",
                   "gatewayd_plugin_hooks_executed_total", "gatewayd_api_requests_total"):
        assert wanted in used


def test_dashboard_layout_and_variables() -> None:
    dash = dashboard()
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert variables == {"datasource", "job", "instance", "group"}
    for expr in expressions():
        assert 'job="$job"' in expr and 'instance=~"$instance"' in expr
