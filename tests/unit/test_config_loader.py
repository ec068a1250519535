"""Loading gatewayd.yaml / gatewayd_plugins.yaml (gatewayd.config.loader, build, files)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from gatewayd.config import Config, load, to_plain
from gatewayd.config import files
from gatewayd.config.build import build_global
from gatewayd.config.schema import Client, GlobalConfig, Logger, PluginsConfig
from gatewayd.config.validate import validate_global
from gatewayd.errors import ConfigErrors

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "gatewayd.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def load_text(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    plugins = write(tmp_path, "", "gatewayd_plugins.yaml")
    return load(write(tmp_path, text), plugins, env=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    """The error lines, with the temporary directory shown as '<dir>'."""
    with pytest.raises(ConfigErrors) as caught:
        load_text(tmp_path, text, env)
    return [str(e).replace(str(tmp_path), "<dir>") for e in caught.value.errors]


# GatewayD v0.10.3's code defaults (docs: reference §1.3-1.11), as plain YAML data.
GATEWAYD_GLOBAL_DEFAULTS = {
    "loggers": {"default": {
        "output": ["console"], "level": "info", "noColor": False, "timeFormat": "unix",
        "consoleTimeFormat": "RFC3339", "fileName": "gatewayd.log", "maxSize": 500,
        "maxBackups": 5, "maxAge": 30, "compress": True, "localTime": False,
        "rsyslogNetwork": "tcp", "rsyslogAddress": "localhost:514", "syslogPriority": "info"}},
    "metrics": {"default": {
        "enabled": True, "address": "localhost:9090", "path": "/metrics",
        "readHeaderTimeout": "10s", "timeout": "10s", "certFile": "", "keyFile": ""}},
    "clients": {"default": {"writes": {
        "network": "tcp", "address": "localhost:5432", "tcpKeepAlive": False,
        "tcpKeepAlivePeriod": "30s", "receiveChunkSize": 8192, "receiveDeadline": "0s",
        "receiveTimeout": "0s", "sendDeadline": "0s", "dialTimeout": "1m0s", "retries": 3,
        "backoff": "1s", "backoffMultiplier": 2.0, "disableBackoffCaps": False}}},
    "pools": {"default": {"writes": {"size": 10}}},
    "proxies": {"default": {"writes": {"healthCheckPeriod": "1m0s"}}},
    "servers": {"default": {
        "network": "tcp", "address": "0.0.0.0:15432", "enableTicker": False,
        "tickInterval": "5s", "enableTLS": False, "certFile": "", "keyFile": "",
        "handshakeTimeout": "5s",
        "loadBalancer": {"strategy": "ROUND_ROBIN", "loadBalancingRules": []}}},
    "api": {"enabled": True, "httpAddress": "localhost:18080", "grpcNetwork": "tcp",
            "grpcAddress": "localhost:19090"},
    "raft": {"address": "127.0.0.1:2223", "nodeId": "node1", "isBootstrap": True,
             "isSecure": False, "certFile": "", "keyFile": "", "directory": "raft",
             "grpcAddress": "127.0.0.1:50051", "peers": []},
}

GATEWAYD_PLUGINS_DEFAULTS = {
    "enableMetricsMerger": True, "metricsMergerPeriod": "5s", "healthCheckPeriod": "5s",
    "reloadOnCrash": True, "timeout": "30s", "startTimeout": "1m0s",
    "defaultPolicy": "passthrough", "policyTimeout": "30s", "actionTimeout": "30s",
    "actionRedis": {"enabled": False, "address": "localhost:6379", "channel": "gatewayd-actions"},
    "policies": [], "plugins": [],
}


def gatewayd_subset(ours: object, theirs: object) -> None:
    """Every GatewayD key in C{theirs} has the same value in C{ours} (we add keys of our own)."""
    if isinstance(theirs, dict):
        for key, value in theirs.items():
            assert key in ours, key
            gatewayd_subset(ours[key], value)
    else:
        assert ours == theirs


def test_an_empty_file_gives_gatewayds_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, "")
    gatewayd_subset(to_plain(config.global_), GATEWAYD_GLOBAL_DEFAULTS)
    gatewayd_subset(to_plain(config.plugins), GATEWAYD_PLUGINS_DEFAULTS)
    assert config.global_ == GlobalConfig() and config.plugins == PluginsConfig()


def test_shipped_files_load_cleanly_and_listen_on_loopback() -> None:
    config = load(str(ROOT / "etc/gatewayd.yaml"), str(ROOT / "etc/gatewayd_plugins.yaml"), env={})
    g = config.global_
    assert list(g.servers) == ["default"]
    assert g.servers["default"].address == "127.0.0.1:15432"
    assert g.clients == {"default": {"writes": Client(address="127.0.0.1:5432")}}
    assert g.pools["default"]["writes"].size == 10
    assert g.metrics["default"].address == "127.0.0.1:9090"
    assert (g.api.http_address, g.api.grpc_address) == ("127.0.0.1:18080", "127.0.0.1:19090")
    assert config.plugins.plugins == [] and config.plugins == PluginsConfig()
    assert config.blocks("default") == ["writes"]


def test_a_gatewayd_v0_10_3_file_loads_unchanged(tmp_path: Path) -> None:
    """GatewayD's style: capitalised booleans, nanosecond integers, raft, consistentHash."""
    config = load_text(tmp_path, """
        loggers:
          default:
            output: ["console"]
            level: "info"
            noColor: False
            timeFormat: "unix"
            consoleTimeFormat: "RFC3339"
            fileName: "gatewayd.log"
            maxSize: 500
            maxBackups: 5
            maxAge: 30
            compress: True
            localTime: False
            rsyslogNetwork: "tcp"
            rsyslogAddress: "localhost:514"
            syslogPriority: "info"
        metrics:
          default:
            enabled: True
            address: 0.0.0.0:9090
            path: /metrics
            readHeaderTimeout: 10s
            timeout: 10s
        clients:
          default:
            writes:
              network: tcp
              address: localhost:5432
              tcpKeepAlive: False
              tcpKeepAlivePeriod: 30s
              receiveChunkSize: 8192
              receiveDeadline: 0s
              receiveTimeout: 0s
              sendDeadline: 0s
              dialTimeout: 60000000000
              retries: 3
              backoff: 1s
              backoffMultiplier: 2.0
              disableBackoffCaps: False
            reads:
              address: localhost:5433
        pools:
          default:
            writes: {size: 10}
            reads: {size: 10}
        proxies:
          default:
            writes: {healthCheckPeriod: 60s}
            reads: {healthCheckPeriod: 60s}
        servers:
          default:
            network: tcp
            address: 0.0.0.0:15432
            enableTicker: False
            tickInterval: 5s
            enableTLS: False
            certFile: ""
            keyFile: ""
            handshakeTimeout: 5s
            loadBalancer:
              strategy: ROUND_ROBIN
              consistentHash:
                useSourceIp: True
              loadBalancingRules:
                - condition: "DEFAULT"
                  distribution:
                    - proxyName: "writes"
                      weight: 1
                    - proxyName: "reads"
                      weight: 1
        api:
          enabled: True
          httpAddress: 0.0.0.0:18080
          grpcNetwork: tcp
          grpcAddress: 0.0.0.0:19090
        raft:
          address: 127.0.0.1:2222
          nodeId: node1
          isBootstrap: True
          isSecure: False
          directory: raft
          grpcAddress: 127.0.0.1:50051
          peers: []
    """)
    g = config.global_
    assert g.clients["default"]["writes"].dial_timeout == 60.0
    assert g.clients["default"]["reads"] == Client(address="localhost:5433")
    assert g.servers["default"].load_balancer.consistent_hash.use_source_ip is True
    assert g.raft.address == "127.0.0.1:2222"
    assert config.blocks("default") == ["writes", "reads"]


