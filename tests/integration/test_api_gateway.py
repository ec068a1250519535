"""
The admin API of a real gateway process: every route over HTTP and gRPC,
the token, secrets, metrics and shutdown.  PostgreSQL on 127.0.0.1:5432.
"""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from typing import Any, Iterator

import grpc
import jsonschema
import psycopg
import pytest
from google.protobuf import empty_pb2, json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from gatewayd import __version__
from gatewayd.api.routes import OPENAPI, ROUTES
from gatewayd.protos.api.v1 import api_pb2, api_pb2_grpc
from tests.integration.api_support import (
    SECRETS, TOKEN, ApiGateway, api_config, plugins_config,
)
from tests.support.ports import free_port

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("api_gateway")]

V1 = "/v1/GatewayDPluginService"
MD = (("authorization", f"Bearer {TOKEN}"),)


class Running:
    def __init__(self, gateway: ApiGateway, client: psycopg.Connection[Any]) -> None:
        self.gateway = gateway
        self.client = client
        with socket.socket(fileno=client.pgconn.socket) as s:
            host, port = s.getsockname()[:2]
            s.detach()
        self.client_address = f"{host}:{port}"
        self.channel = grpc.insecure_channel(gateway.grpc_target)
        self.stub = api_pb2_grpc.GatewayDAdminAPIServiceStub(self.channel)


