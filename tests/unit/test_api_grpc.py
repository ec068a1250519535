"""
The admin API's gRPC face: a real grpcio server on a free loopback port, in
front of a real gateway on a memory reactor whose C{callFromThread} runs the
call at once (the test thread stays idle while gRPC threads read).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Iterator

import grpc
import pytest
from google.protobuf import empty_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from gatewayd.api.auth import TokenCheck
from gatewayd.api.errors import Unavailable
from gatewayd.api.grpc_server import (
    ADMIN_SERVICE, ApiGrpcService, GatewayHealth, ReactorBridge, plugin_configs, to_struct,
)
from gatewayd.api.state import AdminState
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.protos.api.v1 import api_pb2, api_pb2_grpc
from tests.unit.api_world import SECRETS, World, build_world

TOKEN = "api-token-9f8e7d"
MD = (("authorization", f"Bearer {TOKEN}"),)


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


class Served:
    def __init__(self, world: World, token: str | None) -> None:
        self.world = world
        lock = threading.Lock()

        def call_from_thread(f: Any, *args: Any, **kwargs: Any) -> None:
            with lock:  # one "reactor turn" at a time, like the real reactor thread
                f(*args, **kwargs)

        world.reactor.callFromThread = call_from_thread  # type: ignore[method-assign]
        self.registry = CollectorRegistry()
        self.service = ApiGrpcService(AdminState(world.gateway), world.reactor, "tcp",
                                      "127.0.0.1:0", TokenCheck(token),
                                      GatewayMetrics(self.registry), grace=0.5)
        self.service.startService()
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.service.port}")
        self.stub = api_pb2_grpc.GatewayDAdminAPIServiceStub(self.channel)
        self.state = AdminState(world.gateway)

    def stop(self) -> None:
        self.channel.close()
        done = self.service.stopService()
        wait_for(lambda: done.called)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    world = build_world(tmp_path)
    world.connect_backends()
    world.connect_client()
    served = Served(world, TOKEN)
    yield served
    served.stop()


def as_dict(message: Any) -> Any:
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def test_every_method_returns_what_the_http_routes_return(served: Served) -> None:
    stub, state, empty = served.stub, served.state, empty_pb2.Empty()
    version = stub.Version(empty, metadata=MD)
    assert (version.version, version.version_info) == tuple(state.version().values())
    # Struct numbers are doubles: compare through JSON-equal data.
    assert as_dict(stub.GetGlobalConfig(api_pb2.Group(), metadata=MD)) == state.global_config()
    assert as_dict(stub.GetGlobalConfig(api_pb2.Group(group_name="tenant"), metadata=MD)) == \
        state.global_config("tenant")
    assert as_dict(stub.GetPluginConfig(empty, metadata=MD)) == state.plugin_config()
    assert as_dict(stub.GetPools(empty, metadata=MD)) == state.pools()
    assert as_dict(stub.GetProxies(empty, metadata=MD)) == state.proxies()
    assert as_dict(stub.GetServers(empty, metadata=MD)) == state.servers()
    plugins = stub.GetPlugins(empty, metadata=MD)
    assert plugins == plugin_configs(state.plugins())
    assert plugins.configs[0].id.name == "secret-plugin"
    assert list(plugins.configs[0].hooks) == [12, 14]
    for answer in (stub.GetGlobalConfig(api_pb2.Group(), metadata=MD),
                   stub.GetPluginConfig(empty, metadata=MD), plugins):
        for secret in SECRETS:
            assert secret.encode() not in answer.SerializeToString()
    assert served.registry.get_sample_value(
        "gatewayd_api_requests_total",
        {"method": "GET", "endpoint": "/v1/GatewayDPluginService/GetPools"}) == 1


def test_errors_carry_status_codes(served: Served) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        served.stub.GetGlobalConfig(api_pb2.Group(group_name="nope"), metadata=MD)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert missing.value.details() == "group not found"
    for call, request in ((served.stub.GetPeers, empty_pb2.Empty()),
                          (served.stub.AddPeer, api_pb2.AddPeerRequest(peer_id="n2")),
                          (served.stub.RemovePeer, api_pb2.RemovePeerRequest(peer_id="n2"))):
        with pytest.raises(grpc.RpcError) as raft:
            call(request, metadata=MD)
        assert raft.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "no Raft" in raft.value.details()
    assert served.registry.get_sample_value(
        "gatewayd_api_requests_errors_total",
        {"method": "GET", "endpoint": "/v1/GatewayDPluginService/GetGlobalConfig",
         "error": "NotFound"}) == 1


@pytest.mark.parametrize("metadata", [(), (("authorization", "Bearer nope"),),
                                      (("authorization", TOKEN),)])
def test_token_required_except_for_health(served: Served, metadata: Any) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        served.stub.GetServers(empty_pb2.Empty(), metadata=metadata)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reflection = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    with pytest.raises(grpc.RpcError) as refused_stream:
        list(reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=metadata))
    assert refused_stream.value.code() == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(served.channel)
    assert health.Check(health_pb2.HealthCheckRequest(), metadata=metadata).status == \
        health_pb2.HealthCheckResponse.SERVING
    assert served.registry.get_sample_value(
        "gatewayd_api_requests_errors_total",
        {"method": "GET", "endpoint": "/v1/GatewayDPluginService/GetServers",
         "error": "Unauthenticated"}) == 1


def test_reflection_lists_the_services(served: Served) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(served.channel)
    answers = list(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services=""),
              reflection_pb2.ServerReflectionRequest(file_containing_symbol=ADMIN_SERVICE)]),
        metadata=MD))
    names = {s.name for s in answers[0].list_services_response.service}
    assert names == {ADMIN_SERVICE, "grpc.health.v1.Health",
                     "grpc.reflection.v1alpha.ServerReflection"}
    assert answers[1].file_descriptor_response.file_descriptor_proto


def test_health_follows_the_listeners(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    request = health_pb2.HealthCheckRequest(service=ADMIN_SERVICE)
    assert health.Check(request).status == health_pb2.HealthCheckResponse.SERVING
    group = served.world.gateway.groups["tenant"]
    port, group.port = group.port, None  # the tenant listener is gone
    assert health.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
    group.port = port
    with pytest.raises(grpc.RpcError) as unknown:
        health.Check(health_pb2.HealthCheckRequest(service="other.Service"))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watchers_hear_of_changes_only(served: Served) -> None:
    health = health_pb2_grpc.HealthStub(served.channel)
    stream = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
    seen = [next(stream).status]
    group = served.world.gateway.groups["default"]
    group.port = None
    served.world.reactor.advance(1.0)  # the refresh loop
    served.world.reactor.advance(1.0)  # no change: nothing sent
    seen.append(next(stream).status)
    stream.cancel()
    assert seen == [health_pb2.HealthCheckResponse.SERVING,
                    health_pb2.HealthCheckResponse.NOT_SERVING]


def test_stop_reports_not_serving_and_releases_the_port(tmp_path: Path) -> None:
    served = Served(build_world(tmp_path), token=None)
    port = served.service.port
    served.stop()
    assert not served.service.running
    import socket
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", port))


def test_a_busy_port_fails_start(tmp_path: Path) -> None:
    import socket
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        world = build_world(tmp_path)
        service = ApiGrpcService(AdminState(world.gateway), world.reactor, "tcp",
                                 f"127.0.0.1:{taken.getsockname()[1]}", TokenCheck(None))
        with pytest.raises(OSError, match=r"admin API \(gRPC\) cannot listen on 127\.0\.0\.1:\d+ "
                                          r"\(api\.grpcAddress\)"):
            service.startService()
        assert not service.running


def test_unix_socket(tmp_path: Path) -> None:
    world = build_world(tmp_path)
    world.reactor.callFromThread = lambda f, *a, **k: f(*a, **k)  # type: ignore[method-assign]
    path = tmp_path / "api.sock"
    service = ApiGrpcService(AdminState(world.gateway), world.reactor, "unix", str(path),
                             TokenCheck(None))
    service.startService()
    assert service.port == 0
    try:
        with grpc.insecure_channel(f"unix:{path}") as channel:
            stub = api_pb2_grpc.GatewayDAdminAPIServiceStub(channel)
            assert stub.Version(empty_pb2.Empty()).version
    finally:
        done = service.stopService()
        wait_for(lambda: done.called)


# -- pieces ------------------------------------------------------------------------------------

class _Reactor:
    """callFromThread queues; the test decides when the "reactor" runs."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:  # noqa: N802
        self.calls.append((f, args))


