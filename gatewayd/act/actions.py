# -*- test-case-name: tests.unit.test_act -*-
"""
Actions: what runs when a signal's policy says yes.

Actions are code (GatewayD has no user-defined actions either).  Each is
sync or async and terminal or not: a sync terminal action (C{terminate})
stops the hook chain and answers the client; a sync non-terminal one
(C{passthrough}) lets the request go on; async ones (C{log}) run after the
hook, in the background or on another host through Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from twisted.logger import Logger, LogLevel

from gatewayd.hooks.replies import terminated_reply

__all__ = [
    "Action",
    "ActionInput",
    "BUILTIN_ACTIONS",
    "LOG_LEVELS",
    "log_action",
    "passthrough_action",
    "terminate_action",
]


@dataclass(frozen=True, slots=True)
class ActionInput:
    """
    What an action receives: the signal's metadata, the hook result it
    acts on (None when run from a queue without one) and a logger.
    """

    metadata: Mapping[str, Any]
    result: dict[str, Any] | None
    log: Logger


@dataclass(frozen=True, slots=True)
class Action:
    """
    @ivar run: called with an L{ActionInput}; may return a value or a Deferred.
    @ivar timeout: seconds for this action; 0 means the registry's C{actionTimeout}.
    """

    name: str
    sync: bool
    terminal: bool
    run: Callable[[ActionInput], Any] = field(repr=False)
    timeout: float = 0.0


#: Level names (zerolog/hclog spelling) -> Twisted levels; unknown means info.
LOG_LEVELS: dict[str, LogLevel] = {
    "trace": LogLevel.debug,
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "warning": LogLevel.warn,
    "error": LogLevel.error,
    "fatal": LogLevel.critical,
    "panic": LogLevel.critical,
}
_LOG_RESERVED = frozenset({"log", "level", "message"})
_EVENT_RESERVED = frozenset({"format", "plugin_message", "self", "level"})


def passthrough_action(given: ActionInput) -> bool:
    """Let the request through unchanged."""
    return True


def terminate_action(given: ActionInput) -> Any:
    """
    Stop the chain.  The client receives the result's C{response}; when the
    plugin gave none, GatewayD's "Request terminated" ErrorResponse (42000)
    answered so that the session stays usable (see L{gatewayd.hooks.replies}).
    """
    result = given.result
    if not isinstance(result, dict):
        return True
    if "response" not in result:
        request = result.get("request")
        result["response"] = terminated_reply(request if isinstance(request, bytes) else None)
    return result


def log_action(given: ActionInput) -> bool:
    """Log C{metadata["message"]} at C{metadata["level"]}, the other keys as fields."""
    metadata = given.metadata
    level = LOG_LEVELS.get(str(metadata.get("level", "info")).lower(), LogLevel.info)
    fields = {k: v for k, v in metadata.items() if k not in _LOG_RESERVED}
    # The fields go into the event as top-level keys (what JSON outputs show),
    # except names Twisted reserves.
    extra = {k: v for k, v in fields.items()
             if k.isidentifier() and not k.startswith("log_") and k not in _EVENT_RESERVED}
    given.log.emit(level, "{plugin_message}", plugin_message=str(metadata.get("message", "")),
                   **extra)
    return True


#: GatewayD's built-in actions.
BUILTIN_ACTIONS: dict[str, Action] = {
    "passthrough": Action("passthrough", sync=True, terminal=False, run=passthrough_action),
    "terminate": Action("terminate", sync=True, terminal=True, run=terminate_action),
    "log": Action("log", sync=False, terminal=False, run=log_action),
}
