# -*- test-case-name: tests.unit.test_hooks -*-
"""
The hook registry: runs each hook event through the plugins that subscribed
to it, in priority order, applying Act to every plugin's result.

When nothing subscribed to a hook, L{HookRegistry.is_subscribed} is one
dict lookup and L{HookRegistry.run} hands the payload back in an already
fired Deferred: the relay stays a byte pump.  In-process plugins answer
synchronously, so a chain of them completes without a reactor turn.

Differences from GatewayD (all on purpose, see docs/plugins.md):
  - a plugin call that fails or times out does not unregister the hook for
    the rest of the process; the plugin's C{failureMode} decides: C{open}
    (default) continues the chain with the input unchanged, C{closed} ends
    it with a terminal result (SQLSTATE 58000 for the client);
  - two plugins at the same priority both run (in registration order)
    instead of the second replacing the first;
  - re-registering a plugin (e.g. reload after a crash) keeps the priority
    it first had, instead of GatewayD's 1000;
  - the registry returns the final chained result for every hook, so the
    call sites apply C{OnTrafficFromServer} and C{OnConfigLoaded} changes
    that GatewayD's C{RunAll} drops;
  - C{plugin_hooks_executed_total} counts chains that ran, not calls for
    hooks nobody subscribed to.

With a tracer provider (L{Tracing.enabled}) each chain is a
C{gatewayd.hook.<name>} span under the explicit C{parent} given to L{run}
(the client connection's span for connection events) and each plugin call a
C{gatewayd.plugin.<plugin>} child, whose W3C C{traceparent} goes to plugins
that take C{metadata=} (gRPC plugins get it as call metadata).  Without one,
no span or metadata is built.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Mapping

from opentelemetry.trace import Span, SpanKind
from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from gatewayd.act.registry import ActRegistry, HookInfo
from gatewayd.act.signals import OUTPUTS_KEY, TERMINAL_KEY
from gatewayd.hooks import names
from gatewayd.hooks.ratelimit import RateLimitedLog
from gatewayd.hooks.replies import error_reply
from gatewayd.interfaces import IHookRegistry, IPlugin, IPluginClient
from gatewayd.observability.tracing import Tracing
from gatewayd.pgwire import error_response

__all__ = ["FAILURE_SQLSTATE", "HookRegistry"]

#: SQLSTATE a client gets when a plugin with failureMode "closed" fails:
#: class 58, "system error": an error external to PostgreSQL itself.
FAILURE_SQLSTATE = "58000"
FAILURE_MODES = ("open", "closed")


class DeadlineExhausted(TimeoutError):
    """The chain's deadline ran out before this plugin's turn."""


class _Entry:
    """One plugin's place in the chains."""

    __slots__ = ("plugin", "name", "priority", "order", "failure_mode", "accepts_timeout",
                 "accepts_metadata", "hooks", "span_name", "span_kind")

    def __init__(self, plugin: Any, priority: int, order: int, failure_mode: str,
                 hooks: frozenset[str]) -> None:
        self.plugin = plugin
        self.name: str = plugin.name
        self.hooks = hooks
        self.priority = priority
        self.order = order
        self.failure_mode = failure_mode
        self.accepts_timeout = _accepts_keyword(plugin.call_hook, "timeout")
        self.accepts_metadata = _accepts_keyword(plugin.call_hook, "metadata")
        self.span_name = f"gatewayd.plugin.{self.name}"
        self.span_kind = SpanKind.CLIENT if IPluginClient.providedBy(plugin) else SpanKind.INTERNAL

    def call(self, hook: str, payload: dict[str, Any], remaining: float | None,
             metadata: list[tuple[str, str]] | None = None) -> Any:
        if metadata and self.accepts_metadata:
            if self.accepts_timeout and remaining is not None:
                return self.plugin.call_hook(hook, payload, timeout=remaining, metadata=metadata)
            return self.plugin.call_hook(hook, payload, metadata=metadata)
        if self.accepts_timeout and remaining is not None:
            return self.plugin.call_hook(hook, payload, timeout=remaining)
        return self.plugin.call_hook(hook, payload)


