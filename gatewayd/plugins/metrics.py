# -*- test-case-name: tests.unit.test_plugin_host -*-
"""
GatewayD's metrics merger: scrape each plugin's Prometheus endpoint over its
Unix socket, label every sample C{plugin="<name with - as _>"}, and keep the
merged text ready for our C{/metrics}.

Differences from GatewayD, on purpose: a plugin whose scrape fails loses its
own metrics only (GatewayD skips the whole pass), and families that several
plugins export (C{process_*}, C{go_*}) are merged into one family instead of
being written twice, which Prometheus would reject.
"""

from __future__ import annotations

from typing import Any, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

#: GatewayD's hard-coded URL; the host part is ignored on a Unix socket.
METRICS_URL = b"http://plugins/metrics"
#: A plugin's exposition larger than this is refused rather than buffered.
MAX_BODY = 16 * 1024 * 1024


def plugin_label(name: str) -> str:
    """The C{plugin} label value GatewayD uses: C{-} becomes C{_}."""
    return name.replace("-", "_")


def relabel(text: str, plugin: str) -> list[Metric]:
    """
    Parse Prometheus text and add C{plugin=<plugin_label(plugin)>} to every sample.

    @raise ValueError: the text is not the Prometheus text format.
    """
    label = plugin_label(plugin)
    families = []
    for family in text_string_to_metric_families(text):
        metric = Metric(family.name, family.documentation, family.type, family.unit)
        for sample in family.samples:
            metric.add_sample(sample.name, {**sample.labels, "plugin": label}, sample.value,
                              sample.timestamp, sample.exemplar)
        families.append(metric)
    return families


def merge(per_plugin: Iterable[list[Metric]]) -> list[Metric]:
    """One family per name, holding the samples of every plugin (first type wins)."""
    merged: dict[str, Metric] = {}
    for families in per_plugin:
        for family in families:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation,
                                                    family.type, family.unit)
            elif into.type != family.type:
                continue
            into.samples.extend(family.samples)
    return [merged[name] for name in sorted(merged)]


def render(families: list[Metric]) -> str:
    """Prometheus text of C{families}."""
    if not families:
        return ""

    class _Families:
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families())  # type: ignore[arg-type]
    return generate_latest(registry).decode("utf-8")


@implementer(IAgentEndpointFactory)
class _UnixEndpointFactory:
    def __init__(self, reactor: Any, path: str, timeout: float) -> None:
        self._endpoint = UNIXClientEndpoint(reactor, path, timeout=timeout)

    def endpointForURI(self, uri: Any) -> UNIXClientEndpoint:
        return self._endpoint


class _BoundedBody(Protocol):
    def __init__(self, done: Deferred[bytes], limit: int) -> None:
        self._done = done
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._limit:
            self.transport.stopProducing()
            if not self._done.called:
                self._done.errback(ValueError(f"metrics larger than {self._limit} bytes"))
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure) -> None:
        if self._done.called:
            return
        # PotentialDataLoss: a body without Content-Length ends when the server closes.
        if reason.check(ResponseDone, PotentialDataLoss):
            self._done.callback(b"".join(self._chunks))
        else:
            self._done.errback(reason)


def fetch_metrics(reactor: Any, socket_path: str, timeout: float) -> Deferred[str]:
    """GET C{http://plugins/metrics} over C{socket_path}; fires with the body text."""
    agent = Agent.usingEndpointFactory(reactor, _UnixEndpointFactory(reactor, socket_path, timeout))
    d = agent.request(b"GET", METRICS_URL)

    def got_response(response: Any) -> Deferred[bytes]:
        if response.code != 200:
            response.deliverBody(_BoundedBody(Deferred().addErrback(lambda _: None), MAX_BODY))
            raise ValueError(f"GET /metrics answered HTTP {response.code}")
        body: Deferred[bytes] = Deferred()
        response.deliverBody(_BoundedBody(body, MAX_BODY))
        return body

    d.addCallback(got_response)
    d.addCallback(lambda body: body.decode("utf-8", "replace"))
    return d.addTimeout(timeout, reactor)
