"""
Observability: logs (L{gatewayd.observability.logging}), Prometheus metrics
(L{gatewayd.observability.metrics}) and OpenTelemetry traces
(L{gatewayd.observability.tracing}).

Nothing is imported here on purpose: each submodule is loaded only by the rooms
that need it, and none of them has import-time side effects.
"""
