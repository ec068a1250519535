# -*- test-case-name: tests.integration.test_sdk_serve -*-
"""
The plugin side of hashicorp/go-plugin (v1.6 wire behaviour), so that
GatewayD, or gatewayd's plugin host, can spawn an SDK plugin.

What L{serve} does, in go-plugin's order:
  1. checks the magic cookie: the environment variable C{MAGIC_COOKIE_KEY}
     (default C{GATEWAYD_PLUGIN}) must equal C{MAGIC_COOKIE_VALUE} (default
     GatewayD's cookie); otherwise it prints go-plugin's "This binary is a
     plugin" message and exits 1;
  2. listens on a Unix socket in a fresh private directory under
     C{PLUGIN_UNIX_SOCKET_DIR} (or the temp dir), owned by
     C{PLUGIN_UNIX_SOCKET_GROUP} when set; or, when asked
     (C{network="tcp"}), on the first free 127.0.0.1 port in
     C{PLUGIN_MIN_PORT}..C{PLUGIN_MAX_PORT};
  3. with C{PLUGIN_CLIENT_CERT} set (GatewayD always sets it), does AutoMTLS
     (L{gatewayd.sdk.mtls}): P-521 certificate, client certificate required;
  4. prints exactly one line on stdout, C{1|1|unix|<path>|grpc|<cert>},
     having pointed C{sys.stdout} at stderr first so that nothing else can
     reach stdout;
  5. serves C{plugin.v1.GatewayDPluginService}, C{grpc.health.v1.Health}
     (service C{"plugin"} SERVING), C{plugin.GRPCController/Shutdown}
     (exits cleanly) and C{plugin.GRPCStdio} (kept open, empty);
  6. ignores SIGINT like go-plugin (the host decides when a plugin stops);
     SIGTERM stops it cleanly.

Hooks never answer with a gRPC error: GatewayD deletes a hook whose call
errors, for the rest of its life.  A hook that raises (or returns garbage)
is logged and answered with its input unchanged.  Logs are hclog JSON lines
on stderr.  gRPC is served by grpclib on asyncio (Python's C{ssl}, which
handles go-plugin's P-521 certificates; grpcio cannot).
"""

from __future__ import annotations

import asyncio
import grp
import inspect
import os
import shutil
import signal
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NoReturn

from gatewayd.hooks import names
from gatewayd.sdk.log import HclogLog
from gatewayd.sdk.plugin import Plugin

__all__ = [
    "CORE_PROTOCOL_VERSION",
    "APP_PROTOCOL_VERSION",
    "MAGIC_COOKIE_KEY",
    "MAGIC_COOKIE_VALUE",
    "Handshake",
    "check_cookie",
    "serve",
]

MAGIC_COOKIE_KEY = "GATEWAYD_PLUGIN"
MAGIC_COOKIE_VALUE = "5712b87aa5d7e9f9e9ab643e6603181c5b796015cb1c09d6f5ada882bf2a1872"
CORE_PROTOCOL_VERSION = 1
APP_PROTOCOL_VERSION = 1
#: go-plugin's defaults when the host gives no port range.
DEFAULT_MIN_PORT = 10000
DEFAULT_MAX_PORT = 25000

NOT_A_PLUGIN = (
    "This binary is a plugin. These are not meant to be executed directly.\n"
    "Please execute the program that consumes these plugins, which will\n"
    "load any plugins automatically\n")


def check_cookie(env: Mapping[str, str]) -> bool:
    """
    go-plugin's cookie check.  The expected key and value are GatewayD's,
    unless C{MAGIC_COOKIE_KEY}/C{MAGIC_COOKIE_VALUE} name others (the Go
    SDK's convention, set in plugin entries' C{env}).
    """
    key = env.get("MAGIC_COOKIE_KEY") or MAGIC_COOKIE_KEY
    value = env.get("MAGIC_COOKIE_VALUE") or MAGIC_COOKIE_VALUE
    return env.get(key) == value