def test_declared_groups_and_blocks_get_every_default(tmp_path: Path) -> None:
    """GatewayD forgets the defaults of a non-default group's 'writes' block; we do not."""
    config = load_text(tmp_path, """
        clients:
          tenant:
            writes: {address: 127.0.0.1:5432}
            reads:
        pools: {tenant: {writes: {}, reads: {size: 3}}}
        proxies: {tenant: {writes: , reads: }}
        servers: {tenant: {address: 127.0.0.1:15433}}
        loggers: {tenant: {level: debug}}
    """)
    g = config.global_
    assert g.clients["tenant"]["writes"] == Client(address="127.0.0.1:5432")
    assert g.clients["tenant"]["reads"] == Client()
    assert (g.pools["tenant"]["writes"].size, g.pools["tenant"]["reads"].size) == (10, 3)
    assert g.proxies["tenant"]["writes"].health_check_period == 60.0
    assert g.loggers == {"tenant": Logger(level="debug")}


def test_a_declared_object_holds_exactly_its_groups(tmp_path: Path) -> None:
    """koanf merges the file over the built-in 'default' group; we do not (no stray 0.0.0.0 listener)."""
    config = load_text(tmp_path, """
        clients: {tenant: {writes: {}}}
        pools: {tenant: {writes: {}}}
        proxies: {tenant: {writes: {}}}
        servers: {tenant: {address: 127.0.0.1:15433}}
    """)
    g = config.global_
    assert list(g.servers) == list(g.clients) == list(g.pools) == list(g.proxies) == ["tenant"]
    assert list(g.loggers) == list(g.metrics) == ["default"]  # not declared: defaults
    assert config.logger("tenant") is g.loggers["default"]


