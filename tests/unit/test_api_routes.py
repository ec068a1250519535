"""The route table and the hand-written OpenAPI document describe the same API."""

from __future__ import annotations

import json
import re
from typing import Any

from gatewayd.api.routes import OPENAPI, OPENAPI_JSON, ROUTES, find_route

METHODS = {"get", "post", "put", "delete", "patch", "head", "options"}


def documented_operations() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in OPENAPI["paths"].items()
            for method in item if method in METHODS}


def test_every_route_is_documented_and_every_documented_route_exists() -> None:
    routed = {(r.method, r.path) for r in ROUTES}
    assert len(routed) == len(ROUTES), "a route is declared twice"
    assert routed == documented_operations()


def test_operations_are_complete() -> None:
    ids = []
    for route in ROUTES:
        operation = OPENAPI["paths"][route.path][route.method.lower()]
        ids.append(operation["operationId"])
        assert operation["summary"]
        codes = set(operation["responses"])
        # What the resource can answer for this route must be documented.
        assert ("401" in codes) is not route.public
        assert operation["security"] == ([] if route.public else [{"bearer": []}])
        query = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
        assert query == set(route.params)
        if route.params:
            assert "400" in codes
        path_params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert path_params == set(re.findall(r"\{(\w+)\}", route.path))
    assert len(ids) == len(set(ids))


def test_every_reference_resolves() -> None:
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(OPENAPI))
    assert refs
    assert set(refs) <= set(OPENAPI["components"]["schemas"])


def test_the_served_document_is_the_document() -> None:
    served: dict[str, Any] = json.loads(OPENAPI_JSON)
    assert served == OPENAPI
    assert served["openapi"].startswith("3.")
    assert served["info"]["title"] == "GatewayD Admin API"


def test_find_route() -> None:
    route, params, allowed = find_route("DELETE", "/v1/raft/peers/node-7")
    assert route is not None and params == {"peerId": "node-7"}
    assert find_route("DELETE", "/v1/raft/peers/")[0] is None
    assert find_route("HEAD", "/healthz")[0].path == "/healthz"
    route, _, allowed = find_route("PUT", "/v1/raft/peers")
    assert route is None and sorted(allowed) == ["GET", "POST"]
    assert find_route("GET", "/healthz/") == (None, {}, [])