def _accepts_keyword(method: Any, name: str) -> bool:
    """C{method} takes keyword C{name} (or any keyword)."""
    try:
        parameters = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):
        return False
    return any((p.name == name and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
               or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


@implementer(IHookRegistry)
class HookRegistry:
    """
    @param clock: the reactor (for the chain deadline and Act's timers).
    @param act: the L{ActRegistry} applied to each plugin's result.
    @param timeout: C{plugins.timeout}: seconds for the whole chain of one
        event; each call gets what is left.  0 or less: no limit.
    @param log: where failures are logged (rate-limited per plugin and hook).
    @param metrics: an object with C{plugin_hooks_executed_total},
        C{plugin_hooks_registered_total}, C{plugin_hook_failures_total}
        (labels plugin, hook) and C{plugin_hook_duration_seconds} (label
        hook), as L{gatewayd.observability.metrics.GatewayMetrics} has; any
        of them may be missing; None for no metrics.
    @param failure_modes: plugin name -> C{"open"}/C{"closed"} (from each
        entry's C{failureMode}); a plugin not listed uses its own
        C{failure_mode} attribute, else C{"open"}.
    @param tracing: spans for chains and plugin calls; None or a disabled
        L{Tracing} for none.
    """

    def __init__(self, clock: IReactorTime, act: ActRegistry, *, timeout: float = 30.0,
                 log: Logger | None = None, metrics: Any = None,
                 failure_modes: Mapping[str, str] | None = None,
                 tracing: Tracing | None = None) -> None:
        self._clock = clock
        #: None unless tracing is on: L{run} tests only this
        self.tracing = tracing if tracing is not None and tracing.enabled else None
        self.act = act
        self.timeout = timeout
        self.log = log if log is not None else Logger(namespace="gatewayd.hooks")
        self._warn = RateLimitedLog(self.log, clock)
        self._failure_modes = dict(failure_modes or {})
        self._entries: dict[str, _Entry] = {}
        self._priorities: dict[str, int] = {}
        self._order = 0
        #: hook name -> entries in run order; only hooks with subscribers are keys.
        self._chains: dict[str, tuple[_Entry, ...]] = {}
        self._executed = getattr(metrics, "plugin_hooks_executed_total", None)
        self._registered = getattr(metrics, "plugin_hooks_registered_total", None)
        self._failures = getattr(metrics, "plugin_hook_failures_total", None)
        self._duration = getattr(metrics, "plugin_hook_duration_seconds", None)

    # -- IHookRegistry ---------------------------------------------------------------

    def is_subscribed(self, hook_name: str) -> bool:
        return hook_name in self._chains

    def run(self, hook_name: str, payload: dict, parent: Span | None = None) -> Deferred[dict]:
        chain = self._chains.get(hook_name)
        if chain is None:
            return succeed(payload)
        if self._executed is not None:
            self._executed.inc()
        span = None
        if self.tracing is not None:
            span = self.tracing.start_span(f"gatewayd.hook.{hook_name}", parent, {
                "gatewayd.hook": hook_name, "gatewayd.hook.plugins": len(chain)})
        return _ChainRun(self, hook_name, chain, payload, span).start()

    def register(self, plugin: IPlugin) -> None:
        name = plugin.name
        priority = self._priorities.setdefault(name, int(plugin.priority))
        if priority != plugin.priority:
            self.log.info("Plugin {plugin} re-registered; it keeps priority {priority}",
                          plugin=name, priority=priority)
        mode = self._failure_modes.get(name) or getattr(plugin, "failure_mode", None) or "open"
        if mode not in FAILURE_MODES:
            raise ValueError(f"plugin {name}: failureMode must be open or closed, not {mode!r}")
        hooks = set()
        for hook in plugin.hooks:
            if hook in names.ALL:
                hooks.add(hook)
            else:
                self.log.warn("Plugin {plugin} subscribed to unknown hook {hook!r}; ignored",
                              plugin=name, hook=hook)
        for other in self._entries.values():
            if other.name != name and other.priority == priority:
                self.log.warn("Plugins {plugin} and {other} share priority {priority}; both run, "
                              "{other} first", plugin=name, other=other.name, priority=priority)
        self._order += 1
        self._entries[name] = _Entry(plugin, priority, self._order, mode, frozenset(hooks))
        self._rebuild()
        if self._registered is not None and hooks:
            self._registered.inc(len(hooks))

    def unregister(self, name: str) -> None:
        if self._entries.pop(name, None) is not None:
            self._rebuild()

    def plugins(self) -> list:
        return [e.plugin for e in sorted(self._entries.values(), key=_run_order)]

    # -- internals -------------------------------------------------------------------

    def _rebuild(self) -> None:
        """Recompute every chain (registration is rare; runs are not)."""
        chains: dict[str, list[_Entry]] = {}
        for entry in sorted(self._entries.values(), key=_run_order):
            for hook in entry.hooks:
                chains.setdefault(hook, []).append(entry)
        self._chains = {hook: tuple(entries) for hook, entries in chains.items()}

    def _failed(self, entry: _Entry, hook: str, failure: Failure) -> None:
        """Count and (rate-limited) log one failed plugin call."""
        if self._failures is not None:
            try:
                self._failures.labels(plugin=entry.name, hook=hook).inc()
            except Exception:  # noqa: BLE001 - metrics must never break hooks
                pass
        if failure.check(DeadlineExhausted) is not None:
            what = "was skipped"
        elif failure.check(TimeoutError) is not None:
            what = "timed out"
        else:
            what = "failed"
        self._warn.emit(
            (entry.name, hook), LogLevel.warn,
            "Plugin {plugin} {what} in {hook} (failureMode {mode}): {error}",
            plugin=entry.name, hook=hook, mode=entry.failure_mode,
            what=what,
            error=failure.getErrorMessage() or failure.type.__name__)

    def _closed_result(self, entry: _Entry, hook: str, payload: dict[str, Any],
                       failure: Failure) -> dict[str, Any]:
        """The terminal result of a failed plugin whose failureMode is closed."""
        result = dict(payload)
        result[TERMINAL_KEY] = True
        result[OUTPUTS_KEY] = []
        result.pop("response", None)
        if hook == names.ON_TRAFFIC_FROM_CLIENT:
            timed_out = failure.check(TimeoutError) is not None
            error = error_response(
                FAILURE_SQLSTATE,
                f"Request refused: plugin {entry.name} {'timed out' if timed_out else 'failed'}",
                detail=f"The plugin's {hook} hook did not answer and its failureMode is closed.")
            request = payload.get("request")
            result["response"] = error_reply(request if isinstance(request, bytes) else None, error)
        # Other hooks: a terminal result without a response; on the data path
        # the relay closes the client's connection rather than pass unvetted data.
        return result

    def _observe(self, hook: str, started: float) -> None:
        if self._duration is not None:
            try:
                self._duration.labels(hook=hook).observe(time.perf_counter() - started)
            except Exception:  # noqa: BLE001 - metrics must never break hooks
                pass


def _run_order(entry: _Entry) -> tuple[int, int]:
    return entry.priority, entry.order


class _ChainRun:
    """One event going through one chain.  Never fails: errors become failure modes."""

    __slots__ = ("_registry", "_hook", "_chain", "_index", "_current", "_deadline", "_done",
                 "_started", "_sync", "_span", "_error")

    def __init__(self, registry: HookRegistry, hook: str, chain: tuple[_Entry, ...],
                 payload: dict[str, Any], span: Span | None = None) -> None:
        self._registry = registry
        #: the chain's span (tracing on), and why a closed-mode failure ended the chain
        self._span = span
        self._error = ""
        self._hook = hook
        self._chain = chain
        self._index = 0
        self._current = payload
        timeout = registry.timeout
        self._deadline = registry._clock.seconds() + timeout if timeout > 0 else None
        self._done: Deferred[dict] = Deferred()
        self._started = time.perf_counter()
        self._sync = False

    def start(self) -> Deferred[dict]:
        self._step()
        return self._done

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return self._deadline - self._registry._clock.seconds()

    def _step(self) -> None:
        try:
            self._advance()
        except Exception:  # noqa: BLE001 - a registry bug must not lose the event
            self._registry.log.failure("Hook chain {hook} failed; passing the payload on",
                                       hook=self._hook)
            if not self._done.called:
                self._finish(self._current)

    def _advance(self) -> None:
        chain = self._chain
        clock = self._registry._clock
        while self._index < len(chain):
            entry = chain[self._index]
            self._index += 1
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                if self._span is not None:
                    self._span.add_event("plugin skipped: chain deadline exhausted",
                                         {"gatewayd.plugin": entry.name})
                if self._on_failure(entry, Failure(DeadlineExhausted(
                        f"not called: no time left of the {self._registry.timeout}s "
                        "hook chain deadline"))):
                    return
                continue
            plugin_span = None
            try:
                if self._span is None:
                    d = entry.call(self._hook, self._current, remaining)
                else:
                    plugin_span = self._plugin_span(entry)
                    d = entry.call(self._hook, self._current, remaining,
                                   Tracing.inject_traceparent(plugin_span))
            except Exception:  # noqa: BLE001 - a plugin's bug is a failed call
                failure = Failure()
                if plugin_span is not None:
                    Tracing.end(plugin_span, failure)
                if self._on_failure(entry, failure):
                    return
                continue
            if not isinstance(d, Deferred):
                d = succeed(d)
            if remaining is not None and not d.called:
                d.addTimeout(remaining, clock)
            if plugin_span is not None:
                d.addBoth(_end_plugin_span, plugin_span)
            box: list[Any] = []
            self._sync = True
            d.addBoth(self._arrived, entry, box)
            self._sync = False
            if not box:
                return  # _arrived continues the chain when the call completes
            if self._handle(entry, box[0]):
                return
        self._finish(self._current)

    def _arrived(self, outcome: Any, entry: _Entry, box: list[Any]) -> None:
        if self._sync:
            box.append(outcome)
            return None
        try:
            finished = self._handle(entry, outcome)
        except Exception:  # noqa: BLE001
            self._registry.log.failure("Hook chain {hook} failed; passing the payload on",
                                       hook=self._hook)
            finished = False
        if not finished:
            self._step()
        return None

    def _handle(self, entry: _Entry, outcome: Any) -> bool:
        """Take one plugin's outcome. @return: True when the chain is finished."""
        if isinstance(outcome, Failure):
            return self._on_failure(entry, outcome)
        if not isinstance(outcome, dict):
            what = "no result" if outcome is None else f"a {type(outcome).__name__}, not a dict"
            return self._on_failure(entry, Failure(TypeError(f"the plugin returned {what}")))
        hook_info = HookInfo(self._hook, entry.priority, self._current, outcome)
        try:
            result, terminal = self._registry.act.process(outcome, hook_info)
        except Exception:  # noqa: BLE001 - an Act bug must not drop the plugin's result
            self._registry.log.failure("Act failed on {plugin}'s {hook} result; ignoring its signals",
                                       plugin=entry.name, hook=self._hook)
            result, terminal = outcome, False
        self._current = result
        if terminal:
            self._finish(result)
            return True
        return False

    def _on_failure(self, entry: _Entry, failure: Failure) -> bool:
        registry = self._registry
        registry._failed(entry, self._hook, failure)
        if entry.failure_mode == "closed":
            if self._span is not None:
                self._error = (f"plugin {entry.name} failed with failureMode closed: "
                               f"{failure.getErrorMessage() or failure.type.__name__}")
            self._finish(registry._closed_result(entry, self._hook, self._current, failure))
            return True
        return False

    def _plugin_span(self, entry: _Entry) -> Span:
        tracing = self._registry.tracing
        assert tracing is not None
        return tracing.start_span(entry.span_name, self._span, {
            "gatewayd.plugin": entry.name, "gatewayd.hook": self._hook,
            "gatewayd.plugin.priority": entry.priority}, kind=entry.span_kind)

    def _finish(self, result: dict[str, Any]) -> None:
        self._registry._observe(self._hook, self._started)
        span = self._span
        if span is not None:
            self._span = None
            if result.get(TERMINAL_KEY):
                span.set_attribute("gatewayd.hook.terminal", True)
            Tracing.end(span, self._error or None)
        self._done.callback(result)


def _end_plugin_span(outcome: Any, span: Span) -> Any:
    """End a plugin call's span with its outcome; pass the outcome on unchanged."""
    if isinstance(outcome, Failure):
        Tracing.end(span, outcome)
    elif not isinstance(outcome, dict):
        Tracing.end(span, f"the plugin returned {type(outcome).__name__}, not a dict")
    else:
        span.end()
    return outcome
