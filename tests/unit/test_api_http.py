"""
The admin API's HTTP face: twisted.web's real request handling (Site and
HTTPChannel over a StringTransport) on a real gateway built on a memory reactor.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.logger import Logger

from gatewayd import __version__
from gatewayd.api.auth import TokenCheck, is_loopback, resolve_token, token_file_exposed
from gatewayd.api.http import AdminResource, AdminSite
from gatewayd.api.routes import OPENAPI, ROUTES
from gatewayd.api.service import api_services
from gatewayd.api.state import AdminState
from gatewayd.config.schema import API
from gatewayd.errors import ConfigError
from gatewayd.observability.metrics import GatewayMetrics
from tests.unit.api_world import SECRETS, World, build_world

TOKEN = "api-token-9f8e7d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json; charset=utf-8"
        return json.loads(self.body)


class Api:
    """An AdminSite of a world's gateway, spoken to in raw HTTP/1.1."""

    def __init__(self, world: World, token: str | None = TOKEN) -> None:
        self.world = world
        self.registry = CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.events: list[dict[str, Any]] = []
        log = Logger(namespace="test.api", observer=self.events.append)
        resource = AdminResource(AdminState(world.gateway), TokenCheck(token), self.metrics, log)
        self.site = AdminSite(resource, log, world.reactor)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "Connection: close"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head, _, body = transport.value().partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            parsed[name.strip().lower()] = value.strip()
        return Response(int(status_line.split()[1]), parsed, body)

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def counter(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = build_world(tmp_path)
    world.connect_backends()
    world.connect_client()
    return world


@pytest.fixture
def api(world: World) -> Api:
    return Api(world)


def documented(path: str, method: str, status: int, body: Any) -> None:
    """Validate C{body} against the OpenAPI schema of that route and status."""
    operation = OPENAPI["paths"][path][method.lower()]
    content = operation["responses"][str(status)]["content"]
    schema = next(iter(content.values()))["schema"]
    jsonschema.validate(body, {**schema, "components": OPENAPI["components"]})


GET_ROUTES = [r for r in ROUTES if r.method == "GET" and not r.path.startswith("/v1/raft/")]


@pytest.mark.parametrize("route", GET_ROUTES, ids=lambda r: r.path)
def test_every_get_route_answers_as_documented(api: Api, route: Any) -> None:
    response = api.get(route.path, headers=AUTH)
    assert response.status == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    if response.headers["content-type"].startswith("application/json"):
        documented(route.path, "GET", 200, response.json())
    for secret in SECRETS:
        assert secret.encode() not in response.body


def test_gatewayd_shapes(api: Api) -> None:
    v1 = "/v1/GatewayDPluginService"
    assert api.get(f"{v1}/Version", headers=AUTH).json()["version"] == __version__
    pools = api.get(f"{v1}/GetPools", headers=AUTH).json()
    assert pools["default"]["writes"]["cap"] == 2
    proxies = api.get(f"{v1}/GetProxies", headers=AUTH).json()
    busy = [c for b in proxies["default"].values() for c in b["busy"]]
    assert busy == ["10.1.2.3:40001"]
    servers = api.get(f"{v1}/GetServers", headers=AUTH).json()
    assert servers["default"]["status"] == 0 and servers["default"]["tickInterval"] == 7_000_000_000
    plugins = api.get(f"{v1}/GetPlugins", headers=AUTH).json()
    assert [p["id"]["name"] for p in plugins["configs"]] == ["secret-plugin"]
    version = api.get("/version", headers=AUTH)
    assert version.headers["content-type"] == "text/plain; charset=utf-8"
    assert version.body == __version__.encode()


def test_global_config_by_group(api: Api) -> None:
    path = "/v1/GatewayDPluginService/GetGlobalConfig"
    assert list(api.get(f"{path}?groupName=tenant", headers=AUTH).json()["servers"]) == ["tenant"]
    assert list(api.get(f"{path}?group_name=tenant", headers=AUTH).json()["servers"]) == ["tenant"]
    whole = api.get(f"{path}?groupName=", headers=AUTH).json()
    assert set(whole["servers"]) == {"default", "tenant"}
    missing = api.get(f"{path}?groupName=nope", headers=AUTH)
    assert missing.status == 404
    assert missing.json() == {"error": "group not found", "code": 5, "message": "group not found"}
    documented(path, "GET", 404, missing.json())
    assert api.counter("gatewayd_api_requests_errors_total", method="GET", endpoint=path,
                       error="NotFound") == 1


# -- auth --------------------------------------------------------------------------------------

PROTECTED = [r for r in ROUTES if not r.public]


WRONG = (None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer", TOKEN)


@pytest.mark.parametrize("route", PROTECTED, ids=lambda r: f"{r.method} {r.path}")
def test_protected_routes_need_the_token(api: Api, route: Any) -> None:
    path = route.path.replace("{peerId}", "node2")
    for authorization in WRONG:
        headers = {"Authorization": authorization} if authorization else {}
        response = api.request(route.method, path, headers=headers)
        assert response.status == 401, authorization
        assert response.headers["www-authenticate"].startswith("Bearer ")
        assert response.json()["error"] == "missing or invalid bearer token"
    assert api.counter("gatewayd_api_requests_errors_total", method=route.method,
                       endpoint=route.path, error="Unauthenticated") == len(WRONG)


def test_public_routes_need_no_token(api: Api) -> None:
    assert api.get("/healthz").status == 200
    page = api.get("/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"


def test_unknown_routes_need_the_token_first(api: Api) -> None:
    assert api.get("/nope").status == 401
    response = api.get("/nope", headers=AUTH)
    assert response.status == 404
    assert response.json()["error"] == "no such route: /nope"
    assert api.counter("gatewayd_api_requests_errors_total", method="GET", endpoint="unmatched",
                       error="NotFound") == 1


def test_scheme_is_case_insensitive_and_token_exact() -> None:
    check = TokenCheck("s3cret")
    assert check.accepts("bearer s3cret") and check.accepts(b"BEARER  s3cret ")
    assert not check.accepts("Bearer s3cre") and not check.accepts("Bearer s3cret2")
    assert not check.accepts("s3cret") and not check.accepts(None) and not check.accepts("")
    assert TokenCheck(None).accepts(None) and not TokenCheck(None).required


def test_without_a_token_everything_is_open(world: World) -> None:
    api = Api(world, token=None)
    assert api.get("/v1/GatewayDPluginService/GetPools").status == 200
    assert api.get("/v1/status").status == 200


# -- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, message", [
    ("/v1/GatewayDPluginService/GetPools?x=1", "unknown parameter 'x' (accepted: none)"),
    ("/v1/GatewayDPluginService/GetGlobalConfig?groupName=a&groupName=b",
     "parameter 'groupName' given 2 times"),
    ("/v1/GatewayDPluginService/GetGlobalConfig?groupName=a&group_name=a",
     "give either 'groupName' or 'group_name', not both"),
    ("/healthz?strict=maybe", "parameter 'strict' must be true or false, not 'maybe'"),
    ("/v1/status?limit=lots", "parameter 'limit' must be an integer, not 'lots'"),
    ("/v1/status?limit=-1", "parameter 'limit' must be between 0 and 10000"),
    ("/v1/status?limit=%ff", "query parameters must be UTF-8"),
    ("/v1/%ff", "the path is not UTF-8"),
])
def test_bad_parameters_are_400_json(api: Api, path: str, message: str) -> None:
    response = api.get(path, headers=AUTH)
    assert response.status == 400
    assert response.json() == {"error": message, "code": 3, "message": message}


def test_wrong_method_is_405_with_allow(api: Api) -> None:
    response = api.request("POST", "/v1/GatewayDPluginService/GetPools", headers=AUTH)
    assert response.status == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["code"] == 12
    odd = api.request("BREW", "/healthz", headers=AUTH)
    assert odd.status == 405
    assert api.counter("gatewayd_api_requests_total", method="OTHER", endpoint="unmatched") == 1


def test_raft_routes_say_why_they_are_not_there(api: Api) -> None:
    for method, path in (("GET", "/v1/raft/peers"), ("POST", "/v1/raft/peers"),
                         ("DELETE", "/v1/raft/peers/node2")):
        response = api.request(method, path, headers=AUTH)
        assert response.status == 501
        assert "no Raft" in response.json()["error"]


def test_an_exception_is_a_logged_500_without_traceback(api: Api, monkeypatch: Any) -> None:
    def explode() -> None:
        raise RuntimeError("kaboom at /secret/path")

    monkeypatch.setattr(AdminState, "pools", lambda self: explode())
    response = api.get("/v1/GatewayDPluginService/GetPools", headers=AUTH)
    assert response.status == 500
    assert response.json() == {"error": "internal error", "code": 13, "message": "internal error"}
    assert b"kaboom" not in response.body and b"Traceback" not in response.body
    failures = [e for e in api.events if "log_failure" in e]
    assert failures and failures[0]["log_failure"].check(RuntimeError)


def test_health_is_503_when_not_serving_and_head_has_no_body(tmp_path: Path) -> None:
    api = Api(build_world(tmp_path, start=False))
    response = api.get("/healthz")
    assert response.status == 503
    assert response.json()["status"] == "NOT_SERVING"
    documented("/healthz", "GET", 503, response.json())
    (tmp_path / "b").mkdir()
    head = Api(build_world(tmp_path / "b")).request("HEAD", "/healthz")
    assert head.status == 200 and head.body == b""


def test_strict_health(api: Api, tmp_path: Path) -> None:
    assert api.get("/healthz?strict=true").status == 200
    (tmp_path / "down").mkdir()
    world = build_world(tmp_path / "down")
    world.connect_backends(5432, 5434)
    world.refuse_backends(5433)  # default/reads is down
    down = Api(world)
    strict = down.get("/healthz?strict=1")
    assert strict.status == 503
    assert strict.json()["backends"]["default"]["reads"] == "unhealthy"
    assert down.get("/healthz").status == 200


# -- metrics and logs --------------------------------------------------------------------------

def test_requests_are_counted_by_route_not_by_url(api: Api) -> None:
    for _ in range(3):
        api.get("/v1/status?limit=5", headers=AUTH)
    api.get("/v1/GatewayDPluginService/GetPools", headers=AUTH)
    assert api.counter("gatewayd_api_requests_total", method="GET", endpoint="/v1/status") == 3
    assert api.counter("gatewayd_api_requests_total", method="GET",
                       endpoint="/v1/GatewayDPluginService/GetPools") == 1
    api.get("/v1/raft/peers/x/y", headers=AUTH)
    samples = [s for m in api.registry.collect() if m.name == "gatewayd_api_requests"
               for s in m.samples if s.name.endswith("_total")]
    assert {s.labels["endpoint"] for s in samples} == {
        "/v1/status", "/v1/GatewayDPluginService/GetPools", "unmatched"}


def test_access_log_is_debug_without_query_or_credentials(api: Api) -> None:
    api.get("/v1/status?limit=3", headers=AUTH)
    lines = [e for e in api.events if e.get("log_format", "").startswith("api ")]
    assert len(lines) == 1
    event = lines[0]
    assert event["log_level"].name == "debug"
    assert event["path"] == "/v1/status" and event["code"] == 200
    assert TOKEN not in repr(event)


# -- status page -------------------------------------------------------------------------------

def test_status_page_is_self_contained_and_its_csp_allows_exactly_its_inline_code(
        api: Api) -> None:
    import base64
    import hashlib
    import re

    page = api.get("/")
    html = page.body.decode()
    csp = page.headers["content-security-policy"]
    for tag in ("script", "style"):
        inline = re.findall(rf"<{tag}>(.*?)</{tag}>", html, re.S)
        assert len(inline) == 1
        digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
        assert f"{tag}-src 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere
    assert 'fetch("v1/status"' in html
    assert page.headers["x-frame-options"] == "DENY"


# -- api_services ------------------------------------------------------------------------------

def test_api_services_disabled(world: World) -> None:
    assert api_services(world.gateway, API(enabled=False), world.reactor) == []


def test_api_services_listen_and_stop(world: World) -> None:
    http, grpc_service = api_services(world.gateway, API(http_address="127.0.0.1:0",
                                                         grpc_address="127.0.0.1:0"),
                                      world.reactor, environ={})
    assert (http.name, grpc_service.name) == ("api-http", "api-grpc")
    http.startService()
    port, factory, _, interface = world.reactor.tcpServers[-1]
    assert interface == "127.0.0.1" and isinstance(factory, AdminSite)
    assert http.running
    http.stopService()
    assert not http.running


def test_a_busy_http_port_fails_start_with_one_line(world: World) -> None:
    from twisted.internet.defer import fail
    from twisted.internet.error import CannotListenError

    from gatewayd.api.service import ApiHttpService

    class Busy:
        def listen(self, factory: Any) -> Any:
            return fail(CannotListenError("127.0.0.1", 18080, OSError(98, "Address already in use")))

    service = ApiHttpService(Busy(), None, Logger(), "127.0.0.1:18080")  # type: ignore[arg-type]
    with pytest.raises(OSError) as refused:
        service.startService()
    assert str(refused.value) == ("admin API (HTTP) cannot listen on 127.0.0.1:18080 "
                                  "(api.httpAddress): Address already in use")
    assert not service.running


def test_bad_http_address_is_a_config_error(world: World) -> None:
    with pytest.raises(ConfigError, match="api.httpAddress"):
        api_services(world.gateway, API(http_address="nonsense"), world.reactor, environ={})


def _warnings(world: World, config: API, environ: dict[str, str]) -> list[str]:
    events: list[dict[str, Any]] = []
    real = world.gateway.logging.logger
    world.gateway.logging.logger = lambda *a, **k: Logger(namespace="t", observer=events.append)
    try:
        api_services(world.gateway, config, world.reactor, environ=environ)
    finally:
        world.gateway.logging.logger = real
    return [e["log_format"].format(**e) for e in events if e["log_level"].name == "warn"]


def test_warns_when_exposed_without_token(world: World) -> None:
    exposed = _warnings(world, API(http_address="0.0.0.0:0", grpc_address=":19090"), {})
    assert len(exposed) == 2
    assert "api.httpAddress is reachable from other hosts (0.0.0.0)" in exposed[0]
    assert "(all interfaces)" in exposed[1]
    assert _warnings(world, API(http_address="0.0.0.0:0", token="t"), {}) == []
    assert _warnings(world, API(http_address="0.0.0.0:0", grpc_address="0.0.0.0:0"),
                     {"GATEWAYD_API_TOKEN": "t"}) == []
    assert _warnings(world, API(http_address="localhost:0", grpc_address="[::1]:0"), {}) == []


def test_token_sources(tmp_path: Path) -> None:
    assert resolve_token(API(token="a"), environ={"GATEWAYD_API_TOKEN": "b"}) == ("a", "api.token")
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    token_file.chmod(0o600)
    token, source = resolve_token(API(token_file=str(token_file)), environ={})
    assert token == "from-file" and source.startswith("api.tokenFile")
    assert not token_file_exposed(str(token_file))
    token_file.chmod(0o644)
    assert token_file_exposed(str(token_file))
    assert resolve_token(API(), environ={"GATEWAYD_API_TOKEN": " e "}) == ("e", "GATEWAYD_API_TOKEN")
    assert resolve_token(API(), environ={}) == (None, "")


def test_unusable_token_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api.tokenFile: cannot read .*missing"):
        resolve_token(API(token_file=str(tmp_path / "missing")), environ={}, config_path="g.yaml")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        resolve_token(API(token_file=str(empty)), environ={})


def test_token_file_logs_a_warning_when_others_can_read_it(world: World, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t")
    os.chmod(token_file, 0o644)
    warnings = _warnings(world, API(token_file=str(token_file)), {})
    assert warnings == [f"admin API token file {token_file} is readable by other users; "
                        "chmod 600 it"]


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("", False), ("::", False), ("10.0.0.1", False),
    ("db.example.com", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
