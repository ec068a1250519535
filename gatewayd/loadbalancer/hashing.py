# -*- test-case-name: tests.unit.test_loadbalancer_hash -*-
"""
Consistent hashing without shared state: weighted rendezvous hashing
(highest random weight) over murmur3.

GatewayD remembers "hash -> block" in its Raft log, so placement depends on
history and needs a cluster.  Here a client's ranking of blocks is a pure
function of (group, block names, weights, key): identical after a restart and
on every gateway instance, with nothing stored.

For a key and a block:
  1. C{k = murmur3_x64_128(utf8(key + group))[:64]}: GatewayD's own
     C{murmur3.Sum64(key + groupName)}, so log lines can carry the same number;
  2. C{h = murmur3_x64_128(k as 8 big-endian bytes + utf8(block))[:64]};
  3. equal weights: the score is C{h} (integers, exact everywhere);
     otherwise C{weight / -ln(u)} with C{u = ((h >> 11) + 0.5) / 2**53} in (0, 1),
     which chooses each block with probability C{weight / sum(weights)}.
Blocks are ranked by descending score (ties, practically impossible, by set
order).  The ranking of the remaining blocks is unchanged when one block is
removed, so "skip a down block" and "remove it from the config" agree, and
removing a block moves only the keys that were on it.

Why rendezvous rather than a ring of virtual nodes: a group has a handful of
blocks, so scoring each one (O(n), about a microsecond per block) costs less
than a ring's memory and gives exact weight proportions (a ring with 160 vnodes
per block is off by several percent and quantises weights); the full
fallback order comes for free from the same scores.
"""

from __future__ import annotations

import math
from typing import Sequence

import mmh3

from gatewayd.loadbalancer.client import ClientInfo, hash_key

_TWO_53 = float(1 << 53)


def key_hash(key: str, group: str) -> int:
    """GatewayD's C{murmur3.Sum64(key + group)}: the first 64 bits of murmur3 x64 128."""
    return mmh3.hash64((key + group).encode("utf-8"), signed=False)[0]


def block_hash(key_digest: int, block: str) -> int:
    """The 64-bit draw of one block for one key."""
    return mmh3.hash64(key_digest.to_bytes(8, "big") + block.encode("utf-8"), signed=False)[0]


def weighted_score(draw: int, weight: int) -> float:
    """Turn a uniform 64-bit draw into a weighted rendezvous score (larger wins)."""
    uniform = ((draw >> 11) + 0.5) / _TWO_53
    return weight / -math.log(uniform)


class Rendezvous:
    """
    Ranks one set of blocks for a client by rendezvous hashing of its key.

    @param weights: one positive weight per block, or None for equal weights.
    """

    def __init__(self, group: str, blocks: Sequence[str], weights: Sequence[int] | None,
                 use_source_ip: bool) -> None:
        self._group = group
        self._blocks = list(blocks)
        self._weights = list(weights) if weights is not None else None
        if self._weights is not None and len(set(self._weights)) <= 1:
            self._weights = None
        self._use_source_ip = use_source_ip

    def rank(self, client: ClientInfo) -> list[str]:
        digest = key_hash(hash_key(client, self._use_source_ip), self._group)
        scored: list[tuple[float, int, str]] = []
        for index, block in enumerate(self._blocks):
            draw = block_hash(digest, block)
            score = draw if self._weights is None else weighted_score(draw, self._weights[index])
            scored.append((-score, index, block))
        scored.sort()
        return [entry[2] for entry in scored]
