"""
Tests for L{gatewayd.hooks.registry.HookRegistry}: chaining, priorities,
Act verdicts, deadlines and failure modes, driven by a L{Clock}.
"""

from __future__ import annotations

import tracemalloc
from typing import Any, Callable

import pytest
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gatewayd.act import ActRegistry
from gatewayd.act.signals import log as log_signal
from gatewayd.act.signals import terminate
from gatewayd.hooks import names
from gatewayd.hooks.registry import FAILURE_SQLSTATE, HookRegistry
from gatewayd.interfaces import IHookRegistry, IPlugin
from gatewayd.observability.metrics import GatewayMetrics
from gatewayd.pgwire import (
    MessageFramer,
    bind,
    decode_server_message,
    execute,
    parse,
    query,
    sync,
)

TRAFFIC = names.ON_TRAFFIC_FROM_CLIENT


@implementer(IPlugin)
class FakePlugin:
    """An IPlugin whose hook behaviour is a function of the payload."""

    def __init__(self, name: str, priority: int, behaviour: Callable[[dict], Any],
                 hooks: frozenset[str] = frozenset({TRAFFIC}), failure_mode: str | None = None) -> None:
        self.name = name
        self.priority = priority
        self.hooks = hooks
        self.metadata: dict = {}
        self.behaviour = behaviour
        self.calls: list[tuple[str, dict]] = []
        if failure_mode is not None:
            self.failure_mode = failure_mode

    def call_hook(self, hook_name: str, payload: dict) -> Deferred:
        self.calls.append((hook_name, dict(payload)))
        result = self.behaviour(payload)
        return result if isinstance(result, Deferred) else succeed(result)


@implementer(IPlugin)
class TimedPlugin(FakePlugin):
    """Accepts the C{timeout} keyword and records it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts: list[float | None] = []

    def call_hook(self, hook_name: str, payload: dict, timeout: float | None = None) -> Deferred:
        self.timeouts.append(timeout)
        return super().call_hook(hook_name, payload)


class Events:
    """A log observer collecting events."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        self.events.append(event)

    def texts(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]


def make(timeout: float = 30.0, metrics: Any = None, failure_modes: dict | None = None,
         default_policy: str = "passthrough") -> tuple[HookRegistry, Clock, Events]:
    clock = Clock()
    events = Events()
    log = Logger(observer=events)
    act = ActRegistry(clock=clock, log=log, default_policy=default_policy)
    registry = HookRegistry(clock, act, timeout=timeout, log=log, metrics=metrics,
                            failure_modes=failure_modes)
    return registry, clock, events


def appender(tag: str) -> Callable[[dict], dict]:
    def behave(payload: dict) -> dict:
        out = dict(payload)
        out["trail"] = payload.get("trail", "") + tag
        return out
    return behave


def result_of(d: Deferred) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "Deferred has not fired"
    return box[0]


def messages(data: bytes) -> list[dict]:
    return [decode_server_message(m) for m in MessageFramer().feed(data)]


def test_interfaces() -> None:
    """The registry provides IHookRegistry; the test double provides IPlugin."""
    registry, _, _ = make()
    assert verifyObject(IHookRegistry, registry)
    assert verifyObject(IPlugin, FakePlugin("a", 1000, lambda p: p))


def test_unsubscribed_is_free() -> None:
    """
    Without subscribers, run() fires synchronously with the very payload
    object, and is_subscribed() allocates nothing.
    """
    registry, _, _ = make()
    registry.register(FakePlugin("other", 1000, lambda p: p, hooks=frozenset({names.ON_TICK})))
    payload = {"request": b"Q"}
    assert registry.is_subscribed(TRAFFIC) is False
    assert result_of(registry.run(TRAFFIC, payload)) is payload

    def peak_of(check: Callable[[str], bool]) -> int:
        for _ in range(100):  # warm up
            check(TRAFFIC)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(1_000):
                check(TRAFFIC)
                check(names.ON_TICK)
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    def baseline(name: str) -> bool:
        return False

    def allocating(name: str) -> bool:  # what the check must not look like
        return name in [h for h in (names.ON_TICK,)]

    assert peak_of(registry.is_subscribed) <= peak_of(baseline)
    assert peak_of(allocating) > peak_of(baseline)  # the measurement can see an allocation


