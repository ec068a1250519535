"""
Pool limits seen by real clients: more clients than backend connections are
queued and served in turn; past C{waitTimeout} (or C{maxWaiting}) a client
gets SQLSTATE 53300; the pool gauges on the Prometheus endpoint follow.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Iterator

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import wire
from tests.support.gateway import Gateway
from tests.support.groups import multi_config
from tests.support.pg import wait_until
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("core_pool")]


@pytest.fixture(scope="module")
def gateway(service_pg: str) -> Iterator[Gateway]:
    config = multi_config({
        "default": {"blocks": {"writes": service_pg}, "pool_size": 2},
        "tight": {"blocks": {"writes": service_pg}, "pool_size": 1,
                  "pool": {"waitTimeout": "1s"}},
        "limited": {"blocks": {"writes": service_pg}, "pool_size": 1,
                    "pool": {"maxWaiting": 1, "waitTimeout": "30s"}},
    })
    metrics_port = free_port()
    config["metrics"]["default"] = {"enabled": True, "address": f"127.0.0.1:{metrics_port}"}
    gw = Gateway(config)
    gw.metrics_port = metrics_port  # type: ignore[attr-defined]
    with gw:
        yield gw


def metrics(gw: Gateway) -> dict[tuple[str, str, str], float]:
    """{(sample name, group, block): value} from the gateway's Prometheus endpoint."""
    url = f"http://127.0.0.1:{gw.metrics_port}/metrics"  # type: ignore[attr-defined]
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "group" in sample.labels and "le" not in sample.labels:
                out[(sample.name, sample.labels["group"], sample.labels.get("block", ""))] = \
                    sample.value
    return out


def gauge(gw: Gateway, name: str, group: str = "default") -> float:
    return metrics(gw).get((name, group, "writes"), -1)


def test_five_clients_on_two_connections_are_served_in_turn(gateway: Gateway) -> None:
    spans: list[tuple[float, float]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(5)

    def client() -> None:
        try:
            start.wait()
            with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
                began = time.monotonic()
                conn.execute("select pg_sleep(0.5)")
                ended = time.monotonic()
            with lock:
                spans.append((began, ended))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(spans) == 5
    # Never more than two sessions at once: the others waited for a connection.
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    busy = peak = 0
    for _, step in events:
        busy += step
        peak = max(peak, busy)
    assert peak == 2


def test_waiters_show_in_pool_gauges_and_are_served_fifo(gateway: Gateway) -> None:
    holders = [psycopg.connect(gateway.dsn(), autocommit=True) for _ in range(2)]
    served: list[int] = []
    lock = threading.Lock()

    def waiter(n: int) -> None:
        with psycopg.connect(gateway.dsn(), autocommit=True) as conn:
            with lock:
                served.append(n)
            conn.execute("select 1")

    threads = []
    try:
        wait_until(lambda: gauge(gateway, "gatewayd_pool_busy") == 2, what="2 busy")
        for n in range(3):
            t = threading.Thread(target=waiter, args=(n,))
            t.start()
            threads.append(t)
            wait_until(lambda: gauge(gateway, "gatewayd_pool_waiting") == n + 1,
                       what=f"{n + 1} waiting")
        assert served == []
        assert gauge(gateway, "gatewayd_pool_size") == 2
        assert gauge(gateway, "gatewayd_pool_available") == 0
    finally:
        for conn in holders:
            conn.close()
    for t in threads:
        t.join(30)
    assert sorted(served) == [0, 1, 2]
    wait_until(lambda: gauge(gateway, "gatewayd_pool_waiting") == 0, what="no waiters")
    wait_until(lambda: gauge(gateway, "gatewayd_pool_available") == 2, what="pool refilled")
    assert metrics(gateway)[("gatewayd_pool_wait_seconds_count", "default", "writes")] >= 3


def test_wait_timeout_gives_53300(gateway: Gateway) -> None:
    with psycopg.connect(gateway.dsn(group="tight"), autocommit=True) as holder:
        holder.execute("select 1")
        with wire.Conn.open(gateway.ports["tight"]) as raw:
            raw.send(wire.startup_packet())
            error = raw.read_error()
        assert error is not None and error["C"] == "53300" and error["S"] == "FATAL", error
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            psycopg.connect(gateway.dsn(group="tight"))
        assert metrics(gateway)[("gatewayd_pool_exhausted_total", "tight", "writes")] >= 2
    # Once the holder leaves, the next client is served.
    wait_until(lambda: gauge(gateway, "gatewayd_pool_available", "tight") == 1, what="refill")
    with psycopg.connect(gateway.dsn(group="tight")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_max_waiting_refuses_at_once(gateway: Gateway) -> None:
    holder = psycopg.connect(gateway.dsn(group="limited"), autocommit=True)
    result: list[object] = []

    def wait_in_line() -> None:
        with psycopg.connect(gateway.dsn(group="limited")) as conn:
            result.append(conn.execute("select 'waited'").fetchone())

    try:
        waiting = threading.Thread(target=wait_in_line)
        waiting.start()
        wait_until(lambda: gauge(gateway, "gatewayd_pool_waiting", "limited") == 1,
                   what="one waiter")
        # The queue is full (maxWaiting 1): refused without waiting the 30 s waitTimeout.
        with wire.Conn.open(gateway.ports["limited"], timeout=10) as raw:
            raw.send(wire.startup_packet())
            error = raw.read_error()
        assert error is not None and error["C"] == "53300", error
    finally:
        holder.close()
    waiting.join(30)
    assert result == [("waited",)]
