"""to_plain, flatten, apply_flat (OnConfigLoaded) and redact (admin API)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from gatewayd.config import apply_flat, flatten, load, redact, to_plain
from gatewayd.config.render import render_global
from gatewayd.config.schema import (
    ConsistentHash, GlobalConfig, PluginEntry, PluginsConfig, Policy,
)
from gatewayd.errors import ConfigErrors

SOURCE = "plugin 'tuner' (OnConfigLoaded)"


def multi_pool(tmp_path: Path) -> GlobalConfig:
    path = tmp_path / "g.yaml"
    path.write_text(render_global("multi-pool"))
    (tmp_path / "p.yaml").write_text("")
    return load(str(path), str(tmp_path / "p.yaml"), env={}).global_


def test_to_plain_uses_yaml_keys_and_go_durations() -> None:
    plain = to_plain(GlobalConfig())
    writes = plain["clients"]["default"]["writes"]
    assert writes["dialTimeout"] == "1m0s" and writes["tcpKeepAlivePeriod"] == "30s"
    assert writes["receiveDeadline"] == "0s"
    assert "startupParams" not in writes  # unset optional objects are left out
    assert "consistentHash" not in plain["servers"]["default"]["loadBalancer"]
    assert "proxies" not in plain["servers"]["default"]
    assert plain["servers"]["default"]["loadBalancer"] == {
        "strategy": "ROUND_ROBIN", "loadBalancingRules": []}
    assert plain["api"]["httpAddress"] == "localhost:18080"


def test_to_plain_round_trips_through_yaml(tmp_path: Path) -> None:
    config = multi_pool(tmp_path)
    config.servers["default"].load_balancer.consistent_hash = ConsistentHash(False)
    config.servers["default"].proxies = ["reads", "writes"]
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(to_plain(config)))
    assert load(str(path), str(tmp_path / "p.yaml"), env={}).global_ == config

    plugins = PluginsConfig(policies=[Policy("p", "true", {"k": [1]})],
                            plugins=[PluginEntry(name="x", module="a:B", config={"n": 1})])
    path = tmp_path / "plugins.yaml"
    path.write_text(yaml.safe_dump(to_plain(plugins)))
    assert load(str(tmp_path / "again.yaml"), str(path), env={}).plugins == plugins


def test_flatten_is_koanf_style() -> None:
    flat = flatten(to_plain(GlobalConfig()))
    assert flat["loggers.default.level"] == "info"
    assert flat["servers.default.address"] == "0.0.0.0:15432"
    assert flat["clients.default.writes.dialTimeout"] == "1m0s"
    assert flat["loggers.default.output"] == ["console"]  # lists stay values
    assert flat["servers.default.loadBalancer.loadBalancingRules"] == []
    assert flat["raft.peers"] == []
    assert all(not isinstance(v, dict) or v == {} for v in flat.values())
    assert flatten({"a": {"b": {}, "c": {"d": 1}}}) == {"a.b": {}, "a.c.d": 1}


def test_apply_flat_merges_a_plugins_changes(tmp_path: Path) -> None:
    config = multi_pool(tmp_path)
    before = copy.deepcopy(config)
    flat = flatten(to_plain(config))
    flat["pools.default.writes.size"] = 20.0             # protobuf numbers are doubles
    flat["clients.default.reads.dialTimeout"] = "5s"
    flat["clients.default.writes.dialTimeout"] = 2_000_000_000.0  # nanoseconds, as a double
    flat["loggers.default.level"] = "debug"
    flat["servers.default.loadBalancer.consistentHash.useSourceIp"] = True
    new = apply_flat(config, flat, SOURCE)
    assert new.pools["default"]["writes"].size == 20
    assert new.clients["default"]["reads"].dial_timeout == 5.0
    assert new.clients["default"]["writes"].dial_timeout == 2.0
    assert new.loggers["default"].level == "debug"
    assert new.servers["default"].load_balancer.consistent_hash == ConsistentHash(True)
    assert config == before  # the original is untouched


def test_apply_flat_with_nothing_changed_is_identity(tmp_path: Path) -> None:
    config = multi_pool(tmp_path)
    assert apply_flat(config, flatten(to_plain(config)), SOURCE) == config
    assert apply_flat(config, {}, SOURCE) == config


def test_apply_flat_may_add_a_complete_group(tmp_path: Path) -> None:
    config = multi_pool(tmp_path)
    new = apply_flat(config, {
        "clients.tenant.writes.address": "127.0.0.1:6000",
        "pools.tenant.writes.size": 1,
        "proxies.tenant.writes.healthCheckPeriod": "30s",
        "servers.tenant.address": "127.0.0.1:16000",
    }, SOURCE)
    assert new.clients["tenant"]["writes"].address == "127.0.0.1:6000"
    assert new.servers["tenant"].load_balancer.strategy == "ROUND_ROBIN"


def test_apply_flat_errors_name_the_key_and_the_plugin(tmp_path: Path) -> None:
    config = multi_pool(tmp_path)
    with pytest.raises(ConfigErrors) as caught:
        apply_flat(config, {
            "pools.default.writes.sise": 20,
            "pools.default.writes.size": 2.5,
            "servers.default.address": 15432,
            "servers.default.address.port": 1,
        }, SOURCE)
    assert [str(e) for e in caught.value.errors] == [
        f"{SOURCE}: servers.default.address.port: cannot set a key inside a value",
        f"{SOURCE}: pools.default.writes.size: expected an integer, got number 2.5",
        f"{SOURCE}: pools.default.writes.sise: unknown key (did you mean 'size'?)",
        f"{SOURCE}: servers.default.address: expected a string, got integer 15432 (quote it)",
    ]
    with pytest.raises(ConfigErrors) as caught:
        apply_flat(config, {"pools.default.writes.size": 0,
                            "servers.default.loadBalancer.strategy": "NOPE"}, SOURCE)
    assert [str(e) for e in caught.value.errors] == [
        f"{SOURCE}: pools.default.writes.size: must be >= 1 (got 0)",
        f"{SOURCE}: servers.default.loadBalancer.strategy: 'NOPE' is not one of: ROUND_ROBIN, "
        "RANDOM, WEIGHTED_ROUND_ROBIN, CONSISTENT_HASH, LEAST_CONNECTIONS",
    ]


def test_apply_flat_keeps_cross_references_valid(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors) as caught:
        apply_flat(multi_pool(tmp_path), {"pools.default.replica.size": 1}, SOURCE)
    assert [str(e) for e in caught.value.errors] == [
        f"{SOURCE}: pools.default.replica: block has no matching clients.default.replica",
        f"{SOURCE}: pools.default.replica: block has no matching proxies.default.replica",
    ]


def test_redact_hides_secrets_not_paths() -> None:
    plain = to_plain(GlobalConfig())
    plain["api"]["token"] = "s3cret"
    plain["api"]["tokenFile"] = "/etc/gatewayd/token"
    plain["servers"]["default"].update(certFile="/c.pem", keyFile="/k.pem")
    plain["clients"]["default"]["writes"].update(
        sslkey="/client.key", sslcert="/client.pem", sslrootcert="/ca.pem",
        startupParams={"user": "app", "database": "app", "password": "pw"})
    shown = redact(plain)
    assert shown["api"]["token"] == "REDACTED"
    assert shown["api"]["tokenFile"] == "/etc/gatewayd/token"
    assert shown["servers"]["default"]["certFile"] == "/c.pem"
    assert shown["servers"]["default"]["keyFile"] == "/k.pem"
    writes = shown["clients"]["default"]["writes"]
    assert (writes["sslkey"], writes["sslcert"], writes["sslrootcert"]) == \
        ("/client.key", "/client.pem", "/ca.pem")
    assert writes["startupParams"] == {"user": "app", "database": "app", "password": "REDACTED"}
    assert plain["api"]["token"] == "s3cret"  # a copy, the original is intact
    assert redact(to_plain(GlobalConfig()))["api"]["token"] == ""  # unset stays visibly unset


def test_redact_plugins_env_config_and_urls() -> None:
    plugins = PluginsConfig(plugins=[PluginEntry(
        name="cache", module="a:B",
        env=["MAGIC_COOKIE_KEY=GATEWAYD_PLUGIN", "REDIS_PASSWORD=hunter2", "API_KEY=k",
             "REDIS_URL=redis://default:pw@127.0.0.1:6379/0", "LOG_LEVEL=info", "EMPTY_TOKEN="],
        config={"apiKey": "k", "nested": {"clientSecret": "s", "port": 1},
                "dsn": "postgres://app:pw@db/app", "keys": ["a", "b"]})])
    entry = redact(to_plain(plugins))["plugins"][0]
    assert entry["env"] == ["MAGIC_COOKIE_KEY=GATEWAYD_PLUGIN", "REDIS_PASSWORD=REDACTED",
                            "API_KEY=REDACTED", "REDIS_URL=redis://default:REDACTED@127.0.0.1:6379/0",
                            "LOG_LEVEL=info", "EMPTY_TOKEN="]
    assert entry["config"] == {"apiKey": "REDACTED", "nested": {"clientSecret": "REDACTED", "port": 1},
                               "dsn": "postgres://app:REDACTED@db/app",
                               "keys": ["REDACTED", "REDACTED"]}


def test_redact_works_on_flattened_data() -> None:
    flat = flatten(to_plain(GlobalConfig()))
    flat["api.token"] = "t"
    flat["clients.default.writes.startupParams.password"] = "pw"
    shown = redact(flat)
    assert shown["api.token"] == "REDACTED"
    assert shown["clients.default.writes.startupParams.password"] == "REDACTED"
    assert shown["servers.default.keyFile"] == ""
    assert shown["servers.default.address"] == "0.0.0.0:15432"