def test_group_and_block_names_are_folded_to_lower_case(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
        clients: {Default: {WRITES: {}}}
        pools: {default: {Writes: {}}}
        proxies: {DEFAULT: {writes: {}}}
        servers: {deFault: {address: 127.0.0.1:15432, proxies: [writes]}}
    """)
    assert list(config.global_.clients["default"]) == ["writes"]
    assert list(config.global_.servers) == ["default"]


def test_mixed_case_duplicates_are_an_error(tmp_path: Path) -> None:
    assert problems(tmp_path, """
        clients:
          default: {writes: {}, Writes: {}}
          Default: {writes: {}}
    """) == [
        "<dir>/gatewayd.yaml: clients.default.Writes: duplicate block name: "
        "'writes' is also declared and block names are case-insensitive",
        "<dir>/gatewayd.yaml: clients.Default: duplicate group name: "
        "'default' is also declared and group names are case-insensitive",
    ]


@pytest.mark.parametrize("name", ["a.b", "-x", "with space", "é"])
def test_bad_group_names(tmp_path: Path, name: str) -> None:
    assert problems(tmp_path, f"loggers: {{'{name}': {{}}}}") == [
        f"<dir>/gatewayd.yaml: loggers.{name}: bad group name: use letters, digits, '-' and '_', "
        "starting with a letter or digit"]


def test_non_string_group_names(tmp_path: Path) -> None:
    assert problems(tmp_path, "loggers: {2: {}, on: {}}") == [
        "<dir>/gatewayd.yaml: loggers.2: group name must be a string, got integer 2 (quote it)",
        "<dir>/gatewayd.yaml: loggers.True: group name must be a string, got boolean true (quote it)",
    ]


def test_unknown_keys_suggest_the_right_one(tmp_path: Path) -> None:
    assert problems(tmp_path, """
        clients: {default: {writes: {dialtimeout: 5s, adress: x, frobnicate: 1}}}
        servers: {default: {loadBalancer: {stratgy: RANDOM}}}
        logers: {}
    """) == [
        "<dir>/gatewayd.yaml: clients.default.writes.dialtimeout: unknown key (did you mean 'dialTimeout'?)",
        "<dir>/gatewayd.yaml: clients.default.writes.adress: unknown key (did you mean 'address'?)",
        "<dir>/gatewayd.yaml: clients.default.writes.frobnicate: unknown key",
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.stratgy: unknown key (did you mean 'strategy'?)",
        "<dir>/gatewayd.yaml: logers: unknown key (did you mean 'loggers'?)",
    ]


def test_types_are_checked(tmp_path: Path) -> None:
    assert problems(tmp_path, """
        loggers: {default: {output: console, noColor: "yes", maxSize: 1.5, level: 3}}
        clients: {default: {writes: {retries: "3", dialTimeout: 30, backoff: 1.5, tcpKeepAlive: 1,
                                     backoffMultiplier: true, address: null}}}
        pools: {default: {writes: {size: ten}}}
        servers: {default: {loadBalancer: {loadBalancingRules: [DEFAULT]}, proxies: [1]}}
        api: [1]
    """) == [
        "<dir>/gatewayd.yaml: loggers.default.output: expected a list of strings, got string 'console'",
        "<dir>/gatewayd.yaml: loggers.default.noColor: expected true or false, got string 'yes'",
        "<dir>/gatewayd.yaml: loggers.default.maxSize: expected an integer, got number 1.5",
        "<dir>/gatewayd.yaml: loggers.default.level: expected a string, got integer 3 (quote it)",
        "<dir>/gatewayd.yaml: clients.default.writes.retries: expected an integer, got string '3'",
        "<dir>/gatewayd.yaml: clients.default.writes.backoff: expected a duration such as '30s', "
        "'1m', '500ms' or integer nanoseconds, got 1.5",
        "<dir>/gatewayd.yaml: clients.default.writes.tcpKeepAlive: expected true or false, got integer 1",
        "<dir>/gatewayd.yaml: clients.default.writes.backoffMultiplier: expected a number, got boolean true",
        "<dir>/gatewayd.yaml: clients.default.writes.address: has no value (remove the key to use the default)",
        "<dir>/gatewayd.yaml: pools.default.writes.size: expected an integer, got string 'ten'",
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.loadBalancingRules[0]: "
        "expected a mapping of keys, got string 'DEFAULT'",
        "<dir>/gatewayd.yaml: servers.default.proxies[0]: expected a string, got integer 1 (quote it)",
        "<dir>/gatewayd.yaml: api: expected a mapping of keys, got a list",
    ]


def test_an_integer_duration_is_nanoseconds(tmp_path: Path) -> None:
    config = load_text(tmp_path, "clients: {default: {writes: {dialTimeout: 30}}}")
    assert config.global_.clients["default"]["writes"].dial_timeout == 30e-9


def test_rules_must_spell_out_condition_and_distribution(tmp_path: Path) -> None:
    assert problems(tmp_path, """
        servers: {default: {loadBalancer: {loadBalancingRules: [{}, {condition: DEFAULT,
                  distribution: [{weight: 2}]}]}}}
    """) == [
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.loadBalancingRules[0].condition: "
        "required key is missing",
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.loadBalancingRules[0].distribution: "
        "required key is missing",
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.loadBalancingRules[1]"
        ".distribution[0].proxyName: required key is missing",
    ]


def test_weight_defaults_to_one(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
        servers: {default: {loadBalancer: {strategy: WEIGHTED_ROUND_ROBIN,
                  loadBalancingRules: [{condition: DEFAULT, distribution: [{proxyName: writes}]}]}}}
    """)
    assert config.global_.servers["default"].load_balancer.load_balancing_rules[0] \
        .distribution[0].weight == 1


