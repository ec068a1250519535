"""
Tests for the SDK's L{Plugin} class, the in-process adapter and loader, the
plugin logger and the settings helpers.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import datetime, timezone
from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from zope.interface.verify import verifyObject

from gatewayd.act import ActRegistry
from gatewayd.config.schema import PluginEntry
from gatewayd.hooks import names
from gatewayd.hooks.registry import HookRegistry
from gatewayd.interfaces import IPlugin
from gatewayd.plugins.errors import PluginLoadError
from gatewayd.sdk import Plugin, hook, hook_name, signals
from gatewayd.sdk.inprocess import InProcessPlugin, import_plugin_class, load_inprocess
from gatewayd.sdk.log import HclogLog, TwistedPluginLog
from gatewayd.sdk.settings import as_bool, as_float, as_list, from_env

# load_inprocess imports "tests.unit.test_sdk" and "examples...": from the repository root.
ROOT = str(__import__("pathlib").Path(__file__).resolve().parents[2])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class Echo(Plugin):
    name = "echo"
    version = "1.2.3"
    description = "test plugin"
    authors = ("a", "b")
    license = "MIT"
    project_url = "https://example.com"
    remote_url = "github.com/x/echo"
    tags = ("t",)
    categories = ("c",)
    requires = ({"name": "other", "version": "1.0.0", "remoteUrl": "github.com/x/other"},)

    @hook("onTrafficFromClient", "OnTrafficToServer")
    def traffic(self, payload: dict) -> dict:
        payload["seen"] = payload.get("seen", 0) + 1
        return payload

    @hook(names.NUMBER_BY_NAME["onClosed"])
    def closed(self, payload: dict) -> None:
        return None

    @hook("HOOK_NAME_ON_TICK")
    async def tick(self, payload: dict) -> dict:
        return {**payload, "ticked": True}


class Child(Echo):
    @hook("onTick")
    def tick(self, payload: dict) -> dict:  # overrides the async one
        return {**payload, "child": True}

    @hook("onTrafficFromServer")
    def broken(self, payload: dict) -> dict:
        raise RuntimeError("boom")

    @hook("onTrafficToClient")
    def wrong(self, payload: dict) -> Any:
        return [1, 2]


class Awaiting(Plugin):
    name = "awaiting"

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.gate: Deferred = Deferred()

    @hook("onTrafficFromClient")
    async def slow(self, payload: dict) -> dict:
        value = await self.gate
        return {**payload, "value": value}


def fired(d: Deferred) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "not fired"
    return box[0]


def test_hook_names() -> None:
    assert hook_name("onTrafficFromClient") == "onTrafficFromClient"
    assert hook_name("OnTrafficFromClient") == "onTrafficFromClient"
    assert hook_name("HOOK_NAME_ON_TRAFFIC_FROM_CLIENT") == "onTrafficFromClient"
    assert hook_name(16) == "onTrafficFromClient"
    for bad in ("onNothing", 0, 99, True, None):
        with pytest.raises(ValueError):
            hook_name(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hook()


def test_hooks_collected_with_inheritance() -> None:
    assert Echo.hook_names() == {"onTrafficFromClient", "onTrafficToServer", "onClosed", "onTick"}
    assert Child.hook_names() == Echo.hook_names() | {"onTrafficFromServer", "onTrafficToClient"}
    assert Child().handler("onTick").__func__ is Child.tick
    assert Plugin.hook_names() == frozenset()


def test_plugin_config_shape() -> None:
    plugin = Echo({"limit": 3, "on": True, "ratio": 0.5, "skip": [1], "none": None})
    config = plugin.plugin_config()
    assert config == {
        "id": {"name": "echo", "version": "1.2.3", "remoteUrl": "github.com/x/echo"},
        "description": "test plugin",
        "authors": ["a", "b"],
        "license": "MIT",
        "projectUrl": "https://example.com",
        "config": {"limit": "3", "on": "true", "ratio": "0.5", "none": ""},
        "hooks": [14, 16, 17, 21],
        "requires": [{"name": "other", "version": "1.0.0", "remoteUrl": "github.com/x/other"}],
        "tags": ["t"],
        "categories": ["c"],
    }

    class WithMetrics(Echo):
        metrics_unix_socket = "/tmp/echo-metrics.sock"

    config = WithMetrics().plugin_config()["config"]
    assert config["metricsEnabled"] == "true"
    assert config["metricsUnixDomainSocket"] == "/tmp/echo-metrics.sock"


def test_inprocess_adapter_provides_iplugin() -> None:
    adapter = InProcessPlugin(Echo(), 1000, failure_mode="closed")
    assert verifyObject(IPlugin, adapter)
    assert adapter.name == "echo" and adapter.priority == 1000
    assert adapter.hooks == Echo.hook_names()
    assert adapter.metadata["id"]["version"] == "1.2.3"
    assert adapter.failure_mode == "closed"


def test_inprocess_sync_call_is_immediate() -> None:
    adapter = InProcessPlugin(Echo(), 1000)
    payload = {"request": b"x"}
    result = fired(adapter.call_hook("onTrafficFromClient", payload))
    assert result is payload and result["seen"] == 1
    assert fired(adapter.call_hook("onClosed", payload)) is payload  # None means unchanged
    assert fired(adapter.call_hook("onBooting", payload)) is payload  # not subscribed


def test_inprocess_async_hook() -> None:
    adapter = InProcessPlugin(Echo(), 1000)
    assert fired(adapter.call_hook("onTick", {"n": 1})) == {"n": 1, "ticked": True}
    plugin = Awaiting()
    adapter = InProcessPlugin(plugin, 1000)
    d = adapter.call_hook("onTrafficFromClient", {"n": 1})
    assert not d.called
    plugin.gate.callback(7)
    assert fired(d) == {"n": 1, "value": 7}


def test_inprocess_errors_fail_the_call() -> None:
    """In-process, exceptions and bad results are failures (failureMode decides)."""
    adapter = InProcessPlugin(Child(), 1000)
    failure = fired(adapter.call_hook("onTrafficFromServer", {}))
    assert failure.check(RuntimeError)
    failure = fired(adapter.call_hook("onTrafficToClient", {}))
    assert failure.check(TypeError)


def test_inprocess_in_registry_with_timeout_and_closed_mode() -> None:
    """An async in-process hook that hangs is cancelled at the chain deadline."""
    clock = Clock()
    registry = HookRegistry(clock, ActRegistry(clock=clock), timeout=2.0)
    plugin = Awaiting()
    registry.register(InProcessPlugin(plugin, 1000, failure_mode="closed"))
    d = registry.run("onTrafficFromClient", {"request": b"Q\x00\x00\x00\x05\x00"})
    clock.advance(2)
    result = fired(d)
    assert result["__terminal__"] is True
    assert b"58000" in result["response"]


def test_inprocess_terminate_signal() -> None:
    class Blocker(Plugin):
        name = "blocker"

        @hook("onTrafficFromClient")
        def block(self, payload: dict) -> dict:
            payload["__signals__"] = [signals.terminate()]
            payload["response"] = b"no"
            return payload

    clock = Clock()
    registry = HookRegistry(clock, ActRegistry(clock=clock))
    registry.register(InProcessPlugin(Blocker(), 1000))
    result = fired(registry.run("onTrafficFromClient", {"request": b"x"}))
    assert result["__terminal__"] is True and result["response"] == b"no"


def test_load_inprocess() -> None:
    reactor = Clock()
    entry = PluginEntry(name="my-echo", module="tests.unit.test_sdk:Echo", config={"k": "v"},
                        failure_mode="closed")
    plugin = load_inprocess(entry, 1003, reactor)
    assert verifyObject(IPlugin, plugin)
    assert (plugin.name, plugin.priority, plugin.failure_mode) == ("my-echo", 1003, "closed")
    assert plugin.instance.config == {"k": "v"}
    assert plugin.instance.reactor is reactor
    assert isinstance(plugin.instance.log, TwistedPluginLog)
    events: list[dict] = []
    routed = load_inprocess(entry, 1003, reactor, observer=events.append)
    routed.instance.log.info("hello", k=1)
    assert [(e["plugin"], e["plugin_message"], e["k"], e["log_namespace"]) for e in events] == [
        ("my-echo", "hello", 1, "gatewayd.plugins.my-echo")]


@pytest.mark.parametrize("module, problem", [
    ("no_colon", "is not 'package.module:Class'"),
    ("does.not.exist:X", "cannot import does.not.exist"),
    ("tests.unit.test_sdk:Missing", "has no attribute Missing"),
    ("tests.unit.test_sdk:fired", "is not a gatewayd.sdk.Plugin subclass"),
])
def test_load_inprocess_errors(module: str, problem: str) -> None:
    with pytest.raises(PluginLoadError) as info:
        load_inprocess(PluginEntry(name="p", module=module), 1000, Clock())
    assert problem in str(info.value)
    assert str(info.value).startswith("plugin p: module: ")


def test_load_inprocess_constructor_error() -> None:
    entry = PluginEntry(name="fw", module="examples.sql_firewall.plugin:SQLFirewall",
                        config={"blockDrop": "maybe"})
    with pytest.raises(PluginLoadError, match="ValueError: not a boolean: 'maybe'"):
        load_inprocess(entry, 1000, Clock())


def test_import_plugin_class_dotted() -> None:
    assert import_plugin_class("tests.unit.test_sdk:Echo") is Echo


def test_twisted_plugin_log() -> None:
    events: list[dict] = []
    log = TwistedPluginLog("echo", Logger(observer=events.append))
    log.warn("careful", table="t", format="x", log_level="bad")
    [event] = events
    assert event["log_level"] is LogLevel.warn
    assert (event["plugin"], event["plugin_message"], event["table"]) == ("echo", "careful", "t")
    assert event["log_format"] == "{plugin_message}"


def test_hclog_lines() -> None:
    stream = io.StringIO()
    when = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=timezone.utc)
    log = HclogLog("echo", stream, level="debug", now=lambda: when)
    log.trace("hidden")
    log.info("hello", n=1, raw=b"\xff", **{"@level": "x"})
    log.error("bad")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0] == {"@level": "info", "@message": "hello", "@module": "echo",
                        "@timestamp": "2026-01-02T03:04:05.123456Z", "n": 1, "raw": "\\xff"}
    assert lines[1]["@level"] == "error"
    assert len(lines) == 2


def test_settings() -> None:
    assert [as_bool(v) for v in (True, "true", "1", "YES", "on", "false", "0", "", None)] == [
        True, True, True, True, True, False, False, False, False]
    assert as_bool(None, True) is True
    with pytest.raises(ValueError):
        as_bool("maybe")
    assert as_list("a, b,,c") == ["a", "b", "c"]
    assert as_list(["x", " y "]) == ["x", "y"]
    assert as_list(None) == []
    assert as_float("2.5") == 2.5 and as_float("", 3.0) == 3.0
    assert from_env({"blockDrop": "BLOCK_DROP", "x": "X"}, {"BLOCK_DROP": "false"}) == {"blockDrop": "false"}
