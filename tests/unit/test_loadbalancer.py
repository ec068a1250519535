"""
Tests for L{gatewayd.loadbalancer}: the stateful strategies (round robin,
random, smooth weighted round robin, least connections), DEFAULT rules and
the checks of build_balancer.  Hashing is in test_loadbalancer_hash, rule
conditions in test_loadbalancer_rules.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from itertools import groupby

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zope.interface.verify import verifyObject

from gatewayd.config.schema import (
    LB_STRATEGIES, ConsistentHash, Distribution, LoadBalancer, LoadBalancingRule,
)
from gatewayd.errors import ConfigError
from gatewayd.interfaces import ILoadBalancer
from gatewayd.loadbalancer import BalancerConfigError, ClientInfo, build_balancer

CLIENT = ClientInfo(source_ip="10.1.2.3", source_port=50000, database="app", user="app",
                    application_name="psql")


def rule(condition: str, *distribution: tuple[str, int]) -> LoadBalancingRule:
    return LoadBalancingRule(
        condition=condition,
        distribution=[Distribution(proxy_name=name, weight=weight)
                      for name, weight in distribution])


def picks(balancer: ILoadBalancer, count: int, client: ClientInfo = CLIENT) -> list[str]:
    return [balancer.candidates(client)[0] for _ in range(count)]


def longest_run(sequence: list[str], block: str) -> int:
    return max((len(list(run)) for name, run in groupby(sequence) if name == block), default=0)


# -- the interface -----------------------------------------------------------

@pytest.mark.parametrize("strategy", LB_STRATEGIES)
@pytest.mark.parametrize("hashing", [False, True])
def test_every_strategy_provides_ILoadBalancer(strategy: str, hashing: bool) -> None:
    config = LoadBalancer(
        strategy=strategy,
        consistent_hash=ConsistentHash() if hashing else None,
        load_balancing_rules=[rule("DEFAULT", ("writes", 2), ("reads", 1))])
    balancer = build_balancer("default", ["writes", "reads"], config, load=lambda block: 0)
    assert verifyObject(ILoadBalancer, balancer)
    assert balancer.strategy == strategy
    ranked = balancer.candidates(CLIENT)
    assert sorted(ranked) == ["reads", "writes"]


def test_client_info_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CLIENT.user = "postgres"  # type: ignore[misc]


# -- ROUND_ROBIN ---------------------------------------------------------------

def test_round_robin_starts_with_the_first_block_in_config_order() -> None:
    """GatewayD's first pick is proxies[1 % n], in random map order; ours is blocks[0]."""
    balancer = build_balancer("default", ["a", "b", "c"], LoadBalancer())
    assert picks(balancer, 7) == ["a", "b", "c", "a", "b", "c", "a"]


def test_round_robin_splits_exactly() -> None:
    balancer = build_balancer("default", ["a", "b", "c"], LoadBalancer(strategy="ROUND_ROBIN"))
    assert Counter(picks(balancer, 300)) == {"a": 100, "b": 100, "c": 100}


def test_round_robin_fallbacks_are_the_next_ones_in_rotation() -> None:
    balancer = build_balancer("default", ["a", "b", "c"], LoadBalancer())
    assert balancer.candidates(CLIENT) == ["a", "b", "c"]
    assert balancer.candidates(CLIENT) == ["b", "c", "a"]
    assert balancer.candidates(CLIENT) == ["c", "a", "b"]
    assert balancer.candidates(CLIENT) == ["a", "b", "c"]


def test_round_robin_follows_the_given_block_order() -> None:
    """servers.<g>.proxies decides the order, not the alphabet."""
    balancer = build_balancer("default", ["writes", "reads"], LoadBalancer())
    assert picks(balancer, 3) == ["writes", "reads", "writes"]
    balancer = build_balancer("default", ["reads", "writes"], LoadBalancer())
    assert picks(balancer, 3) == ["reads", "writes", "reads"]


def test_round_robin_is_identical_on_every_instance() -> None:
    first = build_balancer("default", ["a", "b", "c"], LoadBalancer())
    second = build_balancer("default", ["a", "b", "c"], LoadBalancer())
    assert [first.candidates(CLIENT) for _ in range(10)] == \
        [second.candidates(CLIENT) for _ in range(10)]


def test_round_robin_under_a_default_rule_rotates_over_its_blocks_only() -> None:
    config = LoadBalancer(load_balancing_rules=[rule("DEFAULT", ("c", 5), ("a", 1))])
    balancer = build_balancer("default", ["a", "b", "c"], config)
    assert [balancer.candidates(CLIENT) for _ in range(3)] == \
        [["c", "a"], ["a", "c"], ["c", "a"]]


