"""Validation of the global and plugins files (gatewayd.config.validate, through load())."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from gatewayd.config import load
from gatewayd.config.addresses import address_problem, split_host_port
from gatewayd.errors import ConfigErrors

F = "<dir>/gatewayd.yaml"
P = "<dir>/gatewayd_plugins.yaml"
SHA = "a" * 64


def base() -> dict[str, Any]:
    """A valid multi-pool configuration: group default, blocks writes and reads."""
    return {
        "loggers": {"default": {"level": "info"}},
        "metrics": {"default": {"address": "127.0.0.1:0"}},
        "clients": {"default": {"writes": {"address": "127.0.0.1:5432"},
                                "reads": {"address": "127.0.0.1:5433"}}},
        "pools": {"default": {"writes": {"size": 2}, "reads": {"size": 2}}},
        "proxies": {"default": {"writes": {}, "reads": {}}},
        "servers": {"default": {
            "address": "127.0.0.1:15432",
            "loadBalancer": {
                "strategy": "WEIGHTED_ROUND_ROBIN",
                "loadBalancingRules": [{"condition": "DEFAULT", "distribution": [
                    {"proxyName": "writes", "weight": 3}, {"proxyName": "reads", "weight": 1}]}],
            }}},
        "api": {"httpAddress": "127.0.0.1:0", "grpcAddress": "127.0.0.1:0"},
    }


def run(tmp_path: Path, data: dict[str, Any], plugins: dict[str, Any] | None = None) -> list[str]:
    """Load; the error lines ([] when valid), the temporary directory shown as '<dir>'."""
    glob = tmp_path / "gatewayd.yaml"
    glob.write_text(yaml.safe_dump(data, sort_keys=False))
    plug = tmp_path / "gatewayd_plugins.yaml"
    plug.write_text(yaml.safe_dump(plugins or {}, sort_keys=False))
    try:
        load(str(glob), str(plug), env={})
    except ConfigErrors as e:
        return [str(err).replace(str(tmp_path), "<dir>") for err in e.errors]
    return []


def mutated(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    data = copy.deepcopy(base())
    change(data)
    return data


def server(data: dict[str, Any]) -> dict[str, Any]:
    return data["servers"]["default"]


def rules(data: dict[str, Any]) -> list[dict[str, Any]]:
    return server(data)["loadBalancer"]["loadBalancingRules"]


def test_the_base_configuration_is_valid(tmp_path: Path) -> None:
    assert run(tmp_path, base()) == []


RULES = "servers.default.loadBalancer.loadBalancingRules"

MULTI_POOL_CASES: list[tuple[str, Callable[[dict[str, Any]], None], list[str]]] = [
    ("block in pools without clients",
     lambda d: d["pools"]["default"].update(replica={}),
     [f"{F}: pools.default.replica: block has no matching clients.default.replica",
      f"{F}: pools.default.replica: block has no matching proxies.default.replica"]),
    ("block in clients without pools and proxies",
     lambda d: d["clients"]["default"].update(replica={"address": "127.0.0.1:5434"}),
     [f"{F}: clients.default.replica: block has no matching pools.default.replica",
      f"{F}: clients.default.replica: block has no matching proxies.default.replica"]),
    ("block in proxies only",
     lambda d: d["proxies"]["default"].update(replica={}),
     [f"{F}: proxies.default.replica: block has no matching clients.default.replica",
      f"{F}: proxies.default.replica: block has no matching pools.default.replica"]),
    ("group in clients only",
     lambda d: d["clients"].update(tenant={"writes": {"address": "127.0.0.1:5432"}}),
     [f"{F}: clients.tenant: group has no matching pools.tenant",
      f"{F}: clients.tenant: group has no matching proxies.tenant",
      f"{F}: clients.tenant: no servers.tenant uses this group "
      "(declare the server or remove the group)"]),
    ("group with no blocks",
     lambda d: [d[o].update(tenant={}) for o in ("clients", "pools", "proxies")]
     and d["servers"].update(tenant={"address": "127.0.0.1:15433"}),
     [f"{F}: clients.tenant: group has no blocks",
      f"{F}: pools.tenant: group has no blocks",
      f"{F}: proxies.tenant: group has no blocks",
      f"{F}: servers.tenant: needs at least one block: no proxies.tenant (declare "
      "clients.tenant.<block>, pools.tenant.<block>, proxies.tenant.<block>)"]),
    ("server group with no blocks at all",
     lambda d: d["servers"].update(tenant={"address": "127.0.0.1:15433"}),
     [f"{F}: servers.tenant: needs at least one block: no proxies.tenant (declare "
      "clients.tenant.<block>, pools.tenant.<block>, proxies.tenant.<block>)"]),
    ("no server at all",
     lambda d: d.update(servers={}),
     [f"{F}: clients.default: no servers.default uses this group "
      "(declare the server or remove the group)",
      f"{F}: servers: at least one server group is required"]),
    ("proxies list names an unknown block",
     lambda d: server(d).update(proxies=["writes", "raeds"]),
     [f"{F}: servers.default.proxies[1]: unknown block 'raeds' (blocks: writes, reads) "
      "(did you mean 'reads'?)",
      f"{F}: {RULES}[0].distribution[1].proxyName: block 'reads' is not in servers.default.proxies"]),
    ("proxies list repeats a block",
     lambda d: server(d).update(proxies=["writes", "reads", "writes"]),
     [f"{F}: servers.default.proxies[2]: duplicate block 'writes'"]),
    ("proxies list empty",
     lambda d: server(d).update(proxies=[]),
     [f"{F}: servers.default.proxies: must name at least one block (omit it to use them all)",
      f"{F}: {RULES}[0].distribution[0].proxyName: block 'writes' is not in servers.default.proxies",
      f"{F}: {RULES}[0].distribution[1].proxyName: block 'reads' is not in servers.default.proxies"]),
    ("rule names an unknown block",
     lambda d: rules(d)[0]["distribution"][1].update(proxyName="replica"),
     [f"{F}: {RULES}[0].distribution[1].proxyName: unknown block 'replica' of proxies.default "
      "(blocks: writes, reads)"]),
    ("rule repeats a block",
     lambda d: rules(d)[0]["distribution"].append({"proxyName": "writes", "weight": 1}),
     [f"{F}: {RULES}[0].distribution[2].proxyName: block 'writes' appears twice "
      "in this distribution"]),
    ("rule with an empty proxy name",
     lambda d: rules(d)[0]["distribution"][0].update(proxyName=""),
     [f"{F}: {RULES}[0].distribution[0].proxyName: must name a block"]),
    ("weight zero",
     lambda d: rules(d)[0]["distribution"][0].update(weight=0),
     [f"{F}: {RULES}[0].distribution[0].weight: must be >= 1 (got 0)"]),
    ("negative weight",
     lambda d: rules(d)[0]["distribution"][1].update(weight=-5),
     [f"{F}: {RULES}[0].distribution[1].weight: must be >= 1 (got -5)"]),
    ("fractional weight",
     lambda d: rules(d)[0]["distribution"][1].update(weight=0.5),
     [f"{F}: {RULES}[0].distribution[1].weight: expected an integer, got number 0.5"]),
    ("unknown strategy",
     lambda d: server(d)["loadBalancer"].update(strategy="round_robin"),
     [f"{F}: servers.default.loadBalancer.strategy: 'round_robin' is not one of: ROUND_ROBIN, "
      "RANDOM, WEIGHTED_ROUND_ROBIN, CONSISTENT_HASH, LEAST_CONNECTIONS "
      "(did you mean 'ROUND_ROBIN'?)"]),
    ("weighted round robin without rules",
     lambda d: server(d)["loadBalancer"].update(loadBalancingRules=[]),
     [f"{F}: {RULES}: WEIGHTED_ROUND_ROBIN needs at least one rule "
      "(e.g. condition: DEFAULT with a distribution)"]),
    ("rule with an empty distribution",
     lambda d: rules(d)[0].update(distribution=[]),
     [f"{F}: {RULES}[0].distribution: must list at least one {{proxyName, weight}}"]),
    ("bad rule condition",
     lambda d: rules(d).insert(0, {"condition": 'user = "x"',
                                   "distribution": [{"proxyName": "reads"}]}),
     [f"{F}: {RULES}[0].condition: bad condition: unknown operator '=' at column 6 "
      "(use ==, !=, in or ~)"]),
    ("empty rule condition",
     lambda d: rules(d)[0].update(condition=""),
     [f"{F}: {RULES}[0].condition: bad condition: empty condition "
      "(use DEFAULT to match every client)"]),
    ("two DEFAULT rules",
     lambda d: rules(d).append({"condition": "default", "distribution": [{"proxyName": "reads"}]}),
     [f"{F}: {RULES}[1].condition: a second DEFAULT rule can never be used"]),
]


@pytest.mark.parametrize("name, change, expected", MULTI_POOL_CASES,
                         ids=[case[0] for case in MULTI_POOL_CASES])
def test_invalid_multi_pool_configs(tmp_path: Path, name: str,
                                    change: Callable[[dict[str, Any]], None],
                                    expected: list[str]) -> None:
    assert run(tmp_path, mutated(change)) == expected


def test_conditional_rules_and_a_selected_subset_are_fine(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        server(d)["proxies"] = ["reads", "writes"]
        rules(d).insert(0, {"condition": 'application_name in ("report", "bi") AND '
                                         "source_ip in 10.0.0.0/8",
                            "distribution": [{"proxyName": "reads", "weight": 1}]})
    assert run(tmp_path, mutated(change)) == []


def test_rules_under_other_strategies_are_checked_too(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        server(d)["loadBalancer"]["strategy"] = "ROUND_ROBIN"
        rules(d)[0]["distribution"][0]["proxyName"] = "nope"
    assert run(tmp_path, mutated(change)) == [
        f"{F}: {RULES}[0].distribution[0].proxyName: unknown block 'nope' of proxies.default "
        "(blocks: writes, reads)"]


def test_other_strategies_need_no_rules(tmp_path: Path) -> None:
    for strategy in ("ROUND_ROBIN", "RANDOM", "CONSISTENT_HASH", "LEAST_CONNECTIONS"):
        data = mutated(lambda d: server(d)["loadBalancer"].update(
            strategy=strategy, loadBalancingRules=[]))
        assert run(tmp_path, data) == [], strategy


def test_loggers_fall_back_to_default_but_one_must_exist(tmp_path: Path) -> None:
    data = mutated(lambda d: d.update(loggers={"other": {}}))
    assert run(tmp_path, data) == [f"{F}: servers.default: no loggers.default"]

    def tenant(d: dict[str, Any]) -> None:
        for obj in ("clients", "pools", "proxies"):
            d[obj]["tenant"] = copy.deepcopy(d[obj]["default"])
        d["servers"]["tenant"] = {"address": "127.0.0.1:15433"}
        d["loggers"] = {"default": {}}
    assert run(tmp_path, mutated(tenant)) == []  # tenant falls back on loggers.default
    data = mutated(tenant)
    data["loggers"] = {"default_": {}}
    assert run(tmp_path, data) == [
        f"{F}: servers.default: no loggers.default",
        f"{F}: servers.tenant: no loggers.tenant and no loggers.default to fall back on"]


def test_metrics_default_is_required(tmp_path: Path) -> None:
    data = mutated(lambda d: d.update(metrics={"tenant": {"address": "127.0.0.1:0"}}))
    assert run(tmp_path, data) == [
        f"{F}: metrics: a 'default' group is required (only metrics.default is served; "
        "set its enabled: false to turn metrics off)"]


NUMBER_CASES = [
    ("pools", lambda d: d["pools"]["default"]["writes"].update(size=0),
     [f"{F}: pools.default.writes.size: must be >= 1 (got 0)"]),
    ("pool size one is allowed", lambda d: d["pools"]["default"]["writes"].update(size=1), []),
    ("negative pool size", lambda d: d["pools"]["default"]["reads"].update(size=-3),
     [f"{F}: pools.default.reads.size: must be >= 1 (got -3)"]),
    ("retries", lambda d: d["clients"]["default"]["writes"].update(retries=-1),
     [f"{F}: clients.default.writes.retries: must be >= 0 (got -1)"]),
    ("retries zero is fine", lambda d: d["clients"]["default"]["writes"].update(retries=0), []),
    ("backoffMultiplier", lambda d: d["clients"]["default"]["writes"].update(backoffMultiplier=0.5),
     [f"{F}: clients.default.writes.backoffMultiplier: must be >= 1 (got 0.5)"]),
    ("receiveChunkSize", lambda d: d["clients"]["default"]["writes"].update(receiveChunkSize=0),
     [f"{F}: clients.default.writes.receiveChunkSize: must be >= 1 (got 0)"]),
    ("negative duration", lambda d: d["clients"]["default"]["writes"].update(receiveTimeout="-1s"),
     [f"{F}: clients.default.writes.receiveTimeout: must not be negative (got -1s)"]),
    ("zero dial timeout", lambda d: d["clients"]["default"]["writes"].update(dialTimeout="0s"),
     [f"{F}: clients.default.writes.dialTimeout: must be greater than 0s"]),
    ("zero deadlines are fine", lambda d: d["clients"]["default"]["writes"].update(
        receiveDeadline=0, sendDeadline="0s", receiveTimeout="0ms"), []),
    ("zero health check", lambda d: d["proxies"]["default"]["reads"].update(healthCheckPeriod=0),
     [f"{F}: proxies.default.reads.healthCheckPeriod: must be greater than 0s"]),
    ("zero tick interval", lambda d: server(d).update(tickInterval="0s"),
     [f"{F}: servers.default.tickInterval: must be greater than 0s"]),
    ("startup packet", lambda d: server(d).update(maxStartupPacketSize=4),
     [f"{F}: servers.default.maxStartupPacketSize: must be >= 8 (got 4)"]),
    ("log sizes", lambda d: d["loggers"]["default"].update(maxSize=-1),
     [f"{F}: loggers.default.maxSize: must be >= 0 (got -1)"]),
    ("wait timeout zero is fine", lambda d: d["pools"]["default"]["writes"].update(waitTimeout=0), []),
]


@pytest.mark.parametrize("name, change, expected", NUMBER_CASES, ids=[c[0] for c in NUMBER_CASES])
def test_numbers(tmp_path: Path, name: str, change: Callable, expected: list[str]) -> None:
    assert run(tmp_path, mutated(change)) == expected


ENUM_CASES = [
    (lambda d: d["loggers"]["default"].update(level="verbose"),
     f"{F}: loggers.default.level: 'verbose' is not one of: trace, debug, info, warn, error, "
     "fatal, panic, disabled"),
    (lambda d: d["loggers"]["default"].update(output=["console", "File"]),
     f"{F}: loggers.default.output[1]: 'File' is not one of: console, stdout, stderr, file, "
     "syslog, rsyslog (did you mean 'file'?)"),
    (lambda d: d["clients"]["default"]["writes"].update(network="udp"),
     f"{F}: clients.default.writes.network: 'udp' is not one of: tcp, tcp4, tcp6, unix"),
    (lambda d: d["clients"]["default"]["writes"].update(sslmode="verify_full"),
     f"{F}: clients.default.writes.sslmode: 'verify_full' is not one of: disable, allow, prefer, "
     "require, verify-ca, verify-full (did you mean 'verify-full'?)"),
    (lambda d: server(d).update(tlsMinVersion="1.1"),
     f"{F}: servers.default.tlsMinVersion: '1.1' is not one of: 1.2, 1.3"),
    (lambda d: server(d).update(network="udp"),
     f"{F}: servers.default.network: 'udp' is not one of: tcp, unix"),
    (lambda d: d["api"].update(grpcNetwork="http"),
     f"{F}: api.grpcNetwork: 'http' is not one of: tcp, unix"),
]


@pytest.mark.parametrize("change, expected", ENUM_CASES)
def test_enums(tmp_path: Path, change: Callable, expected: str) -> None:
    assert run(tmp_path, mutated(change)) == [expected]


ADDRESS_CASES = [
    (lambda d: d["clients"]["default"]["writes"].update(address="localhost"),
     f"{F}: clients.default.writes.address: expected host:port, got 'localhost'"),
    (lambda d: d["clients"]["default"]["writes"].update(address=":5432"),
     f"{F}: clients.default.writes.address: a host is required, got ':5432'"),
    (lambda d: d["clients"]["default"]["writes"].update(address="db:0"),
     f"{F}: clients.default.writes.address: port 0 cannot be dialled, got 'db:0'"),
    (lambda d: d["clients"]["default"]["writes"].update(address="db:70000"),
     f"{F}: clients.default.writes.address: bad port in 'db:70000' (expected 0-65535)"),
    (lambda d: d["clients"]["default"]["writes"].update(address="db:pg"),
     f"{F}: clients.default.writes.address: bad port in 'db:pg' (expected 0-65535)"),
    (lambda d: d["clients"]["default"]["writes"].update(address="::1:5432"),
     f"{F}: clients.default.writes.address: IPv6 addresses need brackets, e.g. '[::1]:5432', "
     "got '::1:5432'"),
    (lambda d: d["clients"]["default"]["writes"].update(address="[zz::1]:5432"),
     f"{F}: clients.default.writes.address: bad IPv6 address in '[zz::1]:5432'"),
    (lambda d: d["clients"]["default"]["writes"].update(address="bad host:5432"),
     f"{F}: clients.default.writes.address: bad host name in 'bad host:5432'"),
    (lambda d: d["clients"]["default"]["writes"].update(network="unix", address=""),
     f"{F}: clients.default.writes.address: a Unix socket path is required"),
    (lambda d: d["clients"]["default"]["writes"].update(network="unix", address="/x" * 60),
     f"{F}: clients.default.writes.address: Unix socket path is longer than 107 bytes"),
    (lambda d: server(d).update(address="127.0.0.1"),
     f"{F}: servers.default.address: expected host:port, got '127.0.0.1'"),
    (lambda d: d["metrics"]["default"].update(address="9090"),
     f"{F}: metrics.default.address: expected host:port, got '9090'"),
    (lambda d: d["api"].update(httpAddress="localhost:http"),
     f"{F}: api.httpAddress: bad port in 'localhost:http' (expected 0-65535)"),
    (lambda d: d["api"].update(grpcAddress=""),
     f"{F}: api.grpcAddress: an address (host:port) is required"),
    (lambda d: d["loggers"]["default"].update(output=["rsyslog"], rsyslogAddress="syslog"),
     f"{F}: loggers.default.rsyslogAddress: expected host:port, got 'syslog'"),
    (lambda d: d["loggers"]["default"].update(output=["file"], fileName=""),
     f"{F}: loggers.default.fileName: required when output includes file"),
    (lambda d: d["metrics"]["default"].update(path="metrics"),
     f"{F}: metrics.default.path: must start with '/' (got 'metrics')"),
]


@pytest.mark.parametrize("change, expected", ADDRESS_CASES)
def test_addresses(tmp_path: Path, change: Callable, expected: str) -> None:
    assert run(tmp_path, mutated(change)) == [expected]


def test_addresses_that_are_fine(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["clients"]["default"]["writes"].update(address="[::1]:5432", network="tcp6")
        d["clients"]["default"]["reads"].update(network="unix",
                                                address="/var/run/postgresql/.s.PGSQL.5432")
        server(d)["address"] = ":15432"                 # all interfaces
        d["metrics"]["default"]["address"] = "[::]:0"   # any free port
        d["api"].update(grpcNetwork="unix", grpcAddress="/tmp/gatewayd-api.sock")
    assert run(tmp_path, mutated(change)) == []


def test_disabled_listeners_are_not_checked(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["metrics"]["default"].update(enabled=False, address="nowhere")
        d["api"].update(enabled=False, httpAddress="nowhere")
    assert run(tmp_path, mutated(change)) == []


def test_two_servers_on_one_address(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        for obj in ("clients", "pools", "proxies"):
            d[obj]["b"] = copy.deepcopy(d[obj]["default"])
        d["servers"]["b"] = {"address": "127.0.0.1:15432"}
    assert run(tmp_path, mutated(change)) == [
        f"{F}: servers.b.address: '127.0.0.1:15432' is already used by servers.default"]


def test_server_tls_needs_existing_files(tmp_path: Path) -> None:
    assert run(tmp_path, mutated(lambda d: server(d).update(enableTLS=True))) == [
        f"{F}: servers.default.certFile: required when enableTLS is true",
        f"{F}: servers.default.keyFile: required when enableTLS is true"]
    missing = str(tmp_path / "missing.pem")
    assert run(tmp_path, mutated(lambda d: server(d).update(
        enableTLS=True, certFile=missing, keyFile=missing))) == [
        f"{F}: servers.default.certFile: file '<dir>/missing.pem' does not exist",
        f"{F}: servers.default.keyFile: file '<dir>/missing.pem' does not exist"]
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    assert run(tmp_path, mutated(lambda d: server(d).update(
        enableTLS=True, requireTLS=True, certFile=str(tmp_path / "cert.pem"),
        keyFile=str(tmp_path / "key.pem"), tlsMinVersion="1.3"))) == []
    assert run(tmp_path, mutated(lambda d: server(d).update(requireTLS=True))) == [
        f"{F}: servers.default.requireTLS: needs enableTLS: true"]


def test_client_tls(tmp_path: Path) -> None:
    writes = "clients.default.writes"
    assert run(tmp_path, mutated(lambda d: d["clients"]["default"]["writes"].update(
        sslmode="verify-full"))) == [
        f"{F}: {writes}.sslrootcert: required when sslmode is verify-full"]
    assert run(tmp_path, mutated(lambda d: d["clients"]["default"]["writes"].update(
        sslmode="verify-ca", sslrootcert=str(tmp_path / "ca.pem")))) == [
        f"{F}: {writes}.sslrootcert: file '<dir>/ca.pem' does not exist"]
    assert run(tmp_path, mutated(lambda d: d["clients"]["default"]["writes"].update(
        sslcert=str(tmp_path / "c.pem")))) == [
        f"{F}: {writes}.sslkey: required when sslcert is set",
        f"{F}: {writes}.sslcert: file '<dir>/c.pem' does not exist"]
    assert run(tmp_path, mutated(lambda d: d["clients"]["default"]["writes"].update(
        network="unix", address="/tmp/.s.PGSQL.5432", sslmode="require"))) == [
        f"{F}: {writes}.sslmode: TLS is not used over Unix sockets (set sslmode: disable)"]
    (tmp_path / "ca.pem").write_text("x")
    assert run(tmp_path, mutated(lambda d: d["clients"]["default"]["writes"].update(
        sslmode="verify-full", sslrootcert=str(tmp_path / "ca.pem")))) == []


def test_metrics_tls_pair_and_api_token(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("x")
    assert run(tmp_path, mutated(lambda d: d["metrics"]["default"].update(
        certFile=str(tmp_path / "cert.pem")))) == [
        f"{F}: metrics.default.keyFile: required when certFile is set"]
    assert run(tmp_path, mutated(lambda d: d["api"].update(
        token="t", tokenFile=str(tmp_path / "token")))) == [
        f"{F}: api.tokenFile: set token or tokenFile, not both",
        f"{F}: api.tokenFile: file '<dir>/token' does not exist"]


def test_raft_is_not_validated_beyond_types(tmp_path: Path) -> None:
    data = mutated(lambda d: d.update(raft={"address": "whatever", "isSecure": True}))
    assert run(tmp_path, data) == []


def test_many_problems_come_together(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["pools"]["default"]["writes"]["size"] = 0
        rules(d)[0]["distribution"][1]["proxyName"] = "replica"
        server(d)["loadBalancer"]["strategy"] = "WRR"
    assert len(run(tmp_path, mutated(change))) == 3


# -- plugins file ----------------------------------------------------------------------------

PLUGIN_CASES = [
    ({"plugins": [{"name": "cache", "localPath": "./cache", "checksum": SHA}]}, []),
    ({"plugins": [{"name": "mine", "module": "pkg.mod:Plugin"}]}, []),
    ({"plugins": [{"name": "mine", "module": "pkg.mod"}]}, []),
    ({"plugins": [{"name": "cache", "localPath": "./does/not/exist", "checksum": SHA}]}, []),
    ({"plugins": [{"name": ""}]},
     [f"{P}: plugins[0].name: must not be empty",
      f"{P}: plugins[0]: needs localPath and checksum (out-of-process plugin) "
      "or module (in-process plugin)"]),
    ({"plugins": [{"name": "x", "localPath": "./x"}]},
     [f"{P}: plugins[0].checksum: required with localPath (hex SHA-256 of the executable)"]),
    ({"plugins": [{"name": "x", "localPath": "./x", "checksum": "abc"}]},
     [f"{P}: plugins[0].checksum: must be a SHA-256 digest: 64 hex characters"]),
    ({"plugins": [{"name": "x", "localPath": "./x", "checksum": SHA, "module": "a:B"}]},
     [f"{P}: plugins[0]: set either localPath (out-of-process plugin) or module "
      "(in-process plugin), not both"]),
    ({"plugins": [{"name": "x", "module": "not a module"}]},
     [f"{P}: plugins[0].module: expected an import path 'package.module:Class', "
      "got 'not a module'"]),
    ({"plugins": [{"name": "x", "module": "a:B"}, {"name": "x", "module": "c:D"}]},
     [f"{P}: plugins[1].name: duplicate plugin name 'x' (also plugins[0])"]),
    ({"plugins": [{"name": "x", "module": "a:B", "env": ["OK=1", "NOEQUALS", "=v"]}]},
     [f"{P}: plugins[0].env[1]: expected NAME=VALUE, got 'NOEQUALS'",
      f"{P}: plugins[0].env[2]: expected NAME=VALUE, got '=v'"]),
    ({"plugins": [{"name": "x", "module": "a:B", "failureMode": "half"}]},
     [f"{P}: plugins[0].failureMode: 'half' is not one of: open, closed"]),
    ({"policies": [{"name": "p", "policy": "true"}, {"name": "p", "policy": " "}]},
     [f"{P}: policies[1].name: duplicate policy name 'p' (also policies[0])",
      f"{P}: policies[1].policy: must not be empty"]),
    ({"defaultPolicy": "block"},
     [f"{P}: defaultPolicy: 'block' is not one of: passthrough, terminate"]),
    ({"timeout": "0s", "actionTimeout": "0s"},
     [f"{P}: timeout: must be greater than 0s"]),
    ({"actionRedis": {"enabled": True, "address": "redis"}},
     [f"{P}: actionRedis.address: expected host:port, got 'redis'"]),
    ({"actionRedis": {"enabled": False, "address": "redis"}}, []),
]


@pytest.mark.parametrize("plugins, expected", PLUGIN_CASES)
def test_plugins_file(tmp_path: Path, plugins: dict[str, Any], expected: list[str]) -> None:
    assert run(tmp_path, base(), plugins) == expected


# -- address parsing, directly ---------------------------------------------------------------

def test_split_host_port() -> None:
    assert split_host_port("127.0.0.1:5432") == ("127.0.0.1", 5432)
    assert split_host_port("[fe80::1%eth0]:5432") == ("fe80::1%eth0", 5432)
    assert split_host_port("db-1.example.com.:6432") == ("db-1.example.com.", 6432)
    assert split_host_port(":0") == ("", 0)
    with pytest.raises(ValueError):
        split_host_port("db:-1")
    with pytest.raises(ValueError):
        split_host_port("db:\u0665")  # a non-ASCII digit is no port


def test_address_problem_listen_versus_dial() -> None:
    assert address_problem("tcp", ":0", listen=True) is None
    assert address_problem("tcp", ":0", listen=False) == "a host is required, got ':0'"
    assert address_problem("unix", "/tmp/s", listen=False) is None
