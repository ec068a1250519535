"""
Act: signals (what a plugin asks for), policies (expressions that allow or
deny it) and actions (what runs), GatewayD-compatible.

  - L{gatewayd.act.signals}: the C{__signals__} shapes and their builders;
  - L{gatewayd.act.policy}: policies compiled with CEL;
  - L{gatewayd.act.actions}: the built-in actions (passthrough, terminate, log);
  - L{gatewayd.act.registry}: L{ActRegistry}, the algorithm;
  - L{gatewayd.act.redis} and L{gatewayd.act.consumer}: async actions over Redis pub/sub.
"""

from gatewayd.act.actions import BUILTIN_ACTIONS, Action, ActionInput
from gatewayd.act.policy import Policy, PolicyError, PolicyInput
from gatewayd.act.registry import ActRegistry, HookInfo, Output, builtin_policies, builtin_signals
from gatewayd.act.signals import (
    OUTPUTS_KEY,
    SIGNALS_KEY,
    TERMINAL_KEY,
    Signal,
    parse_signals,
)

__all__ = [
    "BUILTIN_ACTIONS",
    "OUTPUTS_KEY",
    "SIGNALS_KEY",
    "TERMINAL_KEY",
    "Action",
    "ActRegistry",
    "ActionInput",
    "HookInfo",
    "Output",
    "Policy",
    "PolicyError",
    "PolicyInput",
    "Signal",
    "builtin_policies",
    "builtin_signals",
    "parse_signals",
]
