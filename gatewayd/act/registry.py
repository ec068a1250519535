# -*- test-case-name: tests.unit.test_act -*-
"""
The Act registry: turns the signals in a plugin's hook result into outputs
(one per signal, with the policy's verdict) and runs the actions of the
outputs whose verdict is true.

Algorithm (GatewayD's C{act.Registry.Apply}):
  1. no signals: use the default signal (named after C{defaultPolicy});
  2. if any signal maps to a sync terminal action, the signals that map to
     sync non-terminal actions are dropped (terminate beats passthrough);
  3. each remaining signal's policy (same name as the action) is evaluated;
     an unknown signal, or a failing policy, is logged and skipped;
  4. when nothing came out and no policy failed, the default signal applies.

Then (L{ActRegistry.process}, per plugin result): sync actions run inline; a
true sync terminal output makes the result terminal (the hook chain stops);
async actions run on the next reactor turn, or are published to Redis when
C{actionRedis.enabled} and run by an L{gatewayd.act.consumer}.

Differences from GatewayD, on purpose: a result's C{__signals__} are
removed once applied (a later plugin returning its input unchanged would
otherwise re-trigger them); each plugin's actions run for that plugin's
result, not only the last plugin's; the plugin's result is never replaced by
an action's return value unless the action is terminal (GatewayD's C{RunAll}
drops OnTrafficFromServer and OnConfigLoaded changes that way).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Mapping

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from gatewayd.act.actions import BUILTIN_ACTIONS, Action, ActionInput
from gatewayd.act.policy import Policy, PolicyError, PolicyInput
from gatewayd.act.signals import (
    OUTPUTS_KEY,
    SIGNALS_KEY,
    TERMINAL_KEY,
    Signal,
    parse_signals,
)
from gatewayd.errors import ConfigError, ConfigErrors
from gatewayd.hooks.names import ENUM_BY_NAME
from gatewayd.hooks.ratelimit import RateLimitedLog

__all__ = [
    "ActRegistry",
    "HookInfo",
    "LOGGER_KEY",
    "Output",
    "RESULT_KEY",
    "builtin_policies",
    "builtin_signals",
]

#: Parameter keys of GatewayD's async action messages.
LOGGER_KEY = "__logger__"
RESULT_KEY = "__result__"


@dataclass(frozen=True, slots=True)
class Output:
    """One signal's outcome (GatewayD's C{act.Output})."""

    matched_policy: str
    metadata: Mapping[str, Any]
    verdict: bool
    terminal: bool
    sync: bool

    def to_json(self) -> dict[str, Any]:
        """GatewayD's JSON field names."""
        return {"matchedPolicy": self.matched_policy, "metadata": dict(self.metadata) or None,
                "verdict": self.verdict, "terminal": self.terminal, "sync": self.sync}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Output:
        """Read L{to_json}'s shape (as a Go publisher writes it too)."""
        metadata = data.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise ValueError("Output.metadata is not a map")
        name = data.get("matchedPolicy")
        if not isinstance(name, str) or not name:
            raise ValueError("Output.matchedPolicy is missing")
        return cls(name, dict(metadata), bool(data.get("verdict")), bool(data.get("terminal")),
                   bool(data.get("sync")))


class HookInfo:
    """
    The C{Hook} a policy sees; its map is built only if a policy reads it.
    """

    __slots__ = ("name", "priority", "params", "result")

    def __init__(self, name: str, priority: int, params: Mapping[str, Any] | None,
                 result: Mapping[str, Any] | None) -> None:
        self.name = name
        self.priority = priority
        self.params = params
        self.result = result

    def __call__(self) -> dict[str, Any]:
        return {"Name": ENUM_BY_NAME.get(self.name, self.name), "Priority": self.priority,
                "Params": _policy_view(self.params), "Result": _policy_view(self.result)}


