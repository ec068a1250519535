# -*- test-case-name: tests.unit.test_config_validate -*-
"""
Semantic validation of a built configuration: everything GatewayD checks in
C{ValidateGlobalConfig}, the rules it forgets (strategy names,
C{WEIGHTED_ROUND_ROBIN} without rules, pool sizes, TLS files, addresses,
rule conditions) and the cross-references of our own C{servers.<g>.proxies}.

Every problem becomes one L{ConfigError} and all are returned together.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterator

from gatewayd.config import schema as s
from gatewayd.config.addresses import address_problem
from gatewayd.config.durations import format_duration
from gatewayd.config.rules import ConditionError, parse_condition
from gatewayd.config.shape import (
    BLOCKS, DUR, FLOAT, GROUPS, INT, OBJECT, RECORDS, STR, STRINGS, Slot, child, did_you_mean,
    item, slots,
)
from gatewayd.errors import ConfigError

#: Integer minimums other than the default of 0, by (class, YAML key).
MIN_INT: dict[tuple[type, str], int] = {
    (s.Pool, "size"): 1,
    (s.Client, "receiveChunkSize"): 1,
    (s.Distribution, "weight"): 1,
    (s.Server, "maxStartupPacketSize"): 8,
    (s.Server, "maxMessageSize"): 5,
}
MIN_FLOAT: dict[tuple[type, str], float] = {(s.Client, "backoffMultiplier"): 1.0}

#: Durations that must be > 0: GatewayD quietly replaces 0 by a default for
#: these, which hides the mistake; every other duration may be 0 (no limit).
POSITIVE: frozenset[tuple[type, str]] = frozenset({
    (s.Metrics, "readHeaderTimeout"), (s.Metrics, "timeout"),
    (s.Client, "tcpKeepAlivePeriod"), (s.Client, "dialTimeout"), (s.Client, "backoff"),
    (s.Proxy, "healthCheckPeriod"),
    (s.Server, "tickInterval"), (s.Server, "handshakeTimeout"),
    (s.PluginsConfig, "metricsMergerPeriod"), (s.PluginsConfig, "healthCheckPeriod"),
    (s.PluginsConfig, "timeout"), (s.PluginsConfig, "startTimeout"),
    (s.PluginsConfig, "policyTimeout"),
})

_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)?$")
_ENV_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


class _Errors:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.items: list[ConfigError] = []

    def add(self, key: str, problem: str) -> None:
        self.items.append(ConfigError(self.path, key, problem))


def walk(obj: Any, where: str = "") -> Iterator[tuple[type, Slot, Any, str]]:
    """Every field of a config tree: C{(owner class, slot, value, key path)}."""
    for slot in slots(type(obj)):
        value = getattr(obj, slot.name)
        path = child(where, slot.key)
        yield type(obj), slot, value, path
        if value is None:
            continue
        if slot.kind == OBJECT:
            yield from walk(value, path)
        elif slot.kind == RECORDS:
            for i, record in enumerate(value):
                yield from walk(record, item(path, i))
        elif slot.kind == GROUPS:
            for name, record in value.items():
                yield from walk(record, child(path, name))
        elif slot.kind == BLOCKS:
            for group, blocks in value.items():
                for name, record in blocks.items():
                    yield from walk(record, child(child(path, group), name))


def _check_fields(obj: Any, errors: _Errors, skip: str | None = None) -> None:
    """Enums and numeric ranges, for every field of the tree."""
    for owner, slot, value, path in walk(obj):
        if value is None or (skip and (path == skip or path.startswith(skip + "."))):
            continue
        rule = (owner, slot.key)
        if slot.enum and slot.kind == STR and value not in slot.enum:
            errors.add(path, _enum_problem(value, slot.enum))
        elif slot.enum and slot.kind == STRINGS:
            for i, element in enumerate(value):
                if element not in slot.enum:
                    errors.add(item(path, i), _enum_problem(element, slot.enum))
        elif slot.kind == INT and value < MIN_INT.get(rule, 0):
            errors.add(path, f"must be >= {MIN_INT.get(rule, 0)} (got {value})")
        elif slot.kind == FLOAT and value < MIN_FLOAT.get(rule, 0.0):
            errors.add(path, f"must be >= {MIN_FLOAT.get(rule, 0.0):g} (got {value:g})")
        elif slot.kind == DUR and value < 0:
            errors.add(path, f"must not be negative (got {format_duration(value)})")
        elif slot.kind == DUR and value == 0 and rule in POSITIVE:
            errors.add(path, "must be greater than 0s")


def _enum_problem(value: str, allowed: tuple[str, ...]) -> str:
    return f"{value!r} is not one of: {', '.join(allowed)}{did_you_mean(value, allowed)}"


def _check_file(errors: _Errors, key: str, filename: str, why: str) -> None:
    if not filename:
        errors.add(key, f"required {why}")
    elif not os.path.isfile(filename):
        errors.add(key, f"file {filename!r} does not exist")


def _check_optional_file(errors: _Errors, key: str, filename: str) -> None:
    if filename and not os.path.isfile(filename):
        errors.add(key, f"file {filename!r} does not exist")


def validate_global(cfg: s.GlobalConfig, path: str | None) -> list[ConfigError]:
    """All problems of a global config (empty list when it is fine)."""
    errors = _Errors(path)
    _check_fields(cfg, errors, skip="raft")  # raft is accepted and ignored
    _check_groups(cfg, errors)
    for name, server in cfg.servers.items():
        _check_server(cfg, name, server, errors)
    _check_listeners(cfg, errors)
    for group, blocks in cfg.clients.items():
        for block, client in blocks.items():
            _check_client(f"clients.{group}.{block}", client, errors)
    for group, logger in cfg.loggers.items():
        where = f"loggers.{group}"
        if "file" in logger.output and not logger.file_name:
            errors.add(f"{where}.fileName", "required when output includes file")
        if "rsyslog" in logger.output:
            problem = address_problem(logger.rsyslog_network, logger.rsyslog_address, listen=False)
            if problem:
                errors.add(f"{where}.rsyslogAddress", problem)
    if "default" not in cfg.metrics:
        errors.add("metrics", "a 'default' group is required (only metrics.default is served; "
                   "set its enabled: false to turn metrics off)")
    for group, metrics in cfg.metrics.items():
        where = f"metrics.{group}"
        if group == "default" and metrics.enabled:
            problem = address_problem("tcp", metrics.address, listen=True)
            if problem:
                errors.add(f"{where}.address", problem)
        if not metrics.path.startswith("/"):
            errors.add(f"{where}.path", f"must start with '/' (got {metrics.path!r})")
        _check_pair(errors, where, "certFile", metrics.cert_file, "keyFile", metrics.key_file)
    _check_api(cfg.api, errors)
    return errors.items


def _check_pair(errors: _Errors, where: str, key_a: str, a: str, key_b: str, b: str) -> None:
    """Two files that go together (a certificate and its key)."""
    if a and not b:
        errors.add(f"{where}.{key_b}", f"required when {key_a} is set")
    if b and not a:
        errors.add(f"{where}.{key_a}", f"required when {key_b} is set")
    _check_optional_file(errors, f"{where}.{key_a}", a)
    _check_optional_file(errors, f"{where}.{key_b}", b)


def _check_groups(cfg: s.GlobalConfig, errors: _Errors) -> None:
    """clients, pools and proxies declare the same groups and blocks; servers use them."""
    objects = {"clients": cfg.clients, "pools": cfg.pools, "proxies": cfg.proxies}
    for name, groups in objects.items():
        for group, blocks in groups.items():
            if not blocks:
                errors.add(f"{name}.{group}", "group has no blocks")
                continue
            for other, other_groups in objects.items():
                if other == name:
                    continue
                if group not in other_groups:
                    errors.add(f"{name}.{group}", f"group has no matching {other}.{group}")
                    continue
                for block in blocks:
                    if block not in other_groups[group]:
                        errors.add(f"{name}.{group}.{block}",
                                   f"block has no matching {other}.{group}.{block}")
    reported = set()
    for name, groups in objects.items():
        for group in groups:
            if group not in cfg.servers and group not in reported:
                reported.add(group)
                errors.add(f"{name}.{group}",
                           f"no servers.{group} uses this group (declare the server or remove the group)")
    if not cfg.servers:
        errors.add("servers", "at least one server group is required")


def _check_server(cfg: s.GlobalConfig, name: str, server: s.Server, errors: _Errors) -> None:
    where = f"servers.{name}"
    blocks = cfg.proxies.get(name) or {}
    if not blocks:
        errors.add(where, f"needs at least one block: no proxies.{name} "
                   f"(declare clients.{name}.<block>, pools.{name}.<block>, proxies.{name}.<block>)")
    selected = list(blocks)
    if server.proxies is not None:
        selected = _check_selection(where, server.proxies, blocks, errors)
    if name not in cfg.loggers and "default" not in cfg.loggers:
        fallback = "" if name == "default" else " and no loggers.default to fall back on"
        errors.add(where, f"no loggers.{name}{fallback}")
    problem = address_problem(server.network, server.address, listen=True)
    if problem:
        errors.add(f"{where}.address", problem)
    if server.enable_tls:
        _check_file(errors, f"{where}.certFile", server.cert_file, "when enableTLS is true")
        _check_file(errors, f"{where}.keyFile", server.key_file, "when enableTLS is true")
    if server.require_tls and not server.enable_tls:
        errors.add(f"{where}.requireTLS", "needs enableTLS: true")
    _check_balancer(f"{where}.loadBalancer", server.load_balancer, blocks, selected, name, errors)


def _check_selection(where: str, names: list[str], blocks: dict, errors: _Errors) -> list[str]:
    """C{servers.<g>.proxies}: existing blocks, each once."""
    if not names:
        errors.add(f"{where}.proxies", "must name at least one block (omit it to use them all)")
    seen: set[str] = set()
    for i, block in enumerate(names):
        if block not in blocks:
            known = ", ".join(blocks) or "none"
            errors.add(item(f"{where}.proxies", i),
                       f"unknown block {block!r} (blocks: {known}){did_you_mean(block, blocks)}")
        elif block in seen:
            errors.add(item(f"{where}.proxies", i), f"duplicate block {block!r}")
        seen.add(block)
    return [b for b in names if b in blocks]


def _check_balancer(where: str, lb: s.LoadBalancer, blocks: dict, selected: list[str],
                    group: str, errors: _Errors) -> None:
    rules_key = f"{where}.loadBalancingRules"
    if lb.strategy == "WEIGHTED_ROUND_ROBIN" and not lb.load_balancing_rules:
        errors.add(rules_key, "WEIGHTED_ROUND_ROBIN needs at least one rule "
                   "(e.g. condition: DEFAULT with a distribution)")
    defaults = 0
    for i, rule in enumerate(lb.load_balancing_rules):
        key = item(rules_key, i)
        try:
            if parse_condition(rule.condition).is_default:
                defaults += 1
                if defaults > 1:
                    errors.add(f"{key}.condition", "a second DEFAULT rule can never be used")
        except ConditionError as e:
            errors.add(f"{key}.condition", f"bad condition: {e}")
        if not rule.distribution:
            errors.add(f"{key}.distribution", "must list at least one {proxyName, weight}")
        seen: set[str] = set()
        for j, share in enumerate(rule.distribution):
            name_key = f"{item(f'{key}.distribution', j)}.proxyName"
            block = share.proxy_name
            if not block:
                errors.add(name_key, "must name a block")
            elif block not in blocks:
                known = ", ".join(blocks) or "none"
                errors.add(name_key, f"unknown block {block!r} of proxies.{group} "
                           f"(blocks: {known}){did_you_mean(block, blocks)}")
            elif block not in selected:
                errors.add(name_key, f"block {block!r} is not in servers.{group}.proxies")
            elif block in seen:
                errors.add(name_key, f"block {block!r} appears twice in this distribution")
            seen.add(block)


def _check_listeners(cfg: s.GlobalConfig, errors: _Errors) -> None:
    """Two servers cannot listen on the same address."""
    owners: dict[tuple[str, str], str] = {}
    for name, server in cfg.servers.items():
        spot = (server.network, server.address)
        if server.address.endswith(":0"):
            continue
        if spot in owners:
            errors.add(f"servers.{name}.address",
                       f"{server.address!r} is already used by servers.{owners[spot]}")
        owners.setdefault(spot, name)


def _check_client(where: str, client: s.Client, errors: _Errors) -> None:
    problem = address_problem("unix" if client.network == "unix" else "tcp",
                              client.address, listen=False)
    if problem:
        errors.add(f"{where}.address", problem)
    if client.network == "unix" and client.sslmode in ("require", "verify-ca", "verify-full"):
        errors.add(f"{where}.sslmode", "TLS is not used over Unix sockets (set sslmode: disable)")
    if client.sslmode in ("verify-ca", "verify-full"):
        _check_file(errors, f"{where}.sslrootcert", client.sslrootcert,
                    f"when sslmode is {client.sslmode}")
    else:
        _check_optional_file(errors, f"{where}.sslrootcert", client.sslrootcert)
    _check_pair(errors, where, "sslcert", client.sslcert, "sslkey", client.sslkey)


def _check_api(api: s.API, errors: _Errors) -> None:
    if not api.enabled:
        return
    problem = address_problem("tcp", api.http_address, listen=True)
    if problem:
        errors.add("api.httpAddress", problem)
    problem = address_problem(api.grpc_network, api.grpc_address, listen=True)
    if problem:
        errors.add("api.grpcAddress", problem)
    if api.token and api.token_file:
        errors.add("api.tokenFile", "set token or tokenFile, not both")
    _check_optional_file(errors, "api.tokenFile", api.token_file)


def validate_plugins(cfg: s.PluginsConfig, path: str | None) -> list[ConfigError]:
    """All problems of a plugins config (empty list when it is fine)."""
    errors = _Errors(path)
    _check_fields(cfg, errors)
    if cfg.action_redis.enabled:
        problem = address_problem("tcp", cfg.action_redis.address, listen=False)
        if problem:
            errors.add("actionRedis.address", problem)
    names: dict[str, int] = {}
    for i, policy in enumerate(cfg.policies):
        where = item("policies", i)
        if not policy.name:
            errors.add(f"{where}.name", "must not be empty")
        elif policy.name in names:
            errors.add(f"{where}.name", f"duplicate policy name {policy.name!r} "
                       f"(also policies[{names[policy.name]}])")
        names.setdefault(policy.name, i)
        if not policy.policy.strip():
            errors.add(f"{where}.policy", "must not be empty")
    plugins: dict[str, int] = {}
    for i, plugin in enumerate(cfg.plugins):
        where = item("plugins", i)
        if not plugin.name:
            errors.add(f"{where}.name", "must not be empty")
        elif plugin.name in plugins:
            errors.add(f"{where}.name", f"duplicate plugin name {plugin.name!r} "
                       f"(also plugins[{plugins[plugin.name]}])")
        plugins.setdefault(plugin.name, i)
        _check_plugin(where, plugin, errors)
    return errors.items


def _check_plugin(where: str, plugin: s.PluginEntry, errors: _Errors) -> None:
    if plugin.local_path and plugin.module:
        errors.add(where, "set either localPath (out-of-process plugin) or module "
                   "(in-process plugin), not both")
    elif not plugin.local_path and not plugin.module:
        errors.add(where, "needs localPath and checksum (out-of-process plugin) "
                   "or module (in-process plugin)")
    elif plugin.local_path:
        if not plugin.checksum:
            errors.add(f"{where}.checksum",
                       "required with localPath (hex SHA-256 of the executable)")
    if plugin.checksum and not _SHA256.match(plugin.checksum):
        errors.add(f"{where}.checksum", "must be a SHA-256 digest: 64 hex characters")
    if plugin.module and not _MODULE.match(plugin.module):
        errors.add(f"{where}.module",
                   f"expected an import path 'package.module:Class', got {plugin.module!r}")
    for j, entry in enumerate(plugin.env):
        if not _ENV_ENTRY.match(entry):
            errors.add(item(f"{where}.env", j), f"expected NAME=VALUE, got {entry!r}")
