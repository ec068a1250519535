"""GATEWAYD_* environment overrides (gatewayd.config.environ through load())."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from gatewayd.config import Config, load
from gatewayd.config.environ import EnvOverrides
from gatewayd.config.schema import ConsistentHash, GlobalConfig, PluginsConfig, Policy, RaftPeer
from gatewayd.config.validate import validate_global, validate_plugins
from gatewayd.errors import ConfigErrors

MULTI = """
    clients:
      default: {writes: {address: 127.0.0.1:5432}, reads: {address: 127.0.0.1:5433}}
      eu_west: {writes: {address: 127.0.0.1:5434}}
    pools:
      default: {writes: {}, reads: {}}
      eu_west: {writes: {}}
    proxies:
      default: {writes: {}, reads: {}}
      eu_west: {writes: {}}
    servers:
      default: {address: 127.0.0.1:15432}
      eu_west: {address: 127.0.0.1:15433}
"""


def load_env(tmp_path: Path, env: dict[str, str], text: str = MULTI, plugins: str = "") -> Config:
    (tmp_path / "g.yaml").write_text(textwrap.dedent(text))
    (tmp_path / "p.yaml").write_text(textwrap.dedent(plugins))
    return load(str(tmp_path / "g.yaml"), str(tmp_path / "p.yaml"), env=env)


def env_problems(tmp_path: Path, env: dict[str, str], text: str = MULTI) -> list[str]:
    with pytest.raises(ConfigErrors) as caught:
        load_env(tmp_path, env, text)
    return [str(e).replace(str(tmp_path), "<dir>") for e in caught.value.errors]


def test_single_word_keys_as_in_gatewayd(tmp_path: Path) -> None:
    g = load_env(tmp_path, {
        "GATEWAYD_CLIENTS_DEFAULT_WRITES_ADDRESS": "db.internal:6432",
        "GATEWAYD_CLIENTS_DEFAULT_WRITES_NETWORK": "tcp4",
        "GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_STRATEGY": "RANDOM",
        "GATEWAYD_POOLS_DEFAULT_WRITES_SIZE": "50",
        "GATEWAYD_LOGGERS_DEFAULT_LEVEL": "debug",
    }).global_
    assert g.clients["default"]["writes"].address == "db.internal:6432"
    assert g.clients["default"]["writes"].network == "tcp4"
    assert g.servers["default"].load_balancer.strategy == "RANDOM"
    assert g.pools["default"]["writes"].size == 50
    assert g.loggers["default"].level == "debug"


def test_multi_word_client_keys_work_where_gatewayd_drops_them(tmp_path: Path) -> None:
    client = load_env(tmp_path, {
        "GATEWAYD_CLIENTS_DEFAULT_READS_DIALTIMEOUT": "5s",
        "GATEWAYD_CLIENTS_DEFAULT_READS_TCPKEEPALIVEPERIOD": "1m30s",
        "GATEWAYD_CLIENTS_DEFAULT_READS_RECEIVECHUNKSIZE": "16384",
        "GATEWAYD_CLIENTS_DEFAULT_READS_BACKOFFMULTIPLIER": "1.5",
        "GATEWAYD_CLIENTS_DEFAULT_READS_DISABLEBACKOFFCAPS": "true",
        "GATEWAYD_CLIENTS_DEFAULT_READS_SSLMODE": "prefer",
    }).global_.clients["default"]["reads"]
    assert client.dial_timeout == 5.0
    assert client.tcp_keep_alive_period == 90.0
    assert client.receive_chunk_size == 16384
    assert client.backoff_multiplier == 1.5
    assert client.disable_backoff_caps is True
    assert client.sslmode == "prefer"


def test_nested_consistent_hash_creates_the_block(tmp_path: Path) -> None:
    g = load_env(tmp_path, {
        "GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_CONSISTENTHASH_USESOURCEIP": "false"}).global_
    assert g.servers["default"].load_balancer.consistent_hash == ConsistentHash(use_source_ip=False)
    assert g.servers["eu_west"].load_balancer.consistent_hash is None


def test_names_match_case_insensitively_and_groups_may_contain_underscores(tmp_path: Path) -> None:
    g = load_env(tmp_path, {"GATEWAYD_clients_EU_WEST_Writes_dialTimeout": "7s",
                            "GATEWAYD_SERVERS_EU_WEST_ENABLETICKER": "1"}).global_
    assert g.clients["eu_west"]["writes"].dial_timeout == 7.0
    assert g.servers["eu_west"].enable_ticker is True


@pytest.mark.parametrize("raw, expected", [
    ("true", True), ("TRUE", True), ("1", True), ("t", True), ("yes", True), ("on", True),
    ("false", False), ("False", False), ("0", False), ("f", False), ("no", False), (" off ", False),
])
def test_booleans(tmp_path: Path, raw: str, expected: bool) -> None:
    g = load_env(tmp_path, {"GATEWAYD_API_ENABLED": raw}).global_
    assert g.api.enabled is expected


def test_lists_comma_separated_or_json(tmp_path: Path) -> None:
    g = load_env(tmp_path, {"GATEWAYD_LOGGERS_DEFAULT_OUTPUT": "console, file",
                            "GATEWAYD_SERVERS_DEFAULT_PROXIES": '["reads", "writes"]',
                            "GATEWAYD_SERVERS_EU_WEST_PROXIES": "writes"}).global_
    assert g.loggers["default"].output == ["console", "file"]
    assert g.servers["default"].proxies == ["reads", "writes"]
    assert g.servers["eu_west"].proxies == ["writes"]


def test_raft_peers_and_rules_as_json(tmp_path: Path) -> None:
    g = load_env(tmp_path, {
        "GATEWAYD_RAFT_PEERS": '[{"id":"node2","address":"h:2223","grpcAddress":"h:50051"}]',
        "GATEWAYD_RAFT_NODEID": "node7",
        "GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_LOADBALANCINGRULES":
            '[{"condition": "DEFAULT", "distribution": [{"proxyName": "reads", "weight": 2}]}]',
    }).global_
    assert g.raft.peers == [RaftPeer(id="node2", address="h:2223", grpc_address="h:50051")]
    assert g.raft.node_id == "node7"
    rule = g.servers["default"].load_balancer.load_balancing_rules[0]
    assert (rule.condition, rule.distribution[0].proxy_name, rule.distribution[0].weight) == \
        ("DEFAULT", "reads", 2)


def test_plugin_file_keys(tmp_path: Path) -> None:
    p = load_env(tmp_path, {
        "GATEWAYD_DEFAULTPOLICY": "terminate",
        "GATEWAYD_ENABLEMETRICSMERGER": "false",
        "GATEWAYD_ACTIONREDIS_ENABLED": "true",
        "GATEWAYD_ACTIONREDIS_ADDRESS": "127.0.0.1:6379",
        "GATEWAYD_STARTTIMEOUT": "2m",
        "GATEWAYD_POLICIES": '[{"name": "p", "policy": "true", "metadata": {"a": 1}}]',
    }).plugins
    assert p.default_policy == "terminate"
    assert p.enable_metrics_merger is False
    assert (p.action_redis.enabled, p.action_redis.address) == (True, "127.0.0.1:6379")
    assert p.start_timeout == 120.0
    assert p.policies == [Policy(name="p", policy="true", metadata={"a": 1})]


def test_variables_without_the_prefix_are_ignored(tmp_path: Path) -> None:
    g = load_env(tmp_path, {"PATH": "/bin", "gatewayd_api_enabled": "nonsense",
                            "XGATEWAYD_API_ENABLED": "false"}).global_
    assert g.api.enabled is True


def test_unknown_names_are_errors_naming_the_variable(tmp_path: Path) -> None:
    assert env_problems(tmp_path, {
        "GATEWAYD_FOO": "1",
        "GATEWAYD_LOGERS_DEFAULT_LEVEL": "debug",
        "GATEWAYD_CLIENTS_DEFAULT_WRITES_DIALTIMOUT": "5s",
        "GATEWAYD_CLIENTS_DEFAULT_WRITES": "x",
        "GATEWAYD_CLIENTS_DEFAULT_WRITES_ADDRESS_HOST": "x",
        "GATEWAYD_SERVERS_DEFAULT_LOADBALANCER": "x",
        "GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_CONSISTENTHASH_HASH": "x",
        "GATEWAYD_ACTIONREDIS_PASSWORD": "x",
        "GATEWAYD_API__ENABLED": "x",
    }) == [
        "<environment>: GATEWAYD_ACTIONREDIS_PASSWORD: actionRedis has no key 'PASSWORD'",
        "<environment>: GATEWAYD_API__ENABLED: empty name part (two '_' in a row, or a trailing '_')",
        "<environment>: GATEWAYD_CLIENTS_DEFAULT_WRITES: names the clients.default.writes block, "
        "not one of its keys",
        "<environment>: GATEWAYD_CLIENTS_DEFAULT_WRITES_ADDRESS_HOST: clients.default.writes.address "
        "has no key 'HOST' (clients.default.writes.address is a value)",
        "<environment>: GATEWAYD_CLIENTS_DEFAULT_WRITES_DIALTIMOUT: clients.default.writes has no "
        "key 'DIALTIMOUT' (did you mean 'DIALTIMEOUT'?)",
        "<environment>: GATEWAYD_FOO: no config key 'FOO' in gatewayd.yaml or gatewayd_plugins.yaml",
        "<environment>: GATEWAYD_LOGERS_DEFAULT_LEVEL: no config key 'LOGERS' (did you mean "
        "'LOGGERS'?) in gatewayd.yaml or gatewayd_plugins.yaml",
        "<environment>: GATEWAYD_SERVERS_DEFAULT_LOADBALANCER: names the "
        "servers.default.loadBalancer object; set one of its keys "
        "(STRATEGY, CONSISTENTHASH, LOADBALANCINGRULES)",
        "<environment>: GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_CONSISTENTHASH_HASH: "
        "servers.default.loadBalancer.consistentHash has no key 'HASH'",
    ]


def test_a_bad_variable_does_not_half_apply(tmp_path: Path) -> None:
    """An unknown key under consistentHash must not switch hashing on."""
    with pytest.raises(ConfigErrors):
        load_env(tmp_path, {"GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_CONSISTENTHASH_X": "1"})


def test_environment_cannot_create_groups_or_blocks(tmp_path: Path) -> None:
    assert env_problems(tmp_path, {
        "GATEWAYD_CLIENTS_TENANT_WRITES_ADDRESS": "h:1",
        "GATEWAYD_POOLS_DEFAULT_REPLICA_SIZE": "3",
        "GATEWAYD_LOGGERS_OTHER_LEVEL": "debug",
    }) == [
        "<environment>: GATEWAYD_CLIENTS_TENANT_WRITES_ADDRESS: no group 'tenant' in clients "
        "(declared: default, eu_west); environment variables cannot create a group",
        "<environment>: GATEWAYD_LOGGERS_OTHER_LEVEL: no group 'other' in loggers "
        "(declared: default); environment variables cannot create a group",
        "<environment>: GATEWAYD_POOLS_DEFAULT_REPLICA_SIZE: no block 'replica' in pools.default "
        "(declared: writes, reads); environment variables cannot create a block",
    ]


def test_bad_values_are_parsed_with_the_field_type(tmp_path: Path) -> None:
    assert env_problems(tmp_path, {
        "GATEWAYD_POOLS_DEFAULT_WRITES_SIZE": "ten",
        "GATEWAYD_API_ENABLED": "maybe",
        "GATEWAYD_CLIENTS_DEFAULT_WRITES_DIALTIMEOUT": "30",
        "GATEWAYD_CLIENTS_DEFAULT_WRITES_BACKOFFMULTIPLIER": "x2",
        "GATEWAYD_RAFT_PEERS": "[{id: 1}]",
        "GATEWAYD_POLICIES": '[{"name": "p", "policy": "true", "colour": "red"}]',
        "GATEWAYD_SERVERS_DEFAULT_PROXIES": "[1]",
    }) == [
        "<environment>: GATEWAYD_API_ENABLED: api.enabled: expected true or false (or 1/0), "
        "got 'maybe'",
        "<environment>: GATEWAYD_CLIENTS_DEFAULT_WRITES_BACKOFFMULTIPLIER: "
        "clients.default.writes.backoffMultiplier: expected a number, got 'x2'",
        "<environment>: GATEWAYD_CLIENTS_DEFAULT_WRITES_DIALTIMEOUT: "
        "clients.default.writes.dialTimeout: missing unit in duration '30' (e.g. '30s')",
        "<environment>: GATEWAYD_POLICIES: policies[0].colour: unknown key",
        "<environment>: GATEWAYD_POOLS_DEFAULT_WRITES_SIZE: pools.default.writes.size: "
        "expected an integer, got 'ten'",
        "<environment>: GATEWAYD_RAFT_PEERS: raft.peers: expected JSON (Expecting property name "
        "enclosed in double quotes at column 3)",
        "<environment>: GATEWAYD_SERVERS_DEFAULT_PROXIES: servers.default.proxies[0]: "
        "expected a string, got integer 1 (quote it)",
    ]


def test_values_from_the_environment_are_validated(tmp_path: Path) -> None:
    assert env_problems(tmp_path, {
        "GATEWAYD_POOLS_DEFAULT_WRITES_SIZE": "0",
        "GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_STRATEGY": "FASTEST",
        "GATEWAYD_SERVERS_DEFAULT_PROXIES": "writes,nope",
        "GATEWAYD_CLIENTS_DEFAULT_READS_ADDRESS": "localhost",
        "GATEWAYD_DEFAULTPOLICY": "drop",
    }) == [
        "<environment>: GATEWAYD_POOLS_DEFAULT_WRITES_SIZE: pools.default.writes.size: "
        "must be >= 1 (got 0)",
        "<environment>: GATEWAYD_SERVERS_DEFAULT_LOADBALANCER_STRATEGY: "
        "servers.default.loadBalancer.strategy: 'FASTEST' is not one of: ROUND_ROBIN, RANDOM, "
        "WEIGHTED_ROUND_ROBIN, CONSISTENT_HASH, LEAST_CONNECTIONS",
        "<environment>: GATEWAYD_SERVERS_DEFAULT_PROXIES: servers.default.proxies[1]: "
        "unknown block 'nope' (blocks: writes, reads)",
        "<environment>: GATEWAYD_CLIENTS_DEFAULT_READS_ADDRESS: clients.default.reads.address: "
        "expected host:port, got 'localhost'",
        "<environment>: GATEWAYD_DEFAULTPOLICY: defaultPolicy: 'drop' is not one of: "
        "passthrough, terminate",
    ]


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    text = MULTI + "    loggers: {default: {level: warn}}\n"
    g = load_env(tmp_path, {"GATEWAYD_LOGGERS_DEFAULT_LEVEL": "error"}, text).global_
    assert g.loggers["default"].level == "error"


def test_os_environ_is_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAYD_LOGGERS_DEFAULT_LEVEL", "trace")
    (tmp_path / "g.yaml").write_text("")
    (tmp_path / "p.yaml").write_text("")
    config = load(str(tmp_path / "g.yaml"), str(tmp_path / "p.yaml"))
    assert config.global_.loggers["default"].level == "trace"


_PARTS = st.sampled_from(["CLIENTS", "SERVERS", "DEFAULT", "WRITES", "ADDRESS", "LOADBALANCER",
                          "CONSISTENTHASH", "USESOURCEIP", "RAFT", "PEERS", "PLUGINS", "POLICIES",
                          "ACTIONREDIS", "ENABLED", "SIZE", "POOLS", "X", "", "PROXIES", "API"])
_VALUES = st.one_of(st.text(max_size=8), st.sampled_from(
    ["[", "[]", "[1]", '[{"name": 1}]', "{}", "true", "5s", "-1", "a,b", '[{"id": "n"}]']))


@given(st.dictionaries(st.lists(_PARTS, min_size=1, max_size=6).map(
    lambda parts: "GATEWAYD_" + "_".join(parts)), _VALUES, max_size=4))
def test_arbitrary_variables_never_crash(env: dict[str, str]) -> None:
    overrides = EnvOverrides()
    global_, plugins = GlobalConfig(), PluginsConfig()
    overrides.apply(env, global_, plugins)
    for error in overrides.errors:
        assert error.key in env and "\n" not in str(error)
    if not overrides.errors:
        validate_global(global_, None)
        validate_plugins(plugins, None)
