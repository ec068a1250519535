"""The generated JSON Schema and `config lint` (gatewayd.config.lint)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from gatewayd.config.build import build_global, build_plugins
from gatewayd.config.lint import json_schema, lint_global, lint_plugins, schema_errors
from gatewayd.config.render import render_global, render_plugins
from gatewayd.config.schema import GlobalConfig, PluginsConfig
from gatewayd.config.shape import slots


def write(tmp_path: Path, text: str, name: str = "gatewayd.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def lines(errors: list, tmp_path: Path) -> list[str]:
    return [str(e).replace(str(tmp_path), "<dir>") for e in errors]


@pytest.mark.parametrize("cls", [GlobalConfig, PluginsConfig])
def test_schemas_are_valid_draft_2020_12(cls: type) -> None:
    schema = json_schema(cls)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_shape() -> None:
    schema = json_schema(GlobalConfig)
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {s.key for s in slots(GlobalConfig)}
    defs = schema["$defs"]
    for name, definition in defs.items():
        assert definition["additionalProperties"] is False, name
    # groups and blocks are maps of lower-case names
    clients = schema["properties"]["clients"]["anyOf"][0]
    assert clients["patternProperties"].keys() == {"^[a-z0-9][a-z0-9_-]*$"}
    assert clients["additionalProperties"] is False
    # durations: a Go string or integer nanoseconds
    dial = defs["Client"]["properties"]["dialTimeout"]
    assert [alt["type"] for alt in dial["oneOf"]] == ["string", "integer"]
    assert dial["default"] == "1m"
    # enums and minimums
    assert defs["LoadBalancer"]["properties"]["strategy"]["enum"][:3] == [
        "ROUND_ROBIN", "RANDOM", "WEIGHTED_ROUND_ROBIN"]
    assert defs["Pool"]["properties"]["size"]["minimum"] == 1
    assert defs["Distribution"]["required"] == ["proxyName"]
    assert defs["LoadBalancingRule"]["required"] == ["condition", "distribution"]
    plugins = json_schema(PluginsConfig)
    assert plugins["properties"]["defaultPolicy"]["enum"] == ["passthrough", "terminate"]
    assert plugins["$defs"]["PluginEntry"]["required"] == ["name"]


@pytest.mark.parametrize("example", ["default", "multi-pool"])
def test_schema_accepts_rendered_files(example: str) -> None:
    assert schema_errors(GlobalConfig, yaml.safe_load(render_global(example)), "f") == []
    assert schema_errors(PluginsConfig, yaml.safe_load(render_plugins()), "f") == []


def test_schema_accepts_nanosecond_integers_and_nulls() -> None:
    data = {"clients": {"default": {"writes": {"dialTimeout": 5_000_000_000}, "reads": None}},
            "api": None, "servers": {"default": {"proxies": None}}}
    assert schema_errors(GlobalConfig, data, "f") == []


def test_lint_of_valid_files(tmp_path: Path) -> None:
    assert lint_global(write(tmp_path, render_global("multi-pool"))) == []
    assert lint_plugins(write(tmp_path, render_plugins(), "p.yaml")) == []
    assert lint_global(write(tmp_path, "")) == []


def test_lint_reports_schema_problems_one_per_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        loggers: {default: {level: loud, output: [console, syslg]}}
        clients: {default: {writes: {dialtimeout: 5s, retries: "3", dialTimeout: 30, backoff: 30}}}
        pools: {default: {writes: {size: 0}}}
        servers: {default: {loadBalancer: {strategy: WEIGHTED}}}
        apii: {}
    """)
    # The loader's type errors in file order, then what only the schema sees while the
    # types are wrong (enums, minimums): nothing is lost, nothing is said twice.
    assert lines(lint_global(path), tmp_path) == [
        "<dir>/gatewayd.yaml: clients.default.writes.dialtimeout: unknown key "
        "(did you mean 'dialTimeout'?)",
        "<dir>/gatewayd.yaml: clients.default.writes.retries: expected an integer, got string '3'",
        "<dir>/gatewayd.yaml: apii: unknown key (did you mean 'api'?)",
        "<dir>/gatewayd.yaml: loggers.default.output[1]: 'syslg' is not one of: console, stdout, "
        "stderr, file, syslog, rsyslog (did you mean 'syslog'?)",
        "<dir>/gatewayd.yaml: loggers.default.level: 'loud' is not one of: trace, debug, info, "
        "warn, error, fatal, panic, disabled",
        "<dir>/gatewayd.yaml: pools.default.writes.size: must be >= 1 (got 0)",
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.strategy: 'WEIGHTED' is not one of: "
        "ROUND_ROBIN, RANDOM, WEIGHTED_ROUND_ROBIN, CONSISTENT_HASH, LEAST_CONNECTIONS",
    ]