def test_single_block() -> None:
    for strategy in LB_STRATEGIES:
        config = LoadBalancer(strategy=strategy,
                              load_balancing_rules=[rule("DEFAULT", ("only", 3))])
        balancer = build_balancer("default", ["only"], config, load=lambda block: 3)
        assert [balancer.candidates(CLIENT) for _ in range(3)] == [["only"]] * 3


# -- RANDOM --------------------------------------------------------------------

def test_random_with_a_seeded_rng_is_uniform_and_reproducible() -> None:
    config = LoadBalancer(strategy="RANDOM")
    balancer = build_balancer("default", ["a", "b"], config, rng=random.Random(1234))
    sequence = picks(balancer, 1000)
    counts = Counter(sequence)
    assert 400 <= counts["a"] <= 600 and 400 <= counts["b"] <= 600
    again = build_balancer("default", ["a", "b"], config, rng=random.Random(1234))
    assert picks(again, 1000) == sequence
    assert len(set(sequence[:50])) == 2


@pytest.mark.parametrize("rng", [None, random.SystemRandom()], ids=["default", "system"])
def test_random_with_system_randomness_is_uniform(rng: random.Random | None) -> None:
    """
    1000 fair coin flips land in [400, 600] except with probability ~2e-10
    (6.3 standard deviations): safe to run forever.
    """
    balancer = build_balancer("default", ["a", "b"], LoadBalancer(strategy="RANDOM"), rng=rng)
    counts = Counter(picks(balancer, 1000))
    assert set(counts) == {"a", "b"}
    assert 400 <= counts["a"] <= 600


def test_random_ranks_a_permutation_with_uniform_fallbacks() -> None:
    balancer = build_balancer("default", ["a", "b", "c"], LoadBalancer(strategy="RANDOM"),
                              rng=random.Random(7))
    orders = Counter(tuple(balancer.candidates(CLIENT)) for _ in range(6000))
    assert len(orders) == 6  # every permutation occurs
    for order in orders:
        assert sorted(order) == ["a", "b", "c"]
        assert 800 <= orders[order] <= 1200


# -- WEIGHTED_ROUND_ROBIN --------------------------------------------------------

def weighted(*distribution: tuple[str, int]) -> LoadBalancer:
    return LoadBalancer(strategy="WEIGHTED_ROUND_ROBIN",
                        load_balancing_rules=[rule("DEFAULT", *distribution)])


def test_weighted_70_30_is_exact_and_smooth() -> None:
    balancer = build_balancer("default", ["writes", "reads"],
                              weighted(("writes", 70), ("reads", 30)))
    sequence = picks(balancer, 1000)
    assert Counter(sequence) == {"writes": 700, "reads": 300}
    # Smooth: every aligned window of 10 is exactly 7/3, never a burst.
    for start in range(0, 1000, 10):
        assert Counter(sequence[start:start + 10])["reads"] == 3
    assert longest_run(sequence, "writes") <= 3
    assert longest_run(sequence, "reads") == 1


def test_weighted_matches_nginx_sequence() -> None:
    """nginx's documented example: weights a=5, b=1, c=1 give a a b a c a a."""
    balancer = build_balancer("g", ["a", "b", "c"], weighted(("a", 5), ("b", 1), ("c", 1)))
    assert picks(balancer, 14) == list("aabacaa") * 2


def test_weighted_ties_go_to_the_earlier_block_in_distribution_order() -> None:
    balancer = build_balancer("g", ["a", "b"], weighted(("b", 1), ("a", 1)))
    assert picks(balancer, 4) == ["b", "a", "b", "a"]


def test_weighted_fallbacks_by_descending_current_weight() -> None:
    balancer = build_balancer("g", ["a", "b", "c"], weighted(("a", 5), ("b", 1), ("c", 1)))
    # currents after each pick: (-2, 1, 1), (-4, 2, 2), (1, -4, 3)
    assert balancer.candidates(CLIENT) == ["a", "b", "c"]
    assert balancer.candidates(CLIENT) == ["a", "b", "c"]
    assert balancer.candidates(CLIENT) == ["b", "c", "a"]


def test_weighted_only_offers_blocks_of_the_distribution() -> None:
    balancer = build_balancer("g", ["a", "b", "c"], weighted(("a", 2), ("c", 1)))
    for _ in range(30):
        assert sorted(balancer.candidates(CLIENT)) == ["a", "c"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6))
