# -*- test-case-name: tests.unit.test_observability_tracing -*-
"""
OpenTelemetry spans with explicit parents.

Twisted callbacks do not carry contextvars reliably (plain Deferred callbacks
see no span; under asyncioreactor a stale span leaks into later callbacks), so
gatewayd never relies on the "current span": L{Tracing.start_span} takes the
parent span explicitly and a missing parent means a new trace, never whatever
happens to be current.  Long-lived spans (a whole connection) are kept on the
protocol object and ended in C{connectionLost}.

The spans gatewayd makes (each child names its parent explicitly):

  - C{gatewayd.startup}: service start until every listener is bound; the
    start-up hooks (C{onBooting} ... C{onBooted}) run under it;
  - C{gatewayd.connection} (kind SERVER): one per client socket, from
    C{connectionMade} to C{connectionLost}; attributes C{gatewayd.group},
    C{gatewayd.block}, C{client.address}, C{client.port}; status ERROR with
    the reason when the gateway refused or closed the client, or the socket
    was lost uncleanly.  Children:
      - C{gatewayd.pool.acquire}: until the pool hands over a backend or
        fails (C{gatewayd.pool.wait_seconds}, on the reactor clock);
      - C{gatewayd.session}: the relay (C{db.namespace}, C{db.user},
        C{server.address}, C{gatewayd.relay} C{pump}/C{framed});
      - C{gatewayd.hook.<hook>}: connection hooks' chains;
  - C{gatewayd.hook.<hook>}: each hook chain that ran, with a child
    C{gatewayd.plugin.<plugin>} per plugin call (kind CLIENT for gRPC
    plugins, which get that span's C{traceparent} as call metadata).

The byte relay itself makes no span and does no per-message tracing work.
Nothing at all is created without a tracer provider (L{Tracing.enabled}).

Only opentelemetry-api is required.  With no tracer provider everything is a
no-op (the process-global provider is not consulted: library code stays
embeddable).  L{setup_otlp} needs the C{tracing} extra (opentelemetry-sdk and
the OTLP gRPC exporter).
"""

from __future__ import annotations

from typing import Any, Mapping
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NoOpTracerProvider, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from twisted.python.failure import Failure

__all__ = ["Tracing", "TracingUnavailable", "TRACER_NAME", "setup_otlp", "shutdown_provider"]

#: GatewayD's tracer and service name.
TRACER_NAME = "gatewayd"

_PROPAGATOR = TraceContextTextMapPropagator()


class TracingUnavailable(RuntimeError):
    """The C{tracing} extra is not installed; the message says how to fix it."""


class Tracing:
    """Starts gatewayd's spans; a no-op without a tracer provider."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None,
                 version: str | None = None) -> None:
        self.provider = tracer_provider or NoOpTracerProvider()
        self.enabled = not isinstance(self.provider, NoOpTracerProvider)
        self.tracer = self.provider.get_tracer(TRACER_NAME, version)

    def start_span(self, name: str, parent_span: Span | None = None,
                   attributes: Mapping[str, Any] | None = None,
                   kind: SpanKind = SpanKind.INTERNAL) -> Span:
        """
        Start (not activate) a span; end it with L{end} or C{span.end()}.

        @param parent_span: the parent; None starts a new trace, ignoring any
            span that may be current in this context.
        """
        return self.tracer.start_span(name, context=self.context_for(parent_span),
                                      kind=kind, attributes=attributes)

    @staticmethod
    def context_for(span: Span | None) -> Context:
        """A context holding only C{span} (an empty one for None)."""
        if span is None:
            return Context()
        return trace.set_span_in_context(span, Context())

    @staticmethod
    def inject_traceparent(span: Span | None) -> list[tuple[str, str]]:
        """
        W3C C{traceparent} (and C{tracestate}) of C{span} as gRPC metadata;
        empty when the span is not sampled or tracing is off.
        """
        if span is None or not span.get_span_context().is_valid:
            return []
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=Tracing.context_for(span))
        return sorted(carrier.items())

    @staticmethod
    def end(span: Span, error: Failure | BaseException | str | None = None) -> None:
        """
        End C{span}, recording C{error} as its status: an exception or Twisted
        Failure (also recorded as an exception event), or a message (a client
        refused, a session closed by the gateway) when there is no exception.
        """
        if error and span.is_recording():
            if isinstance(error, str):
                span.set_status(Status(StatusCode.ERROR, error))
            else:
                exception = error.value if isinstance(error, Failure) else error
                span.record_exception(exception)
                span.set_status(Status(StatusCode.ERROR,
                                       f"{type(exception).__name__}: {exception}"))
        span.end()


def setup_otlp(collector_url: str, service_version: str, *,
               set_global: bool = True) -> trace.TracerProvider:
    """
    Install an SDK tracer provider exporting every span (always-on sampling)
    through a batch processor, whose thread does the export, to an OTLP/gRPC
    collector; return it.

    @param collector_url: C{host:port} (GatewayD's form, plaintext) or
        C{http://} / C{https://} URL; C{https} uses TLS (GatewayD is always
        plaintext).
    @param set_global: also install it as the process-global provider (for
        third-party instrumentation such as grpc's).  gatewayd's own spans
        only flow when the returned provider is given to L{Tracing}.
    @raise TracingUnavailable: the C{tracing} extra is missing.
    """
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    except ImportError as e:
        raise TracingUnavailable(
            "tracing needs the 'tracing' extra: pip install 'gatewayd[tracing]' "
            f"(missing module {e.name or e})") from None
    scheme = urlsplit(collector_url).scheme if "://" in collector_url else ""
    endpoint = collector_url if scheme else f"http://{collector_url}"
    resource = Resource.create({
        "service.name": TRACER_NAME,
        "service.version": service_version,
        "library.language": "python",
    })
    provider = TracerProvider(resource=resource, sampler=ALWAYS_ON)
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=scheme != "https")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def shutdown_provider(provider: Any, reactor: Any) -> Any:
    """
    Flush and stop an SDK provider on the reactor's thread pool (the final
    export can take up to the exporter's timeout).

    @return: a Deferred, or None when C{provider} has nothing to shut down.
    """
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is None:
        return None
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(reactor, reactor.getThreadPool(), shutdown)
