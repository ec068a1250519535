"""
Multi-pool load balancing end to end: one gateway in front of several
throwaway PostgreSQL clusters, real clients, and the backend that served each
client read back with C{SELECT current_setting('port')}.

Every strategy of docs/load-balancing.md (round robin, smooth weighted round
robin, random, consistent hashing by source IP or by IP and port, rules,
least connections), health-aware fallback when a block's server stops, and
refusal of invalid multi-pool configs by C{gatewayd run}.

Clients are sequential unless a test holds connections on purpose: each closes
before the next connects and the tests wait until the pools are full, so every
block has idle connections and the strategy alone decides (a block without an
idle connection is skipped: docs/load-balancing.md, "How a block is chosen").
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
import yaml

from gatewayd.loadbalancer import ClientInfo
from gatewayd.loadbalancer.hashing import Rendezvous
from tests.support import wire
from tests.support.gateway import Gateway, base_config, run_gatewayd
from tests.support.pg import PgCluster, wait_until

pytestmark = pytest.mark.integration
together = pytest.mark.xdist_group("multipool")

POOL_SIZE = 6
SELECT_PORT = "SELECT current_setting('port')"


# -- clusters and clients ------------------------------------------------------------------


@pytest.fixture(scope="module")
def clusters() -> Iterator[tuple[PgCluster, PgCluster, PgCluster]]:
    """Three trust clusters, shared by this module's tests (none of them stops these)."""
    started: list[PgCluster] = []
    try:
        for _ in range(3):
            started.append(PgCluster(auth="trust").init().start())
        yield started[0], started[1], started[2]
    finally:
        for cluster in started:
            cluster.destroy()


def gateway_config(blocks: dict[str, str], **load_balancer: Any) -> dict[str, Any]:
    return base_config(blocks, pool_size=POOL_SIZE, loadBalancer=load_balancer)


def served_by(gateway: Gateway, source: str | None = None, *, wait_close: bool = False,
              **params: str) -> int:
    """
    Connect with a raw wire client (from C{source} when given: psycopg cannot
    bind a source address), log in, and return the port of the backend that
    answered.  Fails on any ErrorResponse.

    It ends like a driver, with Terminate; with C{wait_close} it then waits
    for the gateway to close, so PostgreSQL's close always comes first (see
    L{test_pools_stay_pre_dialled_after_clients_that_terminate}).
    """
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=15,
                                    source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with wire.Conn(sock) as conn:
        seen = conn.startup(**params)
        assert not wire.errors_in(seen) and seen[-1][0] == "Z", seen
        answer = conn.simple_query(SELECT_PORT)
        assert not wire.errors_in(answer), answer
        conn.send(wire.terminate())
        if wait_close:
            assert conn.closed_by_peer()
    return int(wire.data_rows(answer)[0][0])


def gateway_sockets(port: int) -> Counter[str]:
    """TCP states of the sockets towards PostgreSQL port C{port} (the gateway's, on this host)."""
    out = subprocess.run(["ss", "-tanH", f"( dport = :{port} )"], capture_output=True,
                         text=True, check=True).stdout
    return Counter(line.split()[0] for line in out.splitlines() if line.strip())


def wait_pools_filled(*clusters: PgCluster, size: int = POOL_SIZE, timeout: float = 20) -> None:
    """
    Every block's pool holds C{size} pre-dialled sockets: until then a block
    without an idle connection would be skipped (docs: "How a block is chosen").
    """
    wait_until(lambda: all(gateway_sockets(c.port)["ESTAB"] >= size for c in clusters),
               timeout=timeout, what="the pools to fill")


def served_by_psycopg(gateway: Gateway, **dsn: str) -> int:
    with psycopg.connect(gateway.dsn(**dsn), autocommit=True) as conn:
        return int(conn.execute(SELECT_PORT).fetchone()[0])


def names(clusters: dict[str, PgCluster]) -> dict[int, str]:
    """Backend port -> block name."""
    return {cluster.port: name for name, cluster in clusters.items()}


# -- strategies ----------------------------------------------------------------------------


@together
def test_round_robin_splits_exactly_in_config_order(clusters) -> None:
    blocks = dict(zip("abc", clusters))
    with Gateway(gateway_config({n: c.address for n, c in blocks.items()},
                                strategy="ROUND_ROBIN")) as gateway:
        wait_pools_filled(*clusters)
        block_of = names(blocks)
        picks = [block_of[served_by(gateway)] for _ in range(300)]
        assert block_of[served_by_psycopg(gateway)] == "a"  # a real driver: the 301st
    assert Counter(picks) == {"a": 100, "b": 100, "c": 100}
    assert picks == ["a", "b", "c"] * 100


