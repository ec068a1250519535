"""AdminState: what every admin API route answers, read from a real gateway on a memory reactor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatewayd.api.errors import InvalidArgument, NotFound
from gatewayd.api.plain import nanoseconds, redacted, to_json
from gatewayd.api.state import (
    MAX_CLIENT_LIMIT, NOT_SERVING, RUNNING, SERVING, STOPPED, AdminState, parse_bool,
    parse_limit, version_info,
)
from gatewayd.config.schema import Client
from tests.unit.api_world import SECRETS, World, build_world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return build_world(tmp_path)


def assert_no_secret(data: object) -> None:
    text = json.dumps(data)
    for secret in SECRETS:
        assert secret not in text


# -- config ------------------------------------------------------------------------------------

def test_global_config_durations_are_nanoseconds_and_secrets_redacted(world: World) -> None:
    config = AdminState(world.gateway).global_config()
    writes = config["clients"]["default"]["writes"]
    assert writes["dialTimeout"] == 5_000_000_000
    assert writes["backoff"] == 1_000_000_000  # a default, as GatewayD's JSON shows it
    assert config["servers"]["default"]["tickInterval"] == 7_000_000_000
    assert writes["startupParams"] == {"user": "app", "database": "app", "password": "REDACTED"}
    assert config["api"]["token"] == "REDACTED"
    assert config["api"]["tokenFile"] == ""  # empty stays empty: "unset" is not a secret
    assert set(config) == {"loggers", "metrics", "clients", "pools", "proxies", "servers", "api",
                           "raft"}
    assert_no_secret(config)


def test_global_config_of_one_group(world: World) -> None:
    state = AdminState(world.gateway)
    config = state.global_config("tenant")
    assert set(config) == {"clients", "pools", "proxies", "servers", "api"}
    assert config["clients"] == {"tenant": {**config["clients"]["tenant"]}}
    assert list(config["servers"]) == ["tenant"]
    assert config["pools"]["tenant"]["main"]["size"] == 3
    assert config["api"]["token"] == "REDACTED"
    default = state.global_config("default")
    assert set(default["loggers"]) == {"default"} and set(default["metrics"]) == {"default"}
    with pytest.raises(NotFound, match="group not found"):
        state.global_config("nope")


def test_plugin_config_redacts_env_args_config_and_urls(world: World) -> None:
    config = AdminState(world.gateway).plugin_config()
    entry = config["plugins"][0]
    assert entry["env"] == ["API_KEY=REDACTED", "REGION=eu",
                            "DSN=postgres://app:REDACTED@db:5432/app"]
    assert entry["args"] == ["--verbose", "--token=REDACTED"]
    assert entry["config"] == {"apiKey": "REDACTED", "region": "eu"}
    assert config["healthCheckPeriod"] == 5_000_000_000
    assert_no_secret(config)


def test_redacted_command_lines() -> None:
    args = ["--password", "p1", "-v", "--api-key=k1", "--keyFile", "/etc/key.pem", "--name", "x"]
    assert redacted({"args": args})["args"] == [
        "--password", "REDACTED", "-v", "--api-key=REDACTED", "--keyFile", "/etc/key.pem",
        "--name", "x"]


def test_to_json_leaves_unset_objects_out() -> None:
    plain = to_json(Client())
    assert "startupParams" not in plain
    assert plain["dialTimeout"] == nanoseconds(60.0) == 60_000_000_000
    assert nanoseconds(0.0015) == 1_500_000


# -- plugins -----------------------------------------------------------------------------------

def test_plugins_in_gatewayd_shape(world: World) -> None:
    configs = AdminState(world.gateway).plugins()["configs"]
    assert len(configs) == 1
    plugin = configs[0]
    assert plugin["id"] == {"name": "secret-plugin", "version": "1.2.3", "remoteUrl": "",
                            "checksum": "ab" * 32}
    assert plugin["hooks"] == [12, 14]  # onOpened, onClosed as enum numbers
    assert plugin["requires"] == {}
    assert plugin["config"] == {"apiKey": "REDACTED", "region": "eu"}
    assert plugin["authors"] == ["tests"] and plugin["tags"] == ["test"]
    assert_no_secret(configs)


def test_requirements_become_a_map(world: World) -> None:
    from gatewayd.sdk.inprocess import InProcessPlugin
    from tests.unit.api_world import NeedyPlugin

    world.gateway.hooks.register(InProcessPlugin(NeedyPlugin(), 1005))
    configs = AdminState(world.gateway).plugins()["configs"]
    assert [c["id"]["name"] for c in configs] == ["secret-plugin", "needy"]
    assert configs[1]["requires"] == {"secret-plugin": "1.0.0"}  # the SDK's list, as the proto's map
    assert configs[1]["id"]["checksum"] == ""  # not in the config file


def test_plugin_health_lists_entries_that_did_not_load(world: World) -> None:
    plugins = {p["name"]: p for p in AdminState(world.gateway).status()["plugins"]}
    assert plugins["secret-plugin"]["health"] == "serving"
    assert plugins["secret-plugin"]["kind"] == "in-process"
    assert plugins["secret-plugin"]["hooks"] == ["onClosed", "onOpened"]
    assert plugins["never-loaded"]["health"] == "not loaded"
    assert plugins["never-loaded"]["kind"] == "process"


# -- pools, proxies, servers -------------------------------------------------------------------

def test_pools_count_idle_connections_against_capacity(world: World) -> None:
    state = AdminState(world.gateway)
    assert state.pools() == {"default": {"writes": {"cap": 2, "size": 0},
                                         "reads": {"cap": 1, "size": 0}},
                             "tenant": {"main": {"cap": 3, "size": 0}}}
    world.connect_backends()
    assert state.pools()["default"]["writes"] == {"cap": 2, "size": 2}
    client = world.connect_client()
    assert state.pools()["default"][client.block.name]["size"] == \
        state.pools()["default"][client.block.name]["cap"] - 1


def test_proxies_list_idle_backend_and_busy_client_addresses(world: World) -> None:
    world.connect_backends()
    state = AdminState(world.gateway)
    before = state.proxies()["default"]["writes"]
    assert before["busy"] == [] and before["total"] == 2
    idle = {f"{t.getHost().host}:{t.getHost().port}" for t in world.backends[5432]}
    assert set(before["available"]) == idle
    first = world.connect_client(remote=("10.9.8.7", 41000))
    second = world.connect_client(remote=("10.9.8.7", 41001))
    assert {first.block.name, second.block.name} == {"writes", "reads"}  # round robin
    after = state.proxies()["default"]
    assert after["writes"]["busy"] == [first.peer_info()["remote"]] \
        if first.block.name == "writes" else [second.peer_info()["remote"]]
    assert len(after["writes"]["available"]) == 1 and after["writes"]["total"] == 2
    assert after["reads"]["available"] == [] and after["reads"]["total"] == 1
    assert state.proxies()["tenant"]["main"] == {
        "available": state.proxies()["tenant"]["main"]["available"], "busy": [], "total": 3}


def test_servers(world: World) -> None:
    servers = AdminState(world.gateway).servers()
    assert servers["default"] == {
        "network": "tcp", "address": servers["default"]["address"], "status": RUNNING,
        "tickInterval": 7_000_000_000, "loadBalancer": {"strategy": "ROUND_ROBIN"},
        "isTLSEnabled": False}
    assert servers["default"]["address"].endswith(":15432")
    assert servers["tenant"]["loadBalancer"] == {"strategy": "RANDOM"}


def test_not_started_gateway_is_stopped_and_not_serving(tmp_path: Path) -> None:
    state = AdminState(build_world(tmp_path, start=False).gateway)
    assert {s["status"] for s in state.servers().values()} == {STOPPED}
    serving, body = state.health()
    assert not serving
    assert body["status"] == NOT_SERVING
    assert body["servers"] == {"default": NOT_SERVING, "tenant": NOT_SERVING}


# -- health ------------------------------------------------------------------------------------

def test_health_serves_while_listening_and_strict_needs_every_backend(world: World) -> None:
    state = AdminState(world.gateway)
    serving, body = state.health()
    assert serving and body["status"] == SERVING
    assert body["backends"]["default"] == {"writes": "starting", "reads": "starting"}
    assert state.health(strict=True)[0] is False
    world.connect_backends(5432, 5433)
    assert state.health(strict=True)[0] is False  # tenant/main still dialling
    world.connect_backends()
    serving, body = state.health(strict=True)
    assert serving and body["backends"]["tenant"] == {"main": "healthy"}


def test_health_strict_fails_for_an_unreachable_backend(world: World) -> None:
    world.connect_backends(5432, 5434)
    world.refuse_backends(5433)
    state = AdminState(world.gateway)
    assert state.health()[1]["backends"]["default"]["reads"] == "unhealthy"
    assert state.health()[0] is True
    assert state.health(strict=True)[0] is False
    block = next(b for s in state.status()["servers"] for b in s["blocks"] if b["name"] == "reads")
    assert block["pool"]["state"] == "unhealthy" and block["pool"]["lastError"]
    assert block["dialFailures"] >= 1


# -- status ------------------------------------------------------------------------------------

def test_status_shows_clients_pools_and_byte_counters(world: World) -> None:
    world.connect_backends()
    client = world.connect_client(remote=("10.1.2.3", 40001))
    waiting = world.connect_client(remote=("10.1.2.4", 40002), startup=False)
    status = AdminState(world.gateway).status()
    assert status["status"] == SERVING
    assert status["clients"]["total"] == 2 and not status["clients"]["truncated"]
    shown = {c["remote"]: c for c in status["clients"]["shown"]}
    assert shown["10.1.2.3:40001"]["state"] == "active"
    assert shown["10.1.2.3:40001"]["block"] == client.block.name
    assert shown["10.1.2.4:40002"] == {"group": "default", "block": "", "remote": "10.1.2.4:40002",
                                       "local": "127.0.0.1:15432", "tls": False,
                                       "state": "startup"}
    default = status["servers"][0]
    assert default["group"] == "default" and default["clients"] == 2 and default["listening"]
    block = next(b for b in default["blocks"] if b["name"] == client.block.name)
    assert block["clients"] == 1
    assert block["pool"]["busy"] == 1
    assert block["bytes"]["bytesFromClient"] > 0  # the startup message went through
    assert status["totals"]["clients"] == 2
    assert status["totals"]["bytesToServer"] == sum(
        b["bytes"]["bytesToServer"] for s in status["servers"] for b in s["blocks"])
    assert waiting.session is None


def test_status_limits_the_client_list(world: World) -> None:
    world.connect_backends()
    for port in range(3):
        world.connect_client(remote=("10.0.0.1", 41000 + port))
    status = AdminState(world.gateway).status(limit=2)
    assert status["clients"]["total"] == 3
    assert len(status["clients"]["shown"]) == 2 and status["clients"]["truncated"]
    assert AdminState(world.gateway).status(limit=0)["clients"]["shown"] == []


def test_version() -> None:
    from gatewayd import __version__
    assert AdminState(None).version() == {"version": __version__, "versionInfo": version_info()}
    assert version_info().startswith(f"gatewayd v{__version__} (Python ")


# -- parameters --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [("true", True), ("1", True), ("YES", True),
                                         ("false", False), ("0", False), ("", False)])
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool("strict", text) is value


def test_parse_bool_refuses_anything_else() -> None:
    with pytest.raises(InvalidArgument, match="'strict' must be true or false"):
        parse_bool("strict", "maybe")


def test_parse_limit() -> None:
    assert parse_limit("0") == 0 and parse_limit(str(MAX_CLIENT_LIMIT)) == MAX_CLIENT_LIMIT
    for bad in ("-1", str(MAX_CLIENT_LIMIT + 1), "ten", "1.5"):
        with pytest.raises(InvalidArgument):
            parse_limit(bad)


def test_a_client_on_its_way_out_is_not_listed(world: World) -> None:
    world.connect_backends()
    leaving = world.connect_client(remote=("10.1.2.3", 40001))
    world.connect_client(remote=("10.1.2.3", 40002))
    leaving.transport.connected = False  # lost, not yet removed from the factory
    state = AdminState(world.gateway)
    status = state.status()
    assert [c["remote"] for c in status["clients"]["shown"]] == ["10.1.2.3:40002"]
    busy = [c for b in state.proxies()["default"].values() for c in b["busy"]]
    assert busy == ["10.1.2.3:40002"]
