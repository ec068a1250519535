# -*- test-case-name: tests.unit.test_api_routes -*-
"""
The HTTP routes of the admin API and their OpenAPI 3.1 document.

L{ROUTES} is what the HTTP resource dispatches on; L{OPENAPI} (served as
C{/swagger.json}) is written by hand right below it.  A unit test checks
that both list the same (path, method) pairs and the integration tests
validate every answer against the schema documented for its status, so
the two cannot drift apart silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from gatewayd import __version__
from gatewayd.api.errors import InvalidArgument, Unimplemented
from gatewayd.api.state import DEFAULT_CLIENT_LIMIT, AdminState, parse_bool, parse_limit


@dataclass(frozen=True)
class Reply:
    """An answer: JSON data, or text/HTML when C{content_type} is set."""

    body: Any
    status: int = 200
    content_type: str = ""
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[AdminState, dict[str, str], dict[str, str]], Reply]


@dataclass(frozen=True)
class Route:
    """
    One (method, path) pair.  C{path} may hold C{{name}} segments, given to the
    handler as path parameters.  C{params} are the query parameters accepted
    (anything else is a 400).  C{public} routes need no token.
    """

    method: str
    path: str
    handler: Handler
    params: frozenset[str] = frozenset()
    public: bool = False

    def match(self, segments: list[str]) -> dict[str, str] | None:
        """Path parameters when C{segments} (the split request path) fit this route."""
        mine = self.path.split("/")
        if len(mine) != len(segments):
            return None
        found: dict[str, str] = {}
        for pattern, value in zip(mine, segments):
            if pattern.startswith("{") and pattern.endswith("}"):
                if not value:
                    return None
                found[pattern[1:-1]] = value
            elif pattern != value:
                return None
        return found


RAFT_MISSING = ("gatewayd runs no Raft cluster: consistent hashing needs no shared state, "
                "so there are no peers to list, add or remove")


def _version(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(state.version())


def _global_config(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    # grpc-gateway accepts the proto name (group_name) and the JSON name (groupName).
    if "groupName" in query and "group_name" in query:
        raise InvalidArgument("give either 'groupName' or 'group_name', not both")
    return Reply(state.global_config(query.get("groupName", query.get("group_name", ""))))


def _plugin_config(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(state.plugin_config())


def _plugins(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(state.plugins())


def _pools(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(state.pools())


def _proxies(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(state.proxies())


def _servers(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(state.servers())


def _raft(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    raise Unimplemented(RAFT_MISSING)


def _healthz(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    serving, body = state.health(parse_bool("strict", query.get("strict", "")))
    return Reply(body, 200 if serving else 503)


def _plain_version(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(__version__, content_type="text/plain; charset=utf-8")


def _swagger(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    return Reply(OPENAPI_JSON, content_type="application/json; charset=utf-8",
                 headers={"cache-control": "no-store"})


def _status(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    limit = parse_limit(query["limit"]) if "limit" in query else DEFAULT_CLIENT_LIMIT
    return Reply(state.status(limit))


def _status_page(state: AdminState, query: dict[str, str], _: dict[str, str]) -> Reply:
    from gatewayd.api.status_page import PAGE, SECURITY_HEADERS

    return Reply(PAGE, content_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


_V1 = "/v1/GatewayDPluginService"

ROUTES: tuple[Route, ...] = (
    Route("GET", f"{_V1}/Version", _version),
    Route("GET", f"{_V1}/GetGlobalConfig", _global_config, frozenset({"groupName", "group_name"})),
    Route("GET", f"{_V1}/GetPluginConfig", _plugin_config),
    Route("GET", f"{_V1}/GetPlugins", _plugins),
    Route("GET", f"{_V1}/GetPools", _pools),
    Route("GET", f"{_V1}/GetProxies", _proxies),
    Route("GET", f"{_V1}/GetServers", _servers),
    Route("GET", "/v1/raft/peers", _raft),
    Route("POST", "/v1/raft/peers", _raft),
    Route("DELETE", "/v1/raft/peers/{peerId}", _raft),
    Route("GET", "/healthz", _healthz, frozenset({"strict"}), public=True),
    Route("GET", "/version", _plain_version),
    Route("GET", "/swagger.json", _swagger),
    Route("GET", "/v1/status", _status, frozenset({"limit"})),
    Route("GET", "/", _status_page, public=True),
)


# -- the OpenAPI document ---------------------------------------------------------------------

def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad parameter", 401: "Missing or wrong bearer token", 404: "Not found",
            500: "Internal error", 501: "Not implemented"}
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _by_group(schema: dict[str, Any]) -> dict[str, Any]:
    """C{{group: {block: schema}}}."""
    return {"type": "object", "additionalProperties": {
        "type": "object", "additionalProperties": schema}}


_GET_PROTECTED = _errors(401, 500)
_BEARER: list[dict[str, list[str]]] = [{"bearer": []}]
_NONE: list[dict[str, list[str]]] = []

_STRING_LIST = {"type": "array", "items": {"type": "string"}}
_COUNT = {"type": "integer", "minimum": 0}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "GatewayD Admin API",
        "version": "1.0.0",
        "description": (
            f"gatewayd {__version__}: GatewayD's admin API routes served by gatewayd itself, "
            "plus a status page.  When a token is configured (api.token, api.tokenFile or "
            "GATEWAYD_API_TOKEN) every route but /healthz and / needs "
            "'Authorization: Bearer <token>'.  Secrets in configs are shown as REDACTED."),
    },
    "tags": [{"name": "GatewayD", "description": "GatewayD-compatible routes"},
             {"name": "gatewayd", "description": "gatewayd's own routes"}],
    "paths": {
        f"{_V1}/Version": {"get": {
            "operationId": "Version", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "Version of the gateway",
            "responses": {"200": _json(_ref("Version"), "Version"), **_GET_PROTECTED}}},
        f"{_V1}/GetGlobalConfig": {"get": {
            "operationId": "GetGlobalConfig", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "The loaded gatewayd.yaml (durations in nanoseconds, secrets redacted)",
            "parameters": [
                {"name": "groupName", "in": "query", "required": False,
                 "schema": {"type": "string"},
                 "description": "Only this group's objects, plus api"},
                {"name": "group_name", "in": "query", "required": False,
                 "schema": {"type": "string"}, "description": "Same as groupName"}],
            "responses": {"200": _json(_ref("Struct"), "Global config"),
                          **_errors(400, 401, 404, 500)}}},
        f"{_V1}/GetPluginConfig": {"get": {
            "operationId": "GetPluginConfig", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "The loaded gatewayd_plugins.yaml (secrets redacted)",
            "responses": {"200": _json(_ref("Struct"), "Plugin config"), **_GET_PROTECTED}}},
        f"{_V1}/GetPlugins": {"get": {
            "operationId": "GetPlugins", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "Metadata of the loaded plugins, in priority order",
            "responses": {"200": _json(_ref("PluginConfigs"), "Plugins"), **_GET_PROTECTED}}},
        f"{_V1}/GetPools": {"get": {
            "operationId": "GetPools", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "Pool capacity and idle connections per group and block",
            "responses": {"200": _json(_ref("Pools"), "Pools"), **_GET_PROTECTED}}},
        f"{_V1}/GetProxies": {"get": {
            "operationId": "GetProxies", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "Idle backend connections and connected clients per group and block",
            "responses": {"200": _json(_ref("Proxies"), "Proxies"), **_GET_PROTECTED}}},
        f"{_V1}/GetServers": {"get": {
            "operationId": "GetServers", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "Listeners (server groups)",
            "responses": {"200": _json(_ref("Servers"), "Servers"), **_GET_PROTECTED}}},
        "/v1/raft/peers": {
            "get": {"operationId": "GetPeers", "tags": ["GatewayD"], "security": _BEARER,
                    "summary": "Not implemented: gatewayd runs no Raft cluster",
                    "responses": _errors(401, 501)},
            "post": {"operationId": "AddPeer", "tags": ["GatewayD"], "security": _BEARER,
                     "summary": "Not implemented: gatewayd runs no Raft cluster",
                     "responses": _errors(401, 501)}},
        "/v1/raft/peers/{peerId}": {"delete": {
            "operationId": "RemovePeer", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "Not implemented: gatewayd runs no Raft cluster",
            "parameters": [{"name": "peerId", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": _errors(401, 501)}},
        "/healthz": {"get": {
            "operationId": "Healthz", "tags": ["GatewayD"], "security": _NONE,
            "summary": "SERVING when every server group listens; with strict=true every "
                       "block's backend must be reachable too",
            "parameters": [{"name": "strict", "in": "query", "required": False,
                            "schema": {"type": "boolean"}}],
            "responses": {"200": _json(_ref("Health"), "Serving"),
                          "503": _json(_ref("Health"), "Not serving"),
                          **_errors(400, 500)}}},
        "/version": {"get": {
            "operationId": "PlainVersion", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "Version as plain text",
            "responses": {"200": {"description": "Version",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_GET_PROTECTED}}},
        "/swagger.json": {"get": {
            "operationId": "OpenAPI", "tags": ["GatewayD"], "security": _BEARER,
            "summary": "This document",
            "responses": {"200": _json({"type": "object", "required": ["openapi", "paths"]},
                                       "OpenAPI 3.1 document"), **_GET_PROTECTED}}},
        "/v1/status": {"get": {
            "operationId": "Status", "tags": ["gatewayd"], "security": _BEARER,
            "summary": "Everything the status page shows, in one read",
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 10000,
                                       "default": DEFAULT_CLIENT_LIMIT},
                            "description": "List at most this many clients"}],
            "responses": {"200": _json(_ref("Status"), "Status"), **_errors(400, 401, 500)}}},
        "/": {"get": {
            "operationId": "StatusPage", "tags": ["gatewayd"], "security": _NONE,
            "summary": "The status page (self-contained HTML; polls /v1/status)",
            "responses": {"200": {"description": "HTML page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}},
                          **_errors(500)}}},
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "code", "message"],
                      "properties": {"error": {"type": "string"}, "code": {"type": "integer"},
                                     "message": {"type": "string"}}},
            "Struct": {"type": "object"},
            "Version": {"type": "object", "required": ["version", "versionInfo"],
                        "properties": {"version": {"type": "string"},
                                       "versionInfo": {"type": "string"}}},
            "PluginConfigs": {"type": "object", "required": ["configs"], "properties": {
                "configs": {"type": "array", "items": _ref("PluginConfig")}}},
            "PluginConfig": {
                "type": "object",
                "required": ["id", "description", "authors", "license", "projectUrl",
                             "config", "hooks", "requires", "tags", "categories"],
                "properties": {
                    "id": {"type": "object", "required": ["name", "version", "remoteUrl",
                                                          "checksum"],
                           "properties": {k: {"type": "string"} for k in
                                          ("name", "version", "remoteUrl", "checksum")}},
                    "description": {"type": "string"},
                    "authors": _STRING_LIST,
                    "license": {"type": "string"},
                    "projectUrl": {"type": "string"},
                    "config": {"type": "object", "additionalProperties": {"type": "string"}},
                    "hooks": {"type": "array", "items": {"type": "integer"}},
                    "requires": {"type": "object",
                                 "additionalProperties": {"type": "string"}},
                    "tags": _STRING_LIST,
                    "categories": _STRING_LIST}},
            "Pools": _by_group({"type": "object", "required": ["cap", "size"],
                                "properties": {"cap": _COUNT, "size": _COUNT}}),
            "Proxies": _by_group({"type": "object", "required": ["available", "busy", "total"],
                                  "properties": {"available": _STRING_LIST,
                                                 "busy": _STRING_LIST, "total": _COUNT}}),
            "Servers": {"type": "object", "additionalProperties": {
                "type": "object",
                "required": ["network", "address", "status", "tickInterval", "loadBalancer",
                             "isTLSEnabled"],
                "properties": {
                    "network": {"type": "string"}, "address": {"type": "string"},
                    "status": {"enum": [0, 1], "description": "0 running, 1 stopped"},
                    "tickInterval": {"type": "integer", "description": "nanoseconds"},
                    "loadBalancer": {"type": "object", "required": ["strategy"],
                                     "properties": {"strategy": {"type": "string"}}},
                    "isTLSEnabled": {"type": "boolean"}}}},
            "Health": {"type": "object", "required": ["status"], "properties": {
                "status": {"enum": ["SERVING", "NOT_SERVING"]},
                "servers": {"type": "object", "additionalProperties": {
                    "enum": ["SERVING", "NOT_SERVING"]}},
                "backends": _by_group({"enum": ["healthy", "starting", "unhealthy"]})}},
            "Status": {
                "type": "object",
                "required": ["version", "time", "status", "servers", "clients", "plugins",
                             "totals"],
                "properties": {
                    "version": {"type": "string"},
                    "time": {"type": "number", "description": "gateway clock, epoch seconds"},
                    "status": {"enum": ["SERVING", "NOT_SERVING"]},
                    "servers": {"type": "array", "items": _ref("StatusServer")},
                    "clients": {"type": "object", "required": ["total", "shown", "truncated"],
                                "properties": {
                                    "total": _COUNT, "truncated": {"type": "boolean"},
                                    "shown": {"type": "array", "items": _ref("StatusClient")}}},
                    "plugins": {"type": "array", "items": _ref("StatusPlugin")},
                    "totals": {"type": "object", "required": [
                        "clients", "bytesFromClient", "bytesToServer", "bytesFromServer",
                        "bytesToClient"], "additionalProperties": _COUNT}}},
            "StatusServer": {
                "type": "object",
                "required": ["group", "network", "address", "listening", "tls", "strategy",
                             "clients", "rejected", "blocks"],
                "properties": {
                    "group": {"type": "string"}, "network": {"type": "string"},
                    "address": {"type": "string"}, "listening": {"type": "boolean"},
                    "tls": {"type": "boolean"}, "strategy": {"type": "string"},
                    "clients": _COUNT, "rejected": _COUNT,
                    "blocks": {"type": "array", "items": _ref("StatusBlock")}}},
            "StatusBlock": {
                "type": "object",
                "required": ["name", "backend", "clients", "pool", "bytes", "poolExhausted",
                             "dialFailures"],
                "properties": {
                    "name": {"type": "string"}, "backend": {"type": "string"},
                    "clients": _COUNT, "poolExhausted": _COUNT, "dialFailures": _COUNT,
                    "pool": {"type": "object",
                             "required": ["size", "available", "busy", "waiting", "state",
                                          "lastError"],
                             "properties": {
                                 "size": _COUNT, "available": _COUNT, "busy": _COUNT,
                                 "waiting": _COUNT, "lastError": {"type": "string"},
                                 "state": {"enum": ["healthy", "starting", "unhealthy"]}}},
                    "bytes": {"type": "object", "required": [
                        "bytesFromClient", "bytesToServer", "bytesFromServer", "bytesToClient"],
                        "additionalProperties": _COUNT}}},
            "StatusClient": {
                "type": "object",
                "required": ["group", "block", "remote", "local", "tls", "state"],
                "properties": {
                    "group": {"type": "string"}, "block": {"type": "string"},
                    "remote": {"type": "string"}, "local": {"type": "string"},
                    "tls": {"type": "boolean"},
                    "state": {"enum": ["startup", "waiting", "active"]}}},
            "StatusPlugin": {
                "type": "object",
                "required": ["name", "version", "priority", "kind", "pid", "hooks", "health"],
                "properties": {
                    "name": {"type": "string"}, "version": {"type": "string"},
                    "priority": {"type": ["integer", "null"]},
                    "kind": {"enum": ["in-process", "process"]},
                    "pid": {"type": ["integer", "null"]},
                    "hooks": _STRING_LIST,
                    "health": {"enum": ["serving", "stopped", "not loaded"]}}},
        },
    },
}

#: The document as served (encoded once).
OPENAPI_JSON: bytes = json.dumps(OPENAPI, indent=1).encode("utf-8")


def find_route(method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
    """
    The route for C{method} and C{path}, its path parameters, and the methods
    allowed on that path (for a 405 when the path exists with other methods).
    """
    segments = path.split("/")
    allowed: list[str] = []
    for route in ROUTES:
        found = route.match(segments)
        if found is None:
            continue
        if route.method == method or (method == "HEAD" and route.method == "GET"):
            return route, found, []
        allowed.append(route.method)
    return None, {}, allowed