def test_priority_order_and_chaining() -> None:
    """Lower priority runs first; each plugin receives the previous result."""
    registry, _, _ = make()
    late = FakePlugin("late", 1002, appender("C"))
    early = FakePlugin("early", 1000, appender("A"))
    middle = FakePlugin("middle", 1001, appender("B"))
    for plugin in (late, early, middle):
        registry.register(plugin)
    result = result_of(registry.run(TRAFFIC, {"request": b"x"}))
    assert result["trail"] == "ABC"
    assert middle.calls[0][1]["trail"] == "A"
    assert late.calls[0][1]["trail"] == "AB"
    assert [p.name for p in registry.plugins()] == ["early", "middle", "late"]
    assert "__terminal__" not in result


def test_terminal_stops_chain_with_default_response() -> None:
    """
    A terminate signal stops the chain; without a response of its own the
    client gets GatewayD's 42000 error followed by ReadyForQuery (not 'X').
    """
    registry, _, _ = make()

    def stop(payload: dict) -> dict:
        return {**payload, "__signals__": [terminate()]}

    first = FakePlugin("first", 1000, stop)
    second = FakePlugin("second", 1001, appender("never"))
    registry.register(first)
    registry.register(second)
    request = query("DROP TABLE t")
    result = result_of(registry.run(TRAFFIC, {"request": request}))
    assert result["__terminal__"] is True
    assert second.calls == []
    assert "__signals__" not in result
    reply = messages(result["response"])
    assert [m["type"] for m in reply] == ["E", "Z"]
    assert reply[0]["fields"]["C"] == "42000"
    assert reply[0]["fields"]["M"] == "Request terminated"
    assert reply[0]["fields"]["D"] == "Policy terminated the request"
    assert reply[1]["status"] == "I"
    assert result["__outputs__"][0]["matchedPolicy"] == "terminate"


def test_terminal_extended_protocol_reply() -> None:
    """An extended batch up to Sync gets ErrorResponse + ReadyForQuery once."""
    registry, _, _ = make()
    registry.register(FakePlugin("stop", 1000, lambda p: {**p, "__signals__": [terminate()]}))
    request = parse("", "DROP TABLE t") + bind("", "") + execute() + sync()
    result = result_of(registry.run(TRAFFIC, {"request": request}))
    assert [m["type"] for m in messages(result["response"])] == ["E", "Z"]


def test_terminal_keeps_plugin_response() -> None:
    """A plugin's own response is what the client receives."""
    registry, _, _ = make()
    registry.register(FakePlugin(
        "cache", 1000, lambda p: {**p, "response": b"cached", "__signals__": [terminate()]}))
    result = result_of(registry.run(TRAFFIC, {"request": query("select 1")}))
    assert result["response"] == b"cached"
    assert result["__terminal__"] is True


def test_terminate_disabled_by_policy() -> None:
    """With the terminate policy's metadata set to "continue", the chain goes on."""
    from gatewayd.act.policy import Policy

    registry, _, _ = make()
    registry.act.add_policy(Policy("terminate", 'Signal.terminate == true && Policy.terminate == "stop"',
                                   {"terminate": "continue"}))
    registry.register(FakePlugin("stop", 1000, lambda p: {**p, "__signals__": [terminate()]}))
    after = FakePlugin("after", 1001, appender("Z"))
    registry.register(after)
    result = result_of(registry.run(TRAFFIC, {"request": b"x"}))
    assert "__terminal__" not in result
    assert result["trail"] == "Z"


def test_results_applied_for_traffic_from_server() -> None:
    """
    GatewayD drops OnTrafficFromServer rewrites under the default policy;
    we return them.
    """
    registry, _, _ = make()
    registry.register(FakePlugin("rewrite", 1000, lambda p: {**p, "response": b"new"},
                                 hooks=frozenset({names.ON_TRAFFIC_FROM_SERVER})))
    result = result_of(registry.run(names.ON_TRAFFIC_FROM_SERVER, {"response": b"old"}))
    assert result["response"] == b"new"


def test_async_plugin_continues_chain() -> None:
    """A plugin answering later resumes the chain when it answers."""
    registry, _, _ = make()
    pending: Deferred = Deferred()
    registry.register(FakePlugin("slow", 1000, lambda p: pending))
    last = FakePlugin("last", 1001, appender("L"))
    registry.register(last)
    d = registry.run(TRAFFIC, {"request": b"x"})
    assert not d.called
    assert last.calls == []
    pending.callback({"request": b"x", "trail": "S"})
    assert result_of(d)["trail"] == "SL"


