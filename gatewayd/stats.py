"""
Plain counters the data path bumps; exporters read them at scrape time.

The relay must not touch prometheus-client per message (a labelled child costs
~0.3-1.2 µs and a lock).  Instead each (group, block) owns a L{BlockStats} of
plain ints, and L{gatewayd.observability.metrics} turns them into GatewayD's
metric families when Prometheus scrapes.  Nothing here imports Twisted.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any, Iterator

#: Buckets (seconds) for waits and durations: 100 µs .. 60 s.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


class FixedHistogram:
    """A histogram with fixed upper bounds; C{observe} is one bisect and two adds."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(upper bound as text, cumulative count) pairs ending with +Inf, for exposition."""
        out, running = [], 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append((repr(float(bound)), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class BlockStats:
    """
    Counters of one (group, block).  Gauges go up and down; C{*_bytes}/C{*_count}
    pairs back GatewayD's byte summaries (sum and count of read/write bursts).
    """

    __slots__ = (
        "group", "block", "pool",
        "client_connections", "server_connections", "tls_connections", "proxied_connections",
        "bytes_received_from_client", "reads_from_client",
        "bytes_sent_to_server", "writes_to_server",
        "bytes_received_from_server", "reads_from_server",
        "bytes_sent_to_client", "writes_to_client",
        "proxy_health_checks", "passthroughs_to_client", "passthroughs_to_server",
        "passthrough_terminations", "pool_exhausted", "backend_dial_failures",
        "pool_wait", "query_duration", "transaction_duration",
    )

    def __init__(self, group: str, block: str) -> None:
        self.group = group
        self.block = block
        #: the block's IBackendPool, set by the service; read for pool gauges
        self.pool: Any = None
        self.client_connections = 0
        self.server_connections = 0
        self.tls_connections = 0
        self.proxied_connections = 0
        self.bytes_received_from_client = 0
        self.reads_from_client = 0
        self.bytes_sent_to_server = 0
        self.writes_to_server = 0
        self.bytes_received_from_server = 0
        self.reads_from_server = 0
        self.bytes_sent_to_client = 0
        self.writes_to_client = 0
        self.proxy_health_checks = 0
        self.passthroughs_to_client = 0
        self.passthroughs_to_server = 0
        self.passthrough_terminations = 0
        self.pool_exhausted = 0
        self.backend_dial_failures = 0
        self.pool_wait = FixedHistogram()
        self.query_duration = FixedHistogram()
        self.transaction_duration = FixedHistogram()


class Stats:
    """All L{BlockStats} of one gateway, plus its process-wide counters."""

    def __init__(self) -> None:
        self._blocks: dict[tuple[str, str], BlockStats] = {}
        self.ticks_fired = 0
        #: clients refused before a block was chosen (bad startup, TLS required...), by group
        self.clients_rejected: dict[str, int] = {}

    def block(self, group: str, block: str) -> BlockStats:
        """The stats of (group, block), created on first use."""
        found = self._blocks.get((group, block))
        if found is None:
            found = self._blocks[(group, block)] = BlockStats(group, block)
        return found

    def blocks(self) -> Iterator[BlockStats]:
        return iter(list(self._blocks.values()))
