"""
Benchmark: what a plugin costs, per message and end to end.

Not a test (pytest does not collect C{bench_*.py}).  Results are in
docs/plugins.md ("Cost").

1. Per-message cost of one hook chain, timed around C{HookRegistry.run} (issue
   to result) for N sequential calls with a realistic onTrafficFromClient
   payload (a simple Query):
     - in-process: L{FourHookEcho} loaded with C{load_inprocess};
     - gRPC: L{GrpcPluginClient} to the test echo plugin
       (tests/support/plugins/echo_plugin.py, a grpc.aio server), on the
       epoll reactor with the default transport, as C{gatewayd run} does.
2. C{pgbench -n -S -c 16 -T 5} TPS through a gateway child process with no
   plugin, with L{FourHookEcho} on the four traffic hooks in-process, and the
   same class served out of process (SDK server, gRPC over a Unix socket); plus
   PostgreSQL direct for reference; modes interleaved, C{--rounds} times, median
   reported (5-second runs on a shared VM are noisy).  Against the service PostgreSQL
   (127.0.0.1:5432) on a database created and dropped here.

Usage: python tests/bench/bench_hooks.py [--calls 2000] [--seconds 5] [--clients 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gatewayd.sdk import Plugin, hook  # noqa: E402

TRAFFIC = ("onTrafficFromClient", "onTrafficToServer", "onTrafficFromServer", "onTrafficToClient")
DIRECT = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


class FourHookEcho(Plugin):
    """Returns every traffic payload unchanged (the cheapest real plugin)."""

    name = "bench-echo"
    version = "0.1.0"

    @hook(*TRAFFIC)
    def echo(self, payload: dict) -> dict:
        return payload


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) * 1e6, p99 * 1e6


# -- 1. per-message -------------------------------------------------------------

async def _time_chain(registry: Any, payload: dict, calls: int, warmup: int) -> list[float]:
    from twisted.internet.defer import Deferred

    samples = []
    for i in range(calls + warmup):
        started = time.perf_counter()
        d: Deferred = registry.run("onTrafficFromClient", payload)
        finished: list[float] = []
        d.addCallback(lambda result: finished.append(time.perf_counter()) or result)
        result = await d
        assert isinstance(result, dict) and result.get("request") == payload["request"]
        if i >= warmup:
            samples.append(finished[0] - started)
    return samples


async def per_message(reactor: Any, calls: int) -> dict[str, tuple[float, float]]:
    from gatewayd import pgwire
    from gatewayd.act import ActRegistry
    from gatewayd.config.schema import PluginEntry
    from gatewayd.hooks.registry import HookRegistry
    from gatewayd.plugins.client import GrpcPluginClient
    from gatewayd.sdk.inprocess import load_inprocess
    from tests.support.plugins import make_plugin_executable

    payload = {"client": {"local": "127.0.0.1:15432", "remote": "127.0.0.1:50000"},
               "server": {"local": "127.0.0.1:50001", "remote": "127.0.0.1:5432"},
               "request": pgwire.query("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;"),
               "error": ""}
    results = {}

    registry = HookRegistry(reactor, ActRegistry(clock=reactor))
    registry.register(load_inprocess(
        PluginEntry(name="bench-echo", module="tests.bench.bench_hooks:FourHookEcho"), 1000, reactor))
    results["in-process"] = _percentiles(await _time_chain(registry, payload, calls, 200))

    directory = tempfile.mkdtemp(prefix="bench-hooks-")
    path, digest = make_plugin_executable(directory, "echo-plugin")
    client = GrpcPluginClient(reactor, PluginEntry(name="echo", local_path=path, checksum=digest),
                              1000)
    await client.start()
    try:
        registry = HookRegistry(reactor, ActRegistry(clock=reactor))
        registry.register(client)
        results["gRPC"] = _percentiles(await _time_chain(registry, payload, calls, 200))
    finally:
        await client.stop()
    return results


# -- 2. pgbench through the gateway -------------------------------------------------

def _pgbench(dsn: str, clients: int, seconds: int) -> float:
    done = subprocess.run(["pgbench", "-n", "-S", "-c", str(clients), "-j", "2", "-T",
                           str(seconds), "-d", dsn], capture_output=True, text=True,
                          timeout=seconds + 120)
    if done.returncode != 0:
        raise SystemExit(f"pgbench failed: {done.stderr.strip()}")
    failed = re.search(r"number of failed transactions: (\d+)", done.stdout)
    if failed and failed[1] != "0":
        raise SystemExit(f"pgbench reported {failed[1]} failed transactions")
    return float(re.search(r"tps = ([\d.]+)", done.stdout)[1])


def _entry_script(directory: Path) -> tuple[str, str]:
    path = directory / "bench-echo"
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                    "from tests.bench.bench_hooks import FourHookEcho\nFourHookEcho.serve()\n")
    path.chmod(0o755)
    return str(path), hashlib.sha256(path.read_bytes()).hexdigest()


def throughput(clients: int, seconds: int, rounds: int) -> dict[str, list[float]]:
    """TPS per mode, C{rounds} times, modes interleaved so that noise hits them alike."""
    import psycopg

    from tests.support.gateway import Gateway, base_config

    database = f"gw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(DIRECT, autocommit=True) as conn:
        conn.execute(f"create database {database}")
    results: dict[str, list[float]] = {}
    try:
        subprocess.run(["pgbench", "-i", "-q", "-s", "10", "-h", "127.0.0.1", "-U", "postgres",
                        database], check=True, capture_output=True)
        directory = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
        path, digest = _entry_script(directory)
        modes: dict[str, dict[str, Any] | None] = {
            "PostgreSQL direct": None,
            "no plugin": {"plugins": []},
            "in-process echo (4 traffic hooks)": {"plugins": [
                {"name": "bench-echo", "module": "tests.bench.bench_hooks:FourHookEcho"}]},
            "out-of-process echo (4 traffic hooks, gRPC)": {"plugins": [
                {"name": "bench-echo", "localPath": path, "checksum": digest}]},
        }
        for _ in range(rounds):
            for mode, plugins in modes.items():
                if plugins is None:
                    tps = _pgbench(f"host=127.0.0.1 port=5432 user=postgres dbname={database}",
                                   clients, seconds)
                    results.setdefault(mode, []).append(tps)
                    continue
                config = base_config({"writes": "127.0.0.1:5432"}, pool_size=clients + 4)
                gateway = Gateway(config, plugins).start()
                try:
                    # Plugins load before the gateway listens (GatewayD's order).
                    if plugins["plugins"] and "plugin bench-echo loaded" not in gateway.output():
                        raise SystemExit(f"{mode}: plugin did not load:\n{gateway.output()}")
                    tps = _pgbench(gateway.dsn(dbname=database), clients, seconds)
                    results.setdefault(mode, []).append(tps)
                finally:
                    gateway.stop()
    finally:
        with psycopg.connect(DIRECT, autocommit=True) as conn:
            conn.execute(f"drop database if exists {database} with (force)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="pgbench rounds per mode (median)")
    args = parser.parse_args()

    from twisted.internet import epollreactor
    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    box: dict[str, Any] = {}

    def run() -> None:
        d = Deferred.fromCoroutine(per_message(reactor, args.calls))
        d.addCallback(lambda result: box.__setitem__("calls", result))
        d.addErrback(lambda f: box.__setitem__("error", f))
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    if "error" in box:
        box["error"].raiseException()
    print(f"Per message, onTrafficFromClient, {args.calls} sequential calls (µs):")
    for mode, (p50, p99) in box["calls"].items():
        print(f"  {mode:<12} p50 {p50:8.1f}   p99 {p99:8.1f}")
    print(f"\npgbench -n -S -c {args.clients} -T {args.seconds} (TPS, median of {args.rounds}, "
          "min-max):")
    for mode, tps in throughput(args.clients, args.seconds, args.rounds).items():
        print(f"  {mode:<46} {statistics.median(tps):8.0f}   {min(tps):6.0f}-{max(tps):.0f}")


if __name__ == "__main__":
    main()
