# -*- test-case-name: tests.unit.test_loadbalancer -*-
"""
The balancer of one server group: picks the rule that applies to a new client,
then lets that rule's strategy rank the rule's blocks.

Rules (C{loadBalancingRules}), for every strategy:
  - Conditional rules are tried in config order; the first whose condition
    matches the client decides (C{gatewayd.config.rules} defines the grammar).
  - A C{DEFAULT} rule is the fallback wherever it is written: it applies only
    when no conditional rule matched (the first C{DEFAULT} if there are several;
    validation refuses a second one).
  - With no matching rule and no C{DEFAULT} rule, every block of the group is a
    candidate, with weight 1.
  - A rule restricts the candidates to its distribution, in distribution order.
    Nothing outside it is ever offered, not even as a health fallback: a rule
    saying "reporting goes to reads" must not put reporting on the primary.
  - Weights count for C{WEIGHTED_ROUND_ROBIN} and for consistent hashing under
    C{WEIGHTED_ROUND_ROBIN} or C{CONSISTENT_HASH}; the other strategies use a
    distribution as a set.

Consistent hashing is on with C{strategy: CONSISTENT_HASH} or, as in GatewayD,
whenever the C{consistentHash} block is present: the rule still selects the
block set (and weights), the hash replaces the base strategy's pick.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

from zope.interface import implementer

from gatewayd.config.rules import Condition, ConditionError, parse_condition
from gatewayd.config.schema import LB_STRATEGIES, LoadBalancer, LoadBalancingRule
from gatewayd.interfaces import ILoadBalancer
from gatewayd.loadbalancer.client import ClientInfo
from gatewayd.loadbalancer.hashing import Rendezvous
from gatewayd.loadbalancer.strategies import (
    LeastConnections, Random, Ranker, Recency, RoundRobin, SmoothWeighted,
)

#: Base strategies whose rules' weights also weight consistent hashing.
_WEIGHTED = ("WEIGHTED_ROUND_ROBIN", "CONSISTENT_HASH")


class BalancerConfigError(ValueError):
    """
    A load-balancer setting the balancer cannot honour.  Its C{args} are
    C{(key, problem)}, ready for C{ConfigError(path, *error.args)}.

    @ivar key: the dotted key path, e.g. C{servers.default.loadBalancer.strategy}.
    @ivar problem: what is wrong, in one line.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(key, problem)
        self.key = key
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.key}: {self.problem}"


@implementer(ILoadBalancer)
class Balancer:
    """
    Routes a client to a rule's ranker and returns its ranking.

    @ivar strategy: the configured strategy name.
    @ivar consistent_hash: True when placement is by consistent hashing.
    """

    def __init__(self, strategy: str, consistent_hash: bool,
                 routes: Sequence[tuple[Condition, Ranker]], fallback: Ranker) -> None:
        self.strategy = strategy
        self.consistent_hash = consistent_hash
        self._routes = list(routes)
        self._fallback = fallback

    def candidates(self, client: ClientInfo) -> list[str]:
        for condition, ranker in self._routes:
            if condition.matches(client):
                return ranker.rank(client)
        return self._fallback.rank(client)

    def __repr__(self) -> str:
        hashing = ", consistent hash" if self.consistent_hash else ""
        return f"<Balancer {self.strategy}{hashing}, {len(self._routes)} conditional rule(s)>"


def build_balancer(group: str, blocks: list[str], config: LoadBalancer, *,
                   load: Callable[[str], int] | None = None,
                   rng: random.Random | None = None) -> ILoadBalancer:
    """
    Build the balancer of server group C{group}.

    @param blocks: the blocks the server uses, in order (config order, or
        C{servers.<group>.proxies}); rule distributions may only name these.
    @param load: busy connections of a block; required by C{LEAST_CONNECTIONS}.
    @param rng: randomness for C{RANDOM} (default: L{random.SystemRandom}).
    @raise BalancerConfigError: for settings that cannot work (unknown strategy,
        unknown or repeated block in a distribution, weight < 1, ...).
    """
    prefix = f"servers.{group}.loadBalancer"
    strategy = config.strategy
    if strategy not in LB_STRATEGIES:
        raise BalancerConfigError(f"{prefix}.strategy", f"unknown strategy {strategy!r}; "
                                  f"expected one of {', '.join(LB_STRATEGIES)}")
    if not blocks:
        raise BalancerConfigError(f"proxies.{group}", "the server group has no blocks")
    if strategy == "LEAST_CONNECTIONS" and load is None:
        raise BalancerConfigError(f"{prefix}.strategy",
                                  "LEAST_CONNECTIONS needs the blocks' load")
    if strategy == "WEIGHTED_ROUND_ROBIN" and not config.load_balancing_rules:
        raise BalancerConfigError(f"{prefix}.loadBalancingRules",
                                  "WEIGHTED_ROUND_ROBIN needs at least one rule with weights")

    hashing = strategy == "CONSISTENT_HASH" or config.consistent_hash is not None
    use_source_ip = config.consistent_hash.use_source_ip if config.consistent_hash else True
    chooser = rng if rng is not None else random.SystemRandom()
    recency = Recency()

    def make(names: list[str], weights: list[int]) -> Ranker:
        if hashing:
            return Rendezvous(group, names, weights if strategy in _WEIGHTED else None,
                              use_source_ip)
        if strategy == "ROUND_ROBIN":
            return RoundRobin(names)
        if strategy == "RANDOM":
            return Random(names, chooser)
        if strategy == "WEIGHTED_ROUND_ROBIN":
            return SmoothWeighted(names, weights)
        assert load is not None
        return LeastConnections(names, load, recency)

    routes: list[tuple[Condition, Ranker]] = []
    fallback: Ranker | None = None
    for index, rule in enumerate(config.load_balancing_rules):
        where = f"{prefix}.loadBalancingRules[{index}]"
        condition = _condition(rule.condition, where)
        names, weights = _distribution(rule, blocks, where)
        if not condition.is_default:
            routes.append((condition, make(names, weights)))
        elif fallback is None:
            fallback = make(names, weights)
    if fallback is None:
        fallback = make(list(blocks), [1] * len(blocks))
    return Balancer(strategy, hashing, routes, fallback)


def _distribution(rule: LoadBalancingRule, blocks: list[str],
                  where: str) -> tuple[list[str], list[int]]:
    """The checked block names and weights of one rule, in distribution order."""
    if not rule.distribution:
        raise BalancerConfigError(f"{where}.distribution", "must list at least one block")
    names: list[str] = []
    weights: list[int] = []
    for index, entry in enumerate(rule.distribution):
        at = f"{where}.distribution[{index}]"
        if entry.proxy_name not in blocks:
            raise BalancerConfigError(
                f"{at}.proxyName",
                f"{entry.proxy_name!r} is not a block of this server ({', '.join(blocks)})")
        if entry.proxy_name in names:
            raise BalancerConfigError(f"{at}.proxyName",
                                      f"{entry.proxy_name!r} is listed twice")
        if isinstance(entry.weight, bool) or not isinstance(entry.weight, int) \
                or entry.weight < 1:
            raise BalancerConfigError(f"{at}.weight",
                                      f"must be a positive integer, not {entry.weight!r}")
        names.append(entry.proxy_name)
        weights.append(entry.weight)
    return names, weights


def _condition(text: str, where: str) -> Condition:
    """Compile a rule condition with the config package's grammar."""
    try:
        return parse_condition(text)
    except ConditionError as error:
        raise BalancerConfigError(f"{where}.condition", str(error)) from error