@dataclass
class Handshake:
    """The handshake line's fields."""

    network: str
    address: str
    cert: str = ""
    core: int = CORE_PROTOCOL_VERSION
    app: int = APP_PROTOCOL_VERSION

    def line(self) -> str:
        return f"{self.core}|{self.app}|{self.network}|{self.address}|grpc|{self.cert}\n"


@dataclass
class _Listener:
    network: str
    address: str
    path: str | None = None
    sock: socket.socket | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)


def _unix_listener(env: Mapping[str, str]) -> _Listener:
    base = env.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.gettempdir()
    directory = tempfile.mkdtemp(prefix="plugin", dir=base)
    path = os.path.join(directory, "grpc.sock")
    listener = _Listener("unix", path, path=path)
    listener.cleanup.append(lambda: shutil.rmtree(directory, ignore_errors=True))
    group = env.get("PLUGIN_UNIX_SOCKET_GROUP")
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        os.chown(directory, -1, gid)
        os.chmod(directory, 0o750)
    return listener


def _tcp_listener(env: Mapping[str, str]) -> _Listener:
    low = int(env.get("PLUGIN_MIN_PORT") or DEFAULT_MIN_PORT)
    high = int(env.get("PLUGIN_MAX_PORT") or DEFAULT_MAX_PORT)
    for port in range(low, high + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        return _Listener("tcp", f"127.0.0.1:{port}", sock=sock)
    raise OSError(f"no free port in {low}..{high}")


class _Runtime:
    """Everything one serving process holds."""

    def __init__(self, plugin: Plugin, log: HclogLog) -> None:
        self.plugin = plugin
        self.log = log
        self.stopping = asyncio.Event()
        self.calls: Any = None
        self.errors: Any = None
        self.registry: Any = None
        if plugin.metrics_unix_socket:
            from prometheus_client import CollectorRegistry, Counter

            self.registry = CollectorRegistry()
            self.calls = Counter("hook_calls_total", "Hook calls", ("hook",),
                                 namespace="gatewayd", registry=self.registry)
            self.errors = Counter("hook_errors_total", "Hook calls that raised or returned garbage",
                                  ("hook",), namespace="gatewayd", registry=self.registry)

    async def call(self, hook: str, payload: dict[str, Any]) -> dict[str, Any] | None:
        """Run one hook. @return: the result, or None to answer with the input unchanged."""
        if self.calls is not None:
            self.calls.labels(hook=hook).inc()
        handler = self.plugin.handler(hook)
        if handler is None:
            return None
        try:
            result = handler(payload)
            if inspect.isawaitable(result):
                result = await result
        except Exception as e:  # noqa: BLE001 - never a gRPC error (GatewayD deletes the hook)
            self._failed(hook, f"{type(e).__name__}: {e}", traceback.format_exc())
            return None
        if result is None or isinstance(result, dict):
            return result
        self._failed(hook, f"returned a {type(result).__name__}, not a dict", None)
        return None

    def _failed(self, hook: str, error: str, trace: str | None) -> None:
        if self.errors is not None:
            self.errors.labels(hook=hook).inc()
        fields = {"hook": hook, "error": error}
        if trace:
            fields["traceback"] = trace
        self.log.error("Hook failed; returning its input unchanged", **fields)


def _plugin_service(runtime: _Runtime) -> Any:
    """A C{GatewayDPluginService} servable whose every RPC goes to the plugin."""
    from gatewayd.plugins.structs import from_struct, to_struct
    from gatewayd.protos.plugin.v1.plugin_grpc import GatewayDPluginServiceBase

    async def get_plugin_config(self: Any, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(to_struct(runtime.plugin.plugin_config()))

    def rpc(hook: str) -> Callable[[Any, Any], Any]:
        async def method(self: Any, stream: Any) -> None:
            request = await stream.recv_message()
            try:
                payload = from_struct(request)
            except Exception as e:  # noqa: BLE001
                runtime.log.error("Cannot decode the request", hook=hook, error=str(e))
                await stream.send_message(request)
                return
            result = await runtime.call(hook, payload)
            reply = request
            if result is not None:
                try:
                    reply = to_struct(result)
                except (TypeError, ValueError) as e:
                    runtime._failed(hook, f"result cannot be sent: {e}", None)
            await stream.send_message(reply)

        method.__name__ = names.RPC_BY_NAME[hook]
        return method

    methods: dict[str, Any] = {"GetPluginConfig": get_plugin_config}
    for hook, rpc_name in names.RPC_BY_NAME.items():
        methods[rpc_name] = rpc(hook)
    cls = type("GatewayDPluginService", (GatewayDPluginServiceBase,), methods)
    return cls()


def _control_services(runtime: _Runtime) -> list[Any]:
    from grpclib.const import Status
    # Not grpclib.health: its health_pb2 clashes with grpcio-health-checking's
    # in one process ("duplicate symbol"); our stub uses the latter's messages.
    from grpc_health.v1.health_pb2 import HealthCheckResponse

    from gatewayd.protos.grpc_health.v1.health_grpc import HealthBase

    from gatewayd.protos.goplugin.grpc_controller_grpc import GRPCControllerBase
    from gatewayd.protos.goplugin.grpc_controller_pb2 import Empty
    from gatewayd.protos.goplugin.grpc_stdio_grpc import GRPCStdioBase

    class Health(HealthBase):
        """go-plugin pings service "plugin"; "" is the whole server."""

        async def Check(self, stream: Any) -> None:  # noqa: N802 - gRPC method
            request = await stream.recv_message()
            if request.service not in ("", "plugin"):
                await stream.send_trailing_metadata(status=Status.NOT_FOUND)
                return
            status = (HealthCheckResponse.NOT_SERVING if runtime.stopping.is_set()
                      else HealthCheckResponse.SERVING)
            await stream.send_message(HealthCheckResponse(status=status))

        async def Watch(self, stream: Any) -> None:  # noqa: N802 - gRPC method
            request = await stream.recv_message()
            if request.service not in ("", "plugin"):
                await stream.send_message(
                    HealthCheckResponse(status=HealthCheckResponse.SERVICE_UNKNOWN))
            else:
                await stream.send_message(HealthCheckResponse(status=HealthCheckResponse.SERVING))
            await runtime.stopping.wait()

        async def List(self, stream: Any) -> None:  # noqa: N802 - gRPC method
            from grpc_health.v1.health_pb2 import HealthListResponse

            await stream.recv_message()
            status = (HealthCheckResponse.NOT_SERVING if runtime.stopping.is_set()
                      else HealthCheckResponse.SERVING)
            reply = HealthListResponse()
            reply.statuses["plugin"].status = status
            await stream.send_message(reply)

    class Controller(GRPCControllerBase):
        async def Shutdown(self, stream: Any) -> None:  # noqa: N802 - gRPC method
            await stream.recv_message()
            runtime.log.info("Shutdown requested by the host")
            await stream.send_message(Empty())
            asyncio.get_running_loop().call_soon(runtime.stopping.set)

    class Stdio(GRPCStdioBase):
        """Our stdout/stderr are not captured; keep the stream open and quiet."""

        async def StreamStdio(self, stream: Any) -> None:  # noqa: N802 - gRPC method
            await stream.recv_message()
            await runtime.stopping.wait()

    return [Health(), Controller(), Stdio()]


async def _metrics_server(runtime: _Runtime, path: str) -> Any:
    """Prometheus text over HTTP on a Unix socket, any path (like the Go SDK)."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            body = generate_latest(runtime.registry)
            head = (f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii")
            writer.write(head + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()

    if os.path.exists(path):
        os.unlink(path)
    return await asyncio.start_unix_server(handle, path)


async def _run(plugin: Plugin, env: Mapping[str, str], network: str, stdout: Any,
               log: HclogLog) -> int:
    from grpclib.server import Server

    runtime = _Runtime(plugin, log)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, runtime.stopping.set)

    ssl_context = None
    cert_field = ""
    client_cert = env.get("PLUGIN_CLIENT_CERT")
    if client_cert:
        from gatewayd.sdk import mtls

        own = mtls.generate_certificate()
        try:
            ssl_context = mtls.server_context(own, client_cert)
        except Exception as e:  # noqa: BLE001 - ssl raises several types for bad PEM
            log.error("PLUGIN_CLIENT_CERT is not a usable certificate", error=str(e))
            return 1
        cert_field = mtls.encode_handshake_cert(own.der)

    listener = _tcp_listener(env) if network == "tcp" else _unix_listener(env)
    server = Server([_plugin_service(runtime), *_control_services(runtime)])
    metrics = None
    try:
        if listener.path is not None:
            await server.start(path=listener.path, ssl=ssl_context)
            group = env.get("PLUGIN_UNIX_SOCKET_GROUP")
            if group:
                gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
                os.chown(listener.path, -1, gid)
                os.chmod(listener.path, 0o660)
        else:
            await server.start(sock=listener.sock, ssl=ssl_context)
        if plugin.metrics_unix_socket:
            metrics = await _metrics_server(runtime, plugin.metrics_unix_socket)
        versions = [v.strip() for v in env.get("PLUGIN_PROTOCOL_VERSIONS", "").split(",") if v.strip()]
        if versions and str(APP_PROTOCOL_VERSION) not in versions:
            log.warn("The host does not offer protocol version 1", offered=",".join(versions))
        line = Handshake(listener.network, listener.address, cert_field).line()
        stdout.write(line)
        stdout.flush()
        log.info("Plugin serving", network=listener.network, address=listener.address,
                 tls=bool(ssl_context), hooks=sorted(plugin.hook_names()))
        await runtime.stopping.wait()
        log.info("Plugin stopping")
    finally:
        runtime.stopping.set()
        server.close()
        try:
            await asyncio.wait_for(server.wait_closed(), 5)
        except asyncio.TimeoutError:
            log.warn("Connections still open after 5 s; exiting anyway")
        if metrics is not None:
            metrics.close()
        for cleanup in listener.cleanup:
            cleanup()
    return 0


def serve(plugin: type[Plugin] | Plugin, *, config: Mapping[str, Any] | None = None,
          network: str | None = None, env: Mapping[str, str] | None = None,
          log_level: str | None = None) -> NoReturn:
    """
    Run C{plugin} as a go-plugin plugin process until the host stops it,
    then exit the process (status 0; 1 when refused).

    @param plugin: a L{Plugin} subclass (instantiated with C{config}) or instance.
    @param network: C{"unix"} (default on POSIX, as go-plugin) or C{"tcp"}.
    @param env: the environment (default C{os.environ}).
    @param log_level: lowest level logged on stderr (default C{$LOG_LEVEL} or info).
    """
    env = os.environ if env is None else env
    stdout = sys.stdout
    sys.stdout = sys.stderr  # nothing but the handshake may reach stdout
    if not check_cookie(env):
        sys.stderr.write(NOT_A_PLUGIN)
        sys.stderr.flush()
        raise SystemExit(1)
    if isinstance(plugin, type):
        name = plugin.name or plugin.__name__
        log = HclogLog(name, level=(log_level or env.get("LOG_LEVEL") or "info").lower())
        instance = plugin(config, log=log)
    else:
        instance = plugin
        log = HclogLog(instance.name or type(instance).__name__,
                       level=(log_level or env.get("LOG_LEVEL") or "info").lower())
        instance.log = log
    if network is None:
        network = "tcp" if os.name == "nt" else "unix"
    if network not in ("unix", "tcp"):
        raise ValueError(f"network must be 'unix' or 'tcp', not {network!r}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = asyncio.run(_run(instance, env, network, stdout, log))
    except Exception as e:  # noqa: BLE001 - report and exit non-zero, like go-plugin
        log.error("Plugin failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
        code = 1
    raise SystemExit(code)
