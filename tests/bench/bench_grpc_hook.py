"""
Benchmark: one OnTrafficFromClient hook call from Twisted, three gRPC bridges.

Not a test (pytest does not collect C{bench_*.py}).  Results and the decision
are in docs/grpc-choice.md.

Each client mode runs in its own process (a reactor is installed once per
process) against the same Python plugin server, a minimal C{grpc.aio} server
on a Unix socket that echoes the payload (the real plugin path).  With two or
more CPUs the server is pinned to CPU 0 and the client to CPU 1.

Modes (the code under test is gatewayd.plugins.transport plus the Struct
conversion in gatewayd.plugins.structs, exactly as GrpcPluginClient.call_hook
uses them):
  aio_asyncio       grpc.aio on the asyncio reactor, Deferred.fromFuture      (a)
  sync_epoll        grpcio .future() + reactor.callFromThread, epoll reactor   (b)
  sync_asyncio      the same bridge on the asyncio reactor                     (b')
  grpclib_asyncio   grpclib on the asyncio reactor, Deferred.fromFuture       (c)

Measures per mode: latency of N sequential calls (issue -> Deferred callback,
p50/p99 in µs), client CPU per call (process_time, all threads), and calls/s
plus CPU per call with 16 calls in flight.

Usage: python tests/bench/bench_grpc_hook.py [--calls 3000] [--rounds 3] [--json out.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

MODES = ("aio_asyncio", "sync_epoll", "sync_asyncio", "grpclib_asyncio")
METHOD = "/plugin.v1.GatewayDPluginService/OnTrafficFromClient"
QUERY = b"SELECT id, name, email, created_at FROM users WHERE id = 42 AND active ORDER BY id;"


def payload(seq: int) -> dict[str, Any]:
    """What the relay sends for one client read burst (a simple-protocol query)."""
    message = b"Q" + (len(QUERY) + 5).to_bytes(4, "big") + QUERY + b"\x00"
    return {"client": {"local": "0.0.0.0:15432", "remote": "127.0.0.1:51234"},
            "server": {"local": "127.0.0.1:50022", "remote": "127.0.0.1:5432"},
            "error": "", "request": message, "seq": seq}


def pin(cpu: int) -> None:
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


# -- server ---------------------------------------------------------------------

def serve(address: str) -> None:
    from grpc import aio

    from gatewayd.protos.plugin.v1 import plugin_pb2_grpc

    class Echo(plugin_pb2_grpc.GatewayDPluginServiceServicer):
        async def OnTrafficFromClient(self, request: Any, context: Any) -> Any:
            return request

    async def main() -> None:
        server = aio.server()
        plugin_pb2_grpc.add_GatewayDPluginServiceServicer_to_server(Echo(), server)
        server.add_insecure_port(f"unix:{address}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    pin(0)
    asyncio.run(main())


# -- client -----------------------------------------------------------------------

def client(result: dict[str, Any], mode: str, address: str, calls: int, concurrency: int) -> None:
    """Run one mode in this process, filling C{result}; C{task.react} exits at the end."""
    pin(1)
    if mode.endswith("_asyncio"):
        from twisted.internet import asyncioreactor
        asyncioreactor.install(asyncio.new_event_loop())
    else:
        from twisted.internet import epollreactor
        epollreactor.install()
    from twisted.internet import reactor, task
    from twisted.internet.defer import Deferred, DeferredList, succeed

    from gatewayd.plugins.structs import Struct, from_struct, to_struct

    result["mode"] = mode

    if mode == "grpclib_asyncio":
        from grpclib.client import Channel

        from gatewayd.protos.plugin.v1.plugin_grpc import GatewayDPluginServiceStub
        holder: dict[str, Any] = {}
        loop = reactor._asyncioEventloop  # asyncioreactor does not make it the current loop

        async def open_channel() -> None:
            holder["channel"] = Channel(path=address)
            holder["stub"] = GatewayDPluginServiceStub(holder["channel"])

        def close() -> Any:
            holder["channel"].close()
            return succeed(None)

        def connect() -> Deferred[Any]:
            return Deferred.fromFuture(asyncio.ensure_future(open_channel(), loop=loop))

        def call(seq: int) -> Deferred[Any]:
            coro = holder["stub"].OnTrafficFromClient(to_struct(payload(seq)), timeout=30)
            return Deferred.fromFuture(asyncio.ensure_future(coro, loop=loop)).addCallback(from_struct)
    else:
        from gatewayd.plugins.transport import transport_for_reactor
        transport = transport_for_reactor(reactor, "aio" if mode.startswith("aio") else "sync")

        def connect() -> Deferred[Any]:
            return transport.connect(f"unix:{address}")

        def close() -> Any:
            return transport.close()

        def call(seq: int) -> Deferred[Any]:
            return transport.unary(METHOD, to_struct(payload(seq)), Struct,
                                   timeout=30).addCallback(from_struct)

    async def run(_: Any) -> None:
        await connect()
        for seq in range(300):  # warm up: connection, caches, JIT-less but still
            answer = await call(seq)
            assert answer["request"] == payload(seq)["request"]
        latencies = []
        cpu0 = time.process_time()
        for seq in range(calls):
            t0 = time.perf_counter_ns()
            await call(seq)
            latencies.append((time.perf_counter_ns() - t0) / 1000)
        cpu = time.process_time() - cpu0
        latencies.sort()
        result["p50_us"] = latencies[len(latencies) // 2]
        result["p99_us"] = latencies[int(len(latencies) * 0.99)]
        result["cpu_us_per_call"] = cpu / calls * 1e6

        async def worker(n: int) -> None:
            for seq in range(n):
                await call(seq)

        per_worker = calls // concurrency
        cpu0, t0 = time.process_time(), time.perf_counter()
        await DeferredList([Deferred.fromCoroutine(worker(per_worker)) for _ in range(concurrency)],
                           fireOnOneErrback=True)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        total = per_worker * concurrency
        result["calls_per_s_16"] = total / elapsed
        result["cpu_us_per_call_16"] = cpu / total * 1e6
        await close()

    task.react(lambda r: Deferred.fromCoroutine(run(r)))


# -- driver -------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json", default="")
    parser.add_argument("--serve", default="")
    parser.add_argument("--client", default="")
    parser.add_argument("--address", default="")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.client:
        run_client(args.client, args.address, args.calls)
        return

    workdir = tempfile.mkdtemp(prefix="bench-grpc-")
    address = os.path.join(workdir, "plugin.sock")
    server = subprocess.Popen([sys.executable, __file__, "--serve", address], stdout=subprocess.PIPE,
                              text=True)
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    rows: list[dict[str, Any]] = []
    try:
        for round_no in range(args.rounds):
            for mode in args.modes.split(","):
                proc = subprocess.run([sys.executable, __file__, "--client", mode, "--address", address,
                                       "--calls", str(args.calls)], capture_output=True, text=True)
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                row["round"] = round_no
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        with open(args.json, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print(f"\n{'mode':<18}{'p50 µs':>9}{'p99 µs':>9}{'CPU µs/call':>13}{'calls/s @16':>13}"
          f"{'CPU µs/call @16':>17}")
    for mode in args.modes.split(","):
        mine = [r for r in rows if r["mode"] == mode]
        med = {k: statistics.median(r[k] for r in mine)
               for k in ("p50_us", "p99_us", "cpu_us_per_call", "calls_per_s_16", "cpu_us_per_call_16")}
        print(f"{mode:<18}{med['p50_us']:>9.0f}{med['p99_us']:>9.0f}{med['cpu_us_per_call']:>13.0f}"
              f"{med['calls_per_s_16']:>13.0f}{med['cpu_us_per_call_16']:>17.0f}")


def run_client(mode: str, address: str, calls: int) -> None:
    """Run one mode; print its result as one JSON line."""
    out: dict[str, Any] = {}
    try:
        client(out, mode, address, calls, 16)
    except SystemExit as exit:
        if exit.code:
            raise
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
