# -*- test-case-name: tests.unit.test_loadbalancer -*-
"""
Block selection for multi-pool server groups: which block (backend) of a
group serves a new client.

Pure logic: no Twisted, no sockets, no global state.  The server builds one
balancer per group with L{build_balancer}, asks it for L{ClientInfo}'s ranked
candidates once per new client and skips the blocks that are down or
exhausted.  The strategies, the rule semantics and the differences from
GatewayD are documented in C{docs/load-balancing.md}.
"""

from gatewayd.loadbalancer.balancer import Balancer, BalancerConfigError, build_balancer
from gatewayd.loadbalancer.client import ClientInfo

__all__ = [
    "Balancer", "BalancerConfigError", "ClientInfo", "build_balancer",
]