@together
def test_weighted_round_robin_70_30_is_smooth(clusters) -> None:
    blocks = {"a": clusters[0], "b": clusters[1]}
    config = gateway_config(
        {n: c.address for n, c in blocks.items()}, strategy="WEIGHTED_ROUND_ROBIN",
        loadBalancingRules=[{"condition": "DEFAULT", "distribution": [
            {"proxyName": "a", "weight": 70}, {"proxyName": "b", "weight": 30}]}])
    with Gateway(config) as gateway:
        wait_pools_filled(*blocks.values())
        block_of = names(blocks)
        picks = [block_of[served_by(gateway)] for _ in range(1000)]
    counts = Counter(picks)
    assert abs(counts["a"] - 700) <= 10 and abs(counts["b"] - 300) <= 10, counts
    longest_b = max(len(run) for run in "".join(picks).split("a"))
    assert longest_b <= 3, f"{longest_b} clients in a row went to the 30% block"
    assert picks[0] == "a"


@together
def test_random_spreads_evenly(clusters) -> None:
    blocks = {"a": clusters[0], "b": clusters[1]}
    with Gateway(gateway_config({n: c.address for n, c in blocks.items()},
                                strategy="RANDOM")) as gateway:
        wait_pools_filled(*blocks.values())
        block_of = names(blocks)
        counts = Counter(block_of[served_by(gateway)] for _ in range(1000))
    for name in ("a", "b"):
        assert 400 <= counts[name] <= 600, counts


SOURCES = [f"127.0.0.{n}" for n in range(1, 9)]


def hash_placement(blocks: list[str]) -> dict[str, str]:
    """
    Where the scheme of docs/load-balancing.md puts each source IP, to check
    that SOURCES cover every block (the test's claim is stickiness).
    """
    ranker = Rendezvous("default", blocks, None, use_source_ip=True)
    return {ip: ranker.rank(ClientInfo(ip, 0, "postgres", "postgres", ""))[0]
            for ip in SOURCES}


@together
def test_consistent_hash_by_source_ip_is_sticky_across_a_restart(clusters) -> None:
    blocks = {"a": clusters[0], "b": clusters[1]}
    assert set(hash_placement(list(blocks)).values()) == {"a", "b"}
    config = gateway_config({n: c.address for n, c in blocks.items()},
                            strategy="ROUND_ROBIN", consistentHash={"useSourceIp": True})
    block_of = names(blocks)

    def placement(gateway: Gateway) -> dict[str, str]:
        wait_pools_filled(*blocks.values())
        seen: dict[str, set[str]] = {}
        for _ in range(5):
            for ip in SOURCES:
                seen.setdefault(ip, set()).add(block_of[served_by(gateway, ip)])
        assert all(len(where) == 1 for where in seen.values()), f"not sticky: {seen}"
        return {ip: where.pop() for ip, where in seen.items()}

    with Gateway(config) as gateway:
        first = placement(gateway)
    assert set(first.values()) == {"a", "b"}, first
    with Gateway(config) as gateway:
        assert placement(gateway) == first
    assert first == hash_placement(list(blocks))


@together
def test_consistent_hash_by_ip_and_port_spreads(clusters) -> None:
    blocks = {"a": clusters[0], "b": clusters[1]}
    config = gateway_config({n: c.address for n, c in blocks.items()},
                            strategy="ROUND_ROBIN", consistentHash={"useSourceIp": False})
    with Gateway(config) as gateway:
        wait_pools_filled(*blocks.values())
        block_of = names(blocks)
        counts = Counter(block_of[served_by(gateway)] for _ in range(100))
    assert set(counts) == {"a", "b"}, counts


@together
def test_rules_route_by_application_name_and_database(clusters) -> None:
    blocks = dict(zip("abc", clusters))
    blocks["c"].psql("CREATE DATABASE analytics")  # on block c only
    config = gateway_config(
        {n: c.address for n, c in blocks.items()}, strategy="ROUND_ROBIN",
        loadBalancingRules=[
            {"condition": "DEFAULT", "distribution": [{"proxyName": "a", "weight": 1}]},
            {"condition": 'application_name == "reporting"',
             "distribution": [{"proxyName": "b", "weight": 1}]},
            {"condition": "database == 'analytics'",
             "distribution": [{"proxyName": "c", "weight": 1}]},
        ])
    with Gateway(config) as gateway:
        wait_pools_filled(*clusters)
        block_of = names(blocks)
        for _ in range(5):
            assert block_of[served_by_psycopg(gateway, application_name="reporting")] == "b"
            assert block_of[served_by(gateway, application_name="reporting")] == "b"
            assert block_of[served_by_psycopg(gateway, dbname="analytics")] == "c"
            assert block_of[served_by(gateway, database="analytics")] == "c"
            assert block_of[served_by_psycopg(gateway)] == "a"
            assert block_of[served_by(gateway, application_name="other")] == "a"
        with psycopg.connect(gateway.dsn(dbname="analytics"), autocommit=True) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("analytics",)
        # The first matching rule in file order decides: reporting goes to b,
        # which has no database analytics.
        with pytest.raises(psycopg.OperationalError, match='database "analytics" does not exist'):
            psycopg.connect(gateway.dsn(dbname="analytics", application_name="reporting"))


