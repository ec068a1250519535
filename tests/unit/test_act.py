"""
Tests for L{gatewayd.act}: built-in signals/policies/actions, user policy
overrides, the default policy, terminal precedence and policy errors.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from gatewayd.act import ActRegistry, HookInfo, Output, Policy, PolicyError, Signal
from gatewayd.act.actions import Action
from gatewayd.act.policy import PolicyInput, to_bool
from gatewayd.act.signals import log, parse_signals, passthrough, terminate
from gatewayd.config.schema import ActionRedis, PluginsConfig
from gatewayd.config.schema import Policy as PolicyConfig
from gatewayd.errors import ConfigError, ConfigErrors
from gatewayd.pgwire import MessageFramer, decode_server_message, query


class Events(list):
    def __call__(self, event: dict) -> None:
        self.append(event)

    def texts(self) -> list[str]:
        return [formatEvent(e) for e in self]


def make(**kwargs: Any) -> tuple[ActRegistry, Clock, Events]:
    clock = Clock()
    events = Events()
    return ActRegistry(clock=clock, log=Logger(observer=events), **kwargs), clock, events


class FakePublisher:
    def __init__(self, result: Deferred | None = None) -> None:
        self.published: list[bytes] = []
        self.result = result

    def publish(self, payload: bytes) -> Deferred:
        self.published.append(payload)
        return self.result if self.result is not None else succeed(1)


# -- signals -----------------------------------------------------------------------

def test_signal_builders_match_go_sdk() -> None:
    assert terminate() == {"name": "terminate", "metadata": {"terminate": True}}
    assert passthrough() == {"name": "passthrough", "metadata": None}
    assert log("debug", "hello", key=b"k") == {
        "name": "log", "metadata": {"log": True, "level": "debug", "message": "hello", "key": b"k"}}


def test_parse_signals_skips_malformed() -> None:
    signals, problems = parse_signals([terminate(), "x", {"metadata": {}}, {"name": "log", "metadata": 3},
                                       passthrough()])
    assert signals == [Signal("terminate", {"terminate": True}), Signal("passthrough", {})]
    assert len(problems) == 3
    assert parse_signals("nope")[0] == []
    assert parse_signals(None) == ([], [])


# -- apply ---------------------------------------------------------------------------

def test_no_signals_uses_default_passthrough() -> None:
    act, _, _ = make()
    assert act.apply([]) == [Output("passthrough", {}, True, False, True)]


def test_builtin_terminate() -> None:
    act, _, _ = make()
    [out] = act.apply([Signal("terminate", {"terminate": True})])
    assert out == Output("terminate", {"terminate": True}, True, True, True)
    [out] = act.apply([Signal("terminate", {"terminate": False})])
    assert out.verdict is False


def test_builtin_log() -> None:
    act, _, _ = make()
    [out] = act.apply([Signal("log", {"log": True, "level": "info", "message": "m"})])
    assert (out.matched_policy, out.verdict, out.sync, out.terminal) == ("log", True, False, False)


def test_terminal_beats_sync_non_terminal() -> None:
    """Terminate wins over passthrough; async log still applies."""
    act, _, _ = make()
    outputs = act.apply([Signal("passthrough"), Signal("terminate", {"terminate": True}),
                         Signal("log", {"log": True, "message": "x"})])
    assert [o.matched_policy for o in outputs] == ["terminate", "log"]


def test_unknown_signal_ignored_then_default() -> None:
    act, _, events = make()
    outputs = act.apply([Signal("explode", {})])
    assert [o.matched_policy for o in outputs] == ["passthrough"]
    assert any("Unknown signal 'explode'" in t for t in events.texts())


def test_policy_error_skips_without_default() -> None:
    """A failing policy is logged and yields no output (and no default fallback)."""
    act, _, events = make()
    act.add_policy(Policy("log", "Signal.count + 1 > 2"))
    assert act.apply([Signal("log", {"count": "three"})]) == []
    assert any("Policy 'log' failed" in t for t in events.texts())


def test_user_policy_overrides_builtin_via_config(tmp_path: Any) -> None:
    config = PluginsConfig(policies=[
        PolicyConfig("terminate", 'Signal.terminate == true && Policy.terminate == "stop"',
                     {"terminate": "continue"}),
        PolicyConfig("log", 'Signal.log == true && Signal.level != "debug"', {}),
    ])
    act = ActRegistry.from_config(config, reactor=Clock(), path="gatewayd_plugins.yaml")
    assert act.publisher is None
    [out] = act.apply([Signal("terminate", {"terminate": True})])
    assert out.verdict is False
    [out] = act.apply([Signal("log", {"log": True, "level": "debug"})])
    assert out.verdict is False
    [out] = act.apply([Signal("log", {"log": True, "level": "warn"})])
    assert out.verdict is True


def test_default_policy_from_config() -> None:
    act = ActRegistry.from_config(PluginsConfig(default_policy="terminate"), reactor=Clock())
    [out] = act.apply([])
    assert out.matched_policy == "terminate" and out.verdict and out.terminal


def test_unknown_default_policy_falls_back() -> None:
    act, _, events = make(default_policy="nonsense")
    assert act.default_policy == "passthrough"
    assert any("does not exist" in t for t in events.texts())


def test_policy_compile_error_names_the_key() -> None:
    config = PluginsConfig(policies=[PolicyConfig("log", "Signal.log ==", {})])
    with pytest.raises(ConfigError) as info:
        ActRegistry.from_config(config, reactor=Clock(), path="etc/gatewayd_plugins.yaml")
    assert info.value.key == "policies[0].policy"
    text = str(info.value)
    assert text.startswith("etc/gatewayd_plugins.yaml: policies[0].policy: policy 'log' does not compile")
    assert "\n" not in text


def test_several_policy_errors() -> None:
    config = PluginsConfig(policies=[
        PolicyConfig("a", "1 +", {}), PolicyConfig("", "true", {}),
        PolicyConfig("c", "Unknown == 1", {})])
    with pytest.raises(ConfigErrors) as info:
        ActRegistry.from_config(config, reactor=Clock(), path="p.yaml")
    assert [e.key for e in info.value.errors] == ["policies[0].policy", "policies[1].name",
                                                  "policies[2].policy"]
    assert "undeclared reference to 'Unknown'" in str(info.value.errors[2])


def test_action_redis_address_checked() -> None:
    config = PluginsConfig(action_redis=ActionRedis(enabled=True, address="host:notaport"))
    with pytest.raises(ConfigError) as info:
        ActRegistry.from_config(config, reactor=Clock(), path="p.yaml")
    assert info.value.key == "actionRedis.address"


# -- policies ------------------------------------------------------------------------

def test_hook_environment() -> None:
    policy = Policy("x", 'Hook.Name == "HOOK_NAME_ON_TRAFFIC_FROM_CLIENT" && Hook.Priority == 1000 '
                         '&& Hook.Result.request == b"Q" && Hook.Params.n == 2 && Name == "x" && Sync')
    hook = HookInfo("onTrafficFromClient", 1000, {"n": 2}, {"request": b"Q"})
    assert policy.evaluate(PolicyInput("x", {}, True, hook)) is True
    assert policy.evaluate(PolicyInput("x", {}, False, hook)) is False


def test_missing_keys_read_as_nil_like_expr() -> None:
    """Expr reads a missing key as nil: == is false, != is true."""
    assert Policy("a", "Signal.terminate == true").evaluate(PolicyInput("a", {}, True)) is False
    assert Policy("a", 'Signal.level != "debug"').evaluate(PolicyInput("a", {}, True)) is True
    assert Policy("a", 'Hook.Result.x == null').evaluate(
        PolicyInput("a", {}, True, HookInfo("onTick", 1, None, {}))) is True
    # a name inside a string literal is not a reference
    assert Policy("a", '"Signal.x" == "Signal.x"').evaluate(PolicyInput("a", {}, True)) is True


def test_common_expr_subset() -> None:
    env = PolicyInput("log", {"level": "warn", "count": 3.0, "tags": ["a", "b"], "user": "x"}, False)
    for source, expected in [
        ('Signal.level == "warn" || Signal.level == "error"', True),
        ('!(Signal.level in ["debug", "info"])', True),
        ("Signal.count == 3 && Signal.count > 2.5", True),
        ('"b" in Signal.tags && "user" in Signal', True),
        ("Sync", False),
        ('Name != "log"', False),
    ]:
        assert Policy("p", source).evaluate(env) is expected, source


def test_to_bool_like_go_cast() -> None:
    assert [to_bool(v) for v in (True, 1, 0.0, "true", "T", "1", "yes", None, [1], "false")] == [
        True, True, False, True, True, True, False, False, False, False]
    assert Policy("p", '"true"').evaluate(PolicyInput("p", {}, True)) is True
    assert Policy("p", "0").evaluate(PolicyInput("p", {}, True)) is False


def test_policy_timeout() -> None:
    policy = Policy("p", 'Signal.level == "x"')
    with pytest.raises(PolicyError, match="policy timeout"):
        policy.evaluate(PolicyInput("p", {"level": "x"}, True), timeout=1e-12)


def test_policy_compile_errors() -> None:
    for bad in ("", "Signal.log ==", 'Signal.x contains "y"', "Signal.a and Signal.b"):
        with pytest.raises(PolicyError):
            Policy("p", bad)


# -- process and actions ---------------------------------------------------------------

def test_process_terminate_fills_response() -> None:
    act, _, _ = make()
    result, terminal = act.process({"request": query("select 1"), "__signals__": [terminate()]})
    assert terminal and result["__terminal__"] is True
    messages = [decode_server_message(m) for m in MessageFramer().feed(result["response"])]
    assert [m["type"] for m in messages] == ["E", "Z"]
    assert messages[0]["fields"]["C"] == "42000"
    assert b"X\x00\x00\x00\x04" not in result["response"]


def test_process_plain_result_untouched() -> None:
    act, _, _ = make()
    original = {"request": b"x"}
    result, terminal = act.process(original)
    assert result is original and not terminal and result == {"request": b"x"}


def test_log_action_levels_and_fields() -> None:
    act, clock, events = make()
    act.process({"__signals__": [log("error", "bad thing", table="t", count=2),
                                 log("nonsense-level", "odd")]})
    clock.advance(0)
    logged = {e["plugin_message"]: e for e in events if "plugin_message" in e}
    assert logged["bad thing"]["log_level"] is LogLevel.error
    assert (logged["bad thing"]["table"], logged["bad thing"]["count"]) == ("t", 2)
    assert logged["odd"]["log_level"] is LogLevel.info


def test_async_actions_published_when_redis_enabled() -> None:
    publisher = FakePublisher()
    act, clock, events = make(publisher=publisher)
    act.process({"request": b"\x00\xff", "__signals__": [log("info", "to redis", k="v")]})
    clock.advance(0)
    assert not any(e.get("plugin_message") == "to redis" for e in events)  # not run here
    [payload] = publisher.published
    message = json.loads(payload)
    assert message["Output"] == {"matchedPolicy": "log", "metadata": {
        "log": True, "level": "info", "message": "to redis", "k": "v"},
        "verdict": True, "terminal": False, "sync": False}
    assert message["Params"][0] == {"Key": "__logger__", "Value": {}}
    assert message["Params"][1]["Key"] == "__result__"
    assert base64.b64decode(message["Params"][1]["Value"]["request"]) == b"\x00\xff"


def test_publish_failure_logged() -> None:
    publisher = FakePublisher(fail(ConnectionError("redis down")))
    act, _, events = make(publisher=publisher)
    act.process({"__signals__": [log("info", "x")]})
    assert any("Cannot publish async action 'log'" in t and "redis down" in t for t in events.texts())


def test_run_async_message() -> None:
    """A consumer runs async actions from GatewayD-shaped JSON; refuses sync ones."""
    act, _, events = make()
    message = {"Output": {"matchedPolicy": "log", "metadata": {"log": True, "level": "warn",
                                                                "message": "from queue"},
                          "verdict": True, "terminal": False, "sync": False},
               "Params": [{"Key": "__logger__", "Value": {}}, {"Key": "__result__", "Value": {}}]}
    d = act.run_async_message(json.dumps(message).encode())
    assert d.called
    assert any(e.get("plugin_message") == "from queue" for e in events)
    message["Output"]["matchedPolicy"] = "terminate"
    act.run_async_message(json.dumps(message).encode())
    act.run_async_message(b"{not json")
    message["Output"]["matchedPolicy"] = "nope"
    act.run_async_message(json.dumps(message).encode())
    text = "\n".join(events.texts())
    assert "is synchronous" in text and "Bad async action message" in text and "does not exist" in text


def test_async_action_timeout() -> None:
    """actionTimeout cancels an async action that does not finish."""
    act, clock, events = make(action_timeout=2.0)
    cancelled: list[bool] = []
    act.add_action(Action("slow", sync=False, terminal=False,
                          run=lambda given: Deferred(lambda d: cancelled.append(True))))
    act.add_policy(Policy("slow", "true"))
    act.process({"__signals__": [{"name": "slow", "metadata": {}}]})
    clock.advance(0)
    assert cancelled == []
    clock.advance(2)
    assert cancelled == [True]
    assert any("Action 'slow' failed" in t for t in events.texts())


def test_broken_sync_action_does_not_break() -> None:
    act, _, events = make()
    act.add_action(Action("terminate", sync=True, terminal=True, run=lambda given: 1 / 0))
    result, terminal = act.process({"__signals__": [terminate()]})
    assert terminal and "response" not in result  # no response: the relay closes
    assert any("Action 'terminate' failed" in t for t in events.texts())


def test_plugin_cannot_set_terminal_itself() -> None:
    """Only a policy verdict ends a chain: a plugin's own __terminal__ is dropped."""
    act, _, _ = make()
    result, terminal = act.process({"request": b"x", "__terminal__": True, "__outputs__": []})
    assert not terminal and result == {"request": b"x"}