def test_bridge_runs_the_function_in_the_reactor_and_returns_its_result() -> None:
    reactor = _Reactor()
    bridge = ReactorBridge(reactor, timeout=10)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(bridge.call(lambda x: x * 2, 21)))
    worker.start()
    wait_for(lambda: reactor.calls)
    f, args = reactor.calls.pop()
    f(*args)
    worker.join(10)
    assert result == [42]


def test_bridge_passes_exceptions_through() -> None:
    reactor = _Reactor()
    bridge = ReactorBridge(reactor, timeout=10)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            bridge.call(lambda: 1 / 0)
        except ZeroDivisionError as e:
            errors.append(e)

    worker = threading.Thread(target=call)
    worker.start()
    wait_for(lambda: reactor.calls)
    f, args = reactor.calls.pop()
    f(*args)
    worker.join(10)
    assert len(errors) == 1


def test_bridge_gives_up_on_a_reactor_that_does_not_answer() -> None:
    reactor = _Reactor()
    with pytest.raises(Unavailable, match="did not answer in time"):
        ReactorBridge(reactor, timeout=0.05).call(lambda: 1)
    f, args = reactor.calls.pop()
    f(*args)  # running it late does no harm


def test_health_refresh_publishes_changes_only() -> None:
    reactor = _Reactor()
    servicer = GatewayHealth(AdminState(None), ReactorBridge(reactor))
    sent: list[Any] = []
    servicer._send_response_callbacks[""] = {sent.append}
    servicer.refresh(True)
    servicer.refresh(True)
    servicer.refresh(False)
    assert [r.status for r in sent] == [health_pb2.HealthCheckResponse.SERVING,
                                        health_pb2.HealthCheckResponse.NOT_SERVING]


def test_to_struct_keeps_nesting() -> None:
    data = {"a": {"b": [1, "x", True, None]}, "n": 5_000_000_000}
    assert json_format.MessageToDict(to_struct(data)) == data
