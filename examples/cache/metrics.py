# -*- test-case-name: tests.unit.test_cache_plugin -*-
"""
The cache's Prometheus metrics, in a registry of its own (GatewayD's cache
plugin names, namespace C{gatewayd}), so that several plugin instances or
tests never collide in the global registry.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

__all__ = ["CacheMetrics", "serve_asyncio", "serve_twisted"]


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, namespace="gatewayd", registry=self.registry)

        self.hits = counter("cache_hits_total", "Requests answered from the cache")
        self.misses = counter("cache_misses_total", "Cacheable requests not found in the cache")
        self.sets = counter("cache_sets_total", "Responses stored in the cache")
        self.gets = counter("cache_gets_total", "Cache lookups")
        self.deletes = counter("cache_deletes_total",
                               "Table versions bumped by writes (each makes that table's entries unreachable)")
        self.errors = counter("cache_errors_total", "Redis errors (the query passed through)")
        self.hit_latency = Histogram(
            "cache_hit_duration_seconds", "Time to answer a request from the cache",
            namespace="gatewayd", registry=self.registry,
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5))


def serve_twisted(reactor: Any, path: str, registry: CollectorRegistry) -> Any:
    """Prometheus text over HTTP on a Unix socket, on the gateway's reactor (in-process)."""
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class _Metrics(Resource):
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:  # noqa: N802 - Twisted API
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
            return generate_latest(registry)

    _unlink_stale(path)
    return reactor.listenUNIX(path, Site(_Metrics()))


async def serve_asyncio(path: str, registry: CollectorRegistry) -> Any:
    """The same on asyncio (plugin process); any path answers, like the Go SDK."""
    import asyncio

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            body = generate_latest(registry)
            writer.write((f"HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE_LATEST}\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError,
                ConnectionError):
            pass
        finally:
            writer.close()

    _unlink_stale(path)
    return await asyncio.start_unix_server(handle, path=path)


def _unlink_stale(path: str) -> None:
    """Remove a socket file left by a previous run (only a socket, never another file)."""
    import os
    import stat

    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
