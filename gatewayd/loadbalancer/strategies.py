# -*- test-case-name: tests.unit.test_loadbalancer -*-
"""
The stateful block-ranking strategies, each over one fixed, ordered set of
blocks (all blocks of a group, or the distribution of one rule).

A ranker's C{rank(client)} returns every block of its set, the choice first and
the fallbacks after it, and advances its state exactly once.  The balancer keeps
one ranker per rule, so rules never disturb each other's rotation.
"""

from __future__ import annotations

import random
from typing import Callable, Protocol, Sequence

from gatewayd.loadbalancer.client import ClientInfo


class Ranker(Protocol):
    """Ranks the blocks of one set for a new client."""

    def rank(self, client: ClientInfo) -> list[str]:
        """@return: every block of the set, best first."""


class RoundRobin:
    """
    Plain rotation in set order; the first client gets the first block.

    Fallbacks are the blocks that follow in the rotation, so a down block's
    clients spread over the next ones rather than piling onto one.
    """

    def __init__(self, blocks: Sequence[str]) -> None:
        self._blocks = list(blocks)
        self._next = 0

    def rank(self, client: ClientInfo) -> list[str]:
        start = self._next
        self._next = (start + 1) % len(self._blocks)
        return self._blocks[start:] + self._blocks[:start]


class Random:
    """
    A uniformly random permutation of the set: the first entry is a uniform
    pick and the fallbacks are uniform among the rest.
    """

    def __init__(self, blocks: Sequence[str], rng: random.Random) -> None:
        self._blocks = list(blocks)
        self._rng = rng

    def rank(self, client: ClientInfo) -> list[str]:
        return self._rng.sample(self._blocks, len(self._blocks))


class SmoothWeighted:
    """
    nginx's smooth weighted round robin: every pick, each block's current
    weight grows by its weight; the largest (ties: earlier in distribution
    order) is chosen and loses the total.  Over C{sum(weights)} picks each block
    is chosen exactly C{weight} times, interleaved as evenly as possible.

    Fallbacks are the other blocks by descending current weight after the
    update: the ones that are "owed" the most picks come first.
    """

    def __init__(self, blocks: Sequence[str], weights: Sequence[int]) -> None:
        self._blocks = list(blocks)
        self._weights = list(weights)
        self._total = sum(self._weights)
        self._current = [0] * len(self._blocks)

    def rank(self, client: ClientInfo) -> list[str]:
        current = self._current
        best = 0
        for index, weight in enumerate(self._weights):
            current[index] += weight
            if current[index] > current[best]:
                best = index
        current[best] -= self._total
        rest = sorted((i for i in range(len(current)) if i != best),
                      key=lambda i: (-current[i], i))
        return [self._blocks[best]] + [self._blocks[i] for i in rest]


class Recency:
    """
    When each block was last chosen, shared by all least-connections rankers of
    a group (a block's recency does not depend on which rule picked it).
    """

    def __init__(self) -> None:
        self._clock = 0
        self._last: dict[str, int] = {}

    def last(self, block: str) -> int:
        """The pick number of the block's latest choice, -1 if never chosen."""
        return self._last.get(block, -1)

    def touch(self, block: str) -> None:
        self._clock += 1
        self._last[block] = self._clock


class LeastConnections:
    """
    The block with the fewest busy connections first; ties go to the block
    chosen least recently (never-chosen blocks in set order).

    Why not ties by set order: C{load} is a snapshot taken before the new
    client's connection is counted, and short-lived clients are often gone
    before the next one arrives.  Under both conditions every block reads 0
    and a set-order tie-break would send all traffic to the first block; the
    least-recently-chosen tie-break degrades to round robin instead.
    """

    def __init__(self, blocks: Sequence[str], load: Callable[[str], int],
                 recency: Recency) -> None:
        self._blocks = list(blocks)
        self._load = load
        self._recency = recency

    def rank(self, client: ClientInfo) -> list[str]:
        last = self._recency.last
        keyed = sorted((self._load(block), last(block), index, block)
                       for index, block in enumerate(self._blocks))
        ranked = [entry[3] for entry in keyed]
        self._recency.touch(ranked[0])
        return ranked
