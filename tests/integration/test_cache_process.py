"""
The cache plugin as a plugin process (C{python examples/cache/plugin.py},
GatewayD's way): settings from the environment (REDIS_URL, EXPIRY,
KEY_PREFIX...), Redis through the asyncio client, hooks over gRPC.  This
test plays the host (go-plugin handshake, no AutoMTLS) and feeds the hooks
the traffic GatewayD would: startup, a query, its response, the same query.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from gatewayd.protos.goplugin.grpc_controller_grpc import GRPCControllerStub
from gatewayd.protos.goplugin.grpc_controller_pb2 import Empty
from gatewayd.protos.plugin.v1.plugin_grpc import GatewayDPluginServiceStub

from gatewayd import pgwire
from tests.integration.test_cache import delete_prefix, redis, scrape
from tests.integration.test_sdk_serve import ROOT, PluginProcess, call, host_env, opened

pytestmark = pytest.mark.integration

CACHE = ROOT / "examples" / "cache" / "plugin.py"
CLIENT = {"local": "127.0.0.1:15432", "remote": "127.0.0.1:41000"}
SERVER = {"local": "127.0.0.1:51000", "remote": "127.0.0.1:5432"}


def test_plugin_process_caches_with_settings_from_the_environment(tmp_path: Path,
                                                                  redis_service: str) -> None:
    prefix = f"gwtest:{uuid.uuid4().hex[:12]}:"
    env = host_env(tmp_path, None)
    metrics = tmp_path / "cache-metrics.sock"
    env.update({"REDIS_URL": "redis://127.0.0.1:6379/0", "EXPIRY": "90s", "KEY_PREFIX": prefix,
                "METRICS_UNIX_DOMAIN_SOCKET": str(metrics)})
    plugin = PluginProcess([str(CACHE)], env)
    response = (pgwire.row_description([("v", 25)]) + pgwire.data_row(["cached"])
                + pgwire.command_complete("SELECT 1") + pgwire.ready_for_query(b"I"))
    try:
        assert len(plugin.fields) == 6, plugin.line

        async def host() -> None:
            with opened(plugin, None) as ch:
                stub = GatewayDPluginServiceStub(ch)
                config = await call(stub, "GetPluginConfig", {})
                assert config["hooks"] == [14, 16, 18]
                assert config["config"]["expiry"] == "90s"
                assert config["config"]["metricsUnixDomainSocket"] == str(metrics)

                async def client(request: bytes) -> dict:
                    return await call(stub, "OnTrafficFromClient",
                                      {"client": CLIENT, "server": SERVER, "request": request})

                async def server(data: bytes) -> None:
                    await call(stub, "OnTrafficFromServer", {"client": CLIENT, "server": SERVER,
                                                             "request": b"", "response": data})

                await client(pgwire.startup_message({"user": "u", "database": "d"}))
                await server(pgwire.ready_for_query(b"I"))
                q = pgwire.query("select v from t")
                assert "__signals__" not in await client(q)
                await server(response)
                answer = await client(q)
                assert [s["name"] for s in answer["__signals__"]] == ["terminate"]
                assert answer["response"] == response
                # a write invalidates
                await client(pgwire.query("update t set v = 'x'"))
                await server(pgwire.command_complete("UPDATE 1") + pgwire.ready_for_query(b"I"))
                assert redis(("127.0.0.1", 6379), "GET", prefix + "tblver:d:public.t") == b"2"
                assert "__signals__" not in await client(q)
                values = await asyncio.to_thread(scrape, str(metrics))
                assert values["gatewayd_cache_hits_total"] == 1
                assert values["gatewayd_cache_sets_total"] == 1
                await call(stub, "OnClosed", {"client": CLIENT, "server": SERVER})
                await GRPCControllerStub(ch).Shutdown(Empty(), timeout=10)

        asyncio.run(host())
        assert plugin.wait() == 0
    finally:
        plugin.close()
        delete_prefix(("127.0.0.1", 6379), prefix)


def test_asyncio_store_reconnects_after_redis_restarts() -> None:
    from examples.cache.store import AsyncioStore, StoreUnavailable, parse_redis_url
    from tests.integration.test_cache import ThrowawayRedis

    server = ThrowawayRedis()
    server.start()
    try:
        store = AsyncioStore(parse_redis_url(f"redis://127.0.0.1:{server.port}/0"),
                             timeout=2.0, retry=0.0)

        async def run() -> None:
            assert await store.pipeline([(b"SET", b"k", b"v"), (b"GET", b"k")]) == [b"OK", b"v"]
            await asyncio.to_thread(server.stop)
            with pytest.raises(StoreUnavailable):
                await store.command(b"GET", b"k")
            with pytest.raises(StoreUnavailable):  # refused while down, at once
                await store.command(b"GET", b"k")
            await asyncio.to_thread(server.start)
            assert await store.command(b"INCR", b"n") == 1  # a fresh, empty Redis
            await store.stop()

        asyncio.run(run())
    finally:
        server.close()