def test_timeout_open_passes_input() -> None:
    """
    A timed-out call in failure mode open: the chain's input goes on
    unchanged; the call is cancelled; later plugins had no time left and
    are skipped; nothing is unregistered (unlike GatewayD).
    """
    registry, clock, events = make(timeout=5.0)
    cancelled: list[bool] = []
    stuck: Deferred = Deferred(lambda d: cancelled.append(True))
    registry.register(FakePlugin("stuck", 1000, lambda p: stuck))
    last = FakePlugin("last", 1001, appender("L"))
    registry.register(last)
    d = registry.run(TRAFFIC, {"request": b"x", "trail": "in"})
    clock.advance(4.9)
    assert not d.called
    clock.advance(0.2)
    assert result_of(d) == {"request": b"x", "trail": "in"}
    assert cancelled == [True]
    assert last.calls == []
    text = "\n".join(events.texts())
    assert "stuck timed out" in text and "last was skipped" in text
    assert registry.is_subscribed(TRAFFIC)
    # Next event: a prompt answer goes through the whole chain again.
    registry.unregister("stuck")
    assert result_of(registry.run(TRAFFIC, {"trail": ""}))["trail"] == "L"


def test_timeout_closed_terminates() -> None:
    """A timed-out call in failure mode closed ends the chain with a 58000 error."""
    registry, clock, _ = make(timeout=5.0, failure_modes={"guard": "closed"})
    registry.register(FakePlugin("guard", 1000, lambda p: Deferred()))
    last = FakePlugin("last", 1001, appender("L"))
    registry.register(last)
    d = registry.run(TRAFFIC, {"request": query("select 1")})
    clock.advance(5)
    result = result_of(d)
    assert result["__terminal__"] is True
    assert last.calls == []
    reply = messages(result["response"])
    assert [m["type"] for m in reply] == ["E", "Z"]
    assert reply[0]["fields"]["C"] == FAILURE_SQLSTATE
    assert "guard timed out" in reply[0]["fields"]["M"]


def test_closed_failure_on_other_hook_has_no_response() -> None:
    """Off the client-request path, a closed failure is terminal without a response."""
    registry, _, _ = make()
    registry.register(FakePlugin("bad", 1000, lambda p: 1 / 0,
                                 hooks=frozenset({names.ON_TRAFFIC_FROM_SERVER}),
                                 failure_mode="closed"))
    result = result_of(registry.run(names.ON_TRAFFIC_FROM_SERVER, {"response": b"data"}))
    assert result["__terminal__"] is True
    assert "response" not in result


def test_chain_deadline_shared() -> None:
    """Each call gets the time left in the chain's deadline; none left means a timeout."""
    registry, clock, _ = make(timeout=10.0)
    first_d: Deferred = Deferred()
    first = TimedPlugin("first", 1000, lambda p: first_d)
    second = TimedPlugin("second", 1001, appender("2"))
    registry.register(first)
    registry.register(second)
    d = registry.run(TRAFFIC, {"request": b"x"})
    clock.advance(4)
    first_d.callback({"request": b"x"})
    assert first.timeouts == [10.0]
    assert second.timeouts == [6.0]
    assert result_of(d)["trail"] == "2"

    # No time left at all: the second plugin is not even called.
    late_d: Deferred = Deferred()
    first.behaviour = lambda p: late_d
    d = registry.run(TRAFFIC, {"request": b"y"})
    clock.advance(10)  # the first call times out and consumes the whole deadline
    assert result_of(d) == {"request": b"y"}
    assert len(second.calls) == 1


def test_exception_and_bad_results_are_failures() -> None:
    """A raising plugin, a None result and a non-dict result fail open by default."""
    registry, _, events = make()
    registry.register(FakePlugin("raises", 1000, lambda p: {}["missing"]))
    registry.register(FakePlugin("none", 1001, lambda p: None))
    registry.register(FakePlugin("list", 1002, lambda p: [1]))
    registry.register(FakePlugin("good", 1003, appender("G")))
    result = result_of(registry.run(TRAFFIC, {"request": b"x"}))
    assert result == {"request": b"x", "trail": "G"}
    text = "\n".join(events.texts())
    assert "raises failed" in text and "none failed" in text and "list failed" in text


def test_failure_logs_are_rate_limited() -> None:
    """A plugin failing on every call logs once per interval, then reports the count."""
    registry, clock, events = make()
    registry.register(FakePlugin("bad", 1000, lambda p: 1 / 0))
    for _ in range(50):
        registry.run(TRAFFIC, {"request": b"x"})
    failures = [t for t in events.texts() if "bad failed" in t]
    assert len(failures) == 1
    clock.advance(11)
    registry.run(TRAFFIC, {"request": b"x"})
    failures = [t for t in events.texts() if "bad failed" in t]
    assert len(failures) == 2 and "49 similar events suppressed" in failures[1]