def _policy_view(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """A hook payload as policies see it (reserved keys left out)."""
    if not data:
        return {}
    return {k: v for k, v in data.items() if k not in (SIGNALS_KEY, OUTPUTS_KEY, TERMINAL_KEY)}


def builtin_signals() -> dict[str, Signal]:
    """GatewayD's built-in signals (the default signal is one of them)."""
    return {
        "passthrough": Signal("passthrough", {}),
        "terminate": Signal("terminate", {"terminate": True}),
        "log": Signal("log", {}),
    }


def builtin_policies() -> dict[str, Policy]:
    """GatewayD's built-in policies, with their expressions and metadata."""
    return {
        "passthrough": Policy("passthrough", "true"),
        "terminate": Policy("terminate", 'Signal.terminate == true && Policy.terminate == "stop"',
                            {"terminate": "stop"}),
        "log": Policy("log", 'Signal.log == true && Policy.log == "enabled"', {"log": "enabled"}),
    }


def _json_default(value: Any) -> Any:
    """JSON for what Go's encoding/json would write: bytes as base64."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class ActRegistry:
    """
    Signals, policies and actions, and the algorithm that joins them.

    @ivar policies: name -> L{Policy}; user policies override built-ins.
    @ivar actions: name -> L{Action}.
    @ivar publisher: an object with C{publish(bytes) -> Deferred}
        (L{gatewayd.act.redis.RedisPublisher}) or None to run async actions here.
    """

    def __init__(
        self,
        *,
        clock: IReactorTime,
        log: Logger | None = None,
        policies: Mapping[str, Policy] | None = None,
        actions: Mapping[str, Action] | None = None,
        signals: Mapping[str, Signal] | None = None,
        default_policy: str = "passthrough",
        policy_timeout: float = 30.0,
        action_timeout: float = 30.0,
        publisher: Any = None,
    ) -> None:
        self._clock = clock
        self.log = log if log is not None else Logger(namespace="gatewayd.act")
        self._warn = RateLimitedLog(self.log, clock)
        self.policies: dict[str, Policy] = dict(policies if policies is not None else builtin_policies())
        self.actions: dict[str, Action] = dict(actions if actions is not None else BUILTIN_ACTIONS)
        self.signals: dict[str, Signal] = dict(signals if signals is not None else builtin_signals())
        self.policy_timeout = policy_timeout
        self.action_timeout = action_timeout
        self.publisher = publisher
        if default_policy not in self.policies or default_policy not in self.signals:
            self.log.warn("The default policy {name!r} does not exist, using passthrough",
                          name=default_policy)
            default_policy = "passthrough"
        self.default_policy = default_policy
        self._trivial_default = False
        self._refresh()

    # -- construction --------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Any, *, reactor: Any, log: Logger | None = None,
                    path: str | None = None) -> ActRegistry:
        """
        Build from a L{gatewayd.config.schema.PluginsConfig}: built-ins, then
        the user's C{policies} (compiled now), C{defaultPolicy}, the timeouts,
        and a L{RedisPublisher} when C{actionRedis.enabled} (a service: start it).

        @param path: the plugins config file, for error messages.
        @raise ConfigError: a policy does not compile (key C{policies[i].policy}),
            or C{actionRedis.address} is invalid.
        @raise ConfigErrors: several policies do not compile.
        """
        log = log if log is not None else Logger(namespace="gatewayd.act")
        policies = builtin_policies()
        errors: list[ConfigError] = []
        for index, entry in enumerate(config.policies):
            if not entry.name:
                errors.append(ConfigError(path, f"policies[{index}].name", "must not be empty"))
                continue
            if entry.metadata is not None and not isinstance(entry.metadata, Mapping):
                errors.append(ConfigError(path, f"policies[{index}].metadata", "must be a map"))
                continue
            try:
                policy = Policy(entry.name, entry.policy, entry.metadata)
            except PolicyError as e:
                errors.append(ConfigError(path, f"policies[{index}].policy",
                                          f"policy {entry.name!r} does not compile: {e}"))
                continue
            if entry.name in policies:
                log.info("Policy {name!r} from the configuration overrides the built-in one",
                         name=entry.name)
            policies[entry.name] = policy
        publisher = None
        redis = config.action_redis
        if redis.enabled:
            from gatewayd.act.redis import RedisPublisher, parse_address

            try:
                parse_address(redis.address)
            except ValueError as e:
                errors.append(ConfigError(path, "actionRedis.address", str(e)))
            else:
                if not redis.channel:
                    errors.append(ConfigError(path, "actionRedis.channel", "must not be empty"))
                else:
                    publisher = RedisPublisher(reactor, redis.address, redis.channel, log=log)
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ConfigErrors(errors)
        return cls(clock=reactor, log=log, policies=policies, default_policy=config.default_policy,
                   policy_timeout=config.policy_timeout, action_timeout=config.action_timeout,
                   publisher=publisher)

    def add_policy(self, policy: Policy) -> None:
        """Add or replace a policy (user policies may replace built-ins)."""
        if policy.name in self.policies:
            self.log.debug("Policy {name!r} replaced", name=policy.name)
        self.policies[policy.name] = policy
        self._refresh()

    def add_action(self, action: Action) -> None:
        """Add or replace an action (for embedders; configuration cannot add actions)."""
        self.actions[action.name] = action
        self._refresh()

    def _refresh(self) -> None:
        """Recompute whether "no signals" can skip Act entirely (the usual case)."""
        signal = self.signals[self.default_policy]
        action = self.actions.get(signal.name)
        policy = self.policies.get(signal.name)
        self._trivial_default = (action is not None and action.run is BUILTIN_ACTIONS[
            "passthrough"].run and policy is not None and policy.constant is not None)

    @property
    def default_signal(self) -> Signal:
        return self.signals[self.default_policy]

    # -- evaluation ------------------------------------------------------------------

    def apply(self, signals: list[Signal], hook: HookInfo | None = None) -> list[Output]:
        """The outputs for C{signals} (see the module docstring)."""
        default = not signals
        if default:
            signals = [self.default_signal]
        actions = self.actions
        has_terminal = False
        for signal in signals:
            action = actions.get(signal.name)
            if action is not None and action.sync and action.terminal:
                has_terminal = True
                break
        outputs: list[Output] = []
        eval_error = False
        for signal in signals:
            action = actions.get(signal.name)
            if action is None:
                self._warn.emit(("signal", signal.name), LogLevel.warn,
                                "Unknown signal {name!r} ignored (no such action)", name=signal.name)
                continue
            if has_terminal and action.sync and not action.terminal:
                self.log.debug("Terminal signal takes precedence, ignoring {name!r}",
                               name=signal.name)
                continue
            policy = self.policies.get(action.name)
            if policy is None:
                self._warn.emit(("policy", signal.name), LogLevel.warn,
                                "No policy {name!r} for this signal; ignored", name=signal.name)
                continue
            try:
                verdict = policy.evaluate(PolicyInput(signal.name, signal.metadata, action.sync, hook),
                                          self.policy_timeout)
            except PolicyError as e:
                self._warn.emit(("eval", policy.name), LogLevel.error,
                                "Policy {name!r} failed: {error}", name=policy.name, error=str(e))
                eval_error = True
                continue
            outputs.append(Output(policy.name, signal.metadata, verdict, action.terminal, action.sync))
        if not outputs and not eval_error and not default:
            return self.apply([], hook)
        return outputs

    def process(self, result: dict[str, Any], hook: HookInfo | None = None) -> tuple[dict[str, Any], bool]:
        """
        Apply the signals of one plugin's C{result} and run the actions.

        Removes C{__signals__} from C{result}, and any C{__terminal__} or
        C{__outputs__} the plugin set itself: only a policy's verdict may end
        the chain (else a plugin could bypass a user policy such as
        C{terminate: continue}).  On a terminal verdict the result gets
        C{__terminal__: True}, C{__outputs__}, and (from the terminate
        action) a C{response} when it had none.

        @return: (the result, whether it is terminal).
        """
        raw = result.pop(SIGNALS_KEY, None)
        if TERMINAL_KEY in result:
            del result[TERMINAL_KEY]
        if OUTPUTS_KEY in result:
            del result[OUTPUTS_KEY]
        if raw is None and self._trivial_default:
            return result, False
        signals, problems = parse_signals(raw)
        for problem in problems:
            self._warn.emit(("malformed", problem), LogLevel.warn,
                            "Malformed signal ignored: {problem}", problem=problem)
        outputs = self.apply(signals, hook)
        terminal = False
        for output in outputs:
            if not output.verdict:
                continue
            if output.sync:
                value = self._run_sync(output, result)
                if output.terminal:
                    terminal = True
                    if isinstance(value, dict):
                        result = value
            else:
                self._dispatch_async(output, result)
        if terminal:
            result[TERMINAL_KEY] = True
            result[OUTPUTS_KEY] = [o.to_json() for o in outputs]
        return result, terminal

    # -- running actions -------------------------------------------------------------

    def _run_sync(self, output: Output, result: dict[str, Any]) -> Any:
        action = self.actions.get(output.matched_policy)
        if action is None:
            return None
        try:
            value = action.run(ActionInput(output.metadata, result, self.log))
        except Exception:  # noqa: BLE001 - a broken action must not break the hook chain
            self.log.failure("Action {name!r} failed", name=action.name)
            return None
        if isinstance(value, Deferred):
            # Sync actions run inline; one that returns a Deferred is only waited
            # for up to its timeout, for its side effects.
            self._guard(action, value)
            return None
        return value

    def _dispatch_async(self, output: Output, result: dict[str, Any]) -> None:
        snapshot = dict(result)
        if self.publisher is not None:
            message = {"Output": output.to_json(),
                       "Params": [{"Key": LOGGER_KEY, "Value": {}},
                                  {"Key": RESULT_KEY, "Value": _policy_view(snapshot)}]}
            try:
                payload = json.dumps(message, default=_json_default).encode("utf-8")
            except (TypeError, ValueError) as e:
                self._warn.emit(("publish-encode", output.matched_policy), LogLevel.error,
                                "Cannot encode async action {name!r}: {error}",
                                name=output.matched_policy, error=str(e))
                return
            self.publisher.publish(payload).addErrback(self._publish_failed, output.matched_policy)
            return
        action = self.actions.get(output.matched_policy)
        if action is not None:
            self._clock.callLater(0, self._run_async, action, output, snapshot)

    def _publish_failed(self, failure: Failure, name: str) -> None:
        self._warn.emit(("publish", name), LogLevel.error,
                        "Cannot publish async action {name!r} to Redis: {error}",
                        name=name, error=failure.getErrorMessage())

    def _run_async(self, action: Action, output: Output, result: dict[str, Any] | None) -> Deferred[None]:
        d = maybeDeferred(action.run, ActionInput(output.metadata, result, self.log))
        return self._guard(action, d)

    def _guard(self, action: Action, d: Deferred[Any]) -> Deferred[None]:
        """Apply the action's timeout and log its failure."""
        timeout = action.timeout or self.action_timeout
        if timeout > 0 and not d.called:
            d.addTimeout(timeout, self._clock)

        def failed(failure: Failure) -> None:
            self._warn.emit(("action", action.name), LogLevel.error,
                            "Action {name!r} failed: {error}", name=action.name,
                            error=failure.getErrorMessage() or failure.type.__name__)

        return d.addCallbacks(lambda _: None, failed)

    def run_async_message(self, payload: bytes) -> Deferred[None]:
        """
        Run one async action published to Redis (GatewayD's
        C{AsyncActionMessage} JSON: C{{"Output": {...}, "Params": [...]}}).
        Never fails: problems are logged.
        """
        try:
            message = json.loads(payload)
            output = Output.from_json(message["Output"])
            params = message.get("Params") or []
            result = None
            for param in params:
                if isinstance(param, Mapping) and param.get("Key") == RESULT_KEY:
                    value = param.get("Value")
                    result = value if isinstance(value, dict) else None
        except (ValueError, KeyError, TypeError) as e:
            self._warn.emit("decode", LogLevel.error, "Bad async action message: {error}",
                            error=str(e) or type(e).__name__)
            return succeed(None)
        action = self.actions.get(output.matched_policy)
        if action is None:
            self._warn.emit(("missing", output.matched_policy), LogLevel.warn,
                            "Async action {name!r} does not exist; message dropped",
                            name=output.matched_policy)
            return succeed(None)
        if action.sync:
            self._warn.emit(("sync", action.name), LogLevel.warn,
                            "Action {name!r} is synchronous; it cannot run from the queue",
                            name=action.name)
            return succeed(None)
        return self._run_async(action, output, result)