@pytest.fixture(scope="module")
def running(service_pg: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    workdir = tmp_path_factory.mktemp("api-gw")
    config = api_config(service_pg)
    config["metrics"] = {"default": {"enabled": True, "address": f"127.0.0.1:{free_port()}"}}
    gateway = ApiGateway(config, plugins_config(workdir), workdir).start()
    try:
        gateway.wait_for(lambda: all(p["health"] == "serving" for p in
                                     gateway.json("/v1/status")["plugins"]),
                         what="both plugins loaded")
        client = psycopg.connect(gateway.dsn(), autocommit=True)
        client.execute("select 1")
        running = Running(gateway, client)
        yield running
        running.channel.close()
        client.close()
    finally:
        code = gateway.stop()
    assert code == 0, gateway.output()[-3000:]
    assert "Traceback" not in gateway.output(), gateway.output()[-3000:]


def documented(path: str, status: int, body: Any) -> None:
    operation = OPENAPI["paths"][path]["get"]
    schema = next(iter(operation["responses"][str(status)]["content"].values()))["schema"]
    jsonschema.validate(body, {**schema, "components": OPENAPI["components"]})


# -- HTTP ---------------------------------------------------------------------------------------

def test_every_http_route(running: Running) -> None:
    gw = running.gateway
    for route in ROUTES:
        path = route.path.replace("{peerId}", "node2")
        status, headers, body = gw.get(path, method=route.method)
        expected = 501 if route.path.startswith("/v1/raft/") else 200
        assert status == expected, (route, body)
        if headers["content-type"].startswith("application/json"):
            documented_status = str(status)
            operation = OPENAPI["paths"][route.path][route.method.lower()]
            schema = operation["responses"][documented_status]["content"]["application/json"]
            jsonschema.validate(json.loads(body),
                                {**schema["schema"], "components": OPENAPI["components"]})


def test_gatewayd_answers(running: Running) -> None:
    gw = running.gateway
    assert gw.json(f"{V1}/Version")["version"] == __version__
    assert gw.get("/version")[2] == __version__.encode()
    config = gw.json(f"{V1}/GetGlobalConfig")
    assert config["clients"]["default"]["writes"]["dialTimeout"] == 5_000_000_000
    assert config["clients"]["default"]["writes"]["startupParams"]["password"] == "REDACTED"
    assert config["api"]["token"] == "REDACTED"
    assert list(gw.json(f"{V1}/GetGlobalConfig?groupName=default")["servers"]) == ["default"]
    status, _, body = gw.get(f"{V1}/GetGlobalConfig?groupName=nope")
    assert (status, json.loads(body)["error"]) == (404, "group not found")
    plugin_config = gw.json(f"{V1}/GetPluginConfig")
    echo = next(p for p in plugin_config["plugins"] if p["name"] == "echo")
    assert echo["env"] == ["API_KEY=REDACTED", "REGION=eu"]
    plugins = {p["id"]["name"]: p for p in gw.json(f"{V1}/GetPlugins")["configs"]}
    assert set(plugins) == {"secret-plugin", "echo"}  # names from the config, as GatewayD
    assert plugins["echo"]["id"]["version"] == "0.1.0"  # the rest from the plugin
    assert plugins["echo"]["id"]["checksum"] == next(
        p["checksum"] for p in plugin_config["plugins"] if p["name"] == "echo")
    assert plugins["secret-plugin"]["config"]["apiKey"] == "REDACTED"
    assert plugins["secret-plugin"]["hooks"] == [12]
    pools = gw.json(f"{V1}/GetPools")
    assert pools["default"]["writes"]["cap"] == 2
    proxies = gw.json(f"{V1}/GetProxies")["default"]["writes"]
    assert running.client_address in proxies["busy"]
    assert proxies["total"] == len(proxies["available"]) + len(proxies["busy"])
    servers = gw.json(f"{V1}/GetServers")
    assert servers["default"]["status"] == 0
    assert servers["default"]["address"] == f"127.0.0.1:{gw.port}"
    assert gw.json("/healthz")["status"] == "SERVING"
    assert gw.json("/healthz?strict=true")["status"] == "SERVING"
    status_page = gw.json("/v1/status")
    assert running.client_address in {c["remote"] for c in status_page["clients"]["shown"]}
    kinds = {p["name"]: (p["kind"], p["health"]) for p in status_page["plugins"]}
    assert kinds["secret-plugin"] == ("in-process", "serving")
    assert kinds["echo"] == ("process", "serving")
    assert isinstance(next(p for p in status_page["plugins"] if p["name"] == "echo")["pid"], int)


def test_http_errors_are_json(running: Running) -> None:
    gw = running.gateway
    for path, code in (("/nope", 404), ("/v1/status?limit=x", 400), ("/healthz?x=1", 400)):
        status, headers, body = gw.get(path)
        assert status == code
        assert headers["content-type"] == "application/json; charset=utf-8"
        assert "error" in json.loads(body)
    status, headers, _ = gw.get(f"{V1}/GetPools", method="DELETE")
    assert status == 405 and headers["allow"] == "GET"


def test_http_needs_the_token(running: Running) -> None:
    gw = running.gateway
    for route in ROUTES:
        path = route.path.replace("{peerId}", "node2")
        for token in (None, "wrong"):
            status, headers, body = gw.get(path, token=token, method=route.method)
            if route.public:
                assert status == 200, route
            else:
                assert status == 401, (route, token)
                assert json.loads(body)["error"] == "missing or invalid bearer token"


# -- gRPC ---------------------------------------------------------------------------------------

def test_every_grpc_method(running: Running) -> None:
    gw, stub, empty = running.gateway, running.stub, empty_pb2.Empty()
    version = stub.Version(empty, metadata=MD)
    assert version.version == __version__ and version.version_info.startswith("gatewayd v")

    def same(grpc_answer: Any, path: str) -> None:
        assert json_format.MessageToDict(grpc_answer) == gw.json(path)

    same(stub.GetGlobalConfig(api_pb2.Group(), metadata=MD), f"{V1}/GetGlobalConfig")
    same(stub.GetGlobalConfig(api_pb2.Group(group_name="default"), metadata=MD),
         f"{V1}/GetGlobalConfig?groupName=default")
    same(stub.GetPluginConfig(empty, metadata=MD), f"{V1}/GetPluginConfig")
    same(stub.GetPools(empty, metadata=MD), f"{V1}/GetPools")
    same(stub.GetServers(empty, metadata=MD), f"{V1}/GetServers")
    proxies = json_format.MessageToDict(stub.GetProxies(empty, metadata=MD))
    assert running.client_address in proxies["default"]["writes"]["busy"]
    plugins = stub.GetPlugins(empty, metadata=MD)
    http_plugins = gw.json(f"{V1}/GetPlugins")["configs"]
    assert [p.id.name for p in plugins.configs] == [p["id"]["name"] for p in http_plugins]
    assert dict(plugins.configs[0].config) == http_plugins[0]["config"]
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetGlobalConfig(api_pb2.Group(group_name="nope"), metadata=MD)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as raft:
        stub.GetPeers(empty, metadata=MD)
    assert raft.value.code() == grpc.StatusCode.UNIMPLEMENTED
    health = health_pb2_grpc.HealthStub(running.channel)
    for service in ("", "api.v1.GatewayDAdminAPIService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == \
            health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(running.channel)
    listed = next(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), metadata=MD))
    assert "api.v1.GatewayDAdminAPIService" in {s.name for s in
                                                listed.list_services_response.service}


