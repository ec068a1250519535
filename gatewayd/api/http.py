# -*- test-case-name: tests.unit.test_api_http -*-
"""
The admin API over HTTP, served by twisted.web in the reactor thread.

GatewayD serves these routes through grpc-gateway, a proxy in front of its
gRPC server; we answer them directly from the gateway's state (one read, no
second hop).  Every answer is JSON with a meaningful status (the plain-text
C{/version} and the HTML status page aside): bad parameters are 400, unknown
routes 404, a wrong method 405, a missing token 401, and an unexpected
exception a 500 that is logged here and never shown to the client.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import unquote

from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from gatewayd.api.auth import TokenCheck
from gatewayd.api.errors import ApiError, InvalidArgument, NotFound, Unauthenticated
from gatewayd.api.routes import Reply, find_route
from gatewayd.api.state import AdminState

#: Methods counted under their own name; anything else is counted as OTHER,
#: so that clients cannot grow the metric's label set.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_UNMATCHED = "unmatched"

_JSON_HEADERS = {
    b"content-type": b"application/json; charset=utf-8",
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
}


class MethodNotAllowed(ApiError):
    """405, reported as gRPC's Unimplemented like grpc-gateway does."""

    code = "Unimplemented"

    @property
    def http_status(self) -> int:
        return 405


class AdminResource(Resource):
    """
    The whole API as one leaf resource: it routes on the full path itself
    (L{gatewayd.api.routes.ROUTES}) so that routing, auth, errors and metrics
    are decided in one place.
    """

    isLeaf = True

    def __init__(self, state: AdminState, auth: TokenCheck, metrics: Any = None,
                 log: Logger | None = None) -> None:
        super().__init__()
        self.state = state
        self.auth = auth
        self.metrics = metrics
        self.log = log or Logger(namespace="gatewayd.api")

    def render(self, request: Request) -> bytes:
        method = request.method.decode("latin-1")
        label = method if method in _KNOWN_METHODS else "OTHER"
        endpoint = _UNMATCHED
        request.setHeader(b"server", b"gatewayd")
        try:
            path = unquote(request.path.decode("utf-8"), errors="strict")
            route, path_params, allowed = find_route(method, path)
            if route is not None:
                endpoint = route.path
            if (route is None or not route.public) and not self.auth.accepts(
                    request.getHeader(b"authorization")):
                raise Unauthenticated("missing or invalid bearer token")
            if route is None:
                if allowed:
                    request.setHeader(b"allow", ", ".join(sorted(set(allowed))).encode("ascii"))
                    raise MethodNotAllowed(f"method {method} not allowed on {path}")
                raise NotFound(f"no such route: {path}")
            query = _query(request.args, route.params)
            reply = route.handler(self.state, query, path_params)
        except UnicodeDecodeError:
            return self._error(request, label, endpoint, InvalidArgument("the path is not UTF-8"))
        except ApiError as e:
            return self._error(request, label, endpoint, e)
        except Exception:  # noqa: BLE001 - logged here, never shown to the client
            self.log.failure("admin API: {method} {endpoint} failed", method=label,
                             endpoint=endpoint)
            return self._error(request, label, endpoint, ApiError("internal error"))
        if reply.status >= 400:
            self._count_error(label, endpoint, "Unavailable" if reply.status == 503 else
                              str(reply.status))
        else:
            self._count(label, endpoint)
        return self._write(request, reply)

    # -- answers -----------------------------------------------------------------------------

    def _write(self, request: Request, reply: Reply) -> bytes:
        request.setResponseCode(reply.status)
        for name, value in reply.headers.items():
            request.setHeader(name.encode("ascii"), value.encode("latin-1"))
        if not reply.content_type:
            for name, value in _JSON_HEADERS.items():
                request.setHeader(name, value)
            return json.dumps(reply.body, separators=(",", ":")).encode("utf-8")
        request.setHeader(b"content-type", reply.content_type.encode("ascii"))
        request.setHeader(b"x-content-type-options", b"nosniff")
        body = reply.body
        return body if isinstance(body, bytes) else str(body).encode("utf-8")

    def _error(self, request: Request, method: str, endpoint: str, error: ApiError) -> bytes:
        self._count_error(method, endpoint, error.code)
        if isinstance(error, Unauthenticated):
            request.setHeader(b"www-authenticate", b'Bearer realm="gatewayd admin API"')
        return self._write(request, Reply(error.body(), error.http_status))

    def _count(self, method: str, endpoint: str) -> None:
        if self.metrics is not None:
            self.metrics.api_requests_total.labels(method, endpoint).inc()

    def _count_error(self, method: str, endpoint: str, code: str) -> None:
        """Errors count in both families: errors are a subset of requests (see docs/api.md)."""
        if self.metrics is not None:
            self.metrics.api_requests_total.labels(method, endpoint).inc()
            self.metrics.api_requests_errors_total.labels(method, endpoint, code).inc()


def _query(args: dict[bytes, list[bytes]] | None, accepted: frozenset[str]) -> dict[str, str]:
    """Query parameters as str; unknown or repeated ones are a 400."""
    query: dict[str, str] = {}
    for raw_name, values in (args or {}).items():
        try:
            name = raw_name.decode("utf-8")
            decoded = [v.decode("utf-8") for v in values]
        except UnicodeDecodeError:
            raise InvalidArgument("query parameters must be UTF-8") from None
        if name not in accepted:
            known = ", ".join(sorted(accepted)) or "none"
            raise InvalidArgument(f"unknown parameter {name!r} (accepted: {known})")
        if len(decoded) != 1:
            raise InvalidArgument(f"parameter {name!r} given {len(decoded)} times")
        query[name] = decoded[0]
    return query


class AdminSite(Site):
    """
    The API's site: tracebacks never shown, and one debug line per request
    through the gateway's logger instead of twisted.web's access log (the
    query string is left out; the C{Authorization} header is never logged).
    """

    noisy = False
    displayTracebacks = False

    def __init__(self, resource: Resource, log: Logger, reactor: Any, *,
                 timeout: float = 10.0) -> None:
        super().__init__(resource, timeout=timeout, reactor=reactor)
        self.log_events = log

    def log(self, request: Request) -> None:  # twisted.web's access-log hook
        started = getattr(request, "started", None)
        took = (time.monotonic() - started) * 1000 if started is not None else 0.0
        self.log_events.debug("api {method} {path} {code} {ms:.1f}ms",
                              method=request.method.decode("latin-1", "replace"),
                              path=request.path.decode("utf-8", "replace"),
                              code=request.code, ms=round(took, 2))

    def getResourceFor(self, request: Request) -> Resource:  # noqa: N802 - Twisted API
        request.started = time.monotonic()  # type: ignore[attr-defined]
        return super().getResourceFor(request)