def test_lint_runs_the_cross_reference_validation_that_gatewayd_lint_skips(tmp_path: Path) -> None:
    path = write(tmp_path, """
        clients: {default: {writes: {}, reads: {}}}
        pools: {default: {writes: {}}}
        proxies: {default: {writes: {}, reads: {}}}
        servers:
          default:
            proxies: [writes, replica]
            loadBalancer:
              strategy: WEIGHTED_ROUND_ROBIN
              loadBalancingRules:
                - condition: user ~ "(" AND database == "x"
                  distribution: [{proxyName: reads, weight: 0}]
    """)
    assert lines(lint_global(path), tmp_path) == [
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.loadBalancingRules[0].distribution[0]"
        ".weight: must be >= 1 (got 0)",
        "<dir>/gatewayd.yaml: clients.default.reads: block has no matching pools.default.reads",
        "<dir>/gatewayd.yaml: proxies.default.reads: block has no matching pools.default.reads",
        "<dir>/gatewayd.yaml: servers.default.proxies[1]: unknown block 'replica' "
        "(blocks: writes, reads)",
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.loadBalancingRules[0].condition: "
        "bad condition: bad regular expression at column 8: missing ), unterminated subpattern "
        "at position 0",
        "<dir>/gatewayd.yaml: servers.default.loadBalancer.loadBalancingRules[0].distribution[0]"
        ".proxyName: block 'reads' is not in servers.default.proxies",
    ]


def test_lint_and_load_agree_on_case_folding(tmp_path: Path) -> None:
    path = write(tmp_path, """
        clients: {Default: {Writes: {}}}
        pools: {default: {writes: {}}}
        proxies: {default: {writes: {}}}
    """)
    assert lint_global(path) == []
    path = write(tmp_path, "clients: {default: {writes: {}}, DEFAULT: {writes: {}}}")
    assert lines(lint_global(path), tmp_path) == [
        "<dir>/gatewayd.yaml: clients.DEFAULT: duplicate group name: 'default' is also declared "
        "and group names are case-insensitive"]


def test_lint_duration_messages(tmp_path: Path) -> None:
    path = write(tmp_path, "proxies: {default: {writes: {healthCheckPeriod: 1 minute}}}")
    assert lines(lint_global(path), tmp_path) == [
        "<dir>/gatewayd.yaml: proxies.default.writes.healthCheckPeriod: unknown unit ' minute' "
        "in duration '1 minute' (use ns, us, ms, s, m or h)"]


def test_lint_of_unreadable_files(tmp_path: Path) -> None:
    assert lines(lint_global(str(tmp_path / "missing.yaml")), tmp_path) == [
        "<dir>/missing.yaml: file not found"]
    assert lines(lint_plugins(write(tmp_path, "plugins: [", "p.yaml")), tmp_path) == [
        "<dir>/p.yaml: invalid YAML at line 1, column 11: expected the node content, "
        "but found '<stream end>'"]


def test_lint_plugins(tmp_path: Path) -> None:
    path = write(tmp_path, """
        defaultPolicy: allow
        plugins:
          - name: cache
            localPath: ./cache
          - localPath: ./x
            checksum: xyz
            colour: red
    """, "p.yaml")
    assert lines(lint_plugins(path), tmp_path) == [
        "<dir>/p.yaml: plugins[1].colour: unknown key",
        "<dir>/p.yaml: plugins[1].name: required key is missing",
        "<dir>/p.yaml: defaultPolicy: 'allow' is not one of: passthrough, terminate",
    ]
    path = write(tmp_path, """
        plugins:
          - name: cache
            localPath: ./cache
    """, "p.yaml")
    assert lines(lint_plugins(path), tmp_path) == [
        "<dir>/p.yaml: plugins[0].checksum: required with localPath "
        "(hex SHA-256 of the executable)"]


BAD_DOCUMENTS = [
    {"apii": {}},
    {"clients": {"default": {"writes": {"dialtimeout": "5s", "retries": "3"}}}},
    {"clients": {"default": {"writes": {"dialTimeout": "30", "tcpKeepAlive": 1}}}},
    {"loggers": {"default": {"output": "console", "noColor": "yes", "maxSize": 1.5}}},
    {"servers": {"default": {"loadBalancer": {"loadBalancingRules": [{"distribution": [{}]}]}}}},
    {"servers": {"default": {"proxies": [1], "enableTLS": "no"}}},
    {"api": [1]},
    {"raft": {"peers": [{"id": 1}], "isBootstrap": "y"}},
    {"metrics": {"default": {"timeout": True}}},
    {"loggers": {"default": {}, "a.b": {}, "ok_1": {"level": 1}}},
    {"clients": {"default": {"writes": {}, "-bad": {}}}},
]


@pytest.mark.parametrize("data", BAD_DOCUMENTS)
def test_schema_and_loader_find_the_same_keys(tmp_path: Path, data: dict) -> None:
    """The generated schema and the loader are two readings of one table: they must agree."""
    _, build_errors = build_global(data, "f")
    assert build_errors
    assert {e.key for e in schema_errors(GlobalConfig, data, "f")} == {e.key for e in build_errors}


BAD_PLUGIN_DOCUMENTS = [
    {"plugins": [{"localPath": "x", "args": [1], "colour": 1}]},
    {"policies": [{"name": "p"}], "actionRedis": {"enabled": "yes"}},
    {"timeout": 1.5, "verificationPolicy": "passdown"},
]


@pytest.mark.parametrize("data", BAD_PLUGIN_DOCUMENTS)
def test_plugin_schema_and_loader_find_the_same_keys(data: dict) -> None:
    _, build_errors = build_plugins(data, "f")
    assert build_errors
    assert {e.key for e in schema_errors(PluginsConfig, data, "f")} == {e.key for e in build_errors}
