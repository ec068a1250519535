"""
A block: one backend of a server group (GatewayD's clients/pools/proxies
C{<group>.<block>}) with its target, its pool and its counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from gatewayd.backend import BackendTarget
from gatewayd.pool import BackendPool
from gatewayd.stats import BlockStats


@dataclass
class Block:
    """Everything the server needs to hand a client to one backend."""

    group: str
    name: str
    target: BackendTarget
    pool: BackendPool
    stats: BlockStats

    @property
    def available(self) -> bool:
        """Up and with an idle connection right now."""
        return self.pool.healthy and self.pool.idle_count > 0
