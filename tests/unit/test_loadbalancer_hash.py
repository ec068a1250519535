"""
Tests for consistent hashing (L{gatewayd.loadbalancer.hashing}): stickiness,
placement as a pure function of config and key, health fallback, minimal
movement when blocks come and go, weights and key spelling.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.config.schema import (
    LB_STRATEGIES, ConsistentHash, Distribution, LoadBalancer, LoadBalancingRule,
)
from gatewayd.interfaces import ILoadBalancer
from gatewayd.loadbalancer import ClientInfo, build_balancer
from gatewayd.loadbalancer.client import canonical_ip, hash_key
from gatewayd.loadbalancer.hashing import key_hash

BLOCKS = ["writes", "reads", "replica2"]


def client(ip: str, port: int = 40000) -> ClientInfo:
    return ClientInfo(source_ip=ip, source_port=port, database="app", user="app",
                      application_name="")


def hashed(blocks: list[str] = BLOCKS, *, use_source_ip: bool = True, group: str = "default",
           strategy: str = "ROUND_ROBIN", rules: list[LoadBalancingRule] | None = None,
           ) -> ILoadBalancer:
    config = LoadBalancer(strategy=strategy, consistent_hash=ConsistentHash(use_source_ip),
                          load_balancing_rules=rules or [])
    return build_balancer(group, blocks, config, load=lambda block: 0)


def default_rule(*distribution: tuple[str, int]) -> LoadBalancingRule:
    return LoadBalancingRule(condition="DEFAULT", distribution=[
        Distribution(proxy_name=name, weight=weight) for name, weight in distribution])


IPS = [f"10.{i // 250}.{i % 250}.{(i * 7) % 250 + 1}" for i in range(1000)]


def test_key_hash_is_gatewayds_murmur3_sum64() -> None:
    """Go's murmur3.Sum64("hello") (spaolacci/murmur3 test vector) is 0xcbd8a7b341bd9b02."""
    assert key_hash("hel", "lo") == 0xCBD8A7B341BD9B02


def test_same_ip_always_gets_the_same_block() -> None:
    balancer = hashed()
    first = balancer.candidates(client("127.0.0.1"))
    for port in range(1000, 2000):
        assert balancer.candidates(client("127.0.0.1", port)) == first


def test_two_ips_are_each_stable_and_pinned() -> None:
    """
    Pinned placements: the scheme is a compatibility contract.  Changing it
    moves every client at the next rolling upgrade, so it must not change by
    accident.
    """
    balancer = hashed()
    for _ in range(100):
        assert balancer.candidates(client("127.0.0.1")) == ["replica2", "reads", "writes"]
        assert balancer.candidates(client("127.0.0.2")) == ["reads", "replica2", "writes"]
    assert balancer.candidates(client("2001:db8::1"))[0] == "replica2"
    assert balancer.candidates(client("192.168.1.20"))[0] == "reads"


def test_a_restarted_or_other_instance_places_identically() -> None:
    one, other = hashed(), hashed()
    # Different traffic histories on the two instances change nothing.
    for ip in IPS[:300]:
        one.candidates(client(ip))
    assert [one.candidates(client(ip)) for ip in IPS] == \
        [other.candidates(client(ip)) for ip in reversed(IPS)][::-1]


@pytest.mark.parametrize("strategy", [s for s in LB_STRATEGIES if s != "WEIGHTED_ROUND_ROBIN"])
def test_the_hash_replaces_the_base_strategys_pick(strategy: str) -> None:
    """Unweighted base strategies only contribute the candidate set."""
    reference = hashed()
    balancer = hashed(strategy=strategy)
    assert balancer.consistent_hash
    for ip in IPS[:200]:
        assert balancer.candidates(client(ip)) == reference.candidates(client(ip))


def test_consistent_hash_strategy_without_the_block_hashes_the_source_ip() -> None:
    balancer = build_balancer("default", BLOCKS, LoadBalancer(strategy="CONSISTENT_HASH"))
    reference = hashed()
    for ip in IPS[:200]:
        assert balancer.candidates(client(ip, 1)) == reference.candidates(client(ip, 2))


def test_the_group_name_is_part_of_the_key() -> None:
    ours, theirs = hashed(group="default"), hashed(group="tenant2")
    differ = sum(ours.candidates(client(ip))[0] != theirs.candidates(client(ip))[0]
                 for ip in IPS)
    assert 500 <= differ <= 833  # independent placements differ 2/3 of the time


def test_keys_spread_evenly() -> None:
    counts = Counter(hashed().candidates(client(ip))[0] for ip in IPS)
    for block in BLOCKS:
        assert 280 <= counts[block] <= 387  # 333 expected


def test_without_use_source_ip_ports_spread_and_stick() -> None:
    balancer = hashed(BLOCKS[:2], use_source_ip=False)
    placement = {port: balancer.candidates(client("10.0.0.9", port))[0]
                 for port in range(30000, 31000)}
    counts = Counter(placement.values())
    assert 400 <= counts["writes"] <= 600
    for port, block in placement.items():
        assert balancer.candidates(client("10.0.0.9", port))[0] == block


