"""
Tracing wired through the gateway: the start-up span, a client connection's
span with its pool-acquire and session children, hook chains under the
connection span, one child span per plugin call, and the plugin span's W3C
traceparent handed to out-of-process plugins as gRPC metadata.  Driven with
an SDK TracerProvider and the in-memory exporter, without sockets.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.act import ActRegistry
from gatewayd.backend import BackendConnection, BackendTarget
from gatewayd.block import Block
from gatewayd.cancel import CancelRegistry
from gatewayd.config.schema import Client, LoadBalancer, Pool, Proxy, Server
from gatewayd.errors import BackendUnavailable
from gatewayd.hooks import names
from gatewayd.hooks.registry import HookRegistry
from gatewayd.interfaces import IHookRegistry, IPlugin, IPluginClient
from gatewayd.loadbalancer import build_balancer
from gatewayd.observability.tracing import Tracing
from gatewayd.pgwire import sqlstate, startup_message
from gatewayd.pool import BackendPool
from gatewayd.server import FrontendProtocol, GatewayServerFactory
from gatewayd.stats import Stats
from gatewayd.tls import backend_tls

CLIENT = IPv4Address("TCP", "10.1.2.3", 50123)


@implementer(IPluginClient)
class FakePluginClient:
    """An out-of-process plugin as the registry sees it; records what each call got."""

    def __init__(self, name: str, hooks: frozenset[str], priority: int = 1000) -> None:
        self.name = name
        self.priority = priority
        self.hooks = hooks
        self.metadata: dict[str, Any] = {}
        self.calls: list[tuple[str, Any, Any]] = []
        self.answer: Any = None

    def call_hook(self, hook_name: str, payload: dict, *, timeout: float | None = None,
                  metadata: list[tuple[str, str]] | None = None) -> defer.Deferred[dict]:
        self.calls.append((hook_name, timeout, metadata))
        if self.answer is not None:
            return self.answer
        return defer.succeed(payload)

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def ping(self) -> defer.Deferred[bool]:
        return defer.succeed(True)

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)


@implementer(IPlugin)
class FakeInProcess:
    """An in-process plugin that knows nothing of metadata."""

    def __init__(self, name: str, hooks: frozenset[str], priority: int) -> None:
        self.name, self.hooks, self.priority = name, hooks, priority
        self.metadata: dict[str, Any] = {}
        self.calls = 0

    def call_hook(self, hook_name: str, payload: dict) -> defer.Deferred[dict]:
        self.calls += 1
        return defer.succeed(payload)


class Dialer:
    """Dials the test completes, each with a ready BackendConnection on a StringTransport."""

    def __init__(self, target: BackendTarget, clock: MemoryReactorClock) -> None:
        self.target = target
        self.clock = clock
        self.pending: list[defer.Deferred[BackendConnection]] = []

    def __call__(self) -> defer.Deferred[BackendConnection]:
        d: defer.Deferred[BackendConnection] = defer.Deferred()
        self.pending.append(d)
        return d

    def connect_all(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            conn = BackendConnection(self.target, self.clock)
            conn.makeConnection(StringTransport())
            d.callback(conn)

    def fail_all(self) -> None:
        pending, self.pending = self.pending, []
        for d in pending:
            d.errback(BackendUnavailable("connection refused"))


class World:
    """One server group with one block, its pool, hook registry and tracing."""

    def __init__(self, *, traced: bool = True, pool_size: int = 1, wait_timeout: float = 5.0,
                 retries: int = 5) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracing = Tracing(provider if traced else None)
        self.clock = MemoryReactorClock()
        log = Logger(namespace="test")
        self.hooks = HookRegistry(self.clock, ActRegistry(clock=self.clock, log=log),
                                  timeout=10.0, log=log, tracing=self.tracing)
        stats = Stats()
        block_stats = stats.block("default", "writes")
        client = Client(address="127.0.0.1:5432", retries=retries)
        target = BackendTarget("default", "writes", client, backend_tls("disable", "127.0.0.1"),
                               self.clock)
        self.dial = Dialer(target, self.clock)
        self.pool = BackendPool(self.clock, self.dial, client,
                                Pool(size=pool_size, wait_timeout=wait_timeout), Proxy(),
                                block_stats, log)
        block = Block("default", "writes", target, self.pool, block_stats)
        balancer = build_balancer("default", ["writes"], LoadBalancer())
        self.factory = GatewayServerFactory(
            "default", Server(), {"writes": block}, balancer, CancelRegistry(log), self.hooks,
            stats, self.clock, log, tracing=self.tracing)

    def client(self) -> tuple[FrontendProtocol, StringTransport]:
        proto = self.factory.buildProtocol(CLIENT)
        transport = StringTransport(peerAddress=CLIENT)
        proto.makeConnection(transport)
        return proto, transport

    def spans(self) -> dict[str, ReadableSpan]:
        finished = self.exporter.get_finished_spans()
        by_name = {s.name: s for s in finished}
        assert len(by_name) == len(finished), [s.name for s in finished]
        return by_name


def startup() -> bytes:
    return startup_message({"user": "alice", "database": "app", "application_name": "t"})


def is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    return (child.parent is not None and child.parent.span_id == parent.context.span_id
            and child.context.trace_id == parent.context.trace_id)


def test_fakes_provide_their_interfaces() -> None:
    world = World()
    assert verifyObject(IPluginClient, FakePluginClient("grpc", frozenset({names.ON_OPENING})))
    assert verifyObject(IPlugin, FakeInProcess("local", frozenset({names.ON_OPENING}), 1))
    assert verifyObject(IHookRegistry, world.hooks)


def test_connection_span_with_pool_acquire_and_session_children() -> None:
    world = World()
    world.pool.start()
    world.dial.connect_all()
    proto, transport = world.client()
    proto.dataReceived(startup())
    assert proto.session is not None and world.pool.busy_count == 1
    assert {s.name for s in world.exporter.get_finished_spans()} == {"gatewayd.pool.acquire"}
    proto.connectionLost(Failure(ConnectionDone()))

    spans = world.spans()
    assert set(spans) == {"gatewayd.connection", "gatewayd.pool.acquire", "gatewayd.session"}
    conn, acquire, session = (spans["gatewayd.connection"], spans["gatewayd.pool.acquire"],
                              spans["gatewayd.session"])
    assert conn.parent is None and conn.kind is SpanKind.SERVER
    assert dict(conn.attributes) == {"gatewayd.group": "default", "gatewayd.block": "writes",
                                     "client.address": "10.1.2.3", "client.port": 50123}
    assert conn.status.status_code is StatusCode.UNSET
    assert is_child(acquire, conn) and is_child(session, conn)
    assert acquire.attributes["gatewayd.pool.wait_seconds"] == 0.0
    assert acquire.attributes["gatewayd.pool.size"] == 1
    assert acquire.attributes["gatewayd.pool.available"] == 1
    assert acquire.status.status_code is StatusCode.UNSET
    assert session.attributes["db.namespace"] == "app"
    assert session.attributes["db.user"] == "alice"
    assert session.attributes["server.address"] == "127.0.0.1:5432"
    assert session.attributes["gatewayd.relay"] == "pump"
    # The spans nest in time too: acquire ends before the session starts.
    assert conn.start_time <= acquire.start_time <= acquire.end_time <= session.start_time
    assert session.end_time <= conn.end_time


def test_pool_wait_is_measured_on_the_reactor_clock() -> None:
    world = World()
    world.pool.start()
    proto, _ = world.client()
    proto.dataReceived(startup())          # no backend yet: the client queues
    assert world.pool.waiting_count == 1
    world.clock.advance(0.25)
    world.dial.connect_all()
    assert proto.session is not None
    acquire = world.spans()["gatewayd.pool.acquire"]
    assert acquire.attributes["gatewayd.pool.wait_seconds"] == pytest.approx(0.25)
    assert acquire.attributes["gatewayd.pool.available"] == 0
    proto.connectionLost(Failure(ConnectionDone()))


def test_pool_timeout_fails_acquire_and_connection_spans() -> None:
    world = World(wait_timeout=2.0)
    world.pool.start()
    proto, transport = world.client()
    proto.dataReceived(startup())
    world.clock.advance(2.0)               # waitTimeout: 53300 for the client
    assert sqlstate.TOO_MANY_CONNECTIONS.encode() in transport.value()
    proto.connectionLost(Failure(ConnectionDone()))
    spans = world.spans()
    acquire, conn = spans["gatewayd.pool.acquire"], spans["gatewayd.connection"]
    assert acquire.status.status_code is StatusCode.ERROR
    assert "PoolExhausted" in acquire.status.description
    assert acquire.attributes["gatewayd.pool.wait_seconds"] == pytest.approx(2.0)
    assert [e.name for e in acquire.events] == ["exception"]
    assert conn.status.status_code is StatusCode.ERROR
    assert conn.status.description == "sorry, too many clients already"
    assert "gatewayd.session" not in spans


def test_client_leaving_while_queued_cancels_acquire_without_error() -> None:
    world = World()
    world.pool.start()
    proto, _ = world.client()
    proto.dataReceived(startup())
    world.clock.advance(0.5)
    proto.connectionLost(Failure(ConnectionLost()))   # the client hung up
    spans = world.spans()
    acquire, conn = spans["gatewayd.pool.acquire"], spans["gatewayd.connection"]
    assert acquire.attributes["gatewayd.pool.cancelled"] is True
    assert acquire.attributes["gatewayd.pool.wait_seconds"] == pytest.approx(0.5)
    assert acquire.status.status_code is StatusCode.UNSET
    assert is_child(acquire, conn)
    # An abrupt disconnect is recorded on the connection.
    assert conn.status.status_code is StatusCode.ERROR
    assert world.pool.waiting_count == 0


def test_hook_chain_under_connection_with_one_span_per_plugin() -> None:
    world = World()
    grpc = FakePluginClient("cache", frozenset({names.ON_OPENING, names.ON_CLOSED}), 1001)
    local = FakeInProcess("audit", frozenset({names.ON_OPENING}), 1000)
    world.hooks.register(grpc)
    world.hooks.register(local)
    proto, _ = world.client()
    assert local.calls == 1 and len(grpc.calls) == 1
    proto.connectionLost(Failure(ConnectionDone()))

    finished = world.exporter.get_finished_spans()
    conn = next(s for s in finished if s.name == "gatewayd.connection")
    opening = next(s for s in finished if s.name == "gatewayd.hook.onOpening")
    closed = next(s for s in finished if s.name == "gatewayd.hook.onClosed")
    assert is_child(opening, conn) and is_child(closed, conn)
    assert opening.attributes["gatewayd.hook.plugins"] == 2
    plugin_spans = [s for s in finished if s.name.startswith("gatewayd.plugin.")]
    assert sorted((s.name, s.parent.span_id) for s in plugin_spans) == sorted([
        ("gatewayd.plugin.audit", opening.context.span_id),
        ("gatewayd.plugin.cache", opening.context.span_id),
        ("gatewayd.plugin.cache", closed.context.span_id),
    ])
    by_kind = {s.name: s.kind for s in plugin_spans}
    assert by_kind == {"gatewayd.plugin.audit": SpanKind.INTERNAL,
                       "gatewayd.plugin.cache": SpanKind.CLIENT}
    assert {s.context.trace_id for s in finished} == {conn.context.trace_id}

    # The traceparent each gRPC call carried is exactly its own span's context.
    cache_spans = sorted((s for s in plugin_spans if s.name == "gatewayd.plugin.cache"),
                         key=lambda s: s.start_time)
    assert [hook for hook, _, _ in grpc.calls] == [names.ON_OPENING, names.ON_CLOSED]
    for (_, timeout, metadata), span in zip(grpc.calls, cache_spans):
        ctx = span.context
        assert metadata == [
            ("traceparent", f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}")]
        assert ctx.trace_flags.sampled
        assert timeout == pytest.approx(10.0)


def test_failed_plugin_call_marks_its_span_and_a_closed_chain() -> None:
    world = World()
    grpc = FakePluginClient("guard", frozenset({names.ON_TICK}))
    grpc.answer = defer.fail(RuntimeError("plugin crashed"))
    grpc.failure_mode = "closed"
    world.hooks.register(grpc)
    result: list[dict] = []
    world.hooks.run(names.ON_TICK, {"connections": 0}).addCallback(result.append)
    assert result and result[0]["__terminal__"] is True
    spans = world.spans()
    chain, call = spans["gatewayd.hook.onTick"], spans["gatewayd.plugin.guard"]
    assert chain.parent is None                       # no parent given: a trace of its own
    assert is_child(call, chain)
    assert call.status.status_code is StatusCode.ERROR
    assert call.status.description == "RuntimeError: plugin crashed"
    assert chain.status.status_code is StatusCode.ERROR
    assert "guard" in chain.status.description
    assert chain.attributes["gatewayd.hook.terminal"] is True


def test_slow_plugin_span_ends_when_its_answer_arrives() -> None:
    world = World()
    grpc = FakePluginClient("slow", frozenset({names.ON_TICK}))
    grpc.answer = defer.Deferred()
    world.hooks.register(grpc)
    world.hooks.run(names.ON_TICK, {"connections": 1})
    assert world.exporter.get_finished_spans() == ()
    world.clock.advance(0.3)
    grpc.answer.callback({"connections": 1})
    spans = world.spans()
    assert set(spans) == {"gatewayd.hook.onTick", "gatewayd.plugin.slow"}
    assert spans["gatewayd.plugin.slow"].status.status_code is StatusCode.UNSET


def test_tracing_off_builds_no_spans_and_sends_no_metadata() -> None:
    world = World(traced=False)
    assert not world.tracing.enabled and world.hooks.tracing is None
    grpc = FakePluginClient("cache", frozenset({names.ON_OPENING}))
    world.hooks.register(grpc)
    world.pool.start()
    world.dial.connect_all()
    proto, _ = world.client()
    proto.dataReceived(startup())
    assert proto.span is None and proto.session is not None
    proto.connectionLost(Failure(ConnectionDone()))
    assert grpc.calls == [(names.ON_OPENING, pytest.approx(10.0), None)]
    assert world.exporter.get_finished_spans() == ()


class TestServiceStartup:
    """GatewayService: C{gatewayd.startup} from start to listening, start-up hooks under it."""

    @staticmethod
    def service(tmp_path: Any, provider: Any) -> Any:
        from gatewayd.config import load
        from gatewayd.service import GatewayService

        (tmp_path / "gatewayd.yaml").write_text(
            "loggers: {default: {output: [console], level: error}}\n"
            "metrics: {default: {enabled: false}}\n"
            "clients: {default: {writes: {address: '127.0.0.1:5432'}}}\n"
            "pools: {default: {writes: {size: 1}}}\n"
            "proxies: {default: {writes: {}}}\n"
            "servers: {default: {address: '127.0.0.1:15499'}}\n"
            "api: {enabled: false}\n")
        (tmp_path / "plugins.yaml").write_text("plugins: []\n")
        config = load(str(tmp_path / "gatewayd.yaml"), str(tmp_path / "plugins.yaml"))
        return GatewayService(config, MemoryReactorClock(), tracer_provider=provider)

    def test_startup_span_ends_when_listening(self, tmp_path: Any) -> None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        svc = self.service(tmp_path, provider)
        assert svc.tracing.enabled and svc.groups["default"].factory.tracing is svc.tracing
        booting = FakeInProcess("boot", frozenset({names.ON_BOOTING, names.ON_BOOTED}), 1000)
        svc.hooks.register(booting)
        ready: list[Any] = []
        svc.ready.addCallback(ready.append)
        svc.startService()
        try:
            # (MemoryReactor's fake port reports 0.0.0.0 whatever the interface)
            assert len(ready) == 1 and ready[0]["default"].endswith(":15499")
            spans = {s.name: s for s in exporter.get_finished_spans()}
            startup_span = spans["gatewayd.startup"]
            assert startup_span.parent is None
            assert startup_span.status.status_code is StatusCode.UNSET
            assert list(startup_span.attributes["gatewayd.listening"]) == [
                f"default={ready[0]['default']}"]
            for name in ("gatewayd.hook.onBooting", "gatewayd.hook.onBooted"):
                assert is_child(spans[name], startup_span), name
            assert booting.calls == 2
        finally:
            svc.stopService()

    def test_without_provider_nothing_is_traced(self, tmp_path: Any) -> None:
        svc = self.service(tmp_path, None)
        assert not svc.tracing.enabled
        assert svc.hooks.tracing is None
        assert not svc.groups["default"].factory.tracing.enabled