def test_grpc_needs_the_token(running: Running) -> None:
    for metadata in ((), (("authorization", "Bearer wrong"),)):
        for call, request in ((running.stub.Version, empty_pb2.Empty()),
                              (running.stub.GetGlobalConfig, api_pb2.Group()),
                              (running.stub.GetPluginConfig, empty_pb2.Empty()),
                              (running.stub.GetPlugins, empty_pb2.Empty()),
                              (running.stub.GetPools, empty_pb2.Empty()),
                              (running.stub.GetProxies, empty_pb2.Empty()),
                              (running.stub.GetServers, empty_pb2.Empty())):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- secrets, metrics ---------------------------------------------------------------------------

def test_no_secret_in_any_answer_or_log_line(running: Running) -> None:
    gw, stub, empty = running.gateway, running.stub, empty_pb2.Empty()
    answers: list[bytes] = []
    for route in ROUTES:
        path = route.path.replace("{peerId}", "node2")
        for token in (TOKEN, None):
            answers.append(gw.get(path, token=token, method=route.method)[2])
    answers.append(gw.get(f"{V1}/GetGlobalConfig?groupName=default")[2])
    for message in (stub.GetGlobalConfig(api_pb2.Group(), metadata=MD),
                    stub.GetPluginConfig(empty, metadata=MD), stub.GetPlugins(empty, metadata=MD),
                    stub.GetServers(empty, metadata=MD), stub.GetProxies(empty, metadata=MD)):
        answers.append(message.SerializeToString())
        answers.append(json_format.MessageToJson(message).encode())
    log = gw.output()
    assert "api GET /v1/GatewayDPluginService/GetGlobalConfig 200" in log  # the access log ran
    for secret in SECRETS:
        for answer in answers:
            assert secret.encode() not in answer
        assert secret not in log, f"{secret} leaked into the log"


def test_requests_are_counted(running: Running) -> None:
    gw = running.gateway
    metrics_url = f"http://{gw.config['metrics']['default']['address']}/metrics"

    def counts() -> dict[tuple[str, ...], float]:
        with urllib.request.urlopen(metrics_url, timeout=10) as answer:
            text = answer.read().decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in ("gatewayd_api_requests_total",
                                   "gatewayd_api_requests_errors_total"):
                    found[(sample.name, *sorted(sample.labels.items()))] = sample.value
        return found

    before = counts()
    gw.get(f"{V1}/GetPools")
    gw.get(f"{V1}/GetPools", token=None)
    running.stub.GetPools(empty_pb2.Empty(), metadata=MD)
    after = counts()
    labels = (("endpoint", f"{V1}/GetPools"), ("method", "GET"))
    total = ("gatewayd_api_requests_total", *labels)
    errors = ("gatewayd_api_requests_errors_total", labels[0], ("error", "Unauthenticated"),
              labels[1])
    assert after[total] - before.get(total, 0) == 3
    assert after[errors] - before.get(errors, 0) == 1


# -- tokens from the environment, shutdown -----------------------------------------------------

def test_token_from_environment_and_clean_shutdown(service_pg: str, tmp_path: Any) -> None:
    config = api_config(service_pg, token=None)
    gateway = ApiGateway(config, {"plugins": []}, tmp_path,
                         env={"GATEWAYD_API_TOKEN": "env-token-Qz81"}).start()
    try:
        assert gateway.get(f"{V1}/GetPools", token=None)[0] == 401
        assert gateway.get(f"{V1}/GetPools", token="env-token-Qz81")[0] == 200
        config_answer = gateway.get(f"{V1}/GetGlobalConfig", token="env-token-Qz81")[2]
        assert json.loads(config_answer)["api"]["token"] == "REDACTED"
        channel = grpc.insecure_channel(gateway.grpc_target)
        stub = api_pb2_grpc.GatewayDAdminAPIServiceStub(channel)
        assert stub.Version(empty_pb2.Empty(),
                            metadata=(("authorization", "Bearer env-token-Qz81"),)).version
        channel.close()
    finally:
        code = gateway.stop(signal.SIGTERM)
    assert code == 0
    output = gateway.output()
    assert "Traceback" not in output, output[-3000:]
    assert "env-token-Qz81" not in output
    for port in (gateway.http_port, gateway.grpc_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