def test_weighted_gives_each_block_its_weight_in_every_cycle(weights: list[int]) -> None:
    names = [f"b{i}" for i in range(len(weights))]
    balancer = build_balancer("g", names, weighted(*zip(names, weights)))
    total = sum(weights)
    for _ in range(2):
        assert Counter(picks(balancer, total)) == \
            {name: weight for name, weight in zip(names, weights)}


# -- LEAST_CONNECTIONS -------------------------------------------------------------

def test_least_connections_follows_load() -> None:
    load = {"a": 5, "b": 2, "c": 9}
    balancer = build_balancer("g", ["a", "b", "c"], LoadBalancer(strategy="LEAST_CONNECTIONS"),
                              load=load.__getitem__)
    assert balancer.candidates(CLIENT) == ["b", "a", "c"]
    load["b"] = 10
    assert balancer.candidates(CLIENT) == ["a", "c", "b"]
    load["c"] = 0
    assert balancer.candidates(CLIENT)[0] == "c"


def test_least_connections_fills_the_emptiest_block_as_load_grows() -> None:
    load = {"a": 3, "b": 0, "c": 1}
    balancer = build_balancer("g", ["a", "b", "c"], LoadBalancer(strategy="LEAST_CONNECTIONS"),
                              load=load.__getitem__)
    for _ in range(8):
        load[balancer.candidates(CLIENT)[0]] += 1
    assert load == {"a": 4, "b": 4, "c": 4}


def test_least_connections_ties_go_to_the_least_recently_chosen() -> None:
    """With a constant load (short-lived clients), ties degrade to round robin."""
    balancer = build_balancer("g", ["a", "b", "c"], LoadBalancer(strategy="LEAST_CONNECTIONS"),
                              load=lambda block: 0)
    assert picks(balancer, 7) == ["a", "b", "c", "a", "b", "c", "a"]
    # Fallbacks: equal load, least recently chosen first.
    assert balancer.candidates(CLIENT) == ["b", "c", "a"]


def test_least_connections_needs_a_load_function() -> None:
    with pytest.raises(BalancerConfigError) as caught:
        build_balancer("g", ["a"], LoadBalancer(strategy="LEAST_CONNECTIONS"))
    assert caught.value.key == "servers.g.loadBalancer.strategy"


# -- rules without conditions, and the checks -----------------------------------

def test_the_first_default_rule_wins() -> None:
    config = weighted(("a", 1))
    config.load_balancing_rules.append(rule("DEFAULT", ("b", 1)))
    balancer = build_balancer("g", ["a", "b"], config)
    assert {balancer.candidates(CLIENT)[0] for _ in range(5)} == {"a"}


@pytest.mark.parametrize("config, key, problem", [
    (LoadBalancer(strategy="LEAST_LOADED"), "servers.g.loadBalancer.strategy",
     "unknown strategy 'LEAST_LOADED'"),
    (LoadBalancer(strategy="WEIGHTED_ROUND_ROBIN"), "servers.g.loadBalancer.loadBalancingRules",
     "needs at least one rule"),
    (weighted(("a", 1), ("nope", 1)),
     "servers.g.loadBalancer.loadBalancingRules[0].distribution[1].proxyName",
     "'nope' is not a block of this server (a, b)"),
    (weighted(("a", 1), ("a", 2)),
     "servers.g.loadBalancer.loadBalancingRules[0].distribution[1].proxyName", "listed twice"),
    (weighted(("a", 0)), "servers.g.loadBalancer.loadBalancingRules[0].distribution[0].weight",
     "positive integer"),
    (weighted(), "servers.g.loadBalancer.loadBalancingRules[0].distribution",
     "at least one block"),
])
def test_bad_settings_name_the_key(config: LoadBalancer, key: str, problem: str) -> None:
    with pytest.raises(BalancerConfigError) as caught:
        build_balancer("g", ["a", "b"], config)
    assert caught.value.key == key
    assert problem in caught.value.problem
    assert str(caught.value).startswith(key + ": ")
    # What the service turns into a one-line ConfigError naming the file.
    error = ConfigError("etc/gatewayd.yaml", *caught.value.args)
    assert str(error) == f"etc/gatewayd.yaml: {key}: {caught.value.problem}"


def test_a_group_without_blocks_is_refused() -> None:
    with pytest.raises(BalancerConfigError) as caught:
        build_balancer("g", [], LoadBalancer())
    assert caught.value.key == "proxies.g"
