"""
Tests for rule routing in L{gatewayd.loadbalancer}: conditions (parsed by
L{gatewayd.config.rules}) choose a distribution per client for every strategy;
DEFAULT is the fallback; each rule keeps its own rotation state.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from zope.interface.verify import verifyObject

from gatewayd.config.schema import ConsistentHash, Distribution, LoadBalancer, LoadBalancingRule
from gatewayd.interfaces import ILoadBalancer
from gatewayd.loadbalancer import BalancerConfigError, ClientInfo, build_balancer

BLOCKS = ["writes", "reads", "replica2"]


def client(ip: str = "192.168.1.10", port: int = 50000, database: str = "app",
           user: str = "app", application_name: str = "psql") -> ClientInfo:
    return ClientInfo(source_ip=ip, source_port=port, database=database, user=user,
                      application_name=application_name)


def rule(condition: str, *blocks: str | tuple[str, int]) -> LoadBalancingRule:
    shares = [block if isinstance(block, tuple) else (block, 1) for block in blocks]
    return LoadBalancingRule(condition=condition, distribution=[
        Distribution(proxy_name=name, weight=weight) for name, weight in shares])


def balancer(*rules: LoadBalancingRule, strategy: str = "ROUND_ROBIN",
             load: dict[str, int] | None = None, hashing: bool = False) -> ILoadBalancer:
    config = LoadBalancer(strategy=strategy, load_balancing_rules=list(rules),
                          consistent_hash=ConsistentHash() if hashing else None)
    loads = load if load is not None else {}
    return build_balancer("default", BLOCKS, config, load=lambda block: loads.get(block, 0),
                          rng=random.Random(5))


def firsts(lb: ILoadBalancer, who: ClientInfo, count: int) -> list[str]:
    return [lb.candidates(who)[0] for _ in range(count)]


def test_application_name_routes_with_round_robin() -> None:
    lb = balancer(rule('application_name == "reporting"', "reads"))
    verifyObject(ILoadBalancer, lb)
    reporting = client(application_name="reporting")
    assert [lb.candidates(reporting) for _ in range(3)] == [["reads"]] * 3
    # No DEFAULT rule: everyone else rotates over every block.
    assert firsts(lb, client(), 6) == BLOCKS * 2


def test_database_routes() -> None:
    lb = balancer(rule('database == "analytics"', "replica2"), rule("DEFAULT", "writes"))
    assert lb.candidates(client(database="analytics")) == ["replica2"]
    assert lb.candidates(client(database="app")) == ["writes"]


@pytest.mark.parametrize("condition", ['user in ("etl", "report_daily")', 'user ~ "etl|report_.*"'])
def test_user_routes(condition: str) -> None:
    lb = balancer(rule(condition, "reads", "replica2"), rule("DEFAULT", "writes"))
    assert firsts(lb, client(user="etl"), 4) == ["reads", "replica2", "reads", "replica2"]
    assert set(firsts(lb, client(user="report_daily"), 4)) == {"reads", "replica2"}
    assert firsts(lb, client(user="app"), 2) == ["writes", "writes"]


def test_source_cidr_routes_ipv4() -> None:
    lb = balancer(rule("source_ip in 10.0.0.0/8", "reads"), rule("DEFAULT", "writes"))
    assert lb.candidates(client(ip="10.20.30.40")) == ["reads"]
    assert lb.candidates(client(ip="::ffff:10.1.1.1")) == ["reads"]  # dual-stack listener
    assert lb.candidates(client(ip="11.0.0.1")) == ["writes"]
    assert lb.candidates(client(ip="")) == ["writes"]  # Unix-socket client


def test_source_cidr_routes_ipv6() -> None:
    lb = balancer(rule('source_ip in ("fd00::/8", "2001:db8::/32")', "replica2"),
                  rule("DEFAULT", "writes"))
    assert lb.candidates(client(ip="fd12:3456::1")) == ["replica2"]
    assert lb.candidates(client(ip="2001:db8:ffff::9")) == ["replica2"]
    assert lb.candidates(client(ip="2001:db9::1")) == ["writes"]
    assert lb.candidates(client(ip="10.0.0.1")) == ["writes"]


def test_clauses_joined_by_and_must_all_match() -> None:
    lb = balancer(rule('database == "sales" AND user != "batch"', "reads"),
                  rule("DEFAULT", "writes"))
    assert lb.candidates(client(database="sales", user="alice")) == ["reads"]
    assert lb.candidates(client(database="sales", user="batch")) == ["writes"]
    assert lb.candidates(client(database="hr", user="alice")) == ["writes"]


def test_the_first_matching_rule_wins() -> None:
    lb = balancer(rule('user == "alice"', "replica2"),
                  rule('database == "sales"', "reads"),
                  rule("DEFAULT", "writes"))
    assert lb.candidates(client(user="alice", database="sales")) == ["replica2"]
    assert lb.candidates(client(user="bob", database="sales")) == ["reads"]


def test_default_is_the_fallback_wherever_it_is_written() -> None:
    lb = balancer(rule("DEFAULT", "writes"), rule('application_name == "reporting"', "reads"))
    assert lb.candidates(client(application_name="reporting")) == ["reads"]
    assert lb.candidates(client(application_name="psql")) == ["writes"]


def test_a_rule_never_offers_blocks_outside_its_distribution() -> None:
    """The caller's health fallback stays inside the rule: reporting never reaches writes."""
    for strategy in ("ROUND_ROBIN", "RANDOM", "LEAST_CONNECTIONS", "CONSISTENT_HASH"):
        lb = balancer(rule('application_name == "reporting"', "reads", "replica2"),
                      strategy=strategy)
        for port in range(50):
            ranked = lb.candidates(client(port=port, application_name="reporting"))
            assert sorted(ranked) == ["reads", "replica2"]


