"""
Spans with explicit parents, traceparent metadata for plugins, and the OTLP
setup's failure line, checked with the SDK's in-memory exporter.
"""

from __future__ import annotations

import re
import sys

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from twisted.internet.testing import MemoryReactor
from twisted.python.failure import Failure

from gatewayd.observability.tracing import (
    Tracing, TracingUnavailable, setup_otlp, shutdown_provider,
)

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


@pytest.fixture
def recorded() -> tuple[Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider, version="1.2.3"), exporter


def test_child_spans_have_explicit_parent(recorded) -> None:
    tracing, exporter = recorded
    connection = tracing.start_span("connection", attributes={"group": "default"},
                                    kind=SpanKind.SERVER)
    hook = tracing.start_span("hook.onTrafficFromClient", parent_span=connection)
    grandchild = tracing.start_span("plugin.call", parent_span=hook)
    for span in (grandchild, hook, connection):
        span.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root, child, leaf = spans["connection"], spans["hook.onTrafficFromClient"], spans["plugin.call"]
    assert root.parent is None
    assert child.parent.span_id == root.context.span_id
    assert leaf.parent.span_id == child.context.span_id
    assert {s.context.trace_id for s in spans.values()} == {root.context.trace_id}
    assert root.attributes["group"] == "default"
    assert root.kind is SpanKind.SERVER
    assert root.instrumentation_scope.name == "gatewayd"
    assert root.instrumentation_scope.version == "1.2.3"


def test_no_parent_ignores_the_current_span(recorded) -> None:
    """A span current by accident (asyncioreactor leaks them) must not become the parent."""
    tracing, exporter = recorded
    with tracing.tracer.start_as_current_span("leaked"):
        fresh = tracing.start_span("new-connection")
        fresh.end()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["new-connection"].parent is None
    assert spans["new-connection"].context.trace_id != spans["leaked"].context.trace_id


def test_context_for_holds_the_span(recorded) -> None:
    tracing, _ = recorded
    span = tracing.start_span("x")
    assert trace.get_current_span(Tracing.context_for(span)) is span
    assert trace.get_current_span(Tracing.context_for(None)) is trace.INVALID_SPAN
    span.end()


def test_inject_traceparent(recorded) -> None:
    tracing, _ = recorded
    parent = tracing.start_span("hook")
    metadata = tracing.inject_traceparent(parent)
    assert [name for name, _ in metadata] == ["traceparent"]
    match = TRACEPARENT.match(metadata[0][1])
    assert match is not None
    context = parent.get_span_context()
    assert match.group(1) == f"{context.trace_id:032x}"
    assert match.group(2) == f"{context.span_id:016x}"
    assert int(match.group(3), 16) & 1  # sampled
    parent.end()


def test_disabled_tracing_is_noop_and_sends_no_metadata() -> None:
    tracing = Tracing()
    assert not tracing.enabled
    span = tracing.start_span("anything", attributes={"a": 1})
    assert not span.is_recording()
    assert tracing.inject_traceparent(span) == []
    assert tracing.inject_traceparent(None) == []
    Tracing.end(span, ValueError("ignored"))


def test_end_records_errors(recorded) -> None:
    tracing, exporter = recorded
    ok = tracing.start_span("ok")
    Tracing.end(ok)
    bad = tracing.start_span("bad")
    Tracing.end(bad, Failure(ConnectionResetError("backend went away")))
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["ok"].status.status_code is StatusCode.UNSET
    assert spans["bad"].status.status_code is StatusCode.ERROR
    assert spans["bad"].status.description == "ConnectionResetError: backend went away"
    assert spans["bad"].events[0].name == "exception"
    assert spans["bad"].events[0].attributes["exception.type"] == "ConnectionResetError"


def test_setup_otlp_without_extra_says_how_to_fix(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(TracingUnavailable) as info:
        setup_otlp("localhost:4317", "1.0")
    message = str(info.value)
    assert "\n" not in message
    assert "pip install 'gatewayd[tracing]'" in message
    assert "opentelemetry.exporter.otlp.proto.grpc.trace_exporter" in message


def test_setup_otlp_builds_provider_without_touching_global() -> None:
    before = trace.get_tracer_provider()
    provider = setup_otlp("localhost:4317", "9.9.9", set_global=False)
    try:
        assert trace.get_tracer_provider() is before
        attributes = provider.resource.attributes
        assert attributes["service.name"] == "gatewayd"
        assert attributes["service.version"] == "9.9.9"
        assert attributes["library.language"] == "python"
        assert Tracing(provider).enabled
    finally:
        provider.shutdown()


def test_shutdown_provider_runs_on_the_thread_pool() -> None:
    class Pool:
        def __init__(self) -> None:
            self.calls = []

        def callInThreadWithCallback(self, onResult, f, *a, **kw):  # noqa: N802 - Twisted API
            self.calls.append(f)
            onResult(True, f(*a, **kw))

    class Reactor(MemoryReactor):
        pool = Pool()

        def getThreadPool(self):  # noqa: N802 - Twisted API
            return self.pool

        def callFromThread(self, f, *a, **kw):  # noqa: N802 - Twisted API
            f(*a, **kw)

    shut = []

    class Provider:
        def shutdown(self) -> None:
            shut.append(True)

    reactor = Reactor()
    d = shutdown_provider(Provider(), reactor)
    assert shut == [True]
    assert reactor.pool.calls and d.called
    assert shutdown_provider(object(), reactor) is None


def test_setup_otlp_installs_the_global_provider_by_default() -> None:
    """Run in a child process: the global provider can be set only once per process."""
    import subprocess

    code = """
from opentelemetry import trace
from gatewayd.observability.tracing import setup_otlp
provider = setup_otlp("localhost:4317", "1.0")
assert trace.get_tracer_provider() is provider
provider.shutdown()
print("installed")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "installed"