@together
def test_least_connections_avoids_the_busy_block(clusters) -> None:
    blocks = {"a": clusters[0], "b": clusters[1]}
    config = gateway_config(
        {n: c.address for n, c in blocks.items()}, strategy="LEAST_CONNECTIONS",
        loadBalancingRules=[
            {"condition": 'application_name == "pinned"',
             "distribution": [{"proxyName": "a", "weight": 1}]},
        ])
    held: list[psycopg.Connection] = []

    def block_of_held(conns: list[psycopg.Connection]) -> list[str]:
        return [block_of[int(c.execute(SELECT_PORT).fetchone()[0])] for c in conns]

    with Gateway(config) as gateway:
        wait_pools_filled(*blocks.values())
        block_of = names(blocks)
        try:
            for _ in range(3):
                held.append(psycopg.connect(gateway.dsn(application_name="pinned"),
                                            autocommit=True))
            assert block_of_held(held) == ["a"] * 3
            # a serves 3 sessions: short-lived clients all go to b.
            assert [block_of[served_by(gateway)] for _ in range(20)] == ["b"] * 20
            # Clients that stay go to b until it is as busy as a; the tie goes
            # to the block chosen least recently.
            for _ in range(4):
                held.append(psycopg.connect(gateway.dsn(), autocommit=True))
            assert block_of_held(held[3:]) == ["b", "b", "b", "a"]
        finally:
            for conn in held:
                conn.close()


# -- health-aware fallback -----------------------------------------------------------------

HEALTH_CHECK_PERIOD = 2.0


def health_config(blocks: dict[str, PgCluster]) -> dict[str, Any]:
    config = gateway_config({n: c.address for n, c in blocks.items()}, strategy="ROUND_ROBIN")
    for name in blocks:
        config["clients"]["default"][name].update(backoff="100ms", retries=1)
        config["proxies"]["default"][name]["healthCheckPeriod"] = f"{HEALTH_CHECK_PERIOD:g}s"
    return config


def stop_and_settle(gateway: Gateway, stopped: PgCluster, live: PgCluster) -> None:
    """
    Stop C{stopped}'s server and wait until the gateway noticed: its sockets
    to that server are closed and 10 clients in a row were served by C{live}
    (a client may fail while the gateway has not noticed yet).
    """
    assert stopped.stop("fast")

    def closed() -> bool:
        return all(state == "TIME-WAIT" for state in gateway_sockets(stopped.port))

    wait_until(closed, timeout=10, what="the gateway to close its sockets to the stopped server")
    deadline = time.monotonic() + 10
    streak = 0
    while streak < 10:
        assert time.monotonic() < deadline, "clients did not settle on the live block"
        try:
            streak = streak + 1 if served_by(gateway) == live.port else 0
        except (AssertionError, OSError):
            streak = 0


@together
def test_a_stopped_block_gets_no_clients_and_nobody_errors(clusters, fresh_pg) -> None:
    live = clusters[0]
    blocks = {"a": live, "b": fresh_pg}
    with Gateway(health_config(blocks)) as gateway:
        wait_pools_filled(live, fresh_pg)
        assert [served_by(gateway) for _ in range(4)] == [live.port, fresh_pg.port] * 2
        stop_and_settle(gateway, fresh_pg, live)
        assert [served_by(gateway) for _ in range(50)] == [live.port] * 50


@together
def test_a_restarted_block_gets_traffic_within_a_health_check_period(clusters,
                                                                       fresh_pg) -> None:
    live = clusters[0]
    blocks = {"a": live, "b": fresh_pg}
    with Gateway(health_config(blocks)) as gateway:
        wait_pools_filled(live, fresh_pg)
        stop_and_settle(gateway, fresh_pg, live)
        port = fresh_pg.port
        fresh_pg.start()
        assert fresh_pg.port == port
        deadline = time.monotonic() + 2 * HEALTH_CHECK_PERIOD
        ports: list[int] = []
        while port not in ports:
            assert time.monotonic() < deadline, (
                f"block b got no client within {2 * HEALTH_CHECK_PERIOD:g}s of its restart: "
                f"{Counter(ports)}")
            ports.append(served_by(gateway))  # and every client succeeds meanwhile
        wait_pools_filled(live, fresh_pg)
        assert sorted(served_by(gateway) for _ in range(4)) == sorted([live.port, port] * 2)