def test_reregister_keeps_priority() -> None:
    """Re-registering (e.g. a reload) keeps the first priority, not the new one."""
    registry, _, _ = make()
    registry.register(FakePlugin("a", 1000, appender("a")))
    registry.register(FakePlugin("b", 1001, appender("b")))
    registry.unregister("a")
    assert result_of(registry.run(TRAFFIC, {}))["trail"] == "b"
    registry.register(FakePlugin("a", 1000 + 50, appender("A")))  # GatewayD would give 1000 again
    assert result_of(registry.run(TRAFFIC, {}))["trail"] == "Ab"
    registry.register(FakePlugin("b", 7, appender("B")))  # replaces b's hooks, keeps 1001
    assert result_of(registry.run(TRAFFIC, {}))["trail"] == "AB"
    assert [p.name for p in registry.plugins()] == ["a", "b"]


def test_same_priority_both_run() -> None:
    """Two plugins at one priority both run, in registration order."""
    registry, _, events = make()
    registry.register(FakePlugin("x", 1000, appender("x")))
    registry.register(FakePlugin("y", 1000, appender("y")))
    assert result_of(registry.run(TRAFFIC, {}))["trail"] == "xy"
    assert any("share priority" in t for t in events.texts())


def test_unregister_and_unknown_hooks() -> None:
    """Unknown hook names are ignored; unregistering removes the subscription."""
    registry, _, events = make()
    registry.register(FakePlugin("p", 1000, lambda p: p, hooks=frozenset({TRAFFIC, "onNothing"})))
    assert registry.is_subscribed(TRAFFIC)
    assert not registry.is_subscribed("onNothing")
    assert any("unknown hook" in t for t in events.texts())
    registry.unregister("p")
    registry.unregister("never-registered")
    assert not registry.is_subscribed(TRAFFIC)
    assert registry.plugins() == []


def test_bad_failure_mode_refused() -> None:
    registry, _, _ = make(failure_modes={"p": "sometimes"})
    with pytest.raises(ValueError, match="failureMode"):
        registry.register(FakePlugin("p", 1000, lambda p: p))


def test_async_log_action_runs_after_hook() -> None:
    """A log signal's action runs on the next reactor turn, with its fields."""
    registry, clock, events = make()
    registry.register(FakePlugin(
        "logger", 1000,
        lambda p: {**p, "__signals__": [log_signal("warn", "seen query", table="users")]}))
    result = result_of(registry.run(TRAFFIC, {"request": b"x"}))
    assert "__terminal__" not in result
    assert not any(e.get("plugin_message") == "seen query" for e in events.events)
    clock.advance(0)
    [event] = [e for e in events.events if e.get("plugin_message") == "seen query"]
    assert event["log_level"] is LogLevel.warn
    assert event["table"] == "users"


def test_default_policy_terminate() -> None:
    """defaultPolicy terminate: a result without signals is terminal (deny by default)."""
    registry, _, _ = make(default_policy="terminate")
    registry.register(FakePlugin("p", 1000, lambda p: p))
    result = result_of(registry.run(TRAFFIC, {"request": query("select 1")}))
    assert result["__terminal__"] is True


def test_metrics_counted() -> None:
    """Runs, registrations, failures and durations reach the metrics object."""
    prom = CollectorRegistry()
    metrics = GatewayMetrics(prom)
    registry, _, _ = make(metrics=metrics)
    registry.register(FakePlugin("bad", 1000, lambda p: 1 / 0,
                                 hooks=frozenset({TRAFFIC, names.ON_TICK})))
    registry.run(TRAFFIC, {})
    registry.run(TRAFFIC, {})
    registry.run(names.ON_CLOSED, {})  # nobody subscribed: not counted
    assert prom.get_sample_value("gatewayd_plugin_hooks_executed_total") == 2
    assert prom.get_sample_value("gatewayd_plugin_hooks_registered_total") == 2
    assert prom.get_sample_value("gatewayd_plugin_hook_failures_total",
                                 {"plugin": "bad", "hook": TRAFFIC}) == 2
    assert prom.get_sample_value("gatewayd_plugin_hook_duration_seconds_count",
                                 {"hook": TRAFFIC}) == 2