def test_each_rule_keeps_its_own_round_robin() -> None:
    lb = balancer(rule('user == "etl"', "reads", "replica2"), rule("DEFAULT", *BLOCKS))
    etl, app = client(user="etl"), client()
    sequence = [lb.candidates(who)[0] for who in (app, etl, app, etl, app, etl, app)]
    assert sequence == ["writes", "reads", "reads", "replica2", "replica2", "reads", "writes"]


def test_each_rule_keeps_its_own_weighted_state() -> None:
    """Reporting clients arriving in between do not disturb the DEFAULT 70/30 sequence."""
    rules = (rule('application_name == "reporting"', ("reads", 1), ("replica2", 1)),
             rule("DEFAULT", ("writes", 70), ("reads", 30)))
    alone = balancer(*rules, strategy="WEIGHTED_ROUND_ROBIN")
    expected = firsts(alone, client(), 1000)
    mixed = balancer(*rules, strategy="WEIGHTED_ROUND_ROBIN")
    chooser = random.Random(11)
    reporting, got = [], []
    for _ in range(1000):
        while chooser.random() < 0.5:
            reporting.append(mixed.candidates(client(application_name="reporting"))[0])
        got.append(mixed.candidates(client())[0])
    assert got == expected
    assert Counter(got) == {"writes": 700, "reads": 300}
    assert abs(reporting.count("reads") - reporting.count("replica2")) <= 1


def test_weights_are_ignored_by_round_robin() -> None:
    lb = balancer(rule("DEFAULT", ("writes", 9), ("reads", 1)))
    assert Counter(firsts(lb, client(), 100)) == {"writes": 50, "reads": 50}


def test_rules_restrict_random() -> None:
    lb = balancer(rule('user == "etl"', "reads", "replica2"), strategy="RANDOM")
    counts = Counter(firsts(lb, client(user="etl"), 1000))
    assert set(counts) == {"reads", "replica2"} and 400 <= counts["reads"] <= 600


def test_rules_restrict_least_connections() -> None:
    load = {"writes": 0, "reads": 7, "replica2": 3}
    lb = balancer(rule('user == "etl"', "reads", "replica2"), strategy="LEAST_CONNECTIONS",
                  load=load)
    assert lb.candidates(client(user="etl")) == ["replica2", "reads"]
    assert lb.candidates(client()) == ["writes", "replica2", "reads"]


def test_rules_restrict_consistent_hashing_and_keep_clients_sticky() -> None:
    lb = balancer(rule('user == "etl"', "reads", "replica2"), rule("DEFAULT", "writes"),
                  hashing=True)
    for ip in (f"10.0.{i}.1" for i in range(100)):
        first = lb.candidates(client(ip=ip, user="etl"))
        assert sorted(first) == ["reads", "replica2"]
        assert lb.candidates(client(ip=ip, port=1, user="etl")) == first
        assert lb.candidates(client(ip=ip)) == ["writes"]


def test_a_bad_condition_names_the_rule() -> None:
    with pytest.raises(BalancerConfigError) as caught:
        balancer(rule("DEFAULT", "writes"), rule('user = "x"', "reads"))
    assert caught.value.key == "servers.default.loadBalancer.loadBalancingRules[1].condition"
    assert "column" in caught.value.problem