def test_a_down_block_yields_the_next_in_the_keys_ranking() -> None:
    """
    Skipping the first candidate (caller: block down) gives exactly the placement
    of a config without that block, and keys elsewhere do not move.
    """
    full = hashed()
    for gone in BLOCKS:
        without = hashed([block for block in BLOCKS if block != gone])
        moved_to = Counter()
        for ip in IPS:
            ranked = full.candidates(client(ip))
            alive = [block for block in ranked if block != gone]
            assert without.candidates(client(ip)) == alive
            if ranked[0] == gone:
                moved_to[alive[0]] += 1
        # The gone block's keys spread over all the others, not onto one.
        assert len(moved_to) == 2 and min(moved_to.values()) > 100


def test_removing_a_block_moves_only_its_keys() -> None:
    four = ["b0", "b1", "b2", "b3"]
    before = hashed(four)
    after = hashed(four[:2] + four[3:])
    moved = 0
    for ip in IPS:
        old, new = before.candidates(client(ip))[0], after.candidates(client(ip))[0]
        if old != "b2":
            assert new == old
        else:
            moved += 1
    assert 180 <= moved <= 320  # about a quarter of 1000


def test_adding_a_block_moves_keys_only_onto_it() -> None:
    before, after = hashed(BLOCKS), hashed(BLOCKS + ["replica3"])
    moved = 0
    for ip in IPS:
        old, new = before.candidates(client(ip))[0], after.candidates(client(ip))[0]
        if new != old:
            assert new == "replica3"
            moved += 1
    assert 180 <= moved <= 320


@settings(max_examples=50, deadline=None)
@given(blocks=st.lists(st.text(min_size=1, max_size=8), min_size=2, max_size=6, unique=True),
       ip=st.ip_addresses().map(str), data=st.data())
def test_ranking_is_stable_under_removal(blocks: list[str], ip: str, data: st.DataObject,
                                         ) -> None:
    gone = data.draw(st.sampled_from(blocks))
    ranked = hashed(blocks).candidates(client(ip))
    assert sorted(ranked) == sorted(blocks)
    rest = [block for block in blocks if block != gone]
    assert hashed(rest).candidates(client(ip)) == [block for block in ranked if block != gone]


# -- weights and rules ---------------------------------------------------------

def test_weighted_rules_weight_the_hash() -> None:
    balancer = hashed(["writes", "reads"], strategy="WEIGHTED_ROUND_ROBIN",
                      rules=[default_rule(("writes", 70), ("reads", 30))])
    ips = [f"172.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(20000)]
    counts = Counter(balancer.candidates(client(ip))[0] for ip in ips)
    assert 0.68 <= counts["writes"] / 20000 <= 0.72


def test_consistent_hash_strategy_honours_weights_too() -> None:
    balancer = build_balancer("default", ["writes", "reads"], LoadBalancer(
        strategy="CONSISTENT_HASH", load_balancing_rules=[default_rule(("writes", 9),
                                                                       ("reads", 1))]))
    counts = Counter(balancer.candidates(client(ip))[0] for ip in IPS)
    assert 860 <= counts["writes"] <= 940


def test_unweighted_base_strategies_ignore_weights() -> None:
    balancer = hashed(["writes", "reads"], rules=[default_rule(("writes", 9), ("reads", 1))])
    counts = Counter(balancer.candidates(client(ip))[0] for ip in IPS)
    assert 400 <= counts["writes"] <= 600


def test_a_rule_restricts_the_hash_to_its_blocks_without_moving_the_rest() -> None:
    full = hashed()
    restricted = hashed(rules=[default_rule(("reads", 1), ("replica2", 1))])
    for ip in IPS:
        ranked = restricted.candidates(client(ip))
        assert sorted(ranked) == ["reads", "replica2"]
        assert ranked == [block for block in full.candidates(client(ip)) if block != "writes"]


def test_raising_a_weight_moves_keys_only_onto_that_block() -> None:
    before = hashed(["writes", "reads"], strategy="WEIGHTED_ROUND_ROBIN",
                    rules=[default_rule(("writes", 1), ("reads", 2))])
    after = hashed(["writes", "reads"], strategy="WEIGHTED_ROUND_ROBIN",
                   rules=[default_rule(("writes", 1), ("reads", 3))])
    for ip in IPS:
        old, new = before.candidates(client(ip))[0], after.candidates(client(ip))[0]
        assert new == old or new == "reads"


# -- key spelling ------------------------------------------------------------------

def test_key_spelling_follows_gatewayd() -> None:
    assert hash_key(client("10.0.0.1", 5432), use_source_ip=True) == "10.0.0.1"
    assert hash_key(client("10.0.0.1", 5432), use_source_ip=False) == "10.0.0.1:5432"
    assert hash_key(client("::1", 5432), use_source_ip=False) == "[::1]:5432"


@pytest.mark.parametrize("spelling, canonical", [
    ("::ffff:10.0.0.1", "10.0.0.1"),
    ("2001:DB8:0:0::1", "2001:db8::1"),
    ("10.0.0.1", "10.0.0.1"),
    ("", ""),
    ("/tmp/.s.PGSQL.15432", "/tmp/.s.PGSQL.15432"),
])
def test_ip_spellings_of_one_client_hash_alike(spelling: str, canonical: str) -> None:
    assert canonical_ip(spelling) == canonical
    balancer = hashed()
    assert balancer.candidates(client(spelling)) == balancer.candidates(client(canonical))