def test_null_values_mean_defaults(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
        loggers:
        servers: {default: {loadBalancer: , proxies: }}
        api:
    """)
    assert config.global_ == GlobalConfig()
    plugins = load(write(tmp_path, ""), write(tmp_path, "plugins:\npolicies:\n", "p.yaml"), env={})
    assert plugins.plugins.plugins == [] and plugins.plugins.policies == []


def test_raft_is_accepted_and_type_checked(tmp_path: Path) -> None:
    config = load_text(tmp_path, "raft: {nodeId: n2, peers: [{id: n1, address: 'h:2223'}]}")
    assert config.global_.raft.peers[0].address == "h:2223"
    assert problems(tmp_path, "raft: {isBootstrap: maybe}") == [
        "<dir>/gatewayd.yaml: raft.isBootstrap: expected true or false, got string 'maybe'"]


@pytest.mark.parametrize("text, problem", [
    ("servers: [a\n", "invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("a: b: c\n", "invalid YAML at line 1, column 5: mapping values are not allowed here"),
    ("api:\n  enabled: true\n  enabled: false\n",
     "invalid YAML at line 3, column 3: duplicate key 'enabled'"),
    ("- 1\n- 2\n", "expected a mapping of keys at the top level"),
    ("just a string\n", "expected a mapping of keys at the top level"),
])
def test_bad_yaml_is_one_line_with_position(tmp_path: Path, text: str, problem: str) -> None:
    assert problems(tmp_path, text) == [f"<dir>/gatewayd.yaml: {problem}"]


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    base = """
        clients:
          default:
            writes: &block {address: 127.0.0.1:5432, dialTimeout: 5s}
            reads:
              <<: *block
              address: 127.0.0.1:5433
        pools: {default: {writes: {}, reads: {}}}
        proxies: {default: {writes: {}, reads: {}}}
    """
    config = load_text(tmp_path, base)
    reads = config.global_.clients["default"]["reads"]
    assert (reads.address, reads.dial_timeout) == ("127.0.0.1:5433", 5.0)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gatewayd.yaml"
    path.write_bytes(b"api: {token: \xff}\n")
    with pytest.raises(ConfigErrors) as caught:
        load(str(path), write(tmp_path, "", "p.yaml"), env={})
    assert str(caught.value) == f"{path}: is not UTF-8 text"


def test_a_given_path_must_exist(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigErrors) as caught:
        load(missing, missing.replace("nope", "nope2"), env={})
    assert [str(e) for e in caught.value.errors] == [
        f"{missing}: file not found", f"{missing.replace('nope', 'nope2')}: file not found"]
    with pytest.raises(ConfigErrors) as caught:
        load(str(tmp_path), None, env={})
    assert str(caught.value) == f"{tmp_path}: is a directory, not a file"


def test_lookup_current_directory_then_etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here, etc = tmp_path / "here", tmp_path / "etc"
    here.mkdir()
    etc.mkdir()
    monkeypatch.setattr(files, "SEARCH_DIRS", (str(here), str(etc)))
    with pytest.raises(ConfigErrors) as caught:
        load(env={})
    assert str(caught.value) == ("gatewayd.yaml: not found in ./ or /etc/ "
                                 "(write one with 'gatewayd config init', or pass --config)")

    (etc / "gatewayd.yaml").write_text("loggers: {default: {level: warn}}\n")
    config = load(env={})
    assert (config.global_path, config.plugins_path) == (str(etc / "gatewayd.yaml"), None)
    assert config.plugins == PluginsConfig()  # no plugins file anywhere: defaults

    (here / "gatewayd.yaml").write_text("loggers: {default: {level: error}}\n")
    (etc / "gatewayd_plugins.yaml").write_text("defaultPolicy: terminate\n")
    config = load(env={})
    assert config.global_path == str(here / "gatewayd.yaml")
    assert config.global_.loggers["default"].level == "error"
    assert config.plugins_path == str(etc / "gatewayd_plugins.yaml")
    assert config.plugins.default_policy == "terminate"


def test_real_lookup_prefers_the_working_directory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gatewayd.yaml").write_text("")
    (tmp_path / "gatewayd_plugins.yaml").write_text("")
    config = load(env={})
    assert config.global_path == os.path.join(".", "gatewayd.yaml")
    assert config.plugins_path == os.path.join(".", "gatewayd_plugins.yaml")


def test_plugins_file_types_and_unknown_keys(tmp_path: Path) -> None:
    plugins = write(tmp_path, """
        defaultPolicy: terminate
        actionRedis: {enabled: yes, adress: x}
        plugins:
          - name: cache
            localPath: ./cache
            checksum: "0000000000000000000000000000000000000000000000000000000000000000"
            args: [--log-level, 1]
          - enabled: true
        verificationPolicy: passdown
    """, "gatewayd_plugins.yaml")
    with pytest.raises(ConfigErrors) as caught:
        load(write(tmp_path, ""), plugins, env={})
    assert [str(e) for e in caught.value.errors] == [
        f"{plugins}: actionRedis.adress: unknown key (did you mean 'address'?)",
        f"{plugins}: plugins[0].args[1]: expected a string, got integer 1 (quote it)",
        f"{plugins}: plugins[1].name: required key is missing",
        f"{plugins}: verificationPolicy: unknown key (did you mean 'defaultPolicy'?)",
    ]


def test_errors_of_both_files_come_together(tmp_path: Path) -> None:
    glob = write(tmp_path, "pools: {default: {writes: {size: 0}}}")
    plugins = write(tmp_path, "defaultPolicy: drop", "gatewayd_plugins.yaml")
    with pytest.raises(ConfigErrors) as caught:
        load(glob, plugins, env={})
    assert [str(e) for e in caught.value.errors] == [
        f"{glob}: pools.default.writes.size: must be >= 1 (got 0)",
        f"{plugins}: defaultPolicy: 'drop' is not one of: passthrough, terminate",
    ]


def test_config_helpers_follow_the_decisions(tmp_path: Path) -> None:
    config = load_text(tmp_path, """
        loggers: {default: {}, b: {level: debug}}
        clients: {a: {x: {}, y: {}}, b: {z: {}}}
        pools: {a: {x: {}, y: {}}, b: {z: {}}}
        proxies: {a: {x: {}, y: {}}, b: {z: {}}}
        servers:
          a: {address: 127.0.0.1:1, proxies: [y, x]}
          b: {address: 127.0.0.1:2}
    """)
    assert config.blocks("a") == ["y", "x"]
    assert config.blocks("b") == ["z"]
    assert config.logger("a") is config.global_.loggers["default"]
    assert config.logger("b").level == "debug"


_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                     st.sampled_from(["", "x", "5s", "default", "writes", "DEFAULT", "127.0.0.1:1"]))
_KEYS = st.sampled_from(["clients", "pools", "proxies", "servers", "loggers", "default", "writes",
                         "Default", "address", "size", "loadBalancer", "loadBalancingRules",
                         "strategy", "distribution", "proxyName", "weight", "condition",
                         "dialTimeout", "output", "proxies", "api", "raft", "peers", "x.y"])
_DATA = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=20)


@given(st.dictionaries(_KEYS, _DATA, max_size=5))
def test_arbitrary_documents_never_crash_the_loader(data: dict) -> None:
    """Whatever the YAML holds, the answer is a config or ConfigErrors: never a traceback."""
    config, errors = build_global(data, "f.yaml")
    if not errors:
        errors = validate_global(config, "f.yaml")
    assert all(str(e).startswith("f.yaml: ") and "\n" not in str(e) for e in errors)
