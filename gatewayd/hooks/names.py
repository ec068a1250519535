"""
GatewayD's hook names, RPC names and C{plugin.v1.HookName} enum numbers.

The registry and the relay use the RPC names (C{"onTrafficFromClient"} style,
lower camel) as keys; the wire uses the enum numbers and the C{On...} RPC names.
"""

from __future__ import annotations

#: (enum number, enum name, RPC method name) in proto order.
HOOKS: tuple[tuple[int, str, str], ...] = (
    (1, "HOOK_NAME_ON_CONFIG_LOADED", "OnConfigLoaded"),
    (2, "HOOK_NAME_ON_NEW_LOGGER", "OnNewLogger"),
    (3, "HOOK_NAME_ON_NEW_POOL", "OnNewPool"),
    (4, "HOOK_NAME_ON_NEW_CLIENT", "OnNewClient"),
    (5, "HOOK_NAME_ON_NEW_PROXY", "OnNewProxy"),
    (6, "HOOK_NAME_ON_NEW_SERVER", "OnNewServer"),
    (7, "HOOK_NAME_ON_SIGNAL", "OnSignal"),
    (8, "HOOK_NAME_ON_RUN", "OnRun"),
    (9, "HOOK_NAME_ON_BOOTING", "OnBooting"),
    (10, "HOOK_NAME_ON_BOOTED", "OnBooted"),
    (11, "HOOK_NAME_ON_OPENING", "OnOpening"),
    (12, "HOOK_NAME_ON_OPENED", "OnOpened"),
    (13, "HOOK_NAME_ON_CLOSING", "OnClosing"),
    (14, "HOOK_NAME_ON_CLOSED", "OnClosed"),
    (15, "HOOK_NAME_ON_TRAFFIC", "OnTraffic"),
    (16, "HOOK_NAME_ON_TRAFFIC_FROM_CLIENT", "OnTrafficFromClient"),
    (17, "HOOK_NAME_ON_TRAFFIC_TO_SERVER", "OnTrafficToServer"),
    (18, "HOOK_NAME_ON_TRAFFIC_FROM_SERVER", "OnTrafficFromServer"),
    (19, "HOOK_NAME_ON_TRAFFIC_TO_CLIENT", "OnTrafficToClient"),
    (20, "HOOK_NAME_ON_SHUTDOWN", "OnShutdown"),
    (21, "HOOK_NAME_ON_TICK", "OnTick"),
    (22, "HOOK_NAME_ON_HOOK", "OnHook"),
)


def _lower_camel(rpc: str) -> str:
    return rpc[0].lower() + rpc[1:]


ON_CONFIG_LOADED = "onConfigLoaded"
ON_NEW_LOGGER = "onNewLogger"
ON_NEW_POOL = "onNewPool"
ON_NEW_CLIENT = "onNewClient"
ON_NEW_PROXY = "onNewProxy"
ON_NEW_SERVER = "onNewServer"
ON_SIGNAL = "onSignal"
ON_RUN = "onRun"
ON_BOOTING = "onBooting"
ON_BOOTED = "onBooted"
ON_OPENING = "onOpening"
ON_OPENED = "onOpened"
ON_CLOSING = "onClosing"
ON_CLOSED = "onClosed"
ON_TRAFFIC = "onTraffic"
ON_TRAFFIC_FROM_CLIENT = "onTrafficFromClient"
ON_TRAFFIC_TO_SERVER = "onTrafficToServer"
ON_TRAFFIC_FROM_SERVER = "onTrafficFromServer"
ON_TRAFFIC_TO_CLIENT = "onTrafficToClient"
ON_SHUTDOWN = "onShutdown"
ON_TICK = "onTick"
ON_HOOK = "onHook"

#: hook name -> enum number
NUMBER_BY_NAME: dict[str, int] = {_lower_camel(rpc): n for n, _, rpc in HOOKS}
#: enum number -> hook name
NAME_BY_NUMBER: dict[int, str] = {n: _lower_camel(rpc) for n, _, rpc in HOOKS}
#: hook name -> gRPC method name ("OnTrafficFromClient")
RPC_BY_NAME: dict[str, str] = {_lower_camel(rpc): rpc for _, _, rpc in HOOKS}
#: hook name -> enum name ("HOOK_NAME_ON_TRAFFIC_FROM_CLIENT"), what Act policies see as Hook.Name
ENUM_BY_NAME: dict[str, str] = {_lower_camel(rpc): enum for _, enum, rpc in HOOKS}

ALL: frozenset[str] = frozenset(NUMBER_BY_NAME)

#: The four hooks on the data path; the relay frames messages only when one is subscribed.
TRAFFIC: frozenset[str] = frozenset(
    {ON_TRAFFIC_FROM_CLIENT, ON_TRAFFIC_TO_SERVER, ON_TRAFFIC_FROM_SERVER, ON_TRAFFIC_TO_CLIENT})
