"""
Gateway configs with several server groups in one process: one gateway child
serves many scenarios (TLS variants, pool limits, two backends...), which keeps
the integration suite fast.
"""

from __future__ import annotations

from typing import Any

from tests.support.gateway import base_config


def add_group(config: dict[str, Any], group: str, blocks: dict[str, str], *,
              pool_size: int = 2, client: dict[str, Any] | None = None,
              pool: dict[str, Any] | None = None, **server: Any) -> dict[str, Any]:
    """
    Add server group C{group} balancing over C{blocks} {name: address} to a
    L{base_config} dict (in place; returned for chaining).  C{client} and
    C{pool} are merged into every block's entry; C{server} into the listener.
    """
    fresh = base_config(blocks, group=group, pool_size=pool_size, **server)
    for name in blocks:
        fresh["clients"][group][name].update(client or {})
        fresh["pools"][group][name].update(pool or {})
    for section in ("clients", "pools", "proxies", "servers"):
        config[section][group] = fresh[section][group]
    return config


def multi_config(groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """
    C{{group: {"blocks": {...}, **add_group kwargs}}} -> one config; the first
    group is named C{default} or C{loggers.default} is still provided.
    """
    config = base_config({"writes": "127.0.0.1:5432"})
    for section in ("clients", "pools", "proxies", "servers"):
        config[section].clear()
    for group, spec in groups.items():
        spec = dict(spec)
        add_group(config, group, spec.pop("blocks"), **spec)
    return config
