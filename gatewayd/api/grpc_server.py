# -*- test-case-name: tests.integration.test_api_gateway -*-
"""
The admin API over gRPC: C{api.v1.GatewayDAdminAPIService},
C{grpc.health.v1.Health} and server reflection, on C{api.grpcAddress}.

Why a grpcio I{sync} server on its own threads: the gateway runs on Twisted's
epoll reactor by default (its relay is fastest there), and grpc.aio needs an
asyncio loop, which exists only under the asyncio reactor.  A sync server
works under every reactor, and the admin API is off the data path, so a few
threads cost nothing that matters.  The threads never touch gateway state:
each call asks the reactor thread for a snapshot (L{ReactorBridge}), which
returns fresh plain data that the gRPC thread then encodes.  A reactor that
does not answer within C{timeout} seconds gives UNAVAILABLE, never a hung
thread.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Callable, TypeVar

import grpc
from google.protobuf import struct_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from gatewayd.api.auth import TokenCheck
from gatewayd.api.errors import ApiError, Unauthenticated, Unavailable, Unimplemented
from gatewayd.api.routes import RAFT_MISSING
from gatewayd.api.state import AdminState
from gatewayd.protos.api.v1 import api_pb2, api_pb2_grpc

T = TypeVar("T")

ADMIN_SERVICE = "api.v1.GatewayDAdminAPIService"
HEALTH_SERVICE = "grpc.health.v1.Health"

_STATUS_CODES = {
    "InvalidArgument": grpc.StatusCode.INVALID_ARGUMENT,
    "NotFound": grpc.StatusCode.NOT_FOUND,
    "Unimplemented": grpc.StatusCode.UNIMPLEMENTED,
    "Internal": grpc.StatusCode.INTERNAL,
    "Unavailable": grpc.StatusCode.UNAVAILABLE,
    "Unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
}

#: gRPC method -> (method, endpoint) labels of gatewayd_api_requests_total, as GatewayD
#: counts its gRPC calls under their HTTP routes.
_V1 = "/v1/GatewayDPluginService"
LABELS: dict[str, tuple[str, str]] = {
    "Version": ("GET", f"{_V1}/Version"),
    "GetGlobalConfig": ("GET", f"{_V1}/GetGlobalConfig"),
    "GetPluginConfig": ("GET", f"{_V1}/GetPluginConfig"),
    "GetPlugins": ("GET", f"{_V1}/GetPlugins"),
    "GetPools": ("GET", f"{_V1}/GetPools"),
    "GetProxies": ("GET", f"{_V1}/GetProxies"),
    "GetServers": ("GET", f"{_V1}/GetServers"),
    "GetPeers": ("GET", "/v1/raft/peers"),
    "AddPeer": ("POST", "/v1/raft/peers"),
    "RemovePeer": ("DELETE", "/v1/raft/peers/{peerId}"),
}


class ReactorBridge:
    """Runs a function in the reactor thread and waits for its result in this one."""

    def __init__(self, reactor: Any, timeout: float = 10.0) -> None:
        self.reactor = reactor
        self.timeout = timeout

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """
        @raise Unavailable: the reactor did not run C{fn} within the timeout
            (stopped, or stuck).
        @raise Exception: whatever C{fn} raised.
        """
        future: Future[T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
                future.set_exception(e)

        self.reactor.callFromThread(run)
        try:
            return future.result(self.timeout)
        except FutureTimeout:
            future.cancel()
            raise Unavailable("the gateway did not answer in time") from None


def to_struct(data: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(data)
    return struct


def plugin_configs(data: dict[str, list[dict[str, Any]]]) -> api_pb2.PluginConfigs:
    """L{AdminState.plugins} as the C{PluginConfigs} message."""
    configs = []
    for item in data["configs"]:
        ident = item["id"]
        configs.append(api_pb2.PluginConfig(
            id=api_pb2.PluginID(name=ident["name"], version=ident["version"],
                                remote_url=ident["remoteUrl"], checksum=ident["checksum"]),
            description=item["description"], authors=item["authors"], license=item["license"],
            project_url=item["projectUrl"], config=item["config"], hooks=item["hooks"],
            requires=item["requires"], tags=item["tags"], categories=item["categories"]))
    return api_pb2.PluginConfigs(configs=configs)


class AdminServicer(api_pb2_grpc.GatewayDAdminAPIServiceServicer):
    """C{api.v1.GatewayDAdminAPIService}: the data of the HTTP routes, as messages."""

    def __init__(self, state: AdminState, bridge: ReactorBridge, metrics: Any = None,
                 log: Logger | None = None) -> None:
        self.state = state
        self.bridge = bridge
        self.metrics = metrics
        self.log = log or Logger(namespace="gatewayd.api")

    def _answer(self, name: str, context: grpc.ServicerContext, read: Callable[[], T],
                encode: Callable[[T], Any]) -> Any:
        method, endpoint = LABELS[name]
        try:
            result = encode(self.bridge.call(read))
        except ApiError as e:
            self._count(method, endpoint, e.code)
            context.abort(_STATUS_CODES[e.code], e.message)
        except Exception:  # noqa: BLE001 - logged here, the client gets INTERNAL
            self.log.failure("admin API: gRPC {name} failed", name=name)
            self._count(method, endpoint, "Internal")
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        self._count(method, endpoint)
        return result

    def _count(self, method: str, endpoint: str, error: str | None = None) -> None:
        if self.metrics is None:
            return
        self.metrics.api_requests_total.labels(method, endpoint).inc()
        if error is not None:
            self.metrics.api_requests_errors_total.labels(method, endpoint, error).inc()

    def Version(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._answer("Version", context, self.state.version,
                            lambda v: api_pb2.VersionResponse(version=v["version"],
                                                              version_info=v["versionInfo"]))

    def GetGlobalConfig(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        group = request.group_name if request.HasField("group_name") else ""
        return self._answer("GetGlobalConfig", context,
                            lambda: self.state.global_config(group), to_struct)

    def GetPluginConfig(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._answer("GetPluginConfig", context, self.state.plugin_config, to_struct)

    def GetPlugins(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._answer("GetPlugins", context, self.state.plugins, plugin_configs)

    def GetPools(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._answer("GetPools", context, self.state.pools, to_struct)

    def GetProxies(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._answer("GetProxies", context, self.state.proxies, to_struct)

    def GetServers(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._answer("GetServers", context, self.state.servers, to_struct)

    def _no_raft(self, name: str, context: grpc.ServicerContext) -> Any:
        def refuse() -> None:
            raise Unimplemented(RAFT_MISSING)
        return self._answer(name, context, refuse, lambda _: None)

    def GetPeers(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._no_raft("GetPeers", context)

    def AddPeer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._no_raft("AddPeer", context)

    def RemovePeer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return self._no_raft("RemovePeer", context)


def _health_status(serving: bool) -> int:
    return health_pb2.HealthCheckResponse.SERVING if serving else \
        health_pb2.HealthCheckResponse.NOT_SERVING


class GatewayHealth(health.HealthServicer):
    """
    C{grpc.health.v1.Health} for C{""} and the admin service: SERVING when
    every server group listens (GatewayD's gRPC check ignores Raft too).
    C{Check} reads the gateway at call time; C{Watch} subscribers hear of
    changes from L{refresh}, which the service calls every second.
    """

    def __init__(self, state: AdminState, bridge: ReactorBridge) -> None:
        super().__init__()
        self.state = state
        self.bridge = bridge
        self._last: int | None = None

    def refresh(self, serving: bool) -> None:
        """Publish the status (to watchers only when it changed)."""
        status = _health_status(serving)
        if status != self._last:
            self._last = status
            for name in ("", ADMIN_SERVICE):
                self.set(name, status)

    def Check(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if request.service in ("", ADMIN_SERVICE) and not self._gracefully_shutting_down:
            try:
                serving, _ = self.bridge.call(self.state.health)
            except Unavailable:
                serving = False
            self.refresh(serving)
        return super().Check(request, context)


class _TokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call but health checks without C{authorization: Bearer <token>}."""

    def __init__(self, auth: TokenCheck, metrics: Any = None) -> None:
        self.auth = auth
        self.metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        method = details.method or ""
        if method.startswith(f"/{HEALTH_SERVICE}/"):
            return continuation(details)
        header = next((value for key, value in details.invocation_metadata or ()
                       if key == "authorization"), None)
        if self.auth.accepts(header):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        name = method.rsplit("/", 1)[-1]
        if method.startswith(f"/{ADMIN_SERVICE}/") and name in LABELS and self.metrics is not None:
            labels = LABELS[name]
            self.metrics.api_requests_total.labels(*labels).inc()
            self.metrics.api_requests_errors_total.labels(*labels, Unauthenticated.code).inc()
        return _refusal(handler)


def _refusal(handler: Any) -> Any:
    """A handler of the same streaming kind as C{handler} that answers UNAUTHENTICATED."""
    def refuse(_: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or invalid bearer token")

    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def grpc_target(network: str, address: str) -> str:
    """The grpcio bind target of C{api.grpcNetwork}/C{api.grpcAddress}."""
    return f"unix:{address}" if network == "unix" else address


class ApiGrpcService(Service):
    """
    Runs the gRPC server while the service runs.  A bind failure makes
    C{startService} raise at once, like the other listeners.

    @ivar port: the bound TCP port (useful with port 0), or 0 for Unix sockets.
    """

    name = "api-grpc"

    def __init__(self, state: AdminState, reactor: Any, network: str, address: str,
                 auth: TokenCheck, metrics: Any = None, log: Logger | None = None, *,
                 workers: int = 4, grace: float = 2.0, timeout: float = 10.0) -> None:
        self.state = state
        self.reactor = reactor
        self.network = network
        self.address = address
        self.auth = auth
        self.metrics = metrics
        self.log = log or Logger(namespace="gatewayd.api")
        self.workers = workers
        self.grace = grace
        self.bridge = ReactorBridge(reactor, timeout)
        self.port = 0
        self.health: GatewayHealth | None = None
        self._server: grpc.Server | None = None
        self._loop: LoopingCall | None = None

    def startService(self) -> None:  # noqa: N802 - Twisted API
        target = grpc_target(self.network, self.address)
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="gatewayd-api-grpc"),
            interceptors=[_TokenInterceptor(self.auth, self.metrics)],
            options=[("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=16 * self.workers)
        api_pb2_grpc.add_GatewayDAdminAPIServiceServicer_to_server(
            AdminServicer(self.state, self.bridge, self.metrics, self.log), server)
        self.health = GatewayHealth(self.state, self.bridge)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (ADMIN_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)
        try:
            port = server.add_insecure_port(target)
        except RuntimeError:  # grpcio says no more than "Failed to bind"
            port = 0
        if not port:
            raise OSError(f"admin API (gRPC) cannot listen on {target} (api.grpcAddress): "
                          "address in use or not available")
        server.start()
        self._server, self.port = server, (0 if self.network == "unix" else port)
        super().startService()
        self._loop = LoopingCall(self._refresh_health)
        self._loop.clock = self.reactor
        self._loop.start(1.0, now=True)
        shown = target if self.network == "unix" else f"{target.rsplit(':', 1)[0]}:{port}"
        self.log.info("admin API (gRPC) listening on {address}", address=shown)

    def _refresh_health(self) -> None:
        if self.health is not None:
            self.health.refresh(self.state.health()[0])

    def stopService(self) -> Deferred[None]:  # noqa: N802 - Twisted API
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        server, self._server = self._server, None
        if server is None:
            return succeed(None)
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        stopped = server.stop(self.grace)
        done: Deferred[None] = Deferred()

        def wait() -> None:  # in-flight calls need the reactor to finish: never block it
            stopped.wait()
            self.reactor.callFromThread(done.callback, None)

        threading.Thread(target=wait, name="gatewayd-api-grpc-stop", daemon=True).start()
        return done
