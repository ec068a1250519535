"""
A tiny GatewayD-compatible plugin for the plugin-host tests, written against
go-plugin's contract directly (not our SDK), so the host is tested against an
independent implementation.

It checks the cookie like go-plugin's Serve, listens on a Unix socket in
PLUGIN_UNIX_SOCKET_DIR, prints the handshake line, logs hclog JSON on stderr,
and serves health ("plugin"), GRPCController.Shutdown, GRPCStdio.StreamStdio
and GatewayDPluginService (GetPluginConfig + echoing hooks).

Usage: echo_plugin.py [--mode MODE] [--metrics-socket PATH] [--name NAME]
Modes: normal, silent (never handshakes), garbage (prints nonsense),
badversion (app protocol 2), failconfig (GetPluginConfig fails), tls (offers a
server certificate), exit (exits 3 before the handshake).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import tempfile

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gatewayd.plugins.structs import Struct, from_struct, to_struct
from gatewayd.protos.goplugin import grpc_controller_pb2, grpc_stdio_pb2
from gatewayd.protos.plugin.v1 import plugin_pb2_grpc

COOKIE_KEY = "GATEWAYD_PLUGIN"
COOKIE_VALUE = "5712b87aa5d7e9f9e9ab643e6603181c5b796015cb1c09d6f5ada882bf2a1872"
HOOKS = [16, 18, 14, 1000]  # 1000: the template's deliberate unknown hook


def hclog(level: str, message: str, **fields: object) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    record = {"@level": level, "@message": message, "@timestamp": now, "@module": "echo", **fields}
    sys.stderr.write(json.dumps(record) + "\n")
    sys.stderr.flush()


class Plugin(plugin_pb2_grpc.GatewayDPluginServiceServicer):
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args

    async def GetPluginConfig(self, request: Struct, context: aio.ServicerContext) -> Struct:
        if self.args.mode == "failconfig":
            await context.abort(grpc.StatusCode.INTERNAL, "config exploded")
        config = {"answer": "42", "ignoredNumber": 7}
        if self.args.metrics_socket:
            config.update(metricsEnabled="true", metricsUnixDomainSocket=self.args.metrics_socket)
        return to_struct({
            "id": {"name": "echo-internal-name", "version": "0.1.0",
                   "remoteUrl": "github.com/example/echo"},
            "description": "echo plugin for tests", "authors": ["tests"], "license": "AGPL-3.0",
            "projectUrl": "https://example.invalid/echo", "config": config,
            "hooks": HOOKS + ["HOOK_NAME_ON_TICK"], "tags": [], "categories": [],
            "requires": [],
        })

    async def OnTrafficFromClient(self, request: Struct, context: aio.ServicerContext) -> Struct:
        payload = from_struct(request)
        payload["echo"] = {
            "pid": os.getpid(),
            "metadata": {k: v for k, v in context.invocation_metadata() if k == "traceparent"},
            "deadline": context.time_remaining() is not None,
        }
        return to_struct(payload)

    async def OnTrafficToServer(self, request: Struct, context: aio.ServicerContext) -> Struct:
        await asyncio.sleep(float(from_struct(request).get("sleep", 0)))
        return request

    async def OnTrafficFromServer(self, request: Struct, context: aio.ServicerContext) -> Struct:
        return request

    async def OnClosed(self, request: Struct, context: aio.ServicerContext) -> Struct:
        return request


class Controller:
    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    async def Shutdown(self, request: grpc_controller_pb2.Empty, context: object) -> grpc_controller_pb2.Empty:
        hclog("info", "shutdown requested")
        self.stop.set()
        return grpc_controller_pb2.Empty()


async def stream_stdio(request: object, context: aio.ServicerContext):  # type: ignore[no-untyped-def]
    yield grpc_stdio_pb2.StdioData(channel=grpc_stdio_pb2.StdioData.STDOUT,
                                   data=b"hello through GRPCStdio\n")
    await asyncio.Event().wait()  # keep the stream open, like go-plugin


async def serve_metrics(path: str) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = (b"# HELP gatewayd_on_traffic_from_client_total Hook calls.\n"
                b"# TYPE gatewayd_on_traffic_from_client_total counter\n"
                b"gatewayd_on_traffic_from_client_total 7\n"
                b"# HELP echo_up Always 1.\n# TYPE echo_up gauge\necho_up{kind=\"test\"} 1\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()
    if os.path.exists(path):
        os.unlink(path)
    return await asyncio.start_unix_server(handle, path)


async def main(args: argparse.Namespace) -> int:
    if os.environ.get(COOKIE_KEY) != COOKIE_VALUE:
        sys.stderr.write("This binary is a plugin. These are not meant to be executed directly.\n")
        return 1
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as go-plugin's Serve
    mode = args.mode
    if mode == "exit":
        hclog("error", "giving up before the handshake")
        return 3
    if mode == "silent":
        hclog("info", "not going to say hello")
        await asyncio.Event().wait()
    if mode == "garbage":
        print("Hello, I am definitely not a plugin", flush=True)
        await asyncio.Event().wait()

    sock_dir = os.environ.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.gettempdir()
    address = os.path.join(sock_dir, f"plugin{os.getpid()}")
    stop = asyncio.Event()
    server = aio.server(options=[("grpc.max_receive_message_length", 2 ** 31 - 1),
                                 ("grpc.max_send_message_length", 2 ** 31 - 1)])
    plugin_pb2_grpc.add_GatewayDPluginServiceServicer_to_server(Plugin(args), server)
    health_servicer = health.aio.HealthServicer()
    await health_servicer.set("plugin", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    controller = Controller(stop)
    server.add_generic_rpc_handlers([
        grpc.method_handlers_generic_handler("plugin.GRPCController", {
            "Shutdown": grpc.unary_unary_rpc_method_handler(
                controller.Shutdown, request_deserializer=grpc_controller_pb2.Empty.FromString,
                response_serializer=grpc_controller_pb2.Empty.SerializeToString)}),
        grpc.method_handlers_generic_handler("plugin.GRPCStdio", {
            "StreamStdio": grpc.unary_stream_rpc_method_handler(
                stream_stdio, request_deserializer=lambda b: b,
                response_serializer=grpc_stdio_pb2.StdioData.SerializeToString)}),
    ])
    server.add_insecure_port(f"unix:{address}")
    await server.start()
    metrics = await serve_metrics(args.metrics_socket) if args.metrics_socket else None
    app_version = "2" if mode == "badversion" else "1"
    cert = "|" + "A" * 80 if mode == "tls" else "|"
    sys.stdout.write(f"1|{app_version}|unix|{address}|grpc{cert}\n")
    sys.stdout.flush()
    hclog("info", "echo plugin serving", answer=42, address=address)
    print("[WARN] a plain prefixed line", file=sys.stderr, flush=True)
    await stop.wait()
    if metrics is not None:
        metrics.close()
    await server.stop(0.5)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", default="normal")
    parser.add_argument("--metrics-socket", default="")
    sys.exit(asyncio.run(main(parser.parse_args())))
