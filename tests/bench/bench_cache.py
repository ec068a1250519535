#!/usr/bin/env python3
"""
Cache plugin benchmark (not collected by pytest): latency of a cached hit vs the
same query uncached vs direct PostgreSQL, and pgbench with a read-heavy custom
script through the cache, through the gateway without plugins, and direct.

Needs PostgreSQL on 127.0.0.1:5432 (trust, database `test`) and Redis on
127.0.0.1:6379.  Run: .venv/bin/python tests/bench/bench_cache.py
"""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.gateway import Gateway, base_config  # noqa: E402
from tests.support.ports import free_port  # noqa: E402

DIRECT = "host=127.0.0.1 port=5432 user=postgres dbname=test sslmode=disable"
ROWS = 1000


def latencies(dsn: str, sql: str, n: int = 2000) -> tuple[float, float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.cursor()
        for _ in range(50):
            cur.execute(sql, prepare=False)
            cur.fetchall()
        samples = []
        for _ in range(n):
            t = time.perf_counter()
            cur.execute(sql, prepare=False)
            cur.fetchall()
            samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99)]


def pgbench(port: int, script: Path) -> float:
    out = subprocess.run(["pgbench", "-n", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                          "-c", "8", "-j", "2", "-T", "5", "-f", str(script), "test"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def main() -> None:
    table = f"gw_cache_bench_{uuid.uuid4().hex[:6]}"
    prefix = f"gwbench:{uuid.uuid4().hex[:6]}:"
    with psycopg.connect(DIRECT, autocommit=True) as conn:
        conn.execute(f"create table {table}(id int primary key, v text)")
        conn.execute(f"insert into {table} select i, repeat('x', 100) from generate_series(1, {ROWS}) i")
    script = Path(tempfile.mkdtemp()) / "read.sql"
    script.write_text(f"\\set id random(1, {ROWS})\nselect v from {table} where id = :id;\n")
    metrics = free_port()
    cache_cfg = base_config({"writes": "127.0.0.1:5432"}, pool_size=10)
    cache_cfg["metrics"] = {"default": {"enabled": True, "address": f"127.0.0.1:{metrics}"}}
    cache_cfg["loggers"]["default"]["level"] = "warn"
    plugins = {"metricsMergerPeriod": "1s", "plugins": [{
        "name": "gatewayd-plugin-cache", "module": "examples.cache.plugin:CachePlugin",
        "config": {"redisURL": "redis://127.0.0.1:6379/0", "keyPrefix": prefix, "expiry": "5m",
                   "metricsUnixDomainSocket": f"{tempfile.mkdtemp()}/cache.sock"}}]}
    plain_cfg = base_config({"writes": "127.0.0.1:5432"}, pool_size=10)
    plain_cfg["loggers"]["default"]["level"] = "warn"
    try:
        with Gateway(cache_cfg, plugins) as cached, Gateway(plain_cfg) as plain:
            hit = f"select v from {table} where id = 7"
            volatile = f"select v, random() from {table} where id = 7"  # never cached
            rows = [("direct PostgreSQL", latencies(DIRECT, hit)),
                    ("gateway, no plugin", latencies(plain.dsn(dbname="test"), hit)),
                    ("gateway + cache, miss (volatile)", latencies(cached.dsn(dbname="test"),
                                                                   volatile)),
                    ("gateway + cache, hit", latencies(cached.dsn(dbname="test"), hit))]
            print("| path | p50 µs | p99 µs |\n|---|---:|---:|")
            for name, (p50, p99) in rows:
                print(f"| {name} | {p50:.0f} | {p99:.0f} |")
            print("\n| pgbench -c 8 -T 5, random id in 1..1000 | TPS |\n|---|---:|")
            for name, port in (("direct PostgreSQL", 5432), ("gateway, no plugin", plain.port),
                               ("gateway + cache (cold then warm)", cached.port),
                               ("gateway + cache (warm)", cached.port)):
                print(f"| {name} | {pgbench(port, script):.0f} |")
            time.sleep(1.5)  # one metricsMergerPeriod for the scrape below (not synchronisation)
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
            merged = [line for line in text.splitlines() if line.startswith("cache_hits_total")
                      or line.startswith("gatewayd_cache_hits_total")]
            print("\nmerged into the gateway's /metrics:", merged[:2])
    finally:
        with psycopg.connect(DIRECT, autocommit=True) as conn:
            conn.execute(f"drop table if exists {table}")


if __name__ == "__main__":
    main()