@together
def test_pools_stay_pre_dialled_after_clients_that_terminate(clusters) -> None:
    """
    PostgreSQL closes a session the client ended with Terminate; when that
    close reaches the gateway before the client's, the pool must not take it
    for a server shutting down (and stop pre-dialling a healthy block).
    """
    blocks = {"a": clusters[0], "b": clusters[1]}
    with Gateway(gateway_config({n: c.address for n, c in blocks.items()},
                                strategy="ROUND_ROBIN")) as gateway:
        wait_pools_filled(*blocks.values())
        block_of = names(blocks)
        picks = [block_of[served_by(gateway, wait_close=True)] for _ in range(10)]
        assert picks == ["a", "b"] * 5
        wait_pools_filled(*blocks.values(), timeout=5)
        assert [block_of[served_by(gateway)] for _ in range(10)] == ["a", "b"] * 5


# -- invalid configs through `gatewayd run` -----------------------------------------------

RULES = "servers.default.loadBalancer.loadBalancingRules"


def valid_config() -> dict[str, Any]:
    return base_config({"a": "127.0.0.1:5432", "b": "127.0.0.1:5432"},
                       loadBalancer={"strategy": "WEIGHTED_ROUND_ROBIN", "loadBalancingRules": [
                           {"condition": "DEFAULT", "distribution": [
                               {"proxyName": "a", "weight": 2}, {"proxyName": "b", "weight": 1}]}]})


def _lb(config: dict[str, Any]) -> dict[str, Any]:
    return config["servers"]["default"]["loadBalancer"]


INVALID: list[tuple[str, Any, list[str]]] = [
    ("block in pools only",
     lambda d: d["pools"]["default"].update(c={"size": 1}),
     ["pools.default.c: block has no matching clients.default.c",
      "pools.default.c: block has no matching proxies.default.c"]),
    ("block in clients and pools, not proxies",
     lambda d: (d["clients"]["default"].update(c={"address": "127.0.0.1:5432"}),
                d["pools"]["default"].update(c={"size": 1})),
     ["clients.default.c: block has no matching proxies.default.c",
      "pools.default.c: block has no matching proxies.default.c"]),
    ("group missing from pools",
     lambda d: (d["clients"].update(t={"a": {"address": "127.0.0.1:5432"}}),
                d["proxies"].update(t={"a": {}}),
                d["servers"].update(t={"address": "127.0.0.1:0"})),
     ["clients.t: group has no matching pools.t",
      "proxies.t: group has no matching pools.t"]),
    ("server group with no blocks",
     lambda d: d["servers"].update(t={"address": "127.0.0.1:0"}),
     ["servers.t: needs at least one block"]),
    ("servers proxies names an unknown block",
     lambda d: d["servers"]["default"].update(proxies=["a", "x"]),
     ["servers.default.proxies[1]: unknown block 'x'",
      f"{RULES}[0].distribution[1].proxyName: block 'b' is not in servers.default.proxies"]),
    ("rule names an unknown block",
     lambda d: _lb(d)["loadBalancingRules"][0]["distribution"][1].update(proxyName="x"),
     [f"{RULES}[0].distribution[1].proxyName: unknown block 'x'"]),
    ("weight zero",
     lambda d: _lb(d)["loadBalancingRules"][0]["distribution"][0].update(weight=0),
     [f"{RULES}[0].distribution[0].weight: must be >= 1"]),
    ("negative weight",
     lambda d: _lb(d)["loadBalancingRules"][0]["distribution"][1].update(weight=-3),
     [f"{RULES}[0].distribution[1].weight: must be >= 1"]),
    ("unknown strategy",
     lambda d: _lb(d).update(strategy="LEAST_BUSY"),
     ["servers.default.loadBalancer.strategy: 'LEAST_BUSY' is not one of"]),
    ("weighted round robin without rules",
     lambda d: _lb(d).pop("loadBalancingRules"),
     [f"{RULES}: WEIGHTED_ROUND_ROBIN needs at least one rule"]),
]


def test_the_valid_base_of_the_invalid_configs_lints_clean(tmp_path: Path) -> None:
    config = tmp_path / "gatewayd.yaml"
    config.write_text(yaml.safe_dump(valid_config(), sort_keys=False))
    done = run_gatewayd("config", "lint", "-c", str(config), timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name, change, expected", INVALID, ids=[case[0] for case in INVALID])
def test_run_refuses_invalid_multi_pool_configs(tmp_path: Path, name: str, change: Any,
                                                expected: list[str]) -> None:
    data = valid_config()
    change(data)
    config, plugins = tmp_path / "gatewayd.yaml", tmp_path / "gatewayd_plugins.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    plugins.write_text("plugins: []\n")
    done = run_gatewayd("run", "-c", str(config), "-p", str(plugins), timeout=30)
    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == len(expected), done.stderr
    for line, key in zip(sorted(lines), sorted(expected)):
        assert line.startswith(f"gatewayd: {config}: "), line
        assert key in line, (key, done.stderr)
